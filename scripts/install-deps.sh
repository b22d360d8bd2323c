#!/usr/bin/env bash
# Installs what building and serving hearth need, where it is missing, on Debian/Ubuntu:
# a C/C++ compiler, cmake (llama.cpp's build), libclang (bindgen), python3 with pip (the
# starter model comes from PyPI), curl, and the Rust toolchain (rustup) when cargo is not on
# PATH. With --tests, also what only the tests need: python3-venv (the end-to-end tests' SDKs
# live in a virtualenv: Debian's system Python refuses global pip installs), Node.js with npm
# and Debian's chromium (the web page's browser tests: playwright-core drives that chromium and
# never downloads a browser), iproute2 (the cluster tests' network namespaces) and taskset.
# With --gpu vulkan|cuda|rocm, also what building that GPU backend needs (see below).
#   scripts/install-deps.sh [--tests] [--gpu vulkan|cuda|rocm]
set -euo pipefail
tests=false
gpu=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) tests=true ;;
    --gpu) gpu="${2:-}"; shift ;;
    --gpu=*) gpu="${1#--gpu=}" ;;
    *) echo "error: unknown argument '$1' (usage: scripts/install-deps.sh [--tests] [--gpu vulkan|cuda|rocm])" >&2; exit 2 ;;
  esac
  shift
done
case "$gpu" in
  ""|vulkan|cuda|rocm) ;;
  *) echo "error: unknown GPU backend '$gpu': use vulkan, cuda or rocm (Metal needs nothing: build on macOS with --features metal)" >&2; exit 2 ;;
esac

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# What bindgen loads: libclang.so, libclang-*.so or libclang.so.* (not libclang-cpp.so.N, a
# different library that stock Debian images carry).
have_libclang() {
  local f
  for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
           /usr/lib/*-linux-gnu/libclang.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so* ${LIBCLANG_PATH:+"$LIBCLANG_PATH"/libclang*.so*}; do
    case "$(basename "$f")" in libclang-cpp*) continue ;; esac
    [ -e "$f" ] && return 0
  done
  return 1
}
have_libclang || need+=(libclang-dev)
command -v curl >/dev/null || need+=(curl)
if $tests; then
  # `python3 -m venv` exists on Debian without python3-venv but fails (no ensurepip): try it.
  venv_try="$(mktemp -d)"
  { command -v python3 >/dev/null && python3 -m venv "$venv_try/v" >/dev/null 2>&1; } || need+=(python3-venv)
  rm -rf "$venv_try"
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # `ip netns` + veth: the cluster tests' separate network hosts; taskset: the cluster bench.
  command -v ip >/dev/null || need+=(iproute2)
  command -v taskset >/dev/null || need+=(util-linux)
fi

# GPU backends. Vulkan (any GPU: AMD, Intel, NVIDIA; and mesa's lavapipe, a Vulkan driver on
# the CPU that the tests use): the loader and headers, the glslc shader compiler, SPIR-V headers,
# mesa's drivers and vulkaninfo. CUDA and ROCm come from their vendors' repositories, not
# Debian's: say what to install when their compilers are missing.
case "$gpu" in
  vulkan)
    command -v glslc >/dev/null || need+=(glslc)
    [ -e /usr/include/vulkan/vulkan.hpp ] || need+=(libvulkan-dev)
    [ -e /usr/share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake ] || need+=(spirv-headers)
    ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
    command -v vulkaninfo >/dev/null || need+=(vulkan-tools)
    ;;
  cuda)
    if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
      echo "error: the CUDA backend needs the CUDA toolkit (nvcc): install it from NVIDIA" >&2
      echo "  (https://developer.nvidia.com/cuda-downloads; on Ubuntu also 'apt install nvidia-cuda-toolkit')," >&2
      echo "  then put its bin/ on PATH and run this again" >&2
      exit 1
    fi
    ;;
  rocm)
    if ! command -v hipconfig >/dev/null && [ ! -x /opt/rocm/bin/hipconfig ]; then
      echo "error: the ROCm backend needs ROCm's HIP SDK (hipcc, hipBLAS, rocBLAS): install it from AMD" >&2
      echo "  (https://rocm.docs.amd.com, 'amdgpu-install --usecase=rocm' or the rocm packages), then run this again" >&2
      exit 1
    fi
    ;;
esac

if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "cargo is in ~/.cargo/bin: add it to PATH (source ~/.cargo/env)" >&2
  else
    echo "installing the Rust toolchain with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
  fi
fi

# Vulkan headers older than what ggml-vulkan uses (Debian 12 ships 1.3.239; ggml needs
# vk::LayerSettingEXT, 1.3.261 and later): the next Debian release's libvulkan-dev, fetched with
# apt into a cache directory and unpacked there (nothing is installed over the system's);
# scripts/build.sh --gpu vulkan puts it first on CMake's search path.
vulkan_header_version() {
  sed -n 's/^#define VK_HEADER_VERSION \([0-9]*\).*/\1/p' "$1/vulkan/vulkan_core.h" 2>/dev/null | head -1
}
if [ "$gpu" = vulkan ]; then
  cache="${HEARTH_CACHE_DIR:-$HOME/.cache/hearth}"
  headers="$cache/vulkan-headers"
  have="$(vulkan_header_version /usr/include)"
  if [ "${have:-0}" -lt 261 ] && [ "$(vulkan_header_version "$headers/usr/include")" = "" ]; then
    echo "the system's Vulkan headers are 1.3.${have:-?}, older than ggml-vulkan needs (1.3.261); fetching Debian 13's libvulkan-dev into $headers" >&2
    tmp="$(mktemp -d)"
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
    echo "deb http://deb.debian.org/debian trixie main" >"$tmp/sources.list"
    aptopts=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root
             -o Debug::NoLocking=1)
    apt-get "${aptopts[@]}" update -qq >&2
    (cd "$tmp" && apt-get "${aptopts[@]}" download libvulkan-dev >&2)
    rm -rf "$headers.new" && mkdir -p "$headers.new"
    dpkg-deb -x "$tmp"/libvulkan-dev_*.deb "$headers.new"
    rm -rf "$headers.new/usr/lib"   # headers only: the system's loader (libvulkan.so.1) is the one linked
    [ -n "$(vulkan_header_version "$headers.new/usr/include")" ] || { echo "error: no Vulkan headers in the fetched package" >&2; exit 1; }
    rm -rf "$headers" && mv "$headers.new" "$headers"
    rm -rf "$tmp"
  fi
fi

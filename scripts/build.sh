#!/usr/bin/env bash
# Builds hearth, optionally with a GPU backend, and prints the binary's path as its last line.
#   scripts/build.sh                   # CPU: target/release/hearth
#   scripts/build.sh --gpu vulkan      # Vulkan: target-vulkan/release/hearth
#   scripts/build.sh --gpu cuda|rocm   # CUDA / ROCm: target-cuda/, target-rocm/
# Installs what the variant needs first (scripts/install-deps.sh --gpu ...). Each GPU variant
# has its own target directory, so building one never rebuilds another's llama.cpp. Extra
# arguments go to cargo (e.g. --features metal on macOS). HEARTH_NATIVE=1 adds
# -C target-cpu=native (this CPU's instructions; the binary may not run on another CPU).
# HEARTH_GPU_ARCH picks the GPU architectures to compile kernels for (CUDA: e.g. 86;90, ROCm:
# e.g. gfx1151 for the Ryzen AI Max+ 395's Radeon 8060S; default: llama.cpp's list).
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=""
cargo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) gpu="${2:-}"; shift ;;
    --gpu=*) gpu="${1#--gpu=}" ;;
    *) cargo_args+=("$1") ;;
  esac
  shift
done
if [ -n "$gpu" ]; then
  scripts/install-deps.sh --gpu "$gpu" >&2
else
  scripts/install-deps.sh >&2
fi
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
[ "${HEARTH_NATIVE:-}" = 1 ] && export RUSTFLAGS="${RUSTFLAGS:-} -C target-cpu=native"

target=target
features=()
case "$gpu" in
  "") ;;
  vulkan)
    target=target-vulkan
    features=(--features vulkan)
    headers="${HEARTH_CACHE_DIR:-$HOME/.cache/hearth}/vulkan-headers/usr"
    # Newer headers fetched by install-deps.sh when the system's are too old: searched first.
    [ -d "$headers/include/vulkan" ] && export CMAKE_PREFIX_PATH="$headers${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    ;;
  cuda)
    target=target-cuda
    features=(--features cuda)
    [ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
    [ -n "${HEARTH_GPU_ARCH:-}" ] && export CMAKE_CUDA_ARCHITECTURES="$HEARTH_GPU_ARCH"
    ;;
  rocm)
    target=target-rocm
    features=(--features rocm)
    [ -d /opt/rocm/bin ] && export PATH="$PATH:/opt/rocm/bin"
    [ -n "${HEARTH_GPU_ARCH:-}" ] && export CMAKE_HIP_ARCHITECTURES="$HEARTH_GPU_ARCH"
    ;;
  *) echo "error: unknown GPU backend '$gpu': use vulkan, cuda or rocm" >&2; exit 2 ;;
esac
CARGO_TARGET_DIR="$target" cargo build --release --locked -p hearth "${features[@]}" ${cargo_args[@]+"${cargo_args[@]}"} >&2
echo "$PWD/$target/release/hearth"

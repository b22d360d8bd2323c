#!/usr/bin/env bash
# Installs what building and serving hearth need, where it is missing, on Debian/Ubuntu:
# a C/C++ compiler, cmake (llama.cpp's build), libclang (bindgen), python3 with pip (the
# starter model comes from PyPI), curl, and the Rust toolchain (rustup) when cargo is not on
# PATH. With --tests, also what only the tests need: python3-venv (the end-to-end tests' SDKs
# live in a virtualenv: Debian's system Python refuses global pip installs), Node.js with npm
# and Debian's chromium (the web page's browser tests: playwright-core drives that chromium and
# never downloads a browser), iproute2 (the cluster tests' network namespaces) and taskset.
#   scripts/install-deps.sh [--tests]
set -euo pipefail
tests=false
[ "${1:-}" = "--tests" ] && tests=true

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

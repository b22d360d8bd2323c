#!/usr/bin/env bash
# Builds hearth, fetches the starter model (SmolLM2-135M-Instruct) and runs it on a prompt.
#   scripts/quickstart.sh ["your prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --locked
model=$(scripts/fetch-model.sh)
exec target/release/hearth run "$model" "${1:-Why is the sky blue? Answer in two sentences.}"

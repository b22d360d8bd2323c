#!/usr/bin/env bash
# Builds hearth, puts the starter model (SmolLM2-135M-Instruct) in the store as `smollm2`, and
# serves the Ollama and OpenAI APIs on http://127.0.0.1:11434 (HEARTH_HOST to change).
#   scripts/quickstart.sh            # then, from another terminal:
#   curl http://127.0.0.1:11434/api/chat -d '{"model":"smollm2","messages":[{"role":"user","content":"Hi"}]}'
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --locked
model=$(scripts/fetch-model.sh)
target/release/hearth add "$model" --name smollm2 --no-progress
exec target/release/hearth serve "$@"

#!/usr/bin/env bash
# Builds hearth, puts the starter model (SmolLM2-135M-Instruct) in the store as `smollm2`, and
# serves the Ollama and OpenAI APIs on http://127.0.0.1:11434 (HEARTH_HOST to change).
#   scripts/quickstart.sh            # then, from another terminal:
#   curl http://127.0.0.1:11434/api/chat -d '{"model":"smollm2","messages":[{"role":"user","content":"Hi"}]}'
#   scripts/quickstart.sh --gpu vulkan   # the same with a GPU backend (vulkan, cuda, rocm)
# Other arguments go to `hearth serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=()
if [ "${1:-}" = "--gpu" ]; then
  gpu=(--gpu "${2:-}")
  shift 2 || { echo "error: --gpu needs a backend: vulkan, cuda or rocm" >&2; exit 2; }
fi
hearth=$(scripts/build.sh ${gpu[@]+"${gpu[@]}"} | tail -1)
model=$(scripts/fetch-model.sh)
"$hearth" add "$model" --name smollm2 --no-progress
"$hearth" devices >&2 || true
exec "$hearth" serve "$@"

#!/usr/bin/env bash
# Serving throughput through the HTTP API: hearth serve vs the engine alone (single stream) and
# vs upstream llama-server -np 8 (aggregate at 1, 4, 8 concurrent streams), same model, same
# run, 2 threads; and hearth's idle RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(scripts/fetch-model.sh)
upstream=$(bench/build-upstream.sh)
cargo build --release --quiet -p hearth --bin hearth
cargo build --release --quiet -p hearth-engine --example bench
out=$(mktemp -d)
store="$out/store"
HEARTH_MODELS="$store" target/release/hearth add "$model" --name smollm2 --no-progress 2>/dev/null

target/release/examples/bench "$model" --threads 2 --reps 3 --flash-attn auto 2>/dev/null | grep tg128 > "$out/engine.jsonl"

# Single stream: the same configuration as the engine bench (one sequence, 1024 tokens).
HEARTH_MODELS="$store" target/release/hearth serve --host 127.0.0.1:18554 -t 2 --parallel 1 -c 1024 2>"$out/hearth1.log" &
single_pid=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:18554/health >/dev/null 2>&1 && break; sleep 0.2; done
python3 bench/serve.py http://127.0.0.1:18554 smollm2 --label hearth --only single > "$out/single.jsonl"
kill $single_pid; wait $single_pid 2>/dev/null || true

HEARTH_MODELS="$store" target/release/hearth serve --host 127.0.0.1:18555 -t 2 --parallel 8 -c 1024 2>"$out/hearth.log" &
hearth_pid=$!
"$upstream/llama-server" -m "$model" --host 127.0.0.1 --port 18556 -t 2 -np 8 -c 8192 -fa auto --no-webui >"$out/llama.log" 2>&1 &
llama_pid=$!
trap 'kill $hearth_pid $llama_pid 2>/dev/null || true' EXIT
for port in 18555 18556; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
done
sleep 1
idle_kb=$(awk '/VmRSS/ {print $2}' /proc/$hearth_pid/status)
python3 bench/serve.py http://127.0.0.1:18555 smollm2 --label hearth --only agg > "$out/hearth.jsonl"
kill -STOP $hearth_pid 2>/dev/null || true
python3 bench/serve.py http://127.0.0.1:18556 smollm2 --label llama-server --only agg > "$out/llama.jsonl"
kill -CONT $hearth_pid 2>/dev/null || true
python3 - "$out" "$idle_kb" <<'PY'
import json, sys
out, idle_kb = sys.argv[1], int(sys.argv[2])
load = lambda f: {r["test"]: r for r in map(json.loads, open(f"{out}/{f}"))}
eng = json.loads(open(f"{out}/engine.jsonl").read())["avg_ts"]
h, l, one = load("hearth.jsonl"), load("llama.jsonl"), load("single.jsonl")
print(f"single stream: engine alone {eng:.1f} tok/s, through HTTP {one['single']['tok_s']:.1f} tok/s, ratio {one['single']['tok_s']/eng:.3f}")
print(f"{'streams':8} {'llama-server':>13} {'hearth':>8} {'ratio':>6}")
for n in (1, 4, 8):
    a, b = l[f"agg{n}"]["tok_s"], h[f"agg{n}"]["tok_s"]
    print(f"{n:<8} {a:13.1f} {b:8.1f} {b/a:6.2f}")
print(f"idle hearth serve RSS: {idle_kb/1024:.1f} MiB (server process, model not loaded)")
PY

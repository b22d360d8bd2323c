#!/usr/bin/env bash
# Engine throughput vs upstream llama.cpp's llama-bench, in the same run, on the starter model:
# pp512 and tg128 (tokens/s, 2 threads, flash attention off), and the aggregate generation
# rate of 4 parallel sequences vs 1. Prints a table with the ratios.
#   bench/engine.sh [--threads N] [--reps N]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2; reps=5
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
model=$(scripts/fetch-model.sh)
upstream=$(bench/build-upstream.sh)
cargo build --release --quiet -p hearth-engine --example bench
out=$(mktemp -d)
# Alternate the two, twice, so drift on a shared machine hits both alike.
for round in 1 2; do
  "$upstream/llama-bench" -m "$model" -t "$threads" -p 512 -n 128 -fa 0 -r "$reps" -o jsonl 2>/dev/null >> "$out/upstream.jsonl"
  target/release/examples/bench "$model" --threads "$threads" --reps "$reps" --flash-attn off 2>/dev/null >> "$out/hearth.jsonl"
done
python3 - "$out" <<'PY'
import json, sys, statistics
out = sys.argv[1]
up = {}
for line in open(f"{out}/upstream.jsonl"):
    r = json.loads(line)
    name = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    up.setdefault(name, []).append(r["avg_ts"])
ours = {}
for line in open(f"{out}/hearth.jsonl"):
    r = json.loads(line)
    ours.setdefault(r["test"], []).append(r["avg_ts"])
m = lambda v: statistics.mean(v)
print(f"{'test':8} {'llama-bench':>12} {'hearth':>10} {'ratio':>7}")
for t in ("pp512", "tg128"):
    print(f"{t:8} {m(up[t]):12.1f} {m(ours[t]):10.1f} {m(ours[t]) / m(up[t]):7.3f}")
a1, a4 = m(ours["agg1"]), m(ours["agg4"])
print(f"aggregate generation: 1 sequence {a1:.1f} tok/s, 4 sequences {a4:.1f} tok/s, ratio {a4 / a1:.2f}x")
PY

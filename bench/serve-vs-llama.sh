#!/usr/bin/env bash
# hearth serve against upstream llama-server on the workload of issue #15: OpenAI chat requests
# with a short prompt (about 32 tokens), 128 generated tokens (ignore_eos), temperature 0.7, at
# 1 and 8 concurrent streams; aggregate generated tok/s over the whole request time, measured
# by `hearth bench`. Both servers run at once with 2 threads (hearth --parallel 8 -c 1024,
# llama-server -np 8 -c 8192, the same per-sequence context), rounds alternate the two with
# the idle one paused (SIGSTOP, its runner too) so they never compete; medians and ratios at
# the end.
#
#   bench/serve-vs-llama.sh [ROUNDS] [PROMPT_TOKENS]     # defaults: 5 rounds, 32 tokens
#
# REQS=N (default 1): each server's figure in a round is the median of N measurements in a row
# (at 1 stream one 128-token request takes about a second, and a second on this VM varies by
# 10-20 %). The servers' order alternates from round to round, and each round's hearth /
# llama-server ratio is printed with their median (paired rounds: slow minutes of the machine
# fall on both).
# HEARTH_BEFORE=path/to/an/older/hearth adds that binary as a third server (before/after).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5} prompt_tokens=${2:-32}
model=$(scripts/fetch-model.sh)
upstream=$(bench/build-upstream.sh)
cargo build --release --quiet -p hearth --bin hearth
hearth=target/release/hearth
out=$(mktemp -d)
store="$out/store"
HEARTH_MODELS="$store" $hearth add "$model" --name smollm2 --no-progress 2>/dev/null
HEARTH_MODELS="$store" HEARTH_DB="$out/h.db" $hearth serve --host 127.0.0.1:18571 -t 2 --parallel 8 -c 1024 2>"$out/hearth.log" &
h_pid=$!
"$upstream/llama-server" -m "$model" --alias smollm2 --host 127.0.0.1 --port 18572 -t 2 -np 8 -c 8192 --no-webui >"$out/llama.log" 2>&1 &
l_pid=$!
b_pid=
if [ -n "${HEARTH_BEFORE:-}" ]; then
  HEARTH_MODELS="$store" HEARTH_DB="$out/b.db" "$HEARTH_BEFORE" serve --host 127.0.0.1:18573 -t 2 --parallel 8 -c 1024 2>"$out/before.log" &
  b_pid=$!
fi
trap 'for p in $h_pid $b_pid $l_pid; do kill -CONT $p; pkill -CONT -P $p; kill $p; done 2>/dev/null || true' EXIT
for port in 18571 18572 ${b_pid:+18573}; do
  for _ in $(seq 150); do curl -sf "127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
done
# Pausing hearth pauses its runner too (the runner is its child).
pause() { pkill -STOP -P "$1" 2>/dev/null || true; kill -STOP "$1"; }
resume() { kill -CONT "$1"; pkill -CONT -P "$1" 2>/dev/null || true; }
# Each round its own prompts (--seed), the same for every server: no prompt cache holds them.
measure() {
  $hearth bench --url "$1" --seed "$((round * 1000))" --model smollm2 --api openai-chat --temperature 0.7 --prompt-tokens "$prompt_tokens" \
    --gen-tokens 128 --concurrency 1,8 --runs "${REQS:-1}" --json 2>>"$out/bench.log"
}
: > "$out/results.jsonl"
servers="hearth:$h_pid:18571 llama-server:$l_pid:18572 ${b_pid:+hearth-before:$b_pid:18573}"
for s in $servers; do pause "$(echo "$s" | cut -d: -f2)"; done
for round in $(seq "$rounds"); do
  order=$servers
  [ $((round % 2)) = 0 ] && order=$(echo "$servers" | tr ' ' '\n' | tac | tr '\n' ' ')
  for s in $order; do
    IFS=: read -r name pid port <<<"$s"
    resume "$pid"
    measure "http://127.0.0.1:$port" | python3 -c 'import json,sys; [print(json.dumps(dict(l, server=sys.argv[1], round=int(sys.argv[2])))) for l in json.load(sys.stdin)]' "$name" "$round" >> "$out/results.jsonl"
    pause "$pid"
  done
  echo "round $round done" >&2
done
python3 - "$out/results.jsonl" "$prompt_tokens" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"prompt ~{sys.argv[2]} tokens (measured: hearth {statistics.median(r['prompt_tokens'] for r in rows if r['server'] == 'hearth')}, "
      f"llama-server {statistics.median(r['prompt_tokens'] for r in rows if r['server'] != 'hearth')}), 128 generated, temperature 0.7")
names = [n for n in ("hearth", "hearth-before", "llama-server") if any(r["server"] == n for r in rows)]
fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)
print("| server | streams | tok/s (rounds) | median | vs llama-server |")
print("|---|---|---|---|---|")
for c in sorted({r["concurrency"] for r in rows}):
    base = statistics.median(r["aggregate_tok_s"] for r in rows if r["server"] == "llama-server" and r["concurrency"] == c)
    for n in names:
        v = [r["aggregate_tok_s"] for r in rows if r["server"] == n and r["concurrency"] == c]
        print(f"| {n} | {c} | {fmt(v)} | {statistics.median(v):.1f} | {statistics.median(v) / base:.2f} |")
print()
print("paired rounds: hearth / llama-server in each round, and their median")
for c in sorted({r["concurrency"] for r in rows}):
    for n in names[:-1]:
        by = lambda s: {r["round"]: r["aggregate_tok_s"] for r in rows if r["server"] == s and r["concurrency"] == c}
        mine, base = by(n), by("llama-server")
        ratios = [mine[k] / base[k] for k in sorted(mine) if k in base]
        print(f"{n} | {c} | {', '.join(f'{x:.2f}' for x in ratios)} | median {statistics.median(ratios):.2f}")
print()
print("medians | streams | TTFT p50 ms | gen tok/s per stream | aggregate tok/s")
for server in names:
    for c in sorted({r["concurrency"] for r in rows}):
        sel = [r for r in rows if r["server"] == server and r["concurrency"] == c]
        med = lambda k: statistics.median(r[k] for r in sel)
        print(f"{server} | {c} | {med('ttft_p50_ms'):.0f} | {med('gen_tok_s_per_stream'):.1f} | {med('aggregate_tok_s'):.1f}")
PY

#!/usr/bin/env bash
# Serving throughput of two hearth binaries, A (baseline) and B: one server each (--parallel 8,
# -t 2, -c 1024), the same store and model, rounds alternating A and B with the idle server
# paused (SIGSTOP) so they never compete; bench/serve.py's single-stream and aggregate (1, 4,
# 8 streams) tok/s per round; medians and B/A ratios at the end. For checking that a change
# costs nothing: build the baseline from the commit before it, e.g.
#
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release -p hearth)
#   bench/serve-ab.sh /tmp/base/target/release/hearth target/release/hearth [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
a_bin=$1 b_bin=${2:-target/release/hearth} rounds=${3:-3}
model=$(scripts/fetch-model.sh)
out=$(mktemp -d)
store="$out/store"
HEARTH_MODELS="$store" "$b_bin" add "$model" --name smollm2 --no-progress 2>/dev/null
HEARTH_MODELS="$store" HEARTH_DB="$out/a.db" "$a_bin" serve --host 127.0.0.1:18561 -t 2 --parallel 8 -c 1024 2>"$out/a.log" &
a_pid=$!
HEARTH_MODELS="$store" HEARTH_DB="$out/b.db" "$b_bin" serve --host 127.0.0.1:18562 -t 2 --parallel 8 -c 1024 2>"$out/b.log" &
b_pid=$!
trap 'kill -CONT $a_pid $b_pid 2>/dev/null; kill $a_pid $b_pid 2>/dev/null || true' EXIT
for port in 18561 18562; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
done
# Pausing a server pauses its runner too (the runner is its child: stop the whole group).
pause() { pkill -STOP -P "$1" 2>/dev/null || true; kill -STOP "$1"; }
resume() { kill -CONT "$1"; pkill -CONT -P "$1" 2>/dev/null || true; }
for r in $(seq "$rounds"); do
  pause $b_pid
  python3 bench/serve.py http://127.0.0.1:18561 smollm2 --label A >> "$out/results.jsonl"
  resume $b_pid; pause $a_pid
  python3 bench/serve.py http://127.0.0.1:18562 smollm2 --label B >> "$out/results.jsonl"
  resume $a_pid
  echo "round $r done" >&2
done
python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tests = ["single", "agg1", "agg4", "agg8"]
print("| test | A tok/s (rounds) | B tok/s (rounds) | B/A (medians) |")
print("|---|---|---|---|")
for t in tests:
    a = [r["tok_s"] for r in rows if r["label"] == "A" and r["test"] == t]
    b = [r["tok_s"] for r in rows if r["label"] == "B" and r["test"] == t]
    fa = ", ".join(f"{x:.1f}" for x in a); fb = ", ".join(f"{x:.1f}" for x in b)
    print(f"| {t} | {fa} | {fb} | {statistics.median(b) / statistics.median(a):.3f} |")
PY

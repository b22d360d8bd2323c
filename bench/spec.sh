#!/usr/bin/env bash
# Speculative decoding (issue 16), all from one run: hearth with --spec ngram against hearth
# without on an edit workload (a ~1,500-token file asked back with one rename), the same over
# two workers at +5 ms one way (tok/s and ggml RPC round trips per token), a general chat
# workload, and 8 concurrent streams; then a draft model (the starter model drafting for an
# 8-expert target made from it, which answers the same: --model-draft) on the edit and two chat
# workloads. RUNS=N (default 3), CLUSTER_TOKENS=N (default 400), ONLY=ngram|draft|cluster.
# HEARTH_BENCH_LOG=FILE appends the servers' output there; with
# HEARTH_LOG='hearth::runner=debug,hearth_engine=trace' that shows each step's draft decision.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p hearth --bin hearth --example spec_bench
exec target/release/examples/spec_bench

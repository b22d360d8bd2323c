#!/usr/bin/env bash
# The cluster's numbers (issue 5), all from one run: tok/s over two loopback workers vs one
# process, plaintext vs encrypted, +1/+5 ms links; RPC round trips and bytes per token; load
# time of a synthetic 1.2 GB model with and without a preloaded worker cache.
# Usage: bench/cluster.sh   (PIN=1 pins each worker to a core of its own; WORKER_THREADS=N)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p hearth --bin hearth --example cluster_bench
exec target/release/examples/cluster_bench

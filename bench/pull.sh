#!/usr/bin/env bash
# Pull throughput from a local fixture server vs curl of the same file (same run), and bytes
# re-downloaded after a pull is SIGKILLed at 50%. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(scripts/fetch-model.sh)
cargo build --release --quiet -p hearth --bin hearth --example pull_bench
target/release/examples/pull_bench target/release/hearth "$model"

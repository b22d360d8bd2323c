#!/usr/bin/env bash
# The whole test suite: installs missing build dependencies, fetches the test model once,
# then runs every test of the workspace (with the real model) in the release profile, which
# shares its optimised llama.cpp build with `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export HEARTH_TEST_MODEL="${HEARTH_TEST_MODEL:-$(scripts/fetch-model.sh)}"
cargo test --release --workspace --locked "$@"

#!/usr/bin/env bash
# The whole test suite: installs missing build dependencies, fetches the test model once,
# then runs every test of the workspace (with the real model) in the release profile, which
# shares its optimised llama.cpp build with `cargo build --release`; then the end-to-end tests
# (tests/e2e: `hearth serve` through the official openai, anthropic and ollama Python SDKs,
# pinned in tests/e2e/requirements.txt and installed in a virtualenv kept in the cache
# directory, and through Claude Code, Codex and opencode, pinned below and installed from npm
# into the cache); then the web page's browser tests (tests/web: playwright-core, pinned by its package-lock.json,
# driving Debian's headless chromium); then, as root, scripts/fresh-debian.sh: the README's
# first command on a fresh Debian 12 root made by debootstrap (HEARTH_SKIP_FRESH=1 skips it
# while iterating; it never runs inside that root).
#
# Before the cargo tests it builds the Vulkan variant (scripts/build.sh --gpu vulkan, its own
# target directory) for crates/cli/tests/gpu.rs, which runs it on mesa's lavapipe (a Vulkan
# driver on the CPU) against the CPU build: devices, placement per device, greedy parity, MoE
# experts in RAM, eviction by the GPU's budget, a split with a worker's GPU. HEARTH_SKIP_GPU=1
# skips that build (the GPU tests then say so and pass).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --tests
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export HEARTH_TEST_MODEL="${HEARTH_TEST_MODEL:-$(scripts/fetch-model.sh)}"
if [ -z "${HEARTH_SKIP_GPU:-}" ]; then
  start=$(date +%s)
  HEARTH_GPU_BIN="$(scripts/build.sh --gpu vulkan | tail -1)"
  export HEARTH_GPU_BIN
  echo "the Vulkan build took $(( $(date +%s) - start )) s: $HEARTH_GPU_BIN" >&2
else
  unset HEARTH_GPU_BIN
fi
cargo test --release --workspace --locked "$@"

# The end-to-end tests use target/release/hearth (built above for the CLI's tests) and the
# fixture registry server.
cargo build --release --locked -p hearth-testkit --bin hearth-fixture

# A virtualenv with the pinned SDKs, (re)made when requirements.txt changes or the venv no
# longer runs (e.g. its Python was removed).
cache="${HEARTH_CACHE_DIR:-$HOME/.cache/hearth}"
venv="$cache/e2e-venv"
req=tests/e2e/requirements.txt
want="$(sha256sum "$req" | cut -d' ' -f1)"
if ! "$venv/bin/python" -c '' >/dev/null 2>&1 || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "making the e2e virtualenv $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" >"$venv/.requirements.sha256"
fi
# The real agent CLIs, for tests/e2e/test_{claude_code,codex,opencode}.py: pinned, from the npm
# registry, once each, into the cache. npm_cli PACKAGE VERSION BIN: the path of BIN.
npm_cli() {
  local dir="$cache/$(basename "$1")-$2"
  if ! "$dir/node_modules/.bin/$3" --version 2>/dev/null | grep -qF "$2"; then
    echo "fetching $1 $2 from the npm registry into $dir" >&2
    rm -rf "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$1@$2" >&2
  fi
  echo "$dir/node_modules/.bin/$3"
}
# Claude Code (about 235 MB), Codex (425 MB) and opencode (355 MB): native binaries, Codex's
# behind a Node.js launcher.
HEARTH_CLAUDE_CODE="$(npm_cli @anthropic-ai/claude-code 2.1.197 claude)"
HEARTH_CODEX="$(npm_cli @openai/codex 0.171.0 codex)"
HEARTH_OPENCODE="$(npm_cli opencode-ai 1.18.33 opencode)"
export HEARTH_CLAUDE_CODE HEARTH_CODEX HEARTH_OPENCODE
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest tests/e2e -q

# The browser tests need Node.js 20 or newer (playwright-core's minimum); Debian 12 ships 18:
# then Node.js 20 comes from the npm registry (the `node` package), once, into the cache.
node_major() { node -e 'process.stdout.write(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 20 ]; then
  nodedir="$cache/node20"
  if [ ! -x "$nodedir/node_modules/.bin/node" ]; then
    echo "Node.js is $(node --version 2>/dev/null || echo missing); fetching Node.js 20 from the npm registry into $nodedir" >&2
    npm install --prefix "$nodedir" --no-audit --no-fund --loglevel=error node@20 >&2
  fi
  export PATH="$nodedir/node_modules/.bin:$PATH"
fi
if [ "$(node_major)" -lt 20 ]; then
  echo "error: the browser tests (tests/web) need Node.js 20 or newer; found $(node --version)" >&2
  exit 1
fi
(cd tests/web && npm ci --no-audit --no-fund --loglevel=error && node --test --test-concurrency=1 page.test.mjs)

# The README's first command on a fresh Debian 12 (this machine's packages hide missing steps).
if [ -z "${HEARTH_FRESH_ROOT:-}" ] && [ -z "${HEARTH_SKIP_FRESH:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    scripts/fresh-debian.sh
  else
    echo "note: scripts/fresh-debian.sh needs root; skipped (run it with sudo)" >&2
  fi
fi

// What the browser tests share: the real `hearth serve` on a free port with a temporary store
// holding the real test model, the fixture registry, and Debian's chromium through
// playwright-core (which never downloads a browser).
//
// Environment:
//   HEARTH_BIN          the hearth binary (default: <repo>/target/release/hearth)
//   HEARTH_FIXTURE_BIN  the fixture server (default: <repo>/target/release/hearth-fixture)
//   HEARTH_TEST_MODEL   the SmolLM2 GGUF (default: what scripts/fetch-model.sh prints)
//   CHROMIUM            the browser (default: /usr/bin/chromium)

import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const SCREENSHOTS = join(REPO, 'target/web-screenshots');
const HEARTH = process.env.HEARTH_BIN || join(REPO, 'target/release/hearth');
const FIXTURE = process.env.HEARTH_FIXTURE_BIN || join(REPO, 'target/release/hearth-fixture');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Settings of the environment that would change how the server behaves.
const DROP_ENV = ['HEARTH_HOST', 'HEARTH_NUM_PARALLEL', 'HEARTH_MAX_QUEUE', 'HEARTH_MAX_LOADED_MODELS', 'HEARTH_MEMORY_BUDGET',
  'HEARTH_KEEP_ALIVE', 'HEARTH_API_KEY', 'HEARTH_ORIGINS', 'HEARTH_CONTEXT_LENGTH', 'HEARTH_LOG', 'HEARTH_DB', 'OLLAMA_HOST'];

function need(path, hint) {
  if (!existsSync(path)) throw new Error(`${path} does not exist; build it with \`${hint}\``);
  return path;
}

export function testModel() {
  if (process.env.HEARTH_TEST_MODEL) return process.env.HEARTH_TEST_MODEL;
  const out = execFileSync(join(REPO, 'scripts/fetch-model.sh'), { encoding: 'utf8', timeout: 900_000 });
  return out.trim().split('\n').pop();
}

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** A temporary hearth home: `models/` (the store) holding the test model as `names`. */
export function makeHome(names) {
  const home = mkdtempSync(join(tmpdir(), 'hearth-web-'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !DROP_ENV.includes(k)));
  env.HEARTH_MODELS = join(home, 'models');
  env.NO_PROXY = [env.NO_PROXY, '127.0.0.1', 'localhost'].filter(Boolean).join(',');
  const hearth = need(HEARTH, 'cargo build --release -p hearth');
  const [first, ...copies] = names;
  execFileSync(hearth, ['add', testModel(), '--name', first, '--no-progress'], { env, stdio: 'pipe', timeout: 120_000 });
  for (const name of copies) execFileSync(hearth, ['cp', first, name], { env, stdio: 'pipe', timeout: 60_000 });
  return { home, env, remove: () => rmSync(home, { recursive: true, force: true }) };
}

/** `hearth serve` on a free port; `stop()` ends it with SIGTERM and checks it exited cleanly. */
export async function startServer(home, { args = [], env = {}, log = 'serve.log' } = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const logPath = join(home.home, log);
    const fd = openSync(logPath, 'a');
    const proc = spawn(HEARTH, ['serve', '--host', `127.0.0.1:${port}`, '-t', '2', '--parallel', '2', ...args], {
      env: { ...home.env, ...env }, stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    let exited = false;
    proc.once('exit', () => { exited = true; });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && !exited) {
      try {
        const r = await fetch(`${url}/`);
        if (r.ok) {
          return {
            url,
            logPath,
            async stop() {
              if (exited) return;
              const done = new Promise((ok) => proc.once('exit', (code, signal) => ok({ code, signal })));
              proc.kill('SIGTERM');
              const timeout = sleep(30_000).then(() => { proc.kill('SIGKILL'); return { code: null, signal: 'timeout' }; });
              const r = await Promise.race([done, timeout]);
              if (r.code !== 0) throw new Error(`hearth serve ended with ${JSON.stringify(r)}; see ${logPath}`);
            },
          };
        }
      } catch { /* not up yet */ }
      await sleep(100);
    }
    if (!exited) {
      proc.kill('SIGKILL');
      throw new Error(`hearth serve did not answer within 60 s; see ${logPath}`);
    }
  }
  throw new Error('hearth serve exited three times before answering (ports taken?)');
}

/** A small valid GGUF (no tensors, llama architecture) padded to `size` bytes: big enough that a
 * pull reports progress. */
export function writePaddedGguf(path, size) {
  const parts = [];
  const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  const u64 = (n) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(n)); return b; };
  const str = (s) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);
  const kv = [['general.architecture', 'llama'], ['general.name', 'hearth web tiny']];
  parts.push(Buffer.from('GGUF'), u32(3), u64(0), u64(kv.length));
  for (const [k, v] of kv) parts.push(str(k), u32(8), str(v));
  let header = Buffer.concat(parts);
  header = Buffer.concat([header, Buffer.alloc((32 - (header.length % 32)) % 32)]);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, Buffer.concat([header, Buffer.alloc(Math.max(0, size - header.length))]));
}

/** hearth-fixture serving `file` as the Ollama model `name`; resolves to its reference. */
export async function startRegistry(file, name) {
  const proc = spawn(need(FIXTURE, 'cargo build --release -p hearth-testkit --bin hearth-fixture'),
    ['--file', file, '--ollama', name], { stdio: ['ignore', 'pipe', 'ignore'] });
  const lines = createInterface({ input: proc.stdout });
  let reference = null;
  const seen = [];
  const ready = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`hearth-fixture did not get ready; it printed ${JSON.stringify(seen)}`)), 30_000);
    lines.on('line', (line) => {
      seen.push(line);
      const [key, value] = [line.split(' ')[0], line.slice(line.indexOf(' ') + 1)];
      if (key === 'ollama') reference = value.split(' ')[0];
      if (line === 'ready') { clearTimeout(timer); ok(); }
    });
    proc.once('exit', () => { clearTimeout(timer); fail(new Error(`hearth-fixture exited; it printed ${JSON.stringify(seen)}`)); });
  });
  await ready;
  if (!reference) throw new Error(`hearth-fixture announced no Ollama model; it printed ${JSON.stringify(seen)}`);
  return { reference, stop: () => proc.kill('SIGTERM') };
}

/** `hearth worker` on a free loopback port with `token`; resolves when it listens. */
export async function startWorker(home, token) {
  const proc = spawn(HEARTH, ['worker', '--listen', '127.0.0.1:0', '-t', '1', '--token', token, '--cache-dir', join(home.home, 'rpc-cache')],
    { env: { ...home.env, OMP_WAIT_POLICY: 'passive' }, stdio: ['ignore', 'ignore', 'pipe'] });
  const lines = createInterface({ input: proc.stderr });
  const seen = [];
  const address = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`hearth worker did not listen; it printed ${JSON.stringify(seen)}`)), 60_000);
    lines.on('line', (line) => {
      seen.push(line);
      const m = line.match(/listening on (\S+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    proc.once('exit', () => { clearTimeout(timer); fail(new Error(`hearth worker exited; it printed ${JSON.stringify(seen)}`)); });
  });
  return { address, stop: () => proc.kill('SIGKILL') };
}

export async function launchBrowser() {
  need(CHROMIUM, 'apt-get install chromium (scripts/install-deps.sh)');
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/** Saves a screenshot of `page` as target/web-screenshots/NAME.png. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

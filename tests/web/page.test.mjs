// Browser tests of the web page against the real `hearth serve` with the real model, driven by
// playwright-core in Debian's headless chromium. Screenshots go to target/web-screenshots/.
//
//   cd tests/web && npm ci && node --test

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DESKTOP, PHONE, launchBrowser, makeHome, screenshot, startRegistry, startServer, startWorker, writePaddedGguf } from './support.mjs';

// Names in the store; the page lists them with their tag.
const MODEL = 'smollm2';
const OTHER = 'smollm2-copy';
const MODEL_TAG = `${MODEL}:latest`;
const OTHER_TAG = `${OTHER}:latest`;
const KEY = 'sekret-key';

// A model answer that tries to run script in every way markdown allows.
const HOSTILE = [
  'Sure! <script>window.__pwned = "script"</script> done.',
  '',
  '<img src=x onerror="window.__pwned = \'img\'">',
  '',
  '[click me](javascript:window.__pwned=\'link\') and <a href="javascript:window.__pwned=1">raw link</a>',
  '',
  '<think>plotting <img src=y onerror="window.__pwned = \'think\'"></think>',
  '',
  '<svg onload="window.__pwned = \'svg\'"></svg><iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
].join('\n');

// A conversation that shows what the page renders, for the screenshots.
const SHOWCASE = [
  { role: 'user', content: 'How do I read a file line by line in Python? Keep it short.' },
  {
    role: 'assistant',
    model: MODEL,
    stats: { ttft_ms: 182.4, tokens_per_second: 48.7, tokens: 96 },
    content: [
      '<think>The user wants a short answer. A `with` block and a `for` loop is the idiom.</think>',
      'Use a `with` block, which closes the file for you:',
      '',
      '```python',
      'with open("notes.txt", encoding="utf-8") as f:',
      '    for line in f:',
      '        print(line.rstrip("\\n"))',
      '```',
      '',
      '| approach | memory |',
      '|---|---|',
      '| `for line in f` | one line at a time |',
      '| `f.readlines()` | the whole file |',
      '',
      '1. **Iterate** the file object directly.',
      '2. Strip the newline if you do not want it.',
    ].join('\n'),
  },
  { role: 'user', content: 'And in Rust?' },
  {
    role: 'assistant',
    model: MODEL,
    stats: { ttft_ms: 95.1, tokens_per_second: 51.2, tokens: 64 },
    content: '```rust\nuse std::io::{BufRead, BufReader};\n\nfor line in BufReader::new(std::fs::File::open("notes.txt")?).lines() {\n    println!("{}", line?);\n}\n```',
  },
];

let home;
let server;
let browser;

async function api(path, { method = 'GET', json, key } = {}) {
  const headers = {};
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch(`${server.url}${path}`, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await r.text();
  return { status: r.status, headers: r.headers, text, json: () => JSON.parse(text) };
}

/** A page with the app loaded; collects script errors and CSP violations. */
async function openPage({ viewport = DESKTOP, colorScheme = 'light', url = server.url, context } = {}) {
  const ctx = context || (await browser.newContext({ viewport, colorScheme }));
  const page = await ctx.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 401/.test(m.text())) page.problems.push(`console: ${m.text()}`);
  });
  await page.goto(`${url}/`);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

async function closePage(page) {
  const problems = page.problems.filter((p) => !/Failed to load resource/.test(p));
  await page.context().close();
  assert.deepEqual(problems, [], 'the page logged errors');
}

/** Starts a new chat with `model` and small settings, sends `text`. */
async function ask(page, text, { model = MODEL_TAG, maxTokens = 40 } = {}) {
  await page.goto(`${server.url}/#/`);
  await page.click('#new-chat');
  await page.selectOption('#model-select', model);
  if (await page.isHidden('#settings')) await page.click('#settings-toggle');
  await page.fill('#set-temperature', '0');
  await page.fill('#set-num-predict', String(maxTokens));
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
}

const answerText = (page) => page.locator('.msg.assistant .msg-body').last().innerText();

async function waitForAnswer(page) {
  await page.waitForSelector('#stop', { state: 'hidden', timeout: 240_000 });
  await page.waitForSelector('.msg.assistant:last-of-type[aria-busy="false"]');
}

/** No script of `payload` ran and no element can run any. */
async function assertInert(page) {
  assert.equal(await page.evaluate(() => window.__pwned), undefined, 'model output ran script');
  const dangerous = await page.evaluate(() => {
    const box = document.querySelector('#messages');
    const bad = [];
    for (const n of box.querySelectorAll('*')) {
      for (const a of n.attributes) {
        if (a.name.startsWith('on')) bad.push(`${n.tagName} ${a.name}`);
        if (/^\s*javascript:/i.test(a.value)) bad.push(`${n.tagName} ${a.name}=${a.value}`);
      }
    }
    for (const n of box.querySelectorAll('script, img, iframe, svg, object, embed')) bad.push(n.tagName);
    return bad;
  });
  assert.deepEqual(dangerous, []);
}

before(async () => {
  home = makeHome([MODEL, OTHER]);
  server = await startServer(home);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  home?.remove();
});

describe('the server side of the page', () => {
  test('/ is the page for browsers and "hearth is running" for everyone else', async () => {
    const plain = await api('/');
    assert.equal(plain.status, 200);
    assert.match(plain.text, /^hearth is running/);
    assert.match(plain.headers.get('vary') || '', /accept/i);
    const r = await fetch(`${server.url}/`, { headers: { Accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
    const html = await r.text();
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/html/);
    assert.match(r.headers.get('content-security-policy'), /script-src 'self'/);
    assert.match(html, /<title>hearth<\/title>/);
    const js = html.match(/src="(\/ui\/[^"]+\/app\.js)"/);
    assert.ok(js, 'the page loads app.js from /ui/<version>/');
    const asset = await fetch(`${server.url}${js[1]}`);
    assert.equal(asset.status, 200);
    assert.match(asset.headers.get('content-type'), /^text\/javascript/);
    assert.match(asset.headers.get('cache-control'), /immutable/);
    assert.equal((await fetch(`${server.url}/ui/0/nope.js`)).status, 404);
  });

  test('the conversations API: create, append, replace, search, rename, delete', async () => {
    const created = await api('/hearth/conversations', { method: 'POST', json: { title: 'api test', model: MODEL, messages: [{ role: 'user', content: 'zebra crossing' }] } });
    assert.equal(created.status, 201, created.text);
    const c = created.json();
    const appended = await api(`/hearth/conversations/${c.id}/messages`, { method: 'POST', json: { messages: [{ role: 'assistant', content: 'ok', stats: { tokens: 1 } }] } });
    assert.deepEqual(appended.json().messages.map((m) => m.content), ['zebra crossing', 'ok']);
    const replaced = await api(`/hearth/conversations/${c.id}/messages`, { method: 'POST', json: { from: 1, messages: [{ role: 'assistant', content: 'better' }] } });
    assert.deepEqual(replaced.json().messages.map((m) => m.content), ['zebra crossing', 'better']);
    const found = (await api('/hearth/conversations?q=ZEBRA')).json().conversations.map((x) => x.id);
    assert.deepEqual(found, [c.id]);
    const renamed = await api(`/hearth/conversations/${c.id}`, { method: 'PATCH', json: { title: 'renamed' } });
    assert.equal(renamed.json().title, 'renamed');
    const bad = await api(`/hearth/conversations/${c.id}/messages`, { method: 'POST', json: { from: 9, messages: [] } });
    assert.equal(bad.status, 400);
    assert.match(bad.json().error, /has 2 messages/);
    assert.equal((await api(`/hearth/conversations/${c.id}`, { method: 'DELETE' })).status, 200);
    assert.equal((await api(`/hearth/conversations/${c.id}`)).status, 404);
    assert.equal((await api('/hearth/conversations/abc')).status, 404);
  });
});

describe('chat', () => {
  test('a message is answered, streaming in, with TTFT and tok/s', async () => {
    const page = await openPage();
    await ask(page, 'Write a short poem about the sea.', { maxTokens: 64 });
    // Text appears while the answer is still streaming (the Stop button is up).
    await page.waitForFunction(() => {
      const body = [...document.querySelectorAll('.msg.assistant .msg-body')].pop();
      return body && body.innerText.trim().length > 0 && !document.querySelector('#stop').hidden;
    }, null, { timeout: 120_000 });
    const partial = (await answerText(page)).length;
    await waitForAnswer(page);
    const full = await answerText(page);
    assert.ok(full.length > partial, `the answer grew after the first text (${partial} → ${full.length})`);
    const stats = await page.locator('.msg.assistant .msg-stats').last().innerText();
    assert.match(stats, /TTFT \d/);
    assert.match(stats, /tok\/s/);
    assert.equal(await page.locator('.msg.assistant .msg-head').last().innerText(), MODEL_TAG);
    // It is in the list, under the first line of the message.
    await page.waitForSelector('#conversations a:has-text("Write a short poem about the sea.")');
    assert.match(page.url(), /#\/c\/\d+$/);
    await closePage(page);
  });

  test('stop ends the answer mid-stream and keeps what came', async () => {
    const page = await openPage();
    await ask(page, 'Count from 1 to 300, one number per line.', { maxTokens: 2000 });
    await page.waitForFunction(() => {
      const body = [...document.querySelectorAll('.msg.assistant .msg-body')].pop();
      return body && body.innerText.trim().length > 5;
    }, null, { timeout: 120_000 });
    await page.click('#stop');
    await page.waitForSelector('#stop', { state: 'hidden', timeout: 5000 });
    await page.waitForSelector('.msg.assistant:last-of-type[aria-busy="false"]');
    const stopped = await answerText(page);
    assert.match(await page.locator('.msg.assistant .msg-stats').last().innerText(), /stopped/);
    await sleep(1000);
    assert.equal(await answerText(page), stopped, 'no text arrives after stop');
    // The partial answer was saved.
    const id = page.url().match(/#\/c\/(\d+)$/)[1];
    const saved = (await api(`/hearth/conversations/${id}`)).json();
    assert.equal(saved.messages.length, 2);
    assert.equal(saved.messages[1].stats.stopped, true);
    assert.ok(saved.messages[1].content.length > 0);
    await closePage(page);
  });

  test('the model can be switched within a conversation', async () => {
    const page = await openPage();
    await ask(page, 'Say hello.', { maxTokens: 8 });
    await waitForAnswer(page);
    await page.selectOption('#model-select', OTHER_TAG);
    await page.fill('#prompt', 'Say goodbye.');
    await page.press('#prompt', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('.msg.assistant').length === 2);
    await waitForAnswer(page);
    assert.equal(await page.locator('.msg.assistant .msg-head').first().innerText(), MODEL_TAG);
    assert.equal(await page.locator('.msg.assistant .msg-head').last().innerText(), OTHER_TAG);
    const id = page.url().match(/#\/c\/(\d+)$/)[1];
    const saved = (await api(`/hearth/conversations/${id}`)).json();
    assert.equal(saved.model, OTHER_TAG);
    assert.deepEqual(saved.messages.filter((m) => m.role === 'assistant').map((m) => m.model), [MODEL_TAG, OTHER_TAG]);
    const loaded = (await api('/api/ps')).json().models.map((m) => m.name);
    assert.ok(loaded.includes(OTHER_TAG), `${OTHER_TAG} was loaded: ${loaded}`);
    await closePage(page);
  });

  test('regenerate replaces the last answer; edit-and-resend replaces from the edited message', async () => {
    const page = await openPage();
    await ask(page, 'Name a colour.', { maxTokens: 8 });
    await waitForAnswer(page);
    const id = page.url().match(/#\/c\/(\d+)$/)[1];
    await page.click('.msg.assistant button:has-text("Regenerate")');
    await waitForAnswer(page);
    let saved = (await api(`/hearth/conversations/${id}`)).json();
    assert.deepEqual(saved.messages.map((m) => m.role), ['user', 'assistant']);
    await page.click('.msg.user button:has-text("Edit")');
    await page.fill('.msg.user textarea', 'Name a fruit.');
    await page.click('.msg.user button:has-text("Save and send")');
    await page.waitForFunction(() => document.querySelector('.msg.user .text')?.innerText === 'Name a fruit.');
    await waitForAnswer(page);
    saved = (await api(`/hearth/conversations/${id}`)).json();
    assert.deepEqual(saved.messages.map((m) => m.role), ['user', 'assistant']);
    assert.equal(saved.messages[0].content, 'Name a fruit.');
    await closePage(page);
  });

  test('after a reload the conversation is in the list, searchable, and opens', async () => {
    const page = await openPage();
    await ask(page, 'Tell me about lighthouses.', { maxTokens: 16 });
    await waitForAnswer(page);
    const answer = await answerText(page);
    await page.goto(`${server.url}/`);
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    await page.fill('#search', 'lighthouses');
    await page.waitForFunction(() => document.querySelectorAll('#conversations a').length === 1);
    await page.click('#conversations a:has-text("Tell me about lighthouses.")');
    await page.waitForSelector('.msg.user .text:has-text("Tell me about lighthouses.")');
    assert.equal(await answerText(page), answer);
    await page.fill('#search', 'no conversation has this text');
    await page.waitForSelector('#conversations .empty');
    await closePage(page);
  });
});

describe('model output never runs script', () => {
  test('a stored answer with <script> and <img onerror> renders as text', async () => {
    const c = (await api('/hearth/conversations', {
      method: 'POST',
      json: { title: 'hostile', model: MODEL, messages: [{ role: 'user', content: 'hi <img src=z onerror="window.__pwned=\'user\'">' }, { role: 'assistant', content: HOSTILE, model: MODEL }] },
    })).json();
    const page = await openPage();
    await page.goto(`${server.url}/#/c/${c.id}`);
    await page.waitForSelector('.msg.assistant');
    await page.click('.msg.assistant details.think summary');
    await sleep(300);
    await assertInert(page);
    const text = await answerText(page);
    assert.ok(text.includes('<script>window.__pwned = "script"</script>'), text);
    assert.ok(text.includes('<img src=x onerror='), text);
    assert.ok(text.includes('click me'), text);
    assert.ok((await page.locator('.msg.user .text').innerText()).includes('<img src=z'));
    await closePage(page);
  });

  test('a streamed answer with the same text renders as text', async () => {
    const page = await openPage();
    const chunks = HOSTILE.match(/[\s\S]{1,7}/g);
    const lines = chunks.map((t) => JSON.stringify({ model: MODEL, message: { role: 'assistant', content: t }, done: false }));
    lines.push(JSON.stringify({ model: MODEL, message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop', eval_count: chunks.length, eval_duration: 1e9, prompt_eval_count: 3 }));
    await page.route('**/api/chat', (route) => route.fulfill({ status: 200, contentType: 'application/x-ndjson', body: `${lines.join('\n')}\n` }));
    await ask(page, 'Say something dangerous.');
    await waitForAnswer(page);
    await assertInert(page);
    const text = await answerText(page);
    assert.ok(text.includes('<script>window.__pwned = "script"</script>'), text);
    assert.ok(text.includes('<img src=x onerror='), text);
    await closePage(page);
  });

  test('reasoning streams into a collapsible block and tool calls show after the answer', async () => {
    const page = await openPage();
    const line = (message, extra = {}) => JSON.stringify({ model: MODEL, message: { role: 'assistant', content: '', ...message }, done: false, ...extra });
    const lines = [
      line({ thinking: 'The user wants ' }),
      line({ thinking: 'the weather <b>now</b>.' }),
      line({ content: 'Let me look it up.' }),
      line({ tool_calls: [{ id: 'call_1', function: { index: 0, name: 'get_weather', arguments: { city: 'Paris' } } }] }),
      line({}, { done: true, done_reason: 'stop', eval_count: 9, eval_duration: 1e9, prompt_eval_count: 3 }),
    ];
    await page.route('**/api/chat', (route) => route.fulfill({ status: 200, contentType: 'application/x-ndjson', body: `${lines.join('\n')}\n` }));
    await ask(page, 'Weather in Paris?');
    await waitForAnswer(page);
    await assertInert(page);
    const last = page.locator('article.msg.assistant').last();
    const think = last.locator('details.think');
    assert.equal(await think.count(), 1);
    assert.equal(await think.evaluate((d) => d.open), false, 'closed once the answer came');
    assert.ok((await think.textContent()).includes('the weather <b>now</b>.'), 'reasoning as text');
    const text = await answerText(page);
    assert.ok(text.includes('Let me look it up.'), text);
    assert.ok(text.includes('get_weather({"city":"Paris"})'), text);
    await closePage(page);
  });
});

describe('models page', () => {
  let registry;
  before(async () => {
    const file = join(home.home, 'registry', 'webtiny.gguf');
    writePaddedGguf(file, 48 << 20);
    registry = await startRegistry(file, 'library/webtiny:1');
  });
  after(() => registry?.stop());

  test('a pull from the registry shows progress and the model appears', async () => {
    const page = await openPage();
    await page.click('#nav-models');
    await page.waitForSelector(`#installed [data-model="${MODEL_TAG}"]`);
    // Record every state of the progress bar.
    await page.evaluate(() => {
      window.__progress = [];
      const bar = document.querySelector('#pull-progress');
      new MutationObserver(() => window.__progress.push([bar.value, bar.max, bar.hasAttribute('value')]))
        .observe(bar, { attributes: true });
      new MutationObserver(() => window.__progress.push(document.querySelector('#pull-text').textContent))
        .observe(document.querySelector('#pull-text'), { childList: true, characterData: true, subtree: true });
    });
    await page.fill('#pull-ref', registry.reference);
    await page.check('#pull-insecure');
    await page.click('#pull-button');
    await page.waitForSelector('#pull-text:has-text("Pulled")', { timeout: 120_000 });
    const seen = await page.evaluate(() => window.__progress);
    assert.ok(seen.some((s) => Array.isArray(s) && s[1] === 48 << 20), `the bar's total was the file's size: ${JSON.stringify(seen)}`);
    assert.ok(seen.some((s) => typeof s === 'string' && /pulling .*MB of/.test(s)), `bytes were shown: ${JSON.stringify(seen)}`);
    await page.waitForSelector('#installed [data-model*="webtiny"]');
    await screenshot(page, 'models-pulled-desktop-light');
    // Details, then delete it again.
    const card = page.locator('#installed [data-model*="webtiny"]');
    await card.locator('button:has-text("Details")').click();
    await card.locator('.details dt:has-text("Architecture")').waitFor();
    await card.locator('button:has-text("Delete")').click();
    await page.click('#dialog-ok');
    await page.waitForSelector('#installed [data-model*="webtiny"]', { state: 'detached' });
    await closePage(page);
  });

  test('loaded models show their memory and unload', async () => {
    // A chat earlier loaded the model.
    assert.ok((await api('/api/ps')).json().models.length > 0);
    const page = await openPage();
    await page.click('#nav-models');
    const card = page.locator('#loaded [data-loaded]').first();
    await card.waitFor();
    assert.match(await card.innerText(), /Memory\s+\d+(\.\d)? MB/);
    const before = await page.locator('#loaded [data-loaded]').count();
    await card.locator('button:has-text("Unload")').click();
    await page.waitForFunction((n) => document.querySelectorAll('#loaded [data-loaded]').length < n, before);
    await closePage(page);
  });
});

describe('cluster page', () => {
  test('hidden without workers, shown with them', async () => {
    const page = await openPage();
    assert.equal(await page.isHidden('#nav-cluster'), true);
    await page.context().close();
    const ctx = await browser.newContext({ viewport: DESKTOP });
    const workers = {
      workers: [
        { address: '10.0.0.2:50052', reachable: true, hearth_version: '0.1.0', rpc_version: '7.0.0', devices: [{ name: 'CPU', description: 'AMD Ryzen 9', free: 24e9, total: 32e9 }], free: 24e9, total: 32e9, rtt_ms: 0.4, hosts: [MODEL], error: null },
        { address: '10.0.0.3:50052', reachable: false, devices: [], error: 'connection refused' },
      ],
    };
    await ctx.route('**/api/cluster', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(workers) }));
    const shown = await openPage({ context: ctx });
    await shown.waitForSelector('#nav-cluster:not([hidden])');
    await shown.click('#nav-cluster');
    await shown.waitForSelector('#workers .worker.ok');
    assert.match(await shown.locator('#workers .worker.ok').innerText(), /10\.0\.0\.2:50052[\s\S]*24\.0 GB free of 32\.0 GB/);
    assert.match(await shown.locator('#workers .worker.down').innerText(), /connection refused/);
    assert.match(await shown.locator('#cluster-summary').innerText(), /1 of 2 workers reachable/);
    await screenshot(shown, 'cluster-desktop-light');
    await closePage(shown);
  });
});

describe('cluster page with a real worker', () => {
  test('a worker on 127.0.0.1 shows its memory and the model placed on it', async () => {
    const worker = await startWorker(home, 'web-test-token');
    const clustered = await startServer(home, { args: ['--workers', worker.address, '--cluster-token', 'web-test-token', '--gpu-layers', '99'], log: 'serve-cluster.log' });
    try {
      const r = await fetch(`${clustered.url}/api/chat`, { method: 'POST', body: JSON.stringify({ model: MODEL, stream: false, messages: [{ role: 'user', content: 'Hi' }], options: { num_predict: 4 } }) });
      assert.equal(r.status, 200, await r.text());
      const page = await openPage({ url: clustered.url });
      await page.waitForSelector('#nav-cluster:not([hidden])');
      await page.click('#nav-cluster');
      await page.waitForSelector('#workers .worker.ok');
      const card = await page.locator('#workers .worker.ok').innerText();
      assert.ok(card.includes(worker.address), card);
      assert.match(card, /GB free of [\d.]+ GB/);
      assert.match(card, new RegExp(MODEL));
      assert.match(await page.locator('#cluster-summary').innerText(), /1 of 1 workers? reachable/);
      await screenshot(page, 'cluster-real-desktop-light');
      await closePage(page);
    } finally {
      await clustered.stop();
      worker.stop();
    }
  });
});

describe('screenshots', () => {
  test('desktop and phone, light and dark', async () => {
    const c = (await api('/hearth/conversations', { method: 'POST', json: { title: 'Reading files line by line', model: MODEL, messages: SHOWCASE } })).json();
    for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
      for (const scheme of ['light', 'dark']) {
        const page = await openPage({ viewport, colorScheme: scheme });
        await page.goto(`${server.url}/#/c/${c.id}`);
        await page.waitForSelector('.msg.assistant .hljs');
        await page.evaluate(() => { document.querySelector('#messages').scrollTop = 0; });
        await screenshot(page, `chat-${size}-${scheme}`);
        await page.goto(`${server.url}/#/models`);
        await page.waitForSelector('#installed .card');
        await screenshot(page, `models-${size}-${scheme}`);
        if (size === 'phone') {
          await page.click('#menu');
          await sleep(300);
          await screenshot(page, `sidebar-${size}-${scheme}`);
        }
        await closePage(page);
      }
    }
  });
});

describe('with --api-key', () => {
  let keyed;
  before(async () => {
    keyed = await startServer(home, { args: ['--api-key', KEY], env: { HEARTH_DB: join(home.home, 'keyed.db') }, log: 'keyed.log' });
  });
  after(async () => { await keyed?.stop(); });

  test('the page asks for the key once, keeps it, and works', async () => {
    // Without the key: the page and its assets load, the API does not.
    assert.equal((await fetch(`${keyed.url}/hearth/conversations`)).status, 401);
    const ctx = await browser.newContext({ viewport: DESKTOP });
    const page = await ctx.newPage();
    page.problems = [];
    await page.goto(`${keyed.url}/`);
    await page.waitForSelector('#dialog[open]');
    assert.match(await page.locator('#dialog-label').innerText(), /API key/);
    await screenshot(page, 'api-key-desktop-light');
    await page.fill('#dialog-input', 'wrong');
    await page.click('#dialog-ok');
    await page.waitForSelector('#dialog[open] #dialog-message:has-text("did not accept")');
    await page.fill('#dialog-input', KEY);
    await page.click('#dialog-ok');
    await page.waitForSelector('body[data-ready="true"]');
    assert.equal(await page.evaluate(() => localStorage.getItem('hearth.apiKey')), KEY);
    await page.waitForSelector(`#model-select option[value="${MODEL_TAG}"]`, { state: 'attached' });
    await page.selectOption('#model-select', MODEL_TAG);
    await page.click('#settings-toggle');
    await page.fill('#set-num-predict', '16');
    await page.fill('#prompt', 'Hi!');
    await page.press('#prompt', 'Enter');
    await waitForAnswer(page);
    assert.ok((await answerText(page)).trim().length > 0);
    // A reload does not ask again.
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    assert.equal(await page.isVisible('#dialog'), false);
    await page.waitForSelector('#conversations a:has-text("Hi!")');
    await ctx.close();
  });
});

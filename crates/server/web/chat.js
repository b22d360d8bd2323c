// The chat view: one conversation, its settings, and answers streamed from /api/chat.
// A new chat is a draft until its first message; then it lives on the server
// (/hearth/conversations) and every change is saved there.

import { api, getJson, errorOf, ndjson } from './api.js';
import { el, $, ask, copyButton, formatMs, toast } from './ui.js';
import { renderAnswer, withoutThinking } from './render.js';

const MODEL_KEY = 'hearth.model';

const state = {
  /** The open conversation: {id (null for a draft), title, model, system, options, messages}. */
  conv: null,
  /** Model names the server has. */
  models: [],
  /** While an answer streams: {controller, conv}. */
  running: null,
  /** Called when the list of conversations may have changed. */
  listChanged: () => {},
};

/** `name` with its tag, as the server lists it (`smollm2` is `smollm2:latest`). */
function canonical(name) {
  if (!name) return name;
  return name.split('/').pop().includes(':') ? name : `${name}:latest`;
}

/** The installed name for `name`, or null. */
function installed(name) {
  if (state.models.includes(name)) return name;
  return state.models.includes(canonical(name)) ? canonical(name) : null;
}

function savedModel() {
  try { return localStorage.getItem(MODEL_KEY); } catch { return null; }
}

function defaultModel() {
  return installed(savedModel()) || state.models[0] || '';
}

export function currentConversationId() {
  return state.conv ? state.conv.id : null;
}

/** An answer as stored and rendered: its reasoning in a <think> block (open while nothing
 * else came yet), the text, then each tool call as a `tool-call` code block. */
export function composeAnswer(thinking, text, calls, done) {
  let out = '';
  if (thinking) out += `<think>${thinking}${text || calls.length || done ? '</think>\n\n' : ''}`;
  out += text;
  for (const c of calls) {
    const f = c.function || {};
    out += `\n\n\`\`\`tool-call\n${f.name || ''}(${JSON.stringify(f.arguments ?? {})})\n\`\`\``;
  }
  return out;
}

/** Stops the streaming answer, if any (its text so far is kept). */
export function stop() {
  if (state.running) state.running.controller.abort();
}

export function openDraft() {
  stop();
  state.conv = { id: null, title: 'New chat', model: defaultModel(), system: '', options: {}, messages: [] };
  renderAll();
}

export async function openConversation(id) {
  if (state.conv && state.conv.id === id) return;
  stop();
  try {
    state.conv = await getJson(`/hearth/conversations/${id}`);
  } catch (e) {
    toast(`Cannot open conversation ${id}: ${e.message}`, 'error');
    state.conv = null;
    location.hash = '#/';
    return;
  }
  renderAll();
}

export function setModels(names) {
  state.models = names;
  if (state.conv && !state.conv.model) state.conv.model = defaultModel();
  renderModelSelect();
}

function renderModelSelect() {
  const select = $('#model-select');
  const conv = state.conv;
  if (conv && conv.model && installed(conv.model)) conv.model = installed(conv.model);
  const names = [...state.models];
  if (conv && conv.model && !names.includes(conv.model)) names.unshift(conv.model);
  select.replaceChildren(...names.map((n) => el('option', { value: n }, state.models.includes(n) ? n : `${n} (not installed)`)));
  if (!names.length) select.append(el('option', { value: '' }, 'No models: pull one on the Models page'));
  select.value = conv ? conv.model : '';
  select.disabled = !names.length;
}

function renderAll() {
  const conv = state.conv;
  if (!conv) return;
  showTitle(conv);
  $('#rename-chat').hidden = !conv.id;
  $('#delete-chat').hidden = !conv.id;
  renderModelSelect();
  $('#set-system').value = conv.system || '';
  const o = conv.options || {};
  $('#set-temperature').value = o.temperature ?? '';
  $('#set-num-ctx').value = o.num_ctx ?? '';
  $('#set-num-predict').value = o.num_predict ?? '';
  renderMessages();
}

function showTitle(conv) {
  $('#chat-title').textContent = conv.title;
  document.title = conv.id ? `${conv.title} · hearth` : 'hearth';
  if (!$('#view-chat').hidden) $('#topbar-title').textContent = conv.id ? conv.title : 'hearth';
}

function statsText(s) {
  if (!s) return '';
  const parts = [];
  if (typeof s.ttft_ms === 'number') parts.push(`TTFT ${formatMs(s.ttft_ms)}`);
  if (typeof s.tokens_per_second === 'number') parts.push(`${s.tokens_per_second.toFixed(1)} tok/s`);
  if (typeof s.tokens === 'number') parts.push(`${s.tokens} tokens`);
  if (s.stopped) parts.push('stopped');
  return parts.join(' · ');
}

function isLastAnswer(conv, i) {
  return i === conv.messages.length - 1 && conv.messages[i].role === 'assistant';
}

function messageView(conv, m, i) {
  const body = el('div', { class: 'msg-body' });
  const actions = el('div', { class: 'msg-actions' });
  const article = el('article', { class: `msg ${m.role}`, 'data-pos': i, 'aria-label': m.role === 'user' ? 'Your message' : 'Answer' },
    el('div', { class: 'msg-head' }, m.role === 'user' ? 'You' : (m.model || 'assistant')),
    body);
  if (m.role === 'assistant') {
    renderAnswer(body, m.content, { streaming: Boolean(m.pending) });
    if (m.pending && !m.content) body.append(el('span', { class: 'typing', 'aria-label': 'Waiting for the answer' }, '…'));
    const error = m.error || (m.stats && m.stats.error);
    if (error) article.append(el('p', { class: 'msg-error', role: 'alert' }, error));
    article.append(el('div', { class: 'msg-stats' }, statsText(m.stats)));
    article.setAttribute('aria-busy', m.pending ? 'true' : 'false');
    if (!m.pending) {
      actions.append(copyButton(() => m.content, 'Copy', { 'aria-label': 'Copy answer' }));
      if (isLastAnswer(conv, i)) {
        actions.append(el('button', { type: 'button', class: 'small', onclick: () => regenerate(i) }, 'Regenerate'));
      }
    }
  } else {
    body.append(el('div', { class: 'text' }, m.content));
    actions.append(copyButton(() => m.content, 'Copy', { 'aria-label': 'Copy message' }));
    if (m.role === 'user') {
      actions.append(el('button', { type: 'button', class: 'small', onclick: () => edit(article, i) }, 'Edit'));
    }
  }
  article.append(actions);
  m.view = { article, body };
  return article;
}

function nearBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
}

function renderMessages() {
  const conv = state.conv;
  const box = $('#messages');
  const stick = nearBottom(box);
  box.replaceChildren(...conv.messages.map((m, i) => messageView(conv, m, i)));
  if (!conv.messages.length) box.append(el('div', { id: 'empty-chat', class: 'empty' }, el('p', {}, 'Ask anything. Answers come from the model chosen above, on this machine.')));
  if (stick || state.running) box.scrollTop = box.scrollHeight;
}

/** Re-renders one streaming answer, at most once a frame. */
function scheduleRender(m) {
  if (m.frame) return;
  m.frame = requestAnimationFrame(() => {
    m.frame = null;
    if (!m.view || !m.view.article.isConnected) return;
    const box = $('#messages');
    const stick = nearBottom(box);
    renderAnswer(m.view.body, m.content, { streaming: true });
    if (stick) box.scrollTop = box.scrollHeight;
  });
}

function setRunning(running) {
  $('#send').hidden = running;
  $('#stop').hidden = !running;
  document.body.classList.toggle('streaming', running);
}

function optionsFromFields() {
  const o = {};
  const num = (id, parse) => {
    const v = $(id).value.trim();
    if (v === '') return undefined;
    const n = parse(v);
    return Number.isFinite(n) ? n : undefined;
  };
  const t = num('#set-temperature', parseFloat);
  const c = num('#set-num-ctx', (v) => parseInt(v, 10));
  const p = num('#set-num-predict', (v) => parseInt(v, 10));
  if (t !== undefined) o.temperature = t;
  if (c !== undefined && c > 0) o.num_ctx = c;
  if (p !== undefined) o.num_predict = p;
  return o;
}

async function patch(conv, fields) {
  Object.assign(conv, fields);
  if (!conv.id) return;
  try {
    const saved = await getJson(`/hearth/conversations/${conv.id}`, { method: 'PATCH', json: fields });
    conv.updated_at = saved.updated_at;
    state.listChanged();
  } catch (e) {
    toast(`Not saved: ${e.message}`, 'error');
  }
}

// The fields apply at once (the next answer uses them); saving waits for typing to pause.
let settingsTimer = null;
function settingsChanged() {
  const conv = state.conv;
  if (!conv) return;
  const fields = { system: $('#set-system').value, options: optionsFromFields() };
  Object.assign(conv, fields);
  clearTimeout(settingsTimer);
  settingsTimer = setTimeout(() => patch(conv, fields), 400);
}

/** Saves messages from position `from` on (appends for `from` = length). */
async function saveMessages(conv, from, messages) {
  const clean = messages.map(({ role, content, model, stats }) => ({ role, content, model: model || null, stats: stats || null }));
  const saved = await getJson(`/hearth/conversations/${conv.id}/messages`, { method: 'POST', json: { from, messages: clean } });
  conv.updated_at = saved.updated_at;
  return saved;
}

async function send() {
  const input = $('#prompt');
  const text = input.value.trim();
  const conv = state.conv;
  if (!text || state.running || !conv) return;
  if (!conv.model) {
    toast('Choose a model first (or pull one on the Models page)', 'error');
    return;
  }
  const message = { role: 'user', content: text };
  try {
    if (!conv.id) {
      const title = text.split('\n')[0].slice(0, 60);
      const created = await getJson('/hearth/conversations', {
        method: 'POST',
        json: { title, model: conv.model, system: conv.system, options: conv.options, messages: [message] },
      });
      Object.assign(conv, created);
      history.replaceState(null, '', `#/c/${conv.id}`);
      showTitle(conv);
      $('#rename-chat').hidden = false;
      $('#delete-chat').hidden = false;
    } else {
      const saved = await saveMessages(conv, conv.messages.length, [message]);
      conv.messages = saved.messages;
    }
  } catch (e) {
    toast(`Not sent: ${e.message}`, 'error');
    return;
  }
  input.value = '';
  autosize(input);
  state.listChanged();
  await generate(conv, conv.messages.length);
}

function regenerate(pos) {
  if (state.running) return;
  generate(state.conv, pos);
}

function edit(article, pos) {
  if (state.running) return;
  const conv = state.conv;
  const original = conv.messages[pos].content;
  const area = el('textarea', { rows: 4, id: `edit-${pos}` });
  area.value = original;
  const cancel = () => renderMessages();
  const form = el('form', { class: 'edit' },
    el('label', { for: `edit-${pos}`, class: 'visually-hidden' }, 'Edit message'),
    area,
    el('div', { class: 'edit-buttons' },
      el('button', { type: 'button', class: 'small', onclick: cancel }, 'Cancel'),
      el('button', { type: 'submit', class: 'small primary' }, 'Save and send')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = area.value.trim();
    if (!text || state.running) return;
    try {
      const saved = await saveMessages(conv, pos, [{ role: 'user', content: text }]);
      conv.messages = saved.messages;
    } catch (err) {
      toast(`Not saved: ${err.message}`, 'error');
      return;
    }
    generate(conv, pos + 1);
  });
  area.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { e.preventDefault(); cancel(); }
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  article.querySelector('.msg-body').replaceChildren(form);
  article.querySelector('.msg-actions').replaceChildren();
  area.focus();
}

/** Streams an answer to the messages before position `from` and stores it there (replacing
 * what was from there on). */
async function generate(conv, from) {
  const history = conv.messages.slice(0, from);
  const model = conv.model;
  const messages = [];
  if (conv.system && conv.system.trim()) messages.push({ role: 'system', content: conv.system });
  for (const m of history) {
    messages.push({ role: m.role, content: m.role === 'assistant' ? withoutThinking(m.content) : m.content });
  }
  const answer = { role: 'assistant', content: '', model, stats: null, pending: true };
  conv.messages = [...history, answer];
  const controller = new AbortController();
  state.running = { controller, conv };
  setRunning(true);
  if (state.conv === conv) renderMessages();

  const t0 = performance.now();
  let tFirst = null;
  let tLast = null;
  let chunks = 0;
  let final = null;
  let error = null;
  try {
    const resp = await api('/api/chat', {
      method: 'POST',
      json: { model, messages, stream: true, options: conv.options || {} },
      signal: controller.signal,
    });
    if (!resp.ok) throw new Error(await errorOf(resp));
    // Reasoning (`message.thinking`) is kept as a <think> block before the answer, and tool
    // calls as a `tool-call` code block after it: both render, and both are stored as text.
    let thinking = '';
    let text = '';
    const calls = [];
    for await (const line of ndjson(resp)) {
      if (line.error) throw new Error(line.error);
      const msg = line.message || {};
      const piece = (msg.content || '') + (msg.thinking || '');
      if (msg.thinking) thinking += msg.thinking;
      if (msg.content) text += msg.content;
      if (Array.isArray(msg.tool_calls)) calls.push(...msg.tool_calls);
      if (piece || msg.tool_calls) {
        const now = performance.now();
        if (tFirst === null) tFirst = now;
        tLast = now;
        if (piece) chunks++;
        answer.content = composeAnswer(thinking, text, calls, Boolean(line.done));
        scheduleRender(answer);
      }
      if (line.done) {
        final = line;
        answer.content = composeAnswer(thinking, text, calls, true);
        break;
      }
    }
  } catch (e) {
    if (!controller.signal.aborted) error = e.message || String(e);
  }
  const stopped = controller.signal.aborted && !final;
  const stats = {};
  if (tFirst !== null) stats.ttft_ms = Math.round((tFirst - t0) * 10) / 10;
  if (final && final.eval_count && final.eval_duration) {
    stats.tokens = final.eval_count;
    stats.tokens_per_second = final.eval_count / (final.eval_duration / 1e9);
    if (typeof final.prompt_eval_count === 'number') stats.prompt_tokens = final.prompt_eval_count;
    if (final.load_duration) stats.load_ms = final.load_duration / 1e6;
  } else if (chunks > 0) {
    stats.tokens = chunks;
    if (chunks > 1 && tLast > tFirst) stats.tokens_per_second = (chunks - 1) / ((tLast - tFirst) / 1000);
  }
  if (stopped) stats.stopped = true;
  if (error) stats.error = error;
  answer.stats = stats;
  answer.pending = false;
  if (answer.frame) cancelAnimationFrame(answer.frame);
  state.running = null;
  setRunning(false);

  if (answer.content || stopped) {
    try {
      const saved = await saveMessages(conv, from, [answer]);
      conv.messages = saved.messages;
    } catch (e) {
      answer.error = `The answer was not saved: ${e.message}`;
    }
    state.listChanged();
  } else {
    answer.error = error || 'The model gave no answer.';
  }
  if (state.conv === conv) {
    renderMessages();
    $('#prompt').focus();
  }
}

function autosize(area) {
  area.style.height = 'auto';
  area.style.height = `${Math.min(area.scrollHeight, window.innerHeight * 0.4)}px`;
}

async function rename() {
  const conv = state.conv;
  if (!conv || !conv.id) return;
  const title = await ask({ title: 'Rename conversation', input: { label: 'Title', value: conv.title }, ok: 'Rename' });
  if (title === null || !title.trim()) return;
  await patch(conv, { title: title.trim() });
  showTitle(conv);
}

async function remove() {
  const conv = state.conv;
  if (!conv || !conv.id) return;
  const yes = await ask({ title: 'Delete conversation?', message: `“${conv.title}” and its messages will be deleted.`, ok: 'Delete', danger: true });
  if (!yes) return;
  stop();
  try {
    await getJson(`/hearth/conversations/${conv.id}`, { method: 'DELETE' });
  } catch (e) {
    toast(`Not deleted: ${e.message}`, 'error');
    return;
  }
  state.listChanged();
  location.hash = '#/';
}

export function initChat({ listChanged }) {
  state.listChanged = listChanged;
  const input = $('#prompt');
  $('#composer').addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  input.addEventListener('input', () => autosize(input));
  $('#stop').addEventListener('click', stop);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.running && !document.querySelector('dialog[open]')) stop();
  });
  $('#model-select').addEventListener('change', (e) => {
    const model = e.target.value;
    try { localStorage.setItem(MODEL_KEY, model); } catch { /* not kept */ }
    if (state.conv) patch(state.conv, { model });
  });
  const toggle = $('#settings-toggle');
  toggle.addEventListener('click', () => {
    const panel = $('#settings');
    panel.hidden = !panel.hidden;
    toggle.setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) $('#set-system').focus();
  });
  $('#settings').addEventListener('input', settingsChanged);
  $('#settings').addEventListener('submit', (e) => e.preventDefault());
  $('#rename-chat').addEventListener('click', rename);
  $('#delete-chat').addEventListener('click', remove);
}

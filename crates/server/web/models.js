// The models view: what the store holds (/api/tags), details (/api/show), pulls with live
// progress (/api/pull), deletes (/api/delete), and what is loaded (/api/ps) with unload
// (/api/generate with keep_alive 0).

import { api, getJson, errorOf, ndjson } from './api.js';
import { el, $, ask, formatBytes, formatDate, toast } from './ui.js';

let onModels = () => {};
let pulling = false;

/** Fetches the model list and hands the names to `onModels`; returns the models. */
export async function refreshModels() {
  let models = [];
  try {
    models = (await getJson('/api/tags')).models || [];
  } catch (e) {
    toast(`Cannot list models: ${e.message}`, 'error');
  }
  onModels(models.map((m) => m.name));
  if (!$('#view-models').hidden) renderInstalled(models);
  return models;
}

function fact(term, value) {
  return value === undefined || value === null || value === '' ? null : [el('dt', {}, term), el('dd', {}, String(value))];
}

function renderInstalled(models) {
  const list = $('#installed');
  if (!models.length) {
    list.replaceChildren(el('li', { class: 'empty' }, 'No models yet: pull one above.'));
    return;
  }
  list.replaceChildren(...models.map((m) => {
    const d = m.details || {};
    const details = el('div', { class: 'details', hidden: true });
    const toggle = el('button', { type: 'button', class: 'small', 'aria-expanded': 'false' }, 'Details');
    toggle.addEventListener('click', () => showDetails(m.name, details, toggle));
    return el('li', { class: 'card model', 'data-model': m.name },
      el('h3', {}, m.name),
      el('dl', { class: 'facts' },
        fact('Size', formatBytes(m.size)),
        fact('Parameters', d.parameter_size),
        fact('Quantization', d.quantization_level),
        fact('Family', d.family),
        fact('Modified', formatDate(m.modified_at))),
      el('div', { class: 'card-actions' },
        el('a', { class: 'button small', href: `#/new/${encodeURIComponent(m.name)}` }, 'Chat'),
        toggle,
        el('button', { type: 'button', class: 'small danger', onclick: () => remove(m.name) }, 'Delete')),
      details);
  }));
}

async function showDetails(name, box, toggle) {
  if (!box.hidden) {
    box.hidden = true;
    toggle.setAttribute('aria-expanded', 'false');
    return;
  }
  box.replaceChildren(el('p', { class: 'hint' }, 'Loading…'));
  box.hidden = false;
  toggle.setAttribute('aria-expanded', 'true');
  let info;
  try {
    info = await getJson('/api/show', { method: 'POST', json: { model: name } });
  } catch (e) {
    box.replaceChildren(el('p', { class: 'msg-error' }, e.message));
    return;
  }
  const mi = info.model_info || {};
  const arch = mi['general.architecture'] || (info.details && info.details.family) || '';
  const key = (k) => mi[`${arch}.${k}`];
  box.replaceChildren(
    el('dl', { class: 'facts' },
      fact('Architecture', arch),
      fact('Parameters', typeof mi['general.parameter_count'] === 'number' ? mi['general.parameter_count'].toLocaleString() : undefined),
      fact('Context length', key('context_length')),
      fact('Embedding length', key('embedding_length')),
      fact('Layers', key('block_count')),
      fact('Capabilities', (info.capabilities || []).join(', ')),
      fact('License', (info.license || '').split('\n')[0].slice(0, 120))),
    info.system ? el('details', {}, el('summary', {}, 'System prompt'), el('pre', {}, info.system)) : null,
    info.parameters ? el('details', {}, el('summary', {}, 'Parameters'), el('pre', {}, info.parameters)) : null,
    info.template ? el('details', {}, el('summary', {}, 'Template'), el('pre', {}, info.template)) : null,
  );
}

async function remove(name) {
  const yes = await ask({ title: `Delete ${name}?`, message: 'Its files are removed from the store unless another model uses them.', ok: 'Delete', danger: true });
  if (!yes) return;
  const resp = await api('/api/delete', { method: 'DELETE', json: { model: name } });
  if (!resp.ok) {
    toast(`Not deleted: ${await errorOf(resp)}`, 'error');
    return;
  }
  toast(`Deleted ${name}`);
  refreshModels();
  refreshLoaded();
}

export async function refreshLoaded() {
  let models = [];
  try {
    models = (await getJson('/api/ps')).models || [];
  } catch (e) {
    $('#loaded').replaceChildren(el('li', { class: 'msg-error' }, e.message));
    return;
  }
  const list = $('#loaded');
  if (!models.length) {
    list.replaceChildren(el('li', { class: 'empty' }, 'No model is loaded. Models load on their first request.'));
    return;
  }
  list.replaceChildren(...models.map((m) => el('li', { class: 'card model', 'data-loaded': m.name },
    el('h3', {}, m.name),
    el('dl', { class: 'facts' },
      fact('Memory', formatBytes(m.size)),
      fact('Context', m.context_length),
      fact('Unloads', formatDate(m.expires_at))),
    el('div', { class: 'card-actions' },
      el('button', { type: 'button', class: 'small', onclick: () => unload(m.name) }, 'Unload')),
  )));
}

async function unload(name) {
  const resp = await api('/api/generate', { method: 'POST', json: { model: name, keep_alive: 0 } });
  if (!resp.ok) toast(`Not unloaded: ${await errorOf(resp)}`, 'error');
  refreshLoaded();
}

function progressText(line) {
  const pct = line.total ? ` (${Math.floor((100 * (line.completed || 0)) / line.total)}%)` : '';
  return `${line.status}: ${formatBytes(line.completed || 0)} of ${formatBytes(line.total)}${pct}`;
}

async function pull(e) {
  e.preventDefault();
  if (pulling) return;
  const ref = $('#pull-ref').value.trim();
  if (!ref) return;
  const bar = $('#pull-progress');
  const text = $('#pull-text');
  const status = $('#pull-status');
  const button = $('#pull-button');
  status.hidden = false;
  status.classList.remove('error', 'done');
  bar.removeAttribute('value');
  text.textContent = `Pulling ${ref}…`;
  pulling = true;
  button.disabled = true;
  let ok = false;
  try {
    const resp = await api('/api/pull', { method: 'POST', json: { model: ref, insecure: $('#pull-insecure').checked, stream: true } });
    if (!resp.ok) throw new Error(await errorOf(resp));
    for await (const line of ndjson(resp)) {
      if (line.error) throw new Error(line.error);
      if (typeof line.total === 'number' && line.total > 0) {
        bar.max = line.total;
        bar.value = Math.min(line.completed || 0, line.total);
        text.textContent = progressText(line);
      } else if (line.status) {
        if (line.status === 'success') ok = true;
        else bar.removeAttribute('value');
        text.textContent = line.status;
      }
    }
    if (!ok) throw new Error('the pull ended without success');
    bar.max = 1;
    bar.value = 1;
    text.textContent = `Pulled ${ref}`;
    status.classList.add('done');
    $('#pull-ref').value = '';
    refreshModels();
  } catch (err) {
    status.classList.add('error');
    bar.max = 1;
    bar.value = 0;
    text.textContent = `Pull failed: ${err.message}`;
  } finally {
    pulling = false;
    button.disabled = false;
  }
}

let timer = null;

/** Shows the view; loaded models refresh every few seconds while it is visible. */
export function showModels() {
  refreshModels();
  refreshLoaded();
  clearInterval(timer);
  timer = setInterval(() => {
    if ($('#view-models').hidden || document.hidden) return;
    refreshLoaded();
  }, 5000);
}

export function initModels({ modelsChanged }) {
  onModels = modelsChanged;
  $('#pull-form').addEventListener('submit', pull);
}

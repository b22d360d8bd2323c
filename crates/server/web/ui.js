// Small DOM helpers shared by the views: building elements (never from HTML strings), the
// one dialog, copying, and number formatting.

/** An element: `attrs` are attributes (`on*` functions become listeners, `false`/null are
 * skipped); children are nodes or strings (strings become text, never HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Asks with the page's dialog. `input` (an object: label, type, value) adds a field; resolves
 * to its value (or true without one) on OK, null on cancel. One dialog at a time: a second
 * call waits for the first. */
let dialogQueue = Promise.resolve();
export function ask({ title, message = '', input = null, ok = 'OK', danger = false }) {
  const run = () => new Promise((resolve) => {
    const dialog = $('#dialog');
    const form = $('#dialog-form');
    $('#dialog-title').textContent = title;
    $('#dialog-message').textContent = message;
    $('#dialog-message').hidden = !message;
    const field = $('#dialog-field');
    const inputEl = $('#dialog-input');
    field.hidden = !input;
    if (input) {
      $('#dialog-label').textContent = input.label;
      inputEl.type = input.type || 'text';
      inputEl.value = input.value || '';
      inputEl.autocomplete = input.type === 'password' ? 'current-password' : 'off';
    }
    const okButton = $('#dialog-ok');
    okButton.textContent = ok;
    okButton.classList.toggle('danger', danger);
    const done = (value) => {
      form.removeEventListener('submit', onSubmit);
      dialog.removeEventListener('close', onClose);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      if (e.submitter && e.submitter.value === 'cancel') return done(null);
      done(input ? inputEl.value : true);
    };
    const onClose = () => done(null);
    form.addEventListener('submit', onSubmit);
    dialog.addEventListener('close', onClose);
    dialog.showModal();
    (input ? inputEl : okButton).focus();
    if (input) inputEl.select();
  });
  const p = dialogQueue.then(run);
  dialogQueue = p.catch(() => {});
  return p;
}

/** Copies text, also where the Clipboard API is missing (plain http on another host). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = el('textarea', { 'aria-hidden': 'true', class: 'offscreen' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    ta.remove();
    return ok;
  }
}

/** A button that copies `text()` and says so for a moment. */
export function copyButton(text, label = 'Copy', extra = {}) {
  const b = el('button', { type: 'button', class: 'small', ...extra }, label);
  b.addEventListener('click', async () => {
    const ok = await copyText(text());
    b.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => { b.textContent = label; }, 1500);
  });
  return b;
}

export function formatBytes(n) {
  if (typeof n !== 'number' || !isFinite(n) || n < 0) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatMs(ms) {
  if (typeof ms !== 'number' || !isFinite(ms)) return '–';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export function formatDate(value) {
  const d = new Date(value);
  if (isNaN(d)) return '';
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** A short status line at the bottom of the screen, read out by screen readers. */
let toastTimer = null;
export function toast(message, kind = 'info') {
  const t = $('#toast');
  t.textContent = message;
  t.className = `toast ${kind}`;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, kind === 'error' ? 8000 : 3000);
}

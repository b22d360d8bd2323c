// Calls to the server: the API key (asked for once, on the first 401, and kept in
// localStorage), JSON helpers, and NDJSON streams.

import { ask } from './ui.js';

const KEY = 'hearth.apiKey';
let memoryKey = null; // where localStorage is unavailable

function storedKey() {
  try { return localStorage.getItem(KEY); } catch { return memoryKey; }
}

function storeKey(key) {
  memoryKey = key;
  try { localStorage.setItem(KEY, key); } catch { /* kept in memory */ }
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// While the key dialog is open, every other 401 waits for the same answer.
let asking = null;
function askKey(rejected) {
  if (!asking) {
    asking = ask({
      title: 'API key needed',
      message: rejected
        ? 'The server did not accept this key. Enter the key the server was started with.'
        : 'This server was started with an API key. Enter it to continue; the page keeps it in this browser.',
      input: { label: 'API key', type: 'password' },
      ok: 'Use key',
    }).then((key) => {
      asking = null;
      if (key === null || key.trim() === '') return false;
      storeKey(key.trim());
      return true;
    });
  }
  return asking;
}

/** fetch() with the API key; `json` is sent as a JSON body. A 401 asks for the key and tries
 * again; cancelling the dialog returns the 401 response. */
export async function api(path, { method = 'GET', json, signal, headers = {} } = {}) {
  for (;;) {
    const h = new Headers(headers);
    const key = storedKey();
    if (key) h.set('Authorization', `Bearer ${key}`);
    let body;
    if (json !== undefined) {
      h.set('Content-Type', 'application/json');
      body = JSON.stringify(json);
    }
    const resp = await fetch(path, { method, headers: h, body, signal });
    if (resp.status !== 401) return resp;
    if (!(await askKey(Boolean(key)))) return resp;
  }
}

/** The error message of a failed response (`{"error": "..."}` or OpenAI's shape, or text). */
export async function errorOf(resp) {
  const text = await resp.text().catch(() => '');
  try {
    const v = JSON.parse(text);
    const e = v.error;
    if (typeof e === 'string') return e;
    if (e && typeof e.message === 'string') return e.message;
  } catch { /* not JSON */ }
  return text.trim() || `${resp.status} ${resp.statusText}`;
}

/** A JSON call: the parsed body, or an ApiError with the server's message. */
export async function getJson(path, opts = {}) {
  const resp = await api(path, opts);
  if (!resp.ok) throw new ApiError(await errorOf(resp), resp.status);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** The objects of an NDJSON response body, as they arrive. */
export async function* ndjson(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line) yield JSON.parse(line);
      }
    }
    buffer += decoder.decode();
    if (buffer.trim()) yield JSON.parse(buffer);
  } finally {
    reader.releaseLock();
  }
}

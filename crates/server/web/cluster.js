// The cluster view: each worker's status and memory, from GET /api/cluster. The page shows it
// only when that route answers with at least one worker.

import { api } from './api.js';
import { el, $, formatBytes } from './ui.js';

/** The workers, or null when the server has no cluster (404, or none configured). */
export async function fetchWorkers() {
  try {
    const resp = await api('/api/cluster');
    if (!resp.ok) return null;
    const v = await resp.json();
    return Array.isArray(v.workers) && v.workers.length ? v.workers : null;
  } catch {
    return null;
  }
}

function memory(label, free, total) {
  if (typeof total !== 'number' || total <= 0) return null;
  const used = Math.max(0, total - (free || 0));
  return el('div', { class: 'mem' },
    el('div', { class: 'mem-label' }, `${label}: ${formatBytes(free)} free of ${formatBytes(total)}`),
    el('meter', { min: 0, max: total, value: used, 'aria-label': `${label} memory in use` }));
}

function worker(w) {
  const ok = Boolean(w.reachable) && !w.error;
  const facts = [
    ['Status', ok ? 'reachable' : 'unreachable'],
    ['hearth', w.hearth_version],
    ['RPC', w.rpc_version],
    ['Round trip', typeof w.rtt_ms === 'number' ? `${w.rtt_ms.toFixed(1)} ms` : null],
    ['Hosts', (w.hosts || []).join(', ') || null],
  ].filter(([, v]) => v);
  return el('li', { class: `card worker ${ok ? 'ok' : 'down'}` },
    el('h3', {}, el('span', { class: 'dot', 'aria-hidden': 'true' }), w.address || '(unknown address)'),
    el('dl', { class: 'facts' }, facts.map(([k, v]) => [el('dt', {}, k), el('dd', {}, String(v))])),
    w.error ? el('p', { class: 'msg-error' }, String(w.error)) : null,
    memory('Total', w.free, w.total),
    (w.devices || []).map((d) => memory(d.description ? `${d.name} (${d.description})` : d.name, d.free, d.total)));
}

export function renderWorkers(workers) {
  const up = workers.filter((w) => w.reachable && !w.error).length;
  $('#cluster-summary').textContent = `${up} of ${workers.length} workers reachable`;
  $('#workers').replaceChildren(...workers.map(worker));
}

let timer = null;

export async function showCluster() {
  const load = async () => {
    const workers = await fetchWorkers();
    if (workers) renderWorkers(workers);
    else {
      $('#cluster-summary').textContent = 'No workers are configured.';
      $('#workers').replaceChildren();
    }
  };
  await load();
  clearInterval(timer);
  timer = setInterval(() => {
    if (!$('#view-cluster').hidden && !document.hidden) load();
  }, 5000);
}

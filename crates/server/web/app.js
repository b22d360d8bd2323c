// The page's entry point: routes (#/, #/c/ID, #/new/MODEL, #/models, #/cluster), the list of
// conversations in the sidebar, and the views' start.

import { getJson } from './api.js';
import { el, $, toast, formatDate } from './ui.js';
import { initChat, openDraft, openConversation, setModels, currentConversationId, stop } from './chat.js';
import { initModels, refreshModels, showModels } from './models.js';
import { fetchWorkers, showCluster } from './cluster.js';

const views = { chat: '#view-chat', models: '#view-models', cluster: '#view-cluster' };

function show(view) {
  for (const [name, sel] of Object.entries(views)) $(sel).hidden = name !== view;
  for (const [id, name] of [['#nav-models', 'models'], ['#nav-cluster', 'cluster']]) {
    if (view === name) $(id).setAttribute('aria-current', 'page');
    else $(id).removeAttribute('aria-current');
  }
  $('#topbar-title').textContent = view === 'chat' ? ($('#chat-title').textContent || 'hearth') : view[0].toUpperCase() + view.slice(1);
  closeSidebar();
}

let searchQuery = '';
let listSeq = 0;

async function refreshList() {
  const seq = ++listSeq;
  let list;
  try {
    const q = searchQuery ? `?q=${encodeURIComponent(searchQuery)}` : '';
    list = (await getJson(`/hearth/conversations${q}`)).conversations;
  } catch (e) {
    if (seq === listSeq) $('#conversations').replaceChildren(el('li', { class: 'msg-error' }, `Conversations unavailable: ${e.message}`));
    return;
  }
  if (seq !== listSeq) return; // a newer search answered first
  const current = currentConversationId();
  const items = list.map((c) => el('li', {},
    el('a', { href: `#/c/${c.id}`, 'aria-current': c.id === current && !$('#view-chat').hidden ? 'page' : false, title: formatDate(c.updated_at) },
      c.title)));
  if (!items.length) items.push(el('li', { class: 'empty' }, searchQuery ? 'No conversation matches.' : 'No conversations yet.'));
  $('#conversations').replaceChildren(...items);
}

async function route() {
  const hash = location.hash || '#/';
  let m;
  if (hash === '#/models') {
    stop();
    show('models');
    showModels();
  } else if (hash === '#/cluster') {
    stop();
    show('cluster');
    showCluster();
  } else if ((m = hash.match(/^#\/c\/(\d+)$/))) {
    show('chat');
    await openConversation(Number(m[1]));
  } else if ((m = hash.match(/^#\/new\/(.+)$/))) {
    show('chat');
    const model = decodeURIComponent(m[1]);
    try { localStorage.setItem('hearth.model', model); } catch { /* not kept */ }
    openDraft();
    history.replaceState(null, '', '#/');
    $('#prompt').focus();
  } else {
    show('chat');
    openDraft();
    $('#prompt').focus();
  }
  refreshList();
}

function closeSidebar() {
  document.body.classList.remove('sidebar-open');
  $('#menu').setAttribute('aria-expanded', 'false');
}

function initSidebar() {
  $('#menu').addEventListener('click', () => {
    const open = document.body.classList.toggle('sidebar-open');
    $('#menu').setAttribute('aria-expanded', String(open));
    if (open) $('#search').focus();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('sidebar-open')) closeSidebar();
  });
  let timer = null;
  $('#search').addEventListener('input', (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      searchQuery = e.target.value.trim();
      refreshList();
    }, 200);
  });
  $('#new-chat').addEventListener('click', (e) => {
    // Already on a new chat: the hash does not change, so start one here.
    if (location.hash === '#/' || location.hash === '') {
      e.preventDefault();
      openDraft();
      closeSidebar();
      $('#prompt').focus();
    }
  });
}

async function start() {
  initSidebar();
  initChat({ listChanged: refreshList });
  initModels({ modelsChanged: setModels });
  window.addEventListener('hashchange', route);
  await refreshModels();
  await route();
  const workers = await fetchWorkers();
  $('#nav-cluster').hidden = !workers;
  document.body.dataset.ready = 'true';
}

start().catch((e) => toast(`The page failed to start: ${e.message}`, 'error'));

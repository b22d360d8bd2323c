// Model output to DOM, safely: markdown (marked) with every raw HTML tag shown as text, then
// sanitized (DOMPurify) into a DOM fragment, code highlighted (highlight.js: it escapes what
// it reads). Nothing here assigns HTML that did not pass DOMPurify. "Thinking" sections
// (<think>…</think>) become collapsible blocks.

/* global marked, DOMPurify, hljs */

import { el, copyButton } from './ui.js';

function escapeHtml(s) {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const md = new marked.Marked({ gfm: true, breaks: false });
md.use({
  renderer: {
    // Raw HTML in model output is text, never markup.
    html(token) {
      const text = escapeHtml(token.text || '');
      return token.block ? `<p>${text.trimEnd().replace(/\n/g, '<br>')}</p>` : text;
    },
  },
});

hljs.configure({ ignoreUnescapedHTML: true });

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object', 'embed'],
  FORBID_ATTR: ['style', 'id', 'name'],
};

/** Markdown text → a sanitized DocumentFragment. While `streaming`, only code blocks that name
 * their language are highlighted (guessing is slow; it runs once at the end). */
export function renderMarkdown(text, { streaming = false } = {}) {
  const frag = DOMPurify.sanitize(md.parse(text), PURIFY);
  for (const code of frag.querySelectorAll('pre > code')) {
    const named = [...code.classList].some((c) => c.startsWith('language-'));
    const known = named && hljs.getLanguage([...code.classList].find((c) => c.startsWith('language-')).slice(9));
    if (known || (!named && !streaming)) {
      try { hljs.highlightElement(code); } catch { /* stays plain */ }
    }
    const pre = code.parentElement;
    const wrap = el('div', { class: 'code' });
    pre.replaceWith(wrap);
    wrap.append(pre, copyButton(() => code.textContent, 'Copy', { class: 'small copy-code', 'aria-label': 'Copy code' }));
  }
  return frag;
}

/** Splits an answer into its thinking and answer parts, in order: `[{think, text, open}]`.
 * An unclosed `<think>` runs to the end (still thinking); a `</think>` without an opening
 * tag closes thinking that began in the prompt (templates that open it for the model). */
export function splitThinking(text) {
  const parts = [];
  let rest = text;
  const firstClose = rest.indexOf('</think>');
  const firstOpen = rest.indexOf('<think>');
  if (firstClose >= 0 && (firstOpen < 0 || firstClose < firstOpen)) {
    parts.push({ think: true, text: rest.slice(0, firstClose), open: false });
    rest = rest.slice(firstClose + 8);
  }
  while (rest.length) {
    const open = rest.indexOf('<think>');
    if (open < 0) {
      parts.push({ think: false, text: rest });
      break;
    }
    if (open > 0) parts.push({ think: false, text: rest.slice(0, open) });
    rest = rest.slice(open + 7);
    const close = rest.indexOf('</think>');
    if (close < 0) {
      parts.push({ think: true, text: rest, open: true });
      break;
    }
    parts.push({ think: true, text: rest.slice(0, close), open: false });
    rest = rest.slice(close + 8);
  }
  return parts.filter((p) => p.think || p.text.trim());
}

/** The answer without its thinking: what goes back to the model as history. */
export function withoutThinking(text) {
  return splitThinking(text).filter((p) => !p.think).map((p) => p.text).join('').trim();
}

/** Renders an answer into `container`, keeping thinking blocks open or closed as the reader
 * left them. */
export function renderAnswer(container, text, { streaming = false } = {}) {
  const wasOpen = [...container.querySelectorAll(':scope > details.think')].map((d) => d.open);
  let n = 0;
  const nodes = splitThinking(text).map((part) => {
    if (!part.think) return el('div', { class: 'md' }, renderMarkdown(part.text, { streaming }));
    const i = n++;
    const thinking = streaming && part.open;
    const details = el('details', { class: 'think' },
      el('summary', {}, thinking ? 'Thinking…' : 'Thought'),
      el('div', { class: 'md' }, renderMarkdown(part.text, { streaming })));
    details.open = wasOpen[i] ?? thinking;
    return details;
  });
  container.replaceChildren(...nodes);
}

// Model text -> safe HTML. marked parses the markdown; raw HTML in the text
// is shown as text (never parsed as markup); highlight.js colours code; and
// DOMPurify sanitizes the result as a second line of defence, so model output
// can never run script, whatever it contains.

import { Marked } from 'marked';
import DOMPurify from 'dompurify';
import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import c from 'highlight.js/lib/languages/c';
import cpp from 'highlight.js/lib/languages/cpp';
import css from 'highlight.js/lib/languages/css';
import diff from 'highlight.js/lib/languages/diff';
import go from 'highlight.js/lib/languages/go';
import java from 'highlight.js/lib/languages/java';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import makefile from 'highlight.js/lib/languages/makefile';
import markdown from 'highlight.js/lib/languages/markdown';
import plaintext from 'highlight.js/lib/languages/plaintext';
import python from 'highlight.js/lib/languages/python';
import rust from 'highlight.js/lib/languages/rust';
import shell from 'highlight.js/lib/languages/shell';
import sql from 'highlight.js/lib/languages/sql';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';
import yaml from 'highlight.js/lib/languages/yaml';

// The languages small models write most; others are shown uncoloured.
const LANGS = {
  bash, c, cpp, css, diff, go, java, javascript, json, makefile, markdown, plaintext,
  python, rust, shell, sql, typescript, xml, yaml,
};
for (const [name, def] of Object.entries(LANGS)) hljs.registerLanguage(name, def);

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (ch) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[ch]);
}

// Highlighting is the costly part of re-rendering a streaming answer: keep
// the result for blocks already seen (a finished block does not change).
const hlCache = new Map();

function highlight(code, lang) {
  const key = lang + '\u0000' + code;
  let html = hlCache.get(key);
  if (html !== undefined) return html;
  if (lang && hljs.getLanguage(lang)) {
    html = hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
  } else {
    html = escapeHtml(code);
  }
  if (hlCache.size > 300) hlCache.clear();
  hlCache.set(key, html);
  return html;
}

const marked = new Marked({ gfm: true, breaks: false });
marked.use({
  renderer: {
    // Raw HTML (block or inline) is shown as the text it is.
    html({ text, block }) {
      return block ? `<p class="raw-html">${escapeHtml(text.replace(/\n+$/, ''))}</p>\n` : escapeHtml(text);
    },
    code({ text, lang }) {
      const name = ((lang || '').match(/^[\w+#.-]*/) || [''])[0].toLowerCase();
      const known = hljs.getLanguage(name);
      const label = known ? name : name || 'text';
      const body = highlight(text.replace(/\n$/, ''), known ? name : '');
      return `<pre data-lang="${escapeHtml(label)}"><code class="hljs${known ? ' language-' + escapeHtml(name) : ''}">${body}</code></pre>\n`;
    },
    // Images would load from wherever the model points (and the CSP blocks
    // other origins anyway): show them as links instead.
    image({ href, text }) {
      const label = escapeHtml(text || href || 'image');
      if (!href || !/^https?:/i.test(href)) return label;
      return `<a href="${escapeHtml(href)}">${label}</a>`;
    },
  },
});

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    const href = node.getAttribute('href') || '';
    if (href.startsWith('#')) return;
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'button', 'textarea', 'select', 'option', 'img', 'video', 'audio', 'iframe', 'object', 'embed', 'svg', 'math'],
  FORBID_ATTR: ['style', 'id', 'name'],
};

// Returns sanitized HTML for a piece of markdown.
export function renderMarkdown(text) {
  const raw = marked.parse(text || '', { async: false });
  return DOMPurify.sanitize(raw, PURIFY);
}

// Adds a header (language, copy button) to each code block in el.
export function decorateCodeBlocks(el, makeCopyButton) {
  for (const pre of el.querySelectorAll('pre')) {
    if (pre.parentElement && pre.parentElement.classList.contains('codeblock')) continue;
    const wrap = document.createElement('div');
    wrap.className = 'codeblock';
    const head = document.createElement('div');
    head.className = 'codeblock-head';
    const lang = document.createElement('span');
    lang.className = 'codeblock-lang';
    lang.textContent = pre.getAttribute('data-lang') || 'text';
    head.append(lang, makeCopyButton(pre));
    pre.replaceWith(wrap);
    wrap.append(head, pre);
  }
}

// smolmq web chat: one page, vanilla JS. State lives in `state`; the DOM is
// rebuilt from it (the sidebar, the thread) or patched in place (the message
// that is streaming).

import { $, h, icon, hydrateIcons, copyText, flashCopied } from './dom.js';
import { ApiError, listModels, streamChat } from './api.js';
import { renderMarkdown, decorateCodeBlocks } from './markdown.js';
import * as store from './store.js';

const state = {
  settings: store.loadSettings(),
  convs: store.loadConversations(),
  activeId: null,
  models: [], // ids from GET /v1/models
  modelsStatus: 'loading', // 'loading' | 'ok' | 'error' | 'auth'
  gen: null, // the reply being streamed: {conv, msg, controller, ...}
};

// message id -> its DOM pieces, for the conversation on screen
const views = new Map();

const el = {
  app: $('app'),
  sidebar: $('sidebar'),
  scrim: $('scrim'),
  convList: $('conv-list'),
  title: $('conv-title'),
  scroller: $('scroller'),
  thread: $('thread'),
  empty: $('empty'),
  emptySub: $('empty-sub'),
  suggestions: $('suggestions'),
  input: $('input'),
  composer: $('composer'),
  send: $('send'),
  stop: $('stop'),
  thinkingChip: $('thinking-chip'),
  modelChip: $('model-chip'),
  tiny: $('tiny-notice'),
  banner: $('banner'),
  bannerTitle: $('banner-title'),
  bannerMessage: $('banner-message'),
  bannerRetry: $('banner-retry'),
  bannerAction: $('banner-action'),
  bannerClose: $('banner-close'),
  jump: $('jump'),
  statusDot: $('status-dot'),
  statusText: $('status-text'),
  themeToggle: $('theme-toggle'),
  settingsButton: $('settings-button'),
  settings: $('settings'),
};

/* ---------- persistence ---------- */

let saveTimer = 0;
function persist() {
  clearTimeout(saveTimer);
  saveTimer = 0;
  store.saveConversations(state.convs);
}
// While a reply streams, save at most once a second.
function persistSoon() {
  if (!saveTimer) saveTimer = setTimeout(persist, 1000);
}

function activeConv() {
  return state.convs.find((c) => c.id === state.activeId) || null;
}

function setActive(id) {
  state.activeId = id;
  store.saveActiveId(id);
}

/* ---------- model and theme ---------- */

function effectiveModel() {
  return state.settings.model || state.models[0] || '';
}

function isTinyModel(id) {
  return /tiny/i.test(id || '');
}

const darkQuery = window.matchMedia('(prefers-color-scheme: dark)');

function effectiveTheme() {
  const t = state.settings.theme;
  if (t === 'light' || t === 'dark') return t;
  return darkQuery.matches ? 'dark' : 'light';
}

function applyTheme() {
  const dark = effectiveTheme() === 'dark';
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  el.themeToggle.replaceChildren(icon(dark ? 'sun' : 'moon'));
  el.themeToggle.setAttribute('aria-label', dark ? 'Switch to the light theme' : 'Switch to the dark theme');
  el.themeToggle.title = dark ? 'Light theme' : 'Dark theme';
}

function saveSettings() {
  store.saveSettings(state.settings);
}

/* ---------- formatting ---------- */

function fmtDuration(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
}

function thoughtSeconds(ms) {
  return `${Math.max(1, Math.round(ms / 1000))} s`;
}

function statsLine(stats) {
  if (!stats) return { parts: [], title: '' };
  const parts = [];
  const details = [];
  const approx = stats.approx ? '≈' : '';
  if (stats.ttftMs != null) {
    parts.push(`${fmtDuration(stats.ttftMs)} to first token`);
    details.push(`Time to first token: ${fmtDuration(stats.ttftMs)}`);
  }
  if (stats.tps) {
    parts.push(`${approx}${stats.tps.toFixed(stats.tps < 10 ? 2 : 1)} tok/s`);
    details.push(`Decode: ${approx}${stats.completionTokens} tokens in ${fmtDuration(stats.decodeMs)} = ${approx}${stats.tps.toFixed(2)} tokens/s`);
  }
  if (stats.completionTokens) parts.push(h('span', { class: 'stat-tokens' }, `${approx}${stats.completionTokens} tokens`));
  if (stats.promptTokens) details.push(`Prompt: ${stats.promptTokens} tokens`);
  if (stats.reasoningTokens) details.push(`Reasoning: ${stats.reasoningTokens} tokens`);
  if (stats.thinkMs) details.push(`Thinking: ${fmtDuration(stats.thinkMs)}`);
  if (stats.approx) details.push('≈: counted from the stream (no usage report: the reply was stopped)');
  return { parts: parts.map((p) => (typeof p === 'string' ? h('span', {}, p) : p)), title: details.join('\n') };
}

/* ---------- sidebar ---------- */

function groupName(ts) {
  const day = new Date();
  day.setHours(0, 0, 0, 0);
  const t0 = day.getTime();
  const D = 86400000;
  if (ts >= t0) return 'Today';
  if (ts >= t0 - D) return 'Yesterday';
  if (ts >= t0 - 7 * D) return 'Previous 7 days';
  if (ts >= t0 - 30 * D) return 'Previous 30 days';
  return 'Older';
}

function renderSidebar() {
  const sorted = [...state.convs].sort((a, b) => b.updatedAt - a.updatedAt);
  const nodes = [];
  let group = '';
  for (const c of sorted) {
    const g = groupName(c.updatedAt);
    if (g !== group) {
      nodes.push(h('div', { class: 'conv-group' }, g));
      group = g;
    }
    nodes.push(convItem(c));
  }
  if (!sorted.length) nodes.push(h('p', { class: 'conv-none' }, 'Your chats are kept in this browser and appear here.'));
  el.convList.replaceChildren(...nodes);
}

function convItem(c) {
  const active = c.id === state.activeId;
  const busy = state.gen && state.gen.conv === c;
  const title = h('span', { class: 'conv-title-text' }, c.title || 'New chat');
  const open = h('button', {
    class: 'conv-open', type: 'button', title: c.title || 'New chat',
    'aria-current': active ? 'page' : null,
    onclick: () => openConversation(c.id),
  }, busy ? h('span', { class: 'busy-dot', 'aria-label': 'answering' }) : null, title);
  const rename = h('button', {
    class: 'icon-btn icon-btn-small', type: 'button', 'aria-label': 'Rename', title: 'Rename',
    'data-testid': 'rename-conversation',
    onclick: (e) => { e.stopPropagation(); startRename(item, c); },
  }, icon('pencil'));
  const del = h('button', {
    class: 'icon-btn icon-btn-small del', type: 'button', 'aria-label': 'Delete', title: 'Delete',
    'data-testid': 'delete-conversation',
    onclick: (e) => {
      e.stopPropagation();
      if (del.classList.contains('confirm')) {
        deleteConversation(c.id);
        return;
      }
      del.classList.add('confirm');
      del.setAttribute('aria-label', 'Click again to delete');
      del.title = 'Click again to delete';
      setTimeout(() => {
        del.classList.remove('confirm');
        del.setAttribute('aria-label', 'Delete');
        del.title = 'Delete';
      }, 3000);
    },
  }, icon('trash'));
  const item = h('div', {
    class: 'conv-item' + (active ? ' active' : ''),
    'data-testid': 'conversation-item',
    dataset: { id: c.id },
  }, open, h('span', { class: 'conv-actions' }, rename, del));
  return item;
}

function startRename(item, c) {
  const input = h('input', { class: 'conv-rename', type: 'text', maxlength: 120, 'aria-label': 'Chat title', 'data-testid': 'rename-input' });
  input.value = c.title || '';
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    const v = input.value.replace(/\s+/g, ' ').trim();
    if (save && v && v !== c.title) {
      c.title = v;
      c.titleEdited = true;
      persist();
    }
    renderSidebar();
    if (c.id === state.activeId) el.title.textContent = c.title || 'New chat';
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); finish(true); }
    if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); finish(false); }
  });
  input.addEventListener('blur', () => finish(true));
  item.replaceChildren(input);
  item.classList.add('renaming');
  input.focus();
  input.select();
}

function deleteConversation(id) {
  if (state.gen && state.gen.conv.id === id) state.gen.controller.abort();
  state.convs = state.convs.filter((c) => c.id !== id);
  persist();
  if (state.activeId === id) {
    setActive(null);
    renderThread();
  }
  renderSidebar();
  renderComposer();
}

function openConversation(id) {
  if (id !== state.activeId) {
    setActive(id);
    hideBanner();
    renderThread();
    renderSidebar();
    renderComposer();
  }
  closeSidebar();
  if (!matchMedia('(pointer: coarse)').matches) el.input.focus();
}

function newChat() {
  if (state.activeId !== null) {
    setActive(null);
    hideBanner();
    renderThread();
    renderSidebar();
    renderComposer();
  }
  closeSidebar();
  el.input.focus();
}

function openSidebar() {
  el.app.classList.add('sidebar-open');
  el.scrim.hidden = false;
}

function closeSidebar() {
  el.app.classList.remove('sidebar-open');
  el.scrim.hidden = true;
}

/* ---------- the thread ---------- */

function renderThread() {
  views.clear();
  const conv = activeConv();
  el.title.textContent = conv ? conv.title || 'New chat' : 'New chat';
  document.title = conv && conv.title ? `${conv.title} · smolmq` : 'smolmq chat';
  const msgs = conv ? conv.messages : [];
  el.thread.replaceChildren(...msgs.map((m) => messageView(conv, m)));
  el.empty.hidden = msgs.length > 0;
  el.scroller.classList.toggle('is-empty', msgs.length === 0);
  scrollToBottom(true);
}

function lastAssistant(conv) {
  const m = conv.messages[conv.messages.length - 1];
  return m && m.role === 'assistant' ? m : null;
}

function messageView(conv, m) {
  return m.role === 'user' ? userView(conv, m) : assistantView(conv, m);
}

function actionButton(name, label, testid, onclick) {
  return h('button', {
    class: 'act', type: 'button', title: label, 'aria-label': label, 'data-testid': testid, onclick,
  }, icon(name));
}

function userView(conv, m) {
  const bubble = h('div', { class: 'bubble' }, m.content);
  const copy = actionButton('copy', 'Copy', 'copy-message', async () => flashCopied(copy, await copyText(m.content)));
  const edit = actionButton('pencil', 'Edit and resend', 'edit-button', () => startEdit(conv, m, node));
  edit.disabled = !!state.gen;
  const node = h('article', {
    class: 'msg user', 'data-testid': 'message', 'data-role': 'user', dataset: { id: m.id },
  }, bubble, h('div', { class: 'msg-actions' }, copy, edit));
  views.set(m.id, { node, edit });
  return node;
}

function startEdit(conv, m, node) {
  if (state.gen) return;
  const ta = h('textarea', { class: 'edit-input', rows: 1, 'data-testid': 'edit-input', 'aria-label': 'Edit message' });
  ta.value = m.content;
  const cancel = () => node.replaceWith(userView(conv, m));
  const submit = () => {
    const text = ta.value.trim();
    if (!text || state.gen) return;
    const idx = conv.messages.indexOf(m);
    if (idx < 0) return;
    // Cut the conversation at the edited message and send from there.
    conv.messages = conv.messages.slice(0, idx);
    conv.messages.push({ id: store.newId(), role: 'user', content: text, createdAt: Date.now() });
    if (idx === 0 && !conv.titleEdited) conv.title = store.makeTitle(text);
    conv.updatedAt = Date.now();
    persist();
    renderThread();
    renderSidebar();
    generate(conv);
  };
  ta.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    if (e.key === 'Escape') { e.preventDefault(); cancel(); }
  });
  ta.addEventListener('input', () => autosize(ta, 320));
  const editor = h('div', { class: 'msg user editing', 'data-testid': 'message', 'data-role': 'user' },
    h('div', { class: 'editor' }, ta,
      h('div', { class: 'editor-row' },
        h('span', { class: 'editor-hint' }, 'Later messages will be replaced.'),
        h('button', { class: 'btn btn-small', type: 'button', onclick: cancel }, 'Cancel'),
        h('button', { class: 'btn btn-small btn-primary', type: 'button', 'data-testid': 'edit-send', onclick: submit }, 'Send'))));
  node.replaceWith(editor);
  autosize(ta, 320);
  ta.focus();
  ta.setSelectionRange(ta.value.length, ta.value.length);
}

function codeCopyButton(pre) {
  const btn = h('button', { class: 'code-copy', type: 'button', 'data-testid': 'code-copy', 'aria-label': 'Copy code' },
    icon('copy'), h('span', { class: 'btn-label' }, 'Copy'));
  btn.addEventListener('click', async () => {
    const code = pre.querySelector('code');
    flashCopied(btn, await copyText((code || pre).textContent));
  });
  return btn;
}

function assistantView(conv, m) {
  const answer = h('div', { class: 'md answer' });
  const stats = h('span', { class: 'stats', 'data-testid': 'message-stats' });
  const tag = h('span', { class: 'tag', hidden: true });
  const copy = actionButton('copy', 'Copy', 'copy-message', async () => flashCopied(copy, await copyText(m.content)));
  const regen = actionButton('refresh', 'Regenerate', 'regenerate-button', () => regenerate(conv));
  const foot = h('div', { class: 'msg-foot' },
    tag, stats, h('div', { class: 'msg-actions' }, copy, regen));
  const pending = h('div', { class: 'pending', 'aria-label': 'Waiting for the first token' }, h('i'), h('i'), h('i'));
  const node = h('article', {
    class: 'msg assistant', 'data-testid': 'message', 'data-role': 'assistant', dataset: { id: m.id },
  }, pending, answer, foot);
  const view = {
    node, answer, stats, tag, foot, copy, regen, pending, conv,
    think: null, thinkBody: null, thinkLabel: null, userToggled: false,
    shownContent: null, shownReasoning: null,
  };
  views.set(m.id, view);
  updateAssistant(m, view);
  return node;
}

function ensureThinkingPanel(view) {
  if (view.think) return;
  const label = h('span', { class: 'think-label' });
  const summary = h('summary', {}, icon('spark'), label, h('span', { class: 'think-chevron' }, icon('chevron')));
  const body = h('div', { class: 'md thinking-body' });
  const details = h('details', { class: 'thinking', 'data-testid': 'thinking-panel' }, summary, body);
  summary.addEventListener('click', () => { view.userToggled = true; });
  view.think = details;
  view.thinkBody = body;
  view.thinkLabel = label;
  view.node.prepend(details);
}

function updateAssistant(m, view = views.get(m.id)) {
  if (!view) return;
  const streaming = m.status === 'streaming';
  const gen = state.gen && state.gen.msg === m ? state.gen : null;
  view.node.dataset.status = m.status || 'done';
  view.pending.hidden = !(streaming && !m.reasoning && !m.content);

  if (m.reasoning) {
    ensureThinkingPanel(view);
    if (view.shownReasoning !== m.reasoning) {
      view.thinkBody.innerHTML = renderMarkdown(m.reasoning); // sanitized
      view.shownReasoning = m.reasoning;
    }
    const thinking = streaming && !m.content;
    view.think.classList.toggle('live', thinking);
    if (thinking) {
      const secs = gen && gen.tFirst != null ? Math.floor((performance.now() - gen.tFirst) / 1000) : 0;
      view.thinkLabel.textContent = secs > 0 ? `Thinking… ${secs} s` : 'Thinking…';
      if (!view.userToggled) view.think.open = true;
    } else {
      const ms = m.stats && m.stats.thinkMs != null ? m.stats.thinkMs
        : gen && gen.tThinkEnd != null ? gen.tThinkEnd - gen.tFirst : null;
      view.thinkLabel.textContent = ms != null ? `Thought for ${thoughtSeconds(ms)}` : 'Thoughts';
      if (!view.userToggled) view.think.open = false;
    }
  }

  if (view.shownContent !== m.content) {
    view.answer.innerHTML = renderMarkdown(m.content); // sanitized
    decorateCodeBlocks(view.answer, codeCopyButton);
    view.shownContent = m.content;
  }
  view.answer.classList.toggle('streaming', streaming && !!m.content);
  view.answer.hidden = !m.content && !streaming;

  const s = statsLine(m.stats);
  view.stats.replaceChildren(...s.parts);
  view.stats.title = s.title;
  let tag = '';
  if (m.status === 'stopped') tag = 'Stopped';
  else if (m.status === 'error') tag = 'Interrupted';
  else if (m.finishReason === 'length') tag = 'Cut off: max tokens reached';
  else if (m.status === 'done' && !m.content) tag = 'No answer';
  view.tag.textContent = tag;
  view.tag.hidden = !tag;
  view.tag.title = m.status === 'error' && m.error ? m.error : '';
  view.foot.hidden = streaming;
  const isLast = view.conv && lastAssistant(view.conv) === m;
  view.regen.hidden = !isLast;
  view.regen.disabled = !!state.gen;
  view.copy.hidden = !m.content;
}

// Re-renders the streaming message at most once per frame, and less often
// when a render gets costly (a long answer is re-parsed each time).
let updateTimer = 0;
let renderCost = 0;
function scheduleUpdate() {
  if (updateTimer) return;
  const wait = Math.min(250, Math.max(0, renderCost * 3 - 16));
  updateTimer = setTimeout(() => requestAnimationFrame(() => {
    updateTimer = 0;
    if (!state.gen) return;
    const t = performance.now();
    updateAssistant(state.gen.msg);
    followBottom();
    renderCost = performance.now() - t;
  }), wait);
}

/* ---------- scrolling ---------- */

let stick = true;
function nearBottom() {
  const s = el.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}
function scrollToBottom(force) {
  if (force) stick = true;
  if (stick) el.scroller.scrollTop = el.scroller.scrollHeight;
  el.jump.hidden = true;
}
function followBottom() {
  if (stick) el.scroller.scrollTop = el.scroller.scrollHeight;
}
el.scroller.addEventListener('scroll', () => {
  stick = nearBottom();
  el.jump.hidden = stick || el.thread.childElementCount === 0;
}, { passive: true });
el.jump.addEventListener('click', () => {
  el.scroller.scrollTo({ top: el.scroller.scrollHeight, behavior: 'smooth' });
  stick = true;
});

/* ---------- generation ---------- */

function buildRequest(conv) {
  const st = state.settings;
  const messages = [];
  if (st.system.trim()) messages.push({ role: 'system', content: st.system });
  for (const m of conv.messages) {
    if (m.role === 'assistant' && !m.content) continue; // stopped or failed before any answer
    messages.push({ role: m.role, content: m.content });
  }
  const body = {
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: st.temperature,
    top_p: st.top_p,
  };
  const model = effectiveModel();
  if (model) body.model = model;
  if (st.max_tokens) body.max_tokens = st.max_tokens;
  if (!st.thinking) body.chat_template_kwargs = { enable_thinking: false };
  return body;
}

let ticker = 0;

async function generate(conv) {
  if (state.gen) return;
  hideBanner();
  const body = buildRequest(conv);
  const msg = {
    id: store.newId(), role: 'assistant', content: '', reasoning: '', status: 'streaming',
    createdAt: Date.now(), model: body.model || '',
  };
  conv.messages.push(msg);
  conv.updatedAt = Date.now();
  const gen = {
    conv, msg, controller: new AbortController(), t0: performance.now(),
    tFirst: null, tThinkEnd: null, tLast: null, chunks: 0, usage: null, finish: null,
  };
  state.gen = gen;
  renderCost = 0;
  if (conv === activeConv()) {
    el.thread.append(assistantView(conv, msg));
    el.empty.hidden = true;
    el.scroller.classList.remove('is-empty');
    refreshActions();
    scrollToBottom(true);
  }
  renderSidebar();
  renderComposer();
  persist();
  ticker = setInterval(() => { if (state.gen === gen && msg.reasoning && !msg.content) updateAssistant(msg); }, 500);

  let failure = null;
  try {
    for await (const chunk of streamChat(body, state.settings.apiKey, gen.controller.signal)) {
      if (chunk.usage) gen.usage = chunk.usage;
      if (typeof chunk.model === 'string' && chunk.model) msg.model = chunk.model;
      const choice = Array.isArray(chunk.choices) ? chunk.choices[0] : null;
      if (!choice) continue;
      const d = choice.delta || {};
      const now = performance.now();
      const r = typeof d.reasoning_content === 'string' ? d.reasoning_content : '';
      const c = typeof d.content === 'string' ? d.content : '';
      if (r) {
        if (gen.tFirst == null) gen.tFirst = now;
        msg.reasoning += r;
        gen.chunks++;
        gen.tLast = now;
      }
      if (c) {
        if (gen.tFirst == null) gen.tFirst = now;
        if (msg.reasoning && gen.tThinkEnd == null) gen.tThinkEnd = now;
        msg.content += c;
        gen.chunks++;
        gen.tLast = now;
      }
      if (choice.finish_reason) gen.finish = choice.finish_reason;
      if (r || c) {
        scheduleUpdate();
        persistSoon();
      }
    }
    msg.status = 'done';
  } catch (e) {
    if (gen.controller.signal.aborted) {
      msg.status = 'stopped';
    } else {
      failure = e instanceof ApiError ? e : new ApiError(-1, String((e && e.message) || e));
      msg.status = 'error';
      msg.error = failure.message;
    }
  }
  clearInterval(ticker);
  const end = performance.now();

  // Time to first token; tokens/s = completion tokens over the decode time
  // (first token to last); the usage chunk gives the token counts.
  const stats = {};
  if (gen.tFirst != null) stats.ttftMs = gen.tFirst - gen.t0;
  if (msg.reasoning && gen.tFirst != null) stats.thinkMs = (gen.tThinkEnd ?? gen.tLast ?? end) - gen.tFirst;
  const u = gen.usage;
  let tokens = null;
  if (u && Number.isFinite(u.completion_tokens)) {
    tokens = u.completion_tokens;
    if (Number.isFinite(u.prompt_tokens)) stats.promptTokens = u.prompt_tokens;
    const rt = u.completion_tokens_details && u.completion_tokens_details.reasoning_tokens;
    if (Number.isFinite(rt) && rt > 0) stats.reasoningTokens = rt;
  } else if (gen.chunks) {
    tokens = gen.chunks;
    stats.approx = true;
  }
  if (tokens != null) stats.completionTokens = tokens;
  if (tokens && gen.tFirst != null && gen.tLast != null && gen.tLast - gen.tFirst > 1) {
    stats.decodeMs = gen.tLast - gen.tFirst;
    stats.tps = tokens / (stats.decodeMs / 1000);
  }
  msg.stats = stats;
  if (gen.finish) msg.finishReason = gen.finish;

  // A reply that failed before any text is dropped; the banner says why.
  if (failure && !msg.content && !msg.reasoning) {
    conv.messages = conv.messages.filter((x) => x !== msg);
    const v = views.get(msg.id);
    if (v) v.node.remove();
    views.delete(msg.id);
  }
  conv.updatedAt = Date.now();
  state.gen = null;
  persist();
  updateAssistant(msg);
  refreshActions();
  renderSidebar();
  renderComposer();
  followBottom();
  if (failure && state.convs.includes(conv)) {
    showError(failure, () => retry(conv));
  }
}

function stop() {
  if (state.gen) state.gen.controller.abort();
}

function regenerate(conv) {
  if (state.gen) return;
  while (conv.messages.length && conv.messages[conv.messages.length - 1].role === 'assistant') conv.messages.pop();
  if (!conv.messages.length) return;
  persist();
  if (conv === activeConv()) renderThread();
  generate(conv);
}

function retry(conv) {
  if (!state.convs.includes(conv)) return;
  if (conv !== activeConv()) {
    setActive(conv.id);
    renderSidebar();
    renderThread();
  }
  regenerate(conv);
}

// Enables or disables per-message actions while a reply streams.
function refreshActions() {
  for (const [id, v] of views) {
    if (v.edit) v.edit.disabled = !!state.gen;
    else {
      const conv = activeConv();
      const m = conv && conv.messages.find((x) => x.id === id);
      if (m && m !== (state.gen && state.gen.msg)) updateAssistant(m, v);
    }
  }
}

function sendText(raw) {
  const text = raw.trim();
  if (!text || state.gen) return;
  let conv = activeConv();
  const now = Date.now();
  if (!conv) {
    conv = { id: store.newId(), title: '', titleEdited: false, createdAt: now, updatedAt: now, messages: [] };
    state.convs.push(conv);
    setActive(conv.id);
  }
  if (!conv.titleEdited && !conv.messages.some((m) => m.role === 'user')) conv.title = store.makeTitle(text);
  conv.messages.push({ id: store.newId(), role: 'user', content: text, createdAt: now });
  conv.updatedAt = now;
  el.input.value = '';
  autosize(el.input, 220);
  persist();
  renderThread();
  generate(conv);
}

/* ---------- composer ---------- */

function autosize(ta, max) {
  ta.style.height = 'auto';
  ta.style.height = Math.min(ta.scrollHeight + 2, max) + 'px';
  ta.style.overflowY = ta.scrollHeight + 2 > max ? 'auto' : 'hidden';
}

function renderComposer() {
  const busyHere = state.gen && state.gen.conv === activeConv();
  el.stop.hidden = !busyHere;
  el.send.hidden = !!busyHere;
  el.send.disabled = !!state.gen || !el.input.value.trim();
  el.send.title = state.gen && !busyHere ? 'Another chat is still answering' : 'Send (Enter)';
  const on = state.settings.thinking;
  el.thinkingChip.setAttribute('aria-pressed', String(on));
  el.thinkingChip.classList.toggle('on', on);
  el.thinkingChip.title = on ? 'Thinking is on: the model reasons before answering' : 'Thinking is off: the model answers directly';
  const model = effectiveModel();
  el.modelChip.textContent = model || (state.modelsStatus === 'loading' ? '' : 'no model');
  el.modelChip.hidden = !model;
  el.tiny.hidden = !isTinyModel(model);
  el.emptySub.textContent = on
    ? 'With thinking on, the model reasons step by step before it answers.'
    : 'Thinking is off: the model answers straight away.';
}

el.input.addEventListener('input', () => {
  autosize(el.input, 220);
  renderComposer();
});
el.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !matchMedia('(pointer: coarse)').matches) {
    e.preventDefault();
    sendText(el.input.value);
  }
});
el.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  sendText(el.input.value);
});
el.stop.addEventListener('click', stop);
el.thinkingChip.addEventListener('click', () => {
  state.settings.thinking = !state.settings.thinking;
  saveSettings();
  renderComposer();
});
el.modelChip.addEventListener('click', openSettings);

const SUGGESTIONS = [
  'Explain how a message broker balances work across workers',
  'Write a Python function that merges two sorted lists',
  'What is the difference between TCP and UDP?',
  'Give me three ideas for a rainy Sunday',
];
el.suggestions.replaceChildren(...SUGGESTIONS.map((s) => h('button', {
  class: 'suggestion', type: 'button', onclick: () => sendText(s),
}, s)));

/* ---------- banners ---------- */

let bannerTimer = 0;
let bannerRetry = null;
let bannerActionFn = null;

function showBanner({ kind, title, message, retryAfter, retry, action }) {
  clearInterval(bannerTimer);
  el.banner.dataset.kind = kind;
  el.bannerTitle.textContent = title;
  bannerRetry = retry || null;
  el.bannerRetry.hidden = !retry;
  bannerActionFn = action ? action.fn : null;
  el.bannerAction.hidden = !action;
  if (action) el.bannerAction.textContent = action.label;
  if (retryAfter != null) {
    const until = Date.now() + retryAfter * 1000;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      el.bannerMessage.textContent = left > 0
        ? `${message} Try again in ${left} s.`
        : `${message} You can try again now.`;
      if (left <= 0) clearInterval(bannerTimer);
    };
    tick();
    bannerTimer = setInterval(tick, 1000);
  } else {
    el.bannerMessage.textContent = message;
  }
  el.banner.hidden = false;
  followBottom();
}

function hideBanner() {
  clearInterval(bannerTimer);
  el.banner.hidden = true;
  bannerRetry = null;
}

function showError(e, retry) {
  const st = e.status;
  const msg = e.message || 'The request failed.';
  if (st === 429) {
    showBanner({ kind: 'rate-limit', title: 'Too many requests.', message: 'The server is busy right now.', retryAfter: e.retryAfter ?? null, retry });
  } else if (st === 503) {
    showBanner({ kind: 'unavailable', title: 'No model worker available.', message: `${msg.replace(/\.?$/, '.')} Start a worker, or try again shortly.`, retry });
  } else if (st === 401 || st === 403) {
    showBanner({
      kind: 'auth', title: st === 401 ? 'API key needed.' : 'API key refused.',
      message: `${msg.replace(/\.?$/, '.')} Set the key in Settings.`, retry,
      action: { label: 'Settings', fn: openSettings },
    });
  } else if (st === 0) {
    showBanner({ kind: 'network', title: 'Cannot reach the gateway.', message: msg, retry });
  } else if (st === -1) {
    showBanner({ kind: 'error', title: 'The answer was interrupted.', message: msg, retry });
  } else {
    showBanner({ kind: 'error', title: `Request failed (${st}).`, message: msg, retry });
  }
}

el.bannerRetry.addEventListener('click', () => {
  const fn = bannerRetry;
  hideBanner();
  if (fn) fn();
});
el.bannerAction.addEventListener('click', () => { if (bannerActionFn) bannerActionFn(); });
el.bannerClose.addEventListener('click', hideBanner);

/* ---------- models ---------- */

let modelsAbort = null;
async function loadModels() {
  if (modelsAbort) modelsAbort.abort();
  const ctl = new AbortController();
  modelsAbort = ctl;
  state.modelsStatus = 'loading';
  renderStatus();
  try {
    state.models = await listModels(state.settings.apiKey, ctl.signal);
    state.modelsStatus = 'ok';
    if (bannerRetry === loadModels) hideBanner();
  } catch (e) {
    if (e && e.name === 'AbortError') return;
    state.models = [];
    state.modelsStatus = e.status === 401 || e.status === 403 ? 'auth' : 'error';
    if (!state.gen) showError(e, loadModels);
  }
  renderStatus();
  renderComposer();
  fillModelSelect();
}

function renderStatus() {
  const s = state.modelsStatus;
  el.statusDot.dataset.state = s;
  el.statusText.textContent =
    s === 'loading' ? 'Connecting…'
      : s === 'auth' ? 'API key needed'
        : s === 'error' ? 'Gateway unreachable'
          : state.models.length ? `${state.models.length === 1 ? state.models[0] : state.models.length + ' models'} · ready`
            : 'No models served yet';
}

/* ---------- settings ---------- */

const f = {
  model: $('set-model'),
  system: $('set-system'),
  temperature: $('set-temperature'),
  outTemperature: $('out-temperature'),
  topP: $('set-top-p'),
  outTopP: $('out-top-p'),
  maxTokens: $('set-max-tokens'),
  thinking: $('set-thinking'),
  apiKey: $('set-api-key'),
  showKey: $('show-key'),
  modelHint: $('model-hint'),
  reset: $('reset-settings'),
  clearAll: $('clear-all'),
};

function fillModelSelect() {
  const cur = state.settings.model;
  const opts = [h('option', { value: '' }, state.models[0] ? `Automatic (${state.models[0]})` : 'Automatic')];
  for (const id of state.models) opts.push(h('option', { value: id }, id));
  if (cur && !state.models.includes(cur)) opts.push(h('option', { value: cur }, `${cur} (not listed)`));
  f.model.replaceChildren(...opts);
  f.model.value = cur;
  f.modelHint.textContent =
    state.modelsStatus === 'ok' ? (state.models.length ? 'From the gateway’s /v1/models.' : 'The gateway lists no models yet: is a worker running?')
      : state.modelsStatus === 'auth' ? 'The gateway needs an API key to list its models.'
        : state.modelsStatus === 'loading' ? 'Loading the model list…' : 'Could not load the model list.';
}

function fillSettings() {
  const s = state.settings;
  fillModelSelect();
  f.system.value = s.system;
  f.temperature.value = String(s.temperature);
  f.outTemperature.textContent = s.temperature.toFixed(2);
  f.topP.value = String(s.top_p);
  f.outTopP.textContent = s.top_p.toFixed(2);
  f.maxTokens.value = s.max_tokens ? String(s.max_tokens) : '';
  f.thinking.checked = s.thinking;
  f.apiKey.value = s.apiKey;
  for (const r of el.settings.querySelectorAll('input[name="theme"]')) r.checked = r.value === s.theme;
}

let keyAtOpen = '';
function openSettings() {
  fillSettings();
  keyAtOpen = state.settings.apiKey;
  if (!el.settings.open) el.settings.showModal();
}

function onSettingsInput() {
  const s = state.settings;
  s.model = f.model.value;
  s.system = f.system.value;
  s.temperature = parseFloat(f.temperature.value);
  s.top_p = parseFloat(f.topP.value);
  const mt = parseInt(f.maxTokens.value, 10);
  s.max_tokens = Number.isInteger(mt) && mt > 0 ? mt : null;
  s.thinking = f.thinking.checked;
  s.apiKey = f.apiKey.value.trim();
  const theme = el.settings.querySelector('input[name="theme"]:checked');
  if (theme) s.theme = theme.value;
  f.outTemperature.textContent = s.temperature.toFixed(2);
  f.outTopP.textContent = s.top_p.toFixed(2);
  saveSettings();
  applyTheme();
  renderComposer();
}

el.settings.addEventListener('input', onSettingsInput);
el.settings.addEventListener('change', onSettingsInput);
el.settings.addEventListener('close', () => {
  if (state.settings.apiKey !== keyAtOpen || state.modelsStatus !== 'ok') loadModels();
});
// A click on the backdrop (outside the dialog's box) closes it.
el.settings.addEventListener('click', (e) => {
  if (e.target !== el.settings) return;
  const r = el.settings.getBoundingClientRect();
  if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) el.settings.close();
});
f.showKey.addEventListener('click', () => {
  const show = f.apiKey.type === 'password';
  f.apiKey.type = show ? 'text' : 'password';
  f.showKey.textContent = show ? 'Hide' : 'Show';
});
f.reset.addEventListener('click', () => {
  state.settings = { ...store.DEFAULT_SETTINGS, apiKey: state.settings.apiKey, theme: state.settings.theme };
  saveSettings();
  fillSettings();
  applyTheme();
  renderComposer();
});
let clearTimer = 0;
f.clearAll.addEventListener('click', () => {
  if (!f.clearAll.classList.contains('confirm')) {
    f.clearAll.classList.add('confirm');
    f.clearAll.textContent = 'Click again to delete every chat';
    clearTimer = setTimeout(() => {
      f.clearAll.classList.remove('confirm');
      f.clearAll.textContent = 'Delete all chats';
    }, 3000);
    return;
  }
  clearTimeout(clearTimer);
  f.clearAll.classList.remove('confirm');
  f.clearAll.textContent = 'Delete all chats';
  if (state.gen) state.gen.controller.abort();
  state.convs = [];
  persist();
  setActive(null);
  renderThread();
  renderSidebar();
  renderComposer();
});

/* ---------- global wiring ---------- */

hydrateIcons(document.body);
el.settingsButton.addEventListener('click', openSettings);
el.themeToggle.addEventListener('click', () => {
  state.settings.theme = effectiveTheme() === 'dark' ? 'light' : 'dark';
  saveSettings();
  applyTheme();
});
darkQuery.addEventListener('change', applyTheme);
$('new-chat').addEventListener('click', newChat);
$('new-chat-top').addEventListener('click', newChat);
$('open-sidebar').addEventListener('click', openSidebar);
$('close-sidebar').addEventListener('click', closeSidebar);
el.scrim.addEventListener('click', closeSidebar);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') {
    if (el.app.classList.contains('sidebar-open')) closeSidebar();
    else if (state.gen && !el.settings.open) stop();
  }
});
window.addEventListener('pagehide', persist);
// Another tab changed the conversations: take its copy unless we are busy.
window.addEventListener('storage', (e) => {
  if (e.key === 'smolmq.conversations.v1' && !state.gen) {
    state.convs = store.loadConversations();
    if (!activeConv()) setActive(null);
    renderSidebar();
    renderThread();
    renderComposer();
  }
});

const saved = store.loadActiveId();
if (saved && state.convs.some((c) => c.id === saved)) state.activeId = saved;
applyTheme();
renderSidebar();
renderThread();
renderComposer();
renderStatus();
loadModels();
if (!matchMedia('(pointer: coarse)').matches) el.input.focus();
// Transitions are off until the first state is painted (no animated flash).
requestAnimationFrame(() => requestAnimationFrame(() => document.documentElement.classList.add('ready')));

// What the page keeps in the browser (localStorage): settings and the
// conversations. Nothing here ever leaves the browser except as a request.

const KEY_SETTINGS = 'smolmq.settings.v1';
const KEY_CONVS = 'smolmq.conversations.v1';
const KEY_ACTIVE = 'smolmq.active.v1';

// SmolLM3's recommended sampling: temperature 0.6, top-p 0.95.
export const DEFAULT_SETTINGS = Object.freeze({
  model: '', // '' = the first model the gateway lists
  system: '',
  temperature: 0.6,
  top_p: 0.95,
  max_tokens: null, // null = the gateway's default
  thinking: true,
  theme: 'system', // 'system' | 'light' | 'dark'
  apiKey: '',
});

function read(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v == null ? fallback : JSON.parse(v);
  } catch (e) {
    return fallback;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch (e) {
    console.warn('smolmq: could not save to localStorage:', e);
    return false;
  }
}

function num(v, lo, hi, fallback) {
  const n = typeof v === 'number' ? v : parseFloat(v);
  return Number.isFinite(n) && n >= lo && n <= hi ? n : fallback;
}

export function loadSettings() {
  const s = read(KEY_SETTINGS, {}) || {};
  const d = DEFAULT_SETTINGS;
  const maxTok = parseInt(s.max_tokens, 10);
  return {
    model: typeof s.model === 'string' ? s.model : d.model,
    system: typeof s.system === 'string' ? s.system : d.system,
    temperature: num(s.temperature, 0, 2, d.temperature),
    top_p: num(s.top_p, 0, 1, d.top_p),
    max_tokens: Number.isInteger(maxTok) && maxTok > 0 ? maxTok : null,
    thinking: typeof s.thinking === 'boolean' ? s.thinking : d.thinking,
    theme: ['system', 'light', 'dark'].includes(s.theme) ? s.theme : d.theme,
    apiKey: typeof s.apiKey === 'string' ? s.apiKey : d.apiKey,
  };
}

export function saveSettings(s) {
  write(KEY_SETTINGS, s);
}

function validMessage(m) {
  return m && typeof m === 'object' && (m.role === 'user' || m.role === 'assistant') &&
    typeof m.content === 'string' && typeof m.id === 'string';
}

export function loadConversations() {
  const list = read(KEY_CONVS, []);
  if (!Array.isArray(list)) return [];
  return list
    .filter((c) => c && typeof c.id === 'string' && Array.isArray(c.messages))
    .map((c) => ({
      id: c.id,
      title: typeof c.title === 'string' ? c.title : '',
      titleEdited: !!c.titleEdited,
      createdAt: +c.createdAt || Date.now(),
      updatedAt: +c.updatedAt || +c.createdAt || Date.now(),
      messages: c.messages.filter(validMessage).map((m) => (
        // A reply that was streaming when the page closed is cut short.
        m.status === 'streaming' ? { ...m, status: 'stopped' } : m
      )),
    }));
}

export function saveConversations(convs) {
  return write(KEY_CONVS, convs);
}

export function loadActiveId() {
  const v = read(KEY_ACTIVE, null);
  return typeof v === 'string' ? v : null;
}

export function saveActiveId(id) {
  write(KEY_ACTIVE, id);
}

export function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// A title from the first user message: one line, about 48 characters, cut
// at a word boundary.
export function makeTitle(text) {
  const one = String(text).replace(/\s+/g, ' ').trim();
  if (one.length <= 48) return one || 'New chat';
  const cut = one.slice(0, 48);
  const sp = cut.lastIndexOf(' ');
  return (sp > 24 ? cut.slice(0, sp) : cut).replace(/[\s,.;:!?-]+$/, '') + '…';
}

// The gateway's OpenAI-compatible API: GET /v1/models and a streaming
// POST /v1/chat/completions (SSE chat.completion.chunk events).

import { SSEParser } from './sse.js';

export class ApiError extends Error {
  // status: the HTTP status (0: no response at all; -1: the stream broke).
  constructor(status, message, extra = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = extra.type || '';
    this.code = extra.code || '';
    this.retryAfter = extra.retryAfter ?? null; // seconds, from Retry-After
  }
}

function headers(apiKey, json) {
  const h = { Accept: json ? 'application/json' : 'text/event-stream' };
  if (!json) h['Content-Type'] = 'application/json';
  if (apiKey) h.Authorization = 'Bearer ' + apiKey;
  return h;
}

// Retry-After is either delay-seconds or an HTTP date.
export function parseRetryAfter(value) {
  if (!value) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return parseInt(v, 10);
  const t = Date.parse(v);
  if (Number.isNaN(t)) return null;
  return Math.max(0, Math.ceil((t - Date.now()) / 1000));
}

async function errorFrom(res) {
  let message = '';
  let type = '';
  let code = '';
  const text = await res.text().catch(() => '');
  try {
    const j = JSON.parse(text);
    const e = j && j.error;
    if (e && typeof e === 'object') {
      message = String(e.message || '');
      type = String(e.type || '');
      code = e.code == null ? '' : String(e.code);
    } else if (typeof e === 'string') {
      message = e;
    }
  } catch (e) {
    message = text.trim().slice(0, 300);
  }
  if (!message) message = `${res.status} ${res.statusText || 'error'}`.trim();
  return new ApiError(res.status, message, {
    type, code, retryAfter: parseRetryAfter(res.headers.get('Retry-After')),
  });
}

async function send(url, init) {
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'The gateway could not be reached. Is it running?');
  }
  if (!res.ok) throw await errorFrom(res);
  return res;
}

export async function listModels(apiKey, signal) {
  const res = await send('v1/models', { headers: headers(apiKey, true), signal, cache: 'no-store' });
  const j = await res.json().catch(() => null);
  if (!j || !Array.isArray(j.data)) throw new ApiError(res.status, 'The gateway sent a model list this page cannot read.');
  return j.data.filter((m) => m && typeof m.id === 'string').map((m) => m.id);
}

// Yields each chat.completion.chunk object until data: [DONE]. Throws an
// ApiError for an HTTP error, an error event inside the stream, or a stream
// that ends before [DONE]; an abort rejects with the fetch's AbortError.
export async function* streamChat(body, apiKey, signal) {
  const res = await send('v1/chat/completions', {
    method: 'POST',
    headers: headers(apiKey, false),
    body: JSON.stringify(body),
    signal,
  });
  if (!res.body) throw new ApiError(-1, 'This browser cannot read streamed responses.');
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  try {
    for (;;) {
      let r;
      try {
        r = await reader.read();
      } catch (e) {
        if (e && e.name === 'AbortError') throw e;
        throw new ApiError(-1, 'The connection to the gateway broke during the answer.');
      }
      const text = r.done ? decoder.decode() : decoder.decode(r.value, { stream: true });
      for (const ev of parser.push(r.done ? text + '\n\n' : text)) {
        if (ev.data === '[DONE]') return;
        let obj;
        try {
          obj = JSON.parse(ev.data);
        } catch (e) {
          throw new ApiError(-1, 'The gateway sent an event this page cannot read.');
        }
        if (obj && obj.error) {
          const err = obj.error;
          const msg = typeof err === 'string' ? err : String(err.message || 'The request failed.');
          const st = typeof err === 'object' && Number.isInteger(err.status) ? err.status : -1;
          throw new ApiError(st, msg, { type: err.type, code: err.code });
        }
        yield obj;
      }
      if (r.done) throw new ApiError(-1, 'The answer ended early: the stream closed before it finished.');
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

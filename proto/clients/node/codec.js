'use strict';
/**
 * The SMQ/1 codec (proto/PROTOCOL.md): frames and msgpack bodies.
 *
 * decodeFrames() reads one multipart message strictly: the frame-level
 * checks of §2 (header, command, frame count, job id, body size, exactly one
 * msgpack map) and the body checks of §3-§9 (required keys, types, ranges,
 * keys given twice, UTF-8). Decoding uses the small strict reader below
 * rather than @msgpack/msgpack, which cannot tell the float 1.0 from the
 * integer 1 (a uint field must refuse the float), keeps only the last of a
 * key given twice and replaces invalid UTF-8 instead of refusing it.
 * Encoding uses @msgpack/msgpack.
 *
 * Decoded values: maps are plain objects, arrays arrays, str strings, bin
 * Uint8Array, integers numbers (BigInt beyond 2^53), floats numbers, nil null.
 */

const { encode } = require('@msgpack/msgpack');

const HEADER = Buffer.from('SMQ/1');
const BODY_MAX = 8 << 20;
const ID_MAX = 64;
const NAME_MAX = 128;
const MESSAGES_MAX = 1024;
const CONTENT_MAX = 1 << 20;
const STOP_MAX = 8;
const STOP_LEN_MAX = 256;
const CAPACITY_MAX = 4096;
const UINT32_MAX = 2 ** 32 - 1;
const INT32_MAX = 2 ** 31 - 1;
const UINT64_MAX = (1n << 64n) - 1n;
const FLT_MAX = 3.4028234663852886e38;
const DEPTH_MAX = 32; // maps and arrays nested at most this deep, the body's map included
const HEARTBEAT_MS_MIN = 10; // an announced heartbeat interval (READY, the broker's HEARTBEAT)
const HEARTBEAT_MS_MAX = 600000;

const COMMANDS = ['CHAT', 'CANCEL', 'TOKEN', 'DONE', 'ERROR', 'HEARTBEAT', 'STATS', 'READY', 'DISCONNECT'];
const JOB_COMMANDS = new Set(['CHAT', 'CANCEL', 'TOKEN', 'DONE', 'ERROR']);
const ROLES = ['system', 'user', 'assistant', 'tool'];
const FINISH = ['eog', 'stop_string', 'length', 'context_full', 'cancelled'];
const BACKENDS = ['cpu', 'cuda'];
/** The optional CHAT parameters, in PROTOCOL.md §3's order. */
const CHAT_PARAMS = ['model', 'max_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'repeat_penalty',
  'presence_penalty', 'frequency_penalty', 'seed', 'stop', 'thinking', 'affinity', 'queue_timeout_ms'];

/**
 * A message that breaks SMQ/1. code: "bad_frame", "unsupported_version" or
 * "bad_request" (then key names the field, e.g. "messages[0].role").
 */
class ProtocolError extends Error {
  constructor(code, message, key = null) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.key = key;
  }
}

// ---------------------------------------------------------------------------
// strict msgpack reader

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** What the reader noted about a map or array: which entries were floats,
 * which keys were given twice or were not strings or not UTF-8. */
const META = new WeakMap();
function meta(container) {
  let m = META.get(container);
  if (!m) {
    m = { floats: new Set(), dups: [], badKeys: [] };
    META.set(container, m);
  }
  return m;
}

/** A msgpack ext value. */
class Ext {
  constructor(type, data) {
    this.type = type;
    this.data = data;
  }
}

/** A str whose bytes are not valid UTF-8 (reported by the validator). */
class BadString {
  constructor(bytes) {
    this.bytes = bytes;
  }
}

const FLOAT = Symbol('float');

class Reader {
  constructor(buf) {
    this.b = buf;
    this.v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.p = 0;
  }

  need(n) {
    if (this.p + n > this.b.length) throw new Error('truncated at byte ' + this.p);
  }

  u8() { this.need(1); return this.b[this.p++]; }
  u16() { this.need(2); const x = this.v.getUint16(this.p); this.p += 2; return x; }
  u32() { this.need(4); const x = this.v.getUint32(this.p); this.p += 4; return x; }

  bytes(n) {
    this.need(n);
    const out = this.b.subarray(this.p, this.p + n);
    this.p += n;
    return out;
  }

  str(n) {
    const raw = this.bytes(n);
    try {
      return utf8.decode(raw);
    } catch (e) {
      return new BadString(Uint8Array.from(raw));
    }
  }

  /** A count of n entries, each at least min bytes: refuse counts the bytes
   * left cannot hold before allocating anything. */
  count(n, min) {
    if (n * min > this.b.length - this.p) throw new Error('count ' + n + ' at byte ' + this.p + ' exceeds the bytes left');
    return n;
  }

  int64(signed) {
    this.need(8);
    const x = signed ? this.v.getBigInt64(this.p) : this.v.getBigUint64(this.p);
    this.p += 8;
    return (x <= BigInt(Number.MAX_SAFE_INTEGER) && x >= BigInt(Number.MIN_SAFE_INTEGER)) ? Number(x) : x;
  }

  /** Returns the next value (depth: how many maps and arrays hold it);
   * floats come back as [FLOAT, number]. */
  value(depth) {
    const t = this.u8();
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t >= 0x80 && t <= 0x8f) return this.map(t & 0x0f, depth);
    if (t >= 0x90 && t <= 0x9f) return this.array(t & 0x0f, depth);
    if (t >= 0xa0 && t <= 0xbf) return this.str(t & 0x1f);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return Uint8Array.from(this.bytes(this.u8()));
      case 0xc5: return Uint8Array.from(this.bytes(this.u16()));
      case 0xc6: return Uint8Array.from(this.bytes(this.u32()));
      case 0xc7: { const n = this.u8(); return new Ext(this.v.getInt8(this.p++), Uint8Array.from(this.bytes(n))); }
      case 0xc8: { const n = this.u16(); this.need(1); return new Ext(this.v.getInt8(this.p++), Uint8Array.from(this.bytes(n))); }
      case 0xc9: { const n = this.u32(); this.need(1); return new Ext(this.v.getInt8(this.p++), Uint8Array.from(this.bytes(n))); }
      case 0xca: { this.need(4); const x = this.v.getFloat32(this.p); this.p += 4; return [FLOAT, x]; }
      case 0xcb: { this.need(8); const x = this.v.getFloat64(this.p); this.p += 8; return [FLOAT, x]; }
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: return this.int64(false);
      case 0xd0: { this.need(1); return this.v.getInt8(this.p++); }
      case 0xd1: { this.need(2); const x = this.v.getInt16(this.p); this.p += 2; return x; }
      case 0xd2: { this.need(4); const x = this.v.getInt32(this.p); this.p += 4; return x; }
      case 0xd3: return this.int64(true);
      case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: {
        this.need(1);
        const type = this.v.getInt8(this.p++);
        return new Ext(type, Uint8Array.from(this.bytes(1 << (t - 0xd4))));
      }
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.array(this.u16(), depth);
      case 0xdd: return this.array(this.u32(), depth);
      case 0xde: return this.map(this.u16(), depth);
      case 0xdf: return this.map(this.u32(), depth);
      default: throw new Error('byte 0x' + t.toString(16) + ' at ' + (this.p - 1) + ' is not msgpack');
    }
  }

  array(n, depth) {
    this.nest(depth);
    this.count(n, 1);
    const out = new Array(n);
    for (let i = 0; i < n; i++) {
      const x = this.value(depth + 1);
      if (Array.isArray(x) && x[0] === FLOAT) {
        meta(out).floats.add(i);
        out[i] = x[1];
      } else {
        out[i] = x;
      }
    }
    return out;
  }

  nest(depth) {
    if (depth >= DEPTH_MAX) throw new Error(`at byte ${this.p - 1}: maps and arrays nested deeper than ${DEPTH_MAX}`);
  }

  map(n, depth) {
    this.nest(depth);
    this.count(n, 2);
    const out = {};
    for (let i = 0; i < n; i++) {
      const k = this.value(depth + 1);
      const x = this.value(depth + 1);
      if (typeof k !== 'string') {
        meta(out).badKeys.push(k instanceof BadString ? 'a key that is not valid UTF-8' : 'a key that is not a string');
        continue;
      }
      if (Object.prototype.hasOwnProperty.call(out, k)) meta(out).dups.push(k);
      const isFloat = Array.isArray(x) && x[0] === FLOAT;
      // defineProperty: a key "__proto__" is data, not the prototype
      Object.defineProperty(out, k, { value: isFloat ? x[1] : x, enumerable: true, writable: true, configurable: true });
      if (isFloat) meta(out).floats.add(k);
      else if (META.has(out)) META.get(out).floats.delete(k);
    }
    return out;
  }
}

/**
 * Decodes a body: exactly one msgpack map of at most 8 MiB. Throws
 * ProtocolError "bad_frame" otherwise. Duplicate or non-string keys and
 * invalid UTF-8 are left to validateBody() ("bad_request", naming the key).
 */
function decodeBody(buf) {
  buf = toBuffer(buf);
  if (buf.length > BODY_MAX) throw new ProtocolError('bad_frame', `body: ${buf.length} bytes, more than the 8 MiB limit`);
  if (buf.length === 0) throw new ProtocolError('bad_frame', 'body: empty, not a msgpack map');
  const b0 = buf[0];
  if (!((b0 >= 0x80 && b0 <= 0x8f) || b0 === 0xde || b0 === 0xdf)) {
    throw new ProtocolError('bad_frame', `body: not a msgpack map (first byte 0x${b0.toString(16).padStart(2, '0')})`);
  }
  const r = new Reader(buf);
  let body;
  try {
    body = r.value(0);
  } catch (e) {
    throw new ProtocolError('bad_frame', 'body: not valid msgpack (' + e.message + ')');
  }
  if (r.p !== buf.length) throw new ProtocolError('bad_frame', 'body: bytes after the msgpack map');
  return body;
}

function toBuffer(x) {
  if (Buffer.isBuffer(x)) return x;
  if (typeof x === 'string') return Buffer.from(x);
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
}

// ---------------------------------------------------------------------------
// body validation

function bad(message, key) {
  return new ProtocolError('bad_request', `${key}: ${message}`, key);
}

function join(prefix, k) {
  return prefix ? `${prefix}.${k}` : String(k);
}

function isMap(m) {
  return m !== null && typeof m === 'object' && !Array.isArray(m) && !(m instanceof Uint8Array) &&
    !(m instanceof Ext) && !(m instanceof BadString);
}

function checkMap(m, key) {
  if (!isMap(m)) throw bad('not a map', key);
  const md = META.get(m);
  if (md && md.badKeys.length) throw bad(md.badKeys[0], key || 'body');
  if (md && md.dups.length) {
    // Of several, the one that sorts first (shorter, then by bytes): PROTOCOL.md §2.
    const first = md.dups.map((k) => Buffer.from(k, 'utf8'))
      .reduce((a, b) => (b.length < a.length || (b.length === a.length && Buffer.compare(b, a) < 0) ? b : a));
    throw bad('key given twice', join(key, first.toString('utf8')));
  }
}

function byteLength(s) {
  return Buffer.byteLength(s, 'utf8');
}

/** A str of lo-hi UTF-8 bytes. text: U+0000 allowed (in text for people
 * and models; not in ids, names and words). */
function vStr(v, key, lo = 0, hi = null, choices = null, text = false) {
  if (v instanceof BadString) throw bad('not valid UTF-8', key);
  if (typeof v !== 'string') throw bad('not a string' + (v instanceof Uint8Array ? ' (bin is not a string)' : ''), key);
  if (!isWellFormed(v)) throw bad('not valid UTF-8 (a lone surrogate)', key);
  if (!text && v.includes('\0')) throw bad('holds U+0000', key);
  const n = byteLength(v);
  if (n < lo || (hi !== null && n > hi)) {
    throw bad(hi === null ? `${n} bytes, at least ${lo} wanted` : `${n} bytes, ${lo}-${hi} wanted`, key);
  }
  if (choices && !choices.includes(v)) throw bad(`${JSON.stringify(v)} is not one of ${choices.join(', ')}`, key);
  return v;
}

function isWellFormed(s) {
  // String.prototype.isWellFormed is Node 20+; this works on Node 18 too.
  return !/\p{Cs}/u.test(s); // with the u flag only lone surrogates match
}

/** Is v (entry key of container) a msgpack float? Only the reader knows;
 * values a program built itself count as integers when integral. */
function wasFloat(container, k) {
  const md = container && META.get(container);
  return !!(md && md.floats.has(k));
}

function vUint(v, key, lo = 0, hi = UINT64_MAX, float = false) {
  const isInt = (typeof v === 'number' && Number.isInteger(v) && !float) || typeof v === 'bigint';
  if (!isInt) throw bad('not an unsigned integer', key);
  const x = BigInt(v);
  if (x < BigInt(lo) || x > BigInt(hi)) {
    throw bad(BigInt(hi) === UINT64_MAX ? `${x} is out of range (>= ${lo} wanted)` : `${x} is out of range ${lo}-${hi}`, key);
  }
  return v;
}

/** A number (integer or float) in [lo, hi] ((lo, hi] with loOpen). f32:
 * the receiver keeps it as a 32-bit float, and the range holds for the
 * value kept (1e-50 for top_p would become 0). */
function vFloat(v, key, { lo, hi, loOpen = false, what = null, f32 = false }) {
  if (typeof v !== 'number' && typeof v !== 'bigint') throw bad('not a number', key);
  let f = Number(v);
  if (f32) f = Math.abs(f) <= FLT_MAX ? Math.fround(f) : NaN;
  const ok = !Number.isNaN(f) && (loOpen ? f > lo : f >= lo) && f <= hi;
  if (!ok) throw bad(`${v} is out of range ${what || `${lo}-${hi}`}`, key);
  return v;
}

function vBool(v, key) {
  if (typeof v !== 'boolean') throw bad('not a bool', key);
  return v;
}

function vArray(v, key, lo = 0, hi = null) {
  if (!Array.isArray(v)) throw bad('not an array', key);
  if (v.length < lo || (hi !== null && v.length > hi)) throw bad(`${v.length} entries, ${lo}-${hi === null ? 'any' : hi} wanted`, key);
  return v;
}

/** Reads the known keys of one map; nil means absent (PROTOCOL.md §2). */
class Fields {
  constructor(m, prefix = '') {
    checkMap(m, prefix);
    this.m = m;
    this.prefix = prefix;
  }

  key(k) { return join(this.prefix, k); }

  get(k, required = false) {
    const v = Object.prototype.hasOwnProperty.call(this.m, k) ? this.m[k] : null;
    if ((v === null || v === undefined) && required) throw bad('missing', this.key(k));
    return v === undefined ? null : v;
  }

  uint(k, required, lo, hi) {
    const v = this.get(k, required);
    if (v !== null) vUint(v, this.key(k), lo, hi, wasFloat(this.m, k));
    return v;
  }
}

const ge0 = { lo: 0, hi: Number.MAX_VALUE, what: '>= 0' }; // durations and rates

function validateChat(body, hop) {
  const f = new Fields(body);
  vStr(f.get('id', true), 'id', 1, ID_MAX);
  if (f.get('model') !== null) vStr(f.get('model'), 'model', 1, NAME_MAX);
  const msgs = vArray(f.get('messages', true), 'messages', 1, MESSAGES_MAX);
  msgs.forEach((m, i) => {
    const mf = new Fields(m, `messages[${i}]`);
    vStr(mf.get('role', true), mf.key('role'), 0, null, ROLES);
    vStr(mf.get('content', true), mf.key('content'), 0, CONTENT_MAX, null, true);
  });
  const float = (k, range) => { if (f.get(k) !== null) vFloat(f.get(k), k, { ...range, f32: true }); };
  // In this order, the C codec's: a body with two faults names the same one.
  f.uint('max_tokens', false, 1, UINT32_MAX);
  float('temperature', { lo: 0, hi: 2 });
  float('top_p', { lo: 0, hi: 1, loOpen: true, what: '(0, 1]' });
  f.uint('top_k', false, 0, UINT32_MAX);
  float('min_p', { lo: 0, hi: 1 });
  float('repeat_penalty', { lo: 0, hi: FLT_MAX, loOpen: true, what: '> 0' });
  float('presence_penalty', { lo: -2, hi: 2, what: '-2 to 2' });
  float('frequency_penalty', { lo: -2, hi: 2, what: '-2 to 2' });
  f.uint('seed');
  const stop = f.get('stop');
  if (stop !== null) {
    vArray(stop, 'stop', 0, STOP_MAX);
    stop.forEach((s, i) => vStr(s, `stop[${i}]`, 1, STOP_LEN_MAX, null, true));
  }
  if (f.get('thinking') !== null) vBool(f.get('thinking'), 'thinking');
  if (f.get('affinity') !== null) vStr(f.get('affinity'), 'affinity', 1, NAME_MAX);
  f.uint('queue_timeout_ms', false, 0, UINT32_MAX);
  // the broker's, on the worker hop; checked on both, as the C codec does
  if (f.get('queued_ms') !== null) vFloat(f.get('queued_ms'), 'queued_ms', ge0);
}

function idSeq(f) {
  vStr(f.get('id', true), 'id', 1, ID_MAX);
  f.uint('seq', true);
}

function validateToken(body) {
  const f = new Fields(body);
  idSeq(f);
  const toks = vArray(f.get('tokens', true), 'tokens');
  toks.forEach((t, i) => vUint(t, `tokens[${i}]`, 0, INT32_MAX, wasFloat(toks, i)));
  for (const k of ['reasoning', 'content']) if (f.get(k) !== null) vStr(f.get(k), k, 0, null, null, true);
}

function validateDone(body) {
  const f = new Fields(body);
  idSeq(f);
  vStr(f.get('finish', true), 'finish', 0, null, FINISH);
  const u = new Fields(f.get('usage', true), 'usage');
  for (const k of ['prompt_tokens', 'completion_tokens', 'cached_tokens']) u.uint(k, true, 0, UINT32_MAX);
  u.uint('reasoning_tokens', false, 0, UINT32_MAX);
  const t = new Fields(f.get('timings', true), 'timings');
  for (const k of ['queue_ms', 'ttft_ms', 'total_ms', 'decode_tps']) vFloat(t.get(k, true), t.key(k), ge0);
}

function validateError(body) {
  const f = new Fields(body);
  if (f.get('id') !== null) vStr(f.get('id'), 'id', 1, ID_MAX);
  f.uint('seq');
  vStr(f.get('code', true), 'code', 1);
  vStr(f.get('message', true), 'message', 0, null, null, true);
  if (f.get('id') !== null && f.get('seq') === null) throw bad('missing (an ERROR with an id carries its seq)', 'seq');
}

function validateStatsReply(body) {
  const f = new Fields(body);
  vArray(f.get('workers', true), 'workers').forEach((w, i) => {
    const wf = new Fields(w, `workers[${i}]`);
    if (wf.get('name') !== null) vStr(wf.get('name'), wf.key('name'), 0, NAME_MAX);
    vStr(wf.get('model', true), wf.key('model'), 1, NAME_MAX);
    if (wf.get('backend') !== null) vStr(wf.get('backend'), wf.key('backend'), 0, null, BACKENDS);
    wf.uint('capacity', true, 0, CAPACITY_MAX);
    wf.uint('in_flight', true, 0, UINT32_MAX);
    vFloat(wf.get('heartbeat_age_ms', true), wf.key('heartbeat_age_ms'), ge0);
  });
  vArray(f.get('queues', true), 'queues').forEach((q, i) => {
    const qf = new Fields(q, `queues[${i}]`);
    vStr(qf.get('model', true), qf.key('model'), 1, NAME_MAX);
    qf.uint('depth', true, 0, UINT32_MAX);
  });
  const t = new Fields(f.get('totals', true), 'totals');
  for (const k of ['accepted', 'completed', 'failed', 'cancelled', 'rejected', 'redispatched', 'tokens_out']) t.uint(k, true);
  f.uint('clients', true, 0, UINT32_MAX);
  vFloat(f.get('uptime_ms', true), 'uptime_ms', ge0);
}

function validateReady(body) {
  const f = new Fields(body);
  vStr(f.get('model', true), 'model', 1, NAME_MAX);
  f.uint('capacity', true, 1, CAPACITY_MAX);
  if (f.get('name') !== null) vStr(f.get('name'), 'name', 0, NAME_MAX);
  if (f.get('backend') !== null) vStr(f.get('backend'), 'backend', 0, null, BACKENDS);
  f.uint('n_ctx', false, 1, UINT32_MAX);
  f.uint('heartbeat_ms', false, HEARTBEAT_MS_MIN, HEARTBEAT_MS_MAX);
}

/**
 * Checks a decoded body against PROTOCOL.md §3-§9; throws ProtocolError
 * "bad_request" naming the key. hop: "client" or "worker". sender
 * ("client", "broker", "worker" or null) picks between bodies that differ by
 * direction: the STATS request {} and reply; a worker's HEARTBEAT
 * {capacity, running}, the broker's {heartbeat_ms?} and a client's {}.
 * Bodies that say nothing are not read, so not checked (the STATS request,
 * a client's HEARTBEAT, the worker-hop CANCEL). With sender null, STATS is
 * taken as a request, a client-hop HEARTBEAT as a client's and a worker-hop
 * HEARTBEAT as the broker's.
 */
function validateBody(command, body, hop = 'client', sender = null) {
  switch (command) {
    case 'CHAT': validateChat(body, hop); break;
    case 'CANCEL': // on the worker hop the job id says which; the body says nothing
      if (hop === 'client') vStr(new Fields(body).get('id', true), 'id', 1, ID_MAX);
      break;
    case 'TOKEN': validateToken(body); break;
    case 'DONE': validateDone(body); break;
    case 'ERROR': validateError(body); break;
    case 'HEARTBEAT':
      if (hop === 'worker' && sender === 'worker') {
        const f = new Fields(body);
        f.uint('capacity', true, 0, CAPACITY_MAX);
        f.uint('running', true, 0, UINT32_MAX);
      } else if (sender === 'broker' || (hop === 'worker' && sender === null)) {
        new Fields(body).uint('heartbeat_ms', false, HEARTBEAT_MS_MIN, HEARTBEAT_MS_MAX);
      }
      // a client's heartbeat and the STATS request say nothing: their bodies
      // are not read (so not checked), as in the C codec
      break;
    case 'STATS':
      if (sender === 'broker') validateStatsReply(body);
      break;
    case 'READY': validateReady(body); break;
    case 'DISCONNECT': {
      const f = new Fields(body);
      if (f.get('reason') !== null) vStr(f.get('reason'), 'reason');
      break;
    }
    default: throw new ProtocolError('bad_frame', `unknown command ${command}`);
  }
  return body;
}

// ---------------------------------------------------------------------------
// frames

function printable(b) {
  const s = Buffer.from(b.subarray(0, 32)).toString('latin1').replace(/[^\x20-\x7e]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
  return b.length > 32 ? s + '...' : s;
}

/**
 * Reads one multipart message as a DEALER sends it (no routing id).
 * frames: an array of Buffers (or Uint8Arrays). opts.hop: "client"
 * (default) or "worker"; opts.sender: see validateBody(); opts.validate:
 * false for the frame-level checks only.
 * Returns {command, job, body} (job: a BigInt on the worker hop's job
 * commands, else null). Throws ProtocolError with code
 * "unsupported_version", "bad_frame" or "bad_request" (key set).
 */
function decodeFrames(frames, { hop = 'client', sender = null, validate = true } = {}) {
  if (hop !== 'client' && hop !== 'worker') throw new TypeError('hop must be "client" or "worker"');
  frames = frames.map(toBuffer);
  if (frames.length === 0) throw new ProtocolError('bad_frame', 'empty message');
  const head = frames[0];
  if (!head.equals(HEADER)) {
    // "SMQ/" and a short version word: a peer of another version
    if (head.length >= 5 && head.length <= 16 && head.subarray(0, 4).toString('latin1') === 'SMQ/') {
      throw new ProtocolError('unsupported_version', `header "${printable(head)}": this peer speaks SMQ/1`);
    }
    throw new ProtocolError('bad_frame', `frame 0: header "${printable(head)}", not SMQ/1`);
  }
  if (frames.length < 2) throw new ProtocolError('bad_frame', '1 frame: no command');
  const cmd = frames[1].toString('latin1');
  if (!COMMANDS.includes(cmd)) throw new ProtocolError('bad_frame', `frame 1: unknown command "${printable(frames[1])}"`);
  // A command on a hop it does not travel (READY on the client hop) is not
  // a frame error here, as in the C codec: the receiver ignores it.
  const hasJob = hop === 'worker' && JOB_COMMANDS.has(cmd);
  const want = hasJob ? 4 : 3;
  if (frames.length !== want) throw new ProtocolError('bad_frame', `${cmd} on the ${hop} hop: ${frames.length} frames, ${want} wanted`);
  let job = null;
  if (hasJob) {
    if (frames[2].length !== 8) throw new ProtocolError('bad_frame', `frame 2: job id of ${frames[2].length} bytes, 8 wanted`);
    job = frames[2].readBigUInt64BE(0);
  }
  const body = decodeBody(frames[frames.length - 1]);
  if (validate) validateBody(cmd, body, hop, sender);
  return { command: cmd, job, body };
}

/** Packs a body with @msgpack/msgpack (BigInts as 64-bit integers). */
function pack(body) {
  return Buffer.from(encode(body, { useBigInt64: true }));
}

/** The frames of one message: [header, command, (job id,) body]. body: an
 * object (packed here) or packed bytes; job: a number or BigInt (worker hop). */
function encodeFrames(command, body, job = null) {
  if (!COMMANDS.includes(command)) throw new TypeError(`unknown command ${command}`);
  const frames = [HEADER, Buffer.from(command, 'latin1')];
  if (job !== null && job !== undefined) {
    const j = Buffer.alloc(8);
    j.writeBigUInt64BE(BigInt(job));
    frames.push(j);
  }
  frames.push(body instanceof Uint8Array ? toBuffer(body) : pack(body));
  return frames;
}

const UINT_PARAMS = new Set(['max_tokens', 'top_k', 'seed', 'queue_timeout_ms']);

/**
 * The CHAT body (an object) of a request, checked as the broker checks it.
 * messages: an array of {role, content} (only those keys are sent) or a
 * string (one user message). params: CHAT_PARAMS keys; null/undefined means
 * "not given"; stop may be one string. Throws ProtocolError "bad_request"
 * naming the field, TypeError for an unknown parameter.
 */
function chatBody(id, messages, params = {}) {
  for (const k of Object.keys(params)) {
    if (!CHAT_PARAMS.includes(k)) throw new TypeError(`unknown CHAT parameter "${k}" (known: ${CHAT_PARAMS.join(', ')})`);
  }
  if (typeof messages === 'string') messages = [{ role: 'user', content: messages }];
  if (!Array.isArray(messages)) throw bad('not an array of {role, content}', 'messages');
  const body = { id };
  if (params.model !== null && params.model !== undefined) body.model = params.model;
  body.messages = messages.map((m, i) => {
    if (!isMap(m)) throw bad('not a {role, content} object', `messages[${i}]`);
    return { role: m.role, content: m.content };
  });
  for (const k of CHAT_PARAMS.slice(1)) {
    let v = params[k];
    if (v === null || v === undefined) continue;
    if (k === 'stop' && typeof v === 'string') v = [v];
    // @msgpack/msgpack packs integers above 2^32 as float64: send them as BigInt.
    if (UINT_PARAMS.has(k) && typeof v === 'number' && Number.isInteger(v) && v > 0xffffffff) {
      if (!Number.isSafeInteger(v)) throw bad(`${v} is not exact in a JS number: pass a BigInt`, k);
      v = BigInt(v);
    }
    body[k] = v;
  }
  validateChat(body, 'client');
  return body;
}

const encodeChat = (id, messages, params) => pack(chatBody(id, messages, params));
function encodeCancel(id) {
  vStr(id, 'id', 1, ID_MAX);
  return pack({ id });
}
const EMPTY = Buffer.from([0x80]);
const encodeHeartbeat = () => EMPTY;
const encodeStats = () => EMPTY;

module.exports = {
  HEADER, BODY_MAX, COMMANDS, JOB_COMMANDS, ROLES, FINISH, CHAT_PARAMS, ID_MAX,
  ProtocolError, Ext,
  decodeBody, validateBody, decodeFrames, encodeFrames, pack,
  chatBody, encodeChat, encodeCancel, encodeHeartbeat, encodeStats,
};

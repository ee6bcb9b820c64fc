'use strict';
/**
 * smolmq-client: a Node.js client for the smolmq chat broker (CommonJS).
 *
 * Speaks SMQ/1 (proto/PROTOCOL.md): one ZeroMQ DEALER (zeromq v6) to the
 * broker's client ROUTER, msgpack bodies (@msgpack/msgpack v3).
 *
 *   const { Client } = require('./index.js');
 *   const client = new Client();               // $SMQ_BROKER or tcp://127.0.0.1:5555
 *   for await (const ev of client.chat([{ role: 'user', content: 'Hi!' }], { max_tokens: 200 })) {
 *     if (ev.kind === 'token') process.stdout.write(ev.content);
 *     else if (ev.kind === 'done') console.log('\n', ev.finish, ev.usage);
 *     else console.error(ev.code, ev.message);
 *   }
 *   client.close();
 *
 * Any number of requests may be open at once on one client. The client
 * checks each request's seq (a gap ends it with a local "internal" error),
 * sends HEARTBEAT every heartbeatMs while requests are open (and one in
 * answer to each of the broker's, so that a broker with a shorter interval
 * does not take the client for gone), and ends open requests with a local
 * "broker_lost" error after silenceMs (liveness x the larger of heartbeatMs
 * and the interval the broker's HEARTBEATs announce) without any frame from
 * the broker (PROTOCOL.md §6). Timers run on the event loop: unlike the
 * Python client, nothing needs to be polled.
 */

const crypto = require('crypto');
const zmq = require('zeromq');
const codec = require('./codec.js');

const { ProtocolError } = codec;
const DEFAULT_ENDPOINT = 'tcp://127.0.0.1:5555';
// While requests are open, a broker HEARTBEAT is answered with one of ours
// unless we sent one this recently (PROTOCOL.md §6).
const ECHO_GAP_MS = 50;

/** An ERROR that ends a request (thrown by complete()) or answers stats().
 * code: PROTOCOL.md §10 or a local one ("broker_lost", "internal"). */
class BrokerError extends Error {
  constructor(code, message, id = null) {
    super(`${code}: ${message}`);
    this.name = 'BrokerError';
    this.code = code;
    this.brokerMessage = message;
    this.id = id;
  }
}

/**
 * One event: {kind: "token"|"done"|"error", id, seq, terminal, local, body,
 * and by kind: tokens, reasoning, content (token); finish, usage, timings
 * (done); code, message (error)}. id is null for an ERROR the broker could
 * not tie to a request (not terminal); seq is null for local errors.
 */
function makeEvent(kind, fields) {
  const ev = {
    kind, id: null, seq: null, tokens: [], reasoning: '', content: '', finish: null, usage: null,
    timings: null, code: null, message: null, local: false, body: null, ...fields,
  };
  ev.terminal = kind === 'done' || (kind === 'error' && ev.id !== null);
  return ev;
}

/**
 * The events of one request, as an async iterator (Client.chat() returns
 * one). Iteration ends after the terminal event. id: the request's id;
 * cancel(): asks the broker to stop it (the stream still ends with its
 * terminal event, normally done "cancelled"). Leaving a for-await loop
 * early (break, throw) cancels the request and drops its other events.
 */
class ChatStream {
  constructor(client, id) {
    this.client = client;
    this.id = id;
    this.queue = [];
    this.waiter = null;
    this.ended = false;     // the terminal event was handed out (or the stream closed)
    this.closed = false;
  }

  push(ev) {
    if (this.closed) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(ev);
    } else {
      this.queue.push(ev);
    }
  }

  async next() {
    if (this.ended) return { done: true, value: undefined };
    const ev = this.queue.length ? this.queue.shift() : await new Promise((resolve) => { this.waiter = resolve; });
    if (ev.terminal) this.ended = true;
    return { done: false, value: ev };
  }

  async return() {
    this.close();
    return { done: true, value: undefined };
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  cancel() {
    this.client.cancel(this.id);
  }

  /** Stops listening: cancels the request if it is still open. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    const wasEnded = this.ended;
    this.ended = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(makeEvent('error', { id: this.id, code: 'internal', message: 'stream closed', local: true }));
    }
    if (!wasEnded) this.client._abandon(this.id);
  }
}

class Client {
  /**
   * opts.endpoint: the broker's client endpoint (default $SMQ_BROKER, else
   * tcp://127.0.0.1:5555). opts.heartbeatMs (1000), opts.liveness (3):
   * PROTOCOL.md §6. opts.curve: null, or {serverKey, publicKey, secretKey}
   * Z85 strings (publicKey/secretKey: a fresh pair when absent).
   * opts.onError(ev): called for ERRORs not tied to a request (default:
   * ignored).
   */
  constructor(opts = {}) {
    const { endpoint = process.env.SMQ_BROKER || DEFAULT_ENDPOINT, heartbeatMs = 1000, liveness = 3, curve = null, onError = null } = opts;
    if (!(heartbeatMs > 0)) throw new RangeError('heartbeatMs must be > 0');
    if (!(Number.isInteger(liveness) && liveness >= 1)) throw new RangeError('liveness must be an integer >= 1');
    this.endpoint = endpoint;
    this.heartbeatMs = heartbeatMs;
    this.liveness = liveness;
    this.brokerHeartbeatMs = null; // the broker's interval, once its HEARTBEAT says it
    this.onError = onError;
    this.sock = new zmq.Dealer({ linger: 0 });
    if (curve) this._setupCurve(curve);
    this.sock.connect(endpoint);
    this.open = new Map();    // id -> {stream, nextSeq}: no terminal frame received yet
    this.zombies = new Set(); // ids ended locally that the broker may still hold
    this.lastHeard = Date.now();
    this.lastHb = Date.now();
    this.timer = null;
    this.closed = false;
    this.statsWaiter = null;
    this.idPrefix = crypto.randomBytes(6).toString('hex');
    this.idCounter = 0;
    this.sending = Promise.resolve();
    this.sendQueue = 0;
    this._receiveLoop();
  }

  _setupCurve(curve) {
    if (!curve.serverKey) throw new TypeError('curve needs serverKey (and publicKey, secretKey)');
    let { publicKey, secretKey } = curve;
    if (!publicKey !== !secretKey) throw new TypeError('curve: give both publicKey and secretKey, or neither');
    if (!publicKey) ({ publicKey, secretKey } = zmq.curveKeyPair());
    for (const [name, k] of [['serverKey', curve.serverKey], ['publicKey', publicKey], ['secretKey', secretKey]]) {
      if (typeof k !== 'string' || k.length !== 40) throw new TypeError(`curve ${name}: a Z85 key is a 40-character string`);
    }
    this.sock.curveServerKey = curve.serverKey;
    this.sock.curvePublicKey = publicKey;
    this.sock.curveSecretKey = secretKey;
  }

  // ---- sending

  _send(command, body, { optional = false } = {}) {
    if (this.closed) return;
    if (optional && this.sendQueue > 0) return; // a heartbeat behind a stuck send says nothing
    this.sendQueue++;
    const frames = [codec.HEADER, Buffer.from(command), body];
    // zeromq v6 allows one send in flight at a time: chain them.
    this.sending = this.sending.then(() => (this.closed ? undefined : this.sock.send(frames)))
      .catch(() => {}) // closed while sending
      .finally(() => { this.sendQueue--; });
  }

  /**
   * Sends a CHAT and returns a ChatStream over its events. messages: an
   * array of {role, content} or a string (one user message). params:
   * model, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty,
   * presence_penalty, frequency_penalty, seed (number or BigInt), stop,
   * thinking, affinity, queue_timeout_ms, and id (1-64 bytes, unique among
   * this client's open requests; generated when absent). Throws
   * ProtocolError "bad_request" (err.key names the field) for a bad value,
   * TypeError for an unknown parameter, Error for an id still open.
   */
  chat(messages, params = {}) {
    if (this.closed) throw new Error('this Client is closed');
    const { id: given, ...rest } = params;
    const id = given === undefined || given === null ? `${this.idPrefix}-${++this.idCounter}` : given;
    const body = codec.chatBody(id, messages, rest);
    if (this.open.has(id)) throw new Error(`id "${id}": a request with this id is still open`);
    if (this.zombies.has(id)) throw new Error(`id "${id}": ended locally, and the broker may still hold it; use another id`);
    if (this.open.size === 0) {
      // silence is measured from when we start expecting to hear
      this.lastHeard = Date.now();
      this.lastHb = Date.now();
    }
    const stream = new ChatStream(this, id);
    this.open.set(id, { stream, nextSeq: 0 });
    this._send('CHAT', codec.pack(body));
    this._startTimer();
    return stream;
  }

  /** Asks the broker to stop request id (ignored when it is not open). */
  cancel(id) {
    if (this.open.has(id)) this._send('CANCEL', codec.encodeCancel(id));
  }

  /** Sends a request and waits for all of it: {id, content, reasoning,
   * finish, usage, timings}. Rejects with BrokerError when it ends in an error. */
  async complete(messages, params = {}) {
    const stream = this.chat(messages, params);
    let content = '';
    let reasoning = '';
    for await (const ev of stream) {
      if (ev.kind === 'token') {
        content += ev.content;
        reasoning += ev.reasoning;
      } else if (ev.kind === 'done') {
        return { id: ev.id, content, reasoning, finish: ev.finish, usage: ev.usage, timings: ev.timings };
      } else {
        throw new BrokerError(ev.code, ev.message, ev.id);
      }
    }
    throw new BrokerError('internal', 'the stream ended without a terminal event', stream.id);
  }

  /** Asks the broker for its state (PROTOCOL.md §9). Rejects on timeout
   * (default silenceMs) or an ERROR not tied to a request. */
  stats({ timeoutMs = this.silenceMs } = {}) {
    if (this.statsWaiter) return Promise.reject(new Error('a stats() call is already waiting'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.statsWaiter = null;
        reject(new Error(`no STATS answer from ${this.endpoint} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.statsWaiter = {
        resolve: (b) => { clearTimeout(timer); this.statsWaiter = null; resolve(b); },
        reject: (e) => { clearTimeout(timer); this.statsWaiter = null; reject(e); },
      };
      this._send('STATS', codec.encodeStats());
    });
  }

  /** How long the broker may say nothing before the open requests end with
   * broker_lost: liveness x the larger of our interval and the broker's
   * latest announced one (PROTOCOL.md §6). */
  get silenceMs() {
    return this.liveness * Math.max(this.heartbeatMs, this.brokerHeartbeatMs || 0);
  }

  /** The ids of the requests whose terminal event has not arrived. */
  get openRequests() {
    return [...this.open.keys()];
  }

  /** Cancels the open requests (unless cancel is false) and closes the socket. */
  async close({ cancel = true } = {}) {
    if (this.closed) return;
    if (cancel) for (const id of this.open.keys()) this._send('CANCEL', codec.encodeCancel(id));
    const pending = this.sending;
    this._stopTimer();
    for (const [id, r] of [...this.open]) {
      this.open.delete(id);
      r.stream.push(makeEvent('error', { id, code: 'internal', message: 'client closed', local: true }));
    }
    if (this.statsWaiter) this.statsWaiter.reject(new Error('client closed'));
    // let the CANCELs leave (bounded), then close
    await Promise.race([pending, new Promise((r) => setTimeout(r, 200).unref())]);
    this.closed = true;
    this.sock.close();
  }

  // ---- internals

  _startTimer() {
    if (this.timer) return;
    const every = Math.max(5, Math.min(this.heartbeatMs / 4, 250));
    this.timer = setInterval(() => this._tick(), every);
  }

  _stopTimer() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  _tick() {
    if (this.open.size === 0) {
      this._stopTimer();
      return;
    }
    const now = Date.now();
    if (now - this.lastHb >= this.heartbeatMs) {
      this.lastHb = now;
      this._send('HEARTBEAT', codec.encodeHeartbeat(), { optional: true });
    }
    if (now - this.lastHeard >= this.silenceMs) {
      const silent = ((now - this.lastHeard) / 1000).toFixed(1);
      for (const id of [...this.open.keys()]) {
        this._endLocally(id, 'broker_lost', `no frame from the broker at ${this.endpoint} for ${silent} s`);
      }
      this._stopTimer();
    }
  }

  async _receiveLoop() {
    try {
      for await (const frames of this.sock) {
        this.lastHeard = Date.now();
        try {
          this._dispatch(frames);
        } catch (e) {
          // a bug here must not stop the loop
          process.emitWarning(`smolmq-client: dispatch failed: ${e.stack || e}`);
        }
      }
    } catch (e) {
      if (!this.closed) process.emitWarning(`smolmq-client: receive failed: ${e.message}`);
    }
  }

  _endLocally(id, code, message) {
    const r = this.open.get(id);
    if (!r) return;
    this.open.delete(id);
    this.zombies.add(id);
    this._send('CANCEL', codec.encodeCancel(id));
    r.stream.push(makeEvent('error', { id, code, message, local: true }));
  }

  _abandon(id) {
    if (this.open.has(id)) this._send('CANCEL', codec.encodeCancel(id));
    // keep it open: its frames (and terminal) still arrive and are dropped
  }

  _dispatch(frames) {
    let fr;
    try {
      fr = codec.decodeFrames(frames, { hop: 'client', sender: 'broker' });
    } catch (e) {
      if (e instanceof ProtocolError) return this._badFrame(frames, e);
      throw e;
    }
    const { command, body } = fr;
    if (command === 'HEARTBEAT') {
      // The broker judges us by its own interval, which may be shorter than
      // ours: answer it; and judge it by the larger of the two (PROTOCOL.md §6).
      if (body.heartbeat_ms !== undefined && body.heartbeat_ms !== null) this.brokerHeartbeatMs = body.heartbeat_ms;
      const now = Date.now();
      if (this.open.size && now - this.lastHb >= ECHO_GAP_MS) {
        this.lastHb = now;
        this._send('HEARTBEAT', codec.encodeHeartbeat(), { optional: true });
      }
      return undefined;
    }
    if (command === 'STATS') {
      if (this.statsWaiter) this.statsWaiter.resolve(body);
      return undefined;
    }
    if (command !== 'TOKEN' && command !== 'DONE' && command !== 'ERROR') {
      // A command a broker does not send to clients: bad_frame (PROTOCOL.md §2).
      this._sendError('bad_frame', `frame 1: a broker does not send ${command} to a client`);
      return undefined;
    }
    const id = body.id === undefined ? null : body.id;
    if (id === null) {
      const ev = makeEvent('error', { code: body.code, message: body.message, body });
      if (this.statsWaiter) this.statsWaiter.reject(new BrokerError(ev.code, ev.message));
      else if (this.onError) this.onError(ev);
      return undefined;
    }
    const terminal = command !== 'TOKEN';
    const r = this.open.get(id);
    if (!r) {
      if (terminal) this.zombies.delete(id);
      return undefined;
    }
    const seq = Number(body.seq);
    if (seq !== r.nextSeq) {
      this._endLocally(id, 'internal', `seq gap: frame ${body.seq} arrived where ${r.nextSeq} was due (${command})`);
      if (terminal) this.zombies.delete(id);
      return undefined;
    }
    r.nextSeq++;
    let ev;
    if (command === 'TOKEN') {
      ev = makeEvent('token', { id, seq, tokens: body.tokens, reasoning: body.reasoning || '', content: body.content || '', body });
    } else if (command === 'DONE') {
      ev = makeEvent('done', { id, seq, finish: body.finish, usage: body.usage, timings: body.timings, body });
    } else {
      ev = makeEvent('error', { id, seq, code: body.code, message: body.message, body });
    }
    if (terminal) this.open.delete(id);
    r.stream.push(ev);
    return undefined;
  }

  /** An ERROR without id to the broker (never in answer to an ERROR). */
  _sendError(code, message) {
    this._send('ERROR', codec.pack({ code, message }));
  }

  /** A frame from the broker that breaks the protocol (PROTOCOL.md §4):
   * frame-level faults are answered with ERROR (never an ERROR with an
   * ERROR), bad fields are not; the open request the frame names ends with
   * a local "internal" error (and is cancelled). */
  _badFrame(frames, err) {
    const cmd = frames.length > 1 ? Buffer.from(frames[1]).toString('latin1') : '';
    if ((err.code === 'bad_frame' || err.code === 'unsupported_version') && cmd !== 'ERROR') {
      this._sendError(err.code, err.code === 'bad_frame' ? err.message : 'this client speaks SMQ/1');
    }
    let id = null;
    try {
      const b = codec.decodeBody(frames[frames.length - 1]);
      if (typeof b.id === 'string') id = b.id;
    } catch (e) { /* not even a map */ }
    if (id !== null && this.open.has(id)) {
      this._endLocally(id, 'internal', `unreadable ${cmd} frame from the broker (${err.code}): ${err.message}`);
      if (cmd === 'DONE' || cmd === 'ERROR') this.zombies.delete(id);
    }
  }
}

module.exports = { Client, ChatStream, BrokerError, DEFAULT_ENDPOINT, ...codec };

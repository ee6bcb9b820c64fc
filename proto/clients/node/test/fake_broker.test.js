'use strict';
// The client against a fake broker: a zeromq Router in this process, on a
// random free port, scripted per test.

const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const util = require('util');
const { spawn } = require('child_process');
const zmq = require('zeromq');
const { Client, BrokerError, ProtocolError, decodeFrames, pack, HEADER } = require('../index.js');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts a fake broker. onMessage(b, ident, command, body) runs for each
 * well-formed message; b.received logs {t, command, body} (command null and
 * body the frames when undecodable). With heartbeatMs it sends HEARTBEAT to
 * every client it heard from at that interval.
 */
async function fakeBroker(onMessage = () => {}, { heartbeatMs = 50, curveSecret = null } = {}) {
  const sock = new zmq.Router({ linger: 0 });
  if (curveSecret) {
    sock.curveServer = true;
    sock.curveSecretKey = curveSecret;
  }
  await sock.bind('tcp://127.0.0.1:*');
  const b = {
    endpoint: sock.lastEndpoint,
    received: [],
    peers: new Map(),
    sending: Promise.resolve(),
    sendRaw(ident, frames) {
      b.sending = b.sending.then(() => sock.send([ident, ...frames])).catch(() => {});
    },
    send(ident, command, body) {
      b.sendRaw(ident, [HEADER, Buffer.from(command), pack(body)]);
    },
    got(command) {
      return b.received.filter((r) => command === undefined || r.command === command);
    },
    async waitFor(command, n = 1, timeoutMs = 3000) {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        if (b.got(command).length >= n) return b.got(command);
        await sleep(5);
      }
      assert.fail(`the broker got ${b.got(command).length} ${command}, wanted ${n}: ${b.received.map((r) => r.command)}`);
      return null;
    },
    close() {
      clearInterval(hb);
      sock.close();
    },
  };
  const hb = heartbeatMs ? setInterval(() => {
    for (const ident of b.peers.values()) b.send(ident, 'HEARTBEAT', {});
  }, heartbeatMs) : null;
  (async () => {
    try {
      for await (const [ident, ...frames] of sock) {
        b.peers.set(ident.toString('hex'), ident);
        let fr;
        try {
          fr = decodeFrames(frames, { hop: 'client', sender: 'client' });
        } catch (e) {
          b.received.push({ t: Date.now(), command: null, body: frames });
          continue;
        }
        b.received.push({ t: Date.now(), command: fr.command, body: fr.body });
        onMessage(b, ident, fr.command, fr.body);
      }
    } catch (e) { /* closed */ }
  })();
  return b;
}

const usage = (p = 5, c = 3) => ({ prompt_tokens: p, completion_tokens: c, cached_tokens: 0 });
const timings = () => ({ queue_ms: 1.5, ttft_ms: 20.0, total_ms: 80.0, decode_tps: 50.0 });

function story() {
  return [
    ['TOKEN', { tokens: [10, 11], reasoning: 'Let me think. ' }],
    ['TOKEN', { tokens: [12], reasoning: 'Easy.' }],
    ['TOKEN', { tokens: [13, 14], content: 'Hello, ' }],
    ['TOKEN', { tokens: [15], content: 'wörld ✓', reasoning: '' }],
    ['DONE', { finish: 'eog', usage: usage(7, 6), timings: timings() }],
  ];
}

function streamer(framesFor) {
  return (b, ident, cmd, body) => {
    if (cmd !== 'CHAT') return;
    framesFor(body).forEach(([c, rest], seq) => b.send(ident, c, { ...rest, id: body.id, seq }));
  };
}

async function collect(stream) {
  const evs = [];
  for await (const ev of stream) evs.push(ev);
  return evs;
}

test('streamed chat', async () => {
  const b = await fakeBroker(streamer(story));
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 100 });
  try {
    const msgs = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }];
    const stream = c.chat(msgs, { max_tokens: 64, temperature: 0.5, thinking: true, stop: ['\n\n'], seed: 2n ** 63n });
    const evs = await collect(stream);
    assert.deepStrictEqual(evs.map((e) => e.kind), ['token', 'token', 'token', 'token', 'done']);
    assert.deepStrictEqual(evs.map((e) => e.seq), [0, 1, 2, 3, 4]);
    assert.ok(evs.every((e) => e.id === stream.id));
    assert.strictEqual(evs.map((e) => e.reasoning).join(''), 'Let me think. Easy.');
    assert.strictEqual(evs.map((e) => e.content).join(''), 'Hello, wörld ✓');
    assert.deepStrictEqual(evs[0].tokens, [10, 11]);
    const d = evs[4];
    assert.ok(d.terminal && d.finish === 'eog' && d.usage.completion_tokens === 6 && d.timings.decode_tps === 50);
    const [chat] = await b.waitFor('CHAT');
    assert.deepStrictEqual(chat.body, {
      id: stream.id, messages: msgs, max_tokens: 64, temperature: 0.5, thinking: true, stop: ['\n\n'], seed: 2n ** 63n,
    });
    assert.deepStrictEqual(c.openRequests, []);

    const r = await c.complete('2+2?', { thinking: false, seed: 2 ** 40 });
    assert.strictEqual(r.content, 'Hello, wörld ✓');
    assert.strictEqual(r.finish, 'eog');
    const chat2 = (await b.waitFor('CHAT', 2))[1].body;
    assert.strictEqual(chat2.thinking, false);
    assert.strictEqual(chat2.seed, 2 ** 40, 'a Number seed above 2^32 goes out as an integer');
    assert.notStrictEqual(chat2.id, stream.id);
  } finally {
    await c.close();
    b.close();
  }
});

test('two concurrent requests on one client', async () => {
  const pending = new Map();
  const b = await fakeBroker((b, ident, cmd, body) => {
    if (cmd !== 'CHAT') return;
    pending.set(body.id, ident);
    if (pending.size < 2) return;
    const [[a, ia], [z, iz]] = [...pending].sort();
    pending.clear();
    b.send(ia, 'TOKEN', { id: a, seq: 0, tokens: [1], content: 'A0' });
    b.send(iz, 'TOKEN', { id: z, seq: 0, tokens: [2], content: 'B0' });
    b.send(iz, 'TOKEN', { id: z, seq: 1, tokens: [3], content: 'B1' });
    b.send(ia, 'TOKEN', { id: a, seq: 1, tokens: [4], content: 'A1' });
    b.send(iz, 'DONE', { id: z, seq: 2, finish: 'length', usage: usage(1, 2), timings: timings() });
    b.send(ia, 'ERROR', { id: a, seq: 2, code: 'worker_lost', message: 'worker w1 went silent' });
  });
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 100 });
  try {
    const s1 = c.chat('first', { id: 'a' });
    const s2 = c.chat('second', { id: 'b' });
    assert.throws(() => c.chat('again', { id: 'a' }), /still open/);
    const [e1, e2] = await Promise.all([collect(s1), collect(s2)]);
    assert.deepStrictEqual(e1.map((e) => [e.kind, e.seq, e.content || e.code]),
      [['token', 0, 'A0'], ['token', 1, 'A1'], ['error', 2, 'worker_lost']]);
    assert.deepStrictEqual(e2.map((e) => [e.kind, e.seq, e.content || e.finish]),
      [['token', 0, 'B0'], ['token', 1, 'B1'], ['done', 2, 'length']]);
    const [ra, rb] = await Promise.allSettled([c.complete('x', { id: 'a' }), c.complete('y', { id: 'b' })]);
    assert.ok(ra.status === 'rejected' && ra.reason instanceof BrokerError && ra.reason.code === 'worker_lost', String(ra.reason));
    assert.ok(rb.status === 'fulfilled' && rb.value.content === 'B0B1' && rb.value.finish === 'length');
  } finally {
    await c.close();
    b.close();
  }
});

test('cancel, and leaving a stream early', async () => {
  const b = await fakeBroker((b, ident, cmd, body) => {
    if (cmd === 'CHAT') b.send(ident, 'TOKEN', { id: body.id, seq: 0, tokens: [1], content: 'Once' });
    if (cmd === 'CANCEL') {
      b.send(ident, 'DONE', { id: body.id, seq: 1, finish: 'cancelled', usage: usage(3, 1), timings: timings() });
    }
  });
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 100 });
  try {
    const s = c.chat('tell me a story', { id: 'story-1' });
    const evs = [];
    for await (const ev of s) {
      evs.push(ev);
      if (ev.kind === 'token') s.cancel();
    }
    assert.deepStrictEqual(evs.map((e) => e.kind), ['token', 'done']);
    assert.strictEqual(evs[1].finish, 'cancelled');
    assert.deepStrictEqual((await b.waitFor('CANCEL'))[0].body, { id: 'story-1' });
    c.cancel('story-1'); // not open: nothing sent
    await sleep(50);
    assert.strictEqual(b.got('CANCEL').length, 1);

    const s2 = c.chat('again', { id: 'story-2' });
    for await (const ev of s2) { assert.strictEqual(ev.kind, 'token'); break; } // eslint-disable-line no-unreachable-loop
    assert.deepStrictEqual((await b.waitFor('CANCEL', 2))[1].body, { id: 'story-2' });
    const until = Date.now() + 2000;
    while (c.openRequests.length && Date.now() < until) await sleep(5);
    assert.deepStrictEqual(c.openRequests, []);
  } finally {
    await c.close();
    b.close();
  }
});

test('seq gap ends the request with a local internal error', async () => {
  const b = await fakeBroker((b, ident, cmd, body) => {
    if (cmd === 'CHAT') {
      b.send(ident, 'TOKEN', { id: body.id, seq: 0, tokens: [1], content: 'a' });
      b.send(ident, 'TOKEN', { id: body.id, seq: 2, tokens: [3], content: 'c' });
    }
    if (cmd === 'CANCEL') {
      setTimeout(() => b.send(ident, 'DONE', { id: body.id, seq: 3, finish: 'cancelled', usage: usage(), timings: timings() }), 100);
    }
  });
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 100 });
  try {
    const evs = await collect(c.chat('x', { id: 'gap' }));
    assert.deepStrictEqual(evs.map((e) => e.kind), ['token', 'error']);
    assert.ok(evs[1].code === 'internal' && evs[1].local && /gap/.test(evs[1].message), evs[1].message);
    assert.deepStrictEqual((await b.waitFor('CANCEL'))[0].body, { id: 'gap' });
    assert.throws(() => c.chat('y', { id: 'gap' }), /broker may still hold/);
    await sleep(250); // the late DONE frees the id
    c.chat('y', { id: 'gap' });
  } finally {
    await c.close();
    b.close();
  }
});

test('heartbeats while a request is open', async () => {
  const b = await fakeBroker((b, ident, cmd, body) => {
    if (cmd === 'CHAT') {
      setTimeout(() => b.send(ident, 'DONE', { id: body.id, seq: 0, finish: 'eog', usage: usage(), timings: timings() }), 550);
    }
  }, { heartbeatMs: 100 });
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 100, liveness: 3 });
  try {
    await sleep(250);
    assert.strictEqual(b.got('HEARTBEAT').length, 0, 'HEARTBEAT with no request open');
    const evs = await collect(c.chat('slow'));
    assert.deepStrictEqual(evs.map((e) => e.kind), ['done']);
    const hbs = b.got('HEARTBEAT');
    assert.ok(hbs.length >= 4, `${hbs.length} HEARTBEATs in 550 ms at 100 ms`);
    assert.ok(hbs.every((h) => Object.keys(h.body).length === 0));
    const n = hbs.length;
    await sleep(300);
    assert.ok(b.got('HEARTBEAT').length <= n + 1, 'HEARTBEATs after the request ended');
  } finally {
    await c.close();
    b.close();
  }
});

test('broker heartbeats are answered (a broker with a shorter interval)', async () => {
  const b = await fakeBroker((b, ident, cmd, body) => {
    if (cmd === 'CHAT') {
      setTimeout(() => b.send(ident, 'DONE', { id: body.id, seq: 0, finish: 'eog', usage: usage(), timings: timings() }), 650);
    }
  }, { heartbeatMs: 100 });
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 2000 });
  try {
    const evs = await collect(c.chat('slow'));
    assert.deepStrictEqual(evs.map((e) => e.kind), ['done']);
    const times = [b.got('CHAT')[0].t, ...b.got('HEARTBEAT').map((h) => h.t)];
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    assert.ok(gaps.length >= 4 && Math.max(...gaps) < 250, `client HEARTBEAT gaps ${gaps}`);
  } finally {
    await c.close();
    b.close();
  }
});

test('the broker\'s announced interval: liveness x max(own, broker\'s)', async () => {
  const b = await fakeBroker((b, ident, cmd, body) => {
    if (cmd === 'CHAT') b.send(ident, 'HEARTBEAT', { heartbeat_ms: Number(body.messages[0].content) });
  }, { heartbeatMs: 0 });
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 100, liveness: 3 });
  try {
    assert.strictEqual(c.silenceMs, 300);
    let t0 = Date.now();
    let evs = await collect(c.chat('300'));
    let dt = Date.now() - t0;
    assert.deepStrictEqual(evs.map((e) => [e.kind, e.code]), [['error', 'broker_lost']]);
    assert.strictEqual(c.brokerHeartbeatMs, 300);
    assert.strictEqual(c.silenceMs, 900);
    assert.ok(dt >= 850 && dt < 1500, `broker_lost after ${dt} ms; liveness 3 x max(100, 300) ms is 900`);
    assert.ok(b.got('HEARTBEAT').length >= 6, `${b.got('HEARTBEAT').length} HEARTBEATs meanwhile at 100 ms`);
    t0 = Date.now();
    evs = await collect(c.chat('10'));
    dt = Date.now() - t0;
    assert.ok(evs[0].code === 'broker_lost' && dt >= 290 && dt < 800, `a shorter broker interval: broker_lost after ${dt} ms`);
  } finally {
    await c.close();
    b.close();
  }
});

test('broker_lost after liveness x heartbeat of silence', async () => {
  const b = await fakeBroker(() => {}, { heartbeatMs: 0 });
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 100, liveness: 3 });
  try {
    const t0 = Date.now();
    const evs = await collect(c.chat('anyone?'));
    const dt = Date.now() - t0;
    assert.deepStrictEqual(evs.map((e) => [e.kind, e.code, e.local]), [['error', 'broker_lost', true]]);
    assert.ok(dt >= 290 && dt < 1000, `broker_lost after ${dt} ms`);
    assert.ok(b.got('HEARTBEAT').length >= 2, 'HEARTBEATs while waiting');
  } finally {
    await c.close();
    b.close();
  }
});

test('bad frames from the broker', async () => {
  const b = await fakeBroker((b, ident, cmd, body) => {
    if (cmd !== 'CHAT') return;
    b.sendRaw(ident, [HEADER, Buffer.from('TOKEN'), Buffer.from([0x91, 0x01])]);
    b.sendRaw(ident, [Buffer.from('SMQ/2'), Buffer.from('TOKEN'), Buffer.from([0x80])]);
    b.sendRaw(ident, [HEADER, Buffer.from('ERROR'), Buffer.from([0x00])]);
    b.send(ident, 'ERROR', { code: 'duplicate_id', message: 'not tied to a request' });
    b.send(ident, 'READY', { model: 'm', capacity: 1 }); // not a command for clients
    b.send(ident, 'HEARTBEAT', { heartbeat_ms: 5 }); // a bad field: dropped, not answered
    b.send(ident, 'TOKEN', { id: body.id, seq: 0, tokens: [1.5] });
  });
  const idless = [];
  const c = new Client({ endpoint: b.endpoint, heartbeatMs: 100, onError: (ev) => idless.push(ev) });
  try {
    const evs = await collect(c.chat('hi', { id: 'r' }));
    assert.deepStrictEqual(evs.map((e) => [e.kind, e.code, e.local]), [['error', 'internal', true]]);
    assert.match(evs[0].message, /tokens\[0\]/);
    await sleep(100);
    assert.deepStrictEqual(b.got('ERROR').map((r) => r.body.code), ['bad_frame', 'unsupported_version', 'bad_frame']);
    assert.match(b.got('ERROR')[2].body.message, /READY/);
    assert.strictEqual(c.brokerHeartbeatMs, null, 'took heartbeat_ms from a bad HEARTBEAT');
    assert.deepStrictEqual(idless.map((e) => [e.code, e.id, e.terminal]), [['duplicate_id', null, false]]);
  } finally {
    await c.close();
    b.close();
  }
});

test('local validation', async () => {
  const c = new Client({ endpoint: 'tcp://127.0.0.1:1' });
  try {
    const cases = [
      [[{ role: 'robot', content: 'x' }], {}, 'messages[0].role'],
      [[{ role: 'user' }], {}, 'messages[0].content'],
      [[], {}, 'messages'],
      ['x', { temperature: 2.5 }, 'temperature'],
      ['x', { temperature: NaN }, 'temperature'],
      ['x', { top_p: 0 }, 'top_p'],
      ['x', { max_tokens: 0 }, 'max_tokens'],
      ['x', { max_tokens: 1.5 }, 'max_tokens'],
      ['x', { seed: 2n ** 64n }, 'seed'],
      ['x', { seed: 2 ** 60 }, 'seed'],
      ['x', { thinking: 1 }, 'thinking'],
      ['x', { stop: Array(9).fill('a') }, 'stop'],
      ['x', { stop: [''] }, 'stop[0]'],
      ['x', { affinity: 'a'.repeat(129) }, 'affinity'],
      ['x', { id: 'x'.repeat(65) }, 'id'],
      ['x', { id: '\ud800' }, 'id'],
    ];
    for (const [messages, params, key] of cases) {
      assert.throws(() => c.chat(messages, params), (e) => e instanceof ProtocolError && e.key === key,
        `${util.inspect(params)}: wanted an error at ${key}`);
    }
    assert.throws(() => c.chat('x', { temprature: 1 }), TypeError);
    c.chat('x', {
      temperature: 0, top_p: 1, top_k: 0, min_p: 1, seed: 2n ** 64n - 1n, stop: [], max_tokens: 1,
      presence_penalty: -2, frequency_penalty: 2, repeat_penalty: 1.1, queue_timeout_ms: 0, affinity: 'c', model: 'm', id: 'y'.repeat(64),
    });
  } finally {
    await c.close({ cancel: false });
  }
});

test('stats', async () => {
  const reply = {
    workers: [{ name: 'gpu0', model: 'smollm3', backend: 'cuda', capacity: 8, in_flight: 1, heartbeat_age_ms: 12.5 }],
    queues: [{ model: 'smollm3', depth: 0 }],
    totals: { accepted: 3, completed: 2, failed: 0, cancelled: 0, rejected: 0, redispatched: 0, tokens_out: 99 },
    clients: 1,
    uptime_ms: 1234.5,
  };
  const b = await fakeBroker((b, ident, cmd) => { if (cmd === 'STATS') b.send(ident, 'STATS', reply); });
  const c = new Client({ endpoint: b.endpoint });
  try {
    assert.deepStrictEqual(await c.stats(), reply);
  } finally {
    await c.close();
    b.close();
  }
});

test('CURVE', async () => {
  const server = zmq.curveKeyPair();
  const b = await fakeBroker(streamer(story), { curveSecret: server.secretKey });
  const c = new Client({ endpoint: b.endpoint, curve: { serverKey: server.publicKey } });
  try {
    assert.strictEqual((await c.complete('hi')).content, 'Hello, wörld ✓');
  } finally {
    await c.close();
    b.close();
  }
});

function run(args, { signalAfter = null } = {}) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(__dirname, '..', 'chat.js'), ...args], { env: { ...process.env, NO_COLOR: '1' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
      if (signalAfter && stdout.includes(signalAfter)) {
        signalAfter = null;
        p.kill('SIGINT');
      }
    });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), 15000);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

test('chat.js', async () => {
  const seen = [];
  const b = await fakeBroker((b, ident, cmd, body) => {
    seen.push([cmd, body]);
    const q = cmd === 'CHAT' ? body.messages[body.messages.length - 1].content : null;
    if (q === 'fail') b.send(ident, 'ERROR', { id: body.id, seq: 0, code: 'overloaded', message: 'queue full' });
    else if (q === 'slow') b.send(ident, 'TOKEN', { id: body.id, seq: 0, tokens: [1], content: 'tick' });
    else if (cmd === 'CANCEL') b.send(ident, 'DONE', { id: body.id, seq: 1, finish: 'cancelled', usage: usage(1, 1), timings: timings() });
    else if (cmd === 'CHAT') streamer(story)(b, ident, cmd, body);
  });
  try {
    let r = await run(['--broker', b.endpoint, '--system', 'Be brief.', '--no-think', '--max-tokens', '9', '--temperature', '0.2',
      '--seed', '5', '--model', 'm', 'hello']);
    assert.strictEqual(r.code, 0, r.stderr);
    assert.strictEqual(r.stdout, 'Hello, wörld ✓\n');
    assert.match(r.stderr, /Let me think\. Easy\./);
    assert.match(r.stderr, /eog, 6 tokens, 50\.0 tokens\/s/);
    assert.deepStrictEqual(seen[0][1], {
      id: seen[0][1].id, model: 'm', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hello' }],
      max_tokens: 9, temperature: 0.2, seed: 5, thinking: false,
    });
    r = await run(['--broker', b.endpoint, 'fail']);
    assert.strictEqual(r.code, 1);
    assert.match(r.stderr, /overloaded: queue full/);
    r = await run(['--broker', b.endpoint, '--temperature', '7', 'x']);
    assert.strictEqual(r.code, 2);
    assert.match(r.stderr, /temperature/);
    r = await run(['--broker', b.endpoint, 'slow'], { signalAfter: 'tick' });
    assert.strictEqual(r.code, 130, r.stderr);
    assert.match(r.stderr, /cancelled/);
    assert.ok(seen.some(([cmd]) => cmd === 'CANCEL'));
  } finally {
    b.close();
  }
});

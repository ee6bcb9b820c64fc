'use strict';
// Frame decoding and body encoding against proto/vectors/vectors.json
// ($SMQ_VECTORS overrides the path). Vectors of both hops are checked: the
// decoder takes the hop as a parameter.
//
// JSON numbers are doubles: a vector's integer above 2^53 (a seed) is
// compared with the decoded BigInt after rounding both to a double.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const path = require('path');
const smq = require('../codec.js');

const VECTORS = process.env.SMQ_VECTORS || path.join(__dirname, '..', '..', '..', 'vectors', 'vectors.json');

function same(a, b, where = 'body') {
  const num = (x) => typeof x === 'number' || typeof x === 'bigint';
  if (num(a) && num(b)) {
    if (typeof a === 'bigint' || typeof b === 'bigint') {
      assert.ok(Number(a) === Number(b), `${where}: ${a} != ${b}`);
    } else if (!(a === b || Math.abs(a - b) <= 1e-6 * Math.max(Math.abs(a), Math.abs(b)) + 1e-9)) {
      assert.fail(`${where}: ${a} != ${b}`);
    }
    return;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    assert.strictEqual(a.length, b.length, `${where}: ${a.length} entries != ${b.length}`);
    a.forEach((x, i) => same(x, b[i], `${where}[${i}]`));
    return;
  }
  const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (isObj(a) && isObj(b)) {
    assert.deepStrictEqual(Object.keys(a).sort(), Object.keys(b).sort(), `${where}: keys differ`);
    for (const k of Object.keys(a)) same(a[k], b[k], `${where}.${k}`);
    return;
  }
  assert.strictEqual(a, b, `${where}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
}

function fromHex(v) {
  return v.frames.map((h) => Buffer.from(h, 'hex'));
}

let doc = null;
let loadError = null;
try {
  doc = JSON.parse(fs.readFileSync(VECTORS, 'utf8'));
} catch (e) {
  loadError = e;
}

test('vectors.json loads', () => {
  assert.ifError(loadError);
  assert.strictEqual(doc.protocol, 'SMQ/1');
  assert.ok(Array.isArray(doc.vectors) && doc.vectors.length > 0, 'no vectors');
  const names = doc.vectors.map((v) => v.name);
  assert.strictEqual(new Set(names).size, names.length, 'a vector name is given twice');
});

const vectors = doc && Array.isArray(doc.vectors) ? doc.vectors : [];
const CHAT_KEYS = ['id', 'messages', ...smq.CHAT_PARAMS];

for (const v of vectors) {
  const hop = v.hop || 'client';
  test(`vector ${v.name}`, () => {
    const frames = fromHex(v);
    if (v.valid) {
      let fr;
      try {
        fr = smq.decodeFrames(frames, { hop, sender: v.from });
      } catch (e) {
        assert.fail(`rejected (${e.code}, key ${e.key}): ${e.message}`);
      }
      assert.strictEqual(fr.command, v.command);
      if ('job' in v) assert.ok(fr.job !== null && Number(fr.job) === Number(v.job), `job ${fr.job}, vector says ${v.job}`);
      else assert.strictEqual(fr.job, null);
      same(fr.body, v.body);
    } else {
      let fr = null;
      try {
        fr = smq.decodeFrames(frames, { hop, sender: v.from });
      } catch (e) {
        assert.ok(e instanceof smq.ProtocolError, `threw ${e}`);
        assert.strictEqual(e.code, v.error_code, `rejected with ${e.code} (${e.message})`);
        if (v.error_key !== undefined && v.error_key !== null) {
          assert.strictEqual(e.key, v.error_key, `rejected at ${e.key} (${e.message})`);
        }
        return;
      }
      assert.fail(`accepted ${fr.command}, vector says ${v.error_code} ${v.error_key || ''}`);
    }
  });

  if (v.valid && hop === 'client' && v.from === 'client' && ['CHAT', 'CANCEL', 'HEARTBEAT', 'STATS'].includes(v.command)) {
    test(`encode ${v.name}`, () => {
      // the body as decoded from the vector's frames: exact where JSON is not (integers > 2^53)
      const { body } = smq.decodeFrames(fromHex(v), { hop: 'client', sender: 'client' });
      let want;
      let packed;
      if (v.command === 'CHAT') {
        want = {};
        for (const k of CHAT_KEYS) if (body[k] !== undefined && body[k] !== null) want[k] = body[k];
        want.messages = body.messages.map((m) => ({ role: m.role, content: m.content }));
        const { id, messages, ...params } = want;
        packed = smq.encodeChat(id, messages, params);
      } else if (v.command === 'CANCEL') {
        want = { id: body.id };
        packed = smq.encodeCancel(body.id);
      } else {
        want = {};
        packed = v.command === 'HEARTBEAT' ? smq.encodeHeartbeat() : smq.encodeStats();
      }
      const fr = smq.decodeFrames(smq.encodeFrames(v.command, packed), { hop: 'client', sender: 'client' });
      assert.strictEqual(fr.command, v.command);
      same(fr.body, want);
      const wantJson = Object.fromEntries(Object.keys(want).map((k) => [k, v.body[k]]));
      if (v.command === 'CHAT') wantJson.messages = want.messages;
      same(fr.body, wantJson, 'body (against the JSON)');
    });
  }
}

for (const cmd of ['CHAT', 'CANCEL', 'HEARTBEAT', 'STATS']) {
  test(`encode coverage ${cmd}`, () => {
    assert.ok(vectors.some((v) => v.valid && (v.hop || 'client') === 'client' && v.from === 'client' && v.command === cmd),
      `no valid client-hop ${cmd} vector from a client`);
  });
}

'use strict';
// Body checks of PROTOCOL.md §2 that the vectors do not cover.

const test = require('node:test');
const assert = require('node:assert');
const smq = require('../codec.js');

function decode(command, body, { hop = 'client', sender = 'broker' } = {}) {
  const job = hop === 'worker' && smq.JOB_COMMANDS.has(command) ? 7 : null;
  return smq.decodeFrames(smq.encodeFrames(command, body, job), { hop, sender });
}

function fails(command, body, key, opts) {
  assert.throws(() => decode(command, body, opts), (e) => e instanceof smq.ProtocolError && e.code === 'bad_request' && e.key === key,
    `${command} ${JSON.stringify(body)}: wanted bad_request at ${key}`);
}

const HI = [{ role: 'user', content: '' }];

test('heartbeat_ms: 10-600000 in the broker HEARTBEAT (both hops) and in READY', () => {
  fails('HEARTBEAT', { heartbeat_ms: 9 }, 'heartbeat_ms');
  fails('HEARTBEAT', { heartbeat_ms: 600001 }, 'heartbeat_ms', { hop: 'worker' });
  fails('HEARTBEAT', { heartbeat_ms: 1.5 }, 'heartbeat_ms');
  decode('HEARTBEAT', { heartbeat_ms: 10 });
  decode('HEARTBEAT', { heartbeat_ms: 600000, later: [1] }, { hop: 'worker' });
  decode('HEARTBEAT', { heartbeat_ms: 5 }, { sender: 'client' }); // a client's HEARTBEAT is not read
  fails('READY', { model: 'm', capacity: 1, heartbeat_ms: 0 }, 'heartbeat_ms', { hop: 'worker', sender: 'worker' });
  decode('READY', { model: 'm', capacity: 1, heartbeat_ms: 600000 }, { hop: 'worker', sender: 'worker' });
});

test('of several keys given twice, the one that sorts first is named', () => {
  const body = Buffer.concat([Buffer.from([0x86, 0xa2]), Buffer.from('id'), Buffer.from([0xa1]), Buffer.from('r'),
    Buffer.from([0xa8]), Buffer.from('messages'), smq.pack(HI),
    Buffer.from([0xa2]), Buffer.from('zz'), Buffer.from([0x01, 0xa1]), Buffer.from('b'), Buffer.from([0x01]),
    Buffer.from([0xa2]), Buffer.from('zz'), Buffer.from([0x02, 0xa1]), Buffer.from('b'), Buffer.from([0x02])]);
  assert.throws(() => smq.decodeFrames([smq.HEADER, Buffer.from('CHAT'), body], { sender: 'client' }),
    (e) => e.key === 'b');
});

test('float32 ranges are checked after rounding; queued_ms on the client hop; U+0000', () => {
  decode('CHAT', { id: 'r', messages: HI, temperature: 2.0000001 }, { sender: 'client' });
  fails('CHAT', { id: 'r', messages: HI, top_p: 1e-50 }, 'top_p', { sender: 'client' });
  fails('CHAT', { id: 'r', messages: HI, queued_ms: -1 }, 'queued_ms', { sender: 'client' });
  fails('DISCONNECT', { reason: 'a\0' }, 'reason', { hop: 'worker' });
  fails('ERROR', { code: 'a\0', message: 'm' }, 'code');
  decode('ERROR', { code: 'a', message: '\0' });
});

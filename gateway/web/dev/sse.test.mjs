// node --test gateway/web/dev/sse.test.mjs - the SSE parser against the
// awkward cases: CRLF split across reads, comments, multi-line data.
import test from 'node:test';
import assert from 'node:assert/strict';
import { SSEParser } from '../src/sse.js';

const feed = (pieces) => {
  const p = new SSEParser();
  return pieces.flatMap((s) => p.push(s));
};

test('events split at every possible point parse the same', () => {
  const text = 'data: {"a":1}\r\n\r\n: keep-alive\r\n\r\nevent: x\r\ndata: one\r\ndata: two\r\n\r\ndata: [DONE]\n\n';
  const want = [
    { event: 'message', data: '{"a":1}' },
    { event: 'x', data: 'one\ntwo' },
    { event: 'message', data: '[DONE]' },
  ];
  assert.deepEqual(feed([text]), want);
  for (let i = 1; i < text.length; i++) assert.deepEqual(feed([text.slice(0, i), text.slice(i)]), want, `split at ${i}`);
  assert.deepEqual(feed(text.split('')), want);
});

test('bare CR line ends and a missing space after the colon', () => {
  assert.deepEqual(feed(['data:x\r\rdata: y\n\n']), [{ event: 'message', data: 'x' }, { event: 'message', data: 'y' }]);
});

test('an event without a blank line after it is not emitted yet', () => {
  const p = new SSEParser();
  assert.deepEqual(p.push('data: partial\n'), []);
  assert.deepEqual(p.push('\n'), [{ event: 'message', data: 'partial' }]);
});

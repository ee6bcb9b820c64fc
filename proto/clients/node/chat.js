#!/usr/bin/env node
'use strict';
/*
 * smolmq-chat: ask the smolmq broker one question and stream the answer.
 *
 *   node chat.js [--broker E] [--model M] [--no-think] [--max-tokens N]
 *                [--temperature T] [--seed S] [--system TEXT] "question"
 *
 * The reasoning streams to stderr (dim on a terminal), the answer to stdout,
 * then one line on stderr: finish, completion tokens, tokens/s. Ctrl-C
 * cancels the request and waits for its terminal frame (a second Ctrl-C
 * quits at once). Exit status: 0 finished, 1 error (code and message on
 * stderr), 130 cancelled with Ctrl-C, 2 bad arguments.
 */

const { Client, ProtocolError } = require('./index.js');

const USAGE = 'usage: chat.js [--broker E] [--model M] [--no-think] [--max-tokens N] [--temperature T] ' +
  '[--seed S] [--system TEXT] [--broker-key Z85 [--public-key Z85 --secret-key Z85]] "question"';

function parseArgs(argv) {
  const a = { question: null };
  const takes = {
    '--broker': 'broker', '--model': 'model', '--max-tokens': 'maxTokens', '--temperature': 'temperature',
    '--seed': 'seed', '--system': 'system', '--broker-key': 'brokerKey', '--public-key': 'publicKey',
    '--secret-key': 'secretKey',
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let val = null;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      val = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '-h' || arg === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (arg === '--no-think') {
      a.noThink = true;
    } else if (takes[arg]) {
      if (val === null) {
        if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
        val = argv[++i];
      }
      a[takes[arg]] = val;
    } else if (arg.startsWith('--')) {
      throw new Error(`unknown option ${arg}`);
    } else if (a.question === null) {
      a.question = arg;
    } else {
      throw new Error('give the question as one argument (quote it)');
    }
  }
  if (a.question === null) throw new Error('no question');
  const num = (k, int) => {
    if (a[k] === undefined) return undefined;
    const s = a[k];
    if (int && /^\d+$/.test(s)) return BigInt(s) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s) : BigInt(s);
    const x = Number(s);
    if (s.trim() === '' || Number.isNaN(x) || (int && !Number.isInteger(x))) throw new Error(`bad number "${s}"`);
    return x;
  };
  a.maxTokens = num('maxTokens', true);
  a.temperature = num('temperature', false);
  a.seed = num('seed', true);
  return a;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`chat.js: ${e.message}\n${USAGE}\n`);
    return 2;
  }
  const messages = [];
  if (args.system !== undefined) messages.push({ role: 'system', content: args.system });
  messages.push({ role: 'user', content: args.question });
  const curve = args.brokerKey ? { serverKey: args.brokerKey, publicKey: args.publicKey, secretKey: args.secretKey } : null;

  const tty = process.stderr.isTTY && !process.env.NO_COLOR;
  const [dim, undim] = tty ? ['\x1b[2m', '\x1b[0m'] : ['', ''];
  const client = new Client({ endpoint: args.broker || undefined, curve });
  let stream;
  try {
    stream = client.chat(messages, {
      model: args.model, max_tokens: args.maxTokens, temperature: args.temperature, seed: args.seed,
      thinking: args.noThink ? false : undefined,
    });
  } catch (e) {
    await client.close();
    if (e instanceof ProtocolError || e instanceof TypeError) {
      process.stderr.write(`chat.js: ${e.message}\n`);
      return 2;
    }
    throw e;
  }

  let cancelled = false;
  const onSigint = () => {
    if (cancelled) {
      process.stderr.write('\n');
      process.exit(130);
    }
    cancelled = true;
    stream.cancel();
    process.stderr.write(`${undim}\n[cancelling...]\n`);
  };
  process.on('SIGINT', onSigint);

  const t0 = Date.now();
  let tFirst = null;
  let inReasoning = false;
  let answered = false;
  let nTokens = 0;
  try {
    for await (const ev of stream) {
      if (ev.kind === 'token') {
        nTokens += ev.tokens.length;
        if (tFirst === null && ev.tokens.length) tFirst = Date.now();
        if (ev.reasoning) {
          if (!inReasoning) process.stderr.write(dim);
          inReasoning = true;
          process.stderr.write(ev.reasoning);
        }
        if (ev.content) {
          if (inReasoning) process.stderr.write(`${undim}\n`);
          inReasoning = false;
          process.stdout.write(ev.content);
          answered = true;
        }
        continue;
      }
      if (inReasoning) process.stderr.write(`${undim}\n`);
      if (answered) process.stdout.write('\n');
      if (ev.kind === 'done') {
        const usage = ev.usage || {};
        const timings = ev.timings || {};
        const n = Number(usage.completion_tokens !== undefined ? usage.completion_tokens : nTokens);
        let tps = timings.decode_tps;
        if (!tps && tFirst !== null && n > 1) tps = (n - 1) / Math.max((Date.now() - tFirst) / 1000, 1e-9);
        const ttft = timings.ttft_ms !== undefined ? `, first token after ${Math.round(timings.ttft_ms)} ms` : '';
        process.stderr.write(`${dim}[${ev.finish}, ${n} tokens, ${(tps || 0).toFixed(1)} tokens/s${ttft}, ` +
          `${((Date.now() - t0) / 1000).toFixed(1)} s]${undim}\n`);
        return cancelled && ev.finish === 'cancelled' ? 130 : 0;
      }
      process.stderr.write(`chat.js: error ${ev.code}: ${ev.message}\n`);
      return 1;
    }
    return 1;
  } finally {
    process.removeListener('SIGINT', onSigint);
    await client.close();
  }
}

main().then((code) => {
  // let stdout drain before leaving
  process.stdout.write('', () => process.exit(code));
}, (e) => {
  process.stderr.write(`chat.js: ${e.stack || e}\n`);
  process.exit(1);
});

// check.mjs - drives the web chat in headless Chromium against the fake
// gateway (dev/fake_server.py) and saves screenshots:
//
//     node gateway/web/dev/check.mjs SITE_DIR SHOTS_DIR
//
// (dev/check.sh builds SITE_DIR first.) Checks streaming, the thinking panel,
// Stop (the server sees the connection close), Regenerate, Edit-and-resend,
// sanitizing, the 429/503/401 banners with Retry, settings (thinking off and
// the API key reach the request), persistence across a reload, console and
// CSP errors; then takes screenshots at desktop and phone width, light and
// dark. Prints one line per check and "N passed, N failed".

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const [site, shots] = process.argv.slice(2).map((p) => resolve(p));
if (!site || !shots) {
  console.error('usage: node check.mjs SITE_DIR SHOTS_DIR');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

let passed = 0;
let failed = 0;
function ok(cond, what, detail = '') {
  if (cond) {
    passed++;
    console.log(`ok   ${what}`);
  } else {
    failed++;
    console.log(`FAIL ${what}${detail ? ': ' + detail : ''}`);
  }
}

// ---- the fake gateway ----
const server = spawn('python3', [join(here, 'fake_server.py'), site, '--port', '0', '--delay', '0.01'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const base = await new Promise((res, rej) => {
  let buf = '';
  server.stdout.on('data', (d) => {
    buf += d;
    const m = buf.match(/http:\/\/[\d.]+:\d+\//);
    if (m) res(m[0]);
  });
  server.on('exit', (code) => rej(new Error('fake server exited: ' + code)));
  setTimeout(() => rej(new Error('fake server did not start')), 10000);
});
const api = async (path, body) => {
  const r = await fetch(base + path.replace(/^\//, ''), body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) });
  return r.json();
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--font-render-hinting=none'],
});

const problems = [];
async function newPage(opts) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 820 }, deviceScaleFactor: 1, ...opts });
  const page = await ctx.newPage();
  page.on('console', (m) => {
    // The error responses this script asks for are logged by the browser: expected.
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (401|429|503)/.test(m.text())) {
      problems.push(`console: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('dialog', async (d) => { problems.push(`dialog opened (script ran!): ${d.message()}`); await d.dismiss(); });
  return { ctx, page };
}

const T = (id) => `[data-testid="${id}"]`;
async function send(page, text) {
  await page.fill(T('message-input'), text);
  await page.click(T('send-button'));
}
async function waitIdle(page) {
  await page.waitForSelector(T('stop-button'), { state: 'hidden', timeout: 30000 });
  await page.waitForFunction(() => !document.querySelector('[data-status="streaming"]'));
}
const lastAssistant = (page) => page.locator(`${T('message')}[data-role="assistant"]`).last();

try {
  // ---------- desktop, light ----------
  const { ctx, page } = await newPage({ colorScheme: 'light' });
  await page.goto(base);
  await page.waitForFunction(() => document.getElementById('status-text').textContent.includes('ready'));
  ok(await page.isVisible(T('tiny-notice')), 'the tiny-model notice shows for smolmq-tiny');
  await page.screenshot({ path: join(shots, 'desktop-light-empty.png') });

  // Streaming with thinking: the panel streams live, then collapses.
  await api('/dev/config', { delay: 0.03 });
  await send(page, 'Write a Python function that merges two sorted lists');
  await page.waitForSelector(T('thinking-panel'));
  const liveOpen = await page.$eval(T('thinking-panel'), (d) => d.open && d.classList.contains('live'));
  ok(liveOpen, 'the thinking panel is open and live while reasoning streams');
  await page.waitForTimeout(700);
  await page.screenshot({ path: join(shots, 'desktop-light-thinking-live.png') });
  await page.waitForSelector('.answer.streaming');
  ok(await page.isVisible(T('stop-button')), 'the stop button shows while streaming');
  await waitIdle(page);
  await api('/dev/config', { delay: 0.01 });
  const panel = await page.$eval(T('thinking-panel'), (d) => ({ open: d.open, label: d.querySelector('summary').textContent }));
  ok(!panel.open && /^Thought for \d+ s$/.test(panel.label), 'the thinking panel collapses to "Thought for N s"', JSON.stringify(panel));
  const stats = await lastAssistant(page).locator(T('message-stats')).textContent();
  ok(/to first token/.test(stats) && /tok\/s/.test(stats), 'per-message TTFT and tokens/s', stats);
  ok(await lastAssistant(page).locator('.hljs-keyword').count() > 0, 'code blocks are highlighted');
  ok(await lastAssistant(page).locator(T('code-copy')).count() === 1, 'code blocks have a copy button');
  ok(await lastAssistant(page).locator('table').count() === 1, 'markdown tables render');
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write']);
  await lastAssistant(page).locator(T('code-copy')).click();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  ok(copied.startsWith('def merge(a, b):') && !copied.includes('Copy'), 'the copy button copies the code', copied.slice(0, 40));
  let req = await api('/dev/last-request');
  ok(req.body.stream === true && req.body.stream_options.include_usage === true && req.body.model === 'smolmq-tiny',
    'the request streams, asks for usage and names the model', JSON.stringify(req.body).slice(0, 200));
  ok(!req.body.chat_template_kwargs, 'thinking on: no chat_template_kwargs sent');
  await page.screenshot({ path: join(shots, 'desktop-light-chat.png') });
  await page.click(`${T('thinking-panel')} summary`);
  await page.screenshot({ path: join(shots, 'desktop-light-thinking-open.png') });
  await page.click(`${T('thinking-panel')} summary`);

  // Model output can never run script.
  await send(page, 'xss please');
  await waitIdle(page);
  const xss = lastAssistant(page);
  const xssText = await xss.locator('.answer').textContent();
  ok(xssText.includes('<img src=x onerror=alert(1)>'), 'raw <img onerror> in an answer renders as text');
  ok(await xss.locator('img, script, iframe, [onerror], [onclick]').count() === 0, 'no img/script/iframe/handler elements in the answer');
  ok(await xss.locator('a[href^="javascript"]').count() === 0, 'javascript: links are removed');
  ok(await xss.locator('a[href="https://example.com"][target="_blank"][rel~="noopener"]').count() === 1, 'ordinary links open safely in a new tab');
  await page.waitForTimeout(300);

  // Stop: the stream ends and the server sees the connection close.
  const before = await api('/dev/stats');
  await send(page, 'slow answer please');
  await page.waitForSelector(`${T('thinking-panel')}.live`);
  await page.waitForTimeout(400);
  await page.click(T('stop-button'));
  await waitIdle(page);
  ok(await lastAssistant(page).getAttribute('data-status') === 'stopped', 'Stop ends the stream (status stopped)');
  ok(await page.isVisible(T('send-button')), 'the send button is back after Stop');
  await page.waitForTimeout(600);
  const after = await api('/dev/stats');
  ok(after.cancelled > before.cancelled, 'the server saw the request cancelled', JSON.stringify(after));

  // Regenerate replaces the last answer (a "slow" one: speed the server up).
  await api('/dev/config', { delay: 0.001 });
  const n0 = await page.locator(T('message')).count();
  await lastAssistant(page).hover();
  await lastAssistant(page).locator(T('regenerate-button')).click();
  await waitIdle(page);
  ok(await page.locator(T('message')).count() === n0 && await lastAssistant(page).getAttribute('data-status') === 'done',
    'Regenerate replaces the last answer');
  await api('/dev/config', { delay: 0.01 });

  // Edit-and-resend cuts the conversation at the edited message.
  const first = page.locator(`${T('message')}[data-role="user"]`).first();
  await first.hover();
  await first.locator(T('edit-button')).click();
  await page.fill(T('edit-input'), 'Tell me about brokers instead');
  await page.click(T('edit-send'));
  await waitIdle(page);
  const count = await page.locator(T('message')).count();
  const firstText = await page.locator(`${T('message')}[data-role="user"]`).first().textContent();
  ok(count === 2 && firstText.includes('brokers instead'), 'Edit-and-resend cuts the conversation there', `${count} messages`);

  // Error banners, with Retry.
  await send(page, 'please 429');
  await page.waitForSelector(T('error-banner'));
  let banner = await page.$eval(T('error-banner'), (b) => ({ kind: b.dataset.kind, text: b.textContent }));
  ok(banner.kind === 'rate-limit' && /7 s/.test(banner.text), '429 shows a banner with the Retry-After', JSON.stringify(banner));
  await page.waitForTimeout(300); // let the banner's entrance finish
  await page.screenshot({ path: join(shots, 'desktop-light-429.png') });
  await page.click(T('retry-button'));
  await page.waitForSelector(T('error-banner'));
  ok(await page.isVisible(T('retry-button')), 'Retry sends again (and gets the banner again)');
  await page.click('#banner-close');
  await send(page, 'please 503');
  await page.waitForSelector(T('error-banner'));
  banner = await page.$eval(T('error-banner'), (b) => ({ kind: b.dataset.kind, text: b.textContent }));
  ok(banner.kind === 'unavailable' && /No worker/.test(banner.text), '503 shows a "no worker" banner', JSON.stringify(banner));
  await send(page, 'please break the stream');
  await page.waitForSelector(T('error-banner'));
  banner = await page.$eval(T('error-banner'), (b) => b.textContent);
  ok(/interrupted/i.test(banner), 'a stream that ends early shows a banner', banner);
  await send(page, 'midError now');
  await page.waitForSelector(T('error-banner'));
  banner = await page.$eval(T('error-banner'), (b) => b.textContent);
  ok(/worker serving this request was lost/.test(banner), 'an error event inside the stream shows its message', banner);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, 'desktop-light-stream-error.png') });

  // Settings: thinking off and the system prompt reach the request.
  await page.click(T('settings-button'));
  await page.waitForSelector(T('settings-dialog'), { state: 'visible' });
  await page.fill(T('setting-system'), 'You are terse.');
  await page.fill(T('setting-max-tokens'), '50');
  await page.click('.switch');
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, 'desktop-light-settings.png') });
  await page.keyboard.press('Escape');
  await page.click(T('new-chat-button'));
  await send(page, 'Hello without thinking');
  await waitIdle(page);
  req = await api('/dev/last-request');
  ok(req.body.chat_template_kwargs && req.body.chat_template_kwargs.enable_thinking === false,
    'thinking off sends chat_template_kwargs.enable_thinking=false');
  ok(req.body.messages[0].role === 'system' && req.body.messages[0].content === 'You are terse.', 'the system prompt is sent');
  ok(req.body.max_tokens === 50, 'max tokens is sent');
  ok(await lastAssistant(page).locator(T('thinking-panel')).count() === 0, 'no thinking panel when thinking is off');
  ok(/max tokens/.test(await lastAssistant(page).textContent()), 'a reply cut by max tokens says so');
  await page.click(T('thinking-toggle'));
  await page.click(T('settings-button'));
  await page.fill(T('setting-max-tokens'), '');
  await page.keyboard.press('Escape');

  // Persistence: reload and find the conversations.
  await page.reload();
  await page.waitForSelector(T('conversation-item'));
  const items = await page.locator(T('conversation-item')).count();
  ok(items === 2, 'conversations survive a reload', `${items} items`);
  await page.locator(T('conversation-item')).nth(1).locator('.conv-open').click();
  ok(await page.locator(T('message')).count() >= 2, 'an older conversation opens from the list');
  // Rename and delete.
  const item = page.locator(T('conversation-item')).first();
  await item.hover();
  await item.locator(T('rename-conversation')).click();
  await page.fill(T('rename-input'), 'Renamed chat');
  await page.keyboard.press('Enter');
  ok(await page.locator(T('conversation-item')).first().textContent() === 'Renamed chat', 'rename a conversation');
  await page.screenshot({ path: join(shots, 'desktop-light-list.png') });

  // API key: the gateway starts asking for one.
  await api('/dev/config', { api_key: 'sekrit' });
  await page.reload();
  await page.waitForSelector(T('error-banner'));
  banner = await page.$eval(T('error-banner'), (b) => ({ kind: b.dataset.kind, text: b.textContent }));
  ok(banner.kind === 'auth', 'a 401 shows the API key banner', JSON.stringify(banner));
  await page.click(T('settings-button'));
  await page.fill(T('setting-api-key'), 'sekrit');
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => document.getElementById('status-text').textContent.includes('ready'));
  ok(await page.isHidden(T('error-banner')), 'with the key set, the models load and the banner goes');
  await send(page, 'Hi with a key');
  await waitIdle(page);
  req = await api('/dev/last-request');
  ok(req.authorization === 'Bearer sekrit', 'the API key is sent as a Bearer token');
  await api('/dev/config', { api_key: null });
  await ctx.close();

  // ---------- screenshots: desktop dark, phones ----------
  const seed = async (page) => {
    await page.goto(base);
    await page.waitForFunction(() => document.getElementById('status-text').textContent.includes('ready'));
    await send(page, 'Write a Python function that merges two sorted lists');
    await waitIdle(page);
    await page.waitForTimeout(200);
  };
  {
    const { ctx: c, page: p } = await newPage({ colorScheme: 'dark' });
    await p.goto(base);
    await p.waitForFunction(() => document.getElementById('status-text').textContent.includes('ready'));
    await p.screenshot({ path: join(shots, 'desktop-dark-empty.png') });
    await seed(p);
    await p.click(`${T('thinking-panel')} summary`);
    await p.screenshot({ path: join(shots, 'desktop-dark-chat.png') });
    await send(p, 'please 503');
    await p.waitForSelector(T('error-banner'));
    await p.waitForTimeout(300);
    await p.screenshot({ path: join(shots, 'desktop-dark-503.png') });
    await p.click(T('settings-button'));
    await p.waitForTimeout(300);
    await p.screenshot({ path: join(shots, 'desktop-dark-settings.png') });
    await p.keyboard.press('Escape');
    // The theme toggle overrides the system.
    await p.click(T('theme-toggle'));
    ok(await p.evaluate(() => document.documentElement.dataset.theme) === 'light', 'the theme toggle switches to light');
    await p.reload();
    ok(await p.evaluate(() => document.documentElement.dataset.theme) === 'light', 'the chosen theme survives a reload');
    await c.close();
  }
  for (const scheme of ['light', 'dark']) {
    const { ctx: c, page: p } = await newPage({
      colorScheme: scheme, viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    });
    await p.goto(base);
    await p.waitForFunction(() => document.getElementById('status-text').textContent.includes('ready'));
    await p.screenshot({ path: join(shots, `phone-${scheme}-empty.png`) });
    await seed(p);
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    ok(!overflow, `phone ${scheme}: nothing overflows 360 px`);
    await p.screenshot({ path: join(shots, `phone-${scheme}-chat.png`) });
    await send(p, 'please 429');
    await p.waitForSelector(T('error-banner'));
    await p.waitForTimeout(300);
    await p.screenshot({ path: join(shots, `phone-${scheme}-429.png`) });
    await p.click('#open-sidebar');
    await p.waitForTimeout(350);
    await p.screenshot({ path: join(shots, `phone-${scheme}-sidebar.png`) });
    await p.click('#scrim', { position: { x: 340, y: 400 } });
    await p.click(T('settings-button'));
    await p.waitForTimeout(300);
    await p.screenshot({ path: join(shots, `phone-${scheme}-settings.png`) });
    await c.close();
  }
} catch (e) {
  failed++;
  console.log('FAIL the check script stopped: ' + (e && e.stack || e));
} finally {
  ok(problems.length === 0, 'no console errors, CSP violations or dialogs', problems.join(' | '));
  await browser.close();
  server.kill();
}

console.log(`screenshots: ${shots}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

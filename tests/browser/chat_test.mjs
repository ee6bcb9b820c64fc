// chat_test.mjs - the web chat in headless Chromium against a real gateway.
//
//   SMQ_GATEWAY=http://127.0.0.1:PORT SHOTS=build/browser node tests/browser/chat_test.mjs
//
// tests/gateway_clients_test.py starts broker + tests/fake_worker.py (it
// thinks, then answers markdown with an <img onerror> in it) + gateway, and
// runs this with playwright-core from gateway/web/node_modules and Debian's
// chromium. Prints PASS/FAIL lines; after pressing Stop it prints
// "STOPPED" and waits for a line on stdin, so that the harness can check the
// broker's in-flight count dropped. Exits 1 on any failure.
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

const require = createRequire(resolve("gateway/web/package.json"));
const { chromium } = require("playwright-core");
const base = process.env.SMQ_GATEWAY.replace(/\/?$/, "/");
const shots = resolve(process.env.SHOTS || "build/browser");
mkdirSync(shots, { recursive: true });
const T = (id) => `[data-testid="${id}"]`;
let failed = 0;
const stdin = createInterface({ input: process.stdin });
const nextLine = () => new Promise((res) => stdin.once("line", res));

async function test(name, fn) {
    try {
        await fn();
        console.log(`PASS browser/${name}`);
    } catch (e) {
        failed++;
        console.log(`FAIL browser/${name}: ${String(e.message || e).split("\n")[0]}`);
        console.error(e);
    }
}
function check(cond, msg) {
    if (!cond) throw new Error(msg);
}

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
const page = await context.newPage();
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
let dialogs = 0;
page.on("dialog", (d) => {
    dialogs++;
    d.dismiss();
});
const assistant = () => page.locator(`${T("message")}[data-role="assistant"]`).last();

await test("streams_tokens_and_the_thinking_panel", async () => {
    await page.goto(base);
    await page.fill(T("message-input"), "Hello from the browser test [long]");
    await page.click(T("send-button"));
    await page.waitForSelector(`${T("thinking-panel")}.live`, { timeout: 15000 });
    const early = await page.locator(T("thinking-panel")).textContent();
    await page.waitForFunction(
        (sel) => document.querySelector(sel)?.getAttribute("data-status") === "done",
        `${T("message")}[data-role="assistant"]:last-of-type`, { timeout: 30000 },
    ).catch(() => {});
    await page.waitForSelector(T("stop-button"), { state: "hidden", timeout: 30000 });
    const panel = await page.locator(T("thinking-panel")).last().evaluate((d) => ({
        open: d.open, label: d.querySelector("summary").textContent, text: d.textContent,
    }));
    check(/The user asks a question/.test(panel.text), `reasoning in the panel: ${panel.text.slice(0, 120)}`);
    check(early.length < panel.text.length || /Thought for/.test(panel.label), "the panel streamed");
    check(/^Thought for \d+ s$/.test(panel.label), `panel label ${panel.label}`);
    const text = await assistant().textContent();
    check(/Here is the answer/.test(text), `answer: ${text.slice(0, 200)}`);
    await page.screenshot({ path: join(shots, "chat.png") });
});

await test("model_html_renders_as_text", async () => {
    const m = assistant();
    const html = await m.innerHTML();
    check((await m.textContent()).includes("<img src=x onerror=alert(1)>"), "the markup is shown as text");
    check(!/<img[^>]*onerror/i.test(html) && (await m.locator("img").count()) === 0, `an img element: ${html.slice(0, 300)}`);
    check(dialogs === 0, "a dialog opened");
});

await test("stop_ends_the_stream", async () => {
    await page.fill(T("message-input"), "Another question, to be stopped [long]");
    await page.click(T("send-button"));
    await page.waitForSelector(`${T("thinking-panel")}.live`, { timeout: 15000 });
    await page.click(T("stop-button"));
    await page.waitForSelector(T("stop-button"), { state: "hidden", timeout: 10000 });
    const status = await assistant().getAttribute("data-status");
    check(status === "stopped", `status after Stop: ${status}`);
    console.log("STOPPED");
    const verdict = await nextLine(); // the harness checks the broker
    check(verdict === "ok", `the broker still runs the stopped request: ${verdict}`);
});

await test("reload_keeps_the_conversation", async () => {
    await page.reload();
    await page.waitForSelector(T("conversation-item"));
    const items = await page.locator(T("conversation-item")).allTextContents();
    check(items.some((t) => t.includes("Hello from the browser test")), `conversations: ${items}`);
    await page.locator(T("conversation-item")).first().click();
    await page.waitForSelector(`${T("message")}[data-role="user"]`);
    const n = await page.locator(T("message")).count();
    check(n >= 4, `${n} messages after the reload`);
    await page.screenshot({ path: join(shots, "after-reload.png") });
});

await test("no_console_errors", async () => {
    check(problems.length === 0, problems.join("; "));
});

await browser.close();
stdin.close();
process.exit(failed ? 1 : 0);

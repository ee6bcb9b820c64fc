// openai_sdk_test.mjs - the official OpenAI Node SDK against smolmq-gateway.
//
//   SMQ_GATEWAY=http://127.0.0.1:PORT SMQ_MODEL=smolmq-fake node openai_sdk_test.mjs
//
// Run by tests/gateway_clients_test.py with tests/fake_worker.py behind the
// broker (scripted reasoning, then content: 40 tokens; 33 without
// thinking). Prints PASS/FAIL lines; exits 1 on any failure.
import OpenAI from "openai";

const base = process.env.SMQ_GATEWAY;
const model = process.env.SMQ_MODEL || "smolmq-fake";
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: process.env.SMQ_KEY || "not-needed", maxRetries: 0 });
const messages = [{ role: "user", content: "Hello there" }];
let failed = 0;

function check(cond, msg) {
    if (!cond) throw new Error(msg);
}

async function test(name, fn) {
    try {
        await fn();
        console.log(`PASS openai_sdk/${name}`);
    } catch (e) {
        failed++;
        console.log(`FAIL openai_sdk/${name}: ${String(e.message || e).split("\n")[0]}`);
        console.error(e);
    }
}

await test("non_streaming_with_reasoning_and_usage", async () => {
    const r = await client.chat.completions.create({ model, messages });
    check(r.object === "chat.completion" && r.id && r.created > 0, `envelope: ${JSON.stringify(r).slice(0, 200)}`);
    const c = r.choices[0];
    check(r.choices.length === 1 && c.index === 0 && c.finish_reason === "stop", `choice: ${JSON.stringify(c)}`);
    check(c.message.role === "assistant", `role ${c.message.role}`);
    check(c.message.reasoning_content.startsWith("The user asks a question."), `reasoning: ${c.message.reasoning_content}`);
    check(c.message.content.startsWith("Here is **the answer**."), `content: ${c.message.content}`);
    check(c.message.content.includes("<img src=x onerror=alert(1)>"), "the content is passed through as text");
    check(r.usage.completion_tokens === 40 && r.usage.prompt_tokens > 0, `usage ${JSON.stringify(r.usage)}`);
    check(r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, "total_tokens");
});

await test("streaming_with_reasoning_and_usage", async () => {
    const stream = await client.chat.completions.create({
        model, messages, stream: true, stream_options: { include_usage: true },
    });
    let reasoning = "", content = "", finish = null, usage = null, chunks = 0, role = null, id = null;
    for await (const chunk of stream) {
        chunks++;
        check(chunk.object === "chat.completion.chunk", `object ${chunk.object}`);
        id = id || chunk.id;
        check(chunk.id === id, "one id for the whole stream");
        if (chunk.usage) usage = chunk.usage;
        for (const ch of chunk.choices) {
            role = role || ch.delta.role;
            reasoning += ch.delta.reasoning_content || "";
            content += ch.delta.content || "";
            finish = ch.finish_reason || finish;
        }
    }
    check(role === "assistant", `role ${role}`);
    check(reasoning.startsWith("The user asks a question.") && content.startsWith("Here is **the answer**."),
        `text: ${reasoning} / ${content}`);
    check(finish === "stop", `finish ${finish}`);
    check(usage && usage.completion_tokens === 40, `usage ${JSON.stringify(usage)}`);
    check(chunks >= 40, `${chunks} chunks`);
});

await test("thinking_off_and_max_tokens", async () => {
    const r = await client.chat.completions.create({
        model, messages, max_tokens: 5, reasoning_effort: "none",
    });
    const c = r.choices[0];
    check(!c.message.reasoning_content, `reasoning with thinking off: ${c.message.reasoning_content}`);
    check(c.finish_reason === "length" && r.usage.completion_tokens === 5, `${c.finish_reason} ${JSON.stringify(r.usage)}`);
    const r2 = await client.chat.completions.create({
        model, messages, max_completion_tokens: 3, chat_template_kwargs: { enable_thinking: false },
    });
    check(!r2.choices[0].message.reasoning_content && r2.usage.completion_tokens === 3, JSON.stringify(r2.choices[0]));
});

await test("errors_are_openai_errors", async () => {
    try {
        await client.chat.completions.create({ model: "no-such-model", messages });
        throw new Error("no error for an unknown model");
    } catch (e) {
        check(e instanceof OpenAI.APIError && e.status === 404, `unknown model: ${e.status} ${e.message}`);
        check(/no-such-model/.test(e.message), `the message names the model: ${e.message}`);
    }
    try {
        await client.chat.completions.create({ model, messages, n: 2 });
        throw new Error("no error for n=2");
    } catch (e) {
        check(e instanceof OpenAI.BadRequestError && e.status === 400 && /\bn\b/.test(e.message), `n=2: ${e.status} ${e.message}`);
    }
});

await test("models_list", async () => {
    const list = await client.models.list();
    const ids = list.data.map((m) => m.id);
    check(ids.includes(model), `models: ${ids}`);
});

process.exit(failed ? 1 : 0);

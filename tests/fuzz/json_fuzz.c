/* json_fuzz.c - libFuzzer target: the JSON parser on arbitrary bytes, and
 * the chat template on whatever conversation they hold.
 *
 * Whatever the input, json_parse must either reject it with a message that
 * names the input and a byte offset inside it, or return a tree whose every
 * node can be walked: strings NUL-terminated at their length and valid
 * UTF-8, keys unique (json_get finds each member at its own index), Python
 * reprs valid UTF-8. An object with "messages" is also rendered with both
 * templates (with the options in its "kwargs", or at its top level, as the
 * goldens spell them); the rendering of valid UTF-8 must be valid UTF-8.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"
#include "utf8.h"

static volatile uint64_t sink;

static void walk(const json_value *v)
{
    size_t len;
    const char *s = json_string(v, &len);
    if (s && (s[len] != 0 || !utf8_valid(s, len, 1)))
        abort();
    double d = json_number(v);
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    sink += bits + (uint64_t)json_integer(v) + (uint64_t)json_boolean(v) + (uint64_t)json_truthy(v);
    for (size_t i = 0; i < json_len(v); i++) {
        const json_value *e = json_at(v, i);
        if (!e)
            abort();
        if (json_typeof(v) == JSON_OBJECT) {
            const char *k = json_key_at(v, i, &len);
            if (!k || k[len] != 0 || !utf8_valid(k, len, 1))
                abort();
            if (strlen(k) == len && json_get(v, k) != e) /* json_get takes C strings */
                abort();
        }
        walk(e);
    }
}

static void render(const json_value *root)
{
    const json_value *msgs = json_get(root, "messages");
    size_t n = json_len(msgs);
    if (json_typeof(msgs) != JSON_ARRAY || n > 64)
        return;
    chat_message m[64];
    for (size_t i = 0; i < n; i++) {
        const json_value *e = json_at(msgs, i);
        m[i].role = json_string(json_get(e, "role"), NULL);
        if (!m[i].role)
            m[i].role = "user";
        m[i].content = json_string(json_get(e, "content"), &m[i].content_len);
    }
    /* Options from "kwargs" (as in the goldens), else from the top. */
    const json_value *kw = json_get(root, "kwargs") ? json_get(root, "kwargs") : root;
    const json_value *think = json_get(kw, "enable_thinking");
    chat_options o = { 0 };
    o.add_generation_prompt = json_truthy(json_get(kw, "add_generation_prompt"));
    o.enable_thinking = think ? json_truthy(think) : -1;
    o.xml_tools = json_get(kw, "xml_tools");
    o.python_tools = json_get(kw, "python_tools");
    o.tools = json_get(kw, "tools");
    o.year = 2025, o.month = 7, o.day = 15;
    for (int kind = CHAT_TEMPLATE_SMOLLM3; kind <= CHAT_TEMPLATE_CHATML; kind++) {
        smq_err err = { { 0 } };
        size_t len;
        char *out = chat_render((chat_template_kind)kind, m, n, &o, &len, &err);
        if (!out && !err.msg[0])
            abort();
        if (out && (out[len] != 0 || !utf8_valid(out, len, 1)))
            abort();
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smq_err err = { { 0 } };
    json_value *v = json_parse((const char *)data, size, "fuzz.json", &err);
    if (!v) {
        /* "fuzz.json: at byte N: ..." with N inside the input or at its end. */
        unsigned long long at;
        if (sscanf(err.msg, "fuzz.json: at byte %llu: ", &at) != 1 || at > size)
            abort();
        return 0;
    }
    walk(v);
    sbuf b = { 0 };
    if (json_repr_python(v, &b) || !utf8_valid(b.data, b.len, 0))
        abort();
    sbuf_free(&b);
    if (json_str_python(v, &b) || !b.data)
        abort();
    sbuf_free(&b);
    render(v);
    json_free(v);
    return 0;
}

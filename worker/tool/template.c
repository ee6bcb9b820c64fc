/* template.c - `smolmq template`: a conversation through the model's chat
 * template, printed exactly (no added newline), or as token ids.
 *
 *   smolmq template --model M --input CONV.json [--date YYYY-MM-DD] [--ids]
 *
 * CONV.json holds {"messages": [...], "kwargs": {...}}, the shape of a line of
 * tests/data/chat/chat_goldens.jsonl (other top-level fields are ignored). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "gguf.h"
#include "json.h"
#include "json_out.h"
#include "tokenizer.h"
#include "tool.h"

static const char *usage_line = "template --model M --input CONV.json [--date YYYY-MM-DD] [--ids]";

static int parse_date(const char *s, chat_options *o)
{
    static const int days[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, m, d;
    char tail;
    if (sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || strlen(s) != 10 || y < 1 || m < 1 || m > 12 || d < 1 ||
        d > days[m - 1] || (m == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))))
        return -1;
    o->year = y, o->month = m, o->day = d;
    return 0;
}

/* The chat_options and messages a conversation file asks for. */
static int read_conversation(const json_value *conv, const char *path, chat_message **msgs, size_t *n, chat_options *o)
{
    const json_value *messages = json_get(conv, "messages"), *kwargs = json_get(conv, "kwargs");
    if (json_typeof(messages) != JSON_ARRAY)
        return tool_fail("template", "%s: \"messages\" must be an array of {\"role\", \"content\"} objects", path);
    *n = json_len(messages);
    *msgs = calloc(*n ? *n : 1, sizeof **msgs);
    if (!*msgs)
        return tool_fail("template", "out of memory");
    for (size_t i = 0; i < *n; i++) {
        const json_value *m = json_at(messages, i);
        const char *role = json_string(json_get(m, "role"), NULL);
        if (!role)
            return tool_fail("template", "%s: messages[%zu] has no string \"role\"", path, i);
        (*msgs)[i].role = role;
        (*msgs)[i].content = json_string(json_get(m, "content"), &(*msgs)[i].content_len);
    }
    if (kwargs && json_typeof(kwargs) != JSON_OBJECT)
        return tool_fail("template", "%s: \"kwargs\" must be an object", path);
    for (size_t i = 0; i < json_len(kwargs); i++) {
        const char *k = json_key_at(kwargs, i, NULL);
        const json_value *v = json_at(kwargs, i);
        if (!strcmp(k, "add_generation_prompt")) {
            o->add_generation_prompt = json_truthy(v);
        } else if (!strcmp(k, "enable_thinking")) {
            o->enable_thinking = json_truthy(v);
        } else if (!strcmp(k, "xml_tools")) {
            o->xml_tools = v;
        } else if (!strcmp(k, "python_tools")) {
            o->python_tools = v;
        } else if (!strcmp(k, "tools")) {
            o->tools = v;
        } else {
            return tool_fail("template",
                             "%s: kwargs.%s is not a variable of the chat template (known: "
                             "add_generation_prompt, enable_thinking, xml_tools, python_tools, tools)",
                             path, k);
        }
    }
    return 0;
}

static int render(const char *model, const char *input, const char *date, int as_ids)
{
    chat_options o = { 0 };
    o.enable_thinking = -1;
    if (date && parse_date(date, &o))
        return tool_usage(usage_line, "--date wants a date YYYY-MM-DD, not \"%s\"", date);

    size_t len;
    FILE *in = fopen(input, "rb");
    if (!in)
        return tool_fail("template", "%s: cannot open: %s", input, strerror(errno));
    sbuf text = { 0 };
    char chunk[65536];
    while ((len = fread(chunk, 1, sizeof chunk, in)) > 0)
        sbuf_append(&text, chunk, len);
    fclose(in);
    smq_err err;
    json_value *conv = json_parse(text.data ? text.data : "", text.len, input, &err);
    sbuf_free(&text);
    if (!conv)
        return tool_fail("template", "%s", err.msg);

    chat_message *msgs = NULL;
    size_t n = 0;
    int rc = read_conversation(conv, input, &msgs, &n, &o);
    gguf_file *f = rc ? NULL : gguf_open(model, &err);
    if (!rc && !f)
        rc = tool_fail("template", "%s", err.msg);
    char *out = NULL;
    if (!rc) {
        chat_template_kind kind = (chat_template_kind)tool_template_kind("template", f);
        out = chat_render(kind, msgs, n, &o, &len, &err);
        if (!out)
            rc = tool_fail("template", "%s: %s", input, err.msg);
    }
    if (!rc && !as_ids) {
        fwrite(out, 1, len, stdout);
    } else if (!rc) {
        tokenizer *t = tokenizer_load(f, &err);
        tok_ids ids = { 0 };
        if (!t || chat_encode((chat_template_kind)tool_template_kind("template", f), msgs, n, &o, t, &ids, &err)) {
            rc = tool_fail("template", "%s", err.msg);
        } else {
            json_out j;
            json_init(&j, stdout);
            json_arr_begin(&j);
            for (size_t i = 0; i < ids.n; i++)
                json_i64(&j, ids.ids[i]);
            json_arr_end(&j);
        }
        tok_ids_free(&ids);
        tokenizer_destroy(&t);
    }
    free(out);
    free(msgs);
    gguf_close(&f);
    json_free(conv);
    return rc;
}

int tool_template(int argc, char **argv)
{
    const char *model = NULL, *input = NULL, *date = NULL;
    int as_ids = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ids")) {
            as_ids = 1;
        } else if (!strcmp(argv[i], "--model") || !strcmp(argv[i], "--input") || !strcmp(argv[i], "--date")) {
            if (i + 1 >= argc)
                return tool_usage(usage_line, "%s needs a value", argv[i]);
            const char **slot = !strcmp(argv[i], "--model") ? &model : !strcmp(argv[i], "--input") ? &input : &date;
            *slot = argv[++i];
        } else {
            return tool_usage(usage_line, "unknown argument %s", argv[i]);
        }
    }
    if (!model || !input)
        return tool_usage(usage_line, "%s", !model ? "no --model given" : "no --input given");
    return render(model, input, date, as_ids);
}

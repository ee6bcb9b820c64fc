/* openai_response.c - OpenAI's response JSON, built with jansson
 * (openai_response.h). Objects keep the order their keys are set in, so
 * the output reads like OpenAI's own. */
#include "openai_response.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int on_dump(const char *buf, size_t size, void *data)
{
    return sbuf_append(data, buf, size);
}

int json_put(json_t *json, sbuf *out)
{
    if (!json)
        return -1;
    int rc = json_dump_callback(json, on_dump, out, JSON_COMPACT);
    json_decref(json);
    return rc || out->oom ? -1 : 0;
}

json_t *json_str(const char *s)
{
    return json_stringn(s, strlen(s));
}

static json_t *str_or_null(const char *s)
{
    return s && *s ? json_str(s) : json_null();
}

json_t *openai_error_object(const openai_error *e)
{
    return json_pack("{s:s, s:s, s:o, s:o}", "message", e->message, "type", e->type ? e->type : "server_error", "param",
                     str_or_null(e->param), "code", str_or_null(e->code));
}

int openai_error_json(const openai_error *e, sbuf *out)
{
    return json_put(json_pack("{s:o}", "error", openai_error_object(e)), out);
}

json_t *openai_usage(const smq_usage *u)
{
    return json_pack("{s:I, s:I, s:I, s:{s:I}, s:{s:I}}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                     "completion_tokens", (json_int_t)u->completion_tokens, "total_tokens",
                     (json_int_t)u->prompt_tokens + (json_int_t)u->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", (json_int_t)u->cached_tokens, "completion_tokens_details", "reasoning_tokens",
                     (json_int_t)u->reasoning_tokens);
}

/* JSON strings written by hand, as jansson writes them (compact, UTF-8
 * kept, only '"', '\\' and controls escaped): the chunk of every token is
 * built here without a tree of allocations, which was two thirds of the
 * gateway's CPU per token (docs/BENCHMARKS.md). openai_response_test
 * holds every output to jansson's for the same values. */
int json_put_str(sbuf *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF", from[] = "\"\\\b\f\n\r\t", to[] = "\"\\bfnrt";
    sbuf_putc(out, '"');
    size_t run = 0; /* bytes before i that need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sbuf_append(out, p + run, i - run);
        run = i + 1;
        const char *k = memchr(from, c, sizeof from - 1); /* a two-character escape */
        char e[6] = { '\\', k ? to[k - from] : 'u', '0', '0', hex[c >> 4], hex[c & 15] };
        sbuf_append(out, e, k ? 2 : 6);
    }
    sbuf_append(out, p + run, n - run);
    return sbuf_putc(out, '"');
}

static json_t *chunk(const openai_meta *m, json_t *choices)
{
    json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:n, s:o}", "id", m->id, "object", "chat.completion.chunk", "created",
                          (json_int_t)m->created, "model", m->model, "system_fingerprint", "choices", choices);
    if (c && m->usage_null)
        json_object_set_new(c, "usage", json_null());
    return c;
}

static int event(json_t *json, sbuf *out)
{
    if (sbuf_puts(out, "data: ") || json_put(json, out) || sbuf_puts(out, "\n\n"))
        return -1;
    return 0;
}

int openai_chunk_event(const openai_meta *m, const char *role, smq_str reasoning, smq_str content, const char *finish,
                       sbuf *out)
{
    char created[24];
    sbuf_puts(out, "data: {\"id\":");
    json_put_str(out, m->id, strlen(m->id));
    snprintf(created, sizeof created, "%" PRId64, m->created);
    sbuf_puts(out, ",\"object\":\"chat.completion.chunk\",\"created\":");
    sbuf_puts(out, created);
    sbuf_puts(out, ",\"model\":");
    json_put_str(out, m->model, strlen(m->model));
    sbuf_puts(out, ",\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{");
    const char *sep = "";
    if (role) {
        sbuf_puts(out, "\"role\":");
        json_put_str(out, role, strlen(role));
        sep = ",";
    }
    if (reasoning.p) {
        sbuf_puts(out, sep);
        sbuf_puts(out, "\"reasoning_content\":");
        json_put_str(out, reasoning.p, reasoning.n);
        sep = ",";
    }
    if (content.p) {
        sbuf_puts(out, sep);
        sbuf_puts(out, "\"content\":");
        json_put_str(out, content.p, content.n);
    }
    sbuf_puts(out, "},\"logprobs\":null,\"finish_reason\":");
    if (finish)
        json_put_str(out, finish, strlen(finish));
    else
        sbuf_puts(out, "null");
    sbuf_puts(out, m->usage_null ? "}],\"usage\":null}\n\n" : "}]}\n\n");
    return out->oom ? -1 : 0;
}

int openai_usage_event(const openai_meta *m, const smq_usage *u, sbuf *out)
{
    json_t *c = chunk(m, json_array());
    if (c)
        json_object_set_new(c, "usage", openai_usage(u));
    return event(c, out);
}

int openai_error_event(const openai_error *e, sbuf *out)
{
    return event(json_pack("{s:o}", "error", openai_error_object(e)), out);
}

int openai_completion_json(const openai_meta *m, smq_str content, smq_str reasoning, const char *finish,
                           const smq_usage *u, sbuf *out)
{
    json_t *msg = json_pack("{s:s, s:s%, s:n}", "role", "assistant", "content", content.p ? content.p : "",
                            (size_t)content.n, "refusal");
    if (msg && reasoning.n)
        json_object_set_new(msg, "reasoning_content", json_stringn(reasoning.p, reasoning.n));
    json_t *choice = json_pack("{s:i, s:o, s:n, s:s}", "index", 0, "message", msg, "logprobs", "finish_reason", finish);
    return json_put(json_pack("{s:s, s:s, s:I, s:s, s:n, s:[o], s:o}", "id", m->id, "object", "chat.completion",
                              "created", (json_int_t)m->created, "model", m->model, "system_fingerprint", "choices",
                              choice, "usage", openai_usage(u)),
                    out);
}

int openai_models_json(const smq_stats *s, sbuf *out)
{
    json_t *data = json_array();
    for (uint32_t i = 0; s && i < s->n_workers; i++) {
        smq_str name = s->workers[i].model;
        int seen = 0;
        for (uint32_t j = 0; j < i && !seen; j++)
            seen = s->workers[j].model.n == name.n && !memcmp(s->workers[j].model.p, name.p, name.n);
        if (!seen)
            json_array_append_new(data, json_pack("{s:s%, s:s, s:I, s:s}", "id", name.p, (size_t)name.n, "object",
                                                  "model", "created", (json_int_t)0, "owned_by", "smolmq"));
    }
    return json_put(json_pack("{s:s, s:o}", "object", "list", "data", data), out);
}

/* openai_request.c - an OpenAI chat completions body into a CHAT
 * (openai_request.h).
 *
 * Each field is read by a small getter that knows its JSON type and its
 * range: it leaves the default when the key is absent or null (OpenAI's
 * SDKs send null for "not given"), and otherwise either sets the value or
 * fails with a message that names the field, what came, and what to send
 * instead. Ranges are the broker's (PROTOCOL.md §3), checked after the
 * rounding to float32 that the broker does, so that nothing accepted here
 * is refused there.
 */
#include "openai_request.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define INVALID "invalid_request_error"

/* Replaces each byte that does not start a valid UTF-8 sequence with '?':
 * messages quote the input (jansson's "near '...'", a key cut at 40 bytes),
 * and they must stay valid JSON strings. */
static void make_utf8(char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_next(s + i, n - i, &cp);
        if (k <= 0) {
            s[i++] = '?';
            continue;
        }
        i += (size_t)k;
    }
}

int openai_error_set(openai_error *e, int status, const char *type, const char *code, const char *param,
                     const char *fmt, ...)
{
    memset(e, 0, sizeof *e);
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    make_utf8(e->message);
    make_utf8(e->param);
    return -1;
}

void openai_json_error(openai_error *e, const char *what, const json_error_t *jerr)
{
    enum json_error_code c = json_error_code(jerr);
    if (c == json_error_invalid_utf8)
        openai_error_set(e, 400, INVALID, "invalid_encoding", NULL,
                         "%s is not valid UTF-8 (at byte %d): send text as UTF-8", what, jerr->position);
    else if (c == json_error_duplicate_key)
        openai_error_set(e, 400, INVALID, "invalid_json", NULL, "%s gives a key twice: %s", what, jerr->text);
    else
        openai_error_set(e, 400, INVALID, "invalid_json", NULL, "%s is not valid JSON: %s (line %d, column %d)", what,
                         jerr->text, jerr->line, jerr->column);
}

/* "a string", "an array"...: what came, for messages. */
static const char *json_kind(const json_t *v)
{
    if (!v)
        return "missing";
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return "null";
    }
}

static int wrong_type(openai_error *e, const char *key, const char *want, const json_t *v)
{
    if (!v)
        return openai_error_set(e, 400, INVALID, "missing_required_parameter", key, "%s is missing: send %s", key,
                                want);
    return openai_error_set(e, 400, INVALID, "invalid_type", key, "%s must be %s, not %s", key, want, json_kind(v));
}

/* The value of key, or NULL when absent or null. */
static json_t *given(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* A number within [lo, hi] (lo excluded when lo_open) after rounding to
 * float32. 0: absent, 1: set, -1: error. */
static int get_float(json_t *obj, const char *key, double lo, double hi, int lo_open, float *out, openai_error *e)
{
    json_t *v = given(obj, key);
    if (!v)
        return 0;
    if (!json_is_number(v))
        return wrong_type(e, key, "a number", v);
    double d = json_number_value(v);
    float f = (float)d;
    if (!isfinite(f) || (lo_open ? !(f > lo) : !(f >= lo)) || !(f <= hi))
        return openai_error_set(e, 400, INVALID, "invalid_value", key, "%s is %g: use a number %s %g to %g", key, d,
                                lo_open ? "above" : "from", lo, hi);
    *out = f;
    return 1;
}

/* A whole number within [lo, hi]. */
static int get_int(json_t *obj, const char *key, json_int_t lo, json_int_t hi, json_int_t *out, openai_error *e)
{
    json_t *v = given(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return wrong_type(e, key, "a whole number", v);
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        return openai_error_set(e, 400, INVALID, "invalid_value", key,
                                "%s is %lld: use a whole number from %lld to %lld", key, (long long)i, (long long)lo,
                                (long long)hi);
    *out = i;
    return 1;
}

static int get_bool(json_t *obj, const char *key, int *out, openai_error *e)
{
    json_t *v = given(obj, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return wrong_type(e, key, "true or false", v);
    *out = json_is_true(v);
    return 1;
}

/* A string of lo..hi bytes; with name, without U+0000 (ids, names). */
static int str_check(const json_t *v, const char *key, size_t lo, size_t hi, int name, smq_str *out, openai_error *e)
{
    if (!json_is_string(v))
        return wrong_type(e, key, "a string", v);
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n < lo || n > hi)
        return openai_error_set(e, 400, INVALID, n > hi ? "string_above_max_length" : "invalid_value", key,
                                "%s has %zu bytes: send %zu to %zu", key, n, lo, hi);
    if (name && memchr(s, 0, n))
        return openai_error_set(e, 400, INVALID, "invalid_value", key, "%s must not hold U+0000", key);
    *out = (smq_str){ s, (uint32_t)n };
    return 0;
}

/* ---- fields smolmq does not support ---- */

static int is_empty(const json_t *v)
{
    return (json_is_array(v) && json_array_size(v) == 0) || (json_is_object(v) && json_object_size(v) == 0);
}

static int is_string(const json_t *v, const char *s)
{
    return json_is_string(v) && !strcmp(json_string_value(v), s);
}

/* Each returns 1 when the value asks for nothing smolmq cannot do. */
static int no_tools(const json_t *v)
{
    return is_empty(v);
}
static int choice_none(const json_t *v)
{
    return is_string(v, "none") || is_string(v, "auto");
}
static int format_text(const json_t *v)
{
    return json_is_object(v) && is_string(json_object_get(v, "type"), "text");
}
static int is_false(const json_t *v)
{
    return json_is_false(v);
}
static int is_zero(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) == 0;
}
static int text_only(const json_t *v)
{
    if (!json_is_array(v))
        return 0;
    for (size_t i = 0; i < json_array_size(v); i++)
        if (!is_string(json_array_get(v, i), "text"))
            return 0;
    return 1;
}
static int never(const json_t *v)
{
    (void)v;
    return 0;
}

static const struct {
    const char *key;
    int (*harmless)(const json_t *v);
    const char *what;
} unsupported[] = {
    { "tools", no_tools, "tool calling is not supported: remove tools" },
    { "tool_choice", choice_none, "tool calling is not supported: remove tool_choice or send \"none\"" },
    { "functions", no_tools, "function calling is not supported: remove functions" },
    { "function_call", choice_none, "function calling is not supported: remove function_call" },
    { "response_format", format_text, "only {\"type\": \"text\"} is supported: remove response_format" },
    { "logprobs", is_false, "log probabilities are not supported: remove logprobs or send false" },
    { "top_logprobs", is_zero, "log probabilities are not supported: remove top_logprobs" },
    { "logit_bias", no_tools, "logit_bias is not supported: remove it or send {}" },
    { "audio", never, "audio output is not supported: remove audio" },
    { "modalities", text_only, "only the text modality is supported: send [\"text\"] or nothing" },
    { "prediction", never, "predicted outputs are not supported: remove prediction" },
    { "web_search_options", never, "web search is not supported: remove web_search_options" },
};

static int check_unsupported(json_t *root, openai_error *e)
{
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        json_t *v = given(root, unsupported[i].key);
        if (v && !unsupported[i].harmless(v))
            return openai_error_set(e, 400, INVALID, "unsupported_parameter", unsupported[i].key, "%s: %s",
                                    unsupported[i].key, unsupported[i].what);
    }
    return 0;
}

/* ---- messages ---- */

/* Keeps a joined content, so that free releases it. */
static char *keep(openai_request *r, char *s)
{
    char **p = realloc(r->joined, (r->n_joined + 1) * sizeof *p);
    if (!p) {
        free(s);
        return NULL;
    }
    r->joined = p;
    r->joined[r->n_joined++] = s;
    return s;
}

/* Content as an array of parts: only {type: "text", text}, joined with
 * newlines (as vLLM does) into one string. */
static int read_parts(openai_request *r, json_t *parts, const char *key, smq_str *out, openai_error *e)
{
    char k[96];
    size_t total = 0, n = json_array_size(parts);
    for (size_t j = 0; j < n; j++) {
        json_t *p = json_array_get(parts, j);
        snprintf(k, sizeof k, "%s[%zu]", key, j);
        if (!json_is_object(p))
            return wrong_type(e, k, "an object {\"type\": \"text\", \"text\": ...}", p);
        json_t *type = json_object_get(p, "type"), *text = json_object_get(p, "text");
        snprintf(k, sizeof k, "%s[%zu].type", key, j);
        if (!json_is_string(type))
            return wrong_type(e, k, "\"text\"", type);
        if (strcmp(json_string_value(type), "text"))
            return openai_error_set(e, 400, INVALID, "unsupported_content_type", k,
                                    "%s is \"%.40s\": only text parts are supported", k, json_string_value(type));
        snprintf(k, sizeof k, "%s[%zu].text", key, j);
        if (!json_is_string(text))
            return wrong_type(e, k, "a string", text);
        total += json_string_length(text) + (j > 0);
        if (total > SMQ_CONTENT_MAX)
            return openai_error_set(e, 400, INVALID, "string_above_max_length", key,
                                    "%s is longer than %u bytes: send less text", key, SMQ_CONTENT_MAX);
    }
    char *s = malloc(total + 1);
    if (!s || !keep(r, s))
        return openai_error_set(e, 500, "server_error", "internal", NULL, "out of memory");
    size_t at = 0;
    for (size_t j = 0; j < n; j++) {
        json_t *text = json_object_get(json_array_get(parts, j), "text");
        if (j > 0)
            s[at++] = '\n';
        memcpy(s + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    s[at] = 0;
    *out = (smq_str){ s, (uint32_t)at };
    return 0;
}

static int read_message(openai_request *r, json_t *m, size_t i, smq_chat_msg *out, openai_error *e)
{
    char k[64];
    snprintf(k, sizeof k, "messages[%zu]", i);
    if (!json_is_object(m))
        return wrong_type(e, k, "an object {\"role\": ..., \"content\": ...}", m);
    snprintf(k, sizeof k, "messages[%zu].role", i);
    json_t *role = json_object_get(m, "role");
    if (!json_is_string(role))
        return wrong_type(e, k, "\"system\", \"user\", \"assistant\" or \"tool\"", role);
    const char *rs = json_string_value(role);
    if (!strcmp(rs, "developer")) /* OpenAI's newer name for system */
        rs = "system";
    if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
        return openai_error_set(e, 400, INVALID, "invalid_value", k,
                                "%s is \"%.40s\": use \"system\", \"user\", \"assistant\" or \"tool\"", k, rs);
    out->role = (smq_str){ rs, (uint32_t)strlen(rs) };
    json_t *calls = given(m, "tool_calls");
    if (calls && !is_empty(calls)) {
        snprintf(k, sizeof k, "messages[%zu].tool_calls", i);
        return openai_error_set(e, 400, INVALID, "unsupported_parameter", k,
                                "%s: tool calling is not supported: remove tool_calls", k);
    }
    snprintf(k, sizeof k, "messages[%zu].content", i);
    json_t *c = given(m, "content");
    if (!c && !strcmp(rs, "assistant")) { /* an assistant turn may have no text */
        out->content = (smq_str){ "", 0 };
        return 0;
    }
    if (json_is_array(c))
        return read_parts(r, c, k, &out->content, e);
    if (!c || !json_is_string(c))
        return c ? wrong_type(e, k, "a string or an array of text parts", c)
                 : openai_error_set(e, 400, INVALID, "missing_required_parameter", k, "%s is missing: send the text",
                                    k);
    return str_check(c, k, 0, SMQ_CONTENT_MAX, 0, &out->content, e);
}

static int read_messages(openai_request *r, json_t *root, const openai_limits *lim, openai_error *e)
{
    json_t *msgs = given(root, "messages");
    if (!msgs)
        return openai_error_set(e, 400, INVALID, "missing_required_parameter", "messages",
                                "messages is missing: send an array of {\"role\", \"content\"}");
    if (!json_is_array(msgs))
        return wrong_type(e, "messages", "an array of {\"role\", \"content\"}", msgs);
    size_t n = json_array_size(msgs);
    if (n == 0 || n > lim->max_messages)
        return openai_error_set(e, 400, INVALID, n ? "array_above_max_length" : "empty_array", "messages",
                                "messages has %zu entries: send 1 to %u", n, lim->max_messages);
    r->chat.messages = calloc(n, sizeof *r->chat.messages);
    if (!r->chat.messages)
        return openai_error_set(e, 500, "server_error", "internal", NULL, "out of memory");
    r->chat.n_messages = (uint32_t)n;
    for (size_t i = 0; i < n; i++)
        if (read_message(r, json_array_get(msgs, i), i, &r->chat.messages[i], e))
            return -1;
    return 0;
}

/* ---- the other fields ---- */

static int read_stop(openai_request *r, json_t *root, openai_error *e)
{
    json_t *v = given(root, "stop");
    char k[32];
    if (!v)
        return 0;
    if (json_is_string(v)) {
        r->chat.n_stop = 1;
        return str_check(v, "stop", 1, SMQ_STOP_LEN_MAX, 0, &r->chat.stop[0], e);
    }
    if (!json_is_array(v))
        return wrong_type(e, "stop", "a string or an array of strings", v);
    if (json_array_size(v) > SMQ_STOP_MAX)
        return openai_error_set(e, 400, INVALID, "array_above_max_length", "stop",
                                "stop has %zu strings: send at most %d", json_array_size(v), SMQ_STOP_MAX);
    for (size_t i = 0; i < json_array_size(v); i++) {
        snprintf(k, sizeof k, "stop[%zu]", i);
        if (str_check(json_array_get(v, i), k, 1, SMQ_STOP_LEN_MAX, 0, &r->chat.stop[i], e))
            return -1;
    }
    r->chat.n_stop = (uint32_t)json_array_size(v);
    return 0;
}

/* Thinking is on (SmolLM3's default) unless chat_template_kwargs says
 * enable_thinking: false or reasoning_effort is "none". */
static int read_thinking(openai_request *r, json_t *root, openai_error *e)
{
    json_t *kw = given(root, "chat_template_kwargs");
    if (kw) {
        if (!json_is_object(kw))
            return wrong_type(e, "chat_template_kwargs", "an object", kw);
        const char *k;
        json_t *v;
        json_object_foreach(kw, k, v)
        {
            if (strcmp(k, "enable_thinking"))
                return openai_error_set(e, 400, INVALID, "unsupported_parameter", "chat_template_kwargs",
                                        "chat_template_kwargs.%.40s is not supported: only enable_thinking is", k);
        }
        if (get_bool(kw, "enable_thinking", &r->chat.thinking, e) < 0)
            return openai_error_set(e, 400, INVALID, "invalid_type", "chat_template_kwargs.enable_thinking",
                                    "chat_template_kwargs.enable_thinking must be true or false");
    }
    json_t *effort = given(root, "reasoning_effort");
    if (effort) {
        static const char *const levels[] = { "minimal", "low", "medium", "high" };
        if (!json_is_string(effort))
            return wrong_type(e, "reasoning_effort", "a string", effort);
        const char *s = json_string_value(effort);
        if (!strcmp(s, "none"))
            r->chat.thinking = 0;
        else if (strcmp(s, levels[0]) && strcmp(s, levels[1]) && strcmp(s, levels[2]) && strcmp(s, levels[3]))
            return openai_error_set(e, 400, INVALID, "invalid_value", "reasoning_effort",
                                    "reasoning_effort is \"%.40s\": use \"none\" (no thinking), \"minimal\", "
                                    "\"low\", \"medium\" or \"high\" (thinking)",
                                    s);
    }
    return 0;
}

static int read_sampling(openai_request *r, json_t *root, const openai_limits *lim, openai_error *e)
{
    smq_chat *c = &r->chat;
    json_int_t i;
    if (get_float(root, "temperature", 0, 2, 0, &c->temperature, e) < 0 ||
        get_float(root, "top_p", 0, 1, 1, &c->top_p, e) < 0 || get_float(root, "min_p", 0, 1, 0, &c->min_p, e) < 0 ||
        get_float(root, "presence_penalty", -2, 2, 0, &c->presence_penalty, e) < 0 ||
        get_float(root, "frequency_penalty", -2, 2, 0, &c->frequency_penalty, e) < 0 ||
        get_float(root, "repetition_penalty", 0, FLT_MAX, 1, &c->repeat_penalty, e) < 0)
        return -1;
    int rc = get_int(root, "top_k", 0, UINT32_MAX, &i, e);
    if (rc < 0)
        return -1;
    if (rc)
        c->top_k = (uint32_t)i;
    if ((rc = get_int(root, "seed", 0, INT64_MAX, &i, e)) < 0)
        return -1;
    if (rc)
        c->has_seed = 1, c->seed = (uint64_t)i;
    if ((rc = get_int(root, "n", 1, INT32_MAX, &i, e)) < 0)
        return -1;
    if (rc && i != 1)
        return openai_error_set(e, 400, INVALID, "unsupported_value", "n",
                                "n is %lld: only one choice per request is supported: send n = 1 or nothing",
                                (long long)i);
    /* max_completion_tokens is OpenAI's newer name; it wins over max_tokens. */
    uint32_t cap = lim->max_tokens ? lim->max_tokens : UINT32_MAX;
    const char *key = given(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((rc = get_int(root, key, 1, UINT32_MAX, &i, e)) < 0)
        return -1;
    if (rc && (uint64_t)i > cap)
        return openai_error_set(e, 400, INVALID, "invalid_value", key,
                                "%s is %lld: this gateway allows at most %u tokens per request", key, (long long)i,
                                cap);
    c->max_tokens = rc ? (uint32_t)i : lim->max_tokens;
    return 0;
}

static int read_stream(openai_request *r, json_t *root, openai_error *e)
{
    if (get_bool(root, "stream", &r->stream, e) < 0)
        return -1;
    json_t *so = given(root, "stream_options");
    if (!so)
        return 0;
    if (!json_is_object(so))
        return wrong_type(e, "stream_options", "an object", so);
    if (get_bool(so, "include_usage", &r->include_usage, e) < 0)
        return openai_error_set(e, 400, INVALID, "invalid_type", "stream_options.include_usage",
                                "stream_options.include_usage must be true or false");
    return 0;
}

int openai_request_from_json(openai_request *r, json_t *root, const openai_limits *lim, openai_error *e)
{
    memset(r, 0, sizeof *r);
    smq_chat_init(&r->chat);
    r->root = json_incref(root);
    if (!json_is_object(root))
        return openai_error_set(e, 400, INVALID, "invalid_type", NULL, "the body must be a JSON object, not %s",
                                json_kind(root));
    json_t *model = given(root, "model");
    if (model && str_check(model, "model", 1, SMQ_NAME_MAX, 1, &r->chat.model, e))
        return -1;
    if (check_unsupported(root, e) || read_messages(r, root, lim, e) || read_sampling(r, root, lim, e) ||
        read_stop(r, root, e) || read_thinking(r, root, e) || read_stream(r, root, e))
        return -1;
    return 0;
}

int openai_request_parse(openai_request *r, const char *body, size_t n, const openai_limits *lim, openai_error *e)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, n, OPENAI_JSON_FLAGS, &jerr);
    if (!root) {
        memset(r, 0, sizeof *r);
        smq_chat_init(&r->chat);
        openai_json_error(e, "the body", &jerr);
        return -1;
    }
    int rc = openai_request_from_json(r, root, lim, e);
    json_decref(root);
    return rc;
}

void openai_request_free(openai_request *r)
{
    free(r->chat.messages);
    r->chat.messages = NULL;
    for (size_t i = 0; i < r->n_joined; i++)
        free(r->joined[i]);
    free(r->joined);
    r->joined = NULL;
    r->n_joined = 0;
    json_decref(r->root);
    r->root = NULL;
}

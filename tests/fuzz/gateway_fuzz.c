/* gateway_fuzz.c - libFuzzer target: the gateway's request parsing, without
 * the event loop.
 *
 * The input is read twice:
 *   - as the bytes a client sends on one connection, fed to http_request in
 *     pieces whose sizes come from the input itself (so that every header
 *     and body split is tried), request after request (pipelining), under
 *     small limits. Each request either completes within the limits (its
 *     head and body no larger than allowed, every header value
 *     NUL-terminated, its path inside the URL) or fails with a 4xx/5xx
 *     status and a message; the body of each complete request is then read
 *     as a chat completions body too;
 *   - as a chat completions body (openai_request). It fails with a 4xx and
 *     a message in valid UTF-8, or gives a CHAT that the broker's own
 *     decoder takes: encoded with smq_chat_encode, smq_chat_decode must
 *     accept it and find the same messages, stop strings and limits; and
 *     each message's text, written back as the gateway writes text into
 *     its answers (json_put_str), must read (jansson) as the same bytes.
 * Seeds: tests/fuzz/corpus/gateway (raw HTTP requests and JSON bodies).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_request.h"
#include "openai_request.h"
#include "openai_response.h"
#include "proto.h"
#include "utf8.h"

static int same_str(smq_str a, smq_str b)
{
    return a.n == b.n && (a.n == 0 || !memcmp(a.p, b.p, a.n));
}

/* Text written as a JSON string by hand reads back as itself. */
static void check_written(smq_str s)
{
    sbuf b = { 0 };
    sbuf_putc(&b, '[');
    if (json_put_str(&b, s.p, s.n) || sbuf_putc(&b, ']'))
        abort();
    json_error_t jerr;
    json_t *a = json_loadb(b.data, b.len, JSON_ALLOW_NUL, &jerr), *v = json_array_get(a, 0);
    if (!json_is_string(v) || json_string_length(v) != s.n || (s.n && memcmp(json_string_value(v), s.p, s.n)))
        abort();
    json_decref(a);
    sbuf_free(&b);
}

static void check_body(const uint8_t *data, size_t size)
{
    static const openai_limits lim = { 64, 4096 };
    openai_request r;
    openai_error e;
    if (openai_request_parse(&r, (const char *)data, size, &lim, &e)) {
        if (e.status < 400 || e.status > 599 || !e.message[0] || !e.type ||
            !utf8_valid(e.message, strlen(e.message), 0) || !utf8_valid(e.param, strlen(e.param), 0))
            abort();
        openai_request_free(&r);
        return;
    }
    r.chat.id = (smq_str){ "fuzz", 4 };
    if (r.chat.n_messages == 0 || r.chat.n_messages > lim.max_messages || r.chat.max_tokens == 0 ||
        r.chat.max_tokens > lim.max_tokens)
        abort();
    smq_buf b = { 0 };
    smq_chat back;
    smq_err err;
    if (smq_chat_encode(&b, &r.chat) || smq_chat_decode(&back, b.data, b.len, &err))
        abort(); /* the broker would refuse what the gateway accepted */
    if (back.n_messages != r.chat.n_messages || back.n_stop != r.chat.n_stop || back.thinking != r.chat.thinking ||
        back.max_tokens != r.chat.max_tokens || !same_str(back.model, r.chat.model))
        abort();
    for (uint32_t i = 0; i < back.n_messages; i++) {
        if (!same_str(back.messages[i].role, r.chat.messages[i].role) ||
            !same_str(back.messages[i].content, r.chat.messages[i].content))
            abort();
        check_written(back.messages[i].content);
    }
    for (uint32_t i = 0; i < back.n_stop; i++)
        if (!same_str(back.stop[i], r.chat.stop[i]))
            abort();
    smq_chat_free(&back);
    smq_buf_free(&b);
    openai_request_free(&r);
}

static void check_request(const http_request *r)
{
    if (r->head_bytes > r->limits.header_max || r->body.len > r->limits.body_max)
        abort();
    if (r->status) {
        if (r->status < 400 || r->status > 505 || !r->error[0])
            abort();
        return;
    }
    size_t n;
    const char *path = http_request_path(r, &n);
    if (n == 0 || (r->path_len && (path < r->head.data || path + n > r->head.data + r->url_len)))
        abort();
    for (uint32_t i = 0; i < r->n_fields; i++) {
        const http_field *f = &r->fields[i];
        if (f->value && r->head.data[f->value + f->value_len] != 0)
            abort();
    }
}

static void check_http(const uint8_t *data, size_t size)
{
    static const http_limits lim = { 512, 2048 };
    http_request r;
    http_request_init(&r, &lim);
    size_t at = 0, step = 1;
    while (at < size) {
        /* Piece sizes from the bytes themselves: 1 to 64. */
        step = 1 + (data[at] + step) % 64;
        size_t piece = step < size - at ? step : size - at;
        size_t used = http_request_feed(&r, (const char *)data + at, piece);
        if (used > piece)
            abort();
        at += used;
        if (r.status) {
            check_request(&r);
            break;
        }
        if (r.complete) {
            check_request(&r);
            check_body((const uint8_t *)r.body.data, r.body.len);
            if (r.upgrade || !r.keep_alive)
                break;
            http_request_reset(&r);
        } else if (used < piece) {
            abort(); /* neither done nor failed, yet it left bytes */
        }
    }
    http_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_http(data, size);
    check_body(data, size);
    return 0;
}

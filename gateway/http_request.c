/* http_request.c - one HTTP/1.x request from a byte stream (http_request.h).
 *
 * http-parser calls back with the URL, header names and values in pieces
 * (a piece ends where a read ended), so they are appended to one buffer,
 * `head`: the URL, then each header's lower-cased name and its value, each
 * NUL-terminated, with offsets in `fields`. Limits are checked as bytes
 * arrive, so a client that sends 1 GB of headers costs header_max bytes.
 *
 * At the end of a message the parser is paused: http_parser_execute then
 * returns how many bytes it used, and the rest waits for the next request.
 */
#include "http_request.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Sets the request's status and error; returns -1 (a callback's "stop"). */
static int fail(http_request *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(http_request *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    r->status = status;
    return -1;
}

static http_request *req_of(http_parser *p)
{
    return p->data;
}

/* Appends to head, counting against the header limit. */
static int head_put(http_request *r, const char *at, size_t n)
{
    if (n > r->limits.header_max - r->head_bytes)
        return fail(r, 431, "the request line and headers exceed %zu bytes", r->limits.header_max);
    r->head_bytes += n;
    if (sbuf_append(&r->head, at, n))
        return fail(r, 500, "out of memory");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    req_of(p)->started = 1;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    http_request *r = req_of(p);
    if (head_put(r, at, n))
        return -1;
    r->url_len += (uint32_t)n;
    return 0;
}

/* Closes the previous value (or the URL) with a NUL before a new name. */
static int on_header_field(http_parser *p, const char *at, size_t n)
{
    http_request *r = req_of(p);
    if (r->in_value || r->n_fields == 0) {
        if (r->n_fields == HTTP_HEADERS_MAX)
            return fail(r, 431, "more than %d header fields", HTTP_HEADERS_MAX);
        if (head_put(r, "", 1))
            return -1;
        r->fields[r->n_fields++] = (http_field){ (uint32_t)r->head.len, 0, 0, 0 };
        r->in_value = 0;
    }
    size_t start = r->head.len;
    if (head_put(r, at, n))
        return -1;
    for (size_t i = start; i < r->head.len; i++)
        if (r->head.data[i] >= 'A' && r->head.data[i] <= 'Z')
            r->head.data[i] += 'a' - 'A';
    r->fields[r->n_fields - 1].name_len += (uint32_t)n;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    http_request *r = req_of(p);
    http_field *f = &r->fields[r->n_fields - 1];
    if (!r->in_value) {
        if (head_put(r, "", 1))
            return -1;
        f->value = (uint32_t)r->head.len;
        r->in_value = 1;
    }
    if (head_put(r, at, n))
        return -1;
    f->value_len += (uint32_t)n;
    return 0;
}

/* Splits the URL into path and query; an absolute-form URL
 * ("http://host/p") keeps only its path. */
static int split_url(http_request *r)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (r->url_len == 0 || http_parser_parse_url(r->head.data, r->url_len, 0, &u))
        return fail(r, 400, "the request target is not a valid URL");
    if (u.field_set & (1 << UF_PATH)) {
        r->path = u.field_data[UF_PATH].off;
        r->path_len = u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        r->query = u.field_data[UF_QUERY].off;
        r->query_len = u.field_data[UF_QUERY].len;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    http_request *r = req_of(p);
    if (head_put(r, "", 1)) /* the last value's NUL */
        return -1;
    r->headers_done = 1;
    r->method = p->method;
    r->keep_alive = http_should_keep_alive(p);
    r->upgrade = p->upgrade;
    if (p->http_major != 1)
        return fail(r, 505, "HTTP/%u.%u is not supported: speak HTTP/1.1", p->http_major, p->http_minor);
    if (split_url(r))
        return -1;
    if (r->method != HTTP_GET && r->method != HTTP_HEAD && r->method != HTTP_POST && r->method != HTTP_OPTIONS)
        return fail(r, 405, "method %s is not allowed: use GET, HEAD, POST or OPTIONS",
                    http_method_str((enum http_method)r->method));
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX && p->content_length > r->limits.body_max)
        return fail(r, 413, "the body has %llu bytes; this gateway takes at most %zu",
                    (unsigned long long)p->content_length, r->limits.body_max);
    size_t n;
    const char *expect = http_request_header(r, "expect", &n);
    if (expect) {
        if (strcasecmp(expect, "100-continue"))
            return fail(r, 417, "Expect: %.60s is not supported (only 100-continue)", expect);
        r->expect_continue = 1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    http_request *r = req_of(p);
    if (n > r->limits.body_max - r->body.len)
        return fail(r, 413, "the body exceeds %zu bytes, the most this gateway takes", r->limits.body_max);
    if (sbuf_append(&r->body, at, n))
        return fail(r, 500, "out of memory");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_request *r = req_of(p);
    r->complete = 1;
    r->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void http_request_init(http_request *r, const http_limits *limits)
{
    memset(r, 0, sizeof *r);
    r->limits = *limits;
    http_request_reset(r);
}

void http_request_reset(http_request *r)
{
    sbuf head = r->head, body = r->body;
    http_limits limits = r->limits;
    memset(r, 0, sizeof *r);
    r->head = head, r->body = body;
    r->head.len = r->body.len = 0;
    r->head.oom = r->body.oom = 0;
    r->limits = limits;
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
}

void http_request_free(http_request *r)
{
    sbuf_free(&r->head);
    sbuf_free(&r->body);
}

size_t http_request_feed(http_request *r, const char *data, size_t n)
{
    if (r->complete || r->status || n == 0)
        return 0;
    size_t used = http_parser_execute(&r->parser, &settings, data, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (r->complete) {
        /* Paused at the end of the message, or stopped before an upgraded
         * protocol's bytes: either way the rest is not ours. */
        return used;
    }
    if (e != HPE_OK && !r->status) {
        if (e == HPE_HEADER_OVERFLOW)
            fail(r, 431, "the request line and headers are too long");
        else
            fail(r, 400, "malformed HTTP request: %s", http_errno_description(e));
    }
    return used;
}

const char *http_request_header(const http_request *r, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (uint32_t i = 0; i < r->n_fields; i++) {
        const http_field *f = &r->fields[i];
        /* A value not yet begun (headers cut short) is not a value. */
        if (f->name_len == n && f->value && !memcmp(r->head.data + f->name, name, n)) {
            if (len)
                *len = f->value_len;
            return r->head.data + f->value;
        }
    }
    return NULL;
}

const char *http_request_path(const http_request *r, size_t *len)
{
    if (!r->headers_done || r->path_len == 0) {
        *len = 1;
        return "/";
    }
    *len = r->path_len;
    return r->head.data + r->path;
}

int http_request_has_token(const http_request *r, const char *name, const char *token)
{
    size_t n, tn = strlen(token);
    const char *v = http_request_header(r, name, &n);
    while (v && *v) {
        v += strspn(v, " \t,");
        size_t w = strcspn(v, " \t,");
        if (w == tn && !strncasecmp(v, token, tn))
            return 1;
        v += w;
    }
    return 0;
}

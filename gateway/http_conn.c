/* http_conn.c - a client connection (http_conn.h).
 *
 * Bytes are read into the gateway's one read buffer and appended to the
 * connection's `in`, and parsed from there while the connection is
 * READING: a request may arrive in many reads, and several requests in
 * one (pipelining). A complete request goes to routes_dispatch(); when its
 * response is out, parsing resumes on the next turn of the loop (never
 * inside the handler that just answered, which is still on the stack).
 */
#include "http_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "openai_response.h"
#include "routes.h"
#include "ws.h"

#define LINGER_MS   2000
#define BACKLOG_MAX (16u << 20) /* written, not yet taken by a client: more and it is too slow */
#define PENDING_MAX (64u << 10) /* pipelined bytes kept while a request is handled */

/* On every response: the web chat's policy, and no sniffing or referrers. */
static const char security_headers[] =
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\n";

static void on_timeout(uv_timer_t *t);
static void pump(conn *c);

static void arm(conn *c, int why, uint64_t ms)
{
    c->timer_why = why;
    uv_timer_start(&c->timer, on_timeout, ms, 0);
}

/* ---- lifetime ---- */

void conn_ref(conn *c)
{
    c->refs++;
}

void conn_unref(conn *c)
{
    if (--c->refs > 0)
        return;
    http_request_free(&c->req);
    sbuf_free(&c->in);
    sbuf_free(&c->out);
    free(c);
}

static void on_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void flush(conn *c);

void conn_close(conn *c)
{
    if (c->state == C_CLOSED)
        return;
    flush(c); /* what was queued before the close goes first, as if written */
    if (c->state == C_CLOSED)
        return; /* the write failed, and closed it */
    c->state = C_CLOSED;
    if (c->chat)
        chat_http_abandon(c);
    if (c->ws)
        ws_close(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->gw->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->gw->metrics.connections--;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    uv_close((uv_handle_t *)&c->timer, on_closed);
}

/* ---- writing ---- */

typedef struct wbuf {
    uv_write_t req;
    char data[];
} wbuf;

static void on_write(uv_write_t *w, int status)
{
    conn *c = w->handle->data;
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        conn_close(c); /* the client is gone (EPIPE, ECONNRESET) */
}

static void write_now(conn *c, const void *data, size_t len)
{
    if (c->tcp.write_queue_size > BACKLOG_MAX) {
        gw_log("a client reads too slowly (%zu bytes unread): closing its connection", c->tcp.write_queue_size);
        conn_close(c);
        return;
    }
    wbuf *w = malloc(sizeof *w + len);
    if (!w) {
        conn_close(c);
        return;
    }
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write)) {
        free(w);
        conn_close(c);
    }
}

/* Streamed output is queued and written once per turn of the loop: all
 * the tokens one wake-up brings from the broker go out in one write a
 * connection. A write a token was half the gateway's CPU at 8 streams
 * (bench/broker_bench.c, docs/BENCHMARKS.md). The loop writes the queues
 * after its I/O callbacks and before it waits, so nothing queued waits for
 * an event, and a lone token goes out in the turn it came. */
void conn_queue(conn *c, const void *data, size_t len)
{
    if (c->state == C_CLOSED || len == 0)
        return;
    if (sbuf_append(&c->out, data, len)) {
        conn_close(c);
        return;
    }
    if (!c->flush_listed) {
        c->flush_listed = 1;
        c->flush_next = c->gw->to_flush;
        c->gw->to_flush = c;
        conn_ref(c);
    }
}

static void flush(conn *c)
{
    size_t len = c->out.len;
    if (len == 0 || c->state == C_CLOSED)
        return;
    c->out.len = 0; /* before the write: a failed one closes, which flushes */
    write_now(c, c->out.data, len);
}

void conn_write(conn *c, const void *data, size_t len)
{
    if (c->state == C_CLOSED || len == 0)
        return;
    if (c->out.len == 0) {
        write_now(c, data, len);
        return;
    }
    conn_queue(c, data, len);
    flush(c);
}

void conn_flush_all(gateway *gw)
{
    while (gw->to_flush) {
        conn *c = gw->to_flush;
        gw->to_flush = c->flush_next;
        c->flush_listed = 0;
        flush(c);
        conn_unref(c);
    }
}

size_t conn_backlog(const conn *c)
{
    return c->tcp.write_queue_size + c->out.len;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    /* One buffer for every connection: on_read copies out what it keeps
     * before the next read can happen. */
    static char shared[64 << 10];
    (void)h, (void)suggested;
    *buf = uv_buf_init(shared, sizeof shared);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void start_reading(conn *c)
{
    if (!c->reading && c->state != C_CLOSED && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
}

static void stop_reading(conn *c)
{
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* The client hung up (or the connection broke): whatever it asked
         * for is no longer wanted, a chat in progress included. */
        conn_close(c);
        return;
    }
    switch (c->state) {
    case C_WS:
        ws_feed(c, buf->base, (size_t)nread);
        break;
    case C_READING:
    case C_BUSY:
        if (sbuf_append(&c->in, buf->base, (size_t)nread)) {
            conn_close(c);
            break;
        }
        if (c->state == C_READING)
            pump(c);
        else if (c->in.len > PENDING_MAX)
            stop_reading(c); /* enough queued; the client hears of it when this response ends */
        break;
    default: /* LINGER: dropped */
        break;
    }
}

/* ---- responses ---- */

static void linger(conn *c);

/* The response is out: the next request, or the end of the connection. */
static void response_done(conn *c)
{
    metrics_request(&c->gw->metrics, c->route, c->status);
    if (c->gw->cfg.verbose) {
        size_t n;
        const char *path = http_request_path(&c->req, &n);
        gw_log("%s %.*s %d (%.0f ms)", http_method_str((enum http_method)c->req.method), (int)(n > 200 ? 200 : n), path,
               c->status, (double)(uv_now(c->gw->loop) - c->started));
    }
    c->streaming = c->chunked = 0;
    if (!c->keep_alive || c->gw->draining) {
        linger(c);
        return;
    }
    http_request_reset(&c->req);
    c->continue_sent = 0;
    c->cors[0] = 0;
    c->state = C_READING;
    start_reading(c);
    /* Resume parsing on the next turn of the loop. */
    arm(c, T_RESUME, 0);
}

static void put_head(conn *c, sbuf *b, int status, const char *type, const char *length, const char *headers)
{
    char line[512];
    c->status = status;
    snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: smolmq-gateway\r\n", status,
             http_status_str((enum http_status)status), gateway_date(c->gw));
    sbuf_puts(b, line);
    if (type) {
        snprintf(line, sizeof line, "Content-Type: %s\r\n", type);
        sbuf_puts(b, line);
    }
    sbuf_puts(b, length);
    if (!c->keep_alive)
        sbuf_puts(b, "Connection: close\r\n");
    else if (c->req.parser.http_minor == 0)
        sbuf_puts(b, "Connection: keep-alive\r\n");
    sbuf_puts(b, security_headers);
    if (c->cors[0]) {
        snprintf(line, sizeof line,
                 "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\nAccess-Control-Expose-Headers: Retry-After\r\n",
                 c->cors);
        sbuf_puts(b, line);
    }
    if (headers)
        sbuf_puts(b, headers);
    sbuf_puts(b, "\r\n");
}

void conn_respond(conn *c, int status, const char *content_type, const char *headers, const void *body, size_t len)
{
    if (c->state != C_BUSY)
        return;
    sbuf b = { 0 };
    char length[64] = "";
    int no_body = status == 204 || status == 304;
    if (!no_body)
        snprintf(length, sizeof length, "Content-Length: %zu\r\n", len);
    put_head(c, &b, status, no_body ? NULL : content_type, length, headers);
    if (!c->head_only && !no_body)
        sbuf_append(&b, body, len);
    if (b.oom)
        conn_close(c);
    else
        conn_write(c, b.data, b.len);
    sbuf_free(&b);
    if (c->state == C_BUSY)
        response_done(c);
}

void conn_respond_error(conn *c, const openai_error *e)
{
    sbuf body = { 0 };
    char headers[200] = "";
    if (e->retry_after > 0)
        snprintf(headers, sizeof headers, "Retry-After: %d\r\n", e->retry_after);
    else if (e->status == 401)
        snprintf(headers, sizeof headers, "WWW-Authenticate: Bearer\r\n");
    else if (e->status == 405)
        snprintf(headers, sizeof headers, "Allow: GET, HEAD, POST, OPTIONS\r\n");
    if (e->status == 408 || e->status == 413 || e->status == 431)
        c->keep_alive = 0; /* a request cut short leaves the stream unreadable */
    if (openai_error_json(e, &body) == 0)
        sbuf_putc(&body, '\n');
    conn_respond(c, e->status, "application/json", headers, body.data, body.len);
    sbuf_free(&body);
}

void conn_stream_start(conn *c, int status, const char *content_type, const char *headers)
{
    if (c->state != C_BUSY)
        return;
    sbuf b = { 0 };
    c->chunked = c->req.parser.http_minor >= 1;
    if (!c->chunked)
        c->keep_alive = 0; /* HTTP/1.0: the body ends with the connection */
    put_head(c, &b, status, content_type, c->chunked ? "Transfer-Encoding: chunked\r\n" : "", headers);
    c->streaming = 1;
    /* Queued: it goes out with the first chunks, in one write. */
    conn_queue(c, b.data, b.len);
    sbuf_free(&b);
}

void conn_stream_write(conn *c, const void *data, size_t len)
{
    if (c->state != C_BUSY || !c->streaming || len == 0)
        return;
    if (c->chunked) {
        char size[24];
        conn_queue(c, size, (size_t)snprintf(size, sizeof size, "%zx\r\n", len));
    }
    conn_queue(c, data, len);
    if (c->chunked)
        conn_queue(c, "\r\n", 2);
}

void conn_stream_end(conn *c)
{
    if (c->state != C_BUSY || !c->streaming)
        return;
    if (c->chunked)
        conn_write(c, "0\r\n\r\n", 5);
    if (c->state == C_BUSY)
        response_done(c);
}

void conn_upgrade(conn *c, const char *head)
{
    if (c->state != C_BUSY)
        return;
    c->status = 101;
    conn_write(c, head, strlen(head));
    metrics_request(&c->gw->metrics, ROUTE_WS, 101);
    if (c->gw->cfg.verbose)
        gw_log("GET /v1/ws 101: a WebSocket");
    if (c->state != C_BUSY)
        return;
    c->state = C_WS;
    start_reading(c);
    size_t n = c->in.len;
    c->in.len = 0;
    if (n)
        ws_feed(c, c->in.data, n);
}

void conn_close_after(conn *c, uint64_t ms)
{
    if (c->state == C_CLOSED)
        return;
    if (ms)
        arm(c, T_LINGER, ms);
    else
        uv_timer_stop(&c->timer);
}

/* ---- requests ---- */

static void dispatch(conn *c)
{
    uv_timer_stop(&c->timer);
    c->state = C_BUSY;
    c->started = uv_now(c->gw->loop);
    c->status = 0;
    c->route = ROUTE_OTHER;
    c->head_only = c->req.method == HTTP_HEAD;
    c->keep_alive = c->req.keep_alive && !c->gw->draining;
    routes_dispatch(c);
}

/* A request that broke HTTP or a limit: answered, then the connection
 * closes (the stream cannot be trusted past it). */
static void refuse(conn *c, int status, const char *code, const char *why)
{
    openai_error e;
    openai_error_set(&e, status, "invalid_request_error", code, NULL, "%s", why);
    c->state = C_BUSY;
    c->started = uv_now(c->gw->loop);
    c->route = ROUTE_OTHER;
    c->head_only = 0;
    c->keep_alive = 0;
    conn_respond_error(c, &e);
}

static const char *refusal_code(int status)
{
    switch (status) {
    case 405:
        return "method_not_allowed";
    case 413:
        return "request_too_large";
    case 417:
        return "expectation_failed";
    case 431:
        return "headers_too_large";
    case 505:
        return "http_version_not_supported";
    default:
        return "invalid_http";
    }
}

static void pump(conn *c)
{
    while (c->state == C_READING && c->in.len > 0) {
        int was_started = c->req.started;
        size_t used = http_request_feed(&c->req, c->in.data, c->in.len);
        memmove(c->in.data, c->in.data + used, c->in.len - used);
        c->in.len -= used;
        if (!was_started && c->req.started) /* the request timeout runs from its first byte */
            arm(c, T_REQUEST, (uint64_t)c->gw->cfg.request_timeout_ms);
        if (c->req.status) {
            refuse(c, c->req.status, refusal_code(c->req.status), c->req.error);
            return;
        }
        if (c->req.headers_done && c->req.expect_continue && !c->continue_sent && !c->req.complete) {
            c->continue_sent = 1;
            conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
        if (!c->req.complete)
            return; /* all of `in` was taken: wait for more */
        dispatch(c);
    }
}

static void on_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    switch (c->timer_why) {
    case T_RESUME: /* after a response: parse what was pipelined */
        arm(c, T_IDLE, (uint64_t)c->gw->cfg.idle_timeout_ms);
        pump(c);
        break;
    case T_REQUEST:
        if (c->state == C_READING) {
            char why[160];
            snprintf(why, sizeof why,
                     "the request was not complete within %d ms: send the headers and the body at once",
                     c->gw->cfg.request_timeout_ms);
            refuse(c, 408, "request_timeout", why);
        }
        break;
    default: /* idle for too long, or lingered long enough */
        conn_close(c);
        break;
    }
}

/* ---- the end of a connection ---- */

static void on_shutdown(uv_shutdown_t *r, int status)
{
    conn *c = r->handle->data;
    if (status == UV_ECANCELED)
        return;
    if (status < 0)
        conn_close(c);
    else /* the response is all out: a moment for the client to close first */
        arm(c, T_LINGER, LINGER_MS);
}

/* The shutdown completes when the kernel took the last byte: a client that
 * does not read gets the idle timeout to change its mind. */
static void linger(conn *c)
{
    flush(c); /* the shutdown comes after the last queued byte */
    if (c->state == C_CLOSED)
        return;
    c->state = C_LINGER;
    start_reading(c);
    arm(c, T_LINGER, (uint64_t)c->gw->cfg.idle_timeout_ms);
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown))
        conn_close(c);
}

void conn_accept(uv_stream_t *server)
{
    gateway *gw = server->data;
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return; /* stays in the backlog until memory frees up */
    c->gw = gw;
    c->refs = 1;
    uv_tcp_init(gw->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return;
    }
    uv_timer_init(gw->loop, &c->timer);
    c->timer.data = c;
    c->refs = 2;
    c->next = gw->conns;
    if (gw->conns)
        gw->conns->prev = c;
    gw->conns = c;
    gw->metrics.connections++;
    http_limits lim = { gw->cfg.max_header, gw->cfg.max_body };
    http_request_init(&c->req, &lim);
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = C_READING;
    start_reading(c);
    if (gw->metrics.connections > gw->cfg.max_connections) {
        refuse(c, 503, "too_many_connections", "this gateway holds as many connections as it may: retry later");
        return;
    }
    arm(c, T_IDLE, (uint64_t)gw->cfg.idle_timeout_ms);
}

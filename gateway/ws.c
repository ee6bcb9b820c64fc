/* ws.c - WebSocket sessions on /v1/ws (ws.h).
 *
 * wslay does the framing: masking, fragments, ping/pong, the close
 * handshake, protocol errors (close 1002) and the message size limit
 * (1009). Messages are checked here: binary ones are refused (1003), text
 * that is not UTF-8 closes the socket (1007), and JSON that is not a
 * message we know gets an {"type": "error", "id": null} reply and the
 * socket goes on.
 *
 * A write can close the connection (a client too slow to read), and the
 * close frees the session: so the session is freed only outside wslay's
 * calls and outside the chat callbacks (`depth` counts them; a close
 * inside one marks the session `dead`, and the outermost frees it).
 */
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "chat.h"
#include "openai_response.h"
#include "sha1.h"
#include "utf8.h"

#define WS_GUID       "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define CLIENT_ID_MAX 128
#define CLOSE_WAIT_MS 2000

typedef struct ws_session ws_session;

typedef struct ws_chat {
    ws_session *s;
    chat *ch;
    char id[CLIENT_ID_MAX + 1];
    struct ws_chat *next;
} ws_chat;

struct ws_session {
    conn *c; /* used only while !dead: its memory outlives the session's calls */
    wslay_event_context_ptr ctx;
    const char *in; /* what ws_feed is handing to wslay */
    size_t in_len;
    ws_chat *chats;
    int n_chats, depth, dead;
};

static void session_free(ws_session *s)
{
    wslay_event_context_free(s->ctx);
    free(s);
}

/* Leaves a call that may have closed the connection: 0 while it is open. */
static int leave(ws_session *s)
{
    if (--s->depth == 0 && s->dead) {
        session_free(s);
        return -1;
    }
    return s->dead ? -1 : 0;
}

/* Sends what wslay has queued; after both close frames, the end. */
static void flush(ws_session *s)
{
    s->depth++;
    if (wslay_event_send(s->ctx) < 0 && !s->dead)
        conn_close(s->c);
    if (!s->dead && !wslay_event_want_read(s->ctx) && !wslay_event_want_write(s->ctx))
        conn_close(s->c);
    leave(s);
}

/* A socket with no chat in progress closes after the idle timeout, as an
 * idle keep-alive connection does; its traffic (pings too) restarts it. */
static void watch_idle(ws_session *s)
{
    if (!s->dead && !wslay_event_get_close_sent(s->ctx))
        conn_close_after(s->c, s->n_chats ? 0 : (uint64_t)s->c->gw->cfg.idle_timeout_ms);
}

/* Queues b's bytes (a JSON object) as a text message, sends it, and frees b. */
static void send_text(ws_session *s, sbuf *b)
{
    if (!s->dead && !b->oom) {
        struct wslay_event_msg m = { WSLAY_TEXT_FRAME, (const uint8_t *)b->data, b->len };
        wslay_event_queue_msg(s->ctx, &m); /* copies the message */
        flush(s);
    }
    sbuf_free(b);
}

/* The same for json (its reference taken). */
static void send_json(ws_session *s, json_t *json)
{
    sbuf b = { 0 };
    if (s->dead) {
        json_decref(json);
        return;
    }
    if (json_put(json, &b)) {
        sbuf_free(&b);
        return;
    }
    send_text(s, &b);
}

/* Fails the connection with a close code and a reason (< 123 bytes). */
static void fail(ws_session *s, uint16_t code, const char *reason)
{
    wslay_event_queue_close(s->ctx, code, (const uint8_t *)reason, strlen(reason));
    wslay_event_shutdown_read(s->ctx);
    conn_close_after(s->c, CLOSE_WAIT_MS);
}

static json_t *id_json(const char *id)
{
    return id ? json_str(id) : json_null();
}

static void send_error(ws_session *s, const char *id, const openai_error *e)
{
    json_t *j = json_pack("{s:s, s:o, s:i, s:o}", "type", "error", "id", id_json(id), "status", e->status, "error",
                          openai_error_object(e));
    if (j && e->retry_after)
        json_object_set_new(j, "retry_after", json_pack("i", e->retry_after));
    send_json(s, j);
}

/* ---- chats ---- */

static void chat_remove(ws_chat *wc)
{
    ws_session *s = wc->s;
    for (ws_chat **p = &s->chats; *p; p = &(*p)->next)
        if (*p == wc) {
            *p = wc->next;
            s->n_chats--;
            break;
        }
    free(wc);
    watch_idle(s);
}

/* {"type":"delta","id":ID,FIELD:TEXT}, written by hand as the SSE chunks
 * are (json_put_str): one a token. */
static void send_delta(ws_session *s, const char *id, const char *field, smq_str text)
{
    sbuf b = { 0 };
    sbuf_puts(&b, "{\"type\":\"delta\",\"id\":");
    json_put_str(&b, id, strlen(id));
    sbuf_putc(&b, ',');
    json_put_str(&b, field, strlen(field));
    sbuf_putc(&b, ':');
    json_put_str(&b, text.p, text.n);
    sbuf_putc(&b, '}');
    send_text(s, &b);
}

static void ws_on_delta(void *ctx, chat *ch, smq_str reasoning, smq_str content)
{
    (void)ch;
    ws_chat *wc = ctx;
    ws_session *s = wc->s;
    s->depth++;
    if (reasoning.p)
        send_delta(s, wc->id, "reasoning", reasoning);
    if (content.p && !s->dead)
        send_delta(s, wc->id, "content", content);
    leave(s);
}

static void ws_on_done(void *ctx, chat *ch, const smq_done *d)
{
    ws_chat *wc = ctx;
    ws_session *s = wc->s;
    const smq_timings *t = &d->timings;
    json_t *timings = json_pack("{s:f, s:f, s:f, s:f}", "queue_ms", t->queue_ms, "ttft_ms", t->ttft_ms, "total_ms",
                                t->total_ms, "decode_tps", t->decode_tps);
    s->depth++;
    send_json(s, json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "type", "done", "id", wc->id, "model",
                           chat_meta(ch)->model, "finish_reason", chat_finish_reason(d->finish), "usage",
                           openai_usage(&d->usage), "timings", timings));
    if (!s->dead) /* else ws_close freed it */
        chat_remove(wc);
    leave(s);
}

static void ws_on_error(void *ctx, chat *ch, const openai_error *e)
{
    (void)ch;
    ws_chat *wc = ctx;
    ws_session *s = wc->s;
    s->depth++;
    send_error(s, wc->id, e);
    if (!s->dead)
        chat_remove(wc);
    leave(s);
}

static const chat_sink ws_sink = { ws_on_delta, ws_on_done, ws_on_error };

static ws_chat *chat_find(ws_session *s, const char *id)
{
    for (ws_chat *wc = s->chats; wc; wc = wc->next)
        if (!strcmp(wc->id, id))
            return wc;
    return NULL;
}

static void start_chat(ws_session *s, json_t *msg, const char *id)
{
    gateway *gw = s->c->gw;
    openai_error e;
    if (chat_find(s, id)) {
        openai_error_set(&e, 400, "invalid_request_error", "duplicate_id", "id",
                         "a chat with id \"%s\" is in progress on this socket: use a new id", id);
        send_error(s, NULL, &e); /* not the open chat's end: no id */
        return;
    }
    if (s->n_chats >= gw->cfg.max_ws_chats) {
        openai_error_set(&e, 429, "rate_limit_error", "too_many_chats", NULL,
                         "%d chats are in progress on this socket, the most it may have: wait for one to end",
                         s->n_chats);
        send_error(s, id, &e);
        return;
    }
    openai_request r;
    if (openai_request_from_json(&r, msg, &gw->cfg.limits, &e)) {
        openai_request_free(&r);
        send_error(s, id, &e);
        return;
    }
    ws_chat *wc = calloc(1, sizeof *wc);
    if (!wc) {
        openai_request_free(&r);
        return;
    }
    wc->s = s;
    snprintf(wc->id, sizeof wc->id, "%s", id);
    wc->ch = chat_start(gw, &r, &ws_sink, wc, &e);
    openai_request_free(&r);
    if (!wc->ch) {
        free(wc);
        send_error(s, id, &e);
        return;
    }
    wc->next = s->chats;
    s->chats = wc;
    s->n_chats++;
}

/* One text message from the client. */
static void on_text(ws_session *s, const uint8_t *p, size_t n)
{
    openai_error e;
    json_error_t jerr;
    json_t *msg = json_loadb((const char *)p, n, OPENAI_JSON_FLAGS, &jerr);
    if (!msg) {
        openai_json_error(&e, "the message", &jerr);
        send_error(s, NULL, &e);
        return;
    }
    json_t *type = json_object_get(msg, "type"), *jid = json_object_get(msg, "id");
    const char *t = json_string_value(type);
    if (!json_is_object(msg) || !t || (strcmp(t, "chat") && strcmp(t, "cancel"))) {
        openai_error_set(&e, 400, "invalid_request_error", "invalid_type", "type",
                         "a message is an object whose \"type\" is \"chat\" or \"cancel\"");
        send_error(s, NULL, &e);
    } else if (!json_is_string(jid) || json_string_length(jid) == 0 || json_string_length(jid) > CLIENT_ID_MAX ||
               strlen(json_string_value(jid)) != json_string_length(jid)) {
        openai_error_set(&e, 400, "invalid_request_error", "invalid_value", "id",
                         "\"id\" must be a string of 1 to %d bytes that names the chat", CLIENT_ID_MAX);
        send_error(s, NULL, &e);
    } else if (!strcmp(t, "cancel")) {
        ws_chat *wc = chat_find(s, json_string_value(jid));
        if (wc)
            chat_cancel(wc->ch); /* it still ends with "done" (finish_reason "cancelled") */
    } else {
        start_chat(s, msg, json_string_value(jid));
    }
    json_decref(msg);
}

/* ---- wslay's callbacks ---- */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    ws_session *s = user;
    if (s->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < s->in_len ? len : s->in_len;
    memcpy(buf, s->in, n);
    s->in += n, s->in_len -= n;
    return (ssize_t)n;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
    (void)flags;
    ws_session *s = user;
    if (s->dead) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    conn_queue(s->c, data, len);
    return (ssize_t)len;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
    (void)ctx;
    ws_session *s = user;
    if (s->dead || wslay_is_ctrl_frame(arg->opcode))
        return; /* pings are answered, and closes echoed, by wslay */
    if (arg->opcode == WSLAY_BINARY_FRAME)
        fail(s, WSLAY_CODE_UNSUPPORTED_DATA, "binary messages are not supported: send JSON text");
    else if (!utf8_valid((const char *)arg->msg, arg->msg_length, 1))
        fail(s, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, "a text message is not valid UTF-8");
    else
        on_text(s, arg->msg, arg->msg_length);
}

static const struct wslay_event_callbacks callbacks = { on_recv, on_send, NULL, NULL, NULL, NULL, on_msg };

/* ---- the connection's side ---- */

void ws_feed(conn *c, const char *data, size_t n)
{
    ws_session *s = c->ws;
    if (!s)
        return;
    s->in = data, s->in_len = n;
    s->depth++;
    int rc = wslay_event_recv(s->ctx);
    s->in_len = 0;
    if (rc < 0 && !s->dead)
        conn_close(c);
    if (leave(s) == 0)
        flush(s);
    if (c->ws == s)
        watch_idle(s);
}

void ws_close(conn *c)
{
    ws_session *s = c->ws;
    c->ws = NULL;
    c->gw->metrics.ws_sessions--;
    s->dead = 1;
    while (s->chats) {
        ws_chat *wc = s->chats;
        s->chats = wc->next;
        chat_abandon(wc->ch);
        free(wc);
    }
    s->n_chats = 0;
    if (s->depth == 0)
        session_free(s);
}

/* Sec-WebSocket-Key: base64 of 16 bytes (24 characters, "==" at the end). */
static int key_ok(const char *k, size_t n)
{
    if (n != 24 || k[22] != '=' || k[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (!((k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') ||
              k[i] == '+' || k[i] == '/'))
            return 0;
    return 1;
}

static void base64(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = 0;
}

/* A browser's page from another site may open a WebSocket with the user's
 * network position: only our own pages (Origin's host is Host) and the
 * origins CORS allows may. */
static int origin_ok(conn *c)
{
    size_t on, hn;
    const char *origin = http_request_header(&c->req, "origin", &on);
    const char *host = http_request_header(&c->req, "host", &hn);
    if (!origin || c->cors[0])
        return 1;
    const char *p = strstr(origin, "://");
    return p && host && strlen(p + 3) == hn && !memcmp(p + 3, host, hn);
}

static void refuse(conn *c, int status, const char *code, const char *msg, const char *headers)
{
    openai_error e;
    openai_error_set(&e, status, "invalid_request_error", code, NULL, "%s", msg);
    if (headers) { /* 426 carries the version we speak */
        sbuf b = { 0 };
        openai_error_json(&e, &b);
        conn_respond(c, status, "application/json", headers, b.data, b.len);
        sbuf_free(&b);
        return;
    }
    conn_respond_error(c, &e);
}

/* The first entry of the request's Sec-WebSocket-Protocol list that is
 * name (exact) or starts with it (not exact), or NULL; *n: its bytes after
 * name. Subprotocol names are case-sensitive. */
static const char *offered_protocol(const http_request *r, const char *name, int exact, size_t *n)
{
    size_t pn = strlen(name);
    const char *v = http_request_header(r, "sec-websocket-protocol", NULL);
    while (v && *v) {
        v += strspn(v, " \t,");
        size_t w = strcspn(v, " \t,");
        if (w >= pn && !memcmp(v, name, pn) && (exact ? w == pn : w > pn)) {
            *n = w - pn;
            return v + pn;
        }
        v += w;
    }
    return NULL;
}

const char *ws_protocol_key(const http_request *r, size_t *n)
{
    return offered_protocol(r, WS_KEY_PROTOCOL, 0, n);
}

void ws_upgrade(conn *c)
{
    size_t kn, vn;
    const char *key = http_request_header(&c->req, "sec-websocket-key", &kn);
    const char *version = http_request_header(&c->req, "sec-websocket-version", &vn);
    if (!http_request_has_token(&c->req, "upgrade", "websocket") ||
        !http_request_has_token(&c->req, "connection", "upgrade")) {
        refuse(c, 426, "upgrade_required", "/v1/ws is a WebSocket: connect with a WebSocket client",
               "Upgrade: websocket\r\nConnection: Upgrade\r\n");
        return;
    }
    if (!version || strcmp(version, "13")) {
        refuse(c, 426, "unsupported_version", "only WebSocket version 13 is spoken", "Sec-WebSocket-Version: 13\r\n");
        return;
    }
    if (!key || !key_ok(key, kn)) {
        refuse(c, 400, "invalid_websocket_key", "Sec-WebSocket-Key must be 16 bytes in base64", NULL);
        return;
    }
    if (!origin_ok(c)) {
        refuse(c, 403, "origin_not_allowed",
               "this origin may not open the WebSocket: start the gateway with --cors-origin ORIGIN to allow it", NULL);
        return;
    }
    size_t pn;
    int smolmq = offered_protocol(&c->req, WS_PROTOCOL, 1, &pn) != NULL;
    if (!smolmq && ws_protocol_key(&c->req, &pn)) {
        refuse(c, 400, "unsupported_subprotocol",
               "a WebSocket that names its API key as the subprotocol " WS_KEY_PROTOCOL
               "KEY must also offer the subprotocol " WS_PROTOCOL " (the one the gateway selects)",
               NULL);
        return;
    }
    ws_session *s = calloc(1, sizeof *s);
    if (!s || wslay_event_context_server_init(&s->ctx, &callbacks, s)) {
        free(s);
        conn_close(c);
        return;
    }
    s->c = c;
    wslay_event_config_set_max_recv_msg_length(s->ctx, c->gw->cfg.max_body);
    uint8_t digest[SHA1_LEN];
    sha1_ctx h;
    sha1_init(&h);
    sha1_update(&h, key, kn);
    sha1_update(&h, WS_GUID, strlen(WS_GUID));
    sha1_final(&h, digest);
    char accept[32], head[300];
    base64(digest, SHA1_LEN, accept);
    snprintf(head, sizeof head,
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: %s\r\n%sServer: smolmq-gateway\r\n\r\n",
             accept, smolmq ? "Sec-WebSocket-Protocol: " WS_PROTOCOL "\r\n" : "");
    c->ws = s;
    c->gw->metrics.ws_sessions++;
    conn_upgrade(c, head);
    if (c->ws == s)
        watch_idle(s);
}

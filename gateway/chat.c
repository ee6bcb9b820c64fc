/* chat.c - a chat through the broker, and its HTTP face (chat.h).
 *
 * A sink's callback may close what it writes to (a write to a client that
 * is gone closes the connection, which abandons the chat), so the chat is
 * never freed under a callback: `busy` is set around each, and an abandon
 * that happens inside one only marks the chat `dead`; the core frees it
 * when the callback returns.
 */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct chat {
    gateway *gw;
    broker_req *req; /* NULL once its terminal frame came */
    const chat_sink *sink;
    void *ctx;
    int busy, dead, has_model;
    int asked_model; /* the request named its model (else the broker picks) */
    char id[96], model[SMQ_NAME_MAX + 1];
    openai_meta meta;
    uint64_t t0, t_last; /* ns */
    int seen_token;
    smq_error err; /* unknown_model, kept while STATS is asked */
    char err_text[400];
};

static int str_is(smq_str s, const char *lit)
{
    return s.n == strlen(lit) && !memcmp(s.p, lit, s.n);
}

const char *chat_finish_reason(smq_str finish)
{
    if (str_is(finish, "length") || str_is(finish, "context_full"))
        return "length";
    if (str_is(finish, "cancelled"))
        return "cancelled";
    return "stop";
}

const openai_meta *chat_meta(const chat *ch)
{
    return &ch->meta;
}

static void release(chat *ch)
{
    ch->gw->metrics.active_streams--;
    free(ch);
}

/* ---- the broker's errors, in OpenAI's terms ---- */

/* Whether one of the broker's workers serves model. */
static int serves(const smq_stats *s, const char *model)
{
    for (uint32_t i = 0; i < s->n_workers; i++)
        if (s->workers[i].model.n == strlen(model) && !memcmp(s->workers[i].model.p, model, s->workers[i].model.n))
            return 1;
    return 0;
}

/* The models the broker's workers serve: "a, b" (each once). */
static void model_list(const smq_stats *s, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    for (uint32_t i = 0; i < s->n_workers && o + 4 < cap; i++) {
        smq_str m = s->workers[i].model;
        int seen = 0;
        for (uint32_t j = 0; j < i && !seen; j++)
            seen = s->workers[j].model.n == m.n && !memcmp(s->workers[j].model.p, m.p, m.n);
        if (!seen)
            o += (size_t)snprintf(out + o, cap - o, "%s\"%.*s\"", o ? ", " : "", (int)m.n, m.p);
    }
}

static void map_error(const chat *ch, const smq_error *be, int local, const smq_stats *s, const char *why,
                      openai_error *e)
{
    const char *T = "server_error";
    int mn = (int)be->message.n;
    const char *m = be->message.p;
    smq_str c = be->code;
    if (str_is(c, SMQ_E_OVERLOADED)) {
        openai_error_set(e, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                         "the model's queue is full (the broker says: %.*s): retry after a second, or send fewer "
                         "requests at once",
                         mn, m);
        e->retry_after = 1;
    } else if (str_is(c, SMQ_E_UNKNOWN_MODEL) && s && s->n_workers && ch->asked_model && !serves(s, ch->model)) {
        char models[400];
        model_list(s, models, sizeof models);
        openai_error_set(e, 404, "invalid_request_error", "model_not_found", "model",
                         "the model \"%s\" is not served here: use one of %s, or leave model out", ch->model, models);
    } else if (str_is(c, SMQ_E_UNKNOWN_MODEL) && s && s->n_workers) {
        /* The broker had no worker for it when it answered, and has one
         * now: its workers are (re)registering, e.g. after it restarted. */
        openai_error_set(e, 503, T, "no_workers", NULL,
                         "no worker served %s%s%s when the request came (workers are registering with the broker): "
                         "retry",
                         ch->asked_model ? "\"" : "any model", ch->asked_model ? ch->model : "",
                         ch->asked_model ? "\"" : "");
        e->retry_after = 1;
    } else if (str_is(c, SMQ_E_UNKNOWN_MODEL)) {
        openai_error_set(e, 503, T, "no_workers", NULL,
                         "no worker serves any model yet (%s): retry once a worker has registered with the broker",
                         s ? "the broker has no workers" : why);
        e->retry_after = 2;
    } else if (str_is(c, SMQ_E_TIMEOUT)) {
        openai_error_set(e, 503, T, "queue_timeout", NULL,
                         "no worker took the request in time (the broker says: %.*s): retry later", mn, m);
        e->retry_after = 1;
    } else if (str_is(c, SMQ_E_SHUTTING_DOWN)) {
        openai_error_set(e, 503, T, "shutting_down", NULL, "the service is shutting down (%.*s): retry shortly", mn, m);
        e->retry_after = 2;
    } else if (str_is(c, SMQ_E_WORKER_LOST)) {
        openai_error_set(e, 503, T, "worker_lost", NULL, "the worker serving this request was lost (%.*s): retry", mn,
                         m);
        e->retry_after = 1;
    } else if (local && str_is(c, "broker_lost")) {
        openai_error_set(e, 503, T, "broker_unavailable", NULL,
                         "%.*s: the gateway lost the broker; retry shortly, and check the broker if it persists", mn,
                         m);
        e->retry_after = 2;
    } else if (str_is(c, SMQ_E_BAD_REQUEST)) {
        openai_error_set(e, 400, "invalid_request_error", "invalid_request", NULL, "the request was refused: %.*s", mn,
                         m);
    } else if (str_is(c, SMQ_E_PROMPT_TOO_LONG)) {
        openai_error_set(e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                         "%.*s: shorten the conversation (or the system prompt)", mn, m);
    } else if (str_is(c, SMQ_E_INTERNAL)) {
        openai_error_set(e, local ? 502 : 500, T, local ? "bad_gateway" : "internal_error", NULL,
                         "%s: %.*s; retry, and report it if it persists",
                         local ? "the broker's answer broke the protocol" : "the server failed", mn, m);
    } else {
        openai_error_set(e, 502, T, "upstream_error", NULL, "the broker answered %.*s: %.*s", (int)c.n, c.p, mn, m);
    }
}

/* ---- the core ---- */

/* Ends the chat with error e (the sink's last word). */
static void end_with_error(chat *ch, const openai_error *e)
{
    ch->gw->metrics.broker_errors++;
    if (ch->sink) {
        ch->busy = 1;
        ch->sink->on_error(ch->ctx, ch, e);
    }
    release(ch);
}

static void on_stats_for_error(void *ctx, const smq_stats *s, const char *why)
{
    chat *ch = ctx;
    openai_error e;
    map_error(ch, &ch->err, 0, s, why, &e);
    end_with_error(ch, &e);
}

static void on_token(chat *ch, const smq_token *t)
{
    uint64_t now = uv_hrtime();
    if (t->n_tokens) {
        if (!ch->seen_token)
            metrics_ttft(&ch->gw->metrics, (double)(now - ch->t0) / 1e9);
        else
            metrics_itl(&ch->gw->metrics, (double)(now - ch->t_last) / 1e9, t->n_tokens);
        ch->seen_token = 1;
        ch->t_last = now;
    }
    if (!ch->sink || (t->reasoning.n == 0 && t->content.n == 0))
        return;
    smq_str none = { NULL, 0 };
    ch->busy = 1;
    ch->sink->on_delta(ch->ctx, ch, t->reasoning.n ? t->reasoning : none, t->content.n ? t->content : none);
    ch->busy = 0;
    if (ch->dead)
        release(ch);
}

static void on_event(void *ctx, const broker_event *ev)
{
    chat *ch = ctx;
    gw_metrics *m = &ch->gw->metrics;
    const smq_stats *s = ch->has_model ? NULL : broker_link_last_stats(ch->gw->link);
    if (s && s->n_workers) {
        /* No model was asked for, and the broker's STATS came meanwhile:
         * they name the model that answers. */
        snprintf(ch->model, sizeof ch->model, "%.*s", (int)s->workers[0].model.n, s->workers[0].model.p);
        ch->has_model = 1;
    }
    if (ev->cmd == SMQ_CMD_TOKEN) {
        on_token(ch, ev->token);
    } else if (ev->cmd == SMQ_CMD_DONE) {
        ch->req = NULL;
        m->prompt_tokens += ev->done->usage.prompt_tokens;
        m->completion_tokens += ev->done->usage.completion_tokens;
        m->cached_tokens += ev->done->usage.cached_tokens;
        if (ch->sink) {
            ch->busy = 1;
            ch->sink->on_done(ch->ctx, ch, ev->done);
        }
        release(ch);
    } else {
        ch->req = NULL;
        const smq_error *be = ev->error;
        if (str_is(be->code, SMQ_E_UNKNOWN_MODEL) && ch->sink) {
            /* 404 or 503: that depends on whether the broker serves the
             * model, or any, which its STATS say; fresh ones, as cached
             * ones may be from before the broker restarted. */
            size_t n = be->message.n < sizeof ch->err_text ? be->message.n : sizeof ch->err_text - 1;
            memcpy(ch->err_text, be->message.p, n);
            ch->err = (smq_error){ { NULL, 0 }, 0, { SMQ_E_UNKNOWN_MODEL, 13 }, { ch->err_text, (uint32_t)n } };
            broker_link_stats(ch->gw->link, 0, on_stats_for_error, ch);
            return;
        }
        openai_error e;
        map_error(ch, be, ev->local, NULL, NULL, &e);
        end_with_error(ch, &e);
    }
}

static void on_stats_ignored(void *ctx, const smq_stats *s, const char *why)
{
    (void)ctx, (void)s, (void)why;
}

/* The model that answers, for the responses: the one asked for, else the
 * broker's only one (from its last STATS), else "default". */
static void pick_model(chat *ch, const openai_request *r)
{
    const smq_stats *s = broker_link_last_stats(ch->gw->link);
    smq_str m = r->chat.model;
    ch->asked_model = m.p != NULL;
    if (!m.p && s && s->n_workers)
        m = s->workers[0].model;
    ch->has_model = m.p != NULL;
    if (!ch->has_model) /* learn it, for the first frame or the next request */
        broker_link_stats(ch->gw->link, ch->gw->cfg.stats_cache_ms, on_stats_ignored, NULL);
    snprintf(ch->model, sizeof ch->model, "%.*s", m.p ? (int)m.n : 7, m.p ? m.p : "default");
}

chat *chat_start(gateway *gw, openai_request *r, const chat_sink *sink, void *ctx, openai_error *e)
{
    chat *ch = calloc(1, sizeof *ch);
    if (!ch) {
        openai_error_set(e, 503, "server_error", "out_of_memory", NULL, "the gateway is out of memory: retry later");
        return NULL;
    }
    ch->gw = gw;
    ch->sink = sink, ch->ctx = ctx;
    ch->t0 = uv_hrtime();
    pick_model(ch, r);
    smq_err err;
    if (!(ch->req = broker_link_chat(gw->link, &r->chat, on_event, ch, &err))) {
        free(ch);
        openai_error_set(e, 503, "server_error", "broker_unavailable", NULL, "%s: retry shortly", err.msg);
        e->retry_after = 1;
        return NULL;
    }
    snprintf(ch->id, sizeof ch->id, "chatcmpl-%s", broker_req_id(ch->req));
    ch->meta = (openai_meta){ ch->id, ch->model, (int64_t)time(NULL), r->stream && r->include_usage };
    gw->metrics.active_streams++;
    gw->metrics.chats_started++;
    return ch;
}

void chat_cancel(chat *ch)
{
    if (ch->req)
        broker_link_cancel(ch->gw->link, ch->req);
}

void chat_abandon(chat *ch)
{
    ch->sink = NULL;
    if (ch->req) {
        ch->gw->metrics.chats_cancelled++;
        broker_link_forget(ch->gw->link, ch->req);
        ch->req = NULL;
        if (ch->busy)
            ch->dead = 1;
        else
            release(ch);
    }
    /* else: inside the terminal callback, or waiting for STATS; whoever
     * holds it frees it */
}

/* ---- HTTP: POST /v1/chat/completions ---- */

typedef struct http_chat {
    conn *c;
    chat *ch;
    int stream, include_usage, started;
    sbuf content, reasoning; /* collected for a non-streamed answer */
} http_chat;

static void http_chat_free(http_chat *h)
{
    if (h->c->chat == h)
        h->c->chat = NULL;
    sbuf_free(&h->content);
    sbuf_free(&h->reasoning);
    free(h);
}

/* Writes one SSE event; 0 while the connection still carries this chat. */
static int sse(http_chat *h, sbuf *ev)
{
    conn *c = h->c;
    if (ev->oom)
        conn_close(c);
    else
        conn_stream_write(c, ev->data, ev->len);
    sbuf_free(ev);
    return c->chat == h ? 0 : -1;
}

/* The headers and the role chunk, at the first frame: until then an error
 * can still be an HTTP status (429, 503...). */
static int sse_start(http_chat *h, chat *ch)
{
    if (h->started)
        return 0;
    h->started = 1;
    conn_stream_start(h->c, 200, "text/event-stream; charset=utf-8",
                      "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    if (h->c->chat != h)
        return -1;
    sbuf ev = { 0 };
    smq_str empty = { "", 0 }, none = { NULL, 0 };
    openai_chunk_event(chat_meta(ch), "assistant", none, empty, NULL, &ev);
    return sse(h, &ev);
}

static void http_on_delta(void *ctx, chat *ch, smq_str reasoning, smq_str content)
{
    http_chat *h = ctx;
    if (!h->stream) {
        if (reasoning.p)
            sbuf_append(&h->reasoning, reasoning.p, reasoning.n);
        if (content.p)
            sbuf_append(&h->content, content.p, content.n);
        return;
    }
    smq_str none = { NULL, 0 };
    sbuf ev = { 0 };
    if (sse_start(h, ch))
        return;
    if (reasoning.p) {
        openai_chunk_event(chat_meta(ch), NULL, reasoning, none, NULL, &ev);
        if (sse(h, &ev))
            return;
    }
    if (content.p) {
        openai_chunk_event(chat_meta(ch), NULL, none, content, NULL, &ev);
        sse(h, &ev);
    }
}

static void http_on_done(void *ctx, chat *ch, const smq_done *d)
{
    http_chat *h = ctx;
    conn *c = h->c;
    const char *finish = chat_finish_reason(d->finish);
    if (!strcmp(finish, "cancelled"))
        finish = "stop"; /* not one of OpenAI's; only someone else's CANCEL gets here */
    sbuf out = { 0 };
    if (!h->stream) {
        smq_str content = { h->content.data ? h->content.data : "", (uint32_t)h->content.len };
        smq_str reasoning = { h->reasoning.data, (uint32_t)h->reasoning.len };
        if (h->content.oom || h->reasoning.oom ||
            openai_completion_json(chat_meta(ch), content, reasoning, finish, &d->usage, &out))
            conn_close(c);
        else
            conn_respond(c, 200, "application/json", NULL, out.data, out.len);
        sbuf_free(&out);
        http_chat_free(h);
        return;
    }
    smq_str none = { NULL, 0 };
    if (sse_start(h, ch))
        return;
    openai_chunk_event(chat_meta(ch), NULL, none, none, finish, &out);
    if (h->include_usage)
        openai_usage_event(chat_meta(ch), &d->usage, &out);
    sbuf_puts(&out, "data: [DONE]\n\n");
    if (sse(h, &out))
        return;
    conn_stream_end(c);
    http_chat_free(h);
}

static void http_on_error(void *ctx, chat *ch, const openai_error *e)
{
    (void)ch;
    http_chat *h = ctx;
    conn *c = h->c;
    if (!h->started) {
        conn_respond_error(c, e);
    } else {
        /* The status line went out with the headers: the error becomes an
         * event, and the stream ends. */
        sbuf ev = { 0 };
        openai_error_event(e, &ev);
        if (sse(h, &ev))
            return;
        conn_stream_end(c);
    }
    http_chat_free(h);
}

static const chat_sink http_sink = { http_on_delta, http_on_done, http_on_error };

void chat_http_start(conn *c)
{
    gateway *gw = c->gw;
    openai_request r;
    openai_error e;
    if (c->req.body.len == 0) {
        openai_error_set(&e, 400, "invalid_request_error", "invalid_json", NULL,
                         "the body is empty: send a JSON object with \"messages\"");
        conn_respond_error(c, &e);
        return;
    }
    if (openai_request_parse(&r, c->req.body.data, c->req.body.len, &gw->cfg.limits, &e)) {
        openai_request_free(&r);
        conn_respond_error(c, &e);
        return;
    }
    http_chat *h = calloc(1, sizeof *h);
    if (!h) {
        openai_request_free(&r);
        conn_close(c);
        return;
    }
    h->c = c;
    h->stream = r.stream;
    h->include_usage = r.include_usage;
    c->chat = h;
    h->ch = chat_start(gw, &r, &http_sink, h, &e);
    openai_request_free(&r);
    if (!h->ch) {
        http_chat_free(h);
        conn_respond_error(c, &e);
        return;
    }
}

void chat_http_abandon(conn *c)
{
    http_chat *h = c->chat;
    c->chat = NULL;
    chat_abandon(h->ch);
    sbuf_free(&h->content);
    sbuf_free(&h->reasoning);
    free(h);
}

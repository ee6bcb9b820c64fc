/* client.c - smq_client: the C client of SMQ/1 on libzmq (client.h).
 *
 * The client is a small state machine around one DEALER socket: a table of
 * open requests (id and the seq expected next), the time the broker was
 * last heard and the interval it announced, and the message the last event
 * was decoded from (events point into it, so it lives until the next call).
 * Frames that arrive while smq_client_stats waits for its reply are queued,
 * in order, for smq_client_next (the broker's HEARTBEATs excepted: they are
 * answered at once).
 */
#include "client.h"
#include "curve_cert.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define SMQ_E_BROKER_LOST "broker_lost"
#define FRAMES_MAX        4  /* a client-hop message has 3; one more is kept to say "too many" */
#define ECHO_GAP_MS       50 /* a broker HEARTBEAT is answered unless we sent one this recently */

/* One received message, kept while what was decoded from it is in use. */
typedef struct smq_msg {
    zmq_msg_t f[FRAMES_MAX];
    size_t n, n_all; /* frames kept, frames received */
    struct smq_msg *next;
} smq_msg;

typedef struct open_req {
    char id[SMQ_ID_MAX];
    uint32_t id_len;
    uint64_t next_seq;
} open_req;

struct smq_client {
    void *ctx, *sock;
    int hb_ms, liveness;
    uint32_t broker_hb_ms; /* the broker's interval, from its HEARTBEAT; 0: not said yet */
    open_req *open;
    size_t n_open, cap_open;
    int64_t last_heard, next_hb, last_hb; /* ms on the monotonic clock; last_hb: our last HEARTBEAT */
    int lost;                             /* the broker is gone: open requests are being ended */
    smq_msg *cur;                         /* the message the last event points into */
    smq_token tok;                        /* the last TOKEN's decoded ids */
    smq_msg *stash, *stash_tail;          /* arrived while waiting for STATS */
    smq_buf out;
    char local_id[SMQ_ID_MAX], local_msg[200]; /* a local error's text */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void msg_free(smq_msg **m)
{
    if (!*m)
        return;
    for (size_t i = 0; i < (*m)->n; i++)
        zmq_msg_close(&(*m)->f[i]);
    free(*m);
    *m = NULL;
}

/* ---- sending ---- */

/* Sends header, command, body; never blocks (a full queue is an error). */
static int send_body(smq_client *c, smq_cmd cmd, const void *body, size_t len, smq_err *err)
{
    const char *name = smq_cmd_name(cmd);
    if (zmq_send(c->sock, SMQ_HEADER, SMQ_HEADER_LEN, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return smq_err_set(err, "cannot send %s to the broker: %s", name,
                           errno == EAGAIN ? "its queue is full" : zmq_strerror(errno));
    /* Once the first frame is queued, ZeroMQ takes the rest of the message. */
    zmq_send(c->sock, name, strlen(name), ZMQ_SNDMORE);
    zmq_send(c->sock, body, len, 0);
    return 0;
}

static int send_empty(smq_client *c, smq_cmd cmd, smq_err *err)
{
    return send_body(c, cmd, "\x80", 1, err);
}

static void send_heartbeat(smq_client *c, int64_t now)
{
    send_empty(c, SMQ_CMD_HEARTBEAT, NULL);
    c->last_hb = now;
    c->next_hb = now + c->hb_ms;
}

/* An ERROR about no request, to the broker (never in answer to an ERROR). */
static void send_error(smq_client *c, const char *code, const char *message)
{
    smq_error e = { { NULL, 0 }, 0, { code, (uint32_t)strlen(code) }, { message, (uint32_t)strlen(message) } };
    smq_buf_reset(&c->out);
    if (smq_error_encode(&c->out, &e) == 0)
        send_body(c, SMQ_CMD_ERROR, c->out.data, c->out.len, NULL);
}

/* How long the broker may say nothing: liveness x the larger of our
 * interval and the one it announced (PROTOCOL.md §6). */
static int64_t silence_ms(const smq_client *c)
{
    int64_t iv = c->hb_ms > (int64_t)c->broker_hb_ms ? c->hb_ms : (int64_t)c->broker_hb_ms;
    return (int64_t)c->liveness * iv;
}

/* ---- the open requests ---- */

static open_req *open_find(smq_client *c, const char *id, size_t len)
{
    for (size_t i = 0; i < c->n_open; i++)
        if (c->open[i].id_len == len && !memcmp(c->open[i].id, id, len))
            return &c->open[i];
    return NULL;
}

static void open_remove(smq_client *c, open_req *r)
{
    *r = c->open[--c->n_open];
}

/* ---- lifecycle ---- */

smq_client *smq_client_new(const char *endpoint, const smq_client_opts *opts, smq_err *err)
{
    smq_client *c = calloc(1, sizeof *c);
    if (!c) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    c->hb_ms = opts && opts->heartbeat_ms > 0 ? opts->heartbeat_ms : SMQ_HEARTBEAT_MS;
    c->liveness = opts && opts->liveness > 0 ? opts->liveness : SMQ_LIVENESS;
    int linger = 0;
    int rc = -1;
    if (!(c->ctx = zmq_ctx_new()) || !(c->sock = zmq_socket(c->ctx, ZMQ_DEALER))) {
        smq_err_set(err, "cannot make a ZeroMQ socket: %s", zmq_strerror(errno));
    } else if (zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger)) {
        smq_err_set(err, "ZMQ_LINGER: %s", zmq_strerror(errno));
    } else if (opts && opts->server_key) {
        rc = curve_client_apply(c->sock, opts->server_key, opts->public_key, opts->secret_key, "client", err);
    } else {
        rc = 0;
    }
    if (rc == 0 && zmq_connect(c->sock, endpoint))
        rc = smq_err_set(err, "%s: %s", endpoint, zmq_strerror(errno));
    if (rc) {
        smq_client_destroy(&c);
        return NULL;
    }
    return c;
}

void smq_client_destroy(smq_client **self)
{
    smq_client *c = *self;
    if (!c)
        return;
    msg_free(&c->cur);
    while (c->stash) {
        smq_msg *next = c->stash->next;
        msg_free(&c->stash);
        c->stash = next;
    }
    smq_token_free(&c->tok);
    smq_buf_free(&c->out);
    free(c->open);
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c);
    *self = NULL;
}

size_t smq_client_open(const smq_client *c)
{
    return c->n_open;
}

/* ---- requests ---- */

int smq_client_chat(smq_client *c, const smq_chat *req, smq_err *err)
{
    if (!req->id.p || req->id.n == 0 || req->id.n > SMQ_ID_MAX)
        return smq_err_set(err, "CHAT: the id must be 1-%d bytes", SMQ_ID_MAX);
    if (open_find(c, req->id.p, req->id.n))
        return smq_err_set(err, "CHAT: request \"%.*s\" is open already", (int)req->id.n, req->id.p);
    if (c->n_open == c->cap_open) {
        size_t cap = c->cap_open ? 2 * c->cap_open : 8;
        open_req *p = realloc(c->open, cap * sizeof *p);
        if (!p)
            return smq_err_set(err, "out of memory");
        c->open = p;
        c->cap_open = cap;
    }
    smq_buf_reset(&c->out);
    if (smq_chat_encode(&c->out, req))
        return smq_err_set(err, "out of memory");
    if (send_body(c, SMQ_CMD_CHAT, c->out.data, c->out.len, err))
        return -1;
    /* The broker heartbeats clients with open requests only: the silence
     * that counts starts now. */
    if (c->n_open == 0) {
        c->last_heard = c->last_hb = now_ms();
        c->next_hb = c->last_heard + c->hb_ms;
    }
    open_req *r = &c->open[c->n_open++];
    memcpy(r->id, req->id.p, req->id.n);
    r->id_len = req->id.n;
    r->next_seq = 0;
    return 0;
}

int smq_client_cancel(smq_client *c, const char *id, smq_err *err)
{
    if (!open_find(c, id, strlen(id)))
        return 0;
    smq_buf_reset(&c->out);
    if (smq_cancel_encode(&c->out, id, strlen(id)))
        return smq_err_set(err, "out of memory");
    return send_body(c, SMQ_CMD_CANCEL, c->out.data, c->out.len, err);
}

/* ---- receiving ---- */

/* Receives every frame of the next message (one is waiting). */
static smq_msg *recv_msg(smq_client *c, smq_err *err)
{
    smq_msg *m = calloc(1, sizeof *m);
    if (!m) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, c->sock, m->n_all ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            if (errno == EAGAIN || errno == EINTR) {
                if (m->n_all == 0) { /* nothing there after all */
                    free(m);
                    return NULL;
                }
                continue;
            }
            smq_err_set(err, "receiving from the broker: %s", zmq_strerror(errno));
            msg_free(&m);
            return NULL;
        }
        more = zmq_msg_more(&part);
        if (m->n < FRAMES_MAX)
            m->f[m->n++] = part; /* a zmq_msg_t may be moved by copying its bytes */
        else
            zmq_msg_close(&part);
        m->n_all++;
    }
    c->last_heard = now_ms(); /* any frame is a sign of life */
    return m;
}

/* The frames of m as smq_head_parse reads them. With answer, a message
 * that cannot be read is answered with ERROR (PROTOCOL.md §2). */
static int parse_msg(smq_client *c, smq_msg *m, smq_head *h, int answer, smq_err *err)
{
    smq_frame f[FRAMES_MAX];
    for (size_t i = 0; i < m->n; i++)
        f[i] = (smq_frame){ zmq_msg_data(&m->f[i]), zmq_msg_size(&m->f[i]) };
    const char *code;
    if (smq_head_parse(f, m->n_all, SMQ_HOP_CLIENT, h, &code, err) == 0)
        return 0;
    /* Tell the broker what it sent wrong, unless that was an ERROR itself
     * (two peers must not answer each other's errors for ever). */
    if (answer && (m->n < 2 || zmq_msg_size(&m->f[1]) != 5 || memcmp(zmq_msg_data(&m->f[1]), "ERROR", 5)))
        send_error(c, code, err->msg);
    return -1;
}

/* The broker's HEARTBEAT: it may say the broker's interval, by which we
 * judge it; while requests are open it is answered, since the broker judges
 * us by its interval, which may be shorter than ours (PROTOCOL.md §6). A
 * body with a bad field says nothing (it was a sign of life all the same). */
static void on_heartbeat(smq_client *c, const smq_head *h)
{
    uint32_t ms;
    smq_err ignored;
    if (smq_broker_hb_decode(&ms, h->body, h->body_len, &ignored) == 0 && ms)
        c->broker_hb_ms = ms;
    int64_t now = now_ms();
    if (c->n_open && now - c->last_hb >= ECHO_GAP_MS)
        send_heartbeat(c, now);
}

/* A local terminal ERROR for request r, which it removes. */
static void local_error(smq_client *c, smq_client_event *ev, open_req *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void local_error(smq_client *c, smq_client_event *ev, open_req *r, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->local_msg, sizeof c->local_msg, fmt, ap);
    va_end(ap);
    memcpy(c->local_id, r->id, r->id_len);
    memset(ev, 0, sizeof *ev);
    ev->cmd = SMQ_CMD_ERROR;
    ev->id = (smq_str){ c->local_id, r->id_len };
    ev->terminal = ev->local = 1;
    ev->error = (smq_error){
        ev->id, r->next_seq, { code, (uint32_t)strlen(code) }, { c->local_msg, (uint32_t)strlen(c->local_msg) }
    };
    open_remove(c, r);
}

/* Ends request r here, with a local ERROR "internal", and cancels it at
 * the broker, which may still hold it: its frames cannot be trusted. */
static void end_broken(smq_client *c, smq_client_event *ev, open_req *r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void end_broken(smq_client *c, smq_client_event *ev, open_req *r, const char *fmt, ...)
{
    char id[SMQ_ID_MAX + 1], why[sizeof c->local_msg];
    memcpy(id, r->id, r->id_len);
    id[r->id_len] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    smq_client_cancel(c, id, NULL);
    local_error(c, ev, r, SMQ_E_INTERNAL, "request \"%s\": %s", id, why);
}

/* A message from the broker that cannot be used (unreadable, or a bad
 * field): when its body names an open request, that request ends here
 * (PROTOCOL.md §4); 1 with the event, else 0. */
static int unusable(smq_client *c, smq_client_event *ev, const char *what, const smq_err *why)
{
    smq_msg *m = c->cur;
    smq_str id;
    smq_err ignored;
    if (m->n == 0 || m->n != m->n_all ||
        smq_cancel_decode(&id, zmq_msg_data(&m->f[m->n - 1]), zmq_msg_size(&m->f[m->n - 1]), &ignored))
        return 0;
    open_req *r = open_find(c, id.p, id.n);
    if (!r)
        return 0;
    end_broken(c, ev, r, "%s from the broker cannot be used: %s", what, why->msg);
    return 1;
}

/* Turns c->cur into an event: 1 when there is one for the caller, 0 when
 * the message is for nobody (a heartbeat, a frame for a closed request). */
static int on_message(smq_client *c, smq_client_event *ev)
{
    smq_head h;
    smq_err err;
    memset(ev, 0, sizeof *ev);
    if (parse_msg(c, c->cur, &h, 1, &err))
        return unusable(c, ev, "a frame", &err);
    ev->cmd = h.cmd;
    if (h.cmd == SMQ_CMD_TOKEN) {
        smq_token_free(&c->tok); /* of a TOKEN dropped before this one */
        if (smq_token_decode(&c->tok, h.body, h.body_len, &err))
            return unusable(c, ev, "a TOKEN", &err);
        ev->token = c->tok, ev->id = c->tok.id;
    } else if (h.cmd == SMQ_CMD_DONE) {
        if (smq_done_decode(&ev->done, h.body, h.body_len, &err))
            return unusable(c, ev, "a DONE", &err);
        ev->id = ev->done.id, ev->terminal = 1;
    } else if (h.cmd == SMQ_CMD_ERROR) {
        if (smq_error_decode(&ev->error, h.body, h.body_len, &err))
            return unusable(c, ev, "an ERROR", &err);
        if (!ev->error.id.p)
            return 1; /* about no request: the caller hears of it, nothing ends */
        ev->id = ev->error.id, ev->terminal = 1;
    } else if (h.cmd == SMQ_CMD_HEARTBEAT) {
        on_heartbeat(c, &h);
        return 0;
    } else if (h.cmd == SMQ_CMD_STATS) {
        return 0; /* a reply nobody waits for any more */
    } else {
        char m[80];
        snprintf(m, sizeof m, "frame 1: a broker does not send %s to a client", smq_cmd_name(h.cmd));
        send_error(c, SMQ_E_BAD_FRAME, m);
        return 0;
    }
    open_req *r = open_find(c, ev->id.p, ev->id.n);
    if (!r)
        return 0; /* ended already, here or by its terminal frame */
    uint64_t seq = h.cmd == SMQ_CMD_TOKEN ? ev->token.seq : h.cmd == SMQ_CMD_DONE ? ev->done.seq : ev->error.seq;
    if (seq != r->next_seq) {
        /* Something was lost, duplicated or reordered: the stream cannot be
         * trusted, so it ends here and stops at the broker. */
        end_broken(c, ev, r, "expected seq %llu, received seq %llu (%s)", (unsigned long long)r->next_seq,
                   (unsigned long long)seq, smq_cmd_name(h.cmd));
        return 1;
    }
    r->next_seq++;
    if (ev->terminal)
        open_remove(c, r);
    return 1;
}

/* Sends the heartbeat when due and notices a silent broker; returns the
 * ms until it must be called again (-1: not while nothing is open). */
static int64_t keep_alive(smq_client *c, int64_t now)
{
    if (c->n_open == 0)
        return -1;
    int64_t silent_until = c->last_heard + silence_ms(c);
    if (now >= silent_until) {
        c->lost = 1;
        return 0;
    }
    if (now >= c->next_hb)
        send_heartbeat(c, now);
    return (c->next_hb < silent_until ? c->next_hb : silent_until) - now;
}

enum { W_ERROR = -1, W_NONE, W_READY, W_SIGNAL };

/* Waits up to wait_ms (-1: no limit) for a message to be ready. */
static int wait_readable(smq_client *c, int64_t wait_ms, smq_err *err)
{
    zmq_pollitem_t item = { c->sock, 0, ZMQ_POLLIN, 0 };
    int rc = zmq_poll(&item, 1, wait_ms < 0 ? -1 : (long)wait_ms);
    if (rc < 0 && errno == EINTR)
        return W_SIGNAL;
    if (rc < 0)
        return smq_err_set(err, "waiting for the broker: %s", zmq_strerror(errno));
    return rc > 0 ? W_READY : W_NONE;
}

/* The wait until the next thing to do: keep_alive's, cut to the deadline. */
static int64_t next_wait(int64_t wait, int64_t now, int64_t deadline)
{
    if (deadline >= 0) {
        int64_t left = deadline > now ? deadline - now : 0;
        if (wait < 0 || left < wait)
            wait = left;
    }
    return wait;
}

int smq_client_next(smq_client *c, smq_client_event *ev, int timeout_ms, smq_err *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    msg_free(&c->cur);
    smq_token_free(&c->tok);
    memset(ev, 0, sizeof *ev);
    for (;;) {
        /* The broker went silent: every open request ends, one per call,
         * and is cancelled there, in case the broker was only slow. */
        if (c->lost && c->n_open) {
            char id[SMQ_ID_MAX + 1];
            memcpy(id, c->open[0].id, c->open[0].id_len);
            id[c->open[0].id_len] = 0;
            smq_client_cancel(c, id, NULL);
            local_error(c, ev, &c->open[0], SMQ_E_BROKER_LOST, "the broker said nothing for %lld ms",
                        (long long)silence_ms(c));
            return 1;
        }
        c->lost = 0;
        if (c->stash) {
            c->cur = c->stash;
            c->stash = c->stash->next;
            if (!c->stash)
                c->stash_tail = NULL;
            if (on_message(c, ev))
                return 1;
            msg_free(&c->cur);
            continue;
        }
        int64_t now = now_ms(), wait = keep_alive(c, now);
        if (c->lost)
            continue;
        int rc = wait_readable(c, next_wait(wait, now, deadline), err);
        if (rc == W_ERROR)
            return -1;
        if (rc == W_SIGNAL || (rc == W_NONE && deadline >= 0 && now_ms() >= deadline))
            return 0;
        if (rc == W_NONE || !(c->cur = recv_msg(c, err)))
            continue;
        if (on_message(c, ev))
            return 1;
        msg_free(&c->cur);
    }
}

int smq_client_stats(smq_client *c, smq_stats *out, int timeout_ms, smq_err *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    memset(out, 0, sizeof *out);
    msg_free(&c->cur);
    if (send_empty(c, SMQ_CMD_STATS, err))
        return -1;
    for (;;) {
        int64_t now = now_ms();
        if (deadline >= 0 && now >= deadline)
            return smq_err_set(err, "no STATS reply from the broker in %d ms", timeout_ms);
        int rc = wait_readable(c, next_wait(keep_alive(c, now), now, deadline), err);
        if (rc == W_ERROR)
            return -1;
        smq_msg *m = rc == W_READY ? recv_msg(c, err) : NULL;
        if (!m)
            continue;
        smq_head h;
        smq_err perr;
        int bad = parse_msg(c, m, &h, 0, &perr);
        if (!bad && h.cmd == SMQ_CMD_STATS) {
            c->cur = m;
            return smq_stats_decode(out, h.body, h.body_len, err);
        }
        if (!bad && h.cmd == SMQ_CMD_HEARTBEAT) {
            on_heartbeat(c, &h);
            msg_free(&m);
            continue;
        }
        /* Not the reply: kept, in order, for smq_client_next (which answers
         * it when it cannot be read). */
        if (c->stash_tail)
            c->stash_tail->next = m;
        else
            c->stash = m;
        c->stash_tail = m;
    }
}

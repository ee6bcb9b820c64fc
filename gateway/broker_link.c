/* broker_link.c - the gateway's DEALER to the broker on libuv (broker_link.h).
 *
 * The open requests are a hash table keyed by id (a stream of a thousand
 * clients means a thousand lookups per engine step). Received messages are
 * read frame by frame into zmq_msg_t, checked by smq_head_parse and decoded
 * by the codec; what a request hears points into them and lives for the
 * callback only.
 */
#include "broker_link.h"
#include "curve_cert.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#define FRAMES_MAX    4   /* a client-hop message has 3; one more to tell "too many" */
#define ECHO_GAP_MS   50  /* a broker HEARTBEAT is answered unless we sent one this recently */
#define DRAIN_BUDGET  256 /* messages per turn of the loop, so that clients are served too */
#define SOCKET_HWM    100000
#define TICK_MS       100
#define E_BROKER_LOST "broker_lost"

struct broker_req {
    char id[SMQ_ID_MAX + 1];
    uint32_t id_len;
    uint64_t next_seq;
    broker_on_event *cb; /* NULL: forgotten, the frames go nowhere */
    void *ctx;
    broker_req *next; /* in its hash bucket */
};

typedef struct stats_waiter {
    broker_on_stats *cb;
    void *ctx;
    struct stats_waiter *next;
} stats_waiter;

typedef struct rmsg {
    zmq_msg_t f[FRAMES_MAX];
    size_t n, n_all; /* frames kept, frames received */
} rmsg;

struct broker_link {
    uv_loop_t *loop;
    void *zctx, *sock;
    uv_poll_t poll;
    uv_idle_t idle;
    uv_timer_t timer;
    int handles; /* open libuv handles; the link is freed when the last closes */
    int hb_ms, liveness, stats_timeout_ms;
    uint32_t broker_hb_ms; /* announced in the broker's HEARTBEAT; 0: not yet */
    uint64_t last_heard, last_hb;
    char prefix[16];
    uint64_t counter, lost;
    broker_req **buckets;
    size_t n_buckets, n_open;
    /* STATS: the one in flight (sent at), who waits, the last reply */
    uint64_t stats_sent;
    stats_waiter *waiters, **waiters_tail;
    uint8_t *stats_body;
    smq_stats stats;
    uint64_t stats_at;
    int have_stats;
    smq_buf out;
};

static uint64_t now_ms(broker_link *l)
{
    uv_update_time(l->loop);
    return uv_now(l->loop);
}

/* ---- sending ---- */

static void on_idle(uv_idle_t *h);

static int send_body(broker_link *l, smq_cmd cmd, const void *body, size_t len, smq_err *err)
{
    const char *name = smq_cmd_name(cmd);
    if (zmq_send(l->sock, SMQ_HEADER, SMQ_HEADER_LEN, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return smq_err_set(err, "cannot send %s to the broker: %s", name,
                           errno == EAGAIN ? "the queue to it is full" : zmq_strerror(errno));
    /* Once the first frame is queued, ZeroMQ takes the rest of the message. */
    zmq_send(l->sock, name, strlen(name), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(l->sock, body, len, ZMQ_DONTWAIT);
    /* The send may have consumed the edge that announced input. */
    uv_idle_start(&l->idle, on_idle);
    return 0;
}

static void send_heartbeat(broker_link *l, uint64_t now)
{
    send_body(l, SMQ_CMD_HEARTBEAT, "\x80", 1, NULL);
    l->last_hb = now;
}

static void send_cancel(broker_link *l, const broker_req *r)
{
    smq_buf_reset(&l->out);
    if (smq_cancel_encode(&l->out, r->id, r->id_len) == 0)
        send_body(l, SMQ_CMD_CANCEL, l->out.data, l->out.len, NULL);
}

/* An ERROR about no request (never in answer to an ERROR). */
static void send_error(broker_link *l, const char *code, const char *message)
{
    smq_error e = { { NULL, 0 }, 0, { code, (uint32_t)strlen(code) }, { message, (uint32_t)strlen(message) } };
    smq_buf_reset(&l->out);
    if (smq_error_encode(&l->out, &e) == 0)
        send_body(l, SMQ_CMD_ERROR, l->out.data, l->out.len, NULL);
}

/* ---- the open requests ---- */

static size_t bucket_of(const broker_link *l, const char *id, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)id[i]) * 1099511628211ull;
    return (size_t)(h & (l->n_buckets - 1));
}

static broker_req *req_find(broker_link *l, const char *id, size_t n)
{
    for (broker_req *r = l->buckets[bucket_of(l, id, n)]; r; r = r->next)
        if (r->id_len == n && !memcmp(r->id, id, n))
            return r;
    return NULL;
}

static int req_add(broker_link *l, broker_req *r)
{
    if (l->n_open >= 2 * l->n_buckets) { /* grow: rehash into twice the buckets */
        size_t old_n = l->n_buckets;
        broker_req **old = l->buckets, **nb = calloc(2 * old_n, sizeof *nb);
        if (!nb)
            return -1;
        l->buckets = nb;
        l->n_buckets = 2 * old_n;
        for (size_t i = 0; i < old_n; i++)
            for (broker_req *q = old[i], *next; q; q = next) {
                next = q->next;
                size_t b = bucket_of(l, q->id, q->id_len);
                q->next = nb[b];
                nb[b] = q;
            }
        free(old);
    }
    size_t b = bucket_of(l, r->id, r->id_len);
    r->next = l->buckets[b];
    l->buckets[b] = r;
    l->n_open++;
    return 0;
}

static void req_remove(broker_link *l, broker_req *r)
{
    for (broker_req **p = &l->buckets[bucket_of(l, r->id, r->id_len)]; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            l->n_open--;
            return;
        }
}

static void timer_update(broker_link *l);

/* Ends request r (out of the table already) with a local ERROR, and
 * cancels it at the broker, which may still hold it. */
static void finish_local(broker_link *l, broker_req *r, const char *code, const char *msg)
{
    send_cancel(l, r);
    smq_error e = {
        { r->id, r->id_len }, r->next_seq, { code, (uint32_t)strlen(code) }, { msg, (uint32_t)strlen(msg) }
    };
    broker_event ev = { .cmd = SMQ_CMD_ERROR, .error = &e, .local = 1 };
    if (r->cb)
        r->cb(r->ctx, &ev);
    free(r);
}

static void end_local(broker_link *l, broker_req *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void end_local(broker_link *l, broker_req *r, const char *code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    req_remove(l, r);
    finish_local(l, r, code, msg);
    timer_update(l);
}

/* The broker went silent: every open request ends (and is cancelled there,
 * in case the broker was only slow). The table is emptied first, so that
 * what the callbacks do cannot disturb the walk. */
static void broker_lost(broker_link *l, uint64_t silence)
{
    broker_req *all = NULL;
    for (size_t i = 0; i < l->n_buckets; i++) {
        for (broker_req *r = l->buckets[i], *next; r; r = next) {
            next = r->next;
            r->next = all;
            all = r;
        }
        l->buckets[i] = NULL;
    }
    l->n_open = 0;
    char msg[160];
    snprintf(msg, sizeof msg, "the broker said nothing for %" PRIu64 " ms", silence);
    fprintf(stderr, "smolmq-gateway: %s: its requests end (broker_lost)\n", msg);
    for (broker_req *r = all, *next; r; r = next) {
        next = r->next;
        l->lost++;
        finish_local(l, r, E_BROKER_LOST, msg);
    }
    timer_update(l);
}

/* Delivers a frame of request id; terminal frames end it. */
static void deliver(broker_link *l, smq_str id, uint64_t seq, const broker_event *ev, int terminal)
{
    broker_req *r = req_find(l, id.p, id.n);
    if (!r)
        return; /* ended already, here or by its terminal frame */
    if (seq != r->next_seq) {
        /* Something was lost, duplicated or reordered: the stream cannot
         * be trusted, so it ends here and stops at the broker. */
        end_local(l, r, SMQ_E_INTERNAL, "request %s: expected seq %" PRIu64 " from the broker, received %" PRIu64,
                  r->id, r->next_seq, seq);
        return;
    }
    r->next_seq++;
    if (terminal)
        req_remove(l, r);
    if (r->cb)
        r->cb(r->ctx, ev);
    if (terminal) {
        free(r);
        timer_update(l);
    }
}

/* ---- STATS ---- */

static void stats_answer(broker_link *l, const smq_stats *s, const char *why)
{
    stats_waiter *w = l->waiters;
    l->waiters = NULL;
    l->waiters_tail = &l->waiters;
    l->stats_sent = 0;
    while (w) {
        stats_waiter *next = w->next;
        w->cb(w->ctx, s, why);
        free(w);
        w = next;
    }
    timer_update(l);
}

static void on_stats_reply(broker_link *l, const uint8_t *body, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    smq_stats s;
    smq_err err;
    if (!copy) {
        stats_answer(l, NULL, "out of memory");
        return;
    }
    memcpy(copy, body, len);
    if (smq_stats_decode(&s, copy, len, &err)) {
        free(copy);
        char why[SMQ_ERR_MAX + 40];
        snprintf(why, sizeof why, "the broker's STATS cannot be read: %s", err.msg);
        stats_answer(l, NULL, why);
        return;
    }
    if (l->have_stats)
        smq_stats_free(&l->stats);
    free(l->stats_body);
    l->stats = s;
    l->stats_body = copy;
    l->stats_at = now_ms(l);
    l->have_stats = 1;
    stats_answer(l, &l->stats, NULL);
}

void broker_link_stats(broker_link *l, int max_age_ms, broker_on_stats *cb, void *ctx)
{
    uint64_t now = now_ms(l);
    if (l->have_stats && now - l->stats_at <= (uint64_t)max_age_ms) {
        cb(ctx, &l->stats, NULL);
        return;
    }
    stats_waiter *w = calloc(1, sizeof *w);
    if (!w) {
        cb(ctx, NULL, "out of memory");
        return;
    }
    w->cb = cb, w->ctx = ctx;
    *l->waiters_tail = w;
    l->waiters_tail = &w->next;
    if (l->stats_sent)
        return; /* its reply serves this waiter too */
    smq_err err;
    if (send_body(l, SMQ_CMD_STATS, "\x80", 1, &err)) {
        stats_answer(l, NULL, err.msg);
        return;
    }
    l->stats_sent = now;
    timer_update(l);
}

/* ---- receiving ---- */

static void rmsg_close(rmsg *m)
{
    for (size_t i = 0; i < m->n; i++)
        zmq_msg_close(&m->f[i]);
    m->n = m->n_all = 0;
}

/* 1 with a whole message in m, 0 when none is waiting. */
static int recv_msg(broker_link *l, rmsg *m)
{
    m->n = m->n_all = 0;
    for (int more = 1; more;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, l->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            if (m->n_all == 0)
                return 0;
            if (errno == EAGAIN || errno == EINTR)
                continue; /* the rest of a message is always there; cannot happen */
            rmsg_close(m);
            return 0;
        }
        more = zmq_msg_more(&part);
        if (m->n < FRAMES_MAX)
            m->f[m->n++] = part; /* a zmq_msg_t may be moved by copying its bytes */
        else
            zmq_msg_close(&part);
        m->n_all++;
    }
    return 1;
}

/* A frame that cannot be used, but whose body names an open request: that
 * request ends here (PROTOCOL.md §4). */
static void unusable(broker_link *l, const rmsg *m, const char *what, const smq_err *why)
{
    smq_str id;
    smq_err ignored;
    if (m->n == 0 || m->n != m->n_all ||
        smq_cancel_decode(&id, zmq_msg_data((zmq_msg_t *)&m->f[m->n - 1]), zmq_msg_size((zmq_msg_t *)&m->f[m->n - 1]),
                          &ignored))
        return;
    broker_req *r = req_find(l, id.p, id.n);
    if (r)
        end_local(l, r, SMQ_E_INTERNAL, "%s from the broker about request %s cannot be used: %s", what, r->id,
                  why->msg);
}

static void on_heartbeat(broker_link *l, const smq_head *h, uint64_t now)
{
    uint32_t ms;
    smq_err ignored;
    if (smq_broker_hb_decode(&ms, h->body, h->body_len, &ignored) == 0 && ms)
        l->broker_hb_ms = ms;
    if (l->n_open && now - l->last_hb >= ECHO_GAP_MS)
        send_heartbeat(l, now);
}

static void on_message(broker_link *l, rmsg *m)
{
    uint64_t now = now_ms(l);
    l->last_heard = now; /* any message, readable or not, is a sign of life */
    smq_frame f[FRAMES_MAX];
    for (size_t i = 0; i < m->n; i++)
        f[i] = (smq_frame){ zmq_msg_data(&m->f[i]), zmq_msg_size(&m->f[i]) };
    smq_head h;
    smq_err err;
    const char *code;
    if (smq_head_parse(f, m->n_all, SMQ_HOP_CLIENT, &h, &code, &err)) {
        /* Two peers must never answer each other's errors for ever. */
        if (m->n < 2 || f[1].size != 5 || memcmp(f[1].data, "ERROR", 5))
            send_error(l, code, err.msg);
        unusable(l, m, "a frame", &err);
        return;
    }
    if (h.cmd == SMQ_CMD_TOKEN) {
        smq_token t;
        if (smq_token_decode(&t, h.body, h.body_len, &err)) {
            unusable(l, m, "a TOKEN", &err);
            return;
        }
        broker_event ev = { .cmd = SMQ_CMD_TOKEN, .token = &t };
        deliver(l, t.id, t.seq, &ev, 0);
        smq_token_free(&t);
    } else if (h.cmd == SMQ_CMD_DONE) {
        smq_done d;
        if (smq_done_decode(&d, h.body, h.body_len, &err)) {
            unusable(l, m, "a DONE", &err);
            return;
        }
        broker_event ev = { .cmd = SMQ_CMD_DONE, .done = &d };
        deliver(l, d.id, d.seq, &ev, 1);
    } else if (h.cmd == SMQ_CMD_ERROR) {
        smq_error e;
        if (smq_error_decode(&e, h.body, h.body_len, &err)) {
            unusable(l, m, "an ERROR", &err);
            return;
        }
        if (e.id.p) {
            broker_event ev = { .cmd = SMQ_CMD_ERROR, .error = &e };
            deliver(l, e.id, e.seq, &ev, 1);
        } else if (l->stats_sent) { /* the broker could not answer STATS */
            char why[400];
            snprintf(why, sizeof why, "the broker answered STATS with %.*s: %.*s", (int)e.code.n, e.code.p,
                     (int)e.message.n, e.message.p);
            stats_answer(l, NULL, why);
        } else {
            fprintf(stderr, "smolmq-gateway: the broker says %.*s: %.*s\n", (int)e.code.n, e.code.p, (int)e.message.n,
                    e.message.p);
        }
    } else if (h.cmd == SMQ_CMD_HEARTBEAT) {
        on_heartbeat(l, &h, now);
    } else if (h.cmd == SMQ_CMD_STATS) {
        on_stats_reply(l, h.body, h.body_len);
    } else {
        char msg[80];
        snprintf(msg, sizeof msg, "frame 1: a broker does not send %s to a client", smq_cmd_name(h.cmd));
        send_error(l, SMQ_E_BAD_FRAME, msg);
    }
}

/* Reads up to a budget per turn of the loop (the idle handle brings us
 * back for the rest). ZeroMQ's fd is edge-triggered: we may only wait on it
 * again once ZMQ_EVENTS says nothing waits. That is asked once a receive
 * finds nothing, not before every message, which cost about as much as the
 * message itself (as in the broker, docs/BENCHMARKS.md). */
static void drain(broker_link *l)
{
    for (int budget = DRAIN_BUDGET;; budget--) {
        if (budget == 0) {
            uv_idle_start(&l->idle, on_idle);
            return;
        }
        rmsg m;
        if (recv_msg(l, &m)) {
            on_message(l, &m);
            rmsg_close(&m);
            continue;
        }
        uint32_t events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(l->sock, ZMQ_EVENTS, &events, &sz) || !(events & ZMQ_POLLIN))
            return;
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)status, (void)events;
    drain(h->data);
}

static void on_idle(uv_idle_t *h)
{
    uv_idle_stop(h);
    drain(h->data);
}

/* ---- time: heartbeats, the broker's silence, STATS that took too long ---- */

static void on_tick(uv_timer_t *h)
{
    broker_link *l = h->data;
    uint64_t now = now_ms(l);
    if (l->stats_sent && now - l->stats_sent >= (uint64_t)l->stats_timeout_ms) {
        char why[120];
        snprintf(why, sizeof why, "the broker did not answer STATS within %d ms", l->stats_timeout_ms);
        stats_answer(l, NULL, why);
    }
    if (l->n_open) {
        uint64_t iv = (uint64_t)(l->hb_ms > (int)l->broker_hb_ms ? l->hb_ms : (int)l->broker_hb_ms);
        uint64_t silence = (uint64_t)l->liveness * iv;
        if (now - l->last_heard >= silence)
            broker_lost(l, now - l->last_heard);
        else if (now - l->last_hb >= (uint64_t)l->hb_ms)
            send_heartbeat(l, now);
    }
    timer_update(l);
}

/* The timer runs while there is something to watch: open requests or a
 * STATS in flight. */
static void timer_update(broker_link *l)
{
    int want = l->n_open || l->stats_sent;
    if (want && !uv_is_active((uv_handle_t *)&l->timer)) {
        uint64_t tick = l->hb_ms < TICK_MS ? (uint64_t)l->hb_ms : TICK_MS;
        uv_timer_start(&l->timer, on_tick, tick, tick);
    } else if (!want && uv_is_active((uv_handle_t *)&l->timer)) {
        uv_timer_stop(&l->timer);
    }
}

/* ---- requests ---- */

broker_req *broker_link_chat(broker_link *l, smq_chat *c, broker_on_event *cb, void *ctx, smq_err *err)
{
    broker_req *r = calloc(1, sizeof *r);
    if (!r) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    r->id_len = (uint32_t)snprintf(r->id, sizeof r->id, "%s-%" PRIx64, l->prefix, ++l->counter);
    r->cb = cb, r->ctx = ctx;
    c->id = (smq_str){ r->id, r->id_len };
    smq_buf_reset(&l->out);
    if (smq_chat_encode(&l->out, c) || req_add(l, r)) {
        free(r);
        smq_err_set(err, "out of memory");
        return NULL;
    }
    if (l->out.len > SMQ_BODY_MAX) {
        req_remove(l, r);
        free(r);
        smq_err_set(err, "the request is %zu bytes as a CHAT; the broker takes at most %u", l->out.len, SMQ_BODY_MAX);
        return NULL;
    }
    if (send_body(l, SMQ_CMD_CHAT, l->out.data, l->out.len, err)) {
        req_remove(l, r);
        free(r);
        return NULL;
    }
    /* The broker heartbeats clients with open requests only: the silence
     * that counts starts now. */
    if (l->n_open == 1)
        l->last_heard = l->last_hb = now_ms(l);
    timer_update(l);
    return r;
}

void broker_link_cancel(broker_link *l, broker_req *r)
{
    send_cancel(l, r);
}

void broker_link_forget(broker_link *l, broker_req *r)
{
    r->cb = NULL;
    send_cancel(l, r);
}

const char *broker_req_id(const broker_req *r)
{
    return r->id;
}

const smq_stats *broker_link_last_stats(const broker_link *l)
{
    return l->have_stats ? &l->stats : NULL;
}

size_t broker_link_open(const broker_link *l)
{
    return l->n_open;
}

uint64_t broker_link_lost_count(const broker_link *l)
{
    return l->lost;
}

/* ---- lifecycle ---- */

static int open_socket(broker_link *l, const broker_link_config *cfg, smq_err *err)
{
    int zero = 0, hwm = SOCKET_HWM;
    if (!(l->zctx = zmq_ctx_new()) || !(l->sock = zmq_socket(l->zctx, ZMQ_DEALER)))
        return smq_err_set(err, "cannot make a ZeroMQ socket: %s", zmq_strerror(errno));
    if (zmq_setsockopt(l->sock, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(l->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) || zmq_setsockopt(l->sock, ZMQ_RCVHWM, &hwm, sizeof hwm))
        return smq_err_set(err, "socket options: %s", zmq_strerror(errno));
    if (cfg->server_key &&
        curve_client_apply(l->sock, cfg->server_key, cfg->public_key, cfg->secret_key, "gateway", err))
        return -1;
    if (zmq_connect(l->sock, cfg->endpoint))
        return smq_err_set(err, "--broker %s: %s", cfg->endpoint, zmq_strerror(errno));
    return 0;
}

broker_link *broker_link_new(uv_loop_t *loop, const broker_link_config *cfg, smq_err *err)
{
    broker_link *l = calloc(1, sizeof *l);
    if (!l || !(l->buckets = calloc(64, sizeof *l->buckets))) {
        free(l);
        smq_err_set(err, "out of memory");
        return NULL;
    }
    l->n_buckets = 64;
    l->loop = loop;
    l->hb_ms = cfg->heartbeat_ms > 0 ? cfg->heartbeat_ms : SMQ_HEARTBEAT_MS;
    l->liveness = cfg->liveness > 0 ? cfg->liveness : SMQ_LIVENESS;
    l->stats_timeout_ms = cfg->stats_timeout_ms > 0 ? cfg->stats_timeout_ms : 2000;
    l->waiters_tail = &l->waiters;
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint32_t)uv_hrtime() ^ (uint32_t)getpid();
    snprintf(l->prefix, sizeof l->prefix, "gw%08x", rnd);
    int fd = -1;
    size_t sz = sizeof fd;
    int rc = open_socket(l, cfg, err);
    if (rc == 0 && zmq_getsockopt(l->sock, ZMQ_FD, &fd, &sz))
        rc = smq_err_set(err, "ZMQ_FD: %s", zmq_strerror(errno));
    if (rc) {
        if (l->sock)
            zmq_close(l->sock);
        if (l->zctx)
            zmq_ctx_term(l->zctx);
        free(l->buckets);
        free(l);
        return NULL;
    }
    uv_poll_init_socket(loop, &l->poll, fd);
    uv_idle_init(loop, &l->idle);
    uv_timer_init(loop, &l->timer);
    l->poll.data = l->idle.data = l->timer.data = l;
    l->handles = 3;
    uv_poll_start(&l->poll, UV_READABLE, on_poll);
    return l;
}

static void on_handle_closed(uv_handle_t *h)
{
    broker_link *l = h->data;
    if (--l->handles == 0) {
        free(l->buckets);
        free(l);
    }
}

void broker_link_destroy(broker_link **self)
{
    broker_link *l = *self;
    if (!l)
        return;
    *self = NULL;
    stats_answer(l, NULL, "the gateway is stopping"); /* whoever waits frees what it holds */
    for (size_t i = 0; i < l->n_buckets; i++)
        for (broker_req *r = l->buckets[i], *next; r; r = next) {
            next = r->next;
            free(r);
        }
    if (l->have_stats)
        smq_stats_free(&l->stats);
    free(l->stats_body);
    smq_buf_free(&l->out);
    uv_close((uv_handle_t *)&l->poll, on_handle_closed); /* stops watching the fd before it closes */
    uv_close((uv_handle_t *)&l->idle, on_handle_closed);
    uv_close((uv_handle_t *)&l->timer, on_handle_closed);
    /* A moment for the CANCELs of the requests that end with us. */
    int linger = 500;
    zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(l->sock);
    zmq_ctx_term(l->zctx);
}

/* broker.c - the protocol engine of smolmq-broker (broker.h says what it
 * does; proto/PROTOCOL.md is the protocol).
 *
 * The state is three tables and a queue per model:
 *   workers  by routing id: model, capacity, requests open on it, last heard;
 *   clients  by routing id: last heard, requests open (only while they have
 *            some, or were heard from recently);
 *   jobs     by job id and by (client, request id): one per accepted request
 *            from acceptance to its terminal frame;
 *   queues   by model: jobs waiting for a credit, first in, first out.
 * A job refers to its client by key, not pointer: a client can vanish while
 * its job still holds a worker's credit (it is being cancelled there). */
#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "curve.h"
#include "proto.h"
#include "sd_notify.h"

#define RETRY_MAX    3      /* dispatches of one request (PROTOCOL.md §5) */
#define AFFINITY_MAX 100000 /* remembered affinity keys; past it the table starts over */
#define TICK_MS      100    /* queue deadlines, liveness and the drain are checked this often */
#define PEER_ID_MAX  255

typedef struct peer {
    uint8_t id[PEER_ID_MAX];
    size_t len;
    char key[2 * PEER_ID_MAX + 1]; /* the id in hex: the tables' key */
} peer;

typedef struct worker {
    peer p;
    char model[SMQ_NAME_MAX + 1], name[SMQ_NAME_MAX + 1], backend[SMQ_NAME_MAX + 1];
    uint32_t capacity, in_flight, n_ctx;
    uint32_t heartbeat_ms; /* the worker's own interval (READY), by which it is judged */
    int64_t last_heard, registered;
} worker;

typedef struct client {
    peer p;
    int64_t last_heard;
    uint32_t open;
} client;

typedef struct job {
    uint64_t job;
    char client_key[2 * PEER_ID_MAX + 1];
    char key[2 * PEER_ID_MAX + 2 + 2 * SMQ_ID_MAX + 1]; /* client key ":" hex(id) */
    char id[SMQ_ID_MAX + 1];
    uint32_t id_len;
    char model[SMQ_NAME_MAX + 1];
    uint8_t *body; /* the client's CHAT body; chat's strings point into it */
    smq_chat chat;
    worker *worker;  /* NULL while queued */
    void *qhandle;   /* its place in the model's queue while queued */
    uint32_t frames; /* frames sent to the client so far: the next seq */
    uint32_t dispatches;
    int cancelling; /* a CANCEL went to its worker */
    int64_t arrival, deadline;
    double arrival_us;
} job;

typedef struct queue {
    char model[SMQ_NAME_MAX + 1];
    zlistx_t *jobs;
} queue;

struct broker {
    broker_config cfg;
    zsock_t *front, *back;
    curve *curve;
    char front_ep[256], back_ep[256];
    zhashx_t *workers, *clients, *jobs, *jobs_by_client, *queues, *affinity;
    zhashx_t *told; /* unknown workers told DISCONNECT: routing key -> when (int64_t ms) */
    uint64_t next_job;
    int64_t started, next_heartbeat;
    int draining, finished;
    int64_t drain_deadline;
    uint64_t watchdog_ms; /* systemd's WatchdogSec= / 2 (sd_notify.h), 0: none */
    int64_t next_watchdog;
    smq_stats_totals totals;
    smq_buf buf; /* scratch for encoding bodies */
};

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig)
{
    (void)sig;
    stop_signal = 1;
}

static int64_t now_ms(void)
{
    return zclock_mono();
}

static void logf_(const broker *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const broker *b, const char *fmt, ...)
{
    if (!b->cfg.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "smolmq-broker: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void peer_set(peer *p, const void *id, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    p->len = len < PEER_ID_MAX ? len : PEER_ID_MAX;
    memcpy(p->id, id, p->len);
    for (size_t i = 0; i < p->len; i++) {
        p->key[2 * i] = hex[p->id[i] >> 4];
        p->key[2 * i + 1] = hex[p->id[i] & 15];
    }
    p->key[2 * p->len] = 0;
}

/* ---- sending ----
 * Sends never block: both ROUTERs have no send high-water mark, and with
 * ZMQ_ROUTER_MANDATORY a peer that is gone fails the first frame at once
 * (EHOSTUNREACH) and nothing is queued. The cost of an unbounded queue is
 * memory for a client that reads slower than its tokens arrive; a client
 * that stops reading altogether stops heartbeating and is dropped. */
static int send_msg(zsock_t *s, const peer *to, smq_cmd cmd, const uint64_t *job_id, const void *body, size_t n)
{
    void *h = zsock_resolve(s);
    const char *name = smq_cmd_name(cmd);
    if (zmq_send(h, to->id, to->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    zmq_send(h, SMQ_HEADER, SMQ_HEADER_LEN, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(h, name, strlen(name), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (job_id) {
        uint8_t j[8];
        smq_job_put(*job_id, j);
        zmq_send(h, j, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    }
    return zmq_send(h, body, n, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

static void send_empty(broker *b, zsock_t *s, const peer *to, smq_cmd cmd, const uint64_t *job_id)
{
    smq_buf_reset(&b->buf);
    smq_empty_encode(&b->buf);
    send_msg(s, to, cmd, job_id, b->buf.data, b->buf.len);
}

/* An ERROR to a client; id NULL: not terminal for any request. */
static int send_error(broker *b, const peer *to, const char *id, uint32_t id_len, uint64_t seq, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int send_error(broker *b, const peer *to, const char *id, uint32_t id_len, uint64_t seq, const char *code,
                      const char *fmt, ...)
{
    char msg[SMQ_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    smq_error e = { { id, id ? id_len : 0 }, seq, { code, (uint32_t)strlen(code) }, { msg, (uint32_t)strlen(msg) } };
    smq_buf_reset(&b->buf);
    if (smq_error_encode(&b->buf, &e))
        return -1;
    return send_msg(b->front, to, SMQ_CMD_ERROR, NULL, b->buf.data, b->buf.len);
}

/* An ERROR to a worker, about a frame that concerns no job (job id 0). */
static void send_worker_error(broker *b, const peer *to, const char *code, const char *msg)
{
    static const uint64_t no_job = 0;
    smq_error e = { { NULL, 0 }, 0, { code, (uint32_t)strlen(code) }, { msg, (uint32_t)strlen(msg) } };
    smq_buf_reset(&b->buf);
    if (!smq_error_encode(&b->buf, &e))
        send_msg(b->back, to, SMQ_CMD_ERROR, &no_job, b->buf.data, b->buf.len);
}

/* Whether an unreadable message says ERROR: it is not answered, or two
 * peers could trade errors about each other's errors forever. */
static int is_error_frame(const smq_frame *f, size_t n)
{
    return n > 1 && f[1].size == 5 && !memcmp(f[1].data, "ERROR", 5);
}

/* ---- tables ---- */

static queue *queue_of(broker *b, const char *model)
{
    queue *q = zhashx_lookup(b->queues, model);
    if (!q) {
        q = calloc(1, sizeof *q);
        snprintf(q->model, sizeof q->model, "%s", model);
        q->jobs = zlistx_new();
        zhashx_insert(b->queues, model, q);
    }
    return q;
}

static client *client_of(broker *b, const char *key)
{
    return key[0] ? zhashx_lookup(b->clients, key) : NULL;
}

/* Forgets a job: out of its queue, off its worker's credits, out of the
 * tables. Sends nothing. */
static void job_free(broker *b, job *j)
{
    if (j->qhandle) {
        queue *q = zhashx_lookup(b->queues, j->model);
        zlistx_detach(q->jobs, j->qhandle);
        j->qhandle = NULL;
    }
    if (j->worker && j->worker->in_flight)
        j->worker->in_flight--;
    client *c = client_of(b, j->client_key);
    if (c && c->open)
        c->open--;
    char jk[24];
    snprintf(jk, sizeof jk, "%" PRIx64, j->job);
    zhashx_delete(b->jobs_by_client, j->key);
    smq_chat_free(&j->chat);
    free(j->body);
    zhashx_delete(b->jobs, jk); /* frees j: the table's destructor */
}

static void free_item(void **item)
{
    free(*item);
    *item = NULL;
}

/* Ends a job here with an ERROR to its client (when it is still there). */
static void job_fail(broker *b, job *j, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void job_fail(broker *b, job *j, const char *code, const char *fmt, ...)
{
    char msg[SMQ_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    client *c = client_of(b, j->client_key);
    if (c)
        send_error(b, &c->p, j->id, j->id_len, j->frames, code, "%s", msg);
    b->totals.failed++;
    logf_(b, "request %s ended: %s: %s", j->id, code, msg);
    job_free(b, j);
}

/* Ends a job here with DONE finish "cancelled". */
static void job_cancelled(broker *b, job *j)
{
    client *c = client_of(b, j->client_key);
    if (c) {
        smq_done d = { 0 };
        d.id = (smq_str){ j->id, j->id_len };
        d.seq = j->frames;
        d.finish = (smq_str){ "cancelled", 9 };
        d.usage.prompt_tokens = 0;
        double t = (zclock_usecs() / 1000.0) - j->arrival_us / 1000.0;
        d.timings.queue_ms = t;
        d.timings.total_ms = t;
        smq_buf_reset(&b->buf);
        if (!smq_done_encode(&b->buf, &d))
            send_msg(b->front, &c->p, SMQ_CMD_DONE, NULL, b->buf.data, b->buf.len);
    }
    b->totals.cancelled++;
    job_free(b, j);
}

/* The jobs matching a predicate, collected first: the tables must not
 * change while they are iterated. */
static zlist_t *jobs_where(broker *b, int (*match)(const job *, const void *), const void *arg)
{
    zlist_t *out = zlist_new();
    for (job *j = zhashx_first(b->jobs); j; j = zhashx_next(b->jobs))
        if (match(j, arg))
            zlist_append(out, j);
    return out;
}

static int on_worker(const job *j, const void *w)
{
    return j->worker == w;
}

static int of_client(const job *j, const void *key)
{
    return !strcmp(j->client_key, key);
}

static int any_job(const job *j, const void *unused)
{
    (void)j;
    (void)unused;
    return 1;
}

/* ---- dispatch ---- */

static uint32_t credits(const worker *w)
{
    return w->capacity > w->in_flight ? w->capacity - w->in_flight : 0;
}

/* The affinity key's worker when it serves the model and has a credit,
 * else the worker of the model with the most free credits. */
static worker *pick_worker(broker *b, const job *j)
{
    if (j->chat.affinity.p) {
        char key[SMQ_NAME_MAX + 1];
        snprintf(key, sizeof key, "%.*s", (int)j->chat.affinity.n, j->chat.affinity.p);
        const char *wkey = zhashx_lookup(b->affinity, key);
        worker *w = wkey ? zhashx_lookup(b->workers, wkey) : NULL;
        if (w && !strcmp(w->model, j->model) && credits(w))
            return w;
    }
    worker *best = NULL;
    for (worker *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers))
        if (!strcmp(w->model, j->model) && credits(w) &&
            (!best || credits(w) > credits(best) || (credits(w) == credits(best) && w->in_flight < best->in_flight)))
            best = w;
    return best;
}

static void worker_drop(broker *b, worker *w, const char *why);

/* Sends queued jobs of the model to workers while there are credits. */
static void dispatch(broker *b, queue *q)
{
    job *j;
    while ((j = zlistx_first(q->jobs))) {
        worker *w = pick_worker(b, j);
        if (!w)
            return;
        zlistx_detach(q->jobs, j->qhandle);
        j->qhandle = NULL;
        j->worker = w;
        w->in_flight++;
        j->dispatches++;
        j->chat.queued_ms = (zclock_usecs() - j->arrival_us) / 1000.0;
        smq_buf_reset(&b->buf);
        if (smq_chat_encode(&b->buf, &j->chat)) {
            job_fail(b, j, SMQ_E_INTERNAL, "broker out of memory encoding the request");
            continue;
        }
        if (j->chat.affinity.p) {
            char key[SMQ_NAME_MAX + 1];
            snprintf(key, sizeof key, "%.*s", (int)j->chat.affinity.n, j->chat.affinity.p);
            if (zhashx_size(b->affinity) >= AFFINITY_MAX)
                zhashx_purge(b->affinity);
            zhashx_update(b->affinity, key, w->p.key);
        }
        logf_(b, "request %s -> worker %s (%u/%u)", j->id, w->name, w->in_flight, w->capacity);
        if (send_msg(b->back, &w->p, SMQ_CMD_CHAT, &j->job, b->buf.data, b->buf.len)) {
            /* Unroutable: the worker is gone; its jobs, this one too, are
             * re-dispatched or failed by the retry rule. */
            worker_drop(b, w, "unroutable");
            return; /* worker_drop dispatched again */
        }
    }
}

/* The items of a table, to iterate while the table changes. (Not
 * zhashx_values(): its list destroys copies with the table's destructor.) */
static zlist_t *items_of(zhashx_t *h)
{
    zlist_t *out = zlist_new();
    for (void *v = zhashx_first(h); v; v = zhashx_next(h))
        zlist_append(out, v);
    return out;
}

static void dispatch_all(broker *b)
{
    zlist_t *qs = items_of(b->queues);
    for (queue *q = zlist_first(qs); q; q = zlist_next(qs))
        dispatch(b, q);
    zlist_destroy(&qs);
}

/* A worker is gone (silent, unroutable, left, or registered again): each
 * of its jobs that has sent nothing yet goes back to the front of its
 * queue, the others end with worker_lost (PROTOCOL.md §5). */
static void worker_drop(broker *b, worker *w, const char *why)
{
    logf_(b, "worker %s (%s) dropped: %s", w->name, w->model, why);
    zlist_t *js = jobs_where(b, on_worker, w);
    for (job *j = zlist_first(js); j; j = zlist_next(js)) {
        if (w->in_flight)
            w->in_flight--;
        j->worker = NULL;
        if (j->cancelling || !client_of(b, j->client_key)) {
            job_cancelled(b, j);
        } else if (j->frames == 0 && j->dispatches < RETRY_MAX && !b->draining) {
            j->qhandle = zlistx_add_start(queue_of(b, j->model)->jobs, j);
            b->totals.redispatched++;
        } else {
            job_fail(b, j, SMQ_E_WORKER_LOST,
                     j->frames ? "worker %s serving model %s was lost (%s) after %u frames of this request"
                               : "worker %s serving model %s was lost (%s) %u times before this request started",
                     w->name, w->model, why, j->frames ? j->frames : j->dispatches);
        }
    }
    zlist_destroy(&js);
    zhashx_delete(b->workers, w->p.key);
    dispatch_all(b);
}

/* A client is gone: its queued requests are dropped and its running ones
 * cancelled at their workers (whose DONE then finds no client). */
static void client_drop(broker *b, client *c, const char *why)
{
    zlist_t *js = jobs_where(b, of_client, c->p.key);
    if (zlist_size(js))
        logf_(b, "client %s gone (%s): cancelling %zu requests", c->p.key, why, zlist_size(js));
    for (job *j = zlist_first(js); j; j = zlist_next(js)) {
        j->client_key[0] = 0;
        if (!j->worker) {
            b->totals.cancelled++;
            job_free(b, j);
        } else if (!j->cancelling) {
            j->cancelling = 1;
            send_empty(b, b->back, &j->worker->p, SMQ_CMD_CANCEL, &j->job);
        }
    }
    zlist_destroy(&js);
    zhashx_delete(b->clients, c->p.key);
}

/* ---- the client side ---- */

static const char *served_models(broker *b, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    for (worker *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers)) {
        char needle[SMQ_NAME_MAX + 4];
        snprintf(needle, sizeof needle, "\"%s\"", w->model);
        if (strstr(out, needle))
            continue;
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", n ? ", " : "", needle);
        if (n >= cap)
            break;
    }
    return out;
}

static void on_chat(broker *b, const peer *from, const smq_head *h)
{
    smq_err err;
    smq_str id;
    /* The id first: with it, every rejection below is terminal for it. */
    if (smq_cancel_decode(&id, h->body, h->body_len, &err)) {
        b->totals.rejected++;
        send_error(b, from, NULL, 0, 0, SMQ_E_BAD_REQUEST, "CHAT: %s", err.msg);
        return;
    }
    char key[sizeof((job *)0)->key];
    size_t kn = (size_t)snprintf(key, sizeof key, "%s:", from->key);
    for (uint32_t i = 0; i < id.n; i++)
        kn += (size_t)snprintf(key + kn, sizeof key - kn, "%02x", (uint8_t)id.p[i]);
    if (zhashx_lookup(b->jobs_by_client, key)) {
        b->totals.rejected++;
        send_error(b, from, NULL, 0, 0, SMQ_E_DUPLICATE_ID, "CHAT: id \"%.*s\" is already open on this connection",
                   (int)id.n, id.p);
        return;
    }
    if (b->draining) {
        b->totals.rejected++;
        send_error(b, from, id.p, id.n, 0, SMQ_E_SHUTTING_DOWN, "the broker is shutting down");
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j || !(j->body = malloc(h->body_len ? h->body_len : 1))) {
        free(j);
        send_error(b, from, id.p, id.n, 0, SMQ_E_INTERNAL, "broker out of memory");
        return;
    }
    memcpy(j->body, h->body, h->body_len);
    smq_chat_init(&j->chat);
    if (smq_chat_decode(&j->chat, j->body, h->body_len, &err)) {
        b->totals.rejected++;
        send_error(b, from, id.p, id.n, 0, SMQ_E_BAD_REQUEST, "CHAT: %s", err.msg);
        smq_chat_free(&j->chat);
        free(j->body);
        free(j);
        return;
    }
    memcpy(j->id, id.p, id.n);
    j->id_len = id.n;
    char models[1024];
    if (j->chat.model.p) {
        snprintf(j->model, sizeof j->model, "%.*s", (int)j->chat.model.n, j->chat.model.p);
    } else {
        /* No model: the one the broker serves, when it serves exactly one. */
        worker *only = NULL;
        int several = 0;
        for (worker *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers)) {
            if (only && strcmp(only->model, w->model))
                several = 1;
            only = only ? only : w;
        }
        if (only && !several)
            snprintf(j->model, sizeof j->model, "%s", only->model);
    }
    const char *reject_code = NULL;
    char reject[SMQ_ERR_MAX];
    queue *q = j->model[0] ? zhashx_lookup(b->queues, j->model) : NULL;
    int served = 0;
    for (worker *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers))
        served |= !strcmp(w->model, j->model);
    if (!j->model[0] && zhashx_size(b->workers)) {
        reject_code = SMQ_E_BAD_REQUEST;
        snprintf(reject, sizeof reject, "model: missing, and this broker serves several: %s",
                 served_models(b, models, sizeof models));
    } else if (!served) {
        reject_code = SMQ_E_UNKNOWN_MODEL;
        if (zhashx_size(b->workers))
            snprintf(reject, sizeof reject, "no worker serves model \"%s\" (served: %s)", j->model,
                     served_models(b, models, sizeof models));
        else
            snprintf(reject, sizeof reject, "no worker is connected to this broker");
    } else if (q && zlistx_size(q->jobs) >= b->cfg.queue_max) {
        reject_code = SMQ_E_OVERLOADED;
        snprintf(reject, sizeof reject, "the queue for model \"%s\" is full (%u requests waiting): retry later",
                 j->model, b->cfg.queue_max);
    }
    if (reject_code) {
        b->totals.rejected++;
        send_error(b, from, id.p, id.n, 0, reject_code, "%s", reject);
        smq_chat_free(&j->chat);
        free(j->body);
        free(j);
        return;
    }
    /* Accepted: from here on it ends with exactly one terminal frame. */
    client *c = zhashx_lookup(b->clients, from->key);
    if (!c) {
        c = calloc(1, sizeof *c);
        c->p = *from;
        zhashx_insert(b->clients, from->key, c);
    }
    c->last_heard = now_ms();
    c->open++;
    j->job = ++b->next_job;
    snprintf(j->client_key, sizeof j->client_key, "%s", from->key);
    snprintf(j->key, sizeof j->key, "%s", key);
    j->arrival = now_ms();
    j->arrival_us = (double)zclock_usecs();
    uint32_t timeout = b->cfg.queue_timeout_ms;
    if (j->chat.queue_timeout_ms && j->chat.queue_timeout_ms < timeout)
        timeout = j->chat.queue_timeout_ms;
    j->deadline = j->arrival + timeout;
    char jk[24];
    snprintf(jk, sizeof jk, "%" PRIx64, j->job);
    zhashx_insert(b->jobs, jk, j);
    zhashx_insert(b->jobs_by_client, j->key, j);
    q = queue_of(b, j->model);
    j->qhandle = zlistx_add_end(q->jobs, j);
    b->totals.accepted++;
    logf_(b, "request %s accepted for %s", j->id, j->model);
    dispatch(b, q);
}

static void on_cancel(broker *b, const peer *from, const smq_head *h)
{
    smq_err err;
    smq_str id;
    if (smq_cancel_decode(&id, h->body, h->body_len, &err)) {
        send_error(b, from, NULL, 0, 0, SMQ_E_BAD_REQUEST, "CANCEL: %s", err.msg);
        return;
    }
    char key[sizeof((job *)0)->key];
    size_t kn = (size_t)snprintf(key, sizeof key, "%s:", from->key);
    for (uint32_t i = 0; i < id.n; i++)
        kn += (size_t)snprintf(key + kn, sizeof key - kn, "%02x", (uint8_t)id.p[i]);
    job *j = zhashx_lookup(b->jobs_by_client, key);
    if (!j)
        return; /* not open: ignored (PROTOCOL.md §3) */
    if (!j->worker) {
        job_cancelled(b, j);
    } else if (!j->cancelling) {
        j->cancelling = 1;
        send_empty(b, b->back, &j->worker->p, SMQ_CMD_CANCEL, &j->job);
    }
}

static void on_stats(broker *b, const peer *from)
{
    int64_t now = now_ms();
    smq_stats s = { 0 };
    size_t nw = zhashx_size(b->workers), nq = zhashx_size(b->queues);
    s.workers = calloc(nw ? nw : 1, sizeof *s.workers);
    s.queues = calloc(nq ? nq : 1, sizeof *s.queues);
    if (!s.workers || !s.queues) {
        free(s.workers);
        free(s.queues);
        send_error(b, from, NULL, 0, 0, SMQ_E_INTERNAL, "broker out of memory");
        return;
    }
    for (worker *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers)) {
        smq_stats_worker *o = &s.workers[s.n_workers++];
        o->name = (smq_str){ w->name, (uint32_t)strlen(w->name) };
        o->model = (smq_str){ w->model, (uint32_t)strlen(w->model) };
        o->backend = w->backend[0] ? (smq_str){ w->backend, (uint32_t)strlen(w->backend) } : (smq_str){ NULL, 0 };
        o->capacity = w->capacity;
        o->in_flight = w->in_flight;
        o->heartbeat_age_ms = (double)(now - w->last_heard);
    }
    for (queue *q = zhashx_first(b->queues); q; q = zhashx_next(b->queues)) {
        s.queues[s.n_queues].model = (smq_str){ q->model, (uint32_t)strlen(q->model) };
        s.queues[s.n_queues++].depth = (uint32_t)zlistx_size(q->jobs);
    }
    s.totals = b->totals;
    for (client *c = zhashx_first(b->clients); c; c = zhashx_next(b->clients))
        s.clients += c->open > 0;
    s.uptime_ms = (double)(now - b->started);
    smq_buf_reset(&b->buf);
    if (!smq_stats_encode(&b->buf, &s))
        send_msg(b->front, from, SMQ_CMD_STATS, NULL, b->buf.data, b->buf.len);
    free(s.workers);
    free(s.queues);
}

/* One message from a ROUTER, its parts received straight into zmq_msg_t:
 * czmq's zmsg_recv allocates a message, a list and a frame object per part
 * (docs/BENCHMARKS.md, broker). part[0] is the sender's
 * routing id; the frames after it are read in place until in_close. */
#define IN_PARTS 9
typedef struct inbound {
    zmq_msg_t part[IN_PARTS];
    int n_parts;
} inbound;

static void in_close(inbound *in)
{
    for (int i = 0; i < in->n_parts; i++)
        zmq_msg_close(&in->part[i]);
    in->n_parts = 0;
}

/* Receives one message if one is waiting: 0, or -1 when none is (or the
 * socket failed: a signal, the context ending). from: the sender; f: the
 * frames after its routing id, at most 8 (more is a wrong count all the
 * same, which smq_head_parse reports; the rest are received and dropped). */
static int recv_frames(zsock_t *s, inbound *in, peer *from, smq_frame f[8], size_t *n)
{
    void *h = zsock_resolve(s);
    in->n_parts = 0;
    for (int more = 1; more;) {
        zmq_msg_t extra, *m = in->n_parts < IN_PARTS ? &in->part[in->n_parts] : &extra;
        zmq_msg_init(m);
        /* a message's parts arrive together: only the first may be missing */
        if (zmq_msg_recv(m, h, in->n_parts ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(m);
            in_close(in);
            return -1;
        }
        more = zmq_msg_more(m);
        if (m == &extra)
            zmq_msg_close(m);
        else
            in->n_parts++;
    }
    peer_set(from, zmq_msg_data(&in->part[0]), zmq_msg_size(&in->part[0]));
    *n = (size_t)in->n_parts - 1;
    for (size_t i = 0; i < *n; i++)
        f[i] = (smq_frame){ zmq_msg_data(&in->part[i + 1]), zmq_msg_size(&in->part[i + 1]) };
    return 0;
}

/* One message from the client ROUTER: 0, or -1 when none was waiting. */
static int on_client_msg(broker *b)
{
    peer from;
    smq_frame f[8];
    size_t n;
    inbound in;
    if (recv_frames(b->front, &in, &from, f, &n))
        return -1;
    client *c = zhashx_lookup(b->clients, from.key);
    if (c)
        c->last_heard = now_ms();
    smq_head h;
    const char *code;
    smq_err err;
    if (smq_head_parse(f, n, SMQ_HOP_CLIENT, &h, &code, &err)) {
        if (!is_error_frame(f, n))
            send_error(b, &from, NULL, 0, 0, code, "%s", err.msg);
    } else {
        switch (h.cmd) {
        case SMQ_CMD_CHAT:
            on_chat(b, &from, &h);
            break;
        case SMQ_CMD_CANCEL:
            on_cancel(b, &from, &h);
            break;
        case SMQ_CMD_STATS:
            on_stats(b, &from);
            break;
        case SMQ_CMD_HEARTBEAT:
        case SMQ_CMD_ERROR: /* a client's complaint about one of our frames: never answered */
            break;
        default:
            send_error(b, &from, NULL, 0, 0, SMQ_E_BAD_FRAME, "frame 1: a client does not send %s",
                       smq_cmd_name(h.cmd));
        }
    }
    in_close(&in);
    return 0;
}

/* ---- the worker side ---- */

static void on_ready(broker *b, const peer *from, const smq_head *h)
{
    smq_ready r;
    smq_err err;
    if (smq_ready_decode(&r, h->body, h->body_len, &err)) {
        send_worker_error(b, from, SMQ_E_BAD_REQUEST, err.msg);
        return;
    }
    worker *w = zhashx_lookup(b->workers, from->key);
    if (w) /* registered again (it reconnected): its old jobs are gone there */
        worker_drop(b, w, "registered again");
    zhashx_delete(b->told, from->key);
    if (b->draining) {
        smq_buf_reset(&b->buf);
        smq_disconnect_encode(&b->buf, "shutting_down");
        send_msg(b->back, from, SMQ_CMD_DISCONNECT, NULL, b->buf.data, b->buf.len);
        return;
    }
    w = calloc(1, sizeof *w);
    w->p = *from;
    snprintf(w->model, sizeof w->model, "%.*s", (int)r.model.n, r.model.p);
    if (r.name.p)
        snprintf(w->name, sizeof w->name, "%.*s", (int)r.name.n, r.name.p);
    else
        snprintf(w->name, sizeof w->name, "%.16s", from->key);
    snprintf(w->backend, sizeof w->backend, "%.*s", (int)r.backend.n, r.backend.p ? r.backend.p : "");
    w->capacity = r.capacity;
    w->n_ctx = r.n_ctx;
    w->heartbeat_ms = r.heartbeat_ms ? r.heartbeat_ms : b->cfg.heartbeat_ms;
    w->last_heard = w->registered = now_ms();
    zhashx_insert(b->workers, w->p.key, w);
    fprintf(stderr, "smolmq-broker: worker %s ready: model %s, capacity %u%s%s\n", w->name, w->model, w->capacity,
            w->backend[0] ? ", backend " : "", w->backend);
    dispatch(b, queue_of(b, w->model));
}

/* TOKEN, DONE or ERROR for a job: forwarded to its client unchanged. */
static void on_job_frame(broker *b, worker *w, const smq_head *h)
{
    char jk[24];
    snprintf(jk, sizeof jk, "%" PRIx64, h->job);
    job *j = zhashx_lookup(b->jobs, jk);
    if (!j || j->worker != w)
        return; /* a job it no longer holds (cancelled, re-dispatched) */
    int terminal = h->cmd != SMQ_CMD_TOKEN;
    const void *body = h->body;
    size_t len = h->body_len;
    smq_err err;
    if (h->cmd == SMQ_CMD_DONE) {
        smq_done d;
        if (!smq_done_decode(&d, body, len, &err)) {
            b->totals.tokens_out += d.usage.completion_tokens;
            if (d.finish.n == 9 && !memcmp(d.finish.p, "cancelled", 9))
                b->totals.cancelled++;
            else
                b->totals.completed++;
        } else {
            b->totals.completed++;
        }
    } else if (h->cmd == SMQ_CMD_ERROR) {
        b->totals.failed++;
        smq_error e;
        /* A worker's error without the request's id would not end the
         * request for its client: the broker writes one that does. */
        int bad = smq_error_decode(&e, body, len, &err);
        if (bad || !e.id.p) {
            client *c = client_of(b, j->client_key);
            if (c)
                send_error(b, &c->p, j->id, j->id_len, j->frames, SMQ_E_INTERNAL, "the worker failed the request: %.*s",
                           bad ? (int)strlen(err.msg) : (int)e.message.n, bad ? err.msg : e.message.p);
            job_free(b, j);
            dispatch(b, queue_of(b, w->model));
            return;
        }
    }
    client *c = client_of(b, j->client_key);
    if (c && send_msg(b->front, &c->p, h->cmd, NULL, body, len)) {
        client_drop(b, c, "unroutable");
        c = NULL;
    }
    j->frames++;
    if (terminal) {
        logf_(b, "request %s ended with %s after %u frames", j->id, smq_cmd_name(h->cmd), j->frames);
        job_free(b, j);
        dispatch(b, queue_of(b, w->model));
    }
}

/* One message from the worker ROUTER: 0, or -1 when none was waiting. */
static int on_worker_msg(broker *b)
{
    peer from;
    smq_frame f[8];
    size_t n;
    inbound in;
    if (recv_frames(b->back, &in, &from, f, &n))
        return -1;
    smq_head h;
    const char *code;
    smq_err err;
    worker *w = zhashx_lookup(b->workers, from.key);
    if (w)
        w->last_heard = now_ms();
    if (smq_head_parse(f, n, SMQ_HOP_WORKER, &h, &code, &err)) {
        if (!is_error_frame(f, n))
            send_worker_error(b, &from, code, err.msg);
    } else if (h.cmd == SMQ_CMD_READY) {
        on_ready(b, &from, &h);
    } else if (!w) {
        /* A worker this broker does not know (it restarted, or dropped the
         * worker as silent): tell it to register again, once. Its frames
         * sent before it heard get no second DISCONNECT: that would make
         * it register twice, and the second READY would take back (as
         * "registered again") the requests dispatched to it after the
         * first. Told again only if it stays silent past liveness. */
        int64_t now = now_ms(), *at = zhashx_lookup(b->told, from.key);
        if (h.cmd != SMQ_CMD_DISCONNECT && (!at || now - *at > (int64_t)b->cfg.heartbeat_ms * b->cfg.liveness)) {
            smq_buf_reset(&b->buf);
            smq_disconnect_encode(&b->buf, b->draining ? "shutting_down" : "unknown worker: send READY");
            send_msg(b->back, &from, SMQ_CMD_DISCONNECT, NULL, b->buf.data, b->buf.len);
            if (!at && (at = malloc(sizeof *at)))
                zhashx_insert(b->told, from.key, at);
            if (at)
                *at = now;
        }
    } else {
        switch (h.cmd) {
        case SMQ_CMD_HEARTBEAT: {
            smq_worker_hb hb;
            if (!smq_worker_hb_decode(&hb, h.body, h.body_len, &err)) {
                uint32_t before = w->capacity;
                w->capacity = hb.capacity;
                if (w->capacity > before)
                    dispatch(b, queue_of(b, w->model));
            }
            break;
        }
        case SMQ_CMD_TOKEN:
        case SMQ_CMD_DONE:
        case SMQ_CMD_ERROR:
            on_job_frame(b, w, &h);
            break;
        case SMQ_CMD_DISCONNECT:
            worker_drop(b, w, "disconnected");
            break;
        default: {
            char m[128];
            snprintf(m, sizeof m, "frame 1: a worker does not send %s", smq_cmd_name(h.cmd));
            send_worker_error(b, &from, SMQ_E_BAD_FRAME, m);
        }
        }
    }
    in_close(&in);
    return 0;
}

/* ---- time ---- */

/* Liveness, heartbeats, queue deadlines and the drain. Returns 1 when the
 * drain is over and the broker should exit. */
static int on_tick(broker *b)
{
    int64_t now = now_ms();
    int64_t dead = (int64_t)b->cfg.heartbeat_ms * b->cfg.liveness;
    /* By key: dropping one worker can drop another (an unroutable one met
     * while re-dispatching), so pointers collected first may go stale. */
    zlist_t *silent = zlist_new();
    zlist_autofree(silent);
    for (worker *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers))
        if (now - w->last_heard > (int64_t)w->heartbeat_ms * b->cfg.liveness)
            zlist_append(silent, w->p.key);
    for (char *key = zlist_first(silent); key; key = zlist_next(silent)) {
        worker *w = zhashx_lookup(b->workers, key);
        if (w)
            worker_drop(b, w, "silent");
    }
    zlist_destroy(&silent);
    zlist_t *cs = items_of(b->clients);
    for (client *c = zlist_first(cs); c; c = zlist_next(cs)) {
        if (now - c->last_heard <= dead)
            continue;
        if (c->open)
            client_drop(b, c, "silent");
        else
            zhashx_delete(b->clients, c->p.key);
    }
    zlist_destroy(&cs);
    for (queue *q = zhashx_first(b->queues); q; q = zhashx_next(b->queues)) {
        zlist_t *late = zlist_new();
        for (job *j = zlistx_first(q->jobs); j; j = zlistx_next(q->jobs))
            if (now >= j->deadline)
                zlist_append(late, j);
        for (job *j = zlist_first(late); j; j = zlist_next(late))
            job_fail(b, j, SMQ_E_TIMEOUT, "no worker of model \"%s\" was free within %" PRId64 " ms", j->model,
                     now - j->arrival);
        zlist_destroy(&late);
    }
    if (now >= b->next_heartbeat) {
        b->next_heartbeat = now + b->cfg.heartbeat_ms;
        /* A heartbeat that cannot be routed finds a peer whose connection
         * closed (a killed process) within one interval, sooner than its
         * silence would. */
        smq_buf hb = { 0 };
        smq_broker_hb_encode(&hb, b->cfg.heartbeat_ms);
        zlist_t *gone = zlist_new();
        zlist_autofree(gone);
        for (worker *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers))
            if (send_msg(b->back, &w->p, SMQ_CMD_HEARTBEAT, NULL, hb.data, hb.len))
                zlist_append(gone, w->p.key);
        for (char *key = zlist_first(gone); key; key = zlist_next(gone)) {
            worker *w = zhashx_lookup(b->workers, key);
            if (w)
                worker_drop(b, w, "connection closed");
        }
        zlist_purge(gone);
        for (client *c = zhashx_first(b->clients); c; c = zhashx_next(b->clients))
            if (c->open && send_msg(b->front, &c->p, SMQ_CMD_HEARTBEAT, NULL, hb.data, hb.len))
                zlist_append(gone, c->p.key);
        for (char *key = zlist_first(gone); key; key = zlist_next(gone)) {
            client *c = zhashx_lookup(b->clients, key);
            if (c)
                client_drop(b, c, "connection closed");
        }
        zlist_destroy(&gone);
        smq_buf_free(&hb);
    }
    /* Unknown workers told DISCONNECT long ago and not heard since: gone. */
    if (zhashx_size(b->told)) {
        zlist_t *stale = zlist_new();
        zlist_autofree(stale);
        for (int64_t *at = zhashx_first(b->told); at; at = zhashx_next(b->told))
            if (now - *at > 10 * dead)
                zlist_append(stale, (void *)zhashx_cursor(b->told));
        for (char *key = zlist_first(stale); key; key = zlist_next(stale))
            zhashx_delete(b->told, key);
        zlist_destroy(&stale);
    }
    if (b->watchdog_ms && now >= b->next_watchdog) {
        b->next_watchdog = now + (int64_t)b->watchdog_ms;
        smq_notify("WATCHDOG=1");
    }
    if (stop_signal && !b->draining) {
        b->draining = 1;
        smq_notify("STOPPING=1");
        b->drain_deadline = now + b->cfg.drain_ms;
        fprintf(stderr, "smolmq-broker: draining: %zu requests open, up to %u ms\n", zhashx_size(b->jobs),
                b->cfg.drain_ms);
        zlist_t *js = jobs_where(b, any_job, NULL);
        for (job *j = zlist_first(js); j; j = zlist_next(js))
            if (!j->worker)
                job_fail(b, j, SMQ_E_SHUTTING_DOWN, "the broker is shutting down");
        zlist_destroy(&js);
    }
    if (!b->draining || (zhashx_size(b->jobs) && now < b->drain_deadline))
        return 0;
    zlist_t *js = jobs_where(b, any_job, NULL);
    for (job *j = zlist_first(js); j; j = zlist_next(js)) {
        if (j->worker)
            send_empty(b, b->back, &j->worker->p, SMQ_CMD_CANCEL, &j->job);
        job_fail(b, j, SMQ_E_SHUTTING_DOWN, "the broker shut down before the request finished");
    }
    zlist_destroy(&js);
    smq_buf_reset(&b->buf);
    smq_disconnect_encode(&b->buf, "shutting_down");
    for (worker *w = zhashx_first(b->workers); w; w = zhashx_next(b->workers))
        send_msg(b->back, &w->p, SMQ_CMD_DISCONNECT, NULL, b->buf.data, b->buf.len);
    return 1;
}

/* ---- life cycle ---- */

/* A ROUTER as both sides use it. Messages past 64 MiB drop the connection
 * (libzmq's limit, which keeps a hostile peer from filling memory); below
 * that, a body over SMQ_BODY_MAX gets a bad_frame error. */
static zsock_t *new_router(smq_err *err)
{
    zsock_t *s = zsock_new(ZMQ_ROUTER);
    if (!s) {
        smq_err_set(err, "cannot create a ZeroMQ socket");
        return NULL;
    }
    zsock_set_router_mandatory(s, 1);
    zsock_set_sndhwm(s, 0);
    zsock_set_rcvhwm(s, 0);
    zsock_set_linger(s, 2000);
    zsock_set_maxmsgsize(s, 64 << 20);
    return s;
}

static int bind_endpoint(zsock_t *s, const char *ep, char *bound, size_t cap, smq_err *err)
{
    if (zsock_bind(s, "%s", ep) < 0)
        return smq_err_set(err, "cannot bind %s: %s", ep, zmq_strerror(zmq_errno()));
    snprintf(bound, cap, "%s", zsock_endpoint(s) ? zsock_endpoint(s) : ep);
    return 0;
}

broker *broker_new(const broker_config *cfg, smq_err *err)
{
    broker *b = calloc(1, sizeof *b);
    if (!b) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    if (!b->cfg.clients)
        b->cfg.clients = "tcp://*:5555";
    if (!b->cfg.workers)
        b->cfg.workers = "tcp://*:5556";
    if (!b->cfg.heartbeat_ms)
        b->cfg.heartbeat_ms = SMQ_HEARTBEAT_MS;
    if (!b->cfg.liveness)
        b->cfg.liveness = SMQ_LIVENESS;
    if (!b->cfg.queue_max)
        b->cfg.queue_max = 256;
    if (!b->cfg.queue_timeout_ms)
        b->cfg.queue_timeout_ms = 30000;
    if (!b->cfg.drain_ms)
        b->cfg.drain_ms = 10000;
    zsys_handler_set(NULL); /* our own SIGINT/SIGTERM: drain, do not just stop */
    zsys_init();
    b->workers = zhashx_new();
    b->clients = zhashx_new();
    b->jobs = zhashx_new();
    b->jobs_by_client = zhashx_new();
    b->queues = zhashx_new();
    b->affinity = zhashx_new();
    b->told = zhashx_new();
    zhashx_set_destructor(b->told, free_item);
    zhashx_set_destructor(b->workers, free_item);
    zhashx_set_destructor(b->clients, free_item);
    zhashx_set_destructor(b->jobs, free_item);
    zhashx_set_duplicator(b->affinity, (zhashx_duplicator_fn *)strdup);
    zhashx_set_destructor(b->affinity, free_item);
    if (!(b->front = new_router(err)) || !(b->back = new_router(err)))
        goto fail;
    if (b->cfg.curve_secret) {
        zsock_set_zap_domain(b->front, "clients");
        zsock_set_zap_domain(b->back, "workers");
        if (!(b->curve = curve_new(b->cfg.curve_secret, b->cfg.client_keys, b->cfg.worker_keys, err)))
            goto fail;
        curve_apply_server(b->curve, b->front);
        curve_apply_server(b->curve, b->back);
    } else if (b->cfg.client_keys || b->cfg.worker_keys) {
        smq_err_set(err, "--client-keys and --worker-keys need --curve-secret");
        goto fail;
    }
    if (bind_endpoint(b->front, b->cfg.clients, b->front_ep, sizeof b->front_ep, err) ||
        bind_endpoint(b->back, b->cfg.workers, b->back_ep, sizeof b->back_ep, err))
        goto fail;
    b->started = now_ms();
    return b;
fail:
    broker_destroy(&b);
    return NULL;
}

void broker_destroy(broker **self)
{
    broker *b = *self;
    if (!b)
        return;
    if (b->jobs) {
        zlist_t *js = jobs_where(b, any_job, NULL);
        for (job *j = zlist_first(js); j; j = zlist_next(js))
            job_free(b, j);
        zlist_destroy(&js);
    }
    if (b->queues) {
        for (queue *q = zhashx_first(b->queues); q; q = zhashx_next(b->queues)) {
            zlistx_destroy(&q->jobs);
            free(q);
        }
        zhashx_destroy(&b->queues);
    }
    zhashx_destroy(&b->jobs);
    zhashx_destroy(&b->jobs_by_client);
    zhashx_destroy(&b->workers);
    zhashx_destroy(&b->clients);
    zhashx_destroy(&b->affinity);
    zhashx_destroy(&b->told);
    zsock_destroy(&b->front);
    zsock_destroy(&b->back);
    curve_destroy(&b->curve);
    smq_buf_free(&b->buf);
    free(b);
    *self = NULL;
}

const char *broker_clients_endpoint(const broker *b)
{
    return b->front_ep;
}

const char *broker_workers_endpoint(const broker *b)
{
    return b->back_ep;
}

/* zloop handlers. Each reader takes a bounded batch, so that neither side
 * starves the other; what is left wakes zmq_poll again. A batch ends when a
 * receive without waiting finds nothing: asking ZMQ_EVENTS before each
 * message instead cost about as much as the message itself. */
static int on_front(zloop_t *loop, zsock_t *s, void *arg)
{
    (void)loop;
    (void)s;
    for (int i = 0; i < 256 && !on_client_msg(arg); i++)
        ;
    return 0;
}

static int on_back(zloop_t *loop, zsock_t *s, void *arg)
{
    (void)loop;
    (void)s;
    for (int i = 0; i < 256 && !on_worker_msg(arg); i++)
        ;
    return 0;
}

static int on_zap(zloop_t *loop, zsock_t *s, void *arg)
{
    (void)loop;
    (void)s;
    curve_zap_handle(((broker *)arg)->curve);
    return 0;
}

static int on_timer(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    broker *b = arg;
    if (on_tick(b)) {
        b->finished = 1;
        return -1; /* ends zloop_start */
    }
    return 0;
}

int broker_run(broker *b)
{
    struct sigaction sa = { 0 };
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    zloop_t *loop = zloop_new();
    zloop_reader(loop, b->front, on_front, b);
    zloop_reader(loop, b->back, on_back, b);
    if (b->curve)
        zloop_reader(loop, curve_zap_sock(b->curve), on_zap, b);
    zloop_timer(loop, TICK_MS, 0, on_timer, b);
    zloop_set_nonstop(loop, true);
    /* Bound and about to serve: systemd (Type=notify) may start the rest;
     * its watchdog, when asked for, is fed from the tick. */
    b->watchdog_ms = smq_watchdog_ms();
    smq_notify("READY=1");
    /* A signal interrupts zmq_poll, and zloop_start returns; the timer's
     * next tick starts the drain, so the loop is entered again. Returning
     * without a signal means the ZeroMQ context is gone. */
    while (!b->finished && zloop_start(loop) == 0 && stop_signal)
        ;
    zloop_destroy(&loop);
    fprintf(stderr,
            "smolmq-broker: stopped (%" PRIu64 " requests accepted, %" PRIu64 " completed, %" PRIu64 " failed, %" PRIu64
            " cancelled)\n",
            b->totals.accepted, b->totals.completed, b->totals.failed, b->totals.cancelled);
    return 0;
}

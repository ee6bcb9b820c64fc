/* worker.c - see worker.h. The life of a job (the broker's name for a
 * request on this hop):
 *
 *   CHAT --decode, render, tokenize, engine_submit--> running
 *   running --a step with a token--> TOKEN (seq 0, 1, ...)
 *   running --its last event--> [TOKEN] DONE, or ERROR internal
 *
 * CANCEL asks the engine to end the job; it still ends with its DONE
 * ("cancelled") from the engine's event. When the broker is lost (silent
 * past liveness x interval) or says DISCONNECT, every job is cancelled
 * locally and becomes silent: the engine ends it at its next step, and
 * nothing more is sent for it, since the broker has given it up. So does a
 * running job whose CHAT comes again (the broker re-dispatched it).
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "chat_request.h"
#include "chat_template.h"
#include "curve_cert.h"
#include "engine.h"
#include "model.h"
#include "proto.h"
#include "sd_notify.h"
#include "step_budget.h"
#include "tokenizer.h"
#include "../tool/tool.h"
#include "utf8.h"
#include "worker_sizes.h"

#define PAGE_SIZE       16
#define STEP_TOKENS_MAX 512  /* the engine's default chunk: larger ones grow the step buffers for little gain */
#define STEP_MS_CPU     1500 /* what a CPU step that reads a prompt should take, by default (worker_new) */
#define MAX_FRAMES      8    /* more than any SMQ/1 message has */
#define DRAIN_MAX       1000 /* messages taken between two steps */
#define LINGER_MS       1000 /* how long the last frames may take to leave at exit */

typedef struct job {
    uint64_t job_id; /* the broker's name for it (the job id frame) */
    char id[SMQ_ID_MAX];
    uint32_t id_len;   /* the client's request id */
    uint64_t seq_id;   /* the engine's sequence */
    uint64_t next_seq; /* seq of its next frame */
    int silent;
    double queued_ms;                        /* in the broker before it came here */
    double t_recv, t_start, t_first, t_last; /* tool_now(); 0: not yet */
    struct job *next;
} job;

struct worker {
    worker_config cfg;
    char *model_name, *name;
    model *m;
    tokenizer *tok;
    engine *eng;
    chat_template_kind tmpl;
    const char *backend_name;
    worker_sizes size;
    uint32_t heartbeat_ms, liveness;
    uint32_t broker_heartbeat_ms; /* the broker's interval, from its heartbeats (0: not heard) */
    step_budget budget;
    double load_s;

    void *zctx, *sock;
    int curve;
    char public_key[CURVE_Z85_LEN + 1], secret_key[CURVE_Z85_LEN + 1];
    double heard_at; /* the last frame from the broker */
    double hb_due;   /* our next HEARTBEAT */
    double wd_s;     /* systemd's watchdog (WatchdogSec= / 2, sd_notify.h), 0: none; fed by the loop, so that a
                        step that never ends (a wedged GPU) gets the process restarted */
    double wd_due;
    int told_alive;   /* the alive file could not be set (said once) */
    int broker_quiet; /* reconnecting after a silence (said once, until it answers) */

    job *jobs;
    uint32_t n_jobs, n_live; /* all jobs in the engine; those not silent */
    int signals;             /* SIGTERM/SIGINT received */
    double drain_until;      /* the first signal's bound (cfg.drain_ms) on running requests; 0: none */
    uint64_t seeds;          /* seeds handed out (for requests without one) */
    double step_started;
    smq_buf body;     /* the message being encoded */
    uint64_t dropped; /* messages the socket would not take */
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smolmq worker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static double interval_s(const worker *w)
{
    return w->heartbeat_ms / 1e3;
}

/* How long the broker may be silent before it counts as lost: liveness
 * intervals, the broker's own interval when it is the longer. */
static double silence_s(const worker *w)
{
    uint32_t ms = w->broker_heartbeat_ms > w->heartbeat_ms ? w->broker_heartbeat_ms : w->heartbeat_ms;
    return ms / 1e3 * w->liveness;
}

/* ---- frames out ---- */

/* Sends header, command, the job id frame (when job is not NULL) and w->body.
 * Never blocks: the send queue is unlimited (SNDHWM 0), so a send fails only
 * when the socket itself does; the message is then dropped and counted. */
static void send_msg(worker *w, const char *cmd, const uint64_t *job_id)
{
    uint8_t jid[8];
    const int more = ZMQ_SNDMORE | ZMQ_DONTWAIT;
    int rc = zmq_send(w->sock, SMQ_HEADER, SMQ_HEADER_LEN, more);
    if (rc >= 0)
        rc = zmq_send(w->sock, cmd, strlen(cmd), more);
    if (rc >= 0 && job_id) {
        smq_job_put(*job_id, jid);
        rc = zmq_send(w->sock, jid, sizeof jid, more);
    }
    if (rc >= 0)
        rc = zmq_send(w->sock, w->body.data, w->body.len, ZMQ_DONTWAIT);
    if (rc < 0 && w->dropped++ == 0)
        say("the socket refused a %s frame (%s); dropping what it refuses", cmd, zmq_strerror(errno));
}

static void send_ready(worker *w)
{
    smq_ready r = { { w->model_name, (uint32_t)strlen(w->model_name) },
                    { w->name, (uint32_t)strlen(w->name) },
                    { w->backend_name, (uint32_t)strlen(w->backend_name) },
                    w->size.capacity,
                    w->size.n_ctx,
                    w->heartbeat_ms };
    smq_buf_reset(&w->body);
    if (smq_ready_encode(&w->body, &r) == 0)
        send_msg(w, "READY", NULL);
}

static void send_heartbeat(worker *w)
{
    /* Draining: capacity 0, so the broker sends nothing more. */
    smq_worker_hb hb = { w->signals ? 0 : w->size.capacity, w->n_live };
    smq_buf_reset(&w->body);
    if (smq_worker_hb_encode(&w->body, &hb) == 0)
        send_msg(w, "HEARTBEAT", NULL);
}

static void send_disconnect(worker *w)
{
    smq_buf_reset(&w->body);
    if (smq_disconnect_encode(&w->body, "shutting_down") == 0)
        send_msg(w, "DISCONNECT", NULL);
}

/* ERROR on job job_id: terminal for request id (seq: its next) when id.p is
 * set, else a notice about a frame that could not be tied to a request. */
static void send_error(worker *w, uint64_t job_id, smq_str id, uint64_t seq, const char *code, const char *message)
{
    smq_error e = { id, seq, { code, (uint32_t)strlen(code) }, { message, (uint32_t)strlen(message) } };
    smq_buf_reset(&w->body);
    if (smq_error_encode(&w->body, &e) == 0)
        send_msg(w, "ERROR", &job_id);
}

/* ---- jobs ---- */

/* The live job of that id. A silent one (given up at a DISCONNECT, ended
 * by the engine at its next step) is not found: the broker may send the
 * same job again at once, to this very worker once it registered again,
 * and that is a new request to run, not a duplicate. */
static job *job_find(worker *w, uint64_t job_id)
{
    for (job *j = w->jobs; j; j = j->next)
        if (j->job_id == job_id && !j->silent)
            return j;
    return NULL;
}

static void job_remove(worker *w, job *j)
{
    for (job **pp = &w->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    w->n_jobs--;
    if (!j->silent)
        w->n_live--;
    free(j);
}

static smq_str job_id_str(const job *j)
{
    return (smq_str){ j->id, j->id_len };
}

/* Gives a job up: the engine ends it at its next step, and no frame more
 * is sent for it. */
static void cancel_silently(worker *w, job *j)
{
    j->silent = 1;
    w->n_live--;
    engine_cancel(w->eng, j->seq_id);
}

/* The broker gave the jobs up (it is lost, or said DISCONNECT). */
static void cancel_all_silently(worker *w)
{
    for (job *j = w->jobs; j; j = j->next)
        if (!j->silent)
            cancel_silently(w, j);
}

/* A seed for a request without one: the clock, the process and a counter,
 * mixed (splitmix64's finalizer), so that two requests never share one. */
static uint64_t fresh_seed(worker *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    x ^= ((uint64_t)getpid() << 32) + 0x9E3779B97F4A7C15ull * ++w->seeds;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* ---- engine events -> frames ---- */

/* One event is one job's part of one step: its token and text deltas (a
 * TOKEN frame), and on its last event why it finished (DONE, or ERROR when
 * the step failed). Times count from the request's arrival at the broker
 * (PROTOCOL.md §4): its queued_ms there plus the time since it came here. */
static void on_event(void *ctx, const engine_event *ev)
{
    worker *w = ctx;
    job *j = ev->user;
    double now = tool_now();
    if (!j->t_start)
        j->t_start = w->step_started; /* it ended (cancelled) while still waiting */
    if (j->silent) {
        if (ev->finish != FINISH_NONE)
            job_remove(w, j);
        return;
    }
    if (ev->token >= 0 || ev->n_reasoning || ev->n_content) {
        if (ev->token >= 0) {
            if (!j->t_first)
                j->t_first = now;
            j->t_last = now;
        }
        smq_token t = { job_id_str(j),
                        j->next_seq++,
                        &ev->token,
                        ev->token >= 0 ? 1 : 0,
                        { ev->reasoning, (uint32_t)ev->n_reasoning },
                        { ev->content, (uint32_t)ev->n_content } };
        smq_buf_reset(&w->body);
        if (smq_token_encode(&w->body, &t) == 0)
            send_msg(w, "TOKEN", &j->job_id);
    }
    if (ev->finish == FINISH_NONE)
        return;
    if (ev->finish == FINISH_ERROR) {
        send_error(w, j->job_id, job_id_str(j), j->next_seq++, SMQ_E_INTERNAL,
                   ev->error ? ev->error : "the engine step failed");
    } else {
        const char *fin = finish_reason_name(ev->finish);
        smq_done d = { job_id_str(j), j->next_seq++, { fin, (uint32_t)strlen(fin) } };
        d.usage = (smq_usage){ ev->n_prompt, ev->n_generated, ev->n_reused, ev->n_thinking };
        d.timings.queue_ms = j->queued_ms + (j->t_start - j->t_recv) * 1e3;
        d.timings.ttft_ms = j->t_first ? j->queued_ms + (j->t_first - j->t_recv) * 1e3 : 0; /* 0: no token */
        d.timings.total_ms = j->queued_ms + (now - j->t_recv) * 1e3;
        d.timings.decode_tps = ev->n_generated > 1 && j->t_last > j->t_first
                                   ? (double)(ev->n_generated - 1) / (j->t_last - j->t_first)
                                   : 0.0;
        smq_buf_reset(&w->body);
        if (smq_done_encode(&w->body, &d) == 0)
            send_msg(w, "DONE", &j->job_id);
    }
    job_remove(w, j);
}

/* ---- frames in ---- */

static void on_chat(worker *w, uint64_t job_id, const uint8_t *body, size_t len)
{
    smq_err err;
    smq_chat c;
    smq_chat_init(&c);
    if (smq_chat_decode(&c, body, len, &err)) {
        /* Terminal for the request when its id can be read: the decoder may
         * have stopped before it, so read it alone (CANCEL's body is {id},
         * and every other key of a CHAT is unknown to that decoder). */
        smq_str id = c.id;
        smq_err ignored;
        if (!id.p && smq_cancel_decode(&id, body, len, &ignored))
            id = (smq_str){ NULL, 0 };
        send_error(w, job_id, id, 0, SMQ_E_BAD_REQUEST, err.msg);
        smq_chat_free(&c);
        return;
    }
    job *old = job_find(w, job_id);
    if (old) {
        /* The broker sends a job again only when it no longer counts the
         * first copy (it re-dispatched the request, which no client has seen
         * a token of): that copy ends without a frame more, and this one
         * runs from seq 0 (PROTOCOL.md section 7). */
        say("job %" PRIu64 " was sent again: its first copy is dropped", job_id);
        cancel_silently(w, old);
    }
    if (w->signals) {
        send_error(w, job_id, c.id, 0, SMQ_E_SHUTTING_DOWN, "this worker is shutting down: it takes no new requests");
        smq_chat_free(&c);
        return;
    }
    job *j = calloc(1, sizeof *j);
    chat_request r;
    const char *code = SMQ_E_INTERNAL;
    if (!j) {
        send_error(w, job_id, c.id, 0, SMQ_E_INTERNAL, "out of memory");
        smq_chat_free(&c);
        return;
    }
    j->job_id = job_id;
    j->id_len = c.id.n < SMQ_ID_MAX ? c.id.n : SMQ_ID_MAX; /* the decoder holds it to 1-64 bytes */
    memcpy(j->id, c.id.p, j->id_len);
    j->queued_ms = c.queued_ms > 0 ? c.queued_ms : 0;
    j->t_recv = tool_now();
    if (chat_request_build(&r, &c, w->tmpl, w->tok, fresh_seed(w), &code, &err) == 0) {
        r.req.user = j;
        j->seq_id = engine_submit(w->eng, &r.req, &err);
        if (!j->seq_id)
            code = r.req.n_prompt >= w->size.n_ctx ? SMQ_E_PROMPT_TOO_LONG : SMQ_E_BAD_REQUEST;
        chat_request_free(&r);
    }
    if (!j->seq_id) {
        send_error(w, job_id, c.id, 0, code, err.msg);
        free(j);
    } else {
        j->next = w->jobs;
        w->jobs = j;
        w->n_jobs++;
        w->n_live++;
    }
    smq_chat_free(&c);
}

static void on_cancel(worker *w, uint64_t job_id)
{
    job *j = job_find(w, job_id);
    if (j)
        engine_cancel(w->eng, j->seq_id); /* its DONE "cancelled" comes from the engine's event */
}

static void on_disconnect(worker *w, const uint8_t *body, size_t len)
{
    smq_str reason = { NULL, 0 };
    smq_err ignored;
    if (smq_disconnect_decode(&reason, body, len, &ignored))
        reason.p = NULL;
    say("the broker said DISCONNECT%s%.*s%s: cancelling %" PRIu32 " request%s%s", reason.p ? " (" : "",
        reason.p ? (int)(reason.n < 128 ? reason.n : 128) : 0, reason.p ? reason.p : "", reason.p ? ")" : "", w->n_live,
        w->n_live == 1 ? "" : "s", w->signals ? "" : "; registering again");
    cancel_all_silently(w);
    if (!w->signals)
        send_ready(w);
}

static uint64_t job_get(const smq_frame *f)
{
    const uint8_t *p = f->data;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* One message from the broker (parts[0..n) of total frames). */
static void on_message(worker *w, const zmq_msg_t *parts, size_t n, size_t total)
{
    smq_frame f[MAX_FRAMES];
    for (size_t i = 0; i < n; i++)
        f[i] = (smq_frame){ zmq_msg_data((zmq_msg_t *)&parts[i]), zmq_msg_size((zmq_msg_t *)&parts[i]) };
    w->heard_at = tool_now();
    if (w->broker_quiet) {
        say("the broker answers again");
        w->broker_quiet = 0;
    }
    smq_head h;
    const char *code = SMQ_E_BAD_FRAME;
    smq_err err;
    int bad = total > MAX_FRAMES ? smq_err_set(&err, "a message of %zu frames (SMQ/1 messages have 3 or 4)", total)
                                 : smq_head_parse(f, n, SMQ_HOP_WORKER, &h, &code, &err);
    if (bad) {
        /* Answered (PROTOCOL.md §2), except an ERROR: two peers must not
         * trade errors about each other's errors forever. */
        int is_error = n > 1 && f[1].size == 5 && !memcmp(f[1].data, "ERROR", 5);
        say("a frame from the broker cannot be read: %s", err.msg);
        if (!is_error) {
            send_error(w, n >= 4 && f[2].size == 8 ? job_get(&f[2]) : 0, (smq_str){ NULL, 0 }, 0, code, err.msg);
        }
        return;
    }
    switch (h.cmd) {
    case SMQ_CMD_CHAT:
        on_chat(w, h.job, h.body, h.body_len);
        break;
    case SMQ_CMD_CANCEL:
        on_cancel(w, h.job);
        break;
    case SMQ_CMD_HEARTBEAT: {
        uint32_t ms;
        smq_err e2;
        if (smq_broker_hb_decode(&ms, h.body, h.body_len, &e2) == 0 && ms)
            w->broker_heartbeat_ms = ms;
        break;
    }
    case SMQ_CMD_DISCONNECT:
        on_disconnect(w, h.body, h.body_len);
        break;
    case SMQ_CMD_ERROR: {
        smq_error e;
        if (smq_error_decode(&e, h.body, h.body_len, &err) == 0)
            say("the broker reports an error: %.*s: %.*s", (int)(e.code.n < 64 ? e.code.n : 64), e.code.p,
                (int)(e.message.n < 400 ? e.message.n : 400), e.message.p);
        break;
    }
    default: {
        char m[128];
        snprintf(m, sizeof m, "frame 1: a broker does not send %s to a worker", smq_cmd_name(h.cmd));
        say("%s", m);
        send_error(w, 0, (smq_str){ NULL, 0 }, 0, SMQ_E_BAD_FRAME, m);
        break;
    }
    }
}

/* Takes the messages waiting on the socket, without blocking. At most
 * DRAIN_MAX, so that a flood cannot starve the running requests. */
static void drain_socket(worker *w)
{
    for (int k = 0; k < DRAIN_MAX; k++) {
        zmq_msg_t parts[MAX_FRAMES];
        size_t n = 0, total = 0;
        int more = 1;
        while (more) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, w->sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&msg); /* EAGAIN: nothing (more) waiting; the parts of a message come together */
                break;
            }
            more = zmq_msg_more(&msg);
            if (n < MAX_FRAMES)
                parts[n++] = msg;
            else
                zmq_msg_close(&msg);
            total++;
        }
        if (total)
            on_message(w, parts, n, total);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&parts[i]);
        if (!total)
            return;
    }
}

/* ---- the socket ---- */

static int open_socket(worker *w, smq_err *err)
{
    int zero = 0;
    w->sock = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!w->sock)
        return smq_err_set(err, "cannot create a socket: %s", zmq_strerror(errno));
    /* Unlimited send queue: the engine's thread never waits on the network.
     * Linger 0: what is queued for a lost broker is dropped on reconnect. */
    if (zmq_setsockopt(w->sock, ZMQ_SNDHWM, &zero, sizeof zero) ||
        zmq_setsockopt(w->sock, ZMQ_LINGER, &zero, sizeof zero))
        return smq_err_set(err, "cannot set up the socket: %s", zmq_strerror(errno));
    if (w->curve && curve_client_apply(w->sock, w->cfg.broker_key, w->public_key, w->secret_key, "worker", err))
        return -1;
    if (zmq_connect(w->sock, w->cfg.broker))
        return smq_err_set(err, "--broker %s: %s", w->cfg.broker, zmq_strerror(errno));
    return 0;
}

/* The broker was silent past liveness x interval: it is gone (or restarted
 * without us). Cancel what runs, and start over on a fresh socket, so that
 * nothing queued for the old connection reaches a new broker. */
static int reconnect(worker *w, smq_err *err)
{
    if (!w->broker_quiet)
        say("heard nothing from the broker for %.1f s: cancelling %" PRIu32 " request%s, reconnecting to %s "
            "(every %.1f s until it answers)",
            tool_now() - w->heard_at, w->n_live, w->n_live == 1 ? "" : "s", w->cfg.broker, silence_s(w));
    w->broker_quiet = 1;
    cancel_all_silently(w);
    zmq_close(w->sock);
    w->sock = NULL;
    if (open_socket(w, err))
        return -1;
    w->heard_at = tool_now();
    if (!w->signals)
        send_ready(w);
    return 0;
}

/* ---- the loop ---- */

static void on_signal(worker *w)
{
    w->signals++;
    if (w->signals == 1) {
        if (w->cfg.drain_ms)
            say("stopping: finishing %" PRIu32 " running request%s for at most %" PRIu32
                " ms (a second signal cancels them)",
                w->n_live, w->n_live == 1 ? "" : "s", w->cfg.drain_ms);
        else
            say("stopping: finishing %" PRIu32 " running request%s (a second signal cancels them)", w->n_live,
                w->n_live == 1 ? "" : "s");
        send_heartbeat(w); /* capacity 0 at once */
        smq_notify("STOPPING=1");
        if (w->cfg.drain_ms)
            w->drain_until = tool_now() + w->cfg.drain_ms / 1e3;
    } else if (w->signals == 2) {
        say("cancelling %" PRIu32 " request%s (a third signal leaves at once)", w->n_live, w->n_live == 1 ? "" : "s");
        for (job *j = w->jobs; j; j = j->next)
            if (!j->silent)
                engine_cancel(w->eng, j->seq_id);
    } else if (w->signals == 3) {
        say("leaving now");
    }
}

static void take_signals(worker *w)
{
    char buf[16];
    ssize_t n;
    if (w->cfg.signal_fd < 0)
        return;
    while ((n = read(w->cfg.signal_fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            on_signal(w);
}

/* Draining past --drain-ms: each request still running ends with ERROR
 * shutting_down, and the engine drops it at its next step (silent). */
static void end_drain(worker *w)
{
    say("the drain bound (--drain-ms %" PRIu32 ") passed: ending %" PRIu32 " running request%s", w->cfg.drain_ms,
        w->n_live, w->n_live == 1 ? "" : "s");
    char msg[160];
    snprintf(msg, sizeof msg,
             "this worker is shutting down, and its drain bound (%" PRIu32 " ms) passed before the request finished",
             w->cfg.drain_ms);
    for (job *j = w->jobs; j; j = j->next)
        if (!j->silent)
            send_error(w, j->job_id, job_id_str(j), j->next_seq++, SMQ_E_SHUTTING_DOWN, msg);
    cancel_all_silently(w);
    w->drain_until = 0;
}

/* One engine step, its prompt tokens bounded so that it stays well inside
 * a heartbeat interval (step_budget.h). */
static void run_step(worker *w)
{
    smq_err err;
    uint32_t decoding = 0;
    for (job *j = w->jobs; j; j = j->next)
        decoding += !j->silent && j->t_first;
    engine_set_max_step_tokens(w->eng, step_budget_prompt_tokens(&w->budget, decoding));
    double t0 = w->step_started = tool_now();
    int left = engine_step(w->eng, on_event, w, &err);
    double dt = tool_now() - t0;
    if (left < 0)
        say("a step failed: %s", err.msg); /* its sequences ended with FINISH_ERROR: ERROR internal */
    int full = 0;                          /* a prompt is left unfinished: the step read all it was allowed */
    for (job *j = w->jobs; j; j = j->next) {
        int waiting = engine_seq_waiting(w->eng, j->seq_id);
        if (!j->t_start && waiting == 0)
            j->t_start = t0;
        full |= !j->silent && waiting == 0 && !j->t_first;
    }
    if (step_budget_after_step(&w->budget, dt, full, decoding))
        say("steps take %.0f ms (aiming at %.0f): now at most %" PRIu32 " tokens per step", dt * 1e3,
            step_budget_target(&w->budget, decoding) * 1e3, w->budget.rows);
    if (left == 0 && w->n_jobs) {
        /* Cannot happen: every sequence's last event removes its job. Should
         * it, end the requests rather than leave them open forever. */
        say("BUG: %" PRIu32 " jobs outlived their sequences", w->n_jobs);
        while (w->jobs) {
            job *j = w->jobs;
            if (!j->silent)
                send_error(w, j->job_id, job_id_str(j), j->next_seq++, SMQ_E_INTERNAL, "the engine lost the request");
            job_remove(w, j);
        }
    }
}

/* Sets the alive file's time to now (making it if it is gone); a failure
 * is said once: the probe that reads it will say the rest. */
static void touch_alive(worker *w)
{
    const char *path = w->cfg.alive_file;
    if (!path)
        return;
    if (utimensat(AT_FDCWD, path, NULL, 0) == 0)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        close(fd);
        return;
    }
    if (!w->told_alive)
        say("--alive-file %s: %s", path, strerror(errno));
    w->told_alive = 1;
}

/* The loop turns: systemd's watchdog fed, the alive file's time set. */
static void alive(worker *w)
{
    smq_notify("WATCHDOG=1");
    touch_alive(w);
}

/* The heartbeat and the watchdog, each when due. */
static void keep_time(worker *w, double now)
{
    if (w->wd_s && now >= w->wd_due) {
        alive(w);
        w->wd_due = now + w->wd_s;
    }
    if (now >= w->hb_due) {
        send_heartbeat(w);
        w->hb_due += interval_s(w);
        if (w->hb_due <= now)
            w->hb_due = now + interval_s(w);
    }
}

/* Called inside a step (engine_set_progress: during its forward pass on the
 * CPU, and after each token picked on the host): a step longer than the
 * broker's liveness (many sequences at once on the CPU, a busy host) still
 * sends its heartbeats on time. It only sends; what the broker sent waits
 * until the step ends. The engine's own loop calls it, so a wedged engine
 * still falls silent. */
static void on_progress(void *ctx)
{
    worker *w = ctx;
    keep_time(w, tool_now());
}

int worker_run(worker *w, smq_err *err)
{
    double now = tool_now();
    w->heard_at = now;
    w->hb_due = now + interval_s(w);
    w->wd_s = smq_watchdog_ms() / 1e3;
    if (w->cfg.alive_file && (!w->wd_s || w->wd_s > 1))
        w->wd_s = 1; /* the alive file's time: to the second */
    w->wd_due = now + w->wd_s;
    send_ready(w);
    smq_notify("READY=1"); /* the model loaded: systemd (Type=notify) counts it started */
    touch_alive(w);
    engine_set_progress(w->eng, on_progress, w);
    for (;;) {
        take_signals(w);
        if (w->signals == 1 && w->drain_until && w->n_live && tool_now() >= w->drain_until)
            end_drain(w);
        if (w->signals >= 3 || (w->signals && !w->n_jobs))
            break;
        /* Busy: only look. Idle: sleep until a frame, a signal, or the next
         * heartbeat or liveness deadline. */
        now = tool_now();
        double dead_at = w->heard_at + silence_s(w);
        long timeout = 0;
        if (!w->n_jobs) {
            double due = w->hb_due < dead_at ? w->hb_due : dead_at;
            if (w->wd_s && w->wd_due < due)
                due = w->wd_due;
            timeout = due > now ? (long)((due - now) * 1e3) + 1 : 0;
        }
        zmq_pollitem_t items[2] = { { w->sock, 0, ZMQ_POLLIN, 0 }, { NULL, w->cfg.signal_fd, ZMQ_POLLIN, 0 } };
        if (zmq_poll(items, w->cfg.signal_fd >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR)
            return smq_err_set(err, "poll: %s", zmq_strerror(errno)), 1;
        /* What waits on the socket is heard before the broker is judged. */
        drain_socket(w);
        now = tool_now();
        keep_time(w, now);
        if (now >= w->heard_at + silence_s(w)) {
            if (reconnect(w, err))
                return 1;
            continue;
        }
        if (w->n_jobs)
            run_step(w);
    }
    send_disconnect(w);
    if (w->cfg.alive_file)
        unlink(w->cfg.alive_file);
    int linger = LINGER_MS;
    zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (w->dropped)
        say("%" PRIu64 " message%s could not be sent", w->dropped, w->dropped == 1 ? "" : "s");
    return 0;
}

/* ---- start-up ---- */

static void progress(const worker_config *cfg, const char *stage, uint64_t done, uint64_t total)
{
    if (cfg->on_progress)
        cfg->on_progress(cfg->progress_ctx, stage, done, total);
}

/* Reads one byte of every page of the mapped weights, so that the first
 * requests do not wait on the disk: this is what the progress bar measures
 * (on a GPU the upload that follows reads the same pages again, from memory). */
static void touch_weights(const worker *w)
{
    const gguf_file *f = w->m->file;
    if (!f->mapped || f->size <= f->data_offset)
        return;
    const volatile uint8_t *p = f->base + f->data_offset;
    uint64_t total = f->size - f->data_offset, step = 4096, chunk = 16u << 20;
    uint8_t sum = 0;
    for (uint64_t off = 0; off < total; off += step) {
        sum ^= p[off];
        if (off % chunk == 0)
            progress(&w->cfg, "reading weights", off, total);
    }
    progress(&w->cfg, "reading weights", total, total);
    (void)sum;
}

static char *default_model_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf"))
        n -= 5;
    return strndup(base, n);
}

static char *default_name(void)
{
    char host[256] = "localhost", out[SMQ_NAME_MAX + 1];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(out, sizeof out, "%.100s:%ld", host, (long)getpid());
    return strdup(out);
}

static int check_name(const char *flag, const char *s, smq_err *err)
{
    size_t n = strlen(s);
    if (n == 0 || n > SMQ_NAME_MAX || !utf8_valid(s, n, 0))
        return smq_err_set(err, "%s \"%.40s%s\": wants 1 to %d bytes of UTF-8", flag, s, n > 40 ? "..." : "",
                           SMQ_NAME_MAX);
    return 0;
}

worker *worker_new(const worker_config *cfg, smq_err *err)
{
    worker *w = calloc(1, sizeof *w);
    if (!w) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    double t0 = tool_now();
    w->cfg = *cfg;
    w->heartbeat_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : SMQ_HEARTBEAT_MS;
    w->liveness = cfg->liveness ? cfg->liveness : SMQ_LIVENESS;
    w->model_name = cfg->model_name ? strdup(cfg->model_name) : default_model_name(cfg->model_path);
    w->name = cfg->name ? strdup(cfg->name) : default_name();
    if (!w->model_name || !w->name) {
        smq_err_set(err, "out of memory");
        goto fail;
    }
    if (check_name(cfg->model_name ? "--model-name" : "the model file's name (give --model-name)", w->model_name,
                   err) ||
        check_name("--name", w->name, err))
        goto fail;

    /* An alive file left by a worker that died: gone before the long load,
     * so that a probe does not take it for this one's; and its folder must
     * take a file. */
    if (cfg->alive_file) {
        unlink(cfg->alive_file);
        int fd = open(cfg->alive_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            smq_err_set(err, "--alive-file %s: cannot make it: %s", cfg->alive_file, strerror(errno));
            goto fail;
        }
        close(fd);
        unlink(cfg->alive_file);
    }

    /* The socket first: a bad endpoint or key fails before a long load. */
    if (cfg->broker_key) {
        if (!curve_key_valid(cfg->broker_key)) {
            smq_err_set(err, "--broker-key: not a CURVE public key (40 characters of Z85)");
            goto fail;
        }
        if (cfg->key_file ? curve_cert_load(cfg->key_file, w->public_key, w->secret_key, err)
                          : zmq_curve_keypair(w->public_key, w->secret_key)) {
            if (!cfg->key_file)
                smq_err_set(err, "cannot make a CURVE key pair: %s (libzmq without libsodium?)", zmq_strerror(errno));
            goto fail;
        }
        w->curve = 1;
    } else if (cfg->key_file) {
        smq_err_set(err, "--key-file needs --broker-key (the broker's public key)");
        goto fail;
    }
    w->zctx = zmq_ctx_new();
    if (!w->zctx) {
        smq_err_set(err, "cannot start ZeroMQ: %s", zmq_strerror(errno));
        goto fail;
    }
    if (open_socket(w, err))
        goto fail;

    progress(cfg, "opening the model", 0, 0);
    model_options mo = { cfg->ctx_size, cfg->rope_scaling, 0 };
    if (!(w->m = model_load(cfg->model_path, &mo, err)))
        goto fail;
    touch_weights(w);
    progress(cfg, "building the tokenizer", 0, 0);
    if (!(w->tok = tokenizer_load(w->m->file, err)))
        goto fail;
    w->tmpl = (chat_template_kind)tool_template_kind("worker", w->m->file);

    /* Sizes for a GPU first, as auto may take one; again for the CPU if it does not. */
    int cpu_asked = cfg->backend && !strcmp(cfg->backend, "cpu");
    if (worker_sizes_pick(&w->size, cfg->capacity, cfg->ctx_size, cfg->kv_tokens, model_context(w->m), !cpu_asked, err))
        goto fail;
    progress(cfg, NULL, 0, 0); /* the choice is said on a line of its own */
    const backend_ops *ops = tool_pick_backend("worker", cfg->backend, cfg->gpu, w->m,
                                               (w->size.kv_tokens + PAGE_SIZE - 1) / PAGE_SIZE, PAGE_SIZE);
    if (!ops) {
        smq_err_set(err, "no backend (said above)");
        goto fail;
    }
    if (ops == &cpu_backend_ops && !cpu_asked &&
        worker_sizes_pick(&w->size, cfg->capacity, cfg->ctx_size, cfg->kv_tokens, model_context(w->m), 0, err))
        goto fail;
    w->backend_name = ops->name;
    progress(cfg, ops == &cpu_backend_ops ? "allocating the KV cache" : "uploading the weights to the GPU", 0, 0);
    engine_config ec = { 0 };
    ec.n_ctx = w->size.n_ctx;
    ec.page_size = PAGE_SIZE;
    ec.n_pages = (w->size.kv_tokens + PAGE_SIZE - 1) / PAGE_SIZE;
    ec.max_seqs = w->size.capacity;
    ec.n_threads = cfg->threads;
    ec.gpu = cfg->gpu;
    if (!(w->eng = engine_new(w->m, w->tok, ops, &ec, err)))
        goto fail;
    w->size.n_ctx = engine_n_ctx(w->eng);
    uint32_t cap = STEP_TOKENS_MAX;
    if (cap > w->size.n_ctx - 1)
        cap = w->size.n_ctx - 1;
    if (cap > w->size.kv_tokens - PAGE_SIZE)
        cap = w->size.kv_tokens - PAGE_SIZE;
    progress(cfg, "measuring the step time", 0, 0);
    /* What a step should take (step_budget.h). On a GPU a step delays the
     * next heartbeat by its own length, and the broker waits liveness
     * intervals: with liveness L a step may take up to (L - 1) intervals and
     * the worker still be heard in time; the budget aims at 30% of that. On
     * the CPU the heartbeats go out during steps (engine_set_progress): the
     * bound is what the decoding streams and a CANCEL wait, and longer steps
     * read prompts faster (SmolLM3-3B on 2 cores: 12.5 tok/s in steps of
     * 0.6 s, 25-28 in one step). --step-ms sets it; on a GPU the heartbeat's
     * bound still holds. */
    double target = 0.3 * interval_s(w) * (w->liveness > 1 ? w->liveness - 1 : 1);
    if (ops == &cpu_backend_ops)
        target = (cfg->step_ms ? cfg->step_ms : STEP_MS_CPU) / 1e3;
    else if (cfg->step_ms && cfg->step_ms / 1e3 < target)
        target = cfg->step_ms / 1e3;
    if (step_budget_measure(&w->budget, w->eng, w->m->hp.n_vocab, cap, target, err))
        goto fail;
    w->load_s = tool_now() - t0;
    return w;
fail:
    worker_destroy(&w);
    return NULL;
}

void worker_describe(const worker *w, char *out, size_t n)
{
    const backend *b = engine_backend(w->eng);
    char where[64];
    if (b->ops == &cpu_backend_ops)
        snprintf(where, sizeof where, "%d thread%s", b->cfg.n_threads, b->cfg.n_threads == 1 ? "" : "s");
    else
        snprintf(where, sizeof where, "GPU %d", b->cfg.gpu);
    snprintf(out, n,
             "model %s (%s), backend %s (%s), memory %.2f GB of weights + %.2f GB of KV cache (%" PRIu32
             " tokens) and buffers, capacity %" PRIu32 ", context %" PRIu32 ", steps of at most %" PRIu32
             " tokens (measured: %.1f ms a step + %.2f ms a token), broker %s%s, ready in %.1f s",
             w->model_name, w->cfg.model_path, w->backend_name, where, (double)w->m->weight_bytes / 1e9,
             (double)b->ops->memory(b) / 1e9, w->size.kv_tokens, w->size.capacity, w->size.n_ctx, w->budget.rows,
             w->budget.fixed_s * 1e3, w->budget.row_s * 1e3, w->cfg.broker, w->curve ? " (CURVE)" : "", w->load_s);
}

void worker_destroy(worker **self)
{
    worker *w = *self;
    if (!w)
        return;
    while (w->jobs) {
        job *j = w->jobs;
        w->jobs = j->next;
        free(j);
    }
    if (w->sock)
        zmq_close(w->sock);
    if (w->zctx)
        zmq_ctx_term(w->zctx);
    engine_destroy(&w->eng);
    tokenizer_destroy(&w->tok);
    model_destroy(&w->m);
    smq_buf_free(&w->body);
    free(w->model_name);
    free(w->name);
    free(w);
    *self = NULL;
}

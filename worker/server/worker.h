/* worker.h - smolmq-worker: one model, one engine, one DEALER to the broker
 * (proto/PROTOCOL.md is the protocol it speaks).
 *
 * One thread runs the engine loop and the socket. Between engine steps it
 * takes every frame waiting on the socket without blocking (CHAT, CANCEL,
 * HEARTBEAT, DISCONNECT), sends the step's TOKEN/DONE/ERROR frames without
 * blocking (an unlimited send queue), and sends a HEARTBEAT whenever one is
 * due; while the engine is idle it sleeps until the next frame, signal or
 * heartbeat. A step's prefill is bounded so that a step stays well inside a
 * heartbeat interval, so a long prompt never makes the worker look dead,
 * while a wedged GPU does.
 *
 * Not thread-safe: worker_run() is the only thread that touches it.
 */
#ifndef SMQ_WORKER_H
#define SMQ_WORKER_H

#include <stdint.h>

#include "err.h"

/* The strings must outlive the worker. */
typedef struct worker_config {
    const char *model_path;   /* the GGUF file (required) */
    const char *model_name;   /* what clients ask for; NULL: the file's base name without .gguf */
    const char *name;         /* for people; NULL: host:pid */
    const char *broker;       /* the broker's worker endpoint (tcp://127.0.0.1:5556) */
    const char *backend;      /* "cpu", "cuda" or "auto" (NULL: auto) */
    int gpu;                  /* CUDA device */
    int threads;              /* CPU threads; 0: one per core */
    uint32_t ctx_size;        /* positions per sequence; 0: the default (worker.c) */
    const char *rope_scaling; /* "none", "linear", "yarn"; NULL: the file's */
    uint32_t kv_tokens;       /* the KV pool, in tokens; 0: the default (worker.c) */
    uint32_t capacity;        /* requests at once; 0: the default (worker.c) */
    uint32_t heartbeat_ms;    /* 0: SMQ_HEARTBEAT_MS */
    uint32_t liveness;        /* 0: SMQ_LIVENESS */
    uint32_t drain_ms;        /* the first signal's bound on running requests; 0: none */
    uint32_t step_ms;         /* what a step that reads a prompt should take; 0: the default (worker.c) */
    const char *broker_key;   /* CURVE: the broker's public key (Z85); NULL: plain TCP */
    const char *key_file;     /* CURVE: our certificate; NULL with broker_key: a fresh key pair */
    int signal_fd;            /* read end of a pipe that gets one byte per SIGTERM/SIGINT; -1: none */
    const char *alive_file;   /* made when the loop starts, its time set each second as it turns, removed at the
                                 end: what a liveness probe reads (Kubernetes); NULL: none */
    /* Start-up progress: stage names what is measured ("reading weights"),
     * done of total units (bytes; total 0: no measure, just the stage);
     * stage NULL: clear the line, another message follows. */
    void (*on_progress)(void *ctx, const char *stage, uint64_t done, uint64_t total);
    void *progress_ctx;
} worker_config;

typedef struct worker worker;

/* Loads the model, builds the engine and measures its prefill speed (to
 * bound a step). NULL with err naming the file or flag that is wrong. */
worker *worker_new(const worker_config *cfg, smq_err *err);
void worker_destroy(worker **self);

/* One line for people: the model, file, backend, memory, capacity, context,
 * step bound and broker endpoint. */
void worker_describe(const worker *w, char *out, size_t n);

/* Connects to the broker and serves until told to stop: the first signal on
 * signal_fd drains (no new requests; running ones finish, for at most
 * cfg.drain_ms, after which each ends with ERROR shutting_down), the second
 * cancels what runs (their DONE frames are still sent), the third leaves at
 * once; then DISCONNECT. Returns the exit status: 0, or 1 when the socket
 * cannot be set up (err says why). */
int worker_run(worker *w, smq_err *err);

#endif

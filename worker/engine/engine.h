/* engine.h - sequences, batching, the KV pages, sampling, stop rules and the
 * thinking split: everything between a request and the backend.
 *
 * A caller submits sequences (token prompts with their sampling and stop
 * rules) and calls engine_step() in a loop. Each step runs ONE forward pass
 * over every running sequence: a prefill chunk from those still reading
 * their prompt, one token from those generating. After the pass each
 * sequence that produced logits samples a token, and the caller's callback
 * receives an event with the token and its text, split into reasoning
 * (between <think> and </think>) and content. A sequence's last event says
 * why it finished, and its KV pages are released at once (kept for prefix
 * reuse while nothing else needs them).
 *
 * Not thread-safe: one thread drives an engine.
 */
#ifndef SMQ_ENGINE_H
#define SMQ_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "err.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

typedef enum finish_reason {
    FINISH_NONE = 0,
    FINISH_EOG,         /* the model ended its turn (<|im_end|> for SmolLM3) */
    FINISH_STOP_STRING, /* a stop string appeared (it is not emitted) */
    FINISH_LENGTH,      /* max_tokens generated */
    FINISH_CONTEXT,     /* the context is full */
    FINISH_CANCELLED,
    FINISH_ERROR, /* the step failed; the event's text says why */
} finish_reason;

const char *finish_reason_name(finish_reason r); /* "eog", "stop_string", "length", ... */

#define ENGINE_MAX_STOP 8

typedef struct seq_request {
    const int32_t *prompt;
    uint32_t n_prompt;
    sampling_params sampling;
    uint32_t max_tokens;               /* 0: until the context is full */
    const char *stop[ENGINE_MAX_STOP]; /* stop strings (NULL-terminated list, or n_stop) */
    uint32_t n_stop;
    void *user; /* returned in events */
} seq_request;

typedef struct engine_event {
    uint64_t seq;
    void *user;
    int32_t token;         /* the sampled token; -1 on an event that only finishes */
    const char *reasoning; /* text deltas (not NUL-terminated), valid UTF-8 */
    size_t n_reasoning;
    const char *content;
    size_t n_content;
    finish_reason finish;                     /* FINISH_NONE until the last event */
    const char *error;                        /* FINISH_ERROR: what went wrong */
    uint32_t n_prompt, n_generated, n_reused; /* usage; n_reused: prompt tokens from the prefix cache */
    uint32_t n_thinking;                      /* of n_generated: <think>, </think> and the tokens between */
} engine_event;

typedef void (*engine_event_fn)(void *ctx, const engine_event *ev);

typedef struct engine_config {
    uint32_t n_ctx;           /* positions per sequence (0: the model's context) */
    uint32_t page_size;       /* tokens per KV page (0: 16) */
    uint32_t n_pages;         /* KV pool (0: enough for one full context) */
    uint32_t max_step_tokens; /* prefill budget per step (0: 512) */
    uint32_t max_seqs;        /* running at once (0: 64) */
    uint32_t prefix_entries;  /* finished sequences kept for prefix reuse (0: 16) */
    int n_threads;
    int exact; /* f32 activations (the reference) instead of the 8-bit fast path */
    int gpu;   /* CUDA device index for a GPU backend */
} engine_config;

typedef struct engine engine;

/* The engine and its backend (which allocates the KV pool). */
engine *engine_new(const model *m, tokenizer *t, const backend_ops *ops, const engine_config *cfg, smq_err *err);
void engine_destroy(engine **self);

/* Queues a sequence; returns its id (> 0), or 0 with err when the request
 * cannot run (empty prompt, prompt longer than the context, bad sampling). */
uint64_t engine_submit(engine *e, const seq_request *r, smq_err *err);
/* Ends a sequence at the next step with FINISH_CANCELLED; -1 if unknown. */
int engine_cancel(engine *e, uint64_t seq);
/* One forward pass and its events. Returns the number of sequences still
 * queued or running (0: idle), or -1 when the backend failed (every running
 * sequence then gets a FINISH_ERROR event). */
int engine_step(engine *e, engine_event_fn fn, void *ctx, smq_err *err);

/* Changes the prefill budget per step (engine_config.max_step_tokens; 0: the
 * default, 512) from the next step on: a server measures after creation how
 * many prompt tokens a step may take and still leave its loop responsive. */
void engine_set_max_step_tokens(engine *e, uint32_t n);

/* fn(ctx) is called every so often inside each step: during its forward
 * pass (fwd_batch.progress) and after each token sampled on the host (a
 * server's heartbeats through a long step). It must not call the engine.
 * NULL: never. */
void engine_set_progress(engine *e, void (*fn)(void *ctx), void *ctx);

/* Introspection for tests and tools. */
uint32_t engine_free_pages(const engine *e);
uint32_t engine_n_ctx(const engine *e);
/* 1 while sequence seq waits to be admitted (queued behind max_seqs or for KV
 * pages: no step has run it yet, or it was preempted), 0 once it runs, -1
 * when there is no such sequence (unknown or finished). A server uses it to
 * tell a request's wait from its prefill. */
int engine_seq_waiting(const engine *e, uint64_t seq);
const backend *engine_backend(const engine *e);
/* Logits of the last step for sequence seq (n_vocab floats), or NULL. Not
 * written by a backend that chose the token itself (fwd_seq.pick): then they
 * are an older step's. */
const float *engine_last_logits(const engine *e, uint64_t seq);

#endif

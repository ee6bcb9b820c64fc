/* backend.h - the one small interface between the engine and a compute
 * backend (cpu/ and cuda/).
 *
 * The engine owns the KV cache's bookkeeping: which fixed-size pages belong
 * to which sequence. The backend owns the pages' memory (host or device) and
 * runs one forward pass over a batch: each sequence contributes some new
 * tokens at consecutive positions (a prefill chunk, or one decode token) and
 * the page table that holds (and will hold) its keys and values.
 */
#ifndef SMQ_BACKEND_H
#define SMQ_BACKEND_H

#include <stdint.h>

#include "err.h"
#include "model.h"
#include "sample_chain.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct backend_config {
    uint32_t n_pages;   /* KV pool size in pages */
    uint32_t page_size; /* tokens per page */
    int n_threads;      /* CPU threads (0: one per core) */
    /* 1: float32 activations throughout, the reference function (llama.cpp's
     * "exact" goldens); 0: the fast path, activations quantized to 8 bits for
     * integer dot products with Q4_K/Q6_K weights (as llama.cpp's CPU backend
     * runs by default). */
    int exact;
    int gpu; /* CUDA device index (0: the first); the CPU ignores it */
} backend_config;

/* One sequence's part of a step. */
typedef struct fwd_seq {
    const int32_t *tokens; /* n_tokens new tokens */
    uint32_t n_tokens;
    uint32_t pos;          /* position of tokens[0]; positions < pos are in the cache */
    const uint32_t *pages; /* page table: page i holds positions [i*page_size, (i+1)*page_size) */
    uint32_t n_pages;      /* must cover pos + n_tokens */
    int all_logits;        /* logits for every new token, else the last only */
    float *logits;         /* out: [all_logits ? n_tokens : 1][n_vocab] */
    int prefill;           /* the tokens are read (a prompt's), not generated one by one: a backend may take
                              them by a many-row route of its own, the same for every chunking (cuda: cuBLAS) */
    sample_pick *pick;     /* when not NULL (and not all_logits): a backend may choose the last position's token
                              itself, by the sampling chain (sample_chain.h) with pick's parameters, penalties and
                              uniform, store it in pick->token and leave the logits unwritten, so that only the
                              token leaves the device (cuda); it leaves pick->token alone otherwise */
} fwd_seq;

typedef struct fwd_batch {
    fwd_seq *seqs;
    uint32_t n_seqs;
    /* When not NULL, a backend that computes on the host calls it every so
     * often during the step (the CPU: between the tasks its own thread takes,
     * each well under a millisecond, and while it waits for the others), so
     * that the caller's loop keeps time through a long step: the worker's
     * heartbeats. It must not touch the engine, the backend or the batch. A
     * GPU backend, whose steps take milliseconds, need not call it. */
    void (*progress)(void *ctx);
    void *progress_ctx;
} fwd_batch;

typedef struct backend backend;

typedef struct backend_ops {
    const char *name;
    /* Allocates the KV pool and whatever the weights need. */
    backend *(*create)(const model *m, const backend_config *cfg, smq_err *err);
    int (*forward)(backend *b, const fwd_batch *batch, smq_err *err);
    /* Copies the cached keys and values of n_tokens positions from one page
     * table to another (prefix reuse into fresh pages when a page is shared
     * only in part). */
    int (*copy_kv)(backend *b, const uint32_t *src_pages, const uint32_t *dst_pages, uint32_t n_tokens, smq_err *err);
    /* Bytes of host/device memory the backend holds beyond the mapped weights. */
    uint64_t (*memory)(const backend *b);
    void (*destroy)(backend **b);
} backend_ops;

/* Every backend begins with this header. */
struct backend {
    const backend_ops *ops;
    const model *m;
    backend_config cfg;
};

extern const backend_ops cpu_backend_ops;

/* Checks a step against b's pool and vocabulary (tokens in range, pages
 * inside the pool and covering every position, no empty sequence): 0 with the
 * step's token count in *rows, or -1 with err naming the backend and the
 * sequence. */
int backend_check_batch(const backend *b, const fwd_batch *batch, uint32_t *rows, smq_err *err);

#ifdef __cplusplus
}
#endif

#endif

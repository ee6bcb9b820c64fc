/* worker_sizes.h - how much a worker takes on: requests at once, positions
 * per request, and the KV pool they share; the defaults for what the flags
 * leave out (worker_sizes.c says why each). */
#ifndef SMQ_WORKER_SIZES_H
#define SMQ_WORKER_SIZES_H

#include <stdint.h>

#include "err.h"

typedef struct worker_sizes {
    uint32_t capacity;  /* requests at once */
    uint32_t n_ctx;     /* positions per request */
    uint32_t kv_tokens; /* the KV pool, shared by all requests */
} worker_sizes;

/* The sizes for a backend (gpu: a CUDA one) and a model whose context is
 * model_ctx, from the flags' values (0: not given). -1 with err when the
 * flags contradict each other (a pool smaller than the context asked for). */
int worker_sizes_pick(worker_sizes *s, uint32_t capacity, uint32_t ctx_size, uint32_t kv_tokens, uint32_t model_ctx,
                      int gpu, smq_err *err);

#endif

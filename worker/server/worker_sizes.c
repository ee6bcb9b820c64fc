/* worker_sizes.c - see worker_sizes.h. The defaults:
 *
 * - capacity (requests at once). A decode step reads every weight once
 *   however many sequences it carries. On a GPU, bandwidth-bound at small
 *   batches, 16 sequences cost little more per step than one; on the CPU the
 *   arithmetic per row dominates once a few rows share each weight read, so
 *   more than 4 would only slow every stream down.
 * - context (positions per request): the model's own (64K for SmolLM3) on a
 *   GPU. On the CPU 16384: its KV cache is float32 (147 KB per token for
 *   SmolLM3-3B, 2.4 GB for 16K), and reading a 16K prompt at ~50 tokens/s
 *   already takes five minutes.
 * - KV pool (shared by all requests): max(context, capacity x 4096) tokens.
 *   It must hold one whole context, or a lone long conversation would fail
 *   with "KV cache full" instead of finishing with context_full; and it
 *   should hold every running request at a typical 4096 tokens of prompt and
 *   answer. Longer requests only make the engine queue newer ones until pages
 *   come free (and, at worst, preempt the youngest), so the pool bounds
 *   memory, never correctness. SmolLM3-3B on a GPU: 65536 tokens, 4.8 GB of
 *   fp16 KV beside 1.9 GB of weights.
 */
#include "worker_sizes.h"

#include <inttypes.h>

#define CAPACITY_GPU       16
#define CAPACITY_CPU       4
#define CTX_CPU            16384
#define TOKENS_PER_REQUEST 4096

int worker_sizes_pick(worker_sizes *s, uint32_t capacity, uint32_t ctx_size, uint32_t kv_tokens, uint32_t model_ctx,
                      int gpu, smq_err *err)
{
    s->capacity = capacity ? capacity : gpu ? CAPACITY_GPU : CAPACITY_CPU;
    s->n_ctx = ctx_size ? ctx_size : gpu || model_ctx < CTX_CPU ? model_ctx : CTX_CPU;
    uint64_t kv = (uint64_t)s->capacity * TOKENS_PER_REQUEST;
    s->kv_tokens = kv_tokens ? kv_tokens : kv > s->n_ctx ? (uint32_t)kv : s->n_ctx;
    if (s->kv_tokens < s->n_ctx) {
        if (ctx_size)
            return smq_err_set(err,
                               "--kv-tokens %" PRIu32 " is less than --ctx-size %" PRIu32
                               ": the pool must hold one whole context",
                               s->kv_tokens, s->n_ctx);
        s->n_ctx = s->kv_tokens; /* a pool given smaller than the default context: the context shrinks */
    }
    return 0;
}

/* backend.c - what every backend checks the same way. */
#include <inttypes.h>

#include "backend.h"

int backend_check_batch(const backend *b, const fwd_batch *batch, uint32_t *rows, smq_err *err)
{
    const backend_config *c = &b->cfg;
    const char *who = b->ops->name;
    uint64_t max_ctx = (uint64_t)c->n_pages * c->page_size, n = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        uint64_t end = (uint64_t)s->pos + s->n_tokens;
        if (s->n_tokens == 0)
            return smq_err_set(err, "%s backend: sequence %" PRIu32 " of the batch has no tokens", who, i);
        if (end > (uint64_t)s->n_pages * c->page_size)
            return smq_err_set(err, "%s backend: sequence %" PRIu32 ": %" PRIu32 " pages cannot hold position %" PRIu64,
                               who, i, s->n_pages, end - 1);
        if (end > max_ctx)
            return smq_err_set(err, "%s backend: position %" PRIu64 " is past the KV pool", who, end - 1);
        for (uint32_t p = 0; p < s->n_pages; p++)
            if (s->pages[p] >= c->n_pages)
                return smq_err_set(err, "%s backend: page %" PRIu32 " is outside the pool of %" PRIu32, who,
                                   s->pages[p], c->n_pages);
        for (uint32_t t = 0; t < s->n_tokens; t++)
            if (s->tokens[t] < 0 || (uint32_t)s->tokens[t] >= b->m->hp.n_vocab)
                return smq_err_set(err, "%s backend: token %" PRId32 " is outside the vocabulary", who, s->tokens[t]);
        n += s->n_tokens;
    }
    if (n == 0 || n > UINT32_MAX / 2)
        return smq_err_set(err, "%s backend: a step of %" PRIu64 " tokens", who, n);
    *rows = (uint32_t)n;
    return 0;
}

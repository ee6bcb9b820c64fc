/* sampler.h - choosing the next token from logits, per sequence.
 *
 * The chain itself (penalties, top-k, top-p, min-p, temperature, the draw)
 * is sample_chain.h's, shared with the CUDA backend, which may run it on the
 * device (fwd_seq.pick). The draw's uniform comes from the sequence's own
 * generator, seeded from the request: the same inputs and seed give the same
 * tokens.
 */
#ifndef SMQ_SAMPLER_H
#define SMQ_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "sample_chain.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The defaults: greedy off (SmolLM3's recommended temperature 0.6 and top-p
 * 0.95), no penalties, window 64. */
sampling_params sampling_defaults(void);
/* Checks ranges; fills err with the field to fix. */
int sampling_validate(const sampling_params *p, smq_err *err);

typedef struct sampler {
    sampling_params p;
    uint64_t rng[4];
    /* scratch: the candidates' logits, ids and weights, and a search's tokens;
     * the penalty window's tokens and counts */
    uint32_t cap;
    float *cand_l;
    uint32_t *cand_id;
    uint64_t *cand_w;
    uint32_t *cand_act;
    uint32_t cap_pen;
    int32_t *pen_tokens;
    uint32_t *pen_counts;
} sampler;

void sampler_init(sampler *s, const sampling_params *p);
void sampler_free(sampler *s);
/* Prepares the next pick from history (the sequence so far, prompt and
 * generated): the penalty window's distinct tokens with their counts, and the
 * draw's uniform from the sequence's generator (one per pick at a temperature
 * above 0, none when greedy). pick's arrays are the sampler's until the next
 * prepare; pick->token is -1. -1 when out of memory. */
int sampler_prepare(sampler *s, const int32_t *history, size_t n_history, sample_pick *pick);
/* Runs the chain (sample_chain.h) on logits (n_vocab of them, modified) for
 * a prepared pick: the token, or -1 when out of memory or n_vocab is 0. */
int32_t sampler_choose(sampler *s, float *logits, uint32_t n_vocab, const sample_pick *pick);
/* Both: picks the next token from logits. */
int32_t sampler_pick(sampler *s, float *logits, uint32_t n_vocab, const int32_t *history, size_t n_history);

#ifdef __cplusplus
}
#endif

#endif

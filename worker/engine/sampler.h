/* sampler.h - choosing the next token from logits, per sequence.
 *
 * The chain is llama.cpp's default order: penalties (repetition, presence,
 * frequency) over the last penalty_last_n tokens, then top-k, top-p, min-p,
 * temperature, and a draw from what is left. Temperature 0 is greedy (ties to
 * the lowest id). The draw uses the sequence's own generator, seeded from
 * the request: the same inputs and seed give the same tokens.
 */
#ifndef SMQ_SAMPLER_H
#define SMQ_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct sampling_params {
    float temperature;       /* 0: greedy */
    float top_p;             /* 1: off */
    int32_t top_k;           /* 0: off */
    float min_p;             /* 0: off */
    float repeat_penalty;    /* 1: off; logit > 0 ? l / p : l * p */
    float presence_penalty;  /* 0: off; minus this once per token seen */
    float frequency_penalty; /* 0: off; minus this per occurrence */
    uint32_t penalty_last_n; /* window of tokens the penalties look at */
    uint64_t seed;
} sampling_params;

/* The defaults: greedy off (SmolLM3's recommended temperature 0.6 and top-p
 * 0.95), no penalties, window 64. */
sampling_params sampling_defaults(void);
/* Checks ranges; fills err with the field to fix. */
int sampling_validate(const sampling_params *p, smq_err *err);

typedef struct sampler {
    sampling_params p;
    uint64_t rng[4];
    /* scratch */
    uint32_t cap;
    int32_t *idx;    /* candidates (a heap) */
    int32_t *chosen; /* those kept, best first */
    float *val;
} sampler;

void sampler_init(sampler *s, const sampling_params *p);
void sampler_free(sampler *s);
/* Picks a token; logits (n_vocab of them) are modified. history: the
 * sequence so far (prompt and generated), for the penalties. -1 when out of
 * memory. */
int32_t sampler_pick(sampler *s, float *logits, uint32_t n_vocab, const int32_t *history, size_t n_history);

#endif

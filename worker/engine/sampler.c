#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sampling_params sampling_defaults(void)
{
    sampling_params p = { 0 };
    p.temperature = 0.6f;
    p.top_p = 0.95f;
    p.top_k = 0;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.penalty_last_n = 64;
    return p;
}

int sampling_validate(const sampling_params *p, smq_err *err)
{
    if (!(p->temperature >= 0 && p->temperature <= 100))
        return smq_err_set(err, "temperature %g is out of range (0 to 100; 0 is greedy)", p->temperature);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return smq_err_set(err, "top_p %g is out of range (above 0, at most 1)", p->top_p);
    if (p->top_k < 0)
        return smq_err_set(err, "top_k %d is negative (0 turns it off)", (int)p->top_k);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return smq_err_set(err, "min_p %g is out of range (0 to 1)", p->min_p);
    if (!(p->repeat_penalty > 0 && p->repeat_penalty <= 10))
        return smq_err_set(err, "repetition penalty %g is out of range (above 0, at most 10; 1 is off)",
                           p->repeat_penalty);
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2))
        return smq_err_set(err, "presence_penalty %g is out of range (-2 to 2)", p->presence_penalty);
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2))
        return smq_err_set(err, "frequency_penalty %g is out of range (-2 to 2)", p->frequency_penalty);
    return 0;
}

/* xoshiro256** seeded through splitmix64. */
static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static double next_uniform(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(r >> 11) * 0x1.0p-53;
}

void sampler_init(sampler *s, const sampling_params *p)
{
    memset(s, 0, sizeof *s);
    s->p = *p;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix(&x);
}

void sampler_free(sampler *s)
{
    free(s->cand_l);
    free(s->cand_id);
    free(s->cand_w);
    free(s->cand_act);
    free(s->pen_tokens);
    free(s->pen_counts);
    memset(s, 0, sizeof *s);
}

static int cmp_token(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int sampler_prepare(sampler *s, const int32_t *history, size_t n_history, sample_pick *pick)
{
    const sampling_params *p = &s->p;
    memset(pick, 0, sizeof *pick);
    pick->p = *p;
    pick->token = -1;
    pick->u = p->temperature > 0 ? next_uniform(s->rng) : 0;
    if (!sc_penalized(p))
        return 0;
    /* The window's distinct tokens and counts: sorted, then counted in runs. */
    size_t from = n_history > p->penalty_last_n ? n_history - p->penalty_last_n : 0, n = n_history - from;
    if (n > s->cap_pen) {
        int32_t *t = realloc(s->pen_tokens, n * sizeof *t);
        if (t)
            s->pen_tokens = t;
        uint32_t *c = t ? realloc(s->pen_counts, n * sizeof *c) : NULL;
        if (c)
            s->pen_counts = c;
        if (!t || !c)
            return -1;
        s->cap_pen = (uint32_t)n;
    }
    if (n) {
        memcpy(s->pen_tokens, history + from, n * sizeof *history);
        qsort(s->pen_tokens, n, sizeof *s->pen_tokens, cmp_token);
    }
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->pen_tokens[i] < 0)
            continue;
        if (k && s->pen_tokens[k - 1] == s->pen_tokens[i]) {
            s->pen_counts[k - 1]++;
        } else {
            s->pen_tokens[k] = s->pen_tokens[i];
            s->pen_counts[k++] = 1;
        }
    }
    pick->pen_tokens = s->pen_tokens;
    pick->pen_counts = s->pen_counts;
    pick->n_pen = k;
    return 0;
}

int32_t sampler_choose(sampler *s, float *logits, uint32_t n_vocab, const sample_pick *pick)
{
    if (n_vocab == 0)
        return -1;
    for (uint32_t i = 0; i < pick->n_pen; i++) {
        int32_t t = pick->pen_tokens[i];
        if (t >= 0 && (uint32_t)t < n_vocab)
            logits[t] = sc_penalize(&pick->p, logits[t], pick->pen_counts[i]);
    }
    uint32_t best = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        best = logits[i] > logits[best] ? i : best;
    sc_chain c;
    sc_chain_init(&c, &pick->p, pick->u, logits[best], best);
    if (c.stage == SC_DONE)
        return (int32_t)best;

    /* The passes look at the candidates only: gathered once. */
    if (s->cap < n_vocab) {
        float *l = realloc(s->cand_l, n_vocab * sizeof *l);
        if (l)
            s->cand_l = l;
        uint32_t *id = l ? realloc(s->cand_id, n_vocab * sizeof *id) : NULL;
        if (id)
            s->cand_id = id;
        uint64_t *w = id ? realloc(s->cand_w, n_vocab * sizeof *w) : NULL;
        if (w)
            s->cand_w = w;
        uint32_t *act = w ? realloc(s->cand_act, n_vocab * sizeof *act) : NULL;
        if (act)
            s->cand_act = act;
        if (!l || !id || !w || !act)
            return -1;
        s->cap = n_vocab;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_vocab; i++)
        if (logits[i] >= c.set.floor) {
            s->cand_l[n] = logits[i];
            s->cand_id[n++] = i;
        }
    /* A pass's tokens go to act: a search's next pass looks at those only
     * (the tokens of its bucket); a total looks at every candidate. */
    uint32_t bn[SC_BINS], *act = s->cand_act, n_act = 0;
    uint64_t bw[SC_BINS], btop[SC_BINS];
    while (c.stage != SC_DONE) {
        int searching = sc_chain_searching(&c);
        uint64_t total = 0, w, key;
        uint32_t kept = 0;
        memset(bn, 0, sizeof bn);
        memset(bw, 0, sizeof bw);
        memset(btop, 0, sizeof btop);
        for (uint32_t k = 0, end = searching ? n_act : n; k < end; k++) {
            uint32_t j = searching ? act[k] : k;
            int b;
            if (!sc_pass_token(&c, s->cand_l[j], s->cand_id[j], &s->cand_w[j], &w, &b, &key))
                continue;
            act[kept++] = j;
            total += w;
            bn[b]++;
            bw[b] += w;
            btop[b] = key > btop[b] ? key : btop[b];
        }
        n_act = kept;
        sc_chain_step(&c, total, bn, bw, btop);
    }
    return (uint32_t)c.token < n_vocab ? c.token : (int32_t)best;
}

int32_t sampler_pick(sampler *s, float *logits, uint32_t n_vocab, const int32_t *history, size_t n_history)
{
    sample_pick pick;
    if (sampler_prepare(s, history, n_history, &pick))
        return -1;
    return sampler_choose(s, logits, n_vocab, &pick);
}

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
    free(s->idx);
    free(s->val);
    memset(s, 0, sizeof *s);
}

static void apply_penalties(const sampling_params *p, float *logits, uint32_t n_vocab, const int32_t *hist, size_t n)
{
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0 && p->frequency_penalty == 0)
        return;
    size_t from = n > p->penalty_last_n ? n - p->penalty_last_n : 0;
    /* Count each token once (the window is small: a quadratic scan is fine). */
    for (size_t i = from; i < n; i++) {
        int32_t t = hist[i];
        if (t < 0 || (uint32_t)t >= n_vocab)
            continue;
        int seen_before = 0;
        for (size_t j = from; j < i && !seen_before; j++)
            seen_before = hist[j] == t;
        if (seen_before)
            continue;
        int count = 0;
        for (size_t j = i; j < n; j++)
            count += hist[j] == t;
        float l = logits[t];
        if (p->repeat_penalty != 1.0f)
            l = l > 0 ? l / p->repeat_penalty : l * p->repeat_penalty;
        logits[t] = l - (float)count * p->frequency_penalty - p->presence_penalty;
    }
}

static int cmp_desc(const void *a, const void *b, void *ctx)
{
    const float *v = ctx;
    float x = v[*(const int32_t *)a], y = v[*(const int32_t *)b];
    if (x != y)
        return x > y ? -1 : 1;
    return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

int32_t sampler_pick(sampler *s, float *logits, uint32_t n_vocab, const int32_t *history, size_t n_history)
{
    const sampling_params *p = &s->p;
    apply_penalties(p, logits, n_vocab, history, n_history);
    int32_t best = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        best = logits[i] > logits[best] ? (int32_t)i : best;
    if (p->temperature <= 0)
        return best;

    /* Candidates: tokens whose probability at this temperature is not
     * negligible next to the best one (e^-40 of it); then sorted. */
    if (s->cap < n_vocab) {
        int32_t *idx = realloc(s->idx, n_vocab * sizeof *idx);
        float *val = idx ? realloc(s->val, n_vocab * sizeof *val) : NULL;
        if (idx)
            s->idx = idx;
        if (val)
            s->val = val;
        if (!idx || !val)
            return -1;
        s->cap = n_vocab;
    }
    float floor = logits[best] - 40.0f * p->temperature;
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_vocab; i++)
        if (logits[i] >= floor)
            s->idx[n++] = (int32_t)i;
    qsort_r(s->idx, n, sizeof *s->idx, cmp_desc, logits);
    if (p->top_k > 0 && (uint32_t)p->top_k < n)
        n = (uint32_t)p->top_k;

    /* Probabilities at temperature 1 for top-p and min-p (llama.cpp filters
     * before it applies the temperature), then at the temperature. */
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        s->val[i] = expf(logits[s->idx[i]] - logits[best]);
        sum += s->val[i];
    }
    if (p->top_p < 1.0f) {
        double cum = 0;
        for (uint32_t i = 0; i < n; i++) {
            cum += s->val[i] / sum;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        uint32_t keep = 1;
        while (keep < n && s->val[keep] >= p->min_p * s->val[0])
            keep++;
        n = keep;
    }
    sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        s->val[i] = expf((logits[s->idx[i]] - logits[best]) / p->temperature);
        sum += s->val[i];
    }
    double r = next_uniform(s->rng) * sum;
    for (uint32_t i = 0; i < n; i++) {
        r -= s->val[i];
        if (r < 0)
            return s->idx[i];
    }
    return s->idx[n - 1];
}

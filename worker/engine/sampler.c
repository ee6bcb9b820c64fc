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
    free(s->chosen);
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

/* A max-heap of token ids by logit (ties: the lower id first), so that the
 * best candidates come out in order without sorting the whole vocabulary:
 * top-p and min-p usually stop after a few hundred. */
static int before(const float *l, int32_t a, int32_t b)
{
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

static void sift_down(int32_t *h, uint32_t n, uint32_t i, const float *l)
{
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && before(l, h[c + 1], h[c]))
            c++;
        if (!before(l, h[c], h[i]))
            return;
        int32_t t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

/* Moves the best of the heap h[0..n) to h[n-1] and shrinks the heap. */
static int32_t heap_pop_best(int32_t *h, uint32_t n, const float *l)
{
    int32_t best = h[0];
    h[0] = h[n - 1];
    h[n - 1] = best;
    sift_down(h, n - 1, 0, l);
    return best;
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

    if (s->cap < n_vocab) {
        int32_t *idx = realloc(s->idx, n_vocab * sizeof *idx);
        if (idx)
            s->idx = idx;
        int32_t *chosen = idx ? realloc(s->chosen, n_vocab * sizeof *chosen) : NULL;
        if (chosen)
            s->chosen = chosen;
        float *val = chosen ? realloc(s->val, n_vocab * sizeof *val) : NULL;
        if (val)
            s->val = val;
        if (!idx || !chosen || !val)
            return -1;
        s->cap = n_vocab;
    }
    /* Candidates: tokens whose probability at this temperature is not
     * negligible next to the best one's (e^-40 of it), in a max-heap. */
    float floor = logits[best] - 40.0f * p->temperature;
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_vocab; i++)
        if (logits[i] >= floor)
            s->idx[n++] = (int32_t)i;
    for (uint32_t i = n / 2; i-- > 0;)
        sift_down(s->idx, n, i, logits);

    /* Top-k, then top-p and min-p on probabilities at temperature 1
     * (llama.cpp filters before it applies the temperature), normalized over
     * the top-k set when there is one, else over all candidates. The chosen
     * tokens come out of the heap best first. */
    uint32_t limit = p->top_k > 0 && (uint32_t)p->top_k < n ? (uint32_t)p->top_k : n;
    double sum = 0;
    if (limit < n) {
        for (uint32_t i = 0; i < limit; i++) {
            s->chosen[i] = heap_pop_best(s->idx, n - i, logits);
            sum += expf(logits[s->chosen[i]] - logits[best]);
        }
    } else {
        for (uint32_t i = 0; i < n; i++)
            sum += expf(logits[s->idx[i]] - logits[best]);
    }
    uint32_t taken = 0;
    double cum = 0;
    while (taken < limit) {
        int32_t tok = limit < n ? s->chosen[taken] : heap_pop_best(s->idx, n - taken, logits);
        float v = expf(logits[tok] - logits[best]); /* relative to the best token */
        if (taken > 0 && p->min_p > 0 && v < p->min_p)
            break;
        s->chosen[taken++] = tok;
        cum += v / sum;
        if (p->top_p < 1.0f && cum >= p->top_p)
            break;
    }

    /* The draw, at the temperature, among the chosen. */
    sum = 0;
    for (uint32_t i = 0; i < taken; i++) {
        s->val[i] = expf((logits[s->chosen[i]] - logits[best]) / p->temperature);
        sum += s->val[i];
    }
    double r = next_uniform(s->rng) * sum;
    for (uint32_t i = 0; i < taken; i++) {
        r -= s->val[i];
        if (r < 0)
            return s->chosen[i];
    }
    return s->chosen[taken - 1];
}

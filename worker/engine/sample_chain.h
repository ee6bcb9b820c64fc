/* sample_chain.h - the sampling chain, one definition for the host sampler
 * (sampler.c) and the CUDA backend's device sampler (cuda/sample.cu): from
 * the same logits, parameters and uniform both choose the same token, bit
 * for bit.
 *
 * The chain is llama.cpp's default order: penalties (repetition, presence,
 * frequency) over the last penalty_last_n tokens; candidates, the tokens
 * within 40 x temperature of the best logit; top-k; top-p and min-p on
 * probabilities at temperature 1, over the top-k set; a draw at the
 * temperature among what is left, best first. Temperature 0 is greedy: the
 * first largest logit after the penalties.
 *
 * How it is computed, so that any number of threads can share it exactly:
 * - Tokens are ranked by a 64-bit key: the logit's bits in an order that
 *   compares like the floats, over the complement of the id. A larger key is
 *   better, and equal logits go to the lower id.
 * - Weights are fixed-point integers, 2^40 for the best token (so sums of
 *   them fit 64 bits for vocabularies of up to 2^23 tokens). They come
 *   from a float exp made of correctly rounded basic operations (no libm, no
 *   FMA), so they are the same on host and device, and every sum of them is
 *   an exact integer sum, the same in any order.
 * - Each cut (the k-th token, the token where top-p's mass is reached, the
 *   drawn token) is found by a radix search over the keys, a byte at a time
 *   from the top. A pass counts, for each of 256 buckets, the tokens of the
 *   set that share the digits found so far: how many, their weight and their
 *   largest key. The search goes into the bucket where the weight, best
 *   first, reaches its goal, and stops when that bucket holds one token.
 * A pass is a loop over the vocabulary (or any subset holding the
 * candidates) in any order; sc_chain says what the next pass computes.
 */
#ifndef SMQ_SAMPLE_CHAIN_H
#define SMQ_SAMPLE_CHAIN_H

#include <math.h>
#include <stdint.h>

#include "quant.h"

/* The host's arithmetic must round as the device's: GNU C lets GCC fuse a*b+c
 * into one FMA (-ffp-contract=fast), ISO C does not. */
#if !defined(__CUDA_ARCH__) && defined(__GNUC__) && !defined(__clang__) && !defined(__STRICT_ANSI__)
#error "sample_chain.h: compile as ISO C or C++ (-std=c11, -std=c++17), or the host's weights differ from the GPU's"
#endif

#ifdef __CUDACC__
#define SCFN static inline __host__ __device__
#else
#define SCFN static inline
#endif

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

/* One pick: what the chain needs besides the logits (sampler_prepare fills
 * it). A backend may run the chain itself (fwd_seq.pick). */
typedef struct sample_pick {
    sampling_params p;
    const int32_t *pen_tokens;  /* the penalty window's distinct tokens */
    const uint32_t *pen_counts; /* how often each occurs in the window */
    uint32_t n_pen;
    double u;      /* the draw's uniform, in [0, 1) */
    int32_t token; /* out: the chosen token; -1 until a backend chooses */
} sample_pick;

#define SC_BINS      256
#define SC_ONE       1099511627776.0 /* 2^40: the best token's weight */
#define SC_MAX_VOCAB (1u << 23)      /* tokens whose weights sum within 64 bits */

SCFN int sc_penalized(const sampling_params *p)
{
    return p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
}

/* A logit after the penalties for a token seen count times in the window. */
SCFN float sc_penalize(const sampling_params *p, float l, uint32_t count)
{
    if (p->repeat_penalty != 1.0f)
        l = l > 0 ? qdiv(l, p->repeat_penalty) : qmul(l, p->repeat_penalty);
    return qsub(qsub(l, qmul((float)count, p->frequency_penalty)), p->presence_penalty);
}

/* e^x for x <= 0 in float, to about 4e-7 relative (0 at -87 and below, and
 * for NaN): Cody-Waite reduction by ln 2 (k * LN2_HI is exact: LN2_HI has 9
 * bits), a Horner-evaluated Taylor polynomial of degree 6 on |r| <= ln2 / 2,
 * and 2^k made from its bits. Float, not double: the GPUs with little
 * double-precision throughput (L4, A10, RTX) would spend a millisecond a
 * pick on 128K double exps. */
SCFN float sc_exp(float x)
{
    if (!(x > -87.0f))
        return 0.0f;
    if (x > 0)
        x = 0;
    /* k = x / ln 2 rounded to nearest (even), by the 1.5 * 2^23 shift */
    float k = qsub(qadd(qmul(x, 1.44269504f), 12582912.0f), 12582912.0f);
    float r = qsub(qsub(x, qmul(k, 0.693359375f)), qmul(k, -2.12194440e-4f));
    float s = 1.0f / 720.0f; /* 1/6!, then 1/5! .. 1/0! */
    s = qadd(qmul(s, r), 1.0f / 120.0f);
    s = qadd(qmul(s, r), 1.0f / 24.0f);
    s = qadd(qmul(s, r), 1.0f / 6.0f);
    s = qadd(qmul(s, r), 0.5f);
    s = qadd(qmul(s, r), 1.0f);
    s = qadd(qmul(s, r), 1.0f);
    return qmul(s, f32_from_bits((uint32_t)((int)k + 127) << 23));
}

/* The fixed-point weight of e (0 <= e <= 1), rounded to nearest. */
SCFN uint64_t sc_weight(float e)
{
    return (uint64_t)qdadd(qdmul((double)e, SC_ONE), 0.5);
}

/* The rank key: larger is better; equal logits rank by the lower id. */
SCFN uint64_t sc_key(float l, uint32_t id)
{
    uint32_t u = l == 0.0f ? 0u : f32_bits(l); /* -0 ranks as +0 */
    u = u & 0x80000000u ? ~u : u | 0x80000000u;
    return (uint64_t)u << 32 | (uint64_t)(0xFFFFFFFFu - id);
}

SCFN uint32_t sc_key_id(uint64_t key)
{
    return 0xFFFFFFFFu - (uint32_t)key;
}

/* The token a pass looks at and what it weighs. */
enum { SC_COUNT, SC_MASS, SC_DRAW };

typedef struct sc_set {
    float best, floor, temperature, min_p;
    uint64_t best_key;
    uint64_t lo; /* keys below lo are out (0: none) */
    int kind;    /* SC_COUNT: candidates, each 1; SC_MASS: candidates, e^(l - best);
                    SC_DRAW: the kept tokens (min-p too), e^((l - best) / temperature) */
} sc_set;

/* 1 when the token id with logit l passes the set's floor and cut, with its
 * key; sc_weigh then decides the rest, so that a search can skip the weight
 * of a token outside its bucket. */
SCFN int sc_in(const sc_set *s, float l, uint32_t id, uint64_t *key)
{
    if (!(l >= s->floor))
        return 0;
    *key = sc_key(l, id);
    return *key >= s->lo;
}

/* The weight of a token that sc_in let in, or 0 when min-p leaves it out
 * (an SC_DRAW set; the best token always stays). */
SCFN int sc_weigh(const sc_set *s, float l, uint64_t key, uint64_t *w)
{
    if (s->kind == SC_COUNT) {
        *w = 1;
        return 1;
    }
    float d = qsub(l, s->best);
    if (s->kind == SC_MASS) {
        *w = sc_weight(sc_exp(d));
        return 1;
    }
    if (s->min_p > 0 && key != s->best_key && sc_exp(d) < s->min_p)
        return 0;
    *w = sc_weight(sc_exp(qdiv(d, s->temperature)));
    return 1;
}

/* A radix search: the first token, best first, at which the weight so far
 * reaches goal. */
typedef struct sc_select {
    uint64_t goal;
    uint64_t before; /* weight of the set's tokens ranked above the current bucket */
    uint64_t prefix; /* the key's digits found so far */
    int shift;       /* where the current digit starts */
} sc_select;

/* The bucket of key in this pass, or -1 when it does not share the digits
 * found so far. */
SCFN int sc_select_bin(const sc_select *s, uint64_t key)
{
    if (s->shift < 56 && key >> (s->shift + 8) != s->prefix)
        return -1;
    return (int)(key >> s->shift & (SC_BINS - 1));
}

/* After a pass: n, w and top (largest key) of each bucket. Returns the key
 * found, or 0 while the search goes on. */
SCFN uint64_t sc_select_step(sc_select *s, const uint32_t *n, const uint64_t *w, const uint64_t *top)
{
    int pick = -1;
    uint64_t before = s->before, at = s->before;
    for (int b = SC_BINS - 1; b >= 0; b--) {
        if (!n[b])
            continue;
        pick = b;
        at = before;
        if (before + w[b] >= s->goal)
            break;
        before += w[b];
    }
    if (pick < 0) /* an empty set: cannot happen, the best token is in every one */
        return 1;
    s->before = at;
    s->prefix = s->prefix << 8 | (uint64_t)pick;
    if (n[pick] == 1 || s->shift == 0)
        return top[pick];
    s->shift -= 8;
    return 0;
}

/* The chain's passes, in order. */
enum { SC_COUNT_ALL, SC_TOP_K, SC_MASS_ALL, SC_TOP_P, SC_DRAW_ALL, SC_DRAWING, SC_DONE };

typedef struct sc_chain {
    int stage;  /* the next pass: a total of the set's weight (.._ALL) or a search's bucket counts */
    sc_set set; /* the tokens the next pass looks at */
    sc_select sel;
    int32_t top_k;
    float top_p;
    double u;
    int32_t token; /* at SC_DONE */
} sc_chain;

/* The next pass totals the set (and gives the first digit of a search). */
SCFN void sc_total(sc_chain *c, int stage, int kind)
{
    c->stage = stage;
    c->set.kind = kind;
    c->sel.goal = c->sel.before = c->sel.prefix = 0;
    c->sel.shift = 56;
}

/* After the top-k cut (or none): top-p's normalizer, or with top-p off
 * straight to the draw's total. */
SCFN void sc_after_top_k(sc_chain *c)
{
    if (c->top_p < 1.0f)
        sc_total(c, SC_MASS_ALL, SC_MASS);
    else
        sc_total(c, SC_DRAW_ALL, SC_DRAW);
}

/* Begins the chain once the penalties are applied and the best token (the
 * first largest logit) is known. Greedy, and a best logit that is not
 * finite, need no pass: the stage is then SC_DONE. */
SCFN void sc_chain_init(sc_chain *c, const sampling_params *p, double u, float best, uint32_t best_id)
{
    c->set.best = best;
    c->set.temperature = p->temperature;
    c->set.min_p = p->min_p;
    c->set.floor = qsub(best, qmul(40.0f, p->temperature));
    c->set.best_key = sc_key(best, best_id);
    c->set.lo = 0;
    c->set.kind = SC_COUNT;
    c->top_k = p->top_k;
    c->top_p = p->top_p;
    c->u = u;
    c->token = (int32_t)best_id;
    if (!(p->temperature > 0) || !isfinite(best))
        sc_total(c, SC_DONE, SC_COUNT);
    else if (p->top_k > 0)
        sc_total(c, SC_COUNT_ALL, SC_COUNT);
    else
        sc_after_top_k(c);
}

SCFN int sc_chain_searching(const sc_chain *c)
{
    return c->stage == SC_TOP_K || c->stage == SC_TOP_P || c->stage == SC_DRAWING;
}

#define SC_OUT UINT64_MAX /* a weight slot of a token min-p left out */

/* A token's part in the next pass: 0 when it has none, else its weight (to
 * the total) and its bucket and key (to the buckets). A total's buckets are
 * the keys' top bytes: the first pass of the search that may follow it, over
 * the same tokens. *slot is the token's own, kept between passes: a total
 * stores the weight there, and the search after it reads it back instead of
 * another exp. */
SCFN int sc_pass_token(const sc_chain *c, float l, uint32_t id, uint64_t *slot, uint64_t *w, int *bin, uint64_t *key)
{
    if (!sc_in(&c->set, l, id, key))
        return 0;
    if (c->set.kind == SC_COUNT) {
        *w = 1;
    } else if (!sc_chain_searching(c)) {
        if (!sc_weigh(&c->set, l, *key, w))
            *w = SC_OUT;
        *slot = *w;
    } else {
        *w = *slot;
    }
    *bin = sc_select_bin(&c->sel, *key);
    return *w != SC_OUT && *bin >= 0;
}

/* After a pass: the total weight of its tokens and its buckets. */
SCFN void sc_chain_step(sc_chain *c, uint64_t total, const uint32_t *n, const uint64_t *w, const uint64_t *top)
{
    switch (c->stage) {
    case SC_COUNT_ALL:
        if ((uint64_t)c->top_k >= total) {
            sc_after_top_k(c);
            return;
        }
        c->stage = SC_TOP_K;
        c->sel.goal = (uint64_t)c->top_k; /* the k-th best */
        break;
    case SC_MASS_ALL: {
        /* the first token at which the mass, best first, reaches top_p (at least the best) */
        double g = qdmul((double)c->top_p, (double)total);
        /* !(g > 0): NaN or negative, which x86 and the GPU convert apart */
        uint64_t goal = !(g > 0) ? 0 : g >= (double)total ? total : (uint64_t)g;
        c->stage = SC_TOP_P;
        c->sel.goal = goal ? goal : 1;
        break;
    }
    case SC_DRAW_ALL: {
        /* the token at which the weight, best first, exceeds u * total */
        double g = qdmul(c->u, (double)total);
        uint64_t r = !(g > 0) ? 0 : g >= (double)total ? total - 1 : (uint64_t)g;
        c->stage = SC_DRAWING;
        c->sel.goal = r + 1;
        break;
    }
    default:
        break;
    }
    /* a search's pass (a total's buckets are its first) */
    uint64_t found = sc_select_step(&c->sel, n, w, top);
    if (!found)
        return;
    if (c->stage == SC_TOP_K) {
        c->set.lo = found;
        sc_after_top_k(c);
    } else if (c->stage == SC_TOP_P) {
        c->set.lo = found;
        sc_total(c, SC_DRAW_ALL, SC_DRAW);
    } else {
        c->token = (int32_t)sc_key_id(found);
        c->stage = SC_DONE;
    }
}

#endif

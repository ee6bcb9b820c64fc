/* sampler_test.c - the sampling chain on small hand-made distributions:
 * greedy, the frequencies of a temperature-1 draw, top-k, top-p, min-p,
 * temperature, the penalties, seeds, and range checks; then the shared
 * chain (sample_chain.h) against a plain sorted walk in doubles on random
 * vocabularies, and against a pass order and split like the device's. */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "sampler.h"
#include "test.h"

#define V 8

static sampling_params base(void)
{
    sampling_params p = sampling_defaults();
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    p.top_k = 0;
    p.min_p = 0;
    p.seed = 7;
    return p;
}

/* Frequencies of n draws from logits l under p. */
static void draw(const sampling_params *p, const float *l, int n, double *freq)
{
    sampler s;
    sampler_init(&s, p);
    memset(freq, 0, V * sizeof *freq);
    for (int i = 0; i < n; i++) {
        float tmp[V];
        memcpy(tmp, l, sizeof tmp);
        int32_t t = sampler_pick(&s, tmp, V, NULL, 0);
        CHECK(t >= 0 && t < V);
        if (t >= 0 && t < V)
            freq[t] += 1.0 / n;
    }
    sampler_free(&s);
}

/* log of probabilities 0.5 0.25 0.15 0.1 and four impossible tokens */
static const float probs_l[V] = { -0.6931f, -1.3863f, -1.8971f, -2.3026f, -60, -60, -60, -60 };

static void test_greedy(void)
{
    sampling_params p = base();
    p.temperature = 0;
    float l[V] = { 1, 3, 3, 2, 0, 0, 0, 0 };
    sampler s;
    sampler_init(&s, &p);
    CHECK_INT(sampler_pick(&s, l, V, NULL, 0), 1); /* ties: the lowest id */
    sampler_free(&s);
}

static void test_frequencies(void)
{
    sampling_params p = base();
    double f[V];
    draw(&p, probs_l, 40000, f);
    static const double want[4] = { 0.5, 0.25, 0.15, 0.1 };
    for (int i = 0; i < 4; i++)
        CHECK_MSG(fabs(f[i] - want[i]) < 0.015, "token %d drawn %.3f, want %.2f", i, f[i], want[i]);
    CHECK(f[4] + f[5] + f[6] + f[7] == 0);
}

static void test_filters(void)
{
    double f[V];
    sampling_params p = base();
    p.top_k = 2; /* 0 and 1 only, 2:1 */
    draw(&p, probs_l, 30000, f);
    CHECK_MSG(f[2] == 0 && f[3] == 0 && fabs(f[0] - 2.0 / 3) < 0.015, "top-k 2: %.3f %.3f %.3f", f[0], f[1], f[2]);
    p = base();
    p.top_p = 0.7f; /* 0.5 + 0.25 reaches 0.7: tokens 0 and 1 */
    draw(&p, probs_l, 30000, f);
    CHECK_MSG(f[2] == 0 && f[3] == 0 && fabs(f[0] - 2.0 / 3) < 0.015, "top-p 0.7: %.3f %.3f %.3f", f[0], f[1], f[2]);
    p.top_p = 0.4f; /* the first token alone */
    draw(&p, probs_l, 1000, f);
    CHECK_MSG(fabs(f[0] - 1.0) < 1e-9, "top-p 0.4: token 0 drawn %.4f of the time", f[0]);
    p = base();
    p.min_p = 0.35f; /* keeps p >= 0.175: tokens 0 and 1 */
    draw(&p, probs_l, 30000, f);
    CHECK_MSG(f[2] == 0 && f[3] == 0 && fabs(f[0] - 2.0 / 3) < 0.015, "min-p 0.35: %.3f %.3f %.3f", f[0], f[1], f[2]);
    p = base();
    p.top_k = 3;
    p.top_p = 0.8f; /* within the top 3 (0.5, 0.25, 0.15 of 0.9): 0.556 + 0.278 >= 0.8 */
    draw(&p, probs_l, 30000, f);
    CHECK_MSG(f[2] == 0 && f[3] == 0, "top-k then top-p: %.3f %.3f %.3f", f[0], f[1], f[2]);
    p = base();
    p.temperature = 0.5f; /* squares the odds: 0.25 : 0.0625 : 0.0225 : 0.01 */
    draw(&p, probs_l, 40000, f);
    CHECK_MSG(fabs(f[0] - 0.25 / 0.345) < 0.015, "temperature 0.5: %.3f", f[0]);
}

static void test_penalties(void)
{
    sampling_params p = base();
    p.temperature = 0;
    p.repeat_penalty = 2.0f;
    float l[V] = { 4, 3, -1, 0, 0, 0, 0, 0 };
    int32_t hist[] = { 0, 2 };
    sampler s;
    sampler_init(&s, &p);
    CHECK_INT(sampler_pick(&s, l, V, hist, 2), 1); /* 4 / 2 = 2 < 3 */
    CHECK(l[0] == 2.0f && l[2] == -2.0f);          /* negative logits are multiplied */
    sampler_free(&s);
    p = base();
    p.temperature = 0;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    float m[V] = { 4, 3, 0, 0, 0, 0, 0, 0 };
    int32_t h2[] = { 0, 0, 0 };
    sampler_init(&s, &p);
    CHECK_INT(sampler_pick(&s, m, V, h2, 3), 1); /* 4 - 3*0.5 - 0.25 = 2.25 */
    CHECK(m[0] == 2.25f);
    sampler_free(&s);
    /* the window: only the last penalty_last_n tokens count */
    p.penalty_last_n = 1;
    float k[V] = { 4, 3, 0, 0, 0, 0, 0, 0 };
    int32_t h3[] = { 0, 0, 1 };
    sampler_init(&s, &p);
    CHECK_INT(sampler_pick(&s, k, V, h3, 3), 0);
    sampler_free(&s);
}

static void test_seeds(void)
{
    sampling_params p = base();
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        p.seed = run < 2 ? 11 : 12;
        sampler s;
        sampler_init(&s, &p);
        for (int i = 0; i < 64; i++) {
            float tmp[V];
            memcpy(tmp, probs_l, sizeof tmp);
            (run == 0 ? a : run == 1 ? b : c)[i] = sampler_pick(&s, tmp, V, NULL, 0);
        }
        sampler_free(&s);
    }
    CHECK(!memcmp(a, b, sizeof a));
    CHECK(memcmp(a, c, sizeof a));
}

static void test_validation(void)
{
    smq_err err;
    sampling_params p = base();
    p.temperature = -1;
    CHECK(sampling_validate(&p, &err) == -1);
    CHECK_CONTAINS(err.msg, "temperature -1 is out of range");
    p = base();
    p.min_p = 2;
    CHECK(sampling_validate(&p, &err) == -1);
    CHECK_CONTAINS(err.msg, "min_p 2 is out of range");
    p = base();
    p.top_k = -3;
    CHECK(sampling_validate(&p, &err) == -1);
    CHECK_CONTAINS(err.msg, "top_k -3 is negative");
    p = base();
    CHECK(sampling_validate(&p, &err) == 0);
}

/* ---- the chain against a reference in doubles ---- */

typedef struct ref_tok {
    float l;
    uint32_t id;
} ref_tok;

static int ref_cmp(const void *a, const void *b)
{
    const ref_tok *x = a, *y = b;
    if (x->l != y->l)
        return x->l > y->l ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static double min_d(double a, double b)
{
    return a < b ? a : b;
}

/* The chain as a sorted walk in doubles with libm's exp (logits already
 * penalized). *margin: how near, relative, any decision came to its boundary;
 * the integer chain may decide otherwise only below its rounding. */
static int32_t ref_chain(const float *l, uint32_t n_vocab, const sampling_params *p, double u, double *margin)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        best = l[i] > l[best] ? i : best;
    *margin = 1;
    if (p->temperature <= 0)
        return (int32_t)best;
    float floor = l[best] - 40.0f * p->temperature;
    ref_tok *t = malloc(n_vocab * sizeof *t);
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_vocab; i++)
        if (l[i] >= floor)
            t[n++] = (ref_tok){ l[i], i };
    qsort(t, n, sizeof *t, ref_cmp);
    uint32_t m = p->top_k > 0 && (uint32_t)p->top_k < n ? (uint32_t)p->top_k : n;
    double S = 0;
    for (uint32_t i = 0; i < m; i++)
        S += exp((double)(t[i].l - t[0].l));
    if (p->top_p < 1.0f) {
        double goal = (double)p->top_p * S, cum = 0;
        for (uint32_t i = 0; i < m; i++) {
            cum += exp((double)(t[i].l - t[0].l));
            if (cum >= goal) {
                *margin = min_d(*margin, (cum - goal) / S);
                m = i + 1;
                break;
            }
            *margin = min_d(*margin, (goal - cum) / S);
        }
    }
    for (uint32_t i = 1; p->min_p > 0 && i < m; i++) {
        double e = exp((double)(t[i].l - t[0].l));
        if (t[i].l != t[0].l) /* a tie with the best is exactly 1 in both */
            *margin = min_d(*margin, fabs(e - p->min_p));
        if (e < p->min_p) {
            m = i;
            break;
        }
    }
    double W = 0, cum = 0;
    for (uint32_t i = 0; i < m; i++)
        W += exp((double)(t[i].l - t[0].l) / p->temperature);
    double r = u * W;
    int32_t tok = (int32_t)t[m - 1].id;
    for (uint32_t i = 0; i < m; i++) {
        double e = exp((double)(t[i].l - t[0].l) / p->temperature);
        cum += e;
        *margin = min_d(*margin, fabs(cum - r) / W);
        if (cum > r) {
            tok = (int32_t)t[i].id;
            break;
        }
    }
    free(t);
    return tok;
}

/* The chain as the device runs it: the tokens in a shuffled order, shared by
 * four "threads" whose totals and buckets are merged after each pass. */
static int32_t split_chain(const float *l, uint32_t n_vocab, const sampling_params *p, double u, const uint32_t *order)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        best = l[i] > l[best] ? i : best;
    sc_chain c;
    sc_chain_init(&c, p, u, l[best], best);
    uint64_t *slot = calloc(n_vocab, sizeof *slot);
    int passes = 0;
    while (c.stage != SC_DONE && passes++ < 64) {
        uint32_t bn[4][SC_BINS] = { { 0 } };
        uint64_t bw[4][SC_BINS] = { { 0 } }, btop[4][SC_BINS] = { { 0 } }, total[4] = { 0 };
        for (uint32_t j = 0; j < n_vocab; j++) {
            uint32_t i = order[j], th = j % 4;
            uint64_t w, key;
            int b;
            if (!sc_pass_token(&c, l[i], i, &slot[i], &w, &b, &key))
                continue;
            total[th] += w;
            bn[th][b]++;
            bw[th][b] += w;
            btop[th][b] = key > btop[th][b] ? key : btop[th][b];
        }
        for (int th = 1; th < 4; th++) {
            total[0] += total[th];
            for (int b = 0; b < SC_BINS; b++) {
                bn[0][b] += bn[th][b];
                bw[0][b] += bw[th][b];
                btop[0][b] = btop[th][b] > btop[0][b] ? btop[th][b] : btop[0][b];
            }
        }
        sc_chain_step(&c, total[0], bn[0], bw[0], btop[0]);
    }
    CHECK_MSG(c.stage == SC_DONE, "the chain did not end after %d passes", passes);
    free(slot);
    return c.token;
}

static void test_chain_random(void)
{
    static const float temps[] = { 0, 0.3f, 0.6f, 1, 1.5f, 5 }, top_ps[] = { 1, 0.95f, 0.5f, 0.1f, 1e-6f },
                       min_ps[] = { 0, 0.05f, 0.5f, 1 }, sigmas[] = { 0.5f, 2, 8 };
    int agree = 0, near = 0, cases = 2000;
    for (int c = 0; c < cases && !test_cur_failed; c++) {
        uint32_t nv = 1 + (uint32_t)(test_rng() % 3000);
        float *l = malloc(nv * sizeof *l), *a = malloc(nv * sizeof *a), *b = malloc(nv * sizeof *b);
        uint32_t *order = malloc(nv * sizeof *order);
        float sigma = sigmas[test_rng() % 3];
        int ties = test_rng() % 3 == 0; /* logits in steps of 0.5: many equal ones */
        for (uint32_t i = 0; i < nv; i++) {
            l[i] = (float)(sigma * test_normal());
            if (ties)
                l[i] = roundf(l[i] * 2) / 2;
            order[i] = i;
        }
        for (uint32_t i = nv; i-- > 1;) {
            uint32_t j = (uint32_t)(test_rng() % (i + 1)), x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        sampling_params p = sampling_defaults();
        p.temperature = temps[test_rng() % 6];
        p.top_p = top_ps[test_rng() % 5];
        p.min_p = min_ps[test_rng() % 4];
        static const int32_t ks[] = { 0, 1, 2, 5, 40 };
        p.top_k = test_rng() % 6 < 5 ? ks[test_rng() % 5] : (int32_t)(nv + test_rng() % 4);
        double u = test_rng() % 10 == 0 ? (test_rng() % 2 ? 0 : 1 - 0x1.0p-53) : test_unit();
        sampler s;
        sampler_init(&s, &p);
        sample_pick pk;
        CHECK(sampler_prepare(&s, NULL, 0, &pk) == 0);
        pk.u = u;
        memcpy(a, l, nv * sizeof *l);
        memcpy(b, l, nv * sizeof *l);
        int32_t got = sampler_choose(&s, a, nv, &pk), split = split_chain(b, nv, &p, u, order);
        double margin;
        int32_t want = ref_chain(l, nv, &p, u, &margin);
        CHECK_MSG(got == split, "case %d: the split passes chose %d, the sampler %d", c, split, got);
        if (u == 0 || margin > 1e-6) { /* u 0: the best token in both; float weights: ~4e-7 each */
            CHECK_MSG(
                got == want,
                "case %d (nv %u, T %g, top-k %d, top-p %g, min-p %g, u %.17g): chose %d, the reference %d (margin %g)",
                c, nv, p.temperature, (int)p.top_k, p.top_p, p.min_p, u, got, want, margin);
            agree++;
        } else if (u < 0.5) {
            near++; /* (u just below 1 falls at the last kept token's end: near by design) */
        }
        sampler_free(&s);
        free(l);
        free(a);
        free(b);
        free(order);
    }
    CHECK_MSG(near < cases / 100, "%d of %d cases within rounding of a boundary", near, cases);
    if (!test_cur_failed)
        printf("  chain vs reference: %d cases agree, %d left out within rounding of a boundary\n", agree, near);
}

static void test_chain_math(void)
{
    double worst = 0;
    for (int i = 0; i <= 200000; i++) {
        float x = -86.0f * (float)i / 200000;
        double e = sc_exp(x), r = exp((double)x);
        worst = fmax(worst, fabs(e - r) / r);
    }
    CHECK_MSG(worst < 5e-7, "sc_exp's worst relative error %g", worst);
    CHECK(sc_exp(0) == 1.0f && sc_exp(-100) == 0 && sc_exp(NAN) == 0 && sc_exp(-INFINITY) == 0);
    CHECK(sc_weight(1.0f) == 1ull << 40);
    /* keys rank by logit, then by the lower id; -0 is +0 */
    static const float v[] = { -INFINITY, -3e38f, -2.5f, -1, -1e-30f, 0, 1e-30f, 1, 2.5f, 3e38f, INFINITY };
    for (int i = 0; i + 1 < (int)(sizeof v / sizeof *v); i++)
        CHECK_MSG(sc_key(v[i], 5) < sc_key(v[i + 1], 5), "key(%g) >= key(%g)", v[i], v[i + 1]);
    CHECK(sc_key(1.0f, 3) > sc_key(1.0f, 4));
    CHECK(sc_key(-0.0f, 7) == sc_key(0.0f, 7));
    CHECK(sc_key_id(sc_key(-2.0f, 123456)) == 123456);
}

/* All logits equal: top-k keeps the k lowest ids, each as likely. */
static void test_chain_ties(void)
{
    sampling_params p = base();
    p.top_k = 3;
    float l[V] = { 0 };
    double f[V];
    draw(&p, l, 30000, f);
    CHECK_MSG(fabs(f[0] - 1.0 / 3) < 0.015 && fabs(f[2] - 1.0 / 3) < 0.015 && f[3] == 0,
              "top-k 3 of equal logits: %.3f %.3f %.3f %.3f", f[0], f[1], f[2], f[3]);
}

/* The pick's penalty window: distinct tokens with counts, the last n only;
 * a greedy pick takes no uniform from the generator. */
static void test_prepare(void)
{
    sampling_params p = base();
    p.repeat_penalty = 1.5f;
    p.penalty_last_n = 5;
    int32_t hist[] = { 9, 9, 4, 7, 4, 4, 2 };
    sampler s;
    sampler_init(&s, &p);
    sample_pick pk;
    CHECK(sampler_prepare(&s, hist, 7, &pk) == 0);
    CHECK_INT(pk.n_pen, 3);
    if (pk.n_pen == 3) {
        CHECK(pk.pen_tokens[0] == 2 && pk.pen_counts[0] == 1);
        CHECK(pk.pen_tokens[1] == 4 && pk.pen_counts[1] == 3);
        CHECK(pk.pen_tokens[2] == 7 && pk.pen_counts[2] == 1);
    }
    CHECK(pk.token == -1 && pk.u >= 0 && pk.u < 1);
    CHECK(sampler_prepare(&s, NULL, 0, &pk) == 0 && pk.n_pen == 0); /* penalties, no history yet */
    sampler_free(&s);
    p = base();
    sampler a, g;
    sampler_init(&a, &p);
    p.temperature = 0;
    sampler_init(&g, &p);
    CHECK(sampler_prepare(&g, NULL, 0, &pk) == 0 && pk.u == 0 && pk.n_pen == 0);
    CHECK(!memcmp(a.rng, g.rng, sizeof a.rng));
    sampler_free(&a);
    sampler_free(&g);
}

/* Inputs past the chain's range get an answer that does not depend on how
 * the machine converts a negative or NaN double (x86 and the GPU differ):
 * a uniform below 0 or NaN draws the best token; no tokens is an error. */
static void test_out_of_range(void)
{
    float l[4] = { 1.0f, 3.0f, 2.0f, 0.5f }, tmp[4];
    sampling_params p = base();
    p.temperature = 1.0f;
    sampler s;
    sampler_init(&s, &p);
    sample_pick pk;
    CHECK(sampler_prepare(&s, NULL, 0, &pk) == 0);
    const double us[] = { -0.25, -1e300, NAN };
    for (size_t i = 0; i < sizeof us / sizeof us[0]; i++) {
        pk.u = us[i];
        memcpy(tmp, l, sizeof l);
        CHECK_INT(sampler_choose(&s, tmp, 4, &pk), 1);
    }
    CHECK_INT(sampler_choose(&s, tmp, 0, &pk), -1);
    sampler_free(&s);
}

/* The cost of one pick at the real vocabulary (printed, not judged). */
static void test_pick_speed(void)
{
    enum { NV = 128256, N = 50 };
    float *l = malloc(NV * sizeof *l), *tmp = malloc(NV * sizeof *tmp);
    for (uint32_t i = 0; i < NV; i++)
        l[i] = (float)(3 * test_normal());
    sampling_params p = sampling_defaults();
    sampler s;
    sampler_init(&s, &p);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++) {
        memcpy(tmp, l, NV * sizeof *l);
        CHECK(sampler_pick(&s, tmp, NV, NULL, 0) >= 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("  a pick at 128,256 tokens (T 0.6, top-p 0.95, logits ~ N(0, 3)): %.0f us\n",
           ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / N / 1e3);
    sampler_free(&s);
    free(l);
    free(tmp);
}

int main(void)
{
    test_program = "sampler";
    TEST_RUN(test_greedy);
    TEST_RUN(test_frequencies);
    TEST_RUN(test_filters);
    TEST_RUN(test_penalties);
    TEST_RUN(test_seeds);
    TEST_RUN(test_validation);
    TEST_RUN(test_chain_math);
    TEST_RUN(test_chain_ties);
    TEST_RUN(test_prepare);
    TEST_RUN(test_out_of_range);
    TEST_RUN(test_chain_random);
    TEST_RUN(test_pick_speed);
    return test_done();
}

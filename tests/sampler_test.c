/* sampler_test.c - the sampling chain on small hand-made distributions:
 * greedy, the frequencies of a temperature-1 draw, top-k, top-p, min-p,
 * temperature, the penalties, seeds, and range checks. */
#include <math.h>

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

int main(void)
{
    test_program = "sampler";
    TEST_RUN(test_greedy);
    TEST_RUN(test_frequencies);
    TEST_RUN(test_filters);
    TEST_RUN(test_penalties);
    TEST_RUN(test_seeds);
    TEST_RUN(test_validation);
    return test_done();
}

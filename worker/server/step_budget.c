/* step_budget.c - see step_budget.h. */
#include "step_budget.h"

#include <stdlib.h>
#include <time.h>

#define BUSY_SHARE 3 /* beside decoding streams a step aims at target_s / BUSY_SHARE */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void noop_event(void *ctx, const engine_event *ev)
{
    (void)ctx;
    (void)ev;
}

/* Seconds for one prompt of k tokens, read in one step, and its first
 * token; -1 with err when the engine fails. */
static double time_step(engine *e, int32_t *prompt, uint32_t k, uint32_t run, uint32_t n_vocab, smq_err *err)
{
    /* Prompts differ from their first token on, so that none reuses the
     * previous one's cached prefix. */
    for (uint32_t i = 0; i < k; i++)
        prompt[i] = (int32_t)((1000 + run * 977 + i) % n_vocab);
    seq_request r = { 0 };
    r.prompt = prompt;
    r.n_prompt = k;
    r.sampling = sampling_defaults();
    r.sampling.temperature = 0;
    r.max_tokens = 1;
    double t0 = now_s();
    int left = engine_submit(e, &r, err) ? 1 : -1;
    while (left > 0)
        left = engine_step(e, noop_event, NULL, err);
    return left < 0 ? -1 : now_s() - t0;
}

/* A step costs a fixed part (on the CPU, and on a GPU at the batch sizes
 * that leave it bandwidth-bound: reading every weight once; sampling) plus
 * a part per token, both measured: after a warm-up step (first touches,
 * thread start, kernel loads), a step of one token, then of k tokens, k
 * growing until the step takes half the target and twice the one-token
 * step, or k reaches cap. The budget aims at the target at the start of a
 * context; step_budget_after_step() follows what the steps then take
 * (attention over a long context costs more per token, and many rows cost
 * less each than few on the CPU). */
int step_budget_measure(step_budget *b, engine *e, uint32_t n_vocab, uint32_t cap, double target, smq_err *err)
{
    int32_t *prompt = malloc((cap ? cap : 1) * sizeof *prompt);
    if (!prompt)
        return smq_err_set(err, "out of memory");
    engine_set_max_step_tokens(e, cap);
    uint32_t run = 0, k = cap < 8 ? cap : 8;
    double one = time_step(e, prompt, k, run++, n_vocab, err);
    if (one >= 0)
        one = time_step(e, prompt, 1, run++, n_vocab, err);
    double many = one;
    for (k = 1; many >= 0 && (many < target / 2 || many < 2 * one) && k < cap;) {
        k = k * 4 < cap ? k * 4 : cap;
        many = time_step(e, prompt, k, run++, n_vocab, err);
    }
    free(prompt);
    if (one < 0 || many < 0)
        return smq_err_prefix(err, "measuring the step time");
    /* Noise can make the difference tiny or negative where the fixed part
     * dominates; the part per token is then taken as a tenth of the mean. */
    double per_row = k > 1 ? (many - one) / (k - 1) : many;
    if (per_row < many / k / 10)
        per_row = many / k / 10;
    double fixed = one > per_row ? one - per_row : 0, rows = (target - fixed) / per_row;
    b->target_s = target;
    b->rows = rows < 1 ? 1 : rows > cap ? cap : (uint32_t)rows;
    b->rows_max = cap;
    b->slow_steps = 0;
    b->fixed_s = fixed;
    b->row_s = per_row;
    return 0;
}

double step_budget_target(const step_budget *b, uint32_t decoding)
{
    return decoding ? b->target_s / BUSY_SHARE : b->target_s;
}

/* The rows of a step that takes target_s / BUSY_SHARE, by the costs the
 * budget implies: the measured fixed part, and the part per row that makes
 * `rows` take target_s (it follows the steps; the one measured at start-up
 * does not). At the cap that part is only a bound (steps alone took less
 * than the target: a GPU's take milliseconds), so the measured one serves
 * where it is smaller. */
static uint32_t busy_rows(const step_budget *b)
{
    double per_row = b->target_s > b->fixed_s ? (b->target_s - b->fixed_s) / b->rows : b->row_s;
    if (b->rows >= b->rows_max && b->row_s < per_row)
        per_row = b->row_s;
    double rows = (b->target_s / BUSY_SHARE - b->fixed_s) / per_row;
    return rows < 1 ? 1 : rows > b->rows ? b->rows : (uint32_t)rows;
}

uint32_t step_budget_prompt_tokens(const step_budget *b, uint32_t decoding)
{
    uint32_t rows = decoding ? busy_rows(b) : b->rows;
    return rows > decoding + 1 ? rows - decoding : 1;
}

/* Only steps that read all the prompt they were allowed say anything about
 * the budget: it grows while they take under the target (doubling under a
 * third of it, so that a budget measured on a busy machine recovers within a
 * few steps; else by an eighth), and halves when two steps in a row take
 * over 5/3 of it (a long context's attention, a busy machine). One slow step
 * alone is taken for noise. Steps beside decoding streams, which aim at a
 * third of the target, are judged against that, and only ever lower it. */
int step_budget_after_step(step_budget *b, double dt, int full, uint32_t decoding)
{
    if (!full)
        return 0;
    double target = step_budget_target(b, decoding);
    if (dt <= target * 5 / 3) {
        b->slow_steps = 0;
        uint32_t grow = decoding ? 0 : dt < target / 3 ? b->rows : dt < target ? 1 + b->rows / 8 : 0;
        b->rows = b->rows + grow < b->rows_max ? b->rows + grow : b->rows_max;
        return 0;
    }
    if (++b->slow_steps < 2 || b->rows == 1)
        return 0;
    b->rows /= 2;
    b->slow_steps = 0;
    return 1;
}

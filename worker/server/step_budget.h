/* step_budget.h - how many tokens one engine step may carry.
 *
 * A step takes every running sequence's next token and as many prompt
 * tokens as the budget allows. Long steps read prompts faster (the CPU's
 * products reuse each weight for more rows), short ones keep the rest
 * responsive: the worker's one thread reads the broker's frames (a CANCEL, a
 * new request) only between steps, the streams that decode wait for it, and
 * on a GPU the heartbeats wait too (on the CPU they go out during a step:
 * engine_set_progress). The worker chooses the time a step should take (the
 * `target_s` below) when it reads a prompt alone; beside streams that decode
 * a step aims at a third of it, so that they keep their pace while a newer
 * request's prompt is read. The budget is measured once on the engine at
 * start-up, then follows the steps the worker sees.
 */
#ifndef SMQ_STEP_BUDGET_H
#define SMQ_STEP_BUDGET_H

#include <stdint.h>

#include "engine.h"
#include "err.h"

typedef struct step_budget {
    double target_s;
    uint32_t rows;     /* tokens per step, prompt and decode together */
    uint32_t rows_max; /* what the measurement allowed for at most */
    uint32_t slow_steps;
    double fixed_s; /* measured: a step's cost whatever its size */
    double row_s;   /* measured: the cost of one more token */
} step_budget;

/* Times steps of the engine e (idle: it runs prompts of its own) and sets
 * the budget for steps that take about target_s, of at most cap tokens (cap
 * < the context, and room for cap + 1 tokens in the KV pool). Returns 0, or
 * -1 with err when a step fails. */
int step_budget_measure(step_budget *b, engine *e, uint32_t n_vocab, uint32_t cap, double target_s, smq_err *err);

/* What a step should take when `decoding` requests generate a token in it. */
double step_budget_target(const step_budget *b, uint32_t decoding);

/* The prompt tokens the next step may read when `decoding` requests each
 * generate one token in it (at least 1, so prompts always progress). */
uint32_t step_budget_prompt_tokens(const step_budget *b, uint32_t decoding);

/* After a step of dt seconds that carried `decoding` generated tokens; full:
 * it read as many prompt tokens as it was allowed (a prompt was left
 * unfinished). Returns 1 when it lowered the budget (a change worth saying),
 * else 0. */
int step_budget_after_step(step_budget *b, double dt, int full, uint32_t decoding);

#endif

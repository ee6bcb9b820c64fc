/* step_budget.h - how many tokens one engine step may carry.
 *
 * The worker's one thread reads the broker's frames (a CANCEL, a new
 * request) only between engine steps, and on a GPU sends its heartbeats only
 * there too (on the CPU also during a step: engine_set_progress), while the
 * broker counts a worker dead after liveness x interval of silence: a step
 * must stay well inside the slack that leaves ((liveness - 1) intervals, the
 * `interval_s` below), even while long prompts are read (on the CPU,
 * SmolLM3-3B reads ~60 prompt tokens a second). The budget is measured once
 * on the engine at start-up, then follows the steps the worker sees.
 */
#ifndef SMQ_STEP_BUDGET_H
#define SMQ_STEP_BUDGET_H

#include <stdint.h>

#include "engine.h"
#include "err.h"

typedef struct step_budget {
    double interval_s;
    uint32_t rows;     /* tokens per step, prompt and decode together */
    uint32_t rows_max; /* what the measurement allowed for at most */
    uint32_t slow_steps;
    double fixed_s; /* measured: a step's cost whatever its size */
    double row_s;   /* measured: the cost of one more token */
} step_budget;

/* Times steps of the engine e (idle: it runs prompts of its own) and sets
 * the budget for heartbeats every interval_s, for steps of at most cap
 * tokens (cap < the context, and room for cap + 1 tokens in the KV pool).
 * Returns 0, or -1 with err when a step fails. */
int step_budget_measure(step_budget *b, engine *e, uint32_t n_vocab, uint32_t cap, double interval_s, smq_err *err);

/* The prompt tokens the next step may read when `decoding` requests each
 * generate one token in it (at least 1, so prompts always progress). */
uint32_t step_budget_prompt_tokens(const step_budget *b, uint32_t decoding);

/* After a step of dt seconds; full: it read as many prompt tokens as it was
 * allowed (a prompt was left unfinished). Returns 1 when it lowered the
 * budget (a change worth saying), else 0. */
int step_budget_after_step(step_budget *b, double dt, int full);

#endif

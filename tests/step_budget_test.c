/* step_budget_test.c - worker/server/step_budget.c's policy, on budgets set
 * by hand (step_budget_measure runs in worker_test, on a real worker): how
 * many prompt tokens a step may read alone and beside decoding streams, and
 * how the budget follows the steps. */
#include "step_budget.h"

#include <stdio.h>

#include "test.h"

/* SmolLM3-3B on 2 CPU cores, roughly: 90 ms a step, ~50 ms a token, 1.5 s. */
static step_budget cpu_budget(void)
{
    step_budget b = { 0 };
    b.target_s = 1.5;
    b.rows = 30;
    b.rows_max = 512;
    b.fixed_s = 0.09;
    b.row_s = 0.06;
    return b;
}

static void test_alone_and_beside_streams(void)
{
    step_budget b = cpu_budget();
    CHECK(step_budget_prompt_tokens(&b, 0) == 30);
    /* beside 3 streams a step aims at 0.5 s: (0.5 - 0.09) / (1.41 / 30) = 8.7 rows, 3 of them theirs */
    CHECK(step_budget_target(&b, 3) == 0.5);
    CHECK_MSG(step_budget_prompt_tokens(&b, 3) == 5, "%u", step_budget_prompt_tokens(&b, 3));
    /* more streams than that: a prompt still moves, a token a step */
    CHECK(step_budget_prompt_tokens(&b, 40) == 1);
    /* a budget at its cap (steps alone far under the target: a GPU, 0.18 s
     * of heartbeat slack, 5 ms a step, 0.1 ms a token) keeps whole chunks
     * beside streams, by the measured cost per token */
    step_budget g = { 0.18, 512, 512, 0, 0.005, 0.0001 };
    CHECK_MSG(step_budget_prompt_tokens(&g, 16) == 512 - 16, "%u", step_budget_prompt_tokens(&g, 16));
    /* a fixed part above the target (a slow host): one token */
    b.fixed_s = 2.0;
    CHECK(step_budget_prompt_tokens(&b, 2) == 1);
    CHECK(step_budget_prompt_tokens(&b, 0) == 30);
}

static void test_following_the_steps(void)
{
    step_budget b = cpu_budget();
    /* a step that read less than it was allowed says nothing */
    CHECK(step_budget_after_step(&b, 0.01, 0, 0) == 0 && b.rows == 30);
    /* quick steps beside streams never grow the budget... */
    CHECK(step_budget_after_step(&b, 0.05, 1, 3) == 0 && b.rows == 30);
    /* ...quick steps alone do: doubling under a third of the target, an eighth more under it */
    CHECK(step_budget_after_step(&b, 0.4, 1, 0) == 0 && b.rows == 60);
    CHECK(step_budget_after_step(&b, 1.2, 1, 0) == 0 && b.rows == 68);
    CHECK(step_budget_after_step(&b, 2.0, 1, 0) == 0 && b.rows == 68); /* under 5/3: kept */
    /* two slow steps in a row halve it; one is noise */
    CHECK(step_budget_after_step(&b, 3.0, 1, 0) == 0 && b.rows == 68);
    CHECK(step_budget_after_step(&b, 3.0, 1, 0) == 1 && b.rows == 34);
    /* beside streams, slow is judged against their third: 0.9 s > 5/3 x 0.5 */
    CHECK(step_budget_after_step(&b, 0.9, 1, 2) == 0 && b.rows == 34);
    CHECK(step_budget_after_step(&b, 0.9, 1, 2) == 1 && b.rows == 17);
    /* the growth stops at the cap */
    b.rows = 400;
    CHECK(step_budget_after_step(&b, 0.01, 1, 0) == 0 && b.rows == 512);
    /* and the halving at one token */
    b.rows = 1;
    step_budget_after_step(&b, 9, 1, 0);
    CHECK(step_budget_after_step(&b, 9, 1, 0) == 0 && b.rows == 1);
}

int main(void)
{
    test_program = "step_budget";
    TEST_RUN(test_alone_and_beside_streams);
    TEST_RUN(test_following_the_steps);
    return test_done();
}

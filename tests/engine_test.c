/* engine_test.c - the engine on the real test model (greedy equals the
 * peer's, batches equal single runs, prefix reuse, seeds) and on a scripted
 * backend that makes the model say exactly what a test needs (thinking, end
 * of turn, stop strings across tokens, cancel, a full KV pool). */
#include "engine.h"
#include "json.h"
#include "goldens.h"
#include "test.h"

static model *mdl;
static tokenizer *tok;
static json_value *prompts, *exact;

/* Collects each sequence's tokens, text and finish. */
#define MAX_SEQ 8
typedef struct collected {
    uint64_t id;
    int32_t toks[256];
    int n;
    sbuf reasoning, content;
    finish_reason finish;
    uint32_t n_reused, n_generated, n_thinking;
} collected;

typedef struct sink {
    collected c[MAX_SEQ];
    int n;
} sink;

static void on_event(void *ctx, const engine_event *ev)
{
    sink *s = ctx;
    collected *c = NULL;
    for (int i = 0; i < s->n; i++)
        if (s->c[i].id == ev->seq)
            c = &s->c[i];
    if (!c) {
        c = &s->c[s->n++];
        memset(c, 0, sizeof *c);
        c->id = ev->seq;
    }
    if (ev->token >= 0 && c->n < 256)
        c->toks[c->n++] = ev->token;
    sbuf_append(&c->reasoning, ev->reasoning, ev->n_reasoning);
    sbuf_append(&c->content, ev->content, ev->n_content);
    if (ev->finish)
        c->finish = ev->finish;
    c->n_reused = ev->n_reused;
    c->n_generated = ev->n_generated;
    c->n_thinking = ev->n_thinking;
}

static collected *find(sink *s, uint64_t id)
{
    for (int i = 0; i < s->n; i++)
        if (s->c[i].id == id)
            return &s->c[i];
    return NULL;
}

static void sink_free(sink *s)
{
    for (int i = 0; i < s->n; i++) {
        sbuf_free(&s->c[i].reasoning);
        sbuf_free(&s->c[i].content);
    }
    s->n = 0;
}

static void run_all(engine *e, sink *s)
{
    smq_err err;
    int left, steps = 0;
    while ((left = engine_step(e, on_event, s, &err)) > 0 && steps++ < 100000)
        ;
    CHECK_MSG(left == 0, "engine_step: %s", left < 0 ? err.msg : "did not finish");
}

static seq_request greedy(const int32_t *p, uint32_t n, uint32_t max_tokens)
{
    seq_request r = { 0 };
    r.prompt = p;
    r.n_prompt = n;
    r.sampling = sampling_defaults();
    r.sampling.temperature = 0;
    r.max_tokens = max_tokens;
    return r;
}

static engine *new_engine(const backend_ops *ops, uint32_t n_ctx, uint32_t n_pages, uint32_t step_tokens)
{
    engine_config cfg = { 0 };
    cfg.n_ctx = n_ctx;
    cfg.n_pages = n_pages;
    cfg.max_step_tokens = step_tokens;
    cfg.exact = 1; /* the goldens are the f32 function */
    smq_err err;
    engine *e = engine_new(mdl, tok, ops, &cfg, &err);
    if (!e)
        test_fail(__FILE__, __LINE__, "engine_new: %s", err.msg);
    return e;
}

/* All four prompts at once (mixed prefill and decode in the same steps, in
 * prompt chunks of 100): each continuation equals the peer's greedy one. */
static void test_batched_greedy_equals_goldens(void)
{
    engine *e = new_engine(&cpu_backend_ops, 1024, 256, 100);
    if (!e)
        return;
    uint64_t ids[4];
    int32_t *p[4];
    smq_err err;
    for (int i = 0; i < 4; i++) {
        uint32_t n;
        p[i] = golden_prompt(prompts, (size_t)i, &n);
        seq_request r = greedy(p[i], n, 32);
        ids[i] = engine_submit(e, &r, &err);
        CHECK_MSG(ids[i], "submit: %s", err.msg);
    }
    sink s = { 0 };
    run_all(e, &s);
    for (int i = 0; i < 4; i++) {
        collected *c = find(&s, ids[i]);
        const json_value *g = json_get(json_at(exact, (size_t)i), "greedy");
        int same = c && c->n == 32;
        for (int k = 0; same && k < 32; k++)
            same = c->toks[k] == json_integer(json_at(g, (size_t)k));
        CHECK_MSG(same, "prompt %d: batched greedy differs from the goldens", i);
        CHECK(c && c->finish == FINISH_LENGTH);
        free(p[i]);
    }
    sink_free(&s);
    engine_destroy(&e);
}

/* A second turn whose prompt starts with the first turn's tokens reuses
 * their KV (most of it shared, the partial page copied) and continues
 * exactly as a fresh engine does. */
static void test_prefix_reuse(void)
{
    engine *e = new_engine(&cpu_backend_ops, 1024, 256, 512), *fresh = new_engine(&cpu_backend_ops, 1024, 256, 512);
    if (!e || !fresh)
        return;
    uint32_t n;
    int32_t *p = golden_prompt(prompts, 3, &n); /* 600 tokens */
    smq_err err;
    sink s = { 0 }, f = { 0 };
    seq_request first = greedy(p, 403, 4); /* 403: not a page boundary */
    engine_submit(e, &first, &err);
    run_all(e, &s);
    uint32_t free_after_first = engine_free_pages(e);
    seq_request second = greedy(p, n, 8);
    uint64_t id = engine_submit(e, &second, &err);
    run_all(e, &s);
    uint64_t fid = engine_submit(fresh, &second, &err);
    run_all(fresh, &f);
    collected *a = find(&s, id), *b = find(&f, fid);
    CHECK(a && b);
    if (a && b) {
        printf("  second turn reused %u of %u prompt tokens\n", a->n_reused, n);
        /* The first turn's 403 prompt tokens match; what it generated does not
         * continue p600, so the rest is prefilled. */
        CHECK_INT(a->n_reused, 403);
        CHECK(a->n_reused > 0 && a->n == b->n && !memcmp(a->toks, b->toks, (size_t)a->n * sizeof(int32_t)));
        CHECK(b->n_reused == 0);
    }
    CHECK(free_after_first < 256); /* the first turn's pages stayed cached */
    free(p);
    sink_free(&s);
    sink_free(&f);
    engine_destroy(&e);
    engine_destroy(&fresh);
}

/* The same seed gives the same tokens; another seed other tokens. */
static void test_seeded_sampling(void)
{
    engine *e = new_engine(&cpu_backend_ops, 256, 64, 512);
    if (!e)
        return;
    uint32_t n;
    int32_t *p = golden_prompt(prompts, 1, &n);
    smq_err err;
    uint64_t ids[3];
    for (int i = 0; i < 3; i++) {
        seq_request r = greedy(p, n, 16);
        r.sampling.temperature = 1.0f;
        r.sampling.top_p = 0.95f;
        r.sampling.top_k = 50;
        r.sampling.min_p = 0.01f;
        r.sampling.repeat_penalty = 1.1f;
        r.sampling.presence_penalty = 0.2f;
        r.sampling.frequency_penalty = 0.2f;
        r.sampling.seed = i < 2 ? 42 : 43;
        ids[i] = engine_submit(e, &r, &err);
    }
    sink s = { 0 };
    run_all(e, &s);
    collected *a = find(&s, ids[0]), *b = find(&s, ids[1]), *c = find(&s, ids[2]);
    CHECK(a && b && c && a->n == 16 && b->n == 16 && c->n == 16);
    if (a && b && c) {
        CHECK_MSG(!memcmp(a->toks, b->toks, sizeof a->toks), "same seed, different tokens");
        CHECK_MSG(memcmp(a->toks, c->toks, 16 * sizeof(int32_t)), "different seeds, same tokens");
    }
    free(p);
    sink_free(&s);
    engine_destroy(&e);
}

static void test_submit_errors(void)
{
    engine *e = new_engine(&cpu_backend_ops, 64, 8, 512);
    if (!e)
        return;
    int32_t p[100] = { 0 };
    smq_err err;
    seq_request r = greedy(p, 64, 1);
    CHECK(engine_submit(e, &r, &err) == 0);
    CHECK_CONTAINS(err.msg, "the prompt has 64 tokens; the context holds 64");
    r = greedy(p, 0, 1);
    CHECK(engine_submit(e, &r, &err) == 0);
    CHECK_CONTAINS(err.msg, "the prompt is empty");
    p[3] = 200000;
    r = greedy(p, 10, 1);
    CHECK(engine_submit(e, &r, &err) == 0);
    CHECK_CONTAINS(err.msg, "prompt token 3 (200000) is outside the vocabulary");
    p[3] = 0;
    r = greedy(p, 10, 1);
    r.sampling.top_p = 0;
    CHECK(engine_submit(e, &r, &err) == 0);
    CHECK_CONTAINS(err.msg, "top_p 0 is out of range");
    engine_destroy(&e);
}

/* ---- a scripted backend: the "model" says script[pos] at each position ---- */

static int32_t script[512];
static uint32_t script_len;

typedef struct mock {
    backend base;
} mock;

static backend *mock_create(const model *m, const backend_config *cfg, smq_err *err)
{
    (void)err;
    mock *b = calloc(1, sizeof *b);
    extern const backend_ops mock_ops;
    b->base.ops = &mock_ops;
    b->base.m = m;
    b->base.cfg = *cfg;
    return &b->base;
}

/* mock_device_pick: the mock runs the sampling chain itself when the engine
 * offers the pick (fwd_seq.pick), as a device would, and leaves logits that
 * point elsewhere ("!"), so that a token taken from the logits shows.
 * mock_noise: logits other than the script's get small pseudo-random values,
 * so that a draw at a temperature can go elsewhere. */
static int mock_device_pick, mock_noise;
static uint32_t mock_pick_offers, mock_pen_seen;

static void mock_logits(uint32_t next, float *logits, uint32_t n_vocab)
{
    int32_t want = next < script_len ? script[next] : 13; /* 13: "." */
    for (uint32_t v = 0; v < n_vocab; v++) {
        uint32_t h = (next * 2654435761u) ^ (v * 40503u);
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        logits[v] = mock_noise ? (float)(h % 1000) / 250.0f - 8 : 0;
    }
    logits[want] = mock_noise ? 1 : 100;
}

static int mock_forward(backend *b, const fwd_batch *batch, smq_err *err)
{
    (void)err;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        uint32_t next = s->pos + s->n_tokens, n_vocab = b->m->hp.n_vocab; /* the position the sampled token takes */
        mock_logits(next, s->logits, n_vocab);
        mock_pick_offers += s->pick != NULL;
        if (mock_device_pick && s->pick) {
            sampler scratch;
            sampler_init(&scratch, &s->pick->p);
            s->pick->token = sampler_choose(&scratch, s->logits, n_vocab, s->pick);
            sampler_free(&scratch);
            mock_pen_seen += s->pick->n_pen;
            for (uint32_t v = 0; v < n_vocab; v++)
                s->logits[v] = v == 0 ? 100 : 0; /* "!" */
        }
    }
    return 0;
}

static int mock_copy(backend *b, const uint32_t *s, const uint32_t *d, uint32_t n, smq_err *err)
{
    (void)b, (void)s, (void)d, (void)n, (void)err;
    return 0;
}

static uint64_t mock_memory(const backend *b)
{
    (void)b;
    return 0;
}

static void mock_destroy(backend **b)
{
    free(*b);
    *b = NULL;
}

const backend_ops mock_ops = { "mock", mock_create, mock_forward, mock_copy, mock_memory, mock_destroy };

/* The prompt is 4 tokens; the model then says the text (parse_special). */
static void set_script(const char *text)
{
    tok_ids ids = { 0 };
    smq_err err;
    tokenizer_encode(tok, text, strlen(text), 1, &ids, &err);
    script_len = 4 + (uint32_t)ids.n;
    for (uint32_t i = 0; i < 4; i++)
        script[i] = 9906;
    memcpy(script + 4, ids.ids, ids.n * sizeof *ids.ids);
    tok_ids_free(&ids);
}

static collected *run_script(engine *e, sink *s, const char *text, const char *stop, uint32_t max_tokens)
{
    set_script(text);
    seq_request r = greedy(script, 4, max_tokens);
    if (stop) {
        r.stop[0] = stop;
        r.n_stop = 1;
    }
    smq_err err;
    uint64_t id = engine_submit(e, &r, &err);
    run_all(e, s);
    return find(s, id);
}

static void test_thinking_and_end_of_turn(void)
{
    engine *e = new_engine(&mock_ops, 256, 64, 512);
    sink s = { 0 };
    collected *c = run_script(e, &s, "<think>\nLet me see: 2+2.\n</think>\nIt is 4.<|im_end|>more", NULL, 100);
    CHECK(c && c->finish == FINISH_EOG);
    CHECK_STR(c->reasoning.data, "\nLet me see: 2+2.\n");
    CHECK_STR(c->content.data, "\nIt is 4.");
    /* The thinking tokens: <think> up to </think>, both included. */
    int32_t close = tokenizer_find(tok, "</think>", 8);
    int n_think = 0;
    while (c && n_think < c->n && c->toks[n_think] != close)
        n_think++;
    CHECK(c && c->toks[0] == tokenizer_find(tok, "<think>", 7) && n_think > 3 && n_think < c->n);
    CHECK_MSG(c && c->n_thinking == (uint32_t)n_think + 1 && c->n_generated == (uint32_t)c->n,
              "n_thinking %u of %u generated, want %d", c ? c->n_thinking : 0, c ? c->n_generated : 0, n_think + 1);
    /* Cut off while thinking: every generated token was a thinking one. */
    c = run_script(e, &s, "<think>\nLet me see: 2+2.\n</think>\nIt is 4.<|im_end|>", NULL, 4);
    CHECK(c && c->finish == FINISH_LENGTH && c->n_thinking == 4 && c->n_generated == 4);
    /* No-think turns: all content. */
    c = run_script(e, &s, "Plain answer, no thoughts.<|im_end|>", NULL, 100);
    CHECK(c && c->finish == FINISH_EOG && !c->reasoning.len && c->n_thinking == 0 && c->n_generated > 3);
    CHECK_STR(c->content.data, "Plain answer, no thoughts.");
    sink_free(&s);
    engine_destroy(&e);
}

/* A backend that runs the sampling chain itself: the engine offers the pick
 * on every step that samples, and then takes its token, not the logits. The
 * pick carries all the chain needs: a device's tokens equal the host's for
 * a seeded draw at a temperature with penalties. */
static void test_backend_pick(void)
{
    engine *e = new_engine(&mock_ops, 256, 64, 512);
    sink s = { 0 };
    mock_device_pick = 1;
    mock_pick_offers = 0;
    collected *c = run_script(e, &s, "Plain answer.<|im_end|>", NULL, 100);
    CHECK(c && c->finish == FINISH_EOG);
    CHECK_STR(c->content.data, "Plain answer.");
    CHECK_MSG(mock_pick_offers == 4, "%u offers for 3 tokens and the end of the turn", mock_pick_offers);

    set_script("Plain answer, with more words to draw from.<|im_end|>");
    seq_request r = greedy(script, 4, 12);
    r.sampling.temperature = 1.5f;
    r.sampling.top_p = 0.9f;
    r.sampling.repeat_penalty = 1.3f;
    r.sampling.frequency_penalty = 0.2f;
    r.sampling.seed = 5;
    mock_noise = 1;
    collected runs[2];
    for (int run = 0; run < 2; run++) {
        smq_err err;
        mock_device_pick = run == 0;
        mock_pen_seen = 0;
        uint64_t id = engine_submit(e, &r, &err);
        run_all(e, &s);
        c = find(&s, id);
        CHECK(c && c->n == 12);
        if (c)
            runs[run] = *c;
        if (run == 0)
            CHECK_MSG(mock_pen_seen >= 12, "%u penalty tokens in 12 picks", mock_pen_seen);
    }
    CHECK(!memcmp(runs[0].toks, runs[1].toks, sizeof runs[0].toks));
    int differs = 0; /* the draw did go elsewhere than the script */
    for (int k = 0; k < 12; k++)
        differs += runs[0].toks[k] != script[4 + k];
    CHECK_MSG(differs > 0, "all 12 drawn tokens are the script's: the draw was not tested");
    mock_noise = mock_device_pick = 0;
    sink_free(&s);
    engine_destroy(&e);
}

static void test_stop_strings(void)
{
    engine *e = new_engine(&mock_ops, 256, 64, 512);
    sink s = { 0 };
    /* "END" spans tokens here ("E" "ND" or similar); it and what follows are not emitted. */
    collected *c = run_script(e, &s, "alpha beta gammaEND delta", "aEND", 100);
    CHECK(c && c->finish == FINISH_STOP_STRING);
    CHECK_STR(c->content.data, "alpha beta gamm");
    /* A prefix of the stop string that does not complete is emitted in the end. */
    c = run_script(e, &s, "one two thre", "three", 100);
    CHECK(c && c->finish == FINISH_LENGTH);
    CHECK_MSG(c && c->content.data && !strncmp(c->content.data, "one two thre", 12), "held text lost: %s",
              c && c->content.data ? c->content.data : "");
    sink_free(&s);
    engine_destroy(&e);
}

static void test_limits_and_cancel(void)
{
    engine *e = new_engine(&mock_ops, 20, 64, 512);
    sink s = { 0 };
    collected *c = run_script(e, &s, "a b c d e f g h i j k l m n o p q r s t u v w", NULL, 0);
    CHECK(c && c->finish == FINISH_CONTEXT && c->n == 16); /* 4 prompt + 16 = 20 positions */
    c = run_script(e, &s, "a b c d e f g h", NULL, 3);
    CHECK(c && c->finish == FINISH_LENGTH && c->n == 3);
    /* Cancel: the sequence ends with FINISH_CANCELLED at the next step. */
    set_script("x y z w v u t s");
    seq_request r = greedy(script, 4, 0);
    smq_err err;
    uint64_t id = engine_submit(e, &r, &err);
    engine_step(e, on_event, &s, &err);
    CHECK(engine_cancel(e, id) == 0);
    CHECK(engine_cancel(e, 9999) == -1);
    run_all(e, &s);
    c = find(&s, id);
    CHECK(c && c->finish == FINISH_CANCELLED);
    sink_free(&s);
    engine_destroy(&e);
}

/* A pool with room for one sequence at a time: both start, the younger is
 * preempted when pages run out and finishes later, with the same output
 * (nothing is corrupted); all pages come back. */
static void test_full_pool_waits(void)
{
    engine *e = new_engine(&mock_ops, 64, 4, 512); /* 4 pages of 16 */
    set_script("a b c d e f g h i j k l m n o p q r s t u v w x y z");
    seq_request r = greedy(script, 4, 40); /* needs 3 pages */
    smq_err err;
    uint64_t a = engine_submit(e, &r, &err), b = engine_submit(e, &r, &err);
    sink s = { 0 };
    run_all(e, &s);
    collected *ca = find(&s, a), *cb = find(&s, b);
    CHECK(ca && cb && ca->n == 40 && cb->n == 40);
    CHECK(ca && cb && !memcmp(ca->toks, cb->toks, 40 * sizeof(int32_t)));
    /* Every page is back (free or in the prefix cache): one sequence can
     * use the whole pool. */
    seq_request big = greedy(script, 4, 59);
    uint64_t c = engine_submit(e, &big, &err);
    run_all(e, &s);
    CHECK(find(&s, c) && find(&s, c)->n == 59 && find(&s, c)->finish == FINISH_LENGTH);
    sink_free(&s);
    engine_destroy(&e);
}

int main(void)
{
    test_program = "engine";
    char path[512];
    snprintf(path, sizeof path, "%s/models/smollm3-tiny-q4_k_m.gguf", test_data_dir());
    smq_err err;
    mdl = model_load(path, NULL, &err);
    tok = mdl ? tokenizer_load(mdl->file, &err) : NULL;
    prompts = golden_json("prompts.json");
    exact = golden_json("exact.results.json");
    if (!mdl || !tok || !prompts || !exact) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    TEST_RUN(test_batched_greedy_equals_goldens);
    TEST_RUN(test_prefix_reuse);
    TEST_RUN(test_seeded_sampling);
    TEST_RUN(test_submit_errors);
    TEST_RUN(test_thinking_and_end_of_turn);
    TEST_RUN(test_backend_pick);
    TEST_RUN(test_stop_strings);
    TEST_RUN(test_limits_and_cancel);
    TEST_RUN(test_full_pool_waits);
    json_free(prompts);
    json_free(exact);
    tokenizer_destroy(&tok);
    model_destroy(&mdl);
    return test_done();
}

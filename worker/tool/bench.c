/* bench.c - `smolmq bench`: prefill and decode speed of the inference core,
 * each beside its roofline measured in the same run.
 *
 *   smolmq bench --model M [--prompt-len P] [--gen N] [--batch B] [--threads T] [--exact]
 *       [--backend cpu|cuda|auto] [--gpu N]
 *
 * The roofline of a decode step is the bytes it must read (every weight once,
 * plus each sequence's KV cache) over the memory read bandwidth, measured
 * here before and after the runs: with the same threads on the CPU, of the
 * GPU's memory on the GPU. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu_ops.h"
#include "engine.h"
#include "model.h"
#include "threadpool.h"
#include "tokenizer.h"
#include "tool.h"

static const char *usage_line = "bench --model M [--prompt-len P] [--gen N] [--batch B] [--threads T] [--exact] "
                                "[--sample] [--backend cpu|cuda|auto] [--gpu N]";

/* ---- memory read bandwidth, with the pool's threads ---- */

typedef struct bw_job {
    const uint64_t *buf;
    size_t words, chunk;
    uint64_t sums[64];
} bw_job;

static void bw_task(void *ctx, int task, int thread)
{
    bw_job *j = ctx;
    const uint64_t *p = j->buf + (size_t)task * j->chunk;
    size_t n = j->chunk;
    if ((size_t)task * j->chunk + n > j->words)
        n = j->words - (size_t)task * j->chunk;
    j->sums[thread & 63] += read_sum(p, n * 8);
}

/* GB/s reading a 512 MiB buffer, best of three. */
static double read_bandwidth(threadpool *pool)
{
    size_t bytes = (size_t)512 << 20;
    uint64_t *buf = malloc(bytes);
    if (!buf)
        return 0;
    memset(buf, 1, bytes);
    bw_job j = { buf, bytes / 8, (size_t)1 << 16, { 0 } };
    int tasks = (int)((j.words + j.chunk - 1) / j.chunk);
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = tool_now();
        pool_run(pool, bw_task, &j, tasks);
        double gbs = (double)bytes / (tool_now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    free(buf);
    return best;
}

/* The roofline's bandwidth: the GPU's memory, or the CPU's with the
 * backend's number of threads. 0 where it cannot be measured. */
static double measure_bandwidth(const backend *b, int on_gpu)
{
    if (on_gpu)
        return tool_gpu_read_bandwidth(b->cfg.gpu);
    threadpool *pool = pool_new(b->cfg.n_threads);
    double bw = pool ? read_bandwidth(pool) : 0;
    pool_destroy(&pool);
    return bw;
}

/* ---- runs ---- */

typedef struct bench_state {
    int first_seen, done;
    double t_first_all, t_first_one;
    uint32_t tokens;
} bench_state;

static void on_event(void *ctx, const engine_event *ev)
{
    bench_state *s = ctx;
    if (ev->token >= 0) {
        s->tokens++;
        if (ev->n_generated == 1) {
            if (++s->first_seen == 1)
                s->t_first_one = tool_now();
            s->t_first_all = tool_now();
        }
    }
    if (ev->finish)
        s->done++;
}

/* Greedy, or with --sample the default chain (temperature 0.6, top-p 0.95),
 * a seed per sequence. */
static int run(engine *e, const int32_t *prompt, uint32_t p, uint32_t gen, uint32_t batch, int sample, bench_state *st,
               double *t0, smq_err *err)
{
    memset(st, 0, sizeof *st);
    for (uint32_t i = 0; i < batch; i++) {
        seq_request r = { 0 };
        r.prompt = prompt + i; /* distinct prompts: no prefix reuse between them */
        r.n_prompt = p;
        r.sampling = sampling_defaults();
        r.sampling.temperature = sample ? r.sampling.temperature : 0;
        r.sampling.seed = i + 1;
        r.max_tokens = gen;
        if (!engine_submit(e, &r, err))
            return -1;
    }
    *t0 = tool_now();
    int left;
    while ((left = engine_step(e, on_event, st, err)) > 0)
        ;
    return left < 0 ? -1 : 0;
}

int tool_bench(int argc, char **argv)
{
    const char *path = NULL, *backend_name = NULL;
    uint32_t plen = 128, gen = 32, batch = 1;
    int threads = 0, exact = 0, gpu = 0, sample = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--exact") || !strcmp(argv[i], "--sample")) {
            *(!strcmp(argv[i], "--exact") ? &exact : &sample) = 1;
            continue;
        }
        if (i + 1 >= argc)
            return tool_usage(usage_line, "unknown argument %s", argv[i]);
        const char *a = argv[i], *v = argv[++i];
        double num = 0;
        if (!strcmp(a, "--model"))
            path = v;
        else if (!strcmp(a, "--backend"))
            backend_name = v;
        else if (!strcmp(a, "--gpu") && (tool_parse_num(v, 0, 1023, &num) || num != (double)(int)num))
            return tool_usage(usage_line, "--gpu wants a device number from 0 to 1023, not \"%s\"", v);
        else if (!strcmp(a, "--gpu"))
            gpu = (int)num;
        else if (tool_parse_num(v, 1, 1 << 20, &num) || num != (double)(uint32_t)num)
            return tool_usage(usage_line, "%s wants a whole number from 1 to 1048576, not \"%s\"", a, v);
        else if (!strcmp(a, "--prompt-len"))
            plen = (uint32_t)num;
        else if (!strcmp(a, "--gen"))
            gen = (uint32_t)num;
        else if (!strcmp(a, "--batch"))
            batch = (uint32_t)num;
        else if (!strcmp(a, "--threads"))
            threads = (int)num;
        else
            return tool_usage(usage_line, "unknown argument %s", a);
    }
    if (!path)
        return tool_usage(usage_line, "no --model given");
    if (gen < 2)
        return tool_usage(usage_line, "--gen must be at least 2 (decode speed needs steps after the first)");
    smq_err err;
    model *m = model_load(path, NULL, &err);
    if (!m)
        return tool_fail("bench", "%s", err.msg);
    tokenizer *t = tokenizer_load(m->file, &err);
    if (!t) {
        model_destroy(&m);
        return tool_fail("bench", "%s", err.msg);
    }
    engine_config cfg = { 0 };
    cfg.n_ctx = plen + gen + 1;
    cfg.n_pages = batch * ((plen + gen + 16) / 16 + 1);
    cfg.max_step_tokens = plen * batch;
    cfg.max_seqs = batch;
    cfg.prefix_entries = 1;
    cfg.n_threads = threads;
    cfg.exact = exact;
    cfg.gpu = gpu;
    const backend_ops *ops = tool_pick_backend("bench", backend_name, gpu, m, cfg.n_pages, 16);
    engine *e = ops ? engine_new(m, t, ops, &cfg, &err) : NULL;
    int32_t *prompt = malloc((plen + batch + 1) * sizeof *prompt);
    int rc = 0;
    if (!ops) {
        rc = 1;
        goto out;
    }
    if (!e || !prompt) {
        rc = tool_fail("bench", "%s", e ? "out of memory" : err.msg);
        goto out;
    }
    /* A deterministic prompt of ordinary tokens. */
    for (uint32_t i = 0; i < plen + batch + 1; i++)
        prompt[i] = (int32_t)(1000 + (i * 7919u) % 50000u);

    const backend *b = engine_backend(e);
    int on_gpu = strcmp(b->ops->name, "cpu") != 0;
    double bw = measure_bandwidth(b, on_gpu);

    bench_state st;
    double t0;
    /* On a GPU a first prefill of the same length, untimed: the first use
     * of each kernel and of cuBLAS loads code (lazily, tens of ms). Its
     * prompt (at batch + 1) differs from the timed ones (0; 1 .. batch)
     * from the first token on: no prefix reuse. */
    if (on_gpu && run(e, prompt + batch + 1, plen, 2, 1, sample, &st, &t0, &err)) {
        rc = tool_fail("bench", "%s", err.msg);
        goto out;
    }
    /* prefill: one sequence, time to its first token */
    if (run(e, prompt, plen, 2, 1, sample, &st, &t0, &err)) {
        rc = tool_fail("bench", "%s", err.msg);
        goto out;
    }
    double ttft = st.t_first_one - t0;
    /* decode: batch sequences after their prompts */
    if (run(e, prompt + 1, plen, gen, batch, sample, &st, &t0, &err)) {
        rc = tool_fail("bench", "%s", err.msg);
        goto out;
    }
    double t_dec = tool_now() - st.t_first_all;
    double dec_tps = (double)batch * (gen - 1) / t_dec;
    /* Measured again after the runs, the better of the two: on a shared
     * machine a neighbour's burst during one measurement would otherwise
     * lower the roofline and flatter the ratio. */
    double bw_after = measure_bandwidth(b, on_gpu);
    bw = bw_after > bw ? bw_after : bw;
    const hparams *hp = &m->hp;
    /* the CPU's KV cache is float32, the GPU's fp16 */
    double kv_token = 2.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * (on_gpu ? 2 : sizeof(float));
    double step_bytes = (double)m->weight_bytes + batch * kv_token * (plen + gen / 2.0);
    double roof = bw > 0 ? batch * bw * 1e9 / step_bytes : 0;
    if (on_gpu) {
        printf("model: %s, %.2f GB of weights, %" PRIu32
               " layers; backend %s, GPU %d, 16-bit integer activations, fp16 KV\n",
               path, (double)m->weight_bytes / 1e9, hp->n_layer, b->ops->name, b->cfg.gpu);
        printf("memory: %.1f MB on the GPU (weights, KV pool, buffers)\n", (double)b->ops->memory(b) / 1e6);
        printf("read bandwidth (measured before and after the runs, the better; GPU %d): %.1f GB/s\n", b->cfg.gpu, bw);
    } else {
        printf("model: %s, %.2f GB of weights (mapped), %" PRIu32 " layers; backend cpu, %d threads, %s path\n", path,
               (double)m->weight_bytes / 1e9, hp->n_layer, b->cfg.n_threads, exact ? "exact f32" : "8-bit activations");
        printf("memory: weights %.2f GB mapped, KV pool + buffers %.1f MB\n", (double)m->weight_bytes / 1e9,
               (double)b->ops->memory(b) / 1e6);
        printf("read bandwidth (measured before and after the runs, the better; %d threads): %.1f GB/s\n",
               b->cfg.n_threads, bw);
    }
    printf("prefill %" PRIu32 " tokens: %.1f tok/s (time to first token %.0f ms)\n", plen, plen / ttft, ttft * 1e3);
    printf("decode batch %" PRIu32 ", %" PRIu32 " tokens each%s: %.2f tok/s; roofline %.2f tok/s; ratio %.2f\n", batch,
           gen, sample ? " (sampled: temperature 0.6, top-p 0.95)" : "", dec_tps, roof, roof > 0 ? dec_tps / roof : 0);
    uint32_t nodes = on_gpu ? tool_gpu_step_nodes(b) : 0;
    if (nodes)
        printf("decode step of one token: one CUDA graph of %" PRIu32 " nodes (kernel launches, copies)\n", nodes);
out:
    free(prompt);
    engine_destroy(&e);
    tokenizer_destroy(&t);
    model_destroy(&m);
    return rc;
}

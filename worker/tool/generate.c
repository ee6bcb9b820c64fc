/* generate.c - `smolmq logits` and `smolmq generate`: the inference core
 * from the command line.
 *
 *   smolmq logits --model M --ids 1,2,3 --out F.f32 [--all] [--backend cpu|cuda|auto] [--gpu N] [--threads N]
 *   smolmq generate --model M (--prompt TEXT | --ids 1,2,3) [--max-tokens N]
 *       [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--seed S]
 *       [--repeat-penalty R] [--presence-penalty P] [--frequency-penalty F]
 *       [--stop STR]... [--no-think] [--json] [--threads N] [--ctx-size N]
 *       [--rope-scaling none|yarn] [--backend cpu|cuda|auto] [--gpu N] [--exact]
 *
 * logits computes the reference function (f32 activations) unless --fast;
 * generate runs the fast path (8-bit activations) unless --exact. Both are
 * CPU modes: the CUDA backend always runs float32 activations (fp16 KV).
 * generate's --backend auto (its default) takes the GPU when the model fits
 * it; logits, the reference, runs on the CPU unless --backend says otherwise.
 * generate streams the answer to stdout as it comes and the reasoning (the
 * <think> part) to stderr; --json prints one object at the end instead. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_template.h"
#include "engine.h"
#include "json_out.h"
#include "model.h"
#include "tokenizer.h"
#include "tool.h"

static const char *logits_usage =
    "logits --model M --ids 1,2,3 --out F.f32 [--all] [--fast] [--backend cpu|cuda|auto] [--gpu N] [--threads N]";
static const char *gen_usage =
    "generate --model M (--prompt TEXT | --ids 1,2,3) [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] "
    "[--min-p P] [--seed S] [--stop STR] [--no-think] [--json] [--threads N] [--ctx-size N] [--backend cpu|cuda|auto] "
    "[--gpu N]";

/* "1,2,3" -> ids */
static int parse_ids(const char *s, tok_ids *out)
{
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > INT32_MAX || (*end && *end != ','))
            return -1;
        if (tok_ids_push(out, (int32_t)v))
            return -1;
        s = *end ? end + 1 : end;
    }
    return out->n ? 0 : -1;
}

int tool_logits(int argc, char **argv)
{
    const char *path = NULL, *ids_arg = NULL, *out_path = NULL, *backend_name = NULL;
    int all = 0, threads = 0, fast = 0, gpu = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--all") || !strcmp(a, "--fast")) {
            *(a[2] == 'a' ? &all : &fast) = 1;
            continue;
        }
        if (i + 1 >= argc)
            return tool_usage(logits_usage, "unknown argument %s", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--model"))
            path = v;
        else if (!strcmp(a, "--ids"))
            ids_arg = v;
        else if (!strcmp(a, "--out"))
            out_path = v;
        else if (!strcmp(a, "--backend"))
            backend_name = v;
        else if (!strcmp(a, "--threads")) {
            double n;
            if (tool_parse_num(v, 1, 1024, &n))
                return tool_usage(logits_usage, "--threads wants a number from 1 to 1024, not \"%s\"", v);
            threads = (int)n;
        } else if (!strcmp(a, "--gpu")) {
            double n;
            if (tool_parse_num(v, 0, 1023, &n) || n != (int)n)
                return tool_usage(logits_usage, "--gpu wants a device number from 0 to 1023, not \"%s\"", v);
            gpu = (int)n;
        } else
            return tool_usage(logits_usage, "unknown argument %s", a);
    }
    if (!path || !ids_arg || !out_path)
        return tool_usage(logits_usage, "--model, --ids and --out are required");
    tok_ids ids = { 0 };
    if (parse_ids(ids_arg, &ids)) {
        tok_ids_free(&ids);
        return tool_usage(logits_usage, "--ids wants token ids like 1,2,3, not \"%s\"", ids_arg);
    }
    smq_err err;
    model *m = model_load(path, NULL, &err);
    uint32_t P = 16, n_pages = (uint32_t)((ids.n + P - 1) / P);
    const backend_ops *ops = NULL;
    int rc = 0;
    if (!m) {
        rc = tool_fail("logits", "%s", err.msg);
    } else if (ids.n > model_context(m)) {
        rc = tool_fail("logits", "%zu ids are more than the model's context of %" PRIu32, ids.n, model_context(m));
    } else if (!(ops = tool_pick_backend("logits", backend_name ? backend_name : "cpu", gpu, m, n_pages, P))) {
        rc = 1;
    } else {
        backend_config cfg = { n_pages, P, threads, !fast, gpu };
        backend *b = ops->create(m, &cfg, &err);
        uint32_t *pages = malloc(n_pages * sizeof *pages);
        size_t rows = all ? ids.n : 1;
        float *logits = malloc(rows * m->hp.n_vocab * sizeof *logits);
        if (!b || !pages || !logits) {
            rc = tool_fail("logits", "%s", b ? "out of memory" : err.msg);
        } else {
            for (uint32_t p = 0; p < n_pages; p++)
                pages[p] = p;
            fwd_seq s = { ids.ids, (uint32_t)ids.n, 0, pages, n_pages, all, logits, 1 }; /* a prompt */
            fwd_batch batch = { &s, 1 };
            FILE *f = NULL;
            if (b->ops->forward(b, &batch, &err))
                rc = tool_fail("logits", "%s", err.msg);
            else if (!(f = fopen(out_path, "wb")))
                rc = tool_fail("logits", "%s: cannot create: %s", out_path, strerror(errno));
            else if (fwrite(logits, sizeof *logits, rows * m->hp.n_vocab, f) != rows * m->hp.n_vocab)
                rc = tool_fail("logits", "%s: write failed", out_path);
            if (f && fclose(f) && !rc)
                rc = tool_fail("logits", "%s: write failed", out_path);
        }
        free(pages);
        free(logits);
        if (b)
            b->ops->destroy(&b);
    }
    model_destroy(&m);
    tok_ids_free(&ids);
    return rc;
}

/* ---- generate ---- */

typedef struct gen_state {
    int json;
    tok_ids out;
    sbuf reasoning, content;
    finish_reason finish;
    const char *error;
    char error_buf[256];
    uint32_t n_prompt, n_reused, n_thinking;
    double t_first;
    int in_reasoning_line; /* stderr has reasoning without a final newline */
} gen_state;

static void on_event(void *ctx, const engine_event *ev)
{
    gen_state *g = ctx;
    if (ev->token >= 0) {
        tok_ids_push(&g->out, ev->token);
        if (g->t_first == 0)
            g->t_first = tool_now();
    }
    sbuf_append(&g->reasoning, ev->reasoning, ev->n_reasoning);
    sbuf_append(&g->content, ev->content, ev->n_content);
    if (!g->json) {
        if (ev->n_reasoning) {
            fwrite(ev->reasoning, 1, ev->n_reasoning, stderr);
            g->in_reasoning_line = ev->reasoning[ev->n_reasoning - 1] != '\n';
        }
        if (ev->n_content) {
            fwrite(ev->content, 1, ev->n_content, stdout);
            fflush(stdout);
        }
    }
    g->n_prompt = ev->n_prompt;
    g->n_reused = ev->n_reused;
    g->n_thinking = ev->n_thinking;
    if (ev->finish != FINISH_NONE) {
        g->finish = ev->finish;
        if (ev->error) {
            snprintf(g->error_buf, sizeof g->error_buf, "%s", ev->error);
            g->error = g->error_buf;
        }
    }
}

/* The prompt as the chat template renders one user turn. */
static int chat_prompt(model *m, tokenizer *t, const char *text, int think, tok_ids *out, smq_err *err)
{
    chat_template_kind kind = (chat_template_kind)tool_template_kind("generate", m->file);
    chat_message msg = { "user", text, strlen(text) };
    chat_options opt = { 0 };
    opt.add_generation_prompt = 1;
    opt.enable_thinking = think;
    return chat_encode(kind, &msg, 1, &opt, t, out, err) ? -1 : 0;
}

/* Numeric flags: parsed into doubles, range-checked, then stored. */
enum {
    F_MAX_TOKENS,
    F_TEMP,
    F_TOP_P,
    F_TOP_K,
    F_MIN_P,
    F_SEED,
    F_REPEAT,
    F_PRESENCE,
    F_FREQUENCY,
    F_THREADS,
    F_CTX,
    F_GPU,
    F_N
};
static const struct {
    const char *flag;
    double lo, hi;
} num_flags[F_N] = {
    [F_MAX_TOKENS] = { "--max-tokens", 1, 1e9 },
    [F_TEMP] = { "--temperature", 0, 100 },
    [F_TOP_P] = { "--top-p", 1e-9, 1 },
    [F_TOP_K] = { "--top-k", 0, 1e9 },
    [F_MIN_P] = { "--min-p", 0, 1 },
    [F_SEED] = { "--seed", 0, 1.8e19 },
    [F_REPEAT] = { "--repeat-penalty", 1e-9, 10 },
    [F_PRESENCE] = { "--presence-penalty", -2, 2 },
    [F_FREQUENCY] = { "--frequency-penalty", -2, 2 },
    [F_THREADS] = { "--threads", 1, 1024 },
    [F_CTX] = { "--ctx-size", 1, 1 << 24 },
    [F_GPU] = { "--gpu", 0, 1023 },
};

int tool_generate(int argc, char **argv)
{
    const char *path = NULL, *prompt = NULL, *ids_arg = NULL, *backend_name = NULL, *scaling = NULL;
    seq_request req = { 0 };
    sampling_params sp = sampling_defaults();
    double num[F_N] = { [F_MAX_TOKENS] = 512,
                        [F_TEMP] = sp.temperature,
                        [F_TOP_P] = sp.top_p,
                        [F_TOP_K] = sp.top_k,
                        [F_MIN_P] = sp.min_p,
                        [F_SEED] = (double)time(NULL),
                        [F_REPEAT] = sp.repeat_penalty,
                        [F_PRESENCE] = sp.presence_penalty,
                        [F_FREQUENCY] = sp.frequency_penalty,
                        [F_THREADS] = 0,
                        [F_CTX] = 0,
                        [F_GPU] = 0 };
    int json = 0, think = 1, exact = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--exact")) {
            exact = 1;
            continue;
        }
        if (!strcmp(a, "--no-think")) {
            think = 0;
            continue;
        }
        if (i + 1 >= argc)
            return tool_usage(gen_usage, "%s needs a value (or is unknown)", a);
        const char *s = argv[++i];
        int f = 0;
        while (f < F_N && strcmp(a, num_flags[f].flag))
            f++;
        if (f < F_N) {
            if (tool_parse_num(s, num_flags[f].lo, num_flags[f].hi, &num[f]))
                return tool_usage(gen_usage, "%s wants a number from %g to %g, not \"%s\"", a, num_flags[f].lo,
                                  num_flags[f].hi, s);
        } else if (!strcmp(a, "--model")) {
            path = s;
        } else if (!strcmp(a, "--prompt")) {
            prompt = s;
        } else if (!strcmp(a, "--ids")) {
            ids_arg = s;
        } else if (!strcmp(a, "--backend")) {
            backend_name = s;
        } else if (!strcmp(a, "--rope-scaling")) {
            scaling = s;
        } else if (!strcmp(a, "--stop")) {
            if (req.n_stop == ENGINE_MAX_STOP)
                return tool_usage(gen_usage, "at most %d --stop strings", ENGINE_MAX_STOP);
            req.stop[req.n_stop++] = s;
        } else {
            return tool_usage(gen_usage, "unknown argument %s", a);
        }
    }
    req.max_tokens = (uint32_t)num[F_MAX_TOKENS];
    sp.temperature = (float)num[F_TEMP];
    sp.top_p = (float)num[F_TOP_P];
    sp.top_k = (int32_t)num[F_TOP_K];
    sp.min_p = (float)num[F_MIN_P];
    sp.seed = (uint64_t)num[F_SEED];
    sp.repeat_penalty = (float)num[F_REPEAT];
    sp.presence_penalty = (float)num[F_PRESENCE];
    sp.frequency_penalty = (float)num[F_FREQUENCY];
    req.sampling = sp;
    int threads = (int)num[F_THREADS];
    uint32_t ctx_size = (uint32_t)num[F_CTX];
    if (!path)
        return tool_usage(gen_usage, "no --model given");
    if (!prompt == !ids_arg)
        return tool_usage(gen_usage, "give exactly one of --prompt and --ids");

    smq_err err;
    model_options mo = { ctx_size, scaling, 0 };
    model *m = model_load(path, &mo, &err);
    if (!m)
        return tool_fail("generate", "%s", err.msg);
    tokenizer *t = tokenizer_load(m->file, &err);
    tok_ids ids = { 0 };
    gen_state g = { 0 };
    g.json = json;
    engine *e = NULL;
    int rc = 0;
    if (!t) {
        rc = tool_fail("generate", "%s", err.msg);
    } else if (ids_arg ? parse_ids(ids_arg, &ids) != 0 : chat_prompt(m, t, prompt, think, &ids, &err) != 0) {
        rc = ids_arg ? tool_usage(gen_usage, "--ids wants token ids like 1,2,3") : tool_fail("generate", "%s", err.msg);
    } else {
        engine_config cfg = { 0 };
        cfg.n_ctx = ctx_size;
        /* One sequence: pages for the prompt and the answer, not the whole context. */
        uint32_t want = (uint32_t)ids.n + req.max_tokens + 1;
        uint32_t n_ctx = ctx_size ? ctx_size : model_context(m);
        cfg.n_ctx = n_ctx;
        cfg.n_pages = ((want < n_ctx ? want : n_ctx) + 15) / 16;
        cfg.n_threads = threads;
        cfg.exact = exact;
        cfg.gpu = (int)num[F_GPU];
        const backend_ops *ops = tool_pick_backend("generate", backend_name, (int)num[F_GPU], m, cfg.n_pages, 16);
        if (!ops) {
            rc = 1;
        } else {
            e = engine_new(m, t, ops, &cfg, &err);
            req.prompt = ids.ids;
            req.n_prompt = (uint32_t)ids.n;
            if (!e || !engine_submit(e, &req, &err))
                rc = tool_fail("generate", "%s", err.msg);
        }
    }
    double t0 = tool_now();
    int left = 1;
    while (!rc && left > 0) {
        left = engine_step(e, on_event, &g, &err);
        if (left < 0)
            rc = tool_fail("generate", "%s", err.msg);
    }
    double t_end = tool_now();
    if (!rc && g.finish == FINISH_ERROR)
        rc = tool_fail("generate", "%s", g.error ? g.error : "generation failed");
    if (!rc && json) {
        json_out j;
        json_init(&j, stdout);
        json_obj_begin(&j);
        json_key(&j, "ids");
        json_arr_begin(&j);
        for (size_t i = 0; i < g.out.n; i++)
            json_i64(&j, g.out.ids[i]);
        json_arr_end(&j);
        json_key(&j, "reasoning");
        json_strn(&j, g.reasoning.data ? g.reasoning.data : "", g.reasoning.len);
        json_key(&j, "content");
        json_strn(&j, g.content.data ? g.content.data : "", g.content.len);
        json_key(&j, "finish_reason");
        json_str(&j, finish_reason_name(g.finish));
        json_key(&j, "usage");
        json_obj_begin(&j);
        json_key(&j, "prompt_tokens");
        json_u64(&j, g.n_prompt);
        json_key(&j, "completion_tokens");
        json_u64(&j, g.out.n);
        json_key(&j, "reasoning_tokens");
        json_u64(&j, g.n_thinking);
        json_obj_end(&j);
        json_key(&j, "timings");
        json_obj_begin(&j);
        json_key(&j, "time_to_first_token_ms");
        json_f64(&j, (g.t_first - t0) * 1e3);
        json_key(&j, "total_ms");
        json_f64(&j, (t_end - t0) * 1e3);
        json_key(&j, "decode_tokens_per_s");
        json_f64(&j, g.out.n > 1 ? (double)(g.out.n - 1) / (t_end - g.t_first) : 0.0);
        json_obj_end(&j);
        json_key(&j, "memory");
        json_obj_begin(&j);
        json_key(&j, "weights_mapped_bytes");
        json_u64(&j, m->weight_bytes);
        json_key(&j, "kv_and_buffers_bytes");
        json_u64(&j, engine_backend(e)->ops->memory(engine_backend(e)));
        json_obj_end(&j);
        json_obj_end(&j);
    } else if (!rc) {
        if (g.in_reasoning_line)
            fputc('\n', stderr);
        if (g.content.len && g.content.data[g.content.len - 1] != '\n')
            fputc('\n', stdout);
        fprintf(stderr,
                "[%s: %zu tokens, %.1f tok/s after %.0f ms to the first; memory: %.2f GB of weights mapped, "
                "%.1f MB of KV cache and buffers]\n",
                finish_reason_name(g.finish), g.out.n, g.out.n > 1 ? (double)(g.out.n - 1) / (t_end - g.t_first) : 0.0,
                (g.t_first - t0) * 1e3, (double)m->weight_bytes / 1e9,
                (double)engine_backend(e)->ops->memory(engine_backend(e)) / 1e6);
    }
    engine_destroy(&e);
    tokenizer_destroy(&t);
    model_destroy(&m);
    tok_ids_free(&ids);
    tok_ids_free(&g.out);
    sbuf_free(&g.reasoning);
    sbuf_free(&g.content);
    return rc;
}

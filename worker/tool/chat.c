/* chat.c - `smolmq chat`: a multi-turn chat in the terminal.
 *
 *   smolmq chat --model M [--threads N] [--ctx-size N] [--max-tokens N] [--temperature T] [--seed S] [--exact]
 *       [--backend cpu|cuda|auto] [--gpu N]
 *
 * Each turn renders the whole conversation through the chat template; the
 * engine's prefix cache holds the KV of the turns before, so only the new
 * tokens are prefilled. Reasoning streams dimmed, the answer plainly.
 * Commands: /reset, /think, /no_think, /quit. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat_template.h"
#include "engine.h"
#include "model.h"
#include "tokenizer.h"
#include "tool.h"

static const char *usage_line =
    "chat --model M [--threads N] [--ctx-size N] [--max-tokens N] [--temperature T] [--seed S] [--exact] "
    "[--backend cpu|cuda|auto] [--gpu N]";

#define MAX_TURNS 256

typedef struct turn_state {
    int tty, in_reasoning;
    sbuf reasoning, content;
    finish_reason finish;
    uint32_t n_prompt, n_reused, n_generated;
    char error[256];
} turn_state;

static void on_event(void *ctx, const engine_event *ev)
{
    turn_state *s = ctx;
    if (ev->n_reasoning) {
        if (!s->in_reasoning && s->tty)
            fputs("\033[2m", stdout);
        s->in_reasoning = 1;
        fwrite(ev->reasoning, 1, ev->n_reasoning, stdout);
        sbuf_append(&s->reasoning, ev->reasoning, ev->n_reasoning);
    }
    if (ev->n_content) {
        if (s->in_reasoning && s->tty)
            fputs("\033[0m", stdout);
        s->in_reasoning = 0;
        fwrite(ev->content, 1, ev->n_content, stdout);
        sbuf_append(&s->content, ev->content, ev->n_content);
    }
    fflush(stdout);
    s->n_prompt = ev->n_prompt;
    s->n_reused = ev->n_reused;
    s->n_generated = ev->n_generated;
    if (ev->finish) {
        s->finish = ev->finish;
        if (ev->error)
            snprintf(s->error, sizeof s->error, "%s", ev->error);
    }
}

int tool_chat(int argc, char **argv)
{
    const char *path = NULL, *backend_name = NULL;
    int threads = 0, exact = 0, gpu = 0;
    uint32_t ctx = 8192, max_tokens = 1024;
    sampling_params sp = sampling_defaults();
    sp.seed = (uint64_t)time(NULL);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--exact")) {
            exact = 1;
            continue;
        }
        if (i + 1 >= argc)
            return tool_usage(usage_line, "unknown argument %s", argv[i]);
        const char *a = argv[i], *v = argv[++i];
        double num;
        if (!strcmp(a, "--model")) {
            path = v;
            continue;
        }
        if (!strcmp(a, "--backend")) {
            backend_name = v;
            continue;
        }
        if (!strcmp(a, "--threads") && !tool_parse_num(v, 1, 1024, &num))
            threads = (int)num;
        else if (!strcmp(a, "--max-tokens") && !tool_parse_num(v, 1, 1e9, &num))
            max_tokens = (uint32_t)num;
        else if (!strcmp(a, "--ctx-size") && !tool_parse_num(v, 16, 1 << 24, &num))
            ctx = (uint32_t)num;
        else if (!strcmp(a, "--temperature") && !tool_parse_num(v, 0, 100, &num))
            sp.temperature = (float)num;
        else if (!strcmp(a, "--seed") && !tool_parse_num(v, 0, 1.8e19, &num))
            sp.seed = (uint64_t)num;
        else if (!strcmp(a, "--gpu") && !tool_parse_num(v, 0, 1023, &num) && num == (double)(int)num)
            gpu = (int)num;
        else if (!strcmp(a, "--threads") || !strcmp(a, "--max-tokens") || !strcmp(a, "--ctx-size") ||
                 !strcmp(a, "--temperature") || !strcmp(a, "--seed") || !strcmp(a, "--gpu"))
            return tool_usage(usage_line, "%s: \"%s\" is not a number in its range", a, v);
        else
            return tool_usage(usage_line, "unknown argument %s", a);
    }
    if (!path)
        return tool_usage(usage_line, "no --model given");
    smq_err err;
    if (sampling_validate(&sp, &err))
        return tool_usage(usage_line, "%s", err.msg);
    model *m = model_load(path, NULL, &err);
    tokenizer *t = m ? tokenizer_load(m->file, &err) : NULL;
    engine *e = NULL;
    const backend_ops *ops = NULL;
    if (t) {
        engine_config cfg = { 0 };
        cfg.n_ctx = ctx < model_context(m) ? ctx : model_context(m);
        cfg.n_threads = threads;
        cfg.exact = exact;
        cfg.gpu = gpu;
        cfg.prefix_entries = 2;
        /* the engine's default pool: one full context in pages of 16 */
        ops = tool_pick_backend("chat", backend_name, gpu, m, (cfg.n_ctx + 15) / 16, 16);
        e = ops ? engine_new(m, t, ops, &cfg, &err) : NULL;
    }
    if (!e) {
        int reported = t && !ops; /* tool_pick_backend said why */
        tokenizer_destroy(&t);
        model_destroy(&m);
        return reported ? 1 : tool_fail("chat", "%s", err.msg);
    }
    chat_template_kind kind = (chat_template_kind)tool_template_kind("chat", m->file);

    int tty = isatty(STDOUT_FILENO), think = 1, rc = 0;
    chat_message msgs[MAX_TURNS];
    char *owned[MAX_TURNS];
    size_t n = 0;
    const backend *b = engine_backend(e);
    printf("smolmq chat: %s, context %" PRIu32 ", backend %s; memory: %.2f GB of weights %s, %.1f MB of KV cache "
           "and buffers\n",
           path, engine_n_ctx(e), b->ops->name, (double)m->weight_bytes / 1e9,
           strcmp(b->ops->name, "cpu") ? "on the GPU" : "mapped", (double)b->ops->memory(b) / 1e6);
    printf("thinking on. /think, /no_think, /reset, /quit\n");
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        printf("> ");
        fflush(stdout);
        ssize_t len = getline(&line, &cap, stdin);
        if (len < 0)
            break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        if (!strcmp(line, "/quit"))
            break;
        if (!strcmp(line, "/think") || !strcmp(line, "/no_think")) {
            think = line[1] == 't';
            printf("[thinking %s]\n", think ? "on" : "off");
            continue;
        }
        if (!strcmp(line, "/reset") || n + 2 > MAX_TURNS) {
            for (size_t i = 0; i < n; i++)
                free(owned[i]);
            n = 0;
            printf("[new conversation]\n");
            if (!strcmp(line, "/reset"))
                continue;
        }
        owned[n] = strdup(line);
        msgs[n] = (chat_message){ "user", owned[n], (size_t)len };
        n++;
        chat_options opt = { 0 };
        opt.add_generation_prompt = 1;
        opt.enable_thinking = think;
        tok_ids ids = { 0 };
        if (chat_encode(kind, msgs, n, &opt, t, &ids, &err)) {
            fprintf(stderr, "smolmq chat: %s\n", err.msg);
            tok_ids_free(&ids);
            free(owned[--n]);
            continue;
        }
        seq_request r = { 0 };
        r.prompt = ids.ids;
        r.n_prompt = (uint32_t)ids.n;
        r.sampling = sp;
        r.sampling.seed = sp.seed + n;
        r.max_tokens = max_tokens;
        turn_state st = { 0 };
        st.tty = tty;
        double t0 = tool_now();
        if (!engine_submit(e, &r, &err)) {
            fprintf(stderr, "smolmq chat: %s (try /reset)\n", err.msg);
            free(owned[--n]);
            tok_ids_free(&ids);
            continue;
        }
        int left;
        while ((left = engine_step(e, on_event, &st, &err)) > 0)
            ;
        if (tty && st.in_reasoning)
            fputs("\033[0m", stdout);
        double secs = tool_now() - t0;
        printf("\n[%s; %" PRIu32 " prompt tokens, %" PRIu32 " reused; %" PRIu32 " generated in %.1f s]\n",
               finish_reason_name(st.finish), st.n_prompt, st.n_reused, st.n_generated, secs);
        if (left < 0 || st.finish == FINISH_ERROR) {
            fprintf(stderr, "smolmq chat: %s\n", left < 0 ? err.msg : st.error);
            free(owned[--n]);
        } else {
            /* The assistant turn as the model wrote it, thinking included,
             * so that the next rendering starts with the tokens in the cache. */
            sbuf a = { 0 };
            if (st.reasoning.len) {
                sbuf_puts(&a, "<think>");
                sbuf_append(&a, st.reasoning.data, st.reasoning.len);
                sbuf_puts(&a, "</think>");
            }
            sbuf_append(&a, st.content.data ? st.content.data : "", st.content.len);
            size_t alen;
            owned[n] = sbuf_take(&a, &alen);
            if (!owned[n])
                owned[n] = strdup("");
            msgs[n] = (chat_message){ "assistant", owned[n], alen };
            n++;
        }
        sbuf_free(&st.reasoning);
        sbuf_free(&st.content);
        tok_ids_free(&ids);
    }
    free(line);
    for (size_t i = 0; i < n; i++)
        free(owned[i]);
    engine_destroy(&e);
    tokenizer_destroy(&t);
    model_destroy(&m);
    return rc;
}

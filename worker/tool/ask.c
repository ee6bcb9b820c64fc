/* ask.c - `smolmq ask`: one question to a smolmq broker, the answer
 * streamed back (the C client library, proto/client.h).
 *
 *   smolmq ask [--broker ENDPOINT] [--broker-key Z85 [--key-file FILE]] [--model NAME]
 *       [--no-think] [--max-tokens N] [--temperature T] [--seed S] [--system TEXT]
 *       [--show-reasoning|--hide-reasoning] [--json] "question"
 *
 * The answer goes to stdout as it comes; the reasoning (the <think> part)
 * to stderr, dim on a terminal; then a line on stderr with the finish
 * reason, the tokens and tokens/s. --json prints one object at the end
 * instead. An ERROR from the broker is printed and exits 1. Ctrl-C sends
 * CANCEL and waits (5 s at most) for the request's terminal frame, then
 * exits 130; a second Ctrl-C exits at once. The broker is --broker, else
 * $SMQ_BROKER, else tcp://127.0.0.1:5555. With CURVE on at the broker
 * (PROTOCOL.md section 13), --broker-key is its public key and --key-file
 * this client's certificate (smolmq-broker --keygen; without it a fresh
 * pair, which a --client-keys allow-list refuses).
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "curve_cert.h"
#include "json_out.h"
#include "sbuf.h"
#include "tool.h"

static const char *ask_usage =
    "ask [--broker ENDPOINT] [--broker-key Z85 [--key-file FILE]] [--model NAME] [--no-think] [--max-tokens N] "
    "[--temperature T] [--seed S] [--system TEXT] [--show-reasoning|--hide-reasoning] [--json] \"question\"";

#define CANCEL_WAIT_S 5.0

static volatile sig_atomic_t interrupts;

static void on_sigint(int sig)
{
    (void)sig;
    interrupts++;
}

/* What the answer has been so far. */
typedef struct answer {
    int json, show_reasoning, dim;
    sbuf reasoning, content;
    int in_reasoning_line; /* stderr holds reasoning without its final newline */
} answer;

static void on_token(answer *a, const smq_token *t)
{
    sbuf_append(&a->reasoning, t->reasoning.p, t->reasoning.n);
    sbuf_append(&a->content, t->content.p, t->content.n);
    if (a->json)
        return;
    if (t->reasoning.n && a->show_reasoning) {
        fprintf(stderr, "%s%.*s%s", a->dim ? "\033[2m" : "", (int)t->reasoning.n, t->reasoning.p,
                a->dim ? "\033[0m" : "");
        a->in_reasoning_line = t->reasoning.p[t->reasoning.n - 1] != '\n';
    }
    if (t->content.n) {
        if (a->in_reasoning_line) { /* the answer starts on a line of its own */
            fputc('\n', stderr);
            a->in_reasoning_line = 0;
        }
        fwrite(t->content.p, 1, t->content.n, stdout);
        fflush(stdout);
    }
}

static void print_json(const answer *a, const char *id, const smq_done *d)
{
    json_out j;
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_key(&j, "id");
    json_str(&j, id);
    json_key(&j, "reasoning");
    json_strn(&j, a->reasoning.data ? a->reasoning.data : "", a->reasoning.len);
    json_key(&j, "content");
    json_strn(&j, a->content.data ? a->content.data : "", a->content.len);
    json_key(&j, "finish");
    json_strn(&j, d->finish.p, d->finish.n);
    json_key(&j, "usage");
    json_obj_begin(&j);
    json_key(&j, "prompt_tokens");
    json_u64(&j, d->usage.prompt_tokens);
    json_key(&j, "completion_tokens");
    json_u64(&j, d->usage.completion_tokens);
    json_key(&j, "cached_tokens");
    json_u64(&j, d->usage.cached_tokens);
    json_key(&j, "reasoning_tokens");
    json_u64(&j, d->usage.reasoning_tokens);
    json_obj_end(&j);
    json_key(&j, "timings");
    json_obj_begin(&j);
    json_key(&j, "queue_ms");
    json_f64(&j, d->timings.queue_ms);
    json_key(&j, "ttft_ms");
    json_f64(&j, d->timings.ttft_ms);
    json_key(&j, "total_ms");
    json_f64(&j, d->timings.total_ms);
    json_key(&j, "decode_tps");
    json_f64(&j, d->timings.decode_tps);
    json_obj_end(&j);
    json_obj_end(&j);
}

static void print_done(answer *a, const smq_done *d)
{
    if (a->in_reasoning_line)
        fputc('\n', stderr);
    if (a->content.len && a->content.data[a->content.len - 1] != '\n')
        fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr, "[%.*s: %u tokens, %.1f tok/s, %.0f ms to the first token, %.0f ms in all]\n", (int)d->finish.n,
            d->finish.p, d->usage.completion_tokens, d->timings.decode_tps, d->timings.ttft_ms, d->timings.total_ms);
}

/* Streams the request's frames until its terminal one; the exit status. */
static int stream(smq_client *c, const char *id, answer *a)
{
    smq_err err;
    double cancel_by = 0;
    for (;;) {
        smq_client_event ev;
        int rc = smq_client_next(c, &ev, 100, &err);
        if (rc < 0)
            return tool_fail("ask", "%s", err.msg);
        if (interrupts > 1)
            return 130;
        if (interrupts && cancel_by == 0) {
            if (smq_client_cancel(c, id, &err)) {
                tool_fail("ask", "%s", err.msg);
                return 130;
            }
            fprintf(stderr, "%s[cancelling]\n", a->in_reasoning_line ? "\n" : "");
            a->in_reasoning_line = 0;
            cancel_by = tool_now() + CANCEL_WAIT_S;
        }
        if (cancel_by && tool_now() > cancel_by) {
            tool_fail("ask", "no answer to CANCEL in %.0f s", CANCEL_WAIT_S);
            return 130;
        }
        if (rc == 0)
            continue;
        if (ev.cmd == SMQ_CMD_TOKEN) {
            on_token(a, &ev.token);
        } else if (ev.cmd == SMQ_CMD_DONE) {
            if (a->json)
                print_json(a, id, &ev.done);
            else
                print_done(a, &ev.done);
            return cancel_by ? 130 : 0;
        } else if (ev.cmd == SMQ_CMD_ERROR) {
            /* This tool has one request open: an ERROR is about it, also
             * one that names none (the broker could not read our CHAT). */
            if (a->in_reasoning_line)
                fputc('\n', stderr);
            fflush(stdout);
            tool_fail("ask", "%.*s: %.*s", (int)ev.error.code.n, ev.error.code.p, (int)ev.error.message.n,
                      ev.error.message.p);
            return cancel_by ? 130 : 1;
        }
    }
}

/* A whole number in [lo, hi], all 64 bits of it. */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int tool_ask(int argc, char **argv)
{
    const char *broker = getenv("SMQ_BROKER"), *model = NULL, *system = NULL, *question = NULL;
    const char *broker_key = NULL, *key_file = NULL;
    uint64_t max_tokens = 0, seed = 0;
    double temperature = -1;
    int has_seed = 0, think = 1;
    answer a = { 0 };
    a.show_reasoning = 1;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json") || !strcmp(f, "--no-think") || !strcmp(f, "--show-reasoning") ||
            !strcmp(f, "--hide-reasoning")) {
            if (f[2] == 'j')
                a.json = 1;
            else if (f[2] == 'n')
                think = 0;
            else
                a.show_reasoning = f[2] == 's';
            continue;
        }
        if (f[0] != '-' || !f[1]) {
            if (question)
                return tool_usage(ask_usage, "one question, in quotes (got \"%s\" and \"%s\")", question, f);
            question = f;
            continue;
        }
        if (i + 1 >= argc)
            return tool_usage(ask_usage, "%s needs a value (or is unknown)", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--max-tokens")) {
            if (parse_u64(v, 1, UINT32_MAX, &max_tokens))
                return tool_usage(ask_usage, "--max-tokens wants a whole number from 1 to %u, not \"%s\"", UINT32_MAX,
                                  v);
        } else if (!strcmp(f, "--seed")) {
            if (parse_u64(v, 0, UINT64_MAX, &seed))
                return tool_usage(ask_usage, "--seed wants a whole number from 0 to 2^64-1, not \"%s\"", v);
            has_seed = 1;
        } else if (!strcmp(f, "--temperature")) {
            if (tool_parse_num(v, 0, 2, &temperature))
                return tool_usage(ask_usage, "--temperature wants a number from 0 to 2, not \"%s\"", v);
        } else if (!strcmp(f, "--broker")) {
            broker = v;
        } else if (!strcmp(f, "--broker-key")) {
            broker_key = v;
        } else if (!strcmp(f, "--key-file")) {
            key_file = v;
        } else if (!strcmp(f, "--model")) {
            model = v;
        } else if (!strcmp(f, "--system")) {
            system = v;
        } else {
            return tool_usage(ask_usage, "unknown argument %s", f);
        }
    }
    if (!question)
        return tool_usage(ask_usage, "no question given");
    if (!broker || !*broker)
        broker = "tcp://127.0.0.1:5555";
    if (model && (!*model || strlen(model) > SMQ_NAME_MAX))
        return tool_usage(ask_usage, "--model wants a name of 1-%d bytes", SMQ_NAME_MAX);
    if (key_file && !broker_key)
        return tool_usage(ask_usage, "--key-file needs --broker-key (the broker's public key)");
    if (broker_key && !curve_key_valid(broker_key))
        return tool_usage(ask_usage, "--broker-key: not a CURVE public key (40 characters of Z85)");
    smq_client_opts opts = { 0 };
    char pub[CURVE_Z85_LEN + 1], sec[CURVE_Z85_LEN + 1];
    smq_err err;
    opts.server_key = broker_key;
    if (key_file) {
        if (curve_cert_load(key_file, pub, sec, &err))
            return tool_fail("ask", "%s", err.msg);
        opts.public_key = pub, opts.secret_key = sec;
    }

    char id[64];
    snprintf(id, sizeof id, "ask-%ld-%ld", (long)getpid(), (long)time(NULL));
    smq_chat_msg msgs[2] = { { { "system", 6 }, { system, system ? (uint32_t)strlen(system) : 0 } },
                             { { "user", 4 }, { question, (uint32_t)strlen(question) } } };
    smq_chat req;
    smq_chat_init(&req);
    req.id = (smq_str){ id, (uint32_t)strlen(id) };
    req.model = (smq_str){ model, model ? (uint32_t)strlen(model) : 0 };
    req.messages = system ? msgs : msgs + 1;
    req.n_messages = system ? 2 : 1;
    req.thinking = think;
    req.max_tokens = (uint32_t)max_tokens;
    if (temperature >= 0)
        req.temperature = (float)temperature;
    req.has_seed = has_seed;
    req.seed = seed;
    a.dim = isatty(2);

    smq_client *c = smq_client_new(broker, &opts, &err);
    if (!c)
        return tool_fail("ask", "%s", err.msg);
    /* No SA_RESTART: Ctrl-C must cut the client's wait short. */
    struct sigaction sa = { 0 }, old;
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    int rc = smq_client_chat(c, &req, &err) ? tool_fail("ask", "%s", err.msg) : stream(c, id, &a);
    sigaction(SIGINT, &old, NULL);
    smq_client_destroy(&c);
    sbuf_free(&a.reasoning);
    sbuf_free(&a.content);
    return rc;
}

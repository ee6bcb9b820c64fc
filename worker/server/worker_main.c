/* worker_main.c - smolmq-worker: serves one model to a smolmq broker.
 *
 *   smolmq-worker --model PATH [--broker ENDPOINT] [--model-name NAME] [--name NAME]
 *       [--capacity N] [--backend cpu|cuda|auto] [--gpu N] [--threads N] [--ctx-size N] [--rope-scaling S]
 *       [--kv-tokens N] [--heartbeat-ms N] [--liveness N] [--drain-ms N] [--step-ms N]
 *       [--broker-key Z85 [--key-file FILE]] [--alive-file PATH]
 *
 * Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 on an error it
 * reports (a bad model file, a key, a socket), 2 on a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "proto.h"
#include "../tool/tool.h"
#include "worker.h"

static const char *usage_text =
    "usage: smolmq-worker --model PATH [options]\n"
    "  --model PATH          the GGUF model file (required)\n"
    "  --broker ENDPOINT     the broker's worker endpoint (default $SMQ_BROKER_WORKERS or tcp://127.0.0.1:5556)\n"
    "  --model-name NAME     the name clients ask for (default: the file's name without .gguf)\n"
    "  --name NAME           this worker's name, for people (default host:pid)\n"
    "  --capacity N          requests at once (default 16 on a GPU, 4 on the CPU)\n"
    "  --backend B           cpu, cuda or auto (default auto: the GPU when the model fits it)\n"
    "  --gpu N               the CUDA device (default 0)\n"
    "  --threads N           CPU threads (default one per core)\n"
    "  --ctx-size N          positions per request (default: the model's on a GPU, 16384 on the CPU)\n"
    "  --rope-scaling S      none, linear or yarn (default: the file's); yarn stretches the context to\n"
    "                        --ctx-size, or 2x the trained one without it (SmolLM3: 64K -> 128K)\n"
    "  --kv-tokens N         the KV pool shared by all requests (default max(context, capacity x 4096))\n"
    "  --heartbeat-ms N      heartbeat interval (default 1000)\n"
    "  --liveness N          heartbeats missed before the broker counts as lost (default 3)\n"
    "  --drain-ms N          on SIGTERM: let running requests finish this long, then end them with\n"
    "                        ERROR shutting_down (default 10000; 0: no bound)\n"
    "  --step-ms N           what a step that reads a prompt should take, a third of it beside streams\n"
    "                        that decode: longer reads prompts faster, shorter keeps streams and\n"
    "                        cancels quicker (default 1500 on the CPU; on a GPU 30% of (liveness - 1)\n"
    "                        heartbeats, which also bounds it)\n"
    "  --broker-key Z85      CURVE: the broker's public key\n"
    "  --key-file FILE       CURVE: this worker's certificate (default: a fresh key pair)\n"
    "  --alive-file PATH     made once the model is loaded, its time set every second while the loop\n"
    "                        that runs the model turns, removed at exit: for a liveness probe\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smolmq worker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nusage: smolmq-worker --model PATH [options] (--help lists them)\n", stderr);
    va_end(ap);
    return 2;
}

/* ---- signals: one byte per signal down a pipe that the loop polls ---- */

static int signal_pipe[2] = { -1, -1 };

static void on_stop_signal(int sig)
{
    int saved = errno;
    char c = (char)sig;
    if (write(signal_pipe[1], &c, 1) < 0) {
        /* the pipe is full: the loop has plenty of signals to read already */
    }
    errno = saved;
}

static int open_signal_pipe(void)
{
    if (pipe(signal_pipe))
        return -1;
    for (int i = 0; i < 2; i++)
        if (fcntl(signal_pipe[i], F_SETFL, O_NONBLOCK) || fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC))
            return -1;
    return 0;
}

static int catch_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL))
        return -1;
    return 0;
}

/* ---- the start-up progress bar (on a terminal only) ---- */

static void on_progress(void *ctx, const char *stage, uint64_t done, uint64_t total)
{
    (void)ctx;
    char bar[31];
    if (!stage) {
        fputs("\r\033[K", stderr);
    } else if (total) {
        int fill = (int)(30 * done / total);
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(30 - fill));
        bar[30] = 0;
        fprintf(stderr, "\r\033[Ksmolmq worker: %s [%s] %3d%% %.2f of %.2f GB", stage, bar, (int)(100 * done / total),
                (double)done / 1e9, (double)total / 1e9);
    } else {
        fprintf(stderr, "\r\033[Ksmolmq worker: %s...", stage);
    }
    fflush(stderr);
}

/* ---- flags ---- */

enum { N_CAPACITY, N_GPU, N_THREADS, N_CTX, N_KV, N_HEARTBEAT, N_LIVENESS, N_DRAIN, N_STEP, N_COUNT };
static const struct {
    const char *flag;
    double lo, hi;
} num_flags[N_COUNT] = {
    [N_CAPACITY] = { "--capacity", 1, SMQ_CAPACITY_MAX },
    [N_GPU] = { "--gpu", 0, 1023 },
    [N_THREADS] = { "--threads", 1, 1024 },
    [N_CTX] = { "--ctx-size", 16, 1 << 24 },
    [N_KV] = { "--kv-tokens", 32, 1 << 28 },
    [N_HEARTBEAT] = { "--heartbeat-ms", 10, 3600000 },
    [N_LIVENESS] = { "--liveness", 1, 1000 },
    [N_DRAIN] = { "--drain-ms", 0, 86400000 },
    [N_STEP] = { "--step-ms", 1, 600000 },
};

int main(int argc, char **argv)
{
    worker_config cfg = { 0 };
    cfg.signal_fd = -1;
    const char *env = getenv("SMQ_BROKER_WORKERS");
    cfg.broker = env && *env ? env : "tcp://127.0.0.1:5556";
    double num[N_COUNT] = { 0 };
    num[N_DRAIN] = 10000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (i + 1 >= argc)
            return usage("%s needs a value (or is unknown)", a);
        const char *v = argv[++i];
        int f = 0;
        while (f < N_COUNT && strcmp(a, num_flags[f].flag))
            f++;
        if (f < N_COUNT) {
            if (tool_parse_num(v, num_flags[f].lo, num_flags[f].hi, &num[f]) || num[f] != (double)(long)num[f])
                return usage("%s wants a whole number from %.0f to %.0f, not \"%s\"", a, num_flags[f].lo,
                             num_flags[f].hi, v);
        } else if (!strcmp(a, "--model")) {
            cfg.model_path = v;
        } else if (!strcmp(a, "--broker")) {
            cfg.broker = v;
        } else if (!strcmp(a, "--model-name")) {
            cfg.model_name = v;
        } else if (!strcmp(a, "--name")) {
            cfg.name = v;
        } else if (!strcmp(a, "--backend")) {
            cfg.backend = v;
        } else if (!strcmp(a, "--rope-scaling")) {
            cfg.rope_scaling = v;
        } else if (!strcmp(a, "--broker-key")) {
            cfg.broker_key = v;
        } else if (!strcmp(a, "--key-file")) {
            cfg.key_file = v;
        } else if (!strcmp(a, "--alive-file")) {
            cfg.alive_file = v;
        } else {
            return usage("unknown argument %s", a);
        }
    }
    if (!cfg.model_path)
        return usage("--model is required");
    if (cfg.backend && strcmp(cfg.backend, "cpu") && strcmp(cfg.backend, "cuda") && strcmp(cfg.backend, "auto"))
        return usage("--backend wants cpu, cuda or auto, not \"%s\"", cfg.backend);
    if (cfg.key_file && !cfg.broker_key)
        return usage("--key-file needs --broker-key (the broker's public key)");
    cfg.capacity = (uint32_t)num[N_CAPACITY];
    cfg.gpu = (int)num[N_GPU];
    cfg.threads = (int)num[N_THREADS];
    cfg.ctx_size = (uint32_t)num[N_CTX];
    cfg.kv_tokens = (uint32_t)num[N_KV];
    cfg.heartbeat_ms = (uint32_t)num[N_HEARTBEAT];
    cfg.liveness = (uint32_t)num[N_LIVENESS];
    cfg.drain_ms = (uint32_t)num[N_DRAIN];
    cfg.step_ms = (uint32_t)num[N_STEP];
    if (cfg.ctx_size && cfg.kv_tokens && cfg.kv_tokens < cfg.ctx_size)
        return usage("--kv-tokens %u is less than --ctx-size %u: the pool must hold one whole context", cfg.kv_tokens,
                     cfg.ctx_size);
    int tty = isatty(STDERR_FILENO);
    if (tty)
        cfg.on_progress = on_progress;

    if (open_signal_pipe())
        return tool_fail("worker", "cannot make a pipe: %s", strerror(errno));
    cfg.signal_fd = signal_pipe[0];

    smq_err err;
    worker *w = worker_new(&cfg, &err);
    if (tty)
        fputs("\r\033[K", stderr);
    if (!w)
        return tool_fail("worker", "%s", err.msg);
    /* Caught only now: a signal while loading stops the process at once. */
    if (catch_stop_signals()) {
        worker_destroy(&w);
        return tool_fail("worker", "cannot catch signals: %s", strerror(errno));
    }
    char line[1024];
    worker_describe(w, line, sizeof line);
    fprintf(stderr, "smolmq worker: %s\n", line);
    int rc = worker_run(w, &err);
    if (rc)
        tool_fail("worker", "%s", err.msg);
    else
        fprintf(stderr, "smolmq worker: stopped\n");
    worker_destroy(&w);
    return rc;
}

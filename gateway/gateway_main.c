/* gateway_main.c - smolmq-gateway: OpenAI's chat API, a WebSocket chat and
 * the web chat, in front of a smolmq broker.
 *
 *   smolmq-gateway [--listen HOST:PORT]... [--broker EP] [--keys FILE] [--cors-origin ORIGIN]... [limits]
 *
 * Exit status: 0 after a drain (SIGTERM/SIGINT), 1 on an error it reports
 * (a port in use, a keys file), 2 on a usage error.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "curve_cert.h"
#include "gateway.h"
#include "web_assets.h"

static const char *usage_text =
    "usage: smolmq-gateway [options]\n"
    "  --listen HOST:PORT      where clients connect (default 127.0.0.1:8080; repeatable; *:PORT for all)\n"
    "  --broker EP             the broker's client endpoint (default $SMQ_BROKER or tcp://127.0.0.1:5555)\n"
    "  --broker-key Z85        CURVE: the broker's public key\n"
    "  --key-file FILE         CURVE: this gateway's certificate (default: a fresh key pair)\n"
    "  --keys FILE             API keys, one per line (# comments); without it the API is open\n"
    "  --cors-origin ORIGIN    an origin browsers may call the API from (repeatable; * for any)\n"
    "  --max-body-bytes N      largest request body (default 4194304)\n"
    "  --max-header-bytes N    largest request line and headers (default 16384)\n"
    "  --max-messages N        most messages in a chat (default 256, at most 1024)\n"
    "  --max-tokens N          most tokens a request may ask for, and what it gets by default (default 32768)\n"
    "  --request-timeout-ms N  a request's headers and body must arrive within this (default 10000)\n"
    "  --idle-timeout-ms N     an idle keep-alive connection closes after this (default 60000)\n"
    "  --max-connections N     client connections at once (default 10000)\n"
    "  --max-ws-chats N        chats at once on one WebSocket (default 16)\n"
    "  --heartbeat-ms N        heartbeat interval with the broker (default 1000)\n"
    "  --liveness N            broker heartbeats missed before it counts as lost (default 3)\n"
    "  --stats-cache-ms N      how long the broker's STATS are reused (default 500)\n"
    "  --drain-ms N            on SIGTERM, how long chats in progress may finish (default 10000)\n"
    "  --verbose               log every request\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smolmq-gateway: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nusage: smolmq-gateway [options] (--help lists them)\n", stderr);
    va_end(ap);
    return 2;
}

enum {
    N_BODY,
    N_HEADER,
    N_MESSAGES,
    N_TOKENS,
    N_REQ_TIMEOUT,
    N_IDLE,
    N_CONNS,
    N_WS_CHATS,
    N_HB,
    N_LIVENESS,
    N_STATS,
    N_DRAIN,
    N_COUNT
};
static const struct {
    const char *flag;
    long long lo, hi, def;
} num_flags[N_COUNT] = {
    [N_BODY] = { "--max-body-bytes", 1024, 64 << 20, 4 << 20 },
    [N_HEADER] = { "--max-header-bytes", 1024, 1 << 20, 16 << 10 },
    [N_MESSAGES] = { "--max-messages", 1, SMQ_MESSAGES_MAX, 256 },
    [N_TOKENS] = { "--max-tokens", 1, UINT32_MAX, 32768 },
    [N_REQ_TIMEOUT] = { "--request-timeout-ms", 10, 3600000, 10000 },
    [N_IDLE] = { "--idle-timeout-ms", 10, 86400000, 60000 },
    [N_CONNS] = { "--max-connections", 1, 10000000, 10000 },
    [N_WS_CHATS] = { "--max-ws-chats", 1, 4096, 16 },
    [N_HB] = { "--heartbeat-ms", 10, 600000, 1000 },
    [N_LIVENESS] = { "--liveness", 1, 1000, 3 },
    [N_STATS] = { "--stats-cache-ms", 0, 600000, 500 },
    [N_DRAIN] = { "--drain-ms", 0, 3600000, 10000 },
};

static int parse_num(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Many idle keep-alive connections need many descriptors: the soft limit
 * goes up to the hard one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    gw_config cfg = { 0 };
    long long num[N_COUNT];
    for (int f = 0; f < N_COUNT; f++)
        num[f] = num_flags[f].def;
    const char *env = getenv("SMQ_BROKER"), *key_file = NULL;
    cfg.broker = env && *env ? env : "tcp://127.0.0.1:5555";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(a, "--verbose")) {
            cfg.verbose = 1;
            continue;
        }
        if (i + 1 >= argc)
            return usage("%s needs a value (or is unknown)", a);
        const char *v = argv[++i];
        int f = 0;
        while (f < N_COUNT && strcmp(a, num_flags[f].flag))
            f++;
        if (f < N_COUNT) {
            if (parse_num(v, num_flags[f].lo, num_flags[f].hi, &num[f]))
                return usage("%s wants a whole number from %lld to %lld, not \"%s\"", a, num_flags[f].lo,
                             num_flags[f].hi, v);
        } else if (!strcmp(a, "--listen")) {
            if (cfg.n_listen == GW_LISTEN_MAX)
                return usage("at most %d --listen addresses", GW_LISTEN_MAX);
            cfg.listen[cfg.n_listen++] = v;
        } else if (!strcmp(a, "--cors-origin")) {
            if (cfg.n_cors == GW_CORS_MAX)
                return usage("at most %d --cors-origin values", GW_CORS_MAX);
            cfg.cors[cfg.n_cors++] = v;
        } else if (!strcmp(a, "--broker")) {
            cfg.broker = v;
        } else if (!strcmp(a, "--broker-key")) {
            cfg.broker_key = v;
        } else if (!strcmp(a, "--key-file")) {
            key_file = v;
        } else if (!strcmp(a, "--keys")) {
            cfg.keys_file = v;
        } else {
            return usage("unknown argument %s", a);
        }
    }
    if (cfg.n_listen == 0)
        cfg.listen[cfg.n_listen++] = "127.0.0.1:8080";
    if (key_file && !cfg.broker_key)
        return usage("--key-file needs --broker-key (the broker's public key)");
    if (cfg.broker_key && !curve_key_valid(cfg.broker_key))
        return usage("--broker-key: not a CURVE public key (40 characters of Z85)");
    char pub[CURVE_Z85_LEN + 1], sec[CURVE_Z85_LEN + 1];
    smq_err err;
    if (key_file) {
        if (curve_cert_load(key_file, pub, sec, &err)) {
            gw_log("--key-file %s", err.msg);
            return 1;
        }
        cfg.public_key = pub, cfg.secret_key = sec;
    }
    cfg.max_body = (size_t)num[N_BODY];
    cfg.max_header = (size_t)num[N_HEADER];
    cfg.limits.max_messages = (uint32_t)num[N_MESSAGES];
    cfg.limits.max_tokens = (uint32_t)num[N_TOKENS];
    cfg.request_timeout_ms = (int)num[N_REQ_TIMEOUT];
    cfg.idle_timeout_ms = (int)num[N_IDLE];
    cfg.max_connections = (int)num[N_CONNS];
    cfg.max_ws_chats = (int)num[N_WS_CHATS];
    cfg.heartbeat_ms = (int)num[N_HB];
    cfg.liveness = (int)num[N_LIVENESS];
    cfg.stats_cache_ms = (int)num[N_STATS];
    cfg.drain_ms = (int)num[N_DRAIN];

    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error value, not a signal */
    raise_fd_limit();
    uv_loop_t *loop = uv_default_loop();
    gateway *gw = gateway_new(loop, &cfg, &err);
    if (!gw) {
        gw_log("%s", err.msg);
        return 1;
    }
    for (int i = 0; i < cfg.n_listen; i++)
        gw_log("listening on http://%s (web chat: %zu files)", cfg.listen[i], web_assets_count);
    gw_log("broker %s%s", cfg.broker, cfg.broker_key ? " (CURVE)" : "");
    if (gw->keys)
        gw_log("API keys: %zu from %s", api_keys_count(gw->keys), cfg.keys_file);
    else
        gw_log("no --keys: the API is open to anyone who can reach %s", cfg.listen[0]);
    if (cfg.n_cors)
        gw_log("CORS: %d allowed origin%s", cfg.n_cors, cfg.n_cors > 1 ? "s" : "");
    gateway_run(gw);
    gateway_destroy(&gw);
    uv_loop_close(loop);
    gw_log("stopped");
    return 0;
}

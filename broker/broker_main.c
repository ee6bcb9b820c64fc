/* broker_main.c - `smolmq-broker`: flags and environment, then the broker. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

static const char *usage_text =
    "usage: smolmq-broker [--clients EP] [--workers EP] [--heartbeat-ms N] [--liveness N]\n"
    "                     [--queue-max N] [--queue-timeout-ms N] [--drain-ms N]\n"
    "                     [--curve-secret FILE [--client-keys FILE] [--worker-keys FILE]] [--verbose]\n"
    "       smolmq-broker --keygen PATH\n"
    "\n"
    "  --clients EP        where clients connect (default $SMQ_BROKER_CLIENTS or tcp://*:5555)\n"
    "  --workers EP        where workers connect (default $SMQ_BROKER_WORKERS or tcp://*:5556)\n"
    "  --heartbeat-ms N    heartbeat interval (1000); a peer silent for liveness x interval is gone\n"
    "  --liveness N        (3)\n"
    "  --queue-max N       requests waiting per model before new ones get `overloaded` (256)\n"
    "  --queue-timeout-ms N  how long a request may wait for a worker (30000)\n"
    "  --drain-ms N        on SIGTERM, how long running requests may finish (10000)\n"
    "  --curve-secret FILE CURVE on both sides with this certificate (from --keygen)\n"
    "  --client-keys FILE, --worker-keys FILE   allowed public keys (Z85, one per line)\n"
    "  --keygen PATH       write a key pair: PATH (secret) and PATH.pub, then exit\n";

static int usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "smolmq-broker: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage_text);
    return 2;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    broker_config cfg = { 0 };
    cfg.clients = getenv("SMQ_BROKER_CLIENTS");
    cfg.workers = getenv("SMQ_BROKER_WORKERS");
    const char *keygen = NULL;
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
        struct {
            const char *flag;
            uint32_t *dst, lo, hi;
        } nums[] = {
            { "--heartbeat-ms", &cfg.heartbeat_ms, 10, 600000 },
            { "--liveness", &cfg.liveness, 1, 1000 },
            { "--queue-max", &cfg.queue_max, 1, 1000000 },
            { "--queue-timeout-ms", &cfg.queue_timeout_ms, 1, 86400000 },
            { "--drain-ms", &cfg.drain_ms, 1, 86400000 },
        };
        int done = 0;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
            if (strcmp(a, nums[k].flag))
                continue;
            if (parse_u32(v, nums[k].lo, nums[k].hi, nums[k].dst)) {
                fprintf(stderr, "smolmq-broker: %s wants a number from %u to %u, not \"%s\"\n", a, nums[k].lo,
                        nums[k].hi, v);
                return 2;
            }
            done = 1;
        }
        if (done)
            continue;
        if (!strcmp(a, "--clients"))
            cfg.clients = v;
        else if (!strcmp(a, "--workers"))
            cfg.workers = v;
        else if (!strcmp(a, "--curve-secret"))
            cfg.curve_secret = v;
        else if (!strcmp(a, "--client-keys"))
            cfg.client_keys = v;
        else if (!strcmp(a, "--worker-keys"))
            cfg.worker_keys = v;
        else if (!strcmp(a, "--keygen"))
            keygen = v;
        else
            return usage("unknown argument %s", a);
    }
    smq_err err;
    if (keygen) {
        if (broker_keygen(keygen, &err)) {
            fprintf(stderr, "smolmq-broker: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    broker *b = broker_new(&cfg, &err);
    if (!b) {
        fprintf(stderr, "smolmq-broker: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "smolmq-broker: clients on %s, workers on %s%s\n", broker_clients_endpoint(b),
            broker_workers_endpoint(b), cfg.curve_secret ? " (CURVE)" : "");
    int rc = broker_run(b);
    broker_destroy(&b);
    return rc;
}

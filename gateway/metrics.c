/* metrics.c - counters and the Prometheus text exposition (metrics.h). */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const route_names[ROUTE_COUNT] = { "chat",  "models",  "ws",     "health",
                                                      "ready", "metrics", "static", "other" };

/* Upper bounds (seconds). Time to first token spans a queue wait on a busy
 * GPU; the gap between tokens is milliseconds. */
static const double ttft_bounds[HIST_BUCKETS] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120 };
static const double itl_bounds[HIST_BUCKETS] = { 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02,
                                                 0.03,  0.05,   0.075, 0.1,    0.25, 0.5,   1 };

void metrics_request(gw_metrics *m, gw_route route, int status)
{
    if ((unsigned)route < ROUTE_COUNT && status >= 100 && status < 600)
        m->requests[route][status]++;
}

static void observe(gw_histogram *h, const double *bounds, double s, uint64_t times)
{
    int b = 0;
    while (b < HIST_BUCKETS && s > bounds[b])
        b++;
    h->counts[b] += times;
    h->n += times;
    h->sum += s * (double)times;
}

void metrics_ttft(gw_metrics *m, double s)
{
    observe(&m->ttft, ttft_bounds, s, 1);
}

void metrics_itl(gw_metrics *m, double s, uint32_t n_tokens)
{
    /* A frame of several tokens: each token's gap is a share of the wait. */
    if (n_tokens)
        observe(&m->itl, itl_bounds, s / n_tokens, n_tokens);
}

static int put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(sbuf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    return sbuf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void head(sbuf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram(sbuf *b, const char *name, const char *help, const gw_histogram *h, const double *bounds)
{
    head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        cum += h->counts[i];
        put(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bounds[i], cum);
    }
    put(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n", name, h->n, name, h->sum, name,
        h->n);
}

static void counter(sbuf *b, const char *name, const char *type, const char *help, double v)
{
    head(b, name, type, help);
    put(b, "%s %.17g\n", name, v);
}

/* A label value as Prometheus escapes it (\\, \", \n). Names from the
 * broker are valid UTF-8 without NUL (PROTOCOL.md); at most 128 bytes. */
static const char *label(smq_str s, char out[300])
{
    size_t o = 0;
    for (uint32_t i = 0; i < s.n && o < 290; i++) {
        char c = s.p[i];
        if (c == '\\' || c == '"' || c == '\n') {
            out[o++] = '\\';
            c = c == '\n' ? 'n' : c;
        }
        out[o++] = c;
    }
    out[o] = 0;
    return out;
}

static void broker_part(sbuf *b, const smq_stats *s)
{
    char l1[300], l2[300];
    counter(b, "smolmq_broker_workers", "gauge", "Workers registered with the broker.", s->n_workers);
    head(b, "smolmq_broker_worker_capacity", "gauge", "Requests a worker takes now (0: draining or full).");
    for (uint32_t i = 0; i < s->n_workers; i++)
        put(b, "smolmq_broker_worker_capacity{worker=\"%s\",model=\"%s\"} %u\n", label(s->workers[i].name, l1),
            label(s->workers[i].model, l2), s->workers[i].capacity);
    head(b, "smolmq_broker_worker_in_flight", "gauge", "Requests a worker runs.");
    for (uint32_t i = 0; i < s->n_workers; i++)
        put(b, "smolmq_broker_worker_in_flight{worker=\"%s\",model=\"%s\"} %u\n", label(s->workers[i].name, l1),
            label(s->workers[i].model, l2), s->workers[i].in_flight);
    head(b, "smolmq_broker_queue_depth", "gauge", "Requests waiting for a worker, per model.");
    for (uint32_t i = 0; i < s->n_queues; i++)
        put(b, "smolmq_broker_queue_depth{model=\"%s\"} %u\n", label(s->queues[i].model, l1), s->queues[i].depth);
    const smq_stats_totals *t = &s->totals;
    const struct {
        const char *outcome;
        uint64_t v;
    } totals[] = { { "accepted", t->accepted },   { "completed", t->completed }, { "failed", t->failed },
                   { "cancelled", t->cancelled }, { "rejected", t->rejected },   { "redispatched", t->redispatched } };
    head(b, "smolmq_broker_requests_total", "counter", "Requests the broker saw, by outcome, since it started.");
    for (size_t i = 0; i < sizeof totals / sizeof totals[0]; i++)
        put(b, "smolmq_broker_requests_total{outcome=\"%s\"} %" PRIu64 "\n", totals[i].outcome, totals[i].v);
    counter(b, "smolmq_broker_tokens_out_total", "counter", "Tokens the broker's workers generated.",
            (double)t->tokens_out);
    counter(b, "smolmq_broker_clients", "gauge", "Broker clients with open requests.", s->clients);
    counter(b, "smolmq_broker_uptime_seconds", "gauge", "Since the broker started.", s->uptime_ms / 1e3);
}

int metrics_render(const gw_metrics *m, const smq_stats *s, uint64_t broker_lost, sbuf *out)
{
    head(out, "smolmq_gateway_requests_total", "counter", "HTTP requests by route and status code.");
    for (int r = 0; r < ROUTE_COUNT; r++)
        for (int st = 100; st < 600; st++)
            if (m->requests[r][st])
                put(out, "smolmq_gateway_requests_total{route=\"%s\",code=\"%d\"} %" PRIu64 "\n", route_names[r], st,
                    m->requests[r][st]);
    histogram(out, "smolmq_gateway_time_to_first_token_seconds", "From a chat's arrival to its first token.", &m->ttft,
              ttft_bounds);
    histogram(out, "smolmq_gateway_inter_token_seconds", "Between a chat's tokens.", &m->itl, itl_bounds);
    counter(out, "smolmq_gateway_prompt_tokens_total", "counter", "Prompt tokens of finished chats (tokens in).",
            (double)m->prompt_tokens);
    counter(out, "smolmq_gateway_cached_prompt_tokens_total", "counter",
            "Prompt tokens reused from a worker's prefix cache.", (double)m->cached_tokens);
    counter(out, "smolmq_gateway_completion_tokens_total", "counter", "Tokens generated for chats (tokens out).",
            (double)m->completion_tokens);
    counter(out, "smolmq_gateway_chats_total", "counter", "Chats sent to the broker (HTTP and WebSocket).",
            (double)m->chats_started);
    counter(out, "smolmq_gateway_chats_cancelled_total", "counter",
            "Chats cancelled because the client went away or asked.", (double)m->chats_cancelled);
    counter(out, "smolmq_gateway_chat_errors_total", "counter", "Chats that ended with an error.",
            (double)m->broker_errors);
    counter(out, "smolmq_gateway_broker_lost_total", "counter", "Chats ended because the broker went silent.",
            (double)broker_lost);
    counter(out, "smolmq_gateway_active_streams", "gauge", "Chats in progress.", (double)m->active_streams);
    counter(out, "smolmq_gateway_connections", "gauge", "Open client connections.", (double)m->connections);
    counter(out, "smolmq_gateway_websockets", "gauge", "Open WebSocket sessions.", (double)m->ws_sessions);
    counter(out, "smolmq_broker_up", "gauge", "1 when the broker answered STATS.", s ? 1 : 0);
    if (s)
        broker_part(out, s);
    return out->oom ? -1 : 0;
}

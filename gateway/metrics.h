/* metrics.h - the gateway's counters, and their Prometheus text with the
 * broker's STATS beside them (GET /metrics, prefix smolmq_).
 *
 * Counters are plain integers: one loop owns them all, so no atomics.
 */
#ifndef SMQ_GATEWAY_METRICS_H
#define SMQ_GATEWAY_METRICS_H

#include <stdint.h>

#include "proto.h"
#include "sbuf.h"

/* What a request was for: a label of smolmq_gateway_requests_total. */
typedef enum gw_route {
    ROUTE_CHAT,
    ROUTE_MODELS,
    ROUTE_WS,
    ROUTE_HEALTH,
    ROUTE_READY,
    ROUTE_METRICS,
    ROUTE_STATIC,
    ROUTE_OTHER,
    ROUTE_COUNT
} gw_route;

#define HIST_BUCKETS 14

typedef struct gw_histogram {
    uint64_t counts[HIST_BUCKETS + 1]; /* per bucket, and +Inf */
    uint64_t n;
    double sum;
} gw_histogram;

typedef struct gw_metrics {
    uint64_t requests[ROUTE_COUNT][600]; /* by route and HTTP status (100-599) */
    gw_histogram ttft, itl;              /* seconds */
    uint64_t prompt_tokens, completion_tokens, cached_tokens;
    uint64_t chats_started, chats_cancelled, broker_errors;
    int64_t active_streams, connections, ws_sessions;
} gw_metrics;

void metrics_request(gw_metrics *m, gw_route route, int status);
/* Time to first token, and between tokens: seconds. */
void metrics_ttft(gw_metrics *m, double s);
void metrics_itl(gw_metrics *m, double s, uint32_t n_tokens);

/* The Prometheus text: the gateway's counters; the broker's workers,
 * queues and totals when s is not NULL (else smolmq_broker_up 0);
 * broker_lost counts the requests the gateway ended for a silent broker. */
int metrics_render(const gw_metrics *m, const smq_stats *s, uint64_t broker_lost, sbuf *out);

#endif

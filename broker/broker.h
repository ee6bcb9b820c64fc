/* broker.h - the smolmq broker: routes chat jobs from clients to workers
 * (proto/PROTOCOL.md is the protocol it speaks).
 *
 * One czmq loop owns two ROUTERs: clients on one side, workers on the
 * other. Workers register a model and a capacity; each request goes to the
 * least loaded worker of its model (or to its affinity key's worker) and
 * never past that worker's credits, else waits in the model's bounded
 * queue. The broker forwards the workers' TOKEN/DONE/ERROR bodies to the
 * client unchanged and keeps, per request, the count of frames it sent, so
 * that whatever happens (worker lost, client gone, queue timeout, drain)
 * each request it accepted ends with exactly one terminal frame.
 *
 * Not thread-safe: broker_run() is the only thread that touches it.
 */
#ifndef SMQ_BROKER_H
#define SMQ_BROKER_H

#include <stdint.h>

#include "err.h"

typedef struct broker_config {
    const char *clients;       /* endpoint the client ROUTER binds (default tcp://0.0.0.0:5555) */
    const char *workers;       /* endpoint the worker ROUTER binds (default tcp://0.0.0.0:5556) */
    uint32_t heartbeat_ms;     /* 0: SMQ_HEARTBEAT_MS */
    uint32_t liveness;         /* 0: SMQ_LIVENESS */
    uint32_t queue_max;        /* per model; 0: 256 */
    uint32_t queue_timeout_ms; /* 0: 30000 */
    uint32_t drain_ms;         /* 0: 10000 */
    /* CURVE (all NULL: plain TCP): the broker's certificate (czmq format,
     * with its secret key), and allow-lists of public keys (NULL: any key). */
    const char *curve_secret;
    const char *client_keys;
    const char *worker_keys;
    int verbose; /* log every request's start and end on stderr */
} broker_config;

typedef struct broker broker;

/* Binds both sockets; NULL with err when an endpoint cannot be bound or a
 * key file cannot be read. */
broker *broker_new(const broker_config *cfg, smq_err *err);
void broker_destroy(broker **self);
/* Runs until SIGINT/SIGTERM, then drains (PROTOCOL.md §12). Returns 0. */
int broker_run(broker *b);
/* The endpoints actually bound (with the port chosen for tcp://...:*). */
const char *broker_clients_endpoint(const broker *b);
const char *broker_workers_endpoint(const broker *b);

/* Writes a new CURVE key pair: PATH (secret, czmq certificate) and
 * PATH.pub (public). */
int broker_keygen(const char *path, smq_err *err);

#endif

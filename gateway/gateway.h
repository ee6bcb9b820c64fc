/* gateway.h - smolmq-gateway: the process, its configuration, and what its
 * modules share.
 *
 *   gateway.c          listeners (SO_REUSEPORT), signals, drain on SIGTERM
 *   http_conn.c        one client connection: reading, timeouts, responses
 *   http_request.c     HTTP/1.x framing of one request (http-parser)
 *   routes.c           which handler a request goes to; the small endpoints
 *   chat.c             a chat through the broker, for HTTP (SSE or JSON)
 *                      and WebSocket alike
 *   openai_request.c   an OpenAI request body into a CHAT
 *   openai_response.c  OpenAI's response and error JSON
 *   ws.c               WebSocket sessions (wslay) on /v1/ws
 *   broker_link.c      the DEALER to the broker on the libuv loop
 *   metrics.c, api_keys.c, sha1.c
 *
 * One libuv loop runs everything: every client socket, the DEALER, the
 * timers. Nothing blocks and there are no threads.
 */
#ifndef SMQ_GATEWAY_H
#define SMQ_GATEWAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "api_keys.h"
#include "broker_link.h"
#include "err.h"
#include "metrics.h"
#include "openai_request.h"

#define GW_LISTEN_MAX 8
#define GW_CORS_MAX   16

typedef struct gw_config {
    const char *listen[GW_LISTEN_MAX]; /* HOST:PORT */
    int n_listen;
    const char *broker;                  /* endpoint */
    const char *broker_key;              /* CURVE: the broker's public key */
    const char *public_key, *secret_key; /* CURVE: ours (from --key-file), or NULL */
    const char *keys_file;               /* --keys; NULL: open */
    const char *cors[GW_CORS_MAX];       /* allowed origins; "*" for any */
    int n_cors;
    size_t max_body, max_header; /* bytes */
    openai_limits limits;        /* messages, max_tokens */
    int request_timeout_ms, idle_timeout_ms;
    int max_connections;
    int max_ws_chats;           /* chats at once on one WebSocket */
    int heartbeat_ms, liveness; /* as a broker client */
    int stats_cache_ms;
    int drain_ms; /* on SIGTERM, how long chats may finish */
    int verbose;
} gw_config;

typedef struct conn conn;

typedef struct gateway {
    uv_loop_t *loop;
    gw_config cfg;
    broker_link *link;
    api_keys *keys; /* NULL: the API is open */
    gw_metrics metrics;
    uv_tcp_t listeners[GW_LISTEN_MAX];
    int n_listeners;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    uv_timer_t watchdog; /* WATCHDOG=1 to systemd (sd_notify.h), when it asks */
    conn *conns;         /* every open connection, to close them all on the way out */
    /* Connections with queued output (conn_queue), written after the loop's
     * I/O callbacks (check) and before it waits (prepare). */
    conn *to_flush;
    uv_prepare_t flush_prepare;
    uv_check_t flush_check;
    int draining;
    char date[40]; /* the Date header, rewritten once a second */
    uint64_t date_at;
} gateway;

/* Loads the keys, connects the DEALER, binds the listeners. */
gateway *gateway_new(uv_loop_t *loop, const gw_config *cfg, smq_err *err);
/* Runs the loop until a signal's drain is over. */
int gateway_run(gateway *gw);
void gateway_destroy(gateway **self);

/* The Date header's value (RFC 9110 IMF-fixdate), cached per second. */
const char *gateway_date(gateway *gw);

/* One line to stderr: "smolmq-gateway: ...". */
void gw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

/* broker_link.h - the gateway's one DEALER to the broker, on the libuv loop.
 *
 * Every chat of every client connection is one request on this socket
 * (PROTOCOL.md: the gateway is a broker client). The link keeps the
 * client's promises, as proto/client.c does for a blocking client:
 *   - request ids unique for the link (a random prefix and a counter);
 *   - each request's frames checked for seq 0, 1, 2, ...; a gap, or a
 *     frame about it that cannot be used, ends it here with a local
 *     "internal" error and a CANCEL;
 *   - while requests are open, HEARTBEAT every interval and in answer to
 *     the broker's; when the broker says nothing for liveness x the larger
 *     of our interval and the one it announced, every open request ends
 *     with a local "broker_lost" error (and a CANCEL);
 *   - frames it cannot read are answered ERROR bad_frame, never an ERROR.
 * STATS replies carry no id and come in the order asked, so one STATS is
 * in flight at a time, its reply serves everyone who asked meanwhile, and
 * the last reply is cached for a short while.
 *
 * ZMQ_FD is edge-triggered: it says "something changed", not "a message is
 * waiting". So the link drains while ZMQ_EVENTS says POLLIN, and re-checks
 * after each send too (a send can consume the edge that announced input),
 * from an idle handle, outside the caller's stack.
 */
#ifndef SMQ_BROKER_LINK_H
#define SMQ_BROKER_LINK_H

#include <uv.h>

#include "err.h"
#include "proto.h"

typedef struct broker_link broker_link;
typedef struct broker_req broker_req;

typedef struct broker_link_config {
    const char *endpoint;                /* "tcp://127.0.0.1:5555" */
    int heartbeat_ms;                    /* 0: SMQ_HEARTBEAT_MS */
    int liveness;                        /* 0: SMQ_LIVENESS */
    int stats_timeout_ms;                /* how long a STATS may take; 0: 2000 */
    const char *server_key;              /* CURVE: the broker's public key (Z85); NULL: plain TCP */
    const char *public_key, *secret_key; /* ours (Z85); NULL: a fresh pair */
} broker_link_config;

/* What a request hears: TOKENs, then one terminal DONE or ERROR, received
 * or made here (local: "broker_lost", "internal"). The decoded bodies live
 * for the call only. After the terminal event the request is gone. */
typedef struct broker_event {
    smq_cmd cmd; /* SMQ_CMD_TOKEN, SMQ_CMD_DONE or SMQ_CMD_ERROR */
    const smq_token *token;
    const smq_done *done;
    const smq_error *error;
    int local;
} broker_event;

typedef void broker_on_event(void *ctx, const broker_event *ev);

/* s is NULL when the broker did not answer (why says so). */
typedef void broker_on_stats(void *ctx, const smq_stats *s, const char *why);

broker_link *broker_link_new(uv_loop_t *loop, const broker_link_config *cfg, smq_err *err);
/* Ends open requests with nothing said (their callbacks are not called),
 * and closes the socket and handles. */
void broker_link_destroy(broker_link **self);

/* Sends CHAT c, under an id of the link's (c->id is set to it while
 * encoding). cb hears every frame of the request until its terminal one.
 * NULL with err when it could not be sent (the request never existed). */
broker_req *broker_link_chat(broker_link *l, smq_chat *c, broker_on_event *cb, void *ctx, smq_err *err);
/* Sends CANCEL; the request still ends with its terminal event (DONE
 * "cancelled", or whatever was on its way). */
void broker_link_cancel(broker_link *l, broker_req *r);
/* Whoever listens is gone: the request is cancelled and its callback is
 * never called again. */
void broker_link_forget(broker_link *l, broker_req *r);
const char *broker_req_id(const broker_req *r);

/* The broker's STATS, no older than max_age_ms: from the cache at once
 * (cb is called before this returns), else when the reply comes or the
 * time runs out. */
void broker_link_stats(broker_link *l, int max_age_ms, broker_on_stats *cb, void *ctx);

/* The last STATS reply, however old; NULL when none came yet. */
const smq_stats *broker_link_last_stats(const broker_link *l);

size_t broker_link_open(const broker_link *l);         /* open requests */
uint64_t broker_link_lost_count(const broker_link *l); /* requests ended by broker_lost */

#endif

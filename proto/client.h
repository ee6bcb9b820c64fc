/* client.h - smq_client: a client of the smolmq broker (SMQ/1, PROTOCOL.md)
 * in C, on libzmq.
 *
 * One DEALER socket carries any number of concurrent requests. The client
 * sends CHAT and CANCEL, and smq_client_next() hands back the TOKEN, DONE
 * and ERROR frames of its open requests one at a time. It also keeps the
 * protocol's promises for the caller:
 *   - it checks that each request's frames come with seq 0, 1, 2, ... and
 *     ends a request whose sequence has a gap, or whose frame cannot be
 *     used (unreadable, or a bad field), with a local ERROR "internal" (and
 *     cancels it at the broker);
 *   - while requests are open it sends HEARTBEAT every heartbeat_ms, and
 *     one in answer to each of the broker's (at most one per 50 ms); when
 *     the broker has said nothing for liveness x the larger of heartbeat_ms
 *     and the interval the broker's HEARTBEATs announce, it ends every open
 *     request with a local ERROR "broker_lost" (and cancels it there);
 *   - it answers a frame it cannot read, or a command a broker does not
 *     send to clients, with ERROR bad_frame (or unsupported_version), never
 *     an ERROR with an ERROR;
 *   - after its terminal frame (DONE, or ERROR with its id) nothing more is
 *     handed back for a request.
 * It is not thread-safe: one thread uses one client.
 */
#ifndef SMQ_CLIENT_H
#define SMQ_CLIENT_H

#include "err.h"
#include "proto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct smq_client smq_client;

typedef struct smq_client_opts {
    int heartbeat_ms; /* 0: SMQ_HEARTBEAT_MS */
    int liveness;     /* 0: SMQ_LIVENESS */
    /* CURVE (PROTOCOL.md §13), Z85 keys of 40 characters: the broker's
     * public key turns it on; without a key pair of its own the client
     * makes a fresh one. NULL: plain TCP. */
    const char *server_key;
    const char *public_key, *secret_key;
} smq_client_opts;

/* What smq_client_next hands back. The decoded body it holds points into
 * the received frames: valid until the next call on the client. */
typedef struct smq_client_event {
    smq_cmd cmd;     /* SMQ_CMD_TOKEN, SMQ_CMD_DONE or SMQ_CMD_ERROR */
    smq_str id;      /* the request (p NULL for an ERROR that names none) */
    int terminal;    /* the request is over: DONE, or ERROR with its id */
    int local;       /* an ERROR made here (internal, broker_lost), not received */
    smq_token token; /* cmd TOKEN */
    smq_done done;   /* cmd DONE */
    smq_error error; /* cmd ERROR */
} smq_client_event;

/* Connects to the broker at endpoint ("tcp://127.0.0.1:5555"); opts may be
 * NULL. The connection is made in the background: a broker that is not up
 * yet is not an error here (its silence is, later: broker_lost). */
smq_client *smq_client_new(const char *endpoint, const smq_client_opts *opts, smq_err *err);
void smq_client_destroy(smq_client **self);

/* Sends CHAT. req->id (1-64 bytes) names the request until its terminal
 * frame and must not name another open request of this client. */
int smq_client_chat(smq_client *c, const smq_chat *req, smq_err *err);

/* Sends CANCEL for an open request (an id not open is ignored). The
 * request still ends with its terminal frame: DONE "cancelled", or what was
 * already on its way. */
int smq_client_cancel(smq_client *c, const char *id, smq_err *err);

/* Waits up to timeout_ms (-1: for ever) for the next frame about an open
 * request: 1 with it in *ev, 0 when the time passed (or a signal cut the
 * wait short) with nothing to hand back, -1 with err when the socket
 * failed. Heartbeats are sent and the broker's liveness checked in here,
 * so call it often while requests are open. */
int smq_client_next(smq_client *c, smq_client_event *ev, int timeout_ms, smq_err *err);

/* Asks the broker for STATS and waits up to timeout_ms (-1: for ever) for
 * the reply, into *out (free it with smq_stats_free; its strings point into
 * the reply, which lives until the next call on the client). Frames about
 * requests that arrive in the meantime are kept for smq_client_next. */
int smq_client_stats(smq_client *c, smq_stats *out, int timeout_ms, smq_err *err);

/* How many requests are open. */
size_t smq_client_open(const smq_client *c);

#ifdef __cplusplus
}
#endif

#endif

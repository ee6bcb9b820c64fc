/* http_conn.h - one client connection: reading requests, timeouts, and
 * writing responses (plain, streamed, or handed over to a WebSocket).
 *
 * A connection is in one state at a time:
 *   READING  parsing a request; the timer is the idle timeout until its
 *            first byte, then the request timeout (408 when it passes);
 *   BUSY     a handler has the request (a chat may stream for minutes);
 *            reading goes on, so that a client that hangs up is noticed
 *            (and its chat cancelled), and pipelined bytes are kept;
 *   WS       upgraded: the bytes go to the WebSocket session;
 *   LINGER   the response is out and the write side shut: what the client
 *            still sends is read and dropped for a moment, so that closing
 *            does not reset the connection under an unread response;
 *   CLOSED   the handles are closing; the memory goes with the last
 *            reference (handles and handlers waiting on the broker hold
 *            one each).
 */
#ifndef SMQ_HTTP_CONN_H
#define SMQ_HTTP_CONN_H

#include <uv.h>

#include "gateway.h"
#include "http_request.h"
#include "openai_request.h"
#include "sbuf.h"

typedef enum conn_state { C_READING, C_BUSY, C_WS, C_LINGER, C_CLOSED } conn_state;

/* What the connection's one timer waits for. */
enum { T_IDLE, T_REQUEST, T_RESUME, T_LINGER };

struct http_chat;
struct ws_session;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    gateway *gw;
    conn *prev, *next; /* in gw->conns */
    int refs;
    conn_state state;
    int reading;   /* uv_read_start is on */
    int timer_why; /* T_... */
    http_request req;
    sbuf in; /* bytes read and not yet parsed */
    /* the response in progress */
    gw_route route;
    int status, head_only, keep_alive, streaming, chunked, continue_sent;
    char cors[200];   /* Access-Control-Allow-Origin's value; "" for none */
    uint64_t started; /* ms, when the request was complete */
    struct http_chat *chat;
    struct ws_session *ws;
    sbuf out;         /* queued output (conn_queue), not yet written */
    conn *flush_next; /* in gw->to_flush, which holds a reference, while listed */
    int flush_listed;
};

/* Accepts a connection on a listener (server->data is the gateway). */
void conn_accept(uv_stream_t *server);

/* A whole response. headers: more header lines ("Name: value\r\n"...), or
 * NULL. The body is left out for HEAD (its length is still said). */
void conn_respond(conn *c, int status, const char *content_type, const char *headers, const void *body, size_t len);
/* An error in OpenAI's JSON shape, with Retry-After when e says so. */
void conn_respond_error(conn *c, const openai_error *e);
/* A streamed response: headers (queued, to go out with the first piece in
 * one write), the body in pieces (chunked on HTTP/1.1; on HTTP/1.0 until
 * the connection closes), then the end. */
void conn_stream_start(conn *c, int status, const char *content_type, const char *headers);
void conn_stream_write(conn *c, const void *data, size_t len);
void conn_stream_end(conn *c);

/* Switches c to the WebSocket protocol: writes the 101 response head, and
 * hands what was read past the request to ws_feed. */
void conn_upgrade(conn *c, const char *head);
/* Closes c in ms unless it closes before (a WebSocket that sent its close
 * frame waits that long for the peer's; an idle one closes); 0: not. */
void conn_close_after(conn *c, uint64_t ms);

/* Bytes onto the socket now, after whatever was queued. */
void conn_write(conn *c, const void *data, size_t len);
/* Bytes onto the socket at the end of this turn of the loop (a stream's
 * tokens, the WebSocket's frames): what one wake-up brings goes out in one
 * write. */
void conn_queue(conn *c, const void *data, size_t len);
/* Writes every connection's queued bytes (the loop's prepare and check). */
void conn_flush_all(gateway *gw);
/* Bytes queued or written and not yet taken by the kernel. */
size_t conn_backlog(const conn *c);

/* Closes at once (a chat in progress is cancelled). */
void conn_close(conn *c);
/* For handlers that wait (on the broker): the connection's memory stays
 * while they hold it; after the wait, a closed one is just dropped. */
void conn_ref(conn *c);
void conn_unref(conn *c);

#endif

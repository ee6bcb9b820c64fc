/* ws.h - the WebSocket endpoint /v1/ws (RFC 6455 framing by wslay).
 *
 * Each text message is a JSON object: {"type": "chat", "id": CLIENT_ID,
 * ...the fields of a chat completions body} starts a chat, {"type":
 * "cancel", "id": CLIENT_ID} stops one; the server streams {"type":
 * "delta"} messages and ends each chat with one {"type": "done"} or
 * {"type": "error"}. Several chats run at once on one socket; a socket
 * that closes cancels its chats. gateway/README.md is the protocol's
 * page.
 */
#ifndef SMQ_WS_H
#define SMQ_WS_H

#include <stddef.h>

#include "http_conn.h"

/* A browser cannot set Authorization on a WebSocket. It may name its API
 * key as the subprotocol "openai-insecure-api-key.KEY" (OpenAI's convention
 * for browser WebSockets) if it also offers "smolmq", the subprotocol the
 * handshake then selects: a browser drops a socket whose handshake selects
 * none of those it offered. */
#define WS_PROTOCOL     "smolmq"
#define WS_KEY_PROTOCOL "openai-insecure-api-key."

/* The API key a WebSocket handshake names in Sec-WebSocket-Protocol (*n
 * bytes), or NULL. */
const char *ws_protocol_key(const http_request *r, size_t *n);

/* GET /v1/ws on c: the handshake (101), or an HTTP error. */
void ws_upgrade(conn *c);
/* Bytes that came on an upgraded connection. */
void ws_feed(conn *c, const char *data, size_t n);
/* c closes: its chats are cancelled, the session freed. */
void ws_close(conn *c);

#endif

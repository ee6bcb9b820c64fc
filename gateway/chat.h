/* chat.h - one chat through the broker, for whoever asked: an HTTP request
 * (SSE or one JSON answer) or a WebSocket message.
 *
 * The core sends the CHAT, hears its frames from the broker link, keeps the
 * metrics (time to first token, inter-token gaps, tokens in and out), and
 * turns the broker's errors into OpenAI's (overloaded: 429 with
 * Retry-After; unknown_model: 404 when the broker serves other models,
 * 503 when it serves none, which takes a look at its STATS; ...). Its owner
 * (a chat_sink) hears the text as it comes and exactly one end: done or
 * error. An owner that goes away (a closed connection) abandons the chat:
 * it is cancelled at the broker and nothing more is said to anyone.
 */
#ifndef SMQ_CHAT_H
#define SMQ_CHAT_H

#include "gateway.h"
#include "http_conn.h"
#include "openai_request.h"
#include "openai_response.h"

typedef struct chat chat;

typedef struct chat_sink {
    /* Text of one step: reasoning and/or content (p NULL when none). */
    void (*on_delta)(void *ctx, chat *ch, smq_str reasoning, smq_str content);
    /* The end. After either the chat is gone. */
    void (*on_done)(void *ctx, chat *ch, const smq_done *d);
    void (*on_error)(void *ctx, chat *ch, const openai_error *e);
} chat_sink;

/* Sends r's CHAT; NULL with e (503) when the broker cannot be reached. The
 * sink hears nothing before this returns. */
chat *chat_start(gateway *gw, openai_request *r, const chat_sink *sink, void *ctx, openai_error *e);
/* Asks the broker to stop; the sink still hears the end (done, finish
 * "cancelled", or whatever was on its way). */
void chat_cancel(chat *ch);
/* The owner is gone: no callback ever again; cancelled at the broker. */
void chat_abandon(chat *ch);

const openai_meta *chat_meta(const chat *ch);
/* OpenAI's finish_reason for the broker's finish: eog and stop_string are
 * "stop", length and context_full "length"; cancelled is "cancelled". */
const char *chat_finish_reason(smq_str finish);

/* POST /v1/chat/completions on connection c. */
void chat_http_start(conn *c);
/* c closes with a chat in progress (the client went away). */
void chat_http_abandon(conn *c);

#endif

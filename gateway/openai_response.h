/* openai_response.h - the JSON the gateway answers with, in OpenAI's
 * shapes: errors, chat.completion, chat.completion.chunk (as SSE events),
 * the model list; and the WebSocket's messages, built the same way.
 *
 * Each function appends to an sbuf and returns 0, or -1 when memory runs
 * out. Text from the broker is valid UTF-8 (the codec checked it).
 */
#ifndef SMQ_OPENAI_RESPONSE_H
#define SMQ_OPENAI_RESPONSE_H

#include <jansson.h>
#include <stdint.h>

#include "openai_request.h"
#include "proto.h"
#include "sbuf.h"

/* What every chunk and completion of one request repeats. */
typedef struct openai_meta {
    const char *id;    /* "chatcmpl-..." */
    const char *model; /* the model that answers */
    int64_t created;   /* Unix seconds */
    int usage_null;    /* stream_options.include_usage: every chunk has "usage": null */
} openai_meta;

/* {"error": {"message", "type", "param", "code"}} */
int openai_error_json(const openai_error *e, sbuf *out);
json_t *openai_error_object(const openai_error *e);

/* usage as OpenAI spells it: prompt_tokens, completion_tokens,
 * total_tokens, prompt_tokens_details.cached_tokens,
 * completion_tokens_details.reasoning_tokens. */
json_t *openai_usage(const smq_usage *u);

/* One SSE event "data: {chat.completion.chunk}\n\n" whose delta holds
 * role (when not NULL) and the fields given (p not NULL), or nothing
 * with a finish_reason. */
int openai_chunk_event(const openai_meta *m, const char *role, smq_str reasoning, smq_str content, const char *finish,
                       sbuf *out);
/* The last chunk before [DONE] when include_usage: "choices": [] and usage. */
int openai_usage_event(const openai_meta *m, const smq_usage *u, sbuf *out);
/* An error inside a stream: "data: {"error": {...}}\n\n". */
int openai_error_event(const openai_error *e, sbuf *out);

/* A whole chat.completion. reasoning is left out when empty. */
int openai_completion_json(const openai_meta *m, smq_str content, smq_str reasoning, const char *finish,
                           const smq_usage *u, sbuf *out);

/* {"object": "list", "data": [{"id", "object": "model", "created",
 * "owned_by"}]}: each model a worker serves, once. */
int openai_models_json(const smq_stats *s, sbuf *out);

/* A JSON string of s. The gateway does not link
 * common/json.c, whose json_string() and json_integer() have the names of
 * jansson's functions (the Makefile says so); keep it that way. */
json_t *json_str(const char *s);

/* Appends the JSON string of p[0..n) (valid UTF-8) as jansson would write
 * it; 0, or -1 when memory runs out. */
int json_put_str(sbuf *out, const char *p, size_t n);

/* Appends json (compact) to out and drops the reference. */
int json_put(json_t *json, sbuf *out);

#endif

/* openai_request.h - an OpenAI chat completions request (a JSON body) read
 * into the broker's CHAT (smq_chat), and the errors of OpenAI's API.
 *
 * The request is checked against the broker's rules (PROTOCOL.md §3) as
 * well as OpenAI's, so every request it accepts is a CHAT the broker takes;
 * the fuzz target checks that by decoding what it encodes. Fields that would
 * change the answer and that smolmq cannot honour (tools, logprobs, n > 1,
 * a JSON response format...) are refused, naming the field; fields that
 * change nothing here (user, metadata, store...) and unknown ones are
 * ignored. Free of the event loop (tests/fuzz/gateway_fuzz.c runs it alone).
 */
#ifndef SMQ_OPENAI_REQUEST_H
#define SMQ_OPENAI_REQUEST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* An error as OpenAI's API reports it: {"error": {message, type, param,
 * code}}, with the HTTP status it goes with. */
typedef struct openai_error {
    int status;       /* 400, 401, 404, 413, 429, 500, 502, 503 */
    const char *type; /* "invalid_request_error", "authentication_error", ... */
    const char *code; /* "invalid_type", "model_not_found", ...; NULL: null */
    char param[96];   /* the field at fault ("messages[2].content"); "": null */
    char message[600];
    int retry_after; /* seconds, for a Retry-After header; 0: none */
} openai_error;

/* Fills e; returns -1 (so error paths read `return openai_error_set(...)`).
 * param may be NULL. */
int openai_error_set(openai_error *e, int status, const char *type, const char *code, const char *param,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Limits the gateway puts on requests (its flags). */
typedef struct openai_limits {
    uint32_t max_messages; /* 1 to SMQ_MESSAGES_MAX */
    uint32_t max_tokens;   /* the most a request may ask for, and what it gets when it asks for
                              nothing; 0: no limit (until the end of the turn or the context) */
} openai_limits;

typedef struct openai_request {
    smq_chat chat; /* id left empty: the caller names the request */
    int stream, include_usage;
    json_t *root;  /* the body; chat's strings point into it */
    char **joined; /* contents joined from text parts, owned */
    size_t n_joined;
} openai_request;

/* Reads a JSON body. 0, or -1 with e (status 400, param the field). */
int openai_request_parse(openai_request *r, const char *body, size_t n, const openai_limits *lim, openai_error *e);

/* The same from an object already parsed (a WebSocket message: its keys
 * "type" and "id" are the WebSocket's, and ignored here); takes a
 * reference of its own to root. */
int openai_request_from_json(openai_request *r, json_t *root, const openai_limits *lim, openai_error *e);

void openai_request_free(openai_request *r);

/* json_loadb's flags for bodies: keys given twice are an error; U+0000 is
 * allowed (only in text; names are checked). */
#define OPENAI_JSON_FLAGS (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)

/* Describes a JSON parse error for people: "the body is not valid JSON:
 * ... at line 1, column 5" (the prefix names what was parsed). */
void openai_json_error(openai_error *e, const char *what, const json_error_t *jerr);

#endif

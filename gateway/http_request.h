/* http_request.h - one HTTP/1.x request read from a byte stream, within
 * limits (http-parser does the framing: methods, headers, Content-Length,
 * chunked bodies).
 *
 * A connection keeps one http_request and feeds it the bytes it reads.
 * http_request_feed() stops at the end of a request: the bytes after it
 * belong to the next request (pipelining) or, after an Upgrade, to the new
 * protocol, and the caller keeps them. The request is free of the event
 * loop, so the fuzz target drives it alone (tests/fuzz/gateway_fuzz.c).
 *
 * A request that breaks HTTP or a limit sets status (400, 405, 413, 431,
 * 505) and error (one line saying what to fix); the connection answers it
 * and closes, since the stream cannot be trusted after that.
 */
#ifndef SMQ_HTTP_REQUEST_H
#define SMQ_HTTP_REQUEST_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

#define HTTP_HEADERS_MAX 64 /* header fields a request may have */

typedef struct http_limits {
    size_t header_max; /* the request line and the header fields, in bytes */
    size_t body_max;   /* the body, in bytes (after chunked decoding) */
} http_limits;

/* A header field: offsets into the request's head buffer; names lower-case. */
typedef struct http_field {
    uint32_t name, name_len, value, value_len;
} http_field;

typedef struct http_request {
    http_parser parser;
    http_limits limits;
    sbuf head; /* the URL, then each header field's name and value */
    uint32_t url_len;
    uint32_t path, path_len, query, query_len; /* offsets into head */
    http_field fields[HTTP_HEADERS_MAX];
    uint32_t n_fields;
    int in_value; /* the last header callback was a value */
    size_t head_bytes;
    sbuf body;
    int method; /* enum http_method */
    int started, headers_done, complete;
    int keep_alive, upgrade, expect_continue;
    int status;      /* 0, or the HTTP status of what is wrong */
    char error[240]; /* with status: what is wrong, for people */
} http_request;

void http_request_init(http_request *r, const http_limits *limits);
/* Ready for the next request on the same connection (keeps the buffers). */
void http_request_reset(http_request *r);
void http_request_free(http_request *r);

/* Feeds data[0..n); returns how many bytes belong to this request. When
 * r->complete or r->status is set on return, the rest is not this
 * request's: feed it again after http_request_reset (unless status). */
size_t http_request_feed(http_request *r, const char *data, size_t n);

/* The value of header field name (lower-case), NUL-terminated, or NULL;
 * *len gets its length. The first field of that name wins. */
const char *http_request_header(const http_request *r, const char *name, size_t *len);

/* The URL's path ("/v1/models" of "/v1/models?x=1"), path[0..*len), not
 * NUL-terminated; "/" when the URL has none. */
const char *http_request_path(const http_request *r, size_t *len);

/* Whether the comma-separated header field name holds token (case blind):
 * Connection: keep-alive, Upgrade / Connection: upgrade. */
int http_request_has_token(const http_request *r, const char *name, const char *token);

#endif

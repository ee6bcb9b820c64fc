/* proto.h - the SMQ/1 wire protocol codec (proto/PROTOCOL.md is the spec).
 *
 * Two layers:
 *   - frames: smq_head_parse() checks the frames of one ZeroMQ message (the
 *     header, the command, the job id on the worker hop, the body's size and
 *     that it is a msgpack map) and says which command it is;
 *   - bodies: one decoder and one encoder per message body. Decoders are
 *     strict: a missing required key, a known key of the wrong type or out of
 *     range, a key given twice, invalid UTF-8, a body that is not exactly one
 *     msgpack map or has bytes after it: -1 with err naming the key and what
 *     is wrong ("messages[2].content: not a string"). Unknown keys are
 *     ignored (PROTOCOL.md §2).
 *
 * Decoded strings (smq_str) point into the body the decoder was given: keep
 * the body alive while the decoded struct is used. Decoders never recurse
 * on input and check every count against the bytes left before allocating,
 * so hostile input costs at most a few times its own size.
 *
 * Encoders append one msgpack map to an smq_buf; they return 0, or -1 when
 * memory runs out.
 */
#ifndef SMQ_PROTO_H
#define SMQ_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "sbuf.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SMQ_HEADER       "SMQ/1"
#define SMQ_HEADER_LEN   5
#define SMQ_BODY_MAX     (8u << 20)
#define SMQ_ID_MAX       64
#define SMQ_NAME_MAX     128 /* model, affinity, worker name */
#define SMQ_MESSAGES_MAX 1024
#define SMQ_CONTENT_MAX  (1u << 20)
#define SMQ_STOP_MAX     8
#define SMQ_STOP_LEN_MAX 256
#define SMQ_CAPACITY_MAX 4096
#define SMQ_HEARTBEAT_MS 1000
#define SMQ_LIVENESS     3

typedef enum smq_cmd {
    SMQ_CMD_NONE = 0,
    SMQ_CMD_CHAT,
    SMQ_CMD_CANCEL,
    SMQ_CMD_TOKEN,
    SMQ_CMD_DONE,
    SMQ_CMD_ERROR,
    SMQ_CMD_HEARTBEAT,
    SMQ_CMD_STATS,
    SMQ_CMD_READY,
    SMQ_CMD_DISCONNECT,
} smq_cmd;

const char *smq_cmd_name(smq_cmd c); /* "CHAT", ...; "?" for none */

/* The hop a message travels on: on the worker hop, CHAT, CANCEL, TOKEN,
 * DONE and ERROR carry the 8-byte job id frame. */
typedef enum smq_hop { SMQ_HOP_CLIENT, SMQ_HOP_WORKER } smq_hop;

/* Error codes (PROTOCOL.md §10). */
#define SMQ_E_BAD_FRAME       "bad_frame"
#define SMQ_E_BAD_REQUEST     "bad_request"
#define SMQ_E_VERSION         "unsupported_version"
#define SMQ_E_DUPLICATE_ID    "duplicate_id"
#define SMQ_E_UNKNOWN_MODEL   "unknown_model"
#define SMQ_E_OVERLOADED      "overloaded"
#define SMQ_E_TIMEOUT         "timeout"
#define SMQ_E_WORKER_LOST     "worker_lost"
#define SMQ_E_SHUTTING_DOWN   "shutting_down"
#define SMQ_E_PROMPT_TOO_LONG "prompt_too_long"
#define SMQ_E_INTERNAL        "internal"

/* A string inside a body: not NUL-terminated; valid UTF-8; p is NULL (and n
 * 0) when the key was absent. */
typedef struct smq_str {
    const char *p;
    uint32_t n;
} smq_str;

/* ---- frames ---- */

typedef struct smq_frame {
    const void *data;
    size_t size;
} smq_frame;

typedef struct smq_head {
    smq_cmd cmd;
    uint64_t job; /* worker hop, job commands */
    const uint8_t *body;
    size_t body_len;
} smq_head;

/* Reads the n frames of one message as a DEALER sends them (no routing id).
 * On error returns -1, sets *code to SMQ_E_BAD_FRAME or SMQ_E_VERSION, and
 * err to what is wrong ("frame 1: unknown command \"FOO\""). */
int smq_head_parse(const smq_frame *f, size_t n, smq_hop hop, smq_head *h, const char **code, smq_err *err);
/* The 8-byte big-endian job id frame. */
void smq_job_put(uint64_t job, uint8_t out[8]);

/* ---- bodies ---- */

typedef struct smq_buf {
    char *data;
    size_t len, cap;
} smq_buf;
void smq_buf_reset(smq_buf *b); /* len = 0, keeps the memory */
void smq_buf_free(smq_buf *b);

typedef struct smq_chat_msg {
    smq_str role, content;
} smq_chat_msg;

/* CHAT. Absent optional fields hold their defaults after decoding (the has_
 * flags say which were given). */
typedef struct smq_chat {
    smq_str id, model, affinity;
    smq_chat_msg *messages; /* malloc'd by the decoder */
    uint32_t n_messages;
    uint32_t max_tokens; /* 0: not given */
    float temperature, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty;
    uint32_t top_k;
    int has_seed;
    uint64_t seed;
    smq_str stop[SMQ_STOP_MAX];
    uint32_t n_stop;
    int thinking;              /* default 1 */
    uint32_t queue_timeout_ms; /* 0: not given */
    double queued_ms;          /* worker hop: the broker's wait; < 0 when absent */
} smq_chat;

/* Fills c with the defaults (no id, no messages). */
void smq_chat_init(smq_chat *c);
int smq_chat_decode(smq_chat *c, const void *body, size_t n, smq_err *err);
void smq_chat_free(smq_chat *c); /* frees messages; c can be decoded into again */
/* Encodes every field that differs from its default (and id, messages);
 * queued_ms when >= 0. */
int smq_chat_encode(smq_buf *b, const smq_chat *c);

/* CANCEL {id}, and the id-only bodies. */
int smq_cancel_decode(smq_str *id, const void *body, size_t n, smq_err *err);
int smq_cancel_encode(smq_buf *b, const char *id, size_t id_len);

typedef struct smq_token {
    smq_str id;
    uint64_t seq;
    const int32_t *tokens; /* encode: the caller's; decode: malloc'd (free with smq_token_free) */
    uint32_t n_tokens;
    smq_str reasoning, content; /* "" rather than absent after decoding */
} smq_token;
int smq_token_decode(smq_token *t, const void *body, size_t n, smq_err *err);
void smq_token_free(smq_token *t);
int smq_token_encode(smq_buf *b, const smq_token *t);

typedef struct smq_usage {
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
    uint32_t reasoning_tokens; /* optional: of completion_tokens, the thinking block's (0: none, or not told) */
} smq_usage;
typedef struct smq_timings {
    double queue_ms, ttft_ms, total_ms, decode_tps;
} smq_timings;
typedef struct smq_done {
    smq_str id;
    uint64_t seq;
    smq_str finish; /* "eog", "stop_string", "length", "context_full", "cancelled" */
    smq_usage usage;
    smq_timings timings;
} smq_done;
int smq_done_decode(smq_done *d, const void *body, size_t n, smq_err *err);
int smq_done_encode(smq_buf *b, const smq_done *d);

typedef struct smq_error {
    smq_str id; /* absent: not terminal for any request */
    uint64_t seq;
    smq_str code, message;
} smq_error;
int smq_error_decode(smq_error *e, const void *body, size_t n, smq_err *err);
int smq_error_encode(smq_buf *b, const smq_error *e);

typedef struct smq_ready {
    smq_str model, name, backend;
    uint32_t capacity, n_ctx; /* n_ctx 0: not given */
    uint32_t heartbeat_ms;    /* the worker's interval; 0: not given */
} smq_ready;
int smq_ready_decode(smq_ready *r, const void *body, size_t n, smq_err *err);
int smq_ready_encode(smq_buf *b, const smq_ready *r);

/* Worker HEARTBEAT {capacity, running}; a client's HEARTBEAT is {} (encode
 * with smq_empty_encode). */
typedef struct smq_worker_hb {
    uint32_t capacity, running;
} smq_worker_hb;
int smq_worker_hb_decode(smq_worker_hb *h, const void *body, size_t n, smq_err *err);
int smq_worker_hb_encode(smq_buf *b, const smq_worker_hb *h);

/* The broker's HEARTBEAT {heartbeat_ms?} on both hops: its interval, so a
 * peer can judge the broker by it (0: not given). */
int smq_broker_hb_decode(uint32_t *heartbeat_ms, const void *body, size_t n, smq_err *err);
int smq_broker_hb_encode(smq_buf *b, uint32_t heartbeat_ms);

/* DISCONNECT {reason?} */
int smq_disconnect_decode(smq_str *reason, const void *body, size_t n, smq_err *err);
int smq_disconnect_encode(smq_buf *b, const char *reason);

int smq_empty_encode(smq_buf *b); /* {} */

/* STATS: the broker builds the reply with this writer (it has many rows);
 * clients decode it with smq_stats_decode. */
typedef struct smq_stats_worker {
    smq_str name, model, backend;
    uint32_t capacity, in_flight;
    double heartbeat_age_ms;
} smq_stats_worker;
typedef struct smq_stats_queue {
    smq_str model;
    uint32_t depth;
} smq_stats_queue;
typedef struct smq_stats_totals {
    uint64_t accepted, completed, failed, cancelled, rejected, redispatched, tokens_out;
} smq_stats_totals;
typedef struct smq_stats {
    smq_stats_worker *workers; /* malloc'd by the decoder */
    uint32_t n_workers;
    smq_stats_queue *queues; /* malloc'd by the decoder */
    uint32_t n_queues;
    smq_stats_totals totals;
    uint32_t clients;
    double uptime_ms;
} smq_stats;
int smq_stats_decode(smq_stats *s, const void *body, size_t n, smq_err *err);
void smq_stats_free(smq_stats *s);
int smq_stats_encode(smq_buf *b, const smq_stats *s);

#ifdef __cplusplus
}
#endif

#endif

/* proto_fuzz.c - libFuzzer target: the SMQ/1 codec on arbitrary messages.
 *
 * The input is a message: byte 0 says how many frames (mod 6); then each
 * frame but the last is a 2-byte big-endian length and that many bytes,
 * and the last frame is the rest. (proto/vectors/make_vectors.py
 * --fuzz-corpus DIR writes the valid test vectors in this form: the seeds
 * in tests/fuzz/corpus/proto.)
 *
 * smq_head_parse reads the frames on both hops: it fails with bad_frame or
 * unsupported_version and a message, or points the body inside the last
 * frame. Every body decoder reads the last frame: it fails with a message
 * in valid UTF-8, or decodes strings that point into the body, and then
 * encoding what it decoded, decoding that and encoding again gives the
 * same bytes (the encoders' output is a fixed point of the round trip).
 * A body some decoder accepts passes smq_head_parse too, so that a peer
 * never answers bad_request to a frame it should call bad_frame.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "utf8.h"

static const uint8_t *body_lo, *body_hi;

static void check_err(const smq_err *err)
{
    if (!err->msg[0] || !utf8_valid(err->msg, strlen(err->msg), 0))
        abort();
}

static void check_str(smq_str s)
{
    if (s.p && s.n && ((const uint8_t *)s.p < body_lo || (const uint8_t *)s.p + s.n > body_hi))
        abort();
    if (s.p && !utf8_valid(s.p, s.n, 1))
        abort();
}

/* b1 = encode(x); decode(b1) must succeed; encode of that must be b1. */
static void same_bytes(const smq_buf *b1, const smq_buf *b2)
{
    if (b1->len != b2->len || memcmp(b1->data, b2->data, b1->len))
        abort();
}

/* The round trip of one body type. free_ is a statement freeing x. */
#define ROUND_TRIP(T, decode, encode, free_)                                                                           \
    do {                                                                                                               \
        T x, y;                                                                                                        \
        smq_err e_ = { { 0 } };                                                                                        \
        if (decode(&x, body, n, &e_)) {                                                                                \
            check_err(&e_);                                                                                            \
            break;                                                                                                     \
        }                                                                                                              \
        accepted = 1;                                                                                                  \
        smq_buf b1 = { 0 }, b2 = { 0 };                                                                                \
        if (encode(&b1, &x) || decode(&y, b1.data, b1.len, &e_) || encode(&b2, &y))                                    \
            abort();                                                                                                   \
        same_bytes(&b1, &b2);                                                                                          \
        T *p = &x;                                                                                                     \
        free_;                                                                                                         \
        p = &y;                                                                                                        \
        free_;                                                                                                         \
        smq_buf_free(&b1);                                                                                             \
        smq_buf_free(&b2);                                                                                             \
    } while (0)

static int decode_bodies(const uint8_t *body, size_t n)
{
    int accepted = 0;
    body_lo = body, body_hi = body + n;

    /* The first decode of each type also has its strings checked. */
    smq_chat c;
    smq_err err = { { 0 } };
    if (smq_chat_decode(&c, body, n, &err) == 0) {
        check_str(c.id), check_str(c.model), check_str(c.affinity);
        if (!c.id.p || !c.n_messages || c.n_messages > SMQ_MESSAGES_MAX || c.n_stop > SMQ_STOP_MAX)
            abort();
        for (uint32_t i = 0; i < c.n_messages; i++)
            check_str(c.messages[i].role), check_str(c.messages[i].content);
        for (uint32_t i = 0; i < c.n_stop; i++)
            check_str(c.stop[i]);
        smq_chat_free(&c);
    }
    ROUND_TRIP(smq_chat, smq_chat_decode, smq_chat_encode, smq_chat_free(p));

    smq_token t;
    if (smq_token_decode(&t, body, n, &err) == 0) {
        check_str(t.id);
        if (!t.reasoning.p || !t.content.p)
            abort();
        for (uint32_t i = 0; i < t.n_tokens; i++)
            if (t.tokens[i] < 0)
                abort();
        smq_token_free(&t);
    }
    ROUND_TRIP(smq_token, smq_token_decode, smq_token_encode, smq_token_free(p));
    ROUND_TRIP(smq_done, smq_done_decode, smq_done_encode, (void)p);
    ROUND_TRIP(smq_error, smq_error_decode, smq_error_encode, (void)p);
    ROUND_TRIP(smq_ready, smq_ready_decode, smq_ready_encode, (void)p);
    ROUND_TRIP(smq_worker_hb, smq_worker_hb_decode, smq_worker_hb_encode, (void)p);
    ROUND_TRIP(smq_stats, smq_stats_decode, smq_stats_encode, smq_stats_free(p));

    /* The one-string bodies take (pointer, length) to encode. */
    smq_str s, s2;
    smq_buf b1 = { 0 }, b2 = { 0 };
    if (smq_cancel_decode(&s, body, n, &err) == 0) {
        accepted = 1;
        check_str(s);
        if (smq_cancel_encode(&b1, s.p, s.n) || smq_cancel_decode(&s2, b1.data, b1.len, &err) ||
            smq_cancel_encode(&b2, s2.p, s2.n))
            abort();
        same_bytes(&b1, &b2);
    } else {
        check_err(&err);
    }
    smq_buf_reset(&b1);
    smq_buf_reset(&b2);
    if (smq_disconnect_decode(&s, body, n, &err) == 0) {
        accepted = 1;
        check_str(s);
        /* A reason with U+0000 cannot travel as a C string; the rest round-trips. */
        if (s.p && !memchr(s.p, 0, s.n)) {
            char reason[512];
            if (s.n < sizeof reason) {
                memcpy(reason, s.p, s.n);
                reason[s.n] = 0;
                if (smq_disconnect_encode(&b1, reason) || smq_disconnect_decode(&s2, b1.data, b1.len, &err) ||
                    s2.n != s.n || memcmp(s2.p, s.p, s.n))
                    abort();
            }
        }
    } else {
        check_err(&err);
    }
    smq_buf_free(&b1);
    smq_buf_free(&b2);
    return accepted;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    smq_frame f[5];
    size_t nf = data[0] % 6, pos = 1;
    for (size_t i = 0; i < nf; i++) {
        size_t len = size - pos;
        if (i + 1 < nf) {
            len = pos + 2 <= size ? (size_t)data[pos] << 8 | data[pos + 1] : 0;
            pos = pos + 2 <= size ? pos + 2 : size;
            if (len > size - pos)
                len = size - pos;
        }
        f[i].data = data + pos;
        f[i].size = len;
        pos += len;
    }
    for (int hop = SMQ_HOP_CLIENT; hop <= SMQ_HOP_WORKER; hop++) {
        smq_head h;
        const char *code = NULL;
        smq_err err = { { 0 } };
        if (smq_head_parse(f, nf, (smq_hop)hop, &h, &code, &err)) {
            check_err(&err);
            if (!code || (strcmp(code, SMQ_E_BAD_FRAME) && strcmp(code, SMQ_E_VERSION)))
                abort();
        } else if (h.cmd == SMQ_CMD_NONE || h.body != f[nf - 1].data || h.body_len != f[nf - 1].size) {
            abort();
        }
    }
    if (nf == 0)
        return 0;
    const uint8_t *body = f[nf - 1].data;
    size_t n = f[nf - 1].size;
    if (decode_bodies(body, n)) {
        smq_frame g[3] = { { SMQ_HEADER, SMQ_HEADER_LEN }, { "STATS", 5 }, { body, n } };
        smq_head h;
        smq_err err;
        if (smq_head_parse(g, 3, SMQ_HOP_CLIENT, &h, NULL, &err))
            abort();
    }
    return 0;
}

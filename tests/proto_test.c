/* proto_test.c - the SMQ/1 codec (proto/proto.c) against the test vectors
 * in proto/vectors/vectors.json (the Python and Node clients read the same
 * file), plus round trips of every body and the limits a hostile peer
 * probes: counts that lie, bodies past 8 MiB, nesting, duplicate keys.
 * Runs from the repository root. */
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "json.h"
#include "proto.h"

#include "test.h"

#define VECTORS "proto/vectors/vectors.json"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static smq_str S(const char *s)
{
    smq_str r = { s, s ? (uint32_t)strlen(s) : 0 };
    return r;
}

static int str_eq(smq_str a, smq_str b)
{
    return !a.p == !b.p && a.n == b.n && (a.n == 0 || !memcmp(a.p, b.p, a.n));
}

/* TOKEN text: absent and "" are the same. */
static int text_eq(smq_str a, smq_str b)
{
    return a.n == b.n && (a.n == 0 || !memcmp(a.p, b.p, a.n));
}

/* ---- comparing decoded bodies with the vectors' JSON ---- */

static const char *vec_name; /* the vector being checked, for messages */

static const json_value *given(const json_value *obj, const char *key)
{
    const json_value *v = json_get(obj, key);
    return json_typeof(v) == JSON_NULL ? NULL : v; /* nil is "not given" */
}

/* text: absent decodes as "" (TOKEN's reasoning and content). */
static void want_str(const json_value *obj, const char *key, smq_str got, int text)
{
    const json_value *v = given(obj, key);
    size_t len = 0;
    const char *s = v ? json_string(v, &len) : NULL;
    if (!v && text)
        s = "";
    int ok = s ? got.p && got.n == len && !memcmp(got.p, s, len) : !got.p;
    CHECK_MSG(ok, "%s: %s: decoded \"%.*s\", expected %s%s%s", vec_name, key, (int)got.n, got.p ? got.p : "(absent)",
              s ? "\"" : "", s ? s : "absent", s ? "\"" : "");
}

static void want_uint(const json_value *obj, const char *key, uint64_t got, uint64_t absent)
{
    const json_value *v = given(obj, key);
    uint64_t want = v ? (uint64_t)json_integer(v) : absent;
    CHECK_MSG(!v || json_is_integer(v), "%s: %s: not an integer in the JSON", vec_name, key);
    CHECK_MSG(got == want, "%s: %s: decoded %llu, expected %llu", vec_name, key, (unsigned long long)got,
              (unsigned long long)want);
}

static void want_num(const json_value *obj, const char *key, double got, double absent, int as_float)
{
    const json_value *v = given(obj, key);
    double want = v ? json_number(v) : absent;
    if (as_float)
        want = (float)want;
    CHECK_MSG(got == want, "%s: %s: decoded %.17g, expected %.17g", vec_name, key, got, want);
}

static void want_chat(const smq_chat *c, const json_value *b)
{
    want_str(b, "id", c->id, 0);
    want_str(b, "model", c->model, 0);
    want_str(b, "affinity", c->affinity, 0);
    const json_value *msgs = json_get(b, "messages");
    CHECK_MSG(c->n_messages == json_len(msgs), "%s: %u messages, expected %zu", vec_name, c->n_messages,
              json_len(msgs));
    for (uint32_t i = 0; i < c->n_messages && i < json_len(msgs); i++) {
        want_str(json_at(msgs, i), "role", c->messages[i].role, 0);
        want_str(json_at(msgs, i), "content", c->messages[i].content, 0);
    }
    want_uint(b, "max_tokens", c->max_tokens, 0);
    want_num(b, "temperature", c->temperature, 0.6, 1);
    want_num(b, "top_p", c->top_p, 0.95, 1);
    want_uint(b, "top_k", c->top_k, 0);
    want_num(b, "min_p", c->min_p, 0, 1);
    want_num(b, "repeat_penalty", c->repeat_penalty, 1, 1);
    want_num(b, "presence_penalty", c->presence_penalty, 0, 1);
    want_num(b, "frequency_penalty", c->frequency_penalty, 0, 1);
    CHECK_MSG(c->has_seed == (given(b, "seed") != NULL), "%s: has_seed %d", vec_name, c->has_seed);
    want_uint(b, "seed", c->seed, 0);
    const json_value *stop = given(b, "stop");
    CHECK_MSG(c->n_stop == json_len(stop), "%s: %u stop strings, expected %zu", vec_name, c->n_stop, json_len(stop));
    for (uint32_t i = 0; i < c->n_stop && i < json_len(stop); i++) {
        size_t len;
        const char *s = json_string(json_at(stop, i), &len);
        CHECK_MSG(s && c->stop[i].n == len && !memcmp(c->stop[i].p, s, len), "%s: stop[%u]", vec_name, i);
    }
    const json_value *think = given(b, "thinking");
    CHECK_MSG(c->thinking == (think ? json_boolean(think) : 1), "%s: thinking %d", vec_name, c->thinking);
    want_uint(b, "queue_timeout_ms", c->queue_timeout_ms, 0);
    want_num(b, "queued_ms", c->queued_ms, -1, 0);
}

static void want_done(const smq_done *d, const json_value *b)
{
    const json_value *u = json_get(b, "usage"), *t = json_get(b, "timings");
    want_str(b, "id", d->id, 0);
    want_uint(b, "seq", d->seq, 0);
    want_str(b, "finish", d->finish, 0);
    want_uint(u, "prompt_tokens", d->usage.prompt_tokens, 0);
    want_uint(u, "completion_tokens", d->usage.completion_tokens, 0);
    want_uint(u, "cached_tokens", d->usage.cached_tokens, 0);
    want_uint(u, "reasoning_tokens", d->usage.reasoning_tokens, 0);
    want_num(t, "queue_ms", d->timings.queue_ms, 0, 0);
    want_num(t, "ttft_ms", d->timings.ttft_ms, 0, 0);
    want_num(t, "total_ms", d->timings.total_ms, 0, 0);
    want_num(t, "decode_tps", d->timings.decode_tps, 0, 0);
}

static void want_stats(const smq_stats *s, const json_value *b)
{
    const json_value *w = json_get(b, "workers"), *q = json_get(b, "queues"), *t = json_get(b, "totals");
    CHECK_MSG(s->n_workers == json_len(w) && s->n_queues == json_len(q), "%s: rows", vec_name);
    for (uint32_t i = 0; i < s->n_workers && i < json_len(w); i++) {
        const json_value *r = json_at(w, i);
        want_str(r, "name", s->workers[i].name, 0);
        want_str(r, "model", s->workers[i].model, 0);
        want_str(r, "backend", s->workers[i].backend, 0);
        want_uint(r, "capacity", s->workers[i].capacity, 0);
        want_uint(r, "in_flight", s->workers[i].in_flight, 0);
        want_num(r, "heartbeat_age_ms", s->workers[i].heartbeat_age_ms, 0, 0);
    }
    for (uint32_t i = 0; i < s->n_queues && i < json_len(q); i++) {
        want_str(json_at(q, i), "model", s->queues[i].model, 0);
        want_uint(json_at(q, i), "depth", s->queues[i].depth, 0);
    }
    const uint64_t tot[7] = { s->totals.accepted, s->totals.completed,    s->totals.failed,    s->totals.cancelled,
                              s->totals.rejected, s->totals.redispatched, s->totals.tokens_out };
    const char *keys[7] = { "accepted", "completed", "failed", "cancelled", "rejected", "redispatched", "tokens_out" };
    for (int i = 0; i < 7; i++)
        want_uint(t, keys[i], tot[i], 0);
    want_uint(b, "clients", s->clients, 0);
    want_num(b, "uptime_ms", s->uptime_ms, 0, 0);
}

/* ---- struct equality, for round trips ---- */

static int chat_eq(const smq_chat *a, const smq_chat *b)
{
    int eq = str_eq(a->id, b->id) && str_eq(a->model, b->model) && str_eq(a->affinity, b->affinity) &&
             a->n_messages == b->n_messages && a->max_tokens == b->max_tokens && a->temperature == b->temperature &&
             a->top_p == b->top_p && a->min_p == b->min_p && a->repeat_penalty == b->repeat_penalty &&
             a->presence_penalty == b->presence_penalty && a->frequency_penalty == b->frequency_penalty &&
             a->top_k == b->top_k && a->has_seed == b->has_seed && a->seed == b->seed && a->n_stop == b->n_stop &&
             a->thinking == b->thinking && a->queue_timeout_ms == b->queue_timeout_ms && a->queued_ms == b->queued_ms;
    for (uint32_t i = 0; eq && i < a->n_messages; i++)
        eq = str_eq(a->messages[i].role, b->messages[i].role) && str_eq(a->messages[i].content, b->messages[i].content);
    for (uint32_t i = 0; eq && i < a->n_stop; i++)
        eq = str_eq(a->stop[i], b->stop[i]);
    return eq;
}

static int token_eq(const smq_token *a, const smq_token *b)
{
    return str_eq(a->id, b->id) && a->seq == b->seq && a->n_tokens == b->n_tokens &&
           (a->n_tokens == 0 || !memcmp(a->tokens, b->tokens, a->n_tokens * sizeof *a->tokens)) &&
           text_eq(a->reasoning, b->reasoning) && text_eq(a->content, b->content);
}

static int done_eq(const smq_done *a, const smq_done *b)
{
    return str_eq(a->id, b->id) && a->seq == b->seq && str_eq(a->finish, b->finish) &&
           !memcmp(&a->usage, &b->usage, sizeof a->usage) && a->timings.queue_ms == b->timings.queue_ms &&
           a->timings.ttft_ms == b->timings.ttft_ms && a->timings.total_ms == b->timings.total_ms &&
           a->timings.decode_tps == b->timings.decode_tps;
}

static int error_eq(const smq_error *a, const smq_error *b)
{
    return str_eq(a->id, b->id) && (a->id.p ? a->seq == b->seq : 1) && str_eq(a->code, b->code) &&
           str_eq(a->message, b->message);
}

static int ready_eq(const smq_ready *a, const smq_ready *b)
{
    return str_eq(a->model, b->model) && str_eq(a->name, b->name) && str_eq(a->backend, b->backend) &&
           a->capacity == b->capacity && a->n_ctx == b->n_ctx;
}

static int stats_eq(const smq_stats *a, const smq_stats *b)
{
    int eq = a->n_workers == b->n_workers && a->n_queues == b->n_queues && a->clients == b->clients &&
             a->uptime_ms == b->uptime_ms && !memcmp(&a->totals, &b->totals, sizeof a->totals);
    for (uint32_t i = 0; eq && i < a->n_workers; i++) {
        const smq_stats_worker *x = &a->workers[i], *y = &b->workers[i];
        eq = str_eq(x->name, y->name) && str_eq(x->model, y->model) && str_eq(x->backend, y->backend) &&
             x->capacity == y->capacity && x->in_flight == y->in_flight && x->heartbeat_age_ms == y->heartbeat_age_ms;
    }
    for (uint32_t i = 0; eq && i < a->n_queues; i++)
        eq = str_eq(a->queues[i].model, b->queues[i].model) && a->queues[i].depth == b->queues[i].depth;
    return eq;
}

/* ---- the vectors ---- */

/* Decodes one body with the decoder for (command, hop, sender); with want,
 * compares it with the vector's JSON, and checks that it re-encodes to a
 * body that decodes the same. 0 when it decodes; err otherwise. Bodies
 * with no decoder (an empty map by the spec) decode as anything. */
static int check_body(smq_cmd cmd, smq_hop hop, const char *from, const void *body, size_t n, const json_value *want,
                      smq_err *err)
{
    smq_buf b = { 0 };
    smq_err e2;
    int rc = 0;
    if (cmd == SMQ_CMD_CHAT) {
        smq_chat c, c2;
        if ((rc = smq_chat_decode(&c, body, n, err)) == 0) {
            if (want)
                want_chat(&c, want);
            CHECK(smq_chat_encode(&b, &c) == 0 && smq_chat_decode(&c2, b.data, b.len, &e2) == 0);
            CHECK_MSG(chat_eq(&c, &c2), "%s: round trip differs", vec_name);
            smq_chat_free(&c2);
        }
        smq_chat_free(&c);
    } else if (cmd == SMQ_CMD_CANCEL && hop == SMQ_HOP_CLIENT) {
        smq_str id, id2;
        if ((rc = smq_cancel_decode(&id, body, n, err)) == 0 && want) {
            want_str(want, "id", id, 0);
            CHECK(smq_cancel_encode(&b, id.p, id.n) == 0 && smq_cancel_decode(&id2, b.data, b.len, &e2) == 0 &&
                  str_eq(id, id2));
        }
    } else if (cmd == SMQ_CMD_TOKEN) {
        smq_token t, t2;
        if ((rc = smq_token_decode(&t, body, n, err)) == 0) {
            if (want) {
                want_str(want, "id", t.id, 0);
                want_uint(want, "seq", t.seq, 0);
                want_str(want, "reasoning", t.reasoning, 1);
                want_str(want, "content", t.content, 1);
                const json_value *ids = json_get(want, "tokens");
                CHECK_MSG(t.n_tokens == json_len(ids), "%s: %u tokens", vec_name, t.n_tokens);
                for (uint32_t i = 0; i < t.n_tokens && i < json_len(ids); i++)
                    CHECK_INT(t.tokens[i], json_integer(json_at(ids, i)));
            }
            CHECK(smq_token_encode(&b, &t) == 0 && smq_token_decode(&t2, b.data, b.len, &e2) == 0);
            CHECK_MSG(token_eq(&t, &t2), "%s: round trip differs", vec_name);
            smq_token_free(&t2);
        }
        smq_token_free(&t);
    } else if (cmd == SMQ_CMD_DONE) {
        smq_done d, d2;
        if ((rc = smq_done_decode(&d, body, n, err)) == 0) {
            if (want)
                want_done(&d, want);
            CHECK(smq_done_encode(&b, &d) == 0 && smq_done_decode(&d2, b.data, b.len, &e2) == 0 && done_eq(&d, &d2));
        }
    } else if (cmd == SMQ_CMD_ERROR) {
        smq_error e, e3;
        if ((rc = smq_error_decode(&e, body, n, err)) == 0) {
            if (want) {
                want_str(want, "id", e.id, 0);
                want_uint(want, "seq", e.seq, 0);
                want_str(want, "code", e.code, 0);
                want_str(want, "message", e.message, 0);
            }
            CHECK(smq_error_encode(&b, &e) == 0 && smq_error_decode(&e3, b.data, b.len, &e2) == 0 && error_eq(&e, &e3));
        }
    } else if (cmd == SMQ_CMD_HEARTBEAT && hop == SMQ_HOP_WORKER && !strcmp(from, "worker")) {
        smq_worker_hb h, h2;
        if ((rc = smq_worker_hb_decode(&h, body, n, err)) == 0) {
            if (want) {
                want_uint(want, "capacity", h.capacity, 0);
                want_uint(want, "running", h.running, 0);
            }
            CHECK(smq_worker_hb_encode(&b, &h) == 0 && smq_worker_hb_decode(&h2, b.data, b.len, &e2) == 0 &&
                  !memcmp(&h, &h2, sizeof h));
        }
    } else if (cmd == SMQ_CMD_HEARTBEAT && !strcmp(from, "broker")) {
        uint32_t ms, ms2;
        if ((rc = smq_broker_hb_decode(&ms, body, n, err)) == 0) {
            if (want)
                want_uint(want, "heartbeat_ms", ms, 0);
            CHECK(smq_broker_hb_encode(&b, ms) == 0 && smq_broker_hb_decode(&ms2, b.data, b.len, &e2) == 0 &&
                  ms == ms2);
        }
    } else if (cmd == SMQ_CMD_READY) {
        smq_ready r, r2;
        if ((rc = smq_ready_decode(&r, body, n, err)) == 0) {
            if (want) {
                want_str(want, "model", r.model, 0);
                want_uint(want, "capacity", r.capacity, 0);
                want_str(want, "name", r.name, 0);
                want_str(want, "backend", r.backend, 0);
                want_uint(want, "n_ctx", r.n_ctx, 0);
                want_uint(want, "heartbeat_ms", r.heartbeat_ms, 0);
            }
            CHECK(smq_ready_encode(&b, &r) == 0 && smq_ready_decode(&r2, b.data, b.len, &e2) == 0 && ready_eq(&r, &r2));
        }
    } else if (cmd == SMQ_CMD_DISCONNECT) {
        smq_str reason;
        if ((rc = smq_disconnect_decode(&reason, body, n, err)) == 0 && want)
            want_str(want, "reason", reason, 0);
    } else if (cmd == SMQ_CMD_STATS && !strcmp(from, "broker")) {
        smq_stats s, s2;
        if ((rc = smq_stats_decode(&s, body, n, err)) == 0) {
            if (want)
                want_stats(&s, want);
            CHECK(smq_stats_encode(&b, &s) == 0 && smq_stats_decode(&s2, b.data, b.len, &e2) == 0);
            CHECK_MSG(stats_eq(&s, &s2), "%s: round trip differs", vec_name);
            smq_stats_free(&s2);
        }
        smq_stats_free(&s);
    } else if (want) {
        CHECK_MSG(json_len(want) == 0, "%s: a body with no decoder should be {}", vec_name);
    }
    smq_buf_free(&b);
    return rc;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The vector's frames, from hex, into one malloc'd block. */
static uint8_t *unhex_frames(const json_value *frames, smq_frame *f, size_t *n)
{
    size_t total = 0;
    *n = json_len(frames);
    for (size_t i = 0; i < *n; i++) {
        size_t len;
        json_string(json_at(frames, i), &len);
        total += len / 2;
    }
    uint8_t *buf = malloc(total + 1), *p = buf;
    for (size_t i = 0; i < *n && i < 8; i++) {
        size_t len;
        const char *s = json_string(json_at(frames, i), &len);
        f[i].data = p;
        f[i].size = len / 2;
        for (size_t k = 0; k + 1 < len; k += 2)
            *p++ = (uint8_t)(hexval(s[k]) << 4 | hexval(s[k + 1]));
    }
    return buf;
}

static void test_vectors(void)
{
    size_t len;
    char *text = test_read_file(VECTORS, &len);
    if (!text)
        return;
    smq_err err;
    json_value *doc = json_parse(text, len, VECTORS, &err);
    CHECK_MSG(doc, "%s", err.msg);
    CHECK_STR(json_string(json_get(doc, "protocol"), NULL), "SMQ/1");
    const json_value *vs = json_get(doc, "vectors");
    size_t n_valid = 0, n_invalid = 0, codes[3] = { 0 };
    for (size_t i = 0; i < json_len(vs); i++) {
        const json_value *v = json_at(vs, i);
        vec_name = json_string(json_get(v, "name"), NULL);
        const char *hop_s = json_string(json_get(v, "hop"), NULL), *from = json_string(json_get(v, "from"), NULL);
        CHECK_MSG(vec_name && hop_s && from && json_len(json_get(v, "frames")) <= 8, "vector %zu: malformed", i);
        if (!vec_name || !hop_s || !from || json_len(json_get(v, "frames")) > 8)
            continue;
        smq_hop hop = !strcmp(hop_s, "worker") ? SMQ_HOP_WORKER : SMQ_HOP_CLIENT;
        smq_frame f[8];
        size_t nf;
        uint8_t *bytes = unhex_frames(json_get(v, "frames"), f, &nf);
        smq_head h;
        const char *code = NULL;
        int head_rc = smq_head_parse(f, nf, hop, &h, &code, &err);
        if (json_boolean(json_get(v, "valid"))) {
            n_valid++;
            CHECK_MSG(head_rc == 0, "%s: %s", vec_name, err.msg);
            if (head_rc == 0) {
                CHECK_STR(smq_cmd_name(h.cmd), json_string(json_get(v, "command"), NULL));
                CHECK_MSG(h.job == (uint64_t)json_integer(json_get(v, "job")), "%s: job %llu", vec_name,
                          (unsigned long long)h.job);
                CHECK_MSG(check_body(h.cmd, hop, from, h.body, h.body_len, json_get(v, "body"), &err) == 0, "%s: %s",
                          vec_name, err.msg);
            }
        } else {
            n_invalid++;
            const char *want_code = json_string(json_get(v, "error_code"), NULL);
            const char *key = json_string(json_get(v, "error_key"), NULL);
            if (want_code && !strcmp(want_code, "bad_request")) {
                codes[2]++;
                CHECK_MSG(head_rc == 0, "%s: the frames should pass: %s", vec_name, err.msg);
                CHECK_MSG(key, "%s: a bad_request vector names its error_key", vec_name);
                if (head_rc == 0 && key) {
                    int rc = check_body(h.cmd, hop, from, h.body, h.body_len, NULL, &err);
                    CHECK_MSG(rc == -1, "%s: decoded, expected an error naming %s", vec_name, key);
                    if (rc == -1)
                        CHECK_MSG(strstr(err.msg, key), "%s: error \"%s\" does not name \"%s\"", vec_name, err.msg,
                                  key);
                }
            } else {
                codes[want_code && !strcmp(want_code, "bad_frame") ? 0 : 1]++;
                CHECK_MSG(head_rc == -1, "%s: the frames passed, expected %s", vec_name, want_code);
                CHECK_MSG(head_rc == 0 || (code && want_code && !strcmp(code, want_code)),
                          "%s: code %s, expected %s (%s)", vec_name, code, want_code, err.msg);
            }
        }
        free(bytes);
    }
    printf("  %zu vectors: %zu valid, %zu invalid (%zu bad_frame, %zu unsupported_version, %zu bad_request)\n",
           json_len(vs), n_valid, n_invalid, codes[0], codes[1], codes[2]);
    CHECK(n_valid >= 30 && n_invalid >= 30);
    json_free(doc);
    free(text);
}

/* ---- error messages, word for word ---- */

/* A body built with msgpack-c's own packer, for the shapes our encoders never write. */
typedef struct raw {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} raw;

static void raw_init(raw *r)
{
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
}

static void raw_str(raw *r, const char *s)
{
    msgpack_pack_str_with_body(&r->pk, s, strlen(s));
}

/* The messages array of n user turns "m0", "m1", ... */
static void raw_messages(raw *r, int n, int bad_at)
{
    raw_str(r, "messages");
    msgpack_pack_array(&r->pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        char c[16];
        snprintf(c, sizeof c, "m%d", i);
        msgpack_pack_map(&r->pk, 2);
        raw_str(r, "role");
        raw_str(r, "user");
        raw_str(r, "content");
        if (i == bad_at)
            msgpack_pack_int(&r->pk, 7);
        else
            raw_str(r, c);
    }
}

static void check_chat_error(raw *r, const char *want)
{
    smq_chat c;
    smq_err err = { { 0 } };
    CHECK_INT(smq_chat_decode(&c, r->sb.data, r->sb.size, &err), -1);
    CHECK_STR(err.msg, want);
    msgpack_sbuffer_destroy(&r->sb);
}

static void test_error_messages(void)
{
    raw r;
    raw_init(&r);
    msgpack_pack_map(&r.pk, 2);
    raw_str(&r, "id");
    raw_str(&r, "r1");
    raw_messages(&r, 3, 2);
    check_chat_error(&r, "messages[2].content: not a string (got int)");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 3);
    raw_str(&r, "id");
    raw_str(&r, "r1");
    raw_messages(&r, 1, -1);
    raw_str(&r, "temperature");
    msgpack_pack_double(&r.pk, 3.5);
    check_chat_error(&r, "temperature: 3.5 is out of range 0-2");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 1);
    raw_messages(&r, 1, -1);
    check_chat_error(&r, "id: missing");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 3);
    raw_str(&r, "id");
    raw_str(&r, "r1");
    raw_messages(&r, 1, -1);
    msgpack_pack_int(&r.pk, 5);
    msgpack_pack_nil(&r.pk);
    check_chat_error(&r, "body: key 2 is not a string (got int)");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 3);
    raw_str(&r, "id");
    raw_str(&r, "r1");
    raw_messages(&r, 1, -1);
    raw_str(&r, "max_tokens");
    msgpack_pack_int(&r.pk, -5);
    check_chat_error(&r, "max_tokens: -5 is out of range 1-4294967295");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 3);
    raw_str(&r, "id");
    raw_str(&r, "r1");
    raw_messages(&r, 1, -1);
    raw_str(&r, "seed");
    msgpack_pack_float(&r.pk, 1.5f);
    check_chat_error(&r, "seed: not an integer (got float)");

    /* Frames: the version message, a job id of 7 bytes, a frame count. */
    smq_frame f[4] = { { "SMQ/2", 5 }, { "CHAT", 4 }, { "\x80", 1 }, { "\x80", 1 } };
    smq_head h;
    const char *code;
    smq_err err;
    CHECK_INT(smq_head_parse(f, 3, SMQ_HOP_CLIENT, &h, &code, &err), -1);
    CHECK_STR(code, SMQ_E_VERSION);
    CHECK_STR(err.msg, "frame 0: version \"SMQ/2\" is not spoken here (this peer speaks SMQ/1)");
    f[0] = (smq_frame){ "SMQ/1", 5 };
    f[2] = (smq_frame){ "1234567", 7 };
    CHECK_INT(smq_head_parse(f, 4, SMQ_HOP_WORKER, &h, &code, &err), -1);
    CHECK_STR(code, SMQ_E_BAD_FRAME);
    CHECK_STR(err.msg, "frame 2: the job id is 7 bytes, not 8");
    CHECK_INT(smq_head_parse(f, 3, SMQ_HOP_WORKER, &h, &code, &err), -1);
    CHECK_STR(err.msg, "CHAT on the worker hop has 4 frames (header, command, job id, body), not 3");
    f[1] = (smq_frame){ "F\x01O", 3 };
    CHECK_INT(smq_head_parse(f, 3, SMQ_HOP_CLIENT, &h, &code, &err), -1);
    CHECK_STR(err.msg, "frame 1: unknown command \"F\\x01O\"");
    f[1] = (smq_frame){ "CHAT", 4 };
    f[2] = (smq_frame){ "\x92\x01\x02", 3 };
    CHECK_INT(smq_head_parse(f, 3, SMQ_HOP_CLIENT, &h, &code, &err), -1);
    CHECK_STR(err.msg, "frame 2: body: not a msgpack map (got array)");
}

/* ---- round trips of every body ---- */

static void test_round_trips(void)
{
    smq_buf b = { 0 };
    smq_err err;

    /* CHAT: every field away from its default, then all at their defaults. */
    smq_chat_msg msgs[3] = { { S("system"), S("be brief") }, { S("user"), S("2+2?") }, { S("assistant"), S("") } };
    smq_chat c, d;
    smq_chat_init(&c);
    CHECK(c.temperature == 0.6f && c.top_p == 0.95f && c.top_k == 0 && c.min_p == 0 && c.repeat_penalty == 1 &&
          c.presence_penalty == 0 && c.frequency_penalty == 0 && c.thinking == 1 && c.queued_ms == -1);
    c.id = S("req-1");
    c.model = S("SmolLM3-3B");
    c.affinity = S("conv-9");
    c.messages = msgs;
    c.n_messages = 3;
    c.max_tokens = 4000000000u;
    c.temperature = 0;
    c.top_p = 0.5f;
    c.top_k = 40;
    c.min_p = 0.1f;
    c.repeat_penalty = 1.25f;
    c.presence_penalty = -2;
    c.frequency_penalty = 2;
    c.has_seed = 1;
    c.seed = UINT64_MAX;
    c.stop[0] = S("\n\n");
    c.stop[1] = S("</s>");
    c.n_stop = 2;
    c.thinking = 0;
    c.queue_timeout_ms = 1;
    c.queued_ms = 0;
    CHECK_INT(smq_chat_encode(&b, &c), 0);
    CHECK_MSG(smq_chat_decode(&d, b.data, b.len, &err) == 0, "%s", err.msg);
    CHECK(chat_eq(&c, &d));
    smq_chat_free(&d);
    size_t full = b.len;
    smq_buf_reset(&b);
    smq_chat_init(&c);
    c.id = S("r");
    c.messages = msgs + 1;
    c.n_messages = 1;
    c.has_seed = 1; /* seed 0 given is not seed absent */
    CHECK_INT(smq_chat_encode(&b, &c), 0);
    CHECK_MSG(smq_chat_decode(&d, b.data, b.len, &err) == 0, "%s", err.msg);
    CHECK(chat_eq(&c, &d) && d.has_seed && d.seed == 0);
    smq_chat_free(&d);
    printf("  CHAT: %zu bytes with every field, %zu with the fewest\n", full, b.len);

    /* Encoders append: two bodies in one buffer decode one after the other. */
    smq_buf_reset(&b);
    smq_token t = { S("r"), 1, (const int32_t[]){ 0, 1, INT32_MAX }, 3, S("think"), S("") }, t2;
    CHECK_INT(smq_token_encode(&b, &t), 0);
    size_t first = b.len;
    t.seq = UINT64_MAX;
    t.reasoning = S(NULL);
    t.content = S("é");
    CHECK_INT(smq_token_encode(&b, &t), 0);
    CHECK_MSG(smq_token_decode(&t2, b.data + first, b.len - first, &err) == 0, "%s", err.msg);
    CHECK(token_eq(&t, &t2) && t2.reasoning.p && t2.reasoning.n == 0);
    smq_token_free(&t2);
    CHECK_INT(smq_token_decode(&t2, b.data, b.len, &err), -1); /* two maps are not one body */
    CHECK_CONTAINS(err.msg, "bytes after the map");
    CHECK_MSG(smq_token_decode(&t2, b.data, first, &err) == 0, "%s", err.msg);
    CHECK(t2.seq == 1 && t2.n_tokens == 3 && t2.tokens[2] == INT32_MAX);
    smq_token_free(&t2);

    smq_done dn = { S("r"), 5, S("context_full"), { 1, 2, 3 }, { 0.5, 1e-300, 1e300, 0 } }, dn2;
    smq_buf_reset(&b);
    CHECK(smq_done_encode(&b, &dn) == 0 && smq_done_decode(&dn2, b.data, b.len, &err) == 0 && done_eq(&dn, &dn2));

    smq_error e = { S("r"), 0, S(SMQ_E_WORKER_LOST), S("worker w1 stopped answering") }, e2;
    smq_buf_reset(&b);
    CHECK(smq_error_encode(&b, &e) == 0 && smq_error_decode(&e2, b.data, b.len, &err) == 0 && error_eq(&e, &e2));
    e.id = S(NULL);
    smq_buf_reset(&b);
    CHECK(smq_error_encode(&b, &e) == 0 && smq_error_decode(&e2, b.data, b.len, &err) == 0 && error_eq(&e, &e2));
    CHECK(e2.id.p == NULL);

    smq_ready r = { S("m"), S("host/gpu0"), S("cpu"), 4096, 65536 }, r2;
    smq_buf_reset(&b);
    CHECK(smq_ready_encode(&b, &r) == 0 && smq_ready_decode(&r2, b.data, b.len, &err) == 0 && ready_eq(&r, &r2));

    smq_worker_hb hb = { 0, 4000000000u }, hb2;
    smq_buf_reset(&b);
    CHECK(smq_worker_hb_encode(&b, &hb) == 0 && smq_worker_hb_decode(&hb2, b.data, b.len, &err) == 0);
    CHECK(hb2.capacity == 0 && hb2.running == 4000000000u);

    smq_str id;
    smq_buf_reset(&b);
    CHECK(smq_cancel_encode(&b, "abc", 3) == 0 && smq_cancel_decode(&id, b.data, b.len, &err) == 0);
    CHECK(str_eq(id, S("abc")));
    smq_buf_reset(&b);
    CHECK(smq_disconnect_encode(&b, "shutting_down") == 0 && smq_disconnect_decode(&id, b.data, b.len, &err) == 0);
    CHECK(str_eq(id, S("shutting_down")));
    smq_buf_reset(&b);
    CHECK(smq_disconnect_encode(&b, NULL) == 0 && smq_disconnect_decode(&id, b.data, b.len, &err) == 0 && !id.p);
    CHECK(b.len == 1 && (uint8_t)b.data[0] == 0x80);
    smq_buf_reset(&b);
    CHECK(smq_empty_encode(&b) == 0 && b.len == 1 && (uint8_t)b.data[0] == 0x80);

    smq_stats_worker w[2] = { { S("a"), S("m"), S("cuda"), 16, 3, 12.5 }, { S(NULL), S("m"), S(NULL), 0, 0, 0 } };
    smq_stats_queue q[1] = { { S("m"), 7 } };
    smq_stats s = { w, 2, q, 1, { 1, 2, 3, 4, 5, 6, UINT64_MAX }, 9, 1234.5 }, s2;
    smq_buf_reset(&b);
    CHECK(smq_stats_encode(&b, &s) == 0);
    CHECK_MSG(smq_stats_decode(&s2, b.data, b.len, &err) == 0, "%s", err.msg);
    CHECK(stats_eq(&s, &s2));
    smq_stats_free(&s2);
    s.n_workers = s.n_queues = 0;
    smq_buf_reset(&b);
    CHECK(smq_stats_encode(&b, &s) == 0 && smq_stats_decode(&s2, b.data, b.len, &err) == 0 && stats_eq(&s, &s2));
    smq_stats_free(&s2);

    uint8_t job[8];
    smq_job_put(0x0102030405060708ull, job);
    CHECK(!memcmp(job, "\x01\x02\x03\x04\x05\x06\x07\x08", 8));
    smq_frame f[4] = { { "SMQ/1", 5 }, { "DONE", 4 }, { job, 8 }, { b.data, b.len } };
    smq_head h;
    const char *code;
    CHECK_MSG(smq_head_parse(f, 4, SMQ_HOP_WORKER, &h, &code, &err) == 0, "%s", err.msg);
    CHECK(h.cmd == SMQ_CMD_DONE && h.job == 0x0102030405060708ull && h.body == (const uint8_t *)b.data);
    smq_buf_free(&b);
}

/* ---- limits ---- */

/* A 29-byte body whose array header claims 2^32-1 entries. msgpack-c alone
 * would allocate 96 GiB of objects for it before reading on; ours rejects
 * it first. In a child with its address space capped near what it uses
 * (not under ASan, which reserves terabytes), so that an allocation for the
 * count could not succeed silently either. */
static void test_huge_count(void)
{
    const uint8_t body[] = { 0x82, 0xa2, 'i',  'd',  0xa2, 'r',  '1',  0xa8, 'm',  'e',  's',  's',  'a',  'g', 'e',
                             's',  0xdd, 0xff, 0xff, 0xff, 0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80 };
    smq_chat c;
    smq_err err;
    double t0 = now_s();
    CHECK_INT(smq_chat_decode(&c, body, sizeof body, &err), -1);
    double t1 = now_s();
    CHECK_STR(err.msg, "body: at byte 16: an array of 4294967295 elements cannot fit in the 8 bytes left");
    smq_frame f[3] = { { "SMQ/1", 5 }, { "CHAT", 4 }, { body, sizeof body } };
    smq_head h;
    const char *code;
    CHECK_INT(smq_head_parse(f, 3, SMQ_HOP_CLIENT, &h, &code, &err), -1);
    CHECK_STR(code, SMQ_E_BAD_FRAME);
    CHECK_CONTAINS(err.msg, "frame 2: body: at byte 16: an array of 4294967295 elements cannot fit");
#if defined(__SANITIZE_ADDRESS__)
    printf("  rejected in %.1f us (the address-space cap is skipped under ASan)\n", (t1 - t0) * 1e6);
#else
    pid_t pid = fork();
    if (pid == 0) {
        /* 256 MiB above the current mappings: msgpack-c's 96 GiB cannot fit. */
        unsigned long vm_kb = 0;
        FILE *st = fopen("/proc/self/statm", "r");
        if (!st || fscanf(st, "%lu", &vm_kb) != 1)
            _exit(3);
        fclose(st);
        struct rlimit rl = { (rlim_t)vm_kb * (rlim_t)sysconf(_SC_PAGESIZE) + (256u << 20), RLIM_INFINITY };
        rl.rlim_max = rl.rlim_cur;
        if (setrlimit(RLIMIT_AS, &rl))
            _exit(4);
        smq_err e;
        if (smq_chat_decode(&c, body, sizeof body, &e) != -1 || !strstr(e.msg, "cannot fit"))
            _exit(1);
        /* And msgpack-c alone does try: it runs out of memory. */
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        int rc = msgpack_unpack_next(&u, (const char *)body, sizeof body, &off);
        msgpack_unpacked_destroy(&u);
        _exit(rc == MSGPACK_UNPACK_NOMEM_ERROR ? 0 : 2);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %d", status);
    printf("  rejected in %.1f us; msgpack-c alone, under a 256 MiB cap: out of memory\n", (t1 - t0) * 1e6);
#endif
}

/* A CHAT body of exactly n bytes: {"id": "r", "messages": [...], "pad": "xxx..."}. */
static uint8_t *body_of_size(size_t n)
{
    static const uint8_t head[] = { 0x83, 0xa2, 'i',  'd',  0xa1, 'r', 0xa8, 'm',  'e',  's',  's', 'a', 'g', 'e',
                                    's',  0x91, 0x82, 0xa4, 'r',  'o', 'l',  'e',  0xa4, 'u',  's', 'e', 'r', 0xa7,
                                    'c',  'o',  'n',  't',  'e',  'n', 't',  0xa1, 'x',  0xa3, 'p', 'a', 'd', 0xdb };
    uint8_t *b = malloc(n);
    size_t pad = n - sizeof head - 4;
    memcpy(b, head, sizeof head);
    for (int i = 0; i < 4; i++)
        b[sizeof head + (size_t)i] = (uint8_t)(pad >> (24 - 8 * i));
    memset(b + sizeof head + 4, 'x', pad);
    return b;
}

static void test_body_max(void)
{
    smq_head h;
    const char *code;
    smq_err err;
    uint8_t *b = body_of_size(SMQ_BODY_MAX);
    smq_frame f[3] = { { "SMQ/1", 5 }, { "CHAT", 4 }, { b, SMQ_BODY_MAX } };
    CHECK_MSG(smq_head_parse(f, 3, SMQ_HOP_CLIENT, &h, &code, &err) == 0, "%s", err.msg);
    smq_chat c;
    CHECK_MSG(smq_chat_decode(&c, b, SMQ_BODY_MAX, &err) == 0, "%s", err.msg);
    smq_chat_free(&c);
    free(b);
    b = body_of_size(SMQ_BODY_MAX + 1);
    f[2] = (smq_frame){ b, SMQ_BODY_MAX + 1 };
    CHECK_INT(smq_head_parse(f, 3, SMQ_HOP_CLIENT, &h, &code, &err), -1);
    CHECK_STR(code, SMQ_E_BAD_FRAME);
    CHECK_STR(err.msg, "frame 2: body: 8388609 bytes, more than the limit of 8388608");
    CHECK_INT(smq_chat_decode(&c, b, SMQ_BODY_MAX + 1, &err), -1);
    free(b);
}

/* 32 open maps and arrays decode (msgpack-c can hold them); 33 do not. */
static void test_depth(void)
{
    for (int depth = 31; depth <= 33; depth++) {
        raw r;
        raw_init(&r);
        msgpack_pack_map(&r.pk, 3);
        raw_str(&r, "id");
        raw_str(&r, "r1");
        raw_messages(&r, 1, -1);
        raw_str(&r, "deep"); /* an unknown key: ignored, but still within the limit */
        for (int i = 1; i < depth; i++)
            msgpack_pack_array(&r.pk, 1);
        msgpack_pack_nil(&r.pk);
        smq_chat c;
        smq_err err;
        int rc = smq_chat_decode(&c, r.sb.data, r.sb.size, &err);
        if (depth <= 32)
            CHECK_MSG(rc == 0, "depth %d: %s", depth, err.msg);
        else
            CHECK_MSG(rc == -1 && strstr(err.msg, "nested deeper than 32"), "depth %d: %s", depth, err.msg);
        smq_chat_free(&c);
        msgpack_sbuffer_destroy(&r.sb);
    }
}

/* 200000 distinct unknown keys and one repeat: found, in n log n. */
static void test_duplicate_keys_large(void)
{
    for (int dup = 0; dup <= 1; dup++) {
        raw r;
        raw_init(&r);
        int n = 200000;
        msgpack_pack_map(&r.pk, (size_t)n + 2 + (size_t)dup);
        raw_str(&r, "id");
        raw_str(&r, "r1");
        raw_messages(&r, 1, -1);
        for (int i = 0; i < n; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%d", (int)((i * 7919L) % n));
            raw_str(&r, k);
            msgpack_pack_int(&r.pk, i);
        }
        if (dup) {
            raw_str(&r, "k4242");
            msgpack_pack_true(&r.pk);
        }
        smq_chat c;
        smq_err err;
        double t0 = now_s();
        int rc = smq_chat_decode(&c, r.sb.data, r.sb.size, &err);
        double t1 = now_s();
        if (dup)
            CHECK_MSG(rc == -1 && !strcmp(err.msg, "k4242: given twice"), "%s", err.msg);
        else
            CHECK_MSG(rc == 0, "%s", err.msg);
        printf("  %d keys%s: %s in %.1f ms (%zu bytes)\n", n + 2 + dup, dup ? " (one twice)" : "",
               rc ? "rejected" : "decoded", (t1 - t0) * 1e3, r.sb.size);
        smq_chat_free(&c);
        msgpack_sbuffer_destroy(&r.sb);
    }
}

/* Appends one byte (through an encoder's buffer: a body is reused as is). */
static int buf_push(smq_buf *b, char x)
{
    if (b->len == b->cap) {
        char *p = realloc(b->data, b->cap + 16);
        if (!p)
            return 0;
        b->data = p;
        b->cap += 16;
    }
    b->data[b->len++] = x;
    return 1;
}

/* Every truncation of a valid body is rejected, by the frames check and
 * the decoder alike, and so is every body with one byte appended. */
static void test_truncations(void)
{
    smq_buf b = { 0 };
    smq_chat_msg m = { S("user"), S("hello") };
    smq_chat c;
    smq_chat_init(&c);
    c.id = S("r1");
    c.messages = &m;
    c.n_messages = 1;
    c.stop[0] = S("x");
    c.n_stop = 1;
    c.temperature = 0.25f;
    c.queued_ms = 3;
    CHECK_INT(smq_chat_encode(&b, &c), 0);
    int rejected = 0;
    for (size_t n = 0; n < b.len; n++) {
        smq_chat d;
        smq_err err;
        smq_frame f[3] = { { "SMQ/1", 5 }, { "CHAT", 4 }, { b.data, n } };
        smq_head h;
        const char *code;
        rejected +=
            smq_chat_decode(&d, b.data, n, &err) == -1 && smq_head_parse(f, 3, SMQ_HOP_CLIENT, &h, &code, &err) == -1;
    }
    CHECK_INT(rejected, (int)b.len);
    size_t len = b.len;
    for (int extra = 0; extra < 256; extra++) {
        smq_chat d;
        smq_err err;
        b.len = len;
        char x = (char)extra;
        CHECK(buf_push(&b, x));
        CHECK_MSG(smq_chat_decode(&d, b.data, b.len, &err) == -1 && strstr(err.msg, "after the map"),
                  "0x%02x appended: %s", extra, err.msg);
    }
    printf("  %zu truncations and 256 appended bytes of a %zu-byte CHAT: all rejected\n", len, len);
    smq_buf_free(&b);
}

int main(void)
{
    test_program = "proto";
    TEST_RUN(test_vectors);
    TEST_RUN(test_error_messages);
    TEST_RUN(test_round_trips);
    TEST_RUN(test_huge_count);
    TEST_RUN(test_body_max);
    TEST_RUN(test_depth);
    TEST_RUN(test_duplicate_keys_large);
    TEST_RUN(test_truncations);
    return test_done();
}

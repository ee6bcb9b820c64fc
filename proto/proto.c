/* proto.c - the SMQ/1 codec: the frames of a message, and one strict
 * decoder and one encoder per body (proto.h says what; PROTOCOL.md is the
 * spec).
 *
 * Bodies are msgpack maps. msgpack-c packs them, into an smq_buf through a
 * write callback, and unpacks them into a tree of msgpack_object whose
 * strings point into the body. But msgpack-c trusts the counts it reads:
 * the header of an array of 4 billion elements makes it allocate 96 GiB for
 * their objects before it finds out that the body has 20 bytes. So no body
 * reaches msgpack-c before body_scan() has walked it once, iteratively, and
 * found exactly one well-formed map, nested at most BODY_DEPTH_MAX deep,
 * every length within the bytes left. smq_head_parse() runs the same scan,
 * so a body it passes is readable msgpack (an error there is bad_frame) and
 * what a decoder rejects afterwards is a field (bad_request).
 *
 * Memory is then bounded by the input: msgpack-c allocates one 24-byte
 * msgpack_object per value, and every value takes at least one byte of the
 * body, so a body of n bytes costs at most 24n bytes while it is decoded
 * (the worst case is an array of one-byte integers), plus what the decoder
 * keeps: at most 4 bytes per token id and, for STATS rows, twice the rows
 * that validated.
 */
#include "proto.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

/* msgpack-c's unpacker keeps a fixed stack of 32 open containers
 * (MSGPACK_EMBED_STACK_SIZE, compiled into the library); ours is no deeper,
 * so anything the scan passes, msgpack-c can unpack (proto_test checks). */
#define BODY_DEPTH_MAX 32

/* In smq_cmd order. */
static const char *const cmd_names[] = { "?",     "CHAT",      "CANCEL", "TOKEN", "DONE",
                                         "ERROR", "HEARTBEAT", "STATS",  "READY", "DISCONNECT" };
#define N_CMDS (sizeof cmd_names / sizeof cmd_names[0])
_Static_assert(N_CMDS == SMQ_CMD_DISCONNECT + 1, "a name for every command");

const char *smq_cmd_name(smq_cmd c)
{
    return (unsigned)c < N_CMDS ? cmd_names[c] : "?";
}

/* On the worker hop the commands about one job carry its id frame. */
static int has_job_frame(smq_cmd c, smq_hop hop)
{
    return hop == SMQ_HOP_WORKER &&
           (c == SMQ_CMD_CHAT || c == SMQ_CMD_CANCEL || c == SMQ_CMD_TOKEN || c == SMQ_CMD_DONE || c == SMQ_CMD_ERROR);
}

/* s[0..n) quoted for an error message: at most 32 bytes, the bytes that are
 * not printable ASCII as \xNN. out needs 1 + 32*4 + 1 + 3 + 1 bytes. */
#define QUOTE_MAX 140
static const char *quote(const void *s, size_t n, char *out)
{
    const unsigned char *p = s;
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < n && i < 32; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            out[o++] = (char)p[i];
        else
            o += (size_t)snprintf(out + o, 5, "\\x%02x", p[i]);
    }
    out[o++] = '"';
    if (n > 32) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = 0;
    return out;
}

static uint64_t load_be(const uint8_t *p, int k)
{
    uint64_t v = 0;
    for (int i = 0; i < k; i++)
        v = v << 8 | p[i];
    return v;
}

void smq_job_put(uint64_t job, uint8_t out[8])
{
    for (int i = 7; i >= 0; i--, job >>= 8)
        out[i] = (uint8_t)job;
}

/* ---- the structural scan ---- */

/* What a msgpack marker byte starts, for "got ..." in messages. */
static const char *marker_name(uint8_t b)
{
    static const char *const c0_df[32] = { "nil", "0xc1", "bool",  "bool",  "bin",   "bin",   "bin", "ext",
                                           "ext", "ext",  "float", "float", "int",   "int",   "int", "int",
                                           "int", "int",  "int",   "int",   "ext",   "ext",   "ext", "ext",
                                           "ext", "str",  "str",   "str",   "array", "array", "map", "map" };
    if (b <= 0x7f || b >= 0xe0)
        return "int";
    if (b >= 0xc0)
        return c0_df[b - 0xc0];
    return b <= 0x8f ? "map" : b <= 0x9f ? "array" : "str";
}

/* Checks that p[0..n) is exactly one msgpack map and nothing after it,
 * without recursion: left[] holds, for each open array or map, how many
 * values it still has to come (a map of k pairs has 2k). A count is checked
 * against the bytes left before anything trusts it: every value takes at
 * least one byte. */
static int body_scan(const uint8_t *p, size_t n, smq_err *err)
{
    if (n == 0)
        return smq_err_set(err, "empty, not a msgpack map");
    if (n > SMQ_BODY_MAX)
        return smq_err_set(err, "%zu bytes, more than the limit of %u", n, SMQ_BODY_MAX);
    if (!(p[0] >= 0x80 && p[0] <= 0x8f) && p[0] != 0xde && p[0] != 0xdf)
        return smq_err_set(err, "not a msgpack map (got %s)", marker_name(p[0]));
    uint64_t left[BODY_DEPTH_MAX];
    int depth = 0;
    size_t pos = 0;
    do {
        if (pos == n)
            return smq_err_set(err, "truncated: %zu bytes end inside a map or array", n);
        uint8_t b = p[pos];
        size_t head = 1; /* the marker, a length or count, ext's type byte */
        int len_bytes = 0;
        uint64_t payload = 0, count = 0;
        int container = 0, pairs = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool: the marker is all */
        } else if (b <= 0x8f) {
            container = pairs = 1, count = b & 0x0f;
        } else if (b <= 0x9f) {
            container = 1, count = b & 0x0f;
        } else if (b <= 0xbf) {
            payload = b & 0x1f;
        } else if (b >= 0xc4 && b <= 0xc6) { /* bin 8/16/32 */
            len_bytes = 1 << (b - 0xc4), head = 1 + (size_t)len_bytes;
        } else if (b >= 0xc7 && b <= 0xc9) { /* ext 8/16/32 */
            len_bytes = 1 << (b - 0xc7), head = 2 + (size_t)len_bytes;
        } else if (b == 0xca || b == 0xcb) {
            head = b == 0xca ? 5 : 9;
        } else if (b >= 0xcc && b <= 0xd3) { /* uint and int 8/16/32/64 */
            head = 1 + ((size_t)1 << ((b - 0xcc) & 3));
        } else if (b >= 0xd4 && b <= 0xd8) { /* fixext 1/2/4/8/16 */
            head = 2, payload = (uint64_t)1 << (b - 0xd4);
        } else if (b >= 0xd9 && b <= 0xdb) { /* str 8/16/32 */
            len_bytes = 1 << (b - 0xd9), head = 1 + (size_t)len_bytes;
        } else if (b == 0xdc || b == 0xdd) { /* array 16/32 */
            container = 1, len_bytes = 2 << (b - 0xdc), head = 1 + (size_t)len_bytes;
        } else if (b == 0xde || b == 0xdf) { /* map 16/32 */
            container = pairs = 1, len_bytes = 2 << (b - 0xde), head = 1 + (size_t)len_bytes;
        } else {
            return smq_err_set(err, "at byte %zu: 0xc1 is not msgpack", pos);
        }
        if (head > n - pos)
            return smq_err_set(err, "truncated: the %s at byte %zu needs %zu bytes, %zu are left", marker_name(b), pos,
                               head, n - pos);
        if (len_bytes) {
            uint64_t v = load_be(p + pos + 1, len_bytes);
            *(container ? &count : &payload) = v;
        }
        if (container) {
            if (depth == BODY_DEPTH_MAX)
                return smq_err_set(err, "at byte %zu: maps and arrays nested deeper than %d", pos, BODY_DEPTH_MAX);
            if ((pairs ? 2 * count : count) > n - pos - head)
                return smq_err_set(err, "at byte %zu: %s of %" PRIu64 " %s cannot fit in the %zu bytes left", pos,
                                   pairs ? "a map" : "an array", count, pairs ? "pairs" : "elements", n - pos - head);
            pos += head;
            if (count) {
                left[depth++] = pairs ? 2 * count : count;
                continue;
            }
        } else {
            if (payload > n - pos - head)
                return smq_err_set(err, "truncated: the %s at byte %zu has %" PRIu64 " bytes, %zu are left",
                                   marker_name(b), pos, payload, n - pos - head);
            pos += head + (size_t)payload;
        }
        /* One value done: it may complete its container, and that its own. */
        while (depth > 0 && --left[depth - 1] == 0)
            depth--;
    } while (depth > 0);
    if (pos != n)
        return smq_err_set(err, "%zu bytes after the map", n - pos);
    return 0;
}

/* ---- frames ---- */

int smq_head_parse(const smq_frame *f, size_t n, smq_hop hop, smq_head *h, const char **code, smq_err *err)
{
    const char *code_unused;
    char q[QUOTE_MAX];
    if (!code)
        code = &code_unused;
    memset(h, 0, sizeof *h);
    *code = SMQ_E_BAD_FRAME;
    if (n == 0)
        return smq_err_set(err, "an empty message (a message has 3 or 4 frames: header, command, [job id,] body)");
    /* The header first: a peer of another version ("SMQ/" and a short
     * version word) gets told so whatever else its frames say. */
    if (f[0].size != SMQ_HEADER_LEN || memcmp(f[0].data, SMQ_HEADER, SMQ_HEADER_LEN)) {
        if (f[0].size >= 5 && f[0].size <= 16 && !memcmp(f[0].data, "SMQ/", 4)) {
            *code = SMQ_E_VERSION;
            return smq_err_set(err, "frame 0: version %s is not spoken here (this peer speaks " SMQ_HEADER ")",
                               quote(f[0].data, f[0].size, q));
        }
        return smq_err_set(err, "frame 0: header %s is not \"" SMQ_HEADER "\"", quote(f[0].data, f[0].size, q));
    }
    if (n < 2)
        return smq_err_set(err, "1 frame (a message has 3 or 4: header, command, [job id,] body)");
    smq_cmd cmd = SMQ_CMD_NONE;
    for (size_t c = 1; c < N_CMDS; c++)
        if (f[1].size == strlen(cmd_names[c]) && !memcmp(f[1].data, cmd_names[c], f[1].size))
            cmd = (smq_cmd)c;
    if (cmd == SMQ_CMD_NONE)
        return smq_err_set(err, "frame 1: unknown command %s", quote(f[1].data, f[1].size, q));
    int job = has_job_frame(cmd, hop);
    size_t want = job ? 4 : 3;
    if (n != want)
        return smq_err_set(err, "%s on the %s hop has %zu frames (header, command, %sbody), not %zu", cmd_names[cmd],
                           hop == SMQ_HOP_WORKER ? "worker" : "client", want, job ? "job id, " : "", n);
    if (job) {
        if (f[2].size != 8)
            return smq_err_set(err, "frame 2: the job id is %zu bytes, not 8", f[2].size);
        h->job = load_be(f[2].data, 8);
    }
    const smq_frame *body = &f[want - 1];
    if (body_scan(body->data, body->size, err))
        return smq_err_prefix(err, "frame %zu: body", want - 1);
    h->cmd = cmd;
    h->body = body->data;
    h->body_len = body->size;
    *code = NULL;
    return 0;
}

/* ---- bodies: one table of fields per body, read and written ---- */

/* The reader's state: msgpack-c's tree, and the key path being read, for
 * messages ("messages[2].content"). */
typedef struct dec {
    smq_err *err;
    msgpack_unpacked u;
    char path[192];
    size_t len;
} dec;

/* The writer's state: failures are collected in rc, and a failed body is
 * cut off again, leaving the buffer as it was. */
typedef struct enc {
    msgpack_packer pk;
    int rc;
} enc;

/* A body is a map, and each key it can hold is a field: its type, whether
 * it is required, where its value lives in the C struct, its limits. The
 * decoder checks and stores every field of the table; the encoder writes
 * those that are required or say something: strings that are not NULL,
 * optional uints that are not 0, floats and bools that differ from their
 * default, optional durations >= 0, arrays with entries; a field's given()
 * decides instead where that rule does not fit. So a body decodes to what
 * was encoded, by construction. */
typedef enum kind { K_STR, K_U32, K_U64, K_F32, K_F64, K_BOOL, K_MAP, K_ARRAY } kind;

typedef struct str_rule {
    uint32_t min, max;
    int text;                  /* U+0000 allowed (text for people and models, not names) */
    const char *const *one_of; /* NULL-terminated, or NULL for any string */
    const char *one_of_text;
} str_rule;

typedef struct num_rule {
    double lo, hi;
    int lo_open; /* lo itself is out */
    const char *range;
} num_rule;

typedef struct field field;
struct field {
    const char *key;
    kind kind;
    int required;
    size_t off;                   /* of the value in the struct */
    const str_rule *str;          /* K_STR */
    uint64_t lo, hi;              /* K_U32, K_U64: the range; K_ARRAY: of the count */
    const num_rule *num;          /* K_F32, K_F64 */
    double def;                   /* K_F32, K_BOOL: the default */
    const field *sub;             /* K_MAP: the fields of the struct at off; K_ARRAY: one entry */
    size_t n_sub;                 /* K_MAP */
    size_t size, count_off;       /* K_ARRAY: an entry's size; where its uint32_t count is */
    int in_place;                 /* K_ARRAY: the entries are in the struct (hi of them), not malloc'd */
    int (*given)(const void *st); /* whether to write it, where the rule above does not say */
};

// clang-format off
#define N(a) (sizeof(a) / sizeof((a)[0]))
/* Table entries; offsets are into the struct T that the table fills. */
#define NUM(lo, hi, lo_open, text) (&(const num_rule){ lo, hi, lo_open, text })
#define F_STR(k, req, T, m, rule) { .key = k, .kind = K_STR, .required = req, .off = offsetof(T, m), .str = rule }
#define F_U32(k, req, T, m, l, h) { .key = k, .kind = K_U32, .required = req, .off = offsetof(T, m), .lo = l, .hi = h }
#define F_U64(k, req, T, m) { .key = k, .kind = K_U64, .required = req, .off = offsetof(T, m), .hi = UINT64_MAX }
#define F_F32(k, T, m, d, rule) { .key = k, .kind = K_F32, .off = offsetof(T, m), .num = rule, .def = d }
#define F_F64(k, req, T, m) { .key = k, .kind = K_F64, .required = req, .off = offsetof(T, m), .num = &R_MS }
#define F_BOOL(k, T, m, d) { .key = k, .kind = K_BOOL, .off = offsetof(T, m), .def = d }
#define F_MAP(k, T, m, fields) \
    { .key = k, .kind = K_MAP, .required = 1, .off = offsetof(T, m), .sub = fields, .n_sub = N(fields) }
#define F_ARRAY(k, req, T, m, count, l, h, in_pl, entry) \
    { .key = k, .kind = K_ARRAY, .required = req, .off = offsetof(T, m), .count_off = offsetof(T, count), \
      .lo = l, .hi = h, .in_place = in_pl, .size = sizeof(*((T *)0)->m), .sub = entry }
/* An array's entry: one field at offset 0 of the entry. */
#define ENTRY(...) (&(const field){ __VA_ARGS__ })
// clang-format on

static const char *const roles[] = { "system", "user", "assistant", "tool", NULL };
static const char *const finishes[] = { "eog", "stop_string", "length", "context_full", "cancelled", NULL };
static const char *const backends[] = { "cpu", "cuda", NULL };

static const str_rule R_ID = { 1, SMQ_ID_MAX, 0, NULL, NULL };
static const str_rule R_NAME = { 1, SMQ_NAME_MAX, 0, NULL, NULL };
static const str_rule R_LABEL = { 0, SMQ_NAME_MAX, 0, NULL, NULL }; /* a worker's name, for people */
static const str_rule R_WORD = { 1, UINT32_MAX, 0, NULL, NULL };    /* error codes: later versions add some */
static const str_rule R_ANY = { 0, UINT32_MAX, 0, NULL, NULL };
static const str_rule R_TEXT = { 0, UINT32_MAX, 1, NULL, NULL };
static const str_rule R_CONTENT = { 0, SMQ_CONTENT_MAX, 1, NULL, NULL };
static const str_rule R_STOP = { 1, SMQ_STOP_LEN_MAX, 1, NULL, NULL };
static const str_rule R_ROLE = { 1, 16, 0, roles, "system, user, assistant, tool" };
static const str_rule R_FINISH = { 1, 16, 0, finishes, "eog, stop_string, length, context_full, cancelled" };
static const str_rule R_BACKEND = { 1, 16, 0, backends, "cpu, cuda" };
static const num_rule R_MS = { 0, DBL_MAX, 0, ">= 0" }; /* durations and rates */

/* ---- reading ---- */

static int dec_fail(dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int dec_fail(dec *d, const char *fmt, ...)
{
    char what[SMQ_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return smq_err_set(d->err, "%s: %s", d->len ? d->path : "body", what);
}

/* Appends to the path; returns its old length, for dec_pop. */
static size_t dec_push(dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t dec_push(dec *d, const char *fmt, ...)
{
    size_t at = d->len, room = sizeof d->path - d->len;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(d->path + d->len, room, fmt, ap);
    va_end(ap);
    if (k > 0)
        d->len += (size_t)k < room ? (size_t)k : room - 1;
    return at;
}

static void dec_pop(dec *d, size_t at)
{
    d->len = at;
    d->path[at] = 0;
}

static const char *obj_type(const msgpack_object *o)
{
    static const char *const names[] = { "nil",   "bool", "int", "int", "float", "str",
                                         "array", "map",  "bin", "ext", "float" }; /* by msgpack_object_type */
    return (unsigned)o->type < N(names) ? names[o->type] : "?";
}

static int get_str(dec *d, const msgpack_object *v, const str_rule *r, smq_str *out)
{
    if (v->type != MSGPACK_OBJECT_STR)
        return dec_fail(d, "not a string (got %s)", obj_type(v));
    const char *p = v->via.str.ptr ? v->via.str.ptr : "";
    uint32_t n = v->via.str.size;
    for (uint32_t i = 0; i < n;) {
        uint32_t cp;
        int k = utf8_next(p + i, n - i, &cp);
        if (!k)
            return dec_fail(d, "not valid UTF-8 (at byte %" PRIu32 ")", i);
        if (cp == 0 && !r->text)
            return dec_fail(d, "holds U+0000 (at byte %" PRIu32 ")", i);
        i += (uint32_t)k;
    }
    if (n < r->min || n > r->max)
        return dec_fail(d, "%" PRIu32 " bytes, want %" PRIu32 "-%" PRIu32, n, r->min, r->max);
    const char *const *c = r->one_of;
    while (c && *c && !(strlen(*c) == n && !memcmp(*c, p, n)))
        c++;
    char q[QUOTE_MAX];
    if (c && !*c)
        return dec_fail(d, "%s is not one of %s", quote(p, n, q), r->one_of_text);
    out->p = p;
    out->n = n;
    return 0;
}

/* A uint takes only a non-negative integer. */
static int get_uint(dec *d, const msgpack_object *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return dec_fail(d, "%" PRId64 " is out of range %" PRIu64 "-%" PRIu64, v->via.i64, lo, hi);
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return dec_fail(d, "not an integer (got %s)", obj_type(v));
    if (v->via.u64 < lo || v->via.u64 > hi)
        return dec_fail(d, "%" PRIu64 " is out of range %" PRIu64 "-%" PRIu64, v->via.u64, lo, hi);
    *out = v->via.u64;
    return 0;
}

/* A float takes an integer or a float. as_float: the value is kept as a C
 * float, so the range is checked on what is kept (1e-50 for top_p would
 * become 0, which would re-encode as an invalid request). */
static int get_num(dec *d, const msgpack_object *v, const num_rule *r, int as_float, double *out)
{
    double x;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        x = (double)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        x = (double)v->via.i64;
    else if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
        x = v->via.f64;
    else
        return dec_fail(d, "not a number (got %s)", obj_type(v));
    int fits = !as_float || fabs(x) <= FLT_MAX;
    double kept = as_float && fits ? (double)(float)x : x;
    if (!fits || !(kept >= r->lo && kept <= r->hi) || (r->lo_open && kept == r->lo)) {
        char num[32]; /* the shortest form that reads back: what the sender wrote */
        snprintf(num, sizeof num, "%.15g", x);
        if (strtod(num, NULL) != x)
            snprintf(num, sizeof num, "%.17g", x);
        return dec_fail(d, "%s is out of range %s", num, r->range);
    }
    *out = kept;
    return 0;
}

static int key_cmp(const void *a, const void *b)
{
    const msgpack_object *x = *(const msgpack_object *const *)a, *y = *(const msgpack_object *const *)b;
    if (x->via.str.size != y->via.str.size)
        return x->via.str.size < y->via.str.size ? -1 : 1;
    return memcmp(x->via.str.ptr, y->via.str.ptr, x->via.str.size);
}

/* Duplicate keys, found by sorting pointers to them: a hostile map of a
 * million keys must not cost a million squared comparisons. */
static int check_duplicates(dec *d, const msgpack_object_kv *kv, uint32_t n)
{
    const msgpack_object *small[32], **keys = small;
    if (n < 2)
        return 0;
    if (n > N(small) && !(keys = malloc(n * sizeof *keys)))
        return dec_fail(d, "out of memory");
    for (uint32_t i = 0; i < n; i++)
        keys[i] = &kv[i].key;
    qsort(keys, n, sizeof *keys, key_cmp);
    int rc = 0;
    for (uint32_t i = 1; i < n && !rc; i++) {
        if (key_cmp(&keys[i - 1], &keys[i]))
            continue;
        /* Name it: at most 48 bytes, cut at a character, controls as '?'. */
        char name[49];
        const char *k = keys[i]->via.str.ptr;
        uint32_t len = keys[i]->via.str.size < 48 ? keys[i]->via.str.size : 48;
        while (len < keys[i]->via.str.size && len > 0 && (k[len] & 0xC0) == 0x80)
            len--;
        for (uint32_t j = 0; j < len; j++)
            name[j] = (unsigned char)k[j] < 0x20 || k[j] == 0x7f ? '?' : k[j];
        name[len] = 0;
        dec_push(d, d->len ? ".%s" : "%s", name);
        rc = dec_fail(d, "given twice");
    }
    if (keys != small)
        free(keys);
    return rc;
}

static int get_value(dec *d, const field *f, const msgpack_object *v, void *st);

/* Reads map o into the struct st by the table f[0..nf): every key a string
 * of valid UTF-8, none twice, every required one there, every known one
 * valid. Unknown keys are ignored, values and all (a later minor version
 * may add them); a nil value is "not given". Bit j of *present says
 * whether field j was given. */
static int read_map(dec *d, const msgpack_object *o, const field *f, size_t nf, void *st, uint32_t *present)
{
    const msgpack_object *vals[32] = { 0 };
    if (o->type != MSGPACK_OBJECT_MAP)
        return dec_fail(d, "not a map (got %s)", obj_type(o));
    const msgpack_object_kv *kv = o->via.map.ptr;
    uint32_t n = o->via.map.size;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &kv[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return dec_fail(d, "key %" PRIu32 " is not a string (got %s)", i, obj_type(k));
        if (!utf8_valid(k->via.str.ptr, k->via.str.size, 1))
            return dec_fail(d, "key %" PRIu32 " is not valid UTF-8", i);
    }
    if (check_duplicates(d, kv, n))
        return -1;
    for (uint32_t i = 0; i < n; i++)
        for (size_t j = 0; j < nf; j++)
            if (kv[i].key.via.str.size == strlen(f[j].key) &&
                !memcmp(kv[i].key.via.str.ptr, f[j].key, kv[i].key.via.str.size))
                vals[j] = kv[i].val.type == MSGPACK_OBJECT_NIL ? NULL : &kv[i].val;
    uint32_t given = 0;
    for (size_t j = 0; j < nf; j++) {
        size_t at = dec_push(d, d->len ? ".%s" : "%s", f[j].key);
        if (!vals[j] && f[j].required)
            return dec_fail(d, "missing");
        if (vals[j] && get_value(d, &f[j], vals[j], st))
            return -1;
        given |= vals[j] ? 1u << j : 0;
        dec_pop(d, at);
    }
    if (present)
        *present = given;
    return 0;
}

/* An array's entries go in place, or into a malloc'd block grown as they
 * validate: a count of a million empty maps costs their msgpack objects,
 * not a million rows allocated up front. The count says how many entries
 * are stored, also when one fails (the caller frees the block). */
static int get_array(dec *d, const field *f, const msgpack_object *v, void *st)
{
    char *at = (char *)st + f->off, *rows = f->in_place ? at : NULL;
    uint32_t *count = (uint32_t *)((char *)st + f->count_off), cap = f->in_place ? (uint32_t)f->hi : 0;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return dec_fail(d, "not an array (got %s)", obj_type(v));
    if (v->via.array.size < f->lo || v->via.array.size > f->hi)
        return dec_fail(d, "%" PRIu32 " entries, want %" PRIu64 "-%" PRIu64, v->via.array.size, f->lo, f->hi);
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        if (i == cap) {
            cap = cap ? 2 * cap : 4;
            char *p = realloc(rows, (size_t)cap * f->size);
            if (!p)
                return dec_fail(d, "out of memory");
            rows = p;
            memcpy(at, &rows, sizeof rows); /* the struct's pointer to its entries */
        }
        memset(rows + i * f->size, 0, f->size);
        size_t at_i = dec_push(d, "[%" PRIu32 "]", i);
        if (get_value(d, f->sub, &v->via.array.ptr[i], rows + i * f->size))
            return -1;
        dec_pop(d, at_i);
        *count = i + 1;
    }
    return 0;
}

static int get_value(dec *d, const field *f, const msgpack_object *v, void *st)
{
    void *at = (char *)st + f->off;
    uint64_t u;
    double x;
    switch (f->kind) {
    case K_STR:
        return get_str(d, v, f->str, at);
    case K_U32:
        if (get_uint(d, v, f->lo, f->hi, &u))
            return -1;
        *(uint32_t *)at = (uint32_t)u;
        return 0;
    case K_U64:
        return get_uint(d, v, f->lo, f->hi, at);
    case K_F32:
        if (get_num(d, v, f->num, 1, &x))
            return -1;
        *(float *)at = (float)x;
        return 0;
    case K_F64:
        return get_num(d, v, f->num, 0, at);
    case K_BOOL:
        if (v->type != MSGPACK_OBJECT_BOOLEAN)
            return dec_fail(d, "not a bool (got %s)", obj_type(v));
        *(int *)at = v->via.boolean ? 1 : 0;
        return 0;
    case K_MAP:
        return read_map(d, v, f->sub, f->n_sub, at, NULL);
    case K_ARRAY:
        return get_array(d, f, v, st);
    }
    return -1;
}

/* Scans the body, lets msgpack-c unpack it, and reads its map into st. */
static int decode(const void *body, size_t n, smq_err *err, const field *f, size_t nf, void *st, uint32_t *present)
{
    dec d = { .err = err };
    msgpack_unpacked_init(&d.u);
    int rc = 0;
    size_t off = 0;
    if (body_scan(body, n, err))
        rc = smq_err_prefix(err, "body");
    else if (msgpack_unpack_next(&d.u, body, n, &off) != MSGPACK_UNPACK_SUCCESS || off != n)
        rc = smq_err_set(err, "body: msgpack-c cannot unpack it (out of memory)");
    else
        rc = read_map(&d, &d.u.data, f, nf, st, present);
    msgpack_unpacked_destroy(&d.u);
    return rc;
}

/* Whether the field named key was given, from read_map's bits. */
static int was_given(uint32_t present, const field *f, size_t nf, const char *key)
{
    for (size_t j = 0; j < nf; j++)
        if (!strcmp(f[j].key, key))
            return (present >> j) & 1;
    return 0;
}

/* ---- writing ---- */

/* msgpack-c's write callback: appends to the smq_buf, doubling it. */
static int buf_write(void *data, const char *p, size_t n)
{
    smq_buf *b = data;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        char *q = realloc(b->data, cap);
        if (!q)
            return -1;
        b->data = q;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static uint32_t array_count(const field *f, const void *st)
{
    uint32_t n = *(const uint32_t *)((const char *)st + f->count_off);
    return f->in_place && n > f->hi ? (uint32_t)f->hi : n;
}

static int field_given(const field *f, const void *st)
{
    const char *at = (const char *)st + f->off;
    if (f->given)
        return f->given(st);
    if (f->required)
        return 1;
    switch (f->kind) {
    case K_STR:
        return ((const smq_str *)at)->p != NULL;
    case K_U32:
        return *(const uint32_t *)at != 0;
    case K_U64:
        return *(const uint64_t *)at != 0;
    case K_F32:
        return *(const float *)at != (float)f->def;
    case K_F64:
        return *(const double *)at >= 0;
    case K_BOOL:
        return !*(const int *)at != !f->def;
    case K_ARRAY:
        return array_count(f, st) > 0;
    default:
        return 1;
    }
}

static void put_map(enc *e, const field *f, size_t nf, const void *st);

static void put_value(enc *e, const field *f, const void *st)
{
    const char *at = (const char *)st + f->off;
    const smq_str *s = (const smq_str *)at;
    switch (f->kind) {
    case K_STR:
        e->rc |= msgpack_pack_str_with_body(&e->pk, s->p ? s->p : "", s->p ? s->n : 0);
        break;
    case K_U32:
        e->rc |= msgpack_pack_uint32(&e->pk, *(const uint32_t *)at);
        break;
    case K_U64:
        e->rc |= msgpack_pack_uint64(&e->pk, *(const uint64_t *)at);
        break;
    case K_F32: /* as msgpack float32: exactly the value the struct holds */
        e->rc |= msgpack_pack_float(&e->pk, *(const float *)at);
        break;
    case K_F64:
        e->rc |= msgpack_pack_double(&e->pk, *(const double *)at);
        break;
    case K_BOOL:
        e->rc |= *(const int *)at ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk);
        break;
    case K_MAP:
        put_map(e, f->sub, f->n_sub, at);
        break;
    case K_ARRAY: {
        const char *rows = at;
        uint32_t n = array_count(f, st);
        if (!f->in_place)
            memcpy(&rows, at, sizeof rows);
        e->rc |= msgpack_pack_array(&e->pk, n);
        for (uint32_t i = 0; i < n; i++)
            put_value(e, f->sub, rows + i * f->size);
        break;
    }
    }
}

/* Writes the struct st as a map of the fields it gives. */
static void put_map(enc *e, const field *f, size_t nf, const void *st)
{
    uint32_t n = 0;
    for (size_t j = 0; j < nf; j++)
        n += (uint32_t)field_given(&f[j], st);
    e->rc |= msgpack_pack_map(&e->pk, n);
    for (size_t j = 0; j < nf; j++) {
        if (!field_given(&f[j], st))
            continue;
        e->rc |= msgpack_pack_str_with_body(&e->pk, f[j].key, strlen(f[j].key));
        put_value(e, &f[j], st);
    }
}

static int encode(smq_buf *b, const field *f, size_t nf, const void *st)
{
    size_t start = b->len;
    enc e = { .rc = 0 };
    msgpack_packer_init(&e.pk, b, buf_write);
    put_map(&e, f, nf, st);
    if (e.rc)
        b->len = start;
    return e.rc ? -1 : 0;
}

void smq_buf_reset(smq_buf *b)
{
    b->len = 0;
}

void smq_buf_free(smq_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- CHAT ---- */

static const field message_fields[] = {
    F_STR("role", 1, smq_chat_msg, role, &R_ROLE),
    F_STR("content", 1, smq_chat_msg, content, &R_CONTENT),
};

/* Any uint64 is a seed, so whether one was given is a flag of its own. */
static int given_seed(const void *st)
{
    return ((const smq_chat *)st)->has_seed != 0;
}

/* The defaults are here once: smq_chat_init sets them, the encoder leaves
 * out what equals them. */
static const field chat_fields[] = {
    F_STR("id", 1, smq_chat, id, &R_ID),
    F_STR("model", 0, smq_chat, model, &R_NAME),
    F_ARRAY("messages", 1, smq_chat, messages, n_messages, 1, SMQ_MESSAGES_MAX, 0,
            ENTRY(.kind = K_MAP, .sub = message_fields, .n_sub = N(message_fields))),
    F_U32("max_tokens", 0, smq_chat, max_tokens, 1, UINT32_MAX),
    F_F32("temperature", smq_chat, temperature, 0.6, NUM(0, 2, 0, "0-2")),
    F_F32("top_p", smq_chat, top_p, 0.95, NUM(0, 1, 1, "(0, 1]")),
    F_U32("top_k", 0, smq_chat, top_k, 0, UINT32_MAX),
    F_F32("min_p", smq_chat, min_p, 0, NUM(0, 1, 0, "0-1")),
    F_F32("repeat_penalty", smq_chat, repeat_penalty, 1, NUM(0, FLT_MAX, 1, "> 0")),
    F_F32("presence_penalty", smq_chat, presence_penalty, 0, NUM(-2, 2, 0, "-2 to 2")),
    F_F32("frequency_penalty", smq_chat, frequency_penalty, 0, NUM(-2, 2, 0, "-2 to 2")),
    { .key = "seed", .kind = K_U64, .off = offsetof(smq_chat, seed), .hi = UINT64_MAX, .given = given_seed },
    F_ARRAY("stop", 0, smq_chat, stop, n_stop, 0, SMQ_STOP_MAX, 1, ENTRY(.kind = K_STR, .str = &R_STOP)),
    F_BOOL("thinking", smq_chat, thinking, 1),
    F_STR("affinity", 0, smq_chat, affinity, &R_NAME),
    F_U32("queue_timeout_ms", 0, smq_chat, queue_timeout_ms, 0, UINT32_MAX),
    F_F64("queued_ms", 0, smq_chat, queued_ms),
};

void smq_chat_init(smq_chat *c)
{
    memset(c, 0, sizeof *c);
    for (size_t j = 0; j < N(chat_fields); j++) {
        const field *f = &chat_fields[j];
        if (f->kind == K_F32)
            *(float *)((char *)c + f->off) = (float)f->def;
        else if (f->kind == K_BOOL)
            *(int *)((char *)c + f->off) = (int)f->def;
    }
    c->queued_ms = -1;
}

int smq_chat_decode(smq_chat *c, const void *body, size_t n, smq_err *err)
{
    uint32_t present;
    smq_chat_init(c);
    if (decode(body, n, err, chat_fields, N(chat_fields), c, &present)) {
        smq_chat_free(c);
        return -1;
    }
    c->has_seed = was_given(present, chat_fields, N(chat_fields), "seed");
    return 0;
}

void smq_chat_free(smq_chat *c)
{
    free(c->messages);
    c->messages = NULL;
    c->n_messages = 0;
}

int smq_chat_encode(smq_buf *b, const smq_chat *c)
{
    return encode(b, chat_fields, N(chat_fields), c);
}

/* ---- bodies of one string: CANCEL {id}, DISCONNECT {reason?} ---- */

static const field cancel_fields[] = { { .key = "id", .kind = K_STR, .required = 1, .str = &R_ID } };
static const field disconnect_fields[] = { { .key = "reason", .kind = K_STR, .str = &R_ANY } };

int smq_cancel_decode(smq_str *id, const void *body, size_t n, smq_err *err)
{
    memset(id, 0, sizeof *id);
    return decode(body, n, err, cancel_fields, 1, id, NULL);
}

int smq_cancel_encode(smq_buf *b, const char *id, size_t id_len)
{
    smq_str s = { id ? id : "", (uint32_t)id_len };
    return encode(b, cancel_fields, 1, &s);
}

int smq_disconnect_decode(smq_str *reason, const void *body, size_t n, smq_err *err)
{
    memset(reason, 0, sizeof *reason);
    return decode(body, n, err, disconnect_fields, 1, reason, NULL);
}

int smq_disconnect_encode(smq_buf *b, const char *reason)
{
    smq_str s = { reason, reason ? (uint32_t)strlen(reason) : 0 };
    return encode(b, disconnect_fields, 1, &s);
}

int smq_empty_encode(smq_buf *b)
{
    return encode(b, NULL, 0, NULL);
}

/* ---- TOKEN, DONE, ERROR ---- */

static const field token_fields[] = {
    F_STR("id", 1, smq_token, id, &R_ID),
    F_U64("seq", 1, smq_token, seq),
    F_ARRAY("tokens", 1, smq_token, tokens, n_tokens, 0, UINT32_MAX, 0, ENTRY(.kind = K_U32, .hi = INT32_MAX)),
    F_STR("reasoning", 0, smq_token, reasoning, &R_TEXT),
    F_STR("content", 0, smq_token, content, &R_TEXT),
};

int smq_token_decode(smq_token *t, const void *body, size_t n, smq_err *err)
{
    memset(t, 0, sizeof *t);
    if (decode(body, n, err, token_fields, N(token_fields), t, NULL)) {
        smq_token_free(t);
        return -1;
    }
    if (!t->reasoning.p)
        t->reasoning.p = "";
    if (!t->content.p)
        t->content.p = "";
    return 0;
}

void smq_token_free(smq_token *t)
{
    free((void *)t->tokens);
    t->tokens = NULL;
    t->n_tokens = 0;
}

int smq_token_encode(smq_buf *b, const smq_token *t)
{
    /* "" goes as absent: a step with no text of one kind says nothing. */
    smq_token s = *t;
    if (!s.reasoning.n)
        s.reasoning.p = NULL;
    if (!s.content.n)
        s.content.p = NULL;
    return encode(b, token_fields, N(token_fields), &s);
}

static const field usage_fields[] = {
    F_U32("prompt_tokens", 1, smq_usage, prompt_tokens, 0, UINT32_MAX),
    F_U32("completion_tokens", 1, smq_usage, completion_tokens, 0, UINT32_MAX),
    F_U32("cached_tokens", 1, smq_usage, cached_tokens, 0, UINT32_MAX),
    F_U32("reasoning_tokens", 0, smq_usage, reasoning_tokens, 0, UINT32_MAX),
};

static const field timings_fields[] = {
    F_F64("queue_ms", 1, smq_timings, queue_ms),
    F_F64("ttft_ms", 1, smq_timings, ttft_ms),
    F_F64("total_ms", 1, smq_timings, total_ms),
    F_F64("decode_tps", 1, smq_timings, decode_tps),
};

static const field done_fields[] = {
    F_STR("id", 1, smq_done, id, &R_ID),
    F_U64("seq", 1, smq_done, seq),
    F_STR("finish", 1, smq_done, finish, &R_FINISH),
    F_MAP("usage", smq_done, usage, usage_fields),
    F_MAP("timings", smq_done, timings, timings_fields),
};

int smq_done_decode(smq_done *o, const void *body, size_t n, smq_err *err)
{
    memset(o, 0, sizeof *o);
    return decode(body, n, err, done_fields, N(done_fields), o, NULL);
}

int smq_done_encode(smq_buf *b, const smq_done *d)
{
    return encode(b, done_fields, N(done_fields), d);
}

/* An ERROR that ends a request (it has an id) carries its seq; one that
 * ends none has neither. */
static int given_error_seq(const void *st)
{
    return ((const smq_error *)st)->id.p != NULL;
}

static const field error_fields[] = {
    F_STR("id", 0, smq_error, id, &R_ID),
    { .key = "seq", .kind = K_U64, .off = offsetof(smq_error, seq), .hi = UINT64_MAX, .given = given_error_seq },
    F_STR("code", 1, smq_error, code, &R_WORD),
    F_STR("message", 1, smq_error, message, &R_TEXT),
};

int smq_error_decode(smq_error *e, const void *body, size_t n, smq_err *err)
{
    uint32_t present;
    memset(e, 0, sizeof *e);
    if (decode(body, n, err, error_fields, N(error_fields), e, &present))
        return -1;
    if (e->id.p && !was_given(present, error_fields, N(error_fields), "seq"))
        return smq_err_set(err, "seq: missing (an ERROR with an id carries its seq)");
    return 0;
}

int smq_error_encode(smq_buf *b, const smq_error *e)
{
    return encode(b, error_fields, N(error_fields), e);
}

/* ---- worker bodies: READY, HEARTBEAT ---- */

static const field ready_fields[] = {
    F_STR("model", 1, smq_ready, model, &R_NAME),       F_U32("capacity", 1, smq_ready, capacity, 1, SMQ_CAPACITY_MAX),
    F_STR("name", 0, smq_ready, name, &R_LABEL),        F_STR("backend", 0, smq_ready, backend, &R_BACKEND),
    F_U32("n_ctx", 0, smq_ready, n_ctx, 1, UINT32_MAX), F_U32("heartbeat_ms", 0, smq_ready, heartbeat_ms, 10, 600000),
};

int smq_ready_decode(smq_ready *r, const void *body, size_t n, smq_err *err)
{
    memset(r, 0, sizeof *r);
    return decode(body, n, err, ready_fields, N(ready_fields), r, NULL);
}

int smq_ready_encode(smq_buf *b, const smq_ready *r)
{
    return encode(b, ready_fields, N(ready_fields), r);
}

/* capacity 0 is a worker that takes nothing more (draining, or short of KV). */
static const field worker_hb_fields[] = {
    F_U32("capacity", 1, smq_worker_hb, capacity, 0, SMQ_CAPACITY_MAX),
    F_U32("running", 1, smq_worker_hb, running, 0, UINT32_MAX),
};

int smq_worker_hb_decode(smq_worker_hb *h, const void *body, size_t n, smq_err *err)
{
    memset(h, 0, sizeof *h);
    return decode(body, n, err, worker_hb_fields, N(worker_hb_fields), h, NULL);
}

int smq_worker_hb_encode(smq_buf *b, const smq_worker_hb *h)
{
    return encode(b, worker_hb_fields, N(worker_hb_fields), h);
}

typedef struct broker_hb {
    uint32_t heartbeat_ms;
} broker_hb;
static const field broker_hb_fields[] = {
    F_U32("heartbeat_ms", 0, broker_hb, heartbeat_ms, 10, 600000),
};

int smq_broker_hb_decode(uint32_t *heartbeat_ms, const void *body, size_t n, smq_err *err)
{
    broker_hb h = { 0 };
    int rc = decode(body, n, err, broker_hb_fields, N(broker_hb_fields), &h, NULL);
    *heartbeat_ms = h.heartbeat_ms;
    return rc;
}

int smq_broker_hb_encode(smq_buf *b, uint32_t heartbeat_ms)
{
    broker_hb h = { heartbeat_ms };
    return encode(b, broker_hb_fields, N(broker_hb_fields), &h);
}

/* ---- STATS ---- */

static const field stats_worker_fields[] = {
    F_STR("name", 0, smq_stats_worker, name, &R_LABEL),
    F_STR("model", 1, smq_stats_worker, model, &R_NAME),
    F_STR("backend", 0, smq_stats_worker, backend, &R_BACKEND),
    F_U32("capacity", 1, smq_stats_worker, capacity, 0, SMQ_CAPACITY_MAX),
    F_U32("in_flight", 1, smq_stats_worker, in_flight, 0, UINT32_MAX),
    F_F64("heartbeat_age_ms", 1, smq_stats_worker, heartbeat_age_ms),
};

static const field stats_queue_fields[] = {
    F_STR("model", 1, smq_stats_queue, model, &R_NAME),
    F_U32("depth", 1, smq_stats_queue, depth, 0, UINT32_MAX),
};

static const field totals_fields[] = {
    F_U64("accepted", 1, smq_stats_totals, accepted),     F_U64("completed", 1, smq_stats_totals, completed),
    F_U64("failed", 1, smq_stats_totals, failed),         F_U64("cancelled", 1, smq_stats_totals, cancelled),
    F_U64("rejected", 1, smq_stats_totals, rejected),     F_U64("redispatched", 1, smq_stats_totals, redispatched),
    F_U64("tokens_out", 1, smq_stats_totals, tokens_out),
};

static const field stats_fields[] = {
    F_ARRAY("workers", 1, smq_stats, workers, n_workers, 0, UINT32_MAX, 0,
            ENTRY(.kind = K_MAP, .sub = stats_worker_fields, .n_sub = N(stats_worker_fields))),
    F_ARRAY("queues", 1, smq_stats, queues, n_queues, 0, UINT32_MAX, 0,
            ENTRY(.kind = K_MAP, .sub = stats_queue_fields, .n_sub = N(stats_queue_fields))),
    F_MAP("totals", smq_stats, totals, totals_fields),
    F_U32("clients", 1, smq_stats, clients, 0, UINT32_MAX),
    F_F64("uptime_ms", 1, smq_stats, uptime_ms),
};

int smq_stats_decode(smq_stats *s, const void *body, size_t n, smq_err *err)
{
    memset(s, 0, sizeof *s);
    if (decode(body, n, err, stats_fields, N(stats_fields), s, NULL) == 0)
        return 0;
    smq_stats_free(s);
    return -1;
}

void smq_stats_free(smq_stats *s)
{
    free(s->workers);
    free(s->queues);
    s->workers = NULL;
    s->queues = NULL;
    s->n_workers = s->n_queues = 0;
}

int smq_stats_encode(smq_buf *b, const smq_stats *s)
{
    return encode(b, stats_fields, N(stats_fields), s);
}

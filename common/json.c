/* json.c - strict JSON (RFC 8259) in two passes over the input. (Python's
 * repr() of the result is in json_repr.c.)
 *
 * Pass 1 validates the whole input and counts what the tree needs: nodes (one
 * per value and per object key), pool bytes (decoded strings and number texts,
 * each NUL-terminated) and the element count of every array and object, in the
 * order they open. Pass 2 runs the same code over the now-valid input and
 * fills a single allocation of exactly that size: nodes[0] is the root, and a
 * container's children are placed, contiguously, when it opens (pass 1 told
 * us how many there are). Duplicate keys are the one error pass 2 finds: keys
 * must be decoded ("a" and "\u0061" are the same key) to compare them.
 *
 * Nesting is tracked on an explicit stack of JSON_PARSE_MAX_DEPTH frames, so
 * hostile input cannot exhaust the C stack.
 */
#include "json.h"

#include "utf8.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_node.h"

typedef struct frame {
    json_value *node;   /* pass 2: the container being filled */
    uint32_t count_idx; /* pass 1: its slot in parser.counts */
    uint32_t n;         /* elements (members) complete so far */
    int is_object;
} frame;

typedef struct parser {
    const unsigned char *s;
    size_t n, pos;
    const char *name;
    smq_err *err;
    int build; /* 0: pass 1 (validate and count), 1: pass 2 (fill) */
    /* Counted by pass 1, used by pass 2. */
    uint32_t *counts; /* element count per container, in opening order */
    size_t n_counts, cap_counts;
    size_t n_nodes, pool_bytes;
    uint32_t max_members; /* of any object */
    /* Pass 2. */
    json_value *nodes;
    size_t next_node, next_count;
    char *pool;
    size_t pool_pos;
    const json_value **keys; /* max_members entries: duplicate-key sorting */
} parser;

__attribute__((format(printf, 3, 4))) static int fail(parser *p, size_t at, const char *fmt, ...)
{
    char what[SMQ_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return smq_err_set(p->err, "%s: at byte %zu: %s", p->name, at, what);
}

/* What is at offset `at`, for messages: 'x', byte 0xNN, or end of input. */
static const char *describe(const parser *p, size_t at, char buf[16])
{
    if (at >= p->n)
        return "end of input";
    unsigned char c = p->s[at];
    if (c > 0x20 && c < 0x7F)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02X", c);
    return buf;
}

/* Writes s[0..n) into out (cap bytes) for a message: printable ASCII as is,
 * other bytes as \xNN, cut with "..." when it does not fit. */
static void quote_for_message(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 8 >= cap) {
            memcpy(out + o, "...", 4);
            return;
        }
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02X", c);
    }
    out[o] = 0;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static int peek(const parser *p)
{
    return p->pos < p->n ? p->s[p->pos] : -1;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The byte a one-letter escape (\n, \", ...) stands for; -1 for others. */
static int simple_escape(int e)
{
    switch (e) {
    case '"':
    case '\\':
    case '/':
        return e;
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    default:
        return -1;
    }
}

/* The 4 hex digits of a \u escape whose backslash is at `at`; -1 if bad. */
static long read_hex4(parser *p, size_t at)
{
    if (p->n - at < 6)
        return -1;
    long v = 0;
    for (int k = 2; k < 6; k++) {
        int h = hex_value(p->s[at + (size_t)k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* The string whose opening quote is at p->pos. Pass 1 validates it and counts
 * its decoded bytes; pass 2 decodes it into the pool and fills *slot. */
static int parse_string(parser *p, json_value *slot)
{
    size_t start = p->pos++;
    char *out = p->build ? p->pool + p->pool_pos : NULL;
    size_t len = 0;
    for (;;) {
        if (p->pos >= p->n)
            return fail(p, start, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20)
            return fail(p, p->pos, "control character 0x%02X in a string (write it as an escape)", c);
        if (c != '\\') {
            uint32_t cp;
            int k = c < 0x80 ? 1 : utf8_next((const char *)p->s + p->pos, p->n - p->pos, &cp);
            if (k == 0)
                return fail(p, p->pos, "invalid UTF-8 (byte 0x%02X) in a string", c);
            if (out)
                memcpy(out + len, p->s + p->pos, (size_t)k);
            len += (size_t)k;
            p->pos += (size_t)k;
            continue;
        }
        /* An escape. */
        size_t at = p->pos;
        int e = at + 1 < p->n ? p->s[at + 1] : -1;
        int simple = simple_escape(e);
        if (simple >= 0) {
            if (out)
                out[len] = (char)simple;
            len++;
            p->pos += 2;
            continue;
        }
        if (e != 'u') {
            char buf[16];
            return fail(p, at, "invalid escape: backslash followed by %s", describe(p, at + 1, buf));
        }
        long cp = read_hex4(p, at);
        if (cp < 0)
            return fail(p, at, "invalid \\u escape (it needs 4 hex digits)");
        p->pos += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return fail(p, at, "lone low surrogate \\u%04lX (it must follow a high surrogate)", cp);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            long lo = p->pos + 1 < p->n && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u' ? read_hex4(p, p->pos) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return fail(p, at, "high surrogate \\u%04lX not followed by a \\u escape of a low surrogate", cp);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p->pos += 6;
        }
        char tmp[4];
        size_t k = utf8_encode((uint32_t)cp, out ? out + len : tmp);
        len += k;
    }
    if (!p->build) {
        p->pool_bytes += len + 1;
        return 0;
    }
    out[len] = 0;
    slot->type = JSON_STRING;
    slot->len = (uint32_t)len;
    slot->p.str = out;
    slot->u.at = (uint32_t)start;
    p->pool_pos += len + 1;
    return 0;
}

/* Writes the text strtod() will read for a number (when out is not NULL) and
 * returns its length. A fraction is folded into the exponent ("1.25e3" is
 * "125e1") so that no decimal point, which strtod reads per locale, remains.
 * The exponent saturates at 1e9: past that the value is 0 or inf anyway. */
static size_t number_text(const unsigned char *lit, size_t int_end, size_t frac_end, size_t len, char *out)
{
    if (frac_end == int_end) { /* no fraction: the literal itself */
        if (out)
            memcpy(out, lit, len);
        return len;
    }
    int64_t exp = 0;
    if (frac_end < len) {
        size_t i = frac_end + 1;
        int neg = lit[i] == '-';
        if (lit[i] == '-' || lit[i] == '+')
            i++;
        for (; i < len; i++)
            if (exp < 1000000000)
                exp = exp * 10 + (lit[i] - '0');
        if (neg)
            exp = -exp;
    }
    size_t n_frac = frac_end - int_end - 1;
    exp -= (int64_t)n_frac;
    char e[32];
    int ne = snprintf(e, sizeof e, "e%" PRId64, exp);
    if (out) {
        memcpy(out, lit, int_end);
        memcpy(out + int_end, lit + int_end + 1, n_frac);
        memcpy(out + int_end + n_frac, e, (size_t)ne);
    }
    return int_end + n_frac + (size_t)ne;
}

static int parse_number(parser *p, json_value *slot)
{
    const unsigned char *s = p->s;
    size_t start = p->pos, i = p->pos;
    if (s[i] == '-')
        i++;
    if (i >= p->n || !is_digit(s[i]))
        return fail(p, i, "expected a digit after '-'");
    if (s[i] == '0') {
        i++;
        if (i < p->n && is_digit(s[i]))
            return fail(p, start, "leading zeros are not allowed in numbers");
    } else {
        while (i < p->n && is_digit(s[i]))
            i++;
    }
    size_t int_end = i;
    if (i < p->n && s[i] == '.') {
        i++;
        if (i >= p->n || !is_digit(s[i]))
            return fail(p, i, "expected a digit after the decimal point");
        while (i < p->n && is_digit(s[i]))
            i++;
    }
    size_t frac_end = i;
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= p->n || !is_digit(s[i]))
            return fail(p, i, "expected a digit in the exponent");
        while (i < p->n && is_digit(s[i]))
            i++;
    }
    p->pos = i;
    const unsigned char *lit = s + start;
    size_t len = i - start;
    if (!p->build) {
        p->pool_bytes += number_text(lit, int_end - start, frac_end - start, len, NULL) + 1;
        return 0;
    }
    char *text = p->pool + p->pool_pos;
    size_t tl = number_text(lit, int_end - start, frac_end - start, len, text);
    text[tl] = 0;
    p->pool_pos += tl + 1;
    slot->type = JSON_NUMBER;
    slot->len = (uint32_t)tl;
    slot->p.str = text;
    slot->form = NUM_FLOAT;
    if (int_end == i) { /* an integer: does it fit int64? */
        int neg = lit[0] == '-';
        uint64_t mag = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        int fits = 1;
        for (size_t k = (size_t)neg; k < len && fits; k++) {
            uint64_t d = (uint64_t)(lit[k] - '0');
            if (mag > (limit - d) / 10)
                fits = 0;
            else
                mag = mag * 10 + d;
        }
        if (fits) {
            slot->form = NUM_INT64;
            slot->u.i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
            return 0;
        }
        slot->form = NUM_BIGINT;
    }
    slot->u.d = strtod(text, NULL);
    return 0;
}

static int parse_literal(parser *p, json_value *slot, const char *word, json_type type, int b)
{
    size_t wl = strlen(word);
    if (p->n - p->pos < wl || memcmp(p->s + p->pos, word, wl) != 0)
        return fail(p, p->pos, "invalid literal (expected %s)", word);
    p->pos += wl;
    if (slot) {
        slot->type = (uint8_t)type;
        slot->u.b = b;
    }
    return 0;
}

/* Starts an array or object at p->pos (its bracket) in *slot. */
static int open_container(parser *p, frame *f, json_value *slot, int is_object)
{
    f->is_object = is_object;
    f->n = 0;
    if (!p->build) {
        if (p->n_counts == p->cap_counts) {
            size_t cap = p->cap_counts ? 2 * p->cap_counts : 64;
            uint32_t *c = realloc(p->counts, cap * sizeof *c);
            if (!c)
                return fail(p, p->pos, "out of memory");
            p->counts = c;
            p->cap_counts = cap;
        }
        f->count_idx = (uint32_t)p->n_counts++;
        return 0;
    }
    uint32_t count = p->counts[p->next_count++];
    slot->type = is_object ? JSON_OBJECT : JSON_ARRAY;
    slot->len = count;
    slot->p.items = p->nodes + p->next_node;
    p->next_node += is_object ? 2 * (size_t)count : count;
    f->node = slot;
    return 0;
}

static int key_equal(const json_value *a, const json_value *b)
{
    return a->len == b->len && memcmp(a->p.str, b->p.str, a->len) == 0;
}

/* qsort order for keys: by bytes, equal keys in document order. */
static int key_order(const void *x, const void *y)
{
    const json_value *a = *(const json_value *const *)x, *b = *(const json_value *const *)y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->p.str, b->p.str, n);
    if (c)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->u.at < b->u.at ? -1 : a->u.at > b->u.at;
}

/* Fails at the first place in the document where an object repeats a key. */
static int check_duplicate_keys(parser *p, const json_value *obj)
{
    uint32_t n = obj->len;
    const json_value *kv = obj->p.items, *dup = NULL;
    if (n <= 8) {
        for (uint32_t j = 1; j < n && !dup; j++)
            for (uint32_t i = 0; i < j && !dup; i++)
                if (key_equal(&kv[2 * i], &kv[2 * j]))
                    dup = &kv[2 * j];
    } else {
        for (uint32_t i = 0; i < n; i++)
            p->keys[i] = &kv[2 * i];
        qsort(p->keys, n, sizeof *p->keys, key_order);
        for (uint32_t i = 1; i < n; i++)
            if (key_equal(p->keys[i - 1], p->keys[i]) && (!dup || p->keys[i]->u.at < dup->u.at))
                dup = p->keys[i];
    }
    if (!dup)
        return 0;
    char shown[80];
    quote_for_message(dup->p.str, dup->len, shown, sizeof shown);
    return fail(p, dup->u.at, "duplicate key \"%s\" in an object", shown);
}

static int close_container(parser *p, frame *f)
{
    if (!p->build) {
        p->counts[f->count_idx] = f->n;
        p->n_nodes += f->is_object ? 2 * (size_t)f->n : f->n;
        if (f->is_object && f->n > p->max_members)
            p->max_members = f->n;
        return 0;
    }
    return f->is_object && f->n > 1 ? check_duplicate_keys(p, f->node) : 0;
}

/* Moves to element f->n of a container: for objects, reads its key and the
 * colon. *slot becomes where the element's value goes (pass 2). */
static int next_element(parser *p, frame *f, json_value **slot)
{
    json_value *items = p->build ? f->node->p.items : NULL;
    if (!f->is_object) {
        *slot = items ? items + f->n : NULL;
        return 0;
    }
    skip_ws(p);
    if (peek(p) != '"') {
        char buf[16];
        return fail(p, p->pos, "expected a string key, found %s", describe(p, p->pos, buf));
    }
    if (parse_string(p, items ? items + 2 * (size_t)f->n : NULL))
        return -1;
    skip_ws(p);
    if (peek(p) != ':') {
        char buf[16];
        return fail(p, p->pos, "expected ':' after an object key, found %s", describe(p, p->pos, buf));
    }
    p->pos++;
    *slot = items ? items + 2 * (size_t)f->n + 1 : NULL;
    return 0;
}

static int parse_document(parser *p)
{
    frame stack[JSON_PARSE_MAX_DEPTH];
    int depth = 0;
    char buf[16];
    json_value *slot = p->build ? &p->nodes[0] : NULL;
    p->pos = 0;
    for (;;) {
        /* A value starts here. */
        skip_ws(p);
        int c = peek(p);
        if (c == '[' || c == '{') {
            if (depth == JSON_PARSE_MAX_DEPTH)
                return fail(p, p->pos, "arrays and objects nest deeper than %d levels", JSON_PARSE_MAX_DEPTH);
            frame *f = &stack[depth++];
            if (open_container(p, f, slot, c == '{'))
                return -1;
            p->pos++;
            skip_ws(p);
            if (peek(p) == (c == '{' ? '}' : ']')) {
                p->pos++;
                depth--;
                if (close_container(p, f))
                    return -1;
            } else {
                if (next_element(p, f, &slot))
                    return -1;
                continue;
            }
        } else if (c == '"') {
            if (parse_string(p, slot))
                return -1;
        } else if (c == '-' || is_digit(c)) {
            if (parse_number(p, slot))
                return -1;
        } else if (c == 't') {
            if (parse_literal(p, slot, "true", JSON_BOOL, 1))
                return -1;
        } else if (c == 'f') {
            if (parse_literal(p, slot, "false", JSON_BOOL, 0))
                return -1;
        } else if (c == 'n') {
            if (parse_literal(p, slot, "null", JSON_NULL, 0))
                return -1;
        } else {
            return fail(p, p->pos, "expected a value, found %s", describe(p, p->pos, buf));
        }
        /* A value is complete: it ends the document, or its container goes on
         * with ',' or ends (which completes the container in turn). */
        for (;;) {
            skip_ws(p);
            if (depth == 0) {
                if (p->pos < p->n)
                    return fail(p, p->pos, "unexpected %s after the JSON value", describe(p, p->pos, buf));
                return 0;
            }
            frame *f = &stack[depth - 1];
            f->n++;
            int close = f->is_object ? '}' : ']';
            if (peek(p) == ',') {
                p->pos++;
                if (next_element(p, f, &slot))
                    return -1;
                break;
            }
            if (peek(p) != close)
                return fail(p, p->pos, "expected ',' or '%c' after %s, found %s", close,
                            f->is_object ? "an object member" : "an array element", describe(p, p->pos, buf));
            p->pos++;
            depth--;
            if (close_container(p, f))
                return -1;
        }
    }
}

json_value *json_parse(const char *text, size_t len, const char *name, smq_err *err)
{
    parser p = { .s = (const unsigned char *)text, .n = len, .name = name ? name : "json", .err = err };
    if (len > JSON_PARSE_MAX_INPUT) {
        smq_err_set(err, "%s: %zu bytes of JSON exceed the limit of %u", p.name, len, JSON_PARSE_MAX_INPUT);
        return NULL;
    }
    if (!text)
        p.n = 0;
    p.n_nodes = 1; /* the root */
    json_value *root = NULL;
    if (parse_document(&p))
        goto out;
    /* One block: the nodes, then the pool. Sizes are bounded by a small
     * multiple of len <= 4 GiB, so they cannot overflow size_t on 64 bits;
     * check anyway for 32-bit hosts. */
    size_t node_bytes = p.n_nodes * sizeof(json_value);
    if (node_bytes / sizeof(json_value) != p.n_nodes || node_bytes + p.pool_bytes < node_bytes) {
        smq_err_set(err, "%s: too large to hold in memory", p.name);
        goto out;
    }
    root = calloc(1, node_bytes + p.pool_bytes);
    if (p.max_members > 8)
        p.keys = malloc(p.max_members * sizeof *p.keys);
    if (!root || (p.max_members > 8 && !p.keys)) {
        smq_err_set(err, "%s: out of memory (%zu bytes for the tree)", p.name, node_bytes + p.pool_bytes);
        free(root);
        root = NULL;
        goto out;
    }
    p.build = 1;
    p.nodes = root;
    p.next_node = 1;
    p.pool = (char *)root + node_bytes;
    if (parse_document(&p)) {
        free(root);
        root = NULL;
    }
out:
    free(p.counts);
    free(p.keys);
    return root;
}

void json_free(json_value *root)
{
    free(root);
}

json_type json_typeof(const json_value *v)
{
    return v ? (json_type)v->type : JSON_NULL;
}

const char *json_type_name(json_type t)
{
    static const char *const names[] = { "null", "boolean", "number", "string", "array", "object" };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

const json_value *json_get(const json_value *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT || !key)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < obj->len; i++) {
        const json_value *k = &obj->p.items[2 * (size_t)i];
        if (k->len == kl && memcmp(k->p.str, key, kl) == 0)
            return k + 1;
    }
    return NULL;
}

size_t json_len(const json_value *v)
{
    return v && (v->type == JSON_ARRAY || v->type == JSON_OBJECT) ? v->len : 0;
}

const json_value *json_at(const json_value *v, size_t i)
{
    if (!v || i >= json_len(v))
        return NULL;
    return v->type == JSON_ARRAY ? &v->p.items[i] : &v->p.items[2 * i + 1];
}

const char *json_key_at(const json_value *obj, size_t i, size_t *len)
{
    if (!obj || obj->type != JSON_OBJECT || i >= obj->len)
        return NULL;
    return json_string(&obj->p.items[2 * i], len);
}

const char *json_string(const json_value *v, size_t *len)
{
    if (!v || v->type != JSON_STRING)
        return NULL;
    if (len)
        *len = v->len;
    return v->p.str;
}

int json_boolean(const json_value *v)
{
    return v && v->type == JSON_BOOL && v->u.b;
}

double json_number(const json_value *v)
{
    if (!v || v->type != JSON_NUMBER)
        return 0;
    return v->form == NUM_INT64 ? (double)v->u.i : v->u.d;
}

int json_is_integer(const json_value *v)
{
    return v && v->type == JSON_NUMBER && v->form == NUM_INT64;
}

int64_t json_integer(const json_value *v)
{
    return json_is_integer(v) ? v->u.i : 0;
}

int json_truthy(const json_value *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return 0;
    case JSON_BOOL:
        return v->u.b;
    case JSON_NUMBER:
        return v->form == NUM_INT64 ? v->u.i != 0 : v->u.d != 0; /* a big int is never 0 */
    default:
        return v->len != 0;
    }
}

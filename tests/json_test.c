/* json_test.c - the strict JSON parser and Python's repr of its values.
 * Expected repr strings were printed by Python 3.11 (repr(json.loads(text))). */
#include "json.h"

#include "test.h"

/* Parses a C string (without its NUL: json_parse never needs one). */
static json_value *parse(const char *text, smq_err *err)
{
    return json_parse(text, strlen(text), "t.json", err);
}

/* Checks that text is rejected with exactly "t.json: at byte AT: <what...>". */
#define CHECK_REJECT(text, len, at, what)                                                                              \
    do {                                                                                                               \
        smq_err e_ = { { 0 } };                                                                                        \
        json_value *v_ = json_parse(text, len, "t.json", &e_);                                                         \
        char want_[256];                                                                                               \
        snprintf(want_, sizeof want_, "t.json: at byte %d: %s", (int)(at), what);                                      \
        CHECK_MSG(!v_, "accepted %s", #text);                                                                          \
        CHECK_MSG(strncmp(e_.msg, want_, strlen(want_)) == 0, "%s: error \"%s\", expected \"%s...\"", #text, e_.msg,   \
                  want_);                                                                                              \
        json_free(v_);                                                                                                 \
    } while (0)
#define CHECK_REJECT_STR(text, at, what) CHECK_REJECT(text, strlen(text), at, what)

/* Checks repr(json.loads(text)) == want. */
#define CHECK_REPR(text, want)                                                                                         \
    do {                                                                                                               \
        smq_err e_;                                                                                                    \
        json_value *v_ = parse(text, &e_);                                                                             \
        CHECK_MSG(v_, "%s: %s", text, e_.msg);                                                                         \
        if (v_) {                                                                                                      \
            sbuf b_ = { 0 };                                                                                           \
            CHECK_INT(json_repr_python(v_, &b_), 0);                                                                   \
            CHECK_STR(b_.data, want);                                                                                  \
            sbuf_free(&b_);                                                                                            \
        }                                                                                                              \
        json_free(v_);                                                                                                 \
    } while (0)

static void test_scalars(void)
{
    smq_err err;
    json_value *v = parse(" \t\r\n null \n", &err);
    CHECK(v && json_typeof(v) == JSON_NULL);
    json_free(v);
    v = parse("true", &err);
    CHECK(v && json_typeof(v) == JSON_BOOL && json_boolean(v) == 1);
    json_free(v);
    v = parse("false", &err);
    CHECK(v && json_typeof(v) == JSON_BOOL && json_boolean(v) == 0);
    json_free(v);

    v = parse("-0", &err);
    CHECK(v && json_is_integer(v) && json_integer(v) == 0 && json_number(v) == 0);
    json_free(v);
    v = parse("123", &err);
    CHECK(v && json_typeof(v) == JSON_NUMBER && json_is_integer(v));
    CHECK_INT(json_integer(v), 123);
    json_free(v);
    v = parse("-9223372036854775808", &err);
    CHECK(v && json_is_integer(v) && json_integer(v) == INT64_MIN);
    json_free(v);
    v = parse("9223372036854775807", &err);
    CHECK(v && json_is_integer(v) && json_integer(v) == INT64_MAX);
    json_free(v);
    /* One past int64: still a number, but not an integer we can hold. */
    v = parse("9223372036854775808", &err);
    CHECK(v && json_typeof(v) == JSON_NUMBER && !json_is_integer(v) && json_number(v) == 9223372036854775808.0);
    json_free(v);
    v = parse("-9223372036854775809", &err);
    CHECK(v && !json_is_integer(v) && json_number(v) == -9223372036854775808.0);
    json_free(v);
    /* A fraction or exponent makes a float even when the value is whole. */
    v = parse("1e3", &err);
    CHECK(v && !json_is_integer(v) && json_number(v) == 1000.0);
    json_free(v);
    v = parse("2.0", &err);
    CHECK(v && !json_is_integer(v) && json_number(v) == 2.0);
    json_free(v);
    v = parse("-1.25E-3", &err);
    CHECK(v && json_number(v) == -1.25e-3);
    json_free(v);
    v = parse("1E+2", &err);
    CHECK(v && json_number(v) == 100.0);
    json_free(v);

    size_t len = 99;
    v = parse("\"hello\"", &err);
    CHECK(v && json_typeof(v) == JSON_STRING);
    CHECK_STR(json_string(v, &len), "hello");
    CHECK_INT(len, 5);
    /* Accessors of other types answer "absent". */
    CHECK(json_len(v) == 0 && json_at(v, 0) == NULL && json_get(v, "x") == NULL && json_number(v) == 0);
    CHECK(json_key_at(v, 0, &len) == NULL && json_boolean(v) == 0 && !json_is_integer(v));
    json_free(v);

    /* NULL (a missing value) is accepted everywhere. */
    CHECK(json_typeof(NULL) == JSON_NULL && json_len(NULL) == 0 && json_get(NULL, "a") == NULL);
    CHECK(json_string(NULL, &len) == NULL && json_at(NULL, 0) == NULL && !json_truthy(NULL));
    json_free(NULL);
}

static void test_containers(void)
{
    smq_err err;
    json_value *v = parse("{\"z\": [1, \"two\", {\"three\": 3}, [], {}], \"a\": null, \"m\": {\"k\": true}}", &err);
    CHECK_MSG(v, "%s", err.msg);
    if (!v)
        return;
    CHECK(json_typeof(v) == JSON_OBJECT);
    CHECK_INT(json_len(v), 3);
    /* Document order, not sorted. */
    size_t kl;
    CHECK_STR(json_key_at(v, 0, &kl), "z");
    CHECK_INT(kl, 1);
    CHECK_STR(json_key_at(v, 1, NULL), "a");
    CHECK_STR(json_key_at(v, 2, NULL), "m");
    CHECK(json_key_at(v, 3, NULL) == NULL && json_at(v, 3) == NULL);
    CHECK(json_at(v, 1) == json_get(v, "a") && json_typeof(json_get(v, "a")) == JSON_NULL);
    CHECK(json_get(v, "missing") == NULL && json_get(v, "") == NULL);

    const json_value *z = json_get(v, "z");
    CHECK(json_typeof(z) == JSON_ARRAY);
    CHECK_INT(json_len(z), 5);
    CHECK_INT(json_integer(json_at(z, 0)), 1);
    CHECK_STR(json_string(json_at(z, 1), NULL), "two");
    CHECK_INT(json_integer(json_get(json_at(z, 2), "three")), 3);
    CHECK(json_typeof(json_at(z, 3)) == JSON_ARRAY && json_len(json_at(z, 3)) == 0);
    CHECK(json_typeof(json_at(z, 4)) == JSON_OBJECT && json_len(json_at(z, 4)) == 0);
    CHECK(json_at(z, 5) == NULL && json_get(z, "0") == NULL);
    CHECK(json_boolean(json_get(json_get(v, "m"), "k")) == 1);
    json_free(v);

    /* The same key at different levels, and keys that differ only past a NUL. */
    v = parse("{\"a\": {\"a\": {\"a\": 1}}, \"a\\u0000\": 2, \"a\\u0000b\": 3}", &err);
    CHECK_MSG(v, "%s", err.msg);
    CHECK_INT(json_integer(json_get(json_get(json_get(v, "a"), "a"), "a")), 1);
    CHECK_INT(json_len(v), 3);
    CHECK_INT((json_key_at(v, 2, &kl), kl), 3);
    json_free(v);

    v = parse("[[[[]]], [{}], {\"\": []}]", &err);
    CHECK(v && json_len(v) == 3 && json_len(json_at(json_at(json_at(v, 0), 0), 0)) == 0);
    CHECK(json_typeof(json_get(json_at(v, 2), "")) == JSON_ARRAY);
    json_free(v);
}

static void test_strings(void)
{
    smq_err err;
    size_t len;
    json_value *v = parse("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"", &err);
    CHECK_STR(json_string(v, &len), "\" \\ / \b \f \n \r \t");
    json_free(v);
    /* \u escapes become UTF-8, surrogate pairs one 4-byte sequence. */
    v = parse("\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\\uDBFF\\uDFFF\"", &err);
    CHECK_STR(json_string(v, &len), "A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF");
    CHECK_INT(len, 14);
    json_free(v);
    /* U+0000 stays in the string; len tells. */
    v = parse("\"a\\u0000b\"", &err);
    const char *s = json_string(v, &len);
    CHECK(s && len == 3 && s[0] == 'a' && s[1] == 0 && s[2] == 'b' && s[3] == 0);
    json_free(v);
    /* Raw UTF-8 of every length passes through. */
    v = parse("\"caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF\"", &err);
    CHECK_STR(json_string(v, &len), "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF");
    json_free(v);
    v = parse("\"\"", &err);
    CHECK(v && json_string(v, &len) && len == 0);
    json_free(v);
}

/* json_parse reads (ptr, len) only: a JSON line inside a larger buffer, and a
 * buffer with no NUL after it (ASan catches a read past the end). */
static void test_not_nul_terminated(void)
{
    smq_err err;
    const char *lines = "[1,2]\n{\"a\":\"b\"}\n";
    json_value *v = json_parse(lines, 5, "t.json", &err);
    CHECK(v && json_len(v) == 2);
    json_free(v);
    v = json_parse(lines + 6, 9, "t.json", &err);
    CHECK_STR(json_string(json_get(v, "a"), NULL), "b");
    json_free(v);

    const char *texts[] = { "12345", "\"abc\"", "true", "-1.5e7", "[[1]]" };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t n = strlen(texts[i]);
        char *exact = malloc(n);
        memcpy(exact, texts[i], n);
        v = json_parse(exact, n, "t.json", &err);
        CHECK_MSG(v, "%s: %s", texts[i], err.msg);
        json_free(v);
        /* Every proper prefix of these is incomplete and must be rejected. */
        for (size_t k = 0; k < n; k++) {
            v = json_parse(exact, k, "t.json", &err);
            int ok_prefix = (i == 0 || i == 3) && k > 0 && exact[k - 1] >= '0' && exact[k - 1] <= '9';
            CHECK_MSG(!v == !ok_prefix, "%s prefix %zu: %s", texts[i], k, v ? "accepted" : err.msg);
            json_free(v);
        }
        free(exact);
    }
}

static void test_errors(void)
{
    CHECK_REJECT_STR("", 0, "expected a value, found end of input");
    CHECK_REJECT_STR("  \n ", 4, "expected a value, found end of input");
    CHECK_REJECT(NULL, 0, 0, "expected a value, found end of input");
    /* structure */
    CHECK_REJECT_STR("[1,]", 3, "expected a value, found ']'");
    CHECK_REJECT_STR("[,1]", 1, "expected a value, found ','");
    CHECK_REJECT_STR("[1 2]", 3, "expected ',' or ']' after an array element, found '2'");
    CHECK_REJECT_STR("[1", 2, "expected ',' or ']' after an array element, found end of input");
    CHECK_REJECT_STR("{\"a\":1,}", 7, "expected a string key, found '}'");
    CHECK_REJECT_STR("{1:2}", 1, "expected a string key, found '1'");
    CHECK_REJECT_STR("{'a':1}", 1, "expected a string key, found '''");
    CHECK_REJECT_STR("{\"a\" 1}", 5, "expected ':' after an object key, found '1'");
    CHECK_REJECT_STR("{\"a\":1 \"b\":2}", 7, "expected ',' or '}' after an object member, found '\"'");
    CHECK_REJECT_STR("{\"a\":1]", 6, "expected ',' or '}' after an object member, found ']'");
    CHECK_REJECT_STR("[}", 1, "expected a value, found '}'");
    CHECK_REJECT_STR("1 2", 2, "unexpected '2' after the JSON value");
    CHECK_REJECT_STR("{}}", 2, "unexpected '}' after the JSON value");
    CHECK_REJECT_STR("[] x", 3, "unexpected 'x' after the JSON value");
    CHECK_REJECT("[1,\0]", 5, 3, "expected a value, found byte 0x00");
    CHECK_REJECT("1\0", 2, 1, "unexpected byte 0x00 after the JSON value");
    CHECK_REJECT_STR("\xEF\xBB\xBF{}", 0, "expected a value, found byte 0xEF"); /* no BOM */
    CHECK_REJECT_STR("\x0B 1", 0, "expected a value, found byte 0x0B");         /* not JSON whitespace */
    /* literals */
    CHECK_REJECT_STR("tru", 0, "invalid literal (expected true)");
    CHECK_REJECT_STR("[nul]", 1, "invalid literal (expected null)");
    CHECK_REJECT_STR("fals", 0, "invalid literal (expected false)");
    CHECK_REJECT_STR("True", 0, "expected a value, found 'T'");
    CHECK_REJECT_STR("truex", 4, "unexpected 'x' after the JSON value");
    /* numbers */
    CHECK_REJECT_STR("01", 0, "leading zeros are not allowed in numbers");
    CHECK_REJECT_STR("[-00]", 1, "leading zeros are not allowed in numbers");
    CHECK_REJECT_STR("-", 1, "expected a digit after '-'");
    CHECK_REJECT_STR("-a", 1, "expected a digit after '-'");
    CHECK_REJECT_STR("1.", 2, "expected a digit after the decimal point");
    CHECK_REJECT_STR("1.e5", 2, "expected a digit after the decimal point");
    CHECK_REJECT_STR("1e", 2, "expected a digit in the exponent");
    CHECK_REJECT_STR("1e+", 3, "expected a digit in the exponent");
    CHECK_REJECT_STR(".5", 0, "expected a value, found '.'");
    CHECK_REJECT_STR("+1", 0, "expected a value, found '+'");
    CHECK_REJECT_STR("NaN", 0, "expected a value, found 'N'");
    CHECK_REJECT_STR("Infinity", 0, "expected a value, found 'I'");
    CHECK_REJECT_STR("-Infinity", 1, "expected a digit after '-'");
    CHECK_REJECT_STR("0x10", 1, "unexpected 'x' after the JSON value");
    CHECK_REJECT_STR("1.5.2", 3, "unexpected '.' after the JSON value");
    /* strings */
    CHECK_REJECT_STR("\"abc", 0, "unterminated string");
    CHECK_REJECT_STR("[\"a\\\"]", 1, "unterminated string");
    CHECK_REJECT_STR("\"a\tb\"", 2, "control character 0x09 in a string");
    CHECK_REJECT_STR("\"a\nb\"", 2, "control character 0x0A in a string");
    CHECK_REJECT_STR("\"\x1F\"", 1, "control character 0x1F in a string");
    CHECK_REJECT("\"a\0b\"", 5, 2, "control character 0x00 in a string");
    CHECK_REJECT_STR("\"\\x41\"", 1, "invalid escape: backslash followed by 'x'");
    CHECK_REJECT_STR("\"\\'\"", 1, "invalid escape: backslash followed by '''");
    CHECK_REJECT_STR("\"ab\\", 3, "invalid escape: backslash followed by end of input");
    CHECK_REJECT_STR("\"\\u12\"", 1, "invalid \\u escape (it needs 4 hex digits)");
    CHECK_REJECT_STR("\"\\u12G4\"", 1, "invalid \\u escape (it needs 4 hex digits)");
    CHECK_REJECT_STR("\"\\u", 1, "invalid \\u escape (it needs 4 hex digits)");
    CHECK_REJECT_STR("\"x\\ud800\"", 2, "high surrogate \\uD800 not followed by a \\u escape of a low surrogate");
    CHECK_REJECT_STR("\"\\ud83d\\u0041\"", 1, "high surrogate \\uD83D not followed");
    CHECK_REJECT_STR("\"\\ud83d\\ud83d\"", 1, "high surrogate \\uD83D not followed");
    CHECK_REJECT_STR("\"\\udbff\\n\"", 1, "high surrogate \\uDBFF not followed");
    CHECK_REJECT_STR("\"\\udc00\"", 1, "lone low surrogate \\uDC00 (it must follow a high surrogate)");
    CHECK_REJECT_STR("\"\\ude00\\ud83d\"", 1, "lone low surrogate \\uDE00");
    /* invalid UTF-8, raw, inside strings */
    CHECK_REJECT_STR("\"\xFF\"", 1, "invalid UTF-8 (byte 0xFF) in a string");
    CHECK_REJECT_STR("\"ok \x80\"", 4, "invalid UTF-8 (byte 0x80) in a string");
    CHECK_REJECT_STR("\"\xC0\x80\"", 1, "invalid UTF-8 (byte 0xC0)");         /* overlong NUL */
    CHECK_REJECT_STR("\"\xE0\x80\xAF\"", 1, "invalid UTF-8 (byte 0xE0)");     /* overlong '/' */
    CHECK_REJECT_STR("\"\xED\xA0\x80\"", 1, "invalid UTF-8 (byte 0xED)");     /* encoded surrogate */
    CHECK_REJECT_STR("\"\xF4\x90\x80\x80\"", 1, "invalid UTF-8 (byte 0xF4)"); /* past U+10FFFF */
    CHECK_REJECT_STR("\"ab\xE2\x82\"", 3, "invalid UTF-8 (byte 0xE2)");       /* truncated */
    CHECK_REJECT("\"\xE2\x82", 3, 1, "invalid UTF-8 (byte 0xE2)");            /* truncated at the end */
    CHECK_REJECT_STR("[\xC3\xA9]", 1, "expected a value, found byte 0xC3");   /* outside a string */
    /* duplicate keys, also when spelled differently */
    CHECK_REJECT_STR("{\"a\":1,\"a\":2}", 7, "duplicate key \"a\" in an object");
    CHECK_REJECT_STR("{\"a\":1,\"b\":{\"c\":1},\"\\u0061\":2}", 19, "duplicate key \"a\"");
    CHECK_REJECT_STR("[{\"x\":[]}, {\"k\\u0000\":1, \"k\\u0000\":2}]", 25, "duplicate key \"k\\x00\"");
    /* The name defaults to "json". */
    smq_err err;
    CHECK(!json_parse("[", 1, NULL, &err));
    CHECK_STR(err.msg, "json: at byte 1: expected a value, found end of input");
    /* A NULL err is allowed. */
    CHECK(!json_parse("[", 1, "x", NULL));
}

/* Objects with more than 8 members are checked for duplicates by sorting;
 * the error names the first place in the document that repeats a key. */
static void test_duplicate_keys_large(void)
{
    char doc[2048];
    size_t o = 0;
    int dup_at[3] = { 0 };
    o += (size_t)snprintf(doc + o, sizeof doc - o, "{");
    const char *keys[] = { "k0",  "k1",  "k2",  "k3",  "k4", "k5",  "k6", "k7",  "k8", "k9",
                           "k10", "k11", "k12", "k13", "k7", "k14", "k3", "k15", "k7", "k16" };
    int n_dup = 0;
    for (int i = 0; i < 20; i++) {
        if (i)
            doc[o++] = ',';
        if ((i == 14 || i == 16 || i == 18) && n_dup < 3)
            dup_at[n_dup++] = (int)o;
        o += (size_t)snprintf(doc + o, sizeof doc - o, "\"%s\":%d", keys[i], i);
    }
    o += (size_t)snprintf(doc + o, sizeof doc - o, "}");
    char want[64];
    snprintf(want, sizeof want, "t.json: at byte %d: duplicate key \"k7\"", dup_at[0]);
    smq_err err;
    json_value *v = json_parse(doc, o, "t.json", &err);
    CHECK(!v);
    CHECK_CONTAINS(err.msg, want);
    json_free(v);

    /* 1000 distinct keys parse; then one repeat at the end is found. */
    size_t cap = 1000 * 16 + 64, n = 0;
    char *big = malloc(cap);
    n += (size_t)snprintf(big + n, cap - n, "{");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(big + n, cap - n, "%s\"key%d\":%d", i ? "," : "", (i * 7919) % 1000, i);
    v = json_parse(big, n + (size_t)snprintf(big + n, cap - n, "}"), "t.json", &err);
    CHECK_MSG(v, "%s", err.msg);
    CHECK_INT(json_len(v), 1000);
    CHECK_INT(json_integer(json_get(v, "key919")), 1); /* 7919 % 1000 */
    json_free(v);
    size_t at = n + 1;
    n += (size_t)snprintf(big + n, cap - n, ",\"key500\":0}");
    v = json_parse(big, n, "t.json", &err);
    CHECK(!v);
    snprintf(want, sizeof want, "t.json: at byte %zu: duplicate key \"key500\"", at);
    CHECK_CONTAINS(err.msg, want);
    free(big);
}

static void test_depth(void)
{
    char doc[2 * 200 + 16];
    smq_err err;
    /* 64 levels parse, 65 do not. */
    for (int depth = 63; depth <= 66; depth++) {
        int o = 0;
        for (int i = 0; i < depth; i++)
            doc[o++] = '[';
        for (int i = 0; i < depth; i++)
            doc[o++] = ']';
        json_value *v = json_parse(doc, (size_t)o, "t.json", &err);
        if (depth <= JSON_PARSE_MAX_DEPTH) {
            CHECK_MSG(v, "depth %d: %s", depth, err.msg);
        } else {
            CHECK_MSG(!v, "depth %d accepted", depth);
            CHECK_STR(err.msg, "t.json: at byte 64: arrays and objects nest deeper than 64 levels");
        }
        json_free(v);
    }
    /* Objects count too, mixed with arrays. */
    int o = 0;
    for (int i = 0; i < 32; i++)
        o += snprintf(doc + o, sizeof doc - (size_t)o, "{\"a\":[");
    doc[o++] = '1';
    for (int i = 0; i < 32; i++)
        o += snprintf(doc + o, sizeof doc - (size_t)o, "]}");
    json_value *v = json_parse(doc, (size_t)o, "t.json", &err);
    CHECK_MSG(v, "%s", err.msg);
    const json_value *x = v;
    for (int i = 0; i < 32; i++)
        x = json_at(json_get(x, "a"), 0);
    CHECK_INT(json_integer(x), 1);
    json_free(v);
    v = json_parse("{\"a\":[", 6, "t.json", &err); /* truncated: an error, not a hang */
    CHECK(!v);

    /* A million open brackets: rejected at the limit, no recursion. */
    size_t n = 1000000;
    char *deep = malloc(n);
    memset(deep, '[', n);
    v = json_parse(deep, n, "t.json", &err);
    CHECK(!v);
    CHECK_CONTAINS(err.msg, "at byte 64: arrays and objects nest deeper");
    free(deep);
}

/* A large flat document parses in one allocation of the counted size. */
static void test_large(void)
{
    size_t count = 200000, n = 0;
    char *doc = malloc(count * 12 + 16);
    doc[n++] = '[';
    for (size_t i = 0; i < count; i++)
        n += (size_t)sprintf(doc + n, "%s%zu", i ? "," : "", i * 3);
    doc[n++] = ']';
    smq_err err;
    json_value *v = json_parse(doc, n, "t.json", &err);
    CHECK_MSG(v, "%s", err.msg);
    CHECK_INT(json_len(v), count);
    CHECK_INT(json_integer(json_at(v, count - 1)), (count - 1) * 3);
    json_free(v);
    free(doc);
}

static void test_big_numbers(void)
{
    smq_err err;
    json_value *v = parse("[1e400, -1e400, 1e-400, -1e-400, 1e99999999999999999999, 1.5e-99999999999999999999, "
                          "123456789012345678901234567890, 0.1, 1.7976931348623157e308, 4.9e-324, "
                          "2.2250738585072014e-308, 123.456e5, 0.30000000000000004, 1.0e+0000000000000000000002]",
                          &err);
    CHECK_MSG(v, "%s", err.msg);
    if (!v)
        return;
    CHECK(isinf(json_number(json_at(v, 0))) && json_number(json_at(v, 0)) > 0);
    CHECK(isinf(json_number(json_at(v, 1))) && json_number(json_at(v, 1)) < 0);
    CHECK(json_number(json_at(v, 2)) == 0 && !signbit(json_number(json_at(v, 2))));
    CHECK(json_number(json_at(v, 3)) == 0 && signbit(json_number(json_at(v, 3))));
    CHECK(isinf(json_number(json_at(v, 4))));
    CHECK(json_number(json_at(v, 5)) == 0);
    CHECK(!json_is_integer(json_at(v, 6)) && json_number(json_at(v, 6)) == 123456789012345678901234567890.0);
    CHECK(json_number(json_at(v, 7)) == 0.1);
    CHECK(json_number(json_at(v, 8)) == 1.7976931348623157e308);
    CHECK(json_number(json_at(v, 9)) == 4.9e-324);
    CHECK(json_number(json_at(v, 10)) == 2.2250738585072014e-308);
    CHECK(json_number(json_at(v, 11)) == 12345600.0);
    CHECK(json_number(json_at(v, 12)) == 0.30000000000000004);
    CHECK(json_number(json_at(v, 13)) == 100.0);
    json_free(v);

    /* 400 digits: exact as a Python int, correctly rounded as a double. */
    char digits[420] = "1";
    memset(digits + 1, '0', 400);
    digits[401] = 0;
    v = parse(digits, &err);
    CHECK(v && !json_is_integer(v) && isinf(json_number(v)));
    sbuf b = { 0 };
    CHECK_INT(json_repr_python(v, &b), 0);
    CHECK_STR(b.data, digits);
    sbuf_free(&b);
    json_free(v);
}

static void test_repr_python(void)
{
    CHECK_REPR("{\"a\": 1.0, \"b\": [true, null], \"c\": \"it\\u0027s\"}",
               "{'a': 1.0, 'b': [True, None], 'c': \"it's\"}");
    CHECK_REPR("{\"name\":\"get_weather\",\"description\":\"Get weather\",\"parameters\":{\"type\":\"object\","
               "\"properties\":{\"city\":{\"type\":\"string\"}}}}",
               "{'name': 'get_weather', 'description': 'Get weather', 'parameters': {'type': 'object', 'properties': "
               "{'city': {'type': 'string'}}}}");
    /* Quotes: ' switches to "..." unless " is there too. */
    CHECK_REPR("\"say \\\"hi\\\"\"", "'say \"hi\"'");
    CHECK_REPR("\"it\\u0027s \\\"both\\\"\"", "'it\\'s \"both\"'");
    CHECK_REPR("\"it's\"", "\"it's\"");
    /* Escapes. */
    CHECK_REPR("\"back\\\\slash \\/ tab\\t nl\\n cr\\r bell\\u0007 del\\u007f nul\\u0000\"",
               "'back\\\\slash / tab\\t nl\\n cr\\r bell\\x07 del\\x7f nul\\x00'");
    CHECK_REPR("\"\\u0085 \\u00a0 \\u00ad \\u00e9 \\u00ff \\u0100\"", "'\\x85 \\xa0 \\xad é ÿ Ā'");
    CHECK_REPR("\"\\u200b \\u2028 \\u3000 \\ue000 \\u0378 \\ufeff \\uffff\"",
               "'\\u200b \\u2028 \\u3000 \\ue000 \\u0378 \\ufeff \\uffff'");
    CHECK_REPR("\"\\ud83d\\ude00 \\udb40\\udc01 \\ud800\\udc00 \\udbff\\udfff\"", "'😀 \\U000e0001 𐀀 \\U0010ffff'");
    CHECK_REPR("\"caf\\u00e9 日本\"", "'café 日本'");
    /* Numbers: ints as written (any size; -0 is 0), floats as Python's shortest repr. */
    CHECK_REPR("[1.0, 0.1, 0.000001, 1e20, 1e16, 1e15, 0.0001, 1.5e300, -0.0, 0.0, 5e-324, 1e400, -1e400, "
               "123456789.123, 2.5, 1e2, 1E-7, 0.30000000000000004, 100, -0, 12345678901234567890123, "
               "-9223372036854775808, 9223372036854775808]",
               "[1.0, 0.1, 1e-06, 1e+20, 1e+16, 1000000000000000.0, 0.0001, 1.5e+300, -0.0, 0.0, 5e-324, inf, -inf, "
               "123456789.123, 2.5, 100.0, 1e-07, 0.30000000000000004, 100, 0, 12345678901234567890123, "
               "-9223372036854775808, 9223372036854775808]");
    /* Doubles where the correctly rounded 16 digits do not read back but a
     * neighbour does (powers of two): Python prints 16 digits, not 17. */
    CHECK_REPR("[5.641232424577593e-278, 5.351097043477547e-197, 5.334411546303884e+241, 9007199254740992.0, "
               "2.2250738585072014e-308]",
               "[5.641232424577593e-278, 5.351097043477547e-197, 5.334411546303884e+241, 9007199254740992.0, "
               "2.2250738585072014e-308]");
    /* Where Python switches to exponent notation: below 1e-4, from 1e16. */
    CHECK_REPR("[0.00001, 0.000012345, 0.0001234, 9.999e-5, 9999999999999998.0, 1e16]",
               "[1e-05, 1.2345e-05, 0.0001234, 9.999e-05, 9999999999999998.0, 1e+16]");
    CHECK_REPR("[[], {}, [[]], {\"\": {}}, \"\", true, false, null]",
               "[[], {}, [[]], {'': {}}, '', True, False, None]");

    /* str() differs only for a string at the top: no quotes, no escapes. */
    smq_err err;
    json_value *v = parse("\"it's\\n\\u0000x\"", &err);
    sbuf b = { 0 };
    CHECK_INT(json_str_python(v, &b), 0);
    CHECK_INT(b.len, 7);
    CHECK(b.data && memcmp(b.data, "it's\n\0x", 8) == 0);
    sbuf_free(&b);
    json_free(v);
    v = parse("[\"a\"]", &err);
    b = (sbuf){ 0 };
    CHECK_INT(json_str_python(v, &b), 0);
    CHECK_STR(b.data, "['a']");
    /* Appending: both reprs end up after what was there. */
    CHECK_INT(json_repr_python(v, &b), 0);
    CHECK_STR(b.data, "['a']['a']");
    sbuf_free(&b);
    json_free(v);
}

static void test_truthy(void)
{
    const char *falsy[] = { "null", "false", "0", "-0", "0.0", "-0.0", "0e5", "\"\"", "[]", "{}" };
    const char *truthy[] = { "true", "1", "-1", "1e-300", "99999999999999999999", "\" \"", "[0]", "{\"\":0}" };
    smq_err err;
    for (size_t i = 0; i < sizeof falsy / sizeof falsy[0]; i++) {
        json_value *v = parse(falsy[i], &err);
        CHECK_MSG(v && !json_truthy(v), "%s is true", falsy[i]);
        json_free(v);
    }
    for (size_t i = 0; i < sizeof truthy / sizeof truthy[0]; i++) {
        json_value *v = parse(truthy[i], &err);
        CHECK_MSG(v && json_truthy(v), "%s is false", truthy[i]);
        json_free(v);
    }
    CHECK_STR(json_type_name(JSON_OBJECT), "object");
    CHECK_STR(json_type_name(JSON_BOOL), "boolean");
}

/* Every line of the JSONL goldens is one document. */
static void test_golden_lines(void)
{
    const char *files[] = { "chat/chat_goldens.jsonl", "tokenizer/tokenizer_goldens.jsonl" };
    const int want_lines[] = { 5, 60 };
    for (int f = 0; f < 2; f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", test_data_dir(), files[f]);
        size_t len;
        char *text = test_read_file(path, &len);
        if (!text)
            return;
        int lines = 0;
        for (size_t start = 0; start < len;) {
            const char *nl = memchr(text + start, '\n', len - start);
            size_t end = nl ? (size_t)(nl - text) : len;
            smq_err err;
            json_value *v = json_parse(text + start, end - start, files[f], &err);
            CHECK_MSG(v, "%s", err.msg);
            if (v && f == 0) {
                size_t rl;
                CHECK(json_typeof(json_get(v, "messages")) == JSON_ARRAY && json_len(json_get(v, "messages")) >= 1);
                CHECK(json_string(json_get(v, "rendered"), &rl) && rl > 100);
                CHECK(json_is_integer(json_at(json_get(v, "ids"), 0)));
            } else if (v) {
                const json_value *ids = json_get(v, "ids");
                CHECK(json_string(json_get(v, "text"), NULL) && json_typeof(ids) == JSON_ARRAY);
                for (size_t i = 0; i < json_len(ids); i++)
                    CHECK(json_is_integer(json_at(ids, i)) && json_integer(json_at(ids, i)) < 128256);
            }
            json_free(v);
            lines++;
            start = end + 1;
        }
        CHECK_INT(lines, want_lines[f]);
        free(text);
    }
}

int main(void)
{
    test_program = "json";
    TEST_RUN(test_scalars);
    TEST_RUN(test_containers);
    TEST_RUN(test_strings);
    TEST_RUN(test_not_nul_terminated);
    TEST_RUN(test_errors);
    TEST_RUN(test_duplicate_keys_large);
    TEST_RUN(test_depth);
    TEST_RUN(test_large);
    TEST_RUN(test_big_numbers);
    TEST_RUN(test_repr_python);
    TEST_RUN(test_truthy);
    TEST_RUN(test_golden_lines);
    return test_done();
}

/* openai_response_test.c - gateway/openai_response.c's hand-written JSON
 * (json_put_str, openai_chunk_event) against jansson, the library the rest
 * of the gateway's JSON is built with: byte for byte, for every ASCII
 * byte, multi-byte UTF-8, random valid UTF-8, and every shape of chunk. */
#include "openai_response.h"

#include "test.h"

/* jansson's rendering of a string, as json_put_str must write it (dumped
 * in an array, as json_put dumps only objects and arrays). */
static void jansson_str(const char *p, size_t n, sbuf *out)
{
    json_t *s = json_stringn(p, n);
    CHECK_MSG(s, "jansson refused a %zu-byte string (not UTF-8?)", n);
    sbuf a = { 0 };
    if (json_put(json_pack("[o]", s), &a) == 0 && a.len >= 2)
        sbuf_append(out, a.data + 1, a.len - 2);
    sbuf_free(&a);
}

static int same_str(const char *p, size_t n)
{
    sbuf want = { 0 }, got = { 0 };
    jansson_str(p, n, &want);
    CHECK(json_put_str(&got, p, n) == 0);
    int same = want.len == got.len && !memcmp(want.data, got.data, got.len);
    if (!same)
        CHECK_MSG(0, "%zu bytes starting 0x%02x: %s, jansson %s", n, n ? (unsigned char)p[0] : 0, got.data, want.data);
    sbuf_free(&want);
    sbuf_free(&got);
    return same;
}

/* Each byte 0x00-0x7F alone and inside text; an empty string; quotes,
 * backslashes and slashes (kept: jansson does not escape '/'). */
static void test_ascii(void)
{
    for (int c = 0; c < 0x80; c++) {
        char one = (char)c, mid[5] = { 'a', 'b', (char)c, 'd', 'e' };
        if (!same_str(&one, 1) || !same_str(mid, sizeof mid))
            return;
    }
    same_str("", 0);
    const char *s = "say \"hi\"\\n </script> \\\\ // \x7f";
    same_str(s, strlen(s));
}

/* Multi-byte characters are written as they are, U+2028 included. */
static void test_utf8(void)
{
    const char *s[] = { "caf\xc3\xa9",
                        "\xe4\xb8\xad\xe6\x96\x87",
                        "\xf0\x9f\x98\x80 smile",
                        "line\xe2\x80\xa8sep",
                        "\xef\xbf\xbd",
                        "\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf" };
    for (size_t i = 0; i < sizeof s / sizeof *s; i++)
        same_str(s[i], strlen(s[i]));
}

static size_t put_utf8(uint32_t cp, char *o)
{
    if (cp < 0x80)
        return o[0] = (char)cp, 1;
    if (cp < 0x800)
        return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 63)), o[2] = (char)(0x80 | (cp & 63)), 3;
    o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 63));
    return o[2] = (char)(0x80 | (cp >> 6 & 63)), o[3] = (char)(0x80 | (cp & 63)), 4;
}

/* 3000 random strings of random code points (controls and escapes often). */
static void test_random_utf8(void)
{
    uint64_t x = 88172645463325252ull;
    char buf[200];
    for (int t = 0; t < 3000; t++) {
        size_t n = 0;
        int len = t % 40;
        for (int i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint32_t cp, kind = (uint32_t)(x >> 60);
            if (kind < 6)
                cp = (uint32_t)(x % 0x80);
            else if (kind < 9)
                cp = 0x80 + (uint32_t)(x % 0x780);
            else if (kind < 13)
                cp = 0x800 + (uint32_t)(x % 0xF800);
            else
                cp = 0x10000 + (uint32_t)(x % 0x100000);
            if (cp >= 0xD800 && cp < 0xE000)
                cp = 'x'; /* surrogates are not characters */
            n += put_utf8(cp, buf + n);
        }
        if (!same_str(buf, n))
            return;
    }
}

/* The chunk as the gateway built it with jansson before: the reference. */
static void jansson_chunk(const openai_meta *m, const char *role, smq_str reasoning, smq_str content,
                          const char *finish, sbuf *out)
{
    json_t *delta = json_object();
    if (role)
        json_object_set_new(delta, "role", json_str(role));
    if (reasoning.p)
        json_object_set_new(delta, "reasoning_content", json_stringn(reasoning.p, reasoning.n));
    if (content.p)
        json_object_set_new(delta, "content", json_stringn(content.p, content.n));
    json_t *choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs", "finish_reason",
                               finish ? json_str(finish) : json_null());
    json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:n, s:[o]}", "id", m->id, "object", "chat.completion.chunk", "created",
                          (json_int_t)m->created, "model", m->model, "system_fingerprint", "choices", choice);
    if (m->usage_null)
        json_object_set_new(c, "usage", json_null());
    sbuf_puts(out, "data: ");
    json_put(c, out);
    sbuf_puts(out, "\n\n");
}

/* Every combination of role, reasoning, content, finish and usage: null. */
static void test_chunks(void)
{
    const char *models[] = { "smollm3-tiny-q4_k_m", "odd \"model\"\\name\x01" };
    const char *t = " the \"quick\"\n\xc3\xa9";
    smq_str none = { NULL, 0 }, empty = { "", 0 }, text = { t, (uint32_t)strlen(t) };
    smq_str texts[] = { none, empty, text };
    int cases = 0, bad = 0;
    for (int i = 0; i < 2 * 2 * 2 * 3 * 3 * 3 && !bad; i++, cases++) {
        int mi = i % 2, un = i / 2 % 2, ro = i / 4 % 2, re = i / 8 % 3, co = i / 24 % 3, fi = i / 72;
        openai_meta m = { "chatcmpl-4f2a9c", models[mi], 1764259200 + mi, un };
        const char *role = ro ? "assistant" : NULL, *finish = fi == 0 ? NULL : fi == 1 ? "stop" : "length";
        sbuf want = { 0 }, got = { 0 };
        jansson_chunk(&m, role, texts[re], texts[co], finish, &want);
        CHECK(openai_chunk_event(&m, role, texts[re], texts[co], finish, &got) == 0);
        bad = got.len != want.len || memcmp(got.data, want.data, got.len);
        CHECK_MSG(!bad, "case %d:\n%s\njansson:\n%s", i, got.data, want.data);
        sbuf_free(&want);
        sbuf_free(&got);
    }
    CHECK_MSG(cases == 216, "%d cases", cases);
}

int main(void)
{
    test_program = "openai_response";
    TEST_RUN(test_ascii);
    TEST_RUN(test_utf8);
    TEST_RUN(test_random_utf8);
    TEST_RUN(test_chunks);
    return test_done();
}

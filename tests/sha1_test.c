/* sha1_test.c - gateway/sha1.c: the FIPS 180 examples, messages of every
 * length around the padding's boundaries (digests printed by Python's
 * hashlib), the same digest however the input is split, and the WebSocket
 * handshake's example from RFC 6455. */
#include "sha1.h"

#include "test.h"

static void hex(const uint8_t d[SHA1_LEN], char out[2 * SHA1_LEN + 1])
{
    for (int i = 0; i < SHA1_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void check_digest(const void *data, size_t n, const char *want)
{
    uint8_t d[SHA1_LEN];
    char got[2 * SHA1_LEN + 1];
    sha1(data, n, d);
    hex(d, got);
    CHECK_MSG(!strcmp(got, want), "%zu bytes: %s, expected %s", n, got, want);
}

/* FIPS 180-2, appendix A: "abc", the 448-bit message, a million 'a'. */
static void test_fips_examples(void)
{
    check_digest("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    check_digest("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_digest(m, strlen(m), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    size_t n = 1000000;
    char *a = malloc(n);
    CHECK(a);
    if (!a)
        return;
    memset(a, 'a', n);
    check_digest(a, n, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(a);
}

/* Lengths where the padding takes one block or spills into a second. */
static void test_padding_boundaries(void)
{
    static const struct {
        size_t n;
        const char *digest;
    } cases[] = {
        { 55, "ddf57317ef34bfee3b6df83d359098930eb278bc" },  { 56, "a0d492bb0fc889d0eca3bc137066ab6f4f74f369" },
        { 57, "11a02dcf95859677a62e75024067c22b165d890f" },  { 63, "c55856749bef509bdfe6bfebfc7bf4e793e82132" },
        { 64, "bede92be29c3874e1b54ddc77988d606fc857a8e" },  { 65, "b05a80522b053d6dc7e0a517d0e70212c7dad11f" },
        { 119, "504e27376a6e0f0dba8295b85cb25dc4dfa17d23" }, { 120, "82134b02fb3f702491be9bed581eeab59334acb2" },
        { 128, "a09133e6730ffe899efb70204cb5646cd5dc24ee" },
    };
    uint8_t m[128];
    for (size_t i = 0; i < sizeof m; i++)
        m[i] = (uint8_t)(i * 7 + 3);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        check_digest(m, cases[c].n, cases[c].digest);
}

/* Every split of a 200-byte message into two or three updates (empty ones
 * included) gives the one-call digest. */
static void test_split_updates(void)
{
    uint8_t m[200], want[SHA1_LEN], got[SHA1_LEN];
    for (size_t i = 0; i < sizeof m; i++)
        m[i] = (uint8_t)(i * 131 + 17);
    sha1(m, sizeof m, want);
    int bad = 0;
    for (size_t a = 0; a <= sizeof m; a++)
        for (size_t b = a; b <= sizeof m; b += 13) {
            sha1_ctx c;
            sha1_init(&c);
            sha1_update(&c, m, a);
            sha1_update(&c, m + a, b - a);
            sha1_update(&c, m + b, sizeof m - b);
            sha1_final(&c, got);
            bad += memcmp(got, want, SHA1_LEN) != 0;
        }
    CHECK_MSG(!bad, "%d splits differ from the one-call digest", bad);
}

/* RFC 6455 section 1.3: the key "dGhlIHNhbXBsZSBub25jZQ==" with the GUID
 * hashes to the bytes whose base64 is "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=". */
static void test_websocket_example(void)
{
    const char *s = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    check_digest(s, strlen(s), "b37a4f2cc0624f1690f64606cf385945b2bec4ea");
}

int main(void)
{
    test_program = "sha1";
    TEST_RUN(test_fips_examples);
    TEST_RUN(test_padding_boundaries);
    TEST_RUN(test_split_updates);
    TEST_RUN(test_websocket_example);
    return test_done();
}

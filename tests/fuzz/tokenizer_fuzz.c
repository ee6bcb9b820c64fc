/* tokenizer_fuzz.c - libFuzzer target: encode and decode on arbitrary input.
 *
 * The input is read two ways: as text (encoded with and without special
 * tokens, and the ids decoded back; valid UTF-8 text must round-trip up to
 * the clean-up), and as little-endian 32-bit token ids (decoded and
 * streamed; the stream must be valid UTF-8 and equal the sanitized decode);
 * and with a plain-text range in the middle (tokenizer_encode_spans).
 * Uses the test model's vocabulary (SMQ_TEST_DATA or tests/data).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"
#include "utf8.h"

static tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("SMQ_TEST_DATA");
    char path[512];
    snprintf(path, sizeof path, "%s/models/smollm3-tiny-q4_k_m.gguf", dir && *dir ? dir : "tests/data");
    smq_err err;
    gguf_file *f = gguf_open(path, &err);
    tok = f ? tokenizer_load(f, &err) : NULL;
    gguf_close(&f);
    if (!tok) {
        fprintf(stderr, "tokenizer_fuzz: %s\n", err.msg);
        abort();
    }
    return 0;
}

static void check_stream(const int32_t *ids, size_t n, int special)
{
    smq_err err;
    sbuf dec = { 0 }, st = { 0 };
    if (tokenizer_decode(tok, ids, n, special, &dec, &err))
        abort();
    detok_stream d;
    detok_init(&d, tok, special);
    for (size_t i = 0; i < n; i++)
        if (detok_feed(&d, ids[i], &st, &err))
            abort();
    detok_flush(&d, &st);
    size_t clen;
    char *clean = utf8_sanitize(dec.data ? dec.data : "", dec.len, &clen);
    if (!clean || clen != st.len || memcmp(clean, st.data ? st.data : "", clen) ||
        !utf8_valid(st.data ? st.data : "", st.len, 1))
        abort();
    free(clean);
    sbuf_free(&dec);
    sbuf_free(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smq_err err;
    for (int special = 0; special < 2; special++) {
        tok_ids ids = { 0 };
        if (tokenizer_encode(tok, (const char *)data, size, special, &ids, &err))
            abort();
        for (size_t i = 0; i < ids.n; i++)
            if (ids.ids[i] < 0 || (uint32_t)ids.ids[i] >= tokenizer_n_vocab(tok))
                abort();
        check_stream(ids.ids, ids.n, special);
        tok_ids_free(&ids);
    }
    /* A plain range in the middle (a chat message): ids in range, and no
     * control token the whole text would not have. */
    const size_t plain[1][2] = { { size / 3, 2 * size / 3 } };
    tok_ids a = { 0 }, b = { 0 };
    if (tokenizer_encode_spans(tok, (const char *)data, size, plain, 1, &a, &err) ||
        tokenizer_encode(tok, (const char *)data, size, 1, &b, &err))
        abort();
    size_t ctl_a = 0, ctl_b = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (a.ids[i] < 0 || (uint32_t)a.ids[i] >= tokenizer_n_vocab(tok))
            abort();
        ctl_a += tokenizer_token_type(tok, a.ids[i]) == TOKEN_CONTROL;
    }
    for (size_t i = 0; i < b.n; i++)
        ctl_b += tokenizer_token_type(tok, b.ids[i]) == TOKEN_CONTROL;
    if (ctl_a > ctl_b)
        abort();
    tok_ids_free(&a);
    tok_ids_free(&b);
    size_t n = size / 4;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        ids[i] = (int32_t)(v % tokenizer_n_vocab(tok));
    }
    check_stream(ids, n, 0);
    check_stream(ids, n, 1);
    free(ids);
    return 0;
}

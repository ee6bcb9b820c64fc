/* detok.c - token ids back to text: llama.cpp's detokenizer with its space
 * clean-up, whole (tokenizer_decode) and streaming (detok_stream). The
 * clean-up runs as a transducer, so that both give the same text. */
#include <inttypes.h>
#include <string.h>

#include "tokenizer.h"

/* llama.cpp's three clean-up passes, each a small state machine:
 *   1. drop a space before ? ! . ,
 *   2. " ' " -> "'"
 *   3. drop a space before 's 'm 're 've                                  */
static void clean3(text_cleaner *c, char ch, sbuf *out)
{
    for (;;) {
        switch (c->n3) {
        case 0:
            if (ch == ' ')
                c->n3 = 1;
            else
                sbuf_putc(out, ch);
            return;
        case 1: /* " " */
            if (ch == '\'') {
                c->n3 = 2;
            } else if (ch == ' ') {
                sbuf_putc(out, ' ');
            } else {
                sbuf_putc(out, ' ');
                sbuf_putc(out, ch);
                c->n3 = 0;
            }
            return;
        case 2: /* " '" */
            if (ch == 's' || ch == 'm') {
                sbuf_putc(out, '\'');
                sbuf_putc(out, ch);
                c->n3 = 0;
                return;
            }
            if (ch == 'r' || ch == 'v') {
                c->h3[2] = ch;
                c->n3 = 3;
                return;
            }
            sbuf_append(out, " '", 2);
            c->n3 = 0;
            continue; /* ch starts afresh */
        default:      /* " 'r" or " 'v" */
            if (ch == 'e') {
                sbuf_putc(out, '\'');
                sbuf_putc(out, c->h3[2]);
                sbuf_putc(out, 'e');
                c->n3 = 0;
                return;
            }
            sbuf_append(out, " '", 2);
            sbuf_putc(out, c->h3[2]);
            c->n3 = 0;
            continue;
        }
    }
}

static void clean2(text_cleaner *c, char ch, sbuf *out)
{
    if (c->n2 == 0) {
        if (ch == ' ')
            c->n2 = 1;
        else
            clean3(c, ch, out);
    } else if (c->n2 == 1) { /* " " */
        if (ch == '\'') {
            c->n2 = 2;
        } else if (ch == ' ') {
            clean3(c, ' ', out);
        } else {
            clean3(c, ' ', out);
            clean3(c, ch, out);
            c->n2 = 0;
        }
    } else { /* " '" */
        c->n2 = 0;
        if (ch == ' ') {
            clean3(c, '\'', out); /* both spaces go */
        } else {
            clean3(c, ' ', out);
            clean3(c, '\'', out);
            clean3(c, ch, out);
        }
    }
}

static void clean1(text_cleaner *c, char ch, sbuf *out)
{
    if (c->n1) {
        c->n1 = 0;
        if (!(ch == '?' || ch == '!' || ch == '.' || ch == ','))
            clean2(c, ' ', out);
    }
    if (ch == ' ')
        c->n1 = 1;
    else
        clean2(c, ch, out);
}

static void clean_flush(text_cleaner *c, sbuf *out)
{
    if (c->n1)
        clean2(c, ' ', out);
    if (c->n2 >= 1)
        clean3(c, ' ', out);
    if (c->n2 == 2)
        clean3(c, '\'', out);
    if (c->n3 >= 1)
        sbuf_putc(out, ' ');
    if (c->n3 >= 2)
        sbuf_putc(out, '\'');
    if (c->n3 == 3)
        sbuf_putc(out, c->h3[2]);
    memset(c, 0, sizeof *c);
}

int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, int special, sbuf *out, smq_err *err)
{
    text_cleaner c = { 0 };
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = tokenizer_piece(t, ids[i], special, &len);
        if (!p)
            return smq_err_set(err, "token id %" PRId32 " (at %zu) is outside the vocabulary of %" PRIu32, ids[i], i,
                               tokenizer_n_vocab(t));
        if (!tokenizer_clean_spaces(t)) {
            sbuf_append(out, p, len);
            continue;
        }
        for (size_t j = 0; j < len; j++)
            clean1(&c, p[j], out);
    }
    clean_flush(&c, out);
    return out->oom ? smq_err_set(err, "out of memory") : 0;
}

/* ---- streaming ---- */

void detok_init(detok_stream *d, const tokenizer *t, int special)
{
    memset(d, 0, sizeof *d);
    d->t = t;
    d->special = special;
    d->clean = tokenizer_clean_spaces(t);
}

/* Bytes after cleaning pass through here: complete characters go out,
 * an incomplete one waits, a broken one becomes U+FFFD. */
static void utf8_put(detok_stream *d, unsigned char b, sbuf *out)
{
    static const char fffd[] = "\xEF\xBF\xBD";
    for (;;) {
        if (d->n_utf8 == 0) {
            if (b < 0x80) {
                sbuf_putc(out, (char)b);
            } else if (b >= 0xC2 && b <= 0xF4) {
                d->utf8[0] = b;
                d->n_utf8 = 1;
                d->need_utf8 = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
            } else {
                sbuf_append(out, fffd, 3);
            }
            return;
        }
        /* The second byte's range depends on the first (no overlongs, no
         * surrogates, nothing past U+10FFFF); later ones are 80..BF. */
        unsigned char lo = 0x80, hi = 0xBF;
        if (d->n_utf8 == 1) {
            if (d->utf8[0] == 0xE0)
                lo = 0xA0;
            else if (d->utf8[0] == 0xED)
                hi = 0x9F;
            else if (d->utf8[0] == 0xF0)
                lo = 0x90;
            else if (d->utf8[0] == 0xF4)
                hi = 0x8F;
        }
        if (b >= lo && b <= hi) {
            d->utf8[d->n_utf8++] = b;
            if (d->n_utf8 == d->need_utf8) {
                sbuf_append(out, d->utf8, (size_t)d->n_utf8);
                d->n_utf8 = 0;
            }
            return;
        }
        /* None of the held bytes starts a valid sequence now: one U+FFFD
         * each, as utf8_sanitize (and so the encoder) counts them. */
        for (int k = 0; k < d->n_utf8; k++)
            sbuf_append(out, fffd, 3);
        d->n_utf8 = 0; /* and b starts afresh */
    }
}

/* The cleaner writes into a small buffer that then goes through utf8_put. */
int detok_feed(detok_stream *d, int32_t id, sbuf *out, smq_err *err)
{
    size_t len;
    const char *p = tokenizer_piece(d->t, id, d->special, &len);
    if (!p)
        return smq_err_set(err, "token id %" PRId32 " is outside the vocabulary of %" PRIu32, id,
                           tokenizer_n_vocab(d->t));
    sbuf cleaned = { 0 };
    const char *src = p;
    size_t n = len;
    if (d->clean) {
        for (size_t j = 0; j < len; j++)
            clean1(&d->cleaner, p[j], &cleaned);
        src = cleaned.data;
        n = cleaned.len;
    }
    for (size_t j = 0; j < n; j++)
        utf8_put(d, (unsigned char)src[j], out);
    int oom = cleaned.oom || out->oom;
    sbuf_free(&cleaned);
    return oom ? smq_err_set(err, "out of memory") : 0;
}

void detok_flush(detok_stream *d, sbuf *out)
{
    if (d->clean) {
        sbuf cleaned = { 0 };
        clean_flush(&d->cleaner, &cleaned);
        for (size_t j = 0; j < cleaned.len; j++)
            utf8_put(d, (unsigned char)cleaned.data[j], out);
        sbuf_free(&cleaned);
    }
    for (int k = 0; k < d->n_utf8; k++)
        sbuf_append(out, "\xEF\xBF\xBD", 3);
    d->n_utf8 = 0;
}

/* sbuf.h - a growable byte buffer (text we build: renderings, decoded text).
 * Always NUL-terminated after the first append, so data can be printed. */
#ifndef SMQ_SBUF_H
#define SMQ_SBUF_H

#include <stddef.h>

typedef struct sbuf {
    char *data;
    size_t len, cap;
    int oom; /* set when an append could not grow the buffer; later appends are dropped */
} sbuf;

/* Appends n bytes; returns 0, or -1 (and sets oom) when out of memory. */
int sbuf_append(sbuf *b, const void *p, size_t n);
int sbuf_puts(sbuf *b, const char *s);
int sbuf_putc(sbuf *b, char c);
/* Gives up the buffer to the caller (NULL if nothing was appended). */
char *sbuf_take(sbuf *b, size_t *len);
void sbuf_free(sbuf *b);

#endif

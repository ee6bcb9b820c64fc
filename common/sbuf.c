#include "sbuf.h"

#include <stdlib.h>
#include <string.h>

int sbuf_append(sbuf *b, const void *p, size_t n)
{
    if (b->oom)
        return -1;
    if (n >= b->cap - b->len || !b->data) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len <= n) {
            if (cap > (size_t)-1 / 2) {
                b->oom = 1;
                return -1;
            }
            cap *= 2;
        }
        char *d = realloc(b->data, cap);
        if (!d) {
            b->oom = 1;
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int sbuf_puts(sbuf *b, const char *s)
{
    return sbuf_append(b, s, strlen(s));
}

int sbuf_putc(sbuf *b, char c)
{
    return sbuf_append(b, &c, 1);
}

char *sbuf_take(sbuf *b, size_t *len)
{
    char *d = b->data;
    if (len)
        *len = b->len;
    memset(b, 0, sizeof *b);
    return d;
}

void sbuf_free(sbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

#include "utf8.h"

#include <stdlib.h>
#include <string.h>

int utf8_next(const char *s, size_t n, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)s;
    if (n == 0)
        return 0;
    unsigned char b = p[0];
    int extra;
    uint32_t c;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
        extra = 1, c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        extra = 2, c = b & 0x0F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        extra = 3, c = b & 0x07;
    } else {
        return 0;
    }
    if ((size_t)extra >= n)
        return 0;
    for (int k = 1; k <= extra; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (p[k] & 0x3F);
    }
    /* Overlong forms, surrogates and values past U+10FFFF. */
    if ((extra == 2 && c < 0x800) || (extra == 3 && (c < 0x10000 || c > 0x10FFFF)) || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return extra + 1;
}

int utf8_valid(const char *s, size_t n, int allow_nul)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int len = utf8_next(s + i, n - i, &cp);
        if (!len || (cp == 0 && !allow_nul))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

char *utf8_sanitize(const char *s, size_t n, size_t *out_len)
{
    if (n > ((size_t)-1 - 1) / 3)
        return NULL;
    char *out = malloc(3 * n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = utf8_next(s + i, n - i, &cp);
        if (len) {
            memcpy(out + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

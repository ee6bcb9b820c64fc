/* utf8.h - strict UTF-8 checks for text that comes from outside. */
#ifndef SMQ_UTF8_H
#define SMQ_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length in bytes (1-4) of the valid, shortest-form UTF-8 sequence at s[0..n)
 * (no surrogates, nothing above U+10FFFF), with its code point in *cp; 0 when
 * the bytes there are not one. */
int utf8_next(const char *s, size_t n, uint32_t *cp);

/* Nonzero when s[0..n) is entirely valid UTF-8; allow_nul says whether
 * U+0000 may appear (it may not in names that become C strings). */
int utf8_valid(const char *s, size_t n, int allow_nul);

#endif

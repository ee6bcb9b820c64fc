/* utf8.h - strict UTF-8 checks for text that comes from outside. */
#ifndef SMQ_UTF8_H
#define SMQ_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length in bytes (1-4) of the valid, shortest-form UTF-8 sequence at s[0..n)
 * (no surrogates, nothing above U+10FFFF), with its code point in *cp; 0 when
 * the bytes there are not one. */
int utf8_next(const char *s, size_t n, uint32_t *cp);

/* Writes code point cp (< 0x110000) as 1 to 4 bytes at out; returns the count. */
size_t utf8_encode(uint32_t cp, char *out);

/* Nonzero when s[0..n) is entirely valid UTF-8; allow_nul says whether
 * U+0000 may appear (it may not in names that become C strings). */
int utf8_valid(const char *s, size_t n, int allow_nul);

/* A malloc'd copy of s[0..n) with every byte that does not start a valid
 * sequence replaced by U+FFFD (so a broken 3-byte sequence of 2 bytes gives
 * two); NULL when out of memory. Length in *out_len, NUL-terminated. */
char *utf8_sanitize(const char *s, size_t n, size_t *out_len);

#endif

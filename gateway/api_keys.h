/* api_keys.h - the API keys a gateway accepts (--keys FILE).
 *
 * The file holds one key per line; blank lines and everything from a '#'
 * (at the start of a line or after a blank) are ignored. A request names
 * its key as `Authorization: Bearer KEY`. Keys are kept as SHA-1 digests
 * and a presented key is compared, by digest, with every key, always all
 * of them and without an early exit: the time taken says nothing about how
 * much of a key was right, nor which key matched.
 */
#ifndef SMQ_API_KEYS_H
#define SMQ_API_KEYS_H

#include <stddef.h>

#include "err.h"

typedef struct api_keys api_keys;

/* NULL with err naming the file (and line) when it cannot be read, a key
 * has a character outside printable ASCII, or it holds no key. */
api_keys *api_keys_load(const char *path, smq_err *err);
void api_keys_destroy(api_keys **self);
size_t api_keys_count(const api_keys *k);

/* Whether key[0..n) is one of the keys (constant time in its content). */
int api_keys_check(const api_keys *k, const char *key, size_t n);

#endif

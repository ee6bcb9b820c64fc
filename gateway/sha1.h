/* sha1.h - SHA-1 (FIPS 180-4), for the WebSocket handshake's
 * Sec-WebSocket-Accept (RFC 6455 names SHA-1) and for comparing API keys by
 * digest. Not for anything that needs collision resistance. */
#ifndef SMQ_SHA1_H
#define SMQ_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define SHA1_LEN 20

typedef struct sha1_ctx {
    uint32_t h[5];
    uint64_t len; /* bytes hashed */
    uint8_t block[64];
    size_t fill;
} sha1_ctx;

void sha1_init(sha1_ctx *c);
void sha1_update(sha1_ctx *c, const void *data, size_t n);
void sha1_final(sha1_ctx *c, uint8_t out[SHA1_LEN]);
/* The digest of data[0..n) in one call. */
void sha1(const void *data, size_t n, uint8_t out[SHA1_LEN]);

#endif

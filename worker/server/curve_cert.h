/* curve_cert.h - a CURVE key pair from a czmq certificate file.
 *
 * `smolmq-broker --keygen PATH` writes czmq certificates (ZPL text):
 *
 *   curve
 *       public-key = "Z85 (40 characters)"
 *       secret-key = "Z85 (40 characters)"
 *
 * The worker speaks plain libzmq, so it reads the two keys itself.
 */
#ifndef SMQ_CURVE_CERT_H
#define SMQ_CURVE_CERT_H

#include "err.h"

#define CURVE_Z85_LEN 40

/* Reads path's public and secret keys (NUL-terminated Z85). Returns 0, or
 * -1 with err naming the file and what is missing or malformed. */
int curve_cert_load(const char *path, char public_key[CURVE_Z85_LEN + 1], char secret_key[CURVE_Z85_LEN + 1],
                    smq_err *err);

/* Whether s is a Z85-encoded 32-byte key (40 characters of Z85's alphabet). */
int curve_key_valid(const char *s);

#endif

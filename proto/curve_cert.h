/* curve_cert.h - a CURVE key pair from a czmq certificate file.
 *
 * `smolmq-broker --keygen PATH` writes czmq certificates (ZPL text):
 *
 *   curve
 *       public-key = "Z85 (40 characters)"
 *       secret-key = "Z85 (40 characters)"
 *
 * The worker and the gateway speak plain libzmq, so they read the two keys
 * themselves; curve_client_apply() puts them on a DEALER.
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

/* Makes the DEALER sock a CURVE client of the broker whose public key is
 * server_key, with the key pair public_key/secret_key (either NULL: a fresh
 * pair, which an allow-list will not know). who names the side in errors
 * ("worker", "gateway", "client"). Returns 0, or -1 with err. */
int curve_client_apply(void *sock, const char *server_key, const char *public_key, const char *secret_key,
                       const char *who, smq_err *err);

#endif

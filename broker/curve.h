/* curve.h - CURVE security for the broker's two ROUTERs: the server
 * certificate, and a ZAP handler (ZeroMQ RFC 27) that admits a peer by its
 * public key from the allow-list of the side it connects to ("clients" or
 * "workers", the sockets' ZAP domains). */
#ifndef SMQ_CURVE_H
#define SMQ_CURVE_H

#include <czmq.h>

#include "err.h"

typedef struct curve curve;

/* secret_path: a czmq certificate with the secret key. client_keys,
 * worker_keys: files of Z85 public keys, one per line, # comments; NULL:
 * any key is admitted on that side. Binds the ZAP handler, so call it
 * before the ROUTERs bind. */
curve *curve_new(const char *secret_path, const char *client_keys, const char *worker_keys, smq_err *err);
void curve_destroy(curve **self);
/* Makes sock a CURVE server with the broker's keys. */
void curve_apply_server(curve *c, zsock_t *sock);
/* The ZAP socket to poll, and one request answered when it is readable. */
zsock_t *curve_zap_sock(curve *c);
void curve_zap_handle(curve *c);

/* Reads a file of Z85 public keys into a set; -1 with err naming the file
 * and line of a malformed key. */
int curve_read_keys(const char *path, zhashx_t *set, smq_err *err);

#endif

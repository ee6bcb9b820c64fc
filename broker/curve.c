/* curve.c - the broker's CURVE certificate and its ZAP handler (curve.h).
 *
 * Not czmq's zauth actor: it keeps one allow-list for every socket of the
 * process, and the broker needs one per side (a client key must not be able
 * to register as a worker). The handler is a REP socket on libzmq's ZAP
 * endpoint, polled by the broker's own loop; libzmq holds a connecting
 * peer's handshake until the reply comes. */
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "curve.h"

struct curve {
    zcert_t *cert;
    zsock_t *zap;
    zhashx_t *clients, *workers; /* NULL: any key */
};

int curve_read_keys(const char *path, zhashx_t *set, smq_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return smq_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    char line[512];
    int n = 0, rc = 0;
    /* A line: a key (its first word), then anything (a comment). '#' is a
     * Z85 digit, so a line is a comment only when its first word is not a
     * 40-character key and starts with '#'. */
    while (fgets(line, sizeof line, f)) {
        n++;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t len = strcspn(s, " \t\r\n");
        if (!len)
            continue;
        uint8_t bin[32];
        char key[41];
        if (len == 40) {
            memcpy(key, s, 40);
            key[40] = 0;
            if (zmq_z85_decode(bin, key)) {
                zhashx_update(set, key, (void *)1);
                continue;
            }
        }
        if (s[0] == '#')
            continue;
        rc = smq_err_set(err, "%s: line %d: not a Z85 public key (40 characters)", path, n);
        break;
    }
    fclose(f);
    return rc;
}

static zhashx_t *read_list(const char *path, smq_err *err)
{
    if (!path)
        return NULL;
    zhashx_t *set = zhashx_new();
    if (curve_read_keys(path, set, err))
        zhashx_destroy(&set);
    return set;
}

curve *curve_new(const char *secret_path, const char *client_keys, const char *worker_keys, smq_err *err)
{
    if (!zsys_has_curve()) {
        smq_err_set(err, "this libzmq was built without CURVE");
        return NULL;
    }
    curve *c = calloc(1, sizeof *c);
    if (!c) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    if (!(c->cert = zcert_load(secret_path)) ||
        !strcmp(zcert_secret_txt(c->cert), "0000000000000000000000000000000000000000")) {
        smq_err_set(err, "%s: not a certificate with a secret key (make one with smolmq-broker --keygen PATH)",
                    secret_path);
        goto fail;
    }
    if ((client_keys && !(c->clients = read_list(client_keys, err))) ||
        (worker_keys && !(c->workers = read_list(worker_keys, err))))
        goto fail;
    c->zap = zsock_new(ZMQ_REP);
    if (!c->zap || zsock_bind(c->zap, "inproc://zeromq.zap.01") < 0) {
        smq_err_set(err, "cannot bind the ZAP handler (inproc://zeromq.zap.01)");
        goto fail;
    }
    return c;
fail:
    curve_destroy(&c);
    return NULL;
}

void curve_destroy(curve **self)
{
    curve *c = *self;
    if (!c)
        return;
    zcert_destroy(&c->cert);
    zsock_destroy(&c->zap);
    zhashx_destroy(&c->clients);
    zhashx_destroy(&c->workers);
    free(c);
    *self = NULL;
}

void curve_apply_server(curve *c, zsock_t *sock)
{
    zcert_apply(c->cert, sock);
    zsock_set_curve_server(sock, 1);
}

zsock_t *curve_zap_sock(curve *c)
{
    return c->zap;
}

/* A ZAP request: version, request id, domain, address, identity,
 * mechanism, credentials (for CURVE: the 32-byte client public key). */
void curve_zap_handle(curve *c)
{
    zmsg_t *req = zmsg_recv(c->zap);
    if (!req)
        return;
    char *version = zmsg_popstr(req), *request_id = zmsg_popstr(req), *domain = zmsg_popstr(req);
    char *address = zmsg_popstr(req), *identity = zmsg_popstr(req), *mechanism = zmsg_popstr(req);
    zframe_t *key = zmsg_pop(req);
    const char *status = "400", *text = "key not allowed";
    char z85[41] = "";
    if (key && zframe_size(key) == 32 && mechanism && !strcmp(mechanism, "CURVE")) {
        zmq_z85_encode(z85, zframe_data(key), 32);
        zhashx_t *list = domain && !strcmp(domain, "workers") ? c->workers : c->clients;
        if (!list || zhashx_lookup(list, z85))
            status = "200", text = "OK";
    } else {
        text = "CURVE required";
    }
    if (strcmp(status, "200"))
        fprintf(stderr, "smolmq-broker: refused %s %s from %s: %s\n", domain ? domain : "?", z85[0] ? z85 : "peer",
                address ? address : "?", text);
    zmsg_t *rep = zmsg_new();
    zmsg_addstr(rep, "1.0");
    zmsg_addstr(rep, request_id ? request_id : "");
    zmsg_addstr(rep, status);
    zmsg_addstr(rep, text);
    zmsg_addstr(rep, z85);
    zmsg_addstr(rep, "");
    zmsg_send(&rep, c->zap);
    zstr_free(&version);
    zstr_free(&request_id);
    zstr_free(&domain);
    zstr_free(&address);
    zstr_free(&identity);
    zstr_free(&mechanism);
    zframe_destroy(&key);
    zmsg_destroy(&req);
}

int broker_keygen(const char *path, smq_err *err)
{
    zcert_t *cert = zcert_new();
    char pub[4096];
    snprintf(pub, sizeof pub, "%s.pub", path);
    if (!cert || zcert_save_secret(cert, path) || zcert_save_public(cert, pub)) {
        zcert_destroy(&cert);
        return smq_err_set(err, "%s: cannot write the key pair: %s", path, strerror(errno));
    }
    printf("public key %s\nsecret key in %s, public key in %s\n", zcert_public_txt(cert), path, pub);
    zcert_destroy(&cert);
    return 0;
}

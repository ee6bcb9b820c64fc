/* curve_cert.c - see curve_cert.h. */
#include "curve_cert.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

int curve_key_valid(const char *s)
{
    uint8_t key[32];
    return strlen(s) == CURVE_Z85_LEN && zmq_z85_decode(key, s) != NULL;
}

/* The value of `name = "value"` when line (leading blanks skipped) is that
 * assignment: 0 with the value copied to out, 1 when the line is something
 * else, -1 when it names the key but the value is not a key. */
static int key_line(const char *line, const char *name, char out[CURVE_Z85_LEN + 1])
{
    line += strspn(line, " \t");
    size_t n = strlen(name);
    if (strncmp(line, name, n))
        return 1;
    line += n;
    line += strspn(line, " \t");
    if (*line++ != '=')
        return 1;
    line += strspn(line, " \t");
    char quote = *line == '"' || *line == '\'' ? *line++ : 0;
    size_t len = strcspn(line, quote == '"' ? "\"" : quote ? "'" : " \t\r\n#");
    if (len != CURVE_Z85_LEN || (quote && line[len] != quote))
        return -1;
    memcpy(out, line, len);
    out[len] = 0;
    return curve_key_valid(out) ? 0 : -1;
}

int curve_cert_load(const char *path, char public_key[CURVE_Z85_LEN + 1], char secret_key[CURVE_Z85_LEN + 1],
                    smq_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return smq_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    char line[512];
    int have_public = 0, have_secret = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        int rc = key_line(line, "public-key", public_key);
        if (rc == 0)
            have_public = 1;
        if (rc == 1 && (rc = key_line(line, "secret-key", secret_key)) == 0)
            have_secret = 1;
        if (rc < 0) {
            fclose(f);
            return smq_err_set(err, "%s:%d: the key is not 40 characters of Z85", path, lineno);
        }
    }
    fclose(f);
    if (!have_public || !have_secret)
        return smq_err_set(err,
                           "%s: no %s: a CURVE certificate (smolmq-broker --keygen PATH) has public-key and "
                           "secret-key lines; give the secret one (PATH, not PATH.pub)",
                           path, have_public ? "secret-key" : "public-key");
    return 0;
}

static int set_key(void *sock, int option, const char *key, const char *what, const char *who, smq_err *err)
{
    if (!key || !curve_key_valid(key))
        return smq_err_set(err, "CURVE: the %s%s must be 40 characters of Z85", who, what);
    if (zmq_setsockopt(sock, option, key, CURVE_Z85_LEN + 1))
        return smq_err_set(err, "CURVE: the %s%s: %s", who, what, zmq_strerror(errno));
    return 0;
}

int curve_client_apply(void *sock, const char *server_key, const char *public_key, const char *secret_key,
                       const char *who, smq_err *err)
{
    char pub[CURVE_Z85_LEN + 1], sec[CURVE_Z85_LEN + 1];
    if (!public_key || !secret_key) {
        if (zmq_curve_keypair(pub, sec))
            return smq_err_set(err, "CURVE: cannot make a key pair: %s", zmq_strerror(errno));
        public_key = pub, secret_key = sec;
    }
    char mine[64];
    snprintf(mine, sizeof mine, "%s's ", who);
    return set_key(sock, ZMQ_CURVE_SERVERKEY, server_key, "public key", "broker's ", err) ||
                   set_key(sock, ZMQ_CURVE_PUBLICKEY, public_key, "public key", mine, err) ||
                   set_key(sock, ZMQ_CURVE_SECRETKEY, secret_key, "secret key", mine, err)
               ? -1
               : 0;
}

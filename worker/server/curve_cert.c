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

/* api_keys.c - API keys from a file, compared in constant time (api_keys.h). */
#include "api_keys.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha1.h"

#define KEY_LINE_MAX 1024

struct api_keys {
    uint8_t (*digests)[SHA1_LEN];
    size_t n;
};

/* The key on line s (NUL-terminated, its newline removed): s[0..*len) after
 * blanks; *len 0 for a blank or comment line. -1 for a key with a byte
 * outside printable ASCII. */
static int key_of_line(char *s, const char **key, size_t *len)
{
    s += strspn(s, " \t\r");
    size_t n = strcspn(s, " \t\r#");
    *key = s;
    *len = n;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return -1;
    return 0;
}

api_keys *api_keys_load(const char *path, smq_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        smq_err_set(err, "--keys %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    api_keys *k = calloc(1, sizeof *k);
    char line[KEY_LINE_MAX + 2];
    int lineno = 0, bad = 0;
    while (k && !bad && fgets(line, sizeof line, f)) {
        lineno++;
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\n')
            line[--ll] = 0;
        else if (!feof(f)) {
            smq_err_set(err, "--keys %s:%d: the line is longer than %d bytes", path, lineno, KEY_LINE_MAX);
            bad = 1;
            break;
        }
        const char *key;
        size_t n;
        if (key_of_line(line, &key, &n)) {
            smq_err_set(err, "--keys %s:%d: a key must be printable ASCII without blanks", path, lineno);
            bad = 1;
        } else if (n) {
            void *d = realloc(k->digests, (k->n + 1) * sizeof *k->digests);
            if (!d) {
                smq_err_set(err, "out of memory");
                bad = 1;
                break;
            }
            k->digests = d;
            sha1(key, n, k->digests[k->n++]);
        }
    }
    fclose(f);
    if (!k)
        smq_err_set(err, "out of memory");
    else if (!bad && k->n == 0)
        bad = smq_err_set(err, "--keys %s: no key in the file (one per line; # starts a comment)", path) != 0;
    if (!k || bad) {
        api_keys_destroy(&k);
        return NULL;
    }
    return k;
}

void api_keys_destroy(api_keys **self)
{
    if (!*self)
        return;
    free((*self)->digests);
    free(*self);
    *self = NULL;
}

size_t api_keys_count(const api_keys *k)
{
    return k->n;
}

int api_keys_check(const api_keys *k, const char *key, size_t n)
{
    uint8_t d[SHA1_LEN];
    sha1(key, n, d);
    unsigned found = 0;
    for (size_t i = 0; i < k->n; i++) {
        unsigned diff = 0;
        for (int j = 0; j < SHA1_LEN; j++)
            diff |= (unsigned)(d[j] ^ k->digests[i][j]);
        found |= (diff == 0);
    }
    return (int)found;
}

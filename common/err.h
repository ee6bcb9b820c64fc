/* err.h - errors are values.
 *
 * A function that can fail on outside input returns 0 on success and -1 on
 * failure, and fills a smq_err with one line that names the input and what is
 * wrong with it ("model.gguf: at byte 24 (0x18): tensor count 9e18 exceeds the
 * file's 4096 bytes"). The caller decides whether to print it, prefix it or
 * pass it on; nothing below main() prints errors itself.
 */
#ifndef SMQ_ERR_H
#define SMQ_ERR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SMQ_ERR_MAX 512

typedef struct smq_err {
    char msg[SMQ_ERR_MAX];
} smq_err;

/* Formats the message into err (when err is not NULL) and returns -1, so that
 * error paths read `return smq_err_set(err, "...", ...);`. */
int smq_err_set(smq_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to the message already in err; returns -1. */
int smq_err_prefix(smq_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif

#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int smq_err_set(smq_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int smq_err_prefix(smq_err *err, const char *fmt, ...)
{
    if (err) {
        char prefix[SMQ_ERR_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        /* Shift the message right to make room, truncating its tail. */
        size_t pl = strlen(prefix);
        if (pl > SMQ_ERR_MAX - 3)
            pl = SMQ_ERR_MAX - 3;
        size_t room = SMQ_ERR_MAX - pl - 2, ml = strnlen(err->msg, SMQ_ERR_MAX - 1);
        if (ml > room - 1)
            ml = room - 1;
        memmove(err->msg + pl + 2, err->msg, ml);
        err->msg[pl + 2 + ml] = 0;
        memcpy(err->msg, prefix, pl);
        err->msg[pl] = ':';
        err->msg[pl + 1] = ' ';
    }
    return -1;
}

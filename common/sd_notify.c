/* sd_notify.c - systemd's service notifications (sd_notify.h). */
#include "sd_notify.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Whether $WATCHDOG_PID is unset or this process: a child that inherited
 * the variables must not answer for its parent. */
static int for_this_process(void)
{
    const char *pid = getenv("WATCHDOG_PID");
    return !pid || !*pid || strtol(pid, NULL, 10) == (long)getpid();
}

int smq_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    /* A path, or an abstract address ('@' for its leading NUL). */
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof a.sun_path)
        return -1;
    memcpy(a.sun_path, path, n);
    if (path[0] == '@')
        a.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    size_t len = strlen(state);
    ssize_t sent = sendto(fd, state, len, MSG_NOSIGNAL, (const struct sockaddr *)&a,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
    return sent == (ssize_t)len ? 0 : -1;
}

uint64_t smq_watchdog_ms(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    if (!usec || !*usec || !for_this_process())
        return 0;
    char *end;
    unsigned long long us = strtoull(usec, &end, 10);
    if (*end || us == 0)
        return 0;
    uint64_t ms = us / 2000; /* half the interval, as sd_watchdog_enabled(3) advises */
    return ms ? ms : 1;
}

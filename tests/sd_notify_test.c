/* sd_notify_test.c - common/sd_notify.c: what reaches the socket that
 * $NOTIFY_SOCKET names (a path, or an abstract address), nothing sent and no
 * error without it, an unreachable socket an error, and the watchdog's
 * interval read from $WATCHDOG_USEC and $WATCHDOG_PID as systemd sets them. */
#include "sd_notify.h"

#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "test.h"

/* A datagram socket bound to path ('@' first: abstract), or -1. */
static int listen_at(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    memcpy(a.sun_path, path, n);
    if (path[0] == '@')
        a.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The next datagram on fd, or "" when none waits. */
static const char *next(int fd)
{
    static char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

static void test_path_socket(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/smolmq-notify-%d", (int)getpid());
    unlink(path);
    int fd = listen_at(path);
    CHECK(fd >= 0);
    char *kept = test_env_swap("NOTIFY_SOCKET", path);
    CHECK_INT(smq_notify("READY=1"), 0);
    CHECK_STR(next(fd), "READY=1");
    CHECK_INT(smq_notify("STOPPING=1\nSTATUS=draining"), 0);
    CHECK_STR(next(fd), "STOPPING=1\nSTATUS=draining");
    CHECK_STR(next(fd), "");
    close(fd);
    unlink(path);
    /* Gone: an error, which the caller may ignore. */
    CHECK_INT(smq_notify("WATCHDOG=1"), -1);
    test_env_restore("NOTIFY_SOCKET", kept);
}

static void test_abstract_socket(void)
{
    char path[64];
    snprintf(path, sizeof path, "@smolmq-notify-%d", (int)getpid());
    int fd = listen_at(path);
    CHECK(fd >= 0);
    char *kept = test_env_swap("NOTIFY_SOCKET", path);
    CHECK_INT(smq_notify("WATCHDOG=1"), 0);
    CHECK_STR(next(fd), "WATCHDOG=1");
    close(fd);
    test_env_restore("NOTIFY_SOCKET", kept);
}

static void test_not_asked(void)
{
    char *kept = test_env_swap("NOTIFY_SOCKET", NULL);
    CHECK_INT(smq_notify("READY=1"), 0);
    test_env_restore("NOTIFY_SOCKET", kept);
    kept = test_env_swap("NOTIFY_SOCKET", "relative/path");
    CHECK_INT(smq_notify("READY=1"), -1);
    test_env_restore("NOTIFY_SOCKET", kept);
}

/* Sets or unsets an environment variable, keeping nothing. */
static void set(const char *name, const char *value)
{
    free(test_env_swap(name, value));
}

static void test_watchdog_interval(void)
{
    char pid[32], other[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    snprintf(other, sizeof other, "%d", (int)getpid() + 1);
    char *kept_us = test_env_swap("WATCHDOG_USEC", NULL), *kept_pid = test_env_swap("WATCHDOG_PID", NULL);
    CHECK_INT(smq_watchdog_ms(), 0);
    set("WATCHDOG_USEC", "30000000");
    CHECK_INT(smq_watchdog_ms(), 15000); /* half of WatchdogSec=30 */
    set("WATCHDOG_PID", pid);
    CHECK_INT(smq_watchdog_ms(), 15000);
    set("WATCHDOG_PID", other); /* the parent's, inherited */
    CHECK_INT(smq_watchdog_ms(), 0);
    set("WATCHDOG_PID", NULL);
    set("WATCHDOG_USEC", "1500");
    CHECK_INT(smq_watchdog_ms(), 1);
    set("WATCHDOG_USEC", "12x");
    CHECK_INT(smq_watchdog_ms(), 0);
    set("WATCHDOG_USEC", "0");
    CHECK_INT(smq_watchdog_ms(), 0);
    test_env_restore("WATCHDOG_USEC", kept_us);
    test_env_restore("WATCHDOG_PID", kept_pid);
}

int main(void)
{
    test_program = "sd_notify_test";
    TEST_RUN(test_path_socket);
    TEST_RUN(test_abstract_socket);
    TEST_RUN(test_not_asked);
    TEST_RUN(test_watchdog_interval);
    return test_done();
}

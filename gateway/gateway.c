/* gateway.c - the gateway process: listeners, signals, the drain
 * (gateway.h).
 *
 * Listeners are opened by hand rather than by uv_tcp_bind, for
 * SO_REUSEPORT (libuv 1.44 has no flag for it): several gateway processes
 * bind one port and the kernel spreads connections over them, which is how
 * the gateway scales past one core.
 *
 * SIGTERM or SIGINT starts a drain: the listeners close, idle connections
 * close, chats in progress may finish for --drain-ms; then what is left is
 * closed (its chats cancelled at the broker) and the loop ends. A second
 * signal ends the drain at once.
 */
#include "gateway.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_conn.h"
#include "sd_notify.h"

#define DRAIN_TICK_MS 100

void gw_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smolmq-gateway: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

const char *gateway_date(gateway *gw)
{
    time_t now = time(NULL);
    if (!gw->date[0] || (uint64_t)now != gw->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(gw->date, sizeof gw->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        gw->date_at = (uint64_t)now;
    }
    return gw->date;
}

/* ---- listeners ---- */

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        gw_log("accept: %s", uv_strerror(status));
        return;
    }
    conn_accept(server);
}

/* "HOST:PORT", "[V6]:PORT", "*:PORT" or ":PORT" (every address). */
static int split_hostport(const char *spec, char *host, size_t hcap, const char **port)
{
    const char *colon;
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':' || (size_t)(end - spec - 1) >= hcap)
            return -1;
        memcpy(host, spec + 1, (size_t)(end - spec - 1));
        host[end - spec - 1] = 0;
        colon = end + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= hcap)
            return -1;
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = 0;
    }
    if (!host[0] || !strcmp(host, "*"))
        snprintf(host, hcap, "0.0.0.0");
    *port = colon + 1;
    return **port ? 0 : -1;
}

static int listen_on(gateway *gw, const char *spec, uv_tcp_t *tcp, smq_err *err)
{
    char host[256];
    const char *port;
    if (split_hostport(spec, host, sizeof host, &port))
        return smq_err_set(err, "--listen %s: expected HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080, *:8080)", spec);
    struct addrinfo hints = { 0 }, *ai;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc)
        return smq_err_set(err, "--listen %s: %s", spec, gai_strerror(rc));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) || bind(fd, ai->ai_addr, ai->ai_addrlen)) {
        rc = smq_err_set(err, "--listen %s: %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return rc;
    }
    freeaddrinfo(ai);
    uv_tcp_init(gw->loop, tcp);
    tcp->data = gw;
    if ((rc = uv_tcp_open(tcp, fd)) || (rc = uv_listen((uv_stream_t *)tcp, 1024, on_connection))) {
        uv_close((uv_handle_t *)tcp, NULL);
        return smq_err_set(err, "--listen %s: %s", spec, uv_strerror(rc));
    }
    return 0;
}

/* ---- the drain ---- */

static void end_everything(gateway *gw)
{
    for (int i = 0; i < gw->n_listeners; i++)
        uv_close((uv_handle_t *)&gw->listeners[i], NULL);
    gw->n_listeners = 0;
    while (gw->conns)
        conn_close(gw->conns); /* removes itself from the list */
    conn_flush_all(gw);        /* drops the closed ones' references */
    uv_close((uv_handle_t *)&gw->flush_prepare, NULL);
    uv_close((uv_handle_t *)&gw->flush_check, NULL);
    uv_timer_stop(&gw->drain_timer);
    uv_close((uv_handle_t *)&gw->drain_timer, NULL);
    uv_timer_stop(&gw->watchdog);
    uv_close((uv_handle_t *)&gw->watchdog, NULL);
    uv_close((uv_handle_t *)&gw->sigterm, NULL);
    uv_close((uv_handle_t *)&gw->sigint, NULL);
    broker_link_destroy(&gw->link);
}

static void on_drain_tick(uv_timer_t *t)
{
    gateway *gw = t->data;
    int busy = 0;
    for (conn *c = gw->conns; c; c = c->next)
        busy += c->state == C_BUSY || c->state == C_WS;
    gw->cfg.drain_ms -= DRAIN_TICK_MS;
    if (busy == 0 || gw->cfg.drain_ms <= 0) {
        if (busy)
            gw_log("drain: %d connections still busy after the drain time: closing them", busy);
        end_everything(gw);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    gateway *gw = h->data;
    if (gw->draining) {
        gw_log("signal %d again: stopping now", signum);
        end_everything(gw);
        return;
    }
    gw->draining = 1;
    smq_notify("STOPPING=1");
    gw_log("signal %d: draining (up to %d ms for chats in progress)", signum, gw->cfg.drain_ms);
    for (int i = 0; i < gw->n_listeners; i++)
        uv_close((uv_handle_t *)&gw->listeners[i], NULL);
    gw->n_listeners = 0;
    /* Connections waiting for a request close now; busy ones after their
     * response (response_done sees `draining`). */
    for (conn *c = gw->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == C_READING && !c->req.started)
            conn_close(c);
    }
    uv_timer_start(&gw->drain_timer, on_drain_tick, 0, DRAIN_TICK_MS);
}

/* ---- lifecycle ---- */

/* The loop turns: systemd's watchdog (WatchdogSec=) is fed. */
static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    smq_notify("WATCHDOG=1");
}

static void on_flush_prepare(uv_prepare_t *h)
{
    conn_flush_all(h->data);
}

static void on_flush_check(uv_check_t *h)
{
    conn_flush_all(h->data);
}

static void on_first_stats(void *ctx, const smq_stats *s, const char *why)
{
    (void)ctx;
    if (s)
        gw_log("the broker answers: %u worker%s", s->n_workers, s->n_workers == 1 ? "" : "s");
    else
        gw_log("the broker does not answer yet (%s)", why);
}

gateway *gateway_new(uv_loop_t *loop, const gw_config *cfg, smq_err *err)
{
    gateway *gw = calloc(1, sizeof *gw);
    if (!gw) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    gw->loop = loop;
    gw->cfg = *cfg;
    if (cfg->keys_file && !(gw->keys = api_keys_load(cfg->keys_file, err))) {
        free(gw);
        return NULL;
    }
    broker_link_config lc = { cfg->broker,     cfg->heartbeat_ms, cfg->liveness,  0,
                              cfg->broker_key, cfg->public_key,   cfg->secret_key };
    if (!(gw->link = broker_link_new(loop, &lc, err))) {
        api_keys_destroy(&gw->keys);
        free(gw);
        return NULL;
    }
    for (int i = 0; i < cfg->n_listen; i++) {
        if (listen_on(gw, cfg->listen[i], &gw->listeners[i], err)) {
            for (int j = 0; j < gw->n_listeners; j++)
                uv_close((uv_handle_t *)&gw->listeners[j], NULL);
            broker_link_destroy(&gw->link);
            uv_run(loop, UV_RUN_NOWAIT); /* let the closes finish before the memory goes */
            api_keys_destroy(&gw->keys);
            free(gw);
            return NULL;
        }
        gw->n_listeners++;
    }
    /* The broker's STATS, early: they name the model that answers
     * requests that name none. */
    broker_link_stats(gw->link, 0, on_first_stats, gw);
    uv_signal_init(loop, &gw->sigterm);
    uv_signal_init(loop, &gw->sigint);
    uv_timer_init(loop, &gw->drain_timer);
    gw->sigterm.data = gw->sigint.data = gw->drain_timer.data = gw;
    uv_signal_start(&gw->sigterm, on_signal, SIGTERM);
    uv_signal_start(&gw->sigint, on_signal, SIGINT);
    /* Not references of the loop: they run while something else keeps it. */
    uv_prepare_init(loop, &gw->flush_prepare);
    uv_check_init(loop, &gw->flush_check);
    gw->flush_prepare.data = gw->flush_check.data = gw;
    uv_prepare_start(&gw->flush_prepare, on_flush_prepare);
    uv_check_start(&gw->flush_check, on_flush_check);
    uv_unref((uv_handle_t *)&gw->flush_prepare);
    uv_unref((uv_handle_t *)&gw->flush_check);
    uv_timer_init(loop, &gw->watchdog);
    uint64_t wd = smq_watchdog_ms();
    if (wd) {
        uv_timer_start(&gw->watchdog, on_watchdog, wd, wd);
        uv_unref((uv_handle_t *)&gw->watchdog);
    }
    /* Listening: systemd (Type=notify) may start what comes after. */
    smq_notify("READY=1");
    return gw;
}

int gateway_run(gateway *gw)
{
    return uv_run(gw->loop, UV_RUN_DEFAULT);
}

void gateway_destroy(gateway **self)
{
    gateway *gw = *self;
    if (!gw)
        return;
    *self = NULL;
    if (gw->link) /* the loop did not run to its end */
        end_everything(gw);
    uv_run(gw->loop, UV_RUN_DEFAULT);
    api_keys_destroy(&gw->keys);
    free(gw);
}

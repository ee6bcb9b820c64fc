/* routes.c - request routing and the small endpoints (routes.h).
 *
 * The endpoints that report on the broker (/v1/models, /readyz, /metrics)
 * wait for its STATS, which the broker link caches for a moment
 * (--stats-cache-ms) so that a scraper or a load balancer's probes cost
 * the broker one STATS per period, not one per probe. The connection is
 * held (conn_ref) while they wait; one that closed meanwhile is dropped.
 */
#include "routes.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "chat.h"
#include "openai_response.h"
#include "web_assets.h"
#include "ws.h"

static int path_is(const char *path, size_t n, const char *lit)
{
    return n == strlen(lit) && !memcmp(path, lit, n);
}

static void refuse(conn *c, int status, const char *code, const char *fmt, const char *arg)
{
    openai_error e;
    const char *type = status == 401 ? "authentication_error" : "invalid_request_error";
    openai_error_set(&e, status, type, code, NULL, fmt, arg);
    conn_respond_error(c, &e);
}

static void respond_json(conn *c, int status, const char *json)
{
    conn_respond(c, status, "application/json", NULL, json, strlen(json));
}

/* ---- CORS ---- */

/* The Origin, when the gateway allows it: echoed (or "*") in every
 * response's Access-Control-Allow-Origin. */
static void set_cors(conn *c)
{
    size_t n;
    const char *origin = http_request_header(&c->req, "origin", &n);
    c->cors[0] = 0;
    if (!origin || n >= sizeof c->cors)
        return;
    for (int i = 0; i < c->gw->cfg.n_cors; i++) {
        const char *allowed = c->gw->cfg.cors[i];
        if (!strcmp(allowed, "*")) {
            snprintf(c->cors, sizeof c->cors, "*");
            return;
        }
        if (strlen(allowed) == n && !memcmp(allowed, origin, n)) {
            memcpy(c->cors, origin, n + 1);
            return;
        }
    }
}

/* Header names a preflight may ask for: tokens and commas only. */
static int header_list_ok(const char *s, size_t n)
{
    if (n > 300)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == ',' || s[i] == ' ' || s[i] == '-' || s[i] == '_' || (s[i] >= '0' && s[i] <= '9') ||
              ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z')))
            return 0;
    return 1;
}

static void options(conn *c)
{
    size_t n, hn;
    const char *method = http_request_header(&c->req, "access-control-request-method", &n);
    if (!method) {
        conn_respond(c, 204, NULL, "Allow: GET, HEAD, POST, OPTIONS\r\n", NULL, 0);
        return;
    }
    const char *origin = http_request_header(&c->req, "origin", &n);
    if (!c->cors[0]) {
        refuse(c, 403, "origin_not_allowed",
               "the origin %.100s may not call this API: start the gateway with --cors-origin ORIGIN to allow it",
               origin ? origin : "(none)");
        return;
    }
    const char *asked = http_request_header(&c->req, "access-control-request-headers", &hn);
    char headers[600];
    snprintf(headers, sizeof headers,
             "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\nAccess-Control-Allow-Headers: %s\r\n"
             "Access-Control-Max-Age: 600\r\n",
             asked && header_list_ok(asked, hn) ? asked : "authorization, content-type");
    conn_respond(c, 204, NULL, headers, NULL, 0);
}

/* ---- API keys ---- */

/* 1 when the gateway is open or the request carries one of its keys; else
 * answers 401 and returns 0. A WebSocket handshake (ws) without an
 * Authorization header may name its key as a subprotocol (ws.h). */
static int authorized(conn *c, int ws)
{
    if (!c->gw->keys)
        return 1;
    size_t n;
    const char *key = http_request_header(&c->req, "authorization", &n);
    if (key) {
        if (n < 7 || strncasecmp(key, "Bearer ", 7)) {
            refuse(c, 401, "invalid_api_key", "%s", "the Authorization header must be \"Bearer KEY\"");
            return 0;
        }
        key += 7;
        n -= 7;
        while (n && *key == ' ')
            key++, n--;
        while (n && key[n - 1] == ' ')
            n--;
    } else if (ws) {
        key = ws_protocol_key(&c->req, &n);
    }
    if (!key) {
        refuse(
            c, 401, "missing_api_key", "%s",
            ws ? "no API key: send the header \"Authorization: Bearer KEY\" with a key from the gateway's --keys "
                 "file or, from a browser, offer the subprotocols \"" WS_PROTOCOL "\" and \"" WS_KEY_PROTOCOL "KEY\""
               : "no API key: send the header \"Authorization: Bearer KEY\" with a key from the gateway's --keys file");
        return 0;
    }
    if (!api_keys_check(c->gw->keys, key, n)) {
        refuse(c, 401, "invalid_api_key", "%s",
               "the API key is not valid: use one of the keys in the gateway's --keys file");
        return 0;
    }
    return 1;
}

/* ---- endpoints that need the broker's STATS ---- */

static void models(conn *c, const smq_stats *s)
{
    size_t n;
    const char *path = http_request_path(&c->req, &n);
    sbuf b = { 0 };
    if (n > 11) { /* /v1/models/NAME: that model, when a worker serves it */
        const char *name = path + 11;
        size_t nn = n - 11;
        for (uint32_t i = 0; i < s->n_workers; i++)
            if (s->workers[i].model.n == nn && !memcmp(s->workers[i].model.p, name, nn)) {
                json_put(json_pack("{s:s%, s:s, s:I, s:s}", "id", name, nn, "object", "model", "created", (json_int_t)0,
                                   "owned_by", "smolmq"),
                         &b);
                respond_json(c, 200, b.data ? b.data : "{}");
                sbuf_free(&b);
                return;
            }
        openai_error e;
        openai_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                         "the model \"%.*s\" is not served here: GET /v1/models lists those that are",
                         (int)(nn > 128 ? 128 : nn), name);
        conn_respond_error(c, &e);
        return;
    }
    if (openai_models_json(s, &b))
        conn_close(c);
    else
        respond_json(c, 200, b.data);
    sbuf_free(&b);
}

static void ready(conn *c, const smq_stats *s, const char *why)
{
    char body[700];
    if (!s) {
        snprintf(body, sizeof body, "{\"status\":\"unavailable\",\"reason\":\"the broker does not answer\"}");
        (void)why;
        respond_json(c, 503, body);
        return;
    }
    uint64_t capacity = 0;
    for (uint32_t i = 0; i < s->n_workers; i++)
        capacity += s->workers[i].capacity;
    if (capacity == 0)
        snprintf(body, sizeof body,
                 "{\"status\":\"not ready\",\"reason\":\"no worker has capacity\",\"workers\":%u,\"capacity\":0}",
                 s->n_workers);
    else
        snprintf(body, sizeof body, "{\"status\":\"ready\",\"workers\":%u,\"capacity\":%llu}", s->n_workers,
                 (unsigned long long)capacity);
    respond_json(c, capacity ? 200 : 503, body);
}

static void metrics(conn *c, const smq_stats *s)
{
    sbuf b = { 0 };
    if (metrics_render(&c->gw->metrics, s, broker_link_lost_count(c->gw->link), &b))
        conn_close(c);
    else
        conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
    sbuf_free(&b);
}

static void on_stats(void *ctx, const smq_stats *s, const char *why)
{
    conn *c = ctx;
    if (c->state == C_BUSY) {
        if (c->route == ROUTE_READY) {
            ready(c, s, why);
        } else if (c->route == ROUTE_METRICS) {
            metrics(c, s);
        } else if (!s) {
            openai_error e;
            openai_error_set(&e, 503, "server_error", "broker_unavailable", NULL, "%s: retry shortly", why);
            e.retry_after = 1;
            conn_respond_error(c, &e);
        } else {
            models(c, s);
        }
    }
    conn_unref(c);
}

static void with_stats(conn *c, gw_route route)
{
    c->route = route;
    conn_ref(c);
    broker_link_stats(c->gw->link, c->gw->cfg.stats_cache_ms, on_stats, c);
}

/* ---- the web chat's files ---- */

/* If-None-Match: "*" or a list holding the ETag (weak or strong). */
static int etag_matches(const char *inm, const char *etag)
{
    size_t en = strlen(etag);
    for (const char *p = inm; *p;) {
        p += strspn(p, " \t,");
        if (*p == '*')
            return 1;
        if (!strncmp(p, "W/", 2))
            p += 2;
        size_t w = strcspn(p, " \t,");
        if (w == en && !memcmp(p, etag, en))
            return 1;
        p += w;
    }
    return 0;
}

static void asset(conn *c, const web_asset *a)
{
    char headers[200];
    snprintf(headers, sizeof headers, "ETag: %s\r\nCache-Control: no-cache\r\n", a->etag);
    const char *inm = http_request_header(&c->req, "if-none-match", NULL);
    if (inm && etag_matches(inm, a->etag))
        conn_respond(c, 304, NULL, headers, NULL, 0);
    else
        conn_respond(c, 200, a->content_type, headers, a->data, a->len);
}

/* ---- dispatch ---- */

static int method_ok(conn *c, int want_post)
{
    int m = c->req.method;
    if (want_post ? m == HTTP_POST : (m == HTTP_GET || m == HTTP_HEAD))
        return 1;
    size_t n;
    const char *path = http_request_path(&c->req, &n);
    openai_error e;
    openai_error_set(&e, 405, "invalid_request_error", "method_not_allowed", NULL, "%s %.*s: use %s",
                     http_method_str((enum http_method)m), (int)(n > 100 ? 100 : n), path, want_post ? "POST" : "GET");
    conn_respond_error(c, &e);
    return 0;
}

void routes_dispatch(conn *c)
{
    size_t n;
    const char *path = http_request_path(&c->req, &n);
    int api = n >= 3 && !memcmp(path, "/v1", 3) && (n == 3 || path[3] == '/');
    set_cors(c);
    if (c->req.method == HTTP_OPTIONS) {
        options(c);
        return;
    }
    if (api && !authorized(c, path_is(path, n, "/v1/ws")))
        return;
    if (path_is(path, n, "/v1/chat/completions")) {
        c->route = ROUTE_CHAT;
        if (method_ok(c, 1))
            chat_http_start(c);
    } else if (path_is(path, n, "/v1/models") || (n > 11 && !memcmp(path, "/v1/models/", 11))) {
        c->route = ROUTE_MODELS;
        if (method_ok(c, 0))
            with_stats(c, ROUTE_MODELS);
    } else if (path_is(path, n, "/v1/ws")) {
        c->route = ROUTE_WS;
        if (method_ok(c, 0))
            ws_upgrade(c);
    } else if (path_is(path, n, "/healthz")) {
        c->route = ROUTE_HEALTH;
        if (method_ok(c, 0))
            respond_json(c, 200, "{\"status\":\"ok\"}");
    } else if (path_is(path, n, "/readyz")) {
        c->route = ROUTE_READY;
        if (method_ok(c, 0))
            with_stats(c, ROUTE_READY);
    } else if (path_is(path, n, "/metrics")) {
        c->route = ROUTE_METRICS;
        if (method_ok(c, 0))
            with_stats(c, ROUTE_METRICS);
    } else {
        const web_asset *a = api ? NULL : web_asset_find(path, n);
        if (a) {
            c->route = ROUTE_STATIC;
            if (method_ok(c, 0))
                asset(c, a);
            return;
        }
        char what[160];
        snprintf(what, sizeof what, "%s %.*s", http_method_str((enum http_method)c->req.method),
                 (int)(n > 100 ? 100 : n), path);
        refuse(c, 404, "not_found",
               "nothing here for %s: the API is POST /v1/chat/completions, GET /v1/models and /v1/ws; the web "
               "chat is at /",
               what);
    }
}

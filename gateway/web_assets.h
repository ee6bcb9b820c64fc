/* web_assets.h - the web chat's files, embedded in the gateway binary.
 *
 * The table is generated at build time (gateway/embed.py) from the bundled
 * web chat (gateway/web, built by gateway/web/build.sh into the build
 * folder): each file with its URL path, content type and a strong ETag. */
#ifndef SMQ_WEB_ASSETS_H
#define SMQ_WEB_ASSETS_H

#include <stddef.h>

typedef struct web_asset {
    const char *path;         /* "/index.html", "/app.js", ... */
    const char *content_type; /* "text/html; charset=utf-8", ... */
    const unsigned char *data;
    size_t len;
    const char *etag; /* "\"<hex of a hash of data>\"" */
} web_asset;

extern const web_asset web_assets[];
extern const size_t web_assets_count;

/* The asset at URL path p[0..n) ("/" is "/index.html"); NULL if none. Only
 * exact matches: there is no file system behind it, so no path escapes. */
const web_asset *web_asset_find(const char *p, size_t n);

#endif

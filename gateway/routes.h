/* routes.h - which handler a complete request goes to, and the small
 * endpoints: /healthz, /readyz, /metrics, /v1/models, the web chat's files,
 * CORS preflights, and the API key check on /v1/. */
#ifndef SMQ_ROUTES_H
#define SMQ_ROUTES_H

#include "http_conn.h"

void routes_dispatch(conn *c);

#endif

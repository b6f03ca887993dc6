/* routes: the way of one request through the gateway: its parameters, the
 * CORS preflight, then one table of the paths below the mount point (which
 * methods each takes, whether it needs a client key, who answers it), and the
 * request's log line. (route.h is another matter: which upstream endpoints
 * may serve a model.) */
#ifndef API_TOGETHER_ROUTES_H
#define API_TOGETHER_ROUTES_H

#include <fcgiapp.h>

#include "config.h"
#include "request.h"
#include "worker.h"

/* A handler of the table: answers r (its method and key already checked).
 * cfg is NULL only for rows that need no key (no config loaded; why then
 * says why). Returns the status written, or ROUTES_LOGGED when it logged the
 * request's line itself. */
typedef int routes_fn(struct request *r, const struct config *cfg, const char *why,
		      struct worker *w);

#define ROUTES_LOGGED 0

enum routes_key {
	ROUTES_OPEN,                       /* no key, and served without a config too */
	ROUTES_KEY,                        /* a client key of the config: 401 else */
	ROUTES_ADMIN,                      /* an admin key: 403 admin_only for another */
	ROUTES_ADMIN_UNLESS_METRICS_PUBLIC /* the same, unless server.metricsPublic */
};

/* One row: a path below the mount point, decoded. */
struct routes_row {
	const char *path;    /* exact; with a trailing '/', also everything below */
	const char *allow;   /* the methods taken, as a 405's Allow header lists them */
	enum routes_key key; /* a row that needs a key needs a config: 500 without */
	bool no_cors;        /* an HTML page: its 405 carries no CORS header either */
	routes_fn *handle;
};

/* The row of the first matching path, in table order; NULL when no row
 * matches (404). */
const struct routes_row *routes_find(const char *decoded);

/* True when row takes method. OPTIONS never: with CORS on, the preflight
 * answers it before the table; with CORS off it is refused (405). */
bool routes_allows(const struct routes_row *row, const char *method);

/* Serves one request on f with cfg (NULL when no config loaded; why then
 * says why), and logs its line. Never fails: every problem is an answer. */
void routes_serve(FCGX_Request *f, const struct config *cfg, const char *why, struct worker *w);

#endif

#include "routes.h"

#include <string.h>

#include "admin.h"
#include "api.h"
#include "auth.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "response.h"
#include "status_page.h"

static int routes_status_page(struct request *r, const struct config *cfg, const char *why,
			      struct worker *w);
static int routes_metrics(struct request *r, const struct config *cfg, const char *why,
			  struct worker *w);
static int routes_proxy(struct request *r, const struct config *cfg, const char *why,
			struct worker *w);

/* Only the methods of HTTP APIs go on: an upstream answers another
 * (PROPFIND, TRACE...) with 501, which would charge it a failure. */
#define ROUTES_FORWARDED "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

/* Every path below the mount point, first match wins: the gateway's own
 * endpoints, then everything else under /v1 goes to the upstreams. The
 * status page checks a ?key= itself (it shows a login form without one); the
 * line logged holds the path, never the query. Prometheus scrapes /metrics
 * with the key of /v1/status unless server.metricsPublic opens it. Every
 * client key is an admin until server.adminKeys names the admins. */
static const struct routes_row routes_table[] = {
	{"/health", "GET, HEAD", ROUTES_OPEN, false, api_health},
	{"/status", "GET, HEAD", ROUTES_OPEN, true, routes_status_page},
	{"/metrics", "GET, HEAD", ROUTES_ADMIN_UNLESS_METRICS_PUBLIC, false, routes_metrics},
	{"/v1/status", "GET, HEAD", ROUTES_ADMIN, false, api_status},
	{"/v1/models", "GET, HEAD", ROUTES_KEY, false, api_models},
	{"/v1/models/", "GET, HEAD", ROUTES_KEY, false, api_models},
	{"/v1/token/stats", "GET, HEAD", ROUTES_ADMIN, false, api_token_stats},
	{"/v1/token/reset", "POST", ROUTES_ADMIN, false, api_token_reset},
	{"/v1/admin/", "POST", ROUTES_ADMIN, false, admin_handle},
	{"/v1/usage", "GET, HEAD", ROUTES_KEY, false, api_usage},
	{"/v1", ROUTES_FORWARDED, ROUTES_KEY, false, routes_proxy},
	{"/v1/", ROUTES_FORWARDED, ROUTES_KEY, false, routes_proxy},
};

const struct routes_row *
routes_find(const char *decoded)
{
	for (size_t i = 0; i < sizeof(routes_table) / sizeof(routes_table[0]); i++) {
		const struct routes_row *row = &routes_table[i];
		size_t n = strlen(row->path);
		if (row->path[n - 1] == '/' ? strncmp(decoded, row->path, n) == 0
					    : strcmp(decoded, row->path) == 0)
			return row;
	}
	return NULL;
}

bool
routes_allows(const struct routes_row *row, const char *method)
{
	size_t n = strlen(method);
	const char *p = row->allow;

	if (strcmp(method, "OPTIONS") == 0)
		return false;
	for (;;) {
		size_t len = strcspn(p, ",");
		if (len == n && memcmp(p, method, n) == 0)
			return true;
		if (p[len] == '\0')
			return false;
		p += len + 1;
		p += strspn(p, " ");
	}
}

static int
routes_status_page(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	(void)why;
	(void)w;
	return status_page_handle(r, cfg);
}

static int
routes_metrics(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	(void)why;
	return metrics_handle(r, cfg, w);
}

static int
routes_proxy(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	(void)why;
	/* The upstream URL is built from the raw path: an encoded "/v1"
	 * (%76%31) would slip past a baseUrl's path. */
	if (strncmp(r->path, "/v1/", 4) != 0)
		return response_error(r->fcgi->out, RESP_INVALID_PATH, NULL, 0, cfg->cors);
	/* Only the paths the operator lists go on, before the body is read or
	 * the store is touched: an upstream that refuses a path for a valid
	 * key (401, 403) would charge every endpoint a failure for it
	 * (doc/behaviour.md, Forwarding: which paths). The path as sent is what
	 * the upstream gets, decoded is what it may read: both must match. */
	if (!config_forwards(cfg, r->path + 4) || !config_forwards(cfg, r->decoded + 4))
		return response_error(r->fcgi->out, RESP_NOT_FORWARDED, NULL, 0, cfg->cors);
	/* The proxy logs its own, richer line. */
	proxy_handle(r, cfg, w);
	return ROUTES_LOGGED;
}

/* The refusal of r's key by row (RESP_INVALID_API_KEY, RESP_KEY_EXPIRED,
 * RESP_ADMIN_ONLY; counted as an auth refusal), or -1 when it may pass; on a
 * pass r->client is the key's entry (NULL on an open row). cfg is not NULL. */
static int
routes_key_refusal(const struct routes_row *row, struct request *r, const struct config *cfg,
		   struct worker *w)
{
	enum auth_verdict v;
	int why;

	if (row->key == ROUTES_OPEN ||
	    (row->key == ROUTES_ADMIN_UNLESS_METRICS_PUBLIC && cfg->metrics_public))
		return -1;
	v = auth_client(cfg, auth_client_key(r), clock_now_ms(), &r->client);
	if (v == AUTH_OK && (row->key == ROUTES_KEY || r->client->admin))
		return -1;
	why = v == AUTH_UNKNOWN   ? RESP_INVALID_API_KEY
	      : v == AUTH_EXPIRED ? RESP_KEY_EXPIRED
				  : RESP_ADMIN_ONLY;
	r->client = NULL;
	metrics_reject(w, cfg, STORE_REJECT_AUTH);
	return why;
}

void
routes_serve(FCGX_Request *f, const struct config *cfg, const char *why, struct worker *w)
{
	bool cors = cfg == NULL || cfg->cors;
	const struct routes_row *row;
	struct request r;
	int v, status, refusal;

	v = request_load(&r, f, clock_now_ms());
	request_read_end(&r);
	if (v == REQUEST_PATH_FOREIGN) {
		status = response_error(f->out, RESP_NOT_FOUND, NULL, 0, cors);
		goto done;
	}
	if (v == REQUEST_PATH_BAD) {
		status = response_error(f->out, RESP_INVALID_PATH, NULL, 0, cors);
		goto done;
	}
	if (v != REQUEST_PATH_OK) {
		status = response_error(f->out, RESP_INTERNAL, NULL, 0, cors);
		goto done;
	}
	/* Before the key: a browser sends its preflight without one. */
	if (cors && strcmp(r.method, "OPTIONS") == 0) {
		status = response_preflight(f->out,
					    request_header(&r, "Access-Control-Request-Headers"));
		goto done;
	}
	row = routes_find(r.decoded);
	if (row == NULL) {
		status = response_error(f->out, RESP_NOT_FOUND, NULL, 0, cors);
		goto done;
	}
	if (row->key != ROUTES_OPEN && cfg == NULL) {
		status = response_error(f->out, RESP_CONFIG_ERROR, NULL, 0, cors);
		goto done;
	}
	if ((refusal = routes_key_refusal(row, &r, cfg, w)) >= 0) {
		status = response_error(f->out, (enum response_error)refusal, NULL, 0, cors);
		goto done;
	}
	if (!routes_allows(row, r.method)) {
		status = response_method_not_allowed(f->out, row->allow, cors && !row->no_cors);
		goto done;
	}
	status = row->handle(&r, cfg, why, w);
	if (status == ROUTES_LOGGED) {
		request_free(&r);
		return;
	}
done:
	response_finish(f);
	log_msg(status >= 500 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, "%s %s%s status=%d ms=%lld%s%s",
		r.method != NULL ? r.method : "-", r.mount != NULL ? r.mount : "",
		r.path != NULL ? r.path : "-", status, (long long)(clock_now_ms() - r.start_ms),
		r.client != NULL ? " client=" : "",
		r.client != NULL ? auth_client_label(r.client) : "");
	request_free(&r);
}

/* Unit tests of routes.c's table: which row a path finds, and which methods
 * a row takes. (The answers themselves are the integration tests'.) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "routes.h"

struct find_case {
	const char *decoded;
	const char *row; /* the row's path, NULL for none (404) */
	enum routes_key key;
};

static const struct find_case find_cases[] = {
	{"/health", "/health", ROUTES_OPEN},
	{"/status", "/status", ROUTES_OPEN},
	{"/metrics", "/metrics", ROUTES_ADMIN_UNLESS_METRICS_PUBLIC},
	{"/v1/status", "/v1/status", ROUTES_ADMIN},
	{"/v1/models", "/v1/models", ROUTES_KEY},
	{"/v1/models/", "/v1/models/", ROUTES_KEY},
	{"/v1/models/a/b", "/v1/models/", ROUTES_KEY},
	{"/v1/token/stats", "/v1/token/stats", ROUTES_ADMIN},
	{"/v1/token/reset", "/v1/token/reset", ROUTES_ADMIN},
	{"/v1/admin/endpoints/a/pause", "/v1/admin/", ROUTES_ADMIN},
	{"/v1/admin/", "/v1/admin/", ROUTES_ADMIN},
	/* Everything else under /v1 goes upstream. */
	{"/v1", "/v1", ROUTES_KEY},
	{"/v1/", "/v1/", ROUTES_KEY},
	{"/v1/chat/completions", "/v1/", ROUTES_KEY},
	{"/v1/status/x", "/v1/", ROUTES_KEY},
	{"/v1/token", "/v1/", ROUTES_KEY},
	{"/v1/modelsx", "/v1/", ROUTES_KEY},
	/* Not ours. */
	{"/", NULL, ROUTES_OPEN},
	{"", NULL, ROUTES_OPEN},
	{"/v1x", NULL, ROUTES_OPEN},
	{"/v2/chat/completions", NULL, ROUTES_OPEN},
	{"/health/", NULL, ROUTES_OPEN},
	{"/healthz", NULL, ROUTES_OPEN},
	{"/Health", NULL, ROUTES_OPEN},
	{"/status/x", NULL, ROUTES_OPEN},
	{"/metrics/", NULL, ROUTES_OPEN},
};

static void
routes_find_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(find_cases) / sizeof(find_cases[0]); i++) {
		const struct find_case *c = &find_cases[i];
		const struct routes_row *row = routes_find(c->decoded);
		if (c->row == NULL) {
			if (row != NULL)
				fail_msg("%s: found %s, want none", c->decoded, row->path);
			continue;
		}
		if (row == NULL || strcmp(row->path, c->row) != 0)
			fail_msg("%s: found %s, want %s", c->decoded,
				 row != NULL ? row->path : "none", c->row);
		assert_int_equal(row->key, c->key);
		assert_non_null(row->handle);
	}
}

struct method_case {
	const char *decoded;
	const char *method;
	bool allowed;
};

static const struct method_case method_cases[] = {
	{"/health", "GET", true},
	{"/health", "HEAD", true},
	{"/health", "POST", false},
	{"/health", "GE", false},
	{"/health", "GET, HEAD", false},
	{"/health", "", false},
	{"/status", "HEAD", true},
	{"/status", "PUT", false},
	{"/metrics", "GET", true},
	{"/metrics", "DELETE", false},
	{"/v1/models/x", "GET", true},
	{"/v1/models", "POST", false},
	{"/v1/token/reset", "POST", true},
	{"/v1/token/reset", "GET", false},
	{"/v1/token/stats", "PATCH", false},
	{"/v1/chat/completions", "POST", true},
	{"/v1/chat/completions", "GET", true},
	{"/v1/files/x", "DELETE", true},
	{"/v1/files/x", "PATCH", true},
	{"/v1/files/x", "PUT", true},
	{"/v1/chat/completions", "PROPFIND", false},
	{"/v1/chat/completions", "TRACE", false},
	{"/v1/chat/completions", "post", false},
	/* Listed in the proxy's Allow, answered by the preflight only. */
	{"/v1/chat/completions", "OPTIONS", false},
	{"/health", "OPTIONS", false},
};

static void
routes_allows_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(method_cases) / sizeof(method_cases[0]); i++) {
		const struct method_case *c = &method_cases[i];
		const struct routes_row *row = routes_find(c->decoded);
		assert_non_null(row);
		if (routes_allows(row, c->method) != c->allowed)
			fail_msg("%s %s: %s, want %s", c->method, c->decoded,
				 c->allowed ? "refused" : "allowed",
				 c->allowed ? "allowed" : "refused");
	}
}

/* A 405's Allow header is the row's list, as the integration tests pin. */
static void
routes_allow_headers(void **state)
{
	(void)state;
	assert_string_equal(routes_find("/health")->allow, "GET, HEAD");
	assert_string_equal(routes_find("/v1/token/reset")->allow, "POST");
	assert_string_equal(routes_find("/v1/admin/endpoints/a/keys/0/resume")->allow, "POST");
	assert_string_equal(routes_find("/v1/chat/completions")->allow,
			    "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
	assert_true(routes_find("/status")->no_cors);
	assert_false(routes_find("/health")->no_cors);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(routes_find_table),
		cmocka_unit_test(routes_allows_table),
		cmocka_unit_test(routes_allow_headers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

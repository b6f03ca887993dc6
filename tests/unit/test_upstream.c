/* Unit tests of upstream.c: the upstream URL, which headers cross in each
 * direction, which answers are retried, and the header list of an attempt
 * (doc/behaviour.md, Forwarding). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "config.h"
#include "request.h"
#include "upstream.h"

/* ---- helpers ---- */

static void
assert_url(const char *base, const char *path, const char *query, const char *want)
{
	char *url = upstream_url(base, path, query);

	assert_non_null(url);
	assert_string_equal(url, want);
	free(url);
}

/* A client request with these headers ("Name: value" lines, NULL-terminated),
 * split as request_load would leave them. Only the fields upstream_headers
 * reads are set. */
struct client {
	struct request r;
	struct request_header h[32];
	char buf[32][256];
};

static void
client_init(struct client *c, const char *const *lines)
{
	memset(c, 0, sizeof(*c));
	c->r.method = "POST";
	c->r.content_length = -1;
	c->r.headers = c->h;
	for (size_t i = 0; lines[i] != NULL; i++) {
		assert_true(i < 32);
		assert_true(strlen(lines[i]) < sizeof(c->buf[i]));
		strcpy(c->buf[i], lines[i]);
		char *sep = strstr(c->buf[i], ": ");
		assert_non_null(sep);
		*sep = '\0';
		c->h[i].name = c->buf[i];
		c->h[i].value = sep + 2;
		c->r.n_headers++;
	}
}

static void
api_init(struct config_api *api, const char *key)
{
	memset(api, 0, sizeof(*api));
	api->id = (char *)"api1";
	api->name = (char *)"api1";
	api->base_url = (char *)"https://api.example.com";
	api->api_key = (char *)key;
	api->rpm = -1;
	api->rpd = -1;
	api->enabled = true;
	api->weight = 1;
}

static bool
list_has(const struct curl_slist *l, const char *line)
{
	for (; l != NULL; l = l->next)
		if (strcmp(l->data, line) == 0)
			return true;
	return false;
}

/* How many lines carry header name (case-insensitive), empty ones too. */
static size_t
list_count_name(const struct curl_slist *l, const char *name)
{
	size_t n = 0, len = strlen(name);

	for (; l != NULL; l = l->next)
		if (strncasecmp(l->data, name, len) == 0 &&
		    (l->data[len] == ':' || l->data[len] == ';'))
			n++;
	return n;
}

static bool
list_mentions(const struct curl_slist *l, const char *text)
{
	for (; l != NULL; l = l->next)
		if (strstr(l->data, text) != NULL)
			return true;
	return false;
}

static struct curl_slist *
headers_for(const char *const *lines, const struct config_api *api)
{
	struct client c;

	client_init(&c, lines);
	struct curl_slist *l = upstream_headers(&c.r, api, api->api_key, NULL, 0);
	assert_non_null(l);
	/* The list holds copies: it outlives the request. */
	return l;
}

/* ---- the client's own keys ---- */

static char *client_keys[] = {"sk-client-key-0001", "second-client-key-2"};

static struct curl_slist *
headers_with_keys(const char *const *lines, const struct config_api *api)
{
	struct client c;

	client_init(&c, lines);
	struct curl_slist *l = upstream_headers(&c.r, api, api->api_key, client_keys, 2);
	assert_non_null(l);
	return l;
}

static void
headers_holding_a_client_key_are_dropped(void **state)
{
	(void)state;
	const char *lines[] = {
		"api-key: sk-client-key-0001", "x-other: Bearer second-client-key-2 and more",
		"x-keep: sk-client-key-000",   "sk-client-key-0001: 1",
		"x-case: SK-CLIENT-KEY-0001",  NULL,
	};
	struct config_api api;

	api_init(&api, "sk-upstream");
	struct curl_slist *l = headers_with_keys(lines, &api);
	assert_false(list_mentions(l, "sk-client-key-0001"));
	assert_false(list_mentions(l, "second-client-key-2"));
	assert_int_equal(list_count_name(l, "api-key"), 0);
	assert_int_equal(list_count_name(l, "x-other"), 0);
	/* Not the key: a prefix of it, and another case (keys are exact). */
	assert_true(list_has(l, "x-keep: sk-client-key-000"));
	assert_true(list_has(l, "x-case: SK-CLIENT-KEY-0001"));
	assert_true(list_has(l, "Authorization: Bearer sk-upstream"));
	curl_slist_free_all(l);
}

static void
query_kept_as_sent_without_a_client_key(void **state)
{
	char *q = NULL;

	(void)state;
	assert_int_equal(upstream_query(NULL, client_keys, 2, &q), 0);
	assert_null(q);
	assert_int_equal(upstream_query("api-version=2024&a=%20b+c&&x", client_keys, 2, &q), 0);
	assert_string_equal(q, "api-version=2024&a=%20b+c&&x");
	free(q);
	assert_int_equal(upstream_query("", client_keys, 2, &q), 0);
	assert_string_equal(q, "");
	free(q);
}

static void
query_parameters_holding_a_client_key_are_dropped(void **state)
{
	char *q = NULL;

	(void)state;
	assert_int_equal(
		upstream_query("api_key=sk-client-key-0001&api-version=2024", client_keys, 2, &q),
		0);
	assert_string_equal(q, "api-version=2024");
	free(q);
	/* Percent-encoded, in the name, or as one of several values. */
	assert_int_equal(upstream_query("a=1&k=%73k-client-key-0001&sk-client-key-0001=&"
					"b=x+second-client-key-2&c=3",
					client_keys, 2, &q),
			 0);
	assert_string_equal(q, "a=1&c=3");
	free(q);
	assert_int_equal(upstream_query("key=second-client-key-2", client_keys, 2, &q), 0);
	assert_null(q);
	/* Not a key: a prefix of it. */
	assert_int_equal(upstream_query("key=sk-client-key-000", client_keys, 2, &q), 0);
	assert_string_equal(q, "key=sk-client-key-000");
	free(q);
}

/* ---- upstream_url ---- */

static void
url_base_without_path_keeps_client_path(void **state)
{
	(void)state;
	assert_url("https://api.openai.com", "/v1/chat/completions", NULL,
		   "https://api.openai.com/v1/chat/completions");
	assert_url("https://api.openai.com", "/v1/models/gpt-4o", NULL,
		   "https://api.openai.com/v1/models/gpt-4o");
}

static void
url_base_path_replaces_v1(void **state)
{
	(void)state;
	assert_url("https://openrouter.ai/api/v1", "/v1/chat/completions", NULL,
		   "https://openrouter.ai/api/v1/chat/completions");
	assert_url("https://api.groq.com/openai/v1", "/v1/embeddings", NULL,
		   "https://api.groq.com/openai/v1/embeddings");
}

static void
url_base_path_v1_gives_v1_once(void **state)
{
	(void)state;
	assert_url("http://localhost:11434/v1", "/v1/chat/completions", NULL,
		   "http://localhost:11434/v1/chat/completions");
}

static void
url_base_path_without_v1_is_used_as_is(void **state)
{
	(void)state;
	assert_url("http://h/openai", "/v1/chat/completions", NULL,
		   "http://h/openai/chat/completions");
	assert_url("https://x.openai.azure.com/openai/deployments/gpt4o", "/v1/chat/completions",
		   "api-version=2024-02-01",
		   "https://x.openai.azure.com/openai/deployments/gpt4o/chat/completions"
		   "?api-version=2024-02-01");
}

static void
url_query_is_kept(void **state)
{
	(void)state;
	assert_url("https://api.openai.com", "/v1/models", "limit=2&after=x%20y",
		   "https://api.openai.com/v1/models?limit=2&after=x%20y");
	assert_url("https://openrouter.ai/api/v1", "/v1/models", "a=1",
		   "https://openrouter.ai/api/v1/models?a=1");
}

static void
url_without_query_has_no_question_mark(void **state)
{
	(void)state;
	char *url = upstream_url("http://h/api/v1", "/v1/models", NULL);

	assert_non_null(url);
	assert_null(strchr(url, '?'));
	free(url);
}

static void
url_base_with_port(void **state)
{
	(void)state;
	assert_url("http://127.0.0.1:8080", "/v1/chat/completions", NULL,
		   "http://127.0.0.1:8080/v1/chat/completions");
	assert_url("http://127.0.0.1:8080/api/v1", "/v1/chat/completions", "q=1",
		   "http://127.0.0.1:8080/api/v1/chat/completions?q=1");
	assert_url("http://[::1]:8080/v1", "/v1/models", NULL, "http://[::1]:8080/v1/models");
}

static void
url_client_path_exactly_v1(void **state)
{
	(void)state;
	assert_url("http://h", "/v1", NULL, "http://h/v1");
	assert_url("http://h/api/v1", "/v1", NULL, "http://h/api/v1");
	assert_url("http://h/openai", "/v1", "x=1", "http://h/openai?x=1");
}

static void
url_client_path_goes_on_as_sent(void **state)
{
	(void)state;
	/* Percent-escapes are not decoded on the way (a model id may hold "/"). */
	assert_url("https://api.together.xyz", "/v1/models/accounts%2Fx%2Fmodels%2Fy", NULL,
		   "https://api.together.xyz/v1/models/accounts%2Fx%2Fmodels%2Fy");
	assert_url("https://openrouter.ai/api/v1", "/v1/models/a%2Fb", NULL,
		   "https://openrouter.ai/api/v1/models/a%2Fb");
}

static void
url_later_v1_segment_in_client_path_is_kept(void **state)
{
	(void)state;
	assert_url("https://openrouter.ai/api/v1", "/v1/models/org/v1", NULL,
		   "https://openrouter.ai/api/v1/models/org/v1");
}

static void
url_base_with_bare_slash_path_keeps_client_path(void **state)
{
	(void)state;
	assert_url("http://h/", "/v1/chat/completions", NULL, "http://h/v1/chat/completions");
}

/* ---- upstream_request_header_passes ---- */

static void
request_header_client_credentials_are_dropped(void **state)
{
	(void)state;
	const char *names[] = {"Authorization", "authorization", "AUTHORIZATION",
			       "X-Api-Key",     "x-api-key",     "X-API-KEY"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_false(upstream_request_header_passes(names[i], NULL));
}

static void
request_header_host_cookie_content_length_are_dropped(void **state)
{
	(void)state;
	const char *names[] = {"Host",   "host",           "Cookie",
			       "COOKIE", "Content-Length", "content-length"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_false(upstream_request_header_passes(names[i], NULL));
}

static void
request_header_hop_by_hop_are_dropped_case_insensitively(void **state)
{
	(void)state;
	const char *names[] = {
		"Connection",
		"connection",
		"Keep-Alive",
		"keep-alive",
		"Proxy-Authorization",
		"proxy-authorization",
		"TE",
		"te",
		"Trailer",
		"TRAILER",
		"Transfer-Encoding",
		"transfer-encoding",
		"Upgrade",
		"upgrade",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_false(upstream_request_header_passes(names[i], NULL));
}

static void
request_header_named_in_connection_is_dropped(void **state)
{
	(void)state;
	assert_false(upstream_request_header_passes("X-Hop", "X-Hop"));
	assert_false(upstream_request_header_passes("X-Hop", "keep-alive, X-Hop"));
	assert_false(upstream_request_header_passes("X-Hop", "keep-alive,x-hop"));
	assert_false(upstream_request_header_passes("x-hop", "X-HOP , close"));
	assert_false(upstream_request_header_passes("X-Hop", "close,\tX-Hop\t,foo"));
	assert_false(upstream_request_header_passes("X-Custom", "X-Other, X-Custom"));
}

static void
request_header_not_named_in_connection_passes(void **state)
{
	(void)state;
	/* Whole tokens only: a longer or shorter name is another header. */
	assert_true(upstream_request_header_passes("X-Hop", "X-Hopper"));
	assert_true(upstream_request_header_passes("X-Hop", "X-Ho"));
	assert_true(upstream_request_header_passes("X-Hop", "keep-alive, close"));
	assert_true(upstream_request_header_passes("X-Hop", ""));
	assert_true(upstream_request_header_passes("X-Hop", ","));
	assert_true(upstream_request_header_passes("X-Hop", NULL));
}

static void
request_header_end_to_end_pass(void **state)
{
	(void)state;
	const char *names[] = {"Content-Type",   "content-type", "OpenAI-Organization",
			       "Openai-Project", "X-Custom",     "Accept",
			       "User-Agent",     "Api-Version",  "X-Stainless-Lang"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_true(upstream_request_header_passes(names[i], NULL));
}

static void
request_header_accept_encoding_is_dropped(void **state)
{
	(void)state;
	/* The gateway reads answers to count tokens: no compressed bodies. */
	assert_false(upstream_request_header_passes("Accept-Encoding", NULL));
	assert_false(upstream_request_header_passes("accept-encoding", NULL));
}

/* ---- upstream_response_header_passes ---- */

static void
response_header_end_to_end_pass(void **state)
{
	(void)state;
	const char *names[] = {
		"Content-Type",  "content-type",
		"X-Request-Id",  "Openai-Processing-Ms",
		"Retry-After",   "X-Ratelimit-Remaining-Requests",
		"Cache-Control", "Access-Control-Allow-Origin",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_true(upstream_response_header_passes(names[i]));
}

static void
response_header_hop_by_hop_are_dropped_case_insensitively(void **state)
{
	(void)state;
	const char *names[] = {
		"Connection",
		"CONNECTION",
		"Keep-Alive",
		"keep-alive",
		"TE",
		"Trailer",
		"trailer",
		"Upgrade",
		"Proxy-Authenticate",
		"Transfer-Encoding",
		"transfer-encoding",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_false(upstream_response_header_passes(names[i]));
}

static void
response_header_content_length_and_status_are_dropped(void **state)
{
	(void)state;
	assert_false(upstream_response_header_passes("Content-Length"));
	assert_false(upstream_response_header_passes("content-length"));
	assert_false(upstream_response_header_passes("Status"));
	assert_false(upstream_response_header_passes("status"));
}

/* ---- upstream_answer_line_passes ---- */

static bool
answer_line(const char *line)
{
	return upstream_answer_line_passes(line, strlen(line));
}

static void
answer_line_end_to_end_passes(void **state)
{
	(void)state;
	assert_true(answer_line("Content-Type: application/json"));
	assert_true(answer_line("X-Request-Id:abc"));
	assert_true(answer_line("Location: https://example.com/x"));
	assert_true(answer_line("location:\thttps://example.com/x"));
	assert_true(answer_line("X-Odd!#$%&'*+-.^_`|~1: v"));
}

static void
answer_line_local_location_dropped_after_any_whitespace(void **state)
{
	/* Apache's CGI parser skips every isspace() byte before the value. */
	(void)state;
	assert_false(answer_line("Location: /etc/passwd"));
	assert_false(answer_line("Location:/x"));
	assert_false(answer_line("LOCATION: \t /x"));
	assert_false(answer_line("Location:\v/x"));
	assert_false(answer_line("Location:\f/x"));
	assert_false(answer_line("Location: \v\f /x"));
	assert_false(answer_line("X-Sendfile: /etc/passwd"));
	assert_false(answer_line("x-accel-redirect: /internal"));
}

static void
answer_line_name_must_be_token(void **state)
{
	(void)state;
	assert_false(answer_line("X Y: v"));
	assert_false(answer_line("X-Y : v"));
	assert_false(answer_line("X\vY: v"));
	assert_false(answer_line("Location\f: /x"));
	assert_false(answer_line("X(Y): v"));
	assert_false(answer_line("X\"Y: v"));
	assert_false(answer_line("X\xc3\xa9: v"));
	assert_false(answer_line(": v"));
	assert_false(answer_line("no colon"));
}

static void
answer_line_folded_or_broken_dropped(void **state)
{
	(void)state;
	assert_false(answer_line(" folded"));
	assert_false(answer_line("\tfolded: v"));
	assert_false(answer_line("X-A: a\rX-B: b"));
	assert_false(upstream_answer_line_passes("X-A: a\0b", 8));
	assert_false(answer_line(""));
	assert_false(answer_line("Content-Length: 5"));
	assert_false(answer_line("Transfer-Encoding: chunked"));
}

/* ---- upstream_status_retryable ---- */

static void
status_retryable_on_auth_timeout_conflict_and_rate_limit(void **state)
{
	(void)state;
	const long codes[] = {401, 403, 408, 409, 429};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		assert_true(upstream_status_retryable(codes[i]));
}

static void
status_retryable_on_every_5xx(void **state)
{
	(void)state;
	for (long s = 500; s <= 599; s++)
		assert_true(upstream_status_retryable(s));
}

static void
status_not_retryable_on_success_and_client_errors(void **state)
{
	(void)state;
	const long codes[] = {200, 201, 204, 301, 302, 304, 400, 402, 404,
			      405, 406, 410, 411, 413, 415, 422, 451, 499};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		assert_false(upstream_status_retryable(codes[i]));
}

/* ---- upstream_headers ---- */

static void
headers_carry_endpoint_key_as_bearer(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "sk-endpoint-key");
	const char *lines[] = {
		"Content-Type: application/json",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_true(list_has(l, "Authorization: Bearer sk-endpoint-key"));
	assert_int_equal(list_count_name(l, "Authorization"), 1);
	curl_slist_free_all(l);
}

static void
headers_never_carry_client_key(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "sk-endpoint-key");
	const char *lines[] = {
		"Authorization: Bearer sk-client-secret",
		"X-Api-Key: sk-client-secret",
		"Content-Type: application/json",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_false(list_mentions(l, "sk-client-secret"));
	assert_int_equal(list_count_name(l, "X-Api-Key"), 0);
	assert_int_equal(list_count_name(l, "Authorization"), 1);
	assert_true(list_has(l, "Authorization: Bearer sk-endpoint-key"));
	curl_slist_free_all(l);
}

static void
headers_empty_endpoint_key_sends_no_authorization(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "");
	const char *lines[] = {
		"Authorization: Bearer sk-client-secret",
		"Content-Type: application/json",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_int_equal(list_count_name(l, "Authorization"), 0);
	assert_false(list_mentions(l, "sk-client-secret"));
	assert_false(list_mentions(l, "Bearer"));
	assert_true(list_has(l, "Content-Type: application/json"));
	curl_slist_free_all(l);
}

static void
headers_pass_client_end_to_end_headers(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "k");
	const char *lines[] = {
		"Content-Type: application/json",
		"Openai-Organization: org-123",
		"X-Custom: custom value",
		"Accept: text/event-stream",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_true(list_has(l, "Content-Type: application/json"));
	assert_true(list_has(l, "Openai-Organization: org-123"));
	assert_true(list_has(l, "X-Custom: custom value"));
	assert_true(list_has(l, "Accept: text/event-stream"));
	curl_slist_free_all(l);
}

static void
headers_drop_host_cookie_length_and_hop_by_hop(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "k");
	const char *lines[] = {
		"Host: gateway.example",
		"Cookie: session=abc",
		"Content-Length: 42",
		"Connection: keep-alive",
		"Keep-Alive: timeout=5",
		"Proxy-Authorization: Basic eHg6eXk=",
		"Te: trailers",
		"Trailer: X-Checksum",
		"Transfer-Encoding: chunked",
		"Upgrade: h2c",
		"Accept-Encoding: gzip",
		"X-Kept: yes",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	const char *gone[] = {"Host",
			      "Cookie",
			      "Content-Length",
			      "Connection",
			      "Keep-Alive",
			      "Te",
			      "Proxy-Authorization",
			      "Trailer",
			      "Transfer-Encoding",
			      "Upgrade",
			      "Accept-Encoding"};
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
		assert_int_equal(list_count_name(l, gone[i]), 0);
	assert_false(list_mentions(l, "session=abc"));
	assert_false(list_mentions(l, "eHg6eXk="));
	assert_true(list_has(l, "X-Kept: yes"));
	curl_slist_free_all(l);
}

static void
headers_drop_headers_named_in_connection(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "k");
	const char *lines[] = {
		"Connection: keep-alive, X-Secret-Hop",
		"X-Secret-Hop: hop",
		"X-Custom: stays",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_int_equal(list_count_name(l, "X-Secret-Hop"), 0);
	assert_int_equal(list_count_name(l, "Connection"), 0);
	assert_true(list_has(l, "X-Custom: stays"));
	curl_slist_free_all(l);
}

static void
headers_add_endpoint_extra_headers(void **state)
{
	(void)state;
	struct config_api api;
	struct config_pair extra[] = {{(char *)"api-version", (char *)"2024-02-01"},
				      {(char *)"X-Title", (char *)"api-together"}};
	api_init(&api, "k");
	api.headers = extra;
	api.n_headers = 2;
	const char *lines[] = {
		"Content-Type: application/json",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_true(list_has(l, "api-version: 2024-02-01"));
	assert_true(list_has(l, "X-Title: api-together"));
	assert_true(list_has(l, "Content-Type: application/json"));
	curl_slist_free_all(l);
}

static void
headers_endpoint_extra_header_overrides_client_header(void **state)
{
	(void)state;
	struct config_api api;
	struct config_pair extra[] = {{(char *)"api-version", (char *)"from-config"}};
	api_init(&api, "k");
	api.headers = extra;
	api.n_headers = 1;
	const char *lines[] = {
		"Api-Version: from-client",
		"X-Custom: c",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_true(list_has(l, "api-version: from-config"));
	assert_false(list_mentions(l, "from-client"));
	assert_int_equal(list_count_name(l, "Api-Version"), 1);
	assert_true(list_has(l, "X-Custom: c"));
	curl_slist_free_all(l);
}

static void
headers_disable_expect_continue(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "k");
	const char *lines[] = {
		"Expect: 100-continue",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_true(list_has(l, "Expect:"));
	assert_int_equal(list_count_name(l, "Expect"), 1);
	assert_false(list_mentions(l, "100-continue"));
	curl_slist_free_all(l);
}

static void
headers_without_client_headers_hold_key_and_expect(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "sk-e");
	const char *lines[] = {NULL};

	struct curl_slist *l = headers_for(lines, &api);
	assert_true(list_has(l, "Authorization: Bearer sk-e"));
	assert_true(list_has(l, "Expect:"));
	curl_slist_free_all(l);
}

static void
headers_drop_client_value_with_cr_or_lf(void **state)
{
	(void)state;
	struct config_api api;
	api_init(&api, "k");
	const char *lines[] = {
		"X-Evil-Crlf: a\r\nX-Injected: 1",
		"X-Evil-Lf: a\nX-Injected: 2",
		"X-Evil-Cr: a\rX-Injected: 3",
		"X-Good: fine",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	assert_int_equal(list_count_name(l, "X-Evil-Crlf"), 0);
	assert_int_equal(list_count_name(l, "X-Evil-Lf"), 0);
	assert_int_equal(list_count_name(l, "X-Evil-Cr"), 0);
	assert_false(list_mentions(l, "X-Injected"));
	assert_true(list_has(l, "X-Good: fine"));
	curl_slist_free_all(l);
}

static void
headers_no_line_holds_cr_or_lf(void **state)
{
	(void)state;
	struct config_api api;
	struct config_pair extra[] = {{(char *)"X-Extra", (char *)"e"}};
	api_init(&api, "sk-e");
	api.headers = extra;
	api.n_headers = 1;
	const char *lines[] = {
		"X-A: 1",
		"X-B: two\r\n",
		"Content-Type: text/plain",
		NULL,
	};

	struct curl_slist *l = headers_for(lines, &api);
	for (const struct curl_slist *p = l; p != NULL; p = p->next)
		assert_null(strpbrk(p->data, "\r\n"));
	curl_slist_free_all(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(url_base_without_path_keeps_client_path),
		cmocka_unit_test(url_base_path_replaces_v1),
		cmocka_unit_test(url_base_path_v1_gives_v1_once),
		cmocka_unit_test(url_base_path_without_v1_is_used_as_is),
		cmocka_unit_test(url_query_is_kept),
		cmocka_unit_test(url_without_query_has_no_question_mark),
		cmocka_unit_test(url_base_with_port),
		cmocka_unit_test(url_client_path_exactly_v1),
		cmocka_unit_test(url_client_path_goes_on_as_sent),
		cmocka_unit_test(url_later_v1_segment_in_client_path_is_kept),
		cmocka_unit_test(url_base_with_bare_slash_path_keeps_client_path),
		cmocka_unit_test(request_header_client_credentials_are_dropped),
		cmocka_unit_test(request_header_host_cookie_content_length_are_dropped),
		cmocka_unit_test(request_header_hop_by_hop_are_dropped_case_insensitively),
		cmocka_unit_test(request_header_named_in_connection_is_dropped),
		cmocka_unit_test(request_header_not_named_in_connection_passes),
		cmocka_unit_test(request_header_end_to_end_pass),
		cmocka_unit_test(request_header_accept_encoding_is_dropped),
		cmocka_unit_test(response_header_end_to_end_pass),
		cmocka_unit_test(response_header_hop_by_hop_are_dropped_case_insensitively),
		cmocka_unit_test(response_header_content_length_and_status_are_dropped),
		cmocka_unit_test(answer_line_end_to_end_passes),
		cmocka_unit_test(answer_line_local_location_dropped_after_any_whitespace),
		cmocka_unit_test(answer_line_name_must_be_token),
		cmocka_unit_test(answer_line_folded_or_broken_dropped),
		cmocka_unit_test(status_retryable_on_auth_timeout_conflict_and_rate_limit),
		cmocka_unit_test(status_retryable_on_every_5xx),
		cmocka_unit_test(status_not_retryable_on_success_and_client_errors),
		cmocka_unit_test(headers_carry_endpoint_key_as_bearer),
		cmocka_unit_test(headers_never_carry_client_key),
		cmocka_unit_test(headers_empty_endpoint_key_sends_no_authorization),
		cmocka_unit_test(headers_pass_client_end_to_end_headers),
		cmocka_unit_test(headers_drop_host_cookie_length_and_hop_by_hop),
		cmocka_unit_test(headers_drop_headers_named_in_connection),
		cmocka_unit_test(headers_add_endpoint_extra_headers),
		cmocka_unit_test(headers_endpoint_extra_header_overrides_client_header),
		cmocka_unit_test(headers_disable_expect_continue),
		cmocka_unit_test(headers_without_client_headers_hold_key_and_expect),
		cmocka_unit_test(headers_drop_client_value_with_cr_or_lf),
		cmocka_unit_test(headers_no_line_holds_cr_or_lf),
		cmocka_unit_test(headers_holding_a_client_key_are_dropped),
		cmocka_unit_test(query_kept_as_sent_without_a_client_key),
		cmocka_unit_test(query_parameters_holding_a_client_key_are_dropped),
	};

	return cmocka_run_group_tests(tests, 0, 0);
}

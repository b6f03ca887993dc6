/* Unit tests of response.c: the bytes of every answer head the gateway
 * frames (status line, headers, CORS), as the web server reads them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "response.h"

/* A FastCGI stream writing into memory: a writer's buffer is public in
 * fcgiapp.h, and libfcgi only calls emptyBuffProc when it is full. */
struct test_out {
	FCGX_Stream s;
	unsigned char buf[16384];
};

static void
test_out_full(FCGX_Stream *s, int do_close)
{
	(void)do_close;
	s->isClosed = 1; /* every later write fails: the test sees it */
	s->FCGI_errno = -1;
}

static FCGX_Stream *
test_out_open(struct test_out *o)
{
	memset(o, 0, sizeof(*o));
	o->s.wrNext = o->buf;
	o->s.stop = o->buf + sizeof(o->buf) - 1; /* room for a NUL */
	o->s.rdNext = o->s.stop;
	o->s.emptyBuffProc = test_out_full;
	return &o->s;
}

/* What was written, as a string. */
static const char *
test_out_text(struct test_out *o)
{
	assert_int_equal(o->s.FCGI_errno, 0);
	*o->s.wrNext = '\0';
	return (const char *)o->buf;
}

static void
json_answer_with_and_without_cors(void **state)
{
	(void)state;
	struct test_out o;
	json_t *body = json_pack("{s:i}", "a", 1);

	assert_non_null(body);
	assert_int_equal(response_json(test_out_open(&o), 200, body, true), 200);
	assert_string_equal(test_out_text(&o), "Status: 200 OK\r\n"
					       "Content-Type: application/json\r\n"
					       "Access-Control-Allow-Origin: *\r\n"
					       "Content-Length: 7\r\n"
					       "\r\n"
					       "{\"a\":1}");
	assert_int_equal(response_json(test_out_open(&o), 200, body, false), 200);
	assert_string_equal(test_out_text(&o), "Status: 200 OK\r\n"
					       "Content-Type: application/json\r\n"
					       "Content-Length: 7\r\n"
					       "\r\n"
					       "{\"a\":1}");
	json_decref(body);
}

static void
error_answer_from_the_table(void **state)
{
	(void)state;
	struct test_out o;
	static const char body[] = "{\"error\":{\"message\":\"Unknown path.\",\"type\":"
				   "\"invalid_request_error\",\"code\":\"not_found\"}}";
	char want[512];

	assert_int_equal(response_error(test_out_open(&o), RESP_NOT_FOUND, NULL, 0, true), 404);
	snprintf(want, sizeof(want),
		 "Status: 404 Not Found\r\n"
		 "Content-Type: application/json\r\n"
		 "Access-Control-Allow-Origin: *\r\n"
		 "Content-Length: %zu\r\n"
		 "\r\n"
		 "%s",
		 strlen(body), body);
	assert_string_equal(test_out_text(&o), want);
	assert_int_equal(response_error_status(RESP_RATE_LIMITED), 429);
}

/* doc/behaviour.md, Errors: a path outside server.forwardPaths; the message
 * tells the client why and the operator what to change, without echoing
 * the path (it may hold any byte). */
static void
not_forwarded_answer_names_the_setting(void **state)
{
	(void)state;
	struct test_out o;
	static const char body[] = "{\"error\":{\"message\":\"This path is not forwarded to the "
				   "upstreams. The gateway's operator can allow it in "
				   "server.forwardPaths.\",\"type\":\"invalid_request_error\","
				   "\"code\":\"not_forwarded\"}}";
	char want[512];

	assert_int_equal(response_error(test_out_open(&o), RESP_NOT_FORWARDED, NULL, 0, false),
			 404);
	snprintf(want, sizeof(want),
		 "Status: 404 Not Found\r\n"
		 "Content-Type: application/json\r\n"
		 "Content-Length: %zu\r\n"
		 "\r\n"
		 "%s",
		 strlen(body), body);
	assert_string_equal(test_out_text(&o), want);
	assert_int_equal(response_error_status(RESP_NOT_FORWARDED), 404);
}

/* Retry-After and Allow come before the status line, as they always have:
 * the web server keeps that order on the wire. */
static void
retry_after_goes_first(void **state)
{
	(void)state;
	struct test_out o;
	static const char body[] = "{\"error\":{\"message\":\"wait\",\"type\":"
				   "\"rate_limit_error\",\"code\":\"rate_limit_exceeded\"}}";
	char want[512];

	assert_int_equal(response_error(test_out_open(&o), RESP_RATE_LIMITED, "wait", 7, false),
			 429);
	snprintf(want, sizeof(want),
		 "Retry-After: 7\r\n"
		 "Status: 429 Too Many Requests\r\n"
		 "Content-Type: application/json\r\n"
		 "Content-Length: %zu\r\n"
		 "\r\n"
		 "%s",
		 strlen(body), body);
	assert_string_equal(test_out_text(&o), want);
}

static void
method_not_allowed_lists_the_methods_first(void **state)
{
	(void)state;
	struct test_out o;
	static const char body[] = "{\"error\":{\"message\":\"Method not allowed on this path.\","
				   "\"type\":\"invalid_request_error\",\"code\":"
				   "\"method_not_allowed\"}}";
	char want[512];

	assert_int_equal(response_method_not_allowed(test_out_open(&o), "GET, HEAD", true), 405);
	snprintf(want, sizeof(want),
		 "Allow: GET, HEAD\r\n"
		 "Status: 405 Method Not Allowed\r\n"
		 "Content-Type: application/json\r\n"
		 "Access-Control-Allow-Origin: *\r\n"
		 "Content-Length: %zu\r\n"
		 "\r\n"
		 "%s",
		 strlen(body), body);
	assert_string_equal(test_out_text(&o), want);
}

static void
preflight_echoes_one_safe_line_only(void **state)
{
	(void)state;
	struct test_out o;
	static const char head[] =
		"Status: 204 No Content\r\n"
		"Access-Control-Allow-Origin: *\r\n"
		"Access-Control-Allow-Methods: GET, POST, PUT, PATCH, DELETE, OPTIONS\r\n";
	char want[512];

	assert_int_equal(response_preflight(test_out_open(&o), "X-Custom, Authorization"), 204);
	snprintf(want, sizeof(want),
		 "%sAccess-Control-Allow-Headers: X-Custom, Authorization\r\n"
		 "Access-Control-Max-Age: 86400\r\n\r\n",
		 head);
	assert_string_equal(test_out_text(&o), want);
	snprintf(want, sizeof(want),
		 "%sAccess-Control-Allow-Headers: Authorization, Content-Type, X-Api-Key\r\n"
		 "Access-Control-Max-Age: 86400\r\n\r\n",
		 head);
	response_preflight(test_out_open(&o), "X-A\r\nSet-Cookie: a=b");
	assert_string_equal(test_out_text(&o), want);
	response_preflight(test_out_open(&o), NULL);
	assert_string_equal(test_out_text(&o), want);
	response_preflight(test_out_open(&o), "");
	assert_string_equal(test_out_text(&o), want);
}

/* An upstream's answer: its headers pass after the status line, and the
 * gateway's CORS header only when the upstream sent none. */
static void
relayed_head_keeps_an_upstream_cors_header(void **state)
{
	(void)state;
	struct test_out o;
	static const char plain[] = "Content-Type: text/plain\r\nX-Request-Id: 7\r\n";
	static const char own[] = "Content-Type: text/plain\r\naccess-control-allow-origin: "
				  "https://a.example\r\n";
	FCGX_Stream *out = test_out_open(&o);

	response_begin(out, &(struct response_head){.status = 201,
						    .relayed = plain,
						    .relayed_len = strlen(plain),
						    .cors = true});
	response_headerf(out, "Content-Length", "%ld", 12L);
	response_end_headers(out);
	assert_string_equal(test_out_text(&o), "Status: 201 \r\n"
					       "Content-Type: text/plain\r\n"
					       "X-Request-Id: 7\r\n"
					       "Access-Control-Allow-Origin: *\r\n"
					       "Content-Length: 12\r\n"
					       "\r\n");
	out = test_out_open(&o);
	response_begin(out, &(struct response_head){.status = 502,
						    .relayed = own,
						    .relayed_len = strlen(own),
						    .cors = true});
	response_end_headers(out);
	assert_string_equal(test_out_text(&o), "Status: 502 Bad Gateway\r\n"
					       "Content-Type: text/plain\r\n"
					       "access-control-allow-origin: https://a.example\r\n"
					       "\r\n");
}

/* A header whose name only starts like the CORS one is not it. */
static void
relayed_lookalike_is_not_cors(void **state)
{
	(void)state;
	struct test_out o;
	static const char head[] = "Access-Control-Allow-Origins: x\r\n";
	FCGX_Stream *out = test_out_open(&o);

	response_begin(out, &(struct response_head){.status = 200,
						    .relayed = head,
						    .relayed_len = strlen(head),
						    .cors = true});
	response_end_headers(out);
	assert_string_equal(test_out_text(&o), "Status: 200 OK\r\n"
					       "Access-Control-Allow-Origins: x\r\n"
					       "Access-Control-Allow-Origin: *\r\n"
					       "\r\n");
}

static void
long_formatted_value_is_cut_but_the_line_ends(void **state)
{
	(void)state;
	struct test_out o;
	char big[3000];
	FCGX_Stream *out = test_out_open(&o);

	memset(big, 'v', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	response_headerf(out, "X-Big", "%s", big);
	const char *text = test_out_text(&o);
	size_t len = strlen(text);
	assert_true(len > 1000 && len < sizeof(big));
	assert_memory_equal(text, "X-Big: vvv", 10);
	assert_memory_equal(text + len - 3, "v\r\n", 3);
}

static void
number_header_in_decimal_at_every_width(void **state)
{
	(void)state;
	struct test_out o;
	FCGX_Stream *out = test_out_open(&o);

	response_header_number(out, "Content-Length", 0);
	response_header_number(out, "Content-Length", 7);
	response_header_number(out, "Content-Length", 409);
	response_header_number(out, "Content-Length", 1234567890123LL);
	response_header_number(out, "X-N", -42);
	response_header_number(out, "X-Max", INT64_MAX);
	response_header_number(out, "X-Min", INT64_MIN);
	assert_string_equal(test_out_text(&o), "Content-Length: 0\r\n"
					       "Content-Length: 7\r\n"
					       "Content-Length: 409\r\n"
					       "Content-Length: 1234567890123\r\n"
					       "X-N: -42\r\n"
					       "X-Max: 9223372036854775807\r\n"
					       "X-Min: -9223372036854775808\r\n");
}

static void
status_line_of_every_class(void **state)
{
	(void)state;
	struct test_out o;
	static const struct {
		long status;
		const char *line;
	} cases[] = {
		{200, "Status: 200 OK\r\n"},
		{404, "Status: 404 Not Found\r\n"},
		{503, "Status: 503 Service Unavailable\r\n"},
		{299, "Status: 299 \r\n"}, /* no reason known: the space stays */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		response_begin(test_out_open(&o),
			       &(struct response_head){.status = cases[i].status});
		assert_string_equal(test_out_text(&o), cases[i].line);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(json_answer_with_and_without_cors),
		cmocka_unit_test(error_answer_from_the_table),
		cmocka_unit_test(not_forwarded_answer_names_the_setting),
		cmocka_unit_test(retry_after_goes_first),
		cmocka_unit_test(method_not_allowed_lists_the_methods_first),
		cmocka_unit_test(preflight_echoes_one_safe_line_only),
		cmocka_unit_test(relayed_head_keeps_an_upstream_cors_header),
		cmocka_unit_test(relayed_lookalike_is_not_cors),
		cmocka_unit_test(long_formatted_value_is_cut_but_the_line_ends),
		cmocka_unit_test(number_header_in_decimal_at_every_width),
		cmocka_unit_test(status_line_of_every_class),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

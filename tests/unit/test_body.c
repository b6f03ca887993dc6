#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "body.h"

#define CT_JSON "application/json"
#define CT_MP_QUOTED "multipart/form-data; boundary=\"----b0und\""
#define CT_MP_PLAIN "multipart/form-data; boundary=----b0und"

/* Inspects a NUL-terminated body; asserts success and returns the info. */
static struct body_info
inspect_ok(const char *ct, const char *body)
{
	struct body_info info;
	char err[256];

	memset(&info, 0xa5, sizeof(info));
	assert_int_equal(body_inspect(ct, body, strlen(body), &info, err, sizeof(err)), 0);
	return info;
}

/* Inspects and asserts failure; err must start with prefix. */
static void
inspect_fails(const char *ct, const char *body, size_t len, const char *prefix)
{
	struct body_info info;
	char err[256];

	memset(&info, 0, sizeof(info));
	assert_int_equal(body_inspect(ct, body, len, &info, err, sizeof(err)), -1);
	assert_null(info.model);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("err \"%s\" does not start with \"%s\"", err, prefix);
}

/* Rewrites and asserts the exact output. */
static void
rewrite_is(const char *ct, const char *body, const char *model, const char *want)
{
	char *out = NULL;
	size_t outlen = 0;

	assert_int_equal(body_rewrite_model(ct, body, strlen(body), model, &out, &outlen), 0);
	assert_non_null(out);
	assert_int_equal(outlen, strlen(want));
	assert_memory_equal(out, want, outlen);
	free(out);
}

static void
rewrite_fails(const char *ct, const char *body, const char *model)
{
	char *out = NULL;
	size_t outlen = 0;

	assert_int_equal(body_rewrite_model(ct, body, strlen(body), model, &out, &outlen), -1);
	assert_null(out);
}

static void
assert_model(const struct body_info *info, const char *want)
{
	if (want == NULL)
		assert_null(info->model);
	else
		assert_string_equal(info->model, want);
}

/* '{"a":' then depth '[' and as many ']' then '}', malloc'd. */
static char *
deep_body(size_t depth, int closed, size_t *len)
{
	char *b = malloc(2 * depth + 16);
	size_t n = 0;

	assert_non_null(b);
	memcpy(b, "{\"a\":", 5);
	n = 5;
	memset(b + n, '[', depth);
	n += depth;
	if (closed) {
		memset(b + n, ']', depth);
		n += depth;
		b[n++] = '}';
	}
	b[n] = '\0';
	*len = n;
	return b;
}

/* JSON: what inspect reads */

static void
json_model_is_read(void **state)
{
	struct body_info info = inspect_ok(CT_JSON, "{\"model\":\"gpt-4o\",\"messages\":[]}");

	(void)state;
	assert_int_equal(info.kind, BODY_JSON);
	assert_model(&info, "gpt-4o");
	assert_false(info.stream);
	body_info_free(&info);
	assert_null(info.model);
}

static void
json_without_model_has_null_model(void **state)
{
	struct body_info info = inspect_ok(CT_JSON, "{\"input\":\"hi\"}");

	(void)state;
	assert_int_equal(info.kind, BODY_JSON);
	assert_null(info.model);
	body_info_free(&info);

	info = inspect_ok(CT_JSON, " { } ");
	assert_int_equal(info.kind, BODY_JSON);
	assert_null(info.model);
	body_info_free(&info);
}

static void
stream_true_is_reported(void **state)
{
	struct body_info info = inspect_ok(CT_JSON, "{\"model\":\"m\",\"stream\":true}");

	(void)state;
	assert_true(info.stream);
	body_info_free(&info);
}

static void
stream_not_true_is_not_a_stream(void **state)
{
	static const char *const bodies[] = {
		"{\"model\":\"m\",\"stream\":false}",
		"{\"model\":\"m\",\"stream\":\"true\"}",
		"{\"model\":\"m\",\"stream\":1}",
		"{\"model\":\"m\",\"options\":{\"stream\":true}}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct body_info info = inspect_ok(CT_JSON, bodies[i]);

		assert_false(info.stream);
		body_info_free(&info);
	}
}

static void
escaped_model_value_is_decoded(void **state)
{
	struct body_info info =
		inspect_ok(CT_JSON, "{\"model\":\"a\\\"b\\\\c\\/d\\u00e9\\ud83d\\ude00\"}");

	(void)state;
	assert_model(&info, "a\"b\\c/d\xc3\xa9\xf0\x9f\x98\x80");
	body_info_free(&info);
}

static void
escaped_model_key_is_recognised(void **state)
{
	struct body_info info = inspect_ok(CT_JSON, "{\"mod\\u0065l\":\"x\"}");

	(void)state;
	assert_model(&info, "x");
	body_info_free(&info);
}

static void
big_integer_elsewhere_is_accepted(void **state)
{
	struct body_info info =
		inspect_ok(CT_JSON, "{\"seed\":123456789012345678901234567890,\"model\":\"m\"}");

	(void)state;
	assert_model(&info, "m");
	body_info_free(&info);
}

static void
nul_in_other_strings_is_accepted(void **state)
{
	struct body_info info = inspect_ok(CT_JSON, "{\"model\":\"m\",\"input\":\"a\\u0000b\"}");

	(void)state;
	assert_model(&info, "m");
	body_info_free(&info);
}

/* JSON: what inspect refuses */

static void
non_object_json_is_rejected(void **state)
{
	static const char *const bodies[] = {"[1,2]", "\"model\"", "42", "null", "true"};

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
		inspect_fails(CT_JSON, bodies[i], strlen(bodies[i]),
			      "request body must be a JSON object");
}

static void
non_string_model_is_rejected(void **state)
{
	static const char *const bodies[] = {
		"{\"model\":42}",      "{\"model\":null}", "{\"model\":{\"name\":\"x\"}}",
		"{\"model\":[\"x\"]}", "{\"model\":true}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
		inspect_fails(CT_JSON, bodies[i], strlen(bodies[i]), "\"model\" must be a string");
}

static void
nul_in_model_is_rejected(void **state)
{
	static const char body[] = "{\"model\":\"gpt\\u0000x\"}";

	(void)state;
	inspect_fails(CT_JSON, body, strlen(body), "\"model\" must not contain NUL");
}

static void
invalid_json_is_rejected_with_position(void **state)
{
	static const char body[] = "{\"model\":\"m\",\n\"x\": }";
	struct body_info info;
	char err[256];

	(void)state;
	assert_int_equal(body_inspect(CT_JSON, body, strlen(body), &info, err, sizeof(err)), -1);
	assert_null(info.model);
	assert_true(strncmp(err, "request body is not valid JSON: ", 32) == 0);
	assert_non_null(strstr(err, " at line 2 column "));
}

static void
trailing_garbage_is_rejected(void **state)
{
	static const char body[] = "{\"model\":\"m\"} {}";

	(void)state;
	inspect_fails(CT_JSON, body, strlen(body), "request body is not valid JSON: ");
}

static void
truncated_json_is_rejected(void **state)
{
	static const char body[] = "{\"model\":\"m\",\"messages\":[{\"role\":";

	(void)state;
	inspect_fails(CT_JSON, body, strlen(body), "request body is not valid JSON: ");
	/* Every shorter prefix, too: none may crash or pass. */
	for (size_t n = 1; n < strlen(body); n++)
		inspect_fails(CT_JSON, body, n, "request body is not valid JSON: ");
}

static void
deep_nesting_is_rejected_cleanly(void **state)
{
	size_t len;
	char *b = deep_body(100000, 1, &len);

	(void)state;
	inspect_fails(CT_JSON, b, len, "request body is not valid JSON: ");
	free(b);

	b = deep_body(100000, 0, &len);
	inspect_fails(CT_JSON, b, len, "request body is not valid JSON: ");
	free(b);
}

static void
deep_nesting_does_not_break_rewrite(void **state)
{
	size_t len, outlen;
	char *b = deep_body(100000, 1, &len);
	char *out = NULL;

	(void)state;
	/* No top-level model: nothing to replace, and no crash on the way. */
	assert_int_equal(body_rewrite_model(CT_JSON, b, len, "x", &out, &outlen), -1);
	assert_null(out);
	free(b);

	b = deep_body(100000, 0, &len);
	assert_int_equal(body_rewrite_model(CT_JSON, b, len, "x", &out, &outlen), -1);
	free(b);
}

static void
err_may_be_null(void **state)
{
	struct body_info info;

	(void)state;
	assert_int_equal(body_inspect(CT_JSON, "[", 1, &info, NULL, 0), -1);
	assert_int_equal(body_inspect(CT_JSON, "{\"model\":1}", 11, &info, NULL, 0), -1);
}

static void
long_error_is_truncated(void **state)
{
	struct body_info info;
	char err[16];

	(void)state;
	assert_int_equal(body_inspect(CT_JSON, "{\"model\":", 9, &info, err, sizeof(err)), -1);
	assert_int_equal(strlen(err), sizeof(err) - 1);
}

/* Content types */

static void
content_type_parameters_are_ignored(void **state)
{
	static const char *const cts[] = {
		"application/json; charset=utf-8",   "APPLICATION/JSON",
		" Application/Json ;charset=UTF-8",  "application/vnd.api+json",
		"application/merge-patch+JSON; x=y",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cts) / sizeof(cts[0]); i++) {
		struct body_info info = inspect_ok(cts[i], "{\"model\":\"m\"}");

		assert_int_equal(info.kind, BODY_JSON);
		assert_model(&info, "m");
		body_info_free(&info);
	}
}

static void
json_content_type_with_non_json_body_is_rejected(void **state)
{
	(void)state;
	inspect_fails("application/json; charset=utf-8", "model=m", 7,
		      "request body is not valid JSON: ");
}

static void
brace_body_without_content_type_is_json(void **state)
{
	struct body_info info = inspect_ok(NULL, " \r\n\t{\"model\":\"m\"}");

	(void)state;
	assert_int_equal(info.kind, BODY_JSON);
	assert_model(&info, "m");
	body_info_free(&info);

	info = inspect_ok("", "{\"model\":\"m\"}");
	assert_int_equal(info.kind, BODY_JSON);
	body_info_free(&info);

	info = inspect_ok("application/x-www-form-urlencoded", "{\"model\":\"m\"}");
	assert_int_equal(info.kind, BODY_JSON);
	assert_model(&info, "m");
	body_info_free(&info);

	inspect_fails(NULL, "{nope", 5, "request body is not valid JSON: ");
	rewrite_is(NULL, "\n{\"model\":\"m\"}", "n", "\n{\"model\":\"n\"}");
	rewrite_is("application/x-www-form-urlencoded", "{\"model\":\"m\"}", "n",
		   "{\"model\":\"n\"}");
}

static void
other_bodies_have_no_model(void **state)
{
	static const struct {
		const char *ct;
		const char *body;
	} cases[] = {
		{NULL, "model=m"},
		{NULL, "[\"model\"]"},
		{"application/x-www-form-urlencoded", "model=m&x={"},
		{"application/octet-stream", "[1]"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct body_info info = inspect_ok(cases[i].ct, cases[i].body);
		char *out = NULL;
		size_t outlen;

		assert_int_equal(info.kind, BODY_OTHER);
		assert_null(info.model);
		assert_false(info.stream);
		body_info_free(&info);
		assert_int_equal(body_rewrite_model(cases[i].ct, cases[i].body,
						    strlen(cases[i].body), "x", &out, &outlen),
				 -1);
	}
}

/* Upstreams read JSON whatever its label: an object labelled otherwise
 * still routes on its model, so no label can reach an endpoint that is not
 * configured for the model. */
static void
json_object_under_another_label_routes_on_its_model(void **state)
{
	static const char *const types[] = {"text/plain", "application/jsonx", "+json",
					    "application/octet-stream", "text/json"};

	(void)state;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct body_info info = inspect_ok(types[i], "{\"model\":\"m\",\"stream\":true}");
		assert_int_equal(info.kind, BODY_JSON);
		assert_string_equal(info.model, "m");
		assert_true(info.stream);
		body_info_free(&info);
	}
}

/* An object that does not parse is refused whatever its label: an upstream
 * that reads it anyway (NaN, a trailing comma) would see a model no check saw. */
static void
broken_object_under_another_label_is_refused(void **state)
{
	struct body_info info;
	char err[256];
	const char *body = "{\"model\":\"gpt-4-expensive\",\"temperature\":NaN}";

	(void)state;
	assert_int_equal(body_inspect("text/plain", body, strlen(body), &info, err, sizeof(err)),
			 -1);
	assert_true(err[0] != '\0');
}

static void
empty_body_is_empty(void **state)
{
	struct body_info info;
	char err[64];
	char *out = NULL;
	size_t outlen;

	(void)state;
	assert_int_equal(body_inspect(CT_JSON, NULL, 0, &info, err, sizeof(err)), 0);
	assert_int_equal(info.kind, BODY_EMPTY);
	assert_null(info.model);
	body_info_free(&info);
	assert_int_equal(body_inspect(NULL, "", 0, &info, err, sizeof(err)), 0);
	assert_int_equal(info.kind, BODY_EMPTY);
	body_info_free(&info);
	assert_int_equal(body_rewrite_model(CT_JSON, "", 0, "x", &out, &outlen), -1);
}

/* JSON rewrite */

static void
rewrite_keeps_every_other_byte(void **state)
{
	(void)state;
	rewrite_is(CT_JSON,
		   "{ \"temperature\" : 0.70, \"model\" :\t\"gpt-4o\" ,\n"
		   "  \"messages\": [{\"role\":\"user\",\"content\":\"h\\u00e9llo \\\"x\\\"\"}],\n"
		   "  \"n\":1e2 }",
		   "llama-3",
		   "{ \"temperature\" : 0.70, \"model\" :\t\"llama-3\" ,\n"
		   "  \"messages\": [{\"role\":\"user\",\"content\":\"h\\u00e9llo \\\"x\\\"\"}],\n"
		   "  \"n\":1e2 }");
}

static void
rewrite_handles_whitespace_variants(void **state)
{
	(void)state;
	rewrite_is(CT_JSON, "{\"model\":\"a\"}", "b", "{\"model\":\"b\"}");
	rewrite_is(CT_JSON, "\r\n\t {\r\n\t \"model\"\r\n\t :\r\n\t \"a\"\r\n\t }\r\n\t ", "bb",
		   "\r\n\t {\r\n\t \"model\"\r\n\t :\r\n\t \"bb\"\r\n\t }\r\n\t ");
	rewrite_is(CT_JSON, "{\"x\":[1, {\"y\":null}] ,\"model\":\"\"}", "m",
		   "{\"x\":[1, {\"y\":null}] ,\"model\":\"m\"}");
	rewrite_is(CT_JSON, "{\"a\":true,\"b\":false,\"c\":null,\"d\":-1.5e+3,\"model\":\"old\"}",
		   "new", "{\"a\":true,\"b\":false,\"c\":null,\"d\":-1.5e+3,\"model\":\"new\"}");
}

static void
rewrite_with_escaped_old_value(void **state)
{
	(void)state;
	rewrite_is(CT_JSON, "{\"model\":\"a\\\"}\\\\\",\"z\":1}", "b", "{\"model\":\"b\",\"z\":1}");
}

static void
rewrite_escapes_the_new_name(void **state)
{
	static const char body[] = "{\"model\":\"m\",\"k\":2}";
	static const char name[] = "a\"b\\c\nd\te\x01\x1f/\xc3\xa9";
	json_error_t jerr;
	json_t *root;
	char *out = NULL;
	size_t outlen;

	(void)state;
	rewrite_is(CT_JSON, body, name,
		   "{\"model\":\"a\\\"b\\\\c\\nd\\te\\u0001\\u001f/\xc3\xa9\",\"k\":2}");

	/* And what jansson reads back is the name itself. */
	assert_int_equal(body_rewrite_model(CT_JSON, body, strlen(body), name, &out, &outlen), 0);
	root = json_loadb(out, outlen, 0, &jerr);
	assert_non_null(root);
	assert_string_equal(json_string_value(json_object_get(root, "model")), name);
	json_decref(root);
	free(out);
}

static void
rewrite_recognises_escaped_key(void **state)
{
	(void)state;
	rewrite_is(CT_JSON, "{\"mod\\u0065l\":\"x\",\"m\\u006Fdel\":\"y\"}", "z",
		   "{\"mod\\u0065l\":\"z\",\"m\\u006Fdel\":\"z\"}");
	/* Keys that only look alike stay. */
	rewrite_fails(CT_JSON, "{\"model \":\"x\",\"Model\":\"y\",\"mode\":\"z\",\"models\":\"w\"}",
		      "q");
	rewrite_fails(CT_JSON, "{\"model\\u0000\":\"x\",\"mod\\nl\":\"y\"}", "q");
}

static void
nested_model_is_not_rewritten(void **state)
{
	(void)state;
	rewrite_is(CT_JSON,
		   "{\"messages\":[{\"model\":\"inner\",\"content\":\"\\\"model\\\":\\\"s\\\"\"}],"
		   "\"meta\":{\"model\":\"deep\",\"a\":[{\"model\":\"deeper\"}]},"
		   "\"model\":\"outer\",\"tools\":[\"model\",\"x\"]}",
		   "new",
		   "{\"messages\":[{\"model\":\"inner\",\"content\":\"\\\"model\\\":\\\"s\\\"\"}],"
		   "\"meta\":{\"model\":\"deep\",\"a\":[{\"model\":\"deeper\"}]},"
		   "\"model\":\"new\",\"tools\":[\"model\",\"x\"]}");
	rewrite_fails(CT_JSON, "{\"messages\":[{\"model\":\"inner\"}]}", "new");
	/* Brackets inside strings do not confuse the walk. */
	rewrite_is(CT_JSON, "{\"a\":\"}]{[\",\"b\":[\"]\",{\"c\":\"}\"}],\"model\":\"x\"}", "y",
		   "{\"a\":\"}]{[\",\"b\":[\"]\",{\"c\":\"}\"}],\"model\":\"y\"}");
}

static void
every_top_level_model_is_rewritten(void **state)
{
	(void)state;
	rewrite_is(CT_JSON, "{\"model\":\"a\",\"x\":{\"model\":\"n\"},\"model\":\"b\"}", "c",
		   "{\"model\":\"c\",\"x\":{\"model\":\"n\"},\"model\":\"c\"}");
	/* Only string values are replaced. */
	rewrite_is(CT_JSON, "{\"model\":7,\"model\":\"b\"}", "c", "{\"model\":7,\"model\":\"c\"}");
}

static void
rewrite_without_model_fails(void **state)
{
	(void)state;
	rewrite_fails(CT_JSON, "{\"input\":\"hi\"}", "x");
	rewrite_fails(CT_JSON, "{}", "x");
	rewrite_fails(CT_JSON, "{\"model\":null}", "x");
	rewrite_fails(CT_JSON, "{\"model\":[\"a\"]}", "x");
	rewrite_fails(CT_JSON, "[{\"model\":\"a\"}]", "x");
	rewrite_fails(CT_JSON, "{\"model\":\"a\"", "x");
	rewrite_fails(CT_JSON, "{\"model\":\"a", "x");
	rewrite_fails(CT_JSON, "{\"model\" \"a\"}", "x");
}

/* A quote ends a string unless an odd run of backslashes comes right before
 * it; the walk finds quotes with memchr and counts the run back, so runs of
 * each length, at the start of a string or after other bytes, pin it. */
static void
backslash_runs_before_a_quote(void **state)
{
	static const char bs[] = "\\\\\\\\\\\\\\\\"; /* 8 backslashes */

	(void)state;
	for (size_t lead = 0; lead < 2; lead++) {
		for (size_t k = 0; k < 7; k++) {
			char body[64], want[64];
			struct body_info info;
			char err[256];
			int n, w;

			n = snprintf(body, sizeof(body), "{\"a\":\"%.*s%.*s\",\"model\":\"m\"}",
				     (int)lead, "x", (int)k, bs);
			w = snprintf(want, sizeof(want), "{\"a\":\"%.*s%.*s\",\"model\":\"n\"}",
				     (int)lead, "x", (int)k, bs);
			assert_true(n > 0 && (size_t)n < sizeof(body));
			assert_true(w > 0 && (size_t)w < sizeof(want));
			memset(&info, 0, sizeof(info));
			if (k % 2 == 0) {
				rewrite_is(CT_JSON, body, "n", want);
				assert_int_equal(body_inspect(CT_JSON, body, (size_t)n, &info, err,
							      sizeof(err)),
						 0);
				assert_model(&info, "m");
				body_info_free(&info);
			} else {
				/* The quote is escaped: the string runs on into "model" and
				 * the object is malformed, for jansson too. */
				rewrite_fails(CT_JSON, body, "n");
				assert_int_equal(body_inspect(CT_JSON, body, (size_t)n, &info, err,
							      sizeof(err)),
						 -1);
			}
		}
	}
}

static void
rewrite_never_reads_past_the_end(void **state)
{
	static const char body[] = "{\"a\":[1,{\"b\":\"c\\\"\"}],\"mod\\u0065l\":\"x\",\"z\":null}";
	size_t len = strlen(body);

	(void)state;
	/* Each prefix in a buffer of its exact size, so a sanitizer or valgrind
	 * sees any read past it. */
	for (size_t n = 0; n < len; n++) {
		char *b = malloc(n + 1);
		char *out = NULL;
		size_t outlen;

		assert_non_null(b);
		memcpy(b, body, n);
		(void)body_rewrite_model(CT_JSON, n == 0 ? NULL : b, n, "y", &out, &outlen);
		free(out);
		free(b);
	}
}

/* multipart/form-data */

#define MP_FILE                                                                                    \
	"------b0und\r\n"                                                                          \
	"Content-Disposition: form-data; name=\"file\"; filename=\"model\"\r\n"                    \
	"Content-Type: audio/mpeg\r\n"                                                             \
	"\r\n"                                                                                     \
	"ID3\x00\x01\r\n--not-the-boundary\r\n------b0undary-alike\r\n\r\n"                        \
	"\r\n"
#define MP_LANG                                                                                    \
	"------b0und\r\n"                                                                          \
	"Content-Disposition: form-data; name=\"language\"\r\n"                                    \
	"\r\n"                                                                                     \
	"en\r\n"
#define MP_MODEL(v)                                                                                \
	"------b0und\r\n"                                                                          \
	"Content-Disposition: form-data; name=\"model\"\r\n"                                       \
	"\r\n" v "\r\n"
#define MP_END "------b0und--\r\n"

static void
mp_inspect_is(const char *ct, const char *body, size_t len, const char *want)
{
	struct body_info info;
	char err[64];

	assert_int_equal(body_inspect(ct, body, len, &info, err, sizeof(err)), 0);
	assert_int_equal(info.kind, BODY_MULTIPART);
	assert_false(info.stream);
	assert_model(&info, want);
	body_info_free(&info);
}

/* Inspects body[0..len) and asserts it is refused as ambiguous. */
static void
mp_inspect_ambiguous(const char *ct, const char *body, size_t len)
{
	struct body_info info;
	char err[128];

	memset(&info, 0, sizeof(info));
	assert_int_equal(body_inspect(ct, body, len, &info, err, sizeof(err)), BODY_AMBIGUOUS);
	assert_null(info.model);
	assert_true(err[0] != '\0');
}

/* Rewrites body[0..len) and checks it equals want[0..wantlen). */
static void
mp_rewrite_is(const char *ct, const char *body, size_t len, const char *model, const char *want,
	      size_t wantlen)
{
	char *out = NULL;
	size_t outlen;

	assert_int_equal(body_rewrite_model(ct, body, len, model, &out, &outlen), 0);
	assert_int_equal(outlen, wantlen);
	assert_memory_equal(out, want, wantlen);
	free(out);
}

#define LEN(s) (sizeof(s) - 1)

/* Issue 16: what parsers read differently is refused, not guessed. */

static void
json_duplicate_model_is_ambiguous(void **state)
{
	static const char *const bodies[] = {
		"{\"model\":\"a\",\"model\":\"b\"}",
		"{\"model\":\"a\",\"x\":1,\"mod\\u0065l\":\"a\"}",
		"{\"model\":\"a\",\"model\":\"a\"}",
	};
	struct body_info info;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		memset(&info, 0, sizeof(info));
		assert_int_equal(body_inspect(CT_JSON, bodies[i], strlen(bodies[i]), &info, err,
					      sizeof(err)),
				 BODY_AMBIGUOUS);
		assert_null(info.model);
		assert_string_equal(err, "\"model\" must appear once in the request body");
	}
	/* A nested "model" is no second one. */
	info = inspect_ok(CT_JSON, "{\"model\":\"a\",\"x\":{\"model\":\"b\"}}");
	assert_model(&info, "a");
	body_info_free(&info);
}

static void
bom_before_an_object_is_json(void **state)
{
	static const char body[] = "\xef\xbb\xbf {\"model\":\"m\",\"stream\":true}";
	static const char *const cts[] = {CT_JSON, NULL, "text/plain",
					  "application/x-www-form-urlencoded"};
	struct body_info info;
	char *out = NULL;
	size_t outlen;

	(void)state;
	for (size_t i = 0; i < sizeof(cts) / sizeof(cts[0]); i++) {
		info = inspect_ok(cts[i], body);
		assert_int_equal(info.kind, BODY_JSON);
		assert_model(&info, "m");
		assert_true(info.stream);
		body_info_free(&info);
	}
	/* The rewrite keeps the mark, as every other byte. */
	rewrite_is(NULL, body, "n", "\xef\xbb\xbf {\"model\":\"n\",\"stream\":true}");
	/* Only at the very start, only once. */
	inspect_fails(CT_JSON, " \xef\xbb\xbf{}", 6, "request body is not valid JSON: ");
	inspect_fails(CT_JSON, "\xef\xbb\xbf\xef\xbb\xbf{}", 8, "request body is not valid JSON: ");
	info = inspect_ok(NULL, "\xef\xbb\xbf\xef\xbb\xbf{}");
	assert_int_equal(info.kind, BODY_OTHER);
	body_info_free(&info);
	assert_int_equal(body_rewrite_model(CT_JSON, "\xef\xbb\xbf[]", 5, "x", &out, &outlen), -1);
}

static void
multipart_ambiguities_are_refused(void **state)
{
	static const char name_star[] = "------b0und\r\n"
					"Content-Disposition: form-data; name*=utf-8''model\r\n"
					"\r\n"
					"zzz\r\n" MP_MODEL("m") MP_END;
	static const char name_star_other[] = "------b0und\r\n"
					      "Content-Disposition: form-data; name=\"file\"; "
					      "NAME*=UTF-8''file\r\n"
					      "\r\n"
					      "x\r\n" MP_END;
	static const char one[] = MP_MODEL("m") MP_END;
	static const char *const two_boundaries[] = {
		"multipart/form-data; boundary=----b0und; boundary=other",
		"multipart/form-data; boundary=\"----b0und\"; BOUNDARY=----b0und",
		"multipart/form-data; boundary=----b0und; boundary",
	};

	(void)state;
	mp_inspect_ambiguous(CT_MP_PLAIN, name_star, LEN(name_star));
	mp_inspect_ambiguous(CT_MP_PLAIN, name_star_other, LEN(name_star_other));
	for (size_t i = 0; i < sizeof(two_boundaries) / sizeof(two_boundaries[0]); i++)
		mp_inspect_ambiguous(two_boundaries[i], one, LEN(one));
	/* One boundary, one model part: routed as before. */
	mp_inspect_is(CT_MP_PLAIN, one, LEN(one), "m");
}

static void
multipart_model_part_first_middle_last(void **state)
{
	static const char first[] = MP_MODEL("whisper-1") MP_FILE MP_LANG MP_END;
	static const char first_new[] = MP_MODEL("whisper-large-v3") MP_FILE MP_LANG MP_END;
	static const char middle[] = MP_FILE MP_MODEL("whisper-1") MP_LANG MP_END;
	static const char middle_new[] = MP_FILE MP_MODEL("whisper-large-v3") MP_LANG MP_END;
	static const char last[] = MP_FILE MP_LANG MP_MODEL("whisper-1") MP_END;
	static const char last_new[] = MP_FILE MP_LANG MP_MODEL("whisper-large-v3") MP_END;

	(void)state;
	mp_inspect_is(CT_MP_QUOTED, first, LEN(first), "whisper-1");
	mp_inspect_is(CT_MP_QUOTED, middle, LEN(middle), "whisper-1");
	mp_inspect_is(CT_MP_QUOTED, last, LEN(last), "whisper-1");
	mp_rewrite_is(CT_MP_QUOTED, first, LEN(first), "whisper-large-v3", first_new,
		      LEN(first_new));
	mp_rewrite_is(CT_MP_QUOTED, middle, LEN(middle), "whisper-large-v3", middle_new,
		      LEN(middle_new));
	mp_rewrite_is(CT_MP_QUOTED, last, LEN(last), "whisper-large-v3", last_new, LEN(last_new));
}

static void
multipart_boundary_quoted_or_not(void **state)
{
	static const char body[] = MP_FILE MP_MODEL("m1") MP_END;
	static const char *const cts[] = {
		CT_MP_QUOTED,
		CT_MP_PLAIN,
		"Multipart/Form-Data; BOUNDARY=----b0und",
		"multipart/form-data;boundary=\"----b0und\";charset=utf-8",
		"multipart/form-data; charset=utf-8; Boundary = ----b0und ",
		"multipart/form-data; x=\"a;boundary=zz\"; boundary=----b0und",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cts) / sizeof(cts[0]); i++)
		mp_inspect_is(cts[i], body, LEN(body), "m1");
}

static void
multipart_without_model_has_null_model(void **state)
{
	static const char body[] = MP_FILE MP_LANG MP_END;
	char *out = NULL;
	size_t outlen;

	(void)state;
	mp_inspect_is(CT_MP_QUOTED, body, LEN(body), NULL);
	assert_int_equal(body_rewrite_model(CT_MP_QUOTED, body, LEN(body), "x", &out, &outlen), -1);
	assert_null(out);
}

static void
multipart_without_boundary_has_null_model(void **state)
{
	static const char body[] = MP_MODEL("m1") MP_END;

	(void)state;
	mp_inspect_is("multipart/form-data", body, LEN(body), NULL);
	mp_inspect_is("multipart/form-data; boundary=", body, LEN(body), NULL);
	mp_inspect_is("multipart/form-data; boundary=other", body, LEN(body), NULL);
}

static void
multipart_headers_are_case_insensitive(void **state)
{
	static const char body[] = "------b0und\r\n"
				   "content-type: text/plain\r\n"
				   "CONTENT-DISPOSITION : Form-Data; NAME=model\r\n"
				   "\r\n"
				   "m2\r\n" MP_END;

	(void)state;
	mp_inspect_is(CT_MP_PLAIN, body, LEN(body), "m2");
}

static void
multipart_lf_only_is_accepted(void **state)
{
	static const char body[] = "------b0und\n"
				   "Content-Disposition: form-data; name=\"language\"\n"
				   "\n"
				   "en\n"
				   "------b0und\n"
				   "Content-Disposition: form-data; name=\"model\"\n"
				   "\n"
				   "m3\n"
				   "------b0und--\n";
	static const char want[] = "------b0und\n"
				   "Content-Disposition: form-data; name=\"language\"\n"
				   "\n"
				   "en\n"
				   "------b0und\n"
				   "Content-Disposition: form-data; name=\"model\"\n"
				   "\n"
				   "llama\n"
				   "------b0und--\n";

	(void)state;
	mp_inspect_is(CT_MP_PLAIN, body, LEN(body), "m3");
	mp_rewrite_is(CT_MP_PLAIN, body, LEN(body), "llama", want, LEN(want));
}

static void
multipart_preamble_and_epilogue_are_kept(void **state)
{
	static const char body[] = "preamble\r\n" MP_MODEL("m4") MP_END "epilogue";
	static const char want[] = "preamble\r\n" MP_MODEL("x") MP_END "epilogue";

	(void)state;
	mp_inspect_is(CT_MP_PLAIN, body, LEN(body), "m4");
	mp_rewrite_is(CT_MP_PLAIN, body, LEN(body), "x", want, LEN(want));
}

static void
multipart_value_keeps_inner_bytes(void **state)
{
	/* Spaces and a bare CR in the value are part of it; an empty value is
	 * an empty name. */
	static const char body[] = MP_MODEL(" a b\r ") MP_END;
	static const char empty[] = MP_MODEL("") MP_END;
	static const char empty_new[] = MP_MODEL("m") MP_END;

	(void)state;
	mp_inspect_is(CT_MP_PLAIN, body, LEN(body), " a b\r ");
	mp_inspect_is(CT_MP_PLAIN, empty, LEN(empty), "");
	mp_rewrite_is(CT_MP_PLAIN, empty, LEN(empty), "m", empty_new, LEN(empty_new));
}

static void
multipart_filename_model_is_not_the_model_field(void **state)
{
	static const char body[] =
		"------b0und\r\n"
		"Content-Disposition: form-data; filename=\"model\"; names=\"model\"; "
		"name=\"f\"\r\n"
		"\r\n"
		"data\r\n" MP_END;

	(void)state;
	mp_inspect_is(CT_MP_PLAIN, body, LEN(body), NULL);
}

static void
multipart_boundary_lookalike_in_content_is_content(void **state)
{
	/* A line that starts with the delimiter but goes on is file data. */
	static const char body[] = "------b0und\r\n"
				   "Content-Disposition: form-data; name=\"file\"\r\n"
				   "\r\n"
				   "------b0undX\r\n"
				   "Content-Disposition: form-data; name=\"model\"\r\n"
				   "\r\n"
				   "fake\r\n" MP_MODEL("real") MP_END;

	(void)state;
	mp_inspect_is(CT_MP_PLAIN, body, LEN(body), "real");
}

static void
multipart_every_model_part_is_rewritten(void **state)
{
	static const char body[] = MP_MODEL("a") MP_LANG MP_MODEL("b") MP_END;
	static const char want[] = MP_MODEL("c") MP_LANG MP_MODEL("c") MP_END;

	(void)state;
	/* Refused by inspect (issue 16: parsers keep the first or the last),
	 * but a rewrite still leaves no part naming another model. */
	mp_inspect_ambiguous(CT_MP_PLAIN, body, LEN(body));
	mp_rewrite_is(CT_MP_PLAIN, body, LEN(body), "c", want, LEN(want));
}

static void
multipart_unterminated_part_is_no_model(void **state)
{
	static const char body[] = MP_LANG "------b0und\r\n"
					   "Content-Disposition: form-data; name=\"model\"\r\n"
					   "\r\n"
					   "m5";
	char *out = NULL;
	size_t outlen;

	(void)state;
	mp_inspect_is(CT_MP_PLAIN, body, LEN(body), NULL);
	assert_int_equal(body_rewrite_model(CT_MP_PLAIN, body, LEN(body), "x", &out, &outlen), -1);
	/* Every prefix of a good body: no crash, no read past the end. */
	{
		static const char good[] = MP_FILE MP_MODEL("m6") MP_END;

		for (size_t n = 0; n <= LEN(good); n++) {
			char *b = malloc(n + 1);
			struct body_info info;

			assert_non_null(b);
			memcpy(b, good, n);
			assert_int_equal(body_inspect(CT_MP_PLAIN, b, n, &info, NULL, 0), 0);
			body_info_free(&info);
			out = NULL;
			(void)body_rewrite_model(CT_MP_PLAIN, b, n, "x", &out, &outlen);
			free(out);
			free(b);
		}
	}
}

static void
multipart_nul_in_model_is_no_model(void **state)
{
	static const char body[] = MP_MODEL("a\0b") MP_END;

	(void)state;
	mp_inspect_is(CT_MP_PLAIN, body, LEN(body), NULL);
}

/* A "model" part with no value whose delimiter follows its blank line at
 * once: the rewrite must not glue the new value to that delimiter, which
 * would merge the next part into the model's value (found by fuzz/fuzz_body;
 * fuzz/corpus/fuzz_body/regress-mp-empty-model-*). Either the part is left
 * alone or it gets the value and a line end of its own. */
#define MP_MODEL_NO_VALUE                                                                          \
	"------b0und\r\n"                                                                          \
	"Content-Disposition: form-data; name=\"model\"\r\n"                                       \
	"\r\n"

static void
multipart_empty_model_keeps_the_next_delimiter(void **state)
{
	static const char two[] = MP_MODEL("gpt-4") MP_MODEL_NO_VALUE MP_FILE MP_END;
	static const char one[] = MP_MODEL_NO_VALUE MP_END;
	static const char file_part[] = "\n------b0und\r\n"
					"Content-Disposition: form-data; name=\"file\"";
	struct body_info info;
	char *out = NULL, *again = NULL;
	size_t outlen, againlen;
	bool names_m, file_kept, stable;

	(void)state;
	/* Two model parts, one of them empty: refused by inspect since issue 16;
	 * the rewrite below is what this case pins. */
	mp_inspect_ambiguous(CT_MP_PLAIN, two, LEN(two));
	assert_int_equal(body_rewrite_model(CT_MP_PLAIN, two, LEN(two), "m", &out, &outlen), 0);
	/* Everything is read before the asserts, so that a failure leaks nothing.
	 * The rewritten body still has both parts, now both naming "m". */
	names_m = body_inspect(CT_MP_PLAIN, out, outlen, &info, NULL, 0) == BODY_AMBIGUOUS &&
		  memmem(out, outlen, "\r\n\r\nm\r\n", 7) != NULL;
	/* The file part is still a part of its own ... */
	file_kept = memmem(out, outlen, file_part, LEN(file_part)) != NULL;
	/* ... and a second rewrite finds the same values. */
	stable = body_rewrite_model(CT_MP_PLAIN, out, outlen, "m", &again, &againlen) == 0 &&
		 againlen == outlen && memcmp(again, out, outlen) == 0;
	free(again);
	free(out);
	assert_true(names_m);
	assert_true(file_kept);
	assert_true(stable);

	/* Alone, the part may get the value (then the body must name it) or
	 * be left alone. */
	out = NULL;
	assert_int_equal(body_inspect(CT_MP_PLAIN, one, LEN(one), &info, NULL, 0), 0);
	body_info_free(&info);
	if (body_rewrite_model(CT_MP_PLAIN, one, LEN(one), "m", &out, &outlen) == 0) {
		names_m = body_inspect(CT_MP_PLAIN, out, outlen, &info, NULL, 0) == 0 &&
			  info.model != NULL && strcmp(info.model, "m") == 0;
		body_info_free(&info);
		free(out);
		assert_true(names_m);
	}
}

/* doc/behaviour.md, Limits and state, rule 22: a JSON body's bytes / 4 plus
 * its max_tokens, max_completion_tokens or max_output_tokens (the last
 * whole number given); a body that is not JSON reserves 0. */
static void
token_estimate_of_a_body(void **state)
{
	static const struct {
		const char *ct, *body;
		long long estimate;
	} cases[] = {
		{CT_JSON, "{\"model\":\"m\"}", 3},
		{CT_JSON, "{\"model\":\"m\",\"max_tokens\":100}", 7 + 100},
		{CT_JSON, "{\"max_completion_tokens\":40,\"model\":\"m\"}", 10 + 40},
		{CT_JSON, "{\"max_output_tokens\":8}", 5 + 8},
		{CT_JSON, "{\"max_tokens\":1,\"max_tokens\":200}", 8 + 200},
		{CT_JSON, "{\"max_tokens\":1.5}", 4},
		{CT_JSON, "{\"max_tokens\":\"9\"}", 4},
		{CT_JSON, "{\"messages\":[{\"max_tokens\":50}]}", 8},
		{"text/plain", "hello, this is not JSON at all", 0},
		{CT_MP_PLAIN, "------b0und--\r\n", 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct body_info info = inspect_ok(cases[i].ct, cases[i].body);
		print_message("%s\n", cases[i].body);
		assert_int_equal(info.estimate, cases[i].estimate);
		body_info_free(&info);
	}
}

/* body_ask_usage's copy of body, which must equal want. */
static void
ask_usage_is(const char *body, const char *want)
{
	char *out = NULL;
	size_t outlen = 0;
	json_t *j;

	assert_int_equal(body_ask_usage(body, strlen(body), &out, &outlen), 1);
	if (outlen != strlen(want) || memcmp(out, want, outlen) != 0)
		fail_msg("got [%.*s] want [%s]", (int)outlen, out, want);
	/* What goes upstream still parses (jansson refuses a byte order
	 * mark), and asks for the usage. */
	size_t bom = outlen >= 3 && memcmp(out, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
	j = json_loadb(out + bom, outlen - bom, 0, NULL);
	assert_non_null(j);
	assert_true(json_is_true(
		json_object_get(json_object_get(j, "stream_options"), "include_usage")));
	json_decref(j);
	free(out);
}

static void
ask_usage_adds_stream_options_first(void **state)
{
	(void)state;
	ask_usage_is(
		"{\"model\":\"m\",\"stream\":true}",
		"{\"stream_options\":{\"include_usage\":true},\"model\":\"m\",\"stream\":true}");
	ask_usage_is("{}", "{\"stream_options\":{\"include_usage\":true}}");
	ask_usage_is("  \n{ \"model\" : \"m\" }\n",
		     "  \n{\"stream_options\":{\"include_usage\":true}, \"model\" : \"m\" }\n");
	ask_usage_is("\xef\xbb\xbf{\"model\":\"m\"}",
		     "\xef\xbb\xbf{\"stream_options\":{\"include_usage\":true},\"model\":\"m\"}");
	/* A nested stream_options is not the request's. */
	ask_usage_is("{\"x\":{\"stream_options\":{}},\"s\":\"stream_options\"}",
		     "{\"stream_options\":{\"include_usage\":true},\"x\":{\"stream_options\":{}},"
		     "\"s\":\"stream_options\"}");
}

static void
ask_usage_leaves_the_clients_stream_options(void **state)
{
	static const char *const bodies[] = {
		"{\"model\":\"m\",\"stream_options\":{\"include_usage\":true}}",
		"{\"model\":\"m\",\"stream_options\":{\"include_usage\":false}}",
		"{\"model\":\"m\",\"stream_options\":{}}",
		"{\"model\":\"m\", \"stream_options\" :null}",
		"{\"model\":\"m\",\"stre\\u0061m_options\":{}}",
	};
	char *out = NULL;
	size_t outlen = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		assert_int_equal(body_ask_usage(bodies[i], strlen(bodies[i]), &out, &outlen), 0);
		assert_null(out);
	}
	assert_int_equal(body_ask_usage("[1]", 3, &out, &outlen), -1);
	assert_int_equal(body_ask_usage("{\"a\":", 5, &out, &outlen), -1);
	assert_int_equal(body_ask_usage("", 0, &out, &outlen), -1);
	assert_null(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(json_model_is_read),
		cmocka_unit_test(json_without_model_has_null_model),
		cmocka_unit_test(stream_true_is_reported),
		cmocka_unit_test(stream_not_true_is_not_a_stream),
		cmocka_unit_test(escaped_model_value_is_decoded),
		cmocka_unit_test(escaped_model_key_is_recognised),
		cmocka_unit_test(big_integer_elsewhere_is_accepted),
		cmocka_unit_test(nul_in_other_strings_is_accepted),
		cmocka_unit_test(non_object_json_is_rejected),
		cmocka_unit_test(non_string_model_is_rejected),
		cmocka_unit_test(nul_in_model_is_rejected),
		cmocka_unit_test(invalid_json_is_rejected_with_position),
		cmocka_unit_test(trailing_garbage_is_rejected),
		cmocka_unit_test(truncated_json_is_rejected),
		cmocka_unit_test(deep_nesting_is_rejected_cleanly),
		cmocka_unit_test(deep_nesting_does_not_break_rewrite),
		cmocka_unit_test(err_may_be_null),
		cmocka_unit_test(long_error_is_truncated),
		cmocka_unit_test(content_type_parameters_are_ignored),
		cmocka_unit_test(json_content_type_with_non_json_body_is_rejected),
		cmocka_unit_test(brace_body_without_content_type_is_json),
		cmocka_unit_test(other_bodies_have_no_model),
		cmocka_unit_test(json_object_under_another_label_routes_on_its_model),
		cmocka_unit_test(broken_object_under_another_label_is_refused),
		cmocka_unit_test(empty_body_is_empty),
		cmocka_unit_test(rewrite_keeps_every_other_byte),
		cmocka_unit_test(rewrite_handles_whitespace_variants),
		cmocka_unit_test(rewrite_with_escaped_old_value),
		cmocka_unit_test(rewrite_escapes_the_new_name),
		cmocka_unit_test(rewrite_recognises_escaped_key),
		cmocka_unit_test(nested_model_is_not_rewritten),
		cmocka_unit_test(every_top_level_model_is_rewritten),
		cmocka_unit_test(rewrite_without_model_fails),
		cmocka_unit_test(backslash_runs_before_a_quote),
		cmocka_unit_test(rewrite_never_reads_past_the_end),
		cmocka_unit_test(multipart_model_part_first_middle_last),
		cmocka_unit_test(multipart_boundary_quoted_or_not),
		cmocka_unit_test(multipart_without_model_has_null_model),
		cmocka_unit_test(multipart_without_boundary_has_null_model),
		cmocka_unit_test(multipart_headers_are_case_insensitive),
		cmocka_unit_test(multipart_lf_only_is_accepted),
		cmocka_unit_test(multipart_preamble_and_epilogue_are_kept),
		cmocka_unit_test(multipart_value_keeps_inner_bytes),
		cmocka_unit_test(multipart_filename_model_is_not_the_model_field),
		cmocka_unit_test(multipart_boundary_lookalike_in_content_is_content),
		cmocka_unit_test(multipart_every_model_part_is_rewritten),
		cmocka_unit_test(multipart_unterminated_part_is_no_model),
		cmocka_unit_test(multipart_nul_in_model_is_no_model),
		cmocka_unit_test(multipart_empty_model_keeps_the_next_delimiter),
		cmocka_unit_test(json_duplicate_model_is_ambiguous),
		cmocka_unit_test(bom_before_an_object_is_json),
		cmocka_unit_test(multipart_ambiguities_are_refused),
		cmocka_unit_test(token_estimate_of_a_body),
		cmocka_unit_test(ask_usage_adds_stream_options_first),
		cmocka_unit_test(ask_usage_leaves_the_clients_stream_options),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

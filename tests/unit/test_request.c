/* Unit tests of request.c: mount point detection, percent-decoding and the
 * path safety check (doc/behaviour.md, HTTP and Forwarding). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

/* ---- helpers ---- */

/* Splits uri and checks the three parts; want_query NULL means no query. */
static void
assert_split(const char *uri, const char *base, const char *want_mount, const char *want_path,
	     const char *want_query)
{
	char *mount = (char *)"unset", *path = (char *)"unset", *query = (char *)"unset";

	assert_int_equal(request_split_uri(uri, base, &mount, &path, &query), REQUEST_PATH_OK);
	assert_non_null(mount);
	assert_non_null(path);
	assert_string_equal(mount, want_mount);
	assert_string_equal(path, want_path);
	if (want_query == NULL)
		assert_null(query);
	else {
		assert_non_null(query);
		assert_string_equal(query, want_query);
	}
	free(mount);
	free(path);
	free(query);
}

/* A foreign URI leaves nothing allocated: the outputs are NULL. */
static void
assert_foreign(const char *uri, const char *base)
{
	char *mount = (char *)"unset", *path = (char *)"unset", *query = (char *)"unset";

	assert_int_equal(request_split_uri(uri, base, &mount, &path, &query), REQUEST_PATH_FOREIGN);
	assert_null(mount);
	assert_null(path);
	assert_null(query);
}

static void
assert_decodes(const char *in, const char *want, size_t want_len)
{
	size_t len = (size_t)-1;
	char *out = request_percent_decode(in, &len);

	assert_non_null(out);
	assert_int_equal(len, want_len);
	assert_memory_equal(out, want, want_len);
	/* Terminated, so it can be used as a C string when it has no NUL. */
	assert_int_equal(out[len], '\0');
	free(out);
}

/* Runs request_path_safe on raw and on its decoding, as request_load does. */
static bool
path_safe(const char *raw)
{
	size_t len;
	char *decoded = request_percent_decode(raw, &len);

	assert_non_null(decoded);
	bool safe = request_path_safe(raw, decoded, len);
	free(decoded);
	return safe;
}

/* ---- request_split_uri without a base path ---- */

static void
split_root_v1_path_has_empty_mount(void **state)
{
	(void)state;
	assert_split("/v1/chat", NULL, "", "/v1/chat", NULL);
	assert_split("/v1/chat/completions", NULL, "", "/v1/chat/completions", NULL);
	assert_split("/v1/chat", "", "", "/v1/chat", NULL);
}

static void
split_mount_is_everything_before_v1(void **state)
{
	(void)state;
	assert_split("/llm/v1/chat?x=1", NULL, "/llm", "/v1/chat", "x=1");
	assert_split("/a/b/c/v1/models", NULL, "/a/b/c", "/v1/models", NULL);
}

static void
split_health_at_root(void **state)
{
	(void)state;
	assert_split("/health", NULL, "", "/health", NULL);
	assert_split("/llm/health", NULL, "/llm", "/health", NULL);
}

static void
split_status_page_marks_the_mount(void **state)
{
	(void)state;
	assert_split("/status", NULL, "", "/status", NULL);
	assert_split("/status?key=sk-1", NULL, "", "/status", "key=sk-1");
	assert_split("/llm/status?key=sk-1", NULL, "/llm", "/status", "key=sk-1");
	assert_foreign("/statusx", NULL);
	assert_foreign("/llm/statu", NULL);
}

/* Only a whole segment "metrics" marks the mount, as "health" does. */
static void
split_metrics_marks_the_mount(void **state)
{
	(void)state;
	assert_split("/metrics", NULL, "", "/metrics", NULL);
	assert_split("/llm/metrics", NULL, "/llm", "/metrics", NULL);
	assert_foreign("/metricsx", NULL);
	assert_foreign("/llm/metric", NULL);
}

static void
split_bare_v1_is_ours(void **state)
{
	(void)state;
	assert_split("/v1", NULL, "", "/v1", NULL);
	assert_split("/v1/", NULL, "", "/v1/", NULL);
}

static void
split_query_is_kept_whole(void **state)
{
	(void)state;
	assert_split("/v1/models?a=1&b=/v1/x?y", NULL, "", "/v1/models", "a=1&b=/v1/x?y");
	/* A '?' with nothing after it is an empty query, not none. */
	assert_split("/v1/models?", NULL, "", "/v1/models", "");
}

static void
split_first_v1_segment_marks_the_mount(void **state)
{
	(void)state;
	/* A later "v1" belongs to the path (a model id may hold one). */
	assert_split("/v1/models/org/v1/m", NULL, "", "/v1/models/org/v1/m", NULL);
	assert_split("/llm/v1/models/v1", NULL, "/llm", "/v1/models/v1", NULL);
}

static void
split_other_path_is_foreign(void **state)
{
	(void)state;
	assert_foreign("/other", NULL);
	assert_foreign("/", NULL);
	assert_foreign("/index.html", NULL);
	assert_foreign("/other", "");
}

static void
split_segment_only_starting_with_v1_is_foreign(void **state)
{
	(void)state;
	assert_foreign("/v1x/chat", NULL);
	assert_foreign("/v10", NULL);
	assert_foreign("/xv1/chat", NULL);
	assert_foreign("/healthz", NULL);
	assert_foreign("/llm/v2/chat", NULL);
}

static void
split_v1_in_query_only_is_foreign(void **state)
{
	(void)state;
	assert_foreign("/other?next=/v1/chat", NULL);
	assert_foreign("/other?/health", NULL);
}

/* ---- request_split_uri with API_TOGETHER_BASE_PATH ---- */

static void
split_with_base_strips_base(void **state)
{
	(void)state;
	assert_split("/llm/v1/chat", "/llm", "/llm", "/v1/chat", NULL);
	assert_split("/llm/v1/chat?x=1", "/llm", "/llm", "/v1/chat", "x=1");
	assert_split("/llm/health", "/llm", "/llm", "/health", NULL);
}

static void
split_with_base_trailing_slash_is_the_same(void **state)
{
	(void)state;
	assert_split("/llm/v1/chat", "/llm/", "/llm", "/v1/chat", NULL);
	assert_split("/llm/v1/chat?x=1", "/llm/", "/llm", "/v1/chat", "x=1");
}

static void
split_with_base_prefix_of_segment_is_foreign(void **state)
{
	(void)state;
	assert_foreign("/llmx/v1", "/llm");
	assert_foreign("/llmx/v1", "/llm/");
}

static void
split_with_base_other_path_is_foreign(void **state)
{
	(void)state;
	assert_foreign("/v1/chat", "/llm");
	assert_foreign("/other/v1/chat", "/llm");
	/* The mount point itself has no path below it. */
	assert_foreign("/llm", "/llm");
	assert_foreign("/llm?x=1", "/llm");
}

static void
split_with_multi_segment_base(void **state)
{
	(void)state;
	assert_split("/api/llm/v1/models", "/api/llm", "/api/llm", "/v1/models", NULL);
	assert_foreign("/api/v1/models", "/api/llm");
}

/* ---- request_percent_decode ---- */

static void
decode_valid_escapes(void **state)
{
	(void)state;
	assert_decodes("/v1/models/a%2Fb", "/v1/models/a/b", 14);
	assert_decodes("%41%62%63", "Abc", 3);
	assert_decodes("%2e%2E", "..", 2);
	assert_decodes("a%20b", "a b", 3);
	assert_decodes("%ff", "\xff", 1);
}

static void
decode_plain_text_is_unchanged(void **state)
{
	(void)state;
	assert_decodes("/v1/chat/completions", "/v1/chat/completions", 20);
	assert_decodes("", "", 0);
	/* '+' is a space only in form bodies, not in a path. */
	assert_decodes("a+b", "a+b", 3);
}

static void
decode_malformed_escape_is_kept(void **state)
{
	(void)state;
	assert_decodes("%zz", "%zz", 3);
	assert_decodes("/a%zzb", "/a%zzb", 6);
	assert_decodes("%g1", "%g1", 3);
	assert_decodes("%1g", "%1g", 3);
	assert_decodes("%%41", "%A", 2);
}

static void
decode_nul_escape_gives_nul_inside_with_full_length(void **state)
{
	(void)state;
	assert_decodes("a%00b", "a\0b", 3);
	assert_decodes("%00", "\0", 1);
}

static void
decode_truncated_escape_at_end_is_kept(void **state)
{
	(void)state;
	assert_decodes("abc%4", "abc%4", 5);
	assert_decodes("abc%", "abc%", 4);
	assert_decodes("%", "%", 1);
	assert_decodes("%4", "%4", 2);
	/* An escape that ends exactly at the end is still decoded. */
	assert_decodes("abc%41", "abcA", 4);
}

/* ---- request_path_safe ---- */

static void
safe_ordinary_paths(void **state)
{
	(void)state;
	assert_true(path_safe("/v1/chat/completions"));
	assert_true(path_safe("/v1/models/accounts/x/models/y"));
	assert_true(path_safe("/v1/models/a%2Fb"));
	assert_true(path_safe("/health"));
}

static void
safe_dots_inside_a_segment(void **state)
{
	(void)state;
	assert_true(path_safe("/v1/models/a..b"));
	assert_true(path_safe("/v1/x/.../y"));
	assert_true(path_safe("/v1/models/llama-3.1"));
	assert_true(path_safe("/v1/x/..a/y"));
	assert_true(path_safe("/v1/x/a../y"));
	assert_true(path_safe("/v1/./x"));
}

static void
unsafe_raw_dotdot_segment(void **state)
{
	(void)state;
	assert_false(path_safe("/v1/../etc/passwd"));
	assert_false(path_safe("/v1/models/.."));
	assert_false(path_safe("/../v1/models"));
	assert_false(path_safe(".."));
}

static void
unsafe_encoded_dotdot_segment(void **state)
{
	(void)state;
	assert_false(path_safe("/v1/%2e%2e/etc"));
	assert_false(path_safe("/v1/%2E%2e/etc"));
	assert_false(path_safe("/v1/.%2e/etc"));
	assert_false(path_safe("/v1/%2e./etc"));
	assert_false(path_safe("/v1/models/%2e%2e"));
}

static void
unsafe_dotdot_with_encoded_slash(void **state)
{
	(void)state;
	assert_false(path_safe("/v1/..%2fetc"));
	assert_false(path_safe("/v1/..%2Fetc"));
	assert_false(path_safe("/v1/x%2f..%2fy"));
}

static void
unsafe_dotdot_with_backslash(void **state)
{
	(void)state;
	assert_false(path_safe("/v1/..\\etc"));
	assert_false(path_safe("/v1/x\\..\\y"));
	assert_false(path_safe("/v1/..%5cetc"));
	assert_false(path_safe("/v1/..%5Cetc"));
}

static void
unsafe_encoded_cr_lf_nul(void **state)
{
	(void)state;
	assert_false(path_safe("/v1/chat%0d"));
	assert_false(path_safe("/v1/chat%0D%0AX-Injected:%201"));
	assert_false(path_safe("/v1/chat%0a"));
	assert_false(path_safe("/v1/chat%00.json"));
	assert_false(path_safe("/v1/models/%00"));
}

static void
unsafe_raw_cr_lf(void **state)
{
	(void)state;
	assert_false(path_safe("/v1/chat\r\n"));
	assert_false(path_safe("/v1/chat\nX"));
	assert_false(path_safe("/v1/chat\rX"));
}

static void
unsafe_when_only_decoded_is_bad(void **state)
{
	(void)state;
	/* raw looks harmless; the decoded bytes passed in are what count too. */
	assert_false(request_path_safe("/v1/x", "/v1/..", 6));
	assert_false(request_path_safe("/v1/x", "/v1/\0x", 6));
	assert_false(request_path_safe("/v1/x", "/v1/\rx", 6));
}

static void
unsafe_when_only_raw_is_bad(void **state)
{
	(void)state;
	assert_false(request_path_safe("/v1/../x", "/v1/x", 5));
	assert_false(request_path_safe("/v1/\nx", "/v1/x", 5));
}

static void
safe_check_reads_decoded_by_length_not_nul(void **state)
{
	(void)state;
	/* The "..", NUL and CR past decoded_len are not part of the path. */
	assert_true(request_path_safe("/v1/x", "/v1/x/..", 5));
	assert_true(request_path_safe("/v1/x", "/v1/x\0", 5));
	assert_true(request_path_safe("/v1/x", "/v1/x\r", 5));
}

/* ---- headers and body from FastCGI ---- */

/* A request's headers, however many, come out in order, Title-Case, with
 * the Content-Type among them; a parameter whose name is no token is not
 * one. */
static void
load_collects_every_header(void **state)
{
	(void)state;
	enum { N = 40 };
	char vars[N][32];
	char *env[N + 8];
	size_t k = 0;
	FCGX_Request f;
	struct request r;

	for (int i = 0; i < N; i++) {
		snprintf(vars[i], sizeof(vars[i]), "HTTP_X_TEST_%d=v%d", i, i);
		env[k++] = vars[i];
	}
	env[k++] = (char *)"HTTP_BAD NAME=x";
	env[k++] = (char *)"REQUEST_METHOD=POST";
	env[k++] = (char *)"REQUEST_URI=/v1/chat/completions";
	env[k++] = (char *)"CONTENT_TYPE=application/json";
	env[k] = NULL;
	memset(&f, 0, sizeof(f));
	f.envp = env;
	assert_int_equal(request_load(&r, &f, 0), REQUEST_PATH_OK);
	assert_int_equal(r.n_headers, N + 1);
	for (int i = 0; i < N; i++) {
		char name[32], value[32];
		snprintf(name, sizeof(name), "X-Test-%d", i);
		snprintf(value, sizeof(value), "v%d", i);
		assert_string_equal(r.headers[i].name, name);
		assert_string_equal(r.headers[i].value, value);
	}
	assert_string_equal(r.headers[N].name, "Content-Type");
	assert_string_equal(request_header(&r, "content-type"), "application/json");
	assert_string_equal(request_header(&r, "X-TEST-39"), "v39");
	assert_null(request_header(&r, "Bad Name"));
	request_free(&r);
}

/* Far more headers than any web server passes on (each line of the head
 * at least 4 bytes, the head 64 KiB at most): the request fails, and what
 * was built is freed (valgrind). */
static void
load_refuses_headers_past_the_bound(void **state)
{
	(void)state;
	enum { N = 20000 };
	char **env = calloc(N + 3, sizeof(*env));
	FCGX_Request f;
	struct request r;

	assert_non_null(env);
	for (int i = 0; i < N; i++)
		env[i] = (char *)"HTTP_A=1";
	env[N] = (char *)"REQUEST_URI=/v1/models";
	memset(&f, 0, sizeof(f));
	f.envp = env;
	assert_int_equal(request_load(&r, &f, 0), -1);
	request_free(&r);
	env[16000] = NULL;
	assert_int_equal(request_load(&r, &f, 0), REQUEST_PATH_FOREIGN);
	assert_int_equal(r.n_headers, 16000);
	request_free(&r);
	free(env);
}

/* A body fed by libfcgi in pieces of `piece` bytes; `fail` makes the end a
 * read error. The stream comes first: libfcgi hands it back to fill. */
struct test_in {
	FCGX_Stream s;
	const char *data;
	size_t len, off, piece;
	bool fail;
};

static void
test_in_fill(FCGX_Stream *s)
{
	struct test_in *t = (struct test_in *)s;
	size_t n = t->len - t->off < t->piece ? t->len - t->off : t->piece;

	if (n == 0) {
		s->isClosed = 1;
		if (t->fail)
			s->FCGI_errno = -1;
		return;
	}
	s->rdNext = (unsigned char *)t->data + t->off;
	s->stop = s->rdNext + n;
	t->off += n;
}

/* Runs request_read_body on data (content_length cl, -1: none) with the
 * bound max; the body it read in *r (freed by the caller, request_free). */
static int
read_body(struct request *r, const char *data, size_t len, long long cl, long long max, bool fail)
{
	static FCGX_Request f;
	static struct test_in in;

	memset(&in, 0, sizeof(in));
	in.s.isReader = 1;
	in.s.fillBuffProc = test_in_fill;
	in.data = data;
	in.len = len;
	in.piece = 7000;
	in.fail = fail;
	memset(&f, 0, sizeof(f));
	f.in = &in.s;
	memset(r, 0, sizeof(*r));
	r->fcgi = &f;
	r->content_length = cl;
	return request_read_body(r, max);
}

static char *
pattern(size_t len)
{
	char *p = malloc(len + 1);

	assert_non_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (char)('a' + i % 26);
	p[len] = '\0';
	return p;
}

static void
body_with_length_is_read_exactly(void **state)
{
	(void)state;
	char *data = pattern(20000);
	struct request r;

	assert_int_equal(read_body(&r, data, 20000, 15000, 20000, false), 0);
	assert_int_equal(r.body_len, 15000);
	assert_memory_equal(r.body, data, 15000);
	assert_int_equal(r.body[15000], '\0');
	request_free(&r);
	free(data);
}

static void
empty_body_is_an_empty_string(void **state)
{
	(void)state;
	struct request r;

	assert_int_equal(read_body(&r, "", 0, 0, 100, false), 0);
	assert_non_null(r.body);
	assert_int_equal(r.body_len, 0);
	assert_string_equal(r.body, "");
	request_free(&r);
	assert_int_equal(read_body(&r, "", 0, -1, 100, false), 0);
	assert_non_null(r.body);
	assert_int_equal(r.body_len, 0);
	request_free(&r);
}

/* Without a Content-Length the body grows past the first block as it comes,
 * up to max bytes; one byte more is too large. */
static void
body_without_length_is_bounded_by_max(void **state)
{
	(void)state;
	size_t len = 200000;
	char *data = pattern(len + 1);
	struct request r;

	assert_int_equal(read_body(&r, data, len, -1, (long long)len, false), 0);
	assert_int_equal(r.body_len, len);
	assert_memory_equal(r.body, data, len);
	assert_int_equal(r.body[len], '\0');
	request_free(&r);
	assert_int_equal(read_body(&r, data, len + 1, -1, (long long)len, false), 1);
	assert_null(r.body);
	/* A small max reads no more than one byte past it. */
	assert_int_equal(read_body(&r, data, len, -1, 100, false), 1);
	assert_null(r.body);
	free(data);
}

static void
body_over_max_by_its_length_is_refused(void **state)
{
	(void)state;
	struct request r;

	assert_int_equal(read_body(&r, "0123456789", 10, 10, 9, false), 1);
	assert_null(r.body);
}

/* A body cut short of its length, or ended by a read error, is no body. */
static void
cut_or_failed_body_is_refused(void **state)
{
	(void)state;
	struct request r;

	assert_int_equal(read_body(&r, "0123456789", 10, 20, 100, false), -1);
	assert_null(r.body);
	assert_int_equal(read_body(&r, "0123456789", 10, -1, 100, true), -1);
	assert_null(r.body);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(split_root_v1_path_has_empty_mount),
		cmocka_unit_test(split_mount_is_everything_before_v1),
		cmocka_unit_test(split_status_page_marks_the_mount),
		cmocka_unit_test(split_health_at_root),
		cmocka_unit_test(split_metrics_marks_the_mount),
		cmocka_unit_test(split_bare_v1_is_ours),
		cmocka_unit_test(split_query_is_kept_whole),
		cmocka_unit_test(split_first_v1_segment_marks_the_mount),
		cmocka_unit_test(split_other_path_is_foreign),
		cmocka_unit_test(split_segment_only_starting_with_v1_is_foreign),
		cmocka_unit_test(split_v1_in_query_only_is_foreign),
		cmocka_unit_test(split_with_base_strips_base),
		cmocka_unit_test(split_with_base_trailing_slash_is_the_same),
		cmocka_unit_test(split_with_base_prefix_of_segment_is_foreign),
		cmocka_unit_test(split_with_base_other_path_is_foreign),
		cmocka_unit_test(split_with_multi_segment_base),
		cmocka_unit_test(decode_valid_escapes),
		cmocka_unit_test(decode_plain_text_is_unchanged),
		cmocka_unit_test(decode_malformed_escape_is_kept),
		cmocka_unit_test(decode_nul_escape_gives_nul_inside_with_full_length),
		cmocka_unit_test(decode_truncated_escape_at_end_is_kept),
		cmocka_unit_test(safe_ordinary_paths),
		cmocka_unit_test(safe_dots_inside_a_segment),
		cmocka_unit_test(unsafe_raw_dotdot_segment),
		cmocka_unit_test(unsafe_encoded_dotdot_segment),
		cmocka_unit_test(unsafe_dotdot_with_encoded_slash),
		cmocka_unit_test(unsafe_dotdot_with_backslash),
		cmocka_unit_test(unsafe_encoded_cr_lf_nul),
		cmocka_unit_test(unsafe_raw_cr_lf),
		cmocka_unit_test(unsafe_when_only_decoded_is_bad),
		cmocka_unit_test(unsafe_when_only_raw_is_bad),
		cmocka_unit_test(safe_check_reads_decoded_by_length_not_nul),
		cmocka_unit_test(load_collects_every_header),
		cmocka_unit_test(load_refuses_headers_past_the_bound),
		cmocka_unit_test(body_with_length_is_read_exactly),
		cmocka_unit_test(empty_body_is_an_empty_string),
		cmocka_unit_test(body_without_length_is_bounded_by_max),
		cmocka_unit_test(body_over_max_by_its_length_is_refused),
		cmocka_unit_test(cut_or_failed_body_is_refused),
	};

	return cmocka_run_group_tests(tests, 0, 0);
}

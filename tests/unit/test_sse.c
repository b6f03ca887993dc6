#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "sse.h"

/* An OpenAI chat stream with stream_options.include_usage: every chunk has
 * "usage":null, and a last chunk carries the real usage. */
static const char openai_stream[] =
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
	"\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
	"\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n"
	"\n"
	": keep-alive comment that says usage\n"
	"\n"
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
	"\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},"
	"\"finish_reason\":null}],\"usage\":null}\n"
	"\n"
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
	"\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},"
	"\"finish_reason\":\"stop\"}],\"usage\":null}\n"
	"\n"
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
	"\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,"
	"\"completion_tokens\":10,\"total_tokens\":29,"
	"\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n"
	"\n"
	"data: [DONE]\n"
	"\n";

/* The same stream with CRLF line ends, "data:" without a space, and an event
 * line. */
static const char crlf_stream[] =
	"event: message\r\n"
	"data:{\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\r\n"
	"\r\n"
	"data:{\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,"
	"\"total_tokens\":10}}\r\n"
	"\r\n"
	"data:[DONE]\r\n"
	"\r\n";

static void
assert_usage(const struct usage *u, long long prompt, long long completion, long long total)
{
	assert_true(u->found);
	assert_int_equal(u->prompt, prompt);
	assert_int_equal(u->completion, completion);
	assert_int_equal(u->total, total);
}

static struct sse_parser *
parser_new(void)
{
	struct sse_parser *p = sse_parser_new();

	assert_non_null(p);
	return p;
}

/* Feeds s[0..len) in pieces of size step. */
static void
feed_in_steps(struct sse_parser *p, const char *s, size_t len, size_t step)
{
	for (size_t i = 0; i < len; i += step)
		sse_parser_feed(p, s + i, len - i < step ? len - i : step);
}

/* usage_from_json */

static void
json_usage_is_read(void **state)
{
	static const char body[] =
		"{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"hi\"}}],"
		"\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}";
	struct usage u;

	(void)state;
	assert_int_equal(usage_from_json(body, strlen(body), &u), 0);
	assert_usage(&u, 12, 5, 17);
	assert_true(u.completion_present);
}

static void
embeddings_usage_has_no_completion(void **state)
{
	static const char body[] = "{\"object\":\"list\",\"data\":[{\"embedding\":[0.1,-0.2]}],"
				   "\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}";
	struct usage u;

	(void)state;
	assert_int_equal(usage_from_json(body, strlen(body), &u), 0);
	assert_usage(&u, 8, 0, 8);
	assert_false(u.completion_present);
}

static void
zero_completion_tokens_is_present(void **state)
{
	static const char body[] =
		"{\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":0,\"total_tokens\":4}}";
	struct usage u;

	(void)state;
	assert_int_equal(usage_from_json(body, strlen(body), &u), 0);
	assert_usage(&u, 4, 0, 4);
	assert_true(u.completion_present);
}

static void
total_falls_back_to_prompt_plus_completion(void **state)
{
	static const char body[] = "{\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6}}";
	static const char prompt_only[] = "{\"usage\":{\"prompt_tokens\":4}}";
	struct usage u;

	(void)state;
	assert_int_equal(usage_from_json(body, strlen(body), &u), 0);
	assert_usage(&u, 4, 6, 10);
	assert_true(u.completion_present);
	assert_int_equal(usage_from_json(prompt_only, strlen(prompt_only), &u), 0);
	assert_usage(&u, 4, 0, 4);
	assert_false(u.completion_present);
}

static void
empty_usage_object_is_found_with_zeros(void **state)
{
	static const char body[] = "{\"usage\":{}}";
	struct usage u;

	(void)state;
	assert_int_equal(usage_from_json(body, strlen(body), &u), 0);
	assert_usage(&u, 0, 0, 0);
	assert_false(u.completion_present);
}

static void
huge_numbers_do_not_lose_usage(void **state)
{
	static const char body[] = "{\"seed\":123456789012345678901234567890,"
				   "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}";
	struct usage u;

	(void)state;
	assert_int_equal(usage_from_json(body, strlen(body), &u), 0);
	assert_usage(&u, 3, 2, 5);
}

static void
missing_or_bad_usage_is_not_found(void **state)
{
	static const char *const bodies[] = {
		"{\"id\":\"x\"}",
		"{\"usage\":null}",
		"{\"usage\":42}",
		"{\"usage\":[1]}",
		"{\"choices\":[{\"usage\":{\"prompt_tokens\":1}}]}",
		"[{\"usage\":{\"prompt_tokens\":1}}]",
		"not json at all, but says usage",
		"{\"usage\":{\"prompt_tokens\":1}",
		"",
	};
	struct usage u;

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		memset(&u, 0xa5, sizeof(u));
		assert_int_equal(usage_from_json(bodies[i], strlen(bodies[i]), &u), 0);
		assert_false(u.found);
		assert_false(u.completion_present);
		assert_int_equal(u.prompt, 0);
		assert_int_equal(u.completion, 0);
		assert_int_equal(u.total, 0);
	}
	assert_int_equal(usage_from_json(NULL, 0, &u), 0);
	assert_false(u.found);
}

static void
non_numeric_counts_are_zero(void **state)
{
	static const char body[] = "{\"usage\":{\"prompt_tokens\":\"4\",\"completion_tokens\":null,"
				   "\"total_tokens\":-3}}";
	struct usage u;

	(void)state;
	assert_int_equal(usage_from_json(body, strlen(body), &u), 0);
	assert_usage(&u, 0, 0, 0);
	assert_false(u.completion_present);
}

/* The top-level walk: only the "usage" member of the answer's own object is
 * read, wherever its bytes are and however the JSON is laid out. */

static struct usage
usage_of(const char *body)
{
	struct usage u;

	memset(&u, 0xa5, sizeof(u));
	assert_int_equal(usage_from_json(body, strlen(body), &u), 0);
	return u;
}

static void
assert_no_usage(const struct usage *u)
{
	assert_false(u->found);
	assert_false(u->completion_present);
	assert_int_equal(u->prompt, 0);
	assert_int_equal(u->completion, 0);
	assert_int_equal(u->total, 0);
}

static void
nested_usage_is_not_the_answers(void **state)
{
	static const char *const bodies[] = {
		"{\"meta\":{\"usage\":{\"prompt_tokens\":9}}}",
		"{\"choices\":[{\"message\":{\"usage\":{\"prompt_tokens\":9}}}]}",
		"{\"a\":[[{\"usage\":{\"prompt_tokens\":9}}]],\"b\":{\"c\":{\"usage\":{}}}}",
	};
	struct usage u;

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		u = usage_of(bodies[i]);
		assert_no_usage(&u);
	}
	/* A nested one after the real one does not replace it. */
	u = usage_of("{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2},"
		     "\"meta\":{\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":9}},"
		     "\"list\":[{\"usage\":{\"prompt_tokens\":8}}]}");
	assert_usage(&u, 1, 2, 3);
}

static void
usage_inside_a_string_is_content(void **state)
{
	struct usage u;

	(void)state;
	u = usage_of("{\"content\":\"usage\"}");
	assert_no_usage(&u);
	u = usage_of("{\"content\":\"{\\\"usage\\\":{\\\"prompt_tokens\\\":9}}\"}");
	assert_no_usage(&u);
	/* An escaped quote does not end the string; a doubled backslash does
	 * not escape the quote after it. */
	u = usage_of("{\"c\":\"\\\",\\\"usage\\\":{\\\"prompt_tokens\\\":9}}\","
		     "\"usage\":{\"prompt_tokens\":1}}");
	assert_usage(&u, 1, 0, 1);
	u = usage_of("{\"c\":\"x\\\\\",\"usage\":{\"prompt_tokens\":2}}");
	assert_usage(&u, 2, 0, 2);
	u = usage_of("{\"c\":\"x\\\\\\\",\\\"usage\\\":{\\\"prompt_tokens\\\":9}}\"}");
	assert_no_usage(&u);
	/* Brackets in strings do not unbalance a skipped value. */
	u = usage_of("{\"c\":[\"]}\",{\"d\":\"{[\"}],\"usage\":{\"prompt_tokens\":3}}");
	assert_usage(&u, 3, 0, 3);
	/* A key named in a value, and a value that is the word. */
	u = usage_of("{\"usage_note\":\"usage\",\"x\":\"usage\"}");
	assert_no_usage(&u);
}

static void
last_top_level_usage_wins(void **state)
{
	struct usage u;

	(void)state;
	/* As jansson kept the last of repeated keys when it read the whole. */
	u = usage_of("{\"usage\":{\"prompt_tokens\":1},\"x\":0,\"usage\":{\"prompt_tokens\":2}}");
	assert_usage(&u, 2, 0, 2);
	u = usage_of("{\"usage\":null,\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}");
	assert_usage(&u, 3, 1, 4);
	u = usage_of("{\"usage\":{\"prompt_tokens\":1},\"usage\":null}");
	assert_no_usage(&u);
	u = usage_of("{\"usage\":{\"prompt_tokens\":1},\"us\\u0061ge\":7}");
	assert_no_usage(&u);
}

static void
escaped_key_spelling_is_usage(void **state)
{
	static const char *const lookalikes[] = {
		"{\"Usage\":{\"prompt_tokens\":1}}",
		"{\"usage \":{\"prompt_tokens\":1}}",
		"{\"usag\":{\"prompt_tokens\":1}}",
		"{\"usages\":{\"prompt_tokens\":1}}",
		"{\"us\\u0041ge\":{\"prompt_tokens\":1}}",
		"{\"usage\\u0000\":{\"prompt_tokens\":1}}",
		"{\"usage\\n\":{\"prompt_tokens\":1}}",
		"{\"us\\age\":{\"prompt_tokens\":1}}",
		"{\"us\\u006\":{\"prompt_tokens\":1}}",
	};
	struct usage u;

	(void)state;
	u = usage_of("{\"us\\u0061ge\":{\"prompt_tokens\":4,\"completion_tokens\":1}}");
	assert_usage(&u, 4, 1, 5);
	u = usage_of("{\"\\u0075\\u0073\\u0041ge\":1,"
		     "\"\\u0075\\u0073\\u0061\\u0067\\u0065\":{\"prompt_tokens\":5}}");
	assert_usage(&u, 5, 0, 5);
	u = usage_of("{\"USAGE\":{},\"u\\u0073\\u0061\\u0067\\u0065\":{\"total_tokens\":6}}");
	assert_usage(&u, 0, 0, 6);
	for (size_t i = 0; i < sizeof(lookalikes) / sizeof(lookalikes[0]); i++) {
		u = usage_of(lookalikes[i]);
		assert_no_usage(&u);
	}
}

static void
non_object_usage_is_not_found(void **state)
{
	static const char *const bodies[] = {
		"{\"usage\":null}",
		"{\"usage\":\"{}\"}",
		"{\"usage\":true}",
		"{\"usage\":0}",
		"{\"usage\":[{}]}",
		"{\"usage\":{\"prompt_tokens\":01}}",
		"\"usage\"",
		"null",
		"{\"usage\":{\"prompt_tokens\":1,}}",
	};
	struct usage u;

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		u = usage_of(bodies[i]);
		assert_no_usage(&u);
	}
}

static void
truncated_answer_has_no_usage(void **state)
{
	static const char body[] =
		"{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"a \\\"b\\\"\"}}],"
		"\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}";
	size_t len = strlen(body);
	struct usage u;

	(void)state;
	/* Every proper prefix, in a buffer of its exact size so that a read past
	 * it shows under a sanitizer or valgrind. */
	for (size_t n = 0; n < len; n++) {
		char *b = malloc(n + 1);

		assert_non_null(b);
		memcpy(b, body, n);
		memset(&u, 0xa5, sizeof(u));
		assert_int_equal(usage_from_json(b, n, &u), 0);
		assert_no_usage(&u);
		free(b);
	}
	u = usage_of(body);
	assert_usage(&u, 12, 5, 17);
}

static void
text_after_the_object_loses_usage(void **state)
{
	struct usage u;

	(void)state;
	/* As jansson refused such a body as a whole. */
	u = usage_of("{\"usage\":{\"prompt_tokens\":1}} x");
	assert_no_usage(&u);
	u = usage_of("{\"usage\":{\"prompt_tokens\":1}}{}");
	assert_no_usage(&u);
	u = usage_of("{\"usage\":{\"prompt_tokens\":1}}\r\n \t\n");
	assert_usage(&u, 1, 0, 1);
}

static void
whitespace_everywhere_is_read(void **state)
{
	static const char body[] =
		" \r\n\t{ \n\"id\" :\t\"x\" ,\r\n \"choices\" : [ { \"a\" : [ 1 , 2 ] } ] ,"
		"\n\t\"usage\"\r\n:\t\n{ \"prompt_tokens\" :\r\n7 ,\t\"completion_tokens\" : 2 ,"
		" \"total_tokens\"\n:\n9\n} \r\n}\n\r\t ";
	struct usage u;

	(void)state;
	u = usage_of(body);
	assert_usage(&u, 7, 2, 9);
	assert_true(u.completion_present);
}

/* Content of n bytes (with escapes and brackets in it) before the usage of a
 * whole answer; malloc'd. */
static char *
big_answer(size_t n, size_t *len)
{
	static const char head[] = "{\"choices\":[{\"message\":{\"content\":\"";
	static const char tail[] =
		"\"}}],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":262144}}";
	static const char unit[] = "ab\\\"{[\\\\]}\\u00e9 ";
	size_t ul = sizeof(unit) - 1, o = sizeof(head) - 1;
	char *s = malloc(sizeof(head) + n + ul + sizeof(tail));

	assert_non_null(s);
	memcpy(s, head, o);
	for (size_t i = 0; i < n; i += ul, o += ul)
		memcpy(s + o, unit, ul);
	memcpy(s + o, tail, sizeof(tail));
	*len = o + sizeof(tail) - 1;
	return s;
}

static void
usage_after_a_huge_answer_is_found(void **state)
{
	size_t len;
	char *s = big_answer(1 << 20, &len);
	struct usage u;

	(void)state;
	assert_true(len > 1 << 20);
	assert_int_equal(usage_from_json(s, len, &u), 0);
	assert_usage(&u, 30, 262144, 262174);
	free(s);
}

static void
deep_nesting_elsewhere_is_skipped(void **state)
{
	static const char head[] = "{\"a\":";
	static const char tail[] = ",\"usage\":{\"prompt_tokens\":1}}";
	size_t depth = 100000, o = sizeof(head) - 1;
	char *s = malloc(sizeof(head) + 2 * depth + sizeof(tail));
	struct usage u;

	(void)state;
	assert_non_null(s);
	memcpy(s, head, o);
	memset(s + o, '[', depth);
	memset(s + o + depth, ']', depth);
	o += 2 * depth;
	memcpy(s + o, tail, sizeof(tail));
	/* jansson stops at 2048 levels; only the usage object is parsed, and
	 * the walk counts brackets, so depth elsewhere costs nothing. */
	assert_int_equal(usage_from_json(s, o + sizeof(tail) - 1, &u), 0);
	assert_usage(&u, 1, 0, 1);
	/* Too deep inside usage is jansson's to refuse, without a crash. */
	memcpy(s, "{\"usage\":{\"x\":", 14);
	memset(s + 14, '[', depth);
	memset(s + 14 + depth, ']', depth);
	memcpy(s + 14 + 2 * depth, "}}", 2);
	assert_int_equal(usage_from_json(s, 14 + 2 * depth + 2, &u), 0);
	assert_false(u.found);
	free(s);
}

static void
stream_reads_only_top_level_usage(void **state)
{
	static const char s[] =
		"data: {\"us\\u0061ge\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n"
		"data: {\"choices\":[{\"delta\":{\"usage\":{\"prompt_tokens\":9}}}]}\n\n"
		"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{}\"}}]}\n\n"
		"data: {\"usage\":{\"prompt_tokens\":9},\"usage\":null}\n\n"
		"data: [DONE]\n\n";
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, s, strlen(s));
	sse_parser_usage(p, &u);
	assert_usage(&u, 2, 3, 5);
	sse_parser_free(p);
}

/* The stream parser */

static void
stream_usage_is_read(void **state)
{
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, openai_stream, strlen(openai_stream));
	sse_parser_usage(p, &u);
	assert_usage(&u, 19, 10, 29);
	assert_true(u.completion_present);
	assert_true(sse_parser_saw_data(p));
	sse_parser_free(p);
}

static void
stream_usage_split_across_feeds(void **state)
{
	size_t len = strlen(openai_stream);

	(void)state;
	for (size_t cut = 0; cut <= len; cut++) {
		struct sse_parser *p = parser_new();
		struct usage u;

		sse_parser_feed(p, openai_stream, cut);
		sse_parser_feed(p, openai_stream + cut, len - cut);
		sse_parser_usage(p, &u);
		assert_usage(&u, 19, 10, 29);
		assert_true(sse_parser_saw_data(p));
		sse_parser_free(p);
	}
}

static void
stream_usage_split_in_three_feeds(void **state)
{
	size_t len = strlen(crlf_stream);

	(void)state;
	for (size_t a = 0; a <= len; a++) {
		for (size_t b = a; b <= len; b += 7) {
			struct sse_parser *p = parser_new();
			struct usage u;

			sse_parser_feed(p, crlf_stream, a);
			sse_parser_feed(p, crlf_stream + a, b - a);
			sse_parser_feed(p, crlf_stream + b, len - b);
			sse_parser_usage(p, &u);
			assert_usage(&u, 7, 3, 10);
			sse_parser_free(p);
		}
	}
}

static void
stream_fed_byte_by_byte(void **state)
{
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	feed_in_steps(p, openai_stream, strlen(openai_stream), 1);
	sse_parser_usage(p, &u);
	assert_usage(&u, 19, 10, 29);
	sse_parser_free(p);
}

static void
crlf_stream_split_at_every_offset(void **state)
{
	size_t len = strlen(crlf_stream);

	(void)state;
	for (size_t cut = 0; cut <= len; cut++) {
		struct sse_parser *p = parser_new();
		struct usage u;

		sse_parser_feed(p, crlf_stream, cut);
		sse_parser_feed(p, crlf_stream + cut, len - cut);
		sse_parser_usage(p, &u);
		assert_usage(&u, 7, 3, 10);
		assert_true(u.completion_present);
		assert_true(sse_parser_saw_data(p));
		sse_parser_free(p);
	}
}

static void
null_usage_does_not_erase_earlier_usage(void **state)
{
	static const char s[] =
		"data: "
		"{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n"
		"data: {\"choices\":[],\"usage\":null}\n"
		"data: {\"choices\":[]}\n"
		"data: [DONE]\n";
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, s, strlen(s));
	sse_parser_usage(p, &u);
	assert_usage(&u, 5, 1, 6);
	sse_parser_free(p);
}

static void
last_usage_wins(void **state)
{
	static const char s[] =
		"data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n"
		"data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9}}\n\n";
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, s, strlen(s));
	sse_parser_usage(p, &u);
	assert_usage(&u, 5, 9, 14);
	sse_parser_free(p);
}

static void
comments_and_other_fields_are_ignored(void **state)
{
	static const char s[] = ": {\"usage\":{\"prompt_tokens\":1}}\n"
				"event: {\"usage\":{\"prompt_tokens\":2}}\n"
				"id: {\"usage\":{\"prompt_tokens\":3}}\n"
				"retry: 1000\n"
				"Data: {\"usage\":{\"prompt_tokens\":4}}\n"
				" data: {\"usage\":{\"prompt_tokens\":5}}\n"
				"datum: {\"usage\":{\"prompt_tokens\":6}}\n"
				"\n";
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, s, strlen(s));
	sse_parser_usage(p, &u);
	assert_false(u.found);
	assert_false(sse_parser_saw_data(p));
	sse_parser_free(p);
}

static void
data_without_space_is_read(void **state)
{
	static const char s[] = "data:{\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}\n";
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, s, strlen(s));
	sse_parser_usage(p, &u);
	assert_usage(&u, 2, 0, 2);
	assert_false(u.completion_present);
	assert_true(sse_parser_saw_data(p));
	sse_parser_free(p);
}

static void
usage_word_in_content_is_harmless(void **state)
{
	static const char s[] = "data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}]}\n"
				"data: {\"usage\": broken json\n"
				"data: usage\n";
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, s, strlen(s));
	sse_parser_usage(p, &u);
	assert_false(u.found);
	assert_true(sse_parser_saw_data(p));
	sse_parser_free(p);
}

static void
done_alone_is_no_data(void **state)
{
	static const char *const streams[] = {
		"data: [DONE]\n\n",
		"data: [DONE]\r\n\r\n",
		"data:[DONE]\n",
		": comment\n\ndata: [DONE]",
		"data: [DO",
		"data:",
		"",
		"event: done\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
		struct sse_parser *p = parser_new();
		struct usage u;

		sse_parser_feed(p, streams[i], strlen(streams[i]));
		assert_false(sse_parser_saw_data(p));
		sse_parser_usage(p, &u);
		assert_false(u.found);
		sse_parser_free(p);
	}
}

static void
any_other_data_line_is_data(void **state)
{
	static const char *const streams[] = {
		"data: {}\n",         "data: [DONE]\ndata: {\"x\":1}\n",
		"data: hello",        "data: [DONE]x",
		"data: {\"choices\"",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
		struct sse_parser *p = parser_new();

		sse_parser_feed(p, streams[i], strlen(streams[i]));
		assert_true(sse_parser_saw_data(p));
		sse_parser_free(p);
	}
}

static void
unterminated_last_line_counts(void **state)
{
	static const char s[] = "data: {\"usage\":null}\n\n"
				"data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
	static const char more[] = "\r\n\r\ndata: {\"usage\":{\"prompt_tokens\":1}}\n";
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, s, strlen(s));
	sse_parser_usage(p, &u);
	assert_usage(&u, 3, 4, 7);
	/* Asking does not consume the line: the stream may go on. */
	sse_parser_usage(p, &u);
	assert_usage(&u, 3, 4, 7);
	sse_parser_feed(p, more, strlen(more));
	sse_parser_usage(p, &u);
	assert_usage(&u, 1, 0, 1);
	sse_parser_free(p);
}

/* "data: {"pad":"xxx...","usage":{...}}" with n bytes of padding; malloc'd. */
static char *
long_usage_line(size_t n, size_t *len)
{
	static const char head[] = "data: {\"pad\":\"";
	static const char tail[] =
		"\",\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":100}}\n";
	char *s = malloc(sizeof(head) + n + sizeof(tail));

	assert_non_null(s);
	memcpy(s, head, sizeof(head) - 1);
	memset(s + sizeof(head) - 1, 'x', n);
	memcpy(s + sizeof(head) - 1 + n, tail, sizeof(tail));
	*len = sizeof(head) - 1 + n + sizeof(tail) - 1;
	return s;
}

static void
over_long_line_is_skipped_and_parsing_resumes(void **state)
{
	static const char before[] =
		"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n";
	static const char after[] =
		"data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}\n";
	static const size_t steps[] = {1 << 20, 65536, 4093, 1000};
	size_t len;
	char *big = long_usage_line(300 * 1024, &len);

	(void)state;
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct sse_parser *p = parser_new();
		struct usage u;

		sse_parser_feed(p, before, strlen(before));
		feed_in_steps(p, big, len, steps[i]);
		/* The long line is dropped, not taken as the last usage. */
		sse_parser_usage(p, &u);
		assert_usage(&u, 1, 2, 3);
		sse_parser_feed(p, after, strlen(after));
		sse_parser_usage(p, &u);
		assert_usage(&u, 5, 6, 11);
		sse_parser_free(p);
	}
	free(big);
}

static void
over_long_unterminated_line_is_not_usage(void **state)
{
	size_t len;
	static const char next[] = "\ndata: {\"usage\":{\"prompt_tokens\":2}}\n";
	char *big = long_usage_line(300 * 1024, &len);
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	/* Without its LF the line is still pending, and still too long. */
	feed_in_steps(p, big, len - 1, 8192);
	sse_parser_usage(p, &u);
	assert_false(u.found);
	sse_parser_feed(p, next, strlen(next));
	sse_parser_usage(p, &u);
	assert_usage(&u, 2, 0, 2);
	sse_parser_free(p);
	free(big);
}

static void
over_long_data_line_still_counts_as_data(void **state)
{
	size_t len;
	char *big = long_usage_line(300 * 1024, &len);
	struct sse_parser *p = parser_new();

	(void)state;
	feed_in_steps(p, big, len, 3);
	assert_true(sse_parser_saw_data(p));
	sse_parser_free(p);

	p = parser_new();
	sse_parser_feed(p, big, len);
	assert_true(sse_parser_saw_data(p));
	sse_parser_free(p);
	free(big);
}

static void
line_just_under_the_bound_is_kept(void **state)
{
	size_t len;
	char *big = long_usage_line(200 * 1024, &len);
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	feed_in_steps(p, big, len, 4096);
	sse_parser_usage(p, &u);
	assert_usage(&u, 100, 100, 200);
	sse_parser_free(p);
	free(big);
}

static void
empty_feeds_and_free_null_are_safe(void **state)
{
	struct sse_parser *p = parser_new();
	struct usage u;

	(void)state;
	sse_parser_feed(p, "", 0);
	sse_parser_feed(p, NULL, 0);
	sse_parser_usage(p, &u);
	assert_false(u.found);
	assert_false(sse_parser_saw_data(p));
	sse_parser_free(p);
	sse_parser_free(NULL);
}

/* What a filter let through, and whether the client is "gone". */
struct filter_out {
	char buf[4096];
	size_t len;
	size_t refuse_after; /* emits accepted before refusing; SIZE_MAX never */
	size_t emits;
	bool count_only; /* lengths added up, bytes not kept */
};

static bool
filter_emit(void *ctx, const char *data, size_t len)
{
	struct filter_out *o = ctx;

	if (o->emits++ >= o->refuse_after)
		return false;
	if (o->count_only) {
		o->len += len;
		return true;
	}
	assert_true(o->len + len <= sizeof(o->buf));
	memcpy(o->buf + o->len, data, len);
	o->len += len;
	return true;
}

/* Feeds in[] to a new filter in pieces of step bytes (0: whole) and checks
 * that exactly want[] came out. */
static void
filter_check(const char *in, const char *want, size_t step)
{
	struct sse_filter *f = sse_filter_new();
	struct filter_out o = {.refuse_after = SIZE_MAX};
	size_t n = strlen(in);

	assert_non_null(f);
	if (step == 0)
		step = n;
	for (size_t i = 0; i < n; i += step)
		assert_true(
			sse_filter_feed(f, in + i, i + step <= n ? step : n - i, filter_emit, &o));
	assert_true(sse_filter_end(f, filter_emit, &o));
	if (o.len != strlen(want) || memcmp(o.buf, want, o.len) != 0)
		fail_msg("step %zu: got [%.*s] want [%s]", step, (int)o.len, o.buf, want);
	sse_filter_free(f);
}

/* Feeds in[] split at every offset in two. */
static void
filter_check_splits(const char *in, const char *want)
{
	size_t n = strlen(in);

	for (size_t step = 0; step <= n; step++)
		filter_check(in, want, step);
	for (size_t cut = 1; cut < n; cut++) {
		struct sse_filter *f = sse_filter_new();
		struct filter_out o = {.refuse_after = SIZE_MAX};

		assert_true(sse_filter_feed(f, in, cut, filter_emit, &o));
		assert_true(sse_filter_feed(f, in + cut, n - cut, filter_emit, &o));
		assert_true(sse_filter_end(f, filter_emit, &o));
		assert_int_equal(o.len, strlen(want));
		assert_memory_equal(o.buf, want, o.len);
		sse_filter_free(f);
	}
}

#define CHUNK1 "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n"
#define CHUNK2                                                                                     \
	"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]," \
	"\"usage\":null}\n\n"
#define USAGE_ONLY                                                                                 \
	"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"                       \
	"\"completion_tokens\":2,\"total_tokens\":7}}\n\n"
#define DONE "data: [DONE]\n\n"

static void
filter_removes_the_usage_only_event(void **state)
{
	(void)state;
	filter_check_splits(CHUNK1 CHUNK2 USAGE_ONLY DONE, CHUNK1 CHUNK2 DONE);
}

static void
filter_keeps_every_other_event(void **state)
{
	(void)state;
	/* A chunk with choices and a usage, usage null, comments, id lines. */
	filter_check_splits(": keep-alive\n\n" CHUNK1
			    "data: {\"choices\":[{\"index\":0}],\"usage\":{\"total_tokens\":3}}\n\n"
			    "id: 4\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n"
			    "data: {\"choices\":[],\"usage\":null}\n\n"
			    "data: {\"choices\":[]}\n\n" DONE,
			    ": keep-alive\n\n" CHUNK1
			    "data: {\"choices\":[{\"index\":0}],\"usage\":{\"total_tokens\":3}}\n\n"
			    "id: 4\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n"
			    "data: {\"choices\":[],\"usage\":null}\n\n"
			    "data: {\"choices\":[]}\n\n" DONE);
}

static void
filter_reads_crlf_and_data_without_space(void **state)
{
	(void)state;
	filter_check_splits("data:{\"choices\":[{}]}\r\n\r\n"
			    "data:{ \"choices\" : [ ] , \"usage\" : {\"total_tokens\":9} }\r\n\r\n"
			    "data: [DONE]\r\n\r\n",
			    "data:{\"choices\":[{}]}\r\n\r\ndata: [DONE]\r\n\r\n");
}

static void
filter_reads_escaped_keys(void **state)
{
	(void)state;
	filter_check_splits(CHUNK1 "data: {\"ch\\u006fices\":[],\"us\\u0061ge\":{}}\n\n" DONE,
			    CHUNK1 DONE);
}

static void
filter_drops_an_unterminated_last_usage_event(void **state)
{
	(void)state;
	filter_check_splits(CHUNK1 "data: {\"choices\":[],\"usage\":{\"total_tokens\":1}}\n",
			    CHUNK1);
	filter_check_splits(CHUNK1 "data: {\"choices\":[],\"usage\":{\"total_tokens\":1}}", CHUNK1);
	/* An unterminated event that is not the usage one goes on. */
	filter_check_splits(CHUNK1 "data: {\"choices\":[{}]}", CHUNK1 "data: {\"choices\":[{}]}");
}

static void
filter_holds_back_only_the_current_event(void **state)
{
	struct sse_filter *f = sse_filter_new();
	struct filter_out o = {.refuse_after = SIZE_MAX};

	(void)state;
	assert_true(
		sse_filter_feed(f, CHUNK1 "data: {\"cho", strlen(CHUNK1) + 11, filter_emit, &o));
	assert_int_equal(o.len, strlen(CHUNK1));
	assert_memory_equal(o.buf, CHUNK1, o.len);
	sse_filter_free(f);
}

static void
filter_passes_an_over_long_event_as_it_comes(void **state)
{
	static char big[3 * 64 * 1024];
	struct sse_filter *f = sse_filter_new();
	struct filter_out o = {.refuse_after = SIZE_MAX, .count_only = true};
	size_t n = 0;

	(void)state;
	/* A long comment line: out as soon as it passes the bound, and from
	 * there on as it comes. */
	big[n++] = ':';
	while (n < sizeof(big))
		big[n++] = 'x';
	for (size_t i = 0; i < n; i += 1000)
		assert_true(
			sse_filter_feed(f, big + i, n - i < 1000 ? n - i : 1000, filter_emit, &o));
	assert_int_equal(o.len, n);
	assert_true(sse_filter_feed(f, "\n\n" USAGE_ONLY, 2 + strlen(USAGE_ONLY), filter_emit, &o));
	assert_true(sse_filter_end(f, filter_emit, &o));
	assert_int_equal(o.len, n + 2);
	sse_filter_free(f);
}

static void
filter_stops_when_the_client_is_gone(void **state)
{
	struct sse_filter *f = sse_filter_new();
	struct filter_out o = {.refuse_after = 0};

	(void)state;
	assert_false(sse_filter_feed(f, CHUNK1, strlen(CHUNK1), filter_emit, &o));
	sse_filter_free(f);
	sse_filter_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(json_usage_is_read),
		cmocka_unit_test(embeddings_usage_has_no_completion),
		cmocka_unit_test(zero_completion_tokens_is_present),
		cmocka_unit_test(total_falls_back_to_prompt_plus_completion),
		cmocka_unit_test(empty_usage_object_is_found_with_zeros),
		cmocka_unit_test(huge_numbers_do_not_lose_usage),
		cmocka_unit_test(missing_or_bad_usage_is_not_found),
		cmocka_unit_test(non_numeric_counts_are_zero),
		cmocka_unit_test(nested_usage_is_not_the_answers),
		cmocka_unit_test(usage_inside_a_string_is_content),
		cmocka_unit_test(last_top_level_usage_wins),
		cmocka_unit_test(escaped_key_spelling_is_usage),
		cmocka_unit_test(non_object_usage_is_not_found),
		cmocka_unit_test(truncated_answer_has_no_usage),
		cmocka_unit_test(text_after_the_object_loses_usage),
		cmocka_unit_test(whitespace_everywhere_is_read),
		cmocka_unit_test(usage_after_a_huge_answer_is_found),
		cmocka_unit_test(deep_nesting_elsewhere_is_skipped),
		cmocka_unit_test(stream_usage_is_read),
		cmocka_unit_test(stream_usage_split_across_feeds),
		cmocka_unit_test(stream_usage_split_in_three_feeds),
		cmocka_unit_test(stream_fed_byte_by_byte),
		cmocka_unit_test(crlf_stream_split_at_every_offset),
		cmocka_unit_test(null_usage_does_not_erase_earlier_usage),
		cmocka_unit_test(last_usage_wins),
		cmocka_unit_test(comments_and_other_fields_are_ignored),
		cmocka_unit_test(data_without_space_is_read),
		cmocka_unit_test(usage_word_in_content_is_harmless),
		cmocka_unit_test(stream_reads_only_top_level_usage),
		cmocka_unit_test(done_alone_is_no_data),
		cmocka_unit_test(any_other_data_line_is_data),
		cmocka_unit_test(unterminated_last_line_counts),
		cmocka_unit_test(over_long_line_is_skipped_and_parsing_resumes),
		cmocka_unit_test(over_long_unterminated_line_is_not_usage),
		cmocka_unit_test(over_long_data_line_still_counts_as_data),
		cmocka_unit_test(line_just_under_the_bound_is_kept),
		cmocka_unit_test(empty_feeds_and_free_null_are_safe),
		cmocka_unit_test(filter_removes_the_usage_only_event),
		cmocka_unit_test(filter_keeps_every_other_event),
		cmocka_unit_test(filter_reads_crlf_and_data_without_space),
		cmocka_unit_test(filter_reads_escaped_keys),
		cmocka_unit_test(filter_drops_an_unterminated_last_usage_event),
		cmocka_unit_test(filter_holds_back_only_the_current_event),
		cmocka_unit_test(filter_passes_an_over_long_event_as_it_comes),
		cmocka_unit_test(filter_stops_when_the_client_is_gone),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

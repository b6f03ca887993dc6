/* json_scan_check (src/json_scan.h): jansson's verdict without its tree. Each
 * case is checked against jansson itself (json_loadb with the same flags), so
 * a table row pins agreement rather than a verdict typed by hand; the edges
 * (depth 2048, the largest double, int64) are written out. fuzz/fuzz_json
 * compares the two on arbitrary bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_scan.h"

#define BODY_FLAGS (JSON_SCAN_INT_AS_REAL | JSON_SCAN_ALLOW_NUL)
#define JBODY_FLAGS (JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)

/* Checks s[0..len) both ways with each flag set; returns our verdict with
 * the body's flags (0 valid, -1 not) after asserting jansson agrees. */
static int
agrees(const char *s, size_t len)
{
	static const struct {
		int ours;
		size_t theirs;
	} sets[] = {{BODY_FLAGS, JBODY_FLAGS}, {0, 0}};
	int first = 0;

	for (size_t k = 0; k < sizeof(sets) / sizeof(sets[0]); k++) {
		json_t *j = json_loadb(s, len, sets[k].theirs | JSON_DECODE_ANY, NULL);
		bool object = false;
		int rc = json_scan_check(s, len, sets[k].ours, NULL, NULL, &object, NULL);

		if ((rc == 0) != (j != NULL))
			fail_msg("flags %d: json_scan says %d, jansson %s: %.*s", sets[k].ours, rc,
				 j != NULL ? "valid" : "invalid", (int)(len > 80 ? 80 : len), s);
		if (j != NULL)
			assert_int_equal(object, json_is_object(j));
		json_decref(j);
		if (k == 0)
			first = rc;
	}
	return first;
}

static int
agrees_str(const char *s)
{
	return agrees(s, strlen(s));
}

static void
grammar_agrees_with_jansson(void **state)
{
	static const char *const docs[] = {
		"{}",
		"[]",
		" {\"a\" : [1, 2.5, -3e2, true, false, null, \"x\"]} ",
		"\"s\"",
		"1",
		"-0",
		"0.0e-0",
		"true",
		"null",
		"",
		" ",
		"{",
		"}",
		"[1,]",
		"{\"a\":1,}",
		"{,}",
		"[,1]",
		"{\"a\"}",
		"{\"a\":}",
		"{1:2}",
		"{'a':1}",
		"[01]",
		"[1.]",
		"[.5]",
		"[-]",
		"[+1]",
		"[1e]",
		"[1e+]",
		"[1E-5]",
		"[--1]",
		"[0x1]",
		"[Infinity]",
		"[NaN]",
		"[tru]",
		"[truex]",
		"[nul]",
		"[True]",
		"{\"a\":1}{}",
		"{} x",
		"[1 2]",
		"{\"a\":1 \"b\":2}",
		"[\"\\u00e9\\ud83d\\ude00\"]",
		"[\"\\ud800\"]",
		"[\"\\udc00\"]",
		"[\"\\ud800\\u0041\"]",
		"[\"\\ud800\\ud800\"]",
		"[\"\\ud800\\\\\"]",
		"[\"\\u12\"]",
		"[\"\\u12g4\"]",
		"[\"\\x\"]",
		"[\"\\'\"]",
		"[\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"]",
		"[\"a\\u0000b\"]",
		"{\"a\\u0000\":1}",
		"{\"a\":\"\\u0000\"}",
		"[\"\x7f\"]",
		"[\"\t\"]",
		"[\"\n\"]",
		"[\"\x1f\"]",
		"[\"\xc3\xa9\"]",
		"[\"\xc3\"]",
		"[\"\xc0\xae\"]",
		"[\"\xc1\xbf\"]",
		"[\"\xe0\x9f\xbf\"]",
		"[\"\xe0\xa0\x80\"]",
		"[\"\xed\x9f\xbf\"]",
		"[\"\xed\xa0\x80\"]",
		"[\"\xef\xbf\xbf\"]",
		"[\"\xf0\x8f\xbf\xbf\"]",
		"[\"\xf0\x90\x80\x80\"]",
		"[\"\xf4\x8f\xbf\xbf\"]",
		"[\"\xf4\x90\x80\x80\"]",
		"[\"\xf5\x80\x80\x80\"]",
		"[\"\xff\"]",
		"[\"\x80\"]",
		"\xef\xbb\xbf{}",
		"[\xc3\xa9]",
		"[1, \"\xe2\x82\xac\"]",
		"{\"model\":\"a\",\"model\":\"b\"}",
		"\r\n\t[ ]\r\n\t",
		"\f[]",
		"[\v1]",
		/* Numbers and their limits. */
		"[123456789012345678901234567890]",
		"[9223372036854775807]",
		"[9223372036854775808]",
		"[-9223372036854775808]",
		"[-9223372036854775809]",
		"[10000000000000000000]",
		"[1e308]",
		"[1e309]",
		"[-1e309]",
		"[1.7976931348623157e308]",
		"[1.7976931348623158e308]",
		"[1.7976931348623159e308]",
		"[0.1e310]",
		"[0.01e311]",
		"[1e-400]",
		"[0e999999999999999999999]",
		"[0.0000e400]",
		"[1e999999999999999999999]",
		"[1e-999999999999999999999]",
		"[100e307]",
		"[10e307]",
		"[0.00001e313]",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		(void)agrees_str(docs[i]);
}

/* 2^1024 - 2^970, the first decimal that rounds to infinity, and around it. */
static void
largest_double_edge_agrees(void **state)
{
	static const char edge[] =
		"17976931348623158079372897140530341507993413271003782693617377898044496829276475"
		"09466490179775872070963302864166928879109465555478519404026306574886715058206819"
		"08902000708383676273854845817711531764475730270069855571366959622842914819860834"
		"936475292719074168444365510704342711559699508093042880177904174497792";
	char doc[1024];

	(void)state;
	/* The edge itself, one unit less, with a fraction after it, scaled. */
	snprintf(doc, sizeof(doc), "[%s]", edge);
	assert_int_equal(agrees_str(doc), -1);
	snprintf(doc, sizeof(doc), "[%.*s1]", (int)strlen(edge) - 1, edge);
	assert_int_equal(agrees_str(doc), 0);
	snprintf(doc, sizeof(doc), "[%.*s.9999999999]", (int)strlen(edge) - 1, edge);
	(void)agrees_str(doc);
	snprintf(doc, sizeof(doc), "[%.*s.0000000001]", (int)strlen(edge), edge);
	assert_int_equal(agrees_str(doc), -1);
	snprintf(doc, sizeof(doc), "[0.%se309]", edge);
	assert_int_equal(agrees_str(doc), -1);
	snprintf(doc, sizeof(doc), "[0.000%se312]", edge);
	assert_int_equal(agrees_str(doc), -1);
	snprintf(doc, sizeof(doc), "[-%.*s7e1]", (int)strlen(edge) - 1, edge);
	(void)agrees_str(doc);
	snprintf(doc, sizeof(doc), "[%.40s]", edge);
	(void)agrees_str(doc);
	snprintf(doc, sizeof(doc), "[%.40se269]", edge);
	(void)agrees_str(doc);
	snprintf(doc, sizeof(doc), "[%.17se292]", edge);
	(void)agrees_str(doc);
	snprintf(doc, sizeof(doc), "[%.16se293]", edge);
	(void)agrees_str(doc);
}

/* n containers deep, then inner (may be ""), then closed. */
static char *
nested(size_t n, const char *open, const char *inner, const char *close, size_t *len)
{
	size_t ol = strlen(open), il = strlen(inner), cl = strlen(close);
	char *b = malloc(n * (ol + cl) + il + 1);
	size_t o = 0;

	assert_non_null(b);
	for (size_t i = 0; i < n; i++, o += ol)
		memcpy(b + o, open, ol);
	memcpy(b + o, inner, il);
	o += il;
	for (size_t i = 0; i < n; i++, o += cl)
		memcpy(b + o, close, cl);
	b[o] = '\0';
	*len = o;
	return b;
}

/* jansson counts every value, scalars too: a value inside 2048 containers is
 * one too deep; an empty container at that depth is not a value inside it. */
static void
depth_limit_is_janssons(void **state)
{
	static const struct {
		size_t n;
		const char *open, *inner, *close;
		int want;
	} cases[] = {
		{2048, "[", "", "]", 0},         {2049, "[", "", "]", -1},
		{2047, "[", "1", "]", 0},        {2048, "[", "1", "]", -1},
		{2047, "{\"a\":", "{}", "}", 0}, {2048, "{\"a\":", "{}", "}", -1},
		{2047, "{\"a\":", "1", "}", 0},  {2048, "{\"a\":", "1", "}", -1},
		{100000, "[", "", "]", -1},      {100000, "[", "", "", -1},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len;
		char *b = nested(cases[i].n, cases[i].open, cases[i].inner, cases[i].close, &len);

		assert_int_equal(agrees(b, len), cases[i].want);
		free(b);
	}
}

/* Raw control bytes, NUL among them, in and around values. jansson drops a
 * NUL that ends a number or a literal (it takes the byte it puts back for
 * the end of its buffer); json_scan_check refuses every raw NUL, as RFC 8259
 * does: the one difference, pinned here. */
static void
raw_nul_is_refused(void **state)
{
	static const struct {
		const char *s;
		size_t len;
	} docs[] = {
		{"[\"a\0b\"]", 7}, {"[1]\0", 4}, {"\0[1]", 4}, {"{\"a\0\":1}", 9}, {"[1,\0 2]", 7},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		assert_int_equal(agrees(docs[i].s, docs[i].len), -1);
	/* jansson takes it (the NUL after a number is lost in its look-ahead). */
	json_t *taken = json_loadb("[1\0]", 4, JSON_DECODE_ANY, NULL);
	assert_non_null(taken);
	json_decref(taken);
	assert_int_equal(json_scan_check("[1\0]", 4, 0, NULL, NULL, NULL, NULL), -1);
	assert_int_equal(json_scan_check("[true\0]", 7, 0, NULL, NULL, NULL, NULL), -1);
}

struct members {
	size_t n;
	char keys[8][32];
	char values[8][32];
};

static int
collect(void *ctx, const char *s, const struct json_scan_member *m)
{
	struct members *ms = ctx;

	assert_true(ms->n < 8);
	snprintf(ms->keys[ms->n], 32, "%.*s", (int)(m->key_end - m->key), s + m->key);
	snprintf(ms->values[ms->n], 32, "%.*s", (int)(m->value_end - m->value), s + m->value);
	ms->n++;
	return 0;
}

static int
stop_at_second(void *ctx, const char *s, const struct json_scan_member *m)
{
	(void)s;
	(void)m;
	return ++*(int *)ctx == 2 ? 7 : 0;
}

static void
top_level_members_are_reported_in_order(void **state)
{
	static const char doc[] =
		" { \"model\" : \"m\\u00e9\" , \"x\":{\"model\":1,\"y\":[{}]},\"mod\\u0065l\":[ ] "
		",\"n\":-1.5e3 }";
	struct members ms;
	struct json_scan_error err;
	int calls = 0;

	(void)state;
	memset(&ms, 0, sizeof(ms));
	assert_int_equal(json_scan_check(doc, strlen(doc), 0, collect, &ms, NULL, &err), 0);
	assert_int_equal(ms.n, 4);
	assert_string_equal(ms.keys[0], "model");
	assert_string_equal(ms.values[0], "\"m\\u00e9\"");
	assert_string_equal(ms.keys[1], "x");
	assert_string_equal(ms.values[1], "{\"model\":1,\"y\":[{}]}");
	assert_string_equal(ms.keys[2], "mod\\u0065l");
	assert_string_equal(ms.values[2], "[ ]");
	assert_string_equal(ms.values[3], "-1.5e3");
	/* A callback may stop the check with its own value. */
	assert_int_equal(json_scan_check(doc, strlen(doc), 0, stop_at_second, &calls, NULL, NULL),
			 7);
	/* Arrays report nothing. */
	memset(&ms, 0, sizeof(ms));
	assert_int_equal(json_scan_check("[{\"a\":1}]", 9, 0, collect, &ms, NULL, NULL), 0);
	assert_int_equal(ms.n, 0);
}

static void
strings_decode_as_jansson_decodes_them(void **state)
{
	static const char *const docs[] = {
		"\"plain\"",
		"\"\"",
		"\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"",
		"\"\\u00e9\\u20ac\\ud83d\\ude00\"",
		"\"x\\u0000y\"",
		"\"\xc3\xa9\xf0\x9f\x98\x80\"",
		"\"\\u0041\\u07ff\\u0800\\uffff\"",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		size_t len = strlen(docs[i]), n;
		json_t *j = json_loadb(docs[i], len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
		char *got;

		assert_non_null(j);
		assert_int_equal(json_scan_check(docs[i], len, BODY_FLAGS, NULL, NULL, NULL, NULL),
				 0);
		got = json_scan_string_dup(docs[i], 0, len, &n);
		assert_non_null(got);
		assert_int_equal(n, json_string_length(j));
		assert_memory_equal(got, json_string_value(j), n);
		assert_int_equal(got[n], '\0');
		free(got);
		json_decref(j);
	}
}

static void
numbers_read_as_jansson_reads_them(void **state)
{
	static const char *const docs[] = {
		"0",
		"-0",
		"12",
		"1.5",
		"-2.5e-3",
		"1e308",
		"123456789012345678901234567890",
		"4.9e-324",
		"1e-400",
		"0.1000000000000000000000000000000000000000000000000000000000000000001"};

	(void)state;
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		size_t len = strlen(docs[i]);
		json_t *j =
			json_loadb(docs[i], len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
		double d = -1;

		assert_non_null(j);
		assert_int_equal(json_scan_number(docs[i], 0, len, &d), 0);
		assert_true(d == json_real_value(j));
		json_decref(j);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(grammar_agrees_with_jansson),
		cmocka_unit_test(largest_double_edge_agrees),
		cmocka_unit_test(depth_limit_is_janssons),
		cmocka_unit_test(raw_nul_is_refused),
		cmocka_unit_test(top_level_members_are_reported_in_order),
		cmocka_unit_test(strings_decode_as_jansson_decodes_them),
		cmocka_unit_test(numbers_read_as_jansson_reads_them),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

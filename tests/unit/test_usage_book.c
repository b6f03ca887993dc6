/* Unit tests of usage_book (src/usage_book.h; doc/behaviour.md, Limits and
 * state: usage per client): the pure rules of a client's book, apart from
 * either store. Days are given as YYYYMMDD: no clock is read. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "usage_book.h"

static struct store_outcome
served(long long p, long long c)
{
	struct store_outcome o = {.success = true,
				  .served = true,
				  .has_usage = true,
				  .prompt_tokens = p,
				  .completion_tokens = c,
				  .total_tokens = p + c};
	return o;
}

static struct usage_count
model_of(const struct usage_book *b, long day, const char *model)
{
	struct usage_count none = {0, 0, 0, 0};
	size_t n;
	const struct usage_row *r = usage_book_rows(b, &n);

	for (size_t i = 0; i < n; i++)
		if (r[i].day == day && strcmp(r[i].model, model) == 0)
			return r[i].c;
	return none;
}

/* Only served answers count; tokens only with usage; no model is "-". */
static void
test_count_served_only(void **state)
{
	struct usage_book b;
	struct store_outcome o = served(3, 4);

	(void)state;
	usage_book_init(&b);
	assert_int_equal(usage_book_count(&b, 20241231, "m", &o), 1);
	o.has_usage = false;
	assert_int_equal(usage_book_count(&b, 20241231, "m", &o), 1);
	assert_int_equal(usage_book_count(&b, 20241231, NULL, &o), 1);
	o.served = false;
	assert_int_equal(usage_book_count(&b, 20241231, "m", &o), 0);
	struct usage_count c = model_of(&b, 20241231, "m");
	assert_int_equal(c.requests, 2);
	assert_int_equal(c.prompt, 3);
	assert_int_equal(c.completion, 4);
	assert_int_equal(c.total, 7);
	assert_int_equal(model_of(&b, 20241231, USAGE_BOOK_NO_MODEL).requests, 1);
	assert_int_equal(b.all.requests, 3);
	usage_book_free(&b);
}

/* Beyond USAGE_BOOK_MODELS models a day, the rest count as one "other";
 * the next day has room again. */
static void
test_models_capped_per_day(void **state)
{
	struct usage_book b;
	struct store_outcome o = served(1, 1);
	char name[32];

	(void)state;
	usage_book_init(&b);
	for (int i = 0; i < USAGE_BOOK_MODELS + 5; i++) {
		snprintf(name, sizeof(name), "model-%d", i);
		assert_int_equal(usage_book_count(&b, 20240301, name, &o), 1);
	}
	/* A model already in the day still has its own row. */
	assert_int_equal(usage_book_count(&b, 20240301, "model-0", &o), 1);
	assert_int_equal(model_of(&b, 20240301, "model-0").requests, 2);
	assert_int_equal(model_of(&b, 20240301, USAGE_BOOK_OTHER).requests, 5);
	assert_int_equal(model_of(&b, 20240301, "model-64").requests, 0);
	assert_int_equal(usage_book_day(&b, 20240301).requests, USAGE_BOOK_MODELS + 6);
	assert_int_equal(usage_book_count(&b, 20240302, "model-70", &o), 1);
	assert_int_equal(model_of(&b, 20240302, "model-70").requests, 1);
	usage_book_free(&b);
}

/* Today and the 30 days before it are kept, across months and a leap day. */
static void
test_days_kept_and_dropped(void **state)
{
	struct usage_book b;
	struct store_outcome o = served(1, 0);

	(void)state;
	assert_int_equal(usage_book_day_before(20240301, 1), 20240229);
	assert_int_equal(usage_book_day_before(20250101, 1), 20241231);
	assert_int_equal(usage_book_day_before(20240310, 30), 20240209);
	usage_book_init(&b);
	usage_book_count(&b, 20240209, "m", &o);
	usage_book_count(&b, 20240210, "m", &o);
	usage_book_prune(&b, 20240310);
	assert_int_equal(usage_book_day(&b, 20240209).requests, 1);
	usage_book_prune(&b, 20240311);
	assert_int_equal(usage_book_day(&b, 20240209).requests, 0);
	assert_int_equal(usage_book_day(&b, 20240210).requests, 1);
	assert_int_equal(b.all.requests, 2);
	usage_book_free(&b);
}

/* A book survives its bytes; bytes that are not a book are refused. */
static void
test_bytes_round_trip_and_damage(void **state)
{
	struct usage_book b, back;
	struct store_outcome o = served(5, 6);
	char long_name[300];

	(void)state;
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	usage_book_init(&b);
	usage_book_init(&back);
	usage_book_count(&b, 20240310, "gpt-4o", &o);
	usage_book_count(&b, 20240309, "claude-3", &o);
	usage_book_count(&b, 20240309, long_name, &o); /* cut to the bound */
	size_t len = usage_book_size(&b);
	char *p = malloc(len);
	assert_non_null(p);
	usage_book_put(&b, p);
	assert_int_equal(usage_book_decode(&back, p, len), 0);
	assert_int_equal(model_of(&back, 20240309, "claude-3").total, 11);
	size_t n;
	(void)usage_book_rows(&back, &n);
	assert_int_equal(n, 3);
	assert_int_equal(back.all.requests, 3);
	assert_int_equal(strlen(usage_book_rows(&back, &n)[2].model), USAGE_BOOK_MODEL_MAX - 1);
	assert_int_equal(usage_book_decode(&back, p, len - 1), -1);
	assert_int_equal(usage_book_decode(&back, p, 3), -1);
	p[0] ^= 1;
	assert_int_equal(usage_book_decode(&back, p, len), -1);
	assert_int_equal(usage_book_decode(&back, NULL, 0), 0);
	(void)usage_book_rows(&back, &n);
	assert_int_equal(n, 0);
	free(p);
	usage_book_free(&b);
	usage_book_free(&back);
}

/* The JSON: 31 days, today first and as "today", models by name. */
static void
test_json_shape(void **state)
{
	struct usage_book b;
	struct store_outcome o = served(2, 3);

	(void)state;
	usage_book_init(&b);
	usage_book_count(&b, 20240310, "gpt-4o", &o);
	usage_book_count(&b, 20240308, "gpt-4o", &o);
	json_t *j = usage_book_json("alice", &b, 20240310);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "client")), "alice");
	json_t *days = json_object_get(j, "days");
	assert_int_equal(json_array_size(days), USAGE_BOOK_DAYS);
	json_t *d0 = json_array_get(days, 0), *d2 = json_array_get(days, 2);
	assert_ptr_equal(json_object_get(j, "today"), d0);
	assert_string_equal(json_string_value(json_object_get(d0, "date")), "2024-03-10");
	assert_string_equal(json_string_value(json_object_get(d2, "date")), "2024-03-08");
	json_t *m = json_object_get(json_object_get(d2, "models"), "gpt-4o");
	assert_int_equal(json_integer_value(json_object_get(m, "total_tokens")), 5);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(days, 1), "requests")),
			 0);
	assert_int_equal(
		json_integer_value(json_object_get(json_object_get(j, "total"), "requests")), 2);
	json_decref(j);
	usage_book_free(&b);
}

/* A model name cut to its first 127 bytes is cut before a character, not
 * in one: the name is written in /v1/usage's JSON, whose encoder would
 * write a broken document for a key that is not UTF-8 (doc/behaviour.md,
 * Limits and state, rule 40). */
static void
test_model_cut_at_a_character(void **state)
{
	struct usage_book b;
	struct store_outcome o = served(1, 1);
	char model[USAGE_BOOK_MODEL_MAX + 8];
	size_t n;

	(void)state;
	/* 126 bytes of 'a', then U+00E9 (2 bytes): byte 127 is its first. */
	memset(model, 'a', USAGE_BOOK_MODEL_MAX - 2);
	memcpy(model + USAGE_BOOK_MODEL_MAX - 2, "\xc3\xa9", 3);
	usage_book_init(&b);
	assert_int_equal(usage_book_count(&b, 20240310, model, &o), 1);
	/* U+20AC (3 bytes) from byte 125: two of its bytes would fit. */
	memset(model, 'b', USAGE_BOOK_MODEL_MAX - 3);
	memcpy(model + USAGE_BOOK_MODEL_MAX - 3, "\xe2\x82\xac", 4);
	assert_int_equal(usage_book_count(&b, 20240310, model, &o), 1);
	const struct usage_row *r = usage_book_rows(&b, &n);
	assert_int_equal(n, 2);
	assert_int_equal(strlen(r[0].model), USAGE_BOOK_MODEL_MAX - 2);
	assert_int_equal(strlen(r[1].model), USAGE_BOOK_MODEL_MAX - 3);
	json_t *j = usage_book_json("alice", &b, 20240310);
	assert_non_null(j);
	char *text = json_dumps(j, 0);
	assert_non_null(text);
	json_error_t e;
	json_t *back = json_loads(text, 0, &e);
	assert_non_null(back);
	json_decref(back);
	free(text);
	json_decref(j);
	usage_book_free(&b);
}

/* A model name that is not UTF-8 (a multipart part's bytes) is counted
 * under (other): the book's JSON stays JSON. */
static void
test_model_not_utf8_counts_as_other(void **state)
{
	static const char *const bad[] = {"\xff", "m\xc3", "\xc0\xaf", "\xed\xa0\x80",
					  "\xf4\x90\x80\x80"};
	struct usage_book b;
	struct store_outcome o = served(1, 1);
	size_t n;

	(void)state;
	usage_book_init(&b);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(usage_book_count(&b, 20240310, bad[i], &o), 1);
	assert_int_equal(usage_book_count(&b, 20240310, "gpt-\xc3\xa9", &o), 1);
	const struct usage_row *r = usage_book_rows(&b, &n);
	assert_int_equal(n, 2);
	assert_string_equal(r[0].model, USAGE_BOOK_OTHER);
	assert_int_equal(r[0].c.requests, 5);
	assert_string_equal(r[1].model, "gpt-\xc3\xa9");
	json_t *j = usage_book_json("alice", &b, 20240310);
	char *text = json_dumps(j, 0);
	assert_non_null(text);
	json_error_t e;
	json_t *back = json_loads(text, 0, &e);
	assert_non_null(back);
	json_decref(back);
	free(text);
	json_decref(j);
	usage_book_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_count_served_only),
		cmocka_unit_test(test_models_capped_per_day),
		cmocka_unit_test(test_days_kept_and_dropped),
		cmocka_unit_test(test_bytes_round_trip_and_damage),
		cmocka_unit_test(test_json_shape),
		cmocka_unit_test(test_model_cut_at_a_character),
		cmocka_unit_test(test_model_not_utf8_counts_as_other),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

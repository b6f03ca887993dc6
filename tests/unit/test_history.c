/* Unit tests of the history's one-minute buckets (src/history.h) and of
 * what an attempt's outcome adds to them (limit_record, limit.h):
 * doc/behaviour.md, Limits and state, rules 32 to 36. Times are chosen by
 * the test; no clock is read. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "history.h"
#include "limit.h"

#define MIN_MS INT64_C(60000)
/* 2024-03-10 12:00:00 UTC, a minute's start. */
#define T0 INT64_C(1710072000000)
#define M0 (T0 / MIN_MS)

static int64_t
test_to_midnight(const struct tz_zone *zone, int64_t ms)
{
	(void)zone;
	return 86400000 - ms % 86400000;
}

/* One request counted at ms: requests 1 and tokens. */
static void
one(struct history *h, int64_t ms, uint32_t tokens)
{
	uint32_t add[HISTORY_FIELDS] = {0};

	add[HISTORY_REQUESTS] = 1;
	add[HISTORY_TOKENS] = tokens;
	history_add(h, ms, add);
}

/* The field f of the bucket of minute m (60 counted back from read's
 * minute), as a read at read_ms reports it; UINT32_MAX + 1 when m is not
 * one of the 60 reported. */
static uint64_t
reported(const struct history *h, int64_t read_ms, int64_t m, enum history_field f)
{
	struct history c = *h;
	int64_t start;

	history_at(&c, history_minute(read_ms));
	for (int i = 0; i < HISTORY_MINUTES; i++) {
		const uint32_t *b = history_bucket(&c, i, &start);
		if (start == m * MIN_MS)
			return b[f];
	}
	return (uint64_t)UINT32_MAX + 1;
}

/* The sum of field f over the 60 buckets a read at read_ms reports. */
static uint64_t
total(const struct history *h, int64_t read_ms, enum history_field f)
{
	struct history c = *h;
	uint64_t sum = 0;
	int64_t start;

	history_at(&c, history_minute(read_ms));
	for (int i = 0; i < HISTORY_MINUTES; i++)
		sum += history_bucket(&c, i, &start)[f];
	return sum;
}

static void
test_buckets_oldest_first(void **state)
{
	struct history h;
	int64_t start;

	(void)state;
	memset(&h, 0, sizeof(h));
	one(&h, T0 + 59999, 5);
	history_at(&h, M0);
	/* The newest last, the oldest 59 minutes before. */
	assert_int_equal(history_bucket(&h, HISTORY_MINUTES - 1, &start)[HISTORY_REQUESTS], 1);
	assert_true(start == T0);
	assert_int_equal(history_bucket(&h, 0, &start)[HISTORY_REQUESTS], 0);
	assert_true(start == T0 - 59 * MIN_MS);
}

struct roll_case {
	const char *name;
	int64_t first, second; /* the times of two requests */
	int64_t read;          /* when they are read */
	int64_t first_in;      /* the minute the first is reported in; -1 gone */
	int64_t second_in;     /* and the second */
	uint64_t in_hour;      /* requests the read reports */
};

static const struct roll_case roll_cases[] = {
	{"one minute: both in its bucket", T0, T0 + 59999, T0 + 59999, M0, M0, 2},
	{"the next minute: a bucket of its own", T0, T0 + MIN_MS, T0 + MIN_MS, M0, M0 + 1, 2},
	{"59 minutes on: the first still reported", T0, T0 + MIN_MS, T0 + 59 * MIN_MS, M0, M0 + 1,
	 2},
	{"60 minutes on: the first dropped", T0, T0 + MIN_MS, T0 + 60 * MIN_MS, -1, M0 + 1, 1},
	{"61 minutes on: both dropped", T0, T0 + MIN_MS, T0 + 61 * MIN_MS, -1, -1, 0},
	{"counted 59 minutes apart: both kept", T0, T0 + 59 * MIN_MS, T0 + 59 * MIN_MS, M0, M0 + 59,
	 2},
	{"counted 60 minutes apart: the first dropped", T0, T0 + 60 * MIN_MS, T0 + 60 * MIN_MS, -1,
	 M0 + 60, 1},
	{"counted 3 hours apart: the first dropped", T0, T0 + 180 * MIN_MS, T0 + 180 * MIN_MS, -1,
	 M0 + 180, 1},
	/* The clock set back (rule 36): ahead of now counts as now. */
	{"set back a minute: the later bucket folds into now's", T0 + MIN_MS, T0, T0, M0, M0, 2},
	{"set back 59 minutes: folded too", T0 + 59 * MIN_MS, T0, T0, M0, M0, 2},
	{"set back 60 minutes: the hour ahead dropped", T0 + 60 * MIN_MS, T0, T0, -1, M0, 1},
	{"read set back: reported in the read's minute", T0, T0 + 5 * MIN_MS, T0 + MIN_MS, M0,
	 M0 + 1, 2},
	{"read set back an hour: nothing reported", T0, T0 + MIN_MS, T0 - 59 * MIN_MS, -1, -1, 0},
};

static void
test_roll_and_drop(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(roll_cases) / sizeof(roll_cases[0]); i++) {
		const struct roll_case *c = &roll_cases[i];
		struct history h;
		memset(&h, 0, sizeof(h));
		one(&h, c->first, 1);
		one(&h, c->second, 1);
		uint64_t in_first = c->first_in < 0 ? 0 : (c->first_in == c->second_in ? 2 : 1);
		uint64_t in_second = c->second_in < 0 ? 0 : (c->first_in == c->second_in ? 2 : 1);
		if (c->first_in >= 0 &&
		    reported(&h, c->read, c->first_in, HISTORY_REQUESTS) != in_first)
			fail_msg("%s: %llu in minute %lld", c->name,
				 (unsigned long long)reported(&h, c->read, c->first_in,
							      HISTORY_REQUESTS),
				 (long long)c->first_in);
		if (c->second_in >= 0 &&
		    reported(&h, c->read, c->second_in, HISTORY_REQUESTS) != in_second)
			fail_msg("%s: second not in minute %lld", c->name, (long long)c->second_in);
		if (total(&h, c->read, HISTORY_REQUESTS) != c->in_hour)
			fail_msg("%s: %llu in the hour, not %llu", c->name,
				 (unsigned long long)total(&h, c->read, HISTORY_REQUESTS),
				 (unsigned long long)c->in_hour);
	}
}

static void
test_saturates(void **state)
{
	struct history h, sum;

	(void)state;
	memset(&h, 0, sizeof(h));
	one(&h, T0, UINT32_MAX - 1);
	one(&h, T0, 5);
	assert_true(reported(&h, T0, M0, HISTORY_TOKENS) == UINT32_MAX);
	assert_true(history_add32(UINT32_MAX - 2, 2) == UINT32_MAX);
	assert_true(history_add32(UINT32_MAX - 2, 1) == UINT32_MAX - 1);
	assert_true(history_add32(7, UINT64_MAX) == UINT32_MAX);
	/* A sum of rows saturates as well. */
	sum = h;
	history_sum(&sum, &h);
	assert_true(reported(&sum, T0, M0, HISTORY_TOKENS) == UINT32_MAX);
	assert_true(reported(&sum, T0, M0, HISTORY_REQUESTS) == 4);
	/* A fold of set-back buckets, too. */
	one(&h, T0 + MIN_MS, UINT32_MAX);
	history_at(&h, M0);
	assert_true(reported(&h, T0, M0, HISTORY_TOKENS) == UINT32_MAX);
	assert_true(reported(&h, T0, M0, HISTORY_REQUESTS) == 3);
}

static void
test_sum_of_keys(void **state)
{
	struct history a, b, empty;

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&empty, 0, sizeof(empty));
	one(&a, T0, 10);
	one(&b, T0 + MIN_MS, 20);
	history_at(&a, M0 + 1);
	history_at(&b, M0 + 1);
	history_sum(&empty, &a);
	history_sum(&empty, &b);
	assert_true(reported(&empty, T0 + MIN_MS, M0, HISTORY_TOKENS) == 10);
	assert_true(reported(&empty, T0 + MIN_MS, M0 + 1, HISTORY_TOKENS) == 20);
}

/* --- What an outcome adds (limit_record, rules 32 and 33) --- */

struct outcome_case {
	const char *name;
	struct store_outcome o;
	uint32_t want[HISTORY_FIELDS];
};

static const struct outcome_case outcome_cases[] = {
	{"a 200 with usage",
	 {.success = true,
	  .served = true,
	  .has_usage = true,
	  .total_tokens = 30,
	  .code_class = STORE_CLASS_2XX,
	  .latency_ms = 120},
	 {[HISTORY_REQUESTS] = 1,
	  [HISTORY_SUCCESSES] = 1,
	  [HISTORY_TOKENS] = 30,
	  [HISTORY_LATENCY_MS] = 120}},
	{"a 500",
	 {.success = false,
	  .charge = STORE_CHARGE_RUN,
	  .code_class = STORE_CLASS_5XX,
	  .latency_ms = 40},
	 {[HISTORY_REQUESTS] = 1, [HISTORY_FAILURES] = 1, [HISTORY_LATENCY_MS] = 40}},
	{"a 400 the client caused, passed on (no failure of the endpoint's)",
	 {.success = true,
	  .charge = STORE_CHARGE_NONE,
	  .code_class = STORE_CLASS_4XX,
	  .latency_ms = 9},
	 {[HISTORY_REQUESTS] = 1, [HISTORY_FAILURES] = 1, [HISTORY_LATENCY_MS] = 9}},
	{"no answer at all",
	 {.success = false,
	  .charge = STORE_CHARGE_RUN,
	  .code_class = STORE_CLASS_NONE,
	  .latency_ms = -1},
	 {[HISTORY_REQUESTS] = 1, [HISTORY_FAILURES] = 1}},
	{"an upstream 429",
	 {.success = false,
	  .charge = STORE_CHARGE_LIMITED,
	  .until_ms = T0 + 5000,
	  .code_class = STORE_CLASS_4XX,
	  .latency_ms = 7},
	 {[HISTORY_REQUESTS] = 1, [HISTORY_LIMITED] = 1, [HISTORY_LATENCY_MS] = 7}},
	{"an upstream 429 of a spent daily quota",
	 {.success = false,
	  .charge = STORE_CHARGE_EXHAUSTED,
	  .code_class = STORE_CLASS_4XX,
	  .latency_ms = 0},
	 {[HISTORY_REQUESTS] = 1, [HISTORY_LIMITED] = 1}},
	{"no attempt: a charge settled later",
	 {.charge = STORE_CHARGE_REJECTED, .code_class = STORE_CLASS_N, .latency_ms = -1},
	 {0}},
	{"no attempt: a model's or client's entry",
	 {.success = true,
	  .served = true,
	  .has_usage = true,
	  .total_tokens = 9,
	  .code_class = STORE_CLASS_N,
	  .latency_ms = -1},
	 {0}},
};

static void
test_outcomes(void **state)
{
	const struct store_cooldown cd = {3, 60, 0};
	struct limit_now now = {T0 + 1000, 19792, test_to_midnight, NULL};

	(void)state;
	for (size_t i = 0; i < sizeof(outcome_cases) / sizeof(outcome_cases[0]); i++) {
		const struct outcome_case *c = &outcome_cases[i];
		struct limit_state s;
		memset(&s, 0, sizeof(s));
		limit_record(&s, &c->o, &cd, &now);
		for (int f = 0; f < HISTORY_FIELDS; f++)
			if (reported(&s.hist, T0, M0, (enum history_field)f) != c->want[f])
				fail_msg("%s: %s is %llu, not %u", c->name, history_field_names[f],
					 (unsigned long long)reported(&s.hist, T0, M0,
								      (enum history_field)f),
					 c->want[f]);
	}
}

static void
test_refusals(void **state)
{
	struct limit_state s;

	(void)state;
	memset(&s, 0, sizeof(s));
	limit_record_refusals(&s, 3, T0);
	limit_record_refusals(&s, 0, T0 + MIN_MS);
	limit_record_refusals(&s, 2, T0 + MIN_MS);
	assert_true(reported(&s.hist, T0 + MIN_MS, M0, HISTORY_REFUSED) == 3);
	assert_true(reported(&s.hist, T0 + MIN_MS, M0 + 1, HISTORY_REFUSED) == 2);
	assert_true(total(&s.hist, T0 + MIN_MS, HISTORY_REQUESTS) == 0);
}

/* A read reports the history at the read's minute and sums keys. */
static void
test_usage(void **state)
{
	const struct store_cooldown cd = {3, 60, 0};
	const struct store_endpoint ep = {.id = "a", .rpm = -1, .rpd = -1, .tpm = -1, .tpd = -1};
	struct limit_now then = {T0, 19792, test_to_midnight, NULL};
	struct limit_now later = {T0 + 2 * MIN_MS, 19792, test_to_midnight, NULL};
	const struct store_outcome ok = {
		.success = true, .code_class = STORE_CLASS_2XX, .latency_ms = 10};
	struct limit_state a, b;
	struct store_usage ua, ub, sum;
	int64_t start;

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	limit_record(&a, &ok, &cd, &then);
	limit_record(&b, &ok, &cd, &later);
	limit_usage(&a, &ep, &later, &ua);
	limit_usage(&b, &ep, &later, &ub);
	limit_usage_add(&sum, &ua, true);
	limit_usage_add(&sum, &ub, false);
	assert_true(sum.history.newest == M0 + 2);
	assert_int_equal(history_bucket(&sum.history, 57, &start)[HISTORY_SUCCESSES], 1);
	assert_true(start == T0);
	assert_int_equal(history_bucket(&sum.history, 59, &start)[HISTORY_SUCCESSES], 1);
	assert_int_equal(history_bucket(&sum.history, 58, &start)[HISTORY_REQUESTS], 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets_oldest_first),
		cmocka_unit_test(test_roll_and_drop),
		cmocka_unit_test(test_saturates),
		cmocka_unit_test(test_sum_of_keys),
		cmocka_unit_test(test_outcomes),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_usage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

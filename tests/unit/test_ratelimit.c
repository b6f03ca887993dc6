/* Unit tests of ratelimit.c: whom an upstream answer is charged to, and
 * until when a 429 cools its key (doc/behaviour.md, Key pools). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

/* Sun, 06 Nov 1994 08:49:37 GMT */
#define NOW_MS (INT64_C(784111777) * 1000)

struct charge_case {
	const char *name;
	long status;
	bool failure;
	const char *head;
	const char *body;
	enum store_charge charge;
	int64_t until; /* ms after NOW_MS, with STORE_CHARGE_LIMITED */
};

static const struct charge_case charge_cases[] = {
	{"a 2xx is the endpoint's success", 200, false, "", "{}", STORE_CHARGE_RUN, 0},
	{"no answer is the endpoint's", 0, true, NULL, NULL, STORE_CHARGE_RUN, 0},
	{"a 5xx is the endpoint's", 503, true, "", "", STORE_CHARGE_RUN, 0},
	{"an empty 200 is the endpoint's", 200, true, "", "", STORE_CHARGE_RUN, 0},
	{"408 stays the endpoint's", 408, true, "", "", STORE_CHARGE_RUN, 0},
	{"409 stays the endpoint's", 409, true, "", "", STORE_CHARGE_RUN, 0},
	{"401 rejects the key", 401, true, "", "", STORE_CHARGE_REJECTED, 0},
	{"403 is the key's run", 403, true, "", "", STORE_CHARGE_FORBIDDEN, 0},
	{"400 is nobody's", 400, false, "", "", STORE_CHARGE_NONE, 0},
	{"404 is nobody's", 404, false, "", "", STORE_CHARGE_NONE, 0},
	{"413 is nobody's", 413, false, "", "", STORE_CHARGE_NONE, 0},
	{"422 is nobody's", 422, false, "", "", STORE_CHARGE_NONE, 0},
	{"429 with Retry-After seconds", 429, true, "Content-Type: x\r\nRetry-After: 7\r\n", "",
	 STORE_CHARGE_LIMITED, 7000},
	{"429 with Retry-After in any case, spaces", 429, true, "retry-after:   2  \r\n", "",
	 STORE_CHARGE_LIMITED, 2000},
	{"429 with Retry-After as an HTTP date", 429, true,
	 "Retry-After: Sun, 06 Nov 1994 08:50:07 GMT\r\n", "", STORE_CHARGE_LIMITED, 30000},
	{"429 with a date gone by: now", 429, true,
	 "Retry-After: Sun, 06 Nov 1994 08:00:00 GMT\r\n", "", STORE_CHARGE_LIMITED, 0},
	{"429 with retry-after-ms", 429, true, "retry-after-ms: 1500\r\n", "", STORE_CHARGE_LIMITED,
	 1500},
	{"Retry-After wins over retry-after-ms", 429, true,
	 "retry-after-ms: 1500\r\nRetry-After: 3\r\n", "", STORE_CHARGE_LIMITED, 3000},
	{"429 with Google's retryDelay", 429, true, "",
	 "{\"error\":{\"code\":429,\"details\":[{\"@type\":\"type.googleapis.com/"
	 "google.rpc.RetryInfo\",\"retryDelay\": \"17s\"}]}}",
	 STORE_CHARGE_LIMITED, 17000},
	{"retryDelay with a fraction", 429, true, "", "{\"retryDelay\":\"1.25s\"}",
	 STORE_CHARGE_LIMITED, 1250},
	{"a header wins over the body", 429, true, "Retry-After: 4\r\n", "{\"retryDelay\":\"17s\"}",
	 STORE_CHARGE_LIMITED, 4000},
	{"429 saying nothing: the default", 429, true, "", "{\"error\":{}}", STORE_CHARGE_LIMITED,
	 60000},
	{"an unreadable Retry-After: the default", 429, true, "Retry-After: soon\r\n", "",
	 STORE_CHARGE_LIMITED, 60000},
	{"a wait beyond a day is a day", 429, true, "Retry-After: 999999999\r\n", "",
	 STORE_CHARGE_LIMITED, 86400000},
	{"Google's per-day quota", 429, true, "Retry-After: 5\r\n",
	 "{\"error\":{\"details\":[{\"violations\":[{\"quotaId\": "
	 "\"GenerateRequestsPerDayPerProjectPerModel-FreeTier\"}]}]}}",
	 STORE_CHARGE_EXHAUSTED, 0},
	{"Google's per-minute quota is no day's", 429, true, "",
	 "{\"violations\":[{\"quotaId\":\"GenerateRequestsPerMinutePerProject\"}],"
	 "\"retryDelay\":\"9s\"}",
	 STORE_CHARGE_LIMITED, 9000},
	{"OpenAI's insufficient_quota", 429, true, "",
	 "{\"error\":{\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}",
	 STORE_CHARGE_EXHAUSTED, 0},
};

static void
charge_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(charge_cases) / sizeof(charge_cases[0]); i++) {
		const struct charge_case *c = &charge_cases[i];
		struct ratelimit_answer a = {c->status, c->failure,
					     c->head,   c->head != NULL ? strlen(c->head) : 0,
					     c->body,   c->body != NULL ? strlen(c->body) : 0};
		int64_t until = -1;
		enum store_charge got = ratelimit_charge(&a, NOW_MS, 60, &until);
		if (got != c->charge || (got == STORE_CHARGE_LIMITED && until != NOW_MS + c->until))
			fail_msg("%s: charge %d until %+lld; want %d %+lld", c->name, (int)got,
				 (long long)(until - NOW_MS), (int)c->charge, (long long)c->until);
	}
}

/* A body not ending in NUL is read within its length only. */
static void
body_is_read_within_its_length(void **state)
{
	static const char body[] = "{\"retryDelay\":\"17s\"}{\"quotaId\":\"PerDay\"}";

	(void)state;
	assert_false(ratelimit_daily(body, 21));
	assert_true(ratelimit_daily(body, sizeof(body) - 1));
	assert_false(ratelimit_daily("{\"retryDelay\":\"1", 16));
	struct ratelimit_answer a = {429, true, NULL, 0, body, 18};
	assert_int_equal(ratelimit_wait_ms(&a, NOW_MS), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(charge_table),
		cmocka_unit_test(body_is_read_within_its_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

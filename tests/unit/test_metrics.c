/* Unit tests of the metrics text (src/metrics.h): the Prometheus text
 * format 0.0.4 as metrics_render writes it from store counts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define NOW INT64_C(1710039600000)

static char *
render(const struct store_endpoint *eps, const struct store_usage *u, size_t n,
       const long long *rejects)
{
	size_t len = 0;
	char *text = metrics_render(eps, u, n, rejects, NOW, &len);

	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

/* Asserts that text holds line as one whole line. */
static void
expect_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
	}
	print_error("missing line: %s\n", line);
	fail();
}

static void
expect_no_substring(const char *text, const char *s)
{
	if (strstr(text, s) != NULL) {
		print_error("unexpected: %s\n", s);
		fail();
	}
}

/* Every family has HELP and TYPE before its samples; every line ends with
 * a line feed; counters carry their counts. */
static void
test_render_families_and_counts(void **state)
{
	const struct store_endpoint eps[] = {{"a", 10, 100, 0, 1000, 50000, 0, NULL, NULL},
					     {"b", -1, -1, 0, -1, -1, 0, NULL, NULL}};
	struct store_usage u[2];
	const long long rejects[STORE_REJECT_N] = {3, 4, 5, 6};

	(void)state;
	memset(u, 0, sizeof(u));
	u[0].attempts = 7;
	u[0].retries = 2;
	u[0].answers[STORE_CLASS_2XX] = 4;
	u[0].answers[STORE_CLASS_5XX] = 2;
	u[0].answers[STORE_CLASS_NONE] = 1;
	u[0].prompt_tokens = 11;
	u[0].completion_tokens = 22;
	u[0].total_tokens = 33;
	u[0].rpm_used = 3;
	u[0].rpd_used = 9;
	u[0].tpm_used = 700;
	u[0].tpd_used = 4000;
	u[0].estimated_answers = 5;
	u[0].fail_run = 1;
	u[0].cooldown_until = NOW + 5500;
	u[0].latency.bucket[0] = 1;
	u[0].latency.bucket[3] = 2;
	u[0].latency.count = 4; /* one beyond 300 s */
	u[0].latency.sum_ms = 301234;
	char *t = render(eps, u, 2, rejects);

	expect_line(t, "# HELP api_together_requests_total Attempts that ended, by endpoint and "
		       "the class of the upstream's answer (none: no HTTP answer).");
	expect_line(t, "# TYPE api_together_requests_total counter");
	expect_line(t, "api_together_requests_total{endpoint=\"a\",code_class=\"2xx\"} 4");
	expect_line(t, "api_together_requests_total{endpoint=\"a\",code_class=\"5xx\"} 2");
	expect_line(t, "api_together_requests_total{endpoint=\"a\",code_class=\"none\"} 1");
	expect_line(t, "api_together_requests_total{endpoint=\"b\",code_class=\"4xx\"} 0");
	expect_no_substring(t, "1xx");
	expect_line(t, "api_together_attempts_total{endpoint=\"a\"} 7");
	expect_line(t, "api_together_retries_total{endpoint=\"a\"} 2");
	expect_line(t, "api_together_rejections_total{reason=\"auth\"} 3");
	expect_line(t, "api_together_rejections_total{reason=\"bad_input\"} 4");
	expect_line(t, "api_together_rejections_total{reason=\"rate_limit\"} 5");
	expect_line(t, "api_together_rejections_total{reason=\"cooldown\"} 6");
	expect_line(t, "api_together_tokens_total{endpoint=\"a\",kind=\"prompt\"} 11");
	expect_line(t, "api_together_tokens_total{endpoint=\"a\",kind=\"completion\"} 22");
	expect_line(t, "api_together_tokens_total{endpoint=\"a\",kind=\"total\"} 33");
	/* Buckets are cumulative; +Inf is the count. */
	expect_line(t, "# TYPE api_together_upstream_latency_seconds histogram");
	expect_line(t,
		    "api_together_upstream_latency_seconds_bucket{endpoint=\"a\",le=\"0.050\"} 1");
	expect_line(t,
		    "api_together_upstream_latency_seconds_bucket{endpoint=\"a\",le=\"0.250\"} 1");
	expect_line(t,
		    "api_together_upstream_latency_seconds_bucket{endpoint=\"a\",le=\"0.500\"} 3");
	expect_line(t,
		    "api_together_upstream_latency_seconds_bucket{endpoint=\"a\",le=\"300.000\"} "
		    "3");
	expect_line(t,
		    "api_together_upstream_latency_seconds_bucket{endpoint=\"a\",le=\"+Inf\"} 4");
	expect_line(t, "api_together_upstream_latency_seconds_sum{endpoint=\"a\"} 301.234");
	expect_line(t, "api_together_upstream_latency_seconds_count{endpoint=\"a\"} 4");
	expect_line(t, "api_together_stream_ttfb_seconds_count{endpoint=\"b\"} 0");
	expect_line(t, "api_together_stream_ttfb_seconds_sum{endpoint=\"b\"} 0.000");
	expect_line(t, "api_together_cooldown_active{endpoint=\"a\"} 1");
	expect_line(t, "api_together_cooldown_active{endpoint=\"b\"} 0");
	expect_line(t, "api_together_cooldown_until_seconds{endpoint=\"a\"} 1710039605.500");
	expect_line(t, "api_together_cooldown_until_seconds{endpoint=\"b\"} 0.000");
	expect_line(t, "api_together_failure_run{endpoint=\"a\"} 1");
	expect_line(t, "api_together_rpm_used{endpoint=\"a\"} 3");
	expect_line(t, "api_together_rpm_limit{endpoint=\"a\"} 10");
	expect_line(t, "api_together_rpd_used{endpoint=\"a\"} 9");
	expect_line(t, "api_together_rpd_limit{endpoint=\"a\"} 100");
	expect_line(t, "# HELP api_together_tpm_used Tokens in the last 60 s, estimates of "
		       "attempts in flight included.");
	expect_line(t, "# TYPE api_together_tpm_limit gauge");
	expect_line(t, "api_together_tpm_used{endpoint=\"a\"} 700");
	expect_line(t, "api_together_tpm_limit{endpoint=\"a\"} 1000");
	expect_line(t, "api_together_tpd_used{endpoint=\"a\"} 4000");
	expect_line(t, "api_together_tpd_limit{endpoint=\"a\"} 50000");
	expect_line(t, "api_together_tpd_used{endpoint=\"b\"} 0");
	/* Answers counted from their estimate (issue 14 point 5). */
	expect_line(t, "# TYPE api_together_estimated_answers_total counter");
	expect_line(t, "api_together_estimated_answers_total{endpoint=\"a\"} 5");
	expect_line(t, "api_together_estimated_answers_total{endpoint=\"b\"} 0");
	/* Unlimited: no limit series at all. */
	expect_no_substring(t, "api_together_rpm_limit{endpoint=\"b\"}");
	expect_no_substring(t, "api_together_rpd_limit{endpoint=\"b\"}");
	expect_no_substring(t, "api_together_tpm_limit{endpoint=\"b\"}");
	expect_no_substring(t, "api_together_tpd_limit{endpoint=\"b\"}");
	assert_int_equal(t[strlen(t) - 1], '\n');
	free(t);
}

/* A label value escapes backslash, double quote and line feed, and
 * nothing else (UTF-8 passes as it is). */
static void
test_render_escapes_label_values(void **state)
{
	const struct store_endpoint eps[] = {{"a\\b\"c\nd é", -1, -1, 0, -1, -1, 0, NULL, NULL}};
	struct store_usage u;
	const long long rejects[STORE_REJECT_N] = {0};

	(void)state;
	memset(&u, 0, sizeof(u));
	u.attempts = 1;
	char *t = render(eps, &u, 1, rejects);
	expect_line(t, "api_together_attempts_total{endpoint=\"a\\\\b\\\"c\\nd é\"} 1");
	free(t);
}

/* No endpoint: the families are still there, and the refusals. */
static void
test_render_without_endpoints(void **state)
{
	const long long rejects[STORE_REJECT_N] = {1, 0, 0, 0};

	(void)state;
	char *t = render(NULL, NULL, 0, rejects);
	expect_line(t, "# TYPE api_together_attempts_total counter");
	expect_line(t, "api_together_rejections_total{reason=\"auth\"} 1");
	expect_no_substring(t, "endpoint=");
	free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_families_and_counts),
		cmocka_unit_test(test_render_escapes_label_values),
		cmocka_unit_test(test_render_without_endpoints),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

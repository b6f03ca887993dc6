#include "clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef API_TOGETHER_TEST_CLOCK
/* Test builds only: the time a test gives, read from a file so a test can
 * move every process's time without restarting them. "SECONDS" is added to
 * the real clock; "@SECONDS" (since the epoch) is the time itself, standing
 * still between the test's moves, so no verdict depends on how long the
 * machine took. A file named but unreadable is the test's error, never a
 * silent fall back to the real clock. */
static int64_t
clock_test_ms(int64_t real_ms)
{
	const char *path = getenv("API_TOGETHER_TEST_CLOCK_FILE");
	char buf[64];
	size_t n;
	FILE *f;

	if (path == NULL)
		return real_ms;
	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "api-together: test clock %s unreadable\n", path);
		abort();
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (buf[0] == '@')
		return (int64_t)(strtod(buf + 1, NULL) * 1000.0);
	return real_ms + (int64_t)(strtod(buf, NULL) * 1000.0);
}
#endif

int64_t
clock_now_ms(void)
{
	struct timespec ts;
	int64_t ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#ifdef API_TOGETHER_TEST_CLOCK
	ms = clock_test_ms(ms);
#endif
	return ms;
}

long
clock_local_day(int64_t t_ms)
{
	time_t t = (time_t)(t_ms / 1000);
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL)
		return 0;
	return (long)(tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
}

int64_t
clock_ms_to_midnight(int64_t t_ms)
{
	time_t t = (time_t)(t_ms / 1000);
	struct tm tm;
	time_t next;

	if (localtime_r(&t, &tm) == NULL)
		return 86400000;
	tm.tm_mday += 1;
	tm.tm_hour = 0;
	tm.tm_min = 0;
	tm.tm_sec = 0;
	tm.tm_isdst = -1;
	next = mktime(&tm);
	if (next == (time_t)-1 || (int64_t)next * 1000 <= t_ms)
		return 86400000;
	return (int64_t)next * 1000 - t_ms;
}

void
clock_iso8601(int64_t t_ms, char *buf, size_t len)
{
	/* The second's part, kept per thread: every log line takes one, and
	 * gmtime_r and strftime were a sixth of what a line cost. */
	static _Thread_local int64_t clock_second_s = -1;
	static _Thread_local char clock_second[32];
	static _Thread_local size_t clock_second_len;
	time_t t = (time_t)(t_ms / 1000);
	int ms = (int)(t_ms % 1000);
	char out[40];

	if (t_ms < 0 || (int64_t)t != clock_second_s) {
		struct tm tm;
		clock_second_s = -1;
		clock_second_len = 0;
		if (gmtime_r(&t, &tm) != NULL)
			clock_second_len = strftime(clock_second, sizeof(clock_second),
						    "%Y-%m-%dT%H:%M:%S", &tm);
		if (clock_second_len == 0) {
			snprintf(buf, len, "1970-01-01T00:00:00.000Z");
			return;
		}
		if (t_ms < 0) {
			snprintf(buf, len, "%s.%03dZ", clock_second, ms);
			return;
		}
		clock_second_s = (int64_t)t;
	}
	memcpy(out, clock_second, clock_second_len);
	out[clock_second_len] = '.';
	out[clock_second_len + 1] = (char)('0' + ms / 100);
	out[clock_second_len + 2] = (char)('0' + ms / 10 % 10);
	out[clock_second_len + 3] = (char)('0' + ms % 10);
	out[clock_second_len + 4] = 'Z';
	size_t n = clock_second_len + 5;
	if (len == 0)
		return;
	if (n >= len)
		n = len - 1;
	memcpy(buf, out, n);
	buf[n] = '\0';
}

int64_t
clock_mono_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* clock: the time every limit is counted in.
 *
 * The test-clock build (tests/api-together-testclock) takes the time from
 * the file named by API_TOGETHER_TEST_CLOCK_FILE (re-read on each call):
 * "SECONDS" is added to the real clock, "@SECONDS" since the epoch is the
 * time itself, standing still until the test writes another, so
 * integration tests move time without sleeping. Release builds ignore that
 * variable. */
#ifndef API_TOGETHER_CLOCK_H
#define API_TOGETHER_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds since the epoch, with the test offset in test builds. */
int64_t clock_now_ms(void);

/* Milliseconds of the monotonic clock, for waits and timeouts (never the
 * test clock: a wait is real time in every build). */
int64_t clock_mono_ms(void);

/* Local calendar day of t_ms as YYYYMMDD (TZ honoured). */
long clock_local_day(int64_t t_ms);

/* Milliseconds from t_ms to the next local midnight. */
int64_t clock_ms_to_midnight(int64_t t_ms);

/* t_ms as ISO-8601 UTC with milliseconds into buf ("2024-01-01T12:00:00.000Z"). */
void clock_iso8601(int64_t t_ms, char *buf, size_t len);

#endif

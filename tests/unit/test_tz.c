/* Unit tests of the TZif reader (src/tz.h) against the system's zone
 * files (Debian's tzdata): known transitions of America/Los_Angeles, in
 * the file's own table and past it (its footer's rule), and the days and
 * midnights that follow from them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tz.h"

#define H_MS INT64_C(3600000)

/* The UTC time, seconds, of y-m-d h:00:00. */
static int64_t
utc(int y, int m, int d, int h)
{
	struct tm tm = {0};

	tm.tm_year = y - 1900;
	tm.tm_mon = m - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	return (int64_t)timegm(&tm);
}

static struct tz_zone *
la(void)
{
	char err[512];
	struct tz_zone *z = tz_load("America/Los_Angeles", err, sizeof(err));

	if (z == NULL)
		fail_msg("%s", err);
	return z;
}

/* Each row: a moment and the offset in force then. */
static void
test_offsets(void **state)
{
	static const struct {
		const char *name;
		int y, m, d, h, min;
		long off;
	} rows[] = {
		/* 2007's rule: second Sunday of March 02:00 PST = 10:00 UTC. */
		{"2010 before spring", 2010, 3, 14, 9, 59, -8 * 3600},
		{"2010 after spring", 2010, 3, 14, 10, 0, -7 * 3600},
		/* 2027: 14 March 10:00 UTC, 7 November 09:00 UTC. */
		{"2027 before spring", 2027, 3, 14, 9, 59, -8 * 3600},
		{"2027 after spring", 2027, 3, 14, 10, 0, -7 * 3600},
		{"2027 summer", 2027, 7, 1, 0, 0, -7 * 3600},
		{"2027 before autumn", 2027, 11, 7, 8, 59, -7 * 3600},
		{"2027 after autumn", 2027, 11, 7, 9, 0, -8 * 3600},
		/* Past any table a fat file holds: the footer's rule. */
		{"2100 summer", 2100, 7, 1, 0, 0, -7 * 3600},
		{"2100 winter", 2100, 1, 1, 0, 0, -8 * 3600},
		/* Before standard time: local mean time, -7:52:58. */
		{"1880", 1880, 1, 1, 0, 0, -(7 * 3600 + 52 * 60 + 58)},
	};
	struct tz_zone *z = la();

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		int64_t t = utc(rows[i].y, rows[i].m, rows[i].d, rows[i].h) + rows[i].min * 60;
		if (tz_offset_s(z, t) != rows[i].off)
			fail_msg("%s: offset %ld, expected %ld", rows[i].name, tz_offset_s(z, t),
				 rows[i].off);
	}
	tz_free(z);
}

/* Days and midnights: 08:00 UTC in winter, 07:00 UTC in summer, and the
 * days of the switches, 23 and 25 hours long. */
static void
test_days(void **state)
{
	struct tz_zone *z = la();
	int64_t t;

	(void)state;
	t = utc(2027, 1, 15, 7) * 1000 + 59 * 60000;
	assert_int_equal(tz_day(z, t), 20270114);
	assert_int_equal(tz_ms_to_midnight(z, t), 60000);
	assert_int_equal(tz_day(z, t + 60000), 20270115);
	assert_int_equal(tz_ms_to_midnight(z, t + 60000), 24 * H_MS);
	t = utc(2027, 7, 15, 7) * 1000;
	assert_int_equal(tz_day(z, t - 1), 20270714);
	assert_int_equal(tz_day(z, t), 20270715);
	assert_int_equal(tz_ms_to_midnight(z, t - 1), 1);
	assert_int_equal(tz_ms_to_midnight(z, t), 24 * H_MS);
	/* 14 March 2027 is 23 hours long, 7 November 25. */
	t = utc(2027, 3, 14, 8) * 1000;
	assert_int_equal(tz_day(z, t), 20270314);
	assert_int_equal(tz_ms_to_midnight(z, t), 23 * H_MS);
	t = utc(2027, 11, 7, 7) * 1000;
	assert_int_equal(tz_day(z, t), 20271107);
	assert_int_equal(tz_ms_to_midnight(z, t), 25 * H_MS);
	tz_free(z);
}

static void
test_utc_and_unknown(void **state)
{
	char err[512];
	struct tz_zone *z = tz_load("UTC", err, sizeof(err));
	int64_t t = utc(2027, 7, 15, 23) * 1000;

	(void)state;
	assert_non_null(z);
	assert_int_equal(tz_day(z, t), 20270715);
	assert_int_equal(tz_ms_to_midnight(z, t), H_MS);
	tz_free(z);
	assert_null(tz_load("Nowhere/Atlantis", err, sizeof(err)));
	assert_non_null(strstr(err, "Nowhere/Atlantis"));
	assert_null(tz_load("../../etc/passwd", err, sizeof(err)));
	assert_null(tz_load("/etc/localtime", err, sizeof(err)));
}

/* What is not a zone file is refused, never misread. */
static void
test_malformed(void **state)
{
	static const unsigned char junk[] = "TZif2 not really a zone file at all, only text here.";
	char err[128];
	unsigned char *cut;
	FILE *f = fopen("/usr/share/zoneinfo/America/Los_Angeles", "rb");
	size_t n;

	(void)state;
	assert_null(tz_parse(junk, sizeof(junk) - 1, err, sizeof(err)));
	assert_non_null(f);
	cut = malloc(4096);
	assert_non_null(cut);
	n = fread(cut, 1, 4096, f);
	fclose(f);
	assert_true(n > 100);
	for (size_t len = 0; len < n - 1; len += 7)
		assert_null(tz_parse(cut, len, err, sizeof(err)));
	free(cut);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_offsets),
		cmocka_unit_test(test_days),
		cmocka_unit_test(test_utc_and_unknown),
		cmocka_unit_test(test_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "tz.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"

/* A zone file is a few kilobytes; anything far larger is not one. */
#define TZ_FILE_MAX (1024 * 1024)
#define TZ_DAY_S 86400

/* A daylight-saving switch of a footer rule "Mm.w.d/time": the d-th
 * weekday (0 Sunday) of week w (5: the last) of month m, at time seconds
 * of local time then in force. */
struct tz_rule {
	int month, week, wday;
	long time_s;
};

struct tz_zone {
	size_t n;      /* transitions */
	int64_t *at;   /* their times, ascending (seconds since the epoch) */
	long *off;     /* the offset in force from each */
	long off_none; /* before the first (or the only one without any) */
	/* Past the last transition: the footer's rule, when it has one. */
	bool has_rule;
	bool has_dst;
	long std_off, dst_off;
	struct tz_rule start, end;
};

void
tz_free(struct tz_zone *z)
{
	if (z == NULL)
		return;
	free(z->at);
	free(z->off);
	free(z);
}

static uint32_t
tz_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t
tz_be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)tz_be32(p) << 32 | tz_be32(p + 4));
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t
tz_days_from_civil(int64_t y, int m, int d)
{
	int64_t era;
	int64_t yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void
tz_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int64_t
tz_floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* "Mm.w.d" of year y as seconds since the epoch in local time. */
static int64_t
tz_rule_local(const struct tz_rule *r, int64_t y)
{
	int64_t first = tz_days_from_civil(y, r->month, 1);
	/* 1970-01-01 was a Thursday (4). */
	int wd_first = (int)(((first % 7) + 7 + 4) % 7);
	int64_t day = first + (r->wday - wd_first + 7) % 7 + (int64_t)(r->week - 1) * 7;
	int next_y = r->month == 12 ? (int)y + 1 : (int)y;
	int64_t month_end = tz_days_from_civil(next_y, r->month == 12 ? 1 : r->month + 1, 1);

	while (day >= month_end)
		day -= 7;
	return day * TZ_DAY_S + r->time_s;
}

/* POSIX TZ: a name, alphabetic or in <>. */
static bool
tz_skip_name(const char **p)
{
	const char *s = *p;

	if (*s == '<') {
		while (*s != '\0' && *s != '>')
			s++;
		if (*s != '>')
			return false;
		*p = s + 1;
		return true;
	}
	while (isalpha((unsigned char)*s))
		s++;
	if (s - *p < 3)
		return false;
	*p = s;
	return true;
}

/* [+-]hh[:mm[:ss]] as seconds. */
static bool
tz_parse_hms(const char **p, long *out)
{
	const char *s = *p;
	long sign = 1, v = 0, part;
	int i;

	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	for (i = 0; i < 3; i++) {
		if (!isdigit((unsigned char)*s))
			return false;
		part = 0;
		while (isdigit((unsigned char)*s) && part < 1000)
			part = part * 10 + (*s++ - '0');
		v += part * (i == 0 ? 3600 : i == 1 ? 60 : 1);
		if (*s != ':' || i == 2)
			break;
		s++;
	}
	*out = sign * v;
	*p = s;
	return true;
}

static bool
tz_parse_int(const char **p, int lo, int hi, int *out)
{
	const char *s = *p;
	int v = 0;

	if (!isdigit((unsigned char)*s))
		return false;
	while (isdigit((unsigned char)*s) && v <= hi)
		v = v * 10 + (*s++ - '0');
	if (v < lo || v > hi)
		return false;
	*out = v;
	*p = s;
	return true;
}

static bool
tz_parse_rule(const char **p, struct tz_rule *r)
{
	const char *s = *p;

	/* Only the month form: the one every current zone's footer uses. */
	if (*s++ != 'M' || !tz_parse_int(&s, 1, 12, &r->month) || *s++ != '.' ||
	    !tz_parse_int(&s, 1, 5, &r->week) || *s++ != '.' || !tz_parse_int(&s, 0, 6, &r->wday))
		return false;
	r->time_s = 7200;
	if (*s == '/') {
		s++;
		if (!tz_parse_hms(&s, &r->time_s))
			return false;
	}
	*p = s;
	return true;
}

/* The footer "STDoff[DST[off][,start,end]]"; false for one this reader
 * does not know (the zone is then refused, never misread). */
static bool
tz_parse_footer(struct tz_zone *z, const char *s)
{
	long v;

	if (*s == '\0')
		return true; /* no rule: the last transition's offset holds */
	if (!tz_skip_name(&s) || !tz_parse_hms(&s, &v))
		return false;
	z->std_off = -v;
	z->has_rule = true;
	if (*s == '\0')
		return true;
	if (!tz_skip_name(&s))
		return false;
	z->dst_off = z->std_off + 3600;
	if (*s != ',' && *s != '\0') {
		if (!tz_parse_hms(&s, &v))
			return false;
		z->dst_off = -v;
	}
	if (*s++ != ',' || !tz_parse_rule(&s, &z->start) || *s++ != ',' ||
	    !tz_parse_rule(&s, &z->end) || *s != '\0')
		return false;
	z->has_dst = true;
	return true;
}

struct tz_zone *
tz_parse(const unsigned char *data, size_t len, char *err, size_t errlen)
{
	struct tz_zone *z = NULL;
	const unsigned char *h = data, *body;
	uint32_t cnt[6];
	size_t tsz = 4, need, i, timecnt, typecnt, charcnt;
	char footer[128];
	bool v2;

	if (len < 44 || memcmp(data, "TZif", 4) != 0)
		goto bad;
	v2 = data[4] >= '2';
	for (i = 0; i < 6; i++)
		cnt[i] = tz_be32(data + 20 + 4 * i);
	/* isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt */
	need = (size_t)cnt[3] * 5 + (size_t)cnt[4] * 6 + cnt[5] + (size_t)cnt[2] * 8 + cnt[1] +
	       cnt[0];
	if (cnt[3] > 100000 || cnt[4] > 256 || cnt[4] == 0 || cnt[2] > 10000 || 44 + need > len)
		goto bad;
	if (v2) {
		h = data + 44 + need;
		if ((size_t)(h - data) + 44 > len || memcmp(h, "TZif", 4) != 0)
			goto bad;
		for (i = 0; i < 6; i++)
			cnt[i] = tz_be32(h + 20 + 4 * i);
		tsz = 8;
		need = (size_t)cnt[3] * 9 + (size_t)cnt[4] * 6 + cnt[5] + (size_t)cnt[2] * 12 +
		       cnt[1] + cnt[0];
		if (cnt[3] > 100000 || cnt[4] > 256 || cnt[4] == 0 || cnt[2] > 10000 ||
		    (size_t)(h - data) + 44 + need > len)
			goto bad;
	}
	timecnt = cnt[3];
	typecnt = cnt[4];
	charcnt = cnt[5];
	body = h + 44;
	z = calloc(1, sizeof(*z));
	if (z == NULL)
		goto nomem;
	z->n = timecnt;
	if (timecnt > 0) {
		z->at = calloc(timecnt, sizeof(*z->at));
		z->off = calloc(timecnt, sizeof(*z->off));
		if (z->at == NULL || z->off == NULL)
			goto nomem;
	}
	for (i = 0; i < timecnt; i++) {
		const unsigned char *t = body + i * tsz;
		size_t type = body[timecnt * tsz + i];

		z->at[i] = tsz == 8 ? tz_be64(t) : (int64_t)(int32_t)tz_be32(t);
		if (type >= typecnt || (i > 0 && z->at[i] <= z->at[i - 1]))
			goto bad;
		z->off[i] = (long)(int32_t)tz_be32(body + timecnt * (tsz + 1) + type * 6);
	}
	/* Before the first transition: type 0 (RFC 8536, 3.2). */
	z->off_none = (long)(int32_t)tz_be32(body + timecnt * (tsz + 1));
	z->std_off = z->n > 0 ? z->off[z->n - 1] : z->off_none;
	if (v2) {
		const unsigned char *f = body + need, *end;
		size_t flen;

		if (f >= data + len || *f != '\n')
			goto bad;
		f++;
		end = memchr(f, '\n', (size_t)(data + len - f));
		if (end == NULL || (size_t)(end - f) >= sizeof(footer))
			goto bad;
		flen = (size_t)(end - f);
		memcpy(footer, f, flen);
		footer[flen] = '\0';
		if (!tz_parse_footer(z, footer))
			goto bad;
	}
	(void)charcnt;
	return z;
nomem:
	snprintf(err, errlen, "out of memory");
	tz_free(z);
	return NULL;
bad:
	snprintf(err, errlen, "not a time zone file this reader knows");
	tz_free(z);
	return NULL;
}

struct tz_zone *
tz_load(const char *name, char *err, size_t errlen)
{
	const char *dir = getenv("TZDIR");
	char path[4096];
	unsigned char *data = NULL;
	struct tz_zone *z = NULL;
	struct stat sb;
	FILE *f = NULL;
	int n;

	/* A zone name, never a path out of the zone directory. */
	if (name[0] == '\0' || name[0] == '/' || strstr(name, "..") != NULL) {
		snprintf(err, errlen, "unknown time zone \"%s\"", name);
		return NULL;
	}
	if (dir == NULL || dir[0] == '\0')
		dir = "/usr/share/zoneinfo";
	n = snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= sizeof(path))
		goto unknown;
	f = fopen(path, "rb");
	if (f == NULL || fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) ||
	    sb.st_size > TZ_FILE_MAX)
		goto unknown;
	data = malloc((size_t)sb.st_size + 1);
	if (data == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (fread(data, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size)
		goto unknown;
	z = tz_parse(data, (size_t)sb.st_size, err, errlen);
	if (z == NULL)
		goto unknown;
	goto done;
unknown:
	snprintf(err, errlen, "unknown time zone \"%s\" (no zone file %s)", name, path);
fail:
	tz_free(z);
	z = NULL;
done:
	free(data);
	if (f != NULL)
		fclose(f);
	return z;
}

long
tz_offset_s(const struct tz_zone *z, int64_t t_s)
{
	size_t lo = 0, hi = z->n;
	int64_t y, start, end;
	int m, d;

	if (z->n == 0 || t_s < z->at[0])
		return z->n == 0 && z->has_rule && !z->has_dst ? z->std_off : z->off_none;
	if (t_s < z->at[z->n - 1] || !z->has_rule) {
		/* The last transition at or before t_s. */
		while (hi - lo > 1) {
			size_t mid = lo + (hi - lo) / 2;

			if (z->at[mid] <= t_s)
				lo = mid;
			else
				hi = mid;
		}
		return z->off[lo];
	}
	if (!z->has_dst)
		return z->std_off;
	tz_civil_from_days(tz_floor_div(t_s + z->std_off, TZ_DAY_S), &y, &m, &d);
	start = tz_rule_local(&z->start, y) - z->std_off;
	end = tz_rule_local(&z->end, y) - z->dst_off;
	if (start < end)
		return t_s >= start && t_s < end ? z->dst_off : z->std_off;
	return t_s >= end && t_s < start ? z->std_off : z->dst_off;
}

long
tz_day(const struct tz_zone *z, int64_t t_ms)
{
	int64_t t_s = tz_floor_div(t_ms, 1000), y;
	int m, d;

	if (z == NULL)
		return clock_local_day(t_ms);
	tz_civil_from_days(tz_floor_div(t_s + tz_offset_s(z, t_s), TZ_DAY_S), &y, &m, &d);
	return (long)(y * 10000 + m * 100 + d);
}

int64_t
tz_ms_to_midnight(const struct tz_zone *z, int64_t t_ms)
{
	int64_t t_s = tz_floor_div(t_ms, 1000);
	int64_t next_local, u;
	int i;

	if (z == NULL)
		return clock_ms_to_midnight(t_ms);
	next_local = (tz_floor_div(t_s + tz_offset_s(z, t_s), TZ_DAY_S) + 1) * TZ_DAY_S;
	/* The UTC time whose local time is that midnight: the offset there may
	 * differ from now's (a switch today), so settle it twice. */
	u = next_local - tz_offset_s(z, t_s);
	for (i = 0; i < 2; i++)
		u = next_local - tz_offset_s(z, u);
	if (u * 1000 <= t_ms)
		return 86400000;
	return u * 1000 - t_ms;
}

/* Whom an upstream answer is charged to: see ratelimit.h. */
#include "ratelimit.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "compat.h"

/* A wait beyond a day is taken as a day: a daily quota says so itself. */
#define RATELIMIT_MAX_MS (INT64_C(86400) * 1000)

/* The value of header name in head (trimmed), NUL-terminated into buf;
 * false when absent or too long. */
static bool
ratelimit_header(const char *head, size_t len, const char *name, char *buf, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = head, *end = head + len;

	while (p != NULL && p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *le = eol != NULL ? eol : end;
		if ((size_t)(le - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (v < le && (*v == ' ' || *v == '\t'))
				v++;
			const char *ve = le;
			while (ve > v && isspace((unsigned char)ve[-1]))
				ve--;
			if ((size_t)(ve - v) >= cap)
				return false;
			memcpy(buf, v, (size_t)(ve - v));
			buf[ve - v] = '\0';
			return true;
		}
		p = eol != NULL ? eol + 1 : NULL;
	}
	return false;
}

/* A whole non-negative number of up to 12 digits; -1 otherwise. */
static int64_t
ratelimit_digits(const char *s)
{
	int64_t v = 0;
	size_t n = 0;

	for (; s[n] >= '0' && s[n] <= '9'; n++) {
		if (n == 12)
			return -1;
		v = v * 10 + (s[n] - '0');
	}
	return n > 0 && s[n] == '\0' ? v : -1;
}

/* The milliseconds from now_ms to an HTTP date (IMF-fixdate); -1 when it
 * is none. */
static int64_t
ratelimit_http_date(const char *s, int64_t now_ms)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);

	if (end == NULL || *end != '\0')
		return -1;
	int64_t at = (int64_t)timegm(&tm) * 1000;
	return at > now_ms ? at - now_ms : 0;
}

/* The seconds of a "retryDelay": "17s" (or "1.5s") in a JSON body, as ms;
 * -1 when there is none. */
static int64_t
ratelimit_retry_delay(const char *body, size_t len)
{
	static const char key[] = "\"retryDelay\"";
	const char *p = memmem(body, len, key, sizeof(key) - 1), *end = body + len;

	if (p == NULL)
		return -1;
	p += sizeof(key) - 1;
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p == end || *p++ != ':')
		return -1;
	while (p < end && isspace((unsigned char)*p))
		p++;
	if (p == end || *p++ != '"')
		return -1;
	int64_t whole = 0, frac = 0, unit = 1000;
	size_t digits = 0;
	for (; p < end && *p >= '0' && *p <= '9'; p++)
		if (++digits > 9)
			return -1;
		else
			whole = whole * 10 + (*p - '0');
	if (p < end && *p == '.')
		for (p++; p < end && *p >= '0' && *p <= '9'; p++)
			if (unit > 1)
				frac += (*p - '0') * (unit /= 10);
	if (digits == 0 || end - p < 2 || p[0] != 's' || p[1] != '"')
		return -1;
	return whole * 1000 + frac;
}

int64_t
ratelimit_wait_ms(const struct ratelimit_answer *a, int64_t now_ms)
{
	char v[128];
	int64_t w = -1;

	if (a->head != NULL &&
	    ratelimit_header(a->head, a->head_len, "Retry-After", v, sizeof(v))) {
		w = ratelimit_digits(v);
		if (w >= 0)
			w = w > RATELIMIT_MAX_MS / 1000 ? RATELIMIT_MAX_MS : w * 1000;
		else
			w = ratelimit_http_date(v, now_ms);
	}
	if (w < 0 && a->head != NULL &&
	    ratelimit_header(a->head, a->head_len, "retry-after-ms", v, sizeof(v)))
		w = ratelimit_digits(v);
	if (w < 0 && a->body != NULL)
		w = ratelimit_retry_delay(a->body, a->body_len);
	return w > RATELIMIT_MAX_MS ? RATELIMIT_MAX_MS : w;
}

bool
ratelimit_daily(const char *body, size_t len)
{
	static const char quota[] = "\"quotaId\"", openai[] = "\"insufficient_quota\"";
	const char *p = body, *end = body + len;

	if (body == NULL)
		return false;
	if (memmem(body, len, openai, sizeof(openai) - 1) != NULL)
		return true;
	while ((p = memmem(p, (size_t)(end - p), quota, sizeof(quota) - 1)) != NULL) {
		p += sizeof(quota) - 1;
		while (p < end && (isspace((unsigned char)*p) || *p == ':'))
			p++;
		if (p == end || *p != '"')
			continue;
		const char *close = memchr(p + 1, '"', (size_t)(end - p - 1));
		if (close == NULL)
			return false;
		if (memmem(p + 1, (size_t)(close - p - 1), "PerDay", 6) != NULL)
			return true;
		p = close;
	}
	return false;
}

enum store_charge
ratelimit_charge(const struct ratelimit_answer *a, int64_t now_ms, long default_s,
		 int64_t *until_ms)
{
	switch (a->status) {
	case 429:
		if (ratelimit_daily(a->body, a->body_len))
			return STORE_CHARGE_EXHAUSTED;
		int64_t w = ratelimit_wait_ms(a, now_ms);
		*until_ms = now_ms + (w >= 0 ? w : (int64_t)default_s * 1000);
		return STORE_CHARGE_LIMITED;
	case 401:
		return STORE_CHARGE_REJECTED;
	case 403:
		return STORE_CHARGE_FORBIDDEN;
	case 408:
	case 409:
		/* Retried on another endpoint as before pools: the endpoint's. */
		return STORE_CHARGE_RUN;
	default:
		break;
	}
	if (a->status >= 400 && a->status < 500)
		return STORE_CHARGE_NONE;
	return STORE_CHARGE_RUN;
}

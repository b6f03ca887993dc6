/* One client's usage per day and model: see usage_book.h. */
#include "usage_book.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "limit.h"
#include "store.h"

#define USAGE_BOOK_MAGIC 0x42554731u /* "1GUB" */
/* Rows a book can hold: every model of every day, and each day's other. */
#define USAGE_BOOK_ROWS_MAX ((size_t)USAGE_BOOK_DAYS * (USAGE_BOOK_MODELS + 1))

/* The bytes: a head, then each row (its day and counts, its model's length
 * and name padded to 8), all in host byte order as store_codec.h's. */
struct usage_book_head {
	uint32_t magic;
	uint32_t n;
	struct usage_count all;
};

struct usage_book_row_head {
	int64_t day;
	struct usage_count c;
	uint32_t model_len;
	uint32_t pad;
};

static size_t
usage_book_pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

void
usage_book_init(struct usage_book *b)
{
	dynbuf_init(&b->rows, USAGE_BOOK_ROWS_MAX * sizeof(struct usage_row));
	memset(&b->all, 0, sizeof(b->all));
}

void
usage_book_free(struct usage_book *b)
{
	dynbuf_free(&b->rows);
	memset(&b->all, 0, sizeof(b->all));
}

const struct usage_row *
usage_book_rows(const struct usage_book *b, size_t *n)
{
	*n = dynbuf_len(&b->rows) / sizeof(struct usage_row);
	return dynbuf_ptr(&b->rows);
}

int
usage_book_decode(struct usage_book *b, const char *p, size_t len)
{
	struct usage_book_head h;
	size_t off = sizeof(h);

	dynbuf_reset(&b->rows);
	memset(&b->all, 0, sizeof(b->all));
	if (len == 0)
		return 0;
	if (len < sizeof(h))
		return -1;
	memcpy(&h, p, sizeof(h));
	if (h.magic != USAGE_BOOK_MAGIC || h.n > USAGE_BOOK_ROWS_MAX)
		return -1;
	if (dynbuf_reserve(&b->rows, (size_t)h.n * sizeof(struct usage_row)) != 0)
		return -1;
	for (uint32_t i = 0; i < h.n; i++) {
		struct usage_book_row_head rh;
		struct usage_row row;
		if (off + sizeof(rh) > len)
			goto bad;
		memcpy(&rh, p + off, sizeof(rh));
		off += sizeof(rh);
		if (rh.model_len == 0 || rh.model_len >= USAGE_BOOK_MODEL_MAX ||
		    off + usage_book_pad8(rh.model_len) > len)
			goto bad;
		memset(&row, 0, sizeof(row));
		row.day = rh.day;
		row.c = rh.c;
		memcpy(row.model, p + off, rh.model_len);
		if (strlen(row.model) != rh.model_len)
			goto bad;
		off += usage_book_pad8(rh.model_len);
		dynbuf_add(&b->rows, &row, sizeof(row));
	}
	if (off != len || dynbuf_failed(&b->rows))
		goto bad;
	b->all = h.all;
	return 0;
bad:
	dynbuf_reset(&b->rows);
	return -1;
}

size_t
usage_book_size(const struct usage_book *b)
{
	size_t n, len = sizeof(struct usage_book_head);
	const struct usage_row *r = usage_book_rows(b, &n);

	for (size_t i = 0; i < n; i++)
		len += sizeof(struct usage_book_row_head) + usage_book_pad8(strlen(r[i].model));
	return len;
}

void
usage_book_put(const struct usage_book *b, char *p)
{
	size_t n, off = sizeof(struct usage_book_head);
	const struct usage_row *r = usage_book_rows(b, &n);
	struct usage_book_head h = {USAGE_BOOK_MAGIC, (uint32_t)n, b->all};

	memcpy(p, &h, sizeof(h));
	for (size_t i = 0; i < n; i++) {
		size_t ml = strlen(r[i].model);
		struct usage_book_row_head rh = {r[i].day, r[i].c, (uint32_t)ml, 0};
		memcpy(p + off, &rh, sizeof(rh));
		off += sizeof(rh);
		memcpy(p + off, r[i].model, ml);
		memset(p + off + ml, 0, usage_book_pad8(ml) - ml);
		off += usage_book_pad8(ml);
	}
}

/* Days since 1970-01-01 of a YYYYMMDD (the proleptic Gregorian calendar),
 * so that days can be told apart by their distance. */
static long
usage_book_days(long ymd)
{
	long y = ymd / 10000, m = ymd / 100 % 100, d = ymd % 100;

	y -= m <= 2;
	long era = (y >= 0 ? y : y - 399) / 400;
	long yoe = y - era * 400;
	long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The YYYYMMDD of a count of days since 1970-01-01. */
static long
usage_book_ymd(long z)
{
	z += 719468;
	long era = (z >= 0 ? z : z - 146096) / 146097;
	long doe = z - era * 146097;
	long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	long mp = (5 * doy + 2) / 153;
	long d = doy - (153 * mp + 2) / 5 + 1;
	long m = mp < 10 ? mp + 3 : mp - 9;
	long y = yoe + era * 400 + (m <= 2);
	return y * 10000 + m * 100 + d;
}

long
usage_book_day_before(long day, int n)
{
	return usage_book_ymd(usage_book_days(day) - n);
}

void
usage_book_prune(struct usage_book *b, long today)
{
	size_t n, keep = 0;
	struct usage_row *r = dynbuf_ptr(&b->rows);
	long oldest = usage_book_days(today) - (USAGE_BOOK_DAYS - 1);

	(void)usage_book_rows(b, &n);
	for (size_t i = 0; i < n; i++)
		if (usage_book_days((long)r[i].day) >= oldest)
			r[keep++] = r[i];
	dynbuf_truncate(&b->rows, keep * sizeof(*r));
}

static void
usage_book_add(struct usage_count *c, const struct store_outcome *o)
{
	c->requests = limit_add_tokens(c->requests, 1);
	if (!o->has_usage)
		return;
	c->prompt = limit_add_tokens(c->prompt, o->prompt_tokens);
	c->completion = limit_add_tokens(c->completion, o->completion_tokens);
	c->total = limit_add_tokens(c->total, o->total_tokens);
}

/* Copies s into name (USAGE_BOOK_MODEL_MAX bytes), cut to fit. A record's
 * step copies its model's name under the state lock: snprintf's format
 * parsing cost more than the rest of the copy. */
static void
usage_book_name(char name[USAGE_BOOK_MODEL_MAX], const char *s)
{
	size_t n = strnlen(s, USAGE_BOOK_MODEL_MAX - 1);

	memcpy(name, s, n);
	name[n] = '\0';
}

/* Drops from name, cut from a text of len bytes, the start of a character
 * the cut left incomplete: the name goes into JSON (usage_book_json), which
 * needs UTF-8. */
static void
usage_book_cut_utf8(char *name, size_t len)
{
	size_t n = strlen(name), i = n, need;

	if (len <= n)
		return;
	/* Back to the last character's first byte (at most 3 continuations). */
	while (i > 0 && n - i < 4 && ((unsigned char)name[i - 1] & 0xC0) == 0x80)
		i--;
	if (i == 0)
		return;
	unsigned char lead = (unsigned char)name[i - 1];
	need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
	if (n - (i - 1) < need)
		name[i - 1] = '\0';
}

/* Whether s is UTF-8 (RFC 3629: no overlong form, no surrogate, nothing
 * past U+10FFFF). A model name that is not (a multipart part's bytes are
 * taken as they come) must not go into JSON. */
static bool
usage_book_utf8_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p != 0) {
		unsigned c = *p++;
		size_t more;
		uint32_t cp, min;
		if (c < 0x80)
			continue;
		if (c >= 0xC2 && c <= 0xDF)
			more = 1, cp = c & 0x1F, min = 0x80;
		else if (c >= 0xE0 && c <= 0xEF)
			more = 2, cp = c & 0x0F, min = 0x800;
		else if (c >= 0xF0 && c <= 0xF4)
			more = 3, cp = c & 0x07, min = 0x10000;
		else
			return false;
		for (size_t i = 0; i < more; i++, p++) {
			if ((*p & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (*p & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
	}
	return true;
}

int
usage_book_count(struct usage_book *b, long today, const char *model, const struct store_outcome *o)
{
	char name[USAGE_BOOK_MODEL_MAX];
	struct usage_row *r;
	size_t n, models = 0, at = SIZE_MAX, other = SIZE_MAX;

	if (!o->served)
		return 0;
	if (model == NULL || model[0] == '\0')
		model = USAGE_BOOK_NO_MODEL;
	usage_book_name(name, model);
	usage_book_cut_utf8(name, strlen(model));
	if (!usage_book_utf8_ok(name))
		usage_book_name(name, USAGE_BOOK_OTHER);
	usage_book_prune(b, today);
	r = dynbuf_ptr(&b->rows);
	(void)usage_book_rows(b, &n);
	for (size_t i = 0; i < n; i++) {
		if (r[i].day != today)
			continue;
		if (strcmp(r[i].model, USAGE_BOOK_OTHER) == 0)
			other = i;
		else
			models++;
		if (strcmp(r[i].model, name) == 0)
			at = i;
	}
	if (at == SIZE_MAX && models >= USAGE_BOOK_MODELS) {
		at = other;
		usage_book_name(name, USAGE_BOOK_OTHER);
	}
	if (at == SIZE_MAX) {
		struct usage_row *nr = dynbuf_addz(&b->rows, sizeof(*nr));
		if (nr == NULL) {
			dynbuf_clearerr(&b->rows);
			return -1;
		}
		nr->day = today;
		memcpy(nr->model, name, sizeof(nr->model));
		r = dynbuf_ptr(&b->rows);
		at = n;
	}
	usage_book_add(&r[at].c, o);
	usage_book_add(&b->all, o);
	return 1;
}

struct usage_count
usage_book_day(const struct usage_book *b, long day)
{
	struct usage_count sum = {0, 0, 0, 0};
	size_t n;
	const struct usage_row *r = usage_book_rows(b, &n);

	for (size_t i = 0; i < n; i++) {
		if (r[i].day != day)
			continue;
		sum.requests += r[i].c.requests;
		sum.prompt += r[i].c.prompt;
		sum.completion += r[i].c.completion;
		sum.total += r[i].c.total;
	}
	return sum;
}

/* The four counts as a JSON object. */
static json_t *
usage_book_count_json(const struct usage_count *c)
{
	return json_pack("{s:I,s:I,s:I,s:I}", "requests", (json_int_t)c->requests, "prompt_tokens",
			 (json_int_t)c->prompt, "completion_tokens", (json_int_t)c->completion,
			 "total_tokens", (json_int_t)c->total);
}

/* One day of b: its sums, its date and its models. */
static json_t *
usage_book_day_json(const struct usage_book *b, long day)
{
	char date[40];
	size_t n;
	const struct usage_row *r = usage_book_rows(b, &n);
	struct usage_count sum = usage_book_day(b, day);
	json_t *o = usage_book_count_json(&sum), *models = json_object();

	snprintf(date, sizeof(date), "%04ld-%02ld-%02ld", day / 10000, day / 100 % 100, day % 100);
	if (o == NULL || models == NULL || json_object_set_new(o, "date", json_string(date)) != 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		if (r[i].day != day)
			continue;
		/* A model is the client's text, not checked for UTF-8 (nor is
		 * it forwarded so): nocheck, so one odd name spoils nothing. */
		if (json_object_set_new_nocheck(models, r[i].model,
						usage_book_count_json(&r[i].c)) != 0)
			goto fail;
	}
	if (json_object_set_new(o, "models", models) != 0) {
		models = NULL;
		goto fail;
	}
	return o;
fail:
	json_decref(o);
	json_decref(models);
	return NULL;
}

json_t *
usage_book_json(const char *client, const struct usage_book *b, long today)
{
	json_t *o = json_object(), *days = json_array();

	if (o == NULL || days == NULL ||
	    json_object_set_new(o, "client", json_string(client)) != 0 ||
	    json_object_set_new(o, "total", usage_book_count_json(&b->all)) != 0)
		goto fail;
	for (int i = 0; i < USAGE_BOOK_DAYS; i++) {
		long day = usage_book_day_before(today, i);
		if (json_array_append_new(days, usage_book_day_json(b, day)) != 0)
			goto fail;
		if (i == 0 && json_object_set(o, "today", json_array_get(days, 0)) != 0)
			goto fail;
	}
	if (json_object_set_new(o, "days", days) != 0) {
		days = NULL;
		goto fail;
	}
	return o;
fail:
	json_decref(o);
	json_decref(days);
	return NULL;
}

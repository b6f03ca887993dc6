#include "sse.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "dynbuf.h"
#include "compat.h"
#include "json_scan.h"

/* Longest line kept. A usage event is a few hundred bytes; a longer line is
 * content we need not read, and keeping it would let an upstream make us
 * hold any amount of memory. */
#define SSE_LINE_MAX (256 * 1024)

struct sse_parser {
	struct dynbuf line; /* the current, unterminated line */
	bool skipping;      /* the current line is over SSE_LINE_MAX: drop to its end */
	bool saw_data;
	struct usage usage;
};

/* A token count as a long long from the number s[at..end) (see
 * sse_usage_scan): a negative or absurd count is no count. */
static long long
sse_count(const char *s, size_t at, size_t end)
{
	double d;

	if (json_scan_number(s, at, end, &d) != 0 || !(d > 0))
		return 0;
	if (d >= (double)LLONG_MAX)
		return LLONG_MAX;
	return (long long)d;
}

/* The three counts of a usage object, each its last member of that name (a
 * parser keeps the last of repeated keys); value == value_end when absent. */
struct sse_usage_keys {
	struct json_scan_member prompt, completion, total;
};

static int
sse_usage_member(void *ctx, const char *s, const struct json_scan_member *m)
{
	struct sse_usage_keys *k = ctx;
	struct json_scan js = {.s = s};

	if (json_scan_key_is(&js, m, "prompt_tokens"))
		k->prompt = *m;
	else if (json_scan_key_is(&js, m, "completion_tokens"))
		k->completion = *m;
	else if (json_scan_key_is(&js, m, "total_tokens"))
		k->total = *m;
	return 0;
}

/* True when member m (of the text s) is present and a number. */
static bool
sse_is_number(const char *s, const struct json_scan_member *m)
{
	return m->value_end > m->value &&
	       (s[m->value] == '-' || (s[m->value] >= '0' && s[m->value] <= '9'));
}

/* Fills out from the usage object s[0..n), checked as jansson would parse
 * it (integers as reals so that an absurd count reads as a huge one rather
 * than losing the usage; NUL allowed for the same reason); out->found stays
 * false when it is not valid JSON. */
static void
sse_usage_from_object(const char *s, size_t n, struct usage *out)
{
	struct sse_usage_keys k;

	memset(&k, 0, sizeof(k));
	if (json_scan_check(s, n, JSON_SCAN_INT_AS_REAL | JSON_SCAN_ALLOW_NUL, sse_usage_member, &k,
			    NULL, NULL) != 0)
		return;
	out->found = true;
	out->prompt =
		sse_is_number(s, &k.prompt) ? sse_count(s, k.prompt.value, k.prompt.value_end) : 0;
	out->completion_present = sse_is_number(s, &k.completion);
	out->completion = out->completion_present
				  ? sse_count(s, k.completion.value, k.completion.value_end)
				  : 0;
	if (sse_is_number(s, &k.total))
		out->total = sse_count(s, k.total.value, k.total.value_end);
	else if (out->prompt <= LLONG_MAX - out->completion)
		out->total = out->prompt + out->completion;
	else
		out->total = LLONG_MAX;
}

/* Fills out from the top-level "usage" of the JSON text s[0..n); out->found
 * stays false when the text is not an object, the key is absent, or its value
 * is null, not an object or not valid JSON.
 *
 * Only the usage object is checked, and no tree is built: jansson reading a
 * whole answer cost 140 to 180 instructions a byte of it (callgrind), where
 * this walk skips the rest with memchr and a bracket count, about 0.1 a byte
 * of string. It reads what parsing the whole text read (jansson keeps the
 * last of repeated keys, so the last "usage" counts here too, and text after
 * the object is refused as jansson's end-of-input check refuses it), except
 * that invalid JSON outside the usage object no longer hides it. */
static void
sse_usage_scan(const char *s, size_t n, struct usage *out)
{
	struct json_scan js;
	struct json_scan_member m;
	size_t v = 0, vend = 0;
	bool have = false;
	int rc;

	memset(out, 0, sizeof(*out));
	if (json_scan_object_begin(&js, s, n) != 0)
		return;
	while ((rc = json_scan_object_next(&js, &m)) == 1) {
		if (json_scan_key_is(&js, &m, "usage")) {
			v = m.value;
			vend = m.value_end;
			have = true;
		}
	}
	if (rc != 0 || json_scan_ws(s, n, js.pos) != n || !have || s[v] != '{')
		return;
	sse_usage_from_object(s + v, vend - v, out);
}

int
usage_from_json(const char *body, size_t len, struct usage *out)
{
	memset(out, 0, sizeof(*out));
	if (body == NULL || len == 0)
		return 0;
	sse_usage_scan(body, len, out);
	return 0;
}

/* When the line s[0..n) (no LF) is a "data:" line, points *v at its value
 * (one leading space and a trailing CR removed) and returns true. */
static bool
sse_data_value(const char *s, size_t n, const char **v, size_t *vn)
{
	if (n > 0 && s[n - 1] == '\r')
		n--;
	if (n < 5 || memcmp(s, "data:", 5) != 0)
		return false;
	s += 5;
	n -= 5;
	if (n > 0 && s[0] == ' ') {
		s++;
		n--;
	}
	*v = s;
	*vn = n;
	return true;
}

static bool
sse_is_done(const char *v, size_t n)
{
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	return n == 6 && memcmp(v, "[DONE]", 6) == 0;
}

/* The usage a data value carries, if it is a JSON object with a non-null
 * "usage". Most events of a stream without include_usage never mention it,
 * and a memmem rules them out faster than the walk. A key spelled with
 * escapes ("us\u0061ge") has a backslash: memchr, not a second memmem, finds
 * one (glibc's memmem of a 2-byte needle cost more than the walk it saves). */
static bool
sse_value_usage(const char *v, size_t n, struct usage *out)
{
	if (memmem(v, n, "usage", 5) == NULL && memchr(v, '\\', n) == NULL)
		return false;
	sse_usage_scan(v, n, out);
	return out->found;
}

/* One complete line, without its LF. */
static void
sse_parser_line(struct sse_parser *p, const char *s, size_t n)
{
	struct usage u;
	const char *v;
	size_t vn;

	if (!sse_data_value(s, n, &v, &vn) || sse_is_done(v, vn))
		return;
	p->saw_data = true;
	if (sse_value_usage(v, vn, &u))
		p->usage = u;
}

/* True when the line that a[0..an) then b[0..bn) begin is a "data:" line. */
static bool
sse_starts_data(const char *a, size_t an, const char *b, size_t bn)
{
	static const char want[] = "data:";

	for (size_t i = 0; i < 5; i++) {
		char c;

		if (i < an)
			c = a[i];
		else if (i - an < bn)
			c = b[i - an];
		else
			return false;
		if (c != want[i])
			return false;
	}
	return true;
}

/* Starts dropping the current line: it is over the bound. It still counts as
 * data, since it cannot be "[DONE]". */
static void
sse_parser_skip(struct sse_parser *p, const char *data, size_t len)
{
	if (sse_starts_data(dynbuf_ptr(&p->line), dynbuf_len(&p->line), data, len))
		p->saw_data = true;
	p->skipping = true;
	dynbuf_reset(&p->line);
}

/* Appends to the current line; false when it would pass the bound or memory
 * runs out. */
static bool
sse_parser_append(struct sse_parser *p, const char *data, size_t len)
{
	return dynbuf_add(&p->line, data, len) == 0;
}

struct sse_parser *
sse_parser_new(void)
{
	struct sse_parser *p = calloc(1, sizeof(*p));

	if (p != NULL)
		dynbuf_init(&p->line, SSE_LINE_MAX);
	return p;
}

void
sse_parser_feed(struct sse_parser *p, const char *data, size_t len)
{
	while (len > 0) {
		const char *nl = memchr(data, '\n', len);
		size_t n;

		if (nl == NULL) {
			if (!p->skipping && !sse_parser_append(p, data, len))
				sse_parser_skip(p, data, len);
			return;
		}
		n = (size_t)(nl - data);
		if (p->skipping) {
			p->skipping = false;
		} else if (dynbuf_len(&p->line) == 0) {
			/* The whole line is in this chunk: read it in place. */
			if (n > SSE_LINE_MAX)
				sse_parser_skip(p, data, n);
			else
				sse_parser_line(p, data, n);
			p->skipping = false;
		} else if (sse_parser_append(p, data, n)) {
			sse_parser_line(p, dynbuf_ptr(&p->line), dynbuf_len(&p->line));
		} else {
			sse_parser_skip(p, data, n);
			p->skipping = false;
		}
		dynbuf_reset(&p->line);
		data = nl + 1;
		len -= n + 1;
	}
}

void
sse_parser_usage(struct sse_parser *p, struct usage *out)
{
	const char *v;
	size_t vn;
	struct usage u;

	*out = p->usage;
	/* A last line the stream did not end with LF; it stays pending, since
	 * more bytes may still come. */
	if (!p->skipping && dynbuf_len(&p->line) > 0 &&
	    sse_data_value(dynbuf_ptr(&p->line), dynbuf_len(&p->line), &v, &vn) &&
	    !sse_is_done(v, vn) && sse_value_usage(v, vn, &u))
		*out = u;
}

bool
sse_parser_saw_data(const struct sse_parser *p)
{
	const char *v;
	size_t vn;

	if (p->saw_data)
		return true;
	/* A pending data line counts unless it may still turn into "[DONE]". */
	if (p->skipping || dynbuf_len(&p->line) == 0 ||
	    !sse_data_value(dynbuf_ptr(&p->line), dynbuf_len(&p->line), &v, &vn))
		return false;
	while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
		vn--;
	return vn > 6 || memcmp(v, "[DONE]", vn) != 0;
}

void
sse_parser_free(struct sse_parser *p)
{
	if (p == NULL)
		return;
	dynbuf_free(&p->line);
	free(p);
}

/*
 * The usage-only event's removal
 */

/* An event held longer than this goes on as it comes: a usage-only event
 * is a few hundred bytes. */
#define SSE_EVENT_MAX (64 * 1024)

struct sse_filter {
	struct dynbuf event; /* the current event, held back */
	bool passing;        /* the current event outgrew the bound: it goes on */
	bool line_blank;     /* the current line holds nothing but CRs so far */
};

struct sse_filter *
sse_filter_new(void)
{
	struct sse_filter *f = calloc(1, sizeof(*f));

	if (f != NULL) {
		dynbuf_init(&f->event, SSE_EVENT_MAX);
		f->line_blank = true;
	}
	return f;
}

/* True when the data value v[0..n) is a JSON object with "choices": [] and
 * a "usage" object: the chunk include_usage adds. */
static bool
sse_usage_only_value(const char *v, size_t n)
{
	struct json_scan js;
	struct json_scan_member m;
	bool no_choices = false, usage = false;
	int rc;

	if (json_scan_object_begin(&js, v, n) != 0)
		return false;
	while ((rc = json_scan_object_next(&js, &m)) == 1) {
		if (json_scan_key_is(&js, &m, "choices"))
			no_choices = v[m.value] == '[' &&
				     json_scan_ws(v, m.value_end, m.value + 1) == m.value_end - 1;
		else if (json_scan_key_is(&js, &m, "usage"))
			usage = v[m.value] == '{';
	}
	return rc == 0 && json_scan_ws(v, n, js.pos) == n && no_choices && usage;
}

/* True when the event s[0..n) (its lines with their ends) is one data line
 * carrying the usage-only chunk, and blank lines. */
static bool
sse_usage_only_event(const char *s, size_t n)
{
	bool found = false;

	while (n > 0) {
		const char *nl = memchr(s, '\n', n);
		size_t ln = nl != NULL ? (size_t)(nl - s) : n;
		size_t next = nl != NULL ? ln + 1 : n;
		const char *v;
		size_t vn;

		if (ln > 0 && s[ln - 1] == '\r')
			ln--;
		if (ln > 0) {
			if (found || !sse_data_value(s, ln, &v, &vn) ||
			    !sse_usage_only_value(v, vn))
				return false;
			found = true;
		}
		s += next;
		n -= next;
	}
	return found;
}

/* The held event is complete (or the stream ended): it goes on unless it
 * is the usage-only one. */
static bool
sse_filter_settle(struct sse_filter *f, sse_emit_fn emit, void *ctx)
{
	const char *s = dynbuf_ptr(&f->event);
	size_t n = dynbuf_len(&f->event);
	bool ok = true;

	if (n > 0 && !sse_usage_only_event(s, n))
		ok = emit(ctx, s, n);
	dynbuf_reset(&f->event);
	return ok;
}

bool
sse_filter_feed(struct sse_filter *f, const char *data, size_t len, sse_emit_fn emit, void *ctx)
{
	while (len > 0) {
		const char *nl = memchr(data, '\n', len);
		size_t n = nl != NULL ? (size_t)(nl - data) + 1 : len;
		size_t body = nl != NULL ? n - 1 : n;

		for (size_t i = 0; f->line_blank && i < body; i++)
			if (data[i] != '\r')
				f->line_blank = false;
		if (f->passing) {
			if (!emit(ctx, data, n))
				return false;
		} else if (dynbuf_add(&f->event, data, n) != 0) {
			/* Too long to be the usage chunk: it goes on from here. */
			f->passing = true;
			if (!sse_filter_settle(f, emit, ctx) || !emit(ctx, data, n))
				return false;
		}
		if (nl != NULL) {
			if (f->line_blank) {
				/* A blank line ends the event. */
				if (!f->passing && !sse_filter_settle(f, emit, ctx))
					return false;
				f->passing = false;
			}
			f->line_blank = true;
		}
		data += n;
		len -= n;
	}
	return true;
}

bool
sse_filter_end(struct sse_filter *f, sse_emit_fn emit, void *ctx)
{
	bool ok = f->passing || sse_filter_settle(f, emit, ctx);

	f->passing = false;
	f->line_blank = true;
	dynbuf_reset(&f->event);
	return ok;
}

void
sse_filter_free(struct sse_filter *f)
{
	if (f == NULL)
		return;
	dynbuf_free(&f->event);
	free(f);
}

/* Fuzzes the SSE usage parser (sse_parser_feed in random splits) and
 * usage_from_json (src/sse.h). Input: 4 bytes that seed the split points,
 * then the upstream's answer. usage_from_json walks the answer and parses
 * only its "usage" object; it is checked against jansson reading the whole,
 * as it did before (fuzz_reference). */
#include "fuzz.h"

#include <limits.h>
#include <stdbool.h>

#include <jansson.h>

#include "sse.h"

/* Most boundaries compared with a parser fed the prefix whole. */
#define FUZZ_SSE_CHECKS 16

static bool
fuzz_usage_equal(const struct usage *a, const struct usage *b)
{
	return a->found == b->found && a->completion_present == b->completion_present &&
	       a->prompt == b->prompt && a->completion == b->completion && a->total == b->total;
}

static void
fuzz_usage_sane(const struct usage *u)
{
	if (!u->found) {
		FUZZ_CHECK(u->prompt == 0 && u->completion == 0 && u->total == 0);
		return;
	}
	FUZZ_CHECK(u->prompt >= 0 && u->completion >= 0 && u->total >= 0);
	FUZZ_CHECK(u->completion_present || u->completion == 0);
}

/* A token count as sse.c reads one. */
static long long
fuzz_count(json_t *v)
{
	double d = json_number_value(v);

	if (!(d > 0))
		return 0;
	if (d >= (double)LLONG_MAX)
		return LLONG_MAX;
	return (long long)d;
}

/* The usage of s[0..len) by jansson reading it whole, as usage_from_json did
 * before it walked; returns false when jansson refuses the text, for which
 * the walk may tell more than jansson did (invalid JSON outside the usage
 * object no longer hides it). */
static bool
fuzz_reference(const char *s, size_t len, struct usage *out)
{
	json_t *root, *u, *p, *c, *t;

	memset(out, 0, sizeof(*out));
	root = json_loadb(s, len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
	if (root == NULL)
		return false;
	/* A raw NUL jansson accepted is one it dropped after a number or a
	 * literal (fuzz/fuzz_json.c, fuzz_jansson_nul_quirk); the usage check
	 * refuses it, as RFC 8259 does: not compared. */
	if (memchr(s, '\0', len) != NULL) {
		json_decref(root);
		return false;
	}
	u = json_object_get(root, "usage");
	if (json_is_object(root) && json_is_object(u)) {
		p = json_object_get(u, "prompt_tokens");
		c = json_object_get(u, "completion_tokens");
		t = json_object_get(u, "total_tokens");
		out->found = true;
		out->prompt = json_is_number(p) ? fuzz_count(p) : 0;
		out->completion_present = json_is_number(c);
		out->completion = out->completion_present ? fuzz_count(c) : 0;
		if (json_is_number(t))
			out->total = fuzz_count(t);
		else if (out->prompt <= LLONG_MAX - out->completion)
			out->total = out->prompt + out->completion;
		else
			out->total = LLONG_MAX;
	}
	json_decref(root);
	return true;
}

/* s[0..len) as the one data line of a stream must give what usage_from_json
 * gives for it, when it can be one line: the stream path has its own filter
 * in front of the same walk. */
static void
fuzz_as_event(const char *s, size_t len, const struct usage *whole)
{
	struct sse_parser *p;
	struct usage u;
	char *line;

	/* 64 KiB: well under the parser's longest line (sse.c SSE_LINE_MAX),
	 * above any input fuzz/run makes. */
	if (len > 65536 || memchr(s, '\n', len) != NULL)
		return;
	line = malloc(len + 7);
	if (line == NULL)
		abort();
	memcpy(line, "data: ", 6);
	memcpy(line + 6, s, len);
	line[len + 6] = '\n';
	p = sse_parser_new();
	FUZZ_CHECK(p != NULL);
	sse_parser_feed(p, line, len + 7);
	sse_parser_usage(p, &u);
	FUZZ_CHECK(fuzz_usage_equal(&u, whole));
	sse_parser_free(p);
	free(line);
}

/* The state after prefix[0..len) fed in one piece. */
static void
fuzz_whole(const char *prefix, size_t len, struct usage *u, bool *saw)
{
	struct sse_parser *p = sse_parser_new();

	FUZZ_CHECK(p != NULL);
	sse_parser_feed(p, prefix, len);
	sse_parser_usage(p, u);
	*saw = sse_parser_saw_data(p);
	sse_parser_free(p);
}

/* What an sse_filter let through. */
struct fuzz_out {
	char *buf;
	size_t len, cap;
};

static bool
fuzz_emit(void *ctx, const char *data, size_t len)
{
	struct fuzz_out *o = ctx;

	FUZZ_CHECK(len > 0 && o->len + len <= o->cap);
	memcpy(o->buf + o->len, data, len);
	o->len += len;
	return true;
}

/* The filter fed s[0..len) whole and in the pieces of seed give the same
 * bytes, at most the input's, all of it when no event can be the usage one. */
static void
fuzz_filter(const char *s, size_t len, uint32_t seed)
{
	struct fuzz_out whole = {malloc(len + 1), 0, len}, split = {malloc(len + 1), 0, len};
	struct sse_filter *f = sse_filter_new();
	size_t off = 0;

	FUZZ_CHECK(whole.buf != NULL && split.buf != NULL && f != NULL);
	FUZZ_CHECK(sse_filter_feed(f, s, len, fuzz_emit, &whole));
	FUZZ_CHECK(sse_filter_end(f, fuzz_emit, &whole));
	while (off < len) {
		size_t n;

		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		n = seed % 24 + 1;
		if (n > len - off)
			n = len - off;
		FUZZ_CHECK(sse_filter_feed(f, s + off, n, fuzz_emit, &split));
		off += n;
	}
	FUZZ_CHECK(sse_filter_end(f, fuzz_emit, &split));
	FUZZ_CHECK(whole.len == split.len && memcmp(whole.buf, split.buf, whole.len) == 0);
	if (memmem(s, len, "choices", 7) == NULL && memchr(s, '\\', len) == NULL)
		FUZZ_CHECK(whole.len == len && memcmp(whole.buf, s, len) == 0);
	sse_filter_free(f);
	free(whole.buf);
	free(split.buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t seed = 0x9e3779b9u;
	struct sse_parser *p;
	struct usage u, w;
	bool saw, wsaw, saw_before = false;
	size_t off = 0, len, chunks = 0;
	char *s;

	if (size >= 4) {
		seed ^= (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
			(uint32_t)data[3] << 24;
		data += 4;
		size -= 4;
	}
	/* An exact-size copy, so reading past the stream is caught. */
	s = malloc(size > 0 ? size : 1);
	if (s == NULL)
		abort();
	memcpy(s, data, size);
	len = size;

	/* A whole JSON answer. */
	memset(&u, 0x5a, sizeof(u));
	FUZZ_CHECK(usage_from_json(s, len, &u) == 0);
	fuzz_usage_sane(&u);
	/* Where jansson reads the whole answer, the walk reads the same usage
	 * (the last of repeated keys, none when text follows the object...). */
	if (fuzz_reference(s, len, &w))
		FUZZ_CHECK(fuzz_usage_equal(&u, &w));
	/* The same text as the one event of a stream reads the same. */
	fuzz_as_event(s, len, &u);

	/* The stream, split at random points: after each piece the parser must
	 * stand where one fed the same bytes in one piece stands. */
	p = sse_parser_new();
	FUZZ_CHECK(p != NULL);
	while (off < len) {
		size_t n;

		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		/* Mostly short pieces, now and then a long one. */
		n = (seed & 7) == 0 ? seed % 4096 + 1 : seed % 24 + 1;
		if (n > len - off)
			n = len - off;
		sse_parser_feed(p, s + off, n);
		off += n;
		chunks++;
		sse_parser_usage(p, &u);
		saw = sse_parser_saw_data(p);
		fuzz_usage_sane(&u);
		/* Data once seen stays seen. */
		FUZZ_CHECK(saw || !saw_before);
		saw_before = saw;
		if (chunks <= FUZZ_SSE_CHECKS || off == len) {
			fuzz_whole(s, off, &w, &wsaw);
			FUZZ_CHECK(fuzz_usage_equal(&u, &w));
			FUZZ_CHECK(saw == wsaw);
		}
	}
	/* An empty piece changes nothing. */
	sse_parser_feed(p, s, 0);
	sse_parser_usage(p, &w);
	FUZZ_CHECK(fuzz_usage_equal(&u, &w));
	sse_parser_free(p);
	fuzz_filter(s, len, seed);
	free(s);
	return 0;
}

/* Fuzzes the SSE usage parser (sse_parser_feed in random splits) and
 * usage_from_json (src/sse.h). Input: 4 bytes that seed the split points,
 * then the upstream's answer. */
#include "fuzz.h"

#include <stdbool.h>

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
	free(s);
	return 0;
}

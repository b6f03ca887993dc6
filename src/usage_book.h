/* usage_book: one client's usage, per local day and per model, for
 * GET /v1/usage (doc/behaviour.md, Limits and state: usage per client).
 *
 * Pure, like limit.h: no I/O, no lock, no clock read. Both stores keep a
 * client's book as the bytes usage_book_put writes (the GDBM store in its
 * record, the Redis store as one key's value) and apply usage_book_count
 * in the same atomic step that records the attempt's outcome.
 *
 * A book holds the counts of the last USAGE_BOOK_DAYS local days (today
 * and the 30 before it): older days drop when the book is next counted in
 * or read. A day holds at most USAGE_BOOK_MODELS models; the answers of
 * any further model that day count under USAGE_BOOK_OTHER. It also holds
 * totals since the book began (never pruned: /metrics' counters). */
#ifndef API_TOGETHER_USAGE_BOOK_H
#define API_TOGETHER_USAGE_BOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dynbuf.h"

struct store_outcome;

#define USAGE_BOOK_DAYS 31
#define USAGE_BOOK_MODELS 64
/* Bytes of a model's name kept (a longer one is cut there). */
#define USAGE_BOOK_MODEL_MAX 128
#define USAGE_BOOK_OTHER "(other)"
/* The model of a request that named none. */
#define USAGE_BOOK_NO_MODEL "-"

/* Counts of answers served. */
struct usage_count {
	int64_t requests;
	int64_t prompt;
	int64_t completion;
	int64_t total;
};

/* One model's counts on one day (YYYYMMDD). */
struct usage_row {
	int64_t day;
	struct usage_count c;
	char model[USAGE_BOOK_MODEL_MAX];
};

/* A decoded book: its rows (struct usage_row, unordered) and totals. */
struct usage_book {
	struct dynbuf rows;
	struct usage_count all; /* since the book began */
};

/* An empty book; allocates nothing. */
void usage_book_init(struct usage_book *b);

/* Frees what b holds and leaves it empty (b may be only initialised). */
void usage_book_free(struct usage_book *b);

/* Reads the bytes p[0..len) usage_book_put wrote into b (emptied first);
 * len 0 is an empty book. Returns 0, or -1 when they are not a book or
 * memory runs out (b then empty). */
int usage_book_decode(struct usage_book *b, const char *p, size_t len);

/* The size of b's bytes, and writing them into p (which has that many). */
size_t usage_book_size(const struct usage_book *b);
void usage_book_put(const struct usage_book *b, char *p);

/* Drops the days of b older than the 30 before today (YYYYMMDD). */
void usage_book_prune(struct usage_book *b, long today);

/* Counts o into b on today (YYYYMMDD) for model (NULL: USAGE_BOOK_NO_MODEL),
 * when o->served: a request, and its tokens when o->has_usage (an estimate
 * counted as tokens counts as such); prunes first. Counts saturate at
 * LIMIT_MAX_TOKENS. Returns 1 when b changed, 0 when o was not served, -1
 * when memory runs out (b unchanged). */
int usage_book_count(struct usage_book *b, long today, const char *model,
		     const struct store_outcome *o);

/* The rows of b and their number. */
const struct usage_row *usage_book_rows(const struct usage_book *b, size_t *n);

/* The sum of b's rows of day. */
struct usage_count usage_book_day(const struct usage_book *b, long day);

/* The day (YYYYMMDD) n days before day; for the days of a book. */
long usage_book_day_before(long day, int n);

/* b as a JSON object: {"client", "total": {...}, "today": {...}, "days":
 * [today first, USAGE_BOOK_DAYS of them, each {"date", "requests",
 * "prompt_tokens", "completion_tokens", "total_tokens", "models": {name:
 * {the same four}}}]} (doc/behaviour.md, HTTP: GET /v1/usage). Returns a
 * new reference, or NULL when memory runs out. */
json_t *usage_book_json(const char *client, const struct usage_book *b, long today);

#endif

/* history: the last hour of an endpoint, a key or the gateway in one-minute
 * buckets (doc/behaviour.md, Limits and state, rules 32 to 36).
 *
 * Pure functions over a plain struct: no I/O, no lock, no clock read, no
 * allocation; the time is an argument. Both stores keep a struct history in
 * each key's state (limit.h) and apply these, through limit_record, in the
 * step that records an attempt's outcome; the gateway's own refusals go
 * into one of the gateway's at store_sync.
 *
 * The rules, written once here:
 * - A bucket is one minute of the clock: [m * 60 s, (m + 1) * 60 s).
 * - Buckets roll with the clock: the newest is the minute of the last count
 *   (or of the read); a count in a later minute starts a new bucket, and a
 *   bucket 60 minutes older than the newest is dropped, never reported.
 * - Counters are 32 bits and saturate at UINT32_MAX.
 * - The clock set back: buckets ahead of now count as now's, for one window
 *   at most (limit.h's clamps): a time within 60 minutes before the newest
 *   bucket folds the buckets after its minute into its own; a time 60
 *   minutes or more before it starts the history over. */
#ifndef API_TOGETHER_HISTORY_H
#define API_TOGETHER_HISTORY_H

#include <stdint.h>

#define HISTORY_MINUTES 60
#define HISTORY_MINUTE_MS 60000

/* What a bucket counts (doc/behaviour.md, HTTP: /v1/status "history"). */
enum history_field {
	HISTORY_REQUESTS,   /* attempts answered or failed */
	HISTORY_SUCCESSES,  /* of them, usable answers */
	HISTORY_FAILURES,   /* of them, failures other than an upstream 429 */
	HISTORY_LIMITED,    /* of them, 429s of the upstream */
	HISTORY_REFUSED,    /* the gateway's own 429/503 (its own row only) */
	HISTORY_TOKENS,     /* tokens of the answers (their totals) */
	HISTORY_LATENCY_MS, /* the sum of the attempts' latencies */
	HISTORY_FIELDS
};

/* The names /v1/status gives the fields, in enum order. */
extern const char *const history_field_names[HISTORY_FIELDS];

/* One row of 60 buckets. A zeroed struct is an empty history. The bucket
 * of minute m is count[m % HISTORY_MINUTES] while m is within the 60
 * minutes up to newest. Padding-free, 8-byte aligned: the state record
 * stores it as one block (store_codec.c). */
struct history {
	int64_t newest; /* minute since the epoch of the newest bucket; 0 none */
	uint32_t count[HISTORY_MINUTES][HISTORY_FIELDS];
};

/* The minute since the epoch of ms (floored; a time before the epoch is
 * minute 0). */
int64_t history_minute(int64_t ms);

/* Brings h to minute: rolls it forward (the buckets skipped and the ones
 * now older than 60 minutes zeroed), or, the clock set back, folds or drops
 * the buckets ahead of it as the rules say. Afterwards h->newest == minute
 * and h holds the 60 minutes up to it. */
void history_at(struct history *h, int64_t minute);

/* Adds add[0..HISTORY_FIELDS) to the bucket of now_ms's minute, rolling h
 * there first; each counter saturates. */
void history_add(struct history *h, int64_t now_ms, const uint32_t add[HISTORY_FIELDS]);

/* Adds b into a bucket by bucket, saturating; both must be at the same
 * minute (history_at) or empty. */
void history_sum(struct history *a, const struct history *b);

/* The counters of bucket i (0 the oldest, HISTORY_MINUTES - 1 the newest)
 * of a history brought to its minute by history_at, and that bucket's
 * start in ms since the epoch in *start_ms. */
const uint32_t *history_bucket(const struct history *h, int i, int64_t *start_ms);

/* a + b, at most UINT32_MAX. */
uint32_t history_add32(uint32_t a, uint64_t b);

#endif

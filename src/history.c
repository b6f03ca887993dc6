/* The last hour in one-minute buckets: see history.h. */
#include "history.h"

#include <string.h>

const char *const history_field_names[HISTORY_FIELDS] = {
	[HISTORY_REQUESTS] = "requests",       [HISTORY_SUCCESSES] = "successes",
	[HISTORY_FAILURES] = "failures",       [HISTORY_LIMITED] = "upstream429",
	[HISTORY_REFUSED] = "refused",         [HISTORY_TOKENS] = "tokens",
	[HISTORY_LATENCY_MS] = "latencyMsSum",
};

_Static_assert(sizeof(struct history) == 8 + HISTORY_MINUTES * HISTORY_FIELDS * sizeof(uint32_t),
	       "a history holds padding");
_Static_assert(sizeof(struct history) % 8 == 0, "a history breaks 8-byte alignment");

int64_t
history_minute(int64_t ms)
{
	return ms > 0 ? ms / HISTORY_MINUTE_MS : 0;
}

uint32_t
history_add32(uint32_t a, uint64_t b)
{
	return b >= (uint64_t)(UINT32_MAX - a) ? UINT32_MAX : a + (uint32_t)b;
}

static uint32_t *
history_slot(struct history *h, int64_t minute)
{
	return h->count[minute % HISTORY_MINUTES];
}

void
history_at(struct history *h, int64_t minute)
{
	if (h->newest == minute)
		return;
	if (h->newest == 0 || minute >= h->newest + HISTORY_MINUTES ||
	    minute <= h->newest - HISTORY_MINUTES) {
		/* Nothing of it within the hour up to minute (or the clock set
		 * back by an hour or more: rule 36). */
		memset(h->count, 0, sizeof(h->count));
	} else if (minute > h->newest) {
		for (int64_t m = h->newest + 1; m <= minute; m++)
			memset(history_slot(h, m), 0, sizeof(h->count[0]));
	} else {
		/* Set back within the hour: what is ahead of minute counts as
		 * minute's, and those slots become the hour before it (the
		 * minutes they stand for were dropped already). */
		uint32_t *to = history_slot(h, minute);
		for (int64_t m = minute + 1; m <= h->newest; m++) {
			uint32_t *from = history_slot(h, m);
			for (int f = 0; f < HISTORY_FIELDS; f++)
				to[f] = history_add32(to[f], from[f]);
			memset(from, 0, sizeof(h->count[0]));
		}
	}
	h->newest = minute;
}

void
history_add(struct history *h, int64_t now_ms, const uint32_t add[HISTORY_FIELDS])
{
	int64_t minute = history_minute(now_ms);
	uint32_t *b;

	history_at(h, minute);
	b = history_slot(h, minute);
	for (int f = 0; f < HISTORY_FIELDS; f++)
		b[f] = history_add32(b[f], add[f]);
}

void
history_sum(struct history *a, const struct history *b)
{
	if (b->newest == 0)
		return;
	if (a->newest == 0)
		a->newest = b->newest;
	for (int i = 0; i < HISTORY_MINUTES; i++)
		for (int f = 0; f < HISTORY_FIELDS; f++)
			a->count[i][f] = history_add32(a->count[i][f], b->count[i][f]);
}

const uint32_t *
history_bucket(const struct history *h, int i, int64_t *start_ms)
{
	int64_t minute = h->newest - (HISTORY_MINUTES - 1) + i;

	*start_ms = minute * HISTORY_MINUTE_MS;
	return h->count[((minute % HISTORY_MINUTES) + HISTORY_MINUTES) % HISTORY_MINUTES];
}

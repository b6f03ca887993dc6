/* The rules of an endpoint's limits and state: see limit.h. */
#include "limit.h"

#include <string.h>

const long store_hist_bounds_ms[STORE_HIST_N] = {50,   100,   250,   500,   1000,   2500,
						 5000, 10000, 30000, 60000, 120000, 300000};

uint32_t
limit_ring_cap_for(long rpm)
{
	if (rpm <= 0 || rpm > LIMIT_RING_MAX)
		return 0;
	return (uint32_t)rpm;
}

/* The i-th oldest time of the ring. */
static int64_t
limit_ring_at(const struct limit_state *s, uint32_t i)
{
	return s->ring_base + s->ring[(s->ring_head + i) % s->ring_cap];
}

/* Attempts in the last `seconds` whole seconds, this one included. */
static int64_t
limit_bucket_sum(const struct limit_state *s, int64_t now_ms, int seconds)
{
	int64_t now_s = now_ms / 1000;
	int64_t sum = 0;

	for (int i = 0; i < LIMIT_BUCKETS; i++)
		if ((int64_t)s->buckets[i].second > now_s - seconds &&
		    (int64_t)s->buckets[i].second <= now_s)
			sum += s->buckets[i].count;
	return sum;
}

/* True when the ring holds every attempt of the last window. */
static bool
limit_ring_complete(const struct limit_state *s, int64_t now_ms)
{
	return s->ring_cap > 0 && s->ring_since <= now_ms - LIMIT_WINDOW_MS;
}

static void
limit_reverse(uint32_t *a, uint32_t from, uint32_t to)
{
	while (from + 1 < to) {
		uint32_t t = a[from];
		a[from++] = a[--to];
		a[to] = t;
	}
}

void
limit_fit_ring(struct limit_state *s, long rpm, int64_t now_ms)
{
	uint32_t cap = limit_ring_cap_for(rpm);
	uint32_t keep = s->ring_len < cap ? s->ring_len : cap;

	if (cap == s->ring_cap)
		return;
	if (keep > 0) {
		/* Oldest first from index 0 (three reversals rotate the ring in
		 * place), then the newest keep to the front. */
		limit_reverse(s->ring, 0, s->ring_head);
		limit_reverse(s->ring, s->ring_head, s->ring_cap);
		limit_reverse(s->ring, 0, s->ring_cap);
		memmove(s->ring, s->ring + (s->ring_len - keep), (size_t)keep * sizeof(*s->ring));
	}
	/* The times not held yet are written too (and rebased): zeros, not
	 * whatever the memory held. */
	if (cap > keep)
		memset(s->ring + keep, 0, (size_t)(cap - keep) * sizeof(*s->ring));
	/* Grown while attempts it never saw are still in the window. */
	if (cap > s->ring_cap && limit_bucket_sum(s, now_ms, LIMIT_BUCKETS) > (int64_t)s->ring_len)
		s->ring_since = now_ms;
	if (s->ring_cap == 0)
		s->ring_base = now_ms;
	s->ring_cap = cap;
	s->ring_len = keep;
	s->ring_head = 0;
}

long
limit_rpm_used(const struct limit_state *s, int64_t now_ms)
{
	long n = 0;

	if (!limit_ring_complete(s, now_ms))
		return (long)limit_bucket_sum(s, now_ms, LIMIT_WINDOW_MS / 1000);
	for (uint32_t i = 0; i < s->ring_len; i++)
		if (limit_ring_at(s, i) > now_ms - LIMIT_WINDOW_MS)
			n++;
	return n;
}

long
limit_rpd_used(const struct limit_state *s, const struct limit_now *now)
{
	return s->day == now->day ? (long)s->day_count : 0;
}

int64_t
limit_wait_ms(const struct limit_state *s, const struct store_endpoint *ep,
	      const struct limit_now *now)
{
	int64_t wait = 0, now_ms = now->ms;

	if (ep->rpm == 0 || ep->rpd == 0)
		return now->to_midnight(now_ms);
	if (ep->rpd > 0 && s->day == now->day && s->day_count >= ep->rpd)
		wait = now->to_midnight(now_ms);
	if (ep->rpm < 0)
		return wait;
	bool covers = s->ring_cap >= (uint32_t)ep->rpm && s->ring_cap > 0;
	if (covers && s->ring_len >= (uint32_t)ep->rpm) {
		/* Exact: the rpm-th newest attempt must have left the window.
		 * After the clock was set back, times ahead of now were made in
		 * the last moments: up to a window ahead they count as now; one
		 * further ahead would hold the endpoint back for as long as the
		 * step, so it counts as gone (at most rpm attempts more, once). */
		int64_t t = limit_ring_at(s, s->ring_len - (uint32_t)ep->rpm);
		if (t > now_ms)
			t = t > now_ms + LIMIT_WINDOW_MS ? now_ms - LIMIT_WINDOW_MS : now_ms;
		int64_t w = t + LIMIT_WINDOW_MS - now_ms;
		if (w > wait)
			wait = w;
	}
	if ((!covers || !limit_ring_complete(s, now_ms)) &&
	    limit_bucket_sum(s, now_ms, LIMIT_BUCKETS) >= ep->rpm) {
		/* Buckets spanning more than the window: the oldest frees first. */
		int64_t now_s = now_ms / 1000, oldest = now_s;
		for (int i = 0; i < LIMIT_BUCKETS; i++) {
			int64_t sec = s->buckets[i].second;
			if (s->buckets[i].count > 0 && sec > now_s - LIMIT_BUCKETS && sec < oldest)
				oldest = sec;
		}
		int64_t w = (oldest + LIMIT_BUCKETS) * 1000 - now_ms;
		if (w > wait)
			wait = w;
	}
	return wait;
}

long
limit_retry_after_s(int64_t ms)
{
	int64_t s = (ms + 999) / 1000;
	return s < 1 ? 1 : (long)s;
}

size_t
limit_look(const struct limit_state *const *st, const struct store_endpoint *eps, size_t n,
	   const struct limit_now *now, bool *room, struct store_reservation *res)
{
	int64_t min_wait = -1, min_cool = -1;
	size_t have_room = 0;

	for (size_t i = 0; i < n; i++) {
		const struct limit_state *s = st[i];
		room[i] = false;
		if (s->cooldown_until > now->ms) {
			int64_t w = s->cooldown_until - now->ms;
			if (min_cool < 0 || w < min_cool)
				min_cool = w;
			continue;
		}
		int64_t w = limit_wait_ms(s, &eps[i], now);
		if (w > 0) {
			if (min_wait < 0 || w < min_wait)
				min_wait = w;
			continue;
		}
		room[i] = true;
		have_room++;
	}
	if (have_room > 0)
		return have_room;
	if (min_wait >= 0) {
		/* A cooling endpoint may free before a limited one does. */
		if (min_cool >= 0 && min_cool < min_wait)
			min_wait = min_cool;
		res->verdict = STORE_LIMITED;
		res->retry_after_s = limit_retry_after_s(min_wait);
	} else {
		res->verdict = STORE_COOLING;
		res->retry_after_s = limit_retry_after_s(min_cool);
	}
	return 0;
}

void
limit_count_attempt(struct limit_state *s, const struct limit_now *now)
{
	int64_t now_ms = now->ms, now_s = now_ms / 1000;
	struct limit_bucket *b = &s->buckets[now_s % LIMIT_BUCKETS];

	if (s->day != now->day) {
		s->day = now->day;
		s->day_count = 0;
	}
	if (b->second != (uint32_t)now_s) {
		b->second = (uint32_t)now_s;
		b->count = 0;
	}
	b->count++;
	s->day_count++;
	s->attempts++;
	if (s->ring_cap == 0)
		return;
	if (now_ms - s->ring_base >= LIMIT_REBASE_MS || now_ms < s->ring_base) {
		/* Keep offsets small (and never negative after the clock was set
		 * back); times older than the new base are long gone. */
		int64_t nb = now_ms - LIMIT_WINDOW_MS;
		for (uint32_t i = 0; i < s->ring_cap; i++) {
			int64_t t = s->ring_base + s->ring[i];
			if (t > now_ms)
				t = now_ms; /* the clock was set back */
			s->ring[i] = t > nb ? (uint32_t)(t - nb) : 0;
		}
		s->ring_base = nb;
	}
	uint32_t off = (uint32_t)(now_ms - s->ring_base);
	if (s->ring_len < s->ring_cap) {
		s->ring[(s->ring_head + s->ring_len) % s->ring_cap] = off;
		s->ring_len++;
	} else {
		s->ring[s->ring_head] = off;
		s->ring_head = (s->ring_head + 1) % s->ring_cap;
	}
}

int64_t
limit_add_tokens(int64_t sum, long long add)
{
	if (add <= 0)
		return sum;
	if (add > LIMIT_MAX_TOKENS || sum > LIMIT_MAX_TOKENS - add)
		return LIMIT_MAX_TOKENS;
	return sum + add;
}

size_t
limit_hist_index(int64_t ms)
{
	size_t i = 0;

	while (i < STORE_HIST_N && ms > store_hist_bounds_ms[i])
		i++;
	return i;
}

/* Counts an attempt of ms (< 0: none) in a histogram. */
static void
limit_hist_put(int64_t *bucket, int64_t *count, int64_t *sum_ms, int64_t ms)
{
	if (ms < 0)
		return;
	size_t i = limit_hist_index(ms);
	if (i < STORE_HIST_N)
		bucket[i]++;
	(*count)++;
	*sum_ms = limit_add_tokens(*sum_ms, ms);
}

void
limit_record(struct limit_state *s, const struct store_outcome *o, const struct store_cooldown *cd,
	     const struct limit_now *now)
{
	if (o->success) {
		s->fail_run = 0;
		s->cooldown_until = 0;
	} else {
		s->fail_run++;
		if (cd->failures > 0 && s->fail_run >= cd->failures && cd->seconds > 0)
			s->cooldown_until = now->ms + (int64_t)cd->seconds * 1000;
	}
	if (o->served) {
		s->requests++;
		s->last_used = now->ms;
	}
	if (o->has_usage) {
		s->prompt = limit_add_tokens(s->prompt, o->prompt_tokens);
		s->completion = limit_add_tokens(s->completion, o->completion_tokens);
		s->total = limit_add_tokens(s->total, o->total_tokens);
		/* As day_count: a new local day starts the day's counts at 0. */
		if (s->tok_day != now->day) {
			s->tok_day = now->day;
			s->day_prompt = s->day_completion = s->day_total = 0;
		}
		s->day_prompt = limit_add_tokens(s->day_prompt, o->prompt_tokens);
		s->day_completion = limit_add_tokens(s->day_completion, o->completion_tokens);
		s->day_total = limit_add_tokens(s->day_total, o->total_tokens);
	}
	if ((unsigned)o->code_class < STORE_CLASS_N)
		s->answers[o->code_class]++;
	if (o->retry)
		s->retries++;
	limit_hist_put(s->lat, &s->lat_count, &s->lat_sum_ms, o->latency_ms);
	limit_hist_put(s->ttfb, &s->ttfb_count, &s->ttfb_sum_ms, o->ttfb_ms);
}

static void
limit_hist_get(struct store_hist *h, const int64_t *bucket, int64_t count, int64_t sum_ms)
{
	for (size_t i = 0; i < STORE_HIST_N; i++)
		h->bucket[i] = bucket[i];
	h->count = count;
	h->sum_ms = sum_ms;
}

void
limit_usage(const struct limit_state *s, const struct store_endpoint *ep,
	    const struct limit_now *now, struct store_usage *u)
{
	memset(u, 0, sizeof(*u));
	u->rpm_used = limit_rpm_used(s, now->ms);
	u->rpd_used = limit_rpd_used(s, now);
	u->fail_run = (long)s->fail_run;
	u->cooldown_until = s->cooldown_until > now->ms ? s->cooldown_until : 0;
	u->prompt_tokens = s->prompt;
	u->completion_tokens = s->completion;
	u->total_tokens = s->total;
	/* Counts of an earlier day are no tokens of today's. */
	if (s->tok_day == now->day) {
		u->day_prompt_tokens = s->day_prompt;
		u->day_completion_tokens = s->day_completion;
		u->day_total_tokens = s->day_total;
	}
	u->requests = s->requests;
	u->last_used = s->last_used;
	u->attempts = s->attempts;
	u->retries = s->retries;
	for (size_t k = 0; k < STORE_CLASS_N; k++)
		u->answers[k] = s->answers[k];
	limit_hist_get(&u->latency, s->lat, s->lat_count, s->lat_sum_ms);
	limit_hist_get(&u->ttfb, s->ttfb, s->ttfb_count, s->ttfb_sum_ms);
	int64_t w = limit_wait_ms(s, ep, now);
	u->free_in_s = w > 0 ? limit_retry_after_s(w) : 0;
}

void
limit_reset_tokens(struct limit_state *s)
{
	s->prompt = s->completion = s->total = 0;
	s->requests = 0;
	s->last_used = 0;
}

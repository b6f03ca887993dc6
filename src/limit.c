/* The rules of an endpoint's limits and state: see limit.h. */
#include "limit.h"

#include <string.h>

const long store_hist_bounds_ms[STORE_HIST_N] = {50,   100,   250,   500,   1000,   2500,
						 5000, 10000, 30000, 60000, 120000, 300000};

struct limit_now
limit_now_in(const struct limit_now *now, const struct tz_zone *zone)
{
	struct limit_now at = {now->ms, 0, tz_ms_to_midnight, zone};

	if (zone == now->zone)
		return *now;
	at.day = tz_day(zone, now->ms);
	return at;
}

struct store_endpoint
limit_model_endpoint(const struct store_endpoint *ep)
{
	struct store_endpoint m = *ep;

	m.id = ep->model->id;
	m.rpm = ep->model->rpm;
	m.rpd = ep->model->rpd;
	m.tpm = ep->model->tpm;
	m.tpd = ep->model->tpd;
	m.group = 0;
	m.model = NULL;
	return m;
}

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

/* Tokens in the token window's last `seconds` whole seconds, this one
 * included. */
static int64_t
limit_tok_sum(const struct limit_state *s, int64_t now_ms, int seconds)
{
	int64_t now_s = now_ms / 1000;
	int64_t sum = 0;

	for (int i = 0; i < LIMIT_BUCKETS; i++)
		if (s->tok_sec[i] > now_s - seconds && s->tok_sec[i] <= now_s)
			sum = limit_add_tokens(sum, s->tok_count[i]);
	return sum;
}

/* Adds tokens to now's second of the token window. */
static void
limit_tok_put(struct limit_state *s, int64_t now_ms, long long add)
{
	int64_t now_s = now_ms / 1000;
	int i = (int)(now_s % LIMIT_BUCKETS);

	if (s->tok_sec[i] != now_s) {
		s->tok_sec[i] = now_s;
		s->tok_count[i] = 0;
	}
	s->tok_count[i] = limit_add_tokens(s->tok_count[i], add);
}

/* Milliseconds until the token window of the last 61 s has room for
 * estimate under tpm (> 0): its oldest seconds leave first, until the rest
 * plus the estimate fit or nothing is left (rule 23). */
static int64_t
limit_tpm_wait(const struct limit_state *s, long tpm, long long estimate, int64_t now_ms)
{
	int64_t now_s = now_ms / 1000, from = now_s - LIMIT_BUCKETS;
	int64_t used = limit_tok_sum(s, now_ms, LIMIT_BUCKETS);

	if (used == 0 || limit_add_tokens(used, estimate) <= tpm)
		return 0;
	for (;;) {
		int64_t oldest = INT64_MAX, in_it = 0;
		for (int i = 0; i < LIMIT_BUCKETS; i++) {
			int64_t sec = s->tok_sec[i];
			if (s->tok_count[i] > 0 && sec > from && sec <= now_s && sec < oldest) {
				oldest = sec;
				in_it = s->tok_count[i];
			}
		}
		if (oldest == INT64_MAX)
			return 0; /* not reached: used counts these seconds */
		used -= in_it;
		from = oldest;
		if (used <= 0 || limit_add_tokens(used, estimate) <= tpm)
			return (oldest + LIMIT_BUCKETS) * 1000 - now_ms;
	}
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

long long
limit_tpm_used(const struct limit_state *s, int64_t now_ms)
{
	return limit_tok_sum(s, now_ms, LIMIT_WINDOW_MS / 1000);
}

long long
limit_tpd_used(const struct limit_state *s, const struct limit_now *now)
{
	int64_t n = s->tok_day == now->day ? s->day_total : 0;

	return s->est_day == now->day ? limit_add_tokens(n, s->day_est) : n;
}

int64_t
limit_wait_ms(const struct limit_state *s, const struct store_endpoint *ep,
	      const struct limit_now *now_local)
{
	struct limit_now at = limit_now_in(now_local, ep->zone);
	const struct limit_now *now = &at;
	int64_t wait = 0, now_ms = now->ms;

	if (ep->rpm == 0 || ep->rpd == 0 || ep->tpm == 0 || ep->tpd == 0)
		return now->to_midnight(now->zone, now_ms);
	if (ep->rpd > 0 && s->day == now->day && s->day_count >= ep->rpd)
		wait = now->to_midnight(now->zone, now_ms);
	if (ep->tpd > 0) {
		/* A day without tokens yet admits any one estimate (rule 25). */
		int64_t used = limit_tpd_used(s, now);
		if (used > 0 && limit_add_tokens(used, ep->estimate) > ep->tpd)
			wait = now->to_midnight(now->zone, now_ms);
	}
	if (ep->tpm > 0) {
		int64_t w = limit_tpm_wait(s, ep->tpm, ep->estimate, now_ms);
		if (w > wait)
			wait = w;
	}
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

int64_t
limit_last_attempt(const struct limit_state *s)
{
	int64_t last = 0;

	if (s->ring_cap > 0 && s->ring_len > 0)
		return limit_ring_at(s, s->ring_len - 1);
	for (int i = 0; i < LIMIT_BUCKETS; i++)
		if (s->buckets[i].count > 0 && (int64_t)s->buckets[i].second * 1000 > last)
			last = (int64_t)s->buckets[i].second * 1000;
	return last;
}

/* Whether a key out until cooldown_until is limited (429) rather than
 * cooling (503): an upstream's rate limit or spent quota is. */
static bool
limit_key_limited(const struct limit_state *s)
{
	return s->key_state == STORE_KEY_COOLING || s->key_state == STORE_KEY_EXHAUSTED;
}

/* Of the keys of each group with room, keeps only the one used least
 * recently (the first in order on a tie). */
static void
limit_least_recent(const struct limit_state *const *st, const struct store_endpoint *eps, size_t n,
		   bool *room)
{
	for (size_t i = 0; i < n; i++) {
		if (!room[i] || eps[i].group == 0)
			continue;
		int64_t last = limit_last_attempt(st[i]);
		for (size_t j = i + 1; j < n; j++) {
			if (!room[j] || eps[j].group != eps[i].group)
				continue;
			int64_t lj = limit_last_attempt(st[j]);
			if (lj < last) {
				room[i] = false;
				break;
			}
			room[j] = false;
		}
	}
}

size_t
limit_look(const struct limit_state *const *st, const struct store_endpoint *eps, size_t n,
	   const struct limit_now *now, bool *room, struct store_reservation *res)
{
	int64_t min_wait = -1, min_cool = -1;
	enum store_key_state why_wait = STORE_KEY_ACTIVE, why_cool = STORE_KEY_ACTIVE;
	size_t have_room = 0;
	bool grouped = false;

	for (size_t i = 0; i < n; i++) {
		const struct limit_state *s = st[i];
		room[i] = false;
		if (s->paused != 0)
			continue;
		if (s->cooldown_until > now->ms) {
			int64_t w = s->cooldown_until - now->ms;
			if (limit_key_limited(s)) {
				if (min_wait < 0 || w < min_wait) {
					min_wait = w;
					why_wait = (enum store_key_state)s->key_state;
				}
			} else if (min_cool < 0 || w < min_cool) {
				min_cool = w;
				why_cool = (enum store_key_state)s->key_state;
			}
			continue;
		}
		int64_t w = limit_wait_ms(s, &eps[i], now);
		if (eps[i].model != NULL) {
			struct store_endpoint m = limit_model_endpoint(&eps[i]);
			int64_t wm = limit_wait_ms(st[n + i], &m, now);
			if (wm > w)
				w = wm;
		}
		if (w > 0) {
			if (min_wait < 0 || w < min_wait) {
				min_wait = w;
				why_wait = STORE_KEY_ACTIVE;
			}
			continue;
		}
		room[i] = true;
		have_room++;
		grouped |= eps[i].group != 0;
	}
	if (have_room > 0) {
		if (!grouped)
			return have_room;
		limit_least_recent(st, eps, n, room);
		have_room = 0;
		for (size_t i = 0; i < n; i++)
			have_room += room[i];
		return have_room;
	}
	if (min_wait >= 0) {
		/* A cooling endpoint may free before a limited one does. */
		if (min_cool >= 0 && min_cool < min_wait) {
			min_wait = min_cool;
			why_wait = why_cool;
		}
		res->verdict = STORE_LIMITED;
		res->retry_after_s = limit_retry_after_s(min_wait);
		res->reason = why_wait;
	} else if (min_cool >= 0) {
		res->verdict = STORE_COOLING;
		res->retry_after_s = limit_retry_after_s(min_cool);
		res->reason = why_cool;
	} else {
		/* Every candidate is paused (rule 31). */
		res->verdict = STORE_COOLING;
		res->retry_after_s = LIMIT_PAUSED_RETRY_S;
		res->reason = STORE_KEY_PAUSED;
	}
	return 0;
}

bool
limit_count_attempt(struct limit_state *s, const struct limit_now *now)
{
	int64_t now_ms = now->ms, now_s = now_ms / 1000;
	struct limit_bucket *b = &s->buckets[now_s % LIMIT_BUCKETS];
	bool recheck = s->key_state == STORE_KEY_REJECTED && s->cooldown_until <= now_ms;

	if (s->day != now->day) {
		s->day = now->day;
		s->day_count = 0;
	}
	if (b->second != (uint32_t)now_s) {
		b->second = (uint32_t)now_s;
		b->count = 0;
	}
	if (recheck)
		s->cooldown_until = now_ms + (s->recheck_ms > 0 ? s->recheck_ms : LIMIT_RECHECK_MS);
	b->count++;
	s->day_count++;
	s->attempts++;
	if (s->ring_cap == 0)
		return recheck;
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
	return recheck;
}

void
limit_count_tokens(struct limit_state *s, long long estimate, const struct limit_now *now)
{
	if (estimate <= 0)
		return;
	limit_tok_put(s, now->ms, estimate);
	if (s->est_day != now->day) {
		s->est_day = now->day;
		s->day_est = 0;
	}
	s->day_est = limit_add_tokens(s->day_est, estimate);
}

/* sum - sub, at least 0. */
static int64_t
limit_sub_tokens(int64_t sum, long long sub)
{
	return sum > sub ? sum - sub : 0;
}

/* Rule 24: the estimate leaves the second and the day it was reserved in
 * (when they are still held), the answer's total joins now's second. */
static void
limit_settle_tokens(struct limit_state *s, const struct store_outcome *o,
		    const struct limit_now *now)
{
	if (o->estimate > 0) {
		int64_t sec = o->est_ms / 1000;
		int i = (int)(sec % LIMIT_BUCKETS);
		if (s->tok_sec[i] == sec)
			s->tok_count[i] = limit_sub_tokens(s->tok_count[i], o->estimate);
		if (s->est_day == o->est_day)
			s->day_est = limit_sub_tokens(s->day_est, o->estimate);
	}
	if (o->has_usage)
		limit_tok_put(s, now->ms, o->total_tokens);
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

/* The charge of an outcome: a key's state, or the failure run. */
static void
limit_charge(struct limit_state *s, const struct store_outcome *o, const struct store_cooldown *cd,
	     const struct limit_now *now)
{
	switch (o->charge) {
	case STORE_CHARGE_NONE:
		return;
	case STORE_CHARGE_LIMITED:
		s->key_state = STORE_KEY_COOLING;
		s->cooldown_until = o->until_ms > now->ms ? o->until_ms : now->ms + 1000;
		return;
	case STORE_CHARGE_EXHAUSTED:
		s->key_state = STORE_KEY_EXHAUSTED;
		s->cooldown_until = now->ms + now->to_midnight(now->zone, now->ms);
		return;
	case STORE_CHARGE_REJECTED:
		s->key_state = STORE_KEY_REJECTED;
		s->recheck_ms =
			cd->recheck_s > 0 ? (int64_t)cd->recheck_s * 1000 : LIMIT_RECHECK_MS;
		s->cooldown_until = now->ms + s->recheck_ms;
		return;
	case STORE_CHARGE_FORBIDDEN:
	case STORE_CHARGE_RUN:
		break;
	}
	if (o->charge == STORE_CHARGE_RUN && o->success) {
		s->fail_run = 0;
		s->cooldown_until = 0;
		s->key_state = STORE_KEY_ACTIVE;
		return;
	}
	s->fail_run++;
	/* A rejected key stays out until its recheck, whatever its endpoint does. */
	if (s->key_state == STORE_KEY_REJECTED)
		return;
	if (cd->failures > 0 && s->fail_run >= cd->failures && cd->seconds > 0) {
		int64_t until = now->ms + (int64_t)cd->seconds * 1000;
		/* A key out for longer on an upstream's word (a 429's wait, a
		 * spent day) stays out as long, and says why. */
		if (s->key_state != STORE_KEY_ACTIVE && s->key_state != STORE_KEY_FAILING &&
		    s->cooldown_until > until)
			return;
		s->cooldown_until = until;
		s->key_state =
			o->charge == STORE_CHARGE_FORBIDDEN ? STORE_KEY_FAILING : STORE_KEY_ACTIVE;
	}
}

/* An attempt's outcome in its history bucket (rules 32 and 33). Only an
 * attempt has a class: the other records (a charge settled later, a
 * sibling key's failure run, a model's or a client's entry, a recheck)
 * are no request of their own. An upstream 429 counts as that, not as a
 * failure; a success is a 2xx answer: a 4xx the client caused, passed on,
 * is no failure of the endpoint's (o->success: it ends a failure run) but
 * a failure here. */
static void
limit_history(struct limit_state *s, const struct store_outcome *o, const struct limit_now *now)
{
	uint32_t add[HISTORY_FIELDS] = {0};

	if ((unsigned)o->code_class >= STORE_CLASS_N)
		return;
	add[HISTORY_REQUESTS] = 1;
	if (o->charge == STORE_CHARGE_LIMITED || o->charge == STORE_CHARGE_EXHAUSTED)
		add[HISTORY_LIMITED] = 1;
	else if (o->success && o->code_class == STORE_CLASS_2XX)
		add[HISTORY_SUCCESSES] = 1;
	else
		add[HISTORY_FAILURES] = 1;
	if (o->has_usage && o->total_tokens > 0)
		add[HISTORY_TOKENS] = history_add32(0, (uint64_t)o->total_tokens);
	if (o->latency_ms > 0)
		add[HISTORY_LATENCY_MS] = history_add32(0, (uint64_t)o->latency_ms);
	history_add(&s->hist, now->ms, add);
}

void
limit_record(struct limit_state *s, const struct store_outcome *o, const struct store_cooldown *cd,
	     const struct limit_now *now)
{
	limit_charge(s, o, cd, now);
	limit_settle_tokens(s, o, now);
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
	if (o->estimated)
		s->est_answers++;
	limit_hist_put(s->lat, &s->lat_count, &s->lat_sum_ms, o->latency_ms);
	limit_hist_put(s->ttfb, &s->ttfb_count, &s->ttfb_sum_ms, o->ttfb_ms);
	limit_history(s, o, now);
}

void
limit_record_refusals(struct limit_state *s, long long n, int64_t now_ms)
{
	uint32_t add[HISTORY_FIELDS] = {0};

	if (n <= 0)
		return;
	add[HISTORY_REFUSED] = history_add32(0, (uint64_t)n);
	history_add(&s->hist, now_ms, add);
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
	    const struct limit_now *now_local, struct store_usage *u)
{
	struct limit_now at = limit_now_in(now_local, ep->zone);
	const struct limit_now *now = &at;

	memset(u, 0, sizeof(*u));
	u->rpm_used = limit_rpm_used(s, now->ms);
	u->rpd_used = limit_rpd_used(s, now);
	u->tpm_used = limit_tpm_used(s, now->ms);
	u->tpd_used = limit_tpd_used(s, now);
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
	u->estimated_answers = s->est_answers;
	for (size_t k = 0; k < STORE_CLASS_N; k++)
		u->answers[k] = s->answers[k];
	limit_hist_get(&u->latency, s->lat, s->lat_count, s->lat_sum_ms);
	limit_hist_get(&u->ttfb, s->ttfb, s->ttfb_count, s->ttfb_sum_ms);
	/* Never counted: left zeroed, as the rest of a state never seen. */
	if (s->hist.newest != 0) {
		u->history = s->hist;
		history_at(&u->history, history_minute(now->ms));
	}
	int64_t w = limit_wait_ms(s, ep, now);
	u->free_in_s = w > 0 ? limit_retry_after_s(w) : 0;
	u->paused = (unsigned)s->paused;
	if (s->key_state == STORE_KEY_REJECTED) {
		u->key_state = STORE_KEY_REJECTED;
		u->key_until = s->cooldown_until;
	} else if (s->cooldown_until > now->ms) {
		/* Cooling after the endpoint's failures: as after its own. */
		u->key_state = s->key_state == STORE_KEY_ACTIVE
				       ? STORE_KEY_FAILING
				       : (enum store_key_state)s->key_state;
		u->key_until = s->cooldown_until;
	}
}

static void
limit_hist_add(struct store_hist *sum, const struct store_hist *h)
{
	for (size_t i = 0; i < STORE_HIST_N; i++)
		sum->bucket[i] += h->bucket[i];
	sum->count += h->count;
	sum->sum_ms = limit_add_tokens(sum->sum_ms, h->sum_ms);
}

void
limit_usage_add(struct store_usage *sum, const struct store_usage *k, bool first)
{
	if (first) {
		*sum = *k;
		return;
	}
	sum->rpm_used += k->rpm_used;
	sum->rpd_used += k->rpd_used;
	sum->tpm_used = limit_add_tokens(sum->tpm_used, k->tpm_used);
	sum->tpd_used = limit_add_tokens(sum->tpd_used, k->tpd_used);
	if (k->fail_run > sum->fail_run)
		sum->fail_run = k->fail_run;
	/* Room comes from the keys that are not cooling (while every key
	 * cools, the endpoint does, and the first to free counts). */
	bool all_cooling = sum->cooldown_until != 0, cooling = k->cooldown_until != 0;
	if (all_cooling && !cooling)
		sum->free_in_s = k->free_in_s;
	else if (all_cooling == cooling && k->free_in_s < sum->free_in_s)
		sum->free_in_s = k->free_in_s;
	/* Cooling while every key is: until the first frees. */
	if (sum->cooldown_until == 0 || k->cooldown_until == 0)
		sum->cooldown_until = 0;
	else if (k->cooldown_until < sum->cooldown_until)
		sum->cooldown_until = k->cooldown_until;
	sum->prompt_tokens = limit_add_tokens(sum->prompt_tokens, k->prompt_tokens);
	sum->completion_tokens = limit_add_tokens(sum->completion_tokens, k->completion_tokens);
	sum->total_tokens = limit_add_tokens(sum->total_tokens, k->total_tokens);
	sum->day_prompt_tokens = limit_add_tokens(sum->day_prompt_tokens, k->day_prompt_tokens);
	sum->day_completion_tokens =
		limit_add_tokens(sum->day_completion_tokens, k->day_completion_tokens);
	sum->day_total_tokens = limit_add_tokens(sum->day_total_tokens, k->day_total_tokens);
	sum->requests += k->requests;
	if (k->last_used > sum->last_used)
		sum->last_used = k->last_used;
	sum->attempts += k->attempts;
	sum->retries += k->retries;
	sum->estimated_answers += k->estimated_answers;
	for (size_t i = 0; i < STORE_CLASS_N; i++)
		sum->answers[i] += k->answers[i];
	limit_hist_add(&sum->latency, &k->latency);
	limit_hist_add(&sum->ttfb, &k->ttfb);
	history_sum(&sum->history, &k->history);
	if (k->key_state == STORE_KEY_ACTIVE)
		sum->key_state = STORE_KEY_ACTIVE;
	/* Paused while every key is: each mark that all of them carry. */
	sum->paused &= k->paused;
}

void
limit_admin(struct limit_state *s, enum store_admin action, const struct limit_now *now)
{
	switch (action) {
	case STORE_ADMIN_PAUSE_KEY:
		s->paused |= STORE_PAUSED_KEY;
		return;
	case STORE_ADMIN_RESUME_KEY:
		s->paused &= ~(int64_t)STORE_PAUSED_KEY;
		return;
	case STORE_ADMIN_PAUSE_ENDPOINT:
		s->paused |= STORE_PAUSED_ENDPOINT;
		return;
	case STORE_ADMIN_RESUME_ENDPOINT:
		s->paused &= ~(int64_t)STORE_PAUSED_ENDPOINT;
		return;
	case STORE_ADMIN_END_COOLDOWN:
		/* A rejected key waits for its recheck: STORE_ADMIN_RECHECK. */
		s->fail_run = 0;
		if (s->key_state == STORE_KEY_REJECTED)
			return;
		s->cooldown_until = 0;
		s->key_state = STORE_KEY_ACTIVE;
		return;
	case STORE_ADMIN_RECHECK:
		if (s->key_state == STORE_KEY_REJECTED && s->cooldown_until > now->ms)
			s->cooldown_until = now->ms;
		return;
	}
}

void
limit_reset_tokens(struct limit_state *s)
{
	s->prompt = s->completion = s->total = 0;
	s->requests = 0;
	s->last_used = 0;
}

/* Unit tests of the limit rules (src/limit.h), called directly on a state
 * the test builds, at times it chooses, in a calendar of its own: days are
 * UTC days, so "local midnight" is a multiple of 86 400 000 ms and no time
 * zone is read. A table per rule; each row one case, named. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "limit.h"

#define DAY_MS INT64_C(86400000)
/* 2024-03-10 12:00:00 UTC: noon of the test calendar's day 19792. */
#define T0 INT64_C(1710072000000)
#define MIDNIGHT (T0 + DAY_MS / 2)
#define MIN_MS INT64_C(60000)

static int64_t
test_to_midnight(const struct tz_zone *zone, int64_t ms)
{
	(void)zone;
	return DAY_MS - ms % DAY_MS;
}

static struct limit_now
at(int64_t ms)
{
	struct limit_now now = {ms, (long)(ms / DAY_MS), test_to_midnight, NULL};
	return now;
}

/* A state with a ring of room for every rpm, as the stores hold one. */
struct held {
	struct limit_state s;
	uint32_t ring[LIMIT_RING_MAX];
};

static void
held_init(struct held *h)
{
	memset(h, 0, sizeof(*h));
	h->s.ring = h->ring;
}

/* n attempts under rpm, from first, step ms apart: as a reservation counts. */
static void
attempts(struct held *h, long rpm, int n, int64_t first, int64_t step)
{
	for (int i = 0; i < n; i++) {
		struct limit_now now = at(first + i * step);
		limit_fit_ring(&h->s, rpm, now.ms);
		limit_count_attempt(&h->s, &now);
	}
}

/* --- RPM ring and buckets, RPD, waits, the clock set back ---
 * doc/behaviour.md, Limits and state, rules 1-4, 6, 8 and 13. */

struct count_case {
	const char *name;
	long rpm, rpd;
	int n;               /* attempts */
	int64_t first, step; /* their times */
	int64_t query;       /* when the state is looked at */
	long rpm_used, rpd_used;
	int64_t wait;
};

static const struct count_case count_cases[] = {
	{"ring: rpm attempts at one instant fill it", 3, -1, 3, T0, 0, T0, 3, 3, MIN_MS},
	{"ring: one under the limit has room", 3, -1, 2, T0, 0, T0, 2, 2, 0},
	{"ring: the window slides after 60 s", 3, -1, 3, T0, 0, T0 + MIN_MS, 0, 3, 0},
	{"ring: the window holds 60 s less 1 ms", 3, -1, 3, T0, 0, T0 + MIN_MS - 1, 3, 3, 1},
	{"ring: spread attempts free oldest first", 3, -1, 3, T0, 10000, T0 + 30000, 3, 3, 30000},
	{"ring: rpm 1000 is exact", 1000, -1, 1000, T0, 30, T0 + 30000, 1000, 1000, 30000},
	{"buckets: above rpm 1000", 2000, -1, 2000, T0, 0, T0, 2000, 2000, 61000},
	{"buckets: one under the limit has room", 2000, -1, 1999, T0, 0, T0, 1999, 1999, 0},
	{"buckets: hold back early, never late", 1001, -1, 1001, T0 + 999, 0, T0 + 60500, 0, 1001,
	 500},
	{"buckets: gone after 61 s", 2000, -1, 2000, T0, 0, T0 + 61000, 0, 2000, 0},
	{"unlimited: rpm and rpd -1", -1, -1, 5, T0, 0, T0, 5, 5, 0},
	{"rpm 0 waits for midnight", 0, -1, 0, T0, 0, T0, 0, 0, DAY_MS / 2},
	{"rpd 0 waits for midnight", -1, 0, 0, T0, 0, T0 + 1000, 0, 0, DAY_MS / 2 - 1000},
	{"rpd: reached waits for midnight", -1, 2, 2, T0, 0, T0 + 1000, 2, 2, DAY_MS / 2 - 1000},
	{"rpd: and rpm, the later wins", 2, 2, 2, MIDNIGHT - 1000, 0, MIDNIGHT - 500, 2, 2,
	 MIN_MS - 500},
	{"rpd: rolls over at midnight", -1, 2, 2, MIDNIGHT - 1000, 0, MIDNIGHT, 2, 0, 0},
	{"rpd: one before midnight still the day", -1, 2, 2, MIDNIGHT - 1000, 0, MIDNIGHT - 1, 2, 2,
	 1},
	{"clock back within a window: now", 2, -1, 2, T0, 0, T0 - 30000, 2, 2, MIN_MS},
	{"clock back beyond a window: gone", 2, -1, 2, T0, 0, T0 - 2 * MIN_MS, 2, 2, 0},
};

static void
test_counts_and_waits(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(count_cases) / sizeof(count_cases[0]); i++) {
		const struct count_case *c = &count_cases[i];
		const struct store_endpoint ep = {"a", c->rpm, c->rpd, 0, -1, -1, 0, NULL, NULL};
		struct limit_now q = at(c->query);
		struct held h;

		held_init(&h);
		attempts(&h, c->rpm, c->n, c->first, c->step);
		long rpm_used = limit_rpm_used(&h.s, q.ms), rpd_used = limit_rpd_used(&h.s, &q);
		int64_t wait = limit_wait_ms(&h.s, &ep, &q);
		if (rpm_used != c->rpm_used || rpd_used != c->rpd_used || wait != c->wait)
			fail_msg("%s: rpm_used %ld (want %ld), rpd_used %ld (want %ld), wait %lld "
				 "(want %lld)",
				 c->name, rpm_used, c->rpm_used, rpd_used, c->rpd_used,
				 (long long)wait, (long long)c->wait);
	}
}

/* The clock set back far: the ring is rebased, its times ahead of now
 * clamped to now, and counting goes on from there. */
static void
test_clock_set_back_rebases_the_ring(void **state)
{
	const struct store_endpoint ep = {"a", 3, -1, 0, -1, -1, 0, NULL, NULL};
	struct held h;

	(void)state;
	held_init(&h);
	attempts(&h, 3, 2, T0, 0);
	attempts(&h, 3, 1, T0 - 10 * MIN_MS, 0);
	assert_int_equal(h.s.ring_base, T0 - 11 * MIN_MS);
	struct limit_now q = at(T0 - 10 * MIN_MS);
	/* Two clamped to the new now, one made now: full for a window. */
	assert_int_equal(limit_rpm_used(&h.s, q.ms), 3);
	assert_int_equal(limit_wait_ms(&h.s, &ep, &q), MIN_MS);
	q = at(T0 - 9 * MIN_MS);
	assert_int_equal(limit_wait_ms(&h.s, &ep, &q), 0);
}

/* --- The ring resized: Limits and state, rule 5 --- */

struct fit_case {
	const char *name;
	long rpm_before, rpm_after;
	int n;
	int64_t query;
	long rpm_used;
	int64_t wait; /* under rpm_after */
};

static const struct fit_case fit_cases[] = {
	{"shrunk keeps the newest", 5, 2, 5, T0 + 4000, 2, MIN_MS - 1000},
	{"grown counts unseen attempts from buckets", 2, 5, 5, T0 + 4000, 5, 57000},
	{"set after unlimited counts earlier attempts", -1, 3, 3, T0 + 4000, 3, 57000},
	{"to unlimited: buckets only", 3, -1, 3, T0 + 4000, 3, 0},
};

static void
test_ring_resized(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(fit_cases) / sizeof(fit_cases[0]); i++) {
		const struct fit_case *c = &fit_cases[i];
		const struct store_endpoint ep = {"a", c->rpm_after, -1, 0, -1, -1, 0, NULL, NULL};
		struct limit_now q = at(c->query);
		struct held h;

		held_init(&h);
		attempts(&h, c->rpm_before, c->n, T0, 1000);
		limit_fit_ring(&h.s, c->rpm_after, q.ms);
		assert_int_equal(h.s.ring_cap, limit_ring_cap_for(c->rpm_after));
		long used = limit_rpm_used(&h.s, q.ms);
		int64_t wait = limit_wait_ms(&h.s, &ep, &q);
		if (used != c->rpm_used || wait != c->wait)
			fail_msg("%s: rpm_used %ld (want %ld), wait %lld (want %lld)", c->name,
				 used, c->rpm_used, (long long)wait, (long long)c->wait);
	}
}

/* A full ring wrapped around (head in the middle) shrinks to its newest. */
static void
test_ring_shrunk_after_wrapping_keeps_order(void **state)
{
	struct held h;

	(void)state;
	held_init(&h);
	attempts(&h, 4, 6, T0, 1000); /* head at 2: T0+2s .. T0+5s */
	assert_int_equal(h.s.ring_head, 2);
	limit_fit_ring(&h.s, 3, T0 + 6000);
	assert_int_equal(h.s.ring_len, 3);
	assert_int_equal(h.s.ring_head, 0);
	for (uint32_t i = 0; i < 3; i++)
		assert_int_equal(h.s.ring_base + h.s.ring[i], T0 + 3000 + 1000 * (int64_t)i);
}

/* --- Retry-After: Limits and state, rule 9 --- */

static void
test_retry_after_rounds_up_to_whole_seconds_at_least_1(void **state)
{
	static const struct {
		int64_t ms;
		long s;
	} cases[] = {{-5, 1},   {0, 1},      {1, 1},      {999, 1},       {1000, 1},
		     {1001, 2}, {59999, 60}, {60000, 60}, {DAY_MS, 86400}};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (limit_retry_after_s(cases[i].ms) != cases[i].s)
			fail_msg("%lld ms: %ld s, want %ld", (long long)cases[i].ms,
				 limit_retry_after_s(cases[i].ms), cases[i].s);
}

/* --- The reserve verdict: Limits and state, rules 2 and 7 --- */

struct look_case {
	const char *name;
	long rpm[2];
	int n[2];             /* attempts on each at T0 */
	int64_t cool_left[2]; /* ms of cooldown left at the look; 0 none */
	size_t have;          /* candidates with room */
	bool room[2];
	enum store_verdict verdict; /* when none has */
	long retry_after_s;
};

static const struct look_case look_cases[] = {
	{"both have room", {2, 2}, {1, 0}, {0, 0}, 2, {true, true}, STORE_RESERVED, 0},
	{"one limited, one has room", {2, 2}, {2, 0}, {0, 0}, 1, {false, true}, STORE_RESERVED, 0},
	{"one cooling, one has room",
	 {2, 2},
	 {0, 0},
	 {5000, 0},
	 1,
	 {false, true},
	 STORE_RESERVED,
	 0},
	{"both limited: the sooner", {2, 3}, {2, 3}, {0, 0}, 0, {false, false}, STORE_LIMITED, 59},
	{"both cooling: the sooner",
	 {2, 2},
	 {0, 0},
	 {5000, 2500},
	 0,
	 {false, false},
	 STORE_COOLING,
	 3},
	{"limited and cooling sooner: limited, cooling's wait",
	 {2, 2},
	 {2, 0},
	 {0, 1200},
	 0,
	 {false, false},
	 STORE_LIMITED,
	 2},
	{"limited and cooling later: limited, its wait",
	 {2, 2},
	 {2, 0},
	 {0, 90000},
	 0,
	 {false, false},
	 STORE_LIMITED,
	 59},
	{"cooling later and limited: the limited one's wait",
	 {2, 2},
	 {0, 2},
	 {90000, 0},
	 0,
	 {false, false},
	 STORE_LIMITED,
	 59},
};

static void
test_look_verdicts(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(look_cases) / sizeof(look_cases[0]); i++) {
		const struct look_case *c = &look_cases[i];
		struct store_endpoint eps[2] = {{"a", c->rpm[0], -1, 0, -1, -1, 0, NULL, NULL},
						{"b", c->rpm[1], -1, 0, -1, -1, 0, NULL, NULL}};
		struct limit_now q = at(T0 + 1000);
		struct held h[2];
		const struct limit_state *st[2] = {&h[0].s, &h[1].s};
		struct store_reservation res = {.verdict = STORE_RESERVED};
		bool room[2];

		for (int k = 0; k < 2; k++) {
			held_init(&h[k]);
			attempts(&h[k], c->rpm[k], c->n[k], T0, 0);
			if (c->cool_left[k] > 0)
				h[k].s.cooldown_until = q.ms + c->cool_left[k];
		}
		size_t have = limit_look(st, eps, 2, &q, room, &res);
		if (have != c->have || room[0] != c->room[0] || room[1] != c->room[1])
			fail_msg("%s: %zu with room (%d %d)", c->name, have, room[0], room[1]);
		if (have == 0 &&
		    (res.verdict != c->verdict || res.retry_after_s != c->retry_after_s))
			fail_msg("%s: verdict %d retry %ld (want %d, %ld)", c->name, res.verdict,
				 res.retry_after_s, c->verdict, c->retry_after_s);
	}
}

/* --- Outcomes, the failure run and cooldowns: Limits and state, rule 10 --- */

struct run_case {
	const char *name;
	const char *outcomes; /* 'f' failure, 's' success, one a second from T0 */
	struct store_cooldown cd;
	long fail_run;
	int64_t cooldown_until;
};

static const struct run_case run_cases[] = {
	{"failures under cd.failures start none", "ff", {3, 30, 0}, 2, 0},
	{"cd.failures in a row start one", "fff", {3, 30, 0}, 3, T0 + 2000 + 30000},
	{"each failure beyond extends it", "ffff", {3, 30, 0}, 4, T0 + 3000 + 30000},
	{"a success clears the run", "ffsf", {3, 30, 0}, 1, 0},
	{"a success ends a cooldown", "fffs", {3, 30, 0}, 0, 0},
	{"zero seconds disables it", "fffff", {3, 0, 0}, 5, 0},
	{"zero failures disables it", "fffff", {0, 30, 0}, 5, 0},
	{"one failure, cd 1", "f", {1, 10, 0}, 1, T0 + 10000},
	{"after one ended, one more failure starts the next", "fff", {2, 1, 0}, 3, T0 + 3000},
};

static void
test_failure_run_and_cooldown(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(run_cases) / sizeof(run_cases[0]); i++) {
		const struct run_case *c = &run_cases[i];
		struct held h;

		held_init(&h);
		for (size_t k = 0; c->outcomes[k] != '\0'; k++) {
			struct store_outcome o = {
				.success = c->outcomes[k] == 's', .latency_ms = -1, .ttfb_ms = -1};
			struct limit_now now = at(T0 + 1000 * (int64_t)k);
			limit_record(&h.s, &o, &c->cd, &now);
		}
		if (h.s.fail_run != c->fail_run || h.s.cooldown_until != c->cooldown_until)
			fail_msg("%s: run %lld until %lld (want %ld, %lld)", c->name,
				 (long long)h.s.fail_run, (long long)h.s.cooldown_until,
				 c->fail_run, (long long)c->cooldown_until);
	}
}

/* A cooldown holds until its last millisecond and ends by itself. */
static void
test_cooldown_expires(void **state)
{
	const struct store_endpoint ep = {"a", -1, -1, 0, -1, -1, 0, NULL, NULL};
	const struct store_cooldown cd = {1, 30, 0};
	struct store_outcome fail = {.latency_ms = -1, .ttfb_ms = -1};
	struct held h;
	const struct limit_state *st = &h.s;
	struct store_reservation res;
	struct store_usage u;
	bool room;

	(void)state;
	held_init(&h);
	struct limit_now now = at(T0);
	limit_record(&h.s, &fail, &cd, &now);
	now = at(T0 + 29999);
	assert_int_equal(limit_look(&st, &ep, 1, &now, &room, &res), 0);
	assert_int_equal(res.verdict, STORE_COOLING);
	assert_int_equal(res.retry_after_s, 1);
	limit_usage(&h.s, &ep, &now, &u);
	assert_int_equal(u.cooldown_until, T0 + 30000);
	now = at(T0 + 30000);
	assert_int_equal(limit_look(&st, &ep, 1, &now, &room, &res), 1);
	assert_true(room);
	limit_usage(&h.s, &ep, &now, &u);
	assert_int_equal(u.cooldown_until, 0);
	assert_int_equal(u.fail_run, 1);
}

/* --- An operator's pause and actions: Limits and state, rule 31 --- */

/* A paused candidate never has room, whatever else it has; with only paused
 * ones the verdict is COOLING for LIMIT_PAUSED_RETRY_S, beside a limited one
 * LIMITED with its wait. An endpoint reads paused while every key is. */
static void
test_paused_never_has_room(void **state)
{
	struct store_endpoint eps[2] = {{"a", 1, -1, 0, -1, -1, 0, NULL, NULL},
					{"b", 1, -1, 0, -1, -1, 0, NULL, NULL}};
	struct held h[2];
	const struct limit_state *st[2] = {&h[0].s, &h[1].s};
	struct store_reservation res;
	struct store_usage u[2], sum;
	bool room[2];

	(void)state;
	held_init(&h[0]);
	held_init(&h[1]);
	struct limit_now now = at(T0);
	limit_admin(&h[0].s, STORE_ADMIN_PAUSE_KEY, &now);
	assert_int_equal(limit_look(st, eps, 2, &now, room, &res), 1);
	assert_false(room[0]);
	assert_true(room[1]);
	limit_admin(&h[1].s, STORE_ADMIN_PAUSE_ENDPOINT, &now);
	assert_int_equal(limit_look(st, eps, 2, &now, room, &res), 0);
	assert_int_equal(res.verdict, STORE_COOLING);
	assert_int_equal(res.retry_after_s, LIMIT_PAUSED_RETRY_S);
	assert_int_equal(res.reason, STORE_KEY_PAUSED);
	/* b at its rpm instead: 429 with b's wait */
	limit_admin(&h[1].s, STORE_ADMIN_RESUME_ENDPOINT, &now);
	attempts(&h[1], 1, 1, T0, 0);
	assert_int_equal(limit_look(st, eps, 2, &now, room, &res), 0);
	assert_int_equal(res.verdict, STORE_LIMITED);
	assert_int_equal(res.retry_after_s, 60);
	/* the marks as read, and summed over an endpoint's keys */
	limit_admin(&h[1].s, STORE_ADMIN_PAUSE_ENDPOINT, &now);
	limit_admin(&h[0].s, STORE_ADMIN_PAUSE_ENDPOINT, &now);
	limit_usage(&h[0].s, &eps[0], &now, &u[0]);
	limit_usage(&h[1].s, &eps[1], &now, &u[1]);
	assert_int_equal(u[0].paused, STORE_PAUSED_KEY | STORE_PAUSED_ENDPOINT);
	assert_int_equal(u[1].paused, STORE_PAUSED_ENDPOINT);
	limit_usage_add(&sum, &u[0], true);
	limit_usage_add(&sum, &u[1], false);
	assert_int_equal(sum.paused, STORE_PAUSED_ENDPOINT);
	limit_admin(&h[0].s, STORE_ADMIN_RESUME_KEY, &now);
	assert_int_equal(h[0].s.paused, STORE_PAUSED_ENDPOINT);
}

/* Ending a cooldown clears the run and every wait but a rejection, which
 * a recheck brings forward to now instead. */
static void
test_admin_end_cooldown_and_recheck(void **state)
{
	const struct store_cooldown cd = {1, 30, 600};
	struct store_outcome o = {.latency_ms = -1, .ttfb_ms = -1};
	struct held h;
	struct limit_now now = at(T0);

	(void)state;
	held_init(&h);
	o.charge = STORE_CHARGE_RUN;
	limit_record(&h.s, &o, &cd, &now);
	assert_int_equal(h.s.cooldown_until, T0 + 30000);
	limit_admin(&h.s, STORE_ADMIN_END_COOLDOWN, &now);
	assert_int_equal(h.s.cooldown_until, 0);
	assert_int_equal(h.s.fail_run, 0);
	o.charge = STORE_CHARGE_EXHAUSTED;
	limit_record(&h.s, &o, &cd, &now);
	limit_admin(&h.s, STORE_ADMIN_END_COOLDOWN, &now);
	assert_int_equal(h.s.key_state, STORE_KEY_ACTIVE);
	assert_int_equal(h.s.cooldown_until, 0);
	o.charge = STORE_CHARGE_REJECTED;
	limit_record(&h.s, &o, &cd, &now);
	limit_admin(&h.s, STORE_ADMIN_END_COOLDOWN, &now);
	assert_int_equal(h.s.key_state, STORE_KEY_REJECTED);
	assert_int_equal(h.s.cooldown_until, T0 + 600000);
	now = at(T0 + 5000);
	limit_admin(&h.s, STORE_ADMIN_RECHECK, &now);
	assert_int_equal(h.s.cooldown_until, T0 + 5000);
	assert_true(limit_count_attempt(&h.s, &now));
	assert_int_equal(h.s.cooldown_until, T0 + 5000 + 600000);
}

/* --- Tokens: Limits and state, rule 12 (and the day of rule 6) --- */

struct token_case {
	const char *name;
	int64_t before; /* the total before */
	long long add;  /* reported */
	int64_t after;
};

static const struct token_case token_cases[] = {
	{"adds", 5, 7, 12},
	{"nothing for 0", 5, 0, 5},
	{"nothing for a negative count", 5, -3, 5},
	{"saturates at 2^60", LIMIT_MAX_TOKENS - 1, 2, LIMIT_MAX_TOKENS},
	{"stays saturated", LIMIT_MAX_TOKENS, 1, LIMIT_MAX_TOKENS},
	{"a huge report saturates", 0, INT64_MAX, LIMIT_MAX_TOKENS},
	{"exactly to 2^60", LIMIT_MAX_TOKENS - 2, 2, LIMIT_MAX_TOKENS},
};

static void
test_token_saturation(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(token_cases) / sizeof(token_cases[0]); i++) {
		const struct token_case *c = &token_cases[i];
		int64_t got = limit_add_tokens(c->before, c->add);
		if (got != c->after)
			fail_msg("%s: %lld (want %lld)", c->name, (long long)got,
				 (long long)c->after);
	}
}

/* Every token counter of a record saturates alike (written once). */
static void
test_record_saturates_every_token_counter(void **state)
{
	const struct store_cooldown cd = {0, 0, 0};
	struct store_outcome o = {.success = true,
				  .has_usage = true,
				  .prompt_tokens = LLONG_MAX,
				  .completion_tokens = LIMIT_MAX_TOKENS,
				  .total_tokens = 3,
				  .latency_ms = -1,
				  .ttfb_ms = -1};
	struct limit_now now = at(T0);
	struct held h;

	(void)state;
	held_init(&h);
	h.s.total = LIMIT_MAX_TOKENS - 1;
	limit_record(&h.s, &o, &cd, &now);
	limit_record(&h.s, &o, &cd, &now);
	assert_int_equal(h.s.prompt, LIMIT_MAX_TOKENS);
	assert_int_equal(h.s.completion, LIMIT_MAX_TOKENS);
	assert_int_equal(h.s.total, LIMIT_MAX_TOKENS);
	assert_int_equal(h.s.day_prompt, LIMIT_MAX_TOKENS);
	assert_int_equal(h.s.day_completion, LIMIT_MAX_TOKENS);
	assert_int_equal(h.s.day_total, 6);
}

struct day_case {
	const char *name;
	int64_t first, second; /* two records of 1/2/3 tokens */
	int64_t query;
	long long day_total, total;
};

static const struct day_case day_cases[] = {
	{"same day adds", T0, T0 + 1000, T0 + 2000, 6, 6},
	{"a new day starts from 0", MIDNIGHT - 1, MIDNIGHT, MIDNIGHT, 3, 6},
	{"read on a later day: none today", T0, T0, MIDNIGHT, 0, 6},
	{"read the day before midnight", T0, MIDNIGHT - 1, MIDNIGHT - 1, 6, 6},
};

static void
test_day_tokens_roll_over_at_midnight(void **state)
{
	const struct store_endpoint ep = {"a", -1, -1, 0, -1, -1, 0, NULL, NULL};
	const struct store_cooldown cd = {0, 0, 0};
	struct store_outcome o = {.success = true,
				  .has_usage = true,
				  .prompt_tokens = 1,
				  .completion_tokens = 2,
				  .total_tokens = 3,
				  .latency_ms = -1,
				  .ttfb_ms = -1};

	(void)state;
	for (size_t i = 0; i < sizeof(day_cases) / sizeof(day_cases[0]); i++) {
		const struct day_case *c = &day_cases[i];
		struct limit_now t1 = at(c->first), t2 = at(c->second), q = at(c->query);
		struct store_usage u;
		struct held h;

		held_init(&h);
		limit_record(&h.s, &o, &cd, &t1);
		limit_record(&h.s, &o, &cd, &t2);
		limit_usage(&h.s, &ep, &q, &u);
		if (u.day_total_tokens != c->day_total || u.total_tokens != c->total)
			fail_msg("%s: day %lld total %lld (want %lld, %lld)", c->name,
				 u.day_total_tokens, u.total_tokens, c->day_total, c->total);
	}
}

/* --- Requests, metrics, a reset, reading: Limits and state, rules 11, 14
 * and 15 --- */

static void
test_record_counts_requests_classes_retries_and_latency(void **state)
{
	const struct store_cooldown cd = {0, 0, 0};
	const struct store_outcome outs[] = {
		{.success = true,
		 .served = true,
		 .code_class = STORE_CLASS_2XX,
		 .latency_ms = 50,
		 .ttfb_ms = 51},
		{.code_class = STORE_CLASS_5XX, .retry = true, .latency_ms = 300001, .ttfb_ms = -1},
		{.code_class = STORE_CLASS_NONE, .retry = true, .latency_ms = -1, .ttfb_ms = -1},
		{.code_class = STORE_CLASS_N, .latency_ms = -1, .ttfb_ms = -1}, /* not a class */
	};
	struct held h;

	(void)state;
	held_init(&h);
	for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) {
		struct limit_now now = at(T0 + (int64_t)i);
		limit_record(&h.s, &outs[i], &cd, &now);
	}
	assert_int_equal(h.s.requests, 1);
	assert_int_equal(h.s.last_used, T0);
	assert_int_equal(h.s.retries, 2);
	assert_int_equal(h.s.answers[STORE_CLASS_2XX], 1);
	assert_int_equal(h.s.answers[STORE_CLASS_5XX], 1);
	assert_int_equal(h.s.answers[STORE_CLASS_NONE], 1);
	assert_int_equal(h.s.lat[0], 1);
	assert_int_equal(h.s.lat_count, 2); /* 300 001 ms: beyond the last bucket */
	assert_int_equal(h.s.lat_sum_ms, 300051);
	assert_int_equal(h.s.ttfb[1], 1);
	assert_int_equal(h.s.ttfb_count, 1);
}

static void
test_hist_index(void **state)
{
	static const struct {
		int64_t ms;
		size_t i;
	} cases[] = {{0, 0},   {50, 0},      {51, 1},      {100, 1},
		     {101, 2}, {299999, 11}, {300000, 11}, {300001, STORE_HIST_N}};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (limit_hist_index(cases[i].ms) != cases[i].i)
			fail_msg("%lld ms: bucket %zu, want %zu", (long long)cases[i].ms,
				 limit_hist_index(cases[i].ms), cases[i].i);
}

static void
test_reset_zeroes_totals_and_keeps_the_rest(void **state)
{
	const struct store_cooldown cd = {1, 30, 0};
	struct store_outcome o = {.served = true,
				  .has_usage = true,
				  .prompt_tokens = 1,
				  .completion_tokens = 2,
				  .total_tokens = 3,
				  .code_class = STORE_CLASS_2XX,
				  .latency_ms = 10,
				  .ttfb_ms = -1};
	struct limit_now now = at(T0);
	struct held h;

	(void)state;
	held_init(&h);
	attempts(&h, 5, 2, T0, 0);
	limit_record(&h.s, &o, &cd, &now);
	limit_reset_tokens(&h.s);
	assert_int_equal(h.s.prompt + h.s.completion + h.s.total, 0);
	assert_int_equal(h.s.requests, 0);
	assert_int_equal(h.s.last_used, 0);
	/* The day's tokens, the limits, the run and the metrics stay. */
	assert_int_equal(h.s.day_total, 3);
	assert_int_equal(h.s.day_count, 2);
	assert_int_equal(limit_rpm_used(&h.s, T0), 2);
	assert_int_equal(h.s.fail_run, 1);
	assert_int_equal(h.s.cooldown_until, T0 + 30000);
	assert_int_equal(h.s.attempts, 2);
	assert_int_equal(h.s.answers[STORE_CLASS_2XX], 1);
	assert_int_equal(h.s.lat_count, 1);
}

/* The usage a status page reads: free_in_s rounds the wait up. */
static void
test_usage_free_in_rounds_up(void **state)
{
	const struct store_endpoint ep = {"a", 2, -1, 0, -1, -1, 0, NULL, NULL};
	struct store_usage u;
	struct held h;

	(void)state;
	held_init(&h);
	attempts(&h, 2, 2, T0, 0);
	struct limit_now now = at(T0 + 1500);
	limit_usage(&h.s, &ep, &now, &u);
	assert_int_equal(u.free_in_s, 59);
	assert_int_equal(u.rpm_used, 2);
	assert_int_equal(u.rpd_used, 2);
	now = at(T0 + MIN_MS);
	limit_usage(&h.s, &ep, &now, &u);
	assert_int_equal(u.free_in_s, 0);
}

/* --- Key pools: doc/behaviour.md, Key pools --- */

/* Each charge on a key, then the key as a reservation and a status read
 * see it. Outcomes: r run failure, s success, l 429 until +5 s (L +100 s),
 * x daily quota, j 401, f 403, n nobody; one a second from T0. */
struct charge_case {
	const char *name;
	const char *outcomes;
	long fail_run;
	int64_t until; /* cooldown_until, 0 none */
	enum store_key_state shown;
	bool room;                  /* at the last outcome's time + 1 s */
	enum store_verdict verdict; /* without room */
};

#define LAST(n) (T0 + ((n)-1) * 1000)
static const struct charge_case charge_cases[] = {
	{"a 429 cools the key, no run", "l", 0, LAST(1) + 5000, STORE_KEY_COOLING, false,
	 STORE_LIMITED},
	{"a daily quota until local midnight", "x", 0, MIDNIGHT, STORE_KEY_EXHAUSTED, false,
	 STORE_LIMITED},
	{"a 401 rejects until the recheck", "j", 0, LAST(1) + 600000, STORE_KEY_REJECTED, false,
	 STORE_COOLING},
	{"403s under cd.failures: a run, no cooldown", "ff", 2, 0, STORE_KEY_ACTIVE, true, 0},
	{"403s at cd.failures: the key fails", "fff", 3, LAST(3) + 30000, STORE_KEY_FAILING, false,
	 STORE_COOLING},
	{"the endpoint's failures", "rrr", 3, LAST(3) + 30000, STORE_KEY_FAILING, false,
	 STORE_COOLING},
	{"a 403 and endpoint failures share the run", "frr", 3, LAST(3) + 30000, STORE_KEY_FAILING,
	 false, STORE_COOLING},
	{"nobody's 4xx changes nothing", "ffnn", 2, 0, STORE_KEY_ACTIVE, true, 0},
	{"nobody's 4xx does not end a cooling", "ln", 0, T0 + 5000, STORE_KEY_COOLING, false,
	 STORE_LIMITED},
	{"a success brings a key back", "ls", 0, 0, STORE_KEY_ACTIVE, true, 0},
	{"a success ends a rejection (the recheck's)", "js", 0, 0, STORE_KEY_ACTIVE, true, 0},
	{"endpoint failures leave a rejected key rejected", "jrrr", 3, T0 + 600000,
	 STORE_KEY_REJECTED, false, STORE_COOLING},
	{"a 429 after a run keeps the run", "rrl", 2, LAST(3) + 5000, STORE_KEY_COOLING, false,
	 STORE_LIMITED},
	{"endpoint failures do not shorten a longer 429 wait", "Lrrr", 3, T0 + 100000,
	 STORE_KEY_COOLING, false, STORE_LIMITED},
	{"nor a spent day", "xrrr", 3, MIDNIGHT, STORE_KEY_EXHAUSTED, false, STORE_LIMITED},
	{"a shorter 429 wait gives way to the endpoint's cooldown", "lrrr", 3, LAST(4) + 30000,
	 STORE_KEY_FAILING, false, STORE_COOLING},
};

static void
test_key_charges(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(charge_cases) / sizeof(charge_cases[0]); k++) {
		const struct charge_case *c = &charge_cases[k];
		const struct store_cooldown cd = {3, 30, 600};
		const struct store_endpoint ep = {"a", -1, -1, 0, -1, -1, 0, NULL, NULL};
		struct held h;
		int64_t t = T0;

		held_init(&h);
		for (const char *o = c->outcomes; *o != '\0'; o++, t += 1000) {
			struct store_outcome out = {
				.code_class = STORE_CLASS_N, .latency_ms = -1, .ttfb_ms = -1};
			switch (*o) {
			case 'r':
				out.charge = STORE_CHARGE_RUN;
				break;
			case 's':
				out.charge = STORE_CHARGE_RUN;
				out.success = true;
				break;
			case 'l':
			case 'L':
				out.charge = STORE_CHARGE_LIMITED;
				out.until_ms = t + (*o == 'L' ? 100000 : 5000);
				break;
			case 'x':
				out.charge = STORE_CHARGE_EXHAUSTED;
				break;
			case 'j':
				out.charge = STORE_CHARGE_REJECTED;
				break;
			case 'f':
				out.charge = STORE_CHARGE_FORBIDDEN;
				break;
			default:
				out.charge = STORE_CHARGE_NONE;
			}
			struct limit_now now = at(t);
			limit_record(&h.s, &out, &cd, &now);
		}
		struct limit_now now = at(t);
		struct store_usage u;
		limit_usage(&h.s, &ep, &now, &u);
		const struct limit_state *st[1] = {&h.s};
		bool room[1];
		struct store_reservation res = {.verdict = STORE_RESERVED};
		size_t n = limit_look(st, &ep, 1, &now, room, &res);
		if (h.s.fail_run != c->fail_run || h.s.cooldown_until != c->until ||
		    u.key_state != c->shown || (n == 1) != c->room ||
		    (!c->room && res.verdict != c->verdict))
			fail_msg("%s: run %lld until %+lld shown %d room %zu verdict %d; want %ld "
				 "%+lld %d %d %d",
				 c->name, (long long)h.s.fail_run,
				 (long long)(h.s.cooldown_until ? h.s.cooldown_until - T0 : 0),
				 (int)u.key_state, n, (int)res.verdict, c->fail_run,
				 (long long)(c->until ? c->until - T0 : 0), (int)c->shown, c->room,
				 (int)c->verdict);
	}
}

/* A rejected key's recheck falls due after its period: the reservation
 * that counts on it claims it (the next one a period later), once. */
static void
test_recheck_claimed_once(void **state)
{
	const struct store_cooldown cd = {3, 30, 60};
	const struct store_outcome rejected = {.charge = STORE_CHARGE_REJECTED,
					       .code_class = STORE_CLASS_N,
					       .latency_ms = -1,
					       .ttfb_ms = -1};
	const struct store_endpoint ep = {"a", 5, -1, 0, -1, -1, 0, NULL, NULL};
	const struct limit_state *st[1];
	struct store_reservation res = {.verdict = STORE_RESERVED};
	struct held h;
	bool room[1];

	(void)state;
	held_init(&h);
	st[0] = &h.s;
	struct limit_now now = at(T0);
	limit_record(&h.s, &rejected, &cd, &now);
	now = at(T0 + 59999);
	assert_int_equal(limit_look(st, &ep, 1, &now, room, &res), 0);
	assert_int_equal(res.reason, STORE_KEY_REJECTED);
	assert_int_equal(res.retry_after_s, 1);
	now = at(T0 + 60000);
	assert_int_equal(limit_look(st, &ep, 1, &now, room, &res), 1);
	limit_fit_ring(&h.s, ep.rpm, now.ms);
	assert_true(limit_count_attempt(&h.s, &now));
	/* Claimed: no other step gets it until the next period. */
	assert_int_equal(limit_look(st, &ep, 1, &now, room, &res), 0);
	assert_int_equal(h.s.cooldown_until, T0 + 120000);
	now = at(T0 + 120000);
	assert_int_equal(limit_look(st, &ep, 1, &now, room, &res), 1);
	/* A key in rotation is never a recheck. */
	struct held k;
	held_init(&k);
	assert_false(limit_count_attempt(&k.s, &now));
}

/* Of the keys of one group with room, only the least recently used is
 * offered; on a tie the first; a key without room is no candidate. */
static void
test_least_recently_used_key_of_each_group(void **state)
{
	const struct store_endpoint eps[] = {
		{"a0", 10, -1, 1, -1, -1, 0, NULL, NULL}, {"a1", 10, -1, 1, -1, -1, 0, NULL, NULL},
		{"a2", 10, -1, 1, -1, -1, 0, NULL, NULL}, {"b", 10, -1, 0, -1, -1, 0, NULL, NULL},
		{"c0", 1, -1, 3, -1, -1, 0, NULL, NULL},  {"c1", 1, -1, 3, -1, -1, 0, NULL, NULL}};
	struct held h[6];
	const struct limit_state *st[6];
	struct store_reservation res;
	bool room[6];

	(void)state;
	for (size_t i = 0; i < 6; i++) {
		held_init(&h[i]);
		st[i] = &h[i].s;
	}
	/* Fresh: the first of each group. */
	struct limit_now now = at(T0);
	assert_int_equal(limit_look(st, eps, 6, &now, room, &res), 3);
	assert_true(room[0] && !room[1] && !room[2] && room[3] && room[4] && !room[5]);
	attempts(&h[0], 10, 1, T0, 0);
	attempts(&h[2], 10, 1, T0 + 10, 0);
	attempts(&h[4], 1, 1, T0, 0); /* c0 full (rpm 1) */
	now = at(T0 + 20);
	assert_int_equal(limit_look(st, eps, 6, &now, room, &res), 3);
	assert_true(!room[0] && room[1] && !room[2] && room[3] && !room[4] && room[5]);
	attempts(&h[1], 10, 1, T0 + 20, 0);
	now = at(T0 + 30);
	limit_look(st, eps, 6, &now, room, &res);
	assert_true(room[0] && !room[1] && !room[2]);
	assert_int_equal(limit_last_attempt(&h[1].s), T0 + 20);
}

/* An endpoint's usage is the sum over its keys. */
static void
test_usage_sum_over_keys(void **state)
{
	struct store_usage a = {.rpm_used = 2,
				.rpd_used = 5,
				.fail_run = 1,
				.cooldown_until = 9000,
				.requests = 3,
				.last_used = 100,
				.free_in_s = 4,
				.attempts = 5,
				.key_state = STORE_KEY_COOLING};
	struct store_usage b = {.rpm_used = 1,
				.rpd_used = 7,
				.fail_run = 2,
				.cooldown_until = 0,
				.requests = 4,
				.last_used = 50,
				.free_in_s = 0,
				.attempts = 7};
	struct store_usage sum;

	(void)state;
	a.answers[STORE_CLASS_2XX] = 3;
	b.answers[STORE_CLASS_2XX] = 4;
	a.latency.bucket[1] = 2;
	b.latency.bucket[1] = 1;
	limit_usage_add(&sum, &a, true);
	assert_int_equal(sum.cooldown_until, 9000);
	limit_usage_add(&sum, &b, false);
	assert_int_equal(sum.rpm_used, 3);
	assert_int_equal(sum.rpd_used, 12);
	assert_int_equal(sum.fail_run, 2);
	assert_int_equal(sum.cooldown_until, 0); /* b serves */
	assert_int_equal(sum.requests, 7);
	assert_int_equal(sum.last_used, 100);
	assert_int_equal(sum.free_in_s, 0);
	assert_int_equal(sum.attempts, 12);
	assert_int_equal(sum.answers[STORE_CLASS_2XX], 7);
	assert_int_equal(sum.latency.bucket[1], 3);
	struct store_usage c = a;
	c.cooldown_until = 7000;
	limit_usage_add(&sum, &a, true);
	limit_usage_add(&sum, &c, false);
	assert_int_equal(sum.cooldown_until, 7000); /* cooling until the first frees */
	/* A cooling key's room is no room: one cooling with room, one limited
	 * for 30 s is an endpoint free in 30 s, in either order. */
	struct store_usage limited = {.free_in_s = 30};
	struct store_usage cool = {.cooldown_until = 9000, .free_in_s = 0};
	limit_usage_add(&sum, &cool, true);
	limit_usage_add(&sum, &limited, false);
	assert_int_equal(sum.cooldown_until, 0);
	assert_int_equal(sum.free_in_s, 30);
	limit_usage_add(&sum, &limited, true);
	limit_usage_add(&sum, &cool, false);
	assert_int_equal(sum.free_in_s, 30);
}

/* --- Token limits (doc/behaviour.md, Limits and state, rules 22 to 25) --- */

/* One reservation of an estimate at a time: an attempt and its tokens, as
 * a store's reserve step counts them (rule 22). */
struct tok_res {
	int64_t at;
	long long estimate;
};

static void
tok_reserve(struct held *h, const struct tok_res *r)
{
	struct limit_now now = at(r->at);
	limit_fit_ring(&h->s, -1, now.ms);
	limit_count_attempt(&h->s, &now);
	limit_count_tokens(&h->s, r->estimate, &now);
}

/* Rule 23 (and 2): the wait of an estimate under tpm after earlier
 * reservations, none recorded yet. */
static void
test_tpm_window(void **state)
{
	static const struct {
		const char *name;
		long tpm;
		struct tok_res before[4];
		size_t n;
		int64_t query;
		long long estimate;
		int64_t wait;
		long long used; /* usage.tpm at query */
	} cases[] = {
		{"rule 23: an empty window admits one estimate above tpm",
		 1000,
		 {{0, 0}},
		 0,
		 T0,
		 5000,
		 0,
		 0},
		{"rule 23: within tpm",
		 1000,
		 {{T0, 300}, {T0, 300}, {T0, 300}},
		 3,
		 T0,
		 100,
		 0,
		 900},
		{"rule 23: 300 each under 1000 admits 3: the 4th waits for their second",
		 1000,
		 {{T0, 300}, {T0, 300}, {T0, 300}},
		 3,
		 T0 + 500,
		 300,
		 60500,
		 900},
		{"rule 23: the oldest seconds leave first, until the rest fits",
		 1000,
		 {{T0, 600}, {T0 + 10000, 300}},
		 2,
		 T0 + 20000,
		 300,
		 41000,
		 900},
		{"rule 23: 61 whole seconds: held back under a second early",
		 1000,
		 {{T0, 1000}},
		 1,
		 T0 + MIN_MS,
		 1,
		 1000,
		 0},
		{"rule 23: gone after 61 s", 1000, {{T0, 1000}}, 1, T0 + 61000, 1000, 0, 0},
		{"rule 23: a lone estimate above tpm waits for an empty window",
		 1000,
		 {{T0, 10}},
		 1,
		 T0 + 1000,
		 5000,
		 60000,
		 10},
		{"rule 2: tpm 0 waits for midnight", 0, {{0, 0}}, 0, T0, 0, DAY_MS / 2, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct held h;
		held_init(&h);
		for (size_t k = 0; k < cases[i].n; k++)
			tok_reserve(&h, &cases[i].before[k]);
		const struct store_endpoint ep = {
			"a", -1, -1, 0, cases[i].tpm, -1, cases[i].estimate, NULL, NULL};
		struct limit_now q = at(cases[i].query);
		print_message("%s\n", cases[i].name);
		assert_int_equal(limit_wait_ms(&h.s, &ep, &q), cases[i].wait);
		assert_int_equal(limit_tpm_used(&h.s, q.ms), cases[i].used);
	}
}

/* Rule 24: recording replaces the estimate by the answer's total, or
 * releases it; an estimate never recorded leaves with its second. */
static void
test_tokens_replaced_or_released(void **state)
{
	static const struct {
		const char *name;
		int64_t recorded; /* < 0: never */
		bool has_usage;
		long long total;
		int64_t query;
		long long tpm_used, tpd_used;
	} cases[] = {
		{"rule 24: the answer's total replaces the estimate", T0 + 2000, true, 50,
		 T0 + 3000, 50, 50},
		{"rule 24: a failed attempt releases it", T0 + 2000, false, 0, T0 + 3000, 0, 0},
		{"rule 24: an answer longer than estimated counts as it came", T0 + 2000, true, 900,
		 T0 + 3000, 900, 900},
		{"rule 24: never recorded, the estimate leaves with its second", -1, false, 0,
		 T0 + 61000, 0, 300},
		{"rule 24: never recorded, the day's estimate leaves with its day", -1, false, 0,
		 MIDNIGHT, 0, 0},
		{"rule 24: recorded after its second left, only the total counts", T0 + 70000, true,
		 40, T0 + 70000, 40, 40},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct held h;
		held_init(&h);
		const struct tok_res r = {T0, 300};
		tok_reserve(&h, &r);
		if (cases[i].recorded >= 0) {
			struct limit_now rec = at(cases[i].recorded);
			const struct store_outcome o = {.success = cases[i].has_usage,
							.has_usage = cases[i].has_usage,
							.total_tokens = cases[i].total,
							.estimate = 300,
							.est_ms = T0,
							.est_day = at(T0).day,
							.code_class = STORE_CLASS_N,
							.latency_ms = -1,
							.ttfb_ms = -1};
			const struct store_cooldown cd = {0, 0, 0};
			limit_record(&h.s, &o, &cd, &rec);
		}
		struct limit_now q = at(cases[i].query);
		print_message("%s\n", cases[i].name);
		assert_int_equal(limit_tpm_used(&h.s, q.ms), cases[i].tpm_used);
		assert_int_equal(limit_tpd_used(&h.s, &q), cases[i].tpd_used);
	}
}

/* Rule 24: an answer whose tokens were its estimate (a stream served
 * without usage) is counted as such, once per recording; its tokens count
 * as any answer's; the count is read by limit_usage, summed over keys by
 * limit_usage_add and kept by a token reset (a metrics' counter). */
static void
test_estimated_answers_counted(void **state)
{
	static const struct {
		const char *name;
		bool estimated;
		long long want;
	} cases[] = {
		{"an answer with its own usage is not counted", false, 0},
		{"an answer counted from its estimate is", true, 1},
	};
	const struct store_endpoint ep = {"a", -1, -1, 0, 1000, -1, 0, NULL, NULL};
	const struct store_cooldown cd = {0, 0, 0};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct held h;
		held_init(&h);
		const struct tok_res r = {T0, 300};
		tok_reserve(&h, &r);
		struct limit_now rec = at(T0 + 1000);
		const struct store_outcome o = {.success = true,
						.served = true,
						.has_usage = true,
						.estimated = cases[i].estimated,
						.total_tokens = 300,
						.estimate = 300,
						.est_ms = T0,
						.est_day = at(T0).day,
						.code_class = STORE_CLASS_2XX,
						.latency_ms = -1,
						.ttfb_ms = -1};
		limit_record(&h.s, &o, &cd, &rec);
		print_message("%s\n", cases[i].name);
		struct store_usage u, sum;
		limit_usage(&h.s, &ep, &rec, &u);
		assert_int_equal(u.estimated_answers, cases[i].want);
		assert_int_equal(u.tpm_used, 300);
		limit_reset_tokens(&h.s);
		limit_usage(&h.s, &ep, &rec, &u);
		assert_int_equal(u.estimated_answers, cases[i].want);
		limit_usage_add(&sum, &u, true);
		limit_usage_add(&sum, &u, false);
		assert_int_equal(sum.estimated_answers, 2 * cases[i].want);
	}
}

/* Rule 25: the day's tokens and estimates in flight under tpd. */
static void
test_tpd_day(void **state)
{
	static const struct {
		const char *name;
		long long answered; /* tokens of answers recorded at T0 */
		long long in_flight;
		int64_t query;
		long long estimate;
		int64_t wait;
	} cases[] = {
		{"rule 25: within tpd", 600, 300, T0 + 1000, 100, 0},
		{"rule 25: over tpd waits for midnight", 600, 300, T0 + 1000, 101,
		 DAY_MS / 2 - 1000},
		{"rule 25: a day without tokens admits one estimate above tpd", 0, 0, T0, 5000, 0},
		{"rule 25: rolls over at midnight", 900, 100, MIDNIGHT, 1000, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct held h;
		held_init(&h);
		struct limit_now t0 = at(T0);
		if (cases[i].answered > 0) {
			const struct store_outcome o = {.success = true,
							.has_usage = true,
							.total_tokens = cases[i].answered,
							.code_class = STORE_CLASS_N,
							.latency_ms = -1,
							.ttfb_ms = -1};
			const struct store_cooldown cd = {0, 0, 0};
			limit_record(&h.s, &o, &cd, &t0);
		}
		limit_count_tokens(&h.s, cases[i].in_flight, &t0);
		/* tpm far above: only the day decides. */
		const struct store_endpoint ep = {
			"a", -1, -1, 0, 1000000, 1000, cases[i].estimate, NULL, NULL};
		struct limit_now q = at(cases[i].query);
		print_message("%s\n", cases[i].name);
		assert_int_equal(limit_wait_ms(&h.s, &ep, &q), cases[i].wait);
	}
}

/* Rules 22 and 7: of 10 reservations of 300 at one instant under tpm 1000,
 * exactly 3 are admitted; the verdict of the rest is LIMITED. */
static void
test_tpm_admits_exactly(void **state)
{
	struct held h;
	const struct store_endpoint ep = {"a", -1, -1, 0, 1000, -1, 300, NULL, NULL};
	int admitted = 0;

	(void)state;
	held_init(&h);
	for (int i = 0; i < 10; i++) {
		const struct limit_state *st[1] = {&h.s};
		bool room[1];
		struct store_reservation res = {0};
		struct limit_now now = at(T0);
		if (limit_look(st, &ep, 1, &now, room, &res) == 0) {
			assert_int_equal(res.verdict, STORE_LIMITED);
			assert_int_equal(res.retry_after_s, 61);
			continue;
		}
		const struct tok_res r = {T0, 300};
		tok_reserve(&h, &r);
		admitted++;
	}
	assert_int_equal(admitted, 3);
}

/* Rule 27: a candidate with a model's state has room only when both
 * states have; its wait is the longer. Each row: the key's rpm and
 * attempts, the model's, what the verdict is. */
static void
test_look_model_limits(void **state)
{
	static const struct {
		const char *name;
		long key_rpm;
		int key_n;
		long model_rpm;
		int model_n;
		size_t have;
		long retry_after_s;
	} rows[] = {
		{"both with room", 5, 1, 2, 1, 1, 0},
		{"the model at its rpm", 5, 1, 1, 1, 0, 59},
		{"the key at its rpm, the model not", 1, 1, 5, 0, 0, 59},
		{"the model off (rpm 0): until midnight", -1, 0, 0, 0, 0, 43199},
		{"the model unlimited", 5, 4, -1, 1000, 1, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct store_model model = {"a\x1fm", rows[i].model_rpm, -1, -1, -1};
		const struct store_endpoint ep = {"a",  rows[i].key_rpm, -1, 0, -1, -1, 0,
						  NULL, &model};
		struct limit_now q = at(T0 + 1000);
		struct held key, mod;
		const struct limit_state *st[2] = {&key.s, &mod.s};
		struct store_reservation res = {.verdict = STORE_RESERVED};
		bool room[1];

		held_init(&key);
		held_init(&mod);
		attempts(&key, rows[i].key_rpm, rows[i].key_n, T0, 0);
		attempts(&mod, rows[i].model_rpm, rows[i].model_n, T0, 0);
		size_t have = limit_look(st, &ep, 1, &q, room, &res);
		if (have != rows[i].have || room[0] != (rows[i].have == 1))
			fail_msg("%s: %zu with room", rows[i].name, have);
		if (have == 0 &&
		    (res.verdict != STORE_LIMITED || res.retry_after_s != rows[i].retry_after_s))
			fail_msg("%s: verdict %d, Retry-After %ld", rows[i].name, (int)res.verdict,
				 res.retry_after_s);
	}
	/* The model's endpoint: its own id and limits, the key's estimate and
	 * zone, no group and no model of its own. */
	const struct store_model model = {"a\x1fm", 1, 2, 3, 4};
	const struct store_endpoint ep = {"a", 10, 20, 7, 30, 40, 99, NULL, &model};
	struct store_endpoint m = limit_model_endpoint(&ep);
	assert_string_equal(m.id, "a\x1fm");
	assert_true(m.rpm == 1 && m.rpd == 2 && m.tpm == 3 && m.tpd == 4);
	assert_true(m.estimate == 99 && m.group == 0 && m.model == NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counts_and_waits),
		cmocka_unit_test(test_clock_set_back_rebases_the_ring),
		cmocka_unit_test(test_ring_resized),
		cmocka_unit_test(test_ring_shrunk_after_wrapping_keeps_order),
		cmocka_unit_test(test_retry_after_rounds_up_to_whole_seconds_at_least_1),
		cmocka_unit_test(test_look_verdicts),
		cmocka_unit_test(test_failure_run_and_cooldown),
		cmocka_unit_test(test_cooldown_expires),
		cmocka_unit_test(test_paused_never_has_room),
		cmocka_unit_test(test_admin_end_cooldown_and_recheck),
		cmocka_unit_test(test_token_saturation),
		cmocka_unit_test(test_record_saturates_every_token_counter),
		cmocka_unit_test(test_day_tokens_roll_over_at_midnight),
		cmocka_unit_test(test_record_counts_requests_classes_retries_and_latency),
		cmocka_unit_test(test_hist_index),
		cmocka_unit_test(test_reset_zeroes_totals_and_keeps_the_rest),
		cmocka_unit_test(test_usage_free_in_rounds_up),
		cmocka_unit_test(test_key_charges),
		cmocka_unit_test(test_recheck_claimed_once),
		cmocka_unit_test(test_least_recently_used_key_of_each_group),
		cmocka_unit_test(test_usage_sum_over_keys),
		cmocka_unit_test(test_tpm_window),
		cmocka_unit_test(test_tokens_replaced_or_released),
		cmocka_unit_test(test_estimated_answers_counted),
		cmocka_unit_test(test_tpd_day),
		cmocka_unit_test(test_tpm_admits_exactly),
		cmocka_unit_test(test_look_model_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

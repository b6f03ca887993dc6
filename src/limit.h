/* limit: every rule of an endpoint's limits and state, written once.
 *
 * Pure functions over one endpoint's plain state (struct limit_state): no
 * I/O, no lock, no clock read, no allocation. The time is an argument
 * (struct limit_now). Both stores apply these and only these: the GDBM
 * store under its flock, the Redis store between a read of the states and
 * a compare-and-set of the one it changed. A rule changed here changes for
 * both.
 *
 * The rules (README, "Limits and state"):
 * - RPM: attempts in the last 60 s. Up to LIMIT_RING_MAX, exact from a ring
 *   of the times of the last rpm attempts; above, from whole-second buckets
 *   over 61 s, which can only hold back early (by under a second), never let
 *   one through. rpm -1 is unlimited, 0 never has room.
 * - RPD: attempts in the current local day, from 0 at local midnight;
 *   "local" is the endpoint's dayResetTimezone when it has one (rule 26).
 * - A model's limits on a key (rule 27): a second state, needing room and
 *   counted with the key's.
 * - Cooldown: cd.failures failures in a row start one of cd.seconds; a
 *   success ends it and clears the run.
 * - Tokens: totals and the local day's, saturating at LIMIT_MAX_TOKENS.
 * - TPM and TPD: tokens in the last 61 s and of the local day, estimates in
 *   flight included; a window without tokens admits any one estimate.
 * - The clock set back: times ahead of now count as now for one window at
 *   most.
 * - An operator's pause (rule 31): a paused key is never offered, whatever
 *   else its state says; the other actions of store_admin end a cooldown
 *   or bring a recheck forward.
 * - History (rules 32 to 36): an attempt's outcome in the bucket of its
 *   minute (history.h holds the buckets' own rules). */
#ifndef API_TOGETHER_LIMIT_H
#define API_TOGETHER_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "history.h"
#include "store.h"
#include "tz.h"

#define LIMIT_WINDOW_MS 60000
/* One more second than the window, so a bucket sum always covers it. */
#define LIMIT_BUCKETS 61
/* Limits up to this are enforced exactly, from the ring. */
#define LIMIT_RING_MAX 1000
/* Ring times are milliseconds after ring_base; rebased well before 2^32. */
#define LIMIT_REBASE_MS (INT64_C(1) << 31)
/* A rejected key's recheck period when none was given: 30 minutes. */
#define LIMIT_RECHECK_MS (INT64_C(30) * 60000)
/* Token totals (and histogram sums) saturate here. */
#define LIMIT_MAX_TOKENS (INT64_C(1) << 60)

struct limit_bucket {
	uint32_t second; /* since the epoch */
	uint32_t count;
};

/* One endpoint's state. A zeroed struct (ring NULL) is an endpoint never
 * seen. Only ring points elsewhere: the holder owns that memory (see
 * limit_fit_ring). From ring_base to hist the fields are 64 bits wide
 * and, hist (padding-free) included, in the order the state record stores
 * them (store_codec.c copies them as one block, and checks that they
 * are). */
struct limit_state {
	uint32_t *ring;     /* ring_cap times, ms after ring_base */
	uint32_t ring_cap;  /* limit_ring_cap_for(rpm) when last counted */
	uint32_t ring_len;  /* times held */
	uint32_t ring_head; /* index of the oldest */
	int64_t ring_base;
	int64_t ring_since; /* the ring was sized then: it knows nothing older */
	int64_t day;        /* local YYYYMMDD of day_count */
	int64_t day_count;
	int64_t fail_run;
	int64_t cooldown_until; /* ms; 0 none */
	int64_t prompt;
	int64_t completion;
	int64_t total;
	int64_t requests;
	int64_t last_used;
	int64_t attempts;
	struct limit_bucket buckets[LIMIT_BUCKETS];
	/* The metrics' counters (never reset). */
	int64_t retries;
	int64_t answers[STORE_CLASS_N];
	int64_t lat[STORE_HIST_N];
	int64_t lat_count;
	int64_t lat_sum_ms;
	int64_t ttfb[STORE_HIST_N];
	int64_t ttfb_count;
	int64_t ttfb_sum_ms;
	/* Tokens of the local day tok_day, apart from day: an answer can be
	 * recorded on another day than its attempt was counted. */
	int64_t tok_day;
	int64_t day_prompt;
	int64_t day_completion;
	int64_t day_total;
	/* A key's state (doc/behaviour.md, Key pools): why it is out until
	 * cooldown_until, an enum store_key_state; with STORE_KEY_REJECTED,
	 * cooldown_until is its next recheck, recheck_ms their period. */
	int64_t key_state;
	int64_t recheck_ms;
	/* Tokens per whole second over 61 s (rules 22 to 25): answers' totals
	 * and the estimates of attempts in flight, each in the second it was
	 * counted in, so an estimate never released (its process died) leaves
	 * the window with its second. est_day's estimates in flight apart:
	 * they leave the day with it. */
	int64_t tok_sec[LIMIT_BUCKETS];
	int64_t tok_count[LIMIT_BUCKETS];
	int64_t est_day;
	int64_t day_est;
	/* Answers whose tokens were their estimate (a stream served without
	 * usage, rule 24): a metrics' counter, never reset. */
	int64_t est_answers;
	/* An operator's pause (rule 31): STORE_PAUSED_* bits, 0 in rotation. */
	int64_t paused;
	/* The last hour in one-minute buckets (rules 32 to 36): last, apart
	 * from the 64-bit block (store_codec.c copies it as its own). */
	struct history hist;
};

/* The moment a rule is applied at. The calendar comes in with it so the
 * rules read no clock: day is the day of ms (YYYYMMDD) in zone (NULL: the
 * local one), to_midnight gives the milliseconds from ms to zone's next
 * midnight (called only when a day limit decides: it costs a mktime). The
 * stores fill it from tz.h; tests with a calendar of their own. */
struct limit_now {
	int64_t ms;
	long day;
	int64_t (*to_midnight)(const struct tz_zone *zone, int64_t ms);
	const struct tz_zone *zone;
};

/* now in the calendar of zone (an endpoint's dayResetTimezone, rule 26):
 * now itself when zone is now's, else the same moment read by tz.h. */
struct limit_now limit_now_in(const struct limit_now *now, const struct tz_zone *zone);

/* The ring capacity an endpoint of rpm uses: rpm for 1 to LIMIT_RING_MAX,
 * else 0 (buckets only). */
uint32_t limit_ring_cap_for(long rpm);

/* Resizes s's ring to limit_ring_cap_for(rpm), keeping the newest times,
 * in place: s->ring must have room for max(s->ring_cap, that) times (the
 * holder grows it first). Noticing a ring grown while the window holds
 * attempts it never saw, it counts from buckets until they are gone. */
void limit_fit_ring(struct limit_state *s, long rpm, int64_t now_ms);

/* Attempts in the last 60 s at now_ms: exact from a complete ring, else
 * from the buckets. */
long limit_rpm_used(const struct limit_state *s, int64_t now_ms);

/* Attempts in now's local day. */
long limit_rpd_used(const struct limit_state *s, const struct limit_now *now);

/* Tokens in the last 60 s at now_ms (answers' totals and estimates in
 * flight), as read for status pages. */
long long limit_tpm_used(const struct limit_state *s, int64_t now_ms);

/* Tokens of now's local day, estimates in flight included. */
long long limit_tpd_used(const struct limit_state *s, const struct limit_now *now);

/* Milliseconds until ep has RPM, RPD, TPM and TPD room at now for its
 * estimate; 0 when it has room.
 * Cooldowns are not looked at (limit_look does). */
int64_t limit_wait_ms(const struct limit_state *s, const struct store_endpoint *ep,
		      const struct limit_now *now);

/* Seconds for a Retry-After of ms: rounded up, at least 1. */
long limit_retry_after_s(int64_t ms);

/* The entry of ep's model (rule 27) as an endpoint of its own: its id and
 * limits, ep's estimate and zone. ep->model must be set. */
struct store_endpoint limit_model_endpoint(const struct store_endpoint *ep);

/* The reserve verdict over n candidates (st[i] the state of eps[i], and
 * st[n + i] that of eps[i].model when it has one: both need room): sets
 * room[i] for those not cooling down and with room (a rejected key whose
 * recheck is due has room: counting on it claims the recheck), of the keys
 * of one group only the one used least recently, and returns how many
 * have. A paused one never has (rule 31). With none, fills *res:
 * STORE_LIMITED when one is limited (by its RPM/RPD, an upstream 429 or a
 * spent daily quota; its Retry-After the smallest wait of all, cooling ones
 * included), else STORE_COOLING (the smallest cooldown left, or with only
 * paused ones LIMIT_PAUSED_RETRY_S and STORE_KEY_PAUSED); res->reason says
 * why the first to free is out. */
size_t limit_look(const struct limit_state *const *st, const struct store_endpoint *eps, size_t n,
		  const struct limit_now *now, bool *room, struct store_reservation *res);

/* Counts an attempt at now: its bucket, the day (new at local midnight),
 * the attempts counter and the ring (call limit_fit_ring first). On a
 * rejected key whose recheck is due it claims the recheck (the next one a
 * period later) and returns true: the attempt is that recheck. */
bool limit_count_attempt(struct limit_state *s, const struct limit_now *now);

/* Reserves estimate tokens (<= 0: nothing) at now: in now's second of the
 * token window and in the day's estimates in flight. Called with
 * limit_count_attempt, in the same step. */
void limit_count_tokens(struct limit_state *s, long long estimate, const struct limit_now *now);

/* The time of s's newest attempt (ms; 0 none): the ring's, else its
 * newest bucket's second. */
int64_t limit_last_attempt(const struct limit_state *s);

/* Records what an attempt came to: the charge (o->charge: the failure run
 * and cooldown, or a key's state; a success brings a key back), requests
 * and last_used, tokens (saturating; the day's from 0 on a new local day;
 * the answer's total into now's second of the token window, its estimate
 * released from where it was reserved),
 * the answer's class (none with STORE_CLASS_N), retries, the latency
 * histograms, with o->estimated the answers counted from their estimate,
 * and, for an attempt (a class other than STORE_CLASS_N), its history
 * bucket (rules 32 and 33). */
void limit_record(struct limit_state *s, const struct store_outcome *o,
		  const struct store_cooldown *cd, const struct limit_now *now);

/* Counts n refusals of the gateway's own (rule 34) in the history bucket
 * of now_ms: s is the gateway's row (STORE_GATEWAY_ID). */
void limit_record_refusals(struct limit_state *s, long long n, int64_t now_ms);

/* s as a status page reads it at now (under ep's limits). */
void limit_usage(const struct limit_state *s, const struct store_endpoint *ep,
		 const struct limit_now *now, struct store_usage *u);

/* Adds the usage of one key k into sum (an endpoint's: the sum over its
 * keys); first starts sum over. Counts add; the endpoint cools while each
 * key does (until the first frees), and has room when a key that does not
 * cool has (free_in_s the smallest of theirs). */
void limit_usage_add(struct store_usage *sum, const struct store_usage *k, bool first);

/* A reservation's Retry-After when every candidate is paused (rule 31): a
 * pause has no end, so a client is told to come back in a minute. */
#define LIMIT_PAUSED_RETRY_S 60

/* Applies an operator's action to s at now (rule 31). */
void limit_admin(struct limit_state *s, enum store_admin action, const struct limit_now *now);

/* Zeroes the token totals, requests and last_used; the day's tokens and
 * the metrics' counters stay. */
void limit_reset_tokens(struct limit_state *s);

/* sum + add within [sum, LIMIT_MAX_TOKENS]; add <= 0 adds nothing. */
int64_t limit_add_tokens(int64_t sum, long long add);

/* The histogram bucket of an attempt of ms >= 0: the first whose bound
 * (store_hist_bounds_ms) it does not exceed, STORE_HIST_N beyond the last. */
size_t limit_hist_index(int64_t ms);

#endif

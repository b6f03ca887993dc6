/* store: the shared counters of every endpoint (doc/behaviour.md, Limits
 * and state).
 *
 * One store is used by every process and thread of the responder (and, with
 * Redis, of every host behind one load balancer). Each call is atomic across
 * all of them. Implementations: store_gdbm.c (a GDBM file on this host, the
 * default) and store_redis.c (a Redis server); store.c picks one by the
 * address it is opened on. A handle is not thread-safe: each worker thread
 * opens its own. */
#ifndef API_TOGETHER_STORE_H
#define API_TOGETHER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynbuf.h"
#include "history.h"
#include "redis_addr.h"
#include "usage_book.h"

struct tz_zone;

struct store;

/* One endpoint as the store sees it. */
/* A model's own limits on a key (apis[].modelLimits; doc/behaviour.md,
 * Limits and state, rule 27): a second state, id, whose room the key needs
 * too and which is counted in the same atomic step as the key's. */
struct store_model {
	const char *id;
	long rpm, rpd, tpm, tpd; /* -1 unlimited, 0 off */
};

struct store_endpoint {
	const char *id;
	long rpm; /* -1 unlimited */
	long rpd; /* -1 unlimited */
	/* Candidates of one nonzero group are the keys of one endpoint: of
	 * those with room only the one used least recently is offered to the
	 * pick (doc/behaviour.md, Key pools). 0: alone. */
	size_t group;
	/* Token limits (doc/behaviour.md, Limits and state, rules 22 to 25):
	 * -1 unlimited, 0 out of service. */
	long tpm;
	long tpd;
	/* The tokens this request reserves on it (rule 22): 0 none. */
	long long estimate;
	/* Its days' calendar (dayResetTimezone, rule 26): NULL the local one. */
	const struct tz_zone *zone;
	/* The requested model's limits on it (rule 27): NULL none. */
	const struct store_model *model;
};

/* Why a key is out of rotation (doc/behaviour.md, Key pools). */
enum store_key_state {
	STORE_KEY_ACTIVE,    /* in rotation */
	STORE_KEY_COOLING,   /* an upstream 429: until its Retry-After */
	STORE_KEY_FAILING,   /* cooldown.failures failures in a row (403s, or the
				endpoint's own): cooldown.seconds */
	STORE_KEY_EXHAUSTED, /* a 429 of a spent daily quota: until the local midnight */
	STORE_KEY_REJECTED,  /* a 401: until a recheck answers 2xx */
	STORE_KEY_PAUSED,    /* paused by an operator (store_admin): never stored as
				a key's state, only a reservation's reason */
	STORE_KEY_STATE_N
};

enum store_verdict {
	STORE_RESERVED,      /* an attempt was counted on *chosen */
	STORE_LIMITED,       /* every candidate is at its RPM or RPD limit */
	STORE_COOLING,       /* every candidate is cooling down (none limited) */
	STORE_CLIENT_LIMITED /* the client is at its own limit: nothing counted */
};

/* Picks one of n candidates whose room[i] is true (at least one is).
 * Called within a step (GDBM: with the store locked; Redis: between the
 * read of the states and the compare-and-set of the chosen one's, which
 * counts only when that state is still as read, and else asks pick again
 * with the room now): it must be quick and must not call the store. */
typedef size_t (*store_pick_fn)(void *ctx, const bool *room, size_t n);

struct store_reservation {
	enum store_verdict verdict;
	size_t chosen;               /* with STORE_RESERVED */
	bool recheck;                /* with STORE_RESERVED: chosen is a rejected key whose
					recheck was due, claimed by this step (the attempt
					is the recheck, not the request) */
	long retry_after_s;          /* with STORE_LIMITED/COOLING: seconds until one frees, >= 1 */
	enum store_key_state reason; /* with STORE_LIMITED/COOLING: why the first to
					free is out (ACTIVE: its RPM/RPD limit or an
					endpoint's cooldown) */
	/* With STORE_RESERVED: the step's time and local day, which the
	 * attempt's outcome gives back (store_outcome.est_ms, est_day) so its
	 * estimate is released where it was reserved. */
	int64_t at_ms;
	long at_day;
};

/* The latency histograms' buckets: their upper bounds in ms, 50 ms to
 * 300 s (beyond the last, +Inf, is the count). Fixed: the stored record
 * holds a count per bucket. */
#define STORE_HIST_N 12
extern const long store_hist_bounds_ms[STORE_HIST_N];

/* An attempt's answer by status class: STORE_CLASS_NONE when no HTTP answer
 * came (refused, timed out, cut short before the status line). */
enum store_class {
	STORE_CLASS_NONE,
	STORE_CLASS_1XX,
	STORE_CLASS_2XX,
	STORE_CLASS_3XX,
	STORE_CLASS_4XX,
	STORE_CLASS_5XX,
	STORE_CLASS_N
};

/* Whom an attempt's outcome is charged to (doc/behaviour.md, Key pools). */
enum store_charge {
	STORE_CHARGE_RUN,       /* as before pools: a success clears the failure run,
				   a failure extends it (the endpoint's) */
	STORE_CHARGE_NONE,      /* nobody: run and cooldown unchanged */
	STORE_CHARGE_LIMITED,   /* a 429: the key cools until until_ms */
	STORE_CHARGE_EXHAUSTED, /* a 429 of a daily quota: the key is out until midnight */
	STORE_CHARGE_REJECTED,  /* a 401: the key is out until a recheck answers 2xx */
	STORE_CHARGE_FORBIDDEN  /* a 403: the key's failure run */
};

/* What one attempt came to. */
struct store_outcome {
	bool success; /* the endpoint answered usably: clears the failure run */
	enum store_charge charge;
	int64_t until_ms; /* with STORE_CHARGE_LIMITED */
	bool served;      /* a 2xx answer went to the client: counts in requests */
	bool has_usage;
	long long prompt_tokens;
	long long completion_tokens;
	long long total_tokens;
	/* The tokens above are the attempt's estimate, no usage having come
	 * (a stream served without it: doc/behaviour.md, Limits and state,
	 * rule 24); counted in store_usage.estimated_answers. */
	bool estimated;
	/* The estimate the attempt reserved (store_endpoint.estimate) and the
	 * reservation's at_ms and at_day: recording releases it (rule 24). */
	long long estimate;
	int64_t est_ms;
	long est_day;
	/* The endpoint's days' calendar (rule 26): NULL the local one. */
	const struct tz_zone *zone;
	/* For the metrics. */
	enum store_class code_class;
	bool retry;         /* not the request's first attempt */
	int64_t latency_ms; /* start of the attempt to the answer's last byte; < 0 none */
	int64_t ttfb_ms;    /* a stream's start to its first byte (status line); < 0 none */
	/* Usage per client (doc/behaviour.md, Limits and state: usage per
	 * client): with served, the answer is counted in client's book on
	 * the responder's local day under model (the one requested; NULL
	 * "-"), in the same atomic step. client NULL: in no book. */
	const char *client;
	const char *model;
};

/* Why the gateway refused a request itself, before or without an attempt. */
enum store_reject {
	STORE_REJECT_AUTH,       /* no or a wrong key: 401 */
	STORE_REJECT_BAD_INPUT,  /* a body or model it cannot forward: 4xx */
	STORE_REJECT_RATE_LIMIT, /* every candidate at its RPM/RPD limit: 429 */
	STORE_REJECT_COOLDOWN,   /* every candidate cooling down: 503 */
	STORE_REJECT_N
};

/* One latency histogram: counts per bucket (not cumulative; beyond the last
 * bound only in count), their sum in ms. */
struct store_hist {
	long long bucket[STORE_HIST_N];
	long long count;
	long long sum_ms;
};

struct store_cooldown {
	long failures; /* failures in a row that start a cooldown */
	long seconds;
	long recheck_s; /* how often a rejected key is rechecked; <= 0: 1800 */
};

/* One endpoint's state, as read for status pages. */
struct store_usage {
	long rpm_used;          /* attempts in the last 60 s */
	long rpd_used;          /* attempts today (local day) */
	long fail_run;          /* failures in a row */
	int64_t cooldown_until; /* ms; 0 when none */
	long long prompt_tokens;
	long long completion_tokens;
	long long total_tokens;
	/* Tokens of the current local day (as rpd_used's); store_reset_tokens
	 * keeps them: they count the day, not the time since a reset. */
	long long day_prompt_tokens;
	long long day_completion_tokens;
	long long day_total_tokens;
	long long requests; /* attempts whose 2xx answer went to the client */
	int64_t last_used;  /* ms of the last such answer; 0 never */
	long free_in_s;     /* seconds until it has RPM, RPD, TPM and TPD room; 0 has room */
	/* Tokens in the last 60 s and of the local day, answers' totals and
	 * estimates in flight together (rules 22 to 25). */
	long long tpm_used;
	long long tpd_used;
	/* Why the key is out, and until when (ms): ACTIVE once its time is
	 * over, but REJECTED until a recheck brings it back (key_until is then
	 * the next recheck). */
	enum store_key_state key_state;
	int64_t key_until;
	/* Paused by an operator (store_admin): STORE_PAUSED_* bits, 0 none.
	 * Independent of key_state, which a resume shows again. */
	unsigned paused;
	/* Counters for the metrics; never reset (store_reset_tokens keeps them). */
	long long attempts;               /* reserved */
	long long retries;                /* recorded with retry set */
	long long estimated_answers;      /* recorded with estimated set */
	long long answers[STORE_CLASS_N]; /* recorded, by class */
	struct store_hist latency, ttfb;
	/* The last hour in one-minute buckets, brought to the read's minute
	 * (doc/behaviour.md, Limits and state, rules 32 to 36). */
	struct history history;
};

/* The entry of the gateway's own history row (refusals, rule 34): no
 * endpoint, key, model or client id starts with a unit separator. */
#define STORE_GATEWAY_ID "\x1fgateway"

/* How a Redis store is reached beyond its address; the GDBM store has no use
 * for them. */
struct store_options {
	const char *prefix; /* of every key, so that gateways can share a Redis;
			       NULL or "": STORE_DEFAULT_PREFIX */
	long timeout_ms;    /* connect and command timeout; <= 0: STORE_DEFAULT_TIMEOUT_MS */
	bool readonly;      /* as store_open_readonly */
};

#define STORE_DEFAULT_PREFIX REDIS_DEFAULT_PREFIX
#define STORE_DEFAULT_TIMEOUT_MS REDIS_DEFAULT_TIMEOUT_MS

/* Opens the store at address: "redis://[[user]:password@]host[:port][/db]"
 * or "unix://[[user]:password@]/path.sock[?db=N]" is a Redis server, any
 * other string the path of a GDBM file, created (mode 0600) when missing.
 * A Redis store connects on its first call and again after any failure, by
 * itself; a GDBM file is checked at once. Returns NULL with a reason in err
 * when it cannot be used (an address that does not parse, a build without
 * Redis support, an unusable file). */
struct store *store_open(const char *address, char *err, size_t errlen);

/* As store_open, with options (o may be NULL). */
struct store *store_open_with(const char *address, const struct store_options *o, char *err,
			      size_t errlen);

/* Opens an existing store for store_read only, creating nothing: for
 * commands an operator runs as another user than the responder's. */
struct store *store_open_readonly(const char *address, char *err, size_t errlen);
void store_close(struct store *st);

/* The address this handle was opened on. A Redis address may hold a
 * password: it is not for logs (err strings never hold one). */
const char *store_path(const struct store *st);

/* True when st was opened on address with options o (NULL: defaults). */
bool store_matches(const struct store *st, const char *address, const struct store_options *o);

/* What the store is, for log lines: "state file" (GDBM) or "Redis store". */
const char *store_what(const struct store *st);

/* True when address names a Redis server (its scheme is redis://, rediss://
 * or unix://) rather than a GDBM file. */
bool store_is_redis(const char *address);

/* Checks a Redis address, and that this build can use it: 0, or -1 with the
 * reason (which never holds the password) in why. */
int store_redis_address_check(const char *address, char *why, size_t whylen);

/* Among the n endpoints, finds those not cooling down with RPM and RPD room
 * at now_ms, lets pick choose one and counts an attempt on it, all in one
 * atomic step. Returns 0 and fills *res, or -1 with err set when the store
 * cannot be read or written (then nothing was counted). */
int store_reserve(struct store *st, const struct store_endpoint *eps, size_t n, int64_t now_ms,
		  store_pick_fn pick, void *pick_ctx, struct store_reservation *res, char *err,
		  size_t errlen);

/* As store_reserve for a client with limits of its own (doc/behaviour.md,
 * Limits and state: client limits): client (NULL: none) is its entry, id,
 * rpm, rpd, tpm, tpd and the estimate, group 0. When it has no room now,
 * nothing is counted and res is STORE_CLIENT_LIMITED with the seconds until
 * it has; else the attempt and estimate are counted on it too, in the same
 * atomic step as on the chosen endpoint. */
int store_reserve_for(struct store *st, const struct store_endpoint *eps, size_t n,
		      const struct store_endpoint *client, int64_t now_ms, store_pick_fn pick,
		      void *pick_ctx, struct store_reservation *res, char *err, size_t errlen);

/* Records the outcome of an attempt on endpoint id: a success clears the run
 * of failures and adds usage; a failure extends the run and, at
 * cd->failures, starts a cooldown. Returns 0, or -1 with err set. */
int store_record(struct store *st, const char *id, const struct store_outcome *o,
		 const struct store_cooldown *cd, int64_t now_ms, char *err, size_t errlen);

/* Reads the state of n endpoints into out[0..n-1]. Returns 0, or -1 with err. */
int store_read(struct store *st, const struct store_endpoint *eps, size_t n, int64_t now_ms,
	       struct store_usage *out, char *err, size_t errlen);

/* Counts a request the gateway refused itself for reason: one atomic add
 * to this process's counts, no lock and no I/O, so a flood of refusals
 * cannot slow down reservations. The counts reach the store at the next
 * store_sync in this process (the main thread's, once a second; counts of a
 * process stopped before it are lost). st is not used. Returns 0, or -1 with
 * err for a reason that does not exist. */
int store_count(struct store *st, enum store_reject reason, char *err, size_t errlen);

/* Reads the refusal counts into out[0..STORE_REJECT_N-1]. Returns 0, or -1
 * with err. */
int store_read_rejects(struct store *st, long long *out, char *err, size_t errlen);

/* Zeroes the token totals, request counts and last_used of endpoint id, or
 * of every endpoint when id is NULL; attempt counters and the day's tokens
 * stay. Returns 0, or -1 with err. */
int store_reset_tokens(struct store *st, const char *id, char *err, size_t errlen);

/* An operator's action on one key's state (doc/behaviour.md, Limits and
 * state: an operator's pause; HTTP: admin actions). An endpoint's action is
 * its keys' each. */
enum store_admin {
	STORE_ADMIN_PAUSE_KEY,       /* out of rotation until resumed */
	STORE_ADMIN_RESUME_KEY,      /* undoes PAUSE_KEY */
	STORE_ADMIN_PAUSE_ENDPOINT,  /* the same, as its endpoint's: a mark of its own,
					so that resuming one of the two keeps the other */
	STORE_ADMIN_RESUME_ENDPOINT, /* undoes PAUSE_ENDPOINT */
	STORE_ADMIN_END_COOLDOWN,    /* a cooldown, a 429's wait or a spent day ends now,
					the failure run is cleared; a rejected key stays */
	STORE_ADMIN_RECHECK          /* a rejected key's recheck is due now: its next
					reservation is the recheck; others unchanged */
};

/* The bits of store_usage.paused. */
#define STORE_PAUSED_KEY 1u
#define STORE_PAUSED_ENDPOINT 2u

/* Applies action to the state of id at now_ms in one atomic step (the
 * state is created when it has none). Returns 0, or -1 with err set when
 * the store cannot be read or written (then nothing changed). */
int store_admin(struct store *st, const char *id, enum store_admin action, int64_t now_ms,
		char *err, size_t errlen);
/* One client's book, as store_read_clients gives it. */
struct store_client_usage {
	char *client; /* owned */
	struct usage_book book;
	/* Its stored book could not be read (damaged, or of a later format):
	 * book is empty, and the client's next served answer counts anew. One
	 * such book does not keep the others from being read. */
	bool damaged;
};

/* The books store_read_clients read: c[0..n) sorted by client. */
struct store_clients {
	size_t n;
	struct store_client_usage *c; /* in list */
	struct dynbuf list;
};

/* Frees what out holds and zeroes it (out may be zeroed only). */
void store_clients_free(struct store_clients *out);

/* Reads the usage book of client, or of every client with one when client
 * is NULL, into *out (zeroed first; a client without a book is none), days
 * older than the 30 before now_ms's local day left out. The caller frees
 * *out with store_clients_free, also on error. Returns 0, or -1 with err
 * (a damaged book is an error). */
int store_read_clients(struct store *st, const char *client, int64_t now_ms,
		       struct store_clients *out, char *err, size_t errlen);

/* Checks that the store can be read and written now, with no exclusive
 * lock while it can (GDBM: a shared read of the live copy and an access
 * check of the file; Redis: a read): /health is open to anyone. Returns 0,
 * or -1 with err. */
int store_check(struct store *st, char *err, size_t errlen);

/* Folds this process's store_count counts into the store, then brings the
 * durable copy up to the live one when it is behind (the GDBM store writes
 * its file at most this often; Redis has nothing more to do). Each process
 * calls it once a second. Counts that could not be folded are kept for the
 * next call. Returns 0, or -1 with err. */
int store_sync(struct store *st, char *err, size_t errlen);

#endif

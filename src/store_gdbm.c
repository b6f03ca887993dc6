/* The GDBM store: one database file shared by every process, guarded by an
 * exclusive flock on a lock file beside it ("PATH.lock").
 *
 * Each step opens the database after taking the lock, so the header it reads
 * is the one the last holder wrote, and releases the lock before closing, so
 * the fsync that gdbm_close always does runs outside the lock: the data is in
 * the page cache once gdbm_store returns, which is all another process needs
 * and all a killed process can lose (NOTES-fastcgi.md, GDBM). */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <gdbm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define STORE_MAGIC 0x41544731u /* "ATG1" */
#define STORE_VERSION 1u
#define STORE_WINDOW_MS 60000
/* One more second than the window, so a bucket sum always covers it. */
#define STORE_BUCKETS 61
/* How long a step waits for the lock before the store counts as unusable. */
#define STORE_LOCK_WAIT_MS 3000
/* An endpoint's RPM ring never holds more attempts than this; above it the
 * limit is enforced with one-second buckets, which can only under-use it. */
#define STORE_RING_MAX 100000

struct store {
	char *path;
	char *lock_path;
	int lock_fd;
};

/* Per-second attempt counts, for usage of endpoints without an exact ring. */
struct store_bucket {
	int64_t second;
	int64_t count;
};

/* One endpoint's record; ring[ring_cap] of attempt times (ms) follows it. */
struct store_rec {
	uint32_t magic;
	uint32_t version;
	int64_t day;
	int64_t day_count;
	int64_t fail_run;
	int64_t cooldown_until;
	int64_t prompt;
	int64_t completion;
	int64_t total;
	int64_t requests;
	int64_t last_used;
	int64_t attempts;
	int64_t ring_since; /* when the ring got its size: it knows nothing older */
	uint32_t ring_cap;
	uint32_t ring_len;
	uint32_t ring_head; /* index of the oldest time */
	uint32_t pad;
	struct store_bucket buckets[STORE_BUCKETS];
	int64_t ring[];
};

/* A record in memory, with room for its ring. */
struct store_entry {
	struct store_rec *rec;
	size_t size;
	bool dirty;
};

static void
store_set_err(char *err, size_t errlen, const char *what, const char *why)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s", what, why);
}

static size_t
store_rec_size(uint32_t ring_cap)
{
	return sizeof(struct store_rec) + (size_t)ring_cap * sizeof(int64_t);
}

static uint32_t
store_ring_cap_for(long rpm)
{
	if (rpm <= 0)
		return 0;
	return rpm > STORE_RING_MAX ? STORE_RING_MAX : (uint32_t)rpm;
}

/* Takes the lock, waiting at most STORE_LOCK_WAIT_MS. */
static int
store_lock(struct store *st, int how, char *err, size_t errlen)
{
	struct timespec pause = {0, 20000};
	int64_t deadline = 0;

	for (;;) {
		if (flock(st->lock_fd, how | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR) {
			store_set_err(err, errlen, st->lock_path, strerror(errno));
			return -1;
		}
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
		if (deadline == 0)
			deadline = now_ms + STORE_LOCK_WAIT_MS;
		else if (now_ms > deadline) {
			store_set_err(err, errlen, st->lock_path,
				      "locked by another process for too long");
			return -1;
		}
		nanosleep(&pause, NULL);
		if (pause.tv_nsec < 1000000)
			pause.tv_nsec *= 2;
	}
}

static void
store_unlock(struct store *st)
{
	flock(st->lock_fd, LOCK_UN);
}

/* Opens the database; the lock must be held. */
static GDBM_FILE
store_db_open(struct store *st, bool write, char *err, size_t errlen)
{
	int flags = (write ? GDBM_WRCREAT : GDBM_READER) | GDBM_NOLOCK | GDBM_CLOEXEC;
	GDBM_FILE db;

	db = gdbm_open(st->path, 0, flags, 0600, NULL);
	if (db == NULL && write && gdbm_errno == GDBM_NEED_RECOVERY) {
		db = gdbm_open(st->path, 0, GDBM_WRITER | GDBM_NOLOCK | GDBM_CLOEXEC, 0600,
			       NULL);
		if (db != NULL && gdbm_recover(db, NULL, 0) != 0) {
			store_set_err(err, errlen, st->path, gdbm_db_strerror(db));
			gdbm_close(db);
			return NULL;
		}
	}
	if (db == NULL) {
		const char *why = gdbm_strerror(gdbm_errno);
		if (gdbm_errno == GDBM_FILE_OPEN_ERROR || gdbm_errno == GDBM_FILE_STAT_ERROR)
			why = strerror(errno);
		store_set_err(err, errlen, st->path, why);
	}
	return db;
}

/* Reads the record of id into e, or a fresh one when there is none. A record
 * that is not ours (bad size or magic) is an error: guessing could let a
 * limit be exceeded. */
static int
store_get(GDBM_FILE db, const char *id, struct store_entry *e, char *err, size_t errlen)
{
	datum key = {(char *)id, (int)strlen(id)};
	datum val;

	memset(e, 0, sizeof(*e));
	val = gdbm_fetch(db, key);
	if (val.dptr == NULL) {
		if (gdbm_errno != GDBM_ITEM_NOT_FOUND) {
			store_set_err(err, errlen, "state file", gdbm_db_strerror(db));
			return -1;
		}
		e->size = store_rec_size(0);
		e->rec = calloc(1, e->size);
		if (e->rec == NULL) {
			store_set_err(err, errlen, "state", "out of memory");
			return -1;
		}
		e->rec->magic = STORE_MAGIC;
		e->rec->version = STORE_VERSION;
		return 0;
	}
	struct store_rec *r = (struct store_rec *)(void *)val.dptr;
	if ((size_t)val.dsize < sizeof(*r) || r->magic != STORE_MAGIC ||
	    r->version != STORE_VERSION || r->ring_cap > STORE_RING_MAX ||
	    (size_t)val.dsize != store_rec_size(r->ring_cap) || r->ring_len > r->ring_cap ||
	    (r->ring_cap > 0 && r->ring_head >= r->ring_cap)) {
		free(val.dptr);
		store_set_err(err, errlen, "state file", "damaged record");
		return -1;
	}
	e->rec = r;
	e->size = (size_t)val.dsize;
	return 0;
}

static int
store_put(GDBM_FILE db, const char *id, struct store_entry *e, char *err, size_t errlen)
{
	datum key = {(char *)id, (int)strlen(id)};
	datum val = {(char *)e->rec, (int)e->size};

	if (gdbm_store(db, key, val, GDBM_REPLACE) != 0) {
		store_set_err(err, errlen, "state file", gdbm_db_strerror(db));
		return -1;
	}
	return 0;
}

/* Attempts in the last `seconds` whole seconds, this one included. */
static int64_t
store_bucket_sum(const struct store_rec *r, int64_t now_ms, int seconds)
{
	int64_t now_s = now_ms / 1000;
	int64_t sum = 0;

	for (int i = 0; i < STORE_BUCKETS; i++)
		if (r->buckets[i].second > now_s - seconds && r->buckets[i].second <= now_s)
			sum += r->buckets[i].count;
	return sum;
}

/* Resizes the ring to the endpoint's current rpm, keeping the newest times. */
static int
store_fit_ring(struct store_entry *e, long rpm, int64_t now_ms)
{
	uint32_t cap = store_ring_cap_for(rpm);
	struct store_rec *old = e->rec;
	struct store_rec *r;

	if (cap == old->ring_cap)
		return 0;
	r = calloc(1, store_rec_size(cap));
	if (r == NULL)
		return -1;
	memcpy(r, old, sizeof(*r));
	r->ring_cap = cap;
	/* Grown while attempts it never saw are still in the window. */
	if (cap > old->ring_cap && store_bucket_sum(old, now_ms, STORE_BUCKETS) > old->ring_len)
		r->ring_since = now_ms;
	r->ring_len = old->ring_len < cap ? old->ring_len : cap;
	r->ring_head = 0;
	for (uint32_t i = 0; i < r->ring_len; i++) {
		uint32_t from = (old->ring_head + old->ring_len - r->ring_len + i) % old->ring_cap;
		r->ring[i] = old->ring[from];
	}
	free(old);
	e->rec = r;
	e->size = store_rec_size(cap);
	return 0;
}

static void
store_roll_day(struct store_rec *r, int64_t now_ms)
{
	long today = clock_local_day(now_ms);

	if (r->day != today) {
		r->day = today;
		r->day_count = 0;
	}
}

/* Attempts in the last 60 s, exact when the ring covers the limit. */
static long
store_rpm_used(const struct store_rec *r, int64_t now_ms)
{
	long n = 0;

	if (r->ring_cap == 0)
		return (long)store_bucket_sum(r, now_ms, STORE_WINDOW_MS / 1000);
	for (uint32_t i = 0; i < r->ring_len; i++)
		if (r->ring[(r->ring_head + i) % r->ring_cap] > now_ms - STORE_WINDOW_MS)
			n++;
	return n;
}

/* Milliseconds until ep has room again under its limits, 0 when it has room. */
static int64_t
store_wait_ms(const struct store_rec *r, const struct store_endpoint *ep, int64_t now_ms)
{
	int64_t wait = 0;

	if (ep->rpd >= 0 && r->day == clock_local_day(now_ms) && r->day_count >= ep->rpd)
		wait = clock_ms_to_midnight(now_ms);
	bool ring_covers = ep->rpm > 0 && r->ring_cap >= (uint32_t)ep->rpm;
	bool ring_young = r->ring_since > now_ms - STORE_WINDOW_MS;

	if (ring_covers) {
		/* Exact: the rpm-th newest attempt must have left the window. */
		if (r->ring_len >= (uint32_t)ep->rpm) {
			uint32_t k = (r->ring_head + r->ring_len - (uint32_t)ep->rpm) % r->ring_cap;
			int64_t w = r->ring[k] + STORE_WINDOW_MS - now_ms;
			if (w > wait)
				wait = w;
		}
	}
	if (ep->rpm > 0 && (!ring_covers || ring_young) &&
	    store_bucket_sum(r, now_ms, STORE_BUCKETS) >= ep->rpm) {
		/* The ring does not cover this limit (above STORE_RING_MAX), or was
		 * sized within the window and misses older attempts: whole-second
		 * buckets spanning more than the window can only hold back early. */
		int64_t now_s = now_ms / 1000;
		int64_t oldest = now_s;
		for (int i = 0; i < STORE_BUCKETS; i++)
			if (r->buckets[i].count > 0 &&
			    r->buckets[i].second > now_s - STORE_BUCKETS &&
			    r->buckets[i].second < oldest)
				oldest = r->buckets[i].second;
		int64_t w = (oldest + STORE_BUCKETS) * 1000 - now_ms;
		if (w > wait)
			wait = w;
	}
	if (ep->rpm == 0 || ep->rpd == 0)
		wait = clock_ms_to_midnight(now_ms);
	return wait;
}

static void
store_count_attempt(struct store_rec *r, int64_t now_ms)
{
	int64_t now_s = now_ms / 1000;
	struct store_bucket *b = &r->buckets[now_s % STORE_BUCKETS];

	if (b->second != now_s) {
		b->second = now_s;
		b->count = 0;
	}
	b->count++;
	r->day_count++;
	r->attempts++;
	if (r->ring_cap == 0)
		return;
	if (r->ring_len < r->ring_cap) {
		r->ring[(r->ring_head + r->ring_len) % r->ring_cap] = now_ms;
		r->ring_len++;
	} else {
		r->ring[r->ring_head] = now_ms;
		r->ring_head = (r->ring_head + 1) % r->ring_cap;
	}
}

static long
store_ceil_s(int64_t ms)
{
	long s = (long)((ms + 999) / 1000);
	return s < 1 ? 1 : s;
}

struct store *
store_open(const char *path, char *err, size_t errlen)
{
	struct store *st;
	size_t n;
	GDBM_FILE db;

	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		store_set_err(err, errlen, "state", "out of memory");
		return NULL;
	}
	st->lock_fd = -1;
	n = strlen(path) + sizeof(".lock");
	st->path = strdup(path);
	st->lock_path = malloc(n);
	if (st->path == NULL || st->lock_path == NULL) {
		store_set_err(err, errlen, "state", "out of memory");
		goto fail;
	}
	snprintf(st->lock_path, n, "%s.lock", path);
	/* Its own open file description: flock then also excludes other threads. */
	st->lock_fd = open(st->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lock_fd < 0) {
		store_set_err(err, errlen, st->lock_path, strerror(errno));
		goto fail;
	}
	if (store_lock(st, LOCK_EX, err, errlen) != 0)
		goto fail;
	db = store_db_open(st, true, err, errlen);
	store_unlock(st);
	if (db == NULL)
		goto fail;
	gdbm_close(db);
	return st;
fail:
	store_close(st);
	return NULL;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	free(st->path);
	free(st->lock_path);
	free(st);
}

const char *
store_path(const struct store *st)
{
	return st->path;
}

static void
store_entries_free(struct store_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i].rec);
}

int
store_reserve(struct store *st, const struct store_endpoint *eps, size_t n, int64_t now_ms,
	      store_pick_fn pick, void *pick_ctx, struct store_reservation *res, char *err,
	      size_t errlen)
{
	struct store_entry stack_e[16], *e = stack_e;
	bool stack_room[16], *room = stack_room;
	int64_t min_wait = -1, min_cool = -1;
	size_t have_room = 0;
	bool any_limited = false;
	GDBM_FILE db = NULL;
	size_t got = 0;
	int rc = -1;

	memset(res, 0, sizeof(*res));
	if (n == 0) {
		res->verdict = STORE_LIMITED;
		res->retry_after_s = 1;
		return 0;
	}
	if (n > 16) {
		e = calloc(n, sizeof(*e));
		room = calloc(n, sizeof(*room));
		if (e == NULL || room == NULL) {
			store_set_err(err, errlen, "state", "out of memory");
			goto out;
		}
	}
	if (store_lock(st, LOCK_EX, err, errlen) != 0)
		goto out;
	db = store_db_open(st, true, err, errlen);
	if (db == NULL)
		goto unlock;
	for (got = 0; got < n; got++)
		if (store_get(db, eps[got].id, &e[got], err, errlen) != 0)
			goto unlock;
	for (size_t i = 0; i < n; i++) {
		struct store_rec *r = e[i].rec;
		room[i] = false;
		if (r->cooldown_until > now_ms) {
			int64_t w = r->cooldown_until - now_ms;
			if (min_cool < 0 || w < min_cool)
				min_cool = w;
			continue;
		}
		int64_t w = store_wait_ms(r, &eps[i], now_ms);
		if (w > 0) {
			any_limited = true;
			if (min_wait < 0 || w < min_wait)
				min_wait = w;
			continue;
		}
		room[i] = true;
		have_room++;
	}
	if (have_room == 0) {
		if (any_limited) {
			res->verdict = STORE_LIMITED;
			/* A cooling endpoint may free before a limited one does. */
			if (min_cool >= 0 && min_cool < min_wait)
				min_wait = min_cool;
			res->retry_after_s = store_ceil_s(min_wait);
		} else {
			res->verdict = STORE_COOLING;
			res->retry_after_s = store_ceil_s(min_cool);
		}
		rc = 0;
		goto unlock;
	}
	size_t c = pick(pick_ctx, room, n);
	if (c >= n || !room[c]) {
		store_set_err(err, errlen, "state", "no endpoint picked");
		goto unlock;
	}
	if (store_fit_ring(&e[c], eps[c].rpm, now_ms) != 0) {
		store_set_err(err, errlen, "state", "out of memory");
		goto unlock;
	}
	store_roll_day(e[c].rec, now_ms);
	store_count_attempt(e[c].rec, now_ms);
	if (store_put(db, eps[c].id, &e[c], err, errlen) != 0)
		goto unlock;
	res->verdict = STORE_RESERVED;
	res->chosen = c;
	rc = 0;
unlock:
	/* Unlock first: gdbm_close fsyncs, and nobody should wait for that. */
	store_unlock(st);
	if (db != NULL)
		gdbm_close(db);
out:
	store_entries_free(e, got);
	if (e != stack_e)
		free(e);
	if (room != stack_room)
		free(room);
	return rc;
}

int
store_record(struct store *st, const char *id, const struct store_outcome *o,
	     const struct store_cooldown *cd, int64_t now_ms, char *err, size_t errlen)
{
	struct store_entry e = {0};
	GDBM_FILE db;
	int rc = -1;

	if (store_lock(st, LOCK_EX, err, errlen) != 0)
		return -1;
	db = store_db_open(st, true, err, errlen);
	if (db == NULL)
		goto unlock;
	if (store_get(db, id, &e, err, errlen) != 0)
		goto unlock;
	struct store_rec *r = e.rec;
	if (o->success) {
		r->fail_run = 0;
		r->cooldown_until = 0;
	} else {
		r->fail_run++;
		if (cd->failures > 0 && r->fail_run >= cd->failures && cd->seconds > 0)
			r->cooldown_until = now_ms + (int64_t)cd->seconds * 1000;
	}
	if (o->served) {
		r->requests++;
		r->last_used = now_ms;
	}
	if (o->has_usage) {
		r->prompt += o->prompt_tokens;
		r->completion += o->completion_tokens;
		r->total += o->total_tokens;
	}
	rc = store_put(db, id, &e, err, errlen);
unlock:
	store_unlock(st);
	if (db != NULL)
		gdbm_close(db);
	free(e.rec);
	return rc;
}

int
store_read(struct store *st, const struct store_endpoint *eps, size_t n, int64_t now_ms,
	   struct store_usage *out, char *err, size_t errlen)
{
	GDBM_FILE db;
	int rc = -1;

	if (store_lock(st, LOCK_SH, err, errlen) != 0)
		return -1;
	db = store_db_open(st, false, err, errlen);
	if (db == NULL)
		goto unlock;
	for (size_t i = 0; i < n; i++) {
		struct store_entry e;
		if (store_get(db, eps[i].id, &e, err, errlen) != 0)
			goto unlock;
		struct store_rec *r = e.rec;
		struct store_usage *u = &out[i];
		memset(u, 0, sizeof(*u));
		u->rpm_used = store_rpm_used(r, now_ms);
		u->rpd_used = r->day == clock_local_day(now_ms) ? (long)r->day_count : 0;
		u->fail_run = (long)r->fail_run;
		u->cooldown_until = r->cooldown_until > now_ms ? r->cooldown_until : 0;
		u->prompt_tokens = r->prompt;
		u->completion_tokens = r->completion;
		u->total_tokens = r->total;
		u->requests = r->requests;
		u->last_used = r->last_used;
		int64_t w = store_wait_ms(r, &eps[i], now_ms);
		u->rpm_free_in_s = w > 0 ? store_ceil_s(w) : 0;
		free(r);
	}
	rc = 0;
unlock:
	store_unlock(st);
	if (db != NULL)
		gdbm_close(db);
	return rc;
}

int
store_reset_tokens(struct store *st, const char *id, char *err, size_t errlen)
{
	GDBM_FILE db;
	int rc = -1;

	if (store_lock(st, LOCK_EX, err, errlen) != 0)
		return -1;
	db = store_db_open(st, true, err, errlen);
	if (db == NULL)
		goto unlock;
	/* Collect the keys first: storing while walking may reorder them. */
	size_t n = 0, cap = 0;
	char **keys = NULL;
	if (id != NULL) {
		keys = malloc(sizeof(*keys));
		if (keys == NULL || (keys[0] = strdup(id)) == NULL) {
			free(keys);
			keys = NULL;
			store_set_err(err, errlen, "state", "out of memory");
			goto unlock;
		}
		n = 1;
	} else {
		datum k = gdbm_firstkey(db);
		while (k.dptr != NULL) {
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				char **nk = realloc(keys, ncap * sizeof(*keys));
				if (nk == NULL) {
					free(k.dptr);
					store_set_err(err, errlen, "state", "out of memory");
					goto free_keys;
				}
				keys = nk;
				cap = ncap;
			}
			keys[n] = strndup(k.dptr, (size_t)k.dsize);
			datum next = gdbm_nextkey(db, k);
			free(k.dptr);
			k = next;
			if (keys[n] == NULL) {
				free(k.dptr);
				store_set_err(err, errlen, "state", "out of memory");
				goto free_keys;
			}
			n++;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct store_entry e;
		if (store_get(db, keys[i], &e, err, errlen) != 0)
			goto free_keys;
		e.rec->prompt = e.rec->completion = e.rec->total = 0;
		e.rec->requests = 0;
		e.rec->last_used = 0;
		int prc = store_put(db, keys[i], &e, err, errlen);
		free(e.rec);
		if (prc != 0)
			goto free_keys;
	}
	rc = 0;
free_keys:
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
unlock:
	store_unlock(st);
	if (db != NULL)
		gdbm_close(db);
	return rc;
}

int
store_check(struct store *st, char *err, size_t errlen)
{
	GDBM_FILE db;

	if (store_lock(st, LOCK_EX, err, errlen) != 0)
		return -1;
	db = store_db_open(st, true, err, errlen);
	store_unlock(st);
	if (db == NULL)
		return -1;
	gdbm_close(db);
	return 0;
}

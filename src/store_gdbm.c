/* The GDBM store: one database file shared by every process, guarded by an
 * exclusive flock on a lock file beside it ("PATH.lock"), which also holds
 * the live copy of the state (store_live.h).
 *
 * All endpoints live in one record. A step reads the live copy, changes it
 * and writes the next copy into the shared mapping: no system call beyond
 * the lock and a stat, no fsync. The GDBM file gets the copy once a second
 * (store_sync), written alternately under two keys ("state.0", "state.1")
 * with a sequence number at both ends, so a process killed while writing it
 * leaves the copy before it intact; it is what a reboot starts from.
 *
 * The database is opened after taking the lock, so the header it reads is
 * the one the last holder wrote, and closed after releasing it, so the fsync
 * that gdbm_close always does runs outside the lock (NOTES-fastcgi.md,
 * GDBM). GDBM_NOMMAP: write(2) copies a record into the page cache front to
 * back, which is what the sequence check relies on.
 *
 * store.c hands calls here through store_gdbm_ops (store_impl.h); all but
 * store_gdbm_open is static. */
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <gdbm.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "store_live.h"

#define STORE_MAGIC 0x41544732u /* "ATG2" */
/* 3 added the metrics' counters (store_ent_metrics, the refusals) and the
 * day's tokens (in the same block: 3 was extended before its release); a
 * copy of version 2 is still read, its new counters at 0. */
#define STORE_VERSION 3u
#define STORE_VERSION_V2 2u
/* Refusal counters on disk: room for reasons yet to come. */
#define STORE_REJECTS_DISK 8
_Static_assert(STORE_REJECT_N <= STORE_REJECTS_DISK, "refusals outgrew their room on disk");
#define STORE_WINDOW_MS 60000
/* One more second than the window, so a bucket sum always covers it. */
#define STORE_BUCKETS 61
/* Tries by yielding before the flock is polled with sleeps. */
#define STORE_LOCK_YIELDS 50
/* How long a step waits for the lock before the store counts as unusable. */
#define STORE_LOCK_WAIT_MS 3000
/* Limits up to this are enforced from the times of the last rpm attempts,
 * exactly; above it with whole-second buckets, which can only hold back
 * early (by under a second), never let one through. */
#define STORE_RING_MAX 1000
/* Ring times are milliseconds after ring_base; rebased well before 2^32. */
#define STORE_REBASE_MS (INT64_C(1) << 31)

struct store_gdbm {
	struct store base; /* first: store.c sees this much */
	char *path;
	char *lock_path;
	int lock_fd;
	bool readonly;
	struct store_live live; /* mapping of the lock file */
	size_t lock_size;       /* of the lock file when it was last locked */
};

struct store_bucket {
	uint32_t second;
	uint32_t count;
};

/* One endpoint as stored; on disk it is followed by its id (id_len bytes,
 * padded to 8) and its ring (ring_cap times, padded to 8). */
struct store_ent_disk {
	uint32_t id_len;
	uint32_t ring_cap;
	uint32_t ring_len;
	uint32_t ring_head; /* index of the oldest time */
	int64_t ring_base;
	int64_t ring_since; /* the ring was sized then: it knows nothing older */
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
	struct store_bucket buckets[STORE_BUCKETS];
};

/* An endpoint's counters for the metrics (version 3 on): on disk right
 * after its store_ent_disk. */
struct store_ent_metrics {
	int64_t retries;
	int64_t answers[STORE_CLASS_N];
	int64_t lat[STORE_HIST_N];
	int64_t lat_count;
	int64_t lat_sum_ms;
	int64_t ttfb[STORE_HIST_N];
	int64_t ttfb_count;
	int64_t ttfb_sum_ms;
	/* Tokens of the local day tok_day (YYYYMMDD), apart from d.day: an
	 * answer can be recorded on another day than its attempt was counted. */
	int64_t tok_day;
	int64_t day_prompt;
	int64_t day_completion;
	int64_t day_total;
};

struct store_ent {
	struct store_ent_disk d;
	struct store_ent_metrics m;
	char *id;
	uint32_t *ring;
};

struct store_head {
	uint32_t magic;
	uint32_t version;
	uint64_t seq;
	uint64_t size; /* of the whole record, trailing sequence number included */
	uint64_t n;
};

/* The state as one step sees it. */
struct store_state {
	uint64_t seq;
	size_t n, cap;
	struct store_ent *e;
	int64_t rejects[STORE_REJECTS_DISK]; /* on disk after the entries */
};

static void
store_set_err(char *err, size_t errlen, const char *what, const char *why)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s", what, why);
}

static size_t
store_pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static void
store_state_free(struct store_state *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->e[i].id);
		free(s->e[i].ring);
	}
	free(s->e);
	memset(s, 0, sizeof(*s));
}

/* Checks that one copy is whole and ours: 1 with its sequence number in
 * *seq, 0 when absent (len 0), -1 when torn or not ours. */
static int
store_copy_ok(const char *p, size_t len, uint64_t *seq)
{
	struct store_head h;
	uint64_t tail;

	if (p == NULL)
		return 0;
	if (len < sizeof(h) + sizeof(tail))
		return -1;
	memcpy(&h, p, sizeof(h));
	memcpy(&tail, p + len - sizeof(tail), sizeof(tail));
	if (h.magic != STORE_MAGIC ||
	    (h.version != STORE_VERSION && h.version != STORE_VERSION_V2) || h.size != len ||
	    tail != h.seq || h.n > 1000000)
		return -1;
	*seq = h.seq;
	return 1;
}

/* Reads a copy that store_copy_ok accepted (of either version: one of
 * version 2 has no metrics, which start at 0); -1 when its insides are not
 * consistent or memory runs out. */
static int
store_decode(const char *p, size_t len, struct store_state *out)
{
	struct store_head h;
	size_t off = sizeof(h), end = len - sizeof(uint64_t);

	memset(out, 0, sizeof(*out));
	memcpy(&h, p, sizeof(h));
	bool v3 = h.version == STORE_VERSION;
	out->seq = h.seq;
	/* Not zeroed: each entry is set whole below, and entries beyond n are
	 * set by store_entry (a step runs this twice per request: zeroing
	 * kilobytes that are written over anyway shows in its cost). */
	out->e = malloc((h.n + 1) * sizeof(*out->e));
	if (out->e == NULL)
		return -1;
	out->cap = h.n + 1;
	for (uint64_t i = 0; i < h.n; i++) {
		struct store_ent *e = &out->e[i];
		e->id = NULL;
		e->ring = NULL;
		if (off + sizeof(e->d) > end)
			goto bad;
		memcpy(&e->d, p + off, sizeof(e->d));
		off += sizeof(e->d);
		out->n++;
		if (v3) {
			if (off + sizeof(e->m) > end)
				goto bad;
			memcpy(&e->m, p + off, sizeof(e->m));
			off += sizeof(e->m);
		} else {
			memset(&e->m, 0, sizeof(e->m));
		}
		size_t idl = store_pad8(e->d.id_len), rl = store_pad8((size_t)e->d.ring_cap * 4);
		if (e->d.id_len == 0 || e->d.ring_cap > STORE_RING_MAX ||
		    e->d.ring_len > e->d.ring_cap ||
		    (e->d.ring_cap > 0 && e->d.ring_head >= e->d.ring_cap) || off + idl + rl > end)
			goto bad;
		e->id = strndup(p + off, e->d.id_len);
		off += idl;
		if (e->id == NULL || strlen(e->id) != e->d.id_len)
			goto bad;
		if (e->d.ring_cap > 0) {
			e->ring = malloc((size_t)e->d.ring_cap * 4);
			if (e->ring == NULL)
				goto bad;
			memcpy(e->ring, p + off, (size_t)e->d.ring_cap * 4);
		}
		off += rl;
	}
	if (v3) {
		if (off + sizeof(out->rejects) > end)
			goto bad;
		memcpy(out->rejects, p + off, sizeof(out->rejects));
		off += sizeof(out->rejects);
	}
	if (off != end)
		goto bad;
	return 0;
bad:
	store_state_free(out);
	return -1;
}

static char *
store_encode(const struct store_state *s, size_t *len)
{
	struct store_head h = {STORE_MAGIC, STORE_VERSION, s->seq, 0, s->n};
	size_t n = sizeof(h) + sizeof(s->rejects) + sizeof(uint64_t), off = sizeof(h);
	char *p;

	for (size_t i = 0; i < s->n; i++)
		n += sizeof(s->e[i].d) + sizeof(s->e[i].m) + store_pad8(s->e[i].d.id_len) +
		     store_pad8((size_t)s->e[i].d.ring_cap * 4);
	/* Zeroed: the padding goes to disk too. */
	p = calloc(1, n);
	if (p == NULL)
		return NULL;
	h.size = n;
	memcpy(p, &h, sizeof(h));
	for (size_t i = 0; i < s->n; i++) {
		const struct store_ent *e = &s->e[i];
		memcpy(p + off, &e->d, sizeof(e->d));
		off += sizeof(e->d);
		memcpy(p + off, &e->m, sizeof(e->m));
		off += sizeof(e->m);
		memcpy(p + off, e->id, e->d.id_len);
		off += store_pad8(e->d.id_len);
		if (e->d.ring_cap > 0)
			memcpy(p + off, e->ring, (size_t)e->d.ring_cap * 4);
		off += store_pad8((size_t)e->d.ring_cap * 4);
	}
	memcpy(p + off, s->rejects, sizeof(s->rejects));
	off += sizeof(s->rejects);
	memcpy(p + off, &s->seq, sizeof(s->seq));
	*len = n;
	return p;
}

static const char *const store_slot_key[2] = {"state.0", "state.1"};

/* Loads the newest whole copy. A missing state is an empty one; a state of
 * which no copy is whole is an error: guessing could exceed a limit. */
static int
store_load(GDBM_FILE db, struct store_state *s, char *err, size_t errlen)
{
	datum val[2];
	uint64_t seq[2] = {0, 0};
	int ok[2], rc = -1;

	memset(s, 0, sizeof(*s));
	for (int k = 0; k < 2; k++) {
		datum key = {(char *)store_slot_key[k], (int)strlen(store_slot_key[k])};
		val[k] = gdbm_fetch(db, key);
		if (val[k].dptr == NULL && gdbm_errno != GDBM_ITEM_NOT_FOUND) {
			store_set_err(err, errlen, "state file", gdbm_db_strerror(db));
			if (k == 1)
				free(val[0].dptr);
			return -1;
		}
		ok[k] = store_copy_ok(val[k].dptr, (size_t)val[k].dsize, &seq[k]);
	}
	int pick = -1;
	if (ok[0] == 1 && (ok[1] != 1 || seq[0] > seq[1]))
		pick = 0;
	else if (ok[1] == 1)
		pick = 1;
	if (pick >= 0) {
		if (store_decode(val[pick].dptr, (size_t)val[pick].dsize, s) == 0)
			rc = 0;
		else
			store_set_err(err, errlen, "state file", "damaged record");
	} else if (ok[0] < 0 || ok[1] < 0) {
		store_set_err(err, errlen, "state file", "damaged record (no whole copy)");
	} else {
		rc = 0; /* a new file */
	}
	free(val[0].dptr);
	free(val[1].dptr);
	return rc;
}

/* Writes rec (of sequence number seq) over the older of the two copies. */
static int
store_save(GDBM_FILE db, const char *rec, size_t len, uint64_t seq, char *err, size_t errlen)
{
	const char *k = store_slot_key[seq % 2];
	datum key = {(char *)k, (int)strlen(k)};
	datum val = {(char *)rec, (int)len};

	if (gdbm_store(db, key, val, GDBM_REPLACE) != 0) {
		store_set_err(err, errlen, "state file", gdbm_db_strerror(db));
		return -1;
	}
	return 0;
}

/* The entry of id, added when missing; NULL when out of memory. */
static struct store_ent *
store_entry(struct store_state *s, const char *id)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->e[i].id, id) == 0)
			return &s->e[i];
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 16;
		struct store_ent *ne = realloc(s->e, ncap * sizeof(*ne));
		if (ne == NULL)
			return NULL;
		s->e = ne;
		s->cap = ncap;
	}
	struct store_ent *e = &s->e[s->n];
	memset(e, 0, sizeof(*e));
	e->id = strdup(id);
	if (e->id == NULL)
		return NULL;
	e->d.id_len = (uint32_t)strlen(id);
	s->n++;
	return e;
}

/* The entry of id, or a zeroed stand-in when the state has none. */
static const struct store_ent *
store_find(const struct store_state *s, const char *id)
{
	static const struct store_ent none;

	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->e[i].id, id) == 0)
			return &s->e[i];
	return &none;
}

/* Threads of one process queue here before the flock. Each thread's handle
 * is its own open file description, so flock alone would exclude them too,
 * but a waiter can only poll it: hundreds of threads polling one lock
 * (500 streams starting at once) burn the CPU the streams need. Behind the
 * mutex they sleep until woken, in order; only one per process polls. */
static pthread_mutex_t store_process_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t
store_mono_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Takes the flock, polling until deadline_ms (monotonic). */
static int
store_lock_fd(struct store_gdbm *st, int how, int64_t deadline_ms, char *err, size_t errlen)
{
	struct timespec pause = {0, 20000};

	/* Another process holds it for some microseconds: yielding and trying
	 * again gets it right after; a sleep (50 us at the least with the
	 * default timer slack) would leave it unused meanwhile, and this whole
	 * process's threads waiting behind the mutex. Past the first tries the
	 * holder is slow or stuck, and sleeping costs less. */
	for (int tries = 0;; tries++) {
		if (flock(st->lock_fd, how | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR) {
			store_set_err(err, errlen, st->lock_path, strerror(errno));
			return -1;
		}
		if (tries < STORE_LOCK_YIELDS) {
			sched_yield();
			continue;
		}
		if (store_mono_ms() > deadline_ms) {
			store_set_err(err, errlen, st->lock_path,
				      "locked by another process for too long");
			return -1;
		}
		nanosleep(&pause, NULL);
		if (pause.tv_nsec < 500000)
			pause.tv_nsec *= 2;
	}
}

static int
store_open_lock_file(struct store_gdbm *st, char *err, size_t errlen)
{
	/* Its own open file description: flock then also excludes other threads. */
	st->lock_fd = st->readonly ? open(st->lock_path, O_RDONLY | O_CLOEXEC)
				   : open(st->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lock_fd < 0) {
		store_set_err(err, errlen, st->lock_path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Takes the lock on the lock file that is at lock_path now. A lock file
 * deleted or replaced since it was opened (its folder removed and made
 * again) would exclude nobody who opens the new one, so it is opened anew. */
static int
store_lock(struct store_gdbm *st, int how, char *err, size_t errlen)
{
	int64_t deadline = store_mono_ms() + STORE_LOCK_WAIT_MS;
	struct timespec until;
	int rc;

	/* pthread_mutex_timedlock counts on CLOCK_REALTIME. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += STORE_LOCK_WAIT_MS / 1000;
	rc = pthread_mutex_timedlock(&store_process_lock, &until);
	if (rc != 0) {
		store_set_err(err, errlen, st->lock_path,
			      rc == ETIMEDOUT ? "locked by another process for too long"
					      : strerror(rc));
		return -1;
	}
	for (int tries = 0; tries < 3; tries++) {
		struct stat held, named;
		if (st->lock_fd < 0 && store_open_lock_file(st, err, errlen) != 0)
			break;
		if (store_lock_fd(st, how, deadline, err, errlen) != 0)
			break;
		if (fstat(st->lock_fd, &held) == 0 && stat(st->lock_path, &named) == 0 &&
		    held.st_ino == named.st_ino && held.st_dev == named.st_dev) {
			st->lock_size = (size_t)held.st_size;
			return 0;
		}
		flock(st->lock_fd, LOCK_UN);
		store_live_detach(&st->live);
		close(st->lock_fd);
		st->lock_fd = -1;
		if (tries == 2)
			store_set_err(err, errlen, st->lock_path, "lock file keeps changing");
	}
	pthread_mutex_unlock(&store_process_lock);
	return -1;
}

static void
store_unlock(struct store_gdbm *st)
{
	flock(st->lock_fd, LOCK_UN);
	pthread_mutex_unlock(&store_process_lock);
}

/* Opens the database; the lock must be held. */
static GDBM_FILE
store_db_open(struct store_gdbm *st, bool write, char *err, size_t errlen)
{
	int base = GDBM_NOLOCK | GDBM_NOMMAP | GDBM_CLOEXEC;
	GDBM_FILE db;

	db = gdbm_open(st->path, 0, (write ? GDBM_WRCREAT : GDBM_READER) | base, 0600, NULL);
	if (db == NULL && write && gdbm_errno == GDBM_NEED_RECOVERY) {
		db = gdbm_open(st->path, 0, GDBM_WRITER | base, 0600, NULL);
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

/* Whether the GDBM file is still as this store last left it: a file
 * replaced, rewritten, truncated or made read-only by somebody else is
 * opened again at once, so that a damaged one is noticed (SPEC section 7). */
static bool
store_db_unchanged(const struct store_gdbm *st, const struct store_live_db *d)
{
	struct stat sb;

	if (stat(st->path, &sb) != 0)
		return false;
	return (uint64_t)sb.st_dev == d->dev && (uint64_t)sb.st_ino == d->ino &&
	       (uint64_t)sb.st_size == d->size &&
	       (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec == d->mtime_ns &&
	       (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec == d->ctime_ns;
}

static void
store_db_note(GDBM_FILE db, uint64_t seq, struct store_live_db *d)
{
	struct stat sb;

	memset(d, 0, sizeof(*d));
	if (fstat(gdbm_fdesc(db), &sb) != 0)
		return; /* all zero: checked again next step */
	d->seq = seq;
	d->ms = clock_now_ms();
	d->dev = (uint64_t)sb.st_dev;
	d->ino = (uint64_t)sb.st_ino;
	d->size = (uint64_t)sb.st_size;
	d->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
	d->ctime_ns = (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec;
}

/* Loads the live copy when there is a whole one of this boot: 1 loaded,
 * 0 none. */
static int
store_live_load(struct store_gdbm *st, int attached, struct store_state *s)
{
	const char *p;
	size_t len;
	uint64_t seq;

	if (attached != 1 || (p = store_live_newest(&st->live, &len, &seq)) == NULL)
		return 0;
	/* Written length last, so never torn; anything else wrong with it is
	 * somebody else's doing, and the GDBM file is the copy to trust then. */
	if (store_copy_ok(p, len, &seq) != 1 || store_decode(p, len, s) != 0)
		return 0;
	return 1;
}

enum store_step_kind {
	STORE_STEP_READ,
	STORE_STEP_WRITE,
	STORE_STEP_SYNC /* write: also bring the GDBM file up to the live copy */
};

/* Runs one step under the lock: load the live copy (or, when there is none,
 * the GDBM file's), call fn, write the copy it changed. The GDBM file is
 * opened only when the live copy is missing, when the file changed behind
 * the store's back, or to sync it; it is closed after the lock is released,
 * so that gdbm_close's fsync runs outside it. fn returns -1 (error), 0 (no
 * change) or 1 (save); it may be NULL. */
static int
store_step(struct store_gdbm *st, enum store_step_kind kind,
	   int (*fn)(struct store_state *s, void *ctx, char *err, size_t errlen), void *ctx,
	   char *err, size_t errlen)
{
	bool write = kind != STORE_STEP_READ;
	struct store_state s;
	struct store_live_db note;
	GDBM_FILE db = NULL;
	char *rec = NULL;
	size_t len = 0;
	int rc = -1, attached, loaded;

	memset(&s, 0, sizeof(s));
	if (write && st->readonly) {
		store_set_err(err, errlen, st->path, "opened read-only");
		return -1;
	}
	if (store_lock(st, write ? LOCK_EX : LOCK_SH, err, errlen) != 0)
		return -1;
	attached = store_live_attach(&st->live, st->lock_fd, st->lock_size, err, errlen);
	if (attached < 0)
		goto out;
	loaded = store_live_load(st, attached, &s);
	bool need_db = loaded == 0;
	if (loaded == 1) {
		const struct store_live_db *d = store_live_db(&st->live);
		need_db =
			!store_db_unchanged(st, d) || (kind == STORE_STEP_SYNC && d->seq != s.seq);
	}
	if (need_db) {
		struct store_state g;
		db = store_db_open(st, write, err, errlen);
		/* Read whole even when the live copy is newer: a damaged file is
		 * refused (SPEC section 7) rather than silently written over. */
		if (db == NULL || store_load(db, &g, err, errlen) != 0) {
			rc = -1;
			goto out;
		}
		if (loaded == 0 || g.seq > s.seq) {
			/* No live copy, or somebody put a newer file in place. */
			store_state_free(&s);
			s = g;
			loaded = 0;
		} else {
			store_state_free(&g);
		}
	}
	rc = fn != NULL ? fn(&s, ctx, err, errlen) : 0;
	if (rc < 0 || !write || st->readonly)
		goto out;
	bool changed = rc == 1;
	if (changed)
		s.seq++;
	if (changed || db != NULL) {
		rec = store_encode(&s, &len);
		if (rec == NULL) {
			store_set_err(err, errlen, "state", "out of memory");
			rc = -1;
			goto out;
		}
	}
	if (db != NULL) {
		/* The GDBM file first: a live copy set up anew below may start from it. */
		if (store_save(db, rec, len, s.seq, err, errlen) != 0) {
			rc = -1;
			goto out;
		}
		store_db_note(db, s.seq, &note);
	}
	if (loaded == 0 || (changed && store_live_put(&st->live, rec, len, s.seq) != 0)) {
		/* No live copy yet, or it outgrew its slot: the GDBM file holds it. */
		if (db == NULL) {
			db = store_db_open(st, true, err, errlen);
			if (db == NULL || store_save(db, rec, len, s.seq, err, errlen) != 0) {
				rc = -1;
				goto out;
			}
			store_db_note(db, s.seq, &note);
		}
		if (store_live_reset(&st->live, rec, len, s.seq, &note, err, errlen) != 0) {
			rc = -1;
			goto out;
		}
	} else if (db != NULL) {
		*store_live_db(&st->live) = note;
	}
out:
	store_unlock(st);
	if (db != NULL)
		gdbm_close(db);
	free(rec);
	store_state_free(&s);
	return rc < 0 ? -1 : 0;
}

static uint32_t
store_ring_cap_for(long rpm)
{
	if (rpm <= 0 || rpm > STORE_RING_MAX)
		return 0;
	return (uint32_t)rpm;
}

static int64_t
store_ring_at(const struct store_ent *e, uint32_t i)
{
	return e->d.ring_base + e->ring[(e->d.ring_head + i) % e->d.ring_cap];
}

/* Attempts in the last `seconds` whole seconds, this one included. */
static int64_t
store_bucket_sum(const struct store_ent *e, int64_t now_ms, int seconds)
{
	int64_t now_s = now_ms / 1000;
	int64_t sum = 0;

	for (int i = 0; i < STORE_BUCKETS; i++)
		if ((int64_t)e->d.buckets[i].second > now_s - seconds &&
		    (int64_t)e->d.buckets[i].second <= now_s)
			sum += e->d.buckets[i].count;
	return sum;
}

/* True when the ring holds every attempt of the last window. */
static bool
store_ring_complete(const struct store_ent *e, int64_t now_ms)
{
	return e->d.ring_cap > 0 && e->d.ring_since <= now_ms - STORE_WINDOW_MS;
}

/* Resizes the ring to the endpoint's current rpm, keeping the newest times. */
static int
store_fit_ring(struct store_ent *e, long rpm, int64_t now_ms)
{
	uint32_t cap = store_ring_cap_for(rpm);
	uint32_t keep = e->d.ring_len < cap ? e->d.ring_len : cap;
	uint32_t *ring = NULL;

	if (cap == e->d.ring_cap)
		return 0;
	if (cap > 0) {
		ring = calloc(cap, sizeof(*ring));
		if (ring == NULL)
			return -1;
		for (uint32_t i = 0; i < keep; i++)
			ring[i] = e->ring[(e->d.ring_head + e->d.ring_len - keep + i) %
					  e->d.ring_cap];
	}
	/* Grown while attempts it never saw are still in the window. */
	if (cap > e->d.ring_cap &&
	    store_bucket_sum(e, now_ms, STORE_BUCKETS) > (int64_t)e->d.ring_len)
		e->d.ring_since = now_ms;
	if (e->d.ring_cap == 0)
		e->d.ring_base = now_ms;
	free(e->ring);
	e->ring = ring;
	e->d.ring_cap = cap;
	e->d.ring_len = keep;
	e->d.ring_head = 0;
	return 0;
}

/* Attempts in the last 60 s: exact from a complete ring, else from buckets. */
static long
store_rpm_used(const struct store_ent *e, int64_t now_ms)
{
	long n = 0;

	if (!store_ring_complete(e, now_ms))
		return (long)store_bucket_sum(e, now_ms, STORE_WINDOW_MS / 1000);
	for (uint32_t i = 0; i < e->d.ring_len; i++)
		if (store_ring_at(e, i) > now_ms - STORE_WINDOW_MS)
			n++;
	return n;
}

/* Milliseconds until ep has room again under its limits, 0 when it has room. */
static int64_t
store_wait_ms(const struct store_ent *e, const struct store_endpoint *ep, int64_t now_ms)
{
	int64_t wait = 0;

	if (ep->rpm == 0 || ep->rpd == 0)
		return clock_ms_to_midnight(now_ms);
	if (ep->rpd > 0 && e->d.day == clock_local_day(now_ms) && e->d.day_count >= ep->rpd)
		wait = clock_ms_to_midnight(now_ms);
	if (ep->rpm < 0)
		return wait;
	bool covers = e->d.ring_cap >= (uint32_t)ep->rpm && e->d.ring_cap > 0;
	if (covers && e->d.ring_len >= (uint32_t)ep->rpm) {
		/* Exact: the rpm-th newest attempt must have left the window.
		 * After the clock was set back, times ahead of now were made in
		 * the last moments: up to a window ahead they count as now; one
		 * further ahead would hold the endpoint back for as long as the
		 * step, so it counts as gone (at most rpm attempts more, once). */
		int64_t t = store_ring_at(e, e->d.ring_len - (uint32_t)ep->rpm);
		if (t > now_ms)
			t = t > now_ms + STORE_WINDOW_MS ? now_ms - STORE_WINDOW_MS : now_ms;
		int64_t w = t + STORE_WINDOW_MS - now_ms;
		if (w > wait)
			wait = w;
	}
	if ((!covers || !store_ring_complete(e, now_ms)) &&
	    store_bucket_sum(e, now_ms, STORE_BUCKETS) >= ep->rpm) {
		/* Buckets spanning more than the window: the oldest frees first. */
		int64_t now_s = now_ms / 1000, oldest = now_s;
		for (int i = 0; i < STORE_BUCKETS; i++) {
			int64_t sec = e->d.buckets[i].second;
			if (e->d.buckets[i].count > 0 && sec > now_s - STORE_BUCKETS &&
			    sec < oldest)
				oldest = sec;
		}
		int64_t w = (oldest + STORE_BUCKETS) * 1000 - now_ms;
		if (w > wait)
			wait = w;
	}
	return wait;
}

static void
store_count_attempt(struct store_ent *e, int64_t now_ms)
{
	int64_t now_s = now_ms / 1000;
	struct store_bucket *b = &e->d.buckets[now_s % STORE_BUCKETS];
	long today = clock_local_day(now_ms);

	if (e->d.day != today) {
		e->d.day = today;
		e->d.day_count = 0;
	}
	if (b->second != (uint32_t)now_s) {
		b->second = (uint32_t)now_s;
		b->count = 0;
	}
	b->count++;
	e->d.day_count++;
	e->d.attempts++;
	if (e->d.ring_cap == 0)
		return;
	if (now_ms - e->d.ring_base >= STORE_REBASE_MS || now_ms < e->d.ring_base) {
		/* Keep offsets small (and never negative after the clock was set
		 * back); times older than the new base are long gone. */
		int64_t nb = now_ms - STORE_WINDOW_MS;
		for (uint32_t i = 0; i < e->d.ring_cap; i++) {
			int64_t t = e->d.ring_base + e->ring[i];
			if (t > now_ms)
				t = now_ms; /* the clock was set back */
			e->ring[i] = t > nb ? (uint32_t)(t - nb) : 0;
		}
		e->d.ring_base = nb;
	}
	uint32_t off = (uint32_t)(now_ms - e->d.ring_base);
	if (e->d.ring_len < e->d.ring_cap) {
		e->ring[(e->d.ring_head + e->d.ring_len) % e->d.ring_cap] = off;
		e->d.ring_len++;
	} else {
		e->ring[e->d.ring_head] = off;
		e->d.ring_head = (e->d.ring_head + 1) % e->d.ring_cap;
	}
}

static long
store_ceil_s(int64_t ms)
{
	long s = (long)((ms + 999) / 1000);
	return s < 1 ? 1 : s;
}

static int store_check_fn(struct store_state *s, void *ctx, char *err, size_t errlen);

static const struct store_ops store_gdbm_ops;
static void store_gdbm_close(struct store *base);

struct store *
store_gdbm_open(const char *path, bool readonly, char *err, size_t errlen)
{
	struct store_gdbm *st;
	size_t n;

	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		store_set_err(err, errlen, "state", "out of memory");
		return NULL;
	}
	st->base.ops = &store_gdbm_ops;
	st->lock_fd = -1;
	st->readonly = readonly;
	store_live_handle(&st->live, readonly);
	n = strlen(path) + sizeof(".lock");
	st->path = strdup(path);
	st->lock_path = malloc(n);
	if (st->path == NULL || st->lock_path == NULL) {
		store_set_err(err, errlen, "state", "out of memory");
		goto fail;
	}
	snprintf(st->lock_path, n, "%s.lock", path);
	if (store_step(st, readonly ? STORE_STEP_READ : STORE_STEP_WRITE, store_check_fn, NULL, err,
		       errlen) != 0)
		goto fail;
	return &st->base;
fail:
	store_gdbm_close(&st->base);
	return NULL;
}

static void
store_gdbm_close(struct store *base)
{
	struct store_gdbm *st = (struct store_gdbm *)base;

	if (st == NULL)
		return;
	store_live_detach(&st->live);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	free(st->path);
	free(st->lock_path);
	free(st);
}

struct store_reserve_ctx {
	const struct store_endpoint *eps;
	size_t n;
	int64_t now;
	store_pick_fn pick;
	void *pick_ctx;
	struct store_reservation *res;
	bool *room;
};

static int
store_reserve_fn(struct store_state *s, void *ctx, char *err, size_t errlen)
{
	struct store_reserve_ctx *c = ctx;
	int64_t min_wait = -1, min_cool = -1;
	size_t have_room = 0;

	for (size_t i = 0; i < c->n; i++) {
		const struct store_ent *e = store_find(s, c->eps[i].id);
		c->room[i] = false;
		if (e->d.cooldown_until > c->now) {
			int64_t w = e->d.cooldown_until - c->now;
			if (min_cool < 0 || w < min_cool)
				min_cool = w;
			continue;
		}
		int64_t w = store_wait_ms(e, &c->eps[i], c->now);
		if (w > 0) {
			if (min_wait < 0 || w < min_wait)
				min_wait = w;
			continue;
		}
		c->room[i] = true;
		have_room++;
	}
	if (have_room == 0) {
		if (min_wait >= 0) {
			/* A cooling endpoint may free before a limited one does. */
			if (min_cool >= 0 && min_cool < min_wait)
				min_wait = min_cool;
			c->res->verdict = STORE_LIMITED;
			c->res->retry_after_s = store_ceil_s(min_wait);
		} else {
			c->res->verdict = STORE_COOLING;
			c->res->retry_after_s = store_ceil_s(min_cool);
		}
		return 0;
	}
	size_t k = c->pick(c->pick_ctx, c->room, c->n);
	if (k >= c->n || !c->room[k]) {
		store_set_err(err, errlen, "state", "no endpoint picked");
		return -1;
	}
	struct store_ent *e = store_entry(s, c->eps[k].id);
	if (e == NULL || store_fit_ring(e, c->eps[k].rpm, c->now) != 0) {
		store_set_err(err, errlen, "state", "out of memory");
		return -1;
	}
	store_count_attempt(e, c->now);
	c->res->verdict = STORE_RESERVED;
	c->res->chosen = k;
	return 1;
}

static int
store_gdbm_reserve(struct store *base, const struct store_endpoint *eps, size_t n, int64_t now_ms,
		   store_pick_fn pick, void *pick_ctx, struct store_reservation *res, char *err,
		   size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	bool stack_room[32];
	struct store_reserve_ctx c = {eps, n, now_ms, pick, pick_ctx, res, stack_room};
	int rc;

	memset(res, 0, sizeof(*res));
	if (n == 0) {
		res->verdict = STORE_LIMITED;
		res->retry_after_s = 1;
		return 0;
	}
	if (n > sizeof(stack_room) / sizeof(stack_room[0])) {
		c.room = calloc(n, sizeof(*c.room));
		if (c.room == NULL) {
			store_set_err(err, errlen, "state", "out of memory");
			return -1;
		}
	}
	rc = store_step(st, STORE_STEP_WRITE, store_reserve_fn, &c, err, errlen);
	if (c.room != stack_room)
		free(c.room);
	return rc;
}

/* An upstream may report any number: totals stay within range. */
static int64_t
store_add_tokens(int64_t sum, long long add)
{
	const int64_t max = INT64_C(1) << 60;

	if (add <= 0)
		return sum;
	if (add > max || sum > max - add)
		return max;
	return sum + add;
}

/* Counts an attempt of ms (< 0: none) in a stored histogram. */
static void
store_hist_put(int64_t *bucket, int64_t *count, int64_t *sum_ms, int64_t ms)
{
	if (ms < 0)
		return;
	size_t i = store_hist_index(ms);
	if (i < STORE_HIST_N)
		bucket[i]++;
	(*count)++;
	*sum_ms = store_add_tokens(*sum_ms, ms);
}

static void
store_hist_get(struct store_hist *h, const int64_t *bucket, int64_t count, int64_t sum_ms)
{
	for (size_t i = 0; i < STORE_HIST_N; i++)
		h->bucket[i] = bucket[i];
	h->count = count;
	h->sum_ms = sum_ms;
}

struct store_record_ctx {
	const char *id;
	const struct store_outcome *o;
	const struct store_cooldown *cd;
	int64_t now;
};

static int
store_record_fn(struct store_state *s, void *ctx, char *err, size_t errlen)
{
	struct store_record_ctx *c = ctx;
	struct store_ent *e = store_entry(s, c->id);

	if (e == NULL) {
		store_set_err(err, errlen, "state", "out of memory");
		return -1;
	}
	if (c->o->success) {
		e->d.fail_run = 0;
		e->d.cooldown_until = 0;
	} else {
		e->d.fail_run++;
		if (c->cd->failures > 0 && e->d.fail_run >= c->cd->failures && c->cd->seconds > 0)
			e->d.cooldown_until = c->now + (int64_t)c->cd->seconds * 1000;
	}
	if (c->o->served) {
		e->d.requests++;
		e->d.last_used = c->now;
	}
	if (c->o->has_usage) {
		e->d.prompt = store_add_tokens(e->d.prompt, c->o->prompt_tokens);
		e->d.completion = store_add_tokens(e->d.completion, c->o->completion_tokens);
		e->d.total = store_add_tokens(e->d.total, c->o->total_tokens);
		/* As day_count: a new local day starts the day's counts at 0. */
		long today = clock_local_day(c->now);
		if (e->m.tok_day != today) {
			e->m.tok_day = today;
			e->m.day_prompt = e->m.day_completion = e->m.day_total = 0;
		}
		e->m.day_prompt = store_add_tokens(e->m.day_prompt, c->o->prompt_tokens);
		e->m.day_completion =
			store_add_tokens(e->m.day_completion, c->o->completion_tokens);
		e->m.day_total = store_add_tokens(e->m.day_total, c->o->total_tokens);
	}
	if ((unsigned)c->o->code_class < STORE_CLASS_N)
		e->m.answers[c->o->code_class]++;
	if (c->o->retry)
		e->m.retries++;
	store_hist_put(e->m.lat, &e->m.lat_count, &e->m.lat_sum_ms, c->o->latency_ms);
	store_hist_put(e->m.ttfb, &e->m.ttfb_count, &e->m.ttfb_sum_ms, c->o->ttfb_ms);
	return 1;
}

static int
store_gdbm_record(struct store *base, const char *id, const struct store_outcome *o,
		  const struct store_cooldown *cd, int64_t now_ms, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	struct store_record_ctx c = {id, o, cd, now_ms};

	return store_step(st, STORE_STEP_WRITE, store_record_fn, &c, err, errlen);
}

struct store_read_ctx {
	const struct store_endpoint *eps;
	size_t n;
	int64_t now;
	struct store_usage *out;
};

static int
store_read_fn(struct store_state *s, void *ctx, char *err, size_t errlen)
{
	struct store_read_ctx *c = ctx;

	(void)err, (void)errlen;
	for (size_t i = 0; i < c->n; i++) {
		const struct store_ent *e = store_find(s, c->eps[i].id);
		struct store_usage *u = &c->out[i];
		memset(u, 0, sizeof(*u));
		u->rpm_used = store_rpm_used(e, c->now);
		u->rpd_used = e->d.day == clock_local_day(c->now) ? (long)e->d.day_count : 0;
		u->fail_run = (long)e->d.fail_run;
		u->cooldown_until = e->d.cooldown_until > c->now ? e->d.cooldown_until : 0;
		u->prompt_tokens = e->d.prompt;
		u->completion_tokens = e->d.completion;
		u->total_tokens = e->d.total;
		/* Counts of an earlier day are no tokens of today's. */
		if (e->m.tok_day == clock_local_day(c->now)) {
			u->day_prompt_tokens = e->m.day_prompt;
			u->day_completion_tokens = e->m.day_completion;
			u->day_total_tokens = e->m.day_total;
		}
		u->requests = e->d.requests;
		u->last_used = e->d.last_used;
		u->attempts = e->d.attempts;
		u->retries = e->m.retries;
		for (size_t k = 0; k < STORE_CLASS_N; k++)
			u->answers[k] = e->m.answers[k];
		store_hist_get(&u->latency, e->m.lat, e->m.lat_count, e->m.lat_sum_ms);
		store_hist_get(&u->ttfb, e->m.ttfb, e->m.ttfb_count, e->m.ttfb_sum_ms);
		int64_t w = store_wait_ms(e, &c->eps[i], c->now);
		u->free_in_s = w > 0 ? store_ceil_s(w) : 0;
	}
	return 0;
}

static int
store_gdbm_read(struct store *base, const struct store_endpoint *eps, size_t n, int64_t now_ms,
		struct store_usage *out, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	struct store_read_ctx c = {eps, n, now_ms, out};

	return store_step(st, STORE_STEP_READ, store_read_fn, &c, err, errlen);
}

static int
store_reset_fn(struct store_state *s, void *ctx, char *err, size_t errlen)
{
	const char *id = ctx;

	(void)err, (void)errlen;
	for (size_t i = 0; i < s->n; i++) {
		struct store_ent *e = &s->e[i];
		if (id != NULL && strcmp(e->id, id) != 0)
			continue;
		e->d.prompt = e->d.completion = e->d.total = 0;
		e->d.requests = 0;
		e->d.last_used = 0;
	}
	return 1;
}

static int
store_gdbm_reset_tokens(struct store *base, const char *id, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	return store_step(st, STORE_STEP_WRITE, store_reset_fn, (void *)id, err, errlen);
}

static int
store_count_fn(struct store_state *s, void *ctx, char *err, size_t errlen)
{
	const enum store_reject *why = ctx;

	(void)err, (void)errlen;
	s->rejects[*why]++;
	return 1;
}

static int
store_gdbm_count(struct store *base, enum store_reject reason, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	return store_step(st, STORE_STEP_WRITE, store_count_fn, &reason, err, errlen);
}

static int
store_read_rejects_fn(struct store_state *s, void *ctx, char *err, size_t errlen)
{
	long long *out = ctx;

	(void)err, (void)errlen;
	for (size_t i = 0; i < STORE_REJECT_N; i++)
		out[i] = s->rejects[i];
	return 0;
}

static int
store_gdbm_read_rejects(struct store *base, long long *out, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	return store_step(st, STORE_STEP_READ, store_read_rejects_fn, out, err, errlen);
}

static int
store_check_fn(struct store_state *s, void *ctx, char *err, size_t errlen)
{
	(void)s, (void)ctx, (void)err, (void)errlen;
	return 0;
}

static int
store_gdbm_check(struct store *base, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	return store_step(st, STORE_STEP_WRITE, store_check_fn, NULL, err, errlen);
}

static int
store_gdbm_sync(struct store *base, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	return store_step(st, STORE_STEP_SYNC, NULL, NULL, err, errlen);
}

static const struct store_ops store_gdbm_ops = {
	.what = "state file",
	.close = store_gdbm_close,
	.reserve = store_gdbm_reserve,
	.record = store_gdbm_record,
	.read = store_gdbm_read,
	.count = store_gdbm_count,
	.read_rejects = store_gdbm_read_rejects,
	.reset_tokens = store_gdbm_reset_tokens,
	.check = store_gdbm_check,
	.sync = store_gdbm_sync,
};

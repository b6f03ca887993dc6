/* The GDBM store: one database file shared by every process, guarded by an
 * exclusive flock on a lock file beside it ("PATH.lock"), which also holds
 * the live copy of the state (store_live.h).
 *
 * All endpoints live in one record (store_codec.h). A step takes the lock,
 * loads the live copy, applies the rules of limit.h to it and writes the
 * next copy into the shared mapping: no system call beyond
 * the lock and a stat, no fsync. The GDBM file gets the copy once a second
 * (store_sync), written alternately under two keys ("state.0", "state.1")
 * with a sequence number at both ends, so a process killed while writing it
 * leaves the copy before it intact; it is what a reboot starts from.
 *
 * The database is opened after taking the lock, so the header it reads is
 * the one the last holder wrote, and closed after releasing it, so the fsync
 * that gdbm_close always does runs outside the lock (doc/behaviour.md,
 * Web servers: GDBM and flock). GDBM_NOMMAP: write(2) copies a record into the page cache front to
 * back, which is what the sequence check relies on.
 *
 * store.c hands calls here through store_gdbm_ops (store_impl.h); all but
 * store_gdbm_open (store_gdbm.h) is static. */
#include "store_gdbm.h"

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
#include "dynbuf.h"
#include "limit.h"
#include "store_codec.h"
#include "store_live.h"
#include "usage_book.h"

/* Tries by yielding before the flock is polled with sleeps. */
#define STORE_GDBM_LOCK_YIELDS 50
/* How long a step waits for the lock before the store counts as unusable. */
#define STORE_GDBM_LOCK_WAIT_MS 3000
/* The encoding buffer a handle keeps from step to step from this size on
 * (store_gdbm_step). */
#define STORE_GDBM_ENC_KEEP (64 * 1024)
/* A record's bound: GDBM keeps a value's size in an int. */
#define STORE_GDBM_RECORD_MAX ((size_t)1 << 30)

struct store_gdbm {
	struct store base; /* first: store.c sees this much */
	char *path;
	char *lock_path;
	int lock_fd;
	bool readonly;
	struct store_live live; /* mapping of the lock file */
	size_t lock_size;       /* of the lock file when it was last locked */
	/* The state file as the last check under the lock found it good. */
	struct stat checked;
	bool checked_ok;
	/* The record a step writes, its memory kept for the next step when
	 * large (STORE_GDBM_ENC_KEEP). */
	struct dynbuf enc;
};

static void
store_gdbm_set_err(char *err, size_t errlen, const char *what, const char *why)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s", what, why);
}

static const char *const store_gdbm_slot_key[2] = {"state.0", "state.1"};

/* Loads the newest whole copy. A missing state is an empty one; a state of
 * which no copy is whole is an error: guessing could exceed a limit. */
static int
store_gdbm_load(GDBM_FILE db, struct store_codec_rec *s, char *err, size_t errlen)
{
	datum val[2];
	uint64_t seq[2] = {0, 0};
	int ok[2], rc = -1;

	memset(s, 0, sizeof(*s));
	for (int k = 0; k < 2; k++) {
		datum key = {(char *)store_gdbm_slot_key[k], (int)strlen(store_gdbm_slot_key[k])};
		val[k] = gdbm_fetch(db, key);
		if (val[k].dptr == NULL && gdbm_errno != GDBM_ITEM_NOT_FOUND) {
			store_gdbm_set_err(err, errlen, "state file", gdbm_db_strerror(db));
			if (k == 1)
				free(val[0].dptr);
			return -1;
		}
		ok[k] = store_codec_check(val[k].dptr, (size_t)val[k].dsize, &seq[k]);
	}
	int pick = -1;
	if (ok[0] == 1 && (ok[1] != 1 || seq[0] > seq[1]))
		pick = 0;
	else if (ok[1] == 1)
		pick = 1;
	if (pick >= 0) {
		if (store_codec_decode(val[pick].dptr, (size_t)val[pick].dsize, s) != 0)
			store_gdbm_set_err(err, errlen, "state file", "damaged record");
		else if (store_codec_own_books(s) != 0) /* the bytes are freed below */
			store_codec_free(s),
				store_gdbm_set_err(err, errlen, "state", "out of memory");
		else
			rc = 0;
	} else if (ok[0] < 0 || ok[1] < 0) {
		store_gdbm_set_err(err, errlen, "state file", "damaged record (no whole copy)");
	} else {
		rc = 0; /* a new file */
	}
	free(val[0].dptr);
	free(val[1].dptr);
	return rc;
}

/* Writes rec (of sequence number seq) over the older of the two copies. */
static int
store_gdbm_save(GDBM_FILE db, const char *rec, size_t len, uint64_t seq, char *err, size_t errlen)
{
	const char *k = store_gdbm_slot_key[seq % 2];
	datum key = {(char *)k, (int)strlen(k)};
	datum val = {(char *)rec, (int)len};

	if (gdbm_store(db, key, val, GDBM_REPLACE) != 0) {
		store_gdbm_set_err(err, errlen, "state file", gdbm_db_strerror(db));
		return -1;
	}
	return 0;
}

/* Threads of one process queue here before the flock. Each thread's handle
 * is its own open file description, so flock alone would exclude them too,
 * but a waiter can only poll it: hundreds of threads polling one lock
 * (500 streams starting at once) burn the CPU the streams need. Behind the
 * mutex they sleep until woken, in order; only one per process polls. */
static pthread_mutex_t store_gdbm_process_lock = PTHREAD_MUTEX_INITIALIZER;

/* Takes the flock, polling until deadline_ms (monotonic). */
static int
store_gdbm_lock_fd(struct store_gdbm *st, int how, int64_t deadline_ms, char *err, size_t errlen)
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
			store_gdbm_set_err(err, errlen, st->lock_path, strerror(errno));
			return -1;
		}
		if (tries < STORE_GDBM_LOCK_YIELDS) {
			sched_yield();
			continue;
		}
		if (clock_mono_ms() > deadline_ms) {
			store_gdbm_set_err(err, errlen, st->lock_path,
					   "locked by another process for too long");
			return -1;
		}
		nanosleep(&pause, NULL);
		if (pause.tv_nsec < 500000)
			pause.tv_nsec *= 2;
	}
}

/* Opens one of the store's files (flags as open(2), O_NOFOLLOW and
 * O_CLOEXEC added) and checks it is safe to trust: never through a symbolic
 * link, a regular file, not writable by every user, and, unless the store
 * is read-only, owned by this process's user. Somebody else's file could be
 * changed under the responder or point it at a file it should not write
 * (doc/behaviour.md, Limits and state: GDBM). A read-only store (--status,
 * which root may run) accepts another owner: it writes nothing. Returns the
 * descriptor, or -1 with err naming the file and why. */
static int
store_gdbm_open_file(const struct store_gdbm *st, const char *path, int flags, char *err,
		     size_t errlen)
{
	char why[96];
	struct stat sb;
	int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC, 0600);

	if (fd < 0) {
		store_gdbm_set_err(err, errlen, path,
				   errno == ELOOP ? "is a symbolic link, refused"
						  : strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) != 0) {
		snprintf(why, sizeof(why), "%s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(why, sizeof(why), "not a regular file, refused");
		goto fail;
	}
	if (sb.st_mode & S_IWOTH) {
		snprintf(why, sizeof(why), "writable by every user, refused");
		goto fail;
	}
	if (!st->readonly && sb.st_uid != geteuid()) {
		snprintf(why, sizeof(why), "owned by uid %lu, not by this user (uid %lu), refused",
			 (unsigned long)sb.st_uid, (unsigned long)geteuid());
		goto fail;
	}
	return fd;
fail:
	store_gdbm_set_err(err, errlen, path, why);
	close(fd);
	return -1;
}

static int
store_gdbm_open_lock_file(struct store_gdbm *st, char *err, size_t errlen)
{
	/* Its own open file description: flock then also excludes other threads. */
	st->lock_fd = store_gdbm_open_file(st, st->lock_path,
					   st->readonly ? O_RDONLY : O_RDWR | O_CREAT, err, errlen);
	return st->lock_fd < 0 ? -1 : 0;
}

/* Whether held (the lock file open) is the file named named. */
static bool
store_gdbm_same_file(const struct stat *held, const struct stat *named)
{
	return held->st_ino == named->st_ino && held->st_dev == named->st_dev;
}

/* Takes the lock on the lock file that is at lock_path now. A lock file
 * deleted or replaced since it was opened (its folder removed and made
 * again) would exclude nobody who opens the new one, so it is opened anew.
 * seen: lock_path's lstat taken just before the step (NULL: none); when it
 * names the file held, the lock file is not looked up again with the lock
 * held, which keeps a path lookup out of the time every other step of the
 * host waits (doc/behaviour.md, Limits and state: GDBM). The one change it cannot see is the lock
 * file renamed away (its folder included) while the step waited for the lock; the lookup under the
 * lock missed the same change made a moment later. */
static int
store_gdbm_lock(struct store_gdbm *st, int how, const struct stat *seen, char *err, size_t errlen)
{
	int64_t deadline = clock_mono_ms() + STORE_GDBM_LOCK_WAIT_MS;
	struct timespec until;
	int rc;

	/* pthread_mutex_timedlock counts on CLOCK_REALTIME. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += STORE_GDBM_LOCK_WAIT_MS / 1000;
	rc = pthread_mutex_timedlock(&store_gdbm_process_lock, &until);
	if (rc != 0) {
		store_gdbm_set_err(err, errlen, st->lock_path,
				   rc == ETIMEDOUT ? "locked by another process for too long"
						   : strerror(rc));
		return -1;
	}
	for (int tries = 0; tries < 3; tries++) {
		struct stat held, named;
		if (st->lock_fd < 0 && store_gdbm_open_lock_file(st, err, errlen) != 0)
			break;
		if (store_gdbm_lock_fd(st, how, deadline, err, errlen) != 0)
			break;
		/* seen may be from before a long wait for the lock: it is
		 * trusted only while the file held still has a name (a lock
		 * file deleted or replaced meanwhile has none left). */
		if (fstat(st->lock_fd, &held) == 0 &&
		    ((tries == 0 && seen != NULL && held.st_nlink > 0 &&
		      store_gdbm_same_file(&held, seen)) ||
		     (lstat(st->lock_path, &named) == 0 && store_gdbm_same_file(&held, &named)))) {
			st->lock_size = (size_t)held.st_size;
			return 0;
		}
		flock(st->lock_fd, LOCK_UN);
		store_live_detach(&st->live);
		close(st->lock_fd);
		st->lock_fd = -1;
		if (tries == 2)
			store_gdbm_set_err(err, errlen, st->lock_path, "lock file keeps changing");
	}
	pthread_mutex_unlock(&store_gdbm_process_lock);
	return -1;
}

static void
store_gdbm_unlock(struct store_gdbm *st)
{
	flock(st->lock_fd, LOCK_UN);
	pthread_mutex_unlock(&store_gdbm_process_lock);
}

/* Opens the database through store_gdbm_open_file; the lock must be held.
 * gdbm_errno tells why when it returns NULL, errno when the file could not be
 * opened (*opened false, err set). */
static GDBM_FILE
store_gdbm_db_fd_open(struct store_gdbm *st, int gdbm_mode, bool *opened, char *err, size_t errlen)
{
	int base = GDBM_NOLOCK | GDBM_NOMMAP | GDBM_CLOEXEC | GDBM_CLOERROR;
	int flags = gdbm_mode == GDBM_READER    ? O_RDONLY
		    : gdbm_mode == GDBM_WRCREAT ? O_RDWR | O_CREAT
						: O_RDWR;
	int fd = store_gdbm_open_file(st, st->path, flags, err, errlen);

	*opened = fd >= 0;
	if (fd < 0)
		return NULL;
	return gdbm_fd_open(fd, st->path, 0, gdbm_mode | base, NULL);
}

/* Opens the database; the lock must be held. */
static GDBM_FILE
store_gdbm_db_open(struct store_gdbm *st, bool write, char *err, size_t errlen)
{
	GDBM_FILE db;
	bool opened;

	db = store_gdbm_db_fd_open(st, write ? GDBM_WRCREAT : GDBM_READER, &opened, err, errlen);
	if (db == NULL && opened && write && gdbm_errno == GDBM_NEED_RECOVERY) {
		db = store_gdbm_db_fd_open(st, GDBM_WRITER, &opened, err, errlen);
		if (db != NULL && gdbm_recover(db, NULL, 0) != 0) {
			store_gdbm_set_err(err, errlen, st->path, gdbm_db_strerror(db));
			gdbm_close(db);
			return NULL;
		}
	}
	if (db == NULL && opened) {
		const char *why = gdbm_strerror(gdbm_errno);
		if (gdbm_errno == GDBM_FILE_OPEN_ERROR || gdbm_errno == GDBM_FILE_STAT_ERROR)
			why = strerror(errno);
		store_gdbm_set_err(err, errlen, st->path, why);
	}
	return db;
}

static bool
store_gdbm_db_as_noted(const struct stat *sb, const struct store_live_db *d)
{
	return (uint64_t)sb->st_dev == d->dev && (uint64_t)sb->st_ino == d->ino &&
	       (uint64_t)sb->st_size == d->size &&
	       (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec == d->mtime_ns &&
	       (int64_t)sb->st_ctim.tv_sec * 1000000000 + sb->st_ctim.tv_nsec == d->ctime_ns;
}

/* Whether the GDBM file is still as this store last left it: a file
 * replaced, rewritten, truncated or made read-only by somebody else is
 * opened again at once, so that a damaged one is noticed (doc/behaviour.md,
 * Limits and state: GDBM). seen: its lstat taken just before the step (NULL:
 * none). When that already shows the file as noted, it was so a moment ago
 * and the step goes on without looking again under the lock (a change
 * since is the next step's to see); otherwise, as when a sync of another
 * process wrote it meanwhile, it is looked at again now. */
static bool
store_gdbm_db_unchanged(const struct store_gdbm *st, const struct store_live_db *d,
			const struct stat *seen)
{
	struct stat sb;

	if (seen != NULL && store_gdbm_db_as_noted(seen, d))
		return true;
	/* lstat: a file replaced by a symbolic link is opened again, and refused. */
	if (lstat(st->path, &sb) != 0)
		return false;
	return store_gdbm_db_as_noted(&sb, d);
}

static void
store_gdbm_db_note(GDBM_FILE db, uint64_t seq, struct store_live_db *d)
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
store_gdbm_live_load(struct store_gdbm *st, int attached, struct store_codec_rec *s)
{
	const char *p;
	size_t len;
	uint64_t seq;

	if (attached != 1 || (p = store_live_newest(&st->live, &len, &seq)) == NULL)
		return 0;
	/* Written length last, so never torn; anything else wrong with it is
	 * somebody else's doing, and the GDBM file is the copy to trust then. */
	if (store_codec_check(p, len, &seq) != 1 || store_codec_decode(p, len, s) != 0)
		return 0;
	return 1;
}

enum store_gdbm_step_kind {
	STORE_GDBM_STEP_READ,
	STORE_GDBM_STEP_WRITE,
	STORE_GDBM_STEP_SYNC /* write: also bring the GDBM file up to the live copy */
};

/* Runs one step under the lock: load the live copy (or, when there is none,
 * the GDBM file's), call fn, write the copy it changed. The GDBM file is
 * opened only when the live copy is missing, when the file changed behind
 * the store's back, or to sync it; it is closed after the lock is released,
 * so that gdbm_close's fsync runs outside it. fn returns -1 (error), 0 (no
 * change) or 1 (save); it may be NULL. */
static int
store_gdbm_step(struct store_gdbm *st, enum store_gdbm_step_kind kind,
		int (*fn)(struct store_codec_rec *s, void *ctx, char *err, size_t errlen),
		void *ctx, char *err, size_t errlen)
{
	bool write = kind != STORE_GDBM_STEP_READ;
	struct store_codec_rec s;
	struct store_live_db note;
	GDBM_FILE db = NULL;
	const char *rec = NULL;
	size_t len = 0;
	int rc = -1, attached, loaded;

	memset(&s, 0, sizeof(s));
	if (write && st->readonly) {
		store_gdbm_set_err(err, errlen, st->path, "opened read-only");
		return -1;
	}
	/* Both files looked up before the lock, not while every other step
	 * waits for it: the path lookups were a third of the time it was held
	 * (doc/behaviour.md, Limits and state: GDBM). */
	struct stat seen_db, seen_lock;
	bool db_seen = lstat(st->path, &seen_db) == 0;
	bool lock_seen = lstat(st->lock_path, &seen_lock) == 0;
	if (store_gdbm_lock(st, write ? LOCK_EX : LOCK_SH, lock_seen ? &seen_lock : NULL, err,
			    errlen) != 0)
		return -1;
	attached = store_live_attach(&st->live, st->lock_fd, st->lock_size, err, errlen);
	if (attached < 0)
		goto out;
	loaded = store_gdbm_live_load(st, attached, &s);
	bool need_db = loaded == 0;
	if (loaded == 1) {
		const struct store_live_db *d = store_live_db(&st->live);
		need_db = !store_gdbm_db_unchanged(st, d, db_seen ? &seen_db : NULL) ||
			  (kind == STORE_GDBM_STEP_SYNC && d->seq != s.seq);
	}
	if (need_db) {
		struct store_codec_rec g;
		db = store_gdbm_db_open(st, write, err, errlen);
		/* Read whole even when the live copy is newer: a damaged file is
		 * refused (doc/behaviour.md, Limits and state: GDBM) rather than silently written
		 * over. */
		if (db == NULL || store_gdbm_load(db, &g, err, errlen) != 0) {
			rc = -1;
			goto out;
		}
		if (loaded == 0 || g.seq > s.seq) {
			/* No live copy, or somebody put a newer file in place. */
			store_codec_free(&s);
			s = g;
			loaded = 0;
		} else {
			store_codec_free(&g);
		}
	}
	rc = fn != NULL ? fn(&s, ctx, err, errlen) : 0;
	if (rc < 0 || !write || st->readonly)
		goto out;
	bool changed = rc == 1;
	if (changed)
		s.seq++;
	if (changed || db != NULL) {
		rec = store_codec_encode_into(&s, &st->enc, &len);
		if (rec == NULL) {
			store_gdbm_set_err(err, errlen, "state", "out of memory");
			rc = -1;
			goto out;
		}
	}
	if (db != NULL) {
		/* The GDBM file first: a live copy set up anew below may start from it. */
		if (store_gdbm_save(db, rec, len, s.seq, err, errlen) != 0) {
			rc = -1;
			goto out;
		}
		store_gdbm_db_note(db, s.seq, &note);
	}
	if (loaded == 0 || (changed && store_live_put(&st->live, rec, len, s.seq) != 0)) {
		/* No live copy yet, or it outgrew its slot: the GDBM file holds it. */
		if (db == NULL) {
			db = store_gdbm_db_open(st, true, err, errlen);
			if (db == NULL || store_gdbm_save(db, rec, len, s.seq, err, errlen) != 0) {
				rc = -1;
				goto out;
			}
			store_gdbm_db_note(db, s.seq, &note);
		}
		if (store_live_reset(&st->live, rec, len, s.seq, &note, err, errlen) != 0) {
			rc = -1;
			goto out;
		}
	} else if (db != NULL) {
		*store_live_db(&st->live) = note;
	}
out:
	store_gdbm_unlock(st);
	if (db != NULL)
		gdbm_close(db);
	store_codec_free(&s);
	/* Every worker thread has a handle: a record of a few KB kept in each
	 * costs more memory than its malloc costs time. A large one (many
	 * clients' books) is kept, as freeing it at the heap's top and taking
	 * it again costs page faults each step. */
	if (st->enc.alloc < STORE_GDBM_ENC_KEEP)
		dynbuf_free(&st->enc);
	return rc < 0 ? -1 : 0;
}

/* The moment of a step, in the local calendar (an endpoint's own zone is
 * applied per endpoint, by limit_now_in). */
static struct limit_now
store_gdbm_now(int64_t now_ms)
{
	struct limit_now now = {now_ms, tz_day(NULL, now_ms), tz_ms_to_midnight, NULL};
	return now;
}

static int store_gdbm_check_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen);

static const struct store_ops store_gdbm_ops;
static void store_gdbm_close(struct store *base);

struct store *
store_gdbm_open(const char *path, bool readonly, char *err, size_t errlen)
{
	struct store_gdbm *st;
	size_t n;

	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		store_gdbm_set_err(err, errlen, "state", "out of memory");
		return NULL;
	}
	st->base.ops = &store_gdbm_ops;
	st->lock_fd = -1;
	dynbuf_init(&st->enc, STORE_GDBM_RECORD_MAX);
	st->readonly = readonly;
	store_live_handle(&st->live, readonly);
	n = strlen(path) + sizeof(".lock");
	st->path = strdup(path);
	st->lock_path = malloc(n);
	if (st->path == NULL || st->lock_path == NULL) {
		store_gdbm_set_err(err, errlen, "state", "out of memory");
		goto fail;
	}
	snprintf(st->lock_path, n, "%s.lock", path);
	if (store_gdbm_step(st, readonly ? STORE_GDBM_STEP_READ : STORE_GDBM_STEP_WRITE,
			    store_gdbm_check_fn, NULL, err, errlen) != 0)
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
	dynbuf_free(&st->enc);
	free(st);
}

struct store_gdbm_reserve_ctx {
	const struct store_endpoint *eps;
	size_t n;
	const struct store_endpoint *client; /* NULL: none */
	struct limit_now now;
	store_pick_fn pick;
	void *pick_ctx;
	struct store_reservation *res;
	bool *room;
	const struct limit_state **states;
};

static int
store_gdbm_reserve_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
{
	struct store_gdbm_reserve_ctx *c = ctx;

	if (c->client != NULL) {
		int64_t w = limit_wait_ms(store_codec_find(s, c->client->id), c->client, &c->now);
		if (w > 0) {
			c->res->verdict = STORE_CLIENT_LIMITED;
			c->res->retry_after_s = limit_retry_after_s(w);
			return 0;
		}
	}
	for (size_t i = 0; i < c->n; i++) {
		c->states[i] = store_codec_find(s, c->eps[i].id);
		if (c->eps[i].model != NULL)
			c->states[c->n + i] = store_codec_find(s, c->eps[i].model->id);
	}
	if (limit_look(c->states, c->eps, c->n, &c->now, c->room, c->res) == 0)
		return 0;
	size_t k = c->pick(c->pick_ctx, c->room, c->n);
	if (k >= c->n || !c->room[k]) {
		store_gdbm_set_err(err, errlen, "state", "no endpoint picked");
		return -1;
	}
	struct store_codec_ent *e = store_codec_entry(s, c->eps[k].id);
	if (e == NULL || store_codec_ring_room(e, c->eps[k].rpm) != 0) {
		store_gdbm_set_err(err, errlen, "state", "out of memory");
		return -1;
	}
	struct limit_now at = limit_now_in(&c->now, c->eps[k].zone);
	limit_fit_ring(&e->s, c->eps[k].rpm, at.ms);
	c->res->recheck = limit_count_attempt(&e->s, &at);
	limit_count_tokens(&e->s, c->eps[k].estimate, &at);
	if (c->eps[k].model != NULL) {
		/* The model's entry in the same step (rule 27); e may move. */
		struct store_endpoint m = limit_model_endpoint(&c->eps[k]);
		e = store_codec_entry(s, m.id);
		if (e == NULL || store_codec_ring_room(e, m.rpm) != 0) {
			store_gdbm_set_err(err, errlen, "state", "out of memory");
			return -1;
		}
		limit_fit_ring(&e->s, m.rpm, at.ms);
		(void)limit_count_attempt(&e->s, &at);
		limit_count_tokens(&e->s, m.estimate, &at);
	}
	if (c->client != NULL) {
		/* Under the same lock, in the same record: all or none. */
		struct store_codec_ent *ce = store_codec_entry(s, c->client->id);
		if (ce == NULL || store_codec_ring_room(ce, c->client->rpm) != 0) {
			store_gdbm_set_err(err, errlen, "state", "out of memory");
			return -1;
		}
		limit_fit_ring(&ce->s, c->client->rpm, c->now.ms);
		limit_count_attempt(&ce->s, &c->now);
		limit_count_tokens(&ce->s, c->client->estimate, &c->now);
	}
	c->res->verdict = STORE_RESERVED;
	c->res->at_ms = at.ms;
	c->res->at_day = at.day;
	c->res->chosen = k;
	return 1;
}

static int
store_gdbm_reserve(struct store *base, const struct store_endpoint *eps, size_t n,
		   const struct store_endpoint *client, int64_t now_ms, store_pick_fn pick,
		   void *pick_ctx, struct store_reservation *res, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	bool stack_room[32];
	const struct limit_state *stack_states[2 * 32];
	struct store_gdbm_reserve_ctx c = {eps,         n,        client, store_gdbm_now(now_ms),
					   pick,        pick_ctx, res,    stack_room,
					   stack_states};
	int rc;

	memset(res, 0, sizeof(*res));
	if (n == 0) {
		res->verdict = STORE_LIMITED;
		res->retry_after_s = 1;
		return 0;
	}
	if (n > sizeof(stack_room) / sizeof(stack_room[0])) {
		c.room = calloc(n, sizeof(*c.room));
		c.states = calloc(2 * n, sizeof(*c.states));
		if (c.room == NULL || c.states == NULL) {
			store_gdbm_set_err(err, errlen, "state", "out of memory");
			rc = -1;
			goto out;
		}
	}
	rc = store_gdbm_step(st, STORE_GDBM_STEP_WRITE, store_gdbm_reserve_fn, &c, err, errlen);
out:
	if (c.room != stack_room)
		free(c.room);
	if (c.states != stack_states)
		free(c.states);
	return rc;
}

/* Counts a served answer in its client's book (usage_book.h), in the
 * record's step: on the responder's local day, as now has it. */
static int
store_gdbm_count_client(struct store_codec_rec *s, const struct store_outcome *o,
			const struct limit_now *now)
{
	struct store_codec_book b = {0};
	struct usage_book book;
	size_t off = 0;
	char *p = NULL;
	bool found = false;
	int rc = -1;

	if (o->client == NULL || !o->served)
		return 0;
	usage_book_init(&book);
	while (!found && store_codec_book_next(s, &off, &b))
		found = b.client_len == strlen(o->client) &&
			memcmp(b.client, o->client, b.client_len) == 0;
	/* A damaged book starts over: refusing the answer's record (its
	 * endpoint's counts) for it would be worse. */
	if (!found || usage_book_decode(&book, b.p, b.len) != 0)
		usage_book_decode(&book, NULL, 0);
	if (usage_book_count(&book, now->day, o->model, o) < 0)
		goto out;
	size_t len = usage_book_size(&book);
	p = malloc(len);
	if (p == NULL)
		goto out;
	usage_book_put(&book, p);
	rc = store_codec_book_set(s, o->client, p, len);
out:
	free(p);
	usage_book_free(&book);
	return rc;
}

struct store_gdbm_record_ctx {
	const char *id;
	const struct store_outcome *o;
	const struct store_cooldown *cd;
	struct limit_now now;
};

static int
store_gdbm_record_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
{
	struct store_gdbm_record_ctx *c = ctx;
	struct store_codec_ent *e = store_codec_entry(s, c->id);

	if (e == NULL) {
		store_gdbm_set_err(err, errlen, "state", "out of memory");
		return -1;
	}
	struct limit_now at = limit_now_in(&c->now, c->o->zone);
	limit_record(&e->s, c->o, c->cd, &at);
	if (store_gdbm_count_client(s, c->o, &c->now) != 0) {
		store_gdbm_set_err(err, errlen, "state", "out of memory");
		return -1;
	}
	return 1;
}

static int
store_gdbm_record(struct store *base, const char *id, const struct store_outcome *o,
		  const struct store_cooldown *cd, int64_t now_ms, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	struct store_gdbm_record_ctx c = {id, o, cd, store_gdbm_now(now_ms)};

	return store_gdbm_step(st, STORE_GDBM_STEP_WRITE, store_gdbm_record_fn, &c, err, errlen);
}

struct store_gdbm_read_ctx {
	const struct store_endpoint *eps;
	size_t n;
	struct limit_now now;
	struct store_usage *out;
};

static int
store_gdbm_read_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
{
	struct store_gdbm_read_ctx *c = ctx;

	(void)err, (void)errlen;
	for (size_t i = 0; i < c->n; i++)
		limit_usage(store_codec_find(s, c->eps[i].id), &c->eps[i], &c->now, &c->out[i]);
	return 0;
}

static int
store_gdbm_read(struct store *base, const struct store_endpoint *eps, size_t n, int64_t now_ms,
		struct store_usage *out, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	struct store_gdbm_read_ctx c = {eps, n, store_gdbm_now(now_ms), out};

	return store_gdbm_step(st, STORE_GDBM_STEP_READ, store_gdbm_read_fn, &c, err, errlen);
}

struct store_gdbm_clients_ctx {
	const char *client; /* NULL: all */
	long today;
	struct store_clients *out;
};

static int
store_gdbm_clients_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
{
	struct store_gdbm_clients_ctx *c = ctx;
	struct store_codec_book b;
	size_t off = 0;

	while (store_codec_book_next(s, &off, &b)) {
		if (c->client != NULL && (b.client_len != strlen(c->client) ||
					  memcmp(b.client, c->client, b.client_len) != 0))
			continue;
		if (store_clients_add(c->out, b.client, b.client_len, b.p, b.len, c->today, err,
				      errlen) != 0)
			return -1;
	}
	return 0;
}

static int
store_gdbm_read_clients(struct store *base, const char *client, int64_t now_ms,
			struct store_clients *out, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	struct store_gdbm_clients_ctx c = {client, store_gdbm_now(now_ms).day, out};

	return store_gdbm_step(st, STORE_GDBM_STEP_READ, store_gdbm_clients_fn, &c, err, errlen);
}

static int
store_gdbm_reset_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
{
	const char *id = ctx;

	(void)err, (void)errlen;
	for (size_t i = 0; i < s->n; i++) {
		if (id != NULL && strcmp(s->e[i].id, id) != 0)
			continue;
		limit_reset_tokens(&s->e[i].s);
	}
	return 1;
}

static int
store_gdbm_reset_tokens(struct store *base, const char *id, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	return store_gdbm_step(st, STORE_GDBM_STEP_WRITE, store_gdbm_reset_fn, (void *)id, err,
			       errlen);
}

struct store_gdbm_admin_ctx {
	const char *id;
	enum store_admin action;
	struct limit_now now;
};

static int
store_gdbm_admin_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
{
	struct store_gdbm_admin_ctx *c = ctx;
	struct store_codec_ent *e = store_codec_entry(s, c->id);

	if (e == NULL) {
		store_gdbm_set_err(err, errlen, "state", "out of memory");
		return -1;
	}
	limit_admin(&e->s, c->action, &c->now);
	return 1;
}

static int
store_gdbm_admin(struct store *base, const char *id, enum store_admin action, int64_t now_ms,
		 char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	struct store_gdbm_admin_ctx c = {id, action, store_gdbm_now(now_ms)};

	return store_gdbm_step(st, STORE_GDBM_STEP_WRITE, store_gdbm_admin_fn, &c, err, errlen);
}

struct store_gdbm_fold_ctx {
	const long long *add;
	int64_t now_ms; /* read before the lock is taken */
};

static int
store_gdbm_fold_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
{
	const struct store_gdbm_fold_ctx *c = ctx;
	const long long *add = c->add;
	long long refused = add[STORE_REJECT_RATE_LIMIT] + add[STORE_REJECT_COOLDOWN];

	for (size_t k = 0; k < STORE_REJECT_N; k++)
		s->rejects[k] += add[k];
	if (refused > 0) {
		/* In the same step: the history's bucket of this sync's minute
		 * (Limits and state, rule 34). */
		struct store_codec_ent *e = store_codec_entry(s, STORE_GATEWAY_ID);
		if (e == NULL) {
			store_gdbm_set_err(err, errlen, "state", "out of memory");
			return -1;
		}
		limit_record_refusals(&e->s, refused, c->now_ms);
	}
	return 1;
}

/* All or nothing: one step. */
static int
store_gdbm_fold(struct store *base, long long *add, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	struct store_gdbm_fold_ctx c = {add, clock_now_ms()};

	return store_gdbm_step(st, STORE_GDBM_STEP_WRITE, store_gdbm_fold_fn, &c, err, errlen);
}

static int
store_gdbm_read_rejects_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
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
	return store_gdbm_step(st, STORE_GDBM_STEP_READ, store_gdbm_read_rejects_fn, out, err,
			       errlen);
}

/* The check's step: nothing to change; with the store handle as ctx (a
 * health check), notes how the state file looks now that a step under the
 * lock found it good, for store_gdbm_check's next look. */
static int
store_gdbm_check_fn(struct store_codec_rec *s, void *ctx, char *err, size_t errlen)
{
	struct store_gdbm *st = ctx;

	(void)s, (void)err, (void)errlen;
	if (st != NULL)
		st->checked_ok = lstat(st->path, &st->checked) == 0;
	return 0;
}

/* Whether the state file's stat is the one noted by the last check. */
static bool
store_gdbm_same_stat(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mode == b->st_mode && a->st_uid == b->st_uid &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* /health, open to anyone, must not hold reservations up: it takes neither
 * this process's step mutex nor the exclusive lock while nothing changed.
 * The state file as this handle's last check found it good (same stat),
 * still readable and writable, the lock file the one it has open, and the
 * lock free to share (tried without waiting, a few times: a step holds it
 * for microseconds): the store is as usable as it was. Anything else (a
 * first check, a file another process synced, a lock held on) runs the
 * check as a write step, which says why it cannot be used, or puts right
 * what a step can (a file emptied or deleted is written anew from the live
 * copy) and notes the file again. A shared lock per check would not do:
 * steps poll for the exclusive lock, and a flood of shared holders from
 * several processes keeps it from them for a second and more. */
static int
store_gdbm_check(struct store *base, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	struct stat now, held, named;

	if (st->checked_ok && st->lock_fd >= 0 && lstat(st->path, &now) == 0 &&
	    store_gdbm_same_stat(&now, &st->checked) &&
	    faccessat(AT_FDCWD, st->path, R_OK | W_OK, AT_EACCESS) == 0 &&
	    fstat(st->lock_fd, &held) == 0 && lstat(st->lock_path, &named) == 0 &&
	    store_gdbm_same_file(&held, &named)) {
		for (int tries = 0; tries < STORE_GDBM_LOCK_YIELDS; tries++) {
			if (flock(st->lock_fd, LOCK_SH | LOCK_NB) == 0) {
				flock(st->lock_fd, LOCK_UN);
				return 0;
			}
			sched_yield();
		}
	}
	st->checked_ok = false;
	return store_gdbm_step(st, STORE_GDBM_STEP_WRITE, store_gdbm_check_fn, st, err, errlen);
}

static int
store_gdbm_sync(struct store *base, char *err, size_t errlen)
{
	struct store_gdbm *st = (struct store_gdbm *)base;
	return store_gdbm_step(st, STORE_GDBM_STEP_SYNC, NULL, NULL, err, errlen);
}

static const struct store_ops store_gdbm_ops = {
	.what = "state file",
	.close = store_gdbm_close,
	.reserve = store_gdbm_reserve,
	.record = store_gdbm_record,
	.read = store_gdbm_read,
	.fold = store_gdbm_fold,
	.read_rejects = store_gdbm_read_rejects,
	.reset_tokens = store_gdbm_reset_tokens,
	.admin = store_gdbm_admin,
	.read_clients = store_gdbm_read_clients,
	.check = store_gdbm_check,
	.sync = store_gdbm_sync,
};

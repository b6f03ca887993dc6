/* config: the file and the served snapshot. Reads apis.json (bounded, with
 * the identity of what was read), notices when it changed, and keeps the
 * current config with its references, swapping a new one in on a good reload;
 * when a look finds a file that does not load, it keeps why for config_info
 * (/v1/status). What the text means is config_parse.c's job. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config_parse.h"
#include "dynbuf.h"
#include "log.h"

/* A config is a few KB; the bound only stops a wrong path (a log, a device)
 * from eating memory. */
#define CONFIG_MAX_FILE (16L * 1024 * 1024)
#define CONFIG_MAX_FILE_MSG "larger than the 16 MiB limit"

/* File times can be as coarse as 2 s (FAT; 1 s on ext3): a file written again
 * within that long of the read may keep its mtime, ctime and size. */
#define CONFIG_RACY_S 2

/* Reload problems logged one by one; the rest are counted. */
#define CONFIG_LOG_ISSUES 50

/* struct config has no room for a reference count, so a served config is
 * parsed into this wrapper; config_snap_free takes the wrapper back. */
struct config_snap {
	struct config cfg;  /* first: a struct config * is the snapshot's address */
	unsigned long refs; /* guarded by config_lock; 0 for unpublished ones */
};

/* What a file looked like when it was read: a change to any of these is a
 * change of the file (ctime catches chmod and a touch that sets mtime back). */
struct config_ident {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct timespec ctime;
};

/* One look at the file, kept to decide whether the next one is new. */
struct config_look {
	struct config_ident ident;
	int read_err;  /* 0 when the text was read */
	uint64_t hash; /* of the text, when read */
};

/* Why the file on disk is not the config in service, as config_info tells
 * it: the first error of a look that did not load, or why the file could
 * not be read. */
struct config_reject {
	bool set;
	char at[CONFIG_INFO_TEXT]; /* "" for the file itself */
	char message[CONFIG_INFO_TEXT];
	size_t errors;
	int64_t since_ms; /* the file's modification time */
};

/* Process-wide state of config_acquire. */
static pthread_mutex_t config_lock = PTHREAD_MUTEX_INITIALIZER;
static char *config_file;                  /* set by config_set_path */
static bool config_file_nomem;             /* config_set_path could not copy it */
static struct config_snap *config_current; /* holds one reference */
static bool config_looked;                 /* config_last is valid */
static struct config_look config_last;
static bool config_racy;             /* config_last may hide a change: compare the text */
static int config_stat_err;          /* last stat failure reported, 0 none */
static int64_t config_stat_since_ms; /* when config_stat_err was first seen */
static int64_t config_loaded_ms;     /* when config_current was loaded */
static struct config_reject config_look_reject; /* of the look in config_last */

/* ---- files ---- */

static const char *
config_strerror(int err, char *buf, size_t len)
{
	if (err == EFBIG)
		return CONFIG_MAX_FILE_MSG;
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
	return strerror_r(err, buf, len);
#else
	if (strerror_r(err, buf, len) != 0)
		snprintf(buf, len, "error %d", err);
	return buf;
#endif
}

static void
config_ident_of(const struct stat *st, struct config_ident *id)
{
	memset(id, 0, sizeof(*id));
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = st->st_size;
	id->mtime = st->st_mtim;
	id->ctime = st->st_ctim;
}

static bool
config_ident_eq(const struct config_ident *a, const struct config_ident *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Reads the file at path whole (at most CONFIG_MAX_FILE bytes) into a new
 * buffer *text the caller frees, and describes the file read in *id (may be
 * NULL). Returns 0, or an errno value (EFBIG when too large). */
static int
config_read(const char *path, char **text, size_t *len, struct config_ident *id)
{
	struct dynbuf buf;
	struct stat st;
	size_t first;
	int fd, err;
	ssize_t n;

	*text = NULL;
	*len = 0;
	/* A byte past the limit tells a file too large from one that just fits. */
	dynbuf_init(&buf, CONFIG_MAX_FILE + 1);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
		return errno;
	/* The identity of the open file, so it matches the text read. */
	if (fstat(fd, &st) == -1) {
		err = errno;
		goto fail;
	}
	if (id != NULL)
		config_ident_of(&st, id);
	/* Room for a regular file's size and a byte more, so the read that sees
	 * its end needs no growth. */
	first = S_ISREG(st.st_mode) && st.st_size >= 0 && st.st_size < CONFIG_MAX_FILE
			? (size_t)st.st_size + 1
			: 4096;
	for (;;) {
		if (dynbuf_room(&buf) == 0 &&
		    dynbuf_reserve(&buf, dynbuf_len(&buf) == 0 ? first : 1) == -1) {
			err = errno == E2BIG ? EFBIG : errno;
			goto fail;
		}
		n = read(fd, dynbuf_end(&buf), dynbuf_room(&buf));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			err = errno;
			goto fail;
		}
		if (n == 0)
			break;
		dynbuf_commit(&buf, (size_t)n);
	}
	if (dynbuf_len(&buf) > CONFIG_MAX_FILE) {
		err = EFBIG;
		goto fail;
	}
	(void)close(fd);
	*text = dynbuf_take(&buf, len);
	return 0;
fail:
	dynbuf_free(&buf);
	(void)close(fd);
	return err;
}

int
config_load_file(const char *path, struct config **out, struct config_issues *issues)
{
	char ebuf[128];
	size_t len;
	char *text;
	int err, rc;

	*out = NULL;
	if ((err = config_read(path, &text, &len, NULL)) != 0) {
		if (issues != NULL)
			(void)config_issue_add(issues, true, path,
					       config_strerror(err, ebuf, sizeof(ebuf)));
		return -1;
	}
	rc = config_parse(text, len, out, issues);
	free(text);
	return rc;
}

/* Logs a warning when the file with status st can be read by every user:
 * it holds upstream keys, and only the web server's user or group needs to
 * read it. */
static void
config_warn_mode(const char *path, const struct stat *st)
{
	if (st != NULL && (st->st_mode & S_IROTH))
		log_warn("config %s is readable by every user and holds keys: chmod o-r (0640 "
			 "with the web server's group, or 0600)",
			 path);
}

/* ---- the served snapshot ---- */

/* Parses text into a new snapshot, not yet referenced, or returns NULL; the
 * problems found are appended to issues either way. */
static struct config_snap *
config_snap_parse(const char *text, size_t len, struct config_issues *issues)
{
	struct config_snap *snap = calloc(1, sizeof(*snap));

	if (snap == NULL) {
		config_parse_nomem(issues);
		return NULL;
	}
	if (config_parse_into(&snap->cfg, text, len, issues) == -1) {
		free(snap);
		return NULL;
	}
	return snap;
}

static void
config_snap_free(struct config_snap *snap)
{
	if (snap == NULL)
		return;
	config_parse_clear(&snap->cfg);
	free(snap);
}

/* Drops one reference, with config_lock held. Returns the snapshot when that
 * was the last one, for the caller to free once the lock is released. */
static struct config_snap *
config_unref(struct config_snap *snap)
{
	if (snap == NULL || --snap->refs > 0)
		return NULL;
	return snap;
}

static uint64_t
config_hash(const char *text, size_t len)
{
	uint64_t h = 14695981039346656037ULL; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)text[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static int64_t
config_ms(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copies src into dst of size len (> 0), cut when too long at the start of
 * a UTF-8 character rather than inside one: the texts go into JSON. */
static void
config_copy_text(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len) {
		n = len - 1;
		while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Keeps, for config_info, why the file just looked at (described by id) did
 * not load: the first error of issues, or, with issues NULL, the read error
 * err. Called with config_lock held. */
static void
config_reject_look(const struct config_issues *issues, int err, const struct config_ident *id)
{
	struct config_reject *r = &config_look_reject;
	char ebuf[128];

	memset(r, 0, sizeof(*r));
	r->set = true;
	r->since_ms = config_ms(id->mtime);
	if (issues == NULL) {
		snprintf(r->message, sizeof(r->message), "%s",
			 config_strerror(err, ebuf, sizeof(ebuf)));
		r->errors = 1;
		return;
	}
	for (size_t i = 0; i < issues->n; i++) {
		if (!issues->v[i].error)
			continue;
		if (r->errors++ == 0) {
			config_copy_text(r->at, sizeof(r->at), issues->v[i].path);
			config_copy_text(r->message, sizeof(r->message), issues->v[i].message);
		}
	}
	if (r->errors == 0) { /* the list itself could not grow */
		snprintf(r->message, sizeof(r->message), "out of memory");
		r->errors = 1;
	}
}

static void
config_log_issues(const struct config_issues *issues)
{
	size_t shown = issues->n < CONFIG_LOG_ISSUES ? issues->n : CONFIG_LOG_ISSUES;

	for (size_t i = 0; i < shown; i++) {
		const struct config_issue *is = &issues->v[i];

		if (is->error)
			log_error("config %s: %s: %s", config_file, is->path, is->message);
		else
			log_warn("config %s: %s: %s", config_file, is->path, is->message);
	}
	if (issues->n > shown)
		log_error("config %s: %zu more problems not shown", config_file, issues->n - shown);
}

/* Reads and, when it changed since the last look, loads the file; st is what
 * stat(2) just said of it. Called with config_lock held. Returns a snapshot
 * the caller frees after unlocking, or NULL. */
static struct config_snap *
config_reload(const struct stat *st)
{
	struct config_issues issues = {0};
	struct config_look look = {0};
	struct config_snap *snap, *old = NULL;
	struct timespec now;
	char ebuf[128];
	size_t len = 0;
	char *text = NULL;

	look.read_err = config_read(config_file, &text, &len, &look.ident);
	if (look.read_err != 0)
		config_ident_of(st, &look.ident);
	else
		look.hash = config_hash(text, len);
	/* A write after this moment gets a later ctime unless it falls in the
	 * same tick as the last one: until the tick is surely over, the text
	 * has to be compared too. */
	config_racy = clock_gettime(CLOCK_REALTIME, &now) == -1 ||
		      now.tv_sec < look.ident.ctime.tv_sec + CONFIG_RACY_S;
	if (config_looked && config_ident_eq(&look.ident, &config_last.ident) &&
	    look.read_err == config_last.read_err && look.hash == config_last.hash)
		goto done; /* nothing new, and already reported */
	config_looked = true;
	config_last = look;
	if (look.read_err != 0) {
		config_reject_look(NULL, look.read_err, &look.ident);
		log_error("config %s: %s; %s", config_file,
			  config_strerror(look.read_err, ebuf, sizeof(ebuf)),
			  config_current != NULL ? "keeping the last good configuration"
						 : "no configuration in service");
		goto done;
	}
	if ((snap = config_snap_parse(text, len, &issues)) == NULL) {
		config_reject_look(&issues, 0, &look.ident);
		config_log_issues(&issues);
		log_error("config %s: not loaded; %s", config_file,
			  config_current != NULL ? "keeping the last good configuration"
						 : "no configuration in service");
		goto done;
	}
	config_log_issues(&issues);
	old = config_unref(config_current);
	config_current = snap;
	config_current->refs = 1;
	config_loaded_ms = clock_now_ms();
	config_look_reject.set = false;
	log_info("config %s: loaded, %zu endpoint%s", config_file, snap->cfg.n_apis,
		 snap->cfg.n_apis == 1 ? "" : "s");
	config_warn_mode(config_file, st);
done:
	config_issues_free(&issues);
	free(text);
	return old;
}

void
config_set_path(const char *path)
{
	struct config_snap *old;
	char *copy = NULL;

	if (path != NULL && (copy = strdup(path)) == NULL)
		log_error("config: out of memory");
	if (pthread_mutex_lock(&config_lock) != 0)
		return;
	free(config_file);
	config_file = copy;
	config_file_nomem = path != NULL && copy == NULL;
	old = config_unref(config_current);
	config_current = NULL;
	config_looked = false;
	config_racy = false;
	config_stat_err = 0;
	config_loaded_ms = 0;
	config_look_reject.set = false;
	(void)pthread_mutex_unlock(&config_lock);
	config_snap_free(old);
}

struct config *
config_acquire(const char **why)
{
	struct config_snap *snap, *old = NULL;
	const char *reason = "configuration cannot be loaded";
	struct stat st;
	char ebuf[128];

	if (pthread_mutex_lock(&config_lock) != 0) {
		if (why != NULL)
			*why = reason;
		return NULL;
	}
	if (config_file == NULL) {
		if (!config_file_nomem)
			reason = "no configuration file set";
	} else if (stat(config_file, &st) == -1) {
		int err = errno;

		/* Gone or unreadable: the last good snapshot stays in service. */
		if (err != config_stat_err) {
			config_stat_err = err;
			config_stat_since_ms = clock_now_ms();
			log_error("config %s: %s; %s", config_file,
				  config_strerror(err, ebuf, sizeof(ebuf)),
				  config_current != NULL ? "keeping the last good configuration"
							 : "no configuration in service");
		}
	} else {
		struct config_ident id;

		config_stat_err = 0;
		config_ident_of(&st, &id);
		if (!config_looked || config_racy || !config_ident_eq(&id, &config_last.ident))
			old = config_reload(&st);
	}
	snap = config_current;
	if (snap != NULL)
		snap->refs++;
	(void)pthread_mutex_unlock(&config_lock);
	config_snap_free(old);
	if (snap == NULL) {
		if (why != NULL)
			*why = reason;
		return NULL;
	}
	return &snap->cfg;
}

void
config_release(struct config *cfg)
{
	struct config_snap *dead;

	if (cfg == NULL)
		return;
	if (pthread_mutex_lock(&config_lock) != 0)
		return;
	dead = config_unref((struct config_snap *)(void *)cfg);
	(void)pthread_mutex_unlock(&config_lock);
	config_snap_free(dead);
}

void
config_info(struct config_info *info)
{
	const struct config_reject *r = &config_look_reject;
	char ebuf[128];

	memset(info, 0, sizeof(*info));
	if (pthread_mutex_lock(&config_lock) != 0)
		return;
	if (config_file != NULL)
		snprintf(info->path, sizeof(info->path), "%s", config_file);
	if (config_current != NULL)
		info->loaded_ms = config_loaded_ms;
	/* A file gone now outranks what its last look found. */
	if (config_stat_err != 0) {
		info->rejected = true;
		snprintf(info->rejected_message, sizeof(info->rejected_message), "%s",
			 config_strerror(config_stat_err, ebuf, sizeof(ebuf)));
		info->rejected_errors = 1;
		info->rejected_since_ms = config_stat_since_ms;
	} else if (r->set) {
		info->rejected = true;
		memcpy(info->rejected_at, r->at, sizeof(info->rejected_at));
		memcpy(info->rejected_message, r->message, sizeof(info->rejected_message));
		info->rejected_errors = r->errors;
		info->rejected_since_ms = r->since_ms;
	}
	(void)pthread_mutex_unlock(&config_lock);
}

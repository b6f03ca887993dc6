/* store_live: the live copy of the state, in a file every responder process
 * maps (the GDBM store's lock file, "PATH.lock").
 *
 * Every step of the store reads and writes this copy under the lock; the
 * GDBM file gets it at most a second later (store_sync). Writing through a
 * shared mapping costs no system call and no fsync, and what a process wrote
 * is in the page cache the moment it is written, so a process killed at any
 * moment loses nothing. Only a crash of the whole machine can: the copy is
 * trusted only within the boot that wrote it, and after a reboot the state
 * comes from the GDBM file.
 *
 * The file: a header page, then two slots of cap bytes. A step writes the
 * next copy into the slot of the older one, its length last, so a process
 * killed mid-write leaves that slot marked empty and the other one whole.
 * None of this is thread-safe: the caller holds the lock file's flock. */
#ifndef API_TOGETHER_STORE_LIVE_H
#define API_TOGETHER_STORE_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the GDBM file looked like right after the last copy went into it:
 * when it looks otherwise, somebody else changed it and it is checked again. */
struct store_live_db {
	uint64_t seq; /* of the copy last written to it */
	int64_t ms;   /* when */
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
};

struct store_live {
	int fd; /* the mapped file; the caller owns it */
	char *map;
	size_t map_len;
	bool readonly;
	char boot[40]; /* this boot's id */
};

/* Prepares an unmapped handle. */
void store_live_handle(struct store_live *lv, bool readonly);

/* Unmaps; the handle can be attached again. */
void store_live_detach(struct store_live *lv);

/* Maps fd (the locked file, of size bytes now: read each step, since
 * touching a mapping beyond the end of a file that somebody truncated would
 * kill the process with SIGBUS) when it is not mapped yet or changed size. Returns
 * 1 when the file holds a live copy of this boot, 0 when it must be set up
 * with store_live_reset (new, of an older boot, or of another format), -1
 * with err set when it cannot be mapped. */
int store_live_attach(struct store_live *lv, int fd, size_t size, char *err, size_t errlen);

/* The newest whole copy and its sequence number; NULL when there is none. */
const char *store_live_newest(const struct store_live *lv, size_t *len, uint64_t *seq);

/* Writes a copy over the older slot. Returns 0, or 1 when it does not fit
 * (the caller then writes it to the GDBM file and calls store_live_reset). */
int store_live_put(struct store_live *lv, const char *rec, size_t len, uint64_t seq);

/* Sets the file up anew for this boot holding rec (may be NULL, len 0), with
 * room for copies of at least twice len. Returns 0, or -1 with err set; a
 * process killed in the middle leaves a file that attach reports as 0. */
int store_live_reset(struct store_live *lv, const char *rec, size_t len, uint64_t seq,
		     const struct store_live_db *db, char *err, size_t errlen);

/* The GDBM bookkeeping in the header; valid after attach returned 1. */
struct store_live_db *store_live_db(struct store_live *lv);

#endif

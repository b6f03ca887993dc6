/* The live copy of the state in a shared mapping: see store_live.h. */
#include "store_live.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_LIVE_MAGIC "ATLIVE1"
#define STORE_LIVE_HEAD 4096u
#define STORE_LIVE_MIN_CAP 16384u

struct store_live_head {
	char magic[8]; /* written last by a reset: a torn reset leaves it invalid */
	char boot[40];
	uint64_t cap; /* bytes per slot, its own header included */
	struct store_live_db db;
};

struct store_live_slot {
	_Atomic uint64_t len; /* 0 while empty or being written */
	uint64_t seq;
	/* then len bytes of the copy */
};

static void
store_live_set_err(char *err, size_t errlen, const char *why)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "state live copy: %s", why);
}

void
store_live_handle(struct store_live *lv, bool readonly)
{
	memset(lv, 0, sizeof(*lv));
	lv->fd = -1;
	lv->readonly = readonly;
	/* A copy is trusted only within the boot that wrote it: after a crash of
	 * the machine its pages may have reached the disk in any order. */
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, lv->boot, sizeof(lv->boot) - 1);
		close(fd);
		if (n > 0)
			lv->boot[n] = '\0';
		else
			lv->boot[0] = '\0';
		lv->boot[strcspn(lv->boot, "\n")] = '\0';
	}
}

void
store_live_detach(struct store_live *lv)
{
	if (lv->map != NULL)
		munmap(lv->map, lv->map_len);
	lv->map = NULL;
	lv->map_len = 0;
	lv->fd = -1;
}

static struct store_live_head *
store_live_head(const struct store_live *lv)
{
	return (struct store_live_head *)(void *)lv->map;
}

static struct store_live_slot *
store_live_slot(const struct store_live *lv, int i)
{
	uint64_t cap = store_live_head(lv)->cap;
	return (struct store_live_slot *)(void *)(lv->map + STORE_LIVE_HEAD + (size_t)i * cap);
}

static int
store_live_map(struct store_live *lv, int fd, size_t size, char *err, size_t errlen)
{
	int prot = PROT_READ | (lv->readonly ? 0 : PROT_WRITE);
	void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED) {
		store_live_set_err(err, errlen, strerror(errno));
		return -1;
	}
	lv->map = p;
	lv->map_len = size;
	lv->fd = fd;
	return 0;
}

int
store_live_attach(struct store_live *lv, int fd, size_t size, char *err, size_t errlen)
{
	if (lv->fd != fd)
		store_live_detach(lv);
	lv->fd = fd;
	if (lv->map != NULL && lv->map_len != size) {
		store_live_detach(lv);
		lv->fd = fd;
	}
	if (size < STORE_LIVE_HEAD)
		return 0;
	if (lv->map == NULL && store_live_map(lv, fd, size, err, errlen) != 0)
		return -1;
	const struct store_live_head *h = store_live_head(lv);
	if (memcmp(h->magic, STORE_LIVE_MAGIC, sizeof(h->magic)) != 0 ||
	    strncmp(h->boot, lv->boot, sizeof(h->boot)) != 0 || h->cap < STORE_LIVE_MIN_CAP ||
	    h->cap % 8 != 0 || h->cap > (size - STORE_LIVE_HEAD) / 2)
		return 0;
	return 1;
}

const char *
store_live_newest(const struct store_live *lv, size_t *len, uint64_t *seq)
{
	const struct store_live_slot *best = NULL;
	uint64_t best_len = 0, room = store_live_head(lv)->cap - sizeof(struct store_live_slot);

	for (int i = 0; i < 2; i++) {
		struct store_live_slot *s = store_live_slot(lv, i);
		uint64_t n = atomic_load_explicit(&s->len, memory_order_acquire);
		if (n == 0 || n > room)
			continue;
		if (best == NULL || s->seq > best->seq) {
			best = s;
			best_len = n;
		}
	}
	if (best == NULL)
		return NULL;
	*len = (size_t)best_len;
	*seq = best->seq;
	return (const char *)(best + 1);
}

/* Fills one slot so that a process killed at any point of it leaves the
 * slot empty: its length is cleared first and set last. */
static void
store_live_fill(struct store_live_slot *s, const char *rec, size_t len, uint64_t seq)
{
	atomic_store_explicit(&s->len, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	s->seq = seq;
	if (len > 0)
		memcpy(s + 1, rec, len);
	atomic_store_explicit(&s->len, len, memory_order_release);
}

int
store_live_put(struct store_live *lv, const char *rec, size_t len, uint64_t seq)
{
	const struct store_live_head *h = store_live_head(lv);

	if (len == 0 || len > h->cap - sizeof(struct store_live_slot))
		return 1;
	struct store_live_slot *a = store_live_slot(lv, 0), *b = store_live_slot(lv, 1);
	uint64_t la = atomic_load_explicit(&a->len, memory_order_relaxed);
	uint64_t lb = atomic_load_explicit(&b->len, memory_order_relaxed);
	/* Over the older copy (an empty slot is the oldest). */
	struct store_live_slot *over;
	if (la == 0)
		over = a;
	else if (lb == 0)
		over = b;
	else
		over = a->seq < b->seq ? a : b;
	store_live_fill(over, rec, len, seq);
	return 0;
}

int
store_live_reset(struct store_live *lv, const char *rec, size_t len, uint64_t seq,
		 const struct store_live_db *db, char *err, size_t errlen)
{
	struct stat sb;
	int fd = lv->fd;
	uint64_t cap =
		((uint64_t)len * 2 + sizeof(struct store_live_slot) + 4095) & ~UINT64_C(4095);

	if (cap < STORE_LIVE_MIN_CAP)
		cap = STORE_LIVE_MIN_CAP;
	if (fd < 0 || lv->readonly) {
		store_live_set_err(err, errlen, "not open for writing");
		return -1;
	}
	if (lv->map != NULL && lv->map_len >= STORE_LIVE_HEAD)
		memset(store_live_head(lv)->magic, 0, sizeof(store_live_head(lv)->magic));
	atomic_thread_fence(memory_order_seq_cst);
	if (fstat(fd, &sb) != 0) {
		store_live_set_err(err, errlen, strerror(errno));
		return -1;
	}
	/* Never shrunk: other processes may still map the longer file. */
	size_t size = (size_t)sb.st_size, want = STORE_LIVE_HEAD + 2 * (size_t)cap;
	if (size < want) {
		if (ftruncate(fd, (off_t)want) != 0) {
			store_live_set_err(err, errlen, strerror(errno));
			return -1;
		}
		size = want;
	} else {
		cap = ((size - STORE_LIVE_HEAD) / 2) & ~(size_t)7;
	}
	if (lv->map_len != size) {
		store_live_detach(lv);
		lv->fd = fd;
		if (store_live_map(lv, fd, size, err, errlen) != 0)
			return -1;
	}
	struct store_live_head *h = store_live_head(lv);
	memset(h->boot, 0, sizeof(h->boot));
	memcpy(h->boot, lv->boot, strnlen(lv->boot, sizeof(h->boot) - 1));
	h->cap = cap;
	if (db != NULL)
		h->db = *db;
	else
		memset(&h->db, 0, sizeof(h->db));
	store_live_fill(store_live_slot(lv, 1), NULL, 0, 0);
	store_live_fill(store_live_slot(lv, 0), rec, len, seq);
	atomic_thread_fence(memory_order_seq_cst);
	memcpy(h->magic, STORE_LIVE_MAGIC, sizeof(h->magic));
	return 0;
}

struct store_live_db *
store_live_db(struct store_live *lv)
{
	return &store_live_head(lv)->db;
}

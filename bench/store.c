/* bench/store: how fast the GDBM store turns over, and how long it holds its
 * lock (doc/behaviour.md, Limits and state: GDBM; Web servers: GDBM and flock).
 *
 * One cycle is what one request costs the store: store_reserve over 10
 * endpoints, then store_record on the one chosen. Runs for a fixed time from
 * 1 process, then from 4 processes sharing one file, for several RPM settings
 * (the RPM ring's size follows rpm, up to STORE_RING_MAX).
 *
 * Built by bench/store with -Wl,--wrap=flock,--wrap=fsync,--wrap=fdatasync,
 * --wrap=msync and GDBM linked statically, so the wrappers below also see the
 * syncs GDBM makes: the lock-held time of each cycle is measured from the
 * flock calls of store_gdbm.c, and every sync made while the lock is held is
 * counted (there should be none). src/ is not changed for any of it.
 *
 * With BENCH_STORE set to a Redis address (bench/store starts a redis-server
 * for BENCH_STORE=redis) the same cycles run on the Redis store, each run
 * under a key prefix of its own; there is no lock to time there (held 0).
 * With BENCH_CONTENTION=1 every reservation picks the same endpoint (the
 * first), so all processes change one state: the worst case of a store that
 * commits one endpoint at a time.
 * With BENCH_THREADS=N each process cycles from N threads, each with its own
 * handle as each worker thread of a responder has.
 *
 * Usage: store-bench DIR [SECONDS [RPM...]] */
#include <errno.h>
#include <fcntl.h>
#include <gdbm.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "store.h"

#define BENCH_ENDPOINTS 10
#define BENCH_MAX_PROCS 16

/* --- Interposed calls (per process) --- */

int __real_flock(int fd, int op);
int __real_fsync(int fd);
int __real_fdatasync(int fd);
int __real_msync(void *addr, size_t len, int flags);

int __wrap_flock(int fd, int op);
int __wrap_fsync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_msync(void *addr, size_t len, int flags);

/* Per thread: with BENCH_THREADS each thread of a child counts its own. */
static _Thread_local bool bench_held;
static _Thread_local int64_t bench_held_since;
/* Added up per cycle, then reset by the cycle loop. */
static _Thread_local int64_t bench_held_ns;
static _Thread_local long bench_locks;
static _Thread_local long bench_syncs;
static _Thread_local long bench_syncs_locked;

static int64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int
__wrap_flock(int fd, int op)
{
	int kind = op & ~LOCK_NB;

	if (kind == LOCK_UN && bench_held) {
		/* Held until the call that gives it up. */
		bench_held_ns += bench_now_ns() - bench_held_since;
		bench_held = false;
	}
	int rc = __real_flock(fd, op);
	if (rc == 0 && (kind == LOCK_EX || kind == LOCK_SH) && !bench_held) {
		bench_held = true;
		bench_held_since = bench_now_ns();
		bench_locks++;
	}
	return rc;
}

static void
bench_count_sync(void)
{
	bench_syncs++;
	if (bench_held)
		bench_syncs_locked++;
}

int
__wrap_fsync(int fd)
{
	bench_count_sync();
	return __real_fsync(fd);
}

int
__wrap_fdatasync(int fd)
{
	bench_count_sync();
	return __real_fdatasync(fd);
}

int
__wrap_msync(void *addr, size_t len, int flags)
{
	if (flags & MS_SYNC)
		bench_count_sync();
	return __real_msync(addr, len, flags);
}

/* --- One run --- */

/* What a child writes back, followed by cycles pairs of (held ns, cycle ns). */
struct bench_result {
	int64_t cycles;
	int64_t errors;
	int64_t refused;
	int64_t locks;
	int64_t syncs;
	int64_t syncs_locked;
};

struct bench_row {
	long rpm;
	int procs;
	double seconds;
	struct bench_result sum;
	int64_t *held;
	int64_t *cycle;
	char first_err[256];
};

static const struct store_outcome bench_ok = {.success = true,
					      .served = true,
					      .has_usage = true,
					      .prompt_tokens = 100,
					      .completion_tokens = 20,
					      .total_tokens = 120};
static const struct store_cooldown bench_cd = {3, 60, 0};

/* BENCH_STORE: a Redis address, or NULL for GDBM files in DIR. */
static const char *bench_redis;
/* BENCH_CONTENTION=1: every reservation on the first endpoint. */
static bool bench_contention;
/* BENCH_THREADS=N: each process cycles from N threads, a handle each. */
static int bench_threads = 1;

/* Opens the store of a run: the GDBM file db, or Redis under a prefix
 * named after db (a run of its own). */
static struct store *
bench_open(const char *db, char *err, size_t errlen)
{
	char prefix[600];
	const char *base = strrchr(db, '/');

	if (bench_redis == NULL)
		return store_open(db, err, errlen);
	snprintf(prefix, sizeof(prefix), "%s:", base != NULL ? base + 1 : db);
	struct store_options o = {prefix, 0, false};
	return store_open_with(bench_redis, &o, err, errlen);
}

/* Round robin over the endpoints with room (the first, when contending). */
static size_t
bench_pick(void *ctx, const bool *room, size_t n)
{
	size_t *next = ctx;

	if (bench_contention && room[0])
		return 0;

	for (size_t k = 0; k < n; k++) {
		size_t i = (*next + k) % n;
		if (room[i]) {
			*next = i + 1;
			return i;
		}
	}
	return n;
}

static void
bench_endpoints(struct store_endpoint *eps, char ids[][16], long rpm)
{
	for (int i = 0; i < BENCH_ENDPOINTS; i++) {
		snprintf(ids[i], sizeof(ids[i]), "endpoint-%d", i);
		eps[i] = (struct store_endpoint){ids[i], rpm, -1, 0, -1, -1, 0};
	}
}

static int
bench_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* One thread's cycles from start_ns to end_ns, on a handle of its own. */
struct bench_thread {
	const char *db;
	long rpm;
	int64_t start_ns, end_ns;
	struct bench_result r;
	int64_t *times; /* r.cycles pairs of (held ns, cycle ns) */
	int failed;
};

static void *
bench_cycles(void *p)
{
	struct bench_thread *t = p;
	struct store_endpoint eps[BENCH_ENDPOINTS];
	char ids[BENCH_ENDPOINTS][16];
	struct bench_result r = {0};
	size_t cap = 4096, next = (size_t)getpid() + (size_t)(uintptr_t)t;
	int64_t *times = malloc(cap * 2 * sizeof(*times));
	char err[256] = "";
	struct store *st;

	t->failed = 1;
	bench_endpoints(eps, ids, t->rpm);
	st = bench_open(t->db, err, sizeof(err));
	if (st == NULL || times == NULL) {
		fprintf(stderr, "bench: %s\n", st == NULL ? err : "out of memory");
		goto out;
	}
	while (bench_now_ns() < t->start_ns)
		;
	bench_locks = bench_syncs = bench_syncs_locked = 0;
	while (bench_now_ns() < t->end_ns) {
		struct store_reservation res;
		bench_held_ns = 0;
		int64_t t0 = bench_now_ns();
		int64_t now_ms = clock_now_ms();
		if (store_reserve(st, eps, BENCH_ENDPOINTS, now_ms, bench_pick, &next, &res, err,
				  sizeof(err)) != 0) {
			if (r.errors++ == 0)
				fprintf(stderr, "bench: store_reserve: %s\n", err);
			continue;
		}
		if (res.verdict != STORE_RESERVED) {
			r.refused++;
			continue;
		}
		if (store_record(st, eps[res.chosen].id, &bench_ok, &bench_cd, now_ms, err,
				 sizeof(err)) != 0) {
			if (r.errors++ == 0)
				fprintf(stderr, "bench: store_record: %s\n", err);
			continue;
		}
		int64_t t1 = bench_now_ns();
		if ((size_t)r.cycles == cap) {
			int64_t *n = realloc(times, cap * 4 * sizeof(*times));
			if (n == NULL) {
				fprintf(stderr, "bench: out of memory\n");
				goto out;
			}
			times = n;
			cap *= 2;
		}
		times[2 * r.cycles] = bench_held_ns;
		times[2 * r.cycles + 1] = t1 - t0;
		r.cycles++;
	}
	r.locks = bench_locks;
	r.syncs = bench_syncs;
	r.syncs_locked = bench_syncs_locked;
	t->failed = 0;
out:
	store_close(st);
	t->r = r;
	t->times = times;
	return NULL;
}

/* The child: cycles from start_ns to end_ns (from bench_threads threads),
 * results into out_path. */
static int
bench_child(const char *db, const char *out_path, long rpm, int64_t start_ns, int64_t end_ns)
{
	struct bench_thread *ts = calloc((size_t)bench_threads, sizeof(*ts));
	pthread_t *tids = calloc((size_t)bench_threads, sizeof(*tids));
	struct bench_result r = {0};
	int fd, rc = 1, started = 0;

	if (ts == NULL || tids == NULL)
		goto out;
	for (int i = 0; i < bench_threads; i++) {
		ts[i] = (struct bench_thread){db, rpm, start_ns, end_ns, {0}, NULL, 1};
		if (bench_threads > 1 && pthread_create(&tids[i], NULL, bench_cycles, &ts[i]) != 0)
			break;
		if (bench_threads == 1)
			bench_cycles(&ts[i]);
		started++;
	}
	for (int i = 0; i < started; i++)
		if (bench_threads > 1)
			pthread_join(tids[i], NULL);
	if (started < bench_threads)
		goto out;
	for (int i = 0; i < bench_threads; i++) {
		if (ts[i].failed)
			goto out;
		r.cycles += ts[i].r.cycles;
		r.errors += ts[i].r.errors;
		r.refused += ts[i].r.refused;
		r.locks += ts[i].r.locks;
		r.syncs += ts[i].r.syncs;
		r.syncs_locked += ts[i].r.syncs_locked;
	}
	fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		perror(out_path);
		goto out;
	}
	rc = bench_write_all(fd, &r, sizeof(r));
	for (int i = 0; i < bench_threads && rc == 0; i++)
		rc = bench_write_all(fd, ts[i].times,
				     (size_t)ts[i].r.cycles * 2 * sizeof(*ts[i].times));
	if (close(fd) != 0)
		rc = 1;
out:
	for (int i = 0; ts != NULL && i < bench_threads; i++)
		free(ts[i].times);
	free(ts);
	free(tids);
	return rc == 0 ? 0 : 1;
}

static int
bench_read_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
bench_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static double
bench_pct_us(const int64_t *sorted, int64_t n, double p)
{
	if (n == 0)
		return 0;
	int64_t i = (int64_t)(p * (double)(n - 1) + 0.5);
	return (double)sorted[i] / 1000.0;
}

/* Builds a fresh file whose records already have the size rpm gives them, so
 * the timed cycles are the steady state. */
static int
bench_prepare(const char *db, long rpm, long *create_syncs_locked)
{
	struct store_endpoint eps[BENCH_ENDPOINTS];
	char ids[BENCH_ENDPOINTS][16];
	char lock[600], err[256] = "";
	struct store *st;

	snprintf(lock, sizeof(lock), "%s.lock", db);
	unlink(db);
	unlink(lock);
	bench_syncs_locked = 0;
	st = bench_open(db, err, sizeof(err));
	*create_syncs_locked = bench_syncs_locked;
	if (st == NULL) {
		fprintf(stderr, "bench: %s\n", err);
		return -1;
	}
	bench_endpoints(eps, ids, rpm);
	for (size_t i = 0; i < BENCH_ENDPOINTS; i++) {
		struct store_reservation res;
		size_t next = i;
		if (store_reserve(st, eps, BENCH_ENDPOINTS, clock_now_ms(), bench_pick, &next, &res,
				  err, sizeof(err)) != 0 ||
		    store_record(st, eps[i].id, &bench_ok, &bench_cd, clock_now_ms(), err,
				 sizeof(err)) != 0) {
			fprintf(stderr, "bench: warm-up: %s\n", err);
			store_close(st);
			return -1;
		}
	}
	store_close(st);
	return 0;
}

static int
bench_run(const char *dir, long rpm, int procs, double seconds, struct bench_row *row,
	  long *create_syncs_locked)
{
	char db[512], out[600];
	pid_t pids[BENCH_MAX_PROCS];
	int failed = 0;

	memset(row, 0, sizeof(*row));
	row->rpm = rpm;
	row->procs = procs;
	snprintf(db, sizeof(db), "%s/bench-%ld-%d-%d.db", dir, rpm, procs, (int)getpid());
	if (bench_prepare(db, rpm, create_syncs_locked) != 0)
		return -1;
	fflush(stdout);
	fflush(stderr);
	int64_t start = bench_now_ns() + 200000000;
	int64_t end = start + (int64_t)(seconds * 1e9);
	for (int i = 0; i < procs; i++) {
		snprintf(out, sizeof(out), "%s.res%d", db, i);
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("fork");
			for (int k = 0; k < i; k++)
				kill(pids[k], SIGKILL);
			return -1;
		}
		if (pids[i] == 0)
			_exit(bench_child(db, out, rpm, start, end));
	}
	for (int i = 0; i < procs; i++) {
		int status;
		if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			failed = 1;
	}
	row->seconds = (double)(end - start) / 1e9;
	if (failed) {
		fprintf(stderr, "bench: a child failed\n");
		return -1;
	}

	/* Merge what the children wrote. */
	int64_t cap = 0;
	for (int i = 0; i < procs; i++) {
		struct bench_result r;
		snprintf(out, sizeof(out), "%s.res%d", db, i);
		int fd = open(out, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || bench_read_all(fd, &r, sizeof(r)) != 0) {
			fprintf(stderr, "bench: %s: cannot read\n", out);
			if (fd >= 0)
				close(fd);
			return -1;
		}
		int64_t base = row->sum.cycles;
		if (base + r.cycles > cap) {
			cap = (base + r.cycles) * 2;
			int64_t *h = realloc(row->held, (size_t)cap * sizeof(*h));
			if (h != NULL)
				row->held = h;
			int64_t *c = realloc(row->cycle, (size_t)cap * sizeof(*c));
			if (c != NULL)
				row->cycle = c;
			if (h == NULL || c == NULL) {
				close(fd);
				return -1;
			}
		}
		for (int64_t k = 0; k < r.cycles; k++) {
			int64_t pair[2];
			if (bench_read_all(fd, pair, sizeof(pair)) != 0) {
				close(fd);
				return -1;
			}
			row->held[base + k] = pair[0];
			row->cycle[base + k] = pair[1];
		}
		close(fd);
		unlink(out);
		row->sum.cycles += r.cycles;
		row->sum.errors += r.errors;
		row->sum.refused += r.refused;
		row->sum.locks += r.locks;
		row->sum.syncs += r.syncs;
		row->sum.syncs_locked += r.syncs_locked;
	}
	qsort(row->held, (size_t)row->sum.cycles, sizeof(int64_t), bench_cmp);
	qsort(row->cycle, (size_t)row->sum.cycles, sizeof(int64_t), bench_cmp);
	return 0;
}

/* Size of one endpoint's record and of the whole file after a run. */
static void
bench_sizes(const char *dir, long rpm, int procs, long *rec, long long *file)
{
	char db[512];
	struct stat sb;

	*rec = -1;
	*file = -1;
	if (bench_redis != NULL)
		return;
	snprintf(db, sizeof(db), "%s/bench-%ld-%d-%d.db", dir, rpm, procs, (int)getpid());
	if (stat(db, &sb) == 0)
		*file = (long long)sb.st_size;
	GDBM_FILE g = gdbm_open(db, 0, GDBM_READER | GDBM_NOLOCK, 0600, NULL);
	if (g == NULL)
		return;
	/* The record of all endpoints (the newer of its two copies is as big). */
	datum k = {(char *)"state.0", (int)strlen("state.0")};
	datum v = gdbm_fetch(g, k);
	if (v.dptr != NULL)
		*rec = v.dsize;
	free(v.dptr);
	gdbm_close(g);
}

static const char *
bench_fs_name(const char *dir)
{
	struct statfs sf;

	if (statfs(dir, &sf) != 0)
		return "unknown";
	switch ((unsigned long)sf.f_type) {
	case 0xEF53:
		return "ext4 (or ext2/3)";
	case 0x01021994:
		return "tmpfs (NOT a disk: numbers are too good)";
	case 0x58465342:
		return "xfs";
	case 0x9123683E:
		return "btrfs";
	case 0x794C7630:
		return "overlayfs";
	case 0x2FC12FC1:
		return "zfs";
	default:
		return "other";
	}
}

int
main(int argc, char **argv)
{
	static const long default_rpms[] = {-1, 10000, 1000000};
	long rpms[8];
	size_t n_rpms = 0;
	double seconds = 4;
	static const int procs_list[] = {1, 4};
	struct bench_row row;
	long create_locked_max = 0;
	int rc = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [SECONDS [RPM...]]\n", argv[0]);
		return 2;
	}
	if (argc > 2)
		seconds = strtod(argv[2], NULL);
	if (seconds <= 0 || seconds > 60) {
		fprintf(stderr, "bench: SECONDS must be in (0, 60]\n");
		return 2;
	}
	bench_redis = getenv("BENCH_STORE");
	if (bench_redis != NULL && *bench_redis == '\0')
		bench_redis = NULL;
	bench_contention =
		getenv("BENCH_CONTENTION") != NULL && strcmp(getenv("BENCH_CONTENTION"), "1") == 0;
	if (getenv("BENCH_THREADS") != NULL) {
		bench_threads = atoi(getenv("BENCH_THREADS"));
		if (bench_threads < 1 || bench_threads > 256) {
			fprintf(stderr, "bench: BENCH_THREADS must be in [1, 256]\n");
			return 2;
		}
	}
	for (int i = 3; i < argc && n_rpms < 8; i++)
		rpms[n_rpms++] = strtol(argv[i], NULL, 10);
	if (n_rpms == 0)
		for (size_t i = 0; i < sizeof(default_rpms) / sizeof(default_rpms[0]); i++)
			rpms[n_rpms++] = default_rpms[i];

	printf("store bench: %d endpoints, rpd -1, cycle = store_reserve over all + "
	       "store_record on the one chosen\n",
	       BENCH_ENDPOINTS);
	if (bench_redis != NULL)
		printf("store: %s (Redis)\n", bench_redis);
	else
		printf("directory: %s\nfilesystem: %s\n", argv[1], bench_fs_name(argv[1]));
	if (bench_contention)
		printf("contention: every reservation on the same endpoint\n");
	if (bench_threads > 1)
		printf("threads: %d per process, a handle each\n", bench_threads);
	printf("%.1f s per run; times in microseconds; held = both lock holds of a cycle\n\n",
	       seconds);
	printf("%8s %5s %8s %8s %9s %9s %8s %8s %9s %7s %7s %6s %6s %9s %9s\n", "rpm", "procs",
	       "cycles", "cyc/s", "cycle-p50", "cycle-p99", "held-p50", "held-p99", "locks/cyc",
	       "syncs", "locked", "errors", "refus", "rec-bytes", "file-KiB");
	for (size_t r = 0; r < n_rpms; r++) {
		for (size_t p = 0; p < sizeof(procs_list) / sizeof(procs_list[0]); p++) {
			long create_locked = 0, rec;
			long long file;
			if (bench_run(argv[1], rpms[r], procs_list[p], seconds, &row,
				      &create_locked) != 0) {
				printf("%8ld %5d  failed\n", rpms[r], procs_list[p]);
				rc = 1;
				free(row.held);
				free(row.cycle);
				continue;
			}
			bench_sizes(argv[1], rpms[r], procs_list[p], &rec, &file);
			int64_t n = row.sum.cycles;
			printf("%8ld %5d %8" PRId64 " %8.0f %9.1f %9.1f %8.1f %8.1f %9.2f %7" PRId64
			       " %7" PRId64 " %6" PRId64 " %6" PRId64 " %9ld %9lld\n",
			       row.rpm, row.procs, n, (double)n / row.seconds,
			       bench_pct_us(row.cycle, n, 0.5), bench_pct_us(row.cycle, n, 0.99),
			       bench_pct_us(row.held, n, 0.5), bench_pct_us(row.held, n, 0.99),
			       n ? (double)row.sum.locks / (double)n : 0.0, row.sum.syncs,
			       row.sum.syncs_locked, row.sum.errors, row.sum.refused, rec,
			       file < 0 ? -1 : file / 1024);
			if (create_locked > create_locked_max)
				create_locked_max = create_locked;
			if (row.sum.syncs_locked > 0 || row.sum.errors > 0)
				rc = 1;
			free(row.held);
			free(row.cycle);
		}
	}
	printf("\nsyncs = fsync/fdatasync/msync(MS_SYNC) calls in the timed cycles; "
	       "locked = those made with the lock held (want 0)\n");
	if (create_locked_max > 0)
		printf("outside the timed cycles: store_open creating a new file made %ld "
		       "sync(s) with the lock held (GDBM initialising the file)\n",
		       create_locked_max);
	return rc;
}

/* api-together: a FastCGI responder that spreads OpenAI-format API requests
 * over several upstream endpoints. main: the command line, the worker
 * threads, and the path of one request through the other modules. */
#include <errno.h>
#include <fcgiapp.h>
#include <getopt.h>
#ifdef HAVE_MALLOC_H
#include <malloc.h>
#endif
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "limit.h"
#include "log.h"
#include "request.h"
#include "route.h"
#include "routes.h"
#include "store.h"
#include "tz.h"
#include "usage_book.h"
#include "worker.h"

#define MAIN_DEFAULT_CONFIG SYSCONFDIR "/api-together/apis.json"
#define MAIN_DEFAULT_THREADS 256
#define MAIN_MAX_THREADS 4096
/* Threads started before the first request; more start as they are needed. */
#define MAIN_FIRST_THREADS 4
/* How long a worker thread waits in accept before it asks whether it is
 * still needed (main_retire). */
#define MAIN_IDLE_THREAD_MS 5000
/* How long a FastCGI connection may stay silent before its request's
 * parameters are in: then it is dropped. */
#define MAIN_FIRST_RECORD_MS 5000
/* A new connection from the web server brings its request at once: one
 * silent for this long counts as waiting on what is outside the process. */
#define MAIN_SILENT_MS 500

/* The socket every worker accepts on: set once before the threads start. */
static int main_listen_fd;
/* Whether it is a Unix socket (main_finish): set with it. */
static bool main_listen_unix;
/* FCGI_WEB_SERVER_ADDRS, as libfcgi reads it: the IPv4 addresses a TCP
 * connection may come from (comma-separated; NULL: any). Set once before
 * the threads start. */
static const char *main_web_server_addrs;

/* Whether a TCP connection from peer may be served (FCGI_WEB_SERVER_ADDRS). */
static bool
main_peer_allowed(const struct sockaddr_in *peer)
{
	const char *p = main_web_server_addrs;

	if (p == NULL)
		return true;
	while (*p != '\0') {
		char one[INET_ADDRSTRLEN];
		size_t n = strcspn(p, ",");
		struct in_addr a;
		if (n < sizeof(one)) {
			memcpy(one, p, n);
			one[n] = '\0';
			if (inet_pton(AF_INET, one, &a) == 1 && a.s_addr == peer->sin_addr.s_addr)
				return true;
		}
		p += n + (p[n] == ',');
	}
	return false;
}

static void
main_usage(FILE *f)
{
	fprintf(f,
		"Usage: api-together [OPTION]\n"
		"A FastCGI responder that spreads OpenAI-format API requests over several\n"
		"upstream endpoints. A web server (lighttpd mod_fastcgi, Apache mod_fcgid)\n"
		"starts it with no option; or it listens itself with --listen.\n\n"
		"  --check-config [FILE]  validate FILE (default: the configured one), print\n"
		"                         each problem with its JSON path; exit 1 on an error\n"
		"  --status               print each endpoint's and client's usage from the store\n"
		"  --listen ADDR:PORT|/path.sock\n"
		"                         run as a FastCGI server on that socket\n"
		"  --version              print the version\n"
		"  --help                 print this help\n\n"
		"Environment: API_TOGETHER_CONFIG (default %s),\n"
		"API_TOGETHER_STATE, API_TOGETHER_STORE (\"gdbm\" or a Redis address),\n"
		"API_TOGETHER_LOG_LEVEL, API_TOGETHER_BASE_PATH,\n"
		"API_TOGETHER_THREADS (most worker threads per process, started as\n"
		"requests wait on their upstreams; default %d).\n",
		MAIN_DEFAULT_CONFIG, MAIN_DEFAULT_THREADS);
}

static const char *
main_config_path(void)
{
	const char *p = getenv("API_TOGETHER_CONFIG");

	return p != NULL && *p != '\0' ? p : MAIN_DEFAULT_CONFIG;
}

/* One request: the config in force, kept for the whole request, then its
 * way through routes.c's table. */
static void
main_serve(FCGX_Request *f, struct worker *w)
{
	const char *why = NULL;
	struct config *cfg = config_acquire(&why);

	routes_serve(f, cfg, why, w);
	if (cfg != NULL)
		config_release(cfg);
}

/* The worker threads of this process. A thread serves one request at a
 * time, a stream for as long as it lasts, so a process needs as many as it
 * has requests waiting on upstreams, and a few for the rest: they start as
 * they are needed, up to max, and end once idle (main_retire). Each one
 * that has served costs its stack pages and a share of the heap, so
 * starting all of max up front would cost that for threads a small site
 * never uses. */
struct main_pool {
	struct curl_shelf curls;
	atomic_long idle; /* threads waiting in accept */
	/* Threads waiting on what is outside the process (main_waiting): an
	 * upstream's answer, a client's body, a connection silent for
	 * MAIN_SILENT_MS; and those whose connection the web server keeps,
	 * which never come back to accept while it lasts. */
	atomic_long waiting;
	atomic_long started; /* threads started (or being started) */
	atomic_long served;  /* requests served, for main_trim */
	atomic_long retired; /* threads ended by main_retire, for main_trim */
	long max;
	pthread_attr_t attr;
	atomic_bool warned; /* that a thread could not start */
};

static void *main_worker(void *arg);

/* Whether a connection waits in the listen queue. */
static bool
main_pending(void)
{
	struct pollfd p = {.fd = main_listen_fd, .events = POLLIN};

	return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* Starts one more worker unless max run already. */
static void
main_spawn(struct main_pool *pool)
{
	long n = atomic_load(&pool->started);
	pthread_t t;
	int rc;

	do {
		if (n >= pool->max)
			return;
	} while (!atomic_compare_exchange_weak(&pool->started, &n, n + 1));
	rc = pthread_create(&t, &pool->attr, main_worker, pool);
	if (rc != 0) {
		atomic_fetch_sub(&pool->started, 1);
		if (!atomic_exchange(&pool->warned, true))
			log_warn("cannot start a worker thread (%s); %ld serve", strerror(rc),
				 (long)atomic_load(&pool->started));
		return;
	}
	pthread_detach(t);
}

/* Whether a connection waiting in the listen queue wants one more thread:
 * none waits in accept, and every other thread waits on what is outside
 * the process (pool->waiting), so none would take it soon. Threads busy
 * with the processors or the state file end their requests within
 * moments (or, the state file held by another process for seconds, wait
 * on what one more thread would wait on too), and one of them takes it;
 * one more thread would only share the processors with them and cost its
 * stack and a share of the heap. Before this rule a process grew to 35-46
 * threads at c=64 with 16 requests in flight, where 4 to 12 served a sixth
 * more requests a second (doc/behaviour.md, Processes, threads, timeouts:
 * When threads start). self_waiting: the calling thread
 * is one of pool->waiting. */
static bool
main_all_wait(struct main_pool *pool, bool self_waiting)
{
	return atomic_load(&pool->idle) == 0 &&
	       atomic_load(&pool->waiting) - (self_waiting ? 1 : 0) >=
		       atomic_load(&pool->started) - 1;
}

/* Whether this thread's connection is kept by the web server
 * (FCGI_KEEP_CONN): it then counts in pool->waiting for as long as it
 * holds it, and its waits are not counted again. */
static _Thread_local bool main_kept;

/* Counts a wait of this thread on what is outside the process
 * (worker.waiting): delta +1 as it starts, -1 as it ends. As a wait
 * starts, a connection in the listen queue that no thread would take soon
 * gets one more thread: so a burst against slow upstreams grows a thread
 * per request as each goes upstream, not only once requests turn long. */
static void
main_waiting(void *arg, int delta)
{
	struct main_pool *pool = arg;

	if (!main_kept)
		atomic_fetch_add(&pool->waiting, delta);
	if (delta > 0 && main_all_wait(pool, true) && main_pending())
		main_spawn(pool);
}

/* A request of this process turned out long (a stream, a slow upstream):
 * when no thread waits in accept, the next request would wait for one of
 * the long ones to end, so one more starts. */
static void
main_long_request(void *arg)
{
	struct main_pool *pool = arg;

	if (atomic_load(&pool->idle) == 0)
		main_spawn(pool);
}

/* Whether the thread that waited MAIN_IDLE_THREAD_MS in accept for nothing
 * ends: yes while another thread waits there and more than the
 * MAIN_FIRST_THREADS of the start run, so that the threads a burst (or a
 * thousand streams) started go once it is over, with their stacks and what
 * their caches of freed memory hold (main_trim gives that back), and the
 * process is as it started. The count of idle threads no longer holds this
 * one: of threads that time out together, the last to look finds no other
 * and stays. */
static bool
main_retire(struct main_pool *pool)
{
	long n = atomic_load(&pool->started);

	do {
		if (n <= MAIN_FIRST_THREADS || atomic_load(&pool->idle) < 1)
			return false;
	} while (!atomic_compare_exchange_weak(&pool->started, &n, n - 1));
	atomic_fetch_add(&pool->retired, 1);
	curl_shelf_drop_coldest(&pool->curls);
	return true;
}

/* Takes the next connection off the listening socket, counted idle while
 * it waits (*idle_before: the idle threads as it stopped waiting). Returns
 * the descriptor, or -errno; a listening socket that is gone ends the
 * process. */
static int
main_accept(struct main_pool *pool, long *idle_before)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int one = 1, fd;

	atomic_fetch_add(&pool->idle, 1);
	fd = accept4(main_listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
	int err = errno;
	*idle_before = atomic_fetch_sub(&pool->idle, 1);
	if (fd < 0) {
		/* Out of descriptors or memory passes; a socket that is gone
		 * does not. A thread that stopped for good would leave a
		 * process the web server counts on but that never answers. */
		if (err == EBADF || err == ENOTSOCK || err == EINVAL) {
			log_error("FastCGI socket unusable (%d); process stops", -err);
			exit(1);
		}
		return -err;
	}
	if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
		/* What libfcgi's accept does: answers go out as written. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (ss.ss_family == AF_INET && !main_peer_allowed((struct sockaddr_in *)&ss)) {
			close(fd);
			return -EACCES;
		}
	}
	return fd;
}

/* Waits for the first bytes of a new connection, at most
 * MAIN_FIRST_RECORD_MS: a web server sends its request as it connects, and
 * a connection that sends nothing must not hold a thread for good
 * (doc/behaviour.md, Web servers: libfcgi). Meanwhile the thread serves
 * nobody and is not counted idle: when a connection waits in the listen
 * queue and no thread is idle, one more may start (main_all_wait).
 * True when bytes came. */
static bool
main_first_bytes(struct main_pool *pool, int fd, bool kept)
{
	struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
			      {.fd = main_listen_fd, .events = POLLIN}};
	int64_t start = clock_mono_ms(), deadline = start + MAIN_FIRST_RECORD_MS;
	int64_t silent_at = start + MAIN_SILENT_MS;
	bool counted = false, watch = true, came = false;

	for (;;) {
		int64_t now = clock_mono_ms(), left = deadline - now;
		if (left <= 0)
			break;
		/* A kept connection's thread waits on the web server from the
		 * start; a new connection's once it has been silent a while. */
		if (!counted && (kept || now >= silent_at)) {
			atomic_fetch_add(&pool->waiting, 1);
			counted = true;
			watch = true;
		}
		if (!counted && left > silent_at - now)
			left = silent_at - now;
		int rc = poll(p, watch ? 2 : 1, (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			break;
		if (rc == 0)
			continue; /* silent for MAIN_SILENT_MS, or the deadline */
		if (p[0].revents != 0) {
			came = (p[0].revents & POLLIN) != 0;
			break;
		}
		/* A connection waits: an idle thread takes it, or the one
		 * started now. Looked at again once this thread counts as
		 * waiting. */
		if (main_all_wait(pool, counted))
			main_spawn(pool);
		watch = false;
	}
	if (counted)
		atomic_fetch_sub(&pool->waiting, 1);
	return came;
}

/* Ends the request f: its answer's end is written (response_finish did,
 * for the answers that go through it) and the connection closed, or kept
 * when the web server asked for that. libfcgi closes by shutting its side
 * and reading until the web server closes (at most 2 s), so that a TCP
 * peer that still sends gets no reset, which would make it drop the answer
 * it has not read yet. On a Unix socket whose request was read to its end
 * that wait is for nothing: the web server reads what was sent before the
 * close whatever follows, and sends nothing more. It was most of a
 * thread's time at 64 clients (lighttpd closes its side when its event
 * loop comes to it: 2.4 ms at the median), time in which the thread
 * served nobody and did not count as waiting (main_all_wait). */
static void
main_finish(FCGX_Request *f)
{
	/* libfcgi closes a stream on a read error too: that one keeps the
	 * wait, as the web server may still be sending. */
	f->detached = main_listen_unix && f->in != NULL && FCGX_HasSeenEOF(f->in) == EOF &&
		      FCGX_GetError(f->in) == 0;
	FCGX_Finish_r(f);
	f->detached = 0;
}

static void *
main_worker(void *arg)
{
	struct main_pool *pool = arg;
	struct worker w = {.curls = &pool->curls,
			   .long_request = main_long_request,
			   .waiting = main_waiting,
			   .pool = pool};
	FCGX_Request f;

	route_seed(&w.rng);
	/* No listening socket for libfcgi: the thread accepts (main_accept)
	 * and hands libfcgi the connection once it has bytes to read. libfcgi,
	 * which would block in accept() and then in read() without limit,
	 * returns instead when the connection fails (-EBADF, from its
	 * accept() on -1). keepConnection set: it must not close the
	 * connection it is handed before reading it. */
	if (FCGX_InitRequest(&f, -1, 0) != 0) {
		log_error("FCGX_InitRequest failed; worker thread stops");
		atomic_fetch_sub(&pool->started, 1);
		return NULL;
	}
	for (;;) {
		long idle_before = 0;
		/* Open still: the web server kept it after the last request. */
		bool kept = f.ipcFd >= 0;
		if (f.ipcFd < 0) {
			int fd = main_accept(pool, &idle_before);
			if ((fd == -EAGAIN || fd == -EWOULDBLOCK) && main_retire(pool))
				break;
			if (fd < 0) {
				if (fd != -EINTR && fd != -ECONNABORTED && fd != -EACCES &&
				    fd != -EAGAIN && fd != -EWOULDBLOCK)
					log_warn("FastCGI accept failed (%d); retrying", fd);
				if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM ||
				    fd == -ENOBUFS) {
					struct timespec pause = {0, 100000000};
					nanosleep(&pause, NULL);
				}
				continue;
			}
			f.ipcFd = fd;
		}
		if (!main_first_bytes(pool, f.ipcFd, kept)) {
			log_debug("FastCGI connection dropped: nothing came within %d ms",
				  MAIN_FIRST_RECORD_MS);
			close(f.ipcFd);
			f.ipcFd = -1;
			continue;
		}
		/* Left on for the request: request_read_body takes it off for
		 * a body. */
		request_read_limit(f.ipcFd, MAIN_FIRST_RECORD_MS);
		f.keepConnection = 1;
		if (FCGX_Accept_r(&f) < 0) {
			f.ipcFd = -1; /* libfcgi closed it */
			continue;
		}
		/* The last idle thread took this one, and the next is already
		 * waiting: another thread may be needed to take it
		 * (main_all_wait). A thread for every momentary peak of short
		 * requests would cost memory for nothing. Long requests see to
		 * a spare thread themselves (main_long_request). */
		if (idle_before == 1 && main_all_wait(pool, false) && main_pending())
			main_spawn(pool);
		/* libfcgi took FCGI_KEEP_CONN from the request's first record. */
		main_kept = f.keepConnection != 0;
		if (main_kept)
			atomic_fetch_add(&pool->waiting, 1);
		main_serve(&f, &w);
		main_finish(&f);
		if (main_kept) {
			atomic_fetch_sub(&pool->waiting, 1);
			main_kept = false;
		}
		atomic_fetch_add_explicit(&pool->served, 1, memory_order_relaxed);
	}
	store_close(w.store);
	FCGX_Free(&f, 0);
	return NULL;
}

/* libfcgi's own handler only sets a flag, which leaves threads blocked in
 * accept() and the process alive after the web server stopped
 * (doc/behaviour.md, Web servers: libfcgi). Once the workers run, SIGTERM
 * and SIGINT are blocked in every thread and the main thread takes them in
 * main_sync_forever, folds this process's refusal counts in and leaves;
 * this handler only serves a signal that comes before. Every finished step
 * of the store is in the shared live copy (the page cache keeps what a dead
 * process wrote), so leaving at once loses no counter; attempts in flight
 * end with it (their outcome is not recorded) and streams are cut, as the
 * server's stop cuts them anyway. */
static void
main_on_term(int sig)
{
	(void)sig;
	_exit(0);
}

static int
main_check_config(const char *path)
{
	struct config_issues issues = {0};
	struct config *cfg = NULL;
	int rc = config_load_file(path, &cfg, &issues);

	struct stat sb;

	for (size_t i = 0; i < issues.n; i++)
		printf("%s: %s: %s: %s\n", path, issues.v[i].error ? "error" : "warning",
		       issues.v[i].path, issues.v[i].message);
	if (stat(path, &sb) == 0 && (sb.st_mode & S_IROTH))
		printf("%s: warning: readable by every user, and it holds keys: chmod o-r\n", path);
	if (rc == 0)
		printf("%s: ok, %zu endpoint%s\n", path, cfg->n_apis, cfg->n_apis == 1 ? "" : "s");
	config_issues_free(&issues);
	config_free(cfg);
	return rc == 0 ? 0 : 1;
}

/* The keys of a pool under their endpoint's line: the last 4 characters
 * of each, its state and counts. */
static void
main_status_tokens(const struct config_api *a, const struct store_usage *u)
{
	printf(" tpm=%lld/%ld tpd=%lld/%ld", u->tpm_used, a->tpm, u->tpd_used, a->tpd);
}

static void
main_status_keys(const struct config_api *a, const struct store_usage *k)
{
	static const char *const states[STORE_KEY_STATE_N] = {"active",    "cooling",  "cooling",
							      "exhausted", "rejected", "paused"};

	for (size_t j = 0; j < a->n_keys; j++) {
		char rpm[32], rpd[32], until[40] = "-";
		snprintf(rpm, sizeof(rpm), "%ld/%ld", k[j].rpm_used, a->rpm);
		snprintf(rpd, sizeof(rpd), "%ld/%ld", k[j].rpd_used, a->rpd);
		if (k[j].key_state != STORE_KEY_ACTIVE && k[j].key_until > 0)
			clock_iso8601(k[j].key_until, until, sizeof(until));
		printf("  key \u2026%-8s %-10s %-13s %-13s %-9ld %s", a->keys[j].tail,
		       states[k[j].paused != 0 ? STORE_KEY_PAUSED : k[j].key_state], rpm, rpd,
		       k[j].fail_run, until);
		if (a->tpm >= 0 || a->tpd >= 0)
			main_status_tokens(a, &k[j]);
		printf("\n");
	}
}

/* The lines of an endpoint's token limits, day rollover and modelLimits
 * under its line, only where it has them (doc/behaviour.md, Limits and
 * state: what --status shows), so that a config without them prints as
 * before. u is the endpoint's usage. Returns 0, or -1 with err. */
static int
main_status_limits(struct store *st, const struct config_api *a, const struct store_usage *u,
		   int64_t now, char *err, size_t errlen)
{
	struct store_usage *mu = NULL;

	if (a->tpm >= 0 || a->tpd >= 0) {
		printf("  tokens");
		main_status_tokens(a, u);
		printf(" streams=%s estimated-answers=%lld\n",
		       a->stream_usage ? "usage" : "estimate", u->estimated_answers);
	}
	if (a->day_zone != NULL) {
		char at[40];
		clock_iso8601(now + tz_ms_to_midnight(a->day_zone, now), at, sizeof(at));
		printf("  day resets at %s (%s)\n", at, a->day_zone_name);
	}
	if (worker_model_usage_read(st, a, now, &mu, err, errlen) != 0)
		return -1;
	for (size_t m = 0; m < a->n_model_limits; m++) {
		const struct config_model_limit *ml = &a->model_limits[m];
		const struct store_usage *k = mu + m * a->n_keys;
		struct store_usage sum = {0};
		for (size_t j = 0; j < a->n_keys; j++)
			limit_usage_add(&sum, &k[j], j == 0);
		printf("  model %s rpm=%ld/%ld rpd=%ld/%ld tpm=%lld/%ld tpd=%lld/%ld\n", ml->model,
		       sum.rpm_used, ml->rpm, sum.rpd_used, ml->rpd, sum.tpm_used, ml->tpm,
		       sum.tpd_used, ml->tpd);
		for (size_t j = 0; a->n_keys > 1 && j < a->n_keys; j++)
			printf("    key \u2026%s rpm=%ld/%ld rpd=%ld/%ld tpm=%lld/%ld "
			       "tpd=%lld/%ld\n",
			       a->keys[j].tail, k[j].rpm_used, ml->rpm, k[j].rpd_used, ml->rpd,
			       k[j].tpm_used, ml->tpm, k[j].tpd_used, ml->tpd);
	}
	free(mu);
	return 0;
}

/* The clients' usage (doc/behaviour.md, Limits and state: usage per
 * client) under the endpoints: each client's today and its whole book
 * (the last 31 local days), today's models, then each earlier day with
 * answers. Returns 0, or -1 when the store cannot be read. */
static int
main_status_clients(struct store *st, int64_t now)
{
	struct store_clients sc;
	long today = tz_day(NULL, now);
	char err[300];

	if (store_read_clients(st, NULL, now, &sc, err, sizeof(err)) != 0) {
		fprintf(stderr, "api-together: %s: %s\n", store_what(st), err);
		store_clients_free(&sc);
		return -1;
	}
	printf("\n%-24s %-10s %-24s %-10s %s\n", "CLIENT", "TODAY", "TOKENS(P/C/T)", "31 DAYS",
	       "TOKENS(P/C/T)");
	if (sc.n == 0)
		printf("(no answers served yet)\n");
	for (size_t i = 0; i < sc.n; i++) {
		const struct usage_book *b = &sc.c[i].book;
		struct usage_count t = usage_book_day(b, today), w = {0, 0, 0, 0};
		char tt[80];
		size_t n;
		const struct usage_row *r = usage_book_rows(b, &n);
		for (size_t j = 0; j < n; j++) {
			w.requests += r[j].c.requests;
			w.prompt += r[j].c.prompt;
			w.completion += r[j].c.completion;
			w.total += r[j].c.total;
		}
		snprintf(tt, sizeof(tt), "%lld/%lld/%lld", (long long)t.prompt,
			 (long long)t.completion, (long long)t.total);
		printf("%-24s %-10lld %-24s %-10lld %lld/%lld/%lld\n", sc.c[i].client,
		       (long long)t.requests, tt, (long long)w.requests, (long long)w.prompt,
		       (long long)w.completion, (long long)w.total);
		for (size_t j = 0; j < n; j++)
			if (r[j].day == today)
				printf("  model %-16s %-10lld %lld/%lld/%lld\n", r[j].model,
				       (long long)r[j].c.requests, (long long)r[j].c.prompt,
				       (long long)r[j].c.completion, (long long)r[j].c.total);
		for (int d = 1; d < USAGE_BOOK_DAYS; d++) {
			long day = usage_book_day_before(today, d);
			struct usage_count c = usage_book_day(b, day);
			if (c.requests > 0)
				printf("  day   %04ld-%02ld-%02ld       %-10lld %lld/%lld/%lld\n",
				       day / 10000, day / 100 % 100, day % 100,
				       (long long)c.requests, (long long)c.prompt,
				       (long long)c.completion, (long long)c.total);
		}
	}
	store_clients_free(&sc);
	return 0;
}

static int
main_status(void)
{
	struct config_issues issues = {0};
	struct config *cfg = NULL;
	const char *path = main_config_path();
	const char *address, *why = NULL;
	struct store_options o;
	struct worker_usage wu = {0};
	const struct store_usage *u;
	struct store *st = NULL;
	char err[300];
	int64_t now = clock_now_ms();
	int rc = 1;

	if (config_load_file(path, &cfg, &issues) != 0) {
		fprintf(stderr, "api-together: %s cannot be loaded (try --check-config)\n", path);
		goto out;
	}
	address = worker_store_address(cfg, &why);
	if (address == NULL) {
		fprintf(stderr, "api-together: %s\n", why);
		goto out;
	}
	/* Read-only: run as root, it must not create files the responder's
	 * user then cannot open. */
	if (!store_is_redis(address) && access(address, F_OK) != 0) {
		printf("No state file at %s yet: no request has been counted.\n", address);
		rc = 0;
		goto out;
	}
	worker_store_options(cfg, &o);
	o.readonly = true;
	st = store_open_with(address, &o, err, sizeof(err));
	if (st == NULL) {
		fprintf(stderr, "api-together: %s: %s\n", worker_store_what(address), err);
		goto out;
	}
	if (worker_usage_read(st, cfg, now, &wu, err, sizeof(err)) != 0) {
		fprintf(stderr, "api-together: %s: %s\n", store_what(st), err);
		goto out;
	}
	u = wu.apis;
	printf("%-16s %-8s %-13s %-13s %-9s %-24s %s\n", "ID", "ENABLED", "RPM(USED/MAX)",
	       "RPD(USED/MAX)", "FAILURES", "COOLDOWN UNTIL", "TOKENS(P/C/T)");
	for (size_t i = 0; i < cfg->n_apis; i++) {
		char rpm[32], rpd[32], cool[40] = "-";
		const struct config_api *a = &cfg->apis[i];
		snprintf(rpm, sizeof(rpm), "%ld/%ld", u[i].rpm_used, a->rpm);
		snprintf(rpd, sizeof(rpd), "%ld/%ld", u[i].rpd_used, a->rpd);
		if (u[i].cooldown_until > now)
			clock_iso8601(u[i].cooldown_until, cool, sizeof(cool));
		printf("%-16s %-8s %-13s %-13s %-9ld %-24s %lld/%lld/%lld\n", a->id,
		       !a->enabled                                  ? "no"
		       : (u[i].paused & STORE_PAUSED_ENDPOINT) != 0 ? "paused"
								    : "yes",
		       rpm, rpd, u[i].fail_run, cool, u[i].prompt_tokens, u[i].completion_tokens,
		       u[i].total_tokens);
		if (a->n_keys > 1)
			main_status_keys(a, wu.keys + wu.first[i]);
		if (main_status_limits(st, a, &u[i], now, err, sizeof(err)) != 0) {
			fprintf(stderr, "api-together: %s: %s\n", store_what(st), err);
			goto out;
		}
	}
	if (main_status_clients(st, now) != 0)
		goto out;
	rc = 0;
out:
	worker_usage_free(&wu);
	store_close(st);
	config_free(cfg);
	config_issues_free(&issues);
	return rc;
}

static long
main_threads(void)
{
	const char *v = getenv("API_TOGETHER_THREADS");
	char *end;
	long n;

	if (v == NULL || *v == '\0')
		return MAIN_DEFAULT_THREADS;
	n = strtol(v, &end, 10);
	if (*end != '\0' || n < 1 || n > MAIN_MAX_THREADS) {
		log_warn("API_TOGETHER_THREADS: expected 1 to %d; using %d", MAIN_MAX_THREADS,
			 MAIN_DEFAULT_THREADS);
		return MAIN_DEFAULT_THREADS;
	}
	return n;
}

/* Gives the heap's free pages back to the system once a burst is over:
 * glibc keeps what the threads of a peak freed, in every arena, for good
 * (doc/behaviour.md, Processes, threads, timeouts: memory after a burst).
 * Only when no thread serves and some served since the last call: then the
 * walk of the arenas holds nobody up, and an idle process pays nothing. */
static void
main_trim(struct main_pool *pool, long *trimmed_at)
{
#ifdef HAVE_MALLOC_TRIM
	/* A thread that ended (main_retire) handed its cache back to an arena. */
	long served = atomic_load_explicit(&pool->served, memory_order_relaxed) +
		      atomic_load(&pool->retired);
	if (served == *trimmed_at || atomic_load(&pool->idle) < atomic_load(&pool->started))
		return;
	*trimmed_at = served;
	malloc_trim(0);
#else
	(void)pool;
	(void)trimmed_at;
#endif
}

/* The main thread's work once the workers run: once a second, the store
 * gets the refusals the workers counted since, and the state file what they
 * counted since (store_sync). Every process does it; the first to find the
 * file behind writes it, the others find it current. A problem is logged
 * when it starts and when it changes, not every second; the workers answer
 * 503 for it on their own. */
static _Noreturn void
main_sync_forever(struct main_pool *pool)
{
	long trimmed_at = 0;
	struct store *st = NULL;
	char err[256], last[256] = "";
	sigset_t stop;
	bool stopping = false;

	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	while (!stopping) {
		struct timespec second = {1, 0};
		int sig = sigtimedwait(&stop, NULL, &second);
		/* Stopped: one more sync, so that no refusal counted here is lost. */
		stopping = sig == SIGTERM || sig == SIGINT;
		const char *why = NULL;
		struct config *cfg = config_acquire(&why);
		if (cfg == NULL)
			continue;
		const char *want = worker_store_address(cfg, NULL);
		struct store_options o;
		worker_store_options(cfg, &o);
		err[0] = '\0';
		if (st != NULL && (want == NULL || !store_matches(st, want, &o))) {
			store_close(st);
			st = NULL;
		}
		if (st == NULL && want != NULL)
			st = store_open_with(want, &o, err, sizeof(err));
		if (st != NULL && store_sync(st, err, sizeof(err)) != 0) {
			store_close(st);
			st = NULL;
		}
		if (err[0] != '\0' && strcmp(err, last) != 0)
			log_error("%s not synced: %s",
				  want != NULL ? worker_store_what(want) : "state store", err);
		config_release(cfg);
		memcpy(last, err, sizeof(last));
		main_trim(pool, &trimmed_at);
	}
	_exit(0);
}

static int
main_serve_forever(const char *listen_addr)
{
	struct sigaction sa = {0};
	long n = main_threads();

	sa.sa_handler = main_on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* Taken by the main thread alone (main_sync_forever); the workers
	 * started below inherit the mask. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);

	if (FCGX_Init() != 0) {
		fprintf(stderr, "api-together: FastCGI library cannot start\n");
		return 1;
	}
	/* After FCGX_Init, which puts handlers of its own on both: lighttpd
	 * closes the connection once it has an answer's Content-Length, so
	 * the end record after it meets a closed socket, and a handler would
	 * cost a signal's delivery per request where an ignored one costs
	 * nothing (libcurl's sends carry MSG_NOSIGNAL). */
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	struct sockaddr_storage ss;
	socklen_t ss_len = sizeof(ss);
	if (listen_addr != NULL) {
		/* Unix sockets: a socket file left by a killed run would block the bind. */
		if (listen_addr[0] == '/') {
			struct stat sb;
			if (stat(listen_addr, &sb) == 0 && S_ISSOCK(sb.st_mode))
				unlink(listen_addr);
		}
		main_listen_fd = FCGX_OpenSocket(listen_addr, 128);
		if (main_listen_fd < 0) {
			fprintf(stderr, "api-together: cannot listen on %s\n", listen_addr);
			return 1;
		}
	} else {
		main_listen_fd = 0;
	}
	if (getsockname(main_listen_fd, (struct sockaddr *)&ss, &ss_len) != 0) {
		if (listen_addr == NULL) {
			fprintf(stderr,
				"api-together: not started by a FastCGI server (standard input "
				"is no socket); use --listen, or see --help\n");
			return 2;
		}
		ss.ss_family = AF_UNSPEC;
	}
	main_listen_unix = ss.ss_family == AF_UNIX;
	main_web_server_addrs = getenv("FCGI_WEB_SERVER_ADDRS");
	config_set_path(main_config_path());
	{
		const char *why = NULL;
		struct config *cfg = config_acquire(&why);
		if (cfg == NULL)
			log_error("no usable configuration at %s; answering 500 until it loads",
				  main_config_path());
		else
			config_release(cfg);
	}
	/* Threads sit mostly in libcurl and libfcgi: a small stack is plenty,
	 * and many threads stay cheap. jansson's parser recurses to 2048 levels. */
	static struct main_pool pool = {.curls = CURL_SHELF_INIT};
	pool.max = n;
	pthread_attr_init(&pool.attr);
	pthread_attr_setstacksize(&pool.attr, 1024 * 1024);
	/* accept gives up after MAIN_IDLE_THREAD_MS (main_retire). Without
	 * it, threads stay: a matter of memory, not behaviour. */
	if (request_read_limit(main_listen_fd, MAIN_IDLE_THREAD_MS) != 0)
		log_debug("idle worker threads stay: SO_RCVTIMEO on the FastCGI socket: %s",
			  strerror(errno));
	for (long i = 0; i < n && i < MAIN_FIRST_THREADS; i++)
		main_spawn(&pool);
	if (atomic_load(&pool.started) == 0)
		return 1;
	log_info("started: %ld worker threads (up to %ld as requests need them), pid %ld",
		 (long)atomic_load(&pool.started), n, (long)getpid());
	main_sync_forever(&pool);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"check-config", no_argument, NULL, 'c'}, {"status", no_argument, NULL, 's'},
		{"listen", required_argument, NULL, 'l'}, {"version", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	const char *listen_addr = NULL;
	int mode = 0, c;

	log_init();
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
		case 's':
		case 'v':
			mode = c;
			break;
		case 'l':
			listen_addr = optarg;
			break;
		case 'h':
			main_usage(stdout);
			return 0;
		default:
			main_usage(stderr);
			return 2;
		}
	}
	if (mode == 'v') {
		printf("api-together %s\n", PACKAGE_VERSION);
		return 0;
	}
	if (mode == 'c') {
		const char *file = optind < argc ? argv[optind] : main_config_path();
		return main_check_config(file);
	}
	if (optind < argc) {
		main_usage(stderr);
		return 2;
	}
	if (mode == 's')
		return main_status();
#if defined(HAVE_MALLOPT) && defined(M_ARENA_MAX)
	/* glibc gives threads arenas of their own, up to 8 per core, each
	 * keeping some 25 kB of freed memory: with hundreds of worker threads
	 * (one per stream) that is most of a process's private memory. Two are
	 * plenty for a process that mostly waits on sockets. (Without mallopt
	 * the allocator is left as it is: a matter of memory, not behaviour.) */
	if (getenv("MALLOC_ARENA_MAX") == NULL)
		mallopt(M_ARENA_MAX, 2);
#endif
#if defined(HAVE_MALLOPT) && defined(M_MMAP_THRESHOLD)
	/* A fixed threshold: glibc otherwise raises it to the size of each
	 * large block freed, and the next request body (up to maxBodyBytes)
	 * would come from an arena that keeps it after the answer. Mapped, it
	 * goes back to the system when freed (doc/behaviour.md, HTTP). */
	if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL)
		mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fprintf(stderr, "api-together: libcurl cannot start\n");
		return 1;
	}
	return main_serve_forever(listen_addr);
}

/* bench/sse-bench: how much delay the gateway adds to Server-Sent-Event
 * streams, measured from outside with many streams at once.
 *
 *   sse-bench serve --port P [--bind ADDR] [--events N] [--interval-ms MS]
 *   sse-bench drive --url http://HOST:PORT/PATH --streams N [--header 'N: v']...
 *                   [--body JSON] [--events N] [--interval-ms MS]
 *                   [--timeout-s S] [--json] [--user-time] [--by-event]
 *
 * "serve" is a mock OpenAI upstream: every request (any method and path but
 * GET /health, which answers "ok") gets a chat.completion.chunk stream of N
 * events, the first at once and then one every MS, the last with "usage",
 * then "data: [DONE]"; each event is one chunk in one write. It prints
 * "listening on PORT" when ready and runs until SIGTERM or SIGINT, then
 * reports on stderr how late it wrote its own events (the floor under
 * everything drive measures, since a busy machine delays the mock too).
 *
 * "drive" opens all its streams at once and, over the completed ones,
 * reports time to first body byte after the request was sent, and each
 * event's delay against the mock's schedule: event i of a stream is due at
 * t_first + i * MS. Reading the mock directly gives the floor (the two
 * processes and the loopback); the same figure through the gateway, minus
 * the floor, is what the gateway adds. Arrivals are timed by the kernel's
 * receive stamp, not by when this single thread got to the read (see
 * arrival_ns); --user-time times them by the read instead. Each event also
 * carries the mock's send time ("bench_t", CLOCK_MONOTONIC, so both ends
 * must run on one machine): its transit, arrival minus send, is the delay a
 * gateway adds to the event. It is reported for the events after the first
 * (event_transit_ms) and for the first (first_event_transit_ms), which is
 * part of the time to first byte.
 *
 * A stream completes with status 200, --events events, "data: [DONE]" and
 * the end of the body (chunked, Content-Length or close). Failures count by
 * reason: connect (or request not sent), closed (before a response head),
 * protocol (malformed response), status (not 200), short (cut off, no
 * [DONE], another event count), timeout. Exit status 0 when all completed.
 * --json prints one object: streams, events, interval_ms, started (request
 * sent), completed, failed, fail{reason: count}, status{code: count},
 * ttfb_ms{n,p50,p90,p99,max}, event_delay_ms{n,p50,p99,max},
 * event_gap_ms{n,p50,p99}, event_transit_ms{n,p50,p99,max}, first_event_transit_ms{...},
 * arrival_clock ("kernel", "read" or "mixed"), wall_s. Percentiles are nearest-rank.
 *
 * Libc only, one thread per mode, epoll; the mock's timing comes from one
 * timerfd armed at the earliest per-connection deadline of a min-heap, so a
 * thousand streams cost one wake-up per due instant, not a thousand timers,
 * and nothing runs between events. Both modes raise RLIMIT_NOFILE to the
 * hard limit; simultaneous connects beyond net.core.somaxconn overflow the
 * listen backlog and show up as about 1 s more time to first byte. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)

/* Requests are read whole before answering; 8 KB is what most servers allow
 * for a request head, and the mock never holds a body. */
#define SRV_IN_MAX 8192
/* Unsent output a connection may pile up before the mock gives up on a
 * reader that does not read (a whole default stream is under 5 KB). */
#define SRV_OUT_MAX (1024 * 1024)
#define CLI_HEAD_MAX 8192
#define CLI_MAX_HEADERS 64
#define EPOLL_BATCH 256

#define DEFAULT_BODY                                                                               \
	"{\"model\":\"bench\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"       \
	"\"hi\"}]}"

/* Each event carries the mock's CLOCK_MONOTONIC time of sending it, written
 * into this fixed-width field as it leaves, so a client on the same machine
 * can tell how long each event took to reach it (transit), through a
 * gateway or directly. */
#define STAMP_FIELD "{\"bench_t\":\""
#define STAMP_DIGITS 19
#define EVENT_PREFIX                                                                               \
	STAMP_FIELD "0000000000000000000\",\"id\":\"chatcmpl-bench\",\"object\":\"chat."           \
		    "completion.chunk\",\"created\":1,\"model\":"                                  \
		    "\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok\"},"         \
		    "\"finish_reason\":"

/* --- Common --- */

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
msg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)fputs("sse-bench: ", stderr);
	(void)vfprintf(stderr, fmt, ap);
	(void)fputc('\n', stderr);
	va_end(ap);
}

static int64_t
now_ns(void)
{
	struct timespec ts;

	/* Cannot fail for this clock; a failure would make every figure a lie. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		abort();
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static bool
parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Thousands of sockets need more than the usual soft limit of 1024, and the
 * hard limit is ours to take without privileges. */
static long
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		msg("getrlimit: %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			msg("setrlimit: %s", strerror(errno));
		if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
			return -1;
	}
	return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > LONG_MAX ? LONG_MAX
								      : (long)rl.rlim_cur;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Offset just past the blank line ending an HTTP head, or 0 while it is not
 * all there. Bare LF line ends are taken too, as most servers do. */
static size_t
head_end(const char *p, size_t n, size_t from)
{
	for (size_t i = from; i < n; i++) {
		if (p[i] != '\n')
			continue;
		if (i + 1 < n && p[i + 1] == '\n')
			return i + 2;
		if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* Whether the comma-separated header value v holds token (any case). */
static bool
has_token(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token);

	for (size_t i = 0; i + tl <= n; i++) {
		if (strncasecmp(v + i, token, tl) != 0)
			continue;
		bool left = i == 0 || v[i - 1] == ',' || v[i - 1] == ' ' || v[i - 1] == '\t';
		size_t j = i + tl;
		bool right = j == n || v[j] == ',' || v[j] == ' ' || v[j] == '\t' || v[j] == ';';
		if (left && right)
			return true;
	}
	return false;
}

/* Calls fn for each header line of an HTTP head (after its first line), with
 * the name and the value, blanks trimmed. */
typedef void (*header_fn)(void *ctx, const char *name, size_t nlen, const char *val, size_t vlen);

static void
each_header(const char *head, size_t len, header_fn fn, void *ctx)
{
	const char *p = memchr(head, '\n', len);
	const char *end = head + len;

	if (p == NULL)
		return;
	for (p++; p < end;) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *le = eol != NULL ? eol : end;
		const char *colon = memchr(p, ':', (size_t)(le - p));

		if (le > p && le[-1] == '\r')
			le--;
		if (colon != NULL && colon < le) {
			const char *v = colon + 1;
			while (v < le && (*v == ' ' || *v == '\t'))
				v++;
			const char *ve = le;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			fn(ctx, p, (size_t)(colon - p), v, (size_t)(ve - v));
		}
		if (eol == NULL)
			break;
		p = eol + 1;
	}
}

static bool
name_is(const char *name, size_t nlen, const char *want)
{
	return nlen == strlen(want) && strncasecmp(name, want, nlen) == 0;
}

/* A Content-Length value; false for anything but plain digits. */
static bool
parse_length(const char *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;

	if (n == 0 || n > 18)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return true;
}

/* --- Chunked transfer coding, decoded incrementally (both modes) --- */

enum ch_state { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_DONE };

struct chunked {
	enum ch_state st;
	unsigned digits;
	uint64_t left;
	size_t line; /* length of the current trailer line */
};

typedef void (*chunk_sink)(void *ctx, const char *p, size_t n);

static bool
chunked_size_done(struct chunked *d)
{
	if (d->digits == 0)
		return false;
	d->digits = 0;
	d->line = 0;
	d->st = d->left > 0 ? CH_DATA : CH_TRAILER;
	return true;
}

/* Feeds n bytes; the data goes to sink (if any). Returns the bytes used,
 * fewer than n only once the last chunk and trailer are through (the rest
 * belongs to whatever follows), or -1 on bad framing. Any split works. */
static ptrdiff_t
chunked_feed(struct chunked *d, const char *p, size_t n, chunk_sink sink, void *ctx)
{
	size_t i = 0;

	while (i < n && d->st != CH_DONE) {
		char c = p[i];
		int v;

		switch (d->st) {
		case CH_DATA: {
			size_t take = n - i;
			if (take > d->left)
				take = (size_t)d->left;
			if (sink != NULL)
				sink(ctx, p + i, take);
			d->left -= take;
			i += take;
			if (d->left == 0)
				d->st = CH_DATA_CR;
			continue;
		}
		case CH_SIZE:
			v = hexval(c);
			if (v >= 0) {
				/* 15 hex digits is far beyond any chunk; more is an attack. */
				if (d->digits >= 15)
					return -1;
				d->left = d->left * 16 + (uint64_t)v;
				d->digits++;
			} else if (c == ';' || c == ' ' || c == '\t') {
				d->st = CH_EXT;
			} else if (c == '\r') {
				d->st = CH_SIZE_LF;
			} else if (c == '\n') {
				if (!chunked_size_done(d))
					return -1;
			} else {
				return -1;
			}
			break;
		case CH_EXT:
			if (c == '\n' && !chunked_size_done(d))
				return -1;
			break;
		case CH_SIZE_LF:
			if (c != '\n' || !chunked_size_done(d))
				return -1;
			break;
		case CH_DATA_CR:
			if (c == '\r')
				d->st = CH_DATA_LF;
			else if (c == '\n')
				d->st = CH_SIZE;
			else
				return -1;
			break;
		case CH_DATA_LF:
			if (c != '\n')
				return -1;
			d->st = CH_SIZE;
			break;
		case CH_TRAILER:
			if (c == '\n') {
				if (d->line == 0)
					d->st = CH_DONE;
				d->line = 0;
			} else if (c != '\r') {
				d->line++;
			}
			break;
		case CH_DONE:
			break;
		}
		i++;
	}
	return (ptrdiff_t)i;
}

/* ===================== serve: the mock upstream ===================== */

enum srv_phase { C_HEAD, C_BODY, C_STREAM, C_CLOSING };

struct conn {
	int fd;
	enum srv_phase phase;
	uint32_t mask; /* epoll events currently asked for */
	bool read_paused;
	bool keep_alive;
	bool http10;
	bool health;
	bool body_chunked;
	uint64_t body_left;
	struct chunked ch;
	long sent;        /* events written on the current stream */
	int64_t t0;       /* when the first event was written */
	int64_t deadline; /* when the next one is due */
	size_t heap_pos;  /* SIZE_MAX when not scheduled */
	char *out;
	size_t out_off, out_len, out_cap;
	struct conn *next_dead;
	size_t in_len;
	char in[SRV_IN_MAX];
};

struct server {
	int ep, lfd, tfd, sfd;
	bool accept_paused;
	long events;
	int64_t interval_ns;
	struct conn **heap;
	size_t heap_n, heap_cap;
	int64_t armed; /* deadline the timerfd is set to, 0 if none */
	struct conn *dead;
	size_t ev_mid_len, ev_last_len, raw_mid_len, raw_last_len;
	char ev_mid[512], ev_last[1024], raw_mid[512], raw_last[1024];
	long open, streams, finished, aborted;
	/* The mock's own lateness per event, write time minus deadline, in
	 * 0.1 ms steps (the last step: 1 s or more): the floor under every
	 * figure drive reports. */
	long late[10001];
	long late_n;
};

/* Tags for the non-connection fds in epoll data; conns are heap pointers and
 * never this small. */
#define TAG_LISTEN ((void *)1)
#define TAG_TIMER ((void *)2)
#define TAG_SIGNAL ((void *)3)

static struct server srv;

static bool
heap_less(size_t a, size_t b)
{
	return srv.heap[a]->deadline < srv.heap[b]->deadline;
}

static void
heap_swap(size_t a, size_t b)
{
	struct conn *t = srv.heap[a];

	srv.heap[a] = srv.heap[b];
	srv.heap[b] = t;
	srv.heap[a]->heap_pos = a;
	srv.heap[b]->heap_pos = b;
}

static void
heap_up(size_t i)
{
	while (i > 0 && heap_less(i, (i - 1) / 2)) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
heap_down(size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < srv.heap_n && heap_less(l, m))
			m = l;
		if (r < srv.heap_n && heap_less(r, m))
			m = r;
		if (m == i)
			return;
		heap_swap(i, m);
		i = m;
	}
}

static bool
heap_push(struct conn *c)
{
	if (srv.heap_n == srv.heap_cap) {
		size_t cap = srv.heap_cap ? srv.heap_cap * 2 : 1024;
		struct conn **h = realloc(srv.heap, cap * sizeof(*h));
		if (h == NULL)
			return false;
		srv.heap = h;
		srv.heap_cap = cap;
	}
	srv.heap[srv.heap_n] = c;
	c->heap_pos = srv.heap_n++;
	heap_up(c->heap_pos);
	return true;
}

static void
heap_remove(struct conn *c)
{
	size_t i = c->heap_pos;

	if (i == SIZE_MAX)
		return;
	c->heap_pos = SIZE_MAX;
	if (--srv.heap_n == i)
		return;
	srv.heap[i] = srv.heap[srv.heap_n];
	srv.heap[i]->heap_pos = i;
	heap_up(i);
	heap_down(srv.heap[i]->heap_pos);
}

static void
srv_set_listen(bool on)
{
	struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.ptr = TAG_LISTEN};

	if (srv.accept_paused == !on)
		return;
	if (epoll_ctl(srv.ep, EPOLL_CTL_MOD, srv.lfd, &ev) != 0)
		msg("epoll_ctl listen: %s", strerror(errno));
	srv.accept_paused = !on;
}

/* The fd goes now; the memory at the end of the epoll batch, since a later
 * event of the same batch may still name it. */
static void
conn_close(struct conn *c)
{
	if (c->fd < 0)
		return;
	if (c->phase == C_STREAM)
		srv.aborted++;
	heap_remove(c);
	if (close(c->fd) != 0)
		msg("close: %s", strerror(errno));
	c->fd = -1;
	c->next_dead = srv.dead;
	srv.dead = c;
	srv.open--;
	srv_set_listen(true);
}

static bool
conn_update(struct conn *c)
{
	uint32_t want = 0;

	if (!c->read_paused && c->phase != C_CLOSING)
		want |= EPOLLIN;
	if (c->out_len > c->out_off)
		want |= EPOLLOUT;
	if (want == c->mask)
		return true;
	struct epoll_event ev = {.events = want, .data.ptr = c};
	if (epoll_ctl(srv.ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
		msg("epoll_ctl: %s", strerror(errno));
		conn_close(c);
		return false;
	}
	c->mask = want;
	return true;
}

static bool
conn_queue(struct conn *c, const char *p, size_t n)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n)
			cap *= 2;
		if (cap > SRV_OUT_MAX)
			return false;
		char *o = realloc(c->out, cap);
		if (o == NULL)
			return false;
		c->out = o;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
	return true;
}

/* Writes iov in one call so each event leaves as one segment; whatever the
 * socket does not take waits for EPOLLOUT, behind anything already waiting. */
static bool
conn_send(struct conn *c, const struct iovec *iov, int n)
{
	ssize_t w = 0;

	if (c->out_len == c->out_off) {
		w = writev(c->fd, iov, n);
		if (w < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				conn_close(c);
				return false;
			}
			w = 0;
		}
	}
	size_t skip = (size_t)w;
	for (int i = 0; i < n; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		if (!conn_queue(c, (const char *)iov[i].iov_base + skip, iov[i].iov_len - skip)) {
			msg("client does not read; closing");
			conn_close(c);
			return false;
		}
		skip = 0;
	}
	return conn_update(c);
}

static bool
conn_send1(struct conn *c, const char *p, size_t n)
{
	struct iovec iov = {.iov_base = (void *)p, .iov_len = n};

	return conn_send(c, &iov, 1);
}

static void
conn_flush(struct conn *c)
{
	while (c->out_len > c->out_off) {
		ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_close(c);
			break;
		}
		c->out_off += (size_t)w;
	}
	if (c->fd < 0)
		return;
	if (c->out_len == c->out_off && c->phase == C_CLOSING) {
		conn_close(c);
		return;
	}
	(void)conn_update(c);
}

/* Closes once what is queued has gone out. */
static void
conn_finish(struct conn *c)
{
	c->phase = C_CLOSING;
	if (c->out_len == c->out_off)
		conn_close(c);
	else
		(void)conn_update(c);
}

static void
conn_error(struct conn *c, const char *status)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n"
			 "Connection: close\r\n\r\n",
			 status);

	if (n < 0 || (size_t)n >= sizeof(buf) || !conn_send1(c, buf, (size_t)n))
		return;
	conn_finish(c);
}

static void
conn_consume(struct conn *c, size_t n)
{
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
}

struct req_info {
	bool ok, chunked, close;
	uint64_t length;
};

static void
req_header(void *ctx, const char *name, size_t nlen, const char *val, size_t vlen)
{
	struct req_info *ri = ctx;

	if (name_is(name, nlen, "Content-Length")) {
		if (!parse_length(val, vlen, &ri->length))
			ri->ok = false;
	} else if (name_is(name, nlen, "Transfer-Encoding")) {
		/* Any other coding has no length we could find the end by. */
		if (has_token(val, vlen, "chunked"))
			ri->chunked = true;
		else
			ri->ok = false;
	} else if (name_is(name, nlen, "Connection")) {
		if (has_token(val, vlen, "close"))
			ri->close = true;
	}
}

static bool
conn_parse_request(struct conn *c, size_t end)
{
	struct req_info ri = {.ok = true};
	const char *sp1, *sp2, *eol;

	eol = memchr(c->in, '\n', end);
	sp1 = memchr(c->in, ' ', (size_t)(eol - c->in));
	if (sp1 == NULL)
		return false;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	if (sp2 == NULL || eol - sp2 < 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
		return false;
	c->http10 = sp2[8] == '0';
	c->health = sp1 - c->in == 3 && memcmp(c->in, "GET", 3) == 0 && sp2 - sp1 - 1 == 7 &&
		    memcmp(sp1 + 1, "/health", 7) == 0;

	each_header(c->in, end, req_header, &ri);
	if (!ri.ok)
		return false;
	/* HTTP/1.0 streams are close-delimited, so a 1.0 connection always ends
	 * with its first answer. */
	c->keep_alive = !c->http10 && !ri.close;
	c->body_chunked = ri.chunked;
	c->body_left = ri.chunked ? 0 : ri.length;
	memset(&c->ch, 0, sizeof(c->ch));
	return true;
}

static void srv_stream_end(struct conn *c);
static void srv_stamp(void);

static void
conn_start_stream(struct conn *c)
{
	char head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.%c 200 OK\r\nContent-Type: text/event-stream\r\n"
			 "Cache-Control: no-cache\r\n%s%s\r\n",
			 c->http10 ? '0' : '1', c->http10 ? "" : "Transfer-Encoding: chunked\r\n",
			 c->keep_alive ? "" : "Connection: close\r\n");
	bool last = srv.events == 1;
	struct iovec iov[2];

	if (n < 0 || (size_t)n >= sizeof(head)) {
		conn_close(c);
		return;
	}
	iov[0].iov_base = head;
	iov[0].iov_len = (size_t)n;
	if (c->http10) {
		iov[1].iov_base = last ? srv.raw_last : srv.raw_mid;
		iov[1].iov_len = last ? srv.raw_last_len : srv.raw_mid_len;
	} else {
		iov[1].iov_base = last ? srv.ev_last : srv.ev_mid;
		iov[1].iov_len = last ? srv.ev_last_len : srv.ev_mid_len;
	}
	srv.streams++;
	c->phase = C_STREAM;
	srv_stamp();
	c->t0 = now_ns();
	c->sent = 1;
	if (!conn_send(c, iov, 2))
		return;
	if (last) {
		srv_stream_end(c);
		return;
	}
	/* Every deadline counts from t0, so one late wake-up does not push the
	 * rest of the stream back. */
	c->deadline = c->t0 + srv.interval_ns;
	if (!heap_push(c)) {
		msg("out of memory");
		conn_close(c);
	}
}

/* Runs the request parser over what has been read, answering each complete
 * request; stops while a stream is going. */
static void
conn_process(struct conn *c)
{
	while (c->fd >= 0) {
		if (c->phase == C_HEAD) {
			size_t end = head_end(c->in, c->in_len, 0);
			if (end == 0) {
				if (c->in_len == sizeof(c->in))
					conn_error(c, "431 Request Header Fields Too Large");
				return;
			}
			if (!conn_parse_request(c, end)) {
				conn_error(c, "400 Bad Request");
				return;
			}
			conn_consume(c, end);
			c->phase = C_BODY;
		}
		if (c->phase != C_BODY)
			return;
		if (c->body_chunked) {
			ptrdiff_t r = chunked_feed(&c->ch, c->in, c->in_len, NULL, NULL);
			if (r < 0) {
				conn_error(c, "400 Bad Request");
				return;
			}
			conn_consume(c, (size_t)r);
			if (c->ch.st != CH_DONE)
				return;
		} else {
			size_t take = c->in_len;
			if (take > c->body_left)
				take = (size_t)c->body_left;
			conn_consume(c, take);
			c->body_left -= take;
			if (c->body_left > 0)
				return;
		}
		if (!c->health) {
			conn_start_stream(c);
			return;
		}
		static const char ok_ka[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
					    "Content-Length: 2\r\n\r\nok";
		static const char ok_close[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
					       "Content-Length: 2\r\nConnection: close\r\n\r\nok";
		if (c->keep_alive) {
			if (!conn_send1(c, ok_ka, sizeof(ok_ka) - 1))
				return;
			c->phase = C_HEAD;
		} else {
			if (conn_send1(c, ok_close, sizeof(ok_close) - 1))
				conn_finish(c);
			return;
		}
	}
}

static void
srv_stream_end(struct conn *c)
{
	srv.finished++;
	if (!c->keep_alive) {
		conn_finish(c);
		return;
	}
	c->phase = C_HEAD;
	c->read_paused = false;
	if (!conn_update(c))
		return;
	conn_process(c);
}

static void
conn_read(struct conn *c)
{
	size_t room = sizeof(c->in) - c->in_len;
	ssize_t r;

	if (room == 0) {
		/* Only while a stream is going: a pipelined request waits, and
		 * reading stops until the stream ends. */
		c->read_paused = true;
		(void)conn_update(c);
		return;
	}
	r = recv(c->fd, c->in + c->in_len, room, 0);
	if (r < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			conn_close(c);
		return;
	}
	if (r == 0) {
		/* The client went away (a gateway cancelling a stream shows up so). */
		conn_close(c);
		return;
	}
	c->in_len += (size_t)r;
	if (c->phase == C_HEAD || c->phase == C_BODY)
		conn_process(c);
}

static void
srv_accept(void)
{
	for (;;) {
		int fd = accept4(srv.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				/* Level-triggered: left on, this would spin.
				 * Back on at the next close. */
				msg("accept: %s (%ld open); pausing accepts", strerror(errno),
				    srv.open);
				srv_set_listen(false);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
				msg("accept: %s", strerror(errno));
			}
			return;
		}
		int one = 1;
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
			msg("TCP_NODELAY: %s", strerror(errno));
		struct conn *c = malloc(sizeof(*c));
		if (c == NULL) {
			msg("out of memory");
			if (close(fd) != 0)
				msg("close: %s", strerror(errno));
			return;
		}
		memset(c, 0, offsetof(struct conn, in));
		c->fd = fd;
		c->phase = C_HEAD;
		c->heap_pos = SIZE_MAX;
		c->mask = EPOLLIN;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		if (epoll_ctl(srv.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			msg("epoll_ctl: %s", strerror(errno));
			if (close(fd) != 0)
				msg("close: %s", strerror(errno));
			free(c);
			return;
		}
		srv.open++;
	}
}

static void
srv_tick(struct conn *c)
{
	bool last = c->sent == srv.events - 1;
	struct iovec iov;

	if (c->http10) {
		iov.iov_base = last ? srv.raw_last : srv.raw_mid;
		iov.iov_len = last ? srv.raw_last_len : srv.raw_mid_len;
	} else {
		iov.iov_base = last ? srv.ev_last : srv.ev_mid;
		iov.iov_len = last ? srv.ev_last_len : srv.ev_mid_len;
	}
	c->sent++;
	srv_stamp();
	if (!conn_send(c, &iov, 1))
		return;
	if (last) {
		srv_stream_end(c);
		return;
	}
	c->deadline = c->t0 + c->sent * srv.interval_ns;
	if (!heap_push(c)) {
		msg("out of memory");
		conn_close(c);
	}
}

static void
srv_run_due(void)
{
	while (srv.heap_n > 0) {
		struct conn *c = srv.heap[0];
		/* The clock is read again for each: writing a thousand events
		 * takes milliseconds, and a deadline passing meanwhile is due. */
		int64_t now = now_ns();
		if (c->deadline > now)
			break;
		int64_t step = (now - c->deadline) / 100000;
		srv.late[step < 10000 ? step : 10000]++;
		srv.late_n++;
		heap_remove(c);
		srv_tick(c);
	}
}

static void
srv_arm(void)
{
	int64_t want = srv.heap_n > 0 ? srv.heap[0]->deadline : 0;
	struct itimerspec its = {0};

	if (want == srv.armed)
		return;
	/* A deadline already past still fires at once with an absolute time. */
	its.it_value.tv_sec = (time_t)(want / NS_PER_S);
	its.it_value.tv_nsec = (long)(want % NS_PER_S);
	if (timerfd_settime(srv.tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0) {
		msg("timerfd_settime: %s", strerror(errno));
		return;
	}
	srv.armed = want;
}

static bool
build_event(char *buf, size_t cap, size_t *len, bool chunked, const char *data)
{
	size_t dlen = strlen(data);
	int n = chunked ? snprintf(buf, cap, "%zx\r\n%s\r\n", dlen, data)
			: snprintf(buf, cap, "%s", data);

	if (n < 0 || (size_t)n >= cap)
		return false;
	*len = (size_t)n;
	return true;
}

/* Writes now into every prebuilt event's stamp field. The server is one
 * thread and each write copies the bytes into the kernel at once, so the
 * shared buffers can be stamped just before each send. */
static void
srv_stamp(void)
{
	char digits[STAMP_DIGITS + 1];
	char *bufs[4] = {srv.ev_mid, srv.ev_last, srv.raw_mid, srv.raw_last};
	size_t lens[4] = {srv.ev_mid_len, srv.ev_last_len, srv.raw_mid_len, srv.raw_last_len};
	int n = snprintf(digits, sizeof(digits), "%0*lld", STAMP_DIGITS, (long long)now_ns());

	if (n != STAMP_DIGITS)
		return;
	for (int i = 0; i < 4; i++) {
		char *at = memmem(bufs[i], lens[i], STAMP_FIELD, sizeof(STAMP_FIELD) - 1);
		/* The last buffer holds one event (then [DONE]): one field each. */
		if (at != NULL &&
		    (size_t)(at - bufs[i]) + sizeof(STAMP_FIELD) - 1 + STAMP_DIGITS <= lens[i])
			memcpy(at + sizeof(STAMP_FIELD) - 1, digits, STAMP_DIGITS);
	}
}

static bool
srv_build_events(void)
{
	char mid[512], last[512], done[64], both[1024];
	int n1 = snprintf(mid, sizeof(mid), "data: " EVENT_PREFIX "null}]}\n\n");
	int n2 = snprintf(last, sizeof(last),
			  "data: " EVENT_PREFIX "\"stop\"}],\"usage\":{\"prompt_tokens\":5,"
			  "\"completion_tokens\":%ld,\"total_tokens\":%ld}}\n\n",
			  srv.events, srv.events + 5);
	int n3 = snprintf(done, sizeof(done), "data: [DONE]\n\n");
	size_t l1, l2;

	if (n1 < 0 || (size_t)n1 >= sizeof(mid) || n2 < 0 || (size_t)n2 >= sizeof(last) || n3 < 0 ||
	    (size_t)n3 >= sizeof(done))
		return false;
	if (!build_event(srv.ev_mid, sizeof(srv.ev_mid), &srv.ev_mid_len, true, mid) ||
	    !build_event(srv.raw_mid, sizeof(srv.raw_mid), &srv.raw_mid_len, false, mid))
		return false;
	/* Last event, [DONE] and the end of the body leave in one write, each
	 * event still in its own chunk. */
	if (!build_event(srv.ev_last, sizeof(srv.ev_last), &l1, true, last) ||
	    !build_event(both, sizeof(both), &l2, true, done) || l1 + l2 + 5 >= sizeof(srv.ev_last))
		return false;
	memcpy(srv.ev_last + l1, both, l2);
	memcpy(srv.ev_last + l1 + l2, "0\r\n\r\n", 5);
	srv.ev_last_len = l1 + l2 + 5;
	int n4 = snprintf(srv.raw_last, sizeof(srv.raw_last), "%s%s", last, done);
	if (n4 < 0 || (size_t)n4 >= sizeof(srv.raw_last))
		return false;
	srv.raw_last_len = (size_t)n4;
	return true;
}

static int
srv_listen(const char *bind_addr, long port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1;

	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, bind_addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		sl = sizeof(*s4);
	} else if (inet_pton(AF_INET6, bind_addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*s6);
	} else {
		msg("--bind: not an IP address: %s", bind_addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		msg("socket: %s", strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
		msg("setsockopt: %s", strerror(errno));
	/* The kernel caps the backlog at net.core.somaxconn; ask for plenty so
	 * a thousand simultaneous connects are not dropped and retried 1 s later. */
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 65535) != 0) {
		msg("bind/listen %s:%ld: %s", bind_addr, port, strerror(errno));
		if (close(fd) != 0)
			msg("close: %s", strerror(errno));
		return -1;
	}
	sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
		msg("getsockname: %s", strerror(errno));
		return -1;
	}
	srv.lfd = fd;
	return ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
}

static void
usage(void)
{
	(void)fputs(
		"usage: sse-bench serve --port P [--bind ADDR] [--events N] [--interval-ms MS]\n"
		"       sse-bench drive --url http://HOST:PORT/PATH --streams N\n"
		"                       [--header 'Name: value']... [--body JSON] [--events N]\n"
		"                       [--interval-ms MS] [--timeout-s S] [--json] "
		"[--user-time] [--by-event]\n",
		stderr);
}

static int
srv_main(int argc, char **argv)
{
	const char *bind_addr = "127.0.0.1";
	long port = -1, events = 20, interval = 50;

	for (int i = 2; i < argc; i += 2) {
		const char *o = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok;
		if (v == NULL) {
			usage();
			return 2;
		}
		if (strcmp(o, "--port") == 0)
			ok = parse_long(v, 0, 65535, &port);
		else if (strcmp(o, "--bind") == 0)
			ok = (bind_addr = v) != NULL;
		else if (strcmp(o, "--events") == 0)
			ok = parse_long(v, 1, 1000000, &events);
		else if (strcmp(o, "--interval-ms") == 0)
			ok = parse_long(v, 0, 3600000, &interval);
		else
			ok = false;
		if (!ok) {
			msg("bad option or value: %s %s", o, v);
			usage();
			return 2;
		}
	}
	if (port < 0) {
		usage();
		return 2;
	}
	srv.events = events;
	srv.interval_ns = interval * NS_PER_MS;
	if (!srv_build_events()) {
		msg("event too long");
		return 1;
	}
	(void)raise_nofile();

	struct sigaction sa = {.sa_handler = SIG_IGN};
	sigset_t set;
	if (sigaction(SIGPIPE, &sa, NULL) != 0 || sigemptyset(&set) != 0 ||
	    sigaddset(&set, SIGINT) != 0 || sigaddset(&set, SIGTERM) != 0 ||
	    sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		msg("signals: %s", strerror(errno));
		return 1;
	}
	srv.ep = epoll_create1(EPOLL_CLOEXEC);
	srv.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	srv.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (srv.ep < 0 || srv.tfd < 0 || srv.sfd < 0) {
		msg("epoll/timerfd/signalfd: %s", strerror(errno));
		return 1;
	}
	int bound = srv_listen(bind_addr, port);
	if (bound < 0)
		return 1;
	struct epoll_event e1 = {.events = EPOLLIN, .data.ptr = TAG_LISTEN};
	struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = TAG_TIMER};
	struct epoll_event e3 = {.events = EPOLLIN, .data.ptr = TAG_SIGNAL};
	if (epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.lfd, &e1) != 0 ||
	    epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.tfd, &e2) != 0 ||
	    epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.sfd, &e3) != 0) {
		msg("epoll_ctl: %s", strerror(errno));
		return 1;
	}
	if (printf("listening on %d\n", bound) < 0 || fflush(stdout) != 0) {
		msg("stdout: %s", strerror(errno));
		return 1;
	}

	struct epoll_event evs[EPOLL_BATCH];
	bool stop = false;
	while (!stop) {
		int n = epoll_wait(srv.ep, evs, EPOLL_BATCH, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			msg("epoll_wait: %s", strerror(errno));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			void *tag = evs[i].data.ptr;
			uint32_t e = evs[i].events;
			if (tag == TAG_LISTEN) {
				srv_accept();
			} else if (tag == TAG_TIMER) {
				uint64_t expirations;
				/* EAGAIN when a re-arm raced the read: harmless. */
				if (read(srv.tfd, &expirations, sizeof(expirations)) < 0 &&
				    errno != EAGAIN)
					msg("timerfd read: %s", strerror(errno));
				srv.armed = 0;
			} else if (tag == TAG_SIGNAL) {
				stop = true;
			} else {
				struct conn *c = tag;
				if (c->fd >= 0 && (e & EPOLLOUT))
					conn_flush(c);
				if (c->fd >= 0 && (e & (EPOLLIN | EPOLLHUP | EPOLLERR)))
					conn_read(c);
			}
		}
		srv_run_due();
		srv_arm();
		while (srv.dead != NULL) {
			struct conn *c = srv.dead;
			srv.dead = c->next_dead;
			free(c->out);
			free(c);
		}
	}
	msg("serve: %ld streams started, %ld finished, %ld cut short by the client", srv.streams,
	    srv.finished, srv.aborted);
	if (srv.late_n > 0) {
		const double want[] = {50, 99, 99.9, 100};
		char line[256];
		size_t len = 0;
		for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
			long need = (long)(want[k] / 100.0 * (double)srv.late_n + 0.999999),
			     seen = 0;
			int step = 0;
			while (step < 10000 && (seen += srv.late[step]) < need)
				step++;
			int n = snprintf(line + len, sizeof(line) - len, " p%g <%.1f", want[k],
					 (step + 1) / 10.0);
			if (n < 0 || (size_t)n >= sizeof(line) - len)
				break;
			len += (size_t)n;
		}
		msg("serve: own lateness over %ld timed events, ms:%s", srv.late_n, line);
	}
	return 0;
}

/* ===================== drive: the many-stream client ===================== */

enum reason { R_NONE, R_CONNECT, R_CLOSED, R_PROTOCOL, R_STATUS, R_SHORT, R_TIMEOUT, R_COUNT };

static const char *const reason_name[R_COUNT] = {
	"none", "connect", "closed", "protocol", "status", "short", "timeout",
};

static const char *const reason_text[R_COUNT] = {
	"",
	"connect error or request not sent",
	"closed or reset before a response head",
	"malformed response",
	"status other than 200",
	"short stream (cut off, no [DONE], or an event count other than --events)",
	"timeout",
};

enum cli_phase { S_CONNECTING, S_SENDING, S_HEAD, S_BODY, S_OVER };
enum framing { F_CHUNKED, F_LENGTH, F_CLOSE };

struct sse_state {
	char line[64]; /* enough of a line to tell "data: [DONE]" and read a stamp */
	size_t len;
	bool after_cr, has_data, is_done;
	int64_t stamp; /* the mock's send time of this event; 0 when it had none */
};

struct stream {
	int fd;
	enum cli_phase phase;
	bool completed;
	bool done_seen;
	bool have_first;
	enum framing framing;
	uint64_t body_left;
	struct chunked ch;
	struct sse_state sse;
	size_t sent;
	int64_t t_send, t_first, t_now;
	int64_t *ev;
	int64_t *tr; /* each event's transit: arrival - the mock's stamp, or -1 */
	size_t nev, ev_cap;
	size_t head_len;
	char *head; /* only while the head is being read */
};

struct client {
	int ep;
	long streams, events;
	int64_t interval_ns;
	char *req;
	size_t req_len;
	struct stream *s;
	long active, started, completed;
	long fails[R_COUNT];
	long status_count[600];
	bool said[R_COUNT];
	bool user_time;     /* --user-time: stamp arrivals when read, not by the kernel */
	bool by_event;      /* --by-event: transit per event number too, on stderr */
	long kernel_stamps; /* reads that carried a kernel receive stamp */
	long reads;
};

static struct client cli;

static void
stream_over(struct stream *s, enum reason r, const char *detail)
{
	if (s->phase == S_OVER)
		return;
	s->phase = S_OVER;
	if (r == R_NONE) {
		s->completed = true;
		cli.completed++;
	} else {
		cli.fails[r]++;
		/* One line per kind of failure is enough to see what went wrong. */
		if (!cli.said[r]) {
			cli.said[r] = true;
			msg("stream %td: %s%s%s", s - cli.s, reason_text[r], detail ? ": " : "",
			    detail ? detail : "");
		}
	}
	free(s->head);
	s->head = NULL;
	if (s->fd >= 0 && close(s->fd) != 0)
		msg("close: %s", strerror(errno));
	s->fd = -1;
	cli.active--;
}

static void
sse_event(struct stream *s, bool is_done, int64_t stamp)
{
	if (is_done) {
		s->done_seen = true;
		return;
	}
	if (s->done_seen)
		return;
	if (s->nev == s->ev_cap) {
		size_t cap = s->ev_cap ? s->ev_cap * 2 : (size_t)cli.events + 1;
		int64_t *e = realloc(s->ev, cap * sizeof(*e));
		int64_t *t = e != NULL ? realloc(s->tr, cap * sizeof(*t)) : NULL;
		if (e == NULL || t == NULL) {
			msg("out of memory");
			exit(1);
		}
		s->ev = e;
		s->tr = t;
		s->ev_cap = cap;
	}
	s->tr[s->nev] = stamp > 0 ? s->t_now - stamp : -1;
	s->ev[s->nev++] = s->t_now;
}

static void
sse_line_end(struct stream *s)
{
	struct sse_state *p = &s->sse;

	if (p->len == 0) {
		/* A blank line ends an event; one without data is none (SSE). */
		if (p->has_data)
			sse_event(s, p->is_done, p->stamp);
		p->has_data = p->is_done = false;
		p->stamp = 0;
		return;
	}
	if (p->len >= 5 && memcmp(p->line, "data:", 5) == 0) {
		size_t v = p->len > 5 && p->line[5] == ' ' ? 6 : 5;
		p->has_data = true;
		if (p->len - v == 6 && memcmp(p->line + v, "[DONE]", 6) == 0)
			p->is_done = true;
		size_t f = v + sizeof(STAMP_FIELD) - 1;
		if (p->len >= f + STAMP_DIGITS && f + STAMP_DIGITS <= sizeof(p->line) &&
		    memcmp(p->line + v, STAMP_FIELD, sizeof(STAMP_FIELD) - 1) == 0) {
			int64_t t = 0;
			for (size_t k = f; k < f + STAMP_DIGITS && t >= 0; k++)
				t = p->line[k] >= '0' && p->line[k] <= '9'
					    ? t * 10 + (p->line[k] - '0')
					    : -1;
			p->stamp = t > 0 ? t : 0;
		}
	}
	p->len = 0;
}

/* The de-chunked body, in whatever pieces it arrives. */
static void
body_sink(void *ctx, const char *d, size_t n)
{
	struct stream *s = ctx;
	struct sse_state *p = &s->sse;

	if (n > 0 && !s->have_first) {
		s->have_first = true;
		s->t_first = s->t_now;
	}
	for (size_t i = 0; i < n; i++) {
		char c = d[i];
		if (p->after_cr) {
			p->after_cr = false;
			if (c == '\n')
				continue;
		}
		if (c == '\r' || c == '\n') {
			p->after_cr = c == '\r';
			sse_line_end(s);
			continue;
		}
		if (p->len < sizeof(p->line))
			p->line[p->len] = c;
		if (p->len < SIZE_MAX)
			p->len++;
	}
}

static void
body_end(struct stream *s)
{
	if (s->done_seen && s->nev == (size_t)cli.events)
		stream_over(s, R_NONE, NULL);
	else
		stream_over(s, R_SHORT, s->done_seen ? "wrong event count" : "no [DONE]");
}

struct resp_info {
	bool ok, chunked, has_length;
	uint64_t length;
};

static void
resp_header(void *ctx, const char *name, size_t nlen, const char *val, size_t vlen)
{
	struct resp_info *ri = ctx;

	if (name_is(name, nlen, "Content-Length")) {
		if (!parse_length(val, vlen, &ri->length))
			ri->ok = false;
		ri->has_length = true;
	} else if (name_is(name, nlen, "Transfer-Encoding")) {
		if (has_token(val, vlen, "chunked"))
			ri->chunked = true;
	}
}

/* Takes the head from buf; returns the bytes of buf it used, or -1 once the
 * stream is over (failed) or -2 while the head is incomplete. */
static ptrdiff_t
stream_head(struct stream *s, const char *buf, size_t n)
{
	size_t old = s->head_len;
	size_t take = CLI_HEAD_MAX - old;

	if (take > n)
		take = n;
	memcpy(s->head + old, buf, take);
	s->head_len += take;
	size_t end = head_end(s->head, s->head_len, old > 3 ? old - 3 : 0);
	if (end == 0) {
		if (s->head_len == CLI_HEAD_MAX) {
			stream_over(s, R_PROTOCOL, "response head too long");
			return -1;
		}
		return -2;
	}
	if (s->head_len < 12 || memcmp(s->head, "HTTP/1.", 7) != 0 || s->head[8] != ' ') {
		stream_over(s, R_PROTOCOL, "no HTTP/1.x status line");
		return -1;
	}
	int status = 0;
	for (int i = 9; i < 12; i++) {
		if (s->head[i] < '0' || s->head[i] > '9') {
			stream_over(s, R_PROTOCOL, "bad status code");
			return -1;
		}
		status = status * 10 + (s->head[i] - '0');
	}
	if (status >= 100 && status < 600)
		cli.status_count[status]++;
	size_t used = end - old;
	if (status >= 100 && status < 200) {
		/* An interim answer (100 Continue): the real head follows. */
		s->head_len = 0;
		return (ptrdiff_t)used;
	}
	if (status != 200) {
		char detail[160];
		const char *eol = memchr(s->head, '\n', s->head_len);
		int len = (int)(eol - s->head);
		if (len > 0 && s->head[len - 1] == '\r')
			len--;
		if (len > 120)
			len = 120;
		int r = snprintf(detail, sizeof(detail), "%.*s", len, s->head);
		stream_over(s, R_STATUS, r > 0 ? detail : NULL);
		return -1;
	}
	struct resp_info ri = {.ok = true};
	each_header(s->head, end, resp_header, &ri);
	if (!ri.ok) {
		stream_over(s, R_PROTOCOL, "bad Content-Length");
		return -1;
	}
	s->framing = ri.chunked ? F_CHUNKED : ri.has_length ? F_LENGTH : F_CLOSE;
	s->body_left = ri.length;
	free(s->head);
	s->head = NULL;
	s->phase = S_BODY;
	if (s->framing == F_LENGTH && s->body_left == 0)
		body_end(s);
	return (ptrdiff_t)used;
}

static void
stream_input(struct stream *s, const char *buf, size_t n)
{
	size_t off = 0;

	while (s->phase == S_HEAD && off < n) {
		ptrdiff_t r = stream_head(s, buf + off, n - off);
		if (r < 0)
			return;
		off += (size_t)r;
	}
	if (s->phase != S_BODY || off == n)
		return;
	const char *p = buf + off;
	size_t left = n - off;
	switch (s->framing) {
	case F_CHUNKED: {
		ptrdiff_t r = chunked_feed(&s->ch, p, left, body_sink, s);
		if (r < 0)
			stream_over(s, R_PROTOCOL, "bad chunked framing");
		else if (s->ch.st == CH_DONE)
			body_end(s);
		break;
	}
	case F_LENGTH:
		if (left > s->body_left)
			left = (size_t)s->body_left;
		body_sink(s, p, left);
		s->body_left -= left;
		if (s->body_left == 0)
			body_end(s);
		break;
	case F_CLOSE:
		body_sink(s, p, left);
		break;
	}
}

static void
stream_eof(struct stream *s, const char *why)
{
	if (s->phase == S_BODY && s->framing == F_CLOSE && why == NULL) {
		/* The close is this body's end; an event the blank line never
		 * came for is not one (SSE drops it too). */
		body_end(s);
	} else if (s->phase == S_BODY) {
		stream_over(s, R_SHORT, why ? why : "connection closed mid-body");
	} else {
		stream_over(s, R_CLOSED, why);
	}
}

/* When the bytes of the last recvmsg reached the socket, on CLOCK_MONOTONIC.
 * The kernel's receive stamp (SO_TIMESTAMPNS: for TCP, that of the last
 * segment read) does not count the time this one thread spent on other
 * streams first: while it sends a thousand requests, first events wait for
 * it, and timing them by the read would make every later event look early.
 * The stamp is on CLOCK_REALTIME; the offset between the clocks is read
 * right now, so a clock step or slew before this moment does not matter. */
static int64_t
arrival_ns(struct msghdr *mh)
{
	struct timespec rt;
	int64_t mono = now_ns();

	if (cli.user_time || (mh->msg_flags & MSG_CTRUNC))
		return mono;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm)) {
		struct timespec ts;
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS ||
		    cm->cmsg_len < CMSG_LEN(sizeof(ts)))
			continue;
		memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
		if (ts.tv_sec == 0 || clock_gettime(CLOCK_REALTIME, &rt) != 0)
			return mono;
		int64_t age =
			((int64_t)rt.tv_sec - ts.tv_sec) * NS_PER_S + (rt.tv_nsec - ts.tv_nsec);
		if (age < 0)
			age = 0;
		cli.kernel_stamps++;
		return mono - age;
	}
	return mono;
}

static void
stream_readable(struct stream *s)
{
	static char buf[65536];
	union {
		char b[CMSG_SPACE(sizeof(struct timespec)) * 2];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b)};
	ssize_t r = recvmsg(s->fd, &mh, 0);

	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		s->t_now = now_ns();
		stream_eof(s, strerror(errno));
		return;
	}
	s->t_now = arrival_ns(&mh);
	if (r == 0) {
		stream_eof(s, NULL);
		return;
	}
	cli.reads++;
	stream_input(s, buf, (size_t)r);
}

static void
stream_writable(struct stream *s)
{
	if (s->phase == S_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
			err = errno;
		if (err != 0) {
			stream_over(s, R_CONNECT, strerror(err));
			return;
		}
		s->phase = S_SENDING;
	}
	while (s->sent < cli.req_len) {
		ssize_t w = send(s->fd, cli.req + s->sent, cli.req_len - s->sent, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				stream_over(s, R_CONNECT, strerror(errno));
			return;
		}
		s->sent += (size_t)w;
	}
	s->t_send = now_ns();
	s->phase = S_HEAD;
	cli.started++;
	s->head = malloc(CLI_HEAD_MAX);
	if (s->head == NULL) {
		msg("out of memory");
		exit(1);
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
	if (epoll_ctl(cli.ep, EPOLL_CTL_MOD, s->fd, &ev) != 0)
		stream_over(s, R_CONNECT, strerror(errno));
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

struct dist {
	int64_t *v;
	size_t n, cap;
};

static void
dist_add(struct dist *d, int64_t x)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 1024;
		int64_t *v = realloc(d->v, cap * sizeof(*v));
		if (v == NULL) {
			msg("out of memory");
			exit(1);
		}
		d->v = v;
		d->cap = cap;
	}
	d->v[d->n++] = x;
}

/* Nearest rank: the smallest value with at least p% of them at or below. */
static double
dist_pct_ms(const struct dist *d, double p)
{
	size_t k = (size_t)(p / 100.0 * (double)d->n + 0.999999);

	if (k == 0)
		k = 1;
	if (k > d->n)
		k = d->n;
	return (double)d->v[k - 1] / 1e6;
}

struct pct {
	double p;
	const char *name;
};

static void
print_ms(const char *label, const struct dist *d, bool json, const struct pct *pcts, size_t np,
	 bool last)
{
	if (json) {
		(void)printf("\"%s\":{\"n\":%zu", label, d->n);
		for (size_t i = 0; i < np; i++) {
			if (d->n == 0)
				(void)printf(",\"%s\":null", pcts[i].name);
			else
				(void)printf(",\"%s\":%.3f", pcts[i].name,
					     dist_pct_ms(d, pcts[i].p));
		}
		(void)printf("}%s", last ? "" : ",");
		return;
	}
	(void)printf("  %-20s", label);
	if (d->n == 0) {
		(void)printf("no samples\n");
		return;
	}
	for (size_t i = 0; i < np; i++)
		(void)printf(" %s %8.3f", pcts[i].name, dist_pct_ms(d, pcts[i].p));
	(void)printf("   (n=%zu)\n", d->n);
}

static void
cli_report(bool json, int64_t wall_ns, const char *url)
{
	struct dist ttfb = {0}, delay = {0}, gap = {0}, transit = {0}, lead = {0};
	static const struct pct p4[] = {{50, "p50"}, {90, "p90"}, {99, "p99"}, {100, "max"}};
	static const struct pct p3[] = {{50, "p50"}, {99, "p99"}, {100, "max"}};
	static const struct pct p2[] = {{50, "p50"}, {99, "p99"}};

	for (long i = 0; i < cli.streams; i++) {
		const struct stream *s = &cli.s[i];
		if (!s->completed)
			continue;
		dist_add(&ttfb, s->t_first - s->t_send);
		/* The first event's transit is part of the time to first byte (a
		 * gateway starting hundreds of streams at once delays it); the
		 * others' is what passing a stream through adds to each event. */
		for (size_t k = 0; k < s->nev; k++)
			if (s->tr[k] >= 0)
				dist_add(k == 0 ? &lead : &transit, s->tr[k]);
		for (size_t k = 1; k < s->nev; k++) {
			dist_add(&delay, s->ev[k] - (s->t_first + (int64_t)k * cli.interval_ns));
			dist_add(&gap, s->ev[k] - s->ev[k - 1]);
		}
	}
	/* qsort wants a valid pointer even for nothing to sort. */
	if (ttfb.n > 1)
		qsort(ttfb.v, ttfb.n, sizeof(int64_t), cmp_i64);
	if (delay.n > 1)
		qsort(delay.v, delay.n, sizeof(int64_t), cmp_i64);
	if (gap.n > 1)
		qsort(gap.v, gap.n, sizeof(int64_t), cmp_i64);
	if (transit.n > 1)
		qsort(transit.v, transit.n, sizeof(int64_t), cmp_i64);
	if (lead.n > 1)
		qsort(lead.v, lead.n, sizeof(int64_t), cmp_i64);
	/* Which events are late: the first ones (streams starting while others
	 * start) or all of them. */
	for (long k = 0; cli.by_event && k < cli.events; k++) {
		struct dist one = {0};
		for (long i = 0; i < cli.streams; i++)
			if (cli.s[i].completed && (size_t)k < cli.s[i].nev && cli.s[i].tr[k] >= 0)
				dist_add(&one, cli.s[i].tr[k]);
		if (one.n > 1)
			qsort(one.v, one.n, sizeof(int64_t), cmp_i64);
		if (one.n > 0)
			msg("event %ld transit ms: p50 %.3f p99 %.3f max %.3f", k,
			    dist_pct_ms(&one, 50), dist_pct_ms(&one, 99), dist_pct_ms(&one, 100));
		free(one.v);
	}

	long failed = cli.streams - cli.completed;
	/* "mixed" would mean some reads came without a kernel stamp: the figures
	 * then partly include this client's own delays. */
	const char *clock_name = cli.kernel_stamps == 0           ? "read"
				 : cli.kernel_stamps == cli.reads ? "kernel"
								  : "mixed";
	if (json) {
		/* url is the user's own text; keep the output valid JSON anyway. */
		(void)printf("{\"url\":\"");
		for (const char *c = url; *c; c++) {
			if (*c == '"' || *c == '\\')
				(void)printf("\\%c", *c);
			else if ((unsigned char)*c >= 0x20)
				(void)putchar(*c);
		}
		(void)printf("\",\"streams\":%ld,\"events\":%ld,\"interval_ms\":%.3f,"
			     "\"started\":%ld,\"completed\":%ld,\"failed\":%ld,\"fail\":{",
			     cli.streams, cli.events, (double)cli.interval_ns / 1e6, cli.started,
			     cli.completed, failed);
		for (int r = R_CONNECT; r < R_COUNT; r++)
			(void)printf("%s\"%s\":%ld", r == R_CONNECT ? "" : ",", reason_name[r],
				     cli.fails[r]);
		(void)printf("},\"status\":{");
		bool first = true;
		for (int c = 100; c < 600; c++) {
			if (cli.status_count[c] == 0)
				continue;
			(void)printf("%s\"%d\":%ld", first ? "" : ",", c, cli.status_count[c]);
			first = false;
		}
		(void)printf("},");
		print_ms("ttfb_ms", &ttfb, true, p4, 4, false);
		print_ms("event_delay_ms", &delay, true, p3, 3, false);
		print_ms("event_gap_ms", &gap, true, p2, 2, false);
		print_ms("event_transit_ms", &transit, true, p3, 3, false);
		print_ms("first_event_transit_ms", &lead, true, p3, 3, false);
		(void)printf("\"arrival_clock\":\"%s\",\"wall_s\":%.3f}\n", clock_name,
			     (double)wall_ns / 1e9);
	} else {
		(void)printf("streams: %ld requested, %ld started (request sent), %ld completed, "
			     "%ld failed\n",
			     cli.streams, cli.started, cli.completed, failed);
		if (failed > 0) {
			(void)printf("failed:");
			for (int r = R_CONNECT; r < R_COUNT; r++)
				if (cli.fails[r] > 0)
					(void)printf(" %s %ld", reason_name[r], cli.fails[r]);
			(void)printf("\n");
			bool any = false;
			for (int c = 100; c < 600; c++) {
				if (cli.status_count[c] == 0)
					continue;
				(void)printf("%s %d x%ld", any ? "" : "status codes:", c,
					     cli.status_count[c]);
				any = true;
			}
			if (any)
				(void)printf("\n");
		}
		(void)printf("over completed streams, in ms (events %ld, interval %.3f ms):\n",
			     cli.events, (double)cli.interval_ns / 1e6);
		print_ms("time to first byte", &ttfb, false, p4, 4, true);
		print_ms("event delay", &delay, false, p3, 3, true);
		print_ms("inter-event gap", &gap, false, p2, 2, true);
		print_ms("event transit", &transit, false, p3, 3, true);
		print_ms("first event transit", &lead, false, p3, 3, true);
		(void)printf("wall time: %.3f s; arrivals timed by %s\n", (double)wall_ns / 1e9,
			     clock_name);
	}
	free(ttfb.v);
	free(delay.v);
	free(gap.v);
	free(transit.v);
	free(lead.v);
}

/* http://HOST[:PORT][/PATH] into its parts; host may be [v6]. */
static bool
parse_url(const char *url, char *host, size_t hcap, char *port, size_t pcap, const char **path)
{
	const char *p, *h, *he, *slash;

	if (strncmp(url, "http://", 7) != 0)
		return false;
	h = url + 7;
	slash = strchr(h, '/');
	*path = slash != NULL ? slash : "/";
	he = slash != NULL ? slash : h + strlen(h);
	if (*h == '[') {
		const char *rb = memchr(h, ']', (size_t)(he - h));
		if (rb == NULL)
			return false;
		p = rb + 1 < he && rb[1] == ':' ? rb + 1 : NULL;
		if ((size_t)(rb - h - 1) >= hcap)
			return false;
		memcpy(host, h + 1, (size_t)(rb - h - 1));
		host[rb - h - 1] = '\0';
	} else {
		p = memchr(h, ':', (size_t)(he - h));
		const char *e = p != NULL ? p : he;
		if (e == h || (size_t)(e - h) >= hcap)
			return false;
		memcpy(host, h, (size_t)(e - h));
		host[e - h] = '\0';
	}
	if (p != NULL) {
		size_t pl = (size_t)(he - p - 1);
		if (pl == 0 || pl >= pcap)
			return false;
		memcpy(port, p + 1, pl);
		port[pl] = '\0';
	} else {
		if (pcap < 3)
			return false;
		memcpy(port, "80", 3);
	}
	return true;
}

static bool
build_request(const char *path, const char *hostport, const char *const *headers, int nh,
	      const char *body)
{
	size_t blen = strlen(body);
	size_t cap = strlen(path) + strlen(hostport) + blen + 256;

	for (int i = 0; i < nh; i++)
		cap += strlen(headers[i]) + 2;
	cli.req = malloc(cap);
	if (cli.req == NULL)
		return false;
	int n = snprintf(cli.req, cap,
			 "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n",
			 path, hostport, blen);
	if (n < 0 || (size_t)n >= cap)
		return false;
	size_t len = (size_t)n;
	for (int i = 0; i < nh; i++) {
		n = snprintf(cli.req + len, cap - len, "%s\r\n", headers[i]);
		if (n < 0 || (size_t)n >= cap - len)
			return false;
		len += (size_t)n;
	}
	n = snprintf(cli.req + len, cap - len, "\r\n%s", body);
	if (n < 0 || (size_t)n >= cap - len)
		return false;
	cli.req_len = len + (size_t)n;
	return true;
}

/* Linux turns receive stamps on for the whole system through a deferred
 * work item when the first socket asks for them, and off again when the
 * last one closes; segments that arrive in between carry none. This holds a
 * stamping loopback connection open for the whole run and waits until a byte
 * sent over it comes back stamped, so the first events of the streams are
 * stamped too. Returns the fds to close at the end (-1 when it gave up). */
static bool
stamp_warmup(int fds[3])
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	int one = 1;

	fds[0] = fds[1] = fds[2] = -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0 || fds[1] < 0 || bind(fds[0], (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(fds[0], 1) != 0 || getsockname(fds[0], (struct sockaddr *)&sa, &sl) != 0 ||
	    setsockopt(fds[1], SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) != 0 ||
	    connect(fds[1], (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    (fds[2] = accept4(fds[0], NULL, NULL, SOCK_CLOEXEC)) < 0)
		return false;
	/* Sleeping between tries lets the kernel worker run even when this
	 * process has a real-time priority. */
	for (int tries = 0; tries < 1000; tries++) {
		char b = 'x';
		union {
			char b[CMSG_SPACE(sizeof(struct timespec)) * 2];
			struct cmsghdr align;
		} ctl;
		struct iovec iov = {.iov_base = &b, .iov_len = 1};
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = ctl.b,
				    .msg_controllen = sizeof(ctl.b)};
		struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
		if (send(fds[2], &b, 1, MSG_NOSIGNAL) != 1 || recvmsg(fds[1], &mh, 0) != 1)
			return false;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS)
				return true;
		if (nanosleep(&pause, NULL) != 0 && errno != EINTR)
			return false;
	}
	return false;
}

static int
cli_main(int argc, char **argv)
{
	const char *url = NULL, *body = DEFAULT_BODY;
	const char *headers[CLI_MAX_HEADERS];
	int nh = 0;
	long streams = -1, events = 20, interval = 50, timeout_s = 30;
	bool json = false;

	for (int i = 2; i < argc;) {
		const char *o = argv[i];
		if (strcmp(o, "--json") == 0 || strcmp(o, "--user-time") == 0 ||
		    strcmp(o, "--by-event") == 0) {
			if (o[2] == 'j')
				json = true;
			else if (o[2] == 'u')
				cli.user_time = true;
			else
				cli.by_event = true;
			i++;
			continue;
		}
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok = true;
		if (v == NULL)
			ok = false;
		else if (strcmp(o, "--url") == 0)
			url = v;
		else if (strcmp(o, "--streams") == 0)
			ok = parse_long(v, 1, 1000000, &streams);
		else if (strcmp(o, "--header") == 0) {
			/* A CR or LF would smuggle another header or a second request. */
			ok = nh < CLI_MAX_HEADERS && strchr(v, ':') != NULL &&
			     strpbrk(v, "\r\n") == NULL;
			if (ok)
				headers[nh++] = v;
		} else if (strcmp(o, "--body") == 0)
			body = v;
		else if (strcmp(o, "--events") == 0)
			ok = parse_long(v, 1, 1000000, &events);
		else if (strcmp(o, "--interval-ms") == 0)
			ok = parse_long(v, 0, 3600000, &interval);
		else if (strcmp(o, "--timeout-s") == 0)
			ok = parse_long(v, 1, 86400, &timeout_s);
		else
			ok = false;
		if (!ok) {
			msg("bad option or value: %s %s", o, v ? v : "");
			usage();
			return 2;
		}
		i += 2;
	}
	char host[256], port[16], hostport[300];
	const char *path;
	if (url == NULL || streams < 0) {
		usage();
		return 2;
	}
	if (!parse_url(url, host, sizeof(host), port, sizeof(port), &path)) {
		msg("--url: want http://HOST[:PORT][/PATH]: %s", url);
		return 2;
	}
	const char *hs = url + 7;
	const char *hslash = strchr(hs, '/');
	int hpl = (int)(hslash != NULL ? (size_t)(hslash - hs) : strlen(hs));
	int hn = snprintf(hostport, sizeof(hostport), "%.*s", hpl, hs);
	if (hn < 0 || (size_t)hn >= sizeof(hostport) ||
	    !build_request(path, hostport, headers, nh, body)) {
		msg("request too long or out of memory");
		return 2;
	}

	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0) {
		msg("%s: %s", host, gai_strerror(gai));
		return 2;
	}
	/* "localhost" often lists ::1 first while the mock listens on 127.0.0.1. */
	for (ai = res; ai != NULL && ai->ai_family != AF_INET; ai = ai->ai_next)
		;
	if (ai == NULL)
		ai = res;

	long lim = raise_nofile();
	if (lim >= 0 && streams + 16 > lim)
		msg("open-file limit %ld is below %ld streams: expect connect errors", lim,
		    streams);

	cli.streams = streams;
	cli.events = events;
	cli.interval_ns = interval * NS_PER_MS;
	cli.s = calloc((size_t)streams, sizeof(*cli.s));
	cli.ep = epoll_create1(EPOLL_CLOEXEC);
	if (cli.s == NULL || cli.ep < 0) {
		msg("setup: %s", strerror(errno));
		return 2;
	}

	int warm[3] = {-1, -1, -1};
	if (!cli.user_time && !stamp_warmup(warm))
		msg("no kernel receive stamps (%s): timing arrivals when read", strerror(errno));

	int64_t t_start = now_ns();
	int64_t deadline = t_start + timeout_s * NS_PER_S;
	cli.active = streams;
	/* Every connect goes out before any answer is read, so the streams
	 * really run at once. */
	for (long i = 0; i < streams; i++) {
		struct stream *s = &cli.s[i];
		int one = 1;
		s->phase = S_CONNECTING;
		s->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (s->fd < 0) {
			stream_over(s, R_CONNECT, strerror(errno));
			continue;
		}
		if (setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
			msg("TCP_NODELAY: %s", strerror(errno));
		if (!cli.user_time &&
		    setsockopt(s->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) != 0)
			msg("SO_TIMESTAMPNS: %s", strerror(errno));
		if (connect(s->fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
			stream_over(s, R_CONNECT, strerror(errno));
			continue;
		}
		struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
		if (epoll_ctl(cli.ep, EPOLL_CTL_ADD, s->fd, &ev) != 0)
			stream_over(s, R_CONNECT, strerror(errno));
	}
	freeaddrinfo(res);

	struct epoll_event evs[EPOLL_BATCH];
	while (cli.active > 0) {
		int64_t left = deadline - now_ns();
		if (left <= 0)
			break;
		int n = epoll_wait(cli.ep, evs, EPOLL_BATCH,
				   (int)((left + NS_PER_MS - 1) / NS_PER_MS));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			msg("epoll_wait: %s", strerror(errno));
			return 2;
		}
		for (int i = 0; i < n; i++) {
			struct stream *s = evs[i].data.ptr;
			if (s->phase == S_OVER)
				continue;
			if (s->phase == S_CONNECTING || s->phase == S_SENDING)
				stream_writable(s);
			else
				stream_readable(s);
		}
	}
	for (long i = 0; i < streams; i++)
		if (cli.s[i].phase != S_OVER)
			stream_over(&cli.s[i], R_TIMEOUT, NULL);
	int64_t wall = now_ns() - t_start;

	for (int k = 0; k < 3; k++)
		if (warm[k] >= 0 && close(warm[k]) != 0)
			msg("close: %s", strerror(errno));

	cli_report(json, wall, url);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		msg("stdout: %s", strerror(errno));
		return 2;
	}
	for (long i = 0; i < streams; i++) {
		free(cli.s[i].ev);
		free(cli.s[i].tr);
	}
	free(cli.s);
	free(cli.req);
	return cli.completed == streams ? 0 : 1;
}

int
main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "serve") == 0)
		return srv_main(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "drive") == 0)
		return cli_main(argc, argv);
	usage();
	return 2;
}

/* The Redis store: the state of every endpoint in one Redis server, shared
 * by every responder process of every host that uses it (several web
 * servers behind a load balancer, one set of limits).
 *
 * Redis only keeps the states; the rules are limit.h's, applied here, in C,
 * as the GDBM store applies them. Each endpoint's state is one string: a
 * version (8 bytes) and the endpoint's entry as store_codec.h encodes it. A
 * step reads the states it needs (one call), applies the rules, and writes
 * back the states it changed with a compare-and-set: the write happens only
 * when each state still has the version that was read, else the answer is
 * the states now, and the rules are applied again to those. Two writers
 * thus never both write over one version: a limit is never passed, across
 * any number of hosts, and a state is always written whole (one SET).
 *
 * The threads of a process make their steps in batches (store_redis_step):
 * a thread queues its step, and the first that finds no batch running
 * makes every queued step at once, in order, with one read and one
 * compare-and-set. Only the processes race each other's writes, and each
 * race a process wins serves all its waiting requests.
 *
 * A reservation reads every candidate and Redis's own time, lets pick
 * choose among those with room, counts on the chosen one and writes it
 * back, and the write carries a deadline in Redis's time (the read's,
 * plus the time the responder took until it sent the write, plus the
 * timeout): a write that reaches a Redis stalled for longer (the responder
 * answered 503 meanwhile) is refused, so it cannot use up a limit for
 * nothing. A responder that was itself slow between the read and the write
 * (a loaded host) is not refused for it. Only the changed states' versions are checked: a change to
 * another candidate in between changes no count (the pick saw a state it
 * had).
 *
 * The script (store_redis_script) holds no rule: it reads keys with the
 * time, or sets keys if their versions are unchanged and the deadline not
 * passed. It is loaded once, on a handle's first connection (SCRIPT LOAD),
 * and run by its SHA1 (EVALSHA); a Redis restarted since has forgotten it
 * and answers NOSCRIPT, and then it is sent whole (EVAL, which also caches
 * it again).
 *
 * Keys, below the configured prefix P: P "ep:" ID (an endpoint's state),
 * P "ids" (a set of every ID, for a reset of all), P "gw" (the gateway's
 * refusal counts, "rej" N, by HINCRBY), P "meta" (the layout's version,
 * "format": 2), P "usage:" CLIENT (a client's usage book, usage_book.h,
 * after a version as a state's: written in the compare-and-set of the
 * outcome it counts) and P "clients" (a set of every CLIENT with a book). The previous release kept
 * layout 1 (hashes of counters kept by a script): a handle's first use converts it in place, every
 * count kept (store_redis_upgrade). The store needs one Redis, not a
 * Cluster.
 *
 * Each handle (one per worker thread) holds one connection, made on its
 * first call and again after any failure; every connect and command waits
 * at most the configured timeout, so a Redis that is down or stalled costs
 * an answer 503 within it, never an unchecked request. */
#include "store_redis.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sys/time.h>
#include <time.h>
#endif

#include "clock.h"
#include "compat.h"
#include "dynbuf.h"
#include "limit.h"
#include "log.h"
#include "redis_addr.h"
#include "store_codec.h"
#include "usage_book.h"

#ifndef HAVE_HIREDIS

struct store *
store_redis_open(const char *address, const struct store_options *o, char *err, size_t errlen)
{
	(void)o;
	/* Fails: it says why (the address, or the missing Redis support). */
	redis_addr_check(address, err, errlen);
	return NULL;
}

#else

/* Reads keys with Redis's time, or sets keys when each one's version is
 * still the one read. ARGV[1] the operation:
 * "get": KEYS the keys; answers {time, value of each ("" when none)}.
 * "cas": KEYS the keys, ARGV[2] a deadline in Redis's time (ms; 0 none),
 * then for each key the version it must still start with ("" when it must
 * not exist) and its new value. Answers {1} all written, {0, time, value
 * now of each} when a version differs (none written), {-1} when the
 * deadline passed. */
static const char store_redis_script[] =
	/* Redis 3.2 to 4 replicate a script whole unless told; it calls TIME. */
	"if redis.replicate_commands then redis.replicate_commands() end\n"
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"if ARGV[1] == 'get' then\n"
	"  local out = {now}\n"
	"  for i = 1, #KEYS do out[i + 1] = redis.call('GET', KEYS[i]) or '' end\n"
	"  return out\n"
	"elseif ARGV[1] == 'cas' then\n"
	"  local deadline = tonumber(ARGV[2])\n"
	"  if deadline > 0 and now > deadline then return {-1} end\n"
	"  local out, same = {0, now}, true\n"
	"  for i = 1, #KEYS do\n"
	"    out[i + 2] = redis.call('GET', KEYS[i]) or ''\n"
	"    if string.sub(out[i + 2], 1, 8) ~= ARGV[2 * i + 1] then same = false end\n"
	"  end\n"
	"  if not same then return out end\n"
	"  for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[2 * i + 2]) end\n"
	"  return {1}\n"
	"end\n"
	"return redis.error_reply('unknown operation')\n";

/* Converts the keys of layout 1 (the previous release's: P "ep:" ID a hash
 * of counters, P "ring:" ID a list of attempt times, P "bk:" ID a hash of
 * buckets "second:count") to layout 2. It holds no rule: it only hands the
 * old keys out and, later, swaps in the values the responder built from
 * them, in C, with store_codec.h. ARGV[1] the prefix, ARGV[2] the
 * operation. Both first read layout 1 whole, ids sorted, fields sorted, and
 * take the SHA1 of that reading:
 * "dump": answers {"2"} when the keys are of layout 2 already, else {"1",
 * the SHA1, then per endpoint {id, its hash, its ring, its buckets}}.
 * "commit": ARGV[3] the SHA1 of the dump, then an id and its new value for
 * each endpoint of it. Answers {"2"} when another process converted first,
 * {"0"} when layout 1 changed since the dump (nothing written), {"1"} once
 * it wrote every value, deleted the old keys and set P "meta" "format" to
 * 2, all in this one run: Redis runs a script whole, and an append-only
 * file or a replica gets its writes as one MULTI/EXEC, so a Redis killed
 * meanwhile comes back with layout 1 or with layout 2, never a mix. */
static const char store_redis_upgrade_script[] =
	"if redis.replicate_commands then redis.replicate_commands() end\n"
	"local P, op = ARGV[1], ARGV[2]\n"
	"local f = redis.call('HGET', P .. 'meta', 'format')\n"
	"if f == '2' then return {'2'} end\n"
	"if f and f ~= '1' then\n"
	"  return redis.error_reply('keys of another layout (' .. f .. ') under this prefix: '\n"
	"    .. 'delete them, or choose another server.storePrefix')\n"
	"end\n"
	"local function sorted(flat)\n"
	"  local ps, out = {}, {}\n"
	"  for i = 1, #flat, 2 do ps[#ps + 1] = {flat[i], flat[i + 1]} end\n"
	"  table.sort(ps, function(a, b) return a[1] < b[1] end)\n"
	"  for _, p in ipairs(ps) do out[#out + 1] = p[1]; out[#out + 1] = p[2] end\n"
	"  return out\n"
	"end\n"
	"local ids = redis.call('SMEMBERS', P .. 'ids')\n"
	"table.sort(ids)\n"
	"local eps, text = {}, {}\n"
	"local function put(list)\n"
	"  text[#text + 1] = #list .. ';'\n"
	"  for _, s in ipairs(list) do text[#text + 1] = #s .. ':' .. s end\n"
	"end\n"
	"for _, id in ipairs(ids) do\n"
	"  if redis.call('TYPE', P .. 'ep:' .. id).ok == 'hash' then\n"
	"    local e = {id, sorted(redis.call('HGETALL', P .. 'ep:' .. id)),\n"
	"               redis.call('LRANGE', P .. 'ring:' .. id, 0, -1),\n"
	"               sorted(redis.call('HGETALL', P .. 'bk:' .. id))}\n"
	"    eps[#eps + 1] = e\n"
	"    put({id}); put(e[2]); put(e[3]); put(e[4])\n"
	"  end\n"
	"end\n"
	"local sum = redis.sha1hex(table.concat(text))\n"
	"if op == 'dump' then\n"
	"  local out = {'1', sum}\n"
	"  for i, e in ipairs(eps) do out[i + 2] = e end\n"
	"  return out\n"
	"elseif op == 'commit' then\n"
	"  if ARGV[3] ~= sum or #ARGV ~= 3 + 2 * #eps then return {'0'} end\n"
	"  for i = 4, #ARGV, 2 do\n"
	"    local id = ARGV[i]\n"
	"    redis.call('DEL', P .. 'ring:' .. id, P .. 'bk:' .. id)\n"
	"    redis.call('SET', P .. 'ep:' .. id, ARGV[i + 1])\n"
	"  end\n"
	"  redis.call('HSET', P .. 'meta', 'format', '2')\n"
	"  return {'1'}\n"
	"end\n"
	"return redis.error_reply('unknown operation')\n";

/* The layout of the keys (P "meta" "format"). */
#define STORE_REDIS_FORMAT "2"
/* A state's version: the first bytes of its value. */
#define STORE_REDIS_VERSION_LEN 8
/* How long, and how many times, a step writes again while others keep
 * changing its state first: as long as a GDBM step waits for its lock.
 * Each command still waits at most the timeout; only answers count here. */
#define STORE_REDIS_CONTENTION_MS 3000
#define STORE_REDIS_TRIES 10000
/* Bounds of the handle's buffers: far above any use. */
#define STORE_REDIS_BUF_CAP ((size_t)256 << 20)

struct store_redis {
	struct store base; /* first: the handle store.c passes around */
	struct redis_addr a;
	char *prefix;
	long timeout_ms;
	bool readonly;
	redisContext *c; /* NULL until connected, and after a failure */
	char sha[41];    /* SHA1 of the script once loaded; "" before */
	bool ready;      /* the keys are of layout 2 (store_redis_upgrade) */
	/* One command: its words (struct store_redis_word), the text of
	 * those built here, and argv and lengths made of them to send. */
	struct dynbuf words, text, argv, lens;
	/* A batch's states (struct store_redis_slot), their rings
	 * (LIMIT_RING_MAX times each), which changed, the ids (struct
	 * store_endpoint) and each step's slots; one reservation's pointers to
	 * states and room. */
	struct dynbuf slots, rings, dirty, eps, idx, ptrs, room;
	struct dynbuf val; /* the value being written */
	/* The value this handle last wrote alone, and whose (a NUL-terminated
	 * id): a batch of that endpoint alone starts from it. */
	struct dynbuf last_val, last_id;
	/* A batch's usage books (struct store_redis_book), the book value
	 * being written; the book this handle last wrote alone, and whose: a
	 * batch that counts in it starts from it, as from last_val. */
	struct dynbuf books, bval, last_book, last_client;
};

/* A client's usage book in a batch, and the version it was read at. */
struct store_redis_book {
	const char *client;
	struct usage_book book;
	bool present; /* false: no key, an empty book */
	bool damaged; /* not a book: counted anew from empty */
	bool dirty;
	char head[STORE_REDIS_VERSION_LEN];
	size_t head_len; /* of the value read: less than a version when damaged */
};

static void
store_redis_set_err(struct store_redis *st, char *err, size_t errlen, const char *why)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s", st->a.label, why);
}

static void
store_redis_disconnect(struct store_redis *st)
{
	if (st->c != NULL)
		redisFree(st->c);
	st->c = NULL;
}

/* Notes why the connection failed and drops it. Returns true when it was a
 * timeout (the server may still run what was sent). */
static bool
store_redis_io_failed(struct store_redis *st, int saved_errno, char *err, size_t errlen)
{
	bool timeout = false;
	char why[200];

	if (st->c == NULL) {
		snprintf(why, sizeof(why), "out of memory");
	} else if (st->c->err == REDIS_ERR_IO &&
		   (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK)) {
		snprintf(why, sizeof(why), "no answer within %ld ms (server.storeTimeoutMs)",
			 st->timeout_ms);
		timeout = true;
	} else {
		snprintf(why, sizeof(why), "%s", st->c->err ? st->c->errstr : "no answer");
	}
	store_redis_set_err(st, err, errlen, why);
	store_redis_disconnect(st);
	return timeout;
}

/* Runs one command on the connection, which must be up; a reply that is an
 * error becomes err. Returns the reply, or NULL with err set (and the
 * connection dropped when it failed); *timeout tells a timeout. */
static redisReply *
store_redis_command(struct store_redis *st, int argc, const char **argv, const size_t *len,
		    bool *timeout, char *err, size_t errlen)
{
	redisReply *r;

	*timeout = false;
	errno = 0;
	r = redisCommandArgv(st->c, argc, argv, len);
	if (r == NULL) {
		*timeout = store_redis_io_failed(st, errno, err, errlen);
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		store_redis_set_err(st, err, errlen, r->str != NULL ? r->str : "error");
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* Connects when there is no connection: AUTH, SELECT, and SCRIPT LOAD the
 * first time. Returns 0, or -1 with err set and no connection. */
static int
store_redis_connect(struct store_redis *st, char *err, size_t errlen)
{
	struct timeval tv = {st->timeout_ms / 1000, (st->timeout_ms % 1000) * 1000};
	redisReply *r;
	bool timeout;

	if (st->c != NULL)
		return 0;
	errno = 0;
	st->c = st->a.sock[0] != '\0' ? redisConnectUnixWithTimeout(st->a.sock, tv)
				      : redisConnectWithTimeout(st->a.host, st->a.port, tv);
	if (st->c == NULL || st->c->err) {
		store_redis_io_failed(st, errno, err, errlen);
		return -1;
	}
	/* The connect timeout bounds the connect only: every command too. */
	if (redisSetTimeout(st->c, tv) != REDIS_OK) {
		store_redis_io_failed(st, errno, err, errlen);
		return -1;
	}
	if (st->a.pass[0] != '\0') {
		const char *argv[3] = {"AUTH", st->a.user, st->a.pass};
		size_t len[3] = {4, strlen(st->a.user), strlen(st->a.pass)};
		int argc = 3;
		if (st->a.user[0] == '\0') {
			argv[1] = st->a.pass;
			len[1] = len[2];
			argc = 2;
		}
		r = store_redis_command(st, argc, argv, len, &timeout, err, errlen);
		if (r == NULL)
			goto fail;
		freeReplyObject(r);
	}
	if (st->a.db != 0) {
		char db[24];
		int l = snprintf(db, sizeof(db), "%ld", st->a.db);
		const char *argv[2] = {"SELECT", db};
		size_t len[2] = {6, (size_t)l};
		r = store_redis_command(st, 2, argv, len, &timeout, err, errlen);
		if (r == NULL)
			goto fail;
		freeReplyObject(r);
	}
	if (st->sha[0] == '\0') {
		const char *argv[3] = {"SCRIPT", "LOAD", store_redis_script};
		size_t len[3] = {6, 4, sizeof(store_redis_script) - 1};
		r = store_redis_command(st, 3, argv, len, &timeout, err, errlen);
		if (r == NULL)
			goto fail;
		if (r->type != REDIS_REPLY_STRING || r->len != 40) {
			freeReplyObject(r);
			store_redis_set_err(st, err, errlen, "SCRIPT LOAD: unexpected answer");
			goto fail;
		}
		memcpy(st->sha, r->str, 40);
		st->sha[40] = '\0';
		freeReplyObject(r);
	}
	return 0;
fail:
	store_redis_disconnect(st);
	return -1;
}

/* An integer of a reply: an integer, or a string of one. */
static bool
store_redis_ll(const redisReply *r, long long *out)
{
	char *end;

	if (r == NULL)
		return false;
	if (r->type == REDIS_REPLY_INTEGER) {
		*out = r->integer;
		return true;
	}
	if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
		return false;
	errno = 0;
	*out = strtoll(r->str, &end, 10);
	return errno == 0 && end == r->str + r->len;
}

static bool
store_redis_writable(struct store_redis *st, char *err, size_t errlen)
{
	if (st->readonly)
		store_redis_set_err(st, err, errlen, "opened read-only");
	return !st->readonly;
}

/* One word of a command: p, or text at off when p is NULL (text may move
 * while the command is built). */
struct store_redis_word {
	const char *p;
	size_t off, len;
};

/* One endpoint's state in a step, and the version it was read at. */
struct store_redis_slot {
	struct limit_state s; /* its ring: the step's rings buffer */
	bool present;         /* false: no key, a zeroed state */
	bool damaged;         /* in a batch: the value is not a state of its id */
	char head[STORE_REDIS_VERSION_LEN];
};

/* Room for bytes in d, emptied first: an array for this step (its memory
 * kept for the next). NULL when out of memory. */
static void *
store_redis_array(struct dynbuf *d, size_t bytes)
{
	dynbuf_reset(d);
	if (dynbuf_reserve(d, bytes) != 0)
		return NULL;
	return dynbuf_end(d);
}

/* Starts a command; a script's leaves room for EVALSHA and its SHA1. */
static void
store_redis_begin(struct store_redis *st, bool script)
{
	dynbuf_reset(&st->words);
	dynbuf_reset(&st->text);
	if (script) {
		struct store_redis_word w = {"", 0, 0};
		dynbuf_add(&st->words, &w, sizeof(w));
		dynbuf_add(&st->words, &w, sizeof(w));
	}
}

static void
store_redis_word(struct store_redis *st, const char *p, size_t len)
{
	struct store_redis_word w = {p, 0, len};

	dynbuf_add(&st->words, &w, sizeof(w));
}

/* A word of the prefix, then a and b (either may be ""). */
static void
store_redis_word_key(struct store_redis *st, const char *a, const char *b)
{
	struct store_redis_word w = {NULL, dynbuf_len(&st->text), 0};

	dynbuf_adds(&st->text, st->prefix);
	dynbuf_adds(&st->text, a);
	dynbuf_adds(&st->text, b);
	dynbuf_add(&st->text, "", 1); /* apart from the next word */
	w.len = dynbuf_len(&st->text) - w.off - 1;
	dynbuf_add(&st->words, &w, sizeof(w));
}

static void
store_redis_word_int(struct store_redis *st, long long v)
{
	struct store_redis_word w = {NULL, dynbuf_len(&st->text), 0};

	dynbuf_printf(&st->text, "%lld", v);
	dynbuf_add(&st->text, "", 1);
	w.len = dynbuf_len(&st->text) - w.off - 1;
	dynbuf_add(&st->words, &w, sizeof(w));
}

/* Appends a word of the bytes p[0..len), copied. */
static void
store_redis_word_copy(struct store_redis *st, const void *p, size_t len)
{
	struct store_redis_word w = {NULL, dynbuf_len(&st->text), len};

	dynbuf_add(&st->text, p, len);
	dynbuf_add(&st->text, "", 1);
	dynbuf_add(&st->words, &w, sizeof(w));
}

/* Sends the command built (a script's by EVALSHA, or EVAL when the server
 * has forgotten it). A connection that was up before this call and fails
 * at once without a timeout (Redis restarted, or closed it while idle) is
 * made anew and the call sent once more. Returns the reply, or NULL with
 * err set (an error reply is one). */
static redisReply *
store_redis_run(struct store_redis *st, bool script, char *err, size_t errlen)
{
	size_t n = dynbuf_len(&st->words) / sizeof(struct store_redis_word);
	const char **argv = store_redis_array(&st->argv, n * sizeof(*argv));
	size_t *lens = store_redis_array(&st->lens, n * sizeof(*lens));

	if (dynbuf_failed(&st->words) || dynbuf_failed(&st->text) || argv == NULL || lens == NULL ||
	    n > 1000000) {
		store_redis_set_err(st, err, errlen, "out of memory");
		return NULL;
	}
	const struct store_redis_word *w = dynbuf_ptr(&st->words);
	const char *text = dynbuf_str(&st->text);
	for (size_t i = 0; i < n; i++) {
		argv[i] = w[i].p != NULL ? w[i].p : text + w[i].off;
		lens[i] = w[i].len;
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		bool reused = st->c != NULL, timeout;
		redisReply *r;

		if (store_redis_connect(st, err, errlen) != 0)
			return NULL;
		if (script) {
			argv[0] = "EVALSHA";
			lens[0] = 7;
			argv[1] = st->sha;
			lens[1] = 40;
		}
		errno = 0;
		r = redisCommandArgv(st->c, (int)n, argv, lens);
		if (r == NULL) {
			timeout = store_redis_io_failed(st, errno, err, errlen);
			if (reused && !timeout)
				continue;
			return NULL;
		}
		if (script && r->type == REDIS_REPLY_ERROR && r->str != NULL &&
		    strncmp(r->str, "NOSCRIPT", 8) == 0) {
			freeReplyObject(r);
			argv[0] = "EVAL";
			lens[0] = 4;
			argv[1] = store_redis_script;
			lens[1] = sizeof(store_redis_script) - 1;
			return store_redis_command(st, (int)n, argv, lens, &timeout, err, errlen);
		}
		if (r->type == REDIS_REPLY_ERROR) {
			store_redis_set_err(st, err, errlen, r->str != NULL ? r->str : "error");
			freeReplyObject(r);
			return NULL;
		}
		return r;
	}
	return NULL;
}

/* The moment of a step, in the local calendar (an endpoint's own zone is
 * applied per endpoint, by limit_now_in). */
static struct limit_now
store_redis_now(int64_t now_ms)
{
	struct limit_now now = {now_ms, tz_day(NULL, now_ms), tz_ms_to_midnight, NULL};
	return now;
}

/* Reads the value v[0..len) of endpoint id into sl, its ring into ring
 * (room for LIMIT_RING_MAX): "" is a state never written. Returns 0, or -1
 * with err set when it is not a state of id. */
static int
store_redis_load(struct store_redis *st, struct store_redis_slot *sl, uint32_t *ring,
		 const char *id, const char *v, size_t len, char *err, size_t errlen)
{
	sl->present = len > 0;
	if (len == 0) {
		memset(&sl->s, 0, sizeof(sl->s));
		sl->s.ring = ring;
		return 0;
	}
	if (len > STORE_REDIS_VERSION_LEN) {
		memcpy(sl->head, v, STORE_REDIS_VERSION_LEN);
		if (store_codec_ent_get(v + STORE_REDIS_VERSION_LEN, len - STORE_REDIS_VERSION_LEN,
					id, strlen(id), &sl->s, ring) == 0)
			return 0;
	}
	char why[160];
	snprintf(why, sizeof(why), "damaged state of endpoint %.80s", id);
	store_redis_set_err(st, err, errlen, why);
	return -1;
}

/* Loads a slot of a batch from v[0..len): a value that is not a state of
 * id marks it damaged (the steps that name it fail, the others go on). */
static void
store_redis_load_slot(struct store_redis *st, struct store_redis_slot *sl, uint32_t *ring,
		      const char *id, const char *v, size_t len)
{
	sl->damaged = store_redis_load(st, sl, ring, id, v, len, NULL, 0) != 0;
}

/* Loads a book of a batch from v[0..len): "" an empty one; a value that is
 * not a book of it is counted anew from empty (damaged). */
static void
store_redis_load_book(struct store_redis_book *b, const char *v, size_t len)
{
	b->present = len > 0;
	b->damaged = false;
	/* What the compare-and-set finds it still starting with. */
	b->head_len = len < STORE_REDIS_VERSION_LEN ? len : STORE_REDIS_VERSION_LEN;
	memset(b->head, 0, sizeof(b->head));
	if (b->head_len > 0)
		memcpy(b->head, v, b->head_len);
	if (len == 0) {
		usage_book_decode(&b->book, NULL, 0);
		return;
	}
	if (len >= STORE_REDIS_VERSION_LEN) {
		if (usage_book_decode(&b->book, v + STORE_REDIS_VERSION_LEN,
				      len - STORE_REDIS_VERSION_LEN) == 0)
			return;
	}
	b->damaged = true;
	usage_book_decode(&b->book, NULL, 0);
}

/* Reads the states of eps[0..n) (their ids only) and the books of
 * books[0..nb) (their clients only) with Redis's time, in one call. Returns the reply, {time,
 * value of each state, value of each book}, or NULL with err set. */
static redisReply *
store_redis_get(struct store_redis *st, const struct store_endpoint *eps, size_t n,
		const struct store_redis_book *books, size_t nb, char *err, size_t errlen)
{
	redisReply *r;

	store_redis_begin(st, true);
	store_redis_word_int(st, (long long)(n + nb));
	for (size_t i = 0; i < n; i++)
		store_redis_word_key(st, "ep:", eps[i].id);
	for (size_t i = 0; i < nb; i++)
		store_redis_word_key(st, "usage:", books[i].client);
	store_redis_word(st, "get", 3);
	r = store_redis_run(st, true, err, errlen);
	if (r == NULL)
		return NULL;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != n + nb + 1 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER)
		goto bad;
	for (size_t i = 1; i <= n + nb; i++)
		if (r->element[i]->type != REDIS_REPLY_STRING)
			goto bad;
	return r;
bad:
	freeReplyObject(r);
	store_redis_set_err(st, err, errlen, "unexpected answer to a read");
	return NULL;
}

/* Writes at once every state of a batch that changed (dirty[j]: sl[j] as
 * eps[j]'s, one version on), when each still has the version sl[j] was
 * read at and Redis's time is not past deadline (0: none). Returns 1
 * written; 0 when one had changed, and then sl holds the states of the
 * dirty ones now and *redis_now Redis's time; 2 when the deadline had
 * passed (nothing written); -1 with err set. */
static int
store_redis_commit(struct store_redis *st, const struct store_endpoint *eps, size_t nslots,
		   struct store_redis_slot *sl, uint32_t *rings, const bool *dirty,
		   struct store_redis_book *books, size_t nb, long long deadline,
		   long long *redis_now, char *err, size_t errlen)
{
	size_t ndirty = 0, nnew = 0, bdirty = 0, bnew = 0, at;
	redisReply *r;
	long long code;
	int rc = -1;

	for (size_t j = 0; j < nslots; j++) {
		ndirty += dirty[j];
		nnew += dirty[j] && !sl[j].present;
	}
	for (size_t j = 0; j < nb; j++) {
		bdirty += books[j].dirty;
		bnew += books[j].dirty && !books[j].present;
	}
	if (bnew > 0) {
		/* New books: in the set a read of every client's goes through. */
		store_redis_begin(st, false);
		store_redis_word(st, "SADD", 4);
		store_redis_word_key(st, "clients", "");
		for (size_t j = 0; j < nb; j++)
			if (books[j].dirty && !books[j].present)
				store_redis_word(st, books[j].client, strlen(books[j].client));
		r = store_redis_run(st, false, err, errlen);
		if (r == NULL)
			return -1;
		freeReplyObject(r);
	}
	if (nnew > 0) {
		/* New endpoints: in the set a reset of all goes through. */
		store_redis_begin(st, false);
		store_redis_word(st, "SADD", 4);
		store_redis_word_key(st, "ids", "");
		for (size_t j = 0; j < nslots; j++)
			if (dirty[j] && !sl[j].present)
				store_redis_word(st, eps[j].id, strlen(eps[j].id));
		r = store_redis_run(st, false, err, errlen);
		if (r == NULL)
			return -1;
		freeReplyObject(r);
	}
	store_redis_begin(st, true);
	store_redis_word_int(st, (long long)(ndirty + bdirty));
	for (size_t j = 0; j < nslots; j++)
		if (dirty[j])
			store_redis_word_key(st, "ep:", eps[j].id);
	for (size_t j = 0; j < nb; j++)
		if (books[j].dirty)
			store_redis_word_key(st, "usage:", books[j].client);
	store_redis_word(st, "cas", 3);
	store_redis_word_int(st, deadline);
	for (size_t j = 0; j < nslots; j++) {
		if (!dirty[j])
			continue;
		size_t id_len = strlen(eps[j].id);
		size_t n = STORE_REDIS_VERSION_LEN + store_codec_ent_size(&sl[j].s, id_len);
		uint64_t version = 0;
		char *p = store_redis_array(&st->val, n);
		if (p == NULL) {
			store_redis_set_err(st, err, errlen, "out of memory");
			return -1;
		}
		if (sl[j].present)
			memcpy(&version, sl[j].head, sizeof(version));
		version++;
		memcpy(p, &version, sizeof(version));
		store_codec_ent_put(p + STORE_REDIS_VERSION_LEN, eps[j].id, id_len, &sl[j].s);
		dynbuf_commit(&st->val, n);
		store_redis_word(st, sl[j].head, sl[j].present ? STORE_REDIS_VERSION_LEN : 0);
		store_redis_word_copy(st, p, n);
	}
	for (size_t j = 0; j < nb; j++) {
		if (!books[j].dirty)
			continue;
		size_t n = STORE_REDIS_VERSION_LEN + usage_book_size(&books[j].book);
		uint64_t version = 0;
		char *p = store_redis_array(&st->bval, n); /* val keeps the state's */
		if (p == NULL) {
			store_redis_set_err(st, err, errlen, "out of memory");
			return -1;
		}
		if (books[j].present)
			memcpy(&version, books[j].head, sizeof(version));
		version++;
		memcpy(p, &version, sizeof(version));
		usage_book_put(&books[j].book, p + STORE_REDIS_VERSION_LEN);
		dynbuf_commit(&st->bval, n);
		if (bdirty == 1) {
			/* The next batch counting in this book alone starts from it. */
			dynbuf_reset(&st->last_book);
			dynbuf_reset(&st->last_client);
			dynbuf_add(&st->last_book, p, n);
			dynbuf_adds(&st->last_client, books[j].client);
		}
		store_redis_word(st, books[j].head, books[j].head_len);
		store_redis_word_copy(st, p, n);
	}
	r = store_redis_run(st, true, err, errlen);
	if (r == NULL) {
		dynbuf_reset(&st->last_book);
		dynbuf_reset(&st->last_client);
		return -1;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    !store_redis_ll(r->element[0], &code))
		goto bad;
	if (code == 1) {
		/* One state written: the next batch of it alone (the record after
		 * a reservation, when nothing else waited) starts from it. */
		dynbuf_reset(&st->last_val);
		dynbuf_reset(&st->last_id);
		if (ndirty == 1) {
			for (size_t j = 0; j < nslots; j++) {
				if (dirty[j]) {
					dynbuf_add(&st->last_val, dynbuf_ptr(&st->val),
						   dynbuf_len(&st->val));
					dynbuf_adds(&st->last_id, eps[j].id);
				}
			}
		}
		rc = 1;
	} else if (code == 0) {
		if (r->elements != 2 + ndirty + bdirty || !store_redis_ll(r->element[1], redis_now))
			goto bad;
		at = 2;
		for (size_t j = 0; j < nslots; j++) {
			if (!dirty[j])
				continue;
			const redisReply *v = r->element[at++];
			if (v->type != REDIS_REPLY_STRING)
				goto bad;
			store_redis_load_slot(st, &sl[j], rings + j * LIMIT_RING_MAX, eps[j].id,
					      v->str, v->len);
		}
		for (size_t j = 0; j < nb; j++) {
			if (!books[j].dirty)
				continue;
			const redisReply *v = r->element[at++];
			if (v->type != REDIS_REPLY_STRING)
				goto bad;
			store_redis_load_book(&books[j], v->str, v->len);
		}
		rc = 0;
	} else {
		/* Redis stalled between the read and this write, for longer
		 * than the caller waits. */
		rc = 2;
	}
	if (rc != 1 && bdirty == 1) {
		dynbuf_reset(&st->last_book); /* not written */
		dynbuf_reset(&st->last_client);
	}
	freeReplyObject(r);
	return rc;
bad:
	freeReplyObject(r);
	dynbuf_reset(&st->last_book);
	dynbuf_reset(&st->last_client);
	store_redis_set_err(st, err, errlen, "unexpected answer to a write");
	return -1;
}

/* Whether a step that found its state changed tries+1 times may try again:
 * while the time since it started (start_ms) is within
 * STORE_REDIS_CONTENTION_MS. At once: the answer that said so holds the
 * state now, and waiting would only let it age (a writer that waits loses
 * again, and waits longer). */
static bool
store_redis_again(struct store_redis *st, int tries, int64_t start_ms, char *err, size_t errlen)
{
	if (tries < STORE_REDIS_TRIES && clock_mono_ms() - start_ms <= STORE_REDIS_CONTENTION_MS)
		return true;
	store_redis_set_err(st, err, errlen, "the state keeps changing");
	return false;
}

/* A counter of layout 1's hash of an endpoint, and its place in the state
 * (an int64_t). ring_cap, and "ans" N, "lat" N, "ttfb" N, are read apart. */
struct store_redis_v1_field {
	const char *name;
	size_t off;
};

#define STORE_REDIS_V1_AT(m) offsetof(struct limit_state, m)
static const struct store_redis_v1_field store_redis_v1_fields[] = {
	{"day", STORE_REDIS_V1_AT(day)},
	{"day_count", STORE_REDIS_V1_AT(day_count)},
	{"fail_run", STORE_REDIS_V1_AT(fail_run)},
	{"cooldown_until", STORE_REDIS_V1_AT(cooldown_until)},
	{"ring_base", STORE_REDIS_V1_AT(ring_base)},
	{"ring_since", STORE_REDIS_V1_AT(ring_since)},
	{"prompt", STORE_REDIS_V1_AT(prompt)},
	{"completion", STORE_REDIS_V1_AT(completion)},
	{"total", STORE_REDIS_V1_AT(total)},
	{"requests", STORE_REDIS_V1_AT(requests)},
	{"last_used", STORE_REDIS_V1_AT(last_used)},
	{"attempts", STORE_REDIS_V1_AT(attempts)},
	{"retries", STORE_REDIS_V1_AT(retries)},
	{"lat_count", STORE_REDIS_V1_AT(lat_count)},
	{"lat_sum", STORE_REDIS_V1_AT(lat_sum_ms)},
	{"ttfb_count", STORE_REDIS_V1_AT(ttfb_count)},
	{"ttfb_sum", STORE_REDIS_V1_AT(ttfb_sum_ms)},
	{"tok_day", STORE_REDIS_V1_AT(tok_day)},
	{"day_prompt", STORE_REDIS_V1_AT(day_prompt)},
	{"day_completion", STORE_REDIS_V1_AT(day_completion)},
	{"day_total", STORE_REDIS_V1_AT(day_total)},
};
#undef STORE_REDIS_V1_AT

/* A whole decimal number in s[0..len) within [min, max]. */
static bool
store_redis_v1_num(const char *s, size_t len, long long min, long long max, long long *out)
{
	char buf[24], *end;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	*out = strtoll(buf, &end, 10);
	return errno == 0 && end == buf + len && *out >= min && *out <= max;
}

/* A name of "prefix" N with N below n: the N, or -1. */
static long
store_redis_v1_index(const char *name, const char *prefix, size_t n)
{
	size_t pl = strlen(prefix);
	long long i;

	if (strncmp(name, prefix, pl) != 0 ||
	    !store_redis_v1_num(name + pl, strlen(name + pl), 0, (long long)n - 1, &i))
		return -1;
	return (long)i;
}

/* Sets the counter name of layout 1's hash to v in s; false when layout 1
 * has no such counter. */
static bool
store_redis_v1_set(struct limit_state *s, const char *name, long long v)
{
	long i;

	for (size_t k = 0; k < sizeof(store_redis_v1_fields) / sizeof(store_redis_v1_fields[0]);
	     k++) {
		if (strcmp(name, store_redis_v1_fields[k].name) == 0) {
			int64_t x = v;
			memcpy((char *)s + store_redis_v1_fields[k].off, &x, sizeof(x));
			return true;
		}
	}
	if ((i = store_redis_v1_index(name, "ans", STORE_CLASS_N)) >= 0)
		s->answers[i] = v;
	else if ((i = store_redis_v1_index(name, "lat", STORE_HIST_N)) >= 0)
		s->lat[i] = v;
	else if ((i = store_redis_v1_index(name, "ttfb", STORE_HIST_N)) >= 0)
		s->ttfb[i] = v;
	else
		return false;
	return true;
}

/* Builds into s (its ring: ring, room for LIMIT_RING_MAX) the state layout
 * 1 kept in e, the dump's {id, hash, ring, buckets} of one endpoint. The
 * ring keeps its newest ring_cap times (layout 1 cut it to that on its next
 * use), as offsets from ring_base. Returns false when e is not such an
 * entry, or holds a counter layout 1 never had (nothing is dropped). */
static bool
store_redis_v1_state(const redisReply *e, struct limit_state *s, uint32_t *ring)
{
	const redisReply *h, *rg, *bk;
	long long v, v2;

	memset(s, 0, sizeof(*s));
	s->ring = ring;
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 ||
	    e->element[0]->type != REDIS_REPLY_STRING)
		return false;
	h = e->element[1];
	rg = e->element[2];
	bk = e->element[3];
	if (h->type != REDIS_REPLY_ARRAY || h->elements % 2 != 0 || rg->type != REDIS_REPLY_ARRAY ||
	    bk->type != REDIS_REPLY_ARRAY || bk->elements % 2 != 0)
		return false;
	for (size_t i = 0; i < h->elements; i += 2) {
		const redisReply *name = h->element[i], *val = h->element[i + 1];
		if (name->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING ||
		    !store_redis_v1_num(val->str, val->len, INT64_MIN, INT64_MAX, &v))
			return false;
		if (strcmp(name->str, "ring_cap") == 0) {
			if (v < 0 || v > LIMIT_RING_MAX)
				return false;
			s->ring_cap = (uint32_t)v;
		} else if (!store_redis_v1_set(s, name->str, v)) {
			return false;
		}
	}
	size_t keep = rg->elements < s->ring_cap ? rg->elements : s->ring_cap;
	for (size_t i = 0; i < keep; i++) {
		const redisReply *t = rg->element[rg->elements - keep + i];
		if (t->type != REDIS_REPLY_STRING ||
		    !store_redis_v1_num(t->str, t->len, INT64_MIN, INT64_MAX, &v))
			return false;
		/* Layout 1 rebased as limit.h does: no time is before the base,
		 * none 2^31 ms after it. */
		v -= s->ring_base;
		ring[i] = v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
	}
	s->ring_len = (uint32_t)keep;
	for (size_t i = 0; i < bk->elements; i += 2) {
		const redisReply *idx = bk->element[i], *val = bk->element[i + 1];
		const char *colon;
		long long b;
		if (idx->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING ||
		    !store_redis_v1_num(idx->str, idx->len, 0, LIMIT_BUCKETS - 1, &b) ||
		    (colon = memchr(val->str, ':', val->len)) == NULL ||
		    !store_redis_v1_num(val->str, (size_t)(colon - val->str), 0, UINT32_MAX, &v) ||
		    !store_redis_v1_num(colon + 1, val->len - (size_t)(colon + 1 - val->str), 0,
					UINT32_MAX, &v2))
			return false;
		s->buckets[b].second = (uint32_t)v;
		s->buckets[b].count = (uint32_t)v2;
	}
	return true;
}

/* Builds the commit of a dump d of layout 1: an EVAL of the upgrade script
 * with each endpoint's state as layout 2 keeps it (version 1). Returns 0,
 * or -1 with err set. */
static int
store_redis_upgrade_build(struct store_redis *st, const redisReply *d, char *err, size_t errlen)
{
	uint32_t ring[LIMIT_RING_MAX]; /* not the step's buffers: a step may hold them */
	struct limit_state s;
	uint64_t version = 1;

	store_redis_begin(st, false);
	store_redis_word(st, "EVAL", 4);
	store_redis_word(st, store_redis_upgrade_script, sizeof(store_redis_upgrade_script) - 1);
	store_redis_word(st, "0", 1);
	store_redis_word(st, st->prefix, strlen(st->prefix));
	store_redis_word(st, "commit", 6);
	store_redis_word(st, d->element[1]->str, d->element[1]->len);
	for (size_t i = 2; i < d->elements; i++) {
		const redisReply *e = d->element[i];
		if (!store_redis_v1_state(e, &s, ring)) {
			char why[160];
			snprintf(why, sizeof(why),
				 "the layout 1 keys of endpoint %.80s hold what layout 1 never "
				 "wrote: not converted",
				 e->type == REDIS_REPLY_ARRAY && e->elements > 0 &&
						 e->element[0]->type == REDIS_REPLY_STRING
					 ? e->element[0]->str
					 : "?");
			store_redis_set_err(st, err, errlen, why);
			return -1;
		}
		const char *id = e->element[0]->str;
		size_t id_len = e->element[0]->len;
		size_t n = STORE_REDIS_VERSION_LEN + store_codec_ent_size(&s, id_len);
		char *p = store_redis_array(&st->val, n);
		if (p == NULL) {
			store_redis_set_err(st, err, errlen, "out of memory");
			return -1;
		}
		memcpy(p, &version, sizeof(version));
		store_codec_ent_put(p + STORE_REDIS_VERSION_LEN, id, id_len, &s);
		store_redis_word(st, id, id_len);
		store_redis_word_copy(st, p, n);
	}
	return 0;
}

/* Makes the keys under the prefix layout 2 on a handle's first use: when
 * they are of layout 1 (the previous release's), converts every endpoint,
 * keeping every count. The script hands layout 1 out, the states are built
 * here with store_codec.h (the one encoding, in C), and the script swaps
 * them in at once only if layout 1 is still what it handed out: many
 * processes on many hosts may start together, the first commit converts,
 * the others find layout 2 (or, when an old responder still counted in
 * between, read again). A read-only handle converts nothing: it refuses a
 * layout 1. Returns 0, or -1 with err set. */
static int
store_redis_upgrade(struct store_redis *st, char *err, size_t errlen)
{
	int64_t start = clock_mono_ms();

	if (st->ready)
		return 0;
	for (int tries = 0;; tries++) {
		redisReply *d, *r;
		bool written;

		store_redis_begin(st, false);
		store_redis_word(st, "EVAL", 4);
		store_redis_word(st, store_redis_upgrade_script,
				 sizeof(store_redis_upgrade_script) - 1);
		store_redis_word(st, "0", 1);
		store_redis_word(st, st->prefix, strlen(st->prefix));
		store_redis_word(st, "dump", 4);
		d = store_redis_run(st, false, err, errlen);
		if (d == NULL)
			return -1;
		if (d->type != REDIS_REPLY_ARRAY || d->elements < 1 ||
		    d->element[0]->type != REDIS_REPLY_STRING ||
		    (strcmp(d->element[0]->str, "1") == 0 &&
		     (d->elements < 2 || d->element[1]->type != REDIS_REPLY_STRING))) {
			freeReplyObject(d);
			store_redis_set_err(st, err, errlen, "unexpected answer to an upgrade");
			return -1;
		}
		if (strcmp(d->element[0]->str, "2") == 0 || (st->readonly && d->elements == 2)) {
			freeReplyObject(d);
			st->ready = true;
			return 0;
		}
		if (st->readonly) {
			freeReplyObject(d);
			store_redis_set_err(
				st, err, errlen,
				"keys of layout 1 under this prefix: the first responder "
				"that writes converts them");
			return -1;
		}
		size_t n = d->elements - 2;
		if (store_redis_upgrade_build(st, d, err, errlen) != 0) {
			freeReplyObject(d);
			return -1;
		}
		r = store_redis_run(st, false, err, errlen);
		freeReplyObject(d);
		if (r == NULL)
			return -1;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
		    r->element[0]->type != REDIS_REPLY_STRING) {
			freeReplyObject(r);
			store_redis_set_err(st, err, errlen, "unexpected answer to an upgrade");
			return -1;
		}
		written = strcmp(r->element[0]->str, "1") == 0;
		st->ready = written || strcmp(r->element[0]->str, "2") == 0;
		freeReplyObject(r);
		if (written && n > 0)
			log_info("%s: converted the state of %zu endpoint%s from key layout 1 to 2",
				 st->a.label, n, n == 1 ? "" : "s");
		if (st->ready)
			return 0;
		if (!store_redis_again(st, tries, start, err, errlen))
			return -1;
	}
}

/* One step of a thread (a reservation, or a change of one endpoint), made
 * by whichever thread of the process runs the next batch. */
struct store_redis_op {
	struct store_redis *st; /* the caller's handle: which Redis, which keys */
	/* A reservation when eps is set, else a change of id by fn. */
	const struct store_endpoint *eps;
	size_t n;
	/* With a reservation: the client's own entry (NULL: none), the slot
	 * after the n of eps, committed with them (one compare-and-set) */
	const struct store_endpoint *client;
	struct limit_now now;
	store_pick_fn pick;
	void *pick_ctx;
	struct store_reservation *res;
	const char *id;
	bool skip_new;
	void (*fn)(struct limit_state *s, const void *ctx);
	const void *ctx;
	/* With a change: an outcome to count in its client's usage book too
	 * (NULL: none), on the local day usage_day, in the same
	 * compare-and-set; book its index in the batch's books. */
	const struct store_outcome *usage;
	long usage_day;
	size_t book;
	char *err;
	size_t errlen;
	int rc;
	size_t first; /* in a batch: its first slot index (the handle's idx) */
	bool counted; /* in a batch's try: it counted an attempt */
	bool over;    /* in a batch: its rc is final */
	bool taken;   /* a batch holds it */
	bool done;    /* its batch is over: rc, res and err are its caller's */
	struct store_redis_op *next;
};

/* The steps of this process that wait for a batch, and whether one runs.
 * Every thread with a step queues it here; a thread that finds no batch
 * running takes every queued step of the same store and runs them as one
 * batch on its own connection (store_redis_batch): one read and one
 * compare-and-set for them all, so the threads of a process never race
 * each other's compare-and-sets, and the processes race with one batch
 * each. Without it every thread raced on the same few keys: each round one
 * writer per key won and the others wrote again at once, and a request
 * cost 98 Redis commands from 6 processes x 11 threads (BENCHMARKS.md).
 * It holds no state of the store: the states are read again for every
 * batch, and the handles and connections stay per thread. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool busy;
	struct store_redis_op *head, *tail;
} store_redis_steps = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, NULL, NULL};

/* Whether two handles use the same keys of the same Redis the same way
 * (their steps may share a batch). */
static bool
store_redis_same(const struct store_redis *x, const struct store_redis *y)
{
	return x == y || (strcmp(x->a.host, y->a.host) == 0 && x->a.port == y->a.port &&
			  strcmp(x->a.sock, y->a.sock) == 0 && strcmp(x->a.user, y->a.user) == 0 &&
			  strcmp(x->a.pass, y->a.pass) == 0 && x->a.db == y->a.db &&
			  strcmp(x->prefix, y->prefix) == 0 && x->timeout_ms == y->timeout_ms);
}

/* The slots op names: a change's one; a reservation's candidates, then
 * their models' entries (rule 27; SIZE_MAX in idx where a candidate has
 * none), then its client's entry. */
static size_t
store_redis_op_slots(const struct store_redis_op *op)
{
	return op->eps == NULL ? 1 : 2 * op->n + (op->client != NULL);
}

static void
store_redis_op_fail(struct store_redis_op *op, const char *why)
{
	if (op->err != NULL && op->errlen > 0)
		snprintf(op->err, op->errlen, "%s", why);
	op->rc = -1;
	op->over = true;
}

/* Applies op to the batch's states (its slots: idx from op->first),
 * marking those it changes in dirty. */
static void
store_redis_apply(struct store_redis *st, struct store_redis_op *op, const size_t *idx,
		  struct store_redis_slot *states, bool *dirty, const struct limit_state **ptrs,
		  bool *room, struct store_redis_book *books)
{
	char why[512], what[160];

	for (size_t c = 0; c < store_redis_op_slots(op); c++) {
		if (idx[op->first + c] == SIZE_MAX) {
			ptrs[c] = NULL;
			continue;
		}
		const struct store_redis_slot *sl = &states[idx[op->first + c]];
		if (sl->damaged) {
			snprintf(what, sizeof(what), "damaged state of endpoint %.80s",
				 op->eps == NULL ? op->id
				 : c < op->n     ? op->eps[c].id
				 : c < 2 * op->n ? op->eps[c - op->n].model->id
						 : "(a client)");
			store_redis_set_err(st, why, sizeof(why), what);
			store_redis_op_fail(op, why);
			return;
		}
		if (c < (op->eps != NULL ? 2 * op->n : 1))
			ptrs[c] = &sl->s;
	}
	if (op->eps == NULL) {
		size_t j = idx[op->first];
		if (op->skip_new && !states[j].present && !dirty[j])
			return;
		op->fn(&states[j].s, op->ctx);
		dirty[j] = true;
		if (op->usage != NULL) {
			struct store_redis_book *b = &books[op->book];
			if (usage_book_count(&b->book, op->usage_day, op->usage->model, op->usage) <
			    0) {
				store_redis_set_err(st, why, sizeof(why), "out of memory");
				store_redis_op_fail(op, why);
				return;
			}
			b->dirty = true;
		}
		return;
	}
	memset(op->res, 0, sizeof(*op->res));
	if (op->client != NULL) {
		int64_t w =
			limit_wait_ms(&states[idx[op->first + 2 * op->n]].s, op->client, &op->now);
		if (w > 0) {
			op->res->verdict = STORE_CLIENT_LIMITED;
			op->res->retry_after_s = limit_retry_after_s(w);
			return;
		}
	}
	if (limit_look(ptrs, op->eps, op->n, &op->now, room, op->res) == 0)
		return;
	size_t k = op->pick(op->pick_ctx, room, op->n);
	if (k >= op->n || !room[k]) {
		store_redis_set_err(st, why, sizeof(why), "no endpoint picked");
		store_redis_op_fail(op, why);
		return;
	}
	size_t j = idx[op->first + k];
	struct limit_now at = limit_now_in(&op->now, op->eps[k].zone);
	limit_fit_ring(&states[j].s, op->eps[k].rpm, at.ms);
	bool recheck = limit_count_attempt(&states[j].s, &at);
	limit_count_tokens(&states[j].s, op->eps[k].estimate, &at);
	dirty[j] = true;
	if (op->eps[k].model != NULL) {
		/* The model's entry, committed in the same compare-and-set
		 * (rule 27). */
		struct store_endpoint m = limit_model_endpoint(&op->eps[k]);
		size_t jm = idx[op->first + op->n + k];
		limit_fit_ring(&states[jm].s, m.rpm, at.ms);
		(void)limit_count_attempt(&states[jm].s, &at);
		limit_count_tokens(&states[jm].s, m.estimate, &at);
		dirty[jm] = true;
	}
	op->res->verdict = STORE_RESERVED;
	op->res->chosen = k;
	op->res->recheck = recheck;
	op->res->at_ms = at.ms;
	op->res->at_day = at.day;
	op->counted = true;
	if (op->client != NULL) {
		/* In the batch's one compare-and-set with the endpoint's. */
		size_t cj = idx[op->first + 2 * op->n];
		limit_fit_ring(&states[cj].s, op->client->rpm, op->now.ms);
		limit_count_attempt(&states[cj].s, &op->now);
		limit_count_tokens(&states[cj].s, op->client->estimate, &op->now);
		dirty[cj] = true;
	}
}

static void
store_redis_books_free(struct store_redis_book *books, size_t nb)
{
	for (size_t j = 0; j < nb; j++)
		usage_book_free(&books[j].book);
}

/* Runs the steps of the list ops on st's connection as if one after the
 * other: reads every state they name at once, applies each step to those
 * states in C in the order they came, and commits all the states they
 * changed with one compare-and-set; when one changed meanwhile, all again
 * on the states now. A reservation's commit carries a deadline (the read's
 * Redis time plus the timeout): past it, the reservations that counted
 * fail and the rest go on. Sets each step's rc (and err). Returns 0, or -1
 * when the batch as a whole failed (Redis did not answer, or the states
 * kept changing), with the reason in why. */
static int
store_redis_batch(struct store_redis *st, struct store_redis_op *ops, char *why, size_t whylen)
{
	int64_t start = clock_mono_ms();
	size_t nidx = 0, nslots = 0, most = 1, nb = 0;
	struct store_redis_book *books = NULL;
	char err[512] = "";
	long long redis_now = 0;
	int64_t now_at = 0; /* this host's monotonic time when redis_now was read */
	bool read = true, reserves = false;

	for (struct store_redis_op *op = ops; op != NULL; op = op->next) {
		op->first = nidx;
		nidx += store_redis_op_slots(op);
		reserves |= op->eps != NULL;
		if (op->eps != NULL && op->n > most)
			most = op->n;
	}
	size_t *idx = store_redis_array(&st->idx, nidx * sizeof(*idx));
	struct store_endpoint *eps = store_redis_array(&st->eps, nidx * sizeof(*eps));
	if (nidx > 100000 || idx == NULL || eps == NULL)
		goto oom;
	for (struct store_redis_op *op = ops; op != NULL; op = op->next) {
		for (size_t c = 0; c < store_redis_op_slots(op); c++) {
			const char *id = op->eps == NULL ? op->id
					 : c < op->n     ? op->eps[c].id
					 : c < 2 * op->n ? (op->eps[c - op->n].model != NULL
								    ? op->eps[c - op->n].model->id
								    : NULL)
							 : op->client->id;
			size_t j = 0;
			if (id == NULL) {
				idx[op->first + c] = SIZE_MAX; /* no model entry */
				continue;
			}
			while (j < nslots && strcmp(eps[j].id, id) != 0)
				j++;
			if (j == nslots)
				eps[nslots++] =
					(struct store_endpoint){.id = id, .rpm = -1, .rpd = -1};
			idx[op->first + c] = j;
		}
	}
	books = store_redis_array(&st->books, nidx * sizeof(*books));
	if (books == NULL)
		goto oom;
	for (struct store_redis_op *op = ops; op != NULL; op = op->next) {
		if (op->usage == NULL)
			continue;
		size_t j = 0;
		while (j < nb && strcmp(books[j].client, op->usage->client) != 0)
			j++;
		if (j == nb) {
			memset(&books[nb], 0, sizeof(books[nb]));
			books[nb].client = op->usage->client;
			usage_book_init(&books[nb++].book);
		}
		op->book = j;
	}
	struct store_redis_slot *sl = store_redis_array(&st->slots, nslots * sizeof(*sl));
	uint32_t *rings = store_redis_array(&st->rings, nslots * LIMIT_RING_MAX * sizeof(*rings));
	bool *dirty = store_redis_array(&st->dirty, nslots * sizeof(*dirty));
	const struct limit_state **ptrs = store_redis_array(&st->ptrs, 2 * most * sizeof(*ptrs));
	bool *room = store_redis_array(&st->room, most * sizeof(*room));
	if (sl == NULL || rings == NULL || dirty == NULL || ptrs == NULL || room == NULL)
		goto oom;
	for (int tries = 0;; tries++) {
		bool any = false, reserving = false;
		if (read && nslots == 1 && !reserves && dynbuf_len(&st->last_val) > 0 &&
		    strcmp(dynbuf_str(&st->last_id), eps[0].id) == 0 &&
		    (nb == 0 || (nb == 1 && dynbuf_len(&st->last_book) > 0 &&
				 strcmp(dynbuf_str(&st->last_client), books[0].client) == 0))) {
			/* As good as a read: the write checks its version. */
			store_redis_load_slot(st, &sl[0], rings, eps[0].id,
					      dynbuf_ptr(&st->last_val), dynbuf_len(&st->last_val));
			if (nb == 1)
				store_redis_load_book(&books[0], dynbuf_ptr(&st->last_book),
						      dynbuf_len(&st->last_book));
			read = false;
		}
		if (read) {
			redisReply *r =
				store_redis_get(st, eps, nslots, books, nb, err, sizeof(err));
			if (r == NULL)
				goto fail;
			redis_now = r->element[0]->integer;
			now_at = clock_mono_ms();
			for (size_t j = 0; j < nslots; j++)
				store_redis_load_slot(st, &sl[j], rings + j * LIMIT_RING_MAX,
						      eps[j].id, r->element[j + 1]->str,
						      r->element[j + 1]->len);
			for (size_t j = 0; j < nb; j++)
				store_redis_load_book(&books[j], r->element[nslots + j + 1]->str,
						      r->element[nslots + j + 1]->len);
			freeReplyObject(r);
			read = false;
		}
		/* The steps change only the states they mark dirty: the others
		 * stay as read, and a conflict's answer brings those back. */
		memset(dirty, 0, nslots * sizeof(*dirty));
		for (size_t j = 0; j < nb; j++)
			books[j].dirty = false;
		for (struct store_redis_op *op = ops; op != NULL; op = op->next) {
			op->counted = false;
			if (!op->over)
				store_redis_apply(st, op, idx, sl, dirty, ptrs, room, books);
			reserving |= op->counted;
		}
		for (size_t j = 0; j < nslots; j++)
			any |= dirty[j];
		/* The deadline runs from when the write is sent, in Redis's
		 * time: the time read, plus what this host took since. */
		long long deadline =
			reserving ? redis_now + (clock_mono_ms() - now_at) + st->timeout_ms : 0;
		int c = !any ? 1
			     : store_redis_commit(st, eps, nslots, sl, rings, dirty, books, nb,
						  deadline, &redis_now, err, sizeof(err));
		if (c < 0)
			goto fail;
		if (c == 1)
			break;
		if (c == 0)
			now_at = clock_mono_ms();
		if (c == 2) {
			/* Refused late, and yet the answer came back in time:
			 * nothing was written and the caller still waits, so
			 * the batch runs again on the states read again. */
			store_redis_set_err(st, err, sizeof(err),
					    "answer later than server.storeTimeoutMs");
			read = true;
		}
		if (!store_redis_again(st, tries, start, err, sizeof(err)))
			goto fail;
	}
	for (struct store_redis_op *op = ops; op != NULL; op = op->next) {
		if (!op->over)
			op->rc = 0;
		op->over = true;
	}
	store_redis_books_free(books, nb);
	return 0;
oom:
	store_redis_set_err(st, err, sizeof(err), "out of memory");
fail:
	for (struct store_redis_op *op = ops; op != NULL; op = op->next)
		if (!op->over)
			store_redis_op_fail(op, err);
	snprintf(why, whylen, "%s", err);
	store_redis_books_free(books, nb);
	return -1;
}

/* Takes op out of the queue. */
static void
store_redis_unqueue(struct store_redis_op *op)
{
	struct store_redis_op **pp = &store_redis_steps.head, *prev = NULL;

	while (*pp != op) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	*pp = op->next;
	if (store_redis_steps.tail == op)
		store_redis_steps.tail = prev;
	op->next = NULL;
}

/* Takes every queued step of st's store out of the queue, in order, as a
 * list. */
static struct store_redis_op *
store_redis_take(const struct store_redis *st)
{
	struct store_redis_op *batch = NULL, **bt = &batch;

	for (struct store_redis_op *o = store_redis_steps.head, *nx; o != NULL; o = nx) {
		nx = o->next;
		if (store_redis_same(o->st, st)) {
			store_redis_unqueue(o);
			o->taken = true;
			*bt = o;
			bt = &o->next;
		}
	}
	return batch;
}

/* Makes op's step: queues it, and runs a batch when none runs, until a
 * batch made it. A batch that fails as a whole (Redis stalled or down)
 * fails the steps of its store that queued meanwhile too, at once: they
 * would wait on the same Redis. A step waits at most
 * STORE_REDIS_CONTENTION_MS for a batch to take it, as long as a batch
 * keeps trying while its states keep changing. */
static int
store_redis_step(struct store_redis *st, struct store_redis_op *op)
{
	struct timespec until;

	/* pthread_cond_timedwait counts on CLOCK_REALTIME. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += STORE_REDIS_CONTENTION_MS / 1000;
	until.tv_nsec += (STORE_REDIS_CONTENTION_MS % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	op->st = st;
	pthread_mutex_lock(&store_redis_steps.mu);
	if (store_redis_steps.tail != NULL)
		store_redis_steps.tail->next = op;
	else
		store_redis_steps.head = op;
	store_redis_steps.tail = op;
	while (!op->done) {
		if (!store_redis_steps.busy) {
			struct store_redis_op *batch = store_redis_take(st);
			char why[512];
			store_redis_steps.busy = true;
			pthread_mutex_unlock(&store_redis_steps.mu);
			int rc = store_redis_batch(st, batch, why, sizeof(why));
			pthread_mutex_lock(&store_redis_steps.mu);
			for (struct store_redis_op *o = batch; o != NULL; o = o->next)
				o->done = true;
			if (rc != 0) {
				for (struct store_redis_op *o = store_redis_take(st); o != NULL;
				     o = o->next) {
					store_redis_op_fail(o, why);
					o->done = true;
				}
			}
			store_redis_steps.busy = false;
			pthread_cond_broadcast(&store_redis_steps.cv);
		} else if (op->taken) {
			pthread_cond_wait(&store_redis_steps.cv, &store_redis_steps.mu);
		} else if (pthread_cond_timedwait(&store_redis_steps.cv, &store_redis_steps.mu,
						  &until) == ETIMEDOUT &&
			   !op->taken && !op->done) {
			char why[512];
			store_redis_unqueue(op);
			store_redis_set_err(st, why, sizeof(why), "the state keeps changing");
			store_redis_op_fail(op, why);
			op->done = true;
		}
	}
	pthread_mutex_unlock(&store_redis_steps.mu);
	return op->rc;
}

/* Reserves: among eps, by the rules of limit.h on their states now, let
 * pick choose one with room and count an attempt on it (a batch's step). */
static int
store_redis_reserve(struct store *sb, const struct store_endpoint *eps, size_t n,
		    const struct store_endpoint *client, int64_t now_ms, store_pick_fn pick,
		    void *pick_ctx, struct store_reservation *res, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct store_redis_op op = {.eps = eps,
				    .n = n,
				    .client = client,
				    .now = store_redis_now(now_ms),
				    .pick = pick,
				    .pick_ctx = pick_ctx,
				    .res = res,
				    .err = err,
				    .errlen = errlen};

	memset(res, 0, sizeof(*res));
	if (n == 0) {
		res->verdict = STORE_LIMITED;
		res->retry_after_s = 1;
		return 0;
	}
	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	return store_redis_step(st, &op);
}

/* Applies fn to endpoint id's state and commits it (a batch's step). With
 * skip_new, an endpoint without state is left alone. */
static int
store_redis_change(struct store_redis *st, const char *id, bool skip_new,
		   void (*fn)(struct limit_state *s, const void *ctx), const void *ctx, char *err,
		   size_t errlen)
{
	struct store_redis_op op = {
		.id = id, .skip_new = skip_new, .fn = fn, .ctx = ctx, .err = err, .errlen = errlen};

	return store_redis_step(st, &op);
}

struct store_redis_record_ctx {
	const struct store_outcome *o;
	const struct store_cooldown *cd;
	struct limit_now now;
};

static void
store_redis_record_fn(struct limit_state *s, const void *ctx)
{
	const struct store_redis_record_ctx *c = ctx;
	struct limit_now at = limit_now_in(&c->now, c->o->zone);

	limit_record(s, c->o, c->cd, &at);
}

static int
store_redis_record(struct store *sb, const char *id, const struct store_outcome *o,
		   const struct store_cooldown *cd, int64_t now_ms, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct store_redis_record_ctx c = {o, cd, store_redis_now(now_ms)};
	struct store_redis_op op = {
		.id = id, .fn = store_redis_record_fn, .ctx = &c, .err = err, .errlen = errlen};

	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	if (o->client != NULL && o->served) {
		/* In the client's book, in the same compare-and-set. */
		op.usage = o;
		op.usage_day = c.now.day;
	}
	return store_redis_step(st, &op);
}

static int
store_redis_read(struct store *sb, const struct store_endpoint *eps, size_t n, int64_t now_ms,
		 struct store_usage *out, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct limit_now now = store_redis_now(now_ms);
	struct store_redis_slot *sl = store_redis_array(&st->slots, sizeof(*sl));
	uint32_t *ring = store_redis_array(&st->rings, LIMIT_RING_MAX * sizeof(*ring));
	redisReply *r;
	int rc = 0;

	if (n == 0)
		return 0;
	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	if (sl == NULL || ring == NULL || n > 100000) {
		store_redis_set_err(st, err, errlen, "out of memory");
		return -1;
	}
	r = store_redis_get(st, eps, n, NULL, 0, err, errlen);
	if (r == NULL)
		return -1;
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = store_redis_load(st, sl, ring, eps[i].id, r->element[i + 1]->str,
				      r->element[i + 1]->len, err, errlen);
		if (rc == 0)
			limit_usage(&sl->s, &eps[i], &now, &out[i]);
	}
	freeReplyObject(r);
	return rc;
}

/* The books of client, or of every client in P "clients" (client NULL),
 * read in one call. */
static int
store_redis_read_clients(struct store *sb, const char *client, int64_t now_ms,
			 struct store_clients *out, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	long today = store_redis_now(now_ms).day;
	redisReply *m = NULL, *r = NULL;
	struct store_redis_book *books;
	size_t nb = 1;
	int rc = -1;

	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	if (client == NULL) {
		store_redis_begin(st, false);
		store_redis_word(st, "SMEMBERS", 8);
		store_redis_word_key(st, "clients", "");
		m = store_redis_run(st, false, err, errlen);
		if (m == NULL)
			return -1;
		if (m->type != REDIS_REPLY_ARRAY || m->elements > 100000) {
			store_redis_set_err(st, err, errlen, "unexpected answer to a read");
			goto out;
		}
		nb = m->elements;
	}
	books = store_redis_array(&st->books, (nb + 1) * sizeof(*books));
	if (books == NULL) {
		store_redis_set_err(st, err, errlen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nb; i++) {
		const redisReply *e = m != NULL ? m->element[i] : NULL;
		if (e != NULL && (e->type != REDIS_REPLY_STRING || strlen(e->str) != e->len)) {
			store_redis_set_err(st, err, errlen, "unexpected answer to a read");
			goto out;
		}
		books[i].client = e != NULL ? e->str : client;
	}
	if (nb == 0) {
		rc = 0;
		goto out;
	}
	r = store_redis_get(st, NULL, 0, books, nb, err, errlen);
	if (r == NULL)
		goto out;
	for (size_t i = 0; i < nb; i++) {
		const redisReply *v = r->element[i + 1];
		if (v->len == 0)
			continue; /* no book (yet) */
		/* Shorter than a version: damaged (store_clients_add marks it). */
		bool whole = v->len >= STORE_REDIS_VERSION_LEN;
		if (store_clients_add(out, books[i].client, strlen(books[i].client),
				      whole ? v->str + STORE_REDIS_VERSION_LEN : NULL,
				      whole ? v->len - STORE_REDIS_VERSION_LEN : 0, today, err,
				      errlen) != 0)
			goto out;
	}
	rc = 0;
out:
	if (r != NULL)
		freeReplyObject(r);
	if (m != NULL)
		freeReplyObject(m);
	return rc;
}

/* Runs a command built with store_redis_begin(st, false) whose answer
 * only tells success. */
static int
store_redis_simple(struct store_redis *st, char *err, size_t errlen)
{
	redisReply *r = store_redis_run(st, false, err, errlen);

	if (r == NULL)
		return -1;
	freeReplyObject(r);
	return 0;
}

/* How many refusals go into the gateway's history row, and when (this
 * process's time at the fold). */
struct store_redis_refusals_ctx {
	long long n;
	int64_t now_ms;
};

static void
store_redis_refusals_fn(struct limit_state *s, const void *ctx)
{
	const struct store_redis_refusals_ctx *c = ctx;

	limit_record_refusals(s, c->n, c->now_ms);
}

/* One HINCRBY per refusal reason with a count; on error, add keeps the
 * counts of the reasons not yet added. */
static int
store_redis_fold(struct store *sb, long long *add, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct store_redis_refusals_ctx refused = {
		add[STORE_REJECT_RATE_LIMIT] + add[STORE_REJECT_COOLDOWN], clock_now_ms()};

	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	for (size_t k = 0; k < STORE_REJECT_N; k++) {
		char field[24], by[24];
		int fl = snprintf(field, sizeof(field), "rej%zu", k);
		int bl = snprintf(by, sizeof(by), "%lld", add[k]);

		if (add[k] == 0)
			continue;
		store_redis_begin(st, false);
		store_redis_word(st, "HINCRBY", 7);
		store_redis_word_key(st, "gw", "");
		store_redis_word(st, field, (size_t)fl);
		store_redis_word(st, by, (size_t)bl);
		if (store_redis_simple(st, err, errlen) != 0)
			return -1;
		add[k] = 0;
	}
	/* Then the gateway's history row (Limits and state, rule 34): a
	 * change of its entry, as a record's. Should it fail, the counts above
	 * stand and these refusals miss the history only. */
	return refused.n > 0 ? store_redis_change(st, STORE_GATEWAY_ID, false,
						  store_redis_refusals_fn, &refused, err, errlen)
			     : 0;
}

static int
store_redis_read_rejects(struct store *sb, long long *out, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	static const char *const fields[] = {"rej0", "rej1", "rej2", "rej3",
					     "rej4", "rej5", "rej6", "rej7"};
	redisReply *r;
	int rc = -1;

	_Static_assert(STORE_REJECT_N <= sizeof(fields) / sizeof(fields[0]),
		       "a refusal without its field");
	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	store_redis_begin(st, false);
	store_redis_word(st, "HMGET", 5);
	store_redis_word_key(st, "gw", "");
	for (size_t i = 0; i < STORE_REJECT_N; i++)
		store_redis_word(st, fields[i], strlen(fields[i]));
	r = store_redis_run(st, false, err, errlen);
	if (r == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != STORE_REJECT_N)
		goto out;
	for (size_t i = 0; i < STORE_REJECT_N; i++) {
		out[i] = 0;
		if (r->element[i]->type != REDIS_REPLY_NIL &&
		    !store_redis_ll(r->element[i], &out[i]))
			goto out;
	}
	rc = 0;
out:
	if (rc != 0)
		store_redis_set_err(st, err, errlen, "unexpected answer to a read");
	freeReplyObject(r);
	return rc;
}

static void
store_redis_reset_fn(struct limit_state *s, const void *ctx)
{
	(void)ctx;
	limit_reset_tokens(s);
}

static int
store_redis_reset_tokens(struct store *sb, const char *id, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	redisReply *r;
	int rc = 0;

	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	if (id != NULL)
		return store_redis_change(st, id, true, store_redis_reset_fn, NULL, err, errlen);
	store_redis_begin(st, false);
	store_redis_word(st, "SMEMBERS", 8);
	store_redis_word_key(st, "ids", "");
	r = store_redis_run(st, false, err, errlen);
	if (r == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY) {
		store_redis_set_err(st, err, errlen, "unexpected answer to a read");
		rc = -1;
	}
	for (size_t i = 0; rc == 0 && i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_STRING ||
		    strlen(r->element[i]->str) != r->element[i]->len)
			continue;
		rc = store_redis_change(st, r->element[i]->str, true, store_redis_reset_fn, NULL,
					err, errlen);
	}
	freeReplyObject(r);
	return rc;
}

struct store_redis_admin_ctx {
	enum store_admin action;
	struct limit_now now;
};

static void
store_redis_admin_fn(struct limit_state *s, const void *ctx)
{
	const struct store_redis_admin_ctx *c = ctx;

	limit_admin(s, c->action, &c->now);
}

static int
store_redis_admin(struct store *sb, const char *id, enum store_admin action, int64_t now_ms,
		  char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct store_redis_admin_ctx c = {action, store_redis_now(now_ms)};

	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	return store_redis_change(st, id, false, store_redis_admin_fn, &c, err, errlen);
}

/* Converts keys of layout 1 (store_redis_upgrade) and refuses those of any
 * other; then a read, but for the first check under a prefix, which writes
 * the layout. */
static int
store_redis_check(struct store *sb, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	redisReply *r;
	char why[200];

	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (store_redis_upgrade(st, err, errlen) != 0)
		return -1;
	store_redis_begin(st, false);
	store_redis_word(st, "HGET", 4);
	store_redis_word_key(st, "meta", "");
	store_redis_word(st, "format", 6);
	r = store_redis_run(st, false, err, errlen);
	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_STRING && strcmp(r->str, STORE_REDIS_FORMAT) != 0) {
		snprintf(why, sizeof(why),
			 "keys of another layout (%.20s) under this prefix: delete them, or choose "
			 "another server.storePrefix",
			 r->str);
		store_redis_set_err(st, err, errlen, why);
		freeReplyObject(r);
		return -1;
	}
	bool marked = r->type == REDIS_REPLY_STRING;
	freeReplyObject(r);
	if (marked)
		return 0;
	store_redis_begin(st, false);
	store_redis_word(st, "HSET", 4);
	store_redis_word_key(st, "meta", "");
	store_redis_word(st, "format", 6);
	store_redis_word(st, STORE_REDIS_FORMAT, strlen(STORE_REDIS_FORMAT));
	return store_redis_simple(st, err, errlen);
}

static void
store_redis_close(struct store *sb)
{
	struct store_redis *st = (struct store_redis *)sb;

	if (st == NULL)
		return;
	store_redis_disconnect(st);
	free(st->prefix);
	struct dynbuf *bufs[] = {&st->words,     &st->argv,       &st->lens,  &st->text,
				 &st->slots,     &st->rings,      &st->dirty, &st->eps,
				 &st->idx,       &st->ptrs,       &st->room,  &st->val,
				 &st->last_val,  &st->last_id,    &st->books, &st->bval,
				 &st->last_book, &st->last_client};
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		dynbuf_free(bufs[i]);
	/* The password is not left in freed memory. */
	explicit_bzero(&st->a, sizeof(st->a));
	free(st);
}

static const struct store_ops store_redis_ops = {
	.what = "Redis store",
	.close = store_redis_close,
	.reserve = store_redis_reserve,
	.record = store_redis_record,
	.read = store_redis_read,
	.fold = store_redis_fold,
	.read_rejects = store_redis_read_rejects,
	.reset_tokens = store_redis_reset_tokens,
	.admin = store_redis_admin,
	.read_clients = store_redis_read_clients,
	.check = store_redis_check,
	.sync = NULL, /* Redis keeps its data itself (its persistence settings) */
};

struct store *
store_redis_open(const char *address, const struct store_options *o, char *err, size_t errlen)
{
	struct store_redis *st = calloc(1, sizeof(*st));
	char why[200];

	if (st == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "state: out of memory");
		return NULL;
	}
	st->base.ops = &store_redis_ops;
	struct dynbuf *bufs[] = {&st->words,     &st->argv,       &st->lens,  &st->text,
				 &st->slots,     &st->rings,      &st->dirty, &st->eps,
				 &st->idx,       &st->ptrs,       &st->room,  &st->val,
				 &st->last_val,  &st->last_id,    &st->books, &st->bval,
				 &st->last_book, &st->last_client};
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		dynbuf_init(bufs[i], STORE_REDIS_BUF_CAP);
	if (redis_addr_parse(address, &st->a, why, sizeof(why)) != 0) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "Redis address: %s", why);
		store_redis_close(&st->base);
		return NULL;
	}
	st->prefix = strdup(o->prefix);
	st->timeout_ms = o->timeout_ms;
	st->readonly = o->readonly;
	if (st->prefix == NULL) {
		store_redis_set_err(st, err, errlen, "out of memory");
		store_redis_close(&st->base);
		return NULL;
	}
	return &st->base;
}

#endif

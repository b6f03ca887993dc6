/* The Redis store: the state of every endpoint in one Redis server, shared
 * by every responder process of every host that uses it (several web
 * servers behind a load balancer, one set of limits).
 *
 * Each step is one Lua script run on the server (store_redis_script), which
 * Redis runs atomically: nothing of another client runs in between (a
 * reservation first looks at the room, then counts in a second run that
 * checks the room again: store_redis_reserve says why). The script keeps
 * store_gdbm.c's rules line by line (the exact ring of the last
 * rpm attempt times up to rpm 1000, whole-second buckets over 61 s above,
 * the clamps for a clock set back, cooldowns, token totals that saturate),
 * so the two stores answer alike; the responder passes its own time, local
 * day and time to midnight (Redis knows no TZ, and the test clock moves only
 * the responder's time). The script is loaded once, on a handle's first
 * connection (SCRIPT LOAD), and run by its SHA1 (EVALSHA); a Redis restarted
 * since has forgotten it and answers NOSCRIPT, and then it is sent whole
 * (EVAL, which also caches it again).
 *
 * Keys, below the configured prefix P: P "ep:" ID (a hash of the counters),
 * P "ring:" ID (a list of the last attempt times, oldest first), P "bk:" ID
 * (a hash of the 61 buckets, "second:count"), P "ids" (a set of every ID, for
 * a reset of all), P "gw" (the gateway's refusal counts, "rej" N) and
 * P "meta" (the layout's version). The script builds key
 * names from the prefix, so the store needs one Redis, not a Cluster.
 *
 * Each handle (one per worker thread) holds one connection, made on its
 * first call and again after any failure; every connect and command waits
 * at most the configured timeout, so a Redis that is down or stalled costs
 * an answer 503 within it, never an unchecked request. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#include <sys/time.h>
#endif

#include "clock.h"
#include "compat.h"
#include "store_impl.h"

/* Where a Redis is, as store_redis_parse reads it from an address. */
struct store_redis_addr {
	char host[256]; /* TCP; "" with a socket */
	int port;
	char sock[108]; /* a Unix socket's path; "" over TCP */
	char user[128]; /* "" : AUTH with the password alone */
	char pass[256]; /* "" : no AUTH */
	long db;
	char label[300]; /* "redis HOST:PORT[/DB]", for messages: never the password */
};

#define STORE_REDIS_DEFAULT_PORT 6379
#define STORE_REDIS_MAX_DB 1000000

static void
store_redis_why(char *why, size_t whylen, const char *what)
{
	if (why != NULL && whylen > 0)
		snprintf(why, whylen, "%s", what);
}

static int
store_redis_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes src[0..n) into dst (of size dstlen): -1 when it does not
 * fit, holds a bad escape or a control character once decoded. */
static int
store_redis_decode(const char *src, size_t n, char *dst, size_t dstlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)src[i];
		if (c == '%') {
			if (i + 2 >= n)
				return -1;
			int h = store_redis_hexval(src[i + 1]), l = store_redis_hexval(src[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			c = h * 16 + l;
			i += 2;
		}
		if (c < 0x20 || c == 0x7f || o + 1 >= dstlen)
			return -1;
		dst[o++] = (char)c;
	}
	dst[o] = '\0';
	return 0;
}

/* Reads a whole decimal number of s[0..n) within [min, max]: -1 when it is
 * not one. */
static int
store_redis_number(const char *s, size_t n, long min, long max, long *out)
{
	long v = 0;

	if (n == 0 || n > 9)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* "[user]:password" (before the '@') into a; -1 when malformed. */
static int
store_redis_userinfo(const char *s, size_t n, struct store_redis_addr *a, char *why, size_t whylen)
{
	const char *colon = memchr(s, ':', n);

	if (colon == NULL) {
		store_redis_why(why, whylen,
				"expected :PASSWORD@ or USER:PASSWORD@ before the host");
		return -1;
	}
	if (store_redis_decode(s, (size_t)(colon - s), a->user, sizeof(a->user)) != 0 ||
	    store_redis_decode(colon + 1, n - (size_t)(colon - s) - 1, a->pass, sizeof(a->pass)) !=
		    0) {
		store_redis_why(
			why, whylen,
			"user or password too long, or a bad %-escape or control character in it");
		return -1;
	}
	if (a->pass[0] == '\0') {
		store_redis_why(why, whylen, "empty password");
		return -1;
	}
	return 0;
}

static bool
store_redis_host_char(char c, bool v6)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '.' || c == '-' || c == '_')
		return true;
	return v6 && (c == ':' || c == '%');
}

/* "host[:port]" or "[v6]:port" of s[0..n). */
static int
store_redis_hostport(const char *s, size_t n, struct store_redis_addr *a, char *why, size_t whylen)
{
	const char *host = s, *port = NULL;
	size_t hlen = n;
	bool v6 = n > 0 && s[0] == '[';

	if (v6) {
		const char *end = memchr(s, ']', n);
		if (end == NULL) {
			store_redis_why(why, whylen, "no ']' after an IPv6 address");
			return -1;
		}
		host = s + 1;
		hlen = (size_t)(end - host);
		if (end + 1 < s + n) {
			if (end[1] != ':') {
				store_redis_why(why, whylen, "expected ':PORT' after ']'");
				return -1;
			}
			port = end + 2;
		}
	} else {
		const char *colon = memchr(s, ':', n);
		if (colon != NULL) {
			hlen = (size_t)(colon - s);
			port = colon + 1;
		}
	}
	if (hlen == 0 || hlen >= sizeof(a->host)) {
		store_redis_why(why, whylen, "expected a host name or address");
		return -1;
	}
	for (size_t i = 0; i < hlen; i++) {
		if (!store_redis_host_char(host[i], v6)) {
			store_redis_why(why, whylen, "a character a host name cannot hold");
			return -1;
		}
	}
	memcpy(a->host, host, hlen);
	a->host[hlen] = '\0';
	a->port = STORE_REDIS_DEFAULT_PORT;
	if (port != NULL) {
		long p;
		if (store_redis_number(port, (size_t)(s + n - port), 1, 65535, &p) != 0) {
			store_redis_why(why, whylen, "expected a port from 1 to 65535");
			return -1;
		}
		a->port = (int)p;
	}
	return 0;
}

/* Reads address into a: "redis://[[user]:password@]host[:port][/db]" or
 * "unix://[[user]:password@]/path.sock[?db=N]". Returns 0, or -1 with the
 * reason in why (which never holds the password). */
static int
store_redis_parse(const char *address, struct store_redis_addr *a, char *why, size_t whylen)
{
	const char *p, *end, *at, *slash;
	bool is_unix;

	memset(a, 0, sizeof(*a));
	if (strncasecmp(address, "rediss://", 9) == 0) {
		store_redis_why(
			why, whylen,
			"TLS (rediss://) is not supported: reach Redis over a private network, "
			"a Unix socket or a TLS tunnel");
		return -1;
	}
	is_unix = strncasecmp(address, "unix://", 7) == 0;
	if (!is_unix && strncasecmp(address, "redis://", 8) != 0) {
		store_redis_why(why, whylen, "expected redis://HOST:PORT or unix:///PATH");
		return -1;
	}
	p = address + (is_unix ? 7 : 8);
	end = p + strlen(p);
	for (const char *q = p; q < end; q++) {
		if ((unsigned char)*q <= 0x20 || *q == 0x7f) {
			store_redis_why(why, whylen, "a space or control character in the address");
			return -1;
		}
	}
	/* The authority runs to the first '/'; a password holds none (%2F). */
	slash = memchr(p, '/', (size_t)(end - p));
	if (slash == NULL)
		slash = end;
	at = NULL;
	for (const char *q = p; q < slash; q++)
		if (*q == '@')
			at = q;
	if (at != NULL && store_redis_userinfo(p, (size_t)(at - p), a, why, whylen) != 0)
		return -1;
	const char *auth = at != NULL ? at + 1 : p;
	if (is_unix) {
		const char *query = strchr(slash, '?');
		size_t plen = (size_t)((query != NULL ? query : end) - slash);
		if (auth != slash) {
			store_redis_why(
				why, whylen,
				"a Unix socket has a path, no host: unix:///path/redis.sock");
			return -1;
		}
		if (plen < 2 || plen >= sizeof(a->sock)) {
			store_redis_why(why, whylen,
					"expected the socket's path: unix:///path/redis.sock");
			return -1;
		}
		memcpy(a->sock, slash, plen);
		a->sock[plen] = '\0';
		if (query != NULL && (strncmp(query, "?db=", 4) != 0 ||
				      store_redis_number(query + 4, strlen(query + 4), 0,
							 STORE_REDIS_MAX_DB, &a->db) != 0)) {
			store_redis_why(why, whylen, "expected nothing after the path but ?db=N");
			return -1;
		}
		if (a->db != 0)
			snprintf(a->label, sizeof(a->label), "redis unix:%s?db=%ld", a->sock,
				 a->db);
		else
			snprintf(a->label, sizeof(a->label), "redis unix:%s", a->sock);
		return 0;
	}
	if (store_redis_hostport(auth, (size_t)(slash - auth), a, why, whylen) != 0)
		return -1;
	if (slash < end && slash + 1 < end &&
	    store_redis_number(slash + 1, (size_t)(end - slash - 1), 0, STORE_REDIS_MAX_DB,
			       &a->db) != 0) {
		store_redis_why(why, whylen, "expected a database number after the '/'");
		return -1;
	}
	bool v6 = strchr(a->host, ':') != NULL;
	snprintf(a->label, sizeof(a->label), "redis %s%s%s:%d", v6 ? "[" : "", a->host,
		 v6 ? "]" : "", a->port);
	if (a->db != 0) {
		size_t l = strlen(a->label);
		snprintf(a->label + l, sizeof(a->label) - l, "/%ld", a->db);
	}
	return 0;
}

int
store_redis_address_check(const char *address, char *why, size_t whylen)
{
	struct store_redis_addr a;

	if (store_redis_parse(address, &a, why, whylen) != 0)
		return -1;
#ifndef HAVE_HIREDIS
	store_redis_why(why, whylen,
			"this build has no Redis support: build it with ./configure --with-redis "
			"(Debian package libhiredis-dev)");
	return -1;
#else
	return 0;
#endif
}

#ifndef HAVE_HIREDIS

struct store *
store_redis_open(const char *address, const struct store_options *o, char *err, size_t errlen)
{
	(void)o;
	/* Fails: it says why (the address, or the missing Redis support). */
	store_redis_address_check(address, err, errlen);
	return NULL;
}

#else

/* The whole store on the server side. ARGV[1] is the key prefix, ARGV[2]
 * the operation; numbers come as decimal text. Lua numbers are doubles:
 * exact for millisecond times and counts, but token totals (up to 2^60) are
 * added with HINCRBY and compared as text. */
static const char store_redis_script[] =
	"local P, op = ARGV[1], ARGV[2]\n"
	"local WINDOW, BUCKETS, RING_MAX, REBASE = 60000, 61, 1000, 2147483648\n"
	"local MAX_TOKENS = '1152921504606846976'\n"
	"local FAR = 9007199254740992\n"
	/* Redis 3.2 to 4 replicate a script whole unless told; it calls TIME. */
	"if redis.replicate_commands then redis.replicate_commands() end\n"
	"local function str(x) return string.format('%.0f', x) end\n"
	"local function ent(id)\n"
	"  local e = {id = id, k = P .. 'ep:' .. id, rk = P .. 'ring:' .. id,\n"
	"             bk = P .. 'bk:' .. id}\n"
	"  local v = redis.call('HMGET', e.k, 'day', 'day_count', 'fail_run', 'cooldown_until',\n"
	"                       'ring_cap', 'ring_base', 'ring_since')\n"
	"  e.day = tonumber(v[1]) or 0\n"
	"  e.day_count = tonumber(v[2]) or 0\n"
	"  e.fail_run = tonumber(v[3]) or 0\n"
	"  e.cooldown_until = tonumber(v[4]) or 0\n"
	"  e.ring_cap = tonumber(v[5]) or 0\n"
	"  e.ring_base = tonumber(v[6]) or 0\n"
	"  e.ring_since = tonumber(v[7]) or 0\n"
	"  e.ring_len = 0\n"
	"  if e.ring_cap > 0 then\n"
	"    e.ring_len = redis.call('LLEN', e.rk)\n"
	"    if e.ring_len > e.ring_cap then\n"
	"      redis.call('LTRIM', e.rk, -e.ring_cap, -1)\n"
	"      e.ring_len = e.ring_cap\n"
	"    end\n"
	"  end\n"
	"  return e\n"
	"end\n"
	"local function buckets(e)\n"
	"  if e.b == nil then\n"
	"    e.b = {}\n"
	"    local raw = redis.call('HGETALL', e.bk)\n"
	"    for i = 1, #raw, 2 do\n"
	"      local s, c = string.match(raw[i + 1], '^(%d+):(%d+)$')\n"
	"      if s then e.b[tonumber(raw[i])] = {tonumber(s), tonumber(c)} end\n"
	"    end\n"
	"  end\n"
	"  return e.b\n"
	"end\n"
	/* Attempts in the last `seconds` whole seconds, this one included. */
	"local function bucket_sum(e, now, seconds)\n"
	"  local now_s, sum = math.floor(now / 1000), 0\n"
	"  for _, b in pairs(buckets(e)) do\n"
	"    if b[1] > now_s - seconds and b[1] <= now_s then sum = sum + b[2] end\n"
	"  end\n"
	"  return sum\n"
	"end\n"
	"local function ring_at(e, i) return tonumber(redis.call('LINDEX', e.rk, i)) or 0 end\n"
	"local function ring_complete(e, now)\n"
	"  return e.ring_cap > 0 and e.ring_since <= now - WINDOW\n"
	"end\n"
	/* Resizes the ring to the endpoint's rpm, keeping the newest times. */
	"local function fit_ring(e, rpm, now)\n"
	"  local cap = rpm\n"
	"  if rpm <= 0 or rpm > RING_MAX then cap = 0 end\n"
	"  if cap == e.ring_cap then return end\n"
	"  local keep = math.min(e.ring_len, cap)\n"
	"  if cap > e.ring_cap and bucket_sum(e, now, BUCKETS) > e.ring_len then\n"
	"    e.ring_since = now\n"
	"  end\n"
	"  if e.ring_cap == 0 then e.ring_base = now end\n"
	"  if keep == 0 then redis.call('DEL', e.rk)\n"
	"  else redis.call('LTRIM', e.rk, -keep, -1) end\n"
	"  e.ring_cap, e.ring_len = cap, keep\n"
	"end\n"
	"local function rpm_used(e, now)\n"
	"  if not ring_complete(e, now) then return bucket_sum(e, now, WINDOW / 1000) end\n"
	"  local n = 0\n"
	"  for _, t in ipairs(redis.call('LRANGE', e.rk, 0, -1)) do\n"
	"    if tonumber(t) > now - WINDOW then n = n + 1 end\n"
	"  end\n"
	"  return n\n"
	"end\n"
	/* Milliseconds until the endpoint has room under its limits, 0 now. */
	"local function wait_ms(e, rpm, rpd, now, today, to_mid)\n"
	"  if rpm == 0 or rpd == 0 then return to_mid end\n"
	"  local wait = 0\n"
	"  if rpd > 0 and e.day == today and e.day_count >= rpd then wait = to_mid end\n"
	"  if rpm < 0 then return wait end\n"
	"  local covers = e.ring_cap >= rpm and e.ring_cap > 0\n"
	"  if covers and e.ring_len >= rpm then\n"
	/* The rpm-th newest must have left the window; after the clock was
	 * set back, times up to a window ahead count as now, further ahead as
	 * gone (store_gdbm.c says why). */
	"    local t = ring_at(e, e.ring_len - rpm)\n"
	"    if t > now then\n"
	"      if t > now + WINDOW then t = now - WINDOW else t = now end\n"
	"    end\n"
	"    if t + WINDOW - now > wait then wait = t + WINDOW - now end\n"
	"  end\n"
	"  if (not covers or not ring_complete(e, now))\n"
	"     and bucket_sum(e, now, BUCKETS) >= rpm then\n"
	"    local now_s = math.floor(now / 1000)\n"
	"    local oldest = now_s\n"
	"    for _, b in pairs(buckets(e)) do\n"
	"      if b[2] > 0 and b[1] > now_s - BUCKETS and b[1] < oldest then oldest = b[1] end\n"
	"    end\n"
	"    local w = (oldest + BUCKETS) * 1000 - now\n"
	"    if w > wait then wait = w end\n"
	"  end\n"
	"  return wait\n"
	"end\n"
	"local function count_attempt(e, now, today)\n"
	"  local now_s = math.floor(now / 1000)\n"
	"  local idx = now_s % BUCKETS\n"
	"  if e.day ~= today then e.day, e.day_count = today, 0 end\n"
	"  local b = buckets(e)[idx]\n"
	"  if b == nil or b[1] ~= now_s then b = {now_s, 0}; e.b[idx] = b end\n"
	"  b[2] = b[2] + 1\n"
	"  redis.call('HSET', e.bk, idx, str(now_s) .. ':' .. str(b[2]))\n"
	"  e.day_count = e.day_count + 1\n"
	"  redis.call('HINCRBY', e.k, 'attempts', 1)\n"
	"  if e.ring_cap > 0 then\n"
	"    if now - e.ring_base >= REBASE or now < e.ring_base then\n"
	/* As store_gdbm.c's rebase: times ahead of now (the clock was set
	 * back) become now, times older than the new base are gone. */
	"      local nb = now - WINDOW\n"
	"      local ts = redis.call('LRANGE', e.rk, 0, -1)\n"
	"      if #ts > 0 then\n"
	"        local out = {}\n"
	"        for i, t in ipairs(ts) do\n"
	"          local x = math.min(tonumber(t) or 0, now)\n"
	"          if x <= nb then x = nb end\n"
	"          out[i] = str(x)\n"
	"        end\n"
	"        redis.call('DEL', e.rk)\n"
	"        redis.call('RPUSH', e.rk, unpack(out))\n"
	"      end\n"
	"      e.ring_base = nb\n"
	"    end\n"
	"    redis.call('RPUSH', e.rk, str(now))\n"
	"    if e.ring_len < e.ring_cap then e.ring_len = e.ring_len + 1\n"
	"    else redis.call('LPOP', e.rk) end\n"
	"  end\n"
	"  redis.call('HSET', e.k, 'day', str(e.day), 'day_count', str(e.day_count),\n"
	"             'ring_cap', str(e.ring_cap), 'ring_base', str(e.ring_base),\n"
	"             'ring_since', str(e.ring_since))\n"
	"  redis.call('SADD', P .. 'ids', e.id)\n"
	"end\n"
	"local function add_tokens(k, f, add)\n"
	"  if add == '0' then return end\n"
	"  if redis.call('HINCRBY', k, f, add) >= 1e18 then\n"
	"    local v = redis.call('HGET', k, f)\n"
	"    if #v > #MAX_TOKENS or (#v == #MAX_TOKENS and v > MAX_TOKENS) then\n"
	"      redis.call('HSET', k, f, MAX_TOKENS)\n"
	"    end\n"
	"  end\n"
	"end\n"
	"if op == 'reserve' then\n"
	/* ARGV: now, today, ms to midnight, the room the pick saw ("" to just
	 * look), the pick (-1 none), the deadline of a pick in Redis's time,
	 * n, then id, rpm, rpd of each candidate. Answers {0, k} counted on k,
	 * {1, ms} all limited, {2, ms} all cooling, {3, room, time} the room
	 * now (differs from the one seen, or none was), {4} too late. */
	"  local now, today, to_mid = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])\n"
	"  local seen, k, deadline = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])\n"
	"  local n = tonumber(ARGV[9])\n"
	"  local t = redis.call('TIME')\n"
	"  local rnow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"  if k >= 0 and rnow > deadline then return {4} end\n"
	"  local room, es = {}, {}\n"
	"  local have, min_wait, min_cool = 0, -1, -1\n"
	"  for i = 0, n - 1 do\n"
	"    local e = ent(ARGV[10 + 3 * i])\n"
	"    local rpm, rpd = tonumber(ARGV[11 + 3 * i]), tonumber(ARGV[12 + 3 * i])\n"
	"    es[i] = e\n"
	"    room[i + 1] = '0'\n"
	"    if e.cooldown_until > now then\n"
	"      local w = e.cooldown_until - now\n"
	"      if min_cool < 0 or w < min_cool then min_cool = w end\n"
	"    else\n"
	"      local w = wait_ms(e, rpm, rpd, now, today, to_mid)\n"
	"      if w > 0 then\n"
	"        if min_wait < 0 or w < min_wait then min_wait = w end\n"
	"      else\n"
	"        room[i + 1] = '1'\n"
	"        have = have + 1\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"  if have == 0 then\n"
	"    if min_wait >= 0 then\n"
	"      if min_cool >= 0 and min_cool < min_wait then min_wait = min_cool end\n"
	"      return {1, min_wait}\n"
	"    end\n"
	"    return {2, min_cool}\n"
	"  end\n"
	"  room = table.concat(room)\n"
	"  if k < 0 or k >= n or room ~= seen then return {3, room, rnow} end\n"
	"  if string.sub(room, k + 1, k + 1) ~= '1' then\n"
	"    return redis.error_reply('no endpoint picked')\n"
	"  end\n"
	"  fit_ring(es[k], tonumber(ARGV[11 + 3 * k]), now)\n"
	"  count_attempt(es[k], now, today)\n"
	"  return {0, k}\n"
	"elseif op == 'record' then\n"
	/* ARGV: now, id, success, served, has_usage, prompt, completion, total
	 * (clamped to [0, 2^60] by the caller), cooldown failures, seconds;
	 * the metrics (below), then [19] today. */
	"  local now, id = tonumber(ARGV[3]), ARGV[4]\n"
	"  local k = P .. 'ep:' .. id\n"
	"  if ARGV[5] == '1' then\n"
	"    redis.call('HSET', k, 'fail_run', '0', 'cooldown_until', '0')\n"
	"  else\n"
	"    local run = redis.call('HINCRBY', k, 'fail_run', 1)\n"
	"    local cdf, cds = tonumber(ARGV[11]), tonumber(ARGV[12])\n"
	"    if cdf > 0 and run >= cdf and cds > 0 then\n"
	"      redis.call('HSET', k, 'cooldown_until', str(math.min(now + cds * 1000, FAR)))\n"
	"    end\n"
	"  end\n"
	"  if ARGV[6] == '1' then\n"
	"    redis.call('HINCRBY', k, 'requests', 1)\n"
	"    redis.call('HSET', k, 'last_used', ARGV[3])\n"
	"  end\n"
	"  if ARGV[7] == '1' then\n"
	"    add_tokens(k, 'prompt', ARGV[8])\n"
	"    add_tokens(k, 'completion', ARGV[9])\n"
	"    add_tokens(k, 'total', ARGV[10])\n"
	/* The day's tokens, as store_gdbm.c: a new local day starts them at 0. */
	"    if redis.call('HGET', k, 'tok_day') ~= ARGV[19] then\n"
	"      redis.call('HSET', k, 'tok_day', ARGV[19], 'day_prompt', '0',\n"
	"                 'day_completion', '0', 'day_total', '0')\n"
	"    end\n"
	"    add_tokens(k, 'day_prompt', ARGV[8])\n"
	"    add_tokens(k, 'day_completion', ARGV[9])\n"
	"    add_tokens(k, 'day_total', ARGV[10])\n"
	"  end\n"
	/* The metrics: ARGV[13] the answer's class (0 none, 1 to 5), [14]
	 * "1" for a retry, then latency and time to first byte, each as its
	 * bucket ("" none, 0 to 11, 12 beyond the last) and ms. */
	"  redis.call('HINCRBY', k, 'ans' .. ARGV[13], 1)\n"
	"  if ARGV[14] == '1' then redis.call('HINCRBY', k, 'retries', 1) end\n"
	"  for _, h in ipairs({{'lat', 15}, {'ttfb', 17}}) do\n"
	"    local b = ARGV[h[2]]\n"
	"    if b ~= '' then\n"
	"      if b ~= '12' then redis.call('HINCRBY', k, h[1] .. b, 1) end\n"
	"      redis.call('HINCRBY', k, h[1] .. '_count', 1)\n"
	"      redis.call('HINCRBY', k, h[1] .. '_sum', ARGV[h[2] + 1])\n"
	"    end\n"
	"  end\n"
	"  redis.call('SADD', P .. 'ids', id)\n"
	"  return 1\n"
	"elseif op == 'count' then\n"
	/* ARGV: the refusal's number. */
	"  redis.call('HINCRBY', P .. 'gw', 'rej' .. ARGV[3], 1)\n"
	"  return 1\n"
	"elseif op == 'rejects' then\n"
	/* ARGV: how many refusal counters to answer. */
	"  local f = {}\n"
	"  for i = 0, tonumber(ARGV[3]) - 1 do f[i + 1] = 'rej' .. i end\n"
	"  local v = redis.call('HMGET', P .. 'gw', unpack(f))\n"
	"  for i = 1, #v do v[i] = v[i] or '0' end\n"
	"  return v\n"
	"elseif op == 'read' then\n"
	"  local MFIELDS = {'attempts', 'retries'}\n"
	"  for j = 0, 5 do MFIELDS[#MFIELDS + 1] = 'ans' .. j end\n"
	"  for _, h in ipairs({'lat', 'ttfb'}) do\n"
	"    for j = 0, 11 do MFIELDS[#MFIELDS + 1] = h .. j end\n"
	"    MFIELDS[#MFIELDS + 1] = h .. '_count'\n"
	"    MFIELDS[#MFIELDS + 1] = h .. '_sum'\n"
	"  end\n"
	/* ARGV: now, today, ms to midnight, n, then id, rpm, rpd. Answers per
	 * endpoint {rpm used, rpd used, failures in a row, cooldown until,
	 * prompt, completion, total, requests, last used, ms until room}. */
	"  local now, today, to_mid = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])\n"
	"  local n, out = tonumber(ARGV[6]), {}\n"
	"  for i = 0, n - 1 do\n"
	"    local e = ent(ARGV[7 + 3 * i])\n"
	"    local rpm, rpd = tonumber(ARGV[8 + 3 * i]), tonumber(ARGV[9 + 3 * i])\n"
	"    local v = redis.call('HMGET', e.k, 'prompt', 'completion', 'total', 'requests',\n"
	"                         'last_used')\n"
	"    local cu, used = 0, 0\n"
	"    if e.cooldown_until > now then cu = e.cooldown_until end\n"
	"    if e.day == today then used = e.day_count end\n"
	"    local o = {rpm_used(e, now), used, e.fail_run, cu, v[1] or '0', v[2] or '0',\n"
	"               v[3] or '0', v[4] or '0', v[5] or '0',\n"
	"               wait_ms(e, rpm, rpd, now, today, to_mid)}\n"
	/* Then the metrics: attempts, retries, ans0..5, lat0..11, lat_count,
	 * lat_sum, the same of ttfb (MFIELDS, built once). */
	"    local m = redis.call('HMGET', e.k, unpack(MFIELDS))\n"
	"    for j = 1, #MFIELDS do o[10 + j] = m[j] or '0' end\n"
	/* Last the day's prompt, completion, total: 0 when of an earlier day. */
	"    local d = redis.call('HMGET', e.k, 'tok_day', 'day_prompt', 'day_completion',\n"
	"                         'day_total')\n"
	"    local td = tonumber(d[1]) == today\n"
	"    for j = 2, 4 do o[#o + 1] = td and (d[j] or '0') or '0' end\n"
	"    out[i + 1] = o\n"
	"  end\n"
	"  return out\n"
	"elseif op == 'reset' then\n"
	/* ARGV: "1" for every endpoint, or "0" and an id. */
	"  local ids = {ARGV[4]}\n"
	"  if ARGV[3] == '1' then ids = redis.call('SMEMBERS', P .. 'ids') end\n"
	"  for _, id in ipairs(ids) do\n"
	"    local k = P .. 'ep:' .. id\n"
	"    if redis.call('EXISTS', k) == 1 then\n"
	"      redis.call('HSET', k, 'prompt', '0', 'completion', '0', 'total', '0',\n"
	"                 'requests', '0', 'last_used', '0')\n"
	"    end\n"
	"  end\n"
	"  return 1\n"
	"elseif op == 'check' then\n"
	"  local f = redis.call('HGET', P .. 'meta', 'format')\n"
	"  if f and f ~= '1' then\n"
	"    return redis.error_reply('keys of another layout (' .. f .. ') under this prefix')\n"
	"  end\n"
	"  redis.call('HSET', P .. 'meta', 'format', '1')\n"
	"  return 1\n"
	"end\n"
	"return redis.error_reply('unknown operation ' .. tostring(op))\n";

/* How many times a reservation looks again when the room changed between
 * the look and the count (another client took the last slot meanwhile). */
#define STORE_REDIS_PICK_TRIES 8
/* Token totals saturate here, as in store_gdbm.c. */
#define STORE_REDIS_MAX_TOKENS (INT64_C(1) << 60)

struct store_redis {
	struct store base; /* first: the handle store.c passes around */
	struct store_redis_addr a;
	char *prefix;
	long timeout_ms;
	bool readonly;
	redisContext *c; /* NULL until connected, and after a failure */
	char sha[41];    /* SHA1 of the script once loaded; "" before */
};

/* The arguments of one EVALSHA: slots 0 to 4 are the command, the script,
 * "0" keys, the prefix and the operation; numbers are written into num. */
struct store_redis_args {
	int n, cap;
	bool full; /* an argument beyond cap was dropped: a bug, refused */
	const char **v;
	size_t *len;
	char (*num)[24];
};

#define STORE_REDIS_HEAD 5

static void
store_redis_set_err(struct store_redis *st, char *err, size_t errlen, const char *why)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s", st->a.label, why);
}

static int
store_redis_args_init(struct store_redis_args *a, int cap, const struct store_redis *st,
		      const char *op)
{
	memset(a, 0, sizeof(*a));
	a->v = calloc((size_t)cap, sizeof(*a->v));
	a->len = calloc((size_t)cap, sizeof(*a->len));
	a->num = calloc((size_t)cap, sizeof(*a->num));
	if (a->v == NULL || a->len == NULL || a->num == NULL)
		return -1;
	a->cap = cap;
	a->n = STORE_REDIS_HEAD;
	a->v[2] = "0";
	a->len[2] = 1;
	a->v[3] = st->prefix;
	a->len[3] = strlen(st->prefix);
	a->v[4] = op;
	a->len[4] = strlen(op);
	return 0;
}

static void
store_redis_args_free(struct store_redis_args *a)
{
	free(a->v);
	free(a->len);
	free(a->num);
	memset(a, 0, sizeof(*a));
}

/* Sets slot i (appending when i is the next one) to s. */
static void
store_redis_arg_str(struct store_redis_args *a, int i, const char *s, size_t len)
{
	if (i < 0 || i >= a->cap) {
		a->full = true;
		return;
	}
	a->v[i] = s;
	a->len[i] = len;
	if (i >= a->n)
		a->n = i + 1;
}

static void
store_redis_arg_int(struct store_redis_args *a, int i, long long x)
{
	if (i < 0 || i >= a->cap) {
		a->full = true;
		return;
	}
	int l = snprintf(a->num[i], sizeof(a->num[i]), "%lld", x);
	store_redis_arg_str(a, i, a->num[i], l > 0 ? (size_t)l : 0);
}

static void
store_redis_arg_add_str(struct store_redis_args *a, const char *s)
{
	store_redis_arg_str(a, a->n, s, strlen(s));
}

static void
store_redis_arg_add_int(struct store_redis_args *a, long long x)
{
	store_redis_arg_int(a, a->n, x);
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

/* Runs the script with a's arguments (EVALSHA, or EVAL when the server has
 * forgotten the script). A connection that was up before this call and
 * fails at once without a timeout (Redis restarted, or closed it while
 * idle) is made anew and the call sent once more. Returns the reply, or
 * NULL with err set. */
static redisReply *
store_redis_eval(struct store_redis *st, struct store_redis_args *a, char *err, size_t errlen)
{
	if (a->full) {
		store_redis_set_err(st, err, errlen, "too many arguments");
		return NULL;
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		bool reused = st->c != NULL, timeout;
		redisReply *r;

		if (store_redis_connect(st, err, errlen) != 0)
			return NULL;
		a->v[0] = "EVALSHA";
		a->len[0] = 7;
		a->v[1] = st->sha;
		a->len[1] = 40;
		errno = 0;
		r = redisCommandArgv(st->c, a->n, a->v, a->len);
		if (r == NULL) {
			timeout = store_redis_io_failed(st, errno, err, errlen);
			if (reused && !timeout)
				continue;
			return NULL;
		}
		if (r->type == REDIS_REPLY_ERROR && r->str != NULL &&
		    strncmp(r->str, "NOSCRIPT", 8) == 0) {
			freeReplyObject(r);
			a->v[0] = "EVAL";
			a->len[0] = 4;
			a->v[1] = store_redis_script;
			a->len[1] = sizeof(store_redis_script) - 1;
			return store_redis_command(st, a->n, a->v, a->len, &timeout, err, errlen);
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

static long
store_redis_ceil_s(long long ms)
{
	long long s = (ms + 999) / 1000;
	return s < 1 ? 1 : (long)s;
}

/* The script's answer to a reservation: 0 done (res set), 1 look again
 * (room and *deadline set), -1 error. */
static int
store_redis_reserve_answer(struct store_redis *st, const redisReply *r, size_t n, size_t k,
			   bool *room, long long *deadline, struct store_reservation *res,
			   char *err, size_t errlen)
{
	long long code, v;

	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    !store_redis_ll(r->element[0], &code))
		goto bad;
	switch (code) {
	case 0:
		if (r->elements < 2 || !store_redis_ll(r->element[1], &v) || v < 0 ||
		    (size_t)v != k)
			goto bad;
		res->verdict = STORE_RESERVED;
		res->chosen = k;
		return 0;
	case 1:
	case 2:
		if (r->elements < 2 || !store_redis_ll(r->element[1], &v))
			goto bad;
		res->verdict = code == 1 ? STORE_LIMITED : STORE_COOLING;
		res->retry_after_s = store_redis_ceil_s(v);
		return 0;
	case 3:
		if (r->elements < 3 || r->element[1]->type != REDIS_REPLY_STRING ||
		    r->element[1]->len != n || !store_redis_ll(r->element[2], &v))
			goto bad;
		for (size_t i = 0; i < n; i++)
			room[i] = r->element[1]->str[i] == '1';
		*deadline = v + st->timeout_ms;
		return 1;
	case 4:
		/* The pick came back later than the timeout after the look
		 * (Redis stalled in between): nothing was counted. */
		store_redis_set_err(st, err, errlen, "answer later than server.storeTimeoutMs");
		return -1;
	default:
		break;
	}
bad:
	store_redis_set_err(st, err, errlen, "unexpected answer to a reservation");
	return -1;
}

/* The reservation takes two round trips: a look at the room of every
 * candidate, the pick (in the responder: the weighted random choice of
 * route.c), then the count, which the script makes only when the room is
 * still what the pick saw and otherwise answers with the room now, for
 * another pick. The check and the count are thus one atomic step on the
 * server, and the pick sees what a GDBM step would show it. The count
 * carries a deadline in Redis's own time: a count that reaches a Redis
 * stalled for longer than the timeout (which the responder has answered
 * 503 already) is refused, so it cannot use up a limit for nothing. */
static int
store_redis_reserve(struct store *sb, const struct store_endpoint *eps, size_t n, int64_t now_ms,
		    store_pick_fn pick, void *pick_ctx, struct store_reservation *res, char *err,
		    size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct store_redis_args a;
	bool *room = NULL;
	char *seen = NULL;
	long long deadline = 0;
	size_t k = 0;
	int rc = -1;

	memset(res, 0, sizeof(*res));
	if (n == 0) {
		res->verdict = STORE_LIMITED;
		res->retry_after_s = 1;
		return 0;
	}
	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (n > 100000 ||
	    store_redis_args_init(&a, STORE_REDIS_HEAD + 7 + 3 * (int)n, st, "reserve") != 0 ||
	    (room = calloc(n, sizeof(*room))) == NULL || (seen = calloc(n + 1, 1)) == NULL) {
		store_redis_set_err(st, err, errlen, "out of memory");
		goto out;
	}
	store_redis_arg_add_int(&a, now_ms);
	store_redis_arg_add_int(&a, clock_local_day(now_ms));
	store_redis_arg_add_int(&a, clock_ms_to_midnight(now_ms));
	store_redis_arg_add_str(&a, ""); /* 8: the room the pick saw */
	store_redis_arg_add_int(&a, -1); /* 9: the pick */
	store_redis_arg_add_int(&a, 0);  /* 10: its deadline */
	store_redis_arg_add_int(&a, (long long)n);
	for (size_t i = 0; i < n; i++) {
		store_redis_arg_add_str(&a, eps[i].id);
		store_redis_arg_add_int(&a, eps[i].rpm);
		store_redis_arg_add_int(&a, eps[i].rpd);
	}
	for (int tries = 0; tries <= STORE_REDIS_PICK_TRIES; tries++) {
		redisReply *r = store_redis_eval(st, &a, err, errlen);
		if (r == NULL)
			goto out;
		int v = store_redis_reserve_answer(st, r, n, k, room, &deadline, res, err, errlen);
		freeReplyObject(r);
		if (v <= 0) {
			rc = v;
			goto out;
		}
		k = pick(pick_ctx, room, n);
		if (k >= n || !room[k]) {
			store_redis_set_err(st, err, errlen, "no endpoint picked");
			goto out;
		}
		for (size_t i = 0; i < n; i++)
			seen[i] = room[i] ? '1' : '0';
		store_redis_arg_str(&a, STORE_REDIS_HEAD + 3, seen, n);
		store_redis_arg_int(&a, STORE_REDIS_HEAD + 4, (long long)k);
		store_redis_arg_int(&a, STORE_REDIS_HEAD + 5, deadline);
	}
	store_redis_set_err(st, err, errlen, "the candidates' room keeps changing");
out:
	store_redis_args_free(&a);
	free(room);
	free(seen);
	return rc;
}

/* Token counts as the script adds them: within [0, 2^60]. */
static long long
store_redis_tokens(long long v)
{
	if (v <= 0)
		return 0;
	return v > STORE_REDIS_MAX_TOKENS ? STORE_REDIS_MAX_TOKENS : v;
}

/* A histogram's two arguments: the bucket of ms and ms, "" and 0 for none. */
static void
store_redis_arg_hist(struct store_redis_args *a, int64_t ms)
{
	if (ms < 0) {
		store_redis_arg_add_str(a, "");
		store_redis_arg_add_int(a, 0);
		return;
	}
	store_redis_arg_add_int(a, (long long)store_hist_index(ms));
	store_redis_arg_add_int(a, ms);
}

static int
store_redis_record(struct store *sb, const char *id, const struct store_outcome *o,
		   const struct store_cooldown *cd, int64_t now_ms, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct store_redis_args a;
	redisReply *r;
	int rc = -1;

	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (store_redis_args_init(&a, STORE_REDIS_HEAD + 17, st, "record") != 0) {
		store_redis_set_err(st, err, errlen, "out of memory");
		goto out;
	}
	store_redis_arg_add_int(&a, now_ms);
	store_redis_arg_add_str(&a, id);
	store_redis_arg_add_int(&a, o->success);
	store_redis_arg_add_int(&a, o->served);
	store_redis_arg_add_int(&a, o->has_usage);
	store_redis_arg_add_int(&a, store_redis_tokens(o->prompt_tokens));
	store_redis_arg_add_int(&a, store_redis_tokens(o->completion_tokens));
	store_redis_arg_add_int(&a, store_redis_tokens(o->total_tokens));
	store_redis_arg_add_int(&a, cd->failures);
	store_redis_arg_add_int(&a, cd->seconds);
	store_redis_arg_add_int(&a, (unsigned)o->code_class < STORE_CLASS_N ? o->code_class : 0);
	store_redis_arg_add_int(&a, o->retry);
	store_redis_arg_hist(&a, o->latency_ms);
	store_redis_arg_hist(&a, o->ttfb_ms);
	/* For the day's tokens: Redis knows no TZ. */
	store_redis_arg_add_int(&a, clock_local_day(now_ms));
	r = store_redis_eval(st, &a, err, errlen);
	if (r != NULL) {
		rc = 0;
		freeReplyObject(r);
	}
out:
	store_redis_args_free(&a);
	return rc;
}

/* One endpoint's answer of the read script into u. */
#define STORE_REDIS_READ_N (10 + 2 + STORE_CLASS_N + 2 * (STORE_HIST_N + 2) + 3)

static void
store_redis_hist(struct store_hist *h, const long long *v)
{
	for (size_t i = 0; i < STORE_HIST_N; i++)
		h->bucket[i] = v[i];
	h->count = v[STORE_HIST_N];
	h->sum_ms = v[STORE_HIST_N + 1];
}

static bool
store_redis_usage(const redisReply *r, struct store_usage *u)
{
	long long v[STORE_REDIS_READ_N];

	if (r->type != REDIS_REPLY_ARRAY || r->elements != STORE_REDIS_READ_N)
		return false;
	for (size_t i = 0; i < STORE_REDIS_READ_N; i++)
		if (!store_redis_ll(r->element[i], &v[i]))
			return false;
	memset(u, 0, sizeof(*u));
	u->rpm_used = (long)v[0];
	u->rpd_used = (long)v[1];
	u->fail_run = (long)v[2];
	u->cooldown_until = v[3];
	u->prompt_tokens = v[4];
	u->completion_tokens = v[5];
	u->total_tokens = v[6];
	u->requests = v[7];
	u->last_used = v[8];
	u->free_in_s = v[9] > 0 ? store_redis_ceil_s(v[9]) : 0;
	u->attempts = v[10];
	u->retries = v[11];
	for (size_t i = 0; i < STORE_CLASS_N; i++)
		u->answers[i] = v[12 + i];
	store_redis_hist(&u->latency, v + 12 + STORE_CLASS_N);
	store_redis_hist(&u->ttfb, v + 12 + STORE_CLASS_N + STORE_HIST_N + 2);
	u->day_prompt_tokens = v[STORE_REDIS_READ_N - 3];
	u->day_completion_tokens = v[STORE_REDIS_READ_N - 2];
	u->day_total_tokens = v[STORE_REDIS_READ_N - 1];
	return true;
}

static int
store_redis_read(struct store *sb, const struct store_endpoint *eps, size_t n, int64_t now_ms,
		 struct store_usage *out, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct store_redis_args a;
	redisReply *r = NULL;
	int rc = -1;

	if (n == 0)
		return 0;
	if (n > 100000 ||
	    store_redis_args_init(&a, STORE_REDIS_HEAD + 4 + 3 * (int)n, st, "read") != 0) {
		store_redis_set_err(st, err, errlen, "out of memory");
		goto out;
	}
	store_redis_arg_add_int(&a, now_ms);
	store_redis_arg_add_int(&a, clock_local_day(now_ms));
	store_redis_arg_add_int(&a, clock_ms_to_midnight(now_ms));
	store_redis_arg_add_int(&a, (long long)n);
	for (size_t i = 0; i < n; i++) {
		store_redis_arg_add_str(&a, eps[i].id);
		store_redis_arg_add_int(&a, eps[i].rpm);
		store_redis_arg_add_int(&a, eps[i].rpd);
	}
	r = store_redis_eval(st, &a, err, errlen);
	if (r == NULL)
		goto out;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
		store_redis_set_err(st, err, errlen, "unexpected answer to a read");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!store_redis_usage(r->element[i], &out[i])) {
			store_redis_set_err(st, err, errlen, "unexpected answer to a read");
			goto out;
		}
	}
	rc = 0;
out:
	if (r != NULL)
		freeReplyObject(r);
	store_redis_args_free(&a);
	return rc;
}

/* Runs an operation whose answer is only success or failure. */
static int
store_redis_simple(struct store_redis *st, const char *op, const char *arg1, const char *arg2,
		   char *err, size_t errlen)
{
	struct store_redis_args a;
	redisReply *r;
	int rc = -1;

	if (!store_redis_writable(st, err, errlen))
		return -1;
	if (store_redis_args_init(&a, STORE_REDIS_HEAD + 2, st, op) != 0) {
		store_redis_set_err(st, err, errlen, "out of memory");
		goto out;
	}
	if (arg1 != NULL)
		store_redis_arg_add_str(&a, arg1);
	if (arg2 != NULL)
		store_redis_arg_add_str(&a, arg2);
	r = store_redis_eval(st, &a, err, errlen);
	if (r != NULL) {
		rc = 0;
		freeReplyObject(r);
	}
out:
	store_redis_args_free(&a);
	return rc;
}

static int
store_redis_count(struct store *sb, enum store_reject reason, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	char n[24];

	snprintf(n, sizeof(n), "%d", (int)reason);
	return store_redis_simple(st, "count", n, NULL, err, errlen);
}

static int
store_redis_read_rejects(struct store *sb, long long *out, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;
	struct store_redis_args a;
	redisReply *r = NULL;
	int rc = -1;

	if (store_redis_args_init(&a, STORE_REDIS_HEAD + 1, st, "rejects") != 0) {
		store_redis_set_err(st, err, errlen, "out of memory");
		goto out;
	}
	store_redis_arg_add_int(&a, STORE_REJECT_N);
	r = store_redis_eval(st, &a, err, errlen);
	if (r == NULL)
		goto out;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != STORE_REJECT_N) {
		store_redis_set_err(st, err, errlen, "unexpected answer to a read");
		goto out;
	}
	for (size_t i = 0; i < STORE_REJECT_N; i++) {
		if (!store_redis_ll(r->element[i], &out[i])) {
			store_redis_set_err(st, err, errlen, "unexpected answer to a read");
			goto out;
		}
	}
	rc = 0;
out:
	if (r != NULL)
		freeReplyObject(r);
	store_redis_args_free(&a);
	return rc;
}

static int
store_redis_reset_tokens(struct store *sb, const char *id, char *err, size_t errlen)
{
	struct store_redis *st = (struct store_redis *)sb;

	return store_redis_simple(st, "reset", id == NULL ? "1" : "0", id == NULL ? "" : id, err,
				  errlen);
}

static int
store_redis_check(struct store *sb, char *err, size_t errlen)
{
	return store_redis_simple((struct store_redis *)sb, "check", NULL, NULL, err, errlen);
}

static void
store_redis_close(struct store *sb)
{
	struct store_redis *st = (struct store_redis *)sb;

	if (st == NULL)
		return;
	store_redis_disconnect(st);
	free(st->prefix);
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
	.count = store_redis_count,
	.read_rejects = store_redis_read_rejects,
	.reset_tokens = store_redis_reset_tokens,
	.check = store_redis_check,
	.sync = NULL, /* Redis keeps its data itself (its persistence settings) */
};

struct store *
store_redis_open(const char *address, const struct store_options *o, char *err, size_t errlen)
{
	struct store_redis *st = calloc(1, sizeof(*st));
	char why[200];

	if (st == NULL) {
		store_redis_why(err, errlen, "state: out of memory");
		return NULL;
	}
	st->base.ops = &store_redis_ops;
	if (store_redis_parse(address, &st->a, why, sizeof(why)) != 0) {
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

/* A Redis server's address, read and checked: see redis_addr.h. */
#include "redis_addr.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

bool
redis_addr_is_redis(const char *address)
{
	return address != NULL && (strncasecmp(address, "redis://", 8) == 0 ||
				   strncasecmp(address, "rediss://", 9) == 0 ||
				   strncasecmp(address, "unix://", 7) == 0);
}

#define REDIS_ADDR_DEFAULT_PORT 6379
#define REDIS_ADDR_MAX_DB 1000000

static void
redis_addr_why(char *why, size_t whylen, const char *what)
{
	if (why != NULL && whylen > 0)
		snprintf(why, whylen, "%s", what);
}

static int
redis_addr_hexval(char c)
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
redis_addr_decode(const char *src, size_t n, char *dst, size_t dstlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)src[i];
		if (c == '%') {
			if (i + 2 >= n)
				return -1;
			int h = redis_addr_hexval(src[i + 1]), l = redis_addr_hexval(src[i + 2]);
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
redis_addr_number(const char *s, size_t n, long min, long max, long *out)
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
redis_addr_userinfo(const char *s, size_t n, struct redis_addr *a, char *why, size_t whylen)
{
	const char *colon = memchr(s, ':', n);

	if (colon == NULL) {
		redis_addr_why(why, whylen,
			       "expected :PASSWORD@ or USER:PASSWORD@ before the host");
		return -1;
	}
	if (redis_addr_decode(s, (size_t)(colon - s), a->user, sizeof(a->user)) != 0 ||
	    redis_addr_decode(colon + 1, n - (size_t)(colon - s) - 1, a->pass, sizeof(a->pass)) !=
		    0) {
		redis_addr_why(
			why, whylen,
			"user or password too long, or a bad %-escape or control character in it");
		return -1;
	}
	if (a->pass[0] == '\0') {
		redis_addr_why(why, whylen, "empty password");
		return -1;
	}
	return 0;
}

static bool
redis_addr_host_char(char c, bool v6)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '.' || c == '-' || c == '_')
		return true;
	return v6 && (c == ':' || c == '%');
}

/* "host[:port]" or "[v6]:port" of s[0..n). */
static int
redis_addr_hostport(const char *s, size_t n, struct redis_addr *a, char *why, size_t whylen)
{
	const char *host = s, *port = NULL;
	size_t hlen = n;
	bool v6 = n > 0 && s[0] == '[';

	if (v6) {
		const char *end = memchr(s, ']', n);
		if (end == NULL) {
			redis_addr_why(why, whylen, "no ']' after an IPv6 address");
			return -1;
		}
		host = s + 1;
		hlen = (size_t)(end - host);
		if (end + 1 < s + n) {
			if (end[1] != ':') {
				redis_addr_why(why, whylen, "expected ':PORT' after ']'");
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
		redis_addr_why(why, whylen, "expected a host name or address");
		return -1;
	}
	for (size_t i = 0; i < hlen; i++) {
		if (!redis_addr_host_char(host[i], v6)) {
			redis_addr_why(why, whylen, "a character a host name cannot hold");
			return -1;
		}
	}
	memcpy(a->host, host, hlen);
	a->host[hlen] = '\0';
	a->port = REDIS_ADDR_DEFAULT_PORT;
	if (port != NULL) {
		long p;
		if (redis_addr_number(port, (size_t)(s + n - port), 1, 65535, &p) != 0) {
			redis_addr_why(why, whylen, "expected a port from 1 to 65535");
			return -1;
		}
		a->port = (int)p;
	}
	return 0;
}

int
redis_addr_parse(const char *address, struct redis_addr *a, char *why, size_t whylen)
{
	const char *p, *end, *at, *slash;
	bool is_unix;

	memset(a, 0, sizeof(*a));
	if (strncasecmp(address, "rediss://", 9) == 0) {
		redis_addr_why(
			why, whylen,
			"TLS (rediss://) is not supported: reach Redis over a private network, "
			"a Unix socket or a TLS tunnel");
		return -1;
	}
	is_unix = strncasecmp(address, "unix://", 7) == 0;
	if (!is_unix && strncasecmp(address, "redis://", 8) != 0) {
		redis_addr_why(why, whylen, "expected redis://HOST:PORT or unix:///PATH");
		return -1;
	}
	p = address + (is_unix ? 7 : 8);
	end = p + strlen(p);
	for (const char *q = p; q < end; q++) {
		if ((unsigned char)*q <= 0x20 || *q == 0x7f) {
			redis_addr_why(why, whylen, "a space or control character in the address");
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
	if (at != NULL && redis_addr_userinfo(p, (size_t)(at - p), a, why, whylen) != 0)
		return -1;
	const char *auth = at != NULL ? at + 1 : p;
	if (is_unix) {
		const char *query = strchr(slash, '?');
		size_t plen = (size_t)((query != NULL ? query : end) - slash);
		if (auth != slash) {
			redis_addr_why(
				why, whylen,
				"a Unix socket has a path, no host: unix:///path/redis.sock");
			return -1;
		}
		if (plen < 2 || plen >= sizeof(a->sock)) {
			redis_addr_why(why, whylen,
				       "expected the socket's path: unix:///path/redis.sock");
			return -1;
		}
		memcpy(a->sock, slash, plen);
		a->sock[plen] = '\0';
		if (query != NULL && (strncmp(query, "?db=", 4) != 0 ||
				      redis_addr_number(query + 4, strlen(query + 4), 0,
							REDIS_ADDR_MAX_DB, &a->db) != 0)) {
			redis_addr_why(why, whylen, "expected nothing after the path but ?db=N");
			return -1;
		}
		if (a->db != 0)
			snprintf(a->label, sizeof(a->label), "redis unix:%s?db=%ld", a->sock,
				 a->db);
		else
			snprintf(a->label, sizeof(a->label), "redis unix:%s", a->sock);
		return 0;
	}
	if (redis_addr_hostport(auth, (size_t)(slash - auth), a, why, whylen) != 0)
		return -1;
	if (slash < end && slash + 1 < end &&
	    redis_addr_number(slash + 1, (size_t)(end - slash - 1), 0, REDIS_ADDR_MAX_DB, &a->db) !=
		    0) {
		redis_addr_why(why, whylen, "expected a database number after the '/'");
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
redis_addr_check(const char *address, char *why, size_t whylen)
{
	struct redis_addr a;

	if (redis_addr_parse(address, &a, why, whylen) != 0)
		return -1;
#ifndef HAVE_HIREDIS
	redis_addr_why(why, whylen,
		       "this build has no Redis support: build it with ./configure --with-redis "
		       "(Debian package libhiredis-dev)");
	return -1;
#else
	return 0;
#endif
}

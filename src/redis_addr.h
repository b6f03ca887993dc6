/* redis_addr: a Redis server's address, read and checked.
 *
 * A leaf: the config checks server.store with it, the Redis store reads
 * where to connect from it. Nothing here connects. */
#ifndef API_TOGETHER_REDIS_ADDR_H
#define API_TOGETHER_REDIS_ADDR_H

#include <stdbool.h>
#include <stddef.h>

/* The Redis store's defaults (server.storePrefix, server.storeTimeoutMs). */
#define REDIS_DEFAULT_PREFIX "api-together:"
#define REDIS_DEFAULT_TIMEOUT_MS 250

/* True when address names a Redis server (its scheme is redis://, rediss://
 * or unix://, in any case) rather than a GDBM file; says nothing of the rest. */
bool redis_addr_is_redis(const char *address);

/* Where a Redis is, as redis_addr_parse reads it from an address. */
struct redis_addr {
	char host[256]; /* TCP; "" with a socket */
	int port;
	char sock[108]; /* a Unix socket's path; "" over TCP */
	char user[128]; /* "" : AUTH with the password alone */
	char pass[256]; /* "" : no AUTH */
	long db;
	char label[300]; /* "redis HOST:PORT[/DB]", for messages: never the password */
};

/* Reads address into a: "redis://[[user]:password@]host[:port][/db]" or
 * "unix://[[user]:password@]/path.sock[?db=N]". Returns 0, or -1 with the
 * reason in why (which never holds the password); a may then hold part of
 * the address, password included: the caller clears it. */
int redis_addr_parse(const char *address, struct redis_addr *a, char *why, size_t whylen);

/* Checks address as redis_addr_parse does, and that this build can use
 * it (it has Redis support). Returns 0, or -1 with the reason in why. */
int redis_addr_check(const char *address, char *why, size_t whylen);

#endif

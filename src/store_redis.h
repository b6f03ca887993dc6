/* store_redis: the store in a Redis server shared by every host
 * (store_redis.c says how). For store.c only: everything else opens a store
 * through store.h. */
#ifndef API_TOGETHER_STORE_REDIS_H
#define API_TOGETHER_STORE_REDIS_H

#include <stddef.h>

#include "store_impl.h"

/* Opens the Redis store at address; o is complete (prefix and timeout
 * set). It connects on its first call, not here. Returns the handle, or
 * NULL with the reason in err (an address that does not parse, a build
 * without Redis support); the reason never holds the password. */
struct store *store_redis_open(const char *address, const struct store_options *o, char *err,
			       size_t errlen);

#endif

/* worker: what one FastCGI worker thread owns and reuses between requests,
 * and the store it opens from the config in force. */
#ifndef API_TOGETHER_WORKER_H
#define API_TOGETHER_WORKER_H

#include <curl/curl.h>
#include <stdint.h>

#include "config.h"
#include "curl_shelf.h"
#include "store.h"

struct worker {
	/* The libcurl handles of the process, shared by its threads: a handle
	 * (and the upstream connections it keeps open) per request in flight,
	 * not per thread. */
	struct curl_shelf *curls;
	struct store *store; /* NULL until it opens; retried on each request */
	uint64_t rng;        /* random state of the weighted pick */
	char store_err[256]; /* why the store could not be opened */
	/* Called when a request turns out to be long (a stream, a slow
	 * upstream): its process then starts another thread if none waits
	 * for the next request. NULL: nothing to do. */
	void (*long_request)(void *pool);
	/* Called with +1 as the thread starts to wait on what is outside the
	 * process (an upstream's answer, the client's body) and -1 as that
	 * ends: its process starts a thread for a waiting connection only
	 * while the others wait so. NULL: nothing to do. */
	void (*waiting)(void *pool, int delta);
	void *pool;
};

/* Counts a wait of w's thread on what is outside the process (waiting). */
static inline void
worker_waits(struct worker *w, int delta)
{
	if (w->waiting != NULL)
		w->waiting(w->pool, delta);
}

/* The store of w for cfg, opened (or opened again when its address or
 * options changed) as needed; NULL with the reason logged and kept in
 * w->store_err. */
struct store *worker_store(struct worker *w, const struct config *cfg);

/* The state file in force: API_TOGETHER_STATE, else server.stateFile, else
 * the default under the local state directory. */
const char *worker_state_path(const struct config *cfg);

/* The store in force, as an address for store_open: API_TOGETHER_STORE,
 * else server.store; "gdbm" (the default) is the state file of
 * worker_state_path. NULL when API_TOGETHER_STORE is neither "gdbm" nor a
 * Redis address, with the reason in *why (when why is not NULL). */
const char *worker_store_address(const struct config *cfg, const char **why);

/* The options of the store in force (server.storePrefix, storeTimeoutMs). */
void worker_store_options(const struct config *cfg, struct store_options *o);

/* "state file" or "Redis store": what address is, for log lines. */
const char *worker_store_what(const char *address);

/* Fills eps[i] from cfg->apis[i] for every endpoint. */
void worker_store_endpoints(const struct config *cfg, struct store_endpoint *eps);

/* Every key's usage and each endpoint's (doc/behaviour.md, Key pools):
 * keys[first[i] + k] is key k of cfg->apis[i], first[cfg->n_apis] their
 * count; apis[i] the sum over its keys. */
struct worker_usage {
	struct store_usage *apis;
	struct store_usage *keys;
	size_t *first;
};

/* Reads *out from st at now. Returns 0 (free it with worker_usage_free),
 * or -1 with err set (out then holds nothing). */
int worker_usage_read(struct store *st, const struct config *cfg, int64_t now,
		      struct worker_usage *out, char *err, size_t errlen);
void worker_usage_free(struct worker_usage *u);

/* The usage of each model of a's modelLimits on each of a's keys
 * (doc/behaviour.md, Limits and state, rule 27): (*out)[m * a->n_keys + k]
 * is model_limits[m] on key k, read at now under the model's limits.
 * Returns 0 with *out malloc'd for the caller to free (NULL when a has no
 * modelLimits), or -1 with err set (then *out is NULL). */
int worker_model_usage_read(struct store *st, const struct config_api *a, int64_t now,
			    struct store_usage **out, char *err, size_t errlen);

#endif

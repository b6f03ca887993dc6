/* worker: what one FastCGI worker thread owns and reuses between requests. */
#ifndef API_TOGETHER_WORKER_H
#define API_TOGETHER_WORKER_H

#include <curl/curl.h>
#include <stdint.h>

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
	void *pool;
};

#endif

/* worker: what one FastCGI worker thread owns and reuses between requests. */
#ifndef API_TOGETHER_WORKER_H
#define API_TOGETHER_WORKER_H

#include <curl/curl.h>
#include <stdint.h>

#include "store.h"

struct worker {
	CURL *curl;          /* kept between requests so connections stay open */
	struct store *store; /* NULL until it opens; retried on each request */
	uint64_t rng;        /* random state of the weighted pick */
	char store_err[256]; /* why the store could not be opened */
};

#endif

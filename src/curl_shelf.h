/* curl_shelf: the libcurl handles of a process, shared by its worker
 * threads. A handle keeps its upstream connections open between requests;
 * shared, a process keeps a handle (and its connections) per request in
 * flight at the busiest moment, not one per thread it ever started, and
 * the one put back last, whose connections are the warmest, goes out first. */
#ifndef API_TOGETHER_CURL_SHELF_H
#define API_TOGETHER_CURL_SHELF_H

#include <curl/curl.h>
#include <pthread.h>
#include <stddef.h>

#include "dynbuf.h"

/* The most handles shelved: one per worker thread at most (each puts back
 * the one it took), and API_TOGETHER_THREADS is at most 4096. */
#define CURL_SHELF_MAX 4096

struct curl_shelf {
	pthread_mutex_t mu;
	struct dynbuf handles; /* of CURL *, the one put back last at the end */
};

#define CURL_SHELF_INIT                                                                            \
	{                                                                                          \
		PTHREAD_MUTEX_INITIALIZER, DYNBUF_INIT(CURL_SHELF_MAX * sizeof(CURL *))            \
	}

/* A handle from the shelf, or a new one; NULL when libcurl cannot make one. */
CURL *curl_shelf_take(struct curl_shelf *s);

/* Puts a handle back for the next request; when it cannot be kept (out of
 * memory) it is cleaned up instead. */
void curl_shelf_put(struct curl_shelf *s, CURL *h);

/* Cleans up the handle put back longest ago, if any: a worker thread that
 * ends takes a handle's worth of connections with it, so that the shelf
 * holds no more handles than the process has threads. */
void curl_shelf_drop_coldest(struct curl_shelf *s);

#endif

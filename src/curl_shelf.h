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

struct curl_shelf {
	pthread_mutex_t mu;
	CURL **h;
	size_t n, cap;
};

#define CURL_SHELF_INIT                                                                            \
	{                                                                                          \
		PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0                                              \
	}

/* A handle from the shelf, or a new one; NULL when libcurl cannot make one. */
CURL *curl_shelf_take(struct curl_shelf *s);

/* Puts a handle back for the next request. */
void curl_shelf_put(struct curl_shelf *s, CURL *h);

#endif

/* The libcurl handles of a process: see curl_shelf.h. */
#include "curl_shelf.h"

#include <stdbool.h>
#include <string.h>

/* Takes the newest handle off the shelf (the one put back last), or the
 * oldest; NULL when the shelf is empty. */
static CURL *
curl_shelf_remove(struct curl_shelf *s, bool newest)
{
	CURL *h = NULL;

	pthread_mutex_lock(&s->mu);
	size_t n = dynbuf_len(&s->handles) / sizeof(h);
	if (n > 0) {
		CURL **v = dynbuf_ptr(&s->handles);
		h = newest ? v[n - 1] : v[0];
		if (!newest)
			memmove(v, v + 1, (n - 1) * sizeof(h));
		dynbuf_truncate(&s->handles, (n - 1) * sizeof(h));
	}
	pthread_mutex_unlock(&s->mu);
	return h;
}

CURL *
curl_shelf_take(struct curl_shelf *s)
{
	CURL *h = curl_shelf_remove(s, true);

	return h != NULL ? h : curl_easy_init();
}

void
curl_shelf_put(struct curl_shelf *s, CURL *h)
{
	int rc;

	pthread_mutex_lock(&s->mu);
	rc = dynbuf_add(&s->handles, &h, sizeof(h));
	/* A refused add keeps the handles shelved, and the next may pass. */
	if (rc != 0)
		dynbuf_clearerr(&s->handles);
	pthread_mutex_unlock(&s->mu);
	if (rc != 0)
		curl_easy_cleanup(h); /* one connection fewer kept */
}

void
curl_shelf_drop_coldest(struct curl_shelf *s)
{
	CURL *h = curl_shelf_remove(s, false);

	if (h != NULL)
		curl_easy_cleanup(h);
}

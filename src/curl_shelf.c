/* The libcurl handles of a process: see curl_shelf.h. */
#include "curl_shelf.h"

#include <stdlib.h>

CURL *
curl_shelf_take(struct curl_shelf *s)
{
	CURL *h = NULL;

	pthread_mutex_lock(&s->mu);
	if (s->n > 0)
		h = s->h[--s->n];
	pthread_mutex_unlock(&s->mu);
	return h != NULL ? h : curl_easy_init();
}

void
curl_shelf_put(struct curl_shelf *s, CURL *h)
{
	pthread_mutex_lock(&s->mu);
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 16;
		CURL **nh = realloc(s->h, ncap * sizeof(*nh));
		if (nh == NULL) {
			pthread_mutex_unlock(&s->mu);
			curl_easy_cleanup(h); /* one connection fewer kept */
			return;
		}
		s->h = nh;
		s->cap = ncap;
	}
	s->h[s->n++] = h;
	pthread_mutex_unlock(&s->mu);
}

/* dynbuf: see dynbuf.h. */
#include "dynbuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The least first allocation: most buffers (a header line, a small answer)
 * fit. */
#define DYNBUF_FIRST 256

void
dynbuf_init(struct dynbuf *d, size_t cap)
{
	d->p = NULL;
	d->len = 0;
	d->alloc = 0;
	d->cap = cap;
	d->error = 0;
}

void
dynbuf_free(struct dynbuf *d)
{
	free(d->p);
	dynbuf_init(d, d->cap);
}

void
dynbuf_reset(struct dynbuf *d)
{
	d->len = 0;
	d->error = 0;
	if (d->p != NULL)
		d->p[0] = '\0';
}

static int
dynbuf_fail(struct dynbuf *d, int err)
{
	if (d->error == 0)
		d->error = err;
	errno = d->error;
	return -1;
}

int
dynbuf_reserve(struct dynbuf *d, size_t n)
{
	if (d->error != 0)
		return dynbuf_fail(d, d->error);
	if (n > d->cap || d->len > d->cap - n)
		return dynbuf_fail(d, E2BIG);
	size_t need = d->len + n + 1; /* the NUL */
	if (need <= d->alloc)
		return 0;
	size_t nalloc = d->alloc;
	if (nalloc == 0) {
		/* The first block fits what is asked for (as curl's does): a
		 * reader that knows its length (a body's Content-Length) makes
		 * one allocation of that size. */
		nalloc = need > DYNBUF_FIRST ? need : DYNBUF_FIRST;
	}
	while (nalloc < need) {
		if (nalloc > SIZE_MAX / 2) {
			nalloc = need;
			break;
		}
		nalloc *= 2;
	}
	/* Never more than the cap needs: a capped buffer stays capped in memory. */
	if (d->cap < SIZE_MAX && nalloc > d->cap + 1)
		nalloc = d->cap + 1 > need ? d->cap + 1 : need;
	char *np = realloc(d->p, nalloc);
	if (np == NULL)
		return dynbuf_fail(d, ENOMEM);
	if (d->p == NULL)
		np[0] = '\0';
	d->p = np;
	d->alloc = nalloc;
	return 0;
}

int
dynbuf_add(struct dynbuf *d, const void *p, size_t n)
{
	if (dynbuf_reserve(d, n) < 0)
		return -1;
	if (n > 0)
		memcpy(d->p + d->len, p, n);
	dynbuf_commit(d, n);
	return 0;
}

int
dynbuf_adds(struct dynbuf *d, const char *s)
{
	return dynbuf_add(d, s, strlen(s));
}

int
dynbuf_vprintf(struct dynbuf *d, const char *fmt, va_list ap)
{
	va_list again;
	va_copy(again, ap);
	char small[256];
	int n = vsnprintf(small, sizeof small, fmt, ap);
	if (n < 0) {
		va_end(again);
		return dynbuf_fail(d, EINVAL);
	}
	if ((size_t)n < sizeof small) {
		va_end(again);
		return dynbuf_add(d, small, (size_t)n);
	}
	if (dynbuf_reserve(d, (size_t)n) < 0) {
		va_end(again);
		return -1;
	}
	vsnprintf(d->p + d->len, (size_t)n + 1, fmt, again);
	va_end(again);
	dynbuf_commit(d, (size_t)n);
	return 0;
}

int
dynbuf_printf(struct dynbuf *d, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = dynbuf_vprintf(d, fmt, ap);
	va_end(ap);
	return rc;
}

void *
dynbuf_addz(struct dynbuf *d, size_t n)
{
	if (dynbuf_reserve(d, n) < 0)
		return NULL;
	char *at = d->p + d->len;
	memset(at, 0, n);
	dynbuf_commit(d, n);
	return at;
}

char *
dynbuf_end(struct dynbuf *d)
{
	return d->p == NULL ? NULL : d->p + d->len;
}

size_t
dynbuf_room(const struct dynbuf *d)
{
	return d->alloc == 0 ? 0 : d->alloc - d->len - 1;
}

void
dynbuf_commit(struct dynbuf *d, size_t n)
{
	if (d->p == NULL)
		return;
	d->len += n;
	d->p[d->len] = '\0';
}

void
dynbuf_truncate(struct dynbuf *d, size_t len)
{
	if (d->p == NULL || len >= d->len)
		return;
	d->len = len;
	d->p[len] = '\0';
}

void *
dynbuf_ptr(const struct dynbuf *d)
{
	return d->p;
}

const char *
dynbuf_str(const struct dynbuf *d)
{
	return d->p == NULL ? "" : d->p;
}

size_t
dynbuf_len(const struct dynbuf *d)
{
	return d->len;
}

bool
dynbuf_failed(const struct dynbuf *d)
{
	return d->error != 0;
}

void
dynbuf_clearerr(struct dynbuf *d)
{
	d->error = 0;
}

char *
dynbuf_take(struct dynbuf *d, size_t *len)
{
	char *p = d->error == 0 ? d->p : NULL;
	if (len != NULL)
		*len = p == NULL ? 0 : d->len;
	if (p == NULL)
		free(d->p);
	dynbuf_init(d, d->cap);
	return p;
}

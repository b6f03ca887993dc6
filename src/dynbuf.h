/* dynbuf: the one growable buffer, with a cap (in the spirit of curl's
 * lib/dynbuf.h). Every place that grows memory as it goes uses it: text
 * being written (an answer, the metrics page), bytes being read (a body, a
 * header line) and arrays of structs (header lists, endpoint entries), which
 * are bytes too: realloc's memory is aligned for any type.
 *
 * The bytes are kept NUL-terminated past dynbuf_len, so text can be read
 * with dynbuf_str at any time. A failed add leaves the buffer as it was and
 * marks it failed: every later add fails too, so a writer may check once, at
 * the end, with dynbuf_failed. */
#ifndef API_TOGETHER_DYNBUF_H
#define API_TOGETHER_DYNBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct dynbuf {
	char *p;      /* NULL until the first add */
	size_t len;   /* bytes held, not counting the terminating NUL */
	size_t alloc; /* bytes allocated */
	size_t cap;   /* len may never exceed it */
	int error;    /* 0, or the errno of the first failed add: ENOMEM, E2BIG */
};

/* A buffer whose length may not exceed cap bytes; allocates nothing. */
void dynbuf_init(struct dynbuf *d, size_t cap);

/* The same as an initialiser, for a buffer in static storage. */
#define DYNBUF_INIT(cap_)                                                                          \
	{                                                                                          \
		.p = NULL, .len = 0, .alloc = 0, .cap = (cap_), .error = 0                         \
	}

/* Frees the bytes and makes d empty again (same cap, error cleared). d may
 * be one that was only initialised. */
void dynbuf_free(struct dynbuf *d);

/* Empties d, keeping its memory for reuse; clears the error. */
void dynbuf_reset(struct dynbuf *d);

/* Appends n bytes of p. Returns 0, or -1 with errno (and d->error) set to
 * E2BIG when len would pass the cap, ENOMEM when memory runs out; on error
 * nothing is appended. */
int dynbuf_add(struct dynbuf *d, const void *p, size_t n);

/* Appends the string s (without its NUL). As dynbuf_add. */
int dynbuf_adds(struct dynbuf *d, const char *s);

/* Appends printf-formatted text. As dynbuf_add. */
int dynbuf_printf(struct dynbuf *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int dynbuf_vprintf(struct dynbuf *d, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* Appends n zero bytes and returns where they start, or NULL as dynbuf_add
 * fails. The pointer holds until the next add. */
void *dynbuf_addz(struct dynbuf *d, size_t n);

/* Makes room for n more bytes without adding them (so that a reader can
 * fill dynbuf_end directly, then dynbuf_commit). The first allocation is
 * the size first asked for (at least a small block), later ones double: a
 * caller that knows how much is coming reserves it first, and gets one
 * allocation. As dynbuf_add. */
int dynbuf_reserve(struct dynbuf *d, size_t n);

/* The free bytes after the content (at least what dynbuf_reserve made) and
 * the count of them now filled in by a caller. */
char *dynbuf_end(struct dynbuf *d);
size_t dynbuf_room(const struct dynbuf *d);
void dynbuf_commit(struct dynbuf *d, size_t n);

/* Cuts the content to len bytes (len <= dynbuf_len). */
void dynbuf_truncate(struct dynbuf *d, size_t len);

/* The content: dynbuf_ptr may be NULL while empty; dynbuf_str is always a
 * NUL-terminated string ("" while empty). Both hold until the next add. */
void *dynbuf_ptr(const struct dynbuf *d);
const char *dynbuf_str(const struct dynbuf *d);
size_t dynbuf_len(const struct dynbuf *d);

/* True once an add has failed (see dynbuf_add). */
bool dynbuf_failed(const struct dynbuf *d);

/* Forgets a failed add, keeping the content (as clearerr(3) does for a
 * stream): for a buffer that outlives its writers, such as a list kept for
 * reuse, where one failed add must not fail the next. */
void dynbuf_clearerr(struct dynbuf *d);

/* Hands the content to the caller, who frees it with free(); d is left
 * empty. Returns NULL when nothing was ever added (or after a failed add,
 * when the buffer is freed instead). *len, when not NULL, gets the length. */
char *dynbuf_take(struct dynbuf *d, size_t *len);

#endif

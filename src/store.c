/* The store of store.h: picks the implementation by the address and passes
 * each call on to it (store_impl.h). */
#include "store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "redis_addr.h"
#include "store_gdbm.h"
#include "store_impl.h"
#include "store_redis.h"

/* Refusals counted by this process and not yet folded into the store by
 * store_sync. Process-wide on purpose: every worker thread adds to them
 * without a lock, and the main thread's handle folds them in (doc/behaviour.md,
 * Limits and state). */
static atomic_llong store_pending[STORE_REJECT_N];

bool
store_is_redis(const char *address)
{
	return redis_addr_is_redis(address);
}

int
store_redis_address_check(const char *address, char *why, size_t whylen)
{
	return redis_addr_check(address, why, whylen);
}

/* o with its defaults filled in. */
static struct store_options
store_options_of(const struct store_options *o)
{
	struct store_options d = {STORE_DEFAULT_PREFIX, STORE_DEFAULT_TIMEOUT_MS, false};

	if (o != NULL) {
		if (o->prefix != NULL && o->prefix[0] != '\0')
			d.prefix = o->prefix;
		if (o->timeout_ms > 0)
			d.timeout_ms = o->timeout_ms;
		d.readonly = o->readonly;
	}
	return d;
}

struct store *
store_open_with(const char *address, const struct store_options *o, char *err, size_t errlen)
{
	struct store_options d = store_options_of(o);
	struct store *st;

	if (address == NULL || address[0] == '\0') {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "state: no store address");
		return NULL;
	}
	if (store_is_redis(address))
		st = store_redis_open(address, &d, err, errlen);
	else
		st = store_gdbm_open(address, d.readonly, err, errlen);
	if (st == NULL)
		return NULL;
	st->address = strdup(address);
	st->prefix = strdup(d.prefix);
	st->timeout_ms = d.timeout_ms;
	st->readonly = d.readonly;
	if (st->address == NULL || st->prefix == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "state: out of memory");
		store_close(st);
		return NULL;
	}
	return st;
}

struct store *
store_open(const char *address, char *err, size_t errlen)
{
	return store_open_with(address, NULL, err, errlen);
}

struct store *
store_open_readonly(const char *address, char *err, size_t errlen)
{
	struct store_options o = {NULL, 0, true};

	return store_open_with(address, &o, err, errlen);
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	/* The implementation frees its handle, base included. */
	char *address = st->address, *prefix = st->prefix;
	st->ops->close(st);
	free(address);
	free(prefix);
}

const char *
store_path(const struct store *st)
{
	return st->address;
}

bool
store_matches(const struct store *st, const char *address, const struct store_options *o)
{
	struct store_options d = store_options_of(o);

	if (st == NULL || address == NULL || strcmp(st->address, address) != 0 ||
	    st->readonly != d.readonly)
		return false;
	/* A GDBM file does not care for the Redis options. */
	if (!store_is_redis(address))
		return true;
	return strcmp(st->prefix, d.prefix) == 0 && st->timeout_ms == d.timeout_ms;
}

const char *
store_what(const struct store *st)
{
	return st->ops->what;
}

int
store_reserve(struct store *st, const struct store_endpoint *eps, size_t n, int64_t now_ms,
	      store_pick_fn pick, void *pick_ctx, struct store_reservation *res, char *err,
	      size_t errlen)
{
	return st->ops->reserve(st, eps, n, NULL, now_ms, pick, pick_ctx, res, err, errlen);
}

int
store_reserve_for(struct store *st, const struct store_endpoint *eps, size_t n,
		  const struct store_endpoint *client, int64_t now_ms, store_pick_fn pick,
		  void *pick_ctx, struct store_reservation *res, char *err, size_t errlen)
{
	return st->ops->reserve(st, eps, n, client, now_ms, pick, pick_ctx, res, err, errlen);
}

int
store_record(struct store *st, const char *id, const struct store_outcome *o,
	     const struct store_cooldown *cd, int64_t now_ms, char *err, size_t errlen)
{
	return st->ops->record(st, id, o, cd, now_ms, err, errlen);
}

int
store_read(struct store *st, const struct store_endpoint *eps, size_t n, int64_t now_ms,
	   struct store_usage *out, char *err, size_t errlen)
{
	return st->ops->read(st, eps, n, now_ms, out, err, errlen);
}

int
store_count(struct store *st, enum store_reject reason, char *err, size_t errlen)
{
	(void)st;
	if ((unsigned)reason >= STORE_REJECT_N) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "state: no such refusal");
		return -1;
	}
	atomic_fetch_add_explicit(&store_pending[reason], 1, memory_order_relaxed);
	return 0;
}

int
store_read_rejects(struct store *st, long long *out, char *err, size_t errlen)
{
	return st->ops->read_rejects(st, out, err, errlen);
}

int
store_reset_tokens(struct store *st, const char *id, char *err, size_t errlen)
{
	return st->ops->reset_tokens(st, id, err, errlen);
}

/* Far above any use: some 100,000 clients. */
#define STORE_CLIENTS_CAP ((size_t)8 << 20)

void
store_clients_free(struct store_clients *out)
{
	for (size_t i = 0; i < out->n; i++) {
		free(out->c[i].client);
		usage_book_free(&out->c[i].book);
	}
	dynbuf_free(&out->list);
	memset(out, 0, sizeof(*out));
}

int
store_clients_add(struct store_clients *out, const char *client, size_t client_len, const char *p,
		  size_t len, long today, char *err, size_t errlen)
{
	struct store_client_usage *c = dynbuf_addz(&out->list, sizeof(*c));

	if (c == NULL)
		goto oom;
	out->c = dynbuf_ptr(&out->list);
	out->n++;
	usage_book_init(&c->book);
	c->client = strndup(client, client_len);
	if (c->client == NULL)
		goto oom;
	if (p == NULL || usage_book_decode(&c->book, p, len) != 0) {
		usage_book_free(&c->book);
		usage_book_init(&c->book);
		c->damaged = true;
		return 0;
	}
	usage_book_prune(&c->book, today);
	return 0;
oom:
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "state: out of memory");
	return -1;
}

static int
store_clients_cmp(const void *a, const void *b)
{
	const struct store_client_usage *x = a, *y = b;

	return strcmp(x->client, y->client);
}

int
store_read_clients(struct store *st, const char *client, int64_t now_ms, struct store_clients *out,
		   char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	dynbuf_init(&out->list, STORE_CLIENTS_CAP);
	if (st->ops->read_clients(st, client, now_ms, out, err, errlen) != 0)
		return -1;
	if (out->n > 1)
		qsort(out->c, out->n, sizeof(*out->c), store_clients_cmp);
	return 0;
}

int
store_admin(struct store *st, const char *id, enum store_admin action, int64_t now_ms, char *err,
	    size_t errlen)
{
	return st->ops->admin(st, id, action, now_ms, err, errlen);
}

int
store_check(struct store *st, char *err, size_t errlen)
{
	return st->ops->check(st, err, errlen);
}

int
store_sync(struct store *st, char *err, size_t errlen)
{
	long long add[STORE_REJECT_N];
	bool any = false;

	for (size_t k = 0; k < STORE_REJECT_N; k++) {
		add[k] = atomic_exchange_explicit(&store_pending[k], 0, memory_order_relaxed);
		any |= add[k] != 0;
	}
	if (any && st->ops->fold(st, add, err, errlen) != 0) {
		for (size_t k = 0; k < STORE_REJECT_N; k++)
			atomic_fetch_add_explicit(&store_pending[k], add[k], memory_order_relaxed);
		return -1;
	}
	return st->ops->sync != NULL ? st->ops->sync(st, err, errlen) : 0;
}

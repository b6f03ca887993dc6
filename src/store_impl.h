/* store_impl: the types a store implementation and the dispatch in store.c
 * share, and nothing else: store.c includes each backend's header for its
 * open function, the backends include only this. Everything beyond them
 * sees store.h alone and cannot tell which store runs.
 *
 * An implementation's handle starts with a struct store (its base), and its
 * functions are static but for its open function (store_gdbm.h,
 * store_redis.h), which fills in its ops table. */
#ifndef API_TOGETHER_STORE_IMPL_H
#define API_TOGETHER_STORE_IMPL_H

#include "store.h"

/* The calls of store.h, with the same contracts. */
struct store_ops {
	const char *what; /* for log lines: "state file", "Redis store" */
	void (*close)(struct store *st);
	int (*reserve)(struct store *st, const struct store_endpoint *eps, size_t n,
		       const struct store_endpoint *client, int64_t now_ms, store_pick_fn pick,
		       void *pick_ctx, struct store_reservation *res, char *err, size_t errlen);
	int (*record)(struct store *st, const char *id, const struct store_outcome *o,
		      const struct store_cooldown *cd, int64_t now_ms, char *err, size_t errlen);
	int (*read)(struct store *st, const struct store_endpoint *eps, size_t n, int64_t now_ms,
		    struct store_usage *out, char *err, size_t errlen);
	/* Adds add[k] to refusal count k (store_sync folds in this process's
	 * store_count calls). On error, add[k] holds what was not added. */
	int (*fold)(struct store *st, long long *add, char *err, size_t errlen);
	int (*read_rejects)(struct store *st, long long *out, char *err, size_t errlen);
	int (*reset_tokens)(struct store *st, const char *id, char *err, size_t errlen);
	int (*admin)(struct store *st, const char *id, enum store_admin action, int64_t now_ms,
		     char *err, size_t errlen);
	int (*read_clients)(struct store *st, const char *client, int64_t now_ms,
			    struct store_clients *out, char *err, size_t errlen);
	int (*check)(struct store *st, char *err, size_t errlen); /* takes no exclusive lock */
	int (*sync)(struct store *st, char *err, size_t errlen);  /* NULL: nothing to do */
};

/* For read_clients: adds client (client_len bytes) with the book of the
 * bytes p[0..len) to out, its days before the 30 before today dropped;
 * when they are not a book (or p is NULL: the value was too short to hold
 * one), with an empty book marked damaged. Returns 0, or -1 with err when
 * memory runs out. */
int store_clients_add(struct store_clients *out, const char *client, size_t client_len,
		      const char *p, size_t len, long today, char *err, size_t errlen);

struct store {
	const struct store_ops *ops;
	/* Set by store.c once the implementation opened: what it was opened
	 * on, for store_path and store_matches. */
	char *address;
	char *prefix;
	long timeout_ms;
	bool readonly;
};

#endif

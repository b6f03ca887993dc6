/* plan: the attempt loop of one forwarded request as data: the models to
 * try (the one asked for, then its fallbacks), the candidate endpoints and
 * their keys of the model tried now, the tries made and what each came to,
 * and the one rule for what comes next (plan_next; doc/behaviour.md,
 * Forwarding: the attempt loop, and Key pools). Pure: no libcurl, no store,
 * no clock; proxy.c does what the plan says and tells it what came of it. */
#ifndef API_TOGETHER_PLAN_H
#define API_TOGETHER_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

enum plan_step {
	PLAN_RESERVE,  /* reserve among plan_offer's candidates; then plan_reserved
			  or plan_store_failed */
	PLAN_FORWARD,  /* forward to cfg->apis[chosen]; then plan_tried */
	PLAN_FALLBACK, /* the model tried now has nothing more: plan_fallback moves
			  to the next of the chain */
	/* The end: what the client gets. */
	PLAN_DONE,          /* the last try's answer went to it, or it went away */
	PLAN_SEND_HELD,     /* nothing more to try: the last failed answer held */
	PLAN_UNREACHABLE,   /* nothing more to try, no answer held: 502 */
	PLAN_LOCAL_ERROR,   /* the gateway could not forward: 500, no other endpoint
			       would fare better */
	PLAN_STORE_ERROR,   /* the store failed before any try: 503 */
	PLAN_LIMITED,       /* before any try, every candidate of every model at its
			       RPM or RPD limit or cooling, one limited: 429 after
			       retry_after_s */
	PLAN_COOLING,       /* before any try, every candidate of every model
			       cooling down (none limited): 503 after retry_after_s */
	PLAN_CLIENT_LIMITED /* before any try, the client at its own limit: 429
			       after retry_after_s */
};

/* What one try came to. */
enum plan_result {
	PLAN_SENT,        /* an answer went to the client (perhaps cut short) */
	PLAN_HELD,        /* a failed answer, held back to send if nothing else is left */
	PLAN_NO_ANSWER,   /* no usable answer: refused, timed out, not HTTP */
	PLAN_CLIENT_GONE, /* the client went away */
	PLAN_LOCAL        /* the gateway's own failure (memory, a bad URL) */
};

struct plan_try {
	size_t model; /* index into the plan's models */
	size_t api;   /* index into cfg->apis */
	size_t key;   /* index into its keys */
	enum plan_result result;
	long status; /* the upstream's status, 0 when none came */
};

/* The (endpoint, key) candidates not tried yet for the model tried now, as
 * store_reserve and route_pick take them, in config order: the keys of one
 * endpoint are one group, each with the endpoint's weight and priority. */
struct plan_offer {
	struct store_endpoint *eps;
	double *weights;
	long *tiers;
	size_t *api;                /* index into cfg->apis of eps[i] */
	size_t *key;                /* index into its keys */
	struct store_model *models; /* eps[i].model points here when set */
	size_t n;
};

/* What happened last: the input of plan_next. */
enum plan_event {
	PLAN_EV_NONE,
	PLAN_EV_RESERVED,
	PLAN_EV_REFUSED,
	PLAN_EV_STORE_FAILED,
	PLAN_EV_TRIED
};

struct plan {
	const struct config *cfg;
	void *mem; /* the one block every array below is in */
	/* The chain: the model asked for, then its server.fallbacks, each only
	 * when an endpoint in service serves it; n_models 0 when none is. */
	const char **models;
	size_t n_models;
	size_t model;       /* the one tried now */
	bool has_fallbacks; /* the model asked for has server.fallbacks */
	size_t *api;        /* its candidates: indexes into cfg->apis, config order */
	size_t n;
	long max_tries;         /* server.maxRetries, over every model */
	struct plan_try *tries; /* each on another key of its model */
	size_t n_tries;
	struct plan_offer offer;
	enum plan_event last;
	size_t chosen;     /* with PLAN_EV_RESERVED: the cfg->apis index */
	size_t chosen_key; /* and its key's */
	/* The refusals so far, of every model: LIMITED when one was, the
	 * smallest wait and why that one is out (doc/behaviour.md, Limits and
	 * state, rule 8, over the models). */
	bool refused;
	bool client_limited; /* the client at its own limit: no model would do */
	enum store_verdict refusal;
	long retry_after_s;
	enum store_key_state reason;
	bool held; /* a try's failed answer is held */
	/* A 401 or 403 waits for a second opinion: 1 + the index of its try,
	 * 0 none. A second 401/403 puts the fault on the request. */
	size_t pending;
	bool request_fault;
	/* The request's token estimate (body.h), reserved on the keys of
	 * endpoints with a token limit; and, with PLAN_EV_RESERVED, what the
	 * reservation took, its time and day, to release it where it was. */
	long long estimate;
	long long at_estimate;
	int64_t at_ms;
	long at_day;
	/* The state of the model on the chosen key the reservation counted
	 * too (apis[].modelLimits, rule 27), or NULL: points into cfg. */
	const char *at_model_id;
};

/* Whether an answer of status to a try is charged to its key (429, 401,
 * 403: the next try may be another key of the same endpoint) rather than
 * to the endpoint (no answer, 5xx...: the next try is another endpoint). */
bool plan_key_level(long status);

/* The try whose 401/403 waits for a second opinion, when an answer of
 * status (0: none) to the next try settles it against that try's key
 * (anything but 401/403); NULL when there is none or it does not. */
const struct plan_try *plan_confirmed(const struct plan *p, long status);

/* The store's name of key k of cfg->apis[api] (its id with no keys). */
const char *plan_slot(const struct config *cfg, size_t api, size_t k);

/* Starts the plan of a request for model (NULL: any) under cfg: the chain
 * is model and its fallbacks (server.fallbacks), without those no endpoint
 * in service serves; the candidates are route_candidates' of the first; n
 * is 0 when none of the chain is served. cfg and model must outlive the
 * plan. Returns 0, or -1 when out of memory (the plan is then empty, and
 * plan_free may be called on it). */
int plan_init(struct plan *p, const struct config *cfg, const char *model);

/* As plan_init for a request of client (NULL: any): the chain leaves out
 * the models client may not use (doc/behaviour.md, HTTP: client and admin
 * keys), so a fallback never serves one. */
int plan_init_for(struct plan *p, const struct config *cfg, const char *model,
		  const struct config_client *client);

/* Frees what plan_init took; p may be zeroed or half-built. */
void plan_free(struct plan *p);

/* What comes next. Pure: reads p only. The rules: forward what was
 * reserved; an answer sent, a client gone or a local failure end the loop;
 * a 401/403 after a 401/403 is the request's fault: that answer is sent;
 * after a failed try (held or no answer) another candidate of the model is
 * reserved while tries < max_tries and one is left (after a key-level
 * answer any untried key, after another failure only keys of untried
 * endpoints); when the model has none left, or refused (no room), the
 * next model of the chain, while tries < max_tries; a store failure ends
 * the loop. At the end, after a try the failed answer held last is sent,
 * else 502; before any, the refusals' 429 or 503, else the store's 503. */
enum plan_step plan_next(const struct plan *p);

/* Moves to the next model of the chain (for PLAN_FALLBACK): its
 * candidates, none of them tried. */
void plan_fallback(struct plan *p);

/* The model tried now, as the request names it: the chain's (NULL: the
 * request has none). */
const char *plan_model(const struct plan *p);

/* The X-Api-Together-Model value of an answer from model (an index of the
 * chain: p->model, a try's): that model, when the model asked for has
 * fallbacks; else NULL (doc/behaviour.md, Forwarding: fallbacks). */
const char *plan_answer_model(const struct plan *p, size_t model);

/* Fills p->offer with the candidates still open (for PLAN_RESERVE). */
void plan_offer(struct plan *p);

/* Takes the reservation made on p->offer. */
void plan_reserved(struct plan *p, const struct store_reservation *res);

/* The store could not reserve. */
void plan_store_failed(struct plan *p);

/* The try on p->chosen came to result, with the upstream's status (0: none). */
void plan_tried(struct plan *p, enum plan_result result, long status);

#endif

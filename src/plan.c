#include "plan.h"

#include <stdlib.h>
#include <string.h>

#include "route.h"

/* An endpoint's keys: a config built without any (tests) has one. */
static size_t
plan_n_keys(const struct config_api *a)
{
	return a->n_keys > 0 ? a->n_keys : 1;
}

const char *
plan_slot(const struct config *cfg, size_t api, size_t k)
{
	const struct config_api *a = &cfg->apis[api];
	return a->n_keys > 0 ? a->keys[k].slot : a->id;
}

bool
plan_key_level(long status)
{
	return status == 401 || status == 403 || status == 429;
}

static bool
plan_auth(long status)
{
	return status == 401 || status == 403;
}

const struct plan_try *
plan_confirmed(const struct plan *p, long status)
{
	if (p->pending == 0 || plan_auth(status))
		return NULL;
	return &p->tries[p->pending - 1];
}

int
plan_init(struct plan *p, const struct config *cfg, const char *model)
{
	size_t max = 1;

	for (size_t i = 0; i < cfg->n_apis; i++)
		max += plan_n_keys(&cfg->apis[i]);

	memset(p, 0, sizeof(*p));
	p->cfg = cfg;
	p->max_tries = cfg->max_retries;
	p->api = calloc(max, sizeof(*p->api));
	p->tries = calloc(max, sizeof(*p->tries));
	p->offer.eps = calloc(max, sizeof(*p->offer.eps));
	p->offer.weights = calloc(max, sizeof(*p->offer.weights));
	p->offer.api = calloc(max, sizeof(*p->offer.api));
	p->offer.key = calloc(max, sizeof(*p->offer.key));
	if (p->api == NULL || p->tries == NULL || p->offer.eps == NULL ||
	    p->offer.weights == NULL || p->offer.api == NULL || p->offer.key == NULL)
		goto fail;
	p->n = route_candidates(cfg, model, p->api);
	return 0;
fail:
	plan_free(p);
	return -1;
}

void
plan_free(struct plan *p)
{
	free(p->api);
	free(p->tries);
	free(p->offer.eps);
	free(p->offer.weights);
	free(p->offer.api);
	free(p->offer.key);
	memset(p, 0, sizeof(*p));
}

/* Nothing more to try: the last failed answer held, else 502. */
static enum plan_step
plan_end(const struct plan *p)
{
	return p->held ? PLAN_SEND_HELD : PLAN_UNREACHABLE;
}

/* Whether key k of endpoint api is still open: neither tried, nor on an
 * endpoint a try failed on for the endpoint's own reasons. */
static bool
plan_open(const struct plan *p, size_t api, size_t k)
{
	for (size_t i = 0; i < p->n_tries; i++) {
		const struct plan_try *t = &p->tries[i];
		if (t->api != api)
			continue;
		if (t->key == k || !plan_key_level(t->status) || t->result != PLAN_HELD)
			return false;
	}
	return true;
}

static bool
plan_any_open(const struct plan *p)
{
	for (size_t i = 0; i < p->n; i++)
		for (size_t k = 0; k < plan_n_keys(&p->cfg->apis[p->api[i]]); k++)
			if (plan_open(p, p->api[i], k))
				return true;
	return false;
}

/* After the last try failed, or before the first: another candidate while
 * the tries allow and one is left. */
static enum plan_step
plan_after_failure(const struct plan *p)
{
	if ((long)p->n_tries < p->max_tries && plan_any_open(p))
		return PLAN_RESERVE;
	return plan_end(p);
}

enum plan_step
plan_next(const struct plan *p)
{
	switch (p->last) {
	case PLAN_EV_RESERVED:
		return PLAN_FORWARD;
	case PLAN_EV_REFUSED:
		/* After a try, what it left (an answer held) beats a refusal. */
		if (p->n_tries > 0)
			return plan_end(p);
		return p->refusal == STORE_LIMITED ? PLAN_LIMITED : PLAN_COOLING;
	case PLAN_EV_STORE_FAILED:
		if (p->n_tries > 0)
			return plan_end(p);
		return PLAN_STORE_ERROR;
	case PLAN_EV_TRIED:
		switch (p->tries[p->n_tries - 1].result) {
		case PLAN_SENT:
		case PLAN_CLIENT_GONE:
			return PLAN_DONE;
		case PLAN_LOCAL:
			return PLAN_LOCAL_ERROR;
		case PLAN_HELD:
		case PLAN_NO_ANSWER:
			break;
		}
		if (p->request_fault)
			return PLAN_SEND_HELD;
		return plan_after_failure(p);
	case PLAN_EV_NONE:
		break;
	}
	return plan_after_failure(p);
}

/* The tokens a request reserves on a: its estimate where a token limit
 * applies (doc/behaviour.md, Limits and state, rule 22). */
static long long
plan_estimate(const struct plan *p, const struct config_api *a)
{
	return a->tpm >= 0 || a->tpd >= 0 ? p->estimate : 0;
}

void
plan_offer(struct plan *p)
{
	size_t m = 0;

	for (size_t i = 0; i < p->n; i++) {
		const struct config_api *a = &p->cfg->apis[p->api[i]];
		size_t nk = plan_n_keys(a);
		for (size_t k = 0; k < nk; k++) {
			if (!plan_open(p, p->api[i], k))
				continue;
			p->offer.eps[m] = (struct store_endpoint){plan_slot(p->cfg, p->api[i], k),
								  a->rpm,
								  a->rpd,
								  nk > 1 ? i + 1 : 0,
								  a->tpm,
								  a->tpd,
								  plan_estimate(p, a)};
			p->offer.weights[m] = a->weight;
			p->offer.api[m] = p->api[i];
			p->offer.key[m++] = k;
		}
	}
	p->offer.n = m;
}

void
plan_reserved(struct plan *p, const struct store_reservation *res)
{
	if (res->verdict == STORE_RESERVED) {
		p->chosen = p->offer.api[res->chosen];
		p->chosen_key = p->offer.key[res->chosen];
		p->at_estimate = p->offer.eps[res->chosen].estimate;
		p->at_ms = res->at_ms;
		p->at_day = res->at_day;
		p->last = PLAN_EV_RESERVED;
		return;
	}
	p->refusal = res->verdict;
	p->retry_after_s = res->retry_after_s;
	p->reason = res->reason;
	p->last = PLAN_EV_REFUSED;
}

void
plan_store_failed(struct plan *p)
{
	p->last = PLAN_EV_STORE_FAILED;
}

void
plan_tried(struct plan *p, enum plan_result result, long status)
{
	p->tries[p->n_tries++] = (struct plan_try){p->chosen, p->chosen_key, result, status};
	if (result == PLAN_HELD)
		p->held = true;
	/* The second opinion: a 401/403 after one is the request's fault;
	 * any other answer settles the first against its key (proxy.c has
	 * charged it, from plan_confirmed, before this). */
	bool auth = result == PLAN_HELD && plan_auth(status);
	if (p->pending != 0)
		p->request_fault = auth;
	p->pending = auth && !p->request_fault ? p->n_tries : 0;
	p->last = PLAN_EV_TRIED;
}

#include "plan.h"

#include <stdlib.h>
#include <string.h>

#include "route.h"

int
plan_init(struct plan *p, const struct config *cfg, const char *model)
{
	size_t max = cfg->n_apis + 1;

	memset(p, 0, sizeof(*p));
	p->cfg = cfg;
	p->max_tries = cfg->max_retries;
	p->api = calloc(max, sizeof(*p->api));
	p->tries = calloc(max, sizeof(*p->tries));
	p->offer.eps = calloc(max, sizeof(*p->offer.eps));
	p->offer.weights = calloc(max, sizeof(*p->offer.weights));
	p->offer.api = calloc(max, sizeof(*p->offer.api));
	if (p->api == NULL || p->tries == NULL || p->offer.eps == NULL ||
	    p->offer.weights == NULL || p->offer.api == NULL)
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
	memset(p, 0, sizeof(*p));
}

/* Nothing more to try: the last failed answer held, else 502. */
static enum plan_step
plan_end(const struct plan *p)
{
	return p->held ? PLAN_SEND_HELD : PLAN_UNREACHABLE;
}

/* After the last try failed, or before the first: another candidate while
 * the tries allow and one is left (each try is on another candidate). */
static enum plan_step
plan_after_failure(const struct plan *p)
{
	if (p->n_tries < p->n && (long)p->n_tries < p->max_tries)
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
		return plan_after_failure(p);
	case PLAN_EV_NONE:
		break;
	}
	return plan_after_failure(p);
}

static bool
plan_was_tried(const struct plan *p, size_t api)
{
	for (size_t i = 0; i < p->n_tries; i++)
		if (p->tries[i].api == api)
			return true;
	return false;
}

void
plan_offer(struct plan *p)
{
	size_t m = 0;

	for (size_t i = 0; i < p->n; i++) {
		const struct config_api *a = &p->cfg->apis[p->api[i]];
		if (plan_was_tried(p, p->api[i]))
			continue;
		p->offer.eps[m] = (struct store_endpoint){a->id, a->rpm, a->rpd};
		p->offer.weights[m] = a->weight;
		p->offer.api[m++] = p->api[i];
	}
	p->offer.n = m;
}

void
plan_reserved(struct plan *p, const struct store_reservation *res)
{
	if (res->verdict == STORE_RESERVED) {
		p->chosen = p->offer.api[res->chosen];
		p->last = PLAN_EV_RESERVED;
		return;
	}
	p->refusal = res->verdict;
	p->retry_after_s = res->retry_after_s;
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
	p->tries[p->n_tries++] = (struct plan_try){p->chosen, result, status};
	if (result == PLAN_HELD)
		p->held = true;
	p->last = PLAN_EV_TRIED;
}

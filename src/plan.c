#include "plan.h"

#include <stddef.h>
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

/* The bytes of n items of size in the plan's block, rounded up so that the
 * next array starts aligned for any type. */
static size_t
plan_span(size_t n, size_t size)
{
	size_t a = _Alignof(max_align_t);

	return (n * size + a - 1) / a * a;
}

/* The next array of n items of size from the block, at *off. */
static void *
plan_carve(char *mem, size_t *off, size_t n, size_t size)
{
	void *at = mem + *off;

	*off += plan_span(n, size);
	return at;
}

int
plan_init(struct plan *p, const struct config *cfg, const char *model)
{
	return plan_init_for(p, cfg, model, NULL);
}

int
plan_init_for(struct plan *p, const struct config *cfg, const char *model,
	      const struct config_client *client)
{
	const struct config_fallback *fb = config_fallback(cfg, model);
	size_t keys = 1, n_fb = fb != NULL ? fb->n_to : 0, off = 0;

	for (size_t i = 0; i < cfg->n_apis; i++)
		keys += plan_n_keys(&cfg->apis[i]);
	/* Each try is on another key of its model. */
	size_t n_tries = keys * (1 + n_fb);

	memset(p, 0, sizeof(*p));
	p->cfg = cfg;
	p->max_tries = cfg->max_retries;
	p->has_fallbacks = n_fb > 0;
	/* One block for every array: a request's plan is one allocation. */
	p->mem = calloc(1, plan_span(1 + n_fb, sizeof(*p->models)) +
				   plan_span(keys, sizeof(*p->api)) +
				   plan_span(n_tries, sizeof(*p->tries)) +
				   plan_span(keys, sizeof(*p->offer.eps)) +
				   plan_span(keys, sizeof(*p->offer.weights)) +
				   plan_span(keys, sizeof(*p->offer.tiers)) +
				   plan_span(keys, sizeof(*p->offer.api)) +
				   plan_span(keys, sizeof(*p->offer.key)) +
				   plan_span(keys, sizeof(*p->offer.models)));
	if (p->mem == NULL)
		return -1;
	p->models = plan_carve(p->mem, &off, 1 + n_fb, sizeof(*p->models));
	p->api = plan_carve(p->mem, &off, keys, sizeof(*p->api));
	p->tries = plan_carve(p->mem, &off, n_tries, sizeof(*p->tries));
	p->offer.eps = plan_carve(p->mem, &off, keys, sizeof(*p->offer.eps));
	p->offer.weights = plan_carve(p->mem, &off, keys, sizeof(*p->offer.weights));
	p->offer.tiers = plan_carve(p->mem, &off, keys, sizeof(*p->offer.tiers));
	p->offer.api = plan_carve(p->mem, &off, keys, sizeof(*p->offer.api));
	p->offer.key = plan_carve(p->mem, &off, keys, sizeof(*p->offer.key));
	p->offer.models = plan_carve(p->mem, &off, keys, sizeof(*p->offer.models));
	/* The chain keeps the models some endpoint in service serves; the
	 * candidates are the first one's. Its names are the config's, the
	 * one asked for too: they go into X-Api-Together-Model. */
	for (size_t i = 0; i <= n_fb; i++) {
		const char *m = i == 0 ? (fb != NULL ? fb->model : model) : fb->to[i - 1];
		if (!config_client_allows(client, m))
			continue;
		if (p->n_models == 0) {
			p->n = route_candidates(cfg, m, p->api);
			if (p->n > 0)
				p->models[p->n_models++] = m;
		} else if (route_candidates(cfg, m, NULL) > 0) {
			p->models[p->n_models++] = m;
		}
	}
	return 0;
}

void
plan_free(struct plan *p)
{
	free(p->mem);
	memset(p, 0, sizeof(*p));
}

const char *
plan_model(const struct plan *p)
{
	return p->model < p->n_models ? p->models[p->model] : NULL;
}

const char *
plan_answer_model(const struct plan *p, size_t model)
{
	return p->has_fallbacks && model < p->n_models ? p->models[model] : NULL;
}

/* Nothing more to try: the last failed answer held, else 502. */
static enum plan_step
plan_end(const struct plan *p)
{
	return p->held ? PLAN_SEND_HELD : PLAN_UNREACHABLE;
}

/* Whether key k of endpoint api is still open for the model tried now:
 * neither tried for it, nor on an endpoint a try for it failed on for the
 * endpoint's own reasons. */
static bool
plan_open(const struct plan *p, size_t api, size_t k)
{
	for (size_t i = 0; i < p->n_tries; i++) {
		const struct plan_try *t = &p->tries[i];
		if (t->api != api || t->model != p->model)
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

/* Whether the tries allow another and the chain has a model after this. */
static bool
plan_can_fall_back(const struct plan *p)
{
	return (long)p->n_tries < p->max_tries && p->model + 1 < p->n_models;
}

/* After the last try failed, or before the first: another candidate of the
 * model while the tries allow and one is left, else the next model. */
static enum plan_step
plan_after_failure(const struct plan *p)
{
	if ((long)p->n_tries < p->max_tries && plan_any_open(p))
		return PLAN_RESERVE;
	if (plan_can_fall_back(p))
		return PLAN_FALLBACK;
	return plan_end(p);
}

enum plan_step
plan_next(const struct plan *p)
{
	switch (p->last) {
	case PLAN_EV_RESERVED:
		return PLAN_FORWARD;
	case PLAN_EV_REFUSED:
		if (p->client_limited)
			return p->n_tries > 0 ? plan_end(p) : PLAN_CLIENT_LIMITED;
		if (plan_can_fall_back(p))
			return PLAN_FALLBACK;
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
plan_estimate(const struct plan *p, const struct config_api *a, const struct config_model_limit *ml)
{
	return a->tpm >= 0 || a->tpd >= 0 || (ml != NULL && (ml->tpm >= 0 || ml->tpd >= 0))
		       ? p->estimate
		       : 0;
}

void
plan_fallback(struct plan *p)
{
	p->model++;
	p->n = route_candidates(p->cfg, p->models[p->model], p->api);
	p->last = PLAN_EV_NONE;
}

void
plan_offer(struct plan *p)
{
	size_t m = 0;

	for (size_t i = 0; i < p->n; i++) {
		const struct config_api *a = &p->cfg->apis[p->api[i]];
		size_t nk = plan_n_keys(a);
		/* The model as this endpoint names it upstream (rule 27). */
		const struct config_model_limit *ml =
			a->n_model_limits > 0
				? config_model_limit(a, config_api_model(a, plan_model(p)))
				: NULL;
		for (size_t k = 0; k < nk; k++) {
			if (!plan_open(p, p->api[i], k))
				continue;
			if (ml != NULL)
				p->offer.models[m] = (struct store_model){
					ml->slots[k], ml->rpm, ml->rpd, ml->tpm, ml->tpd};
			p->offer.eps[m] =
				(struct store_endpoint){plan_slot(p->cfg, p->api[i], k),
							a->rpm,
							a->rpd,
							nk > 1 ? i + 1 : 0,
							a->tpm,
							a->tpd,
							plan_estimate(p, a, ml),
							a->day_zone,
							ml != NULL ? &p->offer.models[m] : NULL};
			p->offer.weights[m] = a->weight;
			p->offer.tiers[m] = a->priority;
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
		p->at_model_id = p->offer.eps[res->chosen].model != NULL
					 ? p->offer.eps[res->chosen].model->id
					 : NULL;
		p->last = PLAN_EV_RESERVED;
		return;
	}
	if (res->verdict == STORE_CLIENT_LIMITED) {
		p->client_limited = true;
		p->retry_after_s = res->retry_after_s;
		p->last = PLAN_EV_REFUSED;
		return;
	}
	/* Over the models as over one model's candidates (rule 8): limited
	 * when one was, the smallest wait. */
	if (!p->refused || res->retry_after_s < p->retry_after_s) {
		p->retry_after_s = res->retry_after_s;
		p->reason = res->reason;
	}
	if (!p->refused || res->verdict == STORE_LIMITED)
		p->refusal = res->verdict;
	p->refused = true;
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
	p->tries[p->n_tries++] =
		(struct plan_try){p->model, p->chosen, p->chosen_key, result, status};
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

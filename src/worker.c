#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limit.h"
#include "log.h"

const char *
worker_state_path(const struct config *cfg)
{
	const char *p = getenv("API_TOGETHER_STATE");

	if (p != NULL && *p != '\0')
		return p;
	if (cfg != NULL && cfg->state_file != NULL)
		return cfg->state_file;
	return LOCALSTATEDIR "/lib/api-together/state.db";
}

const char *
worker_store_address(const struct config *cfg, const char **why)
{
	const char *sel = getenv("API_TOGETHER_STORE");

	if (sel == NULL || *sel == '\0')
		sel = cfg != NULL ? cfg->store : NULL;
	if (sel == NULL || strcmp(sel, "gdbm") == 0)
		return worker_state_path(cfg);
	if (store_is_redis(sel))
		return sel;
	if (why != NULL)
		*why = "API_TOGETHER_STORE: expected \"gdbm\" or a Redis address "
		       "(redis://HOST:PORT, unix:///PATH)";
	return NULL;
}

void
worker_store_options(const struct config *cfg, struct store_options *o)
{
	memset(o, 0, sizeof(*o));
	if (cfg != NULL) {
		o->prefix = cfg->store_prefix;
		o->timeout_ms = cfg->store_timeout_ms;
	}
}

const char *
worker_store_what(const char *address)
{
	return store_is_redis(address) ? "Redis store" : "state file";
}

struct store *
worker_store(struct worker *w, const struct config *cfg)
{
	const char *why = NULL;
	const char *address = worker_store_address(cfg, &why);
	struct store_options o;

	worker_store_options(cfg, &o);
	if (w->store != NULL && address != NULL && store_matches(w->store, address, &o))
		return w->store;
	store_close(w->store);
	w->store = NULL;
	if (address == NULL) {
		snprintf(w->store_err, sizeof(w->store_err), "%s", why);
		log_error("state store cannot be used: %s", w->store_err);
		return NULL;
	}
	w->store = store_open_with(address, &o, w->store_err, sizeof(w->store_err));
	if (w->store == NULL)
		log_error("%s cannot be used: %s", worker_store_what(address), w->store_err);
	return w->store;
}

void
worker_store_endpoints(const struct config *cfg, struct store_endpoint *eps)
{
	for (size_t i = 0; i < cfg->n_apis; i++) {
		eps[i].id = cfg->apis[i].id;
		eps[i].rpm = cfg->apis[i].rpm;
		eps[i].rpd = cfg->apis[i].rpd;
		eps[i].tpm = cfg->apis[i].tpm;
		eps[i].tpd = cfg->apis[i].tpd;
		eps[i].estimate = 0;
		eps[i].zone = cfg->apis[i].day_zone;
	}
}

void
worker_usage_free(struct worker_usage *u)
{
	free(u->apis);
	free(u->keys);
	free(u->first);
	memset(u, 0, sizeof(*u));
}

int
worker_usage_read(struct store *st, const struct config *cfg, int64_t now, struct worker_usage *out,
		  char *err, size_t errlen)
{
	size_t n = 0;
	struct store_endpoint *eps = NULL;

	memset(out, 0, sizeof(*out));
	out->first = calloc(cfg->n_apis + 1, sizeof(*out->first));
	if (out->first == NULL)
		goto nomem;
	for (size_t i = 0; i < cfg->n_apis; i++) {
		out->first[i] = n;
		n += cfg->apis[i].n_keys;
	}
	out->first[cfg->n_apis] = n;
	eps = calloc(n + 1, sizeof(*eps));
	out->keys = calloc(n + 1, sizeof(*out->keys));
	out->apis = calloc(cfg->n_apis + 1, sizeof(*out->apis));
	if (eps == NULL || out->keys == NULL || out->apis == NULL)
		goto nomem;
	for (size_t i = 0; i < cfg->n_apis; i++) {
		const struct config_api *a = &cfg->apis[i];
		for (size_t k = 0; k < a->n_keys; k++)
			eps[out->first[i] + k] = (struct store_endpoint){
				a->keys[k].slot, a->rpm, a->rpd,      0,   a->tpm,
				a->tpd,          0,      a->day_zone, NULL};
	}
	if (store_read(st, eps, n, now, out->keys, err, errlen) != 0)
		goto fail;
	for (size_t i = 0; i < cfg->n_apis; i++)
		for (size_t k = out->first[i]; k < out->first[i + 1]; k++)
			limit_usage_add(&out->apis[i], &out->keys[k], k == out->first[i]);
	free(eps);
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	free(eps);
	worker_usage_free(out);
	return -1;
}

int
worker_model_usage_read(struct store *st, const struct config_api *a, int64_t now,
			struct store_usage **out, char *err, size_t errlen)
{
	size_t nk = a->n_keys, n = a->n_model_limits * nk;
	struct store_endpoint *eps = NULL;

	*out = NULL;
	if (n == 0)
		return 0;
	eps = calloc(n, sizeof(*eps));
	*out = calloc(n, sizeof(**out));
	if (eps == NULL || *out == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t m = 0; m < a->n_model_limits; m++) {
		const struct config_model_limit *ml = &a->model_limits[m];
		for (size_t k = 0; k < nk; k++)
			eps[m * nk + k] = (struct store_endpoint){.id = ml->slots[k],
								  .rpm = ml->rpm,
								  .rpd = ml->rpd,
								  .tpm = ml->tpm,
								  .tpd = ml->tpd,
								  .zone = a->day_zone};
	}
	if (store_read(st, eps, n, now, *out, err, errlen) != 0)
		goto fail;
	free(eps);
	return 0;
fail:
	free(eps);
	free(*out);
	*out = NULL;
	return -1;
}

#include "api.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "json_scan.h"
#include "limit.h"
#include "log.h"
#include "response.h"
#include "store.h"
#include "tz.h"
#include "usage_book.h"
#include "worker.h"

#define API_SERVICE "api-together"
/* Every model object carries the same "created": the gateway does not know
 * when an upstream made a model, and clients only need a number. */
#define API_MODEL_CREATED 1700000000

/* Answers 200 with body, which it takes (NULL, from a failed json_pack,
 * answers 500). */
static int
api_send(struct request *r, bool cors, json_t *body)
{
	int status;

	if (body == NULL)
		return response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cors);
	status = response_json(r->fcgi->out, 200, body, cors);
	json_decref(body);
	return status;
}

static json_t *
api_now_json(void)
{
	char ts[40];

	clock_iso8601(clock_now_ms(), ts, sizeof(ts));
	return json_string(ts);
}

int
api_health(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	bool cors = cfg == NULL || cfg->cors;
	const char *reason = NULL;
	char err[300], why_store[64];
	json_t *body;
	int status;

	if (cfg == NULL) {
		reason = why != NULL ? why : "configuration cannot be loaded";
	} else {
		struct store *st = worker_store(w, cfg);
		const char *address = worker_store_address(cfg, NULL);
		bool bad = st == NULL;
		if (st != NULL && store_check(st, err, sizeof(err)) != 0) {
			log_error("%s cannot be used: %s", store_what(st), err);
			bad = true;
		}
		if (bad) {
			snprintf(why_store, sizeof(why_store), "%s cannot be used",
				 address != NULL ? worker_store_what(address) : "state store");
			reason = why_store;
		}
	}
	status = reason == NULL ? 200 : 503;
	body = json_pack("{s:s,s:o,s:s,s:s}", "status", reason == NULL ? "ok" : "error",
			 "timestamp", api_now_json(), "service", API_SERVICE, "version",
			 PACKAGE_VERSION);
	if (body == NULL)
		return response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cors);
	if (reason != NULL)
		json_object_set_new(body, "reason", json_string(reason));
	response_json(r->fcgi->out, status, body, cors);
	json_decref(body);
	return status;
}

/* Reads every endpoint's and key's usage, or answers 503 itself. */
static int
api_read_usage(struct request *r, const struct config *cfg, struct worker *w,
	       struct worker_usage *u, int *status)
{
	struct store *st = worker_store(w, cfg);
	char err[300];

	if (st == NULL || worker_usage_read(st, cfg, clock_now_ms(), u, err, sizeof(err)) != 0) {
		if (st != NULL)
			log_error("%s cannot be read: %s", store_what(st), err);
		*status = response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
		return -1;
	}
	return 0;
}

static const char *const api_key_states[STORE_KEY_STATE_N] = {
	[STORE_KEY_ACTIVE] = "active",     [STORE_KEY_COOLING] = "cooling",
	[STORE_KEY_FAILING] = "cooling",   [STORE_KEY_EXHAUSTED] = "exhausted",
	[STORE_KEY_REJECTED] = "rejected",
};

static const char *const api_key_reasons[STORE_KEY_STATE_N] = {
	[STORE_KEY_COOLING] = "rate limited by the upstream (429)",
	[STORE_KEY_FAILING] = "failures in a row",
	[STORE_KEY_EXHAUSTED] = "daily quota spent (429)",
	[STORE_KEY_REJECTED] = "rejected by the upstream (401)",
};

/* Whether a has a token limit: only then do its limits and usage show
 * tpm and tpd, so that a config without them reads as before. */
static bool
api_token_limited(const struct config_api *a)
{
	return a->tpm >= 0 || a->tpd >= 0;
}

/* Sets "tpm" and "tpd" of object o. Returns 0, or -1 when memory runs out. */
static int
api_add_tokens(json_t *o, long long tpm, long long tpd)
{
	if (json_object_set_new(o, "tpm", json_integer((json_int_t)tpm)) != 0 ||
	    json_object_set_new(o, "tpd", json_integer((json_int_t)tpd)) != 0)
		return -1;
	return 0;
}

/* The 60 buckets of h, oldest first, each with its minute's start in
 * epoch seconds (doc/behaviour.md, HTTP: /v1/status "history"); "refused"
 * only in the gateway's row, the one that counts them. A history never
 * counted is the empty hour up to now. NULL when memory runs out. */
static json_t *
api_history_json(const struct history *h, bool gateway, int64_t now)
{
	struct history c = *h;
	json_t *out = json_array();
	int64_t start;

	if (c.newest == 0)
		history_at(&c, history_minute(now));
	for (int i = 0; out != NULL && i < HISTORY_MINUTES; i++) {
		const uint32_t *b = history_bucket(&c, i, &start);
		json_t *o = json_pack("{s:I}", "start", (json_int_t)(start / 1000));
		for (int f = 0; o != NULL && f < HISTORY_FIELDS; f++) {
			if (f == HISTORY_REFUSED && !gateway)
				continue;
			if (json_object_set_new(o, history_field_names[f],
						json_integer((json_int_t)b[f])) != 0) {
				json_decref(o);
				o = NULL;
			}
		}
		if (o == NULL || json_array_append_new(out, o) != 0) {
			json_decref(out);
			out = NULL;
		}
	}
	return out;
}

/* Sets "history" of o from h. Returns 0, or -1 when memory runs out. */
static int
api_add_history(json_t *o, const struct history *h, int64_t now)
{
	json_t *j = api_history_json(h, false, now);

	return j != NULL && json_object_set_new(o, "history", j) == 0 ? 0 : -1;
}

/* The gateway's row (Limits and state, rule 34): its own refusals, and the
 * attempts of every endpoint summed (those are the endpoints' rows). NULL
 * when memory runs out, or when the store cannot be read (*unreadable then
 * set). */
static json_t *
api_gateway_json(struct store *st, const struct worker_usage *wu, size_t n, int64_t now,
		 bool *unreadable)
{
	const struct store_endpoint gw = {
		.id = STORE_GATEWAY_ID, .rpm = -1, .rpd = -1, .tpm = -1, .tpd = -1};
	struct store_usage *g = calloc(1, sizeof(*g));
	json_t *out = NULL;
	char err[300];

	if (g == NULL || st == NULL)
		goto out;
	if (store_read(st, &gw, 1, now, g, err, sizeof(err)) != 0) {
		log_error("%s cannot be read: %s", store_what(st), err);
		*unreadable = true;
		goto out;
	}
	history_at(&g->history, history_minute(now));
	for (size_t i = 0; i < n; i++)
		history_sum(&g->history, &wu->apis[i].history);
	out = json_pack("{s:o}", "history", api_history_json(&g->history, true, now));
out:
	free(g);
	return out;
}

/* The keys array of endpoint a: the last 4 characters of each, never more
 * (doc/behaviour.md, Key pools). */
static json_t *
api_keys_json(const struct config_api *a, const struct store_usage *u, int64_t now)
{
	json_t *keys = json_array();

	for (size_t k = 0; keys != NULL && k < a->n_keys; k++) {
		char shown[16], until[40];
		enum store_key_state ks = u[k].key_state;
		snprintf(shown, sizeof(shown), "\u2026%s", a->keys[k].tail);
		if (ks != STORE_KEY_ACTIVE)
			clock_iso8601(u[k].key_until, until, sizeof(until));
		json_t *o = json_pack(
			"{s:s,s:s,s:o,s:o,s:{s:I,s:I}}", "key", shown, "state", api_key_states[ks],
			"until", ks != STORE_KEY_ACTIVE ? json_string(until) : json_null(),
			"reason",
			ks != STORE_KEY_ACTIVE ? json_string(api_key_reasons[ks]) : json_null(),
			"usage", "rpm", (json_int_t)u[k].rpm_used, "rpd",
			(json_int_t)u[k].rpd_used);
		/* Its tokens, and its answers counted from their estimate
		 * (Forwarding: a stream's usage), where the endpoint shows them. */
		if (o != NULL && api_token_limited(a) &&
		    (api_add_tokens(json_object_get(o, "usage"), u[k].tpm_used, u[k].tpd_used) !=
			     0 ||
		     json_object_set_new(o, "estimatedAnswers",
					 json_integer((json_int_t)u[k].estimated_answers)) != 0)) {
			json_decref(o);
			o = NULL;
		}
		if (o != NULL && api_add_history(o, &u[k].history, now) != 0) {
			json_decref(o);
			o = NULL;
		}
		if (o == NULL || json_array_append_new(keys, o) != 0) {
			json_decref(keys);
			return NULL;
		}
	}
	return keys;
}

/* An operator's pause (doc/behaviour.md, Limits and state, rule 31) on
 * endpoint object o and its keys (u, n of them): "paused" on each, a paused
 * key's state "paused", and an endpoint none of whose keys is in rotation
 * is not available. Returns 0, or -1 when memory runs out. */
static int
api_paused_json(json_t *o, const struct store_usage *u, size_t n)
{
	json_t *keys = json_object_get(o, "keys");
	bool endpoint = n > 0, any_in = false;

	for (size_t k = 0; k < n; k++) {
		json_t *ko = json_array_get(keys, k);
		endpoint &= (u[k].paused & STORE_PAUSED_ENDPOINT) != 0;
		any_in |= u[k].paused == 0;
		if (ko == NULL ||
		    json_object_set_new(ko, "paused",
					json_boolean(u[k].paused & STORE_PAUSED_KEY)) != 0)
			return -1;
		if (u[k].paused != 0 &&
		    (json_object_set_new(ko, "state", json_string("paused")) != 0 ||
		     json_object_set_new(ko, "until", json_null()) != 0 ||
		     json_object_set_new(ko, "reason", json_string("paused by an operator")) != 0))
			return -1;
	}
	if (json_object_set_new(o, "paused", json_boolean(endpoint)) != 0)
		return -1;
	if (!any_in && json_object_set_new(o, "available", json_false()) != 0)
		return -1;
	return 0;
}

/* A text that may not be UTF-8 (a file's path): jansson takes only UTF-8. */
static json_t *
api_text_json(const char *s)
{
	json_t *j = json_string(s);

	return j != NULL ? j : json_string("(not UTF-8)");
}

/* The config in force and, when the file on disk was rejected, why
 * (doc/behaviour.md, HTTP: the table, /v1/status "config"). */
static json_t *
api_config_json(void)
{
	struct config_info ci;
	json_t *rejected = json_null();
	char loaded[40], since[40];

	config_info(&ci);
	if (ci.rejected) {
		clock_iso8601(ci.rejected_since_ms, since, sizeof(since));
		/* A file that cannot be read is itself the place, as in
		 * --check-config's output. */
		rejected = json_pack(
			"{s:o,s:s,s:I,s:s}", "at",
			api_text_json(ci.rejected_at[0] != '\0' ? ci.rejected_at : ci.path),
			"message", ci.rejected_message, "errors", (json_int_t)ci.rejected_errors,
			"since", since);
	}
	if (ci.loaded_ms > 0)
		clock_iso8601(ci.loaded_ms, loaded, sizeof(loaded));
	return json_pack("{s:o,s:o,s:o}", "path", api_text_json(ci.path), "loadedAt",
			 ci.loaded_ms > 0 ? json_string(loaded) : json_null(), "rejected",
			 rejected);
}

/* The four limits, or usage against them, as /v1/status shows them. */
static json_t *
api_four_json(long long rpm, long long rpd, long long tpm, long long tpd)
{
	return json_pack("{s:I,s:I,s:I,s:I}", "rpm", (json_int_t)rpm, "rpd", (json_int_t)rpd, "tpm",
			 (json_int_t)tpm, "tpd", (json_int_t)tpd);
}

/* apis[].modelLimits as /v1/status shows them (Limits and state, rule
 * 27): per model its limits, its usage summed over the keys and each
 * key's. NULL when memory runs out or the store cannot be read. */
static json_t *
api_model_limits_json(struct store *st, const struct config_api *a, int64_t now)
{
	size_t nk = a->n_keys;
	struct store_usage *u = NULL;
	json_t *out = json_object();
	char err[300];

	if (st == NULL || out == NULL)
		goto fail;
	if (worker_model_usage_read(st, a, now, &u, err, sizeof(err)) != 0) {
		log_error("%s cannot be read: %s", store_what(st), err);
		goto fail;
	}
	for (size_t m = 0; m < a->n_model_limits; m++) {
		const struct config_model_limit *ml = &a->model_limits[m];
		const struct store_usage *mu = u + m * nk;
		struct store_usage sum = {0};
		json_t *keys = json_array();
		for (size_t k = 0; keys != NULL && k < nk; k++) {
			char shown[16];
			limit_usage_add(&sum, &mu[k], k == 0);
			snprintf(shown, sizeof(shown), "\u2026%s", a->keys[k].tail);
			json_t *ko = json_pack("{s:s,s:o}", "key", shown, "usage",
					       api_four_json(mu[k].rpm_used, mu[k].rpd_used,
							     mu[k].tpm_used, mu[k].tpd_used));
			if (ko == NULL || json_array_append_new(keys, ko) != 0) {
				json_decref(keys);
				keys = NULL;
			}
		}
		json_t *o = keys == NULL
				    ? NULL
				    : json_pack("{s:o,s:o,s:o}", "limits",
						api_four_json(ml->rpm, ml->rpd, ml->tpm, ml->tpd),
						"usage",
						api_four_json(sum.rpm_used, sum.rpd_used,
							      sum.tpm_used, sum.tpd_used),
						"keys", keys);
		if (o == NULL || json_object_set_new(out, ml->model, o) != 0)
			goto fail;
	}
	free(u);
	return out;
fail:
	json_decref(out);
	free(u);
	return NULL;
}

json_t *
api_status_body(struct request *r, const struct config *cfg, struct worker *w, int *status)
{
	int64_t now = clock_now_ms();
	struct worker_usage wu;
	struct store_usage *u;
	json_t *apis;
	char day_ends[40];

	*status = 0;
	if (api_read_usage(r, cfg, w, &wu, status) != 0)
		return NULL;
	u = wu.apis;
	apis = json_array();
	for (size_t i = 0; apis != NULL && i < cfg->n_apis; i++) {
		const struct config_api *a = &cfg->apis[i];
		bool cooling = u[i].cooldown_until > now;
		bool in_service =
			a->enabled && a->rpm != 0 && a->rpd != 0 && a->tpm != 0 && a->tpd != 0;
		/* When RPD, TPD and tokensToday roll over (Limits and state,
		 * rules 6 and 26). */
		clock_iso8601(now + tz_ms_to_midnight(a->day_zone, now), day_ends,
			      sizeof(day_ends));
		json_t *o = json_pack(
			"{s:s,s:s,s:b,s:b,s:b,s:I,s:{s:I,s:I},s:{s:I,s:I},s:{s:I,s:I,s:I},"
			"s:{s:I,s:I,s:I},s:s}",
			"id", a->id, "name", a->name, "enabled", a->enabled, "available",
			in_service && !cooling && u[i].free_in_s == 0, "temporarilyDisabled",
			cooling, "errorCount", (json_int_t)u[i].fail_run, "limits", "rpm",
			(json_int_t)a->rpm, "rpd", (json_int_t)a->rpd, "usage", "rpm",
			(json_int_t)u[i].rpm_used, "rpd", (json_int_t)u[i].rpd_used, "tokens",
			"prompt", (json_int_t)u[i].prompt_tokens, "completion",
			(json_int_t)u[i].completion_tokens, "total", (json_int_t)u[i].total_tokens,
			/* The local day's, as usage.rpd: a reset keeps them. */
			"tokensToday", "prompt", (json_int_t)u[i].day_prompt_tokens, "completion",
			(json_int_t)u[i].day_completion_tokens, "total",
			(json_int_t)u[i].day_total_tokens, "dayResetsAt", day_ends);
		if (o != NULL && api_token_limited(a) &&
		    (api_add_tokens(json_object_get(o, "limits"), a->tpm, a->tpd) != 0 ||
		     api_add_tokens(json_object_get(o, "usage"), u[i].tpm_used, u[i].tpd_used) !=
			     0 ||
		     /* Where a stream's tokens come from (doc/behaviour.md,
		      * Forwarding: a stream's usage). */
		     json_object_set_new(o, "streamTokens",
					 json_string(a->stream_usage ? "usage" : "estimate")) !=
			     0 ||
		     json_object_set_new(o, "estimatedAnswers",
					 json_integer((json_int_t)u[i].estimated_answers)) != 0)) {
			json_decref(o);
			o = NULL;
		}
		if (o != NULL && cooling) {
			char ts[40];
			clock_iso8601(u[i].cooldown_until, ts, sizeof(ts));
			json_object_set_new(o, "cooldownUntil", json_string(ts));
		}
		if (o != NULL && a->n_model_limits > 0) {
			json_t *ml = api_model_limits_json(worker_store(w, cfg), a, now);
			if (ml == NULL || json_object_set_new(o, "modelLimits", ml) != 0) {
				json_decref(o);
				o = NULL;
			}
		}
		json_t *keys = o != NULL ? api_keys_json(a, wu.keys + wu.first[i], now) : NULL;
		if (keys == NULL || json_object_set_new(o, "keys", keys) != 0 ||
		    api_add_history(o, &u[i].history, now) != 0) {
			json_decref(o);
			o = NULL;
		}
		if (o != NULL && api_paused_json(o, wu.keys + wu.first[i], a->n_keys) != 0) {
			json_decref(o);
			o = NULL;
		}
		if (o == NULL || json_array_append_new(apis, o) != 0) {
			json_decref(apis);
			apis = NULL;
		}
	}
	bool unreadable = false;
	json_t *gateway =
		api_gateway_json(worker_store(w, cfg), &wu, cfg->n_apis, now, &unreadable);
	worker_usage_free(&wu);
	if (unreadable) {
		/* As a store that cannot be read at the start: 503, not 500. */
		json_decref(apis);
		*status = response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
		return NULL;
	}
	/* json_pack takes its "o" values, failing too; a NULL one makes it fail. */
	return json_pack("{s:s,s:o,s:o,s:o,s:o}", "service", API_SERVICE, "timestamp",
			 api_now_json(), "config", api_config_json(), "apis", apis, "gateway",
			 gateway);
}

int
api_status(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	int status;
	json_t *body = api_status_body(r, cfg, w, &status);

	(void)why;
	if (body == NULL && status != 0)
		return status;
	return api_send(r, cfg->cors, body);
}

static json_t *
api_model_object(const char *id)
{
	return json_pack("{s:s,s:s,s:i,s:s}", "id", id, "object", "model", "created",
			 API_MODEL_CREATED, "owned_by", API_SERVICE);
}

/* Adds each model an enabled endpoint serves once, in config order; of
 * those only the ones client may use (NULL: every one). */
static json_t *
api_model_list(const struct config *cfg, const struct config_client *client)
{
	json_t *seen = json_object(), *data = json_array();

	if (seen == NULL || data == NULL)
		goto fail;
	for (size_t i = 0; i < cfg->n_apis; i++) {
		const struct config_api *a = &cfg->apis[i];
		if (!a->enabled)
			continue;
		size_t n = a->n_models + a->n_mapping;
		for (size_t j = 0; j < n; j++) {
			const char *id =
				j < a->n_models ? a->models[j] : a->mapping[j - a->n_models].key;
			if (json_object_get(seen, id) != NULL || !config_client_allows(client, id))
				continue;
			if (json_object_set_new(seen, id, json_true()) != 0 ||
			    json_array_append_new(data, api_model_object(id)) != 0)
				goto fail;
		}
	}
	json_decref(seen);
	return data;
fail:
	json_decref(seen);
	json_decref(data);
	return NULL;
}

int
api_models(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	json_t *data = api_model_list(cfg, r->client), *body = NULL;
	const char *id = strncmp(r->decoded, "/v1/models/", 11) == 0 ? r->decoded + 11 : NULL;

	(void)why;
	(void)w;
	if (data == NULL)
		return response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cfg->cors);
	if (id == NULL) {
		body = json_pack("{s:s,s:o}", "object", "list", "data", data);
		data = NULL;
	} else {
		size_t k;
		json_t *m;
		json_array_foreach(data, k, m)
		{
			if (strcmp(json_string_value(json_object_get(m, "id")), id) == 0) {
				body = json_incref(m);
				break;
			}
		}
		json_decref(data);
		if (body == NULL)
			return response_error(r->fcgi->out, RESP_MODEL_NOT_FOUND,
					      "The model does not exist or no enabled endpoint "
					      "serves it.",
					      0, cfg->cors);
	}
	return api_send(r, cfg->cors, body);
}

int
api_token_stats(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	long long prompt = 0, completion = 0, total = 0, requests = 0;
	struct worker_usage wu;
	struct store_usage *u;
	json_t *detail, *body;
	int status = 0;

	(void)why;
	if (api_read_usage(r, cfg, w, &wu, &status) != 0)
		return status;
	u = wu.apis;
	detail = json_object();
	for (size_t i = 0; detail != NULL && i < cfg->n_apis; i++) {
		json_t *last = json_null();
		if (u[i].last_used > 0) {
			char ts[40];
			clock_iso8601(u[i].last_used, ts, sizeof(ts));
			last = json_string(ts);
		}
		json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:o}", "promptTokens",
				      (json_int_t)u[i].prompt_tokens, "completionTokens",
				      (json_int_t)u[i].completion_tokens, "totalTokens",
				      (json_int_t)u[i].total_tokens, "requests",
				      (json_int_t)u[i].requests, "lastUsed", last);
		if (o == NULL || json_object_set_new(detail, cfg->apis[i].id, o) != 0) {
			json_decref(detail);
			detail = NULL;
		}
		prompt += u[i].prompt_tokens;
		completion += u[i].completion_tokens;
		total += u[i].total_tokens;
		requests += u[i].requests;
	}
	worker_usage_free(&wu);
	body = detail != NULL
		       ? json_pack("{s:s,s:o,s:{s:I,s:I,s:I,s:I},s:o}", "service", API_SERVICE,
				   "timestamp", api_now_json(), "summary", "totalTokens",
				   (json_int_t)total, "totalRequests", (json_int_t)requests,
				   "totalPromptTokens", (json_int_t)prompt, "totalCompletionTokens",
				   (json_int_t)completion, "detailedStats", detail)
		       : NULL;
	return api_send(r, cfg->cors, body);
}

/* The last top-level "apiId" of a token reset body, as a parser keeps it. */
static int
api_reset_member(void *ctx, const char *s, const struct json_scan_member *m)
{
	struct json_scan js = {.s = s};

	if (json_scan_key_is(&js, m, "apiId"))
		*(struct json_scan_member *)ctx = *m;
	return 0;
}

/* Resets the token counts of endpoint id's keys, or of every endpoint (id
 * NULL). Returns 0, or -1 with err. */
static int
api_reset_keys(struct store *st, const struct config *cfg, const char *id, char *err, size_t errlen)
{
	if (id == NULL)
		return store_reset_tokens(st, NULL, err, errlen);
	const struct config_api *a = &cfg->apis[config_find_api(cfg, id)];
	for (size_t k = 0; k < a->n_keys; k++)
		if (store_reset_tokens(st, a->keys[k].slot, err, errlen) != 0)
			return -1;
	return 0;
}

int
api_token_reset(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	struct json_scan_member id_at = {0, 0, 0, 0};
	char *id = NULL;
	json_t *body;
	struct store *st;
	char err[300], msg[512];
	bool object;
	int rc;

	(void)why;
	rc = request_read_body(r, cfg->max_body_bytes);
	if (rc == 1)
		return response_error(r->fcgi->out, RESP_REQUEST_TOO_LARGE, NULL, 0, cfg->cors);
	if (rc != 0)
		return response_error(r->fcgi->out, RESP_INCOMPLETE_BODY, NULL, 0, cfg->cors);
	if (json_scan_ws(r->body, r->body_len, 0) < r->body_len) {
		/* Checked as jansson checks with no flags, without a tree: the body
		 * may be as large as server.maxBodyBytes. */
		if (json_scan_check(r->body, r->body_len, 0, api_reset_member, &id_at, &object,
				    NULL) != 0 ||
		    !object)
			goto bad;
		if (id_at.value_end > id_at.value && r->body[id_at.value] != 'n') {
			if (r->body[id_at.value] != '"')
				goto bad;
			/* No "\u0000" without JSON_SCAN_ALLOW_NUL: a C string. */
			id = json_scan_string_dup(r->body, id_at.value, id_at.value_end, NULL);
			if (id == NULL)
				return response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0,
						      cfg->cors);
			if (config_find_api(cfg, id) < 0) {
				free(id);
				return response_error(r->fcgi->out, RESP_API_NOT_FOUND, NULL, 0,
						      cfg->cors);
			}
		}
	}
	st = worker_store(w, cfg);
	if (st == NULL || api_reset_keys(st, cfg, id, err, sizeof(err)) != 0) {
		if (st != NULL)
			log_error("%s cannot be written: %s", store_what(st), err);
		free(id);
		return response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
	}
	if (id != NULL)
		snprintf(msg, sizeof(msg), "Token statistics of %s were reset.", id);
	else
		snprintf(msg, sizeof(msg), "Token statistics of every endpoint were reset.");
	free(id);
	body = json_pack("{s:s,s:o}", "message", msg, "timestamp", api_now_json());
	return api_send(r, cfg->cors, body);
bad:
	return response_error(r->fcgi->out, RESP_INVALID_JSON,
			      "Body must be empty or a JSON object like {\"apiId\": \"api1\"}.", 0,
			      cfg->cors);
}

/* The clients of sc as JSON (usage_book_json each), and self's empty book
 * when sc has none of it: a client's own usage is always there. */
static json_t *
api_usage_clients(const struct store_clients *sc, const char *self, long today)
{
	json_t *a = json_array();
	struct usage_book none;

	usage_book_init(&none);
	for (size_t i = 0; a != NULL && i < sc->n; i++) {
		json_t *o = usage_book_json(sc->c[i].client, &sc->c[i].book, today);
		/* A book that could not be read shows empty, and says so. */
		if (o != NULL && sc->c[i].damaged &&
		    json_object_set_new(o, "damaged", json_true()) != 0) {
			json_decref(o);
			o = NULL;
		}
		if (json_array_append_new(a, o) != 0) {
			json_decref(a);
			a = NULL;
		}
	}
	if (a != NULL && self != NULL && sc->n == 0 &&
	    json_array_append_new(a, usage_book_json(self, &none, today)) != 0) {
		json_decref(a);
		a = NULL;
	}
	usage_book_free(&none);
	return a;
}

int
api_usage(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	struct store *st = worker_store(w, cfg);
	const char *self = auth_client_label(r->client);
	bool all = r->client != NULL && r->client->admin;
	struct store_clients sc;
	int64_t now = clock_now_ms();
	long today = tz_day(NULL, now);
	char err[300], date[40];
	json_t *body;

	(void)why;
	memset(&sc, 0, sizeof(sc));
	if (st == NULL ||
	    store_read_clients(st, all ? NULL : self, now, &sc, err, sizeof(err)) != 0) {
		if (st != NULL)
			log_error("%s cannot be read: %s", store_what(st), err);
		store_clients_free(&sc);
		return response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
	}
	for (size_t i = 0; i < sc.n; i++)
		if (sc.c[i].damaged)
			log_warn("%s: the usage of client %s is damaged: shown empty, counted anew "
				 "from its next answer",
				 store_what(st), sc.c[i].client);
	snprintf(date, sizeof(date), "%04ld-%02ld-%02ld", today / 10000, today / 100 % 100,
		 today % 100);
	body = json_pack("{s:s,s:o,s:s,s:i,s:o}", "object", "usage", "timestamp", api_now_json(),
			 "date", date, "days", USAGE_BOOK_DAYS, "clients",
			 api_usage_clients(&sc, all ? NULL : self, today));
	store_clients_free(&sc);
	return api_send(r, cfg->cors, body);
}

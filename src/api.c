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

/* The keys array of endpoint a: the last 4 characters of each, never more
 * (doc/behaviour.md, Key pools). */
static json_t *
api_keys_json(const struct config_api *a, const struct store_usage *u)
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
			"usage", "rpm", (json_int_t)u[k].rpm_used, "rpd", (json_int_t)u[k].rpd_used,
			"tpm", (json_int_t)u[k].tpm_used, "tpd", (json_int_t)u[k].tpd_used);
		if (o == NULL || json_array_append_new(keys, o) != 0) {
			json_decref(keys);
			return NULL;
		}
	}
	return keys;
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

/* apis[].modelLimits as /v1/status shows them (Limits and state, rule
 * 27): per model its limits and its usage summed over the keys. NULL when
 * memory runs out or the store cannot be read. */
static json_t *
api_model_limits_json(struct store *st, const struct config_api *a, int64_t now)
{
	size_t nk = a->n_keys > 0 ? a->n_keys : 1;
	struct store_endpoint *eps = calloc(nk, sizeof(*eps));
	struct store_usage *u = calloc(nk, sizeof(*u));
	json_t *out = json_object();
	char err[300];

	if (st == NULL || eps == NULL || u == NULL || out == NULL)
		goto fail;
	for (size_t m = 0; m < a->n_model_limits; m++) {
		const struct config_model_limit *ml = &a->model_limits[m];
		struct store_usage sum = {0};
		for (size_t k = 0; k < nk; k++)
			eps[k] = (struct store_endpoint){.id = ml->slots[k],
							 .rpm = ml->rpm,
							 .rpd = ml->rpd,
							 .tpm = ml->tpm,
							 .tpd = ml->tpd,
							 .zone = a->day_zone};
		if (store_read(st, eps, nk, now, u, err, sizeof(err)) != 0) {
			log_error("%s cannot be read: %s", store_what(st), err);
			goto fail;
		}
		for (size_t k = 0; k < nk; k++)
			limit_usage_add(&sum, &u[k], k == 0);
		json_t *o =
			json_pack("{s:{s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I}}", "limits", "rpm",
				  (json_int_t)ml->rpm, "rpd", (json_int_t)ml->rpd, "tpm",
				  (json_int_t)ml->tpm, "tpd", (json_int_t)ml->tpd, "usage", "rpm",
				  (json_int_t)sum.rpm_used, "rpd", (json_int_t)sum.rpd_used, "tpm",
				  (json_int_t)sum.tpm_used, "tpd", (json_int_t)sum.tpd_used);
		if (o == NULL || json_object_set_new(out, ml->model, o) != 0)
			goto fail;
	}
	free(eps);
	free(u);
	return out;
fail:
	json_decref(out);
	free(eps);
	free(u);
	return NULL;
}

int
api_status(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	int64_t now = clock_now_ms();
	struct worker_usage wu;
	struct store_usage *u;
	json_t *apis, *body;
	int status = 0;
	char day_ends[40];

	(void)why;
	if (api_read_usage(r, cfg, w, &wu, &status) != 0)
		return status;
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
			     0)) {
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
		json_t *keys = o != NULL ? api_keys_json(a, wu.keys + wu.first[i]) : NULL;
		if (keys == NULL || json_object_set_new(o, "keys", keys) != 0) {
			json_decref(o);
			o = NULL;
		}
		if (o == NULL || json_array_append_new(apis, o) != 0) {
			json_decref(apis);
			apis = NULL;
		}
	}
	worker_usage_free(&wu);
	body = apis != NULL ? json_pack("{s:s,s:o,s:o,s:o}", "service", API_SERVICE, "timestamp",
					api_now_json(), "config", api_config_json(), "apis", apis)
			    : NULL;
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
	for (size_t i = 0; a != NULL && i < sc->n; i++)
		if (json_array_append_new(
			    a, usage_book_json(sc->c[i].client, &sc->c[i].book, today)) != 0) {
			json_decref(a);
			a = NULL;
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
	snprintf(date, sizeof(date), "%04ld-%02ld-%02ld", today / 10000, today / 100 % 100,
		 today % 100);
	body = json_pack("{s:s,s:o,s:s,s:i,s:o}", "object", "usage", "timestamp", api_now_json(),
			 "date", date, "days", USAGE_BOOK_DAYS, "clients",
			 api_usage_clients(&sc, all ? NULL : self, today));
	store_clients_free(&sc);
	return api_send(r, cfg->cors, body);
}

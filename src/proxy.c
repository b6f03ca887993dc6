#include "proxy.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "body.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "plan.h"
#include "ratelimit.h"
#include "response.h"
#include "route.h"
#include "store.h"
#include "tz.h"
#include "upstream.h"
#include "worker.h"

/* v in decimal into out (room for any long). Every request's log line
 * names its tries' statuses: snprintf's format parsing cost more than the
 * line's other work. */
static void
proxy_decimal(long v, char out[24])
{
	char tmp[24];
	size_t n = 0, o = 0;
	unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;

	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	if (v < 0)
		out[o++] = '-';
	while (n > 0)
		out[o++] = tmp[--n];
	out[o] = '\0';
}

/* The tries of the log line: "id:status", "id:error" (no answer) or
 * "id:local-error" (a key of a pool as "id…abcd"), comma-separated, as many
 * as fit (the rest cut short). */
static void
proxy_tried(const struct plan *p, char *buf, size_t cap)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < p->n_tries; i++) {
		const struct plan_try *t = &p->tries[i];
		char status[24];
		const char *what = status;
		if (t->result == PLAN_LOCAL)
			what = "local-error";
		else if (t->result == PLAN_NO_ANSWER)
			what = "error";
		else
			proxy_decimal(t->status, status);
		const struct config_api *a = &p->cfg->apis[t->api];
		/* A key of a pool by its last 4 characters, never more. */
		const char *parts[] = {len ? "," : "",
				       a->id,
				       a->n_keys > 1 ? "\u2026" : "",
				       a->n_keys > 1 ? a->keys[t->key].tail : "",
				       ":",
				       what};
		for (size_t j = 0; j < sizeof(parts) / sizeof(parts[0]); j++) {
			size_t n = strlen(parts[j]);
			if (n >= cap - len) {
				/* The rest cut short. */
				memcpy(buf + len, parts[j], cap - len - 1);
				buf[cap - 1] = '\0';
				return;
			}
			memcpy(buf + len, parts[j], n);
			len += n;
		}
		buf[len] = '\0';
	}
}

/* served: the fallback model whose answer the client got, NULL none. */
static void
proxy_log(const struct request *r, const char *model, const char *served, const struct plan *p,
	  int status)
{
	enum log_level level = status >= 500 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO;
	char tried[512];

	proxy_tried(p, tried, sizeof(tried));
	log_msg(level, "%s %s%s model=%s%s%s tried=%s status=%d attempts=%zu ms=%lld client=%s",
		r->method, r->mount, r->path, model != NULL ? model : "-",
		served != NULL ? " fallback=" : "", served != NULL ? served : "",
		tried[0] ? tried : "-", status, p->n_tries,
		(long long)(clock_now_ms() - r->start_ms), auth_client_label(r->client));
}

/* The tokens a request reserves on its client's entry: its estimate when
 * the client has a token limit (as an endpoint's key, rule 22). */
static long long
proxy_client_estimate(const struct config_client *client, const struct plan *p)
{
	return client->tpm >= 0 || client->tpd >= 0 ? p->estimate : 0;
}

/* What one attempt's outcome is recorded with: upstream_forward hands the
 * outcome to proxy_record once (on_outcome), the one place it is recorded. */
struct proxy_recorder {
	struct store *st;
	const struct config *cfg;
	const struct plan *plan; /* the try is plan->chosen's key plan->chosen_key */
	const struct store_cooldown *cd;
	bool retry;  /* not the request's first attempt */
	bool stream; /* the client asked for a stream: its first byte is timed */
	/* The client with limits of its own (NULL: none), whose entry counted
	 * the attempt and client_estimate tokens with it. */
	const struct config_client *client;
	long long client_estimate;
	/* Whose usage a served answer counts in, under which model
	 * (doc/behaviour.md, Limits and state: usage per client). */
	const char *usage_client;
	const char *usage_model;
};

/* Records o on the key slot, logging a store that fails. */
static void
proxy_store(struct store *st, const char *slot, const struct store_outcome *o,
	    const struct store_cooldown *cd, int64_t now_ms)
{
	char err[256];

	if (store_record(st, slot, o, cd, now_ms, err, sizeof(err)) != 0)
		log_error("%s cannot be written: %s", store_what(st), err);
}

/* The charge of a key's 401/403 once a second opinion confirmed it. */
static enum store_charge
proxy_auth_charge(long status)
{
	return status == 401 ? STORE_CHARGE_REJECTED : STORE_CHARGE_FORBIDDEN;
}

static enum store_class
proxy_class(long status)
{
	if (status < 100 || status > 599)
		return STORE_CLASS_NONE;
	return (enum store_class)(STORE_CLASS_1XX + (status / 100 - 1));
}

/* Records what an attempt came to on the state of its model on its key
 * (apis[].modelLimits, rule 27), id NULL: none. Only what counts against
 * the model's limits: its tokens, the estimate given back, a request
 * served; the charges (cooldowns, a key's state) stay the key's. */
static void
proxy_store_model(struct store *st, const char *id, const struct store_outcome *o,
		  const struct store_cooldown *cd, int64_t now_ms)
{
	struct store_outcome m = *o;

	if (id == NULL)
		return;
	m.success = true;
	m.charge = STORE_CHARGE_NONE;
	m.code_class = STORE_CLASS_N;
	m.retry = false;
	m.latency_ms = -1;
	m.ttfb_ms = -1;
	proxy_store(st, id, &m, cd, now_ms);
}

/* What an attempt's answer is charged to (doc/behaviour.md, Key pools): the
 * one place an attempt's outcome is recorded. A first 401/403 waits for the
 * next try's answer (plan_confirmed): then it is charged to its key, or,
 * when that answer is a 401/403 too, to nobody. An endpoint's own failure
 * is charged to each of its keys. */
static void
proxy_record(void *ctx, const struct upstream_call *call)
{
	const struct proxy_recorder *rec = ctx;
	const struct plan *p = rec->plan;
	const struct config_api *api = &rec->cfg->apis[p->chosen];
	int64_t now_ms = clock_now_ms(), until_ms = 0;
	const struct ratelimit_answer answer = {call->status,    call->failure,
						call->held.head, call->held.head_len,
						call->held.body, call->held.body_len};
	enum store_charge charge =
		ratelimit_charge(&answer, now_ms, rec->cfg->rate_limit_cooldown_s, &until_ms);
	const struct plan_try *first = plan_confirmed(p, call->status);

	if (first != NULL) {
		const struct store_outcome c = {.charge = proxy_auth_charge(first->status),
						.code_class = STORE_CLASS_N,
						.latency_ms = -1,
						.ttfb_ms = -1,
						.zone = rec->cfg->apis[first->api].day_zone};
		proxy_store(rec->st, plan_slot(rec->cfg, first->api, first->key), &c, rec->cd,
			    now_ms);
	}
	if (charge == STORE_CHARGE_REJECTED || charge == STORE_CHARGE_FORBIDDEN)
		charge = STORE_CHARGE_NONE; /* charged later, if at all */
	struct store_outcome o = {
		.success = !call->failure,
		.charge = charge,
		.until_ms = until_ms,
		.served = !call->failure && call->status >= 200 && call->status < 300,
		.has_usage = call->usage.found,
		.prompt_tokens = call->usage.prompt,
		.completion_tokens = call->usage.completion,
		.total_tokens = call->usage.total,
		.estimate = p->at_estimate,
		.est_ms = p->at_ms,
		.est_day = p->at_day,
		.zone = api->day_zone,
		.code_class = proxy_class(call->status),
		.retry = rec->retry,
		.latency_ms = call->total_ms,
		.ttfb_ms = rec->stream ? call->first_byte_ms : -1,
	};
	/* A stream served without usage (streamUsage false, or the client's
	 * own stream_options) counts its estimate as its tokens
	 * (doc/behaviour.md, Limits and state, rule 24). */
	if (rec->stream && o.served && !o.has_usage && p->at_estimate > 0) {
		o.has_usage = true;
		o.estimated = true;
		o.total_tokens = p->at_estimate;
	}
	/* The client's usage in the endpoint's record only: counted once. */
	struct store_outcome eo = o;
	eo.client = rec->usage_client;
	eo.model = rec->usage_model;
	proxy_store(rec->st, plan_slot(rec->cfg, p->chosen, p->chosen_key), &eo, rec->cd, now_ms);
	proxy_store_model(rec->st, p->at_model_id, &o, rec->cd, now_ms);
	if (rec->client != NULL) {
		/* The client's tokens replace its estimate (rule 24), as the
		 * key's do; no failure is the client's. */
		struct store_outcome co = o;
		co.success = true;
		co.charge = STORE_CHARGE_NONE;
		co.estimate = rec->client_estimate;
		co.code_class = STORE_CLASS_N;
		co.retry = false;
		co.latency_ms = co.ttfb_ms = -1;
		/* The client's day is the responder's: its estimate was
		 * reserved in the local day of the reservation's time, which
		 * differs from the endpoint's (at_day) when the endpoint has a
		 * dayResetTimezone (rule 26). */
		co.zone = NULL;
		co.est_day = tz_day(NULL, co.est_ms);
		proxy_store(rec->st, rec->client->slot, &co, rec->cd, now_ms);
	}
	if (charge != STORE_CHARGE_RUN || !call->failure)
		return;
	const struct store_outcome sibling = {.charge = STORE_CHARGE_RUN,
					      .code_class = STORE_CLASS_N,
					      .latency_ms = -1,
					      .ttfb_ms = -1,
					      .zone = api->day_zone};
	for (size_t k = 0; k < api->n_keys; k++)
		if (k != p->chosen_key)
			proxy_store(rec->st, api->keys[k].slot, &sibling, rec->cd, now_ms);
}

/* Whether a request to api asks the upstream for its stream's usage itself
 * (doc/behaviour.md, Forwarding): a streamed chat or completion request, on
 * an endpoint with a token limit whose streamUsage is on. */
static bool
proxy_asks_usage(const struct request *r, const struct config_api *api,
		 const struct body_info *info)
{
	return api->stream_usage && (api->tpm >= 0 || api->tpd >= 0) && info->stream &&
	       info->kind == BODY_JSON &&
	       (strcmp(r->path, "/v1/chat/completions") == 0 ||
		strcmp(r->path, "/v1/completions") == 0);
}

/* One attempt at api for model (the request's, or a fallback of it): the
 * body with the name api knows it by and, where the gateway asks for a
 * stream's usage, stream_options; then the transfer. */
static enum upstream_result
proxy_attempt(struct request *r, const struct config *cfg, const struct config_api *api,
	      const char *key, const char *model, const struct body_info *info, struct worker *w,
	      struct upstream_call *call)
{
	const char *upstream_model = model != NULL ? config_api_model(api, model) : NULL;
	char *rewritten = NULL, *asked = NULL, *url = NULL, *query = NULL;
	struct curl_slist *headers = NULL;
	const char **secrets = NULL;
	size_t rewritten_len = 0, asked_len = 0;
	enum upstream_result res = UPSTREAM_NO_ANSWER;

	call->body = r->body;
	call->body_len = r->body_len;
	call->failure = false;
	call->local_error = false;
	call->status = 0;
	call->drop_usage_event = false;
	if (upstream_model != NULL && strcmp(upstream_model, info->model) != 0) {
		if (body_rewrite_model(r->content_type, r->body, r->body_len, upstream_model,
				       &rewritten, &rewritten_len) != 0) {
			snprintf(call->error, sizeof(call->error), "cannot rewrite the model");
			goto out;
		}
		call->body = rewritten;
		call->body_len = rewritten_len;
	}
	if (proxy_asks_usage(r, api, info)) {
		int asks = body_ask_usage(call->body, call->body_len, &asked, &asked_len);
		if (asks < 0) {
			snprintf(call->error, sizeof(call->error), "cannot add stream_options");
			goto out;
		}
		if (asks == 1) {
			call->body = asked;
			call->body_len = asked_len;
			call->drop_usage_event = true;
		}
	}
	/* The client's own key never goes on, wherever it came (doc/behaviour.md,
	 * Forwarding). */
	if (upstream_query(r->query, cfg->api_keys, cfg->n_api_keys, &query) == 0)
		url = upstream_url(api->base_url, r->path, query);
	headers = upstream_headers(r, api, key, cfg->api_keys, cfg->n_api_keys);
	/* The key sent, its siblings of a pool and the extra header values
	 * (an Azure api-key...). */
	size_t n_secrets = 1 + api->n_keys + api->n_headers, m = 0;
	secrets = calloc(n_secrets, sizeof(*secrets));
	if (url == NULL || headers == NULL || secrets == NULL) {
		snprintf(call->error, sizeof(call->error), "out of memory");
		goto out;
	}
	secrets[m++] = key;
	for (size_t i = 0; i < api->n_keys; i++)
		if (api->keys[i].key != key)
			secrets[m++] = api->keys[i].key;
	for (size_t i = 0; i < api->n_headers; i++)
		secrets[m++] = api->headers[i].value;
	call->secrets = secrets;
	call->n_secrets = m;
	call->url = url;
	call->method = r->method;
	call->headers = headers;
	call->connect_timeout_s = cfg->connect_timeout_s;
	call->timeout_s = cfg->timeout_s;
	call->empty_is_failure = cfg->empty_response_retry;
	call->stream = info->stream;
	call->cors = cfg->cors;
	call->client = r->fcgi;
	CURL *curl = curl_shelf_take(w->curls);
	if (curl == NULL) {
		snprintf(call->error, sizeof(call->error), "libcurl cannot start a handle");
		goto out;
	}
	res = upstream_forward(curl, call);
	curl_shelf_put(w->curls, curl);
out:
	if (res == UPSTREAM_NO_ANSWER && call->status == 0 && !call->failure)
		call->local_error = true;
	call->secrets = NULL;
	free(secrets);
	curl_slist_free_all(headers);
	free(url);
	free(query);
	free(rewritten);
	free(asked);
	return res;
}

/* Reads and checks the body; answers the client itself when it is refused.
 * The body may come slowly (a web server that streams uploads): the thread
 * waits on the client meanwhile. */
static int
proxy_read_body(struct request *r, const struct config *cfg, struct body_info *info,
		struct worker *w)
{
	char err[512];

	worker_waits(w, 1);
	int rc = request_read_body(r, cfg->max_body_bytes);
	worker_waits(w, -1);

	if (rc == 1)
		return response_error(r->fcgi->out, RESP_REQUEST_TOO_LARGE, NULL, 0, cfg->cors);
	if (rc != 0)
		return response_error(r->fcgi->out, RESP_INCOMPLETE_BODY, NULL, 0, cfg->cors);
	rc = body_inspect(r->content_type, r->body, r->body_len, info, err, sizeof(err));
	if (rc != 0)
		return response_error(r->fcgi->out,
				      rc == BODY_AMBIGUOUS ? RESP_INVALID_REQUEST
							   : RESP_INVALID_JSON,
				      err, 0, cfg->cors);
	return 0;
}

/* The longest a recheck's answer is waited for, in seconds. */
#define PROXY_RECHECK_S 30

/* A rejected key's recheck, claimed by the reservation: GET on the
 * endpoint's models path with that key; a 2xx brings it back, a 401 keeps
 * it out, anything else leaves it as it is until the next. */
static void
proxy_recheck(const struct config *cfg, size_t api_i, size_t k, long long estimate,
	      const struct store_reservation *res, struct store *st, struct worker *w)
{
	const struct config_api *api = &cfg->apis[api_i];
	const char *key = api->n_keys > 0 ? api->keys[k].key : api->api_key;
	struct request none = {0};
	struct store_cooldown cd = {cfg->cooldown_failures, cfg->cooldown_seconds,
				    cfg->recheck_minutes * 60};
	char *url = upstream_url(api->base_url, "/v1/models", NULL);
	struct curl_slist *headers = upstream_headers(&none, api, key, NULL, 0);
	CURL *curl = url != NULL && headers != NULL ? curl_shelf_take(w->curls) : NULL;
	long status = 0;
	char err[CURL_ERROR_SIZE] = "out of memory";

	if (curl != NULL) {
		/* A list of models comes at once: the request waits for it. */
		worker_waits(w, 1);
		status = upstream_probe(curl, url, headers, cfg->connect_timeout_s,
					cfg->timeout_s < PROXY_RECHECK_S ? cfg->timeout_s
									 : PROXY_RECHECK_S,
					err, sizeof(err));
		worker_waits(w, -1);
		curl_shelf_put(w->curls, curl);
	}
	/* The reservation took the request's estimate: the recheck gives it
	 * back (Limits and state, rule 24). */
	struct store_outcome o = {.charge = STORE_CHARGE_NONE,
				  .estimate = estimate,
				  .est_ms = res->at_ms,
				  .est_day = res->at_day,
				  .zone = api->day_zone,
				  .code_class = STORE_CLASS_N,
				  .latency_ms = -1,
				  .ttfb_ms = -1};
	if (status >= 200 && status < 300) {
		o.charge = STORE_CHARGE_RUN;
		o.success = true;
	} else if (status == 401) {
		o.charge = STORE_CHARGE_REJECTED;
	}
	const char *tail = api->n_keys > 0 ? api->keys[k].tail : "";
	if (status == 0)
		log_warn("endpoint %s: key \u2026%s: recheck without an answer: %s", api->id, tail,
			 err);
	else
		log_info("endpoint %s: key \u2026%s: recheck answered %ld", api->id, tail, status);
	proxy_store(st, plan_slot(cfg, api_i, k), &o, &cd, clock_now_ms());
	curl_slist_free_all(headers);
	free(url);
}

/* Reservations that are a rejected key's recheck: at most this many per
 * request (each then reserves again). */
#define PROXY_RECHECKS 4

/* PLAN_RESERVE: a key of one of the open candidates, the endpoint picked by
 * weight, its key the one used least recently. */
static void
proxy_reserve(struct plan *p, const struct config *cfg, const struct config_client *client,
	      struct store *st, struct worker *w)
{
	struct route_pick pick;
	struct store_reservation res;
	struct store_endpoint ce = {0};
	char err[300];

	if (config_client_limited(client))
		ce = (struct store_endpoint){.id = client->slot,
					     .rpm = client->rpm,
					     .rpd = client->rpd,
					     .tpm = client->tpm,
					     .tpd = client->tpd,
					     .estimate = proxy_client_estimate(client, p)};
	for (int i = 0;; i++) {
		plan_offer(p);
		pick = (struct route_pick){p->offer.weights, p->offer.tiers, &w->rng};
		if (store_reserve_for(st, p->offer.eps, p->offer.n,
				      config_client_limited(client) ? &ce : NULL, clock_now_ms(),
				      route_pick, &pick, &res, err, sizeof(err)) != 0) {
			log_error("%s cannot be used: %s", store_what(st), err);
			plan_store_failed(p);
			return;
		}
		if (res.verdict != STORE_RESERVED || !res.recheck || i == PROXY_RECHECKS)
			break;
		proxy_recheck(cfg, p->offer.api[res.chosen], p->offer.key[res.chosen],
			      p->offer.eps[res.chosen].estimate, &res, st, w);
		if (p->offer.eps[res.chosen].model != NULL) {
			const struct store_outcome back = {
				.estimate = p->offer.eps[res.chosen].estimate,
				.est_ms = res.at_ms,
				.est_day = res.at_day,
				.zone = p->offer.eps[res.chosen].zone,
				.code_class = STORE_CLASS_N,
				.latency_ms = -1,
				.ttfb_ms = -1};
			struct store_cooldown cd = {cfg->cooldown_failures, cfg->cooldown_seconds,
						    cfg->recheck_minutes * 60};
			proxy_store_model(st, p->offer.eps[res.chosen].model->id, &back, &cd,
					  clock_now_ms());
		}
		if (config_client_limited(client)) {
			/* The client's estimate comes back too; the probe stays
			 * an attempt of the client's (rule 29). */
			const struct store_outcome back = {.charge = STORE_CHARGE_NONE,
							   .estimate = ce.estimate,
							   .est_ms = res.at_ms,
							   .est_day = res.at_day,
							   .code_class = STORE_CLASS_N,
							   .latency_ms = -1,
							   .ttfb_ms = -1};
			const struct store_cooldown cd = {cfg->cooldown_failures,
							  cfg->cooldown_seconds,
							  cfg->recheck_minutes * 60};
			proxy_store(st, client->slot, &back, &cd, clock_now_ms());
		}
	}
	plan_reserved(p, &res);
}

/* PLAN_FORWARD: one attempt on the endpoint reserved. A failed answer the
 * upstream held replaces *held (the last one goes to the client if nothing
 * else is left). */
static void
proxy_forward(struct plan *p, struct request *r, const struct config *cfg,
	      const struct body_info *info, struct store *st, struct worker *w,
	      struct upstream_answer *held)
{
	const struct config_api *api = &cfg->apis[p->chosen];
	const char *key = api->n_keys > 0 ? api->keys[p->chosen_key].key : api->api_key;
	struct store_cooldown cd = {cfg->cooldown_failures, cfg->cooldown_seconds,
				    cfg->recheck_minutes * 60};
	struct proxy_recorder rec = {.st = st,
				     .cfg = cfg,
				     .plan = p,
				     .cd = &cd,
				     .retry = p->n_tries > 0,
				     .stream = info->stream,
				     .usage_client = auth_client_label(r->client),
				     .usage_model = info->model};

	if (config_client_limited(r->client)) {
		rec.client = r->client;
		rec.client_estimate = proxy_client_estimate(r->client, p);
	}
	struct upstream_call call;
	enum upstream_result ur;

	memset(&call, 0, sizeof(call));
	call.on_outcome = proxy_record;
	call.on_outcome_ctx = &rec;
	call.on_long = w->long_request;
	call.on_transfer = w->waiting;
	call.thread_ctx = w->pool;
	call.model = plan_answer_model(p, p->model);
	ur = proxy_attempt(r, cfg, api, key, plan_model(p), info, w, &call);
	if (call.local_error) {
		log_error("cannot forward to %s: %s", api->id, call.error);
		plan_tried(p, PLAN_LOCAL, 0);
	} else if (ur == UPSTREAM_NO_ANSWER) {
		log_warn("endpoint %s: no answer: %s", api->id, call.error);
		plan_tried(p, PLAN_NO_ANSWER, call.status);
	} else if (ur == UPSTREAM_HELD) {
		upstream_answer_free(held);
		*held = call.held;
		memset(&call.held, 0, sizeof(call.held));
		plan_tried(p, PLAN_HELD, call.status);
	} else {
		plan_tried(p, ur == UPSTREAM_SENT ? PLAN_SENT : PLAN_CLIENT_GONE, call.status);
	}
	upstream_answer_free(&call.held);
}

/* The message of the gateway's own 429/503: why the first key to free is
 * out (doc/behaviour.md, Key pools); NULL keeps the standing one. */
static const char *
proxy_reason(enum store_key_state why)
{
	switch (why) {
	case STORE_KEY_COOLING:
		return "Every key serving this model is rate limited by its upstream (cooling).";
	case STORE_KEY_FAILING:
		return "Every key serving this model is cooling down after failures.";
	case STORE_KEY_EXHAUSTED:
		return "Every key serving this model has spent its daily quota (exhausted).";
	case STORE_KEY_REJECTED:
		return "Every key serving this model was rejected by its upstream.";
	case STORE_KEY_PAUSED:
		return "Every key serving this model is paused by an operator.";
	case STORE_KEY_ACTIVE:
	case STORE_KEY_STATE_N:
		break;
	}
	return NULL;
}

/* The answer at the plan's end. Returns the status the client got. */
static int
proxy_finish(const struct plan *p, enum plan_step step, struct request *r, const struct config *cfg,
	     struct worker *w, const struct upstream_answer *held)
{
	FCGX_Stream *out = r->fcgi->out;
	const struct plan_try *last = p->n_tries > 0 ? &p->tries[p->n_tries - 1] : NULL;

	switch (step) {
	case PLAN_DONE:
		return last->result == PLAN_SENT ? (int)last->status : 499;
	case PLAN_SEND_HELD:
		upstream_answer_send(held, out, cfg->cors);
		return (int)held->status;
	case PLAN_LOCAL_ERROR:
		/* The gateway's own failure is no endpoint's: nothing was
		 * recorded, and no other endpoint would fare better. */
		return response_error(out, RESP_INTERNAL, "The request cannot be forwarded.", 0,
				      cfg->cors);
	case PLAN_STORE_ERROR:
		return response_error(out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
	case PLAN_LIMITED:
		metrics_reject(w, cfg, STORE_REJECT_RATE_LIMIT);
		return response_error(out, RESP_RATE_LIMITED, proxy_reason(p->reason),
				      p->retry_after_s, cfg->cors);
	case PLAN_CLIENT_LIMITED:
		metrics_reject(w, cfg, STORE_REJECT_RATE_LIMIT);
		return response_error(out, RESP_CLIENT_RATE_LIMITED, NULL, p->retry_after_s,
				      cfg->cors);
	case PLAN_COOLING:
		metrics_reject(w, cfg, STORE_REJECT_COOLDOWN);
		return response_error(out, RESP_NO_AVAILABLE_API, proxy_reason(p->reason),
				      p->retry_after_s, cfg->cors);
	case PLAN_UNREACHABLE:
	case PLAN_RESERVE: /* not ends: proxy_handle's loop runs them */
	case PLAN_FORWARD:
	case PLAN_FALLBACK:
		break;
	}
	return response_error(out, RESP_UPSTREAM_UNREACHABLE, NULL, 0, cfg->cors);
}

/* The fallback model whose answer the client got at the plan's end (step),
 * for the log line; NULL when it was the model asked for, or none. */
static const char *
proxy_served(const struct plan *p, enum plan_step step, const char *model)
{
	const struct plan_try *t = NULL;

	if (step == PLAN_DONE && p->n_tries > 0)
		t = &p->tries[p->n_tries - 1];
	for (size_t i = p->n_tries; step == PLAN_SEND_HELD && t == NULL && i > 0; i--)
		if (p->tries[i - 1].result == PLAN_HELD)
			t = &p->tries[i - 1];
	if (t == NULL || model == NULL || strcmp(p->models[t->model], model) == 0)
		return NULL;
	return p->models[t->model];
}

int
proxy_handle(struct request *r, const struct config *cfg, struct worker *w)
{
	struct body_info info = {0};
	struct upstream_answer held = {0};
	struct plan plan = {0};
	const char *served = NULL;
	enum plan_step step;
	struct store *st;
	int status;

	status = proxy_read_body(r, cfg, &info, w);
	if (status != 0) {
		metrics_reject(w, cfg, STORE_REJECT_BAD_INPUT);
		goto done;
	}
	/* Before the store: a model the key may not use costs no slot. */
	if (!config_client_allows(r->client, info.model)) {
		metrics_reject(w, cfg, STORE_REJECT_AUTH);
		status = response_error(r->fcgi->out, RESP_MODEL_NOT_ALLOWED, NULL, 0, cfg->cors);
		goto done;
	}
	if (plan_init_for(&plan, cfg, info.model, r->client) != 0) {
		status = response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cfg->cors);
		goto done;
	}
	plan.estimate = info.estimate;
	if (plan.n == 0) {
		metrics_reject(w, cfg, STORE_REJECT_BAD_INPUT);
		status = response_error(r->fcgi->out, RESP_MODEL_NOT_FOUND,
					info.model != NULL
						? "No enabled endpoint serves the requested model."
						: "No enabled endpoint is configured.",
					0, cfg->cors);
		goto done;
	}
	st = worker_store(w, cfg);
	if (st == NULL) {
		status = response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
		goto done;
	}
	while ((step = plan_next(&plan)) == PLAN_RESERVE || step == PLAN_FORWARD ||
	       step == PLAN_FALLBACK) {
		if (step == PLAN_RESERVE)
			proxy_reserve(&plan, cfg, r->client, st, w);
		else if (step == PLAN_FORWARD)
			proxy_forward(&plan, r, cfg, &info, st, w, &held);
		else
			plan_fallback(&plan);
	}
	status = proxy_finish(&plan, step, r, cfg, w, &held);
	served = proxy_served(&plan, step, info.model);
done:
	response_finish(r->fcgi);
	proxy_log(r, info.model, served, &plan, status);
	upstream_answer_free(&held);
	body_info_free(&info);
	plan_free(&plan);
	return status;
}

#include "proxy.h"

#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "response.h"
#include "route.h"
#include "store.h"
#include "upstream.h"
#include "worker.h"

/* What the attempt loop keeps for the log line. */
struct proxy_trace {
	char tried[512];
	size_t tried_len;
	int attempts;
};

static void
proxy_trace_add(struct proxy_trace *t, const char *id, const char *what)
{
	int n = snprintf(t->tried + t->tried_len, sizeof(t->tried) - t->tried_len, "%s%s:%s",
			 t->tried_len ? "," : "", id, what);
	if (n > 0 && t->tried_len + (size_t)n < sizeof(t->tried))
		t->tried_len += (size_t)n;
}

static void
proxy_log(const struct request *r, const char *model, const struct proxy_trace *t, int status)
{
	enum log_level level = status >= 500 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO;

	log_msg(level, "%s %s%s model=%s tried=%s status=%d attempts=%d ms=%lld", r->method,
		r->mount, r->path, model != NULL ? model : "-", t->tried_len ? t->tried : "-",
		status, t->attempts, (long long)(clock_now_ms() - r->start_ms));
}

/* One attempt at api: the body with the model it knows, then the transfer. */
/* Records what one attempt came to, once. */
struct proxy_recorder {
	struct store *st;
	const char *id;
	const struct store_cooldown *cd;
	bool retry;  /* not the request's first attempt */
	bool stream; /* the client asked for a stream: its first byte is timed */
	bool done;
};

static enum store_class
proxy_class(long status)
{
	if (status < 100 || status > 599)
		return STORE_CLASS_NONE;
	return (enum store_class)(STORE_CLASS_1XX + (status / 100 - 1));
}

static void
proxy_record_outcome(void *ctx, const struct upstream_call *call)
{
	struct proxy_recorder *rec = ctx;
	struct store_outcome o = {
		.success = !call->failure,
		.served = !call->failure && call->status >= 200 && call->status < 300,
		.has_usage = call->usage.found,
		.prompt_tokens = call->usage.prompt,
		.completion_tokens = call->usage.completion,
		.total_tokens = call->usage.total,
		.code_class = proxy_class(call->status),
		.retry = rec->retry,
		.latency_ms = call->total_ms,
		.ttfb_ms = rec->stream ? call->first_byte_ms : -1,
	};
	char err[256];

	if (rec->done)
		return;
	rec->done = true;
	if (store_record(rec->st, rec->id, &o, rec->cd, clock_now_ms(), err, sizeof(err)) != 0)
		log_error("%s cannot be written: %s", store_what(rec->st), err);
}

static enum upstream_result
proxy_attempt(struct request *r, const struct config *cfg, const struct config_api *api,
	      const struct body_info *info, struct worker *w, struct upstream_call *call)
{
	const char *upstream_model =
		info->model != NULL ? config_api_model(api, info->model) : NULL;
	char *rewritten = NULL, *url = NULL;
	struct curl_slist *headers = NULL;
	const char **secrets = NULL;
	size_t rewritten_len = 0;
	enum upstream_result res = UPSTREAM_NO_ANSWER;

	call->body = r->body;
	call->body_len = r->body_len;
	call->failure = false;
	call->local_error = false;
	call->status = 0;
	if (upstream_model != NULL && strcmp(upstream_model, info->model) != 0) {
		if (body_rewrite_model(r->content_type, r->body, r->body_len, upstream_model,
				       &rewritten, &rewritten_len) != 0) {
			snprintf(call->error, sizeof(call->error), "cannot rewrite the model");
			goto out;
		}
		call->body = rewritten;
		call->body_len = rewritten_len;
	}
	url = upstream_url(api->base_url, r->path, r->query);
	headers = upstream_headers(r, api);
	/* The endpoint's key and extra header values (an Azure api-key...). */
	secrets = calloc(api->n_headers + 1, sizeof(*secrets));
	if (url == NULL || headers == NULL || secrets == NULL) {
		snprintf(call->error, sizeof(call->error), "out of memory");
		goto out;
	}
	secrets[0] = api->api_key;
	for (size_t i = 0; i < api->n_headers; i++)
		secrets[i + 1] = api->headers[i].value;
	call->secrets = secrets;
	call->n_secrets = api->n_headers + 1;
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
	free(rewritten);
	return res;
}

/* Reads and checks the body; answers the client itself when it is refused. */
static int
proxy_read_body(struct request *r, const struct config *cfg, struct body_info *info)
{
	char err[512];
	int rc = request_read_body(r, cfg->max_body_bytes);

	if (rc == 1)
		return response_error(r->fcgi->out, RESP_REQUEST_TOO_LARGE, NULL, 0, cfg->cors);
	if (rc != 0)
		return response_error(r->fcgi->out, RESP_INCOMPLETE_BODY, NULL, 0, cfg->cors);
	if (body_inspect(r->content_type, r->body, r->body_len, info, err, sizeof(err)) != 0)
		return response_error(r->fcgi->out, RESP_INVALID_JSON, err, 0, cfg->cors);
	return 0;
}

int
proxy_handle(struct request *r, const struct config *cfg, struct worker *w)
{
	struct body_info info = {0};
	struct proxy_trace trace = {0};
	struct upstream_call call;
	struct upstream_answer last = {0};
	struct store_endpoint *eps = NULL;
	struct store_cooldown cd = {cfg->cooldown_failures, cfg->cooldown_seconds};
	size_t *idx = NULL, *map = NULL, n;
	double *weights = NULL;
	bool *tried = NULL;
	struct store *st;
	char err[300];
	int status;

	memset(&call, 0, sizeof(call));
	status = proxy_read_body(r, cfg, &info);
	if (status != 0) {
		metrics_reject(w, cfg, STORE_REJECT_BAD_INPUT);
		goto done;
	}
	idx = calloc(cfg->n_apis + 1, sizeof(*idx));
	eps = calloc(cfg->n_apis + 1, sizeof(*eps));
	weights = calloc(cfg->n_apis + 1, sizeof(*weights));
	tried = calloc(cfg->n_apis + 1, sizeof(*tried));
	map = calloc(cfg->n_apis + 1, sizeof(*map));
	if (idx == NULL || eps == NULL || weights == NULL || tried == NULL || map == NULL) {
		status = response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cfg->cors);
		goto done;
	}
	n = route_candidates(cfg, info.model, idx);
	if (n == 0) {
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
	bool have_answer = false;
	for (long attempt = 0; attempt < cfg->max_retries; attempt++) {
		/* The endpoints not yet tried, in the same order each time. */
		size_t m = 0;
		for (size_t i = 0; i < n; i++) {
			if (tried[i])
				continue;
			const struct config_api *a = &cfg->apis[idx[i]];
			eps[m] = (struct store_endpoint){a->id, a->rpm, a->rpd};
			weights[m] = a->weight;
			map[m++] = i;
		}
		if (m == 0)
			break;
		struct route_pick pick = {weights, &w->rng};
		struct store_reservation res;
		if (store_reserve(st, eps, m, clock_now_ms(), route_pick, &pick, &res, err,
				  sizeof(err)) != 0) {
			log_error("%s cannot be used: %s", store_what(st), err);
			if (trace.attempts == 0) {
				status = response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL,
							0, cfg->cors);
				goto done;
			}
			break;
		}
		if (res.verdict != STORE_RESERVED) {
			if (trace.attempts == 0) {
				bool limited = res.verdict == STORE_LIMITED;
				enum response_error e =
					limited ? RESP_RATE_LIMITED : RESP_NO_AVAILABLE_API;
				metrics_reject(w, cfg,
					       limited ? STORE_REJECT_RATE_LIMIT
						       : STORE_REJECT_COOLDOWN);
				status = response_error(r->fcgi->out, e, NULL, res.retry_after_s,
							cfg->cors);
				goto done;
			}
			break;
		}
		size_t ci = map[res.chosen];
		const struct config_api *api = &cfg->apis[idx[ci]];
		tried[ci] = true;
		trace.attempts++;

		struct proxy_recorder rec = {.st = st,
					     .id = api->id,
					     .cd = &cd,
					     .retry = trace.attempts > 1,
					     .stream = info.stream};
		call.on_outcome = proxy_record_outcome;
		call.on_long = w->long_request;
		call.on_long_ctx = w->pool;
		call.on_outcome_ctx = &rec;
		enum upstream_result ur = proxy_attempt(r, cfg, api, &info, w, &call);
		/* The gateway's own failure is no endpoint's: nothing to record,
		 * and no other endpoint would fare better. */
		if (call.local_error) {
			log_error("cannot forward to %s: %s", api->id, call.error);
			proxy_trace_add(&trace, api->id, "local-error");
			status = response_error(r->fcgi->out, RESP_INTERNAL,
						"The request cannot be forwarded.", 0, cfg->cors);
			goto done;
		}
		if (ur != UPSTREAM_CLIENT_GONE && !rec.done)
			proxy_record_outcome(&rec, &call);
		char what[64];
		if (ur == UPSTREAM_NO_ANSWER) {
			snprintf(what, sizeof(what), "error");
			log_warn("endpoint %s: no answer: %s", api->id, call.error);
		} else {
			snprintf(what, sizeof(what), "%ld", call.status);
		}
		proxy_trace_add(&trace, api->id, what);
		if (ur == UPSTREAM_SENT || ur == UPSTREAM_CLIENT_GONE) {
			status = ur == UPSTREAM_SENT ? (int)call.status : 499;
			goto done;
		}
		if (ur == UPSTREAM_HELD) {
			upstream_answer_free(&last);
			last = call.held;
			memset(&call.held, 0, sizeof(call.held));
			have_answer = true;
		}
	}
	if (have_answer) {
		upstream_answer_send(&last, r->fcgi->out, cfg->cors);
		status = (int)last.status;
	} else {
		status =
			response_error(r->fcgi->out, RESP_UPSTREAM_UNREACHABLE, NULL, 0, cfg->cors);
	}
done:
	proxy_log(r, info.model, &trace, status);
	upstream_answer_free(&last);
	upstream_answer_free(&call.held);
	body_info_free(&info);
	free(idx);
	free(eps);
	free(weights);
	free(tried);
	free(map);
	return status;
}

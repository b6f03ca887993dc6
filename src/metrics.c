#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dynbuf.h"
#include "log.h"
#include "response.h"
#include "worker.h"

/* The page's bound. An endpoint takes about 50 lines of under 100 bytes
 * plus its id (twice as long at most, escaped): 64 MiB is some 4,000
 * endpoints with 100-byte ids, far beyond any config. A page that would pass
 * it is refused (500), not cut. */
#define METRICS_PAGE_MAX (64u * 1024 * 1024)

/* A label value as the text format wants it: backslash, double quote and
 * line feed escaped (an endpoint id is free text in the config). */
static void
metrics_label(struct dynbuf *b, const char *v)
{
	for (;;) {
		size_t n = strcspn(v, "\\\"\n");
		dynbuf_add(b, v, n);
		v += n;
		if (*v == '\0')
			return;
		dynbuf_add(b, *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : "\\n", 2);
		v++;
	}
}

static void
metrics_head(struct dynbuf *b, const char *name, const char *type, const char *help)
{
	dynbuf_printf(b, "# HELP api_together_%s %s\n# TYPE api_together_%s %s\n", name, help, name,
		      type);
}

/* One sample: name{endpoint="id"[,extra]} value. */
static void
metrics_ep(struct dynbuf *b, const char *name, const char *id, const char *extra, long long v)
{
	dynbuf_printf(b, "api_together_%s{endpoint=\"", name);
	metrics_label(b, id);
	dynbuf_printf(b, "\"%s%s} %lld\n", extra != NULL ? "," : "", extra != NULL ? extra : "", v);
}

/* Seconds from ms, exactly (three decimals at most). */
static void
metrics_seconds(struct dynbuf *b, long long ms)
{
	dynbuf_printf(b, "%lld.%03lld", ms / 1000, ms % 1000);
}

static void
metrics_hist(struct dynbuf *b, const char *name, const char *id, const struct store_hist *h)
{
	char bucket[64], count[64];
	long long cum = 0;

	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	snprintf(count, sizeof(count), "%s_count", name);
	for (size_t i = 0; i < STORE_HIST_N; i++) {
		char le[40];
		cum += h->bucket[i];
		snprintf(le, sizeof(le), "le=\"%ld.%03ld\"", store_hist_bounds_ms[i] / 1000,
			 store_hist_bounds_ms[i] % 1000);
		metrics_ep(b, bucket, id, le, cum);
	}
	metrics_ep(b, bucket, id, "le=\"+Inf\"", h->count);
	dynbuf_printf(b, "api_together_%s_sum{endpoint=\"", name);
	metrics_label(b, id);
	dynbuf_printf(b, "\"} ");
	metrics_seconds(b, h->sum_ms);
	dynbuf_printf(b, "\n");
	metrics_ep(b, count, id, NULL, h->count);
}

static const char *const metrics_class_label[STORE_CLASS_N] = {
	"code_class=\"none\"", "code_class=\"1xx\"", "code_class=\"2xx\"",
	"code_class=\"3xx\"",  "code_class=\"4xx\"", "code_class=\"5xx\""};

static const char *const metrics_reject_label[STORE_REJECT_N] = {"auth", "bad_input", "rate_limit",
								 "cooldown"};

/* The four limits of an endpoint's key and of a model on it
 * (doc/behaviour.md, Limits and state): a row each, so that every series
 * of used against limit is written by one loop. */
enum metrics_limit { METRICS_RPM, METRICS_RPD, METRICS_TPM, METRICS_TPD, METRICS_LIMIT_N };

static const struct metrics_limit_row {
	const char *name;  /* of the series NAME_used, NAME_limit, key_NAME_used, the label */
	const char *upper; /* in the limit's help */
	const char *what;  /* the used series' help, without its end */
	const char *more;  /* added to the endpoint's used help */
} metrics_limits[METRICS_LIMIT_N] = {
	[METRICS_RPM] = {"rpm", "RPM", "Attempts in the last 60 s", ""},
	[METRICS_RPD] = {"rpd", "RPD", "Attempts today (local day)", ""},
	[METRICS_TPM] = {"tpm", "TPM", "Tokens in the last 60 s",
			 ", estimates of attempts in flight included"},
	[METRICS_TPD] = {"tpd", "TPD", "Tokens today (local day)",
			 ", estimates of attempts in flight included"},
};

/* What u used of limit l. */
static long long
metrics_used(const struct store_usage *u, enum metrics_limit l)
{
	const long long used[METRICS_LIMIT_N] = {u->rpm_used, u->rpd_used, u->tpm_used,
						 u->tpd_used};
	return used[l];
}

/* Limit l of rpm, rpd, tpm, tpd (-1 unlimited). */
static long
metrics_cap(long rpm, long rpd, long tpm, long tpd, enum metrics_limit l)
{
	const long cap[METRICS_LIMIT_N] = {rpm, rpd, tpm, tpd};
	return cap[l];
}

/* The endpoints' series and the refusals (metrics_render's page) onto b. */
static void
metrics_endpoints(struct dynbuf *b, const struct store_endpoint *eps, const struct store_usage *u,
		  size_t n, const long long *rejects, int64_t now_ms)
{
	metrics_head(b, "requests_total", "counter",
		     "Attempts that ended, by endpoint and the class of the upstream's answer "
		     "(none: no HTTP answer).");
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < STORE_CLASS_N; k++)
			if (k != STORE_CLASS_1XX)
				metrics_ep(b, "requests_total", eps[i].id, metrics_class_label[k],
					   u[i].answers[k]);
	metrics_head(b, "attempts_total", "counter",
		     "Attempts reserved on an endpoint (what its RPM and RPD limits count).");
	for (size_t i = 0; i < n; i++)
		metrics_ep(b, "attempts_total", eps[i].id, NULL, u[i].attempts);
	metrics_head(b, "retries_total", "counter",
		     "Attempts that were not their request's first.");
	for (size_t i = 0; i < n; i++)
		metrics_ep(b, "retries_total", eps[i].id, NULL, u[i].retries);
	metrics_head(b, "rejections_total", "counter",
		     "Requests the gateway refused itself, by reason.");
	for (size_t k = 0; k < STORE_REJECT_N; k++)
		dynbuf_printf(b, "api_together_rejections_total{reason=\"%s\"} %lld\n",
			      metrics_reject_label[k], rejects[k]);
	metrics_head(b, "tokens_total", "counter",
		     "Tokens the upstreams reported, by endpoint and kind (POST /v1/token/reset "
		     "zeroes them).");
	for (size_t i = 0; i < n; i++) {
		metrics_ep(b, "tokens_total", eps[i].id, "kind=\"prompt\"", u[i].prompt_tokens);
		metrics_ep(b, "tokens_total", eps[i].id, "kind=\"completion\"",
			   u[i].completion_tokens);
		metrics_ep(b, "tokens_total", eps[i].id, "kind=\"total\"", u[i].total_tokens);
	}
	metrics_head(b, "upstream_latency_seconds", "histogram",
		     "Time from an attempt's start to the last byte of its answer (a stream's "
		     "end), attempts with an HTTP answer.");
	for (size_t i = 0; i < n; i++)
		metrics_hist(b, "upstream_latency_seconds", eps[i].id, &u[i].latency);
	metrics_head(b, "stream_ttfb_seconds", "histogram",
		     "Time from a stream's start to the first byte of the upstream's answer.");
	for (size_t i = 0; i < n; i++)
		metrics_hist(b, "stream_ttfb_seconds", eps[i].id, &u[i].ttfb);
	metrics_head(b, "cooldown_active", "gauge", "1 while the endpoint cools down.");
	for (size_t i = 0; i < n; i++)
		metrics_ep(b, "cooldown_active", eps[i].id, NULL,
			   u[i].cooldown_until > now_ms ? 1 : 0);
	metrics_head(b, "cooldown_until_seconds", "gauge",
		     "Unix time its cooldown ends; 0 when none.");
	for (size_t i = 0; i < n; i++) {
		int64_t cu = u[i].cooldown_until > now_ms ? u[i].cooldown_until : 0;
		dynbuf_printf(b, "api_together_cooldown_until_seconds{endpoint=\"");
		metrics_label(b, eps[i].id);
		dynbuf_printf(b, "\"} ");
		metrics_seconds(b, cu);
		dynbuf_printf(b, "\n");
	}
	metrics_head(b, "failure_run", "gauge", "Failures in a row of the endpoint.");
	for (size_t i = 0; i < n; i++)
		metrics_ep(b, "failure_run", eps[i].id, NULL, u[i].fail_run);
	metrics_head(b, "estimated_answers_total", "counter",
		     "Answers whose tokens were their estimate: streams served without usage "
		     "on an endpoint with a token limit.");
	for (size_t i = 0; i < n; i++)
		metrics_ep(b, "estimated_answers_total", eps[i].id, NULL, u[i].estimated_answers);
	/* An unlimited endpoint has no limit series: no ratio to draw. */
	for (size_t l = 0; l < METRICS_LIMIT_N; l++) {
		const struct metrics_limit_row *row = &metrics_limits[l];
		char used[32], limit[32];
		snprintf(used, sizeof(used), "%s_used", row->name);
		snprintf(limit, sizeof(limit), "%s_limit", row->name);
		dynbuf_printf(b, "# HELP api_together_%s %s%s.\n# TYPE api_together_%s gauge\n",
			      used, row->what, row->more, used);
		for (size_t i = 0; i < n; i++)
			metrics_ep(b, used, eps[i].id, NULL, metrics_used(&u[i], l));
		dynbuf_printf(b,
			      "# HELP api_together_%s %s limit (absent: unlimited).\n"
			      "# TYPE api_together_%s gauge\n",
			      limit, row->upper, limit);
		for (size_t i = 0; i < n; i++) {
			long cap = metrics_cap(eps[i].rpm, eps[i].rpd, eps[i].tpm, eps[i].tpd, l);
			if (cap >= 0)
				metrics_ep(b, limit, eps[i].id, NULL, cap);
		}
	}
}

char *
metrics_render(const struct store_endpoint *eps, const struct store_usage *u, size_t n,
	       const long long *rejects, int64_t now_ms, size_t *len)
{
	struct dynbuf b;

	dynbuf_init(&b, METRICS_PAGE_MAX);
	metrics_endpoints(&b, eps, u, n, rejects, now_ms);
	/* Out of memory or over the bound: no page rather than a cut one. */
	return dynbuf_take(&b, len);
}

static const char *const metrics_key_states[] = {"active", "cooling", "exhausted", "rejected",
						 "paused"};
#define METRICS_KEY_STATES (sizeof(metrics_key_states) / sizeof(metrics_key_states[0]))

/* The state an endpoint's key is shown in (as /v1/status's keys): paused
 * by an operator (itself or its endpoint) whatever else it is. */
static size_t
metrics_key_state(const struct store_usage *u)
{
	if (u->paused != 0)
		return 4;
	switch (u->key_state) {
	case STORE_KEY_COOLING:
	case STORE_KEY_FAILING:
		return 1;
	case STORE_KEY_EXHAUSTED:
		return 2;
	case STORE_KEY_REJECTED:
		return 3;
	case STORE_KEY_ACTIVE:
	case STORE_KEY_PAUSED: /* a reservation's reason only */
	case STORE_KEY_STATE_N:
		break;
	}
	return 0;
}

/* One key's sample: name{endpoint="id",key="...abcd"[,extra]} value. */
static void
metrics_key(struct dynbuf *b, const char *name, const char *id, const char *tail, const char *extra,
	    long long v)
{
	dynbuf_printf(b, "api_together_%s{endpoint=\"", name);
	metrics_label(b, id);
	dynbuf_printf(b, "\",key=\"\u2026");
	metrics_label(b, tail);
	dynbuf_printf(b, "\"%s%s} %lld\n", extra != NULL ? "," : "", extra != NULL ? extra : "", v);
}

/* Appends the keys' series (doc/behaviour.md, Key pools) to the page b:
 * each key by its last 4 characters only. Out of memory or over the bound,
 * b fails (dynbuf_take then gives no page). */
static void
metrics_keys(struct dynbuf *b, const struct config *cfg, const struct worker_usage *wu)
{
	metrics_head(b, "key_state", "gauge",
		     "1 for the state a key of the endpoint is in (its last 4 characters).");
	for (size_t i = 0; i < cfg->n_apis; i++) {
		const struct config_api *a = &cfg->apis[i];
		for (size_t k = 0; k < a->n_keys; k++) {
			size_t now = metrics_key_state(&wu->keys[wu->first[i] + k]);
			for (size_t j = 0; j < METRICS_KEY_STATES; j++) {
				char extra[32];
				snprintf(extra, sizeof(extra), "state=\"%s\"",
					 metrics_key_states[j]);
				metrics_key(b, "key_state", a->id, a->keys[k].tail, extra,
					    j == now);
			}
		}
	}
	for (size_t l = 0; l < METRICS_LIMIT_N; l++) {
		char name[32];
		snprintf(name, sizeof(name), "key_%s_used", metrics_limits[l].name);
		dynbuf_printf(b,
			      "# HELP api_together_%s %s, by key.\n# TYPE api_together_%s gauge\n",
			      name, metrics_limits[l].what, name);
		for (size_t i = 0; i < cfg->n_apis; i++)
			for (size_t k = 0; k < cfg->apis[i].n_keys; k++)
				metrics_key(b, name, cfg->apis[i].id, cfg->apis[i].keys[k].tail,
					    NULL, metrics_used(&wu->keys[wu->first[i] + k], l));
	}
	metrics_head(b, "key_estimated_answers_total", "counter",
		     "Answers whose tokens were their estimate, by key.");
	for (size_t i = 0; i < cfg->n_apis; i++)
		for (size_t k = 0; k < cfg->apis[i].n_keys; k++)
			metrics_key(b, "key_estimated_answers_total", cfg->apis[i].id,
				    cfg->apis[i].keys[k].tail, NULL,
				    wu->keys[wu->first[i] + k].estimated_answers);
}

/* One model's sample: name{endpoint="id",[key="...abcd",]model="m",limit="l"} v. */
static void
metrics_model(struct dynbuf *b, const char *name, const char *id, const char *tail,
	      const char *model, enum metrics_limit l, long long v)
{
	dynbuf_printf(b, "api_together_%s{endpoint=\"", name);
	metrics_label(b, id);
	if (tail != NULL) {
		dynbuf_printf(b, "\",key=\"\u2026");
		metrics_label(b, tail);
	}
	dynbuf_printf(b, "\",model=\"");
	metrics_label(b, model);
	dynbuf_printf(b, "\",limit=\"%s\"} %lld\n", metrics_limits[l].name, v);
}

/* Appends the series of apis[].modelLimits (doc/behaviour.md, Limits and
 * state, rule 27) to the page b: each model's use on each key and its
 * limits (per key; absent: unlimited). Returns 0, or -1 with err when the
 * store cannot be read; b fails as metrics_keys'. */
static int
metrics_models(struct dynbuf *b, const struct config *cfg, struct store *st, int64_t now, char *err,
	       size_t errlen)
{
	struct store_usage *u = NULL;

	metrics_head(b, "model_used", "gauge",
		     "Use of a model of modelLimits on a key: attempts (rpm, rpd) or tokens "
		     "(tpm, tpd, estimates in flight included) of the last 60 s or the day.");
	for (size_t i = 0; i < cfg->n_apis; i++) {
		const struct config_api *a = &cfg->apis[i];
		if (a->n_model_limits == 0)
			continue;
		if (worker_model_usage_read(st, a, now, &u, err, errlen) != 0)
			return -1;
		for (size_t m = 0; m < a->n_model_limits; m++)
			for (size_t k = 0; k < a->n_keys; k++)
				for (size_t l = 0; l < METRICS_LIMIT_N; l++)
					metrics_model(b, "model_used", a->id, a->keys[k].tail,
						      a->model_limits[m].model, l,
						      metrics_used(&u[m * a->n_keys + k], l));
		free(u);
		u = NULL;
	}
	metrics_head(b, "model_limit", "gauge",
		     "A model's limit of modelLimits, per key (absent: unlimited).");
	for (size_t i = 0; i < cfg->n_apis; i++) {
		const struct config_api *a = &cfg->apis[i];
		for (size_t m = 0; m < a->n_model_limits; m++) {
			const struct config_model_limit *ml = &a->model_limits[m];
			for (size_t l = 0; l < METRICS_LIMIT_N; l++) {
				long cap = metrics_cap(ml->rpm, ml->rpd, ml->tpm, ml->tpd, l);
				if (cap >= 0)
					metrics_model(b, "model_limit", a->id, NULL, ml->model, l,
						      cap);
			}
		}
	}
	return 0;
}

/* One client's sample: name{client="..."[,extra]} value. */
static void
metrics_client(struct dynbuf *b, const char *name, const char *client, const char *extra,
	       long long v)
{
	dynbuf_printf(b, "api_together_%s{client=\"", name);
	metrics_label(b, client);
	dynbuf_printf(b, "\"%s%s} %lld\n", extra != NULL ? "," : "", extra != NULL ? extra : "", v);
}

/* Appends the clients' series (doc/behaviour.md, Limits and state: usage
 * per client) to the page b: each client by its name or its key's last 4
 * characters, never the key; counts since its book began. b fails as
 * metrics_keys'. */
static void
metrics_clients(struct dynbuf *b, const struct store_clients *sc)
{
	metrics_head(b, "client_requests_total", "counter",
		     "Answers served (2xx) to the client, by client.");
	for (size_t i = 0; i < sc->n; i++)
		metrics_client(b, "client_requests_total", sc->c[i].client, NULL,
			       sc->c[i].book.all.requests);
	metrics_head(b, "client_tokens_total", "counter",
		     "Tokens of the answers served to the client, by client and type.");
	for (size_t i = 0; i < sc->n; i++) {
		const struct usage_count *c = &sc->c[i].book.all;
		metrics_client(b, "client_tokens_total", sc->c[i].client, "type=\"prompt\"",
			       c->prompt);
		metrics_client(b, "client_tokens_total", sc->c[i].client, "type=\"completion\"",
			       c->completion);
		metrics_client(b, "client_tokens_total", sc->c[i].client, "type=\"total\"",
			       c->total);
	}
}

int
metrics_handle(struct request *r, const struct config *cfg, struct worker *w)
{
	struct store_endpoint *eps = calloc(cfg->n_apis + 1, sizeof(*eps));
	struct store_clients sc = {0};
	struct worker_usage wu = {0};
	struct dynbuf page;
	struct store *st = worker_store(w, cfg);
	long long rejects[STORE_REJECT_N];
	int64_t now = clock_now_ms();
	char err[300], *text = NULL;
	size_t len = 0;
	int status;

	dynbuf_init(&page, METRICS_PAGE_MAX);
	if (eps == NULL) {
		status = response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cfg->cors);
		goto out;
	}
	worker_store_endpoints(cfg, eps);
	if (st == NULL || worker_usage_read(st, cfg, now, &wu, err, sizeof(err)) != 0 ||
	    store_read_rejects(st, rejects, err, sizeof(err)) != 0 ||
	    store_read_clients(st, NULL, now, &sc, err, sizeof(err)) != 0) {
		if (st != NULL)
			log_error("%s cannot be read: %s", store_what(st), err);
		status = response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
		goto out;
	}
	metrics_endpoints(&page, eps, wu.apis, cfg->n_apis, rejects, now);
	metrics_keys(&page, cfg, &wu);
	if (metrics_models(&page, cfg, st, now, err, sizeof(err)) != 0) {
		log_error("%s cannot be read: %s", store_what(st), err);
		status = response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
		goto out;
	}
	metrics_clients(&page, &sc);
	/* Out of memory or over the bound: no page rather than a cut one. */
	text = dynbuf_take(&page, &len);
	if (text == NULL) {
		status = response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cfg->cors);
		goto out;
	}
	status = 200;
	response_begin(r->fcgi->out, &(struct response_head){.status = 200,
							     .content_type = METRICS_CONTENT_TYPE,
							     .cors = cfg->cors});
	response_header(r->fcgi->out, "Cache-Control", "no-store");
	response_header_number(r->fcgi->out, "Content-Length", (long long)len);
	response_end_headers(r->fcgi->out);
	if (strcmp(r->method, "HEAD") != 0)
		FCGX_PutStr(text, (int)len, r->fcgi->out);
out:
	dynbuf_free(&page);
	free(text);
	free(eps);
	worker_usage_free(&wu);
	store_clients_free(&sc);
	return status;
}

void
metrics_reject(struct worker *w, const struct config *cfg, enum store_reject why)
{
	char err[300];

	/* No store to open: the count is this process's until the main thread
	 * folds it in (store_count), so a refusal costs no lock. */
	(void)w, (void)cfg;
	if (store_count(NULL, why, err, sizeof(err)) != 0)
		log_error("refusal not counted: %s", err);
}

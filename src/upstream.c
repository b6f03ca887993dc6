#include "upstream.h"

#include <poll.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "response.h"

/* How much of a non-stream answer is read before deciding it is not empty,
 * and how much of a failed answer is kept for the client. */
#define UPSTREAM_BUFFER_MAX (1024 * 1024)

static const char *const upstream_hop_by_hop[] = {
	"Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Proxy-Connection",
	"TE",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
	NULL,
};

static bool
upstream_name_in(const char *name, const char *const *list)
{
	for (size_t i = 0; list[i] != NULL; i++)
		if (strcasecmp(name, list[i]) == 0)
			return true;
	return false;
}

/* True when the comma-separated list holds name. */
static bool
upstream_token_listed(const char *list, const char *name)
{
	size_t nlen = strlen(name);

	while (list != NULL && *list != '\0') {
		while (*list == ' ' || *list == '\t' || *list == ',')
			list++;
		const char *end = list;
		while (*end != '\0' && *end != ',')
			end++;
		const char *e = end;
		while (e > list && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - list) == nlen && strncasecmp(list, name, nlen) == 0)
			return true;
		list = end;
	}
	return false;
}

bool
upstream_request_header_passes(const char *name, const char *connection)
{
	static const char *const dropped[] = {
		"Authorization",  "X-Api-Key",       "Host",   "Cookie",
		"Content-Length", "Accept-Encoding", "Expect", NULL,
	};

	if (upstream_name_in(name, dropped) || upstream_name_in(name, upstream_hop_by_hop))
		return false;
	return !upstream_token_listed(connection, name);
}

bool
upstream_response_header_passes(const char *name)
{
	static const char *const dropped[] = {"Content-Length", "Status", NULL};

	return !upstream_name_in(name, dropped) && !upstream_name_in(name, upstream_hop_by_hop);
}

bool
upstream_status_retryable(long status)
{
	return status == 401 || status == 403 || status == 408 || status == 409 || status == 429 ||
	       status >= 500;
}

char *
upstream_url(const char *base_url, const char *path, const char *query)
{
	const char *scheme_end = strstr(base_url, "://");
	const char *base_path = scheme_end != NULL ? strchr(scheme_end + 3, '/') : NULL;
	size_t origin_len = base_path != NULL ? (size_t)(base_path - base_url) : strlen(base_url);
	const char *rest = path;
	char *url;
	size_t n;

	if (base_path != NULL && base_path[1] != '\0' && strncmp(path, "/v1", 3) == 0 &&
	    (path[3] == '/' || path[3] == '\0'))
		rest = path + 3;
	else
		base_path = NULL;
	n = origin_len + (base_path != NULL ? strlen(base_path) : 0) + strlen(rest) +
	    (query != NULL ? strlen(query) + 1 : 0) + 1;
	url = malloc(n);
	if (url == NULL)
		return NULL;
	snprintf(url, n, "%.*s%s%s%s%s", (int)origin_len, base_url,
		 base_path != NULL ? base_path : "", rest, query != NULL ? "?" : "",
		 query != NULL ? query : "");
	return url;
}

static struct curl_slist *
upstream_append(struct curl_slist *list, const char *name, const char *value, bool *ok)
{
	char line[8192];
	struct curl_slist *n;

	if (!*ok)
		return list;
	/* "Name;" is how libcurl sends a header with an empty value: "Name:"
	 * would remove it instead. */
	int n0 = *value == '\0' ? snprintf(line, sizeof(line), "%s;", name)
				: snprintf(line, sizeof(line), "%s: %s", name, value);
	if (n0 < 0 || (size_t)n0 >= sizeof(line))
		return list; /* an absurd header is dropped rather than cut */
	n = curl_slist_append(list, line);
	if (n == NULL) {
		*ok = false;
		return list;
	}
	return n;
}

struct curl_slist *
upstream_headers(const struct request *r, const struct config_api *api)
{
	const char *connection = request_header(r, "Connection");
	struct curl_slist *list = NULL;
	char bearer[4096];
	bool ok = true;

	for (size_t i = 0; i < r->n_headers; i++) {
		const struct request_header *h = &r->headers[i];
		if (!upstream_request_header_passes(h->name, connection) ||
		    strpbrk(h->value, "\r\n") != NULL)
			continue;
		/* The endpoint's own headers win over the client's. */
		bool overridden = false;
		for (size_t j = 0; j < api->n_headers; j++)
			if (strcasecmp(api->headers[j].key, h->name) == 0)
				overridden = true;
		if (!overridden)
			list = upstream_append(list, h->name, h->value, &ok);
	}
	if (api->api_key[0] != '\0' &&
	    (size_t)snprintf(bearer, sizeof(bearer), "Bearer %s", api->api_key) < sizeof(bearer))
		list = upstream_append(list, "Authorization", bearer, &ok);
	for (size_t j = 0; j < api->n_headers; j++)
		list = upstream_append(list, api->headers[j].key, api->headers[j].value, &ok);
	/* No "Expect: 100-continue" round trip, and no Accept: curl's default. */
	if (ok) {
		struct curl_slist *n = curl_slist_append(list, "Expect:");
		if (n != NULL)
			list = n;
		else
			ok = false;
	}
	if (!ok) {
		curl_slist_free_all(list);
		return NULL;
	}
	return list;
}

enum upstream_mode {
	MODE_UNDECIDED, /* no body byte yet */
	MODE_HOLD,      /* a failed answer: kept, not sent */
	MODE_BUFFER,    /* a success, read whole to check it is not empty */
	MODE_PASS       /* going to the client as it comes */
};

struct upstream_xfer {
	struct upstream_call *call;
	enum upstream_mode mode;
	long status;
	char *head;
	size_t head_len, head_cap;
	bool event_stream;
	bool has_cors;
	char *buf;
	size_t len, cap;
	struct sse_parser *sse;
	bool client_gone;
	bool oom;
	bool idle_timeout;
	/* Silence detection: progress seen last, and when it last moved. */
	curl_off_t seen_dl, seen_ul;
	struct timespec active;
};

static int
upstream_grow(char **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 4096;
	while (ncap < need)
		ncap *= 2;
	char *n = realloc(*p, ncap);
	if (n == NULL)
		return -1;
	*p = n;
	*cap = ncap;
	return 0;
}

static size_t
upstream_on_header(char *data, size_t size, size_t nitems, void *ud)
{
	struct upstream_xfer *x = ud;
	size_t len = size * nitems;
	size_t n = len;

	clock_gettime(CLOCK_MONOTONIC, &x->active);
	while (n > 0 && (data[n - 1] == '\r' || data[n - 1] == '\n'))
		n--;
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* A new status line (again after a 1xx): start over. */
		const char *sp = memchr(data, ' ', n);
		x->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
		x->head_len = 0;
		x->event_stream = false;
		x->has_cors = false;
		return len;
	}
	const char *colon = memchr(data, ':', n);
	if (colon == NULL || colon == data)
		return len;
	char name[128];
	size_t nlen = (size_t)(colon - data);
	if (nlen >= sizeof(name))
		return len;
	memcpy(name, data, nlen);
	name[nlen] = '\0';
	if (!upstream_response_header_passes(name))
		return len;
	if (strcasecmp(name, "Content-Type") == 0) {
		const char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		x->event_stream = strncasecmp(v, "text/event-stream", 17) == 0;
	}
	if (strcasecmp(name, "Access-Control-Allow-Origin") == 0)
		x->has_cors = true;
	if (upstream_grow(&x->head, &x->head_cap, x->head_len + n + 2) != 0) {
		x->oom = true;
		return 0;
	}
	memcpy(x->head + x->head_len, data, n);
	x->head_len += n;
	memcpy(x->head + x->head_len, "\r\n", 2);
	x->head_len += 2;
	return len;
}

/* Writes status and headers to the client: the answer is committed. */
static void
upstream_commit(struct upstream_xfer *x, long content_length)
{
	FCGX_Stream *out = x->call->client->out;

	response_printf(out, "Status: %ld %s\r\n", x->status, response_reason((int)x->status));
	FCGX_PutStr(x->head, (int)x->head_len, out);
	if (x->call->cors && !x->has_cors)
		FCGX_PutS(RESPONSE_CORS_HEADER, out);
	if (x->event_stream)
		FCGX_PutS("X-Accel-Buffering: no\r\n", out);
	if (content_length >= 0)
		response_printf(out, "Content-Length: %ld\r\n", content_length);
	FCGX_PutS("\r\n", out);
	x->mode = MODE_PASS;
}

/* Sends bytes to the client; a stream is flushed at once. False when the
 * client is gone. */
static bool
upstream_to_client(struct upstream_xfer *x, const char *data, size_t len, bool flush)
{
	FCGX_Stream *out = x->call->client->out;

	if (len > 0 && FCGX_PutStr(data, (int)len, out) < 0)
		return false;
	if (flush && FCGX_FFlush(out) < 0)
		return false;
	return true;
}

static enum upstream_mode
upstream_decide(const struct upstream_xfer *x)
{
	if (upstream_status_retryable(x->status))
		return MODE_HOLD;
	if (x->status >= 200 && x->status < 300 && !x->event_stream && !x->call->stream)
		return MODE_BUFFER;
	return MODE_PASS;
}

static size_t
upstream_on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct upstream_xfer *x = ud;
	size_t len = size * nmemb;

	if (x->mode == MODE_UNDECIDED) {
		x->mode = upstream_decide(x);
		if (x->mode == MODE_PASS)
			upstream_commit(x, -1);
	}
	switch (x->mode) {
	case MODE_HOLD:
		if (x->len < UPSTREAM_BUFFER_MAX) {
			size_t take = len;
			if (take > UPSTREAM_BUFFER_MAX - x->len)
				take = UPSTREAM_BUFFER_MAX - x->len;
			if (upstream_grow(&x->buf, &x->cap, x->len + take) != 0) {
				x->oom = true;
				return 0;
			}
			memcpy(x->buf + x->len, data, take);
			x->len += take;
		}
		return len;
	case MODE_BUFFER:
		if (x->len + len <= UPSTREAM_BUFFER_MAX) {
			if (upstream_grow(&x->buf, &x->cap, x->len + len) != 0) {
				x->oom = true;
				return 0;
			}
			memcpy(x->buf + x->len, data, len);
			x->len += len;
			return len;
		}
		/* Too large to be an empty answer: pass it on from here. */
		upstream_commit(x, -1);
		if (!upstream_to_client(x, x->buf, x->len, false)) {
			x->client_gone = true;
			return 0;
		}
		x->len = 0;
		break;
	default:
		break;
	}
	if (x->event_stream && x->sse != NULL)
		sse_parser_feed(x->sse, data, len);
	if (!upstream_to_client(x, data, len, x->event_stream || x->call->stream)) {
		x->client_gone = true;
		return 0;
	}
	return len;
}

static double
upstream_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Called by libcurl about once a second even while nothing moves. Stops the
 * transfer when the client has gone, even while the upstream is silent and
 * no write would notice (NOTES-fastcgi.md, libfcgi); and when the upstream
 * has been silent for timeout_s. libcurl's LOW_SPEED check would average
 * over a window that includes the upload and notice silence seconds late. */
static int
upstream_on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		     curl_off_t ulnow)
{
	struct upstream_xfer *x = ud;
	struct pollfd p = {.fd = x->call->client->ipcFd, .events = POLLRDHUP};

	(void)dltotal, (void)ultotal;
	if (p.fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
		x->client_gone = true;
		return 1;
	}
	if (dlnow != x->seen_dl || ulnow != x->seen_ul) {
		x->seen_dl = dlnow;
		x->seen_ul = ulnow;
		clock_gettime(CLOCK_MONOTONIC, &x->active);
	} else if (upstream_since(&x->active) >= (double)x->call->timeout_s) {
		x->idle_timeout = true;
		return 1;
	}
	return 0;
}

static void
upstream_hold(struct upstream_xfer *x)
{
	struct upstream_answer *a = &x->call->held;

	upstream_answer_free(a);
	a->status = x->status;
	a->head = x->head;
	a->head_len = x->head_len;
	a->body = x->buf;
	a->body_len = x->len;
	x->head = x->buf = NULL;
	x->head_len = x->head_cap = x->len = x->cap = 0;
}

static void
upstream_set_method(CURL *curl, const struct upstream_call *call)
{
	if (strcmp(call->method, "GET") == 0 && call->body_len == 0) {
		curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
		return;
	}
	if (strcmp(call->method, "HEAD") == 0) {
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
		return;
	}
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call->body != NULL ? call->body : "");
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
	if (strcmp(call->method, "POST") != 0)
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, call->method);
}

static bool
upstream_is_empty(const struct upstream_xfer *x, const struct usage *u)
{
	return x->len == 0 || (u->found && u->completion_present && u->completion == 0);
}

enum upstream_result
upstream_forward(CURL *curl, struct upstream_call *call)
{
	struct upstream_xfer x = {.call = call};
	enum upstream_result result;
	CURLcode rc;

	call->status = 0;
	call->failure = false;
	memset(&call->usage, 0, sizeof(call->usage));
	call->error[0] = '\0';
	x.sse = sse_parser_new();
	clock_gettime(CLOCK_MONOTONIC, &x.active);

	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, call->url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, call->headers);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, call->connect_timeout_s);
	/* The silence limit is upstream_on_progress's; there is no total one,
	 * so a long stream is fine while it talks. */
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, upstream_on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, upstream_on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, upstream_on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &x);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, call->error);
	curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
	upstream_set_method(curl, call);

	rc = curl_easy_perform(curl);
	call->status = x.status;
	if (x.client_gone) {
		result = UPSTREAM_CLIENT_GONE;
	} else if (rc != CURLE_OK) {
		if (x.idle_timeout)
			snprintf(call->error, sizeof(call->error),
				 "no data from upstream for %ld s", call->timeout_s);
		else if (call->error[0] == '\0')
			snprintf(call->error, sizeof(call->error), "%s",
				 x.oom ? "out of memory" : curl_easy_strerror(rc));
		call->failure = true;
		if (x.mode == MODE_PASS) {
			/* Cut short after the client got part of it: the stream
			 * just ends, and the endpoint is charged with a failure. */
			FCGX_FFlush(call->client->out);
			result = UPSTREAM_SENT;
		} else {
			result = UPSTREAM_NO_ANSWER;
		}
	} else if (x.status < 100) {
		snprintf(call->error, sizeof(call->error), "no HTTP status from upstream");
		call->failure = true;
		result = UPSTREAM_NO_ANSWER;
	} else {
		bool no_body = x.mode == MODE_UNDECIDED;
		if (no_body)
			x.mode = upstream_decide(&x);
		if (x.mode == MODE_BUFFER)
			usage_from_json(x.buf, x.len, &call->usage);
		else if (x.sse != NULL)
			sse_parser_usage(x.sse, &call->usage);
		bool success = x.status >= 200 && x.status < 300 && x.status != 204 &&
			       strcmp(call->method, "HEAD") != 0;
		bool empty = success && call->empty_is_failure &&
			     ((x.mode == MODE_BUFFER && upstream_is_empty(&x, &call->usage)) ||
			      (x.mode == MODE_PASS && no_body));
		if (x.mode == MODE_HOLD || empty) {
			call->failure = true;
			memset(&call->usage, 0, sizeof(call->usage));
			upstream_hold(&x);
			result = UPSTREAM_HELD;
		} else if (x.mode == MODE_BUFFER) {
			upstream_commit(&x, (long)x.len);
			upstream_to_client(&x, x.buf, x.len, true);
			result = UPSTREAM_SENT;
		} else {
			if (no_body)
				upstream_commit(&x, 0);
			FCGX_FFlush(call->client->out);
			result = UPSTREAM_SENT;
		}
	}
	sse_parser_free(x.sse);
	free(x.head);
	free(x.buf);
	return result;
}

void
upstream_answer_send(const struct upstream_answer *a, FCGX_Stream *out, bool cors)
{
	bool has_cors = false;

	if (a->head != NULL) {
		const char *p = a->head, *end = a->head + a->head_len;
		while (p < end) {
			if (strncasecmp(p, "Access-Control-Allow-Origin:", 28) == 0)
				has_cors = true;
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			p = nl != NULL ? nl + 1 : end;
		}
	}
	response_printf(out, "Status: %ld %s\r\n", a->status, response_reason((int)a->status));
	if (a->head_len > 0)
		FCGX_PutStr(a->head, (int)a->head_len, out);
	if (cors && !has_cors)
		FCGX_PutS(RESPONSE_CORS_HEADER, out);
	response_printf(out, "Content-Length: %zu\r\n\r\n", a->body_len);
	if (a->body_len > 0)
		FCGX_PutStr(a->body, (int)a->body_len, out);
}

void
upstream_answer_free(struct upstream_answer *a)
{
	free(a->head);
	free(a->body);
	memset(a, 0, sizeof(*a));
}

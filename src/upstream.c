#include "upstream.h"

#include <ctype.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dynbuf.h"
#include "log.h"
#include "response.h"
#include "sse.h"

/* How much of a non-stream answer is read before deciding it is not empty,
 * and how much of a failed answer is kept for the client. */
#define UPSTREAM_BUFFER_MAX (1024 * 1024)
/* What the answer's buffer can hold: a stream's first data event may end
 * in the libcurl chunk (at most CURL_MAX_WRITE_SIZE) that passes
 * UPSTREAM_BUFFER_MAX, and is kept whole. */
#define UPSTREAM_KEEP_MAX (UPSTREAM_BUFFER_MAX + CURL_MAX_WRITE_SIZE)
/* The passing header lines of an answer. libcurl refuses an answer whose
 * headers pass 300 KiB, and a kept line is at most a byte longer than it
 * came (CRLF for a bare LF), so this bound is never what stops an answer. */
#define UPSTREAM_HEAD_MAX (512 * 1024)
/* The first block of the head: most answers' passing headers fit it. */
#define UPSTREAM_HEAD_FIRST 4096
#define UPSTREAM_POLL_S 0.05
/* A transfer this long is a long request for the thread pool (on_long). */
#define UPSTREAM_LONG_S 0.05
/* Longest header line sent upstream ("Name: value"). */
#define UPSTREAM_HEADER_MAX 8192
/* The model that served an answer, when the model asked for has fallbacks. */
#define UPSTREAM_MODEL_HEADER "X-Api-Together-Model"

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

/* Whether name is in list, in any case. Every header of every request and
 * answer goes through these lists, and most names differ from an entry in
 * their first letter: that is compared first (ASCII letters, whose case is
 * bit 0x20; the lists hold nothing else there). */
static bool
upstream_name_in(const char *name, const char *const *list)
{
	unsigned char first = (unsigned char)name[0] | 0x20;

	for (size_t i = 0; list[i] != NULL; i++)
		if (((unsigned char)list[i][0] | 0x20) == first && strcasecmp(name, list[i]) == 0)
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

/* Copies n bytes of s to at and returns the end. The URL and the header
 * lines of every request are built with it: snprintf's format parsing cost
 * 1,100 instructions a line, more than the rest of building it. */
static char *
upstream_put(char *at, const char *s, size_t n)
{
	memcpy(at, s, n);
	return at + n;
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
	char *at = upstream_put(url, base_url, origin_len);
	if (base_path != NULL)
		at = upstream_put(at, base_path, strlen(base_path));
	at = upstream_put(at, rest, strlen(rest));
	if (query != NULL) {
		*at++ = '?';
		at = upstream_put(at, query, strlen(query));
	}
	*at = '\0';
	return url;
}

/* Appends "name: prefix value". On the heap, not the stack: a worker's
 * stack pages, once touched, stay with it for good. */
static struct curl_slist *
upstream_append(struct curl_slist *list, const char *name, const char *prefix, const char *value,
		bool *ok)
{
	size_t name_len = strlen(name), prefix_len = strlen(prefix), value_len = strlen(value);
	size_t need = name_len + prefix_len + value_len + 3;
	struct curl_slist *n;
	char *line, *at;

	if (!*ok || need > UPSTREAM_HEADER_MAX)
		return list; /* an absurd header is dropped rather than cut */
	line = malloc(need);
	if (line == NULL) {
		*ok = false;
		return list;
	}
	/* "Name;" is how libcurl sends a header with an empty value: "Name:"
	 * would remove it instead. */
	at = upstream_put(line, name, name_len);
	if (prefix_len + value_len == 0) {
		*at++ = ';';
	} else {
		at = upstream_put(at, ": ", 2);
		at = upstream_put(at, prefix, prefix_len);
		at = upstream_put(at, value, value_len);
	}
	*at = '\0';
	n = curl_slist_append(list, line);
	free(line);
	if (n == NULL) {
		*ok = false;
		return list;
	}
	return n;
}

/* True when s (n bytes) holds one of the n_keys client keys: as it is, or
 * percent-decoded when decode ('+' as a space, as a query is read). When
 * memory runs out to decode, it is taken to hold one: dropping a parameter
 * is the safe side. */
static bool
upstream_holds_key(const char *s, size_t n, char *const *keys, size_t n_keys, bool decode)
{
	char *plain = NULL;
	size_t plain_len = 0;
	bool found = false;

	if (decode && memchr(s, '%', n) == NULL && memchr(s, '+', n) == NULL)
		decode = false;
	if (decode) {
		plain = malloc(n + 1);
		if (plain == NULL)
			return true;
		for (size_t i = 0; i < n; i++) {
			if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
			    isxdigit((unsigned char)s[i + 2])) {
				char hex[3] = {s[i + 1], s[i + 2], '\0'};
				plain[plain_len++] = (char)strtol(hex, NULL, 16);
				i += 2;
			} else {
				plain[plain_len++] = s[i] == '+' ? ' ' : s[i];
			}
		}
	}
	for (size_t k = 0; k < n_keys && !found; k++) {
		size_t klen = strlen(keys[k]);
		if (klen == 0)
			continue;
		found = memmem(s, n, keys[k], klen) != NULL ||
			(plain != NULL && memmem(plain, plain_len, keys[k], klen) != NULL);
	}
	free(plain);
	return found;
}

int
upstream_query(const char *query, char *const *keys, size_t n_keys, char **out)
{
	struct dynbuf kept;
	size_t dropped = 0, n_kept = 0;

	*out = NULL;
	if (query == NULL)
		return 0;
	dynbuf_init(&kept, strlen(query) + 1);
	for (const char *p = query;;) {
		const char *end = strchr(p, '&');
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

		if (upstream_holds_key(p, n, keys, n_keys, true))
			dropped++;
		else if ((n_kept++ > 0 && dynbuf_add(&kept, "&", 1) != 0) ||
			 dynbuf_add(&kept, p, n) != 0)
			goto fail;
		if (end == NULL)
			break;
		p = end + 1;
	}
	if (dropped == 0) {
		dynbuf_free(&kept);
		*out = strdup(query); /* as sent, "?" alone included */
		return *out != NULL ? 0 : -1;
	}
	log_debug("%zu query parameter(s) not forwarded: they hold a client key", dropped);
	if (n_kept > 0 && (*out = dynbuf_take(&kept, NULL)) == NULL)
		*out = strdup(""); /* only empty parameters kept */
	dynbuf_free(&kept);
	return n_kept > 0 && *out == NULL ? -1 : 0;
fail:
	dynbuf_free(&kept);
	return -1;
}

struct curl_slist *
upstream_headers(const struct request *r, const struct config_api *api, const char *api_key,
		 char *const *client_keys, size_t n_client_keys)
{
	const char *connection = request_header(r, "Connection");
	struct curl_slist *list = NULL;
	bool ok = true;

	for (size_t i = 0; i < r->n_headers; i++) {
		const struct request_header *h = &r->headers[i];
		if (!upstream_request_header_passes(h->name, connection) ||
		    strpbrk(h->value, "\r\n") != NULL)
			continue;
		/* The client's own key goes nowhere but the dropped headers it
		 * belongs in; an SDK may repeat it in another (Azure's api-key). */
		if (upstream_holds_key(h->name, strlen(h->name), client_keys, n_client_keys,
				       false)) {
			log_debug("a request header not forwarded: its name holds a client key");
			continue;
		}
		if (upstream_holds_key(h->value, strlen(h->value), client_keys, n_client_keys,
				       false)) {
			log_debug("request header %s not forwarded: it holds a client key",
				  h->name);
			continue;
		}
		/* The endpoint's own headers win over the client's. */
		bool overridden = false;
		for (size_t j = 0; j < api->n_headers; j++)
			if (strcasecmp(api->headers[j].key, h->name) == 0)
				overridden = true;
		if (!overridden)
			list = upstream_append(list, h->name, "", h->value, &ok);
	}
	if (api_key[0] != '\0')
		list = upstream_append(list, "Authorization", "Bearer ", api_key, &ok);
	for (size_t j = 0; j < api->n_headers; j++)
		list = upstream_append(list, api->headers[j].key, "", api->headers[j].value, &ok);
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
	MODE_UNDECIDED,   /* no body byte yet */
	MODE_HOLD,        /* not a 2xx: kept whole, masked, then held or sent */
	MODE_BUFFER,      /* a 2xx answer, read whole to check it is not empty */
	MODE_STREAM_WAIT, /* a stream before its first data event */
	MODE_PASS         /* going to the client as it comes */
};

struct upstream_xfer {
	struct upstream_call *call;
	enum upstream_mode mode;
	long status;
	struct dynbuf head; /* passing header lines, "Name: value\r\n" each */
	bool event_stream;
	struct dynbuf buf; /* the body kept back (see upstream_keep) */
	struct sse_parser *sse;
	struct sse_filter *filter; /* with call->drop_usage_event */
	bool client_gone;
	bool oom;
	bool idle_timeout;
	int sends; /* times libcurl was about to send the request */
	/* Silence detection: progress seen last, and when it last moved. */
	curl_off_t seen_dl, seen_ul;
	struct timespec active;
	struct timespec polled; /* when the client was last looked at */
	struct timespec started;
	bool long_told; /* on_long was called */
	bool reported;  /* on_outcome was called */
};

/* Answer headers a web server would act on instead of passing them: files
 * sent from its disk, and internal redirects. A Location is local when its
 * value starts with '/' after any whitespace: Apache's CGI parser skips
 * every isspace() byte there (vertical tab and form feed too), so a value
 * "\v/x" is an internal redirect to it. */
static bool
upstream_header_acted_on(const char *name, const char *v, const char *end)
{
	static const char *const acted[] = {
		"X-Sendfile", "X-Sendfile2", "X-Lighttpd-Send-File", "X-Accel-Redirect", NULL,
	};

	if (upstream_name_in(name, acted))
		return true;
	if (strcasecmp(name, "Location") != 0)
		return false;
	while (v < end && (*v == ' ' || (*v >= '\t' && *v <= '\r')))
		v++;
	return v < end && *v == '/';
}

bool
upstream_answer_line_passes(const char *line, size_t n)
{
	/* Folded lines and stray CRs or NULs could split into more headers
	 * on the way to the client: such lines are dropped. */
	if (n == 0 || line[0] == ' ' || line[0] == '\t' || memchr(line, '\r', n) != NULL ||
	    memchr(line, '\n', n) != NULL || memchr(line, '\0', n) != NULL)
		return false;
	const char *colon = memchr(line, ':', n);
	char name[128];
	size_t nlen = colon != NULL ? (size_t)(colon - line) : 0;
	/* A name that is no token ("X y", "X\v") is no header to the web
	 * server either; what it would make of it is its own guess. */
	if (colon == NULL || nlen >= sizeof(name) || !request_is_token(line, nlen))
		return false;
	memcpy(name, line, nlen);
	name[nlen] = '\0';
	return upstream_response_header_passes(name) &&
	       !upstream_header_acted_on(name, colon + 1, line + n);
}

/* Whether a header line (n bytes, passed upstream_answer_line_passes) is
 * a name's. */
static bool
upstream_line_is(const char *line, size_t n, const char *name)
{
	size_t len = strlen(name);

	return n > len && line[len] == ':' && strncasecmp(line, name, len) == 0;
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
		dynbuf_reset(&x->head);
		x->event_stream = false;
		return len;
	}
	if (!upstream_answer_line_passes(data, n) ||
	    (x->call->model != NULL && upstream_line_is(data, n, UPSTREAM_MODEL_HEADER)))
		return len;
	if (n >= 13 && strncasecmp(data, "Content-Type:", 13) == 0) {
		const char *v = data + 13;
		while (v < data + n && (*v == ' ' || *v == '\t'))
			v++;
		x->event_stream = (size_t)(data + n - v) >= 17 &&
				  strncasecmp(v, "text/event-stream", 17) == 0;
	}
	if ((dynbuf_len(&x->head) == 0 && dynbuf_reserve(&x->head, UPSTREAM_HEAD_FIRST) != 0) ||
	    dynbuf_add(&x->head, data, n) != 0 || dynbuf_add(&x->head, "\r\n", 2) != 0) {
		x->oom = true;
		return 0;
	}
	return len;
}

/* Masks every copy of each secret in buf[0..len) but its last four
 * characters (short secrets whole), so an upstream that quotes a key back
 * does not hand it to the client. */
static void
upstream_mask(char *buf, size_t len, const struct upstream_call *call)
{
	for (size_t k = 0; buf != NULL && k < call->n_secrets; k++) {
		const char *sec = call->secrets[k];
		size_t sl = strlen(sec);
		if (sl < 6)
			continue; /* too short to tell from ordinary text */
		size_t keep = sl >= 8 ? 4 : 0;
		for (size_t i = 0; i + sl <= len; i++) {
			if (buf[i] == sec[0] && memcmp(buf + i, sec, sl) == 0) {
				memset(buf + i, '*', sl - keep);
				i += sl - 1;
			}
		}
	}
}

/* Writes status and headers to the client: the answer is committed. */
static void
upstream_commit(struct upstream_xfer *x, long content_length)
{
	FCGX_Stream *out = x->call->client->out;

	response_begin(out, &(struct response_head){.status = x->status,
						    .relayed = dynbuf_ptr(&x->head),
						    .relayed_len = dynbuf_len(&x->head),
						    .cors = x->call->cors});
	if (x->call->model != NULL)
		response_header(out, UPSTREAM_MODEL_HEADER, x->call->model);
	if (x->event_stream)
		response_header(out, "X-Accel-Buffering", "no");
	if (content_length >= 0)
		response_header_number(out, "Content-Length", content_length);
	response_end_headers(out);
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

static bool
upstream_emit(void *ctx, const char *data, size_t len)
{
	return upstream_to_client(ctx, data, len, true);
}

/* Sends bytes of the answer's body to the client: through the filter that
 * removes the usage-only event when the gateway asked for it. */
static bool
upstream_out(struct upstream_xfer *x, const char *data, size_t len, bool flush)
{
	if (x->filter != NULL && x->event_stream)
		return sse_filter_feed(x->filter, data, len, upstream_emit, x);
	return upstream_to_client(x, data, len, flush);
}

/* The answer's body ended: what the filter still held goes on. */
static bool
upstream_out_end(struct upstream_xfer *x)
{
	if (x->filter != NULL && x->event_stream)
		return sse_filter_end(x->filter, upstream_emit, x);
	return true;
}

static enum upstream_mode
upstream_decide(const struct upstream_xfer *x)
{
	if (x->status < 200 || x->status >= 300)
		return MODE_HOLD;
	if (x->event_stream)
		return x->sse != NULL ? MODE_STREAM_WAIT : MODE_PASS;
	return MODE_BUFFER;
}

/* Keeps bytes in the transfer's buffer, at most UPSTREAM_BUFFER_MAX when
 * cap_it (the rest is dropped). False when memory runs out. */
static bool
upstream_keep(struct upstream_xfer *x, const char *data, size_t len, bool cap_it)
{
	size_t kept = dynbuf_len(&x->buf);

	if (cap_it) {
		if (kept >= UPSTREAM_BUFFER_MAX)
			return true;
		if (len > UPSTREAM_BUFFER_MAX - kept)
			len = UPSTREAM_BUFFER_MAX - kept;
	}
	if (dynbuf_add(&x->buf, data, len) != 0) {
		x->oom = true;
		return false;
	}
	return true;
}

/* Commits and sends what was kept; from here on bytes pass as they come. */
static bool
upstream_release(struct upstream_xfer *x, bool flush)
{
	upstream_commit(x, -1);
	bool ok = upstream_out(x, dynbuf_ptr(&x->buf), dynbuf_len(&x->buf), flush);
	dynbuf_reset(&x->buf);
	return ok;
}

/* Masks the secrets in the kept head and body. */
static void
upstream_mask_kept(struct upstream_xfer *x)
{
	upstream_mask(dynbuf_ptr(&x->head), dynbuf_len(&x->head), x->call);
	upstream_mask(dynbuf_ptr(&x->buf), dynbuf_len(&x->buf), x->call);
}

/* Sends the kept answer whole, with its length, and ends the request: the
 * answer is the client's last (its outcome is recorded already), and its
 * last bytes and the end of the request go out in one write (lighttpd ends
 * the client's answer on its length and closes the connection, so an end
 * record written apart would only meet a closed socket). */
static void
upstream_send_kept(struct upstream_xfer *x)
{
	upstream_commit(x, (long)dynbuf_len(&x->buf));
	upstream_to_client(x, dynbuf_ptr(&x->buf), dynbuf_len(&x->buf), false);
	response_finish(x->call->client);
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
		return upstream_keep(x, data, len, true) ? len : 0;
	case MODE_BUFFER:
		if (dynbuf_len(&x->buf) + len <= UPSTREAM_BUFFER_MAX)
			return upstream_keep(x, data, len, false) ? len : 0;
		/* Too large to be an empty answer: pass it on from here. */
		if (!upstream_release(x, false)) {
			x->client_gone = true;
			return 0;
		}
		break;
	case MODE_STREAM_WAIT:
		/* Comments and empty events before the first data event are
		 * kept, so a stream with no data can still go to another
		 * endpoint; from the first data event on, nothing is held. */
		sse_parser_feed(x->sse, data, len);
		if (!upstream_keep(x, data, len, false))
			return 0;
		if (!sse_parser_saw_data(x->sse) && dynbuf_len(&x->buf) < UPSTREAM_BUFFER_MAX)
			return len;
		if (!upstream_release(x, true)) {
			x->client_gone = true;
			return 0;
		}
		return len;
	default:
		break;
	}
	if (x->event_stream && x->sse != NULL)
		sse_parser_feed(x->sse, data, len);
	if (!upstream_out(x, data, len, x->event_stream || x->call->stream)) {
		x->client_gone = true;
		return 0;
	}
	return len;
}

/* Whether the web server closed the FastCGI connection fd (its client
 * left). POLLRDHUP is Linux's; elsewhere that close shows as readable with
 * nothing to read (MSG_PEEK leaves a pending record for libfcgi). */
static bool
upstream_client_closed(int fd)
{
#ifdef POLLRDHUP
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
#else
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c;

	if (poll(&p, 1, 0) <= 0)
		return false;
	if (p.revents & (POLLHUP | POLLERR))
		return true;
	return (p.revents & POLLIN) && recv(fd, &c, 1, MSG_PEEK) == 0;
#endif
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
 * no write would notice (doc/behaviour.md, Web servers: libfcgi); and when the upstream
 * has been silent for timeout_s. libcurl's LOW_SPEED check would average
 * over a window that includes the upload and notice silence seconds late. */
static int
upstream_on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		     curl_off_t ulnow)
{
	struct upstream_xfer *x = ud;
	int fd = x->call->client->ipcFd;

	(void)dltotal, (void)ultotal;
	/* libcurl calls this after every socket event: a poll each time would be
	 * a dozen system calls for a short answer, so the client is looked at
	 * every UPSTREAM_POLL_S only, which still stops a transfer well within
	 * a second of its client leaving. */
	if (!x->long_told && x->call->on_long != NULL &&
	    upstream_since(&x->started) >= UPSTREAM_LONG_S) {
		x->long_told = true;
		x->call->on_long(x->call->thread_ctx);
	}
	if (fd >= 0 && upstream_since(&x->polled) >= UPSTREAM_POLL_S) {
		clock_gettime(CLOCK_MONOTONIC, &x->polled);
		if (upstream_client_closed(fd)) {
			x->client_gone = true;
			return 1;
		}
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

/* Called by libcurl before each send of the request. When a reused
 * connection dies before any answer, libcurl sends the request again on a
 * fresh one: the upstream may then act on it twice (a paid completion) for
 * one counted attempt. An attempt is one send: a second is refused, and the
 * attempt ends as one without an answer, retried on another endpoint. */
static int
upstream_on_send(void *ud, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	struct upstream_xfer *x = ud;

	(void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
	return ++x->sends == 1 ? CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT;
}

/* Moves the kept answer into call->held, masked. */
static void
upstream_hold(struct upstream_xfer *x)
{
	struct upstream_answer *a = &x->call->held;

	upstream_answer_free(a);
	upstream_mask_kept(x);
	a->status = x->status;
	a->model = x->call->model;
	a->head = dynbuf_take(&x->head, &a->head_len);
	a->body = dynbuf_take(&x->buf, &a->body_len);
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

/* libcurl errors that are the gateway's own doing, not the endpoint's. */
static bool
upstream_local_error(CURLcode rc)
{
	/* Not CURLE_UNSUPPORTED_PROTOCOL: the config allows only http(s), so at
	 * run time that is an upstream answering something that is not HTTP. */
	return rc == CURLE_URL_MALFORMAT || rc == CURLE_OUT_OF_MEMORY ||
	       rc == CURLE_BAD_FUNCTION_ARGUMENT || rc == CURLE_FAILED_INIT;
}

/* Hands the attempt's outcome to on_outcome: once, whichever comes first,
 * the answer read whole about to go to the client or the transfer's end. */
static void
upstream_report(struct upstream_xfer *x)
{
	if (x->reported || x->call->on_outcome == NULL)
		return;
	x->reported = true;
	x->call->on_outcome(x->call->on_outcome_ctx, x->call);
}

/* The outcome of a transfer that ended without error. */
static enum upstream_result
upstream_finish(struct upstream_xfer *x, bool no_body)
{
	struct upstream_call *call = x->call;
	bool ok_status = x->status >= 200 && x->status < 300;
	bool may_be_empty = ok_status && x->status != 204 && strcmp(call->method, "HEAD") != 0 &&
			    call->empty_is_failure;

	if (x->mode == MODE_BUFFER)
		usage_from_json(dynbuf_ptr(&x->buf), dynbuf_len(&x->buf), &call->usage);
	else if (x->sse != NULL)
		sse_parser_usage(x->sse, &call->usage);
	const struct usage *u = &call->usage;
	bool no_completion = u->found && u->completion_present && u->completion == 0;

	switch (x->mode) {
	case MODE_HOLD:
		if (upstream_status_retryable(x->status)) {
			call->failure = true;
			upstream_hold(x);
			return UPSTREAM_HELD;
		}
		/* Another answer (400, 404, 422...) goes to the client as it is,
		 * keys masked. */
		upstream_mask_kept(x);
		upstream_report(x);
		upstream_send_kept(x);
		return UPSTREAM_SENT;
	case MODE_BUFFER:
	case MODE_STREAM_WAIT:
		if (may_be_empty && (no_body || x->mode == MODE_STREAM_WAIT ||
				     dynbuf_len(&x->buf) == 0 || no_completion)) {
			call->failure = true;
			memset(&call->usage, 0, sizeof(call->usage));
			upstream_hold(x);
			return UPSTREAM_HELD;
		}
		if (x->mode == MODE_STREAM_WAIT) {
			if (upstream_release(x, true))
				upstream_out_end(x);
			return UPSTREAM_SENT;
		}
		upstream_report(x);
		upstream_send_kept(x);
		return UPSTREAM_SENT;
	default:
		/* Passed on already: a stream whose usage says it completed
		 * nothing is charged to the endpoint, though it cannot be retried. */
		if (may_be_empty && no_completion)
			call->failure = true;
		upstream_out_end(x);
		FCGX_FFlush(call->client->out);
		return UPSTREAM_SENT;
	}
}

/* The answer's times for the metrics, from libcurl's own clock. */
static void
upstream_times(CURL *curl, struct upstream_call *call)
{
	curl_off_t first = 0, total = 0;

	call->first_byte_ms = call->total_ms = -1;
	if (call->status < 100 ||
	    curl_easy_getinfo(curl, CURLINFO_STARTTRANSFER_TIME_T, &first) != CURLE_OK ||
	    curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME_T, &total) != CURLE_OK)
		return;
	call->first_byte_ms = (int64_t)(first / 1000);
	call->total_ms = (int64_t)(total / 1000);
}

enum upstream_result
upstream_forward(CURL *curl, struct upstream_call *call)
{
	struct upstream_xfer x = {.call = call};
	enum upstream_result result;
	CURLcode rc;

	call->status = 0;
	call->failure = false;
	call->local_error = false;
	memset(&call->usage, 0, sizeof(call->usage));
	call->error[0] = '\0';
	dynbuf_init(&x.head, UPSTREAM_HEAD_MAX);
	dynbuf_init(&x.buf, UPSTREAM_KEEP_MAX);
	x.sse = sse_parser_new();
	if (call->drop_usage_event) {
		x.filter = sse_filter_new();
		if (x.filter == NULL) {
			snprintf(call->error, sizeof(call->error), "out of memory");
			call->local_error = true;
			sse_parser_free(x.sse);
			return UPSTREAM_NO_ANSWER;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &x.active);
	x.polled = x.started = x.active;

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
	curl_easy_setopt(curl, CURLOPT_PREREQFUNCTION, upstream_on_send);
	curl_easy_setopt(curl, CURLOPT_PREREQDATA, &x);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, call->error);
	curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
	upstream_set_method(curl, call);

	if (call->on_transfer != NULL)
		call->on_transfer(call->thread_ctx, 1);
	rc = curl_easy_perform(curl);
	if (call->on_transfer != NULL)
		call->on_transfer(call->thread_ctx, -1);
	call->status = x.status;
	upstream_times(curl, call);
	if (x.client_gone) {
		result = UPSTREAM_CLIENT_GONE;
	} else if (rc != CURLE_OK) {
		if (x.idle_timeout)
			snprintf(call->error, sizeof(call->error),
				 "no data from upstream for %ld s", call->timeout_s);
		else if (x.sends > 1)
			snprintf(call->error, sizeof(call->error),
				 "connection closed before an answer (not sent again)");
		else if (call->error[0] == '\0')
			snprintf(call->error, sizeof(call->error), "%s",
				 x.oom ? "out of memory" : curl_easy_strerror(rc));
		if (x.oom || upstream_local_error(rc)) {
			call->local_error = true;
			result = UPSTREAM_NO_ANSWER;
		} else if (x.mode == MODE_PASS) {
			/* Cut short after the client got part of it: the stream
			 * just ends, and the endpoint is charged with a failure;
			 * usage already seen still counts. */
			call->failure = true;
			if (x.sse != NULL)
				sse_parser_usage(x.sse, &call->usage);
			upstream_out_end(&x);
			FCGX_FFlush(call->client->out);
			result = UPSTREAM_SENT;
		} else {
			call->failure = true;
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
		result = upstream_finish(&x, no_body);
	}
	/* A client gone or the gateway's own failure is no endpoint's outcome. */
	if (result != UPSTREAM_CLIENT_GONE && !call->local_error)
		upstream_report(&x);
	sse_parser_free(x.sse);
	sse_filter_free(x.filter);
	dynbuf_free(&x.head);
	dynbuf_free(&x.buf);
	return result;
}

/* A probe's body: read and dropped. */
static size_t
upstream_drop(char *p, size_t size, size_t n, void *ctx)
{
	(void)p;
	(void)ctx;
	return size * n;
}

long
upstream_probe(CURL *curl, const char *url, const struct curl_slist *headers,
	       long connect_timeout_s, long timeout_s, char *err, size_t errlen)
{
	char cerr[CURL_ERROR_SIZE] = "";
	long status = 0;

	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, connect_timeout_s);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, upstream_drop);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
	CURLcode rc = curl_easy_perform(curl);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
	if (rc != CURLE_OK ||
	    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK) {
		snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
		return 0;
	}
	return status;
}

void
upstream_answer_send(const struct upstream_answer *a, FCGX_Stream *out, bool cors)
{
	response_begin(out, &(struct response_head){.status = a->status,
						    .relayed = a->head,
						    .relayed_len = a->head_len,
						    .cors = cors});
	if (a->model != NULL)
		response_header(out, UPSTREAM_MODEL_HEADER, a->model);
	response_header_number(out, "Content-Length", (long long)a->body_len);
	response_end_headers(out);
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

/* upstream: one attempt at an upstream endpoint with libcurl, and the rules
 * for what crosses between client and upstream (URL, headers, answers). */
#ifndef API_TOGETHER_UPSTREAM_H
#define API_TOGETHER_UPSTREAM_H

#include <curl/curl.h>
#include <fcgiapp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "request.h"
#include "usage.h"

/* The upstream URL for a client path below the mount point (it starts with
 * "/v1"). A base_url without a path keeps the client's path; one with a path
 * has it replace the leading "/v1". The query is appended when not NULL.
 * Returns a malloc'd string, NULL when out of memory. */
char *upstream_url(const char *base_url, const char *path, const char *query);

/* True when a client request header goes on upstream: end-to-end headers do,
 * except Authorization, X-Api-Key, Host, Cookie, Content-Length,
 * Accept-Encoding (the gateway reads answers to count tokens) and any header
 * listed in the client's Connection header (connection, may be NULL). */
bool upstream_request_header_passes(const char *name, const char *connection);

/* True when an upstream answer header goes on to the client: not hop-by-hop,
 * not Content-Length (the web server frames the body), not Status. */
bool upstream_response_header_passes(const char *name);

/* True when an upstream answer's header line (n bytes, its line end cut off,
 * no status line) goes on to the client: one "Name: value" line whose name is
 * an RFC 9110 token that upstream_response_header_passes, with no CR, LF or
 * NUL, not folded, and no header the web server would act on (X-Sendfile and
 * its kin, X-Accel-Redirect, a Location whose value starts with '/' after any
 * whitespace). */
bool upstream_answer_line_passes(const char *line, size_t n);

/* True when an answer with this status is retried on another endpoint:
 * 401, 403, 408, 409, 429 and 5xx. */
bool upstream_status_retryable(long status);

/* The header list for one attempt at api with api_key (the key of its pool
 * this attempt uses): the client's headers that pass (none whose name or
 * value holds one of the n_client_keys client keys: an SDK may repeat its key
 * in another header, such as Azure's api-key), api_key as the Authorization
 * and the endpoint's extra headers, and an empty Expect. Returns NULL when out
 * of memory; the caller frees it with curl_slist_free_all. */
struct curl_slist *upstream_headers(const struct request *r, const struct config_api *api,
				    const char *api_key, char *const *client_keys,
				    size_t n_client_keys);

/* The query (after '?', may be NULL) that goes upstream: every '&'-separated
 * parameter that holds one of the n_keys client keys, as sent or
 * percent-decoded, is dropped (logged at debug, never the key); the rest are
 * kept in order, byte for byte. Returns 0 with *out a malloc'd string, or
 * NULL when there is no query or nothing of it is left; -1 (*out NULL) when
 * out of memory. */
int upstream_query(const char *query, char *const *keys, size_t n_keys, char **out);

/* An upstream answer held back from the client while other attempts run. */
struct upstream_answer {
	long status;
	const char *model; /* its X-Api-Together-Model (not owned); NULL none */
	char *head;        /* passing header lines, "Name: value\r\n" each */
	size_t head_len;
	char *body;
	size_t body_len;
};

/* A GET of url with headers whose answer goes nowhere (a rejected key's
 * recheck): returns its status, 0 with the reason in err when none came. */
long upstream_probe(CURL *curl, const char *url, const struct curl_slist *headers,
		    long connect_timeout_s, long timeout_s, char *err, size_t errlen);

/* Sends a held answer to the client. */
void upstream_answer_send(const struct upstream_answer *a, FCGX_Stream *out, bool cors);
void upstream_answer_free(struct upstream_answer *a);

enum upstream_result {
	UPSTREAM_SENT,       /* an answer went to the client (perhaps cut short) */
	UPSTREAM_HELD,       /* a failed answer, kept in call->held */
	UPSTREAM_NO_ANSWER,  /* no usable answer: refused, timed out, not HTTP */
	UPSTREAM_CLIENT_GONE /* the client went away; nothing more to send */
};

struct upstream_call {
	/* In. */
	const char *url;
	const char *method;
	const struct curl_slist *headers;
	const char *body;
	size_t body_len;
	long connect_timeout_s;
	long timeout_s;        /* longest silence from the upstream */
	bool empty_is_failure; /* server.emptyResponseRetry */
	bool stream;           /* the client asked for a stream */
	/* The gateway asked for the stream's usage itself: the usage-only
	 * event is removed from an event stream (doc/behaviour.md,
	 * Forwarding). */
	bool drop_usage_event;
	bool cors;
	FCGX_Request *client;
	const char *const *secrets; /* masked in answers that reach the client */
	size_t n_secrets;
	/* X-Api-Together-Model on the answer, replacing an upstream's own
	 * (doc/behaviour.md, Forwarding: fallbacks); NULL: none added, an
	 * upstream's passes. */
	const char *model;
	/* Called once with the attempt's outcome (the Out fields), unless
	 * the client went away or the failure is the gateway's own
	 * (local_error): for an answer read whole, right before it goes to
	 * the client, so that the outcome is recorded while the client still
	 * waits and the worker is free as soon as the client has its answer
	 * (the web server sends the next request at once); for a stream, an
	 * answer passed on as it comes, a held one or none, when the transfer
	 * ends. May be NULL. */
	void (*on_outcome)(void *ctx, const struct upstream_call *call);
	void *on_outcome_ctx;
	/* What the calling thread's pool hears of the transfer, both with
	 * thread_ctx; each may be NULL. on_long: called once when the
	 * transfer has lasted 50 ms (a stream, a slow upstream); on_transfer:
	 * called with +1 as it starts and -1 as it ends. */
	void (*on_long)(void *ctx);
	void (*on_transfer)(void *ctx, int delta);
	void *thread_ctx;
	/* Out. */
	long status;        /* 0 when no status line arrived */
	bool failure;       /* counts against the endpoint */
	bool local_error;   /* the gateway's own fault (bad URL, memory) */
	struct usage usage; /* tokens of a successful answer */
	/* From the transfer's start, in ms; -1 when no HTTP answer came. Set
	 * before on_outcome is called. */
	int64_t first_byte_ms; /* to the answer's first byte (its status line) */
	int64_t total_ms;      /* to its last byte (a stream's end) */
	struct upstream_answer held;
	char error[CURL_ERROR_SIZE]; /* why, with UPSTREAM_NO_ANSWER */
};

/* Runs one attempt on curl (reset first, connection cache kept). A stream is
 * passed to the client chunk by chunk, flushed each time, from its first data
 * event on (what comes before is kept, so a stream without data can still be
 * retried); any other 2xx answer is read whole (up to 1 MiB, then passed on)
 * so that an empty one can still be retried. Other answers are read whole
 * (up to 1 MiB) with the secrets masked: a retryable one is held, not sent. */
enum upstream_result upstream_forward(CURL *curl, struct upstream_call *call);

#endif

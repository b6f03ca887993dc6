/* bench/forwarder.c: the least a lighttpd + libfcgi + libcurl gateway can do.
 *
 * bench/run deploys it exactly as api-together (the shipped lighttpd snippet,
 * the same max-procs) as system "forwarder": its figures are the ceiling of
 * this design on the machine, and api-together's own work (auth, routing,
 * limits, state, logs) is the gap between the two. So it does nothing else:
 * no config, no state, no limits, no log line per request.
 *
 *   GET /health      200 {"status":"ok"}
 *   ANY /v1/REST     forwarded to $FORWARDER_UPSTREAM/REST with the body,
 *                    "Authorization: Bearer $FORWARDER_KEY" and a JSON
 *                    Content-Type; upstream status, Content-Type and body back
 *   anything else    404
 *
 * FORWARDER_THREADS threads (default 16) accept on the socket lighttpd hands
 * over as fd 0; each keeps one curl handle, so its upstream connection is
 * reused across requests. Any command-line argument (bench/run calls
 * --check-config FILE, --help, --version on a gateway binary) prints one
 * line and exits 0. */
#define _POSIX_C_SOURCE 200809L
#include <fcgiapp.h>

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FWD_MAX_BODY (20L * 1024 * 1024) /* lighttpd's max-request-size */
#define FWD_MAX_THREADS 1024

static const char *fwd_upstream;
static struct curl_slist *fwd_headers; /* read-only once threads start */

struct fwd_req {
	FCGX_Request *r;
	CURL *h;
	int head_sent;
	int stream; /* an event stream: each piece goes out as it comes */
};

/* The head goes out before the first byte of the body (or after perform for
 * an empty one): the status and Content-Type are known by then. */
static int
fwd_head(struct fwd_req *q)
{
	long code = 0;
	char *type = NULL;

	q->head_sent = 1;
	if (curl_easy_getinfo(q->h, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK ||
	    curl_easy_getinfo(q->h, CURLINFO_CONTENT_TYPE, &type) != CURLE_OK)
		return -1;
	if (type && strpbrk(type, "\r\n"))
		type = NULL;
	q->stream = type && strncmp(type, "text/event-stream", 17) == 0;
	return FCGX_FPrintF(q->r->out, "Status: %ld\r\nContent-Type: %s\r\n\r\n", code,
			    type ? type : "application/json") < 0
		       ? -1
		       : 0;
}

static size_t
fwd_write(char *p, size_t size, size_t n, void *arg)
{
	struct fwd_req *q = arg;
	size_t len = size * n; /* at most CURL_MAX_WRITE_SIZE */

	if (!q->head_sent && fwd_head(q) != 0)
		return 0; /* aborts the transfer */
	if (FCGX_PutStr(p, (int)len, q->r->out) != (int)len)
		return 0;
	if (q->stream && FCGX_FFlush(q->r->out) != 0)
		return 0;
	return len;
}

static void
fwd_answer(FCGX_Request *r, const char *status, const char *body)
{
	(void)FCGX_FPrintF(r->out, "Status: %s\r\nContent-Type: application/json\r\n\r\n%s", status,
			   body);
}

/* Reads the whole body: api-together needs it whole too (it finds "model"). */
static char *
fwd_body(FCGX_Request *r, long *len)
{
	const char *cl = FCGX_GetParam("CONTENT_LENGTH", r->envp);
	char *end, *buf;
	long n = cl && *cl ? strtol(cl, &end, 10) : 0;

	if (cl && *cl && (*end || n < 0 || n > FWD_MAX_BODY))
		return NULL;
	buf = malloc((size_t)n + 1);
	if (!buf)
		return NULL;
	if (n > 0 && FCGX_GetStr(buf, (int)n, r->in) != (int)n) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

static void
fwd_serve(FCGX_Request *r, CURL *h)
{
	const char *method = FCGX_GetParam("REQUEST_METHOD", r->envp);
	const char *uri = FCGX_GetParam("REQUEST_URI", r->envp);
	struct fwd_req q = {r, h, 0, 0};
	char url[4096];
	char *body = NULL;
	long len = 0;
	CURLcode rc;

	if (!method || !uri) {
		fwd_answer(r, "400 Bad Request", "{\"error\":\"no method or uri\"}");
		return;
	}
	if (strcmp(uri, "/health") == 0) {
		fwd_answer(r, "200 OK", "{\"status\":\"ok\"}");
		return;
	}
	if (strncmp(uri, "/v1/", 4) != 0) {
		fwd_answer(r, "404 Not Found", "{\"error\":\"not found\"}");
		return;
	}
	int w = snprintf(url, sizeof url, "%s%s", fwd_upstream, uri + 3);
	if (w < 0 || (size_t)w >= sizeof url) {
		fwd_answer(r, "414 URI Too Long", "{\"error\":\"uri too long\"}");
		return;
	}
	int post = strcmp(method, "GET") != 0;
	if (post && !(body = fwd_body(r, &len))) {
		fwd_answer(r, "400 Bad Request", "{\"error\":\"bad body\"}");
		return;
	}
	/* Only what changes per request is set here; the rest in main's thread setup. */
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, &q) != CURLE_OK ||
	    (post ? curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, len) != CURLE_OK ||
			     curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK
		  : curl_easy_setopt(h, CURLOPT_HTTPGET, 1L) != CURLE_OK)) {
		fwd_answer(r, "500 Internal Server Error", "{\"error\":\"curl setopt\"}");
		goto done;
	}
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK && !q.head_sent)
		(void)fwd_head(&q); /* an empty body: no write callback ran */
	else if (rc != CURLE_OK && !q.head_sent)
		fwd_answer(r, "502 Bad Gateway", "{\"error\":\"upstream failed\"}");
	/* failed after the head: the client sees a short body, nothing better to say */
done:
	free(body);
}

static void *
fwd_thread(void *arg)
{
	FCGX_Request r;
	CURL *h = curl_easy_init();

	(void)arg;
	if (!h || FCGX_InitRequest(&r, 0, 0) != 0) {
		fprintf(stderr, "forwarder: thread setup failed\n");
		if (h)
			curl_easy_cleanup(h);
		return NULL;
	}
	/* NOSIGNAL: threads; the rest holds for every request of the handle. */
	if (curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTPHEADER, fwd_headers) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fwd_write) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK) {
		fprintf(stderr, "forwarder: curl setup failed\n");
		curl_easy_cleanup(h);
		return NULL;
	}
	while (FCGX_Accept_r(&r) >= 0) {
		fwd_serve(&r, h);
		FCGX_Finish_r(&r);
	}
	curl_easy_cleanup(h);
	return NULL;
}

static void
fwd_term(int sig)
{
	(void)sig;
	_exit(0);
}

int
main(int argc, char **argv)
{
	const char *key = getenv("FORWARDER_KEY");
	const char *nt = getenv("FORWARDER_THREADS");
	char auth[1024];
	long n = nt && *nt ? strtol(nt, NULL, 10) : 16;
	pthread_t tids[FWD_MAX_THREADS];
	long started = 0;

	(void)argv;
	if (argc > 1) {
		puts("forwarder (bench/forwarder.c), env FORWARDER_UPSTREAM FORWARDER_KEY "
		     "FORWARDER_THREADS");
		return 0;
	}
	fwd_upstream = getenv("FORWARDER_UPSTREAM");
	if (!fwd_upstream || !key || n < 1 || n > FWD_MAX_THREADS) {
		fprintf(stderr,
			"forwarder: needs FORWARDER_UPSTREAM, FORWARDER_KEY and "
			"FORWARDER_THREADS 1..%d\n",
			FWD_MAX_THREADS);
		return 2;
	}
	int w = snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
	if (w < 0 || (size_t)w >= sizeof auth)
		return 2;
	/* "Expect:" keeps curl from waiting for a 100 Continue on a larger body.
	 * A failed append leaks the list's head: the process exits just below. */
	const char *hdrs[] = {auth, "Content-Type: application/json", "Expect:"};
	for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
		struct curl_slist *l = curl_slist_append(fwd_headers, hdrs[i]);
		if (!l) {
			fwd_headers = NULL;
			break;
		}
		fwd_headers = l;
	}
	if (!fwd_headers || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || FCGX_Init() != 0 ||
	    FCGX_IsCGI()) {
		fprintf(stderr, "forwarder: setup failed (run it under a FastCGI server)\n");
		return 2;
	}
	/* libfcgi's SIGTERM handler only sets a flag, and threads blocked in
	 * accept never look at it: lighttpd, which stops or replaces a backend
	 * with SIGTERM, would leave the process running (and bench/run would
	 * count its memory). Leave at once instead, as api-together does. */
	struct sigaction term = {.sa_handler = fwd_term};
	sigemptyset(&term.sa_mask);
	if (sigaction(SIGTERM, &term, NULL) != 0 || sigaction(SIGINT, &term, NULL) != 0)
		return 2;
	for (; started < n; started++)
		if (pthread_create(&tids[started], NULL, fwd_thread, NULL) != 0)
			break;
	if (started == 0)
		return 2;
	for (long i = 0; i < started; i++)
		(void)pthread_join(tids[i], NULL);
	return 0;
}

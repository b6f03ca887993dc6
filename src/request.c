#include "request.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <strings.h>

#include "dynbuf.h"

/* Most headers a request may have: a head of 64 KiB of the shortest lines
 * ("A:" and CRLF). The web server bounds the head far below that (lighttpd
 * 8 KiB and Apache 100 fields by default); past it the request fails as one
 * that runs out of memory. */
#define REQUEST_HEADERS_MAX 16384
/* How a body without a Content-Length is read: blocks of this size at
 * first, doubling. */
#define REQUEST_BODY_BLOCK 65536
/* The most asked of libfcgi in one read. */
#define REQUEST_READ_MAX (1 << 20)

static int
request_hex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

char *
request_percent_decode(const char *s, size_t *len)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(n + 1);

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '%' && i + 2 < n && (hi = request_hex((unsigned char)s[i + 1])) >= 0 &&
		    (lo = request_hex((unsigned char)s[i + 2])) >= 0) {
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	*len = o;
	return out;
}

/* True when s[0..len) has a segment "..", with '/' or '\' as separators. */
static bool
request_has_dotdot(const char *s, size_t len)
{
	size_t start = 0;

	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '/' || s[i] == '\\') {
			if (i - start == 2 && s[start] == '.' && s[start + 1] == '.')
				return true;
			start = i + 1;
		}
	}
	return false;
}

/* True when s holds a space, a control character or DEL: a client must
 * percent-encode them, and a URL holding one would fail towards upstream. */
static bool
request_has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* RFC 9110 token characters, for methods and header names. */
bool
request_is_token(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("!#$%&'*+-.^_`|~", s[i]) == NULL)
			return false;
	return true;
}

bool
request_path_safe(const char *raw, const char *decoded, size_t decoded_len)
{
	if (request_has_ctl(raw) || request_has_dotdot(raw, strlen(raw)))
		return false;
	for (size_t i = 0; i < decoded_len; i++)
		if (decoded[i] == '\0' || decoded[i] == '\r' || decoded[i] == '\n')
			return false;
	return !request_has_dotdot(decoded, decoded_len);
}

/* Length of the mount point in path, or -1 when no segment "v1", "health",
 * "status" (the status page) or "metrics" starts a path below it. */
static long
request_find_mount(const char *path, size_t len)
{
	size_t i = 0;

	while (i < len) {
		if (path[i] != '/')
			return -1;
		size_t seg = i + 1, end = seg;
		while (end < len && path[end] != '/')
			end++;
		size_t sl = end - seg;
		if ((sl == 2 && memcmp(path + seg, "v1", 2) == 0) ||
		    (sl == 6 && (memcmp(path + seg, "health", 6) == 0 ||
				 memcmp(path + seg, "status", 6) == 0)) ||
		    (sl == 7 && memcmp(path + seg, "metrics", 7) == 0))
			return (long)i;
		i = end;
	}
	return -1;
}

int
request_split_uri(const char *uri, const char *base, char **mount, char **path, char **query)
{
	const char *q = strchr(uri, '?');
	size_t plen = q != NULL ? (size_t)(q - uri) : strlen(uri);
	long mlen;

	*mount = *path = *query = NULL;
	if (base != NULL && *base != '\0') {
		/* "llm", "/llm" and "/llm/" name the same mount point. */
		while (*base == '/')
			base++;
		size_t blen = strlen(base);
		while (blen > 0 && base[blen - 1] == '/')
			blen--;
		if (blen == 0) {
			mlen = 0;
		} else {
			if (plen <= blen + 1 || strncmp(uri + 1, base, blen) != 0 ||
			    uri[blen + 1] != '/')
				return REQUEST_PATH_FOREIGN;
			mlen = (long)blen + 1;
		}
	} else {
		mlen = request_find_mount(uri, plen);
		if (mlen < 0)
			return REQUEST_PATH_FOREIGN;
	}
	*mount = strndup(uri, (size_t)mlen);
	*path = strndup(uri + mlen, plen - (size_t)mlen);
	if (q != NULL)
		*query = strdup(q + 1);
	if (*mount == NULL || *path == NULL || (q != NULL && *query == NULL)) {
		free(*mount);
		free(*path);
		free(*query);
		*mount = *path = *query = NULL;
		return -1;
	}
	return REQUEST_PATH_OK;
}

/* "HTTP_X_API_KEY" -> "X-Api-Key". */
static char *
request_header_name(const char *param, size_t len)
{
	char *name = malloc(len + 1);
	bool word_start = true;

	if (name == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		char c = param[i];
		if (c == '_') {
			name[i] = '-';
			word_start = true;
			continue;
		}
		name[i] =
			(char)(word_start ? toupper((unsigned char)c) : tolower((unsigned char)c));
		word_start = false;
	}
	name[len] = '\0';
	return name;
}

/* Appends one header to the list being built in hv. */
static int
request_add_header(struct dynbuf *hv, const char *name, size_t len, const char *value)
{
	struct request_header *h;
	char *n = request_header_name(name, len);

	if (n == NULL || (h = dynbuf_addz(hv, sizeof(*h))) == NULL) {
		free(n);
		return -1;
	}
	h->name = n;
	h->value = (char *)value;
	return 0;
}

/* Where request_load keeps the parameter named name[0..len), if it keeps
 * it: REQUEST_METHOD, CONTENT_TYPE, CONTENT_LENGTH or REQUEST_URI. */
static const char **
request_param_slot(const char *name, size_t len, const char **method, const char **type,
		   const char **length, const char **uri)
{
	static const struct {
		const char *name;
		size_t len;
	} names[] = {{"REQUEST_METHOD", 14},
		     {"CONTENT_TYPE", 12},
		     {"CONTENT_LENGTH", 14},
		     {"REQUEST_URI", 11}};
	const char **slots[] = {method, type, length, uri};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (len == names[i].len && memcmp(name, names[i].name, len) == 0)
			return slots[i];
	return NULL;
}

int
request_load(struct request *r, FCGX_Request *f, int64_t now_ms)
{
	struct request_header *h;
	struct dynbuf hv;
	const char *uri = NULL, *cl = NULL;
	bool oom = false;
	int v;

	memset(r, 0, sizeof(*r));
	r->fcgi = f;
	r->start_ms = now_ms;
	r->content_length = -1;
	dynbuf_init(&hv, REQUEST_HEADERS_MAX * sizeof(*h));
	/* One pass over the parameters: the headers, and the first of each
	 * parameter read here (as FCGX_GetParam finds it; a scan of them all
	 * per name cost more than the rest of the request's loading). */
	for (char **e = f->envp; e != NULL && *e != NULL; e++) {
		const char *eq = strchr(*e, '=');
		if (eq == NULL)
			continue;
		size_t len = (size_t)(eq - *e);
		if (strncmp(*e, "HTTP_", 5) != 0) {
			const char **want = request_param_slot(*e, len, &r->method,
							       &r->content_type, &cl, &uri);
			if (want != NULL && *want == NULL)
				*want = eq + 1;
			continue;
		}
		/* A name that is no token could smuggle a line upstream. */
		if (oom || !request_is_token(*e + 5, len - 5))
			continue;
		/* Out of memory: the parameters are still read, for the log. */
		oom = request_add_header(&hv, *e + 5, len - 5, eq + 1) != 0;
	}
	if (r->method == NULL)
		r->method = "GET";
	if (r->content_type != NULL && *r->content_type == '\0')
		r->content_type = NULL;
	if (cl != NULL && *cl != '\0') {
		char *end;
		long long n = strtoll(cl, &end, 10);
		if (*end == '\0' && n >= 0)
			r->content_length = n;
	}
	if (oom || (r->content_type != NULL &&
		    request_add_header(&hv, "CONTENT_TYPE", 12, r->content_type) != 0))
		goto fail;
	r->n_headers = dynbuf_len(&hv) / sizeof(*h);
	r->headers = (struct request_header *)dynbuf_take(&hv, NULL);
	/* REQUEST_URI is the path as the client sent it whatever split of
	 * SCRIPT_NAME and PATH_INFO the server made (doc/behaviour.md, Web
	 * servers: Paths). */
	if (uri == NULL || *uri != '/')
		return REQUEST_PATH_FOREIGN;
	v = request_split_uri(uri, getenv("API_TOGETHER_BASE_PATH"), &r->mount, &r->path,
			      &r->query);
	if (v != REQUEST_PATH_OK)
		return v;
	r->decoded = request_percent_decode(r->path, &r->decoded_len);
	if (r->decoded == NULL)
		return -1;
	if (!request_path_safe(r->path, r->decoded, r->decoded_len) ||
	    (r->query != NULL && request_has_ctl(r->query)) ||
	    !request_is_token(r->method, strlen(r->method)))
		return REQUEST_PATH_BAD;
	return REQUEST_PATH_OK;
fail:
	h = dynbuf_ptr(&hv);
	for (size_t i = 0; i < dynbuf_len(&hv) / sizeof(*h); i++)
		free(h[i].name);
	dynbuf_free(&hv);
	return -1;
}

int
request_read_limit(int fd, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void
request_read_end(struct request *r)
{
	long long cl = r->content_length;
	const char *m = r->method;

	if (cl > 0 ||
	    (cl < 0 && (m == NULL || (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 &&
				      strcmp(m, "OPTIONS") != 0))) ||
	    (cl < 0 && request_header(r, "Transfer-Encoding") != NULL))
		return;
	int c = FCGX_GetChar(r->fcgi->in);
	if (c != EOF)
		FCGX_UnGetChar(c, r->fcgi->in);
}

int
request_read_body(struct request *r, long long max)
{
	long long cl = r->content_length;
	size_t bound, first, len;
	struct dynbuf b;

	if (cl > max)
		return 1;
	(void)request_read_limit(r->fcgi->ipcFd, 0);
	/* A byte past max is read, to see that a body without a length is
	 * too large. */
	bound = (size_t)max + 1;
	dynbuf_init(&b, bound);
	/* With a length, one allocation of it. The body is never NULL. */
	first = cl >= 0 ? (size_t)cl : REQUEST_BODY_BLOCK;
	if (dynbuf_reserve(&b, first < bound ? first : bound) != 0)
		goto fail;
	for (;;) {
		len = dynbuf_len(&b);
		if (cl >= 0 && len == (size_t)cl)
			break;
		if (dynbuf_room(&b) == 0) {
			size_t left = bound - len;
			if (left == 0) {
				dynbuf_free(&b);
				return 1;
			}
			if (dynbuf_reserve(&b, left < REQUEST_BODY_BLOCK ? left
									 : REQUEST_BODY_BLOCK) != 0)
				goto fail;
		}
		size_t want = dynbuf_room(&b);
		if (cl >= 0 && want > (size_t)cl - len)
			want = (size_t)cl - len;
		if (want > REQUEST_READ_MAX)
			want = REQUEST_READ_MAX;
		int n = FCGX_GetStr(dynbuf_end(&b), (int)want, r->fcgi->in);
		if (n <= 0)
			break;
		dynbuf_commit(&b, (size_t)n);
	}
	len = dynbuf_len(&b);
	int read_err = FCGX_GetError(r->fcgi->in);
	/* The end of the body's stream, which a web server sends with the
	 * body's last bytes: read (from libfcgi's buffer, nearly always), the
	 * request is read whole, and its connection can be closed without
	 * waiting for the web server (main_finish). What this read finds (more
	 * bytes than the length said, a web server gone) leaves the body as it
	 * was read. */
	if (cl >= 0 && len == (size_t)cl && read_err == 0)
		(void)FCGX_GetChar(r->fcgi->in);
	if ((long long)len > max) {
		dynbuf_free(&b);
		return 1;
	}
	/* A body that ended before its length, or a read error, is not sent
	 * on: a cut upload would still be counted upstream. */
	if ((cl >= 0 && len < (size_t)cl) || read_err != 0)
		goto fail;
	r->body = dynbuf_take(&b, &r->body_len);
	return 0;
fail:
	dynbuf_free(&b);
	return -1;
}

const char *
request_header(const struct request *r, const char *name)
{
	for (size_t i = 0; i < r->n_headers; i++)
		if (strcasecmp(r->headers[i].name, name) == 0)
			return r->headers[i].value;
	return NULL;
}

void
request_free(struct request *r)
{
	for (size_t i = 0; i < r->n_headers; i++)
		free(r->headers[i].name);
	free(r->headers);
	free(r->mount);
	free(r->path);
	free(r->decoded);
	free(r->query);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

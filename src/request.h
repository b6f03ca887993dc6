/* request: one client request, from FastCGI parameters and body into a struct. */
#ifndef API_TOGETHER_REQUEST_H
#define API_TOGETHER_REQUEST_H

#include <fcgiapp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config_client;

struct request_header {
	char *name;  /* Title-Case, e.g. "X-Api-Key" */
	char *value; /* points into the FastCGI parameters */
};

struct request {
	FCGX_Request *fcgi;
	const char *method;
	char *mount;   /* the mount point, "" or e.g. "/llm" */
	char *path;    /* below the mount, as the client sent it, without query */
	char *decoded; /* path percent-decoded */
	size_t decoded_len;
	char *query; /* after '?', NULL when there is none */
	const char *content_type;
	long long content_length; /* -1 when not given */
	struct request_header *headers;
	size_t n_headers;
	char *body;
	size_t body_len;
	int64_t start_ms;
	/* the config's entry of the key that opened the request (not owned);
	 * NULL on a path that needs none */
	const struct config_client *client;
};

enum request_path_verdict {
	REQUEST_PATH_OK,
	REQUEST_PATH_FOREIGN, /* not below the mount point: not ours */
	REQUEST_PATH_BAD      /* "..", control characters, a method no token: refused */
};

/* Splits a REQUEST_URI into mount point, path and query. base is
 * API_TOGETHER_BASE_PATH (NULL or "" when unset): without it the mount point
 * is everything before the first path segment "v1", "health", "status" or
 * "metrics". On
 * REQUEST_PATH_OK the three strings are malloc'd (query may be NULL); -1
 * when out of memory. */
int request_split_uri(const char *uri, const char *base, char **mount, char **path, char **query);

/* Percent-decodes s into a malloc'd string, its length in *len (it may hold
 * NUL bytes). Malformed escapes are kept as they are. NULL when out of memory. */
char *request_percent_decode(const char *s, size_t *len);

/* True when raw has no "..", space, control character or DEL, and decoded
 * (of decoded_len bytes) neither a ".." segment, a NUL, CR nor LF. */
bool request_path_safe(const char *raw, const char *decoded, size_t decoded_len);

/* Fills r from the FastCGI parameters of f (the body is not read). Returns
 * REQUEST_PATH_OK, or the verdict that ends the request; -1 when out of
 * memory or past 16384 headers (more than any web server passes on). r is
 * for request_free on every path. */
int request_load(struct request *r, FCGX_Request *f, int64_t now_ms);

/* How long a read on fd (a FastCGI connection, or the listening socket
 * for accept) may wait, SO_RCVTIMEO; 0 takes the limit off. A request's
 * parameters are read under a limit, since the web server sends them at
 * once; request_read_body takes it off for the body, which a client may
 * upload slowly through a server that streams it. Returns setsockopt's
 * result. */
int request_read_limit(int fd, long ms);

/* For a request that says it has no body (Content-Length 0, or none on a
 * GET, HEAD or OPTIONS without Transfer-Encoding: a server streaming a
 * chunked body sends no length), reads the end of its input, which the web
 * server sends with the parameters, still under their limit: a request read
 * to its end is closed without libfcgi's wait for the web server's close
 * (doc/behaviour.md, Web servers: libfcgi). A byte that comes anyway is put
 * back for the handler. */
void request_read_end(struct request *r);

/* Reads the body, at most max bytes. Returns 0, 1 when it is larger than
 * max (nothing more is read), -1 when it ends before its Content-Length, on
 * a read error or lack of memory. */
int request_read_body(struct request *r, long long max);

/* The value of header name (case-insensitive), or NULL. */
const char *request_header(const struct request *r, const char *name);

void request_free(struct request *r);

/* True when the len bytes at s are an RFC 9110 token (a method, a header
 * name): at least one of the letters, digits and !#$%&'*+-.^_`|~. */
bool request_is_token(const char *s, size_t len);

#endif

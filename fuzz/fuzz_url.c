/* Fuzzes URL and path handling: request_split_uri, request_percent_decode,
 * request_path_safe (src/request.h) and upstream_url (src/upstream.h).
 * Input: API_TOGETHER_BASE_PATH, LF, REQUEST_URI, LF, an endpoint's baseUrl
 * (an empty first line means no base path). */
#include "fuzz.h"

#include <stdbool.h>

#include "request.h"
#include "upstream.h"

/* True when s[0..len) has a segment "..", '/' and '\' separating segments:
 * written apart from src/request.c to check it. */
static bool
fuzz_has_dotdot(const char *s, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++)
		if (s[i] == '.' && s[i + 1] == '.' &&
		    (i == 0 || s[i - 1] == '/' || s[i - 1] == '\\') &&
		    (i + 2 == len || s[i + 2] == '/' || s[i + 2] == '\\'))
			return true;
	return false;
}

static void
fuzz_check_decode(const char *s)
{
	size_t n = 0;
	char *d = request_percent_decode(s, &n);

	FUZZ_CHECK(d != NULL);
	FUZZ_CHECK(n <= strlen(s) && d[n] == '\0');
	if (strchr(s, '%') == NULL)
		FUZZ_CHECK(n == strlen(s) && memcmp(d, s, n) == 0);
	free(d);
}

static void
fuzz_check_url(const char *base_url, const char *path, const char *query)
{
	char *url = upstream_url(base_url, path, query);
	const char *host = strstr(base_url, "://");
	size_t ulen, origin;

	FUZZ_CHECK(url != NULL);
	ulen = strlen(url);
	origin = host != NULL ? (size_t)(host + 3 - base_url) + strcspn(host + 3, "/")
			      : strlen(base_url);
	/* The endpoint's origin, then the path, then the client's query. */
	FUZZ_CHECK(strncmp(url, base_url, origin) == 0);
	if (query != NULL) {
		size_t qn = strlen(query);
		FUZZ_CHECK(ulen > qn && url[ulen - qn - 1] == '?' &&
			   strcmp(url + ulen - qn, query) == 0);
		ulen -= qn + 1;
	}
	/* A base URL with a path stands for "/v1"; without one the client's
	 * path goes on as it is. */
	const char *base_path = host != NULL ? base_url + origin : "";
	bool replaces = base_path[0] == '/' && base_path[1] != '\0' &&
			strncmp(path, "/v1", 3) == 0 && (path[3] == '/' || path[3] == '\0');
	const char *tail = replaces ? path + 3 : path;
	size_t tn = strlen(tail), bn = strlen(base_path);
	FUZZ_CHECK(ulen == origin + (replaces ? bn : 0) + tn);
	FUZZ_CHECK(!replaces || memcmp(url + origin, base_path, bn) == 0);
	FUZZ_CHECK(memcmp(url + ulen - tn, tail, tn) == 0);
	free(url);
}

/* Whether path starts with the segment seg ("/v1": "/v1" or "/v1/..."). */
static int
fuzz_url_segment(const char *path, const char *seg)
{
	size_t n = strlen(seg);

	return strncmp(path, seg, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *rest, *rest2;
	size_t restlen, restlen2;
	char *base = fuzz_line(data, size, &rest, &restlen);
	char *uri = fuzz_line(rest, restlen, &rest2, &restlen2);
	char *base_url = fuzz_line(rest2, restlen2, &rest, &restlen);
	char *mount, *path, *query, *decoded;
	size_t dlen;
	int v;

	fuzz_check_decode(uri);
	fuzz_check_url(base_url, uri, NULL);
	/* request_load hands over only a REQUEST_URI that starts with '/'. */
	if (uri[0] != '/')
		goto done;
	v = request_split_uri(uri, *base != '\0' ? base : NULL, &mount, &path, &query);
	FUZZ_CHECK(v == REQUEST_PATH_OK || v == REQUEST_PATH_FOREIGN);
	if (v != REQUEST_PATH_OK) {
		FUZZ_CHECK(mount == NULL && path == NULL && query == NULL);
		goto done;
	}
	FUZZ_CHECK(mount != NULL && path != NULL);
	/* mount, path and query are the URI cut in three. */
	size_t ml = strlen(mount), pl = strlen(path);
	FUZZ_CHECK(memcmp(uri, mount, ml) == 0 && memcmp(uri + ml, path, pl) == 0);
	if (query != NULL)
		FUZZ_CHECK(uri[ml + pl] == '?' && strcmp(uri + ml + pl + 1, query) == 0);
	else
		FUZZ_CHECK(uri[ml + pl] == '\0');
	FUZZ_CHECK(strchr(path, '?') == NULL);
	FUZZ_CHECK(path[0] == '/');
	if (*base == '\0')
		/* Without a base path the path starts at a segment that marks the
		 * mount point: "v1", "health", "status" or "metrics". */
		FUZZ_CHECK(fuzz_url_segment(path, "/v1") || fuzz_url_segment(path, "/health") ||
			   fuzz_url_segment(path, "/status") || fuzz_url_segment(path, "/metrics"));

	decoded = request_percent_decode(path, &dlen);
	FUZZ_CHECK(decoded != NULL && dlen <= pl);
	if (request_path_safe(path, decoded, dlen)) {
		for (size_t i = 0; i < pl; i++)
			FUZZ_CHECK((unsigned char)path[i] > 0x20 && path[i] != 0x7f);
		FUZZ_CHECK(memchr(decoded, '\0', dlen) == NULL &&
			   memchr(decoded, '\r', dlen) == NULL &&
			   memchr(decoded, '\n', dlen) == NULL);
		FUZZ_CHECK(!fuzz_has_dotdot(path, pl) && !fuzz_has_dotdot(decoded, dlen));
		fuzz_check_url(base_url, path, query);
	} else {
		/* Refused for a reason the contract names. */
		bool ctl = false;
		for (size_t i = 0; i < pl; i++)
			ctl |= (unsigned char)path[i] <= 0x20 || path[i] == 0x7f;
		FUZZ_CHECK(ctl || fuzz_has_dotdot(path, pl) || fuzz_has_dotdot(decoded, dlen) ||
			   memchr(decoded, '\0', dlen) != NULL ||
			   memchr(decoded, '\r', dlen) != NULL ||
			   memchr(decoded, '\n', dlen) != NULL);
	}
	if (query != NULL)
		fuzz_check_decode(query);
	free(decoded);
	free(mount);
	free(path);
	free(query);
done:
	free(base_url);
	free(uri);
	free(base);
	return 0;
}

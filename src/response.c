#include "response.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
	int status;
	const char *type;
	const char *code;
	const char *message;
} response_errors[] = {
	[RESP_INVALID_API_KEY] = {401, "authentication_error", "invalid_api_key",
				  "Invalid API key. Send it as 'Authorization: Bearer KEY'."},
	[RESP_KEY_EXPIRED] = {401, "authentication_error", "key_expired",
			      "This API key has expired."},
	[RESP_ADMIN_ONLY] = {403, "permission_error", "admin_only",
			     "Only an admin key may use this path."},
	[RESP_MODEL_NOT_ALLOWED] = {403, "permission_error", "model_not_allowed",
				    "This API key may not use this model."},
	[RESP_REQUEST_TOO_LARGE] = {413, "invalid_request_error", "request_too_large",
				    "Request body is larger than the gateway accepts."},
	[RESP_INVALID_JSON] = {400, "invalid_request_error", "invalid_json",
			       "Request body is not valid JSON."},
	[RESP_INVALID_REQUEST] =
		{400, "invalid_request_error", "invalid_request",
		 "Request body names its model in a way parsers read differently."},
	[RESP_INVALID_PATH] = {400, "invalid_request_error", "invalid_path",
			       "Request path is not allowed."},
	[RESP_INCOMPLETE_BODY] = {400, "invalid_request_error", "incomplete_body",
				  "Request body ended before its Content-Length."},
	[RESP_METHOD_NOT_ALLOWED] = {405, "invalid_request_error", "method_not_allowed",
				     "Method not allowed on this path."},
	[RESP_NOT_FOUND] = {404, "invalid_request_error", "not_found", "Unknown path."},
	[RESP_NOT_FORWARDED] =
		{404, "invalid_request_error", "not_forwarded",
		 "This path is not forwarded to the upstreams. The gateway's operator "
		 "can allow it in server.forwardPaths."},
	[RESP_MODEL_NOT_FOUND] = {404, "invalid_request_error", "model_not_found",
				  "No enabled endpoint serves this model."},
	[RESP_API_NOT_FOUND] = {404, "invalid_request_error", "api_not_found",
				"No endpoint has this id."},
	[RESP_RATE_LIMITED] = {429, "rate_limit_error", "rate_limit_exceeded",
			       "Every endpoint serving this model is at its rate limit."},
	[RESP_CLIENT_RATE_LIMITED] = {429, "rate_limit_error", "client_rate_limited",
				      "This API key is at its own rate limit."},
	[RESP_NO_AVAILABLE_API] = {503, "service_unavailable", "no_available_api",
				   "Every endpoint serving this model is cooling down after "
				   "failures."},
	[RESP_UPSTREAM_UNREACHABLE] = {502, "bad_gateway", "upstream_unreachable",
				       "No upstream endpoint answered."},
	[RESP_CONFIG_ERROR] = {500, "server_error", "config_error",
			       "The gateway's configuration cannot be loaded."},
	[RESP_STATE_UNAVAILABLE] = {503, "server_error", "state_unavailable",
				    "The gateway's state store cannot be used."},
	[RESP_INTERNAL] = {500, "server_error", "internal_error", "Internal error."},
};

/* The CORS header, on every answer when the config says so (server.cors). */
#define RESPONSE_CORS_NAME "Access-Control-Allow-Origin"
#define RESPONSE_CORS_LINE RESPONSE_CORS_NAME ": *\r\n"

/* Reason phrase of a status, "" when unknown. */
static const char *
response_reason(long status)
{
	switch (status) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Payload Too Large";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	default:
		return "";
	}
}

/* True when one of the lines p[0..len) is a CORS header. */
static bool
response_has_cors(const char *p, size_t len)
{
	static const char name[] = RESPONSE_CORS_NAME ":";
	const char *end = p + len;

	while (p < end) {
		if ((size_t)(end - p) >= sizeof(name) - 1 &&
		    strncasecmp(p, name, sizeof(name) - 1) == 0)
			return true;
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		p = nl != NULL ? nl + 1 : end;
	}
	return false;
}

/* Writes v in decimal at the end of buf (RESPONSE_DIGITS bytes) and returns
 * where it starts. Every answer's status and length are written with it:
 * snprintf's format parsing cost more than the rest of a header line. */
#define RESPONSE_DIGITS 24
static char *
response_digits(char *buf, long long v)
{
	char *p = buf + RESPONSE_DIGITS;
	unsigned long long u = v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u > 0);
	if (v < 0)
		*--p = '-';
	return p;
}

void
response_begin(FCGX_Stream *out, const struct response_head *h)
{
	char buf[RESPONSE_DIGITS];
	const char *d = response_digits(buf, h->status);

	FCGX_PutStr("Status: ", 8, out);
	FCGX_PutStr(d, (int)(buf + sizeof(buf) - d), out);
	FCGX_PutStr(" ", 1, out);
	FCGX_PutS(response_reason(h->status), out);
	FCGX_PutStr("\r\n", 2, out);
	if (h->content_type != NULL)
		response_header(out, "Content-Type", h->content_type);
	if (h->relayed != NULL && h->relayed_len > 0)
		FCGX_PutStr(h->relayed, (int)h->relayed_len, out);
	/* An upstream that sends its own CORS header keeps it: a second one
	 * would make browsers refuse the answer. */
	if (h->cors && (h->relayed == NULL || !response_has_cors(h->relayed, h->relayed_len)))
		FCGX_PutS(RESPONSE_CORS_LINE, out);
}

void
response_header(FCGX_Stream *out, const char *name, const char *value)
{
	FCGX_PutS(name, out);
	FCGX_PutStr(": ", 2, out);
	FCGX_PutS(value, out);
	FCGX_PutStr("\r\n", 2, out);
}

void
response_header_number(FCGX_Stream *out, const char *name, long long value)
{
	char buf[RESPONSE_DIGITS];
	const char *d = response_digits(buf, value);

	FCGX_PutS(name, out);
	FCGX_PutStr(": ", 2, out);
	FCGX_PutStr(d, (int)(buf + sizeof(buf) - d), out);
	FCGX_PutStr("\r\n", 2, out);
}

void
response_headerf(FCGX_Stream *out, const char *name, const char *fmt, ...)
{
	char value[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	if (n < 0)
		value[0] = '\0';
	response_header(out, name, value);
}

void
response_end_headers(FCGX_Stream *out)
{
	FCGX_PutStr("\r\n", 2, out);
}

int
response_error_status(enum response_error e)
{
	return response_errors[e].status;
}

int
response_json(FCGX_Stream *out, int status, const json_t *body, bool cors)
{
	char *text = json_dumps(body, JSON_COMPACT);

	response_begin(out, &(struct response_head){.status = status,
						    .content_type = "application/json",
						    .cors = cors});
	if (text == NULL) {
		response_header(out, "Content-Length", "2");
		response_end_headers(out);
		FCGX_PutS("{}", out);
		return status;
	}
	response_header_number(out, "Content-Length", (long long)strlen(text));
	response_end_headers(out);
	FCGX_PutS(text, out);
	free(text);
	return status;
}

/* Writes error e. A header of the error's own (first_name: first_value, when
 * not NULL) goes before the status line: CGI headers have no order, the web
 * server keeps theirs on the wire, and Allow and Retry-After have always come
 * first there. */
static int
response_error_with(FCGX_Stream *out, enum response_error e, const char *message,
		    const char *first_name, const char *first_value, bool cors)
{
	int status = response_errors[e].status;
	json_t *body;

	if (first_name != NULL)
		response_header(out, first_name, first_value);
	body = json_pack("{s:{s:s,s:s,s:s}}", "error", "message",
			 message != NULL ? message : response_errors[e].message, "type",
			 response_errors[e].type, "code", response_errors[e].code);
	if (body == NULL) {
		/* Out of memory: the status alone still tells the client. */
		response_begin(out, &(struct response_head){.status = status, .cors = cors});
		response_end_headers(out);
		return status;
	}
	response_json(out, status, body, cors);
	json_decref(body);
	return status;
}

int
response_error(FCGX_Stream *out, enum response_error e, const char *message, long retry_after_s,
	       bool cors)
{
	char secs[24];

	if (retry_after_s <= 0)
		return response_error_with(out, e, message, NULL, NULL, cors);
	snprintf(secs, sizeof(secs), "%ld", retry_after_s);
	return response_error_with(out, e, message, "Retry-After", secs, cors);
}

int
response_method_not_allowed(FCGX_Stream *out, const char *allow, bool cors)
{
	return response_error_with(out, RESP_METHOD_NOT_ALLOWED, NULL, "Allow", allow, cors);
}

int
response_preflight(FCGX_Stream *out, const char *request_headers)
{
	response_begin(out, &(struct response_head){.status = 204, .cors = true});
	response_header(out, "Access-Control-Allow-Methods",
			"GET, POST, PUT, PATCH, DELETE, OPTIONS");
	/* Echo the asked-for headers only when they are one safe line. */
	if (request_headers != NULL && *request_headers != '\0' &&
	    strpbrk(request_headers, "\r\n") == NULL && strlen(request_headers) < 4096)
		response_header(out, "Access-Control-Allow-Headers", request_headers);
	else
		response_header(out, "Access-Control-Allow-Headers",
				"Authorization, Content-Type, X-Api-Key");
	response_header(out, "Access-Control-Max-Age", "86400");
	response_end_headers(out);
	return 204;
}

void
response_finish(FCGX_Request *f)
{
	/* The error stream first: libfcgi writes the end of the request with
	 * the last of its two output streams to close. An error here (the web
	 * server gone) is FCGX_Finish_r's to act on: it closes the connection. */
	(void)FCGX_FClose(f->err);
	(void)FCGX_FClose(f->out);
}

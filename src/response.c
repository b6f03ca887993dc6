#include "response.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	int status;
	const char *type;
	const char *code;
	const char *message;
} response_errors[] = {
	[RESP_INVALID_API_KEY] = {401, "authentication_error", "invalid_api_key",
				  "Invalid API key. Send it as 'Authorization: Bearer KEY'."},
	[RESP_REQUEST_TOO_LARGE] = {413, "invalid_request_error", "request_too_large",
				    "Request body is larger than the gateway accepts."},
	[RESP_INVALID_JSON] = {400, "invalid_request_error", "invalid_json",
			       "Request body is not valid JSON."},
	[RESP_INVALID_PATH] = {400, "invalid_request_error", "invalid_path",
			       "Request path is not allowed."},
	[RESP_INCOMPLETE_BODY] = {400, "invalid_request_error", "incomplete_body",
				  "Request body ended before its Content-Length."},
	[RESP_METHOD_NOT_ALLOWED] = {405, "invalid_request_error", "method_not_allowed",
				     "Method not allowed on this path."},
	[RESP_NOT_FOUND] = {404, "invalid_request_error", "not_found", "Unknown path."},
	[RESP_MODEL_NOT_FOUND] = {404, "invalid_request_error", "model_not_found",
				  "No enabled endpoint serves this model."},
	[RESP_API_NOT_FOUND] = {404, "invalid_request_error", "api_not_found",
				"No endpoint has this id."},
	[RESP_RATE_LIMITED] = {429, "rate_limit_error", "rate_limit_exceeded",
			       "Every endpoint serving this model is at its rate limit."},
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

void
response_printf(FCGX_Stream *out, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	FCGX_PutStr(buf, n < (int)sizeof(buf) ? n : (int)sizeof(buf) - 1, out);
}

const char *
response_reason(int status)
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

int
response_error_status(enum response_error e)
{
	return response_errors[e].status;
}

int
response_json(FCGX_Stream *out, int status, const json_t *body, bool cors)
{
	char *text = json_dumps(body, JSON_COMPACT);

	response_printf(out, "Status: %d %s\r\nContent-Type: application/json\r\n", status,
			response_reason(status));
	if (cors)
		FCGX_PutS(RESPONSE_CORS_HEADER, out);
	if (text == NULL) {
		FCGX_PutS("Content-Length: 2\r\n\r\n{}", out);
		return status;
	}
	response_printf(out, "Content-Length: %zu\r\n\r\n", strlen(text));
	FCGX_PutS(text, out);
	free(text);
	return status;
}

int
response_error(FCGX_Stream *out, enum response_error e, const char *message, long retry_after_s,
	       bool cors)
{
	json_t *body;
	int status = response_errors[e].status;

	if (retry_after_s > 0)
		response_printf(out, "Retry-After: %ld\r\n", retry_after_s);
	body = json_pack("{s:{s:s,s:s,s:s}}", "error", "message",
			 message != NULL ? message : response_errors[e].message, "type",
			 response_errors[e].type, "code", response_errors[e].code);
	if (body == NULL) {
		response_printf(out, "Status: %d\r\n\r\n", status);
		return status;
	}
	response_json(out, status, body, cors);
	json_decref(body);
	return status;
}

int
response_preflight(FCGX_Stream *out, const char *request_headers)
{
	FCGX_PutS("Status: 204 No Content\r\n" RESPONSE_CORS_HEADER
		  "Access-Control-Allow-Methods: GET, POST, PUT, PATCH, DELETE, OPTIONS\r\n",
		  out);
	/* Echo the asked-for headers only when they are one safe line. */
	if (request_headers != NULL && *request_headers != '\0' &&
	    strpbrk(request_headers, "\r\n") == NULL && strlen(request_headers) < 4096) {
		FCGX_PutS("Access-Control-Allow-Headers: ", out);
		FCGX_PutS(request_headers, out);
		FCGX_PutS("\r\n", out);
	} else
		FCGX_PutS("Access-Control-Allow-Headers: Authorization, Content-Type, "
			  "X-Api-Key\r\n",
			  out);
	FCGX_PutS("Access-Control-Max-Age: 86400\r\n\r\n", out);
	return 204;
}

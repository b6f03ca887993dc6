/* response: what the gateway itself answers: JSON bodies, OpenAI-shaped
 * errors from one table, CORS. */
#ifndef API_TOGETHER_RESPONSE_H
#define API_TOGETHER_RESPONSE_H

#include <fcgiapp.h>
#include <jansson.h>
#include <stdbool.h>

/* Every error the gateway answers by itself (SPEC section 5). */
enum response_error {
	RESP_INVALID_API_KEY,
	RESP_REQUEST_TOO_LARGE,
	RESP_INVALID_JSON,
	RESP_INVALID_PATH,
	RESP_INCOMPLETE_BODY,
	RESP_METHOD_NOT_ALLOWED,
	RESP_NOT_FOUND,
	RESP_MODEL_NOT_FOUND,
	RESP_API_NOT_FOUND,
	RESP_RATE_LIMITED,
	RESP_NO_AVAILABLE_API,
	RESP_UPSTREAM_UNREACHABLE,
	RESP_CONFIG_ERROR,
	RESP_STATE_UNAVAILABLE,
	RESP_INTERNAL
};

/* The HTTP status of an error. */
int response_error_status(enum response_error e);

/* Writes error e as {"error":{"message","type","code"}}. message NULL uses
 * the table's; it must hold no secret. retry_after_s > 0 adds Retry-After.
 * Returns the status written. */
int response_error(FCGX_Stream *out, enum response_error e, const char *message, long retry_after_s,
		   bool cors);

/* Writes status and body (not consumed) as JSON. Returns status. */
int response_json(FCGX_Stream *out, int status, const json_t *body, bool cors);

/* Answers a CORS preflight: 204 with the allowed methods and headers. */
int response_preflight(FCGX_Stream *out, const char *request_headers);

/* The header line that opens every CORS answer. */
#define RESPONSE_CORS_HEADER "Access-Control-Allow-Origin: *\r\n"

/* printf to a FastCGI stream. libfcgi's own FCGX_FPrintF knows only part
 * of C's formats (not %zu), so everything goes through vsnprintf. */
void response_printf(FCGX_Stream *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reason phrase of a status, "" when unknown. */
const char *response_reason(int status);

#endif

/* response: how every answer is framed (status line, headers, CORS), and
 * what the gateway itself answers: JSON bodies, OpenAI-shaped errors from one
 * table, the CORS preflight. */
#ifndef API_TOGETHER_RESPONSE_H
#define API_TOGETHER_RESPONSE_H

#include <fcgiapp.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Every error the gateway answers by itself (doc/behaviour.md, Errors). */
enum response_error {
	RESP_INVALID_API_KEY,
	RESP_KEY_EXPIRED,
	RESP_ADMIN_ONLY,
	RESP_MODEL_NOT_ALLOWED,
	RESP_REQUEST_TOO_LARGE,
	RESP_INVALID_JSON,
	RESP_INVALID_REQUEST,
	RESP_INVALID_PATH,
	RESP_INCOMPLETE_BODY,
	RESP_METHOD_NOT_ALLOWED,
	RESP_NOT_FOUND,
	RESP_NOT_FORWARDED,
	RESP_MODEL_NOT_FOUND,
	RESP_API_NOT_FOUND,
	RESP_RATE_LIMITED,
	RESP_CLIENT_RATE_LIMITED,
	RESP_NO_AVAILABLE_API,
	RESP_UPSTREAM_UNREACHABLE,
	RESP_CONFIG_ERROR,
	RESP_STATE_UNAVAILABLE,
	RESP_INTERNAL
};

/* The HTTP status of an error. */
int response_error_status(enum response_error e);

/* The head of an answer: the status line and what describes the body,
 * written by response_begin, the one place an answer's head is opened. A
 * status the gateway does not answer itself (one relayed) may have no
 * reason phrase: "Status: 299 ". */
struct response_head {
	long status;              /* "Status: 429 Too Many Requests" */
	const char *content_type; /* a Content-Type line; NULL: none */
	const char *relayed;      /* header lines passed on from an upstream, */
	size_t relayed_len;       /* "Name: value\r\n" each; NULL: none */
	bool cors;                /* Access-Control-Allow-Origin: *, unless relayed has it */
};

/* Opens an answer on out: the status line, Content-Type, the relayed lines,
 * then the CORS header, in that order. The writer adds its own header lines
 * with response_header, closes the head with response_end_headers and then
 * writes the body. Write errors show on the stream (FCGX_GetError). */
void response_begin(FCGX_Stream *out, const struct response_head *h);

/* Writes the header line "name: value". value must hold no CR or LF. */
void response_header(FCGX_Stream *out, const char *name, const char *value);

/* As response_header, the value a number in decimal (Content-Length). */
void response_header_number(FCGX_Stream *out, const char *name, long long value);

/* As response_header, the value printf-formatted; a value longer than
 * 1023 bytes is cut (the line still ends). For numbers and short values. */
void response_headerf(FCGX_Stream *out, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Ends the head: the blank line. */
void response_end_headers(FCGX_Stream *out);

/* Writes error e as {"error":{"message","type","code"}}. message NULL uses
 * the table's; it must hold no secret. retry_after_s > 0 adds Retry-After.
 * Returns the status written. */
int response_error(FCGX_Stream *out, enum response_error e, const char *message, long retry_after_s,
		   bool cors);

/* Answers 405 (RESP_METHOD_NOT_ALLOWED) with an Allow header listing the
 * methods the path takes (e.g. "GET, HEAD"). Returns 405. */
int response_method_not_allowed(FCGX_Stream *out, const char *allow, bool cors);

/* Writes status and body (not consumed) as JSON. Returns status. */
int response_json(FCGX_Stream *out, int status, const json_t *body, bool cors);

/* Answers a CORS preflight: 204 with the allowed methods and headers. */
int response_preflight(FCGX_Stream *out, const char *request_headers);

/* Ends the answer of f: what is left of it and the end of the request go to
 * the web server in one write, now rather than in FCGX_Finish_r. Called once
 * the answer is whole and before the request's log line, so that the line
 * is not written between the client and its answer's end; nothing may be
 * written to f after it, and calling it again does nothing. An answer
 * longer than libfcgi's 8 KB buffer has gone out in writes before. */
void response_finish(FCGX_Request *f);

#endif

/* ratelimit: whom an upstream answer is charged to, and until when a key
 * that was told to slow down cools (doc/behaviour.md, Key pools). Pure: the
 * answer's header lines and body in, the charge out; no clock read. */
#ifndef API_TOGETHER_RATELIMIT_H
#define API_TOGETHER_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* One upstream answer as the charge rules read it. */
struct ratelimit_answer {
	long status;      /* 0: no HTTP answer */
	bool failure;     /* upstream.h's call->failure: the endpoint failed */
	const char *head; /* "Name: value\r\n" lines; may be NULL */
	size_t head_len;
	const char *body; /* may be NULL */
	size_t body_len;
};

/* Whom a answers a charged to: STORE_CHARGE_RUN for the endpoint's own
 * outcome (a success, or no answer, a timeout, a 5xx, 408, 409, an empty
 * answer), STORE_CHARGE_LIMITED / EXHAUSTED for a 429 (then *until_ms is
 * when the key may serve again: Retry-After in seconds or an HTTP date,
 * else retry-after-ms, else the body's retryDelay, else now_ms +
 * default_s), STORE_CHARGE_REJECTED for a 401, STORE_CHARGE_FORBIDDEN for
 * a 403, STORE_CHARGE_NONE for any other 4xx. */
enum store_charge ratelimit_charge(const struct ratelimit_answer *a, int64_t now_ms, long default_s,
				   int64_t *until_ms);

/* Milliseconds the answer asks to wait, from its head (Retry-After,
 * retry-after-ms) or body (a "retryDelay": "17s"); -1 when it says none.
 * An HTTP date is read against now_ms. */
int64_t ratelimit_wait_ms(const struct ratelimit_answer *a, int64_t now_ms);

/* True when a 429's body says a daily quota is spent: a quota id holding
 * "PerDay" (Google) or the code "insufficient_quota" (OpenAI). */
bool ratelimit_daily(const char *body, size_t len);

#endif

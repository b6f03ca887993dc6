/* Fuzzes what an upstream's answer is charged to (src/ratelimit.h): the
 * header lines and the body of a 429 (Retry-After as seconds or a date,
 * retry-after-ms, a "retryDelay", daily quota markers), which come from an
 * upstream and are read by the gateway before it decides. Input: one byte
 * that picks the status, then the head up to the first empty line, then the
 * body; each handed over in a buffer of its exact size, as the held answer
 * is, so a read past it is caught. */
#include "fuzz.h"

#include "ratelimit.h"

/* Some moment in 2024, in ms. */
#define FUZZ_NOW_MS INT64_C(1710072000000)
#define FUZZ_DAY_MS (INT64_C(86400) * 1000)

static const long fuzz_statuses[] = {429, 429, 429, 429, 401, 403, 400, 404,
				     408, 500, 200, 0,   413, 422, 409, 503};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	long status = fuzz_statuses[data[0] % 16];
	const uint8_t *rest = data + 1;
	size_t restlen = size - 1;
	const uint8_t *gap = memmem(rest, restlen, "\n\n", 2);
	size_t head_len = gap != NULL ? (size_t)(gap - rest) + 1 : restlen;
	size_t body_len = restlen - head_len - (gap != NULL ? 1 : 0);
	char *head = malloc(head_len ? head_len : 1);
	char *body = malloc(body_len ? body_len : 1);

	if (head == NULL || body == NULL)
		abort();
	memcpy(head, rest, head_len);
	memcpy(body, rest + restlen - body_len, body_len);
	struct ratelimit_answer a = {status, status != 200 && status < 500 ? status >= 429 : true,
				     head,   head_len,
				     body,   body_len};
	int64_t wait = ratelimit_wait_ms(&a, FUZZ_NOW_MS);
	FUZZ_CHECK(wait == -1 || (wait >= 0 && wait <= FUZZ_DAY_MS));
	int64_t until = -1;
	enum store_charge c = ratelimit_charge(&a, FUZZ_NOW_MS, 60, &until);
	FUZZ_CHECK(c >= STORE_CHARGE_RUN && c <= STORE_CHARGE_FORBIDDEN);
	if (c == STORE_CHARGE_LIMITED) {
		FUZZ_CHECK(status == 429);
		FUZZ_CHECK(until >= FUZZ_NOW_MS && until <= FUZZ_NOW_MS + FUZZ_DAY_MS);
		FUZZ_CHECK(until == FUZZ_NOW_MS + (wait >= 0 ? wait : 60000));
	}
	if (c == STORE_CHARGE_EXHAUSTED)
		FUZZ_CHECK(status == 429 && ratelimit_daily(body, body_len));
	free(head);
	free(body);
	return 0;
}

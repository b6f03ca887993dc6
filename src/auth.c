#include "auth.h"

#include <string.h>
#include <strings.h>

const char *
auth_client_key(const struct request *r)
{
	const char *v = request_header(r, "Authorization");

	if (v != NULL) {
		while (*v == ' ' || *v == '\t')
			v++;
		if (strncasecmp(v, "Bearer", 6) == 0 && (v[6] == ' ' || v[6] == '\t')) {
			v += 6;
			while (*v == ' ' || *v == '\t')
				v++;
		}
		if (*v != '\0')
			return v;
	}
	v = request_header(r, "X-Api-Key");
	return v != NULL && *v != '\0' ? v : NULL;
}

/* Compares every byte of want whatever the contents; the loop's length
 * depends only on the configured key. */
static bool
auth_equal(const char *want, const char *got, size_t got_len)
{
	size_t want_len = strlen(want);
	unsigned char diff = (unsigned char)(want_len != got_len);

	for (size_t i = 0; i < want_len; i++) {
		unsigned char g = i < got_len ? (unsigned char)got[i] : 0;
		diff |= (unsigned char)want[i] ^ g;
	}
	return diff == 0;
}

bool
auth_check(const struct config *cfg, const char *key)
{
	bool ok = false;
	size_t len;

	if (key == NULL)
		return false;
	len = strlen(key);
	/* No early exit: every key is compared. */
	for (size_t i = 0; i < cfg->n_api_keys; i++)
		ok |= auth_equal(cfg->api_keys[i], key, len);
	return ok;
}

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

enum auth_verdict
auth_client(const struct config *cfg, const char *key, int64_t now_ms,
	    const struct config_client **client)
{
	size_t len, found = cfg->n_api_keys;
	const struct config_client *c;

	*client = NULL;
	if (key == NULL)
		return AUTH_UNKNOWN;
	len = strlen(key);
	/* No early exit: every key is compared, the match kept without a
	 * branch on secret data beyond the index. */
	for (size_t i = 0; i < cfg->n_api_keys; i++) {
		bool eq = auth_equal(cfg->api_keys[i], key, len);
		size_t mask = (size_t)0 - (size_t)eq;
		found = (found & ~mask) | (i & mask);
	}
	if (found == cfg->n_api_keys)
		return AUTH_UNKNOWN;
	c = &cfg->clients[found];
	if (!c->enabled)
		return AUTH_UNKNOWN;
	*client = c;
	return c->expires_ms != 0 && now_ms >= c->expires_ms ? AUTH_EXPIRED : AUTH_OK;
}

const char *
auth_client_label(const struct config_client *client)
{
	if (client == NULL)
		return "-";
	if (client->name != NULL)
		return client->name;
	return client->tail[0] != '\0' ? client->tail : "-";
}

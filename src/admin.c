/* The operator's actions: see admin.h. */
#include "admin.h"

#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "auth.h"
#include "clock.h"
#include "log.h"
#include "response.h"
#include "store.h"

#define ADMIN_PREFIX "/v1/admin/endpoints/"
/* Not a store_admin action: store_reset_tokens, as /v1/token/reset. */
#define ADMIN_RESET_TOKENS (-1)

/* The actions, by the path's last segments: what each does to the keys of
 * an endpoint and to one key. */
static const struct {
	const char *suffix;
	int endpoint, key;
} admin_actions[] = {
	{"/pause", STORE_ADMIN_PAUSE_ENDPOINT, STORE_ADMIN_PAUSE_KEY},
	{"/resume", STORE_ADMIN_RESUME_ENDPOINT, STORE_ADMIN_RESUME_KEY},
	{"/cooldown/end", STORE_ADMIN_END_COOLDOWN, STORE_ADMIN_END_COOLDOWN},
	{"/recheck", STORE_ADMIN_RECHECK, STORE_ADMIN_RECHECK},
	{"/tokens/reset", ADMIN_RESET_TOKENS, ADMIN_RESET_TOKENS},
};

/* The target of a path: endpoint api, and key (SIZE_MAX: the endpoint's
 * every key). */
struct admin_target {
	long api;
	size_t key;
	size_t action;
};

/* What a path names, or what it lacks. */
enum admin_found { ADMIN_FOUND, ADMIN_NO_ACTION, ADMIN_NO_ENDPOINT, ADMIN_NO_KEY };

/* Reads "N" of s[0..len) as a key's index below n; false when it is not
 * one (no sign, no leading zero but "0"). */
static bool
admin_index(const char *s, size_t len, size_t n, size_t *out)
{
	size_t v = 0;

	if (len == 0 || len > 9 || (len > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (size_t)(s[i] - '0');
	}
	*out = v;
	return v < n;
}

/* Finds the endpoint id in s[0..len). */
static long
admin_find(const struct config *cfg, const char *s, size_t len)
{
	for (size_t i = 0; i < cfg->n_apis; i++)
		if (strlen(cfg->apis[i].id) == len && memcmp(cfg->apis[i].id, s, len) == 0)
			return (long)i;
	return -1;
}

/* Parses the decoded path into t. An id may hold '/': ".../keys/N" is a
 * key only when what comes before it is an endpoint's id. */
static enum admin_found
admin_parse(const struct config *cfg, const char *path, struct admin_target *t)
{
	size_t plen = strlen(ADMIN_PREFIX), len = strlen(path), i;
	const char *id = path + plen;

	if (strncmp(path, ADMIN_PREFIX, plen) != 0)
		return ADMIN_NO_ACTION;
	for (i = 0; i < sizeof(admin_actions) / sizeof(admin_actions[0]); i++) {
		size_t sl = strlen(admin_actions[i].suffix);
		if (len > plen + sl && strcmp(path + len - sl, admin_actions[i].suffix) == 0)
			break;
	}
	if (i == sizeof(admin_actions) / sizeof(admin_actions[0]))
		return ADMIN_NO_ACTION;
	t->action = i;
	size_t idlen = len - plen - strlen(admin_actions[i].suffix);
	t->key = SIZE_MAX;
	t->api = admin_find(cfg, id, idlen);
	if (t->api >= 0)
		return ADMIN_FOUND;
	/* ID/keys/N */
	const char *slash = NULL;
	for (size_t j = idlen; j > 0; j--) {
		if (id[j - 1] == '/') {
			slash = id + j - 1;
			break;
		}
	}
	if (slash == NULL || (size_t)(slash - id) < 5 || memcmp(slash - 5, "/keys", 5) != 0)
		return ADMIN_NO_ENDPOINT;
	t->api = admin_find(cfg, id, (size_t)(slash - 5 - id));
	if (t->api < 0)
		return ADMIN_NO_ENDPOINT;
	if (!admin_index(slash + 1, (size_t)(id + idlen - slash - 1), cfg->apis[t->api].n_keys,
			 &t->key))
		return ADMIN_NO_KEY;
	return ADMIN_FOUND;
}

/* Applies t's action to each key it names. Returns 0, or -1 with err. */
static int
admin_apply(struct store *st, const struct config *cfg, const struct admin_target *t, char *err,
	    size_t errlen)
{
	const struct config_api *a = &cfg->apis[t->api];
	int action = t->key == SIZE_MAX ? admin_actions[t->action].endpoint
					: admin_actions[t->action].key;
	int64_t now = clock_now_ms();

	for (size_t k = 0; k < a->n_keys; k++) {
		if (t->key != SIZE_MAX && k != t->key)
			continue;
		const char *slot = a->keys[k].slot;
		int rc =
			action == ADMIN_RESET_TOKENS
				? store_reset_tokens(st, slot, err, errlen)
				: store_admin(st, slot, (enum store_admin)action, now, err, errlen);
		if (rc != 0)
			return -1;
	}
	return 0;
}

int
admin_handle(struct request *r, const struct config *cfg, const char *why, struct worker *w)
{
	struct admin_target t;
	struct store *st;
	char err[300], msg[160];
	json_t *body, *o;
	int status;

	(void)why;
	switch (admin_parse(cfg, r->decoded, &t)) {
	case ADMIN_FOUND:
		break;
	case ADMIN_NO_ACTION:
		return response_error(r->fcgi->out, RESP_NOT_FOUND, NULL, 0, cfg->cors);
	case ADMIN_NO_ENDPOINT:
		return response_error(r->fcgi->out, RESP_API_NOT_FOUND, NULL, 0, cfg->cors);
	case ADMIN_NO_KEY:
		snprintf(msg, sizeof(msg),
			 "The endpoint has no key of this index (its keys are 0 to %zu).",
			 cfg->apis[t.api].n_keys - 1);
		return response_error(r->fcgi->out, RESP_NOT_FOUND, msg, 0, cfg->cors);
	}
	st = worker_store(w, cfg);
	if (st == NULL || admin_apply(st, cfg, &t, err, sizeof(err)) != 0) {
		if (st != NULL)
			log_error("%s cannot be written: %s", store_what(st), err);
		return response_error(r->fcgi->out, RESP_STATE_UNAVAILABLE, NULL, 0, cfg->cors);
	}
	/* The line names the admin as the request's line does: by name, else
	 * by the key's last 4 characters (doc/behaviour.md, Logs). */
	if (t.key == SIZE_MAX)
		log_info("admin action=%s endpoint=%s by=%s", admin_actions[t.action].suffix + 1,
			 cfg->apis[t.api].id, auth_client_label(r->client));
	else
		log_info("admin action=%s endpoint=%s key=%zu by=%s",
			 admin_actions[t.action].suffix + 1, cfg->apis[t.api].id, t.key,
			 auth_client_label(r->client));
	body = api_status_body(r, cfg, w, &status);
	if (body == NULL)
		return status != 0
			       ? status
			       : response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cfg->cors);
	o = json_array_get(json_object_get(body, "apis"), (size_t)t.api);
	if (o != NULL && t.key != SIZE_MAX)
		o = json_array_get(json_object_get(o, "keys"), t.key);
	if (o == NULL) {
		json_decref(body);
		return response_error(r->fcgi->out, RESP_INTERNAL, NULL, 0, cfg->cors);
	}
	status = response_json(r->fcgi->out, 200, o, cfg->cors);
	json_decref(body);
	return status;
}

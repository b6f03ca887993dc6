/* config_parse: apis.json text into a struct config. The schema, every check
 * with the JSON path it names, the defaults, the freeing of what was built
 * and the lookups that read it. No files and no snapshot: see config.c. */
#include "config_parse.h"

#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "dynbuf.h"
#include "redis_addr.h"

/* Room for the longest path built: keys shown in it are cut at CONFIG_PARSE_KEY_SHOWN. */
#define CONFIG_PARSE_PATH_LEN 512
#define CONFIG_PARSE_KEY_SHOWN 64

/* Counts and seconds fit an int, so users of them can multiply into
 * milliseconds or add them up without overflow. */
#define CONFIG_PARSE_LONG_MAX INT_MAX
/* Weights are summed for a random pick: a bound keeps the sum finite. */
#define CONFIG_PARSE_WEIGHT_MAX 1e9

/* The problem list has no cap of its own: it grows with the text it
 * describes (a problem needs a byte or more of it), which the reader of the
 * file already caps. */
#define CONFIG_PARSE_ISSUES_CAP SIZE_MAX

struct config_parse_ctx {
	struct config_issues *issues; /* may be NULL */
	bool failed;                  /* an error was found: the load fails */
	bool nomem;
};

static const char *const config_parse_top_fields[] = {"server", "apis", NULL};
static const char *const config_parse_server_fields[] = {"apiKey",
							 "apiKeys",
							 "adminKeys",
							 "port",
							 "maxRetries",
							 "connectTimeoutSeconds",
							 "timeoutSeconds",
							 "cooldown",
							 "rateLimitCooldownSeconds",
							 "recheckMinutes",
							 "emptyResponseRetry",
							 "maxBodyBytes",
							 "cors",
							 "metricsPublic",
							 "stateFile",
							 "store",
							 "storePrefix",
							 "storeTimeoutMs",
							 "forwardPaths",
							 "fallbacks",
							 NULL};
static const char *const config_parse_client_fields[] = {"key", "name", "models",  "rpm",     "rpd",
							 "tpm", "tpd",  "expires", "enabled", NULL};
static const char *const config_parse_cooldown_fields[] = {"failures", "seconds", NULL};
static const char *const config_parse_api_fields[] = {
	"id",      "name",   "baseUrl",          "apiKey",      "rpm",         "rpd",
	"enabled", "models", "modelMapping",     "weight",      "headers",     "priority",
	"tpm",     "tpd",    "dayResetTimezone", "modelLimits", "streamUsage", NULL};
static const char *const config_parse_model_limit_fields[] = {"rpm", "rpd", "tpm", "tpd", NULL};

/* The gateway sets these itself; a configured copy would clash or smuggle. */
static const char *const config_parse_refused_headers[] = {
	"Authorization", "Host", "Content-Length", "Transfer-Encoding", "Connection", NULL};

/* server.forwardPaths when not set: the inference paths of the OpenAI API
 * (and Anthropic's messages, the rerank of Cohere and Jina). Anything else
 * an upstream may answer 401 or 403 for a valid key (organization, files,
 * fine-tuning...): a client could make the gateway charge every endpoint a
 * failure for it (doc/behaviour.md, Forwarding: which paths). */
static const char *const config_parse_default_forward_paths[] = {
	"chat/completions", "completions", "embeddings",  "responses", "responses/*", "messages",
	"images/*",         "audio/*",     "moderations", "rerank",    NULL};

/* ---- issues ---- */

int
config_issue_add(struct config_issues *issues, bool error, const char *path, const char *message)
{
	struct config_issue is = {.error = error};

	/* A list nothing was ever added to is all zeros ({0}): give it its cap. */
	if (issues->v == NULL && !dynbuf_failed(&issues->buf))
		dynbuf_init(&issues->buf, CONFIG_PARSE_ISSUES_CAP);
	if ((is.path = strdup(path)) == NULL || (is.message = strdup(message)) == NULL ||
	    dynbuf_add(&issues->buf, &is, sizeof(is)) == -1) {
		free(is.path);
		free(is.message);
		return -1;
	}
	issues->v = dynbuf_ptr(&issues->buf);
	issues->n = dynbuf_len(&issues->buf) / sizeof(is);
	return 0;
}

void
config_issues_free(struct config_issues *issues)
{
	if (issues == NULL)
		return;
	for (size_t i = 0; i < issues->n; i++) {
		free(issues->v[i].path);
		free(issues->v[i].message);
	}
	dynbuf_free(&issues->buf);
	issues->v = NULL;
	issues->n = 0;
}

static void
config_parse_report(struct config_parse_ctx *ctx, bool error, const char *path, const char *message)
{
	if (error)
		ctx->failed = true;
	if (ctx->issues != NULL && config_issue_add(ctx->issues, error, path, message) == -1) {
		ctx->nomem = true;
		ctx->failed = true;
	}
}

static char *
config_parse_strdup(struct config_parse_ctx *ctx, const char *s)
{
	char *d = strdup(s);

	if (d == NULL) {
		ctx->nomem = true;
		ctx->failed = true;
	}
	return d;
}

static void *
config_parse_calloc(struct config_parse_ctx *ctx, size_t n, size_t size)
{
	void *p = calloc(n == 0 ? 1 : n, size);

	if (p == NULL) {
		ctx->nomem = true;
		ctx->failed = true;
	}
	return p;
}

/* ---- paths ---- */

/* Appends at most n bytes of s to the string in buf, never past its end. */
static void
config_parse_pcat(char *buf, size_t len, const char *s, size_t n)
{
	size_t used = strnlen(buf, len);

	if (used + 1 >= len)
		return;
	if (n > len - 1 - used)
		n = len - 1 - used;
	memcpy(buf + used, s, n);
	buf[used + n] = '\0';
}

static bool
config_parse_plain_name(const char *key)
{
	size_t n = strlen(key);

	if (n == 0 || n > CONFIG_PARSE_KEY_SHOWN)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)key[i];
		bool alpha =
			(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';

		if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
			return false;
	}
	return true;
}

/* buf = base followed by key as a step of a JSON path: ".name" for a plain
 * name, ["..."] for any other (a model name like "gpt-4.1" would be ambiguous
 * after a dot). Keys are cut short and escaped so a hostile key cannot flood
 * or break a log line. */
static void
config_parse_path_key(char *buf, size_t len, const char *base, const char *key)
{
	char esc[8];
	size_t shown = 0;

	buf[0] = '\0';
	config_parse_pcat(buf, len, base, strlen(base));
	if (config_parse_plain_name(key)) {
		if (base[0] != '\0')
			config_parse_pcat(buf, len, ".", 1);
		config_parse_pcat(buf, len, key, strlen(key));
		return;
	}
	config_parse_pcat(buf, len, "[\"", 2);
	for (const unsigned char *k = (const unsigned char *)key; *k != '\0'; k++) {
		/* Stop at a character boundary, not inside a UTF-8 sequence. */
		if (shown >= CONFIG_PARSE_KEY_SHOWN && (*k & 0xC0) != 0x80) {
			config_parse_pcat(buf, len, "...", 3);
			break;
		}
		if (*k == '"' || *k == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*k;
			config_parse_pcat(buf, len, esc, 2);
		} else if (*k < 0x20 || *k == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)*k);
			config_parse_pcat(buf, len, esc, strlen(esc));
		} else {
			config_parse_pcat(buf, len, (const char *)k, 1);
		}
		shown++;
	}
	config_parse_pcat(buf, len, "\"]", 2);
}

static void
config_parse_path_index(char *buf, size_t len, const char *base, size_t i)
{
	char step[32];
	int n = snprintf(step, sizeof(step), "[%zu]", i);

	buf[0] = '\0';
	config_parse_pcat(buf, len, base, strlen(base));
	if (n > 0)
		config_parse_pcat(buf, len, step, (size_t)n);
}

/* ---- field readers ---- */

/* The value at key, or NULL when it is absent or null: JavaScript code like
 * the seed's treats a null as "not set". */
static json_t *
config_parse_get(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return v == NULL || json_is_null(v) ? NULL : v;
}

static bool
config_parse_has_ctl(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

/* JavaScript, which reads the seed's configs, has a single number type, so
 * 60.0 is the integer 60 there and here too. */
static bool
config_parse_integer(json_t *v, long long *out)
{
	double d;

	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return true;
	}
	if (!json_is_real(v))
		return false;
	d = json_real_value(v);
	if (!(d > -9.2e18 && d < 9.2e18) || (double)(long long)d != d)
		return false;
	*out = (long long)d;
	return true;
}

/* Reads an integer field into *out, which keeps its default when the field
 * is not set. */
static void
config_parse_int(struct config_parse_ctx *ctx, json_t *obj, const char *base, const char *key,
		 long long min, long long max, long long *out)
{
	char path[CONFIG_PARSE_PATH_LEN], msg[96];
	json_t *v = config_parse_get(obj, key);
	long long n;
	bool ok;

	if (v == NULL)
		return;
	ok = config_parse_integer(v, &n) && n >= min && n <= max;
	if (ok) {
		*out = n;
		return;
	}
	if (max <= 65535)
		snprintf(msg, sizeof(msg), "expected an integer from %lld to %lld", min, max);
	else if (config_parse_integer(v, &n) && n > max)
		snprintf(msg, sizeof(msg), "expected an integer <= %lld", max);
	else
		snprintf(msg, sizeof(msg), "expected an integer >= %lld", min);
	config_parse_path_key(path, sizeof(path), base, key);
	config_parse_report(ctx, true, path, msg);
}

static void
config_parse_long(struct config_parse_ctx *ctx, json_t *obj, const char *base, const char *key,
		  long min, long max, long *out)
{
	long long n = *out;

	config_parse_int(ctx, obj, base, key, min, max, &n);
	*out = (long)n;
}

static void
config_parse_bool(struct config_parse_ctx *ctx, json_t *obj, const char *base, const char *key,
		  bool *out)
{
	char path[CONFIG_PARSE_PATH_LEN];
	json_t *v = config_parse_get(obj, key);

	if (v == NULL)
		return;
	if (json_is_boolean(v)) {
		*out = json_is_true(v);
		return;
	}
	config_parse_path_key(path, sizeof(path), base, key);
	config_parse_report(ctx, true, path, "expected a boolean");
}

/* Warns about each field of obj not named in known. */
static void
config_parse_unknown(struct config_parse_ctx *ctx, json_t *obj, const char *base,
		     const char *const *known)
{
	char path[CONFIG_PARSE_PATH_LEN], msg[128];

	for (void *it = json_object_iter(obj); it != NULL; it = json_object_iter_next(obj, it)) {
		const char *key = json_object_iter_key(it);
		const char *hint = NULL;
		bool found = false;

		for (size_t i = 0; known[i] != NULL && !found; i++) {
			if (strcmp(key, known[i]) == 0)
				found = true;
			else if (strcasecmp(key, known[i]) == 0)
				hint = known[i];
		}
		if (found)
			continue;
		if (hint != NULL)
			snprintf(msg, sizeof(msg), "unknown field, ignored (did you mean \"%s\"?)",
				 hint);
		else
			snprintf(msg, sizeof(msg), "unknown field, ignored");
		config_parse_path_key(path, sizeof(path), base, key);
		config_parse_report(ctx, false, path, msg);
	}
}

/* ---- server ---- */

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar (Howard
 * Hinnant's days_from_civil): timegm is not C11. */
static int64_t
config_parse_days(long y, long m, long d)
{
	y -= m <= 2;
	long era = (y >= 0 ? y : y - 399) / 400;
	long yoe = y - era * 400;
	long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return (int64_t)era * 146097 + doe - 719468;
}

/* n digits at s as a number, or -1. */
static long
config_parse_digits(const char *s, int n)
{
	long v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

int
config_parse_expiry(const char *s, int64_t *out_ms)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	long y, mo, d, h = 0, mi = 0, sec = 0, off = 0;
	size_t len = strlen(s);

	if (len < 10 || s[4] != '-' || s[7] != '-')
		return -1;
	y = config_parse_digits(s, 4);
	mo = config_parse_digits(s + 5, 2);
	d = config_parse_digits(s + 8, 2);
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
		return -1;
	if (len == 10) {
		/* A date: the key serves through that whole day. */
		*out_ms = (config_parse_days(y, mo, d) + 1) * 86400000;
		return 0;
	}
	if (len < 19 || (s[10] != 'T' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
		return -1;
	h = config_parse_digits(s + 11, 2);
	mi = config_parse_digits(s + 14, 2);
	sec = config_parse_digits(s + 17, 2);
	if (h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59)
		return -1;
	s += 19;
	if (*s == '.') /* fractions of a second: the second is what counts */
		for (s++; *s >= '0' && *s <= '9'; s++)
			;
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if ((*s == '+' || *s == '-') && strlen(s) == 6 && s[3] == ':') {
		long oh = config_parse_digits(s + 1, 2), om = config_parse_digits(s + 4, 2);
		if (oh < 0 || oh > 23 || om < 0 || om > 59)
			return -1;
		off = (oh * 60 + om) * 60 * (*s == '-' ? -1 : 1);
		s += 6;
	}
	if (*s != '\0')
		return -1;
	*out_ms = ((config_parse_days(y, mo, d) * 86400) + h * 3600 + mi * 60 + sec - off) * 1000;
	return 0;
}

bool
config_client_limited(const struct config_client *client)
{
	return client != NULL &&
	       (client->rpm >= 0 || client->rpd >= 0 || client->tpm >= 0 || client->tpd >= 0);
}

bool
config_client_allows(const struct config_client *client, const char *model)
{
	if (client == NULL || client->models == NULL || model == NULL)
		return true;
	for (size_t i = 0; i < client->n_models; i++) {
		const char *entry = client->models[i];
		size_t n = strlen(entry);

		if (n > 0 && entry[n - 1] == '*' ? strncmp(model, entry, n - 1) == 0
						 : strcmp(model, entry) == 0)
			return true;
	}
	return false;
}

/* Adds key k, seen at path, to the keys the gateway accepts; its client is
 * returned for the caller to fill, NULL when k is refused (reported). */
static struct config_client *
config_parse_add_key(struct config_parse_ctx *ctx, struct config *cfg, const char *k,
		     const char *path)
{
	struct config_client *c;
	size_t len;

	if (k == NULL || *k == '\0') {
		config_parse_report(ctx, true, path, "expected a non-empty string");
		return NULL;
	}
	for (size_t j = 0; j < cfg->n_api_keys; j++) {
		if (strcmp(cfg->api_keys[j], k) == 0) {
			/* Two entries of one key: which limits or models would hold? */
			config_parse_report(ctx, true, path, "the same key as an entry before it");
			return NULL;
		}
	}
	cfg->api_keys[cfg->n_api_keys] = config_parse_strdup(ctx, k);
	if (cfg->api_keys[cfg->n_api_keys] == NULL)
		return NULL;
	c = &cfg->clients[cfg->n_api_keys++];
	c->enabled = true;
	c->rpm = c->rpd = c->tpm = c->tpd = -1;
	snprintf(c->slot, sizeof(c->slot),
		 "\x1e"
		 "client\x1f%016llx",
		 (unsigned long long)config_key_digest(k));
	len = strlen(k);
	if (len >= 8)
		memcpy(c->tail, k + len - 4, 5);
	return c;
}

/* server.apiKeys[i] given as an object. */
static void
config_parse_client(struct config_parse_ctx *ctx, json_t *o, const char *base, struct config *cfg)
{
	char path[CONFIG_PARSE_PATH_LEN], mp[CONFIG_PARSE_PATH_LEN];
	json_t *k = config_parse_get(o, "key");
	json_t *name = config_parse_get(o, "name");
	json_t *models = config_parse_get(o, "models");
	json_t *expires = config_parse_get(o, "expires");
	struct config_client *c;

	config_parse_path_key(path, sizeof(path), base, "key");
	c = config_parse_add_key(ctx, cfg, json_string_value(k), path);
	if (c == NULL)
		return;
	if (name != NULL) {
		const char *v = json_string_value(name);
		config_parse_path_key(path, sizeof(path), base, "name");
		/* It goes into log lines: one line, a bounded one. */
		if (v == NULL || *v == '\0' || strlen(v) > 64 || config_parse_has_ctl(v) ||
		    strchr(v, ' ') != NULL)
			config_parse_report(ctx, true, path,
					    "expected a string of 1 to 64 bytes, no spaces or "
					    "control characters");
		else
			c->name = config_parse_strdup(ctx, v);
	}
	if (models != NULL) {
		size_t n = json_is_array(models) ? json_array_size(models) : 0;
		config_parse_path_key(path, sizeof(path), base, "models");
		if (!json_is_array(models) || n == 0) {
			config_parse_report(ctx, true, path,
					    "expected a non-empty array of strings");
		} else if ((c->models = config_parse_calloc(ctx, n, sizeof(*c->models))) != NULL) {
			for (size_t i = 0; i < n; i++) {
				const char *m = json_string_value(json_array_get(models, i));
				config_parse_path_index(mp, sizeof(mp), path, i);
				if (m == NULL || *m == '\0' || config_parse_has_ctl(m))
					config_parse_report(ctx, true, mp,
							    "expected a non-empty string");
				else if ((c->models[c->n_models] = config_parse_strdup(ctx, m)) !=
					 NULL)
					c->n_models++;
			}
		}
	}
	if (expires != NULL) {
		const char *v = json_string_value(expires);
		config_parse_path_key(path, sizeof(path), base, "expires");
		if (v == NULL || config_parse_expiry(v, &c->expires_ms) != 0)
			config_parse_report(ctx, true, path,
					    "expected an ISO date (2026-12-31) or date-time "
					    "(2026-12-31T18:00:00Z)");
	}
	config_parse_bool(ctx, o, base, "enabled", &c->enabled);
	/* As an endpoint's, but 0 is no request at all rather than out of
	 * service (doc/behaviour.md, Limits and state: client limits). */
	config_parse_long(ctx, o, base, "rpm", -1, CONFIG_PARSE_LONG_MAX, &c->rpm);
	config_parse_long(ctx, o, base, "rpd", -1, CONFIG_PARSE_LONG_MAX, &c->rpd);
	config_parse_long(ctx, o, base, "tpm", -1, CONFIG_PARSE_LONG_MAX, &c->tpm);
	config_parse_long(ctx, o, base, "tpd", -1, CONFIG_PARSE_LONG_MAX, &c->tpd);
	config_parse_unknown(ctx, o, base, config_parse_client_fields);
}

static void
config_parse_keys(struct config_parse_ctx *ctx, json_t *server, struct config *cfg)
{
	char path[CONFIG_PARSE_PATH_LEN];
	json_t *key = config_parse_get(server, "apiKey");
	json_t *keys = config_parse_get(server, "apiKeys");
	json_t *admins = config_parse_get(server, "adminKeys");
	size_t n = keys != NULL && json_is_array(keys) ? json_array_size(keys) : 0;
	size_t na = admins != NULL && json_is_array(admins) ? json_array_size(admins) : 0;
	size_t n_clients;
	bool keys_bad = false;

	cfg->api_keys = config_parse_calloc(ctx, n + na + 1, sizeof(*cfg->api_keys));
	cfg->clients = config_parse_calloc(ctx, n + na + 1, sizeof(*cfg->clients));
	if (cfg->api_keys == NULL || cfg->clients == NULL)
		return;
	if (key != NULL) {
		if (!json_is_string(key) || json_string_length(key) == 0)
			config_parse_report(ctx, true, "server.apiKey",
					    "expected a non-empty string");
		else
			config_parse_add_key(ctx, cfg, json_string_value(key), "server.apiKey");
	}
	if (keys != NULL && !json_is_array(keys)) {
		config_parse_report(ctx, true, "server.apiKeys",
				    "expected an array of strings or objects");
		keys_bad = true;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *k = json_array_get(keys, i);

		config_parse_path_index(path, sizeof(path), "server.apiKeys", i);
		if (json_is_object(k)) {
			config_parse_client(ctx, k, path, cfg);
		} else if (!json_is_string(k) || json_string_length(k) == 0) {
			config_parse_report(ctx, true, path,
					    json_is_string(k)
						    ? "expected a non-empty string"
						    : "expected a non-empty string or an object");
			keys_bad = true;
		} else {
			config_parse_add_key(ctx, cfg, json_string_value(k), path);
		}
	}
	n_clients = cfg->n_api_keys;
	if (admins != NULL && (!json_is_array(admins) || na == 0)) {
		config_parse_report(ctx, true, "server.adminKeys",
				    "expected a non-empty array of strings or objects");
	} else if (admins != NULL) {
		cfg->admin_keys = true;
		for (size_t i = 0; i < na; i++) {
			json_t *k = json_array_get(admins, i);
			size_t before = cfg->n_api_keys;
			config_parse_path_index(path, sizeof(path), "server.adminKeys", i);
			/* An object as server.apiKeys': a name for the logs (of
			 * admin actions too), and limits of its own if wanted. */
			if (json_is_object(k))
				config_parse_client(ctx, k, path, cfg);
			else
				(void)config_parse_add_key(ctx, cfg, json_string_value(k), path);
			if (cfg->n_api_keys > before)
				cfg->clients[before].admin = true;
		}
	}
	/* Without a key every client would be let in (or none): refuse. One
	 * message is enough when a key was given but is wrong. */
	if (key == NULL && !keys_bad && n_clients == 0)
		config_parse_report(ctx, true, "server.apiKey",
				    "required (or a non-empty server.apiKeys)");
	/* Without adminKeys every client key is an admin, as before them. */
	for (size_t i = 0; i < n_clients && !cfg->admin_keys; i++)
		cfg->clients[i].admin = true;
}

/* server.store ("gdbm" or a Redis address), storePrefix, storeTimeoutMs. A
 * Redis address is checked here, also against a build without Redis
 * support, so that it fails the load with its place rather than each
 * request with a 503. */
static void
config_parse_store(struct config_parse_ctx *ctx, json_t *server, struct config *cfg)
{
	json_t *store = config_parse_get(server, "store");
	json_t *prefix = config_parse_get(server, "storePrefix");
	char why[200];

	if (store != NULL) {
		const char *v = json_string_value(store);
		if (v == NULL || *v == '\0') {
			config_parse_report(
				ctx, true, "server.store",
				"expected \"gdbm\" or a Redis address (redis://HOST:PORT, "
				"unix:///PATH)");
		} else if (strcmp(v, "gdbm") == 0) {
			/* the default */
		} else if (!redis_addr_is_redis(v)) {
			config_parse_report(
				ctx, true, "server.store",
				"expected \"gdbm\" or a Redis address (redis://HOST:PORT, "
				"unix:///PATH)");
		} else if (redis_addr_check(v, why, sizeof(why)) != 0) {
			config_parse_report(ctx, true, "server.store", why);
		} else {
			cfg->store = config_parse_strdup(ctx, v);
		}
	}
	if (prefix != NULL) {
		const char *v = json_string_value(prefix);
		if (v == NULL || *v == '\0' || strlen(v) > 200 || config_parse_has_ctl(v))
			config_parse_report(
				ctx, true, "server.storePrefix",
				"expected a non-empty string of up to 200 bytes, no control "
				"characters");
		else
			cfg->store_prefix = config_parse_strdup(ctx, v);
	}
	config_parse_long(ctx, server, "server", "storeTimeoutMs", 1, 60000,
			  &cfg->store_timeout_ms);
}

uint64_t
config_key_digest(const char *key)
{
	/* FNV-1a: the state needs a name per key, not a secret hash; the key
	 * itself must never reach the store. */
	uint64_t h = UINT64_C(14695981039346656037);

	for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
		h ^= *p;
		h *= UINT64_C(1099511628211);
	}
	return h;
}

/* One key of apis[i].apiKey; "" only as the lone string (no Authorization). */
static bool
config_parse_one_key(struct config_parse_ctx *ctx, json_t *v, const char *path, bool lone,
		     struct config_api *api)
{
	const char *k = json_string_value(v);

	if (k == NULL || (!lone && *k == '\0')) {
		config_parse_report(ctx, true, path,
				    lone ? "expected a string or an array of strings"
					 : "expected a non-empty string");
		return false;
	}
	if (config_parse_has_ctl(k)) {
		/* It goes into a header line: a CR or LF would split it. */
		config_parse_report(ctx, true, path, "must not contain control characters");
		return false;
	}
	for (size_t j = 0; j < api->n_keys; j++) {
		if (strcmp(api->keys[j].key, k) == 0) {
			char msg[64];
			snprintf(msg, sizeof(msg), "the same key as apiKey[%zu]", j);
			config_parse_report(ctx, true, path, msg);
			return false;
		}
	}
	struct config_key *ck = &api->keys[api->n_keys];
	ck->key = config_parse_strdup(ctx, k);
	if (ck->key == NULL)
		return false;
	size_t len = strlen(k);
	if (len >= 8)
		memcpy(ck->tail, k + len - 4, 5);
	api->n_keys++;
	return true;
}

/* apis[i].apiKey: a string (as before pools) or an array of them. */
static void
config_parse_api_keys(struct config_parse_ctx *ctx, json_t *o, const char *base,
		      struct config_api *api)
{
	char path[CONFIG_PARSE_PATH_LEN], kp[CONFIG_PARSE_PATH_LEN];
	json_t *v = config_parse_get(o, "apiKey");
	size_t n = v != NULL && json_is_array(v) ? json_array_size(v) : 1;

	config_parse_path_key(path, sizeof(path), base, "apiKey");
	api->keys = config_parse_calloc(ctx, n, sizeof(*api->keys));
	if (api->keys == NULL)
		return;
	if (v == NULL) {
		api->keys[0].key = config_parse_strdup(ctx, "");
		api->n_keys = api->keys[0].key != NULL;
	} else if (!json_is_array(v)) {
		config_parse_one_key(ctx, v, path, true, api);
	} else if (n == 0) {
		config_parse_report(ctx, true, path, "expected at least one key");
	} else {
		for (size_t i = 0; i < n; i++) {
			config_parse_path_index(kp, sizeof(kp), path, i);
			config_parse_one_key(ctx, json_array_get(v, i), kp, false, api);
		}
	}
	if (api->n_keys > 0)
		api->api_key = api->keys[0].key;
	for (size_t i = 0; i < api->n_keys && api->id != NULL; i++) {
		size_t cap = strlen(api->id) + 18;
		char *slot = config_parse_calloc(ctx, cap, 1);
		if (slot == NULL)
			return;
		if (api->n_keys == 1)
			memcpy(slot, api->id, cap - 18 + 1);
		else
			snprintf(slot, cap, "%s\x1f%016llx", api->id,
				 (unsigned long long)config_key_digest(api->keys[i].key));
		api->keys[i].slot = slot;
	}
}

/* What is wrong with an entry of server.forwardPaths, or NULL. An entry is
 * compared with the path as sent and with it decoded (routes.c), so one
 * that holds an escape, a query or a fragment could never match both. */
static const char *
config_parse_forward_path_bad(const char *p)
{
	const char *star = strchr(p, '*');

	if (*p == '\0')
		return "expected a non-empty string";
	if (config_parse_has_ctl(p))
		return "must not contain control characters";
	if (strpbrk(p, " %?#") != NULL)
		return "must not contain spaces, '%', '?' or '#': a path as it is, without "
		       "escapes or query";
	if (*p == '/')
		return "must not start with '/': a path below /v1/, e.g. \"chat/completions\"";
	if (star != NULL && star[1] != '\0')
		return "'*' is allowed only as the last character";
	return NULL;
}

/* server.forwardPaths, or the default list when it is not set. */
static void
config_parse_forward_paths(struct config_parse_ctx *ctx, json_t *server, struct config *cfg)
{
	char path[CONFIG_PARSE_PATH_LEN];
	json_t *v = config_parse_get(server, "forwardPaths");
	size_t n = 0;

	if (v == NULL) {
		while (config_parse_default_forward_paths[n] != NULL)
			n++;
	} else if (json_is_array(v)) {
		n = json_array_size(v);
	} else {
		config_parse_report(ctx, true, "server.forwardPaths",
				    "expected an array of strings");
		return;
	}
	cfg->forward_paths = config_parse_calloc(ctx, n, sizeof(*cfg->forward_paths));
	if (cfg->forward_paths == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		const char *p = v == NULL ? config_parse_default_forward_paths[i]
					  : json_string_value(json_array_get(v, i));
		const char *bad = p == NULL ? "expected a non-empty string"
					    : config_parse_forward_path_bad(p);

		if (bad != NULL) {
			config_parse_path_index(path, sizeof(path), "server.forwardPaths", i);
			config_parse_report(ctx, true, path, bad);
			continue;
		}
		if ((cfg->forward_paths[cfg->n_forward_paths] = config_parse_strdup(ctx, p)) ==
		    NULL)
			return;
		cfg->n_forward_paths++;
	}
}

static void
config_parse_server(struct config_parse_ctx *ctx, json_t *server, struct config *cfg)
{
	json_t *cooldown, *state;

	config_parse_keys(ctx, server, cfg);
	config_parse_long(ctx, server, "server", "port", 1, 65535, &cfg->port);
	config_parse_long(ctx, server, "server", "maxRetries", 1, CONFIG_PARSE_LONG_MAX,
			  &cfg->max_retries);
	config_parse_long(ctx, server, "server", "connectTimeoutSeconds", 1, CONFIG_PARSE_LONG_MAX,
			  &cfg->connect_timeout_s);
	config_parse_long(ctx, server, "server", "timeoutSeconds", 1, CONFIG_PARSE_LONG_MAX,
			  &cfg->timeout_s);
	cooldown = config_parse_get(server, "cooldown");
	if (cooldown != NULL && !json_is_object(cooldown)) {
		config_parse_report(ctx, true, "server.cooldown", "expected an object");
	} else if (cooldown != NULL) {
		config_parse_long(ctx, cooldown, "server.cooldown", "failures", 1,
				  CONFIG_PARSE_LONG_MAX, &cfg->cooldown_failures);
		config_parse_long(ctx, cooldown, "server.cooldown", "seconds", 0,
				  CONFIG_PARSE_LONG_MAX, &cfg->cooldown_seconds);
		config_parse_unknown(ctx, cooldown, "server.cooldown",
				     config_parse_cooldown_fields);
	}
	config_parse_long(ctx, server, "server", "rateLimitCooldownSeconds", 1, 86400,
			  &cfg->rate_limit_cooldown_s);
	config_parse_long(ctx, server, "server", "recheckMinutes", 1, 10080, &cfg->recheck_minutes);
	config_parse_bool(ctx, server, "server", "emptyResponseRetry", &cfg->empty_response_retry);
	/* 1 GiB: a body is held in memory whole, and sizes stay far from overflow. */
	config_parse_int(ctx, server, "server", "maxBodyBytes", 1, 1073741824LL,
			 &cfg->max_body_bytes);
	config_parse_bool(ctx, server, "server", "cors", &cfg->cors);
	config_parse_bool(ctx, server, "server", "metricsPublic", &cfg->metrics_public);
	state = config_parse_get(server, "stateFile");
	if (state != NULL) {
		if (!json_is_string(state) || json_string_length(state) == 0)
			config_parse_report(ctx, true, "server.stateFile",
					    "expected a non-empty string");
		else
			cfg->state_file = config_parse_strdup(ctx, json_string_value(state));
	}
	config_parse_store(ctx, server, cfg);
	config_parse_forward_paths(ctx, server, cfg);
	config_parse_unknown(ctx, server, "server", config_parse_server_fields);
}

/* ---- one endpoint ---- */

static void
config_parse_id(struct config_parse_ctx *ctx, json_t *o, const char *base, const struct config *cfg,
		size_t i)
{
	char path[CONFIG_PARSE_PATH_LEN], msg[96];
	json_t *v = config_parse_get(o, "id");
	const char *id;

	config_parse_path_key(path, sizeof(path), base, "id");
	if (v == NULL) {
		config_parse_report(ctx, true, path, "required");
		return;
	}
	if (!json_is_string(v) || json_string_length(v) == 0) {
		config_parse_report(ctx, true, path, "expected a non-empty string");
		return;
	}
	id = json_string_value(v);
	if (config_parse_has_ctl(id)) {
		config_parse_report(ctx, true, path, "must not contain control characters");
		return;
	}
	for (size_t j = 0; j < i; j++) {
		if (cfg->apis[j].id != NULL && strcmp(cfg->apis[j].id, id) == 0) {
			snprintf(msg, sizeof(msg), "duplicate id, already used by apis[%zu]", j);
			config_parse_report(ctx, true, path, msg);
			return;
		}
	}
	cfg->apis[i].id = config_parse_strdup(ctx, id);
}

static bool
config_parse_port_ok(const char *p, size_t n)
{
	long port = 0;

	if (n == 0 || n > 5)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		port = port * 10 + (p[i] - '0');
	}
	return port >= 1 && port <= 65535;
}

/* Why url (scheme already checked, trailing '/' removed) has no usable
 * authority, or NULL when it has one. */
static const char *
config_parse_authority(const char *url)
{
	const char *auth = strstr(url, "://") + 3;
	size_t n = strcspn(auth, "/");
	const char *end = auth + n, *colon;

	if (memchr(auth, '@', n) != NULL)
		return "must not hold credentials (use apiKey or headers)";
	if (n == 0)
		return "has no host";
	if (auth[0] == '[') {
		const char *close = memchr(auth, ']', n);

		if (close == NULL || close == auth + 1)
			return "has no host";
		if (close + 1 == end)
			return NULL;
		if (close[1] != ':')
			return "has an invalid host";
		colon = close + 1;
	} else {
		colon = memchr(auth, ':', n);
		if (colon == auth)
			return "has no host";
		if (colon == NULL)
			return NULL;
	}
	if (!config_parse_port_ok(colon + 1, (size_t)(end - colon - 1)))
		return "has an invalid port";
	return NULL;
}

static void
config_parse_url(struct config_parse_ctx *ctx, json_t *o, const char *base, struct config_api *api)
{
	char path[CONFIG_PARSE_PATH_LEN];
	json_t *v = config_parse_get(o, "baseUrl");
	const char *s, *why = NULL;
	size_t n, scheme;
	char *url;

	config_parse_path_key(path, sizeof(path), base, "baseUrl");
	if (v == NULL) {
		config_parse_report(ctx, true, path, "required");
		return;
	}
	if (!json_is_string(v)) {
		config_parse_report(ctx, true, path, "expected a string");
		return;
	}
	s = json_string_value(v);
	n = json_string_length(v);
	if (strncasecmp(s, "http://", 7) == 0)
		scheme = 4;
	else if (strncasecmp(s, "https://", 8) == 0)
		scheme = 5;
	else
		scheme = 0;
	for (size_t i = 0; i < n && why == NULL; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			why = "must not contain spaces or control characters";
	if (why == NULL && scheme == 0)
		why = "expected an http:// or https:// URL";
	if (why == NULL && strpbrk(s, "?#") != NULL)
		why = "must not have a query or fragment";
	if (why != NULL) {
		config_parse_report(ctx, true, path, why);
		return;
	}
	/* Only the path's slashes go: "http://" must keep its own. */
	while (n > scheme + 3 && s[n - 1] == '/')
		n--;
	if ((url = strndup(s, n)) == NULL) {
		ctx->nomem = true;
		ctx->failed = true;
		return;
	}
	/* One spelling of the scheme, so whoever builds URLs can compare it. */
	for (size_t i = 0; i < scheme; i++)
		url[i] = (char)(url[i] | 0x20);
	if ((why = config_parse_authority(url)) != NULL) {
		config_parse_report(ctx, true, path, why);
		free(url);
		return;
	}
	api->base_url = url;
}

/* apis[].dayResetTimezone: loaded here, so a request never reads a zone
 * file (doc/behaviour.md, Limits and state, rule 26). */
static void
config_parse_zone(struct config_parse_ctx *ctx, json_t *o, const char *base, struct config_api *api)
{
	json_t *v = config_parse_get(o, "dayResetTimezone");
	char path[CONFIG_PARSE_PATH_LEN], err[512];

	if (v == NULL)
		return;
	config_parse_path_key(path, sizeof(path), base, "dayResetTimezone");
	if (!json_is_string(v) || json_string_length(v) == 0) {
		config_parse_report(ctx, true, path, "expected an IANA time zone name");
		return;
	}
	api->day_zone = tz_load(json_string_value(v), err, sizeof(err));
	if (api->day_zone == NULL) {
		config_parse_report(ctx, true, path, err);
		return;
	}
	api->day_zone_name = config_parse_strdup(ctx, json_string_value(v));
}

/* apis[].modelLimits (rule 27), after the keys: each model's state is
 * named per key. */
static void
config_parse_model_limits(struct config_parse_ctx *ctx, json_t *o, const char *base,
			  struct config_api *api)
{
	json_t *v = config_parse_get(o, "modelLimits");
	char path[CONFIG_PARSE_PATH_LEN], sub[CONFIG_PARSE_PATH_LEN];
	size_t nk = api->n_keys > 0 ? api->n_keys : 1;

	if (v == NULL)
		return;
	config_parse_path_key(path, sizeof(path), base, "modelLimits");
	if (!json_is_object(v)) {
		config_parse_report(ctx, true, path, "expected an object of model names to limits");
		return;
	}
	api->model_limits =
		config_parse_calloc(ctx, json_object_size(v), sizeof(*api->model_limits));
	if (api->model_limits == NULL)
		return;
	for (void *it = json_object_iter(v); it != NULL; it = json_object_iter_next(v, it)) {
		const char *model = json_object_iter_key(it);
		json_t *lim = json_object_iter_value(it);
		struct config_model_limit *ml = &api->model_limits[api->n_model_limits];

		config_parse_path_key(sub, sizeof(sub), path, model);
		if (model[0] == '\0' || !json_is_object(lim)) {
			config_parse_report(ctx, true, sub,
					    model[0] == '\0' ? "expected a non-empty model name"
							     : "expected an object");
			continue;
		}
		ml->rpm = ml->rpd = ml->tpm = ml->tpd = -1;
		config_parse_long(ctx, lim, sub, "rpm", -1, CONFIG_PARSE_LONG_MAX, &ml->rpm);
		config_parse_long(ctx, lim, sub, "rpd", -1, CONFIG_PARSE_LONG_MAX, &ml->rpd);
		config_parse_long(ctx, lim, sub, "tpm", -1, CONFIG_PARSE_LONG_MAX, &ml->tpm);
		config_parse_long(ctx, lim, sub, "tpd", -1, CONFIG_PARSE_LONG_MAX, &ml->tpd);
		config_parse_unknown(ctx, lim, sub, config_parse_model_limit_fields);
		api->n_model_limits++;
		if ((ml->model = config_parse_strdup(ctx, model)) == NULL ||
		    (ml->slots = config_parse_calloc(ctx, nk, sizeof(*ml->slots))) == NULL)
			return;
		for (size_t k = 0; k < nk; k++) {
			const char *slot = api->n_keys > 0 ? api->keys[k].slot : api->id;
			size_t len = (slot != NULL ? strlen(slot) : 0) + strlen(model) + 2;

			if (slot == NULL ||
			    (ml->slots[k] = config_parse_calloc(ctx, len, 1)) == NULL)
				return;
			snprintf(ml->slots[k], len, "%s\x1f%s", slot, model);
		}
	}
}

static void
config_parse_models(struct config_parse_ctx *ctx, json_t *o, const char *base,
		    struct config_api *api)
{
	char path[CONFIG_PARSE_PATH_LEN], epath[CONFIG_PARSE_PATH_LEN];
	json_t *v = config_parse_get(o, "models");
	size_t n;

	config_parse_path_key(path, sizeof(path), base, "models");
	if (v == NULL) {
		config_parse_report(ctx, true, path, "required");
		return;
	}
	if (!json_is_array(v)) {
		config_parse_report(ctx, true, path, "expected an array of strings");
		return;
	}
	n = json_array_size(v);
	if (n == 0) {
		config_parse_report(ctx, true, path, "expected a non-empty array of strings");
		return;
	}
	if ((api->models = config_parse_calloc(ctx, n, sizeof(*api->models))) == NULL)
		return;
	api->n_models = n;
	for (size_t i = 0; i < n; i++) {
		json_t *m = json_array_get(v, i);

		if (!json_is_string(m) || json_string_length(m) == 0) {
			config_parse_path_index(epath, sizeof(epath), path, i);
			config_parse_report(ctx, true, epath, "expected a non-empty string");
			continue;
		}
		api->models[i] = config_parse_strdup(ctx, json_string_value(m));
	}
}

static bool
config_parse_header_name_ok(const char *name)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";

	if (*name == '\0')
		return false;
	for (const char *p = name; *p != '\0'; p++) {
		bool alnum = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9');

		if (!alnum && strchr(tchar, *p) == NULL)
			return false;
	}
	return true;
}

static bool
config_parse_header_value_ok(const char *value)
{
	/* A CR or LF would start a header of its own; a tab is allowed. */
	for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++)
		if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
			return false;
	return true;
}

/* Reads the string -> string object at key into pairs. Headers are checked as
 * headers; a mapping needs non-empty targets. */
static void
config_parse_pairs(struct config_parse_ctx *ctx, json_t *o, const char *base, const char *key,
		   bool headers, struct config_pair **out, size_t *n_out)
{
	char path[CONFIG_PARSE_PATH_LEN], epath[CONFIG_PARSE_PATH_LEN];
	json_t *v = config_parse_get(o, key);
	struct config_pair *pairs;

	if (v == NULL)
		return;
	config_parse_path_key(path, sizeof(path), base, key);
	if (!json_is_object(v)) {
		config_parse_report(ctx, true, path, "expected an object");
		return;
	}
	if (json_object_size(v) == 0)
		return;
	pairs = config_parse_calloc(ctx, json_object_size(v), sizeof(*pairs));
	if (pairs == NULL)
		return;
	*out = pairs;
	for (void *it = json_object_iter(v); it != NULL; it = json_object_iter_next(v, it)) {
		const char *name = json_object_iter_key(it);
		json_t *val = json_object_iter_value(it);
		const char *why = NULL;

		if (headers) {
			if (!config_parse_header_name_ok(name))
				why = "not a valid header name";
			for (size_t i = 0; why == NULL && config_parse_refused_headers[i] != NULL;
			     i++)
				if (strcasecmp(name, config_parse_refused_headers[i]) == 0)
					why = "set by the gateway, cannot be configured";
			if (why == NULL && !json_is_string(val))
				why = "expected a string";
			if (why == NULL && !config_parse_header_value_ok(json_string_value(val)))
				why = "must not contain control characters";
		} else if (!json_is_string(val) || json_string_length(val) == 0) {
			why = "expected a non-empty string";
		}
		if (why != NULL) {
			config_parse_path_key(epath, sizeof(epath), path, name);
			config_parse_report(ctx, true, epath, why);
			continue;
		}
		pairs[*n_out].key = config_parse_strdup(ctx, name);
		pairs[*n_out].value = config_parse_strdup(ctx, json_string_value(val));
		(*n_out)++;
	}
}

static void
config_parse_api(struct config_parse_ctx *ctx, json_t *o, struct config *cfg, size_t i)
{
	char base[CONFIG_PARSE_PATH_LEN], path[CONFIG_PARSE_PATH_LEN];
	struct config_api *api = &cfg->apis[i];
	json_t *v;
	double w;

	config_parse_path_index(base, sizeof(base), "apis", i);
	api->rpm = -1;
	api->rpd = -1;
	api->tpm = -1;
	api->tpd = -1;
	api->enabled = true;
	api->stream_usage = true;
	api->weight = 1;
	if (!json_is_object(o)) {
		config_parse_report(ctx, true, base, "expected an object");
		return;
	}
	config_parse_id(ctx, o, base, cfg, i);
	v = config_parse_get(o, "name");
	if (v != NULL && !json_is_string(v)) {
		config_parse_path_key(path, sizeof(path), base, "name");
		config_parse_report(ctx, true, path, "expected a string");
	} else if (v != NULL && json_string_length(v) > 0) {
		api->name = config_parse_strdup(ctx, json_string_value(v));
	} else if (api->id != NULL) {
		api->name = config_parse_strdup(ctx, api->id);
	}
	config_parse_url(ctx, o, base, api);
	config_parse_api_keys(ctx, o, base, api);
	config_parse_long(ctx, o, base, "rpm", -1, CONFIG_PARSE_LONG_MAX, &api->rpm);
	config_parse_long(ctx, o, base, "rpd", -1, CONFIG_PARSE_LONG_MAX, &api->rpd);
	config_parse_long(ctx, o, base, "tpm", -1, CONFIG_PARSE_LONG_MAX, &api->tpm);
	config_parse_long(ctx, o, base, "tpd", -1, CONFIG_PARSE_LONG_MAX, &api->tpd);
	config_parse_bool(ctx, o, base, "enabled", &api->enabled);
	config_parse_bool(ctx, o, base, "streamUsage", &api->stream_usage);
	config_parse_zone(ctx, o, base, api);
	config_parse_model_limits(ctx, o, base, api);
	config_parse_models(ctx, o, base, api);
	config_parse_pairs(ctx, o, base, "modelMapping", false, &api->mapping, &api->n_mapping);
	v = config_parse_get(o, "weight");
	if (v != NULL) {
		w = json_is_number(v) ? json_number_value(v) : 0;
		config_parse_path_key(path, sizeof(path), base, "weight");
		if (!(w > 0))
			config_parse_report(ctx, true, path, "expected a number > 0");
		else if (w > CONFIG_PARSE_WEIGHT_MAX)
			config_parse_report(ctx, true, path, "expected a number <= 1000000000");
		else
			api->weight = w;
	}
	config_parse_pairs(ctx, o, base, "headers", true, &api->headers, &api->n_headers);
	config_parse_long(ctx, o, base, "priority", -CONFIG_PARSE_LONG_MAX, CONFIG_PARSE_LONG_MAX,
			  &api->priority);
	config_parse_unknown(ctx, o, base, config_parse_api_fields);
}

static void
config_parse_apis(struct config_parse_ctx *ctx, json_t *apis, struct config *cfg)
{
	size_t n = json_array_size(apis);

	if (n == 0) {
		/* Loads, so a config can be staged before its endpoints exist. */
		config_parse_report(ctx, false, "apis", "no endpoints configured");
		return;
	}
	if ((cfg->apis = config_parse_calloc(ctx, n, sizeof(*cfg->apis))) == NULL)
		return;
	cfg->n_apis = n;
	for (size_t i = 0; i < n; i++)
		config_parse_api(ctx, json_array_get(apis, i), cfg, i);
}

/* ---- server.fallbacks ---- */

/* Whether an endpoint of cfg, in service or not, serves model. */
static bool
config_parse_served(const struct config *cfg, const char *model)
{
	for (size_t i = 0; i < cfg->n_apis; i++)
		if (config_api_model(&cfg->apis[i], model) != NULL)
			return true;
	return false;
}

/* What is wrong with entry i of the fallbacks of model, or NULL. Its name
 * goes into an answer's X-Api-Together-Model header. */
static const char *
config_parse_fallback_bad(json_t *list, size_t i, const char *model)
{
	const char *m = json_string_value(json_array_get(list, i));

	if (m == NULL || *m == '\0')
		return "expected a non-empty string";
	if (config_parse_has_ctl(m))
		return "must not contain control characters";
	if (strcmp(m, model) == 0)
		return "the requested model itself";
	for (size_t j = 0; j < i; j++)
		if (strcmp(m, json_string_value(json_array_get(list, j))) == 0)
			return "listed twice";
	return NULL;
}

/* One requested model's fallbacks into f: every entry must be good; one
 * that no endpoint serves is a warning (it may be staged). */
static void
config_parse_fallback(struct config_parse_ctx *ctx, const struct config *cfg, const char *model,
		      json_t *list, struct config_fallback *f)
{
	char path[CONFIG_PARSE_PATH_LEN], epath[CONFIG_PARSE_PATH_LEN];
	size_t n = json_is_array(list) ? json_array_size(list) : 0;

	config_parse_path_key(path, sizeof(path), "server.fallbacks", model);
	if (*model == '\0' || config_parse_has_ctl(model)) {
		config_parse_report(ctx, true, path,
				    "expected a model name: non-empty, no control characters");
		return;
	}
	if (n == 0) {
		config_parse_report(ctx, true, path, "expected a non-empty array of strings");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const char *bad = config_parse_fallback_bad(list, i, model);

		config_parse_path_index(epath, sizeof(epath), path, i);
		/* After an error elsewhere an endpoint may be half read. */
		if (bad != NULL)
			config_parse_report(ctx, true, epath, bad);
		else if (!ctx->failed &&
			 !config_parse_served(cfg, json_string_value(json_array_get(list, i))))
			config_parse_report(ctx, false, epath, "no endpoint serves this model");
	}
	/* The caller keeps f once f->model is set, and then frees what it holds. */
	if (ctx->failed || (f->model = config_parse_strdup(ctx, model)) == NULL ||
	    (f->to = config_parse_calloc(ctx, n, sizeof(*f->to))) == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		if ((f->to[f->n_to++] = config_parse_strdup(
			     ctx, json_string_value(json_array_get(list, i)))) == NULL)
			return;
}

/* server.fallbacks, read after the endpoints: an entry no endpoint serves
 * is named. */
static void
config_parse_fallbacks(struct config_parse_ctx *ctx, json_t *server, struct config *cfg)
{
	json_t *v = config_parse_get(server, "fallbacks");

	if (v == NULL)
		return;
	if (!json_is_object(v)) {
		config_parse_report(ctx, true, "server.fallbacks",
				    "expected an object: a model to an array of models");
		return;
	}
	if (json_object_size(v) == 0)
		return;
	cfg->fallbacks = config_parse_calloc(ctx, json_object_size(v), sizeof(*cfg->fallbacks));
	if (cfg->fallbacks == NULL)
		return;
	for (void *it = json_object_iter(v); it != NULL; it = json_object_iter_next(v, it)) {
		struct config_fallback *f = &cfg->fallbacks[cfg->n_fallbacks];

		config_parse_fallback(ctx, cfg, json_object_iter_key(it),
				      json_object_iter_value(it), f);
		if (f->model != NULL)
			cfg->n_fallbacks++;
	}
}

/* ---- parse ---- */

/* jansson quotes the text near a syntax error, which can be part of a key:
 * keep only its description. */
static void
config_parse_syntax_error(struct config_parse_ctx *ctx, const json_error_t *jerr, const char *what)
{
	char path[64], msg[JSON_ERROR_TEXT_LENGTH + 64];
	char *near;

	snprintf(path, sizeof(path), "line %d, column %d", jerr->line, jerr->column);
	snprintf(msg, sizeof(msg), "%s", jerr->text);
	if ((near = strstr(msg, " near '")) != NULL)
		*near = '\0';
	if (what != NULL) {
		size_t used = strlen(msg);

		snprintf(msg + used, sizeof(msg) - used, "%s", what);
	}
	config_parse_report(ctx, what == NULL, path, msg);
}

int
config_parse_into(struct config *cfg, const char *text, size_t len, struct config_issues *issues)
{
	struct config_parse_ctx ctx = {.issues = issues};
	json_error_t jerr;
	json_t *root = NULL, *dup, *server, *apis;

	/* Windows editors (the seed's README suggests Notepad) may start the
	 * file with a byte order mark. */
	if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
		text += 3;
		len -= 3;
	}
	root = json_loadb(text, len, 0, &jerr);
	if (root == NULL) {
		config_parse_syntax_error(&ctx, &jerr, NULL);
		goto fail;
	}
	/* Like JavaScript, the last of two equal keys wins, but say so. */
	dup = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (dup == NULL)
		config_parse_syntax_error(&ctx, &jerr, ", the last value is used");
	json_decref(dup);
	cfg->port = 3001;
	cfg->max_retries = 10;
	cfg->connect_timeout_s = 10;
	cfg->timeout_s = 300;
	cfg->cooldown_failures = 3;
	cfg->cooldown_seconds = 600;
	cfg->rate_limit_cooldown_s = 60;
	cfg->recheck_minutes = 30;
	cfg->empty_response_retry = true;
	cfg->max_body_bytes = 10485760;
	cfg->cors = true;
	cfg->store_timeout_ms = REDIS_DEFAULT_TIMEOUT_MS;
	if (!json_is_object(root)) {
		config_parse_report(&ctx, true, "top level", "expected an object");
		goto fail;
	}
	server = config_parse_get(root, "server");
	if (server == NULL)
		config_parse_report(&ctx, true, "server", "required");
	else if (!json_is_object(server))
		config_parse_report(&ctx, true, "server", "expected an object");
	else
		config_parse_server(&ctx, server, cfg);
	apis = config_parse_get(root, "apis");
	if (apis == NULL)
		config_parse_report(&ctx, true, "apis", "required");
	else if (!json_is_array(apis))
		config_parse_report(&ctx, true, "apis", "expected an array");
	else
		config_parse_apis(&ctx, apis, cfg);
	if (json_is_object(server))
		config_parse_fallbacks(&ctx, server, cfg);
	config_parse_unknown(&ctx, root, "", config_parse_top_fields);
	if (ctx.failed)
		goto fail;
	json_decref(root);
	return 0;
fail:
	if (ctx.nomem)
		config_parse_nomem(issues);
	json_decref(root);
	config_parse_clear(cfg);
	return -1;
}

void
config_parse_clear(struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_api_keys; i++) {
		free(cfg->api_keys[i]);
		free(cfg->clients[i].name);
		for (size_t j = 0; j < cfg->clients[i].n_models; j++)
			free(cfg->clients[i].models[j]);
		free(cfg->clients[i].models);
	}
	free(cfg->api_keys);
	free(cfg->clients);
	free(cfg->state_file);
	free(cfg->store);
	free(cfg->store_prefix);
	for (size_t i = 0; i < cfg->n_forward_paths; i++)
		free(cfg->forward_paths[i]);
	free(cfg->forward_paths);
	for (size_t i = 0; i < cfg->n_apis; i++) {
		struct config_api *api = &cfg->apis[i];

		free(api->id);
		free(api->name);
		free(api->base_url);
		free(api->day_zone_name);
		tz_free(api->day_zone);
		for (size_t j = 0; j < api->n_model_limits; j++) {
			struct config_model_limit *ml = &api->model_limits[j];
			for (size_t k = 0;
			     ml->slots != NULL && k < (api->n_keys > 0 ? api->n_keys : 1); k++)
				free(ml->slots[k]);
			free(ml->slots);
			free(ml->model);
		}
		free(api->model_limits);
		for (size_t j = 0; j < api->n_keys; j++) {
			free(api->keys[j].key);
			free(api->keys[j].slot);
		}
		free(api->keys);
		for (size_t j = 0; j < api->n_models; j++)
			free(api->models[j]);
		free(api->models);
		for (size_t j = 0; j < api->n_mapping; j++) {
			free(api->mapping[j].key);
			free(api->mapping[j].value);
		}
		free(api->mapping);
		for (size_t j = 0; j < api->n_headers; j++) {
			free(api->headers[j].key);
			free(api->headers[j].value);
		}
		free(api->headers);
	}
	free(cfg->apis);
	for (size_t i = 0; i < cfg->n_fallbacks; i++) {
		struct config_fallback *f = &cfg->fallbacks[i];

		for (size_t j = 0; j < f->n_to; j++)
			free(f->to[j]);
		free(f->to);
		free(f->model);
	}
	free(cfg->fallbacks);
	memset(cfg, 0, sizeof(*cfg));
}

void
config_parse_nomem(struct config_issues *issues)
{
	if (issues != NULL)
		(void)config_issue_add(issues, true, "top level", "out of memory");
}

int
config_parse(const char *text, size_t len, struct config **out, struct config_issues *issues)
{
	struct config *cfg;

	*out = NULL;
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL) {
		config_parse_nomem(issues);
		return -1;
	}
	if (config_parse_into(cfg, text, len, issues) == -1) {
		free(cfg);
		return -1;
	}
	*out = cfg;
	return 0;
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	config_parse_clear(cfg);
	free(cfg);
}

/* ---- lookups ---- */

const char *
config_api_model(const struct config_api *api, const char *model)
{
	if (api == NULL || model == NULL)
		return NULL;
	for (size_t i = 0; i < api->n_mapping; i++)
		if (strcmp(api->mapping[i].key, model) == 0)
			return api->mapping[i].value;
	for (size_t i = 0; i < api->n_models; i++)
		if (strcmp(api->models[i], model) == 0)
			return model;
	return NULL;
}

const struct config_model_limit *
config_model_limit(const struct config_api *api, const char *model)
{
	for (size_t i = 0; model != NULL && i < api->n_model_limits; i++)
		if (strcmp(api->model_limits[i].model, model) == 0)
			return &api->model_limits[i];
	return NULL;
}

const struct config_fallback *
config_fallback(const struct config *cfg, const char *model)
{
	if (cfg == NULL || model == NULL)
		return NULL;
	for (size_t i = 0; i < cfg->n_fallbacks; i++)
		if (strcmp(cfg->fallbacks[i].model, model) == 0)
			return &cfg->fallbacks[i];
	return NULL;
}

bool
config_forwards(const struct config *cfg, const char *path)
{
	if (cfg == NULL || path == NULL)
		return false;
	for (size_t i = 0; i < cfg->n_forward_paths; i++) {
		const char *entry = cfg->forward_paths[i];
		size_t n = strlen(entry);

		if (n > 0 && entry[n - 1] == '*' ? strncmp(path, entry, n - 1) == 0
						 : strcmp(path, entry) == 0)
			return true;
	}
	return false;
}

long
config_find_api(const struct config *cfg, const char *id)
{
	if (cfg == NULL || id == NULL)
		return -1;
	for (size_t i = 0; i < cfg->n_apis; i++)
		if (strcmp(cfg->apis[i].id, id) == 0)
			return (long)i;
	return -1;
}

/* config: load, validate and hold the JSON configuration (doc/behaviour.md,
 * Configuration).
 *
 * A loaded config is an immutable snapshot. config_acquire() hands out the
 * current one with a reference; a changed file is reloaded on the next acquire,
 * and a file that fails to load keeps the last good snapshot in service.
 *
 * Two files: config_parse.c turns the text into a struct config (every check,
 * the lookups); config.c reads the file and serves the snapshot. */
#ifndef API_TOGETHER_CONFIG_H
#define API_TOGETHER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynbuf.h"
#include "tz.h"

struct config_pair {
	char *key;
	char *value;
};

/* One key of an endpoint's pool (doc/behaviour.md, Key pools). */
struct config_key {
	char *key;    /* "" sends no Authorization upstream */
	char *slot;   /* the store's name of this key's state: the endpoint's id
			 when it has one key (its state as before pools), else the
			 id, a unit separator and a digest of the key, never the key */
	char tail[5]; /* its last 4 characters, what answers may show ("" when
			 the key is shorter than 8) */
};

struct config_api {
	char *id;
	char *name;              /* the id when not given */
	char *base_url;          /* http:// or https://, trailing '/' removed */
	char *api_key;           /* keys[0].key (not owned) */
	struct config_key *keys; /* apiKey: one or more, no two alike */
	size_t n_keys;
	long rpm; /* -1 unlimited, 0 endpoint off */
	long rpd;
	long tpm; /* tokens per minute, per day: -1 unlimited, 0 endpoint off */
	long tpd;
	bool enabled;
	/* apis[].streamUsage (default true): a stream on an endpoint with a
	 * token limit asks the upstream for its usage (doc/behaviour.md,
	 * Forwarding). */
	bool stream_usage;
	char **models;
	size_t n_models;
	struct config_pair *mapping; /* requested name -> upstream name */
	size_t n_mapping;
	struct config_pair *headers; /* extra headers sent upstream */
	size_t n_headers;
	double weight; /* > 0 */
	long priority; /* apis[].priority: the higher tier is tried first */
	/* apis[].dayResetTimezone: the zone whose midnight its days roll over
	 * at; both NULL: the responder's local zone. */
	char *day_zone_name;
	struct tz_zone *day_zone;
	struct config_model_limit *model_limits;
	size_t n_model_limits;
};

/* apis[].modelLimits: the limits of one model (as sent upstream) on each
 * key of the endpoint, on top of the endpoint's (doc/behaviour.md, Limits
 * and state, rule 27). -1 unlimited, 0 the model off there. */
struct config_model_limit {
	char *model;
	long rpm, rpd, tpm, tpd;
	char **slots; /* per key (one when it has none): the store's name of the
			 model's state on it, the key's slot, a unit separator
			 and the model */
};

/* server.fallbacks: the models a requested one falls back to, in order. */
struct config_fallback {
	char *model;
	char **to;
	size_t n_to;
};

/* Who a key the gateway accepts belongs to (doc/behaviour.md, HTTP:
 * client and admin keys). server.apiKey and a string of server.apiKeys are
 * clients with every model, no expiry and no name. */
struct config_client {
	char *name;    /* server.apiKeys[].name; NULL when not given */
	char tail[5];  /* the key's last 4 characters, what logs show without
			  a name ("" when the key is shorter than 8) */
	char **models; /* names, or prefixes ending in '*'; NULL: every model */
	size_t n_models;
	int64_t expires_ms; /* 0: never; else refused from this instant on */
	bool enabled;
	bool admin; /* one of server.adminKeys */
	/* The client's own limits, as an endpoint's (-1 unlimited, 0 none
	 * admitted), counted in the store under slot: "\x1e" "client" "\x1f"
	 * and a digest of the key, never the key */
	long rpm, rpd, tpm, tpd;
	char slot[32];
};

struct config {
	/* every key the gateway accepts: server.apiKey first, then
	 * server.apiKeys, then server.adminKeys; clients[i] is api_keys[i]'s */
	char **api_keys;
	struct config_client *clients;
	size_t n_api_keys;
	bool admin_keys; /* server.adminKeys is set: only those are admins */
	long port;
	long max_retries;
	long connect_timeout_s;
	long timeout_s;
	long cooldown_failures;
	long cooldown_seconds;
	long rate_limit_cooldown_s; /* server.rateLimitCooldownSeconds */
	long recheck_minutes;       /* server.recheckMinutes */
	bool empty_response_retry;
	long long max_body_bytes;
	bool cors;
	bool metrics_public;   /* server.metricsPublic: GET /metrics needs no key */
	char *state_file;      /* NULL when not set */
	char *store;           /* server.store: a Redis address; NULL for "gdbm" */
	char *store_prefix;    /* server.storePrefix; NULL for the default */
	long store_timeout_ms; /* server.storeTimeoutMs */
	/* server.forwardPaths: the paths below /v1/ that go to an upstream,
	 * each exact or, ending in '*', a prefix; the default list when the
	 * field is not set, none when it is [] */
	char **forward_paths;
	size_t n_forward_paths;
	struct config_api *apis;
	size_t n_apis;
	struct config_fallback *fallbacks; /* server.fallbacks; none when not set */
	size_t n_fallbacks;
};

/* One problem found while loading: an error makes the load fail, a warning
 * (an unknown field) does not. path is a JSON path ("apis[1].rpm") or
 * "line L, column C" for a syntax error. */
struct config_issue {
	bool error;
	char *path;
	char *message;
};

/* The problems in the order found. Start it all zeros ({0}), read v[0] to
 * v[n - 1], free it with config_issues_free (then it can be used again). */
struct config_issues {
	struct config_issue *v;
	size_t n;
	struct dynbuf buf; /* holds v */
};

/* Parses and validates a config held in memory. On success returns 0 and a
 * new config in *out (caller frees with config_free). On any error returns -1
 * and sets *out to NULL. Either way every problem found is appended to
 * issues (may be NULL); the caller frees it with config_issues_free. */
int config_parse(const char *text, size_t len, struct config **out, struct config_issues *issues);

/* As config_parse, for a file; an unreadable file is one error naming it. */
int config_load_file(const char *path, struct config **out, struct config_issues *issues);

void config_free(struct config *cfg);
void config_issues_free(struct config_issues *issues);

/* The upstream model name api uses for a requested model: the mapping target
 * when the name is mapped, the name itself when it is in models, else NULL.
 * The result points into api or equals model. */
const char *config_api_model(const struct config_api *api, const char *model);

/* The modelLimits entry of upstream model name model on api, or NULL. */
const struct config_model_limit *config_model_limit(const struct config_api *api,
						    const char *model);

/* The server.fallbacks entry of model (its name as the config spells it,
 * its fallback models in order), or NULL when it has none or model is
 * NULL. Points into cfg. */
const struct config_fallback *config_fallback(const struct config *cfg, const char *model);

/* True when client has a limit of its own (rpm, rpd, tpm or tpd set). */
bool config_client_limited(const struct config_client *client);

/* True when client may use model: it has no models list, or model equals
 * one of them or starts with the text before the '*' of one that ends in one.
 * A NULL model (none named) is allowed. */
bool config_client_allows(const struct config_client *client, const char *model);

/* Parses an ISO 8601 date ("2026-12-31": through that day, UTC) or date-time
 * ("2026-12-31T18:00:00Z", "...+02:00"; no offset is UTC) into the first
 * millisecond since the epoch at which it has passed. Returns 0 on success,
 * -1 when s is not one. */
int config_parse_expiry(const char *s, int64_t *out_ms);

/* The digest that names a key's state in the store (64-bit FNV-1a). */
uint64_t config_key_digest(const char *key);

/* True when path, a request's path below "/v1/" without the query (e.g.
 * "chat/completions"), is one that cfg forwards: equal to an entry of
 * forward_paths, or starting with the text before the '*' of an entry that
 * ends in one (doc/behaviour.md, Forwarding: which paths). Case-sensitive;
 * nothing is decoded or normalised here. */
bool config_forwards(const struct config *cfg, const char *path);

/* Index of the endpoint with this id, or -1. */
long config_find_api(const struct config *cfg, const char *id);

/* Sets the file that config_acquire serves. Call once, before threads. */
void config_set_path(const char *path);

/* Returns the current snapshot with a reference the caller gives back with
 * config_release, reloading first when the file changed since the last look
 * (mtime, size, inode). Thread-safe. Returns NULL when no config has ever
 * loaded; then *why (if not NULL) points to a static, secret-free reason.
 * A reload failure is logged and the last good snapshot is returned. */
struct config *config_acquire(const char **why);
void config_release(struct config *cfg);

/* Room for each text of struct config_info but its path. */
#define CONFIG_INFO_TEXT 256

/* The config in service and the file on disk as this process last saw them
 * (doc/behaviour.md, Configuration: Reload). Times are ms since the epoch.
 *
 * path: the file set by config_set_path ("" when none). loaded_ms: when this
 * process loaded the config in service (0 when none is).
 *
 * rejected is set while the file on disk is not the one in service: it did
 * not load, cannot be read or is gone. Then rejected_at is the first error's
 * place ("apis[1].rpm", "line 3, column 5"), "" when the file itself cannot
 * be read; rejected_message that error's message; rejected_errors the number
 * of errors (1 when unreadable); rejected_since_ms the file's modification
 * time, or for a file that cannot be found, when this process first found
 * so. */
struct config_info {
	char path[4096];
	int64_t loaded_ms;
	bool rejected;
	char rejected_at[CONFIG_INFO_TEXT];
	char rejected_message[CONFIG_INFO_TEXT];
	size_t rejected_errors;
	int64_t rejected_since_ms;
};

/* Fills *info (the caller's) from what config_acquire saw last; texts too
 * long are cut. Thread-safe; never fails. */
void config_info(struct config_info *info);

#endif

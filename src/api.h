/* api: the gateway's own endpoints: /health, /v1/status, /v1/models,
 * /v1/token/stats, /v1/token/reset and /v1/usage (doc/behaviour.md, HTTP). Each is a handler of
 * routes.c's table (a routes_fn): it answers the request, whose method and
 * key the table checked, and returns the status written. */
#ifndef API_TOGETHER_API_H
#define API_TOGETHER_API_H

#include <jansson.h>
#include <stdbool.h>

#include "config.h"
#include "request.h"
#include "worker.h"

/* GET /health: 200, or 503 with a reason when no config loaded (cfg NULL,
 * why says why) or the store cannot be used. */
int api_health(struct request *r, const struct config *cfg, const char *why, struct worker *w);

/* GET /v1/status: every endpoint's limits, usage and cooldown; 503 when the
 * store cannot be read. why is unused. */
int api_status(struct request *r, const struct config *cfg, const char *why, struct worker *w);

/* The body of GET /v1/status, a new reference. NULL when the store cannot
 * be read (then it answered 503 itself and *status is that) or memory ran
 * out (*status 0). */
json_t *api_status_body(struct request *r, const struct config *cfg, struct worker *w, int *status);

/* GET /v1/models and /v1/models/ID: the models enabled endpoints serve; 404
 * model_not_found for an ID none serves. why and w are unused. */
int api_models(struct request *r, const struct config *cfg, const char *why, struct worker *w);

/* GET /v1/token/stats: token and request counts per endpoint and summed. */
int api_token_stats(struct request *r, const struct config *cfg, const char *why, struct worker *w);

/* POST /v1/token/reset: zeroes the token totals of the body's apiId, or of
 * every endpoint for an empty body. */
int api_token_reset(struct request *r, const struct config *cfg, const char *why, struct worker *w);

/* GET /v1/usage: the usage per day and model of the key's client, or of
 * every client for an admin key (doc/behaviour.md, HTTP: GET /v1/usage);
 * 503 when the store cannot be read. why is unused. */
int api_usage(struct request *r, const struct config *cfg, const char *why, struct worker *w);

#endif

/* api: the gateway's own endpoints: /health, /v1/status, /v1/models,
 * /v1/token/stats and /v1/token/reset (SPEC section 5). */
#ifndef API_TOGETHER_API_H
#define API_TOGETHER_API_H

#include <stdbool.h>

#include "config.h"
#include "request.h"
#include "worker.h"

/* True when the decoded path below the mount point is one of /v1's own
 * endpoints (not /health, which needs no key). */
bool api_owns(const char *decoded);

/* Answers GET /health. cfg is NULL when no config loaded; why says why.
 * Returns the status written. */
int api_health(struct request *r, const struct config *cfg, const char *why, struct worker *w);

/* Answers one of the own endpoints (api_owns was true). Returns the status. */
int api_handle(struct request *r, const struct config *cfg, struct worker *w);

/* The store of w for cfg, opened (or opened again when its address or
 * options changed) as needed; NULL with the reason logged and kept in
 * w->store_err. */
struct store *api_store(struct worker *w, const struct config *cfg);

/* The state file in force: API_TOGETHER_STATE, else server.stateFile, else
 * the default under the local state directory. */
const char *api_state_path(const struct config *cfg);

/* The store in force, as an address for store_open: API_TOGETHER_STORE,
 * else server.store; "gdbm" (the default) is the state file of
 * api_state_path. NULL when API_TOGETHER_STORE is neither "gdbm" nor a
 * Redis address, with the reason in *why (when why is not NULL). */
const char *api_store_address(const struct config *cfg, const char **why);

/* The options of the store in force (server.storePrefix, storeTimeoutMs). */
void api_store_options(const struct config *cfg, struct store_options *o);

/* "state file" or "Redis store": what address is, for log lines. */
const char *api_store_what(const char *address);

/* Fills eps[i] from cfg->apis[i] for every endpoint. */
void api_store_endpoints(const struct config *cfg, struct store_endpoint *eps);

#endif

/* auth: the client's key and whether it opens the gateway. */
#ifndef API_TOGETHER_AUTH_H
#define API_TOGETHER_AUTH_H

#include <stdbool.h>

#include "config.h"
#include "request.h"

/* The key the client sent, from "Authorization: Bearer KEY", a bare
 * "Authorization: KEY" or "X-Api-Key: KEY"; NULL when none. Points into r. */
const char *auth_client_key(const struct request *r);

/* True when key equals one of cfg's client keys. Every configured key is
 * compared in full, so the time taken does not tell how much of key matched. */
bool auth_check(const struct config *cfg, const char *key);

#endif

/* auth: the client's key and whether it opens the gateway. */
#ifndef API_TOGETHER_AUTH_H
#define API_TOGETHER_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "request.h"

/* The key the client sent, from "Authorization: Bearer KEY", a bare
 * "Authorization: KEY" or "X-Api-Key: KEY"; NULL when none. Points into r. */
const char *auth_client_key(const struct request *r);

enum auth_verdict {
	AUTH_UNKNOWN, /* no key, an unknown one or one with enabled: false */
	AUTH_EXPIRED, /* past its expires */
	AUTH_OK
};

/* Which of cfg's keys key is (doc/behaviour.md, HTTP: client and
 * admin keys): on AUTH_OK and AUTH_EXPIRED *client points to its entry of
 * cfg->clients, else it is set to NULL. now_ms is the time since the epoch.
 * Every configured key is compared in full, so the time taken does not tell
 * how much of key matched, nor which key it was. */
enum auth_verdict auth_client(const struct config *cfg, const char *key, int64_t now_ms,
			      const struct config_client **client);

/* How log lines name client: its name, else its key's last 4
 * characters, "-" for a key too short to show any or for NULL. Never the
 * key. Points into client or to a constant. */
const char *auth_client_label(const struct config_client *client);

#endif

/* admin: the operator's actions on an endpoint or one of its keys, POST
 * /v1/admin/endpoints/ID[/keys/N]/ACTION (doc/behaviour.md, HTTP: admin
 * actions): pause, resume, cooldown/end, recheck, tokens/reset. A handler
 * of routes.c's table, whose row lets only admin keys and POST through. */
#ifndef API_TOGETHER_ADMIN_H
#define API_TOGETHER_ADMIN_H

#include "config.h"
#include "request.h"
#include "worker.h"

/* Applies the action the path names, logs it with the admin's name (never
 * the key) and answers 200 with the endpoint or key as /v1/status shows it
 * after it; 404 for an unknown action, endpoint or key; 503 when the store
 * cannot be used. why is unused. Returns the status written. */
int admin_handle(struct request *r, const struct config *cfg, const char *why, struct worker *w);

#endif

/* proxy: a request for an upstream: check the body, then the attempt loop
 * (choose, reserve, forward, classify, retry) of doc/behaviour.md,
 * Forwarding. */
#ifndef API_TOGETHER_PROXY_H
#define API_TOGETHER_PROXY_H

#include "config.h"
#include "request.h"
#include "worker.h"

/* Forwards r to the endpoints of cfg and answers the client. Logs the
 * request's one line. Returns the status the client got. */
int proxy_handle(struct request *r, const struct config *cfg, struct worker *w);

#endif

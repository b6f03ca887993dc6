/* metrics: GET /metrics, the gateway's counters in the Prometheus text
 * format 0.0.4, read from the store so that every process (and, with Redis,
 * every host) reports the same totals. */
#ifndef API_TOGETHER_METRICS_H
#define API_TOGETHER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "request.h"
#include "store.h"
#include "worker.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Renders the exposition of n endpoints (eps[i] with usage u[i]) and the
 * refusal counts rejects[0..STORE_REJECT_N-1], at now_ms. Returns a
 * malloc'd, NUL-terminated text (its length in *len) the caller frees, or
 * NULL when out of memory or past the page's bound (64 MiB). */
char *metrics_render(const struct store_endpoint *eps, const struct store_usage *u, size_t n,
		     const long long *rejects, int64_t now_ms, size_t *len);

/* Answers GET or HEAD /metrics (routes.c checked the method, and the key
 * unless it is public).
 * Returns the status written. */
int metrics_handle(struct request *r, const struct config *cfg, struct worker *w);

/* Counts a request the gateway refused itself: no lock and no store call
 * (store_count), in the store within the main thread's next sync, a second
 * at most. w and cfg are not used (kept for the callers' sake). */
void metrics_reject(struct worker *w, const struct config *cfg, enum store_reject why);

#endif

/* route: which endpoints may serve a model, and the weighted pick among them. */
#ifndef API_TOGETHER_ROUTE_H
#define API_TOGETHER_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Writes to idx the indexes (into cfg->apis) of the endpoints in service that
 * serve model: enabled, rpm and rpd not 0, and model in models or a key of
 * modelMapping. With model NULL every endpoint in service qualifies. idx must
 * hold cfg->n_apis entries, or be NULL to count only. Returns how many. */
size_t route_candidates(const struct config *cfg, const char *model, size_t *idx);

/* State of the weighted pick: weights[i] and tiers[i] for candidate i, and
 * the calling thread's random state. */
struct route_pick {
	const double *weights;
	const long *tiers; /* each one's apis[].priority; NULL: all one tier */
	uint64_t *rng;
};

/* A store_pick_fn: picks one of the candidates with room[i] true in the
 * highest tier among those, each with a chance proportional to its weight
 * (doc/behaviour.md, Forwarding: priority tiers). Called inside the store's
 * atomic step, so the tier is chosen on the room every process sees. ctx is
 * a struct route_pick. Returns n when none has room. */
size_t route_pick(void *ctx, const bool *room, size_t n);

/* Seeds a random state from the kernel (falls back to time and address). */
void route_seed(uint64_t *rng);

/* The next number of a xorshift64* sequence. */
uint64_t route_random(uint64_t *rng);

#endif

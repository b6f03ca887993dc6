#include "route.h"

#include <string.h>
#include <time.h>

#include "compat.h"

size_t
route_candidates(const struct config *cfg, const char *model, size_t *idx)
{
	size_t n = 0;

	for (size_t i = 0; i < cfg->n_apis; i++) {
		const struct config_api *api = &cfg->apis[i];
		if (!api->enabled || api->rpm == 0 || api->rpd == 0 || api->tpm == 0 ||
		    api->tpd == 0)
			continue;
		if (model != NULL && config_api_model(api, model) == NULL)
			continue;
		if (idx != NULL)
			idx[n] = i;
		n++;
	}
	return n;
}

uint64_t
route_random(uint64_t *rng)
{
	uint64_t x = *rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

void
route_seed(uint64_t *rng)
{
	uint64_t seed = 0;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed) || seed == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)rng;
	}
	*rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

/* Whether candidate i is in the running: it has room, in the tier picked. */
static bool
route_pick_in(const struct route_pick *p, const bool *room, size_t i, long tier)
{
	return room[i] && (p->tiers == NULL || p->tiers[i] == tier);
}

size_t
route_pick(void *ctx, const bool *room, size_t n)
{
	const struct route_pick *p = ctx;
	double sum = 0, target;
	size_t last = n;
	long tier = 0;
	bool any = false;

	for (size_t i = 0; p->tiers != NULL && i < n; i++) {
		if (room[i] && (!any || p->tiers[i] > tier)) {
			tier = p->tiers[i];
			any = true;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (route_pick_in(p, room, i, tier)) {
			sum += p->weights[i];
			last = i;
		}
	}
	if (last == n)
		return n;
	/* 53 random bits give a uniform double in [0, 1). */
	target = (double)(route_random(p->rng) >> 11) / 9007199254740992.0 * sum;
	for (size_t i = 0; i < n; i++) {
		if (!route_pick_in(p, room, i, tier))
			continue;
		if (target < p->weights[i])
			return i;
		target -= p->weights[i];
	}
	return last; /* rounding left a sliver past the end */
}

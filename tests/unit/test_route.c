/* Unit tests of route.c: which endpoints may serve a model, and the weighted
 * pick among those with room. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "config.h"
#include "route.h"

/* ---- a config built by hand ---- */

#define MAX_APIS 8

struct fixture {
	struct config cfg;
	struct config_api apis[MAX_APIS];
};

static char *models_gpt[] = {"gpt-4o", "gpt-4o-mini"};
static char *models_llama[] = {"llama3"};
static char *models_upstream[] = {"claude-3-upstream"};
static struct config_pair mapping_gpt4[] = {{"gpt-4", "gpt-4o"}};
static struct config_pair mapping_claude[] = {{"claude", "claude-3-upstream"}};
static struct config_pair mapping_to_unlisted[] = {{"alias", "hidden-target"}};

static void
api_init(struct config_api *api, char *id, char **models, size_t n_models)
{
	memset(api, 0, sizeof(*api));
	api->id = id;
	api->name = id;
	api->base_url = "http://127.0.0.1:1";
	api->api_key = "";
	api->rpm = -1;
	api->rpd = -1;
	api->tpm = -1;
	api->tpd = -1;
	api->enabled = true;
	api->models = models;
	api->n_models = n_models;
	api->weight = 1;
}

static void
fixture_init(struct fixture *f, size_t n_apis)
{
	memset(f, 0, sizeof(*f));
	f->cfg.apis = f->apis;
	f->cfg.n_apis = n_apis;
	f->cfg.max_retries = 10;
}

/* Index list as written by route_candidates, compared to an expected one. */
static void
assert_candidates(const struct config *cfg, const char *model, const size_t *want, size_t n_want)
{
	size_t idx[MAX_APIS];

	memset(idx, 0xff, sizeof(idx));
	size_t n = route_candidates(cfg, model, idx);
	assert_int_equal(n, n_want);
	/* Without a list it only counts them. */
	assert_int_equal(route_candidates(cfg, model, NULL), n_want);
	for (size_t i = 0; i < n_want; i++)
		assert_int_equal(idx[i], want[i]);
}

/* ---- route_candidates ---- */

static void
candidates_serve_model_listed_in_models(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 2);
	api_init(&f.apis[0], "openai", models_gpt, 2);
	api_init(&f.apis[1], "ollama", models_llama, 1);

	assert_candidates(&f.cfg, "gpt-4o-mini", (size_t[]){0}, 1);
	assert_candidates(&f.cfg, "llama3", (size_t[]){1}, 1);
}

static void
candidates_list_every_endpoint_serving_model_in_config_order(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 3);
	api_init(&f.apis[0], "a", models_gpt, 2);
	api_init(&f.apis[1], "b", models_llama, 1);
	api_init(&f.apis[2], "c", models_gpt, 2);

	assert_candidates(&f.cfg, "gpt-4o", (size_t[]){0, 2}, 2);
}

static void
candidates_unknown_model_gives_none(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 2);
	api_init(&f.apis[0], "a", models_gpt, 2);
	api_init(&f.apis[1], "b", models_llama, 1);

	assert_candidates(&f.cfg, "no-such-model", NULL, 0);
	/* Names are compared whole and case-sensitively. */
	assert_candidates(&f.cfg, "gpt-4", NULL, 0);
	assert_candidates(&f.cfg, "GPT-4O", NULL, 0);
	assert_candidates(&f.cfg, "", NULL, 0);
}

static void
candidates_skip_disabled_endpoint(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 3);
	api_init(&f.apis[0], "a", models_gpt, 2);
	api_init(&f.apis[1], "b", models_gpt, 2);
	api_init(&f.apis[2], "c", models_gpt, 2);
	f.apis[1].enabled = false;

	assert_candidates(&f.cfg, "gpt-4o", (size_t[]){0, 2}, 2);
	assert_candidates(&f.cfg, NULL, (size_t[]){0, 2}, 2);
}

static void
candidates_skip_endpoint_with_rpm_zero(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 2);
	api_init(&f.apis[0], "a", models_gpt, 2);
	api_init(&f.apis[1], "b", models_gpt, 2);
	f.apis[0].rpm = 0;

	assert_candidates(&f.cfg, "gpt-4o", (size_t[]){1}, 1);
	assert_candidates(&f.cfg, NULL, (size_t[]){1}, 1);
}

static void
candidates_skip_endpoint_with_rpd_zero(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 2);
	api_init(&f.apis[0], "a", models_gpt, 2);
	api_init(&f.apis[1], "b", models_gpt, 2);
	f.apis[1].rpd = 0;

	assert_candidates(&f.cfg, "gpt-4o", (size_t[]){0}, 1);
	assert_candidates(&f.cfg, NULL, (size_t[]){0}, 1);
}

static void
candidates_keep_endpoint_with_positive_or_unlimited_limits(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 3);
	api_init(&f.apis[0], "a", models_gpt, 2);
	api_init(&f.apis[1], "b", models_gpt, 2);
	api_init(&f.apis[2], "c", models_gpt, 2);
	f.apis[0].rpm = 1;
	f.apis[0].rpd = 1;
	f.apis[1].rpm = -1;
	f.apis[1].rpd = 5;
	f.apis[2].rpm = 60;
	f.apis[2].rpd = -1;

	/* Room at this moment is the store's business, not route_candidates'. */
	assert_candidates(&f.cfg, "gpt-4o", (size_t[]){0, 1, 2}, 3);
}

static void
candidates_serve_model_mapping_key(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 2);
	api_init(&f.apis[0], "openai", models_gpt, 2);
	f.apis[0].mapping = mapping_gpt4;
	f.apis[0].n_mapping = 1;
	api_init(&f.apis[1], "ollama", models_llama, 1);

	assert_candidates(&f.cfg, "gpt-4", (size_t[]){0}, 1);
}

static void
candidates_mapping_target_alone_is_not_served(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 2);
	/* "alias" -> "hidden-target", and "hidden-target" is not in models. */
	api_init(&f.apis[0], "a", models_llama, 1);
	f.apis[0].mapping = mapping_to_unlisted;
	f.apis[0].n_mapping = 1;
	api_init(&f.apis[1], "b", models_gpt, 2);

	assert_candidates(&f.cfg, "alias", (size_t[]){0}, 1);
	assert_candidates(&f.cfg, "hidden-target", NULL, 0);
}

static void
candidates_mapping_target_listed_in_models_is_served(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 1);
	api_init(&f.apis[0], "a", models_upstream, 1);
	f.apis[0].mapping = mapping_claude;
	f.apis[0].n_mapping = 1;

	assert_candidates(&f.cfg, "claude", (size_t[]){0}, 1);
	assert_candidates(&f.cfg, "claude-3-upstream", (size_t[]){0}, 1);
}

static void
candidates_mapping_key_on_disabled_endpoint_is_not_served(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 1);
	api_init(&f.apis[0], "a", models_gpt, 2);
	f.apis[0].mapping = mapping_gpt4;
	f.apis[0].n_mapping = 1;
	f.apis[0].enabled = false;

	assert_candidates(&f.cfg, "gpt-4", NULL, 0);
}

static void
candidates_null_model_gives_every_endpoint_in_service(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 5);
	api_init(&f.apis[0], "a", models_gpt, 2);
	api_init(&f.apis[1], "b", models_llama, 1);
	api_init(&f.apis[2], "off", models_gpt, 2);
	f.apis[2].enabled = false;
	api_init(&f.apis[3], "rpm0", models_llama, 1);
	f.apis[3].rpm = 0;
	api_init(&f.apis[4], "c", models_upstream, 1);

	assert_candidates(&f.cfg, NULL, (size_t[]){0, 1, 4}, 3);
}

static void
candidates_empty_config_gives_none(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 0);

	assert_candidates(&f.cfg, NULL, NULL, 0);
	assert_candidates(&f.cfg, "gpt-4o", NULL, 0);
}

static void
candidates_all_endpoints_out_of_service_gives_none(void **state)
{
	(void)state;
	struct fixture f;
	fixture_init(&f, 3);
	api_init(&f.apis[0], "a", models_gpt, 2);
	api_init(&f.apis[1], "b", models_gpt, 2);
	api_init(&f.apis[2], "c", models_gpt, 2);
	f.apis[0].enabled = false;
	f.apis[1].rpm = 0;
	f.apis[2].rpd = 0;

	assert_candidates(&f.cfg, "gpt-4o", NULL, 0);
	assert_candidates(&f.cfg, NULL, NULL, 0);
}

/* ---- route_random and route_seed ---- */

static void
random_same_seed_gives_same_sequence(void **state)
{
	(void)state;
	uint64_t a = 12345, b = 12345;

	for (int i = 0; i < 1000; i++)
		assert_int_equal(route_random(&a), route_random(&b));
}

static void
random_sequence_does_not_repeat_quickly(void **state)
{
	(void)state;
	uint64_t rng = 42, prev = route_random(&rng);
	int equal = 0;

	for (int i = 0; i < 10000; i++) {
		uint64_t v = route_random(&rng);
		if (v == prev)
			equal++;
		assert_int_not_equal(rng, 0);
		prev = v;
	}
	assert_int_equal(equal, 0);
}

static void
random_high_bit_is_balanced(void **state)
{
	(void)state;
	uint64_t rng = 7;
	int ones = 0;

	for (int i = 0; i < 100000; i++)
		ones += (int)(route_random(&rng) >> 63);
	assert_true(ones > 48000 && ones < 52000);
}

static void
seed_gives_nonzero_state(void **state)
{
	(void)state;
	/* A zero xorshift state would stay zero forever. */
	for (int i = 0; i < 100; i++) {
		uint64_t rng = 0;
		route_seed(&rng);
		assert_int_not_equal(rng, 0);
	}
}

static void
seed_gives_different_states(void **state)
{
	(void)state;
	uint64_t a = 0, b = 0;

	route_seed(&a);
	route_seed(&b);
	assert_int_not_equal(a, b);
}

/* ---- route_pick ---- */

static size_t
pick(const double *weights, uint64_t *rng, const bool *room, size_t n)
{
	struct route_pick p = {.weights = weights, .rng = rng};
	return route_pick(&p, room, n);
}

/* Share of picks per index over count picks. */
static void
pick_shares(const double *weights, const bool *room, size_t n, uint64_t seed, int count,
	    double *share)
{
	uint64_t rng = seed;
	int hits[MAX_APIS] = {0};

	for (int i = 0; i < count; i++) {
		size_t k = pick(weights, &rng, room, n);
		assert_true(k < n);
		assert_true(room[k]);
		hits[k]++;
	}
	for (size_t i = 0; i < n; i++)
		share[i] = (double)hits[i] / count;
}

static void
pick_weights_one_and_three_share_quarter_and_three_quarters(void **state)
{
	(void)state;
	const double weights[] = {1, 3};
	const bool room[] = {true, true};
	double share[2];

	pick_shares(weights, room, 2, 0x9E3779B97F4A7C15ULL, 100000, share);
	assert_true(share[0] > 0.23 && share[0] < 0.27);
	assert_true(share[1] > 0.73 && share[1] < 0.77);
}

static void
pick_weights_one_and_three_with_kernel_seed(void **state)
{
	(void)state;
	const double weights[] = {1, 3};
	const bool room[] = {true, true};
	double share[2];
	uint64_t seed = 0;

	route_seed(&seed);
	pick_shares(weights, room, 2, seed, 100000, share);
	assert_true(share[0] > 0.23 && share[0] < 0.27);
	assert_true(share[1] > 0.73 && share[1] < 0.77);
}

static void
pick_fractional_weights_keep_their_ratio(void **state)
{
	(void)state;
	const double weights[] = {0.5, 1.5};
	const bool room[] = {true, true};
	double share[2];

	pick_shares(weights, room, 2, 99, 100000, share);
	assert_true(share[0] > 0.23 && share[0] < 0.27);
	assert_true(share[1] > 0.73 && share[1] < 0.77);
}

static void
pick_small_fractional_weights_keep_their_ratio(void **state)
{
	(void)state;
	const double weights[] = {0.1, 0.2, 0.7};
	const bool room[] = {true, true, true};
	double share[3];

	pick_shares(weights, room, 3, 2024, 100000, share);
	assert_true(share[0] > 0.08 && share[0] < 0.12);
	assert_true(share[1] > 0.18 && share[1] < 0.22);
	assert_true(share[2] > 0.68 && share[2] < 0.72);
}

static void
pick_equal_weights_share_evenly(void **state)
{
	(void)state;
	const double weights[] = {1, 1, 1, 1};
	const bool room[] = {true, true, true, true};
	double share[4];

	pick_shares(weights, room, 4, 5, 100000, share);
	for (size_t i = 0; i < 4; i++)
		assert_true(share[i] > 0.23 && share[i] < 0.27);
}

static void
pick_shares_renormalise_over_endpoints_with_room(void **state)
{
	(void)state;
	/* The middle one is full: the others share in the ratio 1 : 3. */
	const double weights[] = {1, 100, 3};
	const bool room[] = {true, false, true};
	double share[3];

	pick_shares(weights, room, 3, 77, 100000, share);
	assert_true(share[1] == 0.0);
	assert_true(share[0] > 0.23 && share[0] < 0.27);
	assert_true(share[2] > 0.73 && share[2] < 0.77);
}

static void
pick_single_candidate_with_room_is_always_chosen(void **state)
{
	(void)state;
	const double weights[] = {1};
	const bool room[] = {true};
	uint64_t rng = 1;

	for (int i = 0; i < 10000; i++)
		assert_int_equal(pick(weights, &rng, room, 1), 0);
}

static void
pick_only_one_with_room_among_many_is_always_chosen(void **state)
{
	(void)state;
	const double weights[] = {5, 0.01, 7, 2};
	uint64_t rng = 3;

	for (size_t only = 0; only < 4; only++) {
		bool room[4] = {false, false, false, false};
		room[only] = true;
		for (int i = 0; i < 5000; i++)
			assert_int_equal(pick(weights, &rng, room, 4), only);
	}
}

static void
pick_only_returns_index_with_room(void **state)
{
	(void)state;
	const double weights[] = {0.3, 2, 1, 4.5, 0.7, 1, 3, 0.05};
	uint64_t rng = 11, mask_rng = 13;

	for (int i = 0; i < 100000; i++) {
		bool room[8];
		bool any = false;
		uint64_t mask = route_random(&mask_rng);
		for (size_t k = 0; k < 8; k++) {
			room[k] = (mask >> (k * 7)) & 1;
			any = any || room[k];
		}
		size_t got = pick(weights, &rng, room, 8);
		if (any) {
			assert_true(got < 8);
			assert_true(room[got]);
		} else {
			assert_int_equal(got, 8);
		}
	}
}

/* The store promises at least one with room, and treats an index >= n as
 * "none picked"; a pick without room must never name a full endpoint. */
static void
pick_with_no_room_returns_no_valid_index(void **state)
{
	(void)state;
	const double weights[] = {1, 2, 3};
	const bool room[] = {false, false, false};
	uint64_t rng = 1;

	assert_true(pick(weights, &rng, room, 3) >= 3);
}

static void
pick_with_no_candidates_returns_no_valid_index(void **state)
{
	(void)state;
	const double weights[] = {1};
	const bool room[] = {false};
	uint64_t rng = 1;

	assert_int_equal(pick(weights, &rng, room, 0), 0);
}

static void
pick_advances_random_state(void **state)
{
	(void)state;
	const double weights[] = {1, 1};
	const bool room[] = {true, true};
	uint64_t rng = 1234, before = rng;

	pick(weights, &rng, room, 2);
	assert_int_not_equal(rng, before);
}

static void
pick_rounding_never_lands_on_full_endpoint(void **state)
{
	(void)state;
	/* Weights that do not add up exactly in binary, with the first and the
	 * last one full: rounding must never land on a full endpoint. */
	const double weights[] = {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1};
	const bool room[] = {false, true, true, true, true, true, false};
	for (uint64_t seed = 1; seed < 20000; seed++) {
		uint64_t rng = seed;
		size_t got = pick(weights, &rng, room, 7);
		assert_true(got >= 1 && got <= 5);
	}
}

/* ---- priority tiers (doc/behaviour.md, Forwarding: priority tiers) ---- */

static size_t
pick_tiered(const double *weights, const long *tiers, uint64_t *rng, const bool *room, size_t n)
{
	struct route_pick p = {.weights = weights, .tiers = tiers, .rng = rng};
	return route_pick(&p, room, n);
}

/* The highest tier with room takes every pick, whatever the weights; the
 * weights share it out inside the tier. */
static void
pick_takes_the_highest_tier_with_room(void **state)
{
	(void)state;
	const double weights[] = {1000, 1, 3, 1000};
	const long tiers[] = {0, 5, 5, -2};
	const bool room[] = {true, true, true, true};
	uint64_t rng = 42;
	int hits[4] = {0};

	for (int i = 0; i < 100000; i++)
		hits[pick_tiered(weights, tiers, &rng, room, 4)]++;
	assert_int_equal(hits[0] + hits[3], 0);
	assert_true(hits[1] > 23000 && hits[1] < 27000);
	assert_true(hits[2] > 73000 && hits[2] < 77000);
}

/* A tier with no room left is passed over for the next one down, and the
 * tiers below it wait while it has room. */
static void
pick_moves_down_a_tier_without_room(void **state)
{
	(void)state;
	const double weights[] = {1, 1, 1, 1};
	const long tiers[] = {2, 1, 2, 0};
	uint64_t rng = 7;

	for (int i = 0; i < 10000; i++) {
		const bool top_full[] = {false, true, false, true};
		const bool middle_full[] = {false, false, false, true};
		const bool one_top[] = {false, true, true, true};
		const bool none[] = {false, false, false, false};
		assert_int_equal(pick_tiered(weights, tiers, &rng, top_full, 4), 1);
		assert_int_equal(pick_tiered(weights, tiers, &rng, middle_full, 4), 3);
		assert_int_equal(pick_tiered(weights, tiers, &rng, one_top, 4), 2);
		assert_int_equal(pick_tiered(weights, tiers, &rng, none, 4), 4);
	}
}

/* One tier for all (every priority 0, the default) picks exactly as no
 * tiers: the same index for the same random state. */
static void
pick_with_one_tier_is_the_untiered_pick(void **state)
{
	(void)state;
	const double weights[] = {0.3, 2, 1, 4.5, 0.7};
	const long tiers[] = {0, 0, 0, 0, 0};
	const bool room[] = {true, false, true, true, true};
	uint64_t a = 99, b = 99;

	for (int i = 0; i < 10000; i++)
		assert_int_equal(pick_tiered(weights, tiers, &a, room, 5),
				 pick(weights, &b, room, 5));
}

/* Negative priorities are tiers too, below 0. */
static void
pick_negative_tiers_come_last(void **state)
{
	(void)state;
	const double weights[] = {1, 1, 1};
	const long tiers[] = {-5, -1, -3};
	const bool room[] = {true, true, true};
	uint64_t rng = 5;

	for (int i = 0; i < 1000; i++)
		assert_int_equal(pick_tiered(weights, tiers, &rng, room, 3), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(candidates_serve_model_listed_in_models),
		cmocka_unit_test(candidates_list_every_endpoint_serving_model_in_config_order),
		cmocka_unit_test(candidates_unknown_model_gives_none),
		cmocka_unit_test(candidates_skip_disabled_endpoint),
		cmocka_unit_test(candidates_skip_endpoint_with_rpm_zero),
		cmocka_unit_test(candidates_skip_endpoint_with_rpd_zero),
		cmocka_unit_test(candidates_keep_endpoint_with_positive_or_unlimited_limits),
		cmocka_unit_test(candidates_serve_model_mapping_key),
		cmocka_unit_test(candidates_mapping_target_alone_is_not_served),
		cmocka_unit_test(candidates_mapping_target_listed_in_models_is_served),
		cmocka_unit_test(candidates_mapping_key_on_disabled_endpoint_is_not_served),
		cmocka_unit_test(candidates_null_model_gives_every_endpoint_in_service),
		cmocka_unit_test(candidates_empty_config_gives_none),
		cmocka_unit_test(candidates_all_endpoints_out_of_service_gives_none),
		cmocka_unit_test(random_same_seed_gives_same_sequence),
		cmocka_unit_test(random_sequence_does_not_repeat_quickly),
		cmocka_unit_test(random_high_bit_is_balanced),
		cmocka_unit_test(seed_gives_nonzero_state),
		cmocka_unit_test(seed_gives_different_states),
		cmocka_unit_test(pick_weights_one_and_three_share_quarter_and_three_quarters),
		cmocka_unit_test(pick_weights_one_and_three_with_kernel_seed),
		cmocka_unit_test(pick_fractional_weights_keep_their_ratio),
		cmocka_unit_test(pick_small_fractional_weights_keep_their_ratio),
		cmocka_unit_test(pick_equal_weights_share_evenly),
		cmocka_unit_test(pick_shares_renormalise_over_endpoints_with_room),
		cmocka_unit_test(pick_single_candidate_with_room_is_always_chosen),
		cmocka_unit_test(pick_only_one_with_room_among_many_is_always_chosen),
		cmocka_unit_test(pick_only_returns_index_with_room),
		cmocka_unit_test(pick_with_no_room_returns_no_valid_index),
		cmocka_unit_test(pick_with_no_candidates_returns_no_valid_index),
		cmocka_unit_test(pick_advances_random_state),
		cmocka_unit_test(pick_rounding_never_lands_on_full_endpoint),
		cmocka_unit_test(pick_takes_the_highest_tier_with_room),
		cmocka_unit_test(pick_moves_down_a_tier_without_room),
		cmocka_unit_test(pick_with_one_tier_is_the_untiered_pick),
		cmocka_unit_test(pick_negative_tiers_come_last),
	};

	return cmocka_run_group_tests(tests, 0, 0);
}

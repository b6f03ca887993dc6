/* Unit tests of plan.c: the attempt loop's rule for what comes next, driven
 * by scripts of what the store and the upstreams said, without either. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "plan.h"
#include "route.h"

#define MAX_APIS 4

static char *test_ids[MAX_APIS] = {"a", "b", "c", "d"};
static char *test_models[] = {"m"};

/* A config of n endpoints "a", "b"... serving "m", rpm 10, 11..., weights
 * 1, 2..., priorities 1, 0, 1, 0. */
struct fixture {
	struct config cfg;
	struct config_api apis[MAX_APIS];
};

static void
fixture_init(struct fixture *f, size_t n, long max_retries)
{
	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < n; i++) {
		struct config_api *a = &f->apis[i];
		a->id = a->name = test_ids[i];
		a->base_url = "http://127.0.0.1:1";
		a->api_key = "";
		a->rpm = 10 + (long)i;
		a->rpd = -1;
		a->tpm = -1;
		a->tpd = -1;
		a->enabled = true;
		a->models = test_models;
		a->n_models = 1;
		a->weight = (double)(i + 1);
		a->priority = i % 2 == 0 ? 1 : 0;
	}
	f->cfg.apis = f->apis;
	f->cfg.n_apis = n;
	f->cfg.max_retries = max_retries;
}

/* ---- the table ---- */

/* One case: a config, a script of events and what plan_next must say
 * before the first and after each. Events, space-separated: rN reserved
 * the offer's N-th; lN / cN refused, limited / cooling, Retry-After N; f
 * the store failed; sN sent (status N), hN held, nN no answer, gN client
 * gone, eN local error. Steps: the plan_step names below, a refusal's
 * with the Retry-After the plan keeps ("limited/5"). offers: the
 * offer's ids at each "reserve" step; tried: the ids tried, in order. */
struct plan_case {
	const char *name;
	size_t n_apis;
	long max_retries;
	const char *events;
	const char *steps;
	const char *offers;
	const char *tried;
};

static const struct plan_case plan_cases[] = {
	{"first attempt answers", 3, 3, "r1 s200", "reserve forward done", "abc", "b"},
	{"a 4xx passed on ends it too", 2, 3, "r0 s400", "reserve forward done", "ab", "a"},
	{"retry on another endpoint after a held failure", 3, 3, "r0 h503 r1 s200",
	 "reserve forward reserve forward done", "abc bc", "ac"},
	{"retry after no answer", 2, 3, "r1 n0 r0 s200", "reserve forward reserve forward done",
	 "ab a", "ba"},
	{"maxRetries reached: the held answer is forwarded", 3, 2, "r0 h429 r0 h500",
	 "reserve forward reserve forward send-held", "abc bc", "ab"},
	{"maxRetries reached, nothing held: 502", 3, 2, "r0 n0 r0 n0",
	 "reserve forward reserve forward unreachable", "abc bc", "ab"},
	{"all candidates tried: the held answer is forwarded", 2, 5, "r0 n0 r0 h503",
	 "reserve forward reserve forward send-held", "ab b", "ab"},
	{"a held answer outlives a later no answer", 2, 5, "r0 h503 r0 n0",
	 "reserve forward reserve forward send-held", "ab b", "ab"},
	{"all candidates tried, nothing held: 502", 2, 5, "r0 n0 r0 n0",
	 "reserve forward reserve forward unreachable", "ab b", "ab"},
	{"one candidate, one try", 1, 5, "r0 h502", "reserve forward send-held", "a", "a"},
	{"maxRetries 0: 502 without a try", 2, 0, "", "unreachable", "", ""},
	{"limited before any try: 429", 2, 3, "l5", "reserve limited/5", "ab", ""},
	{"cooling before any try: 503", 2, 3, "c7", "reserve cooling/7", "ab", ""},
	{"limited after a try: the held answer", 3, 3, "r0 h503 l5",
	 "reserve forward reserve send-held", "abc bc", "a"},
	{"cooling after a try, nothing held: 502", 3, 3, "r2 n0 c9",
	 "reserve forward reserve unreachable", "abc ab", "c"},
	{"the store fails before any try: 503", 2, 3, "f", "reserve store-error", "ab", ""},
	{"the store fails after a try: the held answer", 2, 3, "r0 h500 f",
	 "reserve forward reserve send-held", "ab b", "a"},
	{"the store fails after a try, nothing held: 502", 2, 3, "r0 n0 f",
	 "reserve forward reserve unreachable", "ab b", "a"},
	{"a local error ends the loop", 2, 3, "r0 e0", "reserve forward local-error", "ab", "a"},
	{"a local error beats a held answer", 3, 3, "r0 h503 r0 e0",
	 "reserve forward reserve forward local-error", "abc bc", "ab"},
	{"the client went away", 2, 3, "r0 g0", "reserve forward done", "ab", "a"},
	{"the client went away on a retry", 2, 3, "r1 h429 r0 g200",
	 "reserve forward reserve forward done", "ab a", "ba"},
};

static const char *const plan_step_names[] = {
	[PLAN_RESERVE] = "reserve",         [PLAN_FORWARD] = "forward",
	[PLAN_FALLBACK] = "fallback",       [PLAN_DONE] = "done",
	[PLAN_SEND_HELD] = "send-held",     [PLAN_UNREACHABLE] = "unreachable",
	[PLAN_LOCAL_ERROR] = "local-error", [PLAN_STORE_ERROR] = "store-error",
	[PLAN_LIMITED] = "limited",         [PLAN_COOLING] = "cooling",
};

/* Appends s and a space to buf (of size cap). */
static void
test_append(char *buf, size_t cap, const char *s)
{
	size_t len = strlen(buf);

	snprintf(buf + len, cap - len, "%s%s", len > 0 ? " " : "", s);
}

static void
test_plan_apply(struct plan *p, const char *ev)
{
	long arg = strtol(ev + 1, NULL, 10);
	struct store_reservation res = {0};

	switch (ev[0]) {
	case 'r':
		res.verdict = STORE_RESERVED;
		res.chosen = (size_t)arg;
		assert_true(res.chosen < p->offer.n);
		plan_reserved(p, &res);
		break;
	case 'l':
	case 'c':
		res.verdict = ev[0] == 'l' ? STORE_LIMITED : STORE_COOLING;
		res.retry_after_s = arg;
		plan_reserved(p, &res);
		break;
	case 'f':
		plan_store_failed(p);
		break;
	case 's':
		plan_tried(p, PLAN_SENT, arg);
		break;
	case 'h':
		plan_tried(p, PLAN_HELD, arg);
		break;
	case 'n':
		plan_tried(p, PLAN_NO_ANSWER, arg);
		break;
	case 'g':
		plan_tried(p, PLAN_CLIENT_GONE, arg);
		break;
	case 'e':
		plan_tried(p, PLAN_LOCAL, arg);
		break;
	default:
		fail_msg("unknown event %s", ev);
	}
}

/* Notes plan_next's step in steps; at a reserve, fills the offer (as
 * proxy.c does) and notes its ids in offers. */
static void
test_plan_look(struct plan *p, char *steps, char *offers, size_t cap)
{
	enum plan_step s = plan_next(p);
	char ids[MAX_APIS + 1] = "", name[32];

	if (s == PLAN_LIMITED || s == PLAN_COOLING)
		snprintf(name, sizeof(name), "%s/%ld", plan_step_names[s], p->retry_after_s);
	else
		snprintf(name, sizeof(name), "%s", plan_step_names[s]);
	test_append(steps, cap, name);
	if (s != PLAN_RESERVE)
		return;
	plan_offer(p);
	for (size_t i = 0; i < p->offer.n; i++) {
		ids[i] = p->offer.eps[i].id[0];
		assert_int_equal(p->offer.api[i], (size_t)(ids[i] - 'a'));
		/* The offer carries each endpoint's limits and weight. */
		assert_int_equal(p->offer.eps[i].rpm, 10 + (ids[i] - 'a'));
		assert_true(p->offer.weights[i] == (double)(ids[i] - 'a' + 1));
		/* and its priority, for the pick's tiers */
		assert_int_equal(p->offer.tiers[i], (ids[i] - 'a') % 2 == 0 ? 1 : 0);
	}
	test_append(offers, cap, ids);
}

static void
plan_table(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(plan_cases) / sizeof(plan_cases[0]); k++) {
		const struct plan_case *c = &plan_cases[k];
		char steps[256] = "", offers[64] = "", tried[MAX_APIS + 1] = "";
		char events[128];
		struct fixture f;
		struct plan p;

		fixture_init(&f, c->n_apis, c->max_retries);
		assert_int_equal(plan_init(&p, &f.cfg, "m"), 0);
		assert_int_equal(p.n, c->n_apis);
		snprintf(events, sizeof(events), "%s", c->events);
		test_plan_look(&p, steps, offers, sizeof(steps));
		for (char *save, *ev = strtok_r(events, " ", &save); ev != NULL;
		     ev = strtok_r(NULL, " ", &save)) {
			test_plan_apply(&p, ev);
			test_plan_look(&p, steps, offers, sizeof(steps));
		}
		for (size_t i = 0; i < p.n_tries; i++)
			tried[i] = f.cfg.apis[p.tries[i].api].id[0];
		if (strcmp(steps, c->steps) != 0 || strcmp(offers, c->offers) != 0 ||
		    strcmp(tried, c->tried) != 0)
			fail_msg("%s: steps \"%s\" offers \"%s\" tried \"%s\"; want \"%s\" "
				 "\"%s\" \"%s\"",
				 c->name, steps, offers, tried, c->steps, c->offers, c->tried);
		plan_free(&p);
	}
}

/* ---- key pools: doc/behaviour.md, Key pools ---- */

/* Endpoint a has keys 0 and 1, b one key, c keys 0 to 2. */
struct pool_fixture {
	struct fixture f;
	struct config_key keys[MAX_APIS][3];
	char slots[MAX_APIS][3][8];
};

static void
pool_init(struct pool_fixture *pf, long max_retries)
{
	static const size_t n_keys[] = {2, 1, 3};

	fixture_init(&pf->f, 3, max_retries);
	for (size_t i = 0; i < 3; i++) {
		for (size_t k = 0; k < n_keys[i]; k++) {
			snprintf(pf->slots[i][k], sizeof(pf->slots[i][k]), "%c%zu", 'a' + (int)i,
				 k);
			pf->keys[i][k].key = pf->keys[i][k].slot = pf->slots[i][k];
		}
		pf->f.apis[i].keys = pf->keys[i];
		pf->f.apis[i].n_keys = n_keys[i];
	}
}

struct pool_case {
	const char *name;
	long max_retries;
	const char *events; /* as plan_table's */
	const char *steps;
	const char *offers;  /* each offer's slots, "a0a1b0c0c1c2" */
	const char *charged; /* the try plan_confirmed named ("0": the first), ""
				none */
};

static const struct pool_case pool_cases[] = {
	{"the offer holds every key, grouped by endpoint", 3, "r0 s200", "reserve forward done",
	 "a0a1b0c0c1c2", ""},
	{"a 429 moves to another key, of the same endpoint too", 5, "r0 h429 r0 s200",
	 "reserve forward reserve forward done", "a0a1b0c0c1c2 a1b0c0c1c2", ""},
	{"a 5xx moves to another endpoint", 5, "r1 h503 r0 s200",
	 "reserve forward reserve forward done", "a0a1b0c0c1c2 b0c0c1c2", ""},
	{"no answer moves to another endpoint", 5, "r0 n0 r0 s200",
	 "reserve forward reserve forward done", "a0a1b0c0c1c2 b0c0c1c2", ""},
	{"a 401 then a 200: the 401's key is charged", 5, "r0 h401 r0 s200",
	 "reserve forward reserve forward done", "a0a1b0c0c1c2 a1b0c0c1c2", "0"},
	{"a 403 then no answer: charged too", 5, "r0 h403 r2 n0 r0 s200",
	 "reserve forward reserve forward reserve forward done", "a0a1b0c0c1c2 a1b0c0c1c2 a1b0",
	 "0"},
	{"a 401 then a 403: the request's fault, its answer sent", 5, "r0 h401 r0 h403",
	 "reserve forward reserve forward send-held", "a0a1b0c0c1c2 a1b0c0c1c2", ""},
	{"a 403 and nothing left: sent, nobody charged", 1, "r0 h403", "reserve forward send-held",
	 "a0a1b0c0c1c2", ""},
	{"maxRetries bounds key tries too", 2, "r0 h429 r0 h429",
	 "reserve forward reserve forward send-held", "a0a1b0c0c1c2 a1b0c0c1c2", ""},
	{"every key tried: the last held answer", 9,
	 "r1 h429 r0 h429 r0 h429 r0 h429 r0 h429 r0 h429",
	 "reserve forward reserve forward reserve forward reserve forward reserve forward "
	 "reserve forward send-held",
	 "a0a1b0c0c1c2 a0b0c0c1c2 b0c0c1c2 c0c1c2 c1c2 c2", ""},
};

static void
pool_table(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(pool_cases) / sizeof(pool_cases[0]); k++) {
		const struct pool_case *c = &pool_cases[k];
		char steps[256] = "", offers[256] = "", charged[24] = "", events[128];
		struct pool_fixture pf;
		struct plan p;

		pool_init(&pf, c->max_retries);
		assert_int_equal(plan_init(&p, &pf.f.cfg, "m"), 0);
		snprintf(events, sizeof(events), "%s", c->events);
		for (char *save, *ev = strtok_r(events, " ", &save);;
		     ev = strtok_r(NULL, " ", &save)) {
			enum plan_step st = plan_next(&p);
			test_append(steps, sizeof(steps), plan_step_names[st]);
			if (st == PLAN_RESERVE) {
				char o[64] = "";
				plan_offer(&p);
				for (size_t i = 0; i < p.offer.n; i++) {
					size_t len = strlen(o);
					snprintf(o + len, sizeof(o) - len, "%s", p.offer.eps[i].id);
					/* Keys of a pool are a group; a lone key none. */
					assert_int_equal(p.offer.eps[i].group,
							 pf.f.apis[p.offer.api[i]].n_keys > 1
								 ? p.offer.api[i] + 1
								 : 0);
				}
				test_append(offers, sizeof(offers), o);
			}
			if (ev == NULL)
				break;
			if (ev[0] == 's' || ev[0] == 'h' || ev[0] == 'n') {
				const struct plan_try *t =
					plan_confirmed(&p, strtol(ev + 1, NULL, 10));
				if (t != NULL)
					snprintf(charged, sizeof(charged), "%ld",
						 (long)(t - p.tries));
			}
			test_plan_apply(&p, ev);
		}
		if (strcmp(steps, c->steps) != 0 || strcmp(offers, c->offers) != 0 ||
		    strcmp(charged, c->charged) != 0)
			fail_msg("%s: steps \"%s\" offers \"%s\" charged \"%s\"; want \"%s\" "
				 "\"%s\" \"%s\"",
				 c->name, steps, offers, charged, c->steps, c->offers, c->charged);
		plan_free(&p);
	}
}

/* The tries keep each one's status and result, for the log line. */
static void
plan_keeps_each_try(void **state)
{
	struct fixture f;
	struct plan p;
	struct store_reservation res = {.verdict = STORE_RESERVED, .chosen = 0};

	(void)state;
	fixture_init(&f, 3, 3);
	assert_int_equal(plan_init(&p, &f.cfg, "m"), 0);
	plan_offer(&p);
	plan_reserved(&p, &res);
	plan_tried(&p, PLAN_HELD, 503);
	plan_offer(&p);
	plan_reserved(&p, &res);
	plan_tried(&p, PLAN_NO_ANSWER, 0);
	assert_int_equal(p.n_tries, 2);
	assert_int_equal(p.tries[0].api, 0);
	assert_int_equal(p.tries[0].result, PLAN_HELD);
	assert_int_equal(p.tries[0].status, 503);
	assert_int_equal(p.tries[1].api, 1);
	assert_int_equal(p.tries[1].result, PLAN_NO_ANSWER);
	assert_true(p.held);
	plan_free(&p);
}

/* The candidates are route_candidates': in service and serving the model. */
static void
plan_candidates(void **state)
{
	static char *other[] = {"x"};
	struct fixture f;
	struct plan p;

	(void)state;
	fixture_init(&f, 4, 3);
	f.apis[0].enabled = false;
	f.apis[2].rpm = 0;
	f.apis[3].models = other;
	assert_int_equal(plan_init(&p, &f.cfg, "m"), 0);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.api[0], 1);
	plan_free(&p);
	assert_int_equal(plan_init(&p, &f.cfg, "nobody-serves-it"), 0);
	assert_int_equal(p.n, 0);
	plan_free(&p);
	/* No model (a GET): every endpoint in service. */
	assert_int_equal(plan_init(&p, &f.cfg, NULL), 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.api[1], 3);
	plan_free(&p);
}

/* ---- priority tiers (doc/behaviour.md, Forwarding: priority tiers) ---- */

/* The plan offers every open candidate with its priority and the pick
 * (route_pick, inside the store's step) takes the highest tier with room:
 * so a retry stays in its tier while the tier has an untried endpoint,
 * then moves down. a and c are tier 1, b and d tier 0; every one has
 * room; each try fails. */
static void
plan_retries_stay_in_the_tier_then_move_down(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 200; seed++) {
		struct fixture f;
		struct plan p;
		uint64_t rng = seed;
		bool room[MAX_APIS] = {true, true, true, true};
		char tried[MAX_APIS + 1] = "";

		fixture_init(&f, 4, 10);
		assert_int_equal(plan_init(&p, &f.cfg, "m"), 0);
		for (size_t t = 0; plan_next(&p) == PLAN_RESERVE; t++) {
			plan_offer(&p);
			struct route_pick pick = {p.offer.weights, p.offer.tiers, &rng};
			struct store_reservation res = {.verdict = STORE_RESERVED};
			res.chosen = route_pick(&pick, room, p.offer.n);
			assert_true(res.chosen < p.offer.n);
			plan_reserved(&p, &res);
			assert_int_equal(plan_next(&p), PLAN_FORWARD);
			plan_tried(&p, PLAN_HELD, 500);
			tried[t] = f.cfg.apis[p.tries[t].api].id[0];
		}
		assert_int_equal(plan_next(&p), PLAN_SEND_HELD);
		assert_int_equal(strlen(tried), 4);
		/* tier 1 (a, c) first, in either order, then tier 0 (b, d) */
		if (strchr("ac", tried[0]) == NULL || strchr("ac", tried[1]) == NULL ||
		    strchr("bd", tried[2]) == NULL || strchr("bd", tried[3]) == NULL)
			fail_msg("seed %llu: tried %s", (unsigned long long)seed, tried);
		plan_free(&p);
	}
}

/* ---- fallbacks (doc/behaviour.md, Forwarding: fallbacks) ---- */

/* a and b serve m, c f1, d f2; nobody serves gone. m falls back to f1,
 * gone, f2; x (served by none) to f1; f1 to f2 (not followed from m). */
struct fb_fixture {
	struct fixture f;
	struct config_fallback fallbacks[3];
};

static char *fb_m[] = {"f1", "gone", "f2"};
static char *fb_x[] = {"f1"};
static char *fb_f1[] = {"f2"};
static char *fb_model_f1[] = {"f1"};
static char *fb_model_f2[] = {"f2"};

static void
fb_init(struct fb_fixture *ff, long max_retries)
{
	fixture_init(&ff->f, 4, max_retries);
	ff->f.apis[2].models = fb_model_f1;
	ff->f.apis[3].models = fb_model_f2;
	ff->fallbacks[0] = (struct config_fallback){"m", fb_m, 3};
	ff->fallbacks[1] = (struct config_fallback){"x", fb_x, 1};
	ff->fallbacks[2] = (struct config_fallback){"f1", fb_f1, 1};
	ff->f.cfg.fallbacks = ff->fallbacks;
	ff->f.cfg.n_fallbacks = 3;
}

/* As plan_case, for a request of model; served: the X-Api-Together-Model
 * of the answer the client gets ("" none: no answer of an upstream, or a
 * model without fallbacks). */
struct fb_case {
	const char *name;
	const char *model;
	long max_retries;
	const char *events;
	const char *steps;
	const char *offers;
	const char *tried;
	const char *served;
};

static const struct fb_case fb_cases[] = {
	{"every endpoint of the model fails: the first fallback serves", "m", 5,
	 "r0 h500 r0 h500 r0 s200", "reserve forward reserve forward fallback reserve forward done",
	 "ab b c", "abc", "f1"},
	{"the fallback fails too: the next one (none serves gone: skipped)", "m", 5,
	 "r0 h500 r0 n0 r0 h502 r0 s200",
	 "reserve forward reserve forward fallback reserve forward fallback reserve forward done",
	 "ab b c d", "abcd", "f2"},
	{"no room for the model: its fallback", "m", 5, "l30 r0 s200",
	 "reserve fallback reserve forward done", "ab c", "c", "f1"},
	{"no room anywhere: 429, the smallest wait of every model's", "m", 5, "c20 l30 c9",
	 "reserve fallback reserve fallback reserve limited/9", "ab c d", "", ""},
	{"all cooling everywhere: 503, the smallest wait", "m", 5, "c20 c9 c40",
	 "reserve fallback reserve fallback reserve cooling/9", "ab c d", "", ""},
	{"a 4xx passed on: no fallback; the model named", "m", 5, "r0 s400", "reserve forward done",
	 "ab", "a", "m"},
	{"a 401 then a 403: the request's fault, no fallback", "m", 5, "r0 h401 r0 h403",
	 "reserve forward reserve forward send-held", "ab b", "ab", "m"},
	{"the store fails: no fallback", "m", 5, "f", "reserve store-error", "ab", "", ""},
	{"maxRetries counts every model's tries: none left for a fallback", "m", 2,
	 "r0 h500 r0 h500", "reserve forward reserve forward send-held", "ab b", "ab", "m"},
	{"maxRetries: the fallback gets the tries left", "m", 3, "r0 h500 r0 h500 r0 h503",
	 "reserve forward reserve forward fallback reserve forward send-held", "ab b c", "abc",
	 "f1"},
	{"a refusal after a try: the fallbacks, then the answer held", "m", 5, "r0 h500 l5 l7 c3",
	 "reserve forward reserve fallback reserve fallback reserve send-held", "ab b c d", "a",
	 "m"},
	{"the model asked for is served by none: its fallback from the start", "x", 5, "r0 s200",
	 "reserve forward done", "c", "c", "f1"},
	{"a fallback's own fallbacks are not followed", "x", 5, "r0 h500",
	 "reserve forward send-held", "c", "c", "f1"},
	{"asked for directly, f1 falls back to f2", "f1", 5, "r0 h500 r0 s200",
	 "reserve forward fallback reserve forward done", "c d", "cd", "f2"},
	{"a model without fallbacks: no header", "f2", 5, "r0 h500", "reserve forward send-held",
	 "d", "d", ""},
};

/* The try whose answer the client gets at step (the last, or the last held). */
static const struct plan_try *
fb_answered(const struct plan *p, enum plan_step step)
{
	if (step == PLAN_DONE && p->n_tries > 0)
		return &p->tries[p->n_tries - 1];
	for (size_t i = p->n_tries; step == PLAN_SEND_HELD && i > 0; i--)
		if (p->tries[i - 1].result == PLAN_HELD)
			return &p->tries[i - 1];
	return NULL;
}

static void
fallback_table(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(fb_cases) / sizeof(fb_cases[0]); k++) {
		const struct fb_case *c = &fb_cases[k];
		char steps[256] = "", offers[64] = "", tried[16] = "", events[128];
		const char *served;
		struct fb_fixture ff;
		struct plan p;
		enum plan_step st;

		fb_init(&ff, c->max_retries);
		assert_int_equal(plan_init(&p, &ff.f.cfg, c->model), 0);
		snprintf(events, sizeof(events), "%s", c->events);
		for (char *save, *ev = strtok_r(events, " ", &save);;
		     ev = strtok_r(NULL, " ", &save)) {
			while ((st = plan_next(&p)) == PLAN_FALLBACK) {
				test_append(steps, sizeof(steps), plan_step_names[st]);
				plan_fallback(&p);
			}
			char name[32], ids[MAX_APIS + 1] = "";
			if (st == PLAN_LIMITED || st == PLAN_COOLING)
				snprintf(name, sizeof(name), "%s/%ld", plan_step_names[st],
					 p.retry_after_s);
			else
				snprintf(name, sizeof(name), "%s", plan_step_names[st]);
			test_append(steps, sizeof(steps), name);
			if (st == PLAN_RESERVE) {
				plan_offer(&p);
				for (size_t i = 0; i < p.offer.n; i++)
					ids[i] = p.offer.eps[i].id[0];
				test_append(offers, sizeof(offers), ids);
			}
			if (ev == NULL)
				break;
			test_plan_apply(&p, ev);
		}
		for (size_t i = 0; i < p.n_tries; i++)
			tried[i] = ff.f.cfg.apis[p.tries[i].api].id[0];
		const struct plan_try *t = fb_answered(&p, st);
		served = t != NULL ? plan_answer_model(&p, t->model) : NULL;
		if (served == NULL)
			served = "";
		if (strcmp(steps, c->steps) != 0 || strcmp(offers, c->offers) != 0 ||
		    strcmp(tried, c->tried) != 0 || strcmp(served, c->served) != 0)
			fail_msg("%s: steps \"%s\" offers \"%s\" tried \"%s\" served \"%s\"; want "
				 "\"%s\" \"%s\" \"%s\" \"%s\"",
				 c->name, steps, offers, tried, served, c->steps, c->offers,
				 c->tried, c->served);
		plan_free(&p);
	}
}

/* The chain keeps the models an endpoint in service serves, in order; the
 * model tried now is plan_model's, and the body is rewritten to it. */
static void
plan_chain_of_models(void **state)
{
	struct fb_fixture ff;
	struct plan p;

	(void)state;
	fb_init(&ff, 5);
	assert_int_equal(plan_init(&p, &ff.f.cfg, "m"), 0);
	assert_int_equal(p.n_models, 3);
	assert_string_equal(p.models[0], "m");
	assert_string_equal(p.models[1], "f1");
	assert_string_equal(p.models[2], "f2");
	assert_string_equal(plan_model(&p), "m");
	assert_int_equal(p.n, 2);
	plan_fallback(&p);
	assert_string_equal(plan_model(&p), "f1");
	assert_int_equal(p.n, 1);
	assert_int_equal(p.api[0], 2);
	plan_free(&p);
	/* d out of service: f2 leaves the chain */
	ff.f.apis[3].enabled = false;
	assert_int_equal(plan_init(&p, &ff.f.cfg, "m"), 0);
	assert_int_equal(p.n_models, 2);
	plan_free(&p);
	/* nothing of the chain served: n 0 (404) */
	ff.f.apis[2].enabled = false;
	assert_int_equal(plan_init(&p, &ff.f.cfg, "x"), 0);
	assert_int_equal(p.n_models, 0);
	assert_int_equal(p.n, 0);
	assert_null(plan_model(&p));
	plan_free(&p);
	/* no model: no chain of fallbacks, every endpoint in service */
	assert_int_equal(plan_init(&p, &ff.f.cfg, NULL), 0);
	assert_int_equal(p.n_models, 1);
	assert_null(plan_model(&p));
	assert_null(plan_answer_model(&p, 0));
	assert_int_equal(p.n, 2);
	plan_free(&p);
}

/* An endpoint that failed the model asked for is a candidate again for a
 * fallback it serves (its model may be what failed): the tries that close
 * a key are those of the model tried now. */
static void
plan_fallback_may_return_to_an_endpoint(void **state)
{
	static char *both[] = {"m", "f1"};
	struct fb_fixture ff;
	struct plan p;
	struct store_reservation res = {.verdict = STORE_RESERVED, .chosen = 0};

	(void)state;
	fb_init(&ff, 5);
	ff.f.apis[0].models = both;
	ff.f.apis[0].n_models = 2;
	assert_int_equal(plan_init(&p, &ff.f.cfg, "m"), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(plan_next(&p), PLAN_RESERVE);
		plan_offer(&p);
		plan_reserved(&p, &res);
		plan_tried(&p, PLAN_HELD, 500);
	}
	assert_int_equal(plan_next(&p), PLAN_FALLBACK);
	plan_fallback(&p);
	assert_int_equal(plan_next(&p), PLAN_RESERVE);
	plan_offer(&p);
	assert_int_equal(p.offer.n, 2);
	assert_int_equal(p.offer.api[0], 0);
	assert_int_equal(p.offer.api[1], 2);
	plan_free(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(plan_table),
		cmocka_unit_test(pool_table),
		cmocka_unit_test(plan_keeps_each_try),
		cmocka_unit_test(plan_candidates),
		cmocka_unit_test(plan_retries_stay_in_the_tier_then_move_down),
		cmocka_unit_test(fallback_table),
		cmocka_unit_test(plan_chain_of_models),
		cmocka_unit_test(plan_fallback_may_return_to_an_endpoint),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

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

#define MAX_APIS 4

static char *test_ids[MAX_APIS] = {"a", "b", "c", "d"};
static char *test_models[] = {"m"};

/* A config of n endpoints "a", "b"... serving "m", unlimited, weights 1, 2... */
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
	[PLAN_RESERVE] = "reserve",
	[PLAN_FORWARD] = "forward",
	[PLAN_DONE] = "done",
	[PLAN_SEND_HELD] = "send-held",
	[PLAN_UNREACHABLE] = "unreachable",
	[PLAN_LOCAL_ERROR] = "local-error",
	[PLAN_STORE_ERROR] = "store-error",
	[PLAN_LIMITED] = "limited",
	[PLAN_COOLING] = "cooling",
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(plan_table),
		cmocka_unit_test(pool_table),
		cmocka_unit_test(plan_keeps_each_try),
		cmocka_unit_test(plan_candidates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

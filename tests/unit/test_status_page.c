/* Unit tests of status_page.c: the key of GET /status?key=, read the way the
 * page's own script (URLSearchParams) reads it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "status_page.h"

/* The key of query is want (NULL: no key). */
static void
assert_key(const char *query, const char *want)
{
	char *got = status_page_query_key(query);

	if (want == NULL) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void
key_alone_or_among_others(void **state)
{
	(void)state;
	assert_key("key=sk-123", "sk-123");
	assert_key("a=1&key=sk-123&b=2", "sk-123");
	assert_key("a=1&key=sk-123", "sk-123");
}

static void
first_key_wins(void **state)
{
	(void)state;
	assert_key("key=one&key=two", "one");
}

static void
key_is_form_decoded(void **state)
{
	(void)state;
	assert_key("key=sk%2D1%2B2+3", "sk-1+2 3");
	assert_key("key=", "");
}

static void
other_names_are_no_key(void **state)
{
	(void)state;
	assert_key(NULL, NULL);
	assert_key("", NULL);
	assert_key("monkey=sk-123", NULL);
	assert_key("keys=sk-123", NULL);
	assert_key("a=key=sk-123", NULL);
}

static void
key_with_nul_matches_nothing(void **state)
{
	(void)state;
	/* Cut at the NUL it would be "sk", which a gateway might accept. */
	assert_key("key=sk%00x", "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_alone_or_among_others),
		cmocka_unit_test(first_key_wins),
		cmocka_unit_test(key_is_form_decoded),
		cmocka_unit_test(other_names_are_no_key),
		cmocka_unit_test(key_with_nul_matches_nothing),
	};

	return cmocka_run_group_tests(tests, 0, 0);
}

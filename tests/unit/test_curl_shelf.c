/* Unit tests of curl_shelf.c: the handles a process keeps between requests. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "curl_shelf.h"

/* The handle put back last, whose connections are the warmest, goes out
 * first; an empty shelf makes a new one. */
static void
last_put_back_goes_out_first(void **state)
{
	(void)state;
	static struct curl_shelf shelf = CURL_SHELF_INIT;
	CURL *a = curl_shelf_take(&shelf), *b = curl_shelf_take(&shelf);

	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	curl_shelf_put(&shelf, a);
	curl_shelf_put(&shelf, b);
	assert_ptr_equal(curl_shelf_take(&shelf), b);
	curl_shelf_put(&shelf, b);
	assert_ptr_equal(curl_shelf_take(&shelf), b);
	assert_ptr_equal(curl_shelf_take(&shelf), a);
	CURL *c = curl_shelf_take(&shelf);
	assert_non_null(c);
	assert_ptr_not_equal(c, a);
	assert_ptr_not_equal(c, b);
	curl_easy_cleanup(a);
	curl_easy_cleanup(b);
	curl_easy_cleanup(c);
	dynbuf_free(&shelf.handles);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(last_put_back_goes_out_first),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}

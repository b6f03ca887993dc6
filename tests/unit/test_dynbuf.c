/* Unit tests of dynbuf.c: the one growable buffer and its cap. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dynbuf.h"

static void
empty_buffer_reads_as_empty_string(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 100);
	assert_string_equal(dynbuf_str(&d), "");
	assert_int_equal(dynbuf_len(&d), 0);
	assert_false(dynbuf_failed(&d));
	assert_null(dynbuf_take(&d, NULL));
	dynbuf_free(&d);
}

static void
adds_append_and_stay_nul_terminated(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 100);
	assert_int_equal(dynbuf_adds(&d, "Status: "), 0);
	assert_int_equal(dynbuf_printf(&d, "%d %s", 429, "Too Many Requests"), 0);
	assert_int_equal(dynbuf_add(&d, "\r\n", 2), 0);
	assert_string_equal(dynbuf_str(&d), "Status: 429 Too Many Requests\r\n");
	assert_int_equal(dynbuf_len(&d), strlen("Status: 429 Too Many Requests\r\n"));
	dynbuf_free(&d);
}

static void
growth_past_first_block_keeps_content(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 1 << 20);
	for (int i = 0; i < 10000; i++)
		assert_int_equal(dynbuf_printf(&d, "%04d", i % 10000), 0);
	assert_int_equal(dynbuf_len(&d), 40000);
	assert_memory_equal(dynbuf_str(&d) + 4 * 9999, "9999", 4);
	dynbuf_free(&d);
}

static void
long_printf_beyond_small_buffer_is_whole(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 10000);
	char big[1000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	assert_int_equal(dynbuf_printf(&d, "<%s>", big), 0);
	assert_int_equal(dynbuf_len(&d), 1001);
	assert_int_equal(dynbuf_str(&d)[1000], '>');
	dynbuf_free(&d);
}

static void
add_past_cap_fails_with_e2big_and_changes_nothing(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 8);
	assert_int_equal(dynbuf_adds(&d, "12345678"), 0);
	errno = 0;
	assert_int_equal(dynbuf_adds(&d, "9"), -1);
	assert_int_equal(errno, E2BIG);
	assert_true(dynbuf_failed(&d));
	assert_string_equal(dynbuf_str(&d), "12345678");
	/* Sticky: a later add that would fit fails too. */
	dynbuf_truncate(&d, 2);
	assert_int_equal(dynbuf_adds(&d, "x"), -1);
	/* And take gives nothing back from a failed buffer. */
	assert_null(dynbuf_take(&d, NULL));
	dynbuf_free(&d);
}

static void
reset_clears_error_and_content(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 4);
	assert_int_equal(dynbuf_adds(&d, "12345"), -1);
	dynbuf_reset(&d);
	assert_false(dynbuf_failed(&d));
	assert_int_equal(dynbuf_adds(&d, "ab"), 0);
	assert_string_equal(dynbuf_str(&d), "ab");
	dynbuf_free(&d);
}

static void
addz_gives_zeroed_aligned_elements(void **state)
{
	(void)state;
	struct elem {
		long long a;
		double b;
		char *c;
	};
	struct dynbuf d;
	dynbuf_init(&d, 1000 * sizeof(struct elem));
	for (int i = 0; i < 1000; i++) {
		struct elem *e = dynbuf_addz(&d, sizeof *e);
		assert_non_null(e);
		assert_int_equal(e->a, 0);
		assert_null(e->c);
		e->a = i;
	}
	assert_null(dynbuf_addz(&d, sizeof(struct elem)));
	struct elem *v = dynbuf_ptr(&d);
	assert_int_equal((uintptr_t)v % _Alignof(struct elem), 0);
	assert_int_equal(v[999].a, 999);
	assert_int_equal(dynbuf_len(&d) / sizeof *v, 1000);
	dynbuf_free(&d);
}

static void
reserve_then_commit_reads_in_place(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 100);
	assert_int_equal(dynbuf_reserve(&d, 10), 0);
	assert_true(dynbuf_room(&d) >= 10);
	memcpy(dynbuf_end(&d), "abc", 3);
	dynbuf_commit(&d, 3);
	assert_string_equal(dynbuf_str(&d), "abc");
	size_t len = 0;
	char *p = dynbuf_take(&d, &len);
	assert_non_null(p);
	assert_int_equal(len, 3);
	assert_string_equal(p, "abc");
	free(p);
	assert_int_equal(dynbuf_len(&d), 0);
	dynbuf_free(&d);
}

static void
capped_buffer_allocates_no_more_than_cap(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 300);
	assert_non_null(dynbuf_addz(&d, 300));
	assert_true(d.alloc <= 301);
	dynbuf_free(&d);
}

/* A known length (a body's Content-Length) costs one allocation of its
 * size, not the next power of two; later growth doubles. */
static void
first_reserve_allocates_what_it_asks(void **state)
{
	(void)state;
	struct dynbuf d;
	dynbuf_init(&d, 1 << 20);
	assert_int_equal(dynbuf_reserve(&d, 5000), 0);
	assert_int_equal(d.alloc, 5001);
	char *first = dynbuf_end(&d);
	memset(first, 'b', 5000);
	dynbuf_commit(&d, 5000);
	assert_ptr_equal(dynbuf_ptr(&d), first);
	assert_int_equal(dynbuf_adds(&d, "x"), 0);
	assert_int_equal(d.alloc, 10002);
	dynbuf_free(&d);
	/* A small first add still gets the whole first block. */
	dynbuf_init(&d, 1 << 20);
	assert_int_equal(dynbuf_adds(&d, "ab"), 0);
	assert_true(dynbuf_room(&d) >= 200);
	dynbuf_free(&d);
}

/* A buffer kept for reuse (a list of handles) goes on after a failed add
 * once the error is cleared, with everything it held. */
static void
clearerr_keeps_content_and_takes_adds_again(void **state)
{
	(void)state;
	static struct dynbuf d = DYNBUF_INIT(4);
	assert_int_equal(dynbuf_adds(&d, "abc"), 0);
	assert_int_equal(dynbuf_adds(&d, "de"), -1);
	assert_true(dynbuf_failed(&d));
	assert_int_equal(dynbuf_adds(&d, "d"), -1);
	dynbuf_clearerr(&d);
	assert_false(dynbuf_failed(&d));
	assert_string_equal(dynbuf_str(&d), "abc");
	assert_int_equal(dynbuf_adds(&d, "d"), 0);
	assert_string_equal(dynbuf_str(&d), "abcd");
	dynbuf_free(&d);
	assert_int_equal(d.cap, 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_buffer_reads_as_empty_string),
		cmocka_unit_test(adds_append_and_stay_nul_terminated),
		cmocka_unit_test(growth_past_first_block_keeps_content),
		cmocka_unit_test(long_printf_beyond_small_buffer_is_whole),
		cmocka_unit_test(add_past_cap_fails_with_e2big_and_changes_nothing),
		cmocka_unit_test(reset_clears_error_and_content),
		cmocka_unit_test(addz_gives_zeroed_aligned_elements),
		cmocka_unit_test(reserve_then_commit_reads_in_place),
		cmocka_unit_test(capped_buffer_allocates_no_more_than_cap),
		cmocka_unit_test(first_reserve_allocates_what_it_asks),
		cmocka_unit_test(clearerr_keeps_content_and_takes_adds_again),
	};
	return cmocka_run_group_tests(tests, 0, 0);
}

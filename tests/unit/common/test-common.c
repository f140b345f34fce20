/* Unit tests of common/: the error space's blocks and sentences, reason buffers. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "sfi-error.h"

/* Every assigned code of a block has its own sentence, none says "unknown". */
static void check_block(int first, int end, const char *unknown)
{
	for (int e = first; e < end; e++) {
		const char *s = sfi_strerror(-e);

		assert_non_null(s);
		assert_true(strlen(s) > 5);
		assert_null(strstr(s, "unknown"));
		assert_string_equal(s, sfi_strerror(e));
	}
	assert_string_equal(sfi_strerror(-end), unknown);
	assert_string_equal(sfi_strerror(-(first + SFI_E_RANGE_SIZE - 1)), unknown);
}

static void test_blocks(void **state)
{
	check_block(SFI_E_AN3155_FIRST, _AN3155_E_MAX, "unknown AN3155 error");
	check_block(SFI_E_OSFI_FIRST, _OSFI_E_MAX, "unknown OSFI error");
	check_block(SFI_E_HSM_FIRST, _HSM_ERR_MAX, "unknown HSM error");
	check_block(SFI_E_DFUSE_FIRST, _DFUSE_E_MAX, "unknown DfuSe error");
	/* The blocks follow each other and errno stays below the first. */
	assert_int_equal(SFI_E_OSFI_FIRST, SFI_E_AN3155_FIRST + SFI_E_RANGE_SIZE);
	assert_int_equal(SFI_E_HSM_FIRST, SFI_E_OSFI_FIRST + SFI_E_RANGE_SIZE);
	assert_int_equal(SFI_E_DFUSE_FIRST, SFI_E_HSM_FIRST + SFI_E_RANGE_SIZE);
	assert_true(EHWPOISON < SFI_E_AN3155_FIRST);
	/* The collision this space removes: an HSM code is no errno. */
	assert_int_not_equal(-HSM_ERR_NOMEM, -ENOENT);
	assert_int_not_equal(-HSM_ERR_INVALID, -EPERM);
}

static void test_sentences(void **state)
{
	assert_string_equal(sfi_strerror(0), "success");
	assert_string_equal(sfi_strerror(-ENOENT), strerror(ENOENT));
	assert_string_equal(sfi_strerror(-ENOMEM), strerror(ENOMEM));
	assert_string_equal(sfi_strerror(-AN3155_E_TIMEOUT), "no answer from the chip in time");
	assert_string_equal(sfi_strerror(-OSFI_E_NOT_OPEN), "the chip is not in product state Open");
	assert_string_equal(sfi_strerror(-HSM_ERR_COUNTER_EXHAUSTED),
			    "license counter exhausted; the OEM must provision more licenses");
	assert_string_equal(sfi_strerror(INT_MIN), "unknown error");
	assert_non_null(sfi_strerror(-4000));
	assert_non_null(sfi_strerror(INT_MAX));
}

static void test_reason(void **state)
{
	char reason[SFI_REASON_MAX] = "untouched", small[8];

	sfi_reason(NULL, 0, "%s", "ignored");
	sfi_reason(reason, 0, "%s", "ignored");
	assert_string_equal(reason, "untouched");
	sfi_reason(reason, sizeof(reason), "open %s: %s", "x.img", sfi_strerror(-ENOENT));
	assert_string_equal(reason, "open x.img: No such file or directory");
	sfi_reason(small, sizeof(small), "%s", "longer than eight");
	assert_string_equal(small, "longer ");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_blocks),
		cmocka_unit_test(test_sentences),
		cmocka_unit_test(test_reason),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

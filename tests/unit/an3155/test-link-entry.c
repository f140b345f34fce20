/* Entry sequence parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "link.h"

static void test_entry_valid(void **state)
{
	struct link_entry_step s[LINK_ENTRY_MAX_STEPS];
	size_t n = 0;

	assert_int_equal(link_entry_parse("rts=1,dtr=1, wait=20 ,dtr=0,wait=0", s,
					  LINK_ENTRY_MAX_STEPS, &n, NULL, 0), 0);
	assert_int_equal(n, 5);
	assert_int_equal(s[0].kind, LINK_ENTRY_RTS);
	assert_int_equal(s[0].value, 1);
	assert_int_equal(s[1].kind, LINK_ENTRY_DTR);
	assert_int_equal(s[1].value, 1);
	assert_int_equal(s[2].kind, LINK_ENTRY_WAIT);
	assert_int_equal(s[2].value, 20);
	assert_int_equal(s[3].kind, LINK_ENTRY_DTR);
	assert_int_equal(s[3].value, 0);
	assert_int_equal(s[4].kind, LINK_ENTRY_WAIT);
	assert_int_equal(s[4].value, 0);

	assert_int_equal(link_entry_parse("wait=10000", s, 1, &n, NULL, 0), 0);
	assert_int_equal(n, 1);
}

static void expect_error(const char *seq, size_t max, const char *word)
{
	struct link_entry_step s[LINK_ENTRY_MAX_STEPS];
	char err[128] = "";
	size_t n = 99;

	assert_int_equal(link_entry_parse(seq, s, max, &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(n, 99); /* untouched on failure */
	if (!strstr(err, word))
		fail_msg("'%s': error '%s' lacks '%s'", seq, err, word);
}

static void test_entry_errors(void **state)
{
	expect_error("", 8, "empty");
	expect_error("dtr=1,,rts=0", 8, "empty step");
	expect_error("dtr=1,", 8, "empty step");
	expect_error("boot0=1", 8, "is not dtr");
	expect_error("dtr", 8, "is not dtr");
	expect_error("dtr=2", 8, "0 or 1");
	expect_error("rts=-1", 8, "needs a number");
	expect_error("wait=", 8, "needs a number");
	expect_error("wait=10x", 8, "bad number");
	expect_error("wait=10001", 8, "10000");
	expect_error("wait=99999999999999999999999", 8, "bad number");
	expect_error("dtr=1,dtr=0,dtr=1", 2, "too many");
	expect_error("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1", 8,
		     "too long");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_entry_valid),
		cmocka_unit_test(test_entry_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

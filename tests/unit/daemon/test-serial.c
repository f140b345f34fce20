/* Per-chip serial numbers (daemon/sfid/serial.c): a counter's value in each format and where
 * it runs out; a list file's values (hex with or without separators, ascii padded with 0x00,
 * CR LF and a last line without its end), its series named by the file's SHA-256, the end of
 * the list; and each refusal with the line's number (blank, bad hex, another byte count,
 * over-long, not printable ASCII, a space at an end, the same value twice, empty), the
 * address checks shared with counters. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "serial.h"

#define AT 0x08100000

static const struct job_serial_range fw[] = { { 0x08000000, 4096 } };

static int set_list(struct job_serial *s, const char *text, int64_t width, const char *format,
		    char *why, size_t why_size)
{
	return job_serial_set_list(s, "list.txt", (const uint8_t *)text, strlen(text), AT, width,
				   format, fw, 1, why, why_size);
}

static void refused(const char *text, int64_t width, const char *format, const char *want)
{
	struct job_serial s = { 0 };
	char why[512] = "";

	assert_int_equal(set_list(&s, text, width, format, why, sizeof(why)), -EINVAL);
	if (!strstr(why, want))
		fail_msg("'%s': got '%s', want '%s'", text, why, want);
	assert_false(s.on);
	assert_null(s.list);
}

static void test_counter_formats(void **state)
{
	struct job_serial s;
	uint8_t v[JOB_SERIAL_WIDTH_MAX];
	char why[300];

	(void)state;
	assert_int_equal(job_serial_set(&s, "1000:7", AT, 4, "le", fw, 1, why, sizeof(why)), 0);
	assert_int_equal(job_serial_value(&s, 2, v), 0);
	assert_memory_equal(v, "\xf6\x03\x00\x00", 4);		/* 1014 */
	assert_int_equal(job_serial_set(&s, "0x1234", AT, 3, "be", fw, 1, why, sizeof(why)), 0);
	assert_int_equal(job_serial_value(&s, 0, v), 0);
	assert_memory_equal(v, "\x00\x12\x34", 3);
	assert_int_equal(job_serial_set(&s, "1234", AT, 2, "bcd", fw, 1, why, sizeof(why)), 0);
	assert_int_equal(job_serial_value(&s, 0, v), 0);
	assert_memory_equal(v, "\x12\x34", 2);
	assert_int_equal(job_serial_value(&s, 9000, v), -ENOSPC);	/* 10234: 5 digits */
	assert_int_equal(job_serial_set(&s, "42", AT, 10, "ascii:SN%08u", fw, 1, why,
					sizeof(why)), 0);
	assert_int_equal(job_serial_value(&s, 1, v), 0);
	assert_memory_equal(v, "SN00000043", 10);
	assert_int_equal(job_serial_set(&s, "254", AT, 1, NULL, fw, 1, why, sizeof(why)), 0);
	assert_int_equal(job_serial_value(&s, 1, v), 0);
	assert_int_equal(job_serial_value(&s, 2, v), -ENOSPC);
	assert_null(s.list);
}

static void test_list_hex(void **state)
{
	const char *text = "02:80:E1:00:00:01\r\n0280e1000002\n02-80-e1-00-00-03";
	uint8_t v[JOB_SERIAL_WIDTH_MAX], md[SHA256_DIGEST_LENGTH];
	struct job_serial s = { 0 };
	char why[300], want[160];

	(void)state;
	assert_int_equal(set_list(&s, text, 0, NULL, why, sizeof(why)), 0);
	assert_true(s.on);
	assert_non_null(s.list);
	assert_int_equal(s.list->n, 3);
	assert_int_equal(s.width, 6);
	for (int i = 0; i < 3; i++) {
		uint8_t w[6] = { 0x02, 0x80, 0xe1, 0x00, 0x00, (uint8_t)(i + 1) };

		assert_int_equal(job_serial_value(&s, i, v), 0);
		assert_memory_equal(v, w, 6);
	}
	assert_int_equal(job_serial_value(&s, 3, v), -ENOSPC);
	SHA256((const uint8_t *)text, strlen(text), md);
	snprintf(want, sizeof(want), "list sha256:");
	for (size_t i = 0; i < sizeof(md); i++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%02x", md[i]);
	snprintf(want + strlen(want), sizeof(want) - strlen(want), " hex width 6 at 0x08100000");
	assert_string_equal(s.series, want);
	assert_string_equal(s.list_path, "list.txt");
	/* The job and a request in flight share the list. */
	job_serial_list_ref(s.list);
	job_serial_list_unref(s.list);
	job_serial_list_unref(s.list);
}

static void test_list_ascii(void **state)
{
	struct job_serial s = { 0 };
	uint8_t v[JOB_SERIAL_WIDTH_MAX];
	char why[300];

	(void)state;
	assert_int_equal(set_list(&s, "AB\nKEY 1234\n", 0, "ascii", why, sizeof(why)), 0);
	assert_int_equal(s.width, 8);
	assert_int_equal(job_serial_value(&s, 0, v), 0);
	assert_memory_equal(v, "AB\0\0\0\0\0\0", 8);
	assert_int_equal(job_serial_value(&s, 1, v), 0);
	assert_memory_equal(v, "KEY 1234", 8);
	assert_non_null(strstr(s.series, " ascii width 8 at "));
	job_serial_list_unref(s.list);

	assert_int_equal(set_list(&s, "AB\n", 12, "ascii", why, sizeof(why)), 0);
	assert_int_equal(s.width, 12);
	job_serial_list_unref(s.list);
}

static void test_list_refused(void **state)
{
	(void)state;
	refused("", 0, NULL, "holds no value");
	refused("0102\n\n0304\n", 0, NULL, "line 2 of the serial list list.txt is blank");
	refused("0102\n0304\n\n", 0, NULL, "line 3 of the serial list list.txt is blank");
	refused("0102\n03x4\n", 0, NULL, "line 2 of the serial list list.txt is not hex bytes: "
		"'03x4' ('x' at column 3");
	refused("0102\n030\n", 0, NULL, "line 2 of the serial list list.txt is not hex bytes: "
		"'030' (an odd number of digits)");
	refused("01:02\n03::04\n", 0, NULL, "line 2 of the serial list list.txt is not hex "
		"bytes: '03::04' (a separator at an end or doubled)");
	refused("01:02:\n", 0, NULL, "line 1 of the serial list list.txt is not hex bytes");
	refused("0:102\n", 0, NULL, "an odd number of digits");
	refused("0102\n030405\n", 0, NULL, "line 2 of the serial list list.txt holds 3 bytes, "
		"the list's values are 2 (its first line's)");
	refused("0102\n", 4, NULL, "line 1 of the serial list list.txt holds 2 bytes, the "
		"list's values are 4 (--serial-width)");
	refused("0102\n0304\n01-02\n", 0, NULL, "lines 1 and 3 of the serial list list.txt hold "
		"the same value");
	refused(" 0102\n", 0, NULL, "line 1 of the serial list list.txt begins or ends with a "
		"space");
	refused("AB\nKEY\t\n", 0, "ascii", "line 2 of the serial list list.txt holds a character "
		"that is not printable ASCII (byte 0x09 at column 4)");
	refused("AB\nABCDE\n", 4, "ascii", "line 2 of the serial list list.txt is 5 characters, "
		"over the width of 4");
	refused("AB\nAB\n", 0, "ascii", "lines 1 and 2 of the serial list list.txt hold the "
		"same value");
	refused("0102\n", 0, "le", "the serial list's format 'le' is not hex or ascii");
	refused("0102\n", 65, NULL, "the serial width 65 is not 1 to 64 bytes");
}

static void test_list_address(void **state)
{
	struct job_serial s = { 0 };
	char why[300] = "";

	(void)state;
	assert_int_equal(job_serial_set_list(&s, "l", (const uint8_t *)"01\n", 3, 0x08000100, 0,
					     NULL, fw, 1, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "overlap the firmware"));
	assert_int_equal(job_serial_set_list(&s, "l", (const uint8_t *)"01\n", 3, 0x20000000, 0,
					     NULL, fw, 1, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "outside the STM32H5's flash"));
	assert_int_equal(job_serial_set_list(&s, "l", (const uint8_t *)"01\n", 3, 0x08100004, 0,
					     NULL, fw, 1, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "not on a 16-byte flash word"));
	assert_null(s.list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter_formats),
		cmocka_unit_test(test_list_hex),
		cmocka_unit_test(test_list_ascii),
		cmocka_unit_test(test_list_refused),
		cmocka_unit_test(test_list_address),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

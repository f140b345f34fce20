/* Option records, option CSV and module license information file: round trips and every
 * rejection, with the line named. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "osfi.h"

static int csv(const char *text, struct osfi_option *o, size_t *n, char *why)
{
	return osfi_options_parse_csv(text, strlen(text), o, OSFI_OPT_MAX, n, why, 200);
}

static void test_names(void **state)
{
	uint16_t reg;
	uint8_t ps;

	for (uint16_t r = 1; r <= OSFI_OPT_MAX; r++) {
		assert_non_null(osfi_option_name(r));
		assert_int_equal(osfi_option_from_name(osfi_option_name(r), &reg), 0);
		assert_int_equal(reg, r);
	}
	assert_null(osfi_option_name(0));
	assert_null(osfi_option_name(13));
	assert_int_equal(osfi_option_from_name("hdp2r_prg", &reg), 0);
	assert_int_equal(reg, 12);
	assert_int_equal(osfi_option_from_name("FOO", &reg), -ENOENT);

	assert_int_equal(osfi_product_state_parse("closed", &ps), 0);
	assert_int_equal(ps, 0x72);
	assert_int_equal(osfi_product_state_parse("iROT-Provisioned", &ps), 0);
	assert_int_equal(ps, 0x2e);
	assert_int_equal(osfi_product_state_parse("0x5c", &ps), 0);
	assert_string_equal(osfi_product_state_name(ps), "Locked");
	assert_int_equal(osfi_product_state_parse("0x5d", &ps), -ENOENT);
	assert_int_equal(osfi_product_state_parse("Shut", &ps), -ENOENT);
	assert_string_equal(osfi_product_state_name(0xed), "Open");
	assert_string_equal(osfi_product_state_name(0xc6), "TZ-Closed");
	assert_string_equal(osfi_product_state_name(0x17), "Provisioning");
	assert_null(osfi_product_state_name(0));
}

/* Numbers are decimal or 0x hexadecimal and nothing else. */
static void test_numbers(void **state)
{
	static const char *const bad[] = { "", "0x", "0x0x7", "0X0x7", " 7", "7 ", "+7", "-1",
					   "010", "7k", "0x1g", "4294967296", "0x100000000",
					   "18446744073709551617" };
	uint32_t v;

	assert_int_equal(osfi_number_parse("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(osfi_number_parse("4294967295", &v), 0);
	assert_int_equal(v, UINT32_MAX);
	assert_int_equal(osfi_number_parse("0xFFFFffff", &v), 0);
	assert_int_equal(v, UINT32_MAX);
	assert_int_equal(osfi_number_parse("0x08000000", &v), 0);
	assert_int_equal(v, 0x08000000);
	assert_int_equal(osfi_number_parse(NULL, &v), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (osfi_number_parse(bad[i], &v) != -EINVAL)
			fail_msg("'%s' accepted", bad[i]);
}

static void test_records(void **state)
{
	struct osfi_option o[2] = { { 1, 0x00007200 }, { 7, 0xff00ff00 } }, d[OSFI_OPT_MAX];
	uint8_t buf[96];
	size_t n;

	assert_int_equal(osfi_options_encode(o, 2, buf, sizeof(buf)), 16);
	assert_memory_equal(buf, "\x01\x00\x00\x00\x00\x72\x00\x00\x07\x00\x00\x00\x00\xff\x00\xff",
			    16);
	assert_int_equal(osfi_options_decode(buf, 16, d, OSFI_OPT_MAX, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(d[1].value, 0xff00ff00);
	assert_int_equal(osfi_options_decode(buf, 16, d, 1, &n), -ENOBUFS);
	assert_int_equal(osfi_options_decode(buf, 15, d, OSFI_OPT_MAX, &n), -EBADMSG);
	assert_int_equal(osfi_options_decode(buf, 0, d, OSFI_OPT_MAX, &n), -EBADMSG);
	assert_int_equal(osfi_options_decode(buf + 8, 8, d, OSFI_OPT_MAX, &n), -EBADMSG); /* no OPTSR */
	buf[2] = 1; /* reserved */
	assert_int_equal(osfi_options_decode(buf, 16, d, OSFI_OPT_MAX, &n), -EBADMSG);
	buf[2] = 0;
	buf[8] = 1; /* duplicate */
	assert_int_equal(osfi_options_decode(buf, 16, d, OSFI_OPT_MAX, &n), -EBADMSG);
	buf[8] = 13; /* unknown */
	assert_int_equal(osfi_options_decode(buf, 16, d, OSFI_OPT_MAX, &n), -EBADMSG);
	buf[8] = 7;
	buf[5] = 0x73; /* not a product state */
	assert_int_equal(osfi_options_decode(buf, 16, d, OSFI_OPT_MAX, &n), -EBADMSG);
	o[0].reg = 0;
	assert_int_equal(osfi_options_encode(o, 2, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(osfi_options_encode(o, 2, buf, 15), -ENOBUFS);
}

static void test_options_csv(void **state)
{
	struct osfi_option o[OSFI_OPT_MAX];
	char why[200];
	size_t n;

	assert_int_equal(csv("# vendor options\n\nWRP1R_PRG, 0xff\r\nOPTSR_PRG,0x123400CD\n"
			     "  PRODUCT_STATE , Closed # final\n", o, &n, why), 0);
	assert_int_equal(n, 2);
	assert_int_equal(o[0].reg, 1);
	assert_int_equal(o[0].value, 0x123472cd);
	assert_int_equal(o[1].reg, 7);
	assert_int_equal(o[1].value, 0xff);
	/* A record is the whole register: PRODUCT_STATE alone gives OPTSR_PRG = state << 8. */
	assert_int_equal(csv("PRODUCT_STATE, iROT-Provisioned", o, &n, why), 0);
	assert_int_equal(n, 1);
	assert_int_equal(o[0].value, 0x2e00);
	/* OPTSR_PRG may repeat the state in bits 15..8. */
	assert_int_equal(csv("OPTSR_PRG, 0x00f072f8\nPRODUCT_STATE, Closed", o, &n, why), 0);
	assert_int_equal(o[0].value, 0x00f072f8);

	struct {
		const char *text, *expect;
	} bad[] = {
		{ "WRP1R_PRG, 1\n", "no final product state" },
		{ "OPTSR_PRG, 0x00007200\n", "no final product state" },
		{ "OPTSR_PRG, 0x1200\nPRODUCT_STATE, Closed\n", "line 1: OPTSR_PRG bits 15..8 (0x12)" },
		{ "PRODUCT_STATE, 0x72\n", "line 1: product state '0x72': write it `Closed`" },
		{ "PRODUCT_STATE, OPEN\n", "line 1: product state 'OPEN': write it `Open`" },
		{ "PRODUCT_STATE, 0x99\n", "line 1: unknown product state" },
		{ "product_state, Open\n", "line 1: unknown register 'product_state'" },
		{ "wrp1r_prg, 1\nPRODUCT_STATE, Open\n", "line 1: unknown register" },
		{ "\nFOO_PRG, 1\n", "line 2: unknown register" },
		{ "PRODUCT_STATE, Shut\n", "line 1: unknown product state" },
		{ "PRODUCT_STATE, Open\nPRODUCT_STATE, Open\n", "line 2: PRODUCT_STATE already" },
		{ "OPTSR2_PRG, 1\nOPTSR2_PRG, 2\n", "line 2: OPTSR2_PRG already set on line 1" },
		{ "OPTSR2_PRG, 0x100000000\n", "line 1: value" },
		{ "OPTSR2_PRG, -1\n", "line 1: value" },
		{ "OPTSR2_PRG, 12abc\n", "line 1: value" },
		{ "OPTSR2_PRG\n", "line 1: expected" },
		{ "OPTSR2_PRG, 1, 2\n", "line 1: expected" },
		{ ", 1\n", "line 1: expected" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = 0;
		assert_int_equal(csv(bad[i].text, o, &n, why), -EINVAL);
		if (!strstr(why, bad[i].expect))
			fail_msg("'%s': got '%s'", bad[i].text, why);
	}
	/* NUL inside the text. */
	assert_int_equal(osfi_options_parse_csv("A\0B", 3, o, OSFI_OPT_MAX, &n, why, sizeof(why)),
			 -EINVAL);
	{
		char *big = malloc(10000);

		memset(big, 'A', 9999);
		big[9999] = 0;
		assert_int_equal(csv(big, o, &n, why), -EINVAL);
		assert_non_null(strstr(why, "too long"));
		free(big);
	}
}

static void test_modules(void **state)
{
	struct osfi_module_entry *e;
	uint8_t fid[32];
	char text[512], hexid[65], why[200];
	size_t n;

	osfi_module_firmware_id(9, fid);
	for (int i = 0; i < 32; i++)
		sprintf(hexid + 2 * i, "%02x", fid[i]);
	snprintf(text, sizeof(text),
		 "# module id, license, destination address\n"
		 "7, modules/crypto-global.lic, 0x08100000\n\n"
		 "0x9 , hsm:%s ,0x08140000 # second\n", hexid);
	assert_int_equal(osfi_modules_parse(text, strlen(text), &e, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(e[0].module_id, 7);
	assert_false(e[0].hsm);
	assert_string_equal(e[0].license, "modules/crypto-global.lic");
	assert_int_equal(e[0].address, 0x08100000);
	assert_int_equal(e[0].line, 2);
	assert_int_equal(e[1].module_id, 9);
	assert_true(e[1].hsm);
	assert_memory_equal(e[1].firmware_id, fid, 32);
	assert_int_equal(e[1].line, 4);
	free(e);

	assert_int_equal(osfi_modules_parse("# nothing\n", 10, &e, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 0);
	free(e);

	struct {
		const char *text, *expect;
	} bad[] = {
		{ "0, a.lic, 0x08100000\n", "line 1: module id" },
		{ "x, a.lic, 0x08100000\n", "line 1: module id" },
		{ "7, a.lic\n", "line 1: expected" },
		{ "7, a.lic, 0x08100000, 4\n", "line 1: expected" },
		{ "7, , 0x08100000\n", "line 1: expected" },
		{ "7, a.lic, 0x08100000\n7, b.lic, 0x08100000\n", "line 2: module 7 already listed on line 1" },
		{ "7, hsm:1234, 0x08100000\n", "line 1: `hsm:`" },
		{ "7, hsm:" "0000000000000000000000000000000000000000000000000000000000000000"
		  ", 0x08100000\n", "line 1: firmware id is not the one of module 7" },
		{ "7, a.lic, 0x20000000\n", "line 1: destination" },
		{ "7, a.lic, 0x08100008\n", "line 1: destination" },
		{ "7, a.lic, zz\n", "line 1: destination address" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = 0;
		assert_int_equal(osfi_modules_parse(bad[i].text, strlen(bad[i].text), &e, &n, why,
						    sizeof(why)), -EINVAL);
		if (!strstr(why, bad[i].expect))
			fail_msg("'%s': got '%s'", bad[i].text, why);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_options_csv),
		cmocka_unit_test(test_modules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

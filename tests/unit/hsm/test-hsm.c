/* Unit tests of hsm/ parts that need no token: error table, CK_RV mapping, label fields,
 * PIN files, PEM export, argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "hsm-internal.h"
#include "hsm.h"

static void test_error_table(void **state)
{
	for (int e = 0; e < _HSM_ERR_MAX; e++) {
		const char *s = hsm_error_to_string(-e);

		assert_non_null(s);
		assert_true(strlen(s) > 5);
		assert_string_not_equal(s, "unknown HSM error");
	}
	assert_string_equal(hsm_error_to_string(-_HSM_ERR_MAX), "unknown HSM error");
	assert_string_equal(hsm_error_to_string(3), "unknown HSM error");
	assert_string_equal(hsm_error_to_string(-HSM_ERR_COUNTER_EXHAUSTED),
			    "license counter exhausted; the OEM must provision more licenses");
}

static void test_rv_mapping(void **state)
{
	assert_int_equal(hsm_rv_to_error(CKR_OK, true), 0);
	assert_int_equal(hsm_rv_to_error(CKR_PIN_INCORRECT, true), -HSM_ERR_PIN_INCORRECT);
	assert_int_equal(hsm_rv_to_error(CKR_PIN_LEN_RANGE, true), -HSM_ERR_PIN_INCORRECT);
	assert_int_equal(hsm_rv_to_error(CKR_PIN_LOCKED, true), -HSM_ERR_PIN_LOCKED);
	assert_int_equal(hsm_rv_to_error(CKR_DEVICE_REMOVED, true), -HSM_ERR_TOKEN_REMOVED);
	assert_int_equal(hsm_rv_to_error(CKR_SESSION_HANDLE_INVALID, true), -HSM_ERR_TOKEN_REMOVED);
	assert_int_equal(hsm_rv_to_error(CKR_TOKEN_NOT_PRESENT, false), -HSM_ERR_NO_TOKEN);
	assert_int_equal(hsm_rv_to_error(CKR_MECHANISM_INVALID, true), -HSM_ERR_MECHANISM);
	assert_int_equal(hsm_rv_to_error(CKR_OBJECT_HANDLE_INVALID, true), -HSM_ERR_OBJECT_MISSING);
	assert_int_equal(hsm_rv_to_error(CKR_USER_NOT_LOGGED_IN, true), -HSM_ERR_NOT_LOGGED_IN);
	assert_int_equal(hsm_rv_to_error(CKR_HOST_MEMORY, true), -HSM_ERR_NOMEM);
	assert_int_equal(hsm_rv_to_error(CKR_GENERAL_ERROR, true), -HSM_ERR_DEVICE);
}

static void test_strip_field(void **state)
{
	const unsigned char label[32] = "osfi-line-3                     ";
	const unsigned char nul[16] = { 'a', 'b', ' ', 'c', 0, 0, 0 };
	const unsigned char blank[8] = "        ";
	char out[33], small[4];

	hsm_strip_field(label, sizeof(label), out, sizeof(out));
	assert_string_equal(out, "osfi-line-3");
	hsm_strip_field(nul, sizeof(nul), out, sizeof(out));
	assert_string_equal(out, "ab c");
	hsm_strip_field(blank, sizeof(blank), out, sizeof(out));
	assert_string_equal(out, "");
	hsm_strip_field(label, sizeof(label), small, sizeof(small));
	assert_string_equal(small, "osf");
}

static char *write_tmp(const char *content, size_t len, mode_t mode)
{
	char *path = strdup("/tmp/sfid-hsm-pin-XXXXXX");
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	close(fd);
	chmod(path, mode);
	return path;
}

static void test_pin_file(void **state)
{
	char pin[64], *p;
	size_t len = 0;

	p = write_tmp("123456\n", 7, 0600);
	assert_int_equal(hsm_pin_read_file(p, pin, sizeof(pin), &len), 0);
	assert_int_equal(len, 6);
	assert_string_equal(pin, "123456");
	assert_int_equal(pin[7], 0); /* the newline and beyond are wiped */
	unlink(p);
	free(p);

	p = write_tmp("abc\r\nsecond line", 16, 0400);
	assert_int_equal(hsm_pin_read_file(p, pin, sizeof(pin), &len), 0);
	assert_int_equal(len, 3);
	assert_string_equal(pin, "abc");
	unlink(p);
	free(p);

	p = write_tmp("nolf", 4, 0640);
	assert_int_equal(hsm_pin_read_file(p, pin, sizeof(pin), &len), 0);
	assert_string_equal(pin, "nolf");
	unlink(p);
	free(p);

	/* Others may read it: refused. */
	p = write_tmp("123456\n", 7, 0644);
	assert_int_equal(hsm_pin_read_file(p, pin, sizeof(pin), &len), -HSM_ERR_PIN_SOURCE);
	unlink(p);
	free(p);

	/* Others may write it: refused. */
	p = write_tmp("123456\n", 7, 0602);
	assert_int_equal(hsm_pin_read_file(p, pin, sizeof(pin), &len), -HSM_ERR_PIN_SOURCE);
	unlink(p);
	free(p);

	p = write_tmp("\n", 1, 0600);
	assert_int_equal(hsm_pin_read_file(p, pin, sizeof(pin), &len), -HSM_ERR_PIN_SOURCE);
	unlink(p);
	free(p);

	/* Longer than the buffer: cut, never overflowed. */
	{
		char big[200];

		memset(big, '7', sizeof(big));
		p = write_tmp(big, sizeof(big), 0600);
		assert_int_equal(hsm_pin_read_file(p, pin, sizeof(pin), &len), 0);
		assert_int_equal(len, sizeof(pin) - 1);
		unlink(p);
		free(p);
	}

	assert_int_equal(hsm_pin_read_file("/nonexistent/pin", pin, sizeof(pin), &len),
			 -HSM_ERR_PIN_SOURCE);
	assert_int_equal(hsm_pin_read_file("/tmp", pin, sizeof(pin), &len), -HSM_ERR_PIN_SOURCE);
}

static void test_point_to_pem(void **state)
{
	EVP_PKEY *k = EVP_EC_gen("prime256v1"), *back;
	uint8_t point[OSFI_PUBKEY_LEN], point2[OSFI_PUBKEY_LEN], bad[OSFI_PUBKEY_LEN] = { 4 };
	size_t n = 0;
	char *pem = NULL;
	BIO *bio;

	assert_non_null(k);
	assert_true(EVP_PKEY_get_octet_string_param(k, "pub", point, sizeof(point), &n));
	assert_int_equal(hsm_point_to_pem(point, &pem), 0);
	assert_non_null(strstr(pem, "-----BEGIN PUBLIC KEY-----"));
	bio = BIO_new_mem_buf(pem, -1);
	back = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	assert_non_null(back);
	assert_true(EVP_PKEY_get_octet_string_param(back, "pub", point2, sizeof(point2), &n));
	assert_memory_equal(point, point2, sizeof(point));
	assert_true(hsm_point_to_pem(bad, &pem) < 0 || (free(pem), 0));
	EVP_PKEY_free(back);
	EVP_PKEY_free(k);
	BIO_free(bio);
	free(pem);
}

static void test_open_args(void **state)
{
	struct hsm *h = (struct hsm *)0x1;
	char pin[] = "1234";

	assert_int_equal(hsm_open(NULL, "x", NULL, &h), -HSM_ERR_INVALID);
	assert_int_equal(hsm_open("/x.so", NULL, NULL, &h), -HSM_ERR_INVALID);
	assert_int_equal(hsm_open("/nonexistent/module.so", "x", NULL, &h), -HSM_ERR_MODULE);
	assert_ptr_equal(h, (struct hsm *)0x1); /* untouched on failure */
	assert_null(hsm_close(NULL));
	assert_int_equal(hsm_login_pin(NULL, pin, 4), -HSM_ERR_INVALID);
	assert_string_equal(pin, ""); /* wiped even when refused */
	assert_int_equal(hsm_last_rv(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_table),  cmocka_unit_test(test_rv_mapping),
		cmocka_unit_test(test_strip_field),  cmocka_unit_test(test_pin_file),
		cmocka_unit_test(test_point_to_pem), cmocka_unit_test(test_open_args),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The host session engine against scripted chip answers: the whole install, the certificate
 * session, every failing status, the checks of GET_INFO and the link errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "osfi.h"
#include "an3155-wire.h"

static uint8_t *image;
static size_t image_len;
static uint8_t lic_image[OSFI_LICENSE_LEN], lic_mod[OSFI_LICENSE_LEN];
/* Installed image id the scripted chip reports after FINALIZE (zero: none). */
static uint8_t final_installed[OSFI_ID_LEN];
static const uint8_t uid[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };

static int setup(void **state)
{
	static uint8_t fw[5000], key[16] = { 7 }, mkey[16] = { 8 };
	static const uint8_t opts[8] = { 1, 0, 0, 0, 0, 0x72, 0, 0 };
	struct osfi_area_spec a[] = {
		{ .type = 'F', .address = 0x08000000, .data = fw, .size = sizeof(fw) },
		{ .type = 'M', .address = 0x08100000, .module_id = 5, .data = fw, .size = 32,
		  .key = mkey },
		{ .type = 'C', .data = opts, .size = 8 },
	};
	struct osfi_image_spec spec = { .device_id = 0x484, .key = key, .max_area = 2048,
					.areas = a, .n_areas = 3 };
	struct osfi_license l = { .kind = OSFI_LICENSE_KIND_GLOBAL, .device_id = 0x484 };
	uint8_t g[32] = { 3 };

	assert_int_equal(osfi_image_build(&spec, &image, &image_len), 0);
	osfi_image_id(image, l.id);
	assert_int_equal(osfi_license_seal_global(&l, g, key), 0);
	osfi_license_encode(&l, lic_image);
	l.target = 5;
	osfi_module_firmware_id(5, l.id);
	assert_int_equal(osfi_license_seal_global(&l, g, mkey), 0);
	osfi_license_encode(&l, lic_mod);
	return 0;
}

static int teardown(void **state)
{
	free(image);
	return 0;
}

static void info(uint8_t out[OSFI_INFO_LEN], uint8_t ps, uint8_t session, uint32_t ram)
{
	struct osfi_info i = { .product_state = ps, .osfi_version = 1, .session_state = session,
			       .ram_buffer = ram, .device_id = 0x484 };

	memcpy(i.uid, uid, 12);
	osfi_info_encode(&i, out);
}

static struct osfi_session *new_install(void)
{
	struct osfi_session *s;

	assert_int_equal(osfi_session_new_install(image, image_len, &s, NULL, 0), 0);
	assert_int_equal(osfi_session_add_license(s, lic_mod, sizeof(lic_mod)), 0);
	assert_int_equal(osfi_session_add_license(s, lic_image, sizeof(lic_image)), 0);
	return s;
}

/* Runs a session against a scripted chip that answers OK everywhere except fail_subop
 * (status fail_status, at its fail_nth occurrence). Returns the number of requests. */
static unsigned drive(struct osfi_session *s, uint16_t fail_subop, uint16_t fail_status,
		      uint8_t final_ps)
{
	struct osfi_request req;
	enum osfi_next n;
	unsigned count = 0, infos = 0;
	uint64_t expect_off = OSFI_HEADER_LEN, done, total;
	bool reset = false;

	while ((n = osfi_session_next(s, &req)) == OSFI_NEXT_REQUEST || n == OSFI_NEXT_RECONNECT) {
		uint8_t ans[OSFI_INFO_LEN];
		uint16_t st = OSFI_ST_OK;
		size_t alen = 0;

		if (n == OSFI_NEXT_RECONNECT) {
			reset = true;
			osfi_session_reconnected(s);
			continue;
		}
		count++;
		assert_true(count < 10000);
		switch (req.subop) {
		case OSFI_OP_GET_INFO:
			assert_null(req.p2);
			assert_int_equal(req.answer_max, OSFI_INFO_LEN);
			info(ans, reset ? final_ps : 0xed, reset ? OSFI_SESSION_FINALIZED : 0, 4096);
			if (reset)
				memcpy(ans + 32, final_installed, OSFI_ID_LEN);
			alen = OSFI_INFO_LEN;
			infos++;
			break;
		case OSFI_OP_PUT_LICENSE: {
			uint32_t target;

			assert_non_null(req.p2);
			assert_int_equal(osfi_p1_decode(req.p1, req.n1, &target), 0);
			assert_int_equal(req.n2, OSFI_LICENSE_LEN);
			/* Image license first, then the module's. */
			assert_memory_equal(req.p2, target ? lic_mod : lic_image, OSFI_LICENSE_LEN);
			break;
		}
		case OSFI_OP_PUT_HEADER:
			assert_int_equal(req.n1, 64);
			assert_memory_equal(req.p1, image, 64);
			break;
		case OSFI_OP_PUT_DATA: {
			uint32_t off;

			assert_int_equal(osfi_p1_decode(req.p1, req.n1, &off), 0);
			assert_int_equal(off, expect_off);
			assert_true(req.n2 >= 1 && req.n2 <= 1024);
			assert_memory_equal(req.p2, image + off, req.n2);
			expect_off += req.n2;
			osfi_session_progress(s, &done, &total);
			assert_int_equal(done, off - 64);
			assert_int_equal(total, image_len - 64);
			break;
		}
		case OSFI_OP_FINALIZE:
			assert_int_equal(expect_off, image_len);
			break;
		default:
			fail_msg("unexpected sub-opcode %04x", req.subop);
		}
		if (req.subop == fail_subop) {
			st = fail_status;
			alen = 0;
		}
		osfi_session_answer(s, st, alen ? ans : NULL, alen);
	}
	return count;
}

static void test_install_ok(void **state)
{
	struct osfi_session *s = new_install();
	uint64_t done, total;
	unsigned n;
	char buf[200];

	osfi_session_expect_state(s, 0x72);
	n = drive(s, 0, 0, 0x72);
	assert_int_equal(osfi_session_result(s), 0);
	assert_int_equal(osfi_session_step(s), OSFI_STEP_DONE);
	osfi_session_progress(s, &done, &total);
	assert_int_equal(done, total);
	/* info, 2 licenses, header, data chunks, finalize, info */
	assert_int_equal(n, 1 + 2 + 1 + (total + 1023) / 1024 + 1 + 1);
	assert_int_equal(osfi_session_info(s)->product_state, 0x72);
	osfi_session_describe(s, buf, sizeof(buf));
	assert_string_equal(buf, "done");
	osfi_session_free(s);
}

static void test_every_status(void **state)
{
	const uint16_t ops[] = { OSFI_OP_PUT_LICENSE, OSFI_OP_PUT_HEADER, OSFI_OP_PUT_DATA,
				 OSFI_OP_FINALIZE, OSFI_OP_GET_INFO };

	for (uint16_t st = 1; st < _OSFI_ST_MAX + 2; st++)
		for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
			struct osfi_session *s = new_install();
			char buf[300];

			drive(s, ops[k], st, 0x72);
			assert_int_equal(osfi_session_result(s), -OSFI_E_STATUS);
			assert_int_equal(osfi_session_status(s), st);
			assert_int_equal(osfi_session_step(s), OSFI_STEP_FAILED);
			osfi_session_describe(s, buf, sizeof(buf));
			assert_non_null(strstr(buf, osfi_subop_name(ops[k])));
			assert_non_null(strstr(buf, osfi_status_name(st)));
			assert_non_null(strstr(buf, osfi_status_message(st)));
			/* A failed session stays failed. */
			assert_int_equal(osfi_session_next(s, NULL), OSFI_NEXT_FAILED);
			assert_int_equal(osfi_session_answer(s, 0, NULL, 0), -OSFI_E_STATUS);
			osfi_session_free(s);
		}
}

static int run_first_info(struct osfi_session *s, uint8_t ps, uint8_t session, uint32_t ram)
{
	struct osfi_request req;
	uint8_t ans[OSFI_INFO_LEN];

	assert_int_equal(osfi_session_next(s, &req), OSFI_NEXT_REQUEST);
	assert_int_equal(req.subop, OSFI_OP_GET_INFO);
	info(ans, ps, session, ram);
	return osfi_session_answer(s, OSFI_ST_OK, ans, OSFI_INFO_LEN);
}

static void test_info_checks(void **state)
{
	struct osfi_session *s;
	struct osfi_request req;
	uint8_t ans[OSFI_INFO_LEN];
	char buf[200];

	s = new_install();
	assert_int_equal(run_first_info(s, 0x72, 0, 4096), -OSFI_E_NOT_OPEN);
	osfi_session_describe(s, buf, sizeof(buf));
	assert_non_null(strstr(buf, "Closed"));
	osfi_session_free(s);

	s = new_install();
	assert_int_equal(run_first_info(s, 0xed, 0, 1024), -OSFI_E_RAM_BUFFER);
	osfi_session_describe(s, buf, sizeof(buf));
	assert_non_null(strstr(buf, "2048"));
	assert_non_null(strstr(buf, "--ram-buffer 1024"));
	osfi_session_free(s);

	/* A failed previous session is fine. */
	s = new_install();
	assert_int_equal(run_first_info(s, 0xed, OSFI_SESSION_FAILED, 4096), 0);
	assert_int_equal(osfi_session_step(s), OSFI_STEP_PUT_LICENSE);
	osfi_session_free(s);

	/* A session in progress: ABORT, look again; still busy -> BUSY. */
	s = new_install();
	assert_int_equal(run_first_info(s, 0xed, OSFI_SESSION_STREAMING, 4096), 0);
	assert_int_equal(osfi_session_next(s, &req), OSFI_NEXT_REQUEST);
	assert_int_equal(req.subop, OSFI_OP_ABORT);
	assert_int_equal(osfi_session_answer(s, OSFI_ST_OK, NULL, 0), 0);
	assert_int_equal(run_first_info(s, 0xed, OSFI_SESSION_LICENSED, 4096), -OSFI_E_BUSY);
	osfi_session_free(s);
	s = new_install();
	assert_int_equal(run_first_info(s, 0xed, OSFI_SESSION_COMPLETE, 4096), 0);
	assert_int_equal(osfi_session_next(s, &req), OSFI_NEXT_REQUEST);
	assert_int_equal(osfi_session_answer(s, OSFI_ST_OK, NULL, 0), 0);
	assert_int_equal(run_first_info(s, 0xed, OSFI_SESSION_IDLE, 4096), 0);
	assert_int_equal(osfi_session_step(s), OSFI_STEP_PUT_LICENSE);
	osfi_session_free(s);

	/* Short answer. */
	s = new_install();
	assert_int_equal(osfi_session_next(s, &req), OSFI_NEXT_REQUEST);
	info(ans, 0xed, 0, 4096);
	assert_int_equal(osfi_session_answer(s, OSFI_ST_OK, ans, 31), -OSFI_E_ANSWER);
	osfi_session_free(s);

	/* No image license. */
	assert_int_equal(osfi_session_new_install(image, image_len, &s, NULL, 0), 0);
	assert_int_equal(osfi_session_add_license(s, lic_mod, sizeof(lic_mod)), 0);
	assert_int_equal(osfi_session_add_license(s, lic_mod, sizeof(lic_mod)), -EEXIST);
	assert_int_equal(osfi_session_add_license(s, lic_mod, 10), -EBADMSG);
	assert_int_equal(run_first_info(s, 0xed, 0, 4096), -ENOKEY);
	osfi_session_free(s);
}

static void test_final_checks(void **state)
{
	struct osfi_session *s = new_install();
	char buf[200];

	osfi_session_expect_state(s, 0x72);
	drive(s, 0, 0, 0x5c);
	assert_int_equal(osfi_session_result(s), -OSFI_E_FINAL_STATE);
	osfi_session_describe(s, buf, sizeof(buf));
	assert_non_null(strstr(buf, "Locked"));
	assert_non_null(strstr(buf, "Closed"));
	osfi_session_free(s);

	/* A chip that reports the installed image id must name this image. */
	s = new_install();
	osfi_image_id(image, final_installed);
	drive(s, 0, 0, 0x72);
	assert_int_equal(osfi_session_result(s), 0);
	assert_true(osfi_info_installed_is(osfi_session_info(s), final_installed));
	osfi_session_free(s);
	s = new_install();
	final_installed[5] ^= 1;
	drive(s, 0, 0, 0x72);
	assert_int_equal(osfi_session_result(s), -OSFI_E_NOT_FINALIZED);
	osfi_session_free(s);
	memset(final_installed, 0, sizeof(final_installed));

	/* Without an expectation, any state is reported as is. */
	s = new_install();
	drive(s, 0, 0, 0x5c);
	assert_int_equal(osfi_session_result(s), 0);
	assert_int_equal(osfi_session_info(s)->product_state, 0x5c);
	osfi_session_free(s);
}

static void test_link_error_and_bad_image(void **state)
{
	struct osfi_session *s = new_install();
	struct osfi_request req;
	char why[100], buf[200];

	assert_int_equal(osfi_session_next(s, &req), OSFI_NEXT_REQUEST);
	osfi_session_link_error(s, -1001);
	assert_int_equal(osfi_session_result(s), -OSFI_E_LINK);
	assert_int_equal(osfi_session_link_errno(s), -1001);
	osfi_session_describe(s, buf, sizeof(buf));
	assert_non_null(strstr(buf, "GET_INFO"));
	osfi_session_free(s);

	image[0] ^= 1;
	assert_int_equal(osfi_session_new_install(image, image_len, &s, why, sizeof(why)),
			 -EBADMSG);
	image[0] ^= 1;
	assert_non_null(strstr(why, "header"));
}

static void test_cert_session(void **state)
{
	struct osfi_session *s;
	struct osfi_request req;
	struct osfi_cert c = { .version = 1, .device_id = 0x484 };
	uint8_t ans[OSFI_INFO_LEN], cert[OSFI_CERT_LEN];

	c.pubkey[0] = 4;
	memcpy(c.uid, uid, 12);
	osfi_cert_encode(&c, cert);

	assert_int_equal(osfi_session_new_cert(&s), 0);
	assert_int_equal(osfi_session_add_license(s, lic_image, sizeof(lic_image)), -EINVAL);
	assert_int_equal(run_first_info(s, 0x72, 4, 0), 0); /* any state may show its cert */
	assert_int_equal(osfi_session_next(s, &req), OSFI_NEXT_REQUEST);
	assert_int_equal(req.subop, OSFI_OP_GET_CERT);
	assert_int_equal(req.answer_max, OSFI_CERT_LEN);
	assert_null(osfi_session_cert(s));
	assert_int_equal(osfi_session_answer(s, OSFI_ST_OK, cert, sizeof(cert)), 0);
	assert_int_equal(osfi_session_next(s, &req), OSFI_NEXT_DONE);
	assert_memory_equal(osfi_session_cert(s)->uid, uid, 12);
	osfi_session_free(s);

	/* A certificate of another chip. */
	assert_int_equal(osfi_session_new_cert(&s), 0);
	assert_int_equal(run_first_info(s, 0xed, 0, 0), 0);
	osfi_session_next(s, &req);
	cert[OSFI_CERT_OFF_UID] ^= 1;
	assert_int_equal(osfi_session_answer(s, OSFI_ST_OK, cert, sizeof(cert)), -OSFI_E_CERT_UID);
	osfi_session_free(s);
	(void)ans;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_install_ok),
		cmocka_unit_test(test_every_status),
		cmocka_unit_test(test_info_checks),
		cmocka_unit_test(test_final_checks),
		cmocka_unit_test(test_link_error_and_bad_image),
		cmocka_unit_test(test_cert_session),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}

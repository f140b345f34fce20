/* The AN3155 retry policy (an3155_retry_allowed): which failures are retried, and which
 * commands are sent again once their request reached the chip whole. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "an3155.h"
#include "osfi-wire.h"

static struct an3155_xfer xfer(uint8_t op, uint16_t subop, bool committed)
{
	static const struct an3155_timeouts t = { 1000, 1000, 1000, 1000, 1000 };
	static uint8_t buf[1024];
	struct an3155_xfer x;

	switch (op) {
	case AN3155_CMD_SPECIAL:
		assert_int_equal(an3155_xfer_special(&x, &t, subop, NULL, 0, buf, sizeof(buf)), 0);
		break;
	case AN3155_CMD_EXTENDED_SPECIAL:
		assert_int_equal(an3155_xfer_xspecial(&x, &t, subop, buf, 4, buf, 16), 0);
		break;
	case AN3155_CMD_WRITE_MEMORY:
		assert_int_equal(an3155_xfer_write_memory(&x, &t, 0x08000000, buf, 16), 0);
		break;
	case AN3155_CMD_EXTENDED_ERASE:
		assert_int_equal(an3155_xfer_erase_special(&x, &t, AN3155_ERASE_MASS), 0);
		break;
	case AN3155_CMD_GO:
		an3155_xfer_go(&x, &t, 0x08000000);
		break;
	case AN3155_CMD_GET:
		an3155_xfer_get(&x, &t);
		break;
	case AN3155_SYNC:
		an3155_xfer_sync(&x, &t);
		break;
	default:
		fail();
	}
	x.committed = committed;
	return x;
}

static void test_errors(void **state)
{
	struct an3155_xfer x = xfer(AN3155_CMD_GET, 0, false);

	(void)state;
	assert_true(an3155_retry_allowed(&x, -AN3155_E_TIMEOUT, 0, 2));
	assert_true(an3155_retry_allowed(&x, -AN3155_E_UNEXPECTED, 0, 2));
	assert_true(an3155_retry_allowed(&x, -AN3155_E_TOO_LONG, 0, 2));
	assert_true(an3155_retry_allowed(&x, -AN3155_E_CHECKSUM, 0, 2));
	/* A vanished port is final. */
	assert_false(an3155_retry_allowed(&x, -AN3155_E_PORT_GONE, 0, 2));
	assert_false(an3155_retry_allowed(&x, -EIO, 0, 2));
	/* Get is never refused: its NACK is a stale byte, the line out of step. */
	assert_true(an3155_retry_allowed(&x, -AN3155_E_NACK, 0, 2));
	assert_false(an3155_retry_allowed(&x, -AN3155_E_NACK, 2, 2));
	/* Any other command's NACK is the chip's word. */
	x = xfer(AN3155_CMD_WRITE_MEMORY, 0, false);
	assert_false(an3155_retry_allowed(&x, -AN3155_E_NACK, 0, 2));
	x = xfer(AN3155_CMD_SPECIAL, OSFI_OP_GET_INFO, false);
	assert_false(an3155_retry_allowed(&x, -AN3155_E_NACK, 0, 2));
	x = xfer(AN3155_CMD_GET, 0, false);
	/* Bounded. */
	assert_true(an3155_retry_allowed(&x, -AN3155_E_TIMEOUT, 1, 2));
	assert_false(an3155_retry_allowed(&x, -AN3155_E_TIMEOUT, 2, 2));
	assert_false(an3155_retry_allowed(&x, -AN3155_E_TIMEOUT, 0, 0));
	/* A sync is offered again by its own driver, never retried here. */
	x = xfer(AN3155_SYNC, 0, false);
	assert_false(an3155_retry_allowed(&x, -AN3155_E_TIMEOUT, 0, 2));
}

static void test_committed(void **state)
{
	static const struct {
		uint8_t op;
		uint16_t subop;
		bool safe;
	} cases[] = {
		{ AN3155_CMD_GET, 0, true },
		{ AN3155_CMD_EXTENDED_ERASE, 0, true },
		{ AN3155_CMD_WRITE_MEMORY, 0, false },
		{ AN3155_CMD_GO, 0, false },
		{ AN3155_CMD_SPECIAL, OSFI_OP_GET_INFO, true },
		{ AN3155_CMD_SPECIAL, OSFI_OP_GET_CERT, true },
		{ AN3155_CMD_SPECIAL, OSFI_OP_PUT_HEADER, false },
		{ AN3155_CMD_SPECIAL, OSFI_OP_FINALIZE, false },
		{ AN3155_CMD_SPECIAL, OSFI_OP_ABORT, false },
		{ AN3155_CMD_EXTENDED_SPECIAL, OSFI_OP_PUT_LICENSE, false },
		{ AN3155_CMD_EXTENDED_SPECIAL, OSFI_OP_PUT_DATA, true },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct an3155_xfer x = xfer(cases[i].op, cases[i].subop, false);

		/* Not sent whole: always retried. */
		assert_true(an3155_retry_allowed(&x, -AN3155_E_TIMEOUT, 0, 2));
		x = xfer(cases[i].op, cases[i].subop, true);
		if (an3155_retry_allowed(&x, -AN3155_E_TIMEOUT, 0, 2) != cases[i].safe)
			fail_msg("case %zu: op 0x%02x subop 0x%04x", i, cases[i].op, cases[i].subop);
		assert_int_equal(an3155_repeat_safe(cases[i].op, cases[i].subop), cases[i].safe);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_committed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

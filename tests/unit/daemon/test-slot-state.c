/* Slot state machine: names, the allowed transitions of a chip's life, and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "slot-state.h"

static void test_names(void **state)
{
	for (int s = 0; s < _SLOT_STATE_MAX; s++) {
		assert_string_not_equal(slot_state_to_string(s), "invalid");
		for (int t = 0; t < s; t++)
			assert_string_not_equal(slot_state_to_string(s), slot_state_to_string(t));
	}
	assert_string_equal(slot_state_to_string(_SLOT_STATE_MAX), "invalid");
}

static void test_happy_path(void **state)
{
	static const enum slot_state path[] = {
		SLOT_STATE_IDLE, SLOT_STATE_WAIT_CHIP, SLOT_STATE_IDENTIFYING,
		SLOT_STATE_CERTIFICATE, SLOT_STATE_LICENSE, SLOT_STATE_INSTALLING,
		SLOT_STATE_FINALIZING, SLOT_STATE_VERIFYING, SLOT_STATE_DONE,
		SLOT_STATE_WAIT_REMOVAL, SLOT_STATE_WAIT_CHIP,
	};

	for (size_t i = 1; i < sizeof(path) / sizeof(path[0]); i++)
		assert_true(slot_state_transition_allowed(path[i - 1], path[i]));
}

static void test_failures(void **state)
{
	/* Every busy state may fail; nothing else may. */
	for (int s = 0; s < _SLOT_STATE_MAX; s++)
		assert_int_equal(slot_state_transition_allowed(s, SLOT_STATE_FAILED),
				 slot_state_busy(s));
	assert_true(slot_state_transition_allowed(SLOT_STATE_FAILED, SLOT_STATE_WAIT_REMOVAL));
	/* A stop or an unplugged adapter may come at any time. */
	for (int s = 0; s < _SLOT_STATE_MAX; s++) {
		assert_int_equal(slot_state_transition_allowed(s, SLOT_STATE_IDLE), s != SLOT_STATE_IDLE);
		assert_int_equal(slot_state_transition_allowed(s, SLOT_STATE_NO_PORT),
				 s != SLOT_STATE_NO_PORT);
	}
}

static void test_refused(void **state)
{
	/* No skipping the license, no install without identification, no success twice. */
	assert_false(slot_state_transition_allowed(SLOT_STATE_CERTIFICATE, SLOT_STATE_INSTALLING));
	assert_false(slot_state_transition_allowed(SLOT_STATE_WAIT_CHIP, SLOT_STATE_LICENSE));
	assert_false(slot_state_transition_allowed(SLOT_STATE_INSTALLING, SLOT_STATE_DONE));
	assert_false(slot_state_transition_allowed(SLOT_STATE_DONE, SLOT_STATE_DONE));
	assert_false(slot_state_transition_allowed(SLOT_STATE_DONE, SLOT_STATE_WAIT_CHIP));
	assert_false(slot_state_transition_allowed(SLOT_STATE_PAUSED, SLOT_STATE_IDENTIFYING));
	assert_false(slot_state_transition_allowed(_SLOT_STATE_MAX, SLOT_STATE_IDLE));
	assert_false(slot_state_busy(SLOT_STATE_WAIT_CHIP));
	assert_true(slot_state_busy(SLOT_STATE_LICENSE));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_happy_path),
		cmocka_unit_test(test_failures),
		cmocka_unit_test(test_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

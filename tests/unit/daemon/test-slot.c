/* The slot's state machine against an in-memory link (a transport backend with no
 * descriptor): presence polls, identification, the refusals before a license (no OSFI,
 * a link failure, a chip not Open), removal, a chip swapped while its result shows, the
 * adapter vanishing and coming back. No job is loaded and no recorder runs: the slot's
 * word reaches the test through its callbacks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "db.h"
#include "recorder.h"
#include "sfid-config.h"
#include "slot.h"
#include "transport.h"

/* ---- the fake chip behind the fake link ---- */

static struct {
	bool port;		/* the adapter is there */
	bool present;		/* a chip answers */
	bool fresh;		/* the next probe meets a bootloader that just started */
	bool osfi;		/* its Get lists Get ID, 0x50, 0x51 */
	int get_error;		/* identify fails with this */
	uint8_t product_state;
	uint8_t uid0;		/* first UID byte */
	bool gone;		/* the next operation finds the port gone */
	unsigned probes, opens;
} chip;

struct fake {
	int64_t due;
	int result;
	enum transport_presence *presence;
	struct transport_identity *ident;
	struct transport_answer *answer;
	uint8_t *buf;
	size_t buf_max;
	uint16_t subop;
	char text[128];
};

static struct fake *F(const struct transport *t)
{
	return transport_priv(t);
}

static bool fake_handles(const char *spec)
{
	return true;
}

static int fake_open(struct transport *t, const char *spec, char *err, size_t err_size)
{
	if (!chip.port) {
		snprintf(err, err_size, "serial port %s not found", spec);
		return -ENODEV;
	}
	chip.opens++;
	F(t)->due = -1;
	return 0;
}

static void fake_close(struct transport *t)
{
}

static void fake_watch(const struct transport *t, struct transport_watch *ret)
{
	ret->fd = -1;
	ret->deadline_ms = F(t)->due;
}

/* Every operation ends 1 ms after it started. */
static int start(struct transport *t)
{
	F(t)->due = transport_now_ms(t) + 1;
	return 0;
}

static void fake_io_ready(struct transport *t, unsigned revents)
{
	struct fake *f = F(t);
	int r = 0;

	if (f->due < 0 || transport_now_ms(t) < f->due)
		return;
	f->due = -1;
	if (chip.gone || !chip.port) {
		chip.gone = false;
		chip.port = false;
		transport_complete(t, -TRANSPORT_E_GONE);
		return;
	}
	if (f->presence) {
		chip.probes++;
		if (!chip.present) {
			r = -TRANSPORT_E_TIMEOUT;
			snprintf(f->text, sizeof(f->text), "Sync: no answer from the chip in time");
		} else {
			*f->presence = chip.fresh ? TRANSPORT_FRESH : TRANSPORT_PRESENT;
			chip.fresh = false;
		}
	} else if (f->ident) {
		if (!chip.present || chip.get_error) {
			r = chip.present ? chip.get_error : -TRANSPORT_E_TIMEOUT;
			snprintf(f->text, sizeof(f->text), "Get: %s at the command step",
				 an3155_strerror(r));
		} else {
			*f->ident = (struct transport_identity){ .pid = 0x484, .version = 0x40,
								 .osfi = chip.osfi };
		}
	} else if (f->answer) {
		struct osfi_info info = { 0 };

		if (!chip.present) {
			r = -TRANSPORT_E_TIMEOUT;
			snprintf(f->text, sizeof(f->text), "Special: no answer at the answer step");
		} else if (f->subop == OSFI_OP_GET_INFO && f->buf_max >= OSFI_INFO_LEN) {
			info.product_state = chip.product_state;
			info.osfi_version = 1;
			info.device_id = 0x484;
			info.uid[0] = chip.uid0;
			osfi_info_encode(&info, f->buf);
			*f->answer = (struct transport_answer){ .status = OSFI_ST_OK,
								.len = OSFI_INFO_LEN };
		} else if (f->subop == OSFI_OP_GET_CERT && f->buf_max >= OSFI_CERT_LEN) {
			/* Well formed; its signature is never checked in these cases (every
			 * chip here is refused before). */
			struct osfi_cert c = { .version = 1, .device_id = 0x484 };

			c.uid[0] = chip.uid0;
			c.pubkey[0] = 0x04;
			osfi_cert_encode(&c, f->buf);
			*f->answer = (struct transport_answer){ .status = OSFI_ST_OK,
								.len = OSFI_CERT_LEN };
		} else {
			*f->answer = (struct transport_answer){ .status = 0xffff };
		}
	}
	transport_complete(t, r);
}

static void clear_op(struct fake *f)
{
	f->presence = NULL;
	f->ident = NULL;
	f->answer = NULL;
}

static int fake_probe(struct transport *t, unsigned flags, enum transport_presence *ret)
{
	clear_op(F(t));
	F(t)->presence = ret;
	return start(t);
}

static int fake_identify(struct transport *t, struct transport_identity *ret)
{
	clear_op(F(t));
	F(t)->ident = ret;
	return start(t);
}

static int fake_osfi(struct transport *t, const struct osfi_request *req, uint8_t *answer,
		     size_t answer_max, struct transport_answer *ret)
{
	clear_op(F(t));
	F(t)->answer = ret;
	F(t)->buf = answer;
	F(t)->buf_max = answer_max;
	F(t)->subop = req->subop;
	return start(t);
}

static int fake_reconnect(struct transport *t, unsigned within_ms)
{
	clear_op(F(t));
	return start(t);
}

static void fake_cancel(struct transport *t)
{
	F(t)->due = -1;
}

static void fake_describe(const struct transport *t, char *buf, size_t size)
{
	snprintf(buf, size, "%s", F(t)->text);
}

static const char *fake_port_name(const struct transport *t)
{
	return "fake0";
}

static const struct transport_ops fake_ops = {
	.name = "fake",
	.handles = fake_handles,
	.priv_size = sizeof(struct fake),
	.open = fake_open,
	.close = fake_close,
	.watch = fake_watch,
	.io_ready = fake_io_ready,
	.probe = fake_probe,
	.identify = fake_identify,
	.osfi = fake_osfi,
	.reconnect = fake_reconnect,
	.cancel = fake_cancel,
	.describe = fake_describe,
	.port_name = fake_port_name,
};

/* ---- the line's side: callbacks ---- */

static struct {
	char states[64][24];
	unsigned n_states;
	char last_error[256];
	int ended_kind;
	unsigned ended;
	unsigned settled;
} line;

static const struct job *cb_job(void *user)
{
	return NULL;
}

static enum slot_reserve cb_reserve(void *user)
{
	return SLOT_RESERVE_NO_JOB;
}

static void cb_release(void *user)
{
}

static void cb_chip_begun(void *user)
{
}

static void cb_chip_ended(void *user, int kind, const char *uid_hex)
{
	line.ended++;
	line.ended_kind = kind;
}

static const char *cb_halted(void *user)
{
	return NULL;
}

static bool cb_holding(void *user)
{
	return false;
}

static unsigned cb_chip_failures(void *user, const char *uid_hex)
{
	return 0;
}

static bool cb_chip_installed(void *user, const char *uid_hex)
{
	return false;
}

static bool cb_adopt(void *user, const char *uid_hex, struct license_set *set)
{
	return false;
}

static void cb_license_request(void *user, struct slot *s)
{
	fail_msg("no license may be asked for without a job");
}

static void cb_license_cancel(void *user, struct slot *s)
{
}

static void cb_event(void *user, const char *name, struct json_object *data)
{
	if (strcmp(name, "state") == 0) {
		struct json_object *st, *err;

		if (json_object_object_get_ex(data, "state", &st) && line.n_states < 64)
			snprintf(line.states[line.n_states++], sizeof(line.states[0]), "%s",
				 json_object_get_string(st));
		if (json_object_object_get_ex(data, "error", &err))
			snprintf(line.last_error, sizeof(line.last_error), "%s",
				 json_object_get_string(err));
	}
	json_object_put(data);
}

static void cb_settled(void *user)
{
	line.settled++;
}

static const struct slot_callbacks callbacks = {
	.job = cb_job,
	.reserve = cb_reserve,
	.release = cb_release,
	.chip_begun = cb_chip_begun,
	.chip_ended = cb_chip_ended,
	.halted = cb_halted,
	.holding = cb_holding,
	.chip_failures = cb_chip_failures,
	.chip_installed = cb_chip_installed,
	.adopt_licenses = cb_adopt,
	.license_request = cb_license_request,
	.license_cancel = cb_license_cancel,
	.event = cb_event,
	.settled = cb_settled,
};

/* ---- the recorder: what the slot records, counted (no database in this test) ---- */

static struct {
	unsigned steps, ends, chip_updates;
	int last_end_code;
} rec;

struct rec_attempt *rec_attempt_begin(struct recorder *r, int64_t job_id, const char *slot,
				      const char *step)
{
	fail_msg("no attempt is recorded without a job");
	return NULL;
}

void rec_attempt_unref(struct rec_attempt *a)
{
	assert_null(a);
}

void rec_attempt_step(struct recorder *r, struct rec_attempt *a, const char *step,
		      const char *chip_uid, uint64_t bytes)
{
	rec.steps++;
}

void rec_attempt_end(struct recorder *r, struct rec_attempt *a, enum db_result result,
		     int error_code, const char *error_text, uint64_t bytes)
{
	rec.ends++;
	rec.last_end_code = error_code;
}

void rec_chip_update(struct recorder *r, const char *chip_uid, const char *final_state,
		     const char *product_state)
{
	rec.chip_updates++;
}

void rec_license_installed(struct recorder *r, int64_t license_id)
{
	fail_msg("no license without a job");
}

void rec_license_not_installed(struct recorder *r, int64_t license_id, const char *reason)
{
	fail_msg("no license without a job");
}

int recorder_sync(struct recorder *r, rec_done_fn done, void *arg)
{
	fail_msg("no ledger barrier without a job");
	return -EIO;
}

/* ---- harness ---- */

struct rig {
	struct event_base *base;
	struct config_slot cfg;
	struct slot *s;
};

static int setup(void **state)
{
	static struct rig rig;
	struct slot_params p = { 0 };

	memset(&chip, 0, sizeof(chip));
	memset(&line, 0, sizeof(line));
	memset(&rec, 0, sizeof(rec));
	memset(&rig, 0, sizeof(rig));
	chip.port = true;
	chip.osfi = true;
	chip.product_state = STM32H5_PS_OPEN;
	rig.base = event_base_new();
	assert_non_null(rig.base);
	snprintf(rig.cfg.name, sizeof(rig.cfg.name), "s0");
	rig.cfg.port = (char *)"fake:0";
	rig.cfg.baud = 115200;
	rig.cfg.ack_ms = rig.cfg.block_ms = 100;
	rig.cfg.special_ms = 200;
	rig.cfg.poll_ms = 2;
	rig.cfg.reopen_ms = 2;
	rig.cfg.retries = 2;
	p.base = rig.base;
	p.cfg = &rig.cfg;
	p.retry_limit = 3;
	p.cb = &callbacks;
	p.link_ops = &fake_ops;
	assert_int_equal(slot_new(&p, &rig.s), 0);
	*state = &rig;
	return 0;
}

static int teardown(void **state)
{
	struct rig *rig = *state;

	slot_free(rig->s);
	event_base_free(rig->base);
	return 0;
}

/* Runs the loop for about 1 ms. */
static void run_once(struct rig *rig)
{
	struct timeval tv = { .tv_usec = 1000 };

	event_base_loopexit(rig->base, &tv);
	event_base_dispatch(rig->base);
}

/* Runs the loop until the slot is in state want (at most ~2 s). */
static void run_until(struct rig *rig, enum slot_state want)
{
	for (unsigned i = 0; i < 2000 && slot_state(rig->s) != want; i++)
		run_once(rig);
	if (slot_state(rig->s) != want)
		fail_msg("slot is %s, expected %s", slot_state_to_string(slot_state(rig->s)),
			 slot_state_to_string(want));
}

static bool saw(const char *state)
{
	for (unsigned i = 0; i < line.n_states; i++)
		if (strcmp(line.states[i], state) == 0)
			return true;
	return false;
}

/* ---- cases ---- */

static void test_presence_and_refusal(void **state)
{
	struct rig *rig = *state;

	assert_int_equal(slot_start(rig->s), 0);
	assert_int_equal(slot_start(rig->s), -EALREADY);
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	/* Nobody answers: the slot keeps polling. */
	for (unsigned i = 0; i < 2000 && chip.probes < 3; i++)
		run_once(rig);
	assert_true(chip.probes >= 3);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_WAIT_CHIP);
	assert_false(saw("identifying"));
	assert_false(slot_busy(rig->s) && slot_state(rig->s) != SLOT_STATE_WAIT_CHIP);

	/* A chip in Closed state: identified, its GET_INFO read, refused untouched. */
	chip.product_state = 0x72;
	chip.present = true;
	chip.fresh = true;
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw("identifying"));
	assert_true(saw("failed"));
	assert_non_null(strstr(line.last_error, "not Open"));
	assert_int_equal(line.ended, 1);
	assert_int_equal(line.ended_kind, DB_FAILURE_UNTOUCHED);
	assert_int_equal(rec.ends, 1);
	assert_int_equal(rec.last_end_code, DB_FAILURE_UNTOUCHED);
	assert_int_equal(rec.chip_updates, 0);
	assert_true(line.settled >= 1);

	/* It stays: the result shows. It goes: after two unanswered polls, the next chip. */
	chip.present = false;
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	slot_stop(rig->s, "test over");
	assert_int_equal(slot_state(rig->s), SLOT_STATE_IDLE);
}

static void test_swap_while_result_shows(void **state)
{
	struct rig *rig = *state;
	unsigned n;

	chip.get_error = -TRANSPORT_E_REFUSED;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_non_null(strstr(line.last_error, "Get failed: Get:"));
	assert_non_null(strstr(line.last_error, "NACK"));

	/* The same bootloader answers on: the chip stays in removal wait. */
	n = chip.probes;
	for (unsigned i = 0; i < 2000 && chip.probes < n + 3; i++)
		run_once(rig);
	assert_true(chip.probes >= n + 3);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_WAIT_REMOVAL);
	/* A bootloader that just started: another chip, taken at once. */
	chip.get_error = 0;
	chip.osfi = false;
	n = line.n_states;
	chip.fresh = true;
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(line.n_states > n);
	assert_non_null(strstr(line.last_error, "does not list Get ID, Special (0x50) and "
					 "Extended Special (0x51)"));
	assert_int_equal(line.ended, 2);
}

static void test_port_vanishes(void **state)
{
	struct rig *rig = *state;

	/* No adapter at start: the slot retries opening it. */
	chip.port = false;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_NO_PORT);
	chip.port = true;
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	assert_int_equal(chip.opens, 1);

	/* It vanishes in the middle of an identification: that chip fails, the slot waits
	 * for its port again and takes chips once it is back. */
	chip.present = true;
	chip.gone = true;
	run_until(rig, SLOT_STATE_NO_PORT);
	chip.port = true;
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	assert_int_equal(chip.opens, 2);
	chip.product_state = 0x72;
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	slot_stop(rig->s, "test over");
	assert_int_equal(slot_state(rig->s), SLOT_STATE_IDLE);
}

static void test_pause_and_stop(void **state)
{
	struct rig *rig = *state;

	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	slot_pause(rig->s);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_PAUSED);
	assert_false(slot_busy(rig->s));
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	slot_stop(rig->s, "operator");
	assert_int_equal(slot_state(rig->s), SLOT_STATE_IDLE);
	assert_false(slot_busy(rig->s));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_presence_and_refusal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_swap_while_result_shows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_port_vanishes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_and_stop, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

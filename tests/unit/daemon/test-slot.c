/* The slot's state machine against an in-memory link (a transport backend with no
 * descriptor): presence polls, identification, the refusals before a license (no OSFI,
 * a link failure, a chip not Open), removal, a chip swapped while its result shows, the
 * adapter vanishing and coming back; then, with a job loaded, the rest of a chip's workflow:
 * the certificate checked against a CA made here, the license wait and its answers, the
 * install's OSFI requests and progress, the reset and reconnect after FINALIZE and the
 * verifying GET_INFO, ABORT of a session left over, and every failure after licensing (a
 * refused status at each request, a short answer, the link lost mid-install, an answer
 * lost, the reconnect timing out or losing the adapter, another chip answering after
 * FINALIZE); and the line's word before an install:
 * a chip already holding the image (its open license adopted, or nothing to do), a chip set
 * aside after too many failures, a halted line, a global-license job, another product, no
 * chip free in the job, a pause asked mid-install. No recorder runs: the slot's word
 * reaches the test through its callbacks and the recorder functions stubbed below. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "db.h"
#include "job.h"
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
	/* The install side. */
	bool bad_sig;		/* its certificate's signature is not the CA's */
	bool finalized;		/* its last session was finalized (FINALIZE went through) */
	bool swap_at_reset;	/* another chip answers after FINALIZE's reset */
	int reconnect_error;	/* every reconnect fails with this */
	uint8_t final_ps;	/* the product state FINALIZE sets; 0: the image's */
	uint8_t session;	/* the OSFI session it is in (one left over: until ABORT) */
	unsigned reconnects, identifies;
	unsigned n_op[7];	/* OSFI requests by sub-opcode (0x5300 + i) */
	uint64_t data_bytes;	/* PUT_DATA bytes received, in stream order */
	uint32_t next_off;	/* the PUT_DATA offset expected next */
	unsigned licenses_ok;	/* PUT_LICENSE with the record the slot was given */
	/* One fault: the nth request of subop (from then on when persist) answers status, or
	 * fails on the link with link (the request's effect happens: its answer is lost). */
	struct {
		uint16_t subop;
		unsigned nth;
		bool persist;
		uint16_t status;
		int link;
		bool short_answer;	/* an OK answer cut to 10 bytes */
	} fault;
} chip;

/* The certificate material, made once: a CA key and a chip key; and the job's image. */
static struct {
	EVP_PKEY *ca, *chip_key;
	uint8_t ca_pub[OSFI_PUBKEY_LEN];
	uint8_t chip_pub[OSFI_PUBKEY_LEN];
	uint8_t *image;
	size_t image_len;
	uint8_t image_id[OSFI_ID_LEN];
	uint8_t license[OSFI_LICENSE_LEN];
} kit;

#define CHIP_UID_BYTE(i, uid0) ((i) == 0 ? (uid0) : (uint8_t)(0x40 + (i)))
#define FINAL_PS 0x72

struct fake {
	int64_t due;
	int result;
	enum transport_presence *presence;
	struct transport_identity *ident;
	struct transport_answer *answer;
	bool reconnect;
	uint8_t *buf;
	size_t buf_max;
	struct osfi_request req;
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

static void chip_uid(uint8_t uid[OSFI_UID_LEN])
{
	for (unsigned i = 0; i < OSFI_UID_LEN; i++)
		uid[i] = CHIP_UID_BYTE(i, chip.uid0);
}

/* A certificate for the chip's UID, signed by the kit's CA (docs/protocol.md section 2). */
static void chip_cert(uint8_t out[OSFI_CERT_LEN])
{
	struct osfi_cert c = { .version = 1, .device_id = 0x484 };
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[80];
	const uint8_t *p = der;
	size_t dlen = sizeof(der);
	ECDSA_SIG *sig;

	chip_uid(c.uid);
	memcpy(c.pubkey, kit.chip_pub, OSFI_PUBKEY_LEN);
	osfi_cert_encode(&c, out);
	assert_non_null(md);
	assert_int_equal(EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, kit.ca, NULL), 1);
	assert_int_equal(EVP_DigestSign(md, der, &dlen, out, OSFI_CERT_SIGNED_LEN), 1);
	sig = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
	assert_non_null(sig);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(sig), c.sig, 32), 32);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(sig), c.sig + 32, 32), 32);
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(md);
	if (chip.bad_sig)
		c.sig[40] ^= 0x01;
	osfi_cert_encode(&c, out);
}

/* The chip's side of one OSFI request: its effect, then its answer (or the fault's). */
static int fake_osfi_answer(struct fake *f)
{
	const struct osfi_request *req = &f->req;
	unsigned op = (unsigned)(req->subop - OSFI_OP_GET_INFO), n;
	uint16_t status = OSFI_ST_OK;
	size_t len = 0;

	if (!chip.present) {
		snprintf(f->text, sizeof(f->text), "Special: no answer at the answer step");
		return -TRANSPORT_E_TIMEOUT;
	}
	assert_true(op < sizeof(chip.n_op) / sizeof(chip.n_op[0]));
	n = ++chip.n_op[op];
	if (chip.fault.subop == req->subop &&
	    (n == chip.fault.nth || (chip.fault.persist && n > chip.fault.nth)) &&
	    chip.fault.status) {
		*f->answer = (struct transport_answer){ .status = chip.fault.status };
		return 0;
	}
	switch (req->subop) {
	case OSFI_OP_GET_INFO: {
		struct osfi_info info = { .product_state = chip.product_state, .osfi_version = 1,
					  .ram_buffer = 4096, .device_id = 0x484 };

		if (f->buf_max < OSFI_INFO_LEN)
			break;
		chip_uid(info.uid);
		info.session_state = chip.session;
		if (chip.finalized) {
			info.session_state = OSFI_SESSION_FINALIZED;
			memcpy(info.installed_id, kit.image_id, OSFI_ID_LEN);
		}
		osfi_info_encode(&info, f->buf);
		len = OSFI_INFO_LEN;
		break;
	}
	case OSFI_OP_GET_CERT:
		if (f->buf_max < OSFI_CERT_LEN)
			break;
		chip_cert(f->buf);
		len = OSFI_CERT_LEN;
		break;
	case OSFI_OP_PUT_LICENSE:
		if (req->n2 == OSFI_LICENSE_LEN &&
		    memcmp(req->p2, kit.license, OSFI_LICENSE_LEN) == 0)
			chip.licenses_ok++;
		break;
	case OSFI_OP_PUT_HEADER:
		assert_int_equal(req->n1, OSFI_HEADER_LEN);
		assert_memory_equal(req->p1, kit.image, OSFI_HEADER_LEN);
		chip.next_off = OSFI_HEADER_LEN;
		break;
	case OSFI_OP_PUT_DATA: {
		uint32_t off;

		assert_int_equal(osfi_p1_decode(req->p1, req->n1, &off), 0);
		/* Each chunk follows the last one and carries the image's bytes. */
		assert_int_equal(off, chip.next_off);
		assert_true(off + req->n2 <= kit.image_len);
		assert_memory_equal(req->p2, kit.image + off, req->n2);
		chip.next_off += (uint32_t)req->n2;
		chip.data_bytes += req->n2;
		break;
	}
	case OSFI_OP_ABORT:
		chip.session = OSFI_SESSION_IDLE;
		break;
	case OSFI_OP_FINALIZE:
		/* The chip installs and resets: the bootloader that answers next is fresh, in
		 * the image's product state (or another chip put in meanwhile). */
		assert_int_equal(chip.next_off, kit.image_len);
		if (chip.swap_at_reset) {
			chip.uid0 ^= 0x5a;
			chip.finalized = false;
		} else {
			chip.finalized = true;
			chip.product_state = chip.final_ps ? chip.final_ps : FINAL_PS;
		}
		break;
	default:
		break;
	}
	if (chip.fault.subop == req->subop && chip.fault.link &&
	    (n == chip.fault.nth || (chip.fault.persist && n > chip.fault.nth))) {
		if (chip.fault.link == -TRANSPORT_E_GONE) {
			chip.port = false;
			return -TRANSPORT_E_GONE;
		}
		snprintf(f->text, sizeof(f->text), "Special %s: timeout at the answer step",
			 osfi_subop_name(req->subop));
		return chip.fault.link;
	}
	if (chip.fault.subop == req->subop && chip.fault.short_answer && n == chip.fault.nth)
		len = len < 10 ? len : 10;
	*f->answer = (struct transport_answer){ .status = status, .len = len };
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
		chip.identifies++;
		if (!chip.present || chip.get_error) {
			r = chip.present ? chip.get_error : -TRANSPORT_E_TIMEOUT;
			snprintf(f->text, sizeof(f->text), "Get: %s at the command step",
				 an3155_strerror(r));
		} else {
			*f->ident = (struct transport_identity){ .pid = 0x484, .version = 0x40,
								 .osfi = chip.osfi };
		}
	} else if (f->answer) {
		r = fake_osfi_answer(f);
	} else if (f->reconnect) {
		chip.reconnects++;
		if (chip.reconnect_error) {
			r = chip.reconnect_error;
			if (r == -TRANSPORT_E_GONE)
				chip.port = false;
			snprintf(f->text, sizeof(f->text), "Sync: no answer from the chip in time");
		}
	}
	transport_complete(t, r);
}

static void clear_op(struct fake *f)
{
	f->presence = NULL;
	f->ident = NULL;
	f->answer = NULL;
	f->reconnect = false;
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
	F(t)->req = *req;
	return start(t);
}

static int fake_reconnect(struct transport *t, unsigned within_ms)
{
	clear_op(F(t));
	F(t)->reconnect = true;
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
	char states[256][24];
	unsigned n_states;
	char last_error[256];
	char last_result[32];
	unsigned results;
	int ended_kind;
	unsigned ended;
	unsigned settled;
	const struct job *job;		/* the loaded job, NULL for none */
	bool reserve_wait;		/* the job's remaining chips are in progress elsewhere */
	const char *halt;		/* why the line is halted, NULL while it runs */
	unsigned failures;		/* the chip's failed attempts on the line */
	bool installed;			/* the ledger has the chip installed by the job */
	bool adopt;			/* the ledger holds the chip's license open */
	unsigned reserved, released, begun;
	struct slot *license_asked;	/* the slot in the license queue */
	unsigned license_requests, license_cancels;
	unsigned progress_events;
	int64_t progress_done, progress_total;
} line;

static const struct job *cb_job(void *user)
{
	return line.job;
}

static enum slot_reserve cb_reserve(void *user)
{
	if (!line.job)
		return SLOT_RESERVE_NO_JOB;
	if (line.reserve_wait)
		return SLOT_RESERVE_WAIT;
	line.reserved++;
	return SLOT_RESERVE_GRANTED;
}

static void cb_release(void *user)
{
	line.released++;
}

static void cb_chip_begun(void *user)
{
	line.begun++;
}

static void cb_chip_ended(void *user, int kind, const char *uid_hex)
{
	line.ended++;
	line.ended_kind = kind;
}

static const char *cb_halted(void *user)
{
	return line.halt;
}

static bool cb_holding(void *user)
{
	return false;
}

static unsigned cb_chip_failures(void *user, const char *uid_hex)
{
	return line.failures;
}

static bool cb_chip_installed(void *user, const char *uid_hex)
{
	return line.installed;
}

static void fill_license(struct license_set *set, bool reused);

static bool cb_adopt(void *user, const char *uid_hex, struct license_set *set)
{
	if (line.adopt)
		fill_license(set, true);
	return line.adopt;
}

static void cb_license_request(void *user, struct slot *s)
{
	if (!line.job)
		fail_msg("no license may be asked for without a job");
	line.license_requests++;
	line.license_asked = s;
}

static void cb_license_cancel(void *user, struct slot *s)
{
	line.license_cancels++;
	line.license_asked = NULL;
}

static void cb_event(void *user, const char *name, struct json_object *data)
{
	struct json_object *v;

	if (strcmp(name, "state") == 0) {
		struct json_object *st, *err;

		if (json_object_object_get_ex(data, "state", &st) && line.n_states < 256)
			snprintf(line.states[line.n_states++], sizeof(line.states[0]), "%s",
				 json_object_get_string(st));
		if (json_object_object_get_ex(data, "error", &err))
			snprintf(line.last_error, sizeof(line.last_error), "%s",
				 json_object_get_string(err));
	} else if (strcmp(name, "progress") == 0) {
		int64_t done = -1, total = -1;

		if (json_object_object_get_ex(data, "done", &v))
			done = json_object_get_int64(v);
		if (json_object_object_get_ex(data, "total", &v))
			total = json_object_get_int64(v);
		/* Progress only grows. */
		assert_true(done >= line.progress_done);
		line.progress_done = done;
		line.progress_total = total;
		line.progress_events++;
	} else if (strcmp(name, "result") == 0) {
		line.results++;
		if (json_object_object_get_ex(data, "result", &v))
			snprintf(line.last_result, sizeof(line.last_result), "%s",
				 json_object_get_string(v));
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

/* ---- the recorder: what the slot records, kept (no database in this test) ---- */

#define LICENSE_ROW 42

static struct {
	unsigned steps, ends, chip_updates, begins;
	int last_end_code;
	enum db_result last_result;
	char last_text[300];
	char steps_seen[256];		/* "identifying,certificate,..." */
	char chip_state[24];
	unsigned lic_installed, lic_not_installed;
	int sync_error;			/* recorder_sync answers this (on the loop) */
	struct rec_attempt attempt;
} rec;

static struct event_base *rec_base;

struct rec_attempt *rec_attempt_begin(struct recorder *r, int64_t job_id, const char *slot,
				      const char *step)
{
	if (!line.job)
		fail_msg("no attempt is recorded without a job");
	assert_int_equal(job_id, line.job->id);
	rec.begins++;
	rec.attempt = (struct rec_attempt){ .id = 100 + rec.begins, .refs = 1 };
	return &rec.attempt;
}

void rec_attempt_unref(struct rec_attempt *a)
{
	if (!line.job) {
		assert_null(a);
		return;
	}
	if (a) {
		assert_ptr_equal(a, &rec.attempt);
		assert_true(a->refs > 0);
		a->refs--;
	}
}

void rec_attempt_step(struct recorder *r, struct rec_attempt *a, const char *step,
		      const char *chip_uid, uint64_t bytes)
{
	rec.steps++;
	if (strlen(rec.steps_seen) + strlen(step) + 2 < sizeof(rec.steps_seen)) {
		strcat(rec.steps_seen, step);
		strcat(rec.steps_seen, ",");
	}
}

void rec_attempt_end(struct recorder *r, struct rec_attempt *a, enum db_result result,
		     int error_code, const char *error_text, uint64_t bytes)
{
	rec.ends++;
	rec.last_end_code = error_code;
	rec.last_result = result;
	snprintf(rec.last_text, sizeof(rec.last_text), "%s", error_text ? error_text : "");
}

void rec_chip_update(struct recorder *r, const char *chip_uid, const char *final_state,
		     const char *product_state)
{
	rec.chip_updates++;
	snprintf(rec.chip_state, sizeof(rec.chip_state), "%s", final_state);
}

void rec_license_installed(struct recorder *r, int64_t license_id)
{
	if (!line.job)
		fail_msg("no license without a job");
	assert_int_equal(license_id, LICENSE_ROW);
	rec.lic_installed++;
}

void rec_license_not_installed(struct recorder *r, int64_t license_id, const char *reason)
{
	if (!line.job)
		fail_msg("no license without a job");
	assert_int_equal(license_id, LICENSE_ROW);
	rec.lic_not_installed++;
}

struct sync_call {
	rec_done_fn done;
	void *arg;
};

static void sync_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sync_call c = *(struct sync_call *)arg;

	free(arg);
	c.done(c.arg, rec.sync_error);
}

/* The barrier completes on the loop, as the recorder's does. */
int recorder_sync(struct recorder *r, rec_done_fn done, void *arg)
{
	struct sync_call *c = calloc(1, sizeof(*c));
	struct timeval tv = { 0 };

	if (!line.job)
		fail_msg("no ledger barrier without a job");
	assert_non_null(c);
	c->done = done;
	c->arg = arg;
	assert_int_equal(event_base_once(rec_base, -1, EV_TIMEOUT, sync_cb, c, &tv), 0);
	return 0;
}

/* ---- the job: an image and the chip license of a counted job ---- */

static struct job job;

static int group_setup(void **state)
{
	static uint8_t fw[5000], key[OSFI_KEY_LEN] = { 7 };
	static const uint8_t opts[8] = { 1, 0, 0, 0, 0, FINAL_PS, 0, 0 };
	struct osfi_area_spec a[] = {
		{ .type = 'F', .address = 0x08000000, .data = fw, .size = sizeof(fw) },
		{ .type = 'C', .data = opts, .size = sizeof(opts) },
	};
	struct osfi_image_spec spec = { .device_id = 0x484, .key = key, .max_area = 2048,
					.areas = a, .n_areas = 2 };
	struct osfi_license l = { .kind = OSFI_LICENSE_KIND_CHIP, .device_id = 0x484,
				  .target = OSFI_TARGET_IMAGE, .counter = 1 };
	size_t n = 0;

	for (size_t i = 0; i < sizeof(fw); i++)
		fw[i] = (uint8_t)(i * 7);
	kit.ca = EVP_EC_gen("P-256");
	kit.chip_key = EVP_EC_gen("P-256");
	assert_non_null(kit.ca);
	assert_non_null(kit.chip_key);
	assert_int_equal(EVP_PKEY_get_octet_string_param(kit.ca, OSSL_PKEY_PARAM_PUB_KEY,
							 kit.ca_pub, OSFI_PUBKEY_LEN, &n), 1);
	assert_int_equal(n, OSFI_PUBKEY_LEN);
	assert_int_equal(EVP_PKEY_get_octet_string_param(kit.chip_key, OSSL_PKEY_PARAM_PUB_KEY,
							 kit.chip_pub, OSFI_PUBKEY_LEN, &n), 1);
	assert_int_equal(osfi_image_build(&spec, &kit.image, &kit.image_len), 0);
	osfi_image_id(kit.image, kit.image_id);

	/* A chip license for the image (the install session checks its form only). */
	memcpy(l.id, kit.image_id, OSFI_ID_LEN);
	memcpy(l.hsm_pub, kit.chip_pub, OSFI_PUBKEY_LEN);
	memset(l.nonce, 0x33, sizeof(l.nonce));
	memset(l.wrapped, 0x55, sizeof(l.wrapped));
	for (unsigned i = 0; i < OSFI_UID_LEN; i++)
		l.uid[i] = CHIP_UID_BYTE(i, 0);
	osfi_license_encode(&l, kit.license);

	memset(&job, 0, sizeof(job));
	job.id = 7;
	job.image = kit.image;
	job.image_len = kit.image_len;
	memcpy(job.image_id, kit.image_id, OSFI_ID_LEN);
	for (unsigned i = 0; i < OSFI_ID_LEN; i++)
		snprintf(job.image_id_hex + 2 * i, 3, "%02x", kit.image_id[i]);
	job.device_id = 0x484;
	job.final_state = FINAL_PS;
	job.has_final_state = true;
	job.n_lic = 1;
	job.lic[0].target = OSFI_TARGET_IMAGE;
	memcpy(job.lic[0].record, kit.license, OSFI_LICENSE_LEN);
	memcpy(job.lic[0].firmware_id, kit.image_id, OSFI_ID_LEN);
	job.lic[0].token = 0;
	return 0;
}

static int group_teardown(void **state)
{
	free(kit.image);
	EVP_PKEY_free(kit.ca);
	EVP_PKEY_free(kit.chip_key);
	return 0;
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
	rec_base = rig.base;
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
	p.ca_pub = kit.ca_pub;
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

/* Runs the loop until cond holds (at most ~2 s). */
#define RUN_UNTIL(rig, cond)                                                              \
	do {                                                                              \
		for (unsigned i_ = 0; i_ < 2000 && !(cond); i_++)                         \
			run_once(rig);                                                    \
		if (!(cond))                                                              \
			fail_msg("still not %s (slot is %s)", #cond,                      \
				 slot_state_to_string(slot_state((rig)->s)));             \
	} while (0)

#define N_OP(subop) chip.n_op[(subop) - OSFI_OP_GET_INFO]

/* Image stream bytes (the image after its header) and the PUT_DATA chunks carrying them. */
static uint64_t stream_len(void)
{
	return kit.image_len - OSFI_HEADER_LEN;
}

static unsigned data_chunks(void)
{
	return (unsigned)((stream_len() + 1023) / 1024);
}

/* A job is loaded and a genuine Open chip put in: the slot identifies it, checks its
 * certificate and waits for its license in the line's queue. */
static void to_license_wait(struct rig *rig)
{
	uint8_t cert[OSFI_CERT_LEN];
	char hex[2 * OSFI_UID_LEN + 1];
	struct osfi_cert c;

	line.job = &job;
	chip.present = true;
	chip.fresh = true;
	if (slot_state(rig->s) == SLOT_STATE_IDLE)
		assert_int_equal(slot_start(rig->s), 0);
	RUN_UNTIL(rig, line.license_asked != NULL);
	assert_ptr_equal(line.license_asked, rig->s);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_LICENSE);
	assert_true(slot_busy(rig->s));
	assert_true(slot_license_wanted(rig->s));
	/* What the HSM request is made of: the chip's certificate (the CA signs anew each
	 * time: the signed part compared, the signature checked), UID and attempt. */
	chip_cert(cert);
	assert_memory_equal(slot_license_cert(rig->s), cert, OSFI_CERT_SIGNED_LEN);
	assert_int_equal(osfi_cert_decode(slot_license_cert(rig->s), OSFI_CERT_LEN, &c), 0);
	assert_int_equal(osfi_cert_verify(&c, kit.ca_pub), 0);
	for (unsigned i = 0; i < OSFI_UID_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", CHIP_UID_BYTE(i, chip.uid0));
	assert_string_equal(slot_chip_hex(rig->s), hex);
	assert_int_equal(slot_attempt_id(rig->s), 100 + rec.begins);
	assert_true(strstr(rec.steps_seen, "certificate,license,") != NULL);
	/* Nothing was sent for the install yet. */
	assert_int_equal(N_OP(OSFI_OP_PUT_LICENSE), 0);
	assert_int_equal(line.reserved, line.license_requests);
}

/* The chip's license: issued now (ledger row LICENSE_ROW), or issued before and reused. */
static void fill_license(struct license_set *set, bool reused)
{
	*set = (struct license_set){ .n = 1 };
	set->id[0] = LICENSE_ROW;
	set->reused[0] = reused;
	set->counted[0] = !reused;
	set->counter_after[0] = 1;
	memcpy(set->record[0], kit.license, OSFI_LICENSE_LEN);
}

/* The line's answer: the chip's license, issued now. */
static void give_license(struct rig *rig)
{
	struct license_set set;

	fill_license(&set, false);
	line.license_asked = NULL;
	slot_licenses_ready(rig->s, &set);
}

/* The chip's attempt was recorded failed once, touched, with its license kept reusable. */
static void assert_failed_touched(const char *text)
{
	assert_int_equal(rec.ends, 1);
	assert_int_equal(rec.last_result, DB_RESULT_FAILED);
	assert_int_equal(rec.last_end_code, DB_FAILURE_TOUCHED);
	assert_int_equal(line.ended, 1);
	assert_int_equal(line.ended_kind, DB_FAILURE_TOUCHED);
	assert_string_equal(line.last_result, "failed");
	assert_int_equal(rec.lic_installed, 0);
	assert_int_equal(rec.lic_not_installed, 1);
	assert_string_equal(rec.chip_state, "failed");
	assert_int_equal(line.released, 1);
	if (!strstr(rec.last_text, text))
		fail_msg("recorded \"%s\", expected it to name \"%s\"", rec.last_text, text);
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

/* True when the slot went through these states in this order (others may come between). */
static bool saw_in_order(const char *const *want)
{
	unsigned k = 0;

	for (unsigned i = 0; i < line.n_states && want[k]; i++)
		if (strcmp(line.states[i], want[k]) == 0)
			k++;
	return want[k] == NULL;
}

/* The whole workflow: license wait, the install's requests in order with progress, FINALIZE,
 * the reset and reconnect, the verifying GET_INFO; recorded installed. */
static void test_install(void **state)
{
	static const char *const flow[] = {
		"identifying", "certificate", "license", "installing", "finalizing", "verifying",
		"done", "waiting-for-removal", NULL,
	};
	struct rig *rig = *state;

	assert_int_equal(slot_start(rig->s), 0);
	to_license_wait(rig);
	assert_int_equal(line.begun, 1);
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 1);
	assert_int_equal(N_OP(OSFI_OP_GET_CERT), 1);
	/* The wait lasts as long as the line takes: the slot sends nothing meanwhile. */
	for (unsigned i = 0; i < 20; i++)
		run_once(rig);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_LICENSE);
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 1);

	give_license(rig);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_INSTALLING);
	assert_false(slot_license_wanted(rig->s));
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw_in_order(flow));
	assert_false(saw("failed"));

	/* What went over the link: GET_INFO, the license, the header, every byte of the
	 * image in order, FINALIZE, one reconnect, the verifying GET_INFO. */
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 3);
	assert_int_equal(N_OP(OSFI_OP_PUT_LICENSE), 1);
	assert_int_equal(chip.licenses_ok, 1);
	assert_int_equal(N_OP(OSFI_OP_PUT_HEADER), 1);
	assert_int_equal(N_OP(OSFI_OP_PUT_DATA), data_chunks());
	assert_int_equal(chip.data_bytes, stream_len());
	assert_int_equal(N_OP(OSFI_OP_FINALIZE), 1);
	assert_int_equal(N_OP(OSFI_OP_ABORT), 0);
	assert_int_equal(chip.reconnects, 1);
	assert_true(chip.finalized);

	/* Progress: at least the final event, which reports the whole stream. */
	assert_true(line.progress_events >= 1);
	assert_int_equal(line.progress_done, (int64_t)stream_len());
	assert_int_equal(line.progress_total, (int64_t)stream_len());

	/* Recorded installed: the attempt, the license, the chip. */
	assert_int_equal(rec.ends, 1);
	assert_int_equal(rec.last_result, DB_RESULT_OK);
	assert_int_equal(rec.last_end_code, 0);
	assert_int_equal(rec.lic_installed, 1);
	assert_int_equal(rec.lic_not_installed, 0);
	assert_string_equal(rec.chip_state, "programmed");
	assert_non_null(strstr(rec.steps_seen, "installing,finalizing,verifying,"));
	assert_int_equal(line.ended, 1);
	assert_int_equal(line.ended_kind, -1);
	assert_int_equal(line.results, 1);
	assert_string_equal(line.last_result, "ok");
	assert_int_equal(line.released, 1);
	assert_int_equal(line.license_cancels, 0);
	assert_true(line.settled >= 1);
	assert_false(slot_busy(rig->s));
	assert_int_equal(rec.attempt.refs, 1);

	/* It shows until removed, then the next chip is awaited. */
	chip.present = false;
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	assert_int_equal(rec.attempt.refs, 0);
	slot_stop(rig->s, "test over");
	assert_int_equal(slot_state(rig->s), SLOT_STATE_IDLE);
	assert_int_equal(rec.ends, 1);
}

/* The line could not issue the license: the chip fails where it waited, nothing is sent. */
static void test_license_failed(void **state)
{
	struct rig *rig = *state;

	to_license_wait(rig);
	slot_license_failed(rig->s, "the token has no license left for this firmware");
	assert_int_equal(slot_state(rig->s), SLOT_STATE_WAIT_REMOVAL);
	assert_non_null(strstr(line.last_error, "no license left"));
	assert_int_equal(rec.ends, 1);
	assert_int_equal(rec.last_result, DB_RESULT_FAILED);
	assert_int_equal(rec.last_end_code, DB_FAILURE_TOUCHED);
	assert_string_equal(rec.last_text,
			    "license: the token has no license left for this firmware");
	assert_int_equal(rec.lic_not_installed, 0);
	assert_int_equal(line.ended_kind, DB_FAILURE_TOUCHED);
	assert_int_equal(line.released, 1);
	assert_int_equal(N_OP(OSFI_OP_PUT_LICENSE), 0);
	/* A late answer for a chip no longer waiting changes nothing. */
	slot_license_failed(rig->s, "again");
	assert_int_equal(rec.ends, 1);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_WAIT_REMOVAL);
}

/* The ledger barrier before a license fails: no license is asked for. */
static void test_license_unrecorded(void **state)
{
	struct rig *rig = *state;

	rec.sync_error = -EIO;
	line.job = &job;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_int_equal(line.license_requests, 0);
	assert_non_null(strstr(rec.last_text, "could not be recorded"));
	assert_int_equal(rec.ends, 1);
	assert_int_equal(rec.last_result, DB_RESULT_FAILED);
}

/* Stopped while it waits for its license: the slot leaves the queue, the chip is recorded. */
static void test_stop_in_license_wait(void **state)
{
	struct rig *rig = *state;

	to_license_wait(rig);
	slot_stop(rig->s, "operator stop");
	assert_int_equal(slot_state(rig->s), SLOT_STATE_IDLE);
	assert_int_equal(line.license_cancels, 1);
	assert_int_equal(rec.ends, 1);
	assert_int_equal(rec.last_result, DB_RESULT_FAILED);
	assert_string_equal(rec.last_text, "license: operator stop");
	assert_int_equal(line.released, 1);
	assert_false(slot_busy(rig->s));
}

/* A chip whose certificate the CA did not sign: refused untouched, no license asked for. */
static void test_certificate_not_genuine(void **state)
{
	struct rig *rig = *state;

	chip.bad_sig = true;
	line.job = &job;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw("certificate"));
	assert_false(saw("license"));
	assert_non_null(strstr(line.last_error, "not signed by the chip CA"));
	assert_int_equal(line.license_requests, 0);
	assert_int_equal(rec.last_end_code, DB_FAILURE_UNTOUCHED);
	assert_int_equal(line.ended_kind, DB_FAILURE_UNTOUCHED);
	assert_string_equal(line.last_result, "refused");
	assert_int_equal(rec.chip_updates, 0);
}

/* A refused status at each request of the install, and at the verifying GET_INFO: the chip
 * fails at that step with the chip's status named, nothing after it is sent. */
static void test_refused_at_each_request(void **state)
{
	static const struct {
		uint16_t subop;
		unsigned nth;		/* counted from the certificate's GET_INFO */
		bool persist;
		uint16_t status;
		const char *step, *text;
		unsigned data, finalize;	/* PUT_DATA and FINALIZE requests sent */
	} cases[] = {
		{ OSFI_OP_GET_INFO, 2, false, OSFI_ST_BAD_STATE, "installing:", "BAD_STATE", 0, 0 },
		{ OSFI_OP_PUT_LICENSE, 1, false, OSFI_ST_LICENSE_WRONG_CHIP, "installing:",
		  "LICENSE_WRONG_CHIP", 0, 0 },
		{ OSFI_OP_PUT_HEADER, 1, false, OSFI_ST_HEADER_AUTH, "installing:", "HEADER_AUTH",
		  0, 0 },
		{ OSFI_OP_PUT_DATA, 1, false, OSFI_ST_AREA_AUTH, "installing:", "AREA_AUTH", 1, 0 },
		{ OSFI_OP_PUT_DATA, 3, false, OSFI_ST_FLASH_ERROR, "installing:", "FLASH_ERROR", 3,
		  0 },
		/* Refused FINALIZE: the chip is asked what it holds; it reports no finished
		 * install. */
		{ OSFI_OP_FINALIZE, 1, false, OSFI_ST_INCOMPLETE, "finalizing:",
		  "the chip reports no finished install", 5, 1 },
		/* The verifying GET_INFO refused every time it is asked. */
		{ OSFI_OP_GET_INFO, 3, true, OSFI_ST_BAD_STATE, "verifying:",
		  "could not be asked what it holds", 5, 1 },
	};

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct rig *rig;

		if (k > 0)
			setup(state);
		rig = *state;
		chip.fault.subop = cases[k].subop;
		chip.fault.nth = cases[k].nth;
		chip.fault.persist = cases[k].persist;
		chip.fault.status = cases[k].status;
		to_license_wait(rig);
		give_license(rig);
		run_until(rig, SLOT_STATE_WAIT_REMOVAL);
		print_message("refused %s #%u: %s\n", osfi_subop_name(cases[k].subop),
			      cases[k].nth, rec.last_text);
		assert_failed_touched(cases[k].text);
		assert_int_equal(strncmp(rec.last_text, cases[k].step, strlen(cases[k].step)), 0);
		if (cases[k].finalize == 0)
			assert_non_null(strstr(rec.last_text, osfi_subop_name(cases[k].subop)));
		assert_int_equal(N_OP(OSFI_OP_PUT_DATA), cases[k].data == 5 ? data_chunks()
									: cases[k].data);
		assert_int_equal(N_OP(OSFI_OP_FINALIZE), cases[k].finalize);
		assert_false(saw("done"));
		if (k + 1 < sizeof(cases) / sizeof(cases[0]))
			teardown(state);
	}
}

/* The adapter vanishes mid-install: the chip fails, the slot waits for its port. */
static void test_link_lost_mid_install(void **state)
{
	struct rig *rig = *state;

	chip.fault.subop = OSFI_OP_PUT_DATA;
	chip.fault.nth = 2;
	chip.fault.link = -TRANSPORT_E_GONE;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_NO_PORT);
	assert_failed_touched("the chip or its adapter vanished");
	assert_int_equal(strncmp(rec.last_text, "installing:", 11), 0);
	assert_int_equal(N_OP(OSFI_OP_PUT_DATA), 2);
	assert_int_equal(N_OP(OSFI_OP_FINALIZE), 0);
	/* Back: the slot reopens it and awaits the next chip. */
	chip.port = true;
	chip.present = false;
	run_until(rig, SLOT_STATE_WAIT_CHIP);
	assert_int_equal(chip.opens, 2);
}

/* The chip stops answering mid-install (the link's retries spent): failed at that request. */
static void test_timeout_mid_install(void **state)
{
	struct rig *rig = *state;

	chip.fault.subop = OSFI_OP_PUT_DATA;
	chip.fault.nth = 2;
	chip.fault.link = -TRANSPORT_E_TIMEOUT;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_failed_touched("PUT_DATA");
	assert_non_null(strstr(rec.last_text, "timeout"));
	assert_int_equal(strncmp(rec.last_text, "installing:", 11), 0);
	assert_int_equal(N_OP(OSFI_OP_FINALIZE), 0);
	assert_int_equal(chip.reconnects, 0);
}

/* FINALIZE's answer is lost though the chip installed: the slot reconnects, asks the chip,
 * and records it installed. */
static void test_finalize_answer_lost(void **state)
{
	struct rig *rig = *state;

	chip.fault.subop = OSFI_OP_FINALIZE;
	chip.fault.nth = 1;
	chip.fault.link = -TRANSPORT_E_TIMEOUT;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw("done"));
	assert_false(saw("failed"));
	assert_int_equal(chip.reconnects, 1);
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 3);
	assert_int_equal(rec.last_result, DB_RESULT_OK);
	assert_int_equal(rec.lic_installed, 1);
	assert_int_equal(rec.lic_not_installed, 0);
	assert_string_equal(rec.chip_state, "programmed");
	assert_int_equal(line.ended_kind, -1);
}

/* The chip never comes back after FINALIZE's reset: the reconnect times out, once in the
 * install and once when the slot tries to ask the chip; failed at verification. */
static void test_reconnect_timeout(void **state)
{
	struct rig *rig = *state;

	chip.reconnect_error = -TRANSPORT_E_TIMEOUT;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_failed_touched("the chip did not answer again");
	assert_int_equal(strncmp(rec.last_text, "verifying:", 10), 0);
	assert_int_equal(chip.reconnects, 2);
	assert_int_equal(N_OP(OSFI_OP_FINALIZE), 1);
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 2);
	assert_true(saw("verifying"));
}

/* Another chip answers after FINALIZE (the operator swapped too early): the first one's
 * license stays reusable, and the new chip is taken next. */
static void test_other_chip_after_finalize(void **state)
{
	struct rig *rig = *state;
	char first[2 * OSFI_UID_LEN + 1];

	chip.swap_at_reset = true;
	to_license_wait(rig);
	snprintf(first, sizeof(first), "%s", slot_chip_hex(rig->s));
	give_license(rig);
	RUN_UNTIL(rig, line.license_requests == 2);
	assert_failed_touched("another chip answered after FINALIZE");
	assert_int_equal(strncmp(rec.last_text, "verifying:", 10), 0);
	assert_int_equal(chip.reconnects, 1);
	/* The new chip waits for its own license. */
	assert_int_equal(slot_state(rig->s), SLOT_STATE_LICENSE);
	assert_string_not_equal(slot_chip_hex(rig->s), first);
	assert_int_equal(rec.begins, 2);
	assert_int_equal(line.begun, 2);
	slot_stop(rig->s, "test over");
	assert_int_equal(line.license_cancels, 1);
	assert_int_equal(rec.ends, 2);
}

/* Stopped mid-install: the chip is recorded failed, its license not installed. */
static void test_stop_mid_install(void **state)
{
	struct rig *rig = *state;

	to_license_wait(rig);
	give_license(rig);
	RUN_UNTIL(rig, N_OP(OSFI_OP_PUT_DATA) >= 2);
	slot_stop(rig->s, "operator stop");
	assert_int_equal(slot_state(rig->s), SLOT_STATE_IDLE);
	assert_failed_touched("operator stop");
	assert_int_equal(strncmp(rec.last_text, "installing:", 11), 0);
	assert_int_equal(N_OP(OSFI_OP_FINALIZE), 0);
	assert_false(slot_busy(rig->s));
}

/* A chip already carrying the job's image, finalized (FINALIZE's outcome was never
 * recorded): the license the ledger holds open for it is taken as installed; nothing is
 * sent to the chip. */
static void test_adopt_installed_chip(void **state)
{
	struct rig *rig = *state;

	chip.finalized = true;
	chip.product_state = FINAL_PS;
	line.adopt = true;
	line.job = &job;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw("done"));
	assert_false(saw("license"));
	assert_false(saw("installing"));
	assert_int_equal(N_OP(OSFI_OP_PUT_LICENSE) + N_OP(OSFI_OP_PUT_DATA) +
				 N_OP(OSFI_OP_FINALIZE), 0);
	assert_int_equal(line.license_requests, 0);
	assert_int_equal(rec.last_result, DB_RESULT_OK);
	assert_int_equal(rec.lic_installed, 1);
	assert_string_equal(rec.chip_state, "programmed");
	assert_int_equal(line.ended_kind, -1);
}

/* The same chip with no license held open for it (installed earlier and recorded):
 * neither a failure nor a refusal, and no license. */
static void test_already_installed(void **state)
{
	struct rig *rig = *state;

	chip.finalized = true;
	chip.product_state = FINAL_PS;
	line.job = &job;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_non_null(strstr(line.last_error, "already holds the job's image"));
	assert_int_equal(rec.last_end_code, DB_FAILURE_ALREADY);
	assert_int_equal(line.ended_kind, DB_FAILURE_ALREADY);
	assert_string_equal(line.last_result, "already-installed");
	assert_int_equal(line.license_requests, 0);
	assert_int_equal(rec.lic_installed + rec.lic_not_installed, 0);
	assert_int_equal(rec.chip_updates, 0);
}

/* A chip that failed too often is set aside before a license; a halted line refuses the
 * chip at the license step, recorded as halted. */
static void test_set_aside_and_halted(void **state)
{
	struct rig *rig = *state;

	line.failures = 3;
	line.job = &job;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_non_null(strstr(line.last_error, "already failed 3 times"));
	assert_int_equal(rec.last_end_code, DB_FAILURE_UNTOUCHED);
	assert_false(saw("license"));

	line.failures = 0;
	line.halt = "the line is halted: the audit database is full";
	chip.fresh = true;
	RUN_UNTIL(rig, rec.ends == 2);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw("license"));
	assert_non_null(strstr(rec.last_text, "license: the line is halted"));
	assert_int_equal(rec.last_end_code, DB_FAILURE_HALTED);
	assert_string_equal(line.last_result, "halted");
	assert_int_equal(line.license_requests, 0);
	assert_int_equal(N_OP(OSFI_OP_PUT_LICENSE), 0);
}

/* A job under a global license: no ledger and no queue, the install starts at once. */
static void test_global_license_job(void **state)
{
	struct rig *rig = *state;
	static struct job global;

	global = job;
	global.lic[0].global = true;
	line.job = &global;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw("license"));
	assert_true(saw("done"));
	assert_int_equal(line.license_requests, 0);
	assert_int_equal(chip.licenses_ok, 1);
	assert_int_equal(chip.data_bytes, stream_len());
	assert_int_equal(rec.last_result, DB_RESULT_OK);
	/* No ledger row to settle. */
	assert_int_equal(rec.lic_installed + rec.lic_not_installed, 0);
}

/* After FINALIZE the chip is in another product state than the image sets: asked again, it
 * still is; failed at verification. */
static void test_wrong_final_state(void **state)
{
	struct rig *rig = *state;

	chip.final_ps = 0x5c;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_failed_touched("the chip reports no finished install");
	assert_non_null(strstr(rec.last_text, "product state"));
	assert_int_equal(strncmp(rec.last_text, "verifying:", 10), 0);
	assert_int_equal(chip.reconnects, 2);
}

/* The product id the job is not for: asked twice (Get ID has no checksum), then refused. */
static void test_other_product(void **state)
{
	struct rig *rig = *state;
	static struct job other;

	other = job;
	other.device_id = 0x485;
	line.job = &other;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_int_equal(chip.identifies, 2);
	assert_non_null(strstr(line.last_error, "product id is 0x484, the job is for 0x485"));
	assert_int_equal(rec.last_end_code, DB_FAILURE_UNTOUCHED);
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 0);
}

/* While the job's remaining chips are in progress elsewhere the slot takes no chip; a pause
 * asked mid-install lets the chip finish, and the slot pauses once it is removed. */
static void test_reserve_wait_and_pause(void **state)
{
	struct rig *rig = *state;
	unsigned n;

	line.reserve_wait = true;
	line.job = &job;
	chip.present = true;
	assert_int_equal(slot_start(rig->s), 0);
	n = chip.probes;
	RUN_UNTIL(rig, chip.probes >= n + 3);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_WAIT_CHIP);
	assert_int_equal(chip.identifies, 0);
	line.reserve_wait = false;
	to_license_wait(rig);
	give_license(rig);
	RUN_UNTIL(rig, N_OP(OSFI_OP_PUT_DATA) >= 1);
	slot_pause(rig->s);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_INSTALLING);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_int_equal(rec.last_result, DB_RESULT_OK);
	chip.present = false;
	run_until(rig, SLOT_STATE_PAUSED);
	assert_false(slot_busy(rig->s));
}

/* FINALIZE's answer lost and another chip put in during the reset: asked what it holds, the
 * chip that answers is not the one installed; failed, its license kept reusable, and the new
 * chip (which already answered, so it is no fresh bootloader) is taken next rather than
 * waited out as if it were the old one. */
static void test_other_chip_after_lost_finalize(void **state)
{
	struct rig *rig = *state;
	char first[2 * OSFI_UID_LEN + 1];

	chip.swap_at_reset = true;
	chip.fault.subop = OSFI_OP_FINALIZE;
	chip.fault.nth = 1;
	chip.fault.link = -TRANSPORT_E_TIMEOUT;
	to_license_wait(rig);
	snprintf(first, sizeof(first), "%s", slot_chip_hex(rig->s));
	give_license(rig);
	RUN_UNTIL(rig, rec.ends == 1);
	assert_failed_touched("another chip answered: the chip was removed before it was verified");
	assert_int_equal(strncmp(rec.last_text, "finalizing:", 11), 0);
	assert_int_equal(chip.reconnects, 1);
	RUN_UNTIL(rig, line.license_requests == 2);
	assert_int_equal(slot_state(rig->s), SLOT_STATE_LICENSE);
	assert_string_not_equal(slot_chip_hex(rig->s), first);
	slot_stop(rig->s, "test over");
}

/* The adapter vanishes during the reconnect after FINALIZE: failed at verification, the
 * slot waits for its port. */
static void test_port_gone_in_reconnect(void **state)
{
	struct rig *rig = *state;

	chip.reconnect_error = -TRANSPORT_E_GONE;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_NO_PORT);
	assert_failed_touched("the chip or its adapter vanished");
	assert_int_equal(strncmp(rec.last_text, "verifying:", 10), 0);
	assert_int_equal(chip.reconnects, 1);
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 2);
}

/* The verifying GET_INFO's answer is lost once: the slot asks again and records the
 * install. */
static void test_verify_answer_lost_once(void **state)
{
	struct rig *rig = *state;

	chip.fault.subop = OSFI_OP_GET_INFO;
	chip.fault.nth = 3;
	chip.fault.link = -TRANSPORT_E_TIMEOUT;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw("done"));
	assert_false(saw("failed"));
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 4);
	assert_int_equal(chip.reconnects, 2);
	assert_int_equal(rec.last_result, DB_RESULT_OK);
	assert_int_equal(rec.lic_installed, 1);
}

/* A chip left in a session (an earlier install interrupted): ABORT, then the install. */
static void test_abort_leftover_session(void **state)
{
	struct rig *rig = *state;

	chip.session = OSFI_SESSION_STREAMING;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_true(saw("done"));
	assert_int_equal(N_OP(OSFI_OP_ABORT), 1);
	assert_int_equal(N_OP(OSFI_OP_GET_INFO), 4);
	assert_int_equal(chip.data_bytes, stream_len());
	assert_int_equal(rec.last_result, DB_RESULT_OK);
}

/* A GET_INFO answer of the wrong length at the install's start: failed there, nothing
 * written. */
static void test_short_answer(void **state)
{
	struct rig *rig = *state;

	chip.fault.subop = OSFI_OP_GET_INFO;
	chip.fault.nth = 2;
	chip.fault.short_answer = true;
	to_license_wait(rig);
	give_license(rig);
	run_until(rig, SLOT_STATE_WAIT_REMOVAL);
	assert_failed_touched("GET_INFO");
	assert_int_equal(strncmp(rec.last_text, "installing:", 11), 0);
	assert_int_equal(N_OP(OSFI_OP_PUT_LICENSE), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_presence_and_refusal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_swap_while_result_shows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_port_vanishes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_and_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_install, setup, teardown),
		cmocka_unit_test_setup_teardown(test_license_failed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_license_unrecorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_in_license_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_certificate_not_genuine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_at_each_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_lost_mid_install, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_mid_install, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finalize_answer_lost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_chip_after_finalize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_mid_install, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_chip_after_lost_finalize, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_port_gone_in_reconnect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_leftover_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_answer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_answer_lost_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adopt_installed_chip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_already_installed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_aside_and_halted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_global_license_job, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_final_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_product, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_wait_and_pause, setup, teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/* Slot state machine and its non-blocking AN3155/OSFI driver: see slot.h.
 *
 * I/O: one operation at a time of the slot's link (transport.h: probe, identify, one OSFI
 * request, reconnect); the link says what to watch, one event and one timer carry it. The
 * OSFI session engine decides which request comes next. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "db.h"
#include "job.h"
#include "link.h"
#include "transport.h"
#include "log.h"
#include "recorder.h"
#include "sfid-config.h"
#include "slot.h"
#include "util.h"
#include "vendor.h"

#define PROGRESS_EVENT_MS 200	/* at most this often per slot to watchers */
#define REMOVAL_MISSES 2	/* unanswered polls that mean "chip removed" */
#define PLAIN_CHUNK 8192	/* plain jobs: bytes per write or read-back operation */
/* The longest a slot waits for the ledger's answer about a serial number (the value taken,
 * or the write's outcome recorded): the answer queues behind other ledger work, then waits
 * for the ledger's lock (licensing.c) and SQLite's write lock, each with its own deadline. */
#define SERIAL_LEDGER_MS 30000

typedef void (*xfer_done_fn)(struct slot *s, int r);
struct job_device;

struct slot {
	struct event_base *base;
	const struct config_slot *cfg;
	unsigned index;
	unsigned retry_limit;
	const uint8_t *ca_pub;
	struct recorder *recorder;
	const struct slot_callbacks *cb;
	void *user;
	enum slot_state state;
	bool running;		/* started by an operator */
	bool pause_requested;

	struct transport *tp;	/* the link to the chip, NULL while the port is closed */
	const struct transport_ops *link_ops;	/* NULL: by the port specification */
	char port_name[128];
	char port_error[256];
	struct event *ev_io, *ev_io_timer, *ev_tick;
	int io_fd;		/* what ev_io watches now */
	short io_events;
	bool entry_ok;		/* the configured entry sequence parses */

	/* The link operation in progress and its results. */
	xfer_done_fn op_done;
	enum transport_presence presence;
	struct transport_identity ident;
	struct transport_answer ans;
	uint16_t last_subop;	/* of the last OSFI request */
	struct osfi_request held;	/* FINALIZE, sent once the attempt's step is on disk */

	/* The chip. */
	uint8_t uid[OSFI_UID_LEN];
	char uid_hex[2 * OSFI_UID_LEN + 1];
	bool have_uid;
	uint32_t pid;
	struct osfi_info info;
	uint8_t cert[OSFI_CERT_LEN];
	struct osfi_session *sess;
	uint8_t answer[AN3155_SPECIAL_MAX_ANSWER];
	void (*osfi_done)(struct slot *s, int r);
	/* After a failure at or after FINALIZE: the chip is asked what it holds before the
	 * failure (this text) is recorded. */
	char confirm_text[300];
	int64_t confirm_deadline;
	unsigned confirm_reads;

	struct rec_attempt *attempt;	/* the database row of this chip's attempt */
	unsigned chip_gen;		/* changes whenever the slot lets go of a chip */
	struct license_set lic;		/* licenses sent or to send (ledger rows: settle them) */
	bool license_reused;		/* every counted license was reused */
	bool in_license_queue;

	char fail_step[24];
	char fail_cause[200];
	int fail_kind;			/* enum db_failure_kind, -1 until decided */
	bool reserved;			/* holds one of the job's remaining chips */
	uint64_t bytes_done, bytes_total;
	int64_t t_attempt, t_install, t_progress_event;
	unsigned misses;
	unsigned id_reads;	/* Get ID answers read for this chip */

	/* The vendor backend's handle, NULL for an OSFI slot (vendor.h). */
	struct vendor_chip *vc;

	/* A plain job's chip: its memory, the sectors to erase, where the write or the
	 * read-back is. */
	const struct job_device *dev;
	uint16_t sectors[1024];
	size_t n_sectors;
	size_t plain_seg, plain_off, plain_n;
	uint8_t plain_back[PLAIN_CHUNK];
	/* Its serial number: the ledger's answer is for the request numbered serial_ticket
	 * while serial_wait holds (at most SERIAL_LEDGER_MS, on the tick timer); the value's
	 * index and bytes, the words written. */
	unsigned serial_ticket;
	bool serial_wait;
	bool serial_taken;		/* the ledger holds an open intent for this chip */
	bool serial_recording;		/* waiting for the written outcome's record */
	int64_t serial_idx;
	char serial_hex[2 * JOB_SERIAL_WIDTH_MAX + 1];
	uint8_t serial_buf[JOB_SERIAL_WIDTH_MAX + 16];
	uint8_t serial_back[JOB_SERIAL_WIDTH_MAX];

	/* Counters for status. */
	uint64_t n_ok, n_failed;
	char last_result[300];
};

static void slot_enter_state(struct slot *s, enum slot_state next);
static void slot_poll_chip(struct slot *s);
static void slot_serial_failed(struct slot *s, const char *reason);
static void slot_fail(struct slot *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

__attribute__((format(printf, 3, 4)))
static void slot_log(const struct slot *s, enum log_prio p, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!log_enabled(p))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_fields(p, s->cfg->name, s->have_uid ? s->uid_hex : NULL, "slot %s chip %s: %s",
		   s->cfg->name, s->have_uid ? s->uid_hex : "-", msg);
}

static const struct job *slot_job(const struct slot *s)
{
	return s->cb->job(s->user);
}

const char *slot_name(const struct slot *s)
{
	return s->cfg->name;
}

enum slot_state slot_state(const struct slot *s)
{
	return s->state;
}

bool slot_busy(const struct slot *s)
{
	return slot_state_busy(s->state) || (s->tp && transport_busy(s->tp)) ||
	       (s->vc && vendor_chip_busy(s->vc));
}

/* ---- timers ---- */

static void slot_tick_start(struct slot *s, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	evtimer_add(s->ev_tick, &tv);
}

static void slot_tick_stop(struct slot *s)
{
	evtimer_del(s->ev_tick);
}

/* ---- the link ----
 *
 * The slot runs one operation of its link (transport.h) at a time: the link says which
 * descriptor, events and deadline to watch; one event and one timer carry them. Resync and
 * retries are the link's. */

static void slot_port_lost(struct slot *s);
static void io_cb(evutil_socket_t fd, short what, void *arg);

/* Watches what the link asks for now. Called after every call into the link. */
static void slot_io_arm(struct slot *s)
{
	struct transport_watch w;
	short events;

	if (!s->tp)
		return;
	transport_watch(s->tp, &w);
	events = (short)(((w.events & TRANSPORT_IN) ? EV_READ : 0) |
			 ((w.events & TRANSPORT_OUT) ? EV_WRITE : 0));
	if (w.fd != s->io_fd || events != s->io_events) {
		event_del(s->ev_io);
		s->io_fd = w.fd;
		s->io_events = events;
		if (w.fd >= 0 && events) {
			event_assign(s->ev_io, s->base, w.fd, events | EV_PERSIST, io_cb, s);
			event_add(s->ev_io, NULL);
		}
	}
	if (w.deadline_ms >= 0) {
		int64_t left = w.deadline_ms - transport_now_ms(s->tp);
		struct timeval tv = { 0 };

		if (left > 0) {
			tv.tv_sec = left / 1000;
			tv.tv_usec = (left % 1000) * 1000;
		}
		evtimer_add(s->ev_io_timer, &tv);
	} else {
		evtimer_del(s->ev_io_timer);
	}
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct slot *s = arg;
	unsigned revents = ((what & EV_READ) ? TRANSPORT_IN : 0) |
			   ((what & EV_WRITE) ? TRANSPORT_OUT : 0);

	if (!s->tp)
		return;
	transport_io_ready(s->tp, revents);
	slot_io_arm(s);
}

static void io_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct slot *s = arg;

	if (!s->tp)
		return;
	transport_io_ready(s->tp, 0);
	slot_io_arm(s);
}

static void slot_op_cb(struct transport *t, int r, void *user_data)
{
	struct slot *s = user_data;
	xfer_done_fn fn = s->op_done;

	s->op_done = NULL;
	if (fn)
		fn(s, r);
}

/* Hands a starter's result on: an operation that could not start ends at once. */
static void slot_op_started(struct slot *s, xfer_done_fn done, int r)
{
	if (r < 0) {
		s->op_done = NULL;
		done(s, r);
		return;
	}
	slot_io_arm(s);
}

static void slot_probe(struct slot *s, unsigned flags, xfer_done_fn done)
{
	s->op_done = done;
	slot_op_started(s, done, transport_probe(s->tp, flags, &s->presence, slot_op_cb, s));
}

static void slot_identify(struct slot *s, xfer_done_fn done)
{
	s->op_done = done;
	slot_op_started(s, done, transport_identify(s->tp, &s->ident, slot_op_cb, s));
}

static void slot_reconnect(struct slot *s, unsigned within_ms, xfer_done_fn done)
{
	s->op_done = done;
	slot_op_started(s, done, transport_reconnect(s->tp, within_ms, slot_op_cb, s));
}

static void slot_request(struct slot *s, const struct osfi_request *req, xfer_done_fn done)
{
	s->last_subop = req->subop;
	s->op_done = done;
	s->ans = (struct transport_answer){ 0 };
	slot_op_started(s, done, transport_osfi(s->tp, req, s->answer,
						req->answer_max < sizeof(s->answer)
							? req->answer_max : sizeof(s->answer),
						&s->ans, slot_op_cb, s));
}

/* Drops the running operation without its callback. */
static void slot_op_cancel(struct slot *s)
{
	s->op_done = NULL;
	if (s->tp) {
		transport_cancel(s->tp);
		slot_io_arm(s);
	}
}

/* The link's debug lines, at debug level. */
static void slot_link_debug(void *user_data, const char *line)
{
	const struct slot *s = user_data;

	if (log_enabled(LOG_PRIO_DEBUG))
		slot_log(s, LOG_PRIO_DEBUG, "%s", line);
}

static void slot_link_lost(struct transport *t, void *user_data)
{
	slot_port_lost(user_data);
}

/* ---- port ---- */

static void slot_port_close(struct slot *s)
{
	xfer_done_fn fn = s->op_done;

	s->op_done = NULL;
	if (s->tp && transport_busy(s->tp)) {
		/* The operation's owner gets a port-gone result. */
		transport_cancel(s->tp);
		if (fn)
			fn(s, -TRANSPORT_E_GONE);
	}
	if (s->ev_io)
		event_del(s->ev_io);
	if (s->ev_io_timer)
		evtimer_del(s->ev_io_timer);
	s->io_fd = -1;
	s->io_events = 0;
	s->tp = transport_close(s->tp);
}

static int slot_port_open(struct slot *s)
{
	struct transport_options o;
	char err[256] = "";
	int r;

	transport_options_default(&o);
	o.baud = s->cfg->baud;
	o.entry = s->entry_ok ? s->cfg->entry : NULL;
	o.step_ms = s->cfg->ack_ms;
	o.block_ms = s->cfg->block_ms;
	o.answer_ms = s->cfg->special_ms;
	o.retries = s->cfg->retries;
	o.lost = slot_link_lost;
	/* Frames are formatted only for a debug log: a link without the callback skips it. */
	o.debug = log_enabled(LOG_PRIO_DEBUG) ? slot_link_debug : NULL;
	o.user_data = s;
	r = s->link_ops ? transport_open_with(s->link_ops, s->cfg->port, &o, &s->tp, err, sizeof(err))
			: transport_open(s->cfg->port, &o, &s->tp, err, sizeof(err));
	if (r < 0) {
		if (strcmp(err, s->port_error) != 0)
			slot_log(s, LOG_PRIO_WARNING, "cannot open port %s: %s; retrying every %u ms",
				 s->cfg->port, err[0] ? err : strerror(-r), s->cfg->reopen_ms);
		snprintf(s->port_error, sizeof(s->port_error), "%s", err[0] ? err : strerror(-r));
		return r;
	}
	s->port_error[0] = '\0';
	snprintf(s->port_name, sizeof(s->port_name), "%s", transport_port_name(s->tp));
	s->io_fd = -1;
	s->io_events = 0;
	slot_io_arm(s);
	if (strcmp(transport_backend(s->tp)->name, "uart") == 0)
		slot_log(s, LOG_PRIO_INFO, "port %s open (%s, %u baud)", s->port_name,
			 s->cfg->port, s->cfg->baud);
	else
		slot_log(s, LOG_PRIO_INFO, "port %s open (%s, USB DFU)", s->port_name,
			 s->cfg->port);
	return 0;
}

/* ---- attempt bookkeeping ---- */

static void slot_progress_event(struct slot *s, bool force)
{
	struct json_object *o;
	int64_t now = sfid_mono_ms();
	double rate = 0;

	if (!force && now - s->t_progress_event < PROGRESS_EVENT_MS)
		return;
	s->t_progress_event = now;
	if (now > s->t_install)
		rate = (double)s->bytes_done * 1000.0 / (double)(now - s->t_install);
	o = json_object_new_object();
	json_object_object_add(o, "slot", json_object_new_string(s->cfg->name));
	json_object_object_add(o, "chip", json_object_new_string(s->have_uid ? s->uid_hex : ""));
	json_object_object_add(o, "done", json_object_new_int64((int64_t)s->bytes_done));
	json_object_object_add(o, "total", json_object_new_int64((int64_t)s->bytes_total));
	json_object_object_add(o, "rate", json_object_new_int64((int64_t)rate));
	s->cb->event(s->user, "progress", o);
}

static void slot_release(struct slot *s)
{
	if (!s->reserved)
		return;
	s->reserved = false;
	s->cb->release(s->user);
}

/* What kind of failure ends the chip's attempt, from the state it was in (prev). */
static int slot_failure_kind(const struct slot *s, enum slot_state prev)
{
	bool licensed = false;

	for (size_t i = 0; i < s->lic.n; i++)
		licensed |= s->lic.id[i] > 0;
	if (s->fail_kind >= 0)
		return s->fail_kind;
	if (prev >= SLOT_STATE_INSTALLING || licensed)
		return DB_FAILURE_TOUCHED;
	if (s->cb->halted(s->user))
		return DB_FAILURE_HALTED;
	if (prev == SLOT_STATE_LICENSE)
		return DB_FAILURE_TOUCHED;
	return DB_FAILURE_UNTOUCHED;
}

/* Settles the ledger and the attempt of a chip that did not make it. */
static void slot_record_failure(struct slot *s, enum slot_state prev)
{
	int kind = slot_failure_kind(s, prev);
	char text[300];

	snprintf(text, sizeof(text), "%s: %s", s->fail_step, s->fail_cause);
	/* A chip refused at identification has its UID recorded with the refusal. */
	if (s->have_uid && prev < SLOT_STATE_CERTIFICATE)
		rec_attempt_step(s->recorder, s->attempt, s->fail_step, s->uid_hex, s->bytes_done);
	/* Licenses issued for this chip stay reusable by it: never a second count. */
	for (size_t i = 0; i < s->lic.n; i++)
		if (s->lic.id[i] > 0)
			rec_license_not_installed(s->recorder, s->lic.id[i], text);
	rec_attempt_end(s->recorder, s->attempt, DB_RESULT_FAILED, kind, text, s->bytes_done);
	slot_release(s);
	s->cb->chip_ended(s->user, kind, s->have_uid ? s->uid_hex : "");
	switch (kind) {
	case DB_FAILURE_TOUCHED:
		if (s->have_uid)
			rec_chip_update(s->recorder, s->uid_hex, "failed", NULL);
		s->n_failed++;
		snprintf(s->last_result, sizeof(s->last_result), "failed at %s: %s", s->fail_step,
			 s->fail_cause);
		break;
	case DB_FAILURE_UNTOUCHED:
		snprintf(s->last_result, sizeof(s->last_result), "refused untouched: %s",
			 s->fail_cause);
		break;
	case DB_FAILURE_HALTED:
		snprintf(s->last_result, sizeof(s->last_result), "not started, line halted: %s",
			 s->fail_cause);
		break;
	default:
		snprintf(s->last_result, sizeof(s->last_result), "%s", s->fail_cause);
		break;
	}
	s->fail_kind = kind;
}

static void slot_record_success(struct slot *s)
{
	const char *ps = osfi_product_state_name(s->info.product_state);
	unsigned duration_ms = (unsigned)(sfid_mono_ms() - s->t_attempt);

	for (size_t i = 0; i < s->lic.n; i++)
		if (s->lic.id[i] > 0)
			rec_license_installed(s->recorder, s->lic.id[i]);
	rec_attempt_end(s->recorder, s->attempt, DB_RESULT_OK, 0, NULL, s->bytes_done);
	rec_chip_update(s->recorder, s->uid_hex, "programmed", ps);
	/* The reservation becomes an installed chip. */
	slot_release(s);
	s->cb->chip_ended(s->user, -1, s->uid_hex);
	s->n_ok++;
	if (slot_job(s) && slot_job(s)->plain)
		snprintf(s->last_result, sizeof(s->last_result), "written %" PRIu64 " bytes in %u ms "
			 "(plain: not protected)", s->bytes_done, duration_ms);
	else
		snprintf(s->last_result, sizeof(s->last_result), "installed %" PRIu64 " bytes in "
			 "%u ms%s", s->bytes_done, duration_ms,
			 s->license_reused ? " (license reused)" : "");
}

static void slot_result_event(struct slot *s, bool ok)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "slot", json_object_new_string(s->cfg->name));
	json_object_object_add(o, "chip", json_object_new_string(s->have_uid ? s->uid_hex : ""));
	json_object_object_add(o, "result", json_object_new_string(
				       ok ? "ok" : s->fail_kind == DB_FAILURE_UNTOUCHED ? "refused" :
				       s->fail_kind == DB_FAILURE_HALTED ? "halted" :
				       s->fail_kind == DB_FAILURE_ALREADY ? "already-installed" :
				       "failed"));
	if (!ok) {
		json_object_object_add(o, "step", json_object_new_string(s->fail_step));
		json_object_object_add(o, "error", json_object_new_string(s->fail_cause));
	}
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)s->bytes_done));
	json_object_object_add(o, "duration_ms",
			       json_object_new_int64(sfid_mono_ms() - s->t_attempt));
	json_object_object_add(o, "license_reused", json_object_new_boolean(s->license_reused));
	json_object_object_add(o, "kind", json_object_new_string(
				       slot_job(s) ? job_kind(slot_job(s)) : "osfi"));
	s->cb->event(s->user, "result", o);
}

static void slot_chip_clear(struct slot *s)
{
	if (s->vc)
		vendor_chip_cancel(s->vc);
	s->sess = osfi_session_free(s->sess);
	s->have_uid = false;
	s->uid_hex[0] = '\0';
	rec_attempt_unref(s->attempt);
	s->attempt = NULL;
	s->chip_gen++;
	s->license_reused = false;
	explicit_bzero(&s->lic, sizeof(s->lic));
	slot_release(s);
	s->fail_kind = -1;
	s->fail_step[0] = s->fail_cause[0] = '\0';
	s->bytes_done = s->bytes_total = 0;
	s->misses = 0;
	if (s->in_license_queue) {
		s->in_license_queue = false;
		s->cb->license_cancel(s->user, s);
	}
}

/* ---- the one door ---- */

static void slot_enter_state(struct slot *s, enum slot_state next)
{
	enum slot_state prev = s->state;
	struct json_object *o;

	if (!slot_state_transition_allowed(prev, next))
		slot_log(s, LOG_PRIO_WARNING, "unexpected transition %s -> %s",
			 slot_state_to_string(prev), slot_state_to_string(next));
	slot_log(s, slot_state_busy(next) || next == SLOT_STATE_DONE ? LOG_PRIO_INFO : LOG_PRIO_DEBUG,
		 "%s -> %s", slot_state_to_string(prev), slot_state_to_string(next));
	slot_tick_stop(s);
	s->state = next;
	/* Whatever ends the serial step with the value's intent open closes it failed. */
	if (s->serial_taken && next != SLOT_STATE_VERIFYING)
		slot_serial_failed(s, s->fail_cause[0] ? s->fail_cause : "the slot let go of the "
				   "chip before the serial number's outcome was known");

	switch (next) {
	case SLOT_STATE_IDLE:
	case SLOT_STATE_PAUSED:
		slot_chip_clear(s);
		break;
	case SLOT_STATE_NO_PORT:
		slot_chip_clear(s);
		slot_tick_start(s, s->cfg->reopen_ms);
		break;
	case SLOT_STATE_WAIT_CHIP:
		slot_chip_clear(s);
		slot_tick_start(s, 0);
		break;
	case SLOT_STATE_IDENTIFYING:
		s->t_attempt = sfid_mono_ms();
		/* A ledger answer for the chip before is not for this one. */
		s->serial_wait = false;
		s->serial_taken = false;
		s->serial_recording = false;
		s->serial_ticket++;
		s->cb->chip_begun(s->user);
		rec_attempt_unref(s->attempt);
		s->attempt = slot_job(s) ? rec_attempt_begin(s->recorder, slot_job(s)->id,
							     s->cfg->name, slot_state_to_string(next))
					 : NULL;
		break;
	case SLOT_STATE_CERTIFICATE:
	case SLOT_STATE_LICENSE:
	case SLOT_STATE_INSTALLING:
	case SLOT_STATE_FINALIZING:
	case SLOT_STATE_VERIFYING:
		rec_attempt_step(s->recorder, s->attempt, slot_state_to_string(next),
				 s->have_uid ? s->uid_hex : NULL, s->bytes_done);
		if (next == SLOT_STATE_INSTALLING)
			s->t_install = sfid_mono_ms();
		break;
	case SLOT_STATE_DONE:
		slot_record_success(s);
		break;
	case SLOT_STATE_FAILED:
		slot_record_failure(s, prev);
		break;
	case SLOT_STATE_WAIT_REMOVAL:
		s->misses = 0;
		slot_tick_start(s, s->cfg->poll_ms);
		break;
	case _SLOT_STATE_MAX:
		break;
	}

	o = json_object_new_object();
	json_object_object_add(o, "slot", json_object_new_string(s->cfg->name));
	json_object_object_add(o, "from", json_object_new_string(slot_state_to_string(prev)));
	json_object_object_add(o, "state", json_object_new_string(slot_state_to_string(next)));
	json_object_object_add(o, "chip", json_object_new_string(s->have_uid ? s->uid_hex : ""));
	if (next == SLOT_STATE_FAILED) {
		json_object_object_add(o, "step", json_object_new_string(s->fail_step));
		json_object_object_add(o, "error", json_object_new_string(s->fail_cause));
	}
	s->cb->event(s->user, "state", o);

	if (next == SLOT_STATE_DONE || next == SLOT_STATE_FAILED) {
		slot_result_event(s, next == SLOT_STATE_DONE);
		s->cb->settled(s->user);
	}
}

/* Fails the chip in progress: records where and why, then waits for its removal. */
static void slot_fail(struct slot *s, const char *fmt, ...)
{
	va_list ap;

	if (!s->fail_step[0])
		snprintf(s->fail_step, sizeof(s->fail_step), "%s", slot_state_to_string(s->state));
	va_start(ap, fmt);
	vsnprintf(s->fail_cause, sizeof(s->fail_cause), fmt, ap);
	va_end(ap);
	if (s->fail_kind == DB_FAILURE_ALREADY)
		slot_log(s, LOG_PRIO_NOTICE, "%s", s->fail_cause);
	else
		slot_log(s, LOG_PRIO_ERR, "failed at %s: %s", s->fail_step, s->fail_cause);
	slot_enter_state(s, SLOT_STATE_FAILED);
	if (s->tp)
		slot_enter_state(s, SLOT_STATE_WAIT_REMOVAL);
}

static void slot_port_lost(struct slot *s)
{
	slot_log(s, LOG_PRIO_WARNING, "port %s disappeared (adapter unplugged?)", s->port_name);
	if (slot_state_busy(s->state)) {
		snprintf(s->fail_step, sizeof(s->fail_step), "%s", slot_state_to_string(s->state));
		snprintf(s->fail_cause, sizeof(s->fail_cause), "the chip or its adapter vanished");
		slot_log(s, LOG_PRIO_ERR, "failed at %s: %s", s->fail_step, s->fail_cause);
		slot_enter_state(s, SLOT_STATE_FAILED);
	}
	slot_op_cancel(s);
	slot_port_close(s);
	slot_enter_state(s, s->running ? SLOT_STATE_NO_PORT : SLOT_STATE_IDLE);
}

/* A transfer failure while working on a chip: port gone, or a step that failed. */
static bool slot_check_link(struct slot *s, int r)
{
	if (r == -TRANSPORT_E_GONE) {
		slot_port_lost(s);
		return false;
	}
	return true;
}

/* ---- next chip ---- */

/* Where a slot goes when it may take the next chip. */
static void slot_next_chip(struct slot *s)
{
	if (!s->running) {
		slot_enter_state(s, SLOT_STATE_IDLE);
		return;
	}
	if (s->pause_requested || s->cb->holding(s->user)) {
		slot_enter_state(s, SLOT_STATE_PAUSED);
		return;
	}
	slot_enter_state(s, SLOT_STATE_WAIT_CHIP);
}

/* ---- identification ---- */

static void slot_osfi_pump(struct slot *s);
static void slot_install_done(struct slot *s, int r);
static void slot_plain_identified(struct slot *s);
static void slot_plain_finish(struct slot *s);
static void slot_serial_begin(struct slot *s);
static void slot_osfi_serial(struct slot *s);

/* One sentence for a failed OSFI session: the chip's status, or what the link said. */
static void slot_describe_session(struct slot *s, char *text, size_t size)
{
	if (osfi_session_result(s->sess) == -OSFI_E_LINK) {
		char link[200];

		transport_describe(s->tp, link, sizeof(link));
		snprintf(text, size, "%s: %s", osfi_subop_name(s->last_subop),
			 link[0] ? link : an3155_strerror(osfi_session_link_errno(s->sess)));
		return;
	}
	osfi_session_describe(s->sess, text, size);
}

/* "Get ID failed: Get ID: timeout at the answer step": the link's sentence names the
 * command first. */
static void slot_describe_link(struct slot *s, int r)
{
	char text[200];

	transport_describe(s->tp, text, sizeof(text));
	if (!text[0]) {
		slot_fail(s, "identification failed: %s", an3155_strerror(r));
		return;
	}
	slot_fail(s, "%.*s failed: %s", (int)strcspn(text, ":"), text, text);
}

/* True when every license of the job is global: no ledger, no HSM. */
static bool slot_job_uncounted(const struct job *j)
{
	for (size_t i = 0; i < j->n_lic; i++)
		if (!j->lic[i].global)
			return false;
	return true;
}

/* A step that may only run once the attempt's row is on disk (licenses and tool runs name
 * it): then(s) runs after the recorder's sync if the slot still holds the same chip in the
 * same state; otherwise nothing, and a failed sync fails the chip with not_done. */
struct slot_sync {
	struct slot *s;
	unsigned gen;
	enum slot_state state;
	void (*then)(struct slot *s);
	const char *not_done;
};

static void slot_synced(void *arg, int r)
{
	struct slot_sync ss = *(struct slot_sync *)arg;
	struct slot *s = ss.s;

	free(arg);
	if (ss.gen != s->chip_gen || s->state != ss.state)
		return;
	if (r < 0 || !s->attempt || s->attempt->id <= 0) {
		slot_fail(s, "the attempt could not be recorded, so %s", ss.not_done);
		return;
	}
	ss.then(s);
}

static void slot_after_sync(struct slot *s, void (*then)(struct slot *s), const char *not_done)
{
	struct slot_sync *ss = calloc(1, sizeof(*ss));

	if (!ss) {
		slot_fail(s, "out of memory");
		return;
	}
	*ss = (struct slot_sync){ .s = s, .gen = s->chip_gen, .state = s->state, .then = then,
				  .not_done = not_done };
	if (recorder_sync(s->recorder, slot_synced, ss) < 0) {
		free(ss);
		slot_fail(s, "the database is not available; %s", not_done);
	}
}

static void slot_license_ask(struct slot *s)
{
	s->in_license_queue = true;
	s->cb->license_request(s->user, s);
}

static void slot_license_after_sync(struct slot *s)
{
	slot_after_sync(s, slot_license_ask, "no license is spent for it");
}

/* A chip that reports the job's image installed: the licenses the ledger still holds open
 * for it are taken as the ones it installed. True when it stands as installed. */
static bool slot_adopt_licenses(struct slot *s)
{
	struct license_set set = { 0 };

	if (!s->cb->adopt_licenses(s->user, s->uid_hex, &set))
		return false;
	s->lic = set;
	s->license_reused = set.n > 0;	/* none: a global job's chip that reached FINALIZE */
	return true;
}

static void slot_cert_done(struct slot *s, int r)
{
	const struct job *job = slot_job(s);
	const char *halt;
	const struct osfi_info *info = osfi_session_info(s->sess);
	const struct osfi_cert *cert = osfi_session_cert(s->sess);
	char text[300];
	unsigned failures;

	if (info) {
		s->info = *info;
		if (!s->have_uid) {
			memcpy(s->uid, info->uid, sizeof(s->uid));
			sfid_hex(s->uid, sizeof(s->uid), s->uid_hex);
			s->have_uid = true;
		}
	}
	if (r < 0) {
		slot_describe_session(s, text, sizeof(text));
		slot_fail(s, "%s", text);
		return;
	}
	if (info->product_state != STM32H5_PS_OPEN && job &&
	    osfi_info_installed_is(info, job->image_id) && slot_adopt_licenses(s)) {
		/* FINALIZE's answer was lost, or sfid stopped before it recorded the outcome:
		 * the chip holds the image, its licenses were installed. */
		slot_log(s, LOG_PRIO_NOTICE, "the chip reports the job's image installed with %s "
			 "(the outcome was not recorded when it was installed): recorded installed "
			 "now", s->lic.n == 0 ? "the job's global license" : s->lic.n == 1 ?
			 "the license issued to it" : "the licenses issued to it");
		s->info = *info;
		slot_enter_state(s, SLOT_STATE_CERTIFICATE);
		slot_enter_state(s, SLOT_STATE_VERIFYING);
		if (job->serial.on) {
			slot_osfi_serial(s);
			return;
		}
		slot_enter_state(s, SLOT_STATE_DONE);
		slot_enter_state(s, SLOT_STATE_WAIT_REMOVAL);
		return;
	}
	failures = s->cb->chip_failures(s->user, s->uid_hex);
	if (failures >= s->retry_limit) {
		slot_fail(s, "this chip already failed %u times on this line; set it aside for "
			  "analysis (no license was spent now)", failures);
		return;
	}
	if (info->product_state != STM32H5_PS_OPEN && job && job->serial.on &&
	    osfi_info_installed_is(info, job->image_id) &&
	    !s->cb->chip_installed(s->user, s->uid_hex)) {
		/* Installed by this line before, without its serial number (it failed, or sfid
		 * stopped): the serial number only, no license. */
		slot_log(s, LOG_PRIO_NOTICE, "the chip holds the job's image without its serial "
			 "number: the serial number only");
		s->info = *info;
		s->lic = (struct license_set){ 0 };
		slot_enter_state(s, SLOT_STATE_CERTIFICATE);
		slot_enter_state(s, SLOT_STATE_VERIFYING);
		slot_osfi_serial(s);
		return;
	}
	if (info->product_state != STM32H5_PS_OPEN && job &&
	    (osfi_info_installed_is(info, job->image_id) ||
	     s->cb->chip_installed(s->user, s->uid_hex))) {
		/* Left in its fixture, or put back: done already, neither a failure nor a
		 * refusal. */
		s->fail_kind = DB_FAILURE_ALREADY;
		slot_fail(s, "this chip already holds the job's image %.16s... (installed earlier); "
			  "remove it", job->image_id_hex);
		return;
	}
	if (info->product_state != STM32H5_PS_OPEN) {
		const char *n = osfi_product_state_name(info->product_state);

		slot_fail(s, "chip is in product state %s (0x%02x), not Open: it is already "
			  "programmed and was not touched; no license was spent", n ? n : "unknown",
			  info->product_state);
		return;
	}
	if (job && info->device_id != job->device_id) {
		slot_fail(s, "chip reports device id 0x%03x, the job is for 0x%03x", info->device_id,
			  job->device_id);
		return;
	}
	slot_enter_state(s, SLOT_STATE_CERTIFICATE);
	if (!cert) {
		slot_fail(s, "the chip sent no certificate");
		return;
	}
	if (memcmp(cert->uid, s->uid, OSFI_UID_LEN) != 0) {
		slot_fail(s, "the certificate names another chip than the one in the slot");
		return;
	}
	if (job && cert->device_id != job->device_id) {
		slot_fail(s, "the certificate is for device id 0x%03x, the job is for 0x%03x",
			  cert->device_id, job->device_id);
		return;
	}
	r = osfi_cert_verify(cert, s->ca_pub);
	if (r < 0) {
		slot_fail(s, "the chip certificate is not signed by the chip CA provisioned in the "
			  "token; the chip is not genuine or the token is for another vendor");
		return;
	}
	osfi_cert_encode(cert, s->cert);
	s->sess = osfi_session_free(s->sess);

	slot_enter_state(s, SLOT_STATE_LICENSE);
	if (!job) {
		slot_fail(s, "no job is loaded");
		return;
	}
	halt = s->cb->halted(s->user);
	if (halt) {
		slot_fail(s, "%s", halt);
		return;
	}
	if (slot_job_uncounted(job)) {
		/* Uncounted: the same global licenses serve every chip, no ledger entry. */
		struct license_set set = { .n = job->n_lic };

		for (size_t i = 0; i < job->n_lic; i++)
			memcpy(set.record[i], job->lic[i].record, OSFI_LICENSE_LEN);
		slot_licenses_ready(s, &set);
		explicit_bzero(&set, sizeof(set));
		return;
	}
	/* The attempt must be on disk before a ledger row can name it. */
	slot_license_after_sync(s);
}

static void slot_vendor_read_uid(struct slot *s);

/* Identification: the bootloader's command list and product id. */
static void slot_id_done(struct slot *s, int r)
{
	char why[200];

	if (!slot_check_link(s, r))
		return;
	if (r < 0) {
		slot_describe_link(s, r);
		return;
	}
	/* The command list is the chip's word on what it supports: OSFI needs Special and
	 * Extended Special (docs/protocol.md section 5). */
	if (slot_job(s) && slot_job(s)->plain) {
		if (s->vc) {
			slot_fail(s, "this slot runs the vendor backend (STM32CubeProgrammer), which "
				  "does not run plain jobs; the chip was not touched");
			return;
		}
		slot_plain_identified(s);
		return;
	}
	/* A vendor job's image is for ST's own SFI, which only the vendor backend installs. */
	if (slot_job(s) && slot_job(s)->vendor && !s->vc) {
		slot_fail(s, "the job is a vendor job (an image for ST's SFI, installed by "
			  "STM32CubeProgrammer) and this slot runs OSFI; only a slot with backend = "
			  "cubeprogrammer runs it; the chip was not touched");
		return;
	}
	if (slot_job(s) && !slot_job(s)->vendor && s->vc) {
		slot_fail(s, "this slot runs the vendor backend (STM32CubeProgrammer), which installs "
			  "only vendor jobs (sfictl job load --vendor IMAGE.sfi), not OSFI images; the "
			  "chip was not touched");
		return;
	}
	if (!s->ident.osfi && !s->vc) {
		slot_fail(s, "the bootloader (version %u.%u) does not list Get ID, Special (0x50) and "
			  "Extended Special (0x51): it cannot install OSFI images; no license was "
			  "spent", s->ident.version >> 4, s->ident.version & 0xf);
		return;
	}
	s->pid = s->ident.pid;
	if (slot_job(s) && s->pid != slot_job(s)->device_id && s->id_reads++ == 0) {
		/* The Get ID answer carries no checksum: a product id garbled on the line looks
		 * like another device. Ask once more before refusing the chip. */
		slot_log(s, LOG_PRIO_NOTICE, "the chip says product id 0x%03x, the job is for "
			 "0x%03x; asking again", s->pid, slot_job(s)->device_id);
		slot_identify(s, slot_id_done);
		return;
	}
	if (slot_job(s) && s->pid != slot_job(s)->device_id) {
		slot_fail(s, "the chip's product id is 0x%03x, the job is for 0x%03x", s->pid,
			  slot_job(s)->device_id);
		return;
	}
	if (s->vc) {
		slot_vendor_read_uid(s);
		return;
	}
	r = osfi_session_new_cert(&s->sess);
	if (r < 0) {
		snprintf(why, sizeof(why), "%s", strerror(-r));
		slot_fail(s, "cannot start a certificate session: %s", why);
		return;
	}
	s->osfi_done = slot_cert_done;
	slot_osfi_pump(s);
}

/* ---- plain programming: erase, write, read back, go ---- */

/* A chip a plain job can program: its flash and where its UID is, by product id. */
struct job_device {
	uint32_t pid;
	const char *name;
	uint32_t flash_base, flash_size, sector_size;
	uint32_t uid_addr;		/* 12 bytes */
};

/* From the reference manuals' memory maps (and h5emu's profiles, which follow them). */
static const struct job_device plain_devices[] = {
	{ STM32_PID_H56X_H57X, "STM32H56x/H57x", STM32H5_FLASH_BASE, STM32H5_FLASH_SIZE,
	  STM32H5_FLASH_SECTOR, STM32H5_UID_ADDR },
	{ STM32_PID_H503, "STM32H503", STM32H5_FLASH_BASE, 128u * 1024, STM32H5_FLASH_SECTOR,
	  STM32H5_UID_ADDR },
	{ STM32_PID_G47X_G48X, "STM32G47x/G48x", 0x08000000u, 512u * 1024, 2048u, 0x1fff7590u },
};

static const struct job_device *job_device_find(uint32_t pid)
{
	for (size_t i = 0; i < sizeof(plain_devices) / sizeof(plain_devices[0]); i++)
		if (plain_devices[i].pid == pid)
			return &plain_devices[i];
	return NULL;
}

static int job_plain_sectors(const struct job *j, const struct job_device *dev,
			     uint16_t *sectors, size_t *ret_n, char *reason, size_t reason_size)
{
	uint64_t limit = (uint64_t)dev->flash_base + dev->flash_size;
	uint32_t last = UINT32_MAX;
	size_t n = 0;

	for (size_t i = 0; i < j->n_seg; i++) {
		const struct job_segment *g = &j->seg[i];
		uint64_t end = (uint64_t)g->address + g->size;

		if (g->address < dev->flash_base || end > limit) {
			sfi_reason(reason, reason_size, "the firmware (0x%08" PRIx32 "..0x%08" PRIx64
				   ") does not fit the %s's %" PRIu32 " KiB of flash at 0x%08" PRIx32,
				   g->address, end - 1, dev->name, dev->flash_size / 1024,
				   dev->flash_base);
			return -ERANGE;
		}
		/* Segments are in address order: their sectors come ascending. */
		for (uint32_t p = (g->address - dev->flash_base) / dev->sector_size;
		     p <= (uint32_t)((end - 1 - dev->flash_base) / dev->sector_size); p++) {
			if (p != last)
				sectors[n++] = (uint16_t)p;
			last = p;
		}
	}
	if (j->serial.on && j->serial.address >= dev->flash_base &&
	    j->serial.address < limit) {
		/* The serial number's sector is erased too (a chip that comes back is
		 * written again), in order. */
		uint16_t p = (uint16_t)((j->serial.address - dev->flash_base) / dev->sector_size);
		size_t k = 0;

		while (k < n && sectors[k] < p)
			k++;
		if (k == n || sectors[k] != p) {
			memmove(sectors + k + 1, sectors + k, (n - k) * sizeof(*sectors));
			sectors[k] = p;
			n++;
		}
	}
	*ret_n = n;
	return 0;
}


static void slot_mem_fail(struct slot *s, int r, const char *what)
{
	char text[200];

	transport_describe(s->tp, text, sizeof(text));
	slot_fail(s, "%s failed: %s", what, text[0] ? text : an3155_strerror(r));
}

static void slot_plain_done(struct slot *s, int r)
{
	if (!slot_check_link(s, r))
		return;
	if (r < 0) {
		slot_mem_fail(s, r, "Go");
		return;
	}
	slot_enter_state(s, SLOT_STATE_DONE);
	slot_enter_state(s, SLOT_STATE_WAIT_REMOVAL);
}

/* Verified (and serial number written): Go, or leave the chip in its bootloader. */
static void slot_plain_finish(struct slot *s)
{
	const struct job *job = slot_job(s);

	if (job->go) {
		s->op_done = slot_plain_done;
		slot_op_started(s, slot_plain_done,
				transport_go(s->tp, job->go_address, slot_op_cb, s));
		return;
	}
	slot_plain_done(s, 0);
}

/* ---- the serial number: ledger intent, write, read back, outcome ---- */

/* The ledger's intent for this chip is closed failed (once), with the reason. */
static void slot_serial_failed(struct slot *s, const char *reason)
{
	if (!s->serial_taken)
		return;
	s->serial_taken = false;
	s->cb->serial_result(s->user, s, s->serial_idx, false, reason);
}

/* Waits for the ledger's answer, at most SERIAL_LEDGER_MS. */
static void slot_serial_wait(struct slot *s)
{
	s->serial_wait = true;
	slot_tick_start(s, SERIAL_LEDGER_MS);
}

/* The ledger's answer came (or is no longer awaited). */
static void slot_serial_unwait(struct slot *s)
{
	s->serial_wait = false;
	s->serial_recording = false;
	slot_tick_stop(s);
}

/* The ledger did not answer in time: the chip fails with a sentence; a late answer carries
 * an older ticket and is ignored (line.c closes an intent it opened failed). A written
 * outcome still on its way is left to the ledger: the row stays open until it is recorded,
 * or is recorded unconfirmed at the next start. */
static void slot_serial_timeout(struct slot *s)
{
	bool recording = s->serial_recording;

	slot_serial_unwait(s);
	s->serial_ticket++;
	if (recording)
		slot_fail(s, "the serial number %s was written and read back, but the ledger did "
			  "not record it within %d s", s->serial_hex, SERIAL_LEDGER_MS / 1000);
	else
		slot_fail(s, "the ledger gave no serial number within %d s; the chip holds the "
			  "firmware without one", SERIAL_LEDGER_MS / 1000);
}

/* A serial step's link operation ended in r: on a failure the value's intent is closed failed
 * (gone: the link went away, otherwise failed), then the chip fails with what (or the slot
 * follows its lost port). True when r was a failure. */
static bool slot_serial_op_failed(struct slot *s, int r, const char *gone, const char *failed,
				  const char *what)
{
	if (r >= 0)
		return false;
	slot_serial_failed(s, r == -TRANSPORT_E_GONE ? gone : failed);
	if (slot_check_link(s, r))
		slot_mem_fail(s, r, what);
	return true;
}

static void slot_serial_verified(struct slot *s, int r)
{
	const struct job *job = slot_job(s);
	char why[200];

	if (slot_serial_op_failed(s, r, "the chip's link went away during the serial number's "
				  "read-back", "the serial number's read-back failed",
				  "the serial number's read-back"))
		return;
	if (memcmp(s->serial_back, s->serial_buf, job->serial.width) != 0) {
		size_t i = 0;

		while (s->serial_back[i] == s->serial_buf[i])
			i++;
		snprintf(why, sizeof(why), "the serial number's read-back differs at 0x%08" PRIx64
			 ": wrote %02x, read %02x", (uint64_t)job->serial.address + i,
			 s->serial_buf[i], s->serial_back[i]);
		slot_serial_failed(s, why);
		slot_fail(s, "%s", why);
		return;
	}
	/* Recorded written before the chip is started or released. */
	s->serial_taken = false;
	slot_serial_wait(s);
	s->serial_recording = true;
	s->cb->serial_result(s->user, s, s->serial_idx, true, NULL);
}

void slot_serial_recorded(struct slot *s, unsigned ticket, int r, const char *why)
{
	if (!s->serial_wait || ticket != s->serial_ticket || s->state != SLOT_STATE_VERIFYING)
		return;
	slot_serial_unwait(s);
	if (r < 0) {
		slot_fail(s, "the serial number %s was written but its outcome cannot be recorded: "
			  "%s", s->serial_hex, why);
		return;
	}
	slot_log(s, LOG_PRIO_INFO, "serial number %s (index %" PRId64 ") written at 0x%08" PRIx32,
		 s->serial_hex, s->serial_idx, slot_job(s)->serial.address);
	if (slot_job(s)->plain) {
		slot_plain_finish(s);
		return;
	}
	slot_enter_state(s, SLOT_STATE_DONE);
	slot_enter_state(s, SLOT_STATE_WAIT_REMOVAL);
}

static void slot_serial_written(struct slot *s, int r)
{
	const struct job *job = slot_job(s);

	if (slot_serial_op_failed(s, r, "the chip's link went away during the serial number's "
				  "write", "the serial number's write failed",
				  "writing the serial number"))
		return;
	s->op_done = slot_serial_verified;
	slot_op_started(s, slot_serial_verified,
			transport_read(s->tp, job->serial.address, s->serial_back, job->serial.width,
				       slot_op_cb, s));
}

/* An OSFI job's chip: the value's place as read before the write. Erased: written; holding
 * the value already (written for this chip before its outcome was recorded): read back as
 * written; anything else: the chip keeps it and fails. */
static void slot_serial_looked(struct slot *s, int r)
{
	const struct job *job = slot_job(s);
	size_t span = job_serial_span(&job->serial);
	bool erased = true;

	if (slot_serial_op_failed(s, r, "the chip's link went away before the serial number's "
				  "write", "the serial number's place could not be read",
				  "reading the serial number's place"))
		return;
	if (memcmp(s->serial_back, s->serial_buf, span) == 0) {
		slot_log(s, LOG_PRIO_NOTICE, "the chip already holds its serial number %s at "
			 "0x%08" PRIx32, s->serial_hex, job->serial.address);
		slot_serial_verified(s, 0);
		return;
	}
	for (size_t i = 0; i < span; i++)
		erased &= s->serial_back[i] == 0xff;
	if (!erased) {
		char got[2 * JOB_SERIAL_WIDTH_MAX + 1];

		sfid_hex(s->serial_back, job->serial.width, got);
		slot_serial_failed(s, "the place holds other data; nothing was written");
		slot_fail(s, "the serial number's place 0x%08" PRIx32 " already holds %s, not %s "
			  "and not erased: nothing was written", job->serial.address, got,
			  s->serial_hex);
		return;
	}
	s->op_done = slot_serial_written;
	slot_op_started(s, slot_serial_written,
			transport_write(s->tp, job->serial.address, s->serial_buf, span,
					slot_op_cb, s));
}

bool slot_serial_taken(struct slot *s, unsigned ticket, int r, int64_t idx, const char *hex,
		       bool again, const char *why)
{
	const struct job *job = slot_job(s);
	size_t span;

	if (!s->serial_wait || ticket != s->serial_ticket || !job ||
	    s->state != SLOT_STATE_VERIFYING)
		return false;
	slot_serial_unwait(s);
	if (r < 0) {
		slot_fail(s, "no serial number for this chip: %s; the chip holds the firmware "
			  "without one", why);
		return true;
	}
	span = job_serial_span(&job->serial);
	s->serial_taken = true;
	s->serial_idx = idx;
	snprintf(s->serial_hex, sizeof(s->serial_hex), "%s", hex);
	memset(s->serial_buf, 0xff, sizeof(s->serial_buf));
	for (unsigned i = 0; i < job->serial.width; i++) {
		unsigned b = 0;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
			slot_serial_failed(s, "the ledger's value is not hex");
			slot_fail(s, "the ledger's serial value %s is not %u hex bytes", hex,
				  job->serial.width);
			return true;
		}
		s->serial_buf[i] = (uint8_t)b;
	}
	if (again)
		slot_log(s, LOG_PRIO_NOTICE, "the chip comes back: it gets its serial number %s "
			 "(index %" PRId64 ") again", hex, idx);
	if (!job->plain) {
		/* After an install nothing erased the value's place: what it holds first. */
		s->op_done = slot_serial_looked;
		slot_op_started(s, slot_serial_looked,
				transport_read(s->tp, job->serial.address, s->serial_back, span,
					       slot_op_cb, s));
		return true;
	}
	s->op_done = slot_serial_written;
	slot_op_started(s, slot_serial_written,
			transport_write(s->tp, job->serial.address, s->serial_buf, span,
					slot_op_cb, s));
	return true;
}

/* Asks the ledger for the chip's value (its intent is committed before the answer). */
static void slot_serial_begin(struct slot *s)
{
	const char *halt = s->cb->halted(s->user);

	if (halt) {
		slot_fail(s, "%s; the chip holds the firmware without its serial number", halt);
		return;
	}
	s->serial_taken = false;
	slot_serial_wait(s);
	s->cb->serial_take(s->user, s, ++s->serial_ticket);
}

/* The read-back, one chunk at a time, each compared with what was written. */
static void slot_plain_verify(struct slot *s, int r)
{
	const struct job *job = slot_job(s);
	const struct job_segment *g;

	if (!slot_check_link(s, r))
		return;
	if (r < 0) {
		slot_mem_fail(s, r, "read-back");
		return;
	}
	if (s->plain_n > 0) {
		g = &job->seg[s->plain_seg];
		for (size_t i = 0; i < s->plain_n; i++) {
			if (s->plain_back[i] != g->data[s->plain_off + i]) {
				slot_fail(s, "verify failed at 0x%08" PRIx64 ": wrote %02x, read %02x",
					  (uint64_t)g->address + s->plain_off + i,
					  g->data[s->plain_off + i], s->plain_back[i]);
				return;
			}
		}
		s->plain_off += s->plain_n;
		if (s->plain_off == g->size) {
			s->plain_seg++;
			s->plain_off = 0;
		}
	}
	if (s->plain_seg == job->n_seg) {
		if (job->serial.on)
			slot_serial_begin(s);
		else
			slot_plain_finish(s);
		return;
	}
	g = &job->seg[s->plain_seg];
	s->plain_n = g->size - s->plain_off < PLAIN_CHUNK ? g->size - s->plain_off : PLAIN_CHUNK;
	s->op_done = slot_plain_verify;
	slot_op_started(s, slot_plain_verify,
			transport_read(s->tp, g->address + (uint32_t)s->plain_off, s->plain_back,
				       s->plain_n, slot_op_cb, s));
}

/* The writes, one chunk at a time (progress between them). */
static void slot_plain_write(struct slot *s, int r)
{
	const struct job *job = slot_job(s);
	const struct job_segment *g;

	if (!slot_check_link(s, r))
		return;
	if (r < 0) {
		slot_mem_fail(s, r, s->plain_n ? "write" : "erase");
		return;
	}
	if (s->plain_n > 0) {
		s->bytes_done += s->plain_n;
		s->plain_off += s->plain_n;
		slot_progress_event(s, s->bytes_done == s->bytes_total);
		if (s->plain_off == job->seg[s->plain_seg].size) {
			s->plain_seg++;
			s->plain_off = 0;
		}
	}
	if (s->plain_seg == job->n_seg) {
		slot_enter_state(s, SLOT_STATE_VERIFYING);
		s->plain_seg = s->plain_off = s->plain_n = 0;
		slot_plain_verify(s, 0);
		return;
	}
	g = &job->seg[s->plain_seg];
	s->plain_n = g->size - s->plain_off < PLAIN_CHUNK ? g->size - s->plain_off : PLAIN_CHUNK;
	s->op_done = slot_plain_write;
	slot_op_started(s, slot_plain_write,
			transport_write(s->tp, g->address + (uint32_t)s->plain_off,
					g->data + s->plain_off, s->plain_n, slot_op_cb, s));
}

/* The chip's UID is read: the chip may be written. */
static void slot_plain_uid(struct slot *s, int r)
{
	const struct job *job = slot_job(s);
	const char *halt;
	char why[300];
	unsigned failures;

	if (!slot_check_link(s, r))
		return;
	if (r < 0) {
		slot_mem_fail(s, r, "reading the chip's UID");
		return;
	}
	sfid_hex(s->uid, sizeof(s->uid), s->uid_hex);
	s->have_uid = true;
	failures = s->cb->chip_failures(s->user, s->uid_hex);
	if (failures >= s->retry_limit) {
		slot_fail(s, "this chip already failed %u times on this line; set it aside for "
			  "analysis", failures);
		return;
	}
	if (s->cb->chip_installed(s->user, s->uid_hex)) {
		s->fail_kind = DB_FAILURE_ALREADY;
		slot_fail(s, "this chip already holds the job's firmware %.16s... (written earlier); "
			  "remove it", job->digest_hex);
		return;
	}
	if (job_plain_sectors(job, s->dev, s->sectors, &s->n_sectors, why, sizeof(why)) < 0) {
		slot_fail(s, "%s; the chip was not touched", why);
		return;
	}
	halt = s->cb->halted(s->user);
	if (halt) {
		slot_fail(s, "%s", halt);
		return;
	}
	/* No license: a plain job goes from identification straight to writing. */
	slot_enter_state(s, SLOT_STATE_INSTALLING);
	s->bytes_total = job->fw_bytes;
	s->bytes_done = 0;
	s->plain_seg = s->plain_off = s->plain_n = 0;
	s->op_done = slot_plain_write;
	slot_op_started(s, slot_plain_write,
			transport_erase(s->tp, s->sectors, s->n_sectors, slot_op_cb, s));
}

/* A plain job's chip after identification: which device it is, then its UID. */
static void slot_plain_identified(struct slot *s)
{
	s->pid = s->ident.pid;
	s->dev = job_device_find(s->pid);
	if (!s->dev && s->id_reads++ == 0) {
		/* The Get ID answer carries no checksum: ask once more. */
		slot_log(s, LOG_PRIO_NOTICE, "the chip says product id 0x%03x, which plain jobs "
			 "do not know; asking again", s->pid);
		slot_identify(s, slot_id_done);
		return;
	}
	if (!s->dev) {
		slot_fail(s, "the chip's product id is 0x%03x: plain jobs know the STM32H56x/H57x "
			  "(0x484), STM32H503 (0x474) and STM32G47x/G48x (0x469); the chip was not "
			  "touched", s->pid);
		return;
	}
	s->op_done = slot_plain_uid;
	slot_op_started(s, slot_plain_uid,
			transport_read(s->tp, s->dev->uid_addr, s->uid, sizeof(s->uid), slot_op_cb, s));
}

/* ---- presence ---- */

static void slot_sync_done(struct slot *s, int r)
{
	if (!slot_check_link(s, r))
		return;
	switch (s->state) {
	case SLOT_STATE_WAIT_CHIP:
		if (r < 0) {
			slot_tick_start(s, s->cfg->poll_ms);
			return;
		}
		/* The chips in progress never add up to more than the job's target. */
		switch (s->cb->reserve(s->user)) {
		case SLOT_RESERVE_GRANTED:
			s->reserved = true;
			break;
		case SLOT_RESERVE_WAIT:
			slot_log(s, LOG_PRIO_DEBUG, "a chip answers; the job's remaining chips are "
				 "in progress in other slots, waiting");
			slot_tick_start(s, s->cfg->poll_ms);
			return;
		case SLOT_RESERVE_COMPLETE:
			slot_next_chip(s);
			return;
		case SLOT_RESERVE_NO_JOB:
			break;
		}
		slot_log(s, LOG_PRIO_INFO, "a chip answers");
		slot_enter_state(s, SLOT_STATE_IDENTIFYING);
		s->id_reads = 0;
		slot_identify(s, slot_id_done);
		return;
	case SLOT_STATE_WAIT_REMOVAL:
		if (r < 0 && ++s->misses >= REMOVAL_MISSES) {
			slot_log(s, LOG_PRIO_INFO, "chip removed");
			slot_next_chip(s);
			return;
		}
		/* A synchronised bootloader NACKs a second 0x7F; an ACK means a bootloader that
		 * just started: another chip was put in (or this one was reset). */
		if (r == 0 && s->presence == TRANSPORT_FRESH) {
			slot_log(s, LOG_PRIO_INFO, "chip replaced");
			slot_next_chip(s);
			return;
		}
		if (r == 0)
			s->misses = 0;
		slot_tick_start(s, s->cfg->poll_ms);
		return;
	case SLOT_STATE_IDLE:
	case SLOT_STATE_NO_PORT:
	case SLOT_STATE_IDENTIFYING:
	case SLOT_STATE_CERTIFICATE:
	case SLOT_STATE_LICENSE:
	case SLOT_STATE_INSTALLING:
	case SLOT_STATE_FINALIZING:
	case SLOT_STATE_VERIFYING:
	case SLOT_STATE_DONE:
	case SLOT_STATE_FAILED:
	case SLOT_STATE_PAUSED:
	case _SLOT_STATE_MAX:
		break;
	}
}

static void slot_poll_chip(struct slot *s)
{
	/* The entry sequence, when there is one, runs before the polls for a new chip. */
	slot_probe(s, s->state == SLOT_STATE_WAIT_CHIP ? TRANSPORT_PROBE_ENTER : 0, slot_sync_done);
}

/* ---- OSFI sessions ---- */

static void slot_osfi_answered(struct slot *s, int r)
{
	uint64_t done, total;

	if (r == -TRANSPORT_E_GONE) {
		slot_port_lost(s);
		return;
	}
	if (r < 0)
		osfi_session_link_error(s->sess, r);
	else
		osfi_session_answer(s->sess, s->ans.status, s->answer, s->ans.len);
	osfi_session_progress(s->sess, &done, &total);
	if (s->state == SLOT_STATE_INSTALLING && done != s->bytes_done) {
		s->bytes_done = done;
		s->bytes_total = total;
		slot_progress_event(s, done == total);
	}
	slot_osfi_pump(s);
}

static void slot_reconnect_done(struct slot *s, int r)
{
	if (r == -TRANSPORT_E_GONE) {
		slot_port_lost(s);
		return;
	}
	if (r < 0) {
		osfi_session_link_error(s->sess, r);
	} else {
		osfi_session_reconnected(s->sess);
	}
	slot_osfi_pump(s);
}

/* Enters the slot state that matches the install session's step. */
static void slot_follow_step(struct slot *s)
{
	enum slot_state want = s->state;

	switch (osfi_session_step(s->sess)) {
	case OSFI_STEP_FINALIZE:
		want = SLOT_STATE_FINALIZING;
		break;
	case OSFI_STEP_RECONNECT:
	case OSFI_STEP_VERIFY:
		want = SLOT_STATE_VERIFYING;
		break;
	case OSFI_STEP_GET_INFO:
	case OSFI_STEP_ABORT:
	case OSFI_STEP_GET_INFO_AGAIN:
	case OSFI_STEP_GET_CERT:
	case OSFI_STEP_PUT_LICENSE:
	case OSFI_STEP_PUT_HEADER:
	case OSFI_STEP_PUT_DATA:
	case OSFI_STEP_DONE:
	case OSFI_STEP_FAILED:
	case _OSFI_STEP_MAX:
		return;
	}
	if (want != s->state && s->state >= SLOT_STATE_INSTALLING && s->state < want)
		slot_enter_state(s, want);
}

static void slot_send_held(struct slot *s)
{
	slot_request(s, &s->held, slot_osfi_answered);
}

static void slot_osfi_pump(struct slot *s)
{
	struct osfi_request req;
	enum slot_state before = s->state;
	int r;

	switch (osfi_session_next(s->sess, &req)) {
	case OSFI_NEXT_REQUEST:
		if (s->state >= SLOT_STATE_INSTALLING)
			slot_follow_step(s);
		if (s->state == SLOT_STATE_FINALIZING && before != SLOT_STATE_FINALIZING) {
			/* FINALIZE cannot be taken back: the attempt's step goes to disk first,
			 * so that a chip finalized before sfid stopped is known as this job's
			 * even when no ledger row names it (a global license). The session is
			 * not called until the request is sent, so its data stay valid. */
			s->held = req;
			slot_after_sync(s, slot_send_held, "FINALIZE was not sent");
			return;
		}
		slot_request(s, &req, slot_osfi_answered);
		return;
	case OSFI_NEXT_RECONNECT:
		slot_follow_step(s);
		slot_reconnect(s, s->cfg->special_ms, slot_reconnect_done);
		return;
	case OSFI_NEXT_DONE:
		s->osfi_done(s, 0);
		return;
	case OSFI_NEXT_FAILED:
		r = osfi_session_result(s->sess);
		s->osfi_done(s, r < 0 ? r : -EIO);
		return;
	}
}

/* ---- install ---- */

/* The licenses of an installed chip are recorded installed now (not with the attempt's
 * outcome): whatever befalls the steps after the install, the chip holds them. */
static void slot_settle_installed(struct slot *s)
{
	for (size_t i = 0; i < s->lic.n; i++)
		if (s->lic.id[i] > 0) {
			rec_license_installed(s->recorder, s->lic.id[i]);
			s->lic.id[i] = 0;
		}
}

/* An installed chip in another product state than the job declared for its image: its
 * licenses are installed, it takes no serial number, and the line halts (every chip of the
 * image ends so). */
static void slot_osfi_state_wrong(struct slot *s)
{
	const struct job *job = slot_job(s);
	const char *got = osfi_product_state_name(s->info.product_state);
	const char *want = osfi_product_state_name(job->final_state);
	char why[300];

	slot_settle_installed(s);
	snprintf(why, sizeof(why), "after the install the chip is %s, not %s as declared at job "
		 "load (--image-state): the image is installed, no serial number was taken; load "
		 "the job again with the state its image sets", got ? got : "in an unknown "
		 "product state", want ? want : "?");
	if (s->cb->halt)
		s->cb->halt(s->user, why);
	slot_fail(s, "%s", why);
}

/* An OSFI job's chip after its install (or found installed without its value): the serial
 * number, in the state the image left it, which the supervisor declared. */
static void slot_osfi_serial(struct slot *s)
{
	const struct job *job = slot_job(s);
	const char *ps = osfi_product_state_name(s->info.product_state);

	slot_settle_installed(s);
	if (!job_serial_state_takes_writes(s->info.product_state) ||
	    (job->has_final_state && s->info.product_state != job->final_state)) {
		slot_osfi_state_wrong(s);
		return;
	}
	slot_log(s, LOG_PRIO_INFO, "the chip is %s: its serial number next", ps ? ps : "?");
	slot_serial_begin(s);
}

static void slot_install_succeeded(struct slot *s)
{
	if (s->sess)
		slot_follow_step(s);
	if (s->state != SLOT_STATE_VERIFYING) {
		slot_enter_state(s, SLOT_STATE_FINALIZING);
		slot_enter_state(s, SLOT_STATE_VERIFYING);
	}
	s->sess = osfi_session_free(s->sess);
	{
		const char *ps = osfi_product_state_name(s->info.product_state);

		slot_log(s, LOG_PRIO_INFO, "installed %" PRIu64 " bytes; chip is %s", s->bytes_done,
			 ps ? ps : "in an unknown product state");
	}
	if (slot_job(s) && slot_job(s)->serial.on) {
		slot_osfi_serial(s);
		return;
	}
	slot_enter_state(s, SLOT_STATE_DONE);
	slot_enter_state(s, SLOT_STATE_WAIT_REMOVAL);
}

static void slot_confirm_sync(struct slot *s);

/* The chip's GET_INFO after a failure at or after FINALIZE: a chip that reports its last
 * session finalized with the job's image (and the product state the image sets) installed
 * it, whatever became of FINALIZE's answer. */
static void slot_confirm_info(struct slot *s, int r)
{
	const struct job *j = slot_job(s);
	struct osfi_info info;

	if (!slot_check_link(s, r))
		return;
	if (r < 0 || s->ans.status != OSFI_ST_OK ||
	    osfi_info_decode(s->answer, s->ans.len, &info) < 0) {
		if (++s->confirm_reads < 3 && sfid_mono_ms() < s->confirm_deadline) {
			slot_confirm_sync(s);
			return;
		}
		slot_fail(s, "%s; the chip could not be asked what it holds", s->confirm_text);
		return;
	}
	if (s->have_uid && memcmp(info.uid, s->uid, OSFI_UID_LEN) != 0) {
		slot_fail(s, "%s; another chip answered: the chip was removed before it was "
			  "verified, its license stays reusable", s->confirm_text);
		/* The new chip already answered (it is not a fresh bootloader any more): take
		 * it now instead of waiting for a removal that already happened. */
		if (s->state == SLOT_STATE_WAIT_REMOVAL) {
			slot_log(s, LOG_PRIO_INFO, "chip replaced");
			slot_next_chip(s);
		}
		return;
	}
	if (j && osfi_info_installed_is(&info, j->image_id) &&
	    (!j->has_final_state || info.product_state == j->final_state)) {
		slot_log(s, LOG_PRIO_NOTICE, "%s, but the chip reports the job's image installed "
			 "and its session finalized: it is recorded installed", s->confirm_text);
		s->info = info;
		slot_install_succeeded(s);
		return;
	}
	if (j && osfi_info_installed_is(&info, j->image_id) && j->serial.on) {
		s->info = info;
		slot_osfi_state_wrong(s);
		return;
	}
	slot_fail(s, "%s; the chip reports no finished install of the job's image", s->confirm_text);
}

static void slot_confirm_synced(struct slot *s, int r)
{
	static const struct osfi_request get_info = {
		.subop = OSFI_OP_GET_INFO,
		.answer_max = OSFI_INFO_LEN,
	};

	if (!slot_check_link(s, r))
		return;
	if (r < 0) {
		slot_fail(s, "%s; the chip did not answer again", s->confirm_text);
		return;
	}
	slot_request(s, &get_info, slot_confirm_info);
}

/* Offers 0x7F until the chip listens again, at most until the confirmation's deadline. */
static void slot_confirm_sync(struct slot *s)
{
	int64_t left = s->confirm_deadline - sfid_mono_ms();

	slot_reconnect(s, left > 0 ? (unsigned)left : 0, slot_confirm_synced);
}

/* FINALIZE was sent, then something failed (its answer lost or garbled, the reset after it
 * missed, the verification): the chip may have installed the image all the same. Resync
 * and ask it before anything is recorded. */
static void slot_confirm_start(struct slot *s, const char *text)
{
	snprintf(s->confirm_text, sizeof(s->confirm_text), "%s", text);
	s->confirm_reads = 0;
	s->confirm_deadline = sfid_mono_ms() + s->cfg->special_ms;
	slot_log(s, LOG_PRIO_WARNING, "%s; asking the chip what it holds", text);
	s->sess = osfi_session_free(s->sess);
	slot_confirm_sync(s);
}

static void slot_install_done(struct slot *s, int r)
{
	const struct osfi_info *info = osfi_session_info(s->sess);
	char text[300];

	if (r < 0) {
		if (osfi_session_result(s->sess) == -OSFI_E_LINK &&
		    osfi_session_link_errno(s->sess) == -TRANSPORT_E_GONE) {
			slot_port_lost(s);
			return;
		}
		/* The chip that answers after FINALIZE may be another one (the operator swapped
		 * chips too early): this one's result stays unknown, the new one is taken next. */
		bool replaced = s->state == SLOT_STATE_VERIFYING && info && s->have_uid &&
				memcmp(info->uid, s->uid, OSFI_UID_LEN) != 0;

		slot_describe_session(s, text, sizeof(text));
		snprintf(s->fail_step, sizeof(s->fail_step), "%s", slot_state_to_string(s->state));
		if (replaced) {
			slot_fail(s, "another chip answered after FINALIZE: the chip was removed before "
				  "it was verified; its license stays reusable");
			if (s->state == SLOT_STATE_WAIT_REMOVAL) {
				slot_log(s, LOG_PRIO_INFO, "chip replaced");
				slot_next_chip(s);
			}
			return;
		}
		if (s->state >= SLOT_STATE_FINALIZING) {
			slot_confirm_start(s, text);
			return;
		}
		slot_fail(s, "%s", text);
		return;
	}
	if (info)
		s->info = *info;
	slot_install_succeeded(s);
}

/* ---- the vendor backend ----
 *
 * A slot with backend = cubeprogrammer runs STM32_Programmer_CLI (vendor.h) for the
 * certificate, license and install steps. The tool opens the port itself: the slot's link
 * is closed while a step runs and opened again after the last one. */

/* Opens the port again after the tool; false when it is gone (the slot then waits for it,
 * and the chip's attempt, when one is open, is recorded failed with cause). */
static bool slot_vendor_reopen(struct slot *s, const char *cause)
{
	if (s->tp || slot_port_open(s) == 0)
		return true;
	if (slot_state_busy(s->state)) {
		if (!s->fail_step[0])
			snprintf(s->fail_step, sizeof(s->fail_step), "%s",
				 slot_state_to_string(s->state));
		snprintf(s->fail_cause, sizeof(s->fail_cause), "%s%sthe port did not open again "
			 "after the tool", cause ? cause : "", cause ? "; " : "");
		slot_log(s, LOG_PRIO_ERR, "failed at %s: %s", s->fail_step, s->fail_cause);
		slot_enter_state(s, SLOT_STATE_FAILED);
	}
	slot_enter_state(s, s->running ? SLOT_STATE_NO_PORT : SLOT_STATE_IDLE);
	return false;
}

static void slot_vendor_fail(struct slot *s, const char *cause)
{
	if (!s->fail_step[0])
		snprintf(s->fail_step, sizeof(s->fail_step), "%s", slot_state_to_string(s->state));
	if (slot_vendor_reopen(s, cause))
		slot_fail(s, "%s", cause);
}

static void slot_vendor_installed(void *user, int r, const char *cause)
{
	struct slot *s = user;

	if (r < 0) {
		slot_vendor_fail(s, cause);
		return;
	}
	s->bytes_done = s->bytes_total;
	if (slot_vendor_reopen(s, NULL)) {
		slot_install_succeeded(s);
		return;
	}
}

static void slot_vendor_install(struct slot *s, bool global)
{
	const struct job *job = slot_job(s);
	int r;

	slot_enter_state(s, SLOT_STATE_INSTALLING);
	s->bytes_total = job->image_len > OSFI_HEADER_LEN ? job->image_len - OSFI_HEADER_LEN : 0;
	r = vendor_install(s->vc, s->port_name, s->cfg->baud, job, global, slot_vendor_installed, s);
	if (r < 0)
		slot_vendor_fail(s, "STM32_Programmer_CLI could not be started for the install");
}

static void slot_vendor_licensed(void *user, int r, const char *cause)
{
	struct slot *s = user;

	if (r < 0) {
		slot_vendor_fail(s, cause);
		return;
	}
	s->license_reused = s->lic.n == 1 && s->lic.reused[0];
	slot_vendor_install(s, false);
}

static void slot_vendor_cert_done(void *user, int r, const char *cause)
{
	struct slot *s = user;
	const struct job *job = slot_job(s);
	const char *halt;
	unsigned failures;

	if (r < 0) {
		slot_vendor_fail(s, cause);
		return;
	}
	failures = s->cb->chip_failures(s->user, s->uid_hex);
	if (failures >= s->retry_limit) {
		slot_vendor_fail(s, "this chip already failed on this line as often as allowed; set "
				 "it aside for analysis (no license was spent now)");
		return;
	}
	if (s->cb->chip_installed(s->user, s->uid_hex)) {
		s->fail_kind = DB_FAILURE_ALREADY;
		slot_vendor_fail(s, "this chip is recorded installed by the job (installed earlier); "
				 "remove it");
		return;
	}
	slot_enter_state(s, SLOT_STATE_LICENSE);
	if (!job) {
		slot_vendor_fail(s, "no job is loaded");
		return;
	}
	halt = s->cb->halted(s->user);
	if (halt) {
		slot_vendor_fail(s, halt);
		return;
	}
	if (slot_job_uncounted(job)) {
		slot_vendor_install(s, true);
		return;
	}
	r = vendor_license(s->vc, job, &s->lic, slot_vendor_licensed, s);
	if (r < 0)
		slot_vendor_fail(s, "the license step could not start");
}

static void slot_vendor_run(struct slot *s)
{
	int r;

	slot_port_close(s);
	slot_enter_state(s, SLOT_STATE_CERTIFICATE);
	r = vendor_certificate(s->vc, s->port_name, s->cfg->baud, s->uid_hex, s->attempt->id,
			       slot_vendor_cert_done, s);
	if (r < 0)
		slot_vendor_fail(s, "STM32_Programmer_CLI could not be started for the certificate");
}

/* After the UID: the attempt's row goes to disk first (the tool's runs and the ledger's rows
 * name it). */
static void slot_vendor_begin(struct slot *s)
{
	slot_after_sync(s, slot_vendor_run, "the tool was not run");
}

/* The chip's identity is its 96-bit UID, read through the bootloader before the tool gets
 * the port: the ledger, the retry limit and the trail know the chip by it. */
static void slot_vendor_uid(struct slot *s, int r)
{
	if (!slot_check_link(s, r))
		return;
	if (r < 0) {
		char text[200];

		/* Never an identity made up: without its UID the chip is not programmed. */
		transport_describe(s->tp, text, sizeof(text));
		slot_fail(s, "reading the chip's UID failed: %s; the tool was not run",
			  text[0] ? text : an3155_strerror(r));
		return;
	}
	sfid_hex(s->uid, STM32H5_UID_LEN, s->uid_hex);
	s->have_uid = true;
	slot_vendor_begin(s);
}

static void slot_vendor_read_uid(struct slot *s)
{
	s->op_done = slot_vendor_uid;
	slot_op_started(s, slot_vendor_uid,
			transport_read(s->tp, STM32H5_UID_ADDR, s->uid, STM32H5_UID_LEN, slot_op_cb,
				       s));
}

bool slot_license_wanted(const struct slot *s)
{
	return s->state == SLOT_STATE_LICENSE && s->tp;
}

const uint8_t *slot_license_cert(const struct slot *s)
{
	return s->cert;
}

unsigned slot_serial_ticket(const struct slot *s)
{
	return s->serial_ticket;
}

const char *slot_chip_hex(const struct slot *s)
{
	return s->uid_hex;
}

int64_t slot_attempt_id(const struct slot *s)
{
	return s->attempt ? s->attempt->id : 0;
}

void slot_license_dequeued(struct slot *s)
{
	s->in_license_queue = false;
}

void slot_licenses_ready(struct slot *s, const struct license_set *set)
{
	const struct job *job = slot_job(s);
	bool counted = false, all_reused = true;
	char why[200];
	int r;

	s->in_license_queue = false;
	s->lic = *set;
	for (size_t i = 0; i < set->n; i++)
		if (set->id[i] > 0) {
			counted = true;
			all_reused &= set->reused[i];
		}
	s->license_reused = counted && all_reused;
	slot_enter_state(s, SLOT_STATE_INSTALLING);

	r = osfi_session_new_install(job->image, job->image_len, &s->sess, why, sizeof(why));
	if (r < 0) {
		slot_fail(s, "cannot start the install session: %s", why);
		return;
	}
	for (size_t i = 0; i < set->n; i++) {
		r = osfi_session_add_license(s->sess, s->lic.record[i], OSFI_LICENSE_LEN);
		if (r < 0) {
			slot_fail(s, "license %zu of the chip is malformed: %s", i + 1, strerror(-r));
			return;
		}
	}
	if (job->has_final_state)
		osfi_session_expect_state(s->sess, job->final_state);
	s->bytes_total = job->image_len > OSFI_HEADER_LEN ? job->image_len - OSFI_HEADER_LEN : 0;
	s->osfi_done = slot_install_done;
	slot_osfi_pump(s);
}

void slot_license_failed(struct slot *s, const char *cause)
{
	s->in_license_queue = false;
	if (s->state != SLOT_STATE_LICENSE)
		return;
	slot_fail(s, "%s", cause);
}

/* ---- ticks ---- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct slot *s = arg;

	switch (s->state) {
	case SLOT_STATE_NO_PORT:
		if (slot_port_open(s) < 0) {
			slot_tick_start(s, s->cfg->reopen_ms);
			return;
		}
		slot_next_chip(s);
		return;
	case SLOT_STATE_WAIT_CHIP:
	case SLOT_STATE_WAIT_REMOVAL:
		if (!transport_busy(s->tp))
			slot_poll_chip(s);
		return;
	case SLOT_STATE_VERIFYING:
		/* The only timer of this state: the ledger's answer about a serial number. */
		if (s->serial_wait)
			slot_serial_timeout(s);
		return;
	case SLOT_STATE_IDLE:
	case SLOT_STATE_IDENTIFYING:
	case SLOT_STATE_CERTIFICATE:
	case SLOT_STATE_LICENSE:
	case SLOT_STATE_INSTALLING:
	case SLOT_STATE_FINALIZING:
	case SLOT_STATE_DONE:
	case SLOT_STATE_FAILED:
	case SLOT_STATE_PAUSED:
	case _SLOT_STATE_MAX:
		return;
	}
}

/* ---- control ---- */

int slot_start(struct slot *s)
{
	s->pause_requested = false;
	if (s->running && s->state != SLOT_STATE_PAUSED)
		return -EALREADY;
	s->running = true;
	if (s->state == SLOT_STATE_PAUSED && s->tp) {
		slot_enter_state(s, SLOT_STATE_WAIT_CHIP);
		return 0;
	}
	if (!s->tp && slot_port_open(s) < 0) {
		slot_enter_state(s, SLOT_STATE_NO_PORT);
		return 0;
	}
	slot_enter_state(s, SLOT_STATE_WAIT_CHIP);
	return 0;
}

void slot_stop(struct slot *s, const char *reason)
{
	s->running = false;
	s->pause_requested = false;
	if (slot_state_busy(s->state)) {
		/* An OSFI failure or abort leaves the chip Open and installable, and a license
		 * already issued stays reusable: recording it as not installed is safe. */
		if (!s->fail_step[0])
			snprintf(s->fail_step, sizeof(s->fail_step), "%s",
				 slot_state_to_string(s->state));
		snprintf(s->fail_cause, sizeof(s->fail_cause), "%s", reason);
		slot_log(s, LOG_PRIO_WARNING, "stopped at %s: %s", s->fail_step, reason);
		slot_op_cancel(s);
		slot_enter_state(s, SLOT_STATE_FAILED);
	}
	slot_op_cancel(s);
	slot_port_close(s);
	if (s->state != SLOT_STATE_IDLE)
		slot_enter_state(s, SLOT_STATE_IDLE);
}

void slot_pause(struct slot *s)
{
	if (!s->running)
		return;
	s->pause_requested = true;
	if (s->state == SLOT_STATE_WAIT_CHIP || s->state == SLOT_STATE_NO_PORT ||
	    s->state == SLOT_STATE_WAIT_REMOVAL) {
		slot_op_cancel(s);
		slot_enter_state(s, SLOT_STATE_PAUSED);
	}
}

struct json_object *slot_status_json(const struct slot *s)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "slot", json_object_new_string(s->cfg->name));
	json_object_object_add(o, "state", json_object_new_string(slot_state_to_string(s->state)));
	json_object_object_add(o, "backend", json_object_new_string(s->vc ? "cubeprogrammer"
									     : "osfi"));
	json_object_object_add(o, "running", json_object_new_boolean(s->running));
	json_object_object_add(o, "port", json_object_new_string(s->cfg->port));
	json_object_object_add(o, "chip", json_object_new_string(s->have_uid ? s->uid_hex : ""));
	json_object_object_add(o, "done", json_object_new_int64((int64_t)s->bytes_done));
	json_object_object_add(o, "total", json_object_new_int64((int64_t)s->bytes_total));
	json_object_object_add(o, "installed", json_object_new_int64((int64_t)s->n_ok));
	json_object_object_add(o, "failed", json_object_new_int64((int64_t)s->n_failed));
	json_object_object_add(o, "last_result", json_object_new_string(s->last_result));
	if (s->port_error[0])
		json_object_object_add(o, "port_error", json_object_new_string(s->port_error));
	return o;
}

struct json_object *slot_port_json(const struct slot *s)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "slot", json_object_new_string(s->cfg->name));
	json_object_object_add(o, "spec", json_object_new_string(s->cfg->port));
	json_object_object_add(o, "device", json_object_new_string(s->tp ? s->port_name : ""));
	json_object_object_add(o, "open", json_object_new_boolean(s->tp != NULL));
	json_object_object_add(o, "baud", json_object_new_int((int)s->cfg->baud));
	json_object_object_add(o, "entry", json_object_new_string(s->cfg->entry ? s->cfg->entry : ""));
	if (s->port_error[0])
		json_object_object_add(o, "error", json_object_new_string(s->port_error));
	return o;
}

int slot_new(const struct slot_params *p, struct slot **ret)
{
	const struct config_slot *cfg = p->cfg;
	struct slot *s;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = p->base;
	s->cfg = cfg;
	s->index = p->index;
	s->retry_limit = p->retry_limit;
	s->ca_pub = p->ca_pub;
	s->recorder = p->recorder;
	s->cb = p->cb;
	s->user = p->user;
	s->link_ops = p->link_ops;
	if (cfg->vendor && p->vendor && vendor_chip_new(p->vendor, cfg->name, &s->vc) < 0) {
		free(s);
		return -EIO;
	}
	s->state = SLOT_STATE_IDLE;
	s->fail_kind = -1;
	s->io_fd = -1;
	if (cfg->entry) {
		struct link_entry_step steps[LINK_ENTRY_MAX_STEPS];
		size_t n;

		s->entry_ok = link_entry_parse(cfg->entry, steps, LINK_ENTRY_MAX_STEPS, &n, NULL,
					       0) == 0;
	}
	s->ev_tick = evtimer_new(s->base, tick_cb, s);
	s->ev_io = event_new(s->base, -1, 0, io_cb, s);
	s->ev_io_timer = evtimer_new(s->base, io_timer_cb, s);
	if (!s->ev_tick || !s->ev_io || !s->ev_io_timer) {
		slot_free(s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

struct slot *slot_free(struct slot *s)
{
	if (!s)
		return NULL;
	s->op_done = NULL;
	slot_port_close(s);
	s->vc = vendor_chip_free(s->vc);
	s->sess = osfi_session_free(s->sess);
	rec_attempt_unref(s->attempt);
	explicit_bzero(&s->lic, sizeof(s->lic));
	if (s->ev_tick)
		event_free(s->ev_tick);
	if (s->ev_io)
		event_free(s->ev_io);
	if (s->ev_io_timer)
		event_free(s->ev_io_timer);
	free(s);
	return NULL;
}

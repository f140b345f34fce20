/* The line: the job, the slots, the halt, the job's counters and the watchers (see
 * line.h). The modules below it (slot, licensing, recorder) reach it only through the
 * callbacks registered here when they are created. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "db.h"
#include "hook.h"
#include "job.h"
#include "licensing.h"
#include "line.h"
#include "log.h"
#include "recorder.h"
#include "server.h"
#include "sfid-config.h"
#include "slot.h"
#include "vendor.h"
#include "tokens.h"

void sfid_broadcast(struct sfid *d, const char *event, struct json_object *data)
{
	if (!d->server) {
		json_object_put(data);
		return;
	}
	server_broadcast(d->server, event, data);
}

void sfid_result_hook(struct sfid *d, struct json_object *data)
{
	struct json_object *o;

	if (!d->hooks)
		return;
	/* The result event with what an MES needs beside it: schema, station, job, UTC time. */
	o = json_object_new_object();
	json_object_object_add(o, "schema", json_object_new_int(1));
	json_object_object_add(o, "station", json_object_new_string(d->cfg->station));
	json_object_object_add(o, "job", d->job ? json_object_new_int64(d->job->id) : NULL);
	json_object_object_add(o, "time_ms", json_object_new_int64(sfid_now_ms()));
	json_object_object_foreach(data, k, v)
		json_object_object_add(o, k, json_object_get(v));
	hooks_result(d->hooks, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

void sfid_halt(struct sfid *d, const char *fmt, ...)
{
	struct json_object *o;
	va_list ap;

	if (d->halt_reason[0])
		return;
	va_start(ap, fmt);
	vsnprintf(d->halt_reason, sizeof(d->halt_reason), fmt, ap);
	va_end(ap);
	log_error("line halted: %s", d->halt_reason);
	o = json_object_new_object();
	json_object_object_add(o, "reason", json_object_new_string(d->halt_reason));
	sfid_broadcast(d, "halt", o);
	for (size_t i = 0; i < d->n_slots; i++)
		slot_pause(d->slots[i]);
}

unsigned sfid_chip_failures(struct sfid *d, const char *uid_hex)
{
	unsigned n = 0;

	if (d->db && db_chip_failures(d->db, uid_hex, &n) < 0)
		log_warning("cannot count the failures of chip %s: %s", uid_hex,
			    db_last_error(d->db));
	return n;
}

bool sfid_job_complete(const struct sfid *d)
{
	return d->job && d->job->target && d->job->installed >= d->job->target;
}

int sfid_job_reserve(struct sfid *d)
{
	struct job *j = d->job;

	if (!j || sfid_job_complete(d))
		return -1;
	if (j->target && j->installed + j->reserved >= j->target)
		return 0;
	j->reserved++;
	return 1;
}

void sfid_job_release(struct sfid *d)
{
	if (d->job && d->job->reserved)
		d->job->reserved--;
}

/* The job's totals, as status, watch and the job-complete event show them. */
static struct json_object *job_totals_json(const struct job *j)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "job", json_object_new_int64(j->id));
	json_object_object_add(o, "target", json_object_new_int64(j->target));
	json_object_object_add(o, "installed", json_object_new_int64(j->installed));
	json_object_object_add(o, "failed", json_object_new_int64(j->failed));
	json_object_object_add(o, "refused", json_object_new_int64(j->refused));
	json_object_object_add(o, "halted", json_object_new_int64(j->halted));
	return o;
}

void sfid_job_installed(struct sfid *d)
{
	struct job *j = d->job;

	if (!sfid_job_complete(d) || j->complete_told)
		return;
	j->complete_told = true;
	log_notice("job %" PRId64 " complete: %" PRIu32 " of %" PRIu32 " installed (%" PRIu32
		   " failed, %" PRIu32 " refused untouched); the slots hold, a supervisor loads the "
		   "next job", j->id, j->installed, j->target, j->failed, j->refused);
	sfid_broadcast(d, "job-complete", job_totals_json(j));
	/* Slots waiting for a chip hold now; those showing a result hold once it is removed. */
	for (size_t i = 0; i < d->n_slots; i++)
		if (slot_state(d->slots[i]) == SLOT_STATE_WAIT_CHIP)
			slot_pause(d->slots[i]);
}

bool sfid_chip_installed_by_job(struct sfid *d, const char *uid_hex)
{
	struct db_history_filter f = { .job_id = d->job ? d->job->id : 0, .chip_uid = uid_hex,
				       .limit = 100 };
	struct db_attempt_row *rows = NULL;
	bool found = false;
	size_t n = 0;

	if (!d->job || !d->db || !uid_hex[0])
		return false;
	if (db_history(d->db, &f, &rows, &n) < 0) {
		log_warning("cannot read the attempts of chip %s: %s", uid_hex, db_last_error(d->db));
		return false;
	}
	for (size_t i = 0; i < n; i++)
		found |= rows[i].result == DB_ATTEMPT_OK;
	free(rows);
	return found;
}

void sfid_job_count_refusal(struct sfid *d, const char *uid_hex)
{
	struct job *j = d->job;
	struct db_history_filter f = { .job_id = j->id, .chip_uid = uid_hex, .limit = 100 };
	struct db_attempt_row *rows = NULL;
	size_t n = 0;
	bool seen = false;

	if (uid_hex[0]) {
		for (size_t i = 0; i < j->n_refused_uids && !seen; i++)
			seen = strcmp(j->refused_uids[i], uid_hex) == 0;
		/* Refused before sfid restarted: the database remembers. */
		if (!seen && d->db && db_history(d->db, &f, &rows, &n) == 0)
			for (size_t i = 0; i < n; i++)
				seen |= rows[i].result == DB_ATTEMPT_FAILED &&
					rows[i].error_code == DB_FAILURE_UNTOUCHED;
		free(rows);
		if (!seen && j->n_refused_uids == j->cap_refused_uids) {
			size_t cap = j->cap_refused_uids ? 2 * j->cap_refused_uids : 32;
			void *p = realloc(j->refused_uids, cap * sizeof(*j->refused_uids));

			if (p) {
				j->refused_uids = p;
				j->cap_refused_uids = cap;
			}
		}
		if (!seen && j->n_refused_uids < j->cap_refused_uids)
			snprintf(j->refused_uids[j->n_refused_uids++], sizeof(j->refused_uids[0]),
				 "%s", uid_hex);
	}
	if (!seen)
		j->refused++;
}

void sfid_slot_settled(struct sfid *d)
{
	if (!d->stopping)
		return;
	for (size_t i = 0; i < d->n_slots; i++)
		if (slot_busy(d->slots[i]))
			return;
	if (licensing_busy(d->licensing))
		return;
	event_base_loopexit(d->base, NULL);
}

/* The line token a job's image must match, or NULL when sfid runs without one. */
const struct job_line_token *line_token(const struct sfid *d, struct job_line_token *t)
{
	const struct token *line = tokens_at(d->tokens, 0);

	if (!line)
		return NULL;
	memcpy(t->firmware_id, line->firmware_id, OSFI_ID_LEN);
	t->label = line->label;
	return t;
}

/* ---- what the recorder tells the line ---- */

static void line_db_full(void *user, const char *why)
{
	sfid_halt(user, "the database is full (%s); free space, then start the line again", why);
}

int line_recorder_new(struct sfid *d, const struct db_options *o, char *reason,
		      size_t reason_size)
{
	struct recorder_params p = {
		.base = d->base,
		.path = d->cfg->db_path,
		.opts = o,
		.station = d->cfg->station,
		.on_full = line_db_full,
		.user = d,
	};

	return recorder_new(&p, &d->recorder, reason, reason_size);
}

/* ---- what licensing tells the line ---- */

static const struct job *line_lic_job(void *user)
{
	struct sfid *d = user;

	return d->job;
}

static const char *line_lic_halted(void *user)
{
	struct sfid *d = user;

	return d->halt_reason[0] ? d->halt_reason : NULL;
}

static void line_lic_halt(void *user, const char *why)
{
	sfid_halt(user, "%s", why);
}

static void line_lic_dequeued(void *user, void *who)
{
	slot_license_dequeued(who);
}

static bool line_lic_wanted(void *user, void *who, const char *uid_hex)
{
	return slot_license_wanted(who) && strcmp(slot_chip_hex(who), uid_hex) == 0;
}

static void line_lic_ready(void *user, void *who, const struct license_set *set)
{
	slot_licenses_ready(who, set);
}

static void line_lic_failed(void *user, void *who, const char *cause)
{
	slot_license_failed(who, cause);
}

static const char *line_lic_name(void *user, void *who)
{
	return slot_name(who);
}

static void line_lic_idle(void *user)
{
	sfid_slot_settled(user);
}

static const struct licensing_callbacks line_licensing_callbacks = {
	.job = line_lic_job,
	.halted = line_lic_halted,
	.halt = line_lic_halt,
	.dequeued = line_lic_dequeued,
	.wanted = line_lic_wanted,
	.ready = line_lic_ready,
	.failed = line_lic_failed,
	.name = line_lic_name,
	.idle = line_lic_idle,
};

/* Licensing, with the ledger connection (taken, even on failure). */
int line_licensing_new(struct sfid *d, struct db *ledger)
{
	struct licensing_params p = {
		.workers = d->workers,
		.tokens = d->tokens,
		.recorder = d->recorder,
		.ledger = ledger,
		.cb = &line_licensing_callbacks,
		.user = d,
	};
	int r = licensing_new(&p, &d->licensing);

	if (r < 0)
		db_close(ledger);
	return r;
}

/* ---- what the slots ask of the line ---- */

static const struct job *line_slot_job(void *user)
{
	struct sfid *d = user;

	return d->job;
}

static enum slot_reserve line_slot_reserve(void *user)
{
	struct sfid *d = user;

	switch (sfid_job_reserve(d)) {
	case 1:
		return SLOT_RESERVE_GRANTED;
	case 0:
		return SLOT_RESERVE_WAIT;
	default:
		return sfid_job_complete(d) ? SLOT_RESERVE_COMPLETE : SLOT_RESERVE_NO_JOB;
	}
}

static void line_slot_release(void *user)
{
	sfid_job_release(user);
}

static void line_slot_chip_begun(void *user)
{
	struct sfid *d = user;

	if (d->job && !d->job->started_ms)
		d->job->started_ms = sfid_now_ms();
}

static void line_slot_chip_ended(void *user, int kind, const char *uid_hex)
{
	struct sfid *d = user;

	if (!d->job)
		return;
	switch (kind) {
	case DB_FAILURE_TOUCHED:
		d->job->failed++;
		break;
	case DB_FAILURE_UNTOUCHED:
		sfid_job_count_refusal(d, uid_hex);
		break;
	case DB_FAILURE_HALTED:
		d->job->halted++;
		break;
	default:
		if (kind < 0) {
			d->job->installed++;
			sfid_job_installed(d);
		}
		break;
	}
}

static void line_slot_halt(void *user, const char *why)
{
	sfid_halt(user, "%s", why);
}

static const char *line_slot_halted(void *user)
{
	struct sfid *d = user;

	return d->halt_reason[0] ? d->halt_reason : NULL;
}

static bool line_slot_holding(void *user)
{
	struct sfid *d = user;

	return d->halt_reason[0] || d->stopping || sfid_job_complete(d);
}

static unsigned line_slot_chip_failures(void *user, const char *uid_hex)
{
	return sfid_chip_failures(user, uid_hex);
}

static bool line_slot_chip_installed(void *user, const char *uid_hex)
{
	return sfid_chip_installed_by_job(user, uid_hex);
}

static bool line_slot_adopt_licenses(void *user, const char *uid_hex, struct license_set *set)
{
	struct sfid *d = user;

	return d->job && license_adopt(d->db, d->job, uid_hex, set);
}

static void line_slot_license_request(void *user, struct slot *s)
{
	struct sfid *d = user;

	licensing_request(d->licensing, s, slot_chip_hex(s), slot_license_cert(s),
			  slot_attempt_id(s));
}

static void line_slot_license_cancel(void *user, struct slot *s)
{
	struct sfid *d = user;

	licensing_cancel(d->licensing, s);
}

/* ---- serial numbers through the ledger ---- */

struct serial_task {
	struct sfid *d;
	struct slot *s;
	unsigned ticket;
	struct job_serial cfg;
	int64_t job_id;
	char uid[2 * OSFI_UID_LEN + 1];
	int64_t idx;
	bool again, written;
	char hex[2 * JOB_SERIAL_WIDTH_MAX + 1];
	char reason[300];
	int r;
};

static int serial_task_value(void *arg, int64_t idx, char *hex, size_t size)
{
	const struct serial_task *t = arg;
	uint8_t v[JOB_SERIAL_WIDTH_MAX];
	int r = job_serial_value(&t->cfg, idx, v);

	if (r < 0)
		return r;
	if (size < 2 * t->cfg.width + 1)
		return -ENOBUFS;
	sfid_hex(v, t->cfg.width, hex);
	return 0;
}

static void serial_take_work(struct db *ledger, void *arg)
{
	struct serial_task *t = arg;

	t->r = db_serial_take(ledger, t->cfg.series, t->job_id, t->uid, serial_task_value, t,
			      &t->idx, t->hex, sizeof(t->hex), &t->again);
	if (t->r < 0 && t->r != -ENOSPC)
		snprintf(t->reason, sizeof(t->reason), "%s", db_last_error(ledger));
}

static void line_slot_serial_result(void *user, struct slot *s, int64_t idx, bool written,
				    const char *reason);

static void serial_take_done(void *arg, int r)
{
	struct serial_task *t = arg;

	if (r < 0) {
		t->r = r;
		snprintf(t->reason, sizeof(t->reason), "%s", r == -ETIMEDOUT ? "the ledger's lock "
			 "stayed taken 10 s" : sfi_strerror(r));
	}
	if (t->r == -ENOSPC && t->cfg.list) {
		snprintf(t->reason, sizeof(t->reason), "the serial list %s has no value left",
			 t->cfg.list_path);
		sfid_halt(t->d, "the serial numbers ran out: all %zu values of the list %s were "
			  "given out; load a job with a new list", t->cfg.list->n, t->cfg.list_path);
	} else if (t->r == -ENOSPC) {
		snprintf(t->reason, sizeof(t->reason), "the serial counter (%s) has no value left "
			 "that fits", t->cfg.series);
		sfid_halt(t->d, "the serial numbers ran out: the counter (%s) has no value left that "
			  "fits; load a job with another series", t->cfg.series);
	}
	if (!slot_serial_taken(t->s, t->ticket, t->r, t->idx, t->hex, t->again, t->reason) &&
	    t->r == 0) {
		/* The slot stopped waiting (its deadline, or the chip went): the intent this
		 * answer opened is closed now, the value stays the chip's. */
		log_warning("%s: the ledger's answer (serial number %s, index %" PRId64 ") came after "
			    "the slot stopped waiting; recorded failed", slot_name(t->s), t->hex,
			    t->idx);
		line_slot_serial_result(t->d, t->s, t->idx, false, "the ledger's answer came after "
					"the slot stopped waiting; nothing was written");
	}
	job_serial_list_unref(t->cfg.list);
	free(t);
}

static void line_slot_serial_take(void *user, struct slot *s, unsigned ticket)
{
	struct sfid *d = user;
	struct serial_task *t = calloc(1, sizeof(*t));
	int r = -ENOMEM;

	if (t && d->job) {
		*t = (struct serial_task){ .d = d, .s = s, .ticket = ticket, .cfg = d->job->serial,
					   .job_id = d->job->id };
		/* The list outlives the job while the request is in flight. */
		job_serial_list_ref(t->cfg.list);
		snprintf(t->uid, sizeof(t->uid), "%s", slot_chip_hex(s));
		r = licensing_ledger_task(d->licensing, serial_take_work, serial_take_done, t);
		if (r == 0)
			return;
		job_serial_list_unref(t->cfg.list);
	}
	free(t);
	slot_serial_taken(s, ticket, r, -1, "", false, r == -EBUSY ? "the ledger is busy "
			  "(a check of the tokens runs)" : sfi_strerror(r));
}

static void serial_result_work(struct db *ledger, void *arg)
{
	struct serial_task *t = arg;

	t->r = db_serial_result(ledger, t->cfg.series, t->idx, t->written,
				t->reason[0] ? t->reason : NULL);
	if (t->r < 0)
		snprintf(t->reason, sizeof(t->reason), "%s", db_last_error(ledger));
}

static void serial_result_done(void *arg, int r)
{
	struct serial_task *t = arg;

	if (r < 0) {
		t->r = r;
		snprintf(t->reason, sizeof(t->reason), "%s", r == -ETIMEDOUT ? "the ledger's lock "
			 "stayed taken 10 s" : sfi_strerror(r));
	}
	if (t->r < 0)
		log_warning("%s: the serial number's outcome (index %" PRId64 ") cannot be recorded: "
			    "%s; the row stays open until sfid starts again (then unconfirmed)",
			    slot_name(t->s), t->idx, t->reason);
	if (t->written)
		slot_serial_recorded(t->s, t->ticket, t->r, t->reason);
	free(t);
}

static void line_slot_serial_result(void *user, struct slot *s, int64_t idx, bool written,
				    const char *reason)
{
	struct sfid *d = user;
	struct serial_task *t = calloc(1, sizeof(*t));
	int r = -ENOMEM;

	if (t && d->job) {
		*t = (struct serial_task){ .d = d, .s = s, .ticket = slot_serial_ticket(s),
					   .cfg = d->job->serial, .idx = idx, .written = written };
		t->cfg.list = NULL;	/* the outcome needs the series only */
		snprintf(t->reason, sizeof(t->reason), "%s", reason ? reason : "");
		r = licensing_ledger_task(d->licensing, serial_result_work, serial_result_done, t);
		if (r == 0)
			return;
	}
	free(t);
	log_warning("%s: the serial number's outcome (index %" PRId64 ") cannot be recorded: %s",
		    slot_name(s), idx, sfi_strerror(r));
	if (written)
		slot_serial_recorded(s, slot_serial_ticket(s), r, sfi_strerror(r));
}

static void line_slot_event(void *user, const char *name, struct json_object *data)
{
	struct sfid *d = user;

	if (strcmp(name, "result") == 0)
		sfid_result_hook(d, data);
	sfid_broadcast(d, name, data);
}

static void line_slot_settled(void *user)
{
	sfid_slot_settled(user);
}

static const struct slot_callbacks line_slot_callbacks = {
	.job = line_slot_job,
	.reserve = line_slot_reserve,
	.release = line_slot_release,
	.chip_begun = line_slot_chip_begun,
	.chip_ended = line_slot_chip_ended,
	.halted = line_slot_halted,
	.halt = line_slot_halt,
	.holding = line_slot_holding,
	.chip_failures = line_slot_chip_failures,
	.chip_installed = line_slot_chip_installed,
	.adopt_licenses = line_slot_adopt_licenses,
	.license_request = line_slot_license_request,
	.license_cancel = line_slot_license_cancel,
	.serial_take = line_slot_serial_take,
	.serial_result = line_slot_serial_result,
	.event = line_slot_event,
	.settled = line_slot_settled,
};

/* Creates the configured slots, wired to the line. */
static void line_vendor_job_file(void *user, int64_t job_id, const char *what, char *out,
				 size_t size)
{
	line_job_copy_path(user, job_id, what, out, size);
}

static void line_vendor_halt(void *user, const char *why)
{
	sfid_halt(user, "%s", why);
}

/* The vendor backend, when a slot is configured with it. */
static int line_vendor_new(struct sfid *d)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(d->cfg->db_path, '/');
	struct vendor_params p = {
		.base = d->base,
		.cfg = &d->cfg->vendor,
		.licensing = d->licensing,
		.work_dir = dir,
		.job_file = line_vendor_job_file,
		.halt = line_vendor_halt,
		.user = d,
	};
	bool used = false;

	for (size_t i = 0; i < d->cfg->n_slots; i++)
		used |= d->cfg->slots[i].vendor;
	if (!used)
		return 0;
	if (d->cfg->vendor.work_dir)
		snprintf(dir, sizeof(dir), "%s", d->cfg->vendor.work_dir);
	else
		snprintf(dir, sizeof(dir), "%.*s/vendor", slash ? (int)(slash - d->cfg->db_path) : 1,
			 slash ? d->cfg->db_path : ".");
	return vendor_new(&p, &d->vendor);
}

int line_slots_new(struct sfid *d)
{
	static const uint8_t no_ca[OSFI_PUBKEY_LEN];
	int r = line_vendor_new(d);

	if (r < 0)
		return r;
	d->slots = calloc(d->cfg->n_slots, sizeof(*d->slots));
	if (!d->slots)
		return -ENOMEM;
	for (size_t i = 0; i < d->cfg->n_slots; i++) {
		struct slot_params p = {
			.base = d->base,
			.cfg = &d->cfg->slots[i],
			.index = (unsigned)i,
			.retry_limit = d->cfg->retry_limit,
			.ca_pub = tokens_ca_pub(d->tokens) ? tokens_ca_pub(d->tokens) : no_ca,
			.recorder = d->recorder,
			.cb = &line_slot_callbacks,
			.user = d,
			.vendor = d->vendor,
		};

		r = slot_new(&p, &d->slots[i]);

		if (r < 0)
			return r;
		d->n_slots++;
	}
	return 0;
}

/* Where sfid keeps its copy of a job's file: next to the database (sfid's own state). */
void line_job_copy_path(const struct sfid *d, int64_t id, const char *what, char *out,
			  size_t size)
{
	const char *slash = strrchr(d->cfg->db_path, '/');
	int dir = slash ? (int)(slash - d->cfg->db_path) : 1;

	snprintf(out, size, "%.*s/job-%" PRId64 ".%s", dir, slash ? d->cfg->db_path : ".", id,
		 what);
}

static int write_copy(const char *path, const void *buf, size_t len)
{
	char tmp[PATH_MAX + 8];
	int f, r = 0;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	f = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (f < 0)
		return -errno;
	for (size_t off = 0; off < len && r == 0;) {
		ssize_t n = write(f, (const char *)buf + off, len - off);

		if (n < 0 && errno != EINTR)
			r = -errno;
		else if (n > 0)
			off += (size_t)n;
	}
	if (r == 0 && fsync(f) < 0)
		r = -errno;
	close(f);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

/* The job's image (and global license) kept by sfid, so that the job is restored after a
 * restart even when the supervisor's file is where sfid cannot read (it was passed as a
 * descriptor). The previous job's copies go. */
static void job_keep_copies(struct sfid *d, const struct job *old, const struct job *j)
{
	char path[PATH_MAX];
	int r;

	if (old) {
		line_job_copy_path(d, old->id, "sfi", path, sizeof(path));
		unlink(path);
		line_job_copy_path(d, old->id, "lic", path, sizeof(path));
		unlink(path);
		line_job_copy_path(d, old->id, "mcsv", path, sizeof(path));
		unlink(path);
		line_job_copy_path(d, old->id, "plain", path, sizeof(path));
		unlink(path);
		line_job_copy_path(d, old->id, "serial", path, sizeof(path));
		unlink(path);
	}
	if (j->plain) {
		/* The firmware as loaded (its files may be gone or changed by then). */
		uint8_t *copy = NULL;
		size_t len = 0;

		line_job_copy_path(d, j->id, "plain", path, sizeof(path));
		r = job_plain_copy(j, &copy, &len);
		if (r == 0)
			r = write_copy(path, copy, len);
		free(copy);
	} else {
		line_job_copy_path(d, j->id, "sfi", path, sizeof(path));
		r = write_copy(path, j->image, j->image_len);
	}
	if (r == 0 && !j->plain && j->serial.on) {
		/* An OSFI job's serial number and the product state declared for its image. */
		char *text = job_osfi_serial_keep(j);

		line_job_copy_path(d, j->id, "serial", path, sizeof(path));
		r = text ? write_copy(path, (const uint8_t *)text, strlen(text)) : -ENOMEM;
		free(text);
	}
	if (r == 0 && j->global) {
		line_job_copy_path(d, j->id, "lic", path, sizeof(path));
		/* A vendor job's license file is the tool's, kept as it came. */
		r = j->vendor ? write_copy(path, j->global_bytes, j->global_len) :
				write_copy(path, j->lic[0].record, OSFI_LICENSE_LEN);
	}
	if (r == 0 && j->vendor && j->modules) {
		line_job_copy_path(d, j->id, "mcsv", path, sizeof(path));
		r = write_copy(path, j->modules, j->modules_len);
	}
	if (r < 0)
		log_warning("cannot keep a copy of job %" PRId64 "'s files as %s: %s; the job is "
			    "restored after a restart only if sfid can read them where they are "
			    "(a plain job, or an OSFI job's serial number, not at all)",
			    j->id, path, strerror(-r));
}

void line_job_install(struct sfid *d, struct job *j)
{
	job_keep_copies(d, d->job, j);
	if (d->job)
		rec_job_end(d->recorder, d->job->id);
	job_free(d->job);
	d->job = j;
	log_info("job %" PRId64 " loaded by %s: %s (%zu bytes, image id %.16s..., %zu license%s "
		 "per chip, target %" PRIu32 ")", j->id, j->loaded_by, j->image_path, j->image_len,
		 j->image_id_hex, j->n_lic, j->n_lic == 1 ? "" : "s", j->target);
	sfid_broadcast(d, "job", job_json(j));
}

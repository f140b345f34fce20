/* sfid: the line daemon. main() loads the configuration, opens the HSM token and the
 * database, reconciles the license ledger, then runs one event loop for the control socket,
 * every slot's port, timers and signals until SIGTERM/SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <systemd/sd-daemon.h>

#include "config.h" /* SFID_VERSION */
#include "sfid-config.h"
#include "control.h"
#include "db.h"
#include "hsm.h"
#include "hook.h"
#include "job.h"
#include "licensing.h"
#include "recorder.h"
#include "shipper.h"
#include "an3155-wire.h"
#include "log.h"
#include "server.h"
#include "sfid.h"
#include "slot.h"
#include "tokens.h"
#include "worker.h"

/* Exit status when the HSM PIN is wrong, locked, at risk or missing: sfid.service names it
 * in RestartPreventExitStatus=, so a wrong PIN is never tried again and again. */
#define SFID_EXIT_PIN 78

/* Period of the loop-lag probe (see struct sfid). */
#define LAG_PROBE_MS 50


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
static const struct job_line_token *line_token(const struct sfid *d, struct job_line_token *t)
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

static int line_recorder_new(struct sfid *d, const struct db_options *o, char *err,
			     size_t err_size)
{
	struct recorder_params p = {
		.base = d->base,
		.path = d->cfg->db_path,
		.opts = o,
		.station = d->cfg->station,
		.on_full = line_db_full,
		.user = d,
	};

	return recorder_new(&p, &d->recorder, err, err_size);
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
static int line_licensing_new(struct sfid *d, struct db *ledger)
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
	.holding = line_slot_holding,
	.chip_failures = line_slot_chip_failures,
	.chip_installed = line_slot_chip_installed,
	.adopt_licenses = line_slot_adopt_licenses,
	.license_request = line_slot_license_request,
	.license_cancel = line_slot_license_cancel,
	.event = line_slot_event,
	.settled = line_slot_settled,
};

/* Creates the configured slots, wired to the line. */
static int line_slots_new(struct sfid *d)
{
	static const uint8_t no_ca[OSFI_PUBKEY_LEN];

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
		};
		int r = slot_new(&p, &d->slots[i]);

		if (r < 0)
			return r;
		d->n_slots++;
	}
	return 0;
}

/* ---- control commands ---- */

/* A chip is being worked on, or a license issued. Slots that wait for a chip, or for the
 * removal of one they finished, hold nothing of the job. */
static bool any_chip_in_progress(struct sfid *d)
{
	for (size_t i = 0; i < d->n_slots; i++)
		if (slot_state_busy(slot_state(d->slots[i])))
			return true;
	return licensing_busy(d->licensing);
}

/* The counter changes sfid did not make (spends outside sfid, refills), newest first, as
 * reconciliations found them; of one token, or of all. */
static struct json_object *counter_changes_json(struct sfid *d, const char *serial)
{
	struct json_object *a = json_object_new_array();
	struct db_counter_change *ch = NULL;
	size_t n = 0;

	if (!a || !d->db || db_counter_changes(d->db, serial, 20, &ch, &n) < 0)
		return a;
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();
		uint64_t by = ch[i].actual > ch[i].expected ? ch[i].actual - ch[i].expected :
							       ch[i].expected - ch[i].actual;

		json_object_object_add(o, "token", json_object_new_string(ch[i].token_serial));
		json_object_object_add(o, "kind", json_object_new_string(
			ch[i].kind == DB_DIFF_UNRECORDED_SPENDS ? "unaccounted-spend" :
			db_diff_kind_to_string(ch[i].kind)));
		json_object_object_add(o, "count", json_object_new_int64((int64_t)by));
		json_object_object_add(o, "expected", json_object_new_int64((int64_t)ch[i].expected));
		json_object_object_add(o, "actual", json_object_new_int64((int64_t)ch[i].actual));
		json_object_object_add(o, "found_ms", json_object_new_int64(ch[i].found_ms));
		json_object_object_add(o, "record", json_object_new_int64((int64_t)ch[i].audit_seq));
		json_object_array_add(a, o);
	}
	free(ch);
	return a;
}

static void cmd_status(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_array();

	json_object_object_add(o, "station", json_object_new_string(d->cfg->station));
	json_object_object_add(o, "version", json_object_new_string(SFID_VERSION));
	json_object_object_add(o, "uptime_ms", json_object_new_int64(sfid_mono_ms() - d->started_ms));
	json_object_object_add(o, "job", d->job ? job_json(d->job) : NULL);
	json_object_object_add(o, "halted", d->halt_reason[0] ? json_object_new_string(d->halt_reason)
							       : NULL);
	json_object_object_add(o, "stopping", json_object_new_boolean(d->stopping));
	json_object_object_add(o, "licenses_left", licensing_left(d->licensing) >= 0 ?
			       json_object_new_int64(licensing_left(d->licensing)) : NULL);
	json_object_object_add(o, "time_ms", json_object_new_int64(sfid_now_ms()));
	{
		struct json_object *l = json_object_new_object();

		json_object_object_add(l, "probe_ms", json_object_new_int(LAG_PROBE_MS));
		json_object_object_add(l, "probes", json_object_new_int64((int64_t)d->lag_probes));
		json_object_object_add(l, "max_late_ms", json_object_new_int64(d->lag_max_ms));
		json_object_object_add(l, "late_over_20ms",
				       json_object_new_int64((int64_t)d->lag_over_20ms));
		json_object_object_add(o, "loop", l);
	}
	for (size_t i = 0; i < d->n_slots; i++)
		json_object_array_add(a, slot_status_json(d->slots[i]));
	json_object_object_add(o, "slots", a);
	json_object_object_add(o, "counter_changes", counter_changes_json(d, NULL));
	json_object_object_add(o, "central", d->shipper ? shipper_status_json(d->shipper) : NULL);
	server_reply_ok(c, req->id, o);
}

/* Collects the slots named in args.slots (all when absent). Returns the count or -1 after
 * replying with an error. */
static int pick_slots(struct sfid *d, struct client *c, const struct control_request *req,
		      struct slot **out)
{
	struct json_object *a;
	size_t n = 0;

	/* The server checked the arguments' types (control_request_check_args); checked again
	 * here, before any use, as a handler must not trust its caller with json-c's
	 * assertions. */
	if (req->args && json_object_object_get_ex(req->args, "slots", &a) &&
	    !json_object_is_type(a, json_type_array)) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "\"slots\" must be a list of names");
		return -1;
	}
	if (!req->args || !json_object_object_get_ex(req->args, "slots", &a) ||
	    json_object_array_length(a) == 0) {
		for (size_t i = 0; i < d->n_slots; i++)
			out[n++] = d->slots[i];
		return (int)n;
	}
	for (size_t i = 0; i < json_object_array_length(a) && n < d->n_slots; i++) {
		struct json_object *e = json_object_array_get_idx(a, i);
		const char *name = json_object_is_type(e, json_type_string) ?
				   json_object_get_string(e) : NULL;
		int k = name ? config_slot_find(d->cfg, name) : -ENOENT;

		if (k < 0) {
			server_reply_error(c, req->id, CONTROL_E_NOT_FOUND, "no slot named '%s'",
					   name ? name : "");
			return -1;
		}
		out[n++] = d->slots[k];
	}
	return (int)n;
}

static void slots_apply(struct sfid *d, struct client *c, const struct control_request *req,
			struct slot **picked, int n)
{
	struct json_object *o, *a = json_object_new_array();

	for (int i = 0; i < n; i++) {
		switch (req->command->cmd) {
		case CONTROL_CMD_START:
			slot_start(picked[i]);
			break;
		case CONTROL_CMD_STOP:
			slot_stop(picked[i], "stopped by the operator");
			break;
		case CONTROL_CMD_PAUSE:
			slot_pause(picked[i]);
			break;
		case CONTROL_CMD_HELLO:
		case CONTROL_CMD_STATUS:
		case CONTROL_CMD_WATCH:
		case CONTROL_CMD_HISTORY:
		case CONTROL_CMD_STATS:
		case CONTROL_CMD_PORTS:
		case CONTROL_CMD_JOB_LOAD:
		case CONTROL_CMD_JOB_SHOW:
		case CONTROL_CMD_EXPORT:
		case CONTROL_CMD_HSM:
		case CONTROL_CMD_CONFIG:
		case _CONTROL_CMD_MAX:
			break;
		}
		json_object_array_add(a, slot_status_json(picked[i]));
	}
	log_info("control: %s %s (%d slots)", server_client_user(c), req->command->name, n);
	if (req->command->cmd == CONTROL_CMD_START && d->job && n > 0) {
		const char *names[CONFIG_SLOTS_MAX];

		for (int i = 0; i < n; i++)
			names[i] = slot_name(picked[i]);
		rec_job_start(d->recorder, d->job->id, (uint32_t)server_client_uid(c),
			      server_client_user(c), names, (size_t)n);
	}
	o = json_object_new_object();
	json_object_object_add(o, "slots", a);
	server_reply_ok(c, req->id, o);
}

/* A `start` that waits for the halted line to be checked again. */
struct pending_start {
	struct sfid *d;
	uint64_t client;
	struct control_request req;
};

static void start_rechecked(void *arg, bool ok, const char *why)
{
	struct pending_start *ps = arg;
	struct sfid *d = ps->d;
	struct client *c = d->server ? server_client_find(d->server, ps->client) : NULL;
	struct slot *picked[CONFIG_SLOTS_MAX];
	int n;

	if (ok && d->halt_reason[0]) {
		struct json_object *o = json_object_new_object();

		log_notice("line halt cleared (%s): the tokens answer and the ledger agrees",
			   d->halt_reason);
		json_object_object_add(o, "cleared", json_object_new_string(d->halt_reason));
		d->halt_reason[0] = '\0';
		sfid_broadcast(d, "resume", o);
	}
	if (c && !ok) {
		server_reply_error(c, ps->req.id, CONTROL_E_STATE, "the line stays halted: %s", why);
	} else if (c) {
		n = pick_slots(d, c, &ps->req, picked);
		if (n >= 0 && d->job && !d->stopping)
			slots_apply(d, c, &ps->req, picked, n);
		else if (n >= 0)
			server_reply_error(c, ps->req.id, CONTROL_E_STATE, "no job is loaded, or sfid "
					   "is shutting down");
	}
	json_object_put(ps->req.args);
	free(ps);
}

static void cmd_slots(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct slot *picked[CONFIG_SLOTS_MAX];
	int n;

	n = pick_slots(d, c, req, picked);
	if (n < 0)
		return;
	if (req->command->cmd == CONTROL_CMD_START) {
		if (!d->job) {
			server_reply_error(c, req->id, CONTROL_E_STATE,
					   "no job is loaded; a supervisor loads one with 'sfictl job "
					   "load IMAGE'");
			return;
		}
		if (d->stopping) {
			server_reply_error(c, req->id, CONTROL_E_STATE, "sfid is shutting down");
			return;
		}
		if (sfid_job_complete(d)) {
			server_reply_error(c, req->id, CONTROL_E_STATE,
					   "job %" PRId64 " is complete (%" PRIu32 " of %" PRIu32
					   " installed); a supervisor loads the next job with 'sfictl "
					   "job load IMAGE'", d->job->id, d->job->installed,
					   d->job->target);
			return;
		}
		if (d->halt_reason[0]) {
			/* The cause may be gone (space freed, token answering again): check, then
			 * clear the halt and start. */
			struct pending_start *ps = calloc(1, sizeof(*ps));
			int r;

			if (!ps) {
				server_reply_error(c, req->id, CONTROL_E_FAILED, "out of memory");
				return;
			}
			ps->d = d;
			ps->client = server_client_serial(c);
			ps->req = *req;
			ps->req.args = json_object_get(req->args);
			r = licensing_recheck(d->licensing, start_rechecked, ps);
			if (r < 0) {
				server_reply_error(c, req->id, r == -EBUSY ? CONTROL_E_BUSY :
						   CONTROL_E_STATE, "the line is halted (%s) and cannot "
						   "be checked now: %s", d->halt_reason,
						   r == -EBUSY ? "a license is being issued, try again"
							       : "sfid is shutting down");
				json_object_put(ps->req.args);
				free(ps);
			}
			return;
		}
	}
	slots_apply(d, c, req, picked, n);
}

static const char *arg_string(const struct control_request *req, const char *key)
{
	struct json_object *v;

	if (!req->args || !json_object_object_get_ex(req->args, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64_t arg_int(const struct control_request *req, const char *key, int64_t def)
{
	struct json_object *v;

	if (!req->args || !json_object_object_get_ex(req->args, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return def;
	return json_object_get_int64(v);
}

/* A job load in progress: module tokens may have to be found, the job must be recorded. */
struct pending_job {
	struct sfid *d;
	uint64_t client;
	uint64_t id;
	uint32_t uid;
	struct job *j;
	struct token_scan scan;
};

static void pending_job_reply_error(struct pending_job *pj, enum control_error e,
				    const char *msg)
{
	struct sfid *d = pj->d;
	struct client *c = d->server ? server_client_find(d->server, pj->client) : NULL;

	log_warning("job load refused: %s", msg);
	if (c)
		server_reply_error(c, pj->id, e, "%s", msg);
	d->job_loading = false;
	job_free(pj->j);
	free(pj);
}

/* Where sfid keeps its copy of a job's file: next to the database (sfid's own state). */
static void job_copy_path(const struct sfid *d, int64_t id, const char *what, char *out,
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
		job_copy_path(d, old->id, "sfi", path, sizeof(path));
		unlink(path);
		job_copy_path(d, old->id, "lic", path, sizeof(path));
		unlink(path);
	}
	job_copy_path(d, j->id, "sfi", path, sizeof(path));
	r = write_copy(path, j->image, j->image_len);
	if (r == 0 && j->global) {
		job_copy_path(d, j->id, "lic", path, sizeof(path));
		r = write_copy(path, j->lic[0].record, OSFI_LICENSE_LEN);
	}
	if (r < 0)
		log_warning("cannot keep a copy of job %" PRId64 "'s files as %s: %s; the job is "
			    "restored after a restart only if sfid can read them where they are",
			    j->id, path, strerror(-r));
}

static void job_install(struct sfid *d, struct job *j)
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

static void job_recorded(void *arg, int r)
{
	struct pending_job *pj = arg;
	struct sfid *d = pj->d;
	struct client *c;
	char msg[512];

	if (r < 0) {
		snprintf(msg, sizeof(msg), "cannot record the job in the database");
		pending_job_reply_error(pj, CONTROL_E_FAILED, msg);
		return;
	}
	job_install(d, pj->j);
	c = d->server ? server_client_find(d->server, pj->client) : NULL;
	if (c)
		server_reply_ok(c, pj->id, job_json(pj->j));
	d->job_loading = false;
	free(pj);
}

static void job_record(struct pending_job *pj)
{
	struct job *j = pj->j;
	struct db_job dj = {
		.image_path = j->image_path,
		.image_id = j->image_id_hex,
		.image_digest = j->digest_hex,
		.module_file = j->module_file,
		.target_count = j->target,
		.loaded_uid = pj->uid,
		.loaded_user = j->loaded_by,
		.global_license_file = j->global_file,
		.station = pj->d->cfg->station,
		.sfid_version = SFID_VERSION,
	};

	if (rec_job_create(pj->d->recorder, &dj, &j->id, job_recorded, pj) < 0)
		pending_job_reply_error(pj, CONTROL_E_FAILED, "cannot record the job: sfid is "
					"shutting down");
}

static void job_scan_work(struct db *ledger, void *data)
{
	struct pending_job *pj = data;

	token_scan_run(pj->d->tokens, ledger, &pj->scan);
}

static void job_scan_done(void *data)
{
	struct pending_job *pj = data;
	struct sfid *d = pj->d;
	char msg[512];

	if (!token_scan_adopt(d->tokens, &pj->scan, pj->j, msg, sizeof(msg))) {
		pending_job_reply_error(pj, CONTROL_E_NOT_FOUND, msg);
		return;
	}
	job_record(pj);
}

static void job_fds_close(struct job_fds *fds)
{
	if (fds->image >= 0)
		close(fds->image);
	if (fds->modules >= 0)
		close(fds->modules);
	if (fds->global >= 0)
		close(fds->global);
	for (size_t i = 0; i < fds->n_lic; i++)
		if (fds->lic_fd[i] >= 0)
			close(fds->lic_fd[i]);
	fds->image = fds->modules = fds->global = -1;
	fds->n_lic = 0;
}

/* One passed descriptor named by args[key] (an index), or -1 when the key is absent.
 * Returns -1 in *bad when the index names no descriptor. */
static int job_fd_arg(struct client *c, const struct control_request *req, const char *key,
		      int64_t offset, bool *bad)
{
	int64_t i = arg_int(req, key, -1);
	int fd;

	if (i < 0)
		return -1;
	fd = server_client_take_fd(c, (size_t)(i + offset));
	if (fd < 0)
		*bad = true;
	return fd;
}

/* The descriptors sfictl passed for the job's files (see docs/control.md, job-load). */
static int job_fds_take(struct client *c, const struct control_request *req,
			struct job_fds *fds)
{
	struct json_object *names;
	bool bad = false;

	*fds = (struct job_fds){ .image = -1, .modules = -1, .global = -1 };
	fds->image = job_fd_arg(c, req, "image_fd", 0, &bad);
	fds->modules = job_fd_arg(c, req, "modules_fd", 0, &bad);
	fds->global = job_fd_arg(c, req, "global_license_fd", 0, &bad);
	if (req->args && json_object_object_get_ex(req->args, "module_licenses", &names) &&
	    json_object_is_type(names, json_type_array)) {
		int64_t first = arg_int(req, "module_licenses_fd", -1);

		for (size_t i = 0; i < json_object_array_length(names) && i < JOB_LICENSES_MAX; i++) {
			fds->lic_name[fds->n_lic] =
				json_object_get_string(json_object_array_get_idx(names, i));
			fds->lic_fd[fds->n_lic] = first < 0 ? -1 :
				server_client_take_fd(c, (size_t)first + i);
			bad |= first < 0 || fds->lic_fd[fds->n_lic] < 0;
			fds->n_lic++;
		}
	}
	return bad ? -1 : 0;
}

static void cmd_job_load(struct sfid *d, struct client *c, const struct control_request *req)
{
	const char *image = arg_string(req, "image"), *modules = arg_string(req, "modules");
	const char *global = arg_string(req, "global_license");
	int64_t count = arg_int(req, "count", 0);
	struct job_line_token tok;
	struct pending_job *pj;
	struct job *j = NULL;
	struct job_fds fds;
	char msg[512];
	int r;

	if (!image || count < 0 || count > UINT32_MAX) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT,
				   "job-load needs \"image\" (a path) and an optional \"count\" >= 0");
		return;
	}
	if (any_chip_in_progress(d) || d->job_loading) {
		server_reply_error(c, req->id, CONTROL_E_STATE,
				   "chips are in progress or another job is being loaded; pause or "
				   "stop the slots first");
		return;
	}
	if (job_fds_take(c, req, &fds) < 0) {
		job_fds_close(&fds);
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "a descriptor named in the "
				   "request was not passed with it (SCM_RIGHTS)");
		return;
	}
	r = job_load(line_token(d, &tok), image, modules, global, &fds, (uint32_t)count,
		     server_client_user(c), &j, msg, sizeof(msg));
	job_fds_close(&fds);
	if (r != 0) {
		log_warning("control: %s: job load refused: %s", server_client_user(c), msg);
		server_reply_error(c, req->id, r == -EINVAL ? CONTROL_E_ARGUMENT :
				   r == -ENOENT ? CONTROL_E_NOT_FOUND : CONTROL_E_FAILED, "%s", msg);
		return;
	}
	pj = calloc(1, sizeof(*pj));
	if (!pj) {
		job_free(j);
		server_reply_error(c, req->id, CONTROL_E_FAILED, "out of memory");
		return;
	}
	pj->d = d;
	pj->client = server_client_serial(c);
	pj->id = req->id;
	pj->uid = (uint32_t)server_client_uid(c);
	pj->j = j;
	d->job_loading = true;
	if (tokens_resolve_job(d->tokens, j)) {
		job_record(pj);
		return;
	}
	/* Module tokens are looked for on a worker (PKCS#11 logins take time); the ledger
	 * connection is theirs meanwhile, for the reconciliation of each token found. */
	token_scan_prepare(d->tokens, j, &pj->scan);
	if (licensing_exclusive(d->licensing, job_scan_work, job_scan_done, pj) < 0)
		pending_job_reply_error(pj, CONTROL_E_STATE, "sfid is shutting down");
}

static struct json_object *attempt_json(const struct db_attempt_row *e)
{
	struct json_object *h = json_object_new_object();
	const char *cause = e->error_text;
	size_t step_len = strlen(e->step);

	/* The stored text is "<step>: <cause>". */
	if (step_len && strncmp(cause, e->step, step_len) == 0 && cause[step_len] == ':')
		cause += step_len + (cause[step_len + 1] == ' ' ? 2 : 1);
	json_object_object_add(h, "attempt", json_object_new_int64(e->id));
	json_object_object_add(h, "job", json_object_new_int64(e->job_id));
	json_object_object_add(h, "time_ms", json_object_new_int64(e->ended_ms ? e->ended_ms
									       : e->started_ms));
	json_object_object_add(h, "slot", json_object_new_string(e->slot));
	json_object_object_add(h, "chip", json_object_new_string(e->chip_uid));
	json_object_object_add(h, "result", json_object_new_string(
				       db_attempt_result_to_string(e->result)));
	json_object_object_add(h, "step", json_object_new_string(e->result == DB_ATTEMPT_OK ? "done"
											    : e->step));
	json_object_object_add(h, "error", json_object_new_string(cause));
	json_object_object_add(h, "bytes", json_object_new_int64((int64_t)e->bytes_sent));
	json_object_object_add(h, "duration_ms", json_object_new_int64(
				       e->ended_ms ? e->ended_ms - e->started_ms : 0));
	json_object_object_add(h, "license_reused", json_object_new_boolean(e->license_reused));
	return h;
}

/* History and stats are read from the database: they survive restarts. */
static void cmd_history(struct sfid *d, struct client *c, const struct control_request *req)
{
	int64_t limit = arg_int(req, "limit", 20);
	struct db_history_filter f = {
		.job_id = arg_int(req, "job", 0),
		.slot = arg_string(req, "slot"),
		.chip_uid = arg_string(req, "chip"),
	};
	struct db_attempt_row *rows = NULL;
	struct json_object *a, *o, *v;
	size_t n = 0;

	if (req->args && json_object_object_get_ex(req->args, "failed", &v) &&
	    json_object_is_type(v, json_type_boolean))
		f.only_failed = json_object_get_boolean(v);
	f.limit = limit <= 0 ? 20 : limit > 10000 ? 10000 : (unsigned)limit;
	if (db_history(d->db, &f, &rows, &n) < 0) {
		server_reply_error(c, req->id, CONTROL_E_FAILED, "cannot read the history: %s",
				   db_last_error(d->db));
		return;
	}
	a = json_object_new_array();
	for (size_t i = 0; i < n; i++)
		json_object_array_add(a, attempt_json(&rows[i]));
	free(rows);
	o = json_object_new_object();
	json_object_object_add(o, "attempts", a);
	server_reply_ok(c, req->id, o);
}

static void cmd_stats(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct json_object *o, *slots, *steps, *causes;
	int64_t job = arg_int(req, "job", d->job ? d->job->id : 0);
	struct db_range range = { .job_id = job, .from_ms = arg_int(req, "since_ms", 0),
				  .to_ms = arg_int(req, "until_ms", 0) };
	struct db_stats *st = NULL;
	double hours;

	if (range.from_ms < 0 || range.to_ms < 0 || (range.to_ms && range.to_ms <= range.from_ms)) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "\"since_ms\" must come before "
				   "\"until_ms\" (milliseconds since the epoch)");
		return;
	}
	if (db_stats_range(d->db, &range, &st) < 0) {
		server_reply_error(c, req->id, CONTROL_E_FAILED, "cannot read the statistics: %s",
				   db_last_error(d->db));
		return;
	}
	o = json_object_new_object();
	slots = json_object_new_object();
	steps = json_object_new_object();
	causes = json_object_new_array();
	/* Every configured slot appears, with zeros if it has no attempt yet. */
	for (size_t i = 0; i < d->n_slots; i++) {
		struct json_object *s = json_object_new_object();

		json_object_object_add(s, "ok", json_object_new_int64(0));
		json_object_object_add(s, "failed", json_object_new_int64(0));
		json_object_object_add(s, "yield", json_object_new_double(0));
		json_object_object_add(slots, slot_name(d->slots[i]), s);
	}
	for (size_t i = 0; i < st->n_slots; i++) {
		const struct db_slot_stats *ss = &st->slots[i];
		struct json_object *s = json_object_new_object();
		uint64_t all = ss->ok + ss->failed;

		json_object_object_add(s, "ok", json_object_new_int64((int64_t)ss->ok));
		json_object_object_add(s, "failed", json_object_new_int64((int64_t)ss->failed));
		json_object_object_add(s, "yield", json_object_new_double(all ? (double)ss->ok /
									    (double)all : 0.0));
		json_object_object_add(s, "bytes", json_object_new_int64((int64_t)ss->bytes));
		json_object_object_add(slots, ss->slot, s);
	}
	for (size_t i = 0; i < st->n_failures; i++) {
		const struct db_failure_cause *fc = &st->failures[i];
		struct json_object *v, *e = json_object_new_object();

		if (json_object_object_get_ex(steps, fc->step, &v))
			json_object_set_int64(v, json_object_get_int64(v) + (int64_t)fc->count);
		else
			json_object_object_add(steps, fc->step,
					       json_object_new_int64((int64_t)fc->count));
		json_object_object_add(e, "step", json_object_new_string(fc->step));
		json_object_object_add(e, "cause", json_object_new_string(fc->cause));
		json_object_object_add(e, "count", json_object_new_int64((int64_t)fc->count));
		json_object_array_add(causes, e);
	}
	json_object_object_add(o, "job", job ? json_object_new_int64(job) : NULL);
	json_object_object_add(o, "ok", json_object_new_int64((int64_t)st->ok));
	json_object_object_add(o, "failed", json_object_new_int64((int64_t)st->failed));
	/* The yield counts the chips the line worked on: refusals of chips it did not touch,
	 * chips a halt kept from starting and chips installed earlier are counted apart. */
	json_object_object_add(o, "yield", json_object_new_double(st->ok + st->failed ?
								  (double)st->ok / (double)(st->ok + st->failed) : 0.0));
	json_object_object_add(o, "refused", json_object_new_int64((int64_t)st->refused));
	json_object_object_add(o, "halted", json_object_new_int64((int64_t)st->halted));
	json_object_object_add(o, "already_installed", json_object_new_int64((int64_t)st->already));
	json_object_object_add(o, "since_ms", range.from_ms ? json_object_new_int64(range.from_ms)
							    : NULL);
	json_object_object_add(o, "until_ms", range.to_ms ? json_object_new_int64(range.to_ms)
							  : NULL);
	json_object_object_add(o, "first_ms", st->first_ms ? json_object_new_int64(st->first_ms)
							   : NULL);
	json_object_object_add(o, "last_ms", st->last_ms ? json_object_new_int64(st->last_ms)
							 : NULL);
	hours = st->last_ms > st->first_ms ? (double)(st->last_ms - st->first_ms) / 3600000.0 : 0;
	json_object_object_add(o, "chips_per_hour", json_object_new_double(
				       hours > 0 ? (double)st->ok / hours : 0.0));
	json_object_object_add(o, "mean_cycle_ms", json_object_new_int64(
				       st->ok ? st->ok_duration_ms / (int64_t)st->ok : 0));
	json_object_object_add(o, "slots", slots);
	json_object_object_add(o, "failures_by_step", steps);
	json_object_object_add(o, "failures", causes);
	db_stats_free(st);
	server_reply_ok(c, req->id, o);
}

static void cmd_ports(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_array();

	for (size_t i = 0; i < d->n_slots; i++)
		json_object_array_add(a, slot_port_json(d->slots[i]));
	json_object_object_add(o, "ports", a);
	server_reply_ok(c, req->id, o);
}

struct pending_export {
	struct sfid *d;
	uint64_t client;
	uint64_t id;
	char format[8];
	char *buf;
	size_t len;
	char err[256];
	char user[64];
};

static void export_done(void *arg, int r)
{
	struct pending_export *pe = arg;
	struct sfid *d = pe->d;
	struct client *c = d->server ? server_client_find(d->server, pe->client) : NULL;
	struct json_object *o;

	if (r < 0) {
		if (c)
			server_reply_error(c, pe->id, CONTROL_E_FAILED, "export failed: %s",
					   pe->err[0] ? pe->err : strerror(-r));
	} else {
		log_info("control: %s exported the audit trail (%s, %zu bytes)", pe->user,
			 pe->format, pe->len);
		if (c) {
			o = json_object_new_object();
			json_object_object_add(o, "format", json_object_new_string(pe->format));
			json_object_object_add(o, "data", json_object_new_string_len(pe->buf,
										   (int)pe->len));
			server_reply_ok(c, pe->id, o);
		}
	}
	free(pe->buf);
	free(pe);
}

static void cmd_export(struct sfid *d, struct client *c, const struct control_request *req)
{
	const char *format = arg_string(req, "format");
	struct db_range range = { .job_id = arg_int(req, "job", 0),
				  .from_ms = arg_int(req, "since_ms", 0) };
	struct rec_token tokens[REC_TOKENS_MAX];
	size_t n_tokens = 0;
	struct pending_export *pe;

	if (!format || (strcmp(format, "csv") != 0 && strcmp(format, "jsonl") != 0)) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "export needs \"format\": "
				   "\"csv\" or \"jsonl\"");
		return;
	}
	pe = calloc(1, sizeof(*pe));
	if (!pe) {
		server_reply_error(c, req->id, CONTROL_E_FAILED, "out of memory");
		return;
	}
	pe->d = d;
	pe->client = server_client_serial(c);
	pe->id = req->id;
	snprintf(pe->format, sizeof(pe->format), "%s", format);
	snprintf(pe->user, sizeof(pe->user), "%s", server_client_user(c));
	/* On the recorder's thread: it comes after every record queued so far, and signing the
	 * checkpoint (a smartcard takes seconds) does not stall the slots. */
	for (size_t i = 0; i < tokens_count(d->tokens) && i < REC_TOKENS_MAX; i++) {
		tokens[i].h = tokens_at(d->tokens, i)->h;
		tokens[i].serial = tokens_at(d->tokens, i)->serial;
		n_tokens++;
	}
	if (rec_export(d->recorder, format, &range, tokens, n_tokens, &pe->buf, &pe->len, pe->err,
		       sizeof(pe->err), export_done, pe) < 0) {
		server_reply_error(c, req->id, CONTROL_E_STATE, "sfid is shutting down");
		free(pe);
	}
}

struct hsm_query {
	struct sfid *d;
	uint64_t client;
	uint64_t id;
	int r;
	uint32_t count;
	int64_t granted;
	struct hsm_token_info info;
};

static void hsm_query_work(void *data)
{
	struct hsm_query *q = data;

	struct hsm *h = tokens_line(q->d->tokens);

	q->r = hsm_token_info(h, &q->info);
	if (q->r == 0)
		q->r = hsm_counter_read(h, &q->count);
	q->granted = q->r == 0 ? token_granted(h) : -1;
}

static void hsm_query_done(void *data)
{
	struct hsm_query *q = data;
	struct client *c = q->d->server ? server_client_find(q->d->server, q->client) : NULL;
	struct json_object *o;
	char fw[2 * OSFI_ID_LEN + 1];

	if (c && q->r < 0) {
		server_reply_error(c, q->id, CONTROL_E_FAILED, "HSM: %s", hsm_error_to_string(q->r));
	} else if (c) {
		o = json_object_new_object();
		sfid_hex(tokens_at(q->d->tokens, 0)->firmware_id, OSFI_ID_LEN, fw);
		json_object_object_add(o, "label", json_object_new_string(q->info.label));
		json_object_object_add(o, "serial", json_object_new_string(q->info.serial));
		json_object_object_add(o, "manufacturer", json_object_new_string(q->info.manufacturer));
		json_object_object_add(o, "model", json_object_new_string(q->info.model));
		/* One name for one thing: "licenses_left", as in status and sfi-hsm info. */
		json_object_object_add(o, "licenses_left", json_object_new_int64(q->count));
		licensing_set_left(q->d->licensing, q->count);
		json_object_object_add(o, "firmware_id", json_object_new_string(fw));
		json_object_object_add(o, "granted", q->granted >= 0 ?
				       json_object_new_int64(q->granted) : NULL);
		json_object_object_add(o, "counter_changes",
				       counter_changes_json(q->d, q->info.serial));
		server_reply_ok(c, q->id, o);
	}
	free(q);
}

static void cmd_hsm(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct hsm_query *q;

	if (!tokens_line(d->tokens)) {
		server_reply_error(c, req->id, CONTROL_E_STATE, "no HSM token is open");
		return;
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		server_reply_error(c, req->id, CONTROL_E_FAILED, "out of memory");
		return;
	}
	q->d = d;
	q->client = server_client_serial(c);
	q->id = req->id;
	if (workers_submit(d->workers, hsm_query_work, hsm_query_done, q) < 0) {
		server_reply_error(c, req->id, CONTROL_E_STATE, "sfid is shutting down");
		free(q);
	}
}

static void cmd_config(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_array();
	const struct config *cfg = d->cfg;

	json_object_object_add(o, "path", json_object_new_string(cfg->path));
	json_object_object_add(o, "station", json_object_new_string(cfg->station));
	json_object_object_add(o, "hsm_module", json_object_new_string(cfg->hsm_module));
	json_object_object_add(o, "hsm_token", json_object_new_string(cfg->hsm_token));
	json_object_object_add(o, "database", json_object_new_string(cfg->db_path));
	json_object_object_add(o, "socket", json_object_new_string(cfg->socket_path));
	json_object_object_add(o, "operator_group", json_object_new_string(cfg->operator_group));
	json_object_object_add(o, "supervisor_group", json_object_new_string(cfg->supervisor_group));
	json_object_object_add(o, "max_clients", json_object_new_int((int)cfg->max_clients));
	json_object_object_add(o, "max_message", json_object_new_int64((int64_t)cfg->max_message));
	for (size_t i = 0; i < cfg->n_slots; i++) {
		struct json_object *s = json_object_new_object();

		json_object_object_add(s, "name", json_object_new_string(cfg->slots[i].name));
		json_object_object_add(s, "port", json_object_new_string(cfg->slots[i].port));
		json_object_object_add(s, "baud", json_object_new_int((int)cfg->slots[i].baud));
		json_object_array_add(a, s);
	}
	json_object_object_add(o, "slots", a);
	server_reply_ok(c, req->id, o);
}

static void dispatch(void *user_data, struct client *c, const struct control_request *req)
{
	struct sfid *d = user_data;
	struct json_object *o;

	switch (req->command->cmd) {
	case CONTROL_CMD_HELLO:
		o = json_object_new_object();
		json_object_object_add(o, "version", json_object_new_string(SFID_VERSION));
		json_object_object_add(o, "protocol", json_object_new_int(CONTROL_VERSION));
		json_object_object_add(o, "user", json_object_new_string(server_client_user(c)));
		json_object_object_add(o, "role", json_object_new_string(
					       control_role_to_string(server_client_role(c))));
		server_reply_ok(c, req->id, o);
		return;
	case CONTROL_CMD_STATUS:
		cmd_status(d, c, req);
		return;
	case CONTROL_CMD_WATCH:
		server_watch(c, req->id);
		cmd_status(d, c, req);
		return;
	case CONTROL_CMD_START:
	case CONTROL_CMD_STOP:
	case CONTROL_CMD_PAUSE:
		cmd_slots(d, c, req);
		return;
	case CONTROL_CMD_HISTORY:
		cmd_history(d, c, req);
		return;
	case CONTROL_CMD_STATS:
		cmd_stats(d, c, req);
		return;
	case CONTROL_CMD_PORTS:
		cmd_ports(d, c, req);
		return;
	case CONTROL_CMD_JOB_LOAD:
		cmd_job_load(d, c, req);
		return;
	case CONTROL_CMD_JOB_SHOW:
		if (!d->job) {
			server_reply_error(c, req->id, CONTROL_E_STATE, "no job is loaded");
			return;
		}
		server_reply_ok(c, req->id, job_json(d->job));
		return;
	case CONTROL_CMD_EXPORT:
		cmd_export(d, c, req);
		return;
	case CONTROL_CMD_HSM:
		cmd_hsm(d, c, req);
		return;
	case CONTROL_CMD_CONFIG:
		cmd_config(d, c, req);
		return;
	case _CONTROL_CMD_MAX:
		break;
	}
	server_reply_error(c, req->id, CONTROL_E_UNKNOWN, "unknown command");
}

/* ---- start-up ---- */

static int audit_sign(void *userdata, const uint8_t digest[DB_HASH_SIZE],
		      uint8_t ret_sig[DB_SIG_SIZE])
{
	struct sfid *d = userdata;
	int r = hsm_audit_sign(tokens_line(d->tokens), digest, ret_sig);

	return r < 0 ? -EIO : 0;
}

/* The audit key generation that signed the trail before a key change. */
static unsigned audit_old_gen;

static int audit_sign_old(void *userdata, const uint8_t digest[DB_HASH_SIZE],
			  uint8_t ret_sig[DB_SIG_SIZE])
{
	struct sfid *d = userdata;
	int r = hsm_audit_sign_gen(tokens_line(d->tokens), (int)audit_old_gen, digest, ret_sig);

	return r < 0 ? -EIO : 0;
}

static int audit_key_id_of_pem(char *pem, uint8_t ret_id[DB_HASH_SIZE]);

/* SHA-256 of the DER SubjectPublicKeyInfo of audit key generation gen. */
static int audit_key_id_gen(struct sfid *d, unsigned gen, uint8_t ret_id[DB_HASH_SIZE])
{
	char *pem = NULL;

	if (hsm_audit_pubkey_pem_gen(tokens_line(d->tokens), gen, &pem) < 0)
		return -ENOKEY;
	return audit_key_id_of_pem(pem, ret_id);
}

/* SHA-256 of the audit key's DER SubjectPublicKeyInfo. */
static int audit_key_id(struct sfid *d, uint8_t ret_id[DB_HASH_SIZE])
{
	char *pem = NULL;

	if (hsm_audit_pubkey_pem(tokens_line(d->tokens), &pem) < 0)
		return -ENOKEY;
	return audit_key_id_of_pem(pem, ret_id);
}

/* Takes pem. */
static int audit_key_id_of_pem(char *pem, uint8_t ret_id[DB_HASH_SIZE])
{
	unsigned char *der = NULL;
	EVP_PKEY *pk = NULL;
	BIO *bio;
	int n, r = -EINVAL;

	bio = BIO_new_mem_buf(pem, -1);
	if (bio)
		pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (pk && (n = i2d_PUBKEY(pk, &der)) > 0) {
		SHA256(der, (size_t)n, ret_id);
		r = 0;
	}
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	BIO_free(bio);
	free(pem);
	return r;
}

/* A PIN problem: restarting would only try the same PIN again (systemd must not). */
static bool pin_error(int r)
{
	return r == -HSM_ERR_PIN_INCORRECT || r == -HSM_ERR_PIN_LOCKED || r == -HSM_ERR_PIN_SOURCE;
}

static int open_hsm(struct sfid *d)
{
	const struct config *cfg = d->cfg;
	struct tokens_params p = {
		.module = cfg->hsm_module,
		.pin_file = cfg->hsm_pin_file,
		.pin_credential = cfg->hsm_pin_credential,
	};
	int r = tokens_new(&p, &d->tokens);

	if (r < 0) {
		log_error("out of memory");
		return r;
	}
	return tokens_open_line(d->tokens, cfg->hsm_token);
}

/* A new audit key generation on the token (sfi-hsm rotate-audit-key): the key that signed
 * the trail so far signs the change into it, so the OEM's verifier walks across with both
 * keys in its ring. */
static void audit_key_link(struct sfid *d, struct db *ldb, const struct db_signer *signer)
{
	struct db_signer old = { .sign = audit_sign_old, .userdata = d };
	uint8_t last[DB_HASH_SIZE], id[DB_HASH_SIZE];
	unsigned gen;

	if (db_audit_last_key(ldb, last) < 0 || memcmp(last, signer->key_id, DB_HASH_SIZE) == 0)
		return;
	if (hsm_audit_generation(tokens_line(d->tokens), &gen) < 0)
		return;
	for (unsigned g = gen; g-- > 0;) {
		if (audit_key_id_gen(d, g, id) < 0 || memcmp(id, last, DB_HASH_SIZE) != 0)
			continue;
		audit_old_gen = g;
		memcpy(old.key_id, last, DB_HASH_SIZE);
		if (db_audit_key_change(ldb, &old) < 0)
			log_error("cannot record the audit key change: %s", db_last_error(ldb));
		else
			log_notice("audit key changed (generation %u -> %u): the change is signed "
				   "into the trail with the previous key", g, gen);
		return;
	}
	log_warning("the audit trail's last checkpoint names an audit key this token no longer "
		    "holds: the change to the token's key cannot be signed into the trail, and "
		    "a verifier reports it");
}

/* Three connections to one file: the loop reads, the license chain writes the ledger, the
 * recorder writes everything else; SQLite serializes the writers. */
static int open_db(struct sfid *d, struct db_signer *signer)
{
	struct db_options o = { .signer = NULL, .max_size_bytes = d->cfg->db_max_bytes };
	const struct token *line = tokens_at(d->tokens, 0);
	struct db_diff *diffs = NULL;
	struct db *ldb = NULL;
	char err[512] = "";
	uint32_t count;
	size_t n = 0;
	int r;

	signer->sign = audit_sign;
	signer->userdata = d;
	if (audit_key_id(d, signer->key_id) == 0)
		o.signer = signer;
	else
		log_warning("the HSM token has no usable audit key: checkpoints will not be signed");
	r = db_open(d->cfg->db_path, &o, &ldb, err, sizeof(err));
	if (r == 0)
		r = db_open(d->cfg->db_path, &o, &d->db, err, sizeof(err));
	if (r < 0) {
		log_error("cannot open database %s: %s", d->cfg->db_path, err);
		db_close(ldb);
		return r;
	}
	if (o.signer)
		audit_key_link(d, ldb, signer);
	r = line_recorder_new(d, &o, err, sizeof(err));
	if (r < 0) {
		log_error("cannot open database %s: %s", d->cfg->db_path, err);
		db_close(ldb);
		return r;
	}
	/* From here on licensing owns the ledger's connection. */
	r = line_licensing_new(d, ldb);
	if (r < 0) {
		log_error("out of memory");
		return r;
	}
	ldb = licensing_ledger(d->licensing);
	/* A crash may have left a reservation open: the token's counter settles it. */
	r = hsm_counter_read(line->h, &count);
	if (r < 0) {
		log_error("cannot read the HSM license counter: %s", hsm_error_to_string(r));
		return -EIO;
	}
	r = db_reconcile_granted(ldb, line->serial, count, token_granted(line->h), &diffs, &n);
	if (r < 0) {
		log_error("cannot reconcile the license ledger: %s", db_last_error(ldb));
		return r;
	}
	for (size_t i = 0; i < n; i++)
		log_warning("ledger reconciliation: %s: license %" PRId64 " chip %s: ledger expects "
			    "counter %" PRIu64 ", token %s has %" PRIu64,
			    db_diff_kind_to_string(diffs[i].kind), diffs[i].license_id,
			    diffs[i].chip_uid[0] ? diffs[i].chip_uid : "-", diffs[i].expected,
			    diffs[i].token_serial, diffs[i].actual);
	free(diffs);
	{
		unsigned n_att = 0, n_lic = 0;

		/* Attempts a killed sfid left running are closed now, never left open; their
		 * licenses stay the chips' (installed when a chip shows it holds the image). */
		r = db_attempts_interrupted(ldb, "interrupted: sfid stopped during this attempt "
					    "and closed it when it started again", &n_att, &n_lic);
		if (r < 0) {
			log_error("cannot close the attempts left open: %s", db_last_error(ldb));
			return r;
		}
		if (n_att)
			log_warning("%u attempt%s left running by a stopped sfid closed as "
				    "interrupted; %u license%s issued to them kept for their chips",
				    n_att, n_att == 1 ? "" : "s", n_lic, n_lic == 1 ? "" : "s");
	}
	licensing_set_left(d->licensing, count);
	log_info("HSM token %s (serial %s): %" PRIu32 " licenses left; ledger %s", line->label,
		 line->serial, count, n ? "differences logged above" : "agrees");
	return 0;
}

/* The job that was loaded when sfid last stopped is loaded again, if its files are still
 * the same; otherwise it is ended and a supervisor loads a job. Runs before the loop. */
static void restore_job(struct sfid *d)
{
	struct job_line_token tok;
	struct db_job_row row;
	struct job *j = NULL;
	char msg[512];
	int r;

	r = db_job_active(d->db, &row);
	if (r == -ENOENT)
		return;
	if (r < 0) {
		log_warning("cannot read the loaded job from the database: %s", db_last_error(d->db));
		return;
	}
	{
		/* sfid's copies stand for files it may not be able to read where they are. */
		struct job_fds fds = { .image = -1, .modules = -1, .global = -1 };
		char path[PATH_MAX];

		job_copy_path(d, row.id, "sfi", path, sizeof(path));
		fds.image = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (row.global_license_file[0]) {
			job_copy_path(d, row.id, "lic", path, sizeof(path));
			fds.global = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		}
		r = job_load(line_token(d, &tok), row.image_path, row.module_file[0] ? row.module_file : NULL,
			     row.global_license_file[0] ? row.global_license_file : NULL, &fds,
			     row.target_count, row.loaded_user, &j, msg, sizeof(msg));
		if (fds.image >= 0)
			close(fds.image);
		if (fds.global >= 0)
			close(fds.global);
	}
	if (r == 0 && strcmp(j->digest_hex, row.image_digest) != 0) {
		snprintf(msg, sizeof(msg), "image %.400s changed since the job was loaded",
			 row.image_path);
		r = -EINVAL;
	}
	if (r == 0 && !tokens_resolve_job(d->tokens, j)) {
		struct token_scan *sc = calloc(1, sizeof(*sc));

		if (sc) {
			token_scan_prepare(d->tokens, j, sc);
			token_scan_run(d->tokens, licensing_ledger(d->licensing), sc);
			if (!token_scan_adopt(d->tokens, sc, j, msg, sizeof(msg)))
				r = -ENOENT;
			free(sc);
		} else {
			snprintf(msg, sizeof(msg), "out of memory");
			r = -ENOMEM;
		}
	}
	if (r != 0) {
		log_warning("job %" PRId64 " was loaded when sfid stopped but cannot be loaded again: "
			    "%s; it is ended, a supervisor loads a job", row.id, msg);
		job_free(j);
		if (db_job_end(licensing_ledger(d->licensing), row.id) < 0 &&
		    db_last_error(licensing_ledger(d->licensing))[0])
			log_debug("job end: %s", db_last_error(licensing_ledger(d->licensing)));
		return;
	}
	j->id = row.id;
	j->installed = row.installed;
	j->failed = row.failed;
	j->refused = row.refused;
	j->halted = row.halted;
	{
		struct db_stats *st = NULL;

		if (db_stats(d->db, row.id, &st) == 0)
			j->started_ms = st->first_ms;
		db_stats_free(st);
	}
	j->complete_told = j->target && j->installed >= j->target;
	j->loaded_ms = row.created_ms;
	d->job = j;
	log_notice("job %" PRId64 " restored: %s, %" PRIu32 " installed, %" PRIu32 " failed, target "
		   "%" PRIu32 "; start the slots to go on", j->id, j->image_path, j->installed,
		   j->failed, j->target);
}

/* ---- signals and shutdown ---- */

static void shutdown_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sfid *d = arg;

	log_warning("shutdown: chips still in progress after %u ms; aborting them safely",
		    d->cfg->shutdown_timeout_ms);
	for (size_t i = 0; i < d->n_slots; i++)
		slot_stop(d->slots[i], "sfid shut down during the install");
	event_base_loopexit(d->base, NULL);
}

static struct event *ev_shutdown_timer;

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct sfid *d = arg;
	struct timeval tv = { .tv_sec = d->cfg->shutdown_timeout_ms / 1000,
			      .tv_usec = (d->cfg->shutdown_timeout_ms % 1000) * 1000 };

	if (d->stopping) {
		log_notice("second signal: stopping now");
		shutdown_timeout_cb(-1, 0, d);
		return;
	}
	log_notice("signal %d: finishing chips in progress (up to %u ms), then exiting", (int)sig,
		   d->cfg->shutdown_timeout_ms);
	sd_notify(0, "STOPPING=1");
	d->stopping = true;
	for (size_t i = 0; i < d->n_slots; i++)
		slot_pause(d->slots[i]);
	ev_shutdown_timer = evtimer_new(d->base, shutdown_timeout_cb, d);
	if (ev_shutdown_timer)
		evtimer_add(ev_shutdown_timer, &tv);
	sfid_slot_settled(d);
}


static void lag_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sfid *d = arg;
	int64_t now = sfid_mono_ms(), late = now - d->lag_expected_ms;

	if (d->lag_expected_ms && late > 0) {
		if (late > d->lag_max_ms)
			d->lag_max_ms = late;
		if (late > 20)
			d->lag_over_20ms++;
	}
	d->lag_probes++;
	d->lag_expected_ms = now + LAG_PROBE_MS;
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	sd_notify(0, "WATCHDOG=1");
}

/* Tells the service manager what the line is doing (systemctl status shows it); sent only
 * when the text changes. */
static void status_cb(evutil_socket_t fd, short what, void *arg)
{
	static char last[256];
	struct sfid *d = arg;
	char text[256];

	if (d->job)
		snprintf(text, sizeof(text), "STATUS=station %s, job %" PRId64 ": %" PRIu32
			 " installed, %" PRIu32 " failed%s, %zu slots",
			 d->cfg->station, d->job->id, d->job->installed, d->job->failed,
			 d->job->target ? "" : " (no target)", d->n_slots);
	else
		snprintf(text, sizeof(text), "STATUS=station %s, no job loaded, %zu slots",
			 d->cfg->station, d->n_slots);
	if (strcmp(text, last) == 0)
		return;
	snprintf(last, sizeof(last), "%s", text);
	sd_notify(0, text);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: sfid --config FILE [--check] [--debug]\n"
		   "  -c, --config FILE   configuration file (INI)\n"
		   "      --check         check the configuration and exit\n"
		   "  -d, --debug         log raw frames and every state change\n"
		   "  -h, --help          this help\n"
		   "  -V, --version       print the version\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'C' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 }
	};
	struct server_options so;
	struct db_signer signer = { 0 };
	struct event *ev_term = NULL, *ev_int = NULL, *ev_wd = NULL, *ev_status = NULL;
	struct event *ev_lag = NULL;
	struct sfid d = { 0 };
	const char *config_path = NULL;
	bool check = false;
	char err[1024];
	uint64_t wd_usec = 0;
	int c, r, ret = 1;

	while ((c = getopt_long(argc, argv, "c:dhV", opts, NULL)) >= 0) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'C':
			check = true;
			break;
		case 'd':
			log_set_max(LOG_PRIO_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("sfid %s\n", SFID_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!config_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	r = config_load(config_path, &d.cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check) {
		unsigned warnings = config_warn_ports(d.cfg, stderr);

		printf("%s: configuration is valid (%zu slots", config_path, d.cfg->n_slots);
		if (warnings)
			printf("; %u cannot open their port now", warnings);
		printf(")\n");
		config_free(d.cfg);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	/* OpenSSL's global state, its configuration file included, is set up here, on the main
	 * thread, before the worker and recorder threads use it: set up from one of them it
	 * would be tied to that thread (and its error state leaked when the thread ends). */
	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
	d.started_ms = sfid_mono_ms();
	d.base = event_base_new();
	if (!d.base) {
		log_error("out of memory");
		goto out;
	}
	r = workers_new(d.base, d.cfg->hsm_workers, &d.workers);
	if (r < 0) {
		log_error("cannot start worker threads: %s", strerror(-r));
		goto out;
	}
	r = open_hsm(&d);
	if (r < 0) {
		if (pin_error(r))
			ret = SFID_EXIT_PIN;
		goto out;
	}
	if (open_db(&d, &signer) < 0)
		goto out;
	restore_job(&d);
	if (line_slots_new(&d) < 0)
		goto out;
	so = (struct server_options){
		.path = d.cfg->socket_path,
		.listen_fd = sd_listen_fds(1) == 1 ? SD_LISTEN_FDS_START : -1,
		.socket_gid = d.cfg->operator_gid,
		.operator_gid = d.cfg->operator_gid,
		.supervisor_gid = d.cfg->supervisor_gid,
		.operator_group = d.cfg->operator_group,
		.supervisor_group = d.cfg->supervisor_group,
		.max_clients = d.cfg->max_clients,
		.max_message = d.cfg->max_message,
		.idle_ms = d.cfg->idle_timeout_ms,
		.line_ms = d.cfg->line_timeout_ms,
		.close_ms = d.cfg->close_timeout_ms,
	};
	r = server_new(d.base, &so, dispatch, &d, &d.server, err, sizeof(err));
	if (r < 0) {
		log_error("control socket: %s", err);
		goto out;
	}
	if (d.cfg->result_hook) {
		d.hooks = hooks_new(d.base, d.cfg->result_hook, d.cfg->result_hook_timeout_ms);
		if (!d.hooks) {
			log_error("cannot set up the result hook %s", d.cfg->result_hook);
			goto out;
		}
	}
	ev_term = evsignal_new(d.base, SIGTERM, signal_cb, &d);
	ev_int = evsignal_new(d.base, SIGINT, signal_cb, &d);
	if (!ev_term || !ev_int || evsignal_add(ev_term, NULL) < 0 || evsignal_add(ev_int, NULL) < 0)
		goto out;
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
		struct timeval tv = { .tv_sec = (time_t)(wd_usec / 2000000),
				      .tv_usec = (suseconds_t)((wd_usec / 2) % 1000000) };

		ev_wd = event_new(d.base, -1, EV_PERSIST, watchdog_cb, NULL);
		if (ev_wd)
			evtimer_add(ev_wd, &tv);
	}
	if (d.cfg->central.conninfo &&
	    shipper_new(&d.cfg->central, d.cfg->db_path, d.cfg->station, &d.shipper, err,
			sizeof(err)) < 0)
		log_error("central: the trail is not shipped: %s", err);
	log_info("sfid %s: station %s, %zu slots, control socket %s", SFID_VERSION, d.cfg->station,
		 d.n_slots, d.cfg->socket_path);
	sd_notify(0, "READY=1");
	ev_status = event_new(d.base, -1, EV_PERSIST, status_cb, &d);
	if (ev_status) {
		struct timeval one_s = { .tv_sec = 1 };

		status_cb(-1, 0, &d);
		evtimer_add(ev_status, &one_s);
	}

	ev_lag = event_new(d.base, -1, EV_PERSIST, lag_cb, &d);
	if (ev_lag) {
		struct timeval probe = { .tv_usec = LAG_PROBE_MS * 1000 };

		lag_cb(-1, 0, &d);
		evtimer_add(ev_lag, &probe);
	}
	event_base_dispatch(d.base);
	log_info("shutting down");
	ret = 0;
out:
	/* Licenses being issued finish and are recorded before anything closes; then every
	 * record queued is written. */
	d.workers = workers_free(d.workers);
	for (size_t i = 0; i < d.n_slots; i++)
		slot_stop(d.slots[i], "sfid shut down during the install");
	d.recorder = recorder_free(d.recorder);
	d.shipper = shipper_free(d.shipper);
	d.hooks = hooks_free(d.hooks);
	d.server = server_free(d.server);
	for (size_t i = 0; i < d.n_slots; i++)
		slot_free(d.slots[i]);
	free(d.slots);
	if (ev_term)
		event_free(ev_term);
	if (ev_int)
		event_free(ev_int);
	if (ev_wd)
		event_free(ev_wd);
	if (ev_status)
		event_free(ev_status);
	if (ev_lag)
		event_free(ev_lag);
	if (ev_shutdown_timer)
		event_free(ev_shutdown_timer);
	job_free(d.job);
	d.db = db_close(d.db);
	d.licensing = licensing_free(d.licensing);
	d.tokens = tokens_free(d.tokens);
	if (d.base)
		event_base_free(d.base);
	config_free(d.cfg);
	return ret;
}

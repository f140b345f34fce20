/* The control commands: one handler per command in a table indexed by it (see
 * commands.h). Handlers read the line (line.h) and answer through the server; work that
 * blocks (PKCS#11, the ledger, exports) goes to licensing, workers or the recorder. */
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

#include "config.h" /* SFID_VERSION */
#include "commands.h"
#include "control.h"
#include "db.h"
#include "hsm.h"
#include "job.h"
#include "licensing.h"
#include "line.h"
#include "log.h"
#include "recorder.h"
#include "server.h"
#include "sfi-error.h"
#include "sfi-file.h"
#include "sfid-config.h"
#include "shipper.h"
#include "slot.h"
#include "tokens.h"
#include "util.h"
#include "worker.h"

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
	line_job_install(d, pj->j);
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
		.plain = j->plain,
		.firmware = j->firmware,
		.go = j->go,
		.go_address = j->go_address,
		.vendor = j->vendor,
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

/* A list's values must not have been given to a chip in another series (the same file
 * changed, or another list holding them): the first found is named with its line. */
static int job_serial_list_unused(struct sfid *d, const struct job_serial *sr, char *msg,
				  size_t msg_size)
{
	char hex[2 * JOB_SERIAL_WIDTH_MAX + 1], other[160], uid[2 * OSFI_UID_LEN + 1];

	for (size_t i = 0; i < sr->list->n; i++) {
		int r;

		sfid_hex(sr->list->bytes + i * sr->width, sr->width, hex);
		r = db_serial_value_given(d->db, hex, sr->series, other, sizeof(other), uid,
					  sizeof(uid));
		if (r < 0) {
			snprintf(msg, msg_size, "cannot check the serial list against the ledger: %s",
				 db_last_error(d->db));
			return r;
		}
		if (r > 0) {
			sfi_reason(msg, msg_size, "line %zu of the serial list %s (%s) was given to chip %s "
				 "in another series (%s): a list that changed is a new list, and a value "
				 "goes to one chip only; remove the lines already given out", i + 1,
				 sr->list_path, hex, uid, other);
			return -EINVAL;
		}
	}
	return 0;
}

/* A job's serial number (docs/operations.md): "serial_counter" or "serial_list" with
 * "serial_list_fd", "serial_at", "serial_width", "serial_format"; none of them: no serial
 * number. It must not overlap what the job writes (a plain job's firmware, an OSFI image's
 * areas). */
static int job_serial_req(struct sfid *d, struct client *c, const struct control_request *req,
			  struct job *j, char *msg, size_t msg_size)
{
	const char *counter = arg_string(req, "serial_counter");
	const char *list = arg_string(req, "serial_list");
	int64_t at = arg_int(req, "serial_at", -1), width = arg_int(req, "serial_width", -1);
	int64_t list_fd = arg_int(req, "serial_list_fd", -1);
	const char *format = arg_string(req, "serial_format");
	struct job_serial_range *fw = NULL;
	uint8_t *text = NULL;
	size_t len = 0, n_fw = 0;
	int fd = -1, r;

	if (!counter && !list && at < 0 && width < 0 && !format)
		return 0;
	if (counter && list) {
		snprintf(msg, msg_size, "a serial number comes from a counter (--serial-counter) or "
			 "a list file (--serial-list), not both");
		return -EINVAL;
	}
	if (list ? at < 0 : (!counter || at < 0 || width < 0)) {
		snprintf(msg, msg_size, "a serial number needs a counter (--serial-counter "
			 "START[:STEP]) and a width (--serial-width N), or a list file (--serial-list "
			 "FILE), and an address (--serial-at ADDR)");
		return -EINVAL;
	}
	if (list) {
		fd = list_fd < 0 ? -1 : server_client_take_fd(c, (size_t)list_fd);
		if (list_fd >= 0 && fd < 0) {
			snprintf(msg, msg_size, "a descriptor named in the request was not passed with "
				 "it (SCM_RIGHTS)");
			return -EINVAL;
		}
		r = fd >= 0 ? (lseek(fd, 0, SEEK_SET) < 0 && errno != ESPIPE ? -errno :
			       sfi_fd_read(fd, JOB_SERIAL_LIST_BYTES_MAX + 1, &text, &len)) :
			sfi_file_read(list, JOB_SERIAL_LIST_BYTES_MAX + 1, &text, &len);
		if (fd >= 0)
			close(fd);
		if (r < 0) {
			snprintf(msg, msg_size, "cannot read the serial list %s: %s", list,
				 sfi_file_strerror(r));
			return -EINVAL;
		}
	}
	if (j->plain) {
		n_fw = j->n_seg;
		fw = calloc(j->n_seg ? j->n_seg : 1, sizeof(*fw));
		for (size_t i = 0; fw && i < j->n_seg; i++)
			fw[i] = (struct job_serial_range){ j->seg[i].address, j->seg[i].size };
		r = fw ? 0 : -ENOMEM;
	} else {
		/* An OSFI image's areas name their addresses in clear. */
		r = job_image_ranges(j, &fw, &n_fw);
	}
	if (r < 0) {
		free(text);
		snprintf(msg, msg_size, "out of memory");
		return -ENOMEM;
	}
	if (list)
		r = job_serial_set_list(&j->serial, list, text, len, at, width < 0 ? 0 : width,
					format, fw, n_fw, msg, msg_size);
	else
		r = job_serial_set(&j->serial, counter, at, width, format, fw, n_fw, msg,
				   msg_size);
	free(fw);
	free(text);
	if (r == 0 && j->serial.list)
		r = job_serial_list_unused(d, &j->serial, msg, msg_size);
	return r;
}

/* A plain job: firmware files (with the descriptors sfictl passed), no license. */
static int job_load_plain_req(struct sfid *d, struct client *c,
			      const struct control_request *req,
			      struct json_object *list, uint32_t count, struct job **ret,
			      char *msg, size_t msg_size)
{
	const char *files[JOB_FIRMWARE_MAX];
	int fds[JOB_FIRMWARE_MAX];
	int64_t first = arg_int(req, "firmware_fd", -1);
	struct json_object *v;
	bool go = false, bad = false;
	size_t n = json_object_array_length(list);
	int r;

	if (n > JOB_FIRMWARE_MAX)
		n = JOB_FIRMWARE_MAX;
	for (size_t i = 0; i < n; i++) {
		files[i] = json_object_get_string(json_object_array_get_idx(list, i));
		fds[i] = first < 0 ? -1 : server_client_take_fd(c, (size_t)first + i);
		bad |= first >= 0 && fds[i] < 0;
	}
	if (req->args && json_object_object_get_ex(req->args, "go", &v))
		go = json_object_get_boolean(v);
	if (bad) {
		snprintf(msg, msg_size, "a descriptor named in the request was not passed with it "
			 "(SCM_RIGHTS)");
		r = -EINVAL;
	} else if (arg_string(req, "image") || arg_string(req, "modules") ||
		   arg_string(req, "global_license")) {
		snprintf(msg, msg_size, "a job is either an image or plain firmware, not both");
		r = -EINVAL;
	} else if (!go && arg_int(req, "go_address", -1) >= 0) {
		snprintf(msg, msg_size, "\"go_address\" needs \"go\": true");
		r = -EINVAL;
	} else {
		int64_t ga = arg_int(req, "go_address", -1);

		r = job_load_plain(files, fds, n, go, ga >= 0, ga >= 0 ? (uint32_t)ga : 0, count,
				   server_client_user(c), ret, msg, msg_size);
		if (r == 0)
			r = job_serial_req(d, c, req, *ret, msg, msg_size);
		if (r < 0)
			*ret = job_free(*ret);
	}
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return r;
}

/* A vendor job runs on vendor slots only, any other job on the others only: a job no slot of
 * the line can run is refused at load (a line of both kinds refuses the chips per slot). */
static bool job_fits_line(const struct sfid *d, const struct job *j, char *msg, size_t size)
{
	size_t vendor = 0, n = d->cfg->n_slots;

	for (size_t i = 0; i < n; i++)
		vendor += d->cfg->slots[i].vendor;
	if (j->vendor && vendor == 0) {
		snprintf(msg, size, "no slot of this line runs the vendor backend (backend = "
			 "cubeprogrammer), which alone installs a vendor job; the job was not loaded");
		return false;
	}
	if (!j->vendor && n > 0 && vendor == n) {
		snprintf(msg, size, "every slot of this line runs the vendor backend "
			 "(STM32CubeProgrammer), which installs only vendor jobs (sfictl job load "
			 "--vendor IMAGE.sfi); the job was not loaded");
		return false;
	}
	return true;
}

static void cmd_job_load(struct sfid *d, struct client *c, const struct control_request *req)
{
	const char *image = arg_string(req, "image"), *modules = arg_string(req, "modules");
	struct json_object *firmware = NULL, *v;
	const char *global = arg_string(req, "global_license");
	int64_t count = arg_int(req, "count", 0);
	struct job_line_token tok;
	struct pending_job *pj;
	struct job *j = NULL;
	const char *image_state = arg_string(req, "image_state");
	bool serial, vendor;
	uint8_t final_state = 0;
	struct job_fds fds;
	char msg[512];
	int r;

	if (req->args && (!json_object_object_get_ex(req->args, "firmware", &firmware) ||
			  !json_object_is_type(firmware, json_type_array)))
		firmware = NULL;
	if ((!image && !firmware) || count < 0 || count > UINT32_MAX) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT,
				   "job-load needs \"image\" (a path) or \"firmware\" (a list of "
				   "paths, a plain job), and an optional \"count\" >= 0");
		return;
	}
	if (any_chip_in_progress(d) || d->job_loading) {
		server_reply_error(c, req->id, CONTROL_E_STATE,
				   "chips are in progress or another job is being loaded; pause or "
				   "stop the slots first");
		return;
	}
	if (firmware && image_state) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "--image-state is for OSFI "
				   "jobs: a plain job leaves the chip's product state as it is");
		return;
	}
	if (firmware) {
		r = job_load_plain_req(d, c, req, firmware, (uint32_t)count, &j, msg, sizeof(msg));
		if (r == 0)
			goto loaded;
		log_warning("control: %s: job load refused: %s", server_client_user(c), msg);
		server_reply_error(c, req->id, r == -EINVAL ? CONTROL_E_ARGUMENT :
				   r == -ENOENT ? CONTROL_E_NOT_FOUND : CONTROL_E_FAILED, "%s", msg);
		return;
	}
	serial = arg_string(req, "serial_counter") || arg_string(req, "serial_list") ||
		 arg_int(req, "serial_at", -1) >= 0 || arg_int(req, "serial_width", -1) >= 0 ||
		 arg_string(req, "serial_format");
	vendor = req->args && json_object_object_get_ex(req->args, "vendor", &v) &&
		 json_object_get_boolean(v);
	/* docs/operations.md, serial numbers on OSFI and vendor jobs. */
	if (serial && vendor) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "serial numbers are not written "
				   "on vendor jobs: STM32CubeProgrammer's SFI leaves the chip in the "
				   "state its image sets, beyond sfid's reach; put the value in the "
				   "image, or program with a plain or OSFI job");
		return;
	}
	if (image_state && !serial) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "--image-state goes with a "
				   "serial number (--serial-counter or --serial-list)");
		return;
	}
	if (serial && !image_state) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "a serial number on an OSFI job "
				   "is written after the install, when the chip is in the product "
				   "state its image sets, which sfid cannot read (the image's "
				   "configuration is encrypted): declare it with --image-state Open or "
				   "--image-state Provisioning");
		return;
	}
	if (image_state) {
		uint8_t ps;

		if (osfi_product_state_parse(image_state, &ps) < 0) {
			server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "--image-state %s is not "
					   "a product state (Open, Provisioning, iROT-Provisioned, "
					   "TZ-Closed, Closed, Locked)", image_state);
			return;
		}
		if (!job_serial_state_takes_writes(ps)) {
			server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "an image that leaves the "
					   "chip %s takes no serial number after it: beyond "
					   "Provisioning the bootloader refuses memory writes; put the "
					   "value in the image, or program with a plain job",
					   image_state);
			return;
		}
		final_state = ps;
	}
	if (job_fds_take(c, req, &fds) < 0) {
		job_fds_close(&fds);
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "a descriptor named in the "
				   "request was not passed with it (SCM_RIGHTS)");
		return;
	}
	/* A vendor job: an image for ST's own SFI, which sfid passes to the tool unread. */
	if (vendor)
		r = job_load_vendor(image, modules, global, &fds, (uint32_t)count,
				    server_client_user(c), &j, msg, sizeof(msg));
	else
		r = job_load(line_token(d, &tok), image, modules, global, &fds, (uint32_t)count,
			     server_client_user(c), &j, msg, sizeof(msg));
	job_fds_close(&fds);
	if (r == 0 && serial) {
		/* The install checks the declared state after FINALIZE, before any value. */
		j->final_state = final_state;
		j->has_final_state = true;
		r = job_serial_req(d, c, req, j, msg, sizeof(msg));
		if (r != 0) {
			job_free(j);
			j = NULL;
		}
	}
	if (r != 0) {
		log_warning("control: %s: job load refused: %s", server_client_user(c), msg);
		server_reply_error(c, req->id, r == -EINVAL ? CONTROL_E_ARGUMENT :
				   r == -ENOENT ? CONTROL_E_NOT_FOUND : CONTROL_E_FAILED, "%s", msg);
		return;
	}
loaded:
	if (!job_fits_line(d, j, msg, sizeof(msg))) {
		log_warning("control: %s: job load refused: %s", server_client_user(c), msg);
		job_free(j);
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "%s", msg);
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
	/* A plain job spends no license, a vendor job the reader's: no token to find. */
	if (j->plain || j->vendor || tokens_resolve_job(d->tokens, j)) {
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

/* The line token and the tokens of its pool, read on a worker. */
struct hsm_query {
	struct sfid *d;
	uint64_t client;
	uint64_t id;
	size_t n;
	struct hsm_query_token {
		size_t index;		/* in tokens_at() */
		int r;
		uint32_t count;
		int64_t granted;
		struct hsm_token_info info;
	} tok[TOKENS_MAX];
};

static void hsm_query_work(void *data)
{
	struct hsm_query *q = data;

	for (size_t i = 0; i < q->n; i++) {
		struct hsm_query_token *t = &q->tok[i];
		struct hsm *h = tokens_at(q->d->tokens, t->index)->h;

		t->r = hsm_token_info(h, &t->info);
		if (t->r == 0)
			t->r = hsm_counter_read(h, &t->count);
		t->granted = t->r == 0 ? token_granted(h) : -1;
	}
}

static void hsm_query_done(void *data)
{
	struct hsm_query *q = data;
	struct client *c = q->d->server ? server_client_find(q->d->server, q->client) : NULL;
	const struct hsm_query_token *line = &q->tok[0];
	struct json_object *o, *a;
	char fw[2 * OSFI_ID_LEN + 1];
	int64_t left = 0;

	/* What was read updates the line's figures, whoever asked. */
	for (size_t i = 0; i < q->n; i++)
		if (q->tok[i].r == 0)
			licensing_set_left(q->d->licensing, q->tok[i].index, q->tok[i].count);
	if (c && line->r < 0) {
		server_reply_error(c, q->id, CONTROL_E_FAILED, "HSM: %s",
				   hsm_error_to_string(line->r));
	} else if (c) {
		o = json_object_new_object();
		a = json_object_new_array();
		sfid_hex(tokens_at(q->d->tokens, 0)->firmware_id, OSFI_ID_LEN, fw);
		json_object_object_add(o, "label", json_object_new_string(line->info.label));
		json_object_object_add(o, "serial", json_object_new_string(line->info.serial));
		json_object_object_add(o, "manufacturer",
				       json_object_new_string(line->info.manufacturer));
		json_object_object_add(o, "model", json_object_new_string(line->info.model));
		/* Every token of the pool (the line token first), each with its own counter. */
		for (size_t i = 0; i < q->n; i++) {
			const struct hsm_query_token *t = &q->tok[i];
			const struct token *tk = tokens_at(q->d->tokens, t->index);
			struct json_object *e = json_object_new_object();

			json_object_object_add(e, "label", json_object_new_string(tk->label));
			json_object_object_add(e, "serial", json_object_new_string(tk->serial));
			json_object_object_add(e, "licenses_left", t->r == 0 ?
					       json_object_new_int64(t->count) : NULL);
			json_object_object_add(e, "granted", t->r == 0 && t->granted >= 0 ?
					       json_object_new_int64(t->granted) : NULL);
			json_object_object_add(e, "error", t->r < 0 ? json_object_new_string(
						       hsm_error_to_string(t->r)) : NULL);
			json_object_array_add(a, e);
			if (t->r == 0)
				left += t->count;
		}
		/* One name for one thing: "licenses_left", as in status and sfi-hsm info (the
		 * sum over the pool's tokens that answered). */
		json_object_object_add(o, "licenses_left", json_object_new_int64(left));
		json_object_object_add(o, "firmware_id", json_object_new_string(fw));
		json_object_object_add(o, "granted", line->granted >= 0 ?
				       json_object_new_int64(line->granted) : NULL);
		json_object_object_add(o, "tokens", a);
		json_object_object_add(o, "counter_changes",
				       counter_changes_json(q->d, q->n > 1 ? NULL : line->info.serial));
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
	for (size_t i = 0; i < tokens_count(d->tokens) && q->n < TOKENS_MAX; i++)
		if (memcmp(tokens_at(d->tokens, i)->firmware_id, tokens_at(d->tokens, 0)->firmware_id,
			   OSFI_ID_LEN) == 0)
			q->tok[q->n++].index = i;
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

static void cmd_hello(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "version", json_object_new_string(SFID_VERSION));
	json_object_object_add(o, "protocol", json_object_new_int(CONTROL_VERSION));
	json_object_object_add(o, "user", json_object_new_string(server_client_user(c)));
	json_object_object_add(o, "role", json_object_new_string(
				       control_role_to_string(server_client_role(c))));
	server_reply_ok(c, req->id, o);
}

static void cmd_watch(struct sfid *d, struct client *c, const struct control_request *req)
{
	server_watch(c, req->id);
	cmd_status(d, c, req);
}

static void cmd_job_show(struct sfid *d, struct client *c, const struct control_request *req)
{
	if (!d->job) {
		server_reply_error(c, req->id, CONTROL_E_STATE, "no job is loaded");
		return;
	}
	server_reply_ok(c, req->id, job_json(d->job));
}

/* One handler per command, indexed by it. The control codec has already checked the
 * request's arguments and the caller's role against the command table (control.h). */
typedef void (*cmd_exec_fn)(struct sfid *d, struct client *c, const struct control_request *req);

static const cmd_exec_fn cmd_table[_CONTROL_CMD_MAX] = {
	[CONTROL_CMD_HELLO] = cmd_hello,
	[CONTROL_CMD_STATUS] = cmd_status,
	[CONTROL_CMD_WATCH] = cmd_watch,
	[CONTROL_CMD_START] = cmd_slots,
	[CONTROL_CMD_STOP] = cmd_slots,
	[CONTROL_CMD_PAUSE] = cmd_slots,
	[CONTROL_CMD_HISTORY] = cmd_history,
	[CONTROL_CMD_STATS] = cmd_stats,
	[CONTROL_CMD_PORTS] = cmd_ports,
	[CONTROL_CMD_JOB_LOAD] = cmd_job_load,
	[CONTROL_CMD_JOB_SHOW] = cmd_job_show,
	[CONTROL_CMD_EXPORT] = cmd_export,
	[CONTROL_CMD_HSM] = cmd_hsm,
	[CONTROL_CMD_CONFIG] = cmd_config,
};

void commands_dispatch(void *user_data, struct client *c, const struct control_request *req)
{
	enum control_cmd cmd = req->command->cmd;

	if ((unsigned)cmd >= _CONTROL_CMD_MAX || !cmd_table[cmd]) {
		server_reply_error(c, req->id, CONTROL_E_UNKNOWN, "unknown command");
		return;
	}
	cmd_table[cmd](user_data, c, req);
}

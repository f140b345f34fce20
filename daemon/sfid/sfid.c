/* sfid: the line daemon. main() loads the configuration, opens the HSM token and the
 * database, reconciles the license ledger, then runs one event loop for the control socket,
 * every slot's port, timers and signals until SIGTERM/SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
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
#include "an3155-wire.h"
#include "log.h"
#include "server.h"
#include "sfid.h"
#include "slot.h"
#include "worker.h"

#define IMAGE_MAX (64u * 1024 * 1024)
#define MODULES_FILE_MAX (1024u * 1024)

int64_t sfid_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sfid_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sfid_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0xf];
	}
	out[2 * n] = '\0';
}

void sfid_broadcast(struct sfid *d, const char *event, struct json_object *data)
{
	if (!d->server) {
		json_object_put(data);
		return;
	}
	server_broadcast(d->server, event, data);
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

void sfid_history_add(struct sfid *d, const struct history_entry *e)
{
	if (!d->history)
		return;
	d->history[d->history_next] = *e;
	d->history_next = (d->history_next + 1) % d->cfg->history_max;
	if (d->history_len < d->cfg->history_max)
		d->history_len++;
}

unsigned sfid_chip_failures(const struct sfid *d, const char *uid_hex)
{
	unsigned n = 0;

	for (size_t i = 0; i < d->history_len; i++)
		if (!d->history[i].ok && strcmp(d->history[i].chip, uid_hex) == 0)
			n++;
	return n;
}

void sfid_slot_settled(struct sfid *d)
{
	if (!d->stopping)
		return;
	for (size_t i = 0; i < d->n_slots; i++)
		if (slot_busy(d->slots[i]))
			return;
	if (d->license_busy)
		return;
	event_base_loopexit(d->base, NULL);
}

/* ---- license issuance (one at a time per token) ---- */

struct license_work {
	struct sfid *d;
	struct slot *s;
	char uid_hex[2 * OSFI_UID_LEN + 1];
	uint8_t cert[OSFI_CERT_LEN];
	int64_t attempt_id;
	int64_t license_id;
	uint32_t count;
	int r;
	struct hsm_license_result res;
};

static void license_work_free(struct license_work *w)
{
	OPENSSL_cleanse(&w->res, sizeof(w->res));
	free(w);
}

static void license_finish(struct license_work *w)
{
	struct sfid *d = w->d;

	license_work_free(w);
	d->license_busy = false;
	sfid_license_kick(d);
	sfid_slot_settled(d);
}

static void license_issue_work(void *data)
{
	struct license_work *w = data;
	struct hsm_license_request req = {
		.cert = w->cert,
		.cert_len = sizeof(w->cert),
		.device_id = w->d->job->device_id,
		.target = OSFI_TARGET_IMAGE,
	};

	memcpy(req.image_id, w->d->job->image_id, OSFI_ID_LEN);
	w->r = hsm_license_issue(w->d->hsm, &req, w->count, &w->res);
}

static void license_counter_reread_work(void *data)
{
	struct license_work *w = data;

	w->r = hsm_counter_read(w->d->hsm, &w->count);
}

static void license_counter_reread_done(void *data)
{
	struct license_work *w = data;
	struct sfid *d = w->d;
	struct db_diff *diffs = NULL;
	size_t n = 0;

	/* The ledger decides from the counter whether the count was spent. */
	if (w->r == 0 && db_reconcile(d->db, d->token_serial, w->count, &diffs, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			log_warning("ledger: %s: license %" PRId64 " chip %s: ledger expects counter "
				    "%" PRIu64 ", token has %" PRIu64,
				    db_diff_kind_to_string(diffs[i].kind), diffs[i].license_id,
				    diffs[i].chip_uid, diffs[i].expected, diffs[i].actual);
		free(diffs);
	} else {
		sfid_halt(d, "the HSM token cannot be read after a failed license; the ledger "
			  "keeps the open reservation until sfid restarts with the token present");
	}
	license_finish(w);
}

static void license_issue_done(void *data)
{
	struct license_work *w = data;
	struct sfid *d = w->d;
	char cause[300];

	if (w->r < 0) {
		snprintf(cause, sizeof(cause), "the HSM refused the license: %s",
			 hsm_error_to_string(w->r));
		log_error("slot %s chip %s: %s", slot_name(w->s), w->uid_hex, cause);
		switch (-w->r) {
		case HSM_ERR_TOKEN_REMOVED:
		case HSM_ERR_DEVICE:
		case HSM_ERR_NOT_LOGGED_IN:
			/* The counter may have moved: the token says, once it can be read. */
			slot_license_failed(w->s, cause);
			sfid_halt(d, "HSM token failed while issuing a license (%s); check the token",
				  hsm_error_to_string(w->r));
			if (workers_submit(d->workers, license_counter_reread_work,
					   license_counter_reread_done, w) < 0)
				license_finish(w);
			return;
		case HSM_ERR_COUNTER_EXHAUSTED:
			sfid_halt(d, "the HSM license counter is exhausted; load a token with "
				  "licenses left");
			break;
		default:
			break;
		}
		if (db_ledger_cancel(d->db, w->license_id, cause) < 0)
			log_error("ledger: cannot void reservation %" PRId64 ": %s", w->license_id,
				  db_last_error(d->db));
		slot_license_failed(w->s, cause);
		license_finish(w);
		return;
	}
	if (db_ledger_issue(d->db, w->license_id, w->res.count_after, w->res.license,
			    OSFI_LICENSE_LEN) < 0) {
		/* The reservation stays open: restart reconciliation finds the spent count. */
		snprintf(cause, sizeof(cause), "cannot record the issued license: %s",
			 db_last_error(d->db));
		slot_license_failed(w->s, cause);
		sfid_halt(d, "the database cannot record licenses (%s); free disk space and "
			  "restart sfid", db_last_error(d->db));
		license_finish(w);
		return;
	}
	log_info("slot %s chip %s: license %" PRId64 " issued, counter %" PRIu32 " -> %" PRIu32,
		 slot_name(w->s), w->uid_hex, w->license_id, w->res.count_before,
		 w->res.count_after);
	if (!slot_license_wanted(w->s) || strcmp(slot_chip_hex(w->s), w->uid_hex) != 0) {
		/* The chip went away while the HSM worked: the license stays reusable. */
		if (db_ledger_not_installed(d->db, w->license_id, "chip left the slot before the "
					    "license was sent") < 0)
			log_error("ledger: %s", db_last_error(d->db));
	} else {
		slot_license_ready(w->s, w->license_id, w->res.license);
	}
	license_finish(w);
}

static void license_counter_work(void *data)
{
	struct license_work *w = data;

	w->r = hsm_counter_read(w->d->hsm, &w->count);
}

static void license_counter_done(void *data)
{
	struct license_work *w = data;
	struct sfid *d = w->d;
	struct db_reservation res;
	char cause[300];
	int r;

	if (w->r < 0) {
		snprintf(cause, sizeof(cause), "cannot read the HSM license counter: %s",
			 hsm_error_to_string(w->r));
		slot_license_failed(w->s, cause);
		sfid_halt(d, "%s", cause);
		license_finish(w);
		return;
	}
	if (w->count == 0) {
		slot_license_failed(w->s, "the HSM license counter is exhausted; no license spent");
		sfid_halt(d, "the HSM license counter is exhausted; load a token with licenses left");
		license_finish(w);
		return;
	}
	if (!slot_license_wanted(w->s) || strcmp(slot_chip_hex(w->s), w->uid_hex) != 0) {
		license_finish(w);
		return;
	}
	res = (struct db_reservation){
		.job_id = d->job->id,
		.attempt_id = w->attempt_id,
		.chip_uid = w->uid_hex,
		.token_serial = d->token_serial,
		.firmware_id = d->job->image_id_hex,
		.target = OSFI_TARGET_IMAGE,
		.counter_before = w->count,
	};
	r = db_ledger_reserve(d->db, &res, &w->license_id);
	if (r < 0) {
		snprintf(cause, sizeof(cause), "cannot record the license intent: %s",
			 db_last_error(d->db));
		slot_license_failed(w->s, cause);
		sfid_halt(d, "the database refuses new license records (%s); no count was spent",
			  db_last_error(d->db));
		license_finish(w);
		return;
	}
	if (workers_submit(d->workers, license_issue_work, license_issue_done, w) < 0) {
		db_ledger_cancel(d->db, w->license_id, "daemon shutting down");
		slot_license_failed(w->s, "daemon shutting down");
		license_finish(w);
	}
}

void sfid_license_kick(struct sfid *d)
{
	struct license_work *w;
	struct slot *s;

	while (!d->license_busy && d->n_license_queue > 0) {
		s = d->license_queue[0];
		memmove(&d->license_queue[0], &d->license_queue[1],
			(d->n_license_queue - 1) * sizeof(d->license_queue[0]));
		d->n_license_queue--;
		if (!slot_license_wanted(s))
			continue;
		if (d->halt_reason[0] || !d->hsm) {
			slot_license_failed(s, d->halt_reason[0] ? d->halt_reason : "no HSM token");
			continue;
		}
		w = calloc(1, sizeof(*w));
		if (!w) {
			slot_license_failed(s, "out of memory");
			continue;
		}
		w->d = d;
		w->s = s;
		snprintf(w->uid_hex, sizeof(w->uid_hex), "%s", slot_chip_hex(s));
		memcpy(w->cert, slot_license_cert(s), sizeof(w->cert));
		w->attempt_id = slot_attempt_id(s);
		d->license_busy = true;
		if (workers_submit(d->workers, license_counter_work, license_counter_done, w) < 0) {
			d->license_busy = false;
			slot_license_failed(s, "daemon shutting down");
			license_work_free(w);
		}
	}
}

/* ---- jobs ---- */

static struct job *job_free(struct job *j)
{
	if (!j)
		return NULL;
	free(j->image_path);
	free(j->image);
	free(j->module_file);
	free(j->global_file);
	explicit_bzero(j->global_license, sizeof(j->global_license));
	free(j->loaded_by);
	free(j);
	return NULL;
}

static int read_file(const char *path, size_t max, uint8_t **ret, size_t *ret_len)
{
	uint8_t *buf;
	struct stat st;
	size_t off = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (off < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + off, (size_t)st.st_size - off);

		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			free(buf);
			close(fd);
			return r;
		}
		off += (size_t)n;
	}
	close(fd);
	buf[off] = 0;
	*ret = buf;
	*ret_len = off;
	return 0;
}

/* Loads a job: the image must parse, be for the STM32H5 and be the image the token may
 * license; modules must match the image. Returns 0 or a control error with a message. */
/* Reads a global license file: it must be a global license for this job's image. */
static int job_load_global(struct job *j, const char *path, char *msg, size_t msg_size)
{
	struct osfi_license lic;
	uint8_t *buf = NULL;
	size_t len = 0;
	int r;

	r = read_file(path, 4096, &buf, &len);
	if (r < 0) {
		snprintf(msg, msg_size, "cannot read global license %s: %s", path, strerror(-r));
		return CONTROL_E_NOT_FOUND;
	}
	r = osfi_license_decode(buf, len, &lic);
	if (r < 0 || lic.kind != OSFI_LICENSE_KIND_GLOBAL || lic.target != OSFI_TARGET_IMAGE) {
		snprintf(msg, msg_size, "%s is not a global license for an image", path);
		explicit_bzero(buf, len);
		free(buf);
		return CONTROL_E_ARGUMENT;
	}
	if (memcmp(lic.id, j->image_id, OSFI_ID_LEN) != 0 || lic.device_id != j->device_id) {
		snprintf(msg, msg_size, "global license %s was made for another image", path);
		explicit_bzero(buf, len);
		free(buf);
		return CONTROL_E_ARGUMENT;
	}
	memcpy(j->global_license, buf, OSFI_LICENSE_LEN);
	explicit_bzero(buf, len);
	free(buf);
	j->global = true;
	j->global_file = strdup(path);
	return 0;
}

static int job_load(struct sfid *d, const char *path, const char *modules,
		    const char *global, uint32_t target, const char *user, struct job **ret,
		    char *msg, size_t msg_size)
{
	struct osfi_image *img = NULL;
	struct job *j;
	char why[256];
	uint8_t digest[SHA256_DIGEST_LENGTH];
	int r;

	j = calloc(1, sizeof(*j));
	if (!j)
		return CONTROL_E_FAILED;
	j->image_path = strdup(path);
	j->target = target;
	j->loaded_by = strdup(user);
	j->loaded_ms = sfid_now_ms();
	r = read_file(path, IMAGE_MAX, &j->image, &j->image_len);
	if (r < 0) {
		snprintf(msg, msg_size, "cannot read image %s: %s", path, strerror(-r));
		job_free(j);
		return CONTROL_E_NOT_FOUND;
	}
	r = osfi_image_parse(j->image, j->image_len, &img, why, sizeof(why));
	if (r < 0) {
		snprintf(msg, msg_size, "%s is not a valid OSFI image: %s", path, why);
		job_free(j);
		return CONTROL_E_ARGUMENT;
	}
	j->device_id = img->hdr.device_id;
	memcpy(j->image_id, img->id, OSFI_ID_LEN);
	sfid_hex(j->image_id, OSFI_ID_LEN, j->image_id_hex);
	SHA256(j->image, j->image_len, digest);
	sfid_hex(digest, sizeof(digest), j->digest_hex);
	if (j->device_id != STM32_PID_H56X_H57X) {
		snprintf(msg, msg_size, "image %s is for device id 0x%03x; this line installs "
			 "STM32H56x/H57x (0x%03x)", path, j->device_id, STM32_PID_H56X_H57X);
		goto bad;
	}
	if (global) {
		r = job_load_global(j, global, msg, msg_size);
		if (r != 0) {
			osfi_image_free(img);
			job_free(j);
			return r;
		}
	} else if (d->hsm && memcmp(j->image_id, d->firmware_id, OSFI_ID_LEN) != 0) {
		char tok[2 * OSFI_ID_LEN + 1];

		sfid_hex(d->firmware_id, OSFI_ID_LEN, tok);
		snprintf(msg, msg_size, "image %s (id %.16s...) is not the firmware the HSM token %s "
			 "licenses (id %.16s...); load the matching image or token", path,
			 j->image_id_hex, d->token_label, tok);
		goto bad;
	}
	if (modules) {
		struct osfi_module_entry *ents = NULL;
		uint8_t *text = NULL;
		size_t len = 0, n = 0;

		r = read_file(modules, MODULES_FILE_MAX, &text, &len);
		if (r < 0) {
			snprintf(msg, msg_size, "cannot read module license file %s: %s", modules,
				 strerror(-r));
			osfi_image_free(img);
			job_free(j);
			return CONTROL_E_NOT_FOUND;
		}
		r = osfi_modules_parse((const char *)text, len, &ents, &n, why, sizeof(why));
		free(text);
		if (r < 0) {
			snprintf(msg, msg_size, "%s: %s", modules, why);
			goto bad;
		}
		for (size_t i = 0; i < n; i++)
			if (!osfi_image_has_module(img, ents[i].module_id)) {
				snprintf(msg, msg_size, "%s line %u: module %" PRIu32 " is not in image "
					 "%s", modules, ents[i].line, ents[i].module_id, path);
				free(ents);
				goto bad;
			}
		if (n > 0) {
			snprintf(msg, msg_size, "%s: images with modules are not installed by this "
				 "version of sfid yet", modules);
			free(ents);
			goto bad;
		}
		free(ents);
		j->module_file = strdup(modules);
	}
	osfi_image_free(img);
	*ret = j;
	return 0;
bad:
	osfi_image_free(img);
	job_free(j);
	return CONTROL_E_ARGUMENT;
}

/* ---- control commands ---- */

static bool any_slot_busy(struct sfid *d)
{
	for (size_t i = 0; i < d->n_slots; i++)
		if (slot_busy(d->slots[i]))
			return true;
	return d->license_busy;
}

static struct json_object *job_json(const struct job *j)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_int64(j->id));
	json_object_object_add(o, "image", json_object_new_string(j->image_path));
	json_object_object_add(o, "image_id", json_object_new_string(j->image_id_hex));
	json_object_object_add(o, "digest", json_object_new_string(j->digest_hex));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)j->image_len));
	json_object_object_add(o, "device_id", json_object_new_int(j->device_id));
	json_object_object_add(o, "modules", j->module_file ? json_object_new_string(j->module_file)
							    : NULL);
	json_object_object_add(o, "license", json_object_new_string(j->global ? "global" : "hsm"));
	json_object_object_add(o, "global_license", j->global_file ?
			       json_object_new_string(j->global_file) : NULL);
	json_object_object_add(o, "target", json_object_new_int64(j->target));
	json_object_object_add(o, "installed", json_object_new_int64(j->installed));
	json_object_object_add(o, "failed", json_object_new_int64(j->failed));
	json_object_object_add(o, "loaded_by", json_object_new_string(j->loaded_by));
	json_object_object_add(o, "loaded_ms", json_object_new_int64(j->loaded_ms));
	return o;
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
	for (size_t i = 0; i < d->n_slots; i++)
		json_object_array_add(a, slot_status_json(d->slots[i]));
	json_object_object_add(o, "slots", a);
	server_reply_ok(c, req->id, o);
}

/* Collects the slots named in args.slots (all when absent). Returns the count or -1 after
 * replying with an error. */
static int pick_slots(struct sfid *d, struct client *c, const struct control_request *req,
		      struct slot **out)
{
	struct json_object *a;
	size_t n = 0;

	if (!req->args || !json_object_object_get_ex(req->args, "slots", &a) ||
	    json_object_array_length(a) == 0) {
		for (size_t i = 0; i < d->n_slots; i++)
			out[n++] = d->slots[i];
		return (int)n;
	}
	if (!json_object_is_type(a, json_type_array)) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "\"slots\" must be a list of names");
		return -1;
	}
	for (size_t i = 0; i < json_object_array_length(a) && n < d->n_slots; i++) {
		const char *name = json_object_get_string(json_object_array_get_idx(a, i));
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

static void cmd_slots(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct slot *picked[CONFIG_SLOTS_MAX];
	struct json_object *o, *a;
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
		if (d->halt_reason[0]) {
			server_reply_error(c, req->id, CONTROL_E_STATE, "the line is halted: %s",
					   d->halt_reason);
			return;
		}
		if (d->stopping) {
			server_reply_error(c, req->id, CONTROL_E_STATE, "sfid is shutting down");
			return;
		}
	}
	a = json_object_new_array();
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
	o = json_object_new_object();
	json_object_object_add(o, "slots", a);
	server_reply_ok(c, req->id, o);
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

static void cmd_job_load(struct sfid *d, struct client *c, const struct control_request *req)
{
	const char *image = arg_string(req, "image"), *modules = arg_string(req, "modules");
	const char *global = arg_string(req, "global_license");
	int64_t count = arg_int(req, "count", 0);
	struct job *j = NULL;
	struct db_job dj;
	char msg[512];
	int r;

	if (!image || count < 0 || count > UINT32_MAX) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT,
				   "job-load needs \"image\" (a path) and an optional \"count\" >= 0");
		return;
	}
	if (any_slot_busy(d)) {
		server_reply_error(c, req->id, CONTROL_E_STATE,
				   "chips are in progress; pause or stop the slots first");
		return;
	}
	r = job_load(d, image, modules, global, (uint32_t)count, server_client_user(c), &j, msg,
		     sizeof(msg));
	if (r != 0) {
		log_warning("control: %s: job load refused: %s", server_client_user(c), msg);
		server_reply_error(c, req->id, (enum control_error)r, "%s", msg);
		return;
	}
	dj = (struct db_job){
		.image_path = j->image_path,
		.image_id = j->image_id_hex,
		.image_digest = j->digest_hex,
		.module_file = j->module_file,
		.target_count = j->target,
		.loaded_uid = (uint32_t)server_client_uid(c),
		.loaded_user = j->loaded_by,
	};
	if (d->db && db_job_create(d->db, &dj, &j->id) < 0) {
		server_reply_error(c, req->id, CONTROL_E_FAILED, "cannot record the job: %s",
				   db_last_error(d->db));
		job_free(j);
		return;
	}
	if (d->job && d->db)
		db_job_end(d->db, d->job->id);
	job_free(d->job);
	d->job = j;
	log_info("job %" PRId64 " loaded by %s: %s (%zu bytes, image id %.16s..., target %" PRIu32
		 ")", j->id, j->loaded_by, j->image_path, j->image_len, j->image_id_hex, j->target);
	sfid_broadcast(d, "job", job_json(j));
	server_reply_ok(c, req->id, job_json(j));
}

static void cmd_history(struct sfid *d, struct client *c, const struct control_request *req)
{
	int64_t limit = arg_int(req, "limit", 20);
	struct json_object *a = json_object_new_array(), *o;

	if (limit <= 0)
		limit = 20;
	for (size_t k = 0; k < d->history_len && (int64_t)k < limit; k++) {
		size_t i = (d->history_next + d->cfg->history_max - 1 - k) % d->cfg->history_max;
		const struct history_entry *e = &d->history[i];
		struct json_object *h = json_object_new_object();

		json_object_object_add(h, "attempt", json_object_new_int64(e->attempt_id));
		json_object_object_add(h, "time_ms", json_object_new_int64(e->time_ms));
		json_object_object_add(h, "slot", json_object_new_string(e->slot));
		json_object_object_add(h, "chip", json_object_new_string(e->chip));
		json_object_object_add(h, "result", json_object_new_string(e->ok ? "ok" : "failed"));
		json_object_object_add(h, "step", json_object_new_string(e->step));
		json_object_object_add(h, "error", json_object_new_string(e->cause));
		json_object_object_add(h, "bytes", json_object_new_int64((int64_t)e->bytes));
		json_object_object_add(h, "duration_ms", json_object_new_int64(e->duration_ms));
		json_object_object_add(h, "license_reused", json_object_new_boolean(e->license_reused));
		json_object_array_add(a, h);
	}
	o = json_object_new_object();
	json_object_object_add(o, "attempts", a);
	server_reply_ok(c, req->id, o);
}

static void cmd_stats(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct json_object *o = json_object_new_object(), *slots = json_object_new_object();
	struct json_object *causes = json_object_new_object();
	uint64_t ok = 0, failed = 0;

	for (size_t i = 0; i < d->n_slots; i++) {
		struct json_object *s = json_object_new_object();

		json_object_object_add(s, "ok", json_object_new_int64(0));
		json_object_object_add(s, "failed", json_object_new_int64(0));
		json_object_object_add(slots, slot_name(d->slots[i]), s);
	}
	for (size_t k = 0; k < d->history_len; k++) {
		const struct history_entry *e = &d->history[k];
		struct json_object *s, *v;
		const char *key = e->ok ? "ok" : "failed";

		e->ok ? ok++ : failed++;
		if (json_object_object_get_ex(slots, e->slot, &s) &&
		    json_object_object_get_ex(s, key, &v))
			json_object_set_int64(v, json_object_get_int64(v) + 1);
		if (!e->ok) {
			if (json_object_object_get_ex(causes, e->step, &v))
				json_object_set_int64(v, json_object_get_int64(v) + 1);
			else
				json_object_object_add(causes, e->step, json_object_new_int64(1));
		}
	}
	json_object_object_add(o, "ok", json_object_new_int64((int64_t)ok));
	json_object_object_add(o, "failed", json_object_new_int64((int64_t)failed));
	json_object_object_add(o, "yield", json_object_new_double(ok + failed ? (double)ok /
								  (double)(ok + failed) : 0.0));
	json_object_object_add(o, "slots", slots);
	json_object_object_add(o, "failures_by_step", causes);
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

static void cmd_export(struct sfid *d, struct client *c, const struct control_request *req)
{
	const char *format = arg_string(req, "format");
	struct db_range range = { .job_id = arg_int(req, "job", 0),
				  .from_ms = arg_int(req, "since_ms", 0) };
	struct json_object *o;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	if (!format || (strcmp(format, "csv") != 0 && strcmp(format, "jsonl") != 0)) {
		server_reply_error(c, req->id, CONTROL_E_ARGUMENT, "export needs \"format\": "
				   "\"csv\" or \"jsonl\"");
		return;
	}
	if (!d->db) {
		server_reply_error(c, req->id, CONTROL_E_STATE, "no database is open");
		return;
	}
	/* Sign what is not yet covered, so the export verifies on its own. */
	r = db_checkpoint(d->db);
	if (r < 0 && r != -ENOKEY)
		log_warning("export: cannot write a signed checkpoint: %s", db_last_error(d->db));
	f = open_memstream(&buf, &len);
	if (!f) {
		server_reply_error(c, req->id, CONTROL_E_FAILED, "out of memory");
		return;
	}
	if (strcmp(format, "csv") == 0)
		r = db_export_csv(d->db, &range, f);
	else
		r = db_export_jsonl(d->db, &range, f);
	fclose(f);
	if (r < 0) {
		server_reply_error(c, req->id, CONTROL_E_FAILED, "export failed: %s",
				   db_last_error(d->db));
		free(buf);
		return;
	}
	o = json_object_new_object();
	json_object_object_add(o, "format", json_object_new_string(format));
	json_object_object_add(o, "data", json_object_new_string_len(buf, (int)len));
	free(buf);
	log_info("control: %s exported the audit trail (%s, %zu bytes)", server_client_user(c),
		 format, len);
	server_reply_ok(c, req->id, o);
}

struct hsm_query {
	struct sfid *d;
	uint64_t client;
	uint64_t id;
	int r;
	uint32_t count;
	struct hsm_token_info info;
};

static void hsm_query_work(void *data)
{
	struct hsm_query *q = data;

	q->r = hsm_token_info(q->d->hsm, &q->info);
	if (q->r == 0)
		q->r = hsm_counter_read(q->d->hsm, &q->count);
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
		sfid_hex(q->d->firmware_id, OSFI_ID_LEN, fw);
		json_object_object_add(o, "label", json_object_new_string(q->info.label));
		json_object_object_add(o, "serial", json_object_new_string(q->info.serial));
		json_object_object_add(o, "manufacturer", json_object_new_string(q->info.manufacturer));
		json_object_object_add(o, "model", json_object_new_string(q->info.model));
		json_object_object_add(o, "counter", json_object_new_int64(q->count));
		json_object_object_add(o, "firmware_id", json_object_new_string(fw));
		server_reply_ok(c, q->id, o);
	}
	free(q);
}

static void cmd_hsm(struct sfid *d, struct client *c, const struct control_request *req)
{
	struct hsm_query *q;

	if (!d->hsm) {
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
	int r = hsm_audit_sign(d->hsm, digest, ret_sig);

	return r < 0 ? -EIO : 0;
}

/* SHA-256 of the audit key's DER SubjectPublicKeyInfo. */
static int audit_key_id(struct sfid *d, uint8_t ret_id[DB_HASH_SIZE])
{
	unsigned char *der = NULL;
	EVP_PKEY *pk = NULL;
	char *pem = NULL;
	BIO *bio;
	int n, r = -EINVAL;

	if (hsm_audit_pubkey_pem(d->hsm, &pem) < 0)
		return -ENOKEY;
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

static int open_hsm(struct sfid *d)
{
	const struct config *cfg = d->cfg;
	struct hsm_token_info info;
	bool serial = strncmp(cfg->hsm_token, "serial:", 7) == 0;
	int r;

	r = hsm_open(cfg->hsm_module, serial ? NULL : cfg->hsm_token,
		     serial ? cfg->hsm_token + 7 : NULL, &d->hsm);
	if (r < 0) {
		log_error("cannot open HSM token '%s' with module %s: %s", cfg->hsm_token,
			  cfg->hsm_module, hsm_error_to_string(r));
		return r;
	}
	if (cfg->hsm_pin_file)
		r = hsm_login_pin_file(d->hsm, cfg->hsm_pin_file);
	else
		r = hsm_login_credential(d->hsm, cfg->hsm_pin_credential);
	if (r < 0) {
		log_error("cannot log in to HSM token '%s' (PIN from %s): %s", cfg->hsm_token,
			  cfg->hsm_pin_file ? cfg->hsm_pin_file : cfg->hsm_pin_credential,
			  hsm_error_to_string(r));
		return r;
	}
	r = hsm_token_info(d->hsm, &info);
	if (r == 0)
		r = hsm_firmware_id(d->hsm, d->firmware_id);
	if (r == 0)
		r = hsm_ca_pubkey(d->hsm, d->ca_pub);
	if (r < 0) {
		log_error("HSM token '%s' is not usable: %s", cfg->hsm_token, hsm_error_to_string(r));
		return r;
	}
	snprintf(d->token_serial, sizeof(d->token_serial), "%s", info.serial);
	snprintf(d->token_label, sizeof(d->token_label), "%s", info.label);
	return 0;
}

static int open_db(struct sfid *d, struct db_signer *signer)
{
	struct db_options o = { .signer = NULL, .max_size_bytes = d->cfg->db_max_bytes };
	struct db_diff *diffs = NULL;
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
	r = db_open(d->cfg->db_path, &o, &d->db, err, sizeof(err));
	if (r < 0) {
		log_error("cannot open database %s: %s", d->cfg->db_path, err);
		return r;
	}
	/* A crash may have left a reservation open: the token's counter settles it. */
	r = hsm_counter_read(d->hsm, &count);
	if (r < 0) {
		log_error("cannot read the HSM license counter: %s", hsm_error_to_string(r));
		return -EIO;
	}
	r = db_reconcile(d->db, d->token_serial, count, &diffs, &n);
	if (r < 0) {
		log_error("cannot reconcile the license ledger: %s", db_last_error(d->db));
		return r;
	}
	for (size_t i = 0; i < n; i++)
		log_warning("ledger reconciliation: %s: license %" PRId64 " chip %s: ledger expects "
			    "counter %" PRIu64 ", token %s has %" PRIu64,
			    db_diff_kind_to_string(diffs[i].kind), diffs[i].license_id,
			    diffs[i].chip_uid[0] ? diffs[i].chip_uid : "-", diffs[i].expected,
			    diffs[i].token_serial, diffs[i].actual);
	free(diffs);
	log_info("HSM token %s (serial %s): %" PRIu32 " licenses left; ledger %s", d->token_label,
		 d->token_serial, count, n ? "differences logged above" : "agrees");
	return 0;
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
		printf("%s: configuration is valid (%zu slots)\n", config_path, d.cfg->n_slots);
		config_free(d.cfg);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	d.started_ms = sfid_mono_ms();
	d.history = calloc(d.cfg->history_max, sizeof(*d.history));
	d.base = event_base_new();
	if (!d.history || !d.base) {
		log_error("out of memory");
		goto out;
	}
	if (open_hsm(&d) < 0 || open_db(&d, &signer) < 0)
		goto out;
	r = workers_new(d.base, d.cfg->hsm_workers, &d.workers);
	if (r < 0) {
		log_error("cannot start worker threads: %s", strerror(-r));
		goto out;
	}
	d.slots = calloc(d.cfg->n_slots, sizeof(*d.slots));
	if (!d.slots)
		goto out;
	for (size_t i = 0; i < d.cfg->n_slots; i++) {
		if (slot_new(&d, &d.cfg->slots[i], (unsigned)i, &d.slots[i]) < 0)
			goto out;
		d.n_slots++;
	}
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
	};
	r = server_new(d.base, &so, dispatch, &d, &d.server, err, sizeof(err));
	if (r < 0) {
		log_error("control socket: %s", err);
		goto out;
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
	log_info("sfid %s: station %s, %zu slots, control socket %s", SFID_VERSION, d.cfg->station,
		 d.n_slots, d.cfg->socket_path);
	sd_notify(0, "READY=1");
	ev_status = event_new(d.base, -1, EV_PERSIST, status_cb, &d);
	if (ev_status) {
		struct timeval one_s = { .tv_sec = 1 };

		status_cb(-1, 0, &d);
		evtimer_add(ev_status, &one_s);
	}

	event_base_dispatch(d.base);
	log_info("shutting down");
	ret = 0;
out:
	/* Licenses being issued finish and are recorded before anything closes. */
	d.workers = workers_free(d.workers);
	for (size_t i = 0; i < d.n_slots; i++)
		slot_stop(d.slots[i], "sfid shut down during the install");
	if (d.db && db_checkpoint(d.db) < 0)
		log_debug("no checkpoint at exit: %s", db_last_error(d.db));
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
	if (ev_shutdown_timer)
		event_free(ev_shutdown_timer);
	job_free(d.job);
	d.db = db_close(d.db);
	d.hsm = hsm_close(d.hsm);
	free(d.history);
	if (d.base)
		event_base_free(d.base);
	config_free(d.cfg);
	return ret;
}

/* Jobs, attempts, chips and the license ledger. Each function is one transaction that
 * changes its rows and appends the matching audit record. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "db-internal.h"

#define TEXT_MAX DB_TEXT_MAX /* bound on free text (paths, messages) stored per field */

static const char *const license_state_names[_DB_LICENSE_STATE_MAX] = {
	[DB_LICENSE_RESERVED] = "reserved",
	[DB_LICENSE_ISSUED] = "issued",
	[DB_LICENSE_INSTALLED] = "installed",
	[DB_LICENSE_NOT_INSTALLED] = "issued_not_installed",
	[DB_LICENSE_RESERVED_UNCONFIRMED] = "reserved_unconfirmed",
	[DB_LICENSE_VOID] = "void",
};

static const char *const diff_kind_names[_DB_DIFF_KIND_MAX] = {
	[DB_DIFF_RESERVED_UNCONFIRMED] = "reserved-but-unconfirmed",
	[DB_DIFF_RESERVATION_VOID] = "reservation-void",
	[DB_DIFF_UNRECORDED_SPENDS] = "unrecorded-spends",
	[DB_DIFF_COUNTER_HIGHER] = "counter-higher",
	[DB_DIFF_REFILL] = "refill",
};

const char *db_license_state_to_string(enum db_license_state s)
{
	return (unsigned)s < _DB_LICENSE_STATE_MAX ? license_state_names[s] : NULL;
}

const char *db_diff_kind_to_string(enum db_diff_kind k)
{
	return (unsigned)k < _DB_DIFF_KIND_MAX ? diff_kind_names[k] : NULL;
}

static int license_state_from_string(const char *s)
{
	for (int i = 0; i < _DB_LICENSE_STATE_MAX; i++)
		if (s && strcmp(s, license_state_names[i]) == 0)
			return i;
	return -EINVAL;
}

static bool is_lower_hex(const char *s, size_t len)
{
	return audit_is_hex(s, len);
}

static bool text_ok(const char *s, bool required)
{
	if (!s)
		return !required;
	return (!required || s[0]) && strnlen(s, TEXT_MAX + 1) <= TEXT_MAX;
}

static bool serial_ok(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strnlen(s, DB_TOKEN_SERIAL_MAX + 1);
	if (n == 0 || n > DB_TOKEN_SERIAL_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

/* Rolls back on error, otherwise appends the audit record and commits. data is consumed. */
static int finish(struct db *db, int r, const char *type, struct json_object *data)
{
	if (r == 0)
		r = db_audit_append(db, type, data);
	else
		json_object_put(data);
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	return db_commit(db);
}

/* Runs st (bound by the caller); fails with -ENOENT if it changed no row. */
static int step_change(struct db *db, sqlite3_stmt *st, const char *what, const char *missing)
{
	int r = db_step_done(db, st, what);

	if (r == 0 && sqlite3_changes(db->h) == 0)
		r = db_fail(db, -ENOENT, "%s", missing);
	return r;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
	if (s)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

int db_job_create(struct db *db, const struct db_job *job, int64_t *ret_job_id)
{
	struct json_object *data;
	sqlite3_stmt *st;
	int64_t id = 0;
	int r;

	if (!job || !text_ok(job->image_path, true) || !is_lower_hex(job->image_id, DB_ID_HEX) ||
	    !is_lower_hex(job->image_digest, DB_ID_HEX) || !text_ok(job->module_file, false) ||
	    !text_ok(job->loaded_user, true) || !text_ok(job->global_license_file, false) ||
	    !text_ok(job->station, false) || !text_ok(job->sfid_version, false) ||
	    !text_ok(job->firmware, job->plain) || (job->go && !job->plain) ||
	    (job->plain && job->vendor))
		return db_fail(db, -EINVAL, "invalid job: image path, 64-digit lowercase hex image "
					    "id and digest, and the loading user are required");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_prepare(db,
		       "INSERT INTO jobs (image_path, image_id, image_digest, module_file, "
		       "target_count, loaded_uid, loaded_user, created_at, state, "
		       "global_license_file, station, sfid_version, kind, firmware, go_address) "
		       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?)",
		       &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, job->image_path, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, job->image_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, job->image_digest, -1, SQLITE_STATIC);
		bind_text_or_null(st, 4, job->module_file);
		sqlite3_bind_int64(st, 5, job->target_count);
		sqlite3_bind_int64(st, 6, job->loaded_uid);
		sqlite3_bind_text(st, 7, job->loaded_user, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 8, db_now_ms());
		bind_text_or_null(st, 9, job->global_license_file);
		bind_text_or_null(st, 10, job->station);
		bind_text_or_null(st, 11, job->sfid_version);
		sqlite3_bind_text(st, 12, job->plain ? "plain" : job->vendor ? "vendor" : "osfi", -1,
				  SQLITE_STATIC);
		bind_text_or_null(st, 13, job->plain ? job->firmware : NULL);
		if (job->go)
			sqlite3_bind_int64(st, 14, job->go_address);
		else
			sqlite3_bind_null(st, 14);
		r = db_step_done(db, st, "recording a job");
		id = sqlite3_last_insert_rowid(db->h);
	}
	data = json_object_new_object();
	db_json_add_int(data, "job", id);
	db_json_add_str(data, "image_path", job->image_path);
	db_json_add_str(data, "image_id", job->image_id);
	db_json_add_str(data, "image_digest", job->image_digest);
	db_json_add_str(data, "module_file", job->module_file);
	db_json_add_int(data, "target_count", job->target_count);
	db_json_add_int(data, "loaded_uid", job->loaded_uid);
	db_json_add_str(data, "loaded_user", job->loaded_user);
	/* Only when set, so the records of counted jobs keep their members. */
	if (job->global_license_file)
		db_json_add_str(data, "global_license_file", job->global_license_file);
	if (job->station)
		db_json_add_str(data, "station", job->station);
	if (job->sfid_version)
		db_json_add_str(data, "version", job->sfid_version);
	/* Only for plain jobs, so the records of OSFI jobs keep their members. */
	if (job->plain) {
		db_json_add_str(data, "kind", "plain");
		db_json_add_str(data, "firmware", job->firmware);
		if (job->go)
			db_json_add_int(data, "go_address", job->go_address);
	}
	/* A vendor job's image is ST's: sfid knows it by its digest only. */
	if (job->vendor)
		db_json_add_str(data, "kind", "vendor");
	r = finish(db, r, "job.create", data);
	if (r == 0)
		*ret_job_id = id;
	return r;
}

int db_job_end(struct db *db, int64_t job_id)
{
	struct json_object *data;
	sqlite3_stmt *st;
	int r;

	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_prepare(db, "UPDATE jobs SET state = 'ended', ended_at = ? "
			   "WHERE id = ? AND state = 'active'", &st);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, db_now_ms());
		sqlite3_bind_int64(st, 2, job_id);
		r = step_change(db, st, "ending a job", "no active job with this id");
	}
	data = json_object_new_object();
	db_json_add_int(data, "job", job_id);
	r = finish(db, r, "job.end", data);
	if (r < 0 || !db->signer)
		return r;
	/* The job's records are stored; a checkpoint that fails here is reported so the
	 * caller can retry with db_checkpoint(). */
	r = db_checkpoint(db);
	return r < 0 ? (r == -ENOSPC ? r : -ENOKEY) : 0;
}

int db_job_start(struct db *db, int64_t job_id, uint32_t uid, const char *user,
		 const char *const *slots, size_t n_slots)
{
	struct json_object *data, *list;
	sqlite3_stmt *st;
	int r;

	if (!text_ok(user, true) || n_slots > 1024)
		return db_fail(db, -EINVAL, "a job start needs the user who started it");
	for (size_t i = 0; i < n_slots; i++)
		if (!text_ok(slots[i], true))
			return db_fail(db, -EINVAL, "a job start names its slots");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_prepare(db, "UPDATE jobs SET started_uid = ?, started_user = ?, started_at = ? "
			   "WHERE id = ? AND state = 'active'", &st);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, uid);
		sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, db_now_ms());
		sqlite3_bind_int64(st, 4, job_id);
		r = step_change(db, st, "recording a job start", "no active job with this id");
	}
	data = json_object_new_object();
	list = json_object_new_array();
	db_json_add_int(data, "job", job_id);
	db_json_add_int(data, "uid", uid);
	db_json_add_str(data, "user", user);
	for (size_t i = 0; list && i < n_slots; i++)
		json_object_array_add(list, json_object_new_string(slots[i]));
	json_object_object_add(data, "slots", list);
	return finish(db, r, "job.start", data);
}

/* job_id's kind when it is a plain or vendor job (NULL for an OSFI job); its image digest
 * to digest (may be NULL). */
static const char *job_kind_of(struct db *db, int64_t job_id, char *digest, size_t size)
{
	sqlite3_stmt *st;
	const char *kind = NULL;

	if (job_id <= 0 || db_prepare(db, "SELECT kind, image_digest FROM jobs WHERE id = ?", &st) < 0)
		return NULL;
	sqlite3_bind_int64(st, 1, job_id);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *k = (const char *)sqlite3_column_text(st, 0);
		const char *dg = (const char *)sqlite3_column_text(st, 1);

		kind = !k ? NULL : strcmp(k, "plain") == 0 ? "plain" :
		       strcmp(k, "vendor") == 0 ? "vendor" : NULL;
		if (digest && size)
			snprintf(digest, size, "%s", dg ? dg : "");
	}
	sqlite3_finalize(st);
	return kind;
}

/* The job of an attempt, 0 if none. */
static int64_t attempt_job(struct db *db, int64_t attempt_id)
{
	sqlite3_stmt *st;
	int64_t job = 0;

	if (db_prepare(db, "SELECT job_id FROM attempts WHERE id = ?", &st) < 0)
		return 0;
	sqlite3_bind_int64(st, 1, attempt_id);
	if (sqlite3_step(st) == SQLITE_ROW)
		job = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return job;
}

int db_attempt_begin(struct db *db, int64_t job_id, const char *slot, int64_t *ret_attempt_id)
{
	struct json_object *data;
	sqlite3_stmt *st;
	int64_t id = 0;
	int r;

	if (!text_ok(slot, true))
		return db_fail(db, -EINVAL, "an attempt needs a slot name");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_prepare(db, "INSERT INTO attempts (job_id, slot, step, result, started_at) "
			   "SELECT id, ?, 'begin', 'running', ? FROM jobs "
			   "WHERE id = ? AND state = 'active'", &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, slot, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, db_now_ms());
		sqlite3_bind_int64(st, 3, job_id);
		r = step_change(db, st, "recording an attempt",
				"no active job with this id for the attempt");
		id = sqlite3_last_insert_rowid(db->h);
	}
	data = json_object_new_object();
	db_json_add_int(data, "attempt", id);
	db_json_add_int(data, "job", job_id);
	db_json_add_str(data, "slot", slot);
	if (r == 0) {
		const char *kind = job_kind_of(db, job_id, NULL, 0);

		if (kind)
			db_json_add_str(data, "kind", kind);
	}
	r = finish(db, r, "attempt.begin", data);
	if (r == 0)
		*ret_attempt_id = id;
	return r;
}

int db_attempt_step(struct db *db, int64_t attempt_id, const char *step, const char *chip_uid,
		    uint64_t bytes_sent)
{
	struct json_object *data;
	sqlite3_stmt *st;
	int r;

	if (!text_ok(step, true) || (chip_uid && !is_lower_hex(chip_uid, DB_CHIP_UID_HEX)) ||
	    bytes_sent > INT64_MAX)
		return db_fail(db, -EINVAL, "invalid attempt step (a step name, and a chip UID of "
					    "24 lowercase hex digits, are required)");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_prepare(db, "UPDATE attempts SET step = ?, chip_uid = coalesce(?, chip_uid), "
			   "bytes_sent = ? WHERE id = ? AND result = 'running'", &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, step, -1, SQLITE_STATIC);
		bind_text_or_null(st, 2, chip_uid);
		sqlite3_bind_int64(st, 3, (int64_t)bytes_sent);
		sqlite3_bind_int64(st, 4, attempt_id);
		r = step_change(db, st, "recording an attempt step", "no running attempt with this id");
	}
	data = json_object_new_object();
	db_json_add_int(data, "attempt", attempt_id);
	db_json_add_str(data, "step", step);
	if (chip_uid)
		db_json_add_str(data, "chip_uid", chip_uid);
	db_json_add_int(data, "bytes", (int64_t)bytes_sent);
	return finish(db, r, "attempt.step", data);
}

int db_attempt_end(struct db *db, int64_t attempt_id, enum db_result result, int error_code,
		   const char *error_text, uint64_t bytes_sent)
{
	return db_attempt_finish(db, attempt_id, result, error_code, error_text, bytes_sent, NULL);
}

int db_attempt_finish(struct db *db, int64_t attempt_id, enum db_result result, int error_code,
		      const char *error_text, uint64_t bytes_sent, const char *chip_uid)
{
	struct json_object *data;
	const char *res = NULL;
	sqlite3_stmt *st;
	int r;

	switch (result) {
	case DB_RESULT_OK:
		res = "ok";
		break;
	case DB_RESULT_FAILED:
		res = "failed";
		break;
	case _DB_RESULT_MAX:
		break;
	}
	if (!res || !text_ok(error_text, result == DB_RESULT_FAILED) || bytes_sent > INT64_MAX ||
	    (chip_uid && !is_lower_hex(chip_uid, DB_CHIP_UID_HEX)))
		return db_fail(db, -EINVAL, "invalid attempt end (a failed attempt needs an error "
					    "text; a chip UID is 24 lowercase hex digits)");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_prepare(db, "UPDATE attempts SET result = ?, error_code = ?, error_text = ?, "
			   "bytes_sent = ?, ended_at = ?, chip_uid = coalesce(?, chip_uid) "
			   "WHERE id = ? AND result = 'running'", &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, res, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, error_code);
		bind_text_or_null(st, 3, error_text);
		sqlite3_bind_int64(st, 4, (int64_t)bytes_sent);
		sqlite3_bind_int64(st, 5, db_now_ms());
		bind_text_or_null(st, 6, chip_uid);
		sqlite3_bind_int64(st, 7, attempt_id);
		r = step_change(db, st, "ending an attempt", "no running attempt with this id");
	}
	data = json_object_new_object();
	db_json_add_int(data, "attempt", attempt_id);
	db_json_add_str(data, "result", res);
	db_json_add_int(data, "error_code", error_code);
	db_json_add_str(data, "error_text", error_text);
	db_json_add_int(data, "bytes", (int64_t)bytes_sent);
	if (chip_uid)
		db_json_add_str(data, "chip_uid", chip_uid);
	/* A plain or vendor job's chip: the record says so and names the image it received. */
	if (r == 0) {
		char digest[DB_ID_HEX + 1];
		const char *kind = job_kind_of(db, attempt_job(db, attempt_id), digest,
					       sizeof(digest));

		if (kind) {
			db_json_add_str(data, "kind", kind);
			db_json_add_str(data, "image_digest", digest);
		}
	}
	return finish(db, r, "attempt.end", data);
}

int db_chip_update(struct db *db, const char *chip_uid, const char *final_state,
		   const char *product_state)
{
	struct json_object *data;
	sqlite3_stmt *st;
	int64_t now;
	int r;

	if (!is_lower_hex(chip_uid, DB_CHIP_UID_HEX) || !text_ok(final_state, true) ||
	    !text_ok(product_state, false))
		return db_fail(db, -EINVAL, "invalid chip update (24-digit lowercase hex UID and a "
					    "state are required)");
	r = db_begin(db);
	if (r < 0)
		return r;
	now = db_now_ms();
	r = db_prepare(db, "INSERT INTO chips (uid, first_seen, last_seen, final_state, "
			   "product_state) VALUES (?1, ?2, ?2, ?3, ?4) ON CONFLICT (uid) DO UPDATE "
			   "SET last_seen = ?2, final_state = ?3, "
			   "product_state = coalesce(?4, product_state)", &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, chip_uid, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, now);
		sqlite3_bind_text(st, 3, final_state, -1, SQLITE_STATIC);
		bind_text_or_null(st, 4, product_state);
		r = db_step_done(db, st, "recording a chip");
	}
	data = json_object_new_object();
	db_json_add_str(data, "chip_uid", chip_uid);
	db_json_add_str(data, "final_state", final_state);
	db_json_add_str(data, "product_state", product_state);
	return finish(db, r, "chip.update", data);
}

/* Loads one license row (SELECT of license_columns). */
#define LICENSE_COLUMNS                                                                    \
	"id, job_id, chip_uid, token_serial, firmware_id, target, counter_before, "       \
	"coalesce(counter_after, -1), state, license_digest, record"

static int license_from_row(struct db *db, sqlite3_stmt *st, struct db_license **ret)
{
	const char *chip = (const char *)sqlite3_column_text(st, 2);
	const char *token = (const char *)sqlite3_column_text(st, 3);
	const char *fw = (const char *)sqlite3_column_text(st, 4);
	int state = license_state_from_string((const char *)sqlite3_column_text(st, 8));
	int n = sqlite3_column_bytes(st, 10);
	struct db_license *l;

	if (!chip || !token || !fw || strlen(chip) != DB_CHIP_UID_HEX ||
	    strlen(token) > DB_TOKEN_SERIAL_MAX || strlen(fw) != DB_ID_HEX || state < 0 ||
	    (sqlite3_column_type(st, 9) != SQLITE_NULL &&
	     sqlite3_column_bytes(st, 9) != DB_HASH_SIZE))
		return db_fail(db, -EBADMSG, "a license row in %s is damaged", db->path);
	l = calloc(1, sizeof(*l));
	if (!l || (n > 0 && !(l->record = malloc((size_t)n)))) {
		free(l);
		return db_fail(db, -ENOMEM, "out of memory reading a license");
	}
	l->id = sqlite3_column_int64(st, 0);
	l->job_id = sqlite3_column_int64(st, 1);
	memcpy(l->chip_uid, chip, DB_CHIP_UID_HEX + 1);
	memcpy(l->token_serial, token, strlen(token) + 1);
	memcpy(l->firmware_id, fw, DB_ID_HEX + 1);
	l->target = (uint32_t)sqlite3_column_int64(st, 5);
	l->counter_before = (uint64_t)sqlite3_column_int64(st, 6);
	l->counter_after = (uint64_t)sqlite3_column_int64(st, 7);
	l->state = (enum db_license_state)state;
	if (sqlite3_column_type(st, 9) != SQLITE_NULL)
		memcpy(l->digest, sqlite3_column_blob(st, 9), DB_HASH_SIZE);
	if (n > 0)
		memcpy(l->record, sqlite3_column_blob(st, 10), (size_t)n);
	l->record_len = (size_t)n;
	*ret = l;
	return 0;
}

static int license_load(struct db *db, int64_t id, struct db_license **ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, "SELECT " LICENSE_COLUMNS " FROM licenses WHERE id = ?", &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = license_from_row(db, st, ret);
	else if (rc == SQLITE_DONE)
		r = db_fail(db, -ENOENT, "no license with id %" PRId64 " in the ledger", id);
	else
		r = db_fail_sqlite(db, rc, "reading a license");
	sqlite3_finalize(st);
	return r;
}

struct db_license *db_license_free(struct db_license *l)
{
	if (!l)
		return NULL;
	if (l->record) {
		OPENSSL_cleanse(l->record, l->record_len);
		free(l->record);
	}
	free(l);
	return NULL;
}

static struct json_object *license_data(const struct db_license *l)
{
	struct json_object *data = json_object_new_object();

	if (!data)
		return NULL;
	db_json_add_int(data, "license", l->id);
	db_json_add_str(data, "chip_uid", l->chip_uid);
	db_json_add_str(data, "token", l->token_serial);
	db_json_add_int(data, "target", l->target);
	return data;
}

static int find_reusable_locked(struct db *db, const char *chip_uid, const char *firmware_id,
				uint32_t target, struct db_license **ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, "SELECT " LICENSE_COLUMNS " FROM licenses WHERE chip_uid = ? AND "
			   "firmware_id = ? AND target = ? AND state IN ('issued', 'installed', "
			   "'issued_not_installed') AND record IS NOT NULL ORDER BY id DESC LIMIT 1",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, chip_uid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, firmware_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, target);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = license_from_row(db, st, ret);
	else if (rc == SQLITE_DONE)
		r = -ENOENT;
	else
		r = db_fail_sqlite(db, rc, "looking up a reusable license");
	sqlite3_finalize(st);
	return r;
}

int db_ledger_find_reusable(struct db *db, const char *chip_uid, const char *firmware_id,
			    uint32_t target, struct db_license **ret)
{
	if (!is_lower_hex(chip_uid, DB_CHIP_UID_HEX) || !is_lower_hex(firmware_id, DB_ID_HEX))
		return db_fail(db, -EINVAL, "invalid chip UID or firmware id");
	db->err[0] = '\0';
	return find_reusable_locked(db, chip_uid, firmware_id, target, ret);
}

/* The counter the ledger now knows for a token (and its granted total, when granted >= 0;
 * -1 keeps the one stored). */
static int token_state_set(struct db *db, const char *serial, uint64_t counter, int64_t granted)
{
	sqlite3_stmt *st;
	int r;

	r = db_prepare(db, "INSERT INTO tokens (serial, counter, granted, updated_at) "
			   "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (serial) DO UPDATE SET "
			   "counter = ?2, granted = coalesce(?3, granted), updated_at = ?4", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, serial, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)counter);
	if (granted >= 0)
		sqlite3_bind_int64(st, 3, granted);
	else
		sqlite3_bind_null(st, 3);
	sqlite3_bind_int64(st, 4, db_now_ms());
	return db_step_done(db, st, "recording the token's counter");
}

static int use_insert(struct db *db, int64_t license_id, int64_t attempt_id, bool reused)
{
	sqlite3_stmt *st;
	int r;

	r = db_prepare(db, "INSERT INTO license_uses (license_id, attempt_id, reused, used_at) "
			   "VALUES (?, ?, ?, ?)", &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, license_id);
	sqlite3_bind_int64(st, 2, attempt_id);
	sqlite3_bind_int(st, 3, reused);
	sqlite3_bind_int64(st, 4, db_now_ms());
	r = db_step_done(db, st, "linking a license to its attempt");
	if (r == -EINVAL)
		r = db_fail(db, r, "attempt %" PRId64 " does not exist", attempt_id);
	return r;
}

int db_ledger_reserve(struct db *db, const struct db_reservation *res, int64_t *ret_license_id)
{
	struct db_license *existing = NULL;
	struct json_object *data;
	sqlite3_stmt *st;
	int64_t id = 0;
	int r;

	if (!res || !is_lower_hex(res->chip_uid, DB_CHIP_UID_HEX) ||
	    !serial_ok(res->token_serial) || !is_lower_hex(res->firmware_id, DB_ID_HEX) ||
	    res->counter_before == 0 || res->counter_before > INT64_MAX)
		return db_fail(db, -EINVAL, "invalid reservation (chip UID, token serial, firmware "
					    "id and a counter above zero are required)");
	r = db_begin(db);
	if (r < 0)
		return r;

	/* A chip that already holds a license for this target must reuse it. */
	r = find_reusable_locked(db, res->chip_uid, res->firmware_id, res->target, &existing);
	if (r == 0) {
		r = db_fail(db, -EEXIST, "chip %s already holds license %" PRId64 " for this "
					 "image; reuse it instead of spending a count",
			    res->chip_uid, existing->id);
		existing = db_license_free(existing);
	} else if (r == -ENOENT) {
		r = db_prepare(db, "INSERT INTO licenses (job_id, attempt_id, chip_uid, "
				   "token_serial, firmware_id, target, counter_before, state, "
				   "reserved_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'reserved', ?)", &st);
	}
	if (r == 0) {
		sqlite3_bind_int64(st, 1, res->job_id);
		if (res->attempt_id)
			sqlite3_bind_int64(st, 2, res->attempt_id);
		else
			sqlite3_bind_null(st, 2);
		sqlite3_bind_text(st, 3, res->chip_uid, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, res->token_serial, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, res->firmware_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 6, res->target);
		sqlite3_bind_int64(st, 7, (int64_t)res->counter_before);
		sqlite3_bind_int64(st, 8, db_now_ms());
		r = db_step_done(db, st, "reserving a license");
		id = sqlite3_last_insert_rowid(db->h);
		if (r == -EEXIST)
			r = db_fail(db, -EBUSY, "token %s already has an open reservation; license "
						"issuance must be serialized per token",
				    res->token_serial);
		else if (r == -EINVAL)
			r = db_fail(db, r, "job %" PRId64 " or attempt %" PRId64 " does not exist",
				    res->job_id, res->attempt_id);
	}
	if (r == 0 && res->attempt_id)
		r = use_insert(db, id, res->attempt_id, false);
	data = json_object_new_object();
	db_json_add_int(data, "license", id);
	db_json_add_int(data, "job", res->job_id);
	db_json_add_int(data, "attempt", res->attempt_id);
	db_json_add_str(data, "chip_uid", res->chip_uid);
	db_json_add_str(data, "token", res->token_serial);
	db_json_add_str(data, "firmware_id", res->firmware_id);
	db_json_add_int(data, "target", res->target);
	db_json_add_int(data, "counter_before", (int64_t)res->counter_before);
	r = finish(db, r, "license.reserve", data);
	if (r == 0)
		*ret_license_id = id;
	return r;
}

/* A change to one license: its transaction, the license as it was, and the data of the
 * audit record that states the change. */
struct license_change {
	struct db_license *l;
	struct json_object *data;
};

/* Opens the transaction of a change to license id, which must be in one of the allowed
 * states; c->data starts with the license's members. On failure nothing is left open. */
static int license_change_begin(struct db *db, int64_t id, unsigned allowed_mask,
				struct license_change *c)
{
	struct db_license *l;
	int r;

	r = db_begin(db);
	if (r < 0)
		return r;
	r = license_load(db, id, &l);
	if (r == 0 && !(allowed_mask & (1u << l->state))) {
		r = db_fail(db, -EALREADY, "license %" PRId64 " is %s; this change is not allowed "
					   "from that state",
			    id, db_license_state_to_string(l->state));
		db_license_free(l);
	}
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	c->l = l;
	c->data = license_data(l);
	return 0;
}

/* Appends the record of type and commits if r is 0, else rolls back; frees c. */
static int license_change_end(struct db *db, int r, struct license_change *c, const char *type)
{
	db_license_free(c->l);
	return finish(db, r, type, c->data);
}

static int license_set_state(struct db *db, int64_t id, const char *state, const char *reason)
{
	sqlite3_stmt *st;
	int r;

	r = db_prepare(db, "UPDATE licenses SET state = ?, reason = coalesce(?, reason), "
			   "closed_at = ? WHERE id = ?", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	bind_text_or_null(st, 2, reason);
	sqlite3_bind_int64(st, 3, db_now_ms());
	sqlite3_bind_int64(st, 4, id);
	return step_change(db, st, "updating a license", "the license vanished");
}

int db_ledger_cancel(struct db *db, int64_t license_id, const char *reason)
{
	struct license_change c;
	int r;

	if (!text_ok(reason, true))
		return db_fail(db, -EINVAL, "cancelling a reservation needs a reason");
	r = license_change_begin(db, license_id, 1u << DB_LICENSE_RESERVED, &c);
	if (r < 0)
		return r;
	r = license_set_state(db, license_id, "void", reason);
	db_json_add_int(c.data, "counter_before", (int64_t)c.l->counter_before);
	db_json_add_str(c.data, "reason", reason);
	return license_change_end(db, r, &c, "license.void");
}

int db_ledger_issue(struct db *db, int64_t license_id, uint64_t counter_after,
		    const uint8_t *record, size_t record_len)
{
	char hex[2 * DB_HASH_SIZE + 1] = "";
	uint8_t digest[DB_HASH_SIZE];
	struct license_change c;
	sqlite3_stmt *st;
	unsigned int n = 0;
	int r;

	if (!record || record_len == 0 || record_len > 65536)
		return db_fail(db, -EINVAL, "an issued license needs its record (1..65536 bytes)");
	if (!EVP_Digest(record, record_len, digest, &n, EVP_sha256(), NULL))
		return db_fail(db, -EIO, "hashing a license record failed");
	audit_hex_encode(digest, DB_HASH_SIZE, hex);
	r = license_change_begin(db, license_id, 1u << DB_LICENSE_RESERVED, &c);
	if (r < 0)
		return r;
	if (counter_after + 1 != c.l->counter_before)
		r = db_fail(db, -ERANGE, "license %" PRId64 ": the token counter went from %" PRIu64
					 " to %" PRIu64 ", not down by exactly one",
			    license_id, c.l->counter_before, counter_after);
	if (r == 0)
		r = db_prepare(db, "UPDATE licenses SET state = 'issued', counter_after = ?, "
				   "license_digest = ?, record = ?, issued_at = ? WHERE id = ?", &st);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, (int64_t)counter_after);
		sqlite3_bind_blob(st, 2, digest, DB_HASH_SIZE, SQLITE_STATIC);
		sqlite3_bind_blob(st, 3, record, (int)record_len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, db_now_ms());
		sqlite3_bind_int64(st, 5, license_id);
		r = step_change(db, st, "storing an issued license", "the license vanished");
	}
	if (r == 0)
		r = token_state_set(db, c.l->token_serial, counter_after, -1);
	db_json_add_int(c.data, "counter_before", (int64_t)c.l->counter_before);
	db_json_add_int(c.data, "counter_after", (int64_t)counter_after);
	db_json_add_str(c.data, "digest", hex);
	return license_change_end(db, r, &c, "license.issue");
}

static int license_outcome(struct db *db, int64_t license_id, bool installed, const char *reason)
{
	unsigned allowed = 1u << DB_LICENSE_ISSUED | 1u << DB_LICENSE_NOT_INSTALLED;
	struct license_change c;
	int r;

	r = license_change_begin(db, license_id, allowed, &c);
	if (r < 0)
		return r;
	r = license_set_state(db, license_id, installed ? "installed" : "issued_not_installed",
			      reason);
	if (!installed)
		db_json_add_str(c.data, "reason", reason);
	return license_change_end(db, r, &c,
				  installed ? "license.installed" : "license.not_installed");
}

int db_ledger_installed(struct db *db, int64_t license_id)
{
	return license_outcome(db, license_id, true, NULL);
}

int db_ledger_not_installed(struct db *db, int64_t license_id, const char *reason)
{
	if (!text_ok(reason, true))
		return db_fail(db, -EINVAL, "a license that was not installed needs a reason");
	return license_outcome(db, license_id, false, reason);
}

int db_ledger_reuse(struct db *db, int64_t license_id, int64_t attempt_id)
{
	unsigned allowed = 1u << DB_LICENSE_ISSUED | 1u << DB_LICENSE_NOT_INSTALLED |
			   1u << DB_LICENSE_INSTALLED;
	struct license_change c;
	int r;

	r = license_change_begin(db, license_id, allowed, &c);
	if (r < 0)
		return r;
	r = use_insert(db, license_id, attempt_id, true);
	db_json_add_int(c.data, "attempt", attempt_id);
	return license_change_end(db, r, &c, "license.reuse");
}

static int diff_push(struct db *db, struct db_diff **diffs, size_t *n, const struct db_diff *d)
{
	struct db_diff *p = realloc(*diffs, (*n + 1) * sizeof(**diffs));

	if (!p)
		return db_fail(db, -ENOMEM, "out of memory during reconciliation");
	p[*n] = *d;
	*diffs = p;
	(*n)++;
	return 0;
}

static struct json_object *diff_json(const struct db_diff *d)
{
	struct json_object *o = json_object_new_object();

	db_json_add_str(o, "kind", db_diff_kind_to_string(d->kind));
	db_json_add_int(o, "license", d->license_id);
	db_json_add_str(o, "chip_uid", d->chip_uid[0] ? d->chip_uid : NULL);
	db_json_add_int(o, "counter_before", (int64_t)d->counter_before);
	db_json_add_int(o, "expected", (int64_t)d->expected);
	db_json_add_int(o, "actual", (int64_t)d->actual);
	return o;
}

/* Settles the open reservation of the token, if any, against the token's counter. */
static int reconcile_open(struct db *db, const char *token, uint64_t actual,
			  struct db_diff **diffs, size_t *n)
{
	struct db_license *l = NULL;
	struct json_object *data;
	struct db_diff d = { 0 };
	sqlite3_stmt *st;
	bool spent;
	int rc, r;

	r = db_prepare(db, "SELECT " LICENSE_COLUMNS " FROM licenses "
			   "WHERE token_serial = ? AND state = 'reserved'", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, token, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = license_from_row(db, st, &l);
	else if (rc != SQLITE_DONE)
		r = db_fail_sqlite(db, rc, "looking for an open reservation");
	sqlite3_finalize(st);
	if (r < 0 || !l)
		return r;

	/* The counter is below the reservation's: the decrement happened, the license record
	 * did not (a crash in between). Otherwise the counter never moved. */
	spent = actual < l->counter_before;
	d.kind = spent ? DB_DIFF_RESERVED_UNCONFIRMED : DB_DIFF_RESERVATION_VOID;
	d.license_id = l->id;
	memcpy(d.chip_uid, l->chip_uid, sizeof(d.chip_uid));
	snprintf(d.token_serial, sizeof(d.token_serial), "%s", token);
	d.counter_before = l->counter_before;
	d.expected = spent ? l->counter_before - 1 : l->counter_before;
	d.actual = actual;

	r = db_prepare(db, "UPDATE licenses SET state = ?, counter_after = ?, reason = ?, "
			   "closed_at = ? WHERE id = ?", &st);
	if (r == 0) {
		sqlite3_bind_text(st, 1, spent ? "reserved_unconfirmed" : "void", -1,
				  SQLITE_STATIC);
		if (spent)
			sqlite3_bind_int64(st, 2, (int64_t)l->counter_before - 1);
		else
			sqlite3_bind_null(st, 2);
		sqlite3_bind_text(st, 3, spent ? "counter moved but no license was recorded" :
						 "the counter never moved", -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, db_now_ms());
		sqlite3_bind_int64(st, 5, l->id);
		r = step_change(db, st, "settling a reservation", "the reservation vanished");
	}
	if (r == 0 && spent)
		r = token_state_set(db, token, l->counter_before - 1, -1);
	if (r == 0) {
		data = license_data(l);
		db_json_add_int(data, "counter_before", (int64_t)l->counter_before);
		if (spent)
			db_json_add_int(data, "counter_after", (int64_t)l->counter_before - 1);
		else
			db_json_add_str(data, "reason", "the counter never moved");
		r = db_audit_append(db, spent ? "license.unconfirmed" : "license.void", data);
	}
	if (r == 0)
		r = diff_push(db, diffs, n, &d);
	db_license_free(l);
	return r;
}

/* Reads one integer (NULL: *ret_has false). */
static int query_int(struct db *db, const char *sql, const char *text, bool *ret_has,
		     int64_t *ret, int64_t *ret2)
{
	sqlite3_stmt *st;
	int rc, r;

	*ret_has = false;
	r = db_prepare(db, sql, &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*ret_has = true;
		*ret = sqlite3_column_int64(st, 0);
		if (ret2)
			*ret2 = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 :
								     sqlite3_column_int64(st, 1);
	} else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		r = db_fail_sqlite(db, rc, "reading the ledger's counter");
	}
	sqlite3_finalize(st);
	return r;
}

static int change_insert(struct db *db, const struct db_diff *d, int64_t granted,
			 uint64_t audit_seq)
{
	static const char *const kinds[_DB_DIFF_KIND_MAX] = {
		[DB_DIFF_UNRECORDED_SPENDS] = "unaccounted-spend",
		[DB_DIFF_REFILL] = "refill",
		[DB_DIFF_COUNTER_HIGHER] = "counter-higher",
	};
	sqlite3_stmt *st;
	int r;

	if (!kinds[d->kind])
		return 0;
	r = db_prepare(db, "INSERT INTO counter_changes (token_serial, kind, expected, actual, "
			   "granted, found_at, audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?)", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, d->token_serial, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kinds[d->kind], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)d->expected);
	sqlite3_bind_int64(st, 4, (int64_t)d->actual);
	if (granted >= 0)
		sqlite3_bind_int64(st, 5, granted);
	else
		sqlite3_bind_null(st, 5);
	sqlite3_bind_int64(st, 6, db_now_ms());
	sqlite3_bind_int64(st, 7, (int64_t)audit_seq);
	return db_step_done(db, st, "recording a counter change");
}

int db_reconcile(struct db *db, const char *token_serial, uint64_t token_counter,
		 struct db_diff **ret_diffs, size_t *ret_n)
{
	return db_reconcile_granted(db, token_serial, token_counter, -1, ret_diffs, ret_n);
}

int db_reconcile_granted(struct db *db, const char *token_serial, uint64_t token_counter,
			 int64_t granted, struct db_diff **ret_diffs, size_t *ret_n)
{
	struct json_object *data, *list;
	struct db_diff *diffs = NULL;
	struct db_diff d = { 0 };
	bool have_expected = false, have_state = false;
	int64_t expected = 0, known_granted = -1;
	uint64_t next_seq = 0;
	size_t n = 0, first_change;
	int r;

	if (!serial_ok(token_serial) || token_counter > INT64_MAX || granted > INT64_MAX ||
	    granted < -1)
		return db_fail(db, -EINVAL, "reconciliation needs a token serial and its counter");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = reconcile_open(db, token_serial, token_counter, &diffs, &n);
	first_change = n;

	/* Where the token should be now: the counter the ledger last knew for it (its last
	 * spend, or the last reconciliation); in a database from before that was kept, the
	 * lowest counter the ledger saw (counters only go down between refills); in a database
	 * that never saw the token, its granted total (nothing spent yet). */
	if (r == 0)
		r = query_int(db, "SELECT counter, granted FROM tokens WHERE serial = ?",
			      token_serial, &have_state, &expected, &known_granted);
	have_expected = have_state;
	if (r == 0 && !have_expected)
		r = query_int(db, "SELECT min(CASE WHEN state = 'void' THEN counter_before "
				  "ELSE counter_after END), NULL FROM licenses WHERE token_serial = ? "
				  "AND state != 'reserved'", token_serial, &have_expected, &expected,
			      NULL);
	if (r == 0 && !have_expected && granted >= 0) {
		have_expected = true;
		expected = granted;
	}
	if (r == 0 && have_expected && token_counter != (uint64_t)expected) {
		bool refill = token_counter > (uint64_t)expected && granted >= 0 &&
			      known_granted >= 0 && granted > known_granted &&
			      (uint64_t)(granted - known_granted) == token_counter - (uint64_t)expected;

		d.kind = token_counter < (uint64_t)expected ? DB_DIFF_UNRECORDED_SPENDS :
			 refill ? DB_DIFF_REFILL : DB_DIFF_COUNTER_HIGHER;
		snprintf(d.token_serial, sizeof(d.token_serial), "%s", token_serial);
		d.expected = (uint64_t)expected;
		d.actual = token_counter;
		r = diff_push(db, &diffs, &n, &d);
	}
	if (r == 0)
		r = token_state_set(db, token_serial, token_counter, granted);
	/* The reconcile record comes next: the changes name it. */
	if (r == 0) {
		bool has;
		int64_t head = 0;

		r = query_int(db, "SELECT max(seq), ?1 FROM audit", "", &has, &head, NULL);
		next_seq = (has ? (uint64_t)head : 0) + 1;
	}
	for (size_t i = first_change; r == 0 && i < n; i++)
		r = change_insert(db, &diffs[i], granted, next_seq);

	data = json_object_new_object();
	list = json_object_new_array();
	db_json_add_str(data, "token", token_serial);
	db_json_add_int(data, "actual", (int64_t)token_counter);
	if (have_expected)
		db_json_add_int(data, "expected", expected);
	else
		json_object_object_add(data, "expected", NULL);
	if (granted >= 0)
		db_json_add_int(data, "granted", granted);
	for (size_t i = 0; i < n; i++)
		json_object_array_add(list, diff_json(&diffs[i]));
	json_object_object_add(data, "differences", list);
	r = finish(db, r, "reconcile", data);
	if (r < 0) {
		free(diffs);
		return r;
	}
	*ret_diffs = diffs;
	*ret_n = n;
	return 0;
}

int db_audit_key_change(struct db *db, const struct db_signer *old)
{
	const struct db_signer *cur = db->signer;
	char hex[2 * DB_HASH_SIZE + 1];
	struct json_object *data;
	int r;

	if (!old || !cur)
		return db_fail(db, -ENOKEY, "a key change needs the old and the new audit key");
	r = db_begin(db);
	if (r < 0)
		return r;
	/* The old key signs the change: the record, then a checkpoint covering it. */
	db->signer = old;
	data = json_object_new_object();
	audit_hex_encode(old->key_id, DB_HASH_SIZE, hex);
	db_json_add_str(data, "old_key_id", hex);
	audit_hex_encode(cur->key_id, DB_HASH_SIZE, hex);
	db_json_add_str(data, "new_key_id", hex);
	r = db_audit_append(db, "audit.key", data);
	if (r == 0)
		r = db_audit_checkpoint_locked(db);
	db->signer = cur;
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	return db_commit(db);
}

int db_audit_last_key(struct db *db, uint8_t ret_key_id[DB_HASH_SIZE])
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, "SELECT json_extract(content, '$.data.key_id') FROM audit "
			   "WHERE type = 'checkpoint' ORDER BY seq DESC LIMIT 1", &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *hex = (const char *)sqlite3_column_text(st, 0);

		if (!hex || audit_hex_decode(hex, ret_key_id, DB_HASH_SIZE) < 0)
			r = db_fail(db, -EBADMSG, "the last checkpoint names no key");
	} else if (rc == SQLITE_DONE) {
		r = -ENOENT;
	} else {
		r = db_fail_sqlite(db, rc, "reading the last checkpoint");
	}
	sqlite3_finalize(st);
	return r;
}

int db_tool_run(struct db *db, const struct db_tool_run *run, int64_t *ret_id)
{
	char hex[2 * DB_HASH_SIZE + 1] = "";
	uint8_t digest[DB_HASH_SIZE];
	struct json_object *data;
	unsigned int n = 0;
	sqlite3_stmt *st;
	int64_t id = 0;
	int r;

	if (!run || !text_ok(run->step, true) || !text_ok(run->command, true) ||
	    !text_ok(run->outcome, true) || (!run->log && run->log_len) ||
	    run->log_len > DB_TOOL_LOG_MAX || run->attempt_id <= 0)
		return db_fail(db, -EINVAL, "invalid tool run (an attempt, a step, the command, an "
					    "outcome and at most %d bytes of log are required)",
			       DB_TOOL_LOG_MAX);
	if (!EVP_Digest(run->log ? run->log : "", run->log_len, digest, &n, EVP_sha256(), NULL))
		return db_fail(db, -EIO, "hashing a tool's log failed");
	audit_hex_encode(digest, DB_HASH_SIZE, hex);
	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_prepare(db, "INSERT INTO tool_runs (attempt_id, step, command, exit_status, outcome, "
			   "log, log_digest, started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       &st);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, run->attempt_id);
		sqlite3_bind_text(st, 2, run->step, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, run->command, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 4, run->exit_status);
		sqlite3_bind_text(st, 5, run->outcome, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, run->log ? run->log : "", (int)run->log_len, SQLITE_STATIC);
		sqlite3_bind_blob(st, 7, digest, DB_HASH_SIZE, SQLITE_STATIC);
		sqlite3_bind_int64(st, 8, run->started_ms);
		sqlite3_bind_int64(st, 9, run->ended_ms);
		r = db_step_done(db, st, "recording a tool run");
		id = sqlite3_last_insert_rowid(db->h);
	}
	data = json_object_new_object();
	db_json_add_int(data, "run", id);
	db_json_add_int(data, "attempt", run->attempt_id);
	db_json_add_str(data, "step", run->step);
	db_json_add_str(data, "command", run->command);
	db_json_add_int(data, "exit_status", run->exit_status);
	db_json_add_str(data, "outcome", run->outcome);
	db_json_add_str(data, "log_digest", hex);
	r = finish(db, r, "tool.run", data);
	if (r == 0 && ret_id)
		*ret_id = id;
	return r;
}

/* ---- serial numbers ---- */

static void serial_record_json(struct json_object *data, const char *series, int64_t job_id,
			       int64_t idx, const char *value, const char *chip_uid)
{
	db_json_add_str(data, "series", series);
	db_json_add_int(data, "job", job_id);
	db_json_add_int(data, "index", idx);
	db_json_add_str(data, "value", value);
	db_json_add_str(data, "chip_uid", chip_uid);
}

int db_serial_take(struct db *db, const char *series, int64_t job_id, const char *chip_uid,
		   db_serial_value_fn value_of, void *arg, int64_t *ret_idx, char *hex,
		   size_t hex_size, bool *ret_again)
{
	struct json_object *data;
	sqlite3_stmt *st;
	int64_t idx = -1;
	bool again = false;
	int r, rc;

	if (!text_ok(series, true) || job_id <= 0 || !chip_uid || strlen(chip_uid) != 24 ||
	    !value_of || !hex || hex_size < 3)
		return db_fail(db, -EINVAL, "invalid serial request (a series, a job, a chip UID "
					    "and a value source are required)");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = db_prepare(db, "SELECT idx, value FROM serials WHERE series = ? AND chip_uid = ?", &st);
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	sqlite3_bind_text(st, 1, series, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, chip_uid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		idx = sqlite3_column_int64(st, 0);
		snprintf(hex, hex_size, "%s", (const char *)sqlite3_column_text(st, 1));
		again = true;
	} else if (rc != SQLITE_DONE) {
		r = db_fail_sqlite(db, rc, "reading the chip's serial");
	}
	sqlite3_finalize(st);
	if (r == 0 && !again) {
		r = db_prepare(db, "SELECT COALESCE(MAX(idx) + 1, 0) FROM serials WHERE series = ?",
			       &st);
		if (r == 0) {
			sqlite3_bind_text(st, 1, series, -1, SQLITE_STATIC);
			rc = sqlite3_step(st);
			if (rc == SQLITE_ROW)
				idx = sqlite3_column_int64(st, 0);
			else
				r = db_fail_sqlite(db, rc, "reading the next serial");
			sqlite3_finalize(st);
		}
		if (r == 0) {
			r = value_of(arg, idx, hex, hex_size);
			if (r < 0 && r != -ENOSPC)
				r = db_fail(db, r, "no value for serial %" PRId64, idx);
		}
		if (r == 0)
			r = db_prepare(db, "INSERT INTO serials (series, idx, value, chip_uid, job_id, "
					   "state, created_at) VALUES (?, ?, ?, ?, ?, 'intent', ?)",
				       &st);
		if (r == 0) {
			sqlite3_bind_text(st, 1, series, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 2, idx);
			sqlite3_bind_text(st, 3, hex, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 4, chip_uid, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 5, job_id);
			sqlite3_bind_int64(st, 6, db_now_ms());
			r = db_step_done(db, st, "recording a serial");
		}
	} else if (r == 0) {
		r = db_prepare(db, "UPDATE serials SET state = 'intent', job_id = ?, reason = NULL, "
				   "closed_at = NULL, created_at = ? WHERE series = ? AND idx = ?",
			       &st);
		if (r == 0) {
			sqlite3_bind_int64(st, 1, job_id);
			sqlite3_bind_int64(st, 2, db_now_ms());
			sqlite3_bind_text(st, 3, series, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 4, idx);
			r = step_change(db, st, "taking the chip's serial again",
					"the chip's serial row is gone");
		}
	}
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	data = json_object_new_object();
	serial_record_json(data, series, job_id, idx, hex, chip_uid);
	json_object_object_add(data, "again", json_object_new_boolean(again));
	r = finish(db, 0, "serial.intent", data);
	if (r == 0) {
		*ret_idx = idx;
		if (ret_again)
			*ret_again = again;
	}
	return r;
}

/* Closes one open intent with its record; within a transaction. */
static int serial_close(struct db *db, const char *series, int64_t idx, const char *state,
			const char *reason)
{
	char value[2 * 64 + 1] = "", uid[25] = "";
	struct json_object *data;
	int64_t job_id = 0;
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(db, "SELECT value, chip_uid, job_id FROM serials WHERE series = ? AND "
			   "idx = ? AND state = 'intent'", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, series, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, idx);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(value, sizeof(value), "%s", (const char *)sqlite3_column_text(st, 0));
		snprintf(uid, sizeof(uid), "%s", (const char *)sqlite3_column_text(st, 1));
		job_id = sqlite3_column_int64(st, 2);
	} else {
		r = rc == SQLITE_DONE ? db_fail(db, -ENOENT, "serial %" PRId64 " of %s has no open "
						"intent", idx, series) :
			db_fail_sqlite(db, rc, "reading a serial");
	}
	sqlite3_finalize(st);
	if (r < 0)
		return r;
	r = db_prepare(db, "UPDATE serials SET state = ?, reason = ?, closed_at = ? WHERE "
			   "series = ? AND idx = ?", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	bind_text_or_null(st, 2, reason);
	sqlite3_bind_int64(st, 3, db_now_ms());
	sqlite3_bind_text(st, 4, series, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, idx);
	r = db_step_done(db, st, "closing a serial");
	if (r < 0)
		return r;
	data = json_object_new_object();
	serial_record_json(data, series, job_id, idx, value, uid);
	db_json_add_str(data, "state", state);
	if (reason)
		db_json_add_str(data, "reason", reason);
	return db_audit_append(db, "serial.result", data);
}

int db_serial_result(struct db *db, const char *series, int64_t idx, bool written,
		     const char *reason)
{
	int r;

	if (!text_ok(series, true) || idx < 0 || !text_ok(reason, false))
		return db_fail(db, -EINVAL, "invalid serial result");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = serial_close(db, series, idx, written ? "written" : "failed", reason);
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	return db_commit(db);
}

int db_serial_resolve(struct db *db)
{
	char *series[64];
	int64_t idx[64];
	int n = 0, total = 0, r;
	sqlite3_stmt *st;

	do {
		r = db_begin(db);
		if (r < 0)
			return r;
		r = db_prepare(db, "SELECT series, idx FROM serials WHERE state = 'intent' "
				   "ORDER BY series, idx LIMIT 64", &st);
		if (r < 0) {
			db_rollback(db);
			return r;
		}
		for (n = 0; n < 64 && sqlite3_step(st) == SQLITE_ROW; n++) {
			series[n] = strdup((const char *)sqlite3_column_text(st, 0));
			idx[n] = sqlite3_column_int64(st, 1);
			if (!series[n])
				r = db_fail(db, -ENOMEM, "out of memory");
		}
		sqlite3_finalize(st);
		for (int i = 0; i < n && r == 0; i++)
			r = serial_close(db, series[i], idx[i], "unconfirmed",
					 "sfid stopped before the write's outcome was recorded");
		for (int i = 0; i < n; i++)
			free(series[i]);
		if (r < 0) {
			db_rollback(db);
			return r;
		}
		r = db_commit(db);
		if (r < 0)
			return r;
		total += n;
	} while (n == 64);
	return total;
}

int db_serial_value_given(struct db *db, const char *value, const char *series,
			  char *other_series, size_t series_size, char *chip_uid, size_t uid_size)
{
	sqlite3_stmt *st;
	int r, rc;

	if (!value || !series || !other_series || !chip_uid)
		return db_fail(db, -EINVAL, "invalid serial lookup");
	r = db_prepare(db, "SELECT series, chip_uid FROM serials WHERE value = ? AND series <> ? "
			   "ORDER BY created_at LIMIT 1", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, value, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, series, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(other_series, series_size, "%s", (const char *)sqlite3_column_text(st, 0));
		snprintf(chip_uid, uid_size, "%s", (const char *)sqlite3_column_text(st, 1));
		r = 1;
	} else if (rc == SQLITE_DONE) {
		r = 0;
	} else {
		r = db_fail_sqlite(db, rc, "looking a serial value up");
	}
	sqlite3_finalize(st);
	return r;
}

int db_serial_job_has(struct db *db, int64_t job_id)
{
	sqlite3_stmt *st;
	int r, rc;

	r = db_prepare(db, "SELECT 1 FROM serials WHERE job_id = ? LIMIT 1", &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, job_id);
	rc = sqlite3_step(st);
	r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 :
	    db_fail_sqlite(db, rc, "looking up a job's serial numbers");
	sqlite3_finalize(st);
	return r;
}

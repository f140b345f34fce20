/* Read-side queries: attempt history, statistics, a chip's failures and the active job.
 * Nothing here writes: no transaction takes the write lock and no audit record is added. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "db-internal.h"

#define HISTORY_DEFAULT 100
#define HISTORY_MAX 10000

static const char *const attempt_result_names[_DB_ATTEMPT_RESULT_MAX] = {
	[DB_ATTEMPT_RUNNING] = "running",
	[DB_ATTEMPT_OK] = "ok",
	[DB_ATTEMPT_FAILED] = "failed",
};

const char *db_attempt_result_to_string(enum db_attempt_result r)
{
	return (unsigned)r < _DB_ATTEMPT_RESULT_MAX ? attempt_result_names[r] : NULL;
}

static int attempt_result_from_string(const char *s)
{
	for (int i = 0; i < _DB_ATTEMPT_RESULT_MAX; i++)
		if (s && strcmp(s, attempt_result_names[i]) == 0)
			return i;
	return -EINVAL;
}

/* Copies the n bytes of s into dst (size bytes with the NUL). A longer text is cut before
 * the character that does not fit, never inside a UTF-8 sequence. */
static void copy_cut(char *dst, size_t size, const char *s, size_t n)
{
	if (n >= size) {
		n = size - 1;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	if (n)
		memcpy(dst, s, n);
	dst[n] = '\0';
}

/* Column i as text into dst, "" for NULL. */
static void column_text(sqlite3_stmt *st, int i, char *dst, size_t size)
{
	const char *s = (const char *)sqlite3_column_text(st, i);

	copy_cut(dst, size, s, s ? (size_t)sqlite3_column_bytes(st, i) : 0);
}

/* A read transaction: the statements inside it see one snapshot of the file. */
static int read_begin(struct db *db)
{
	int rc;

	db->err[0] = '\0';
	rc = sqlite3_exec(db->h, "BEGIN DEFERRED", NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : db_fail_sqlite(db, rc, "starting a read");
}

static int read_end(struct db *db, int r)
{
	db_rollback(db);
	return r;
}

/* Runs st to its end, handing each row to fn. Finalizes st. */
static int each_row(struct db *db, sqlite3_stmt *st, const char *what,
		    int (*fn)(struct db *db, sqlite3_stmt *st, void *userdata), void *userdata)
{
	int rc, r = 0;

	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
		r = fn(db, st, userdata);
	if (r == 0 && rc != SQLITE_DONE)
		r = db_fail_sqlite(db, rc, what);
	sqlite3_finalize(st);
	return r;
}

/* Makes room for one more element of size elem in *v holding *n of *cap. */
static int grow(struct db *db, void **v, size_t n, size_t *cap, size_t elem)
{
	size_t c = *cap ? *cap * 2 : 16;
	void *p;

	if (n < *cap)
		return 0;
	p = realloc(*v, c * elem);
	if (!p)
		return db_fail(db, -ENOMEM, "out of memory reading the database");
	*v = p;
	*cap = c;
	return 0;
}

/* ---- history ---- */

struct history {
	struct db_attempt_row *rows;
	size_t n, cap;
};

static int history_row(struct db *db, sqlite3_stmt *st, void *userdata)
{
	struct history *h = userdata;
	struct db_attempt_row *a;
	int result, r;

	r = grow(db, (void **)&h->rows, h->n, &h->cap, sizeof(*h->rows));
	if (r < 0)
		return r;
	result = attempt_result_from_string((const char *)sqlite3_column_text(st, 5));
	if (result < 0)
		return db_fail(db, -EBADMSG, "attempt %" PRId64 " in %s has a damaged result",
			       (int64_t)sqlite3_column_int64(st, 0), db->path);
	a = &h->rows[h->n++];
	memset(a, 0, sizeof(*a));
	a->id = sqlite3_column_int64(st, 0);
	a->job_id = sqlite3_column_int64(st, 1);
	column_text(st, 2, a->slot, sizeof(a->slot));
	column_text(st, 3, a->chip_uid, sizeof(a->chip_uid));
	column_text(st, 4, a->step, sizeof(a->step));
	a->result = (enum db_attempt_result)result;
	a->error_code = sqlite3_column_int(st, 6);
	column_text(st, 7, a->error_text, sizeof(a->error_text));
	a->started_ms = sqlite3_column_int64(st, 8);
	a->ended_ms = sqlite3_column_int64(st, 9);
	a->bytes_sent = (uint64_t)sqlite3_column_int64(st, 10);
	a->license_reused = sqlite3_column_int(st, 11) != 0;
	return 0;
}

int db_history(struct db *db, const struct db_history_filter *f, struct db_attempt_row **ret_rows,
	       size_t *ret_n)
{
	static const struct db_history_filter all;
	struct history h = { 0 };
	sqlite3_stmt *st;
	char sql[1024];
	unsigned limit;
	int i = 0, r;

	if (!f)
		f = &all;
	if (f->chip_uid && !audit_is_hex(f->chip_uid, DB_CHIP_UID_HEX))
		return db_fail(db, -EINVAL, "a chip UID is %d lowercase hex digits",
			       DB_CHIP_UID_HEX);
	limit = f->limit ? f->limit : HISTORY_DEFAULT;
	if (limit > HISTORY_MAX)
		limit = HISTORY_MAX;
	/* Only the conditions asked for, so SQLite can pick the index that serves them. */
	snprintf(sql, sizeof(sql),
		 "SELECT id, job_id, slot, chip_uid, step, result, error_code, error_text, "
		 "started_at, coalesce(ended_at, 0), bytes_sent, EXISTS (SELECT 1 FROM "
		 "license_uses u WHERE u.attempt_id = a.id AND u.reused = 1) "
		 "FROM attempts a WHERE 1%s%s%s%s%s ORDER BY %s ended_at DESC, id DESC LIMIT ?",
		 f->job_id ? " AND job_id = ?" : "", f->slot ? " AND slot = ?" : "",
		 f->chip_uid ? " AND chip_uid = ?" : "",
		 f->only_failed ? " AND result = 'failed'" : "",
		 f->include_running ? "" : " AND result != 'running'",
		 f->include_running ? "ended_at IS NULL DESC," : "");
	db->err[0] = '\0';
	r = db_prepare(db, sql, &st);
	if (r < 0)
		return r;
	if (f->job_id)
		sqlite3_bind_int64(st, ++i, f->job_id);
	if (f->slot)
		sqlite3_bind_text(st, ++i, f->slot, -1, SQLITE_STATIC);
	if (f->chip_uid)
		sqlite3_bind_text(st, ++i, f->chip_uid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, ++i, limit);
	r = each_row(db, st, "reading the attempt history", history_row, &h);
	if (r < 0) {
		free(h.rows);
		return r;
	}
	*ret_rows = h.rows;
	*ret_n = h.n;
	return 0;
}

/* ---- statistics ---- */

/* A failed attempt that counts as a failure (see enum db_failure_kind). */
#define FAILED_TOUCHED "(result = 'failed' AND error_code NOT IN (1, 2, 3))"

/* The WHERE conditions of a range after "result != 'running'"; binds with bind_range. */
static void range_sql(const struct db_range *rg, char *out, size_t size)
{
	snprintf(out, size, "%s%s%s", rg->job_id ? " AND job_id = ?" : "",
		 rg->from_ms ? " AND started_at >= ?" : "", rg->to_ms ? " AND started_at < ?" : "");
}

static void bind_range(sqlite3_stmt *st, const struct db_range *rg)
{
	int i = 1;

	if (rg->job_id)
		sqlite3_bind_int64(st, i++, rg->job_id);
	if (rg->from_ms)
		sqlite3_bind_int64(st, i++, rg->from_ms);
	if (rg->to_ms)
		sqlite3_bind_int64(st, i++, rg->to_ms);
}

struct stats_build {
	struct db_stats *s;
	size_t cap;
};

static int stats_slot_row(struct db *db, sqlite3_stmt *st, void *userdata)
{
	struct stats_build *b = userdata;
	struct db_stats *s = b->s;
	struct db_slot_stats *x;
	int r;

	r = grow(db, (void **)&s->slots, s->n_slots, &b->cap, sizeof(*s->slots));
	if (r < 0)
		return r;
	x = &s->slots[s->n_slots++];
	memset(x, 0, sizeof(*x));
	column_text(st, 0, x->slot, sizeof(x->slot));
	x->ok = (uint64_t)sqlite3_column_int64(st, 1);
	x->failed = (uint64_t)sqlite3_column_int64(st, 2);
	x->bytes = (uint64_t)sqlite3_column_int64(st, 3);
	x->duration_ms = sqlite3_column_int64(st, 4);
	s->ok += x->ok;
	s->failed += x->failed;
	s->bytes += x->bytes;
	s->duration_ms += x->duration_ms;
	return 0;
}

/* The cause is the error text after a leading "<step>: " (one word, as the daemon writes
 * it); a text without that form is its own cause. */
static void failure_cause(const char *text, char *dst, size_t size)
{
	const char *colon = strstr(text, ": ");

	if (colon && colon > text && strcspn(text, " \t") >= (size_t)(colon - text))
		text = colon + 2;
	copy_cut(dst, size, text, strlen(text));
}

static int stats_failure_row(struct db *db, sqlite3_stmt *st, void *userdata)
{
	struct stats_build *b = userdata;
	struct db_stats *s = b->s;
	struct db_failure_cause *x;
	int r;

	r = grow(db, (void **)&s->failures, s->n_failures, &b->cap, sizeof(*s->failures));
	if (r < 0)
		return r;
	x = &s->failures[s->n_failures++];
	memset(x, 0, sizeof(*x));
	column_text(st, 0, x->step, sizeof(x->step));
	column_text(st, 1, x->error_text, sizeof(x->error_text));
	failure_cause(x->error_text, x->cause, sizeof(x->cause));
	x->count = (uint64_t)sqlite3_column_int64(st, 2);
	return 0;
}

struct db_stats *db_stats_free(struct db_stats *s)
{
	if (!s)
		return NULL;
	free(s->slots);
	free(s->failures);
	free(s);
	return NULL;
}

static int stats_total_row(struct db *db, sqlite3_stmt *st, void *userdata)
{
	struct db_stats *s = ((struct stats_build *)userdata)->s;

	s->refused = (uint64_t)sqlite3_column_int64(st, 0);
	s->halted = (uint64_t)sqlite3_column_int64(st, 1);
	s->already = (uint64_t)sqlite3_column_int64(st, 2);
	s->first_ms = sqlite3_column_int64(st, 3);
	s->last_ms = sqlite3_column_int64(st, 4);
	s->ok_duration_ms = sqlite3_column_int64(st, 5);
	return 0;
}

int db_stats_range(struct db *db, const struct db_range *range, struct db_stats **ret)
{
	struct stats_build b = { 0 };
	sqlite3_stmt *st;
	char sql[1024], where[128];
	int r;

	range_sql(range, where, sizeof(where));
	b.s = calloc(1, sizeof(*b.s));
	if (!b.s)
		return db_fail(db, -ENOMEM, "out of memory reading the statistics");
	r = read_begin(db);
	if (r < 0)
		goto out;

	snprintf(sql, sizeof(sql),
		 "SELECT slot, sum(result = 'ok'), sum(" FAILED_TOUCHED "), sum(bytes_sent), "
		 "sum(ended_at - started_at) FROM attempts WHERE result != 'running'%s "
		 "GROUP BY slot ORDER BY slot", where);
	r = db_prepare(db, sql, &st);
	if (r == 0) {
		bind_range(st, range);
		r = each_row(db, st, "reading the statistics per slot", stats_slot_row, &b);
	}
	if (r == 0) {
		/* Refusals and chips already installed count once per chip (a chip without a
		 * UID, refused before it said it, counts once per attempt). */
		snprintf(sql, sizeof(sql),
			 "SELECT count(DISTINCT CASE WHEN result = 'failed' AND error_code = 1 "
			 "THEN chip_uid END) + coalesce(sum(result = 'failed' AND error_code = 1 AND "
			 "chip_uid IS NULL), 0), coalesce(sum(result = 'failed' AND error_code = 2), 0), "
			 "count(DISTINCT CASE WHEN result = 'failed' AND error_code = 3 THEN chip_uid "
			 "END), coalesce(min(started_at), 0), coalesce(max(ended_at), 0), "
			 "coalesce(sum(CASE WHEN result = 'ok' THEN ended_at - started_at END), 0) "
			 "FROM attempts WHERE result != 'running'%s", where);
		r = db_prepare(db, sql, &st);
	}
	if (r == 0) {
		bind_range(st, range);
		r = each_row(db, st, "reading the statistics", stats_total_row, &b);
	}
	if (r == 0) {
		b.cap = 0;
		snprintf(sql, sizeof(sql),
			 "SELECT step, coalesce(error_text, ''), count(*) AS n FROM attempts "
			 "WHERE result = 'failed' AND error_code != 3%s GROUP BY 1, 2 "
			 "ORDER BY n DESC, 1, 2", where);
		r = db_prepare(db, sql, &st);
	}
	if (r == 0) {
		bind_range(st, range);
		r = each_row(db, st, "reading the failures by cause", stats_failure_row, &b);
	}
	r = read_end(db, r);
out:
	if (r < 0) {
		db_stats_free(b.s);
		return r;
	}
	*ret = b.s;
	return 0;
}

int db_stats(struct db *db, int64_t job_id, struct db_stats **ret)
{
	struct db_range range = { .job_id = job_id };

	return db_stats_range(db, &range, ret);
}

/* ---- chips and jobs ---- */

int db_chip_failures(struct db *db, const char *chip_uid, unsigned *ret_n)
{
	sqlite3_stmt *st;
	int rc, r;

	if (!audit_is_hex(chip_uid, DB_CHIP_UID_HEX))
		return db_fail(db, -EINVAL, "a chip UID is %d lowercase hex digits",
			       DB_CHIP_UID_HEX);
	db->err[0] = '\0';
	r = db_prepare(db, "SELECT count(*) FROM attempts WHERE chip_uid = ? AND "
			   FAILED_TOUCHED, &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, chip_uid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		int64_t n = sqlite3_column_int64(st, 0);

		*ret_n = n > UINT32_MAX ? UINT32_MAX : (unsigned)n;
	} else {
		r = db_fail_sqlite(db, rc, "counting the failures of a chip");
	}
	sqlite3_finalize(st);
	return r;
}

int db_job_active(struct db *db, struct db_job_row *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	db->err[0] = '\0';
	r = db_prepare(db,
		       "SELECT id, image_path, image_id, image_digest, module_file, "
		       "global_license_file, target_count, loaded_uid, loaded_user, created_at, "
		       "(SELECT count(*) FROM attempts WHERE job_id = j.id AND result = 'ok'), "
		       "(SELECT count(*) FROM attempts WHERE job_id = j.id AND " FAILED_TOUCHED "), "
		       "(SELECT count(DISTINCT coalesce(chip_uid, id)) FROM attempts WHERE "
		       "job_id = j.id AND result = 'failed' AND error_code = 1), "
		       "(SELECT count(*) FROM attempts WHERE job_id = j.id AND result = 'failed' "
		       "AND error_code = 2), kind, firmware, go_address "
		       "FROM jobs j WHERE state = 'active' ORDER BY id DESC LIMIT 1",
		       &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memset(ret, 0, sizeof(*ret));
		ret->id = sqlite3_column_int64(st, 0);
		column_text(st, 1, ret->image_path, sizeof(ret->image_path));
		column_text(st, 2, ret->image_id, sizeof(ret->image_id));
		column_text(st, 3, ret->image_digest, sizeof(ret->image_digest));
		column_text(st, 4, ret->module_file, sizeof(ret->module_file));
		column_text(st, 5, ret->global_license_file, sizeof(ret->global_license_file));
		ret->target_count = (uint32_t)sqlite3_column_int64(st, 6);
		ret->loaded_uid = (uint32_t)sqlite3_column_int64(st, 7);
		column_text(st, 8, ret->loaded_user, sizeof(ret->loaded_user));
		ret->created_ms = sqlite3_column_int64(st, 9);
		ret->installed = (uint64_t)sqlite3_column_int64(st, 10);
		ret->failed = (uint64_t)sqlite3_column_int64(st, 11);
		ret->refused = (uint64_t)sqlite3_column_int64(st, 12);
		ret->halted = (uint64_t)sqlite3_column_int64(st, 13);
		ret->plain = sqlite3_column_text(st, 14) &&
			     strcmp((const char *)sqlite3_column_text(st, 14), "plain") == 0;
		ret->vendor = sqlite3_column_text(st, 14) &&
			      strcmp((const char *)sqlite3_column_text(st, 14), "vendor") == 0;
		column_text(st, 15, ret->firmware, sizeof(ret->firmware));
		ret->go = sqlite3_column_type(st, 16) != SQLITE_NULL;
		ret->go_address = (uint32_t)sqlite3_column_int64(st, 16);
	} else if (rc == SQLITE_DONE) {
		r = db_fail(db, -ENOENT, "no job is active in %s", db->path);
	} else {
		r = db_fail_sqlite(db, rc, "reading the active job");
	}
	sqlite3_finalize(st);
	return r;
}

int db_counter_changes(struct db *db, const char *token_serial, unsigned limit,
		       struct db_counter_change **ret, size_t *ret_n)
{
	struct db_counter_change *rows = NULL;
	sqlite3_stmt *st;
	size_t n = 0;
	int rc, r;

	db->err[0] = '\0';
	if (limit == 0)
		limit = 100;
	if (limit > 10000)
		limit = 10000;
	r = db_prepare(db, "SELECT id, token_serial, kind, expected, actual, granted, found_at, "
			   "audit_seq FROM counter_changes WHERE ?1 IS NULL OR token_serial = ?1 "
			   "ORDER BY id DESC LIMIT ?2", &st);
	if (r < 0)
		return r;
	if (token_serial)
		sqlite3_bind_text(st, 1, token_serial, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 1);
	sqlite3_bind_int64(st, 2, limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct db_counter_change *p = realloc(rows, (n + 1) * sizeof(*rows)), *c;
		const char *kind = (const char *)sqlite3_column_text(st, 2);
		const char *tok = (const char *)sqlite3_column_text(st, 1);

		if (!p) {
			r = db_fail(db, -ENOMEM, "out of memory reading counter changes");
			break;
		}
		rows = p;
		c = &rows[n++];
		memset(c, 0, sizeof(*c));
		c->id = sqlite3_column_int64(st, 0);
		snprintf(c->token_serial, sizeof(c->token_serial), "%s", tok ? tok : "");
		c->kind = kind && strcmp(kind, "refill") == 0 ? DB_DIFF_REFILL :
			  kind && strcmp(kind, "counter-higher") == 0 ? DB_DIFF_COUNTER_HIGHER :
								      DB_DIFF_UNRECORDED_SPENDS;
		c->expected = (uint64_t)sqlite3_column_int64(st, 3);
		c->actual = (uint64_t)sqlite3_column_int64(st, 4);
		c->granted = sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 :
								    sqlite3_column_int64(st, 5);
		c->found_ms = sqlite3_column_int64(st, 6);
		c->audit_seq = (uint64_t)sqlite3_column_int64(st, 7);
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_fail_sqlite(db, rc, "reading counter changes");
	sqlite3_finalize(st);
	if (r < 0) {
		free(rows);
		return r;
	}
	*ret = rows;
	*ret_n = n;
	return 0;
}

int db_token_counter(struct db *db, const char *token_serial, uint64_t *ret_counter)
{
	sqlite3_stmt *st;
	int rc, r;

	db->err[0] = '\0';
	r = db_prepare(db, "SELECT counter FROM tokens WHERE serial = ?", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, token_serial, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret_counter = (uint64_t)sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		r = -ENOENT;
	else
		r = db_fail_sqlite(db, rc, "reading a token's counter");
	sqlite3_finalize(st);
	return r;
}

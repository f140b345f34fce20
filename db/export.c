/* Exports: JSON Lines (the complete, verifiable trail) and CSV (for spreadsheets). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db-internal.h"

static int write_failed(struct db *db)
{
	return db_fail(db, -EIO, "writing the export failed: %s", strerror(errno));
}

static int query_seq(struct db *db, const char *sql, int64_t a, int64_t b, uint64_t *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, sql, &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, a);
	sqlite3_bind_int64(st, 2, b);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_type(st, 0) == SQLITE_NULL ?
			       0 : (uint64_t)sqlite3_column_int64(st, 0);
	else
		r = db_fail_sqlite(db, rc, "choosing the export range");
	sqlite3_finalize(st);
	return r;
}

/* Chooses the contiguous seq range [first, last] of the export; first == 0 when empty. */
static int export_bounds(struct db *db, const struct db_range *range, uint64_t *ret_first,
			 uint64_t *ret_last)
{
	uint64_t first = 0, last = 0, head = 0, cp = 0;
	int64_t to = range->to_ms > 0 ? range->to_ms : INT64_MAX;
	int r;

	r = query_seq(db, "SELECT max(seq) FROM audit WHERE ?1 = ?2", 0, 0, &head);
	if (r < 0)
		return r;
	if (range->job_id > 0) {
		/* From the job's creation to the end of the job (and other jobs' records
		 * in between, which keeps the chain contiguous). */
		r = query_seq(db, "SELECT min(seq) FROM audit WHERE type = 'job.create' AND "
				  "json_extract(content, '$.data.job') = ?1 AND ?2 = ?2",
			      range->job_id, 0, &first);
		if (r == 0 && first)
			r = query_seq(db, "SELECT coalesce(min(seq), ?2) FROM audit WHERE "
					  "type = 'job.end' AND "
					  "json_extract(content, '$.data.job') = ?1",
				      range->job_id, (int64_t)head, &last);
		if (r == 0 && !first)
			return db_fail(db, -ENOENT, "job %" PRId64 " is not in the audit trail",
				       range->job_id);
	} else {
		r = query_seq(db, "SELECT min(seq) FROM audit WHERE time >= ?1 AND time < ?2",
			      range->from_ms, to, &first);
		if (r == 0)
			r = query_seq(db, "SELECT max(seq) FROM audit WHERE time >= ?1 AND "
					  "time < ?2", range->from_ms, to, &last);
	}
	if (r < 0)
		return r;
	/* Extend to the checkpoint that covers the end, when there is one already. */
	if (first) {
		r = query_seq(db, "SELECT min(seq) FROM audit WHERE type = 'checkpoint' AND "
				  "seq >= ?1 AND ?2 = ?2", (int64_t)last, 0, &cp);
		if (r < 0)
			return r;
		if (cp)
			last = cp;
	}
	*ret_first = first;
	*ret_last = first ? last : 0;
	return 0;
}

int db_export_jsonl(struct db *db, const struct db_range *range, FILE *out)
{
	static const struct db_range all;
	uint8_t anchor[DB_HASH_SIZE] = { 0 };
	char hex[2 * DB_SIG_SIZE + 1];
	uint64_t first = 0, last = 0;
	sqlite3_stmt *st;
	int rc, r;

	if (!range)
		range = &all;
	db->err[0] = '\0';
	/* One read transaction: a consistent snapshot while writers continue. */
	r = sqlite3_exec(db->h, "BEGIN", NULL, NULL, NULL);
	if (r != SQLITE_OK)
		return db_fail_sqlite(db, r, "starting the export");
	r = export_bounds(db, range, &first, &last);
	if (r < 0)
		goto out;

	if (first > 1) {
		r = db_prepare(db, "SELECT prev_hash FROM audit WHERE seq = ?", &st);
		if (r < 0)
			goto out;
		sqlite3_bind_int64(st, 1, (int64_t)first);
		if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == DB_HASH_SIZE)
			memcpy(anchor, sqlite3_column_blob(st, 0), DB_HASH_SIZE);
		else
			r = db_fail(db, -EBADMSG, "record %" PRIu64 " of %s is damaged", first,
				    db->path);
		sqlite3_finalize(st);
		if (r < 0)
			goto out;
	}
	audit_hex_encode(anchor, DB_HASH_SIZE, hex);
	if (fprintf(out, "{\"anchor\":\"%s\",\"created\":%" PRId64 ",\"export\":\"sfid-audit\","
			 "\"first_seq\":%" PRIu64 ",\"format\":1,\"last_seq\":%" PRIu64 ","
			 "\"range\":{\"from\":%" PRId64 ",\"job\":%" PRId64 ",\"to\":%" PRId64 "},"
			 "\"schema\":%zu}\n",
		    hex, db_now_ms(), first, last, range->from_ms, range->job_id, range->to_ms,
		    db_n_migrations) < 0) {
		r = write_failed(db);
		goto out;
	}
	if (!first)
		goto out;

	r = db_prepare(db, "SELECT seq, time, type, content, prev_hash, hash, signature "
			   "FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq", &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, (int64_t)first);
	sqlite3_bind_int64(st, 2, (int64_t)last);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char prev_hex[2 * DB_HASH_SIZE + 1], hash_hex[2 * DB_HASH_SIZE + 1];
		const char *type = (const char *)sqlite3_column_text(st, 2);
		const char *content = (const char *)sqlite3_column_text(st, 3);

		if (!type || !content || sqlite3_column_bytes(st, 4) != DB_HASH_SIZE ||
		    sqlite3_column_bytes(st, 5) != DB_HASH_SIZE) {
			r = db_fail(db, -EBADMSG, "record %" PRId64 " of %s is damaged",
				    (int64_t)sqlite3_column_int64(st, 0), db->path);
			break;
		}
		audit_hex_encode(sqlite3_column_blob(st, 4), DB_HASH_SIZE, prev_hex);
		audit_hex_encode(sqlite3_column_blob(st, 5), DB_HASH_SIZE, hash_hex);
		/* The stored canonical text goes out as is; type names are plain ASCII. */
		if (fprintf(out, "{\"content\":%s,\"hash\":\"%s\",\"prev_hash\":\"%s\","
				 "\"seq\":%" PRId64 ",",
			    content, hash_hex, prev_hex, (int64_t)sqlite3_column_int64(st, 0)) < 0) {
			r = write_failed(db);
			break;
		}
		if (sqlite3_column_bytes(st, 6) == DB_SIG_SIZE) {
			audit_hex_encode(sqlite3_column_blob(st, 6), DB_SIG_SIZE, hex);
			if (fprintf(out, "\"signature\":\"%s\",", hex) < 0) {
				r = write_failed(db);
				break;
			}
		}
		if (fprintf(out, "\"time\":%" PRId64 ",\"type\":\"%s\"}\n",
			    (int64_t)sqlite3_column_int64(st, 1), type) < 0) {
			r = write_failed(db);
			break;
		}
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_fail_sqlite(db, rc, "reading the audit trail");
	sqlite3_finalize(st);
out:
	sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
	if (r == 0 && fflush(out) != 0)
		r = write_failed(db);
	return r;
}

/* One RFC 4180 field: quoted when it holds a comma, a quote, CR or LF. A text that a
 * spreadsheet would take for a formula (it starts with = + - @, a tab or CR) gets a leading
 * apostrophe, so opening the export never runs anything; numbers are written as they are. */
static int csv_field(FILE *out, const char *s, bool text, bool last)
{
	bool guard = text && s && s[0] && strchr("=+-@\t\r", s[0]);
	bool quote = s && (guard || strpbrk(s, ",\"\r\n"));
	int ok = 1;

	if (quote) {
		ok = fputc('"', out) != EOF;
		if (ok && guard)
			ok = fputc('\'', out) != EOF;
		for (const char *p = s; ok && *p; p++) {
			if (*p == '"')
				ok = fputc('"', out) != EOF;
			if (ok)
				ok = fputc(*p, out) != EOF;
		}
		if (ok)
			ok = fputc('"', out) != EOF;
	} else if (s) {
		ok = fputs(s, out) != EOF;
	}
	if (ok)
		ok = fputs(last ? "\r\n" : ",", out) != EOF;
	return ok ? 0 : -EIO;
}

static void format_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char date[32];

	if (!gmtime_r(&t, &tm) || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(buf, len, "%" PRId64, ms);
		return;
	}
	snprintf(buf, len, "%s.%03dZ", date, (int)(ms % 1000));
}

static const char *const csv_header[] = {
	"job_id", "attempt_id", "slot", "chip_uid", "started_at", "ended_at", "step",
	"result", "error_code", "error_text", "bytes_sent", "license_id", "license_reused",
	"token_serial", "target", "counter_before", "counter_after", "license_state",
};
#define CSV_COLUMNS (sizeof(csv_header) / sizeof(csv_header[0]))

int db_export_csv(struct db *db, const struct db_range *range, FILE *out)
{
	static const struct db_range all;
	sqlite3_stmt *st;
	int rc, r = 0;

	if (!range)
		range = &all;
	db->err[0] = '\0';
	for (size_t i = 0; i < CSV_COLUMNS && r == 0; i++)
		r = csv_field(out, csv_header[i], true, i + 1 == CSV_COLUMNS);
	if (r < 0)
		return write_failed(db);

	/* Attempts with the licenses they used, then licenses no attempt used (e.g. a
	 * reservation settled by reconciliation). Times (columns 4, 5) are milliseconds. */
	r = db_prepare(db,
		       "SELECT a.job_id, a.id, a.slot, a.chip_uid, a.started_at, a.ended_at, "
		       "  a.step, a.result, a.error_code, a.error_text, a.bytes_sent, l.id, "
		       "  u.reused, l.token_serial, l.target, l.counter_before, l.counter_after, "
		       "  l.state, a.started_at AS t "
		       "FROM attempts a LEFT JOIN license_uses u ON u.attempt_id = a.id "
		       "  LEFT JOIN licenses l ON l.id = u.license_id "
		       "WHERE (?1 = 0 OR a.job_id = ?1) AND a.started_at >= ?2 AND a.started_at < ?3 "
		       "UNION ALL "
		       "SELECT l.job_id, NULL, NULL, l.chip_uid, l.reserved_at, l.closed_at, NULL, "
		       "  NULL, NULL, l.reason, NULL, l.id, NULL, l.token_serial, l.target, "
		       "  l.counter_before, l.counter_after, l.state, l.reserved_at AS t "
		       "FROM licenses l WHERE NOT EXISTS (SELECT 1 FROM license_uses u "
		       "  WHERE u.license_id = l.id) "
		       "  AND (?1 = 0 OR l.job_id = ?1) AND l.reserved_at >= ?2 AND l.reserved_at < ?3 "
		       "ORDER BY t, 2, 12",
		       &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, range->job_id > 0 ? range->job_id : 0);
	sqlite3_bind_int64(st, 2, range->from_ms > 0 ? range->from_ms : 0);
	sqlite3_bind_int64(st, 3, range->to_ms > 0 ? range->to_ms : INT64_MAX);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (int i = 0; i < (int)CSV_COLUMNS && r == 0; i++) {
			char timebuf[48];
			bool text = sqlite3_column_type(st, i) == SQLITE_TEXT;
			const char *v = (const char *)sqlite3_column_text(st, i);

			if ((i == 4 || i == 5) && sqlite3_column_type(st, i) != SQLITE_NULL) {
				format_time(sqlite3_column_int64(st, i), timebuf, sizeof(timebuf));
				v = timebuf;
				text = false;
			}
			r = csv_field(out, v, text, i + 1 == (int)CSV_COLUMNS);
		}
		if (r < 0) {
			r = write_failed(db);
			break;
		}
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_fail_sqlite(db, rc, "reading attempts for the export");
	sqlite3_finalize(st);
	if (r == 0 && fflush(out) != 0)
		r = write_failed(db);
	return r;
}

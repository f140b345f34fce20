/* Exports: JSON Lines (the complete, verifiable trail) and CSV (for spreadsheets). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

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

/* Every byte of a JSON Lines export goes through here, so the end line can name their
 * digest. */
struct jsonl_out {
	FILE *f;
	EVP_MD_CTX *md;
	bool failed;
};

static void out_line(struct jsonl_out *o, const char *line, size_t len)
{
	if (o->failed)
		return;
	if (fwrite(line, 1, len, o->f) != len || fputc('\n', o->f) == EOF ||
	    !EVP_DigestUpdate(o->md, line, len) || !EVP_DigestUpdate(o->md, "\n", 1))
		o->failed = true;
}

/* Writes json as one canonical line; consumes it. */
static int out_json(struct db *db, struct jsonl_out *o, struct json_object *json)
{
	char *text = NULL;
	size_t len = 0;
	int r;

	r = json ? audit_canon_encode(json, &text, &len) : -ENOMEM;
	json_object_put(json);
	if (r < 0)
		return db_fail(db, r, "encoding the export failed");
	out_line(o, text, len);
	free(text);
	return 0;
}

static struct json_object *meta_json(const struct db_range *range,
				     const struct db_export_info *info, uint64_t first,
				     uint64_t last, const uint8_t anchor[DB_HASH_SIZE])
{
	struct json_object *o = json_object_new_object(), *r = json_object_new_object();
	struct json_object *tokens = json_object_new_array();
	char hex[2 * DB_HASH_SIZE + 1];

	if (!o || !r || !tokens) {
		json_object_put(o);
		json_object_put(r);
		json_object_put(tokens);
		return NULL;
	}
	audit_hex_encode(anchor, DB_HASH_SIZE, hex);
	db_json_add_str(o, "anchor", hex);
	db_json_add_int(o, "created", db_now_ms());
	db_json_add_str(o, "export", "sfid-audit");
	db_json_add_int(o, "first_seq", (int64_t)first);
	db_json_add_int(o, "format", AUDIT_EXPORT_FORMAT);
	db_json_add_int(o, "last_seq", (int64_t)last);
	db_json_add_int(r, "from", range->from_ms);
	db_json_add_int(r, "job", range->job_id);
	db_json_add_int(r, "to", range->to_ms);
	json_object_object_add(o, "range", r);
	db_json_add_int(o, "schema", (int64_t)db_n_migrations);
	db_json_add_str(o, "station", info && info->station ? info->station : "");
	for (size_t i = 0; info && i < info->n_tokens; i++) {
		struct json_object *t = json_object_new_object();

		db_json_add_int(t, "counter", info->tokens[i].counter);
		db_json_add_str(t, "serial", info->tokens[i].serial);
		json_object_array_add(tokens, t);
	}
	json_object_object_add(o, "tokens", tokens);
	db_json_add_str(o, "version", info && info->version ? info->version : "");
	return o;
}

/* The end line: what the export holds, the digest of every byte before it, signed with the
 * audit key when there is one. */
static int write_end(struct db *db, struct jsonl_out *o, uint64_t first, uint64_t last,
		     uint64_t records, const uint8_t last_hash[DB_HASH_SIZE])
{
	uint8_t digest[DB_HASH_SIZE], sig[DB_SIG_SIZE], sdigest[DB_HASH_SIZE];
	char hex[2 * DB_SIG_SIZE + 1];
	struct json_object *line, *end;
	unsigned int n = 0;
	char *canon = NULL;
	size_t clen = 0;
	int r;

	if (!EVP_DigestFinal_ex(o->md, digest, &n))
		return db_fail(db, -EIO, "hashing the export failed");
	line = json_object_new_object();
	end = json_object_new_object();
	if (!line || !end) {
		json_object_put(line);
		json_object_put(end);
		return db_fail(db, -ENOMEM, "out of memory ending the export");
	}
	audit_hex_encode(digest, DB_HASH_SIZE, hex);
	db_json_add_str(end, "digest", hex);
	db_json_add_int(end, "first_seq", (int64_t)first);
	if (db->signer) {
		audit_hex_encode(db->signer->key_id, DB_HASH_SIZE, hex);
		db_json_add_str(end, "key_id", hex);
	}
	audit_hex_encode(last_hash, DB_HASH_SIZE, hex);
	db_json_add_str(end, "last_hash", hex);
	db_json_add_int(end, "last_seq", (int64_t)last);
	db_json_add_int(end, "records", (int64_t)records);
	json_object_object_add(line, "end", end);
	if (db->signer) {
		r = audit_canon_encode(end, &canon, &clen);
		if (r == 0)
			r = audit_sha256(canon, clen, sdigest);
		free(canon);
		if (r == 0)
			r = db->signer->sign(db->signer->userdata, sdigest, sig);
		if (r < 0) {
			/* An export whose end the station's key did not sign could not be told
			 * from a cut one: none is written, the caller says why. */
			json_object_put(line);
			return db_fail(db, r, "the audit key did not sign the end of the export "
				       "(token removed or failing?); no export written, try again");
		}
		audit_hex_encode(sig, DB_SIG_SIZE, hex);
		db_json_add_str(line, "signature", hex);
	}
	return out_json(db, o, line);
}

/* The export line of one audit record: the stored canonical text goes out as is, members in
 * canonical order; type names are plain ASCII. The columns of st are seq, time, type,
 * content, prev_hash, hash, signature. */
int db_audit_row_line(struct db *db, sqlite3_stmt *st, char **ret_line, size_t *ret_len,
		      uint8_t ret_hash[DB_HASH_SIZE])
{
	char prev_hex[2 * DB_HASH_SIZE + 1], hash_hex[2 * DB_HASH_SIZE + 1];
	char sig_hex[2 * DB_SIG_SIZE + 1];
	const char *type = (const char *)sqlite3_column_text(st, 2);
	const char *content = (const char *)sqlite3_column_text(st, 3);
	bool sig = sqlite3_column_bytes(st, 6) == DB_SIG_SIZE;
	int len;

	if (!type || !content || sqlite3_column_bytes(st, 4) != DB_HASH_SIZE ||
	    sqlite3_column_bytes(st, 5) != DB_HASH_SIZE)
		return db_fail(db, -EBADMSG, "record %" PRId64 " of %s is damaged",
			       (int64_t)sqlite3_column_int64(st, 0), db->path);
	audit_hex_encode(sqlite3_column_blob(st, 4), DB_HASH_SIZE, prev_hex);
	audit_hex_encode(sqlite3_column_blob(st, 5), DB_HASH_SIZE, hash_hex);
	if (ret_hash)
		memcpy(ret_hash, sqlite3_column_blob(st, 5), DB_HASH_SIZE);
	if (sig)
		audit_hex_encode(sqlite3_column_blob(st, 6), DB_SIG_SIZE, sig_hex);
	len = asprintf(ret_line, "{\"content\":%s,\"hash\":\"%s\",\"prev_hash\":\"%s\","
				 "\"seq\":%" PRId64 ",%s%s%s\"time\":%" PRId64 ",\"type\":\"%s\"}",
		       content, hash_hex, prev_hex, (int64_t)sqlite3_column_int64(st, 0),
		       sig ? "\"signature\":\"" : "", sig ? sig_hex : "", sig ? "\"," : "",
		       (int64_t)sqlite3_column_int64(st, 1), type);
	if (len < 0) {
		*ret_line = NULL;
		return db_fail(db, -ENOMEM, "out of memory writing an audit record");
	}
	*ret_len = (size_t)len;
	return 0;
}

int db_export_jsonl(struct db *db, const struct db_range *range, FILE *out)
{
	return db_export_jsonl_info(db, range, NULL, out);
}

int db_export_jsonl_info(struct db *db, const struct db_range *range,
			 const struct db_export_info *info, FILE *out)
{
	static const struct db_range all;
	uint8_t anchor[DB_HASH_SIZE] = { 0 }, last_hash[DB_HASH_SIZE];
	struct jsonl_out o = { .f = out };
	uint64_t first = 0, last = 0, records = 0;
	sqlite3_stmt *st;
	int rc, r;

	if (!range)
		range = &all;
	if (info && info->n_tokens > AUDIT_TOKENS_MAX)
		return db_fail(db, -EINVAL, "an export names at most %d tokens", AUDIT_TOKENS_MAX);
	db->err[0] = '\0';
	o.md = EVP_MD_CTX_new();
	if (!o.md || !EVP_DigestInit_ex(o.md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(o.md);
		return db_fail(db, -ENOMEM, "cannot hash the export");
	}
	/* One read transaction: a consistent snapshot while writers continue. */
	r = sqlite3_exec(db->h, "BEGIN", NULL, NULL, NULL);
	if (r != SQLITE_OK) {
		EVP_MD_CTX_free(o.md);
		return db_fail_sqlite(db, r, "starting the export");
	}
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
	memcpy(last_hash, anchor, DB_HASH_SIZE);
	r = out_json(db, &o, meta_json(range, info, first, last, anchor));
	if (r < 0 || !first)
		goto end;

	r = db_prepare(db, "SELECT seq, time, type, content, prev_hash, hash, signature "
			   "FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq", &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, (int64_t)first);
	sqlite3_bind_int64(st, 2, (int64_t)last);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char *line = NULL;
		size_t len = 0;

		r = db_audit_row_line(db, st, &line, &len, last_hash);
		if (r < 0)
			break;
		out_line(&o, line, len);
		free(line);
		records++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_fail_sqlite(db, rc, "reading the audit trail");
	sqlite3_finalize(st);
end:
	if (r == 0)
		r = write_end(db, &o, first, last, records, last_hash);
out:
	sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
	EVP_MD_CTX_free(o.md);
	if (r == 0 && (o.failed || fflush(out) != 0))
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
	"job_kind",
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
		       "  l.state, (SELECT kind FROM jobs WHERE id = a.job_id), a.started_at AS t "
		       "FROM attempts a LEFT JOIN license_uses u ON u.attempt_id = a.id "
		       "  LEFT JOIN licenses l ON l.id = u.license_id "
		       "WHERE (?1 = 0 OR a.job_id = ?1) AND a.started_at >= ?2 AND a.started_at < ?3 "
		       "UNION ALL "
		       "SELECT l.job_id, NULL, NULL, l.chip_uid, l.reserved_at, l.closed_at, NULL, "
		       "  NULL, NULL, l.reason, NULL, l.id, NULL, l.token_serial, l.target, "
		       "  l.counter_before, l.counter_after, l.state, "
		       "  (SELECT kind FROM jobs WHERE id = l.job_id), l.reserved_at AS t "
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

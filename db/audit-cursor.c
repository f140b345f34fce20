/* The cursor over committed audit records, and the acknowledged position of a follower. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "audit-cursor.h"
#include "db-internal.h"

#define DEFAULT_BATCH_RECORDS 256
#define DEFAULT_BATCH_BYTES (1024 * 1024)

void db_audit_batch_clear(struct db_audit_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->records[i].line);
	free(b->records);
	b->records = NULL;
	b->n = 0;
	b->bytes = 0;
}

void db_audit_cursor_init(struct db_audit_cursor *c, struct db *db, uint64_t seq,
			  const uint8_t *hash)
{
	memset(c, 0, sizeof(*c));
	c->db = db;
	c->seq = seq;
	c->hash_known = seq == 0 || hash;
	if (hash)
		memcpy(c->hash, hash, DB_HASH_SIZE);
}

/* The record the cursor stands after must still be there, with the hash the follower
 * holds. */
static int check_position(struct db_audit_cursor *c)
{
	struct db *db = c->db;
	sqlite3_stmt *st;
	int rc, r;

	if (c->seq == 0)
		return 0;
	r = db_prepare(db, "SELECT hash FROM audit WHERE seq = ?", &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, (int64_t)c->seq);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		r = db_fail(db, -ESTALE,
			    "the audit trail in %s has no record %" PRIu64 " although it was "
			    "read before: the database was replaced or restored from an older copy",
			    db->path, c->seq);
	else if (rc != SQLITE_ROW)
		r = db_fail_sqlite(db, rc, "reading the audit trail");
	else if (sqlite3_column_bytes(st, 0) != DB_HASH_SIZE)
		r = db_fail(db, -EBADMSG, "record %" PRIu64 " of %s is damaged", c->seq,
			    db->path);
	else if (c->hash_known && memcmp(sqlite3_column_blob(st, 0), c->hash, DB_HASH_SIZE))
		r = db_fail(db, -ESTALE,
			    "record %" PRIu64 " of the audit trail in %s is not the one read "
			    "before (another hash): the database was replaced", c->seq, db->path);
	sqlite3_finalize(st);
	return r;
}

int db_audit_cursor_next(struct db_audit_cursor *c, size_t max_records, size_t max_bytes,
			 struct db_audit_batch *ret)
{
	struct db *db = c->db;
	struct db_audit_batch b = { 0 };
	uint8_t prev[DB_HASH_SIZE];
	bool prev_known = c->hash_known;
	uint64_t seq = c->seq;
	sqlite3_stmt *st = NULL;
	int rc, r;

	db_audit_batch_clear(ret);
	if (!max_records)
		max_records = DEFAULT_BATCH_RECORDS;
	if (!max_bytes)
		max_bytes = DEFAULT_BATCH_BYTES;
	db->err[0] = '\0';
	memcpy(prev, c->hash, DB_HASH_SIZE);

	/* One read transaction: the position check and the records see one snapshot. */
	rc = sqlite3_exec(db->h, "BEGIN", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return db_fail_sqlite(db, rc, "starting to read the audit trail");
	r = check_position(c);
	if (r < 0)
		goto out;
	b.records = calloc(max_records, sizeof(*b.records));
	if (!b.records) {
		r = db_fail(db, -ENOMEM, "out of memory reading the audit trail");
		goto out;
	}
	r = db_prepare(db, "SELECT seq, time, type, content, prev_hash, hash, signature "
			   "FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, (int64_t)c->seq);
	sqlite3_bind_int64(st, 2, (int64_t)max_records);
	while (b.n < max_records && (b.n == 0 || b.bytes < max_bytes) &&
	       (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct db_audit_record *rec = &b.records[b.n];

		rec->seq = (uint64_t)sqlite3_column_int64(st, 0);
		rec->time_ms = sqlite3_column_int64(st, 1);
		r = db_audit_row_line(db, st, &rec->line, &rec->line_len, rec->hash);
		if (r < 0)
			goto out;
		memcpy(rec->prev_hash, sqlite3_column_blob(st, 4), DB_HASH_SIZE);
		b.n++;
		b.bytes += rec->line_len;
		if (rec->seq != seq + 1) {
			r = db_fail(db, -EBADMSG, "the audit trail in %s skips from record %" PRIu64
				    " to %" PRIu64, db->path, seq, rec->seq);
			goto out;
		}
		if (prev_known && memcmp(rec->prev_hash, prev, DB_HASH_SIZE) != 0) {
			r = db_fail(db, seq == c->seq ? -ESTALE : -EBADMSG,
				    "record %" PRIu64 " of the audit trail in %s does not continue "
				    "record %" PRIu64 "%s", rec->seq, db->path, seq,
				    seq == c->seq ? " as read before: the database was replaced" :
						    "");
			goto out;
		}
		seq = rec->seq;
		memcpy(prev, rec->hash, DB_HASH_SIZE);
		prev_known = true;
	}
	if (b.n < max_records && (b.n == 0 || b.bytes < max_bytes) && rc != SQLITE_DONE)
		r = db_fail_sqlite(db, rc, "reading the audit trail");
out:
	sqlite3_finalize(st);
	sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
	if (r < 0) {
		db_audit_batch_clear(&b);
		return r;
	}
	if (b.n == 0) {
		free(b.records);
		b.records = NULL;
	}
	c->seq = seq;
	memcpy(c->hash, prev, DB_HASH_SIZE);
	c->hash_known = prev_known;
	*ret = b;
	return 0;
}

int db_audit_head(struct db *db, uint64_t *ret_seq, uint8_t ret_hash[DB_HASH_SIZE])
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		*ret_seq = 0;
		memset(ret_hash, 0, DB_HASH_SIZE);
	} else if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 1) == DB_HASH_SIZE) {
		*ret_seq = (uint64_t)sqlite3_column_int64(st, 0);
		memcpy(ret_hash, sqlite3_column_blob(st, 1), DB_HASH_SIZE);
	} else if (rc == SQLITE_ROW) {
		r = db_fail(db, -EBADMSG, "the audit chain head in %s is damaged", db->path);
	} else {
		r = db_fail_sqlite(db, rc, "reading the audit chain head");
	}
	sqlite3_finalize(st);
	return r;
}

int db_shipped_get(struct db *db, const char *target, uint64_t *ret_seq,
		   uint8_t ret_hash[DB_HASH_SIZE])
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, "SELECT seq, hash FROM shipped WHERE target = ?", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, target, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	*ret_seq = 0;
	memset(ret_hash, 0, DB_HASH_SIZE);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 1) == DB_HASH_SIZE) {
		*ret_seq = (uint64_t)sqlite3_column_int64(st, 0);
		memcpy(ret_hash, sqlite3_column_blob(st, 1), DB_HASH_SIZE);
	} else if (rc == SQLITE_ROW) {
		r = db_fail(db, -EBADMSG, "the acknowledged position of %s in %s is damaged",
			    target, db->path);
	} else if (rc != SQLITE_DONE) {
		r = db_fail_sqlite(db, rc, "reading the acknowledged position");
	}
	sqlite3_finalize(st);
	return r;
}

int db_shipped_set(struct db *db, const char *target, uint64_t seq,
		   const uint8_t hash[DB_HASH_SIZE])
{
	sqlite3_stmt *st;
	int r;

	db->err[0] = '\0';
	r = db_prepare(db, "INSERT INTO shipped (target, seq, hash, updated_at) "
			   "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (target) DO UPDATE SET "
			   "seq = ?2, hash = ?3, updated_at = ?4", &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, target, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)seq);
	sqlite3_bind_blob(st, 3, hash, DB_HASH_SIZE, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, db_now_ms());
	/* Autocommit: durable on return (synchronous = FULL). */
	return db_step_done(db, st, "recording the acknowledged position");
}

/* Internal to db/: shared by its source files, and by its tests (migration hook). */
#pragma once

#include <sqlite3.h>
#include <json-c/json.h>

#include "audit-format.h"
#include "db.h"

struct db {
	sqlite3 *h;
	char *path;
	const struct db_signer *signer;
	unsigned checkpoint_records;
	unsigned checkpoint_seconds;
	int checkpoint_error; /* last periodic checkpoint failure, 0 if none */
	char err[512];
};

/* Opens like db_open() but with the given migration list (tests inject failing steps).
 * migrations[i] takes the schema from version i to i + 1. */
int db_open_with_migrations(const char *path, const struct db_options *opts,
			    const char *const *migrations, size_t n_migrations,
			    struct db **ret_db, char *errbuf, size_t errlen);

/* The migrations of this build. */
extern const char *const db_migrations[];
extern const size_t db_n_migrations;

/* Stores a message and returns r. */
int db_fail(struct db *db, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Maps rc to -errno and stores "what: sqlite message" (or the database-full sentence). */
int db_fail_sqlite(struct db *db, int rc, const char *what);

/* Milliseconds since the epoch (wall clock: records carry civil time). */
int64_t db_now_ms(void);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. db_commit() rolls back itself on failure. */
int db_begin(struct db *db);
int db_commit(struct db *db);
void db_rollback(struct db *db);

/* Prepares sql or stores the error; returns 0 or -errno. */
int db_prepare(struct db *db, const char *sql, sqlite3_stmt **ret_stmt);

/* Runs a prepared statement that returns no row, then finalizes it. */
int db_step_done(struct db *db, sqlite3_stmt *st, const char *what);

/* Appends an audit record of type with data (consumed) inside the caller's transaction,
 * then a checkpoint if one is due. */
int db_audit_append(struct db *db, const char *type, struct json_object *data);

/* Appends a checkpoint inside the caller's transaction if records are uncovered. */
int db_audit_checkpoint_locked(struct db *db);

/* Helpers building record data. */
void db_json_add_str(struct json_object *o, const char *key, const char *value);
void db_json_add_int(struct json_object *o, const char *key, int64_t value);

/* The export line of the audit record in st's current row (columns seq, time, type,
 * content, prev_hash, hash, signature) into a new string *ret_line (free()); its hash into
 * ret_hash (may be NULL). Exports and the cursor share it, so both carry the same bytes. */
int db_audit_row_line(struct db *db, sqlite3_stmt *st, char **ret_line, size_t *ret_len,
		      uint8_t ret_hash[DB_HASH_SIZE]);

/* Connection, migrations, errors, transactions and the audit chain. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "db-internal.h"
#include "sfi-time.h"

#define DEFAULT_CHECKPOINT_RECORDS 256
#define DEFAULT_CHECKPOINT_SECONDS 300
#define DEFAULT_BUSY_TIMEOUT_MS 5000
/* PRAGMA application_id of sfid's databases: "SFID". A file with another id, or another
 * application's tables, is not ours and is refused unchanged. */
#define DB_APPLICATION_ID 0x53464944
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

static const uint8_t genesis_hash[DB_HASH_SIZE];

int64_t db_now_ms(void)
{
	return sfi_realtime_ms();
}

int db_fail(struct db *db, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->err, sizeof(db->err), fmt, ap);
	va_end(ap);
	return r;
}

static bool errno_is_full(int e)
{
	return e == ENOSPC || e == EFBIG || e == EDQUOT;
}

/* SQLite reports ENOSPC as SQLITE_FULL, but a write refused for another "no room" reason
 * (EFBIG past a file size limit, EDQUOT) only as a write error, and the errno it keeps may
 * be stale. So on a write error, look at the room left for the file and its WAL. */
static bool storage_exhausted(const char *path)
{
	char wal[PATH_MAX];
	struct statvfs vfs;
	struct rlimit rl;
	struct stat st;
	char *dir, *slash;
	bool full = false;

	if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		snprintf(wal, sizeof(wal), "%s-wal", path);
		if ((stat(path, &st) == 0 && (rlim_t)st.st_size + 65536 >= rl.rlim_cur) ||
		    (stat(wal, &st) == 0 && (rlim_t)st.st_size + 65536 >= rl.rlim_cur))
			full = true;
	}
	dir = strdup(path);
	if (dir) {
		slash = strrchr(dir, '/');
		if (slash)
			*(slash == dir ? slash + 1 : slash) = '\0';
		if (statvfs(slash ? dir : ".", &vfs) == 0 &&
		    (uint64_t)vfs.f_bavail * vfs.f_frsize < 1024 * 1024)
			full = true;
		free(dir);
	}
	return full;
}

static int errno_from_sqlite(sqlite3 *h, int rc)
{
	int sys = h ? sqlite3_system_errno(h) : 0;

	switch (rc & 0xff) {
	case SQLITE_OK:
		return 0;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_IOERR:
		return errno_is_full(sys) ? -ENOSPC : -EIO;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	case SQLITE_CONSTRAINT:
		return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY ?
			       -EEXIST : -EINVAL;
	case SQLITE_CANTOPEN:
		return sys > 0 ? -sys : -EACCES;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EPERM;
	case SQLITE_TOOBIG:
		return -E2BIG;
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
		return -EINVAL;
	default:
		return -EIO;
	}
}

int db_fail_sqlite(struct db *db, int rc, const char *what)
{
	int r = errno_from_sqlite(db->h, rc);

	if (r == -EIO && (rc & 0xff) == SQLITE_IOERR && storage_exhausted(db->path))
		r = -ENOSPC;
	if (r == -ENOSPC)
		return db_fail(db, r,
			       "database full: %s failed because %s cannot grow (%s); nothing of "
			       "it was recorded, free disk space before programming more chips",
			       what, db->path, sqlite3_errmsg(db->h));
	if (db->h && sqlite3_system_errno(db->h) > 0)
		return db_fail(db, r, "%s failed on %s: %s (%s)", what, db->path,
			       sqlite3_errmsg(db->h), strerror(sqlite3_system_errno(db->h)));
	return db_fail(db, r, "%s failed on %s: %s", what, db->path, sqlite3_errmsg(db->h));
}

const char *db_last_error(const struct db *db)
{
	return db ? db->err : "";
}

int db_schema_version(void)
{
	return (int)db_n_migrations;
}

int db_prepare(struct db *db, const char *sql, sqlite3_stmt **ret_stmt)
{
	int rc = sqlite3_prepare_v2(db->h, sql, -1, ret_stmt, NULL);

	if (rc != SQLITE_OK)
		return db_fail_sqlite(db, rc, "preparing a statement");
	return 0;
}

int db_step_done(struct db *db, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	int r = 0;

	if (rc != SQLITE_DONE)
		r = db_fail_sqlite(db, rc, what);
	sqlite3_finalize(st);
	return r;
}

static int exec(struct db *db, const char *sql, const char *what)
{
	int rc = sqlite3_exec(db->h, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : db_fail_sqlite(db, rc, what);
}

int db_begin(struct db *db)
{
	db->err[0] = '\0';
	return exec(db, "BEGIN IMMEDIATE", "starting a transaction");
}

void db_rollback(struct db *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

int db_commit(struct db *db)
{
	int r = exec(db, "COMMIT", "committing");

	if (r < 0)
		db_rollback(db);
	return r;
}

void db_json_add_str(struct json_object *o, const char *key, const char *value)
{
	json_object_object_add(o, key, value ? json_object_new_string(value) : NULL);
}

void db_json_add_int(struct json_object *o, const char *key, int64_t value)
{
	json_object_object_add(o, key, json_object_new_int64(value));
}

/* Reads the chain head; an empty chain has seq 0 and the genesis hash. */
static int audit_head(struct db *db, uint64_t *ret_seq, uint8_t ret_hash[DB_HASH_SIZE])
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		*ret_seq = 0;
		memcpy(ret_hash, genesis_hash, DB_HASH_SIZE);
		r = 0;
	} else if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 1) == DB_HASH_SIZE) {
		*ret_seq = (uint64_t)sqlite3_column_int64(st, 0);
		memcpy(ret_hash, sqlite3_column_blob(st, 1), DB_HASH_SIZE);
		r = 0;
	} else if (rc == SQLITE_ROW) {
		r = db_fail(db, -EBADMSG, "the audit chain head in %s is damaged", db->path);
	} else {
		r = db_fail_sqlite(db, rc, "reading the audit chain head");
	}
	sqlite3_finalize(st);
	return r;
}

/* Inserts one record; data is consumed. With want_signature the canonical content is
 * signed (checkpoints). */
static int audit_insert(struct db *db, const char *type, struct json_object *data,
			bool want_signature)
{
	uint8_t prev[DB_HASH_SIZE], hash[DB_HASH_SIZE], digest[DB_HASH_SIZE], sig[DB_SIG_SIZE];
	struct json_object *content;
	sqlite3_stmt *st = NULL;
	char *canon = NULL;
	size_t canon_len;
	uint64_t seq;
	int64_t now;
	int r;

	r = audit_head(db, &seq, prev);
	if (r < 0) {
		json_object_put(data);
		return r;
	}
	seq++;
	now = db_now_ms();

	content = json_object_new_object();
	if (!content) {
		json_object_put(data);
		return db_fail(db, -ENOMEM, "out of memory building an audit record");
	}
	json_object_object_add(content, "data", data);
	db_json_add_int(content, "seq", (int64_t)seq);
	db_json_add_int(content, "time", now);
	db_json_add_str(content, "type", type);
	r = audit_canon_encode(content, &canon, &canon_len);
	json_object_put(content);
	if (r < 0)
		return db_fail(db, r, "cannot encode a %s audit record (invalid text in a field)",
			       type);

	r = audit_hash_record(prev, canon, canon_len, hash);
	if (r < 0)
		goto out;
	if (want_signature) {
		unsigned int n = 0;

		if (!EVP_Digest(canon, canon_len, digest, &n, EVP_sha256(), NULL)) {
			r = db_fail(db, -EIO, "hashing a checkpoint failed");
			goto out;
		}
		r = db->signer->sign(db->signer->userdata, digest, sig);
		if (r < 0) {
			r = db_fail(db, r < 0 ? r : -EIO,
				    "the audit key could not sign a checkpoint (error %d); check "
				    "the HSM token", r);
			goto out;
		}
	}

	r = db_prepare(db,
		       "INSERT INTO audit (seq, time, type, content, prev_hash, hash, signature) "
		       "VALUES (?, ?, ?, ?, ?, ?, ?)",
		       &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, (int64_t)seq);
	sqlite3_bind_int64(st, 2, now);
	sqlite3_bind_text(st, 3, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, canon, (int)canon_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 5, prev, DB_HASH_SIZE, SQLITE_STATIC);
	sqlite3_bind_blob(st, 6, hash, DB_HASH_SIZE, SQLITE_STATIC);
	if (want_signature)
		sqlite3_bind_blob(st, 7, sig, DB_SIG_SIZE, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 7);
	r = db_step_done(db, st, "appending an audit record");
out:
	free(canon);
	return r;
}

/* Seq of the last checkpoint (0: none) and the time of the first record after it. */
static int audit_uncovered(struct db *db, uint64_t *ret_last_cp, uint64_t *ret_head,
			   int64_t *ret_oldest_ms)
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db,
		       "SELECT (SELECT coalesce(max(seq), 0) FROM audit WHERE type = 'checkpoint'),"
		       " (SELECT coalesce(max(seq), 0) FROM audit),"
		       " (SELECT time FROM audit WHERE seq = 1 + (SELECT coalesce(max(seq), 0)"
		       "   FROM audit WHERE type = 'checkpoint'))",
		       &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		r = db_fail_sqlite(db, rc, "reading the last checkpoint");
	} else {
		*ret_last_cp = (uint64_t)sqlite3_column_int64(st, 0);
		*ret_head = (uint64_t)sqlite3_column_int64(st, 1);
		*ret_oldest_ms = sqlite3_column_int64(st, 2);
	}
	sqlite3_finalize(st);
	return r;
}

int db_audit_checkpoint_locked(struct db *db)
{
	uint8_t head_hash[DB_HASH_SIZE];
	char hex[2 * DB_HASH_SIZE + 1];
	struct json_object *data;
	uint64_t head;
	int r;

	if (!db->signer)
		return db_fail(db, -ENOKEY, "no audit key is configured, so no checkpoint can be "
					    "signed");
	r = audit_head(db, &head, head_hash);
	if (r < 0)
		return r;
	data = json_object_new_object();
	if (!data)
		return db_fail(db, -ENOMEM, "out of memory building a checkpoint");
	audit_hex_encode(head_hash, DB_HASH_SIZE, hex);
	db_json_add_str(data, "covers_hash", hex);
	db_json_add_int(data, "covers_seq", (int64_t)head);
	audit_hex_encode(db->signer->key_id, DB_HASH_SIZE, hex);
	db_json_add_str(data, "key_id", hex);
	return audit_insert(db, "checkpoint", data, true);
}

int db_audit_append(struct db *db, const char *type, struct json_object *data)
{
	uint64_t last_cp, head;
	int64_t oldest;
	int r;

	if (!data)
		return db_fail(db, -ENOMEM, "out of memory building an audit record");
	r = audit_insert(db, type, data, false);
	if (r < 0 || !db->signer)
		return r;

	r = audit_uncovered(db, &last_cp, &head, &oldest);
	if (r < 0)
		return r;
	if (head - last_cp < db->checkpoint_records &&
	    db_now_ms() - oldest < (int64_t)db->checkpoint_seconds * 1000)
		return 0;

	/* A periodic checkpoint that cannot be signed must not lose the record it follows:
	 * the record commits, and the next append tries again. */
	r = sqlite3_exec(db->h, "SAVEPOINT checkpoint", NULL, NULL, NULL);
	if (r != SQLITE_OK)
		return db_fail_sqlite(db, r, "starting a checkpoint");
	r = db_audit_checkpoint_locked(db);
	if (r < 0) {
		db->checkpoint_error = r;
		if (r == -ENOSPC)
			return r;
		sqlite3_exec(db->h, "ROLLBACK TO checkpoint", NULL, NULL, NULL);
		db->err[0] = '\0';
	} else {
		db->checkpoint_error = 0;
	}
	sqlite3_exec(db->h, "RELEASE checkpoint", NULL, NULL, NULL);
	return 0;
}

int db_checkpoint(struct db *db)
{
	uint64_t last_cp, head;
	int64_t oldest;
	int r;

	if (!db->signer)
		return db_fail(db, -ENOKEY, "no audit key is configured, so no checkpoint can be "
					    "signed");
	r = db_begin(db);
	if (r < 0)
		return r;
	r = audit_uncovered(db, &last_cp, &head, &oldest);
	if (r == 0 && head > last_cp)
		r = db_audit_checkpoint_locked(db);
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	return db_commit(db);
}

int db_audit_verify(struct db *db, uint64_t *ret_bad_seq)
{
	uint8_t prev[DB_HASH_SIZE], hash[DB_HASH_SIZE];
	uint64_t expect = 1;
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, "SELECT seq, content, prev_hash, hash FROM audit ORDER BY seq", &st);
	if (r < 0)
		return r;
	memcpy(prev, genesis_hash, DB_HASH_SIZE);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
		const char *content = (const char *)sqlite3_column_text(st, 1);
		size_t len = (size_t)sqlite3_column_bytes(st, 1);

		if (seq != expect || sqlite3_column_bytes(st, 2) != DB_HASH_SIZE ||
		    sqlite3_column_bytes(st, 3) != DB_HASH_SIZE || !content ||
		    memcmp(sqlite3_column_blob(st, 2), prev, DB_HASH_SIZE) != 0 ||
		    audit_hash_record(prev, content, len, hash) < 0 ||
		    memcmp(sqlite3_column_blob(st, 3), hash, DB_HASH_SIZE) != 0) {
			sqlite3_finalize(st);
			*ret_bad_seq = expect;
			return db_fail(db, -EBADMSG,
				       "the audit chain in %s breaks at record %" PRIu64, db->path,
				       expect);
		}
		memcpy(prev, hash, DB_HASH_SIZE);
		expect++;
	}
	r = rc == SQLITE_DONE ? 0 : db_fail_sqlite(db, rc, "reading the audit chain");
	sqlite3_finalize(st);
	return r;
}

int db_audit_stats(struct db *db, uint64_t *ret_records, uint64_t *ret_last_checkpoint_seq)
{
	uint64_t last_cp, head;
	int64_t oldest;
	int r;

	r = audit_uncovered(db, &last_cp, &head, &oldest);
	if (r < 0)
		return r;
	*ret_records = head;
	*ret_last_checkpoint_seq = last_cp;
	return 0;
}

static int read_user_version(struct db *db, int *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, "PRAGMA user_version", &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int(st, 0);
	else
		r = db_fail_sqlite(db, rc, "reading the schema version");
	sqlite3_finalize(st);
	return r;
}

/* All pending migrations run in one transaction, each under its own savepoint, so that a
 * failure at any step leaves the file exactly as it was (not half-migrated). They run
 * before the switch to WAL, which would otherwise rewrite the header of an old file. */
static int migrate(struct db *db, const char *const *migrations, size_t n, int from)
{
	char sql[64];
	int r;

	r = db_begin(db);
	if (r < 0)
		return r;
	r = exec(db, "PRAGMA application_id = " STRINGIFY(DB_APPLICATION_ID), "marking the file");
	if (r < 0) {
		db_rollback(db);
		return r;
	}
	for (size_t v = (size_t)from; v < n; v++) {
		int rc = sqlite3_exec(db->h, migrations[v], NULL, NULL, NULL);

		if (rc == SQLITE_OK) {
			snprintf(sql, sizeof(sql), "PRAGMA user_version = %zu", v + 1);
			rc = sqlite3_exec(db->h, sql, NULL, NULL, NULL);
		}
		if (rc != SQLITE_OK) {
			r = db_fail_sqlite(db, rc, "migration");
			db_fail(db, r == -ENOSPC ? r : -EPROTO,
				"upgrading %s to schema version %zu failed (%s); the file was left "
				"unchanged, run the previous sfid or restore a backup",
				db->path, v + 1, sqlite3_errmsg(db->h));
			db_rollback(db);
			return r == -ENOSPC ? r : -EPROTO;
		}
	}
	return db_commit(db);
}

/* One integer from a PRAGMA or a query. */
static int query_int(struct db *db, const char *sql, const char *what, int64_t *ret)
{
	sqlite3_stmt *st;
	int rc, r;

	r = db_prepare(db, sql, &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	else
		r = db_fail_sqlite(db, rc, what);
	sqlite3_finalize(st);
	return r;
}

/* Before anything is written: the file must be intact (quick_check reads every page) and
 * sfid's own: marked with sfid's application id, or new and empty, or made by an sfid from
 * before the mark (its tables and a schema version). Returns 0, or -EBADMSG with a
 * sentence, the file left unchanged. */
static int check_file(struct db *db, size_t n_migrations)
{
	sqlite3_stmt *st;
	int64_t app = 0, version = 0, objects = 0, ours = 0;
	const char *text;
	char found[256] = "";
	int rc, r;

	r = db_prepare(db, "PRAGMA quick_check(1)", &st);
	if (r < 0)
		goto damaged;
	rc = sqlite3_step(st);
	text = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
	if (rc != SQLITE_ROW || !text || strcmp(text, "ok") != 0) {
		snprintf(found, sizeof(found), "%s", text ? text : sqlite3_errmsg(db->h));
		sqlite3_finalize(st);
		r = rc == SQLITE_ROW ? -EBADMSG : errno_from_sqlite(db->h, rc);
		if (r != -EBADMSG && r != -EIO)
			return db_fail_sqlite(db, rc, "checking the database");
		goto damaged;
	}
	sqlite3_finalize(st);

	r = query_int(db, "PRAGMA application_id", "reading the application id", &app);
	if (r == 0)
		r = query_int(db, "PRAGMA user_version", "reading the schema version", &version);
	if (r == 0)
		r = query_int(db, "SELECT count(*) FROM sqlite_master", "reading the schema", &objects);
	if (r == 0)
		r = query_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
			      "name IN ('jobs', 'chips', 'attempts', 'licenses', 'audit')",
			      "reading the schema", &ours);
	if (r == -EBADMSG) {
		snprintf(found, sizeof(found), "%s", sqlite3_errmsg(db->h));
		goto damaged;
	}
	if (r < 0)
		return r;
	if (app == DB_APPLICATION_ID)
		return 0;
	if (app == 0 && version == 0 && objects == 0)
		return 0; /* new: marked when its schema is created */
	if (app == 0 && version >= 1 && (size_t)version <= n_migrations && ours == 5)
		return 0; /* an sfid file from before the mark: marked now */
	return db_fail(db, -EBADMSG,
		       "%s is not an sfid audit database (application id 0x%08" PRIx64 ", schema "
		       "version %" PRId64 ", %" PRId64 " tables and indexes of its own); it was "
		       "left unchanged: name another file in [database] path", db->path,
		       (uint64_t)app & 0xffffffffu, version, objects);
damaged:
	return db_fail(db, -EBADMSG,
		       "%s is damaged (%s); sfid does not write to a damaged file and left it "
		       "unchanged: restore it from a backup, or move it aside and keep it for the "
		       "audit", db->path, found[0] ? found : sqlite3_errmsg(db->h));
}

static int configure(struct db *db, const struct db_options *opts,
		     const char *const *migrations, size_t n)
{
	sqlite3_stmt *st;
	char sql[96];
	int version = 0, rc, r;

	sqlite3_busy_timeout(db->h, opts->busy_timeout_ms ? (int)opts->busy_timeout_ms :
							      DEFAULT_BUSY_TIMEOUT_MS);
	sqlite3_extended_result_codes(db->h, 1);
	/* Connection settings only: none of these writes to the file. */
	r = exec(db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;"
		     "PRAGMA trusted_schema = OFF;",
		 "configuring the connection");
	if (r < 0)
		return r;

	r = check_file(db, n);
	if (r < 0)
		return r;
	r = read_user_version(db, &version);
	if (r == -EBADMSG)
		return db_fail(db, r, "%s is not an sfid audit database (or it is damaged); it "
				      "was left unchanged", db->path);
	if (r < 0)
		return r;
	if (version < 0 || (size_t)version > n)
		return db_fail(db, -EPROTONOSUPPORT,
			       "%s has schema version %d but this sfid knows versions up to %zu; "
			       "use a newer sfid (the file was left unchanged)",
			       db->path, version, n);
	if ((size_t)version < n) {
		r = migrate(db, migrations, n, version);
		if (r < 0)
			return r;
	} else {
		int64_t app = 0;

		r = query_int(db, "PRAGMA application_id", "reading the application id", &app);
		if (r == 0 && app != DB_APPLICATION_ID)
			r = exec(db, "PRAGMA application_id = " STRINGIFY(DB_APPLICATION_ID),
				 "marking the file");
		if (r < 0)
			return r;
	}

	r = db_prepare(db, "PRAGMA journal_mode = WAL", &st);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW || strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0)
		r = db_fail(db, rc == SQLITE_ROW ? -EIO : errno_from_sqlite(db->h, rc),
			    "cannot switch %s to write-ahead logging: %s", db->path,
			    sqlite3_errmsg(db->h));
	sqlite3_finalize(st);
	if (r < 0)
		return r;

	if (opts->max_size_bytes) {
		uint64_t pages = opts->max_size_bytes / 4096;

		snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %" PRIu64,
			 pages ? pages : 1);
		r = exec(db, sql, "limiting the database size");
	}
	return r;
}

/* After a failed open: a directory sfid may not write to is the likely cause (the database,
 * its WAL and shared-memory files are created in it), and is said so. */
static void dir_check(struct db *db, const char *path)
{
	char dir[PATH_MAX], *slash;
	int e;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		*(slash == dir ? slash + 1 : slash) = '\0';
	if (access(dir, W_OK) == 0)
		return;
	e = errno;
	if (e == ENOENT)
		db_fail(db, -ENOENT, "cannot open the audit database %s: its directory %s does not "
			"exist", path, dir);
	else
		db_fail(db, -e, "cannot open the audit database %s: its directory %s is %s (%s); "
			"sfid creates the database and its -wal and -shm files there", path, dir,
			e == EROFS ? "on a read-only file system" : "not writable by sfid",
			strerror(e));
}

int db_open_with_migrations(const char *path, const struct db_options *opts,
			    const char *const *migrations, size_t n_migrations,
			    struct db **ret_db, char *errbuf, size_t errlen)
{
	static const struct db_options defaults;
	bool created = false;
	struct db *db;
	int fd, rc, r;

	if (!opts)
		opts = &defaults;
	db = calloc(1, sizeof(*db));
	if (!db || !(db->path = strdup(path))) {
		free(db);
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "out of memory opening %s", path);
		return -ENOMEM;
	}
	db->signer = opts->signer;
	db->checkpoint_records = opts->checkpoint_records ? opts->checkpoint_records :
							    DEFAULT_CHECKPOINT_RECORDS;
	db->checkpoint_seconds = opts->checkpoint_seconds ? opts->checkpoint_seconds :
							    DEFAULT_CHECKPOINT_SECONDS;

	/* A new file is created here, private (0600) whatever the umask: SQLite gives its WAL
	 * and shared-memory files the database file's mode. */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0) {
		created = true;
		r = fchmod(fd, 0600) < 0 ? -errno : 0;
		close(fd);
	} else {
		r = errno == EEXIST ? 0 : -errno;
	}
	if (r < 0) {
		db_fail(db, r, "cannot create the audit database %s: %s", path, strerror(-r));
	} else {
		rc = sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				     NULL);
		if (rc != SQLITE_OK) {
			r = db->h ? db_fail_sqlite(db, rc, "opening the database") :
				    db_fail(db, -ENOMEM, "out of memory opening %s", path);
			if (r == -ENOENT || r == -EACCES)
				db_fail(db, r, "cannot open the audit database %s: %s; check that "
					       "its directory exists and is writable by sfid", path,
					       strerror(-r));
		} else {
			r = configure(db, opts, migrations, n_migrations);
		}
	}
	if (r < 0)
		dir_check(db, path);
	if (r < 0 && created)
		unlink(path);
	if (r < 0) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "%s", db->err);
		db_close(db);
		return r;
	}
	*ret_db = db;
	return 0;
}

int db_open(const char *path, const struct db_options *opts, struct db **ret_db, char *errbuf,
	    size_t errlen)
{
	return db_open_with_migrations(path, opts, db_migrations, db_n_migrations, ret_db,
				       errbuf, errlen);
}

/* The ids a query returns (one integer column). */
static int query_ids(struct db *db, const char *sql, int64_t **ret, size_t *ret_n)
{
	int64_t *ids = NULL, *p;
	sqlite3_stmt *st;
	size_t n = 0;
	int rc, r;

	r = db_prepare(db, sql, &st);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		p = realloc(ids, (n + 1) * sizeof(*ids));
		if (!p) {
			sqlite3_finalize(st);
			free(ids);
			return db_fail(db, -ENOMEM, "out of memory");
		}
		ids = p;
		ids[n++] = sqlite3_column_int64(st, 0);
	}
	r = rc == SQLITE_DONE ? 0 : db_fail_sqlite(db, rc, "reading open attempts");
	sqlite3_finalize(st);
	if (r < 0) {
		free(ids);
		return r;
	}
	*ret = ids;
	*ret_n = n;
	return 0;
}

int db_attempts_interrupted(struct db *db, const char *reason, unsigned *ret_attempts,
			    unsigned *ret_licenses)
{
	int64_t *lic = NULL, *att = NULL;
	size_t n_lic = 0, n_att = 0;
	int r;

	db->err[0] = '\0';
	r = query_ids(db, "SELECT l.id FROM licenses l WHERE l.state = 'issued' AND "
		      "(l.attempt_id IN (SELECT id FROM attempts WHERE result = 'running') OR "
		      " l.id IN (SELECT u.license_id FROM license_uses u JOIN attempts a ON "
		      "  a.id = u.attempt_id WHERE a.result = 'running')) ORDER BY l.id",
		      &lic, &n_lic);
	if (r == 0)
		r = query_ids(db, "SELECT id FROM attempts WHERE result = 'running' ORDER BY id",
			      &att, &n_att);
	for (size_t i = 0; r == 0 && i < n_lic; i++)
		r = db_ledger_not_installed(db, lic[i], reason);
	for (size_t i = 0; r == 0 && i < n_att; i++)
		r = db_attempt_end(db, att[i], DB_RESULT_FAILED, DB_FAILURE_TOUCHED, reason, 0);
	free(lic);
	free(att);
	if (r < 0)
		return r;
	*ret_attempts = (unsigned)n_att;
	*ret_licenses = (unsigned)n_lic;
	return 0;
}

struct db *db_close(struct db *db)
{
	if (!db)
		return NULL;
	sqlite3_close_v2(db->h);
	free(db->path);
	free(db);
	return NULL;
}

const char *db_role_to_string(enum db_role role)
{
	static const char *const names[_DB_ROLE_MAX] = {
		[DB_ROLE_READER] = "reader",
		[DB_ROLE_LEDGER] = "ledger",
		[DB_ROLE_RECORDER] = "recorder",
		[DB_ROLE_FOLLOWER] = "follower",
	};

	return role >= 0 && role < _DB_ROLE_MAX ? names[role] : NULL;
}

int db_open_role(const char *path, enum db_role role, const struct db_options *opts,
		 struct db **ret_db, char *errbuf, size_t errlen)
{
	struct db_options o = { 0 };
	struct db *db;
	int r;

	if (!db_role_to_string(role)) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "no such database connection role %d", (int)role);
		return -EINVAL;
	}
	if (opts)
		o = *opts;
	if (role == DB_ROLE_READER || role == DB_ROLE_FOLLOWER)
		o.signer = NULL; /* they append no record, so they sign no checkpoint */
	if (role == DB_ROLE_FOLLOWER && !o.busy_timeout_ms)
		o.busy_timeout_ms = 200;
	r = db_open(path, &o, &db, errbuf, errlen);
	if (r < 0)
		return r;
	if (role == DB_ROLE_READER) {
		r = exec(db, "PRAGMA query_only = ON", "making the connection read-only");
		if (r < 0) {
			if (errbuf && errlen)
				snprintf(errbuf, errlen, "%s", db->err);
			db_close(db);
			return r;
		}
	}
	*ret_db = db;
	return 0;
}

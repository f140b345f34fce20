/* Unit tests of the audit database on real SQLite files in a temporary directory:
 * ledger order and states, reconciliation, migrations, full disk, append-only audit,
 * exports and their offline verification (including tampering), the read-side queries
 * and the upgrade of a version 1 file. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <sqlite3.h>

#include "audit-format.h"
#include "audit-verify.h"
#include "db-internal.h"
#include "db.h"
#include "test-signer.h"

#define IMAGE_ID "1111111111111111111111111111111111111111111111111111111111111111"
#define DIGEST "2222222222222222222222222222222222222222222222222222222222222222"
#define TOKEN "SOFTHSM0001"

struct fixture {
	char dir[64];
	char path[128];
	struct test_signer ts;
	struct db *db;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sfid-db-test-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/audit.db", f->dir);
	assert_int_equal(test_signer_init(&f->ts, NULL), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	db_close(f->db);
	test_signer_done(&f->ts);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", f->dir);
	free(f);
	return 0;
}

static struct db *open_db(struct fixture *f, unsigned every, uint64_t max_size)
{
	struct db_options o = {
		.signer = &f->ts.signer,
		.checkpoint_records = every,
		.max_size_bytes = max_size,
	};
	char err[512];
	struct db *db = NULL;
	int r = db_open(f->path, &o, &db, err, sizeof(err));

	if (r < 0)
		fail_msg("db_open: %s", err);
	return db;
}

static int64_t make_job(struct db *db)
{
	struct db_job j = {
		.image_path = "/srv/images/app, \"v2\".sfi",
		.image_id = IMAGE_ID,
		.image_digest = DIGEST,
		.target_count = 100,
		.loaded_uid = 1000,
		.loaded_user = "supervisor",
	};
	int64_t id = 0;

	assert_int_equal(db_job_create(db, &j, &id), 0);
	assert_true(id > 0);
	return id;
}

static void uid_for(unsigned n, char out[DB_CHIP_UID_HEX + 1])
{
	snprintf(out, DB_CHIP_UID_HEX + 1, "%024x", n);
}

/* One chip the way the daemon records it. Returns 0 or the first error. */
static int chip_cycle(struct db *db, int64_t job, unsigned n, uint64_t *counter, bool install_ok)
{
	uint8_t record[200];
	char uid[DB_CHIP_UID_HEX + 1];
	struct db_reservation res = { 0 };
	int64_t attempt, lic;
	int r;

	uid_for(n, uid);
	memset(record, (int)n, sizeof(record));
	if ((r = db_attempt_begin(db, job, "slot-1", &attempt)) < 0)
		return r;
	if ((r = db_attempt_step(db, attempt, "identify", uid, 0)) < 0)
		return r;
	res = (struct db_reservation){ job, attempt, uid, TOKEN, IMAGE_ID, 0, *counter };
	if ((r = db_ledger_reserve(db, &res, &lic)) < 0)
		return r;
	if ((r = db_ledger_issue(db, lic, *counter - 1, record, sizeof(record))) < 0)
		return r;
	(*counter)--;
	if ((r = db_attempt_step(db, attempt, "installing", NULL, 4096)) < 0)
		return r;
	if (install_ok) {
		if ((r = db_ledger_installed(db, lic)) < 0)
			return r;
		if ((r = db_chip_update(db, uid, "programmed", "closed")) < 0)
			return r;
		return db_attempt_end(db, attempt, DB_RESULT_OK, 0, NULL, 8192);
	}
	if ((r = db_ledger_not_installed(db, lic, "authentication failure on area 2")) < 0)
		return r;
	if ((r = db_chip_update(db, uid, "failed", "open")) < 0)
		return r;
	return db_attempt_end(db, attempt, DB_RESULT_FAILED, -74,
			      "chip reported authentication failure, \"area 2\"", 4096);
}

static char *export_text(struct db *db, const struct db_range *range)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	assert_non_null(m);
	assert_int_equal(db_export_jsonl(db, range, m), 0);
	fclose(m);
	return buf;
}

static void verify_text(struct fixture *f, const char *text, struct verify_result *res)
{
	FILE *m = fmemopen((void *)text, strlen(text), "r");

	assert_non_null(m);
	assert_int_equal(audit_verify_stream(m, f->ts.key, res), 0);
	fclose(m);
}

static void test_open_and_schema(void **state)
{
	struct fixture *f = *state;
	sqlite3 *h;
	sqlite3_stmt *st;

	f->db = open_db(f, 0, 0);
	f->db = db_close(f->db);
	f->db = open_db(f, 0, 0);
	assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), db_schema_version());
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(h);
}

static void test_ledger_flow(void **state)
{
	struct fixture *f = *state;
	uint8_t record[64] = { 7 };
	struct db_license *l = NULL;
	struct db_reservation res;
	uint64_t counter = 50, bad_seq = 0;
	int64_t job, attempt, lic, lic2;
	char uid[DB_CHIP_UID_HEX + 1];

	f->db = open_db(f, 0, 0);
	job = make_job(f->db);
	assert_int_equal(chip_cycle(f->db, job, 1, &counter, true), 0);
	assert_int_equal(chip_cycle(f->db, job, 2, &counter, false), 0);
	assert_int_equal(counter, 48);

	/* The failed chip comes back: it must reuse its license, never spend again. */
	uid_for(2, uid);
	assert_int_equal(db_attempt_begin(f->db, job, "slot-2", &attempt), 0);
	assert_int_equal(db_ledger_find_reusable(f->db, uid, IMAGE_ID, 0, &l), 0);
	assert_int_equal(l->state, DB_LICENSE_NOT_INSTALLED);
	assert_int_equal(l->counter_before, 49);
	assert_int_equal(l->record_len, 200);
	res = (struct db_reservation){ job, attempt, uid, TOKEN, IMAGE_ID, 0, counter };
	assert_int_equal(db_ledger_reserve(f->db, &res, &lic), -EEXIST);
	assert_int_equal(db_ledger_reuse(f->db, l->id, attempt), 0);
	assert_int_equal(db_ledger_installed(f->db, l->id), 0);
	assert_int_equal(db_ledger_installed(f->db, l->id), -EALREADY);
	assert_int_equal(db_attempt_end(f->db, attempt, DB_RESULT_OK, 0, NULL, 1), 0);
	l = db_license_free(l);

	/* A module license is a different target: not reusable from the image's. */
	assert_int_equal(db_ledger_find_reusable(f->db, uid, IMAGE_ID, 1, &l), -ENOENT);

	/* One open reservation per token; the counter must drop by exactly one. */
	uid_for(3, uid);
	res = (struct db_reservation){ job, 0, uid, TOKEN, IMAGE_ID, 0, counter };
	assert_int_equal(db_ledger_reserve(f->db, &res, &lic), 0);
	uid_for(4, uid);
	res.chip_uid = uid;
	assert_int_equal(db_ledger_reserve(f->db, &res, &lic2), -EBUSY);
	assert_non_null(strstr(db_last_error(f->db), "open reservation"));
	assert_int_equal(db_ledger_issue(f->db, lic, counter - 2, record, sizeof(record)), -ERANGE);
	assert_int_equal(db_ledger_installed(f->db, lic), -EALREADY);
	assert_int_equal(db_ledger_cancel(f->db, lic, "token reported counter exhausted"), 0);
	assert_int_equal(db_ledger_reserve(f->db, &res, &lic2), 0);
	assert_int_equal(db_ledger_issue(f->db, lic2, counter - 1, record, sizeof(record)), 0);

	/* A change refused for the license's state, or for a license that does not exist,
	 * leaves no transaction open behind it. */
	assert_int_equal(db_ledger_reuse(f->db, lic, attempt), -EALREADY);
	assert_true(sqlite3_get_autocommit(f->db->h));
	assert_int_equal(db_ledger_not_installed(f->db, 9999, "no such license"), -ENOENT);
	assert_non_null(strstr(db_last_error(f->db), "no license with id 9999"));
	assert_true(sqlite3_get_autocommit(f->db->h));

	/* Invalid input is refused before anything is written. */
	res.chip_uid = "XYZ";
	assert_int_equal(db_ledger_reserve(f->db, &res, &lic), -EINVAL);
	assert_int_equal(db_attempt_step(f->db, 9999, "x", NULL, 0), -ENOENT);

	assert_int_equal(db_audit_verify(f->db, &bad_seq), 0);
	assert_int_equal(db_job_end(f->db, job), 0);
	assert_true(f->ts.calls > 0);
}

static void test_append_only(void **state)
{
	struct fixture *f = *state;
	uint64_t counter = 10;
	char *err = NULL;
	sqlite3 *h;

	f->db = open_db(f, 0, 0);
	assert_int_equal(chip_cycle(f->db, make_job(f->db), 1, &counter, true), 0);
	assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
	assert_int_not_equal(sqlite3_exec(h, "UPDATE audit SET type = 'x' WHERE seq = 2", NULL,
					  NULL, &err), SQLITE_OK);
	assert_non_null(strstr(err, "append-only"));
	sqlite3_free(err);
	assert_int_not_equal(sqlite3_exec(h, "DELETE FROM audit WHERE seq = 3", NULL, NULL, &err),
			     SQLITE_OK);
	assert_non_null(strstr(err, "append-only"));
	sqlite3_free(err);
	sqlite3_close(h);
}

/* Crash between the HSM decrement and ledger_issue(): the next start finds exactly one
 * reserved-but-unconfirmed license naming chip, token and counter. */
static void test_reconcile(void **state)
{
	struct fixture *f = *state;
	char uid[DB_CHIP_UID_HEX + 1];
	struct db_reservation res;
	struct db_diff *d = NULL;
	uint64_t counter = 20;
	int64_t job, lic;
	size_t n = 9;

	f->db = open_db(f, 0, 0);
	job = make_job(f->db);
	assert_int_equal(chip_cycle(f->db, job, 1, &counter, true), 0);
	uid_for(77, uid);
	res = (struct db_reservation){ job, 0, uid, TOKEN, IMAGE_ID, 0, counter };
	assert_int_equal(db_ledger_reserve(f->db, &res, &lic), 0);
	/* The token decrements (counter 19 -> 18), then the process dies. */
	f->db = db_close(f->db);

	f->db = open_db(f, 0, 0);
	assert_int_equal(db_reconcile(f->db, TOKEN, counter - 1, &d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].kind, DB_DIFF_RESERVED_UNCONFIRMED);
	assert_int_equal(d[0].license_id, lic);
	assert_string_equal(d[0].chip_uid, uid);
	assert_string_equal(d[0].token_serial, TOKEN);
	assert_int_equal(d[0].counter_before, 19);
	assert_int_equal(d[0].actual, 18);
	free(d);

	/* Reconciling again finds nothing; the ledger now agrees with the token. */
	assert_int_equal(db_reconcile(f->db, TOKEN, 18, &d, &n), 0);
	assert_int_equal(n, 0);
	free(d);

	/* Spends the ledger never saw, and a counter that went up. */
	assert_int_equal(db_reconcile(f->db, TOKEN, 15, &d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].kind, DB_DIFF_UNRECORDED_SPENDS);
	assert_int_equal(d[0].expected, 18);
	assert_int_equal(d[0].actual, 15);
	free(d);
	assert_int_equal(db_reconcile(f->db, TOKEN, 30, &d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].kind, DB_DIFF_COUNTER_HIGHER);
	free(d);

	/* A reservation whose counter never moved becomes void. */
	uid_for(78, uid);
	res = (struct db_reservation){ job, 0, uid, "OTHER", IMAGE_ID, 0, 5 };
	assert_int_equal(db_ledger_reserve(f->db, &res, &lic), 0);
	assert_int_equal(db_reconcile(f->db, "OTHER", 5, &d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].kind, DB_DIFF_RESERVATION_VOID);
	free(d);
}

/* A token's granted total: a new database still sees spends made elsewhere; a refill is
 * told from a counter that went up by itself; each is kept in counter_changes and listed
 * once; the trail verifies and states them. */
static void test_reconcile_granted(void **state)
{
	struct fixture *f = *state;
	struct db_job j = {
		.image_path = "/srv/images/app.sfi", .image_id = IMAGE_ID, .image_digest = DIGEST,
		.target_count = 10, .loaded_uid = 1000, .loaded_user = "supervisor",
		.station = "line-7", .sfid_version = "9.9.9",
	};
	const char *slots[] = { "slot-1", "slot-2" };
	struct db_counter_change *c = NULL;
	struct db_attempt_row *rows = NULL;
	struct verify_result res;
	char uid[DB_CHIP_UID_HEX + 1], *text;
	struct db_diff *d = NULL;
	uint64_t counter = 97;
	int64_t job, attempt;
	size_t n = 9;

	f->db = open_db(f, 0, 0);
	/* Granted 100, 3 spent before this database existed. */
	assert_int_equal(db_reconcile_granted(f->db, TOKEN, 97, 100, &d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].kind, DB_DIFF_UNRECORDED_SPENDS);
	assert_int_equal(d[0].expected, 100);
	assert_int_equal(d[0].actual, 97);
	free(d);
	/* Stated once: the next reconciliation agrees. */
	assert_int_equal(db_reconcile_granted(f->db, TOKEN, 97, 100, &d, &n), 0);
	assert_int_equal(n, 0);
	free(d);

	assert_int_equal(db_job_create(f->db, &j, &job), 0);
	assert_int_equal(db_job_start(f->db, job, 1001, "operator", slots, 2), 0);
	assert_int_equal(chip_cycle(f->db, job, 1, &counter, true), 0);
	/* A chip refused before any step named it keeps its UID. */
	uid_for(9, uid);
	assert_int_equal(db_attempt_begin(f->db, job, "slot-2", &attempt), 0);
	assert_int_equal(db_attempt_finish(f->db, attempt, DB_RESULT_FAILED, 0, "identify: chip "
					   "is in product state Closed", 0, uid), 0);

	/* A refill of 10: counter and granted total up by 10. */
	assert_int_equal(db_reconcile_granted(f->db, TOKEN, counter + 10, 110, &d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].kind, DB_DIFF_REFILL);
	assert_int_equal(d[0].expected, 96);
	assert_int_equal(d[0].actual, 106);
	free(d);
	/* Up again without the granted total: not a refill. */
	assert_int_equal(db_reconcile_granted(f->db, TOKEN, 120, 110, &d, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].kind, DB_DIFF_COUNTER_HIGHER);
	free(d);

	assert_int_equal(db_counter_changes(f->db, TOKEN, 0, &c, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(c[0].kind, DB_DIFF_COUNTER_HIGHER);
	assert_int_equal(c[1].kind, DB_DIFF_REFILL);
	assert_int_equal(c[1].granted, 110);
	assert_int_equal(c[2].kind, DB_DIFF_UNRECORDED_SPENDS);
	assert_int_equal(c[2].expected, 100);
	assert_int_equal(c[2].actual, 97);
	assert_true(c[2].audit_seq > 0 && c[2].audit_seq < c[1].audit_seq);
	free(c);
	assert_int_equal(db_counter_changes(f->db, "NOSUCH", 0, &c, &n), 0);
	assert_int_equal(n, 0);
	free(c);

	struct db_history_filter hf = { .chip_uid = uid };

	assert_int_equal(db_history(f->db, &hf, &rows, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(rows[0].id, attempt);
	free(rows);

	text = export_text(f->db, NULL);
	assert_non_null(strstr(text, "\"station\":\"line-7\",\"target_count\""));
	assert_non_null(strstr(text, "\"version\":\"9.9.9\""));
	assert_non_null(strstr(text, "\"slots\":[\"slot-1\",\"slot-2\"],\"uid\":1001,"
				     "\"user\":\"operator\""));
	verify_text(f, text, &res);
	/* Spends outside sfid keep the trail incomplete; the changes are listed. */
	if (res.status != VERIFY_INCOMPLETE)
		fail_msg("verify: %d %s / %s", res.status, res.message, res.unverifiable);
	assert_int_equal(res.n_notes, 3);
	assert_non_null(strstr(res.notes[0], "3 count(s) spent outside sfid"));
	assert_non_null(strstr(res.notes[1], "refill of 10 count(s)"));
	assert_non_null(strstr(res.notes[2], "counter went up by 14"));
	assert_int_equal(res.tokens[0].unaccounted, 3);
	assert_int_equal(res.tokens[0].added, 24);
	assert_int_equal(res.tokens[0].counter, 120);
	free(text);
}

static void file_bytes(const char *path, char **ret, size_t *ret_len)
{
	FILE *fp = fopen(path, "re");
	struct stat st;

	assert_non_null(fp);
	assert_int_equal(fstat(fileno(fp), &st), 0);
	*ret = malloc((size_t)st.st_size + 1);
	assert_non_null(*ret);
	assert_int_equal(fread(*ret, 1, (size_t)st.st_size, fp), (size_t)st.st_size);
	*ret_len = (size_t)st.st_size;
	fclose(fp);
}

static void test_migration_newer_refused(void **state)
{
	struct fixture *f = *state;
	char *before, *after, err[512] = "";
	size_t n1, n2;
	struct db *db = NULL;
	sqlite3 *h;

	f->db = open_db(f, 0, 0);
	make_job(f->db);
	f->db = db_close(f->db);
	assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL), 0);
	sqlite3_close(h);
	file_bytes(f->path, &before, &n1);
	assert_int_equal(db_open(f->path, NULL, &db, err, sizeof(err)), -EPROTONOSUPPORT);
	assert_null(db);
	assert_non_null(strstr(err, "schema version 99"));
	file_bytes(f->path, &after, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	free(before);
	free(after);
}

static void test_migration_failure_keeps_file(void **state)
{
	struct fixture *f = *state;
	const char *steps[] = {
		db_migrations[0],
		db_migrations[1],
		db_migrations[2],
		db_migrations[3],
		db_migrations[4],
		db_migrations[5],
		db_migrations[6],
		db_migrations[7],
		db_migrations[8],
		"ALTER TABLE jobs ADD COLUMN line TEXT; CREATE TABLE extra (x);",
		"INSERT INTO no_such_table VALUES (1);",
	};
	char *before, *after, err[512] = "";
	struct db *db = NULL;
	size_t n1, n2;

	f->db = open_db(f, 0, 0);
	make_job(f->db);
	f->db = db_close(f->db);
	file_bytes(f->path, &before, &n1);
	assert_int_equal(db_open_with_migrations(f->path, NULL, steps, 11, &db, err, sizeof(err)),
			 -EPROTO);
	assert_null(db);
	assert_non_null(strstr(err, "schema version 11"));
	assert_non_null(strstr(err, "left unchanged"));
	file_bytes(f->path, &after, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	free(before);
	free(after);
	/* And the current build still opens it, data intact. */
	f->db = open_db(f, 0, 0);
}

static void check_full_error(struct db *db, int r)
{
	assert_int_equal(r, -ENOSPC);
	assert_non_null(strstr(db_last_error(db), "database full"));
}

static void test_full_disk_page_limit(void **state)
{
	struct fixture *f = *state;
	struct verify_result res;
	uint64_t counter = 100000, records, cp, bad = 0;
	unsigned done = 0;
	int64_t job;
	struct db_diff *diffs = NULL;
	size_t n_diffs = 0;
	char *text;
	int r = 0;

	/* Room for the schema (its tables and indexes) and a few dozen chips. */
	f->db = open_db(f, 16, 192 * 1024);
	job = make_job(f->db);
	while (done < 100000 && (r = chip_cycle(f->db, job, done + 1, &counter, true)) == 0)
		done++;
	check_full_error(f->db, r);
	assert_true(done > 10);
	assert_int_equal(db_audit_verify(f->db, &bad), 0);
	f->db = db_close(f->db);

	/* Everything stored before is there and verifies; with room again it goes on. */
	f->db = open_db(f, 16, 0);
	assert_int_equal(db_audit_verify(f->db, &bad), 0);
	assert_int_equal(db_audit_stats(f->db, &records, &cp), 0);
	assert_true(records > done * 8);
	/* As at the daemon's start: the chip in flight may have left its reservation open
	 * (the disk filled before the issue), and its counter never moved. */
	assert_int_equal(db_reconcile(f->db, TOKEN, counter, &diffs, &n_diffs), 0);
	assert_true(n_diffs <= 1);
	if (n_diffs)
		assert_int_equal(diffs[0].kind, DB_DIFF_RESERVATION_VOID);
	free(diffs);
	assert_int_equal(chip_cycle(f->db, job, 999999, &counter, true), 0);
	assert_int_equal(db_job_end(f->db, job), 0);
	text = export_text(f->db, NULL);
	verify_text(f, text, &res);
	if (res.status != VERIFY_OK)
		fail_msg("verify: %s (%s)", res.message, res.n_warnings ? res.warnings[0] : "");
	free(text);
}

/* The same through the file system: a child whose file size limit stops SQLite's writes. */
static void test_full_disk_fsize(void **state)
{
	struct fixture *f = *state;
	struct verify_result res;
	uint64_t counter = 100000, bad = 0;
	int64_t job;
	int fds[2], status, reported[2] = { 0, 0 };
	char *text;
	pid_t pid;

	f->db = open_db(f, 16, 0);
	job = make_job(f->db);
	f->db = db_close(f->db);
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { 3 << 20, 3 << 20 };
		struct db *db;
		unsigned done = 0;
		int r = 0;

		signal(SIGXFSZ, SIG_IGN);
		setrlimit(RLIMIT_FSIZE, &rl);
		db = open_db(f, 16, 0);
		while (done < 100000 && (r = chip_cycle(db, job, done + 1, &counter, true)) == 0)
			done++;
		reported[0] = (int)done;
		reported[1] = r == -ENOSPC && strstr(db_last_error(db), "database full") ? 1 : r;
		if (reported[1] != 1)
			fprintf(stderr, "child: %d %s (%d)\n", r, db_last_error(db), sqlite3_extended_errcode(db->h));
		if (write(fds[1], reported, sizeof(reported)) != sizeof(reported))
			_exit(3);
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], reported, sizeof(reported)), sizeof(reported));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(reported[1], 1);
	assert_true(reported[0] > 5);

	f->db = open_db(f, 16, 0);
	assert_int_equal(db_audit_verify(f->db, &bad), 0);
	assert_int_equal(db_job_end(f->db, job), 0);
	text = export_text(f->db, NULL);
	verify_text(f, text, &res);
	/* The chip in flight when the disk filled may hold an issued license without an
	 * outcome or an open reservation: verify says so, and nothing else. */
	if (res.status == VERIFY_INCOMPLETE) {
		for (size_t i = 0; i < res.n_warnings; i++)
			if (!strstr(res.warnings[i], "no chip outcome") &&
			    !strstr(res.warnings[i], "still open"))
				fail_msg("unexpected warning: %s", res.warnings[i]);
	} else {
		assert_int_equal(res.status, VERIFY_OK);
	}
	/* Every chip the child saw through completely is in the trail. */
	assert_true(res.installed >= (uint64_t)reported[0]);
	assert_true(res.installed <= (uint64_t)reported[0] + 1);
	free(text);
}

static void test_checkpoints_and_export(void **state)
{
	struct fixture *f = *state;
	struct verify_result res;
	uint64_t counter = 1000, records, cp;
	struct db_range range = { 0 };
	int64_t job, job2;
	char *text;

	f->db = open_db(f, 5, 0);
	job = make_job(f->db);
	for (unsigned i = 1; i <= 6; i++)
		assert_int_equal(chip_cycle(f->db, job, i, &counter, i != 3), 0);
	assert_int_equal(db_audit_stats(f->db, &records, &cp), 0);
	assert_true(cp > 0 && records - cp < 6);

	/* Before the job ends, no checkpoint covers the tail, but the signed end does. */
	text = export_text(f->db, NULL);
	verify_text(f, text, &res);
	if (res.status != VERIFY_OK)
		fail_msg("verify: %s / %s", res.message, res.n_warnings ? res.warnings[0] : "");
	assert_true(res.covered_seq == res.last_seq);
	assert_int_equal(res.spends, 6);
	assert_int_equal(res.installed, 5);
	assert_int_equal(res.not_installed, 1);
	free(text);

	assert_int_equal(db_job_end(f->db, job), 0);
	text = export_text(f->db, NULL);
	verify_text(f, text, &res);
	if (res.status != VERIFY_OK)
		fail_msg("verify: %s / %s", res.message, res.n_warnings ? res.warnings[0] : "");
	assert_int_equal(res.first_seq, 1);
	free(text);

	/* A second job exported alone: anchored on the record before it. */
	job2 = make_job(f->db);
	for (unsigned i = 10; i <= 12; i++)
		assert_int_equal(chip_cycle(f->db, job2, i, &counter, true), 0);
	assert_int_equal(db_job_end(f->db, job2), 0);
	range.job_id = job2;
	text = export_text(f->db, &range);
	verify_text(f, text, &res);
	if (res.status != VERIFY_OK)
		fail_msg("verify: %s / %s", res.message, res.n_warnings ? res.warnings[0] : "");
	assert_true(res.first_seq > 1);
	assert_int_equal(res.spends, 3);
	free(text);

	/* With another key, nothing of the export can be verified. */
	{
		struct test_signer other;

		assert_int_equal(test_signer_init(&other, NULL), 0);
		text = export_text(f->db, NULL);
		FILE *m = fmemopen(text, strlen(text), "r");
		assert_int_equal(audit_verify_stream(m, other.key, &res), 0);
		fclose(m);
		assert_int_equal(res.status, VERIFY_UNVERIFIABLE);
		assert_non_null(strstr(res.unverifiable, "not in the key ring"));
		free(text);
		test_signer_done(&other);
	}
}

static void test_csv_export(void **state)
{
	struct fixture *f = *state;
	uint64_t counter = 10;
	char *buf = NULL;
	size_t len = 0;
	int64_t job;
	FILE *m;

	f->db = open_db(f, 0, 0);
	job = make_job(f->db);
	assert_int_equal(chip_cycle(f->db, job, 1, &counter, true), 0);
	assert_int_equal(chip_cycle(f->db, job, 2, &counter, false), 0);
	m = open_memstream(&buf, &len);
	assert_int_equal(db_export_csv(f->db, NULL, m), 0);
	fclose(m);
	assert_non_null(strstr(buf, "job_id,attempt_id,slot,chip_uid,"));
	assert_non_null(strstr(buf, ",\"chip reported authentication failure, \"\"area 2\"\"\","));
	assert_non_null(strstr(buf, ",issued_not_installed,osfi\r\n"));
	assert_non_null(strstr(buf, ",installed,osfi\r\n"));
	assert_non_null(strstr(buf, ",license_state,job_kind\r\n"));
	free(buf);

	/* A text a spreadsheet would run as a formula is written as text. */
	{
		int64_t attempt;

		assert_int_equal(db_attempt_begin(f->db, job, "=HYPERLINK(1)", &attempt), 0);
		assert_int_equal(db_attempt_end(f->db, attempt, DB_RESULT_FAILED, -5, "@SUM(A1)", 0),
				 0);
		buf = NULL;
		m = open_memstream(&buf, &len);
		assert_int_equal(db_export_csv(f->db, NULL, m), 0);
		fclose(m);
		assert_non_null(strstr(buf, ",\"'=HYPERLINK(1)\","));
		assert_non_null(strstr(buf, ",-5,\"'@SUM(A1)\","));
		assert_null(strstr(buf, ",=HYPERLINK"));
		free(buf);
	}
}

/* ---- tampering with an export ---- */

struct lines {
	char **v;
	size_t n;
};

static void lines_split(const char *text, struct lines *ls)
{
	const char *p = text;

	ls->v = NULL;
	ls->n = 0;
	while (*p) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		ls->v = realloc(ls->v, (ls->n + 1) * sizeof(char *));
		ls->v[ls->n++] = strndup(p, len);
		p += len + (e ? 1 : 0);
	}
}

static char *lines_join(const struct lines *ls)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	for (size_t i = 0; i < ls->n; i++)
		if (ls->v[i])
			fprintf(m, "%s\n", ls->v[i]);
	fclose(m);
	return buf;
}

static void lines_free(struct lines *ls)
{
	for (size_t i = 0; i < ls->n; i++)
		free(ls->v[i]);
	free(ls->v);
}

/* Index of the line holding record seq (line 0 is the metadata). */
static size_t line_of(const struct lines *ls, uint64_t seq)
{
	char key[40];

	/* The line's own seq follows prev_hash's closing quote; the content's follows "}". */
	snprintf(key, sizeof(key), "\",\"seq\":%llu,", (unsigned long long)seq);
	for (size_t i = 1; i < ls->n; i++)
		if (ls->v[i] && strstr(ls->v[i], key))
			return i;
	fail_msg("no record %llu", (unsigned long long)seq);
	return 0;
}

static uint64_t first_of_type(const struct lines *ls, const char *type, uint64_t after)
{
	char key[64];

	snprintf(key, sizeof(key), "\"type\":\"%s\"}", type);
	for (size_t i = 1; i < ls->n; i++) {
		unsigned long long seq;
		const char *s;

		if (!strstr(ls->v[i], key) || !(s = strstr(ls->v[i], ",\"seq\":")) ||
		    sscanf(s, ",\"seq\":%llu", &seq) != 1 || seq <= after)
			continue;
		return seq;
	}
	fail_msg("no %s record", type);
	return 0;
}

static void expect_bad(struct fixture *f, const struct lines *ls, uint64_t seq, const char *what)
{
	struct verify_result res;
	char *text = lines_join(ls);

	verify_text(f, text, &res);
	free(text);
	if (res.status != VERIFY_BAD || res.bad_seq != seq)
		fail_msg("%s: expected bad record %llu, got status %d record %llu (%s)", what,
			 (unsigned long long)seq, res.status, (unsigned long long)res.bad_seq,
			 res.message);
}

/* Rewrites the export from line `from` on with recomputed hashes (an attacker who knows
 * the format), signing checkpoints with the attacker's key. */
static void rechain(struct lines *ls, size_t from, struct test_signer *attacker)
{
	uint8_t prev[AUDIT_HASH_SIZE];
	struct audit_line l;
	char err[256];

	assert_int_equal(audit_line_parse(ls->v[from], strlen(ls->v[from]), &l, err,
					  sizeof(err)), 0);
	memcpy(prev, l.prev_hash, sizeof(prev));
	audit_line_clear(&l);
	for (size_t i = from; i < ls->n; i++) {
		uint8_t hash[AUDIT_HASH_SIZE], sig[AUDIT_SIG_SIZE], digest[32];
		char ph[65], hh[65], sh[129], *canon;
		struct json_object *data;
		unsigned int dn;
		size_t cl;

		assert_int_equal(audit_line_parse(ls->v[i], strlen(ls->v[i]), &l, err, sizeof(err)),
				 0);
		if (l.kind == AUDIT_LINE_END) {
			/* The signed end stays: only the records are rewritten. */
			audit_line_clear(&l);
			break;
		}
		json_object_object_get_ex(l.content, "data", &data);
		audit_hex_encode(prev, 32, ph);
		if (strcmp(l.type, "checkpoint") == 0)
			json_object_object_add(data, "covers_hash", json_object_new_string(ph));
		assert_int_equal(audit_canon_encode(l.content, &canon, &cl), 0);
		assert_int_equal(audit_hash_record(prev, canon, cl, hash), 0);
		audit_hex_encode(hash, 32, hh);
		free(ls->v[i]);
		if (strcmp(l.type, "checkpoint") == 0) {
			EVP_Digest(canon, cl, digest, &dn, EVP_sha256(), NULL);
			assert_int_equal(attacker->signer.sign(attacker, digest, sig), 0);
			audit_hex_encode(sig, 64, sh);
			assert_true(asprintf(&ls->v[i], "{\"content\":%s,\"hash\":\"%s\",\"prev_hash\":"
					     "\"%s\",\"seq\":%llu,\"signature\":\"%s\",\"time\":%lld,"
					     "\"type\":\"%s\"}", canon, hh, ph,
					     (unsigned long long)l.seq, sh, (long long)l.time_ms,
					     l.type) > 0);
		} else {
			assert_true(asprintf(&ls->v[i], "{\"content\":%s,\"hash\":\"%s\",\"prev_hash\":"
					     "\"%s\",\"seq\":%llu,\"time\":%lld,\"type\":\"%s\"}",
					     canon, hh, ph, (unsigned long long)l.seq,
					     (long long)l.time_ms, l.type) > 0);
		}
		memcpy(prev, hash, 32);
		free(canon);
		audit_line_clear(&l);
	}
}

static void replace_in(char **line, const char *from, const char *to)
{
	char *p = strstr(*line, from), *n;

	assert_non_null(p);
	assert_true(asprintf(&n, "%.*s%s%s", (int)(p - *line), *line, to, p + strlen(from)) > 0);
	free(*line);
	*line = n;
}

static void test_tampering(void **state)
{
	struct fixture *f = *state;
	struct test_signer attacker;
	uint64_t counter = 500, seq, cp;
	struct lines ls;
	int64_t job;
	char *text, *tmp;

	f->db = open_db(f, 12, 0);
	job = make_job(f->db);
	for (unsigned i = 1; i <= 8; i++)
		assert_int_equal(chip_cycle(f->db, job, i, &counter, i != 4), 0);
	assert_int_equal(db_job_end(f->db, job), 0);
	text = export_text(f->db, NULL);

	/* A changed field: one license's counter. */
	lines_split(text, &ls);
	seq = first_of_type(&ls, "license.issue", 20);
	replace_in(&ls.v[line_of(&ls, seq)], "\"counter_after\":", "\"counter_after\":1");
	expect_bad(f, &ls, seq, "changed field");
	lines_free(&ls);

	/* A deleted record. */
	lines_split(text, &ls);
	seq = first_of_type(&ls, "license.not_installed", 0);
	tmp = ls.v[line_of(&ls, seq)];
	ls.v[line_of(&ls, seq)] = NULL;
	free(tmp);
	expect_bad(f, &ls, seq, "deleted record");
	lines_free(&ls);

	/* Two records swapped. */
	lines_split(text, &ls);
	seq = first_of_type(&ls, "attempt.end", 30);
	{
		size_t a = line_of(&ls, seq), b = line_of(&ls, seq + 1);

		tmp = ls.v[a];
		ls.v[a] = ls.v[b];
		ls.v[b] = tmp;
	}
	expect_bad(f, &ls, seq, "swapped records");
	lines_free(&ls);

	/* A rewritten history with forged checkpoints: the first checkpoint after the change
	 * no longer verifies with the real audit key. */
	assert_int_equal(test_signer_init(&attacker, NULL), 0);
	lines_split(text, &ls);
	seq = first_of_type(&ls, "attempt.end", 0);
	replace_in(&ls.v[line_of(&ls, seq)], "\"result\":\"ok\"", "\"result\":\"failed\"");
	rechain(&ls, line_of(&ls, seq), &attacker);
	cp = first_of_type(&ls, "checkpoint", seq);
	expect_bad(f, &ls, cp, "forged checkpoint");
	lines_free(&ls);

	/* Arithmetic: a license spent twice from the same counter, rehashed and signed with
	 * the real key (what a buggy or dishonest line could produce) is named. */
	lines_split(text, &ls);
	seq = first_of_type(&ls, "license.issue", 40);
	{
		char *line = ls.v[line_of(&ls, seq)], *p = strstr(line, "\"counter_before\":");
		unsigned long long before;

		assert_non_null(p);
		assert_int_equal(sscanf(p, "\"counter_before\":%llu", &before), 1);
		char from[64], to[64];
		snprintf(from, sizeof(from), "\"counter_after\":%llu", before - 1);
		snprintf(to, sizeof(to), "\"counter_after\":%llu", before - 2);
		replace_in(&ls.v[line_of(&ls, seq)], from, to);
	}
	rechain(&ls, line_of(&ls, seq), &f->ts);
	expect_bad(f, &ls, seq, "bad arithmetic");
	lines_free(&ls);

	test_signer_done(&attacker);
	free(text);
}

/* ---- read-side queries ---- */

#define GLOBAL_FILE "/etc/sfid/global-app.lic"
#define ERR_IDENTIFY "identify: no answer from the bootloader"
#define ERR_QUEUE "license: license queue full"
#define ERR_AUTH "chip reported authentication failure, \"area 2\""

static int64_t make_job_with(struct db *db, const char *module_file, const char *global)
{
	struct db_job j = {
		.image_path = "/srv/images/other.sfi",
		.image_id = IMAGE_ID,
		.image_digest = DIGEST,
		.module_file = module_file,
		.target_count = 7,
		.loaded_uid = 1001,
		.loaded_user = "operator",
		.global_license_file = global,
	};
	int64_t id = 0;

	assert_int_equal(db_job_create(db, &j, &id), 0);
	return id;
}

/* One attempt: chip 0 is never identified; error NULL ends it ok, "" leaves it running. */
static int64_t attempt(struct db *db, int64_t job, const char *slot, unsigned chip,
		       const char *step, const char *error, uint64_t bytes)
{
	char uid[DB_CHIP_UID_HEX + 1];
	int64_t id = 0;

	uid_for(chip, uid);
	assert_int_equal(db_attempt_begin(db, job, slot, &id), 0);
	assert_int_equal(db_attempt_step(db, id, step, chip ? uid : NULL, bytes), 0);
	if (error && !error[0])
		return id;
	if (error)
		assert_int_equal(db_attempt_end(db, id, DB_RESULT_FAILED, -5, error, bytes), 0);
	else
		assert_int_equal(db_attempt_end(db, id, DB_RESULT_OK, 0, NULL, bytes), 0);
	return id;
}

/* Two jobs on two slots. ids[1..9] are the attempts in the order they began; attempt 8
 * ends before attempt 7, and attempt 9 is still running. */
static void build_line(struct db *db, int64_t *job_a, int64_t *job_b, int64_t ids[10])
{
	struct db_license *l = NULL;
	char uid[DB_CHIP_UID_HEX + 1];
	uint64_t counter = 100;

	*job_a = make_job(db);
	assert_int_equal(chip_cycle(db, *job_a, 1, &counter, true), 0);
	assert_int_equal(chip_cycle(db, *job_a, 2, &counter, false), 0);
	ids[1] = 1;
	ids[2] = 2;

	/* Chip 2 comes back on slot-2 and re-sends its stored license. */
	uid_for(2, uid);
	assert_int_equal(db_attempt_begin(db, *job_a, "slot-2", &ids[3]), 0);
	assert_int_equal(db_attempt_step(db, ids[3], "identify", uid, 0), 0);
	assert_int_equal(db_ledger_find_reusable(db, uid, IMAGE_ID, 0, &l), 0);
	assert_int_equal(db_ledger_reuse(db, l->id, ids[3]), 0);
	assert_int_equal(db_ledger_installed(db, l->id), 0);
	assert_int_equal(db_attempt_step(db, ids[3], "installing", NULL, 50), 0);
	assert_int_equal(db_attempt_end(db, ids[3], DB_RESULT_OK, 0, NULL, 100), 0);
	l = db_license_free(l);
	ids[4] = attempt(db, *job_a, "slot-2", 0, "identify", ERR_IDENTIFY, 0);

	*job_b = make_job_with(db, "/srv/images/modules.bin", GLOBAL_FILE);
	ids[5] = attempt(db, *job_b, "slot-1", 2, "identify", ERR_IDENTIFY, 0);
	ids[6] = attempt(db, *job_b, "slot-2", 3, "license", ERR_QUEUE, 0);
	assert_int_equal(db_attempt_begin(db, *job_b, "slot-1", &ids[7]), 0);
	assert_int_equal(db_attempt_begin(db, *job_b, "slot-2", &ids[8]), 0);
	uid_for(4, uid);
	assert_int_equal(db_attempt_step(db, ids[7], "installing", uid, 10), 0);
	uid_for(5, uid);
	assert_int_equal(db_attempt_step(db, ids[8], "license", uid, 0), 0);
	assert_int_equal(db_attempt_end(db, ids[8], DB_RESULT_FAILED, -5, ERR_QUEUE, 0), 0);
	usleep(5000);
	assert_int_equal(db_attempt_end(db, ids[7], DB_RESULT_OK, 0, NULL, 500), 0);
	ids[9] = attempt(db, *job_b, "slot-1", 6, "identify", "", 0);
	assert_true(ids[8] == 8 && ids[9] == 9);
}

static void expect_ids(struct db *db, const struct db_history_filter *f, size_t n,
		       const int64_t *want)
{
	struct db_attempt_row *rows = NULL;
	size_t got = 99;

	if (db_history(db, f, &rows, &got) < 0)
		fail_msg("db_history: %s", db_last_error(db));
	if (got != n)
		fail_msg("expected %zu attempts, got %zu", n, got);
	for (size_t i = 0; i < n; i++)
		if (rows[i].id != want[i])
			fail_msg("row %zu: expected attempt %lld, got %lld", i, (long long)want[i],
				 (long long)rows[i].id);
	free(rows);
}

#define EXPECT_IDS(db, f, ...)                                                             \
	do {                                                                               \
		const int64_t want_[] = { __VA_ARGS__ };                                   \
		expect_ids(db, f, sizeof(want_) / sizeof(want_[0]), want_);                \
	} while (0)

static void test_query_history(void **state)
{
	struct fixture *f = *state;
	struct db_history_filter q = { 0 };
	struct db_attempt_row *rows = NULL;
	char uid[DB_CHIP_UID_HEX + 1];
	int64_t job_a, job_b, id[10];
	int total;
	size_t n;

	f->db = open_db(f, 0, 0);
	build_line(f->db, &job_a, &job_b, id);
	total = sqlite3_total_changes(f->db->h);

	/* Newest first by end time: 7 ended after 8 although it began first. */
	EXPECT_IDS(f->db, NULL, 7, 8, 6, 5, 4, 3, 2, 1);
	q.include_running = true;
	EXPECT_IDS(f->db, &q, 9, 7, 8, 6, 5, 4, 3, 2, 1);
	q = (struct db_history_filter){ .only_failed = true };
	EXPECT_IDS(f->db, &q, 8, 6, 5, 4, 2);
	q = (struct db_history_filter){ .slot = "slot-2" };
	EXPECT_IDS(f->db, &q, 8, 6, 4, 3);
	q = (struct db_history_filter){ .job_id = job_a };
	EXPECT_IDS(f->db, &q, 4, 3, 2, 1);
	q = (struct db_history_filter){ .job_id = job_b, .only_failed = true };
	EXPECT_IDS(f->db, &q, 8, 6, 5);
	q = (struct db_history_filter){ .job_id = job_b, .slot = "slot-1",
					.include_running = true };
	EXPECT_IDS(f->db, &q, 9, 7, 5);
	q = (struct db_history_filter){ .limit = 3 };
	EXPECT_IDS(f->db, &q, 7, 8, 6);
	q = (struct db_history_filter){ .slot = "slot-9" };
	assert_int_equal(db_history(f->db, &q, &rows, &n), 0);
	assert_int_equal(n, 0);
	free(rows);

	/* One chip over both jobs, with every field of its rows. */
	uid_for(2, uid);
	q = (struct db_history_filter){ .chip_uid = uid };
	EXPECT_IDS(f->db, &q, 5, 3, 2);
	assert_int_equal(db_history(f->db, &q, &rows, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(rows[0].job_id, job_b);
	assert_string_equal(rows[0].step, "identify");
	assert_string_equal(rows[0].error_text, ERR_IDENTIFY);
	assert_false(rows[0].license_reused);
	assert_int_equal(rows[1].job_id, job_a);
	assert_string_equal(rows[1].slot, "slot-2");
	assert_string_equal(rows[1].chip_uid, uid);
	assert_int_equal(rows[1].result, DB_ATTEMPT_OK);
	assert_string_equal(rows[1].step, "installing");
	assert_string_equal(rows[1].error_text, "");
	assert_int_equal(rows[1].bytes_sent, 100);
	assert_true(rows[1].license_reused);
	assert_string_equal(rows[2].slot, "slot-1");
	assert_int_equal(rows[2].result, DB_ATTEMPT_FAILED);
	assert_int_equal(rows[2].error_code, -74);
	assert_string_equal(rows[2].error_text, ERR_AUTH);
	assert_string_equal(rows[2].step, "installing");
	assert_int_equal(rows[2].bytes_sent, 4096);
	assert_false(rows[2].license_reused); /* it spent the license, it did not reuse one */
	for (size_t i = 0; i < n; i++)
		assert_true(rows[i].started_ms > 0 && rows[i].ended_ms >= rows[i].started_ms);
	free(rows);

	/* An attempt without a chip, and the running one. */
	q = (struct db_history_filter){ .include_running = true, .limit = 10 };
	assert_int_equal(db_history(f->db, &q, &rows, &n), 0);
	assert_int_equal(n, 9);
	assert_int_equal(rows[0].result, DB_ATTEMPT_RUNNING);
	assert_int_equal(rows[0].ended_ms, 0);
	assert_string_equal(rows[0].step, "identify");
	assert_string_equal(rows[5].chip_uid, ""); /* attempt 4 */
	assert_int_equal(rows[5].id, 4);
	assert_string_equal(db_attempt_result_to_string(rows[0].result), "running");
	free(rows);

	q = (struct db_history_filter){ .chip_uid = "00000000000000000000000A" };
	rows = NULL;
	assert_int_equal(db_history(f->db, &q, &rows, &n), -EINVAL);
	assert_non_null(strstr(db_last_error(f->db), "lowercase hex"));
	assert_null(rows);

	/* Nothing was written by reading. */
	assert_int_equal(sqlite3_total_changes(f->db->h), total);
}

/* The default and the ceiling of the history length, over more attempts than both. */
static void test_query_history_limit(void **state)
{
	struct fixture *f = *state;
	struct db_history_filter q = { 0 };
	struct db_attempt_row *rows = NULL;
	sqlite3_stmt *st;
	int64_t job;
	size_t n;

	f->db = open_db(f, 0, 0);
	job = make_job(f->db);
	assert_int_equal(sqlite3_exec(f->db->h, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(f->db->h,
					    "INSERT INTO attempts (job_id, slot, step, result, "
					    "started_at, ended_at) VALUES (?, 'slot-1', 'done', 'ok', "
					    "?, ?)", -1, &st, NULL), SQLITE_OK);
	for (int i = 0; i < 10050; i++) {
		sqlite3_bind_int64(st, 1, job);
		sqlite3_bind_int64(st, 2, 1000 + i);
		sqlite3_bind_int64(st, 3, 2000 + i);
		assert_int_equal(sqlite3_step(st), SQLITE_DONE);
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_exec(f->db->h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);

	assert_int_equal(db_history(f->db, NULL, &rows, &n), 0);
	assert_int_equal(n, 100);
	assert_int_equal(rows[0].id, 10050);
	assert_int_equal(rows[0].ended_ms, 2000 + 10049);
	assert_int_equal(rows[99].id, 10050 - 99);
	free(rows);
	q.limit = 50000;
	assert_int_equal(db_history(f->db, &q, &rows, &n), 0);
	assert_int_equal(n, 10000);
	assert_int_equal(rows[9999].id, 51);
	free(rows);
}

static void test_query_stats(void **state)
{
	struct fixture *f = *state;
	struct db_attempt_row *rows = NULL;
	struct db_history_filter q = { 0 };
	struct db_stats *s = NULL;
	int64_t job_a, job_b, id[10], dur[2] = { 0, 0 };
	uint64_t records, cp, records2;
	size_t n;

	f->db = open_db(f, 0, 0);
	build_line(f->db, &job_a, &job_b, id);
	assert_int_equal(db_audit_stats(f->db, &records, &cp), 0);

	assert_int_equal(db_stats(f->db, 0, &s), 0);
	assert_int_equal(s->ok, 3);
	assert_int_equal(s->failed, 5);
	assert_int_equal(s->bytes, 8192 + 4096 + 100 + 500);
	assert_int_equal(s->n_slots, 2);
	assert_string_equal(s->slots[0].slot, "slot-1");
	assert_int_equal(s->slots[0].ok, 2);
	assert_int_equal(s->slots[0].failed, 2);
	assert_int_equal(s->slots[0].bytes, 8192 + 4096 + 500);
	assert_string_equal(s->slots[1].slot, "slot-2");
	assert_int_equal(s->slots[1].ok, 1);
	assert_int_equal(s->slots[1].failed, 3);
	assert_int_equal(s->slots[1].bytes, 100);

	/* Durations are the ended attempts' (end - start), per slot. */
	q.limit = 100;
	assert_int_equal(db_history(f->db, &q, &rows, &n), 0);
	for (size_t i = 0; i < n; i++)
		dur[strcmp(rows[i].slot, "slot-1") != 0] += rows[i].ended_ms - rows[i].started_ms;
	free(rows);
	assert_int_equal(s->slots[0].duration_ms, dur[0]);
	assert_int_equal(s->slots[1].duration_ms, dur[1]);
	assert_int_equal(s->duration_ms, dur[0] + dur[1]);
	assert_true(s->slots[0].duration_ms >= 5); /* attempt 7 outlived attempt 8 by 5 ms */

	/* Failures by step and cause, most frequent first; ties by step. */
	assert_int_equal(s->n_failures, 3);
	assert_string_equal(s->failures[0].step, "identify");
	assert_string_equal(s->failures[0].error_text, ERR_IDENTIFY);
	assert_string_equal(s->failures[0].cause, "no answer from the bootloader");
	assert_int_equal(s->failures[0].count, 2);
	assert_string_equal(s->failures[1].step, "license");
	assert_string_equal(s->failures[1].cause, "license queue full");
	assert_int_equal(s->failures[1].count, 2);
	assert_string_equal(s->failures[2].step, "installing");
	assert_string_equal(s->failures[2].error_text, ERR_AUTH);
	assert_string_equal(s->failures[2].cause, ERR_AUTH); /* no "<step>: " prefix */
	assert_int_equal(s->failures[2].count, 1);
	s = db_stats_free(s);

	/* One job. */
	assert_int_equal(db_stats(f->db, job_a, &s), 0);
	assert_int_equal(s->ok, 2);
	assert_int_equal(s->failed, 2);
	assert_int_equal(s->n_slots, 2);
	assert_int_equal(s->slots[0].bytes, 8192 + 4096);
	assert_int_equal(s->slots[1].ok, 1);
	assert_int_equal(s->slots[1].failed, 1);
	assert_int_equal(s->n_failures, 2);
	assert_string_equal(s->failures[0].step, "identify");
	assert_string_equal(s->failures[1].step, "installing");
	s = db_stats_free(s);
	assert_int_equal(db_stats(f->db, job_b, &s), 0);
	assert_int_equal(s->ok, 1);
	assert_int_equal(s->failed, 3);
	assert_int_equal(s->n_failures, 2);
	assert_string_equal(s->failures[0].step, "license");
	assert_int_equal(s->failures[0].count, 2);
	s = db_stats_free(s);

	/* A job without attempts. */
	assert_int_equal(db_stats(f->db, 999, &s), 0);
	assert_int_equal(s->ok + s->failed + s->bytes, 0);
	assert_int_equal(s->n_slots, 0);
	assert_int_equal(s->n_failures, 0);
	s = db_stats_free(s);
	assert_null(db_stats_free(NULL));

	assert_int_equal(db_audit_stats(f->db, &records2, &cp), 0);
	assert_int_equal(records2, records);
}

static void test_query_chip_failures(void **state)
{
	struct fixture *f = *state;
	char uid[DB_CHIP_UID_HEX + 1];
	int64_t job_a, job_b, id[10];
	unsigned n = 99;

	f->db = open_db(f, 0, 0);
	build_line(f->db, &job_a, &job_b, id);
	uid_for(2, uid);
	assert_int_equal(db_chip_failures(f->db, uid, &n), 0);
	assert_int_equal(n, 2); /* one per job; its ok retry does not count */
	uid_for(5, uid);
	assert_int_equal(db_chip_failures(f->db, uid, &n), 0);
	assert_int_equal(n, 1);
	uid_for(1, uid);
	assert_int_equal(db_chip_failures(f->db, uid, &n), 0);
	assert_int_equal(n, 0);
	uid_for(6, uid); /* running */
	assert_int_equal(db_chip_failures(f->db, uid, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(db_chip_failures(f->db, "0002", &n), -EINVAL);
	assert_non_null(strstr(db_last_error(f->db), "chip UID"));

	/* It survives a restart, and grows with the next failure. */
	f->db = db_close(f->db);
	f->db = open_db(f, 0, 0);
	uid_for(2, uid);
	assert_int_equal(db_chip_failures(f->db, uid, &n), 0);
	assert_int_equal(n, 2);
	attempt(f->db, job_b, "slot-2", 2, "certificate", "certificate: the chip sent no "
			 "certificate", 0);
	assert_int_equal(db_chip_failures(f->db, uid, &n), 0);
	assert_int_equal(n, 3);
}

static void test_query_job_active(void **state)
{
	struct fixture *f = *state;
	struct verify_result res;
	struct db_job_row j;
	int64_t job_a, job_b, id[10];
	int total;
	char *text;

	f->db = open_db(f, 0, 0);
	memset(&j, 0x5a, sizeof(j));
	assert_int_equal(db_job_active(f->db, &j), -ENOENT);
	assert_non_null(strstr(db_last_error(f->db), "no job is active"));

	build_line(f->db, &job_a, &job_b, id);
	f->db = db_close(f->db);
	f->db = open_db(f, 0, 0);
	total = sqlite3_total_changes(f->db->h);

	/* Both jobs are active: the newer one is restored, with its global license file. */
	assert_int_equal(db_job_active(f->db, &j), 0);
	assert_int_equal(j.id, job_b);
	assert_string_equal(j.image_path, "/srv/images/other.sfi");
	assert_string_equal(j.image_id, IMAGE_ID);
	assert_string_equal(j.image_digest, DIGEST);
	assert_string_equal(j.module_file, "/srv/images/modules.bin");
	assert_string_equal(j.global_license_file, GLOBAL_FILE);
	assert_int_equal(j.target_count, 7);
	assert_int_equal(j.loaded_uid, 1001);
	assert_string_equal(j.loaded_user, "operator");
	assert_true(j.created_ms > 0 && j.created_ms <= db_now_ms());
	assert_int_equal(j.installed, 1);
	assert_int_equal(j.failed, 3); /* the running attempt is neither */
	assert_int_equal(sqlite3_total_changes(f->db->h), total);

	assert_int_equal(db_job_end(f->db, job_b), 0);
	assert_int_equal(db_job_active(f->db, &j), 0);
	assert_int_equal(j.id, job_a);
	assert_string_equal(j.image_path, "/srv/images/app, \"v2\".sfi");
	assert_string_equal(j.module_file, "");
	assert_string_equal(j.global_license_file, "");
	assert_int_equal(j.target_count, 100);
	assert_string_equal(j.loaded_user, "supervisor");
	assert_int_equal(j.installed, 2);
	assert_int_equal(j.failed, 2);
	assert_int_equal(db_job_end(f->db, job_a), 0);
	assert_int_equal(db_job_active(f->db, &j), -ENOENT);

	/* The global license file is in the job's audit record, and only where it is set. */
	text = export_text(f->db, NULL);
	assert_non_null(strstr(text, "\"global_license_file\":\"" GLOBAL_FILE "\""));
	assert_null(strstr(strstr(text, "\"global_license_file\"") + 1,
			   "\"global_license_file\""));
	verify_text(f, text, &res);
	if (res.status != VERIFY_OK)
		fail_msg("verify: %s (%s)", res.message, res.n_warnings ? res.warnings[0] : "");
	free(text);
}

/* A file written by the v1 code path (schema 1 only, with data) upgrades when opened. */
static void test_migration_v1_upgrade(void **state)
{
	struct fixture *f = *state;
	struct db_options o = { .signer = &f->ts.signer };
	struct db_attempt_row *rows = NULL;
	char err[512], uid[DB_CHIP_UID_HEX + 1];
	uint64_t bad = 0;
	struct db_job_row j;
	struct db *db = NULL;
	int64_t job, a1, a2;
	sqlite3_stmt *st;
	unsigned fails;
	sqlite3 *h;
	size_t n;

	assert_int_equal(db_open_with_migrations(f->path, &o, db_migrations, 1, &db, err,
						 sizeof(err)), 0);
	/* v1 had no global license column: the job goes in with v1's columns. */
	assert_int_equal(sqlite3_exec(db->h, "INSERT INTO jobs (image_path, image_id, "
				      "image_digest, target_count, loaded_uid, loaded_user, "
				      "created_at, state) VALUES ('/srv/v1.sfi', '" IMAGE_ID "', '"
				      DIGEST "', 5, 0, 'root', 1700000000000, 'active')",
				      NULL, NULL, NULL), SQLITE_OK);
	job = sqlite3_last_insert_rowid(db->h);
	uid_for(42, uid);
	a1 = attempt(db, job, "slot-1", 42, "installing", NULL, 1234);
	a2 = attempt(db, job, "slot-1", 42, "identify", ERR_IDENTIFY, 0);
	db = db_close(db);

	assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 1);
	sqlite3_finalize(st);
	sqlite3_close(h);

	f->db = open_db(f, 0, 0);
	assert_int_equal(db_schema_version(), 9);
	assert_int_equal(sqlite3_prepare_v2(f->db->h, "SELECT (SELECT count(*) FROM "
					    "pragma_table_info('jobs') WHERE name = "
					    "'global_license_file'), (SELECT count(*) FROM sqlite_master "
					    "WHERE name IN ('attempts_ended', 'license_uses_attempt')), "
					    "(SELECT user_version FROM pragma_user_version)",
					    -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 1);
	assert_int_equal(sqlite3_column_int(st, 1), 2);
	assert_int_equal(sqlite3_column_int(st, 2), db_schema_version());
	sqlite3_finalize(st);

	/* The old rows read back through the queries; the chain written by v1 holds. */
	assert_int_equal(db_job_active(f->db, &j), 0);
	assert_int_equal(j.id, job);
	assert_string_equal(j.image_path, "/srv/v1.sfi");
	assert_string_equal(j.global_license_file, "");
	assert_int_equal(j.created_ms, 1700000000000);
	assert_int_equal(j.installed, 1);
	assert_int_equal(j.failed, 1);
	assert_int_equal(db_history(f->db, NULL, &rows, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(rows[0].id, a2);
	assert_int_equal(rows[1].id, a1);
	assert_int_equal(rows[1].bytes_sent, 1234);
	free(rows);
	assert_int_equal(db_chip_failures(f->db, uid, &fails), 0);
	assert_int_equal(fails, 1);
	assert_int_equal(db_audit_verify(f->db, &bad), 0);

	/* And the new column takes a global license job. */
	job = make_job_with(f->db, NULL, GLOBAL_FILE);
	assert_int_equal(db_job_active(f->db, &j), 0);
	assert_int_equal(j.id, job);
	assert_string_equal(j.global_license_file, GLOBAL_FILE);
	assert_string_equal(j.module_file, "");
}

/* Opens path expecting a refusal with code r and a message holding frag; the file's bytes
 * must be the same afterwards. */
static void expect_refused_unchanged(const char *path, int r, const char *frag)
{
	char *before, *after, err[512] = "";
	struct db *db = NULL;
	size_t n1, n2;

	file_bytes(path, &before, &n1);
	assert_int_equal(db_open(path, NULL, &db, err, sizeof(err)), r);
	assert_null(db);
	if (!strstr(err, frag))
		fail_msg("error '%s' lacks '%s'", err, frag);
	file_bytes(path, &after, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	free(before);
	free(after);
}

static int64_t app_id(const char *path)
{
	sqlite3_stmt *st;
	int64_t v;
	sqlite3 *h;

	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA application_id", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(h);
	return v;
}

/* Another application's SQLite files are refused and left as they were; sfid marks its
 * own, including those an older sfid made without the mark. */
static void test_open_foreign(void **state)
{
	static const char *const foreign[] = {
		"CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);",
		"PRAGMA application_id = 42;",
		"PRAGMA user_version = 1; CREATE TABLE jobs (x);",
	};
	struct fixture *f = *state;
	sqlite3 *h;

	for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
		unlink(f->path);
		assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
		assert_int_equal(sqlite3_exec(h, foreign[i], NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(h);
		expect_refused_unchanged(f->path, -EBADMSG, "is not an sfid audit database");
	}
	unlink(f->path);
	f->db = open_db(f, 0, 0);
	make_job(f->db);
	f->db = db_close(f->db);
	assert_int_equal(app_id(f->path), 0x53464944);
	/* As an sfid before the mark left it. */
	assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, "PRAGMA application_id = 0", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	f->db = open_db(f, 0, 0);
	f->db = db_close(f->db);
	assert_int_equal(app_id(f->path), 0x53464944);
}

/* A file with a damaged page is refused before anything is written to it. */
static void test_open_damaged(void **state)
{
	struct fixture *f = *state;
	unsigned char junk[512];
	struct stat st;
	int fd;

	f->db = open_db(f, 0, 0);
	make_job(f->db);
	for (int i = 0; i < 200; i++)
		attempt(f->db, 1, "slot-1", (unsigned)i, "installing", NULL, 1000);
	f->db = db_close(f->db);
	/* The last close folded the WAL into the file. */
	assert_int_equal(stat(f->path, &st), 0);
	assert_true(st.st_size >= 8 * 4096);
	memset(junk, 0xa5, sizeof(junk));
	fd = open(f->path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, junk, sizeof(junk), (off_t)(st.st_size / 4096 / 2) * 4096 + 8),
			 (ssize_t)sizeof(junk));
	close(fd);
	expect_refused_unchanged(f->path, -EBADMSG, "is damaged");
}

/* The database and its WAL and shared-memory files are private whatever the umask. */
static void test_open_private(void **state)
{
	struct fixture *f = *state;
	char wal[160], shm[160];
	struct stat st;
	mode_t old = umask(0);

	f->db = open_db(f, 0, 0);
	umask(old);
	make_job(f->db);
	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	snprintf(shm, sizeof(shm), "%s-shm", f->path);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(wal, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(shm, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
}

/* A directory sfid may not write to is named as the cause. Root writes anywhere, so the
 * open runs as nobody then. */
static void test_open_readonly_dir(void **state)
{
	struct fixture *f = *state;
	char err[512] = "";
	struct db *db = NULL;
	pid_t pid;
	int status, r;

	assert_int_equal(chmod(f->dir, 0555), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (geteuid() == 0 && setuid(65534) < 0)
			_exit(3);
		r = db_open(f->path, NULL, &db, err, sizeof(err));
		if (r >= 0 || !strstr(err, "is not writable by sfid") || !strstr(err, f->dir)) {
			fprintf(stderr, "db_open: %d: %s\n", r, err);
			_exit(1);
		}
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(chmod(f->dir, 0700), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(access(f->path, F_OK), -1);
}

/* A vendor tool's run is kept with its attempt: the log verbatim, its digest in the trail. */
static void test_tool_run(void **state)
{
	struct fixture *f = *state;
	static const char log[] = "Reading chip Certificate finished\nunknown \x01 line\n";
	struct db_tool_run run = {
		.step = "certificate", .command = "STM32_Programmer_CLI -c port=/dev/ttyUSB0 -gc c.bin",
		.exit_status = 0, .outcome = "certificate read", .log = log, .log_len = sizeof(log) - 1,
		.started_ms = 1, .ended_ms = 2,
	};
	sqlite3_stmt *st;
	int64_t job, attempt, id = 0;
	uint64_t bad_seq = 0;

	f->db = open_db(f, 0, 0);
	job = make_job(f->db);
	assert_int_equal(db_attempt_begin(f->db, job, "slot-1", &attempt), 0);
	assert_int_equal(db_tool_run(f->db, &run, &id), -EINVAL);	/* no attempt */
	run.attempt_id = attempt;
	assert_int_equal(db_tool_run(f->db, &run, &id), 0);
	assert_true(id > 0);
	run.log_len = DB_TOOL_LOG_MAX + 1;
	assert_int_equal(db_tool_run(f->db, &run, NULL), -EINVAL);
	assert_int_equal(sqlite3_prepare_v2(f->db->h, "SELECT log, exit_status, step FROM tool_runs "
					    "WHERE attempt_id = ?", -1, &st, NULL), SQLITE_OK);
	sqlite3_bind_int64(st, 1, attempt);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_bytes(st, 0), (int)sizeof(log) - 1);
	assert_memory_equal(sqlite3_column_text(st, 0), log, sizeof(log) - 1);
	assert_int_equal(sqlite3_column_int(st, 1), 0);
	assert_string_equal((const char *)sqlite3_column_text(st, 2), "certificate");
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	assert_int_equal(db_audit_verify(f->db, &bad_seq), 0);
}

/* The content of the audit record with this type whose data has member=value. */
static bool audit_has(struct db *db, const char *type, const char *needle)
{
	sqlite3_stmt *st;
	bool found = false;

	assert_int_equal(sqlite3_prepare_v2(db->h, "SELECT content FROM audit WHERE type = ?", -1,
					    &st, NULL), SQLITE_OK);
	sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW)
		found |= strstr((const char *)sqlite3_column_text(st, 0), needle) != NULL;
	sqlite3_finalize(st);
	return found;
}

/* A list of three values for the serial tests: index i is "0i0i", none past 2. */
static int serial_value(void *arg, int64_t idx, char *hex, size_t size)
{
	(void)arg;
	if (idx > 2)
		return -ENOSPC;
	snprintf(hex, size, "%02x%02x", (unsigned)idx, (unsigned)idx);
	return 0;
}

/* Serials: the next index for a new chip, the same row for a chip that comes back, an
 * intent left open becomes unconfirmed at start, a list that runs out records nothing. */
static void test_serials(void **state)
{
	struct fixture *f = *state;
	static const char *uid[] = { "0123456789abcdef01234567", "0123456789abcdef01234568",
				     "0123456789abcdef01234569", "0123456789abcdef0123456a" };
	char hex[129];
	int64_t job, idx = -1;
	bool again = true;
	uint64_t bad_seq = 0;
	sqlite3_stmt *st;

	f->db = open_db(f, 0, 0);
	job = make_job(f->db);
	assert_int_equal(db_serial_take(f->db, "counter:0", job, uid[0], serial_value, NULL, &idx, hex,
					sizeof(hex), &again), 0);
	assert_int_equal(idx, 0);
	assert_false(again);
	assert_string_equal(hex, "0000");
	assert_int_equal(db_serial_result(f->db, "counter:0", idx, false, "read back 00ff"), 0);
	assert_int_equal(db_serial_result(f->db, "counter:0", idx, true, NULL), -ENOENT);
	assert_int_equal(db_serial_take(f->db, "counter:0", job, uid[1], serial_value, NULL, &idx, hex,
					sizeof(hex), &again), 0);
	assert_int_equal(idx, 1);
	/* The first chip comes back: its own value, its own row. */
	assert_int_equal(db_serial_take(f->db, "counter:0", job, uid[0], serial_value, NULL, &idx, hex,
					sizeof(hex), &again), 0);
	assert_int_equal(idx, 0);
	assert_true(again);
	assert_int_equal(db_serial_result(f->db, "counter:0", 0, true, NULL), 0);
	assert_int_equal(db_serial_take(f->db, "counter:0", job, uid[2], serial_value, NULL, &idx, hex,
					sizeof(hex), &again), 0);
	assert_int_equal(idx, 2);
	assert_string_equal(hex, "0202");
	assert_int_equal(db_serial_take(f->db, "counter:0", job, uid[3], serial_value, NULL, &idx, hex,
					sizeof(hex), &again), -ENOSPC);
	/* Indexes 1 and 2 are open intents: a restart marks them unconfirmed. */
	assert_int_equal(db_serial_resolve(f->db), 2);
	assert_int_equal(db_serial_resolve(f->db), 0);
	assert_int_equal(sqlite3_prepare_v2(f->db->h, "SELECT group_concat(state, ' ') FROM (SELECT "
					    "state FROM serials ORDER BY idx)", -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0),
			    "written unconfirmed unconfirmed");
	sqlite3_finalize(st);
	assert_true(audit_has(f->db, "serial.result", "\"state\":\"unconfirmed\""));
	/* Another job with the same series goes on; another series starts at 0. */
	job = make_job(f->db);
	assert_int_equal(db_serial_take(f->db, "counter:0", job, uid[1], serial_value, NULL, &idx,
					hex, sizeof(hex), &again), 0);
	assert_int_equal(idx, 1);
	assert_true(again);
	assert_int_equal(db_serial_take(f->db, "counter:5", job, uid[1], serial_value, NULL, &idx,
					hex, sizeof(hex), &again), 0);
	assert_int_equal(idx, 0);
	assert_int_equal(db_audit_verify(f->db, &bad_seq), 0);
}


static void test_plain_job(void **state)
{
	struct fixture *f = *state;
	struct db_job j = {
		.image_path = "app.elf, boot.bin@0x08000000",
		.image_id = DIGEST,
		.image_digest = DIGEST,
		.target_count = 3,
		.loaded_uid = 1000,
		.loaded_user = "supervisor",
		.plain = true,
		.firmware = "app.elf\nboot.bin@0x08000000",
		.go = true,
		.go_address = 0x08000000,
	};
	struct db_job_row row;
	int64_t job = 0, attempt = 0;
	uint64_t bad_seq = 0;
	char uid[DB_CHIP_UID_HEX + 1];

	f->db = open_db(f, 0, 0);
	/* A plain job names its firmware; an OSFI job has no Go address. */
	j.firmware = NULL;
	assert_int_equal(db_job_create(f->db, &j, &job), -EINVAL);
	j.firmware = "app.elf\nboot.bin@0x08000000";
	j.plain = false;
	assert_int_equal(db_job_create(f->db, &j, &job), -EINVAL);
	j.plain = true;
	assert_int_equal(db_job_create(f->db, &j, &job), 0);
	assert_true(audit_has(f->db, "job.create", "\"kind\":\"plain\""));
	assert_true(audit_has(f->db, "job.create", "\"go_address\":134217728"));
	uid_for(7, uid);
	assert_int_equal(db_attempt_begin(f->db, job, "slot-1", &attempt), 0);
	assert_true(audit_has(f->db, "attempt.begin", "\"kind\":\"plain\""));
	assert_int_equal(db_attempt_step(f->db, attempt, "writing", uid, 0), 0);
	assert_int_equal(db_attempt_finish(f->db, attempt, DB_RESULT_OK, 0, NULL, 4096, uid), 0);
	assert_true(audit_has(f->db, "attempt.end", "\"image_digest\":\"" DIGEST "\""));
	assert_true(audit_has(f->db, "attempt.end", "\"kind\":\"plain\""));
	assert_int_equal(db_job_active(f->db, &row), 0);
	assert_true(row.plain);
	assert_true(row.go);
	assert_int_equal(row.go_address, 0x08000000);
	assert_string_equal(row.firmware, "app.elf\nboot.bin@0x08000000");
	assert_int_equal(row.installed, 1);
	/* An OSFI job's records carry no kind. */
	assert_int_equal(db_job_end(f->db, job), 0);
	job = make_job(f->db);
	assert_int_equal(db_attempt_begin(f->db, job, "slot-1", &attempt), 0);
	assert_int_equal(db_attempt_end(f->db, attempt, DB_RESULT_FAILED, 1, "identify: x", 0), 0);
	assert_int_equal(db_job_active(f->db, &row), 0);
	assert_false(row.plain);
	assert_false(row.go);
	assert_int_equal(db_audit_verify(f->db, &bad_seq), 0);
}

/* A vendor job: its kind in the row and in the records; a plain job recorded under v6 keeps
 * its kind through v7's migration. */
static void test_vendor_job(void **state)
{
	struct fixture *f = *state;
	struct db_options o = { .signer = &f->ts.signer };
	struct db_job j = {
		.image_path = "/srv/st/app.sfi",
		.image_id = DIGEST,
		.image_digest = DIGEST,
		.loaded_user = "supervisor",
		.plain = true,
		.firmware = "app.elf",
	};
	struct db_job_row row;
	struct db *db = NULL;
	int64_t job = 0, attempt = 0;
	uint64_t bad_seq = 0;
	char err[512], uid[DB_CHIP_UID_HEX + 1];

	assert_int_equal(db_open_with_migrations(f->path, &o, db_migrations, 6, &db, err,
						 sizeof(err)), 0);
	assert_int_equal(db_job_create(db, &j, &job), 0);
	db = db_close(db);
	f->db = open_db(f, 0, 0);
	assert_int_equal(db_job_active(f->db, &row), 0);
	assert_true(row.plain);
	assert_false(row.vendor);
	assert_int_equal(db_job_end(f->db, job), 0);
	/* A job is plain or vendor, not both. */
	j.vendor = true;
	assert_int_equal(db_job_create(f->db, &j, &job), -EINVAL);
	j.plain = false;
	j.firmware = NULL;
	assert_int_equal(db_job_create(f->db, &j, &job), 0);
	assert_true(audit_has(f->db, "job.create", "\"kind\":\"vendor\""));
	uid_for(9, uid);
	assert_int_equal(db_attempt_begin(f->db, job, "slot-1", &attempt), 0);
	assert_true(audit_has(f->db, "attempt.begin", "\"kind\":\"vendor\""));
	assert_int_equal(db_attempt_finish(f->db, attempt, DB_RESULT_OK, 0, NULL, 4096, uid), 0);
	assert_true(audit_has(f->db, "attempt.end", "\"kind\":\"vendor\""));
	assert_int_equal(db_job_active(f->db, &row), 0);
	assert_true(row.vendor);
	assert_false(row.plain);
	assert_int_equal(db_audit_verify(f->db, &bad_seq), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_plain_job, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vendor_job, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_and_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ledger_flow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconcile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconcile_granted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migration_newer_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migration_failure_keeps_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_disk_page_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_disk_fsize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoints_and_export, setup, teardown),
		cmocka_unit_test_setup_teardown(test_csv_export, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampering, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_history, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_history_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_chip_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_job_active, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migration_v1_upgrade, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_foreign, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_damaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serials, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tool_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_private, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_readonly_dir, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Crash safety of the audit database, with a simulated token counter.
 *
 *   db-crash run DIR [ITERATIONS]    the test: starts a writer, SIGKILLs it after 1-20 ms,
 *                                    checks the database, and again, ITERATIONS times
 *   db-crash writer DB KEY TOKEN [N] appends chip records (N chips then job end, or until
 *                                    killed); TOKEN is a file holding the token counter
 *   db-crash export DB OUT.jsonl [KEY [TOKEN]]
 *                                    writes a JSON Lines export, its end signed with KEY,
 *                                    its metadata naming TOKEN's counter
 *
 * After every kill: the database opens, the hash chain verifies, SQLite's integrity check
 * passes, no issued license lacks its record, and reconciling against the token counter
 * finds at most one reserved-but-unconfirmed or void reservation, never an unrecorded or
 * impossible counter. Every 25 kills, and at the end, sfi-audit verifies an export. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "test-signer.h"

#define TOKEN_SERIAL "CRASHTOKEN01"
#define IMAGE_ID "abababababababababababababababababababababababababababababababab"

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "db-crash: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static uint64_t token_read(const char *path)
{
	unsigned long long v = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return 1000000;
	if (fscanf(f, "%llu", &v) != 1)
		die("cannot read token counter %s%s", path, "");
	fclose(f);
	return v;
}

/* The simulated HSM decrement: durable and atomic, like the token's own counter. */
static void token_write(const char *path, uint64_t v)
{
	char tmp[4096];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || dprintf(fd, "%llu\n", (unsigned long long)v) < 0 || fsync(fd) < 0 ||
	    close(fd) < 0 || rename(tmp, path) < 0)
		die("cannot write token counter %s: %s", path, strerror(errno));
}

static void check(int r, struct db *db, const char *what)
{
	if (r < 0)
		die("%s: %s", what, db_last_error(db));
}

static int writer(const char *path, const char *key, const char *token, long chips)
{
	struct test_signer ts;
	struct db_options o = { .checkpoint_records = 10 };
	struct db_job job = {
		.image_path = "/srv/image.sfi", .image_id = IMAGE_ID, .image_digest = IMAGE_ID,
		.target_count = 1000, .loaded_uid = 0, .loaded_user = "root",
	};
	struct db_diff *diffs;
	uint8_t record[160];
	struct db *db;
	char err[512];
	int64_t job_id;
	size_t n;

	if (test_signer_init(&ts, key) < 0)
		die("cannot load %s%s", key, "");
	o.signer = &ts.signer;
	if (db_open(path, &o, &db, err, sizeof(err)) < 0)
		die("open: %s%s", err, "");
	check(db_reconcile(db, TOKEN_SERIAL, token_read(token), &diffs, &n), db, "reconcile");
	free(diffs);
	check(db_job_create(db, &job, &job_id), db, "job");
	for (long i = 0; chips <= 0 || i < chips; i++) {
		char uid[DB_CHIP_UID_HEX + 1];
		struct db_reservation res;
		uint64_t counter = token_read(token);
		int64_t attempt, lic;
		bool ok = i % 7 != 3;

		snprintf(uid, sizeof(uid), "%012x%012lx", (unsigned)getpid(),
			 (unsigned long)i & 0xffffffffffffUL);
		memset(record, (int)i, sizeof(record));
		check(db_attempt_begin(db, job_id, i % 2 ? "slot-2" : "slot-1", &attempt), db,
		      "attempt");
		check(db_attempt_step(db, attempt, "identify", uid, 0), db, "step");
		res = (struct db_reservation){ job_id, attempt, uid, TOKEN_SERIAL, IMAGE_ID, 0,
					       counter };
		check(db_ledger_reserve(db, &res, &lic), db, "reserve");
		token_write(token, counter - 1);
		check(db_ledger_issue(db, lic, counter - 1, record, sizeof(record)), db, "issue");
		check(db_attempt_step(db, attempt, "installing", NULL, 1024), db, "step");
		if (ok) {
			check(db_ledger_installed(db, lic), db, "installed");
			check(db_chip_update(db, uid, "programmed", "closed"), db, "chip");
			check(db_attempt_end(db, attempt, DB_RESULT_OK, 0, NULL, 2048), db, "end");
		} else {
			check(db_ledger_not_installed(db, lic, "flash error"), db, "not installed");
			check(db_chip_update(db, uid, "failed", "open"), db, "chip");
			check(db_attempt_end(db, attempt, DB_RESULT_FAILED, -5, "flash error at "
					     "0x08004000", 1024), db, "end");
		}
	}
	check(db_job_end(db, job_id), db, "job end");
	db_close(db);
	test_signer_done(&ts);
	return 0;
}

/* Exports the whole trail; with key (the audit key, PEM) the end is signed, with token the
 * metadata names the token's counter. */
static int export_to(const char *path, const char *out_path, const char *key, const char *token)
{
	struct db_export_token t = { TOKEN_SERIAL, token ? (int64_t)token_read(token) : -1 };
	struct db_export_info info = { "crash-station", "db-crash", &t, 1 };
	struct db_options o = { 0 };
	struct test_signer ts;
	struct db *db;
	char err[512];
	FILE *out;
	int r;

	if (key) {
		if (test_signer_init(&ts, key) < 0)
			die("cannot read the audit key %s%s", key, "");
		o.signer = &ts.signer;
	}
	if (db_open(path, &o, &db, err, sizeof(err)) < 0)
		die("open: %s%s", err, "");
	out = fopen(out_path, "we");
	if (!out)
		die("cannot create %s: %s", out_path, strerror(errno));
	r = db_export_jsonl_info(db, NULL, &info, out);
	if (fclose(out) != 0 || r < 0)
		die("export: %s%s", db_last_error(db), "");
	db_close(db);
	if (key)
		test_signer_done(&ts);
	return 0;
}

static int sql_int(const char *path, const char *sql, long long *ret)
{
	sqlite3_stmt *st;
	sqlite3 *h;
	int r = -1;

	if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW) {
			*ret = sqlite3_column_int64(st, 0);
			r = 0;
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(h);
	return r;
}

static int run_sfi_audit(const char *export_path, const char *pubkey)
{
	const char *root = getenv("SFID_BUILD_ROOT");
	char exe[4096];
	int status;
	pid_t pid;

	snprintf(exe, sizeof(exe), "%s/tools/sfi-audit/sfi-audit", root ? root : ".");
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		execl(exe, "sfi-audit", "verify", export_path, "--pubkey", pubkey, "--quiet",
		      (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* Checks the database after a kill. Returns the number of settled reservations. */
static unsigned check_after_kill(const char *path, const char *token, unsigned iter)
{
	struct db_diff *diffs = NULL;
	uint64_t bad = 0;
	struct db *db;
	char err[512], sfx[32];
	long long v = -1;
	size_t n = 0;

	snprintf(sfx, sizeof(sfx), "%u", iter);
	if (db_open(path, NULL, &db, err, sizeof(err)) < 0)
		die("after kill %s: the database does not open: %s", sfx, err);
	if (db_audit_verify(db, &bad) < 0)
		die("after kill %s: %s", sfx, db_last_error(db));
	if (db_reconcile(db, TOKEN_SERIAL, token_read(token), &diffs, &n) < 0)
		die("after kill %s: reconcile: %s", sfx, db_last_error(db));
	for (size_t i = 0; i < n; i++)
		if (diffs[i].kind != DB_DIFF_RESERVED_UNCONFIRMED &&
		    diffs[i].kind != DB_DIFF_RESERVATION_VOID)
			die("after kill %s: reconciliation found %s", sfx,
			    db_diff_kind_to_string(diffs[i].kind));
	if (n > 1)
		die("after kill %s: more than one open reservation%s", sfx, "");
	free(diffs);
	if (db_audit_verify(db, &bad) < 0)
		die("after kill %s (after reconcile): %s", sfx, db_last_error(db));
	db_close(db);

	if (sql_int(path, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check != "
			  "'ok'", &v) < 0 || v != 0)
		die("after kill %s: SQLite integrity check failed%s", sfx, "");
	if (sql_int(path, "SELECT count(*) FROM licenses WHERE state IN ('issued', 'installed', "
			  "'issued_not_installed') AND (record IS NULL OR license_digest IS NULL "
			  "OR counter_after IS NULL)", &v) < 0 || v != 0)
		die("after kill %s: an issued license lacks its record%s", sfx, "");
	if (sql_int(path, "PRAGMA user_version", &v) < 0 || v != db_schema_version())
		die("after kill %s: schema version changed%s", sfx, "");
	return (unsigned)n;
}

static int run(const char *dir, unsigned iterations)
{
	char path[4096], key[4096], pub[4096], token[4096], exp[4096], self[4096];
	struct test_signer ts;
	unsigned settled = 0, audits = 0;
	long long records = 0;
	ssize_t len;

	snprintf(path, sizeof(path), "%s/audit.db", dir);
	snprintf(key, sizeof(key), "%s/audit-key.pem", dir);
	snprintf(pub, sizeof(pub), "%s/audit-pub.pem", dir);
	snprintf(token, sizeof(token), "%s/token-counter", dir);
	snprintf(exp, sizeof(exp), "%s/export.jsonl", dir);
	len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len <= 0)
		die("cannot find myself%s%s", "", "");
	self[len] = '\0';
	if (test_signer_init(&ts, NULL) < 0 || test_signer_save(&ts, key, pub) < 0)
		die("cannot create the audit key in %s%s", dir, "");
	test_signer_done(&ts);
	token_write(token, 1000000);
	srand((unsigned)time(NULL) ^ (unsigned)getpid());

	for (unsigned i = 0; i < iterations; i++) {
		struct timespec delay = { 0, (1 + rand() % 20) * 1000000L };
		int status, code;
		pid_t pid = fork();

		if (pid < 0)
			die("fork: %s%s", strerror(errno), "");
		if (pid == 0) {
			execl(self, self, "writer", path, key, token, (char *)NULL);
			_exit(127);
		}
		nanosleep(&delay, NULL);
		kill(pid, SIGKILL);
		if (waitpid(pid, &status, 0) != pid)
			die("waitpid: %s%s", strerror(errno), "");
		if (WIFEXITED(status))
			die("the writer exited by itself (status %s)%s",
			    WEXITSTATUS(status) ? "non-zero" : "zero", "");
		settled += check_after_kill(path, token, i);
		if (i % 25 == 24 || i + 1 == iterations) {
			export_to(path, exp, key, token);
			code = run_sfi_audit(exp, pub);
			if (code != 0 && code != 3)
				die("sfi-audit verify rejected the export after a kill (exit %s)%s",
				    code == 1 ? "1: bad record" : "2 or failure", "");
			audits++;
		}
	}
	sql_int(path, "SELECT count(*) FROM audit", &records);
	printf("%u kills: database opened and verified every time; %u reservations settled by "
	       "reconciliation; %u exports verified by sfi-audit; %lld audit records\n",
	       iterations, settled, audits, records);
	if (records < iterations)
		die("the writer made too little progress%s%s", "", "");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "run") == 0)
		return run(argv[2], argc > 3 ? (unsigned)atoi(argv[3]) : 200);
	if (argc >= 5 && strcmp(argv[1], "writer") == 0)
		return writer(argv[2], argv[3], argv[4], argc > 5 ? atol(argv[5]) : 0);
	if (argc >= 4 && argc <= 6 && strcmp(argv[1], "export") == 0)
		return export_to(argv[2], argv[3], argc > 4 ? argv[4] : NULL,
				 argc > 5 ? argv[5] : NULL);
	fprintf(stderr, "usage: db-crash run DIR [N] | writer DB KEY TOKEN [N] | "
			"export DB OUT [KEY [TOKEN]]\n");
	return 2;
}

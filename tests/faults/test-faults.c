/* Checks the fault-injection libraries themselves, each scenario in its own process (a
 * library reads its configuration once):
 *  - pkcs11-fault over a real SoftHSM2 token: the N-th call of one function fails with the
 *    chosen CK_RV and the calls around it succeed; the N-th call of all fails; a delay
 *    delays and returns the real result; nothing is counted before the arm file exists;
 *    the trace has one line per counted call;
 *  - sqlite-fault (LD_PRELOAD) over a real database file in WAL mode: the N-th write fails
 *    with SQLITE_FULL, a sync with SQLITE_IOERR_FSYNC, a lock of the WAL index with
 *    SQLITE_IOERR_SHMLOCK; what
 *    was committed before is still there when the file is opened again without faults.
 * Usage: test-faults PKCS11_FAULT_MODULE SQLITE_FAULT_LIBRARY */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dlfcn.h>
#define CRYPTOKI_GNU 1
#include <p11-kit/pkcs11.h>
#include <sqlite3.h>

static char dir[] = "/tmp/sfid-faults.XXXXXX";
static const char *p11_module, *sqlite_lib;

#define SOFTHSM "/usr/lib/softhsm/libsofthsm2.so"

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "FAIL: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		die("cannot write %s", path);
}

static unsigned count_lines(const char *path, const char *needle)
{
	char line[512];
	unsigned n = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!needle || strstr(line, needle))
			n++;
	fclose(f);
	return n;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- PKCS#11 ---- */

static struct ck_function_list *p11_load(const char *conf_text)
{
	char conf[256];
	CK_C_GetFunctionList get;
	struct ck_function_list *fl;
	void *dl;

	snprintf(conf, sizeof(conf), "%s/p11.conf", dir);
	write_file(conf, conf_text);
	setenv("SFID_FAULT_PKCS11", conf, 1);
	dl = dlopen(p11_module, RTLD_NOW | RTLD_LOCAL);
	if (!dl)
		die("dlopen %s: %s", p11_module, dlerror());
	get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
	if (!get || get(&fl) != CKR_OK)
		die("no function list");
	return fl;
}

static ck_session_handle_t p11_session(struct ck_function_list *fl)
{
	ck_slot_id_t slots[8];
	unsigned long n = 8;
	ck_session_handle_t h;
	ck_rv_t rv;

	if ((rv = fl->C_Initialize(NULL)) != CKR_OK)
		die("C_Initialize: 0x%lx", rv);
	if ((rv = fl->C_GetSlotList(1, slots, &n)) != CKR_OK || n < 1)
		die("C_GetSlotList: 0x%lx (%lu slots)", rv, n);
	if ((rv = fl->C_OpenSession(slots[0], CKF_SERIAL_SESSION, NULL, NULL, &h)) != CKR_OK)
		die("C_OpenSession: 0x%lx", rv);
	return h;
}

/* The 2nd C_GenerateRandom fails with CKR_DEVICE_ERROR, the 1st and 3rd work. */
static void p11_nth_of_function(void)
{
	char conf[1024], trace[256];
	unsigned char buf[16];
	struct ck_function_list *fl;
	ck_session_handle_t h;
	ck_rv_t rv[3];

	snprintf(trace, sizeof(trace), "%s/p11-a.trace", dir);
	snprintf(conf, sizeof(conf),
		 "# a comment\nmodule = %s\nfunction = C_GenerateRandom\nnth = 2\nrv = 0x30\n"
		 "trace = %s\n", SOFTHSM, trace);
	fl = p11_load(conf);
	h = p11_session(fl);
	for (int i = 0; i < 3; i++)
		rv[i] = fl->C_GenerateRandom(h, buf, sizeof(buf));
	if (rv[0] != CKR_OK || rv[1] != CKR_DEVICE_ERROR || rv[2] != CKR_OK)
		die("C_GenerateRandom x3 gave 0x%lx 0x%lx 0x%lx, expected 0 0x30 0", rv[0], rv[1],
		    rv[2]);
	if (count_lines(trace, NULL) != 3 || count_lines(trace, "2 C_GenerateRandom 0x30 injected") != 1)
		die("trace %s: %u lines", trace, count_lines(trace, NULL));
	fl->C_Finalize(NULL);
}

/* The 3rd wrapped call of any function (the 2nd C_GetSlotList) fails with the chosen rv,
 * and with repeat every later one. */
static void p11_nth_of_all(void)
{
	char conf[1024];
	struct ck_function_list *fl;
	ck_slot_id_t slots[8];
	unsigned long n = 8;
	ck_rv_t rv;

	snprintf(conf, sizeof(conf), "module = %s\nnth = 3\nrepeat = yes\nrv = 0x32\n", SOFTHSM);
	fl = p11_load(conf);
	if ((rv = fl->C_Initialize(NULL)) != CKR_OK)
		die("call 1: 0x%lx", rv);
	if ((rv = fl->C_GetSlotList(1, slots, &n)) != CKR_OK)
		die("call 2: 0x%lx", rv);
	if ((rv = fl->C_GetSlotList(1, slots, &n)) != CKR_DEVICE_REMOVED)
		die("call 3 gave 0x%lx, expected CKR_DEVICE_REMOVED", rv);
	if ((rv = fl->C_GetSlotList(1, slots, &n)) != CKR_DEVICE_REMOVED)
		die("call 4 (repeat) gave 0x%lx", rv);
}

/* A delayed call waits and returns the real result. */
static void p11_delay(void)
{
	char conf[1024];
	unsigned char buf[16];
	struct ck_function_list *fl;
	ck_session_handle_t h;
	double t0;
	ck_rv_t rv;

	snprintf(conf, sizeof(conf), "module = %s\nfunction = C_GenerateRandom\ndelay_ms = 300\n",
		 SOFTHSM);
	fl = p11_load(conf);
	h = p11_session(fl);
	t0 = now_s();
	rv = fl->C_GenerateRandom(h, buf, sizeof(buf));
	if (rv != CKR_OK || now_s() - t0 < 0.29)
		die("delayed C_GenerateRandom: 0x%lx after %.3f s", rv, now_s() - t0);
	fl->C_Finalize(NULL);
}

/* Nothing counts before the arm file exists. */
static void p11_arm(void)
{
	char conf[1024], arm[256];
	unsigned char buf[16];
	struct ck_function_list *fl;
	ck_session_handle_t h;
	ck_rv_t rv;

	snprintf(arm, sizeof(arm), "%s/armed", dir);
	snprintf(conf, sizeof(conf), "module = %s\nnth = 1\nrv = 0x5\narm_file = %s\n", SOFTHSM,
		 arm);
	fl = p11_load(conf);
	h = p11_session(fl);
	if ((rv = fl->C_GenerateRandom(h, buf, sizeof(buf))) != CKR_OK)
		die("before arming: 0x%lx", rv);
	write_file(arm, "");
	if ((rv = fl->C_GenerateRandom(h, buf, sizeof(buf))) != CKR_GENERAL_ERROR)
		die("first call after arming gave 0x%lx, expected CKR_GENERAL_ERROR", rv);
	if ((rv = fl->C_GenerateRandom(h, buf, sizeof(buf))) != CKR_OK)
		die("second call after arming: 0x%lx", rv);
	/* A new arm file restarts the count with its own settings. */
	unlink(arm);
	if ((rv = fl->C_GenerateRandom(h, buf, sizeof(buf))) != CKR_OK)
		die("disarmed: 0x%lx", rv);
	write_file(arm, "nth = 2\nrv = 0x32\n");
	if ((rv = fl->C_GenerateRandom(h, buf, sizeof(buf))) != CKR_OK)
		die("first call after re-arming: 0x%lx", rv);
	if ((rv = fl->C_GenerateRandom(h, buf, sizeof(buf))) != CKR_DEVICE_REMOVED)
		die("second call after re-arming gave 0x%lx, expected CKR_DEVICE_REMOVED", rv);
	unlink(arm);
}

/* ---- SQLite (in a child started with LD_PRELOAD) ---- */

static int exec_sql(sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? rc : sqlite3_extended_errcode(db);
}

/* Commits rows one transaction each until one fails; prints "rows FAILCODE". */
static int sqlite_child(const char *path)
{
	sqlite3 *db;
	int rc, rows = 0;

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK)
		rc = exec_sql(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
				  "CREATE TABLE IF NOT EXISTS t (x INTEGER)");
	for (; rc == SQLITE_OK && rows < 200; rows++) {
		char sql[128];

		snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d)", rows);
		rc = exec_sql(db, sql);
		if (rc != SQLITE_OK)
			break;
	}
	printf("%d %d\n", rows, rc);
	sqlite3_close(db);
	return 0;
}

/* Runs the child with the injector; returns rows committed and the failing code. */
static void sqlite_run(const char *conf_text, const char *db, int *ret_rows, int *ret_rc)
{
	char conf[256], preload[4096], out[256];
	const char *old = getenv("LD_PRELOAD");
	int pipefd[2], status;
	ssize_t n;
	pid_t pid;

	snprintf(conf, sizeof(conf), "%s/sqlite.conf", dir);
	write_file(conf, conf_text);
	snprintf(preload, sizeof(preload), "%s%s%s", old ? old : "", old ? " " : "", sqlite_lib);
	if (pipe(pipefd) < 0)
		die("pipe");
	pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], 1);
		setenv("LD_PRELOAD", preload, 1);
		setenv("SFID_FAULT_SQLITE", conf, 1);
		execl("/proc/self/exe", "test-faults", "--sqlite-child", db, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	n = read(pipefd[0], out, sizeof(out) - 1);
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	if (n <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("sqlite child failed (status 0x%x)", status);
	out[n] = '\0';
	if (sscanf(out, "%d %d", ret_rows, ret_rc) != 2)
		die("sqlite child said '%s'", out);
}

static int rows_in(const char *path)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int n = -1;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
		die("cannot reopen %s", path);
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static void sqlite_case(const char *name, const char *conf_text, int expect_rc, int min_rows)
{
	char conf[1024], db[256], trace[256];
	int rows, rc, back;

	snprintf(db, sizeof(db), "%s/%s.db", dir, name);
	snprintf(trace, sizeof(trace), "%s/%s.trace", dir, name);
	snprintf(conf, sizeof(conf), "%strace = %s\n", conf_text, trace);
	sqlite_run(conf, db, &rows, &rc);
	if (rc != expect_rc || rows < min_rows)
		die("sqlite %s: %d rows then code %d, expected code %d after at least %d rows", name,
		    rows, rc, expect_rc, min_rows);
	if (count_lines(trace, "injected") != 1)
		die("sqlite %s: %u injected lines in the trace", name, count_lines(trace, "injected"));
	back = rows_in(db);
	if (back != rows)
		die("sqlite %s: %d rows committed before the fault, %d found again", name, rows, back);
	printf("sqlite %s: %d rows committed, then code %d; %u operations counted\n", name, rows,
	       rc, count_lines(trace, NULL));
}

static void run(const char *name, void (*fn)(void))
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		fn();
		_exit(0);
	}
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("%s", name);
	printf("pkcs11 %s: ok\n", name);
}

int main(int argc, char **argv)
{
	char cmd[1024], conf[256];

	if (argc == 3 && strcmp(argv[1], "--sqlite-child") == 0)
		return sqlite_child(argv[2]);
	if (argc != 3) {
		fprintf(stderr, "usage: test-faults PKCS11_FAULT_MODULE SQLITE_FAULT_LIBRARY\n");
		return 2;
	}
	p11_module = argv[1];
	sqlite_lib = argv[2];
	if (access(SOFTHSM, R_OK) != 0) {
		printf("SKIP: %s is missing (softhsm2)\n", SOFTHSM);
		return 77;
	}
	if (!mkdtemp(dir))
		die("mkdtemp");
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", dir);
	snprintf(cmd, sizeof(cmd), "directories.tokendir = %s\nobjectstore.backend = file\n"
		 "log.level = ERROR\n", dir);
	write_file(conf, cmd);
	setenv("SOFTHSM2_CONF", conf, 1);
	snprintf(cmd, sizeof(cmd), "softhsm2-util --init-token --free --label faults "
		 "--so-pin 12345678 --pin 87654321 >/dev/null");
	if (system(cmd) != 0)
		die("softhsm2-util --init-token");

	run("2nd C_GenerateRandom fails with CKR_DEVICE_ERROR", p11_nth_of_function);
	run("3rd call of all fails, then every one (repeat)", p11_nth_of_all);
	run("C_GenerateRandom delayed 300 ms", p11_delay);
	run("nothing counted without the arm file; a new one restarts the count", p11_arm);

	sqlite_case("write-full", "op = write\nnth = 12\nerror = full\n",
		    SQLITE_FULL, 1);
	sqlite_case("sync-ioerr", "op = sync\nnth = 20\nfile = sync-ioerr.db\n",
		    SQLITE_IOERR_FSYNC, 1);
	sqlite_case("lock-ioerr", "op = lock\nnth = 30\nfile = lock-ioerr.db\n",
		    SQLITE_IOERR_SHMLOCK, 1);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return 1;
	return 0;
}

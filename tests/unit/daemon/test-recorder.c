/* The recorder (daemon/sfid/recorder.c) on a real SQLite file with its thread and an event
 * loop, no line: a job and an attempt written in the order asked, a barrier that completes
 * once they are on disk (read back through another connection), and a database that fills
 * up, which the recorder tells through its on-full callback (with the database's sentence)
 * instead of reaching for the line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <event2/event.h>

#include "db.h"
#include "log.h"
#include "recorder.h"

#define ID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static char dir[512], path[600];
static struct event_base *base;

static struct {
	unsigned calls;
	char why[512];
} full;

static void on_full(void *user, const char *why)
{
	assert_ptr_equal(user, &full);
	full.calls++;
	snprintf(full.why, sizeof(full.why), "%s", why);
}

struct done {
	bool called;
	int r;
};

static void done_cb(void *arg, int r)
{
	struct done *d = arg;

	d->called = true;
	d->r = r;
	event_base_loopbreak(base);
}

/* Runs the loop until d is called (30 s at most: a failure). */
static void wait_done(struct done *d)
{
	for (int i = 0; i < 3000 && !d->called; i++) {
		struct timeval tick = { .tv_usec = 10000 };

		event_base_loopexit(base, &tick);
		event_base_dispatch(base);
	}
	assert_true(d->called);
}

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	log_set_max(LOG_PRIO_ERR);
	snprintf(dir, sizeof(dir), "%s/sfid-recorder-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sfid.db", dir);
	base = event_base_new();
	assert_non_null(base);
	return 0;
}

static int teardown(void **state)
{
	char cmd[600];

	event_base_free(base);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static struct recorder *open_recorder(uint64_t max_bytes)
{
	struct db_options o = { .max_size_bytes = max_bytes };
	struct recorder_params p = { .base = base, .path = path, .opts = &o, .station = "test",
				     .on_full = on_full, .user = &full };
	struct recorder *r = NULL;
	char reason[256] = "";

	assert_int_equal(recorder_new(&p, &r, reason, sizeof(reason)), 0);
	assert_non_null(r);
	return r;
}

static void test_in_order(void **state)
{
	struct db_job dj = { .image_path = "/line/image.sfi", .loaded_user = "op",
			     .image_id = ID, .image_digest = ID };
	struct done created = { 0 }, synced = { 0 };
	struct recorder *r = open_recorder(0);
	struct db_attempt_row *rows = NULL;
	struct rec_attempt *a;
	struct db *check = NULL;
	char reason[256];
	int64_t job_id = 0;
	size_t n = 0;

	assert_int_equal(rec_job_create(r, &dj, &job_id, done_cb, &created), 0);
	wait_done(&created);
	assert_int_equal(created.r, 0);
	assert_true(job_id > 0);

	/* Queued one after the other, the loop never waits for them. */
	a = rec_attempt_begin(r, job_id, "A", "identifying");
	assert_non_null(a);
	rec_attempt_step(r, a, "installing", "0102030405060708090a0b0c", 100);
	rec_attempt_end(r, a, DB_RESULT_FAILED, DB_FAILURE_TOUCHED, "installing: test", 200);
	assert_int_equal(recorder_sync(r, done_cb, &synced), 0);
	wait_done(&synced);
	assert_int_equal(synced.r, 0);
	assert_true(a->id > 0);
	rec_attempt_unref(a);

	assert_int_equal(db_open(path, &(struct db_options){ 0 }, &check, reason, sizeof(reason)), 0);
	assert_int_equal(db_history(check, &(struct db_history_filter){ .job_id = job_id,
					.limit = 10 }, &rows, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(rows[0].result, DB_ATTEMPT_FAILED);
	assert_string_equal(rows[0].step, "installing");
	assert_int_equal(rows[0].error_code, DB_FAILURE_TOUCHED);
	free(rows);
	db_close(check);
	assert_int_equal(full.calls, 0);
	recorder_free(r);
}

static void test_full(void **state)
{
	struct db_job dj = { .image_path = "/line/image.sfi", .loaded_user = "op",
			     .image_id = ID, .image_digest = ID };
	struct done created = { 0 };
	struct recorder *r;
	char text[3000];
	struct stat st;
	int64_t job_id = 0;

	/* Room for a few pages past what the file holds now. */
	assert_int_equal(stat(path, &st), 0);
	r = open_recorder(((uint64_t)st.st_size / 4096 + 4) * 4096);
	assert_int_equal(rec_job_create(r, &dj, &job_id, done_cb, &created), 0);
	wait_done(&created);
	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	for (int i = 0; i < 200 && !full.calls; i++) {
		struct done synced = { 0 };
		struct rec_attempt *a = rec_attempt_begin(r, job_id > 0 ? job_id : 1, "A",
							   "identifying");

		assert_non_null(a);
		rec_attempt_end(r, a, DB_RESULT_FAILED, DB_FAILURE_TOUCHED, text, 0);
		rec_attempt_unref(a);
		assert_int_equal(recorder_sync(r, done_cb, &synced), 0);
		wait_done(&synced);
	}
	assert_true(full.calls > 0);
	assert_non_null(strstr(full.why, "full"));
	recorder_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_in_order),
		cmocka_unit_test(test_full),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}

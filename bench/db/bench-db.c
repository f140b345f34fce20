/* Audit database benchmark (not a test).
 *   bench-db records DIR N RUNS   N single-record transactions per run; prints records/s
 *                                 of each run and the median
 *   bench-db chips DIR N          records N chips the way the daemon does (for counting
 *                                 fsyncs under strace) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "test-signer.h"

#define IMAGE_ID "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"

static struct db *open_fresh(const char *dir, int run, struct test_signer *ts)
{
	struct db_options o = { .signer = &ts->signer, .checkpoint_records = 256 };
	char path[4096], err[512];
	struct db *db;

	snprintf(path, sizeof(path), "%s/bench-%d.db", dir, run);
	unlink(path);
	if (db_open(path, &o, &db, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-db: %s\n", err);
		exit(1);
	}
	return db;
}

static int64_t job_new(struct db *db)
{
	struct db_job j = { "/srv/image.sfi", IMAGE_ID, IMAGE_ID, NULL, 1000, 0, "bench" };
	int64_t id;

	if (db_job_create(db, &j, &id) < 0)
		exit(1);
	return id;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void chip(struct db *db, int64_t job, unsigned i, uint64_t *counter)
{
	char uid[DB_CHIP_UID_HEX + 1];
	uint8_t record[200] = { 1 };
	struct db_reservation res;
	int64_t a, l;

	snprintf(uid, sizeof(uid), "%024x", i);
	res = (struct db_reservation){ job, 0, uid, "BENCH", IMAGE_ID, 0, *counter };
	if (db_attempt_begin(db, job, "slot-1", &a) < 0 ||
	    db_attempt_step(db, a, "identify", uid, 0) < 0 ||
	    (res.attempt_id = a, db_ledger_reserve(db, &res, &l) < 0) ||
	    db_ledger_issue(db, l, *counter - 1, record, sizeof(record)) < 0 ||
	    db_attempt_step(db, a, "installing", NULL, 0) < 0 ||
	    db_ledger_installed(db, l) < 0 || db_chip_update(db, uid, "programmed", "closed") < 0 ||
	    db_attempt_end(db, a, DB_RESULT_OK, 0, NULL, 65536) < 0) {
		fprintf(stderr, "bench-db: %s\n", db_last_error(db));
		exit(1);
	}
	(*counter)--;
}

int main(int argc, char **argv)
{
	struct test_signer ts;

	if (argc < 4 || test_signer_init(&ts, NULL) < 0) {
		fprintf(stderr, "usage: bench-db records DIR N RUNS | chips DIR N\n");
		return 2;
	}
	if (strcmp(argv[1], "records") == 0 && argc == 5) {
		int n = atoi(argv[3]), runs = atoi(argv[4]);
		double *rate = calloc((size_t)runs, sizeof(double));

		for (int r = 0; r < runs; r++) {
			struct db *db = open_fresh(argv[2], r, &ts);
			int64_t job = job_new(db), a;
			double t0;

			if (db_attempt_begin(db, job, "slot-1", &a) < 0)
				return 1;
			t0 = now_s();
			for (int i = 0; i < n; i++)
				if (db_attempt_step(db, a, "step", NULL, (uint64_t)i) < 0)
					return 1;
			rate[r] = n / (now_s() - t0);
			printf("run %d: %.0f records/s\n", r + 1, rate[r]);
			db_close(db);
		}
		qsort(rate, (size_t)runs, sizeof(double), cmp);
		printf("median: %.0f audit records/s (synchronous=FULL, one record per "
		       "transaction)\n", rate[runs / 2]);
		free(rate);
	} else if (strcmp(argv[1], "chips") == 0) {
		struct db *db = open_fresh(argv[2], 0, &ts);
		int64_t job = job_new(db);
		uint64_t counter = 1000000;
		int n = atoi(argv[3]);

		for (int i = 0; i < n; i++)
			chip(db, job, (unsigned)i, &counter);
		db_close(db);
		printf("recorded %d chips\n", n);
	}
	test_signer_done(&ts);
	return 0;
}

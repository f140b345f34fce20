/* Central shipping figures (bench/central/run.sh drives it):
 *   fill DB N            appends N audit records shaped like a line's (attempt steps, license
 *                        records, chip updates; a signed checkpoint every 256) straight
 *                        into the trail, as an outage would leave them waiting
 *   push DB CONNINFO PWFILE STATION BATCH
 *                        the cursor and central_push() alone, batch after batch: records
 *                        per second into the server
 *   drain DB CONNINFO PWFILE STATION
 *                        sfid's shipper thread, default settings, until the backlog is 0:
 *                        the drain rate
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "audit-cursor.h"
#include "central-config.h"
#include "central.h"
#include "db-internal.h"
#include "shipper.h"
#include "test-signer.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "bench-central: %s: %s\n", what, why);
	exit(1);
}

static struct json_object *rec(const char *type, unsigned chip, unsigned i)
{
	struct json_object *d = json_object_new_object();
	char uid[32];

	snprintf(uid, sizeof(uid), "%024x", chip * 2654435761u);
	if (strncmp(type, "attempt", 7) == 0) {
		db_json_add_int(d, "attempt", chip);
		db_json_add_str(d, "step", i % 2 ? "installing" : "license");
		db_json_add_str(d, "chip_uid", uid);
		db_json_add_int(d, "bytes", 262144);
	} else {
		db_json_add_int(d, "license", chip);
		db_json_add_str(d, "chip_uid", uid);
		db_json_add_str(d, "token", "BENCHTOKEN0001");
		db_json_add_int(d, "target", 0);
		db_json_add_int(d, "counter_before", 100000 - chip);
		db_json_add_int(d, "counter_after", 99999 - chip);
	}
	return d;
}

static int cmd_fill(const char *path, unsigned long n)
{
	static const char *const types[] = { "attempt.begin", "attempt.step", "attempt.step",
		"license.reserve", "license.issue", "attempt.step", "attempt.step",
		"license.installed", "attempt.step", "chip.update", "attempt.end" };
	struct test_signer ts;
	struct db_options o = { 0 };
	struct db *db;
	char err[512];
	double t0;

	if (test_signer_init(&ts, NULL) < 0)
		die("signer", "cannot make a key");
	o.signer = &ts.signer;
	if (db_open(path, &o, &db, err, sizeof(err)) < 0)
		die(path, err);
	t0 = now_s();
	for (unsigned long i = 0; i < n;) {
		if (db_begin(db) < 0)
			die("begin", db_last_error(db));
		for (unsigned k = 0; k < 1000 && i < n; k++, i++)
			if (db_audit_append(db, types[i % 11], rec(types[i % 11], (unsigned)(i / 11),
								   (unsigned)i)) < 0)
				die("append", db_last_error(db));
		if (db_commit(db) < 0)
			die("commit", db_last_error(db));
	}
	printf("filled %lu records in %.1f s\n", n, now_s() - t0);
	db_close(db);
	test_signer_done(&ts);
	return 0;
}

static int cmd_push(const char *path, const char *conninfo, const char *pw, const char *station,
		    unsigned batch)
{
	struct central_conn_options co = { .conninfo = conninfo, .password_file = pw };
	struct db_audit_batch b = { 0 };
	struct db_audit_cursor c;
	struct central_push_result res;
	uint64_t total = 0, bytes = 0;
	const char **lines;
	PGconn *pg;
	char err[1024];
	struct db *db;
	double t0, t;

	if (db_open(path, NULL, &db, err, sizeof(err)) < 0)
		die(path, err);
	if (central_connect(&co, &pg, err, sizeof(err)) < 0)
		die("connect", err);
	lines = calloc(batch, sizeof(*lines));
	db_audit_cursor_init(&c, db, 0, NULL);
	t0 = now_s();
	for (;;) {
		if (db_audit_cursor_next(&c, batch, 64u << 20, &b) < 0)
			die("cursor", db_last_error(db));
		if (b.n == 0)
			break;
		for (size_t i = 0; i < b.n; i++)
			lines[i] = b.records[i].line;
		if (central_push(pg, station, lines, b.n, &res, err, sizeof(err)) < 0)
			die("push", err);
		if (res.refused)
			die("push", res.reason);
		total += res.inserted;
		bytes += b.bytes;
	}
	t = now_s() - t0;
	printf("push, batches of %u: %" PRIu64 " records (%.1f MB) in %.2f s = %.0f records/s\n",
	       batch, total, (double)bytes / 1e6, t, (double)total / t);
	db_audit_batch_clear(&b);
	free(lines);
	PQfinish(pg);
	db_close(db);
	return 0;
}

static int cmd_drain(const char *path, const char *conninfo, const char *pw, const char *station)
{
	struct central_config cfg = { 0 };
	struct shipper *s;
	char err[1024];
	double t0, t;
	uint64_t backlog = 1, first = 0;

	cfg.conninfo = (char *)conninfo;
	cfg.password_file = (char *)pw;
	if (central_config_check(&cfg, err, sizeof(err)) < 0)
		die("config", err);
	t0 = now_s();
	if (shipper_new(&cfg, path, station, &s, err, sizeof(err)) < 0)
		die("shipper", err);
	while (backlog) {
		struct json_object *j = shipper_status_json(s), *v;
		const char *state;

		usleep(20000);
		json_object_object_get_ex(j, "state", &v);
		state = json_object_get_string(v);
		json_object_object_get_ex(j, "backlog", &v);
		backlog = (uint64_t)json_object_get_int64(v);
		json_object_object_get_ex(j, "local_seq", &v);
		if (!first)
			first = (uint64_t)json_object_get_int64(v);
		if (strcmp(state, "refused") == 0 || strcmp(state, "unreachable") == 0)
			die("shipper", json_object_to_json_string(j));
		if (strcmp(state, "idle") != 0)
			backlog = backlog ? backlog : 1;
		json_object_put(j);
	}
	t = now_s() - t0;
	printf("drain by the shipper (batches of %u): %" PRIu64 " records in %.2f s = %.0f "
	       "records/s\n", cfg.batch_records, first, t, (double)first / t);
	shipper_free(s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "fill") == 0)
		return cmd_fill(argv[2], strtoul(argv[3], NULL, 10));
	if (argc == 7 && strcmp(argv[1], "push") == 0)
		return cmd_push(argv[2], argv[3], argv[4], argv[5], (unsigned)atoi(argv[6]));
	if (argc == 6 && strcmp(argv[1], "drain") == 0)
		return cmd_drain(argv[2], argv[3], argv[4], argv[5]);
	fprintf(stderr, "usage: bench-central fill DB N | push DB CONNINFO PWFILE STATION BATCH | "
			"drain DB CONNINFO PWFILE STATION\n");
	return 2;
}

/* Unit tests of the store seam on real SQLite files: the cursor over committed audit records
 * (batches after seq N carry exactly the lines of an export, only committed records, a
 * replaced database is told apart), the acknowledged position a follower keeps, and the
 * connection roles. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "audit-cursor.h"
#include "db-internal.h"
#include "db.h"
#include "test-signer.h"

#define IMAGE_ID "1111111111111111111111111111111111111111111111111111111111111111"
#define DIGEST "2222222222222222222222222222222222222222222222222222222222222222"

struct fixture {
	char dir[64];
	char path[128];
	struct test_signer ts;
	struct db *db;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct db_options o = { 0 };
	char err[512];

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "%s/sfid-cursor-XXXXXX",
		 getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 32 ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/audit.db", f->dir);
	assert_int_equal(test_signer_init(&f->ts, NULL), 0);
	o.signer = &f->ts.signer;
	o.checkpoint_records = 7;
	if (db_open(f->path, &o, &f->db, err, sizeof(err)) < 0)
		fail_msg("db_open: %s", err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[160];

	db_close(f->db);
	test_signer_done(&f->ts);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", f->dir);
	free(f);
	return 0;
}

/* A job and n attempts on it: a few records each. */
static void write_records(struct db *db, unsigned n)
{
	struct db_job j = {
		.image_path = "/srv/image.sfi", .image_id = IMAGE_ID, .image_digest = DIGEST,
		.target_count = 1, .loaded_user = "oem", .station = "line-1",
	};
	int64_t job, a;

	assert_int_equal(db_job_create(db, &j, &job), 0);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(db_attempt_begin(db, job, "slot-1", &a), 0);
		assert_int_equal(db_attempt_end(db, a, DB_RESULT_OK, 0, NULL, 100), 0);
	}
}

/* The record lines of a JSON Lines export of the whole trail (meta and end left out). */
static char **export_lines(struct db *db, size_t *ret_n)
{
	char *buf = NULL, **lines = NULL, *save = NULL;
	size_t len = 0, n = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(db_export_jsonl(db, NULL, f), 0);
	fclose(f);
	for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (strncmp(l, "{\"content\":", 11) != 0)
			continue;
		lines = realloc(lines, (n + 1) * sizeof(*lines));
		assert_non_null(lines);
		lines[n++] = strdup(l);
	}
	free(buf);
	*ret_n = n;
	return lines;
}

static void test_cursor_equals_export(void **state)
{
	struct fixture *f = *state;
	struct db_audit_batch b = { 0 };
	struct db_audit_cursor c;
	uint8_t head_hash[DB_HASH_SIZE];
	uint64_t head, next = 1;
	size_t n_lines, batches = 0;
	char **lines;

	write_records(f->db, 20);
	assert_int_equal(db_checkpoint(f->db), 0);
	assert_int_equal(db_audit_head(f->db, &head, head_hash), 0);
	assert_true(head > 40);
	lines = export_lines(f->db, &n_lines);
	assert_int_equal(n_lines, head);

	db_audit_cursor_init(&c, f->db, 0, NULL);
	for (;;) {
		assert_int_equal(db_audit_cursor_next(&c, 9, 0, &b), 0);
		if (b.n == 0)
			break;
		assert_true(b.n <= 9);
		batches++;
		for (size_t i = 0; i < b.n; i++, next++) {
			assert_int_equal(b.records[i].seq, next);
			assert_int_equal(strlen(b.records[i].line), b.records[i].line_len);
			assert_string_equal(b.records[i].line, lines[next - 1]);
		}
	}
	assert_int_equal(next - 1, head);
	assert_int_equal(batches, (head + 8) / 9);
	assert_int_equal(c.seq, head);
	assert_memory_equal(c.hash, head_hash, DB_HASH_SIZE);

	/* Records written later come out after the head, and only those. */
	write_records(f->db, 1);
	assert_int_equal(db_audit_cursor_next(&c, 0, 0, &b), 0);
	assert_true(b.n >= 2);
	assert_int_equal(b.records[0].seq, head + 1);
	assert_memory_equal(b.records[0].prev_hash, head_hash, DB_HASH_SIZE);
	db_audit_batch_clear(&b);
	assert_int_equal(db_audit_cursor_next(&c, 0, 0, &b), 0);
	assert_int_equal(b.n, 0);
	for (size_t i = 0; i < n_lines; i++)
		free(lines[i]);
	free(lines);
}

static void test_cursor_byte_bound(void **state)
{
	struct fixture *f = *state;
	struct db_audit_batch b = { 0 };
	struct db_audit_cursor c;

	write_records(f->db, 5);
	db_audit_cursor_init(&c, f->db, 0, NULL);
	/* One byte: one record per batch, never none. */
	assert_int_equal(db_audit_cursor_next(&c, 100, 1, &b), 0);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.bytes, b.records[0].line_len);
	assert_int_equal(db_audit_cursor_next(&c, 100, 600, &b), 0);
	assert_true(b.n >= 1);
	assert_true(b.bytes - b.records[b.n - 1].line_len < 600);
	assert_int_equal(b.records[0].seq, 2);
	db_audit_batch_clear(&b);
	db_audit_batch_clear(&b);
}

/* A write transaction still open is not seen by the cursor's connection. */
static void test_cursor_committed_only(void **state)
{
	struct fixture *f = *state;
	struct db_audit_batch b = { 0 };
	struct db_audit_cursor c;
	uint8_t h[DB_HASH_SIZE];
	struct db *reader;
	char err[256];
	uint64_t head;

	write_records(f->db, 2);
	assert_int_equal(db_audit_head(f->db, &head, h), 0);
	assert_int_equal(db_open(f->path, NULL, &reader, err, sizeof(err)), 0);
	db_audit_cursor_init(&c, reader, head, h);
	assert_int_equal(db_begin(f->db), 0);
	assert_int_equal(db_audit_append(f->db, "test.open", json_object_new_object()), 0);
	assert_int_equal(db_audit_cursor_next(&c, 0, 0, &b), 0);
	assert_int_equal(b.n, 0);
	assert_int_equal(db_commit(f->db), 0);
	assert_int_equal(db_audit_cursor_next(&c, 0, 0, &b), 0);
	assert_int_equal(b.n, 1);
	assert_int_equal(b.records[0].seq, head + 1);
	assert_non_null(strstr(b.records[0].line, "\"type\":\"test.open\""));
	db_audit_batch_clear(&b);
	db_close(reader);
}

/* A cursor placed after a record whose hash is not the stored one, or past the head, is
 * refused: the database it followed was replaced. */
static void test_cursor_replaced(void **state)
{
	struct fixture *f = *state;
	struct db_audit_batch b = { 0 };
	struct db_audit_cursor c;
	uint8_t h[DB_HASH_SIZE], other[DB_HASH_SIZE];
	uint64_t head;

	write_records(f->db, 3);
	assert_int_equal(db_audit_head(f->db, &head, h), 0);
	memcpy(other, h, sizeof(other));
	other[0] ^= 1;
	db_audit_cursor_init(&c, f->db, head, other);
	assert_int_equal(db_audit_cursor_next(&c, 0, 0, &b), -ESTALE);
	assert_non_null(strstr(db_last_error(f->db), "replaced"));
	assert_int_equal(c.seq, head);

	db_audit_cursor_init(&c, f->db, head + 5, NULL);
	assert_int_equal(db_audit_cursor_next(&c, 0, 0, &b), -ESTALE);
	assert_non_null(strstr(db_last_error(f->db), "no record"));

	/* Without a known hash the position is trusted; with the right one it continues. */
	db_audit_cursor_init(&c, f->db, head - 1, NULL);
	assert_int_equal(db_audit_cursor_next(&c, 0, 0, &b), 0);
	assert_int_equal(b.n, 1);
	db_audit_cursor_init(&c, f->db, head, h);
	assert_int_equal(db_audit_cursor_next(&c, 0, 0, &b), 0);
	assert_int_equal(b.n, 0);
	db_audit_batch_clear(&b);
}

static void test_shipped_position(void **state)
{
	struct fixture *f = *state;
	uint8_t h[DB_HASH_SIZE], got[DB_HASH_SIZE];
	uint64_t head, seq = 99, before;
	char err[256];

	write_records(f->db, 1);
	assert_int_equal(db_audit_head(f->db, &head, h), 0);
	assert_int_equal(db_shipped_get(f->db, "central", &seq, got), 0);
	assert_int_equal(seq, 0);
	assert_int_equal(db_shipped_set(f->db, "central", head, h), 0);
	assert_int_equal(db_shipped_set(f->db, "other", 1, h), 0);
	/* Not an audit event: the trail does not grow. */
	assert_int_equal(db_audit_head(f->db, &before, got), 0);
	assert_int_equal(before, head);
	/* Durable: another connection reads it back. */
	f->db = db_close(f->db);
	assert_int_equal(db_open(f->path, NULL, &f->db, err, sizeof(err)), 0);
	assert_int_equal(db_shipped_get(f->db, "central", &seq, got), 0);
	assert_int_equal(seq, head);
	assert_memory_equal(got, h, DB_HASH_SIZE);
	assert_int_equal(db_shipped_get(f->db, "other", &seq, got), 0);
	assert_int_equal(seq, 1);
	assert_int_equal(db_audit_verify(f->db, &seq), 0);
}

/* The connection roles: the reader queries and cannot write, the follower keeps its
 * position and signs nothing, the others write as db_open()'s do. */
static void test_roles(void **state)
{
	struct fixture *f = *state;
	struct db_options o = { .signer = &f->ts.signer };
	struct db *reader, *follower, *ledger;
	struct db_job j = {
		.image_path = "/srv/x.sfi", .image_id = IMAGE_ID, .image_digest = DIGEST,
		.target_count = 1, .loaded_user = "oem",
	};
	struct db_stats *st = NULL;
	uint8_t h[DB_HASH_SIZE];
	uint64_t head, seq;
	int64_t job;
	char err[256];

	write_records(f->db, 2);
	assert_int_equal(db_open_role(f->path, DB_ROLE_READER, &o, &reader, err, sizeof(err)), 0);
	assert_int_equal(db_open_role(f->path, DB_ROLE_FOLLOWER, &o, &follower, err,
				      sizeof(err)), 0);
	assert_int_equal(db_open_role(f->path, DB_ROLE_LEDGER, &o, &ledger, err, sizeof(err)), 0);
	assert_int_equal(db_open_role(f->path, _DB_ROLE_MAX, &o, &ledger, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(db_role_to_string(DB_ROLE_FOLLOWER), "follower");
	assert_null(db_role_to_string(_DB_ROLE_MAX));

	assert_int_equal(db_stats(reader, 0, &st), 0);
	assert_int_equal(st->ok, 2);
	db_stats_free(st);
	assert_int_equal(db_audit_head(reader, &head, h), 0);
	assert_int_equal(db_job_create(reader, &j, &job), -EROFS);
	assert_int_equal(db_audit_head(reader, &seq, h), 0);
	assert_int_equal(seq, head);

	assert_int_equal(db_shipped_set(follower, "central", head, h), 0);
	assert_int_equal(db_checkpoint(follower), -ENOKEY);
	assert_int_equal(db_job_create(ledger, &j, &job), 0);
	assert_int_equal(db_checkpoint(ledger), 0);
	db_close(reader);
	db_close(follower);
	db_close(ledger);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cursor_equals_export, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursor_byte_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursor_committed_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cursor_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shipped_position, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roles, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

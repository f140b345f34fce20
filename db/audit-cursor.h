/* The store seam: a cursor over the committed audit records of a database, for a process
 * that follows the trail (the central shipper), and where such a follower keeps how far
 * another store has acknowledged it.
 *
 * A record comes out as the line an export carries for it (db_export_jsonl(): the
 * canonical content as stored, hashes and signature in hex), byte for byte, so a copy made
 * from the cursor verifies with the same checks as an export file.
 *
 * The cursor reads through its own connection (open one with db_open() for the thread
 * that follows the trail); each batch is one read transaction, so it sees only committed
 * records and never waits for a writer (WAL). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

struct db_audit_record {
	uint64_t seq;
	int64_t time_ms;
	uint8_t prev_hash[DB_HASH_SIZE];
	uint8_t hash[DB_HASH_SIZE];
	char *line;      /* the export line, no newline, NUL-terminated */
	size_t line_len;
};

struct db_audit_batch {
	struct db_audit_record *records;
	size_t n;
	size_t bytes; /* sum of line_len */
};

/* Releases the lines and the array; the batch is empty afterwards. Safe on a zeroed one. */
void db_audit_batch_clear(struct db_audit_batch *b);

struct db_audit_cursor {
	struct db *db;
	uint64_t seq;                /* the last record read (or the position set) */
	uint8_t hash[DB_HASH_SIZE];  /* its hash (zero before record 1) */
	bool hash_known;             /* hash holds the hash of seq (always for seq 0) */
};

/* Places the cursor after record seq (0: before the first). hash (may be NULL: not
 * known) is what the follower holds as that record's hash: the next batch then checks the
 * trail still continues it. */
void db_audit_cursor_init(struct db_audit_cursor *c, struct db *db, uint64_t seq,
			  const uint8_t *hash);

/* Reads the committed records after the cursor, in seq order, at most max_records of them
 * (0: 256) and at most max_bytes of lines (0: 1 MiB; at least one record is returned
 * however long), into *ret (cleared first), and moves the cursor past them. An empty batch
 * means the cursor is at the head. Returns 0; -ESTALE when the trail does not continue the
 * record the cursor stands after (its hash differs: the database was replaced) or the
 * trail has fewer records than the cursor's position; -EBADMSG for a damaged record;
 * other -errno; db_last_error() holds a sentence. On error the cursor does not move. */
int db_audit_cursor_next(struct db_audit_cursor *c, size_t max_records, size_t max_bytes,
			 struct db_audit_batch *ret);

/* The seq and hash of the last committed record (0 and zeros for an empty trail). */
int db_audit_head(struct db *db, uint64_t *ret_seq, uint8_t ret_hash[DB_HASH_SIZE]);

/* How far another store (named by target, e.g. "central") has acknowledged this trail:
 * the last seq it holds and that record's hash. Returns 0 with seq 0 and zero hash when
 * nothing is acknowledged yet. */
int db_shipped_get(struct db *db, const char *target, uint64_t *ret_seq,
		   uint8_t ret_hash[DB_HASH_SIZE]);

/* Records, durably, that target holds the trail up to seq (hash: its record's hash). Not
 * an audit event: no record is appended. Returns 0 or -errno. */
int db_shipped_set(struct db *db, const char *target, uint64_t seq,
		   const uint8_t hash[DB_HASH_SIZE]);

/* Canonical encoding of audit records and parsing of JSON Lines exports.
 *
 * Shared by the database (which writes records) and sfi-audit (which checks them offline),
 * so both sides agree byte for byte on what a record's hash covers. Needs only json-c and
 * libcrypto; see docs/database.md, "Canonical encoding", for the exact rules. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

#define AUDIT_HASH_SIZE 32
#define AUDIT_SIG_SIZE 64
/* An export line longer than this is refused rather than parsed. */
#define AUDIT_LINE_MAX (1024 * 1024)

/* Serializes a json-c value canonically into a new NUL-terminated string in *ret_text.
 * Returns 0, -EINVAL if the value holds something the encoding forbids (doubles, invalid
 * UTF-8, nesting deeper than 16), or -ENOMEM. */
int audit_canon_encode(struct json_object *value, char **ret_text, size_t *ret_len);

/* Computes SHA-256(prev ‖ canon) into ret_hash. Returns 0 or -EIO. */
int audit_hash_record(const uint8_t prev[AUDIT_HASH_SIZE], const char *canon, size_t canon_len,
		      uint8_t ret_hash[AUDIT_HASH_SIZE]);

/* Writes 2*len lowercase hex digits and a NUL into out (size >= 2*len+1). */
void audit_hex_encode(const uint8_t *data, size_t len, char *out);

/* Decodes exactly len bytes from a string of exactly 2*len hex digits. Returns 0 or -EINVAL. */
int audit_hex_decode(const char *hex, uint8_t *out, size_t len);

/* Returns true if s is exactly len lowercase hex digits. */
bool audit_is_hex(const char *s, size_t len);

enum audit_line_kind {
	AUDIT_LINE_META,   /* first line: export metadata */
	AUDIT_LINE_RECORD, /* one audit record */
	AUDIT_LINE_END,    /* format 2, last line: the signed end of the export */
	_AUDIT_LINE_KIND_MAX,
};

/* The export format this build writes. Format 1 (no end line) is still read. */
#define AUDIT_EXPORT_FORMAT 2
#define AUDIT_TOKENS_MAX 32

/* A token as the metadata of a format 2 export names it: its counter when the export was
 * written (-1: it could not be read). */
struct audit_meta_token {
	char serial[72];
	int64_t counter;
};

/* One parsed export line. Strings and the content object belong to the struct and are
 * released by audit_line_clear(). */
struct audit_line {
	enum audit_line_kind kind;

	/* AUDIT_LINE_META */
	int format;                /* export format version, 1 */
	uint64_t first_seq;        /* seq of the first record that follows (0: none) */
	uint64_t last_seq;         /* seq of the last record that follows */
	uint8_t anchor[AUDIT_HASH_SIZE]; /* prev_hash of the first record */
	char *station;             /* format 2: station name and sfid version ("" if unknown) */
	char *version;
	int64_t created_ms;
	int64_t range_from, range_job, range_to; /* the range asked for (0: open) */
	struct audit_meta_token tokens[AUDIT_TOKENS_MAX]; /* format 2 */
	size_t n_tokens;

	/* AUDIT_LINE_END (also uses first_seq, last_seq, has_signature, signature, canon) */
	uint64_t records;                  /* records between the metadata and the end */
	uint8_t digest[AUDIT_HASH_SIZE];   /* SHA-256 of every byte before the end line */
	uint8_t last_hash[AUDIT_HASH_SIZE]; /* hash of the last record (the anchor if none) */
	bool has_key_id;
	uint8_t key_id[AUDIT_HASH_SIZE];   /* the key that signed the end */

	/* AUDIT_LINE_RECORD */
	uint64_t seq;
	int64_t time_ms;
	char *type;
	uint8_t prev_hash[AUDIT_HASH_SIZE];
	uint8_t hash[AUDIT_HASH_SIZE];
	bool has_signature;
	uint8_t signature[AUDIT_SIG_SIZE];
	struct json_object *content; /* the whole record content: data, seq, time, type */
	char *canon;                 /* canonical encoding of content (the end: of "end") */
	size_t canon_len;
};

/* Parses one export line (without its newline). The line must be exactly its canonical
 * encoding (so a duplicate key, a reordered key or another spelling of a value is refused)
 * and hold only the members its kind defines. Checks that the content's seq/time/type
 * match the line's; does not check hashes or signatures. Returns 0 and fills *ret_line, or
 * -EINVAL with a reason in errbuf. */
int audit_line_parse(const char *text, size_t len, struct audit_line *ret_line, char *errbuf,
		     size_t errlen);

/* Releases what audit_line_parse() allocated; safe on a zeroed struct. */
void audit_line_clear(struct audit_line *line);

/* SHA-256 of data into ret. Returns 0 or -EIO. */
int audit_sha256(const void *data, size_t len, uint8_t ret[AUDIT_HASH_SIZE]);

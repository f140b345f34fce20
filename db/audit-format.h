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
	_AUDIT_LINE_KIND_MAX,
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

	/* AUDIT_LINE_RECORD */
	uint64_t seq;
	int64_t time_ms;
	char *type;
	uint8_t prev_hash[AUDIT_HASH_SIZE];
	uint8_t hash[AUDIT_HASH_SIZE];
	bool has_signature;
	uint8_t signature[AUDIT_SIG_SIZE];
	struct json_object *content; /* the whole record content: data, seq, time, type */
	char *canon;                 /* canonical encoding of content */
	size_t canon_len;
};

/* Parses one export line (without its newline). Checks the shape of the line and that the
 * content's seq/time/type match the line's; does not check hashes or signatures. Returns 0
 * and fills *ret_line, or -EINVAL with a reason in errbuf. */
int audit_line_parse(const char *text, size_t len, struct audit_line *ret_line, char *errbuf,
		     size_t errlen);

/* Releases what audit_line_parse() allocated; safe on a zeroed struct. */
void audit_line_clear(struct audit_line *line);

/* Reads a JSON Lines export one bounded line at a time. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "audit-format.h"

struct export_reader {
	FILE *in;
	char *buf;
	size_t cap;
	size_t line_no; /* 1-based number of the last line read */
	EVP_MD_CTX *md; /* SHA-256 of every byte read so far */
	/* SHA-256 of every byte before the last line returned (what an end line names) */
	uint8_t digest_before[AUDIT_HASH_SIZE];
	bool md_failed;
};

/* Reads and parses the next non-empty line. Returns 1 with *ret_line filled (clear it with
 * audit_line_clear()), 0 at the end, -EINVAL on a malformed or overlong line (reason in
 * reason), or -errno on a read error. */
int export_reader_next(struct export_reader *rd, struct audit_line *ret_line, char *reason,
		       size_t reason_size);

/* Releases the reader's buffer and hash (not the stream). */
void export_reader_free(struct export_reader *rd);

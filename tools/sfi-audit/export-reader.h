/* Reads a JSON Lines export one bounded line at a time. */
#pragma once

#include <stddef.h>
#include <stdio.h>

#include "audit-format.h"

struct export_reader {
	FILE *in;
	char *buf;
	size_t cap;
	size_t line_no; /* 1-based number of the last line read */
};

/* Reads and parses the next non-empty line. Returns 1 with *ret_line filled (clear it with
 * audit_line_clear()), 0 at the end, -EINVAL on a malformed or overlong line (reason in
 * errbuf), or -errno on a read error. */
int export_reader_next(struct export_reader *rd, struct audit_line *ret_line, char *errbuf,
		       size_t errlen);

/* Releases the reader's buffer (not the stream). */
void export_reader_free(struct export_reader *rd);

/* Bounded line reader for exports: a line longer than AUDIT_LINE_MAX is refused without
 * being buffered whole. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "export-reader.h"

/* Reads one line without its newline into rd->buf. Returns its length, -1 at the end,
 * -EINVAL if too long, -errno on error. */
static long read_line(struct export_reader *rd)
{
	size_t len = 0;
	int c;

	for (;;) {
		c = getc(rd->in);
		if (c == EOF) {
			if (ferror(rd->in))
				return -EIO;
			if (len == 0)
				return -1;
			break;
		}
		if (c == '\n')
			break;
		if (len >= AUDIT_LINE_MAX)
			return -EINVAL;
		if (len + 2 > rd->cap) {
			size_t cap = rd->cap ? rd->cap * 2 : 4096;
			char *p = realloc(rd->buf, cap);

			if (!p)
				return -ENOMEM;
			rd->buf = p;
			rd->cap = cap;
		}
		rd->buf[len++] = (char)c;
	}
	if (!rd->buf) {
		rd->buf = malloc(1);
		if (!rd->buf)
			return -ENOMEM;
		rd->cap = 1;
	}
	rd->buf[len] = '\0';
	return (long)len;
}

int export_reader_next(struct export_reader *rd, struct audit_line *ret_line, char *errbuf,
		       size_t errlen)
{
	long n;
	int r;

	for (;;) {
		n = read_line(rd);
		rd->line_no++;
		if (n == -1)
			return 0;
		if (n == -EINVAL) {
			snprintf(errbuf, errlen, "line longer than %d bytes", AUDIT_LINE_MAX);
			return -EINVAL;
		}
		if (n < 0)
			return (int)n;
		if (n > 0 && rd->buf[n - 1] == '\r')
			rd->buf[--n] = '\0';
		if (n > 0)
			break;
	}
	r = audit_line_parse(rd->buf, (size_t)n, ret_line, errbuf, errlen);
	return r < 0 ? r : 1;
}

void export_reader_free(struct export_reader *rd)
{
	free(rd->buf);
	rd->buf = NULL;
	rd->cap = 0;
}

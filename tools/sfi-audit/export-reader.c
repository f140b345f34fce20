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
	if (!rd->md_failed && (!EVP_DigestUpdate(rd->md, rd->buf, len) ||
			       (c == '\n' && !EVP_DigestUpdate(rd->md, "\n", 1))))
		rd->md_failed = true;
	return (long)len;
}

int export_reader_next(struct export_reader *rd, struct audit_line *ret_line, char *reason,
		       size_t reason_size)
{
	EVP_MD_CTX *copy;
	unsigned int dn = 0;
	long n;
	int r;

	if (!rd->md) {
		rd->md = EVP_MD_CTX_new();
		if (!rd->md || !EVP_DigestInit_ex(rd->md, EVP_sha256(), NULL))
			return -ENOMEM;
	}
	for (;;) {
		copy = EVP_MD_CTX_new();
		if (!copy || !EVP_MD_CTX_copy_ex(copy, rd->md) ||
		    !EVP_DigestFinal_ex(copy, rd->digest_before, &dn))
			rd->md_failed = true;
		EVP_MD_CTX_free(copy);
		n = read_line(rd);
		rd->line_no++;
		if (n == -1)
			return 0;
		if (n == -EINVAL) {
			snprintf(reason, reason_size, "line longer than %d bytes", AUDIT_LINE_MAX);
			return -EINVAL;
		}
		if (n < 0)
			return (int)n;
		if (n > 0 && rd->buf[n - 1] == '\r')
			rd->buf[--n] = '\0';
		if (n > 0)
			break;
	}
	r = audit_line_parse(rd->buf, (size_t)n, ret_line, reason, reason_size);
	return r < 0 ? r : 1;
}

void export_reader_free(struct export_reader *rd)
{
	free(rd->buf);
	EVP_MD_CTX_free(rd->md);
	rd->buf = NULL;
	rd->md = NULL;
	rd->cap = 0;
}

/* Per-chip serial numbers: parsing a counter and the value of each index (serial.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "an3155-wire.h"
#include "serial.h"
#include "sfi-error.h"

/* A 64-bit number, decimal or 0x hex, nothing after. */
static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');

	if (!s[0] || s[0] == '-' || s[0] == '+' || s[0] == ' ' || (hex && !s[2]))
		return -EINVAL;
	errno = 0;
	*ret = strtoull(s, &end, hex ? 16 : 10);
	return errno || *end ? -EINVAL : 0;
}

/* The ascii format: text before and after one conversion, its flag, width and letter. */
struct text_spec {
	char pre[64], post[64];
	bool zero;
	unsigned field;
	char conv;
};

static int text_parse(const char *f, struct text_spec *t, char *reason, size_t reason_size)
{
	char *o;
	size_t no = 0;
	int convs = 0;

	memset(t, 0, sizeof(*t));
	o = t->pre;
	for (const char *p = f; *p; p++) {
		if (*p < 0x20 || *p > 0x7e) {
			sfi_reason(reason, reason_size, "the ascii format '%s' holds a character that "
				   "is not printable ASCII", f);
			return -EINVAL;
		}
		if (*p == '%' && p[1] == '%') {
			if (no + 1 >= sizeof(t->pre))
				goto long_fmt;
			o[no++] = '%';
			p++;
			continue;
		}
		if (*p != '%') {
			if (no + 1 >= sizeof(t->pre))
				goto long_fmt;
			o[no++] = *p;
			continue;
		}
		if (convs++ > 0)
			break;
		p++;
		if (*p == '0') {
			t->zero = true;
			p++;
		}
		while (*p >= '0' && *p <= '9' && t->field <= JOB_SERIAL_WIDTH_MAX)
			t->field = t->field * 10 + (unsigned)(*p++ - '0');
		if (*p != 'u' && *p != 'x' && *p != 'X') {
			sfi_reason(reason, reason_size, "the ascii format '%s' must hold one %%u, %%x or "
				   "%%X (with an optional 0 flag and width, e.g. %%08u)", f);
			return -EINVAL;
		}
		t->conv = *p;
		o = t->post;
		no = 0;
	}
	if (convs != 1) {
		sfi_reason(reason, reason_size, "the ascii format '%s' must hold exactly one %%u, %%x "
			   "or %%X (e.g. SN%%08u)", f);
		return -EINVAL;
	}
	if (t->field > JOB_SERIAL_WIDTH_MAX) {
		sfi_reason(reason, reason_size, "the ascii format '%s' asks for a field wider than %d",
			   f, JOB_SERIAL_WIDTH_MAX);
		return -EINVAL;
	}
	return 0;
long_fmt:
	sfi_reason(reason, reason_size, "the ascii format '%s' is longer than %zu characters", f,
		   sizeof(t->pre) - 1);
	return -EINVAL;
}

/* The value as text; its length, which may differ from the width. */
static size_t text_render(const struct text_spec *t, uint64_t v, char *out, size_t size)
{
	char num[32];
	int n;

	if (t->conv == 'u')
		n = snprintf(num, sizeof(num), "%" PRIu64, v);
	else if (t->conv == 'x')
		n = snprintf(num, sizeof(num), "%" PRIx64, v);
	else
		n = snprintf(num, sizeof(num), "%" PRIX64, v);
	static const char zeros[] = "0000000000000000000000000000000000000000000000000000000000000000";
	static const char blanks[] = "                                                                ";
	int pad = t->field > (unsigned)n ? (int)(t->field - (unsigned)n) : 0;

	n = snprintf(out, size, "%s%.*s%s%s", t->pre, pad, t->zero ? zeros : blanks, num, t->post);
	return n < 0 ? 0 : (size_t)n;
}

int job_serial_value(const struct job_serial *s, int64_t idx, uint8_t *out)
{
	uint64_t v;

	if (s->list) {
		if (idx < 0 || (uint64_t)idx >= s->list->n)
			return -ENOSPC;
		memcpy(out, s->list->bytes + (size_t)idx * s->width, s->width);
		return 0;
	}
	if (idx < 0 || (s->step && (uint64_t)idx > (UINT64_MAX - s->start) / s->step))
		return -ENOSPC;
	v = s->start + (uint64_t)idx * s->step;
	memset(out, 0, s->width);
	switch (s->format) {
	case JOB_SERIAL_LE:
	case JOB_SERIAL_BE:
		if (s->width < 8 && v >> (8 * s->width))
			return -ENOSPC;
		for (unsigned i = 0; i < s->width && i < 8; i++) {
			uint8_t b = (uint8_t)(v >> (8 * i));

			out[s->format == JOB_SERIAL_LE ? i : s->width - 1 - i] = b;
		}
		return 0;
	case JOB_SERIAL_BCD:
		for (unsigned i = 0; i < s->width; i++) {
			out[s->width - 1 - i] = (uint8_t)(v % 10 | (v / 10 % 10) << 4);
			v /= 100;
		}
		return v ? -ENOSPC : 0;
	case JOB_SERIAL_ASCII: {
		struct text_spec t;
		char text[3 * JOB_SERIAL_WIDTH_MAX];

		if (text_parse(s->text, &t, NULL, 0) < 0 ||
		    text_render(&t, v, text, sizeof(text)) != s->width)
			return -ENOSPC;
		memcpy(out, text, s->width);
		return 0;
	}
	}
	return -EINVAL;
}

static bool in_area(uint64_t a, uint64_t n, uint64_t base, uint64_t size)
{
	return a >= base && a + n <= base + size;
}

/* Checks the address of s's value (s->width set) and sets it. */
static int serial_place(struct job_serial *s, int64_t at, const struct job_serial_range *fw,
			size_t n_fw, char *reason, size_t reason_size)
{
	struct job_serial n = *s;
	uint64_t span;

	if (at < 0 || at > UINT32_MAX) {
		sfi_reason(reason, reason_size, "the serial address is not a 32-bit address");
		return -EINVAL;
	}
	n.address = (uint32_t)at;
	span = job_serial_span(&n);
	if (!in_area(n.address, span, STM32H5_FLASH_BASE, STM32H5_FLASH_SIZE) &&
	    !in_area(n.address, span, STM32H5_OTP_BASE, STM32H5_OTP_SIZE)) {
		sfi_reason(reason, reason_size, "the serial address 0x%08" PRIx32 " (%u bytes) is "
			   "outside the STM32H5's flash (0x%08x..0x%08x) and OTP (0x%08x..0x%08x)",
			   n.address, n.width, STM32H5_FLASH_BASE,
			   STM32H5_FLASH_BASE + STM32H5_FLASH_SIZE - 1, STM32H5_OTP_BASE,
			   STM32H5_OTP_BASE + STM32H5_OTP_SIZE - 1);
		return -EINVAL;
	}
	if (n.address % STM32H5_FLASH_WRITE_UNIT != 0) {
		sfi_reason(reason, reason_size, "the serial address 0x%08" PRIx32 " is not on a "
			   "%u-byte flash word", n.address, STM32H5_FLASH_WRITE_UNIT);
		return -EINVAL;
	}
	for (size_t i = 0; i < n_fw; i++) {
		if ((uint64_t)fw[i].address < n.address + span &&
		    n.address < (uint64_t)fw[i].address + fw[i].size) {
			sfi_reason(reason, reason_size, "the serial number's flash words (0x%08" PRIx32
				   "..0x%08" PRIx64 ") overlap the firmware (0x%08" PRIx32 "..0x%08"
				   PRIx64 ")", n.address, n.address + span - 1, fw[i].address,
				   (uint64_t)fw[i].address + fw[i].size - 1);
			return -EINVAL;
		}
	}
	s->address = n.address;
	return 0;
}

int job_serial_set(struct job_serial *s, const char *counter, int64_t at, int64_t width,
		   const char *format, const struct job_serial_range *fw, size_t n_fw,
		   char *reason, size_t reason_size)
{
	struct job_serial n = { .on = true, .step = 1 };
	uint8_t probe[JOB_SERIAL_WIDTH_MAX];
	char start[64], *colon;

	if (!counter || strlen(counter) >= sizeof(start)) {
		sfi_reason(reason, reason_size, "a serial counter is START or START:STEP");
		return -EINVAL;
	}
	snprintf(start, sizeof(start), "%s", counter);
	colon = strchr(start, ':');
	if (colon)
		*colon = '\0';
	if (parse_u64(start, &n.start) < 0 || (colon && parse_u64(colon + 1, &n.step) < 0)) {
		sfi_reason(reason, reason_size, "the serial counter '%s' is not START or START:STEP "
			   "(decimal or 0x hex numbers)", counter);
		return -EINVAL;
	}
	if (n.step == 0) {
		sfi_reason(reason, reason_size, "the serial counter's step is 0: every chip would get "
			   "the same value");
		return -EINVAL;
	}
	if (width < 1 || width > JOB_SERIAL_WIDTH_MAX) {
		sfi_reason(reason, reason_size, "the serial width %" PRId64 " is not 1 to %d bytes",
			   width, JOB_SERIAL_WIDTH_MAX);
		return -EINVAL;
	}
	n.width = (unsigned)width;
	if (!format || strcmp(format, "le") == 0) {
		n.format = JOB_SERIAL_LE;
	} else if (strcmp(format, "be") == 0) {
		n.format = JOB_SERIAL_BE;
	} else if (strcmp(format, "bcd") == 0) {
		n.format = JOB_SERIAL_BCD;
	} else if (strcmp(format, "ascii") == 0) {
		n.format = JOB_SERIAL_ASCII;
		snprintf(n.text, sizeof(n.text), "%%0%uu", n.width);
	} else if (strncmp(format, "ascii:", 6) == 0) {
		struct text_spec t;

		n.format = JOB_SERIAL_ASCII;
		if (strlen(format + 6) >= sizeof(n.text)) {
			sfi_reason(reason, reason_size, "the ascii format is longer than %zu characters",
				   sizeof(n.text) - 1);
			return -EINVAL;
		}
		if (text_parse(format + 6, &t, reason, reason_size) < 0)
			return -EINVAL;
		snprintf(n.text, sizeof(n.text), "%s", format + 6);
	} else {
		sfi_reason(reason, reason_size, "the serial format '%s' is not le, be, bcd, ascii or "
			   "ascii:FMT", format);
		return -EINVAL;
	}
	if (serial_place(&n, at, fw, n_fw, reason, reason_size) < 0)
		return -EINVAL;
	if (job_serial_value(&n, 0, probe) < 0) {
		sfi_reason(reason, reason_size, "the first serial number %" PRIu64 " does not fit "
			   "%u bytes in that format", n.start, n.width);
		return -EINVAL;
	}
	snprintf(n.series, sizeof(n.series), "counter %" PRIu64 ":%" PRIu64 " %s width %u at "
		 "0x%08" PRIx32, n.start, n.step, format ? format : "le", n.width, n.address);
	*s = n;
	return 0;
}

/* ---- list files ---- */

void job_serial_list_unref(struct job_serial_list *l)
{
	if (!l || --l->refs > 0)
		return;
	free(l->bytes);
	free(l);
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static uint8_t hex_nibble(char c)
{
	return (uint8_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
}

/* A line's text for a message: at most 40 characters, anything unprintable as '?'. */
static void line_quote(const char *p, size_t n, char *out, size_t size)
{
	size_t k = 0;

	for (size_t i = 0; i < n && i < 40 && k + 1 < size; i++)
		out[k++] = p[i] >= 0x20 && p[i] <= 0x7e ? p[i] : '?';
	if (n > 40 && k + 3 < size) {
		memcpy(out + k, "...", 3);
		k += 3;
	}
	out[k] = '\0';
}

/* One line's value into out (up to JOB_SERIAL_WIDTH_MAX bytes); *len its bytes. Returns 0,
 * or -EINVAL with why (what is wrong with the line). */
static int list_line(const char *p, size_t n, bool hex, uint8_t *out, size_t *len, char *why,
		     size_t why_size)
{
	char q[48];

	line_quote(p, n, q, sizeof(q));
	if (n == 0) {
		snprintf(why, why_size, "is blank");
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e) {
			snprintf(why, why_size, "holds a character that is not printable ASCII "
				 "(byte 0x%02x at column %zu)", (unsigned char)p[i], i + 1);
			return -EINVAL;
		}
	if (p[0] == ' ' || p[n - 1] == ' ' || p[0] == '\t' || p[n - 1] == '\t') {
		snprintf(why, why_size, "begins or ends with a space: '%s'", q);
		return -EINVAL;
	}
	*len = 0;
	if (!hex) {
		if (n > JOB_SERIAL_WIDTH_MAX) {
			snprintf(why, why_size, "is %zu characters, more than %d: '%s'", n,
				 JOB_SERIAL_WIDTH_MAX, q);
			return -EINVAL;
		}
		memcpy(out, p, n);
		*len = n;
		return 0;
	}
	for (size_t i = 0, group = 0; i <= n; i++) {
		bool sep = i < n && (p[i] == ':' || p[i] == '-');

		if (i == n || sep) {
			if (group == 0 || group % 2) {
				snprintf(why, why_size, "is not hex bytes: '%s' (%s)", q, group % 2 ?
					 "an odd number of digits" : "a separator at an end or doubled");
				return -EINVAL;
			}
			group = 0;
			continue;
		}
		if (!is_hex(p[i])) {
			snprintf(why, why_size, "is not hex bytes: '%s' ('%c' at column %zu is not a "
				 "hex digit, ':' or '-')", q, p[i], i + 1);
			return -EINVAL;
		}
		if (group % 2 == 0) {
			if (*len == JOB_SERIAL_WIDTH_MAX) {
				snprintf(why, why_size, "is more than %d bytes: '%s'",
					 JOB_SERIAL_WIDTH_MAX, q);
				return -EINVAL;
			}
			out[*len] = (uint8_t)(hex_nibble(p[i]) << 4);
		} else {
			out[(*len)++] |= hex_nibble(p[i]);
		}
		group++;
	}
	return 0;
}

static int cmp_values(const void *a, const void *b, void *arg)
{
	const struct job_serial_list *l = arg;
	size_t i = *(const size_t *)a, k = *(const size_t *)b;
	int c = memcmp(l->bytes + i * l->width, l->bytes + k * l->width, l->width);

	return c ? c : (i < k ? -1 : i > k);
}

/* The list's line at *pos (without its LF or CR LF): its start, its length in *n_line;
 * *pos moves to the next line. */
static const char *list_next_line(const uint8_t *text, size_t len, size_t *pos, size_t *n_line)
{
	const char *p = (const char *)text + *pos;
	const char *nl = memchr(p, '\n', len - *pos);

	*n_line = nl ? (size_t)(nl - p) : len - *pos;
	*pos += *n_line + (nl ? 1 : 0);
	if (*n_line && p[*n_line - 1] == '\r')
		(*n_line)--;
	return p;
}

int job_serial_set_list(struct job_serial *s, const char *path, const uint8_t *text,
			size_t len, int64_t at, int64_t width, const char *format,
			const struct job_serial_range *fw, size_t n_fw, char *reason,
			size_t reason_size)
{
	struct job_serial n = { .on = true };
	struct job_serial_list *l;
	uint8_t v[JOB_SERIAL_WIDTH_MAX], digest[SHA256_DIGEST_LENGTH];
	char why[200], hexd[2 * SHA256_DIGEST_LENGTH + 1];
	size_t count = 0, vlen, *order;
	bool hex;

	if (!format || strcmp(format, "hex") == 0) {
		hex = true;
	} else if (strcmp(format, "ascii") == 0) {
		hex = false;
	} else {
		sfi_reason(reason, reason_size, "the serial list's format '%s' is not hex or ascii",
			   format);
		return -EINVAL;
	}
	if (width != 0 && (width < 1 || width > JOB_SERIAL_WIDTH_MAX)) {
		sfi_reason(reason, reason_size, "the serial width %" PRId64 " is not 1 to %d bytes",
			   width, JOB_SERIAL_WIDTH_MAX);
		return -EINVAL;
	}
	if (len > JOB_SERIAL_LIST_BYTES_MAX) {
		sfi_reason(reason, reason_size, "the serial list %s is larger than %u MiB", path,
			   JOB_SERIAL_LIST_BYTES_MAX >> 20);
		return -EINVAL;
	}
	/* First pass: every line checked, the values counted, the width found. */
	for (size_t pos = 0, line = 1, n_line; pos < len; line++) {
		const char *p = list_next_line(text, len, &pos, &n_line);

		if (list_line(p, n_line, hex, v, &vlen, why, sizeof(why)) < 0) {
			sfi_reason(reason, reason_size, "line %zu of the serial list %s %s", line, path,
				   why);
			return -EINVAL;
		}
		if (width == 0 && hex)
			width = (int64_t)vlen;
		if (hex && (int64_t)vlen != width) {
			sfi_reason(reason, reason_size, "line %zu of the serial list %s holds %zu bytes, "
				   "the list's values are %" PRId64 " (%s)", line, path, vlen, width,
				   count ? "its first line's" : "--serial-width");
			return -EINVAL;
		}
		if (!hex && width && (int64_t)vlen > width) {
			sfi_reason(reason, reason_size, "line %zu of the serial list %s is %zu "
				   "characters, over the width of %" PRId64, line, path, vlen, width);
			return -EINVAL;
		}
		if (!hex && vlen > n.width)
			n.width = (unsigned)vlen;
		if (++count > JOB_SERIAL_LIST_VALUES_MAX) {
			sfi_reason(reason, reason_size, "the serial list %s holds more than %u values",
				   path, JOB_SERIAL_LIST_VALUES_MAX);
			return -EINVAL;
		}
	}
	if (count == 0) {
		sfi_reason(reason, reason_size, "the serial list %s holds no value", path);
		return -EINVAL;
	}
	n.width = width ? (unsigned)width : n.width;
	n.format = hex ? JOB_SERIAL_BE : JOB_SERIAL_ASCII;
	if (serial_place(&n, at, fw, n_fw, reason, reason_size) < 0)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (l)
		l->bytes = calloc(count, n.width);
	order = calloc(count, sizeof(*order));
	if (!l || !l->bytes || !order) {
		if (l)
			free(l->bytes);
		free(l);
		free(order);
		sfi_reason(reason, reason_size, "out of memory for the serial list");
		return -ENOMEM;
	}
	l->refs = 1;
	l->n = count;
	l->width = n.width;
	/* Second pass: the values, each padded with 0x00 to the width (ascii). */
	for (size_t pos = 0, i = 0, n_line; pos < len; i++) {
		const char *p = list_next_line(text, len, &pos, &n_line);

		(void)list_line(p, n_line, hex, l->bytes + i * n.width, &vlen, why, sizeof(why));
		order[i] = i;
	}
	/* The same value on two lines would go to two chips. */
	qsort_r(order, count, sizeof(*order), cmp_values, l);
	for (size_t i = 1; i < count; i++) {
		if (memcmp(l->bytes + order[i - 1] * n.width, l->bytes + order[i] * n.width,
			   n.width) == 0) {
			sfi_reason(reason, reason_size, "lines %zu and %zu of the serial list %s hold "
				   "the same value", order[i - 1] + 1, order[i] + 1, path);
			free(order);
			job_serial_list_unref(l);
			return -EINVAL;
		}
	}
	free(order);
	SHA256(text, len, digest);
	for (size_t i = 0; i < sizeof(digest); i++)
		snprintf(hexd + 2 * i, 3, "%02x", digest[i]);
	n.list = l;
	snprintf(n.series, sizeof(n.series), "list sha256:%s %s width %u at 0x%08" PRIx32, hexd,
		 hex ? "hex" : "ascii", n.width, n.address);
	snprintf(n.list_path, sizeof(n.list_path), "%s", path);
	*s = n;
	return 0;
}

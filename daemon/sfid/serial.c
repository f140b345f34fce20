/* Per-chip serial numbers: parsing a counter and the value of each index (serial.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int job_serial_set(struct job_serial *s, const char *counter, int64_t at, int64_t width,
		   const char *format, const struct job_serial_range *fw, size_t n_fw,
		   char *reason, size_t reason_size)
{
	struct job_serial n = { .on = true, .step = 1 };
	uint8_t probe[JOB_SERIAL_WIDTH_MAX];
	char start[64], *colon;
	uint64_t span;

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

/* --fault SPEC parsing: comma-separated key=value selectors and one action. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emu-internal.h"

static int fail(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Strict unsigned number (decimal or 0x hex) no larger than max. */
static int parse_num(const char *s, unsigned long max, unsigned long *ret)
{
	unsigned long v;
	char *end;

	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int emu_fault_parse(const char *spec, struct emu_fault *ret, char *err, size_t err_len)
{
	struct emu_fault f = { .chip = -1, .cmd = -1, .subop = -1, .nth = 1 };
	bool have_action = false, have_nth = false, have_mode = false;
	char buf[256], *save = NULL, *tok;

	if (strlen(spec) >= sizeof(buf))
		return fail(err, err_len, "fault spec too long");
	strcpy(buf, spec);

	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *val = strchr(tok, '=');
		unsigned long v;

		if (strcmp(tok, "once") == 0 || strcmp(tok, "repeat") == 0) {
			if (have_mode)
				return fail(err, err_len, "'once' and 'repeat' given twice");
			have_mode = true;
			f.repeat = tok[0] == 'r';
			continue;
		}
		if (!val)
			return fail(err, err_len, "'%s' is not key=value", tok);
		*val++ = '\0';
		if (strcmp(tok, "chip") == 0) {
			if (f.chip >= 0 || parse_num(val, 65535, &v) < 0)
				return fail(err, err_len, "bad or repeated chip=%s", val);
			f.chip = (int)v;
		} else if (strcmp(tok, "cmd") == 0) {
			if (f.cmd >= 0 || parse_num(val, 0xff, &v) < 0)
				return fail(err, err_len, "bad or repeated cmd=%s (0x00..0xff)", val);
			f.cmd = (int)v;
		} else if (strcmp(tok, "subop") == 0) {
			if (f.subop >= 0 || parse_num(val, 0xffff, &v) < 0)
				return fail(err, err_len, "bad or repeated subop=%s (0x0000..0xffff)",
					    val);
			f.subop = (int)v;
		} else if (strcmp(tok, "nth") == 0) {
			if (have_nth || parse_num(val, 1000000, &v) < 0 || v == 0)
				return fail(err, err_len, "bad or repeated nth=%s (1, 2, ...)", val);
			have_nth = true;
			f.nth = (unsigned)v;
		} else if (strcmp(tok, "byte") == 0) {
			if (parse_num(val, 1u << 20, &v) < 0)
				return fail(err, err_len, "bad byte=%s", val);
			f.byte = (unsigned)v;
		} else if (strcmp(tok, "action") == 0) {
			if (have_action)
				return fail(err, err_len, "action given twice");
			have_action = true;
			if (strcmp(val, "nack") == 0)
				f.action = EMU_FAULT_NACK;
			else if (strcmp(val, "drop") == 0)
				f.action = EMU_FAULT_DROP;
			else if (strcmp(val, "corrupt") == 0)
				f.action = EMU_FAULT_CORRUPT;
			else if (strcmp(val, "vanish") == 0)
				f.action = EMU_FAULT_VANISH;
			else if (strcmp(val, "garbage") == 0)
				f.action = EMU_FAULT_GARBAGE;
			else if (strncmp(val, "delay:", 6) == 0) {
				if (parse_num(val + 6, 600000, &v) < 0)
					return fail(err, err_len, "bad delay '%s' (delay:MS)", val);
				f.action = EMU_FAULT_DELAY;
				f.ms = (uint32_t)v;
			} else
				return fail(err, err_len,
					    "unknown action '%s' (nack, drop, corrupt, delay:MS, "
					    "vanish, garbage)", val);
		} else {
			return fail(err, err_len,
				    "unknown key '%s' (chip, cmd, subop, nth, byte, action, once, "
				    "repeat)", tok);
		}
	}
	if (!have_action)
		return fail(err, err_len, "no action= given");
	if (f.subop >= 0 && f.cmd >= 0 && f.cmd != 0x50 && f.cmd != 0x51)
		return fail(err, err_len, "subop= needs cmd=0x50, cmd=0x51 or no cmd");
	*ret = f;
	return 0;
}

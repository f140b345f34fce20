/* Entry sequences: "dtr=1,rts=1,wait=20,dtr=0". Pure parsing, no I/O. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link.h"

__attribute__((format(printf, 3, 4)))
static int entry_error(char *err, size_t err_size, const char *fmt, ...)
{
	va_list ap;

	if (err && err_size > 0) {
		va_start(ap, fmt);
		vsnprintf(err, err_size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int link_entry_parse(const char *seq, struct link_entry_step *steps, size_t max, size_t *ret_n,
		     char *err, size_t err_size)
{
	size_t n = 0;
	const char *p;

	if (!seq || !steps || !ret_n)
		return -EINVAL;
	if (*seq == '\0')
		return entry_error(err, err_size, "the entry sequence is empty%s", "");

	p = seq;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char step[64], *eq, *num_end;
		struct link_entry_step s;
		unsigned long v;

		/* Allow spaces around steps, e.g. "dtr=1, wait=20". */
		while (len > 0 && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len == 0)
			return entry_error(err, err_size,
					   "the entry sequence has an empty step%s (two commas?)",
					   "");
		if (len >= sizeof(step))
			return entry_error(err, err_size, "entry step too long: %.20s...", p);
		memcpy(step, p, len);
		step[len] = '\0';

		eq = strchr(step, '=');
		if (!eq)
			return entry_error(err, err_size,
					   "entry step '%s' is not dtr=0|1, rts=0|1 or wait=MS",
					   step);
		*eq = '\0';
		if (eq[1] < '0' || eq[1] > '9') {
			*eq = '=';
			return entry_error(err, err_size, "entry step '%s' needs a number", step);
		}
		errno = 0;
		v = strtoul(eq + 1, &num_end, 10);
		if (errno || *num_end != '\0') {
			*eq = '=';
			return entry_error(err, err_size, "entry step '%s' has a bad number", step);
		}

		if (strcmp(step, "dtr") == 0 || strcmp(step, "rts") == 0) {
			s.kind = step[0] == 'd' ? LINK_ENTRY_DTR : LINK_ENTRY_RTS;
			if (v > 1) {
				*eq = '=';
				return entry_error(err, err_size,
						   "entry step '%s': a line is set to 0 or 1", step);
			}
		} else if (strcmp(step, "wait") == 0) {
			s.kind = LINK_ENTRY_WAIT;
			if (v > LINK_ENTRY_MAX_WAIT_MS) {
				*eq = '=';
				return entry_error(err, err_size,
						   "entry step '%s': waits are limited to 10000 ms",
						   step);
			}
		} else {
			*eq = '=';
			return entry_error(err, err_size,
					   "entry step '%s' is not dtr=0|1, rts=0|1 or wait=MS",
					   step);
		}
		s.value = (unsigned)v;

		if (n >= max)
			return entry_error(err, err_size, "the entry sequence has too many steps%s",
					   "");
		steps[n++] = s;
		if (!end)
			break;
		p = end + 1;
	}
	*ret_n = n;
	return 0;
}

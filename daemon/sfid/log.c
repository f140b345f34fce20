/* Logging: see log.h. */
#include <stdio.h>
#include <string.h>

#include "log.h"

static enum log_prio log_max = LOG_PRIO_INFO;

void log_set_max(enum log_prio p)
{
	log_max = p;
}

bool log_enabled(enum log_prio p)
{
	return p <= log_max;
}

void log_printv(enum log_prio p, const char *fmt, va_list ap)
{
	char line[2048];
	int n;

	if (!log_enabled(p))
		return;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	/* One write per line so that lines of concurrent writers never interleave. */
	fprintf(stderr, "<%d>%s\n", (int)p, line);
}

void log_print(enum log_prio p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_printv(p, fmt, ap);
	va_end(ap);
}

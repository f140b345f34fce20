/* Logging: see log.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "log.h"

static enum log_prio log_max = LOG_PRIO_INFO;

/* Where lines go: the journal (with fields) when stderr is systemd's journal stream, a
 * terminal (plain lines), or anything else ("<N>" priority prefixes, which journald also
 * reads from a service's stdout). */
enum log_target { LOG_UNDECIDED, LOG_JOURNAL, LOG_TERMINAL, LOG_PREFIXED };
static enum log_target log_target;

static enum log_target log_target_get(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	struct stat st;
	unsigned long long dev, ino;

	if (log_target != LOG_UNDECIDED)
		return log_target;
	log_target = LOG_PREFIXED;
	if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
		log_target = LOG_JOURNAL;
	else if (isatty(STDERR_FILENO))
		log_target = LOG_TERMINAL;
	return log_target;
}

void log_set_max(enum log_prio p)
{
	log_max = p;
}

bool log_enabled(enum log_prio p)
{
	return p <= log_max;
}

void log_fieldsv(enum log_prio p, const char *slot, const char *chip, const char *fmt, va_list ap)
{
	char line[2048], prio[16], fslot[96], fchip[96], msg[2100];
	struct iovec iov[4];
	int n, k = 0;

	if (!log_enabled(p))
		return;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	switch (log_target_get()) {
	case LOG_JOURNAL:
		snprintf(msg, sizeof(msg), "MESSAGE=%s", line);
		snprintf(prio, sizeof(prio), "PRIORITY=%d", (int)p);
		iov[k++] = (struct iovec){ msg, strlen(msg) };
		iov[k++] = (struct iovec){ prio, strlen(prio) };
		if (slot) {
			snprintf(fslot, sizeof(fslot), "SFID_SLOT=%s", slot);
			iov[k++] = (struct iovec){ fslot, strlen(fslot) };
		}
		if (chip && chip[0]) {
			snprintf(fchip, sizeof(fchip), "SFID_CHIP=%s", chip);
			iov[k++] = (struct iovec){ fchip, strlen(fchip) };
		}
		if (sd_journal_sendv(iov, k) == 0)
			return;
		break;
	case LOG_TERMINAL:
		/* One write per line so that lines of concurrent writers never interleave. */
		fprintf(stderr, "%s\n", line);
		return;
	case LOG_UNDECIDED:
	case LOG_PREFIXED:
		break;
	}
	fprintf(stderr, "<%d>%s\n", (int)p, line);
}

void log_printv(enum log_prio p, const char *fmt, va_list ap)
{
	log_fieldsv(p, NULL, NULL, fmt, ap);
}

void log_print(enum log_prio p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_printv(p, fmt, ap);
	va_end(ap);
}

void log_fields(enum log_prio p, const char *slot, const char *chip, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_fieldsv(p, slot, chip, fmt, ap);
	va_end(ap);
}

/* Logging. Under systemd (stderr is the journal stream) each line goes to the journal with
 * its PRIORITY and, for a slot's lines, SFID_SLOT and SFID_CHIP fields; on a terminal lines
 * are plain; otherwise they carry a "<6>" priority prefix, as journald reads from stdout. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>

enum log_prio {
	LOG_PRIO_ERR = 3,
	LOG_PRIO_WARNING = 4,
	LOG_PRIO_NOTICE = 5,
	LOG_PRIO_INFO = 6,
	LOG_PRIO_DEBUG = 7,
};

/* Sets the highest priority that is printed (LOG_PRIO_INFO by default). */
void log_set_max(enum log_prio p);
/* True if messages of priority p are printed. */
bool log_enabled(enum log_prio p);
/* Prints one line with its priority prefix. */
void log_print(enum log_prio p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_printv(enum log_prio p, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Same, with the slot's name and the chip's UID (NULL or "": none) as journal fields. */
void log_fields(enum log_prio p, const char *slot, const char *chip, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void log_fieldsv(enum log_prio p, const char *slot, const char *chip, const char *fmt,
		 va_list ap) __attribute__((format(printf, 4, 0)));

#define log_error(...) log_print(LOG_PRIO_ERR, __VA_ARGS__)
#define log_warning(...) log_print(LOG_PRIO_WARNING, __VA_ARGS__)
#define log_notice(...) log_print(LOG_PRIO_NOTICE, __VA_ARGS__)
#define log_info(...) log_print(LOG_PRIO_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_PRIO_DEBUG)) log_print(LOG_PRIO_DEBUG, __VA_ARGS__); } while (0)

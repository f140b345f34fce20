/* Per-chip serial numbers: a counter written at an address of each chip after its firmware
 * (docs/operations.md, serial numbers). The values are given out through the ledger's
 * serials table (db.h); this file only says what value an index stands for. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The widest value, in bytes. */
#define JOB_SERIAL_WIDTH_MAX 64

enum job_serial_format {
	JOB_SERIAL_LE,		/* binary, least significant byte first */
	JOB_SERIAL_BE,		/* binary, most significant byte first */
	JOB_SERIAL_BCD,		/* two decimal digits a byte, most significant first */
	JOB_SERIAL_ASCII,	/* text from a printf-like format: %[0][N](u|x|X) */
};

/* The values of a list file, in its order: n values of width bytes each, back to back.
 * Shared by reference (the job and the ledger requests in flight), on the loop only. */
struct job_serial_list {
	unsigned refs;
	size_t n;
	unsigned width;
	uint8_t *bytes;
};

struct job_serial {
	bool on;
	struct job_serial_list *list;	/* NULL: a counter */
	uint64_t start, step;
	uint32_t address;
	unsigned width;			/* bytes written */
	enum job_serial_format format;
	char text[64];			/* ascii: the format, e.g. "SN%08u" */
	char series[160];		/* the spec, which names the series in the ledger */
	char list_path[256];		/* a list: the file, for messages */
};

/* A segment of the firmware the value must not overlap. */
struct job_serial_range {
	uint32_t address;
	size_t size;
};

/* Checks and sets a counter: counter "START[:STEP]" (decimal or 0x hex; STEP 1 by default,
 * not 0), at (an address in the STM32H5's flash or OTP, on a 16-byte flash word), width 1..64
 * bytes, format "le", "be", "bcd", "ascii" (the decimal number, zero-padded to the width) or
 * "ascii:FMT" (FMT holds exactly one %u, %x or %X with an optional 0 flag and field width,
 * other characters printable, "%%" for a percent sign; the text must be exactly width
 * bytes). The value's flash words must not overlap the firmware's ranges. Returns 0, or
 * -EINVAL with one sentence in reason. */
int job_serial_set(struct job_serial *s, const char *counter, int64_t at, int64_t width,
		   const char *format, const struct job_serial_range *fw, size_t n_fw,
		   char *reason, size_t reason_size);
/* The value for index idx (start + idx * step) in out (s->width bytes). -ENOSPC: it does not
 * fit the width (or the counter would pass 2^64). */
int job_serial_value(const struct job_serial *s, int64_t idx, uint8_t *out);
/* The bytes written for a value: the value's flash words, the rest 0xff. */
static inline size_t job_serial_span(const struct job_serial *s)
{
	return (s->width + 15u) / 16u * 16u;
}

/* The longest list file and the most values it may hold. */
#define JOB_SERIAL_LIST_BYTES_MAX (64u << 20)
#define JOB_SERIAL_LIST_VALUES_MAX 1000000u

/* Checks and sets a list: text (len bytes, the file's content; path names it in messages)
 * holds one value a line (docs/operations.md, serial numbers): format "hex" (the default:
 * hex digits, two a byte, optionally grouped by ':' or '-', as in 00:80:E1:12:34:56; the
 * bytes written in that order) or "ascii" (printable ASCII, written as is, the rest of the
 * width 0x00). width 0: the first line's bytes (hex) or the longest line (ascii); each hex
 * line must hold exactly width bytes, each ascii line 1 to width characters. A line ends
 * with LF or CR LF; a last line without one counts. Refused, with the line's number: a
 * blank line, a space at either end, bad hex (a character that is not a hex digit or a
 * separator, an odd number of digits, a separator at an end or doubled), a value of another
 * byte count (hex) or over the width (ascii), a character outside printable ASCII, the same
 * value on two lines; an empty file; more than JOB_SERIAL_LIST_VALUES_MAX values. The
 * series is named by the file's SHA-256 (a file that changes is a new list). Address and
 * firmware checks as job_serial_set(). Returns 0, -ENOMEM, or -EINVAL with one sentence. */
int job_serial_set_list(struct job_serial *s, const char *path, const uint8_t *text,
			size_t len, int64_t at, int64_t width, const char *format,
			const struct job_serial_range *fw, size_t n_fw, char *reason,
			size_t reason_size);
/* Drops a reference to a list (NULL accepted); frees it with the last. */
void job_serial_list_unref(struct job_serial_list *l);
static inline struct job_serial_list *job_serial_list_ref(struct job_serial_list *l)
{
	if (l)
		l->refs++;
	return l;
}

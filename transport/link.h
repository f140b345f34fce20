/* The UART link to one chip in its AN3155 bootloader: a serial port opened through
 * libserialport (8E1), bootloader entry through DTR/RTS, and a blocking driver of the
 * an3155 transaction engine (poll() with per-step timeouts, bounded retries).
 *
 * Port specifications (link_open):
 *   /dev/ttyUSB0      a device path (anything that is not one of the forms below)
 *   serial:SFIA0003   the USB-serial adapter whose USB serial number is SFIA0003
 *   usb:1-3           the adapter plugged into physical USB port 1-3 (sysfs: the tty's
 *                     device directory is a USB interface "1-3:1.0" under port dir "1-3")
 *   serial:SFIA0003#1, usb:1-3#2
 *                     one port of a multi-port adapter (FT2232H, FT4232H, CP2108...): the
 *                     one on USB interface 1 (2), its bInterfaceNumber; an adapter with
 *                     several ports and no "#N" is refused with the list of candidates
 *   tty:/dev/pts/4    a terminal set up with termios alone, without libserialport (for
 *                     pseudo-terminals, which libserialport does not handle)
 *
 * Fixture wiring convention for entry sequences:
 *   DTR asserted (dtr=1) holds NRST low: the chip is held in reset.
 *   RTS asserted (rts=1) drives BOOT0 high.
 *   The chip enters its system bootloader when reset is released while BOOT0 is high,
 *   e.g. "rts=1,dtr=1,wait=20,dtr=0,wait=50" (BOOT0 high, reset, release, let it boot).
 * An entry sequence is a comma-separated list of steps: dtr=0|1, rts=0|1, wait=MS
 * (0..10000). Opening a port leaves the modem lines as the operating system set them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "an3155.h"

/* ---- Entry sequences (pure parsing, no I/O) ---- */

enum link_entry_kind {
	LINK_ENTRY_DTR,
	LINK_ENTRY_RTS,
	LINK_ENTRY_WAIT,
	_LINK_ENTRY_MAX,
};

struct link_entry_step {
	enum link_entry_kind kind;
	unsigned value;		/* 0/1 for lines, milliseconds for waits */
};

#define LINK_ENTRY_MAX_STEPS 32
#define LINK_ENTRY_MAX_WAIT_MS 10000

/* Parses an entry sequence into steps[0..max). Returns 0 and sets *ret_n, or -EINVAL with
 * a one-sentence reason in err (if err is not NULL). */
int link_entry_parse(const char *seq, struct link_entry_step *steps, size_t max, size_t *ret_n,
		     char *err, size_t err_size);

/* ---- Port specifications and connected adapters (no port is opened) ---- */

enum link_spec_kind {
	LINK_SPEC_PATH,		/* /dev/ttyUSB0 */
	LINK_SPEC_SERIAL,	/* serial:SN[#N] */
	LINK_SPEC_USB,		/* usb:BUS-PORT[.PORT...][#N] */
	LINK_SPEC_TTY,		/* tty:PATH */
	_LINK_SPEC_MAX,
};

struct link_spec {
	enum link_spec_kind kind;
	char key[128];		/* the path, serial number or USB port path */
	int interface;		/* "#N": the USB interface number, -1 when none is named */
};

/* Parses a port specification (see above). Returns 0 and sets *ret, or -EINVAL with a
 * one-sentence reason in err (optional). */
int link_spec_parse(const char *spec, struct link_spec *ret, char *err, size_t err_size);
/* Writes the specification back as text. Returns 0 or -ENAMETOOLONG. */
int link_spec_format(const struct link_spec *s, char *buf, size_t size);

/* One serial port of a connected USB adapter. */
struct link_port_info {
	char *path;		/* "/dev/ttyUSB0" */
	char *serial;		/* USB serial number, NULL if the adapter has none */
	char usb_path[64];	/* physical USB port "1-3", "" if unknown */
	int interface;		/* USB interface number (bInterfaceNumber), -1 if unknown */
	int vid, pid;		/* -1 if unknown */
	char *manufacturer, *product, *description;	/* NULL if unknown */
};

/* Lists the serial ports of connected USB adapters, sorted by USB port and interface.
 * Returns 0 and sets *ret (free with link_ports_free) and *ret_n, or a negative errno with
 * the reason in err. */
int link_ports_list(struct link_port_info **ret, size_t *ret_n, char *err, size_t err_size);
void link_ports_free(struct link_port_info *ports, size_t n);

/* The most stable specification naming ports[i]: serial:SN when the serial number is
 * unique, else usb:PATH, with "#N" on a multi-port adapter. Returns 0 or a negative errno. */
int link_port_spec(const struct link_port_info *ports, size_t n, size_t i, char *buf,
		   size_t size);

/* Finds the one port a serial: or usb: specification names. Returns 0 and sets *ret_index,
 * or -ENODEV (nothing matches), -ENOTUNIQ (several ports match: several adapters, or a
 * multi-port adapter without "#N"), with a sentence listing the candidates in err. */
int link_ports_resolve(const struct link_port_info *ports, size_t n, const struct link_spec *s,
		       size_t *ret_index, char *err, size_t err_size);

/* Checks, without opening it, whether link_open(spec) could open the port now: the spec is
 * well formed, names exactly one connected port, the device exists, is a terminal that
 * libserialport takes (or tty: is used), and this process may read and write it. The
 * port is not opened because opening a serial port raises DTR and RTS, which resets the
 * chip of a fixture wired for entry sequences. Returns 0 and the device path in ret_path
 * (optional), or a negative errno with one sentence in err: why not, and what to write
 * instead when the spec should be tty:PATH. */
int link_probe(const char *spec, char *ret_path, size_t path_size, char *err, size_t err_size);

/* Prints the list: a table, or with json one object {"ports":[...]} on one line. */
void link_ports_print(FILE *f, const struct link_port_info *ports, size_t n, bool json);

/* ---- The link ---- */

struct link;

struct link_options {
	unsigned baud;			/* default 115200 */
	struct an3155_timeouts timeouts;
	unsigned retries;		/* extra attempts after a timeout or garbled answer */
	unsigned resync_ms;		/* time allowed to resynchronise before a retry */
	/* Raw frames and retries, hex-dumped with a direction arrow; NULL for silence. */
	void (*debug)(void *user_data, const char *line);
	void *user_data;
};

/* Fills *o with the defaults: 115200 baud, an3155 default timeouts, 2 retries, 3 s resync. */
void link_options_default(struct link_options *o);

/* Opens the port named by spec (see above) in 8E1 at o->baud (o may be NULL for the
 * defaults). Returns 0 and sets *ret, or a negative errno: -ENODEV no such port or adapter,
 * -ENOTUNIQ several adapters match, -EACCES/-EBUSY from the system. On failure err
 * (optional, err_size bytes) receives the reason as one sentence. */
int link_open(const char *spec, const struct link_options *o, struct link **ret, char *err,
	      size_t err_size);

/* Closes the port and frees l. Accepts NULL; returns NULL. */
struct link *link_close(struct link *l);

/* The port's file descriptor (non-blocking, close-on-exec), for event loops. */
int link_fd(const struct link *l);
/* The resolved device path ("/dev/ttyUSB3"). */
const char *link_port_name(const struct link *l);
/* One sentence about the last failure of a link_* call on l ("" if none). */
const char *link_last_error(const struct link *l);

/* Per-block progress of read/write: done and total bytes. NULL to disable. */
void link_set_progress(struct link *l, void (*cb)(void *user_data, size_t done, size_t total),
		       void *user_data);

/* Sets DTR and/or RTS (-1 leaves a line alone). Returns 0 or a negative error. */
int link_set_lines(struct link *l, int dtr, int rts);

/* Runs an entry sequence (see above), then discards what the chip sent meanwhile.
 * Returns 0, -EINVAL for a bad sequence, or a negative link error. */
int link_enter_bootloader(struct link *l, const char *seq);

/* Sends 0x7F every ~25 ms until the bootloader answers, for at most ack_ms x (retries + 1);
 * ACK or NACK (already synced) is success. Returns 0 or a negative error
 * (-AN3155_E_TIMEOUT: no chip answers). */
int link_sync(struct link *l);

/* Get: protocol version and command list. */
int link_get(struct link *l, struct an3155_get_info *ret);
int link_get_version(struct link *l, struct an3155_version_info *ret);
/* Get ID: product id (0x484 for STM32H56x/H57x). */
int link_get_id(struct link *l, uint32_t *ret_pid);

/* Reads len bytes from addr into buf, 256 bytes per command. */
int link_read_memory(struct link *l, uint32_t addr, uint8_t *buf, size_t len);
/* Writes len bytes to addr (a multiple of the write unit), 256 bytes per command, the last
 * block padded with 0xFF to a multiple of the write unit. */
int link_write_memory(struct link *l, uint32_t addr, const uint8_t *data, size_t len);
/* Sets the write unit: 4 (AN3155's minimum, the default) or a larger power of two up to
 * 256, e.g. 16 for STM32H5 flash, which programs 128-bit words only. */
int link_set_write_unit(struct link *l, unsigned unit);

enum link_erase_kind {
	LINK_ERASE_MASS,
	LINK_ERASE_BANK1,
	LINK_ERASE_BANK2,
	LINK_ERASE_PAGES,
	_LINK_ERASE_MAX,
};

/* Extended Erase: mass, one bank, or a page list (pages/n only for LINK_ERASE_PAGES; longer
 * lists are split into several commands). */
int link_erase(struct link *l, enum link_erase_kind kind, const uint16_t *pages, size_t n);

/* Go: the chip jumps to the program whose vector table is at addr. */
int link_go(struct link *l, uint32_t addr);

/* Special 0x50 with up to 128 bytes of data. The answer data (at most out_max bytes, at most
 * 1024) goes to out; *ret_out_len and *ret_status are set on success. */
int link_special(struct link *l, uint16_t subop, const uint8_t *data, size_t len, uint8_t *out,
		 size_t out_max, size_t *ret_out_len, uint16_t *ret_status);

/* Extended Special 0x51: packet 1 up to 128 bytes, packet 2 up to 1024 bytes. */
int link_xspecial(struct link *l, uint16_t subop, const uint8_t *p1, size_t n1,
		  const uint8_t *p2, size_t n2, uint16_t *ret_status);

/* Runs one prepared engine transfer to its end with the link's retry policy, for callers
 * that build transfers themselves. Returns the transfer's result. */
int link_run(struct link *l, struct an3155_xfer *x);

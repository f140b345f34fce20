/* The link to one chip's bootloader, whatever carries it: a table of operations per
 * backend (UART AN3155 today, USB DfuSe next), one open link per fixture.
 *
 * Model. An open link runs at most one operation at a time. An operation is started with
 * one of the transport_* starters below and ends exactly once, by calling the done callback
 * given to its starter with 0 or a negative error (unless it is cancelled or the link is
 * closed first: then the callback is not called). Nothing blocks: a starter returns at once.
 * The caller drives the link from its event loop:
 *
 *   transport_watch(t, &w)   which descriptor to watch, for which events, and until when
 *                            (re-read it after every call into the link, callbacks included)
 *   transport_io_ready(t, revents)
 *                            the descriptor is ready (revents) or the deadline passed (0)
 *
 * sfid does this from libevent; transport_wait() does it with poll() for blocking callers
 * (sfi-boot), so both run the same backend code and the same retry policy. A callback may
 * start the next operation or close the link (it is freed once the backend has returned).
 *
 * Operations (the backend decides how its wire does them):
 *   probe      is a chip's bootloader there? PRESENT (same bootloader session as the last
 *              probe) or FRESH (a bootloader that just started: a new or reset chip).
 *              TRANSPORT_PROBE_ENTER first brings a chip in the fixture into its bootloader
 *              (UART: the entry sequence given at open, when there is one).
 *   identify   product id and whether the bootloader carries OSFI requests.
 *   osfi       one OSFI request (struct osfi_request: sub-opcode, p1, p2): the chip's status
 *              and answer data. The backend maps it to its wire (UART: Special 0x50 or
 *              Extended Special 0x51 by sub-opcode; DfuSe: docs/protocol.md).
 *   reconnect  after the chip reset itself (FINALIZE): wait for its bootloader to come back,
 *              for at most within_ms (UART: one 0x7F at a time, each given the step
 *              timeout, as sfid did before the vtable).
 *   read       len bytes of the chip's memory at addr (UART: Read Memory blocks of 256;
 *              DfuSe: UPLOAD through the alternate whose layout holds the range).
 *   write      len bytes at addr (UART: Write Memory blocks; DfuSe: DNLOAD). The tail is
 *              padded with 0xFF to the write unit: 16 bytes in flash and OTP, 4 elsewhere;
 *              addr must be a multiple of it. Flash must have been erased.
 *   erase      the flash sectors (pages) listed, numbered from the start of the chip's
 *              flash in the chip's own sector size (8 KiB on the STM32H5; DfuSe: the
 *              sectors of the layout of the alternate that holds 0x08000000), or every
 *              sector when n is 0 (mass erase).
 *   go         start the code at addr (UART: Go; DfuSe: leave DFU mode at addr). The
 *              bootloader session ends: the next operation is a probe.
 *   cancel     drops the running operation now, without calling its callback.
 * Retries of garbled or lost answers, and what may be retried, are the backend's: a caller
 * sees one result per operation.
 *
 * Errors: negative errno values or these link errors (the an3155 numbers, which every
 * backend uses so that one int and an3155_strerror() carry both):
 *   -TRANSPORT_E_GONE     the port or device vanished (adapter unplugged); the link is dead
 *   -TRANSPORT_E_TIMEOUT  no (complete) answer in time
 *   -TRANSPORT_E_REFUSED  the bootloader refused the request (UART NACK, DFU stall)
 *   -TRANSPORT_E_GARBLED  an answer out of turn, too long, or with a bad checksum
 * transport_describe() gives the failure as one sentence naming the request and the step.
 *
 * Port specifications choose the backend: "dfu:..." the USB DfuSe backend, anything else the
 * UART backend (link.h lists its forms: /dev/ttyUSB0, serial:SN, usb:1-3, tty:PATH). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "an3155.h"
#include "osfi.h"

#define TRANSPORT_E_GONE AN3155_E_PORT_GONE
#define TRANSPORT_E_TIMEOUT AN3155_E_TIMEOUT
#define TRANSPORT_E_REFUSED AN3155_E_NACK
#define TRANSPORT_E_GARBLED AN3155_E_UNEXPECTED

struct transport;
struct link;

typedef void (*transport_done_fn)(struct transport *t, int r, void *user_data);

struct transport_options {
	unsigned baud;			/* UART: line rate, default 115200 */
	const char *entry;		/* UART: entry sequence (link.h), NULL for none; copied */
	unsigned step_ms;		/* one request step answered (AN3155 ack_ms), default 1000 */
	unsigned block_ms;		/* a data block written or read, default 1000 */
	unsigned answer_ms;		/* an OSFI answer (the chip works), default 15000 */
	unsigned retries;		/* extra attempts after a lost or garbled answer, default 2 */
	/* Monotonic clock in milliseconds; NULL: CLOCK_MONOTONIC. Deadlines use it. */
	int64_t (*now_ms)(void *user_data);
	/* The port vanished while no operation ran (an operation gets -TRANSPORT_E_GONE
	 * instead); NULL to learn it at the next operation. */
	void (*lost)(struct transport *t, void *user_data);
	/* Raw frames, retries and resyncs, one line each; NULL for silence. */
	void (*debug)(void *user_data, const char *line);
	void *user_data;
};

/* Fills *o with the defaults above. */
void transport_options_default(struct transport_options *o);

/* ---- Results and the loop's view ---- */

enum transport_presence {
	TRANSPORT_ABSENT,		/* (only as a result of a failed probe: r < 0) */
	TRANSPORT_PRESENT,		/* the bootloader that answered before */
	TRANSPORT_FRESH,		/* a bootloader that just started: new or reset chip */
};

#define TRANSPORT_PROBE_ENTER 0x1u	/* enter the bootloader first (UART entry sequence) */

struct transport_identity {
	uint32_t pid;			/* product id, 0x484 for STM32H56x/H57x */
	uint8_t version;		/* bootloader protocol version, 0x40 = 4.0 */
	bool osfi;			/* carries OSFI requests (UART: Get ID, 0x50 and 0x51) */
	/* pid is 0 when the bootloader does not say (UART: no Get ID in its list). */
};

struct transport_answer {
	uint16_t status;		/* OSFI status */
	size_t len;			/* answer bytes written */
};

#define TRANSPORT_IN 0x1u
#define TRANSPORT_OUT 0x2u
#define TRANSPORT_ERR 0x4u

struct transport_watch {
	int fd;				/* -1: nothing to watch */
	unsigned events;		/* TRANSPORT_IN / TRANSPORT_OUT */
	int64_t deadline_ms;		/* on the options' clock; -1: none */
};

/* ---- Backends ---- */

/* One backend: a table in the style of libusb's usbi_os_backend. Each starter returns 0
 * (the operation runs; the backend later calls transport_complete() exactly once) or a
 * negative error (nothing started, no callback). Backends find their state with
 * transport_priv(). */
struct transport_ops {
	const char *name;		/* "uart", "dfu" */
	/* True when spec is for this backend. */
	bool (*handles)(const char *spec);
	size_t priv_size;		/* allocated zeroed before open, freed after close */
	/* Opens the port or device: 0, or a negative errno with one sentence in err. */
	int (*open)(struct transport *t, const char *spec, char *err, size_t err_size);
	/* Releases everything; a running operation is dropped without its callback. */
	void (*close)(struct transport *t);
	/* What the loop must watch now (see struct transport_watch). */
	void (*watch)(const struct transport *t, struct transport_watch *ret);
	/* The descriptor is ready (revents: TRANSPORT_IN/OUT/ERR) or the deadline passed (0). */
	void (*io_ready)(struct transport *t, unsigned revents);
	int (*probe)(struct transport *t, unsigned flags, enum transport_presence *ret);
	int (*identify)(struct transport *t, struct transport_identity *ret);
	int (*osfi)(struct transport *t, const struct osfi_request *req, uint8_t *answer,
		    size_t answer_max, struct transport_answer *ret);
	int (*reconnect)(struct transport *t, unsigned within_ms);
	/* Memory operations (see above); NULL when the backend has none (-ENOTSUP). */
	int (*read)(struct transport *t, uint32_t addr, uint8_t *buf, size_t len);
	int (*write)(struct transport *t, uint32_t addr, const uint8_t *data, size_t len);
	int (*erase)(struct transport *t, const uint16_t *sectors, size_t n);
	int (*go)(struct transport *t, uint32_t addr);
	void (*cancel)(struct transport *t);
	/* The last failure as one sentence ("Special GET_CERT: timeout at the answer step"). */
	void (*describe)(const struct transport *t, char *buf, size_t size);
	/* The resolved device ("/dev/ttyUSB3", "1-3 (dev 7)"). */
	const char *(*port_name)(const struct transport *t);
};

/* The backend's private state (priv_size bytes). */
void *transport_priv(const struct transport *t);
/* The options the link was opened with. */
const struct transport_options *transport_options(const struct transport *t);
/* The clock of the options. */
int64_t transport_now_ms(const struct transport *t);
/* A time on that clock no earlier than ms milliseconds from now: the monotonic clock's
 * milliseconds are whole, so "now + ms" may come up to 1 ms early; this rounds up from the
 * microsecond (an injected clock is taken as it counts). For waits a device asks for. */
int64_t transport_after_ms(const struct transport *t, unsigned ms);
/* Backends: the running operation ended with r. Call it last: the callback may start the
 * next operation or close the link. */
void transport_complete(struct transport *t, int r);
/* Backends: one line to the options' debug callback. */
__attribute__((format(printf, 2, 3)))
void transport_debug(const struct transport *t, const char *fmt, ...);

extern const struct transport_ops transport_uart_ops;

/* ---- Using a link ---- */

/* Opens the port named by spec with the backend that handles it (o may be NULL for the
 * defaults). Returns 0 and sets *ret, or a negative errno with one sentence in err:
 * -ENODEV no such port, -ENOTUNIQ several match, -EACCES/-EBUSY from the system. */
int transport_open(const char *spec, const struct transport_options *o, struct transport **ret,
		   char *err, size_t err_size);
/* The same with a given backend (tests: an in-memory link). */
int transport_open_with(const struct transport_ops *ops, const char *spec,
			const struct transport_options *o, struct transport **ret, char *err,
			size_t err_size);
/* Closes the link; a running operation is dropped without its callback. Accepts NULL;
 * returns NULL. */
struct transport *transport_close(struct transport *t);

const struct transport_ops *transport_backend(const struct transport *t);
const char *transport_port_name(const struct transport *t);
/* True while an operation runs. */
bool transport_busy(const struct transport *t);
void transport_watch(const struct transport *t, struct transport_watch *ret);
void transport_io_ready(struct transport *t, unsigned revents);
/* One sentence about the last failed operation ("" if none). */
void transport_describe(const struct transport *t, char *buf, size_t size);

/* Starters: 0 and the callback later, or a negative error at once (-EBUSY while another
 * operation runs). Result pointers are written before the callback runs, on success. */
int transport_probe(struct transport *t, unsigned flags, enum transport_presence *ret,
		    transport_done_fn done, void *user_data);
int transport_identify(struct transport *t, struct transport_identity *ret,
		       transport_done_fn done, void *user_data);
/* req's buffers and answer are borrowed until the callback. */
int transport_osfi(struct transport *t, const struct osfi_request *req, uint8_t *answer,
		   size_t answer_max, struct transport_answer *ret, transport_done_fn done,
		   void *user_data);
int transport_reconnect(struct transport *t, unsigned within_ms, transport_done_fn done,
			void *user_data);
/* Memory operations: buf, data and sectors are borrowed until the callback. len >= 1;
 * n == 0 erases all flash. */
int transport_read(struct transport *t, uint32_t addr, uint8_t *buf, size_t len,
		   transport_done_fn done, void *user_data);
int transport_write(struct transport *t, uint32_t addr, const uint8_t *data, size_t len,
		    transport_done_fn done, void *user_data);
int transport_erase(struct transport *t, const uint16_t *sectors, size_t n,
		    transport_done_fn done, void *user_data);
int transport_go(struct transport *t, uint32_t addr, transport_done_fn done, void *user_data);
void transport_cancel(struct transport *t);
/* The write unit at addr: 16 in the STM32H5's flash and OTP, 4 elsewhere. */
unsigned transport_write_unit(uint32_t addr);

/* Blocking use: runs the link with poll() until the running operation ends; returns its
 * result (0 at once when none runs). */
int transport_wait(struct transport *t);
/* Blocking forms of the starters. */
int transport_probe_sync(struct transport *t, unsigned flags, enum transport_presence *ret);
int transport_identify_sync(struct transport *t, struct transport_identity *ret);
int transport_osfi_sync(struct transport *t, const struct osfi_request *req, uint8_t *answer,
			size_t answer_max, struct transport_answer *ret);
int transport_reconnect_sync(struct transport *t, unsigned within_ms);
int transport_read_sync(struct transport *t, uint32_t addr, uint8_t *buf, size_t len);
int transport_write_sync(struct transport *t, uint32_t addr, const uint8_t *data, size_t len);
int transport_erase_sync(struct transport *t, const uint16_t *sectors, size_t n);
int transport_go_sync(struct transport *t, uint32_t addr);

/* The UART backend's AN3155 link, for AN3155 commands beyond OSFI (sfi-boot's read, write,
 * erase, go); NULL for another backend. */
struct link *transport_uart_link(struct transport *t);

/* USB DFU 1.1 with ST's DfuSe extensions (AN3156), host side: descriptor and answer
 * decoders and a sans-I/O transaction engine. Pure code: no I/O, no clocks, no logging, no
 * allocation.
 *
 * The engine runs one operation (make the device idle, set the address pointer, erase,
 * read or write a memory range, leave, one OSFI request). A driver asks it what to do with
 * dfuse_xfer_next(): run the control transfer it describes (the driver adds wIndex, the
 * interface number) and report with dfuse_xfer_control_done(), or wait the time it names
 * (the device's bwPollTimeout) and report with dfuse_xfer_waited(). When dfuse_xfer_next()
 * says DONE the result accessors are valid; FAILED gives an error from dfuse_xfer_result().
 * After any failure the engine has tried to leave the device in dfuIDLE (CLRSTATUS after
 * dfuERROR); resynchronising after a timeout or a lost device is the driver's policy. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfuse-wire.h"
#include "sfi-error.h"

/* Errors are those of sfi-error.h's DfuSe block (-DFUSE_E_STALL ...), or negative errno.
 * The same as sfi_strerror(). */
const char *dfuse_strerror(int r);

/* ---- Decoders ---- */

/* GETSTATUS answer. */
struct dfuse_status {
	uint8_t status;		/* DFU_STATUS_* */
	uint32_t poll_ms;	/* bwPollTimeout */
	uint8_t state;		/* DFU_STATE_* */
	uint8_t istring;
};
/* Decodes a 6-byte GETSTATUS answer. Returns 0 or -DFUSE_E_PROTOCOL (wrong length, a state
 * or status beyond the ones DFU 1.1 defines). */
int dfuse_decode_status(const uint8_t *buf, size_t n, struct dfuse_status *ret);
/* Static names: "dfuDNLOAD-IDLE", "errWRITE" ("unknown state" / "unknown status"). */
const char *dfuse_state_name(uint8_t state);
const char *dfuse_status_name(uint8_t status);
/* One operator sentence for a status: what the device reports and what to do. */
const char *dfuse_status_sentence(uint8_t status);

#define DFUSE_MAX_ALTS 16

/* One alternate setting of a DFU-mode interface. */
struct dfuse_alt {
	uint8_t interface;
	uint8_t alt;
	uint8_t istring;	/* iInterface: index of its name (the DfuSe memory layout) */
};

/* What a configuration descriptor says about DFU. */
struct dfuse_config {
	uint8_t n_alts;
	struct dfuse_alt alts[DFUSE_MAX_ALTS];
	bool has_functional;	/* a DFU functional descriptor was found */
	uint8_t attributes;	/* DFU_ATTR_* */
	uint16_t detach_timeout_ms;
	uint16_t transfer_size;	/* wTransferSize */
	uint16_t dfu_version;	/* bcdDFUVersion (0x011a for DfuSe) */
};
/* Walks a whole configuration descriptor (header, interfaces, class descriptors) and
 * collects the DFU-mode interfaces' alternate settings (class 0xfe, subclass 1, protocol 2)
 * and the DFU functional descriptor. Returns 0, or -DFUSE_E_PROTOCOL when the descriptor
 * chain is malformed (a length below 2 or beyond the buffer, wTotalLength beyond the
 * data), no DFU-mode interface is present, more than DFUSE_MAX_ALTS alts, or the
 * functional descriptor is missing, short or has wTransferSize 0. */
int dfuse_parse_config(const uint8_t *buf, size_t n, struct dfuse_config *ret);

/* Device descriptor fields the host uses. */
struct dfuse_device {
	uint16_t vid, pid;
	uint16_t bcd_device;	/* high byte: bootloader version on ST's ROMs */
	uint8_t iserial;
	uint8_t n_configs;
};
/* Decodes an 18-byte device descriptor. Returns 0 or -DFUSE_E_PROTOCOL. */
int dfuse_parse_device(const uint8_t *buf, size_t n, struct dfuse_device *ret);

/* Decodes a string descriptor (UTF-16LE) into NUL-terminated ASCII, characters outside
 * ASCII as '?'. Returns the length written (without NUL) or -DFUSE_E_PROTOCOL
 * (bad header, odd length), -ENOBUFS when out cannot hold it. */
int dfuse_decode_string(const uint8_t *buf, size_t n, char *out, size_t outmax);

#define DFUSE_MAX_SEGMENTS 8
#define DFUSE_NAME_MAX 48

/* One run of equal sectors of a memory layout. */
struct dfuse_segment {
	uint32_t start;		/* first address */
	uint32_t count;		/* sectors */
	uint32_t sector_size;	/* bytes */
	uint8_t attrs;		/* DFUSE_MEM_* */
};

/* A DfuSe memory layout: "@Internal Flash   /0x08000000/256*08Kg". */
struct dfuse_layout {
	char name[DFUSE_NAME_MAX];	/* trailing spaces stripped */
	uint8_t n_segments;
	struct dfuse_segment seg[DFUSE_MAX_SEGMENTS];
};
/* Parses an alt string: '@', a name, then one or more "/0xADDR/" groups each followed by
 * comma-separated "N*SIZE[ |B|K|M]L" runs (L in 'a'..'g'). Returns 0 or -EINVAL; runs past
 * 4 GiB or more than DFUSE_MAX_SEGMENTS runs are refused. */
int dfuse_parse_layout(const char *s, struct dfuse_layout *ret);
/* The run holding addr, or NULL; *ret_sector_start (optional) gets the start of the sector
 * that holds it. */
const struct dfuse_segment *dfuse_layout_find(const struct dfuse_layout *l, uint32_t addr,
					      uint32_t *ret_sector_start);
/* True when [addr, addr + len) lies inside the layout in runs that all have the given
 * attributes (DFUSE_MEM_*). */
bool dfuse_layout_covers(const struct dfuse_layout *l, uint32_t addr, uint32_t len,
			 uint8_t attrs);

/* Get command answer (UPLOAD block 0): the command codes the device supports. */
struct dfuse_commands {
	uint8_t n;
	uint8_t codes[32];
};
/* Returns 0 or -DFUSE_E_PROTOCOL (empty, longer than 32, first code not 0x00). */
int dfuse_decode_commands(const uint8_t *buf, size_t n, struct dfuse_commands *ret);
bool dfuse_commands_has(const struct dfuse_commands *c, uint8_t code);

/* ---- OSFI over DfuSe frames (docs/protocol.md §11) ---- */

/* Request: LE16 sub-opcode, LE16 n1, p1, p2. Returns the frame length, -EINVAL (n1 above
 * 0xffff), or -ENOBUFS when it exceeds outmax (the caller passes wTransferSize). */
int dfuse_osfi_encode_request(uint16_t subop, const uint8_t *p1, size_t n1, const uint8_t *p2,
			      size_t n2, uint8_t *out, size_t outmax);
/* Answer: LE16 status, then the answer data (borrowed from buf). Returns 0 or
 * -DFUSE_E_PROTOCOL when shorter than 2 bytes. */
int dfuse_osfi_decode_answer(const uint8_t *buf, size_t n, uint16_t *ret_status,
			     const uint8_t **ret_data, size_t *ret_len);
/* Largest PUT_DATA chunk a transfer size allows: wTransferSize - 8, at most 1024. */
size_t dfuse_osfi_max_chunk(uint16_t transfer_size);

/* ---- Transaction engine ---- */

struct dfuse_timeouts {
	unsigned control_ms;	 /* each control transfer */
	unsigned block_ms;	 /* busy time allowed for a block write or the address pointer */
	unsigned page_erase_ms;	 /* busy time allowed per erased page */
	unsigned mass_erase_ms;	 /* busy time allowed for a mass erase */
	unsigned osfi_ms;	 /* busy time allowed for an OSFI sub-command (§10.5: 15 s) */
};
/* Defaults: 1 s per transfer, 5 s per block, 5 s per page, 35 s mass erase, 15 s OSFI. */
void dfuse_timeouts_default(struct dfuse_timeouts *t);

enum dfuse_next {
	DFUSE_NEXT_CONTROL,	/* run io.ctl, then dfuse_xfer_control_done() */
	DFUSE_NEXT_WAIT,	/* wait io.wait_ms, then dfuse_xfer_waited() */
	DFUSE_NEXT_DONE,	/* finished; results valid */
	DFUSE_NEXT_FAILED,	/* finished; dfuse_xfer_result() < 0 */
};

/* One control transfer on the DFU interface (the driver sets wIndex). */
struct dfuse_control {
	uint8_t request_type;	/* DFU_REQTYPE_OUT or DFU_REQTYPE_IN */
	uint8_t request;	/* DFU_REQ_* */
	uint16_t value;		/* wValue: the block number for DNLOAD and UPLOAD */
	uint16_t length;	/* wLength: bytes sent (out) or at most received (in) */
	const uint8_t *data;	/* out: the bytes to send, valid until the next engine call */
	unsigned timeout_ms;
};

struct dfuse_io {
	struct dfuse_control ctl;	/* DFUSE_NEXT_CONTROL */
	unsigned wait_ms;		/* DFUSE_NEXT_WAIT */
};

/* Steps of an operation, used to say where it failed. */
enum dfuse_step {
	DFUSE_STEP_IDLE,	/* bringing the device to dfuIDLE */
	DFUSE_STEP_ADDRESS,	/* Set Address Pointer */
	DFUSE_STEP_ERASE,	/* Erase */
	DFUSE_STEP_COMMANDS,	/* Get commands */
	DFUSE_STEP_DOWNLOAD,	/* a data block DNLOAD and its GETSTATUS */
	DFUSE_STEP_UPLOAD,	/* a data block UPLOAD */
	DFUSE_STEP_LEAVE,	/* the zero-length DNLOAD */
	DFUSE_STEP_REQUEST,	/* OSFI request DNLOAD and its GETSTATUS */
	DFUSE_STEP_ANSWER,	/* OSFI answer UPLOAD */
	_DFUSE_STEP_MAX,
};
const char *dfuse_step_to_string(enum dfuse_step s);

enum dfuse_op {
	DFUSE_OP_NONE,
	DFUSE_OP_IDLE,
	DFUSE_OP_GET_STATUS,
	DFUSE_OP_COMMANDS,
	DFUSE_OP_SET_ADDRESS,
	DFUSE_OP_ERASE_PAGE,
	DFUSE_OP_MASS_ERASE,
	DFUSE_OP_READ,
	DFUSE_OP_WRITE,
	DFUSE_OP_LEAVE,
	DFUSE_OP_OSFI,
	_DFUSE_OP_MAX,
};
const char *dfuse_op_to_string(enum dfuse_op op);

/* One operation. Allocate it anywhere; fields are private. */
struct dfuse_xfer {
	struct dfuse_timeouts t;
	enum dfuse_op op;
	uint16_t ts;		/* wTransferSize */
	uint8_t stage;		/* position in the operation */
	uint8_t phase;		/* what the current transfer or wait is */
	enum dfuse_step step;
	enum dfuse_next next;
	struct dfuse_io io;
	int result;		/* 1 running, 0 done, < 0 error */
	int pending_error;	/* error to report once the recovery transfers are done */
	bool committed;		/* a request that changes the device reached it */
	bool recovering;
	uint8_t rounds;		/* make-idle rounds */
	unsigned busy_ms, busy_budget;

	uint8_t tx[DFUSE_TRANSFER_MAX];

	/* Parameters; caller buffers are borrowed until the operation ends. */
	uint32_t addr;
	size_t len, done;
	uint16_t block;
	const uint8_t *data;
	uint8_t *out;
	size_t out_max;
	bool want_answer, has_leave_addr, idle_first;

	/* Results. */
	struct dfuse_status status;	/* the last GETSTATUS answer */
	uint8_t dfu_status;		/* the bStatus that failed the operation (OK if none) */
	struct dfuse_commands cmds;
	uint16_t osfi_status;
	bool osfi_refused;		/* GETSTATUS said errVENDOR */
	size_t answer_len;
};

/* Each starter resets *x for one operation; those with arguments return 0 or -EINVAL.
 * transfer_size is the interface's wTransferSize (1..DFUSE_TRANSFER_MAX). */
/* GETSTATUS until dfuIDLE: CLRSTATUS from dfuERROR, ABORT from the other idle states. */
void dfuse_xfer_idle(struct dfuse_xfer *x, const struct dfuse_timeouts *t);
/* One GETSTATUS, nothing else. */
void dfuse_xfer_get_status(struct dfuse_xfer *x, const struct dfuse_timeouts *t);
/* Idle, then UPLOAD block 0 (the Get command list), then ABORT. */
int dfuse_xfer_commands(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
			uint16_t transfer_size);
/* Idle, then Set Address Pointer. */
void dfuse_xfer_set_address(struct dfuse_xfer *x, const struct dfuse_timeouts *t, uint32_t addr);
/* Idle, then Erase of the page holding addr. */
void dfuse_xfer_erase_page(struct dfuse_xfer *x, const struct dfuse_timeouts *t, uint32_t addr);
/* Erase of the page holding addr right after an erase that succeeded (the device is in
 * dfuDNLOAD-IDLE, which takes the next command): no GETSTATUS first. */
void dfuse_xfer_erase_page_next(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
				uint32_t addr);
/* Idle, then mass erase. */
void dfuse_xfer_mass_erase(struct dfuse_xfer *x, const struct dfuse_timeouts *t);
/* Idle, Set Address Pointer, ABORT, UPLOAD blocks 2.. (wTransferSize each, the last one
 * shorter), ABORT. len 1..(0xffff - 2) * transfer_size. */
int dfuse_xfer_read(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
		    uint16_t transfer_size, uint32_t addr, uint8_t *out, size_t len);
/* Idle, Set Address Pointer, DNLOAD blocks 2.. each followed by GETSTATUS until
 * dfuDNLOAD-IDLE, ABORT. Same bounds as read. The memory must be erased by the caller. */
int dfuse_xfer_write(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
		     uint16_t transfer_size, uint32_t addr, const uint8_t *data, size_t len);
/* Idle, Set Address Pointer (when has_addr), zero-length DNLOAD, GETSTATUS. The device
 * leaves DFU mode: a failed or unanswered transfer after the zero-length DNLOAD was
 * accepted counts as success. */
void dfuse_xfer_leave(struct dfuse_xfer *x, const struct dfuse_timeouts *t, bool has_addr,
		      uint32_t addr);
/* One OSFI request on the OSFI alt (§11): DNLOAD block 2 of the frame, GETSTATUS until the
 * result; then, when want_answer or the sub-command was refused (errVENDOR), UPLOAD block 2
 * for the status and answer data (<= out_max bytes to out). With idle_first the device is
 * first brought to dfuIDLE (after a failed operation). The frame must fit transfer_size. */
int dfuse_xfer_osfi(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
		    uint16_t transfer_size, bool idle_first, uint16_t subop, const uint8_t *p1,
		    size_t n1, const uint8_t *p2, size_t n2, bool want_answer, uint8_t *out,
		    size_t out_max);

/* What to do now. Fills *io for CONTROL and WAIT. */
enum dfuse_next dfuse_xfer_next(const struct dfuse_xfer *x, struct dfuse_io *io);
/* The control transfer finished: r = 0 with the bytes received (IN) or sent (OUT), or
 * -DFUSE_E_STALL, -DFUSE_E_TIMEOUT, -DFUSE_E_GONE, another negative errno. */
void dfuse_xfer_control_done(struct dfuse_xfer *x, int r, const uint8_t *in, size_t n);
/* The wait asked for is over. */
void dfuse_xfer_waited(struct dfuse_xfer *x);
/* The device vanished (hotplug departure) while a transfer or wait was pending. */
void dfuse_xfer_gone(struct dfuse_xfer *x);

/* 0 when done, a negative error when failed, 1 while running. */
int dfuse_xfer_result(const struct dfuse_xfer *x);
enum dfuse_step dfuse_xfer_step(const struct dfuse_xfer *x);
/* True once a request that changes the device (erase, data block, OSFI request) was
 * accepted: repeating the operation may repeat its effect. */
bool dfuse_xfer_committed(const struct dfuse_xfer *x);
/* The DFU status that failed the operation (DFU_STATUS_OK if none). */
uint8_t dfuse_xfer_dfu_status(const struct dfuse_xfer *x);
/* Writes "write: the device reported errWRITE at 0x08004000 (...)" style text. */
void dfuse_xfer_describe(const struct dfuse_xfer *x, char *buf, size_t size);

/* Results after DONE. */
const struct dfuse_status *dfuse_xfer_last_status(const struct dfuse_xfer *x);
const struct dfuse_commands *dfuse_xfer_command_list(const struct dfuse_xfer *x);
/* OSFI: the sub-command's status and the answer data length written to out. */
uint16_t dfuse_xfer_osfi_status(const struct dfuse_xfer *x);
size_t dfuse_xfer_answer_len(const struct dfuse_xfer *x);

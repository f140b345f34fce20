/* The USB DFU side of an emulated chip: what the STM32 system bootloader answers on USB
 * (AN3156, "DfuSe": DFU 1.1 plus ST's block-0 commands) and the OSFI alternate setting
 * (docs/protocol.md). Pure: no I/O, no clock of its own. The umockdev harness (emu-usb.c)
 * feeds it control requests and models their time on the bus; the fuzz target can drive it in
 * memory. Constants are this file's own reading of AN3156 and DFU 1.1. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emu-internal.h"

/* DFU class requests (bRequest). */
enum {
	EMU_DFU_DETACH = 0,
	EMU_DFU_DNLOAD = 1,
	EMU_DFU_UPLOAD = 2,
	EMU_DFU_GETSTATUS = 3,
	EMU_DFU_CLRSTATUS = 4,
	EMU_DFU_GETSTATE = 5,
	EMU_DFU_ABORT = 6,
};

/* bState. */
enum {
	EMU_DFU_APP_IDLE = 0,
	EMU_DFU_APP_DETACH = 1,
	EMU_DFU_IDLE = 2,
	EMU_DFU_DNLOAD_SYNC = 3,
	EMU_DFU_DNBUSY = 4,
	EMU_DFU_DNLOAD_IDLE = 5,
	EMU_DFU_MANIFEST_SYNC = 6,
	EMU_DFU_MANIFEST = 7,
	EMU_DFU_MANIFEST_WAIT_RESET = 8,
	EMU_DFU_UPLOAD_IDLE = 9,
	EMU_DFU_ERROR = 10,
};

/* bStatus. */
enum {
	EMU_DFU_OK = 0,
	EMU_DFU_ERR_TARGET = 1,
	EMU_DFU_ERR_FILE = 2,
	EMU_DFU_ERR_WRITE = 3,
	EMU_DFU_ERR_ERASE = 4,
	EMU_DFU_ERR_CHECK_ERASED = 5,
	EMU_DFU_ERR_PROG = 6,
	EMU_DFU_ERR_VERIFY = 7,
	EMU_DFU_ERR_ADDRESS = 8,
	EMU_DFU_ERR_NOTDONE = 9,
	EMU_DFU_ERR_FIRMWARE = 10,
	EMU_DFU_ERR_VENDOR = 11,
	EMU_DFU_ERR_USBR = 12,
	EMU_DFU_ERR_POR = 13,
	EMU_DFU_ERR_UNKNOWN = 14,
	EMU_DFU_ERR_STALLEDPKT = 15,
};

/* DfuSe commands in DNLOAD block 0. */
#define EMU_DFUSE_GET_COMMANDS 0x00
#define EMU_DFUSE_SET_ADDRESS 0x21
#define EMU_DFUSE_ERASE 0x41

#define EMU_DFU_VID 0x0483
#define EMU_DFU_PID 0xdf11
#define EMU_DFU_BCD_DFU 0x011a	/* DfuSe marker in the functional descriptor */
#define EMU_DFU_TRANSFER_DEFAULT 2048
#define EMU_DFU_MAX_ALTS 4
#define EMU_DFU_OSFI_PREFIX "@OSFI v1"

/* Flash and firmware times of the model, in nanoseconds (docs/emulator.md names their
 * source). */
struct emu_dfu_timing {
	uint64_t prog_unit_ns;	  /* one write unit (16-byte quad-word on the H5) */
	uint64_t erase_sector_ns; /* one 8 KiB sector */
	uint64_t erase_bank_ns;	  /* one bank (mass erase takes both banks in parallel) */
	uint64_t command_ns;	  /* firmware time of a request that touches no flash */
};

/* The flash times of the profile's part from its datasheet (docs/emulator.md). */
struct emu_dfu_timing emu_dfu_timing_datasheet(const struct emu_profile *prof);

struct emu_dfu_config {
	uint16_t transfer_size; /* wTransferSize, 64..4096 (a multiple of 64) */
	bool osfi;		/* the OSFI alternate setting is present */
	struct emu_dfu_timing timing;
};

/* Fault kinds the harness may ask for at a DNLOAD data block (emu-usb.c parses --fault). */
struct emu_dfu;

/* What a control request did: the harness turns it into a URB status and a time. */
struct emu_dfu_result {
	size_t len;	   /* IN: bytes answered (<= wLength); OUT: bytes taken */
	bool stall;	   /* the request is stalled (-EPIPE) */
	uint64_t busy_ns;  /* the chip is busy (NAKs every request) this long after it */
	uint32_t poll_ms;  /* bwPollTimeout this answer gave: no request is due before it */
	bool reset;	   /* the device resets after this request: re-enumeration */
};

int emu_dfu_new(const struct emu_dfu_config *cfg, const struct emu_profile *prof,
		struct emu_dfu **ret);
void emu_dfu_free(struct emu_dfu *d);

/* The chip behind the device; NULL while the slot is empty. */
void emu_dfu_set_chip(struct emu_dfu *d, struct emu_chip *c);

/* A USB reset or a new enumeration: dfuIDLE, status OK, pointer at the flash base. */
void emu_dfu_reset(struct emu_dfu *d);

/* Standard descriptors as the device answers GET_DESCRIPTOR: device (18 bytes) followed by
 * the configuration descriptor (what sysfs's `descriptors` file holds). Returns the length. */
size_t emu_dfu_descriptors(const struct emu_dfu *d, uint8_t *buf, size_t max);

/* The USB serial number string as ST's ROM derives it from the UID (12 hex digits). */
void emu_dfu_serial(const struct emu_dfu *d, char *buf, size_t len);

/* The interface's alternate setting selected by the host (SET_INTERFACE). Returns 0 or
 * -EINVAL for a setting the device does not have. */
int emu_dfu_set_alt(struct emu_dfu *d, unsigned alt);
unsigned emu_dfu_alt_count(const struct emu_dfu *d);

/* One control transfer: setup packet, data stage (OUT: the host's bytes; IN: filled, at most
 * wLength). */
void emu_dfu_control(struct emu_dfu *d, const uint8_t setup[8], uint8_t *data,
		     struct emu_dfu_result *res);

/* Fault hook: the next DNLOAD data block numbered `block` (>= 2) on any memory alternate
 * setting ends in dfuERROR with `status` instead of being written. */
void emu_dfu_fail_block(struct emu_dfu *d, unsigned block, uint8_t status);

/* Current bState (for logs and tests). */
uint8_t emu_dfu_state(const struct emu_dfu *d);

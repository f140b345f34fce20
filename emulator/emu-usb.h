/* The seam between h5emu's loop and the USB DFU harness (emu-usb.c), which presents chips as
 * USB DfuSe devices (0483:DF11) to libusb clients running under umockdev's preload. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emu-dfu.h"

struct emu_usb_ops {
	/* The chip model is shared with the loop's thread: the harness holds this lock while it
	 * runs a request on a chip. */
	void (*lock)(void *user_data);
	void (*unlock)(void *user_data);
	/* Called with the lock held: the chip in slot `index`, or NULL when the slot is empty. */
	struct emu_chip *(*chip)(void *user_data, unsigned index);
	/* Called with the lock held: the chip of slot `index` reset itself (DFU leave, OSFI
	 * FINALIZE) and re-enumerates. */
	void (*chip_reset)(void *user_data, unsigned index);
	/* Called with the lock held: the host sent a request to slot `index`. */
	void (*activity)(void *user_data, unsigned index);
	void *user_data;
};

/* USB faults (--fault with dfu=…, see docs/emulator.md). */
enum emu_usb_fault_action {
	EMU_USB_FAULT_STALL,	  /* the request is stalled */
	EMU_USB_FAULT_SILENT,	  /* the request never completes (no answer) */
	EMU_USB_FAULT_DFU_ERROR,  /* the data block ends in dfuERROR with `status` */
	EMU_USB_FAULT_UNPLUG,	  /* the device goes away during the request */
	EMU_USB_FAULT_REENUMERATE, /* unplug, then back at a new device number */
	EMU_USB_FAULT_DELAY,	  /* the request completes `ms` late (e.g. a slow GETSTATUS) */
};

struct emu_usb_fault {
	int chip;		/* -1: any */
	int request;		/* DFU bRequest, -1: any */
	int block;		/* wBlockNum, -1: any */
	int alt;		/* alternate setting, -1: any */
	unsigned nth;		/* fires from the nth matching request (1-based) */
	bool repeat;
	enum emu_usb_fault_action action;
	uint32_t ms;		/* delay; unplug: time until replug (0: stays away) */
	uint8_t status;		/* dfu-error: bStatus */
	unsigned seen;
	bool spent;
};

/* Parses the USB part of a --fault SPEC ("dfu=REQ,..."). Returns 0, 1 when SPEC is not a
 * USB fault (no dfu= key), or -EINVAL with a message in err. */
int emu_usb_fault_parse(const char *spec, struct emu_usb_fault *ret, char *err, size_t err_len);

struct emu_usb_config {
	unsigned count;			/* slots 0..count-1, each on its own port */
	const struct emu_profile *profile;
	struct emu_dfu_config dfu;
	struct emu_usb_fault *faults;	/* shared with the caller, may be NULL */
	size_t n_faults;
	uint32_t reenumerate_ms;	/* time a resetting chip stays away from the bus */
	bool verbose;
};

struct emu_usb;

/* Adds the USB bus (root hub, a hub, one DfuSe device per slot holding a chip) to `testbed`
 * (a UMockdevTestbed*, shared with the serial harness), or to a testbed of its own when
 * NULL. This process must run under libumockdev-preload (uevents). Returns 0 or -errno. */
int emu_usb_start(const struct emu_usb_config *cfg, const struct emu_usb_ops *ops,
		  void *testbed, struct emu_usb **ret);

/* KEY=VALUE lines a client needs (UMOCKDEV_DIR, LD_PRELOAD) into `path`. */
int emu_usb_write_env(struct emu_usb *u, const char *path);

/* The physical port path of slot `index` ("2-1.3"), stable across re-enumerations. */
const char *emu_usb_port_path(struct emu_usb *u, unsigned index);

/* True while the slot's cable is in (a USB unplug fault takes it out). */
bool emu_usb_cable(struct emu_usb *u, unsigned index);

/* Current USB device number of slot `index`, 0 while nothing is enumerated there. */
unsigned emu_usb_devnum(struct emu_usb *u, unsigned index);

/* The cable: unplug takes the device away (remove uevent, in-flight requests fail with
 * ENODEV); plug brings it back at a new device number when the slot holds a chip. Call
 * without the chip lock held. Returns 0 or -errno. */
int emu_usb_unplug(struct emu_usb *u, unsigned index);
int emu_usb_plug(struct emu_usb *u, unsigned index);
/* The slot's chip changed (inserted, removed, swapped): re-enumerates as the new chip, or
 * goes away when the slot is empty. Call without the chip lock held. */
int emu_usb_chip_changed(struct emu_usb *u, unsigned index);

void emu_usb_stop(struct emu_usb *u);

/* True when this process already runs under libumockdev-preload. */
bool emu_usb_preloaded(void);

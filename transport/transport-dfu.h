/* The USB DfuSe backend of the link vtable (transport.h): what it offers beyond the vtable,
 * for sfi-boot's info, read, write, erase and leave over DFU.
 *
 * Port specifications:
 *   dfu:usb:PATH    the DfuSe device on physical port PATH ("2-1.3": bus 2, hub port 1,
 *                   port 3), followed there when it re-enumerates with a new device number
 *   dfu:serial:SN   the DfuSe device whose USB serial string is SN (only to pick the port:
 *                   the chip is identified by the UID it reports, never by this string)
 *   dfu:PATH        short for dfu:usb:PATH
 *   dfu:            the only DfuSe device present (refused when there are several)
 *
 * The memory operations below block (they run the link with transport_wait()) and return
 * 0 or a negative error of the DfuSe block (sfi-error.h) or errno, with one sentence from
 * transport_describe(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfuse.h"
#include "transport.h"

extern const struct transport_ops transport_dfu_ops;

struct libusb_device_handle;

/* libusb_set_interface_alt_setting() on an open handle, safe when the device has just left
 * the bus (libusb 1.0.25 and 1.0.26 otherwise break the handle's mutex, and closing the
 * handle aborts). Returns libusb's result. */
int transport_dfu_set_alt(struct libusb_device_handle *h, int iface, int alt);

struct transport_dfu_alt {
	uint8_t alt;
	char name[128];			/* the alt string ("@Internal Flash   /0x08000000/...") */
	bool has_layout;
	struct dfuse_layout layout;
};

struct transport_dfu_info {
	char path[32];			/* physical port path "2-1.3" */
	uint8_t devnum;
	uint16_t vid, pid, bcd_device;	/* bootloader version: bcd_device >> 8 */
	char serial[64];		/* the USB serial string ("" if none) */
	uint16_t transfer_size;		/* wTransferSize of the functional descriptor */
	uint16_t dfu_version;		/* bcdDFUVersion */
	uint8_t attributes;
	uint8_t n_alts;
	struct transport_dfu_alt alts[DFUSE_MAX_ALTS];
	int osfi_alt;			/* index into alts of "@OSFI v1", -1 if none */
};

/* Checks a dfu: port specification without opening it: 0, or -EINVAL with a sentence. */
int transport_dfu_spec_check(const char *spec, char *err, size_t err_size);
/* True when t is a DfuSe link. */
bool transport_is_dfu(const struct transport *t);
/* Attaches to the device if needed and describes it (descriptors and alt strings). */
int transport_dfu_info(struct transport *t, struct transport_dfu_info *ret);
/* The Get command list of alternate alt (UPLOAD block 0). */
int transport_dfu_commands(struct transport *t, uint8_t alt, struct dfuse_commands *ret);
/* Reads len bytes at addr through alternate alt. */
int transport_dfu_read(struct transport *t, uint8_t alt, uint32_t addr, uint8_t *buf,
		       size_t len);
/* Writes len bytes at addr through alternate alt (the memory must be erased). */
int transport_dfu_write(struct transport *t, uint8_t alt, uint32_t addr, const uint8_t *data,
			size_t len);
/* Erases every sector of alternate alt's layout that [addr, addr + len) touches, one page
 * erase each. */
int transport_dfu_erase(struct transport *t, uint8_t alt, uint32_t addr, size_t len);
/* Mass erase through alternate alt. */
int transport_dfu_mass_erase(struct transport *t, uint8_t alt);
/* Leaves DFU mode (zero-length DNLOAD), jumping to addr when has_addr. */
int transport_dfu_leave(struct transport *t, bool has_addr, uint32_t addr);

/* The sentences of sfid's error space (sfi-error.h). */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sfi-error.h"

static const char *const an3155_names[SFI_E_RANGE_SIZE] = {
	[AN3155_E_NACK - SFI_E_AN3155_FIRST] = "the chip refused the request (NACK)",
	[AN3155_E_TIMEOUT - SFI_E_AN3155_FIRST] = "no answer from the chip in time",
	[AN3155_E_CHECKSUM - SFI_E_AN3155_FIRST] = "bad checksum",
	[AN3155_E_UNEXPECTED - SFI_E_AN3155_FIRST] = "unexpected byte from the chip",
	[AN3155_E_TOO_LONG - SFI_E_AN3155_FIRST] = "answer too long",
	[AN3155_E_PORT_GONE - SFI_E_AN3155_FIRST] = "the serial port is gone",
};

static const char *const osfi_names[SFI_E_RANGE_SIZE] = {
	[OSFI_E_STATUS - SFI_E_OSFI_FIRST] = "the chip refused the request",
	[OSFI_E_NOT_OPEN - SFI_E_OSFI_FIRST] = "the chip is not in product state Open",
	[OSFI_E_BUSY - SFI_E_OSFI_FIRST] = "a session on the chip could not be aborted",
	[OSFI_E_RAM_BUFFER - SFI_E_OSFI_FIRST] =
		"the image has an area larger than the chip's RAM buffer; repack it",
	[OSFI_E_ANSWER - SFI_E_OSFI_FIRST] = "the chip's answer has the wrong length",
	[OSFI_E_CERT_UID - SFI_E_OSFI_FIRST] =
		"the certificate names another chip than the one connected",
	[OSFI_E_NOT_FINALIZED - SFI_E_OSFI_FIRST] =
		"after FINALIZE the chip does not report a finalized session",
	[OSFI_E_FINAL_STATE - SFI_E_OSFI_FIRST] =
		"after FINALIZE the chip is not in the expected product state",
	[OSFI_E_LINK - SFI_E_OSFI_FIRST] = "the link to the chip failed",
};

static const char *const hsm_names[SFI_E_RANGE_SIZE] = {
	[HSM_ERR_INVALID - SFI_E_HSM_FIRST] = "invalid argument or input file",
	[HSM_ERR_NOMEM - SFI_E_HSM_FIRST] = "out of memory",
	[HSM_ERR_MODULE - SFI_E_HSM_FIRST] =
		"PKCS#11 module missing or not loadable; check the module path",
	[HSM_ERR_NO_TOKEN - SFI_E_HSM_FIRST] =
		"no token present; insert the HSM token (or check the token label/serial and the reader)",
	[HSM_ERR_TOKEN_REMOVED - SFI_E_HSM_FIRST] =
		"token removed during the operation; reinsert it and retry",
	[HSM_ERR_PIN_SOURCE - SFI_E_HSM_FIRST] =
		"PIN file or credential missing, empty, unreadable, not a regular file, or readable or writable by others",
	[HSM_ERR_PIN_INCORRECT - SFI_E_HSM_FIRST] =
		"PIN incorrect; check the PIN file before retrying (the token locks after too many failures)",
	[HSM_ERR_PIN_LOCKED - SFI_E_HSM_FIRST] =
		"PIN locked; the token's security officer must unblock it",
	[HSM_ERR_NOT_LOGGED_IN - SFI_E_HSM_FIRST] = "not logged in to the token",
	[HSM_ERR_OBJECT_MISSING - SFI_E_HSM_FIRST] =
		"token not provisioned for OSFI (an osfi-* object is missing); provision it with sfi-hsm",
	[HSM_ERR_OBJECT_INVALID - SFI_E_HSM_FIRST] =
		"an osfi-* object on the token is malformed or duplicated; re-provision the token",
	[HSM_ERR_ALREADY_PROVISIONED - SFI_E_HSM_FIRST] =
		"token already provisioned; use --wipe to replace its OSFI objects",
	[HSM_ERR_MECHANISM - SFI_E_HSM_FIRST] =
		"the token does not support a mechanism OSFI needs (ECDH, AES-ECB derive, AES key wrap)",
	[HSM_ERR_COUNTER_EXHAUSTED - SFI_E_HSM_FIRST] =
		"license counter exhausted; the OEM must provision more licenses",
	[HSM_ERR_COUNTER_MISMATCH - SFI_E_HSM_FIRST] =
		"license counter differs from the recorded value; nothing was spent, reconcile and retry",
	[HSM_ERR_WRONG_FIRMWARE_ID - SFI_E_HSM_FIRST] =
		"wrong firmware id: the token is not provisioned for this image or module",
	[HSM_ERR_BAD_CERT - SFI_E_HSM_FIRST] =
		"bad chip certificate: malformed or not signed by the provisioned CA",
	[HSM_ERR_WRONG_DEVICE - SFI_E_HSM_FIRST] = "wrong device id in the chip certificate",
	[HSM_ERR_NO_GLOBAL_KEY - SFI_E_HSM_FIRST] =
		"the token holds no global key; provision one with --global-key",
	[HSM_ERR_DEVICE - SFI_E_HSM_FIRST] = "token operation failed",
};

static const char *const dfuse_names[SFI_E_RANGE_SIZE] = {
	[DFUSE_E_STALL - SFI_E_DFUSE_FIRST] = "the USB device refused the request (stall)",
	[DFUSE_E_STATUS - SFI_E_DFUSE_FIRST] = "the USB device reported an error",
	[DFUSE_E_STATE - SFI_E_DFUSE_FIRST] =
		"the USB device is not in a DFU state that allows the request",
	[DFUSE_E_TIMEOUT - SFI_E_DFUSE_FIRST] = "no answer from the USB device in time",
	[DFUSE_E_PROTOCOL - SFI_E_DFUSE_FIRST] = "malformed answer from the USB device",
	[DFUSE_E_GONE - SFI_E_DFUSE_FIRST] = "the USB device is gone",
};

static const struct {
	int first;
	const char *const *names;
	const char *unknown;
} blocks[] = {
	{ SFI_E_AN3155_FIRST, an3155_names, "unknown AN3155 error" },
	{ SFI_E_OSFI_FIRST, osfi_names, "unknown OSFI error" },
	{ SFI_E_HSM_FIRST, hsm_names, "unknown HSM error" },
	{ SFI_E_DFUSE_FIRST, dfuse_names, "unknown DfuSe error" },
};

const char *sfi_strerror(int r)
{
	int e;

	if (r == 0)
		return "success";
	if (r == INT_MIN)
		return "unknown error";
	e = r < 0 ? -r : r;
	for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++) {
		if (e >= blocks[i].first && e < blocks[i].first + SFI_E_RANGE_SIZE) {
			const char *s = blocks[i].names[e - blocks[i].first];

			return s ? s : blocks[i].unknown;
		}
	}
	return strerror(e);
}

void sfi_reason(char *reason, size_t reason_size, const char *fmt, ...)
{
	va_list ap;

	if (!reason || reason_size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, reason_size, fmt, ap);
	va_end(ap);
}

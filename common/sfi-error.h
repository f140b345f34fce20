/* sfid's one error space. Every function of the host code that can fail returns 0 (or a
 * count) on success and a negative value on failure, read from this table:
 *
 *	     1 ..  999	errno (ENOENT, ENOMEM, ...): the C library and the kernel
 *	  1000 .. 1999	AN3155: the chip's bootloader conversation (protocol/an3155)
 *	  2000 .. 2999	OSFI: the install session and its formats (protocol/osfi)
 *	  3000 .. 3999	HSM: the PKCS#11 token (hsm/)
 *	  4000 .. 4999	DfuSe: the chip's USB DFU bootloader conversation (protocol/dfuse)
 *	  5000 ..	free for the next layer (one block of 1000 each)
 *
 * The ranges do not overlap, so one int carries any of them through every layer unchanged
 * and sfi_strerror() names any of them. A layer adds codes only at the end of its own block.
 *
 * Reason buffers. A function that can explain a failure in a sentence takes
 * (char *reason, size_t reason_size) as its last two parameters; the caller passes a
 * char reason[SFI_REASON_MAX] (or NULL, 0 when it does not want the sentence). The callee
 * writes it with sfi_reason() only when it fails and leaves it untouched on success; the
 * sentence has no trailing newline or period, and names what failed, then why. */
#pragma once

#include <stddef.h>

#define SFI_E_AN3155_FIRST 1000
#define SFI_E_OSFI_FIRST 2000
#define SFI_E_HSM_FIRST 3000
#define SFI_E_DFUSE_FIRST 4000
#define SFI_E_RANGE_SIZE 1000

/* AN3155 (protocol/an3155). */
enum an3155_error {
	AN3155_E_NACK = SFI_E_AN3155_FIRST, /* the chip answered NACK */
	AN3155_E_TIMEOUT,	/* no (complete) answer in time */
	AN3155_E_CHECKSUM,	/* a frame's XOR checksum does not match */
	AN3155_E_UNEXPECTED,	/* a byte that is neither ACK nor NACK, or bytes out of turn */
	AN3155_E_TOO_LONG,	/* an answer longer than the protocol or the caller allows */
	AN3155_E_PORT_GONE,	/* the serial port disappeared */
	_AN3155_E_MAX,
};

/* OSFI (protocol/osfi). */
enum osfi_error {
	OSFI_E_STATUS = SFI_E_OSFI_FIRST, /* the chip answered a non-OK status: osfi_session_status() */
	OSFI_E_NOT_OPEN,	/* the chip is not in product state Open */
	OSFI_E_BUSY,		/* a session in progress could not be aborted */
	OSFI_E_RAM_BUFFER,	/* the image has an area larger than the chip's RAM buffer */
	OSFI_E_ANSWER,		/* an answer of the wrong length or content */
	OSFI_E_CERT_UID,	/* the certificate names another UID than GET_INFO */
	OSFI_E_NOT_FINALIZED,	/* after FINALIZE the chip does not report a finalized session */
	OSFI_E_FINAL_STATE,	/* after FINALIZE the product state is not the expected one */
	OSFI_E_LINK,		/* the driver reported a link failure: osfi_session_link_errno() */
	_OSFI_E_MAX,
};

/* HSM (hsm/). HSM_OK is 0, the first error the first code of the block. */
enum hsm_error {
	HSM_OK = 0,
	HSM_ERR_INVALID = SFI_E_HSM_FIRST, /* bad argument (caller bug or bad input file) */
	HSM_ERR_NOMEM,
	HSM_ERR_MODULE,		     /* PKCS#11 module missing or not loadable */
	HSM_ERR_NO_TOKEN,	     /* no (matching) token present */
	HSM_ERR_TOKEN_REMOVED,	     /* the token went away during an operation */
	HSM_ERR_PIN_SOURCE,	     /* the PIN file/credential is missing or unreadable */
	HSM_ERR_PIN_INCORRECT,
	HSM_ERR_PIN_LOCKED,
	HSM_ERR_NOT_LOGGED_IN,
	HSM_ERR_OBJECT_MISSING,	     /* the token is not (fully) provisioned */
	HSM_ERR_OBJECT_INVALID,	     /* an OSFI object has the wrong size or attributes */
	HSM_ERR_ALREADY_PROVISIONED, /* provisioning a token that holds OSFI objects */
	HSM_ERR_MECHANISM,	     /* the token lacks a mechanism OSFI needs */
	HSM_ERR_COUNTER_EXHAUSTED,
	HSM_ERR_COUNTER_MISMATCH,    /* the counter is not the value the caller recorded */
	HSM_ERR_WRONG_FIRMWARE_ID,   /* the image (or module) is not the one the token licenses */
	HSM_ERR_BAD_CERT,	     /* malformed certificate or CA signature fails */
	HSM_ERR_WRONG_DEVICE,	     /* certificate for another device id */
	HSM_ERR_NO_GLOBAL_KEY,	     /* global license asked from a token without a global key */
	HSM_ERR_DEVICE,		     /* any other token failure (see hsm_last_rv()) */
	_HSM_ERR_MAX,
};

/* DfuSe (protocol/dfuse). */
enum dfuse_error {
	DFUSE_E_STALL = SFI_E_DFUSE_FIRST, /* the device stalled a request (USB pipe error) */
	DFUSE_E_STATUS,		/* the device reported dfuERROR: dfuse_xfer_dfu_status() says why */
	DFUSE_E_STATE,		/* the device is in a state the operation cannot start from */
	DFUSE_E_TIMEOUT,	/* a transfer timed out, or the device stayed busy too long */
	DFUSE_E_PROTOCOL,	/* an answer of the wrong length or content */
	DFUSE_E_GONE,		/* the device disappeared */
	_DFUSE_E_MAX,
};

_Static_assert(_AN3155_E_MAX <= SFI_E_AN3155_FIRST + SFI_E_RANGE_SIZE, "AN3155 block full");
_Static_assert(_OSFI_E_MAX <= SFI_E_OSFI_FIRST + SFI_E_RANGE_SIZE, "OSFI block full");
_Static_assert(_HSM_ERR_MAX <= SFI_E_HSM_FIRST + SFI_E_RANGE_SIZE, "HSM block full");
_Static_assert(_DFUSE_E_MAX <= SFI_E_DFUSE_FIRST + SFI_E_RANGE_SIZE, "DfuSe block full");

/* The sentence for any value of the space, negative (as returned) or positive: a static
 * string, never NULL. 0 is "success"; an unassigned code of a block says which block. */
const char *sfi_strerror(int r);

/* Size of a reason buffer: every sentence the code writes fits. */
#define SFI_REASON_MAX 512

/* Formats a reason: nothing when reason is NULL or reason_size is 0; truncated to fit. */
void sfi_reason(char *reason, size_t reason_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* sfid HSM layer: one PKCS#11 token (dlopen'ed module), its OSFI objects, counted license
 * issuance, audit signatures. docs/security.md documents the object labels, the counter
 * contract and the PIN rules.
 *
 * Errors: every call returns 0 or a negative enum hsm_error value (sfi-error.h, the HSM
 * block of the error space); sfi_strerror() gives the operator's sentence, hsm_last_rv()
 * the CK_RV behind the last failure.
 *
 * Provisioning (creating, wiping, refilling a token, rotating its audit key) is in
 * hsm-provision.h, a library of its own that only sfi-hsm links.
 *
 * Threads: a struct hsm is internally locked (one mutex per token, shared by every handle
 * of that token in the process), so worker threads may share one handle; hsm_close() only
 * once every call on that handle has returned. Calls block for as long as the token takes
 * (a smartcard: seconds): never call them from an event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osfi/osfi.h"
#include "sfi-error.h"

/* Token object labels (CKA_LABEL; key pairs share their label and CKA_ID). */
#define HSM_LABEL_OEM_KEY "osfi-oem-key"	   /* AES-128 K, sensitive, wrap-only */
#define HSM_LABEL_LICENSE_KEY "osfi-license-key"  /* P-256 pair, private: derive only */
#define HSM_LABEL_AUDIT_KEY "osfi-audit-key"	   /* P-256 pair, private: sign only */
#define HSM_LABEL_FIRMWARE_ID "osfi-firmware-id" /* data, 32 bytes, read-only */
#define HSM_LABEL_COUNTER "osfi-counter"	   /* data, LE32 remaining licenses */
#define HSM_LABEL_GRANTED "osfi-granted"	   /* data, LE32 licenses ever granted */
#define HSM_LABEL_CA_PUB "osfi-ca-pub"	   /* P-256 public key of the chip CA */
#define HSM_LABEL_GLOBAL_KEY "osfi-global-key"   /* optional AES-256 G, derive only */

/* enum hsm_error (HSM_OK, -HSM_ERR_*) is the HSM block of the error space: sfi-error.h. */

/* Operator sentence for a return value: sfi_strerror() of r <= 0; never NULL. */
const char *hsm_error_to_string(int r);

struct hsm;

struct hsm_token_info {
	char label[33];	       /* space padding stripped */
	char serial[17];
	char manufacturer[33];
	char model[17];
	bool logged_in;
	/* The token warns that few PIN tries are left, or the PIN is locked: do not try a PIN
	 * that may be wrong (hsm_token_list only). */
	bool pin_at_risk;
};

/* Loads module_path (shared per path in the process), finds the token whose label equals
 * token_label or whose serial equals token_serial (one may be NULL), and opens one R/W
 * session. A second open of the same token returns a handle sharing its session and lock. */
int hsm_open(const char *module_path, const char *token_label, const char *token_serial,
	     struct hsm **ret_hsm);
/* Lists the initialized tokens present in module_path's slots (*ret_list: free()). Used to
 * find the tokens provisioned for modules, which are named by firmware id, not by label. */
int hsm_token_list(const char *module_path, struct hsm_token_info **ret_list, size_t *ret_n);
/* Closes the handle; the session and module go when their last handle does. Accepts NULL. */
struct hsm *hsm_close(struct hsm *h);
/* Opens a new session on the same token (found again by serial) after it was removed and
 * put back; the caller logs in again. Every handle of the token shares the new session. */
int hsm_reopen(struct hsm *h);
/* CK_RV of the last failed PKCS#11 call on this handle's token (debug only). */
unsigned long hsm_last_rv(struct hsm *h);
/* Name of the PKCS#11 call behind hsm_last_rv() ("" if none; debug only). */
const char *hsm_last_call(struct hsm *h);

/* User login with the PIN in file path (first line; trailing newline dropped). The PIN is
 * wiped right after C_Login. Already logged in: 0. */
int hsm_login_pin_file(struct hsm *h, const char *path);
/* Same with a systemd credential: $CREDENTIALS_DIRECTORY/name. */
int hsm_login_credential(struct hsm *h, const char *name);
/* Same with a PIN in memory (interactive tools); wipes pin[0..len) before returning. */
int hsm_login_pin(struct hsm *h, char *pin, size_t len);

int hsm_token_info(struct hsm *h, struct hsm_token_info *ret_info);

/* --- reading ----------------------------------------------------------------------------- */

/* Remaining licenses (the counter object). */
int hsm_counter_read(struct hsm *h, uint32_t *ret_count);
/* Licenses ever granted to the token: the provisioned count plus every refill. With the
 * counter it tells what was spent (granted - counter), wherever it was spent.
 * -HSM_ERR_OBJECT_MISSING on a token provisioned before the granted total existed. */
int hsm_granted_read(struct hsm *h, uint32_t *ret_granted);
int hsm_firmware_id(struct hsm *h, uint8_t ret_id[OSFI_ID_LEN]);
/* Uncompressed P-256 points of the license key, the audit key and the chip CA. */
int hsm_license_pubkey(struct hsm *h, uint8_t ret_point[OSFI_PUBKEY_LEN]);
int hsm_audit_pubkey(struct hsm *h, uint8_t ret_point[OSFI_PUBKEY_LEN]);
int hsm_ca_pubkey(struct hsm *h, uint8_t ret_point[OSFI_PUBKEY_LEN]);
/* The audit public key as a PEM SubjectPublicKeyInfo (malloc'ed, NUL-terminated). */
int hsm_audit_pubkey_pem(struct hsm *h, char **ret_pem);
/* Whether the optional global key is on the token. */
int hsm_has_global_key(struct hsm *h, bool *ret_has);

/* --- licenses ---------------------------------------------------------------------------- */

/* Pass as expected_count to skip the check (tools; never the daemon). */
#define HSM_COUNTER_ANY UINT32_MAX

struct hsm_license_request {
	const uint8_t *cert; /* the chip's OSC1 certificate as read from the chip */
	size_t cert_len;
	uint16_t device_id;  /* the job's device id: the certificate must carry it */
	uint32_t target;     /* OSFI_TARGET_IMAGE or a module id */
	uint8_t image_id[OSFI_ID_LEN]; /* target 0: must equal the token's firmware id */
};

struct hsm_license_result {
	uint8_t license[OSFI_LICENSE_LEN];
	uint32_t count_before;
	uint32_t count_after;	/* = count_before - 1, also in the record */
};

/* Issues one counted chip license. Intent-before-spend contract:
 *   1. hsm_counter_read() -> n;  2. the caller makes its intent durable (UID, n);
 *   3. hsm_license_issue(..., expected_count = n, ...).
 * Checks first, spending nothing: certificate format, CA signature against the token's CA,
 * device id, image/module firmware id, counter == expected_count (else
 * HSM_ERR_COUNTER_MISMATCH), counter > 0 (else HSM_ERR_COUNTER_EXHAUSTED). Then writes
 * n-1 to the token and only then derives and wraps inside the token. An error after the
 * counter was written (token removed, ...) means the count may be spent without a license:
 * the caller re-reads the counter to decide. */
int hsm_license_issue(struct hsm *h, const struct hsm_license_request *req,
		      uint32_t expected_count, struct hsm_license_result *ret_result);

/* Issues an uncounted global license with the token's global key G. */
int hsm_license_issue_global(struct hsm *h, uint16_t device_id, uint32_t target,
			     const uint8_t image_id[OSFI_ID_LEN],
			     uint8_t ret_license[OSFI_LICENSE_LEN]);

/* --- audit ------------------------------------------------------------------------------- */

/* ECDSA-P256 signature of a 32-byte digest with the audit key (the newest generation):
 * raw r || s. */
int hsm_audit_sign(struct hsm *h, const uint8_t digest[32], uint8_t ret_sig[64]);
/* The same with audit key generation gen (-1: the newest). */
int hsm_audit_sign_gen(struct hsm *h, int gen, const uint8_t digest[32], uint8_t ret_sig[64]);

/* Audit keys have generations: osfi-audit-key (0), osfi-audit-key.1, .2, ... The newest
 * signs; the one before it stays so that sfid can sign the change into the trail. */
#define HSM_AUDIT_GENERATIONS_MAX 64
/* The newest generation on the token (read once per process and token). */
int hsm_audit_generation(struct hsm *h, unsigned *ret_gen);
/* The public point of generation gen. */
int hsm_audit_pubkey_gen(struct hsm *h, unsigned gen, uint8_t ret_point[OSFI_PUBKEY_LEN]);
/* The same as PEM (malloc'ed). */
int hsm_audit_pubkey_pem_gen(struct hsm *h, unsigned gen, char **ret_pem);


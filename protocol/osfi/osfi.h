/* OSFI v1 formats (docs/protocol.md): bounds-checked encode/decode of the chip certificate,
 * the license record, the image header and area descriptors, the module license information
 * file, the sub-command payloads and status codes; and the image/licence cryptography that
 * does not need an HSM (libcrypto). Pure code: no I/O, no logging. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osfi-wire.h"

struct osfi_cert {
	uint8_t version;
	uint16_t device_id;
	uint8_t uid[OSFI_UID_LEN];
	uint8_t pubkey[OSFI_PUBKEY_LEN];
	uint8_t sig[OSFI_SIG_LEN];
};

/* Decodes a certificate. Returns 0, or -EBADMSG (bad magic/version/reserved byte, or a public
 * key that is not an uncompressed point), -EMSGSIZE (wrong length). */
int osfi_cert_decode(const uint8_t *buf, size_t len, struct osfi_cert *ret_cert);
/* Encodes into exactly OSFI_CERT_LEN bytes. */
void osfi_cert_encode(const struct osfi_cert *cert, uint8_t out[OSFI_CERT_LEN]);
/* Verifies the CA signature and that the public key is on P-256. ca_pub: uncompressed point.
 * Returns 0, -EKEYREJECTED (bad signature), -EINVAL (a key not on the curve), -ENOMEM. */
int osfi_cert_verify(const struct osfi_cert *cert, const uint8_t ca_pub[OSFI_PUBKEY_LEN]);

struct osfi_license {
	uint8_t kind; /* OSFI_LICENSE_KIND_* */
	uint16_t device_id;
	uint32_t target; /* OSFI_TARGET_IMAGE or a module id */
	uint8_t uid[OSFI_UID_LEN];
	uint8_t id[OSFI_ID_LEN];
	uint8_t nonce[OSFI_LICENSE_NONCE_LEN];
	uint8_t hsm_pub[OSFI_PUBKEY_LEN];
	uint32_t counter;
	uint8_t wrapped[OSFI_WRAPPED_LEN];
};

/* Returns 0, -EBADMSG (magic, version, kind, reserved bytes), -EMSGSIZE (wrong length). */
int osfi_license_decode(const uint8_t *buf, size_t len, struct osfi_license *ret_lic);
void osfi_license_encode(const struct osfi_license *lic, uint8_t out[OSFI_LICENSE_LEN]);
/* H = SHA-256("OSFI-KEK-1" || kind || LE16 device || LE32 target || uid || id || nonce),
 * the input of the KEK derivation (docs/protocol.md §3.1). */
void osfi_license_kek_input(const struct osfi_license *lic, uint8_t ret_h[32]);
/* Builds a global license in software: fills *lic's wrapped key from the global key and the
 * image or module key. lic's kind/device/target/id/nonce must be set; uid/hsm_pub/counter are
 * zeroed. Returns 0 or -ENOMEM/-EIO. */
int osfi_license_seal_global(struct osfi_license *lic, const uint8_t global_key[32],
			     const uint8_t key[OSFI_KEY_LEN]);
/* Unwraps a license as a chip would (tests, tools): z is the ECDH x-coordinate (chip license)
 * or the global key (global license). Returns 0 and the key, or -EKEYREJECTED. */
int osfi_license_unwrap(const struct osfi_license *lic, const uint8_t z[32],
			uint8_t ret_key[OSFI_KEY_LEN]);
/* Module firmware id = SHA-256("OSFI-MOD-1" || LE32 module id). */
void osfi_module_firmware_id(uint32_t module_id, uint8_t ret_id[OSFI_ID_LEN]);

struct osfi_header {
	uint16_t format;
	uint16_t header_len;
	uint16_t device_id;
	uint16_t area_count;
	uint32_t total_len;
	uint32_t image_version;
	uint32_t flags;
	uint8_t nonce[OSFI_NONCE_LEN];
	uint8_t tag[OSFI_TAG_LEN];
};

struct osfi_desc {
	uint8_t type; /* OSFI_AREA_* */
	uint16_t version;
	uint16_t index;
	uint16_t total;
	uint32_t size;
	uint32_t address;
	uint32_t module_id;
	uint8_t tag[OSFI_TAG_LEN];
};

/* Returns 0, -EBADMSG, -EMSGSIZE. Decoding checks every fixed field (magic, lengths, reserved
 * bytes, type letters, index <= total). */
int osfi_header_decode(const uint8_t *buf, size_t len, struct osfi_header *ret_hdr);
void osfi_header_encode(const struct osfi_header *hdr, uint8_t out[OSFI_HEADER_LEN]);
int osfi_desc_decode(const uint8_t *buf, size_t len, struct osfi_desc *ret_desc);
void osfi_desc_encode(const struct osfi_desc *desc, uint8_t out[OSFI_DESC_LEN]);
/* Image id: SHA-256 of the 64 header bytes. */
void osfi_image_id(const uint8_t header[OSFI_HEADER_LEN], uint8_t ret_id[OSFI_ID_LEN]);

/* ---- Additions beyond the format API ---- */

/* True for the area type letters of v1 (F C K M P R). */
bool osfi_area_type_valid(uint8_t type);
/* Seals a chip-specific license in software from Z (the ECDH x-coordinate) and the image or
 * module key: fills lic->wrapped. Every other field must be set. Tests and test vectors use
 * it; production licenses come from the HSM. Returns 0 or -ENOMEM/-EIO. */
int osfi_license_seal(struct osfi_license *lic, const uint8_t z[32],
		      const uint8_t key[OSFI_KEY_LEN]);
/* ECDH on P-256: Z = x-coordinate of priv * peer_pub. priv: 32-byte big-endian scalar.
 * Returns 0, -EINVAL (peer not on the curve), -EIO, -ENOMEM. */
int osfi_ecdh_z(const uint8_t priv[32], const uint8_t peer_pub[OSFI_PUBKEY_LEN],
		uint8_t ret_z[32]);

/* OSFI v1 formats (docs/protocol.md): bounds-checked encode/decode of the chip certificate,
 * the license record, the image header and area descriptors, the module license information
 * file, the sub-command payloads and status codes; and the image/licence cryptography that
 * does not need an HSM (libcrypto). Pure code: no I/O, no logging. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osfi-wire.h"
#include "sfi-error.h"

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

/* ---- Area cryptography (AES-128-GCM, docs/protocol.md §4.3) ---- */

/* IV(i) = nonce[0..7] || LE32(LE32(nonce[8..11]) + i). */
void osfi_area_iv(const uint8_t nonce[OSFI_NONCE_LEN], uint32_t index,
		  uint8_t ret_iv[OSFI_NONCE_LEN]);
/* Computes the header tag (IV(0), AAD = bytes 0..47) into header[48..63]. 0 or -EIO. */
int osfi_header_seal(uint8_t header[OSFI_HEADER_LEN], const uint8_t key[OSFI_KEY_LEN]);
/* Checks the header tag. Returns 0 or -EBADMSG. */
int osfi_header_authenticate(const uint8_t header[OSFI_HEADER_LEN],
			     const uint8_t key[OSFI_KEY_LEN]);
/* Encrypts one area: plain (n bytes) -> ret_cipher (n bytes), tag into desc[32..47]; the
 * descriptor's index selects the IV. Returns 0 or -EIO. */
int osfi_area_encrypt(const uint8_t header[OSFI_HEADER_LEN], uint8_t desc[OSFI_DESC_LEN],
		      const uint8_t key[OSFI_KEY_LEN], const uint8_t *plain, size_t n,
		      uint8_t *ret_cipher);
/* Authenticates and decrypts one area into ret_plain (n bytes, may be NULL to only check).
 * Returns 0 or -EBADMSG (tag mismatch; ret_plain is wiped). */
int osfi_area_decrypt(const uint8_t header[OSFI_HEADER_LEN], const uint8_t desc[OSFI_DESC_LEN],
		      const uint8_t key[OSFI_KEY_LEN], const uint8_t *cipher, size_t n,
		      uint8_t *ret_plain);

/* ---- Memory map rules (docs/protocol.md §4.4) ---- */

/* Checks an area's size, alignment and destination for its type. Returns 0 or -ERANGE
 * (outside what the type may write), -EINVAL (alignment, size). */
int osfi_area_check_range(uint8_t type, uint32_t address, uint32_t size);

/* ---- Image building ---- */

struct osfi_area_spec {
	uint8_t type;		/* OSFI_AREA_F/C/K/M */
	uint16_t version;
	uint32_t address;	/* 0 for C */
	uint32_t module_id;	/* M only */
	const uint8_t *data;
	size_t size;		/* F/K/M: padded with 0xFF to a multiple of 16 by the builder */
	const uint8_t *key;	/* M: the module key; NULL = image key */
};

struct osfi_image_spec {
	uint16_t device_id;
	uint32_t image_version;
	uint8_t nonce[OSFI_NONCE_LEN];
	const uint8_t *key;	/* image key K */
	uint32_t max_area;	/* split F/K/M areas above this size (multiple of 16); 0: none */
	const struct osfi_area_spec *areas;
	size_t n_areas;
};

/* Builds an image: splits areas to max_area, pads, encrypts, seals the header. The C area
 * must be last and single. Returns 0 and a malloc'd buffer, or -EINVAL (spec rules),
 * -ERANGE (an address), -E2BIG (too many areas or > 4 GiB), -ENOMEM, -EIO. */
int osfi_image_build(const struct osfi_image_spec *spec, uint8_t **ret_buf, size_t *ret_len);

/* ---- Image parsing (no key needed) ---- */

struct osfi_image_area {
	struct osfi_desc desc;
	size_t desc_off;	/* file offset of the descriptor */
	size_t data_off;	/* file offset of the ciphertext */
};

struct osfi_image {
	const uint8_t *buf;	/* borrowed: the caller keeps the bytes alive */
	size_t len;
	struct osfi_header hdr;
	uint8_t id[OSFI_ID_LEN];
	size_t n_areas;
	struct osfi_image_area *areas;
	uint32_t max_area;	/* largest area payload */
};

/* Parses and checks a whole image: header, total length, each descriptor in index order,
 * sizes and addresses per type, no overlaps, at most one C area and last. On error returns
 * -EBADMSG (or -ENOMEM) and, if reason is given, one sentence naming the area. */
int osfi_image_parse(const uint8_t *buf, size_t len, struct osfi_image **ret_img, char *reason,
		     size_t reason_size);
struct osfi_image *osfi_image_free(struct osfi_image *img);
/* True when the image carries an M area for module_id. */
bool osfi_image_has_module(const struct osfi_image *img, uint32_t module_id);

struct osfi_module_key {
	uint32_t module_id;
	uint8_t key[OSFI_KEY_LEN];
};

/* Authenticates the header and every area (decrypting into a scratch buffer that is wiped).
 * Returns 0; -EBADMSG with *ret_bad_area = 0 (header) or the area index; -ENOKEY with
 * *ret_bad_area = the area whose module key is missing; -ENOMEM. */
int osfi_image_authenticate(const struct osfi_image *img, const uint8_t key[OSFI_KEY_LEN],
			    const struct osfi_module_key *mkeys, size_t n_mkeys,
			    unsigned *ret_bad_area);

/* ---- Option-byte records ('C' area) ---- */

struct osfi_option {
	uint16_t reg;		/* OSFI_OPT_* */
	uint32_t value;
};

/* "OPTSR_PRG"..."HDP2R_PRG", or NULL for an unknown register. */
const char *osfi_option_name(uint16_t reg);
/* Register id from its name (case-insensitive). Returns 0 or -ENOENT. */
int osfi_option_from_name(const char *name, uint16_t *ret_reg);
/* "Open", "Provisioning", "iROT-Provisioned", "TZ-Closed", "Closed", "Locked", or NULL. */
const char *osfi_product_state_name(uint8_t ps);
/* A product state from its name (case-insensitive) or its value (0x72). 0 or -ENOENT. */
int osfi_product_state_parse(const char *s, uint8_t *ret_ps);
/* sfi_parse_u32() (common/sfi-parse.h), through which the text formats read every number:
 * decimal digits without a leading zero, or 0x and hexadecimal digits; 0 or -EINVAL. */
int osfi_number_parse(const char *s, uint32_t *ret);
/* Encodes n records (8 bytes each). Returns the length or -ENOBUFS/-EINVAL. */
int osfi_options_encode(const struct osfi_option *opts, size_t n, uint8_t *out, size_t outmax);
/* Decodes records; checks known registers, reserved zero, no duplicates, OPTSR_PRG present
 * with a valid product state. Returns 0, -EBADMSG, -ENOBUFS (more than max). */
int osfi_options_decode(const uint8_t *buf, size_t len, struct osfi_option *ret_opts, size_t max,
			size_t *ret_n);
/* Parses an option CSV (`REGISTER, VALUE` lines, `#` comments; PRODUCT_STATE with a state
 * name or value is folded into OPTSR_PRG bits 15..8). Records come out in register order.
 * Returns 0, or -EINVAL with "line N: ..." in reason. */
int osfi_options_parse_csv(const char *text, size_t len, struct osfi_option *ret_opts,
			   size_t max, size_t *ret_n, char *reason, size_t reason_size);

/* ---- Module license information file (docs/protocol.md §7) ---- */

struct osfi_module_entry {
	uint32_t module_id;
	bool hsm;			/* license from the token named by firmware_id */
	char license[4096];		/* global license path, as written (relative to the CSV) */
	uint8_t firmware_id[OSFI_ID_LEN];
	uint32_t address;
	unsigned line;
};

/* Parses the file's text. Returns 0 and a malloc'd array (free()), or -EINVAL with
 * "line N: ..." in reason, -ENOMEM. */
int osfi_modules_parse(const char *text, size_t len, struct osfi_module_entry **ret_entries,
		       size_t *ret_n, char *reason, size_t reason_size);

/* ---- Sub-command payloads and statuses (docs/protocol.md §5, §6) ---- */

struct osfi_info {
	uint8_t product_state;
	uint8_t osfi_version;
	uint8_t session_state;	/* OSFI_SESSION_* */
	uint32_t ram_buffer;
	uint16_t last_status;
	uint16_t areas_done;
	uint32_t stream_bytes;
	uint16_t device_id;
	uint8_t uid[OSFI_UID_LEN];
	/* Image id (SHA-256 of the header) the chip's last finalized session installed; all
	 * zero when no session was ever finalized, or when the chip gave the short answer. */
	uint8_t installed_id[OSFI_ID_LEN];
};

/* Decodes the 64-byte answer, or the 32-byte one of chips without the installed image id
 * (installed_id then all zero). Returns 0, -EMSGSIZE (another length), -EBADMSG (reserved
 * bytes). */
int osfi_info_decode(const uint8_t *buf, size_t len, struct osfi_info *ret_info);
void osfi_info_encode(const struct osfi_info *info, uint8_t out[OSFI_INFO_LEN]);
/* True when the chip reports the image id of a finalized session. */
bool osfi_info_has_installed(const struct osfi_info *info);
/* True when the chip's last finalized session installed the image with this id, and that
 * session is the chip's current record (session state finalized, last status OK): the
 * image is on the chip even if the FINALIZE answer was lost. */
bool osfi_info_installed_is(const struct osfi_info *info, const uint8_t id[OSFI_ID_LEN]);
/* p1 of PUT_LICENSE (target) and PUT_DATA (stream offset): LE32. */
void osfi_p1_encode(uint32_t v, uint8_t out[4]);
int osfi_p1_decode(const uint8_t *buf, size_t len, uint32_t *ret_v);
/* "LICENSE_WRONG_CHIP"; "unknown status" for codes outside the table. */
const char *osfi_status_name(uint16_t status);
/* The operator message of docs/protocol.md §6. */
const char *osfi_status_message(uint16_t status);
/* "idle", "licensed", ... "failed"; "unknown" otherwise. */
const char *osfi_session_state_name(uint8_t state);
/* "GET_INFO", ... "ABORT"; "unknown" otherwise. */
const char *osfi_subop_name(uint16_t subop);

/* ---- Host session engine (sans I/O) ----
 *
 * The engine decides the next OSFI request; a driver (blocking, or an event loop) runs it
 * on the link and hands back the chip's status and answer data:
 *
 *	while ((n = osfi_session_next(s, &req)) != OSFI_NEXT_DONE && n != OSFI_NEXT_FAILED) {
 *		if (n == OSFI_NEXT_RECONNECT) { sync the link; osfi_session_reconnected(s); }
 *		else if (run req -> status, data) osfi_session_answer(s, status, data, len);
 *		else osfi_session_link_error(s, err);
 *	}
 *
 * An install runs GET_INFO (Open, no session in progress, else ABORT once; RAM buffer big
 * enough) -> PUT_LICENSE image -> PUT_LICENSE each module -> PUT_HEADER -> PUT_DATA in
 * 1024-byte chunks -> FINALIZE -> reconnect -> GET_INFO (finalized, expected state).
 * A certificate session runs GET_INFO -> GET_CERT. */

/* Errors: enum osfi_error, the OSFI block of the error space (sfi-error.h), returned
 * negated; the same as sfi_strerror(). */
const char *osfi_strerror(int r);

enum osfi_step {
	OSFI_STEP_GET_INFO,
	OSFI_STEP_ABORT,
	OSFI_STEP_GET_INFO_AGAIN,
	OSFI_STEP_GET_CERT,
	OSFI_STEP_PUT_LICENSE,
	OSFI_STEP_PUT_HEADER,
	OSFI_STEP_PUT_DATA,
	OSFI_STEP_FINALIZE,
	OSFI_STEP_RECONNECT,
	OSFI_STEP_VERIFY,
	OSFI_STEP_DONE,
	OSFI_STEP_FAILED,
	_OSFI_STEP_MAX,
};

/* "get-info", "put-data", ... */
const char *osfi_step_to_string(enum osfi_step s);

enum osfi_next {
	OSFI_NEXT_REQUEST,	/* run *req and report with osfi_session_answer() */
	OSFI_NEXT_RECONNECT,	/* the chip reset: sync again, then osfi_session_reconnected() */
	OSFI_NEXT_DONE,
	OSFI_NEXT_FAILED,	/* osfi_session_result() < 0 */
};

/* One OSFI request, whatever link carries it (a backend maps it to its wire: UART Special
 * 0x50 for one packet, Extended Special 0x51 for two; DfuSe, docs/protocol.md §11). */
struct osfi_request {
	uint16_t subop;
	const uint8_t *p1;	/* the data, or packet 1 of a two-packet request (valid until
				 * the next call) */
	size_t n1;
	const uint8_t *p2;	/* packet 2 (PUT_LICENSE, PUT_DATA); NULL for one packet */
	size_t n2;
	size_t answer_max;	/* answer data room the driver must accept */
};

struct osfi_session;

/* New install session over an image (borrowed; parsed here). Returns 0, -EBADMSG (with a
 * sentence in reason), -ENOMEM. */
int osfi_session_new_install(const uint8_t *image, size_t len, struct osfi_session **ret_s,
			     char *reason, size_t reason_size);
/* New certificate session: GET_INFO then GET_CERT. */
int osfi_session_new_cert(struct osfi_session **ret_s);
struct osfi_session *osfi_session_free(struct osfi_session *s);
/* Adds a license record (copied; wiped on free). Target 0 is sent first, then modules in
 * the order added. Returns 0, -EBADMSG (malformed), -EEXIST (target already given),
 * -E2BIG (too many). */
int osfi_session_add_license(struct osfi_session *s, const uint8_t *lic, size_t len);
/* Product state the C area sets; checked after FINALIZE when set. */
void osfi_session_expect_state(struct osfi_session *s, uint8_t product_state);

enum osfi_next osfi_session_next(struct osfi_session *s, struct osfi_request *ret_req);
/* The chip answered the current request. Returns 0, or the session's error (< 0). */
int osfi_session_answer(struct osfi_session *s, uint16_t status, const uint8_t *data,
			size_t len);
/* The driver could not run the request (negative an3155/errno code). */
void osfi_session_link_error(struct osfi_session *s, int err);
/* The driver synchronised with the chip again after its reset. */
void osfi_session_reconnected(struct osfi_session *s);

enum osfi_step osfi_session_step(const struct osfi_session *s);
/* 0 done, 1 running, < 0 failed (-OSFI_E_* or -errno). */
int osfi_session_result(const struct osfi_session *s);
/* The chip status that failed the session (OSFI_ST_OK if none). */
uint16_t osfi_session_status(const struct osfi_session *s);
/* The link error given to osfi_session_link_error(). */
int osfi_session_link_errno(const struct osfi_session *s);
/* Image stream bytes acknowledged by the chip and the stream's total. */
void osfi_session_progress(const struct osfi_session *s, uint64_t *ret_done,
			   uint64_t *ret_total);
/* Last GET_INFO answer (NULL before the first one). */
const struct osfi_info *osfi_session_info(const struct osfi_session *s);
/* Certificate read by a certificate session (NULL before). */
const struct osfi_cert *osfi_session_cert(const struct osfi_session *s);
/* The parsed image of an install session. */
const struct osfi_image *osfi_session_image(const struct osfi_session *s);
/* One operator sentence: "PUT_HEADER: chip status HEADER_AUTH (0x000b): the image header
 * failed authentication (tampered image or wrong key)". */
void osfi_session_describe(const struct osfi_session *s, char *buf, size_t size);

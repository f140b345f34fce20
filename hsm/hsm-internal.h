/* Helpers of hsm/ exposed to the unit tests; not part of the API. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "osfi/osfi.h"

/* CK_RV -> negative enum hsm_error; in_session: a session was open (removal vs absence). */
int hsm_rv_to_error(CK_RV rv, bool in_session);
/* Space-padded PKCS#11 text field -> C string without the padding, truncated to out_size. */
void hsm_strip_field(const unsigned char *field, size_t len, char *out, size_t out_size);
/* First line of a PIN file (not readable by others) into pin; 0 or -HSM_ERR_PIN_SOURCE. */
int hsm_pin_read_file(const char *path, char *pin, size_t size, size_t *ret_len);
/* Uncompressed P-256 point -> PEM SubjectPublicKeyInfo (malloc'ed). */
int hsm_point_to_pem(const uint8_t point[OSFI_PUBKEY_LEN], char **ret_pem);

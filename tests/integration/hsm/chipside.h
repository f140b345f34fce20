/* The chip vendor's and the chip's side of OSFI licenses, for the HSM tests: written from
 * docs/protocol.md with plain libcrypto, independent of hsm/ and of osfi-crypto.c. */
#pragma once

#include <stdint.h>

#include <openssl/evp.h>

#include "osfi/osfi.h"

/* A fresh P-256 key (CA or chip). */
EVP_PKEY *chip_keygen(void);
/* Uncompressed point of a key. Returns 0 or -1. */
int chip_point(EVP_PKEY *k, uint8_t out[OSFI_PUBKEY_LEN]);
/* Makes an OSC1 certificate for chip's key, signed by ca. Returns 0 or -1. */
int chip_cert_make(EVP_PKEY *ca, EVP_PKEY *chip, uint16_t device, const uint8_t uid[OSFI_UID_LEN],
		   uint8_t out[OSFI_CERT_LEN]);
/* Z = x-coordinate of ECDH(chip private key, peer point). Returns 0 or -1. */
int chip_ecdh_x(EVP_PKEY *chip, const uint8_t peer[OSFI_PUBKEY_LEN], uint8_t ret_z[32]);
/* H, KEK and AES-KW unwrap as a chip does. Returns 0 and the key, or -1 (integrity). */
int chip_unwrap(const struct osfi_license *l, const uint8_t z[32], uint8_t ret_key[16]);
/* Verifies a raw r||s ECDSA-P256 signature over a 32-byte digest. Returns 1 if valid. */
int chip_verify_digest(EVP_PKEY *pub, const uint8_t digest[32], const uint8_t sig[64]);

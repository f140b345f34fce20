/* Test-side makers of OSFI images, licenses and keys, written against docs/protocol.md with
 * plain libcrypto calls (the tests of the chip side must not trust the host's codecs). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

struct forge_area {
	char type;
	uint32_t addr;
	uint32_t module;
	const uint8_t *data;	/* plaintext; NULL with size 0 */
	uint32_t size;
	const uint8_t *key;	/* NULL: the image key */
	/* Deliberate damage, applied before encryption (so it authenticates). */
	uint8_t reserved1;
	uint16_t index_delta;
};

struct forge_image_params {
	const uint8_t *key;	/* image key K, 16 bytes */
	uint16_t device;
	uint32_t version;
	uint32_t flags;
	uint8_t nonce[12];
	const struct forge_area *areas;
	size_t n_areas;
};

/* Builds a whole .sfi file. Returns a malloc'd buffer and its length, or NULL. */
uint8_t *forge_image(const struct forge_image_params *p, size_t *ret_len);

/* SHA-256 of the 64-byte header. */
void forge_image_id(const uint8_t *image, uint8_t id[32]);
/* SHA-256("OSFI-MOD-1" || LE32(module)). */
void forge_module_id(uint32_t module, uint8_t id[32]);

struct forge_license_params {
	uint8_t kind;		/* 1 chip, 2 global */
	uint16_t device;
	uint32_t target;
	const uint8_t *uid;	/* 12 bytes (chip) */
	const uint8_t *id;	/* 32 bytes */
	uint8_t nonce[16];
	EVP_PKEY *hsm_key;	/* chip license: HSM key pair */
	const uint8_t *chip_pub;	/* chip license: 65-byte point from the certificate */
	const uint8_t *global_key;	/* global license: 32 bytes */
	const uint8_t *key;	/* K or Km, 16 bytes */
	uint32_t counter;
};

/* Builds a 172-byte license record. Returns 0 or -1. */
int forge_license(const struct forge_license_params *p, uint8_t out[172]);

/* Verifies an OSC1 certificate's ECDSA signature with the CA key. */
bool forge_cert_verify(const uint8_t cert[149], EVP_PKEY *ca);

/* Writes a PEM private key file. Returns 0 or -1. */
int forge_write_pem(EVP_PKEY *key, const char *path);

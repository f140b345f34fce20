/* An audit signer for tests: an OpenSSL P-256 key standing in for the token's audit key. */
#pragma once

#include <openssl/evp.h>

#include "db.h"

struct test_signer {
	EVP_PKEY *key;
	struct db_signer signer;
	unsigned calls;
	int fail; /* when non-zero, sign() returns this */
};

/* Generates a fresh key (or loads the PEM private key at path if non-NULL). */
int test_signer_init(struct test_signer *ts, const char *private_pem_path);

/* Writes the private key and the public key as PEM files. */
int test_signer_save(const struct test_signer *ts, const char *private_path,
		     const char *public_path);

void test_signer_done(struct test_signer *ts);

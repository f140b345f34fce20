/* Test audit signer: ECDSA P-256 over the given digest, returned as raw r‖s like a
 * PKCS#11 token's CKM_ECDSA. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "test-signer.h"

static int test_sign(void *userdata, const uint8_t digest[DB_HASH_SIZE],
		     uint8_t ret_sig[DB_SIG_SIZE])
{
	struct test_signer *ts = userdata;
	uint8_t der[80];
	size_t der_len = sizeof(der);
	const unsigned char *p = der;
	const BIGNUM *r, *s;
	EVP_PKEY_CTX *ctx;
	ECDSA_SIG *sig;
	int ok;

	ts->calls++;
	if (ts->fail)
		return ts->fail;
	ctx = EVP_PKEY_CTX_new(ts->key, NULL);
	ok = ctx && EVP_PKEY_sign_init(ctx) == 1 &&
	     EVP_PKEY_sign(ctx, der, &der_len, digest, DB_HASH_SIZE) == 1;
	EVP_PKEY_CTX_free(ctx);
	if (!ok)
		return -EIO;
	sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (!sig)
		return -EIO;
	ECDSA_SIG_get0(sig, &r, &s);
	ok = BN_bn2binpad(r, ret_sig, 32) == 32 && BN_bn2binpad(s, ret_sig + 32, 32) == 32;
	ECDSA_SIG_free(sig);
	return ok ? 0 : -EIO;
}

int test_signer_init(struct test_signer *ts, const char *private_pem_path)
{
	uint8_t *der = NULL;
	unsigned int n = 0;
	int len;

	memset(ts, 0, sizeof(*ts));
	if (private_pem_path) {
		FILE *f = fopen(private_pem_path, "re");

		if (!f)
			return -errno;
		ts->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	} else {
		ts->key = EVP_EC_gen("P-256");
	}
	if (!ts->key)
		return -EIO;
	len = i2d_PUBKEY(ts->key, &der);
	if (len <= 0 || !EVP_Digest(der, (size_t)len, ts->signer.key_id, &n, EVP_sha256(), NULL)) {
		OPENSSL_free(der);
		return -EIO;
	}
	OPENSSL_free(der);
	ts->signer.sign = test_sign;
	ts->signer.userdata = ts;
	return 0;
}

int test_signer_save(const struct test_signer *ts, const char *private_path,
		     const char *public_path)
{
	FILE *f;
	int ok;

	f = fopen(private_path, "we");
	if (!f)
		return -errno;
	ok = PEM_write_PrivateKey(f, ts->key, NULL, NULL, 0, NULL, NULL);
	ok = fclose(f) == 0 && ok;
	if (!ok)
		return -EIO;
	f = fopen(public_path, "we");
	if (!f)
		return -errno;
	ok = PEM_write_PUBKEY(f, ts->key);
	ok = fclose(f) == 0 && ok;
	return ok ? 0 : -EIO;
}

void test_signer_done(struct test_signer *ts)
{
	EVP_PKEY_free(ts->key);
	ts->key = NULL;
}

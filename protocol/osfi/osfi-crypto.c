/* Certificate verification and software license sealing/unwrapping (docs/protocol.md §2,
 * §3.1), with OpenSSL 3 libcrypto. */
#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "osfi-internal.h"

int osfi_p256_pkey_from_point(const uint8_t pub[OSFI_PUBKEY_LEN], EVP_PKEY **ret_pkey)
{
	EVP_PKEY_CTX *ctx = NULL, *check = NULL;
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM params[3];
	char group[] = "prime256v1";
	int r = -EINVAL;

	if (pub[0] != 0x04)
		return -EINVAL;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pub,
						      OSFI_PUBKEY_LEN);
	params[2] = OSSL_PARAM_construct_end();

	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!ctx)
		return -ENOMEM;
	if (EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto out;

	/* fromdata already refuses most bad points; the explicit check makes it certain. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!check) {
		r = -ENOMEM;
		goto out;
	}
	if (EVP_PKEY_public_check(check) != 1)
		goto out;

	*ret_pkey = pkey;
	pkey = NULL;
	r = 0;
out:
	EVP_PKEY_CTX_free(check);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pkey);
	return r;
}

int osfi_cert_verify(const struct osfi_cert *cert, const uint8_t ca_pub[OSFI_PUBKEY_LEN])
{
	uint8_t tbs[OSFI_CERT_LEN];
	EVP_PKEY *ca = NULL, *chip = NULL;
	EVP_MD_CTX *md = NULL;
	ECDSA_SIG *sig = NULL;
	BIGNUM *br = NULL, *bs = NULL;
	unsigned char *der = NULL;
	int der_len, r;

	if (!cert || !ca_pub)
		return -EINVAL;

	r = osfi_p256_pkey_from_point(ca_pub, &ca);
	if (r < 0)
		return r;
	r = osfi_p256_pkey_from_point(cert->pubkey, &chip);
	if (r < 0)
		goto out;

	osfi_cert_encode(cert, tbs);

	r = -ENOMEM;
	sig = ECDSA_SIG_new();
	br = BN_bin2bn(cert->sig, 32, NULL);
	bs = BN_bin2bn(cert->sig + 32, 32, NULL);
	if (!sig || !br || !bs)
		goto out;
	if (ECDSA_SIG_set0(sig, br, bs) != 1)
		goto out;
	br = bs = NULL;
	der_len = i2d_ECDSA_SIG(sig, &der);
	if (der_len <= 0)
		goto out;

	md = EVP_MD_CTX_new();
	if (!md)
		goto out;
	if (EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, ca, NULL) != 1)
		goto out;
	r = EVP_DigestVerify(md, der, (size_t)der_len, tbs, OSFI_CERT_SIGNED_LEN) == 1 ?
		    0 :
		    -EKEYREJECTED;
out:
	OPENSSL_free(der);
	BN_free(br);
	BN_free(bs);
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(chip);
	EVP_PKEY_free(ca);
	return r;
}

/* KEK = AES-256-ECB_z(H): two blocks, no padding. */
static int osfi_derive_kek(const struct osfi_license *lic, const uint8_t z[32], uint8_t kek[32])
{
	uint8_t h[32];
	EVP_CIPHER_CTX *ctx;
	int n1 = 0, n2 = 0, r = -EIO;

	osfi_license_kek_input(lic, h);
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), NULL, z, NULL) == 1 &&
	    EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
	    EVP_EncryptUpdate(ctx, kek, &n1, h, sizeof(h)) == 1 &&
	    EVP_EncryptFinal_ex(ctx, kek + n1, &n2) == 1 && n1 + n2 == 32)
		r = 0;
	EVP_CIPHER_CTX_free(ctx);
	OPENSSL_cleanse(h, sizeof(h));
	return r;
}

/* AES-256 key wrap (RFC 3394, default IV) of a 16-byte key, or its unwrap. */
static int osfi_key_wrap(bool wrap, const uint8_t kek[32], const uint8_t *in, size_t in_len,
			 uint8_t *out, size_t out_len)
{
	EVP_CIPHER_CTX *ctx;
	uint8_t buf[OSFI_WRAPPED_LEN + 16];
	int n1 = 0, n2 = 0, r;

	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	r = EVP_CipherInit_ex(ctx, EVP_aes_256_wrap(), NULL, kek, NULL, wrap ? 1 : 0);
	if (r == 1)
		r = EVP_CipherUpdate(ctx, buf, &n1, in, (int)in_len);
	if (r == 1)
		r = EVP_CipherFinal_ex(ctx, buf + n1, &n2);
	EVP_CIPHER_CTX_free(ctx);
	if (r != 1 || (size_t)(n1 + n2) != out_len) {
		OPENSSL_cleanse(buf, sizeof(buf));
		return wrap ? -EIO : -EKEYREJECTED;
	}
	memcpy(out, buf, out_len);
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

int osfi_license_seal_global(struct osfi_license *lic, const uint8_t global_key[32],
			     const uint8_t key[OSFI_KEY_LEN])
{
	uint8_t kek[32];
	int r;

	if (!lic || !global_key || !key)
		return -EINVAL;
	memset(lic->uid, 0, OSFI_UID_LEN);
	memset(lic->hsm_pub, 0, OSFI_PUBKEY_LEN);
	lic->counter = 0;

	r = osfi_derive_kek(lic, global_key, kek);
	if (r == 0)
		r = osfi_key_wrap(true, kek, key, OSFI_KEY_LEN, lic->wrapped, OSFI_WRAPPED_LEN);
	OPENSSL_cleanse(kek, sizeof(kek));
	return r;
}

int osfi_license_seal(struct osfi_license *lic, const uint8_t z[32],
		      const uint8_t key[OSFI_KEY_LEN])
{
	uint8_t kek[32];
	int r;

	if (!lic || !z || !key)
		return -EINVAL;
	r = osfi_derive_kek(lic, z, kek);
	if (r == 0)
		r = osfi_key_wrap(true, kek, key, OSFI_KEY_LEN, lic->wrapped, OSFI_WRAPPED_LEN);
	OPENSSL_cleanse(kek, sizeof(kek));
	return r;
}

int osfi_license_unwrap(const struct osfi_license *lic, const uint8_t z[32],
			uint8_t ret_key[OSFI_KEY_LEN])
{
	uint8_t kek[32], key[OSFI_KEY_LEN];
	int r;

	if (!lic || !z || !ret_key)
		return -EINVAL;
	r = osfi_derive_kek(lic, z, kek);
	if (r == 0)
		r = osfi_key_wrap(false, kek, lic->wrapped, OSFI_WRAPPED_LEN, key, OSFI_KEY_LEN);
	OPENSSL_cleanse(kek, sizeof(kek));
	if (r < 0)
		return r == -EIO ? -EKEYREJECTED : r;
	memcpy(ret_key, key, OSFI_KEY_LEN);
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

int osfi_ecdh_z(const uint8_t priv[32], const uint8_t peer_pub[OSFI_PUBKEY_LEN], uint8_t ret_z[32])
{
	EVP_PKEY_CTX *kctx = NULL, *dctx = NULL;
	EVP_PKEY *mine = NULL, *peer = NULL;
	OSSL_PARAM params[3];
	char group[] = "prime256v1";
	BIGNUM *bn = NULL;
	uint8_t privbe[32], z[32];
	size_t zlen = sizeof(z);
	int r;

	r = osfi_p256_pkey_from_point(peer_pub, &peer);
	if (r < 0)
		return r;

	r = -ENOMEM;
	/* OSSL_PARAM BIGNUMs are native-endian; go through a BIGNUM to be portable. */
	bn = BN_bin2bn(priv, 32, NULL);
	if (!bn || BN_bn2nativepad(bn, privbe, sizeof(privbe)) < 0)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
	params[1] = OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, privbe, sizeof(privbe));
	params[2] = OSSL_PARAM_construct_end();
	kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!kctx || EVP_PKEY_fromdata_init(kctx) <= 0 ||
	    EVP_PKEY_fromdata(kctx, &mine, EVP_PKEY_KEYPAIR, params) <= 0)
		goto out;
	dctx = EVP_PKEY_CTX_new_from_pkey(NULL, mine, NULL);
	r = -EIO;
	if (!dctx || EVP_PKEY_derive_init(dctx) <= 0 || EVP_PKEY_derive_set_peer(dctx, peer) <= 0 ||
	    EVP_PKEY_derive(dctx, z, &zlen) <= 0 || zlen != 32)
		goto out;
	memcpy(ret_z, z, 32);
	r = 0;
out:
	OPENSSL_cleanse(privbe, sizeof(privbe));
	OPENSSL_cleanse(z, sizeof(z));
	BN_clear_free(bn);
	EVP_PKEY_CTX_free(dctx);
	EVP_PKEY_CTX_free(kctx);
	EVP_PKEY_free(mine);
	EVP_PKEY_free(peer);
	return r;
}

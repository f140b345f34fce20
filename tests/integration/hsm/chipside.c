/* See chipside.h. */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "chipside.h"

EVP_PKEY *chip_keygen(void)
{
	return EVP_EC_gen("prime256v1");
}

int chip_point(EVP_PKEY *k, uint8_t out[OSFI_PUBKEY_LEN])
{
	size_t n = 0;

	if (!EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, out, OSFI_PUBKEY_LEN,
					     &n) ||
	    n != OSFI_PUBKEY_LEN)
		return -1;
	return 0;
}

int chip_cert_make(EVP_PKEY *ca, EVP_PKEY *chip, uint16_t device, const uint8_t uid[OSFI_UID_LEN],
		   uint8_t out[OSFI_CERT_LEN])
{
	struct osfi_cert cert = { .version = 1, .device_id = device };
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[80];
	size_t dlen = sizeof(der);
	const unsigned char *cp = der;
	const BIGNUM *r, *s;
	ECDSA_SIG *sig;
	int ok;

	memcpy(cert.uid, uid, OSFI_UID_LEN);
	if (!md || chip_point(chip, cert.pubkey) < 0)
		return -1;
	osfi_cert_encode(&cert, out);
	ok = EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ca) > 0 &&
	     EVP_DigestSign(md, der, &dlen, out, OSFI_CERT_SIGNED_LEN) > 0;
	EVP_MD_CTX_free(md);
	if (!ok)
		return -1;
	sig = d2i_ECDSA_SIG(NULL, &cp, (long)dlen);
	if (!sig)
		return -1;
	ECDSA_SIG_get0(sig, &r, &s);
	BN_bn2binpad(r, cert.sig, 32);
	BN_bn2binpad(s, cert.sig + 32, 32);
	ECDSA_SIG_free(sig);
	osfi_cert_encode(&cert, out);
	return 0;
}

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

/* The chip side of docs/protocol.md §3.1, written from the spec, not from osfi-crypto.c. */
int chip_unwrap(const struct osfi_license *l, const uint8_t z[32], uint8_t ret_key[16])
{
	uint8_t in[10 + 1 + 2 + 4 + 12 + 32 + 16], hin[32], kek[32], out[32];
	EVP_CIPHER_CTX *c;
	unsigned int hl = 0;
	int n = 0, m = 0, ok;

	memcpy(in, "OSFI-KEK-1", 10);
	in[10] = l->kind;
	le16(in + 11, l->device_id);
	le32(in + 13, l->target);
	memcpy(in + 17, l->uid, 12);
	memcpy(in + 29, l->id, 32);
	memcpy(in + 61, l->nonce, 16);
	if (!EVP_Digest(in, sizeof(in), hin, &hl, EVP_sha256(), NULL))
		return -1;
	c = EVP_CIPHER_CTX_new();
	ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_ecb(), NULL, z, NULL) &&
	     EVP_CIPHER_CTX_set_padding(c, 0) && EVP_EncryptUpdate(c, kek, &n, hin, 32) &&
	     EVP_EncryptFinal_ex(c, kek + n, &m) && n + m == 32;
	EVP_CIPHER_CTX_free(c);
	if (!ok)
		return -1;
	c = EVP_CIPHER_CTX_new();
	ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_wrap(), NULL, kek, NULL) &&
	     EVP_DecryptUpdate(c, out, &n, l->wrapped, OSFI_WRAPPED_LEN) > 0 && n == 16 &&
	     EVP_DecryptFinal_ex(c, out + n, &m) > 0;
	EVP_CIPHER_CTX_free(c);
	if (!ok)
		return -1;
	memcpy(ret_key, out, 16);
	return 0;
}

int chip_ecdh_x(EVP_PKEY *chip, const uint8_t peer[65], uint8_t ret_z[32])
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL), *dc = NULL;
	OSSL_PARAM p[] = {
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)peer, 65),
		OSSL_PARAM_END,
	};
	EVP_PKEY *pk = NULL;
	size_t n = 32;
	int ok;

	ok = pc && EVP_PKEY_fromdata_init(pc) > 0 &&
	     EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, p) > 0 &&
	     (dc = EVP_PKEY_CTX_new(chip, NULL)) && EVP_PKEY_derive_init(dc) > 0 &&
	     EVP_PKEY_derive_set_peer(dc, pk) > 0 && EVP_PKEY_derive(dc, ret_z, &n) > 0 &&
	     n == 32;
	EVP_PKEY_CTX_free(dc);
	EVP_PKEY_CTX_free(pc);
	EVP_PKEY_free(pk);
	return ok ? 0 : -1;
}


int chip_verify_digest(EVP_PKEY *pub, const uint8_t digest[32], const uint8_t sig[64])
{
	ECDSA_SIG *s = ECDSA_SIG_new();
	unsigned char *der = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	int len, ok = 0;

	if (!s || !ECDSA_SIG_set0(s, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL)))
		goto out;
	len = i2d_ECDSA_SIG(s, &der);
	ctx = EVP_PKEY_CTX_new(pub, NULL);
	ok = len > 0 && ctx && EVP_PKEY_verify_init(ctx) > 0 &&
	     EVP_PKEY_verify(ctx, der, (size_t)len, digest, 32) == 1;
out:
	OPENSSL_free(der);
	EVP_PKEY_CTX_free(ctx);
	ECDSA_SIG_free(s);
	return ok;
}

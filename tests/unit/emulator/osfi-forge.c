/* Test-side OSFI image and license makers (see osfi-forge.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "osfi-forge.h"

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static int seal(const uint8_t *key, const uint8_t nonce[12], uint32_t index, const uint8_t *aad1,
		size_t n1, const uint8_t *aad2, size_t n2, const uint8_t *in, uint8_t *out,
		size_t len, uint8_t tag[16])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t iv[12], fin[16];
	uint32_t ctr = (uint32_t)nonce[8] | (uint32_t)nonce[9] << 8 | (uint32_t)nonce[10] << 16 |
		       (uint32_t)nonce[11] << 24;
	int n, ok;

	memcpy(iv, nonce, 8);
	put32(iv + 8, ctr + index);
	ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, iv) > 0 &&
	     (n1 == 0 || EVP_EncryptUpdate(ctx, NULL, &n, aad1, (int)n1) > 0) &&
	     (n2 == 0 || EVP_EncryptUpdate(ctx, NULL, &n, aad2, (int)n2) > 0) &&
	     (len == 0 || EVP_EncryptUpdate(ctx, out, &n, in, (int)len) > 0) &&
	     EVP_EncryptFinal_ex(ctx, fin, &n) > 0 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) > 0;
	EVP_CIPHER_CTX_free(ctx);
	return ok ? 0 : -1;
}

uint8_t *forge_image(const struct forge_image_params *p, size_t *ret_len)
{
	size_t total = 64, off;
	uint8_t *img;

	for (size_t i = 0; i < p->n_areas; i++)
		total += 48 + p->areas[i].size;
	img = calloc(1, total);
	if (!img)
		return NULL;
	memcpy(img, "OSFI", 4);
	put16(img + 4, 1);
	put16(img + 6, 64);
	put16(img + 8, p->device);
	put16(img + 10, (uint16_t)p->n_areas);
	put32(img + 12, (uint32_t)total);
	put32(img + 16, p->version);
	put32(img + 20, p->flags);
	memcpy(img + 24, p->nonce, 12);
	if (seal(p->key, p->nonce, 0, img, 48, NULL, 0, NULL, NULL, 0, img + 48) < 0)
		goto fail;

	off = 64;
	for (size_t i = 0; i < p->n_areas; i++) {
		const struct forge_area *a = &p->areas[i];
		uint8_t *d = img + off;
		uint16_t index = (uint16_t)(i + 1 + a->index_delta);

		d[0] = (uint8_t)a->type;
		d[1] = a->reserved1;
		put16(d + 2, 1);
		put16(d + 4, index);
		put16(d + 6, (uint16_t)p->n_areas);
		put32(d + 8, a->size);
		put32(d + 12, a->addr);
		put32(d + 16, a->module);
		if (seal(a->key ? a->key : p->key, p->nonce, index, img, 64, d, 32, a->data, d + 48,
			 a->size, d + 32) < 0)
			goto fail;
		off += 48 + a->size;
	}
	*ret_len = total;
	return img;
fail:
	free(img);
	return NULL;
}

void forge_image_id(const uint8_t *image, uint8_t id[32])
{
	SHA256(image, 64, id);
}

void forge_module_id(uint32_t module, uint8_t id[32])
{
	uint8_t m[14];

	memcpy(m, "OSFI-MOD-1", 10);
	put32(m + 10, module);
	SHA256(m, sizeof(m), id);
}

static EVP_PKEY *point_to_pkey(const uint8_t pt[65])
{
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *k = NULL;

	if (b && ctx && OSSL_PARAM_BLD_push_utf8_string(b, "group", "P-256", 0) &&
	    OSSL_PARAM_BLD_push_octet_string(b, "pub", pt, 65) &&
	    (params = OSSL_PARAM_BLD_to_param(b)) && EVP_PKEY_fromdata_init(ctx) > 0)
		EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	EVP_PKEY_CTX_free(ctx);
	return k;
}

int forge_license(const struct forge_license_params *p, uint8_t out[172])
{
	uint8_t h_in[10 + 1 + 2 + 4 + 12 + 32 + 16], h[32], z[32], kek[32], w[40];
	EVP_CIPHER_CTX *ctx = NULL;
	size_t zl = 32;
	int n1 = 0, n2 = 0, ok = 0;

	memset(out, 0, 172);
	memcpy(out, "OSL1", 4);
	out[4] = 1;
	out[5] = p->kind;
	put16(out + 6, p->device);
	put32(out + 8, p->target);
	if (p->uid)
		memcpy(out + 12, p->uid, 12);
	memcpy(out + 24, p->id, 32);
	memcpy(out + 56, p->nonce, 16);
	put32(out + 137, p->counter);

	if (p->hsm_key) {
		EVP_PKEY *peer = point_to_pkey(p->chip_pub);
		EVP_PKEY_CTX *dctx = EVP_PKEY_CTX_new(p->hsm_key, NULL);
		size_t pl = 65;

		ok = peer && dctx && EVP_PKEY_derive_init(dctx) > 0 &&
		     EVP_PKEY_derive_set_peer(dctx, peer) > 0 && EVP_PKEY_derive(dctx, z, &zl) > 0 &&
		     EVP_PKEY_get_octet_string_param(p->hsm_key, "encoded-pub-key", out + 72, 65,
						     &pl) > 0;
		EVP_PKEY_CTX_free(dctx);
		EVP_PKEY_free(peer);
		if (!ok)
			return -1;
	} else {
		memcpy(z, p->global_key, 32);
	}

	memcpy(h_in, "OSFI-KEK-1", 10);
	h_in[10] = p->kind;
	memcpy(h_in + 11, out + 6, 2);
	memcpy(h_in + 13, out + 8, 4);
	memcpy(h_in + 17, out + 12, 12);
	memcpy(h_in + 29, p->id, 32);
	memcpy(h_in + 61, p->nonce, 16);
	SHA256(h_in, sizeof(h_in), h);

	ctx = EVP_CIPHER_CTX_new();
	ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), NULL, z, NULL) > 0 &&
	     EVP_CIPHER_CTX_set_padding(ctx, 0) > 0 && EVP_EncryptUpdate(ctx, kek, &n1, h, 32) > 0;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		return -1;

	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -1;
	EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_wrap(), NULL, kek, NULL) > 0 &&
	     EVP_EncryptUpdate(ctx, w, &n1, p->key, 16) > 0 &&
	     EVP_EncryptFinal_ex(ctx, w + n1, &n2) > 0 && n1 + n2 == 24;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		return -1;
	memcpy(out + 141, w, 24);
	return 0;
}

bool forge_cert_verify(const uint8_t cert[149], EVP_PKEY *ca)
{
	ECDSA_SIG *s = ECDSA_SIG_new();
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t *der = NULL;
	bool ok = false;
	int n;

	if (!s || !md ||
	    !ECDSA_SIG_set0(s, BN_bin2bn(cert + 85, 32, NULL), BN_bin2bn(cert + 117, 32, NULL)))
		goto out;
	n = i2d_ECDSA_SIG(s, &der);
	ok = n > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, ca) > 0 &&
	     EVP_DigestVerify(md, der, (size_t)n, cert, 85) == 1;
out:
	OPENSSL_free(der);
	ECDSA_SIG_free(s);
	EVP_MD_CTX_free(md);
	return ok;
}

int forge_write_pem(EVP_PKEY *key, const char *path)
{
	FILE *f = fopen(path, "we");
	int ok;

	if (!f)
		return -1;
	ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) > 0;
	return fclose(f) == 0 && ok ? 0 : -1;
}

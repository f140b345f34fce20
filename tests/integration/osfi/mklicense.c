/* Test helper: makes a chip-specific OSFI license with plain libcrypto calls, independently of
 * protocol/osfi, from a chip certificate, an image and the image key. A fresh P-256 key plays
 * the HSM. Options change one input to make licenses the chip must refuse.
 *
 * mklicense CERT IMAGE KEYFILE OUT [--uid-from CERT2] [--device N] [--target N]
 *           [--image-id-from IMAGE2] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

static void die(const char *what)
{
	fprintf(stderr, "mklicense: %s\n", what);
	exit(1);
}

static size_t slurp(const char *path, uint8_t *buf, size_t max)
{
	FILE *f = fopen(path, "rbe");
	size_t n;

	if (!f)
		die(path);
	n = fread(buf, 1, max, f);
	fclose(f);
	return n;
}

static void le16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v)
{
	le16(p, v & 0xffff);
	le16(p + 2, v >> 16);
}

int main(int argc, char **argv)
{
	static uint8_t img[64], img2[64];
	uint8_t cert[149], cert2[149], key[16], rec[172] = { 0 }, z[32], h[32], kek[32];
	uint8_t hin[10 + 1 + 2 + 4 + 12 + 32 + 16], nonce[16], hsm_pub[65], id[32];
	const uint8_t *uid;
	unsigned device;
	uint32_t target = 0;
	EVP_PKEY *hsm, *chip = NULL;
	EVP_PKEY_CTX *ctx;
	EVP_CIPHER_CTX *c;
	OSSL_PARAM params[3];
	char group[] = "prime256v1";
	size_t zlen = sizeof(z), n;
	int l1, l2;
	FILE *f;

	if (argc < 5)
		die("usage: mklicense CERT IMAGE KEYFILE OUT [options]");
	if (slurp(argv[1], cert, sizeof(cert)) != sizeof(cert) || memcmp(cert, "OSC1", 4))
		die("bad certificate");
	if (slurp(argv[2], img, sizeof(img)) != sizeof(img) || memcmp(img, "OSFI", 4))
		die("bad image");
	if (slurp(argv[3], key, sizeof(key)) != sizeof(key))
		die("bad key");
	uid = cert + 8;
	device = img[8] | img[9] << 8;
	SHA256(img, 64, id);
	for (int i = 5; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--uid-from")) {
			if (slurp(argv[i + 1], cert2, sizeof(cert2)) != sizeof(cert2))
				die("bad second certificate");
			uid = cert2 + 8;
		} else if (!strcmp(argv[i], "--device")) {
			device = (unsigned)strtoul(argv[i + 1], NULL, 0);
		} else if (!strcmp(argv[i], "--target")) {
			target = (uint32_t)strtoul(argv[i + 1], NULL, 0);
		} else if (!strcmp(argv[i], "--image-id-from")) {
			if (slurp(argv[i + 1], img2, sizeof(img2)) != sizeof(img2))
				die("bad second image");
			SHA256(img2, 64, id);
		} else {
			die("unknown option");
		}
	}

	/* Z = x-coordinate of ECDH(HSM key, chip key). */
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, cert + 20, 65);
	params[2] = OSSL_PARAM_construct_end();
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &chip, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		die("chip key");
	EVP_PKEY_CTX_free(ctx);
	hsm = EVP_EC_gen("P-256");
	if (!hsm || EVP_PKEY_get_octet_string_param(hsm, OSSL_PKEY_PARAM_PUB_KEY, hsm_pub, 65, &n) != 1)
		die("HSM key");
	ctx = EVP_PKEY_CTX_new(hsm, NULL);
	if (!ctx || EVP_PKEY_derive_init(ctx) <= 0 || EVP_PKEY_derive_set_peer(ctx, chip) <= 0 ||
	    EVP_PKEY_derive(ctx, z, &zlen) <= 0 || zlen != 32)
		die("ECDH");
	EVP_PKEY_CTX_free(ctx);

	/* H, KEK = AES-256-ECB_Z(H), wrapped = AES-256-KW_KEK(K). */
	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
		die("RNG");
	memcpy(hin, "OSFI-KEK-1", 10);
	hin[10] = 1;
	le16(hin + 11, device);
	le32(hin + 13, target);
	memcpy(hin + 17, uid, 12);
	memcpy(hin + 29, id, 32);
	memcpy(hin + 61, nonce, 16);
	SHA256(hin, sizeof(hin), h);
	c = EVP_CIPHER_CTX_new();
	if (!c || EVP_EncryptInit_ex(c, EVP_aes_256_ecb(), NULL, z, NULL) != 1 ||
	    EVP_CIPHER_CTX_set_padding(c, 0) != 1 || EVP_EncryptUpdate(c, kek, &l1, h, 32) != 1 ||
	    EVP_EncryptFinal_ex(c, kek + l1, &l2) != 1)
		die("KEK");
	EVP_CIPHER_CTX_free(c);
	c = EVP_CIPHER_CTX_new();
	EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	if (EVP_EncryptInit_ex(c, EVP_aes_256_wrap(), NULL, kek, NULL) != 1 ||
	    EVP_EncryptUpdate(c, rec + 141, &l1, key, 16) != 1 || l1 != 24 ||
	    EVP_EncryptFinal_ex(c, rec + 141 + l1, &l2) != 1)
		die("key wrap");
	EVP_CIPHER_CTX_free(c);

	memcpy(rec, "OSL1", 4);
	rec[4] = 1;
	rec[5] = 1;
	le16(rec + 6, device);
	le32(rec + 8, target);
	memcpy(rec + 12, uid, 12);
	memcpy(rec + 24, id, 32);
	memcpy(rec + 56, nonce, 16);
	memcpy(rec + 72, hsm_pub, 65);
	le32(rec + 137, 1);
	f = fopen(argv[4], "wbe");
	if (!f || fwrite(rec, 1, sizeof(rec), f) != sizeof(rec) || fclose(f) != 0)
		die("cannot write the license");
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(z, sizeof(z));
	OPENSSL_cleanse(kek, sizeof(kek));
	EVP_PKEY_free(hsm);
	EVP_PKEY_free(chip);
	return 0;
}

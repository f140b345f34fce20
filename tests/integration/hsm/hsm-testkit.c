/* Test helper for the HSM integration tests: plays the chip vendor (CA, chip certificates)
 * and the chip (license unwrapping) with plain libcrypto, independently of hsm/.
 *
 *   hsm-testkit mkca CA.key CA.pub
 *   hsm-testkit mkchip CA.key DEVICE UIDHEX CERT CHIP.key
 *   hsm-testkit mkimage K.bin DEVICE OUT.sfi
 *   hsm-testkit check LIC CHIP.key K.bin IMAGE [MODULE_ID]      chip license unwraps to K
 *   hsm-testkit check-global LIC G.bin K.bin IMAGE [MODULE_ID]  global license unwraps to K
 *   hsm-testkit field LIC counter|nonce|uid                     prints a license field
 * Exit 0 on success, 1 when a check fails, 2 on usage or I/O errors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "chipside.h"
#include "osfi/osfi.h"
#include "sfi-hex.h"

static int die(const char *what)
{
	fprintf(stderr, "hsm-testkit: %s\n", what);
	return 2;
}

static int load(const char *path, uint8_t *buf, size_t max, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, max, f);
	fclose(f);
	*ret_len = n;
	return 0;
}

static int save(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f || fwrite(buf, 1, len, f) != len) {
		if (f)
			fclose(f);
		return -1;
	}
	return fclose(f);
}

static EVP_PKEY *load_priv(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	if (!f)
		return NULL;
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return k;
}

static int cmd_mkca(const char *keypath, const char *pubpath)
{
	EVP_PKEY *k = chip_keygen();
	FILE *f;

	if (!k)
		return die("keygen");
	f = fopen(keypath, "w");
	if (!f || !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL))
		return die(keypath);
	fclose(f);
	f = fopen(pubpath, "w");
	if (!f || !PEM_write_PUBKEY(f, k))
		return die(pubpath);
	fclose(f);
	EVP_PKEY_free(k);
	return 0;
}

static int cmd_mkchip(const char *cakey, const char *device, const char *uidhex,
		      const char *certpath, const char *chipkey)
{
	EVP_PKEY *ca = load_priv(cakey), *chip = chip_keygen();
	uint8_t uid[OSFI_UID_LEN], cert[OSFI_CERT_LEN];
	FILE *f;

	if (!ca || !chip)
		return die("keys");
	if (sfi_hex_decode(uidhex, uid, sizeof(uid)) < 0)
		return die("uid must be 24 hex digits");
	if (chip_cert_make(ca, chip, (uint16_t)strtoul(device, NULL, 0), uid, cert) < 0)
		return die("certificate");
	if (save(certpath, cert, sizeof(cert)) < 0)
		return die(certpath);
	f = fopen(chipkey, "w");
	if (!f || !PEM_write_PrivateKey(f, chip, NULL, NULL, 0, NULL, NULL))
		return die(chipkey);
	fclose(f);
	EVP_PKEY_free(ca);
	EVP_PKEY_free(chip);
	return 0;
}

/* A header-only image with a valid header tag under K: all the HSM looks at. */
static int cmd_mkimage(const char *keypath, const char *device, const char *out)
{
	uint8_t key[16], hdr[OSFI_HEADER_LEN], scratch[16];
	struct osfi_header h = { .format = 1, .header_len = OSFI_HEADER_LEN, .area_count = 1,
				 .total_len = OSFI_HEADER_LEN + OSFI_DESC_LEN + 16,
				 .image_version = 1 };
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	size_t n;
	int len;

	if (load(keypath, key, sizeof(key), &n) < 0 || n != 16)
		return die("key");
	h.device_id = (uint16_t)strtoul(device, NULL, 0);
	RAND_bytes(h.nonce, sizeof(h.nonce));
	osfi_header_encode(&h, hdr);
	if (!c || !EVP_EncryptInit_ex(c, EVP_aes_128_gcm(), NULL, key, h.nonce) ||
	    !EVP_EncryptUpdate(c, NULL, &len, hdr, OSFI_HDR_OFF_TAG) ||
	    !EVP_EncryptFinal_ex(c, scratch, &len) ||
	    !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, h.tag))
		return die("gcm");
	EVP_CIPHER_CTX_free(c);
	osfi_header_encode(&h, hdr);
	return save(out, hdr, sizeof(hdr)) < 0 ? die(out) : 0;
}

static int load_license(const char *path, struct osfi_license *l)
{
	uint8_t buf[OSFI_LICENSE_LEN + 1];
	size_t n;

	if (load(path, buf, sizeof(buf), &n) < 0 || osfi_license_decode(buf, n, l) < 0)
		return -1;
	return 0;
}

/* Checks the bound fields, then unwraps twice (our chip code and osfi_license_unwrap). */
static int check_common(const struct osfi_license *l, const uint8_t z[32], const char *keypath,
			const char *image, const char *module)
{
	uint8_t k[16], mine[16], theirs[16], hdr[OSFI_HEADER_LEN], id[32];
	uint32_t target = module ? (uint32_t)strtoul(module, NULL, 0) : 0;
	struct osfi_header h;
	size_t n;

	if (load(keypath, k, sizeof(k), &n) < 0 || n != 16)
		return die("key file");
	if (load(image, hdr, sizeof(hdr), &n) < 0 || n != sizeof(hdr) ||
	    osfi_header_decode(hdr, n, &h) < 0)
		return die("image");
	if (target)
		osfi_module_firmware_id(target, id);
	else
		osfi_image_id(hdr, id);
	if (l->target != target || memcmp(l->id, id, 32) || l->device_id != h.device_id) {
		fprintf(stderr, "hsm-testkit: license target/id/device mismatch\n");
		return 1;
	}
	if (chip_unwrap(l, z, mine) < 0) {
		fprintf(stderr, "hsm-testkit: chip-side unwrap failed\n");
		return 1;
	}
	if (osfi_license_unwrap(l, z, theirs) < 0) {
		fprintf(stderr, "hsm-testkit: osfi_license_unwrap failed\n");
		return 1;
	}
	if (memcmp(mine, k, 16) || memcmp(theirs, k, 16)) {
		fprintf(stderr, "hsm-testkit: unwrapped key differs from the OEM key\n");
		return 1;
	}
	return 0;
}

static int cmd_check(const char *lic, const char *chipkey, const char *keypath,
		     const char *image, const char *module)
{
	struct osfi_license l;
	EVP_PKEY *chip = load_priv(chipkey);
	uint8_t z[32];
	int r;

	if (!chip || load_license(lic, &l) < 0)
		return die("license or chip key");
	if (l.kind != OSFI_LICENSE_KIND_CHIP) {
		fprintf(stderr, "hsm-testkit: not a chip license\n");
		return 1;
	}
	r = chip_ecdh_x(chip, l.hsm_pub, z);
	EVP_PKEY_free(chip);
	if (r < 0)
		return die("ecdh");
	return check_common(&l, z, keypath, image, module);
}

static int cmd_check_global(const char *lic, const char *gpath, const char *keypath,
			    const char *image, const char *module)
{
	struct osfi_license l;
	uint8_t g[32];
	size_t n;

	if (load_license(lic, &l) < 0 || load(gpath, g, sizeof(g), &n) < 0 || n != 32)
		return die("license or global key");
	if (l.kind != OSFI_LICENSE_KIND_GLOBAL || l.counter != 0) {
		fprintf(stderr, "hsm-testkit: not a global license\n");
		return 1;
	}
	return check_common(&l, g, keypath, image, module);
}

static int cmd_field(const char *lic, const char *field)
{
	struct osfi_license l;

	if (load_license(lic, &l) < 0)
		return die("license");
	if (!strcmp(field, "counter")) {
		printf("%u\n", (unsigned)l.counter);
	} else if (!strcmp(field, "nonce") || !strcmp(field, "uid")) {
		const uint8_t *p = field[0] == 'n' ? l.nonce : l.uid;
		size_t n = field[0] == 'n' ? sizeof(l.nonce) : sizeof(l.uid);

		for (size_t i = 0; i < n; i++)
			printf("%02x", p[i]);
		printf("\n");
	} else {
		return die("unknown field");
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "mkca"))
		return cmd_mkca(argv[2], argv[3]);
	if (argc == 7 && !strcmp(argv[1], "mkchip"))
		return cmd_mkchip(argv[2], argv[3], argv[4], argv[5], argv[6]);
	if (argc == 5 && !strcmp(argv[1], "mkimage"))
		return cmd_mkimage(argv[2], argv[3], argv[4]);
	if ((argc == 6 || argc == 7) && !strcmp(argv[1], "check"))
		return cmd_check(argv[2], argv[3], argv[4], argv[5], argc == 7 ? argv[6] : NULL);
	if ((argc == 6 || argc == 7) && !strcmp(argv[1], "check-global"))
		return cmd_check_global(argv[2], argv[3], argv[4], argv[5],
					argc == 7 ? argv[6] : NULL);
	if (argc == 4 && !strcmp(argv[1], "field"))
		return cmd_field(argv[2], argv[3]);
	return die("usage: see the comment at the top of hsm-testkit.c");
}

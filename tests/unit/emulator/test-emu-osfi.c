/* The OSFI chip side of h5emu (emulator/emu-osfi.c) against docs/protocol.md: chip
 * identity, a full install, and every status code of §6 with the chip left Open and
 * installable afterwards. Images and licenses come from osfi-forge.c (plain libcrypto). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/rand.h>

#include "an3155-wire.h"
#include "fake-chip.h"
#include "osfi-forge.h"
#include "osfi-wire.h"

#define RAM 4096u
#define FLASH STM32H5_FLASH_BASE
#define DEV STM32_PID_H56X_H57X

struct fx {
	char dir[64];
	char ca_path[96], gk_path[96];
	EVP_PKEY *ca, *hsm;
	uint8_t gk[32];
	uint8_t uid[12];
	uint8_t k[16], km[16];
	uint8_t cert[OSFI_CERT_LEN];
	struct emu_chip *chip;
	uint8_t fw[3 * RAM];
	uint8_t secret[32];
};

struct info {
	uint8_t ps, version, session;
	uint32_t ram;
	uint16_t last, areas;
	uint32_t bytes;
	uint16_t device;
	uint8_t uid[12];
	uint8_t installed[32];
};

static int run(struct fx *f, bool ext, uint16_t op, const void *p1, size_t n1, const void *p2,
	       size_t n2, uint16_t *st, uint8_t *out, size_t *out_len)
{
	uint8_t buf[AN3155_SPECIAL_MAX_ANSWER];
	size_t len = 0;

	return emu_osfi_special(f->chip, ext, op, p1, n1, p2, n2, out ? out : buf,
				out ? 1024 : sizeof(buf), out_len ? out_len : &len, st);
}

static uint16_t op50(struct fx *f, uint16_t op, const void *data, size_t n)
{
	uint16_t st = 0xffff;

	assert_int_equal(run(f, false, op, data, n, NULL, 0, &st, NULL, NULL), 0);
	return st;
}

static uint16_t op51(struct fx *f, uint16_t op, uint32_t p1v, const void *p2, size_t n2)
{
	uint8_t p1[4] = { (uint8_t)p1v, (uint8_t)(p1v >> 8), (uint8_t)(p1v >> 16),
			  (uint8_t)(p1v >> 24) };
	uint16_t st = 0xffff;

	assert_int_equal(run(f, true, op, p1, 4, p2, n2, &st, NULL, NULL), 0);
	return st;
}

static void get_info(struct fx *f, struct info *i)
{
	uint8_t out[1024];
	size_t len = 0;
	uint16_t st = 0xffff;

	assert_int_equal(run(f, false, OSFI_OP_GET_INFO, NULL, 0, NULL, 0, &st, out, &len), 0);
	assert_int_equal(st, OSFI_ST_OK);
	assert_int_equal(len, OSFI_INFO_LEN);
	i->ps = out[0];
	i->version = out[1];
	i->session = out[2];
	i->ram = (uint32_t)out[4] | (uint32_t)out[5] << 8 | (uint32_t)out[6] << 16 |
		 (uint32_t)out[7] << 24;
	i->last = (uint16_t)(out[8] | out[9] << 8);
	i->areas = (uint16_t)(out[10] | out[11] << 8);
	i->bytes = (uint32_t)out[12] | (uint32_t)out[13] << 8 | (uint32_t)out[14] << 16 |
		   (uint32_t)out[15] << 24;
	i->device = (uint16_t)(out[16] | out[17] << 8);
	memcpy(i->uid, out + 20, 12);
	memcpy(i->installed, out + 32, 32);
}

static void attach(struct fx *f, const char *ca, const char *gk)
{
	struct emu_osfi_config cfg = { .ca_key_path = ca, .global_key_path = gk, .ram_buffer = RAM };
	size_t len = 0;
	uint16_t st;

	assert_int_equal(emu_osfi_attach(f->chip, &cfg), 0);
	assert_int_equal(run(f, false, OSFI_OP_GET_CERT, NULL, 0, NULL, 0, &st, f->cert, &len), 0);
	if (ca) {
		assert_int_equal(st, OSFI_ST_OK);
		assert_int_equal(len, OSFI_CERT_LEN);
	}
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	FILE *g;

	assert_non_null(f);
	strcpy(f->dir, "/tmp/emu-osfi-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->ca_path, sizeof(f->ca_path), "%s/ca.pem", f->dir);
	snprintf(f->gk_path, sizeof(f->gk_path), "%s/global.key", f->dir);
	f->ca = EVP_EC_gen("P-256");
	f->hsm = EVP_EC_gen("P-256");
	assert_non_null(f->ca);
	assert_non_null(f->hsm);
	assert_int_equal(forge_write_pem(f->ca, f->ca_path), 0);
	assert_int_equal(RAND_bytes(f->gk, 32), 1);
	g = fopen(f->gk_path, "we");
	assert_non_null(g);
	assert_int_equal(fwrite(f->gk, 1, 32, g), 32);
	fclose(g);
	for (int i = 0; i < 12; i++)
		f->uid[i] = (uint8_t)(0xa0 + i);
	assert_int_equal(RAND_bytes(f->k, 16), 1);
	assert_int_equal(RAND_bytes(f->km, 16), 1);
	assert_int_equal(RAND_bytes(f->fw, sizeof(f->fw)), 1);
	assert_int_equal(RAND_bytes(f->secret, sizeof(f->secret)), 1);
	f->chip = fake_chip_new(f->dir, DEV, f->uid);
	assert_non_null(f->chip);
	attach(f, f->ca_path, f->gk_path);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	emu_osfi_detach(f->chip);
	fake_chip_free(f->chip);
	EVP_PKEY_free(f->ca);
	EVP_PKEY_free(f->hsm);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* --- Builders --- */

static uint8_t *image(struct fx *f, const struct forge_area *a, size_t n, uint16_t device,
		      uint32_t version, size_t *len)
{
	struct forge_image_params p = { .key = f->k, .device = device, .version = version,
					.areas = a, .n_areas = n };
	uint8_t *img;

	assert_int_equal(RAND_bytes(p.nonce, sizeof(p.nonce)), 1);
	img = forge_image(&p, len);
	assert_non_null(img);
	return img;
}

static void chip_license(struct fx *f, uint32_t target, const uint8_t *id, const uint8_t *key,
			 uint8_t out[OSFI_LICENSE_LEN])
{
	struct forge_license_params p = { .kind = OSFI_LICENSE_KIND_CHIP, .device = DEV,
					  .target = target, .uid = f->uid, .id = id,
					  .hsm_key = f->hsm, .chip_pub = f->cert + OSFI_CERT_OFF_PUBKEY,
					  .key = key, .counter = 41 };

	assert_int_equal(RAND_bytes(p.nonce, 16), 1);
	assert_int_equal(forge_license(&p, out), 0);
}

static void image_license(struct fx *f, const uint8_t *img, uint8_t out[OSFI_LICENSE_LEN])
{
	uint8_t id[32];

	forge_image_id(img, id);
	chip_license(f, OSFI_TARGET_IMAGE, id, f->k, out);
}

/* Streams the image after its header; returns the first status that is not OK. */
static uint16_t stream(struct fx *f, const uint8_t *img, size_t len, size_t chunk)
{
	for (size_t off = OSFI_HEADER_LEN; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;
		uint16_t st = op51(f, OSFI_OP_PUT_DATA, (uint32_t)off, img + off, n);

		if (st != OSFI_ST_OK)
			return st;
	}
	return OSFI_ST_OK;
}

static uint16_t install(struct fx *f, const uint8_t *img, size_t len, const uint8_t *lic)
{
	uint16_t st;

	st = op51(f, OSFI_OP_PUT_LICENSE, 0, lic, OSFI_LICENSE_LEN);
	if (st == OSFI_ST_OK)
		st = op50(f, OSFI_OP_PUT_HEADER, img, OSFI_HEADER_LEN);
	if (st == OSFI_ST_OK)
		st = stream(f, img, len, OSFI_DATA_CHUNK);
	if (st == OSFI_ST_OK)
		st = op50(f, OSFI_OP_FINALIZE, NULL, 0);
	return st;
}

/* A failed session: failed state, that status, Open, nothing of it left in memory. */
static void assert_failed_clean(struct fx *f, uint16_t status, size_t units_before)
{
	struct info i;

	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FAILED);
	assert_int_equal(i.last, status);
	assert_int_equal(i.ps, STM32H5_PS_OPEN);
	assert_int_equal(fake_chip_programmed_units(f->chip), units_before);
}

/* The chip still takes a good image (two F areas, no configuration): installs, checks. */
static void assert_installable(struct fx *f)
{
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH + 0x40000, .data = f->fw, .size = RAM },
		{ .type = 'F', .addr = FLASH + 0x40000 + RAM, .data = f->fw + RAM, .size = RAM },
	};
	uint8_t lic[OSFI_LICENSE_LEN];
	struct info i;
	size_t len;
	uint8_t *img = image(f, a, 2, DEV, 1, &len);

	image_license(f, img, lic);
	assert_int_equal(install(f, img, len, lic), OSFI_ST_OK);
	assert_memory_equal(fake_chip_mem(f->chip, FLASH + 0x40000, 2 * RAM), f->fw, 2 * RAM);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FINALIZED);
	assert_int_equal(i.ps, STM32H5_PS_OPEN);
	assert_true(fake_chip_take_reset(f->chip));
	free(img);
}

/* --- Identity --- */

static void test_identity(void **state)
{
	struct fx *f = *state;
	uint8_t cert2[OSFI_CERT_LEN];
	char path[160];
	struct stat st;
	struct info i;

	assert_memory_equal(f->cert, "OSC1", 4);
	assert_int_equal(f->cert[4], 1);
	assert_int_equal(f->cert[5], 0);
	assert_int_equal(f->cert[6] | f->cert[7] << 8, DEV);
	assert_memory_equal(f->cert + 8, f->uid, 12);
	assert_int_equal(f->cert[20], 0x04);
	assert_true(forge_cert_verify(f->cert, f->ca));
	assert_false(forge_cert_verify(f->cert, f->hsm));

	snprintf(path, sizeof(path), "%s/chip.key", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/chip.cert", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, OSFI_CERT_LEN);

	get_info(f, &i);
	assert_int_equal(i.ps, STM32H5_PS_OPEN);
	assert_int_equal(i.version, OSFI_VERSION);
	assert_int_equal(i.session, OSFI_SESSION_IDLE);
	assert_int_equal(i.ram, RAM);
	assert_int_equal(i.last, OSFI_ST_OK);
	assert_int_equal(i.device, DEV);
	assert_memory_equal(i.uid, f->uid, 12);

	/* Same identity after a restart of the emulator. */
	memcpy(cert2, f->cert, sizeof(cert2));
	emu_osfi_detach(f->chip);
	attach(f, f->ca_path, NULL);
	assert_memory_equal(cert2, f->cert, OSFI_CERT_LEN);
	assert_int_equal(emu_osfi_attach(f->chip, &(struct emu_osfi_config){ 0 }), -EBUSY);

	/* Without a CA the chip has no certificate: INTERNAL with no data. */
	emu_osfi_detach(f->chip);
	attach(f, NULL, NULL);
	{
		uint8_t out[1024];
		size_t len = 99;
		uint16_t s;

		assert_int_equal(run(f, false, OSFI_OP_GET_CERT, NULL, 0, NULL, 0, &s, out, &len), 0);
		assert_int_equal(s, OSFI_ST_INTERNAL);
		assert_int_equal(len, 0);
	}
	/* Unusable configuration files are refused at start. */
	emu_osfi_detach(f->chip);
	{
		char missing[160];
		struct emu_osfi_config cfg = { .ca_key_path = missing };

		snprintf(missing, sizeof(missing), "%s/none.pem", f->dir);
		assert_int_equal(emu_osfi_attach(f->chip, &cfg), -ENOENT);
		cfg.ca_key_path = f->gk_path;	/* not a PEM key */
		assert_int_equal(emu_osfi_attach(f->chip, &cfg), -EINVAL);
		cfg.ca_key_path = NULL;
		cfg.global_key_path = f->ca_path;	/* not 32 bytes */
		assert_int_equal(emu_osfi_attach(f->chip, &cfg), -EINVAL);
		assert_null(emu_chip_osfi(f->chip));
	}
	attach(f, NULL, NULL);
	/* The key is kept: the certificate made with the CA again is the same point. */
	emu_osfi_detach(f->chip);
	attach(f, f->ca_path, f->gk_path);
	assert_memory_equal(cert2 + 20, f->cert + 20, 65);
}

static void test_unknown_subops(void **state)
{
	struct fx *f = *state;
	uint16_t st;

	assert_int_equal(run(f, false, 0x5307, NULL, 0, NULL, 0, &st, NULL, NULL), -ENOENT);
	assert_int_equal(run(f, false, 0x1234, NULL, 0, NULL, 0, &st, NULL, NULL), -ENOENT);
	/* A sub-command on the other Special command is unknown there. */
	assert_int_equal(run(f, true, OSFI_OP_GET_INFO, "\0\0\0\0", 4, "x", 1, &st, NULL, NULL),
			 -ENOENT);
	assert_int_equal(run(f, false, OSFI_OP_PUT_DATA, NULL, 0, NULL, 0, &st, NULL, NULL),
			 -ENOENT);
	assert_true(emu_osfi_subop_known(OSFI_OP_ABORT));
	assert_false(emu_osfi_subop_known(0x5307));
	assert_int_equal(op50(f, OSFI_OP_GET_INFO, "x", 1), OSFI_ST_BAD_LENGTH);
}

/* --- A full install --- */

static void test_full_install(void **state)
{
	struct fx *f = *state;
	uint8_t cfg[24] = { 0 };
	uint32_t optsr = 0x00f000f8u | (uint32_t)STM32H5_PS_CLOSED << 8;
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH, .data = f->fw, .size = RAM },
		{ .type = 'F', .addr = FLASH + RAM, .data = f->fw + RAM, .size = RAM },
		{ .type = 'P' },
		{ .type = 'R' },
		{ .type = 'F', .addr = FLASH + 0x100000, .data = f->fw + 2 * RAM, .size = RAM },
		{ .type = 'K', .addr = STM32H5_OTP_BASE + 0x100, .data = f->secret, .size = 32 },
		{ .type = 'C', .data = cfg, .size = sizeof(cfg) },
	};
	uint8_t lic[OSFI_LICENSE_LEN], id[32];
	struct info i;
	size_t len;
	uint8_t *img;

	cfg[0] = OSFI_OPT_WRP1R;
	cfg[4] = 0x0f;
	cfg[8] = OSFI_OPT_OPTSR;
	memcpy(cfg + 12, (uint8_t[]){ (uint8_t)optsr, (uint8_t)(optsr >> 8), (uint8_t)(optsr >> 16),
				      (uint8_t)(optsr >> 24) }, 4);
	cfg[16] = OSFI_OPT_SECBOOTR;
	cfg[20] = 0xb4;
	img = image(f, a, 7, DEV, 7, &len);
	image_license(f, img, lic);

	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_LICENSED);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	/* Odd chunk sizes, and every chunk sent twice: the repeat is answered OK, not applied. */
	for (size_t off = 64; off < len; off += 1000) {
		size_t n = len - off < 1000 ? len - off : 1000;

		assert_int_equal(op51(f, OSFI_OP_PUT_DATA, (uint32_t)off, img + off, n), OSFI_ST_OK);
		assert_int_equal(op51(f, OSFI_OP_PUT_DATA, (uint32_t)off, img + off, n), OSFI_ST_OK);
	}
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_COMPLETE);
	assert_int_equal(i.areas, 7);
	assert_int_equal(i.bytes, len - 64);
	/* Secrets for OTP wait for FINALIZE; flash is programmed as areas complete. */
	assert_memory_equal(fake_chip_mem(f->chip, FLASH, 2 * RAM), f->fw, 2 * RAM);
	assert_int_equal(fake_chip_mem(f->chip, STM32H5_OTP_BASE + 0x100, 1)[0], 0xff);
	assert_int_equal(emu_chip_product_state(f->chip), STM32H5_PS_OPEN);
	assert_false(fake_chip_take_reset(f->chip));

	assert_int_equal(op50(f, OSFI_OP_FINALIZE, NULL, 0), OSFI_ST_OK);
	assert_true(fake_chip_take_reset(f->chip));
	assert_true(fake_chip_persist_count(f->chip) >= 1);
	assert_memory_equal(fake_chip_mem(f->chip, FLASH + 0x100000, RAM), f->fw + 2 * RAM, RAM);
	assert_memory_equal(fake_chip_mem(f->chip, STM32H5_OTP_BASE + 0x100, 32), f->secret, 32);
	assert_int_equal(emu_chip_product_state(f->chip), STM32H5_PS_CLOSED);
	assert_int_equal(emu_chip_get_option(f->chip, OSFI_OPT_OPTSR), optsr);
	assert_int_equal(emu_chip_get_option(f->chip, OSFI_OPT_WRP1R), 0x0f);
	assert_int_equal(emu_chip_get_option(f->chip, OSFI_OPT_SECBOOTR), 0xb4);
	assert_int_equal(emu_chip_image_version(f->chip), 7);
	assert_int_equal(fake_chip_programmed_units(f->chip), 3 * RAM / 16 + 2);

	/* After the reset the host finds the session finalized; a closed chip refuses SFI. */
	emu_osfi_reset(f->chip);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FINALIZED);
	assert_int_equal(i.ps, STM32H5_PS_CLOSED);
	assert_int_equal(i.last, OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_FINALIZE, NULL, 0), OSFI_ST_SEQUENCE);
	assert_int_equal(op50(f, OSFI_OP_ABORT, NULL, 0), OSFI_ST_OK);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_BAD_STATE);
	/* The refusal changes nothing: the record still names the finalized session. */
	forge_image_id(img, id);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FINALIZED);
	assert_int_equal(i.last, OSFI_ST_OK);
	assert_memory_equal(i.installed, id, 32);
	assert_int_equal(i.ps, STM32H5_PS_CLOSED);
	assert_memory_equal(fake_chip_mem(f->chip, FLASH, 2 * RAM), f->fw, 2 * RAM);

	/* A power cycle (the OSFI side detached and attached again on the same state dir). */
	emu_osfi_detach(f->chip);
	attach(f, f->ca_path, f->gk_path);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FINALIZED);
	assert_int_equal(i.last, OSFI_ST_OK);
	assert_int_equal(i.areas, 7);
	assert_int_equal(i.bytes, len - 64);
	assert_memory_equal(i.installed, id, 32);
	free(img);
}

/* The session record survives a power cycle whatever the session's state: an interrupted
 * session reads failed, the installed id stays that of the last finalized session, and a
 * damaged record stops the chip from starting. */
static void test_session_record(void **state)
{
	struct fx *f = *state;
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH, .data = f->fw, .size = RAM },
		{ .type = 'F', .addr = FLASH + RAM, .data = f->fw + RAM, .size = RAM },
	};
	struct emu_osfi_config cfg = { .ca_key_path = f->ca_path, .ram_buffer = RAM };
	uint8_t lic[OSFI_LICENSE_LEN], lic2[OSFI_LICENSE_LEN], id[32], zero[32] = { 0 };
	char path[128];
	struct info i;
	size_t len, len2;
	uint8_t *img = image(f, a, 2, DEV, 1, &len), *img2;
	FILE *g;

	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_IDLE);
	assert_memory_equal(i.installed, zero, 32);

	/* Finalized, Open (no 'C' area): the image id is reported, and after a power cycle. */
	forge_image_id(img, id);
	image_license(f, img, lic);
	assert_int_equal(install(f, img, len, lic), OSFI_ST_OK);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FINALIZED);
	assert_memory_equal(i.installed, id, 32);
	emu_osfi_detach(f->chip);
	attach(f, f->ca_path, f->gk_path);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FINALIZED);
	assert_int_equal(i.last, OSFI_ST_OK);
	assert_memory_equal(i.installed, id, 32);

	/* A second session cut by a power loss halfway: failed, status OK (nothing was refused),
	 * its flash erased again, the first image's id kept. */
	a[0].addr = FLASH + 0x80000;
	a[1].addr = FLASH + 0x80000 + RAM;
	img2 = image(f, a, 2, DEV, 2, &len2);
	image_license(f, img2, lic2);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic2, sizeof(lic2)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img2, 64), OSFI_ST_OK);
	for (size_t off = 64; off < 64 + 48 + RAM; off += OSFI_DATA_CHUNK) {
		size_t n = 64 + 48 + RAM - off < OSFI_DATA_CHUNK ? 64 + 48 + RAM - off :
								    OSFI_DATA_CHUNK;

		assert_int_equal(op51(f, OSFI_OP_PUT_DATA, (uint32_t)off, img2 + off, n),
				 OSFI_ST_OK);
	}
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_STREAMING);
	assert_int_equal(i.areas, 1);
	emu_osfi_detach(f->chip);
	attach(f, f->ca_path, f->gk_path);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FAILED);
	assert_int_equal(i.last, OSFI_ST_OK);
	assert_memory_equal(i.installed, id, 32);
	assert_int_equal(fake_chip_mem(f->chip, FLASH + 0x80000, 1)[0], 0xff);
	assert_memory_equal(fake_chip_mem(f->chip, FLASH, 2 * RAM), f->fw, 2 * RAM);

	/* A refused license (not a power loss) replaces state and status, not the installed id. */
	lic2[0] ^= 1;
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic2, sizeof(lic2)),
			 OSFI_ST_LICENSE_MALFORMED);
	emu_osfi_detach(f->chip);
	attach(f, f->ca_path, f->gk_path);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_FAILED);
	assert_int_equal(i.last, OSFI_ST_LICENSE_MALFORMED);
	assert_memory_equal(i.installed, id, 32);

	/* A damaged record: the chip does not start. */
	emu_osfi_detach(f->chip);
	snprintf(path, sizeof(path), "%s/osfi.session", f->dir);
	g = fopen(path, "ae");
	assert_non_null(g);
	fputs("state=x\n", g);
	fclose(g);
	assert_int_equal(emu_osfi_attach(f->chip, &cfg), -EINVAL);
	assert_int_equal(unlink(path), 0);
	attach(f, f->ca_path, f->gk_path);
	get_info(f, &i);
	assert_int_equal(i.session, OSFI_SESSION_IDLE);
	free(img);
	free(img2);
}

/* A global image license and a chip-specific module license: 'M' under the module key. */
static void test_global_and_module(void **state)
{
	struct fx *f = *state;
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH, .data = f->fw, .size = 256 },
		{ .type = 'M', .addr = FLASH + 0x2000, .module = 7, .data = f->fw + 256, .size = 512,
		  .key = f->km },
		{ .type = 'K', .addr = STM32H5_OBK_BASE, .data = f->secret, .size = 32 },
	};
	struct forge_license_params g = { .kind = OSFI_LICENSE_KIND_GLOBAL, .device = DEV,
					  .global_key = f->gk, .key = f->k };
	uint8_t lic[OSFI_LICENSE_LEN], mlic[OSFI_LICENSE_LEN], id[32], mid[32];
	size_t len;
	uint8_t *img = image(f, a, 3, DEV, 0, &len);

	forge_image_id(img, id);
	g.id = id;
	assert_int_equal(forge_license(&g, lic), 0);
	forge_module_id(7, mid);
	chip_license(f, 7, mid, f->km, mlic);

	/* A module license needs a session to belong to. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 7, mlic, sizeof(mlic)), OSFI_ST_SEQUENCE);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 7, mlic, sizeof(mlic)), OSFI_ST_OK);
	/* Again (a host retry) replaces it. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 7, mlic, sizeof(mlic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(stream(f, img, len, 100), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_FINALIZE, NULL, 0), OSFI_ST_OK);
	assert_memory_equal(fake_chip_mem(f->chip, FLASH + 0x2000, 512), f->fw + 256, 512);
	assert_memory_equal(fake_chip_mem(f->chip, STM32H5_OBK_BASE, 32), f->secret, 32);
	assert_int_equal(emu_chip_product_state(f->chip), STM32H5_PS_OPEN);
	free(img);
}

/* --- Failures: each leaves a failed session, the chip Open and clean, and installable --- */

static void test_license_failures(void **state)
{
	struct fx *f = *state;
	struct forge_area a[] = { { .type = 'F', .addr = FLASH, .data = f->fw, .size = 64 } };
	uint8_t lic[OSFI_LICENSE_LEN], bad[OSFI_LICENSE_LEN], id[32];
	struct forge_license_params p = { .kind = OSFI_LICENSE_KIND_CHIP, .device = DEV,
					  .uid = f->uid, .hsm_key = f->hsm,
					  .chip_pub = f->cert + OSFI_CERT_OFF_PUBKEY, .key = f->k };
	size_t len;
	uint8_t *img = image(f, a, 1, DEV, 0, &len);

	forge_image_id(img, id);
	p.id = id;
	assert_int_equal(forge_license(&p, lic), 0);

	/* Another chip's UID: WRONG_CHIP (the UID is checked before any crypto). */
	p.uid = (const uint8_t *)"another-chip";
	assert_int_equal(forge_license(&p, bad), 0);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
			 OSFI_ST_LICENSE_WRONG_CHIP);
	assert_failed_clean(f, OSFI_ST_LICENSE_WRONG_CHIP, 0);
	p.uid = f->uid;

	/* Another device family. */
	p.device = STM32_PID_H503;
	assert_int_equal(forge_license(&p, bad), 0);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
			 OSFI_ST_LICENSE_WRONG_DEVICE);
	assert_failed_clean(f, OSFI_ST_LICENSE_WRONG_DEVICE, 0);
	p.device = DEV;

	/* Any bound field changed: the unwrap fails. */
	memcpy(bad, lic, sizeof(bad));
	bad[OSFI_LIC_OFF_NONCE] ^= 1;
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
			 OSFI_ST_LICENSE_INVALID);
	assert_failed_clean(f, OSFI_ST_LICENSE_INVALID, 0);
	memcpy(bad, lic, sizeof(bad));
	bad[OSFI_LIC_OFF_WRAPPED + 3] ^= 0x40;
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
			 OSFI_ST_LICENSE_INVALID);
	/* A license made for another chip key (other HSM key pair, same UID). */
	{
		EVP_PKEY *other = EVP_EC_gen("P-256");

		p.hsm_key = other;
		p.chip_pub = f->cert + OSFI_CERT_OFF_PUBKEY;
		assert_int_equal(forge_license(&p, bad), 0);
		/* Keep the record's HSM key but wrap under a KEK the chip cannot derive. */
		memcpy(bad + OSFI_LIC_OFF_HSMPUB, lic + OSFI_LIC_OFF_HSMPUB, OSFI_PUBKEY_LEN);
		assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
				 OSFI_ST_LICENSE_INVALID);
		EVP_PKEY_free(other);
		p.hsm_key = f->hsm;
	}
	/* Global license without the chip knowing a global key is tested elsewhere: here,
	 * a global license under another global key. */
	{
		struct forge_license_params g = { .kind = OSFI_LICENSE_KIND_GLOBAL, .device = DEV,
						  .id = id, .key = f->k };
		uint8_t other_gk[32] = { 1 };

		g.global_key = other_gk;
		assert_int_equal(forge_license(&g, bad), 0);
		assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
				 OSFI_ST_LICENSE_INVALID);
	}

	/* Damaged records. */
	memcpy(bad, lic, sizeof(bad));
	bad[0] = 'X';
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
			 OSFI_ST_LICENSE_MALFORMED);
	assert_failed_clean(f, OSFI_ST_LICENSE_MALFORMED, 0);
	memcpy(bad, lic, sizeof(bad));
	bad[OSFI_LIC_OFF_HSMPUB + 10] ^= 1;	/* no longer a curve point */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
			 OSFI_ST_LICENSE_MALFORMED);
	memcpy(bad, lic, sizeof(bad));
	bad[OSFI_LICENSE_LEN - 1] = 1;
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, bad, sizeof(bad)),
			 OSFI_ST_LICENSE_MALFORMED);
	/* The slot (p1) and the record's target disagree. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 9, lic, sizeof(lic)),
			 OSFI_ST_LICENSE_MALFORMED);
	assert_failed_clean(f, OSFI_ST_LICENSE_MALFORMED, 0);
	/* Lengths. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic) - 1),
			 OSFI_ST_BAD_LENGTH);
	assert_failed_clean(f, OSFI_ST_BAD_LENGTH, 0);
	{
		uint16_t st;

		assert_int_equal(run(f, true, OSFI_OP_PUT_LICENSE, "\0\0\0", 3, lic, sizeof(lic),
				     &st, NULL, NULL), 0);
		assert_int_equal(st, OSFI_ST_BAD_LENGTH);
	}
	/* A module license whose id is not the module's firmware id. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	chip_license(f, 5, id, f->km, bad);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 5, bad, sizeof(bad)),
			 OSFI_ST_LICENSE_INVALID);
	assert_failed_clean(f, OSFI_ST_LICENSE_INVALID, 0);

	assert_installable(f);
	free(img);
}

static void test_global_without_key(void **state)
{
	struct fx *f = *state;
	struct forge_area a[] = { { .type = 'F', .addr = FLASH, .data = f->fw, .size = 64 } };
	struct forge_license_params g = { .kind = OSFI_LICENSE_KIND_GLOBAL, .device = DEV,
					  .key = f->k };
	uint8_t lic[OSFI_LICENSE_LEN], id[32];
	size_t len;
	uint8_t *img = image(f, a, 1, DEV, 0, &len);

	forge_image_id(img, id);
	g.id = id;
	g.global_key = f->gk;
	assert_int_equal(forge_license(&g, lic), 0);
	emu_osfi_detach(f->chip);
	attach(f, f->ca_path, NULL);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)),
			 OSFI_ST_LICENSE_INVALID);
	assert_failed_clean(f, OSFI_ST_LICENSE_INVALID, 0);
	assert_installable(f);
	free(img);
}

static void test_header_failures(void **state)
{
	struct fx *f = *state;
	struct forge_area a[] = { { .type = 'F', .addr = FLASH, .data = f->fw, .size = 64 } };
	struct forge_image_params p = { .key = f->k, .device = DEV, .version = 3, .areas = a,
					.n_areas = 1 };
	uint8_t lic[OSFI_LICENSE_LEN], hdr[64];
	uint8_t *img, *other;
	size_t len;

	img = forge_image(&p, &len);
	assert_non_null(img);
	image_license(f, img, lic);

	/* Header before license: refused, and no session is made of it (the chip stays idle). */
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_NO_LICENSE);
	{
		struct info i;

		get_info(f, &i);
		assert_int_equal(i.session, OSFI_SESSION_IDLE);
		assert_int_equal(i.last, OSFI_ST_OK);
	}
	/* Lengths come before the session state. */
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 63), OSFI_ST_BAD_LENGTH);
	assert_int_equal(op50(f, OSFI_OP_FINALIZE, img, 1), OSFI_ST_BAD_LENGTH);

	/* Malformed: flags set (checked before the image id), wrong length. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	memcpy(hdr, img, 64);
	hdr[OSFI_HDR_OFF_FLAGS] = 1;
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, hdr, 64), OSFI_ST_HEADER_MALFORMED);
	assert_failed_clean(f, OSFI_ST_HEADER_MALFORMED, 0);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 63), OSFI_ST_BAD_LENGTH);
	assert_failed_clean(f, OSFI_ST_BAD_LENGTH, 0);

	/* The license is for another image. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	memcpy(hdr, img, 64);
	hdr[OSFI_HDR_OFF_VERSION] ^= 1;
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, hdr, 64), OSFI_ST_IMAGE_MISMATCH);
	assert_failed_clean(f, OSFI_ST_IMAGE_MISMATCH, 0);

	/* A tampered header with a license that names it: the tag fails. */
	image_license(f, hdr, lic);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, hdr, 64), OSFI_ST_HEADER_AUTH);
	assert_failed_clean(f, OSFI_ST_HEADER_AUTH, 0);

	/* An image for another device. */
	p.device = STM32_PID_H503;
	other = forge_image(&p, &len);
	assert_non_null(other);
	image_license(f, other, lic);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, other, 64), OSFI_ST_IMAGE_WRONG_DEVICE);
	assert_failed_clean(f, OSFI_ST_IMAGE_WRONG_DEVICE, 0);
	free(other);

	/* Rollback: the chip installed version 5 before; version 3 is refused, 5 is fine. */
	emu_chip_set_image_version(f->chip, 5);
	image_license(f, img, lic);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_ROLLBACK);
	assert_failed_clean(f, OSFI_ST_ROLLBACK, 0);

	/* A header twice is out of order. */
	emu_chip_set_image_version(f->chip, 0);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_SEQUENCE);
	assert_failed_clean(f, OSFI_ST_SEQUENCE, 0);

	assert_installable(f);
	free(img);
}

/* Runs an image whose area `bad` is expected to fail with `status` after the areas before it
 * were programmed; checks that they were erased again and the chip is installable. */
static void expect_area_failure(struct fx *f, const struct forge_area *a, size_t n,
				uint16_t status, size_t units_before)
{
	uint8_t lic[OSFI_LICENSE_LEN];
	size_t len;
	uint8_t *img = image(f, a, n, DEV, 0, &len);

	image_license(f, img, lic);
	assert_int_equal(install(f, img, len, lic), status);
	assert_failed_clean(f, status, units_before);
	free(img);
}

static void test_area_failures(void **state)
{
	struct fx *f = *state;
	uint8_t cfg[16] = { OSFI_OPT_OPTSR, 0, 0, 0, 0xf8, STM32H5_PS_CLOSED, 0, 0,
			    13, 0, 0, 0, 1, 0, 0, 0 };
	struct forge_area good = { .type = 'F', .addr = FLASH, .data = f->fw, .size = RAM };
	struct forge_area otp = { .type = 'K', .addr = STM32H5_OTP_BASE, .data = f->secret,
				  .size = 32 };
	struct forge_area a[3];

	/* Too large for the RAM buffer. */
	a[0] = good;
	a[1] = (struct forge_area){ .type = 'F', .addr = FLASH + RAM, .data = f->fw, .size = 2 * RAM };
	expect_area_failure(f, a, 2, OSFI_ST_AREA_TOO_LARGE, 0);

	/* Outside what the type may write. */
	a[1] = (struct forge_area){ .type = 'F', .addr = STM32H5_SRAM_BASE, .data = f->fw,
				    .size = 64 };
	expect_area_failure(f, a, 2, OSFI_ST_BAD_ADDRESS, 0);
	a[1] = (struct forge_area){ .type = 'F', .addr = STM32H5_OTP_BASE, .data = f->fw,
				    .size = 64 };
	expect_area_failure(f, a, 2, OSFI_ST_BAD_ADDRESS, 0);
	a[1] = (struct forge_area){ .type = 'F', .addr = FLASH + RAM + 8, .data = f->fw,
				    .size = 64 };
	expect_area_failure(f, a, 2, OSFI_ST_BAD_ADDRESS, 0);
	a[1] = (struct forge_area){ .type = 'F', .addr = FLASH + STM32H5_FLASH_SIZE - 32,
				    .data = f->fw, .size = 64 };
	expect_area_failure(f, a, 2, OSFI_ST_BAD_ADDRESS, 0);

	/* Damaged descriptors that still authenticate. */
	a[1] = (struct forge_area){ .type = 'F', .addr = FLASH + RAM, .data = f->fw, .size = 64,
				    .reserved1 = 1 };
	expect_area_failure(f, a, 2, OSFI_ST_DESCRIPTOR_MALFORMED, 0);
	a[1] = (struct forge_area){ .type = 'F', .addr = FLASH + RAM, .data = f->fw, .size = 64,
				    .index_delta = 1 };
	expect_area_failure(f, a, 2, OSFI_ST_DESCRIPTOR_MALFORMED, 0);
	a[1] = (struct forge_area){ .type = 'Z', .addr = FLASH + RAM, .data = f->fw, .size = 64 };
	expect_area_failure(f, a, 2, OSFI_ST_DESCRIPTOR_MALFORMED, 0);
	a[1] = (struct forge_area){ .type = 'F', .addr = FLASH + RAM, .data = f->fw, .size = 24 };
	expect_area_failure(f, a, 2, OSFI_ST_DESCRIPTOR_MALFORMED, 0);
	/* 'C' not last. */
	a[1] = (struct forge_area){ .type = 'C', .data = cfg, .size = 8 };
	a[2] = good;
	a[2].addr = FLASH + RAM;
	expect_area_failure(f, a, 3, OSFI_ST_DESCRIPTOR_MALFORMED, 0);

	/* Target not erased: the pre-programmed bytes stay, the session's go. */
	assert_int_equal(emu_chip_program(f->chip, FLASH + 0x8000, f->fw, 16), 0);
	a[1] = (struct forge_area){ .type = 'F', .addr = FLASH + 0x7ff0, .data = f->fw, .size = 64 };
	expect_area_failure(f, a, 2, OSFI_ST_NOT_ERASED, 1);
	assert_int_equal(emu_chip_erase_range(f->chip, FLASH + 0x8000, 16), 0);
	/* OTP written before: a secret for it is refused. */
	assert_int_equal(emu_chip_program(f->chip, STM32H5_OTP_BASE + 16, f->fw, 16), 0);
	a[1] = otp;
	expect_area_failure(f, a, 2, OSFI_ST_NOT_ERASED, 1);

	/* Unknown register, and PRODUCT_STATE missing or invalid. */
	a[1] = (struct forge_area){ .type = 'C', .data = cfg, .size = 16 };
	expect_area_failure(f, a, 2, OSFI_ST_BAD_OPTION, 1);
	a[1] = (struct forge_area){ .type = 'C', .data = cfg + 8, .size = 8 };
	cfg[8] = OSFI_OPT_WRP1R;
	expect_area_failure(f, a, 2, OSFI_ST_BAD_OPTION, 1);
	cfg[5] = 0x9a;	/* a regression command is not a state */
	a[1] = (struct forge_area){ .type = 'C', .data = cfg, .size = 8 };
	expect_area_failure(f, a, 2, OSFI_ST_BAD_OPTION, 1);

	/* Module area without its license. */
	a[1] = (struct forge_area){ .type = 'M', .addr = FLASH + RAM, .module = 3, .data = f->fw,
				    .size = 64, .key = f->km };
	expect_area_failure(f, a, 2, OSFI_ST_MODULE_LICENSE_MISSING, 1);

	/* Flash fault while programming. */
	fake_chip_fail_program(f->chip, true);
	expect_area_failure(f, a, 1, OSFI_ST_FLASH_ERROR, 1);
	fake_chip_fail_program(f->chip, false);

	assert_int_equal(fake_chip_mem(f->chip, STM32H5_OTP_BASE + 16, 1)[0], f->fw[0]);
	assert_installable(f);
}

static void test_stream_failures(void **state)
{
	struct fx *f = *state;
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH, .data = f->fw, .size = RAM },
		{ .type = 'K', .addr = STM32H5_OTP_BASE, .data = f->secret, .size = 32 },
		{ .type = 'F', .addr = FLASH + RAM, .data = f->fw + RAM, .size = RAM },
	};
	uint8_t lic[OSFI_LICENSE_LEN];
	size_t len, last;
	uint8_t *img = image(f, a, 3, DEV, 0, &len);

	image_license(f, img, lic);

	/* Tampered third area: the first was programmed and is erased again; the OTP secret
	 * (held back until FINALIZE) was never written. */
	img[len - 5] ^= 1;
	assert_int_equal(install(f, img, len, lic), OSFI_ST_AREA_AUTH);
	assert_failed_clean(f, OSFI_ST_AREA_AUTH, 0);
	/* Re-sending the failed chunk answers its status again, and changes nothing. */
	last = (len - 64 - 1) / 1024 * 1024 + 64;
	assert_int_equal(op51(f, OSFI_OP_PUT_DATA, (uint32_t)last, img + last, len - last),
			 OSFI_ST_AREA_AUTH);
	assert_int_equal(op51(f, OSFI_OP_PUT_DATA, (uint32_t)64, img + 64, 1024), OSFI_ST_SEQUENCE);
	assert_failed_clean(f, OSFI_ST_AREA_AUTH, 0);
	img[len - 5] ^= 1;

	/* Wrong stream offset: a chunk skipped. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(stream(f, img, 64 + 3 * 1024, 1024), OSFI_ST_OK);
	assert_int_equal(op51(f, OSFI_OP_PUT_DATA, 64 + 4 * 1024, img + 64 + 4 * 1024, 1024),
			 OSFI_ST_SEQUENCE);
	assert_failed_clean(f, OSFI_ST_SEQUENCE, 0);

	/* Data before the header, and after the end. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op51(f, OSFI_OP_PUT_DATA, 64, img + 64, 1024), OSFI_ST_SEQUENCE);
	assert_failed_clean(f, OSFI_ST_SEQUENCE, 0);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(stream(f, img, len - 10, 1024), OSFI_ST_OK);
	{
		uint8_t tail[11] = { 0 };

		memcpy(tail, img + len - 10, 10);
		assert_int_equal(op51(f, OSFI_OP_PUT_DATA, (uint32_t)(len - 10), tail, 11),
				 OSFI_ST_BAD_LENGTH);
	}
	assert_failed_clean(f, OSFI_ST_BAD_LENGTH, 0);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(op51(f, OSFI_OP_PUT_DATA, 64, img + 64, 1025), OSFI_ST_BAD_LENGTH);
	assert_failed_clean(f, OSFI_ST_BAD_LENGTH, 0);

	/* FINALIZE too early: INCOMPLETE, programmed areas erased. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(stream(f, img, len - 1, 1024), OSFI_ST_OK);
	assert_true(fake_chip_programmed_units(f->chip) > 0);
	assert_int_equal(op50(f, OSFI_OP_FINALIZE, NULL, 0), OSFI_ST_INCOMPLETE);
	assert_failed_clean(f, OSFI_ST_INCOMPLETE, 0);
	assert_int_equal(op50(f, OSFI_OP_FINALIZE, NULL, 0), OSFI_ST_SEQUENCE);
	assert_failed_clean(f, OSFI_ST_INCOMPLETE, 0);

	/* ABORT and a chip reset mid-session do the same. */
	assert_int_equal(install(f, img, len - 1, lic), OSFI_ST_INCOMPLETE);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(stream(f, img, len - 1, 1024), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_ABORT, NULL, 0), OSFI_ST_OK);
	assert_failed_clean(f, OSFI_ST_OK, 0);
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(stream(f, img, len - 1, 1024), OSFI_ST_OK);
	emu_osfi_reset(f->chip);
	assert_failed_clean(f, OSFI_ST_OK, 0);

	/* A new license in the middle of a session starts over, erasing the old one. */
	assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
	assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
	assert_int_equal(stream(f, img, len - 1, 1024), OSFI_ST_OK);
	assert_int_equal(install(f, img, len, lic), OSFI_ST_OK);
	assert_memory_equal(fake_chip_mem(f->chip, FLASH, 2 * RAM), f->fw, 2 * RAM);
	assert_memory_equal(fake_chip_mem(f->chip, STM32H5_OTP_BASE, 32), f->secret, 32);
	free(img);
}

/* A refusal of the chip's configuration by the chip model at FINALIZE: nothing changes. */
static void test_finalize_option_refused(void **state)
{
	struct fx *f = *state;
	uint8_t cfg[16] = { OSFI_OPT_WRP2R, 0, 0, 0, 0x55, 0, 0, 0,
			    OSFI_OPT_OPTSR, 0, 0, 0, 0xf8, STM32H5_PS_OPEN, 0, 0 };
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH, .data = f->fw, .size = 256 },
		{ .type = 'C', .data = cfg, .size = sizeof(cfg) },
	};
	uint32_t wrp2 = emu_chip_get_option(f->chip, OSFI_OPT_WRP2R);

	/* Not Open: the license is refused with BAD_STATE. */
	assert_int_equal(emu_chip_set_option(f->chip, OSFI_OPT_OPTSR,
					     0xf8u | (uint32_t)STM32H5_PS_PROVISIONING << 8), 0);
	{
		uint8_t lic[OSFI_LICENSE_LEN];
		struct info i;
		size_t len;
		uint8_t *img = image(f, a, 2, DEV, 0, &len);

		image_license(f, img, lic);
		assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)),
				 OSFI_ST_BAD_STATE);
		/* Refused without touching the record. */
		get_info(f, &i);
		assert_int_equal(i.session, OSFI_SESSION_IDLE);
		assert_int_equal(i.last, OSFI_ST_OK);
		free(img);
	}
	fake_chip_wipe(f->chip);
	/* From Open, an image asking for Open applies fine; with a raw refusal simulated by a
	 * closed chip model the options are restored. */
	{
		uint8_t lic[OSFI_LICENSE_LEN];
		size_t len;
		uint8_t *img = image(f, a, 2, DEV, 0, &len);

		image_license(f, img, lic);
		assert_int_equal(op51(f, OSFI_OP_PUT_LICENSE, 0, lic, sizeof(lic)), OSFI_ST_OK);
		assert_int_equal(op50(f, OSFI_OP_PUT_HEADER, img, 64), OSFI_ST_OK);
		assert_int_equal(stream(f, img, len, 1024), OSFI_ST_OK);
		/* The life cycle moved on meanwhile (outside OSFI): Open is now a regression. */
		assert_int_equal(emu_chip_set_option(f->chip, OSFI_OPT_OPTSR,
						     0xf8u | (uint32_t)STM32H5_PS_CLOSED << 8), 0);
		assert_int_equal(op50(f, OSFI_OP_FINALIZE, NULL, 0), OSFI_ST_BAD_OPTION);
		assert_int_equal(emu_chip_get_option(f->chip, OSFI_OPT_WRP2R), wrp2);
		assert_int_equal(fake_chip_programmed_units(f->chip), 0);
		free(img);
	}
	fake_chip_wipe(f->chip);
	assert_installable(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_subops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_install, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_global_and_module, setup, teardown),
		cmocka_unit_test_setup_teardown(test_license_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_global_without_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_area_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finalize_option_refused, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

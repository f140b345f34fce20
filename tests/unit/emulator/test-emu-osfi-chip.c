/* The OSFI chip side wired into h5emu's real chip model and AN3155 device state machine
 * (emu-chip.c, emu-bl.c): a whole install driven byte by byte over the bootloader, the reset
 * after FINALIZE, persistence of the result, and a failed install that leaves the chip
 * erased and installable. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "an3155-wire.h"
#include "emu-internal.h"
#include "osfi-forge.h"
#include "osfi-wire.h"

#define RAM 4096u
#define FLASH STM32H5_FLASH_BASE

static const struct emu_special_ops osfi_ops = {
	.special = emu_osfi_special,
	.subop_known = emu_osfi_subop_known,
	.reset = emu_osfi_reset,
};

struct cfx {
	char dir[64], chipdir[96], ca_path[96];
	EVP_PKEY *ca, *hsm;
	struct emu_chip *chip;
	uint8_t cert[OSFI_CERT_LEN];
	uint8_t k[16];
	uint8_t fw[3 * RAM];
	uint8_t secret[32];
};

/* Feeds bytes to the bootloader and returns what it answered. */
static size_t xfer(struct cfx *f, const uint8_t *in, size_t n, uint8_t *out, size_t max)
{
	struct emu_tx t;
	size_t got = 0;

	for (size_t i = 0; i < n; i++)
		emu_chip_input(f->chip, in[i]);
	while (emu_txq_pop(emu_chip_txq(f->chip), &t)) {
		if (t.kind != EMU_TX_BYTE)
			continue;
		assert_true(got < max);
		out[got++] = t.byte;
	}
	return got;
}

static void expect(struct cfx *f, const uint8_t *in, size_t n, const uint8_t *want, size_t nw)
{
	uint8_t out[16];

	assert_int_equal(xfer(f, in, n, out, sizeof(out)), nw);
	assert_memory_equal(out, want, nw);
}

static void sync_chip(struct cfx *f)
{
	expect(f, (const uint8_t[]){ AN3155_SYNC }, 1, (const uint8_t[]){ AN3155_ACK }, 1);
}

/* Sends a length-prefixed packet with its XOR (length included). */
static size_t packet(uint8_t *buf, const uint8_t *data, size_t n)
{
	uint8_t x = (uint8_t)(n >> 8) ^ (uint8_t)n;

	buf[0] = (uint8_t)(n >> 8);
	buf[1] = (uint8_t)n;
	for (size_t i = 0; i < n; i++) {
		buf[2 + i] = data[i];
		x ^= data[i];
	}
	buf[2 + n] = x;
	return n + 3;
}

/* Starts 0x50/0x51 with a sub-opcode; returns false when the sub-opcode was NACKed. */
static bool special_start(struct cfx *f, uint8_t cmd, uint16_t subop)
{
	uint8_t so[3] = { (uint8_t)(subop >> 8), (uint8_t)subop, 0 };
	uint8_t out[4];

	so[2] = so[0] ^ so[1];
	expect(f, (const uint8_t[]){ cmd, (uint8_t)~cmd }, 2, (const uint8_t[]){ AN3155_ACK }, 1);
	assert_int_equal(xfer(f, so, 3, out, sizeof(out)), 1);
	return out[0] == AN3155_ACK;
}

/* 0x50: returns the status and copies the answer data. */
static uint16_t sp50(struct cfx *f, uint16_t subop, const uint8_t *data, size_t n, uint8_t *ans,
		     size_t *ans_len)
{
	uint8_t buf[200], out[1100];
	size_t got, dl;

	assert_true(special_start(f, AN3155_CMD_SPECIAL, subop));
	got = xfer(f, buf, packet(buf, data, n), out, sizeof(out));
	assert_true(got >= 7);
	assert_int_equal(out[0], AN3155_ACK);
	dl = (size_t)(out[1] << 8 | out[2]);
	assert_int_equal(got, 1 + 2 + dl + 4 + 1);
	if (ans)
		memcpy(ans, out + 3, dl);
	if (ans_len)
		*ans_len = dl;
	assert_int_equal(out[3 + dl] << 8 | out[4 + dl], 2);
	assert_int_equal(out[got - 1], AN3155_ACK);
	return (uint16_t)(out[5 + dl] << 8 | out[6 + dl]);
}

static uint16_t sp51(struct cfx *f, uint16_t subop, uint32_t p1v, const uint8_t *p2, size_t n2)
{
	uint8_t p1[4] = { (uint8_t)p1v, (uint8_t)(p1v >> 8), (uint8_t)(p1v >> 16),
			  (uint8_t)(p1v >> 24) };
	uint8_t buf[1100], out[16];
	size_t got;

	assert_true(special_start(f, AN3155_CMD_EXTENDED_SPECIAL, subop));
	expect(f, buf, packet(buf, p1, 4), (const uint8_t[]){ AN3155_ACK }, 1);
	got = xfer(f, buf, packet(buf, p2, n2), out, sizeof(out));
	assert_int_equal(got, 6);
	assert_int_equal(out[0], AN3155_ACK);
	assert_int_equal(out[1] << 8 | out[2], 2);
	assert_int_equal(out[5], AN3155_ACK);
	return (uint16_t)(out[3] << 8 | out[4]);
}

/* OSFI needs Extended Special (0x51) in the bootloader's command list; h5emu's "h563"
 * profile lists the H5's real set, so the test adds it when it is missing. */
static const struct emu_profile *osfi_profile(void)
{
	static struct emu_profile prof;
	static uint8_t cmds[32];
	const struct emu_profile *base = emu_profile_find("h563");
	bool has51 = false;

	assert_non_null(base);
	assert_true(base->n_cmds < sizeof(cmds));
	for (size_t i = 0; i < base->n_cmds; i++)
		has51 |= base->cmds[i] == AN3155_CMD_EXTENDED_SPECIAL;
	if (has51)
		return base;
	prof = *base;
	memcpy(cmds, base->cmds, base->n_cmds);
	cmds[prof.n_cmds++] = AN3155_CMD_EXTENDED_SPECIAL;
	prof.cmds = cmds;
	return &prof;
}

static void chip_open(struct cfx *f)
{
	struct emu_chip_params p = { .profile = osfi_profile(), .index = 0,
				     .state_dir = f->chipdir, .seed = 77, .special = &osfi_ops };
	struct emu_osfi_config cfg = { .ca_key_path = f->ca_path, .ram_buffer = RAM };
	size_t n = 0;

	assert_int_equal(emu_chip_new(&p, &f->chip), 0);
	assert_int_equal(emu_osfi_attach(f->chip, &cfg), 0);
	sync_chip(f);
	assert_int_equal(sp50(f, OSFI_OP_GET_CERT, NULL, 0, f->cert, &n), OSFI_ST_OK);
	assert_int_equal(n, OSFI_CERT_LEN);
}

static void chip_close(struct cfx *f)
{
	emu_osfi_detach(f->chip);
	f->chip = emu_chip_free(f->chip);
}

static int setup(void **state)
{
	struct cfx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/emu-osfi-chip-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->ca_path, sizeof(f->ca_path), "%s/ca.pem", f->dir);
	snprintf(f->chipdir, sizeof(f->chipdir), "%s/chip0", f->dir);
	f->ca = EVP_EC_gen("P-256");
	f->hsm = EVP_EC_gen("P-256");
	assert_non_null(f->ca);
	assert_non_null(f->hsm);
	assert_int_equal(forge_write_pem(f->ca, f->ca_path), 0);
	assert_int_equal(RAND_bytes(f->k, 16), 1);
	assert_int_equal(RAND_bytes(f->fw, sizeof(f->fw)), 1);
	assert_int_equal(RAND_bytes(f->secret, sizeof(f->secret)), 1);
	chip_open(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct cfx *f = *state;
	char cmd[128];

	chip_close(f);
	EVP_PKEY_free(f->ca);
	EVP_PKEY_free(f->hsm);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static uint8_t *make_image(struct cfx *f, const struct forge_area *a, size_t n, size_t *len,
			   uint8_t lic[OSFI_LICENSE_LEN])
{
	struct forge_image_params ip = { .key = f->k, .device = STM32_PID_H56X_H57X, .version = 4,
					 .areas = a, .n_areas = n };
	struct forge_license_params lp = { .kind = OSFI_LICENSE_KIND_CHIP,
					   .device = STM32_PID_H56X_H57X,
					   .uid = f->cert + OSFI_CERT_OFF_UID, .hsm_key = f->hsm,
					   .chip_pub = f->cert + OSFI_CERT_OFF_PUBKEY, .key = f->k };
	uint8_t id[32];
	uint8_t *img;

	assert_int_equal(RAND_bytes(ip.nonce, sizeof(ip.nonce)), 1);
	assert_int_equal(RAND_bytes(lp.nonce, sizeof(lp.nonce)), 1);
	img = forge_image(&ip, len);
	assert_non_null(img);
	forge_image_id(img, id);
	lp.id = id;
	assert_int_equal(forge_license(&lp, lic), 0);
	return img;
}

static uint16_t install(struct cfx *f, const uint8_t *img, size_t len, const uint8_t *lic)
{
	uint16_t st = sp51(f, OSFI_OP_PUT_LICENSE, 0, lic, OSFI_LICENSE_LEN);

	if (st == OSFI_ST_OK)
		st = sp50(f, OSFI_OP_PUT_HEADER, img, OSFI_HEADER_LEN, NULL, NULL);
	for (size_t off = OSFI_HEADER_LEN; st == OSFI_ST_OK && off < len; off += OSFI_DATA_CHUNK)
		st = sp51(f, OSFI_OP_PUT_DATA, (uint32_t)off, img + off,
			  len - off < OSFI_DATA_CHUNK ? len - off : OSFI_DATA_CHUNK);
	if (st == OSFI_ST_OK)
		st = sp50(f, OSFI_OP_FINALIZE, NULL, 0, NULL, NULL);
	return st;
}

static void test_install_over_bootloader(void **state)
{
	struct cfx *f = *state;
	uint8_t cfg[8] = { OSFI_OPT_OPTSR, 0, 0, 0, 0xf8, STM32H5_PS_CLOSED, 0xf0, 0 };
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH, .data = f->fw, .size = RAM },
		{ .type = 'F', .addr = FLASH + RAM, .data = f->fw + RAM, .size = RAM },
		{ .type = 'F', .addr = FLASH + 0x100000, .data = f->fw + 2 * RAM, .size = RAM },
		{ .type = 'K', .addr = STM32H5_OTP_BASE, .data = f->secret, .size = 32 },
		{ .type = 'C', .data = cfg, .size = sizeof(cfg) },
	};
	uint8_t lic[OSFI_LICENSE_LEN], info[64], buf[RAM], cert2[OSFI_CERT_LEN], id[32];
	size_t len, n;
	uint8_t *img = make_image(f, a, 5, &len, lic);

	/* Unknown sub-opcodes are NACKed at the sub-opcode stage. */
	assert_false(special_start(f, AN3155_CMD_SPECIAL, 0x5307));

	assert_int_equal(sp50(f, OSFI_OP_GET_INFO, NULL, 0, info, &n), OSFI_ST_OK);
	assert_int_equal(n, OSFI_INFO_LEN);
	assert_int_equal(info[0], STM32H5_PS_OPEN);
	assert_memory_equal(info + 20, f->cert + OSFI_CERT_OFF_UID, 12);
	assert_true(forge_cert_verify(f->cert, f->ca));

	assert_int_equal(install(f, img, len, lic), OSFI_ST_OK);
	/* The chip reset after answering FINALIZE: a fresh sync is ACKed (a synced
	 * bootloader would NACK it). */
	sync_chip(f);
	assert_int_equal(sp50(f, OSFI_OP_GET_INFO, NULL, 0, info, &n), OSFI_ST_OK);
	assert_int_equal(info[0], STM32H5_PS_CLOSED);
	assert_int_equal(info[2], OSFI_SESSION_FINALIZED);
	assert_int_equal(info[10], 5);

	assert_int_equal(emu_chip_read(f->chip, FLASH + 0x100000, buf, RAM), 0);
	assert_memory_equal(buf, f->fw + 2 * RAM, RAM);
	assert_int_equal(emu_chip_read(f->chip, STM32H5_OTP_BASE, buf, 32), 0);
	assert_memory_equal(buf, f->secret, 32);
	assert_true(emu_chip_protected(f->chip));
	assert_int_equal(sp51(f, OSFI_OP_PUT_LICENSE, 0, lic, OSFI_LICENSE_LEN),
			 OSFI_ST_BAD_STATE);

	/* Everything survives a restart of the emulator: state, memory, identity. */
	memcpy(cert2, f->cert, sizeof(cert2));
	chip_close(f);
	chip_open(f);
	assert_memory_equal(cert2, f->cert, OSFI_CERT_LEN);
	assert_int_equal(emu_chip_product_state(f->chip), STM32H5_PS_CLOSED);
	assert_int_equal(emu_chip_image_version(f->chip), 4);
	assert_int_equal(emu_chip_read(f->chip, FLASH, buf, RAM), 0);
	assert_memory_equal(buf, f->fw, RAM);
	/* So does the session record, untouched by the refused license: finalized, OK, and
	 * the installed image's id in bytes 32..63. */
	forge_image_id(img, id);
	assert_int_equal(sp50(f, OSFI_OP_GET_INFO, NULL, 0, info, &n), OSFI_ST_OK);
	assert_int_equal(n, 64);
	assert_int_equal(info[2], OSFI_SESSION_FINALIZED);
	assert_int_equal(info[8] | info[9] << 8, OSFI_ST_OK);
	assert_int_equal(info[10], 5);
	assert_memory_equal(info + 32, id, 32);
	free(img);
}

static void test_failure_leaves_chip_installable(void **state)
{
	struct cfx *f = *state;
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH, .data = f->fw, .size = RAM },
		{ .type = 'F', .addr = FLASH + RAM, .data = f->fw + RAM, .size = RAM },
	};
	uint8_t lic[OSFI_LICENSE_LEN], info[64], buf[16];
	size_t len, n;
	uint8_t *img = make_image(f, a, 2, &len, lic);

	img[len - 1] ^= 0x80;
	assert_int_equal(install(f, img, len, lic), OSFI_ST_AREA_AUTH);
	assert_int_equal(sp50(f, OSFI_OP_GET_INFO, NULL, 0, info, &n), OSFI_ST_OK);
	assert_int_equal(info[0], STM32H5_PS_OPEN);
	assert_int_equal(info[2], OSFI_SESSION_FAILED);
	assert_int_equal(info[8] | info[9] << 8, OSFI_ST_AREA_AUTH);
	assert_true(emu_chip_range_erased(f->chip, FLASH, 2 * RAM));
	assert_int_equal(emu_chip_read(f->chip, FLASH, buf, 16), 0);
	assert_int_equal(buf[0], 0xff);

	/* A reset mid-session also takes back what was programmed. */
	img[len - 1] ^= 0x80;
	assert_int_equal(sp51(f, OSFI_OP_PUT_LICENSE, 0, lic, OSFI_LICENSE_LEN), OSFI_ST_OK);
	assert_int_equal(sp50(f, OSFI_OP_PUT_HEADER, img, 64, NULL, NULL), OSFI_ST_OK);
	for (size_t off = 64; off < 64 + 5 * 1024; off += 1024)
		assert_int_equal(sp51(f, OSFI_OP_PUT_DATA, (uint32_t)off, img + off, 1024),
				 OSFI_ST_OK);
	assert_false(emu_chip_range_erased(f->chip, FLASH, RAM));
	emu_chip_reset(f->chip, EMU_MODE_BOOTLOADER);
	sync_chip(f);
	assert_true(emu_chip_range_erased(f->chip, FLASH, 2 * RAM));

	assert_int_equal(install(f, img, len, lic), OSFI_ST_OK);
	assert_int_equal(emu_chip_read(f->chip, FLASH + RAM, buf, 16), 0);
	assert_memory_equal(buf, f->fw + RAM, 16);
	free(img);
}

/* Memory outside the image's areas, in the same 8 KiB sector, survives a failed session; a
 * write-protected sector answers FLASH_ERROR; a refused chunk does not count as received. */
static void test_protection_and_neighbours(void **state)
{
	struct cfx *f = *state;
	struct forge_area a[] = {
		{ .type = 'F', .addr = FLASH + 0x10000, .data = f->fw, .size = RAM },
		{ .type = 'F', .addr = FLASH + 0x40000, .data = f->fw + RAM, .size = RAM },
	};
	uint8_t lic[OSFI_LICENSE_LEN], info[64], buf[16], mine[16];
	uint32_t page = 0x40000 / STM32H5_FLASH_SECTOR;
	size_t len, n;
	uint8_t *img = make_image(f, a, 2, &len, lic);

	memset(mine, 0x5a, sizeof(mine));
	assert_int_equal(emu_chip_program(f->chip, FLASH + 0x10000 + RAM, mine, 16), 0);
	/* WRP1R: one bit per group of 4 sectors, cleared = protected. */
	assert_int_equal(emu_chip_set_option(f->chip, OSFI_OPT_WRP1R, ~(1u << (page / 4))), 0);
	assert_int_equal(install(f, img, len, lic), OSFI_ST_FLASH_ERROR);
	assert_int_equal(sp50(f, OSFI_OP_GET_INFO, NULL, 0, info, &n), OSFI_ST_OK);
	assert_int_equal(info[2], OSFI_SESSION_FAILED);
	assert_int_equal(info[8] | info[9] << 8, OSFI_ST_FLASH_ERROR);
	/* The first area was done; the chunk that failed is not counted. */
	assert_int_equal(info[10], 1);
	assert_true((uint32_t)(info[12] | info[13] << 8 | info[14] << 16) < len - 64);
	assert_int_equal((info[12] | info[13] << 8 | info[14] << 16) % OSFI_DATA_CHUNK, 0);
	/* The first area is erased again, the bytes next to it in its sector are not. */
	assert_true(emu_chip_range_erased(f->chip, FLASH + 0x10000, RAM));
	assert_int_equal(emu_chip_read(f->chip, FLASH + 0x10000 + RAM, buf, 16), 0);
	assert_memory_equal(buf, mine, 16);

	assert_int_equal(emu_chip_set_option(f->chip, OSFI_OPT_WRP1R, 0xffffffffu), 0);
	assert_int_equal(install(f, img, len, lic), OSFI_ST_OK);
	sync_chip(f);
	assert_int_equal(emu_chip_read(f->chip, FLASH + 0x40000, buf, 16), 0);
	assert_memory_equal(buf, f->fw + RAM, 16);
	free(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_install_over_bootloader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failure_leaves_chip_installable, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_protection_and_neighbours, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

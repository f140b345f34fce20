/* Fuzzes the OSFI chip side of h5emu (emulator/emu-osfi.c) on an in-memory chip.
 *
 * Input: a mode byte, then
 *  - raw mode (even): records `op, flags, n1, n2 lo, n2 hi, p1[n1], p2[n2]` sent as
 *    sub-commands (op & 7 selects 0x5300..0x5307; flags bit 0 = 0x51);
 *  - built mode (odd): an area list `type, addr selector, size lo, size hi` (up to 6),
 *    a chunk size byte, then raw records. The harness packs and encrypts those areas with a
 *    fixed key, installs a global license and streams the image, so that the fuzzer reaches
 *    descriptor, address, option and finalize handling that authentication would guard.
 * Invariants checked: no crash or leak; answers fit; statuses are known codes; a failed or
 * reset session leaves no byte programmed (when nothing was finalized before it); a chip
 * that is not Open never accepts a license. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ec.h>

#include "an3155-wire.h"
#include "fake-chip.h"
#include "osfi-forge.h"
#include "osfi-wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t fuzz_uid[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
static const uint8_t fuzz_gk[32] = { 0x47, 0x4b };
static const uint8_t fuzz_k[16] = { 0x4b, 0x31 };
static char fuzz_dir[64], fuzz_ca[96], fuzz_gk_path[96];
static uint8_t fuzz_payload[8192];
static bool fuzz_finalized;

static void fuzz_cleanup(void)
{
	unlink(fuzz_ca);
	unlink(fuzz_gk_path);
	rmdir(fuzz_dir);
}

static void fuzz_init(void)
{
	static bool done;
	char dir[] = "/tmp/fuzz-emu-osfi-XXXXXX";
	EVP_PKEY *ca;
	FILE *f;

	if (done)
		return;
	done = true;
	if (!mkdtemp(dir))
		abort();
	memcpy(fuzz_dir, dir, sizeof(dir));
	atexit(fuzz_cleanup);
	snprintf(fuzz_ca, sizeof(fuzz_ca), "%s/ca.pem", dir);
	snprintf(fuzz_gk_path, sizeof(fuzz_gk_path), "%s/gk", dir);
	ca = EVP_EC_gen("P-256");
	if (!ca || forge_write_pem(ca, fuzz_ca) < 0)
		abort();
	EVP_PKEY_free(ca);
	f = fopen(fuzz_gk_path, "we");
	if (!f || fwrite(fuzz_gk, 1, sizeof(fuzz_gk), f) != sizeof(fuzz_gk) || fclose(f) != 0)
		abort();
	for (size_t i = 0; i < sizeof(fuzz_payload); i++)
		fuzz_payload[i] = (uint8_t)(i * 31 + 7);
	/* A valid first option record (OPTSR, product state Closed), so that an 8-byte 'C'
	 * area reaches FINALIZE's option handling and the closed chip afterwards. */
	memcpy(fuzz_payload, (const uint8_t[]){ OSFI_OPT_OPTSR, 0, 0, 0, 0xf8, STM32H5_PS_CLOSED,
						0, 0 }, 8);
}

static uint16_t fuzz_cmd(struct emu_chip *c, bool ext, uint16_t op, const uint8_t *p1, size_t n1,
			 const uint8_t *p2, size_t n2)
{
	uint8_t out[AN3155_SPECIAL_MAX_ANSWER];
	size_t len = 0;
	uint16_t st = 0xffff;
	bool was_open = emu_chip_product_state(c) == STM32H5_PS_OPEN;
	int r;

	r = emu_osfi_special(c, ext, op, p1, n1, ext ? p2 : NULL, ext ? n2 : 0, out, sizeof(out),
			     &len, &st);
	if (r != 0 && r != -ENOENT)
		abort();
	if (r == 0 && (len > sizeof(out) || st >= _OSFI_ST_MAX))
		abort();
	if (op == OSFI_OP_PUT_LICENSE && !was_open && r == 0 && st == OSFI_ST_OK)
		abort();
	if (op == OSFI_OP_FINALIZE && r == 0 && st == OSFI_ST_OK)
		fuzz_finalized = true;
	return r == 0 ? st : 0xffff;
}

static const uint8_t *raw_records(struct emu_chip *c, const uint8_t *p, const uint8_t *end)
{
	while (end - p >= 5) {
		uint16_t op = (uint16_t)(OSFI_OP_GET_INFO + (p[0] & 7));
		bool ext = p[1] & 1;
		size_t n1 = p[2] % (AN3155_SPECIAL_MAX_DATA + 1);
		size_t n2 = (size_t)(p[3] | p[4] << 8) % (OSFI_DATA_CHUNK + 2);

		p += 5;
		if ((size_t)(end - p) < n1)
			n1 = (size_t)(end - p);
		fuzz_cmd(c, ext, op, p, n1, p + n1, (size_t)(end - p) - n1 < n2 ?
							   (size_t)(end - p) - n1 : n2);
		p += n1;
		p += (size_t)(end - p) < n2 ? (size_t)(end - p) : n2;
	}
	return p;
}

static const uint32_t fuzz_addrs[] = {
	STM32H5_FLASH_BASE, STM32H5_FLASH_BASE + 0x2000, STM32H5_FLASH_BASE + 0x1ff000,
	STM32H5_FLASH_BASE + 0x1ffff0, STM32H5_OTP_BASE, STM32H5_OTP_BASE + 0x7f0,
	STM32H5_OBK_BASE, STM32H5_SRAM_BASE, 0, STM32H5_FLASH_BASE + 8,
};

static const uint8_t *built_image(struct emu_chip *c, const uint8_t *p, const uint8_t *end)
{
	struct forge_area areas[6];
	struct forge_image_params ip = { .key = fuzz_k, .device = STM32_PID_H56X_H57X,
					 .areas = areas };
	struct forge_license_params lp = { .kind = OSFI_LICENSE_KIND_GLOBAL,
					   .device = STM32_PID_H56X_H57X, .global_key = fuzz_gk,
					   .key = fuzz_k };
	uint8_t lic[OSFI_LICENSE_LEN], id[32], p1[4] = { 0 };
	size_t n = 0, len = 0, chunk;
	uint8_t *img;

	if (p == end)
		return p;
	n = *p++ % 7;
	if (n == 0)
		n = 1;
	for (size_t i = 0; i < n; i++) {
		static const char types[] = "FFKCMPRZ";
		uint32_t sz;

		if (end - p < 4)
			return end;
		sz = (uint32_t)(p[2] | p[3] << 8) % sizeof(fuzz_payload);
		areas[i] = (struct forge_area){ .type = types[p[0] & 7],
						.addr = fuzz_addrs[p[1] % 10],
						.data = fuzz_payload, .size = sz };
		if (areas[i].type == 'M')
			areas[i].module = 1 + (p[0] >> 3 & 3);
		if (areas[i].type == 'C' || areas[i].type == 'P' || areas[i].type == 'R')
			areas[i].addr = 0;
		p += 4;
	}
	if (p == end)
		return p;
	chunk = 1 + (size_t)*p++ * 4;
	ip.n_areas = n;
	ip.version = (uint32_t)n & 1;
	img = forge_image(&ip, &len);
	if (!img)
		abort();
	forge_image_id(img, id);
	lp.id = id;
	if (forge_license(&lp, lic) < 0)
		abort();
	fuzz_cmd(c, true, OSFI_OP_PUT_LICENSE, p1, 4, lic, sizeof(lic));
	/* Module licenses under the global key, for the module ids the areas may carry. */
	for (uint32_t m = 1; m <= 2; m++) {
		uint8_t mid[32], mlic[OSFI_LICENSE_LEN], mp1[4] = { (uint8_t)m };

		forge_module_id(m, mid);
		lp.target = m;
		lp.id = mid;
		if (forge_license(&lp, mlic) < 0)
			abort();
		fuzz_cmd(c, true, OSFI_OP_PUT_LICENSE, mp1, 4, mlic, sizeof(mlic));
	}
	fuzz_cmd(c, false, OSFI_OP_PUT_HEADER, img, OSFI_HEADER_LEN, NULL, 0);
	for (size_t off = OSFI_HEADER_LEN; off < len; off += chunk) {
		size_t k = len - off < chunk ? len - off : chunk;
		uint8_t o[4] = { (uint8_t)off, (uint8_t)(off >> 8), (uint8_t)(off >> 16), 0 };

		if (k > OSFI_DATA_CHUNK)
			k = OSFI_DATA_CHUNK;
		if (fuzz_cmd(c, true, OSFI_OP_PUT_DATA, o, 4, img + off, k) != OSFI_ST_OK)
			break;
		chunk = k;
	}
	fuzz_cmd(c, false, OSFI_OP_FINALIZE, NULL, 0, NULL, 0);
	free(img);
	return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct emu_osfi_config cfg = { .ca_key_path = fuzz_ca, .global_key_path = fuzz_gk_path,
				       .ram_buffer = 4096 };
	const uint8_t *p = data, *end = data + size;
	static struct emu_chip *chip;
	uint8_t info[AN3155_SPECIAL_MAX_ANSWER];
	size_t len = 0;
	uint16_t st;

	fuzz_init();
	if (!chip)
		chip = fake_chip_new(NULL, STM32_PID_H56X_H57X, fuzz_uid);
	if (!chip)
		abort();
	fake_chip_wipe(chip);
	fuzz_finalized = false;
	if (emu_osfi_attach(chip, &cfg) != 0)
		abort();

	if (p < end && (*p++ & 1))
		p = built_image(chip, p, end);
	raw_records(chip, p, end);

	/* Whatever happened: after an abort or a reset no session may leave bytes behind
	 * unless an image was finalized. */
	emu_osfi_reset(chip);
	if (emu_osfi_special(chip, false, OSFI_OP_GET_INFO, NULL, 0, NULL, 0, info, sizeof(info),
			     &len, &st) != 0 || len != OSFI_INFO_LEN)
		abort();
	if (!fuzz_finalized && info[2] == OSFI_SESSION_FAILED &&
	    fake_chip_programmed_units(chip) != 0)
		abort();
	emu_osfi_detach(chip);
	return 0;
}

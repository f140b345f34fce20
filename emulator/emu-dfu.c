/* The chip's USB DFU bootloader (AN3156 DfuSe) and the OSFI alternate setting. Contract:
 * emu-dfu.h. Requests are handled as they arrive; commands and data blocks received by
 * DNLOAD run at the next GETSTATUS, which answers dfuDNBUSY with the time they take on the
 * chip (bwPollTimeout); that time is handed to the harness, which keeps the device busy (no
 * request completes) until it has passed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "an3155-wire.h"
#include "emu-chip-priv.h"
#include "emu-dfu.h"
#include "osfi-wire.h"

#define DFU_MAX_TRANSFER 4096
#define OPT_BASE 0x40022000u
#define OPT_BYTES (4u * OSFI_OPT_MAX)
#define OSFI_ANSWER_MAX (2 + AN3155_SPECIAL_MAX_ANSWER)

enum alt_kind { ALT_FLASH, ALT_OPTIONS, ALT_OTP, ALT_OSFI };

struct dfu_alt {
	enum alt_kind kind;
	char name[64];
};

struct emu_dfu {
	struct emu_dfu_config cfg;
	const struct emu_profile *prof;
	struct emu_chip *chip;
	struct dfu_alt alts[EMU_DFU_MAX_ALTS];
	unsigned n_alts, alt;

	uint8_t state, status, pending_state, pending_status;
	uint32_t pointer;
	uint32_t poll_ms;

	/* The last DNLOAD, run at the next GETSTATUS. */
	uint8_t block[DFU_MAX_TRANSFER];
	size_t block_len;
	uint16_t block_num;

	/* OSFI: the last answer (LE16 status, data), readable by UPLOAD. */
	uint8_t answer[OSFI_ANSWER_MAX];
	size_t answer_len;
	bool answer_valid;

	/* Fault: fail this data block. */
	unsigned fail_block;
	uint8_t fail_status;
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

struct emu_dfu_timing emu_dfu_timing_datasheet(const struct emu_profile *prof)
{
	/* STM32H5 (DS14258, flash memory characteristics, typical values): see
	 * docs/emulator.md. The G4 profile uses the same figures (it exists for UART tools). */
	(void)prof;
	return (struct emu_dfu_timing){
		.prog_unit_ns = 50000,
		.erase_sector_ns = 2000000,
		.erase_bank_ns = 15000000,
		.command_ns = 20000,
	};
}

int emu_dfu_new(const struct emu_dfu_config *cfg, const struct emu_profile *prof,
		struct emu_dfu **ret)
{
	struct emu_dfu *d;
	unsigned sectors, kib;

	if (!cfg || !prof || !ret || cfg->transfer_size < 64 ||
	    cfg->transfer_size > DFU_MAX_TRANSFER || cfg->transfer_size % 64 != 0)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->cfg = *cfg;
	d->prof = prof;
	sectors = prof->flash_size / prof->page_size;
	kib = prof->page_size / 1024;
	d->alts[0].kind = ALT_FLASH;
	snprintf(d->alts[0].name, sizeof(d->alts[0].name), "@Internal Flash   /0x%08X/%u*%02uKg",
		 prof->flash_base, sectors, kib);
	d->alts[1].kind = ALT_OPTIONS;
	snprintf(d->alts[1].name, sizeof(d->alts[1].name), "@Option Bytes   /0x%08X/01*%03u e",
		 OPT_BASE, OPT_BYTES);
	d->alts[2].kind = ALT_OTP;
	if (prof->otp_size % 1024 == 0)
		snprintf(d->alts[2].name, sizeof(d->alts[2].name), "@OTP Memory   /0x%08X/01*%uKe",
			 prof->otp_base, prof->otp_size / 1024);
	else
		snprintf(d->alts[2].name, sizeof(d->alts[2].name), "@OTP Memory   /0x%08X/01*%03u e",
			 prof->otp_base, prof->otp_size);
	d->n_alts = 3;
	if (cfg->osfi) {
		d->alts[3].kind = ALT_OSFI;
		snprintf(d->alts[3].name, sizeof(d->alts[3].name), "%s /0x00000000/01*1Ke",
			 EMU_DFU_OSFI_PREFIX);
		d->n_alts = 4;
	}
	emu_dfu_reset(d);
	*ret = d;
	return 0;
}

void emu_dfu_free(struct emu_dfu *d)
{
	free(d);
}

void emu_dfu_set_chip(struct emu_dfu *d, struct emu_chip *c)
{
	d->chip = c;
	emu_dfu_reset(d);
}

void emu_dfu_reset(struct emu_dfu *d)
{
	d->state = EMU_DFU_IDLE;
	d->status = EMU_DFU_OK;
	d->pending_state = EMU_DFU_IDLE;
	d->pending_status = EMU_DFU_OK;
	d->pointer = d->prof->flash_base;
	d->poll_ms = 0;
	d->alt = 0;
	d->block_len = 0;
	d->answer_len = 0;
	d->answer_valid = false;
}

uint8_t emu_dfu_state(const struct emu_dfu *d)
{
	return d->state;
}

unsigned emu_dfu_alt_count(const struct emu_dfu *d)
{
	return d->n_alts;
}

int emu_dfu_set_alt(struct emu_dfu *d, unsigned alt)
{
	if (alt >= d->n_alts)
		return -EINVAL;
	d->alt = alt;
	/* Selecting a setting starts the interface afresh, as the ROM does. */
	d->state = EMU_DFU_IDLE;
	d->status = EMU_DFU_OK;
	return 0;
}

void emu_dfu_fail_block(struct emu_dfu *d, unsigned block, uint8_t status)
{
	d->fail_block = block;
	d->fail_status = status;
}

void emu_dfu_serial(const struct emu_dfu *d, char *buf, size_t len)
{
	const uint8_t *u;

	if (!d->chip) {
		snprintf(buf, len, "000000000000");
		return;
	}
	/* ST's ROM builds 12 hex digits from UID words: (w0 + w2) then the top half of w1. */
	u = emu_chip_uid(d->chip);
	snprintf(buf, len, "%08X%04X", get32(u) + get32(u + 8), (unsigned)(get32(u + 4) >> 16));
}

/* --- Descriptors --- */

size_t emu_dfu_descriptors(const struct emu_dfu *d, uint8_t *buf, size_t max)
{
	uint8_t t[18 + 9 + 9 * EMU_DFU_MAX_ALTS + 9];
	size_t n = 0, cfg;

	/* Device: USB 2.0, class per interface, EP0 64 bytes, bcdDevice 0x0300 (the DFU
	 * bootloader version in the high byte), strings 1..3, one configuration. */
	const uint8_t dev[18] = { 18, 1, 0x00, 0x02, 0, 0, 0, 64,
				  (uint8_t)EMU_DFU_VID, EMU_DFU_VID >> 8,
				  (uint8_t)EMU_DFU_PID, EMU_DFU_PID >> 8,
				  0x00, 0x03, 1, 2, 3, 1 };
	memcpy(t, dev, 18);
	n = 18;
	cfg = n;
	t[n++] = 9;
	t[n++] = 2;
	n += 2; /* wTotalLength below */
	t[n++] = 1;	/* bNumInterfaces */
	t[n++] = 1;	/* bConfigurationValue */
	t[n++] = 0;	/* iConfiguration */
	t[n++] = 0xc0;	/* self-powered */
	t[n++] = 50;	/* 100 mA */
	for (unsigned a = 0; a < d->n_alts; a++) {
		const uint8_t ifd[9] = { 9, 4, 0, (uint8_t)a, 0, 0xfe, 0x01, 0x02,
					 (uint8_t)(4 + a) };

		memcpy(t + n, ifd, 9);
		n += 9;
	}
	/* DFU functional descriptor: can download, can upload, will detach; wDetachTimeOut
	 * 255 ms; wTransferSize; bcdDFUVersion 1.1a (DfuSe). */
	t[n++] = 9;
	t[n++] = 0x21;
	t[n++] = 0x0b;
	put16(t + n, 255);
	n += 2;
	put16(t + n, d->cfg.transfer_size);
	n += 2;
	put16(t + n, EMU_DFU_BCD_DFU);
	n += 2;
	put16(t + cfg + 2, (uint16_t)(n - cfg));
	if (n > max)
		n = max;
	memcpy(buf, t, n);
	return n;
}

static size_t string_descriptor(const struct emu_dfu *d, unsigned idx, uint8_t *out, size_t max)
{
	char s[80];
	uint8_t t[2 + 2 * sizeof(s)];
	size_t n;

	if (idx == 0) {
		t[0] = 4;
		t[1] = 3;
		put16(t + 2, 0x0409);
		n = 4;
	} else {
		switch (idx) {
		case 1:
			snprintf(s, sizeof(s), "STMicroelectronics");
			break;
		case 2:
			snprintf(s, sizeof(s), "DFU in FS Mode");
			break;
		case 3:
			emu_dfu_serial(d, s, sizeof(s));
			break;
		default:
			if (idx - 4 >= d->n_alts)
				return SIZE_MAX;
			snprintf(s, sizeof(s), "%s", d->alts[idx - 4].name);
			break;
		}
		n = 2;
		for (const char *p = s; *p; p++) {
			t[n++] = (uint8_t)*p;
			t[n++] = 0;
		}
		t[0] = (uint8_t)n;
		t[1] = 3;
	}
	if (n > max)
		n = max;
	memcpy(out, t, n);
	return n;
}

/* --- Memory access per alternate setting --- */

static uint64_t prog_time(const struct emu_dfu *d, size_t len)
{
	uint32_t unit = d->prof->write_unit;

	return d->cfg.timing.command_ns + (len + unit - 1) / unit * d->cfg.timing.prog_unit_ns;
}

/* Reads for UPLOAD: returns bytes read (short at the end of the memory) or a DFU status
 * (negated) for a refusal. */
static long alt_read(struct emu_dfu *d, uint32_t addr, uint8_t *out, size_t len)
{
	struct emu_chip *c = d->chip;
	const struct emu_profile *p = d->prof;
	uint32_t base, size;

	switch (d->alts[d->alt].kind) {
	case ALT_FLASH:
		base = p->flash_base;
		size = p->flash_size;
		break;
	case ALT_OTP:
		base = p->otp_base;
		size = p->otp_size;
		break;
	case ALT_OPTIONS:
		if (addr < OPT_BASE || addr >= OPT_BASE + OPT_BYTES)
			return -EMU_DFU_ERR_ADDRESS;
		if (len > OPT_BASE + OPT_BYTES - addr)
			len = OPT_BASE + OPT_BYTES - addr;
		for (size_t i = 0; i < len; i++) {
			uint32_t off = addr - OPT_BASE + (uint32_t)i;
			uint32_t v = emu_chip_get_option(c, (uint16_t)(off / 4 + 1));

			out[i] = (uint8_t)(v >> (8 * (off % 4)));
		}
		return (long)len;
	case ALT_OSFI:
	default:
		return -EMU_DFU_ERR_TARGET;
	}
	if (emu_chip_protected(c))
		return -EMU_DFU_ERR_VENDOR;
	if (addr < base || addr >= base + size)
		return -EMU_DFU_ERR_ADDRESS;
	if (len > base + size - addr)
		len = base + size - addr;
	if (len && emu_chip_read(c, addr, out, len) < 0)
		return -EMU_DFU_ERR_ADDRESS;
	return (long)len;
}

/* Writes a DNLOAD data block; returns a DFU status and the time it takes. */
static uint8_t alt_write(struct emu_dfu *d, uint32_t addr, const uint8_t *data, size_t len,
			 uint64_t *busy)
{
	struct emu_chip *c = d->chip;
	uint32_t unit = d->prof->write_unit;
	uint8_t padded[DFU_MAX_TRANSFER + 16];
	size_t plen;
	int r;

	*busy = d->cfg.timing.command_ns;
	switch (d->alts[d->alt].kind) {
	case ALT_FLASH:
	case ALT_OTP:
		if (emu_chip_protected(c))
			return EMU_DFU_ERR_VENDOR;
		if (addr % unit != 0)
			return EMU_DFU_ERR_ADDRESS;
		if ((d->alts[d->alt].kind == ALT_FLASH) != (emu_chip_range_kind(c, addr, len) == 'F') ||
		    (d->alts[d->alt].kind == ALT_OTP && emu_chip_range_kind(c, addr, len) != 'O'))
			return EMU_DFU_ERR_ADDRESS;
		/* The ROM programs whole units: a short last block is padded with erased bytes. */
		memcpy(padded, data, len);
		plen = (len + unit - 1) / unit * unit;
		memset(padded + len, 0xff, plen - len);
		if (emu_chip_range_kind(c, addr, plen) == 0)
			return EMU_DFU_ERR_ADDRESS;
		r = emu_chip_write(c, addr, padded, plen);
		*busy = prog_time(d, plen);
		if (r == -EIO)
			return EMU_DFU_ERR_CHECK_ERASED;
		if (r == -EACCES)
			return EMU_DFU_ERR_VENDOR;
		if (r < 0)
			return EMU_DFU_ERR_ADDRESS;
		return EMU_DFU_OK;
	case ALT_OPTIONS:
		if (emu_chip_protected(c))
			return EMU_DFU_ERR_VENDOR;
		if (addr < OPT_BASE || addr % 4 != 0 || len % 4 != 0 ||
		    len > OPT_BASE + OPT_BYTES - addr || addr >= OPT_BASE + OPT_BYTES)
			return EMU_DFU_ERR_ADDRESS;
		for (size_t i = 0; i < len; i += 4) {
			uint16_t reg = (uint16_t)((addr - OPT_BASE + i) / 4 + 1);
			uint32_t v = get32(data + i);

			if (emu_chip_get_option(c, reg) == v)
				continue;
			if (emu_chip_set_option(c, reg, v) < 0)
				return EMU_DFU_ERR_VENDOR;
		}
		*busy = prog_time(d, len);
		emu_chip_persist(c);
		return EMU_DFU_OK;
	case ALT_OSFI:
	default:
		return EMU_DFU_ERR_TARGET;
	}
}

/* --- Block 0 commands --- */

static uint8_t run_command(struct emu_dfu *d, uint64_t *busy)
{
	struct emu_chip *c = d->chip;
	const struct emu_profile *p = d->prof;
	uint32_t addr, pages = p->flash_size / p->page_size;

	*busy = d->cfg.timing.command_ns;
	switch (d->block[0]) {
	case EMU_DFUSE_SET_ADDRESS:
		if (d->block_len != 5)
			return EMU_DFU_ERR_STALLEDPKT;
		d->pointer = get32(d->block + 1);
		return EMU_DFU_OK;
	case EMU_DFUSE_ERASE:
		if (emu_chip_protected(c))
			return EMU_DFU_ERR_VENDOR;
		if (d->block_len == 1) {
			for (uint32_t pg = 0; pg < pages; pg++)
				if (emu_chip_page_protected(c, pg))
					return EMU_DFU_ERR_VENDOR;
			emu_chip_erase_pages(c, 0, pages);
			*busy = d->cfg.timing.erase_bank_ns;
			return EMU_DFU_OK;
		}
		if (d->block_len != 5)
			return EMU_DFU_ERR_STALLEDPKT;
		addr = get32(d->block + 1);
		if (addr < p->flash_base || addr - p->flash_base >= p->flash_size)
			return EMU_DFU_ERR_TARGET;
		if (emu_chip_page_protected(c, (addr - p->flash_base) / p->page_size))
			return EMU_DFU_ERR_VENDOR;
		emu_chip_erase_pages(c, (addr - p->flash_base) / p->page_size, 1);
		*busy = d->cfg.timing.erase_sector_ns;
		return EMU_DFU_OK;
	default:
		return EMU_DFU_ERR_STALLEDPKT;
	}
}

/* --- OSFI alternate setting --- */

static bool osfi_extended(uint16_t subop)
{
	return subop == OSFI_OP_PUT_LICENSE || subop == OSFI_OP_PUT_DATA;
}

/* A request frame that is not run (docs/protocol.md §11.2): wrong block, too short, n1
 * beyond the data, a sub-opcode outside OSFI's range. Lengths wrong for the sub-command are
 * not framing errors: the sub-command answers BAD_LENGTH. */
static bool osfi_frame_ok(const struct emu_dfu *d, uint16_t block, const uint8_t *p, size_t len)
{
	uint16_t subop, n1;

	if (block != 2 || len < 4 || !d->chip || !d->chip->special || !d->chip->special->special)
		return false;
	subop = (uint16_t)(p[0] | p[1] << 8);
	n1 = (uint16_t)(p[2] | p[3] << 8);
	if (n1 > len - 4)
		return false;
	return subop >= OSFI_OP_GET_INFO && subop <= OSFI_OP_ABORT;
}

static uint8_t run_osfi(struct emu_dfu *d, uint64_t *busy)
{
	struct emu_chip *c = d->chip;
	uint16_t subop = (uint16_t)(d->block[0] | d->block[1] << 8);
	size_t n1 = (size_t)(d->block[2] | d->block[3] << 8), n2 = d->block_len - 4 - n1;
	uint16_t status = OSFI_ST_INTERNAL;
	size_t out_len = 0;
	bool ext = osfi_extended(subop);
	uint64_t units0 = c->work_units, pages0 = c->work_pages;
	int r;

	if ((!ext && n2 > 0) || n1 > AN3155_SPECIAL_MAX_DATA || n2 > AN3155_SPECIAL_MAX_ANSWER) {
		/* More than the sub-command's UART framing could carry. */
		status = OSFI_ST_BAD_LENGTH;
		r = 0;
	} else {
		r = c->special->special(c, ext, subop, d->block + 4, n1,
					ext ? d->block + 4 + n1 : NULL, ext ? n2 : 0, d->answer + 2,
					AN3155_SPECIAL_MAX_ANSWER, &out_len, &status);
	}
	if (r < 0)
		status = OSFI_ST_INTERNAL;
	if (r < 0 || status != OSFI_ST_OK)
		out_len = 0;	/* a refusal answers its status alone */
	put16(d->answer, status);
	d->answer_len = 2 + out_len;
	d->answer_valid = true;
	*busy = d->cfg.timing.command_ns +
		(c->work_units - units0) * d->cfg.timing.prog_unit_ns +
		(c->work_pages - pages0) * d->cfg.timing.erase_sector_ns;
	return status == OSFI_ST_OK ? EMU_DFU_OK : EMU_DFU_ERR_VENDOR;
}

/* --- Requests --- */

static void fail(struct emu_dfu *d, uint8_t status, struct emu_dfu_result *res)
{
	d->state = EMU_DFU_ERROR;
	d->status = status;
	res->stall = true;
}

static void getstatus(struct emu_dfu *d, uint8_t *out, uint16_t wlength,
		      struct emu_dfu_result *res)
{
	uint8_t answer[6];
	uint64_t busy = 0;
	uint8_t st;

	switch (d->state) {
	case EMU_DFU_DNLOAD_SYNC:
		if (!d->chip) {
			st = EMU_DFU_ERR_TARGET;
		} else if (d->block_num == 0) {
			st = run_command(d, &busy);
		} else if (d->alts[d->alt].kind == ALT_OSFI) {
			st = run_osfi(d, &busy);
		} else if (d->fail_block && d->block_num == d->fail_block) {
			st = d->fail_status;
			d->fail_block = 0;
		} else {
			uint32_t addr = (uint32_t)(d->block_num - 2) * d->cfg.transfer_size + d->pointer;

			st = alt_write(d, addr, d->block, d->block_len, &busy);
		}
		d->pending_state = st == EMU_DFU_OK ? EMU_DFU_DNLOAD_IDLE : EMU_DFU_ERROR;
		d->pending_status = st;
		d->state = EMU_DFU_DNBUSY;
		d->status = EMU_DFU_OK;
		/* bwPollTimeout: the operation's time in whole milliseconds (0 when it touches
		 * no flash and takes less than one). */
		d->poll_ms = (uint32_t)((busy + 999999) / 1000000);
		if (busy <= d->cfg.timing.command_ns)
			d->poll_ms = 0;
		res->busy_ns = busy;
		res->poll_ms = d->poll_ms;
		break;
	case EMU_DFU_DNBUSY:
		d->state = d->pending_state;
		d->status = d->pending_status;
		d->poll_ms = 0;
		/* FINALIZE (or any chip-requested reset) takes effect once reported. */
		if (d->chip && d->chip->reset_requested && d->state == EMU_DFU_DNLOAD_IDLE)
			res->reset = true;
		break;
	case EMU_DFU_MANIFEST_SYNC:
		d->state = EMU_DFU_MANIFEST;
		d->poll_ms = 1;
		res->reset = true;
		break;
	default:
		d->poll_ms = 0;
		break;
	}
	answer[0] = d->status;
	answer[1] = (uint8_t)d->poll_ms;
	answer[2] = (uint8_t)(d->poll_ms >> 8);
	answer[3] = (uint8_t)(d->poll_ms >> 16);
	answer[4] = d->state;
	answer[5] = 0;
	res->len = wlength < 6 ? wlength : 6;
	memcpy(out, answer, res->len);
}

static void dnload(struct emu_dfu *d, uint16_t block, const uint8_t *data, uint16_t len,
		   struct emu_dfu_result *res)
{
	if (d->state != EMU_DFU_IDLE && d->state != EMU_DFU_DNLOAD_IDLE) {
		fail(d, EMU_DFU_ERR_STALLEDPKT, res);
		return;
	}
	if (len == 0) {
		/* Leave DFU: manifestation, then the chip resets into what BOOT0 selects. */
		d->state = EMU_DFU_MANIFEST_SYNC;
		return;
	}
	if (len > d->cfg.transfer_size || block == 1) {
		fail(d, EMU_DFU_ERR_STALLEDPKT, res);
		return;
	}
	if (d->alts[d->alt].kind == ALT_OSFI && block != 0) {
		if (!osfi_frame_ok(d, block, data, len)) {
			fail(d, EMU_DFU_ERR_STALLEDPKT, res);
			return;
		}
		d->answer_valid = false;
	}
	memcpy(d->block, data, len);
	d->block_len = len;
	d->block_num = block;
	d->state = EMU_DFU_DNLOAD_SYNC;
	res->len = len;
}

static void upload(struct emu_dfu *d, uint16_t block, uint8_t *out, uint16_t wlength,
		   struct emu_dfu_result *res)
{
	static const uint8_t cmds[] = { EMU_DFUSE_GET_COMMANDS, EMU_DFUSE_SET_ADDRESS,
					EMU_DFUSE_ERASE };
	uint32_t addr;
	long n;

	if (d->state != EMU_DFU_IDLE && d->state != EMU_DFU_UPLOAD_IDLE) {
		fail(d, EMU_DFU_ERR_STALLEDPKT, res);
		return;
	}
	if (block == 0) {
		res->len = wlength < sizeof(cmds) ? wlength : sizeof(cmds);
		memcpy(out, cmds, res->len);
		d->state = EMU_DFU_IDLE;
		return;
	}
	if (block == 1 || wlength > d->cfg.transfer_size || !d->chip) {
		fail(d, EMU_DFU_ERR_STALLEDPKT, res);
		return;
	}
	if (d->alts[d->alt].kind == ALT_OSFI) {
		if (block != 2 || d->state != EMU_DFU_IDLE || !d->answer_valid) {
			fail(d, EMU_DFU_ERR_STALLEDPKT, res);
			return;
		}
		res->len = d->answer_len < wlength ? d->answer_len : wlength;
		memcpy(out, d->answer, res->len);
		return;
	}
	addr = (uint32_t)(block - 2) * d->cfg.transfer_size + d->pointer;
	n = alt_read(d, addr, out, wlength);
	if (n < 0) {
		fail(d, (uint8_t)-n, res);
		return;
	}
	res->len = (size_t)n;
	/* A short frame ends the upload. */
	d->state = (size_t)n < wlength ? EMU_DFU_IDLE : EMU_DFU_UPLOAD_IDLE;
}

static void standard(struct emu_dfu *d, const uint8_t *setup, uint8_t *data,
		     struct emu_dfu_result *res)
{
	uint8_t type = setup[0], req = setup[1];
	uint16_t wvalue = (uint16_t)(setup[2] | setup[3] << 8);
	uint16_t wlength = (uint16_t)(setup[6] | setup[7] << 8);
	uint8_t buf[512];
	size_t n;

	if (req == 6 && (type & 0x80)) { /* GET_DESCRIPTOR */
		switch (wvalue >> 8) {
		case 1:
			n = emu_dfu_descriptors(d, buf, 18);
			break;
		case 2:
			n = emu_dfu_descriptors(d, buf, sizeof(buf));
			memmove(buf, buf + 18, n - 18);
			n -= 18;
			break;
		case 3:
			n = string_descriptor(d, wvalue & 0xff, buf, sizeof(buf));
			if (n == SIZE_MAX) {
				res->stall = true;
				return;
			}
			break;
		case 0x21:
			n = emu_dfu_descriptors(d, buf, sizeof(buf));
			memmove(buf, buf + n - 9, 9);
			n = 9;
			break;
		default:
			res->stall = true;
			return;
		}
		res->len = n < wlength ? n : wlength;
		memcpy(data, buf, res->len);
		return;
	}
	if (req == 0 && (type & 0x80)) { /* GET_STATUS */
		buf[0] = (type & 0x1f) == 0 ? 1 : 0; /* self-powered */
		buf[1] = 0;
		res->len = wlength < 2 ? wlength : 2;
		memcpy(data, buf, res->len);
		return;
	}
	if (req == 8 && (type & 0x80)) { /* GET_CONFIGURATION */
		buf[0] = 1;
		res->len = wlength < 1 ? wlength : 1;
		memcpy(data, buf, res->len);
		return;
	}
	if (req == 10 && (type & 0x80)) { /* GET_INTERFACE */
		buf[0] = (uint8_t)d->alt;
		res->len = wlength < 1 ? wlength : 1;
		memcpy(data, buf, res->len);
		return;
	}
	if (req == 11 && type == 0x01) { /* SET_INTERFACE */
		if (emu_dfu_set_alt(d, wvalue) < 0)
			res->stall = true;
		return;
	}
	if ((req == 9 || req == 1 || req == 3) && !(type & 0x80))
		return; /* SET_CONFIGURATION, CLEAR_FEATURE, SET_FEATURE: nothing to do */
	res->stall = true;
}

void emu_dfu_control(struct emu_dfu *d, const uint8_t setup[8], uint8_t *data,
		     struct emu_dfu_result *res)
{
	uint8_t type = setup[0], req = setup[1];
	uint16_t wvalue = (uint16_t)(setup[2] | setup[3] << 8);
	uint16_t wlength = (uint16_t)(setup[6] | setup[7] << 8);

	memset(res, 0, sizeof(*res));
	if ((type & 0x60) == 0) {
		standard(d, setup, data, res);
		return;
	}
	if ((type & 0x7f) != 0x21) {
		res->stall = true;
		return;
	}
	/* A request after the busy time: the operation is over. */
	if (d->state == EMU_DFU_DNBUSY && req != EMU_DFU_GETSTATUS) {
		d->state = d->pending_state;
		d->status = d->pending_status;
	}
	switch (req) {
	case EMU_DFU_DETACH:
		return;
	case EMU_DFU_DNLOAD:
		if (type & 0x80)
			break;
		dnload(d, wvalue, data, wlength, res);
		return;
	case EMU_DFU_UPLOAD:
		if (!(type & 0x80))
			break;
		upload(d, wvalue, data, wlength, res);
		return;
	case EMU_DFU_GETSTATUS:
		if (!(type & 0x80))
			break;
		getstatus(d, data, wlength, res);
		return;
	case EMU_DFU_CLRSTATUS:
		if (d->state == EMU_DFU_ERROR) {
			d->state = EMU_DFU_IDLE;
			d->status = EMU_DFU_OK;
		}
		return;
	case EMU_DFU_GETSTATE:
		if (!(type & 0x80) || wlength < 1)
			break;
		data[0] = d->state;
		res->len = 1;
		return;
	case EMU_DFU_ABORT:
		if (d->state == EMU_DFU_ERROR) {
			res->stall = true;
			return;
		}
		d->state = EMU_DFU_IDLE;
		d->status = EMU_DFU_OK;
		return;
	default:
		break;
	}
	fail(d, EMU_DFU_ERR_STALLEDPKT, res);
}

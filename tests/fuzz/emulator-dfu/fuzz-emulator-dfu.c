/* Feeds arbitrary control transfers into the USB DFU side (emu-dfu.c) of one in-memory h5emu
 * chip: DfuSe requests in any order and state, block-0 commands, data blocks on every
 * alternate setting, OSFI frames (with a stand-in OSFI side), standard requests. Input: one
 * byte of options (profile, wTransferSize, faults), then records of an 8-byte setup packet
 * followed, for a host-to-device request, by its data stage (wLength bytes, as many as are
 * left). Every answer must fit in wLength and leave a valid DFU state. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "emu-dfu.h"
#include "emu-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fake_special(struct emu_chip *c, bool extended, uint16_t subop, const uint8_t *p1,
			size_t n1, const uint8_t *p2, size_t n2, uint8_t *out, size_t out_max,
			size_t *out_len, uint16_t *status)
{
	if (subop < 0x5300 || subop > 0x5306)
		return -ENOENT;
	if (n1 > 128 || n2 > 1024 || (extended && n2 && !p2) || (!extended && p2))
		abort();
	if (subop == 0x5305)
		emu_chip_request_reset(c);
	*out_len = n1 < out_max ? n1 : out_max;
	memcpy(out, p1, *out_len);
	*status = (uint16_t)(n2 & 3);
	return 0;
}

static bool fake_known(uint16_t subop)
{
	return subop >= 0x5300 && subop <= 0x5306;
}

static const struct emu_special_ops fake_ops = {
	.special = fake_special,
	.subop_known = fake_known,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t sizes[] = { 64, 256, 1024, 2048 };
	struct emu_chip_params p = { .special = &fake_ops, .seed = 7 };
	struct emu_dfu_config cfg = { 0 };
	struct emu_dfu *d = NULL;
	struct emu_chip *c;
	uint8_t buf[4096], desc[256];
	char serial[32];
	size_t off = 1;

	if (size < 1)
		return 0;
	p.profile = emu_profile_find(data[0] & 1 ? "g474" : "h563");
	cfg.transfer_size = sizes[(data[0] >> 1) & 3];
	cfg.osfi = data[0] & 8;
	cfg.timing = emu_dfu_timing_datasheet(p.profile);
	if (emu_chip_new(&p, &c) < 0)
		return 0;
	if (emu_dfu_new(&cfg, p.profile, &d) < 0)
		abort();
	emu_dfu_set_chip(d, c);
	if (data[0] & 16)
		emu_dfu_fail_block(d, 2 + (data[0] >> 5), 6);
	if (emu_dfu_descriptors(d, desc, sizeof(desc)) < 18 + 9 + 9)
		abort();
	emu_dfu_serial(d, serial, sizeof(serial));

	while (size - off >= 8) {
		const uint8_t *setup = data + off;
		uint16_t wlength = (uint16_t)(setup[6] | setup[7] << 8);
		struct emu_dfu_result res;

		off += 8;
		if (wlength > sizeof(buf))
			wlength = sizeof(buf);
		memset(buf, 0xa5, sizeof(buf));
		if (!(setup[0] & 0x80)) {
			size_t n = size - off < wlength ? size - off : wlength;

			memcpy(buf, data + off, n);
			off += n;
		}
		if (setup[0] == 0x01 && setup[1] == 0x0b && setup[4] == 0xff) {
			/* Not a request: the harness's SET_INTERFACE ioctl or a USB reset. */
			if (setup[2] & 0x80)
				emu_dfu_reset(d);
			else
				(void)emu_dfu_set_alt(d, setup[2]);
			continue;
		}
		{
			uint8_t s[8];

			memcpy(s, setup, 8);
			s[6] = (uint8_t)wlength;
			s[7] = (uint8_t)(wlength >> 8);
			emu_dfu_control(d, s, buf, &res);
		}
		if (res.len > wlength || emu_dfu_state(d) > 10 || (res.stall && res.len))
			abort();
		if (res.reset)
			emu_chip_reset(c, EMU_MODE_BOOTLOADER);
	}
	emu_dfu_free(d);
	emu_chip_free(c);
	return 0;
}

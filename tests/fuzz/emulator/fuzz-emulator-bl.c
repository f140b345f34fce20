/* Feeds arbitrary host bytes into the AN3155 device state machine of one in-memory h5emu
 * chip. The first input byte picks the profile and whether faults are armed; the answer
 * queue is drained and checked after every byte. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "an3155-wire.h"
#include "emu-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A stand-in for the OSFI side: one known sub-opcode that echoes its first packet, so that
 * the 0x50/0x51 framing paths run without the crypto. */
static int fake_special(struct emu_chip *c, bool extended, uint16_t subop, const uint8_t *p1,
			size_t n1, const uint8_t *p2, size_t n2, uint8_t *out, size_t out_max,
			size_t *out_len, uint16_t *status)
{
	if (subop == 0x5304)
		emu_chip_request_reset(c);
	if (subop < 0x5300 || subop > 0x5306)
		return -ENOENT;
	if (n1 > out_max || (extended && !p2 && n2))
		abort();
	memcpy(out, p1, n1);
	*out_len = n1;
	*status = (uint16_t)(n2 + subop);
	return 0;
}

static bool fake_known(uint16_t subop)
{
	return subop >= 0x5300 && subop <= 0x5305;
}

static const struct emu_special_ops fake_ops = {
	.special = fake_special,
	.subop_known = fake_known,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const specs[] = {
		"cmd=0x11,byte=3,action=corrupt,repeat",
		"cmd=0x31,nth=2,action=nack",
		"cmd=0x00,action=garbage",
		"subop=0x5301,action=vanish",
		"cmd=0x02,byte=2,action=delay:5",
		"cmd=0x44,action=drop,repeat",
		"cmd=0x01,byte=1,action=nack",
	};
	struct emu_fault faults[sizeof(specs) / sizeof(specs[0])];
	struct emu_faults fs = { .v = faults, .n = 0 };
	struct emu_chip_params p = { .special = &fake_ops, .seed = 42 };
	struct emu_chip *c;
	char err[128];

	if (size < 1)
		return 0;
	p.profile = emu_profile_find(data[0] & 1 ? "g474" : "h563");
	if (data[0] & 2) {
		for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
			if (emu_fault_parse(specs[i], &faults[fs.n], err, sizeof(err)) == 0)
				fs.n++;
		p.faults = &fs;
	}
	if (emu_chip_new(&p, &c) < 0)
		return 0;
	if (data[0] & 4)
		emu_chip_set_reset_mode(c, EMU_MODE_APP);

	for (size_t i = 1; i < size; i++) {
		struct emu_txq *q = emu_chip_txq(c);
		struct emu_tx t;
		size_t n = 0;

		emu_chip_input(c, data[i]);
		while (emu_txq_pop(q, &t)) {
			if (t.kind > EMU_TX_VANISH)
				abort();
			n++;
		}
		/* No single host byte makes the chip say more than a Read answer or a 0x50 one. */
		if (n > AN3155_SPECIAL_MAX_ANSWER + 64)
			abort();
		if (emu_chip_mode(c) == EMU_MODE_APP && (data[0] & 8)) {
			emu_chip_reset(c, EMU_MODE_BOOTLOADER);
		}
	}
	emu_chip_free(c);
	return 0;
}

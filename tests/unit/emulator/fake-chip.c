/* In-memory chip model for the OSFI chip-side tests (see fake-chip.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "an3155-wire.h"
#include "fake-chip.h"
#include "osfi-wire.h"

#define UNIT STM32H5_FLASH_WRITE_UNIT

struct fake_region {
	uint32_t base, size, sector;
	uint8_t *data;
	bool *programmed;	/* one per write unit */
};

struct emu_chip {
	char *state_dir;
	uint16_t device_id;
	uint8_t uid[12];
	struct fake_region flash, otp, obk;
	uint32_t opt[OSFI_OPT_MAX + 1];
	uint32_t image_version;
	bool fail_program;
	bool reset_requested;
	unsigned persisted;
	struct emu_osfi *osfi;
};

static int region_init(struct fake_region *r, uint32_t base, uint32_t size, uint32_t sector)
{
	r->base = base;
	r->size = size;
	r->sector = sector;
	r->data = malloc(size);
	r->programmed = calloc(size / UNIT, sizeof(bool));
	if (!r->data || !r->programmed)
		return -ENOMEM;
	memset(r->data, 0xff, size);
	return 0;
}

static void region_wipe(struct fake_region *r)
{
	memset(r->data, 0xff, r->size);
	memset(r->programmed, 0, r->size / UNIT * sizeof(bool));
}

static struct fake_region *chip_region(const struct emu_chip *c, uint32_t addr, size_t len)
{
	const struct fake_region *rs[] = { &c->flash, &c->otp, &c->obk };

	for (size_t i = 0; i < 3; i++)
		if (addr >= rs[i]->base && len <= rs[i]->size &&
		    (uint64_t)addr - rs[i]->base + len <= rs[i]->size)
			return (struct fake_region *)rs[i];
	return NULL;
}

struct emu_chip *fake_chip_new(const char *state_dir, uint16_t device_id, const uint8_t uid[12])
{
	struct emu_chip *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->device_id = device_id;
	memcpy(c->uid, uid, 12);
	if ((state_dir && !(c->state_dir = strdup(state_dir))) ||
	    region_init(&c->flash, STM32H5_FLASH_BASE, STM32H5_FLASH_SIZE, STM32H5_FLASH_SECTOR) ||
	    region_init(&c->otp, STM32H5_OTP_BASE, STM32H5_OTP_SIZE, 0) ||
	    region_init(&c->obk, STM32H5_OBK_BASE, STM32H5_OBK_SIZE, STM32H5_OBK_SIZE)) {
		fake_chip_free(c);
		return NULL;
	}
	fake_chip_wipe(c);
	return c;
}

void fake_chip_free(struct emu_chip *c)
{
	struct fake_region *rs[3];

	if (!c)
		return;
	rs[0] = &c->flash;
	rs[1] = &c->otp;
	rs[2] = &c->obk;
	for (size_t i = 0; i < 3; i++) {
		free(rs[i]->data);
		free(rs[i]->programmed);
	}
	free(c->state_dir);
	free(c);
}

void fake_chip_wipe(struct emu_chip *c)
{
	region_wipe(&c->flash);
	region_wipe(&c->otp);
	region_wipe(&c->obk);
	memset(c->opt, 0, sizeof(c->opt));
	c->opt[OSFI_OPT_OPTSR] = 0x00f000f8u | (uint32_t)STM32H5_PS_OPEN << 8;
	c->image_version = 0;
	c->fail_program = false;
	c->reset_requested = false;
}

const uint8_t *fake_chip_mem(const struct emu_chip *c, uint32_t addr, size_t len)
{
	struct fake_region *r = chip_region(c, addr, len);

	return r ? r->data + (addr - r->base) : NULL;
}

size_t fake_chip_programmed_units(const struct emu_chip *c)
{
	const struct fake_region *rs[] = { &c->flash, &c->otp, &c->obk };
	size_t n = 0;

	for (size_t i = 0; i < 3; i++)
		for (size_t u = 0; u < rs[i]->size / UNIT; u++)
			n += rs[i]->programmed[u];
	return n;
}

void fake_chip_fail_program(struct emu_chip *c, bool fail)
{
	c->fail_program = fail;
}

bool fake_chip_take_reset(struct emu_chip *c)
{
	bool r = c->reset_requested;

	c->reset_requested = false;
	return r;
}

unsigned fake_chip_persist_count(const struct emu_chip *c)
{
	return c->persisted;
}

/* --- emu-chip.h --- */

const uint8_t *emu_chip_uid(const struct emu_chip *c)
{
	return c->uid;
}

uint16_t emu_chip_device_id(const struct emu_chip *c)
{
	return c->device_id;
}

unsigned emu_chip_index(const struct emu_chip *c)
{
	return 0;
}

const char *emu_chip_state_dir(const struct emu_chip *c)
{
	return c->state_dir;
}

uint8_t emu_chip_product_state(const struct emu_chip *c)
{
	return (uint8_t)(c->opt[OSFI_OPT_OPTSR] >> 8);
}

static int ps_rank(uint8_t ps)
{
	switch (ps) {
	case STM32H5_PS_OPEN:
		return 0;
	case STM32H5_PS_PROVISIONING:
		return 1;
	case STM32H5_PS_IROT_PROVISIONED:
		return 2;
	case STM32H5_PS_TZ_CLOSED:
		return 3;
	case STM32H5_PS_CLOSED:
		return 4;
	case STM32H5_PS_LOCKED:
		return 5;
	default:
		return -1;
	}
}

int emu_chip_set_option(struct emu_chip *c, uint16_t reg, uint32_t value)
{
	if (reg < 1 || reg > OSFI_OPT_MAX)
		return -EINVAL;
	if (reg == OSFI_OPT_OPTSR) {
		int cur = ps_rank(emu_chip_product_state(c)), next = ps_rank((uint8_t)(value >> 8));

		if (next < 0 || next < cur)
			return -EINVAL;
	}
	c->opt[reg] = value;
	return 0;
}

uint32_t emu_chip_get_option(const struct emu_chip *c, uint16_t reg)
{
	return reg >= 1 && reg <= OSFI_OPT_MAX ? c->opt[reg] : 0;
}

uint32_t emu_chip_image_version(const struct emu_chip *c)
{
	return c->image_version;
}

void emu_chip_set_image_version(struct emu_chip *c, uint32_t v)
{
	c->image_version = v;
}

char emu_chip_range_kind(const struct emu_chip *c, uint32_t addr, size_t len)
{
	struct fake_region *r = chip_region(c, addr, len);

	if (!r || len == 0)
		return 0;
	return r == &c->flash ? 'F' : r == &c->otp ? 'O' : 'B';
}

bool emu_chip_range_erased(const struct emu_chip *c, uint32_t addr, size_t len)
{
	struct fake_region *r = chip_region(c, addr, len);

	if (!r)
		return false;
	for (size_t off = addr - r->base; off < addr - r->base + len; off += UNIT)
		if (r->programmed[off / UNIT])
			return false;
	return true;
}

int emu_chip_program(struct emu_chip *c, uint32_t addr, const uint8_t *data, size_t len)
{
	struct fake_region *r = chip_region(c, addr, len);

	if (!r || len == 0 || addr % UNIT || len % UNIT)
		return -EINVAL;
	if (c->fail_program || !emu_chip_range_erased(c, addr, len))
		return -EIO;
	memcpy(r->data + (addr - r->base), data, len);
	for (size_t off = addr - r->base; off < addr - r->base + len; off += UNIT)
		r->programmed[off / UNIT] = true;
	return 0;
}

int emu_chip_erase_range(struct emu_chip *c, uint32_t addr, size_t len)
{
	struct fake_region *r = chip_region(c, addr, len);
	size_t first, last;

	if (!r || r == &c->otp || len == 0 || addr % UNIT || len % UNIT)
		return -EINVAL;
	first = addr - r->base;
	last = first + len;
	memset(r->data + first, 0xff, last - first);
	for (size_t off = first; off < last; off += UNIT)
		r->programmed[off / UNIT] = false;
	return 0;
}

int emu_chip_persist(struct emu_chip *c)
{
	c->persisted++;
	return 0;
}

void emu_chip_request_reset(struct emu_chip *c)
{
	c->reset_requested = true;
}

struct emu_osfi *emu_chip_osfi(const struct emu_chip *c)
{
	return c->osfi;
}

void emu_chip_set_osfi(struct emu_chip *c, struct emu_osfi *o)
{
	c->osfi = o;
}

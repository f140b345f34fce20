/* The chip model of h5emu: memories with erase-before-write, option bytes, identity and
 * persistence. The bootloader protocol lives in emu-bl.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emu-chip-priv.h"

/* The H5's published list, plus 0x51 (Extended Special): an OSFI chip carries its license and
 * image stream on 0x51 and says so in Get (docs/protocol.md §5). */
#ifdef HAVE_EMU_OSFI
static const uint8_t h563_cmds[] = { 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44,
				     0x50, 0x51, 0x63, 0x73 };
#else
static const uint8_t h563_cmds[] = { 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x50, 0x63, 0x73 };
#endif
static const uint8_t g474_cmds[] = { 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82,
				     0x92 };

static const struct emu_profile profiles[] = {
	{
		.name = "h563",
		.device_id = STM32_PID_H56X_H57X,
		.bl_version = 0x40,
		.cmds = h563_cmds,
		.n_cmds = sizeof(h563_cmds),
		.flash_base = STM32H5_FLASH_BASE,
		.flash_size = STM32H5_FLASH_SIZE,
		.page_size = STM32H5_FLASH_SECTOR,
		.bank_size = STM32H5_FLASH_BANK_SIZE,
		.write_unit = STM32H5_FLASH_WRITE_UNIT,
		.sram_base = STM32H5_SRAM_BASE,
		.sram_size = STM32H5_SRAM_SIZE,
		.otp_base = STM32H5_OTP_BASE,
		.otp_size = STM32H5_OTP_SIZE,
		.uid_addr = STM32H5_UID_ADDR,
		.flashsize_addr = STM32H5_FLASHSIZE_ADDR,
		.obk_base = STM32H5_OBK_BASE,
		.obk_size = STM32H5_OBK_SIZE,
		.product_state = true,
	},
	{
		.name = "g474",
		.device_id = STM32_PID_G47X_G48X,
		.bl_version = 0x31,
		.cmds = g474_cmds,
		.n_cmds = sizeof(g474_cmds),
		.flash_base = 0x08000000u,
		.flash_size = 512u * 1024,
		.page_size = 2048u,
		.bank_size = 512u * 1024,
		.write_unit = 8u,
		.sram_base = 0x20000000u,
		.sram_size = 128u * 1024,
		.otp_base = 0x1fff7000u,
		.otp_size = 1024u,
		.uid_addr = 0x1fff7590u,
		.flashsize_addr = 0x1fff75e0u,
		.product_state = false,
	},
};

/* Default OPTSR: product state Open in bits 15:8, the other bits as shipped (not modelled). */
#define EMU_OPTSR_DEFAULT (0x00f00000u | ((uint32_t)STM32H5_PS_OPEN << 8) | 0xf8u)

const struct emu_profile *emu_profile_find(const char *name)
{
	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		if (strcmp(profiles[i].name, name) == 0)
			return &profiles[i];
	return NULL;
}

/* --- Answer queue --- */

int emu_txq_push(struct emu_txq *q, struct emu_tx t)
{
	if (q->head > 0 && q->head == q->len) {
		q->head = 0;
		q->len = 0;
	}
	if (q->len == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 512;
		struct emu_tx *n;

		/* A chip never has more than a few KiB of answer in flight. */
		if (cap > (1u << 20))
			return -ENOMEM;
		n = realloc(q->items, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		q->items = n;
		q->cap = cap;
	}
	q->items[q->len++] = t;
	return 0;
}

size_t emu_txq_pending(const struct emu_txq *q)
{
	return q->len - q->head;
}

bool emu_txq_pop(struct emu_txq *q, struct emu_tx *ret)
{
	if (q->head >= q->len)
		return false;
	*ret = q->items[q->head++];
	if (q->head == q->len) {
		q->head = 0;
		q->len = 0;
	}
	return true;
}

void emu_txq_clear(struct emu_txq *q)
{
	q->head = 0;
	q->len = 0;
}

void emu_txq_free(struct emu_txq *q)
{
	free(q->items);
	*q = (struct emu_txq){ 0 };
}

/* --- Regions --- */

static int region_init(struct emu_region *r, uint32_t base, uint32_t size, uint32_t unit)
{
	r->base = base;
	r->size = size;
	if (size == 0)
		return 0;
	r->data = malloc(size);
	if (!r->data)
		return -ENOMEM;
	memset(r->data, 0xff, size);
	if (unit) {
		r->programmed = calloc(1, size / unit / 8 + 1);
		if (!r->programmed)
			return -ENOMEM;
	}
	return 0;
}

static void region_free(struct emu_region *r)
{
	free(r->data);
	free(r->programmed);
	r->data = NULL;
	r->programmed = NULL;
}

static size_t region_bitmap_len(const struct emu_region *r, uint32_t unit)
{
	return r->size / unit / 8 + 1;
}

static bool region_contains(const struct emu_region *r, uint32_t addr, size_t len)
{
	return r->size > 0 && addr >= r->base && len <= r->size && addr - r->base <= r->size - len;
}

static bool unit_programmed(const struct emu_region *r, size_t unit_no)
{
	return r->programmed[unit_no / 8] & (1u << (unit_no % 8));
}

static struct emu_region *chip_region(struct emu_chip *c, uint32_t addr, size_t len)
{
	if (region_contains(&c->flash, addr, len))
		return &c->flash;
	if (region_contains(&c->otp, addr, len))
		return &c->otp;
	if (region_contains(&c->obk, addr, len))
		return &c->obk;
	return NULL;
}

/* --- Identity --- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void chip_derive_uid(struct emu_chip *c, uint64_t seed)
{
	uint64_t s = seed ^ ((uint64_t)c->index * 0x2545f4914f6cdd1dull);
	uint64_t a = splitmix64(&s), b = splitmix64(&s);

	memcpy(c->uid, &a, 8);
	memcpy(c->uid + 8, &b, 4);
}

const uint8_t *emu_chip_uid(const struct emu_chip *c)
{
	return c->uid;
}

uint16_t emu_chip_device_id(const struct emu_chip *c)
{
	return c->prof->device_id;
}

unsigned emu_chip_index(const struct emu_chip *c)
{
	return c->index;
}

const char *emu_chip_state_dir(const struct emu_chip *c)
{
	return c->state_dir;
}

const struct emu_profile *emu_chip_profile(const struct emu_chip *c)
{
	return c->prof;
}

/* --- Option bytes --- */

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

uint8_t emu_chip_product_state(const struct emu_chip *c)
{
	return (uint8_t)(c->opt[EMU_OPT_OPTSR] >> 8);
}

int emu_chip_set_option(struct emu_chip *c, uint16_t reg, uint32_t value)
{
	if (reg == 0 || reg >= _EMU_OPT_MAX)
		return -EINVAL;
	if (reg == EMU_OPT_OPTSR) {
		int cur = ps_rank(emu_chip_product_state(c));
		int next = ps_rank((uint8_t)(value >> 8));

		/* The life cycle only moves forward; regressions are commands, not states. */
		if (next < 0 || next < cur)
			return -EINVAL;
	}
	c->opt[reg] = value;
	return 0;
}

uint32_t emu_chip_get_option(const struct emu_chip *c, uint16_t reg)
{
	if (reg == 0 || reg >= _EMU_OPT_MAX)
		return 0;
	return c->opt[reg];
}

uint32_t emu_chip_image_version(const struct emu_chip *c)
{
	return c->image_version;
}

void emu_chip_set_image_version(struct emu_chip *c, uint32_t v)
{
	c->image_version = v;
}

bool emu_chip_protected(const struct emu_chip *c)
{
	if (!c->prof->product_state)
		return c->rdp;
	/* Beyond Provisioning the bootloader refuses memory access (TrustZone off, HDPL 3). */
	return ps_rank(emu_chip_product_state(c)) >= 2;
}

/* --- Memory --- */

char emu_chip_range_kind(const struct emu_chip *c, uint32_t addr, size_t len)
{
	if (region_contains(&c->flash, addr, len))
		return 'F';
	if (region_contains(&c->otp, addr, len))
		return 'O';
	if (region_contains(&c->obk, addr, len))
		return 'B';
	return 0;
}

bool emu_chip_range_erased(const struct emu_chip *c, uint32_t addr, size_t len)
{
	struct emu_region *r = chip_region((struct emu_chip *)c, addr, len);
	uint32_t unit = c->prof->write_unit;

	if (!r)
		return false;
	if (len == 0)
		return true;
	for (size_t u = (addr - r->base) / unit; u <= (addr - r->base + len - 1) / unit; u++)
		if (unit_programmed(r, u))
			return false;
	return true;
}

int emu_chip_program(struct emu_chip *c, uint32_t addr, const uint8_t *data, size_t len)
{
	struct emu_region *r = chip_region(c, addr, len);
	uint32_t unit = c->prof->write_unit;

	if (!r || len == 0 || addr % unit != 0 || len % unit != 0)
		return -EINVAL;
	if (!emu_chip_range_erased(c, addr, len))
		return -EIO;
	/* The flash controller refuses write-protected sectors, whoever asks. */
	if (r == &c->flash)
		for (uint32_t p = (addr - r->base) / c->prof->page_size;
		     p <= (addr - r->base + len - 1) / c->prof->page_size; p++)
			if (emu_chip_page_protected(c, p))
				return -EACCES;
	memcpy(r->data + (addr - r->base), data, len);
	for (size_t u = (addr - r->base) / unit; u < (addr - r->base + len) / unit; u++)
		r->programmed[u / 8] |= (uint8_t)(1u << (u % 8));
	c->work_units += len / unit;
	return 0;
}

static void region_erase_units(struct emu_region *r, uint32_t off, uint32_t len, uint32_t unit)
{
	memset(r->data + off, 0xff, len);
	for (uint32_t u = off / unit; u < (off + len) / unit; u++)
		r->programmed[u / 8] &= (uint8_t)~(1u << (u % 8));
}

/* Only [addr, addr + len): the ROM saves what the rest of each sector holds, erases the
 * sector and programs that back, so nothing outside the range changes. */
int emu_chip_erase_range(struct emu_chip *c, uint32_t addr, size_t len)
{
	struct emu_region *r = chip_region(c, addr, len);
	uint32_t unit = c->prof->write_unit;

	if (!r || r == &c->otp || len == 0 || addr % unit != 0 || len % unit != 0)
		return -EINVAL;
	region_erase_units(r, addr - r->base, (uint32_t)len, unit);
	c->work_pages += (len + c->prof->page_size - 1) / c->prof->page_size;
	return 0;
}

int emu_chip_erase_pages(struct emu_chip *c, uint32_t first, uint32_t count)
{
	uint32_t ps = c->prof->page_size;

	if (first >= c->flash.size / ps || count > c->flash.size / ps - first)
		return -EINVAL;
	region_erase_units(&c->flash, first * ps, count * ps, c->prof->write_unit);
	c->work_pages += count;
	return 0;
}

int emu_chip_read(const struct emu_chip *c, uint32_t addr, uint8_t *buf, size_t len)
{
	const struct emu_region *rs[] = { &c->flash, &c->sram, &c->otp };
	uint8_t info[16];

	for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
		if (region_contains(rs[i], addr, len)) {
			memcpy(buf, rs[i]->data + (addr - rs[i]->base), len);
			return 0;
		}
	}
	/* UID and flash size: synthesized, read-only. */
	memset(info, 0xff, sizeof(info));
	if (addr >= c->prof->uid_addr && len <= 12 && addr - c->prof->uid_addr <= 12 - len) {
		memcpy(buf, c->uid + (addr - c->prof->uid_addr), len);
		return 0;
	}
	if (addr >= c->prof->flashsize_addr && len <= 2 && addr - c->prof->flashsize_addr <= 2 - len) {
		uint16_t kib = (uint16_t)(c->flash.size / 1024);

		info[0] = (uint8_t)kib;
		info[1] = (uint8_t)(kib >> 8);
		memcpy(buf, info + (addr - c->prof->flashsize_addr), len);
		return 0;
	}
	/* On the H5 the UID and flash size are adjacent: allow one read covering both. */
	if (c->prof->flashsize_addr == c->prof->uid_addr + 12 && addr >= c->prof->uid_addr &&
	    len <= 16 && addr - c->prof->uid_addr <= 16 - len) {
		uint16_t kib = (uint16_t)(c->flash.size / 1024);

		memcpy(info, c->uid, 12);
		info[12] = (uint8_t)kib;
		info[13] = (uint8_t)(kib >> 8);
		memcpy(buf, info + (addr - c->prof->uid_addr), len);
		return 0;
	}
	return -EINVAL;
}

int emu_chip_write(struct emu_chip *c, uint32_t addr, const uint8_t *data, size_t len)
{
	if (region_contains(&c->sram, addr, len)) {
		memcpy(c->sram.data + (addr - c->sram.base), data, len);
		return 0;
	}
	if (region_contains(&c->flash, addr, len)) {
		uint32_t first = (addr - c->flash.base) / c->prof->page_size;
		uint32_t last = (uint32_t)((addr - c->flash.base + len - 1) / c->prof->page_size);

		for (uint32_t p = first; p <= last; p++)
			if (emu_chip_page_protected(c, p))
				return -EACCES;
		return emu_chip_program(c, addr, data, len);
	}
	if (region_contains(&c->otp, addr, len))
		return emu_chip_program(c, addr, data, len);
	return -EINVAL;
}

/* WRP: one bit per group of sectors, 32 groups per bank (on the H5: 4 sectors of 8 KiB),
 * a cleared bit protects the group. */
bool emu_chip_page_protected(const struct emu_chip *c, uint32_t page)
{
	uint32_t per_bank = c->prof->bank_size / c->prof->page_size;
	uint32_t bank = page / per_bank, group = (page % per_bank) / (per_bank / 32 ? per_bank / 32 : 1);
	uint32_t reg = bank == 0 ? c->opt[EMU_OPT_WRP1R] : c->opt[EMU_OPT_WRP2R];

	if (group >= 32)
		return false;
	return !(reg & (1u << group));
}

void emu_chip_set_page_protection(struct emu_chip *c, uint32_t page, bool on)
{
	uint32_t per_bank = c->prof->bank_size / c->prof->page_size;
	uint32_t bank = page / per_bank, group = (page % per_bank) / (per_bank / 32 ? per_bank / 32 : 1);
	uint32_t *reg = bank == 0 ? &c->opt[EMU_OPT_WRP1R] : &c->opt[EMU_OPT_WRP2R];

	if (group >= 32)
		return;
	if (on)
		*reg &= ~(1u << group);
	else
		*reg |= 1u << group;
}

/* --- Reset --- */

void emu_chip_request_reset(struct emu_chip *c)
{
	c->reset_requested = true;
}

void emu_chip_set_reset_mode(struct emu_chip *c, enum emu_mode mode)
{
	c->reset_mode = mode;
}

void emu_chip_reset(struct emu_chip *c, enum emu_mode mode)
{
	c->mode = mode;
	c->st = BL_WAIT_SYNC;
	c->fault = NULL;
	c->abandon = false;
	c->reset_requested = false;
	if (c->special && c->special->reset && c->osfi)
		c->special->reset(c);
}

enum emu_mode emu_chip_mode(const struct emu_chip *c)
{
	return c->mode;
}

struct emu_txq *emu_chip_txq(struct emu_chip *c)
{
	return &c->txq;
}

struct emu_osfi *emu_chip_osfi(const struct emu_chip *c)
{
	return c->osfi;
}

void emu_chip_set_osfi(struct emu_chip *c, struct emu_osfi *o)
{
	c->osfi = o;
}

/* --- Persistence --- */

#define MEM_FILE "memory.bin"
#define CONF_FILE "chip.conf"

/* Through a temporary name and rename: a reader (h5emu at its next start, a test) finds the
 * old file or the new one, whole. No fsync: what the chip holds must survive h5emu stopping
 * or being killed, which the page cache ensures, not a crash of the machine; an fsync here
 * held up every emulated USB device's requests for 5-40 ms (docs/emulator.md, "State"). */
static int write_file_atomic(const char *dir, const char *name, const void *a, size_t na,
			     const void *b, size_t nb)
{
	char tmp[4096], path[4096];
	const uint8_t *parts[2] = { a, b };
	size_t lens[2] = { na, nb };
	int fd, r = 0;

	if (snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp) ||
	    snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	for (int i = 0; i < 2 && r == 0; i++) {
		size_t off = 0;

		while (off < lens[i]) {
			ssize_t n = write(fd, parts[i] + off, lens[i] - off);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				r = -errno;
				break;
			}
			off += (size_t)n;
		}
	}
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

static uint8_t *chip_serialize_memory(const struct emu_chip *c, size_t *ret_len)
{
	const struct emu_region *rs[] = { &c->flash, &c->otp, &c->obk };
	uint32_t unit = c->prof->write_unit;
	size_t total = 0, off = 0;
	uint8_t *m;

	for (size_t i = 0; i < 3; i++)
		if (rs[i]->size)
			total += rs[i]->size + region_bitmap_len(rs[i], unit);
	m = malloc(total ? total : 1);
	if (!m)
		return NULL;
	for (size_t i = 0; i < 3; i++) {
		if (!rs[i]->size)
			continue;
		memcpy(m + off, rs[i]->data, rs[i]->size);
		off += rs[i]->size;
		memcpy(m + off, rs[i]->programmed, region_bitmap_len(rs[i], unit));
		off += region_bitmap_len(rs[i], unit);
	}
	*ret_len = total;
	return m;
}

int emu_chip_persist(struct emu_chip *c)
{
	char conf[2048];
	uint8_t *mem;
	size_t len;
	int n, r;

	if (!c->state_dir)
		return 0;
	mem = chip_serialize_memory(c, &len);
	if (!mem)
		return -ENOMEM;
	r = write_file_atomic(c->state_dir, MEM_FILE, mem, len, NULL, 0);
	free(mem);
	if (r < 0)
		return r;

	n = snprintf(conf, sizeof(conf), "profile=%s\nuid=", c->prof->name);
	for (int i = 0; i < 12; i++)
		n += snprintf(conf + n, sizeof(conf) - (size_t)n, "%02x", c->uid[i]);
	n += snprintf(conf + n, sizeof(conf) - (size_t)n, "\nimage_version=%" PRIu32 "\nrdp=%d\n",
		      c->image_version, c->rdp ? 1 : 0);
	for (int i = 1; i < _EMU_OPT_MAX; i++)
		n += snprintf(conf + n, sizeof(conf) - (size_t)n, "opt%d=0x%08" PRIx32 "\n", i,
			      c->opt[i]);
	return write_file_atomic(c->state_dir, CONF_FILE, conf, (size_t)n, NULL, 0);
}

static int chip_load(struct emu_chip *c)
{
	char path[4096], line[256];
	const struct emu_region *rs[] = { &c->flash, &c->otp, &c->obk };
	uint32_t unit = c->prof->write_unit;
	uint8_t *mem;
	size_t len, off = 0;
	ssize_t n;
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", c->state_dir, CONF_FILE);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), f)) {
		char *eq = strchr(line, '=');
		unsigned long v;
		int i;

		if (!eq)
			continue;
		*eq++ = '\0';
		eq[strcspn(eq, "\n")] = '\0';
		if (strcmp(line, "profile") == 0 && strcmp(eq, c->prof->name) != 0) {
			fclose(f);
			return -EMEDIUMTYPE;
		} else if (strcmp(line, "uid") == 0 && strlen(eq) == 24) {
			for (int k = 0; k < 12; k++) {
				unsigned b;

				if (sscanf(eq + 2 * k, "%2x", &b) == 1)
					c->uid[k] = (uint8_t)b;
			}
		} else if (strcmp(line, "image_version") == 0) {
			c->image_version = (uint32_t)strtoul(eq, NULL, 0);
		} else if (strcmp(line, "rdp") == 0) {
			c->rdp = strcmp(eq, "1") == 0;
		} else if (sscanf(line, "opt%d", &i) == 1 && i > 0 && i < _EMU_OPT_MAX) {
			v = strtoul(eq, NULL, 0);
			c->opt[i] = (uint32_t)v;
		}
	}
	fclose(f);

	mem = chip_serialize_memory(c, &len);
	if (!mem)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/%s", c->state_dir, MEM_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(mem);
		return errno == ENOENT ? 0 : -errno;
	}
	n = read(fd, mem, len);
	close(fd);
	if (n != (ssize_t)len) {
		free(mem);
		return -EBADMSG;
	}
	for (size_t i = 0; i < 3; i++) {
		if (!rs[i]->size)
			continue;
		memcpy(rs[i]->data, mem + off, rs[i]->size);
		off += rs[i]->size;
		memcpy(rs[i]->programmed, mem + off, region_bitmap_len(rs[i], unit));
		off += region_bitmap_len(rs[i], unit);
	}
	free(mem);
	return 0;
}

/* --- Life cycle --- */

int emu_chip_new(const struct emu_chip_params *p, struct emu_chip **ret)
{
	const struct emu_profile *pr = p->profile;
	struct emu_chip *c;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->prof = pr;
	c->index = p->index;
	c->faults = p->faults;
	c->special = p->special;
	c->rng = p->seed ^ (0x5851f42d4c957f2dull * (p->index + 1));
	r = region_init(&c->flash, pr->flash_base, pr->flash_size, pr->write_unit);
	if (r == 0)
		r = region_init(&c->sram, pr->sram_base, pr->sram_size, 0);
	if (r == 0)
		r = region_init(&c->otp, pr->otp_base, pr->otp_size, pr->write_unit);
	if (r == 0)
		r = region_init(&c->obk, pr->obk_base, pr->obk_size, pr->write_unit);
	if (r < 0)
		goto fail;

	for (int i = 0; i < _EMU_OPT_MAX; i++)
		c->opt[i] = 0;
	c->opt[EMU_OPT_OPTSR] = EMU_OPTSR_DEFAULT;
	c->opt[EMU_OPT_WRP1R] = 0xffffffffu;
	c->opt[EMU_OPT_WRP2R] = 0xffffffffu;
	chip_derive_uid(c, p->seed);

	if (p->state_dir) {
		c->state_dir = strdup(p->state_dir);
		if (!c->state_dir) {
			r = -ENOMEM;
			goto fail;
		}
		if (mkdir(c->state_dir, 0700) < 0 && errno != EEXIST) {
			r = -errno;
			goto fail;
		}
		r = chip_load(c);
		if (r < 0)
			goto fail;
	}
	c->mode = EMU_MODE_BOOTLOADER;
	c->st = BL_WAIT_SYNC;
	*ret = c;
	return 0;
fail:
	emu_chip_free(c);
	return r;
}

struct emu_chip *emu_chip_free(struct emu_chip *c)
{
	if (!c)
		return NULL;
	region_free(&c->flash);
	region_free(&c->sram);
	region_free(&c->otp);
	region_free(&c->obk);
	emu_txq_free(&c->txq);
	free(c->state_dir);
	free(c);
	return NULL;
}

/* sfi-boot program: plain programming of firmware (ELF, Intel HEX, BIN@ADDR) with the
 * bootloader commands every STM32H5 ROM has (AN3155 over UART, DfuSe over USB): erase
 * exactly the flash sectors the firmware touches, write, read back and compare, and
 * optionally start it. No OSFI, no license. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "an3155-wire.h"
#include "fw-load.h"
#include "sfi-file.h"
#include "sfi-boot.h"

#define PROGRAM_FILES_MAX 16
#define SECTORS (STM32H5_FLASH_SIZE / STM32H5_FLASH_SECTOR)

struct program_args {
	const char *file[PROGRAM_FILES_MAX];
	bool has_addr[PROGRAM_FILES_MAX];
	uint32_t addr[PROGRAM_FILES_MAX];
	size_t n;
	bool go;
	uint32_t go_addr;
	bool go_addr_set;
};

enum region { REGION_NONE, REGION_FLASH, REGION_OTP, REGION_SRAM };

static enum region region_of(uint32_t addr, size_t size)
{
	uint64_t end = (uint64_t)addr + size;

	if (addr >= STM32H5_FLASH_BASE && end <= (uint64_t)STM32H5_FLASH_BASE + STM32H5_FLASH_SIZE)
		return REGION_FLASH;
	if (addr >= STM32H5_OTP_BASE && end <= (uint64_t)STM32H5_OTP_BASE + STM32H5_OTP_SIZE)
		return REGION_OTP;
	if (addr >= STM32H5_SRAM_BASE && end <= (uint64_t)STM32H5_SRAM_BASE + STM32H5_SRAM_SIZE)
		return REGION_SRAM;
	return REGION_NONE;
}

static int program_parse(int argc, char **argv, struct program_args *a)
{
	memset(a, 0, sizeof(*a));
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--go") == 0) {
			a->go = true;
			continue;
		}
		if (strncmp(argv[i], "--go=", 5) == 0) {
			a->go = true;
			a->go_addr_set = true;
			if (sfi_parse_u32(argv[i] + 5, &a->go_addr) < 0) {
				sfi_boot_error("program: --go=ADDR: '%s' is not an address", argv[i] + 5);
				return -EINVAL;
			}
			continue;
		}
		if (argv[i][0] == '-') {
			sfi_boot_error("program: unknown option %s", argv[i]);
			return -EINVAL;
		}
		if (a->n == PROGRAM_FILES_MAX) {
			sfi_boot_error("program: at most %d firmware files", PROGRAM_FILES_MAX);
			return -EINVAL;
		}
		a->file[a->n] = argv[i];
		/* FILE@ADDR: a raw binary at ADDR (the last '@', so paths may hold one). */
		const char *at = strrchr(argv[i], '@');
		if (at && at[1]) {
			if (sfi_parse_u32(at + 1, &a->addr[a->n]) < 0) {
				sfi_boot_error("program: %s: '%s' is not an address", argv[i], at + 1);
				return -EINVAL;
			}
			a->has_addr[a->n] = true;
		}
		a->n++;
	}
	if (a->n == 0) {
		sfi_boot_error("program: no firmware file (FILE.elf, FILE.hex or FILE.bin@ADDR)");
		return -EINVAL;
	}
	return 0;
}

static int program_check(int argc, char **argv)
{
	struct program_args a;

	return program_parse(argc, argv, &a) < 0 ? SFI_BOOT_EXIT_USAGE : SFI_BOOT_EXIT_OK;
}

/* The path without its "@ADDR" suffix, in buf. */
static const char *file_path(const struct program_args *a, size_t i, char *buf, size_t size)
{
	const char *at = a->has_addr[i] ? strrchr(a->file[i], '@') : NULL;
	size_t n = at ? (size_t)(at - a->file[i]) : strlen(a->file[i]);

	if (n >= size)
		n = size - 1;
	memcpy(buf, a->file[i], n);
	buf[n] = '\0';
	return buf;
}

/* Prints "sha256 PATH" of one input file, as sha256sum does. */
static int print_digest(const char *path)
{
	uint8_t *data = NULL, md[EVP_MAX_MD_SIZE];
	unsigned md_len = 0;
	size_t len = 0;
	int r;

	r = sfi_file_read(path, 64u << 20, &data, &len);
	if (r < 0)
		return r;
	if (!EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL)) {
		free(data);
		return -EIO;
	}
	printf("sha256:        ");
	for (unsigned i = 0; i < md_len; i++)
		printf("%02x", md[i]);
	printf("  %s\n", path);
	free(data);
	return 0;
}

static int cmp_seg(const void *x, const void *y)
{
	const struct fw_segment *a = x, *b = y;

	return a->address < b->address ? -1 : a->address > b->address;
}

static int write_and_verify(struct sfi_boot *b, const struct fw_segment *s)
{
	uint8_t *back;
	int r;

	if (b->link) {
		link_set_write_unit(b->link, region_of(s->address, s->size) == REGION_SRAM ?
					     4 : STM32H5_FLASH_WRITE_UNIT);
		if (b->progress)
			link_set_progress(b->link, sfi_boot_progress, (void *)"write");
	}
	r = sfi_boot_mem_write(b, s->address, s->data, s->size);
	sfi_boot_progress_end(b);
	if (b->link)
		link_set_progress(b->link, NULL, NULL);
	if (r < 0)
		return sfi_boot_fail(b, r, "write");
	if (b->no_verify)
		return SFI_BOOT_EXIT_OK;
	back = malloc(s->size);
	if (!back) {
		sfi_boot_error("out of memory for the read-back");
		return SFI_BOOT_EXIT_FILE;
	}
	if (b->link && b->progress)
		link_set_progress(b->link, sfi_boot_progress, (void *)"verify");
	r = sfi_boot_mem_read(b, s->address, back, s->size);
	sfi_boot_progress_end(b);
	if (b->link)
		link_set_progress(b->link, NULL, NULL);
	if (r < 0) {
		free(back);
		return sfi_boot_fail(b, r, "verify");
	}
	for (size_t i = 0; i < s->size; i++) {
		if (back[i] != s->data[i]) {
			sfi_boot_error("verify failed at 0x%08" PRIx64 " (%s): wrote %02x, read %02x",
				       (uint64_t)s->address + i, s->source, s->data[i], back[i]);
			free(back);
			return SFI_BOOT_EXIT_VERIFY;
		}
	}
	free(back);
	return SFI_BOOT_EXIT_OK;
}

static int program_run(struct sfi_boot *b, int argc, char **argv)
{
	static bool touched[SECTORS];
	struct program_args a;
	struct fw_image fw = { 0 };
	uint16_t pages[SECTORS];
	size_t n_pages = 0, bytes = 0;
	char why[512], path[4096];
	int r, ret = SFI_BOOT_EXIT_OK;

	program_parse(argc, argv, &a);
	memset(touched, 0, sizeof(touched));
	for (size_t i = 0; i < a.n; i++) {
		file_path(&a, i, path, sizeof(path));
		if (fw_load(&fw, path, a.has_addr[i], a.addr[i], why, sizeof(why)) < 0) {
			sfi_boot_error("program: %s", why);
			ret = SFI_BOOT_EXIT_FILE;
			goto out;
		}
	}
	if (fw.n == 0) {
		sfi_boot_error("program: the firmware holds no data");
		ret = SFI_BOOT_EXIT_FILE;
		goto out;
	}
	qsort(fw.seg, fw.n, sizeof(fw.seg[0]), cmp_seg);
	for (size_t i = 0; i < fw.n; i++) {
		const struct fw_segment *s = &fw.seg[i];

		if (i > 0 && (uint64_t)fw.seg[i - 1].address + fw.seg[i - 1].size > s->address) {
			sfi_boot_error("program: %s overlaps %s at 0x%08x", s->source,
				       fw.seg[i - 1].source, s->address);
			ret = SFI_BOOT_EXIT_FILE;
			goto out;
		}
		switch (region_of(s->address, s->size)) {
		case REGION_FLASH:
			if (s->address % STM32H5_FLASH_WRITE_UNIT != 0) {
				sfi_boot_error("program: %s starts at 0x%08x, not on a %u-byte flash "
					       "word", s->source, s->address, STM32H5_FLASH_WRITE_UNIT);
				ret = SFI_BOOT_EXIT_FILE;
				goto out;
			}
			for (uint32_t p = (s->address - STM32H5_FLASH_BASE) / STM32H5_FLASH_SECTOR;
			     p <= (s->address + s->size - 1 - STM32H5_FLASH_BASE) / STM32H5_FLASH_SECTOR;
			     p++)
				touched[p] = true;
			break;
		case REGION_OTP:
			if (s->address % STM32H5_FLASH_WRITE_UNIT != 0) {
				sfi_boot_error("program: %s starts at 0x%08x in OTP, not on a %u-byte "
					       "word", s->source, s->address, STM32H5_FLASH_WRITE_UNIT);
				ret = SFI_BOOT_EXIT_FILE;
				goto out;
			}
			break;
		case REGION_SRAM:
			break;
		case REGION_NONE:
			sfi_boot_error("program: %s (0x%08x, %zu bytes) is outside the STM32H5's "
				       "flash, OTP and SRAM", s->source, s->address, s->size);
			ret = SFI_BOOT_EXIT_FILE;
			goto out;
		}
		bytes += s->size;
	}
	for (uint32_t p = 0; p < SECTORS; p++)
		if (touched[p])
			pages[n_pages++] = (uint16_t)p;

	for (size_t i = 0; i < a.n; i++) {
		if (print_digest(file_path(&a, i, path, sizeof(path))) < 0) {
			sfi_boot_error("program: cannot read %s", path);
			ret = SFI_BOOT_EXIT_FILE;
			goto out;
		}
	}
	printf("firmware:      %zu segment%s, %zu bytes\n", fw.n, fw.n == 1 ? "" : "s", bytes);
	if (n_pages) {
		r = b->link ? link_erase(b->link, LINK_ERASE_PAGES, pages, n_pages) :
			      sfi_boot_dfu_erase(b, LINK_ERASE_PAGES, pages, n_pages);
		if (r < 0) {
			ret = sfi_boot_fail(b, r, "erase");
			goto out;
		}
	}
	printf("erased:        %zu sector%s of %u KiB", n_pages, n_pages == 1 ? "" : "s",
	       STM32H5_FLASH_SECTOR / 1024);
	for (size_t i = 0; i < n_pages; i++) {
		size_t j = i;

		while (j + 1 < n_pages && pages[j + 1] == pages[j] + 1)
			j++;
		printf(i ? "," : " (");
		if (j > i)
			printf("%u-%u", pages[i], pages[j]);
		else
			printf("%u", pages[i]);
		i = j;
	}
	printf("%s\n", n_pages ? ")" : "");
	for (size_t i = 0; i < fw.n; i++) {
		ret = write_and_verify(b, &fw.seg[i]);
		if (ret != SFI_BOOT_EXIT_OK)
			goto out;
	}
	printf("written:       %zu bytes%s\n", bytes, b->no_verify ? " (not verified)" :
	       ", read back identical");
	if (a.go) {
		uint32_t go = a.go_addr_set ? a.go_addr : fw.seg[0].address;

		r = b->link ? link_go(b->link, go) : sfi_boot_dfu_go(b, go);
		if (r < 0) {
			ret = sfi_boot_fail(b, r, "go");
			goto out;
		}
		printf("started:       0x%08x\n", go);
	}
out:
	fw_image_clear(&fw);
	return ret;
}

const struct sfi_boot_command sfi_boot_cmd_program = {
	.name = "program",
	.args = "[--go[=ADDR]] FIRMWARE...",
	.summary = "plain programming: erase the sectors FIRMWARE touches (ELF, Intel HEX, "
		   "BIN@ADDR), write, read back; --go starts it",
	.min_args = 1,
	.max_args = -1,
	.check = program_check,
	.run = program_run,
};

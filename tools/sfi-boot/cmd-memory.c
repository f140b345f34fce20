/* sfi-boot read / write: memory to and from files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sfi-boot.h"

#define FILE_MAX (64u * 1024 * 1024) /* far above any STM32 memory */

static int parse_addr(const char *what, const char *s, uint32_t *ret)
{
	if (sfi_parse_u32(s, ret) < 0) {
		sfi_boot_error("%s '%s' is not a 32-bit number", what, s);
		return -EINVAL;
	}
	return 0;
}

static int read_check(int argc, char **argv)
{
	uint32_t addr = 0, len = 0;

	if (parse_addr("address", argv[0], &addr) < 0 || parse_addr("length", argv[1], &len) < 0)
		return SFI_BOOT_EXIT_USAGE;
	if (len == 0 || len > FILE_MAX || (uint64_t)addr + len > (uint64_t)UINT32_MAX + 1) {
		sfi_boot_error("length %u does not fit (1..%u bytes inside the address space)", len,
			       FILE_MAX);
		return SFI_BOOT_EXIT_USAGE;
	}
	return SFI_BOOT_EXIT_OK;
}

static int write_file(const char *path, const uint8_t *buf, size_t n)
{
	size_t off = 0;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	while (off < n) {
		ssize_t w = write(fd, buf + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int r = w < 0 ? -errno : -EIO;

			close(fd);
			return r;
		}
		off += (size_t)w;
	}
	if (close(fd) < 0)
		return -errno;
	return 0;
}

static int read_run(struct sfi_boot *b, int argc, char **argv)
{
	uint32_t addr = 0, len = 0;
	uint8_t *buf;
	int r;

	sfi_parse_u32(argv[0], &addr);
	sfi_parse_u32(argv[1], &len);
	buf = malloc(len);
	if (!buf) {
		sfi_boot_error("out of memory for %u bytes", len);
		return SFI_BOOT_EXIT_FILE;
	}
	if (b->progress && b->link)
		link_set_progress(b->link, sfi_boot_progress, (void *)"read");
	r = sfi_boot_mem_read(b, addr, buf, len);
	sfi_boot_progress_end(b);
	if (r < 0) {
		free(buf);
		return sfi_boot_fail(b, r, "read");
	}
	r = write_file(argv[2], buf, len);
	free(buf);
	if (r < 0) {
		sfi_boot_error("cannot write %s: %s", argv[2], strerror(-r));
		return SFI_BOOT_EXIT_FILE;
	}
	return SFI_BOOT_EXIT_OK;
}

const struct sfi_boot_command sfi_boot_cmd_read = {
	.name = "read",
	.args = "ADDR LEN FILE",
	.summary = "read LEN bytes from ADDR into FILE",
	.min_args = 3,
	.max_args = 3,
	.check = read_check,
	.run = read_run,
};

/* STM32 flash, OTP and option areas live in 0x08000000..0x0fffffff; the STM32H5 programs
 * them in 16-byte words, so writes there are aligned and padded to 16 bytes. */
static unsigned write_unit(uint32_t addr)
{
	return addr >= 0x08000000u && addr <= 0x0fffffffu ? STM32H5_FLASH_WRITE_UNIT : 4;
}

static int write_check(int argc, char **argv)
{
	uint32_t addr = 0;

	if (parse_addr("address", argv[0], &addr) < 0)
		return SFI_BOOT_EXIT_USAGE;
	if (addr % write_unit(addr) != 0) {
		sfi_boot_error("write address 0x%08x is not a multiple of %u", addr,
			       write_unit(addr));
		return SFI_BOOT_EXIT_USAGE;
	}
	return SFI_BOOT_EXIT_OK;
}

/* --erase: erases the flash sectors [addr, addr + len) covers, page by page. Returns 0,
 * -ERANGE (not all inside flash, said), or a link error. */
static int erase_covered(struct sfi_boot *b, uint32_t addr, size_t len)
{
	uint16_t pages[STM32H5_FLASH_SIZE / STM32H5_FLASH_SECTOR];
	uint32_t first, last;

	if (addr < STM32H5_FLASH_BASE ||
	    (uint64_t)addr + len > (uint64_t)STM32H5_FLASH_BASE + STM32H5_FLASH_SIZE) {
		sfi_boot_error("--erase: 0x%08x..0x%08llx is not all inside the flash", addr,
			       (unsigned long long)addr + len - 1);
		return -ERANGE;
	}
	first = (addr - STM32H5_FLASH_BASE) / STM32H5_FLASH_SECTOR;
	last = (uint32_t)((addr + len - 1 - STM32H5_FLASH_BASE) / STM32H5_FLASH_SECTOR);
	for (uint32_t p = first; p <= last; p++)
		pages[p - first] = (uint16_t)p;
	if (b->link)
		return link_erase(b->link, LINK_ERASE_PAGES, pages, last - first + 1);
	return sfi_boot_dfu_erase_range(b, addr, len);
}

static int write_run(struct sfi_boot *b, int argc, char **argv)
{
	uint8_t *data = NULL, *back = NULL;
	uint32_t addr = 0;
	size_t len = 0;
	int r, ret = SFI_BOOT_EXIT_OK;

	sfi_parse_u32(argv[0], &addr);
	r = sfi_file_read(argv[1], FILE_MAX, &data, &len);
	if (r < 0) {
		sfi_boot_error("cannot read %s: %s", argv[1],
			       r == -EINVAL ? "not a regular file" : strerror(-r));
		return SFI_BOOT_EXIT_FILE;
	}
	if (len == 0 || (uint64_t)addr + len > (uint64_t)UINT32_MAX + 1) {
		sfi_boot_error("%s is %s", argv[1], len ? "too large for that address" : "empty");
		free(data);
		return SFI_BOOT_EXIT_FILE;
	}

	if (b->erase_first) {
		r = erase_covered(b, addr, len);
		if (r < 0) {
			ret = r == -ERANGE ? SFI_BOOT_EXIT_USAGE : sfi_boot_fail(b, r, "erase");
			goto out;
		}
	}
	if (b->link)
		link_set_write_unit(b->link, write_unit(addr));
	if (b->progress && b->link)
		link_set_progress(b->link, sfi_boot_progress, (void *)"write");
	r = sfi_boot_mem_write(b, addr, data, len);
	sfi_boot_progress_end(b);
	if (r < 0) {
		ret = sfi_boot_fail(b, r, "write");
		goto out;
	}
	if (b->no_verify)
		goto out;

	back = malloc(len);
	if (!back) {
		sfi_boot_error("out of memory for the read-back");
		ret = SFI_BOOT_EXIT_FILE;
		goto out;
	}
	if (b->progress && b->link)
		link_set_progress(b->link, sfi_boot_progress, (void *)"verify");
	r = sfi_boot_mem_read(b, addr, back, len);
	sfi_boot_progress_end(b);
	if (r < 0) {
		ret = sfi_boot_fail(b, r, "verify");
		goto out;
	}
	for (size_t i = 0; i < len; i++) {
		if (data[i] != back[i]) {
			sfi_boot_error("verify failed at 0x%08zx: wrote %02x, read %02x back "
				       "(erase the flash before writing?)",
				       addr + i, data[i], back[i]);
			ret = SFI_BOOT_EXIT_VERIFY;
			goto out;
		}
	}
out:
	if (b->link)
		link_set_progress(b->link, NULL, NULL);
	free(back);
	free(data);
	return ret;
}

const struct sfi_boot_command sfi_boot_cmd_write = {
	.name = "write",
	.args = "ADDR FILE",
	.summary = "write FILE at ADDR (after erasing its sectors with --erase), then read "
		   "back and compare (unless --no-verify)",
	.min_args = 2,
	.max_args = 2,
	.check = write_check,
	.run = write_run,
};

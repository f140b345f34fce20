/* sfi-boot over USB DFU (--port dfu:...): the memory commands through the DfuSe backend
 * (transport-dfu.h); cert and install run over the link vtable as on UART. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfi-boot.h"
#include "transport-dfu.h"

bool sfi_boot_is_dfu_spec(const char *spec)
{
	return spec && strncmp(spec, "dfu:", 4) == 0;
}

int sfi_boot_dfu_fail(struct sfi_boot *b, int r, const char *what)
{
	b->tp_failed = true;
	return sfi_boot_fail(b, r, what);
}

/* The alternate whose memory layout holds [addr, addr + len) with attrs; alt 0 when none
 * says so (a device without layouts). */
static int dfu_alt_for(struct sfi_boot *b, uint32_t addr, size_t len, uint8_t attrs,
		       uint8_t *ret_alt)
{
	struct transport_dfu_info *info;
	int r;

	info = calloc(1, sizeof(*info));
	if (!info)
		return -ENOMEM;
	r = transport_dfu_info(b->tp, info);
	if (r < 0) {
		free(info);
		return r;
	}
	r = -ERANGE;
	for (unsigned i = 0; i < info->n_alts; i++) {
		const struct transport_dfu_alt *a = &info->alts[i];

		if (a->has_layout && (int)i != info->osfi_alt &&
		    dfuse_layout_covers(&a->layout, addr, (uint32_t)len, attrs)) {
			*ret_alt = a->alt;
			r = 0;
			break;
		}
	}
	free(info);
	if (r < 0)
		sfi_boot_error("no alternate setting of the DFU device holds 0x%08x..0x%08llx with "
			       "the access asked for", addr, (unsigned long long)addr + len - 1);
	return r;
}

int sfi_boot_mem_read(struct sfi_boot *b, uint32_t addr, uint8_t *buf, size_t len)
{
	uint8_t alt = 0;
	int r;

	if (b->link)
		return link_read_memory(b->link, addr, buf, len);
	r = dfu_alt_for(b, addr, len, DFUSE_MEM_READABLE, &alt);
	if (r < 0)
		return r;
	b->tp_failed = true;
	return transport_dfu_read(b->tp, alt, addr, buf, len);
}

int sfi_boot_mem_write(struct sfi_boot *b, uint32_t addr, const uint8_t *data, size_t len)
{
	uint8_t alt = 0;
	int r;

	if (b->link)
		return link_write_memory(b->link, addr, data, len);
	r = dfu_alt_for(b, addr, len, DFUSE_MEM_WRITABLE, &alt);
	if (r < 0)
		return r;
	b->tp_failed = true;
	/* Flash is programmed in 16-byte units: pad the tail with 0xFF as on UART. */
	if (addr >= STM32H5_FLASH_BASE && len % STM32H5_FLASH_WRITE_UNIT) {
		size_t padded = len + STM32H5_FLASH_WRITE_UNIT - len % STM32H5_FLASH_WRITE_UNIT;
		uint8_t *buf = malloc(padded);

		if (!buf)
			return -ENOMEM;
		memcpy(buf, data, len);
		memset(buf + len, 0xff, padded - len);
		r = transport_dfu_write(b->tp, alt, addr, buf, padded);
		free(buf);
		return r;
	}
	return transport_dfu_write(b->tp, alt, addr, data, len);
}

int sfi_boot_dfu_erase(struct sfi_boot *b, enum link_erase_kind kind, const uint16_t *pages,
		       size_t n)
{
	uint32_t base = STM32H5_FLASH_BASE;
	int r = 0;

	b->tp_failed = true;
	switch (kind) {
	case LINK_ERASE_MASS:
		return transport_dfu_mass_erase(b->tp, 0);
	case LINK_ERASE_BANK1:
		return transport_dfu_erase(b->tp, 0, base, STM32H5_FLASH_BANK_SIZE);
	case LINK_ERASE_BANK2:
		return transport_dfu_erase(b->tp, 0, base + STM32H5_FLASH_BANK_SIZE,
					   STM32H5_FLASH_BANK_SIZE);
	case LINK_ERASE_PAGES:
		/* Runs of consecutive pages go as one erase operation each. */
		for (size_t i = 0; i < n && r == 0;) {
			size_t k = i + 1;

			while (k < n && pages[k] == pages[k - 1] + 1)
				k++;
			r = transport_dfu_erase(b->tp, 0, base + pages[i] * STM32H5_FLASH_SECTOR,
						(k - i) * STM32H5_FLASH_SECTOR);
			i = k;
		}
		return r;
	case _LINK_ERASE_MAX:
		break;
	}
	return -EINVAL;
}

int sfi_boot_dfu_erase_range(struct sfi_boot *b, uint32_t addr, size_t len)
{
	b->tp_failed = true;
	return transport_dfu_erase(b->tp, 0, addr, len);
}

int sfi_boot_dfu_go(struct sfi_boot *b, uint32_t addr)
{
	b->tp_failed = true;
	return transport_dfu_leave(b->tp, true, addr);
}

/* Prints what the USB descriptors say; *ret_osfi: the device has the OSFI alternate. */
int sfi_boot_dfu_describe(struct sfi_boot *b, bool *ret_osfi)
{
	struct transport_dfu_info *info;
	int r;

	info = calloc(1, sizeof(*info));
	if (!info) {
		sfi_boot_error("out of memory");
		return SFI_BOOT_EXIT_FILE;
	}
	r = transport_dfu_info(b->tp, info);
	if (r < 0) {
		free(info);
		return sfi_boot_dfu_fail(b, r, "USB descriptors");
	}
	printf("port:          dfu:usb:%s (device %u)\n", info->path, info->devnum);
	printf("usb device:    %04x:%04x, bootloader version 0x%02x (bcdDevice 0x%04x)\n",
	       info->vid, info->pid, info->bcd_device >> 8, info->bcd_device);
	printf("usb serial:    %s (not used to identify the chip)\n",
	       info->serial[0] ? info->serial : "none");
	printf("dfu:           version 0x%04x%s, wTransferSize %u, attributes 0x%02x\n",
	       info->dfu_version, info->dfu_version == DFUSE_BCD_DFU_VERSION ? " (DfuSe)" : "",
	       info->transfer_size, info->attributes);
	for (unsigned i = 0; i < info->n_alts; i++)
		printf("alt %u:         %s\n", info->alts[i].alt, info->alts[i].name);
	*ret_osfi = info->osfi_alt >= 0;
	free(info);
	return SFI_BOOT_EXIT_OK;
}

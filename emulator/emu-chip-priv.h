/* The chip structure, shared by the memory model (emu-chip.c) and the bootloader state
 * machine (emu-bl.c) only. */
#pragma once

#include "an3155-wire.h"
#include "emu-internal.h"

/* Largest bootloader packet collected at once: 0x51's second packet plus its checksum. */
#define EMU_BL_BUF 1200
/* Pages remembered from one Extended Erase list; longer lists are refused. */
#define EMU_BL_MAX_PAGES 512

enum emu_bl_state {
	BL_WAIT_SYNC,
	BL_IDLE,
	BL_CMD_COMPL,
	BL_ADDR,
	BL_READ_LEN,
	BL_WRITE_LEN,
	BL_WRITE_DATA,
	BL_ERASE_HDR,
	BL_ERASE_SPECIAL_CKS,
	BL_ERASE_PAGES,
	BL_WP_LEN,
	BL_WP_DATA,
	BL_SUBOP,
	BL_SP_LEN,
	BL_SP_DATA,
	BL_XSP_LEN1,
	BL_XSP_DATA1,
	BL_XSP_LEN2,
	BL_XSP_DATA2,
};

struct emu_region {
	uint8_t *data;
	uint8_t *programmed;	/* one bit per write unit; NULL for SRAM-like memory */
	uint32_t base, size;
};

struct emu_chip {
	const struct emu_profile *prof;
	unsigned index;
	char *state_dir;
	uint8_t uid[12];
	enum emu_mode mode;

	struct emu_region flash, sram, otp, obk;
	uint32_t opt[_EMU_OPT_MAX];
	uint32_t image_version;
	bool rdp;		/* readout protection (profiles without product state) */

	struct emu_faults *faults;
	const struct emu_special_ops *special;
	struct emu_osfi *osfi;
	bool reset_requested;
	enum emu_mode reset_mode;	/* where a reset leads (BOOT0 as wired) */
	bool abandon;		/* garbage fault: drop the rest of this command */
	/* Flash work done so far (write units programmed, sectors erased): the DFU side turns
	 * it into time. */
	uint64_t work_units, work_pages;

	/* Bootloader. */
	enum emu_bl_state st;
	uint8_t cmd;
	uint32_t addr;
	uint8_t buf[EMU_BL_BUF];
	size_t need, got;
	uint16_t subop;
	uint16_t npages;	/* Extended Erase: count - 1 */
	uint32_t page_bytes;	/* page-list bytes received */
	uint16_t pages[EMU_BL_MAX_PAGES];
	uint8_t xor;
	uint8_t p1[AN3155_SPECIAL_MAX_DATA];
	size_t n1;

	/* Fault applied to the current command's answer. */
	struct emu_fault *fault;
	unsigned answer_idx;
	uint64_t rng;

	struct emu_txq txq;
};

/* Erases flash pages [first, first + count). Returns 0 or -EINVAL. */
int emu_chip_erase_pages(struct emu_chip *c, uint32_t first, uint32_t count);
/* Stores into SRAM, flash or OTP as Write Memory does: 0, -EINVAL (bad range or
 * alignment), -EIO (target not erased), -EACCES (write protected). */
int emu_chip_write(struct emu_chip *c, uint32_t addr, const uint8_t *data, size_t len);
/* Write protection of flash page `page` (WRP option bytes). */
bool emu_chip_page_protected(const struct emu_chip *c, uint32_t page);
void emu_chip_set_page_protection(struct emu_chip *c, uint32_t page, bool on);

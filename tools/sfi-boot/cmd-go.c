/* sfi-boot go: start the program whose vector table is at ADDR. */
#include "sfi-boot.h"

static int go_check(int argc, char **argv)
{
	uint32_t addr = 0;

	if (sfi_parse_u32(argv[0], &addr) < 0) {
		sfi_boot_error("address '%s' is not a 32-bit number", argv[0]);
		return SFI_BOOT_EXIT_USAGE;
	}
	return SFI_BOOT_EXIT_OK;
}

static int go_run(struct sfi_boot *b, int argc, char **argv)
{
	uint32_t addr = 0;
	int r;

	sfi_parse_u32(argv[0], &addr);
	r = b->link ? link_go(b->link, addr) : sfi_boot_dfu_go(b, addr);
	if (r < 0)
		return sfi_boot_fail(b, r, "go");
	return SFI_BOOT_EXIT_OK;
}

const struct sfi_boot_command sfi_boot_cmd_go = {
	.name = "go",
	.args = "ADDR",
	.summary = "jump to the program at ADDR (stack pointer at ADDR, entry at ADDR+4)",
	.min_args = 1,
	.max_args = 1,
	.check = go_check,
	.run = go_run,
};

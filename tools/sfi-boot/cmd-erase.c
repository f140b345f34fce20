/* sfi-boot erase: mass, one bank, or a list of pages (Extended Erase). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sfi-boot.h"

static int erase_parse(int argc, char **argv, enum link_erase_kind *ret_kind, uint16_t *pages)
{
	static const struct {
		const char *name;
		enum link_erase_kind kind;
	} special[] = {
		{ "mass", LINK_ERASE_MASS },
		{ "bank1", LINK_ERASE_BANK1 },
		{ "bank2", LINK_ERASE_BANK2 },
	};

	for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++) {
		if (strcmp(argv[0], special[i].name) != 0)
			continue;
		if (argc != 1) {
			sfi_boot_error("'erase %s' takes no page numbers", argv[0]);
			return -EINVAL;
		}
		*ret_kind = special[i].kind;
		return 0;
	}
	for (int i = 0; i < argc; i++) {
		uint32_t p;

		if (sfi_parse_u32(argv[i], &p) < 0 || p >= 0xfff0) {
			sfi_boot_error("'%s' is not mass, bank1, bank2 or a page number", argv[i]);
			return -EINVAL;
		}
		if (pages)
			pages[i] = (uint16_t)p;
	}
	*ret_kind = LINK_ERASE_PAGES;
	return 0;
}

static int erase_check(int argc, char **argv)
{
	enum link_erase_kind kind;

	if (argc > 4096) {
		sfi_boot_error("too many pages (at most 4096)");
		return SFI_BOOT_EXIT_USAGE;
	}
	return erase_parse(argc, argv, &kind, NULL) < 0 ? SFI_BOOT_EXIT_USAGE : SFI_BOOT_EXIT_OK;
}

static int erase_run(struct sfi_boot *b, int argc, char **argv)
{
	enum link_erase_kind kind = LINK_ERASE_MASS;
	uint16_t *pages;
	int r;

	pages = calloc((size_t)argc, sizeof(*pages));
	if (!pages) {
		sfi_boot_error("out of memory");
		return SFI_BOOT_EXIT_FILE;
	}
	erase_parse(argc, argv, &kind, pages);
	if (b->link)
		r = link_erase(b->link, kind, kind == LINK_ERASE_PAGES ? pages : NULL,
			       kind == LINK_ERASE_PAGES ? (size_t)argc : 0);
	else
		r = sfi_boot_dfu_erase(b, kind, pages, (size_t)argc);
	free(pages);
	if (r < 0)
		return sfi_boot_fail(b, r, "erase");
	return SFI_BOOT_EXIT_OK;
}

const struct sfi_boot_command sfi_boot_cmd_erase = {
	.name = "erase",
	.args = "mass|bank1|bank2|PAGE...",
	.summary = "erase all flash, one bank, or the listed pages",
	.min_args = 1,
	.max_args = -1,
	.check = erase_check,
	.run = erase_run,
};

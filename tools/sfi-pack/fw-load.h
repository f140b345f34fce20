/* Firmware file loaders for sfi-pack: raw binary, Intel HEX, ELF. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fw_segment {
	uint32_t address;
	uint8_t *data;
	size_t size;
	char source[256];	/* "file.hex line 12" or "file.elf segment 1": for messages */
};

struct fw_image {
	struct fw_segment *seg;
	size_t n;
	size_t merge_from;	/* segments of the file being loaded start here */
};

/* Loads FILE (raw needs has_addr). Appends segments to *fw. Returns 0, or -1 with a message
 * (naming the file and line or address) in reason. */
int fw_load(struct fw_image *fw, const char *path, bool has_addr, uint32_t addr, char *reason,
	    size_t reason_size);
/* The same, reading path (e.g. a passed descriptor's /proc/self/fd/N) but naming the file
 * name in messages and segment sources, and telling its format by name's extension. */
int fw_load_named(struct fw_image *fw, const char *path, const char *name, bool has_addr,
		  uint32_t addr, char *reason, size_t reason_size);
void fw_image_clear(struct fw_image *fw);

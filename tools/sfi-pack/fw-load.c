/* Firmware loaders: raw binary at a given address, Intel HEX (records 00, 01, 02, 04, 05,
 * checksums checked), ELF (PT_LOAD segments at their physical address, file bytes only). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fw-load.h"
#include "sfi-file.h"

static int fw_add(struct fw_image *fw, uint32_t addr, const uint8_t *data, size_t n,
		  const char *source)
{
	struct fw_segment *s;

	if (n == 0)
		return 0;
	/* Extend the previous segment when the bytes follow it (HEX data records). */
	if (fw->n > fw->merge_from) {
		s = &fw->seg[fw->n - 1];
		if ((uint64_t)s->address + s->size == addr) {
			uint8_t *d = realloc(s->data, s->size + n);

			if (!d)
				return -ENOMEM;
			memcpy(d + s->size, data, n);
			s->data = d;
			s->size += n;
			return 0;
		}
	}
	s = realloc(fw->seg, (fw->n + 1) * sizeof(*s));
	if (!s)
		return -ENOMEM;
	fw->seg = s;
	s = &fw->seg[fw->n];
	memset(s, 0, sizeof(*s));
	s->data = malloc(n);
	if (!s->data)
		return -ENOMEM;
	memcpy(s->data, data, n);
	s->address = addr;
	s->size = n;
	snprintf(s->source, sizeof(s->source), "%s", source);
	fw->n++;
	return 0;
}

void fw_image_clear(struct fw_image *fw)
{
	for (size_t i = 0; i < fw->n; i++)
		free(fw->seg[i].data);
	free(fw->seg);
	fw->seg = NULL;
	fw->n = 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int fw_load_hex(struct fw_image *fw, const char *path, const uint8_t *text, size_t len,
		       char *reason, size_t reason_size)
{
	uint32_t base = 0;
	unsigned lineno = 0;
	bool eof = false;
	size_t pos = 0;

	while (pos < len) {
		size_t start = pos, end;
		uint8_t rec[260], sum = 0;
		size_t n;

		while (pos < len && text[pos] != '\n')
			pos++;
		end = pos;
		if (pos < len)
			pos++;
		lineno++;
		while (end > start && isspace(text[end - 1]))
			end--;
		if (end == start)
			continue;
		if (eof) {
			snprintf(reason, reason_size, "%s line %u: data after the end-of-file record",
				 path, lineno);
			return -1;
		}
		if (text[start] != ':' || (end - start - 1) % 2 || end - start - 1 < 10 ||
		    (end - start - 1) / 2 > sizeof(rec)) {
			snprintf(reason, reason_size, "%s line %u: not an Intel HEX record", path, lineno);
			return -1;
		}
		n = (end - start - 1) / 2;
		for (size_t i = 0; i < n; i++) {
			int hi = hexval(text[start + 1 + 2 * i]), lo = hexval(text[start + 2 + 2 * i]);

			if (hi < 0 || lo < 0) {
				snprintf(reason, reason_size, "%s line %u: bad hex digit", path, lineno);
				return -1;
			}
			rec[i] = (uint8_t)(hi << 4 | lo);
			sum += rec[i];
		}
		if (rec[0] + 5u != n) {
			snprintf(reason, reason_size, "%s line %u: record length does not match", path,
				 lineno);
			return -1;
		}
		if (sum != 0) {
			snprintf(reason, reason_size, "%s line %u: checksum mismatch", path, lineno);
			return -1;
		}
		uint16_t off = (uint16_t)(rec[1] << 8 | rec[2]);

		switch (rec[3]) {
		case 0x00:
			if ((uint64_t)base + off + rec[0] > UINT32_MAX) {
				snprintf(reason, reason_size, "%s line %u: data beyond 4 GiB", path,
					 lineno);
				return -1;
			}
			char src[256];

			snprintf(src, sizeof(src), "%s line %u", path, lineno);
			if (fw_add(fw, base + off, rec + 4, rec[0], src) < 0) {
				snprintf(reason, reason_size, "out of memory");
				return -1;
			}
			break;
		case 0x01:
			eof = true;
			break;
		case 0x02:
		case 0x04:
			if (rec[0] != 2) {
				snprintf(reason, reason_size, "%s line %u: address record needs 2 bytes",
					 path, lineno);
				return -1;
			}
			base = rec[3] == 0x02 ? (uint32_t)(rec[4] << 8 | rec[5]) << 4 :
						(uint32_t)(rec[4] << 8 | rec[5]) << 16;
			break;
		case 0x05:
			break; /* start address: not part of the image */
		default:
			snprintf(reason, reason_size, "%s line %u: unsupported record type %02x", path,
				 lineno, rec[3]);
			return -1;
		}
	}
	if (!eof) {
		snprintf(reason, reason_size, "%s: no end-of-file record (truncated file?)", path);
		return -1;
	}
	return 0;
}

static int fw_load_elf(struct fw_image *fw, const char *path, const uint8_t *buf, size_t len,
		       char *reason, size_t reason_size)
{
	Elf *e;
	size_t n_ph;
	int r = -1;

	if (elf_version(EV_CURRENT) == EV_NONE) {
		snprintf(reason, reason_size, "libelf is unusable");
		return -1;
	}
	e = elf_memory((char *)buf, len);
	if (!e || elf_kind(e) != ELF_K_ELF || elf_getphdrnum(e, &n_ph) != 0) {
		snprintf(reason, reason_size, "%s: not a valid ELF file", path);
		goto out;
	}
	for (size_t i = 0; i < n_ph; i++) {
		GElf_Phdr ph;

		if (!gelf_getphdr(e, (int)i, &ph)) {
			snprintf(reason, reason_size, "%s: program header %zu unreadable", path, i);
			goto out;
		}
		if (ph.p_type != PT_LOAD || ph.p_filesz == 0)
			continue;
		if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset ||
		    ph.p_paddr + ph.p_filesz > (uint64_t)UINT32_MAX + 1) {
			snprintf(reason, reason_size, "%s: segment %zu lies outside the file or 4 GiB",
				 path, i);
			goto out;
		}
		char src[256];

		snprintf(src, sizeof(src), "%s segment %zu", path, i);
		if (fw_add(fw, (uint32_t)ph.p_paddr, buf + ph.p_offset, ph.p_filesz, src) < 0) {
			snprintf(reason, reason_size, "out of memory");
			goto out;
		}
	}
	r = 0;
out:
	if (e)
		elf_end(e);
	return r;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

int fw_load(struct fw_image *fw, const char *path, bool has_addr, uint32_t addr, char *reason,
	    size_t reason_size)
{
	return fw_load_named(fw, path, path, has_addr, addr, reason, reason_size);
}

int fw_load_named(struct fw_image *fw, const char *path, const char *name, bool has_addr,
		  uint32_t addr, char *reason, size_t reason_size)
{
	uint8_t *buf;
	size_t len, before = fw->n;
	int r;

	fw->merge_from = fw->n;
	r = sfi_file_read(path, 64u << 20, &buf, &len);
	if (r < 0) {
		snprintf(reason, reason_size, "%s: %s", name, sfi_file_strerror(r));
		return -1;
	}
	if (len == 0) {
		snprintf(reason, reason_size, "%s: empty file", name);
		free(buf);
		return -1;
	}
	if (len >= 4 && memcmp(buf, "\177ELF", 4) == 0) {
		if (has_addr) {
			snprintf(reason, reason_size, "%s: an ELF file carries its addresses; drop @ADDR",
				 name);
			r = -1;
		} else {
			r = fw_load_elf(fw, name, buf, len, reason, reason_size);
		}
	} else if (ends_with(name, ".hex") || ends_with(name, ".ihex") ||
		   (buf[0] == ':' && !has_addr)) {
		/* By name, or by its first byte when no address makes it a raw binary (whose
		 * first byte may be ':' like any other). */
		if (has_addr) {
			snprintf(reason, reason_size, "%s: an Intel HEX file carries its addresses; drop "
					       "@ADDR", name);
			r = -1;
		} else {
			r = fw_load_hex(fw, name, buf, len, reason, reason_size);
		}
	} else if (!has_addr) {
		snprintf(reason, reason_size, "%s: a raw binary needs its address (FILE@0x08000000)",
			 name);
		r = -1;
	} else if ((uint64_t)addr + len > (uint64_t)UINT32_MAX + 1) {
		snprintf(reason, reason_size, "%s: %zu bytes at 0x%08x pass 4 GiB", name, len, addr);
		r = -1;
	} else {
		r = fw_add(fw, addr, buf, len, name);
		if (r < 0)
			snprintf(reason, reason_size, "out of memory");
	}
	free(buf);
	if (r == 0 && fw->n == before) {
		snprintf(reason, reason_size, "%s: no data in the file", name);
		r = -1;
	}
	return r < 0 ? -1 : 0;
}

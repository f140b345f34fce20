/* Fuzzes the module license information file parser (osfi_modules_parse, the module CSV
 * of docs/protocol.md §7) on its own. A refusal says "line N: ..."; an accepted file gives
 * entries that keep the parser's promises (non-zero distinct ids, `hsm:` ids that are the
 * module's firmware id, 16-byte aligned flash destinations, lines in order), and written
 * back out as CSV the entries parse to the same list. */
#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osfi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *write_back(const struct osfi_module_entry *e, size_t n, size_t *ret_len)
{
	size_t cap = n * (sizeof(e->license) + 128) + 1, len = 0;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int w;

		if (e[i].hsm) {
			char hex[2 * OSFI_ID_LEN + 1];

			for (size_t k = 0; k < OSFI_ID_LEN; k++)
				snprintf(hex + 2 * k, 3, "%02x", e[i].firmware_id[k]);
			w = snprintf(out + len, cap - len, "%" PRIu32 ", hsm:%s, 0x%08" PRIx32 "\n",
				     e[i].module_id, hex, e[i].address);
		} else {
			w = snprintf(out + len, cap - len, "%" PRIu32 ", %s, 0x%08" PRIx32 "\n",
				     e[i].module_id, e[i].license, e[i].address);
		}
		if (w < 0 || (size_t)w >= cap - len)
			abort();
		len += (size_t)w;
	}
	*ret_len = len;
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct osfi_module_entry *e = NULL, *back = NULL;
	size_t n = 0, n_back = 0, len;
	char why[256];
	char *text;
	unsigned last = 0;

	why[0] = '\0';
	if (osfi_modules_parse((const char *)data, size, &e, &n, why, sizeof(why)) < 0) {
		if (strncmp(why, "line ", 5) != 0 && why[0])
			abort();
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t id[OSFI_ID_LEN];

		if (e[i].module_id == 0 || e[i].line <= last || e[i].address % 16 != 0)
			abort();
		last = e[i].line;
		for (size_t j = 0; j < i; j++)
			if (e[j].module_id == e[i].module_id)
				abort();
		if (e[i].hsm) {
			osfi_module_firmware_id(e[i].module_id, id);
			if (memcmp(id, e[i].firmware_id, OSFI_ID_LEN) != 0)
				abort();
		} else if (!e[i].license[0] ||
			   memchr(e[i].license, '\0', sizeof(e[i].license)) == NULL) {
			abort();
		}
	}

	/* What was accepted, written back, parses to the same entries. */
	text = write_back(e, n, &len);
	if (text) {
		if (osfi_modules_parse(text, len, &back, &n_back, why, sizeof(why)) != 0 ||
		    n_back != n)
			abort();
		for (size_t i = 0; i < n; i++)
			if (back[i].module_id != e[i].module_id || back[i].hsm != e[i].hsm ||
			    back[i].address != e[i].address ||
			    strcmp(back[i].license, e[i].license) != 0 ||
			    (e[i].hsm && memcmp(back[i].firmware_id, e[i].firmware_id,
						OSFI_ID_LEN) != 0))
				abort();
		free(back);
		free(text);
	}
	free(e);
	return 0;
}

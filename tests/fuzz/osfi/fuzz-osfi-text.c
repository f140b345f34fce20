/* Fuzzes the two OSFI text formats: the module license information file and the option CSV
 * (the first byte selects which). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "osfi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[200];

	if (size < 1)
		return 0;
	if (data[0] & 1) {
		struct osfi_module_entry *e;
		size_t n;

		if (osfi_modules_parse((const char *)data + 1, size - 1, &e, &n, why,
				       sizeof(why)) == 0)
			free(e);
	} else {
		struct osfi_option o[OSFI_OPT_MAX];
		uint8_t rec[OSFI_OPT_MAX * OSFI_OPT_RECORD_LEN];
		size_t n;

		if (osfi_options_parse_csv((const char *)data + 1, size - 1, o, OSFI_OPT_MAX, &n,
					   why, sizeof(why)) == 0) {
			int len = osfi_options_encode(o, n, rec, sizeof(rec));
			struct osfi_option back[OSFI_OPT_MAX];
			size_t k;

			/* What the CSV parser accepts, the chip-side record decoder accepts. */
			if (len < 0 || osfi_options_decode(rec, (size_t)len, back, OSFI_OPT_MAX, &k))
				abort();
		}
	}
	return 0;
}

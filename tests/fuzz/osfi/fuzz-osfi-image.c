/* Fuzzes the image parser and, on images it accepts, authentication with a fixed key. */
#include <stddef.h>
#include <stdint.h>

#include "osfi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[OSFI_KEY_LEN] = { 0 };
	struct osfi_image *img;
	char why[200];
	unsigned bad;

	if (osfi_image_parse(data, size, &img, why, sizeof(why)) == 0) {
		(void)osfi_image_authenticate(img, key, NULL, 0, &bad);
		osfi_image_free(img);
	}
	return 0;
}

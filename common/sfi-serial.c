/* Serial number strings (sfi-serial.h). */
#include <errno.h>
#include <string.h>

#include "sfi-serial.h"

int sfi_serial_set(sfi_serial dst, const char *src)
{
	size_t n = strnlen(src, SFI_SERIAL_MAX);

	if (n >= SFI_SERIAL_MAX) {
		dst[0] = '\0';
		return -ENAMETOOLONG;
	}
	memcpy(dst, src, n + 1);
	return 0;
}

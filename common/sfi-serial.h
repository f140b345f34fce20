/* Token serial numbers as the host keeps them (the line token, module tokens, tokens a
 * recheck refused): one string type, one size. A PKCS#11 serial is at most 16 characters;
 * the room beyond is for tokens named in sfid.conf by other means. A serial that does not
 * fit is refused, never cut (two cut serials could compare equal). */
#pragma once

#include <stddef.h>

#define SFI_SERIAL_MAX 64

/* A NUL-terminated serial number. */
typedef char sfi_serial[SFI_SERIAL_MAX];

/* Copies src into dst. 0, or -ENAMETOOLONG (dst is then ""). */
int sfi_serial_set(sfi_serial dst, const char *src);

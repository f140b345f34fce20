/* Number parsing (sfi-parse.h). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "sfi-parse.h"

int sfi_parse_u32(const char *s, uint32_t *ret)
{
	unsigned long long v;
	const char *p;
	char *end;
	int base = 10;

	if (!s || !*s)
		return -EINVAL;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	} else if (s[0] == '0' && s[1]) {
		return -EINVAL;
	}
	/* Only digits of the base: strtoull alone would take spaces, a sign, and a second
	 * "0x" after the first ("0x0x7" read as 7). */
	if (!*s)
		return -EINVAL;
	for (p = s; *p; p++)
		if (base == 16 ? !isxdigit((unsigned char)*p) : !isdigit((unsigned char)*p))
			return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end || v > UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

int sfi_parse_decimal(const char *s, unsigned long long min, unsigned long long max,
		      unsigned long long *ret)
{
	unsigned long long v;
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end)
		return -EINVAL;
	if (errno || v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

/* Values of sfid.conf keys (config-key.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-key.h"
#include "sfi-parse.h"

int config_key_str(char **dst, const char *section, const char *name, const char *value,
		   bool absolute, char *err, size_t errlen)
{
	char *s;

	if (!*value) {
		snprintf(err, errlen, "key '%s' in [%s] is empty", name, section);
		return -1;
	}
	if (absolute && value[0] != '/') {
		snprintf(err, errlen, "key '%s' in [%s]: '%s' is not an absolute path", name,
			 section, value);
		return -1;
	}
	s = strdup(value);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(*dst);
	*dst = s;
	return 1;
}

int config_key_num(unsigned *dst, const char *section, const char *name, const char *value,
		   unsigned min, unsigned max, char *err, size_t errlen)
{
	unsigned long long x;

	if (sfi_parse_decimal(value, min, max, &x) < 0) {
		snprintf(err, errlen, "key '%s' in [%s]: '%s' is not a whole number from %u to %u",
			 name, section, value, min, max);
		return -1;
	}
	*dst = (unsigned)x;
	return 1;
}

/* Values of sfid.conf keys that sections of their own ([central], [vendor]) read alike. Each
 * returns 1 with *dst set, or -1 with a sentence naming the key and its section in err. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* A non-empty string; with absolute, it must also be an absolute path. Replaces *dst. */
int config_key_str(char **dst, const char *section, const char *name, const char *value,
		   bool absolute, char *err, size_t errlen);

/* A whole decimal number from min to max. */
int config_key_num(unsigned *dst, const char *section, const char *name, const char *value,
		   unsigned min, unsigned max, char *err, size_t errlen);

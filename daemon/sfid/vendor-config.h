/* The [vendor] section of sfid.conf: the vendor backend, which runs STM32CubeProgrammer's
 * command-line tool for slots with `backend = cubeprogrammer` (see sfid.conf(5) in
 * docs/operations.md). Parsed apart from the rest, beside the module that uses it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct vendor_config {
	char *tool;		/* STM32_Programmer_CLI, an absolute path */
	char *rsse;		/* the RSSe file -sfi needs */
	char *modules;		/* a .mcsv file for Secure Manager modules, or NULL */
	char *work_dir;		/* certificates and licenses per slot; NULL: beside the database */
	unsigned reader;	/* the STM32HSM's reader slot (-hsmgetcounter slot=N) */
	unsigned cert_timeout_ms;
	unsigned license_timeout_ms;	/* each of the counter and license calls */
	unsigned install_timeout_ms;
	unsigned line;		/* of the [vendor] header, for messages */
};

/* Applies one key. Returns 1 when applied, 0 for an unknown key, -1 with a sentence in err
 * for a bad value. */
int vendor_config_set(struct vendor_config *c, const char *name, const char *value, char *err,
		      size_t errlen);
/* Fills defaults and checks the section when a slot uses the backend (used). Returns 0 or
 * -1 with err. */
int vendor_config_check(struct vendor_config *c, bool used, char *err, size_t errlen);
void vendor_config_clear(struct vendor_config *c);

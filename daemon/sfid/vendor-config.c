/* The [vendor] section of sfid.conf. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config-key.h"
#include "vendor-config.h"

int vendor_config_set(struct vendor_config *c, const char *name, const char *value, char *err,
		      size_t errlen)
{
	if (strcmp(name, "tool") == 0)
		return config_key_str(&c->tool, "vendor", name, value, true, err, errlen);
	if (strcmp(name, "rsse") == 0)
		return config_key_str(&c->rsse, "vendor", name, value, true, err, errlen);
	if (strcmp(name, "modules") == 0)
		return config_key_str(&c->modules, "vendor", name, value, true, err, errlen);
	if (strcmp(name, "work_dir") == 0)
		return config_key_str(&c->work_dir, "vendor", name, value, true, err, errlen);
	if (strcmp(name, "reader") == 0)
		return config_key_num(&c->reader, "vendor", name, value, 0, 255, err, errlen);
	if (strcmp(name, "certificate_timeout_ms") == 0)
		return config_key_num(&c->cert_timeout_ms, "vendor", name, value,
				      100, 3600000, err, errlen);
	if (strcmp(name, "license_timeout_ms") == 0)
		return config_key_num(&c->license_timeout_ms, "vendor", name, value,
				      100, 3600000, err, errlen);
	if (strcmp(name, "install_timeout_ms") == 0)
		return config_key_num(&c->install_timeout_ms, "vendor", name, value,
				      100, 3600000, err, errlen);
	return 0;
}

int vendor_config_check(struct vendor_config *c, bool used, char *err, size_t errlen)
{
	if (!c->cert_timeout_ms)
		c->cert_timeout_ms = 60000;
	if (!c->license_timeout_ms)
		c->license_timeout_ms = 60000;
	if (!c->install_timeout_ms)
		c->install_timeout_ms = 600000;
	if (!used)
		return 0;
	if (!c->tool || !c->rsse) {
		snprintf(err, errlen, "key '%s' missing in [vendor] (a slot has backend = "
			 "cubeprogrammer)", c->tool ? "rsse" : "tool");
		return -1;
	}
	if (access(c->tool, X_OK) != 0) {
		snprintf(err, errlen, "key 'tool' in [vendor]: %s is not an executable file sfid may "
			 "run", c->tool);
		return -1;
	}
	if (access(c->rsse, R_OK) != 0) {
		snprintf(err, errlen, "key 'rsse' in [vendor]: %s cannot be read", c->rsse);
		return -1;
	}
	if (c->modules && access(c->modules, R_OK) != 0) {
		snprintf(err, errlen, "key 'modules' in [vendor]: %s cannot be read", c->modules);
		return -1;
	}
	return 0;
}

void vendor_config_clear(struct vendor_config *c)
{
	free(c->tool);
	free(c->rsse);
	free(c->modules);
	free(c->work_dir);
	*c = (struct vendor_config){ 0 };
}

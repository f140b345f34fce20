/* The [central] section of sfid.conf. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-key.h"
#include "central-config.h"

int central_config_set(struct central_config *c, const char *name, const char *value,
		       char *err, size_t errlen)
{
	if (strcmp(name, "conninfo") == 0)
		return config_key_str(&c->conninfo, "central", name, value, false, err, errlen);
	if (strcmp(name, "password_file") == 0) {
		if (value[0] != '/') {
			snprintf(err, errlen, "key 'password_file' in [central]: '%s' is not an "
				 "absolute path", value);
			return -1;
		}
		return config_key_str(&c->password_file, "central", name, value,
				      false, err, errlen);
	}
	if (strcmp(name, "password_credential") == 0) {
		if (strchr(value, '/')) {
			snprintf(err, errlen, "key 'password_credential' in [central]: '%s' is a "
				 "credential name, not a path", value);
			return -1;
		}
		return config_key_str(&c->password_credential, "central", name, value,
				      false, err, errlen);
	}
	if (strcmp(name, "batch_records") == 0)
		return config_key_num(&c->batch_records, "central", name, value,
				      1, 10000, err, errlen);
	if (strcmp(name, "batch_kb") == 0)
		return config_key_num(&c->batch_kb, "central", name, value, 1, 65536, err, errlen);
	if (strcmp(name, "interval_ms") == 0)
		return config_key_num(&c->interval_ms, "central", name, value,
				      10, 3600000, err, errlen);
	if (strcmp(name, "retry_max_ms") == 0)
		return config_key_num(&c->retry_max_ms, "central", name, value,
				      100, 3600000, err, errlen);
	if (strcmp(name, "connect_timeout_s") == 0)
		return config_key_num(&c->connect_timeout_s, "central", name, value,
				      1, 600, err, errlen);
	return 0;
}

int central_config_check(struct central_config *c, char *err, size_t errlen)
{
	bool any = c->password_file || c->password_credential;

	if (!c->conninfo && any) {
		snprintf(err, errlen, "[central] has a password but no 'conninfo'");
		return -1;
	}
	if (c->password_file && c->password_credential) {
		snprintf(err, errlen, "[central] takes one of 'password_file' or "
			 "'password_credential', not both");
		return -1;
	}
	if (c->conninfo && strstr(c->conninfo, "password")) {
		snprintf(err, errlen, "key 'conninfo' in [central] holds a password; give it in "
			 "'password_file' or 'password_credential' instead");
		return -1;
	}
	if (!c->batch_records)
		c->batch_records = 500;
	if (!c->batch_kb)
		c->batch_kb = 1024;
	if (!c->interval_ms)
		c->interval_ms = 1000;
	if (!c->retry_max_ms)
		c->retry_max_ms = 30000;
	if (!c->connect_timeout_s)
		c->connect_timeout_s = 10;
	return 0;
}

void central_config_clear(struct central_config *c)
{
	free(c->conninfo);
	free(c->password_file);
	free(c->password_credential);
	memset(c, 0, sizeof(*c));
}

/* The [central] section of sfid.conf: where the shipper sends the audit trail (see
 * sfid.conf(5) and docs/central.md). Parsed apart from the rest so that the section's keys
 * live beside the shipper that uses them. */
#pragma once

#include <stddef.h>

struct central_config {
	char *conninfo;            /* libpq connection string; NULL: nothing is shipped */
	char *password_file;       /* the station role's password, first line */
	char *password_credential; /* or a systemd credential holding it */
	unsigned batch_records;    /* records per push */
	unsigned batch_kb;         /* and at most this many KiB of lines */
	unsigned interval_ms;      /* look for new records this often when idle */
	unsigned retry_max_ms;     /* longest wait between reconnection attempts */
	unsigned connect_timeout_s;
	unsigned line;             /* of the [central] header, for messages */
};

/* Applies one key. Returns 1 when applied, 0 for an unknown key, -1 with a sentence in err
 * for a bad value. */
int central_config_set(struct central_config *c, const char *name, const char *value,
		       char *err, size_t errlen);

/* Fills defaults and checks the section as a whole. Returns 0 or -1 with err. */
int central_config_check(struct central_config *c, char *err, size_t errlen);

void central_config_clear(struct central_config *c);

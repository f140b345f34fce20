/* sfi-audit at the centre: a station's trail read from the central PostgreSQL store and
 * verified with the same verifier as an export file, and the report across stations. */
#pragma once

#include <stdio.h>

#include "audit-verify.h"

/* Verifies the trail the centre holds for station (opts->store_copy is set here). Returns
 * 0 and fills *res, or -errno with a sentence in err (the server could not be read). */
int central_verify(const char *conninfo, const char *password_file, const char *station,
		   const struct verify_options *opts, struct verify_result *res, char *err,
		   size_t errlen);

/* Writes the report across every station (chips per station and day, yield, token
 * counters, chip UIDs installed at more than one station) as text or JSON. Returns 0, or
 * -errno with err. *ret_flagged: how many UIDs were seen at more than one station. */
int central_report(const char *conninfo, const char *password_file, FILE *out, bool json,
		   unsigned *ret_flagged, char *err, size_t errlen);

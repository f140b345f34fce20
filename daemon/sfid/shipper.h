/* The shipper: a thread of its own that follows the committed audit trail (db/audit-cursor.h)
 * and pushes it, in bounded batches, to the central PostgreSQL store (central/central.h).
 * It keeps the last seq the centre acknowledged in the database (table shipped), resumes
 * from there after any outage or restart, retries with backoff, and never holds anything
 * the line waits for: the slots and the license chain do not know it exists. */
#pragma once

#include <stdint.h>

#include "central-config.h"

struct shipper;
struct json_object;

/* Starts the thread. Returns 0 or -errno with a sentence in err (nothing started). The
 * thread opens its own connection to the database at db_path; cfg must stay valid. */
int shipper_new(const struct central_config *cfg, const char *db_path, const char *station,
		struct shipper **ret, char *err, size_t errlen);

/* The state for `sfictl status`: state ("connecting", "shipping", "idle", "unreachable",
 * "refused"), acknowledged and local head seq, backlog, totals, last error. Never waits
 * for the network. */
struct json_object *shipper_status_json(struct shipper *s);

/* Stops the thread (cancels a push in flight: the records are pushed again next time, and
 * the centre skips what it already holds) and frees it. Accepts NULL; returns NULL. */
struct shipper *shipper_free(struct shipper *s);

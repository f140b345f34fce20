/* The line, the daemon's hub: the job, the slots, the halt, the job's counters and the
 * watchers, with the modules main() wires to it (tokens, licensing, recorder, server). One
 * instance, owned by main(); everything here runs on the event loop thread except what is
 * handed to workers. Only main (sfid.c) and the command handlers (commands.c) include this
 * header: the modules below reach the line through the callbacks registered when they are
 * created (scripts/check-includes checks it). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sfid-config.h"
#include "osfi.h"
#include "job.h"
#include "util.h"

struct event_base;
struct json_object;
struct server;
struct workers;
struct db;
struct tokens;
struct licensing;
struct slot;
struct recorder;
struct hooks;
struct db_options;
struct job_line_token;

/* Period of the loop-lag probe (see struct sfid). */
#define LAG_PROBE_MS 50

struct sfid {
	struct event_base *base;
	struct config *cfg;
	struct server *server;
	struct workers *workers;	/* PKCS#11 calls and license issuance */
	struct recorder *recorder;	/* database writes, in order, on their own thread */
	struct shipper *shipper;	/* [central]: the trail to the central store, or NULL */
	struct tokens *tokens;		/* the HSM tokens, the line token first */
	struct licensing *licensing;	/* license chains, their queue, the ledger connection */
	struct vendor *vendor;		/* the vendor backend, when a slot uses it, or NULL */
	struct db *db;			/* the loop's connection: reads only */

	struct slot **slots;
	size_t n_slots;
	struct job *job;
	bool job_loading;	/* a job load waits for a worker */

	/* Set when programming must stop for every slot (database full, token gone, counter
	 * exhausted); the sentence is shown to operators. `start` checks again and clears it. */
	char halt_reason[256];

	bool stopping;
	int64_t started_ms;
	struct hooks *hooks;		/* [hooks] result, or NULL */

	/* How late the loop runs a 50 ms probe timer: a slow call on the loop thread shows
	 * here (status reports it). */
	int64_t lag_expected_ms;
	int64_t lag_max_ms;
	uint64_t lag_over_20ms;
	uint64_t lag_probes;
};

/* Stops every slot from taking new chips and tells operators why (one sentence). */
void sfid_halt(struct sfid *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Failed attempts of a chip (UID in hex) recorded in the database, over every job. */
unsigned sfid_chip_failures(struct sfid *d, const char *uid_hex);
/* Reserves one of the job's remaining chips for a slot that found a chip: 1 granted; 0 not
 * now (chips in progress take the rest of the target, one may fail); -1 the job is complete
 * or no job is loaded. */
int sfid_job_reserve(struct sfid *d);
/* Gives a reservation back (the chip failed or was refused). */
void sfid_job_release(struct sfid *d);
/* A chip was installed (its reservation becomes an installed chip): tells operators when
 * the job reaches its target, and holds the slots waiting for a chip. */
void sfid_job_installed(struct sfid *d);
/* True when the job has a target and reached it. */
bool sfid_job_complete(const struct sfid *d);
/* True when the database records chip uid_hex as installed by the loaded job. */
bool sfid_chip_installed_by_job(struct sfid *d, const char *uid_hex);
/* Counts a refused chip once per job. */
void sfid_job_count_refusal(struct sfid *d, const char *uid_hex);
/* Gives a finished chip's result event to the result hook (data is not taken). */
void sfid_result_hook(struct sfid *d, struct json_object *data);
/* Sends an event to watchers; data's reference is taken. */
void sfid_broadcast(struct sfid *d, const char *event, struct json_object *data);
/* Called when a slot has nothing left in progress (shutdown bookkeeping). */
void sfid_slot_settled(struct sfid *d);

/* ---- wiring (main) ---- */

/* The recorder on the database, its full database halting the line. */
int line_recorder_new(struct sfid *d, const struct db_options *o, char *reason,
		      size_t reason_size);
/* Licensing with the ledger connection (taken, even on failure). */
int line_licensing_new(struct sfid *d, struct db *ledger);
/* The configured slots, wired to the line. */
int line_slots_new(struct sfid *d);

/* ---- the job ---- */

/* The line token a job's image must match, or NULL when sfid runs without one. */
const struct job_line_token *line_token(const struct sfid *d, struct job_line_token *t);
/* Where sfid keeps its copy of a job's file ("sfi", "lic"): next to the database. */
void line_job_copy_path(const struct sfid *d, int64_t id, const char *what, char *out,
			size_t size);
/* Makes j the loaded job (it is recorded): the previous one ends, watchers are told. */
void line_job_install(struct sfid *d, struct job *j);

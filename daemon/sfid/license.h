/* Licenses for chips: the tokens they come from, and the chain that gets every license a
 * chip needs (reuse what the ledger holds, otherwise intent, HSM, record) on a worker
 * thread, one chip at a time. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osfi.h"
#include "sfid.h"

struct hsm;
struct db;
struct slot;

/* Logs in to the PIN source of the configuration (blocking; worker thread or startup). */
int token_login(const struct sfid *d, struct hsm *h);

/* Finds the tokens provisioned for these firmware ids among the tokens of the configured
 * module (every token but those already open, refused or at risk of a PIN lockout), logs in
 * with the configured PIN and keeps those whose firmware id is wanted. Blocking: startup or
 * a worker thread. Found tokens go to out (up to max), refused serials to refused. */
struct token_scan {
	uint8_t want[SFID_TOKENS_MAX][OSFI_ID_LEN];
	size_t n_want;
	char skip[2 * SFID_TOKENS_MAX][64];
	size_t n_skip;
	struct token found[SFID_TOKENS_MAX];
	size_t n_found;
	char refused[SFID_TOKENS_MAX][64];
	size_t n_refused;
};
void token_scan_prepare(const struct sfid *d, const struct job *j, struct token_scan *sc);
void token_scan_run(const struct sfid *d, struct token_scan *sc);
/* On the loop: adopts the found tokens, reconciles their ledgers and resolves the job's
 * counted module licenses to them. Returns false (and a sentence in msg) if a module token
 * is still missing. */
bool token_scan_adopt(struct sfid *d, struct token_scan *sc, struct job *j, char *msg,
		      size_t msg_size);
/* Resolves the job's counted licenses to open tokens; false if one is missing. */
bool job_tokens_resolved(struct sfid *d, struct job *j);

/* Puts a slot in the license queue (the slot is in the license state and its attempt is
 * recorded). */
void license_request(struct sfid *d, struct slot *s);
/* Takes a slot out of the license queue (its chip went away). */
void license_cancel(struct sfid *d, struct slot *s);

/* A chip that reports the job's image installed: the job's counted licenses the ledger
 * (db) holds for it still open (issued, or not installed after a failure or an interrupted
 * attempt) go to set, taken as the ones it installed. True when there is at least one, or
 * when the job is uncounted and the chip reached FINALIZE on this line without an attempt
 * recorded ok. */
bool license_adopt(struct db *db, const struct job *j, const char *uid_hex,
		   struct license_set *set);

/* Checks whether a halted line may run again: every token of the job answers (re-opened if
 * it was re-inserted) and has licenses left, the ledger is reconciled. done(d, ok, why) runs
 * on the loop. */
int line_recheck(struct sfid *d, void (*done)(struct sfid *d, bool ok, const char *why,
					      void *arg), void *arg);

/* The token's granted total (licenses ever granted), -1 if it does not state one. Blocks
 * on the token: workers and startup only. */
int64_t token_granted(struct hsm *h);

/* The HSM tokens licenses come from: the line token (index 0, the configured one, whose
 * firmware id and chip CA key the line uses), the tokens of its pool ([hsm] pool: more
 * tokens provisioned for the same firmware and chip CA, each with its own counter), and the
 * tokens provisioned for modules, found by firmware id when a job needs them. Tokens that
 * hold the same firmware id are a pool: a license for that firmware comes from any of them. Serials whose login failed are never tried again by
 * this process. Every token's data is kept here, once. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osfi.h"
#include "sfi-serial.h"

struct hsm;
struct db;
struct job;

#define TOKENS_MAX 16

struct token {
	struct hsm *h;
	sfi_serial serial;
	char label[64];
	uint8_t firmware_id[OSFI_ID_LEN];
	char firmware_id_hex[2 * OSFI_ID_LEN + 1];
};

struct tokens_params {
	const char *module;		/* the PKCS#11 module */
	const char *pin_file;		/* the PIN source: a file, or else a credential */
	const char *pin_credential;
};

struct tokens;

/* An empty set (no token open); p's strings outlive it. Returns 0 or -ENOMEM. */
int tokens_new(const struct tokens_params *p, struct tokens **ret);
/* Closes every token. Accepts NULL; returns NULL. */
struct tokens *tokens_free(struct tokens *t);

/* Opens and logs in to the line token (spec: a label, or "serial:S"), reads its firmware id
 * and chip CA key. Blocking (startup). Returns 0 or a negative HSM error, logged. */
int tokens_open_line(struct tokens *t, const char *spec);

/* Opens the tokens of the line token's pool (specs as for the line token), after it; each
 * must hold the line token's firmware id and chip CA key. Blocking (startup). Returns 0 or
 * a negative error, logged. */
int tokens_open_pool(struct tokens *t, const char *const *specs, size_t n);
/* How many open tokens hold token i's firmware id (itself included); 0 past the end. */
size_t tokens_pool_size(const struct tokens *t, size_t i);

/* The open tokens (t may be NULL: none); tokens_at() is NULL past the end. */
size_t tokens_count(const struct tokens *t);
const struct token *tokens_at(const struct tokens *t, size_t i);
/* The line token's handle and chip CA key (OSFI_PUBKEY_LEN bytes); NULL when not open. */
struct hsm *tokens_line(const struct tokens *t);
const uint8_t *tokens_ca_pub(const struct tokens *t);

/* Logs in to h with the configured PIN source (blocking: a worker thread or startup). */
int tokens_login(const struct tokens *t, struct hsm *h);
/* The token's granted total (licenses ever granted), -1 if it does not state one. Blocks
 * on the token: workers and startup only. */
int64_t token_granted(struct hsm *h);
/* Reconciles the ledger with the counter read from token h (serial) and logs each
 * difference it records, one line each, the same wherever it runs: startup, the module
 * token search, the license chain, the recheck. Returns db_reconcile_granted()'s result.
 * Blocks on the token: workers and startup only. */
int token_reconcile(struct db *ledger, struct hsm *h, const char *serial, uint32_t count);
/* The same with the granted total read already (token_granted()): touches only the ledger. */
int token_reconcile_granted(struct db *ledger, const char *serial, uint32_t count,
			    int64_t granted);

/* Resolves the job's counted licenses to open tokens; false if one is missing. */
bool tokens_resolve_job(const struct tokens *t, struct job *j);

/* Finds the tokens provisioned for a job's module firmware ids among the module's tokens
 * (every token but those open, refused or at risk of a PIN lockout), logs in and keeps those
 * whose firmware id is wanted. prepare and adopt run on the loop, run on a worker (it
 * blocks) with the ledger connection, which reconciles each token found. */
struct token_scan {
	uint8_t want[TOKENS_MAX][OSFI_ID_LEN];
	size_t n_want;
	sfi_serial skip[2 * TOKENS_MAX];
	size_t n_skip;
	struct token found[TOKENS_MAX];
	size_t n_found;
	sfi_serial refused[TOKENS_MAX];
	size_t n_refused;
};
void token_scan_prepare(const struct tokens *t, const struct job *j, struct token_scan *sc);
void token_scan_run(const struct tokens *t, struct db *ledger, struct token_scan *sc);
/* Adopts the found tokens and resolves the job's counted licenses to them. Returns false
 * (and a sentence in reason) if a module token is still missing. */
bool token_scan_adopt(struct tokens *t, struct token_scan *sc, struct job *j, char *reason,
		      size_t reason_size);

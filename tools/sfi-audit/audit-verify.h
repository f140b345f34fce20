/* Offline verification and summary of a JSON Lines audit export (see docs/database.md). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

enum verify_status {
	VERIFY_OK,         /* chain, signatures and arithmetic hold, everything signed */
	VERIFY_BAD,        /* a record is wrong: see bad_seq and message */
	VERIFY_INCOMPLETE, /* nothing wrong, but warnings (unsigned tail, open licenses...) */
	_VERIFY_STATUS_MAX,
};

#define VERIFY_WARNINGS_MAX 32

struct verify_result {
	enum verify_status status;
	uint64_t bad_seq;         /* first bad record (VERIFY_BAD), 0 if the export itself */
	char message[512];        /* what is wrong with it */
	uint64_t first_seq, last_seq, records, checkpoints;
	uint64_t covered_seq;     /* records up to here are covered by a valid signature */
	uint64_t spends, installed, not_installed, unconfirmed;
	size_t n_warnings;
	char warnings[VERIFY_WARNINGS_MAX][256];
	size_t warnings_dropped;
};

/* Verifies an export read from in against the audit public key (NULL: signatures are
 * reported bad). Returns 0 and fills *res (whatever the verdict), or -errno if in cannot be
 * read. */
int audit_verify_stream(FILE *in, EVP_PKEY *key, struct verify_result *res);

/* Writes a summary of an export (chips, failures by cause, licenses, per slot and job) as
 * text or JSON. Returns 0, -EINVAL on a malformed export (message in errbuf), or -errno. */
int audit_report_stream(FILE *in, FILE *out, bool json, char *errbuf, size_t errlen);

/* Offline verification and summary of a JSON Lines audit export (see docs/database.md). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "audit-format.h"

enum verify_status {
	VERIFY_OK,           /* chain, signatures, end and arithmetic hold; nothing open */
	VERIFY_BAD,          /* tampered: a record or line is wrong, see where and message */
	VERIFY_MISMATCH,     /* the trail holds, but a token's counter is not what it proves */
	VERIFY_INCOMPLETE,   /* nothing wrong, but something is open (reasons in warnings) */
	VERIFY_UNVERIFIABLE, /* nothing found wrong, but parts are not signed by a known key */
	_VERIFY_STATUS_MAX,
};

#define VERIFY_WARNINGS_MAX 32
#define VERIFY_TOKENS_MAX 64

/* One audit public key of the OEM's key ring. */
struct verify_key {
	EVP_PKEY *key;
	uint8_t id[AUDIT_HASH_SIZE]; /* SHA-256 of its DER SubjectPublicKeyInfo */
};

/* A counter the OEM reads on its own token, to compare with what the trail proves. */
struct verify_expect {
	char serial[72];
	uint64_t counter;
};

struct verify_options {
	const struct verify_key *keys;
	size_t n_keys;
	const struct verify_expect *expect;
	size_t n_expect;
	/* The trail is a store's copy (the central server's), not an export: one stream with
	 * its metadata and records and no end line. Nothing signed marks its end, so the
	 * records after the last signed checkpoint are named in uncovered_from. */
	bool store_copy;
};

/* What the trail proves about one token. */
struct verify_token {
	char serial[72];
	bool known;              /* the trail fixes its counter */
	uint64_t counter;        /* where the trail leaves it */
	bool has_start;
	uint64_t start;          /* the first counter the trail states */
	uint64_t spends;         /* counts spent and recorded (issue, unconfirmed) */
	uint64_t unaccounted;    /* counts spent outside sfid, found by reconciliation */
	uint64_t added;          /* counts added (refill), found by reconciliation */
	bool reserved;           /* a reservation is open at the end of the trail */
	int64_t export_counter;  /* read when the last export was written; -1 unknown */
};

struct verify_result {
	enum verify_status status;
	uint64_t bad_seq;         /* first bad record (VERIFY_BAD), 0 if a line that is none */
	char where[96];           /* what is bad, e.g. "record 57" or "export 2, end line" */
	char message[512];        /* what is wrong with it */
	char unverifiable[256];   /* VERIFY_UNVERIFIABLE: why (the first reason) */
	uint64_t first_seq, last_seq, records, checkpoints;
	size_t exports;           /* exports read */
	size_t signed_ends;       /* their end lines signed by a key of the ring */
	uint64_t covered_seq;     /* records up to here are covered by a valid signature */
	uint64_t uncovered_from;  /* store_copy: records from here to last_seq follow the last
				   * signed checkpoint (0: none) */
	uint64_t spends, installed, not_installed, unconfirmed;
	char station[128];        /* of the (last) export; "" if it names none */
	char version[64];
	int format;
	struct verify_token tokens[VERIFY_TOKENS_MAX];
	size_t n_tokens;
	size_t n_warnings;        /* why the trail is incomplete, and what it lists */
	char warnings[VERIFY_WARNINGS_MAX][256];
	size_t warnings_dropped;
	size_t n_notes;           /* counter changes sfid did not make (always listed) */
	char notes[VERIFY_WARNINGS_MAX][256];
	size_t n_key_changes;     /* audit key changes the trail walks across */
	char key_changes[8][160];
};

/* Reads an audit public key (PEM) into key. Returns 0, or -errno / -EINVAL (not a P-256
 * public key). */
int verify_key_load(const char *path, struct verify_key *key);

/* Verifies n consecutive exports, read from ins in order, as one trail. Returns 0 and fills
 * *res (whatever the verdict), or -errno if an input cannot be read. */
int audit_verify_streams(FILE *const *ins, size_t n, const struct verify_options *opts,
			 struct verify_result *res);

/* One export and one key (NULL: no key, signatures are not verifiable). */
int audit_verify_stream(FILE *in, EVP_PKEY *key, struct verify_result *res);

enum report_format {
	REPORT_TEXT,
	REPORT_JSON,
	REPORT_HTML, /* one self-contained page: charts in inline SVG, no script, no network */
	_REPORT_FORMAT_MAX,
};

/* Writes a summary of an export (chips, failures by cause, licenses, per slot and job) as
 * text, JSON or HTML; the HTML page also shows verdict (the result of verifying the same
 * export; NULL: "not verified") and each token's counter arithmetic. Returns 0, -EINVAL on
 * a malformed export (message in reason), or -errno. */
int audit_report_stream(FILE *in, FILE *out, enum report_format format,
			const struct verify_result *verdict, char *reason, size_t reason_size);

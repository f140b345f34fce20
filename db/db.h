/* sfid audit database: jobs, attempts, the license ledger, chips and the hash-chained,
 * signed audit trail, in one SQLite file (WAL, synchronous=FULL).
 *
 * Every write function runs one transaction that changes its rows AND appends the matching
 * audit record; when it returns 0 the change is on disk (fsynced). When it returns a
 * negative errno nothing of it is stored and db_last_error() holds one operator sentence.
 * -ENOSPC means "database full": the caller must stop programming chips it cannot record.
 *
 * Threads: a struct db is one SQLite connection and must be used by one thread at a time
 * (it may be handed from thread to thread). Open one per thread to write concurrently;
 * writers then serialize on SQLite's lock, waiting up to the busy timeout. There is no
 * global state.
 *
 * The order that makes a crash harmless, per license (see docs/database.md):
 *   db_ledger_find_reusable()  -> found: db_ledger_reuse(), send it, skip the HSM
 *   db_ledger_reserve()        durable before the HSM counter moves
 *   (HSM decrements and issues; on refusal before the decrement: db_ledger_cancel())
 *   db_ledger_issue()          durable before the license is sent to the chip
 *   db_ledger_installed() or db_ledger_not_installed()
 * and at startup, for every token, db_reconcile() with the counter read from the token.
 * Reserve/decrement/issue must be serialized per token: at most one open reservation per
 * token exists, a second db_ledger_reserve() for the same token fails with -EBUSY. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DB_HASH_SIZE 32
#define DB_SIG_SIZE 64
#define DB_CHIP_UID_HEX 24	/* 96-bit chip UID as lowercase hex */
#define DB_ID_HEX 64		/* image id, firmware id, digests: SHA-256 as lowercase hex */
#define DB_TOKEN_SERIAL_MAX 64

struct db;

/* Signs checkpoints with the token's audit key, so db/ needs no PKCS#11. */
struct db_signer {
	/* Signs a SHA-256 digest: ECDSA P-256, raw r‖s into ret_sig. Returns 0 or -errno.
	 * Called inside a write transaction; keep it short. */
	int (*sign)(void *userdata, const uint8_t digest[DB_HASH_SIZE],
		    uint8_t ret_sig[DB_SIG_SIZE]);
	void *userdata;
	/* SHA-256 of the public key's DER SubjectPublicKeyInfo, names the key in records. */
	uint8_t key_id[DB_HASH_SIZE];
};

struct db_options {
	const struct db_signer *signer; /* NULL: no checkpoints are written */
	unsigned checkpoint_records;    /* checkpoint after this many records; 0: 256 */
	unsigned checkpoint_seconds;    /* or when the oldest unsigned record is this old; 0: 300 */
	unsigned busy_timeout_ms;       /* wait for another writer; 0: 5000 */
	uint64_t max_size_bytes;        /* refuse to grow the file past this; 0: no limit */
};

/* Opens (creating if absent) the database at path and brings its schema up to date. A
 * database written by a newer sfid, or a migration that fails, leaves the file untouched
 * and returns -EPROTONOSUPPORT / the migration's error. On failure a sentence is written to
 * errbuf. Returns 0 and sets *ret_db. */
int db_open(const char *path, const struct db_options *opts, struct db **ret_db, char *errbuf,
	    size_t errlen);

/* The connections a process keeps to one database, one per thread and purpose (see
 * docs/database.md, "Threads"). Each is an ordinary struct db; the role sets what it may do:
 *   DB_ROLE_READER    the event loop's: queries only. Writes are refused (-EROFS), so it
 *                     never takes the write lock a slot's record waits for.
 *   DB_ROLE_LEDGER    the license chain's: reserve, issue, reuse, cancel, reconcile.
 *   DB_ROLE_RECORDER  the recorder thread's: attempts, chips, license outcomes, jobs.
 *   DB_ROLE_FOLLOWER  a follower of the trail (the central shipper): reads with the cursor
 *                     (audit-cursor.h) and writes only its acknowledged position; it signs
 *                     nothing and gives up on a busy lock after 200 ms (unless opts sets
 *                     busy_timeout_ms) rather than hold a writer up. */
enum db_role {
	DB_ROLE_READER,
	DB_ROLE_LEDGER,
	DB_ROLE_RECORDER,
	DB_ROLE_FOLLOWER,
	_DB_ROLE_MAX,
};

/* Opens a connection for role: db_open() with the role's settings. opts may be NULL. */
int db_open_role(const char *path, enum db_role role, const struct db_options *opts,
		 struct db **ret_db, char *errbuf, size_t errlen);

/* "reader", "ledger", "recorder", "follower"; NULL out of range. */
const char *db_role_to_string(enum db_role role);

/* Closes the connection; accepts NULL; returns NULL. */
struct db *db_close(struct db *db);

/* The sentence describing the last failure on this connection ("" if none). */
const char *db_last_error(const struct db *db);

/* The schema version this build writes (PRAGMA user_version). */
int db_schema_version(void);

/* ---- jobs ---- */

struct db_job {
	const char *image_path;
	const char *image_id;     /* DB_ID_HEX: SHA-256 of the image header */
	const char *image_digest; /* DB_ID_HEX: SHA-256 of the whole .sfi file */
	const char *module_file;  /* module license information file, or NULL */
	uint32_t target_count;
	uint32_t loaded_uid;
	const char *loaded_user;
	const char *global_license_file; /* global (uncounted) license file, or NULL */
	const char *station;      /* the station name (sfid.conf), or NULL */
	const char *sfid_version; /* the sfid that loaded it, or NULL */
	/* A plain job: firmware written with the bootloader's memory commands, no OSFI, no
	 * license. image_id and image_digest are then both the SHA-256 of the loaded
	 * firmware's bytes; firmware names its files (FILE or FILE@ADDR, one per line). */
	bool plain;
	const char *firmware;
	bool go;                  /* plain: start the chip at go_address when written */
	uint32_t go_address;
	/* A vendor job: an image for ST's own SFI that sfid does not read, installed by
	 * STM32CubeProgrammer; image_id and image_digest are both its SHA-256. */
	bool vendor;
};

/* Records a newly loaded job. Returns 0 and sets *ret_job_id. */
int db_job_create(struct db *db, const struct db_job *job, int64_t *ret_job_id);

/* Marks the job ended and writes a checkpoint (if a signer is set). Returns 0 or -errno;
 * -ENOKEY if the job end is stored but its checkpoint could not be signed. */
int db_job_end(struct db *db, int64_t job_id);

/* Records who started (or started again) the job's slots: uid and user name from the
 * control connection, and the slots started (n_slots names). */
int db_job_start(struct db *db, int64_t job_id, uint32_t uid, const char *user,
		 const char *const *slots, size_t n_slots);

/* ---- attempts (one per chip placed in a slot) ---- */

enum db_result {
	DB_RESULT_OK,
	DB_RESULT_FAILED,
	_DB_RESULT_MAX,
};

/* Starts an attempt on a slot. Returns 0 and sets *ret_attempt_id. */
int db_attempt_begin(struct db *db, int64_t job_id, const char *slot, int64_t *ret_attempt_id);

/* Records the step an attempt has reached (call on state changes, not on progress);
 * chip_uid (NULL: unchanged) once the chip is identified. */
int db_attempt_step(struct db *db, int64_t attempt_id, const char *step, const char *chip_uid,
		    uint64_t bytes_sent);

/* What sfid writes in attempts.error_code for a failed attempt: the kind of failure, which
 * the statistics count apart (a yield counts only DB_FAILURE_TOUCHED). */
enum db_failure_kind {
	DB_FAILURE_TOUCHED = 0,	  /* failed once sfid had begun to license or write the chip */
	DB_FAILURE_UNTOUCHED = 1, /* refused before anything was written, no license spent */
	DB_FAILURE_HALTED = 2,	  /* stopped by a line halt before anything was written */
	DB_FAILURE_ALREADY = 3,	  /* holds this job's image already (installed earlier) */
};

/* Ends an attempt. error_text may be NULL when result is DB_RESULT_OK. */
int db_attempt_end(struct db *db, int64_t attempt_id, enum db_result result, int error_code,
		   const char *error_text, uint64_t bytes_sent);

/* The same, and stores the chip's UID when it is known (NULL: unchanged): a chip refused
 * before any step recorded it (already programmed, too many failures) keeps its UID. */
int db_attempt_finish(struct db *db, int64_t attempt_id, enum db_result result, int error_code,
		      const char *error_text, uint64_t bytes_sent, const char *chip_uid);

/* Closes what a stopped sfid left open (call at start-up, before any slot runs): every
 * license still `issued` to an attempt that is still running becomes not installed with
 * reason (the chip reuses it, or it is marked installed when the chip shows it holds the
 * image), then every running attempt ends failed with reason. Returns 0 and the counts. */
int db_attempts_interrupted(struct db *db, const char *reason, unsigned *ret_attempts,
			    unsigned *ret_licenses);

/* Creates or updates a chip: final_state e.g. "programmed"/"failed", product_state as
 * read from the chip (may be NULL). */
int db_chip_update(struct db *db, const char *chip_uid, const char *final_state,
		   const char *product_state);

/* One run of a vendor tool for an attempt (the vendor backend): the step it served, its
 * command line (never a secret), its exit status (-1: it did not exit by itself: killed at
 * its timeout or at a stop, or it could not be started), the one sentence sfid made of it,
 * and its output verbatim (at most DB_TOOL_LOG_MAX bytes, cut at the end). */
#define DB_TOOL_LOG_MAX 65536
struct db_tool_run {
	int64_t attempt_id;
	const char *step;
	const char *command;
	int exit_status;
	const char *outcome;
	const char *log;
	size_t log_len;
	int64_t started_ms, ended_ms;
};
/* Stores the run and appends a "tool.run" record (with the SHA-256 of the log). */
int db_tool_run(struct db *db, const struct db_tool_run *run, int64_t *ret_id);

/* ---- serial numbers ---- */

/* The job's value for one index, as lowercase hex bytes into hex (size 2 * 64 + 1):
 * returns 0, or -ENOSPC when the job has no value at that index (a list ran out). */
typedef int (*db_serial_value_fn)(void *arg, int64_t idx, char *hex, size_t size);

/* The chip's value in series (the job's counter or list spec): the row it was given before
 * (any state: it becomes an intent again for job_id, *ret_again true), or the next index
 * (one past the series' highest, from 0), recorded as an intent with a "serial.intent"
 * record before it returns. The value's hex goes to hex (size 2 * 64 + 1). -ENOSPC:
 * value_of has none left (nothing recorded). */
int db_serial_take(struct db *db, const char *series, int64_t job_id, const char *chip_uid,
		   db_serial_value_fn value_of, void *arg, int64_t *ret_idx, char *hex,
		   size_t hex_size, bool *ret_again);
/* The outcome of the write: written (read back equal) or failed, with a reason; a
 * "serial.result" record. -ENOENT: no open intent at that index. */
int db_serial_result(struct db *db, const char *series, int64_t idx, bool written,
		     const char *reason);
/* Startup: every intent left without a result (sfid stopped between the intent and the
 * outcome) becomes unconfirmed, one "serial.result" record each; the chip gets the same
 * value again if it comes back. Returns how many, or a negative errno. */
int db_serial_resolve(struct db *db);
/* Whether value (lowercase hex) was given to a chip in a series other than series (any
 * state): 1 with that series and chip UID (sizes 160 and 25 at least), 0 not, or a
 * negative errno. A read: any connection. */
int db_serial_value_given(struct db *db, const char *value, const char *series,
			  char *other_series, size_t series_size, char *chip_uid, size_t uid_size);
/* Whether job_id gave any chip a serial number (any state): 1, 0, or a negative errno. A
 * read: any connection. */
int db_serial_job_has(struct db *db, int64_t job_id);

/* ---- license ledger ---- */

enum db_license_state {
	DB_LICENSE_RESERVED,             /* intent recorded, counter may be about to move */
	DB_LICENSE_ISSUED,               /* counter moved, license stored, not yet installed */
	DB_LICENSE_INSTALLED,            /* the chip accepted it and the install succeeded */
	DB_LICENSE_NOT_INSTALLED,        /* issued, but the install failed (reusable) */
	DB_LICENSE_RESERVED_UNCONFIRMED, /* found by reconcile: counter moved, no license stored */
	DB_LICENSE_VOID,                 /* the counter never moved for this reservation */
	_DB_LICENSE_STATE_MAX,
};

const char *db_license_state_to_string(enum db_license_state s);

struct db_reservation {
	int64_t job_id;
	int64_t attempt_id;       /* the attempt spending it, or 0 */
	const char *chip_uid;     /* DB_CHIP_UID_HEX */
	const char *token_serial; /* the token whose counter pays */
	const char *firmware_id;  /* DB_ID_HEX: image id (target 0) or module firmware id */
	uint32_t target;          /* 0: the image; n: module n */
	uint64_t counter_before;  /* the token's counter now, before the decrement */
};

/* Records the intent to spend one count. Durable before returning: call it BEFORE asking
 * the HSM to decrement. Returns 0 and sets *ret_license_id; -EBUSY if the token already has
 * an open reservation. */
int db_ledger_reserve(struct db *db, const struct db_reservation *res, int64_t *ret_license_id);

/* The HSM refused before its counter moved: the reservation becomes void. */
int db_ledger_cancel(struct db *db, int64_t license_id, const char *reason);

/* Stores the issued license (the record as sent to the chip). Durable before returning:
 * call it BEFORE sending the license. counter_after must be counter_before - 1. */
int db_ledger_issue(struct db *db, int64_t license_id, uint64_t counter_after,
		    const uint8_t *record, size_t record_len);

/* The chip installed the image with this license (from issued or not-installed). */
int db_ledger_installed(struct db *db, int64_t license_id);

/* The install with this license failed; reason is required (it stays reusable). */
int db_ledger_not_installed(struct db *db, int64_t license_id, const char *reason);

struct db_license {
	int64_t id;
	int64_t job_id;
	char chip_uid[DB_CHIP_UID_HEX + 1];
	char token_serial[DB_TOKEN_SERIAL_MAX + 1];
	char firmware_id[DB_ID_HEX + 1];
	uint32_t target;
	uint64_t counter_before;
	uint64_t counter_after;
	enum db_license_state state;
	uint8_t digest[DB_HASH_SIZE]; /* SHA-256 of record */
	uint8_t *record;
	size_t record_len;
};

struct db_license *db_license_free(struct db_license *l);

/* Finds a stored license issued to this chip for this firmware id and target (issued,
 * not-installed or installed). Returns 0 and sets *ret (free with db_license_free()),
 * -ENOENT if there is none. */
int db_ledger_find_reusable(struct db *db, const char *chip_uid, const char *firmware_id,
			    uint32_t target, struct db_license **ret);

/* Records that attempt_id re-sends an already issued license instead of spending a count. */
int db_ledger_reuse(struct db *db, int64_t license_id, int64_t attempt_id);

enum db_diff_kind {
	DB_DIFF_RESERVED_UNCONFIRMED, /* counter moved for a reservation, no license stored */
	DB_DIFF_RESERVATION_VOID,     /* a reservation whose counter never moved (harmless) */
	DB_DIFF_UNRECORDED_SPENDS,    /* token counter lower than the ledger expects */
	DB_DIFF_COUNTER_HIGHER,       /* token counter higher: impossible, or another token */
	DB_DIFF_REFILL,               /* counter and granted total up by the same: a refill */
	_DB_DIFF_KIND_MAX,
};

const char *db_diff_kind_to_string(enum db_diff_kind k);

struct db_diff {
	enum db_diff_kind kind;
	int64_t license_id;       /* reservation concerned, or 0 */
	char chip_uid[DB_CHIP_UID_HEX + 1];
	char token_serial[DB_TOKEN_SERIAL_MAX + 1];
	uint64_t counter_before;  /* of the reservation */
	uint64_t expected;        /* counter the ledger expects on the token */
	uint64_t actual;          /* counter read from the token */
};

/* Compares the token's current counter with the ledger, settles an open reservation
 * (RESERVED_UNCONFIRMED or VOID), appends a "reconcile" audit record and returns every
 * difference in *ret_diffs (free()) / *ret_n (0: ledger and token agree). */
int db_reconcile(struct db *db, const char *token_serial, uint64_t token_counter,
		 struct db_diff **ret_diffs, size_t *ret_n);

/* The same with the token's granted total (licenses ever granted: provisioned + refills;
 * -1 when the token does not state it). The ledger's expectation is the counter it last
 * knew for the token; a database that never saw the token expects the granted total, so a
 * token that spent elsewhere shows as unrecorded spends even with a new database. A counter
 * that went up together with the granted total by the same amount is a refill. Each
 * unrecorded spend, refill or higher counter is also kept in counter_changes. */
int db_reconcile_granted(struct db *db, const char *token_serial, uint64_t token_counter,
			 int64_t granted, struct db_diff **ret_diffs, size_t *ret_n);

/* The counter the ledger last knew for the token (its last spend or reconciliation).
 * Returns 0, or -ENOENT if the ledger has none. */
int db_token_counter(struct db *db, const char *token_serial, uint64_t *ret_counter);

/* A change of a token's counter that sfid did not make, as a reconciliation found it. */
struct db_counter_change {
	int64_t id;
	char token_serial[DB_TOKEN_SERIAL_MAX + 1];
	enum db_diff_kind kind; /* UNRECORDED_SPENDS, REFILL or COUNTER_HIGHER */
	uint64_t expected;      /* the counter the ledger expected */
	uint64_t actual;        /* the counter the token had */
	int64_t granted;        /* the token's granted total then, -1 unknown */
	int64_t found_ms;
	uint64_t audit_seq;     /* the reconcile record that states it */
};

/* The newest counter changes (of one token, or all with NULL), newest first, at most
 * limit (0: 100). Returns 0 and sets *ret (free()) and *ret_n. */
int db_counter_changes(struct db *db, const char *token_serial, unsigned limit,
		       struct db_counter_change **ret, size_t *ret_n);

/* ---- audit trail ---- */

/* Writes a signed checkpoint now if some record is not yet covered by one. Returns 0,
 * -ENOKEY without a signer, or the signer's error. */
int db_checkpoint(struct db *db);

/* The audit key changed (a new generation on the token): appends an `audit.key` record
 * naming the key of the trail so far (old's) and the connection's signer's, and a
 * checkpoint signed with old covering it, so a verifier holding both keys walks across.
 * From there on the connection's signer signs. Returns 0 or -errno. */
int db_audit_key_change(struct db *db, const struct db_signer *old);

/* The key id the last checkpoint names. Returns 0, or -ENOENT without a checkpoint. */
int db_audit_last_key(struct db *db, uint8_t ret_key_id[DB_HASH_SIZE]);

/* Recomputes the whole hash chain stored in the database. Returns 0, or -EBADMSG and sets
 * *ret_bad_seq to the first record that does not verify. */
int db_audit_verify(struct db *db, uint64_t *ret_bad_seq);

/* Number of audit records and the seq of the last one covered by a checkpoint. */
int db_audit_stats(struct db *db, uint64_t *ret_records, uint64_t *ret_last_checkpoint_seq);

/* A range of the trail: everything (all zero), one job, or a time window [from, to) in
 * milliseconds since the epoch. */
struct db_range {
	int64_t job_id;
	int64_t from_ms;
	int64_t to_ms;
};

/* A token as an export names it: its serial and its counter read when the export is
 * written (-1: it could not be read). */
struct db_export_token {
	const char *serial;
	int64_t counter;
};

/* Who writes an export: the station name, the sfid version and the tokens of the line. */
struct db_export_info {
	const char *station;
	const char *version;
	const struct db_export_token *tokens;
	size_t n_tokens; /* at most 32 */
};

/* Writes a JSON Lines export (format 2: a metadata line naming info, every audit record in
 * the range and up to the checkpoint that covers it, then an end line with the digest of
 * every byte before it, signed with the audit key when a signer is set; a signer that fails
 * leaves the end unsigned) to out. info may be NULL (no station, version or tokens).
 * Returns 0 or -errno. */
int db_export_jsonl_info(struct db *db, const struct db_range *range,
			 const struct db_export_info *info, FILE *out);
/* The same with info NULL. */
int db_export_jsonl(struct db *db, const struct db_range *range, FILE *out);

/* Writes a CSV export (RFC 4180, one row per attempt and license) to out. */
int db_export_csv(struct db *db, const struct db_range *range, FILE *out);

/* ---- queries ----
 * Read-only: they change nothing in the file and append no audit record, so they may run
 * at any time (in WAL mode they see the last committed state and do not wait for a
 * writer). Each returns 0 or a negative errno with db_last_error() set. */

#define DB_TEXT_MAX 4096     /* longest free text (path, user, message) a write accepts */
#define DB_SLOT_MAX 64       /* slot names longer than this are cut in query results */
#define DB_STEP_MAX 31       /* step names likewise */
#define DB_ERROR_TEXT_MAX 299 /* error texts likewise (cut at a UTF-8 character boundary) */

enum db_attempt_result {
	DB_ATTEMPT_RUNNING,
	DB_ATTEMPT_OK,
	DB_ATTEMPT_FAILED,
	_DB_ATTEMPT_RESULT_MAX,
};

/* "running", "ok", "failed"; NULL out of range. */
const char *db_attempt_result_to_string(enum db_attempt_result r);

struct db_attempt_row {
	int64_t id;
	int64_t job_id;
	char slot[DB_SLOT_MAX + 1];
	char chip_uid[DB_CHIP_UID_HEX + 1]; /* "" until the chip was identified */
	char step[DB_STEP_MAX + 1];         /* the last step reached */
	enum db_attempt_result result;
	int error_code;
	char error_text[DB_ERROR_TEXT_MAX + 1]; /* "" if none */
	int64_t started_ms;
	int64_t ended_ms;    /* 0 while running */
	uint64_t bytes_sent;
	bool license_reused; /* the attempt re-sent an already issued license */
};

struct db_history_filter {
	int64_t job_id;       /* 0: every job */
	const char *slot;     /* NULL: every slot */
	const char *chip_uid; /* NULL: every chip; else DB_CHIP_UID_HEX lowercase hex */
	bool only_failed;
	bool include_running; /* also attempts not ended yet (listed first) */
	unsigned limit;       /* 0: 100; at most 10000 */
};

/* The newest attempts matching f (NULL: every job, slot and chip), newest first: by end
 * time, running attempts before all ended ones, ties by descending id. Returns 0 and sets
 * *ret_rows (free(); NULL when *ret_n is 0) and *ret_n. */
int db_history(struct db *db, const struct db_history_filter *f, struct db_attempt_row **ret_rows,
	       size_t *ret_n);

struct db_slot_stats {
	char slot[DB_SLOT_MAX + 1];
	uint64_t ok;
	uint64_t failed;
	uint64_t bytes;      /* bytes_sent summed over its ended attempts */
	int64_t duration_ms; /* ended_ms - started_ms summed over its ended attempts */
};

/* Failed attempts sharing one step reached and one error text. */
struct db_failure_cause {
	char step[DB_STEP_MAX + 1];             /* attempts.step: the step reached */
	char error_text[DB_ERROR_TEXT_MAX + 1]; /* as stored: "<step>: <cause>" */
	char cause[DB_ERROR_TEXT_MAX + 1];      /* error_text without its "<word>: " prefix */
	uint64_t count;
};

struct db_stats {
	uint64_t ok; /* totals over every slot */
	uint64_t failed;   /* DB_FAILURE_TOUCHED (and any other error code) */
	uint64_t refused;  /* DB_FAILURE_UNTOUCHED, once per chip */
	uint64_t halted;   /* DB_FAILURE_HALTED attempts */
	uint64_t already;  /* DB_FAILURE_ALREADY, once per chip: not failures */
	uint64_t bytes;
	int64_t duration_ms;
	int64_t ok_duration_ms; /* summed over the attempts that ended ok */
	int64_t first_ms, last_ms; /* first start and last end of the attempts counted; 0: none */
	struct db_slot_stats *slots; /* one per slot with an ended attempt, by slot name */
	size_t n_slots;
	struct db_failure_cause *failures; /* most frequent first, ties by step and text */
	size_t n_failures;
};

/* Counts of the ended attempts of one job (0: of every job), from one consistent snapshot.
 * Returns 0 and sets *ret (free with db_stats_free()). */
int db_stats(struct db *db, int64_t job_id, struct db_stats **ret);
/* Same over the attempts of range->job_id (0: every job) that started in
 * [range->from_ms, range->to_ms) (0: no bound). */
int db_stats_range(struct db *db, const struct db_range *range, struct db_stats **ret);

/* Frees s (accepts NULL); returns NULL. */
struct db_stats *db_stats_free(struct db_stats *s);

/* Number of failed attempts of a chip over every job (across restarts). */
int db_chip_failures(struct db *db, const char *chip_uid, unsigned *ret_n);

struct db_job_row {
	int64_t id;
	char image_path[DB_TEXT_MAX + 1];
	char image_id[DB_ID_HEX + 1];
	char image_digest[DB_ID_HEX + 1];
	char module_file[DB_TEXT_MAX + 1];         /* "" if none */
	char global_license_file[DB_TEXT_MAX + 1]; /* "" if none */
	uint32_t target_count;
	uint32_t loaded_uid;
	char loaded_user[DB_TEXT_MAX + 1];
	int64_t created_ms;
	uint64_t installed; /* its attempts that ended ok */
	uint64_t failed;    /* its attempts that ended failed (DB_FAILURE_TOUCHED) */
	uint64_t refused;   /* chips refused untouched (DB_FAILURE_UNTOUCHED), once per chip */
	uint64_t halted;    /* attempts stopped by a line halt */
	bool plain;         /* a plain job (struct db_job) */
	bool vendor;        /* a vendor job (struct db_job) */
	char firmware[DB_TEXT_MAX + 1];            /* plain: its files, one per line */
	bool go;
	uint32_t go_address;
};

/* The newest job still active (loaded and not ended), to restore it at startup. Returns 0
 * and fills *ret, or -ENOENT if no job is active. */
int db_job_active(struct db *db, struct db_job_row *ret);

/* Licensing: the chain that gets every license a chip needs (reuse what the ledger holds,
 * otherwise intent, HSM, record), and the queue of slots waiting for it. Chains run side by
 * side on threads of their own, one per token: a chain holds the tokens it draws from (one
 * of each pool: the tokens holding the same firmware id) until it ends, so a token's session
 * serves one chain at a time, and the head of the queue waits until a token of each pool it
 * needs is free. A token whose counter is found exhausted is left aside while others of its
 * pool have licenses; when none has, the line halts.
 *
 * It owns the ledger's connection: the chains share it, one ledger call at a time under a
 * lock (never held across a PKCS#11 call); a halted line's recheck and a job's token scan
 * have it to themselves, while no chain runs.
 *
 * It talks upward only through the callbacks registered at licensing_new(); a requester
 * (a slot) is an opaque pointer handed back to them. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "osfi.h"
#include "sfi-serial.h"

struct db;
struct hsm;
struct recorder;
struct tokens;
struct workers;

/* The most requests waiting at once (one per slot). */
#define LICENSING_QUEUE_MAX 256

struct licensing_callbacks {
	/* The loaded job, NULL when none; why the line is halted, NULL while it runs. */
	const struct job *(*job)(void *user);
	const char *(*halted)(void *user);
	/* The line must halt (the token failed, its counter is exhausted, the ledger is full). */
	void (*halt)(void *user, const char *why);
	/* A request left the queue (its chain starts, or it is refused). */
	void (*dequeued)(void *user, void *who);
	/* True while who still wants licenses for chip uid_hex. */
	bool (*wanted)(void *user, void *who, const char *uid_hex);
	/* The chip's licenses were issued (or reused) and recorded. */
	void (*ready)(void *user, void *who, const struct license_set *set);
	/* No license could be issued for who's chip: one sentence. */
	void (*failed)(void *user, void *who, const char *cause);
	/* who's slot name, for messages. */
	const char *(*name)(void *user, void *who);
	/* Licensing has nothing in progress any more. */
	void (*idle)(void *user);
};

struct licensing_params {
	struct workers *workers;	/* where the chains run */
	struct tokens *tokens;		/* where licenses come from */
	struct recorder *recorder;	/* licenses a gone chip did not get */
	struct db *ledger;		/* taken: closed by licensing_free() */
	const struct licensing_callbacks *cb;
	void *user;
};

struct licensing;

int licensing_new(const struct licensing_params *p, struct licensing **ret);
/* Lets the chains in progress finish (their completions run: call it while the slots still
 * exist) and stops their threads. Accepts NULL. */
void licensing_stop(struct licensing *l);
/* Stops the chains, closes the ledger connection (the workers must have stopped). Accepts
 * NULL. */
struct licensing *licensing_free(struct licensing *l);

/* Startup: reconciles the ledger with every open token's counter (a crash may have left a
 * reservation open on any of them) and keeps the counters. Returns 0 or a negative errno,
 * logged. */
int licensing_reconcile_tokens(struct licensing *l);

/* The ledger connection, for startup and shutdown only (nothing else runs on it then). */
struct db *licensing_ledger(struct licensing *l);
/* True while a chain, a recheck or a scan runs. */
bool licensing_busy(const struct licensing *l);
/* The licenses left on the line token and its pool, as last read or left by an issue; -1
 * unknown. licensing_set_left() sets token i's own (tokens_at()). */
int64_t licensing_left(const struct licensing *l);
void licensing_set_left(struct licensing *l, size_t i, int64_t left);

/* Queues who for the licenses of chip uid_hex (its certificate, its recorded attempt).
 * cb->ready or cb->failed answers, possibly at once. */
void licensing_request(struct licensing *l, void *who, const char *uid_hex,
		       const uint8_t cert[OSFI_CERT_LEN], int64_t attempt_id);
/* Takes who out of the queue (its chip went away). */
void licensing_cancel(struct licensing *l, void *who);

/* Runs work(ledger, arg) on a worker, one ledger call at a time with the chains (short
 * ledger work such as a serial number's intent), then done(arg, r) on the loop: r 0, or
 * -ETIMEDOUT when the ledger's lock stayed taken 10 s (work did not run). Returns 0, -EBUSY
 * while a task has the ledger to itself, -ENOMEM, -ESHUTDOWN. */
int licensing_ledger_task(struct licensing *l, void (*work)(struct db *ledger, void *arg),
			  void (*done)(void *arg, int r), void *arg);
/* Runs work(ledger, arg) on a worker with the ledger to itself, then done(arg) on the
 * loop. Returns 0, -EBUSY while a chain or another task runs, -ESHUTDOWN. */
int licensing_exclusive(struct licensing *l, void (*work)(struct db *ledger, void *arg),
			void (*done)(void *arg), void *arg);

/* Checks whether a halted line may run again: every open token answers (re-opened if it
 * was re-inserted), each pool the job draws from has a token with licenses left, the ledger
 * is reconciled. done(arg, ok, why) runs on the loop. Returns 0, -EBUSY while a chain or
 * another task runs, -ENOMEM, -ESHUTDOWN. */
int licensing_recheck(struct licensing *l, void (*done)(void *arg, bool ok, const char *why),
		      void *arg);

/* A chip that reports the job's image installed: the job's counted licenses the ledger
 * (db: any connection) holds for it still open (issued, or not installed after a failure or
 * an interrupted attempt) go to set, taken as the ones it installed. True when there is at
 * least one, or when the job is uncounted and the chip reached FINALIZE on this line
 * without an attempt recorded ok. */
bool license_adopt(struct db *db, const struct job *j, const char *uid_hex,
		   struct license_set *set);

/* One chip's chain, with everything it needs copied in: it reads nothing of the line. */
struct license_chain {
	struct db *ledger;
	pthread_mutex_t *lock;	/* taken around each ledger call; NULL: the ledger is ours */
	char uid_hex[2 * OSFI_UID_LEN + 1];
	uint8_t cert[OSFI_CERT_LEN];
	int64_t job_id;
	int64_t attempt_id;
	uint16_t device_id;
	uint8_t image_id[OSFI_ID_LEN];
	struct job_license need[JOB_LICENSES_MAX];
	struct hsm *hsm[JOB_LICENSES_MAX];	/* of each counted license */
	sfi_serial serial[JOB_LICENSES_MAX];
	size_t n;

	/* The outcome: set, or failed with a cause (and halt set when the line must stop). */
	struct license_set set;
	bool failed;
	char cause[300];
	char halt[300];
	int empty;		/* the license whose token had no count left; -1 none */
};
/* Runs the chain (blocking on the token and the ledger: a worker, or a test). */
void license_chain_run(struct license_chain *c);

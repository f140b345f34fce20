/* The recorder: every database write of the loop (attempts, chips, license outcomes, jobs,
 * exports) runs on one thread with its own connection, in the order it was asked for, so a
 * slow commit or a checkpoint signed on a smartcard never stalls the slots. The loop learns
 * the outcome through a completion; a full database halts the line.
 *
 * Ordering: operations run one after the other (FIFO). recorder_sync() queues a barrier whose
 * completion runs once everything queued before it is on disk. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

struct event_base;
struct hsm;
struct recorder;

/* One attempt's handle: its row id is known once the begin has run on the recorder thread
 * (after a recorder_sync() completion on the loop). */
struct rec_attempt {
	int64_t id;
	unsigned refs; /* loop thread only */
};

/* Completion on the loop: r is 0 or the negative errno of the write (the recorder has
 * already logged it and, for a full database, halted the line). */
typedef void (*rec_done_fn)(void *arg, int r);

struct recorder_params {
	struct event_base *base;	/* completions run on its loop */
	const char *path;		/* the database */
	const struct db_options *opts;
	const char *station;		/* named in exports */
	/* A write failed because the database is full (why: the database's sentence); the
	 * write is kept and tried again. On the loop. */
	void (*on_full)(void *user, const char *why);
	void *user;
};

/* Opens the recorder's connection to p->path and starts its thread. */
int recorder_new(const struct recorder_params *p, struct recorder **ret, char *reason,
		 size_t reason_size);
/* Runs everything queued, then stops. Accepts NULL; returns NULL. */
struct recorder *recorder_free(struct recorder *r);
/* Starts an attempt: returns the handle (NULL when out of memory; nothing is then recorded
 * for the attempt). The caller owns one reference. */
struct rec_attempt *rec_attempt_begin(struct recorder *r, int64_t job_id, const char *slot,
				      const char *step);
void rec_attempt_unref(struct rec_attempt *a);
void rec_attempt_step(struct recorder *r, struct rec_attempt *a, const char *step,
		      const char *chip_uid, uint64_t bytes);
/* error_code: for a failure, its enum db_failure_kind. */
void rec_attempt_end(struct recorder *r, struct rec_attempt *a, enum db_result result,
		     int error_code, const char *error_text, uint64_t bytes);
void rec_chip_update(struct recorder *r, const char *chip_uid, const char *final_state,
		     const char *product_state);
void rec_license_installed(struct recorder *r, int64_t license_id);
void rec_license_not_installed(struct recorder *r, int64_t license_id, const char *reason);
/* A barrier: done(arg, 0) runs on the loop once everything queued before is stored. */
int recorder_sync(struct recorder *r, rec_done_fn done, void *arg);

/* Records a job; done(arg, r) runs with *ret_id set when r == 0. The db_job's strings are
 * copied. */
int rec_job_create(struct recorder *r, const struct db_job *job, int64_t *ret_id,
		   rec_done_fn done, void *arg);
void rec_job_end(struct recorder *r, int64_t job_id);
/* Records who started the job's slots (uid and name from the control connection). */
void rec_job_start(struct recorder *r, int64_t job_id, uint32_t uid, const char *user,
		   const char *const *slots, size_t n_slots);

/* A token whose counter an export states (read on the recorder thread). */
#define REC_TOKENS_MAX 16
struct rec_token {
	struct hsm *h;
	const char *serial;
};

/* Writes a checkpoint, then an export ("csv" or "jsonl") of range, stating the counters of
 * tokens, into *ret_buf (malloc'd, *ret_len bytes); done(arg, r) runs with reason (a sentence)
 * set when r < 0. */
int rec_export(struct recorder *r, const char *format, const struct db_range *range,
	       const struct rec_token *tokens, size_t n_tokens, char **ret_buf, size_t *ret_len, char *reason, size_t reason_size, rec_done_fn done,
	       void *arg);

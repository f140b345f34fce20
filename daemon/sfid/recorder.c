/* The recorder: see recorder.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h" /* SFID_VERSION */
#include "hsm.h"
#include "log.h"
#include "sfi-error.h"
#include "sfi-serial.h"
#include "recorder.h"
#include "sfid-config.h"
#include "worker.h"

enum rec_kind {
	REC_ATTEMPT_BEGIN,
	REC_ATTEMPT_STEP,
	REC_ATTEMPT_END,
	REC_CHIP,
	REC_LICENSE_INSTALLED,
	REC_LICENSE_NOT_INSTALLED,
	REC_SYNC,
	REC_JOB_CREATE,
	REC_JOB_END,
	REC_JOB_START,
	REC_EXPORT,
	REC_RETRY,
};

/* A chip's outcome the database refused (full, or failing): kept in memory, in order, and
 * written before anything else once the database takes writes again. Recorder thread
 * only (recorder_free reads it after the thread stopped). */
struct kept {
	struct kept *next;
	enum rec_kind kind;
	int64_t id;		/* attempt (steps, ends) or license */
	char step[32];
	char uid[DB_CHIP_UID_HEX + 1];
	char product_state[32];
	char *text;
	uint64_t bytes;
	enum db_result result;
	int error_code;
};

/* How often the kept outcomes are tried again while the line waits. */
#define KEPT_RETRY_MS 1000

struct recorder {
	void (*on_full)(void *user, const char *why);
	void *user;
	char station[256];
	struct db *db;
	struct workers *thread;
	struct kept *kept, **kept_tail;	/* recorder thread */
	size_t n_kept;			/* recorder thread */
	struct event *ev_retry;		/* loop: tries the kept outcomes again */
	bool retry_queued;		/* loop */
};

struct rec_op {
	struct recorder *rec;
	enum rec_kind kind;
	struct rec_attempt *a;
	int64_t id;		/* job or license */
	char slot[CONFIG_NAME_MAX + 1];
	char step[32];
	char uid[DB_CHIP_UID_HEX + 1];
	char product_state[32];
	char *text;		/* error text, reason, job strings (owned) */
	uint64_t bytes;
	enum db_result result;
	int error_code;
	struct db_job job;	/* REC_JOB_CREATE: strings point into text */
	int64_t *ret_id;
	struct db_range range;
	bool csv;
	/* REC_JOB_START: who (text is the user) and which slots */
	uint32_t user_uid;
	char **names;
	size_t n_names;
	/* REC_EXPORT: the tokens whose counters the export names (handles live as long as
	 * the daemon), read on the recorder thread. */
	struct hsm *token_h[REC_TOKENS_MAX];
	sfi_serial token_serial[REC_TOKENS_MAX];
	size_t n_tokens;
	char station[256];
	char **ret_buf;
	size_t *ret_len;
	char *reason;
	size_t reason_size;
	rec_done_fn done;
	void *arg;
	int r;
	char db_err[256];
	bool kept;		/* refused and kept in memory */
	size_t n_kept;		/* outcomes kept after this op */
	size_t n_written;	/* REC_RETRY: kept outcomes written */
};

static const char *op_what(const struct rec_op *op)
{
	switch (op->kind) {
	case REC_ATTEMPT_BEGIN:
		return "the attempt";
	case REC_ATTEMPT_STEP:
		return "the step";
	case REC_ATTEMPT_END:
		return "the end of the attempt";
	case REC_CHIP:
		return "the chip";
	case REC_LICENSE_INSTALLED:
		return "the license as installed";
	case REC_LICENSE_NOT_INSTALLED:
		return "the license as not installed";
	case REC_SYNC:
		return "";
	case REC_JOB_CREATE:
		return "the job";
	case REC_JOB_END:
		return "the end of the job";
	case REC_JOB_START:
		return "the start of the job";
	case REC_EXPORT:
		return "the export";
	case REC_RETRY:
		return "the outcomes kept in memory";
	}
	return "";
}

static const char *kind_name(enum rec_kind kind)
{
	switch (kind) {
	case REC_ATTEMPT_STEP:
		return "step of attempt";
	case REC_ATTEMPT_END:
		return "end of attempt";
	case REC_CHIP:
		return "state of the chip of record";
	case REC_LICENSE_INSTALLED:
		return "installed: license";
	case REC_LICENSE_NOT_INSTALLED:
		return "not installed: license";
	case REC_ATTEMPT_BEGIN:
	case REC_SYNC:
	case REC_JOB_CREATE:
	case REC_JOB_START:
	case REC_JOB_END:
	case REC_EXPORT:
	case REC_RETRY:
		break;
	}
	return "record";
}

static bool kind_is_outcome(enum rec_kind kind)
{
	switch (kind) {
	case REC_ATTEMPT_STEP:
	case REC_ATTEMPT_END:
	case REC_CHIP:
	case REC_LICENSE_INSTALLED:
	case REC_LICENSE_NOT_INSTALLED:
		return true;
	case REC_ATTEMPT_BEGIN:
	case REC_SYNC:
	case REC_JOB_CREATE:
	case REC_JOB_START:
	case REC_JOB_END:
	case REC_EXPORT:
	case REC_RETRY:
		return false;
	}
	return false;
}

/* An outcome that can be kept: a chip's, and for an attempt, one whose row exists. */
static bool op_keepable(const struct rec_op *op)
{
	if (!kind_is_outcome(op->kind))
		return false;
	if (op->kind == REC_ATTEMPT_STEP || op->kind == REC_ATTEMPT_END)
		return op->a && op->a->id > 0;
	return true;
}

/* Writes one outcome. */
static int kept_write(struct db *db, const struct kept *k)
{
	switch (k->kind) {
	case REC_ATTEMPT_STEP:
		return db_attempt_step(db, k->id, k->step, k->uid[0] ? k->uid : NULL, k->bytes);
	case REC_ATTEMPT_END:
		return db_attempt_end(db, k->id, k->result, k->error_code, k->text, k->bytes);
	case REC_CHIP:
		return db_chip_update(db, k->uid, k->step, k->product_state[0] ? k->product_state
									     : NULL);
	case REC_LICENSE_INSTALLED:
		return db_ledger_installed(db, k->id);
	case REC_LICENSE_NOT_INSTALLED:
		return db_ledger_not_installed(db, k->id, k->text);
	case REC_ATTEMPT_BEGIN:
	case REC_SYNC:
	case REC_JOB_CREATE:
	case REC_JOB_START:
	case REC_JOB_END:
	case REC_EXPORT:
	case REC_RETRY:
		break;
	}
	return 0;
}

/* The outcome of op as a kept record. */
static struct kept *kept_from_op(const struct rec_op *op)
{
	struct kept *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	k->kind = op->kind;
	k->id = op->a ? op->a->id : op->id;
	snprintf(k->step, sizeof(k->step), "%s", op->step);
	snprintf(k->uid, sizeof(k->uid), "%s", op->uid);
	snprintf(k->product_state, sizeof(k->product_state), "%s", op->product_state);
	if (op->text && !(k->text = strdup(op->text))) {
		free(k);
		return NULL;
	}
	k->bytes = op->bytes;
	k->result = op->result;
	k->error_code = op->error_code;
	return k;
}

/* Writes the kept outcomes in order, up to the first the database refuses. Returns 0 when
 * none is left, or that refusal. */
static int kept_flush(struct recorder *rec, size_t *ret_written)
{
	size_t n = 0;
	int r = 0;

	while (rec->kept) {
		struct kept *k = rec->kept;

		r = kept_write(rec->db, k);
		if (r < 0)
			break;
		rec->kept = k->next;
		if (!rec->kept)
			rec->kept_tail = &rec->kept;
		rec->n_kept--;
		free(k->text);
		free(k);
		n++;
	}
	if (ret_written)
		*ret_written = n;
	return r;
}

static void kept_push(struct recorder *rec, struct kept *k)
{
	*rec->kept_tail = k;
	rec->kept_tail = &k->next;
	rec->n_kept++;
}

static int op_export(struct rec_op *op, struct db *db)
{
	struct db_export_token tokens[REC_TOKENS_MAX];
	struct db_export_info info = { op->station, SFID_VERSION, tokens, op->n_tokens };
	FILE *f;
	int r;

	/* Sign what is not yet covered, so the export verifies on its own. */
	r = db_checkpoint(db);
	if (r < 0 && r != -ENOKEY)
		log_warning("export: cannot write a signed checkpoint: %s", db_last_error(db));

	/* Each token's counter now, so the OEM can compare it with what the trail proves. */
	for (size_t i = 0; i < op->n_tokens && !op->csv; i++) {
		uint32_t count;

		tokens[i].serial = op->token_serial[i];
		tokens[i].counter = hsm_counter_read(op->token_h[i], &count) == 0 ? (int64_t)count : -1;
		if (tokens[i].counter < 0)
			log_warning("export: cannot read the counter of token %s; the export names "
				    "it as unknown", op->token_serial[i]);
	}
	f = open_memstream(op->ret_buf, op->ret_len);
	if (!f)
		return -ENOMEM;
	r = op->csv ? db_export_csv(db, &op->range, f) :
		      db_export_jsonl_info(db, &op->range, &info, f);
	if (fclose(f) != 0 && r == 0)
		r = -ENOMEM;
	if (r < 0) {
		free(*op->ret_buf);
		*op->ret_buf = NULL;
		*op->ret_len = 0;
	}
	return r;
}

static void rec_work(void *data)
{
	struct rec_op *op = data;
	struct recorder *rec = op->rec;
	struct db *db = rec->db;
	int r = 0;

	/* Outcomes kept earlier go first, in order; an outcome does not overtake them. */
	if (rec->kept) {
		r = kept_flush(rec, &op->n_written);
		if (r < 0 && op_keepable(op)) {
			struct kept *k = kept_from_op(op);

			if (k) {
				kept_push(rec, k);
				op->kept = true;
			}
			op->r = r;
			op->n_kept = rec->n_kept;
			snprintf(op->db_err, sizeof(op->db_err), "%s", db_last_error(db));
			return;
		}
		r = 0;
	}
	switch (op->kind) {
	case REC_ATTEMPT_BEGIN:
		r = db_attempt_begin(db, op->id, op->slot, &op->a->id);
		if (r == 0)
			r = db_attempt_step(db, op->a->id, op->step, NULL, 0);
		break;
	case REC_ATTEMPT_STEP:
		if (op->a->id > 0)
			r = db_attempt_step(db, op->a->id, op->step, op->uid[0] ? op->uid : NULL,
					    op->bytes);
		break;
	case REC_ATTEMPT_END:
		if (op->a->id > 0)
			r = db_attempt_end(db, op->a->id, op->result, op->error_code, op->text,
					   op->bytes);
		break;
	case REC_CHIP:
		r = db_chip_update(db, op->uid, op->step, op->product_state[0] ? op->product_state
									   : NULL);
		break;
	case REC_LICENSE_INSTALLED:
		r = db_ledger_installed(db, op->id);
		break;
	case REC_LICENSE_NOT_INSTALLED:
		r = db_ledger_not_installed(db, op->id, op->text);
		break;
	case REC_SYNC:
		break;
	case REC_JOB_CREATE:
		r = db_job_create(db, &op->job, op->ret_id);
		break;
	case REC_JOB_END:
		r = db_job_end(db, op->id);
		if (r == -ENOKEY)
			r = 0;
		break;
	case REC_JOB_START:
		r = db_job_start(db, op->id, op->user_uid, op->text, (const char *const *)op->names,
				 op->n_names);
		break;
	case REC_EXPORT:
		r = op_export(op, db);
		break;
	case REC_RETRY:
		r = rec->kept ? -EAGAIN : 0;
		break;
	}
	op->r = r;
	if (r < 0)
		snprintf(op->db_err, sizeof(op->db_err), "%s", db_last_error(db));
	/* A chip's outcome is never dropped: refused, it is kept and written later. */
	if (r < 0 && op_keepable(op)) {
		struct kept *k = kept_from_op(op);

		if (k) {
			kept_push(rec, k);
			op->kept = true;
		}
	}
	op->n_kept = rec->n_kept;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg);

/* Loop: while outcomes are kept, they are tried again every KEPT_RETRY_MS. */
static void retry_arm(struct recorder *rec)
{
	struct timeval tv = { .tv_sec = KEPT_RETRY_MS / 1000,
			      .tv_usec = (KEPT_RETRY_MS % 1000) * 1000 };

	if (rec->retry_queued || !rec->ev_retry || evtimer_pending(rec->ev_retry, NULL))
		return;
	evtimer_add(rec->ev_retry, &tv);
}

static void rec_done(void *data)
{
	struct rec_op *op = data;
	struct recorder *rec = op->rec;

	if (op->kind == REC_RETRY) {
		op->rec->retry_queued = false;
		if (op->n_written)
			log_notice("database: %zu outcome%s kept in memory written; %zu still kept",
				   op->n_written, op->n_written == 1 ? "" : "s", op->n_kept);
	} else if (op->kept) {
		log_error("database: cannot record %s now: %s; it is kept in memory (%zu kept) "
			  "and written as soon as the database takes it", op_what(op),
			  op->db_err[0] ? op->db_err : strerror(-op->r), op->n_kept);
		if (op->r == -ENOSPC)
			rec->on_full(rec->user, op->db_err);
	} else if (op->r < 0 && op->kind != REC_SYNC) {
		log_error("database: cannot record %s: %s", op_what(op),
			  op->db_err[0] ? op->db_err : strerror(-op->r));
		if (op->r == -ENOSPC)
			rec->on_full(rec->user, op->db_err);
		if (op->reason)
			sfi_reason(op->reason, op->reason_size, "%s", op->db_err[0] ? op->db_err
									: strerror(-op->r));
	}
	if (op->kind == REC_LICENSE_NOT_INSTALLED && op->r == 0)
		log_notice("ledger: license %" PRId64 " issued, not installed (%s); the chip will "
			   "reuse it", op->id, op->text);
	if (op->n_kept)
		retry_arm(op->rec);
	if (op->done)
		op->done(op->arg, op->r);
	if (op->a)
		rec_attempt_unref(op->a);
	for (size_t i = 0; i < op->n_names; i++)
		free(op->names[i]);
	free(op->names);
	free(op->text);
	free(op);
}

static struct rec_op *op_new(struct recorder *r, enum rec_kind kind)
{
	struct rec_op *op = calloc(1, sizeof(*op));

	if (!op) {
		log_error("database: out of memory; a record is lost");
		return NULL;
	}
	op->rec = r;
	op->kind = kind;
	return op;
}

static int op_submit(struct rec_op *op)
{
	if (op->a)
		op->a->refs++;
	if (workers_submit(op->rec->thread, rec_work, rec_done, op) < 0) {
		log_error("database: the recorder has stopped; %s is not recorded", op_what(op));
		if (op->a)
			op->a->refs--;
		free(op->text);
		free(op);
		return -ESHUTDOWN;
	}
	return 0;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct recorder *rec = arg;
	struct rec_op *op = op_new(rec, REC_RETRY);

	if (op && op_submit(op) == 0)
		rec->retry_queued = true;
}

int recorder_new(const struct recorder_params *p, struct recorder **ret, char *reason,
		 size_t reason_size)
{
	struct recorder *r = calloc(1, sizeof(*r));
	int k;

	if (!r)
		return -ENOMEM;
	r->on_full = p->on_full;
	r->user = p->user;
	snprintf(r->station, sizeof(r->station), "%s", p->station);
	r->kept_tail = &r->kept;
	r->ev_retry = evtimer_new(p->base, retry_cb, r);
	if (!r->ev_retry) {
		free(r);
		return -ENOMEM;
	}
	k = db_open_role(p->path, DB_ROLE_RECORDER, p->opts, &r->db, reason, reason_size);
	if (k < 0) {
		event_free(r->ev_retry);
		free(r);
		return k;
	}
	k = workers_new(p->base, 1, &r->thread);
	if (k < 0) {
		sfi_reason(reason, reason_size, "cannot start the database thread: %s", strerror(-k));
		db_close(r->db);
		event_free(r->ev_retry);
		free(r);
		return k;
	}
	*ret = r;
	return 0;
}

struct recorder *recorder_free(struct recorder *r)
{
	if (!r)
		return NULL;
	r->thread = workers_free(r->thread);
	/* The thread has stopped: the kept outcomes are tried once more, and what the database
	 * still refuses is put in the journal, the only place left for it. */
	if (r->kept && kept_flush(r, NULL) < 0) {
		log_error("database: %zu outcome%s could not be written before sfid stopped: %s",
			  r->n_kept, r->n_kept == 1 ? "" : "s", db_last_error(r->db));
		for (struct kept *k = r->kept; k; k = k->next)
			log_error("database: not recorded: %s %" PRId64 "%s%s%s%s", kind_name(k->kind),
				  k->id, k->uid[0] ? " chip " : "", k->uid, k->text ? ": " : "",
				  k->text ? k->text : "");
	}
	while (r->kept) {
		struct kept *k = r->kept;

		r->kept = k->next;
		free(k->text);
		free(k);
	}
	if (r->ev_retry)
		event_free(r->ev_retry);
	if (db_checkpoint(r->db) < 0)
		log_debug("no checkpoint at exit: %s", db_last_error(r->db));
	db_close(r->db);
	free(r);
	return NULL;
}

struct rec_attempt *rec_attempt_begin(struct recorder *r, int64_t job_id, const char *slot,
				      const char *step)
{
	struct rec_attempt *a = calloc(1, sizeof(*a));
	struct rec_op *op;

	if (!a)
		return NULL;
	a->refs = 1;
	op = op_new(r, REC_ATTEMPT_BEGIN);
	if (!op)
		return a;
	op->a = a;
	op->id = job_id;
	snprintf(op->slot, sizeof(op->slot), "%s", slot);
	snprintf(op->step, sizeof(op->step), "%s", step);
	op_submit(op);
	return a;
}

void rec_attempt_unref(struct rec_attempt *a)
{
	if (a && --a->refs == 0)
		free(a);
}

void rec_attempt_step(struct recorder *r, struct rec_attempt *a, const char *step,
		      const char *chip_uid, uint64_t bytes)
{
	struct rec_op *op;

	if (!a || !(op = op_new(r, REC_ATTEMPT_STEP)))
		return;
	op->a = a;
	snprintf(op->step, sizeof(op->step), "%s", step);
	snprintf(op->uid, sizeof(op->uid), "%s", chip_uid ? chip_uid : "");
	op->bytes = bytes;
	op_submit(op);
}

void rec_attempt_end(struct recorder *r, struct rec_attempt *a, enum db_result result,
		     int error_code, const char *error_text, uint64_t bytes)
{
	struct rec_op *op;

	if (!a || !(op = op_new(r, REC_ATTEMPT_END)))
		return;
	op->a = a;
	op->result = result;
	op->error_code = error_code;
	op->bytes = bytes;
	if (error_text && !(op->text = strdup(error_text))) {
		free(op);
		return;
	}
	op_submit(op);
}

void rec_chip_update(struct recorder *r, const char *chip_uid, const char *final_state,
		     const char *product_state)
{
	struct rec_op *op = op_new(r, REC_CHIP);

	if (!op)
		return;
	snprintf(op->uid, sizeof(op->uid), "%s", chip_uid);
	snprintf(op->step, sizeof(op->step), "%s", final_state);
	snprintf(op->product_state, sizeof(op->product_state), "%s",
		 product_state ? product_state : "");
	op_submit(op);
}

void rec_license_installed(struct recorder *r, int64_t license_id)
{
	struct rec_op *op = op_new(r, REC_LICENSE_INSTALLED);

	if (!op)
		return;
	op->id = license_id;
	op_submit(op);
}

void rec_license_not_installed(struct recorder *r, int64_t license_id, const char *reason)
{
	struct rec_op *op = op_new(r, REC_LICENSE_NOT_INSTALLED);

	if (!op)
		return;
	op->id = license_id;
	op->text = strdup(reason && reason[0] ? reason : "not installed");
	if (!op->text) {
		free(op);
		return;
	}
	op_submit(op);
}

int recorder_sync(struct recorder *r, rec_done_fn done, void *arg)
{
	struct rec_op *op = op_new(r, REC_SYNC);

	if (!op)
		return -ENOMEM;
	op->done = done;
	op->arg = arg;
	return op_submit(op);
}

/* Copies the job's strings into one allocation. */
static int job_copy(struct rec_op *op, const struct db_job *job)
{
	const char *src[] = { job->image_path, job->image_id, job->image_digest, job->module_file,
			      job->loaded_user, job->global_license_file };
	const char **dst[] = { &op->job.image_path, &op->job.image_id, &op->job.image_digest,
			       &op->job.module_file, &op->job.loaded_user,
			       &op->job.global_license_file };
	size_t total = 0, off = 0;

	for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++)
		total += src[i] ? strlen(src[i]) + 1 : 0;
	op->text = malloc(total ? total : 1);
	if (!op->text)
		return -ENOMEM;
	op->job = *job;
	for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++) {
		if (!src[i]) {
			*dst[i] = NULL;
			continue;
		}
		memcpy(op->text + off, src[i], strlen(src[i]) + 1);
		*dst[i] = op->text + off;
		off += strlen(src[i]) + 1;
	}
	return 0;
}

int rec_job_create(struct recorder *r, const struct db_job *job, int64_t *ret_id,
		   rec_done_fn done, void *arg)
{
	struct rec_op *op = op_new(r, REC_JOB_CREATE);

	if (!op)
		return -ENOMEM;
	if (job_copy(op, job) < 0) {
		free(op);
		return -ENOMEM;
	}
	op->ret_id = ret_id;
	op->done = done;
	op->arg = arg;
	return op_submit(op);
}

void rec_job_end(struct recorder *r, int64_t job_id)
{
	struct rec_op *op = op_new(r, REC_JOB_END);

	if (!op)
		return;
	op->id = job_id;
	op_submit(op);
}

void rec_job_start(struct recorder *r, int64_t job_id, uint32_t uid, const char *user,
		   const char *const *slots, size_t n_slots)
{
	struct rec_op *op = op_new(r, REC_JOB_START);

	if (!op)
		return;
	op->id = job_id;
	op->user_uid = uid;
	op->text = strdup(user ? user : "");
	op->names = calloc(n_slots ? n_slots : 1, sizeof(char *));
	if (!op->text || !op->names) {
		log_error("database: out of memory; the job start is not recorded");
		free(op->text);
		free(op->names);
		free(op);
		return;
	}
	for (size_t i = 0; i < n_slots; i++) {
		op->names[i] = strdup(slots[i]);
		if (!op->names[i])
			break;
		op->n_names++;
	}
	op_submit(op);
}

int rec_export(struct recorder *r, const char *format, const struct db_range *range,
	       const struct rec_token *tokens, size_t n_tokens, char **ret_buf, size_t *ret_len, char *reason, size_t reason_size, rec_done_fn done,
	       void *arg)
{
	struct rec_op *op = op_new(r, REC_EXPORT);

	if (!op)
		return -ENOMEM;
	op->csv = strcmp(format, "csv") == 0;
	op->range = *range;
	snprintf(op->station, sizeof(op->station), "%s", r->station);
	for (size_t i = 0; i < n_tokens && i < REC_TOKENS_MAX; i++) {
		op->token_h[i] = tokens[i].h;
		snprintf(op->token_serial[i], sizeof(op->token_serial[i]), "%s", tokens[i].serial);
		op->n_tokens++;
	}
	op->ret_buf = ret_buf;
	op->ret_len = ret_len;
	op->reason = reason;
	op->reason_size = reason_size;
	op->done = done;
	op->arg = arg;
	return op_submit(op);
}

/* Licensing: see licensing.h.
 *
 * The order that makes a crash or a refusal harmless (docs/database.md): for each license a
 * chip needs, a license the ledger already holds for this chip is reused; otherwise the
 * intent is recorded (with the counter read from the token) before the token decrements, and
 * the issued license is recorded before the chip sees it. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "db.h"
#include "hsm.h"
#include "licensing.h"
#include "log.h"
#include "recorder.h"
#include "tokens.h"
#include "worker.h"

struct license_req {
	void *who;
	char uid_hex[2 * OSFI_UID_LEN + 1];
	uint8_t cert[OSFI_CERT_LEN];
	int64_t attempt_id;
};

struct licensing {
	struct workers *workers;
	struct tokens *tokens;
	struct recorder *recorder;
	struct db *ledger;
	const struct licensing_callbacks *cb;
	void *user;
	/* Requests in arrival order; a chain runs for the first while the ledger is free. */
	struct license_req queue[LICENSING_QUEUE_MAX];
	size_t n_queue;
	/* What has the ledger now: nothing, a chain, or an exclusive task (recheck, scan). */
	enum { LEDGER_FREE, LEDGER_CHAIN, LEDGER_EXCLUSIVE } ledger_use;
	int64_t left;
};

/* ---- the license chain ---- */

__attribute__((format(printf, 3, 4)))
static void chain_fail(struct license_chain *w, bool halt, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->cause, sizeof(w->cause), fmt, ap);
	va_end(ap);
	w->failed = true;
	if (halt)
		snprintf(w->halt, sizeof(w->halt), "%s", w->cause);
}

/* What a licence is for, in messages. */
static void need_name(const struct job_license *l, char *out, size_t size)
{
	if (l->target == OSFI_TARGET_IMAGE)
		snprintf(out, size, "the image");
	else
		snprintf(out, size, "module %" PRIu32, l->target);
}

/* The HSM failed after the intent was recorded: settle the reservation from the counter. */
static void chain_hsm_failed(struct license_chain *w, size_t i, int64_t license_id, int r)
{
	struct db *db = w->ledger;
	const char *tok = w->serial[i];
	char what[32];

	need_name(&w->need[i], what, sizeof(what));
	switch (-r) {
	case HSM_ERR_TOKEN_REMOVED:
	case HSM_ERR_DEVICE:
	case HSM_ERR_NOT_LOGGED_IN: {
		/* The counter may have moved: the token says, once it can be read. */
		uint32_t count;

		if (hsm_counter_read(w->hsm[i], &count) == 0 &&
		    token_reconcile(db, w->hsm[i], tok, count) == 0) {
			chain_fail(w, true, "HSM token %s failed while issuing a license for %s (%s); "
				   "check the token, then start the line again", tok, what,
				   hsm_error_to_string(r));
		} else {
			chain_fail(w, true, "HSM token %s failed while issuing a license for %s (%s) "
				   "and cannot be read; the ledger keeps the open reservation until "
				   "sfid restarts with the token present", tok, what,
				   hsm_error_to_string(r));
		}
		return;
	}
	case HSM_ERR_COUNTER_EXHAUSTED:
		chain_fail(w, true, "the license counter of HSM token %s (%s) is exhausted; load a "
			   "token with licenses left", tok, what);
		break;
	case HSM_ERR_COUNTER_MISMATCH:
		chain_fail(w, true, "the license counter of HSM token %s changed outside sfid; "
			   "nothing was spent; check who else uses the token", tok);
		break;
	default:
		chain_fail(w, false, "the HSM refused the license for %s: %s", what,
			   hsm_error_to_string(r));
		break;
	}
	if (db_ledger_cancel(db, license_id, w->cause) < 0)
		log_error("ledger: cannot void reservation %" PRId64 ": %s", license_id,
			  db_last_error(db));
}

/* One counted license: reuse, or intent -> HSM -> record. */
static void chain_one(struct license_chain *w, size_t i)
{
	struct db *db = w->ledger;
	const struct job_license *l = &w->need[i];
	struct db_license *lic = NULL;
	struct db_reservation res;
	struct hsm_license_result out;
	struct hsm_license_request req = {
		.cert = w->cert,
		.cert_len = sizeof(w->cert),
		.device_id = w->device_id,
		.target = l->target,
	};
	char what[32];
	uint32_t count;
	int64_t id;
	int r;

	need_name(l, what, sizeof(what));
	r = db_ledger_find_reusable(db, w->uid_hex, l->firmware_id_hex, l->target, &lic);
	if (r == 0 && lic->record_len == OSFI_LICENSE_LEN) {
		r = db_ledger_reuse(db, lic->id, w->attempt_id);
		if (r < 0) {
			chain_fail(w, r == -ENOSPC, "cannot record the license reuse: %s",
				   db_last_error(db));
		} else {
			log_info("chip %s: reusing license %" PRId64 " for %s (%s), no count spent",
				 w->uid_hex, lic->id, what, db_license_state_to_string(lic->state));
			w->set.id[i] = lic->id;
			w->set.reused[i] = true;
			memcpy(w->set.record[i], lic->record, OSFI_LICENSE_LEN);
		}
		db_license_free(lic);
		return;
	}
	db_license_free(lic);
	if (r < 0 && r != -ENOENT) {
		chain_fail(w, false, "cannot look up the chip's license: %s", db_last_error(db));
		return;
	}

	r = hsm_counter_read(w->hsm[i], &count);
	if (r < 0) {
		chain_fail(w, true, "cannot read the HSM license counter of token %s: %s",
			   w->serial[i], hsm_error_to_string(r));
		return;
	}
	/* A counter that is not where the ledger left it was changed outside sfid (a spend
	 * with sfi-hsm license, a refill): the trail states it before the next spend. */
	{
		uint64_t known;

		if (db_token_counter(db, w->serial[i], &known) == 0 && known != count &&
		    token_reconcile(db, w->hsm[i], w->serial[i], count) < 0) {
			chain_fail(w, true, "cannot record a change of token %s's counter: %s",
				   w->serial[i], db_last_error(db));
			return;
		}
	}
	if (count == 0) {
		chain_fail(w, true, "the license counter of HSM token %s (%s) is exhausted; load a "
			   "token with licenses left", w->serial[i], what);
		return;
	}
	res = (struct db_reservation){
		.job_id = w->job_id,
		.attempt_id = w->attempt_id,
		.chip_uid = w->uid_hex,
		.token_serial = w->serial[i],
		.firmware_id = l->firmware_id_hex,
		.target = l->target,
		.counter_before = count,
	};
	r = db_ledger_reserve(db, &res, &id);
	if (r < 0) {
		chain_fail(w, true, "the database refuses new license records (%s); no count was "
			   "spent", db_last_error(db));
		return;
	}
	memcpy(req.image_id, w->image_id, OSFI_ID_LEN);
	r = hsm_license_issue(w->hsm[i], &req, count, &out);
	if (r < 0) {
		chain_hsm_failed(w, i, id, r);
		return;
	}
	if (db_ledger_issue(db, id, out.count_after, out.license, OSFI_LICENSE_LEN) < 0) {
		/* The reservation stays open: reconciliation at restart finds the spent count. */
		chain_fail(w, true, "the database cannot record licenses (%s); free disk space and "
			   "restart sfid", db_last_error(db));
		OPENSSL_cleanse(&out, sizeof(out));
		return;
	}
	log_info("chip %s: license %" PRId64 " for %s issued by token %s, counter %" PRIu32
		 " -> %" PRIu32, w->uid_hex, id, what, w->serial[i], out.count_before,
		 out.count_after);
	w->set.id[i] = id;
	w->set.counted[i] = true;
	w->set.counter_after[i] = out.count_after;
	memcpy(w->set.record[i], out.license, OSFI_LICENSE_LEN);
	OPENSSL_cleanse(&out, sizeof(out));
}

void license_chain_run(struct license_chain *w)
{
	w->set.n = w->n;
	for (size_t i = 0; i < w->n && !w->failed; i++) {
		if (w->need[i].global) {
			memcpy(w->set.record[i], w->need[i].record, OSFI_LICENSE_LEN);
			continue;
		}
		chain_one(w, i);
	}
	if (!w->failed)
		return;
	/* Licenses this chain issued before the failure stay reusable by this chip. */
	for (size_t i = 0; i < w->n; i++)
		if (w->set.id[i] > 0 && !w->set.reused[i] &&
		    db_ledger_not_installed(w->ledger, w->set.id[i], w->cause) < 0)
			log_error("ledger: cannot record license %" PRId64 " as not installed: %s",
				  w->set.id[i], db_last_error(w->ledger));
}

/* ---- the queue ---- */

struct license_work {
	struct licensing *l;
	void *who;
	struct license_chain c;
};

static void work_free(struct license_work *w)
{
	OPENSSL_cleanse(&w->c.set, sizeof(w->c.set));
	OPENSSL_cleanse(w->c.need, sizeof(w->c.need));
	free(w);
}

static void chain_work(void *data)
{
	struct license_work *w = data;

	license_chain_run(&w->c);
}

static void licensing_kick(struct licensing *l);

/* The ledger is free again: the next request's chain may start. */
static void ledger_released(struct licensing *l)
{
	l->ledger_use = LEDGER_FREE;
	licensing_kick(l);
	l->cb->idle(l->user);
}

static void chain_done(void *data)
{
	struct license_work *w = data;
	struct licensing *l = w->l;
	struct license_chain *c = &w->c;
	const struct job *j = l->cb->job(l->user);

	/* The line token's licenses left, for status and watch. */
	if (j && j->n_lic > 0 && j->lic[0].token == 0 && c->set.counted[0])
		l->left = c->set.counter_after[0];
	if (c->failed) {
		log_error("slot %s chip %s: %s", l->cb->name(l->user, w->who), c->uid_hex, c->cause);
		l->cb->failed(l->user, w->who, c->cause);
		if (c->halt[0])
			l->cb->halt(l->user, c->halt);
	} else if (!l->cb->wanted(l->user, w->who, c->uid_hex)) {
		/* The chip went away while the HSM worked: its licenses stay reusable. */
		for (size_t i = 0; i < c->set.n; i++)
			if (c->set.id[i] > 0)
				rec_license_not_installed(l->recorder, c->set.id[i],
							  "chip left the slot before the license "
							  "was sent");
	} else {
		l->cb->ready(l->user, w->who, &c->set);
	}
	work_free(w);
	ledger_released(l);
}

static void licensing_kick(struct licensing *l)
{
	while (l->ledger_use == LEDGER_FREE && l->n_queue > 0) {
		const struct job *j = l->cb->job(l->user);
		const char *halt = l->cb->halted(l->user);
		struct license_req req = l->queue[0];
		struct license_work *w;
		bool tokens_ok = true;

		memmove(&l->queue[0], &l->queue[1], (l->n_queue - 1) * sizeof(l->queue[0]));
		l->n_queue--;
		l->cb->dequeued(l->user, req.who);
		if (!l->cb->wanted(l->user, req.who, req.uid_hex))
			continue;
		if (halt || !j) {
			l->cb->failed(l->user, req.who, halt ? halt : "no job is loaded");
			continue;
		}
		for (size_t i = 0; i < j->n_lic; i++)
			tokens_ok &= j->lic[i].global || (j->lic[i].token >= 0 &&
				     (size_t)j->lic[i].token < tokens_count(l->tokens));
		if (!tokens_ok) {
			l->cb->failed(l->user, req.who, "a token of the job is not open");
			continue;
		}
		w = calloc(1, sizeof(*w));
		if (!w) {
			l->cb->failed(l->user, req.who, "out of memory");
			continue;
		}
		w->l = l;
		w->who = req.who;
		w->c.ledger = l->ledger;
		memcpy(w->c.uid_hex, req.uid_hex, sizeof(w->c.uid_hex));
		memcpy(w->c.cert, req.cert, sizeof(w->c.cert));
		w->c.job_id = j->id;
		w->c.attempt_id = req.attempt_id;
		w->c.device_id = j->device_id;
		memcpy(w->c.image_id, j->image_id, OSFI_ID_LEN);
		w->c.n = j->n_lic;
		for (size_t i = 0; i < j->n_lic; i++) {
			w->c.need[i] = j->lic[i];
			if (!j->lic[i].global) {
				const struct token *t = tokens_at(l->tokens, (size_t)j->lic[i].token);

				w->c.hsm[i] = t->h;
				snprintf(w->c.serial[i], sizeof(w->c.serial[i]), "%s", t->serial);
			}
		}
		l->ledger_use = LEDGER_CHAIN;
		if (workers_submit(l->workers, chain_work, chain_done, w) < 0) {
			l->ledger_use = LEDGER_FREE;
			l->cb->failed(l->user, req.who, "daemon shutting down");
			work_free(w);
		}
	}
}

void licensing_request(struct licensing *l, void *who, const char *uid_hex,
		       const uint8_t cert[OSFI_CERT_LEN], int64_t attempt_id)
{
	struct license_req *r;

	if (l->n_queue >= LICENSING_QUEUE_MAX) {
		l->cb->failed(l->user, who, "license queue full");
		return;
	}
	r = &l->queue[l->n_queue++];
	r->who = who;
	snprintf(r->uid_hex, sizeof(r->uid_hex), "%s", uid_hex);
	memcpy(r->cert, cert, OSFI_CERT_LEN);
	r->attempt_id = attempt_id;
	licensing_kick(l);
}

void licensing_cancel(struct licensing *l, void *who)
{
	for (size_t i = 0; i < l->n_queue; i++)
		if (l->queue[i].who == who) {
			memmove(&l->queue[i], &l->queue[i + 1],
				(l->n_queue - i - 1) * sizeof(l->queue[0]));
			l->n_queue--;
			return;
		}
}

/* ---- tasks that have the ledger to themselves ---- */

struct exclusive {
	struct licensing *l;
	void (*work)(struct db *ledger, void *arg);
	void (*done)(void *arg);
	void *arg;
};

static void exclusive_work(void *data)
{
	struct exclusive *x = data;

	x->work(x->l->ledger, x->arg);
}

static void exclusive_done(void *data)
{
	struct exclusive *x = data;
	struct licensing *l = x->l;

	x->done(x->arg);
	free(x);
	ledger_released(l);
}

int licensing_exclusive(struct licensing *l, void (*work)(struct db *ledger, void *arg),
			void (*done)(void *arg), void *arg)
{
	struct exclusive *x;

	if (l->ledger_use != LEDGER_FREE)
		return -EBUSY;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	*x = (struct exclusive){ .l = l, .work = work, .done = done, .arg = arg };
	l->ledger_use = LEDGER_EXCLUSIVE;
	if (workers_submit(l->workers, exclusive_work, exclusive_done, x) < 0) {
		l->ledger_use = LEDGER_FREE;
		free(x);
		return -ESHUTDOWN;
	}
	return 0;
}

/* ---- checking a halted line again ---- */

struct recheck {
	struct licensing *l;
	struct hsm *hsm[TOKENS_MAX];
	sfi_serial serial[TOKENS_MAX];
	uint8_t fwid[TOKENS_MAX][OSFI_ID_LEN];
	bool counted[TOKENS_MAX];
	size_t n;
	bool ok;
	char why[300];
	void (*done)(void *arg, bool ok, const char *why);
	void *arg;
};

static void recheck_work(struct db *ledger, void *data)
{
	struct recheck *rc = data;

	rc->ok = true;
	for (size_t i = 0; i < rc->n && rc->ok; i++) {
		uint32_t count;
		uint8_t fwid[OSFI_ID_LEN];
		int r = hsm_counter_read(rc->hsm[i], &count);

		if (r == -HSM_ERR_TOKEN_REMOVED || r == -HSM_ERR_DEVICE || r == -HSM_ERR_NOT_LOGGED_IN) {
			/* Put back after it was removed: a new session and a new login. */
			r = hsm_reopen(rc->hsm[i]);
			if (r == 0)
				r = tokens_login(rc->l->tokens, rc->hsm[i]);
			if (r == 0)
				r = hsm_firmware_id(rc->hsm[i], fwid);
			if (r == 0 && memcmp(fwid, rc->fwid[i], OSFI_ID_LEN) != 0) {
				snprintf(rc->why, sizeof(rc->why), "HSM token %s now licenses another "
					 "firmware; restart sfid", rc->serial[i]);
				rc->ok = false;
				break;
			}
			if (r == 0)
				r = hsm_counter_read(rc->hsm[i], &count);
			if (r == 0)
				log_notice("HSM token %s answers again (new session)", rc->serial[i]);
		}
		if (r < 0) {
			snprintf(rc->why, sizeof(rc->why), "HSM token %s does not answer (%s); insert "
				 "it, then start again", rc->serial[i], hsm_error_to_string(r));
			rc->ok = false;
			break;
		}
		if (rc->counted[i] && count == 0) {
			snprintf(rc->why, sizeof(rc->why), "the license counter of HSM token %s is "
				 "still exhausted", rc->serial[i]);
			rc->ok = false;
			break;
		}
		if (token_reconcile(ledger, rc->hsm[i], rc->serial[i], count) < 0) {
			snprintf(rc->why, sizeof(rc->why), "the license ledger cannot be reconciled: "
				 "%s", db_last_error(ledger));
			rc->ok = false;
			break;
		}
	}
}

static void recheck_done(void *data)
{
	struct recheck *rc = data;

	rc->done(rc->arg, rc->ok, rc->why);
	free(rc);
}

int licensing_recheck(struct licensing *l, void (*done)(void *arg, bool ok, const char *why),
		      void *arg)
{
	const struct job *j = l->cb->job(l->user);
	struct recheck *rc;
	int r;

	if (l->ledger_use != LEDGER_FREE)
		return -EBUSY;
	rc = calloc(1, sizeof(*rc));
	if (!rc)
		return -ENOMEM;
	rc->l = l;
	rc->done = done;
	rc->arg = arg;
	for (size_t i = 0; i < tokens_count(l->tokens) && i < TOKENS_MAX; i++) {
		const struct token *t = tokens_at(l->tokens, i);

		rc->hsm[i] = t->h;
		snprintf(rc->serial[i], sizeof(rc->serial[i]), "%s", t->serial);
		memcpy(rc->fwid[i], t->firmware_id, OSFI_ID_LEN);
		for (size_t k = 0; j && k < j->n_lic; k++)
			rc->counted[i] |= !j->lic[k].global && j->lic[k].token == (int)i;
		rc->n++;
	}
	r = licensing_exclusive(l, recheck_work, recheck_done, rc);
	if (r < 0)
		free(rc);
	return r;
}

/* ---- chips that hold the image already ---- */

/* True when every license of the job is global: no ledger, no HSM. */
static bool job_uncounted(const struct job *j)
{
	for (size_t i = 0; i < j->n_lic; i++)
		if (!j->lic[i].global)
			return false;
	return true;
}

/* A job without counted licenses leaves no ledger row to tie a chip to it: a chip of the job
 * that reached FINALIZE on this line without an attempt recorded ok stands for it. */
static bool chip_reached_finalize(struct db *db, const struct job *j, const char *uid_hex)
{
	struct db_history_filter f = { .job_id = j->id, .chip_uid = uid_hex, .limit = 100 };
	struct db_attempt_row *rows = NULL;
	bool reached = false, ok = false;
	size_t n = 0;

	if (db_history(db, &f, &rows, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		ok |= rows[i].result == DB_ATTEMPT_OK;
		reached |= strcmp(rows[i].step, "finalizing") == 0 ||
			   strcmp(rows[i].step, "verifying") == 0;
	}
	free(rows);
	return reached && !ok;
}

bool license_adopt(struct db *db, const struct job *j, const char *uid_hex,
		   struct license_set *set)
{
	bool open = false;

	*set = (struct license_set){ 0 };
	for (size_t i = 0; i < j->n_lic && set->n < JOB_LICENSES_MAX; i++) {
		struct db_license *l = NULL;

		if (j->lic[i].global)
			continue;
		if (db_ledger_find_reusable(db, uid_hex, j->lic[i].firmware_id_hex,
					    j->lic[i].target, &l) < 0)
			continue;
		if (l->state == DB_LICENSE_ISSUED || l->state == DB_LICENSE_NOT_INSTALLED) {
			set->id[set->n] = l->id;
			set->reused[set->n] = true;
			set->n++;
			open = true;
		}
		db_license_free(l);
	}
	if (!open) {
		*set = (struct license_set){ 0 };
		return job_uncounted(j) && chip_reached_finalize(db, j, uid_hex);
	}
	return true;
}

/* ---- the module ---- */

int licensing_new(const struct licensing_params *p, struct licensing **ret)
{
	struct licensing *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->workers = p->workers;
	l->tokens = p->tokens;
	l->recorder = p->recorder;
	l->ledger = p->ledger;
	l->cb = p->cb;
	l->user = p->user;
	l->left = -1;
	*ret = l;
	return 0;
}

struct licensing *licensing_free(struct licensing *l)
{
	if (!l)
		return NULL;
	db_close(l->ledger);
	free(l);
	return NULL;
}

struct db *licensing_ledger(struct licensing *l)
{
	return l ? l->ledger : NULL;
}

bool licensing_busy(const struct licensing *l)
{
	return l && l->ledger_use != LEDGER_FREE;
}

int64_t licensing_left(const struct licensing *l)
{
	return l ? l->left : -1;
}

void licensing_set_left(struct licensing *l, int64_t left)
{
	if (l)
		l->left = left;
}

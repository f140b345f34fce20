/* Licensing: see licensing.h.
 *
 * The order that makes a crash or a refusal harmless (docs/database.md): for each license a
 * chip needs, a license the ledger already holds for this chip is reused; otherwise the
 * intent is recorded (with the counter read from the token) before the token decrements, and
 * the issued license is recorded before the chip sees it.
 *
 * Chains run side by side, one per token: a chain holds every token it draws from until it
 * ends (one open reservation per token, the counter read before the intent is the one the
 * token checks), and takes the ledger's lock only around each ledger call, never across a
 * PKCS#11 call. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
	struct workers *workers;	/* exclusive tasks */
	struct workers *chains;		/* the chains: a thread per token */
	struct workers *tasks;		/* short ledger tasks: one thread, in order */
	unsigned n_chain_threads;
	struct tokens *tokens;
	struct recorder *recorder;
	struct db *ledger;
	pthread_mutex_t ledger_lock;	/* the chains' ledger calls, one at a time */
	const struct licensing_callbacks *cb;
	void *user;
	/* Requests in arrival order; the first starts its chain once its tokens are free. */
	struct license_req queue[LICENSING_QUEUE_MAX];
	size_t n_queue;
	unsigned running;		/* chains in progress */
	bool exclusive;			/* a recheck or a scan has the ledger to itself */
	/* Per token (index in tokens): a chain draws from it; its counter was found at 0;
	 * its counter as last read or left by an issue (-1 unknown). */
	bool busy[TOKENS_MAX];
	bool empty[TOKENS_MAX];
	int64_t left[TOKENS_MAX];
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

static void ledger_lock(struct license_chain *w)
{
	if (w->lock)
		pthread_mutex_lock(w->lock);
}

static void ledger_unlock(struct license_chain *w)
{
	if (w->lock)
		pthread_mutex_unlock(w->lock);
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
	int rc;

	need_name(&w->need[i], what, sizeof(what));
	switch (-r) {
	case HSM_ERR_TOKEN_REMOVED:
	case HSM_ERR_DEVICE:
	case HSM_ERR_NOT_LOGGED_IN: {
		/* The counter may have moved: the token says, once it can be read. */
		uint32_t count;

		rc = hsm_counter_read(w->hsm[i], &count);
		if (rc == 0) {
			int64_t granted = token_granted(w->hsm[i]);

			ledger_lock(w);
			rc = token_reconcile_granted(db, tok, count, granted);
			ledger_unlock(w);
		}
		if (rc == 0) {
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
		w->empty = (int)i;
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
	ledger_lock(w);
	if (db_ledger_cancel(db, license_id, w->cause) < 0)
		log_error("ledger: cannot void reservation %" PRId64 ": %s", license_id,
			  db_last_error(db));
	ledger_unlock(w);
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
	uint64_t known;
	bool changed;
	int64_t id;
	int r;

	need_name(l, what, sizeof(what));
	ledger_lock(w);
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
		ledger_unlock(w);
		db_license_free(lic);
		return;
	}
	db_license_free(lic);
	if (r < 0 && r != -ENOENT) {
		chain_fail(w, false, "cannot look up the chip's license: %s", db_last_error(db));
		ledger_unlock(w);
		return;
	}
	ledger_unlock(w);

	r = hsm_counter_read(w->hsm[i], &count);
	if (r < 0) {
		chain_fail(w, true, "cannot read the HSM license counter of token %s: %s",
			   w->serial[i], hsm_error_to_string(r));
		return;
	}
	/* A counter that is not where the ledger left it was changed outside sfid (a spend
	 * with sfi-hsm license, a refill): the trail states it before the next spend. */
	ledger_lock(w);
	changed = db_token_counter(db, w->serial[i], &known) == 0 && known != count;
	ledger_unlock(w);
	if (changed) {
		int64_t granted = token_granted(w->hsm[i]);

		ledger_lock(w);
		r = token_reconcile_granted(db, w->serial[i], count, granted);
		if (r < 0)
			chain_fail(w, true, "cannot record a change of token %s's counter: %s",
				   w->serial[i], db_last_error(db));
		ledger_unlock(w);
		if (r < 0)
			return;
	}
	if (count == 0) {
		chain_fail(w, true, "the license counter of HSM token %s (%s) is exhausted; load a "
			   "token with licenses left", w->serial[i], what);
		w->empty = (int)i;
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
	ledger_lock(w);
	r = db_ledger_reserve(db, &res, &id);
	if (r < 0)
		chain_fail(w, true, "the database refuses new license records (%s); no count was "
			   "spent", db_last_error(db));
	ledger_unlock(w);
	if (r < 0)
		return;
	memcpy(req.image_id, w->image_id, OSFI_ID_LEN);
	r = hsm_license_issue(w->hsm[i], &req, count, &out);
	if (r < 0) {
		chain_hsm_failed(w, i, id, r);
		return;
	}
	ledger_lock(w);
	r = db_ledger_issue(db, id, out.count_after, out.license, OSFI_LICENSE_LEN);
	if (r < 0)
		/* The reservation stays open: reconciliation at restart finds the spent count. */
		chain_fail(w, true, "the database cannot record licenses (%s); free disk space and "
			   "restart sfid", db_last_error(db));
	ledger_unlock(w);
	if (r < 0) {
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
	w->empty = -1;
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
	ledger_lock(w);
	for (size_t i = 0; i < w->n; i++)
		if (w->set.id[i] > 0 && !w->set.reused[i] &&
		    db_ledger_not_installed(w->ledger, w->set.id[i], w->cause) < 0)
			log_error("ledger: cannot record license %" PRId64 " as not installed: %s",
				  w->set.id[i], db_last_error(w->ledger));
	ledger_unlock(w);
}

/* ---- the queue ---- */

struct license_work {
	struct licensing *l;
	struct license_req req;
	int token[JOB_LICENSES_MAX];	/* of each counted license; -1 global */
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

static bool same_pool(const struct licensing *l, size_t a, size_t b)
{
	return memcmp(tokens_at(l->tokens, a)->firmware_id, tokens_at(l->tokens, b)->firmware_id,
		      OSFI_ID_LEN) == 0;
}

/* The serials of token i's pool, for messages. */
static void pool_serials(const struct licensing *l, size_t i, char *out, size_t size)
{
	size_t len = 0;

	out[0] = '\0';
	for (size_t k = 0; k < tokens_count(l->tokens) && len < size; k++)
		if (same_pool(l, i, k))
			len += (size_t)snprintf(out + len, size - len, "%s%s", len ? ", " : "",
						tokens_at(l->tokens, k)->serial);
}

/* True when a token of token i's pool other than i may still have licenses. */
static bool pool_has_left(const struct licensing *l, size_t i)
{
	for (size_t k = 0; k < tokens_count(l->tokens); k++)
		if (k != i && same_pool(l, i, k) && !l->empty[k])
			return true;
	return false;
}

/* Token i's counter is at 0: it is passed over while others of its pool have licenses. */
static void token_ran_dry(struct licensing *l, size_t i)
{
	bool was = l->empty[i];

	l->empty[i] = true;
	l->left[i] = 0;
	if (!was && pool_has_left(l, i))
		log_notice("HSM token %s has no licenses left; the other tokens of its pool go on",
			   tokens_at(l->tokens, i)->serial);
}

/* Puts a request back at the head of the queue (its chain found a token of a pool empty). */
static void requeue(struct licensing *l, const struct license_req *req)
{
	if (l->n_queue >= LICENSING_QUEUE_MAX) {
		l->cb->failed(l->user, req->who, "license queue full");
		return;
	}
	memmove(&l->queue[1], &l->queue[0], l->n_queue * sizeof(l->queue[0]));
	l->queue[0] = *req;
	l->n_queue++;
}

static void chain_done(void *data)
{
	struct license_work *w = data;
	struct licensing *l = w->l;
	struct license_chain *c = &w->c;
	void *who = w->req.who;

	for (size_t i = 0; i < c->n; i++) {
		if (w->token[i] < 0)
			continue;
		l->busy[w->token[i]] = false;
		if (c->set.counted[i]) {
			l->left[w->token[i]] = c->set.counter_after[i];
			if (c->set.counter_after[i] == 0)
				token_ran_dry(l, (size_t)w->token[i]);
			else
				l->empty[w->token[i]] = false;
		}
	}
	l->running--;
	if (c->failed && c->empty >= 0 && w->token[c->empty] >= 0) {
		size_t t = (size_t)w->token[c->empty];

		token_ran_dry(l, t);
		if (pool_has_left(l, t)) {
			/* The other tokens of the pool go on: the chip waits for one of them. */
			if (l->cb->wanted(l->user, who, c->uid_hex))
				requeue(l, &w->req);
			work_free(w);
			licensing_kick(l);
			l->cb->idle(l->user);
			return;
		}
		if (tokens_pool_size(l->tokens, t) > 1) {
			char serials[200];

			pool_serials(l, t, serials, sizeof(serials));
			snprintf(c->cause, sizeof(c->cause), "the license counters of every HSM token "
				 "of the pool (%s) are exhausted; load tokens with licenses left",
				 serials);
			snprintf(c->halt, sizeof(c->halt), "%s", c->cause);
		}
	}
	if (c->failed) {
		log_error("slot %s chip %s: %s", l->cb->name(l->user, who), c->uid_hex, c->cause);
		l->cb->failed(l->user, who, c->cause);
		if (c->halt[0])
			l->cb->halt(l->user, c->halt);
	} else if (!l->cb->wanted(l->user, who, c->uid_hex)) {
		/* The chip went away while the HSM worked: its licenses stay reusable. */
		for (size_t i = 0; i < c->set.n; i++)
			if (c->set.id[i] > 0)
				rec_license_not_installed(l->recorder, c->set.id[i],
							  "chip left the slot before the license "
							  "was sent");
	} else {
		l->cb->ready(l->user, who, &c->set);
	}
	work_free(w);
	licensing_kick(l);
	l->cb->idle(l->user);
}

/* Picks a token for each counted license of j: a free one of the pool of the token the job
 * names, passing over the ones found exhausted while others of the pool may have licenses
 * (when none may, one of them: its chain finds the counter exhausted and says so). Returns
 * true when every one is free (token set), false to wait for one. */
static bool pick_tokens(struct licensing *l, const struct job *j, int token[JOB_LICENSES_MAX])
{
	bool taken[TOKENS_MAX] = { false };

	for (size_t i = 0; i < j->n_lic; i++) {
		size_t want;
		int pick = -1, dry = -1;

		token[i] = -1;
		if (j->lic[i].global)
			continue;
		want = (size_t)j->lic[i].token;
		for (size_t k = 0; k < tokens_count(l->tokens) && pick < 0; k++) {
			if (!same_pool(l, want, k) || l->busy[k] || taken[k])
				continue;
			if (!l->empty[k])
				pick = (int)k;
			else if (dry < 0)
				dry = (int)k;
		}
		if (pick < 0 && dry >= 0 && !pool_has_left(l, (size_t)dry))
			pick = dry;
		if (pick < 0)
			return false;
		token[i] = pick;
		taken[pick] = true;
	}
	return true;
}

static void licensing_kick(struct licensing *l)
{
	while (!l->exclusive && l->running < l->n_chain_threads && l->n_queue > 0) {
		const struct job *j = l->cb->job(l->user);
		const char *halt = l->cb->halted(l->user);
		struct license_req req = l->queue[0];
		int token[JOB_LICENSES_MAX];
		struct license_work *w;
		bool tokens_ok = true;

		if (!l->cb->wanted(l->user, req.who, req.uid_hex)) {
			memmove(&l->queue[0], &l->queue[1], (l->n_queue - 1) * sizeof(l->queue[0]));
			l->n_queue--;
			l->cb->dequeued(l->user, req.who);
			continue;
		}
		if (!halt && j) {
			for (size_t i = 0; i < j->n_lic; i++)
				tokens_ok &= j->lic[i].global || (j->lic[i].token >= 0 &&
					     (size_t)j->lic[i].token < tokens_count(l->tokens));
			if (tokens_ok && !pick_tokens(l, j, token))
				return;	/* the head waits for a token of its pool */
		}
		memmove(&l->queue[0], &l->queue[1], (l->n_queue - 1) * sizeof(l->queue[0]));
		l->n_queue--;
		l->cb->dequeued(l->user, req.who);
		if (halt || !j) {
			l->cb->failed(l->user, req.who, halt ? halt : "no job is loaded");
			continue;
		}
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
		w->req = req;
		w->c.ledger = l->ledger;
		w->c.lock = &l->ledger_lock;
		memcpy(w->c.uid_hex, req.uid_hex, sizeof(w->c.uid_hex));
		memcpy(w->c.cert, req.cert, sizeof(w->c.cert));
		w->c.job_id = j->id;
		w->c.attempt_id = req.attempt_id;
		w->c.device_id = j->device_id;
		memcpy(w->c.image_id, j->image_id, OSFI_ID_LEN);
		w->c.n = j->n_lic;
		for (size_t i = 0; i < j->n_lic; i++) {
			w->c.need[i] = j->lic[i];
			w->token[i] = token[i];
			if (token[i] >= 0) {
				const struct token *t = tokens_at(l->tokens, (size_t)token[i]);

				w->c.hsm[i] = t->h;
				snprintf(w->c.serial[i], sizeof(w->c.serial[i]), "%s", t->serial);
			}
		}
		if (workers_submit(l->chains, chain_work, chain_done, w) < 0) {
			l->cb->failed(l->user, req.who, "daemon shutting down");
			work_free(w);
			continue;
		}
		for (size_t i = 0; i < j->n_lic; i++)
			if (token[i] >= 0)
				l->busy[token[i]] = true;
		l->running++;
	}
}

void licensing_request(struct licensing *l, void *who, const char *uid_hex,
		       const uint8_t cert[OSFI_CERT_LEN], int64_t attempt_id)
{
	struct license_req *r;

	/* One request per requester: one put back for a dry token gives way to this one. */
	licensing_cancel(l, who);
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

/* ---- short ledger tasks beside the chains ---- */

/* The longest a short ledger task waits for the ledger's lock (held by a chain's ledger call
 * or a task that has the ledger to itself, each short): past it the task is not run. */
#define LEDGER_TASK_LOCK_MS 10000

struct ledger_task {
	struct licensing *l;
	void (*work)(struct db *ledger, void *arg);
	void (*done)(void *arg, int r);
	void *arg;
	int r;
};

static void ledger_task_work(void *data)
{
	struct ledger_task *t = data;
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += LEDGER_TASK_LOCK_MS / 1000;
	if (pthread_mutex_timedlock(&t->l->ledger_lock, &until) != 0) {
		t->r = -ETIMEDOUT;
		return;
	}
	t->work(t->l->ledger, t->arg);
	pthread_mutex_unlock(&t->l->ledger_lock);
}

static void ledger_task_done(void *data)
{
	struct ledger_task *t = data;

	t->done(t->arg, t->r);
	free(t);
}

int licensing_ledger_task(struct licensing *l, void (*work)(struct db *ledger, void *arg),
			  void (*done)(void *arg, int r), void *arg)
{
	struct ledger_task *t;

	if (l->exclusive)
		return -EBUSY;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	*t = (struct ledger_task){ .l = l, .work = work, .done = done, .arg = arg };
	if (!l->tasks || workers_submit(l->tasks, ledger_task_work, ledger_task_done, t) < 0) {
		free(t);
		return -ESHUTDOWN;
	}
	return 0;
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

	/* A short ledger task may still be running beside it. */
	pthread_mutex_lock(&x->l->ledger_lock);
	x->work(x->l->ledger, x->arg);
	pthread_mutex_unlock(&x->l->ledger_lock);
}

static void exclusive_done(void *data)
{
	struct exclusive *x = data;
	struct licensing *l = x->l;

	x->done(x->arg);
	free(x);
	l->exclusive = false;
	licensing_kick(l);
	l->cb->idle(l->user);
}

int licensing_exclusive(struct licensing *l, void (*work)(struct db *ledger, void *arg),
			void (*done)(void *arg), void *arg)
{
	struct exclusive *x;

	if (l->exclusive || l->running > 0)
		return -EBUSY;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	*x = (struct exclusive){ .l = l, .work = work, .done = done, .arg = arg };
	l->exclusive = true;
	if (workers_submit(l->workers, exclusive_work, exclusive_done, x) < 0) {
		l->exclusive = false;
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
	int64_t count[TOKENS_MAX];	/* -1 not read */
	size_t n;
	bool ok;
	char why[300];
	void (*done)(void *arg, bool ok, const char *why);
	void *arg;
};

/* A counted pool whose every token is at 0: its serials in rc->why. */
static bool recheck_pools_dry(struct recheck *rc)
{
	for (size_t i = 0; i < rc->n; i++) {
		size_t len = 0;
		bool left = false;

		if (!rc->counted[i] || rc->count[i] != 0)
			continue;
		for (size_t k = 0; k < rc->n; k++)
			if (memcmp(rc->fwid[k], rc->fwid[i], OSFI_ID_LEN) == 0)
				left |= rc->count[k] > 0;
		if (left)
			continue;
		len = (size_t)snprintf(rc->why, sizeof(rc->why), "the license counter of HSM "
				       "token");
		for (size_t k = 0, m = 0; k < rc->n && len < sizeof(rc->why); k++)
			if (memcmp(rc->fwid[k], rc->fwid[i], OSFI_ID_LEN) == 0)
				len += (size_t)snprintf(rc->why + len, sizeof(rc->why) - len, "%s %s",
							m++ ? "," : "", rc->serial[k]);
		if (len < sizeof(rc->why))
			snprintf(rc->why + len, sizeof(rc->why) - len, " is still exhausted");
		return true;
	}
	return false;
}

static void recheck_work(struct db *ledger, void *data)
{
	struct recheck *rc = data;

	rc->ok = true;
	for (size_t i = 0; i < rc->n; i++)
		rc->count[i] = -1;
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
		rc->count[i] = count;
		if (token_reconcile(ledger, rc->hsm[i], rc->serial[i], count) < 0) {
			snprintf(rc->why, sizeof(rc->why), "the license ledger cannot be reconciled: "
				 "%s", db_last_error(ledger));
			rc->ok = false;
			break;
		}
	}
	if (rc->ok && recheck_pools_dry(rc))
		rc->ok = false;
}

static void recheck_done(void *data)
{
	struct recheck *rc = data;

	for (size_t i = 0; i < rc->n; i++)
		if (rc->count[i] >= 0) {
			rc->l->left[i] = rc->count[i];
			rc->l->empty[i] = rc->count[i] == 0;
		}
	rc->done(rc->arg, rc->ok, rc->why);
	free(rc);
}

int licensing_recheck(struct licensing *l, void (*done)(void *arg, bool ok, const char *why),
		      void *arg)
{
	const struct job *j = l->cb->job(l->user);
	struct recheck *rc;
	int r;

	if (l->exclusive || l->running > 0)
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
			rc->counted[i] |= !j->lic[k].global && j->lic[k].token >= 0 &&
					  same_pool(l, (size_t)j->lic[k].token, i);
		rc->n++;
	}
	r = licensing_exclusive(l, recheck_work, recheck_done, rc);
	if (r < 0)
		free(rc);
	return r;
}

/* ---- the tokens' counters at startup ---- */

int licensing_reconcile_tokens(struct licensing *l)
{
	for (size_t i = 0; i < tokens_count(l->tokens) && i < TOKENS_MAX; i++) {
		const struct token *t = tokens_at(l->tokens, i);
		uint32_t count;
		int r;

		r = hsm_counter_read(t->h, &count);
		if (r < 0) {
			log_error("cannot read the HSM license counter of token %s: %s", t->serial,
				  hsm_error_to_string(r));
			return -EIO;
		}
		r = token_reconcile(l->ledger, t->h, t->serial, count);
		if (r < 0) {
			log_error("cannot reconcile the license ledger: %s", db_last_error(l->ledger));
			return r;
		}
		l->left[i] = count;
		l->empty[i] = count == 0;
		log_info("HSM token %s (serial %s)%s: %" PRIu32 " licenses left", t->label,
			 t->serial, i == 0 ? "" : " of the line token's pool", count);
	}
	return 0;
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
	int r;

	if (!l)
		return -ENOMEM;
	l->workers = p->workers;
	l->tokens = p->tokens;
	l->recorder = p->recorder;
	l->ledger = p->ledger;
	l->cb = p->cb;
	l->user = p->user;
	for (size_t i = 0; i < TOKENS_MAX; i++)
		l->left[i] = -1;
	/* A thread per open token (the line token and its pool): each chain holds a token. */
	l->n_chain_threads = tokens_count(p->tokens) ? (unsigned)tokens_count(p->tokens) : 1;
	r = workers_new(workers_base(p->workers), l->n_chain_threads, &l->chains);
	if (r < 0) {
		free(l);
		return r;
	}
	/* Short ledger tasks run one at a time in the order asked (a chip's failed outcome
	 * before its next intent), on a thread of their own: the shared workers may be busy. */
	r = workers_new(workers_base(p->workers), 1, &l->tasks);
	if (r < 0) {
		workers_free(l->chains);
		free(l);
		return r;
	}
	pthread_mutex_init(&l->ledger_lock, NULL);
	*ret = l;
	return 0;
}

void licensing_stop(struct licensing *l)
{
	if (l) {
		l->chains = workers_free(l->chains);
		l->tasks = workers_free(l->tasks);
	}
}

struct licensing *licensing_free(struct licensing *l)
{
	if (!l)
		return NULL;
	licensing_stop(l);
	db_close(l->ledger);
	pthread_mutex_destroy(&l->ledger_lock);
	free(l);
	return NULL;
}

struct db *licensing_ledger(struct licensing *l)
{
	return l ? l->ledger : NULL;
}

bool licensing_busy(const struct licensing *l)
{
	return l && (l->exclusive || l->running > 0);
}

int64_t licensing_left(const struct licensing *l)
{
	int64_t sum = -1;

	if (!l || !tokens_count(l->tokens))
		return -1;
	for (size_t i = 0; i < tokens_count(l->tokens) && i < TOKENS_MAX; i++)
		if (same_pool(l, 0, i) && l->left[i] >= 0)
			sum = (sum < 0 ? 0 : sum) + l->left[i];
	return sum;
}

void licensing_set_left(struct licensing *l, size_t i, int64_t left)
{
	if (l && i < TOKENS_MAX) {
		l->left[i] = left;
		l->empty[i] = left == 0;
	}
}

/* Tokens and the per-chip license chain: see license.h.
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
#include "license.h"
#include "log.h"
#include "recorder.h"
#include "sfid.h"
#include "slot.h"
#include "worker.h"

/* ---- tokens ---- */

int token_login(const struct sfid *d, struct hsm *h)
{
	if (d->cfg->hsm_pin_file)
		return hsm_login_pin_file(h, d->cfg->hsm_pin_file);
	return hsm_login_credential(h, d->cfg->hsm_pin_credential);
}

int64_t token_granted(struct hsm *h)
{
	uint32_t granted;

	return hsm_granted_read(h, &granted) == 0 ? (int64_t)granted : -1;
}

static bool serial_listed(char (*list)[64], size_t n, const char *serial)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], serial) == 0)
			return true;
	return false;
}

void token_scan_prepare(const struct sfid *d, const struct job *j, struct token_scan *sc)
{
	memset(sc, 0, sizeof(*sc));
	for (size_t i = 0; i < j->n_lic; i++) {
		const struct job_license *l = &j->lic[i];
		bool dup = false;

		if (l->global || l->token >= 0)
			continue;
		for (size_t k = 0; k < sc->n_want; k++)
			dup |= memcmp(sc->want[k], l->firmware_id, OSFI_ID_LEN) == 0;
		if (!dup && sc->n_want < SFID_TOKENS_MAX)
			memcpy(sc->want[sc->n_want++], l->firmware_id, OSFI_ID_LEN);
	}
	for (size_t i = 0; i < d->n_tokens && sc->n_skip < 2 * SFID_TOKENS_MAX; i++)
		snprintf(sc->skip[sc->n_skip++], sizeof(sc->skip[0]), "%s", d->tokens[i].serial);
	for (size_t i = 0; i < d->n_refused_tokens && sc->n_skip < 2 * SFID_TOKENS_MAX; i++)
		snprintf(sc->skip[sc->n_skip++], sizeof(sc->skip[0]), "%s", d->refused_tokens[i]);
}

static bool scan_wanted(const struct token_scan *sc, const uint8_t id[OSFI_ID_LEN])
{
	for (size_t k = 0; k < sc->n_want; k++)
		if (memcmp(sc->want[k], id, OSFI_ID_LEN) == 0)
			return true;
	return false;
}

void token_scan_run(const struct sfid *d, struct token_scan *sc)
{
	struct hsm_token_info *list = NULL;
	size_t n = 0;
	int r;

	if (sc->n_want == 0)
		return;
	r = hsm_token_list(d->cfg->hsm_module, &list, &n);
	if (r < 0) {
		log_error("cannot list the tokens of %s: %s", d->cfg->hsm_module,
			  hsm_error_to_string(r));
		return;
	}
	for (size_t i = 0; i < n && sc->n_found < SFID_TOKENS_MAX; i++) {
		const struct hsm_token_info *ti = &list[i];
		struct token *t = &sc->found[sc->n_found];
		struct hsm *h = NULL;

		if (serial_listed(sc->skip, sc->n_skip, ti->serial))
			continue;
		if (ti->pin_at_risk) {
			log_warning("token '%s' (serial %s) reports few PIN tries left or a locked "
				    "PIN: not tried as a module token", ti->label, ti->serial);
			continue;
		}
		r = hsm_open(d->cfg->hsm_module, NULL, ti->serial, &h);
		if (r == 0)
			r = token_login(d, h);
		if (r == 0)
			r = hsm_firmware_id(h, t->firmware_id);
		if (r < 0) {
			log_notice("token '%s' (serial %s) is not a module token sfid can use: %s",
				   ti->label, ti->serial, hsm_error_to_string(r));
			if ((r == -HSM_ERR_PIN_INCORRECT || r == -HSM_ERR_PIN_LOCKED) &&
			    sc->n_refused < SFID_TOKENS_MAX)
				snprintf(sc->refused[sc->n_refused++], sizeof(sc->refused[0]), "%s",
					 ti->serial);
			hsm_close(h);
			continue;
		}
		if (!scan_wanted(sc, t->firmware_id)) {
			hsm_close(h);
			continue;
		}
		t->h = h;
		snprintf(t->serial, sizeof(t->serial), "%s", ti->serial);
		snprintf(t->label, sizeof(t->label), "%s", ti->label);
		sfid_hex(t->firmware_id, OSFI_ID_LEN, t->firmware_id_hex);
		sc->n_found++;
		/* A crash may have left one of its reservations open: its counter settles it. */
		{
			uint32_t count;
			struct db_diff *diffs = NULL;
			size_t nd = 0;

			if (hsm_counter_read(h, &count) == 0 && d->ldb &&
			    db_reconcile_granted(d->ldb, t->serial, count, token_granted(h), &diffs,
						 &nd) == 0) {
				for (size_t k = 0; k < nd; k++)
					log_warning("ledger reconciliation: %s: license %" PRId64
						    " of token %s", db_diff_kind_to_string(diffs[k].kind),
						    diffs[k].license_id, t->serial);
				log_info("module token '%s' (serial %s): %" PRIu32 " licenses left; "
					 "firmware id %.16s...", t->label, t->serial, count,
					 t->firmware_id_hex);
				free(diffs);
			}
		}
	}
	free(list);
}

bool job_tokens_resolved(struct sfid *d, struct job *j)
{
	bool all = true;

	for (size_t i = 0; i < j->n_lic; i++) {
		struct job_license *l = &j->lic[i];

		if (l->global)
			continue;
		l->token = -1;
		for (size_t k = 0; k < d->n_tokens; k++)
			if (memcmp(d->tokens[k].firmware_id, l->firmware_id, OSFI_ID_LEN) == 0) {
				l->token = (int)k;
				break;
			}
		all &= l->token >= 0;
	}
	return all;
}

bool token_scan_adopt(struct sfid *d, struct token_scan *sc, struct job *j, char *msg,
		      size_t msg_size)
{
	for (size_t i = 0; i < sc->n_found; i++) {
		if (d->n_tokens < SFID_TOKENS_MAX)
			d->tokens[d->n_tokens++] = sc->found[i];
		else
			hsm_close(sc->found[i].h);
	}
	sc->n_found = 0;
	for (size_t i = 0; i < sc->n_refused; i++)
		if (d->n_refused_tokens < SFID_TOKENS_MAX &&
		    !serial_listed(d->refused_tokens, d->n_refused_tokens, sc->refused[i]))
			snprintf(d->refused_tokens[d->n_refused_tokens++], sizeof(d->refused_tokens[0]),
				 "%s", sc->refused[i]);
	if (job_tokens_resolved(d, j))
		return true;
	for (size_t i = 0; i < j->n_lic; i++)
		if (!j->lic[i].global && j->lic[i].token < 0) {
			snprintf(msg, msg_size, "%s line %u: no token provisioned for module %" PRIu32
				 " (firmware id %.16s...) is present, or it does not accept the "
				 "configured PIN; insert it and load the job again",
				 j->module_file ? j->module_file : "", j->lic[i].line, j->lic[i].target,
				 j->lic[i].firmware_id_hex);
			break;
		}
	return false;
}

/* ---- the license chain ---- */

struct license_work {
	struct sfid *d;
	struct slot *s;
	char uid_hex[2 * OSFI_UID_LEN + 1];
	uint8_t cert[OSFI_CERT_LEN];
	int64_t job_id;
	int64_t attempt_id;
	uint16_t device_id;
	uint8_t image_id[OSFI_ID_LEN];
	struct job_license need[JOB_LICENSES_MAX];
	struct hsm *hsm[JOB_LICENSES_MAX];
	char serial[JOB_LICENSES_MAX][64];
	size_t n;

	struct license_set set;
	bool failed;
	char cause[300];
	char halt[300];
};

static void work_free(struct license_work *w)
{
	OPENSSL_cleanse(&w->set, sizeof(w->set));
	OPENSSL_cleanse(w->need, sizeof(w->need));
	free(w);
}

__attribute__((format(printf, 3, 4)))
static void chain_fail(struct license_work *w, bool halt, const char *fmt, ...)
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
static void chain_hsm_failed(struct license_work *w, size_t i, int64_t license_id, int r)
{
	struct db *db = w->d->ldb;
	const char *tok = w->serial[i];
	char what[32];

	need_name(&w->need[i], what, sizeof(what));
	switch (-r) {
	case HSM_ERR_TOKEN_REMOVED:
	case HSM_ERR_DEVICE:
	case HSM_ERR_NOT_LOGGED_IN: {
		/* The counter may have moved: the token says, once it can be read. */
		uint32_t count;
		struct db_diff *diffs = NULL;
		size_t nd = 0;

		if (hsm_counter_read(w->hsm[i], &count) == 0 &&
		    db_reconcile_granted(db, tok, count, token_granted(w->hsm[i]), &diffs, &nd) == 0) {
			for (size_t k = 0; k < nd; k++)
				log_warning("ledger: %s: license %" PRId64 " chip %s: ledger expects "
					    "counter %" PRIu64 ", token has %" PRIu64,
					    db_diff_kind_to_string(diffs[k].kind), diffs[k].license_id,
					    diffs[k].chip_uid, diffs[k].expected, diffs[k].actual);
			free(diffs);
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
static void chain_one(struct license_work *w, size_t i)
{
	struct db *db = w->d->ldb;
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
		struct db_diff *diffs = NULL;
		uint64_t known;
		size_t nd = 0;

		if (db_token_counter(db, w->serial[i], &known) == 0 && known != count) {
			if (db_reconcile_granted(db, w->serial[i], count, token_granted(w->hsm[i]),
						 &diffs, &nd) < 0) {
				chain_fail(w, true, "cannot record a change of token %s's counter: %s",
					   w->serial[i], db_last_error(db));
				return;
			}
			for (size_t k = 0; k < nd; k++)
				log_warning("token %s: %s: counter %" PRIu64 " where the ledger "
					    "expected %" PRIu64 " (recorded in the audit trail)",
					    w->serial[i], db_diff_kind_to_string(diffs[k].kind),
					    diffs[k].actual, diffs[k].expected);
			free(diffs);
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

static void chain_work(void *data)
{
	struct license_work *w = data;

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
		    db_ledger_not_installed(w->d->ldb, w->set.id[i], w->cause) < 0)
			log_error("ledger: cannot record license %" PRId64 " as not installed: %s",
				  w->set.id[i], db_last_error(w->d->ldb));
}

static void chain_done(void *data)
{
	struct license_work *w = data;
	struct sfid *d = w->d;

	d->license_busy = false;
	/* The line token's licenses left, for status and watch. */
	if (d->job && d->job->n_lic > 0 && d->job->lic[0].token == 0 && w->set.counted[0])
		d->licenses_left = w->set.counter_after[0];
	if (w->failed) {
		log_error("slot %s chip %s: %s", slot_name(w->s), w->uid_hex, w->cause);
		slot_license_failed(w->s, w->cause);
		if (w->halt[0])
			sfid_halt(d, "%s", w->halt);
	} else if (!slot_license_wanted(w->s) || strcmp(slot_chip_hex(w->s), w->uid_hex) != 0) {
		/* The chip went away while the HSM worked: its licenses stay reusable. */
		for (size_t i = 0; i < w->set.n; i++)
			if (w->set.id[i] > 0)
				rec_license_not_installed(d->recorder, w->set.id[i],
							  "chip left the slot before the license "
							  "was sent");
	} else {
		slot_licenses_ready(w->s, &w->set);
	}
	work_free(w);
	sfid_license_kick(d);
	sfid_slot_settled(d);
}

void sfid_license_kick(struct sfid *d)
{
	struct license_work *w;
	struct slot *s;

	while (!d->license_busy && d->n_license_queue > 0) {
		const struct job *j = d->job;
		bool tokens_ok = true;

		s = d->license_queue[0];
		memmove(&d->license_queue[0], &d->license_queue[1],
			(d->n_license_queue - 1) * sizeof(d->license_queue[0]));
		d->n_license_queue--;
		slot_license_dequeued(s);
		if (!slot_license_wanted(s))
			continue;
		if (d->halt_reason[0] || !j) {
			slot_license_failed(s, d->halt_reason[0] ? d->halt_reason : "no job is loaded");
			continue;
		}
		for (size_t i = 0; i < j->n_lic; i++)
			tokens_ok &= j->lic[i].global ||
				     (j->lic[i].token >= 0 && (size_t)j->lic[i].token < d->n_tokens);
		if (!tokens_ok) {
			slot_license_failed(s, "a token of the job is not open");
			continue;
		}
		w = calloc(1, sizeof(*w));
		if (!w) {
			slot_license_failed(s, "out of memory");
			continue;
		}
		w->d = d;
		w->s = s;
		snprintf(w->uid_hex, sizeof(w->uid_hex), "%s", slot_chip_hex(s));
		memcpy(w->cert, slot_license_cert(s), sizeof(w->cert));
		w->job_id = j->id;
		w->attempt_id = slot_attempt_id(s);
		w->device_id = j->device_id;
		memcpy(w->image_id, j->image_id, OSFI_ID_LEN);
		w->n = j->n_lic;
		for (size_t i = 0; i < j->n_lic; i++) {
			w->need[i] = j->lic[i];
			if (!j->lic[i].global) {
				w->hsm[i] = d->tokens[j->lic[i].token].h;
				snprintf(w->serial[i], sizeof(w->serial[i]), "%s",
					 d->tokens[j->lic[i].token].serial);
			}
		}
		d->license_busy = true;
		if (workers_submit(d->workers, chain_work, chain_done, w) < 0) {
			d->license_busy = false;
			slot_license_failed(s, "daemon shutting down");
			work_free(w);
		}
	}
}

void license_request(struct sfid *d, struct slot *s)
{
	if (d->n_license_queue >= CONFIG_SLOTS_MAX) {
		slot_license_failed(s, "license queue full");
		return;
	}
	d->license_queue[d->n_license_queue++] = s;
	sfid_license_kick(d);
}

void license_cancel(struct sfid *d, struct slot *s)
{
	for (size_t i = 0; i < d->n_license_queue; i++)
		if (d->license_queue[i] == s) {
			memmove(&d->license_queue[i], &d->license_queue[i + 1],
				(d->n_license_queue - i - 1) * sizeof(d->license_queue[0]));
			d->n_license_queue--;
			return;
		}
}

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

/* ---- checking a halted line again ---- */

struct recheck {
	struct sfid *d;
	struct hsm *hsm[SFID_TOKENS_MAX];
	char serial[SFID_TOKENS_MAX][64];
	uint8_t fwid[SFID_TOKENS_MAX][OSFI_ID_LEN];
	bool counted[SFID_TOKENS_MAX];
	size_t n;
	bool ok;
	char why[300];
	void (*done)(struct sfid *d, bool ok, const char *why, void *arg);
	void *arg;
};

static void recheck_work(void *data)
{
	struct recheck *rc = data;

	rc->ok = true;
	for (size_t i = 0; i < rc->n && rc->ok; i++) {
		struct db_diff *diffs = NULL;
		uint32_t count;
		size_t nd = 0;
		uint8_t fwid[OSFI_ID_LEN];
		int r = hsm_counter_read(rc->hsm[i], &count);

		if (r == -HSM_ERR_TOKEN_REMOVED || r == -HSM_ERR_DEVICE || r == -HSM_ERR_NOT_LOGGED_IN) {
			/* Put back after it was removed: a new session and a new login. */
			r = hsm_reopen(rc->hsm[i]);
			if (r == 0)
				r = token_login(rc->d, rc->hsm[i]);
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
		if (db_reconcile_granted(rc->d->ldb, rc->serial[i], count, token_granted(rc->hsm[i]),
					 &diffs, &nd) < 0) {
			snprintf(rc->why, sizeof(rc->why), "the license ledger cannot be reconciled: "
				 "%s", db_last_error(rc->d->ldb));
			rc->ok = false;
			break;
		}
		for (size_t k = 0; k < nd; k++)
			log_warning("ledger reconciliation: %s: license %" PRId64 " chip %s: token %s",
				    db_diff_kind_to_string(diffs[k].kind), diffs[k].license_id,
				    diffs[k].chip_uid[0] ? diffs[k].chip_uid : "-", rc->serial[i]);
		free(diffs);
	}
}

static void recheck_done(void *data)
{
	struct recheck *rc = data;
	struct sfid *d = rc->d;

	d->license_busy = false;
	d->rechecking = false;
	rc->done(d, rc->ok, rc->why, rc->arg);
	free(rc);
	sfid_license_kick(d);
	sfid_slot_settled(d);
}

int line_recheck(struct sfid *d, void (*done)(struct sfid *d, bool ok, const char *why,
					      void *arg), void *arg)
{
	struct recheck *rc;

	if (d->license_busy || d->rechecking)
		return -EBUSY;
	rc = calloc(1, sizeof(*rc));
	if (!rc)
		return -ENOMEM;
	rc->d = d;
	rc->done = done;
	rc->arg = arg;
	for (size_t i = 0; i < d->n_tokens; i++) {
		rc->hsm[i] = d->tokens[i].h;
		snprintf(rc->serial[i], sizeof(rc->serial[i]), "%s", d->tokens[i].serial);
		memcpy(rc->fwid[i], d->tokens[i].firmware_id, OSFI_ID_LEN);
		for (size_t k = 0; d->job && k < d->job->n_lic; k++)
			rc->counted[i] |= !d->job->lic[k].global && d->job->lic[k].token == (int)i;
	}
	rc->n = d->n_tokens;
	/* No license chain may use the ledger connection meanwhile. */
	d->license_busy = true;
	d->rechecking = true;
	if (workers_submit(d->workers, recheck_work, recheck_done, rc) < 0) {
		d->license_busy = false;
		d->rechecking = false;
		free(rc);
		return -ESHUTDOWN;
	}
	return 0;
}

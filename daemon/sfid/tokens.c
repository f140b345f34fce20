/* The line's HSM tokens: see tokens.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "hsm.h"
#include "job.h"
#include "log.h"
#include "tokens.h"
#include "sfi-error.h"
#include "util.h"

struct tokens {
	const char *module, *pin_file, *pin_credential;
	struct token t[TOKENS_MAX];
	size_t n;
	uint8_t ca_pub[OSFI_PUBKEY_LEN];
	/* Serials of tokens whose login failed: never tried again by this process. */
	sfi_serial refused[TOKENS_MAX];
	size_t n_refused;
};

int tokens_new(const struct tokens_params *p, struct tokens **ret)
{
	struct tokens *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->module = p->module;
	t->pin_file = p->pin_file;
	t->pin_credential = p->pin_credential;
	*ret = t;
	return 0;
}

struct tokens *tokens_free(struct tokens *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < t->n; i++)
		hsm_close(t->t[i].h);
	free(t);
	return NULL;
}

size_t tokens_count(const struct tokens *t)
{
	return t ? t->n : 0;
}

const struct token *tokens_at(const struct tokens *t, size_t i)
{
	return i < tokens_count(t) ? &t->t[i] : NULL;
}

struct hsm *tokens_line(const struct tokens *t)
{
	return tokens_count(t) ? t->t[0].h : NULL;
}

const uint8_t *tokens_ca_pub(const struct tokens *t)
{
	return tokens_count(t) ? t->ca_pub : NULL;
}

/* True when the configured token warns that a wrong PIN could lock it. */
static bool token_pin_at_risk(const struct tokens *t, const char *spec)
{
	bool serial = strncmp(spec, "serial:", 7) == 0, risk = false;
	struct hsm_token_info *list = NULL;
	size_t n = 0;

	if (hsm_token_list(t->module, &list, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(serial ? list[i].serial : list[i].label, serial ? spec + 7 : spec) == 0)
			risk |= list[i].pin_at_risk;
	free(list);
	return risk;
}

/* Opens and logs in to the token spec names, reads its firmware id and chip CA key. */
static int token_open(struct tokens *t, const char *spec, struct token *tok,
		      uint8_t ca_pub[OSFI_PUBKEY_LEN])
{
	struct hsm_token_info info;
	bool serial = strncmp(spec, "serial:", 7) == 0;
	struct hsm *h = NULL;
	int r;

	r = hsm_open(t->module, serial ? NULL : spec, serial ? spec + 7 : NULL, &h);
	if (r < 0) {
		log_error("cannot open HSM token '%s' with module %s: %s", spec, t->module,
			  hsm_error_to_string(r));
		return r;
	}
	if (token_pin_at_risk(t, spec)) {
		log_error("HSM token '%s' reports few PIN tries left (PIN count low, final try or "
			  "locked): sfid does not log in with a PIN that may be wrong; check the PIN "
			  "in %s, log in once by hand (e.g. pkcs11-tool --login) to reset the count, "
			  "then start sfid", spec, t->pin_file ? t->pin_file : t->pin_credential);
		hsm_close(h);
		return -HSM_ERR_PIN_LOCKED;
	}
	r = tokens_login(t, h);
	if (r < 0) {
		log_error("cannot log in to HSM token '%s' (PIN from %s): %s", spec,
			  t->pin_file ? t->pin_file : t->pin_credential, hsm_error_to_string(r));
		hsm_close(h);
		return r;
	}
	*tok = (struct token){ .h = h };
	r = hsm_token_info(h, &info);
	if (r == 0)
		r = hsm_firmware_id(h, tok->firmware_id);
	if (r == 0)
		r = hsm_ca_pubkey(h, ca_pub);
	if (r < 0) {
		log_error("HSM token '%s' is not usable: %s", spec, hsm_error_to_string(r));
		hsm_close(h);
		*tok = (struct token){ 0 };
		return r;
	}
	snprintf(tok->serial, sizeof(tok->serial), "%s", info.serial);
	snprintf(tok->label, sizeof(tok->label), "%s", info.label);
	sfid_hex(tok->firmware_id, OSFI_ID_LEN, tok->firmware_id_hex);
	return 0;
}

int tokens_open_line(struct tokens *t, const char *spec)
{
	int r;

	if (t->n > 0)
		return -EALREADY;
	r = token_open(t, spec, &t->t[0], t->ca_pub);
	if (r == 0)
		t->n = 1;
	return r;
}

int tokens_open_pool(struct tokens *t, const char *const *specs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t ca_pub[OSFI_PUBKEY_LEN];
		struct token tok;
		int r;

		if (t->n == 0)
			return -ENOENT;
		if (t->n >= TOKENS_MAX)
			return -ENOSPC;
		r = token_open(t, specs[i], &tok, ca_pub);
		if (r < 0)
			return r;
		for (size_t k = 0; k < t->n; k++)
			if (strcmp(t->t[k].serial, tok.serial) == 0) {
				log_error("[hsm] pool: token '%s' is token %s, named already", specs[i],
					  tok.serial);
				hsm_close(tok.h);
				return -HSM_ERR_INVALID;
			}
		if (memcmp(tok.firmware_id, t->t[0].firmware_id, OSFI_ID_LEN) != 0 ||
		    memcmp(ca_pub, t->ca_pub, OSFI_PUBKEY_LEN) != 0) {
			log_error("[hsm] pool: token '%s' (serial %s) is not provisioned like the line "
				  "token %s: %s differs; provision it for the same image and chip CA "
				  "(sfi-hsm provision)", specs[i], tok.serial, t->t[0].serial,
				  memcmp(tok.firmware_id, t->t[0].firmware_id, OSFI_ID_LEN) != 0 ?
				  "its firmware id" : "its chip CA key");
			hsm_close(tok.h);
			return -HSM_ERR_WRONG_FIRMWARE_ID;
		}
		t->t[t->n++] = tok;
	}
	return 0;
}

size_t tokens_pool_size(const struct tokens *t, size_t i)
{
	size_t n = 0;

	for (size_t k = 0; i < tokens_count(t) && k < t->n; k++)
		n += memcmp(t->t[k].firmware_id, t->t[i].firmware_id, OSFI_ID_LEN) == 0;
	return n;
}

int tokens_login(const struct tokens *t, struct hsm *h)
{
	if (t->pin_file)
		return hsm_login_pin_file(h, t->pin_file);
	return hsm_login_credential(h, t->pin_credential);
}

int64_t token_granted(struct hsm *h)
{
	uint32_t granted;

	return hsm_granted_read(h, &granted) == 0 ? (int64_t)granted : -1;
}

int token_reconcile(struct db *ledger, struct hsm *h, const char *serial, uint32_t count)
{
	return token_reconcile_granted(ledger, serial, count, token_granted(h));
}

int token_reconcile_granted(struct db *ledger, const char *serial, uint32_t count,
			    int64_t granted)
{
	struct db_diff *diffs = NULL;
	size_t n = 0;
	int r;

	r = db_reconcile_granted(ledger, serial, count, granted, &diffs, &n);
	if (r < 0)
		return r;
	for (size_t k = 0; k < n; k++)
		log_warning("ledger reconciliation: token %s: %s: license %" PRId64 " chip %s: "
			    "ledger expects counter %" PRIu64 ", token has %" PRIu64
			    " (recorded in the audit trail)", serial,
			    db_diff_kind_to_string(diffs[k].kind), diffs[k].license_id,
			    diffs[k].chip_uid[0] ? diffs[k].chip_uid : "-", diffs[k].expected,
			    diffs[k].actual);
	free(diffs);
	return r;
}

static bool serial_listed(const sfi_serial *list, size_t n, const char *serial)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], serial) == 0)
			return true;
	return false;
}

void token_scan_prepare(const struct tokens *t, const struct job *j, struct token_scan *sc)
{
	memset(sc, 0, sizeof(*sc));
	for (size_t i = 0; i < j->n_lic; i++) {
		const struct job_license *l = &j->lic[i];
		bool dup = false;

		if (l->global || l->token >= 0)
			continue;
		for (size_t k = 0; k < sc->n_want; k++)
			dup |= memcmp(sc->want[k], l->firmware_id, OSFI_ID_LEN) == 0;
		if (!dup && sc->n_want < TOKENS_MAX)
			memcpy(sc->want[sc->n_want++], l->firmware_id, OSFI_ID_LEN);
	}
	for (size_t i = 0; i < tokens_count(t) && sc->n_skip < 2 * TOKENS_MAX; i++)
		snprintf(sc->skip[sc->n_skip++], sizeof(sc->skip[0]), "%s", t->t[i].serial);
	for (size_t i = 0; t && i < t->n_refused && sc->n_skip < 2 * TOKENS_MAX; i++)
		snprintf(sc->skip[sc->n_skip++], sizeof(sc->skip[0]), "%s", t->refused[i]);
}

static bool scan_wanted(const struct token_scan *sc, const uint8_t id[OSFI_ID_LEN])
{
	for (size_t k = 0; k < sc->n_want; k++)
		if (memcmp(sc->want[k], id, OSFI_ID_LEN) == 0)
			return true;
	return false;
}

void token_scan_run(const struct tokens *tk, struct db *ledger, struct token_scan *sc)
{
	struct hsm_token_info *list = NULL;
	size_t n = 0;
	int r;

	if (sc->n_want == 0)
		return;
	r = hsm_token_list(tk->module, &list, &n);
	if (r < 0) {
		log_error("cannot list the tokens of %s: %s", tk->module,
			  hsm_error_to_string(r));
		return;
	}
	for (size_t i = 0; i < n && sc->n_found < TOKENS_MAX; i++) {
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
		r = hsm_open(tk->module, NULL, ti->serial, &h);
		if (r == 0)
			r = tokens_login(tk, h);
		if (r == 0)
			r = hsm_firmware_id(h, t->firmware_id);
		if (r < 0) {
			log_notice("token '%s' (serial %s) is not a module token sfid can use: %s",
				   ti->label, ti->serial, hsm_error_to_string(r));
			if ((r == -HSM_ERR_PIN_INCORRECT || r == -HSM_ERR_PIN_LOCKED) &&
			    sc->n_refused < TOKENS_MAX)
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

			if (hsm_counter_read(h, &count) == 0 && ledger &&
			    token_reconcile(ledger, h, t->serial, count) == 0)
				log_info("module token '%s' (serial %s): %" PRIu32 " licenses left; "
					 "firmware id %.16s...", t->label, t->serial, count,
					 t->firmware_id_hex);
		}
	}
	free(list);
}

bool tokens_resolve_job(const struct tokens *t, struct job *j)
{
	bool all = true;

	for (size_t i = 0; i < j->n_lic; i++) {
		struct job_license *l = &j->lic[i];

		if (l->global)
			continue;
		l->token = -1;
		for (size_t k = 0; k < tokens_count(t); k++)
			if (memcmp(t->t[k].firmware_id, l->firmware_id, OSFI_ID_LEN) == 0) {
				l->token = (int)k;
				break;
			}
		all &= l->token >= 0;
	}
	return all;
}

bool token_scan_adopt(struct tokens *t, struct token_scan *sc, struct job *j, char *reason,
		      size_t reason_size)
{
	for (size_t i = 0; i < sc->n_found; i++) {
		if (t->n < TOKENS_MAX)
			t->t[t->n++] = sc->found[i];
		else
			hsm_close(sc->found[i].h);
	}
	sc->n_found = 0;
	for (size_t i = 0; i < sc->n_refused; i++)
		if (t->n_refused < TOKENS_MAX &&
		    !serial_listed(t->refused, t->n_refused, sc->refused[i]))
			snprintf(t->refused[t->n_refused++], sizeof(t->refused[0]), "%s",
				 sc->refused[i]);
	if (tokens_resolve_job(t, j))
		return true;
	for (size_t i = 0; i < j->n_lic; i++)
		if (!j->lic[i].global && j->lic[i].token < 0) {
			sfi_reason(reason, reason_size, "%s line %u: no token provisioned for module %" PRIu32
				 " (firmware id %.16s...) is present, or it does not accept the "
				 "configured PIN; insert it and load the job again",
				 j->module_file ? j->module_file : "", j->lic[i].line, j->lic[i].target,
				 j->lic[i].firmware_id_hex);
			break;
		}
	return false;
}

/* Offline verification of a JSON Lines audit export: hash chain, checkpoint signatures and
 * license arithmetic, from the export and the audit public key alone. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "audit-format.h"
#include "audit-verify.h"
#include "export-reader.h"

enum lic_state {
	LIC_RESERVED,
	LIC_ISSUED,
	LIC_INSTALLED,
	LIC_NOT_INSTALLED,
	LIC_UNCONFIRMED,
	LIC_VOID,
	_LIC_STATE_MAX,
};

struct lic {
	int64_t id; /* 0: empty slot */
	enum lic_state state;
	char token[72];
	uint64_t counter_before;
};

struct verifier {
	struct verify_result *res;
	const struct verify_options *opts;
	struct lic *lics;
	size_t lic_cap, lic_count;
	size_t export_no;     /* 1-based */
	bool have_cur_key;    /* checkpoints so far name this key */
	uint8_t cur_key[AUDIT_HASH_SIZE];
	bool have_pending;    /* an audit.key record names the next key; the current key's */
	uint8_t pending_key[AUDIT_HASH_SIZE]; /* next checkpoint signs the change */
	uint64_t pending_seq;
	uint8_t first_anchor[AUDIT_HASH_SIZE]; /* prev_hash of the trail's first record */
	uint8_t (*hashes)[AUDIT_HASH_SIZE]; /* of every record seen, from res->first_seq on */
	size_t n_hashes, hash_cap;
};

static int hash_push(struct verifier *v, const uint8_t h[AUDIT_HASH_SIZE])
{
	if (v->n_hashes == v->hash_cap) {
		size_t cap = v->hash_cap ? v->hash_cap * 2 : 1024;
		void *p = realloc(v->hashes, cap * AUDIT_HASH_SIZE);

		if (!p)
			return -ENOMEM;
		v->hashes = p;
		v->hash_cap = cap;
	}
	memcpy(v->hashes[v->n_hashes++], h, AUDIT_HASH_SIZE);
	return 0;
}

/* The hash of record seq as an earlier export stated it (seq first_seq - 1: the anchor). */
static const uint8_t *hash_of(struct verifier *v, uint64_t seq, const uint8_t *anchor)
{
	uint64_t first = v->res->first_seq;

	if (seq + 1 == first)
		return anchor;
	if (seq < first || seq - first >= v->n_hashes)
		return NULL;
	return v->hashes[seq - first];
}

static void warn(struct verifier *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(struct verifier *v, const char *fmt, ...)
{
	struct verify_result *res = v->res;
	va_list ap;

	if (res->n_warnings == VERIFY_WARNINGS_MAX) {
		res->warnings_dropped++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(res->warnings[res->n_warnings++], sizeof(res->warnings[0]), fmt, ap);
	va_end(ap);
}

static void note(struct verifier *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(struct verifier *v, const char *fmt, ...)
{
	struct verify_result *res = v->res;
	va_list ap;

	if (res->n_notes == VERIFY_WARNINGS_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(res->notes[res->n_notes++], sizeof(res->notes[0]), fmt, ap);
	va_end(ap);
}

/* Not verifiable: kept (the first reason) while the rest is still checked. */
static void unverifiable(struct verifier *v, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void unverifiable(struct verifier *v, const char *fmt, ...)
{
	va_list ap;

	if (v->res->unverifiable[0])
		return;
	va_start(ap, fmt);
	vsnprintf(v->res->unverifiable, sizeof(v->res->unverifiable), fmt, ap);
	va_end(ap);
}

static int vbad(struct verifier *v, enum verify_status status, uint64_t seq, const char *where,
		const char *fmt, va_list ap)
{
	v->res->status = status;
	v->res->bad_seq = seq;
	if (where)
		snprintf(v->res->where, sizeof(v->res->where), "%s", where);
	else if (seq)
		snprintf(v->res->where, sizeof(v->res->where), "record %" PRIu64, seq);
	else
		snprintf(v->res->where, sizeof(v->res->where), "export %zu", v->export_no);
	vsnprintf(v->res->message, sizeof(v->res->message), fmt, ap);
	return -EINVAL;
}

static int bad(struct verifier *v, uint64_t seq, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(struct verifier *v, uint64_t seq, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vbad(v, VERIFY_BAD, seq, NULL, fmt, ap);
	va_end(ap);
	return r;
}

/* A bad line that is not a record: the metadata or the end of export n. */
static int bad_line(struct verifier *v, uint64_t seq, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int bad_line(struct verifier *v, uint64_t seq, const char *what, const char *fmt, ...)
{
	char where[96];
	va_list ap;
	int r;

	snprintf(where, sizeof(where), "export %zu, %s", v->export_no, what);
	va_start(ap, fmt);
	r = vbad(v, VERIFY_BAD, seq, where, fmt, ap);
	va_end(ap);
	return r;
}

static struct lic *lic_find(struct verifier *v, int64_t id, bool create)
{
	size_t mask, i;

	if (id <= 0)
		return NULL;
	if (create && (v->lic_count + 1) * 2 > v->lic_cap) {
		size_t cap = v->lic_cap ? v->lic_cap * 2 : 1024;
		struct lic *n = calloc(cap, sizeof(*n));

		if (!n)
			return NULL;
		for (size_t k = 0; k < v->lic_cap; k++) {
			if (!v->lics[k].id)
				continue;
			for (i = (size_t)v->lics[k].id & (cap - 1); n[i].id; i = (i + 1) & (cap - 1))
				;
			n[i] = v->lics[k];
		}
		free(v->lics);
		v->lics = n;
		v->lic_cap = cap;
	}
	if (!v->lic_cap)
		return NULL;
	mask = v->lic_cap - 1;
	for (i = (size_t)id & mask; v->lics[i].id; i = (i + 1) & mask)
		if (v->lics[i].id == id)
			return &v->lics[i];
	if (!create)
		return NULL;
	v->lics[i].id = id;
	v->lic_count++;
	return &v->lics[i];
}

static struct verify_token *token_find(struct verifier *v, const char *serial)
{
	struct verify_result *res = v->res;
	struct verify_token *t;

	for (size_t i = 0; i < res->n_tokens; i++)
		if (strcmp(res->tokens[i].serial, serial) == 0)
			return &res->tokens[i];
	if (res->n_tokens == VERIFY_TOKENS_MAX || strlen(serial) >= sizeof(t->serial))
		return NULL;
	t = &res->tokens[res->n_tokens++];
	memset(t, 0, sizeof(*t));
	t->export_counter = -1;
	snprintf(t->serial, sizeof(t->serial), "%s", serial);
	return t;
}

static const struct verify_key *key_find(struct verifier *v, const uint8_t id[AUDIT_HASH_SIZE])
{
	for (size_t i = 0; v->opts && i < v->opts->n_keys; i++)
		if (memcmp(v->opts->keys[i].id, id, AUDIT_HASH_SIZE) == 0)
			return &v->opts->keys[i];
	return NULL;
}

static void key_id_short(const uint8_t id[AUDIT_HASH_SIZE], char out[17])
{
	audit_hex_encode(id, 8, out);
}

/* ECDSA P-256 raw r||s over SHA-256(canon) with key. */
static int check_signature(EVP_PKEY *key, const char *canon, size_t canon_len,
			   const uint8_t signature[AUDIT_SIG_SIZE])
{
	uint8_t digest[AUDIT_HASH_SIZE], der[80], *p = der;
	EVP_PKEY_CTX *ctx = NULL;
	ECDSA_SIG *sig = NULL;
	BIGNUM *br, *bs;
	unsigned int dn = 0;
	int der_len, ok = 0;

	if (!key || !EVP_Digest(canon, canon_len, digest, &dn, EVP_sha256(), NULL))
		return 0;
	sig = ECDSA_SIG_new();
	br = BN_bin2bn(signature, 32, NULL);
	bs = BN_bin2bn(signature + 32, 32, NULL);
	if (!sig || !br || !bs || !ECDSA_SIG_set0(sig, br, bs)) {
		BN_free(br);
		BN_free(bs);
		ECDSA_SIG_free(sig);
		return 0;
	}
	der_len = i2d_ECDSA_SIG(sig, NULL);
	if (der_len > 0 && der_len <= (int)sizeof(der))
		der_len = i2d_ECDSA_SIG(sig, &p);
	else
		der_len = -1;
	ECDSA_SIG_free(sig);
	ctx = EVP_PKEY_CTX_new(key, NULL);
	if (der_len > 0 && ctx && EVP_PKEY_verify_init(ctx) == 1)
		ok = EVP_PKEY_verify(ctx, der, (size_t)der_len, digest, sizeof(digest)) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static struct json_object *data_of(const struct audit_line *l)
{
	struct json_object *d = NULL;

	json_object_object_get_ex(l->content, "data", &d);
	return d;
}

static bool data_int(struct json_object *d, const char *key, int64_t *ret)
{
	struct json_object *x;

	if (!json_object_object_get_ex(d, key, &x) || !json_object_is_type(x, json_type_int))
		return false;
	*ret = json_object_get_int64(x);
	return true;
}

static const char *data_str(struct json_object *d, const char *key)
{
	struct json_object *x;

	if (!json_object_object_get_ex(d, key, &x) || !json_object_is_type(x, json_type_string))
		return NULL;
	return json_object_get_string(x);
}

static int check_checkpoint(struct verifier *v, const struct audit_line *l)
{
	struct json_object *d = data_of(l);
	const char *covers_hash = data_str(d, "covers_hash"), *key_id = data_str(d, "key_id");
	uint8_t h[AUDIT_HASH_SIZE], kid[AUDIT_HASH_SIZE];
	const struct verify_key *key;
	int64_t covers_seq;

	if (!data_int(d, "covers_seq", &covers_seq) || (uint64_t)covers_seq + 1 != l->seq ||
	    !covers_hash || audit_hex_decode(covers_hash, h, sizeof(h)) < 0 ||
	    memcmp(h, l->prev_hash, AUDIT_HASH_SIZE) != 0)
		return bad(v, l->seq, "checkpoint does not cover the record just before it");
	if (!key_id || audit_hex_decode(key_id, kid, sizeof(kid)) < 0)
		return bad(v, l->seq, "checkpoint does not name its audit key");
	if (!l->has_signature)
		return bad(v, l->seq, "checkpoint has no signature");
	if (v->have_cur_key && memcmp(kid, v->cur_key, sizeof(kid)) != 0) {
		char a[17], b[17];

		key_id_short(kid, a);
		key_id_short(v->cur_key, b);
		return bad(v, l->seq, "checkpoint signed with audit key %s, but the trail's key is "
				      "%s and %s", a, b, v->have_pending ?
				      "the key change is not yet signed by it" :
				      "no key change is recorded");
	}
	v->have_cur_key = true;
	memcpy(v->cur_key, kid, sizeof(kid));
	if (v->have_pending) {
		/* This checkpoint, by the old key, covers the change: the new key from here. */
		char a[17], b[17];

		key_id_short(v->cur_key, a);
		key_id_short(v->pending_key, b);
		if (v->res->n_key_changes < 8)
			snprintf(v->res->key_changes[v->res->n_key_changes++],
				 sizeof(v->res->key_changes[0]), "record %" PRIu64 ": %s -> %s, "
				 "signed by the old key at record %" PRIu64, v->pending_seq, a, b,
				 l->seq);
		memcpy(v->cur_key, v->pending_key, sizeof(v->cur_key));
		v->have_pending = false;
	}
	key = key_find(v, kid);
	if (!key) {
		char a[17];

		key_id_short(kid, a);
		unverifiable(v, "record %" PRIu64 " is signed with audit key %s, which is not in the "
				"key ring (--pubkey)", l->seq, a);
		return 0;
	}
	if (!check_signature(key->key, l->canon, l->canon_len, l->signature))
		return bad(v, l->seq, "checkpoint signature does not verify with audit key");
	v->res->checkpoints++;
	v->res->covered_seq = l->seq;
	return 0;
}

/* A spend (issue or unconfirmed) moves a token's counter down by exactly one, from where
 * the previous spend left it. */
static int check_spend(struct verifier *v, const struct audit_line *l, struct lic *lic,
		       struct verify_token *t, int64_t before, int64_t after)
{
	if (before <= 0 || after != before - 1)
		return bad(v, l->seq, "license %" PRId64 ": counter goes from %" PRId64 " to %" PRId64
				      ", not down by one", lic->id, before, after);
	if (t->known && (uint64_t)before != t->counter)
		return bad(v, l->seq, "license %" PRId64 ": token %s counter_before is %" PRId64
				      " but the previous spend left it at %" PRIu64,
			   lic->id, t->serial, before, t->counter);
	if (!t->has_start) {
		t->has_start = true;
		t->start = (uint64_t)before;
	}
	t->known = true;
	t->counter = (uint64_t)after;
	t->spends++;
	v->res->spends++;
	return 0;
}

static int check_license(struct verifier *v, const struct audit_line *l)
{
	struct json_object *d = data_of(l);
	const char *type = l->type, *token = data_str(d, "token"), *reason;
	int64_t id, before = 0, after = 0;
	struct lic *lic;
	struct verify_token *t;
	bool known;

	if (!data_int(d, "license", &id) || id <= 0 || !token)
		return bad(v, l->seq, "license record lacks its license id or token");
	known = lic_find(v, id, false) != NULL;
	lic = lic_find(v, id, true);
	t = token_find(v, token);
	if (!lic)
		return -ENOMEM;
	if (!t)
		return bad(v, l->seq, "too many tokens (at most %d) or a token serial too long",
			   VERIFY_TOKENS_MAX);
	if (known && strcmp(lic->token, token) != 0)
		return bad(v, l->seq, "license %" PRId64 " changes token", id);
	snprintf(lic->token, sizeof(lic->token), "%s", token);

	if (strcmp(type, "license.reserve") == 0) {
		if (known)
			return bad(v, l->seq, "license %" PRId64 " is reserved twice", id);
		if (!data_int(d, "counter_before", &before) || before <= 0)
			return bad(v, l->seq, "reservation without a counter");
		if (t->known && (uint64_t)before != t->counter)
			return bad(v, l->seq, "license %" PRId64 ": reserved at counter %" PRId64
					      " but token %s is at %" PRIu64,
				   id, before, token, t->counter);
		lic->state = LIC_RESERVED;
		lic->counter_before = (uint64_t)before;
	} else if (strcmp(type, "license.issue") == 0 ||
		   strcmp(type, "license.unconfirmed") == 0) {
		bool issue = type[8] == 'i';

		if (known && lic->state != LIC_RESERVED)
			return bad(v, l->seq, "license %" PRId64 " spends a count twice", id);
		if (!data_int(d, "counter_before", &before) || !data_int(d, "counter_after", &after))
			return bad(v, l->seq, "license %" PRId64 " spend lacks its counters", id);
		if (known && (uint64_t)before != lic->counter_before)
			return bad(v, l->seq, "license %" PRId64 " was reserved at counter %" PRIu64
					      " but spent at %" PRId64, id, lic->counter_before,
				   before);
		if (check_spend(v, l, lic, t, before, after) < 0)
			return -EINVAL;
		lic->state = issue ? LIC_ISSUED : LIC_UNCONFIRMED;
		if (!issue)
			v->res->unconfirmed++;
	} else if (strcmp(type, "license.installed") == 0 ||
		   strcmp(type, "license.not_installed") == 0) {
		bool installed = type[8] == 'i';

		if (known && lic->state != LIC_ISSUED && lic->state != LIC_NOT_INSTALLED)
			return bad(v, l->seq, "license %" PRId64 " has an outcome but was never "
					      "issued, or was already installed", id);
		if (!installed && (!(reason = data_str(d, "reason")) || !reason[0]))
			return bad(v, l->seq, "license %" PRId64 " not installed without a "
					      "failure reason", id);
		if (installed)
			v->res->installed++;
		else if (!known || lic->state != LIC_NOT_INSTALLED)
			v->res->not_installed++;
		if (installed && known && lic->state == LIC_NOT_INSTALLED)
			v->res->not_installed--;
		lic->state = installed ? LIC_INSTALLED : LIC_NOT_INSTALLED;
	} else if (strcmp(type, "license.void") == 0) {
		if (known && lic->state != LIC_RESERVED)
			return bad(v, l->seq, "license %" PRId64 " voided after it was spent", id);
		lic->state = LIC_VOID;
	} else if (strcmp(type, "license.reuse") == 0) {
		if (known && lic->state != LIC_ISSUED && lic->state != LIC_NOT_INSTALLED &&
		    lic->state != LIC_INSTALLED)
			return bad(v, l->seq, "license %" PRId64 " reused before it was issued", id);
		if (!known)
			lic->state = LIC_ISSUED;
	} else {
		return bad(v, l->seq, "unknown license record type %s", type);
	}
	return 0;
}

static int check_reconcile(struct verifier *v, const struct audit_line *l)
{
	struct json_object *d = data_of(l), *diffs, *x;
	const char *token = data_str(d, "token");
	struct verify_token *t;
	int64_t actual;

	if (!token || !data_int(d, "actual", &actual) || actual < 0 ||
	    !json_object_object_get_ex(d, "differences", &diffs) ||
	    !json_object_is_type(diffs, json_type_array))
		return bad(v, l->seq, "reconcile record lacks token, counter or differences");
	t = token_find(v, token);
	if (!t)
		return bad(v, l->seq, "too many tokens (at most %d) or a token serial too long",
			   VERIFY_TOKENS_MAX);
	for (size_t i = 0; i < json_object_array_length(diffs); i++) {
		int64_t expected = 0, got = 0;
		const char *kind;

		x = json_object_array_get_idx(diffs, i);
		kind = data_str(x, "kind");
		if (!kind || !data_int(x, "expected", &expected) || !data_int(x, "actual", &got) ||
		    expected < 0 || got < 0)
			return bad(v, l->seq, "reconcile difference without kind or counters");
		if (strcmp(kind, "reservation-void") == 0)
			continue;
		if (strcmp(kind, "unrecorded-spends") == 0 && got < expected) {
			t->unaccounted += (uint64_t)(expected - got);
			note(v, "record %" PRIu64 ": token %s: %" PRId64 " count(s) spent outside sfid "
				"(counter %" PRId64 " where the ledger expected %" PRId64 ")",
			     l->seq, token, expected - got, got, expected);
			warn(v, "record %" PRIu64 ": token %s: %" PRId64 " unaccounted spend(s)",
			     l->seq, token, expected - got);
		} else if (strcmp(kind, "refill") == 0 && got > expected) {
			t->added += (uint64_t)(got - expected);
			note(v, "record %" PRIu64 ": token %s: refill of %" PRId64 " count(s) (%" PRId64
				" to %" PRId64 ", the granted total up by as much)",
			     l->seq, token, got - expected, expected, got);
		} else if (strcmp(kind, "counter-higher") == 0 && got > expected) {
			t->added += (uint64_t)(got - expected);
			note(v, "record %" PRIu64 ": token %s: counter went up by %" PRId64 " (%" PRId64
				" to %" PRId64 "): a refill, or another token",
			     l->seq, token, got - expected, expected, got);
		} else {
			warn(v, "record %" PRIu64 ": reconciliation of token %s found %s", l->seq,
			     token, kind);
		}
	}
	/* The token's own counter is the truth from here on; the gap stays reported. */
	if (!t->has_start) {
		t->has_start = true;
		t->start = (uint64_t)actual;
	}
	t->known = true;
	t->counter = (uint64_t)actual;
	return 0;
}

/* A change of the audit key: it names the trail's key as the old one, and the next
 * checkpoint, still by the old key, signs it; the new key signs from there on. */
static int check_key_change(struct verifier *v, const struct audit_line *l)
{
	struct json_object *d = data_of(l);
	const char *o = data_str(d, "old_key_id"), *n = data_str(d, "new_key_id");
	uint8_t old_id[AUDIT_HASH_SIZE], new_id[AUDIT_HASH_SIZE];

	if (!o || !n || audit_hex_decode(o, old_id, sizeof(old_id)) < 0 ||
	    audit_hex_decode(n, new_id, sizeof(new_id)) < 0)
		return bad(v, l->seq, "audit key change without both key ids");
	if (v->have_pending)
		return bad(v, l->seq, "a second audit key change before the first was signed");
	if (v->have_cur_key && memcmp(old_id, v->cur_key, sizeof(old_id)) != 0)
		return bad(v, l->seq, "the audit key change names another old key than the one "
				      "the trail's checkpoints use");
	v->have_cur_key = true;
	memcpy(v->cur_key, old_id, sizeof(old_id));
	memcpy(v->pending_key, new_id, sizeof(new_id));
	v->have_pending = true;
	v->pending_seq = l->seq;
	return 0;
}

/* The data members each record type may hold; anything else is refused. */
static const struct {
	const char *type;
	const char *members[16];
} record_types[] = {
	{ "job.create", { "job", "image_path", "image_id", "image_digest", "module_file",
			  "target_count", "loaded_uid", "loaded_user", "global_license_file",
			  "station", "version", "kind", "firmware", "go_address" } },
	{ "job.end", { "job" } },
	{ "job.start", { "job", "uid", "user", "slots" } },
	{ "attempt.begin", { "attempt", "job", "slot", "kind" } },
	{ "attempt.step", { "attempt", "step", "bytes", "chip_uid" } },
	{ "attempt.end", { "attempt", "result", "error_code", "error_text", "bytes",
			   "chip_uid", "kind", "image_digest" } },
	{ "chip.update", { "chip_uid", "final_state", "product_state" } },
	{ "license.reserve", { "license", "job", "attempt", "chip_uid", "token", "firmware_id",
			       "target", "counter_before" } },
	{ "license.issue", { "license", "chip_uid", "token", "target", "counter_before",
			     "counter_after", "digest" } },
	{ "license.installed", { "license", "chip_uid", "token", "target" } },
	{ "license.not_installed", { "license", "chip_uid", "token", "target", "reason" } },
	{ "license.reuse", { "license", "chip_uid", "token", "target", "attempt" } },
	{ "license.void", { "license", "chip_uid", "token", "target", "counter_before",
			    "reason" } },
	{ "license.unconfirmed", { "license", "chip_uid", "token", "target", "counter_before",
				   "counter_after" } },
	{ "reconcile", { "token", "actual", "expected", "differences", "granted", "station",
			 "version" } },
	{ "tool.run", { "run", "attempt", "step", "command", "exit_status", "outcome",
			"log_digest" } },
	{ "serial.intent", { "series", "job", "index", "value", "chip_uid", "again" } },
	{ "serial.result", { "series", "job", "index", "value", "chip_uid", "state", "reason" } },
	{ "checkpoint", { "covers_seq", "covers_hash", "key_id" } },
	{ "audit.key", { "old_key_id", "new_key_id" } },
};

static int check_members(struct verifier *v, const struct audit_line *l)
{
	struct json_object *d = data_of(l);
	size_t i;

	for (i = 0; i < sizeof(record_types) / sizeof(record_types[0]); i++)
		if (strcmp(record_types[i].type, l->type) == 0)
			break;
	if (i == sizeof(record_types) / sizeof(record_types[0]))
		return bad(v, l->seq, "unknown record type \"%.64s\"", l->type);
	json_object_object_foreach(d, key, val) {
		size_t k;

		(void)val;
		for (k = 0; k < 16 && record_types[i].members[k]; k++)
			if (strcmp(record_types[i].members[k], key) == 0)
				break;
		if (k == 16 || !record_types[i].members[k])
			return bad(v, l->seq, "%s record has an unknown field \"%.64s\"", l->type,
				   key);
	}
	return 0;
}

static int check_record(struct verifier *v, const struct audit_line *l, uint64_t expect_seq,
			const uint8_t prev[AUDIT_HASH_SIZE])
{
	uint8_t h[AUDIT_HASH_SIZE];

	if (l->seq != expect_seq) {
		if (l->seq > expect_seq)
			return bad(v, expect_seq, "record %" PRIu64 " is missing (next line is %" PRIu64
						  ")", expect_seq, l->seq);
		return bad(v, expect_seq, "record %" PRIu64 " expected, found %" PRIu64
					  " (records out of order or repeated)", expect_seq, l->seq);
	}
	if (memcmp(l->prev_hash, prev, AUDIT_HASH_SIZE) != 0)
		return bad(v, l->seq, "prev_hash does not name the hash of the record before it");
	if (audit_hash_record(prev, l->canon, l->canon_len, h) < 0)
		return -EIO;
	if (memcmp(h, l->hash, AUDIT_HASH_SIZE) != 0)
		return bad(v, l->seq, "content does not match its hash (the record was changed)");
	if (check_members(v, l) < 0)
		return -EINVAL;
	if (strcmp(l->type, "checkpoint") == 0)
		return check_checkpoint(v, l);
	if (l->has_signature)
		return bad(v, l->seq, "a record that is not a checkpoint carries a signature");
	if (strncmp(l->type, "license.", 8) == 0)
		return check_license(v, l);
	if (strcmp(l->type, "reconcile") == 0)
		return check_reconcile(v, l);
	if (strcmp(l->type, "audit.key") == 0)
		return check_key_change(v, l);
	return 0;
}

/* The end line of a format 2 export: it must state what the export holds, the digest of
 * every byte before it, and carry a signature of a key of the ring. */
static int check_end(struct verifier *v, const struct audit_line *end,
		     const struct audit_line *meta, const uint8_t digest[AUDIT_HASH_SIZE],
		     const uint8_t last_hash[AUDIT_HASH_SIZE], uint64_t last_seq, uint64_t records)
{
	const struct verify_key *key;
	char a[17];

	if (last_seq != meta->last_seq) {
		uint64_t missing = last_seq < meta->last_seq ? (last_seq ? last_seq + 1 :
								       meta->first_seq) : last_seq;

		return bad_line(v, missing, "end line", "the export ends at record %" PRIu64
			       " but its metadata says %" PRIu64, last_seq, meta->last_seq);
	}
	if (end->first_seq != meta->first_seq || end->last_seq != meta->last_seq ||
	    end->records != records)
		return bad_line(v, 0, "end line", "the end line states records %" PRIu64 "..%" PRIu64
			       " (%" PRIu64 "), the export holds %" PRIu64 "..%" PRIu64 " (%" PRIu64
			       ")", end->first_seq, end->last_seq, end->records, meta->first_seq,
			       last_seq, records);
	if (memcmp(end->last_hash, last_hash, AUDIT_HASH_SIZE) != 0)
		return bad_line(v, 0, "end line", "the end line names another last record hash");
	if (memcmp(end->digest, digest, AUDIT_HASH_SIZE) != 0)
		return bad_line(v, 0, "end line", "the lines before the end are not the ones it "
			       "was written after (digest differs): a line was changed, added or "
			       "removed");
	if (!end->has_signature) {
		if (v->have_cur_key && key_find(v, v->cur_key))
			return bad_line(v, last_seq + 1, "end line", "the end is not signed, but the "
				       "trail's checkpoints are: the end was replaced");
		unverifiable(v, "the end of export %zu is not signed (the station had no audit "
				"key)", v->export_no);
		return 0;
	}
	key = key_find(v, end->key_id);
	key_id_short(end->key_id, a);
	if (v->have_cur_key && memcmp(end->key_id, v->cur_key, AUDIT_HASH_SIZE) != 0) {
		char b[17];

		key_id_short(v->cur_key, b);
		return bad_line(v, 0, "end line", "the end is signed with audit key %s, but the "
			       "trail's checkpoints with %s and no key change is recorded", a, b);
	}
	if (!key) {
		unverifiable(v, "the end of export %zu is signed with audit key %s, which is not in "
				"the key ring (--pubkey)", v->export_no, a);
		return 0;
	}
	if (!check_signature(key->key, end->canon, end->canon_len, end->signature))
		return bad_line(v, 0, "end line", "the end signature does not verify with audit "
			       "key %s", a);
	v->res->signed_ends++;
	v->res->covered_seq = last_seq;
	return 0;
}

static bool token_reserved(struct verifier *v, const char *serial)
{
	for (size_t i = 0; i < v->lic_cap; i++)
		if (v->lics[i].id && v->lics[i].state == LIC_RESERVED &&
		    strcmp(v->lics[i].token, serial) == 0)
			return true;
	return false;
}

/* A token's counter read when the export was written against what the trail proves. */
static int check_export_counters(struct verifier *v, const struct audit_line *meta)
{
	for (size_t i = 0; i < meta->n_tokens; i++) {
		struct verify_token *t = token_find(v, meta->tokens[i].serial);
		int64_t c = meta->tokens[i].counter;

		if (!t)
			return bad_line(v, 0, "metadata", "too many tokens");
		t->export_counter = c;
		if (c < 0 || !t->known)
			continue;
		/* Only an export that runs to the head of the trail sees the counter as the
		 * token had it; a reservation in flight may be one lower. */
		if (meta->range_job != 0 || meta->range_to != 0)
			continue;
		if ((uint64_t)c == t->counter)
			continue;
		if (token_reserved(v, t->serial) && (uint64_t)c + 1 == t->counter) {
			warn(v, "token %s: a license was being issued when export %zu was written "
				"(counter %" PRId64 ", the trail is at %" PRIu64 ")", t->serial,
			     v->export_no, c, t->counter);
			continue;
		}
		v->res->status = VERIFY_MISMATCH;
		v->res->bad_seq = 0;
		snprintf(v->res->where, sizeof(v->res->where), "token %s", t->serial);
		snprintf(v->res->message, sizeof(v->res->message),
			 "the trail leaves the counter at %" PRIu64 " but the token read %" PRId64
			 " when export %zu was written: %" PRId64 " count(s) %s outside the trail",
			 t->counter, c, v->export_no,
			 c < (int64_t)t->counter ? (int64_t)t->counter - c : c - (int64_t)t->counter,
			 c < (int64_t)t->counter ? "spent" : "added");
		return -EINVAL;
	}
	return 0;
}

static void final_checks(struct verifier *v)
{
	struct verify_result *res = v->res;
	size_t open = 0, unconfirmed = 0;

	for (size_t i = 0; i < v->lic_cap; i++) {
		if (!v->lics[i].id)
			continue;
		open += v->lics[i].state == LIC_ISSUED;
		unconfirmed += v->lics[i].state == LIC_UNCONFIRMED;
	}
	if (open)
		warn(v, "open license: %zu issued license(s) have no chip outcome (installed or "
			"not) yet", open);
	if (unconfirmed)
		warn(v, "%zu count(s) were spent without a license record (reserved but "
			"unconfirmed)", unconfirmed);
	for (size_t i = 0; i < res->n_tokens; i++)
		if (res->tokens[i].reserved)
			warn(v, "open license: a reservation of token %s is still open",
			     res->tokens[i].serial);
	for (size_t i = 0; v->opts && i < v->opts->n_expect; i++) {
		const struct verify_expect *e = &v->opts->expect[i];
		struct verify_token *t = NULL;

		for (size_t k = 0; k < res->n_tokens; k++)
			if (strcmp(res->tokens[k].serial, e->serial) == 0)
				t = &res->tokens[k];
		if (t && t->known && t->counter == e->counter)
			continue;
		res->status = VERIFY_MISMATCH;
		res->bad_seq = 0;
		snprintf(res->where, sizeof(res->where), "token %.70s", e->serial);
		if (!t || !t->known)
			snprintf(res->message, sizeof(res->message),
				 "the trail states no counter for this token (expected %" PRIu64 ")",
				 e->counter);
		else
			snprintf(res->message, sizeof(res->message),
				 "the trail leaves the counter at %" PRIu64
				 ", the token reads %" PRIu64 ": %" PRId64 " count(s) %s outside the "
				 "trail", t->counter, e->counter,
				 e->counter < t->counter ? (int64_t)(t->counter - e->counter) :
							   (int64_t)(e->counter - t->counter),
				 e->counter < t->counter ? "spent" : "added");
		return;
	}
	if (res->unverifiable[0])
		res->status = VERIFY_UNVERIFIABLE;
	else if (res->n_warnings)
		res->status = VERIFY_INCOMPLETE;
	else
		res->status = VERIFY_OK;
}

/* One export, continuing the trail the previous ones left in *prev / *expect. Returns 0
 * (res->status VERIFY_BAD when something is wrong), or -errno. */
static int verify_one(struct verifier *v, FILE *in, uint8_t prev[AUDIT_HASH_SIZE],
		      uint64_t *expect)
{
	struct export_reader rd = { .in = in };
	struct verify_result *res = v->res;
	struct audit_line meta = { 0 };
	uint64_t records = 0, last_seq = 0;
	uint8_t last_hash[AUDIT_HASH_SIZE], cur_prev[AUDIT_HASH_SIZE];
	uint8_t *first_anchor = v->first_anchor;
	bool have_meta = false, ended = false;
	uint64_t next = 0;
	int r = 0;

	for (;;) {
		struct audit_line l = { 0 };
		char err[256];

		r = export_reader_next(&rd, &l, err, sizeof(err));
		if (r == 0)
			break;
		if (r == -EINVAL) {
			char what[48];

			snprintf(what, sizeof(what), "line %zu%s", rd.line_no,
				 have_meta ? "" : " (metadata)");
			if (rd.buf && strncmp(rd.buf, "{\"end\":", 7) == 0)
				bad_line(v, 0, "end line", "line %zu: %s", rd.line_no, err);
			else if (have_meta && !ended)
				bad(v, *expect ? *expect : 0, "line %zu: %s", rd.line_no, err);
			else
				bad_line(v, 0, what, "%s", err);
			r = 0;
			goto out;
		}
		if (r < 0)
			goto out;
		r = 0;
		if (rd.md_failed) {
			r = -ENOMEM;
			audit_line_clear(&l);
			goto out;
		}
		if (ended) {
			audit_line_clear(&l);
			bad_line(v, 0, "after the end line", "line %zu follows the end line",
				 rd.line_no);
			goto out;
		}
		if (!have_meta) {
			if (l.kind != AUDIT_LINE_META) {
				audit_line_clear(&l);
				bad_line(v, l.kind == AUDIT_LINE_RECORD ? l.seq : 0, "line 1",
					 "the export does not start with its metadata line");
				goto out;
			}
			meta = l;
			have_meta = true;
			res->format = meta.format;
			if (meta.format == 2) {
				if (res->exports > 1 && strcmp(res->station, meta.station) != 0) {
					bad_line(v, meta.first_seq, "metadata", "station \"%.60s\" "
						 "continues a trail of station \"%.60s\"",
						 meta.station, res->station);
					goto out;
				}
				snprintf(res->station, sizeof(res->station), "%s", meta.station);
				snprintf(res->version, sizeof(res->version), "%s", meta.version);
			} else {
				unverifiable(v, "export %zu is in format 1: its end is not signed, so "
						"a cut cannot be detected", v->export_no);
			}
			if (res->exports == 1) {
				memcpy(v->first_anchor, meta.anchor, AUDIT_HASH_SIZE);
				memcpy(prev, meta.anchor, AUDIT_HASH_SIZE);
				*expect = meta.first_seq;
				res->first_seq = meta.first_seq;
				if (meta.first_seq == 1 &&
				    memcmp(prev, (uint8_t[AUDIT_HASH_SIZE]){ 0 }, AUDIT_HASH_SIZE) != 0) {
					bad(v, 1, "record 1 must follow the genesis hash (32 zero bytes)");
					goto out;
				}
			} else if (meta.first_seq != 0) {
				/* The next export continues the trail; it may repeat records the
				 * ones before it hold (then they must be the very same). */
				const uint8_t *h = hash_of(v, meta.first_seq - 1, first_anchor);

				if (meta.first_seq > *expect || !h ||
				    memcmp(h, meta.anchor, AUDIT_HASH_SIZE) != 0) {
					bad_line(v, meta.first_seq, "metadata", "export %zu starts at "
						 "record %" PRIu64 " but the exports before it end at %"
						 PRIu64 " (or its anchor is not their hash): not "
						 "consecutive", v->export_no, meta.first_seq, *expect - 1);
					goto out;
				}
			}
			next = meta.first_seq;
			memcpy(cur_prev, meta.anchor, AUDIT_HASH_SIZE);
			memcpy(last_hash, meta.anchor, AUDIT_HASH_SIZE);
			continue;
		}
		if (l.kind == AUDIT_LINE_META) {
			audit_line_clear(&l);
			bad_line(v, *expect, "a second metadata line", "line %zu: a second metadata "
				 "line", rd.line_no);
			goto out;
		}
		if (l.kind == AUDIT_LINE_END) {
			if (meta.format != 2) {
				audit_line_clear(&l);
				bad_line(v, 0, "end line", "a format 1 export has no end line");
				goto out;
			}
			ended = true;
			r = check_end(v, &l, &meta, rd.digest_before, last_hash, last_seq, records);
			audit_line_clear(&l);
			if (r == -EINVAL) {
				r = 0;
				goto out;
			}
			if (r < 0)
				goto out;
			continue;
		}
		if (meta.first_seq == 0) {
			audit_line_clear(&l);
			bad(v, l.seq, "the metadata says the export is empty, but records follow");
			goto out;
		}
		if (next < *expect) {
			/* A record an earlier export held already: the same one, or tampered. */
			uint8_t h[AUDIT_HASH_SIZE];
			const uint8_t *was = hash_of(v, next, NULL);

			if (l.seq != next || memcmp(l.prev_hash, cur_prev, AUDIT_HASH_SIZE) != 0 ||
			    audit_hash_record(cur_prev, l.canon, l.canon_len, h) < 0 ||
			    memcmp(h, l.hash, AUDIT_HASH_SIZE) != 0 || !was ||
			    memcmp(was, h, AUDIT_HASH_SIZE) != 0)
				r = bad(v, next, "export %zu holds record %" PRIu64 " again, but not "
					"as the export before it does", v->export_no, next);
			if (r == 0) {
				memcpy(cur_prev, h, AUDIT_HASH_SIZE);
				memcpy(last_hash, h, AUDIT_HASH_SIZE);
				last_seq = l.seq;
				records++;
				next++;
			}
		} else {
			r = check_record(v, &l, *expect, prev);
			if (r == 0)
				r = hash_push(v, l.hash);
			if (r == 0) {
				memcpy(prev, l.hash, AUDIT_HASH_SIZE);
				memcpy(cur_prev, l.hash, AUDIT_HASH_SIZE);
				memcpy(last_hash, l.hash, AUDIT_HASH_SIZE);
				last_seq = l.seq;
				res->last_seq = l.seq;
				res->records++;
				records++;
				(*expect)++;
				next = *expect;
			}
		}
		audit_line_clear(&l);
		if (r == -EINVAL) {
			r = 0;
			goto out;
		}
		if (r < 0)
			goto out;
	}

	if (!have_meta) {
		bad_line(v, 0, "line 1", "the export is empty (no metadata line)");
		goto out;
	}
	if (meta.format == 2 && !ended && v->opts && v->opts->store_copy) {
		/* A store's copy has no end: what follows the last checkpoint is named. */
		if (last_seq > res->covered_seq)
			res->uncovered_from = res->covered_seq + 1;
	} else if (meta.format == 2 && !ended) {
		bad_line(v, last_seq ? last_seq + 1 : meta.first_seq, "end line", "the export was cut: it ends after %s%" PRIu64 " without its "
			 "end line", last_seq ? "record " : "the metadata", last_seq);
		if (!last_seq)
			snprintf(res->message, sizeof(res->message), "the export was cut: it ends "
				 "after the metadata without its end line");
		goto out;
	}
	if (meta.last_seq != last_seq) {
		bad(v, last_seq + 1 > meta.last_seq ? meta.last_seq : last_seq + 1,
		    "the export ends at record %" PRIu64 " but its metadata says %" PRIu64,
		    last_seq, meta.last_seq);
		goto out;
	}
	if (meta.format == 2)
		check_export_counters(v, &meta);
out:
	audit_line_clear(&meta);
	export_reader_free(&rd);
	return r;
}

int verify_key_load(const char *path, struct verify_key *key)
{
	uint8_t *der = NULL;
	unsigned int n = 0;
	FILE *f;
	int len, r = 0;

	memset(key, 0, sizeof(*key));
	f = fopen(path, "re");
	if (!f)
		return -errno;
	key->key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (!key->key || EVP_PKEY_get_base_id(key->key) != EVP_PKEY_EC) {
		EVP_PKEY_free(key->key);
		key->key = NULL;
		return -EINVAL;
	}
	len = i2d_PUBKEY(key->key, &der);
	if (len <= 0 || !EVP_Digest(der, (size_t)len, key->id, &n, EVP_sha256(), NULL))
		r = -EINVAL;
	OPENSSL_free(der);
	if (r < 0) {
		EVP_PKEY_free(key->key);
		key->key = NULL;
	}
	return r;
}

int audit_verify_streams(FILE *const *ins, size_t n, const struct verify_options *opts,
			 struct verify_result *res)
{
	struct verifier v = { .res = res, .opts = opts };
	uint8_t prev[AUDIT_HASH_SIZE] = { 0 };
	uint64_t expect = 0;
	int r = 0;

	memset(res, 0, sizeof(*res));
	for (size_t i = 0; i < n; i++) {
		v.export_no = i + 1;
		res->exports = i + 1;
		r = verify_one(&v, ins[i], prev, &expect);
		if (r < 0 || res->status == VERIFY_BAD || res->status == VERIFY_MISMATCH)
			goto out;
	}
	if (n == 0) {
		v.export_no = 0;
		bad_line(&v, 0, "arguments", "no export given");
		goto out;
	}
	for (size_t i = 0; i < res->n_tokens; i++)
		res->tokens[i].reserved = token_reserved(&v, res->tokens[i].serial);
	final_checks(&v);
out:
	free(v.lics);
	free(v.hashes);
	return r;
}

int audit_verify_stream(FILE *in, EVP_PKEY *key, struct verify_result *res)
{
	struct verify_options opts = { 0 };
	struct verify_key k = { .key = key };
	uint8_t *der = NULL;
	unsigned int dn = 0;
	int len;

	if (key) {
		len = i2d_PUBKEY(key, &der);
		if (len > 0 && EVP_Digest(der, (size_t)len, k.id, &dn, EVP_sha256(), NULL)) {
			opts.keys = &k;
			opts.n_keys = 1;
		}
		OPENSSL_free(der);
	}
	return audit_verify_streams(&in, 1, &opts, res);
}

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

struct token {
	char serial[72];
	bool known;
	uint64_t counter; /* where the token should be now */
};

struct verifier {
	struct verify_result *res;
	EVP_PKEY *key;
	uint8_t key_id[AUDIT_HASH_SIZE];
	bool have_key_id;
	struct lic *lics;
	size_t lic_cap, lic_count;
	struct token *tokens;
	size_t n_tokens;
};

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

static int bad(struct verifier *v, uint64_t seq, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(struct verifier *v, uint64_t seq, const char *fmt, ...)
{
	va_list ap;

	v->res->status = VERIFY_BAD;
	v->res->bad_seq = seq;
	va_start(ap, fmt);
	vsnprintf(v->res->message, sizeof(v->res->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
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

static struct token *token_find(struct verifier *v, const char *serial)
{
	struct token *t;

	for (size_t i = 0; i < v->n_tokens; i++)
		if (strcmp(v->tokens[i].serial, serial) == 0)
			return &v->tokens[i];
	t = realloc(v->tokens, (v->n_tokens + 1) * sizeof(*t));
	if (!t)
		return NULL;
	v->tokens = t;
	t = &v->tokens[v->n_tokens++];
	memset(t, 0, sizeof(*t));
	snprintf(t->serial, sizeof(t->serial), "%s", serial);
	return t;
}

static int check_signature(struct verifier *v, const struct audit_line *l)
{
	uint8_t digest[AUDIT_HASH_SIZE], der[80], *p = der;
	EVP_PKEY_CTX *ctx = NULL;
	ECDSA_SIG *sig = NULL;
	BIGNUM *br, *bs;
	unsigned int dn = 0;
	int der_len, ok = 0;

	if (!v->key || !EVP_Digest(l->canon, l->canon_len, digest, &dn, EVP_sha256(), NULL))
		return 0;
	sig = ECDSA_SIG_new();
	br = BN_bin2bn(l->signature, 32, NULL);
	bs = BN_bin2bn(l->signature + 32, 32, NULL);
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
	ctx = EVP_PKEY_CTX_new(v->key, NULL);
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
	int64_t covers_seq;

	if (!data_int(d, "covers_seq", &covers_seq) || (uint64_t)covers_seq + 1 != l->seq ||
	    !covers_hash || audit_hex_decode(covers_hash, h, sizeof(h)) < 0 ||
	    memcmp(h, l->prev_hash, AUDIT_HASH_SIZE) != 0)
		return bad(v, l->seq, "checkpoint does not cover the record just before it");
	if (!key_id || audit_hex_decode(key_id, kid, sizeof(kid)) < 0 ||
	    (v->have_key_id && memcmp(kid, v->key_id, sizeof(kid)) != 0))
		return bad(v, l->seq, "checkpoint names a different audit key than the one given");
	if (!l->has_signature)
		return bad(v, l->seq, "checkpoint has no signature");
	if (!check_signature(v, l))
		return bad(v, l->seq, "checkpoint signature does not verify with the audit key");
	v->res->checkpoints++;
	v->res->covered_seq = l->seq;
	return 0;
}

/* A spend (issue or unconfirmed) moves a token's counter down by exactly one, from where
 * the previous spend left it. */
static int check_spend(struct verifier *v, const struct audit_line *l, struct lic *lic,
		       struct token *t, int64_t before, int64_t after)
{
	if (before <= 0 || after != before - 1)
		return bad(v, l->seq, "license %" PRId64 ": counter goes from %" PRId64 " to %" PRId64
				      ", not down by one", lic->id, before, after);
	if (t->known && (uint64_t)before != t->counter)
		return bad(v, l->seq, "license %" PRId64 ": token %s counter_before is %" PRId64
				      " but the previous spend left it at %" PRIu64,
			   lic->id, t->serial, before, t->counter);
	t->known = true;
	t->counter = (uint64_t)after;
	v->res->spends++;
	return 0;
}

static int check_license(struct verifier *v, const struct audit_line *l)
{
	struct json_object *d = data_of(l);
	const char *type = l->type, *token = data_str(d, "token"), *reason;
	int64_t id, before = 0, after = 0;
	struct lic *lic;
	struct token *t;
	bool known;

	if (!data_int(d, "license", &id) || id <= 0 || !token)
		return bad(v, l->seq, "license record lacks its license id or token");
	known = lic_find(v, id, false) != NULL;
	lic = lic_find(v, id, true);
	t = token_find(v, token);
	if (!lic || !t)
		return -ENOMEM;
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
	struct token *t;
	int64_t actual;

	if (!token || !data_int(d, "actual", &actual) || actual < 0 ||
	    !json_object_object_get_ex(d, "differences", &diffs) ||
	    !json_object_is_type(diffs, json_type_array))
		return bad(v, l->seq, "reconcile record lacks token, counter or differences");
	t = token_find(v, token);
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < json_object_array_length(diffs); i++) {
		const char *kind;

		x = json_object_array_get_idx(diffs, i);
		kind = data_str(x, "kind");
		if (!kind)
			return bad(v, l->seq, "reconcile difference without a kind");
		if (strcmp(kind, "reservation-void") != 0)
			warn(v, "record %" PRIu64 ": reconciliation of token %s found %s", l->seq,
			     token, kind);
	}
	/* The token's own counter is the truth from here on; the gap stays reported. */
	t->known = true;
	t->counter = (uint64_t)actual;
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
	if (strcmp(l->type, "checkpoint") == 0)
		return check_checkpoint(v, l);
	if (l->has_signature)
		return bad(v, l->seq, "a record that is not a checkpoint carries a signature");
	if (strncmp(l->type, "license.", 8) == 0)
		return check_license(v, l);
	if (strcmp(l->type, "reconcile") == 0)
		return check_reconcile(v, l);
	return 0;
}

static void final_warnings(struct verifier *v)
{
	struct verify_result *res = v->res;
	size_t open = 0, unconfirmed = 0, reserved = 0;

	for (size_t i = 0; i < v->lic_cap; i++) {
		if (!v->lics[i].id)
			continue;
		open += v->lics[i].state == LIC_ISSUED;
		unconfirmed += v->lics[i].state == LIC_UNCONFIRMED;
		reserved += v->lics[i].state == LIC_RESERVED;
	}
	if (open)
		warn(v, "%zu issued license(s) have no chip outcome (installed or not) yet", open);
	if (unconfirmed)
		warn(v, "%zu count(s) were spent without a license record (reserved but "
			"unconfirmed)", unconfirmed);
	if (reserved)
		warn(v, "%zu reservation(s) are still open", reserved);
	if (res->records && res->covered_seq < res->last_seq)
		warn(v, "records %" PRIu64 "..%" PRIu64 " are not covered by a signature",
		     res->covered_seq >= res->first_seq ? res->covered_seq + 1 : res->first_seq,
		     res->last_seq);
}

int audit_verify_stream(FILE *in, EVP_PKEY *key, struct verify_result *res)
{
	struct verifier v = { .res = res, .key = key };
	struct export_reader rd = { .in = in };
	uint8_t prev[AUDIT_HASH_SIZE];
	struct audit_line meta = { 0 };
	uint64_t expect = 0;
	bool have_meta = false;
	int r = 0;

	memset(res, 0, sizeof(*res));
	if (key) {
		uint8_t *der = NULL;
		unsigned int n = 0;
		int len = i2d_PUBKEY(key, &der);

		if (len > 0 && EVP_Digest(der, (size_t)len, v.key_id, &n, EVP_sha256(), NULL))
			v.have_key_id = true;
		OPENSSL_free(der);
	}

	for (;;) {
		struct audit_line l = { 0 };
		char err[256];

		r = export_reader_next(&rd, &l, err, sizeof(err));
		if (r == 0)
			break;
		if (r == -EINVAL) {
			bad(&v, have_meta ? expect : 0, "line %zu: %s", rd.line_no, err);
			r = 0;
			goto out;
		}
		if (r < 0)
			goto out;
		r = 0;
		if (!have_meta) {
			if (l.kind != AUDIT_LINE_META) {
				audit_line_clear(&l);
				bad(&v, 0, "the export does not start with its metadata line");
				goto out;
			}
			meta = l;
			have_meta = true;
			expect = meta.first_seq;
			memcpy(prev, meta.anchor, AUDIT_HASH_SIZE);
			res->first_seq = meta.first_seq;
			if (meta.first_seq == 1 && memcmp(prev, (uint8_t[AUDIT_HASH_SIZE]){ 0 },
							  AUDIT_HASH_SIZE) != 0) {
				bad(&v, 1, "record 1 must follow the genesis hash (32 zero bytes)");
				goto out;
			}
			continue;
		}
		if (l.kind != AUDIT_LINE_RECORD) {
			audit_line_clear(&l);
			bad(&v, expect, "line %zu: a second metadata line", rd.line_no);
			goto out;
		}
		if (expect == 0) {
			audit_line_clear(&l);
			bad(&v, l.seq, "the metadata says the export is empty, but records follow");
			goto out;
		}
		r = check_record(&v, &l, expect, prev);
		if (r == 0) {
			memcpy(prev, l.hash, AUDIT_HASH_SIZE);
			res->last_seq = l.seq;
			res->records++;
			expect++;
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
		bad(&v, 0, "the export is empty (no metadata line)");
		goto out;
	}
	if (meta.last_seq != res->last_seq) {
		bad(&v, res->last_seq + 1 > meta.last_seq ? meta.last_seq : res->last_seq + 1,
		    "the export ends at record %" PRIu64 " but its metadata says %" PRIu64,
		    res->last_seq, meta.last_seq);
		goto out;
	}
	final_warnings(&v);
	res->status = res->n_warnings ? VERIFY_INCOMPLETE : VERIFY_OK;
out:
	export_reader_free(&rd);
	free(v.lics);
	free(v.tokens);
	return r;
}

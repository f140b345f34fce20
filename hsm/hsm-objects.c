/* Reading a token's OSFI objects: searches, the counter and the granted total (read, and the
 * replacing write the license chain and a refill share), firmware id, public keys, audit
 * key generations, PEM export. See hsm.h. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/param_build.h>

#include "hsm.h"
#include "hsm-internal.h"
#include "hsm-priv.h"

const char hsm_application[] = "osfi";

/* Finds up to max objects of that class and label; *ret_n may be 0. Caller holds h->lock. */
int hsm_find_all(struct hsm *h, CK_OBJECT_CLASS cls, const char *label,
			CK_OBJECT_HANDLE *objs, CK_ULONG max, CK_ULONG *ret_n)
{
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_ULONG n = 0;
	CK_RV rv;

	rv = h->mod->f->C_FindObjectsInit(h->session, tmpl, 2);
	if (rv == CKR_OPERATION_ACTIVE) {
		/* A search an earlier failed C_FindObjectsFinal left open: close it, once. */
		h->mod->f->C_FindObjectsFinal(h->session);
		rv = h->mod->f->C_FindObjectsInit(h->session, tmpl, 2);
	}
	if (rv != CKR_OK)
		return hsm_fail(h, "C_FindObjectsInit", rv);
	rv = h->mod->f->C_FindObjects(h->session, objs, max, &n);
	h->mod->f->C_FindObjectsFinal(h->session);
	if (rv != CKR_OK)
		return hsm_fail(h, "C_FindObjects", rv);
	*ret_n = n;
	return 0;
}

/* Finds the single object of that class and label. Caller holds h->lock. */
int hsm_find(struct hsm *h, CK_OBJECT_CLASS cls, const char *label,
		    CK_OBJECT_HANDLE *ret_obj)
{
	CK_OBJECT_HANDLE objs[2];
	CK_ULONG n;
	int r;

	r = hsm_find_all(h, cls, label, objs, 2, &n);
	if (r < 0)
		return r;
	if (n == 0)
		return hsm_missing(h);
	if (n > 1)
		return -HSM_ERR_OBJECT_INVALID;
	*ret_obj = objs[0];
	return 0;
}

/* Reads an attribute of exactly len bytes. Caller holds h->lock. */
int hsm_get_exact(struct hsm *h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, void *buf,
			 size_t len)
{
	CK_ATTRIBUTE a = { type, buf, len };
	CK_RV rv;

	rv = h->mod->f->C_GetAttributeValue(h->session, obj, &a, 1);
	if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_SENSITIVE ||
	    rv == CKR_ATTRIBUTE_TYPE_INVALID)
		return -HSM_ERR_OBJECT_INVALID;
	if (rv != CKR_OK)
		return hsm_fail(h, "C_GetAttributeValue", rv);
	if (a.ulValueLen != len)
		return -HSM_ERR_OBJECT_INVALID;
	return 0;
}

/* Reads CKA_EC_POINT of a public key, raw or DER OCTET STRING wrapped (modules differ). */
int hsm_get_point(struct hsm *h, CK_OBJECT_HANDLE obj, uint8_t ret[OSFI_PUBKEY_LEN])
{
	uint8_t buf[OSFI_PUBKEY_LEN + 8];
	CK_ATTRIBUTE a = { CKA_EC_POINT, buf, sizeof(buf) };
	const uint8_t *p = buf;
	CK_RV rv;

	rv = h->mod->f->C_GetAttributeValue(h->session, obj, &a, 1);
	if (rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID)
		return -HSM_ERR_OBJECT_INVALID;
	if (rv != CKR_OK)
		return hsm_fail(h, "C_GetAttributeValue", rv);
	if (a.ulValueLen == OSFI_PUBKEY_LEN + 2 && buf[0] == 0x04 && buf[1] == OSFI_PUBKEY_LEN)
		p += 2;
	else if (a.ulValueLen != OSFI_PUBKEY_LEN)
		return -HSM_ERR_OBJECT_INVALID;
	if (p[0] != 0x04)
		return -HSM_ERR_OBJECT_INVALID;
	memcpy(ret, p, OSFI_PUBKEY_LEN);
	return 0;
}

/* Reads a LE32 data object (the counter, or the granted total) by label. */
int hsm_read_u32_locked(struct hsm *h, const char *label, struct hsm_counter *ret)
{
	struct hsm_counter c = { .value = UINT32_MAX };
	int r;

	r = hsm_find_all(h, CKO_DATA, label, c.objs, HSM_COUNTER_MAX_OBJS, &c.n);
	if (r < 0)
		return r;
	if (c.n == 0)
		return hsm_missing(h);
	for (CK_ULONG i = 0; i < c.n; i++) {
		uint8_t v[4];
		uint32_t x;

		r = hsm_get_exact(h, c.objs[i], CKA_VALUE, v, sizeof(v));

		if (r < 0)
			return r;
		x = (uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 |
		    (uint32_t)v[3] << 24;
		if (i == 0 || x < c.value) {
			c.value = x;
			c.min_obj = c.objs[i];
		}
	}
	*ret = c;
	return 0;
}

int hsm_read_counter_locked(struct hsm *h, struct hsm_counter *ret)
{
	return hsm_read_u32_locked(h, HSM_LABEL_COUNTER, ret);
}

int hsm_create_u32(struct hsm *h, const char *label, uint32_t value)
{
	CK_OBJECT_CLASS data = CKO_DATA;
	CK_BBOOL yes = CK_TRUE;
	uint8_t v[4] = { value & 0xff, (value >> 8) & 0xff, (value >> 16) & 0xff, value >> 24 };
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &data, sizeof(data) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_APPLICATION, (void *)hsm_application, strlen(hsm_application) },
		{ CKA_VALUE, v, sizeof(v) },
		{ CKA_MODIFIABLE, &yes, sizeof(yes) },
	};
	CK_OBJECT_HANDLE obj;
	CK_RV rv;

	rv = h->mod->f->C_CreateObject(h->session, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &obj);
	if (rv != CKR_OK)
		return hsm_fail(h, "C_CreateObject(counter)", rv);
	return 0;
}

/* Writes the new (lower) value. C_SetAttributeValue where the token allows it; tokens that
 * treat a data object's CKA_VALUE as read-only (SoftHSM2) get a new object first and the old
 * one destroyed after, so an interruption leaves two objects whose minimum is the new value.
 * Returns 0 once the new value is on the token. */
int hsm_write_u32_locked(struct hsm *h, const char *label, const struct hsm_counter *c,
				uint32_t value)
{
	uint8_t v[4] = { value & 0xff, (value >> 8) & 0xff, (value >> 16) & 0xff, value >> 24 };
	CK_ATTRIBUTE set = { CKA_VALUE, v, sizeof(v) };
	CK_OBJECT_HANDLE keep = CK_INVALID_HANDLE;
	CK_RV rv;
	int r;

	rv = h->mod->f->C_SetAttributeValue(h->session, c->min_obj, &set, 1);
	if (rv == CKR_OK) {
		keep = c->min_obj;
	} else if (rv == CKR_ATTRIBUTE_READ_ONLY) {
		r = hsm_create_u32(h, label, value);
		if (r < 0)
			return r;
	} else {
		return hsm_fail(h, "C_SetAttributeValue(counter)", rv);
	}
	/* The new value is durable; stale objects only hold higher values. */
	for (CK_ULONG i = 0; i < c->n; i++)
		if (c->objs[i] != keep)
			(void)h->mod->f->C_DestroyObject(h->session, c->objs[i]);
	return 0;
}

int hsm_write_counter_locked(struct hsm *h, const struct hsm_counter *c, uint32_t value)
{
	return hsm_write_u32_locked(h, HSM_LABEL_COUNTER, c, value);
}

int hsm_granted_read(struct hsm *h, uint32_t *ret_granted)
{
	struct hsm_counter c;
	int r;

	if (!h || !ret_granted)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = hsm_read_u32_locked(h, HSM_LABEL_GRANTED, &c);
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		*ret_granted = c.value;
	return r;
}

int hsm_counter_read(struct hsm *h, uint32_t *ret_count)
{
	struct hsm_counter c;
	int r;

	if (!h || !ret_count)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = hsm_read_counter_locked(h, &c);
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		*ret_count = c.value;
	return r;
}

int hsm_firmware_id_locked(struct hsm *h, uint8_t ret_id[OSFI_ID_LEN])
{
	CK_OBJECT_HANDLE obj;
	int r;

	r = hsm_find(h, CKO_DATA, HSM_LABEL_FIRMWARE_ID, &obj);
	if (r < 0)
		return r;
	return hsm_get_exact(h, obj, CKA_VALUE, ret_id, OSFI_ID_LEN);
}

int hsm_firmware_id(struct hsm *h, uint8_t ret_id[OSFI_ID_LEN])
{
	uint8_t id[OSFI_ID_LEN];
	int r;

	if (!h || !ret_id)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = hsm_firmware_id_locked(h, id);
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		memcpy(ret_id, id, sizeof(id));
	return r;
}

static int hsm_pubkey(struct hsm *h, const char *label, uint8_t ret_point[OSFI_PUBKEY_LEN])
{
	uint8_t point[OSFI_PUBKEY_LEN];
	CK_OBJECT_HANDLE obj;
	int r;

	if (!h || !ret_point)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = hsm_find(h, CKO_PUBLIC_KEY, label, &obj);
	if (r == 0)
		r = hsm_get_point(h, obj, point);
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		memcpy(ret_point, point, sizeof(point));
	return r;
}

int hsm_license_pubkey(struct hsm *h, uint8_t ret_point[OSFI_PUBKEY_LEN])
{
	return hsm_pubkey(h, HSM_LABEL_LICENSE_KEY, ret_point);
}

/* The label of audit key generation gen: osfi-audit-key, then osfi-audit-key.1, .2... */
void hsm_audit_label(unsigned gen, char *buf, size_t len)
{
	if (gen == 0)
		snprintf(buf, len, "%s", HSM_LABEL_AUDIT_KEY);
	else
		snprintf(buf, len, "%s.%u", HSM_LABEL_AUDIT_KEY, gen);
}

/* The newest audit key generation on the token (cached: a rotation by another process is
 * seen by the next process). Caller holds h->lock. */
int hsm_audit_generation_locked(struct hsm *h, unsigned *ret_gen)
{
	bool found = false;
	unsigned gen = 0;

	if (!h->audit_gen_known) {
		for (unsigned n = 0; n < HSM_AUDIT_GENERATIONS_MAX; n++) {
			char label[48];
			CK_OBJECT_HANDLE obj;
			int r;

			hsm_audit_label(n, label, sizeof(label));
			r = hsm_find(h, CKO_PUBLIC_KEY, label, &obj);
			if (r == 0) {
				found = true;
				gen = n;
			} else if (r != -HSM_ERR_OBJECT_MISSING) {
				return r;
			}
		}
		if (!found)
			return hsm_missing(h);
		h->audit_gen = gen;
		h->audit_gen_known = true;
	}
	*ret_gen = h->audit_gen;
	return 0;
}

int hsm_audit_generation(struct hsm *h, unsigned *ret_gen)
{
	int r;

	if (!h || !ret_gen)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = hsm_audit_generation_locked(h, ret_gen);
	pthread_mutex_unlock(&h->lock);
	return r;
}

int hsm_audit_pubkey_gen(struct hsm *h, unsigned gen, uint8_t ret_point[OSFI_PUBKEY_LEN])
{
	char label[48];

	hsm_audit_label(gen, label, sizeof(label));
	return hsm_pubkey(h, label, ret_point);
}

int hsm_audit_pubkey(struct hsm *h, uint8_t ret_point[OSFI_PUBKEY_LEN])
{
	unsigned gen;
	int r = hsm_audit_generation(h, &gen);

	return r < 0 ? r : hsm_audit_pubkey_gen(h, gen, ret_point);
}

int hsm_ca_pubkey(struct hsm *h, uint8_t ret_point[OSFI_PUBKEY_LEN])
{
	return hsm_pubkey(h, HSM_LABEL_CA_PUB, ret_point);
}

int hsm_point_to_pem(const uint8_t point[OSFI_PUBKEY_LEN], char **ret_pem)
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	char *data, *pem;
	long n;
	int r = -HSM_ERR_NOMEM;

	bld = OSSL_PARAM_BLD_new();
	if (!bld ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
					      OSFI_PUBKEY_LEN))
		goto out;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0)
		goto out;
	if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
		r = -HSM_ERR_OBJECT_INVALID;
		goto out;
	}
	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_PUBKEY(bio, pkey))
		goto out;
	n = BIO_get_mem_data(bio, &data);
	if (n <= 0)
		goto out;
	pem = strndup(data, (size_t)n);
	if (!pem)
		goto out;
	*ret_pem = pem;
	r = 0;
out:
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return r;
}

int hsm_audit_pubkey_pem(struct hsm *h, char **ret_pem)
{
	uint8_t point[OSFI_PUBKEY_LEN];
	int r;

	if (!ret_pem)
		return -HSM_ERR_INVALID;
	r = hsm_audit_pubkey(h, point);
	if (r < 0)
		return r;
	return hsm_point_to_pem(point, ret_pem);
}

int hsm_audit_pubkey_pem_gen(struct hsm *h, unsigned gen, char **ret_pem)
{
	uint8_t point[OSFI_PUBKEY_LEN];
	int r;

	if (!ret_pem)
		return -HSM_ERR_INVALID;
	r = hsm_audit_pubkey_gen(h, gen, point);
	if (r < 0)
		return r;
	return hsm_point_to_pem(point, ret_pem);
}

int hsm_has_global_key(struct hsm *h, bool *ret_has)
{
	CK_OBJECT_HANDLE obj;
	int r;

	if (!h || !ret_has)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = hsm_find(h, CKO_SECRET_KEY, HSM_LABEL_GLOBAL_KEY, &obj);
	pthread_mutex_unlock(&h->lock);
	if (r == 0 || r == -HSM_ERR_OBJECT_MISSING) {
		*ret_has = r == 0;
		return 0;
	}
	return r;
}

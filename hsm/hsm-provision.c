/* Provisioning, only for sfi-hsm: creating and wiping a token's OSFI objects, key
 * generation, refills, audit key rotation. A library of its own (sfihsm-provision) that
 * sfid never links; tests/integration/hsm checks that with nm. See hsm-provision.h. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "hsm.h"
#include "hsm-internal.h"
#include "hsm-priv.h"
#include "hsm-provision.h"

/* DER of the prime256v1 OID, the CKA_EC_PARAMS of every OSFI EC key. */
static const uint8_t hsm_p256_params[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03,
					   0x01, 0x07 };

/* --- provisioning ------------------------------------------------------------------------ */

static const struct {
	CK_OBJECT_CLASS cls;
	const char *label;
} hsm_objects[] = {
	{ CKO_SECRET_KEY, HSM_LABEL_OEM_KEY },	   { CKO_PRIVATE_KEY, HSM_LABEL_LICENSE_KEY },
	{ CKO_PUBLIC_KEY, HSM_LABEL_LICENSE_KEY }, { CKO_PRIVATE_KEY, HSM_LABEL_AUDIT_KEY },
	{ CKO_PUBLIC_KEY, HSM_LABEL_AUDIT_KEY },   { CKO_DATA, HSM_LABEL_FIRMWARE_ID },
	{ CKO_DATA, HSM_LABEL_COUNTER },	   { CKO_DATA, HSM_LABEL_GRANTED },
	{ CKO_PUBLIC_KEY, HSM_LABEL_CA_PUB },
	{ CKO_SECRET_KEY, HSM_LABEL_GLOBAL_KEY },
};

/* Destroys (or, with ret_found, only counts) every OSFI object. Caller holds h->lock. */
static int hsm_sweep_locked(struct hsm *h, bool destroy, unsigned *ret_found)
{
	unsigned found = 0;

	for (size_t i = 0; i < sizeof(hsm_objects) / sizeof(hsm_objects[0]); i++) {
		CK_OBJECT_HANDLE objs[16];
		CK_ULONG n;
		int r;

		r = hsm_find_all(h, hsm_objects[i].cls, hsm_objects[i].label, objs, 16, &n);
		if (r < 0)
			return r;
		found += n;
		for (CK_ULONG k = 0; destroy && k < n; k++) {
			CK_RV rv = h->mod->f->C_DestroyObject(h->session, objs[k]);

			if (rv != CKR_OK)
				return hsm_fail(h, "C_DestroyObject", rv);
		}
	}
	/* Audit key generations after the first. */
	for (unsigned gen = 1; gen < HSM_AUDIT_GENERATIONS_MAX; gen++) {
		for (int cls = 0; cls < 2; cls++) {
			CK_OBJECT_HANDLE objs[4];
			char label[48];
			CK_ULONG n;
			int r;

			hsm_audit_label(gen, label, sizeof(label));
			r = hsm_find_all(h, cls ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY, label, objs, 4, &n);
			if (r < 0)
				return r;
			found += n;
			for (CK_ULONG k = 0; destroy && k < n; k++)
				if (h->mod->f->C_DestroyObject(h->session, objs[k]) != CKR_OK)
					return hsm_fail(h, "C_DestroyObject", CKR_GENERAL_ERROR);
		}
	}
	if (destroy)
		h->audit_gen_known = false;
	if (ret_found)
		*ret_found = found;
	return 0;
}

int hsm_is_provisioned(struct hsm *h, bool *ret_provisioned)
{
	unsigned found = 0;
	int r;

	if (!h || !ret_provisioned)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = h->logged_in ? hsm_sweep_locked(h, false, &found) : -HSM_ERR_NOT_LOGGED_IN;
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		*ret_provisioned = found > 0;
	return r;
}

int hsm_wipe(struct hsm *h)
{
	int r;

	if (!h)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = h->logged_in ? hsm_sweep_locked(h, true, NULL) : -HSM_ERR_NOT_LOGGED_IN;
	pthread_mutex_unlock(&h->lock);
	return r;
}

static int hsm_create(struct hsm *h, CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	CK_OBJECT_HANDLE obj;
	CK_RV rv;

	rv = h->mod->f->C_CreateObject(h->session, tmpl, n, &obj);
	if (rv != CKR_OK)
		return hsm_fail(h, "C_CreateObject", rv);
	return 0;
}

/* A token P-256 key pair; the private half is sensitive and never extractable, usable only
 * for derive (license key) or sign (audit key). */
static int hsm_generate_ec(struct hsm *h, const char *label, bool derive, bool sign)
{
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_BBOOL dv = derive ? CK_TRUE : CK_FALSE, sg = sign ? CK_TRUE : CK_FALSE;
	CK_ATTRIBUTE pub[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)label, strlen(label) },
		{ CKA_EC_PARAMS, (void *)hsm_p256_params, sizeof(hsm_p256_params) },
		{ CKA_VERIFY, &sg, sizeof(sg) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_MODIFIABLE, &no, sizeof(no) },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)label, strlen(label) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_DERIVE, &dv, sizeof(dv) },
		{ CKA_SIGN, &sg, sizeof(sg) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_MODIFIABLE, &no, sizeof(no) },
	};
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_RV rv;

	rv = h->mod->f->C_GenerateKeyPair(h->session, &mech, pub, sizeof(pub) / sizeof(pub[0]),
					  priv, sizeof(priv) / sizeof(priv[0]), &hpub, &hpriv);
	if (rv != CKR_OK)
		return hsm_fail(h, "C_GenerateKeyPair", rv);
	return 0;
}

static int hsm_provision_locked(struct hsm *h, const struct hsm_provision *p)
{
	CK_OBJECT_CLASS secret = CKO_SECRET_KEY, data = CKO_DATA, public = CKO_PUBLIC_KEY;
	CK_KEY_TYPE aes = CKK_AES, ec = CKK_EC;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	uint8_t point[OSFI_PUBKEY_LEN + 2];
	unsigned found = 0;
	int r;

	r = hsm_sweep_locked(h, false, &found);
	if (r < 0)
		return r;
	if (found > 0)
		return -HSM_ERR_ALREADY_PROVISIONED;

	/* K is extractable only so that C_WrapKey can wrap it; CKA_SENSITIVE keeps its value
	 * unreadable. CKA_WRAP_WITH_TRUSTED stays false: the wrapping key is a per-license
	 * session key, which a user session cannot mark CKA_TRUSTED (docs/security.md). */
	CK_ATTRIBUTE oem[] = {
		{ CKA_CLASS, &secret, sizeof(secret) },
		{ CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)HSM_LABEL_OEM_KEY, strlen(HSM_LABEL_OEM_KEY) },
		{ CKA_ID, (void *)HSM_LABEL_OEM_KEY, strlen(HSM_LABEL_OEM_KEY) },
		{ CKA_VALUE, (void *)p->image_key, OSFI_KEY_LEN },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_WRAP_WITH_TRUSTED, &no, sizeof(no) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_SIGN, &no, sizeof(no) },
		{ CKA_VERIFY, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_MODIFIABLE, &no, sizeof(no) },
	};
	CK_ATTRIBUTE fwid[] = {
		{ CKA_CLASS, &data, sizeof(data) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)HSM_LABEL_FIRMWARE_ID, strlen(HSM_LABEL_FIRMWARE_ID) },
		{ CKA_APPLICATION, (void *)hsm_application, strlen(hsm_application) },
		{ CKA_VALUE, (void *)p->firmware_id, OSFI_ID_LEN },
		{ CKA_MODIFIABLE, &no, sizeof(no) },
	};
	CK_ATTRIBUTE ca[] = {
		{ CKA_CLASS, &public, sizeof(public) },
		{ CKA_KEY_TYPE, &ec, sizeof(ec) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)HSM_LABEL_CA_PUB, strlen(HSM_LABEL_CA_PUB) },
		{ CKA_ID, (void *)HSM_LABEL_CA_PUB, strlen(HSM_LABEL_CA_PUB) },
		{ CKA_EC_PARAMS, (void *)hsm_p256_params, sizeof(hsm_p256_params) },
		{ CKA_EC_POINT, point, sizeof(point) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_MODIFIABLE, &no, sizeof(no) },
	};
	CK_ATTRIBUTE global[] = {
		{ CKA_CLASS, &secret, sizeof(secret) },
		{ CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)HSM_LABEL_GLOBAL_KEY, strlen(HSM_LABEL_GLOBAL_KEY) },
		{ CKA_ID, (void *)HSM_LABEL_GLOBAL_KEY, strlen(HSM_LABEL_GLOBAL_KEY) },
		{ CKA_VALUE, (void *)p->global_key, sizeof(p->global_key) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_DERIVE, &yes, sizeof(yes) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_SIGN, &no, sizeof(no) },
		{ CKA_VERIFY, &no, sizeof(no) },
		{ CKA_MODIFIABLE, &no, sizeof(no) },
	};

	point[0] = 0x04; /* DER OCTET STRING, as PKCS#11 specifies CKA_EC_POINT */
	point[1] = OSFI_PUBKEY_LEN;
	memcpy(point + 2, p->ca_pub, OSFI_PUBKEY_LEN);

	r = hsm_create(h, oem, sizeof(oem) / sizeof(oem[0]));
	if (r == 0)
		r = hsm_generate_ec(h, HSM_LABEL_LICENSE_KEY, true, false);
	if (r == 0)
		r = hsm_generate_ec(h, HSM_LABEL_AUDIT_KEY, false, true);
	if (r == 0)
		r = hsm_create(h, fwid, sizeof(fwid) / sizeof(fwid[0]));
	if (r == 0)
		r = hsm_create(h, ca, sizeof(ca) / sizeof(ca[0]));
	if (r == 0 && p->has_global_key)
		r = hsm_create(h, global, sizeof(global) / sizeof(global[0]));
	if (r == 0)
		r = hsm_create_u32(h, HSM_LABEL_GRANTED, p->max_count);
	/* The counter goes last: a token with a counter is a complete token. */
	if (r == 0)
		r = hsm_create_u32(h, HSM_LABEL_COUNTER, p->max_count);
	return r;
}

int hsm_provision_token(struct hsm *h, const struct hsm_provision *p)
{
	int r;

	if (!h || !p)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	if (!h->logged_in) {
		r = -HSM_ERR_NOT_LOGGED_IN;
	} else {
		r = hsm_provision_locked(h, p);
		if (r < 0 && r != -HSM_ERR_ALREADY_PROVISIONED)
			(void)hsm_sweep_locked(h, true, NULL); /* no half-provisioned token */
	}
	pthread_mutex_unlock(&h->lock);
	return r;
}

int hsm_refill(struct hsm *h, uint32_t add, uint32_t *ret_before, uint32_t *ret_after,
	       uint32_t *ret_granted)
{
	struct hsm_counter c, g;
	bool has_granted;
	int r;

	if (!h || add == 0)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	if (!h->logged_in) {
		r = -HSM_ERR_NOT_LOGGED_IN;
		goto out;
	}
	r = hsm_read_counter_locked(h, &c);
	if (r < 0)
		goto out;
	r = hsm_read_u32_locked(h, HSM_LABEL_GRANTED, &g);
	has_granted = r == 0;
	if (r < 0 && r != -HSM_ERR_OBJECT_MISSING)
		goto out;
	/* A token provisioned before the granted total existed starts counting it here. */
	if (!has_granted)
		g.value = c.value;
	if (add > UINT32_MAX - c.value || add > UINT32_MAX - g.value) {
		r = -HSM_ERR_INVALID;
		goto out;
	}
	/* The granted total first: interrupted after it, the counter is unchanged and the
	 * refill is simply not done; a replacing write leaves the lower, old value in force. */
	r = has_granted ? hsm_write_u32_locked(h, HSM_LABEL_GRANTED, &g, g.value + add) :
			  hsm_create_u32(h, HSM_LABEL_GRANTED, g.value + add);
	if (r == 0)
		r = hsm_write_counter_locked(h, &c, c.value + add);
	if (r == 0) {
		if (ret_before)
			*ret_before = c.value;
		if (ret_after)
			*ret_after = c.value + add;
		if (ret_granted)
			*ret_granted = g.value + add;
	}
out:
	pthread_mutex_unlock(&h->lock);
	return r;
}

int hsm_audit_rotate(struct hsm *h, unsigned *ret_gen)
{
	unsigned gen;
	char label[48];
	int r;

	if (!h)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	h->audit_gen_known = false;
	r = h->logged_in ? hsm_audit_generation_locked(h, &gen) : -HSM_ERR_NOT_LOGGED_IN;
	if (r == 0 && gen + 1 >= HSM_AUDIT_GENERATIONS_MAX)
		r = -HSM_ERR_INVALID;
	if (r == 0) {
		hsm_audit_label(gen + 1, label, sizeof(label));
		r = hsm_generate_ec(h, label, false, true);
	}
	/* Generations older than the one just replaced go: the previous key stays, to sign
	 * the change into the trail. */
	for (unsigned n = 0; r == 0 && n < gen; n++) {
		CK_OBJECT_HANDLE objs[4];
		CK_ULONG k = 0;

		hsm_audit_label(n, label, sizeof(label));
		for (int cls = 0; cls < 2 && r == 0; cls++) {
			r = hsm_find_all(h, cls ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY, label, objs, 4, &k);
			for (CK_ULONG i = 0; r == 0 && i < k; i++)
				(void)h->mod->f->C_DestroyObject(h->session, objs[i]);
		}
	}
	h->audit_gen_known = false;
	if (r == 0)
		r = hsm_audit_generation_locked(h, &gen);
	pthread_mutex_unlock(&h->lock);
	if (r == 0 && ret_gen)
		*ret_gen = gen;
	return r;
}

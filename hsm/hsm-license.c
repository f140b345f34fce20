/* Counted and global license issuance inside the token, and audit signatures: the calls
 * the line makes for every chip. See hsm.h. */
#include <pthread.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "hsm.h"
#include "hsm-internal.h"
#include "hsm-priv.h"

/* --- licenses ---------------------------------------------------------------------------- */

static void hsm_destroy_key(struct hsm *h, CK_OBJECT_HANDLE *k)
{
	if (*k != CK_INVALID_HANDLE)
		h->mod->f->C_DestroyObject(h->session, *k);
	*k = CK_INVALID_HANDLE;
}

/* KEK = AES-256-ECB_base(H) as a session key usable only to wrap, then wrapped = AES-KW of
 * the OEM key under it. Caller holds h->lock; the KEK is destroyed before returning. */
static int hsm_derive_and_wrap(struct hsm *h, CK_OBJECT_HANDLE base, CK_OBJECT_HANDLE oem,
			       const uint8_t hin[32], uint8_t ret_wrapped[OSFI_WRAPPED_LEN])
{
	CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
	CK_KEY_TYPE aes = CKK_AES;
	CK_ULONG len32 = 32;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_KEY_DERIVATION_STRING_DATA sd = { (CK_BYTE_PTR)hin, 32 };
	CK_MECHANISM derive = { CKM_AES_ECB_ENCRYPT_DATA, &sd, sizeof(sd) };
	CK_MECHANISM kw = { CKM_AES_KEY_WRAP, NULL, 0 };
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &secret, sizeof(secret) },
		{ CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_VALUE_LEN, &len32, sizeof(len32) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_WRAP, &yes, sizeof(yes) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
	};
	CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE;
	uint8_t out[OSFI_WRAPPED_LEN + 16];
	CK_ULONG n = sizeof(out);
	CK_RV rv;
	int r = 0;

	rv = h->mod->f->C_DeriveKey(h->session, &derive, base, tmpl, sizeof(tmpl) / sizeof(tmpl[0]),
				    &kek);
	if (rv != CKR_OK)
		return hsm_fail(h, "C_DeriveKey(AES_ECB_ENCRYPT_DATA)", rv);
	rv = h->mod->f->C_WrapKey(h->session, &kw, kek, oem, out, &n);
	if (rv != CKR_OK)
		r = hsm_fail(h, "C_WrapKey", rv);
	else if (n != OSFI_WRAPPED_LEN)
		r = -HSM_ERR_OBJECT_INVALID; /* the OEM key is not 16 bytes */
	else
		memcpy(ret_wrapped, out, OSFI_WRAPPED_LEN);
	hsm_destroy_key(h, &kek);
	return r;
}

static int hsm_random(struct hsm *h, uint8_t *buf, size_t len)
{
	CK_RV rv = h->mod->f->C_GenerateRandom(h->session, buf, len);

	return rv == CKR_OK ? 0 : hsm_fail(h, "C_GenerateRandom", rv);
}

static int hsm_check_target(struct hsm *h, uint32_t target, const uint8_t image_id[OSFI_ID_LEN],
			    uint8_t ret_id[OSFI_ID_LEN])
{
	uint8_t fw[OSFI_ID_LEN], id[OSFI_ID_LEN];
	int r;

	if (target == OSFI_TARGET_IMAGE)
		memcpy(id, image_id, sizeof(id));
	else
		osfi_module_firmware_id(target, id);
	r = hsm_firmware_id_locked(h, fw);
	if (r < 0)
		return r;
	if (memcmp(fw, id, sizeof(fw)) != 0)
		return -HSM_ERR_WRONG_FIRMWARE_ID;
	memcpy(ret_id, id, sizeof(id));
	return 0;
}

static int hsm_license_issue_locked(struct hsm *h, const struct hsm_license_request *req,
				    uint32_t expected, struct osfi_license *lic,
				    uint32_t *ret_before)
{
	CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
	CK_KEY_TYPE aes = CKK_AES;
	CK_ULONG len32 = 32;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE ztmpl[] = {
		{ CKA_CLASS, &secret, sizeof(secret) },
		{ CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_VALUE_LEN, &len32, sizeof(len32) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_DERIVE, &yes, sizeof(yes) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_DECRYPT, &no, sizeof(no) },
	};
	CK_OBJECT_HANDLE ca_obj, pub_obj, priv, oem, z = CK_INVALID_HANDLE;
	uint8_t ca[OSFI_PUBKEY_LEN], hin[32];
	struct hsm_counter counter;
	CK_ECDH1_DERIVE_PARAMS ecdh;
	CK_MECHANISM mech = { CKM_ECDH1_DERIVE, &ecdh, sizeof(ecdh) };
	struct osfi_cert cert;
	CK_RV rv;
	int r;

	if (!h->logged_in)
		return -HSM_ERR_NOT_LOGGED_IN;

	/* Everything that can refuse the request is checked before the counter moves. */
	if (osfi_cert_decode(req->cert, req->cert_len, &cert) < 0)
		return -HSM_ERR_BAD_CERT;
	r = hsm_find(h, CKO_PUBLIC_KEY, HSM_LABEL_CA_PUB, &ca_obj);
	if (r == 0)
		r = hsm_get_point(h, ca_obj, ca);
	if (r < 0)
		return r;
	if (osfi_cert_verify(&cert, ca) < 0)
		return -HSM_ERR_BAD_CERT;
	if (cert.device_id != req->device_id)
		return -HSM_ERR_WRONG_DEVICE;

	memset(lic, 0, sizeof(*lic));
	lic->kind = OSFI_LICENSE_KIND_CHIP;
	lic->device_id = req->device_id;
	lic->target = req->target;
	memcpy(lic->uid, cert.uid, OSFI_UID_LEN);
	r = hsm_check_target(h, req->target, req->image_id, lic->id);
	if (r < 0)
		return r;

	r = hsm_find(h, CKO_PRIVATE_KEY, HSM_LABEL_LICENSE_KEY, &priv);
	if (r == 0)
		r = hsm_find(h, CKO_SECRET_KEY, HSM_LABEL_OEM_KEY, &oem);
	if (r == 0)
		r = hsm_find(h, CKO_PUBLIC_KEY, HSM_LABEL_LICENSE_KEY, &pub_obj);
	if (r == 0)
		r = hsm_get_point(h, pub_obj, lic->hsm_pub);
	if (r == 0)
		r = hsm_random(h, lic->nonce, sizeof(lic->nonce));
	if (r == 0)
		r = hsm_read_counter_locked(h, &counter);
	if (r < 0)
		return r;
	if (expected != HSM_COUNTER_ANY && counter.value != expected)
		return -HSM_ERR_COUNTER_MISMATCH;
	if (counter.value == 0)
		return -HSM_ERR_COUNTER_EXHAUSTED;

	/* Spend: the decremented counter is on the token before any key material exists. */
	lic->counter = counter.value - 1;
	r = hsm_write_counter_locked(h, &counter, lic->counter);
	if (r < 0)
		return r;
	*ret_before = counter.value;

	ecdh = (CK_ECDH1_DERIVE_PARAMS){
		.kdf = CKD_NULL,
		.ulPublicDataLen = OSFI_PUBKEY_LEN,
		.pPublicData = cert.pubkey,
	};
	rv = h->mod->f->C_DeriveKey(h->session, &mech, priv, ztmpl,
				    sizeof(ztmpl) / sizeof(ztmpl[0]), &z);
	if (rv != CKR_OK)
		return hsm_fail(h, "C_DeriveKey(ECDH1)", rv);
	osfi_license_kek_input(lic, hin);
	r = hsm_derive_and_wrap(h, z, oem, hin, lic->wrapped);
	hsm_destroy_key(h, &z);
	return r;
}

int hsm_license_issue(struct hsm *h, const struct hsm_license_request *req,
		      uint32_t expected_count, struct hsm_license_result *ret_result)
{
	struct osfi_license lic;
	uint32_t before = 0;
	int r;

	if (!h || !req || !req->cert || !ret_result)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = hsm_license_issue_locked(h, req, expected_count, &lic, &before);
	pthread_mutex_unlock(&h->lock);
	if (r == 0) {
		osfi_license_encode(&lic, ret_result->license);
		ret_result->count_before = before;
		ret_result->count_after = lic.counter;
	}
	explicit_bzero(&lic, sizeof(lic));
	return r;
}

int hsm_license_issue_global(struct hsm *h, uint16_t device_id, uint32_t target,
			     const uint8_t image_id[OSFI_ID_LEN],
			     uint8_t ret_license[OSFI_LICENSE_LEN])
{
	struct osfi_license lic = {
		.kind = OSFI_LICENSE_KIND_GLOBAL,
		.device_id = device_id,
		.target = target,
	};
	CK_OBJECT_HANDLE g, oem;
	uint8_t hin[32];
	int r;

	if (!h || !image_id || !ret_license)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	if (!h->logged_in) {
		r = -HSM_ERR_NOT_LOGGED_IN;
		goto out;
	}
	r = hsm_check_target(h, target, image_id, lic.id);
	if (r < 0)
		goto out;
	r = hsm_find(h, CKO_SECRET_KEY, HSM_LABEL_GLOBAL_KEY, &g);
	if (r == -HSM_ERR_OBJECT_MISSING)
		r = -HSM_ERR_NO_GLOBAL_KEY;
	if (r == 0)
		r = hsm_find(h, CKO_SECRET_KEY, HSM_LABEL_OEM_KEY, &oem);
	if (r == 0)
		r = hsm_random(h, lic.nonce, sizeof(lic.nonce));
	if (r < 0)
		goto out;
	osfi_license_kek_input(&lic, hin);
	r = hsm_derive_and_wrap(h, g, oem, hin, lic.wrapped);
out:
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		osfi_license_encode(&lic, ret_license);
	explicit_bzero(&lic, sizeof(lic));
	return r;
}

/* --- audit ------------------------------------------------------------------------------- */

int hsm_audit_sign(struct hsm *h, const uint8_t digest[32], uint8_t ret_sig[64])
{
	return hsm_audit_sign_gen(h, -1, digest, ret_sig);
}

int hsm_audit_sign_gen(struct hsm *h, int gen, const uint8_t digest[32], uint8_t ret_sig[64])
{
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	char label[48];
	CK_OBJECT_HANDLE key;
	uint8_t sig[64];
	CK_ULONG n = sizeof(sig);
	CK_RV rv;
	int r;

	if (!h || !digest || !ret_sig)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	if (gen < 0) {
		unsigned g = 0;

		r = hsm_audit_generation_locked(h, &g);
		gen = (int)g;
	} else {
		r = 0;
	}
	hsm_audit_label((unsigned)gen, label, sizeof(label));
	if (r == 0)
		r = hsm_find(h, CKO_PRIVATE_KEY, label, &key);
	if (r == 0) {
		rv = h->mod->f->C_SignInit(h->session, &mech, key);
		if (rv == CKR_OK)
			rv = h->mod->f->C_Sign(h->session, (CK_BYTE_PTR)digest, 32, sig, &n);
		if (rv != CKR_OK)
			r = hsm_fail(h, "C_Sign", rv);
		else if (n != sizeof(sig))
			r = -HSM_ERR_OBJECT_INVALID;
	}
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		memcpy(ret_sig, sig, sizeof(sig));
	return r;
}

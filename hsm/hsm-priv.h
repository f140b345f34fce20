/* What hsm/'s objects share (token, objects, licenses, provisioning): the handle, the
 * module registry entry, and the helpers that run with the token's lock held. Not an API:
 * nothing outside hsm/ includes it. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "osfi/osfi.h"

#define HSM_COUNTER_MAX_OBJS 8

/* CKA_APPLICATION of the OSFI data objects. */
extern const char hsm_application[];

struct hsm_module {
	char *path;
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	bool finalize; /* we initialized it, so we finalize it */
	unsigned refs;
	struct hsm_module *next;
};

/* One per token and process; every handle on the token is this struct (refcounted). */
struct hsm {
	struct hsm_module *mod;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE session;
	pthread_mutex_t lock;
	unsigned refs;
	bool logged_in;
	char serial[17];	/* to find the token again after it was re-inserted */
	bool audit_gen_known;	/* audit_gen holds the newest audit key generation */
	unsigned audit_gen;
	CK_RV last_rv;
	const char *last_call;
	struct hsm *next;
};

/* The counter objects found on the token. Normally one; two exist only if a replacing
 * write (below) was interrupted, and then the lower value is the true one: the counter only
 * ever goes down, so taking the minimum can never give a spent license back. */
struct hsm_counter {
	CK_OBJECT_HANDLE objs[HSM_COUNTER_MAX_OBJS];
	CK_ULONG n;
	CK_OBJECT_HANDLE min_obj;
	uint32_t value;
};

/* Records a failed call (debug) and converts it to the error space. */
int hsm_fail(struct hsm *h, const char *call, CK_RV rv);
/* An expected object was not found: not provisioned, not logged in, or token gone. */
int hsm_missing(struct hsm *h);

/* Every helper below: the caller holds h->lock. */

/* Finds up to max objects of that class and label; *ret_n may be 0. */
int hsm_find_all(struct hsm *h, CK_OBJECT_CLASS cls, const char *label, CK_OBJECT_HANDLE *objs,
		 CK_ULONG max, CK_ULONG *ret_n);
/* Finds the single object of that class and label. */
int hsm_find(struct hsm *h, CK_OBJECT_CLASS cls, const char *label, CK_OBJECT_HANDLE *ret_obj);
/* Reads an attribute of exactly len bytes. */
int hsm_get_exact(struct hsm *h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, void *buf,
		  size_t len);
/* Reads CKA_EC_POINT of a public key as an uncompressed point. */
int hsm_get_point(struct hsm *h, CK_OBJECT_HANDLE obj, uint8_t ret[OSFI_PUBKEY_LEN]);
/* LE32 data objects: the counter and the granted total. */
int hsm_read_u32_locked(struct hsm *h, const char *label, struct hsm_counter *ret);
int hsm_read_counter_locked(struct hsm *h, struct hsm_counter *ret);
int hsm_create_u32(struct hsm *h, const char *label, uint32_t value);
int hsm_write_u32_locked(struct hsm *h, const char *label, const struct hsm_counter *c,
			 uint32_t value);
int hsm_write_counter_locked(struct hsm *h, const struct hsm_counter *c, uint32_t value);
int hsm_firmware_id_locked(struct hsm *h, uint8_t ret_id[OSFI_ID_LEN]);
/* The label of audit key generation gen: osfi-audit-key, then osfi-audit-key.1, .2... */
void hsm_audit_label(unsigned gen, char *buf, size_t len);
/* The newest audit key generation on the token (cached per handle). */
int hsm_audit_generation_locked(struct hsm *h, unsigned *ret_gen);

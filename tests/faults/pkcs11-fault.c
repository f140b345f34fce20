/* A PKCS#11 module for tests that loads a real one (SoftHSM2) and fails or delays its
 * calls. The configuration file is named by SFID_FAULT_PKCS11 (see fault-conf.h):
 *
 *	module = /usr/lib/softhsm/libsofthsm2.so   # required
 *	function = C_DeriveKey   # count only this function (default: every wrapped call)
 *	nth = 3                  # the 3rd counted call is hit (0 or absent: every one)
 *	repeat = yes             # ... and every later one
 *	rv = 0x30                # hit calls return this CK_RV (CKR_DEVICE_ERROR) unrun
 *	delay_ms = 1500          # hit calls wait this long first (a smartcard's pace)
 *	trace = /tmp/x/p11.trace # "N C_Name RV [injected]" per counted call
 *	arm_file = /tmp/x/armed  # count only while this file exists; a new one restarts
 *	                         # the count, its own lines (nth = 7, rv = ...) override
 *
 * Every function of the PKCS#11 2.40 list that sfid and sfi-hsm call is wrapped; the
 * others go straight to the real module and are not counted. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define CRYPTOKI_GNU 1
#include <p11-kit/pkcs11.h>

#include "fault-conf.h"

static struct ck_function_list *real;
static struct ck_function_list wrapped;
static struct fault_conf conf;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int load_error;

/* Decides the fate of one call of name: 1 with *rv set when it must fail unrun. */
static int inject(const char *name, unsigned long *n, ck_rv_t *rv)
{
	*n = 0;
	if (!fault_armed(&conf))
		return 0;
	if (conf.function[0] && strcmp(conf.function, name) != 0)
		return 0;
	*n = fault_next();
	if (!fault_hits(&conf, *n))
		return 0;
	fault_delay(&conf);
	if (!conf.have_rv)
		return 0;
	*rv = conf.rv;
	fault_trace(&conf, *n, name, (long)*rv, true);
	return 1;
}

#define WRAP(name, params, args)                                                    \
	static ck_rv_t w_##name params                                              \
	{                                                                           \
		unsigned long n;                                                    \
		ck_rv_t rv;                                                         \
		if (inject(#name, &n, &rv))                                         \
			return rv;                                                  \
		rv = real->name args;                                               \
		if (n)                                                              \
			fault_trace(&conf, n, #name, (long)rv, false);              \
		return rv;                                                          \
	}

WRAP(C_Initialize, (void *a), (a))
WRAP(C_Finalize, (void *a), (a))
WRAP(C_GetInfo, (struct ck_info *i), (i))
WRAP(C_GetSlotList, (unsigned char p, ck_slot_id_t *l, unsigned long *c), (p, l, c))
WRAP(C_GetSlotInfo, (ck_slot_id_t s, struct ck_slot_info *i), (s, i))
WRAP(C_GetTokenInfo, (ck_slot_id_t s, struct ck_token_info *i), (s, i))
WRAP(C_OpenSession, (ck_slot_id_t s, ck_flags_t f, void *a, ck_notify_t no,
		     ck_session_handle_t *h), (s, f, a, no, h))
WRAP(C_CloseSession, (ck_session_handle_t h), (h))
WRAP(C_CloseAllSessions, (ck_slot_id_t s), (s))
WRAP(C_GetSessionInfo, (ck_session_handle_t h, struct ck_session_info *i), (h, i))
WRAP(C_Login, (ck_session_handle_t h, ck_user_type_t u, unsigned char *p, unsigned long l),
     (h, u, p, l))
WRAP(C_Logout, (ck_session_handle_t h), (h))
WRAP(C_CreateObject, (ck_session_handle_t h, struct ck_attribute *t, unsigned long c,
		      ck_object_handle_t *o), (h, t, c, o))
WRAP(C_DestroyObject, (ck_session_handle_t h, ck_object_handle_t o), (h, o))
WRAP(C_GetAttributeValue, (ck_session_handle_t h, ck_object_handle_t o,
			   struct ck_attribute *t, unsigned long c), (h, o, t, c))
WRAP(C_SetAttributeValue, (ck_session_handle_t h, ck_object_handle_t o,
			   struct ck_attribute *t, unsigned long c), (h, o, t, c))
WRAP(C_FindObjectsInit, (ck_session_handle_t h, struct ck_attribute *t, unsigned long c),
     (h, t, c))
WRAP(C_FindObjects, (ck_session_handle_t h, ck_object_handle_t *o, unsigned long m,
		     unsigned long *c), (h, o, m, c))
WRAP(C_FindObjectsFinal, (ck_session_handle_t h), (h))
WRAP(C_EncryptInit, (ck_session_handle_t h, struct ck_mechanism *m, ck_object_handle_t k),
     (h, m, k))
WRAP(C_Encrypt, (ck_session_handle_t h, unsigned char *d, unsigned long dl, unsigned char *o,
		 unsigned long *ol), (h, d, dl, o, ol))
WRAP(C_DecryptInit, (ck_session_handle_t h, struct ck_mechanism *m, ck_object_handle_t k),
     (h, m, k))
WRAP(C_Decrypt, (ck_session_handle_t h, unsigned char *d, unsigned long dl, unsigned char *o,
		 unsigned long *ol), (h, d, dl, o, ol))
WRAP(C_SignInit, (ck_session_handle_t h, struct ck_mechanism *m, ck_object_handle_t k),
     (h, m, k))
WRAP(C_Sign, (ck_session_handle_t h, unsigned char *d, unsigned long dl, unsigned char *s,
	      unsigned long *sl), (h, d, dl, s, sl))
WRAP(C_VerifyInit, (ck_session_handle_t h, struct ck_mechanism *m, ck_object_handle_t k),
     (h, m, k))
WRAP(C_Verify, (ck_session_handle_t h, unsigned char *d, unsigned long dl, unsigned char *s,
		unsigned long sl), (h, d, dl, s, sl))
WRAP(C_GenerateKey, (ck_session_handle_t h, struct ck_mechanism *m, struct ck_attribute *t,
		     unsigned long c, ck_object_handle_t *k), (h, m, t, c, k))
WRAP(C_GenerateKeyPair, (ck_session_handle_t h, struct ck_mechanism *m,
			 struct ck_attribute *pt, unsigned long pc, struct ck_attribute *st,
			 unsigned long sc, ck_object_handle_t *pk, ck_object_handle_t *sk),
     (h, m, pt, pc, st, sc, pk, sk))
WRAP(C_WrapKey, (ck_session_handle_t h, struct ck_mechanism *m, ck_object_handle_t w,
		 ck_object_handle_t k, unsigned char *o, unsigned long *ol),
     (h, m, w, k, o, ol))
WRAP(C_UnwrapKey, (ck_session_handle_t h, struct ck_mechanism *m, ck_object_handle_t u,
		   unsigned char *w, unsigned long wl, struct ck_attribute *t, unsigned long c,
		   ck_object_handle_t *k), (h, m, u, w, wl, t, c, k))
WRAP(C_DeriveKey, (ck_session_handle_t h, struct ck_mechanism *m, ck_object_handle_t b,
		   struct ck_attribute *t, unsigned long c, ck_object_handle_t *k),
     (h, m, b, t, c, k))
WRAP(C_GenerateRandom, (ck_session_handle_t h, unsigned char *r, unsigned long l), (h, r, l))

static void load(void)
{
	CK_C_GetFunctionList get;
	void *dl;

	if (fault_conf_load("SFID_FAULT_PKCS11", &conf) < 0 || !conf.module[0]) {
		fprintf(stderr, "pkcs11-fault: set SFID_FAULT_PKCS11 to a file naming the real "
				"module (module = PATH)\n");
		load_error = 1;
		return;
	}
	dl = dlopen(conf.module, RTLD_NOW | RTLD_LOCAL);
	get = dl ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
	if (!get || get(&real) != CKR_OK || !real) {
		fprintf(stderr, "pkcs11-fault: cannot load %s: %s\n", conf.module,
			dl ? "no function list" : dlerror());
		load_error = 1;
		return;
	}
	wrapped = *real;
#define SET(name) wrapped.name = w_##name
	SET(C_Initialize);
	SET(C_Finalize);
	SET(C_GetInfo);
	SET(C_GetSlotList);
	SET(C_GetSlotInfo);
	SET(C_GetTokenInfo);
	SET(C_OpenSession);
	SET(C_CloseSession);
	SET(C_CloseAllSessions);
	SET(C_GetSessionInfo);
	SET(C_Login);
	SET(C_Logout);
	SET(C_CreateObject);
	SET(C_DestroyObject);
	SET(C_GetAttributeValue);
	SET(C_SetAttributeValue);
	SET(C_FindObjectsInit);
	SET(C_FindObjects);
	SET(C_FindObjectsFinal);
	SET(C_EncryptInit);
	SET(C_Encrypt);
	SET(C_DecryptInit);
	SET(C_Decrypt);
	SET(C_SignInit);
	SET(C_Sign);
	SET(C_VerifyInit);
	SET(C_Verify);
	SET(C_GenerateKey);
	SET(C_GenerateKeyPair);
	SET(C_WrapKey);
	SET(C_UnwrapKey);
	SET(C_DeriveKey);
	SET(C_GenerateRandom);
#undef SET
}

ck_rv_t C_GetFunctionList(struct ck_function_list **list)
{
	pthread_once(&once, load);
	if (load_error)
		return CKR_GENERAL_ERROR;
	if (!list)
		return CKR_ARGUMENTS_BAD;
	*list = &wrapped;
	return CKR_OK;
}

/* PKCS#11 token access for sfid: module loading, token selection, login, OSFI objects,
 * counted license issuance and audit signatures. See hsm.h for the contracts and
 * docs/security.md for the object labels and the counter trust model. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/param_build.h>

#include "hsm.h"
#include "hsm-internal.h"

#define HSM_SLOT_RETRIES 8
#define HSM_PIN_MAX 256
#define HSM_COUNTER_MAX_OBJS 8

/* DER of the prime256v1 OID, the CKA_EC_PARAMS of every OSFI EC key. */
static const uint8_t hsm_p256_params[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03,
					   0x01, 0x07 };
static const char hsm_application[] = "osfi";

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

/* Protects the module and token lists and their refcounts. */
static pthread_mutex_t hsm_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hsm_module *hsm_modules;
static struct hsm *hsm_tokens;

const char *hsm_error_to_string(int r)
{
	if (r > 0)
		return "unknown HSM error";
	return sfi_strerror(r);
}

/* Maps a CK_RV to our enum; in_session: the session was open, so a vanished token or
 * session means the token was removed under us. */
int hsm_rv_to_error(CK_RV rv, bool in_session)
{
	switch (rv) {
	case CKR_OK:
		return 0;
	case CKR_HOST_MEMORY:
		return -HSM_ERR_NOMEM;
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_SLOT_ID_INVALID:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
		return in_session ? -HSM_ERR_TOKEN_REMOVED : -HSM_ERR_NO_TOKEN;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
		return -HSM_ERR_PIN_INCORRECT;
	case CKR_PIN_LOCKED:
	case CKR_PIN_EXPIRED:
		return -HSM_ERR_PIN_LOCKED;
	case CKR_USER_NOT_LOGGED_IN:
		return -HSM_ERR_NOT_LOGGED_IN;
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_UNEXTRACTABLE:
	case CKR_FUNCTION_NOT_SUPPORTED:
		return -HSM_ERR_MECHANISM;
	case CKR_OBJECT_HANDLE_INVALID:
	case CKR_KEY_HANDLE_INVALID:
		return -HSM_ERR_OBJECT_MISSING;
	default:
		return -HSM_ERR_DEVICE;
	}
}

/* Whether the token left its slot. Modules report a token removed under an open session
 * in different ways (SoftHSM2: empty searches and CKR_GENERAL_ERROR, while the slot may
 * still claim a token), so failures and missing objects are checked against both the slot's
 * CKF_TOKEN_PRESENT and C_GetTokenInfo. Caller holds h->lock. */
static bool hsm_token_gone(struct hsm *h)
{
	CK_SLOT_INFO si;
	CK_TOKEN_INFO ti;
	CK_RV rv = h->mod->f->C_GetSlotInfo(h->slot, &si);

	if (rv != CKR_OK || !(si.flags & CKF_TOKEN_PRESENT))
		return true;
	rv = h->mod->f->C_GetTokenInfo(h->slot, &ti);
	return rv != CKR_OK;
}

/* Records a failed call (debug) and converts it. Caller holds h->lock. */
static int hsm_fail(struct hsm *h, const char *call, CK_RV rv)
{
	int r = hsm_rv_to_error(rv, true);

	h->last_rv = rv;
	h->last_call = call;
	if ((r == -HSM_ERR_DEVICE || r == -HSM_ERR_OBJECT_MISSING) && hsm_token_gone(h))
		r = -HSM_ERR_TOKEN_REMOVED;
	return r;
}

/* An expected object was not found: not provisioned, not logged in, or token gone. */
static int hsm_missing(struct hsm *h)
{
	if (hsm_token_gone(h))
		return -HSM_ERR_TOKEN_REMOVED;
	return h->logged_in ? -HSM_ERR_OBJECT_MISSING : -HSM_ERR_NOT_LOGGED_IN;
}

unsigned long hsm_last_rv(struct hsm *h)
{
	unsigned long rv;

	if (!h)
		return 0;
	pthread_mutex_lock(&h->lock);
	rv = h->last_rv;
	pthread_mutex_unlock(&h->lock);
	return rv;
}

const char *hsm_last_call(struct hsm *h)
{
	const char *c;

	if (!h)
		return "";
	pthread_mutex_lock(&h->lock);
	c = h->last_call ? h->last_call : "";
	pthread_mutex_unlock(&h->lock);
	return c;
}

/* Copies a space-padded PKCS#11 text field into a NUL-terminated string without the
 * padding (and without trailing NULs some modules use instead). */
void hsm_strip_field(const unsigned char *field, size_t len, char *out, size_t out_size)
{
	size_t n = len;

	while (n > 0 && (field[n - 1] == ' ' || field[n - 1] == '\0'))
		n--;
	if (n >= out_size)
		n = out_size - 1;
	memcpy(out, field, n);
	out[n] = '\0';
}

/* --- module and token registry ----------------------------------------------------------- */

static void hsm_module_unref(struct hsm_module *m)
{
	struct hsm_module **p;

	if (!m || --m->refs > 0)
		return;
	for (p = &hsm_modules; *p; p = &(*p)->next)
		if (*p == m) {
			*p = m->next;
			break;
		}
	if (m->finalize)
		m->f->C_Finalize(NULL);
	if (m->dl)
		dlclose(m->dl);
	free(m->path);
	free(m);
}

static int hsm_module_get(const char *path, struct hsm_module **ret_mod)
{
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	CK_C_GetFunctionList get_list;
	struct hsm_module *m;
	CK_RV rv;

	for (m = hsm_modules; m; m = m->next)
		if (strcmp(m->path, path) == 0) {
			m->refs++;
			*ret_mod = m;
			return 0;
		}

	m = calloc(1, sizeof(*m));
	if (!m)
		return -HSM_ERR_NOMEM;
	m->path = strdup(path);
	if (!m->path) {
		free(m);
		return -HSM_ERR_NOMEM;
	}
	m->refs = 1;
	m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!m->dl)
		goto fail;
	get_list = (CK_C_GetFunctionList)dlsym(m->dl, "C_GetFunctionList");
	if (!get_list || get_list(&m->f) != CKR_OK || !m->f)
		goto fail;
	rv = m->f->C_Initialize(&args);
	if (rv == CKR_OK)
		m->finalize = true;
	else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		goto fail;

	m->next = hsm_modules;
	hsm_modules = m;
	*ret_mod = m;
	return 0;
fail:
	if (m->dl)
		dlclose(m->dl);
	free(m->path);
	free(m);
	return -HSM_ERR_MODULE;
}

/* Finds the slot whose token matches label or serial. The slot list can change between the
 * two C_GetSlotList calls (hotplug), hence the bounded retry. */
static int hsm_find_slot(struct hsm_module *m, const char *label, const char *serial,
			 CK_SLOT_ID *ret_slot)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	CK_RV rv = CKR_OK;
	int r = -HSM_ERR_NO_TOKEN;

	for (unsigned attempt = 0; attempt < HSM_SLOT_RETRIES; attempt++) {
		CK_ULONG count = 0;

		rv = m->f->C_GetSlotList(CK_TRUE, NULL, &count);
		if (rv != CKR_OK)
			break;
		if (count == 0) {
			n = 0;
			break;
		}
		free(slots);
		slots = calloc(count, sizeof(*slots));
		if (!slots)
			return -HSM_ERR_NOMEM;
		n = count;
		rv = m->f->C_GetSlotList(CK_TRUE, slots, &n);
		if (rv != CKR_BUFFER_TOO_SMALL)
			break;
	}
	if (rv != CKR_OK) {
		free(slots);
		return rv == CKR_BUFFER_TOO_SMALL ? -HSM_ERR_DEVICE : hsm_rv_to_error(rv, false);
	}

	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		char l[sizeof(ti.label) + 1], s[sizeof(ti.serialNumber) + 1];

		if (m->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		hsm_strip_field(ti.label, sizeof(ti.label), l, sizeof(l));
		hsm_strip_field(ti.serialNumber, sizeof(ti.serialNumber), s, sizeof(s));
		if ((label && strcmp(l, label) != 0) || (serial && strcmp(s, serial) != 0))
			continue;
		*ret_slot = slots[i];
		r = 0;
		break;
	}
	free(slots);
	return r;
}

int hsm_token_list(const char *module_path, struct hsm_token_info **ret_list, size_t *ret_n)
{
	struct hsm_module *m = NULL;
	struct hsm_token_info *list = NULL;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, count = 0;
	size_t k = 0;
	CK_RV rv;
	int r;

	if (!module_path || !ret_list || !ret_n)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&hsm_registry_lock);
	r = hsm_module_get(module_path, &m);
	if (r < 0)
		goto out;
	for (unsigned attempt = 0; attempt < HSM_SLOT_RETRIES; attempt++) {
		rv = m->f->C_GetSlotList(CK_TRUE, NULL, &count);
		if (rv != CKR_OK || count == 0)
			break;
		free(slots);
		slots = calloc(count, sizeof(*slots));
		if (!slots) {
			r = -HSM_ERR_NOMEM;
			goto out;
		}
		n = count;
		rv = m->f->C_GetSlotList(CK_TRUE, slots, &n);
		if (rv != CKR_BUFFER_TOO_SMALL)
			break;
		n = 0;
	}
	if (rv != CKR_OK) {
		r = rv == CKR_BUFFER_TOO_SMALL ? -HSM_ERR_DEVICE : hsm_rv_to_error(rv, false);
		goto out;
	}
	list = calloc(n ? n : 1, sizeof(*list));
	if (!list) {
		r = -HSM_ERR_NOMEM;
		goto out;
	}
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		struct hsm_token_info *e = &list[k];

		if (m->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
		    !(ti.flags & CKF_TOKEN_INITIALIZED))
			continue;
		hsm_strip_field(ti.label, sizeof(ti.label), e->label, sizeof(e->label));
		hsm_strip_field(ti.serialNumber, sizeof(ti.serialNumber), e->serial,
				sizeof(e->serial));
		hsm_strip_field(ti.manufacturerID, sizeof(ti.manufacturerID), e->manufacturer,
				sizeof(e->manufacturer));
		hsm_strip_field(ti.model, sizeof(ti.model), e->model, sizeof(e->model));
		e->pin_at_risk = (ti.flags & (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY |
					      CKF_USER_PIN_LOCKED)) != 0;
		k++;
	}
	*ret_list = list;
	*ret_n = k;
	list = NULL;
	r = 0;
out:
	free(list);
	free(slots);
	if (m)
		hsm_module_unref(m);
	pthread_mutex_unlock(&hsm_registry_lock);
	return r;
}

int hsm_open(const char *module_path, const char *token_label, const char *token_serial,
	     struct hsm **ret_hsm)
{
	struct hsm_module *m = NULL;
	struct hsm *h;
	CK_SLOT_ID slot;
	CK_RV rv;
	int r;

	if (!module_path || !ret_hsm || (!token_label && !token_serial))
		return -HSM_ERR_INVALID;

	pthread_mutex_lock(&hsm_registry_lock);
	r = hsm_module_get(module_path, &m);
	if (r < 0)
		goto out;
	r = hsm_find_slot(m, token_label, token_serial, &slot);
	if (r < 0)
		goto out;

	for (h = hsm_tokens; h; h = h->next)
		if (h->mod == m && h->slot == slot) {
			h->refs++;
			hsm_module_unref(m); /* the token holds its own reference */
			*ret_hsm = h;
			r = 0;
			m = NULL;
			goto out;
		}

	h = calloc(1, sizeof(*h));
	if (!h) {
		r = -HSM_ERR_NOMEM;
		goto out;
	}
	rv = m->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
				 &h->session);
	if (rv != CKR_OK) {
		free(h);
		r = hsm_rv_to_error(rv, false);
		goto out;
	}
	pthread_mutex_init(&h->lock, NULL);
	h->mod = m;
	h->slot = slot;
	{
		CK_TOKEN_INFO ti;

		if (m->f->C_GetTokenInfo(slot, &ti) == CKR_OK)
			hsm_strip_field(ti.serialNumber, sizeof(ti.serialNumber), h->serial,
					sizeof(h->serial));
	}
	h->refs = 1;
	h->next = hsm_tokens;
	hsm_tokens = h;
	m = NULL;
	*ret_hsm = h;
	r = 0;
out:
	if (m)
		hsm_module_unref(m);
	pthread_mutex_unlock(&hsm_registry_lock);
	return r;
}

int hsm_reopen(struct hsm *h)
{
	CK_SESSION_HANDLE session;
	CK_SLOT_ID slot;
	CK_RV rv;
	int r;

	if (!h || !h->serial[0])
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	r = hsm_find_slot(h->mod, NULL, h->serial, &slot);
	if (r == 0) {
		rv = h->mod->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
					      &session);
		if (rv == CKR_OK) {
			/* The old session is gone with the token; closing it only tidies up. */
			h->mod->f->C_CloseSession(h->session);
			h->session = session;
			h->slot = slot;
			h->logged_in = false;
		} else {
			r = hsm_fail(h, "C_OpenSession", rv);
		}
	}
	pthread_mutex_unlock(&h->lock);
	return r;
}

struct hsm *hsm_close(struct hsm *h)
{
	struct hsm **p;

	if (!h)
		return NULL;
	pthread_mutex_lock(&hsm_registry_lock);
	if (--h->refs == 0) {
		for (p = &hsm_tokens; *p; p = &(*p)->next)
			if (*p == h) {
				*p = h->next;
				break;
			}
		/* Logging out is implied by closing the application's last session. */
		h->mod->f->C_CloseSession(h->session);
		hsm_module_unref(h->mod);
		pthread_mutex_destroy(&h->lock);
		free(h);
	}
	pthread_mutex_unlock(&hsm_registry_lock);
	return NULL;
}

/* --- login ------------------------------------------------------------------------------- */

int hsm_login_pin(struct hsm *h, char *pin, size_t len)
{
	CK_RV rv;
	int r;

	if (!h || !pin || len == 0) {
		if (pin)
			explicit_bzero(pin, len);
		return -HSM_ERR_INVALID;
	}
	pthread_mutex_lock(&h->lock);
	rv = h->mod->f->C_Login(h->session, CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
	explicit_bzero(pin, len);
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
		h->logged_in = true;
		r = 0;
	} else {
		r = hsm_fail(h, "C_Login", rv);
	}
	pthread_mutex_unlock(&h->lock);
	return r;
}

/* Reads the first line of a PIN file into pin (NUL-terminated); refuses anything but a
 * regular file, and files others can read (a PIN there is as good as published) or write
 * (anyone could make sfid try PINs until the card locks). */
int hsm_pin_read_file(const char *path, char *pin, size_t size, size_t *ret_len)
{
	struct stat st;
	size_t n = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -HSM_ERR_PIN_SOURCE;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_IROTH | S_IWOTH))) {
		close(fd);
		return -HSM_ERR_PIN_SOURCE;
	}
	while (n < size - 1) {
		ssize_t k = read(fd, pin + n, size - 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			close(fd);
			explicit_bzero(pin, size);
			return -HSM_ERR_PIN_SOURCE;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	pin[n] = '\0';
	n = strcspn(pin, "\r\n");
	explicit_bzero(pin + n, size - n);
	if (n == 0)
		return -HSM_ERR_PIN_SOURCE;
	*ret_len = n;
	return 0;
}

int hsm_login_pin_file(struct hsm *h, const char *path)
{
	char pin[HSM_PIN_MAX];
	size_t len;
	int r;

	if (!h || !path)
		return -HSM_ERR_INVALID;
	r = hsm_pin_read_file(path, pin, sizeof(pin), &len);
	if (r < 0)
		return r;
	return hsm_login_pin(h, pin, len);
}

int hsm_login_credential(struct hsm *h, const char *name)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	char *path;
	int r;

	if (!h || !name || !*name || strchr(name, '/'))
		return -HSM_ERR_INVALID;
	if (!dir || !*dir)
		return -HSM_ERR_PIN_SOURCE;
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return -HSM_ERR_NOMEM;
	r = hsm_login_pin_file(h, path);
	free(path);
	return r;
}

int hsm_token_info(struct hsm *h, struct hsm_token_info *ret_info)
{
	struct hsm_token_info info = { 0 };
	CK_TOKEN_INFO ti;
	CK_RV rv;
	int r = 0;

	if (!h || !ret_info)
		return -HSM_ERR_INVALID;
	pthread_mutex_lock(&h->lock);
	rv = h->mod->f->C_GetTokenInfo(h->slot, &ti);
	if (rv != CKR_OK) {
		r = hsm_fail(h, "C_GetTokenInfo", rv);
	} else {
		hsm_strip_field(ti.label, sizeof(ti.label), info.label, sizeof(info.label));
		hsm_strip_field(ti.serialNumber, sizeof(ti.serialNumber), info.serial,
				sizeof(info.serial));
		hsm_strip_field(ti.manufacturerID, sizeof(ti.manufacturerID), info.manufacturer,
				sizeof(info.manufacturer));
		hsm_strip_field(ti.model, sizeof(ti.model), info.model, sizeof(info.model));
		info.logged_in = h->logged_in;
	}
	pthread_mutex_unlock(&h->lock);
	if (r == 0)
		*ret_info = info;
	return r;
}

/* --- objects ----------------------------------------------------------------------------- */

/* Finds up to max objects of that class and label; *ret_n may be 0. Caller holds h->lock. */
static int hsm_find_all(struct hsm *h, CK_OBJECT_CLASS cls, const char *label,
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
static int hsm_find(struct hsm *h, CK_OBJECT_CLASS cls, const char *label,
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
static int hsm_get_exact(struct hsm *h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, void *buf,
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
static int hsm_get_point(struct hsm *h, CK_OBJECT_HANDLE obj, uint8_t ret[OSFI_PUBKEY_LEN])
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

/* The counter objects found on the token. Normally one; two exist only if a replacing
 * write (below) was interrupted, and then the lower value is the true one: the counter only
 * ever goes down, so taking the minimum can never give a spent license back. */
struct hsm_counter {
	CK_OBJECT_HANDLE objs[HSM_COUNTER_MAX_OBJS];
	CK_ULONG n;
	CK_OBJECT_HANDLE min_obj;
	uint32_t value;
};

/* Reads a LE32 data object (the counter, or the granted total) by label. */
static int hsm_read_u32_locked(struct hsm *h, const char *label, struct hsm_counter *ret)
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

static int hsm_read_counter_locked(struct hsm *h, struct hsm_counter *ret)
{
	return hsm_read_u32_locked(h, HSM_LABEL_COUNTER, ret);
}

static int hsm_create_u32(struct hsm *h, const char *label, uint32_t value)
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
static int hsm_write_u32_locked(struct hsm *h, const char *label, const struct hsm_counter *c,
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

static int hsm_write_counter_locked(struct hsm *h, const struct hsm_counter *c, uint32_t value)
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

static int hsm_firmware_id_locked(struct hsm *h, uint8_t ret_id[OSFI_ID_LEN])
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

static int hsm_generate_ec(struct hsm *h, const char *label, bool derive, bool sign);

/* The label of audit key generation gen: osfi-audit-key, then osfi-audit-key.1, .2... */
static void hsm_audit_label(unsigned gen, char *buf, size_t len)
{
	if (gen == 0)
		snprintf(buf, len, "%s", HSM_LABEL_AUDIT_KEY);
	else
		snprintf(buf, len, "%s.%u", HSM_LABEL_AUDIT_KEY, gen);
}

/* The newest audit key generation on the token (cached: a rotation by another process is
 * seen by the next process). Caller holds h->lock. */
static int hsm_audit_generation_locked(struct hsm *h, unsigned *ret_gen)
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

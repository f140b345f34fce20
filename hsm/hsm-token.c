/* PKCS#11 token access, what every user of a token needs: the module and token registry
 * (open, list, reopen, close), login, token information, and the mapping of CK_RV to the
 * error space. See hsm.h for the contracts. */
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

#include "hsm.h"
#include "hsm-internal.h"
#include "hsm-priv.h"
#include "sfi-file.h"

#define HSM_SLOT_RETRIES 8
#define HSM_PIN_MAX 256

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
int hsm_fail(struct hsm *h, const char *call, CK_RV rv)
{
	int r = hsm_rv_to_error(rv, true);

	h->last_rv = rv;
	h->last_call = call;
	if ((r == -HSM_ERR_DEVICE || r == -HSM_ERR_OBJECT_MISSING) && hsm_token_gone(h))
		r = -HSM_ERR_TOKEN_REMOVED;
	return r;
}

/* An expected object was not found: not provisioned, not logged in, or token gone. */
int hsm_missing(struct hsm *h)
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
	return sfi_secret_read_line(path, pin, size, ret_len) < 0 ? -HSM_ERR_PIN_SOURCE : 0;
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

/* sfi-hsm: the OEM's token tool. Provisions a PKCS#11 token with the OSFI objects, shows
 * its state, issues counted chip licenses and uncounted global licenses, exports the audit
 * public key. The PIN comes from --pin-file or a no-echo prompt on /dev/tty, never argv. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "config.h"
#include "hsm.h"
#include "hsm-provision.h"
#include "osfi/osfi.h"
#include "sfi-error.h"
#include "sfi-hex.h"
#include "sfi-parse.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_USAGE = 1,
	EXIT_INPUT = 2,	    /* an input or output file is missing or malformed */
	EXIT_TOKEN = 3,	    /* module, token or token operation failure */
	EXIT_LOGIN = 4,	    /* PIN missing, incorrect or locked */
	EXIT_PROVISION = 5, /* token not provisioned / already provisioned / objects invalid */
	EXIT_REFUSED = 6,   /* certificate, device id or firmware id refused: nothing spent */
	EXIT_COUNTER = 7,   /* counter exhausted or changed: nothing spent */
};

struct args {
	const char *module, *token, *serial, *pin_file;
	const char *image_key, *image, *ca_pub, *global_key, *cert, *out;
	uint32_t module_id, max_count, add;
	bool has_module_id, has_max_count, has_add, wipe, json;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: sfi-hsm COMMAND [OPTIONS]\n"
		"\n"
		"Commands:\n"
		"  provision --image-key K.bin (--image IMAGE | --module-id N) --max-count N\n"
		"            --ca-pub CA.pem [--global-key G.bin] [--wipe]\n"
		"                        create the OSFI objects on the token\n"
		"  refill --add N        add N licenses to the counter (and to the granted total),\n"
		"                        keeping the keys; sfid records the refill in its trail\n"
		"  info [--json]         token, firmware id, licenses left and granted, public keys\n"
		"  license --cert CERT --image IMAGE --out LIC [--module-id N]\n"
		"                        issue one counted license for the chip of CERT\n"
		"  global-license --image IMAGE --out LIC [--module-id N]\n"
		"                        issue an uncounted global license (needs the global key)\n"
		"  audit-pubkey --out AUDIT.pem\n"
		"                        export the audit public key (PEM)\n"
		"  rotate-audit-key --out NEW.pem\n"
		"                        make a new audit key (the previous one stays to sign the\n"
		"                        change into the trail); export the new public key\n"
		"\n"
		"Token options (every command):\n"
		"  --module LIB          PKCS#11 module (default %s)\n"
		"  --token LABEL         token label    --serial S   token serial number\n"
		"  --pin-file FILE       user PIN, first line (not readable or writable by others);\n"
		"                        without it the PIN is asked on the terminal\n"
		"\n"
		"Exit codes: 0 success, 1 usage, 2 input/output file, 3 module or token,\n"
		"  4 PIN, 5 token (not) provisioned, 6 refused (certificate, device or firmware id;\n"
		"  nothing spent), 7 counter exhausted or changed (nothing spent).\n",
		SFID_DEFAULT_PKCS11_MODULE);
}

static int exit_for(int r)
{
	switch ((enum hsm_error)-r) {
	case HSM_OK:
		return EXIT_OK;
	case HSM_ERR_INVALID:
		return EXIT_INPUT;
	case HSM_ERR_NOMEM:
	case HSM_ERR_MODULE:
	case HSM_ERR_NO_TOKEN:
	case HSM_ERR_TOKEN_REMOVED:
	case HSM_ERR_MECHANISM:
	case HSM_ERR_DEVICE:
		return EXIT_TOKEN;
	case HSM_ERR_PIN_SOURCE:
	case HSM_ERR_PIN_INCORRECT:
	case HSM_ERR_PIN_LOCKED:
	case HSM_ERR_NOT_LOGGED_IN:
		return EXIT_LOGIN;
	case HSM_ERR_OBJECT_MISSING:
	case HSM_ERR_OBJECT_INVALID:
	case HSM_ERR_ALREADY_PROVISIONED:
	case HSM_ERR_NO_GLOBAL_KEY:
		return EXIT_PROVISION;
	case HSM_ERR_WRONG_FIRMWARE_ID:
	case HSM_ERR_BAD_CERT:
	case HSM_ERR_WRONG_DEVICE:
		return EXIT_REFUSED;
	case HSM_ERR_COUNTER_EXHAUSTED:
	case HSM_ERR_COUNTER_MISMATCH:
		return EXIT_COUNTER;
	case _HSM_ERR_MAX:
		break;
	}
	return EXIT_TOKEN;
}

/* One line for the operator: what, where, what to do; the CK_RV only as a hint. */
static int fail(struct hsm *h, int r, const char *what)
{
	unsigned long rv = hsm_last_rv(h);

	if (rv && (-r == HSM_ERR_DEVICE || -r == HSM_ERR_TOKEN_REMOVED || -r == HSM_ERR_MECHANISM))
		fprintf(stderr, "sfi-hsm: %s: %s (%s returned 0x%lx)\n", what,
			sfi_strerror(r), hsm_last_call(h), rv);
	else
		fprintf(stderr, "sfi-hsm: %s: %s\n", what, sfi_strerror(r));
	return exit_for(r);
}

static int input_error(const char *path, const char *why)
{
	fprintf(stderr, "sfi-hsm: %s: %s\n", path, why);
	return EXIT_INPUT;
}

/* Reads up to max bytes of fd into buf (the size in *ret_len) and closes fd. */
static int read_fd(int fd, uint8_t *buf, size_t max, size_t *ret_len)
{
	size_t n = 0;

	while (n < max) {
		ssize_t k = read(fd, buf + n, max - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = -errno;

			close(fd);
			return e;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	*ret_len = n;
	return 0;
}

/* Reads up to max bytes of a file into buf (the size in *ret_len). */
static int read_file(const char *path, uint8_t *buf, size_t max, size_t *ret_len)
{
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	return read_fd(fd, buf, max, ret_len);
}

/* Reads a raw key of exactly len bytes. A key file other users may read or write is
 * refused, as sfid refuses such a PIN file: the key would be as good as published, or
 * could be replaced. */
static int read_key_file(const char *path, uint8_t *key, size_t len)
{
	uint8_t buf[65];
	struct stat st;
	size_t n = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return input_error(path, "cannot read the key file");
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return input_error(path, "the key file is not a regular file");
	}
	if (st.st_mode & (S_IROTH | S_IWOTH)) {
		close(fd);
		fprintf(stderr, "sfi-hsm: %s: other users may read or write this key file (mode "
			"%04o); make it private (chmod o-rwx) and keep the key secret\n", path,
			(unsigned)(st.st_mode & 07777));
		return EXIT_INPUT;
	}
	r = read_fd(fd, buf, sizeof(buf), &n);
	if (r < 0)
		return input_error(path, "cannot read the key file");
	if (n != len) {
		OPENSSL_cleanse(buf, sizeof(buf));
		fprintf(stderr, "sfi-hsm: %s: the key file must hold exactly %zu raw bytes\n", path,
			len);
		return EXIT_INPUT;
	}
	memcpy(key, buf, len);
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

/* The image header gives the device id and the image id. */
static int read_image(const char *path, uint16_t *ret_device, uint8_t ret_id[OSFI_ID_LEN])
{
	uint8_t hdr[OSFI_HEADER_LEN];
	struct osfi_header h;
	size_t n = 0;

	if (read_file(path, hdr, sizeof(hdr), &n) < 0)
		return input_error(path, "cannot read the image");
	if (n != sizeof(hdr) || osfi_header_decode(hdr, n, &h) < 0)
		return input_error(path, "not an OSFI image (bad header)");
	*ret_device = h.device_id;
	osfi_image_id(hdr, ret_id);
	return 0;
}

static int read_ca_pem(const char *path, uint8_t ret_point[OSFI_PUBKEY_LEN])
{
	char group[32] = "";
	uint8_t point[OSFI_PUBKEY_LEN + 1];
	size_t glen = 0, plen = 0;
	EVP_PKEY *pkey;
	FILE *f;
	int ok;

	f = fopen(path, "re");
	if (!f)
		return input_error(path, "cannot read the CA public key");
	pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (!pkey)
		return input_error(path, "not a PEM public key");
	ok = EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
					    sizeof(group), &glen) &&
	     strcmp(group, "prime256v1") == 0 &&
	     EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point),
					     &plen) &&
	     plen == OSFI_PUBKEY_LEN && point[0] == 0x04;
	EVP_PKEY_free(pkey);
	if (!ok)
		return input_error(path, "the CA key must be an uncompressed P-256 public key");
	memcpy(ret_point, point, OSFI_PUBKEY_LEN);
	return 0;
}

/* Opens the output now, so that a bad path fails before a license is spent. Licenses are
 * never written over an existing file: it may be a spent license that is still needed. */
static int open_out(const char *path, bool exclusive, int *ret_fd)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY |
				    (exclusive ? O_EXCL : O_TRUNC), 0644);

	if (fd < 0 && errno == EEXIST)
		return input_error(path, "already exists; refusing to overwrite a license file");
	if (fd < 0)
		return input_error(path, "cannot create the output file");
	*ret_fd = fd;
	return 0;
}

static int write_out(int fd, const char *path, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t k = write(fd, p, len);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			close(fd);
			return input_error(path, "cannot write the output file");
		}
		p += k;
		len -= (size_t)k;
	}
	if (fsync(fd) < 0 || close(fd) < 0)
		return input_error(path, "cannot write the output file");
	return 0;
}

/* Asks for the PIN on the controlling terminal with echo off. */
static int prompt_pin(char *pin, size_t size, size_t *ret_len)
{
	struct termios old, quiet;
	size_t n = 0;
	int fd, r = 0;

	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -1;
	if (tcgetattr(fd, &old) < 0) {
		close(fd);
		return -1;
	}
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	quiet.c_lflag |= ICANON;
	(void)!write(fd, "Token user PIN: ", 16);
	tcsetattr(fd, TCSAFLUSH, &quiet);
	while (n < size - 1) {
		char c;
		ssize_t k = read(fd, &c, 1);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0 || c == '\n' || c == '\r')
			break;
		pin[n++] = c;
	}
	tcsetattr(fd, TCSAFLUSH, &old);
	(void)!write(fd, "\n", 1);
	close(fd);
	pin[n] = '\0';
	if (n == 0)
		r = -1;
	*ret_len = n;
	return r;
}

static int open_token(const struct args *a, struct hsm **ret_h)
{
	struct hsm *h = NULL;
	char pin[256];
	size_t len = 0;
	int r;

	if (!a->token && !a->serial) {
		fprintf(stderr, "sfi-hsm: name the token with --token LABEL or --serial S\n");
		return EXIT_USAGE;
	}
	r = hsm_open(a->module ? a->module : SFID_DEFAULT_PKCS11_MODULE, a->token, a->serial, &h);
	if (r < 0) {
		fprintf(stderr, "sfi-hsm: token %s on %s: %s\n", a->token ? a->token : a->serial,
			a->module ? a->module : SFID_DEFAULT_PKCS11_MODULE, sfi_strerror(r));
		return exit_for(r);
	}
	if (a->pin_file) {
		r = hsm_login_pin_file(h, a->pin_file);
	} else if (prompt_pin(pin, sizeof(pin), &len) == 0) {
		r = hsm_login_pin(h, pin, len);
	} else {
		explicit_bzero(pin, sizeof(pin));
		fprintf(stderr, "sfi-hsm: no PIN: give --pin-file FILE or run on a terminal\n");
		hsm_close(h);
		return EXIT_LOGIN;
	}
	if (r < 0) {
		r = fail(h, r, "login");
		hsm_close(h);
		return r;
	}
	*ret_h = h;
	return 0;
}

static int cmd_provision(const struct args *a)
{
	struct hsm_provision p = { 0 };
	struct hsm *h = NULL;
	uint16_t device;
	bool provisioned;
	int r;

	if (!a->image_key || !a->ca_pub || !a->has_max_count || (!a->image == !a->has_module_id)) {
		fprintf(stderr, "sfi-hsm provision: needs --image-key, --ca-pub, --max-count and "
				"one of --image or --module-id\n");
		return EXIT_USAGE;
	}
	if (a->has_module_id)
		osfi_module_firmware_id(a->module_id, p.firmware_id);
	else if ((r = read_image(a->image, &device, p.firmware_id)) != 0)
		return r;
	p.max_count = a->max_count;
	if ((r = read_ca_pem(a->ca_pub, p.ca_pub)) != 0)
		return r;
	if ((r = read_key_file(a->image_key, p.image_key, OSFI_KEY_LEN)) != 0)
		return r;
	if (a->global_key) {
		p.has_global_key = true;
		if ((r = read_key_file(a->global_key, p.global_key, sizeof(p.global_key))) != 0)
			goto out;
	}
	if ((r = open_token(a, &h)) != 0)
		goto out;
	r = hsm_is_provisioned(h, &provisioned);
	if (r == 0 && provisioned && a->wipe)
		r = hsm_wipe(h);
	if (r < 0) {
		r = fail(h, r, "reading the token's objects");
		goto out;
	}
	r = hsm_provision_token(h, &p);
	if (r < 0) {
		r = fail(h, r, "provisioning");
		goto out;
	}
	printf("token provisioned: %" PRIu32 " licenses%s\n", a->max_count,
	       a->global_key ? ", global key" : "");
	r = EXIT_OK;
out:
	OPENSSL_cleanse(&p, sizeof(p));
	hsm_close(h);
	return r;
}

static int cmd_info(const struct args *a)
{
	uint8_t fw[OSFI_ID_LEN], lk[OSFI_PUBKEY_LEN], ak[OSFI_PUBKEY_LEN], ca[OSFI_PUBKEY_LEN];
	char fwh[2 * OSFI_ID_LEN + 1], lkh[2 * OSFI_PUBKEY_LEN + 1], akh[sizeof(lkh)],
		cah[sizeof(lkh)], grh[80];
	struct hsm_token_info ti;
	struct hsm *h = NULL;
	uint32_t count, granted = 0;
	bool global, has_granted;
	int r;

	if ((r = open_token(a, &h)) != 0)
		return r;
	r = hsm_granted_read(h, &granted);
	has_granted = r == 0;
	if (r < 0 && r != -HSM_ERR_OBJECT_MISSING) {
		r = fail(h, r, "reading the token");
		hsm_close(h);
		return r;
	}
	if ((r = hsm_token_info(h, &ti)) < 0 || (r = hsm_firmware_id(h, fw)) < 0 ||
	    (r = hsm_counter_read(h, &count)) < 0 || (r = hsm_license_pubkey(h, lk)) < 0 ||
	    (r = hsm_audit_pubkey(h, ak)) < 0 || (r = hsm_ca_pubkey(h, ca)) < 0 ||
	    (r = hsm_has_global_key(h, &global)) < 0) {
		r = fail(h, r, "reading the token");
		hsm_close(h);
		return r;
	}
	hsm_close(h);
	sfi_hex_encode(fw, sizeof(fw), fwh);
	sfi_hex_encode(lk, sizeof(lk), lkh);
	sfi_hex_encode(ak, sizeof(ak), akh);
	sfi_hex_encode(ca, sizeof(ca), cah);

	if (has_granted)
		snprintf(grh, sizeof(grh), "%" PRIu32 " (spent: %" PRIu32 ")", granted,
			 granted - count);
	else
		snprintf(grh, sizeof(grh), "unknown (provisioned before the granted total)");
	if (a->json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "label", json_object_new_string(ti.label));
		json_object_object_add(o, "serial", json_object_new_string(ti.serial));
		json_object_object_add(o, "manufacturer", json_object_new_string(ti.manufacturer));
		json_object_object_add(o, "model", json_object_new_string(ti.model));
		json_object_object_add(o, "firmware_id", json_object_new_string(fwh));
		json_object_object_add(o, "licenses_left", json_object_new_int64(count));
		json_object_object_add(o, "licenses_granted",
				       has_granted ? json_object_new_int64(granted) : NULL);
		json_object_object_add(o, "global_key", json_object_new_boolean(global));
		json_object_object_add(o, "license_pubkey", json_object_new_string(lkh));
		json_object_object_add(o, "audit_pubkey", json_object_new_string(akh));
		json_object_object_add(o, "ca_pubkey", json_object_new_string(cah));
		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	} else {
		printf("token:          %s\n"
		       "serial:         %s\n"
		       "manufacturer:   %s\n"
		       "model:          %s\n"
		       "firmware id:    %s\n"
		       "licenses left:  %" PRIu32 "\n"
		       "granted:        %s\n"
		       "global key:     %s\n"
		       "license key:    %s\n"
		       "audit key:      %s\n"
		       "chip CA key:    %s\n",
		       ti.label, ti.serial, ti.manufacturer, ti.model, fwh, count, grh,
		       global ? "yes" : "no", lkh, akh, cah);
	}
	return EXIT_OK;
}

static int cmd_license(const struct args *a)
{
	struct hsm_license_request req = { 0 };
	struct hsm_license_result res;
	uint8_t cert[OSFI_CERT_LEN + 1];
	struct hsm *h = NULL;
	size_t n = 0;
	int fd = -1, r;

	if (!a->cert || !a->image || !a->out) {
		fprintf(stderr, "sfi-hsm license: needs --cert, --image and --out\n");
		return EXIT_USAGE;
	}
	if (read_file(a->cert, cert, sizeof(cert), &n) < 0)
		return input_error(a->cert, "cannot read the chip certificate");
	if ((r = read_image(a->image, &req.device_id, req.image_id)) != 0)
		return r;
	req.cert = cert;
	req.cert_len = n;
	req.target = a->has_module_id ? a->module_id : OSFI_TARGET_IMAGE;
	if ((r = open_token(a, &h)) != 0)
		return r;
	if ((r = open_out(a->out, true, &fd)) != 0)
		goto out;
	r = hsm_license_issue(h, &req, HSM_COUNTER_ANY, &res);
	if (r < 0) {
		close(fd);
		unlink(a->out);
		r = fail(h, r, a->cert);
		goto out;
	}
	if ((r = write_out(fd, a->out, res.license, sizeof(res.license))) != 0)
		goto out;
	printf("license written to %s (licenses left: %" PRIu32 ")\n", a->out, res.count_after);
	fprintf(stderr, "sfi-hsm: note: this license is spent outside sfid: it is in no line's "
			"audit trail; sfid reports the count as an unaccounted spend when it next "
			"reconciles token %s\n", a->serial ? a->serial : a->token ? a->token : "");
	r = EXIT_OK;
out:
	hsm_close(h);
	return r;
}

static int cmd_refill(const struct args *a)
{
	uint32_t before = 0, after = 0, granted = 0;
	struct hsm *h = NULL;
	int r;

	if (!a->has_add) {
		fprintf(stderr, "sfi-hsm refill: needs --add N (licenses to add, 1 or more)\n");
		return EXIT_USAGE;
	}
	if ((r = open_token(a, &h)) != 0)
		return r;
	r = hsm_refill(h, a->add, &before, &after, &granted);
	if (r < 0) {
		r = fail(h, r, "refilling the token");
		hsm_close(h);
		return r;
	}
	hsm_close(h);
	printf("licenses left: %" PRIu32 " -> %" PRIu32 " (granted in all: %" PRIu32 ")\n", before,
	       after, granted);
	printf("sfid records the refill in its audit trail when it next reconciles the token "
	       "(at start, or sfictl start after a halt)\n");
	return EXIT_OK;
}

static int cmd_rotate_audit_key(const struct args *a)
{
	struct hsm *h = NULL;
	char *pem = NULL;
	unsigned gen = 0;
	int fd = -1, r;

	if (!a->out) {
		fprintf(stderr, "sfi-hsm rotate-audit-key: needs --out NEW.pem (the new audit "
				"public key, for the OEM's key ring)\n");
		return EXIT_USAGE;
	}
	if ((r = open_token(a, &h)) != 0)
		return r;
	if ((r = open_out(a->out, true, &fd)) != 0)
		goto out;
	r = hsm_audit_rotate(h, &gen);
	if (r == 0)
		r = hsm_audit_pubkey_pem_gen(h, gen, &pem);
	if (r < 0) {
		close(fd);
		unlink(a->out);
		r = fail(h, r, "making a new audit key");
		goto out;
	}
	if ((r = write_out(fd, a->out, pem, strlen(pem))) != 0)
		goto out;
	printf("audit key generation %u written to %s; keep the previous audit key in the key "
	       "ring: sfid signs the change into its trail with it when it next starts\n", gen,
	       a->out);
	r = EXIT_OK;
out:
	free(pem);
	hsm_close(h);
	return r;
}

static int cmd_global_license(const struct args *a)
{
	uint8_t id[OSFI_ID_LEN], lic[OSFI_LICENSE_LEN];
	struct hsm *h = NULL;
	uint16_t device;
	int fd = -1, r;

	if (!a->image || !a->out) {
		fprintf(stderr, "sfi-hsm global-license: needs --image and --out\n");
		return EXIT_USAGE;
	}
	if ((r = read_image(a->image, &device, id)) != 0)
		return r;
	if ((r = open_token(a, &h)) != 0)
		return r;
	if ((r = open_out(a->out, true, &fd)) != 0)
		goto out;
	r = hsm_license_issue_global(h, device, a->has_module_id ? a->module_id : OSFI_TARGET_IMAGE,
				     id, lic);
	if (r < 0) {
		close(fd);
		unlink(a->out);
		r = fail(h, r, "global license");
		goto out;
	}
	if ((r = write_out(fd, a->out, lic, sizeof(lic))) != 0)
		goto out;
	printf("global license written to %s\n", a->out);
	r = EXIT_OK;
out:
	hsm_close(h);
	return r;
}

static int cmd_audit_pubkey(const struct args *a)
{
	struct hsm *h = NULL;
	char *pem = NULL;
	int fd, r;

	if (!a->out) {
		fprintf(stderr, "sfi-hsm audit-pubkey: needs --out\n");
		return EXIT_USAGE;
	}
	if ((r = open_token(a, &h)) != 0)
		return r;
	r = hsm_audit_pubkey_pem(h, &pem);
	if (r < 0) {
		r = fail(h, r, "audit public key");
		hsm_close(h);
		return r;
	}
	hsm_close(h);
	r = open_out(a->out, false, &fd);
	if (r == 0)
		r = write_out(fd, a->out, pem, strlen(pem));
	free(pem);
	return r;
}

static int parse_u32(const char *s, const char *opt, uint32_t *ret)
{
	if (sfi_parse_u32(s, ret) < 0) {
		fprintf(stderr, "sfi-hsm: %s: not a number in 0..4294967295: %s\n", opt, s);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	enum {
		OPT_MODULE = 256, OPT_TOKEN, OPT_SERIAL, OPT_PIN_FILE, OPT_IMAGE_KEY, OPT_IMAGE,
		OPT_MODULE_ID, OPT_MAX_COUNT, OPT_CA_PUB, OPT_GLOBAL_KEY, OPT_WIPE, OPT_JSON,
		OPT_CERT, OPT_OUT, OPT_VERSION, OPT_ADD,
	};
	static const struct option opts[] = {
		{ "module", required_argument, NULL, OPT_MODULE },
		{ "token", required_argument, NULL, OPT_TOKEN },
		{ "serial", required_argument, NULL, OPT_SERIAL },
		{ "pin-file", required_argument, NULL, OPT_PIN_FILE },
		{ "image-key", required_argument, NULL, OPT_IMAGE_KEY },
		{ "image", required_argument, NULL, OPT_IMAGE },
		{ "module-id", required_argument, NULL, OPT_MODULE_ID },
		{ "max-count", required_argument, NULL, OPT_MAX_COUNT },
		{ "ca-pub", required_argument, NULL, OPT_CA_PUB },
		{ "global-key", required_argument, NULL, OPT_GLOBAL_KEY },
		{ "wipe", no_argument, NULL, OPT_WIPE },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "cert", required_argument, NULL, OPT_CERT },
		{ "out", required_argument, NULL, OPT_OUT },
		{ "add", required_argument, NULL, OPT_ADD },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{}
	};
	struct args a = { 0 };
	const char *cmd;
	int c;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return EXIT_OK;
	}
	if (argc >= 2 && !strcmp(argv[1], "--version")) {
		printf("sfi-hsm %s\n", SFID_VERSION);
		return EXIT_OK;
	}
	if (argc < 2 || argv[1][0] == '-') {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_MODULE: a.module = optarg; break;
		case OPT_TOKEN: a.token = optarg; break;
		case OPT_SERIAL: a.serial = optarg; break;
		case OPT_PIN_FILE: a.pin_file = optarg; break;
		case OPT_IMAGE_KEY: a.image_key = optarg; break;
		case OPT_IMAGE: a.image = optarg; break;
		case OPT_CA_PUB: a.ca_pub = optarg; break;
		case OPT_GLOBAL_KEY: a.global_key = optarg; break;
		case OPT_CERT: a.cert = optarg; break;
		case OPT_OUT: a.out = optarg; break;
		case OPT_WIPE: a.wipe = true; break;
		case OPT_JSON: a.json = true; break;
		case OPT_MODULE_ID:
			if (parse_u32(optarg, "--module-id", &a.module_id) < 0 || a.module_id == 0) {
				fprintf(stderr, "sfi-hsm: --module-id must be a non-zero number\n");
				return EXIT_USAGE;
			}
			a.has_module_id = true;
			break;
		case OPT_MAX_COUNT:
			if (parse_u32(optarg, "--max-count", &a.max_count) < 0 ||
			    a.max_count == UINT32_MAX)
				return EXIT_USAGE;
			a.has_max_count = true;
			break;
		case OPT_ADD:
			if (parse_u32(optarg, "--add", &a.add) < 0 || a.add == 0) {
				fprintf(stderr, "sfi-hsm: --add must be a number of licenses, 1 or "
						"more\n");
				return EXIT_USAGE;
			}
			a.has_add = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sfi-hsm: unexpected argument: %s\n", argv[optind]);
		return EXIT_USAGE;
	}

	if (!strcmp(cmd, "provision"))
		return cmd_provision(&a);
	if (!strcmp(cmd, "info"))
		return cmd_info(&a);
	if (!strcmp(cmd, "license"))
		return cmd_license(&a);
	if (!strcmp(cmd, "refill"))
		return cmd_refill(&a);
	if (!strcmp(cmd, "rotate-audit-key"))
		return cmd_rotate_audit_key(&a);
	if (!strcmp(cmd, "global-license"))
		return cmd_global_license(&a);
	if (!strcmp(cmd, "audit-pubkey"))
		return cmd_audit_pubkey(&a);
	fprintf(stderr, "sfi-hsm: unknown command: %s (see --help)\n", cmd);
	return EXIT_USAGE;
}

/* The chip side of OSFI v1 (docs/protocol.md): what the emulated chip's ROM does during a
 * secure firmware install. An independent implementation: its own parsing and its own
 * libcrypto calls, sharing only the wire constants with the host. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "an3155-wire.h"
#include "emu-chip.h"
#include "osfi-wire.h"

#define EMU_OSFI_DEFAULT_RAM (64u * 1024)
/* Module licenses one session can hold; an image with more modules cannot be installed. */
#define EMU_OSFI_MAX_MODULES 64
#define EMU_OSFI_KEY_FILE "chip.key"
#define EMU_OSFI_CERT_FILE "chip.cert"
/* The session record (state, last status, progress, installed image id): it survives a
 * reset and a power cycle, as the chip's non-volatile record would. */
#define EMU_OSFI_SESSION_FILE "osfi.session"

struct osfi_module_key {
	uint32_t id;
	uint8_t key[OSFI_KEY_LEN];
};

struct osfi_range {
	uint32_t addr;
	uint32_t len;
};

/* A 'K' area for OTP or the OBK area: those writes cannot be undone by a sector erase, so
 * they are checked when the area arrives and committed only at FINALIZE. */
struct osfi_deferred {
	uint32_t addr;
	uint32_t len;
	uint8_t *data;
};

struct emu_osfi {
	struct emu_chip *chip;
	EVP_PKEY *key;
	uint8_t cert[OSFI_CERT_LEN];
	bool have_cert;
	uint8_t global_key[32];
	bool have_global;
	uint32_t ram_buffer;
	bool debug;

	/* Session. */
	uint8_t state;		/* OSFI_SESSION_* */
	uint16_t last_status;
	/* Image id of the last finalized session (all zero when none has been). */
	uint8_t installed_id[OSFI_ID_LEN];
	bool starting;		/* PUT_LICENSE for the image under way: its outcome is recorded */
	uint8_t image_key[OSFI_KEY_LEN];
	uint8_t license_id[OSFI_ID_LEN];
	struct osfi_module_key modules[EMU_OSFI_MAX_MODULES];
	size_t n_modules;

	uint8_t header[OSFI_HEADER_LEN];
	uint16_t area_count;
	uint32_t total_len;
	uint32_t header_version;

	/* Stream: next expected file offset, descriptor being assembled, area being buffered. */
	uint64_t pos;
	uint16_t areas_done;
	uint8_t desc[OSFI_DESC_LEN];
	size_t desc_fill;
	bool in_payload;
	uint32_t area_size, area_fill;
	uint8_t *area_buf;
	size_t area_cap;
	bool have_config;

	/* The last PUT_DATA chunk, so that a re-send after a lost answer is recognised. */
	bool have_last;
	uint32_t last_off;
	size_t last_len;
	uint8_t last_data[OSFI_DATA_CHUNK];

	struct osfi_range *programmed;
	size_t n_programmed, cap_programmed;
	struct osfi_deferred *deferred;
	size_t n_deferred, cap_deferred;
	uint8_t *config;	/* validated 'C' records, applied at FINALIZE */
	uint32_t config_len;
};

static void osfi_debug(const struct emu_osfi *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void osfi_debug(const struct emu_osfi *o, const char *fmt, ...)
{
	va_list ap;

	if (!o->debug)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "h5emu: chip %u: osfi: ", emu_chip_index(o->chip));
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static bool all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;

	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

/* --- Crypto --- */

static EVP_PKEY *p256_from_point(const uint8_t point[OSFI_PUBKEY_LEN])
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL, *check = NULL;
	EVP_PKEY *pkey = NULL;

	if (point[0] != 0x04)
		return NULL;
	bld = OSSL_PARAM_BLD_new();
	if (!bld ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point,
					      OSFI_PUBKEY_LEN))
		goto out;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto out;
	/* fromdata decodes the point; the explicit check also refuses the point at infinity. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!check || EVP_PKEY_public_check(check) <= 0) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
out:
	EVP_PKEY_CTX_free(check);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

static int p256_public_point(EVP_PKEY *pkey, uint8_t out[OSFI_PUBKEY_LEN])
{
	size_t n = 0;

	if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out,
					    OSFI_PUBKEY_LEN, &n) <= 0 ||
	    n != OSFI_PUBKEY_LEN || out[0] != 0x04)
		return -EINVAL;
	return 0;
}

static bool pkey_is_p256(EVP_PKEY *pkey)
{
	char group[32];
	size_t n = 0;

	if (!EVP_PKEY_is_a(pkey, "EC"))
		return false;
	if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
					   sizeof(group), &n) <= 0)
		return false;
	return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

/* ECDH x-coordinate of our key and the peer's point. */
static int osfi_ecdh(EVP_PKEY *priv, EVP_PKEY *peer, uint8_t z[32])
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(priv, NULL);
	size_t n = 32;
	int r = -EIO;

	if (ctx && EVP_PKEY_derive_init(ctx) > 0 && EVP_PKEY_derive_set_peer(ctx, peer) > 0 &&
	    EVP_PKEY_derive(ctx, z, &n) > 0 && n == 32)
		r = 0;
	EVP_PKEY_CTX_free(ctx);
	return r;
}

static int aes256_ecb_2blocks(const uint8_t key[32], const uint8_t in[32], uint8_t out[32])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n1 = 0, n2 = 0, r = -EIO;

	if (ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), NULL, key, NULL) > 0 &&
	    EVP_CIPHER_CTX_set_padding(ctx, 0) > 0 && EVP_EncryptUpdate(ctx, out, &n1, in, 32) > 0 &&
	    EVP_EncryptFinal_ex(ctx, out + n1, &n2) > 0 && n1 + n2 == 32)
		r = 0;
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

/* RFC 3394 unwrap of a 16-byte key; fails when the integrity check does. */
static int aes256_unwrap(const uint8_t kek[32], const uint8_t wrapped[OSFI_WRAPPED_LEN],
			 uint8_t key[OSFI_KEY_LEN])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t out[OSFI_WRAPPED_LEN + 16];
	int n1 = 0, n2 = 0, r = -EBADMSG;

	if (!ctx)
		return -ENOMEM;
	EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_wrap(), NULL, kek, NULL) > 0 &&
	    EVP_DecryptUpdate(ctx, out, &n1, wrapped, OSFI_WRAPPED_LEN) > 0 &&
	    EVP_DecryptFinal_ex(ctx, out + n1, &n2) > 0 && n1 + n2 == OSFI_KEY_LEN) {
		memcpy(key, out, OSFI_KEY_LEN);
		r = 0;
	}
	OPENSSL_cleanse(out, sizeof(out));
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

/* IV(i) = nonce[0..7] || LE32(LE32(nonce[8..11]) + i). */
static void osfi_iv(const uint8_t nonce[OSFI_NONCE_LEN], uint32_t i, uint8_t iv[OSFI_NONCE_LEN])
{
	memcpy(iv, nonce, 8);
	wr32(iv + 8, rd32(nonce + 8) + i);
}

/* AES-128-GCM decrypt in place (buf may be NULL when len is 0). Returns 0 or -EBADMSG. */
static int gcm_open(const uint8_t key[OSFI_KEY_LEN], const uint8_t iv[OSFI_NONCE_LEN],
		    const uint8_t *aad1, size_t n_aad1, const uint8_t *aad2, size_t n_aad2,
		    uint8_t *buf, size_t len, const uint8_t tag[OSFI_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t tagcopy[OSFI_TAG_LEN], fin[16];
	int n = 0, r = -EBADMSG;

	if (!ctx)
		return -ENOMEM;
	memcpy(tagcopy, tag, sizeof(tagcopy));
	if (EVP_DecryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, NULL, NULL) <= 0 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, OSFI_NONCE_LEN, NULL) <= 0 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, key, iv) <= 0)
		goto out;
	if (n_aad1 && EVP_DecryptUpdate(ctx, NULL, &n, aad1, (int)n_aad1) <= 0)
		goto out;
	if (n_aad2 && EVP_DecryptUpdate(ctx, NULL, &n, aad2, (int)n_aad2) <= 0)
		goto out;
	if (len && EVP_DecryptUpdate(ctx, buf, &n, buf, (int)len) <= 0)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, OSFI_TAG_LEN, tagcopy) <= 0)
		goto out;
	if (EVP_DecryptFinal_ex(ctx, fin, &n) > 0)
		r = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

/* --- Identity --- */

static int path_join(char *buf, size_t len, const char *dir, const char *name)
{
	if (snprintf(buf, len, "%s/%s", dir, name) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

/* Writes a file through a temporary name and rename, mode 0600; `sync`: fsync before the
 * rename (the chip's key and certificate, made once; not the session record, written at
 * every change of state from the USB ioctl thread: see write_file_atomic in emu-chip.c). */
static int write_file_private(const char *dir, const char *name, const void *data, size_t len,
			      bool sync)
{
	char tmp[4096], path[4096];
	const uint8_t *p = data;
	int fd, r;

	r = path_join(path, sizeof(path), dir, name);
	if (r < 0)
		return r;
	if (snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			close(fd);
			unlink(tmp);
			return r;
		}
		p += n;
		len -= (size_t)n;
	}
	r = sync && fsync(fd) < 0 ? -errno : 0;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	if (rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		return r;
	}
	return 0;
}

/* Reads a whole small file. Returns 0 and fills buf/ret_len, -ENOENT, -EFBIG or -errno. */
static int read_file_small(const char *path, uint8_t *buf, size_t max, size_t *ret_len)
{
	size_t got = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n;

		if (got == max) {
			uint8_t extra;

			n = read(fd, &extra, 1);
			if (n > 0)
				r = -EFBIG;
			else if (n < 0)
				r = -errno;
			break;
		}
		n = read(fd, buf + got, max - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (r == 0)
		*ret_len = got;
	return r;
}

static EVP_PKEY *read_pem_private(const char *path)
{
	EVP_PKEY *pkey = NULL;
	FILE *f;

	f = fopen(path, "re");
	if (!f)
		return NULL;
	pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return pkey;
}

static int chip_key_load_or_create(struct emu_osfi *o, const char *dir)
{
	char path[4096];
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	char *pem;
	long n;
	int r;

	if (dir) {
		r = path_join(path, sizeof(path), dir, EMU_OSFI_KEY_FILE);
		if (r < 0)
			return r;
		if (access(path, F_OK) == 0) {
			pkey = read_pem_private(path);
			if (!pkey || !pkey_is_p256(pkey)) {
				EVP_PKEY_free(pkey);
				return -EINVAL;
			}
			o->key = pkey;
			return 0;
		}
	}

	pkey = EVP_EC_gen("P-256");
	if (!pkey)
		return -ENOMEM;
	if (!dir) {
		o->key = pkey;
		return 0;
	}
	bio = BIO_new(BIO_s_secmem());
	if (!bio || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) <= 0) {
		BIO_free(bio);
		EVP_PKEY_free(pkey);
		return -ENOMEM;
	}
	n = BIO_get_mem_data(bio, &pem);
	r = write_file_private(dir, EMU_OSFI_KEY_FILE, pem, (size_t)n, true);
	BIO_free(bio);	/* secmem BIO: the PEM copy is wiped */
	if (r < 0) {
		EVP_PKEY_free(pkey);
		return r;
	}
	o->key = pkey;
	return 0;
}

/* ECDSA-P256-SHA256 over msg, raw r||s. */
static int ecdsa_sign_raw(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t sig[64])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[80];
	const uint8_t *p = der;
	size_t n = sizeof(der);
	ECDSA_SIG *s = NULL;
	int r = -EIO;

	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) <= 0 ||
	    EVP_DigestSign(md, der, &n, msg, len) <= 0)
		goto out;
	s = d2i_ECDSA_SIG(NULL, &p, (long)n);
	if (!s)
		goto out;
	if (BN_bn2binpad(ECDSA_SIG_get0_r(s), sig, 32) == 32 &&
	    BN_bn2binpad(ECDSA_SIG_get0_s(s), sig + 32, 32) == 32)
		r = 0;
out:
	ECDSA_SIG_free(s);
	EVP_MD_CTX_free(md);
	return r;
}

static bool ecdsa_verify_raw(EVP_PKEY *key, const uint8_t *msg, size_t len, const uint8_t sig[64])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ECDSA_SIG *s = ECDSA_SIG_new();
	BIGNUM *br = BN_bin2bn(sig, 32, NULL), *bs = BN_bin2bn(sig + 32, 32, NULL);
	uint8_t *der = NULL;
	int n;
	bool ok = false;

	if (!md || !s || !br || !bs || !ECDSA_SIG_set0(s, br, bs))
		goto out;
	br = bs = NULL;
	n = i2d_ECDSA_SIG(s, &der);
	if (n <= 0)
		goto out;
	ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) > 0 &&
	     EVP_DigestVerify(md, der, (size_t)n, msg, len) == 1;
out:
	OPENSSL_free(der);
	BN_free(br);
	BN_free(bs);
	ECDSA_SIG_free(s);
	EVP_MD_CTX_free(md);
	return ok;
}

static void cert_fill_body(struct emu_osfi *o, const uint8_t pub[OSFI_PUBKEY_LEN],
			   uint8_t cert[OSFI_CERT_LEN])
{
	memset(cert, 0, OSFI_CERT_LEN);
	memcpy(cert, OSFI_CERT_MAGIC, 4);
	cert[OSFI_CERT_OFF_VERSION] = OSFI_VERSION;
	wr16(cert + OSFI_CERT_OFF_DEVICE, emu_chip_device_id(o->chip));
	memcpy(cert + OSFI_CERT_OFF_UID, emu_chip_uid(o->chip), OSFI_UID_LEN);
	memcpy(cert + OSFI_CERT_OFF_PUBKEY, pub, OSFI_PUBKEY_LEN);
}

/* Uses the stored certificate when it still matches this chip and this CA, else issues a
 * new one (the CA may have been replaced between runs). */
static int chip_cert_load_or_create(struct emu_osfi *o, const char *dir, const char *ca_path)
{
	uint8_t pub[OSFI_PUBKEY_LEN], want[OSFI_CERT_LEN], stored[OSFI_CERT_LEN];
	char path[4096];
	EVP_PKEY *ca;
	size_t n = 0;
	int r;

	if (access(ca_path, R_OK) < 0)
		return -errno;
	ca = read_pem_private(ca_path);
	if (!ca)
		return -EINVAL;
	if (!pkey_is_p256(ca)) {
		EVP_PKEY_free(ca);
		return -EINVAL;
	}
	r = p256_public_point(o->key, pub);
	if (r < 0)
		goto out;
	cert_fill_body(o, pub, want);

	if (dir) {
		r = path_join(path, sizeof(path), dir, EMU_OSFI_CERT_FILE);
		if (r < 0)
			goto out;
		if (read_file_small(path, stored, sizeof(stored), &n) == 0 && n == OSFI_CERT_LEN &&
		    memcmp(stored, want, OSFI_CERT_SIGNED_LEN) == 0 &&
		    ecdsa_verify_raw(ca, stored, OSFI_CERT_SIGNED_LEN, stored + OSFI_CERT_OFF_SIG)) {
			memcpy(o->cert, stored, OSFI_CERT_LEN);
			o->have_cert = true;
			r = 0;
			goto out;
		}
	}
	r = ecdsa_sign_raw(ca, want, OSFI_CERT_SIGNED_LEN, want + OSFI_CERT_OFF_SIG);
	if (r < 0)
		goto out;
	if (dir) {
		r = write_file_private(dir, EMU_OSFI_CERT_FILE, want, OSFI_CERT_LEN, true);
		if (r < 0)
			goto out;
	}
	memcpy(o->cert, want, OSFI_CERT_LEN);
	o->have_cert = true;
out:
	EVP_PKEY_free(ca);
	return r;
}

static int global_key_load(struct emu_osfi *o, const char *path)
{
	uint8_t buf[33];
	size_t n = 0;
	int r;

	r = read_file_small(path, buf, sizeof(buf), &n);
	if (r == -EFBIG || (r == 0 && n != sizeof(o->global_key)))
		r = -EINVAL;
	if (r == 0) {
		memcpy(o->global_key, buf, sizeof(o->global_key));
		o->have_global = true;
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	return r;
}

/* --- Session bookkeeping --- */

static bool session_active(const struct emu_osfi *o)
{
	return o->state == OSFI_SESSION_LICENSED || o->state == OSFI_SESSION_STREAMING ||
	       o->state == OSFI_SESSION_COMPLETE;
}

/* --- The session record --- */

/* Writes the record to the chip's state dir (nothing without one). Called at every change of
 * state or last status, so that what GET_INFO reports survives a power cycle. */
static void record_save(struct emu_osfi *o)
{
	const char *dir = emu_chip_state_dir(o->chip);
	char buf[256], hex[2 * OSFI_ID_LEN + 1];
	int n, r;

	if (!dir)
		return;
	for (size_t i = 0; i < OSFI_ID_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", o->installed_id[i]);
	n = snprintf(buf, sizeof(buf),
		     "state=%u\nstatus=0x%04x\nareas=%u\nstream=%u\ninstalled=%s\n",
		     (unsigned)o->state, (unsigned)o->last_status, (unsigned)o->areas_done,
		     (unsigned)(o->pos - OSFI_HEADER_LEN), hex);
	r = write_file_private(dir, EMU_OSFI_SESSION_FILE, buf, (size_t)n, false);
	if (r < 0)
		fprintf(stderr, "h5emu: chip %u: saving the OSFI session record failed: %s\n",
			emu_chip_index(o->chip), strerror(-r));
}

static int parse_hex(const char *s, uint8_t *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		char pair[3] = { s[2 * i], s[2 * i + 1], 0 };
		char *end;

		v = (unsigned)strtoul(pair, &end, 16);
		if (*end || pair[0] == '+' || pair[0] == '-' || pair[0] == ' ')
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static int parse_u32(const char *s, uint32_t max, uint32_t *ret)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v > max)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

/* Loads the record kept by an earlier run. A session that was in progress when the chip lost
 * power is failed, with the status it had (OK when nothing had failed). Returns 0, or
 * -EINVAL for a damaged record. */
static int record_load(struct emu_osfi *o)
{
	const char *dir = emu_chip_state_dir(o->chip);
	char path[4096], line[256];
	uint32_t v, seen = 0;
	FILE *f;
	int r = 0;

	if (!dir)
		return 0;
	r = path_join(path, sizeof(path), dir, EMU_OSFI_SESSION_FILE);
	if (r < 0)
		return r;
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (r == 0 && fgets(line, sizeof(line), f)) {
		char *eq = strchr(line, '=');

		line[strcspn(line, "\n")] = '\0';
		if (!eq) {
			r = -EINVAL;
			break;
		}
		*eq++ = '\0';
		if (strcmp(line, "state") == 0 && parse_u32(eq, OSFI_SESSION_FAILED, &v) == 0) {
			o->state = (uint8_t)v;
			seen |= 1;
		} else if (strcmp(line, "status") == 0 && parse_u32(eq, 0xffff, &v) == 0) {
			o->last_status = (uint16_t)v;
			seen |= 2;
		} else if (strcmp(line, "areas") == 0 && parse_u32(eq, OSFI_MAX_AREAS, &v) == 0) {
			o->areas_done = (uint16_t)v;
			seen |= 4;
		} else if (strcmp(line, "stream") == 0 &&
			   parse_u32(eq, UINT32_MAX - OSFI_HEADER_LEN, &v) == 0) {
			o->pos = (uint64_t)v + OSFI_HEADER_LEN;
			seen |= 8;
		} else if (strcmp(line, "installed") == 0 &&
			   parse_hex(eq, o->installed_id, OSFI_ID_LEN) == 0) {
			seen |= 16;
		} else {
			r = -EINVAL;
		}
	}
	fclose(f);
	if (r == 0 && seen != 31)
		r = -EINVAL;
	if (r < 0) {
		fprintf(stderr, "h5emu: %s: damaged OSFI session record\n", path);
		return r;
	}
	if (session_active(o)) {
		o->state = OSFI_SESSION_FAILED;
		record_save(o);
	}
	return 0;
}

static void session_wipe_keys(struct emu_osfi *o)
{
	OPENSSL_cleanse(o->image_key, sizeof(o->image_key));
	OPENSSL_cleanse(o->modules, sizeof(o->modules));
	o->n_modules = 0;
	if (o->area_buf)
		OPENSSL_cleanse(o->area_buf, o->area_cap);
	OPENSSL_cleanse(o->last_data, sizeof(o->last_data));
	o->have_last = false;
}

static void session_drop_pending(struct emu_osfi *o)
{
	for (size_t i = 0; i < o->n_deferred; i++) {
		OPENSSL_cleanse(o->deferred[i].data, o->deferred[i].len);
		free(o->deferred[i].data);
	}
	o->n_deferred = 0;
	if (o->config)
		OPENSSL_cleanse(o->config, o->config_len);
	free(o->config);
	o->config = NULL;
	o->config_len = 0;
}

/* Undoes what this session wrote to flash; the chip is installable again afterwards. */
static void session_erase_programmed(struct emu_osfi *o)
{
	for (size_t i = 0; i < o->n_programmed; i++) {
		int r = emu_chip_erase_range(o->chip, o->programmed[i].addr, o->programmed[i].len);

		if (r < 0)
			osfi_debug(o, "erasing 0x%08x+%u failed: %s", o->programmed[i].addr,
				   o->programmed[i].len, strerror(-r));
	}
	o->n_programmed = 0;
}

/* Ends whatever session is in progress without judging it: erase, forget, wipe. */
static void session_discard(struct emu_osfi *o)
{
	session_erase_programmed(o);
	session_drop_pending(o);
	session_wipe_keys(o);
}

static void session_start(struct emu_osfi *o)
{
	session_discard(o);
	o->state = OSFI_SESSION_LICENSED;
	o->last_status = OSFI_ST_OK;
	memset(o->header, 0, sizeof(o->header));
	o->area_count = 0;
	o->total_len = 0;
	o->header_version = 0;
	o->pos = OSFI_HEADER_LEN;
	o->areas_done = 0;
	o->desc_fill = 0;
	o->in_payload = false;
	o->area_size = o->area_fill = 0;
	o->have_config = false;
	record_save(o);
}

/* A refused command. A session in progress (or one a PUT_LICENSE for the image is starting)
 * becomes failed and keeps this status; otherwise (idle, failed, finalized) the record stays
 * as it is, so that a host retrying after a lost answer still reads the original outcome. */
static uint16_t session_fail(struct emu_osfi *o, uint16_t status)
{
	if (!session_active(o) && !o->starting)
		return status;
	osfi_debug(o, "session failed with status 0x%04x", status);
	session_discard(o);
	o->state = OSFI_SESSION_FAILED;
	o->last_status = status;
	record_save(o);
	return status;
}

static int track_programmed(struct emu_osfi *o, uint32_t addr, uint32_t len)
{
	if (o->n_programmed == o->cap_programmed) {
		size_t cap = o->cap_programmed ? 2 * o->cap_programmed : 16;
		struct osfi_range *v = realloc(o->programmed, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		o->programmed = v;
		o->cap_programmed = cap;
	}
	o->programmed[o->n_programmed++] = (struct osfi_range){ addr, len };
	return 0;
}

static const uint8_t *module_key(const struct emu_osfi *o, uint32_t id)
{
	for (size_t i = 0; i < o->n_modules; i++)
		if (o->modules[i].id == id)
			return o->modules[i].key;
	return NULL;
}

/* --- PUT_LICENSE --- */

static void module_firmware_id(uint32_t module, uint8_t out[OSFI_ID_LEN])
{
	uint8_t msg[sizeof(OSFI_MODULE_ID_LABEL) - 1 + 4];

	memcpy(msg, OSFI_MODULE_ID_LABEL, sizeof(OSFI_MODULE_ID_LABEL) - 1);
	wr32(msg + sizeof(OSFI_MODULE_ID_LABEL) - 1, module);
	SHA256(msg, sizeof(msg), out);
}

/* KEK = AES-256-ECB_Z(SHA-256(label || kind || device || target || UID || id || nonce)). */
static int license_kek(const uint8_t *lic, const uint8_t z[32], uint8_t kek[32])
{
	uint8_t msg[sizeof(OSFI_KEK_LABEL) - 1 + 1 + 2 + 4 + OSFI_UID_LEN + OSFI_ID_LEN +
		    OSFI_LICENSE_NONCE_LEN];
	uint8_t h[32];
	size_t off = 0;
	int r;

	memcpy(msg, OSFI_KEK_LABEL, sizeof(OSFI_KEK_LABEL) - 1);
	off += sizeof(OSFI_KEK_LABEL) - 1;
	msg[off++] = lic[OSFI_LIC_OFF_KIND];
	memcpy(msg + off, lic + OSFI_LIC_OFF_DEVICE, 2);	/* already LE16 */
	off += 2;
	memcpy(msg + off, lic + OSFI_LIC_OFF_TARGET, 4);	/* already LE32 */
	off += 4;
	memcpy(msg + off, lic + OSFI_LIC_OFF_UID, OSFI_UID_LEN);
	off += OSFI_UID_LEN;
	memcpy(msg + off, lic + OSFI_LIC_OFF_ID, OSFI_ID_LEN);
	off += OSFI_ID_LEN;
	memcpy(msg + off, lic + OSFI_LIC_OFF_NONCE, OSFI_LICENSE_NONCE_LEN);
	off += OSFI_LICENSE_NONCE_LEN;
	SHA256(msg, off, h);
	r = aes256_ecb_2blocks(z, h, kek);
	OPENSSL_cleanse(h, sizeof(h));
	return r;
}

static uint16_t license_unwrap(struct emu_osfi *o, const uint8_t *lic, uint8_t key[OSFI_KEY_LEN])
{
	uint8_t z[32], kek[32];
	uint16_t st = OSFI_ST_LICENSE_INVALID;

	if (lic[OSFI_LIC_OFF_KIND] == OSFI_LICENSE_KIND_GLOBAL) {
		if (!o->have_global)
			return OSFI_ST_LICENSE_INVALID;
		memcpy(z, o->global_key, sizeof(z));
	} else {
		EVP_PKEY *peer = p256_from_point(lic + OSFI_LIC_OFF_HSMPUB);

		if (!peer)
			return OSFI_ST_LICENSE_MALFORMED;
		if (osfi_ecdh(o->key, peer, z) < 0) {
			EVP_PKEY_free(peer);
			return OSFI_ST_INTERNAL;
		}
		EVP_PKEY_free(peer);
	}
	if (license_kek(lic, z, kek) < 0)
		st = OSFI_ST_INTERNAL;
	else if (aes256_unwrap(kek, lic + OSFI_LIC_OFF_WRAPPED, key) == 0)
		st = OSFI_ST_OK;
	OPENSSL_cleanse(z, sizeof(z));
	OPENSSL_cleanse(kek, sizeof(kek));
	return st;
}

static uint16_t put_license(struct emu_osfi *o, const uint8_t *p1, size_t n1,
			    const uint8_t *lic, size_t n2)
{
	uint8_t key[OSFI_KEY_LEN], modid[OSFI_ID_LEN];
	uint32_t target;
	uint8_t kind;
	uint16_t st;

	if (n1 != 4 || n2 != OSFI_LICENSE_LEN)
		return session_fail(o, OSFI_ST_BAD_LENGTH);
	target = rd32(p1);
	if (target != OSFI_TARGET_IMAGE && !session_active(o))
		return session_fail(o, OSFI_ST_SEQUENCE);

	kind = lic[OSFI_LIC_OFF_KIND];
	if (memcmp(lic, OSFI_LICENSE_MAGIC, 4) != 0 || lic[OSFI_LIC_OFF_VERSION] != OSFI_VERSION ||
	    (kind != OSFI_LICENSE_KIND_CHIP && kind != OSFI_LICENSE_KIND_GLOBAL) ||
	    !all_zero(lic + OSFI_LIC_OFF_RESERVED, OSFI_LICENSE_LEN - OSFI_LIC_OFF_RESERVED) ||
	    rd32(lic + OSFI_LIC_OFF_TARGET) != target)
		return session_fail(o, OSFI_ST_LICENSE_MALFORMED);
	if (kind == OSFI_LICENSE_KIND_GLOBAL &&
	    (!all_zero(lic + OSFI_LIC_OFF_UID, OSFI_UID_LEN) ||
	     !all_zero(lic + OSFI_LIC_OFF_HSMPUB, OSFI_PUBKEY_LEN) ||
	     rd32(lic + OSFI_LIC_OFF_COUNTER) != 0))
		return session_fail(o, OSFI_ST_LICENSE_MALFORMED);
	/* Everything the record alone can show is checked before what it says. */
	if (kind == OSFI_LICENSE_KIND_CHIP) {
		EVP_PKEY *peer = p256_from_point(lic + OSFI_LIC_OFF_HSMPUB);

		if (!peer)
			return session_fail(o, OSFI_ST_LICENSE_MALFORMED);
		EVP_PKEY_free(peer);
	}
	if (rd16(lic + OSFI_LIC_OFF_DEVICE) != emu_chip_device_id(o->chip))
		return session_fail(o, OSFI_ST_LICENSE_WRONG_DEVICE);
	if (kind == OSFI_LICENSE_KIND_CHIP &&
	    memcmp(lic + OSFI_LIC_OFF_UID, emu_chip_uid(o->chip), OSFI_UID_LEN) != 0)
		return session_fail(o, OSFI_ST_LICENSE_WRONG_CHIP);
	if (target != OSFI_TARGET_IMAGE) {
		/* A module license names the module's firmware id, derived from its id. */
		module_firmware_id(target, modid);
		if (memcmp(modid, lic + OSFI_LIC_OFF_ID, OSFI_ID_LEN) != 0)
			return session_fail(o, OSFI_ST_LICENSE_INVALID);
	}

	st = license_unwrap(o, lic, key);
	if (st != OSFI_ST_OK) {
		OPENSSL_cleanse(key, sizeof(key));
		return session_fail(o, st);
	}

	if (target == OSFI_TARGET_IMAGE) {
		session_start(o);
		memcpy(o->image_key, key, OSFI_KEY_LEN);
		memcpy(o->license_id, lic + OSFI_LIC_OFF_ID, OSFI_ID_LEN);
		osfi_debug(o, "image license accepted (%s)",
			   kind == OSFI_LICENSE_KIND_CHIP ? "chip" : "global");
	} else {
		size_t i;

		for (i = 0; i < o->n_modules; i++)
			if (o->modules[i].id == target)
				break;
		if (i == o->n_modules) {
			if (o->n_modules == EMU_OSFI_MAX_MODULES) {
				OPENSSL_cleanse(key, sizeof(key));
				return session_fail(o, OSFI_ST_INTERNAL);
			}
			o->n_modules++;
		}
		o->modules[i].id = target;
		memcpy(o->modules[i].key, key, OSFI_KEY_LEN);
		osfi_debug(o, "module %u license accepted", target);
	}
	OPENSSL_cleanse(key, sizeof(key));
	return OSFI_ST_OK;
}

static uint16_t cmd_put_license(struct emu_osfi *o, const uint8_t *p1, size_t n1,
				const uint8_t *lic, size_t n2)
{
	uint16_t st;

	/* A chip that left Open takes no license and changes nothing: the record of the session
	 * that closed it stays readable. */
	if (emu_chip_product_state(o->chip) != STM32H5_PS_OPEN)
		return OSFI_ST_BAD_STATE;
	/* A license for the image starts over: whatever the outcome of the checks, it replaces
	 * the record (the installed image id excepted). */
	if (n1 == 4 && rd32(p1) == OSFI_TARGET_IMAGE) {
		session_discard(o);
		o->state = OSFI_SESSION_IDLE;
		o->pos = OSFI_HEADER_LEN;
		o->areas_done = 0;
		o->starting = true;
	}
	st = put_license(o, p1, n1, lic, n2);
	o->starting = false;
	return st;
}

/* --- PUT_HEADER --- */

static uint16_t cmd_put_header(struct emu_osfi *o, const uint8_t *h, size_t n)
{
	uint8_t id[OSFI_ID_LEN], iv[OSFI_NONCE_LEN];
	uint16_t areas;
	uint32_t total;

	if (n != OSFI_HEADER_LEN)
		return session_fail(o, OSFI_ST_BAD_LENGTH);
	if (o->state != OSFI_SESSION_LICENSED)
		return session_fail(o, session_active(o) ? OSFI_ST_SEQUENCE : OSFI_ST_NO_LICENSE);

	areas = rd16(h + OSFI_HDR_OFF_AREAS);
	total = rd32(h + OSFI_HDR_OFF_TOTAL);
	if (memcmp(h, OSFI_IMAGE_MAGIC, 4) != 0 || rd16(h + OSFI_HDR_OFF_FORMAT) != OSFI_VERSION ||
	    rd16(h + OSFI_HDR_OFF_HDRLEN) != OSFI_HEADER_LEN || areas < 1 ||
	    areas > OSFI_MAX_AREAS ||
	    (uint64_t)total < OSFI_HEADER_LEN + (uint64_t)areas * OSFI_DESC_LEN ||
	    rd32(h + OSFI_HDR_OFF_FLAGS) != 0 ||
	    !all_zero(h + OSFI_HDR_OFF_RESERVED, OSFI_HDR_OFF_TAG - OSFI_HDR_OFF_RESERVED))
		return session_fail(o, OSFI_ST_HEADER_MALFORMED);
	SHA256(h, OSFI_HEADER_LEN, id);
	if (memcmp(id, o->license_id, OSFI_ID_LEN) != 0)
		return session_fail(o, OSFI_ST_IMAGE_MISMATCH);
	if (rd16(h + OSFI_HDR_OFF_DEVICE) != emu_chip_device_id(o->chip))
		return session_fail(o, OSFI_ST_IMAGE_WRONG_DEVICE);
	osfi_iv(h + OSFI_HDR_OFF_NONCE, 0, iv);
	if (gcm_open(o->image_key, iv, h, OSFI_HDR_OFF_TAG, NULL, 0, NULL, 0,
		     h + OSFI_HDR_OFF_TAG) != 0)
		return session_fail(o, OSFI_ST_HEADER_AUTH);
	if (rd32(h + OSFI_HDR_OFF_VERSION) < emu_chip_image_version(o->chip))
		return session_fail(o, OSFI_ST_ROLLBACK);

	memcpy(o->header, h, OSFI_HEADER_LEN);
	o->area_count = areas;
	o->total_len = total;
	o->header_version = rd32(h + OSFI_HDR_OFF_VERSION);
	o->pos = OSFI_HEADER_LEN;
	o->state = OSFI_SESSION_STREAMING;
	osfi_debug(o, "header accepted: %u areas, %u bytes, version %u", areas, total,
		   o->header_version);
	return OSFI_ST_OK;
}

/* --- PUT_DATA: descriptors and areas --- */

static bool is_known_state(uint8_t ps)
{
	switch (ps) {
	case STM32H5_PS_OPEN:
	case STM32H5_PS_PROVISIONING:
	case STM32H5_PS_IROT_PROVISIONED:
	case STM32H5_PS_TZ_CLOSED:
	case STM32H5_PS_CLOSED:
	case STM32H5_PS_LOCKED:
		return true;
	default:
		return false;
	}
}

/* Option records: known registers, each at most once, OPTSR present with a product state
 * the life cycle knows (reachability is the chip model's to judge when applying). */
static uint16_t config_check(const uint8_t *p, uint32_t len)
{
	uint32_t seen = 0;

	for (uint32_t off = 0; off + OSFI_OPT_RECORD_LEN <= len; off += OSFI_OPT_RECORD_LEN) {
		uint16_t reg = rd16(p + off);

		if (reg < 1 || reg > OSFI_OPT_MAX || rd16(p + off + 2) != 0 || (seen & 1u << reg))
			return OSFI_ST_BAD_OPTION;
		seen |= 1u << reg;
		if (reg == OSFI_OPT_OPTSR && !is_known_state((uint8_t)(rd32(p + off + 4) >> 8)))
			return OSFI_ST_BAD_OPTION;
	}
	if (!(seen & 1u << OSFI_OPT_OPTSR))
		return OSFI_ST_BAD_OPTION;
	return OSFI_ST_OK;
}

static uint16_t desc_check(struct emu_osfi *o, const uint8_t *d)
{
	uint8_t type = d[OSFI_DESC_OFF_TYPE];
	uint16_t index = rd16(d + OSFI_DESC_OFF_INDEX);
	uint32_t size = rd32(d + OSFI_DESC_OFF_SIZE);
	uint32_t addr = rd32(d + OSFI_DESC_OFF_ADDR);
	uint32_t module = rd32(d + OSFI_DESC_OFF_MODULE);
	uint64_t end = o->pos + size;	/* o->pos is just past the descriptor */

	if (d[1] != 0 ||
	    !all_zero(d + OSFI_DESC_OFF_RESERVED, OSFI_DESC_OFF_TAG - OSFI_DESC_OFF_RESERVED) ||
	    index != o->areas_done + 1 || rd16(d + OSFI_DESC_OFF_TOTAL) != o->area_count)
		return OSFI_ST_DESCRIPTOR_MALFORMED;
	/* The areas left must fit the total length exactly; it is authenticated by the header. */
	if (end + (uint64_t)(o->area_count - index) * OSFI_DESC_LEN > o->total_len ||
	    (index == o->area_count && end != o->total_len))
		return OSFI_ST_DESCRIPTOR_MALFORMED;

	switch (type) {
	case OSFI_AREA_FIRMWARE:
	case OSFI_AREA_SECRETS:
	case OSFI_AREA_MODULE:
		if (size == 0 || size % STM32H5_FLASH_WRITE_UNIT != 0)
			return OSFI_ST_DESCRIPTOR_MALFORMED;
		if ((type == OSFI_AREA_MODULE) != (module != 0))
			return OSFI_ST_DESCRIPTOR_MALFORMED;
		break;
	case OSFI_AREA_CONFIG:
		if (size == 0 || size % OSFI_OPT_RECORD_LEN != 0 || addr != 0 || module != 0 ||
		    index != o->area_count || o->have_config)
			return OSFI_ST_DESCRIPTOR_MALFORMED;
		break;
	case OSFI_AREA_PAUSE:
	case OSFI_AREA_RESUME:
		if (size != 0 || addr != 0 || module != 0)
			return OSFI_ST_DESCRIPTOR_MALFORMED;
		break;
	default:
		return OSFI_ST_DESCRIPTOR_MALFORMED;
	}
	if (size > o->ram_buffer)
		return OSFI_ST_AREA_TOO_LARGE;
	if (type == OSFI_AREA_MODULE && !module_key(o, module))
		return OSFI_ST_MODULE_LICENSE_MISSING;
	return OSFI_ST_OK;
}

static bool ranges_overlap(uint32_t a, uint32_t alen, uint32_t b, uint32_t blen)
{
	return (uint64_t)a < (uint64_t)b + blen && (uint64_t)b < (uint64_t)a + alen;
}

static uint16_t area_write(struct emu_osfi *o, uint8_t type, uint32_t addr, uint32_t size)
{
	char kind = emu_chip_range_kind(o->chip, addr, size);
	int r;

	if (addr % STM32H5_FLASH_WRITE_UNIT != 0)
		return OSFI_ST_BAD_ADDRESS;
	if (type == OSFI_AREA_SECRETS ? (kind != 'F' && kind != 'O' && kind != 'B') : kind != 'F')
		return OSFI_ST_BAD_ADDRESS;
	if (!emu_chip_range_erased(o->chip, addr, size))
		return OSFI_ST_NOT_ERASED;

	if (kind == 'O' || kind == 'B') {
		struct osfi_deferred *d;

		for (size_t i = 0; i < o->n_deferred; i++)
			if (ranges_overlap(addr, size, o->deferred[i].addr, o->deferred[i].len))
				return OSFI_ST_NOT_ERASED;
		if (o->n_deferred == o->cap_deferred) {
			size_t cap = o->cap_deferred ? 2 * o->cap_deferred : 4;

			d = realloc(o->deferred, cap * sizeof(*d));
			if (!d)
				return OSFI_ST_INTERNAL;
			o->deferred = d;
			o->cap_deferred = cap;
		}
		d = &o->deferred[o->n_deferred];
		d->data = malloc(size);
		if (!d->data)
			return OSFI_ST_INTERNAL;
		memcpy(d->data, o->area_buf, size);
		d->addr = addr;
		d->len = size;
		o->n_deferred++;
		return OSFI_ST_OK;
	}

	/* Track before programming, so that a partial write is erased as well. */
	if (track_programmed(o, addr, size) < 0)
		return OSFI_ST_INTERNAL;
	r = emu_chip_program(o->chip, addr, o->area_buf, size);
	if (r < 0) {
		osfi_debug(o, "programming 0x%08x+%u failed: %s", addr, size, strerror(-r));
		return OSFI_ST_FLASH_ERROR;
	}
	return OSFI_ST_OK;
}

static uint16_t area_complete(struct emu_osfi *o)
{
	const uint8_t *d = o->desc;
	uint8_t type = d[OSFI_DESC_OFF_TYPE];
	uint16_t index = rd16(d + OSFI_DESC_OFF_INDEX);
	uint32_t addr = rd32(d + OSFI_DESC_OFF_ADDR);
	const uint8_t *key = o->image_key;
	uint8_t iv[OSFI_NONCE_LEN];
	uint16_t st = OSFI_ST_OK;

	if (type == OSFI_AREA_MODULE) {
		key = module_key(o, rd32(d + OSFI_DESC_OFF_MODULE));
		if (!key)
			return OSFI_ST_MODULE_LICENSE_MISSING;
	}
	osfi_iv(o->header + OSFI_HDR_OFF_NONCE, index, iv);
	if (gcm_open(key, iv, o->header, OSFI_HEADER_LEN, d, OSFI_DESC_AUTH_LEN, o->area_buf,
		     o->area_size, d + OSFI_DESC_OFF_TAG) != 0)
		return OSFI_ST_AREA_AUTH;

	switch (type) {
	case OSFI_AREA_FIRMWARE:
	case OSFI_AREA_SECRETS:
	case OSFI_AREA_MODULE:
		st = area_write(o, type, addr, o->area_size);
		break;
	case OSFI_AREA_CONFIG:
		st = config_check(o->area_buf, o->area_size);
		if (st != OSFI_ST_OK)
			break;
		o->config = malloc(o->area_size);
		if (!o->config)
			return OSFI_ST_INTERNAL;
		memcpy(o->config, o->area_buf, o->area_size);
		o->config_len = o->area_size;
		o->have_config = true;
		break;
	default:
		/* 'P' and 'R': authenticated markers, nothing to do in v1. */
		break;
	}
	OPENSSL_cleanse(o->area_buf, o->area_size);
	if (st == OSFI_ST_OK) {
		osfi_debug(o, "area %u ('%c', %u bytes) done", index, type, o->area_size);
		o->areas_done++;
	}
	return st;
}

/* Feeds stream bytes through the descriptor/area parser. */
static uint16_t stream_feed(struct emu_osfi *o, const uint8_t *p, size_t n)
{
	uint16_t st;

	while (n > 0) {
		size_t take;

		if (o->areas_done == o->area_count)
			return OSFI_ST_DESCRIPTOR_MALFORMED;
		if (!o->in_payload) {
			take = OSFI_DESC_LEN - o->desc_fill;
			if (take > n)
				take = n;
			memcpy(o->desc + o->desc_fill, p, take);
			o->desc_fill += take;
			o->pos += take;
			p += take;
			n -= take;
			if (o->desc_fill < OSFI_DESC_LEN)
				break;
			st = desc_check(o, o->desc);
			if (st != OSFI_ST_OK)
				return st;
			o->area_size = rd32(o->desc + OSFI_DESC_OFF_SIZE);
			o->area_fill = 0;
			o->in_payload = true;
			if (o->area_size > o->area_cap) {
				uint8_t *b = malloc(o->area_size);

				if (!b)
					return OSFI_ST_INTERNAL;
				if (o->area_buf)
					OPENSSL_cleanse(o->area_buf, o->area_cap);
				free(o->area_buf);
				o->area_buf = b;
				o->area_cap = o->area_size;
			}
		} else {
			take = o->area_size - o->area_fill;
			if (take > n)
				take = n;
			memcpy(o->area_buf + o->area_fill, p, take);
			o->area_fill += (uint32_t)take;
			o->pos += take;
			p += take;
			n -= take;
		}
		if (o->in_payload && o->area_fill == o->area_size) {
			st = area_complete(o);
			if (st != OSFI_ST_OK)
				return st;
			o->in_payload = false;
			o->desc_fill = 0;
		}
	}
	if (o->areas_done == o->area_count)
		o->state = OSFI_SESSION_COMPLETE;
	return OSFI_ST_OK;
}

static uint16_t cmd_put_data(struct emu_osfi *o, const uint8_t *p1, size_t n1, const uint8_t *p2,
			     size_t n2)
{
	uint32_t off;
	uint16_t st, areas;

	if (n1 != 4 || n2 < 1 || n2 > OSFI_DATA_CHUNK)
		return session_fail(o, OSFI_ST_BAD_LENGTH);
	off = rd32(p1);

	/* The same chunk again: its answer was lost. Answer as before, apply nothing. */
	if (o->have_last && off == o->last_off && n2 == o->last_len &&
	    memcmp(p2, o->last_data, n2) == 0) {
		if (o->state == OSFI_SESSION_STREAMING || o->state == OSFI_SESSION_COMPLETE)
			return OSFI_ST_OK;
	}
	if (o->state != OSFI_SESSION_STREAMING) {
		if (o->state == OSFI_SESSION_FAILED && o->last_status != OSFI_ST_OK &&
		    o->have_last && off == o->last_off && n2 == o->last_len &&
		    memcmp(p2, o->last_data, n2) == 0)
			return o->last_status;
		return session_fail(o, OSFI_ST_SEQUENCE);
	}
	if (off != o->pos)
		return session_fail(o, OSFI_ST_SEQUENCE);
	if ((uint64_t)off + n2 > o->total_len)
		return session_fail(o, OSFI_ST_BAD_LENGTH);

	o->last_off = off;
	o->last_len = n2;
	memcpy(o->last_data, p2, n2);
	o->have_last = true;
	areas = o->areas_done;
	st = stream_feed(o, p2, n2);
	if (st != OSFI_ST_OK) {
		/* A refused chunk counts for nothing: progress stays that of the last OK. */
		o->pos = off;
		o->areas_done = areas;
		session_fail(o, st);
		/* Keep the chunk so that a re-send learns the same outcome. */
		o->last_off = off;
		o->last_len = n2;
		memcpy(o->last_data, p2, n2);
		o->have_last = true;
		return st;
	}
	return OSFI_ST_OK;
}

/* --- FINALIZE / ABORT --- */

static int options_apply(struct emu_osfi *o, uint32_t saved[OSFI_OPT_MAX + 1], bool *touched)
{
	uint32_t optsr = 0;

	for (uint32_t off = 0; off + OSFI_OPT_RECORD_LEN <= o->config_len;
	     off += OSFI_OPT_RECORD_LEN) {
		uint16_t reg = rd16(o->config + off);
		uint32_t val = rd32(o->config + off + 4);

		if (reg == OSFI_OPT_OPTSR) {
			optsr = val;
			continue;
		}
		saved[reg] = emu_chip_get_option(o->chip, reg);
		touched[reg] = true;
		if (emu_chip_set_option(o->chip, reg, val) < 0)
			return -EINVAL;
	}
	/* PRODUCT_STATE last: after it the chip may refuse further changes. */
	saved[OSFI_OPT_OPTSR] = emu_chip_get_option(o->chip, OSFI_OPT_OPTSR);
	touched[OSFI_OPT_OPTSR] = true;
	if (emu_chip_set_option(o->chip, OSFI_OPT_OPTSR, optsr) < 0)
		return -EINVAL;
	return 0;
}

static uint16_t cmd_finalize(struct emu_osfi *o, size_t n1)
{
	uint32_t saved[OSFI_OPT_MAX + 1] = { 0 };
	bool touched[OSFI_OPT_MAX + 1] = { false };
	int r;

	if (n1 != 0)
		return session_fail(o, OSFI_ST_BAD_LENGTH);
	if (!session_active(o))
		return session_fail(o, OSFI_ST_SEQUENCE);
	if (o->state != OSFI_SESSION_COMPLETE)
		return session_fail(o, OSFI_ST_INCOMPLETE);

	for (size_t i = 0; i < o->n_deferred; i++) {
		r = emu_chip_program(o->chip, o->deferred[i].addr, o->deferred[i].data,
				     o->deferred[i].len);
		if (r < 0) {
			osfi_debug(o, "programming 0x%08x+%u failed: %s", o->deferred[i].addr,
				   o->deferred[i].len, strerror(-r));
			return session_fail(o, OSFI_ST_FLASH_ERROR);
		}
	}
	if (o->have_config && options_apply(o, saved, touched) < 0) {
		for (uint16_t reg = OSFI_OPT_MAX; reg >= 1; reg--)
			if (touched[reg])
				(void)emu_chip_set_option(o->chip, reg, saved[reg]);
		return session_fail(o, OSFI_ST_BAD_OPTION);
	}
	if (o->header_version > emu_chip_image_version(o->chip))
		emu_chip_set_image_version(o->chip, o->header_version);

	r = emu_chip_persist(o->chip);
	if (r < 0) {
		/* The install happened in memory; only the emulator's disk failed. */
		osfi_debug(o, "persisting the chip failed: %s", strerror(-r));
		session_drop_pending(o);
		session_wipe_keys(o);
		o->n_programmed = 0;
		o->state = OSFI_SESSION_FAILED;
		o->last_status = OSFI_ST_INTERNAL;
		record_save(o);
		return OSFI_ST_INTERNAL;
	}

	/* The image is installed: nothing of it may be erased by a later abort. */
	o->n_programmed = 0;
	session_drop_pending(o);
	session_wipe_keys(o);
	o->state = OSFI_SESSION_FINALIZED;
	o->last_status = OSFI_ST_OK;
	memcpy(o->installed_id, o->license_id, OSFI_ID_LEN);
	record_save(o);
	osfi_debug(o, "finalized, product state 0x%02x", emu_chip_product_state(o->chip));
	emu_chip_request_reset(o->chip);
	return OSFI_ST_OK;
}

static uint16_t cmd_abort(struct emu_osfi *o, size_t n1)
{
	if (n1 != 0)
		return OSFI_ST_BAD_LENGTH;
	/* Without a session in progress there is nothing to undo; a finalized image stays. */
	if (!session_active(o))
		return OSFI_ST_OK;
	session_discard(o);
	o->state = OSFI_SESSION_FAILED;
	o->last_status = OSFI_ST_OK;
	record_save(o);
	osfi_debug(o, "session aborted by the host");
	return OSFI_ST_OK;
}

/* --- GET_INFO / GET_CERT --- */

static uint16_t cmd_get_info(struct emu_osfi *o, size_t n1, uint8_t *out, size_t out_max,
			     size_t *out_len)
{
	uint8_t *p = out;

	if (n1 != 0)
		return OSFI_ST_BAD_LENGTH;
	if (out_max < OSFI_INFO_LEN)
		return OSFI_ST_INTERNAL;
	memset(p, 0, OSFI_INFO_LEN);
	p[0] = emu_chip_product_state(o->chip);
	p[1] = OSFI_VERSION;
	p[2] = o->state;
	wr32(p + 4, o->ram_buffer);
	wr16(p + 8, o->last_status);
	wr16(p + 10, o->areas_done);
	wr32(p + 12, (uint32_t)(o->pos - OSFI_HEADER_LEN));
	wr16(p + 16, emu_chip_device_id(o->chip));
	memcpy(p + 20, emu_chip_uid(o->chip), OSFI_UID_LEN);
	memcpy(p + 32, o->installed_id, OSFI_ID_LEN);
	*out_len = OSFI_INFO_LEN;
	return OSFI_ST_OK;
}

static uint16_t cmd_get_cert(struct emu_osfi *o, size_t n1, uint8_t *out, size_t out_max,
			     size_t *out_len)
{
	if (n1 != 0)
		return OSFI_ST_BAD_LENGTH;
	/* A chip started without a CA has no certificate to give. */
	if (!o->have_cert || out_max < OSFI_CERT_LEN)
		return OSFI_ST_INTERNAL;
	memcpy(out, o->cert, OSFI_CERT_LEN);
	*out_len = OSFI_CERT_LEN;
	return OSFI_ST_OK;
}

/* --- The seam --- */

bool emu_osfi_subop_known(uint16_t subop)
{
	return subop >= OSFI_OP_GET_INFO && subop <= OSFI_OP_ABORT;
}

/* Whether the sub-command travels on 0x51 (two packets, status only) rather than 0x50. */
static bool subop_extended(uint16_t subop)
{
	return subop == OSFI_OP_PUT_LICENSE || subop == OSFI_OP_PUT_DATA;
}

int emu_osfi_special(struct emu_chip *c, bool extended, uint16_t subop, const uint8_t *p1,
		     size_t n1, const uint8_t *p2, size_t n2, uint8_t *out, size_t out_max,
		     size_t *out_len, uint16_t *status)
{
	struct emu_osfi *o = emu_chip_osfi(c);
	size_t len = 0;
	uint16_t st;

	if (!o || !emu_osfi_subop_known(subop) || subop_extended(subop) != extended)
		return -ENOENT;
	if (!p1)
		n1 = 0;
	if (!p2)
		n2 = 0;

	switch (subop) {
	case OSFI_OP_GET_INFO:
		st = cmd_get_info(o, n1, out, out_max, &len);
		break;
	case OSFI_OP_GET_CERT:
		st = cmd_get_cert(o, n1, out, out_max, &len);
		break;
	case OSFI_OP_PUT_LICENSE:
		st = cmd_put_license(o, p1, n1, p2, n2);
		break;
	case OSFI_OP_PUT_HEADER:
		st = cmd_put_header(o, p1, n1);
		break;
	case OSFI_OP_PUT_DATA:
		st = cmd_put_data(o, p1, n1, p2, n2);
		break;
	case OSFI_OP_FINALIZE:
		st = cmd_finalize(o, n1);
		break;
	case OSFI_OP_ABORT:
		st = cmd_abort(o, n1);
		break;
	default:
		return -ENOENT;
	}
	if (st != OSFI_ST_OK)
		osfi_debug(o, "sub-command 0x%04x: status 0x%04x", subop, st);
	*out_len = len;
	*status = st;
	return 0;
}

void emu_osfi_reset(struct emu_chip *c)
{
	struct emu_osfi *o = emu_chip_osfi(c);

	if (!o || !session_active(o))
		return;
	/* RAM is lost: the session cannot continue, and what it wrote is taken back. */
	session_discard(o);
	o->state = OSFI_SESSION_FAILED;
	record_save(o);
	osfi_debug(o, "reset during a session: aborted");
}

int emu_osfi_attach(struct emu_chip *c, const struct emu_osfi_config *cfg)
{
	const char *dir = emu_chip_state_dir(c);
	const char *dbg = getenv("H5EMU_OSFI_DEBUG");
	struct emu_osfi *o;
	int r;

	if (emu_chip_osfi(c))
		return -EBUSY;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->chip = c;
	o->debug = dbg && *dbg && strcmp(dbg, "0") != 0;
	o->ram_buffer = cfg && cfg->ram_buffer ? cfg->ram_buffer : EMU_OSFI_DEFAULT_RAM;
	o->state = OSFI_SESSION_IDLE;
	o->pos = OSFI_HEADER_LEN;

	r = chip_key_load_or_create(o, dir);
	if (r == 0)
		r = record_load(o);
	if (r == 0 && cfg && cfg->ca_key_path)
		r = chip_cert_load_or_create(o, dir, cfg->ca_key_path);
	if (r == 0 && cfg && cfg->global_key_path)
		r = global_key_load(o, cfg->global_key_path);
	if (r < 0) {
		EVP_PKEY_free(o->key);
		OPENSSL_cleanse(o->global_key, sizeof(o->global_key));
		free(o);
		return r;
	}
	emu_chip_set_osfi(c, o);
	osfi_debug(o, "attached (certificate %s, global key %s, RAM buffer %u)",
		   o->have_cert ? "yes" : "no", o->have_global ? "yes" : "no", o->ram_buffer);
	return 0;
}

void emu_osfi_detach(struct emu_chip *c)
{
	struct emu_osfi *o;

	if (!c)
		return;
	o = emu_chip_osfi(c);
	if (!o)
		return;
	/* Leaving with a session open is a power-off: the same as a reset. */
	emu_osfi_reset(c);
	session_discard(o);
	EVP_PKEY_free(o->key);
	OPENSSL_cleanse(o->global_key, sizeof(o->global_key));
	if (o->area_buf)
		OPENSSL_cleanse(o->area_buf, o->area_cap);
	free(o->area_buf);
	free(o->programmed);
	free(o->deferred);
	free(o);
	emu_chip_set_osfi(c, NULL);
}

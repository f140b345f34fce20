/* OSFI image: area cryptography, builder, parser and authentication (docs/protocol.md §4). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "osfi.h"
#include "osfi-util.h"
#include "an3155-wire.h"

void osfi_area_iv(const uint8_t nonce[OSFI_NONCE_LEN], uint32_t index,
		  uint8_t ret_iv[OSFI_NONCE_LEN])
{
	memcpy(ret_iv, nonce, 8);
	osfi_put_le32(ret_iv + 8, osfi_get_le32(nonce + 8) + index);
}

/* One AES-128-GCM operation with two AAD parts. enc: in -> out and tag out; !enc: checks the
 * tag. n may be 0 (header tag). */
static int osfi_gcm(bool enc, const uint8_t key[OSFI_KEY_LEN], const uint8_t iv[OSFI_NONCE_LEN],
		    const uint8_t *aad1, size_t n_aad1, const uint8_t *aad2, size_t n_aad2,
		    const uint8_t *in, size_t n, uint8_t *out, uint8_t tag[OSFI_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx;
	int len, ok;

	if (n > (size_t)INT32_MAX)
		return -E2BIG;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	ok = EVP_CipherInit_ex(ctx, EVP_aes_128_gcm(), NULL, NULL, NULL, enc ? 1 : 0) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, OSFI_NONCE_LEN, NULL) == 1 &&
	     EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, enc ? 1 : 0) == 1;
	if (ok && n_aad1)
		ok = EVP_CipherUpdate(ctx, NULL, &len, aad1, (int)n_aad1) == 1;
	if (ok && n_aad2)
		ok = EVP_CipherUpdate(ctx, NULL, &len, aad2, (int)n_aad2) == 1;
	if (ok && n)
		ok = EVP_CipherUpdate(ctx, out, &len, in, (int)n) == 1 && (size_t)len == n;
	if (ok && !enc)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, OSFI_TAG_LEN, tag) == 1;
	if (ok)
		ok = EVP_CipherFinal_ex(ctx, out ? out + n : NULL, &len) == 1;
	if (ok && enc)
		ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, OSFI_TAG_LEN, tag) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		return enc ? -EIO : -EBADMSG;
	return 0;
}

int osfi_header_seal(uint8_t header[OSFI_HEADER_LEN], const uint8_t key[OSFI_KEY_LEN])
{
	uint8_t iv[OSFI_NONCE_LEN];

	osfi_area_iv(header + OSFI_HDR_OFF_NONCE, 0, iv);
	return osfi_gcm(true, key, iv, header, OSFI_HDR_OFF_TAG, NULL, 0, NULL, 0, NULL,
			header + OSFI_HDR_OFF_TAG);
}

int osfi_header_authenticate(const uint8_t header[OSFI_HEADER_LEN],
			     const uint8_t key[OSFI_KEY_LEN])
{
	uint8_t iv[OSFI_NONCE_LEN], tag[OSFI_TAG_LEN];
	uint8_t dummy[1];

	memcpy(tag, header + OSFI_HDR_OFF_TAG, OSFI_TAG_LEN);
	osfi_area_iv(header + OSFI_HDR_OFF_NONCE, 0, iv);
	return osfi_gcm(false, key, iv, header, OSFI_HDR_OFF_TAG, NULL, 0, NULL, 0, dummy, tag) <
			       0 ?
		       -EBADMSG :
		       0;
}

int osfi_area_encrypt(const uint8_t header[OSFI_HEADER_LEN], uint8_t desc[OSFI_DESC_LEN],
		      const uint8_t key[OSFI_KEY_LEN], const uint8_t *plain, size_t n,
		      uint8_t *ret_cipher)
{
	uint8_t iv[OSFI_NONCE_LEN];

	osfi_area_iv(header + OSFI_HDR_OFF_NONCE, osfi_get_le16(desc + OSFI_DESC_OFF_INDEX), iv);
	return osfi_gcm(true, key, iv, header, OSFI_HEADER_LEN, desc, OSFI_DESC_AUTH_LEN, plain, n,
			ret_cipher, desc + OSFI_DESC_OFF_TAG);
}

int osfi_area_decrypt(const uint8_t header[OSFI_HEADER_LEN], const uint8_t desc[OSFI_DESC_LEN],
		      const uint8_t key[OSFI_KEY_LEN], const uint8_t *cipher, size_t n,
		      uint8_t *ret_plain)
{
	uint8_t iv[OSFI_NONCE_LEN], tag[OSFI_TAG_LEN];
	uint8_t *out = ret_plain;
	int r;

	if (!out) {
		out = malloc(n ? n : 1);
		if (!out)
			return -ENOMEM;
	}
	memcpy(tag, desc + OSFI_DESC_OFF_TAG, OSFI_TAG_LEN);
	osfi_area_iv(header + OSFI_HDR_OFF_NONCE, osfi_get_le16(desc + OSFI_DESC_OFF_INDEX), iv);
	r = osfi_gcm(false, key, iv, header, OSFI_HEADER_LEN, desc, OSFI_DESC_AUTH_LEN, cipher, n,
		     out, tag);
	if (r < 0 || out != ret_plain)
		OPENSSL_cleanse(out, n);
	if (out != ret_plain)
		free(out);
	return r < 0 ? -EBADMSG : 0;
}

static bool osfi_range_in(uint32_t address, uint32_t size, uint32_t base, uint32_t len)
{
	return address >= base && (uint64_t)address + size <= (uint64_t)base + len;
}

int osfi_area_check_range(uint8_t type, uint32_t address, uint32_t size)
{
	switch (type) {
	case OSFI_AREA_FIRMWARE:
	case OSFI_AREA_MODULE:
	case OSFI_AREA_SECRETS:
		if (size == 0 || size % 16 || address % 16)
			return -EINVAL;
		if (osfi_range_in(address, size, STM32H5_FLASH_BASE, STM32H5_FLASH_SIZE))
			return 0;
		if (type == OSFI_AREA_SECRETS &&
		    (osfi_range_in(address, size, STM32H5_OTP_BASE, STM32H5_OTP_SIZE) ||
		     osfi_range_in(address, size, STM32H5_OBK_BASE, STM32H5_OBK_SIZE)))
			return 0;
		return -ERANGE;
	case OSFI_AREA_CONFIG:
		if (address != 0)
			return -ERANGE;
		if (size == 0 || size % OSFI_OPT_RECORD_LEN || size > OSFI_OPT_MAX * OSFI_OPT_RECORD_LEN)
			return -EINVAL;
		return 0;
	case OSFI_AREA_PAUSE:
	case OSFI_AREA_RESUME:
		if (address != 0)
			return -ERANGE;
		return size == 0 ? 0 : -EINVAL;
	default:
		return -EINVAL;
	}
}

/* ---- Builder ---- */

static size_t osfi_pad16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

static bool osfi_type_splits(uint8_t type)
{
	return type == OSFI_AREA_FIRMWARE || type == OSFI_AREA_SECRETS || type == OSFI_AREA_MODULE;
}

int osfi_image_build(const struct osfi_image_spec *spec, uint8_t **ret_buf, size_t *ret_len)
{
	uint64_t total = OSFI_HEADER_LEN;
	size_t n_out = 0, off;
	uint32_t max_area;
	struct osfi_header hdr;
	uint8_t *buf, *plain = NULL;
	unsigned n_config = 0;
	uint16_t index = 0;
	int r;

	if (!spec || !spec->key || !ret_buf || !ret_len || (spec->n_areas && !spec->areas))
		return -EINVAL;
	max_area = spec->max_area & ~15u;
	if (spec->max_area && max_area == 0)
		return -EINVAL;

	/* First pass: validate and count. */
	for (size_t i = 0; i < spec->n_areas; i++) {
		const struct osfi_area_spec *a = &spec->areas[i];
		size_t padded = osfi_type_splits(a->type) ? osfi_pad16(a->size) : a->size;
		size_t pieces = 1;

		if (a->size && !a->data)
			return -EINVAL;
		if (a->type == OSFI_AREA_PAUSE || a->type == OSFI_AREA_RESUME ||
		    !osfi_area_type_valid(a->type))
			return -EINVAL;
		if ((a->type == OSFI_AREA_MODULE) != (a->module_id != 0))
			return -EINVAL;
		if (a->size > UINT32_MAX - 16)
			return -E2BIG;
		r = osfi_area_check_range(a->type, a->address, (uint32_t)padded);
		if (r < 0)
			return r;
		if (a->type == OSFI_AREA_CONFIG) {
			if (++n_config > 1 || i != spec->n_areas - 1)
				return -EINVAL;
			if (max_area && padded > max_area)
				return -E2BIG;
		} else if (max_area) {
			pieces = (padded + max_area - 1) / max_area;
		}
		n_out += pieces;
		total += (uint64_t)pieces * OSFI_DESC_LEN + padded;
	}
	if (n_out < 1)
		return -EINVAL;
	if (n_out > OSFI_MAX_AREAS || total > UINT32_MAX)
		return -E2BIG;

	buf = malloc((size_t)total);
	if (!buf)
		return -ENOMEM;

	memset(&hdr, 0, sizeof(hdr));
	hdr.format = OSFI_VERSION;
	hdr.header_len = OSFI_HEADER_LEN;
	hdr.device_id = spec->device_id;
	hdr.area_count = (uint16_t)n_out;
	hdr.total_len = (uint32_t)total;
	hdr.image_version = spec->image_version;
	memcpy(hdr.nonce, spec->nonce, OSFI_NONCE_LEN);
	osfi_header_encode(&hdr, buf);
	r = osfi_header_seal(buf, spec->key);
	if (r < 0)
		goto fail;

	off = OSFI_HEADER_LEN;
	for (size_t i = 0; i < spec->n_areas; i++) {
		const struct osfi_area_spec *a = &spec->areas[i];
		size_t padded = osfi_type_splits(a->type) ? osfi_pad16(a->size) : a->size;
		const uint8_t *key = a->key ? a->key : spec->key;

		plain = malloc(padded ? padded : 1);
		if (!plain) {
			r = -ENOMEM;
			goto fail;
		}
		if (a->size)
			memcpy(plain, a->data, a->size);
		memset(plain + a->size, 0xff, padded - a->size);

		for (size_t done = 0; done < padded;) {
			size_t piece = padded - done;
			struct osfi_desc d;

			if (max_area && a->type != OSFI_AREA_CONFIG && piece > max_area)
				piece = max_area;
			memset(&d, 0, sizeof(d));
			d.type = a->type;
			d.version = a->version;
			d.index = ++index;
			d.total = (uint16_t)n_out;
			d.size = (uint32_t)piece;
			d.address = a->type == OSFI_AREA_CONFIG ? 0 : a->address + (uint32_t)done;
			d.module_id = a->module_id;
			osfi_desc_encode(&d, buf + off);
			r = osfi_area_encrypt(buf, buf + off, key, plain + done, piece,
					      buf + off + OSFI_DESC_LEN);
			if (r < 0)
				goto fail;
			off += OSFI_DESC_LEN + piece;
			done += piece;
		}
		OPENSSL_cleanse(plain, padded);
		free(plain);
		plain = NULL;
	}

	*ret_buf = buf;
	*ret_len = (size_t)total;
	return 0;
fail:
	if (plain)
		free(plain);
	free(buf);
	return r;
}

/* ---- Parser ---- */

static int osfi_why(char *reason, size_t reason_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int osfi_why(char *reason, size_t reason_size, const char *fmt, ...)
{
	va_list ap;

	if (reason && reason_size) {
		va_start(ap, fmt);
		vsnprintf(reason, reason_size, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

struct osfi_span {
	uint32_t start, end;
	unsigned index;
};

static int osfi_span_cmp(const void *a, const void *b)
{
	const struct osfi_span *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

int osfi_image_parse(const uint8_t *buf, size_t len, struct osfi_image **ret_img, char *reason,
		     size_t reason_size)
{
	struct osfi_image *img;
	struct osfi_span *spans = NULL;
	size_t off, n_spans = 0;
	int r;

	if (!buf || !ret_img)
		return -EINVAL;
	if (len < OSFI_HEADER_LEN)
		return osfi_why(reason, reason_size, "image is %zu bytes, shorter than its header", len);

	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->buf = buf;
	img->len = len;

	r = osfi_header_decode(buf, OSFI_HEADER_LEN, &img->hdr);
	if (r < 0) {
		r = osfi_why(reason, reason_size, "image header is malformed (magic, version, lengths or "
					   "reserved bytes)");
		goto fail;
	}
	if (img->hdr.total_len != len) {
		r = osfi_why(reason, reason_size, "image header announces %u bytes but the image has %zu",
			     img->hdr.total_len, len);
		goto fail;
	}
	osfi_image_id(buf, img->id);

	img->areas = calloc(img->hdr.area_count, sizeof(*img->areas));
	spans = calloc(img->hdr.area_count, sizeof(*spans));
	if (!img->areas || !spans) {
		r = -ENOMEM;
		goto fail;
	}

	off = OSFI_HEADER_LEN;
	for (unsigned i = 1; i <= img->hdr.area_count; i++) {
		struct osfi_image_area *a = &img->areas[i - 1];

		if (len - off < OSFI_DESC_LEN) {
			r = osfi_why(reason, reason_size, "area %u: descriptor runs past the end", i);
			goto fail;
		}
		if (osfi_desc_decode(buf + off, OSFI_DESC_LEN, &a->desc) < 0) {
			r = osfi_why(reason, reason_size, "area %u: descriptor is malformed", i);
			goto fail;
		}
		if (a->desc.index != i || a->desc.total != img->hdr.area_count) {
			r = osfi_why(reason, reason_size, "area %u: descriptor says index %u of %u", i,
				     a->desc.index, a->desc.total);
			goto fail;
		}
		a->desc_off = off;
		a->data_off = off + OSFI_DESC_LEN;
		if (len - a->data_off < a->desc.size) {
			r = osfi_why(reason, reason_size, "area %u: payload of %u bytes runs past the end",
				     i, a->desc.size);
			goto fail;
		}
		r = osfi_area_check_range(a->desc.type, a->desc.address, a->desc.size);
		if (r < 0) {
			r = osfi_why(reason, reason_size,
				     "area %u ('%c'): %u bytes at 0x%08x: %s", i, a->desc.type,
				     a->desc.size, a->desc.address,
				     r == -ERANGE ? "destination not allowed for this type" :
						    "bad size or alignment");
			goto fail;
		}
		if (a->desc.type == OSFI_AREA_CONFIG && i != img->hdr.area_count) {
			r = osfi_why(reason, reason_size, "area %u: configuration area is not the last", i);
			goto fail;
		}
		if (osfi_type_splits(a->desc.type)) {
			spans[n_spans].start = a->desc.address;
			spans[n_spans].end = a->desc.address + a->desc.size;
			spans[n_spans].index = i;
			n_spans++;
		}
		if (a->desc.size > img->max_area)
			img->max_area = a->desc.size;
		off = a->data_off + a->desc.size;
	}
	if (off != len) {
		r = osfi_why(reason, reason_size, "%zu bytes follow the last area", len - off);
		goto fail;
	}

	qsort(spans, n_spans, sizeof(*spans), osfi_span_cmp);
	for (size_t k = 1; k < n_spans; k++)
		if (spans[k].start < spans[k - 1].end) {
			r = osfi_why(reason, reason_size, "area %u overlaps area %u at 0x%08x",
				     spans[k].index, spans[k - 1].index, spans[k].start);
			goto fail;
		}

	img->n_areas = img->hdr.area_count;
	free(spans);
	*ret_img = img;
	return 0;
fail:
	free(spans);
	osfi_image_free(img);
	return r;
}

struct osfi_image *osfi_image_free(struct osfi_image *img)
{
	if (img) {
		free(img->areas);
		free(img);
	}
	return NULL;
}

bool osfi_image_has_module(const struct osfi_image *img, uint32_t module_id)
{
	for (size_t i = 0; img && i < img->n_areas; i++)
		if (img->areas[i].desc.type == OSFI_AREA_MODULE &&
		    img->areas[i].desc.module_id == module_id)
			return true;
	return false;
}

int osfi_image_authenticate(const struct osfi_image *img, const uint8_t key[OSFI_KEY_LEN],
			    const struct osfi_module_key *mkeys, size_t n_mkeys,
			    unsigned *ret_bad_area)
{
	uint8_t *scratch;
	int r = 0;

	if (!img || !key)
		return -EINVAL;
	if (osfi_header_authenticate(img->buf, key) < 0) {
		if (ret_bad_area)
			*ret_bad_area = 0;
		return -EBADMSG;
	}
	scratch = malloc(img->max_area ? img->max_area : 1);
	if (!scratch)
		return -ENOMEM;

	for (size_t i = 0; i < img->n_areas; i++) {
		const struct osfi_image_area *a = &img->areas[i];
		const uint8_t *k = key;

		if (a->desc.type == OSFI_AREA_MODULE) {
			k = NULL;
			for (size_t m = 0; m < n_mkeys; m++)
				if (mkeys[m].module_id == a->desc.module_id)
					k = mkeys[m].key;
		}
		r = !k ? -ENOKEY : osfi_area_decrypt(img->buf, img->buf + a->desc_off, k, img->buf + a->data_off,
				      a->desc.size, scratch);
		if (r == 0 && a->desc.type == OSFI_AREA_CONFIG) {
			struct osfi_option opts[OSFI_OPT_MAX];
			size_t n;

			r = osfi_options_decode(scratch, a->desc.size, opts, OSFI_OPT_MAX, &n);
		}
		if (r < 0) {
			if (ret_bad_area)
				*ret_bad_area = a->desc.index;
			break;
		}
	}
	OPENSSL_cleanse(scratch, img->max_area);
	free(scratch);
	return r;
}

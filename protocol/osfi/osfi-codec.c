/* OSFI v1 fixed records: chip certificate, license, image header, area descriptor, and the
 * identifiers derived from them (docs/protocol.md §2-§4). */
#include <errno.h>
#include <string.h>

#include <openssl/sha.h>

#include "osfi.h"
#include "osfi-util.h"

/* The bytes of one fixed record, read while decoding or written while encoding. The field
 * helpers below move a value in the one direction that is set, so that each record lists its
 * layout once for both. */
struct record {
	const uint8_t *in;	/* decoding: the record read */
	uint8_t *out;		/* encoding: the record written */
};

static void field_u8(const struct record *rec, size_t off, uint8_t *v)
{
	if (rec->out)
		rec->out[off] = *v;
	else
		*v = rec->in[off];
}

static void field_le16(const struct record *rec, size_t off, uint16_t *v)
{
	if (rec->out)
		osfi_put_le16(rec->out + off, *v);
	else
		*v = osfi_get_le16(rec->in + off);
}

static void field_le32(const struct record *rec, size_t off, uint32_t *v)
{
	if (rec->out)
		osfi_put_le32(rec->out + off, *v);
	else
		*v = osfi_get_le32(rec->in + off);
}

static void field_bytes(const struct record *rec, size_t off, uint8_t *v, size_t n)
{
	if (rec->out)
		memcpy(rec->out + off, v, n);
	else
		memcpy(v, rec->in + off, n);
}

/* Checks the arguments and length of a record to decode, and its magic if it has one. */
static int record_check(const uint8_t *buf, size_t len, const void *ret, size_t want,
			const char *magic)
{
	if (!buf || !ret)
		return -EINVAL;
	if (len != want)
		return -EMSGSIZE;
	if (magic && memcmp(buf, magic, 4) != 0)
		return -EBADMSG;
	return 0;
}

/* Starts a record to encode: all zero (reserved bytes), then the magic if it has one. */
static void record_start(uint8_t *out, size_t len, const char *magic)
{
	memset(out, 0, len);
	if (magic)
		memcpy(out, magic, 4);
}

static void cert_fields(const struct record *rec, struct osfi_cert *c)
{
	field_u8(rec, OSFI_CERT_OFF_VERSION, &c->version);
	field_le16(rec, OSFI_CERT_OFF_DEVICE, &c->device_id);
	field_bytes(rec, OSFI_CERT_OFF_UID, c->uid, OSFI_UID_LEN);
	field_bytes(rec, OSFI_CERT_OFF_PUBKEY, c->pubkey, OSFI_PUBKEY_LEN);
	field_bytes(rec, OSFI_CERT_OFF_SIG, c->sig, OSFI_SIG_LEN);
}

int osfi_cert_decode(const uint8_t *buf, size_t len, struct osfi_cert *ret_cert)
{
	const struct record rec = { .in = buf };
	struct osfi_cert c;
	int r;

	r = record_check(buf, len, ret_cert, OSFI_CERT_LEN, OSFI_CERT_MAGIC);
	if (r < 0)
		return r;
	if (buf[OSFI_CERT_OFF_VERSION] != OSFI_VERSION || buf[OSFI_CERT_OFF_VERSION + 1] != 0 ||
	    buf[OSFI_CERT_OFF_PUBKEY] != 0x04)
		return -EBADMSG;

	cert_fields(&rec, &c);
	*ret_cert = c;
	return 0;
}

void osfi_cert_encode(const struct osfi_cert *cert, uint8_t out[OSFI_CERT_LEN])
{
	const struct record rec = { .out = out };
	struct osfi_cert c = *cert;

	c.version = OSFI_VERSION; /* the one version this code speaks, whatever cert says */
	record_start(out, OSFI_CERT_LEN, OSFI_CERT_MAGIC);
	cert_fields(&rec, &c);
}

static void license_fields(const struct record *rec, struct osfi_license *l)
{
	field_u8(rec, OSFI_LIC_OFF_KIND, &l->kind);
	field_le16(rec, OSFI_LIC_OFF_DEVICE, &l->device_id);
	field_le32(rec, OSFI_LIC_OFF_TARGET, &l->target);
	field_bytes(rec, OSFI_LIC_OFF_UID, l->uid, OSFI_UID_LEN);
	field_bytes(rec, OSFI_LIC_OFF_ID, l->id, OSFI_ID_LEN);
	field_bytes(rec, OSFI_LIC_OFF_NONCE, l->nonce, OSFI_LICENSE_NONCE_LEN);
	field_bytes(rec, OSFI_LIC_OFF_HSMPUB, l->hsm_pub, OSFI_PUBKEY_LEN);
	field_le32(rec, OSFI_LIC_OFF_COUNTER, &l->counter);
	field_bytes(rec, OSFI_LIC_OFF_WRAPPED, l->wrapped, OSFI_WRAPPED_LEN);
}

int osfi_license_decode(const uint8_t *buf, size_t len, struct osfi_license *ret_lic)
{
	const struct record rec = { .in = buf };
	struct osfi_license l;
	int r;

	r = record_check(buf, len, ret_lic, OSFI_LICENSE_LEN, OSFI_LICENSE_MAGIC);
	if (r < 0)
		return r;
	if (buf[OSFI_LIC_OFF_VERSION] != OSFI_VERSION)
		return -EBADMSG;
	if (!osfi_all_zero(buf + OSFI_LIC_OFF_RESERVED, OSFI_LICENSE_LEN - OSFI_LIC_OFF_RESERVED))
		return -EBADMSG;

	memset(&l, 0, sizeof(l));
	license_fields(&rec, &l);

	switch (l.kind) {
	case OSFI_LICENSE_KIND_CHIP:
		if (l.hsm_pub[0] != 0x04)
			return -EBADMSG;
		break;
	case OSFI_LICENSE_KIND_GLOBAL:
		/* A global license names no chip and no HSM and is not counted. */
		if (!osfi_all_zero(l.uid, OSFI_UID_LEN) ||
		    !osfi_all_zero(l.hsm_pub, OSFI_PUBKEY_LEN) || l.counter != 0)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}

	*ret_lic = l;
	return 0;
}

void osfi_license_encode(const struct osfi_license *lic, uint8_t out[OSFI_LICENSE_LEN])
{
	const struct record rec = { .out = out };
	struct osfi_license l = *lic;

	record_start(out, OSFI_LICENSE_LEN, OSFI_LICENSE_MAGIC);
	out[OSFI_LIC_OFF_VERSION] = OSFI_VERSION;
	license_fields(&rec, &l);
}

void osfi_license_kek_input(const struct osfi_license *lic, uint8_t ret_h[32])
{
	uint8_t in[sizeof(OSFI_KEK_LABEL) - 1 + 1 + 2 + 4 + OSFI_UID_LEN + OSFI_ID_LEN +
		   OSFI_LICENSE_NONCE_LEN];
	size_t o = 0;

	memcpy(in, OSFI_KEK_LABEL, sizeof(OSFI_KEK_LABEL) - 1);
	o += sizeof(OSFI_KEK_LABEL) - 1;
	in[o++] = lic->kind;
	osfi_put_le16(in + o, lic->device_id);
	o += 2;
	osfi_put_le32(in + o, lic->target);
	o += 4;
	memcpy(in + o, lic->uid, OSFI_UID_LEN);
	o += OSFI_UID_LEN;
	memcpy(in + o, lic->id, OSFI_ID_LEN);
	o += OSFI_ID_LEN;
	memcpy(in + o, lic->nonce, OSFI_LICENSE_NONCE_LEN);
	o += OSFI_LICENSE_NONCE_LEN;
	SHA256(in, o, ret_h);
}

void osfi_module_firmware_id(uint32_t module_id, uint8_t ret_id[OSFI_ID_LEN])
{
	uint8_t in[sizeof(OSFI_MODULE_ID_LABEL) - 1 + 4];

	memcpy(in, OSFI_MODULE_ID_LABEL, sizeof(OSFI_MODULE_ID_LABEL) - 1);
	osfi_put_le32(in + sizeof(OSFI_MODULE_ID_LABEL) - 1, module_id);
	SHA256(in, sizeof(in), ret_id);
}

static void header_fields(const struct record *rec, struct osfi_header *h)
{
	field_le16(rec, OSFI_HDR_OFF_FORMAT, &h->format);
	field_le16(rec, OSFI_HDR_OFF_HDRLEN, &h->header_len);
	field_le16(rec, OSFI_HDR_OFF_DEVICE, &h->device_id);
	field_le16(rec, OSFI_HDR_OFF_AREAS, &h->area_count);
	field_le32(rec, OSFI_HDR_OFF_TOTAL, &h->total_len);
	field_le32(rec, OSFI_HDR_OFF_VERSION, &h->image_version);
	field_le32(rec, OSFI_HDR_OFF_FLAGS, &h->flags);
	field_bytes(rec, OSFI_HDR_OFF_NONCE, h->nonce, OSFI_NONCE_LEN);
	field_bytes(rec, OSFI_HDR_OFF_TAG, h->tag, OSFI_TAG_LEN);
}

int osfi_header_decode(const uint8_t *buf, size_t len, struct osfi_header *ret_hdr)
{
	const struct record rec = { .in = buf };
	struct osfi_header h;
	int r;

	r = record_check(buf, len, ret_hdr, OSFI_HEADER_LEN, OSFI_IMAGE_MAGIC);
	if (r < 0)
		return r;

	header_fields(&rec, &h);

	if (h.format != OSFI_VERSION || h.header_len != OSFI_HEADER_LEN || h.flags != 0)
		return -EBADMSG;
	if (h.area_count < 1 || h.area_count > OSFI_MAX_AREAS)
		return -EBADMSG;
	if (!osfi_all_zero(buf + OSFI_HDR_OFF_RESERVED, OSFI_HDR_OFF_TAG - OSFI_HDR_OFF_RESERVED))
		return -EBADMSG;
	/* The header and one descriptor per area must fit the announced total. */
	if ((uint64_t)h.total_len < OSFI_HEADER_LEN + (uint64_t)h.area_count * OSFI_DESC_LEN)
		return -EBADMSG;

	*ret_hdr = h;
	return 0;
}

void osfi_header_encode(const struct osfi_header *hdr, uint8_t out[OSFI_HEADER_LEN])
{
	const struct record rec = { .out = out };
	struct osfi_header h = *hdr;

	record_start(out, OSFI_HEADER_LEN, OSFI_IMAGE_MAGIC);
	header_fields(&rec, &h);
}

bool osfi_area_type_valid(uint8_t type)
{
	switch (type) {
	case OSFI_AREA_FIRMWARE:
	case OSFI_AREA_CONFIG:
	case OSFI_AREA_SECRETS:
	case OSFI_AREA_MODULE:
	case OSFI_AREA_PAUSE:
	case OSFI_AREA_RESUME:
		return true;
	default:
		return false;
	}
}

static void desc_fields(const struct record *rec, struct osfi_desc *d)
{
	field_u8(rec, OSFI_DESC_OFF_TYPE, &d->type);
	field_le16(rec, OSFI_DESC_OFF_VERSION, &d->version);
	field_le16(rec, OSFI_DESC_OFF_INDEX, &d->index);
	field_le16(rec, OSFI_DESC_OFF_TOTAL, &d->total);
	field_le32(rec, OSFI_DESC_OFF_SIZE, &d->size);
	field_le32(rec, OSFI_DESC_OFF_ADDR, &d->address);
	field_le32(rec, OSFI_DESC_OFF_MODULE, &d->module_id);
	field_bytes(rec, OSFI_DESC_OFF_TAG, d->tag, OSFI_TAG_LEN);
}

int osfi_desc_decode(const uint8_t *buf, size_t len, struct osfi_desc *ret_desc)
{
	const struct record rec = { .in = buf };
	struct osfi_desc d;
	int r;

	r = record_check(buf, len, ret_desc, OSFI_DESC_LEN, NULL);
	if (r < 0)
		return r;

	desc_fields(&rec, &d);

	if (!osfi_area_type_valid(d.type) || buf[1] != 0)
		return -EBADMSG;
	if (!osfi_all_zero(buf + OSFI_DESC_OFF_RESERVED, OSFI_DESC_OFF_TAG - OSFI_DESC_OFF_RESERVED))
		return -EBADMSG;
	if (d.total < 1 || d.total > OSFI_MAX_AREAS || d.index < 1 || d.index > d.total)
		return -EBADMSG;
	/* Module id only on module areas; no address on areas that do not program memory. */
	if ((d.type == OSFI_AREA_MODULE) != (d.module_id != 0))
		return -EBADMSG;
	if ((d.type == OSFI_AREA_CONFIG || d.type == OSFI_AREA_PAUSE ||
	     d.type == OSFI_AREA_RESUME) && d.address != 0)
		return -EBADMSG;

	*ret_desc = d;
	return 0;
}

void osfi_desc_encode(const struct osfi_desc *desc, uint8_t out[OSFI_DESC_LEN])
{
	const struct record rec = { .out = out };
	struct osfi_desc d = *desc;

	record_start(out, OSFI_DESC_LEN, NULL);
	desc_fields(&rec, &d);
}

void osfi_image_id(const uint8_t header[OSFI_HEADER_LEN], uint8_t ret_id[OSFI_ID_LEN])
{
	SHA256(header, OSFI_HEADER_LEN, ret_id);
}

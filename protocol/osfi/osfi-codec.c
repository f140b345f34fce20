/* OSFI v1 fixed records: chip certificate, license, image header, area descriptor, and the
 * identifiers derived from them (docs/protocol.md §2-§4). */
#include <errno.h>
#include <string.h>

#include <openssl/sha.h>

#include "osfi.h"
#include "osfi-util.h"

int osfi_cert_decode(const uint8_t *buf, size_t len, struct osfi_cert *ret_cert)
{
	struct osfi_cert c;

	if (!buf || !ret_cert)
		return -EINVAL;
	if (len != OSFI_CERT_LEN)
		return -EMSGSIZE;
	if (memcmp(buf, OSFI_CERT_MAGIC, 4) != 0 || buf[OSFI_CERT_OFF_VERSION] != OSFI_VERSION ||
	    buf[OSFI_CERT_OFF_VERSION + 1] != 0 || buf[OSFI_CERT_OFF_PUBKEY] != 0x04)
		return -EBADMSG;

	c.version = buf[OSFI_CERT_OFF_VERSION];
	c.device_id = osfi_get_le16(buf + OSFI_CERT_OFF_DEVICE);
	memcpy(c.uid, buf + OSFI_CERT_OFF_UID, OSFI_UID_LEN);
	memcpy(c.pubkey, buf + OSFI_CERT_OFF_PUBKEY, OSFI_PUBKEY_LEN);
	memcpy(c.sig, buf + OSFI_CERT_OFF_SIG, OSFI_SIG_LEN);
	*ret_cert = c;
	return 0;
}

void osfi_cert_encode(const struct osfi_cert *cert, uint8_t out[OSFI_CERT_LEN])
{
	memset(out, 0, OSFI_CERT_LEN);
	memcpy(out, OSFI_CERT_MAGIC, 4);
	out[OSFI_CERT_OFF_VERSION] = OSFI_VERSION;
	osfi_put_le16(out + OSFI_CERT_OFF_DEVICE, cert->device_id);
	memcpy(out + OSFI_CERT_OFF_UID, cert->uid, OSFI_UID_LEN);
	memcpy(out + OSFI_CERT_OFF_PUBKEY, cert->pubkey, OSFI_PUBKEY_LEN);
	memcpy(out + OSFI_CERT_OFF_SIG, cert->sig, OSFI_SIG_LEN);
}

int osfi_license_decode(const uint8_t *buf, size_t len, struct osfi_license *ret_lic)
{
	struct osfi_license l;

	if (!buf || !ret_lic)
		return -EINVAL;
	if (len != OSFI_LICENSE_LEN)
		return -EMSGSIZE;
	if (memcmp(buf, OSFI_LICENSE_MAGIC, 4) != 0 || buf[OSFI_LIC_OFF_VERSION] != OSFI_VERSION)
		return -EBADMSG;
	if (!osfi_all_zero(buf + OSFI_LIC_OFF_RESERVED, OSFI_LICENSE_LEN - OSFI_LIC_OFF_RESERVED))
		return -EBADMSG;

	memset(&l, 0, sizeof(l));
	l.kind = buf[OSFI_LIC_OFF_KIND];
	l.device_id = osfi_get_le16(buf + OSFI_LIC_OFF_DEVICE);
	l.target = osfi_get_le32(buf + OSFI_LIC_OFF_TARGET);
	memcpy(l.uid, buf + OSFI_LIC_OFF_UID, OSFI_UID_LEN);
	memcpy(l.id, buf + OSFI_LIC_OFF_ID, OSFI_ID_LEN);
	memcpy(l.nonce, buf + OSFI_LIC_OFF_NONCE, OSFI_LICENSE_NONCE_LEN);
	memcpy(l.hsm_pub, buf + OSFI_LIC_OFF_HSMPUB, OSFI_PUBKEY_LEN);
	l.counter = osfi_get_le32(buf + OSFI_LIC_OFF_COUNTER);
	memcpy(l.wrapped, buf + OSFI_LIC_OFF_WRAPPED, OSFI_WRAPPED_LEN);

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
	memset(out, 0, OSFI_LICENSE_LEN);
	memcpy(out, OSFI_LICENSE_MAGIC, 4);
	out[OSFI_LIC_OFF_VERSION] = OSFI_VERSION;
	out[OSFI_LIC_OFF_KIND] = lic->kind;
	osfi_put_le16(out + OSFI_LIC_OFF_DEVICE, lic->device_id);
	osfi_put_le32(out + OSFI_LIC_OFF_TARGET, lic->target);
	memcpy(out + OSFI_LIC_OFF_UID, lic->uid, OSFI_UID_LEN);
	memcpy(out + OSFI_LIC_OFF_ID, lic->id, OSFI_ID_LEN);
	memcpy(out + OSFI_LIC_OFF_NONCE, lic->nonce, OSFI_LICENSE_NONCE_LEN);
	memcpy(out + OSFI_LIC_OFF_HSMPUB, lic->hsm_pub, OSFI_PUBKEY_LEN);
	osfi_put_le32(out + OSFI_LIC_OFF_COUNTER, lic->counter);
	memcpy(out + OSFI_LIC_OFF_WRAPPED, lic->wrapped, OSFI_WRAPPED_LEN);
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

int osfi_header_decode(const uint8_t *buf, size_t len, struct osfi_header *ret_hdr)
{
	struct osfi_header h;

	if (!buf || !ret_hdr)
		return -EINVAL;
	if (len != OSFI_HEADER_LEN)
		return -EMSGSIZE;
	if (memcmp(buf, OSFI_IMAGE_MAGIC, 4) != 0)
		return -EBADMSG;

	h.format = osfi_get_le16(buf + OSFI_HDR_OFF_FORMAT);
	h.header_len = osfi_get_le16(buf + OSFI_HDR_OFF_HDRLEN);
	h.device_id = osfi_get_le16(buf + OSFI_HDR_OFF_DEVICE);
	h.area_count = osfi_get_le16(buf + OSFI_HDR_OFF_AREAS);
	h.total_len = osfi_get_le32(buf + OSFI_HDR_OFF_TOTAL);
	h.image_version = osfi_get_le32(buf + OSFI_HDR_OFF_VERSION);
	h.flags = osfi_get_le32(buf + OSFI_HDR_OFF_FLAGS);
	memcpy(h.nonce, buf + OSFI_HDR_OFF_NONCE, OSFI_NONCE_LEN);
	memcpy(h.tag, buf + OSFI_HDR_OFF_TAG, OSFI_TAG_LEN);

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
	memset(out, 0, OSFI_HEADER_LEN);
	memcpy(out, OSFI_IMAGE_MAGIC, 4);
	osfi_put_le16(out + OSFI_HDR_OFF_FORMAT, hdr->format);
	osfi_put_le16(out + OSFI_HDR_OFF_HDRLEN, hdr->header_len);
	osfi_put_le16(out + OSFI_HDR_OFF_DEVICE, hdr->device_id);
	osfi_put_le16(out + OSFI_HDR_OFF_AREAS, hdr->area_count);
	osfi_put_le32(out + OSFI_HDR_OFF_TOTAL, hdr->total_len);
	osfi_put_le32(out + OSFI_HDR_OFF_VERSION, hdr->image_version);
	osfi_put_le32(out + OSFI_HDR_OFF_FLAGS, hdr->flags);
	memcpy(out + OSFI_HDR_OFF_NONCE, hdr->nonce, OSFI_NONCE_LEN);
	memcpy(out + OSFI_HDR_OFF_TAG, hdr->tag, OSFI_TAG_LEN);
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

int osfi_desc_decode(const uint8_t *buf, size_t len, struct osfi_desc *ret_desc)
{
	struct osfi_desc d;

	if (!buf || !ret_desc)
		return -EINVAL;
	if (len != OSFI_DESC_LEN)
		return -EMSGSIZE;

	d.type = buf[OSFI_DESC_OFF_TYPE];
	d.version = osfi_get_le16(buf + OSFI_DESC_OFF_VERSION);
	d.index = osfi_get_le16(buf + OSFI_DESC_OFF_INDEX);
	d.total = osfi_get_le16(buf + OSFI_DESC_OFF_TOTAL);
	d.size = osfi_get_le32(buf + OSFI_DESC_OFF_SIZE);
	d.address = osfi_get_le32(buf + OSFI_DESC_OFF_ADDR);
	d.module_id = osfi_get_le32(buf + OSFI_DESC_OFF_MODULE);
	memcpy(d.tag, buf + OSFI_DESC_OFF_TAG, OSFI_TAG_LEN);

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
	memset(out, 0, OSFI_DESC_LEN);
	out[OSFI_DESC_OFF_TYPE] = desc->type;
	osfi_put_le16(out + OSFI_DESC_OFF_VERSION, desc->version);
	osfi_put_le16(out + OSFI_DESC_OFF_INDEX, desc->index);
	osfi_put_le16(out + OSFI_DESC_OFF_TOTAL, desc->total);
	osfi_put_le32(out + OSFI_DESC_OFF_SIZE, desc->size);
	osfi_put_le32(out + OSFI_DESC_OFF_ADDR, desc->address);
	osfi_put_le32(out + OSFI_DESC_OFF_MODULE, desc->module_id);
	memcpy(out + OSFI_DESC_OFF_TAG, desc->tag, OSFI_TAG_LEN);
}

void osfi_image_id(const uint8_t header[OSFI_HEADER_LEN], uint8_t ret_id[OSFI_ID_LEN])
{
	SHA256(header, OSFI_HEADER_LEN, ret_id);
}

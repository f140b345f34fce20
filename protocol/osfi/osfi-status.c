/* Sub-command payloads, status codes and their operator messages (docs/protocol.md §5, §6). */
#include <errno.h>
#include <string.h>

#include "osfi.h"
#include "osfi-util.h"

int osfi_info_decode(const uint8_t *buf, size_t len, struct osfi_info *ret_info)
{
	struct osfi_info i;

	if (!buf || !ret_info)
		return -EINVAL;
	if (len != OSFI_INFO_LEN && len != OSFI_INFO_LEN_SHORT)
		return -EMSGSIZE;
	if (buf[3] != 0 || buf[18] != 0 || buf[19] != 0)
		return -EBADMSG;
	i.product_state = buf[0];
	i.osfi_version = buf[1];
	i.session_state = buf[2];
	i.ram_buffer = osfi_get_le32(buf + 4);
	i.last_status = osfi_get_le16(buf + 8);
	i.areas_done = osfi_get_le16(buf + 10);
	i.stream_bytes = osfi_get_le32(buf + 12);
	i.device_id = osfi_get_le16(buf + 16);
	memcpy(i.uid, buf + 20, OSFI_UID_LEN);
	if (len == OSFI_INFO_LEN)
		memcpy(i.installed_id, buf + OSFI_INFO_OFF_INSTALLED, OSFI_ID_LEN);
	else
		memset(i.installed_id, 0, OSFI_ID_LEN);
	*ret_info = i;
	return 0;
}

void osfi_info_encode(const struct osfi_info *info, uint8_t out[OSFI_INFO_LEN])
{
	memset(out, 0, OSFI_INFO_LEN);
	out[0] = info->product_state;
	out[1] = info->osfi_version;
	out[2] = info->session_state;
	osfi_put_le32(out + 4, info->ram_buffer);
	osfi_put_le16(out + 8, info->last_status);
	osfi_put_le16(out + 10, info->areas_done);
	osfi_put_le32(out + 12, info->stream_bytes);
	osfi_put_le16(out + 16, info->device_id);
	memcpy(out + 20, info->uid, OSFI_UID_LEN);
	memcpy(out + OSFI_INFO_OFF_INSTALLED, info->installed_id, OSFI_ID_LEN);
}

bool osfi_info_has_installed(const struct osfi_info *info)
{
	uint8_t acc = 0;

	if (!info)
		return false;
	for (size_t i = 0; i < OSFI_ID_LEN; i++)
		acc |= info->installed_id[i];
	return acc != 0;
}

bool osfi_info_installed_is(const struct osfi_info *info, const uint8_t id[OSFI_ID_LEN])
{
	return info && id && osfi_info_has_installed(info) &&
	       info->session_state == OSFI_SESSION_FINALIZED && info->last_status == OSFI_ST_OK &&
	       memcmp(info->installed_id, id, OSFI_ID_LEN) == 0;
}

void osfi_p1_encode(uint32_t v, uint8_t out[4])
{
	osfi_put_le32(out, v);
}

int osfi_p1_decode(const uint8_t *buf, size_t len, uint32_t *ret_v)
{
	if (!buf || !ret_v)
		return -EINVAL;
	if (len != 4)
		return -EMSGSIZE;
	*ret_v = osfi_get_le32(buf);
	return 0;
}

static const struct {
	const char *name;
	const char *message;
} osfi_statuses[_OSFI_ST_MAX] = {
	[OSFI_ST_OK] = { "OK", "success" },
	[OSFI_ST_BAD_STATE] = { "BAD_STATE", "chip is not in product state Open (already "
					     "programmed or locked); it cannot be installed" },
	[OSFI_ST_NOT_ERASED] = { "NOT_ERASED",
				 "target memory on the chip is not erased; erase the chip and "
				 "retry" },
	[OSFI_ST_SEQUENCE] = { "SEQUENCE", "command out of order (no session, wrong data "
					   "offset); the host aborts and restarts the chip" },
	[OSFI_ST_BAD_LENGTH] = { "BAD_LENGTH", "a request had the wrong length" },
	[OSFI_ST_LICENSE_MALFORMED] = { "LICENSE_MALFORMED", "the license record is damaged" },
	[OSFI_ST_LICENSE_WRONG_CHIP] = { "LICENSE_WRONG_CHIP",
					 "the license was issued for another chip" },
	[OSFI_ST_LICENSE_WRONG_DEVICE] = { "LICENSE_WRONG_DEVICE",
					   "the license is for another device family" },
	[OSFI_ST_LICENSE_INVALID] = { "LICENSE_INVALID",
				      "the license does not unwrap on this chip (other image, "
				      "other key, or tampered)" },
	[OSFI_ST_NO_LICENSE] = { "NO_LICENSE", "the header came before a license" },
	[OSFI_ST_HEADER_MALFORMED] = { "HEADER_MALFORMED",
				       "the image header is damaged or of an unknown version" },
	[OSFI_ST_HEADER_AUTH] = { "HEADER_AUTH", "the image header failed authentication "
						 "(tampered image or wrong key)" },
	[OSFI_ST_IMAGE_WRONG_DEVICE] = { "IMAGE_WRONG_DEVICE",
					 "the image is for another device family" },
	[OSFI_ST_IMAGE_MISMATCH] = { "IMAGE_MISMATCH",
				     "the license was issued for another image" },
	[OSFI_ST_ROLLBACK] = { "ROLLBACK",
			       "the image version is lower than the one installed before" },
	[OSFI_ST_DESCRIPTOR_MALFORMED] = { "DESCRIPTOR_MALFORMED",
					   "an area descriptor is damaged" },
	[OSFI_ST_AREA_TOO_LARGE] = { "AREA_TOO_LARGE", "an area is larger than the chip's RAM "
						       "buffer; repack the image" },
	[OSFI_ST_AREA_AUTH] = { "AREA_AUTH",
				"an area failed authentication (tampered image)" },
	[OSFI_ST_BAD_ADDRESS] = { "BAD_ADDRESS",
				  "an area targets memory outside what its type may write" },
	[OSFI_ST_FLASH_ERROR] = { "FLASH_ERROR", "programming the chip's memory failed" },
	[OSFI_ST_MODULE_LICENSE_MISSING] = { "MODULE_LICENSE_MISSING",
					     "a module area arrived without that module's "
					     "license" },
	[OSFI_ST_INCOMPLETE] = { "INCOMPLETE", "FINALIZE before the whole image was received" },
	[OSFI_ST_BAD_OPTION] = { "BAD_OPTION", "the configuration area names an unknown "
					       "register or an invalid product state" },
	[OSFI_ST_INTERNAL] = { "INTERNAL", "the chip failed internally" },
};

const char *osfi_status_name(uint16_t status)
{
	return status < _OSFI_ST_MAX ? osfi_statuses[status].name : "unknown status";
}

const char *osfi_status_message(uint16_t status)
{
	return status < _OSFI_ST_MAX ? osfi_statuses[status].message :
				       "the chip answered a status this host does not know";
}

const char *osfi_session_state_name(uint8_t state)
{
	static const char *const names[] = {
		[OSFI_SESSION_IDLE] = "idle",		[OSFI_SESSION_LICENSED] = "licensed",
		[OSFI_SESSION_STREAMING] = "streaming", [OSFI_SESSION_COMPLETE] = "complete",
		[OSFI_SESSION_FINALIZED] = "finalized", [OSFI_SESSION_FAILED] = "failed",
	};

	return state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

const char *osfi_subop_name(uint16_t subop)
{
	switch (subop) {
	case OSFI_OP_GET_INFO:
		return "GET_INFO";
	case OSFI_OP_GET_CERT:
		return "GET_CERT";
	case OSFI_OP_PUT_LICENSE:
		return "PUT_LICENSE";
	case OSFI_OP_PUT_HEADER:
		return "PUT_HEADER";
	case OSFI_OP_PUT_DATA:
		return "PUT_DATA";
	case OSFI_OP_FINALIZE:
		return "FINALIZE";
	case OSFI_OP_ABORT:
		return "ABORT";
	default:
		return "unknown";
	}
}

const char *osfi_strerror(int r)
{
	return sfi_strerror(r);
}

const char *osfi_step_to_string(enum osfi_step s)
{
	static const char *const names[_OSFI_STEP_MAX] = {
		[OSFI_STEP_GET_INFO] = "get-info",
		[OSFI_STEP_ABORT] = "abort",
		[OSFI_STEP_GET_INFO_AGAIN] = "get-info-again",
		[OSFI_STEP_GET_CERT] = "get-cert",
		[OSFI_STEP_PUT_LICENSE] = "put-license",
		[OSFI_STEP_PUT_HEADER] = "put-header",
		[OSFI_STEP_PUT_DATA] = "put-data",
		[OSFI_STEP_FINALIZE] = "finalize",
		[OSFI_STEP_RECONNECT] = "reconnect",
		[OSFI_STEP_VERIFY] = "verify",
		[OSFI_STEP_DONE] = "done",
		[OSFI_STEP_FAILED] = "failed",
	};

	return (unsigned)s < _OSFI_STEP_MAX ? names[s] : "unknown";
}

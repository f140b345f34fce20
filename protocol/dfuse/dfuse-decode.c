/* DfuSe host side: names, operator sentences, descriptor, alt string and answer decoders,
 * OSFI frames. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfuse.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

const char *dfuse_strerror(int r)
{
	return sfi_strerror(r);
}

static const char *const state_names[] = {
	[DFU_STATE_APP_IDLE] = "appIDLE",
	[DFU_STATE_APP_DETACH] = "appDETACH",
	[DFU_STATE_IDLE] = "dfuIDLE",
	[DFU_STATE_DNLOAD_SYNC] = "dfuDNLOAD-SYNC",
	[DFU_STATE_DNBUSY] = "dfuDNBUSY",
	[DFU_STATE_DNLOAD_IDLE] = "dfuDNLOAD-IDLE",
	[DFU_STATE_MANIFEST_SYNC] = "dfuMANIFEST-SYNC",
	[DFU_STATE_MANIFEST] = "dfuMANIFEST",
	[DFU_STATE_MANIFEST_WAIT_RESET] = "dfuMANIFEST-WAIT-RESET",
	[DFU_STATE_UPLOAD_IDLE] = "dfuUPLOAD-IDLE",
	[DFU_STATE_ERROR] = "dfuERROR",
};

const char *dfuse_state_name(uint8_t state)
{
	if (state >= ARRAY_SIZE(state_names))
		return "unknown state";
	return state_names[state];
}

struct status_text {
	const char *name;
	const char *sentence;
};

static const struct status_text status_texts[] = {
	[DFU_STATUS_OK] = { "OK", "no error" },
	[DFU_STATUS_ERR_TARGET] = { "errTARGET",
		"the device refused the address or memory area (not in its memory map, or "
		"protected): check the address and the chip's protection" },
	[DFU_STATUS_ERR_FILE] = { "errFILE",
		"the device refused the data as not meant for it: check the file" },
	[DFU_STATUS_ERR_WRITE] = { "errWRITE",
		"the device could not write the memory (not erased, or write-protected): erase "
		"it first or check the write protection" },
	[DFU_STATUS_ERR_ERASE] = { "errERASE",
		"the device could not erase the memory (write-protected sector?): check the "
		"protection option bytes" },
	[DFU_STATUS_ERR_CHECK_ERASED] = { "errCHECK_ERASED",
		"the memory to program is not erased (or did not read back erased after an "
		"erase): erase it first, retry, then replace the chip" },
	[DFU_STATUS_ERR_PROG] = { "errPROG",
		"programming the memory failed: retry, then replace the chip" },
	[DFU_STATUS_ERR_VERIFY] = { "errVERIFY",
		"the memory did not read back what was written: retry, then replace the chip" },
	[DFU_STATUS_ERR_ADDRESS] = { "errADDRESS",
		"the address is outside the memory the device allows: check the address and "
		"length" },
	[DFU_STATUS_ERR_NOTDONE] = { "errNOTDONE",
		"the device received an end of download it did not expect: start the transfer "
		"again" },
	[DFU_STATUS_ERR_FIRMWARE] = { "errFIRMWARE",
		"the device's firmware is corrupt and it cannot leave DFU mode: write it again" },
	[DFU_STATUS_ERR_VENDOR] = { "errVENDOR",
		"the device refused the request for its own reason (on ST's bootloader: memory "
		"protection or product state; for OSFI: the sub-command was refused)" },
	[DFU_STATUS_ERR_USBR] = { "errUSBR",
		"the device saw an unexpected USB reset: start the operation again" },
	[DFU_STATUS_ERR_POR] = { "errPOR",
		"the device saw an unexpected power-on reset: check the fixture's power and "
		"start again" },
	[DFU_STATUS_ERR_UNKNOWN] = { "errUNKNOWN",
		"the device reported an unspecified error: retry, then replace the chip" },
	[DFU_STATUS_ERR_STALLEDPKT] = { "errSTALLEDPKT",
		"the device refused a request it did not expect in its current state or "
		"could not parse: the host and device disagree, start the operation again" },
};

const char *dfuse_status_name(uint8_t status)
{
	if (status >= ARRAY_SIZE(status_texts))
		return "unknown status";
	return status_texts[status].name;
}

const char *dfuse_status_sentence(uint8_t status)
{
	if (status >= ARRAY_SIZE(status_texts))
		return "the device reported a status DFU does not define";
	return status_texts[status].sentence;
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

int dfuse_decode_status(const uint8_t *buf, size_t n, struct dfuse_status *ret)
{
	struct dfuse_status s;

	if (!buf || n != DFU_STATUS_LEN)
		return -DFUSE_E_PROTOCOL;
	s.status = buf[0];
	s.poll_ms = (uint32_t)buf[1] | (uint32_t)buf[2] << 8 | (uint32_t)buf[3] << 16;
	s.state = buf[4];
	s.istring = buf[5];
	if (s.status > DFU_STATUS_ERR_STALLEDPKT || s.state > DFU_STATE_ERROR)
		return -DFUSE_E_PROTOCOL;
	*ret = s;
	return 0;
}

int dfuse_parse_config(const uint8_t *buf, size_t n, struct dfuse_config *ret)
{
	struct dfuse_config c = { 0 };
	bool in_dfu = false;
	size_t total, off;

	if (!buf || n < USB_DT_CONFIG_LEN || buf[0] < USB_DT_CONFIG_LEN ||
	    buf[1] != USB_DT_CONFIG)
		return -DFUSE_E_PROTOCOL;
	total = get_le16(buf + 2);
	if (total < USB_DT_CONFIG_LEN || total > n)
		return -DFUSE_E_PROTOCOL;

	for (off = buf[0]; off < total;) {
		const uint8_t *d = buf + off;
		size_t len;

		if (total - off < 2)
			return -DFUSE_E_PROTOCOL;
		len = d[0];
		if (len < 2 || len > total - off)
			return -DFUSE_E_PROTOCOL;

		if (d[1] == USB_DT_INTERFACE) {
			if (len < USB_DT_INTERFACE_LEN)
				return -DFUSE_E_PROTOCOL;
			in_dfu = d[5] == USB_CLASS_APP_SPECIFIC && d[6] == USB_SUBCLASS_DFU &&
				 d[7] == USB_PROTOCOL_DFU_MODE;
			if (in_dfu) {
				if (c.n_alts == DFUSE_MAX_ALTS)
					return -DFUSE_E_PROTOCOL;
				c.alts[c.n_alts++] = (struct dfuse_alt){
					.interface = d[2], .alt = d[3], .istring = d[8],
				};
			}
		} else if (d[1] == USB_DT_DFU_FUNCTIONAL && in_dfu && !c.has_functional) {
			/* DFU 1.0 devices may end the descriptor after wTransferSize (7 bytes);
			 * a DfuSe device carries bcdDFUVersion too. */
			if (len < 7)
				return -DFUSE_E_PROTOCOL;
			c.has_functional = true;
			c.attributes = d[2];
			c.detach_timeout_ms = get_le16(d + 3);
			c.transfer_size = get_le16(d + 5);
			c.dfu_version = len >= USB_DT_DFU_FUNCTIONAL_LEN ? get_le16(d + 7) : 0x0100;
		}
		off += len;
	}

	if (c.n_alts == 0 || !c.has_functional || c.transfer_size == 0)
		return -DFUSE_E_PROTOCOL;
	*ret = c;
	return 0;
}

int dfuse_parse_device(const uint8_t *buf, size_t n, struct dfuse_device *ret)
{
	if (!buf || n < USB_DT_DEVICE_LEN || buf[0] != USB_DT_DEVICE_LEN ||
	    buf[1] != USB_DT_DEVICE)
		return -DFUSE_E_PROTOCOL;
	*ret = (struct dfuse_device){
		.vid = get_le16(buf + 8),
		.pid = get_le16(buf + 10),
		.bcd_device = get_le16(buf + 12),
		.iserial = buf[16],
		.n_configs = buf[17],
	};
	return 0;
}

int dfuse_decode_string(const uint8_t *buf, size_t n, char *out, size_t outmax)
{
	size_t len, chars;

	if (!buf || n < 2 || buf[1] != USB_DT_STRING)
		return -DFUSE_E_PROTOCOL;
	len = buf[0];
	if (len < 2 || len > n || len % 2)
		return -DFUSE_E_PROTOCOL;
	chars = (len - 2) / 2;
	if (!out || chars >= outmax)
		return -ENOBUFS;
	for (size_t i = 0; i < chars; i++) {
		uint16_t u = get_le16(buf + 2 + 2 * i);

		out[i] = (u >= 0x20 && u < 0x7f) ? (char)u : '?';
	}
	out[chars] = '\0';
	return (int)chars;
}

/* Reads an unsigned number (decimal, or hexadecimal after 0x) at *p; advances *p. */
static int parse_number(const char **p, uint64_t *ret)
{
	const char *s = *p;
	uint64_t v = 0;
	int base = 10, digits = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (;; s++, digits++) {
		int d;

		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = *s - 'a' + 10;
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = *s - 'A' + 10;
		else
			break;
		if (digits >= 10)
			return -EINVAL;
		v = v * (uint64_t)base + (uint64_t)d;
	}
	if (digits == 0)
		return -EINVAL;
	*p = s;
	*ret = v;
	return 0;
}

int dfuse_parse_layout(const char *s, struct dfuse_layout *ret)
{
	struct dfuse_layout l = { 0 };
	const char *p, *slash;
	size_t nlen;

	if (!s || s[0] != '@')
		return -EINVAL;
	slash = strchr(s, '/');
	if (!slash)
		return -EINVAL;
	nlen = (size_t)(slash - (s + 1));
	while (nlen > 0 && (s[nlen] == ' ' || s[nlen] == '\t'))
		nlen--;
	if (nlen >= sizeof(l.name))
		nlen = sizeof(l.name) - 1;
	memcpy(l.name, s + 1, nlen);

	p = slash;
	while (*p == '/') {
		uint64_t addr;

		p++;
		if (parse_number(&p, &addr) < 0 || addr > UINT32_MAX || *p != '/')
			return -EINVAL;
		p++;
		for (;;) {
			uint64_t count, size, bytes;
			uint8_t letter;

			if (parse_number(&p, &count) < 0 || *p != '*')
				return -EINVAL;
			p++;
			if (parse_number(&p, &size) < 0)
				return -EINVAL;
			switch (*p) {
			case 'K':
				size *= 1024;
				p++;
				break;
			case 'M':
				size *= 1024 * 1024;
				p++;
				break;
			case 'B':
			case ' ':
				p++;
				break;
			default:
				break;
			}
			letter = (uint8_t)*p;
			if (letter < 'a' || letter > 'g')
				return -EINVAL;
			p++;
			bytes = count * size;
			if (count == 0 || size == 0 || size > UINT32_MAX ||
			    addr + bytes > (uint64_t)UINT32_MAX + 1 ||
			    l.n_segments == DFUSE_MAX_SEGMENTS)
				return -EINVAL;
			l.seg[l.n_segments++] = (struct dfuse_segment){
				.start = (uint32_t)addr,
				.count = (uint32_t)count,
				.sector_size = (uint32_t)size,
				.attrs = (uint8_t)(letter - 'a' + 1),
			};
			addr += bytes;
			if (*p != ',')
				break;
			p++;
		}
	}
	/* Some ROMs pad the string; anything else after the last run is malformed. */
	while (*p == ' ')
		p++;
	if (*p != '\0' || l.n_segments == 0)
		return -EINVAL;
	*ret = l;
	return 0;
}

const struct dfuse_segment *dfuse_layout_find(const struct dfuse_layout *l, uint32_t addr,
					      uint32_t *ret_sector_start)
{
	for (unsigned i = 0; i < l->n_segments; i++) {
		const struct dfuse_segment *g = &l->seg[i];
		uint64_t off = (uint64_t)addr - g->start;

		if (addr < g->start || off >= (uint64_t)g->count * g->sector_size)
			continue;
		if (ret_sector_start)
			*ret_sector_start = g->start + (uint32_t)(off - off % g->sector_size);
		return g;
	}
	return NULL;
}

bool dfuse_layout_covers(const struct dfuse_layout *l, uint32_t addr, uint32_t len,
			 uint8_t attrs)
{
	uint64_t a = addr, end = (uint64_t)addr + len;

	while (a < end) {
		const struct dfuse_segment *g = dfuse_layout_find(l, (uint32_t)a, NULL);

		if (!g || (g->attrs & attrs) != attrs)
			return false;
		a = (uint64_t)g->start + (uint64_t)g->count * g->sector_size;
	}
	return true;
}

int dfuse_decode_commands(const uint8_t *buf, size_t n, struct dfuse_commands *ret)
{
	struct dfuse_commands c;

	if (!buf || n == 0 || n > sizeof(c.codes) || buf[0] != DFUSE_CMD_GET)
		return -DFUSE_E_PROTOCOL;
	c.n = (uint8_t)n;
	memcpy(c.codes, buf, n);
	*ret = c;
	return 0;
}

bool dfuse_commands_has(const struct dfuse_commands *c, uint8_t code)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->codes[i] == code)
			return true;
	return false;
}

int dfuse_osfi_encode_request(uint16_t subop, const uint8_t *p1, size_t n1, const uint8_t *p2,
			      size_t n2, uint8_t *out, size_t outmax)
{
	size_t total;

	if (n1 > 0xffff || (n1 && !p1) || (n2 && !p2) || !out)
		return -EINVAL;
	total = DFUSE_OSFI_REQ_HDR + n1 + n2;
	if (total > outmax || total > INT32_MAX)
		return -ENOBUFS;
	out[0] = (uint8_t)subop;
	out[1] = (uint8_t)(subop >> 8);
	out[2] = (uint8_t)n1;
	out[3] = (uint8_t)(n1 >> 8);
	if (n1)
		memcpy(out + DFUSE_OSFI_REQ_HDR, p1, n1);
	if (n2)
		memcpy(out + DFUSE_OSFI_REQ_HDR + n1, p2, n2);
	return (int)total;
}

int dfuse_osfi_decode_answer(const uint8_t *buf, size_t n, uint16_t *ret_status,
			     const uint8_t **ret_data, size_t *ret_len)
{
	if (!buf || n < DFUSE_OSFI_ANSWER_HDR)
		return -DFUSE_E_PROTOCOL;
	*ret_status = get_le16(buf);
	*ret_data = buf + DFUSE_OSFI_ANSWER_HDR;
	*ret_len = n - DFUSE_OSFI_ANSWER_HDR;
	return 0;
}

size_t dfuse_osfi_max_chunk(uint16_t transfer_size)
{
	size_t room = DFUSE_OSFI_REQ_HDR + DFUSE_OSFI_DATA_P1;

	if (transfer_size <= room)
		return 0;
	room = transfer_size - room;
	return room > 1024 ? 1024 : room;
}

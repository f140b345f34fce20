/* Fuzzes the DfuSe host's handling of what a device sends: configuration, device and
 * string descriptors, alt strings (memory layouts), GETSTATUS answers, Get command lists,
 * uploads and OSFI answers. The first byte picks a parser or an engine operation; for an
 * operation every control transfer takes its outcome and answer from the input. The engine
 * must end (done or a clean error) without reading or writing out of bounds and without
 * asking for more than it bounds (wLength, waits). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dfuse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse_all(const uint8_t *data, size_t size)
{
	struct dfuse_config c;
	struct dfuse_device d;
	struct dfuse_status s;
	struct dfuse_commands cmds;
	struct dfuse_layout l;
	char str[128], text[256];
	const uint8_t *ans;
	uint16_t st;
	size_t n;

	(void)dfuse_parse_config(data, size, &c);
	(void)dfuse_parse_device(data, size, &d);
	(void)dfuse_decode_status(data, size, &s);
	if (dfuse_decode_commands(data, size, &cmds) == 0)
		(void)dfuse_commands_has(&cmds, DFUSE_CMD_ERASE);
	(void)dfuse_decode_string(data, size, str, sizeof(str));
	(void)dfuse_osfi_decode_answer(data, size, &st, &ans, &n);

	n = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
	memcpy(text, data, n);
	text[n] = '\0';
	if (dfuse_parse_layout(text, &l) == 0) {
		uint32_t start;

		(void)dfuse_layout_find(&l, 0x08001234, &start);
		(void)dfuse_layout_covers(&l, 0x08000000, 0x10000, DFUSE_MEM_WRITABLE);
	}
}

/* Reads one byte of the input, 0 when exhausted. */
static uint8_t take(const uint8_t *data, size_t size, size_t *off)
{
	return *off < size ? data[(*off)++] : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[DFUSE_TRANSFER_MAX * 4], img[DFUSE_TRANSFER_MAX * 4];
	static uint8_t in[DFUSE_TRANSFER_MAX];
	static struct dfuse_xfer x;
	struct dfuse_timeouts t;
	struct dfuse_io io;
	enum dfuse_next nx;
	uint16_t ts;
	size_t off = 2, steps = 0;
	uint8_t sel;
	char why[256];

	parse_all(data, size);
	if (size < 2)
		return 0;
	sel = data[0];
	ts = (uint16_t)(((data[1] & 0x1f) + 1) * 64);
	dfuse_timeouts_default(&t);
	t.mass_erase_ms = 2000;
	t.osfi_ms = 2000;

	switch (sel % 9) {
	case 0:
		dfuse_xfer_idle(&x, &t);
		break;
	case 1:
		dfuse_xfer_commands(&x, &t, ts);
		break;
	case 2:
		dfuse_xfer_erase_page(&x, &t, 0x08002000);
		break;
	case 3:
		dfuse_xfer_mass_erase(&x, &t);
		break;
	case 4:
		dfuse_xfer_read(&x, &t, ts, 0x08000000, out, (size_t)(sel >> 4) * 300 + 1);
		break;
	case 5:
		dfuse_xfer_write(&x, &t, ts, 0x08000000, img, (size_t)(sel >> 4) * 300 + 1);
		break;
	case 6:
		dfuse_xfer_leave(&x, &t, sel & 0x10, 0x08000000);
		break;
	case 7:
		dfuse_xfer_osfi(&x, &t, ts, sel & 0x10, 0x5300, NULL, 0, NULL, 0, true, out,
				(size_t)(sel >> 5) * 40);
		break;
	default:
		dfuse_xfer_osfi(&x, &t, ts, sel & 0x10, 0x5304, img, 4, img + 4,
				dfuse_osfi_max_chunk(ts), false, NULL, 0);
		break;
	}

	while ((nx = dfuse_xfer_next(&x, &io)) == DFUSE_NEXT_CONTROL || nx == DFUSE_NEXT_WAIT) {
		uint8_t ctl, len;
		size_t n;
		int r;

		if (++steps > 100000)
			abort();	/* the engine must bound its own loops */
		if (nx == DFUSE_NEXT_WAIT) {
			if (io.wait_ms > 0xffffff)
				abort();
			if (take(data, size, &off) == 0xee)
				dfuse_xfer_gone(&x);
			else
				dfuse_xfer_waited(&x);
			continue;
		}
		if (io.ctl.length > DFUSE_TRANSFER_MAX ||
		    (io.ctl.request_type == DFU_REQTYPE_OUT && io.ctl.length && !io.ctl.data))
			abort();
		if (io.ctl.request_type == DFU_REQTYPE_OUT && io.ctl.length)
			(void)io.ctl.data[io.ctl.length - 1];	/* the bytes must be readable */
		if (off >= size) {
			/* Input exhausted: the device stops answering. */
			dfuse_xfer_control_done(&x, -DFUSE_E_TIMEOUT, NULL, 0);
			continue;
		}
		ctl = take(data, size, &off);
		switch (ctl & 7) {
		case 0:
			r = -DFUSE_E_STALL;
			break;
		case 1:
			r = -DFUSE_E_TIMEOUT;
			break;
		case 2:
			r = -DFUSE_E_GONE;
			break;
		default:
			r = 0;
			break;
		}
		n = 0;
		if (r == 0 && io.ctl.request_type == DFU_REQTYPE_IN) {
			/* A GETSTATUS answer is usually 6 bytes; other answers as long as asked,
			 * or as long as the input says (possibly more than asked). */
			len = take(data, size, &off);
			if (io.ctl.request == DFU_REQ_GETSTATUS && (ctl & 0x08))
				n = DFU_STATUS_LEN;
			else if (ctl & 0x10)
				n = io.ctl.length;
			else
				n = len;
			if (n > sizeof(in))
				n = sizeof(in);
			for (size_t i = 0; i < n; i++)
				in[i] = take(data, size, &off);
		}
		dfuse_xfer_control_done(&x, r, in, n);
	}
	dfuse_xfer_describe(&x, why, sizeof(why));
	return 0;
}

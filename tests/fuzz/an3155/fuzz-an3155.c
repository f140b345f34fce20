/* Fuzzes the host's answer handling: the first byte picks a command (and chunking), the
 * rest is what the "chip" sends. The engine must end (done or a clean error) without reading
 * or writing out of bounds, and always make progress on the bytes it is given. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "an3155.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_all(const uint8_t *data, size_t size)
{
	struct an3155_get_info g;
	struct an3155_version_info v;
	uint32_t pid;

	if (an3155_decode_get(data, size, &g) == 0 && g.n_cmds > 0)
		(void)an3155_get_has(&g, data[size - 1]);
	(void)an3155_decode_get_version(data, size, &v);
	(void)an3155_decode_get_id(data, size, &pid);
	if (size > 0)
		(void)an3155_check_xor(data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t pages[4] = { 0, 1, 2, 3 };
	static uint8_t blob[AN3155_XSPECIAL_MAX_DATA];
	static struct an3155_xfer x;
	struct an3155_timeouts t;
	uint8_t out[AN3155_SPECIAL_MAX_ANSWER], sel, chunk;
	struct an3155_io io;
	size_t off = 2, out_max;
	int steps = 0;

	decode_all(data, size);
	if (size < 2)
		return 0;
	sel = data[0];
	chunk = data[1] & 0x0f;	/* 0: all that is wanted */
	out_max = (size_t)(data[1] >> 4) * 64 + 1;
	an3155_timeouts_default(&t);

	switch (sel % 14) {
	case 0:
		an3155_xfer_sync(&x, &t);
		break;
	case 1:
		an3155_xfer_get(&x, &t);
		break;
	case 2:
		an3155_xfer_get_version(&x, &t);
		break;
	case 3:
		an3155_xfer_get_id(&x, &t);
		break;
	case 4:
		an3155_xfer_read_memory(&x, &t, 0x08000000, out, (size_t)(sel >> 4) * 16 + 1);
		break;
	case 5:
		an3155_xfer_write_memory(&x, &t, 0x08000000, blob, 256);
		break;
	case 6:
		an3155_xfer_erase_special(&x, &t, AN3155_ERASE_MASS);
		break;
	case 7:
		an3155_xfer_erase_pages(&x, &t, pages, 4);
		break;
	case 8:
		an3155_xfer_go(&x, &t, 0x08000000);
		break;
	case 9:
		an3155_xfer_write_protect(&x, &t, blob, 4);
		break;
	case 10:
		an3155_xfer_write_unprotect(&x, &t);
		break;
	case 11:
		an3155_xfer_special(&x, &t, 0x0102, blob, 128, out, out_max);
		break;
	case 12:
		an3155_xfer_special(&x, &t, 0x0102, NULL, 0, out, sizeof(out));
		break;
	default:
		an3155_xfer_xspecial(&x, &t, 0x0203, blob, 128, blob, 1024);
		break;
	}

	for (;;) {
		size_t n, used;

		if (++steps > 100000)
			abort(); /* the engine must always progress */
		switch (an3155_xfer_next(&x, &io)) {
		case AN3155_NEXT_DONE:
			(void)an3155_xfer_get_info(&x);
			if (an3155_xfer_answer_len(&x) > sizeof(out))
				abort();
			return 0;
		case AN3155_NEXT_FAILED:
			if (an3155_xfer_result(&x) >= 0)
				abort();
			char msg[160];
			an3155_xfer_describe(&x, msg, sizeof(msg));
			return 0;
		case AN3155_NEXT_IO:
			break;
		}
		if (io.tx_len > 0) {
			an3155_xfer_wrote(&x, io.tx_len);
			continue;
		}
		if (io.rx_want == 0)
			abort();
		if (off >= size) {
			an3155_xfer_timeout(&x);
			continue;
		}
		n = size - off;
		if (chunk && n > chunk)
			n = chunk;
		used = an3155_xfer_feed(&x, data + off, n);
		if (used > n)
			abort();
		if (used == 0 && an3155_xfer_result(&x) == 1)
			abort();
		off += used;
	}
}

/* AN3155 encoders, decoders and transaction engine, driven by scripted chip answers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "an3155.h"

#define ACK AN3155_ACK
#define NACK AN3155_NACK

/* ---- Encoders ---- */

static void test_encode_basic(void **state)
{
	uint8_t b[8];

	assert_int_equal(an3155_encode_command(0x31, b, sizeof(b)), 2);
	assert_int_equal(b[0], 0x31);
	assert_int_equal(b[1], 0xce);
	assert_int_equal(an3155_encode_command(0x31, b, 1), -ENOBUFS);

	assert_int_equal(an3155_encode_address(0x08fff800, b, sizeof(b)), 5);
	assert_memory_equal(b, ((uint8_t[]){ 0x08, 0xff, 0xf8, 0x00, 0x08 ^ 0xff ^ 0xf8 }), 5);
	assert_int_equal(an3155_encode_address(0, b, 4), -ENOBUFS);

	assert_int_equal(an3155_encode_read_count(256, b, sizeof(b)), 2);
	assert_memory_equal(b, ((uint8_t[]){ 0xff, 0x00 }), 2);
	assert_int_equal(an3155_encode_read_count(1, b, sizeof(b)), 2);
	assert_memory_equal(b, ((uint8_t[]){ 0x00, 0xff }), 2);
	assert_int_equal(an3155_encode_read_count(0, b, sizeof(b)), -EINVAL);
	assert_int_equal(an3155_encode_read_count(257, b, sizeof(b)), -EINVAL);

	assert_int_equal(an3155_encode_subop(0x0102, b, sizeof(b)), 3);
	assert_memory_equal(b, ((uint8_t[]){ 0x01, 0x02, 0x03 }), 3);
	assert_int_equal(an3155_encode_subop(1, b, 2), -ENOBUFS);
}

static void test_encode_write_block(void **state)
{
	uint8_t data[256], out[260];
	int n;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);

	/* 5 bytes: padded to 8 with 0xFF, N-1 = 7. */
	n = an3155_encode_write_block(data, 5, out, sizeof(out));
	assert_int_equal(n, 10);
	assert_int_equal(out[0], 7);
	assert_memory_equal(out + 1, data, 5);
	assert_memory_equal(out + 6, ((uint8_t[]){ 0xff, 0xff, 0xff }), 3);
	assert_int_equal(out[9], an3155_xor(out, 9));
	assert_int_equal(an3155_check_xor(out, (size_t)n), 0);

	/* Full block: N-1 = 0xFF, no padding. */
	n = an3155_encode_write_block(data, 256, out, sizeof(out));
	assert_int_equal(n, 258);
	assert_int_equal(out[0], 0xff);
	assert_int_equal(an3155_check_xor(out, 258), 0);
	out[100] ^= 1;
	assert_int_equal(an3155_check_xor(out, 258), -AN3155_E_CHECKSUM);

	/* Already a multiple of 4. */
	assert_int_equal(an3155_encode_write_block(data, 8, out, sizeof(out)), 10);
	assert_int_equal(out[0], 7);

	assert_int_equal(an3155_encode_write_block(data, 0, out, sizeof(out)), -EINVAL);
	assert_int_equal(an3155_encode_write_block(data, 257, out, sizeof(out)), -EINVAL);
	assert_int_equal(an3155_encode_write_block(NULL, 4, out, sizeof(out)), -EINVAL);
	assert_int_equal(an3155_encode_write_block(data, 5, out, 9), -ENOBUFS);
	assert_int_equal(an3155_check_xor(out, 0), -EINVAL);
}

static void test_encode_erase(void **state)
{
	uint8_t out[600];
	uint16_t pages[300];

	assert_int_equal(an3155_encode_erase_special(AN3155_ERASE_MASS, out, sizeof(out)), 3);
	assert_memory_equal(out, ((uint8_t[]){ 0xff, 0xff, 0x00 }), 3);
	assert_int_equal(an3155_encode_erase_special(AN3155_ERASE_BANK1, out, sizeof(out)), 3);
	assert_memory_equal(out, ((uint8_t[]){ 0xff, 0xfe, 0x01 }), 3);
	assert_int_equal(an3155_encode_erase_special(AN3155_ERASE_BANK2, out, sizeof(out)), 3);
	assert_memory_equal(out, ((uint8_t[]){ 0xff, 0xfd, 0x02 }), 3);
	assert_int_equal(an3155_encode_erase_special(0x0005, out, sizeof(out)), -EINVAL);

	pages[0] = 0;
	pages[1] = 1;
	pages[2] = 0x0102;
	assert_int_equal(an3155_encode_erase_pages(pages, 3, out, sizeof(out)), 9);
	assert_memory_equal(out, ((uint8_t[]){ 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02,
					       0x02 ^ 0x01 ^ 0x01 ^ 0x02 }),
			    9);
	assert_int_equal(an3155_check_xor(out, 9), 0);

	for (size_t i = 0; i < 300; i++)
		pages[i] = (uint16_t)i;
	assert_int_equal(an3155_encode_erase_pages(pages, 256, out, sizeof(out)), 515);
	assert_int_equal(out[0], 0x00);
	assert_int_equal(out[1], 0xff);
	assert_int_equal(an3155_encode_erase_pages(pages, 257, out, sizeof(out)), -EINVAL);
	assert_int_equal(an3155_encode_erase_pages(pages, 0, out, sizeof(out)), -EINVAL);
	assert_int_equal(an3155_encode_erase_pages(pages, 3, out, 8), -ENOBUFS);
	pages[1] = 0xfff0;
	assert_int_equal(an3155_encode_erase_pages(pages, 3, out, sizeof(out)), -EINVAL);
}

static void test_encode_wp_packet(void **state)
{
	uint8_t out[1100], data[1024], sectors[3] = { 0, 4, 9 };

	assert_int_equal(an3155_encode_write_protect(sectors, 3, out, sizeof(out)), 5);
	assert_memory_equal(out, ((uint8_t[]){ 2, 0, 4, 9, 2 ^ 4 ^ 9 }), 5);
	assert_int_equal(an3155_encode_write_protect(sectors, 0, out, sizeof(out)), -EINVAL);

	memset(data, 0x5a, sizeof(data));
	assert_int_equal(an3155_encode_packet(data, 128, 128, out, sizeof(out)), 131);
	assert_int_equal(out[0], 0x00);
	assert_int_equal(out[1], 0x80);
	assert_int_equal(an3155_check_xor(out, 131), 0);
	assert_int_equal(an3155_encode_packet(data, 129, 128, out, sizeof(out)), -EINVAL);
	assert_int_equal(an3155_encode_packet(data, 1024, 1024, out, sizeof(out)), 1027);
	assert_int_equal(out[0], 0x04);
	assert_int_equal(out[1], 0x00);
	assert_int_equal(an3155_check_xor(out, 1027), 0);
	assert_int_equal(an3155_encode_packet(NULL, 0, 128, out, sizeof(out)), 3);
	assert_memory_equal(out, ((uint8_t[]){ 0, 0, 0 }), 3);
	assert_int_equal(an3155_encode_packet(data, 10, 128, out, 12), -ENOBUFS);
}

/* ---- Decoders ---- */

static const uint8_t h5_get[] = { 0x0a, 0x40, 0x00, 0x01, 0x02, 0x11, 0x21,
				  0x31, 0x44, 0x50, 0x63, 0x73 };

static void test_decode(void **state)
{
	struct an3155_get_info g;
	struct an3155_version_info v;
	uint32_t pid;

	assert_int_equal(an3155_decode_get(h5_get, sizeof(h5_get), &g), 0);
	assert_int_equal(g.version, 0x40);
	assert_int_equal(g.n_cmds, 10);
	assert_true(an3155_get_has(&g, AN3155_CMD_EXTENDED_ERASE));
	assert_true(an3155_get_has(&g, AN3155_CMD_SPECIAL));
	assert_false(an3155_get_has(&g, AN3155_CMD_EXTENDED_SPECIAL));
	assert_false(an3155_get_has(&g, AN3155_CMD_READOUT_PROTECT));
	assert_int_equal(an3155_decode_get(h5_get, sizeof(h5_get) - 1, &g), -AN3155_E_UNEXPECTED);
	assert_int_equal(an3155_decode_get(h5_get, 1, &g), -AN3155_E_UNEXPECTED);
	assert_int_equal(an3155_decode_get((uint8_t[]){ 0, 0x31 }, 2, &g), 0);
	assert_int_equal(g.n_cmds, 0);
	assert_false(an3155_get_has(&g, 0));

	assert_int_equal(an3155_decode_get_version((uint8_t[]){ 0x40, 0, 0 }, 3, &v), 0);
	assert_int_equal(v.version, 0x40);
	assert_int_equal(an3155_decode_get_version((uint8_t[]){ 0x40, 0 }, 2, &v),
			 -AN3155_E_UNEXPECTED);

	assert_int_equal(an3155_decode_get_id((uint8_t[]){ 1, 0x04, 0x84 }, 3, &pid), 0);
	assert_int_equal(pid, 0x484);
	assert_int_equal(an3155_decode_get_id((uint8_t[]){ 1, 0x04 }, 2, &pid),
			 -AN3155_E_UNEXPECTED);
	assert_int_equal(an3155_decode_get_id((uint8_t[]){ 4, 1, 2, 3, 4, 5 }, 6, &pid),
			 -AN3155_E_TOO_LONG);
}

/* ---- Engine ---- */

struct script {
	const uint8_t *dev;	/* what the chip sends, in order */
	size_t dev_len, dev_off;
	uint8_t sent[4096];	/* what the host sent */
	size_t sent_len;
	unsigned last_timeout;
	unsigned waits;		/* distinct wait ids seen */
	size_t chunk;		/* feed at most this many bytes at once (0: all wanted) */
};

/* Drives x like a driver would; the chip's bytes run out = timeout. */
static int run(struct an3155_xfer *x, struct script *s)
{
	unsigned last_id = 0;
	struct an3155_io io;

	for (int guard = 0; guard < 100000; guard++) {
		size_t n;

		switch (an3155_xfer_next(x, &io)) {
		case AN3155_NEXT_DONE:
			assert_int_equal(an3155_xfer_result(x), 0);
			return 0;
		case AN3155_NEXT_FAILED:
			assert_true(an3155_xfer_result(x) < 0);
			return an3155_xfer_result(x);
		case AN3155_NEXT_IO:
			break;
		}
		assert_int_equal(an3155_xfer_result(x), 1);
		if (io.tx_len > 0) {
			/* Partial writes must work: send in two halves. */
			size_t half = io.tx_len > 1 ? io.tx_len / 2 : 1;

			assert_true(s->sent_len + io.tx_len <= sizeof(s->sent));
			memcpy(s->sent + s->sent_len, io.tx, half);
			s->sent_len += half;
			an3155_xfer_wrote(x, half);
			continue;
		}
		assert_true(io.rx_want > 0);
		if (io.wait_id != last_id) {
			last_id = io.wait_id;
			s->waits++;
		}
		s->last_timeout = io.timeout_ms;
		if (s->dev_off == s->dev_len) {
			an3155_xfer_timeout(x);
			continue;
		}
		n = s->dev_len - s->dev_off;
		if (n > io.rx_want)
			n = io.rx_want;
		if (s->chunk && n > s->chunk)
			n = s->chunk;
		assert_int_equal(an3155_xfer_feed(x, s->dev + s->dev_off, n), n);
		s->dev_off += n;
	}
	fail_msg("engine did not finish");
	return -1;
}

#define SCRIPT(...) \
	((struct script){ .dev = (const uint8_t[]){ __VA_ARGS__ }, \
			  .dev_len = sizeof((const uint8_t[]){ __VA_ARGS__ }) })

static struct an3155_timeouts T = {
	.ack_ms = 11, .block_ms = 22, .mass_erase_ms = 33, .page_erase_ms = 44, .special_ms = 55,
};

static void test_sync(void **state)
{
	struct an3155_xfer x;
	struct script s;

	s = SCRIPT(ACK);
	an3155_xfer_sync(&x, &T);
	assert_int_equal(run(&x, &s), 0);
	assert_int_equal(s.sent_len, 1);
	assert_int_equal(s.sent[0], 0x7f);
	assert_false(an3155_xfer_was_synced(&x));
	assert_int_equal(s.last_timeout, 11);

	s = SCRIPT(NACK);
	an3155_xfer_sync(&x, &T);
	assert_int_equal(run(&x, &s), 0);
	assert_true(an3155_xfer_was_synced(&x));

	s = SCRIPT(0x00);
	an3155_xfer_sync(&x, &T);
	assert_int_equal(run(&x, &s), -AN3155_E_UNEXPECTED);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_SYNC);

	s = (struct script){};
	an3155_xfer_sync(&x, &T);
	assert_int_equal(run(&x, &s), -AN3155_E_TIMEOUT);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_SYNC);
}

static void test_get(void **state)
{
	struct an3155_xfer x;
	const struct an3155_get_info *g;
	struct script s;
	char msg[128];

	s = SCRIPT(ACK, 0x0a, 0x40, 0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x50, 0x63, 0x73,
		   ACK);
	an3155_xfer_get(&x, &T);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x00, 0xff }), 2);
	assert_int_equal(s.sent_len, 2);
	g = an3155_xfer_get_info(&x);
	assert_int_equal(g->version, 0x40);
	assert_int_equal(g->n_cmds, 10);
	assert_memory_equal(g->cmds, h5_get + 2, 10);

	/* A different list is taken as it comes, never assumed. */
	s = SCRIPT(ACK, 0x03, 0x31, 0x00, 0x11, 0x51, ACK);
	s.chunk = 1;
	an3155_xfer_get(&x, &T);
	assert_int_equal(run(&x, &s), 0);
	g = an3155_xfer_get_info(&x);
	assert_int_equal(g->version, 0x31);
	assert_int_equal(g->n_cmds, 3);
	assert_true(an3155_get_has(g, AN3155_CMD_EXTENDED_SPECIAL));
	assert_false(an3155_get_has(g, AN3155_CMD_WRITE_MEMORY));

	/* Short answer: times out in the answer. */
	s = SCRIPT(ACK, 0x0a, 0x40, 0x00);
	an3155_xfer_get(&x, &T);
	assert_int_equal(run(&x, &s), -AN3155_E_TIMEOUT);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_ANSWER);

	/* Garbage instead of the closing ACK. */
	s = SCRIPT(ACK, 0x00, 0x40, 0x55);
	an3155_xfer_get(&x, &T);
	assert_int_equal(run(&x, &s), -AN3155_E_UNEXPECTED);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_FINAL_ACK);

	s = SCRIPT(NACK);
	an3155_xfer_get(&x, &T);
	assert_int_equal(run(&x, &s), -AN3155_E_NACK);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_COMMAND);
	an3155_xfer_describe(&x, msg, sizeof(msg));
	assert_string_equal(msg, "Get: the chip refused the request (NACK) at the command step");
}

static void test_get_version_id(void **state)
{
	struct an3155_xfer x;
	struct script s;

	s = SCRIPT(ACK, 0x40, 0x00, 0x00, ACK);
	an3155_xfer_get_version(&x, &T);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x01, 0xfe }), 2);
	assert_int_equal(an3155_xfer_version_info(&x)->version, 0x40);

	s = SCRIPT(ACK, 0x01, 0x04, 0x84, ACK);
	an3155_xfer_get_id(&x, &T);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x02, 0xfd }), 2);
	assert_int_equal(an3155_xfer_pid(&x), 0x484);

	s = SCRIPT(ACK, 0x07);
	an3155_xfer_get_id(&x, &T);
	assert_int_equal(run(&x, &s), -AN3155_E_TOO_LONG);
}

static void test_read(void **state)
{
	uint8_t dev[4 + 256], out[256];
	struct an3155_xfer x;
	struct script s;

	dev[0] = dev[1] = dev[2] = ACK;
	for (size_t i = 0; i < 256; i++)
		dev[3 + i] = (uint8_t)(255 - i);
	s = (struct script){ .dev = dev, .dev_len = 3 + 256 };
	assert_int_equal(an3155_xfer_read_memory(&x, &T, 0x08000100, out, 256), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_int_equal(s.sent_len, 2 + 5 + 2);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x11, 0xee, 0x08, 0x00, 0x01, 0x00, 0x09, 0xff,
						  0x00 }),
			    9);
	assert_memory_equal(out, dev + 3, 256);
	assert_int_equal(s.last_timeout, 22);
	assert_int_equal(s.waits, 4);
	assert_false(an3155_xfer_committed(&x));

	/* Fed one byte at a time. */
	memset(out, 0, sizeof(out));
	s = (struct script){ .dev = dev, .dev_len = 3 + 16, .chunk = 1 };
	assert_int_equal(an3155_xfer_read_memory(&x, &T, 0x20000000, out, 16), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(out, dev + 3, 16);

	/* Refused address (protection). */
	s = SCRIPT(ACK, NACK);
	assert_int_equal(an3155_xfer_read_memory(&x, &T, 0x08fff800, out, 12), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_NACK);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_ADDRESS);

	/* Short data. */
	s = (struct script){ .dev = dev, .dev_len = 3 + 100 };
	assert_int_equal(an3155_xfer_read_memory(&x, &T, 0x08000000, out, 256), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_TIMEOUT);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_ANSWER);

	assert_int_equal(an3155_xfer_read_memory(&x, &T, 0, out, 0), -EINVAL);
	assert_int_equal(an3155_xfer_read_memory(&x, &T, 0, out, 257), -EINVAL);
	assert_int_equal(an3155_xfer_read_memory(&x, &T, 0, NULL, 1), -EINVAL);
}

static void test_write(void **state)
{
	uint8_t data[6] = { 1, 2, 3, 4, 5, 6 };
	struct an3155_xfer x;
	struct script s;

	s = SCRIPT(ACK, ACK, ACK);
	assert_int_equal(an3155_xfer_write_memory(&x, &T, 0x08000000, data, 6), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_int_equal(s.sent_len, 2 + 5 + 1 + 8 + 1);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x31, 0xce, 0x08, 0, 0, 0, 0x08, 7, 1, 2, 3, 4,
						  5, 6, 0xff, 0xff }),
			    16);
	assert_int_equal(an3155_check_xor(s.sent + 7, 10), 0);
	assert_int_equal(s.last_timeout, 22);
	assert_true(an3155_xfer_committed(&x));

	/* Timeout before the data went out: safe to retry. */
	s = SCRIPT(ACK);
	assert_int_equal(an3155_xfer_write_memory(&x, &T, 0x08000000, data, 6), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_TIMEOUT);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_ADDRESS);
	assert_false(an3155_xfer_committed(&x));

	/* Data refused (bad checksum or flash not erased). */
	s = SCRIPT(ACK, ACK, NACK);
	assert_int_equal(an3155_xfer_write_memory(&x, &T, 0x08000000, data, 6), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_NACK);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_DATA);
	assert_true(an3155_xfer_committed(&x));

	assert_int_equal(an3155_xfer_write_memory(&x, &T, 0, data, 0), -EINVAL);
}

static void test_erase_go(void **state)
{
	uint16_t pages[3] = { 5, 6, 7 };
	struct an3155_xfer x;
	struct script s;

	s = SCRIPT(ACK, ACK);
	assert_int_equal(an3155_xfer_erase_special(&x, &T, AN3155_ERASE_MASS), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x44, 0xbb, 0xff, 0xff, 0x00 }), 5);
	assert_int_equal(s.last_timeout, 33);

	s = SCRIPT(ACK, ACK);
	assert_int_equal(an3155_xfer_erase_special(&x, &T, AN3155_ERASE_BANK2), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent + 2, ((uint8_t[]){ 0xff, 0xfd, 0x02 }), 3);
	assert_int_equal(an3155_xfer_erase_special(&x, &T, 0x1234), -EINVAL);

	s = SCRIPT(ACK, ACK);
	assert_int_equal(an3155_xfer_erase_pages(&x, &T, pages, 3), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent + 2, ((uint8_t[]){ 0, 2, 0, 5, 0, 6, 0, 7, 2 ^ 5 ^ 6 ^ 7 }), 9);
	assert_int_equal(s.last_timeout, 3 * 44);

	s = SCRIPT(ACK, NACK);
	assert_int_equal(an3155_xfer_erase_pages(&x, &T, pages, 3), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_NACK);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_DATA);

	s = SCRIPT(ACK, ACK);
	an3155_xfer_go(&x, &T, 0x08000000);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x21, 0xde, 0x08, 0, 0, 0, 0x08 }), 7);
	assert_true(an3155_xfer_committed(&x));
}

static void test_protect(void **state)
{
	uint8_t sectors[2] = { 1, 2 };
	struct an3155_xfer x;
	struct script s;

	s = SCRIPT(ACK, ACK);
	assert_int_equal(an3155_xfer_write_protect(&x, &T, sectors, 2), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x63, 0x9c, 1, 1, 2, 1 ^ 1 ^ 2 }), 6);

	s = SCRIPT(ACK, ACK);
	an3155_xfer_write_unprotect(&x, &T);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x73, 0x8c }), 2);
	assert_int_equal(s.sent_len, 2);

	s = SCRIPT(ACK);
	an3155_xfer_write_unprotect(&x, &T);
	assert_int_equal(run(&x, &s), -AN3155_E_TIMEOUT);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_FINAL_ACK);
}

static void test_special(void **state)
{
	uint8_t req[2] = { 0xaa, 0xbb }, out[8];
	struct an3155_xfer x;
	struct script s;

	s = SCRIPT(ACK, ACK, ACK, 0x00, 0x03, 'a', 'b', 'c', 0x00, 0x02, 0x12, 0x34, ACK);
	assert_int_equal(an3155_xfer_special(&x, &T, 0x0102, req, 2, out, sizeof(out)), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x50, 0xaf, 0x01, 0x02, 0x03, 0x00, 0x02, 0xaa,
						  0xbb, 0x02 ^ 0xaa ^ 0xbb }),
			    10);
	assert_int_equal(s.sent_len, 10);
	assert_int_equal(an3155_xfer_answer_len(&x), 3);
	assert_memory_equal(out, "abc", 3);
	assert_int_equal(an3155_xfer_status(&x), 0x1234);

	/* Empty answer, one-byte status. */
	s = SCRIPT(ACK, ACK, ACK, 0x00, 0x00, 0x00, 0x01, 0x07, ACK);
	assert_int_equal(an3155_xfer_special(&x, &T, 0x0001, NULL, 0, out, sizeof(out)), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_int_equal(an3155_xfer_answer_len(&x), 0);
	assert_int_equal(an3155_xfer_status(&x), 7);

	/* Answer longer than the caller's buffer. */
	s = SCRIPT(ACK, ACK, ACK, 0x00, 0x09);
	assert_int_equal(an3155_xfer_special(&x, &T, 0x0001, NULL, 0, out, sizeof(out)), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_TOO_LONG);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_ANSWER);

	/* Status longer than two bytes. */
	s = SCRIPT(ACK, ACK, ACK, 0x00, 0x00, 0x00, 0x03);
	assert_int_equal(an3155_xfer_special(&x, &T, 0x0001, NULL, 0, out, sizeof(out)), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_TOO_LONG);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_STATUS);

	/* Unknown sub-opcode. */
	s = SCRIPT(ACK, NACK);
	assert_int_equal(an3155_xfer_special(&x, &T, 0x7777, NULL, 0, out, sizeof(out)), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_NACK);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_SUBOP);
	assert_false(an3155_xfer_committed(&x));

	assert_int_equal(an3155_xfer_special(&x, &T, 1, req, 129, out, sizeof(out)), -EINVAL);
}

static void test_xspecial(void **state)
{
	static uint8_t p2[1024];
	uint8_t p1[3] = { 9, 8, 7 };
	struct an3155_xfer x;
	struct script s;

	memset(p2, 0x11, sizeof(p2));
	s = SCRIPT(ACK, ACK, ACK, ACK, 0x00, 0x02, 0x00, 0x00, ACK);
	assert_int_equal(an3155_xfer_xspecial(&x, &T, 0x0203, p1, 3, p2, 1024), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_int_equal(s.sent_len, 2 + 3 + 6 + 1027);
	assert_memory_equal(s.sent, ((uint8_t[]){ 0x51, 0xae, 0x02, 0x03, 0x01, 0x00, 0x03, 9, 8,
						  7, 3 ^ 9 ^ 8 ^ 7, 0x04, 0x00 }),
			    13);
	assert_int_equal(an3155_check_xor(s.sent + 11, 1027), 0);
	assert_int_equal(an3155_xfer_status(&x), 0);
	assert_true(an3155_xfer_committed(&x));

	s = SCRIPT(ACK, ACK, ACK, ACK, 0x00, 0x02, 0xbe, 0xef, ACK);
	assert_int_equal(an3155_xfer_xspecial(&x, &T, 0x0203, NULL, 0, NULL, 0), 0);
	assert_int_equal(run(&x, &s), 0);
	assert_int_equal(an3155_xfer_status(&x), 0xbeef);

	/* Second packet refused. */
	s = SCRIPT(ACK, ACK, ACK, NACK);
	assert_int_equal(an3155_xfer_xspecial(&x, &T, 0x0203, p1, 3, p2, 10), 0);
	assert_int_equal(run(&x, &s), -AN3155_E_NACK);
	assert_int_equal(an3155_xfer_step(&x), AN3155_STEP_PACKET2);

	assert_int_equal(an3155_xfer_xspecial(&x, &T, 1, p1, 3, p2, 1025), -EINVAL);
}

static void test_engine_misuse(void **state)
{
	struct an3155_xfer x;
	struct an3155_io io;
	uint8_t b = ACK;

	/* Bytes while the request is still being sent: out of turn. */
	an3155_xfer_get(&x, &T);
	assert_int_equal(an3155_xfer_next(&x, &io), AN3155_NEXT_IO);
	assert_int_equal(io.tx_len, 2);
	assert_int_equal(an3155_xfer_feed(&x, &b, 1), 0);
	assert_int_equal(an3155_xfer_result(&x), -AN3155_E_UNEXPECTED);
	assert_int_equal(an3155_xfer_next(&x, &io), AN3155_NEXT_FAILED);

	/* The port vanished. */
	an3155_xfer_get(&x, &T);
	an3155_xfer_wrote(&x, 2);
	an3155_xfer_port_gone(&x);
	assert_int_equal(an3155_xfer_result(&x), -AN3155_E_PORT_GONE);
	/* Later events do not change the outcome. */
	an3155_xfer_timeout(&x);
	assert_int_equal(an3155_xfer_result(&x), -AN3155_E_PORT_GONE);
	assert_int_equal(an3155_xfer_feed(&x, &b, 1), 0);

	/* Extra bytes beyond what is awaited are left to the driver. */
	an3155_xfer_sync(&x, &T);
	an3155_xfer_wrote(&x, 1);
	assert_int_equal(an3155_xfer_feed(&x, (uint8_t[]){ ACK, ACK }, 2), 1);
	assert_int_equal(an3155_xfer_result(&x), 0);

	/* Default timeouts when none are given. */
	an3155_xfer_sync(&x, NULL);
	assert_int_equal(an3155_xfer_next(&x, &io), AN3155_NEXT_IO);
	assert_int_equal(io.timeout_ms, 1000);
}

static void test_strings(void **state)
{
	assert_string_equal(an3155_strerror(-AN3155_E_TIMEOUT), "no answer from the chip in time");
	assert_string_equal(an3155_strerror(-AN3155_E_PORT_GONE), "the serial port is gone");
	assert_string_equal(an3155_strerror(-ENOENT), strerror(ENOENT));
	for (int e = AN3155_E_NACK; e < _AN3155_E_MAX; e++)
		assert_non_null(an3155_strerror(-e));
	for (int s = 0; s < _AN3155_STEP_MAX; s++)
		assert_string_not_equal(an3155_step_to_string(s), "unknown step");
	assert_string_equal(an3155_command_to_string(0x31), "Write Memory");
	assert_string_equal(an3155_command_to_string(0xee), "unknown command");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encode_basic),
		cmocka_unit_test(test_encode_write_block),
		cmocka_unit_test(test_encode_erase),
		cmocka_unit_test(test_encode_wp_packet),
		cmocka_unit_test(test_decode),
		cmocka_unit_test(test_sync),
		cmocka_unit_test(test_get),
		cmocka_unit_test(test_get_version_id),
		cmocka_unit_test(test_read),
		cmocka_unit_test(test_write),
		cmocka_unit_test(test_erase_go),
		cmocka_unit_test(test_protect),
		cmocka_unit_test(test_special),
		cmocka_unit_test(test_xspecial),
		cmocka_unit_test(test_engine_misuse),
		cmocka_unit_test(test_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

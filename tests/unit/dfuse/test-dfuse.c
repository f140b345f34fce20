/* DfuSe decoders and transaction engine, driven against a small DfuSe device written here
 * from AN3156 (memory, address pointer, commands run at GETSTATUS, dfuERROR) and an OSFI
 * alt as docs/protocol.md §11 describes it, with faults to inject. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dfuse.h"

/* ---- The fake device ---- */

#define MEM_BASE 0x08000000u
#define MEM_SIZE (64u * 1024)
#define SECTOR 8192u

struct dev {
	uint8_t mem[MEM_SIZE];
	uint8_t state, status;
	uint32_t pointer;
	uint8_t pending[DFUSE_TRANSFER_MAX];
	size_t pending_len;
	uint16_t pending_block;
	bool has_pending;
	unsigned busy_polls;	/* GETSTATUS answers of dfuDNBUSY left for the pending work */
	uint32_t poll_ms;	/* bwPollTimeout answered while busy */
	uint16_t ts;
	bool osfi_alt;

	/* faults */
	int stall_dnload_block;	/* stall the DNLOAD of this block (-1: none) */
	int error_block;	/* dfuERROR errWRITE at this block's GETSTATUS (-1: none) */
	bool busy_forever;
	bool gone_after_leave;
	bool gone;
	bool short_upload;	/* data UPLOADs answer one byte less */

	/* OSFI alt: answer kept for UPLOAD */
	uint8_t answer[DFUSE_TRANSFER_MAX];
	size_t answer_len;
	uint16_t refuse_subop;	/* answer status 0x0007 to this sub-opcode (0: none) */

	/* counters */
	unsigned n_control, n_getstatus, n_waits, n_clrstatus, n_abort;
	uint64_t waited_ms;
	bool left;
};

static void dev_init(struct dev *d)
{
	memset(d, 0, sizeof(*d));
	memset(d->mem, 0xff, sizeof(d->mem));
	d->state = DFU_STATE_IDLE;
	d->ts = 1024;
	d->poll_ms = 3;
	d->busy_polls = 1;
	d->stall_dnload_block = -1;
	d->error_block = -1;
}

static bool in_mem(uint32_t a, size_t n)
{
	return a >= MEM_BASE && (uint64_t)a + n <= (uint64_t)MEM_BASE + MEM_SIZE;
}

static void dev_error(struct dev *d, uint8_t status)
{
	d->state = DFU_STATE_ERROR;
	d->status = status;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Runs the DNLOAD received before this GETSTATUS. */
static void dev_run(struct dev *d)
{
	const uint8_t *p = d->pending;

	d->has_pending = false;
	if (d->osfi_alt) {
		uint16_t subop = (uint16_t)(p[0] | p[1] << 8), st = 0;

		d->answer_len = 0;
		if (subop == d->refuse_subop)
			st = 0x0007;
		d->answer[0] = (uint8_t)st;
		d->answer[1] = (uint8_t)(st >> 8);
		d->answer_len = 2;
		if (st == 0 && subop == 0x5300) {	/* GET_INFO: 64 bytes of 0xA5 */
			memset(d->answer + 2, 0xa5, 64);
			d->answer_len += 64;
		}
		if (st)
			dev_error(d, DFU_STATUS_ERR_VENDOR);
		else
			d->state = DFU_STATE_DNLOAD_IDLE;
		return;
	}
	if (d->pending_block == 0) {
		if (d->pending_len == 5 && p[0] == DFUSE_CMD_SET_ADDRESS) {
			d->pointer = le32(p + 1);
		} else if (d->pending_len == 5 && p[0] == DFUSE_CMD_ERASE) {
			uint32_t a = le32(p + 1);

			if (!in_mem(a, 1)) {
				dev_error(d, DFU_STATUS_ERR_TARGET);
				return;
			}
			a -= (a - MEM_BASE) % SECTOR;
			memset(d->mem + (a - MEM_BASE), 0xff, SECTOR);
		} else if (d->pending_len == 1 && p[0] == DFUSE_CMD_ERASE) {
			memset(d->mem, 0xff, sizeof(d->mem));
		} else {
			dev_error(d, DFU_STATUS_ERR_STALLEDPKT);
			return;
		}
	} else {
		uint32_t a = (uint32_t)(d->pending_block - 2) * d->ts + d->pointer;

		if ((int)d->pending_block == d->error_block) {
			dev_error(d, DFU_STATUS_ERR_WRITE);
			return;
		}
		if (!in_mem(a, d->pending_len)) {
			dev_error(d, DFU_STATUS_ERR_TARGET);
			return;
		}
		for (size_t i = 0; i < d->pending_len; i++)
			d->mem[a - MEM_BASE + i] &= p[i];
	}
	d->state = DFU_STATE_DNLOAD_IDLE;
}

/* One control transfer. Returns 0, -DFUSE_E_STALL or -DFUSE_E_GONE; *ret_n for IN. */
static int dev_control(struct dev *d, const struct dfuse_control *c, uint8_t *in, size_t *ret_n)
{
	*ret_n = 0;
	d->n_control++;
	if (d->gone)
		return -DFUSE_E_GONE;
	switch (c->request) {
	case DFU_REQ_GETSTATUS:
		d->n_getstatus++;
		if (d->has_pending && d->state == DFU_STATE_DNLOAD_SYNC) {
			d->state = DFU_STATE_DNBUSY;
		} else if (d->state == DFU_STATE_DNBUSY) {
			if (d->busy_forever || d->busy_polls-- > 1) {
				/* still busy */
			} else {
				dev_run(d);
			}
		} else if (d->left) {
			d->state = DFU_STATE_MANIFEST;
			if (d->gone_after_leave)
				d->gone = true;
		}
		in[0] = d->status;
		in[1] = (uint8_t)d->poll_ms;
		in[2] = (uint8_t)(d->poll_ms >> 8);
		in[3] = (uint8_t)(d->poll_ms >> 16);
		in[4] = d->state;
		in[5] = 0;
		*ret_n = 6;
		return 0;
	case DFU_REQ_CLRSTATUS:
		d->n_clrstatus++;
		if (d->state != DFU_STATE_ERROR)
			goto stall;
		d->state = DFU_STATE_IDLE;
		d->status = DFU_STATUS_OK;
		return 0;
	case DFU_REQ_ABORT:
		d->n_abort++;
		if (d->state != DFU_STATE_IDLE && d->state != DFU_STATE_DNLOAD_IDLE &&
		    d->state != DFU_STATE_UPLOAD_IDLE)
			goto stall;
		d->state = DFU_STATE_IDLE;
		return 0;
	case DFU_REQ_DNLOAD:
		if (d->state != DFU_STATE_IDLE && d->state != DFU_STATE_DNLOAD_IDLE)
			goto stall;
		if ((int)c->value == d->stall_dnload_block)
			goto stall;
		if (c->length == 0) {
			d->left = true;
			d->state = DFU_STATE_MANIFEST_SYNC;
			return 0;
		}
		if (d->osfi_alt && (c->value != 2 || c->length < 4 ||
				    (size_t)(c->data[2] | c->data[3] << 8) + 4 > c->length))
			goto stall;
		memcpy(d->pending, c->data, c->length);
		d->pending_len = c->length;
		d->pending_block = c->value;
		d->has_pending = true;
		d->busy_polls = d->busy_polls ? d->busy_polls : 1;
		d->state = DFU_STATE_DNLOAD_SYNC;
		return 0;
	case DFU_REQ_UPLOAD:
		if (d->state != DFU_STATE_IDLE && d->state != DFU_STATE_UPLOAD_IDLE)
			goto stall;
		if (d->osfi_alt) {
			size_t n = d->answer_len < c->length ? d->answer_len : c->length;

			memcpy(in, d->answer, n);
			*ret_n = n;
			d->state = n < c->length ? DFU_STATE_IDLE : DFU_STATE_UPLOAD_IDLE;
			return 0;
		}
		if (c->value == 0) {
			static const uint8_t cmds[] = { 0x00, 0x21, 0x41 };

			memcpy(in, cmds, sizeof(cmds));
			*ret_n = sizeof(cmds);
			d->state = DFU_STATE_IDLE;
			return 0;
		} else {
			uint32_t a = (uint32_t)(c->value - 2) * d->ts + d->pointer;

			if (c->value < 2 || !in_mem(a, c->length)) {
				dev_error(d, DFU_STATUS_ERR_TARGET);
				return -DFUSE_E_STALL;
			}
			memcpy(in, d->mem + (a - MEM_BASE), c->length);
			*ret_n = c->length - (d->short_upload ? 1 : 0);
			d->state = DFU_STATE_UPLOAD_IDLE;
			return 0;
		}
	default:
		break;
	}
stall:
	dev_error(d, DFU_STATUS_ERR_STALLEDPKT);
	return -DFUSE_E_STALL;
}

/* Drives x against d until it ends. Returns the result. */
static int run(struct dfuse_xfer *x, struct dev *d)
{
	uint8_t in[DFUSE_TRANSFER_MAX];
	struct dfuse_io io;
	enum dfuse_next nx;
	unsigned guard = 0;

	while ((nx = dfuse_xfer_next(x, &io)) != DFUSE_NEXT_DONE && nx != DFUSE_NEXT_FAILED) {
		assert_true(++guard < 100000);
		if (nx == DFUSE_NEXT_WAIT) {
			d->n_waits++;
			d->waited_ms += io.wait_ms;
			dfuse_xfer_waited(x);
		} else {
			size_t n;
			int r;

			assert_true(io.ctl.length <= sizeof(in));
			r = dev_control(d, &io.ctl, in, &n);
			dfuse_xfer_control_done(x, r, in, n);
		}
	}
	return dfuse_xfer_result(x);
}

/* ---- Decoders ---- */

static void test_status_decode(void **state)
{
	struct dfuse_status s;

	assert_int_equal(dfuse_decode_status((uint8_t[]){ 0, 0x10, 0x27, 0, 4, 0 }, 6, &s), 0);
	assert_int_equal(s.poll_ms, 10000);
	assert_int_equal(s.state, DFU_STATE_DNBUSY);
	assert_int_equal(dfuse_decode_status((uint8_t[]){ 0, 0, 0, 0, 4 }, 5, &s),
			 -DFUSE_E_PROTOCOL);
	assert_int_equal(dfuse_decode_status((uint8_t[]){ 0, 0, 0, 0, 11, 0 }, 6, &s),
			 -DFUSE_E_PROTOCOL);
	assert_int_equal(dfuse_decode_status((uint8_t[]){ 16, 0, 0, 0, 2, 0 }, 6, &s),
			 -DFUSE_E_PROTOCOL);
	assert_string_equal(dfuse_state_name(DFU_STATE_DNLOAD_IDLE), "dfuDNLOAD-IDLE");
	assert_string_equal(dfuse_status_name(DFU_STATUS_ERR_VENDOR), "errVENDOR");
	/* Every status has a name and a sentence of its own. */
	for (unsigned i = 0; i <= DFU_STATUS_ERR_STALLEDPKT; i++) {
		assert_string_not_equal(dfuse_status_name((uint8_t)i), "unknown status");
		for (unsigned j = 0; j < i; j++)
			assert_string_not_equal(dfuse_status_sentence((uint8_t)i),
						dfuse_status_sentence((uint8_t)j));
	}
	assert_string_equal(dfuse_status_name(16), "unknown status");
}

/* The configuration descriptor of an ST DFU bootloader: one interface, three alts, the
 * functional descriptor after the last alt. */
static const uint8_t st_config[] = {
	9, 2, 45, 0, 1, 1, 0, 0xc0, 0x32,
	9, 4, 0, 0, 0, 0xfe, 1, 2, 4,
	9, 4, 0, 1, 0, 0xfe, 1, 2, 5,
	9, 4, 0, 2, 0, 0xfe, 1, 2, 6,
	9, 0x21, 0x0b, 0xff, 0x00, 0x00, 0x04, 0x1a, 0x01,
};

static void test_config_parse(void **state)
{
	struct dfuse_config c;
	uint8_t b[sizeof(st_config)];

	assert_int_equal(dfuse_parse_config(st_config, sizeof(st_config), &c), 0);
	assert_int_equal(c.n_alts, 3);
	assert_int_equal(c.alts[2].alt, 2);
	assert_int_equal(c.alts[2].istring, 6);
	assert_true(c.has_functional);
	assert_int_equal(c.transfer_size, 1024);
	assert_int_equal(c.dfu_version, 0x011a);
	assert_int_equal(c.attributes, 0x0b);
	assert_int_equal(c.detach_timeout_ms, 255);

	/* wTotalLength beyond the data */
	assert_int_equal(dfuse_parse_config(st_config, sizeof(st_config) - 1, &c),
			 -DFUSE_E_PROTOCOL);
	/* a descriptor of length 0 (would loop forever), 1, or past the end */
	memcpy(b, st_config, sizeof(b));
	b[18] = 0;
	assert_int_equal(dfuse_parse_config(b, sizeof(b), &c), -DFUSE_E_PROTOCOL);
	b[18] = 1;
	assert_int_equal(dfuse_parse_config(b, sizeof(b), &c), -DFUSE_E_PROTOCOL);
	b[18] = 40;
	assert_int_equal(dfuse_parse_config(b, sizeof(b), &c), -DFUSE_E_PROTOCOL);
	/* no functional descriptor */
	memcpy(b, st_config, sizeof(b));
	b[2] = 36;
	assert_int_equal(dfuse_parse_config(b, 36, &c), -DFUSE_E_PROTOCOL);
	/* wTransferSize 0 */
	memcpy(b, st_config, sizeof(b));
	b[41] = 0;
	b[42] = 0;
	assert_int_equal(dfuse_parse_config(b, sizeof(b), &c), -DFUSE_E_PROTOCOL);
	/* a runtime interface is not a DFU-mode alt */
	memcpy(b, st_config, sizeof(b));
	b[9 + 7] = 1;
	b[18 + 7] = 1;
	b[27 + 7] = 1;
	assert_int_equal(dfuse_parse_config(b, sizeof(b), &c), -DFUSE_E_PROTOCOL);
}

static void test_device_and_string(void **state)
{
	static const uint8_t dd[18] = { 18, 1, 0x00, 0x02, 0, 0, 0, 64, 0x83, 0x04, 0x11, 0xdf,
					0x00, 0x03, 1, 2, 3, 1 };
	static const uint8_t sd[] = { 12, 3, '@', 0, 'O', 0, 'T', 0, 'P', 0, 0xe9, 0 };
	struct dfuse_device dev;
	char s[8];

	assert_int_equal(dfuse_parse_device(dd, sizeof(dd), &dev), 0);
	assert_int_equal(dev.vid, DFUSE_VID);
	assert_int_equal(dev.pid, DFUSE_PID);
	assert_int_equal(dev.bcd_device >> 8, 0x03);
	assert_int_equal(dev.iserial, 3);
	assert_int_equal(dfuse_parse_device(dd, 17, &dev), -DFUSE_E_PROTOCOL);

	assert_int_equal(dfuse_decode_string(sd, sizeof(sd), s, sizeof(s)), 5);
	assert_string_equal(s, "@OTP?");
	assert_int_equal(dfuse_decode_string(sd, sizeof(sd), s, 5), -ENOBUFS);
	assert_int_equal(dfuse_decode_string(sd, 11, s, sizeof(s)), -DFUSE_E_PROTOCOL);
	assert_int_equal(dfuse_decode_string((uint8_t[]){ 3, 3, 'a' }, 3, s, sizeof(s)),
			 -DFUSE_E_PROTOCOL);
}

static void test_layout(void **state)
{
	struct dfuse_layout l;
	uint32_t start;

	assert_int_equal(dfuse_parse_layout("@Internal Flash   /0x08000000/256*08Kg", &l), 0);
	assert_string_equal(l.name, "Internal Flash");
	assert_int_equal(l.n_segments, 1);
	assert_int_equal(l.seg[0].start, 0x08000000);
	assert_int_equal(l.seg[0].count, 256);
	assert_int_equal(l.seg[0].sector_size, 8192);
	assert_int_equal(l.seg[0].attrs, DFUSE_MEM_READABLE | DFUSE_MEM_ERASABLE |
						 DFUSE_MEM_WRITABLE);
	assert_non_null(dfuse_layout_find(&l, 0x081fffff, &start));
	assert_int_equal(start, 0x081fe000);
	assert_null(dfuse_layout_find(&l, 0x08200000, NULL));
	assert_true(dfuse_layout_covers(&l, 0x08000000, 0x200000, DFUSE_MEM_WRITABLE));
	assert_false(dfuse_layout_covers(&l, 0x08000000, 0x200001, DFUSE_MEM_READABLE));

	/* Several runs and groups, units B and M, a read-only letter. */
	assert_int_equal(dfuse_parse_layout("@Mixed/0x08000000/04*016Kg,01*064Kg,07*128Kg"
					    "/0x1FFF0000/01*30 a/0x40000000/1*1Ma", &l), 0);
	assert_int_equal(l.n_segments, 5);
	assert_int_equal(l.seg[1].start, 0x08010000);
	assert_int_equal(l.seg[2].start, 0x08020000);
	assert_int_equal(l.seg[3].sector_size, 30);
	assert_int_equal(l.seg[3].attrs, DFUSE_MEM_READABLE);
	assert_int_equal(l.seg[4].sector_size, 1024 * 1024);
	assert_false(dfuse_layout_covers(&l, 0x1fff0000, 4, DFUSE_MEM_WRITABLE));
	assert_true(dfuse_layout_covers(&l, 0x0800fff0, 0x20, DFUSE_MEM_WRITABLE));
	assert_int_equal(dfuse_parse_layout("@OSFI v1 /0x00000000/01*1Ke", &l), 0);

	assert_int_equal(dfuse_parse_layout("Internal/0x08000000/1*1Kg", &l), -EINVAL);
	assert_int_equal(dfuse_parse_layout("@Internal", &l), -EINVAL);
	assert_int_equal(dfuse_parse_layout("@x/0x08000000/1*1Kh", &l), -EINVAL);
	assert_int_equal(dfuse_parse_layout("@x/0x08000000/0*1Kg", &l), -EINVAL);
	assert_int_equal(dfuse_parse_layout("@x/0x08000000/1*1Kg trailing", &l), -EINVAL);
	assert_int_equal(dfuse_parse_layout("@x/0xFFFFF000/2*4Kg", &l), -EINVAL);
	assert_int_equal(dfuse_parse_layout("@x/0x100000000/1*4Kg", &l), -EINVAL);
	assert_int_equal(dfuse_parse_layout("@x/0x0/99999999999*4Kg", &l), -EINVAL);
	assert_int_equal(dfuse_parse_layout("@x/0/1*1a,1*1a,1*1a,1*1a,1*1a,1*1a,1*1a,1*1a,1*1a",
					    &l), -EINVAL);
}

static void test_osfi_frames(void **state)
{
	uint8_t out[16], p1[4] = { 0x40, 0, 0, 0 }, p2[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	const uint8_t *data;
	uint16_t st;
	size_t n;

	assert_int_equal(dfuse_osfi_encode_request(0x5304, p1, 4, p2, 8, out, sizeof(out)), 16);
	assert_memory_equal(out, ((uint8_t[]){ 0x04, 0x53, 4, 0, 0x40, 0, 0, 0, 1 }), 9);
	assert_int_equal(dfuse_osfi_encode_request(0x5304, p1, 4, p2, 8, out, 15), -ENOBUFS);
	assert_int_equal(dfuse_osfi_encode_request(0x5300, NULL, 0, NULL, 0, out, 4), 4);
	assert_int_equal(dfuse_osfi_decode_answer((uint8_t[]){ 0x07, 0x00, 9 }, 3, &st, &data, &n),
			 0);
	assert_int_equal(st, 7);
	assert_int_equal(n, 1);
	assert_int_equal(data[0], 9);
	assert_int_equal(dfuse_osfi_decode_answer((uint8_t[]){ 0 }, 1, &st, &data, &n),
			 -DFUSE_E_PROTOCOL);
	assert_int_equal(dfuse_osfi_max_chunk(2048), 1024);
	assert_int_equal(dfuse_osfi_max_chunk(1024), 1016);
	assert_int_equal(dfuse_osfi_max_chunk(64), 56);
	assert_int_equal(dfuse_osfi_max_chunk(8), 0);
}

/* ---- Engine against the fake device ---- */

static struct dev dv;

static void test_write_read(void **state)
{
	static uint8_t img[5000], back[5000];
	struct dfuse_xfer x;

	dev_init(&dv);
	for (size_t i = 0; i < sizeof(img); i++)
		img[i] = (uint8_t)(i * 13 + 5);
	assert_int_equal(dfuse_xfer_write(&x, NULL, dv.ts, MEM_BASE + 0x100, img, sizeof(img)),
			 0);
	assert_int_equal(run(&x, &dv), 0);
	assert_true(dfuse_xfer_committed(&x));
	assert_memory_equal(dv.mem + 0x100, img, sizeof(img));
	assert_int_equal(dv.mem[0xff], 0xff);
	assert_int_equal(dv.mem[0x100 + sizeof(img)], 0xff);
	/* every DNLOAD (address + 5 blocks) waited its bwPollTimeout once */
	assert_int_equal(dv.n_waits, 6);
	assert_int_equal(dv.waited_ms, 6 * dv.poll_ms);
	assert_int_equal(dv.state, DFU_STATE_IDLE);

	/* Upload block numbers: the last block is short, its address from wTransferSize. */
	assert_int_equal(dfuse_xfer_read(&x, NULL, dv.ts, MEM_BASE + 0x100, back, sizeof(back)),
			 0);
	assert_int_equal(run(&x, &dv), 0);
	assert_memory_equal(back, img, sizeof(img));
	assert_false(dfuse_xfer_committed(&x));
	assert_int_equal(dv.state, DFU_STATE_IDLE);

	/* A device left in dfuUPLOAD-IDLE or dfuERROR is brought back to dfuIDLE first. */
	dv.state = DFU_STATE_UPLOAD_IDLE;
	dv.ts = 64;
	assert_int_equal(dfuse_xfer_read(&x, NULL, 64, MEM_BASE, back, 100), 0);
	assert_int_equal(run(&x, &dv), 0);
	dev_error(&dv, DFU_STATUS_ERR_WRITE);
	dv.n_clrstatus = 0;
	assert_int_equal(dfuse_xfer_read(&x, NULL, 64, MEM_BASE, back, 100), 0);
	assert_int_equal(run(&x, &dv), 0);
	assert_int_equal(dv.n_clrstatus, 1);
}

static void test_erase(void **state)
{
	struct dfuse_xfer x;
	char why[256];
	unsigned before;

	dev_init(&dv);
	memset(dv.mem, 0, sizeof(dv.mem));
	dfuse_xfer_erase_page(&x, NULL, MEM_BASE + SECTOR + 5);
	assert_int_equal(run(&x, &dv), 0);
	assert_int_equal(dv.mem[SECTOR - 1], 0);
	assert_int_equal(dv.mem[SECTOR], 0xff);
	assert_int_equal(dv.mem[2 * SECTOR - 1], 0xff);
	assert_int_equal(dv.mem[2 * SECTOR], 0);

	/* The next page right after: DNLOAD from dfuDNLOAD-IDLE, no GETSTATUS first. */
	before = dv.n_getstatus;
	dfuse_xfer_erase_page_next(&x, NULL, MEM_BASE + 2 * SECTOR);
	assert_int_equal(run(&x, &dv), 0);
	assert_int_equal(dv.n_getstatus - before, 2);
	assert_int_equal(dv.mem[2 * SECTOR], 0xff);
	assert_int_equal(dv.mem[3 * SECTOR], 0);

	dfuse_xfer_mass_erase(&x, NULL);
	assert_int_equal(run(&x, &dv), 0);
	assert_int_equal(dv.mem[0], 0xff);

	/* An address outside memory: dfuERROR errTARGET at GETSTATUS, cleared. */
	dfuse_xfer_erase_page(&x, NULL, 0x20000000);
	assert_int_equal(run(&x, &dv), -DFUSE_E_STATUS);
	assert_int_equal(dfuse_xfer_dfu_status(&x), DFU_STATUS_ERR_TARGET);
	assert_int_equal(dv.state, DFU_STATE_IDLE);
	dfuse_xfer_describe(&x, why, sizeof(why));
	assert_non_null(strstr(why, "page erase"));
	assert_non_null(strstr(why, "errTARGET"));
	assert_non_null(strstr(why, "0x20000000"));
}

static void test_poll_timeout(void **state)
{
	struct dfuse_timeouts t;
	struct dfuse_xfer x;

	/* bwPollTimeout is honoured, the busy budget bounds it. */
	dev_init(&dv);
	dv.poll_ms = 400;
	dv.busy_polls = 3;
	dfuse_timeouts_default(&t);
	t.page_erase_ms = 1500;
	dfuse_xfer_erase_page(&x, &t, MEM_BASE);
	assert_int_equal(run(&x, &dv), 0);
	assert_int_equal(dv.waited_ms, 3 * 400);

	dev_init(&dv);
	dv.busy_forever = true;
	dv.poll_ms = 0;
	dfuse_xfer_erase_page(&x, &t, MEM_BASE);
	assert_int_equal(run(&x, &dv), -DFUSE_E_TIMEOUT);
	assert_true(dv.n_getstatus <= 1500 + 3);

	/* A poll time beyond the budget is refused rather than waited. */
	dev_init(&dv);
	dv.poll_ms = 0xffffff;
	dfuse_xfer_erase_page(&x, &t, MEM_BASE);
	assert_int_equal(run(&x, &dv), -DFUSE_E_TIMEOUT);
	assert_int_equal(dv.n_waits, 0);
}

static void test_write_errors(void **state)
{
	static uint8_t img[4096];
	struct dfuse_xfer x;
	char why[256];

	/* dfuERROR errWRITE at block 4 (the third data block): fails, cleared, says where. */
	dev_init(&dv);
	dv.error_block = 4;
	assert_int_equal(dfuse_xfer_write(&x, NULL, dv.ts, MEM_BASE, img, sizeof(img)), 0);
	assert_int_equal(run(&x, &dv), -DFUSE_E_STATUS);
	assert_int_equal(dfuse_xfer_dfu_status(&x), DFU_STATUS_ERR_WRITE);
	assert_int_equal(dfuse_xfer_step(&x), DFUSE_STEP_DOWNLOAD);
	assert_int_equal(dv.state, DFU_STATE_IDLE);
	dfuse_xfer_describe(&x, why, sizeof(why));
	assert_non_null(strstr(why, "0x08000800"));
	assert_non_null(strstr(why, "errWRITE"));

	/* A stalled DNLOAD: the status is read and cleared. */
	dev_init(&dv);
	dv.stall_dnload_block = 3;
	assert_int_equal(dfuse_xfer_write(&x, NULL, dv.ts, MEM_BASE, img, sizeof(img)), 0);
	assert_int_equal(run(&x, &dv), -DFUSE_E_STALL);
	assert_int_equal(dfuse_xfer_dfu_status(&x), DFU_STATUS_ERR_STALLEDPKT);
	assert_int_equal(dv.state, DFU_STATE_IDLE);

	/* The device goes away. */
	dev_init(&dv);
	dv.gone = true;
	assert_int_equal(dfuse_xfer_write(&x, NULL, dv.ts, MEM_BASE, img, sizeof(img)), 0);
	assert_int_equal(run(&x, &dv), -DFUSE_E_GONE);

	/* A device in runtime mode cannot be used. */
	dev_init(&dv);
	dv.state = DFU_STATE_APP_IDLE;
	dfuse_xfer_idle(&x, NULL);
	assert_int_equal(run(&x, &dv), -DFUSE_E_STATE);

	/* Bounds. */
	assert_int_equal(dfuse_xfer_write(&x, NULL, 0, MEM_BASE, img, 1), -EINVAL);
	assert_int_equal(dfuse_xfer_write(&x, NULL, 2049, MEM_BASE, img, 1), -EINVAL);
	assert_int_equal(dfuse_xfer_write(&x, NULL, 1024, MEM_BASE, img, 0), -EINVAL);
	assert_int_equal(dfuse_xfer_read(&x, NULL, 16, MEM_BASE, img, 0xfffe * 16), -EINVAL);
	assert_int_equal(dfuse_xfer_read(&x, NULL, 16, 0xfffffff0, img, 17), -EINVAL);
	assert_int_equal(dfuse_xfer_next(&x, NULL), DFUSE_NEXT_FAILED);
}

static void test_short_upload(void **state)
{
	uint8_t back[3000], in[8] = { 0 };
	struct dfuse_xfer x;
	struct dfuse_io io;

	/* An upload answering fewer bytes than asked is a protocol error. */
	dev_init(&dv);
	dv.short_upload = true;
	assert_int_equal(dfuse_xfer_read(&x, NULL, dv.ts, MEM_BASE, back, sizeof(back)), 0);
	assert_int_equal(run(&x, &dv), -DFUSE_E_PROTOCOL);
	assert_int_equal(dfuse_xfer_step(&x), DFUSE_STEP_UPLOAD);

	/* More bytes than wLength asked for never reach the caller's buffer. */
	dfuse_xfer_get_status(&x, NULL);
	assert_int_equal(dfuse_xfer_next(&x, &io), DFUSE_NEXT_CONTROL);
	dfuse_xfer_control_done(&x, 0, in, 7);
	assert_int_equal(dfuse_xfer_result(&x), -DFUSE_E_PROTOCOL);
}

static void test_commands_leave(void **state)
{
	struct dfuse_xfer x;

	dev_init(&dv);
	assert_int_equal(dfuse_xfer_commands(&x, NULL, dv.ts), 0);
	assert_int_equal(run(&x, &dv), 0);
	assert_true(dfuse_commands_has(dfuse_xfer_command_list(&x), DFUSE_CMD_ERASE));
	assert_false(dfuse_commands_has(dfuse_xfer_command_list(&x), DFUSE_CMD_READ_UNPROTECT));

	dfuse_xfer_leave(&x, NULL, true, MEM_BASE);
	assert_int_equal(run(&x, &dv), 0);
	assert_true(dv.left);
	assert_int_equal(dv.pointer, MEM_BASE);

	/* The device disappearing right after the zero-length DNLOAD is a success. */
	dev_init(&dv);
	dv.gone_after_leave = true;
	dfuse_xfer_leave(&x, NULL, false, 0);
	assert_int_equal(run(&x, &dv), 0);
	dev_init(&dv);
	dfuse_xfer_leave(&x, NULL, false, 0);
	while (dfuse_xfer_next(&x, NULL) == DFUSE_NEXT_CONTROL && !dv.left) {
		struct dfuse_io io;
		uint8_t in[8];
		size_t n;
		int r;

		dfuse_xfer_next(&x, &io);
		r = dev_control(&dv, &io.ctl, in, &n);
		dfuse_xfer_control_done(&x, r, in, n);
	}
	dfuse_xfer_gone(&x);
	assert_int_equal(dfuse_xfer_result(&x), 0);
}

static void test_osfi(void **state)
{
	uint8_t out[128], p1[4] = { 0x40, 0, 0, 0 }, p2[1016];
	struct dfuse_xfer x;
	unsigned before;

	dev_init(&dv);
	dv.osfi_alt = true;
	/* GET_INFO: DNLOAD, GETSTATUS busy, wait, GETSTATUS idle, ABORT, UPLOAD. */
	assert_int_equal(dfuse_xfer_osfi(&x, NULL, dv.ts, true, 0x5300, NULL, 0, NULL, 0, true,
					 out, sizeof(out)), 0);
	assert_int_equal(run(&x, &dv), 0);
	assert_int_equal(dfuse_xfer_osfi_status(&x), 0);
	assert_int_equal(dfuse_xfer_answer_len(&x), 64);
	assert_int_equal(out[63], 0xa5);
	assert_int_equal(dv.state, DFU_STATE_IDLE);

	/* PUT_DATA fast path: no UPLOAD, no ABORT; the next request from dfuDNLOAD-IDLE. */
	memset(p2, 0x5a, sizeof(p2));
	for (int i = 0; i < 3; i++) {
		before = dv.n_control;
		assert_int_equal(dfuse_xfer_osfi(&x, NULL, dv.ts, false, 0x5304, p1, 4, p2,
						 dfuse_osfi_max_chunk(dv.ts), false, NULL, 0), 0);
		assert_int_equal(run(&x, &dv), 0);
		assert_int_equal(dv.n_control - before, 3);
		assert_int_equal(dv.state, DFU_STATE_DNLOAD_IDLE);
		assert_int_equal(dv.pending_len, dv.ts);
	}
	/* A chunk one byte too long does not fit the frame. */
	assert_int_equal(dfuse_xfer_osfi(&x, NULL, dv.ts, false, 0x5304, p1, 4, p2,
					 dfuse_osfi_max_chunk(dv.ts) + 1, false, NULL, 0),
			 -ENOBUFS);

	/* A refusal: dfuERROR errVENDOR, CLRSTATUS, UPLOAD the status. */
	dv.refuse_subop = 0x5303;
	assert_int_equal(dfuse_xfer_osfi(&x, NULL, dv.ts, false, 0x5303, p2, 64, NULL, 0, false,
					 out, sizeof(out)), 0);
	assert_int_equal(run(&x, &dv), 0);
	assert_int_equal(dfuse_xfer_osfi_status(&x), 7);
	assert_int_equal(dfuse_xfer_answer_len(&x), 0);
	assert_int_equal(dv.state, DFU_STATE_IDLE);

	/* A malformed frame is stalled: the host sees it as UART's NACK. */
	dv.refuse_subop = 0;
	assert_int_equal(dfuse_xfer_osfi(&x, NULL, dv.ts, false, 0x5303, p2, 64, NULL, 0, false,
					 out, sizeof(out)), 0);
	x.tx[2] = 0xff;		/* n1 beyond the data */
	assert_int_equal(run(&x, &dv), -DFUSE_E_STALL);
	assert_int_equal(dfuse_xfer_dfu_status(&x), DFU_STATUS_ERR_STALLEDPKT);
	assert_int_equal(dv.state, DFU_STATE_IDLE);
}

static void test_osfi_inconsistent(void **state)
{
	uint8_t out[128];
	struct dfuse_xfer x;
	struct dfuse_io io;

	/* GETSTATUS says OK, the answer's status says refused: protocol error. */
	assert_int_equal(dfuse_xfer_osfi(&x, NULL, 1024, false, 0x5301, NULL, 0, NULL, 0, true,
					 out, sizeof(out)), 0);
	while (dfuse_xfer_next(&x, &io) == DFUSE_NEXT_CONTROL) {
		switch (io.ctl.request) {
		case DFU_REQ_GETSTATUS:
			dfuse_xfer_control_done(&x, 0, (uint8_t[]){ 0, 0, 0, 0, 5, 0 }, 6);
			break;
		case DFU_REQ_UPLOAD:
			dfuse_xfer_control_done(&x, 0, (uint8_t[]){ 3, 0 }, 2);
			break;
		default:
			dfuse_xfer_control_done(&x, 0, NULL, 0);
			break;
		}
	}
	assert_int_equal(dfuse_xfer_result(&x), -DFUSE_E_PROTOCOL);

	/* An answer larger than the caller's buffer. */
	assert_int_equal(dfuse_xfer_osfi(&x, NULL, 1024, false, 0x5301, NULL, 0, NULL, 0, true,
					 out, 4), 0);
	while (dfuse_xfer_next(&x, &io) == DFUSE_NEXT_CONTROL) {
		static const uint8_t big[8];

		switch (io.ctl.request) {
		case DFU_REQ_GETSTATUS:
			dfuse_xfer_control_done(&x, 0, (uint8_t[]){ 0, 0, 0, 0, 5, 0 }, 6);
			break;
		case DFU_REQ_UPLOAD:
			dfuse_xfer_control_done(&x, 0, big, sizeof(big));
			break;
		default:
			dfuse_xfer_control_done(&x, 0, NULL, 0);
			break;
		}
	}
	assert_int_equal(dfuse_xfer_result(&x), -DFUSE_E_PROTOCOL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_decode),
		cmocka_unit_test(test_config_parse),
		cmocka_unit_test(test_device_and_string),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_osfi_frames),
		cmocka_unit_test(test_write_read),
		cmocka_unit_test(test_erase),
		cmocka_unit_test(test_poll_timeout),
		cmocka_unit_test(test_write_errors),
		cmocka_unit_test(test_short_upload),
		cmocka_unit_test(test_commands_leave),
		cmocka_unit_test(test_osfi),
		cmocka_unit_test(test_osfi_inconsistent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

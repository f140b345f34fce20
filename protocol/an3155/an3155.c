/* AN3155 host side: encoders, decoders and the sans-I/O transaction engine. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "an3155.h"
#include "osfi-wire.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

const char *an3155_strerror(int r)
{
	return sfi_strerror(r);
}

static const char *const step_names[_AN3155_STEP_MAX] = {
	[AN3155_STEP_SYNC] = "sync",
	[AN3155_STEP_COMMAND] = "command",
	[AN3155_STEP_ADDRESS] = "address",
	[AN3155_STEP_COUNT] = "byte count",
	[AN3155_STEP_DATA] = "data",
	[AN3155_STEP_SUBOP] = "sub-opcode",
	[AN3155_STEP_PACKET1] = "first packet",
	[AN3155_STEP_PACKET2] = "second packet",
	[AN3155_STEP_ANSWER] = "answer",
	[AN3155_STEP_STATUS] = "status",
	[AN3155_STEP_FINAL_ACK] = "final acknowledge",
};

const char *an3155_step_to_string(enum an3155_step s)
{
	if ((unsigned)s >= ARRAY_SIZE(step_names) || !step_names[s])
		return "unknown step";
	return step_names[s];
}

const char *an3155_command_to_string(uint8_t op)
{
	switch (op) {
	case AN3155_SYNC:
		return "Sync";
	case AN3155_CMD_GET:
		return "Get";
	case AN3155_CMD_GET_VERSION:
		return "Get Version";
	case AN3155_CMD_GET_ID:
		return "Get ID";
	case AN3155_CMD_READ_MEMORY:
		return "Read Memory";
	case AN3155_CMD_GO:
		return "Go";
	case AN3155_CMD_WRITE_MEMORY:
		return "Write Memory";
	case AN3155_CMD_ERASE:
		return "Erase";
	case AN3155_CMD_EXTENDED_ERASE:
		return "Extended Erase";
	case AN3155_CMD_SPECIAL:
		return "Special";
	case AN3155_CMD_EXTENDED_SPECIAL:
		return "Extended Special";
	case AN3155_CMD_WRITE_PROTECT:
		return "Write Protect";
	case AN3155_CMD_WRITE_UNPROTECT:
		return "Write Unprotect";
	case AN3155_CMD_READOUT_PROTECT:
		return "Readout Protect";
	case AN3155_CMD_READOUT_UNPROTECT:
		return "Readout Unprotect";
	case AN3155_CMD_GET_CHECKSUM:
		return "Get Checksum";
	}
	return "unknown command";
}

/* ---- Encoders ---- */

uint8_t an3155_xor(const uint8_t *buf, size_t n)
{
	uint8_t x = 0;

	for (size_t i = 0; i < n; i++)
		x ^= buf[i];
	return x;
}

int an3155_check_xor(const uint8_t *frame, size_t n)
{
	if (!frame || n == 0)
		return -EINVAL;
	return an3155_xor(frame, n - 1) == frame[n - 1] ? 0 : -AN3155_E_CHECKSUM;
}

/* Writes v MSB first. */
static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Checks that a list of 1..max items was given. */
static bool list_valid(const void *items, size_t n, size_t max)
{
	return items && n > 0 && n <= max;
}

/* Extended Erase pages: a list of 1..AN3155_ERASE_MAX_PAGES below the special codes. */
static bool pages_valid(const uint16_t *pages, size_t n)
{
	if (!list_valid(pages, n, AN3155_ERASE_MAX_PAGES))
		return false;
	for (size_t i = 0; i < n; i++)
		if (pages[i] >= 0xfff0)
			return false;
	return true;
}

/* A 16-bit value MSB first and the XOR of its two bytes (sub-opcodes, erase codes). */
static int encode_u16_xor(uint16_t v, uint8_t *out, size_t outmax)
{
	if (!out)
		return -EINVAL;
	if (outmax < 3)
		return -ENOBUFS;
	put_be16(out, v);
	out[2] = an3155_xor(out, 2);
	return 3;
}

int an3155_encode_command(uint8_t op, uint8_t *out, size_t outmax)
{
	if (!out)
		return -EINVAL;
	if (outmax < 2)
		return -ENOBUFS;
	out[0] = op;
	out[1] = op ^ 0xff;
	return 2;
}

int an3155_encode_address(uint32_t addr, uint8_t *out, size_t outmax)
{
	if (!out)
		return -EINVAL;
	if (outmax < 5)
		return -ENOBUFS;
	out[0] = addr >> 24;
	out[1] = addr >> 16;
	out[2] = addr >> 8;
	out[3] = addr;
	out[4] = an3155_xor(out, 4);
	return 5;
}

int an3155_encode_read_count(size_t n, uint8_t *out, size_t outmax)
{
	if (!out || n == 0 || n > AN3155_MAX_BLOCK)
		return -EINVAL;
	return an3155_encode_command((uint8_t)(n - 1), out, outmax);
}

/* The frame of Write Memory and Write Protect: N-1, the 1..max bytes padded with 0xFF to
 * `padded` (N), then the XOR of all. */
static int encode_counted_bytes(const uint8_t *data, size_t n, size_t padded, size_t max,
				uint8_t *out, size_t outmax)
{
	if (!out || !list_valid(data, n, max))
		return -EINVAL;
	if (outmax < padded + 2)
		return -ENOBUFS;
	out[0] = (uint8_t)(padded - 1);
	memcpy(out + 1, data, n);
	memset(out + 1 + n, 0xff, padded - n);
	out[1 + padded] = an3155_xor(out, 1 + padded);
	return (int)(padded + 2);
}

int an3155_encode_write_block(const uint8_t *data, size_t n, uint8_t *out, size_t outmax)
{
	size_t padded = (n + 3) & ~(size_t)3;

	return encode_counted_bytes(data, n, padded, AN3155_MAX_BLOCK, out, outmax);
}

int an3155_encode_erase_special(uint16_t code, uint8_t *out, size_t outmax)
{
	if (code < 0xfff0)
		return -EINVAL;
	return encode_u16_xor(code, out, outmax);
}

int an3155_encode_erase_pages(const uint16_t *pages, size_t n, uint8_t *out, size_t outmax)
{
	size_t len = 2 + 2 * n + 1;

	if (!out || !pages_valid(pages, n))
		return -EINVAL;
	if (outmax < len)
		return -ENOBUFS;
	put_be16(out, (uint16_t)(n - 1));
	for (size_t i = 0; i < n; i++)
		put_be16(out + 2 + 2 * i, pages[i]);
	out[len - 1] = an3155_xor(out, len - 1);
	return (int)len;
}

int an3155_encode_write_protect(const uint8_t *sectors, size_t n, uint8_t *out, size_t outmax)
{
	return encode_counted_bytes(sectors, n, n, AN3155_WP_MAX_SECTORS, out, outmax);
}

int an3155_encode_subop(uint16_t subop, uint8_t *out, size_t outmax)
{
	return encode_u16_xor(subop, out, outmax);
}

int an3155_encode_packet(const uint8_t *data, size_t n, size_t max, uint8_t *out, size_t outmax)
{
	if (!out || n > max || n > 0xffff || (n > 0 && !data))
		return -EINVAL;
	if (outmax < n + 3)
		return -ENOBUFS;
	put_be16(out, (uint16_t)n);
	if (n > 0)
		memcpy(out + 2, data, n);
	out[n + 2] = an3155_xor(out, n + 2);
	return (int)(n + 3);
}

/* ---- Decoders ---- */

int an3155_decode_get(const uint8_t *buf, size_t n, struct an3155_get_info *ret)
{
	struct an3155_get_info g = {};

	if (!buf || !ret)
		return -EINVAL;
	/* N counts the bytes that follow, minus one: the version and N command codes. */
	if (n < 2 || (size_t)buf[0] + 2 != n)
		return -AN3155_E_UNEXPECTED;
	g.version = buf[1];
	g.n_cmds = buf[0];
	memcpy(g.cmds, buf + 2, g.n_cmds);
	*ret = g;
	return 0;
}

bool an3155_get_has(const struct an3155_get_info *g, uint8_t op)
{
	if (!g)
		return false;
	for (size_t i = 0; i < g->n_cmds; i++)
		if (g->cmds[i] == op)
			return true;
	return false;
}

int an3155_decode_get_version(const uint8_t *buf, size_t n, struct an3155_version_info *ret)
{
	if (!buf || !ret)
		return -EINVAL;
	if (n != 3)
		return -AN3155_E_UNEXPECTED;
	*ret = (struct an3155_version_info){
		.version = buf[0],
		.option1 = buf[1],
		.option2 = buf[2],
	};
	return 0;
}

int an3155_decode_get_id(const uint8_t *buf, size_t n, uint32_t *ret_pid)
{
	uint32_t pid = 0;

	if (!buf || !ret_pid)
		return -EINVAL;
	if (n < 2)
		return -AN3155_E_UNEXPECTED;
	if ((size_t)buf[0] + 1 > 4)
		return -AN3155_E_TOO_LONG;
	if ((size_t)buf[0] + 2 != n)
		return -AN3155_E_UNEXPECTED;
	for (size_t i = 1; i < n; i++)
		pid = pid << 8 | buf[i];
	*ret_pid = pid;
	return 0;
}

/* ---- Engine ---- */

void an3155_timeouts_default(struct an3155_timeouts *t)
{
	*t = (struct an3155_timeouts){
		.ack_ms = 1000,
		.block_ms = 1000,
		.mass_erase_ms = 35000,
		.page_erase_ms = 5000,
		.special_ms = 15000,
	};
}

static void xfer_reset(struct an3155_xfer *x, const struct an3155_timeouts *t, uint8_t op)
{
	memset(x, 0, offsetof(struct an3155_xfer, tx));
	x->tx_len = x->tx_off = x->rx_len = x->rx_want = 0;
	x->addr = 0;
	x->len = x->len2 = x->out_len = x->out_max = 0;
	x->data = x->data2 = NULL;
	x->pages = NULL;
	x->out = NULL;
	x->erase_code = x->subop = x->status = 0;
	x->pid = 0;
	memset(&x->get, 0, sizeof(x->get));
	memset(&x->version, 0, sizeof(x->version));
	if (t)
		x->t = *t;
	else
		an3155_timeouts_default(&x->t);
	x->op = op;
	x->result = 1;
}

static void xfer_fail(struct an3155_xfer *x, int r)
{
	x->result = r;
	x->tx_len = x->tx_off = 0;
	x->rx_want = 0;
}

static void xfer_done(struct an3155_xfer *x)
{
	x->result = 0;
	x->tx_len = x->tx_off = 0;
	x->rx_want = 0;
}

/* Starts a step that sends tx_len bytes already placed in x->tx, then waits for rx bytes. */
static void xfer_send(struct an3155_xfer *x, enum an3155_step step, size_t tx_len, size_t rx,
		      unsigned ms)
{
	x->step = step;
	x->tx_len = tx_len;
	x->tx_off = 0;
	x->rx_len = 0;
	x->rx_want = rx;
	x->wait_ms = ms;
	x->wait_id++;
}

static void xfer_recv(struct an3155_xfer *x, enum an3155_step step, size_t rx, unsigned ms)
{
	xfer_send(x, step, 0, rx, ms);
}

/* Sends the frame of n bytes an encoder just placed in x->tx and waits for its ACK. */
static void xfer_send_frame(struct an3155_xfer *x, enum an3155_step step, int n, unsigned ms)
{
	xfer_send(x, step, (size_t)n, 1, ms);
}

/* Resets *x for op and sends the opcode: every command but Sync starts this way. */
static void xfer_start(struct an3155_xfer *x, const struct an3155_timeouts *t, uint8_t op)
{
	int r;

	xfer_reset(x, t, op);
	r = an3155_encode_command(op, x->tx, sizeof(x->tx));
	xfer_send_frame(x, AN3155_STEP_COMMAND, r, x->t.ack_ms);
}

void an3155_xfer_sync(struct an3155_xfer *x, const struct an3155_timeouts *t)
{
	xfer_reset(x, t, AN3155_SYNC);
	x->nack_ok = true;
	x->tx[0] = AN3155_SYNC;
	xfer_send(x, AN3155_STEP_SYNC, 1, 1, x->t.ack_ms);
}

void an3155_xfer_get(struct an3155_xfer *x, const struct an3155_timeouts *t)
{
	xfer_start(x, t, AN3155_CMD_GET);
}

void an3155_xfer_get_version(struct an3155_xfer *x, const struct an3155_timeouts *t)
{
	xfer_start(x, t, AN3155_CMD_GET_VERSION);
}

void an3155_xfer_get_id(struct an3155_xfer *x, const struct an3155_timeouts *t)
{
	xfer_start(x, t, AN3155_CMD_GET_ID);
}

int an3155_xfer_read_memory(struct an3155_xfer *x, const struct an3155_timeouts *t,
			    uint32_t addr, uint8_t *out, size_t n)
{
	if (!list_valid(out, n, AN3155_MAX_BLOCK))
		return -EINVAL;
	xfer_start(x, t, AN3155_CMD_READ_MEMORY);
	x->addr = addr;
	x->out = out;
	x->out_max = x->len = n;
	return 0;
}

int an3155_xfer_write_memory(struct an3155_xfer *x, const struct an3155_timeouts *t,
			     uint32_t addr, const uint8_t *data, size_t n)
{
	if (!list_valid(data, n, AN3155_MAX_BLOCK))
		return -EINVAL;
	xfer_start(x, t, AN3155_CMD_WRITE_MEMORY);
	x->addr = addr;
	x->data = data;
	x->len = n;
	return 0;
}

int an3155_xfer_erase_special(struct an3155_xfer *x, const struct an3155_timeouts *t,
			      uint16_t code)
{
	if (code != AN3155_ERASE_MASS && code != AN3155_ERASE_BANK1 && code != AN3155_ERASE_BANK2)
		return -EINVAL;
	xfer_start(x, t, AN3155_CMD_EXTENDED_ERASE);
	x->erase_code = code;
	return 0;
}

int an3155_xfer_erase_pages(struct an3155_xfer *x, const struct an3155_timeouts *t,
			    const uint16_t *pages, size_t n)
{
	if (!pages_valid(pages, n))
		return -EINVAL;
	xfer_start(x, t, AN3155_CMD_EXTENDED_ERASE);
	x->pages = pages;
	x->len = n;
	return 0;
}

void an3155_xfer_go(struct an3155_xfer *x, const struct an3155_timeouts *t, uint32_t addr)
{
	xfer_start(x, t, AN3155_CMD_GO);
	x->addr = addr;
}

int an3155_xfer_write_protect(struct an3155_xfer *x, const struct an3155_timeouts *t,
			      const uint8_t *sectors, size_t n)
{
	if (!list_valid(sectors, n, AN3155_WP_MAX_SECTORS))
		return -EINVAL;
	xfer_start(x, t, AN3155_CMD_WRITE_PROTECT);
	x->data = sectors;
	x->len = n;
	return 0;
}

void an3155_xfer_write_unprotect(struct an3155_xfer *x, const struct an3155_timeouts *t)
{
	xfer_start(x, t, AN3155_CMD_WRITE_UNPROTECT);
}

/* Special and Extended Special both send a sub-opcode and a first packet of 0..128 bytes. */
static bool special_packet_valid(const uint8_t *data, size_t n)
{
	return n <= AN3155_SPECIAL_MAX_DATA && (n == 0 || data);
}

static void xfer_start_special(struct an3155_xfer *x, const struct an3155_timeouts *t, uint8_t op,
			       uint16_t subop, const uint8_t *data, size_t n)
{
	xfer_start(x, t, op);
	x->subop = subop;
	x->data = data;
	x->len = n;
}

int an3155_xfer_special(struct an3155_xfer *x, const struct an3155_timeouts *t, uint16_t subop,
			const uint8_t *data, size_t n, uint8_t *out, size_t out_max)
{
	if (!special_packet_valid(data, n) || (out_max > 0 && !out))
		return -EINVAL;
	xfer_start_special(x, t, AN3155_CMD_SPECIAL, subop, data, n);
	x->out = out;
	x->out_max = out_max > AN3155_SPECIAL_MAX_ANSWER ? AN3155_SPECIAL_MAX_ANSWER : out_max;
	return 0;
}

int an3155_xfer_xspecial(struct an3155_xfer *x, const struct an3155_timeouts *t,
			 uint16_t subop, const uint8_t *p1, size_t n1, const uint8_t *p2,
			 size_t n2)
{
	if (!special_packet_valid(p1, n1) || n2 > AN3155_XSPECIAL_MAX_DATA || (n2 > 0 && !p2))
		return -EINVAL;
	xfer_start_special(x, t, AN3155_CMD_EXTENDED_SPECIAL, subop, p1, n1);
	x->data2 = p2;
	x->len2 = n2;
	return 0;
}

enum an3155_next an3155_xfer_next(const struct an3155_xfer *x, struct an3155_io *io)
{
	if (x->result == 0)
		return AN3155_NEXT_DONE;
	if (x->result < 0)
		return AN3155_NEXT_FAILED;
	*io = (struct an3155_io){
		.tx = x->tx + x->tx_off,
		.tx_len = x->tx_len - x->tx_off,
		.rx_want = x->rx_want - x->rx_len,
		.timeout_ms = x->wait_ms,
		.wait_id = x->wait_id,
	};
	return AN3155_NEXT_IO;
}

/* Steps whose request, once sent, may have changed the chip. */
static bool step_commits(const struct an3155_xfer *x)
{
	switch (x->op) {
	case AN3155_CMD_WRITE_MEMORY:
	case AN3155_CMD_EXTENDED_ERASE:
	case AN3155_CMD_WRITE_PROTECT:
		return x->step == AN3155_STEP_DATA;
	case AN3155_CMD_GO:
		return x->step == AN3155_STEP_ADDRESS;
	case AN3155_CMD_WRITE_UNPROTECT:
		return x->step == AN3155_STEP_COMMAND;
	case AN3155_CMD_SPECIAL:
		return x->step == AN3155_STEP_PACKET1;
	case AN3155_CMD_EXTENDED_SPECIAL:
		return x->step == AN3155_STEP_PACKET2;
	default:
		return false;
	}
}

void an3155_xfer_wrote(struct an3155_xfer *x, size_t n)
{
	if (x->result != 1)
		return;
	if (n > x->tx_len - x->tx_off)
		n = x->tx_len - x->tx_off;
	x->tx_off += n;
	if (x->tx_off == x->tx_len && step_commits(x))
		x->committed = true;
}

/* Big-endian value of the first n received bytes (n <= 2). */
static uint16_t rx_be(const struct an3155_xfer *x, size_t n)
{
	uint16_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = (uint16_t)(v << 8 | x->rx[i]);
	return v;
}

static void xfer_send_address(struct an3155_xfer *x)
{
	int r = an3155_encode_address(x->addr, x->tx, sizeof(x->tx));

	xfer_send_frame(x, AN3155_STEP_ADDRESS, r, x->t.ack_ms);
}

static void xfer_send_subop(struct an3155_xfer *x)
{
	int r = an3155_encode_subop(x->subop, x->tx, sizeof(x->tx));

	xfer_send_frame(x, AN3155_STEP_SUBOP, r, x->t.ack_ms);
}

static void xfer_send_packet(struct an3155_xfer *x, enum an3155_step step, const uint8_t *data,
			     size_t n, size_t max, unsigned ms)
{
	int r = an3155_encode_packet(data, n, max, x->tx, sizeof(x->tx));

	xfer_send_frame(x, step, r, ms);
}

/* Receives n bytes of the chip's answer. */
static void xfer_recv_answer(struct an3155_xfer *x, size_t n, unsigned ms)
{
	xfer_recv(x, AN3155_STEP_ANSWER, n, ms);
}

/* Waits for the ACK that closes an answer or reports the result of an operation. */
static void xfer_recv_final_ack(struct an3155_xfer *x, unsigned ms)
{
	xfer_recv(x, AN3155_STEP_FINAL_ACK, 1, ms);
}

static void store_get(struct an3155_xfer *x)
{
	x->get.n_cmds = (uint8_t)x->len;
	x->get.version = x->rx[0];
	memcpy(x->get.cmds, x->rx + 1, x->len);
}

static void store_pid(struct an3155_xfer *x)
{
	x->pid = 0;
	for (size_t i = 0; i <= x->len; i++)
		x->pid = x->pid << 8 | x->rx[i];
}

/* Get and Get ID: a count byte N, then N+1 bytes (at most max), kept by store(), then the
 * closing ACK. For Get the N+1 bytes are the version and N command codes. */
static void advance_counted_answer(struct an3155_xfer *x, size_t max,
				   void (*store)(struct an3155_xfer *x))
{
	switch (x->stage) {
	case 1: /* N */
		return xfer_recv_answer(x, 1, x->t.ack_ms);
	case 2:
		if ((size_t)x->rx[0] + 1 > max)
			return xfer_fail(x, -AN3155_E_TOO_LONG);
		x->len = x->rx[0];
		return xfer_recv_answer(x, x->len + 1, x->t.ack_ms);
	case 3:
		store(x);
		return xfer_recv_final_ack(x, x->t.ack_ms);
	default:
		return xfer_done(x);
	}
}

static void advance_get_version(struct an3155_xfer *x)
{
	switch (x->stage) {
	case 1:
		return xfer_recv_answer(x, 3, x->t.ack_ms);
	case 2:
		an3155_decode_get_version(x->rx, 3, &x->version);
		return xfer_recv_final_ack(x, x->t.ack_ms);
	default:
		return xfer_done(x);
	}
}

static void advance_read_memory(struct an3155_xfer *x)
{
	int r;

	switch (x->stage) {
	case 1:
		return xfer_send_address(x);
	case 2:
		r = an3155_encode_read_count(x->len, x->tx, sizeof(x->tx));
		return xfer_send_frame(x, AN3155_STEP_COUNT, r, x->t.ack_ms);
	case 3:
		return xfer_recv_answer(x, x->len, x->t.block_ms);
	default:
		memcpy(x->out, x->rx, x->len);
		x->out_len = x->len;
		return xfer_done(x);
	}
}

static void advance_write_memory(struct an3155_xfer *x)
{
	int r;

	switch (x->stage) {
	case 1:
		return xfer_send_address(x);
	case 2:
		r = an3155_encode_write_block(x->data, x->len, x->tx, sizeof(x->tx));
		return xfer_send_frame(x, AN3155_STEP_DATA, r, x->t.block_ms);
	default:
		return xfer_done(x);
	}
}

static void advance_extended_erase(struct an3155_xfer *x)
{
	unsigned long ms;
	int r;

	if (x->stage > 1)
		return xfer_done(x);
	if (!x->pages) {
		r = an3155_encode_erase_special(x->erase_code, x->tx, sizeof(x->tx));
		return xfer_send_frame(x, AN3155_STEP_DATA, r, x->t.mass_erase_ms);
	}
	ms = (unsigned long)x->t.page_erase_ms * x->len;
	r = an3155_encode_erase_pages(x->pages, x->len, x->tx, sizeof(x->tx));
	xfer_send_frame(x, AN3155_STEP_DATA, r, ms > 600000 ? 600000 : (unsigned)ms);
}

static void advance_go(struct an3155_xfer *x)
{
	if (x->stage == 1)
		return xfer_send_address(x);
	xfer_done(x);
}

static void advance_write_protect(struct an3155_xfer *x)
{
	int r;

	if (x->stage > 1)
		return xfer_done(x);
	r = an3155_encode_write_protect(x->data, x->len, x->tx, sizeof(x->tx));
	xfer_send_frame(x, AN3155_STEP_DATA, r, x->t.block_ms);
}

static void advance_write_unprotect(struct an3155_xfer *x)
{
	if (x->stage == 1)
		return xfer_recv_final_ack(x, x->t.block_ms);
	xfer_done(x);
}

/* Stages 6.. of Special and Extended Special: status length, status bytes (MSB first),
 * closing ACK. The length has just been received at stage 6. */
static void advance_status(struct an3155_xfer *x)
{
	size_t n;

	switch (x->stage) {
	case 6:
		n = rx_be(x, 2);
		if (n > 2)
			return xfer_fail(x, -AN3155_E_TOO_LONG);
		x->len2 = n;
		if (n > 0)
			return xfer_recv(x, AN3155_STEP_STATUS, n, x->t.ack_ms);
		x->stage++;
		__attribute__((fallthrough)); /* empty status */
	case 7:
		x->status = rx_be(x, x->len2);
		return xfer_recv_final_ack(x, x->t.ack_ms);
	default:
		return xfer_done(x);
	}
}

static void advance_special(struct an3155_xfer *x)
{
	size_t n;

	switch (x->stage) {
	case 1:
		return xfer_send_subop(x);
	case 2:
		return xfer_send_packet(x, AN3155_STEP_PACKET1, x->data, x->len,
					AN3155_SPECIAL_MAX_DATA, x->t.special_ms);
	case 3: /* answer data length */
		return xfer_recv_answer(x, 2, x->t.special_ms);
	case 4:
		n = rx_be(x, 2);
		if (n > x->out_max)
			return xfer_fail(x, -AN3155_E_TOO_LONG);
		x->out_len = n;
		if (n > 0)
			return xfer_recv_answer(x, n, x->t.block_ms);
		x->stage++;
		__attribute__((fallthrough)); /* no answer data */
	case 5:
		if (x->out_len > 0)
			memcpy(x->out, x->rx, x->out_len);
		return xfer_recv(x, AN3155_STEP_STATUS, 2, x->t.ack_ms);
	default:
		return advance_status(x);
	}
}

static void advance_xspecial(struct an3155_xfer *x)
{
	switch (x->stage) {
	case 1:
		return xfer_send_subop(x);
	case 2:
		return xfer_send_packet(x, AN3155_STEP_PACKET1, x->data, x->len,
					AN3155_SPECIAL_MAX_DATA, x->t.ack_ms);
	case 3:
		return xfer_send_packet(x, AN3155_STEP_PACKET2, x->data2, x->len2,
					AN3155_XSPECIAL_MAX_DATA, x->t.special_ms);
	case 4:
		/* Share Special's status stages (6..8). */
		x->stage = 5;
		return xfer_recv(x, AN3155_STEP_STATUS, 2, x->t.special_ms);
	default:
		return advance_status(x);
	}
}

/* The awaited bytes of the current step are all in x->rx: decide the next step. */
static void xfer_advance(struct an3155_xfer *x)
{
	bool ack_step = x->step != AN3155_STEP_ANSWER && x->step != AN3155_STEP_STATUS;

	if (ack_step) {
		if (x->rx[0] == AN3155_NACK) {
			if (x->nack_ok)
				return xfer_done(x);
			return xfer_fail(x, -AN3155_E_NACK);
		}
		if (x->rx[0] != AN3155_ACK)
			return xfer_fail(x, -AN3155_E_UNEXPECTED);
	}
	x->stage++;

	switch (x->op) {
	case AN3155_SYNC:
		return xfer_done(x);
	case AN3155_CMD_GET:
		return advance_counted_answer(x, UINT8_MAX + 1, store_get);
	case AN3155_CMD_GET_VERSION:
		return advance_get_version(x);
	case AN3155_CMD_GET_ID:
		return advance_counted_answer(x, sizeof(x->pid), store_pid);
	case AN3155_CMD_READ_MEMORY:
		return advance_read_memory(x);
	case AN3155_CMD_WRITE_MEMORY:
		return advance_write_memory(x);
	case AN3155_CMD_EXTENDED_ERASE:
		return advance_extended_erase(x);
	case AN3155_CMD_GO:
		return advance_go(x);
	case AN3155_CMD_WRITE_PROTECT:
		return advance_write_protect(x);
	case AN3155_CMD_WRITE_UNPROTECT:
		return advance_write_unprotect(x);
	case AN3155_CMD_SPECIAL:
		return advance_special(x);
	case AN3155_CMD_EXTENDED_SPECIAL:
		return advance_xspecial(x);
	default:
		return xfer_fail(x, -EINVAL);
	}
}

size_t an3155_xfer_feed(struct an3155_xfer *x, const uint8_t *buf, size_t n)
{
	size_t used = 0;

	if (x->result != 1 || n == 0)
		return 0;
	if (x->tx_off < x->tx_len || x->rx_want == 0) {
		xfer_fail(x, -AN3155_E_UNEXPECTED);
		return 0;
	}
	while (used < n && x->result == 1 && x->tx_off == x->tx_len && x->rx_len < x->rx_want) {
		size_t take = x->rx_want - x->rx_len;

		if (take > n - used)
			take = n - used;
		memcpy(x->rx + x->rx_len, buf + used, take);
		x->rx_len += take;
		used += take;
		if (x->rx_len == x->rx_want)
			xfer_advance(x);
	}
	return used;
}

void an3155_xfer_timeout(struct an3155_xfer *x)
{
	if (x->result == 1)
		xfer_fail(x, -AN3155_E_TIMEOUT);
}

void an3155_xfer_port_gone(struct an3155_xfer *x)
{
	if (x->result == 1)
		xfer_fail(x, -AN3155_E_PORT_GONE);
}

int an3155_xfer_result(const struct an3155_xfer *x)
{
	return x->result;
}

enum an3155_step an3155_xfer_step(const struct an3155_xfer *x)
{
	return x->step;
}

bool an3155_xfer_committed(const struct an3155_xfer *x)
{
	return x->committed;
}

void an3155_xfer_describe(const struct an3155_xfer *x, char *buf, size_t size)
{
	if (!buf || size == 0)
		return;
	if (x->result >= 0) {
		snprintf(buf, size, "%s: %s", an3155_command_to_string(x->op),
			 x->result == 0 ? "done" : "running");
		return;
	}
	snprintf(buf, size, "%s: %s at the %s step", an3155_command_to_string(x->op),
		 an3155_strerror(x->result), an3155_step_to_string(x->step));
}

const struct an3155_get_info *an3155_xfer_get_info(const struct an3155_xfer *x)
{
	return &x->get;
}

const struct an3155_version_info *an3155_xfer_version_info(const struct an3155_xfer *x)
{
	return &x->version;
}

uint32_t an3155_xfer_pid(const struct an3155_xfer *x)
{
	return x->pid;
}

bool an3155_xfer_was_synced(const struct an3155_xfer *x)
{
	return x->op == AN3155_SYNC && x->result == 0 && x->rx[0] == AN3155_NACK;
}

size_t an3155_xfer_answer_len(const struct an3155_xfer *x)
{
	return x->out_len;
}

uint16_t an3155_xfer_status(const struct an3155_xfer *x)
{
	return x->status;
}

/* ---- Retry policy ---- */

bool an3155_repeat_safe(uint8_t op, uint16_t subop)
{
	switch (op) {
	case AN3155_SYNC:
	case AN3155_CMD_GET:
	case AN3155_CMD_GET_VERSION:
	case AN3155_CMD_GET_ID:
	case AN3155_CMD_READ_MEMORY:
	case AN3155_CMD_EXTENDED_ERASE:
		return true;
	case AN3155_CMD_SPECIAL:
		return subop == OSFI_OP_GET_INFO || subop == OSFI_OP_GET_CERT;
	case AN3155_CMD_EXTENDED_SPECIAL:
		return subop == OSFI_OP_PUT_DATA;
	default:
		return false;
	}
}

/* Get, Get Version and Get ID: every bootloader takes them, under readout protection too
 * (AN3155), so a NACK to one is no refusal but a stale byte of an earlier command (a chip
 * still answering what a stopped host sent it, e.g. an erase that lasts seconds): the line
 * is out of step. */
static bool nack_is_stale(const struct an3155_xfer *x)
{
	return x->op == AN3155_CMD_GET || x->op == AN3155_CMD_GET_VERSION ||
	       x->op == AN3155_CMD_GET_ID;
}

bool an3155_retry_allowed(const struct an3155_xfer *x, int r, unsigned tries, unsigned retries)
{
	if (r != -AN3155_E_TIMEOUT && r != -AN3155_E_UNEXPECTED && r != -AN3155_E_TOO_LONG &&
	    r != -AN3155_E_CHECKSUM && !(r == -AN3155_E_NACK && nack_is_stale(x)))
		return false;
	if (x->op == AN3155_SYNC || tries >= retries)
		return false;
	return !x->committed || an3155_repeat_safe(x->op, x->subop);
}

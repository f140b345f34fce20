/* AN3155 host side: encoders, decoders and the sans-I/O transaction engine. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "an3155.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const char *const error_names[_AN3155_E_MAX - AN3155_E_NACK] = {
	[AN3155_E_NACK - AN3155_E_NACK] = "the chip refused the request (NACK)",
	[AN3155_E_TIMEOUT - AN3155_E_NACK] = "no answer from the chip in time",
	[AN3155_E_CHECKSUM - AN3155_E_NACK] = "bad checksum",
	[AN3155_E_UNEXPECTED - AN3155_E_NACK] = "unexpected byte from the chip",
	[AN3155_E_TOO_LONG - AN3155_E_NACK] = "answer too long",
	[AN3155_E_PORT_GONE - AN3155_E_NACK] = "the serial port is gone",
};

const char *an3155_strerror(int r)
{
	int e = r < 0 ? -r : r;

	if (e >= AN3155_E_NACK && e < _AN3155_E_MAX)
		return error_names[e - AN3155_E_NACK];
	return strerror(e);
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

int an3155_encode_write_block(const uint8_t *data, size_t n, uint8_t *out, size_t outmax)
{
	size_t padded = (n + 3) & ~(size_t)3;

	if (!data || !out || n == 0 || n > AN3155_MAX_BLOCK)
		return -EINVAL;
	if (outmax < padded + 2)
		return -ENOBUFS;
	out[0] = (uint8_t)(padded - 1);
	memcpy(out + 1, data, n);
	memset(out + 1 + n, 0xff, padded - n);
	out[1 + padded] = an3155_xor(out, 1 + padded);
	return (int)(padded + 2);
}

int an3155_encode_erase_special(uint16_t code, uint8_t *out, size_t outmax)
{
	if (!out || code < 0xfff0)
		return -EINVAL;
	if (outmax < 3)
		return -ENOBUFS;
	out[0] = code >> 8;
	out[1] = code & 0xff;
	out[2] = out[0] ^ out[1];
	return 3;
}

int an3155_encode_erase_pages(const uint16_t *pages, size_t n, uint8_t *out, size_t outmax)
{
	size_t len = 2 + 2 * n + 1;

	if (!pages || !out || n == 0 || n > AN3155_ERASE_MAX_PAGES)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (pages[i] >= 0xfff0)
			return -EINVAL;
	if (outmax < len)
		return -ENOBUFS;
	out[0] = (uint8_t)((n - 1) >> 8);
	out[1] = (uint8_t)(n - 1);
	for (size_t i = 0; i < n; i++) {
		out[2 + 2 * i] = pages[i] >> 8;
		out[3 + 2 * i] = pages[i] & 0xff;
	}
	out[len - 1] = an3155_xor(out, len - 1);
	return (int)len;
}

int an3155_encode_write_protect(const uint8_t *sectors, size_t n, uint8_t *out, size_t outmax)
{
	if (!sectors || !out || n == 0 || n > AN3155_WP_MAX_SECTORS)
		return -EINVAL;
	if (outmax < n + 2)
		return -ENOBUFS;
	out[0] = (uint8_t)(n - 1);
	memcpy(out + 1, sectors, n);
	out[n + 1] = an3155_xor(out, n + 1);
	return (int)(n + 2);
}

int an3155_encode_subop(uint16_t subop, uint8_t *out, size_t outmax)
{
	if (!out)
		return -EINVAL;
	if (outmax < 3)
		return -ENOBUFS;
	out[0] = subop >> 8;
	out[1] = subop & 0xff;
	out[2] = out[0] ^ out[1];
	return 3;
}

int an3155_encode_packet(const uint8_t *data, size_t n, size_t max, uint8_t *out, size_t outmax)
{
	if (!out || n > max || n > 0xffff || (n > 0 && !data))
		return -EINVAL;
	if (outmax < n + 3)
		return -ENOBUFS;
	out[0] = (uint8_t)(n >> 8);
	out[1] = (uint8_t)n;
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

static void xfer_send_command(struct an3155_xfer *x)
{
	xfer_send(x, AN3155_STEP_COMMAND, an3155_encode_command(x->op, x->tx, sizeof(x->tx)), 1,
		  x->t.ack_ms);
}

static void xfer_send_address(struct an3155_xfer *x)
{
	xfer_send(x, AN3155_STEP_ADDRESS, an3155_encode_address(x->addr, x->tx, sizeof(x->tx)),
		  1, x->t.ack_ms);
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
	xfer_reset(x, t, AN3155_CMD_GET);
	xfer_send_command(x);
}

void an3155_xfer_get_version(struct an3155_xfer *x, const struct an3155_timeouts *t)
{
	xfer_reset(x, t, AN3155_CMD_GET_VERSION);
	xfer_send_command(x);
}

void an3155_xfer_get_id(struct an3155_xfer *x, const struct an3155_timeouts *t)
{
	xfer_reset(x, t, AN3155_CMD_GET_ID);
	xfer_send_command(x);
}

int an3155_xfer_read_memory(struct an3155_xfer *x, const struct an3155_timeouts *t,
			    uint32_t addr, uint8_t *out, size_t n)
{
	if (!out || n == 0 || n > AN3155_MAX_BLOCK)
		return -EINVAL;
	xfer_reset(x, t, AN3155_CMD_READ_MEMORY);
	x->addr = addr;
	x->out = out;
	x->out_max = n;
	x->len = n;
	xfer_send_command(x);
	return 0;
}

int an3155_xfer_write_memory(struct an3155_xfer *x, const struct an3155_timeouts *t,
			     uint32_t addr, const uint8_t *data, size_t n)
{
	if (!data || n == 0 || n > AN3155_MAX_BLOCK)
		return -EINVAL;
	xfer_reset(x, t, AN3155_CMD_WRITE_MEMORY);
	x->addr = addr;
	x->data = data;
	x->len = n;
	xfer_send_command(x);
	return 0;
}

int an3155_xfer_erase_special(struct an3155_xfer *x, const struct an3155_timeouts *t,
			      uint16_t code)
{
	if (code != AN3155_ERASE_MASS && code != AN3155_ERASE_BANK1 && code != AN3155_ERASE_BANK2)
		return -EINVAL;
	xfer_reset(x, t, AN3155_CMD_EXTENDED_ERASE);
	x->erase_code = code;
	xfer_send_command(x);
	return 0;
}

int an3155_xfer_erase_pages(struct an3155_xfer *x, const struct an3155_timeouts *t,
			    const uint16_t *pages, size_t n)
{
	if (!pages || n == 0 || n > AN3155_ERASE_MAX_PAGES)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (pages[i] >= 0xfff0)
			return -EINVAL;
	xfer_reset(x, t, AN3155_CMD_EXTENDED_ERASE);
	x->pages = pages;
	x->len = n;
	xfer_send_command(x);
	return 0;
}

void an3155_xfer_go(struct an3155_xfer *x, const struct an3155_timeouts *t, uint32_t addr)
{
	xfer_reset(x, t, AN3155_CMD_GO);
	x->addr = addr;
	xfer_send_command(x);
}

int an3155_xfer_write_protect(struct an3155_xfer *x, const struct an3155_timeouts *t,
			      const uint8_t *sectors, size_t n)
{
	if (!sectors || n == 0 || n > AN3155_WP_MAX_SECTORS)
		return -EINVAL;
	xfer_reset(x, t, AN3155_CMD_WRITE_PROTECT);
	x->data = sectors;
	x->len = n;
	xfer_send_command(x);
	return 0;
}

void an3155_xfer_write_unprotect(struct an3155_xfer *x, const struct an3155_timeouts *t)
{
	xfer_reset(x, t, AN3155_CMD_WRITE_UNPROTECT);
	xfer_send_command(x);
}

int an3155_xfer_special(struct an3155_xfer *x, const struct an3155_timeouts *t, uint16_t subop,
			const uint8_t *data, size_t n, uint8_t *out, size_t out_max)
{
	if (n > AN3155_SPECIAL_MAX_DATA || (n > 0 && !data) || (out_max > 0 && !out))
		return -EINVAL;
	xfer_reset(x, t, AN3155_CMD_SPECIAL);
	x->subop = subop;
	x->data = data;
	x->len = n;
	x->out = out;
	x->out_max = out_max > AN3155_SPECIAL_MAX_ANSWER ? AN3155_SPECIAL_MAX_ANSWER : out_max;
	xfer_send_command(x);
	return 0;
}

int an3155_xfer_xspecial(struct an3155_xfer *x, const struct an3155_timeouts *t,
			 uint16_t subop, const uint8_t *p1, size_t n1, const uint8_t *p2,
			 size_t n2)
{
	if (n1 > AN3155_SPECIAL_MAX_DATA || (n1 > 0 && !p1) || n2 > AN3155_XSPECIAL_MAX_DATA ||
	    (n2 > 0 && !p2))
		return -EINVAL;
	xfer_reset(x, t, AN3155_CMD_EXTENDED_SPECIAL);
	x->subop = subop;
	x->data = p1;
	x->len = n1;
	x->data2 = p2;
	x->len2 = n2;
	xfer_send_command(x);
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

/* Big-endian 16-bit value of the first two received bytes. */
static size_t rx_u16(const struct an3155_xfer *x)
{
	return (size_t)x->rx[0] << 8 | x->rx[1];
}

/* The awaited bytes of the current step are all in x->rx: decide the next step. */
static void xfer_advance(struct an3155_xfer *x)
{
	bool ack_step = x->step != AN3155_STEP_ANSWER && x->step != AN3155_STEP_STATUS;
	size_t n;
	int r;

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
		switch (x->stage) {
		case 1: /* N */
			return xfer_recv(x, AN3155_STEP_ANSWER, 1, x->t.ack_ms);
		case 2: /* version + N codes; keep N in front for the decoder */
			x->len = x->rx[0];
			return xfer_recv(x, AN3155_STEP_ANSWER, x->len + 1, x->t.ack_ms);
		case 3:
			x->get.n_cmds = (uint8_t)x->len;
			x->get.version = x->rx[0];
			memcpy(x->get.cmds, x->rx + 1, x->len);
			return xfer_recv(x, AN3155_STEP_FINAL_ACK, 1, x->t.ack_ms);
		default:
			return xfer_done(x);
		}

	case AN3155_CMD_GET_VERSION:
		switch (x->stage) {
		case 1:
			return xfer_recv(x, AN3155_STEP_ANSWER, 3, x->t.ack_ms);
		case 2:
			an3155_decode_get_version(x->rx, 3, &x->version);
			return xfer_recv(x, AN3155_STEP_FINAL_ACK, 1, x->t.ack_ms);
		default:
			return xfer_done(x);
		}

	case AN3155_CMD_GET_ID:
		switch (x->stage) {
		case 1:
			return xfer_recv(x, AN3155_STEP_ANSWER, 1, x->t.ack_ms);
		case 2:
			if ((size_t)x->rx[0] + 1 > 4)
				return xfer_fail(x, -AN3155_E_TOO_LONG);
			x->len = x->rx[0];
			return xfer_recv(x, AN3155_STEP_ANSWER, x->len + 1, x->t.ack_ms);
		case 3:
			x->pid = 0;
			for (size_t i = 0; i <= x->len; i++)
				x->pid = x->pid << 8 | x->rx[i];
			return xfer_recv(x, AN3155_STEP_FINAL_ACK, 1, x->t.ack_ms);
		default:
			return xfer_done(x);
		}

	case AN3155_CMD_READ_MEMORY:
		switch (x->stage) {
		case 1:
			return xfer_send_address(x);
		case 2:
			r = an3155_encode_read_count(x->len, x->tx, sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_COUNT, (size_t)r, 1, x->t.ack_ms);
		case 3:
			return xfer_recv(x, AN3155_STEP_ANSWER, x->len, x->t.block_ms);
		default:
			memcpy(x->out, x->rx, x->len);
			x->out_len = x->len;
			return xfer_done(x);
		}

	case AN3155_CMD_WRITE_MEMORY:
		switch (x->stage) {
		case 1:
			return xfer_send_address(x);
		case 2:
			r = an3155_encode_write_block(x->data, x->len, x->tx, sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_DATA, (size_t)r, 1, x->t.block_ms);
		default:
			return xfer_done(x);
		}

	case AN3155_CMD_EXTENDED_ERASE:
		if (x->stage > 1)
			return xfer_done(x);
		if (x->pages) {
			unsigned long ms = (unsigned long)x->t.page_erase_ms * x->len;

			r = an3155_encode_erase_pages(x->pages, x->len, x->tx, sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_DATA, (size_t)r, 1,
					 ms > 600000 ? 600000 : (unsigned)ms);
		}
		r = an3155_encode_erase_special(x->erase_code, x->tx, sizeof(x->tx));
		return xfer_send(x, AN3155_STEP_DATA, (size_t)r, 1, x->t.mass_erase_ms);

	case AN3155_CMD_GO:
		if (x->stage == 1)
			return xfer_send_address(x);
		return xfer_done(x);

	case AN3155_CMD_WRITE_PROTECT:
		if (x->stage == 1) {
			r = an3155_encode_write_protect(x->data, x->len, x->tx, sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_DATA, (size_t)r, 1, x->t.block_ms);
		}
		return xfer_done(x);

	case AN3155_CMD_WRITE_UNPROTECT:
		if (x->stage == 1)
			return xfer_recv(x, AN3155_STEP_FINAL_ACK, 1, x->t.block_ms);
		return xfer_done(x);

	case AN3155_CMD_SPECIAL:
		switch (x->stage) {
		case 1:
			r = an3155_encode_subop(x->subop, x->tx, sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_SUBOP, (size_t)r, 1, x->t.ack_ms);
		case 2:
			r = an3155_encode_packet(x->data, x->len, AN3155_SPECIAL_MAX_DATA, x->tx,
						 sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_PACKET1, (size_t)r, 1, x->t.special_ms);
		case 3: /* answer data length */
			return xfer_recv(x, AN3155_STEP_ANSWER, 2, x->t.special_ms);
		case 4:
			n = rx_u16(x);
			if (n > x->out_max)
				return xfer_fail(x, -AN3155_E_TOO_LONG);
			x->out_len = n;
			if (n > 0)
				return xfer_recv(x, AN3155_STEP_ANSWER, n, x->t.block_ms);
			x->stage++;
			__attribute__((fallthrough)); /* no answer data */
		case 5:
			if (x->out_len > 0)
				memcpy(x->out, x->rx, x->out_len);
			return xfer_recv(x, AN3155_STEP_STATUS, 2, x->t.ack_ms);
		default:
			break;
		}
		goto status;

	case AN3155_CMD_EXTENDED_SPECIAL:
		switch (x->stage) {
		case 1:
			r = an3155_encode_subop(x->subop, x->tx, sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_SUBOP, (size_t)r, 1, x->t.ack_ms);
		case 2:
			r = an3155_encode_packet(x->data, x->len, AN3155_SPECIAL_MAX_DATA, x->tx,
						 sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_PACKET1, (size_t)r, 1, x->t.ack_ms);
		case 3:
			r = an3155_encode_packet(x->data2, x->len2, AN3155_XSPECIAL_MAX_DATA,
						 x->tx, sizeof(x->tx));
			return xfer_send(x, AN3155_STEP_PACKET2, (size_t)r, 1, x->t.special_ms);
		case 4:
			/* Share Special's status stages (6..8). */
			x->stage = 5;
			return xfer_recv(x, AN3155_STEP_STATUS, 2, x->t.special_ms);
		default:
			break;
		}
		goto status;

	default:
		return xfer_fail(x, -EINVAL);
	}

status:
	/* Stages 6.. of Special: status length, status bytes (MSB first), closing ACK. */
	switch (x->stage) {
	case 6:
		n = rx_u16(x);
		if (n > 2)
			return xfer_fail(x, -AN3155_E_TOO_LONG);
		x->len2 = n;
		if (n > 0)
			return xfer_recv(x, AN3155_STEP_STATUS, n, x->t.ack_ms);
		x->stage++;
		__attribute__((fallthrough)); /* empty status */
	case 7:
		x->status = 0;
		for (size_t i = 0; i < x->len2; i++)
			x->status = (uint16_t)(x->status << 8 | x->rx[i]);
		return xfer_recv(x, AN3155_STEP_FINAL_ACK, 1, x->t.ack_ms);
	default:
		return xfer_done(x);
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

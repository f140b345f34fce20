/* The UART backend of the link vtable: AN3155 over a serial port (link.h opens it), driven
 * without blocking. One an3155 transfer runs at a time on the port's descriptor; the
 * retry policy is protocol/an3155's (an3155_retry_allowed, AN3155_RESYNC_ROUNDS). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "link.h"
#include "transport-internal.h"

#define QUIET_MS 20		/* silence that ends draining before and after a sync round */
#define RESYNC_TRY_MS 20	/* wait for an answer to one 0x7F while resynchronising */
#define RESYNC_MS 3000		/* time allowed to resynchronise before a retry */

struct uart;
typedef void (*uart_fn)(struct uart *u, int r);

enum uart_phase {
	PH_IDLE,
	PH_XFER,		/* a transfer runs */
	PH_QUIET,		/* dropping input until the line is quiet */
	PH_WAIT,		/* an entry-sequence wait: dropping input until the deadline */
};

struct uart {
	struct transport *t;
	struct link *link;
	int fd;
	struct an3155_timeouts tmo;
	unsigned baud;
	struct link_entry_step entry[LINK_ENTRY_MAX_STEPS];
	size_t n_entry, entry_pos;

	enum uart_phase phase;
	int64_t deadline;	/* of the phase; -1 none */
	bool want_out;		/* the transfer waits for room to write */

	/* The transfer. */
	struct an3155_xfer x;
	unsigned gen;		/* changes whenever a transfer ends */
	unsigned armed;		/* wait_id of the armed timer */
	int64_t wire_ms;	/* time the last bytes written take on the line */
	uart_fn xfer_done;

	/* A command run under the retry policy. */
	struct an3155_xfer x_initial, x_failed;
	unsigned tries, rounds, sync_tries;
	int64_t resync_deadline;
	uart_fn cmd_done;
	void (*after_quiet)(struct uart *u);

	/* The operation. */
	enum transport_presence *ret_presence;
	struct transport_identity *ret_id;
	struct transport_answer *ret_answer;
	uint8_t *answer;
	size_t answer_max;
	int64_t op_deadline;
	bool reconnecting;
	bool id_osfi;		/* identify: the Get list names Special and Extended Special */

	/* A memory operation: split into commands of one block or one page list each. */
	uint32_t mem_addr;
	uint8_t *mem_out;
	const uint8_t *mem_in;
	size_t mem_len, mem_off;	/* bytes (pages for an erase) done so far */
	const uint16_t *mem_pages;
	bool mem_block;			/* a failure names the block's address */
	uint32_t mem_at;
	uint8_t tail[AN3155_MAX_BLOCK];
	char error[256];
};

static struct uart *U(const struct transport *t)
{
	return transport_priv(t);
}

static int64_t now(const struct uart *u)
{
	return transport_now_ms(u->t);
}

static void dump(const struct uart *u, const char *arrow, const uint8_t *buf, size_t n)
{
	char hex[3 * 16 + 1] = "";

	if (!transport_options(u->t)->debug)
		return;
	for (size_t i = 0; i < n && i < 16; i++)
		snprintf(hex + 3 * i, 4, " %02x", buf[i]);
	transport_debug(u->t, "%s%s%s (%zu bytes)", arrow, hex, n > 16 ? " ..." : "", n);
}

/* Ends the operation with r. */
static void op_end(struct uart *u, int r)
{
	u->phase = PH_IDLE;
	u->deadline = -1;
	u->want_out = false;
	if (r == -AN3155_E_PORT_GONE)
		snprintf(u->error, sizeof(u->error), "serial port %s is gone (adapter unplugged?)",
			 link_port_name(u->link));
	else if (r < 0 && u->reconnecting &&
		 (r == -AN3155_E_TIMEOUT || r == -AN3155_E_UNEXPECTED))
		snprintf(u->error, sizeof(u->error), "no bootloader answers on %s (chip absent, not "
			 "in its bootloader, or wrong entry sequence)", link_port_name(u->link));
	else if (r < 0 && u->mem_block) {
		char what[200];

		an3155_xfer_describe(&u->x, what, sizeof(what));
		snprintf(u->error, sizeof(u->error), "%s at 0x%08x", what, u->mem_at);
	} else if (r < 0)
		an3155_xfer_describe(&u->x, u->error, sizeof(u->error));
	u->reconnecting = false;
	u->mem_block = false;
	transport_complete(u->t, r);
}

/* ---- one transfer ---- */

static void xfer_end(struct uart *u)
{
	uart_fn fn = u->xfer_done;

	u->phase = PH_IDLE;
	u->deadline = -1;
	u->want_out = false;
	u->xfer_done = NULL;
	u->gen++;
	fn(u, an3155_xfer_result(&u->x));
}

/* Runs the engine until it waits for bytes, for room to write, or ends. */
static void xfer_pump(struct uart *u)
{
	while (u->phase == PH_XFER) {
		struct an3155_io io;

		if (an3155_xfer_next(&u->x, &io) != AN3155_NEXT_IO) {
			xfer_end(u);
			return;
		}
		if (io.tx_len > 0) {
			ssize_t w = write(u->fd, io.tx, io.tx_len);

			if (w > 0) {
				dump(u, "->", io.tx, (size_t)w);
				an3155_xfer_wrote(&u->x, (size_t)w);
				/* The step's timeout counts from when the bytes have left at
				 * the line rate. */
				u->wire_ms += (int64_t)w * 11000 / u->baud + 1;
				u->want_out = false;
				continue;
			}
			if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
				u->want_out = true;
				return;
			}
			an3155_xfer_port_gone(&u->x);
			continue;
		}
		if (io.wait_id != u->armed) {
			u->armed = io.wait_id;
			u->deadline = now(u) + io.timeout_ms + u->wire_ms;
			u->wire_ms = 0;
		}
		return;
	}
}

static void xfer_run(struct uart *u, uart_fn done)
{
	u->phase = PH_XFER;
	u->xfer_done = done;
	u->armed = 0;
	u->wire_ms = 0;
	u->deadline = -1;
	xfer_pump(u);
}

/* ---- a command under the retry policy ---- */

static void cmd_xfer_done(struct uart *u, int r);
static void resync_round(struct uart *u);

static void quiet(struct uart *u, void (*then)(struct uart *u))
{
	int64_t until = now(u) + QUIET_MS;

	u->phase = PH_QUIET;
	u->after_quiet = then;
	u->deadline = until < u->resync_deadline ? until : u->resync_deadline;
}

static void resync_ok(struct uart *u)
{
	transport_debug(u->t, "%s: resynchronised", link_port_name(u->link));
	u->x = u->x_initial;
	xfer_run(u, cmd_xfer_done);
}

static void resync_failed(struct uart *u, int r)
{
	if (r == -AN3155_E_PORT_GONE) {
		u->cmd_done(u, r);
		return;
	}
	/* Report the original failure: it names the step that went wrong. */
	u->x = u->x_failed;
	u->cmd_done(u, an3155_xfer_result(&u->x));
}

static void resync_try(struct uart *u);

static void resync_try_done(struct uart *u, int r)
{
	if ((r == -AN3155_E_TIMEOUT || r == -AN3155_E_UNEXPECTED) && now(u) < u->resync_deadline) {
		/* A chip in the middle of a command takes each 0x7F as data: keep offering
		 * them until its command ends and it answers. */
		resync_try(u);
		return;
	}
	if (r < 0) {
		resync_failed(u, r);
		return;
	}
	transport_debug(u->t, "%s: %s after %u tr%s", link_port_name(u->link),
			an3155_xfer_was_synced(&u->x) ? "NACK (already synced)" : "ACK", u->sync_tries,
			u->sync_tries == 1 ? "y" : "ies");
	u->rounds++;
	quiet(u, u->rounds < AN3155_RESYNC_ROUNDS ? resync_round : resync_ok);
}

static void resync_try(struct uart *u)
{
	struct an3155_timeouts t = u->tmo;

	t.ack_ms = RESYNC_TRY_MS;
	u->sync_tries++;
	an3155_xfer_sync(&u->x, &t);
	xfer_run(u, resync_try_done);
}

static void resync_round(struct uart *u)
{
	u->sync_tries = 0;
	resync_try(u);
}

static void cmd_xfer_done(struct uart *u, int r)
{
	const struct transport_options *o = transport_options(u->t);

	if (r < 0 && an3155_retry_allowed(&u->x, r, u->tries, o->retries)) {
		char what[160];

		u->tries++;
		an3155_xfer_describe(&u->x, what, sizeof(what));
		transport_debug(u->t, "%s; resync and retry %u of %u", what, u->tries, o->retries);
		u->x_failed = u->x;
		u->rounds = 0;
		u->resync_deadline = now(u) + RESYNC_MS;
		/* What the chip still sends is dropped until the line is quiet. */
		quiet(u, resync_round);
		return;
	}
	u->cmd_done(u, r);
}

/* Runs the started transfer u->x with the retry policy; done gets the final result. */
static void cmd_run(struct uart *u, uart_fn done)
{
	u->x_initial = u->x;
	u->tries = 0;
	u->cmd_done = done;
	xfer_run(u, cmd_xfer_done);
}

/* ---- probe ---- */

static void probe_done(struct uart *u, int r)
{
	if (r == 0 && u->ret_presence)
		*u->ret_presence = an3155_xfer_was_synced(&u->x) ? TRANSPORT_PRESENT : TRANSPORT_FRESH;
	op_end(u, r);
}

/* One 0x7F with the whole step timeout: a synchronised bootloader NACKs it, one that just
 * started ACKs it. */
static void probe_sync(struct uart *u)
{
	an3155_xfer_sync(&u->x, &u->tmo);
	xfer_run(u, probe_done);
}

/* Runs the entry sequence from entry_pos on; its waits drop what the chip sends. */
static void entry_step(struct uart *u)
{
	while (u->entry_pos < u->n_entry) {
		const struct link_entry_step *st = &u->entry[u->entry_pos++];
		int r = 0;

		switch (st->kind) {
		case LINK_ENTRY_DTR:
			r = link_set_lines(u->link, (int)st->value, -1);
			break;
		case LINK_ENTRY_RTS:
			r = link_set_lines(u->link, -1, (int)st->value);
			break;
		case LINK_ENTRY_WAIT:
			u->phase = PH_WAIT;
			u->deadline = now(u) + st->value;
			return;
		case _LINK_ENTRY_MAX:
			break;
		}
		if (r == -AN3155_E_PORT_GONE) {
			op_end(u, r);
			return;
		}
	}
	u->entry_pos = 0;
	tcflush(u->fd, TCIFLUSH);
	probe_sync(u);
}

static int uart_probe(struct transport *t, unsigned flags, enum transport_presence *ret)
{
	struct uart *u = U(t);

	u->ret_presence = ret;
	if ((flags & TRANSPORT_PROBE_ENTER) && u->n_entry > 0) {
		u->entry_pos = 0;
		entry_step(u);
		return 0;
	}
	probe_sync(u);
	return 0;
}

/* ---- identify ---- */

static void identify_pid(struct uart *u, int r)
{
	if (r == 0 && u->ret_id) {
		u->ret_id->pid = an3155_xfer_pid(&u->x);
		u->ret_id->osfi = u->id_osfi;
	}
	op_end(u, r);
}

static void identify_get(struct uart *u, int r)
{
	const struct an3155_get_info *g;

	if (r < 0) {
		op_end(u, r);
		return;
	}
	g = an3155_xfer_get_info(&u->x);
	if (u->ret_id) {
		*u->ret_id = (struct transport_identity){ .version = g->version };
	}
	/* The command list is the chip's word on what it supports: OSFI needs Get ID, Special
	 * and Extended Special (docs/protocol.md section 5). The product id is read whenever
	 * Get ID is there: plain programming needs it to know the chip's memory. */
	u->id_osfi = an3155_get_has(g, AN3155_CMD_SPECIAL) &&
		     an3155_get_has(g, AN3155_CMD_EXTENDED_SPECIAL);
	if (!an3155_get_has(g, AN3155_CMD_GET_ID)) {
		op_end(u, 0);
		return;
	}
	an3155_xfer_get_id(&u->x, &u->tmo);
	cmd_run(u, identify_pid);
}

static int uart_identify(struct transport *t, struct transport_identity *ret)
{
	struct uart *u = U(t);

	u->ret_id = ret;
	an3155_xfer_get(&u->x, &u->tmo);
	cmd_run(u, identify_get);
	return 0;
}

/* ---- one OSFI request ---- */

/* OSFI's sub-commands with a second packet travel in Extended Special (0x51), the others in
 * Special (0x50): docs/protocol.md section 5. */
static bool osfi_subop_extended(uint16_t subop)
{
	return subop == OSFI_OP_PUT_LICENSE || subop == OSFI_OP_PUT_DATA;
}

static void osfi_done(struct uart *u, int r)
{
	if (r == 0 && u->ret_answer) {
		u->ret_answer->status = an3155_xfer_status(&u->x);
		u->ret_answer->len = an3155_xfer_answer_len(&u->x);
	}
	op_end(u, r);
}

static int uart_osfi(struct transport *t, const struct osfi_request *req, uint8_t *answer,
		     size_t answer_max, struct transport_answer *ret)
{
	struct uart *u = U(t);
	int r;

	u->ret_answer = ret;
	if (ret)
		*ret = (struct transport_answer){ 0 };
	if (osfi_subop_extended(req->subop))
		r = an3155_xfer_xspecial(&u->x, &u->tmo, req->subop, req->p1, req->n1, req->p2,
					 req->n2);
	else
		r = an3155_xfer_special(&u->x, &u->tmo, req->subop, req->p1, req->n1, answer,
					answer_max);
	if (r < 0)
		return r;
	cmd_run(u, osfi_done);
	return 0;
}

/* ---- memory: read, write, erase, go ---- */

/* The next piece of a transfer split into commands of at most max units. */
static size_t piece(size_t left, size_t max)
{
	return left < max ? left : max;
}

static void read_next(struct uart *u, int r)
{
	size_t n;

	if (r < 0) {
		op_end(u, r);
		return;
	}
	if (u->mem_off == u->mem_len) {
		op_end(u, 0);
		return;
	}
	n = piece(u->mem_len - u->mem_off, AN3155_MAX_BLOCK);
	u->mem_at = u->mem_addr + (uint32_t)u->mem_off;
	r = an3155_xfer_read_memory(&u->x, &u->tmo, u->mem_at, u->mem_out + u->mem_off, n);
	if (r < 0) {
		op_end(u, r);
		return;
	}
	u->mem_off += n;
	/* Read Memory changes nothing: the policy runs it again after a lost block. */
	cmd_run(u, read_next);
}

static int uart_read(struct transport *t, uint32_t addr, uint8_t *buf, size_t len)
{
	struct uart *u = U(t);

	u->mem_addr = addr;
	u->mem_out = buf;
	u->mem_len = len;
	u->mem_off = 0;
	u->mem_block = true;
	read_next(u, 0);
	return 0;
}

static void write_next(struct uart *u, int r)
{
	const uint8_t *block;
	size_t n, sent;
	unsigned unit;

	if (r < 0) {
		op_end(u, r);
		return;
	}
	if (u->mem_off == u->mem_len) {
		op_end(u, 0);
		return;
	}
	n = piece(u->mem_len - u->mem_off, AN3155_MAX_BLOCK);
	u->mem_at = u->mem_addr + (uint32_t)u->mem_off;
	unit = transport_write_unit(u->mem_at);
	block = u->mem_in + u->mem_off;
	sent = n;
	/* Blocks are 256 bytes; only the last may need padding to the write unit. */
	if (n % unit != 0) {
		sent = (n + unit - 1) & ~(size_t)(unit - 1);
		memcpy(u->tail, block, n);
		memset(u->tail + n, 0xff, sent - n);
		block = u->tail;
	}
	r = an3155_xfer_write_memory(&u->x, &u->tmo, u->mem_at, block, sent);
	if (r < 0) {
		op_end(u, r);
		return;
	}
	u->mem_off += n;
	/* The policy never sends a Write Memory again once its data reached the chip. */
	cmd_run(u, write_next);
}

static int uart_write(struct transport *t, uint32_t addr, const uint8_t *data, size_t len)
{
	struct uart *u = U(t);

	u->mem_addr = addr;
	u->mem_in = data;
	u->mem_len = len;
	u->mem_off = 0;
	u->mem_block = true;
	write_next(u, 0);
	return 0;
}

static void erase_next(struct uart *u, int r)
{
	size_t k;

	if (r < 0 || u->mem_off == u->mem_len) {
		op_end(u, r);
		return;
	}
	k = piece(u->mem_len - u->mem_off, AN3155_ERASE_MAX_PAGES);
	r = an3155_xfer_erase_pages(&u->x, &u->tmo, u->mem_pages + u->mem_off, k);
	if (r < 0) {
		op_end(u, r);
		return;
	}
	u->mem_off += k;
	/* Extended Erase may be sent again: erasing twice erases the same. */
	cmd_run(u, erase_next);
}

static void mem_done(struct uart *u, int r)
{
	op_end(u, r);
}

static int uart_erase(struct transport *t, const uint16_t *sectors, size_t n)
{
	struct uart *u = U(t);
	int r;

	if (n == 0) {
		r = an3155_xfer_erase_special(&u->x, &u->tmo, AN3155_ERASE_MASS);
		if (r < 0)
			return r;
		cmd_run(u, mem_done);
		return 0;
	}
	u->mem_pages = sectors;
	u->mem_len = n;
	u->mem_off = 0;
	erase_next(u, 0);
	return 0;
}

static int uart_go(struct transport *t, uint32_t addr)
{
	struct uart *u = U(t);

	u->mem_at = addr;
	u->mem_block = true;
	an3155_xfer_go(&u->x, &u->tmo, addr);
	/* Never sent again once its address reached the chip: the code may run already. */
	cmd_run(u, mem_done);
	return 0;
}

/* ---- reconnect after the chip's reset ---- */

static void reconnect_try(struct uart *u);

static void reconnect_try_done(struct uart *u, int r)
{
	if ((r == -AN3155_E_TIMEOUT || r == -AN3155_E_UNEXPECTED) && now(u) < u->op_deadline) {
		reconnect_try(u);
		return;
	}
	if (r == 0)
		transport_debug(u->t, "%s: %s after %u tr%s", link_port_name(u->link),
				an3155_xfer_was_synced(&u->x) ? "NACK (already synced)" : "ACK",
				u->sync_tries, u->sync_tries == 1 ? "y" : "ies");
	op_end(u, r);
}

/* One 0x7F at a time, each given the whole step timeout: only one is ever in flight, so
 * the answer is to it and the chip waits for a command right after, with no quiet time in
 * which the host says nothing (a fixture that swaps a finalized chip when the host falls
 * silent must not see one). */
static void reconnect_try(struct uart *u)
{
	u->sync_tries++;
	an3155_xfer_sync(&u->x, &u->tmo);
	xfer_run(u, reconnect_try_done);
}

static int uart_reconnect(struct transport *t, unsigned within_ms)
{
	struct uart *u = U(t);

	u->op_deadline = now(u) + within_ms;
	u->sync_tries = 0;
	u->reconnecting = true;
	tcflush(u->fd, TCIFLUSH);
	reconnect_try(u);
	return 0;
}

/* ---- the loop's side ---- */

static void uart_watch(const struct transport *t, struct transport_watch *ret)
{
	const struct uart *u = U(t);

	ret->fd = u->fd;
	ret->events = TRANSPORT_IN | (u->phase == PH_XFER && u->want_out ? TRANSPORT_OUT : 0);
	ret->deadline_ms = u->phase == PH_IDLE || (u->phase == PH_XFER && u->want_out)
				   ? -1 : u->deadline;
}

/* The port vanished: the running transfer ends with it, or the owner is told. */
static void uart_gone(struct uart *u)
{
	if (u->phase == PH_XFER) {
		an3155_xfer_port_gone(&u->x);
		xfer_pump(u);
	} else if (u->phase != PH_IDLE) {
		op_end(u, -AN3155_E_PORT_GONE);
	} else {
		transport_port_lost(u->t);
	}
}

static void uart_input(struct uart *u, unsigned revents)
{
	uint8_t buf[2048];
	ssize_t n = read(u->fd, buf, sizeof(buf));

	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(revents & TRANSPORT_ERR))
		return;
	if (n <= 0) {
		/* EOF or EIO: the adapter was unplugged. */
		uart_gone(u);
		return;
	}
	dump(u, "<-", buf, (size_t)n);
	switch (u->phase) {
	case PH_IDLE:
		transport_debug(u->t, "dropped %zd bytes received outside a command", n);
		return;
	case PH_QUIET: {
		int64_t until = now(u) + QUIET_MS;

		u->deadline = until < u->resync_deadline ? until : u->resync_deadline;
		return;
	}
	case PH_WAIT:
		return;
	case PH_XFER:
		break;
	}
	for (size_t off = 0; off < (size_t)n && u->phase == PH_XFER;) {
		unsigned gen = u->gen;
		size_t k = an3155_xfer_feed(&u->x, buf + off, (size_t)n - off);

		off += k;
		xfer_pump(u);
		/* Bytes left over belong to the transfer that just ended, not to the next. */
		if (gen != u->gen || k == 0)
			break;
	}
}

static void uart_io_ready(struct transport *t, unsigned revents)
{
	struct uart *u = U(t);

	if (revents & (TRANSPORT_IN | TRANSPORT_ERR)) {
		unsigned gen = u->gen;
		enum uart_phase phase = u->phase;

		uart_input(u, revents);
		/* The input ended the transfer (and maybe started the next): the deadline
		 * belongs to the new one. */
		if (gen != u->gen || phase != u->phase)
			return;
	}
	if ((revents & TRANSPORT_OUT) && u->phase == PH_XFER && u->want_out) {
		xfer_pump(u);
		return;
	}
	if (u->phase == PH_IDLE || u->deadline < 0 || now(u) < u->deadline)
		return;
	switch (u->phase) {
	case PH_XFER:
		an3155_xfer_timeout(&u->x);
		xfer_pump(u);
		return;
	case PH_QUIET:
		u->phase = PH_IDLE;
		u->after_quiet(u);
		return;
	case PH_WAIT:
		u->phase = PH_IDLE;
		entry_step(u);
		return;
	case PH_IDLE:
		return;
	}
}

static void uart_cancel(struct transport *t)
{
	struct uart *u = U(t);

	u->phase = PH_IDLE;
	u->deadline = -1;
	u->want_out = false;
	u->entry_pos = 0;
	u->reconnecting = false;
	u->mem_block = false;
	u->gen++;
}

/* ---- open, close ---- */

static bool uart_handles(const char *spec)
{
	return spec != NULL;
}

static int uart_open(struct transport *t, const char *spec, char *err, size_t err_size)
{
	const struct transport_options *o = transport_options(t);
	struct uart *u = U(t);
	struct link_options lo;
	int r;

	u->t = t;
	u->fd = -1;
	u->deadline = -1;
	link_options_default(&lo);
	if (o->baud)
		lo.baud = o->baud;
	an3155_timeouts_default(&lo.timeouts);
	if (o->step_ms)
		lo.timeouts.ack_ms = o->step_ms;
	if (o->block_ms)
		lo.timeouts.block_ms = o->block_ms;
	if (o->answer_ms)
		lo.timeouts.special_ms = o->answer_ms;
	lo.retries = o->retries;
	lo.resync_ms = RESYNC_MS;
	lo.debug = o->debug;
	lo.user_data = o->user_data;
	if (o->entry) {
		r = link_entry_parse(o->entry, u->entry, LINK_ENTRY_MAX_STEPS, &u->n_entry, err,
				     err_size);
		if (r < 0)
			return r;
	}
	r = link_open(spec, &lo, &u->link, err, err_size);
	if (r < 0)
		return r;
	u->fd = link_fd(u->link);
	u->tmo = lo.timeouts;
	u->baud = lo.baud;
	return 0;
}

static void uart_close(struct transport *t)
{
	struct uart *u = U(t);

	u->link = link_close(u->link);
	u->fd = -1;
}

static void uart_describe(const struct transport *t, char *buf, size_t size)
{
	snprintf(buf, size, "%s", U(t)->error);
}

static const char *uart_port_name(const struct transport *t)
{
	return link_port_name(U(t)->link);
}

struct link *transport_uart_link(struct transport *t)
{
	return t && transport_backend(t) == &transport_uart_ops ? U(t)->link : NULL;
}

const struct transport_ops transport_uart_ops = {
	.name = "uart",
	.handles = uart_handles,
	.priv_size = sizeof(struct uart),
	.open = uart_open,
	.close = uart_close,
	.watch = uart_watch,
	.io_ready = uart_io_ready,
	.probe = uart_probe,
	.identify = uart_identify,
	.osfi = uart_osfi,
	.reconnect = uart_reconnect,
	.read = uart_read,
	.write = uart_write,
	.erase = uart_erase,
	.go = uart_go,
	.cancel = uart_cancel,
	.describe = uart_describe,
	.port_name = uart_port_name,
};

/* The device side of AN3155: one byte in at a time, answers queued for the port. Driven by
 * h5emu's loop and, without any terminal, by the fuzz target. */
#include <errno.h>
#include <string.h>

#include "emu-chip-priv.h"

static uint64_t chip_rand(struct emu_chip *c)
{
	/* xorshift64*: enough for garbage and bit flips, reproducible per chip. */
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * 0x2545f4914f6cdd1dull;
}

static void push(struct emu_chip *c, struct emu_tx t)
{
	/* Out of memory for a few answer bytes: the byte is lost, as on a noisy line. */
	(void)emu_txq_push(&c->txq, t);
}

/* Emits one answer byte through the armed fault, if any. */
static void emit(struct emu_chip *c, uint8_t b)
{
	struct emu_fault *f = c->fault;

	if (c->abandon)
		return;
	if (f && c->answer_idx++ == f->byte) {
		c->fault = NULL;
		switch (f->action) {
		case EMU_FAULT_DROP:
			return;
		case EMU_FAULT_CORRUPT:
			b ^= (uint8_t)(1u << (chip_rand(c) % 8));
			break;
		case EMU_FAULT_DELAY:
			push(c, (struct emu_tx){ .kind = EMU_TX_DELAY, .ms = f->ms });
			break;
		case EMU_FAULT_VANISH:
			push(c, (struct emu_tx){ .kind = EMU_TX_VANISH });
			c->abandon = true;
			return;
		case EMU_FAULT_GARBAGE:
			for (int i = 0; i < 16; i++)
				push(c, (struct emu_tx){ .kind = EMU_TX_BYTE,
							 .byte = (uint8_t)chip_rand(c) });
			c->abandon = true;
			return;
		case EMU_FAULT_NACK:
			b = AN3155_NACK;
			break;
		}
	}
	push(c, (struct emu_tx){ .kind = EMU_TX_BYTE, .byte = b });
}

static void emit_u16(struct emu_chip *c, uint16_t v)
{
	emit(c, (uint8_t)(v >> 8));
	emit(c, (uint8_t)v);
}

static void ack(struct emu_chip *c)
{
	emit(c, AN3155_ACK);
}

static void nack_idle(struct emu_chip *c)
{
	emit(c, AN3155_NACK);
	c->st = BL_IDLE;
}

static bool cmd_listed(const struct emu_chip *c, uint8_t op)
{
	for (size_t i = 0; i < c->prof->n_cmds; i++)
		if (c->prof->cmds[i] == op)
			return true;
	return false;
}

/* Finds the fault that fires for this command (subop < 0) or sub-command, counting the
 * occurrence for every matching rule. */
static struct emu_fault *fault_match(struct emu_chip *c, int cmd, int subop)
{
	struct emu_fault *hit = NULL;

	if (!c->faults)
		return NULL;
	for (size_t i = 0; i < c->faults->n; i++) {
		struct emu_fault *f = &c->faults->v[i];

		if (f->spent)
			continue;
		if (f->chip >= 0 && (unsigned)f->chip != c->index)
			continue;
		if (f->cmd >= 0 && f->cmd != cmd)
			continue;
		/* A sub-opcode rule matches at the sub-opcode stage only, and vice versa. */
		if ((f->subop >= 0) != (subop >= 0))
			continue;
		if (f->subop >= 0 && f->subop != subop)
			continue;
		f->seen++;
		if (f->seen < f->nth || hit)
			continue;
		if (!f->repeat)
			f->spent = true;
		hit = f;
	}
	return hit;
}

/* Arms a fault; returns true when it refuses the command outright (nack at byte 0). */
static bool fault_arm(struct emu_chip *c, struct emu_fault *f)
{
	c->fault = f;
	c->answer_idx = 0;
	if (f && f->action == EMU_FAULT_NACK && f->byte == 0) {
		c->fault = NULL;
		nack_idle(c);
		return true;
	}
	return false;
}

static void collect(struct emu_chip *c, enum emu_bl_state st, size_t need)
{
	c->st = st;
	c->need = need;
	c->got = 0;
}

static uint8_t xor_of(const uint8_t *p, size_t n)
{
	uint8_t x = 0;

	for (size_t i = 0; i < n; i++)
		x ^= p[i];
	return x;
}

static bool is_complement(uint8_t a, uint8_t b)
{
	return (a ^ b) == 0xff;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static bool is_memory_cmd(uint8_t op)
{
	return op == AN3155_CMD_READ_MEMORY || op == AN3155_CMD_GO ||
	       op == AN3155_CMD_WRITE_MEMORY || op == AN3155_CMD_EXTENDED_ERASE ||
	       op == AN3155_CMD_WRITE_PROTECT || op == AN3155_CMD_WRITE_UNPROTECT ||
	       op == AN3155_CMD_READOUT_PROTECT;
}

static void start_command(struct emu_chip *c)
{
	uint8_t op = c->cmd;
	uint32_t pages = c->flash.size / c->prof->page_size;

	c->abandon = false;
	if (fault_arm(c, fault_match(c, op, -1)))
		return;
	if (emu_chip_protected(c) && is_memory_cmd(op)) {
		nack_idle(c);
		return;
	}
	c->st = BL_IDLE;
	switch (op) {
	case AN3155_CMD_GET:
		ack(c);
		emit(c, (uint8_t)c->prof->n_cmds);
		emit(c, c->prof->bl_version);
		for (size_t i = 0; i < c->prof->n_cmds; i++)
			emit(c, c->prof->cmds[i]);
		ack(c);
		break;
	case AN3155_CMD_GET_VERSION:
		ack(c);
		emit(c, c->prof->bl_version);
		emit(c, 0);
		emit(c, 0);
		ack(c);
		break;
	case AN3155_CMD_GET_ID:
		ack(c);
		emit(c, 1);
		emit_u16(c, c->prof->device_id);
		ack(c);
		break;
	case AN3155_CMD_READ_MEMORY:
	case AN3155_CMD_GO:
	case AN3155_CMD_WRITE_MEMORY:
		ack(c);
		collect(c, BL_ADDR, 5);
		break;
	case AN3155_CMD_EXTENDED_ERASE:
		ack(c);
		collect(c, BL_ERASE_HDR, 2);
		break;
	case AN3155_CMD_SPECIAL:
	case AN3155_CMD_EXTENDED_SPECIAL:
		ack(c);
		collect(c, BL_SUBOP, 3);
		break;
	case AN3155_CMD_WRITE_PROTECT:
		ack(c);
		collect(c, BL_WP_LEN, 1);
		break;
	case AN3155_CMD_WRITE_UNPROTECT:
		ack(c);
		for (uint32_t p = 0; p < pages; p++)
			emu_chip_set_page_protection(c, p, false);
		ack(c);
		emu_chip_request_reset(c);
		break;
	case AN3155_CMD_READOUT_PROTECT:
		ack(c);
		c->rdp = true;
		ack(c);
		emu_chip_request_reset(c);
		break;
	case AN3155_CMD_READOUT_UNPROTECT:
		ack(c);
		/* Leaving readout protection wipes the flash, as on the real parts. */
		emu_chip_erase_pages(c, 0, pages);
		c->rdp = false;
		ack(c);
		emu_chip_request_reset(c);
		break;
	default:
		nack_idle(c);
		break;
	}
}

static void on_address(struct emu_chip *c)
{
	uint8_t probe;

	if (xor_of(c->buf, 4) != c->buf[4]) {
		nack_idle(c);
		return;
	}
	c->addr = be32(c->buf);
	switch (c->cmd) {
	case AN3155_CMD_READ_MEMORY:
		if (emu_chip_read(c, c->addr, &probe, 1) < 0) {
			nack_idle(c);
			return;
		}
		ack(c);
		collect(c, BL_READ_LEN, 2);
		return;
	case AN3155_CMD_WRITE_MEMORY:
		if (!emu_chip_range_kind(c, c->addr, 1) &&
		    !(c->addr >= c->sram.base && c->addr - c->sram.base < c->sram.size)) {
			nack_idle(c);
			return;
		}
		ack(c);
		collect(c, BL_WRITE_LEN, 1);
		return;
	case AN3155_CMD_GO:
		if (emu_chip_range_kind(c, c->addr, 1) != 'F' &&
		    !(c->addr >= c->sram.base && c->addr - c->sram.base < c->sram.size)) {
			nack_idle(c);
			return;
		}
		ack(c);
		/* The application runs: the bootloader is gone until the next reset. */
		c->mode = EMU_MODE_APP;
		c->st = BL_WAIT_SYNC;
		return;
	default:
		nack_idle(c);
		return;
	}
}

static void on_read_len(struct emu_chip *c)
{
	uint8_t data[AN3155_MAX_BLOCK];
	size_t n = (size_t)c->buf[0] + 1;

	if (!is_complement(c->buf[0], c->buf[1]) || emu_chip_read(c, c->addr, data, n) < 0) {
		nack_idle(c);
		return;
	}
	ack(c);
	for (size_t i = 0; i < n; i++)
		emit(c, data[i]);
	c->st = BL_IDLE;
}

static void on_write_data(struct emu_chip *c)
{
	size_t n = (size_t)c->buf[0] + 1;

	/* buf: N-1, N data bytes, checksum. */
	if (xor_of(c->buf, n + 1) != c->buf[n + 1] || n % 4 != 0 ||
	    emu_chip_write(c, c->addr, c->buf + 1, n) < 0) {
		nack_idle(c);
		return;
	}
	ack(c);
	c->st = BL_IDLE;
}

static void on_erase_special(struct emu_chip *c)
{
	uint16_t code = be16(c->buf);
	uint32_t pages = c->flash.size / c->prof->page_size;
	uint32_t per_bank = c->prof->bank_size / c->prof->page_size;
	uint32_t first = 0, count = 0;

	if ((uint8_t)(c->buf[0] ^ c->buf[1]) != c->buf[2]) {
		nack_idle(c);
		return;
	}
	switch (code) {
	case AN3155_ERASE_MASS:
		count = pages;
		break;
	case AN3155_ERASE_BANK1:
		count = per_bank;
		break;
	case AN3155_ERASE_BANK2:
		first = per_bank;
		count = pages > per_bank ? pages - per_bank : 0;
		break;
	default:
		break;
	}
	if (count == 0) {
		nack_idle(c);
		return;
	}
	for (uint32_t p = first; p < first + count; p++) {
		if (emu_chip_page_protected(c, p)) {
			nack_idle(c);
			return;
		}
	}
	emu_chip_erase_pages(c, first, count);
	ack(c);
	c->st = BL_IDLE;
}

static void on_erase_byte(struct emu_chip *c, uint8_t b)
{
	uint32_t list_bytes = 2u * ((uint32_t)c->npages + 1);
	uint32_t pages = c->flash.size / c->prof->page_size;
	size_t n = (size_t)c->npages + 1;

	if (c->page_bytes < list_bytes) {
		uint32_t i = c->page_bytes / 2;

		c->xor ^= b;
		if (i < EMU_BL_MAX_PAGES) {
			if (c->page_bytes % 2 == 0)
				c->pages[i] = (uint16_t)(b << 8);
			else
				c->pages[i] |= b;
		}
		c->page_bytes++;
		return;
	}
	if (b != c->xor || n > EMU_BL_MAX_PAGES) {
		nack_idle(c);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (c->pages[i] >= pages || emu_chip_page_protected(c, c->pages[i])) {
			nack_idle(c);
			return;
		}
	}
	for (size_t i = 0; i < n; i++)
		emu_chip_erase_pages(c, c->pages[i], 1);
	ack(c);
	c->st = BL_IDLE;
}

static void on_write_protect(struct emu_chip *c)
{
	size_t n = (size_t)c->buf[0] + 1;
	uint32_t pages = c->flash.size / c->prof->page_size;

	if (xor_of(c->buf, n + 1) != c->buf[n + 1]) {
		nack_idle(c);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (c->buf[1 + i] >= pages) {
			nack_idle(c);
			return;
		}
	}
	for (size_t i = 0; i < n; i++)
		emu_chip_set_page_protection(c, c->buf[1 + i], true);
	ack(c);
	c->st = BL_IDLE;
	emu_chip_request_reset(c);
}

static void on_subop(struct emu_chip *c)
{
	if ((uint8_t)(c->buf[0] ^ c->buf[1]) != c->buf[2]) {
		nack_idle(c);
		return;
	}
	c->subop = be16(c->buf);
	if (!c->special || !c->special->special ||
	    (c->special->subop_known && !c->special->subop_known(c->subop))) {
		nack_idle(c);
		return;
	}
	if (fault_arm(c, fault_match(c, c->cmd, c->subop)))
		return;
	ack(c);
	collect(c, c->cmd == AN3155_CMD_SPECIAL ? BL_SP_LEN : BL_XSP_LEN1, 2);
}

static void run_special(struct emu_chip *c, const uint8_t *p2, size_t n2)
{
	uint8_t out[AN3155_SPECIAL_MAX_ANSWER];
	size_t out_len = 0;
	uint16_t status = 0;
	bool ext = c->cmd == AN3155_CMD_EXTENDED_SPECIAL;
	int r;

	r = c->special->special(c, ext, c->subop, c->p1, c->n1, p2, n2, out, sizeof(out),
				&out_len, &status);
	if (r < 0 || out_len > sizeof(out)) {
		nack_idle(c);
		return;
	}
	ack(c);
	if (!ext) {
		emit_u16(c, (uint16_t)out_len);
		for (size_t i = 0; i < out_len; i++)
			emit(c, out[i]);
	}
	emit_u16(c, 2);
	emit_u16(c, status);
	ack(c);
	c->st = BL_IDLE;
}

/* A length-prefixed packet: length checked against max, then data and XOR collected. */
static void on_packet_len(struct emu_chip *c, size_t max, enum emu_bl_state next)
{
	size_t len = be16(c->buf);

	if (len > max) {
		nack_idle(c);
		return;
	}
	c->xor = c->buf[0] ^ c->buf[1];
	collect(c, next, len + 1);
}

static bool packet_ok(struct emu_chip *c)
{
	return (uint8_t)(c->xor ^ xor_of(c->buf, c->got - 1)) == c->buf[c->got - 1];
}

static void on_collected(struct emu_chip *c)
{
	switch (c->st) {
	case BL_ADDR:
		on_address(c);
		break;
	case BL_READ_LEN:
		on_read_len(c);
		break;
	case BL_WRITE_LEN:
		collect(c, BL_WRITE_DATA, (size_t)c->buf[0] + 2);
		/* Keep N-1 at buf[0]: the data lands right after it. */
		c->got = 1;
		c->need += 1;
		break;
	case BL_WRITE_DATA:
		on_write_data(c);
		break;
	case BL_ERASE_HDR: {
		uint16_t v = be16(c->buf);

		if (v >= 0xfff0) {
			collect(c, BL_ERASE_SPECIAL_CKS, 3);
			c->got = 2;	/* the code stays in buf[0..1] */
		} else {
			c->npages = v;
			c->xor = c->buf[0] ^ c->buf[1];
			c->page_bytes = 0;
			c->st = BL_ERASE_PAGES;
		}
		break;
	}
	case BL_ERASE_SPECIAL_CKS:
		on_erase_special(c);
		break;
	case BL_WP_LEN:
		collect(c, BL_WP_DATA, (size_t)c->buf[0] + 3);
		c->got = 1;
		break;
	case BL_WP_DATA:
		on_write_protect(c);
		break;
	case BL_SUBOP:
		on_subop(c);
		break;
	case BL_SP_LEN:
		on_packet_len(c, AN3155_SPECIAL_MAX_DATA, BL_SP_DATA);
		break;
	case BL_SP_DATA:
		if (!packet_ok(c)) {
			nack_idle(c);
			break;
		}
		c->n1 = c->got - 1;
		memcpy(c->p1, c->buf, c->n1);
		run_special(c, NULL, 0);
		break;
	case BL_XSP_LEN1:
		on_packet_len(c, AN3155_SPECIAL_MAX_DATA, BL_XSP_DATA1);
		break;
	case BL_XSP_DATA1:
		if (!packet_ok(c)) {
			nack_idle(c);
			break;
		}
		c->n1 = c->got - 1;
		memcpy(c->p1, c->buf, c->n1);
		ack(c);
		collect(c, BL_XSP_LEN2, 2);
		break;
	case BL_XSP_LEN2:
		on_packet_len(c, AN3155_XSPECIAL_MAX_DATA, BL_XSP_DATA2);
		break;
	case BL_XSP_DATA2:
		if (!packet_ok(c)) {
			nack_idle(c);
			break;
		}
		run_special(c, c->buf, c->got - 1);
		break;
	case BL_WAIT_SYNC:
	case BL_IDLE:
	case BL_CMD_COMPL:
	case BL_ERASE_PAGES:
		break;
	}
}

/* True in the states that collect a frame of c->need bytes into c->buf. */
static bool collecting(enum emu_bl_state st)
{
	switch (st) {
	case BL_ADDR:
	case BL_READ_LEN:
	case BL_WRITE_LEN:
	case BL_WRITE_DATA:
	case BL_ERASE_HDR:
	case BL_ERASE_SPECIAL_CKS:
	case BL_WP_LEN:
	case BL_WP_DATA:
	case BL_SUBOP:
	case BL_SP_LEN:
	case BL_SP_DATA:
	case BL_XSP_LEN1:
	case BL_XSP_DATA1:
	case BL_XSP_LEN2:
	case BL_XSP_DATA2:
		return true;
	case BL_WAIT_SYNC:
	case BL_IDLE:
	case BL_CMD_COMPL:
	case BL_ERASE_PAGES:
		break;
	}
	return false;
}

size_t emu_chip_quiet_bytes(const struct emu_chip *c)
{
	if (c->mode != EMU_MODE_BOOTLOADER)
		return SIZE_MAX;	/* the host is not listened to at all */
	/* Collecting a frame: only its last byte gets a reaction. */
	if (collecting(c->st))
		return c->got + 1 < c->need ? c->need - c->got - 1 : 0;
	return 0;
}

void emu_chip_input(struct emu_chip *c, uint8_t b)
{
	if (c->mode != EMU_MODE_BOOTLOADER)
		return;

	if (collecting(c->st)) {
		if (c->got < sizeof(c->buf))
			c->buf[c->got] = b;
		c->got++;
		if (c->got >= c->need)
			on_collected(c);
	} else if (c->st == BL_WAIT_SYNC) {
		/* Before the sync byte the baud-rate detector ignores everything else. */
		if (b == AN3155_SYNC) {
			c->fault = NULL;
			c->abandon = false;
			ack(c);
			c->st = BL_IDLE;
		}
	} else if (c->st == BL_IDLE) {
		c->fault = NULL;
		c->abandon = false;
		c->cmd = b;
		c->st = BL_CMD_COMPL;
	} else if (c->st == BL_CMD_COMPL) {
		if (!is_complement(c->cmd, b) || !cmd_listed(c, c->cmd))
			nack_idle(c);
		else
			start_command(c);
	} else if (c->st == BL_ERASE_PAGES) {
		on_erase_byte(c, b);
	}

	if (c->abandon) {
		c->st = BL_IDLE;
	}
	if (c->reset_requested)
		emu_chip_reset(c, c->reset_mode);
}

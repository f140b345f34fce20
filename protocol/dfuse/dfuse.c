/* DfuSe host side: the sans-I/O transaction engine.
 *
 * An operation is a script of stages (bring the device to dfuIDLE, set the address
 * pointer, move data, ...). A stage issues control transfers and waits; each transfer's
 * purpose is its phase. DNLOADs are always followed by GETSTATUS until the device has
 * finished (dfuDNBUSY answers carry bwPollTimeout, which the engine asks the driver to
 * wait), bounded by the stage's busy budget. A stall or a dfuERROR answer is followed by
 * GETSTATUS/CLRSTATUS so the device is left in dfuIDLE, then the operation fails. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "dfuse.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define IDLE_ROUNDS_MAX 6 /* GETSTATUS answers tolerated before dfuIDLE */

enum stage_kind {
	K_IDLE,
	K_GETSTATUS,
	K_ADDR,
	K_ERASE,
	K_UPLOAD_CMDS,
	K_ABORT,
	K_UPLOAD_DATA,
	K_DNLOAD_DATA,
	K_LEAVE,
	K_OSFI_REQ,
	K_OSFI_PRE_ABORT,	/* from dfuDNLOAD-IDLE to dfuIDLE before the answer UPLOAD */
	K_OSFI_ANSWER,
	K_OSFI_POST_ABORT,	/* only after a full-length answer frame */
	K_END,
};

enum phase {
	PH_NONE,
	PH_SINGLE_STATUS,
	PH_IDLE_STATUS,
	PH_IDLE_CLEAR,
	PH_IDLE_ABORT,
	PH_IDLE_WAIT,
	PH_DNLOAD,
	PH_POLL,
	PH_POLL_WAIT,
	PH_UPLOAD,
	PH_ABORT,
	PH_LEAVE_STATUS,
	PH_ERR_STATUS,
	PH_ERR_CLEAR,
	PH_OSFI_CLEAR,
};

static const uint8_t script_idle[] = { K_IDLE, K_END };
static const uint8_t script_get_status[] = { K_GETSTATUS, K_END };
static const uint8_t script_commands[] = { K_IDLE, K_UPLOAD_CMDS, K_ABORT, K_END };
static const uint8_t script_set_address[] = { K_IDLE, K_ADDR, K_END };
static const uint8_t script_erase[] = { K_IDLE, K_ERASE, K_END };
static const uint8_t script_read[] = { K_IDLE, K_ADDR, K_ABORT, K_UPLOAD_DATA, K_ABORT, K_END };
static const uint8_t script_write[] = { K_IDLE, K_ADDR, K_DNLOAD_DATA, K_ABORT, K_END };
static const uint8_t script_leave[] = { K_IDLE, K_ADDR, K_LEAVE, K_END };
static const uint8_t script_osfi[] = { K_IDLE, K_OSFI_REQ, K_OSFI_PRE_ABORT, K_OSFI_ANSWER,
				       K_OSFI_POST_ABORT, K_END };

static const uint8_t *const scripts[_DFUSE_OP_MAX] = {
	[DFUSE_OP_IDLE] = script_idle,
	[DFUSE_OP_GET_STATUS] = script_get_status,
	[DFUSE_OP_COMMANDS] = script_commands,
	[DFUSE_OP_SET_ADDRESS] = script_set_address,
	[DFUSE_OP_ERASE_PAGE] = script_erase,
	[DFUSE_OP_MASS_ERASE] = script_erase,
	[DFUSE_OP_READ] = script_read,
	[DFUSE_OP_WRITE] = script_write,
	[DFUSE_OP_LEAVE] = script_leave,
	[DFUSE_OP_OSFI] = script_osfi,
};

static const char *const step_names[_DFUSE_STEP_MAX] = {
	[DFUSE_STEP_IDLE] = "return to dfuIDLE",
	[DFUSE_STEP_ADDRESS] = "Set Address Pointer",
	[DFUSE_STEP_ERASE] = "Erase",
	[DFUSE_STEP_COMMANDS] = "Get commands",
	[DFUSE_STEP_DOWNLOAD] = "data download",
	[DFUSE_STEP_UPLOAD] = "data upload",
	[DFUSE_STEP_LEAVE] = "leave",
	[DFUSE_STEP_REQUEST] = "OSFI request",
	[DFUSE_STEP_ANSWER] = "OSFI answer",
};

const char *dfuse_step_to_string(enum dfuse_step s)
{
	if ((unsigned)s >= ARRAY_SIZE(step_names) || !step_names[s])
		return "unknown step";
	return step_names[s];
}

static const char *const op_names[_DFUSE_OP_MAX] = {
	[DFUSE_OP_NONE] = "none",
	[DFUSE_OP_IDLE] = "idle",
	[DFUSE_OP_GET_STATUS] = "get status",
	[DFUSE_OP_COMMANDS] = "get commands",
	[DFUSE_OP_SET_ADDRESS] = "set address",
	[DFUSE_OP_ERASE_PAGE] = "page erase",
	[DFUSE_OP_MASS_ERASE] = "mass erase",
	[DFUSE_OP_READ] = "read",
	[DFUSE_OP_WRITE] = "write",
	[DFUSE_OP_LEAVE] = "leave",
	[DFUSE_OP_OSFI] = "OSFI request",
};

const char *dfuse_op_to_string(enum dfuse_op op)
{
	if ((unsigned)op >= ARRAY_SIZE(op_names) || !op_names[op])
		return "unknown operation";
	return op_names[op];
}

void dfuse_timeouts_default(struct dfuse_timeouts *t)
{
	*t = (struct dfuse_timeouts){
		.control_ms = 1000,
		.block_ms = 5000,
		.page_erase_ms = 5000,
		.mass_erase_ms = 35000,
		.osfi_ms = 15000,
	};
}

/* ---- Actions ---- */

static void finish(struct dfuse_xfer *x, int r)
{
	x->result = r < 0 ? r : 0;
	x->next = r < 0 ? DFUSE_NEXT_FAILED : DFUSE_NEXT_DONE;
	x->phase = PH_NONE;
}

static void control(struct dfuse_xfer *x, uint8_t phase, uint8_t type, uint8_t req,
		    uint16_t value, uint16_t length, const uint8_t *data)
{
	x->phase = phase;
	x->next = DFUSE_NEXT_CONTROL;
	x->io.ctl = (struct dfuse_control){
		.request_type = type,
		.request = req,
		.value = value,
		.length = length,
		.data = data,
		.timeout_ms = x->t.control_ms,
	};
	x->io.wait_ms = 0;
}

static void get_status(struct dfuse_xfer *x, uint8_t phase)
{
	control(x, phase, DFU_REQTYPE_IN, DFU_REQ_GETSTATUS, 0, DFU_STATUS_LEN, NULL);
}

static void simple_out(struct dfuse_xfer *x, uint8_t phase, uint8_t req)
{
	control(x, phase, DFU_REQTYPE_OUT, req, 0, 0, NULL);
}

/* Waits bwPollTimeout, counted against the stage's budget (at least 1 ms per poll, so a
 * device answering dfuDNBUSY with 0 ms cannot keep the host polling forever). */
static void poll_wait(struct dfuse_xfer *x, uint8_t phase, uint32_t ms)
{
	uint64_t cost = ms ? ms : 1;

	if (x->busy_ms + cost > x->busy_budget) {
		finish(x, -DFUSE_E_TIMEOUT);
		return;
	}
	x->busy_ms += (unsigned)cost;
	x->phase = phase;
	x->next = DFUSE_NEXT_WAIT;
	x->io.wait_ms = ms;
}

/* A request failed in a way that may have left the device in dfuERROR: learn its status,
 * clear it, then fail with err. */
static void recover(struct dfuse_xfer *x, int err)
{
	if (x->recovering) {
		finish(x, x->pending_error);
		return;
	}
	x->recovering = true;
	x->pending_error = err;
	get_status(x, PH_ERR_STATUS);
}

/* ---- Stages ---- */

static uint8_t cur_stage(const struct dfuse_xfer *x)
{
	return scripts[x->op][x->stage];
}

static void start_stage(struct dfuse_xfer *x);

static void next_stage(struct dfuse_xfer *x)
{
	x->stage++;
	start_stage(x);
}

static void put_addr(uint8_t *p, uint32_t a)
{
	p[0] = (uint8_t)a;
	p[1] = (uint8_t)(a >> 8);
	p[2] = (uint8_t)(a >> 16);
	p[3] = (uint8_t)(a >> 24);
}

static uint16_t chunk_len(const struct dfuse_xfer *x)
{
	size_t left = x->len - x->done;

	return (uint16_t)(left < x->ts ? left : x->ts);
}

static void start_stage(struct dfuse_xfer *x)
{
	x->busy_ms = 0;
	switch ((enum stage_kind)cur_stage(x)) {
	case K_IDLE:
		if ((x->op == DFUSE_OP_OSFI || x->op == DFUSE_OP_ERASE_PAGE) && !x->idle_first) {
			next_stage(x);
			return;
		}
		x->step = DFUSE_STEP_IDLE;
		x->rounds = 0;
		x->busy_budget = x->t.block_ms;
		get_status(x, PH_IDLE_STATUS);
		return;
	case K_GETSTATUS:
		x->step = DFUSE_STEP_IDLE;
		get_status(x, PH_SINGLE_STATUS);
		return;
	case K_ADDR:
		if (x->op == DFUSE_OP_LEAVE && !x->has_leave_addr) {
			next_stage(x);
			return;
		}
		x->step = DFUSE_STEP_ADDRESS;
		x->busy_budget = x->t.block_ms;
		x->tx[0] = DFUSE_CMD_SET_ADDRESS;
		put_addr(x->tx + 1, x->addr);
		control(x, PH_DNLOAD, DFU_REQTYPE_OUT, DFU_REQ_DNLOAD, DFUSE_BLOCK_COMMAND, 5, x->tx);
		return;
	case K_ERASE:
		x->step = DFUSE_STEP_ERASE;
		x->tx[0] = DFUSE_CMD_ERASE;
		if (x->op == DFUSE_OP_MASS_ERASE) {
			x->busy_budget = x->t.mass_erase_ms;
			control(x, PH_DNLOAD, DFU_REQTYPE_OUT, DFU_REQ_DNLOAD, DFUSE_BLOCK_COMMAND,
				1, x->tx);
		} else {
			x->busy_budget = x->t.page_erase_ms;
			put_addr(x->tx + 1, x->addr);
			control(x, PH_DNLOAD, DFU_REQTYPE_OUT, DFU_REQ_DNLOAD, DFUSE_BLOCK_COMMAND,
				5, x->tx);
		}
		return;
	case K_UPLOAD_CMDS:
		x->step = DFUSE_STEP_COMMANDS;
		control(x, PH_UPLOAD, DFU_REQTYPE_IN, DFU_REQ_UPLOAD, DFUSE_BLOCK_COMMAND,
			(uint16_t)(x->ts < sizeof(x->cmds.codes) ? x->ts : sizeof(x->cmds.codes)),
			NULL);
		return;
	case K_ABORT:
		simple_out(x, PH_ABORT, DFU_REQ_ABORT);
		return;
	case K_UPLOAD_DATA:
		x->step = DFUSE_STEP_UPLOAD;
		control(x, PH_UPLOAD, DFU_REQTYPE_IN, DFU_REQ_UPLOAD, x->block, chunk_len(x), NULL);
		return;
	case K_DNLOAD_DATA:
		x->step = DFUSE_STEP_DOWNLOAD;
		x->busy_budget = x->t.block_ms;
		control(x, PH_DNLOAD, DFU_REQTYPE_OUT, DFU_REQ_DNLOAD, x->block, chunk_len(x),
			x->data + x->done);
		return;
	case K_LEAVE:
		x->step = DFUSE_STEP_LEAVE;
		control(x, PH_DNLOAD, DFU_REQTYPE_OUT, DFU_REQ_DNLOAD, DFUSE_BLOCK_DATA, 0, NULL);
		return;
	case K_OSFI_REQ:
		x->step = DFUSE_STEP_REQUEST;
		x->busy_budget = x->t.osfi_ms;
		control(x, PH_DNLOAD, DFU_REQTYPE_OUT, DFU_REQ_DNLOAD, DFUSE_OSFI_BLOCK,
			(uint16_t)x->len, x->tx);
		return;
	case K_OSFI_PRE_ABORT:
		if (!x->want_answer || x->osfi_refused) {
			next_stage(x);
			return;
		}
		x->step = DFUSE_STEP_ANSWER;
		simple_out(x, PH_ABORT, DFU_REQ_ABORT);
		return;
	case K_OSFI_ANSWER:
		if (!x->want_answer && !x->osfi_refused) {
			x->stage++;	/* nothing to read, nothing to abort */
			next_stage(x);
			return;
		}
		x->step = DFUSE_STEP_ANSWER;
		control(x, PH_UPLOAD, DFU_REQTYPE_IN, DFU_REQ_UPLOAD, DFUSE_OSFI_BLOCK, x->ts, NULL);
		return;
	case K_OSFI_POST_ABORT:
		if (x->answer_len + DFUSE_OSFI_ANSWER_HDR < x->ts) {
			next_stage(x);
			return;
		}
		simple_out(x, PH_ABORT, DFU_REQ_ABORT);
		return;
	case K_END:
		finish(x, 0);
		return;
	}
	finish(x, -EINVAL);
}

/* A DNLOAD stage's GETSTATUS said the device finished. */
static void dnload_finished(struct dfuse_xfer *x)
{
	if (cur_stage(x) == K_DNLOAD_DATA) {
		x->done += chunk_len(x);
		x->block++;
		if (x->done < x->len) {
			start_stage(x);
			return;
		}
	}
	next_stage(x);
}

static void on_idle_status(struct dfuse_xfer *x)
{
	if (++x->rounds > IDLE_ROUNDS_MAX) {
		finish(x, -DFUSE_E_STATE);
		return;
	}
	switch (x->status.state) {
	case DFU_STATE_IDLE:
		next_stage(x);
		return;
	case DFU_STATE_ERROR:
		simple_out(x, PH_IDLE_CLEAR, DFU_REQ_CLRSTATUS);
		return;
	case DFU_STATE_DNLOAD_SYNC:
	case DFU_STATE_DNLOAD_IDLE:
	case DFU_STATE_MANIFEST_SYNC:
	case DFU_STATE_UPLOAD_IDLE:
		simple_out(x, PH_IDLE_ABORT, DFU_REQ_ABORT);
		return;
	case DFU_STATE_DNBUSY:
	case DFU_STATE_MANIFEST:
		poll_wait(x, PH_IDLE_WAIT, x->status.poll_ms);
		return;
	case DFU_STATE_APP_IDLE:
	case DFU_STATE_APP_DETACH:
	case DFU_STATE_MANIFEST_WAIT_RESET:
		break;
	}
	finish(x, -DFUSE_E_STATE);
}

static void on_poll_status(struct dfuse_xfer *x)
{
	switch (x->status.state) {
	case DFU_STATE_DNLOAD_SYNC:
	case DFU_STATE_DNBUSY:
		poll_wait(x, PH_POLL_WAIT, x->status.poll_ms);
		return;
	case DFU_STATE_DNLOAD_IDLE:
	case DFU_STATE_IDLE:
		if (x->status.status != DFU_STATUS_OK)
			break;
		dnload_finished(x);
		return;
	case DFU_STATE_ERROR:
		x->dfu_status = x->status.status;
		if (x->op == DFUSE_OP_OSFI && x->status.status == DFU_STATUS_ERR_VENDOR) {
			x->osfi_refused = true;
			simple_out(x, PH_OSFI_CLEAR, DFU_REQ_CLRSTATUS);
			return;
		}
		x->recovering = true;
		x->pending_error = -DFUSE_E_STATUS;
		simple_out(x, PH_ERR_CLEAR, DFU_REQ_CLRSTATUS);
		return;
	case DFU_STATE_APP_IDLE:
	case DFU_STATE_APP_DETACH:
	case DFU_STATE_MANIFEST_SYNC:
	case DFU_STATE_MANIFEST:
	case DFU_STATE_MANIFEST_WAIT_RESET:
	case DFU_STATE_UPLOAD_IDLE:
		break;
	}
	finish(x, -DFUSE_E_STATE);
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void on_upload(struct dfuse_xfer *x, const uint8_t *in, size_t n)
{
	switch ((enum stage_kind)cur_stage(x)) {
	case K_UPLOAD_CMDS:
		if (dfuse_decode_commands(in, n, &x->cmds) < 0) {
			finish(x, -DFUSE_E_PROTOCOL);
			return;
		}
		next_stage(x);
		return;
	case K_UPLOAD_DATA: {
		uint16_t want = chunk_len(x);

		if (n != want) {
			finish(x, -DFUSE_E_PROTOCOL);
			return;
		}
		memcpy(x->out + x->done, in, n);
		x->done += n;
		x->block++;
		if (x->done < x->len)
			start_stage(x);
		else
			next_stage(x);
		return;
	}
	case K_OSFI_ANSWER: {
		uint16_t st;

		if (n < DFUSE_OSFI_ANSWER_HDR || n - DFUSE_OSFI_ANSWER_HDR > x->out_max) {
			finish(x, -DFUSE_E_PROTOCOL);
			return;
		}
		st = get_le16(in);
		/* GETSTATUS and the answer must agree on whether the sub-command was refused. */
		if ((st == 0) == x->osfi_refused) {
			finish(x, -DFUSE_E_PROTOCOL);
			return;
		}
		x->osfi_status = st;
		x->answer_len = n - DFUSE_OSFI_ANSWER_HDR;
		if (x->answer_len && x->out)
			memcpy(x->out, in + DFUSE_OSFI_ANSWER_HDR, x->answer_len);
		next_stage(x);
		return;
	}
	case K_IDLE:
	case K_GETSTATUS:
	case K_ADDR:
	case K_ERASE:
	case K_ABORT:
	case K_DNLOAD_DATA:
	case K_LEAVE:
	case K_OSFI_REQ:
	case K_OSFI_PRE_ABORT:
	case K_OSFI_POST_ABORT:
	case K_END:
		break;
	}
	finish(x, -EINVAL);
}

void dfuse_xfer_control_done(struct dfuse_xfer *x, int r, const uint8_t *in, size_t n)
{
	if (x->next != DFUSE_NEXT_CONTROL)
		return;
	if (r > 0)
		r = -EINVAL;
	if (r == 0 && x->io.ctl.request_type == DFU_REQTYPE_IN &&
	    (n > x->io.ctl.length || (n > 0 && !in))) {
		finish(x, -DFUSE_E_PROTOCOL);
		return;
	}

	switch ((enum phase)x->phase) {
	case PH_SINGLE_STATUS:
		if (r == 0 && dfuse_decode_status(in, n, &x->status) < 0)
			r = -DFUSE_E_PROTOCOL;
		finish(x, r);
		return;
	case PH_IDLE_STATUS:
		if (r == -DFUSE_E_STALL && x->rounds++ < IDLE_ROUNDS_MAX) {
			simple_out(x, PH_IDLE_CLEAR, DFU_REQ_CLRSTATUS);
			return;
		}
		if (r == 0 && dfuse_decode_status(in, n, &x->status) < 0)
			r = -DFUSE_E_PROTOCOL;
		if (r < 0) {
			finish(x, r);
			return;
		}
		on_idle_status(x);
		return;
	case PH_IDLE_CLEAR:
	case PH_IDLE_ABORT:
		if (r < 0) {
			finish(x, r);
			return;
		}
		get_status(x, PH_IDLE_STATUS);
		return;
	case PH_DNLOAD:
		if (cur_stage(x) == K_LEAVE) {
			/* A device that vanished or did not answer may already be leaving. */
			if (r == 0 || r == -DFUSE_E_GONE || r == -DFUSE_E_TIMEOUT) {
				x->committed = true;
				if (r == 0)
					get_status(x, PH_LEAVE_STATUS);
				else
					finish(x, 0);
				return;
			}
		}
		if (r == -DFUSE_E_STALL) {
			recover(x, r);
			return;
		}
		if (r < 0) {
			finish(x, r);
			return;
		}
		if (cur_stage(x) != K_ADDR)
			x->committed = true;
		get_status(x, PH_POLL);
		return;
	case PH_POLL:
		if (r == -DFUSE_E_STALL) {
			recover(x, r);
			return;
		}
		if (r == 0 && dfuse_decode_status(in, n, &x->status) < 0)
			r = -DFUSE_E_PROTOCOL;
		if (r < 0) {
			finish(x, r);
			return;
		}
		on_poll_status(x);
		return;
	case PH_UPLOAD:
		if (r == -DFUSE_E_STALL) {
			recover(x, r);
			return;
		}
		if (r < 0) {
			finish(x, r);
			return;
		}
		on_upload(x, in, n);
		return;
	case PH_ABORT:
		if (r == -DFUSE_E_STALL) {
			recover(x, r);
			return;
		}
		if (r < 0) {
			finish(x, r);
			return;
		}
		next_stage(x);
		return;
	case PH_LEAVE_STATUS:
		if (r == 0)
			(void)dfuse_decode_status(in, n, &x->status);
		finish(x, 0);
		return;
	case PH_ERR_STATUS:
		if (r == 0 && dfuse_decode_status(in, n, &x->status) == 0 &&
		    x->status.state == DFU_STATE_ERROR) {
			if (x->dfu_status == DFU_STATUS_OK)
				x->dfu_status = x->status.status;
			simple_out(x, PH_ERR_CLEAR, DFU_REQ_CLRSTATUS);
			return;
		}
		finish(x, x->pending_error);
		return;
	case PH_ERR_CLEAR:
		finish(x, x->pending_error);
		return;
	case PH_OSFI_CLEAR:
		if (r < 0) {
			finish(x, r);
			return;
		}
		next_stage(x);
		return;
	case PH_NONE:
	case PH_IDLE_WAIT:
	case PH_POLL_WAIT:
		break;
	}
	finish(x, -EINVAL);
}

void dfuse_xfer_waited(struct dfuse_xfer *x)
{
	if (x->next != DFUSE_NEXT_WAIT)
		return;
	if (x->phase == PH_IDLE_WAIT)
		get_status(x, PH_IDLE_STATUS);
	else
		get_status(x, PH_POLL);
}

void dfuse_xfer_gone(struct dfuse_xfer *x)
{
	if (x->next != DFUSE_NEXT_CONTROL && x->next != DFUSE_NEXT_WAIT)
		return;
	if (x->op == DFUSE_OP_LEAVE && x->committed) {
		finish(x, 0);
		return;
	}
	finish(x, -DFUSE_E_GONE);
}

/* ---- Starters ---- */

static void reset(struct dfuse_xfer *x, const struct dfuse_timeouts *t, enum dfuse_op op)
{
	memset(x, 0, offsetof(struct dfuse_xfer, tx));
	memset(&x->addr, 0, sizeof(*x) - offsetof(struct dfuse_xfer, addr));
	if (t)
		x->t = *t;
	else
		dfuse_timeouts_default(&x->t);
	x->op = op;
	x->result = 1;
	x->ts = DFUSE_TRANSFER_MAX;
	x->block = DFUSE_BLOCK_DATA;
}

static void begin(struct dfuse_xfer *x)
{
	x->stage = 0;
	start_stage(x);
}

static bool ts_valid(uint16_t ts)
{
	return ts > 0 && ts <= DFUSE_TRANSFER_MAX;
}

void dfuse_xfer_idle(struct dfuse_xfer *x, const struct dfuse_timeouts *t)
{
	reset(x, t, DFUSE_OP_IDLE);
	begin(x);
}

void dfuse_xfer_get_status(struct dfuse_xfer *x, const struct dfuse_timeouts *t)
{
	reset(x, t, DFUSE_OP_GET_STATUS);
	begin(x);
}

int dfuse_xfer_commands(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
			uint16_t transfer_size)
{
	reset(x, t, DFUSE_OP_COMMANDS);
	if (!ts_valid(transfer_size)) {
		finish(x, -EINVAL);
		return -EINVAL;
	}
	x->ts = transfer_size;
	begin(x);
	return 0;
}

void dfuse_xfer_set_address(struct dfuse_xfer *x, const struct dfuse_timeouts *t, uint32_t addr)
{
	reset(x, t, DFUSE_OP_SET_ADDRESS);
	x->addr = addr;
	begin(x);
}

void dfuse_xfer_erase_page(struct dfuse_xfer *x, const struct dfuse_timeouts *t, uint32_t addr)
{
	reset(x, t, DFUSE_OP_ERASE_PAGE);
	x->addr = addr;
	x->idle_first = true;
	begin(x);
}

void dfuse_xfer_erase_page_next(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
				uint32_t addr)
{
	reset(x, t, DFUSE_OP_ERASE_PAGE);
	x->addr = addr;
	begin(x);
}

void dfuse_xfer_mass_erase(struct dfuse_xfer *x, const struct dfuse_timeouts *t)
{
	reset(x, t, DFUSE_OP_MASS_ERASE);
	begin(x);
}

static int start_data(struct dfuse_xfer *x, uint16_t ts, uint32_t addr, size_t len)
{
	if (!ts_valid(ts) || len == 0 || len > (size_t)(0xffff - DFUSE_BLOCK_DATA) * ts ||
	    (uint64_t)addr + len > (uint64_t)UINT32_MAX + 1) {
		finish(x, -EINVAL);
		return -EINVAL;
	}
	x->ts = ts;
	x->addr = addr;
	x->len = len;
	begin(x);
	return 0;
}

int dfuse_xfer_read(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
		    uint16_t transfer_size, uint32_t addr, uint8_t *out, size_t len)
{
	reset(x, t, DFUSE_OP_READ);
	if (!out) {
		finish(x, -EINVAL);
		return -EINVAL;
	}
	x->out = out;
	return start_data(x, transfer_size, addr, len);
}

int dfuse_xfer_write(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
		     uint16_t transfer_size, uint32_t addr, const uint8_t *data, size_t len)
{
	reset(x, t, DFUSE_OP_WRITE);
	if (!data) {
		finish(x, -EINVAL);
		return -EINVAL;
	}
	x->data = data;
	return start_data(x, transfer_size, addr, len);
}

void dfuse_xfer_leave(struct dfuse_xfer *x, const struct dfuse_timeouts *t, bool has_addr,
		      uint32_t addr)
{
	reset(x, t, DFUSE_OP_LEAVE);
	x->has_leave_addr = has_addr;
	x->addr = addr;
	begin(x);
}

int dfuse_xfer_osfi(struct dfuse_xfer *x, const struct dfuse_timeouts *t,
		    uint16_t transfer_size, bool idle_first, uint16_t subop, const uint8_t *p1,
		    size_t n1, const uint8_t *p2, size_t n2, bool want_answer, uint8_t *out,
		    size_t out_max)
{
	int r;

	reset(x, t, DFUSE_OP_OSFI);
	if (!ts_valid(transfer_size) || (out_max && !out)) {
		finish(x, -EINVAL);
		return -EINVAL;
	}
	x->ts = transfer_size;
	r = dfuse_osfi_encode_request(subop, p1, n1, p2, n2, x->tx, transfer_size);
	if (r < 0) {
		finish(x, r);
		return r;
	}
	x->len = (size_t)r;
	x->idle_first = idle_first;
	x->want_answer = want_answer;
	x->out = out;
	x->out_max = out_max;
	begin(x);
	return 0;
}

/* ---- Results ---- */

enum dfuse_next dfuse_xfer_next(const struct dfuse_xfer *x, struct dfuse_io *io)
{
	if (io && (x->next == DFUSE_NEXT_CONTROL || x->next == DFUSE_NEXT_WAIT))
		*io = x->io;
	return x->next;
}

int dfuse_xfer_result(const struct dfuse_xfer *x)
{
	return x->result;
}

enum dfuse_step dfuse_xfer_step(const struct dfuse_xfer *x)
{
	return x->step;
}

bool dfuse_xfer_committed(const struct dfuse_xfer *x)
{
	return x->committed;
}

uint8_t dfuse_xfer_dfu_status(const struct dfuse_xfer *x)
{
	return x->dfu_status;
}

void dfuse_xfer_describe(const struct dfuse_xfer *x, char *buf, size_t size)
{
	char where[48] = "";

	if (!buf || size == 0)
		return;
	if (x->result >= 0) {
		snprintf(buf, size, "%s: %s", dfuse_op_to_string(x->op),
			 x->result == 0 ? "done" : "running");
		return;
	}
	if (x->step == DFUSE_STEP_DOWNLOAD || x->step == DFUSE_STEP_UPLOAD)
		snprintf(where, sizeof(where), " at 0x%08zx",
			 (size_t)x->addr + x->done);
	else if (x->step == DFUSE_STEP_ADDRESS || x->op == DFUSE_OP_ERASE_PAGE)
		snprintf(where, sizeof(where), " for 0x%08x", (unsigned)x->addr);
	if (x->dfu_status != DFU_STATUS_OK)
		snprintf(buf, size, "%s: %s at the %s step%s: %s (%s)", dfuse_op_to_string(x->op),
			 dfuse_strerror(x->result), dfuse_step_to_string(x->step), where,
			 dfuse_status_sentence(x->dfu_status), dfuse_status_name(x->dfu_status));
	else
		snprintf(buf, size, "%s: %s at the %s step%s", dfuse_op_to_string(x->op),
			 dfuse_strerror(x->result), dfuse_step_to_string(x->step), where);
}

const struct dfuse_status *dfuse_xfer_last_status(const struct dfuse_xfer *x)
{
	return &x->status;
}

const struct dfuse_commands *dfuse_xfer_command_list(const struct dfuse_xfer *x)
{
	return &x->cmds;
}

uint16_t dfuse_xfer_osfi_status(const struct dfuse_xfer *x)
{
	return x->osfi_status;
}

size_t dfuse_xfer_answer_len(const struct dfuse_xfer *x)
{
	return x->answer_len;
}

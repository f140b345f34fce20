/* The link vtable's common part: backend choice, the running operation, the blocking
 * driver. See transport.h. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "transport.h"
#include "transport-dfu.h"
#include "transport-internal.h"
#include "sfi-time.h"

static const struct transport_ops *const backends[] = {
	&transport_dfu_ops,
	/* The UART backend takes every spec: it comes last. */
	&transport_uart_ops,
};

void transport_options_default(struct transport_options *o)
{
	*o = (struct transport_options){
		.baud = 115200,
		.step_ms = 1000,
		.block_ms = 1000,
		.answer_ms = 15000,
		.retries = 2,
	};
}

void *transport_priv(const struct transport *t)
{
	return t->priv;
}

const struct transport_options *transport_options(const struct transport *t)
{
	return &t->opt;
}

int64_t transport_now_ms(const struct transport *t)
{
	return t->opt.now_ms ? t->opt.now_ms(t->opt.user_data) : sfi_monotonic_ms();
}

int64_t transport_after_ms(const struct transport *t, unsigned ms)
{
	if (t->opt.now_ms)
		return t->opt.now_ms(t->opt.user_data) + ms;
	return (sfi_monotonic_us() + (int64_t)ms * 1000 + 999) / 1000;
}

void transport_debug(const struct transport *t, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!t->opt.debug)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	t->opt.debug(t->opt.user_data, line);
}

void transport_complete(struct transport *t, int r)
{
	transport_done_fn done = t->done;
	void *ud = t->done_data;

	t->busy = false;
	t->done = NULL;
	t->done_data = NULL;
	t->result = r;
	if (done && !t->closed)
		done(t, r, ud);
}

void transport_port_lost(struct transport *t)
{
	if (t->opt.lost)
		t->opt.lost(t, t->opt.user_data);
}

int transport_open_with(const struct transport_ops *ops, const char *spec,
			const struct transport_options *o, struct transport **ret, char *err,
			size_t err_size)
{
	struct transport *t;
	int r;

	if (!ops || !spec || !ret)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->ops = ops;
	if (o)
		t->opt = *o;
	else
		transport_options_default(&t->opt);
	if (t->opt.entry) {
		t->entry = strdup(t->opt.entry);
		if (!t->entry) {
			free(t);
			return -ENOMEM;
		}
		t->opt.entry = t->entry;
	}
	if (ops->priv_size) {
		t->priv = calloc(1, ops->priv_size);
		if (!t->priv) {
			free(t->entry);
			free(t);
			return -ENOMEM;
		}
	}
	r = ops->open(t, spec, err, err_size);
	if (r < 0) {
		free(t->priv);
		free(t->entry);
		free(t);
		return r;
	}
	*ret = t;
	return 0;
}

int transport_open(const char *spec, const struct transport_options *o, struct transport **ret,
		   char *err, size_t err_size)
{
	if (!spec)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (backends[i]->handles(spec))
			return transport_open_with(backends[i], spec, o, ret, err, err_size);
	if (err && err_size)
		snprintf(err, err_size, "no link backend handles port '%s'", spec);
	return -ENODEV;
}

static void transport_free(struct transport *t)
{
	t->ops->close(t);
	free(t->priv);
	free(t->entry);
	free(t);
}

/* Calls into the backend are bracketed: a callback that closes the link (the port vanished,
 * the owner stops) must not free what the backend is still running on. */
static void enter(struct transport *t)
{
	t->depth++;
}

static void leave(struct transport *t)
{
	if (--t->depth == 0 && t->closed)
		transport_free(t);
}

struct transport *transport_close(struct transport *t)
{
	if (!t)
		return NULL;
	t->busy = false;
	t->done = NULL;
	t->done_data = NULL;
	if (t->depth > 0) {
		t->closed = true;
		return NULL;
	}
	transport_free(t);
	return NULL;
}

const struct transport_ops *transport_backend(const struct transport *t)
{
	return t->ops;
}

const char *transport_port_name(const struct transport *t)
{
	return t->ops->port_name(t);
}

bool transport_busy(const struct transport *t)
{
	return t->busy;
}

void transport_watch(const struct transport *t, struct transport_watch *ret)
{
	*ret = (struct transport_watch){ .fd = -1, .deadline_ms = -1 };
	t->ops->watch(t, ret);
}

void transport_io_ready(struct transport *t, unsigned revents)
{
	if (t->closed)
		return;
	enter(t);
	t->ops->io_ready(t, revents);
	leave(t);
}

void transport_describe(const struct transport *t, char *buf, size_t size)
{
	if (!buf || size == 0)
		return;
	buf[0] = '\0';
	t->ops->describe(t, buf, size);
}

/* Marks an operation running; undone when its starter fails. */
static int op_begin(struct transport *t, transport_done_fn done, void *user_data)
{
	if (t->closed)
		return -ENODEV;
	if (t->busy)
		return -EBUSY;
	t->busy = true;
	t->done = done;
	t->done_data = user_data;
	return 0;
}

static int op_started(struct transport *t, int r)
{
	if (r < 0) {
		t->busy = false;
		t->done = NULL;
		t->done_data = NULL;
	}
	return r;
}

int transport_probe(struct transport *t, unsigned flags, enum transport_presence *ret,
		    transport_done_fn done, void *user_data)
{
	int r = op_begin(t, done, user_data);

	if (r < 0)
		return r;
	enter(t);
	r = op_started(t, t->ops->probe(t, flags, ret));
	leave(t);
	return r;
}

int transport_identify(struct transport *t, struct transport_identity *ret,
		       transport_done_fn done, void *user_data)
{
	int r = op_begin(t, done, user_data);

	if (r < 0)
		return r;
	enter(t);
	r = op_started(t, t->ops->identify(t, ret));
	leave(t);
	return r;
}

int transport_osfi(struct transport *t, const struct osfi_request *req, uint8_t *answer,
		   size_t answer_max, struct transport_answer *ret, transport_done_fn done,
		   void *user_data)
{
	int r = op_begin(t, done, user_data);

	if (r < 0)
		return r;
	enter(t);
	r = op_started(t, t->ops->osfi(t, req, answer, answer_max, ret));
	leave(t);
	return r;
}

int transport_reconnect(struct transport *t, unsigned within_ms, transport_done_fn done,
			void *user_data)
{
	int r = op_begin(t, done, user_data);

	if (r < 0)
		return r;
	enter(t);
	r = op_started(t, t->ops->reconnect(t, within_ms));
	leave(t);
	return r;
}

unsigned transport_write_unit(uint32_t addr)
{
	if ((addr >= STM32H5_FLASH_BASE && addr - STM32H5_FLASH_BASE < STM32H5_FLASH_SIZE) ||
	    (addr >= STM32H5_OTP_BASE && addr - STM32H5_OTP_BASE < STM32H5_OTP_SIZE))
		return STM32H5_FLASH_WRITE_UNIT;
	return 4;
}

/* The range [addr, addr + len) is not empty and does not wrap. */
static bool range_ok(uint32_t addr, size_t len)
{
	return len > 0 && (uint64_t)addr + len <= (uint64_t)UINT32_MAX + 1;
}

int transport_read(struct transport *t, uint32_t addr, uint8_t *buf, size_t len,
		   transport_done_fn done, void *user_data)
{
	int r;

	if (!buf || !range_ok(addr, len))
		return -EINVAL;
	if (!t->ops->read)
		return -ENOTSUP;
	r = op_begin(t, done, user_data);
	if (r < 0)
		return r;
	enter(t);
	r = op_started(t, t->ops->read(t, addr, buf, len));
	leave(t);
	return r;
}

int transport_write(struct transport *t, uint32_t addr, const uint8_t *data, size_t len,
		    transport_done_fn done, void *user_data)
{
	int r;

	if (!data || !range_ok(addr, len) || addr % transport_write_unit(addr) != 0)
		return -EINVAL;
	if (!t->ops->write)
		return -ENOTSUP;
	r = op_begin(t, done, user_data);
	if (r < 0)
		return r;
	enter(t);
	r = op_started(t, t->ops->write(t, addr, data, len));
	leave(t);
	return r;
}

int transport_erase(struct transport *t, const uint16_t *sectors, size_t n,
		    transport_done_fn done, void *user_data)
{
	int r;

	if (n > 0 && !sectors)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (sectors[i] >= STM32H5_FLASH_SIZE / STM32H5_FLASH_SECTOR)
			return -EINVAL;
	if (!t->ops->erase)
		return -ENOTSUP;
	r = op_begin(t, done, user_data);
	if (r < 0)
		return r;
	enter(t);
	r = op_started(t, t->ops->erase(t, sectors, n));
	leave(t);
	return r;
}

int transport_go(struct transport *t, uint32_t addr, transport_done_fn done, void *user_data)
{
	int r;

	if (!t->ops->go)
		return -ENOTSUP;
	r = op_begin(t, done, user_data);
	if (r < 0)
		return r;
	enter(t);
	r = op_started(t, t->ops->go(t, addr));
	leave(t);
	return r;
}

void transport_cancel(struct transport *t)
{
	if (!t->busy)
		return;
	t->busy = false;
	t->done = NULL;
	t->done_data = NULL;
	enter(t);
	t->ops->cancel(t);
	leave(t);
}

/* ---- blocking ---- */

int transport_wait(struct transport *t)
{
	int r;

	/* A callback may start the next operation (the wait goes on) or close the link (it
	 * is freed when the wait ends). */
	enter(t);
	while (t->busy && !t->closed) {
		struct transport_watch w;
		struct pollfd p = { .fd = -1 };
		int timeout = -1, pr;
		unsigned revents = 0;

		transport_watch(t, &w);
		if (w.deadline_ms >= 0) {
			int64_t left = w.deadline_ms - transport_now_ms(t);

			timeout = left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
		}
		if (w.fd < 0 && timeout < 0) {
			leave(t);
			return -EDEADLK;	/* a backend with nothing to wait for: a bug */
		}
		p.fd = w.fd;
		p.events = (short)(((w.events & TRANSPORT_IN) ? POLLIN : 0) |
				   ((w.events & TRANSPORT_OUT) ? POLLOUT : 0));
		pr = poll(&p, w.fd >= 0 ? 1 : 0, timeout);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0) {
			r = -errno;
			leave(t);
			return r;
		}
		if (pr > 0) {
			if (p.revents & POLLIN)
				revents |= TRANSPORT_IN;
			if (p.revents & POLLOUT)
				revents |= TRANSPORT_OUT;
			if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
				revents |= TRANSPORT_ERR;
		}
		transport_io_ready(t, revents);
	}
	r = t->closed ? -ECANCELED : t->result;
	leave(t);
	return r;
}

int transport_probe_sync(struct transport *t, unsigned flags, enum transport_presence *ret)
{
	int r = transport_probe(t, flags, ret, NULL, NULL);

	return r < 0 ? r : transport_wait(t);
}

int transport_identify_sync(struct transport *t, struct transport_identity *ret)
{
	int r = transport_identify(t, ret, NULL, NULL);

	return r < 0 ? r : transport_wait(t);
}

int transport_osfi_sync(struct transport *t, const struct osfi_request *req, uint8_t *answer,
			size_t answer_max, struct transport_answer *ret)
{
	int r = transport_osfi(t, req, answer, answer_max, ret, NULL, NULL);

	return r < 0 ? r : transport_wait(t);
}

int transport_reconnect_sync(struct transport *t, unsigned within_ms)
{
	int r = transport_reconnect(t, within_ms, NULL, NULL);

	return r < 0 ? r : transport_wait(t);
}

int transport_read_sync(struct transport *t, uint32_t addr, uint8_t *buf, size_t len)
{
	int r = transport_read(t, addr, buf, len, NULL, NULL);

	return r < 0 ? r : transport_wait(t);
}

int transport_write_sync(struct transport *t, uint32_t addr, const uint8_t *data, size_t len)
{
	int r = transport_write(t, addr, data, len, NULL, NULL);

	return r < 0 ? r : transport_wait(t);
}

int transport_erase_sync(struct transport *t, const uint16_t *sectors, size_t n)
{
	int r = transport_erase(t, sectors, n, NULL, NULL);

	return r < 0 ? r : transport_wait(t);
}

int transport_go_sync(struct transport *t, uint32_t addr)
{
	int r = transport_go(t, addr, NULL, NULL);

	return r < 0 ? r : transport_wait(t);
}

/* The link vtable's common part against an in-memory backend (no descriptor, a fake clock):
 * one operation at a time, its callback exactly once, cancel and close silence it, a link
 * closed from its own callback outlives the backend's call, transport_wait() runs on
 * deadlines alone. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "transport.h"

/* The fake chip answers each operation when the clock reaches its deadline. */
struct fake {
	int64_t due;		/* -1: nothing running */
	int result;
	bool closed;
	enum transport_presence *presence;
	struct transport_answer *answer;
	uint16_t subop;
};

static int64_t clock_ms;
static unsigned opens, closes;

static int64_t fake_now(void *user_data)
{
	(void)user_data;
	return clock_ms;
}

static struct fake *F(const struct transport *t)
{
	return transport_priv(t);
}

static bool fake_handles(const char *spec)
{
	return strncmp(spec, "fake:", 5) == 0;
}

static int fake_open(struct transport *t, const char *spec, char *err, size_t err_size)
{
	if (strcmp(spec, "fake:absent") == 0) {
		snprintf(err, err_size, "no such fake");
		return -ENODEV;
	}
	F(t)->due = -1;
	opens++;
	return 0;
}

static void fake_close(struct transport *t)
{
	F(t)->closed = true;
	closes++;
}

static void fake_watch(const struct transport *t, struct transport_watch *ret)
{
	ret->fd = -1;
	ret->deadline_ms = F(t)->due;
}

static void fake_io_ready(struct transport *t, unsigned revents)
{
	struct fake *f = F(t);

	(void)revents;
	if (f->due < 0 || transport_now_ms(t) < f->due)
		return;
	f->due = -1;
	if (f->result == 0 && f->presence)
		*f->presence = TRANSPORT_FRESH;
	if (f->result == 0 && f->answer)
		*f->answer = (struct transport_answer){ .status = 0, .len = 4 };
	transport_complete(t, f->result);
	/* Nothing of f is touched after completing: the callback may have closed t. */
}

static int fake_probe(struct transport *t, unsigned flags, enum transport_presence *ret)
{
	(void)flags;
	F(t)->presence = ret;
	F(t)->answer = NULL;
	F(t)->due = transport_now_ms(t) + 10;
	return 0;
}

static int fake_identify(struct transport *t, struct transport_identity *ret)
{
	(void)t;
	(void)ret;
	return -ENOTSUP;
}

static int fake_osfi(struct transport *t, const struct osfi_request *req, uint8_t *answer,
		     size_t answer_max, struct transport_answer *ret)
{
	(void)answer;
	(void)answer_max;
	F(t)->subop = req->subop;
	F(t)->presence = NULL;
	F(t)->answer = ret;
	F(t)->due = transport_now_ms(t) + 20;
	return 0;
}

static int fake_reconnect(struct transport *t, unsigned within_ms)
{
	F(t)->presence = NULL;
	F(t)->answer = NULL;
	F(t)->due = transport_now_ms(t) + within_ms;
	return 0;
}

static void fake_cancel(struct transport *t)
{
	F(t)->due = -1;
}

static void fake_describe(const struct transport *t, char *buf, size_t size)
{
	snprintf(buf, size, "fake result %d", F(t)->result);
}

static const char *fake_port_name(const struct transport *t)
{
	(void)t;
	return "fake0";
}

static const struct transport_ops fake_ops = {
	.name = "fake",
	.handles = fake_handles,
	.priv_size = sizeof(struct fake),
	.open = fake_open,
	.close = fake_close,
	.watch = fake_watch,
	.io_ready = fake_io_ready,
	.probe = fake_probe,
	.identify = fake_identify,
	.osfi = fake_osfi,
	.reconnect = fake_reconnect,
	.cancel = fake_cancel,
	.describe = fake_describe,
	.port_name = fake_port_name,
};

static struct transport *open_fake(void)
{
	struct transport_options o;
	struct transport *t = NULL;

	transport_options_default(&o);
	o.now_ms = fake_now;
	assert_int_equal(transport_open_with(&fake_ops, "fake:0", &o, &t, NULL, 0), 0);
	return t;
}

struct calls {
	unsigned n;
	int r;
	bool close_in_callback;
	struct transport **tp;
};

static void done(struct transport *t, int r, void *user_data)
{
	struct calls *c = user_data;

	c->n++;
	c->r = r;
	if (c->close_in_callback)
		*c->tp = transport_close(t);
}

/* Advances the fake clock to the deadline and tells the link, as a loop's timer does. */
static void fire(struct transport *t)
{
	struct transport_watch w;

	transport_watch(t, &w);
	assert_int_equal(w.fd, -1);
	assert_true(w.deadline_ms >= 0);
	clock_ms = w.deadline_ms;
	transport_io_ready(t, 0);
}

static void test_one_at_a_time(void **state)
{
	struct transport *t = open_fake();
	enum transport_presence p = TRANSPORT_ABSENT;
	struct calls c = { 0 };
	struct transport_watch w;

	(void)state;
	assert_string_equal(transport_backend(t)->name, "fake");
	assert_string_equal(transport_port_name(t), "fake0");
	assert_false(transport_busy(t));
	transport_watch(t, &w);
	assert_int_equal(w.deadline_ms, -1);

	assert_int_equal(transport_probe(t, 0, &p, done, &c), 0);
	assert_true(transport_busy(t));
	assert_int_equal(transport_reconnect(t, 100, done, &c), -EBUSY);
	/* Early: nothing happens. */
	transport_io_ready(t, 0);
	assert_int_equal(c.n, 0);
	fire(t);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.r, 0);
	assert_int_equal(p, TRANSPORT_FRESH);
	assert_false(transport_busy(t));
	/* Exactly once. */
	transport_io_ready(t, 0);
	assert_int_equal(c.n, 1);

	/* A starter that fails starts nothing and calls nothing. */
	assert_int_equal(transport_identify(t, NULL, done, &c), -ENOTSUP);
	assert_false(transport_busy(t));
	assert_int_equal(c.n, 1);
	transport_close(t);
}

static void test_cancel_and_close(void **state)
{
	struct transport *t = open_fake();
	struct calls c = { 0 };
	unsigned closes_before = closes;

	(void)state;
	assert_int_equal(transport_reconnect(t, 50, done, &c), 0);
	transport_cancel(t);
	assert_false(transport_busy(t));
	clock_ms += 1000;
	transport_io_ready(t, 0);
	assert_int_equal(c.n, 0);

	/* Closing with an operation running: no callback, the backend is closed. */
	assert_int_equal(transport_reconnect(t, 50, done, &c), 0);
	assert_null(transport_close(t));
	assert_int_equal(closes, closes_before + 1);
	assert_int_equal(c.n, 0);
	assert_null(transport_close(NULL));
}

static void test_close_in_callback(void **state)
{
	struct transport *t = open_fake();
	struct transport_answer a = { 0 };
	struct osfi_request req = { .subop = OSFI_OP_GET_INFO, .answer_max = 64 };
	uint8_t buf[64];
	unsigned closes_before = closes;
	struct calls c = { .close_in_callback = true, .tp = &t };

	(void)state;
	assert_int_equal(transport_osfi(t, &req, buf, sizeof(buf), &a, done, &c), 0);
	fire(t);
	/* Closed from its callback, freed once the backend returned (ASan checks the rest). */
	assert_int_equal(c.n, 1);
	assert_null(t);
	assert_int_equal(closes, closes_before + 1);
	assert_int_equal(a.len, 4);
}

static void test_wait(void **state)
{
	struct transport *t;
	struct transport_options o;
	struct transport_answer a = { 0 };
	struct osfi_request req = { .subop = OSFI_OP_PUT_DATA };
	uint8_t buf[16];
	char text[64];

	(void)state;
	/* The real clock: transport_wait() polls until the deadline. */
	transport_options_default(&o);
	assert_int_equal(transport_open_with(&fake_ops, "fake:1", &o, &t, NULL, 0), 0);
	assert_int_equal(transport_wait(t), 0);	/* nothing running */
	assert_int_equal(transport_reconnect_sync(t, 30), 0);
	assert_int_equal(transport_osfi_sync(t, &req, buf, sizeof(buf), &a), 0);
	assert_int_equal(a.len, 4);
	F(t)->result = -TRANSPORT_E_TIMEOUT;
	assert_int_equal(transport_probe_sync(t, 0, NULL), -TRANSPORT_E_TIMEOUT);
	transport_describe(t, text, sizeof(text));
	assert_string_equal(text, "fake result -1001");
	transport_close(t);
}

static void test_open(void **state)
{
	struct transport *t = NULL;
	char err[64] = "";

	(void)state;
	assert_int_equal(transport_open_with(&fake_ops, "fake:absent", NULL, &t, err, sizeof(err)),
			 -ENODEV);
	assert_string_equal(err, "no such fake");
	assert_null(t);
	/* Any other spec is the UART backend's; a missing device says so. */
	assert_int_equal(transport_open("tty:/nonexistent/tty", NULL, &t, err, sizeof(err)),
			 -ENODEV);
	assert_non_null(strstr(err, "/nonexistent/tty"));
	assert_null(transport_uart_link(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_at_a_time),
		cmocka_unit_test(test_cancel_and_close),
		cmocka_unit_test(test_close_in_callback),
		cmocka_unit_test(test_wait),
		cmocka_unit_test(test_open),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

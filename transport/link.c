/* UART link: libserialport transport and a blocking driver of the an3155 engine. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <linux/serial.h>
#include <sys/ioctl.h>

#include <libserialport.h>

#include "link.h"
#include "link-internal.h"
#include "sfi-time.h"

#define QUIET_MS 20		/* silence that ends draining after a resync or an entry */
#define RESYNC_TRY_MS 20	/* wait for an answer to one 0x7F while resynchronising */
#define SYNC_TRY_MS 25		/* wait for an answer to one 0x7F when connecting */

struct link {
	struct sp_port *port;
	int fd;
	char *name;
	struct link_options opt;
	void (*progress)(void *user_data, size_t done, size_t total);
	void *progress_data;
	unsigned write_unit;
	bool resyncing;		/* answers may be stale: always drain after a sync round */
	char error[256];
};

__attribute__((format(printf, 2, 3)))
static void link_set_error(struct link *l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(l->error, sizeof(l->error), fmt, ap);
	va_end(ap);
}

static void link_set_gone(struct link *l)
{
	link_set_error(l, "serial port %s is gone (adapter unplugged?)", l->name);
}

__attribute__((format(printf, 2, 3)))
static void link_debug(const struct link *l, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!l->opt.debug)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	l->opt.debug(l->opt.user_data, line);
}

/* Hex dump of a frame with a direction arrow, at most 64 bytes shown. */
static void link_dump(const struct link *l, const char *arrow, const uint8_t *buf, size_t n)
{
	char line[3 * 64 + 48];
	size_t off;

	if (!l->opt.debug || n == 0)
		return;
	off = (size_t)snprintf(line, sizeof(line), "%s %s", l->name, arrow);
	for (size_t i = 0; i < n && i < 64; i++)
		off += (size_t)snprintf(line + off, sizeof(line) - off, " %02x", buf[i]);
	if (n > 64)
		snprintf(line + off, sizeof(line) - off, " ... (%zu bytes)", n);
	l->opt.debug(l->opt.user_data, line);
}

void link_options_default(struct link_options *o)
{
	*o = (struct link_options){
		.baud = 115200,
		.retries = 2,
		.resync_ms = 3000,
	};
	an3155_timeouts_default(&o->timeouts);
}

static int remaining_ms(int64_t deadline)
{
	int64_t left = deadline - sfi_monotonic_ms();

	if (left < 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* ---- Port resolution ---- */

void link_err_printf(char *err, size_t err_size, const char *fmt, ...)
{
	va_list ap;

	if (!err || err_size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_size, fmt, ap);
	va_end(ap);
}

/* Finds the device path for a serial: or usb: specification. */
static int link_resolve(const char *spec, char **ret_name, char *err, size_t err_size)
{
	struct link_port_info *ports = NULL;
	struct link_spec s;
	size_t n = 0, i;
	int r;

	r = link_spec_parse(spec, &s, err, err_size);
	if (r < 0)
		return r;
	r = link_ports_list(&ports, &n, err, err_size);
	if (r < 0)
		return r;
	r = link_ports_resolve(ports, n, &s, &i, err, err_size);
	if (r == 0) {
		*ret_name = strdup(ports[i].path);
		if (!*ret_name) {
			link_err_printf(err, err_size, "out of memory");
			r = -ENOMEM;
		}
	}
	link_ports_free(ports, n);
	return r;
}

static int sp_to_errno(enum sp_return r)
{
	switch (r) {
	case SP_OK:
		return 0;
	case SP_ERR_ARG:
		return -EINVAL;
	case SP_ERR_FAIL:
		return errno > 0 ? -errno : -EIO;
	case SP_ERR_MEM:
		return -ENOMEM;
	case SP_ERR_SUPP:
		return -ENOTSUP;
	}
	return -EIO;
}

/* Every command waits for one-byte ACKs: USB-serial adapters that batch received bytes
 * (FTDI's latency timer defaults to 16 ms) would add that to each of the three round trips
 * of a block. Ask the driver for low latency; ttys that do not know the request (PTYs)
 * simply keep their behaviour. */
static void link_low_latency(struct link *l)
{
	struct serial_struct ss;

	if (ioctl(l->fd, TIOCGSERIAL, &ss) < 0)
		return;
	if (ss.flags & ASYNC_LOW_LATENCY)
		return;
	ss.flags |= ASYNC_LOW_LATENCY;
	if (ioctl(l->fd, TIOCSSERIAL, &ss) < 0)
		link_debug(l, "%s: low-latency mode not available: %s", l->name, strerror(errno));
	else
		link_debug(l, "%s: low-latency mode on", l->name);
}

static speed_t baud_to_speed(unsigned baud)
{
	static const struct {
		unsigned baud;
		speed_t speed;
	} table[] = {
		{ 1200, B1200 },     { 2400, B2400 },	  { 4800, B4800 },     { 9600, B9600 },
		{ 19200, B19200 },   { 38400, B38400 },	  { 57600, B57600 },   { 115200, B115200 },
		{ 230400, B230400 }, { 460800, B460800 }, { 921600, B921600 },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].baud == baud)
			return table[i].speed;
	return 0;
}

/* "tty:PATH": a terminal opened with termios alone, for ttys that libserialport does not
 * enumerate (pseudo-terminals, e.g. the emulator's plain PTYs). Same 8E1 raw settings. */
static int link_open_tty(struct link *l, const char *path, char *err, size_t err_size)
{
	speed_t speed = baud_to_speed(l->opt.baud);
	struct termios tio;

	l->name = strdup(path);
	if (!l->name)
		return -ENOMEM;
	if (speed == 0) {
		link_err_printf(err, err_size, "%u baud is not a standard rate for %s", l->opt.baud, path);
		return -EINVAL;
	}
	l->fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (l->fd < 0) {
		int r = -errno;

		link_err_printf(err, err_size, "cannot open %s: %s", path, strerror(errno));
		return r == -ENOENT ? -ENODEV : r;
	}
	if (tcgetattr(l->fd, &tio) < 0) {
		int r = -errno;

		link_err_printf(err, err_size, "%s is not a terminal: %s", path, strerror(errno));
		return r;
	}
	cfmakeraw(&tio);
	tio.c_cflag &= ~(CSIZE | CSTOPB | PARODD | CRTSCTS);
	tio.c_cflag |= CS8 | PARENB | CREAD | CLOCAL;
	tio.c_iflag &= ~(IXON | IXOFF | IXANY);
	tio.c_cc[VMIN] = 0;
	tio.c_cc[VTIME] = 0;
	cfsetispeed(&tio, speed);
	cfsetospeed(&tio, speed);
	if (tcsetattr(l->fd, TCSANOW, &tio) == 0)
		return 0;
	if (errno == EINVAL) {
		/* A pseudo-terminal has no line to carry parity and drops PARENB (glibc then
		 * reports EINVAL); everything else applies. */
		tio.c_cflag &= ~PARENB;
		if (tcsetattr(l->fd, TCSANOW, &tio) == 0) {
			link_debug(l, "%s: no parity on this terminal (pseudo-terminal)", path);
			return 0;
		}
	}
	link_err_printf(err, err_size, "cannot set %u baud 8E1 on %s: %s", l->opt.baud, path,
		strerror(errno));
	return -errno;
}

int link_open(const char *spec, const struct link_options *o, struct link **ret, char *err,
	      size_t err_size)
{
	struct sp_port_config *cfg = NULL;
	struct link *l;
	enum sp_return sr;
	int r, flags;

	if (!spec || !ret)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->fd = -1;
	l->write_unit = 4;
	if (o)
		l->opt = *o;
	else
		link_options_default(&l->opt);
	if (l->opt.baud == 0)
		l->opt.baud = 115200;

	if (strncmp(spec, "tty:", 4) == 0) {
		if (spec[4] == '\0') {
			link_err_printf(err, err_size, "port '%s' names no device", spec);
			r = -EINVAL;
			goto fail;
		}
		r = link_open_tty(l, spec + 4, err, err_size);
		if (r < 0)
			goto fail;
		goto opened;
	}
	if (strncmp(spec, "serial:", 7) == 0 || strncmp(spec, "usb:", 4) == 0) {
		r = link_resolve(spec, &l->name, err, err_size);
		if (r < 0)
			goto fail;
	} else {
		l->name = strdup(spec);
		if (!l->name) {
			r = -ENOMEM;
			goto fail;
		}
	}

	sr = sp_get_port_by_name(l->name, &l->port);
	if (sr != SP_OK) {
		r = sr == SP_ERR_FAIL || sr == SP_ERR_ARG ? -ENODEV : sp_to_errno(sr);
		link_err_printf(err, err_size, "serial port %s not found", l->name);
		goto fail;
	}
	sr = sp_open(l->port, SP_MODE_READ_WRITE);
	if (sr != SP_OK) {
		r = sp_to_errno(sr);
		link_err_printf(err, err_size, "cannot open serial port %s: %s", l->name, strerror(-r));
		goto fail;
	}
	/* Set the whole frame format at once: 8 data bits, even parity, 1 stop bit, no flow
	 * control; the modem lines are left to entry sequences. */
	sr = sp_new_config(&cfg);
	if (sr == SP_OK)
		sr = sp_get_config(l->port, cfg);
	if (sr == SP_OK)
		sr = sp_set_config_baudrate(cfg, (int)l->opt.baud);
	if (sr == SP_OK)
		sr = sp_set_config_bits(cfg, 8);
	if (sr == SP_OK)
		sr = sp_set_config_parity(cfg, SP_PARITY_EVEN);
	if (sr == SP_OK)
		sr = sp_set_config_stopbits(cfg, 1);
	if (sr == SP_OK)
		sr = sp_set_config_xon_xoff(cfg, SP_XONXOFF_DISABLED);
	if (sr == SP_OK)
		sr = sp_set_config_cts(cfg, SP_CTS_IGNORE);
	if (sr == SP_OK)
		sr = sp_set_config_dsr(cfg, SP_DSR_IGNORE);
	if (sr == SP_OK)
		sr = sp_set_config(l->port, cfg);
	sp_free_config(cfg);
	if (sr != SP_OK) {
		r = sp_to_errno(sr);
		link_err_printf(err, err_size, "cannot set %u baud 8E1 on %s: %s", l->opt.baud, l->name,
			strerror(-r));
		goto fail;
	}
	sr = sp_get_port_handle(l->port, &l->fd);
	if (sr != SP_OK) {
		r = sp_to_errno(sr);
		link_err_printf(err, err_size, "no file descriptor for %s", l->name);
		goto fail;
	}
	flags = fcntl(l->fd, F_GETFL);
	if (flags < 0 || fcntl(l->fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	    fcntl(l->fd, F_SETFD, FD_CLOEXEC) < 0) {
		r = -errno;
		link_err_printf(err, err_size, "cannot configure %s: %s", l->name, strerror(errno));
		goto fail;
	}
	link_low_latency(l);
opened:
	tcflush(l->fd, TCIFLUSH);
	link_debug(l, "%s: open at %u baud 8E1", l->name, l->opt.baud);
	*ret = l;
	return 0;

fail:
	link_close(l);
	return r;
}

struct link *link_close(struct link *l)
{
	if (!l)
		return NULL;
	if (l->port) {
		sp_close(l->port);
		sp_free_port(l->port);
	} else if (l->fd >= 0) {
		close(l->fd);
	}
	free(l->name);
	free(l);
	return NULL;
}

int link_fd(const struct link *l)
{
	return l->fd;
}

const char *link_port_name(const struct link *l)
{
	return l->name;
}

const char *link_last_error(const struct link *l)
{
	return l->error;
}

void link_set_progress(struct link *l, void (*cb)(void *user_data, size_t done, size_t total),
		       void *user_data)
{
	l->progress = cb;
	l->progress_data = user_data;
}

static bool errno_means_gone(int e)
{
	return e == EIO || e == ENXIO || e == ENODEV || e == EBADF || e == EPIPE;
}

/* ---- Raw I/O with deadlines ---- */

/* Writes all of buf before the deadline. Returns 0 or a negative error. */
static int link_write_all(struct link *l, const uint8_t *buf, size_t n, int64_t deadline)
{
	size_t off = 0;

	while (off < n) {
		ssize_t w = write(l->fd, buf + off, n - off);

		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN)
			return errno_means_gone(errno) ? -AN3155_E_PORT_GONE : -errno;

		struct pollfd p = { .fd = l->fd, .events = POLLOUT };
		int pr = poll(&p, 1, remaining_ms(deadline));

		if (pr < 0 && errno != EINTR)
			return -errno;
		if (pr == 0)
			return -AN3155_E_TIMEOUT;
		if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
			return -AN3155_E_PORT_GONE;
	}
	return 0;
}

/* Reads what is available, up to max bytes, waiting until the deadline for the first one.
 * Returns the count (> 0), -AN3155_E_TIMEOUT, -AN3155_E_PORT_GONE or a negative errno.
 * Polls before reading: in raw mode (VMIN = VTIME = 0) a tty's read() returns 0 both for
 * "no data" and after a hang-up, so only poll's POLLHUP tells them apart. */
static int link_read_some(struct link *l, uint8_t *buf, size_t max, int64_t deadline)
{
	unsigned empty = 0;

	for (;;) {
		struct pollfd p = { .fd = l->fd, .events = POLLIN };
		int pr = poll(&p, 1, remaining_ms(deadline));
		ssize_t n;

		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -errno;
		if (pr == 0)
			return -AN3155_E_TIMEOUT;
		if (p.revents & (POLLERR | POLLNVAL))
			return -AN3155_E_PORT_GONE;
		if ((p.revents & POLLHUP) && !(p.revents & POLLIN))
			return -AN3155_E_PORT_GONE;

		n = read(l->fd, buf, max);
		if (n > 0)
			return (int)n;
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return errno_means_gone(errno) ? -AN3155_E_PORT_GONE : -errno;
		/* Readable but nothing to read: a hang-up, or (rarely) a spurious wake-up. */
		if ((p.revents & POLLHUP) || ++empty >= 3)
			return -AN3155_E_PORT_GONE;
	}
}

/* Discards input until the line has been quiet for quiet_ms or the deadline passes. */
static int link_drain(struct link *l, int quiet_ms, int64_t deadline)
{
	uint8_t junk[256];

	for (;;) {
		int64_t until = sfi_monotonic_ms() + quiet_ms;
		int r;

		if (until > deadline)
			until = deadline;
		r = link_read_some(l, junk, sizeof(junk), until);
		if (r == -AN3155_E_TIMEOUT)
			return 0;
		if (r < 0)
			return r;
		link_dump(l, "<- (discarded)", junk, (size_t)r);
		if (sfi_monotonic_ms() >= deadline)
			return 0;
	}
}

/* ---- Driver ---- */

/* Hands a transport timeout or a vanished port to the engine, which ends the transfer with
 * it. Returns false for any other result. */
static bool xfer_take_io_error(struct an3155_xfer *x, int r)
{
	if (r == -AN3155_E_TIMEOUT) {
		an3155_xfer_timeout(x);
		return true;
	}
	if (r == -AN3155_E_PORT_GONE) {
		an3155_xfer_port_gone(x);
		return true;
	}
	return false;
}

/* Runs x once to its end. */
static int link_run_once(struct link *l, struct an3155_xfer *x)
{
	unsigned armed = 0;
	int64_t deadline = 0, wire_ms = 0;
	uint8_t buf[AN3155_SPECIAL_MAX_ANSWER + 8];
	struct an3155_io io;

	for (;;) {
		int r;

		switch (an3155_xfer_next(x, &io)) {
		case AN3155_NEXT_DONE:
		case AN3155_NEXT_FAILED:
			return an3155_xfer_result(x);
		case AN3155_NEXT_IO:
			break;
		}

		if (io.tx_len > 0) {
			link_dump(l, "->", io.tx, io.tx_len);
			r = link_write_all(l, io.tx, io.tx_len, sfi_monotonic_ms() + io.timeout_ms);
			if (xfer_take_io_error(x, r))
				continue;
			if (r < 0)
				return r;
			an3155_xfer_wrote(x, io.tx_len);
			/* write() returns once the bytes are queued; the step's timeout counts
			 * from when they have left at the line rate. */
			wire_ms = (int64_t)io.tx_len * 11000 / l->opt.baud + 1;
			continue;
		}

		if (io.wait_id != armed) {
			armed = io.wait_id;
			deadline = sfi_monotonic_ms() + io.timeout_ms + wire_ms;
			wire_ms = 0;
		}
		r = link_read_some(l, buf, io.rx_want < sizeof(buf) ? io.rx_want : sizeof(buf),
				   deadline);
		if (xfer_take_io_error(x, r))
			continue;
		if (r < 0)
			return r;
		link_dump(l, "<-", buf, (size_t)r);
		an3155_xfer_feed(x, buf, (size_t)r);
	}
}

/* Sends single 0x7F bytes, each given try_ms to be answered, until the chip answers ACK or
 * NACK, then waits for the line to go quiet. Afterwards the chip is idle with nothing
 * pending, provided the answer was to our last 0x7F: that byte either completed a frame
 * the chip was collecting, or was a command byte paired with its (wrong) complement, or
 * was the sync byte itself. Returns 0 and *ret_tries, or a negative error. */
static int link_sync_round(struct link *l, unsigned try_ms, int64_t deadline,
			   unsigned *ret_tries)
{
	struct an3155_timeouts t = l->opt.timeouts;
	struct an3155_xfer x;
	unsigned tries = 0;
	int r;

	t.ack_ms = try_ms;
	do {
		if (tries > 0 && sfi_monotonic_ms() >= deadline)
			return -AN3155_E_TIMEOUT;
		tries++;
		an3155_xfer_sync(&x, &t);
		r = link_run_once(l, &x);
	} while (r == -AN3155_E_TIMEOUT || r == -AN3155_E_UNEXPECTED);
	if (r < 0)
		return r;
	link_debug(l, "%s: %s after %u tr%s", l->name,
		   an3155_xfer_was_synced(&x) ? "NACK (already synced)" : "ACK", tries,
		   tries == 1 ? "y" : "ies");
	*ret_tries = tries;
	/* One 0x7F answered at once leaves nothing in flight. */
	if (tries == 1 && !l->resyncing)
		return 0;
	return link_drain(l, QUIET_MS, sfi_monotonic_ms() + l->opt.resync_ms);
}

/* Brings the bootloader back to waiting for a command after a failed exchange: the
 * policy's number of answered sync rounds (AN3155_RESYNC_ROUNDS). */
static int link_resync(struct link *l)
{
	int64_t deadline = sfi_monotonic_ms() + l->opt.resync_ms;
	unsigned tries;
	int r;

	r = link_drain(l, QUIET_MS, deadline);
	l->resyncing = true;
	for (int round = 0; r == 0 && round < AN3155_RESYNC_ROUNDS; round++)
		r = link_sync_round(l, RESYNC_TRY_MS, deadline, &tries);
	l->resyncing = false;
	if (r == 0)
		link_debug(l, "%s: resynchronised", l->name);
	return r;
}

int link_run(struct link *l, struct an3155_xfer *x)
{
	struct an3155_xfer *initial;
	unsigned attempt = 0;
	int r;

	/* A copy of the freshly started transfer restarts it; caller buffers are borrowed by
	 * pointer, so the copy repeats the same request. */
	initial = malloc(sizeof(*initial));
	if (!initial)
		return -ENOMEM;
	*initial = *x;

	for (;;) {
		r = link_run_once(l, x);
		if (r >= 0)
			break;
		if (!an3155_retry_allowed(x, r, attempt, l->opt.retries))
			break;
		attempt++;
		{
			char what[160];

			an3155_xfer_describe(x, what, sizeof(what));
			link_debug(l, "%s: %s; resync and retry %u of %u", l->name, what, attempt,
				   l->opt.retries);
		}
		if (x->op != AN3155_SYNC) {
			int rr = link_resync(l);

			if (rr < 0) {
				/* Keep the original failure (it names the step that went wrong)
				 * unless the port itself vanished. */
				if (rr == -AN3155_E_PORT_GONE)
					r = rr;
				break;
			}
		}
		*x = *initial;
	}
	free(initial);
	if (r < 0 && r != -AN3155_E_PORT_GONE) {
		char what[160];

		an3155_xfer_describe(x, what, sizeof(what));
		link_set_error(l, "%s on %s", what, l->name);
	} else if (r == -AN3155_E_PORT_GONE) {
		link_set_gone(l);
	}
	return r;
}

/* ---- Lines and entry ---- */

int link_set_lines(struct link *l, int dtr, int rts)
{
	enum sp_return sr = SP_OK;

	if (!l->port) {
		/* A "tty:" port: the modem-line ioctls directly. */
		int on = 0, off = 0;

		if (dtr >= 0)
			*(dtr ? &on : &off) |= TIOCM_DTR;
		if (rts >= 0)
			*(rts ? &on : &off) |= TIOCM_RTS;
		if ((on && ioctl(l->fd, TIOCMBIS, &on) < 0) ||
		    (off && ioctl(l->fd, TIOCMBIC, &off) < 0))
			sr = SP_ERR_FAIL;
	} else {
		if (dtr >= 0)
			sr = sp_set_dtr(l->port, dtr ? SP_DTR_ON : SP_DTR_OFF);
		if (sr == SP_OK && rts >= 0)
			sr = sp_set_rts(l->port, rts ? SP_RTS_ON : SP_RTS_OFF);
	}
	if (sr != SP_OK) {
		int r = sp_to_errno(sr);

		if (errno_means_gone(-r))
			r = -AN3155_E_PORT_GONE;
		link_set_error(l, "cannot set the modem lines of %s: %s", l->name,
			       an3155_strerror(r));
		return r;
	}
	link_debug(l, "%s: dtr=%d rts=%d", l->name, dtr, rts);
	return 0;
}

int link_enter_bootloader(struct link *l, const char *seq)
{
	struct link_entry_step steps[LINK_ENTRY_MAX_STEPS];
	char err[128];
	size_t n;
	int r;

	r = link_entry_parse(seq, steps, LINK_ENTRY_MAX_STEPS, &n, err, sizeof(err));
	if (r < 0) {
		link_set_error(l, "%s", err);
		return r;
	}
	for (size_t i = 0; i < n; i++) {
		switch (steps[i].kind) {
		case LINK_ENTRY_DTR:
			r = link_set_lines(l, (int)steps[i].value, -1);
			break;
		case LINK_ENTRY_RTS:
			r = link_set_lines(l, -1, (int)steps[i].value);
			break;
		case LINK_ENTRY_WAIT:
			/* Wait on the port itself: whatever a resetting chip sends is dropped
			 * and an unplugged adapter is noticed. */
			r = link_drain(l, (int)steps[i].value, sfi_monotonic_ms() + steps[i].value);
			if (r == -AN3155_E_PORT_GONE)
				link_set_gone(l);
			break;
		case _LINK_ENTRY_MAX:
			r = -EINVAL;
			break;
		}
		if (r < 0)
			return r;
	}
	tcflush(l->fd, TCIFLUSH);
	return 0;
}

/* ---- Commands ---- */

int link_sync(struct link *l)
{
	/* Short tries within the whole budget: a 0x7F sent before the bootloader (or the
	 * adapter) was ready is lost, and waiting a full step timeout for it would cost every
	 * chip of a line that much. A try lasts three byte times plus scheduling slack. */
	int64_t deadline = sfi_monotonic_ms() + (int64_t)l->opt.timeouts.ack_ms * (l->opt.retries + 1);
	unsigned try_ms = SYNC_TRY_MS + 3 * 11000 / l->opt.baud, tries = 0;
	int r;

	if (try_ms > l->opt.timeouts.ack_ms)
		try_ms = l->opt.timeouts.ack_ms;
	tcflush(l->fd, TCIFLUSH);
	r = link_sync_round(l, try_ms, deadline, &tries);
	/* After several tries the answer may belong to an earlier 0x7F and a later one may
	 * still be pending in the chip: one more round settles it. */
	if (r == 0 && tries > 1)
		r = link_sync_round(l, try_ms, deadline, &tries);
	if (r == 0)
		return 0;
	if (r == -AN3155_E_TIMEOUT || r == -AN3155_E_UNEXPECTED)
		link_set_error(l, "no bootloader answers on %s (chip absent, not in its bootloader, "
			       "or wrong entry sequence)", l->name);
	else if (r == -AN3155_E_PORT_GONE)
		link_set_gone(l);
	else
		link_set_error(l, "sync on %s failed: %s", l->name, an3155_strerror(r));
	return r;
}

/* Starts a command that takes no arguments and runs it. */
static int link_query(struct link *l, struct an3155_xfer *x,
		      void (*start)(struct an3155_xfer *x, const struct an3155_timeouts *t))
{
	start(x, &l->opt.timeouts);
	return link_run(l, x);
}

int link_get(struct link *l, struct an3155_get_info *ret)
{
	struct an3155_xfer x;
	int r = link_query(l, &x, an3155_xfer_get);

	if (r == 0)
		*ret = *an3155_xfer_get_info(&x);
	return r;
}

int link_get_version(struct link *l, struct an3155_version_info *ret)
{
	struct an3155_xfer x;
	int r = link_query(l, &x, an3155_xfer_get_version);

	if (r == 0)
		*ret = *an3155_xfer_version_info(&x);
	return r;
}

int link_get_id(struct link *l, uint32_t *ret_pid)
{
	struct an3155_xfer x;
	int r = link_query(l, &x, an3155_xfer_get_id);

	if (r == 0)
		*ret_pid = an3155_xfer_pid(&x);
	return r;
}

static void link_report(struct link *l, size_t done, size_t total)
{
	if (l->progress)
		l->progress(l->progress_data, done, total);
}

/* The next piece of a transfer split into commands of at most max units. */
static size_t piece(size_t left, size_t max)
{
	return left < max ? left : max;
}

/* Runs a started Read or Write Memory block; a failure names the block's address. */
static int link_run_block(struct link *l, struct an3155_xfer *x, uint32_t addr)
{
	int r = link_run(l, x);

	if (r < 0 && r != -AN3155_E_PORT_GONE) {
		char what[160];

		an3155_xfer_describe(x, what, sizeof(what));
		link_set_error(l, "%s at 0x%08x on %s", what, addr, l->name);
	}
	return r;
}

int link_read_memory(struct link *l, uint32_t addr, uint8_t *buf, size_t len)
{
	struct an3155_xfer x;
	size_t off = 0;

	if (!buf || (uint64_t)addr + len > (uint64_t)UINT32_MAX + 1)
		return -EINVAL;
	while (off < len) {
		size_t n = piece(len - off, AN3155_MAX_BLOCK);
		uint32_t at = addr + (uint32_t)off;
		int r;

		r = an3155_xfer_read_memory(&x, &l->opt.timeouts, at, buf + off, n);
		if (r == 0)
			r = link_run_block(l, &x, at);
		if (r < 0)
			return r;
		off += n;
		link_report(l, off, len);
	}
	return 0;
}

int link_set_write_unit(struct link *l, unsigned unit)
{
	if (unit < 4 || unit > AN3155_MAX_BLOCK || (unit & (unit - 1)) != 0)
		return -EINVAL;
	l->write_unit = unit;
	return 0;
}

int link_write_memory(struct link *l, uint32_t addr, const uint8_t *data, size_t len)
{
	uint8_t tail[AN3155_MAX_BLOCK];
	struct an3155_xfer x;
	size_t off = 0;

	if (!data || addr % l->write_unit != 0 ||
	    (uint64_t)addr + len > (uint64_t)UINT32_MAX + 1) {
		link_set_error(l, "write address 0x%08x is not a multiple of %u", addr,
			       l->write_unit);
		return -EINVAL;
	}
	while (off < len) {
		size_t n = piece(len - off, AN3155_MAX_BLOCK);
		uint32_t at = addr + (uint32_t)off;
		const uint8_t *block = data + off;
		size_t sent = n;
		int r;

		/* Blocks are multiples of 256; only the last may need padding. */
		if (n % l->write_unit != 0) {
			sent = (n + l->write_unit - 1) & ~(size_t)(l->write_unit - 1);
			memcpy(tail, block, n);
			memset(tail + n, 0xff, sent - n);
			block = tail;
		}
		r = an3155_xfer_write_memory(&x, &l->opt.timeouts, at, block, sent);
		if (r == 0)
			r = link_run_block(l, &x, at);
		if (r < 0)
			return r;
		off += n;
		link_report(l, off, len);
	}
	return 0;
}

int link_erase(struct link *l, enum link_erase_kind kind, const uint16_t *pages, size_t n)
{
	struct an3155_xfer x;
	uint16_t code = AN3155_ERASE_MASS;
	int r;

	switch (kind) {
	case LINK_ERASE_MASS:
		code = AN3155_ERASE_MASS;
		break;
	case LINK_ERASE_BANK1:
		code = AN3155_ERASE_BANK1;
		break;
	case LINK_ERASE_BANK2:
		code = AN3155_ERASE_BANK2;
		break;
	case LINK_ERASE_PAGES:
		if (!pages || n == 0)
			return -EINVAL;
		for (size_t off = 0; off < n; off += AN3155_ERASE_MAX_PAGES) {
			size_t k = piece(n - off, AN3155_ERASE_MAX_PAGES);

			r = an3155_xfer_erase_pages(&x, &l->opt.timeouts, pages + off, k);
			if (r == 0)
				r = link_run(l, &x);
			if (r < 0)
				return r;
		}
		return 0;
	case _LINK_ERASE_MAX:
		return -EINVAL;
	}
	r = an3155_xfer_erase_special(&x, &l->opt.timeouts, code);
	if (r == 0)
		r = link_run(l, &x);
	return r;
}

int link_go(struct link *l, uint32_t addr)
{
	struct an3155_xfer x;

	an3155_xfer_go(&x, &l->opt.timeouts, addr);
	return link_run(l, &x);
}

/* Runs a started Special or Extended Special; hands back the answer length and the status. */
static int link_run_special(struct link *l, struct an3155_xfer *x, size_t *ret_out_len,
			    uint16_t *ret_status)
{
	int r = link_run(l, x);

	if (r < 0)
		return r;
	if (ret_out_len)
		*ret_out_len = an3155_xfer_answer_len(x);
	if (ret_status)
		*ret_status = an3155_xfer_status(x);
	return 0;
}

int link_special(struct link *l, uint16_t subop, const uint8_t *data, size_t len, uint8_t *out,
		 size_t out_max, size_t *ret_out_len, uint16_t *ret_status)
{
	struct an3155_xfer x;
	int r;

	r = an3155_xfer_special(&x, &l->opt.timeouts, subop, data, len, out, out_max);
	if (r == 0)
		r = link_run_special(l, &x, ret_out_len, ret_status);
	return r;
}

int link_xspecial(struct link *l, uint16_t subop, const uint8_t *p1, size_t n1,
		  const uint8_t *p2, size_t n2, uint16_t *ret_status)
{
	struct an3155_xfer x;
	int r;

	r = an3155_xfer_xspecial(&x, &l->opt.timeouts, subop, p1, n1, p2, n2);
	if (r == 0)
		r = link_run_special(l, &x, NULL, ret_status);
	return r;
}

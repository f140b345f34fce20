/* The USB DfuSe backend of the link vtable: libusb-1.0 with asynchronous control transfers
 * only, driven by the DfuSe engine (protocol/dfuse) and by the caller's event loop.
 *
 * Each link has its own libusb context. Its pollfds (libusb's event fd, timer fd and the
 * open device's usbfs fd) go into one epoll descriptor, which is what the loop watches;
 * libusb's events are handled with a zero timeout when it is ready. Transfer and hotplug
 * callbacks run inside libusb's event handling and only record what happened: the
 * operation goes on after libusb returns, so a done callback may close the link.
 *
 * Presence is USB's: hotplug arrival and departure of 0483:DF11 devices, matched to the
 * link's physical port path. The chip is followed by that path when it re-enumerates (a new
 * device number after leave, FINALIZE or a reset). Its identity is the UID GET_INFO reports
 * on the OSFI alternate (docs/protocol.md §11), never the USB serial string.
 *
 * Two calls are synchronous ioctls rather than transfers, because usbfs has no asynchronous
 * form of them: claiming the interface and SET_INTERFACE (selecting an alternate). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libusb.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "dfuse.h"
#include "osfi-wire.h"
#include "transport-dfu.h"
#include "transport-internal.h"

#define STRING_TIMEOUT_MS 1000
#define RESCAN_MS 20		/* device list rescan while waiting for a device */
#define LANGID_EN_US 0x0409

enum dfu_op {
	OP_NONE,
	OP_PROBE,
	OP_IDENTIFY,
	OP_OSFI,
	OP_RECONNECT,
	OP_COMMANDS,
	OP_READ,
	OP_WRITE,
	OP_ERASE,
	OP_MASS_ERASE,
	OP_LEAVE,
	OP_INFO,
};

enum xfer_kind {
	XK_NONE,
	XK_ENGINE,	/* a transfer the DfuSe engine asked for */
	XK_STRING,	/* a string descriptor (alt names, serial) */
};

struct dfu {
	struct transport *t;
	libusb_context *ctx;
	libusb_hotplug_callback_handle hotplug;
	bool has_hotplug;
	int epfd;

	/* Binding. */
	char want_path[32];
	char want_serial[64];
	bool want_any;

	/* The device. */
	libusb_device_handle *h;
	uint8_t devnum;
	char path[32];
	char port[64];
	struct libusb_device_descriptor dd;
	struct dfuse_config cfg;
	uint8_t iface;
	int cur_alt;
	bool names_done;
	unsigned name_next;
	struct transport_dfu_alt alts[DFUSE_MAX_ALTS];
	int osfi_alt;
	bool fresh;		/* attached since the last probe */
	bool departed;		/* hotplug said our device left */
	bool news;		/* hotplug news to look at */
	uint8_t gone_devnum;	/* reconnect: the device number that must not come back */

	/* The one transfer in flight. */
	struct libusb_transfer *xfer;
	bool xfer_busy;
	enum xfer_kind xk;
	bool xfer_done;		/* completed, not yet handled */
	int xfer_r;
	size_t xfer_n;
	uint8_t buf[LIBUSB_CONTROL_SETUP_SIZE + DFUSE_TRANSFER_MAX];

	/* The running operation. */
	enum dfu_op op;
	unsigned stage;
	int64_t wait_until;	/* engine wait, -1 none */
	int64_t deadline;	/* operation deadline (reconnect), -1 none */
	int64_t rescan_at;
	struct dfuse_timeouts tmo;
	struct dfuse_xfer x;
	bool need_idle;		/* the last operation failed: idle first */
	unsigned retries_left;	/* OSFI requests sent again after a timeout */
	bool deferred;		/* the operation's result is known: complete from io_ready */
	int deferred_r;
	bool failed_usb;	/* the result is the engine's: describe with it */

	enum transport_presence *ret_presence;
	struct transport_identity *ret_ident;
	uint8_t info[OSFI_INFO_LEN];

	struct osfi_request req;
	uint8_t *answer;
	size_t answer_max;
	struct transport_answer *ret_answer;
	size_t split_off;	/* PUT_DATA split to fit wTransferSize: bytes sent */
	uint8_t split_p1[4];

	uint8_t mem_alt;
	uint32_t mem_addr;
	size_t mem_len;
	uint8_t *mem_out;
	const uint8_t *mem_in;
	uint32_t erase_at;	/* next sector to erase */
	bool leave_has_addr;
	struct dfuse_commands *ret_cmds;
	/* A memory operation started through the vtable: the alternate is the one whose
	 * layout holds the range, the errors are link errors. */
	bool vt_mem;
	uint8_t vt_attrs;		/* DFUSE_MEM_* the range needs */
	const uint16_t *sectors;	/* erase: flash sectors, runs erased one by one */
	size_t n_sectors, sector_i;
	uint8_t *padded;		/* write: a copy padded to the write unit */

	char why[320];
};

static struct dfu *D(const struct transport *t)
{
	return transport_priv(t);
}

static int64_t now(const struct dfu *d)
{
	return transport_now_ms(d->t);
}

/* ---- libusb plumbing ---- */

static void pollfd_added(int fd, short events, void *user_data)
{
	struct dfu *d = user_data;
	struct epoll_event ev = { .data.fd = fd };

	if (events & POLLIN)
		ev.events |= EPOLLIN;
	if (events & POLLOUT)
		ev.events |= EPOLLOUT;
	if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 && errno == EEXIST)
		(void)epoll_ctl(d->epfd, EPOLL_CTL_MOD, fd, &ev);
}

static void pollfd_removed(int fd, void *user_data)
{
	struct dfu *d = user_data;

	(void)epoll_ctl(d->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static int usb_err(int r)
{
	switch (r) {
	case LIBUSB_ERROR_NO_DEVICE:
		return -DFUSE_E_GONE;
	case LIBUSB_ERROR_TIMEOUT:
		return -DFUSE_E_TIMEOUT;
	case LIBUSB_ERROR_PIPE:
		return -DFUSE_E_STALL;
	case LIBUSB_ERROR_ACCESS:
		return -EACCES;
	case LIBUSB_ERROR_BUSY:
		return -EBUSY;
	case LIBUSB_ERROR_NOT_FOUND:
		return -ENODEV;
	case LIBUSB_ERROR_NO_MEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/* The device's physical port path, "2-1.3". */
static void port_path(libusb_device *dev, char *buf, size_t size)
{
	uint8_t ports[8];
	int n = libusb_get_port_numbers(dev, ports, sizeof(ports));
	size_t off;

	off = (size_t)snprintf(buf, size, "%u", libusb_get_bus_number(dev));
	for (int i = 0; i < n && off < size; i++)
		off += (size_t)snprintf(buf + off, size - off, "%c%u", i == 0 ? '-' : '.',
					ports[i]);
}

/* The serial string of the device at a port path, from sysfs (no transfer). */
static void sysfs_serial(const char *path, char *buf, size_t size)
{
	char name[96];
	ssize_t n;
	int fd;

	buf[0] = '\0';
	snprintf(name, sizeof(name), "/sys/bus/usb/devices/%s/serial", path);
	fd = open(name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
}

static bool is_dfuse(libusb_device *dev)
{
	struct libusb_device_descriptor dd;

	return libusb_get_device_descriptor(dev, &dd) == 0 && dd.idVendor == DFUSE_VID &&
	       dd.idProduct == DFUSE_PID;
}

static bool matches(const struct dfu *d, libusb_device *dev)
{
	char path[32], serial[64];

	if (!is_dfuse(dev))
		return false;
	if (d->want_any)
		return true;
	port_path(dev, path, sizeof(path));
	if (d->want_path[0])
		return strcmp(path, d->want_path) == 0;
	sysfs_serial(path, serial, sizeof(serial));
	return strcmp(serial, d->want_serial) == 0;
}

static int hotplug_cb(libusb_context *ctx, libusb_device *dev, libusb_hotplug_event event,
		      void *user_data)
{
	struct dfu *d = user_data;

	d->news = true;
	if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT && d->h &&
	    libusb_get_device(d->h) == dev)
		d->departed = true;
	return 0;
}

static void LIBUSB_CALL xfer_cb(struct libusb_transfer *x)
{
	struct dfu *d = x->user_data;

	d->xfer_busy = false;
	d->xfer_done = true;
	d->xfer_n = 0;
	switch (x->status) {
	case LIBUSB_TRANSFER_COMPLETED:
		d->xfer_r = 0;
		d->xfer_n = (size_t)x->actual_length;
		break;
	case LIBUSB_TRANSFER_STALL:
		d->xfer_r = -DFUSE_E_STALL;
		break;
	case LIBUSB_TRANSFER_TIMED_OUT:
		d->xfer_r = -DFUSE_E_TIMEOUT;
		break;
	case LIBUSB_TRANSFER_NO_DEVICE:
		d->xfer_r = -DFUSE_E_GONE;
		break;
	case LIBUSB_TRANSFER_CANCELLED:
		d->xfer_r = -ECANCELED;
		break;
	case LIBUSB_TRANSFER_ERROR:
	case LIBUSB_TRANSFER_OVERFLOW:
		d->xfer_r = -DFUSE_E_PROTOCOL;
		break;
	}
}

/* Lets libusb run what is ready, without waiting. */
static void usb_events(struct dfu *d)
{
	struct timeval zero = { 0, 0 };

	(void)libusb_handle_events_timeout_completed(d->ctx, &zero, NULL);
}

static int submit_control(struct dfu *d, enum xfer_kind xk, uint8_t type, uint8_t req,
			  uint16_t value, uint16_t index, const uint8_t *out, uint16_t len,
			  unsigned timeout_ms)
{
	int r;

	libusb_fill_control_setup(d->buf, type, req, value, index, len);
	if (!(type & LIBUSB_ENDPOINT_IN) && len)
		memcpy(d->buf + LIBUSB_CONTROL_SETUP_SIZE, out, len);
	libusb_fill_control_transfer(d->xfer, d->h, d->buf, xfer_cb, d, timeout_ms);
	r = libusb_submit_transfer(d->xfer);
	if (r < 0)
		return usb_err(r);
	d->xk = xk;
	d->xfer_busy = true;
	d->xfer_done = false;
	return 0;
}

/* ---- The device ---- */

/* Cancels and reaps a transfer still in flight (after a cancel or before the handle
 * goes): bounded, the device is gone or answers within the transfer's timeout. */
static void reap(struct dfu *d)
{
	int64_t until;

	if (!d->xfer_busy)
		return;
	until = now(d) + 2000;
	(void)libusb_cancel_transfer(d->xfer);
	while (d->xfer_busy && now(d) < until) {
		struct timeval tv = { 0, 20000 };

		(void)libusb_handle_events_timeout_completed(d->ctx, &tv, NULL);
	}
	d->xfer_done = false;
}

static void detach(struct dfu *d)
{
	if (!d->h)
		return;
	reap(d);
	(void)libusb_release_interface(d->h, d->iface);
	libusb_close(d->h);
	d->h = NULL;
	d->names_done = false;
	d->name_next = 0;
	d->cur_alt = -1;
	d->osfi_alt = -1;
	d->departed = false;
}

/* Rebuilds the raw configuration descriptor from libusb's parsed copy (read by libusb from
 * the device's descriptors, no transfer) so that one parser handles it. */
static int config_raw(libusb_device *dev, uint8_t *buf, size_t size, size_t *ret_len)
{
	struct libusb_config_descriptor *c;
	size_t off = LIBUSB_DT_CONFIG_SIZE;
	int r;

	r = libusb_get_active_config_descriptor(dev, &c);
	if (r < 0)
		r = libusb_get_config_descriptor(dev, 0, &c);
	if (r < 0)
		return usb_err(r);
	for (int i = 0; i < c->bNumInterfaces; i++) {
		const struct libusb_interface *it = &c->interface[i];

		for (int a = 0; a < it->num_altsetting; a++) {
			const struct libusb_interface_descriptor *id = &it->altsetting[a];

			if (off + LIBUSB_DT_INTERFACE_SIZE + (size_t)id->extra_length > size) {
				libusb_free_config_descriptor(c);
				return -E2BIG;
			}
			buf[off + 0] = LIBUSB_DT_INTERFACE_SIZE;
			buf[off + 1] = LIBUSB_DT_INTERFACE;
			buf[off + 2] = id->bInterfaceNumber;
			buf[off + 3] = id->bAlternateSetting;
			buf[off + 4] = id->bNumEndpoints;
			buf[off + 5] = id->bInterfaceClass;
			buf[off + 6] = id->bInterfaceSubClass;
			buf[off + 7] = id->bInterfaceProtocol;
			buf[off + 8] = id->iInterface;
			off += LIBUSB_DT_INTERFACE_SIZE;
			if (id->extra_length > 0) {
				memcpy(buf + off, id->extra, (size_t)id->extra_length);
				off += (size_t)id->extra_length;
			}
		}
	}
	if (c->extra_length > 0 && off + (size_t)c->extra_length <= size) {
		memcpy(buf + off, c->extra, (size_t)c->extra_length);
		off += (size_t)c->extra_length;
	}
	buf[0] = LIBUSB_DT_CONFIG_SIZE;
	buf[1] = LIBUSB_DT_CONFIG;
	buf[2] = (uint8_t)off;
	buf[3] = (uint8_t)(off >> 8);
	buf[4] = c->bNumInterfaces;
	buf[5] = c->bConfigurationValue;
	buf[6] = c->iConfiguration;
	buf[7] = c->bmAttributes;
	buf[8] = c->MaxPower;
	libusb_free_config_descriptor(c);
	*ret_len = off;
	return 0;
}

/* Opens dev and reads what its descriptors say. */
static int attach_dev(struct dfu *d, libusb_device *dev)
{
	uint8_t raw[1024];
	size_t n = 0;
	int r;

	r = libusb_get_device_descriptor(dev, &d->dd);
	if (r < 0)
		return usb_err(r);
	r = config_raw(dev, raw, sizeof(raw), &n);
	if (r < 0)
		return r;
	r = dfuse_parse_config(raw, n, &d->cfg);
	if (r < 0) {
		snprintf(d->why, sizeof(d->why),
			 "the USB device has no usable DFU interface (functional descriptor)");
		return r;
	}
	r = libusb_open(dev, &d->h);
	if (r < 0)
		return usb_err(r);
	d->iface = d->cfg.alts[0].interface;
	r = libusb_claim_interface(d->h, d->iface);
	if (r < 0) {
		libusb_close(d->h);
		d->h = NULL;
		return usb_err(r);
	}
	d->devnum = libusb_get_device_address(dev);
	port_path(dev, d->path, sizeof(d->path));
	snprintf(d->port, sizeof(d->port), "%s (dev %u)", d->path, d->devnum);
	d->cur_alt = -1;
	d->osfi_alt = -1;
	d->names_done = false;
	d->name_next = 0;
	d->departed = false;
	d->fresh = true;
	d->need_idle = true;
	transport_debug(d->t, "dfu: attached %s, wTransferSize %u, %u alternates", d->port,
			d->cfg.transfer_size, d->cfg.n_alts);
	return 0;
}

/* Finds and opens the bound device when not open. Returns 0, -ENODEV (none), -ENOTUNIQ
 * (dfu: with several), or an error. skip_devnum: a device number not to take (0: none). */
static int attach(struct dfu *d, uint8_t skip_devnum)
{
	libusb_device **list, *found = NULL;
	ssize_t n;
	unsigned count = 0;
	int r;

	if (d->h && !d->departed)
		return 0;
	if (d->h)
		detach(d);
	n = libusb_get_device_list(d->ctx, &list);
	if (n < 0)
		return usb_err((int)n);
	for (ssize_t i = 0; i < n; i++) {
		if (!matches(d, list[i]))
			continue;
		if (skip_devnum && libusb_get_device_address(list[i]) == skip_devnum)
			continue;
		if (!found)
			found = list[i];
		count++;
	}
	if (!found)
		r = -ENODEV;
	else if (count > 1)
		r = -ENOTUNIQ;
	else
		r = attach_dev(d, found);
	libusb_free_device_list(list, 1);
	return r;
}

/* libusb 1.0.25 and 1.0.26 (Debian 12 ships 1.0.26) unlock the handle's mutex without
 * having locked it when libusb_set_interface_alt_setting() finds the device already detached
 * (fixed in 1.0.27 by libusb commit 18a64374, issue #1200). The mutex's user count then
 * reads -1, and the libusb_close() that follows aborts on libusb's own assertion that
 * pthread_mutex_destroy() succeeds: a chip re-enumerating at that moment took the daemon
 * down. On those versions the count is put back after that result. The mutex is the first
 * member of struct libusb_device_handle there (libusbi.h), and no other thread uses it. */
static void alt_unlock_repair(libusb_device_handle *h)
{
	const struct libusb_version *v = libusb_get_version();
	pthread_mutex_t *m = (pthread_mutex_t *)(void *)h;

	if (v->major == 1 && v->minor == 0 && (v->micro == 25 || v->micro == 26) &&
	    m->__data.__nusers == UINT_MAX)
		m->__data.__nusers = 0;
}

int transport_dfu_set_alt(struct libusb_device_handle *h, int iface, int alt)
{
	int r = libusb_set_interface_alt_setting(h, iface, alt);

	if (r == LIBUSB_ERROR_NO_DEVICE)
		alt_unlock_repair(h);
	return r;
}

static int select_alt(struct dfu *d, uint8_t alt)
{
	int r;

	if (d->cur_alt == alt)
		return 0;
	r = transport_dfu_set_alt(d->h, d->iface, alt);
	if (r < 0)
		return usb_err(r);
	d->cur_alt = alt;
	return 0;
}

/* ---- Operations ---- */

static void advance(struct dfu *d, int r);

static void op_end(struct dfu *d, int r)
{
	struct transport *t = d->t;

	d->op = OP_NONE;
	d->wait_until = -1;
	d->deadline = -1;
	if (r < 0)
		d->need_idle = true;
	transport_complete(t, r);	/* last: the callback may close the link */
}

static const char *dfu_request_name(uint8_t req)
{
	static const char *const names[] = { "DETACH", "DNLOAD", "UPLOAD", "GETSTATUS",
					     "CLRSTATUS", "GETSTATE", "ABORT" };

	return req < sizeof(names) / sizeof(names[0]) ? names[req] : "request";
}

/* ", dfuDNBUSY errOK poll 7 ms" for a debug line; a static buffer. */
static const char *status_text(const uint8_t *p)
{
	static char text[64];
	struct dfuse_status s;

	if (dfuse_decode_status(p, DFU_STATUS_LEN, &s) < 0)
		return ", malformed status";
	snprintf(text, sizeof(text), ", %s %s poll %" PRIu32 " ms", dfuse_state_name(s.state),
		 dfuse_status_name(s.status), s.poll_ms);
	return text;
}

/* Lets the engine say what it wants; returns true while it runs. */
static bool engine_step(struct dfu *d)
{
	struct dfuse_io io;

	for (;;) {
		enum dfuse_next nx = dfuse_xfer_next(&d->x, &io);
		int r;

		switch (nx) {
		case DFUSE_NEXT_CONTROL:
			transport_debug(d->t, "dfu: %" PRId64 " > %s wValue %u wLength %u",
					now(d), dfu_request_name(io.ctl.request), io.ctl.value,
					io.ctl.length);
			r = submit_control(d, XK_ENGINE, io.ctl.request_type, io.ctl.request,
					   io.ctl.value, d->iface, io.ctl.data, io.ctl.length,
					   io.ctl.timeout_ms);
			if (r < 0) {
				dfuse_xfer_control_done(&d->x, r, NULL, 0);
				continue;
			}
			return true;
		case DFUSE_NEXT_WAIT:
			if (io.wait_ms == 0) {
				dfuse_xfer_waited(&d->x);
				continue;
			}
			/* Never before bwPollTimeout has passed (DFU 1.1, 6.1.2). */
			d->wait_until = transport_after_ms(d->t, io.wait_ms);
			transport_debug(d->t, "dfu: %" PRId64 " wait %u ms (bwPollTimeout)", now(d),
					io.wait_ms);
			return true;
		case DFUSE_NEXT_DONE:
		case DFUSE_NEXT_FAILED:
			return false;
		}
	}
}

/* Starts the engine that *d->x was set up for; advance() hears of its end. */
static void engine_run(struct dfu *d)
{
	if (!engine_step(d))
		advance(d, dfuse_xfer_result(&d->x));
}

static int string_next(struct dfu *d)
{
	uint8_t idx;

	while (d->name_next < d->cfg.n_alts && d->cfg.alts[d->name_next].istring == 0) {
		d->alts[d->name_next].alt = d->cfg.alts[d->name_next].alt;
		d->alts[d->name_next].name[0] = '\0';
		d->name_next++;
	}
	if (d->name_next >= d->cfg.n_alts)
		return 1;
	idx = d->cfg.alts[d->name_next].istring;
	return submit_control(d, XK_STRING, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR,
			      (uint16_t)(LIBUSB_DT_STRING << 8 | idx), LANGID_EN_US, NULL, 255,
			      STRING_TIMEOUT_MS);
}

static void names_finished(struct dfu *d)
{
	d->names_done = true;
	d->osfi_alt = -1;
	for (unsigned i = 0; i < d->cfg.n_alts; i++) {
		struct transport_dfu_alt *a = &d->alts[i];

		a->has_layout = dfuse_parse_layout(a->name, &a->layout) == 0;
		if (d->osfi_alt < 0 &&
		    strncmp(a->name, DFUSE_OSFI_ALT_PREFIX, strlen(DFUSE_OSFI_ALT_PREFIX)) == 0)
			d->osfi_alt = (int)i;
	}
}

/* Reads the alternates' names if not done: 1 when done, 0 when a transfer runs, < 0. */
static int names(struct dfu *d)
{
	int r;

	if (d->names_done)
		return 1;
	r = string_next(d);
	if (r == 1)
		names_finished(d);
	return r;
}

static void on_string(struct dfu *d, int r, const uint8_t *in, size_t n)
{
	struct transport_dfu_alt *a = &d->alts[d->name_next];

	a->alt = d->cfg.alts[d->name_next].alt;
	if (r < 0 || dfuse_decode_string(in, n, a->name, sizeof(a->name)) < 0)
		a->name[0] = '\0';
	if (r == -DFUSE_E_GONE) {
		advance(d, r);
		return;
	}
	d->name_next++;
	r = names(d);
	if (r != 0)
		advance(d, r < 0 ? r : 0);
}

/* A link error for the vtable's callers. */
static int link_err(int r)
{
	switch (r) {
	case -DFUSE_E_STALL:
		return -TRANSPORT_E_REFUSED;
	case -DFUSE_E_TIMEOUT:
		return -TRANSPORT_E_TIMEOUT;
	case -DFUSE_E_GONE:
		return -TRANSPORT_E_GONE;
	case -DFUSE_E_STATUS:
	case -DFUSE_E_STATE:
	case -DFUSE_E_PROTOCOL:
		return -TRANSPORT_E_GARBLED;
	default:
		return r;
	}
}

static bool is_vtable_op(enum dfu_op op)
{
	return op == OP_PROBE || op == OP_IDENTIFY || op == OP_OSFI || op == OP_RECONNECT;
}

static int osfi_frame(struct dfu *d);

/* An OSFI request whose transfer timed out may be sent again when running it twice is
 * harmless: GET_INFO and GET_CERT only read, and a PUT_DATA chunk sent again with the same
 * offset and bytes is answered as before and not applied twice (docs/protocol.md §5.1).
 * The retry first brings the interface back to dfuIDLE. */
static bool osfi_retry(struct dfu *d, int r)
{
	uint16_t op = d->req.subop;

	if (d->op != OP_OSFI || r != -DFUSE_E_TIMEOUT || d->retries_left == 0 || !d->h ||
	    d->departed ||
	    (op != OSFI_OP_GET_INFO && op != OSFI_OP_GET_CERT && op != OSFI_OP_PUT_DATA))
		return false;
	d->retries_left--;
	transport_debug(d->t, "dfu: %s timed out, sending it again", osfi_subop_name(op));
	reap(d);
	d->need_idle = true;
	if (op == OSFI_OP_PUT_DATA && d->split_off > 0) {
		/* the frame that timed out is sent again */
		size_t room = dfuse_osfi_max_chunk(d->cfg.transfer_size);
		size_t last = (d->split_off - 1) % room + 1;

		d->split_off -= last;
	}
	d->stage = 3;
	return osfi_frame(d) == 0;
}

static void fail(struct dfu *d, int r)
{
	if (osfi_retry(d, r))
		return;
	if (d->why[0] == '\0') {
		if (d->failed_usb)
			dfuse_xfer_describe(&d->x, d->why, sizeof(d->why));
		else
			snprintf(d->why, sizeof(d->why), "%s", sfi_strerror(r));
	}
	if (d->failed_usb) {
		size_t len = strlen(d->why);

		snprintf(d->why + len, sizeof(d->why) - len, " (DFU device %s)",
			 d->port[0] ? d->port : d->want_path);
	}
	if (r == -DFUSE_E_GONE)
		detach(d);
	op_end(d, is_vtable_op(d->op) || d->vt_mem ? link_err(r) : r);
}

static bool want_answer(uint16_t subop)
{
	return subop == OSFI_OP_GET_INFO || subop == OSFI_OP_GET_CERT;
}

/* Starts the engine on the next OSFI frame (a PUT_DATA too long for wTransferSize goes as
 * several, each at its own file offset). */
static int osfi_frame(struct dfu *d)
{
	const struct osfi_request *q = &d->req;
	const uint8_t *p1 = q->p1, *p2 = q->p2;
	size_t n2 = q->n2;
	bool ans = want_answer(q->subop);
	int r;

	if (q->subop == OSFI_OP_PUT_DATA && q->n1 == 4) {
		size_t room = dfuse_osfi_max_chunk(d->cfg.transfer_size);
		uint32_t off = (uint32_t)q->p1[0] | (uint32_t)q->p1[1] << 8 |
			       (uint32_t)q->p1[2] << 16 | (uint32_t)q->p1[3] << 24;

		n2 = q->n2 - d->split_off;
		if (n2 > room)
			n2 = room;
		osfi_p1_encode(off + (uint32_t)d->split_off, d->split_p1);
		p1 = d->split_p1;
		p2 = q->p2 + d->split_off;
	}
	r = dfuse_xfer_osfi(&d->x, &d->tmo, d->cfg.transfer_size, d->need_idle, q->subop, p1,
			    q->n1, p2, n2, ans, d->answer, d->answer_max);
	if (r < 0)
		return r;
	d->split_off += n2;
	d->failed_usb = true;
	engine_run(d);
	return 0;
}

/* The sector of the erase range to erase next: 1 when none is left. */
static int erase_next(struct dfu *d)
{
	const struct transport_dfu_alt *a = &d->alts[d->mem_alt];
	const struct dfuse_segment *g;
	uint64_t end = (uint64_t)d->mem_addr + d->mem_len;
	uint32_t start;

	if (d->erase_at >= end || d->erase_at < d->mem_addr)
		return 1;
	g = dfuse_layout_find(&a->layout, d->erase_at, &start);
	if (!g) {
		snprintf(d->why, sizeof(d->why), "0x%08" PRIx32 " is outside %s", d->erase_at,
			 a->name);
		return -EINVAL;
	}
	if (d->erase_at == d->mem_addr)
		dfuse_xfer_erase_page(&d->x, &d->tmo, start);
	else
		dfuse_xfer_erase_page_next(&d->x, &d->tmo, start);
	if ((uint64_t)start + g->sector_size >= (uint64_t)UINT32_MAX + 1)
		d->erase_at = 0;	/* ends the loop: below mem_addr */
	else
		d->erase_at = start + g->sector_size;
	d->failed_usb = true;
	engine_run(d);
	return 0;
}

/* The address of sector k of the erase alternate's layout (its size to *size). */
static uint32_t sector_addr(const struct dfu *d, uint16_t k, uint32_t *size)
{
	const struct dfuse_layout *l = &d->alts[d->mem_alt].layout;
	uint32_t left = k;

	for (unsigned i = 0; i < l->n_segments; i++) {
		const struct dfuse_segment *g = &l->seg[i];

		if (left < g->count) {
			if (size)
				*size = g->sector_size;
			return g->start + left * g->sector_size;
		}
		left -= g->count;
	}
	if (size)
		*size = 0;
	return 0;
}

/* Erase of a sector list: the next run of consecutive sectors becomes the range. */
static void erase_run(struct dfu *d)
{
	size_t k = d->sector_i + 1;
	uint32_t last = 0;

	while (k < d->n_sectors && d->sectors[k] == d->sectors[k - 1] + 1)
		k++;
	d->mem_addr = sector_addr(d, d->sectors[d->sector_i], NULL);
	d->mem_len = (size_t)(sector_addr(d, d->sectors[k - 1], &last) + last - d->mem_addr);
	d->erase_at = d->mem_addr;
	d->sector_i = k;
}

/* A vtable memory operation: the alternate (not the OSFI one) whose layout holds the range
 * with the access it needs. */
static int vt_alt(struct dfu *d)
{
	uint32_t addr = d->mem_addr;
	size_t len = d->mem_len;

	if (d->op == OP_MASS_ERASE) {
		addr = STM32H5_FLASH_BASE;
		len = STM32H5_FLASH_SECTOR;
	} else if (d->op == OP_ERASE) {
		addr = STM32H5_FLASH_BASE;
		len = 1;
	}
	for (unsigned i = 0; i < d->cfg.n_alts && i < DFUSE_MAX_ALTS; i++) {
		const struct transport_dfu_alt *a = &d->alts[i];

		if (a->has_layout && (int)i != d->osfi_alt &&
		    dfuse_layout_covers(&a->layout, addr, (uint32_t)len, d->vt_attrs)) {
			d->mem_alt = (uint8_t)i;
			if (d->op == OP_ERASE) {
				uint32_t n = 0;

				for (unsigned k = 0; k < a->layout.n_segments; k++)
					n += a->layout.seg[k].count;
				for (size_t k = 0; k < d->n_sectors; k++) {
					if (d->sectors[k] >= n) {
						snprintf(d->why, sizeof(d->why), "sector %u is "
							 "beyond the %" PRIu32 " of %s",
							 d->sectors[k], n, a->name);
						return -ERANGE;
					}
				}
				d->sector_i = 0;
				erase_run(d);
			}
			return 0;
		}
	}
	snprintf(d->why, sizeof(d->why), "no alternate setting of the DFU device holds "
		 "0x%08" PRIx32 "..0x%08llx with the access asked for", addr,
		 (unsigned long long)addr + len - 1);
	return -ERANGE;
}

/* The operation's next stage; r is the result of the one that ended. Stages: 0 attach,
 * 1 names, 2 the operation's engine run(s), 3 the end. */
static void advance(struct dfu *d, int r)
{
	if (r < 0) {
		fail(d, r);
		return;
	}
	switch (d->stage++) {
	case 0:
		if (d->op == OP_RECONNECT) {
			r = attach(d, d->gone_devnum);
			if (r == -ENODEV) {
				d->stage = 0;	/* keep waiting; io_ready rescans */
				return;
			}
		} else {
			r = attach(d, 0);
		}
		if (r == -ENODEV) {
			snprintf(d->why, sizeof(d->why), "no DFU device (0483:df11) at %s%s",
				 d->want_any ? "any port" : d->want_path[0] ? "port " : "serial ",
				 d->want_any ? "" : d->want_path[0] ? d->want_path : d->want_serial);
			r = d->op == OP_PROBE ? -DFUSE_E_TIMEOUT : -DFUSE_E_GONE;
		} else if (r == -ENOTUNIQ) {
			snprintf(d->why, sizeof(d->why),
				 "several DFU devices are present: name one with dfu:usb:PATH");
		}
		if (r < 0) {
			fail(d, r);
			return;
		}
		if (d->op == OP_PROBE) {
			/* A probe needs no names: only whether the DFU state machine answers. */
			d->stage = 2;
			dfuse_xfer_idle(&d->x, &d->tmo);
			d->failed_usb = true;
			engine_run(d);
			return;
		}
		/* fallthrough */
	case 1:
		d->stage = 2;
		r = names(d);
		if (r == 0)
			return;		/* on_string() calls back */
		if (r < 0) {
			fail(d, r);
			return;
		}
		/* fallthrough */
	case 2:
		d->stage = 3;
		switch (d->op) {
		case OP_PROBE:
			break;	/* the idle run ended */
		case OP_RECONNECT:
		case OP_IDENTIFY:
		case OP_OSFI:
			if (d->osfi_alt < 0) {
				if (d->op == OP_IDENTIFY) {
					*d->ret_ident = (struct transport_identity){
						.version = (uint8_t)(d->dd.bcdDevice >> 8),
					};
					op_end(d, 0);
					return;
				}
				snprintf(d->why, sizeof(d->why),
					 "the DFU device has no \"" DFUSE_OSFI_ALT_PREFIX
					 "\" alternate setting: it does not carry OSFI requests");
				fail(d, -ENOTSUP);
				return;
			}
			r = select_alt(d, d->alts[d->osfi_alt].alt);
			if (r < 0) {
				fail(d, r);
				return;
			}
			if (d->op == OP_RECONNECT) {
				dfuse_xfer_idle(&d->x, &d->tmo);
				d->failed_usb = true;
				engine_run(d);
				return;
			}
			if (d->op == OP_IDENTIFY) {
				r = dfuse_xfer_osfi(&d->x, &d->tmo, d->cfg.transfer_size, true,
						    OSFI_OP_GET_INFO, NULL, 0, NULL, 0, true, d->info,
						    sizeof(d->info));
				if (r < 0) {
					fail(d, r);
					return;
				}
				d->failed_usb = true;
				engine_run(d);
				return;
			}
			d->split_off = 0;
			r = osfi_frame(d);
			if (r < 0)
				fail(d, r);
			return;
		case OP_INFO:
			break;
		case OP_COMMANDS:
		case OP_READ:
		case OP_WRITE:
		case OP_ERASE:
		case OP_MASS_ERASE:
			if (d->vt_mem) {
				r = vt_alt(d);
				if (r < 0) {
					fail(d, r);
					return;
				}
			}
			if (d->mem_alt >= d->cfg.n_alts) {
				snprintf(d->why, sizeof(d->why),
					 "the DFU device has no alternate setting %u", d->mem_alt);
				fail(d, -EINVAL);
				return;
			}
			r = select_alt(d, d->alts[d->mem_alt].alt);
			if (r < 0) {
				fail(d, r);
				return;
			}
			d->failed_usb = true;
			r = 0;
			if (d->op == OP_COMMANDS)
				r = dfuse_xfer_commands(&d->x, &d->tmo, d->cfg.transfer_size);
			else if (d->op == OP_READ)
				r = dfuse_xfer_read(&d->x, &d->tmo, d->cfg.transfer_size,
						    d->mem_addr, d->mem_out, d->mem_len);
			else if (d->op == OP_WRITE)
				r = dfuse_xfer_write(&d->x, &d->tmo, d->cfg.transfer_size,
						     d->mem_addr, d->mem_in, d->mem_len);
			else if (d->op == OP_MASS_ERASE)
				dfuse_xfer_mass_erase(&d->x, &d->tmo);
			if (r < 0) {
				d->failed_usb = false;
				fail(d, r);
				return;
			}
			if (d->op == OP_ERASE) {
				if (!d->alts[d->mem_alt].has_layout) {
					snprintf(d->why, sizeof(d->why),
						 "alternate %u has no memory layout to erase by",
						 d->mem_alt);
					fail(d, -EINVAL);
					return;
				}
				d->erase_at = d->mem_addr;
				r = erase_next(d);	/* each sector's end comes back below */
				if (r < 0)
					fail(d, r);
				else if (r == 1)
					op_end(d, 0);
				return;
			}
			engine_run(d);
			return;
		case OP_LEAVE:
			r = select_alt(d, d->cfg.alts[0].alt);
			if (r < 0) {
				fail(d, r);
				return;
			}
			dfuse_xfer_leave(&d->x, &d->tmo, d->leave_has_addr, d->mem_addr);
			d->failed_usb = true;
			engine_run(d);
			return;
		case OP_NONE:
			break;
		}
		/* fallthrough */
	default:
		break;
	}

	/* An engine run ended well. */
	switch (d->op) {
	case OP_PROBE:
		*d->ret_presence = d->fresh ? TRANSPORT_FRESH : TRANSPORT_PRESENT;
		d->fresh = false;
		break;
	case OP_IDENTIFY: {
		struct osfi_info info;

		if (dfuse_xfer_osfi_status(&d->x) != OSFI_ST_OK ||
		    osfi_info_decode(d->info, dfuse_xfer_answer_len(&d->x), &info) < 0) {
			snprintf(d->why, sizeof(d->why),
				 "GET_INFO on the OSFI alternate gave no usable answer");
			d->failed_usb = false;
			fail(d, -DFUSE_E_PROTOCOL);
			return;
		}
		*d->ret_ident = (struct transport_identity){
			.pid = info.device_id,
			.version = (uint8_t)(d->dd.bcdDevice >> 8),
			.osfi = true,
		};
		break;
	}
	case OP_OSFI:
		if (d->req.subop == OSFI_OP_PUT_DATA && dfuse_xfer_osfi_status(&d->x) == OSFI_ST_OK &&
		    d->split_off < d->req.n2) {
			d->need_idle = false;
			d->stage = 3;
			r = osfi_frame(d);
			if (r < 0)
				fail(d, r);
			return;
		}
		*d->ret_answer = (struct transport_answer){
			.status = dfuse_xfer_osfi_status(&d->x),
			.len = dfuse_xfer_answer_len(&d->x),
		};
		break;
	case OP_ERASE:
		r = erase_next(d);
		if (r == 1 && d->sector_i < d->n_sectors) {
			erase_run(d);
			r = erase_next(d);
		}
		if (r < 0)
			fail(d, r);
		if (r != 1)
			return;
		break;
	case OP_COMMANDS:
		*d->ret_cmds = *dfuse_xfer_command_list(&d->x);
		break;
	case OP_LEAVE:
		/* The device goes away; a reconnect or probe finds it again by its port. */
		d->gone_devnum = d->devnum;
		break;
	case OP_RECONNECT:
	case OP_READ:
	case OP_WRITE:
	case OP_MASS_ERASE:
	case OP_INFO:
	case OP_NONE:
		break;
	}
	d->need_idle = false;
	/* FRESH is news for the next probe only: once the host has talked to the device that
	 * attached (a reconnect after FINALIZE, an identify), it is the same session, as a
	 * UART bootloader that has been synchronised NACKs the next 0x7F. */
	d->fresh = false;
	op_end(d, 0);
}

static int op_start(struct dfu *d, enum dfu_op op)
{
	if (d->op != OP_NONE)
		return -EBUSY;
	reap(d);
	d->xfer_done = false;
	d->op = op;
	d->stage = 0;
	d->vt_mem = false;
	d->sectors = NULL;
	d->n_sectors = 0;
	free(d->padded);
	d->padded = NULL;
	d->why[0] = '\0';
	d->failed_usb = false;
	d->wait_until = -1;
	d->deadline = -1;
	d->rescan_at = -1;
	return 0;
}

/* ---- The vtable ---- */

static bool dfu_handles(const char *spec)
{
	return spec && strncmp(spec, "dfu:", 4) == 0;
}

/* Reads a dfu: port specification into d's binding (d may be NULL: only checks it). */
static int spec_parse(const char *spec, struct dfu *d, char *err, size_t err_size)
{
	struct dfu scratch;
	const char *s = spec + 4;

	if (!d) {
		d = &scratch;
		memset(d->want_path, 0, sizeof(d->want_path));
	}
	if (strncmp(spec, "dfu:", 4) != 0)
		goto bad;
	if (strncmp(s, "usb:", 4) == 0)
		s += 4;
	if (strncmp(s, "serial:", 7) == 0) {
		if (!s[7] || strlen(s + 7) >= sizeof(d->want_serial))
			goto bad;
		snprintf(d->want_serial, sizeof(d->want_serial), "%s", s + 7);
	} else if (*s == '\0') {
		d->want_any = true;
	} else {
		if (strlen(s) >= sizeof(d->want_path) || strspn(s, "0123456789-.") != strlen(s) ||
		    !strchr(s, '-'))
			goto bad;
		snprintf(d->want_path, sizeof(d->want_path), "%s", s);
	}
	return 0;
bad:
	snprintf(err, err_size,
		 "%s: not a DFU port (dfu:usb:PATH such as dfu:usb:1-3.2, dfu:serial:SN, dfu:)",
		 spec);
	return -EINVAL;
}

int transport_dfu_spec_check(const char *spec, char *err, size_t err_size)
{
	return spec_parse(spec, NULL, err, err_size);
}

static int dfu_open(struct transport *t, const char *spec, char *err, size_t err_size)
{
	struct dfu *d = D(t);
	const struct transport_options *o = transport_options(t);
	const struct libusb_pollfd **fds;
	int r;

	d->t = t;
	d->epfd = -1;
	d->cur_alt = -1;
	d->osfi_alt = -1;
	d->wait_until = -1;
	d->deadline = -1;
	r = spec_parse(spec, d, err, err_size);
	if (r < 0)
		return r;

	dfuse_timeouts_default(&d->tmo);
	if (o->step_ms)
		d->tmo.control_ms = o->step_ms;
	if (o->answer_ms)
		d->tmo.osfi_ms = o->answer_ms;

	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->epfd < 0) {
		r = -errno;
		snprintf(err, err_size, "%s: epoll: %s", spec, strerror(-r));
		return r;
	}
	r = libusb_init(&d->ctx);
	if (r < 0) {
		snprintf(err, err_size, "%s: libusb: %s", spec, libusb_strerror(r));
		close(d->epfd);
		return usb_err(r);
	}
	libusb_set_pollfd_notifiers(d->ctx, pollfd_added, pollfd_removed, d);
	fds = libusb_get_pollfds(d->ctx);
	if (fds) {
		for (size_t i = 0; fds[i]; i++)
			pollfd_added(fds[i]->fd, fds[i]->events, d);
		libusb_free_pollfds(fds);
	}
	d->xfer = libusb_alloc_transfer(0);
	if (!d->xfer) {
		libusb_exit(d->ctx);
		close(d->epfd);
		return -ENOMEM;
	}
	if (libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
		r = libusb_hotplug_register_callback(
			d->ctx, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
			0, DFUSE_VID, DFUSE_PID, LIBUSB_HOTPLUG_MATCH_ANY, hotplug_cb, d,
			&d->hotplug);
		d->has_hotplug = r == 0;
	}
	snprintf(d->port, sizeof(d->port), "%s", spec + 4);
	return 0;
}

static void dfu_close(struct transport *t)
{
	struct dfu *d = D(t);

	if (!d->ctx)
		return;
	detach(d);
	if (d->has_hotplug)
		libusb_hotplug_deregister_callback(d->ctx, d->hotplug);
	libusb_free_transfer(d->xfer);
	free(d->padded);
	d->padded = NULL;
	libusb_set_pollfd_notifiers(d->ctx, NULL, NULL, NULL);
	libusb_exit(d->ctx);
	d->ctx = NULL;
	if (d->epfd >= 0)
		close(d->epfd);
	d->epfd = -1;
}

static void dfu_watch(const struct transport *t, struct transport_watch *ret)
{
	const struct dfu *d = D(t);
	struct timeval tv;
	int64_t dl = -1;

	ret->fd = d->epfd;
	ret->events = TRANSPORT_IN;
	if (d->wait_until >= 0)
		dl = d->wait_until;
	if (d->deadline >= 0 && (dl < 0 || d->deadline < dl))
		dl = d->deadline;
	if (d->rescan_at >= 0 && (dl < 0 || d->rescan_at < dl))
		dl = d->rescan_at;
	if (d->news || d->xfer_done || d->deferred)
		dl = 0;
	if (libusb_get_next_timeout(d->ctx, &tv) == 1) {
		int64_t at = transport_now_ms(t) + tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;

		if (dl < 0 || at < dl)
			dl = at;
	}
	ret->deadline_ms = dl;
}

static void dfu_io_ready(struct transport *t, unsigned revents)
{
	struct dfu *d = D(t);
	int64_t n;

	usb_events(d);

	if (d->news) {
		d->news = false;
		if (d->departed && d->op == OP_NONE) {
			transport_debug(t, "dfu: %s left", d->port);
			detach(d);
			transport_port_lost(t);
			return;
		}
		if (d->departed && d->op != OP_RECONNECT && !d->xfer_busy &&
		    d->wait_until >= 0) {
			/* Gone while the engine waits: no transfer will tell. */
			d->wait_until = -1;
			dfuse_xfer_gone(&d->x);
			advance(d, dfuse_xfer_result(&d->x));
			return;
		}
	}

	if (d->deferred) {
		d->deferred = false;
		if (d->op != OP_NONE)
			op_end(d, d->deferred_r);
		return;
	}

	if (d->xfer_done) {
		d->xfer_done = false;
		if (d->xfer_r == -ECANCELED || d->op == OP_NONE)
			return;
		if (d->xk == XK_STRING) {
			on_string(d, d->xfer_r, d->buf + LIBUSB_CONTROL_SETUP_SIZE, d->xfer_n);
			return;
		}
		transport_debug(t, "dfu: %" PRId64 " < %d, %zu bytes%s", now(d), d->xfer_r,
				d->xfer_n, d->x.io.ctl.request == DFU_REQ_GETSTATUS && d->xfer_n == 6 ?
				status_text(d->buf + LIBUSB_CONTROL_SETUP_SIZE) : "");
		dfuse_xfer_control_done(&d->x, d->xfer_r, d->buf + LIBUSB_CONTROL_SETUP_SIZE,
					d->xfer_n);
		if (!engine_step(d))
			advance(d, dfuse_xfer_result(&d->x));
		return;
	}

	n = now(d);
	if (d->wait_until >= 0 && n >= d->wait_until) {
		d->wait_until = -1;
		dfuse_xfer_waited(&d->x);
		if (!engine_step(d))
			advance(d, dfuse_xfer_result(&d->x));
		return;
	}
	if (d->op == OP_RECONNECT && d->stage == 0) {
		if (d->deadline >= 0 && n >= d->deadline) {
			snprintf(d->why, sizeof(d->why),
				 "the DFU device did not come back at %s in time", d->want_path[0] ?
				 d->want_path : d->port);
			op_end(d, -TRANSPORT_E_TIMEOUT);
			return;
		}
		if (d->rescan_at < 0 || n >= d->rescan_at) {
			d->rescan_at = n + RESCAN_MS;
			advance(d, 0);
		}
	}
}

static int dfu_probe(struct transport *t, unsigned flags, enum transport_presence *ret)
{
	struct dfu *d = D(t);
	int r = op_start(d, OP_PROBE);

	if (r < 0)
		return r;
	d->ret_presence = ret;
	usb_events(d);		/* hotplug news first */
	if (d->departed)
		detach(d);
	d->xfer_done = false;
	if (d->h && !d->fresh && !d->need_idle) {
		/* Presence is USB's: the device the host last talked to is still attached (no
		 * departure). No transfer, so an idle slot keeps the bus and the chip quiet. */
		*ret = TRANSPORT_PRESENT;
		d->deferred = true;
		d->deferred_r = 0;
		return 0;
	}
	advance(d, 0);
	return 0;
}

static int dfu_identify(struct transport *t, struct transport_identity *ret)
{
	struct dfu *d = D(t);
	int r = op_start(d, OP_IDENTIFY);

	if (r < 0)
		return r;
	d->ret_ident = ret;
	advance(d, 0);
	return 0;
}

static int dfu_osfi(struct transport *t, const struct osfi_request *req, uint8_t *answer,
		    size_t answer_max, struct transport_answer *ret)
{
	struct dfu *d = D(t);
	int r;

	if (!req || (answer_max && !answer))
		return -EINVAL;
	r = op_start(d, OP_OSFI);
	if (r < 0)
		return r;
	d->req = *req;
	d->retries_left = transport_options(t)->retries;
	d->answer = answer;
	d->answer_max = answer_max;
	d->ret_answer = ret;
	advance(d, 0);
	return 0;
}

static int dfu_reconnect(struct transport *t, unsigned within_ms)
{
	struct dfu *d = D(t);
	int r = op_start(d, OP_RECONNECT);

	if (r < 0)
		return r;
	/* The chip resets: its present device is the old one, whatever libusb still lists. */
	if (d->h) {
		d->gone_devnum = d->devnum;
		detach(d);
	}
	d->deadline = now(d) + within_ms;
	d->rescan_at = now(d);
	return 0;
}

static int vt_mem_start(struct dfu *d, enum dfu_op op, uint8_t attrs)
{
	int r = op_start(d, op);

	if (r < 0)
		return r;
	d->vt_mem = true;
	d->vt_attrs = attrs;
	return 0;
}

static int dfu_read(struct transport *t, uint32_t addr, uint8_t *buf, size_t len)
{
	struct dfu *d = D(t);
	int r = vt_mem_start(d, OP_READ, DFUSE_MEM_READABLE);

	if (r < 0)
		return r;
	d->mem_addr = addr;
	d->mem_out = buf;
	d->mem_len = len;
	advance(d, 0);
	return 0;
}

static int dfu_write(struct transport *t, uint32_t addr, const uint8_t *data, size_t len)
{
	struct dfu *d = D(t);
	unsigned unit = transport_write_unit(addr);
	int r = vt_mem_start(d, OP_WRITE, DFUSE_MEM_WRITABLE);

	if (r < 0)
		return r;
	if (len % unit != 0) {
		/* The tail padded with 0xFF to the write unit, as over UART. */
		size_t padded = len + unit - len % unit;

		d->padded = malloc(padded);
		if (!d->padded) {
			d->op = OP_NONE;
			return -ENOMEM;
		}
		memcpy(d->padded, data, len);
		memset(d->padded + len, 0xff, padded - len);
		data = d->padded;
		len = padded;
	}
	d->mem_addr = addr;
	d->mem_in = data;
	d->mem_len = len;
	advance(d, 0);
	return 0;
}

static int dfu_erase(struct transport *t, const uint16_t *sectors, size_t n)
{
	struct dfu *d = D(t);
	int r = vt_mem_start(d, n ? OP_ERASE : OP_MASS_ERASE, DFUSE_MEM_ERASABLE);

	if (r < 0)
		return r;
	d->sectors = sectors;
	d->n_sectors = n;
	d->sector_i = 0;
	d->mem_len = n ? STM32H5_FLASH_SECTOR : 0;
	advance(d, 0);
	return 0;
}

static int dfu_go(struct transport *t, uint32_t addr)
{
	struct dfu *d = D(t);
	int r = vt_mem_start(d, OP_LEAVE, 0);

	if (r < 0)
		return r;
	d->leave_has_addr = true;
	d->mem_addr = addr;
	advance(d, 0);
	return 0;
}

static void dfu_cancel(struct transport *t)
{
	struct dfu *d = D(t);

	if (d->xfer_busy)
		(void)libusb_cancel_transfer(d->xfer);
	d->op = OP_NONE;
	d->wait_until = -1;
	d->deadline = -1;
	d->rescan_at = -1;
	d->deferred = false;
	d->need_idle = true;
}

static void dfu_describe(const struct transport *t, char *buf, size_t size)
{
	snprintf(buf, size, "%s", D(t)->why);
}

static const char *dfu_port_name(const struct transport *t)
{
	return D(t)->port;
}

const struct transport_ops transport_dfu_ops = {
	.name = "dfu",
	.handles = dfu_handles,
	.priv_size = sizeof(struct dfu),
	.open = dfu_open,
	.close = dfu_close,
	.watch = dfu_watch,
	.io_ready = dfu_io_ready,
	.probe = dfu_probe,
	.identify = dfu_identify,
	.osfi = dfu_osfi,
	.reconnect = dfu_reconnect,
	.read = dfu_read,
	.write = dfu_write,
	.erase = dfu_erase,
	.go = dfu_go,
	.cancel = dfu_cancel,
	.describe = dfu_describe,
	.port_name = dfu_port_name,
};

/* ---- Blocking operations for sfi-boot ---- */

bool transport_is_dfu(const struct transport *t)
{
	return transport_backend(t) == &transport_dfu_ops;
}

/* Runs a backend-only operation to its end, as the vtable's starters do. */
static int run_sync(struct transport *t, enum dfu_op op)
{
	struct dfu *d = D(t);
	int r;

	if (!transport_is_dfu(t))
		return -ENOTSUP;
	if (t->busy)
		return -EBUSY;
	r = op_start(d, op);
	if (r < 0)
		return r;
	t->busy = true;
	t->done = NULL;
	advance(d, 0);
	return transport_wait(t);
}

int transport_dfu_info(struct transport *t, struct transport_dfu_info *ret)
{
	struct dfu *d = D(t);
	int r = run_sync(t, OP_INFO);

	if (r < 0)
		return r;
	*ret = (struct transport_dfu_info){
		.devnum = d->devnum,
		.vid = d->dd.idVendor,
		.pid = d->dd.idProduct,
		.bcd_device = d->dd.bcdDevice,
		.transfer_size = d->cfg.transfer_size,
		.dfu_version = d->cfg.dfu_version,
		.attributes = d->cfg.attributes,
		.n_alts = d->cfg.n_alts,
		.osfi_alt = d->osfi_alt,
	};
	snprintf(ret->path, sizeof(ret->path), "%s", d->path);
	sysfs_serial(d->path, ret->serial, sizeof(ret->serial));
	memcpy(ret->alts, d->alts, sizeof(ret->alts));
	return 0;
}

int transport_dfu_commands(struct transport *t, uint8_t alt, struct dfuse_commands *ret)
{
	struct dfu *d = D(t);

	d->mem_alt = alt;
	d->ret_cmds = ret;
	return run_sync(t, OP_COMMANDS);
}

int transport_dfu_read(struct transport *t, uint8_t alt, uint32_t addr, uint8_t *buf,
		       size_t len)
{
	struct dfu *d = D(t);

	d->mem_alt = alt;
	d->mem_addr = addr;
	d->mem_out = buf;
	d->mem_len = len;
	return run_sync(t, OP_READ);
}

int transport_dfu_write(struct transport *t, uint8_t alt, uint32_t addr, const uint8_t *data,
			size_t len)
{
	struct dfu *d = D(t);

	d->mem_alt = alt;
	d->mem_addr = addr;
	d->mem_in = data;
	d->mem_len = len;
	return run_sync(t, OP_WRITE);
}

int transport_dfu_erase(struct transport *t, uint8_t alt, uint32_t addr, size_t len)
{
	struct dfu *d = D(t);

	if (len == 0)
		return -EINVAL;
	d->mem_alt = alt;
	d->mem_addr = addr;
	d->mem_len = len;
	return run_sync(t, OP_ERASE);
}

int transport_dfu_mass_erase(struct transport *t, uint8_t alt)
{
	struct dfu *d = D(t);

	d->mem_alt = alt;
	return run_sync(t, OP_MASS_ERASE);
}

int transport_dfu_leave(struct transport *t, bool has_addr, uint32_t addr)
{
	struct dfu *d = D(t);

	d->leave_has_addr = has_addr;
	d->mem_addr = addr;
	return run_sync(t, OP_LEAVE);
}

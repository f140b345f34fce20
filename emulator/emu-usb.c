/* The USB harness: each slot's chip appears to libusb clients as the STM32 DFU bootloader
 * (0483:DF11) on a port of its own, through umockdev's usbdevfs ioctl forwarding.
 * Contract: emu-usb.h; what the device answers: emu-dfu.c.
 *
 * Layout in the testbed (bus 2, so that the serial harness's adapters on bus 1 never
 * collide):
 *   /sys/devices/pci0000:00/0000:00:14.0/usb2             root hub, devnum 1
 *   .../usb2/2-1                                          a 7-port multi-TT hub, devnum 2
 *   .../usb2/2-1/2-1.<slot+1>                             the DfuSe device of a slot
 * Every usb_device carries busnum, devnum, speed, bConfigurationValue and the binary
 * `descriptors` attribute (device + configuration descriptors), which is where libusb reads
 * descriptors from. The node /dev/bus/usb/002/<devnum> is a FIFO made here: libusb polls a
 * usbfs fd for POLLOUT ("a URB can be reaped"); the harness keeps the FIFO full (not
 * writable) and drains one page while a URB of that device is reapable (a regular file would
 * always be writable and make a client's event loop spin).
 *
 * Each enumeration is a `conn` with its own node, FIFO and ioctl socket; a device that
 * resets or is unplugged leaves its conn behind ("gone": every request fails ENODEV, URBs in
 * flight complete with -ESHUTDOWN) until its clients close it, and comes back as a new conn
 * with the next device number. Plug and unplug reach running libusb contexts as uevents, so
 * this process runs under libumockdev-preload (h5emu re-executes itself under it).
 *
 * Time: every URB gets a completion time on the emulated bus (see urb_schedule) and is
 * reapable only from then on; a timerfd in the ioctl server's epoll set drains the FIFO of
 * the device at that moment. Chip work (flash) keeps the device busy: requests
 * submitted meanwhile complete after it.
 *
 * Threads: the ioctl server thread ("emu-usb-io") accepts the clients of every node's
 * socket, runs their ioctls and the timer; the uevent listeners and calls from h5emu's loop
 * run in the harness thread. Conns, clients, URBs, devices and the timer are touched by
 * both, under u->mu (taken at each entry point, before ops.lock). The chip model belongs
 * to h5emu's loop and is reached under ops.lock only. Calls from the loop are run in the
 * harness thread and waited for (emu_usb_call). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <linux/usbdevice_fs.h>

#include <glib.h>
#include <glib-unix.h>
#include <umockdev.h>

#include "emu-usb.h"

#define USB_BUS 2
#define HUB_PORTS 7
#define SYSFS_ROOT "pci0000:00/0000:00:14.0/usb2"
#define PRELOAD_NAME "libumockdev-preload.so.0"
#define FIFO_PAGE 4096
#define NS_PER_MS 1000000ull
/* The host side: an EHCI controller, the device behind a high-speed hub's transaction
 * translator. Control transfers run on the asynchronous schedule, which the controller walks
 * in every microframe (125 us), not once per 1 ms frame, and a completion is signalled at
 * the end of its microframe (Linux's EHCI driver sets the interrupt threshold to one
 * microframe). docs/emulator.md, "Timing model". */
#define MICROFRAME_NS 125000ull
/* Full speed: 12 Mbit/s, one byte time = 2000/3 ns. Each transaction adds 13 bytes of
 * token, PIDs, CRCs, handshake, end-of-packet and inter-packet gaps to its data. */
#define BYTE_NS_NUM 2000ull
#define BYTE_NS_DEN 3ull
#define TRANSACTION_OVERHEAD 13u
#define EP0_PACKET 64u

struct emu_usb;
struct usb_dev;
struct conn;

/* One open file of a device node: a connection of libumockdev-preload's ioctl socket. */
struct client {
	struct client *next;
	unsigned id;			/* never reused (epoll events carry it) */
	unsigned conn_id;		/* the conn whose socket it connected to */
	int fd;
	bool dead;			/* the connection failed: closed after this request */
};

struct urb {
	struct urb *next;
	struct client *client;
	uint64_t addr;			/* the client's struct usbdevfs_urb */
	uint8_t *buffer;		/* setup packet and data stage */
	uint64_t due;			/* reapable from; UINT64_MAX: never (no answer) */
	int status;
	int actual;
	struct usbdevfs_urb urb;	/* as submitted (buffer: the client's address); last:
					 * its iso_frame_desc[] is a flexible array, unused */
};

struct conn {
	struct conn *next;		/* in the harness's list of conns */
	unsigned id;			/* never reused: how umockdev's signals find it */
	struct usb_dev *dev;
	unsigned devnum;
	char node[48];			/* /dev/bus/usb/002/005 */
	char sock[PATH_MAX];		/* ROOT/ioctl/dev/bus/usb/002/005, where clients connect */
	int listen_fd;
	int fifo;
	bool drained;
	bool gone;
	bool enodev_told;
	unsigned clients;
	struct urb *urbs;
	/* Control transfers are answered by the chip in order: when the link and the chip are
	 * free again. */
	uint64_t link_free;
	uint64_t busy_until;
	/* The end of the last bwPollTimeout given (0: none): a host that asks before it ignores
	 * the wait DFU 1.1 requires, which h5emu says in its log. */
	uint64_t poll_until;
};

struct usb_dev {
	struct emu_usb *u;
	unsigned index;
	char sysname[24];		/* 2-1.3 */
	char syspath[PATH_MAX];		/* /sys/devices/.../2-1.3 */
	bool cable;			/* plugged (control socket) */
	struct conn *cur;		/* enumerated now, or NULL */
	struct emu_dfu *dfu;
	struct emu_chip *chip;		/* the chip cur was enumerated with */
	uint64_t leave_at;		/* the chip reset itself: off the bus then (0: no) */
	uint64_t replug_at;		/* back on the bus then (0: no) */
	unsigned alt;
};

struct emu_usb {
	UMockdevTestbed *testbed;
	bool own_testbed;
	char *root;
	struct emu_usb_config cfg;
	struct emu_usb_ops ops;
	GMainContext *context;
	GMainLoop *loop;
	GThread *thread;
	int timer;			/* in the ioctl server's epoll set */
	uint64_t armed;			/* when the timer fires (UINT64_MAX: disarmed) */
	/* The ioctl server (see "ioctl socket" below): its thread, epoll set, wake-up eventfd,
	 * clients and the bytes of the answer being built. */
	GThread *io_thread;
	int epoll;
	int wake;
	bool io_stop;
	struct client *clients;
	unsigned next_client_id;
	uint8_t *out;
	size_t out_len, out_cap;
	/* Clients' uevent sockets (see listeners_keep). */
	GSource *inotify_source;
	int inotify;
	char listeners[PATH_MAX];
	/* Held by every entry point: the ioctls and the timer run in the ioctl server thread,
	 * the uevent listeners and calls from h5emu's loop in the harness thread. */
	GRecMutex mu;
	struct conn *conns;
	unsigned next_conn_id;
	uint8_t devnum_used[128];
	unsigned next_devnum;
	unsigned count;
	struct usb_dev devs[];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usb_log(struct emu_usb *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void usb_log(struct emu_usb *u, const char *fmt, ...)
{
	va_list ap;

	if (!u->cfg.verbose)
		return;
	fputs("h5emu: usb: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

bool emu_usb_preloaded(void)
{
	const char *p = getenv("LD_PRELOAD");

	return p && strstr(p, "libumockdev-preload");
}

/* --- Faults --- */

static const struct {
	const char *name;
	int req;
} fault_reqs[] = {
	{ "detach", 0 }, { "dnload", 1 }, { "upload", 2 }, { "getstatus", 3 },
	{ "clrstatus", 4 }, { "getstate", 5 }, { "abort", 6 }, { "any", -1 },
};

int emu_usb_fault_parse(const char *spec, struct emu_usb_fault *ret, char *err, size_t err_len)
{
	char *copy, *save = NULL, *tok;
	bool have_dfu = false, have_action = false;
	int r = -EINVAL;

	if (!strstr(spec, "dfu="))
		return 1;
	*ret = (struct emu_usb_fault){ .chip = -1, .request = -1, .block = -1, .alt = -1,
				       .nth = 1 };
	copy = strdup(spec);
	if (!copy) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '='), *end;
		const char *val = eq ? eq + 1 : "";
		unsigned long v = 0;

		if (eq)
			*eq = '\0';
		if (strcmp(tok, "once") == 0 || strcmp(tok, "repeat") == 0) {
			ret->repeat = tok[0] == 'r';
			continue;
		}
		if (!eq) {
			snprintf(err, err_len, "'%s' needs a value", tok);
			goto out;
		}
		if (strcmp(tok, "dfu") == 0) {
			size_t i;

			for (i = 0; i < sizeof(fault_reqs) / sizeof(fault_reqs[0]); i++)
				if (strcmp(val, fault_reqs[i].name) == 0)
					break;
			if (i == sizeof(fault_reqs) / sizeof(fault_reqs[0])) {
				snprintf(err, err_len, "dfu=%s: not a DFU request (dnload, upload, "
					 "getstatus, clrstatus, getstate, abort, detach, any)", val);
				goto out;
			}
			ret->request = fault_reqs[i].req;
			have_dfu = true;
			continue;
		}
		if (strcmp(tok, "action") == 0) {
			have_action = true;
			if (strcmp(val, "stall") == 0) {
				ret->action = EMU_USB_FAULT_STALL;
			} else if (strcmp(val, "silent") == 0) {
				ret->action = EMU_USB_FAULT_SILENT;
			} else if (strncmp(val, "dfu-error:", 10) == 0) {
				ret->action = EMU_USB_FAULT_DFU_ERROR;
				errno = 0;
				v = strtoul(val + 10, &end, 0);
				if (errno || *end || v == 0 || v > 15) {
					snprintf(err, err_len, "action=%s: bStatus must be 1..15", val);
					goto out;
				}
				ret->status = (uint8_t)v;
			} else if (strcmp(val, "unplug") == 0 || strncmp(val, "unplug:", 7) == 0) {
				ret->action = EMU_USB_FAULT_UNPLUG;
				if (val[6] == ':') {
					errno = 0;
					v = strtoul(val + 7, &end, 0);
					if (errno || *end || v > 600000) {
						snprintf(err, err_len, "action=%s: replug time is 0..600000 ms", val);
						goto out;
					}
					ret->ms = (uint32_t)v;
				}
			} else if (strcmp(val, "reenumerate") == 0) {
				ret->action = EMU_USB_FAULT_REENUMERATE;
			} else if (strncmp(val, "delay:", 6) == 0) {
				ret->action = EMU_USB_FAULT_DELAY;
				errno = 0;
				v = strtoul(val + 6, &end, 0);
				if (errno || *end || v == 0 || v > 600000) {
					snprintf(err, err_len, "action=%s: delay is 1..600000 ms", val);
					goto out;
				}
				ret->ms = (uint32_t)v;
			} else {
				snprintf(err, err_len, "action=%s: not a USB fault (stall, silent, "
					 "dfu-error:N, unplug[:MS], reenumerate, delay:MS)", val);
				goto out;
			}
			continue;
		}
		errno = 0;
		v = strtoul(val, &end, 0);
		if (errno || *end || !*val) {
			snprintf(err, err_len, "%s=%s: not a number", tok, val);
			goto out;
		}
		if (strcmp(tok, "chip") == 0 && v < 100000) {
			ret->chip = (int)v;
		} else if (strcmp(tok, "block") == 0 && v <= 0xffff) {
			ret->block = (int)v;
		} else if (strcmp(tok, "alt") == 0 && v < EMU_DFU_MAX_ALTS) {
			ret->alt = (int)v;
		} else if (strcmp(tok, "nth") == 0 && v >= 1 && v < 1000000) {
			ret->nth = (unsigned)v;
		} else {
			snprintf(err, err_len, "%s=%s: unknown key or value out of range", tok, val);
			goto out;
		}
	}
	if (!have_dfu || !have_action) {
		snprintf(err, err_len, "a USB fault needs dfu=REQUEST and action=");
		goto out;
	}
	if (ret->action == EMU_USB_FAULT_DFU_ERROR && ret->request != 1 && ret->request != -1) {
		snprintf(err, err_len, "action=dfu-error applies to dfu=dnload data blocks");
		goto out;
	}
	r = 0;
out:
	free(copy);
	return r;
}

/* The fault that fires for this request, if any. Called under the chip lock. */
static struct emu_usb_fault *fault_match(struct usb_dev *dev, struct emu_chip *chip,
					 const uint8_t *setup)
{
	struct emu_usb *u = dev->u;
	int req = (setup[0] & 0x60) == 0x20 ? setup[1] : -2;
	int block = setup[2] | setup[3] << 8;

	for (size_t i = 0; i < u->cfg.n_faults; i++) {
		struct emu_usb_fault *f = &u->cfg.faults[i];

		if (f->spent || req == -2)
			continue;
		if (f->chip >= 0 && (!chip || (unsigned)f->chip != emu_chip_index(chip)))
			continue;
		if (f->request >= 0 && f->request != req)
			continue;
		if (f->block >= 0 && (f->block != block || (req != 1 && req != 2)))
			continue;
		if (f->alt >= 0 && (unsigned)f->alt != dev->alt)
			continue;
		if (++f->seen < f->nth)
			continue;
		if (!f->repeat)
			f->spent = true;
		return f;
	}
	return NULL;
}

/* --- Descriptors of the hubs --- */

static const uint8_t root_hub_desc[] = {
	18, 1, 0x00, 0x02, 9, 0, 1, 64, 0x6b, 0x1d, 0x02, 0x00, 0x01, 0x06, 3, 2, 1, 1,
	9, 2, 25, 0, 1, 1, 0, 0xe0, 0,
	9, 4, 0, 0, 1, 9, 0, 0, 0,
	7, 5, 0x81, 3, 4, 0, 12,
};

static const uint8_t hub_desc[] = {
	18, 1, 0x00, 0x02, 9, 0, 2, 64, 0x40, 0x1a, 0x01, 0x02, 0x11, 0x01, 0, 1, 0, 1,
	9, 2, 41, 0, 1, 1, 0, 0xe0, 50,
	9, 4, 0, 0, 1, 9, 0, 1, 0,
	7, 5, 0x81, 3, 1, 0, 12,
	9, 4, 0, 1, 1, 9, 0, 2, 0,
	7, 5, 0x81, 3, 1, 0, 12,
};

/* --- Timer and FIFOs --- */

static void fifo_fill(struct conn *c)
{
	static const uint8_t page[FIFO_PAGE];

	while (write(c->fifo, page, sizeof(page)) == (ssize_t)sizeof(page))
		;
	c->drained = false;
}

static void fifo_drain(struct conn *c)
{
	uint8_t page[FIFO_PAGE];

	(void)!read(c->fifo, page, sizeof(page));
	c->drained = true;
}

static bool conn_reapable(const struct conn *c, uint64_t now)
{
	for (const struct urb *r = c->urbs; r; r = r->next)
		if (r->due <= now)
			return true;
	return c->gone && c->clients > 0 && !c->enodev_told;
}

static void conn_update_fifo(struct conn *c, uint64_t now)
{
	bool want = conn_reapable(c, now);

	if (c->fifo < 0)
		return;
	if (want && !c->drained)
		fifo_drain(c);
	else if (!want && c->drained)
		fifo_fill(c);
}

static void dev_plug_now(struct usb_dev *dev);
static void dev_unplug_now(struct usb_dev *dev, bool reset);

/* Runs what is due and arms the timer for the next event. */
static void usb_tick(struct emu_usb *u)
{
	uint64_t now = now_ns(), next = UINT64_MAX;
	struct itimerspec its = { 0 };

	for (unsigned i = 0; i < u->count; i++) {
		struct usb_dev *dev = &u->devs[i];

		if (dev->leave_at && dev->leave_at <= now) {
			dev->leave_at = 0;
			dev_unplug_now(dev, true);
			dev->replug_at = now + (uint64_t)u->cfg.reenumerate_ms * NS_PER_MS + 1;
		}
		if (dev->replug_at && dev->replug_at <= now) {
			dev->replug_at = 0;
			dev_plug_now(dev);
		}
		if (dev->leave_at && dev->leave_at < next)
			next = dev->leave_at;
		if (dev->replug_at && dev->replug_at < next)
			next = dev->replug_at;
	}
	for (struct conn *c = u->conns; c; c = c->next) {
		conn_update_fifo(c, now);
		for (struct urb *r = c->urbs; r; r = r->next)
			if (r->due > now && r->due < next)
				next = r->due;
	}
	if (next == u->armed)
		return;		/* the timer is set for it already */
	u->armed = next;
	if (next != UINT64_MAX) {
		its.it_value.tv_sec = (time_t)(next / 1000000000ull);
		its.it_value.tv_nsec = (long)(next % 1000000000ull);
	}
	timerfd_settime(u->timer, TFD_TIMER_ABSTIME, &its, NULL);
}

/* The timer fired (in the ioctl server thread, under u->mu). */
static void on_timer(struct emu_usb *u)
{
	uint64_t exp;

	(void)!read(u->timer, &exp, sizeof(exp));
	u->armed = UINT64_MAX;		/* it fired: a one-shot timer is disarmed */
	usb_tick(u);
}

/* --- uevent listeners ---
 *
 * libumockdev-preload gives each client's udev monitor a socket named $root/event<fd>, and
 * umockdev sends uevents to whatever matches event[0-9]* when they are sent. Two clients
 * whose monitors have the same fd number (sfid and a dfu-util started meanwhile) take the
 * name from each other, and the first one stops hearing anything. So every listener socket
 * is also hard-linked, as it appears, into a directory of ours; before a uevent, a live
 * listener that lost its name gets a temporary one matching the glob, removed afterwards. */

static void listeners_keep(struct emu_usb *u, const char *name)
{
	char path[PATH_MAX], keep[PATH_MAX + 32];
	struct stat st;

	if (strncmp(name, "event", 5) != 0 || name[5] < '0' || name[5] > '9')
		return;
	snprintf(path, sizeof(path), "%s/%s", u->root, name);
	if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return;
	snprintf(keep, sizeof(keep), "%s/%lu", u->listeners, (unsigned long)st.st_ino);
	(void)link(path, keep);
}

static gboolean on_inotify(gint fd, GIOCondition cond, gpointer user_data)
{
	struct emu_usb *u = user_data;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n = read(fd, buf, sizeof(buf));

	(void)cond;
	for (ssize_t off = 0; off < n;) {
		const struct inotify_event *ev = (const struct inotify_event *)(buf + off);

		if (ev->len)
			listeners_keep(u, ev->name);
		off += (ssize_t)(sizeof(*ev) + ev->len);
	}
	return G_SOURCE_CONTINUE;
}

static bool socket_alive(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return true;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return r == 0;
}

/* Before a uevent: live listeners without a name get one (returned count of names made);
 * dead ones are forgotten. */
static void listeners_expose(struct emu_usb *u, bool expose)
{
	DIR *dir;
	struct dirent *e;
	char path[PATH_MAX + 300], name[PATH_MAX + 300];

	if (!u->listeners[0])
		return;
	dir = opendir(u->root);
	if (dir) {
		/* Keep whatever appeared without an inotify event being read yet. */
		while ((e = readdir(dir)))
			listeners_keep(u, e->d_name);
		closedir(dir);
	}
	dir = opendir(u->listeners);
	if (!dir)
		return;
	while ((e = readdir(dir))) {
		unsigned long ino;
		char *end;
		bool named = false;
		DIR *root;
		struct dirent *re;

		if (e->d_name[0] == '.')
			continue;
		ino = strtoul(e->d_name, &end, 10);
		snprintf(path, sizeof(path), "%s/%s", u->listeners, e->d_name);
		snprintf(name, sizeof(name), "%s/event9%s", u->root, e->d_name);
		if (!expose) {
			(void)unlink(name);
			continue;
		}
		if (!socket_alive(path)) {
			(void)unlink(path);
			continue;
		}
		root = opendir(u->root);
		while (root && (re = readdir(root))) {
			if (strncmp(re->d_name, "event", 5) == 0 && re->d_ino == ino &&
			    strcmp(re->d_name, name + strlen(u->root) + 1) != 0)
				named = true;
		}
		if (root)
			closedir(root);
		if (!named)
			(void)link(path, name);
	}
	closedir(dir);
}

static void usb_uevent(struct emu_usb *u, const char *syspath, const char *action)
{
	listeners_expose(u, true);
	umockdev_testbed_uevent(u->testbed, syspath, action);
	listeners_expose(u, false);
}

/* --- The ioctl socket ---
 *
 * libumockdev-preload connects every open() of a device node to the unix socket
 * ROOT/ioctl/<node> when it exists and forwards each ioctl on that file over it: the client
 * sends {1, request, arg} and then obeys the server until it is told the result: {5, addr,
 * len} (READ_MEM: the client sends len bytes of its memory at addr), {6, addr, len} followed
 * by len bytes (WRITE_MEM: the client stores them at addr), {3, result, errno} (DONE). Each
 * field is an unsigned long. umockdev's UMockdevIoctlBase serves this through GIO
 * streams on the testbed's worker thread (several main-loop iterations, a GTask and a
 * signal emission per message); the harness serves its own nodes' sockets directly from
 * one epoll thread: one recv per request, one recv per memory read, and the whole answer
 * (memory writes and DONE) in one send. What the ioctls do is unchanged. */

#define IO_READ_MEM 5ul
#define IO_WRITE_MEM 6ul
#define IO_DONE 3ul
#define IO_REQ_IOCTL 1ul
#define EV_LISTEN 1ull
#define EV_CLIENT 2ull
#define EV_WAKE 3ull
#define EV_TIMER 4ull
#define EV_KEY(kind, id) ((kind) << 32 | (uint64_t)(id))

static void out_append(struct emu_usb *u, const void *p, size_t len)
{
	if (u->out_len + len > u->out_cap) {
		u->out_cap = MAX(u->out_cap * 2, u->out_len + len);
		u->out = g_realloc(u->out, u->out_cap);
	}
	memcpy(u->out + u->out_len, p, len);
	u->out_len += len;
}

static void out_header(struct emu_usb *u, unsigned long cmd, unsigned long a1, unsigned long a2)
{
	unsigned long h[3] = { cmd, a1, a2 };

	out_append(u, h, sizeof(h));
}

/* Sends what is queued for the client. */
static int out_flush(struct emu_usb *u, struct client *cl)
{
	size_t done = 0;

	while (done < u->out_len && !cl->dead) {
		ssize_t n = send(cl->fd, u->out + done, u->out_len - done, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			cl->dead = true;
		else
			done += (size_t)n;
	}
	u->out_len = 0;
	return cl->dead ? -EIO : 0;
}

static int recv_all(struct client *cl, void *p, size_t len)
{
	size_t done = 0;

	while (done < len && !cl->dead) {
		ssize_t n = recv(cl->fd, (uint8_t *)p + done, len - done, MSG_WAITALL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			cl->dead = true;
		else
			done += (size_t)n;
	}
	return cl->dead ? -EIO : 0;
}

/* Reads len bytes of the client's memory at addr (what was queued goes first). */
static int mem_read(struct emu_usb *u, struct client *cl, uint64_t addr, void *p, size_t len)
{
	if (!addr)
		return -EFAULT;
	if (!len)
		return 0;
	out_header(u, IO_READ_MEM, addr, len);
	if (out_flush(u, cl) < 0 || recv_all(cl, p, len) < 0)
		return -EIO;
	return 0;
}

/* Queues a write of len bytes into the client's memory at addr. */
static void mem_write(struct emu_usb *u, uint64_t addr, const void *p, size_t len)
{
	if (!addr || !len)
		return;
	out_header(u, IO_WRITE_MEM, addr, len);
	out_append(u, p, len);
}

/* --- URBs --- */

static void urb_free(struct urb *r)
{
	g_free(r->buffer);
	g_free(r);
}

/* Bus time of a control transfer with `len` bytes in its data stage. */
static uint64_t control_ns(size_t len)
{
	uint64_t bytes = 8 + TRANSACTION_OVERHEAD + TRANSACTION_OVERHEAD; /* setup, status */
	size_t packets = (len + EP0_PACKET - 1) / EP0_PACKET;

	bytes += len + packets * TRANSACTION_OVERHEAD;
	return bytes * BYTE_NS_NUM / BYTE_NS_DEN;
}

static uint64_t microframe_up(uint64_t t)
{
	return (t + MICROFRAME_NS - 1) / MICROFRAME_NS * MICROFRAME_NS;
}

/* A control transfer starts at the next microframe once the link and the chip are free and
 * its data is on the bus for its bus time (*end); the host learns of its completion at the
 * end of that microframe (the return value: when the URB can be reaped). */
static uint64_t urb_schedule(struct conn *c, uint64_t now, size_t len, uint64_t *end)
{
	uint64_t start = now;

	if (c->link_free > start)
		start = c->link_free;
	if (c->busy_until > start)
		start = c->busy_until;
	start = microframe_up(start);
	c->link_free = *end = start + control_ns(len);
	return microframe_up(*end);
}

static void conn_append(struct conn *c, struct urb *r)
{
	struct urb **p = &c->urbs;

	while (*p)
		p = &(*p)->next;
	*p = r;
}

static void dev_schedule_replug(struct usb_dev *dev, uint64_t at)
{
	dev->replug_at = at ? at : 1;
}

static int submit_urb(struct conn *c, struct client *client, uint64_t arg)
{
	struct usb_dev *dev = c->dev;
	struct emu_usb *u = dev->u;
	struct usbdevfs_urb urb;
	struct emu_dfu_result res = { 0 };
	struct emu_usb_fault *f = NULL;
	struct emu_chip *chip;
	struct urb *r;
	uint8_t setup[8], *payload;
	uint16_t wlength;
	uint64_t now, end;
	bool vanished = false;
	int e;

	e = mem_read(u, client, arg, &urb, sizeof(urb));
	if (e < 0)
		return e == -EFAULT ? e : -EIO;
	if (urb.type != USBDEVFS_URB_TYPE_CONTROL || urb.buffer_length < 8)
		return -EINVAL;
	r = g_new0(struct urb, 1);
	r->buffer = g_malloc((gsize)urb.buffer_length);
	e = mem_read(u, client, (uint64_t)(uintptr_t)urb.buffer, r->buffer,
		     (size_t)urb.buffer_length);
	if (e < 0) {
		urb_free(r);
		return e;
	}
	memcpy(setup, r->buffer, 8);
	wlength = (uint16_t)(setup[6] | setup[7] << 8);
	if ((size_t)urb.buffer_length < 8u + wlength) {
		urb_free(r);
		return -EINVAL;
	}
	payload = r->buffer + 8;
	r->client = client;
	r->addr = arg;
	r->urb = urb;
	now = now_ns();

	u->ops.lock(u->ops.user_data);
	chip = u->ops.chip(u->ops.user_data, dev->index);
	if (dev->leave_at) {
		/* Reset under way: nothing answers any more. */
		f = NULL;
	} else if (chip != dev->chip || !chip) {
		/* The chip was taken out under the host's feet: the device is going away. */
		res.stall = true;
		r->status = -EPROTO;
	} else {
		if (c->poll_until && now < c->poll_until)
			g_printerr("h5emu: %s dev %u: request %02x %02x came %" G_GUINT64_FORMAT
				   " us before the bwPollTimeout it was given ended\n", dev->sysname,
				   c->devnum, setup[0], setup[1], (c->poll_until - now) / 1000);
		c->poll_until = 0;
		u->ops.activity(u->ops.user_data, dev->index);
		f = fault_match(dev, chip, setup);
		if (f && f->action == EMU_USB_FAULT_DFU_ERROR) {
			emu_dfu_fail_block(dev->dfu, (unsigned)(setup[2] | setup[3] << 8), f->status);
			f = NULL;
		}
		if (f && f->action == EMU_USB_FAULT_STALL) {
			res.stall = true;
		} else if (!f || f->action == EMU_USB_FAULT_DELAY) {
			emu_dfu_control(dev->dfu, setup, payload, &res);
			if (setup[0] == 0x01 && setup[1] == 11)
				dev->alt = setup[2];
		}
		usb_log(u, "%s dev %u: %02x %02x %04x len %u -> %s %zu state %u busy %" G_GUINT64_FORMAT " us%s",
			dev->sysname, c->devnum, setup[0], setup[1], setup[2] | setup[3] << 8, wlength,
			res.stall ? "STALL" : "ok", res.len, emu_dfu_state(dev->dfu),
			res.busy_ns / 1000, res.reset ? " reset" : "");
		if (res.reset)
			u->ops.chip_reset(u->ops.user_data, dev->index);
	}
	u->ops.unlock(u->ops.user_data);

	if (dev->leave_at) {
		r->due = UINT64_MAX;
		conn_append(c, r);
		return 0;
	}
	r->due = urb_schedule(c, now, (setup[0] & 0x80) ? res.len : wlength, &end);
	/* The chip's work starts once the request's answer is on the bus. */
	c->busy_until = end + res.busy_ns;
	if (res.poll_ms)
		c->poll_until = end + (uint64_t)res.poll_ms * 1000000u;
	if (res.stall) {
		r->status = r->status ? r->status : -EPIPE;
		r->actual = 0;
	} else {
		r->status = 0;
		r->actual = (int)res.len;
	}
	if (f) {
		switch (f->action) {
		case EMU_USB_FAULT_SILENT:
			r->due = UINT64_MAX;
			break;
		case EMU_USB_FAULT_DELAY:
			r->due += (uint64_t)f->ms * NS_PER_MS;
			c->link_free = r->due;
			break;
		case EMU_USB_FAULT_UNPLUG:
		case EMU_USB_FAULT_REENUMERATE:
			vanished = true;
			break;
		case EMU_USB_FAULT_STALL:
		case EMU_USB_FAULT_DFU_ERROR:
		default:
			break;
		}
	}
	conn_append(c, r);
	if (vanished) {
		usb_log(u, "%s: fault: the device goes away during a request", dev->sysname);
		dev_unplug_now(dev, false);
		if (f->action == EMU_USB_FAULT_UNPLUG && !f->ms)
			dev->cable = false;	/* back with the control socket's plug */
		else
			dev_schedule_replug(dev, now_ns() + (f->action == EMU_USB_FAULT_REENUMERATE ?
				u->cfg.reenumerate_ms : f->ms) * NS_PER_MS);
	} else if (res.reset) {
		/* The chip resets once the request's answer is on the bus: it leaves the bus
		 * shortly after, then enumerates again. */
		dev->replug_at = 0;
		dev->leave_at = r->due + 5 * NS_PER_MS;
	}
	return 0;
}

static struct urb *take_reapable(struct conn *c, struct client *client, uint64_t now)
{
	for (struct urb **p = &c->urbs; *p; p = &(*p)->next) {
		struct urb *r = *p;

		if (r->client == client && r->due <= now) {
			*p = r->next;
			r->next = NULL;
			return r;
		}
	}
	return NULL;
}

/* The answer to a reap is written in one go: the data stage of an IN transfer, the URB's
 * status and length, and the URB's address into the client's pointer. */
static int reap_urb(struct conn *c, struct client *client, uint64_t arg)
{
	struct emu_usb *u = c->dev->u;
	struct urb *r;
	uint64_t addr;

	if (!arg)
		return -EFAULT;
	r = take_reapable(c, client, now_ns());
	if (!r) {
		if (c->gone) {
			c->enodev_told = true;
			return -ENODEV;
		}
		return -EAGAIN;
	}
	r->urb.status = r->status;
	r->urb.actual_length = r->actual;
	if ((r->buffer[0] & 0x80) && r->actual > 0)
		mem_write(u, (uint64_t)(uintptr_t)r->urb.buffer + 8, r->buffer + 8,
			  (size_t)r->actual);
	mem_write(u, r->addr, &r->urb, sizeof(r->urb));
	addr = r->addr;
	mem_write(u, arg, &addr, sizeof(addr));
	urb_free(r);
	return 0;
}

static int discard_urb(struct conn *c, struct client *client, uint64_t addr)
{
	for (struct urb *r = c->urbs; r; r = r->next) {
		if (r->client == client && r->addr == addr) {
			r->status = -ENOENT;
			r->actual = 0;
			r->due = 0;
			return 0;
		}
	}
	return -EINVAL;
}

/* The synchronous USBDEVFS_CONTROL: answered at once (lsusb uses it rarely). */
static long control_sync(struct conn *c, struct client *client, uint64_t arg)
{
	struct usb_dev *dev = c->dev;
	struct emu_usb *u = dev->u;
	struct usbdevfs_ctrltransfer ct;
	struct emu_dfu_result res = { 0 };
	uint8_t setup[8], tmp[4096];
	uint64_t data;
	int e;

	e = mem_read(u, client, arg, &ct, sizeof(ct));
	if (e < 0)
		return e;
	setup[0] = ct.bRequestType;
	setup[1] = ct.bRequest;
	setup[2] = (uint8_t)ct.wValue;
	setup[3] = (uint8_t)(ct.wValue >> 8);
	setup[4] = (uint8_t)ct.wIndex;
	setup[5] = (uint8_t)(ct.wIndex >> 8);
	setup[6] = (uint8_t)ct.wLength;
	setup[7] = (uint8_t)(ct.wLength >> 8);
	if (ct.wLength > sizeof(tmp))
		return -EINVAL;
	data = (uint64_t)(uintptr_t)ct.data;
	if (ct.wLength) {
		e = mem_read(u, client, data, tmp, ct.wLength);
		if (e < 0)
			return e;
	}
	u->ops.lock(u->ops.user_data);
	if (u->ops.chip(u->ops.user_data, dev->index) == dev->chip && dev->chip)
		emu_dfu_control(dev->dfu, setup, tmp, &res);
	else
		res.stall = true;
	u->ops.unlock(u->ops.user_data);
	if (res.stall)
		return -EPIPE;
	if (ct.wLength && res.len > 0 && (setup[0] & 0x80))
		mem_write(u, data, tmp, res.len);
	return (long)res.len;
}

/* The conn with this id, or NULL once it is freed: a client may still send requests to a
 * conn that the harness thread has freed, so clients and epoll events carry the conn's id,
 * never its address. Called under u->mu. */
static struct conn *conn_by_id(struct emu_usb *u, unsigned id)
{
	for (struct conn *c = u->conns; c && id; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* One ioctl of a client of conn c: the result (>= 0) or -errno. */
static long io_ioctl(struct conn *c, struct client *client, unsigned long request, uint64_t arg)
{
	struct emu_usb *u = c->dev->u;
	long r = 0;
	unsigned v[2];

	if (c->gone && request != USBDEVFS_REAPURB && request != USBDEVFS_REAPURBNDELAY &&
	    request != USBDEVFS_DISCARDURB)
		return -ENODEV;
	switch (request) {
	case USBDEVFS_GET_CAPABILITIES: {
		guint32 caps = USBDEVFS_CAP_NO_PACKET_SIZE_LIM | USBDEVFS_CAP_REAP_AFTER_DISCONNECT |
			       USBDEVFS_CAP_ZERO_PACKET;

		if (!arg)
			return -EFAULT;
		mem_write(u, arg, &caps, sizeof(caps));
		break;
	}
	case USBDEVFS_CLAIMINTERFACE:
	case USBDEVFS_RELEASEINTERFACE:
		r = mem_read(u, client, arg, v, sizeof(unsigned));
		if (r == 0 && v[0] != 0)
			r = -EINVAL;
		break;
	case USBDEVFS_SETCONFIGURATION:
		r = mem_read(u, client, arg, v, sizeof(unsigned));
		if (r == 0 && v[0] != 1 && (int)v[0] != -1 && v[0] != 0)
			r = -EINVAL;
		break;
	case USBDEVFS_SETINTERFACE:
		r = mem_read(u, client, arg, v, 2 * sizeof(unsigned));
		if (r < 0)
			break;
		if (v[0] != 0)
			return -EINVAL;
		u->ops.lock(u->ops.user_data);
		r = emu_dfu_set_alt(c->dev->dfu, v[1]);
		if (r == 0)
			c->dev->alt = v[1];
		u->ops.unlock(u->ops.user_data);
		break;
	case USBDEVFS_CLEAR_HALT:
	case USBDEVFS_RESETEP:
		break;
	case USBDEVFS_RESET:
		u->ops.lock(u->ops.user_data);
		emu_dfu_reset(c->dev->dfu);
		c->dev->alt = 0;
		u->ops.unlock(u->ops.user_data);
		break;
	case USBDEVFS_GETDRIVER:
	case USBDEVFS_IOCTL:
		r = -ENODATA;
		break;
	case USBDEVFS_SUBMITURB:
		r = submit_urb(c, client, arg);
		break;
	case USBDEVFS_REAPURB:
	case USBDEVFS_REAPURBNDELAY:
		r = reap_urb(c, client, arg);
		break;
	case USBDEVFS_DISCARDURB:
		r = discard_urb(c, client, arg);
		break;
	case USBDEVFS_CONTROL:
		r = control_sync(c, client, arg);
		break;
	default:
		r = -ENOTTY;
		break;
	}
	return r;
}

static void conn_drop_client_urbs(struct conn *c, struct client *client)
{
	struct urb **p = &c->urbs;

	while (*p) {
		struct urb *r = *p;

		if (r->client == client) {
			*p = r->next;
			urb_free(r);
		} else {
			p = &r->next;
		}
	}
}

static void conn_free(struct conn *c);

static void client_close(struct emu_usb *u, struct client *cl)
{
	struct conn *c = conn_by_id(u, cl->conn_id);

	for (struct client **p = &u->clients; *p; p = &(*p)->next) {
		if (*p == cl) {
			*p = cl->next;
			break;
		}
	}
	epoll_ctl(u->epoll, EPOLL_CTL_DEL, cl->fd, NULL);
	close(cl->fd);
	if (c) {
		conn_drop_client_urbs(c, cl);
		if (c->clients > 0)
			c->clients--;
		/* A device that went away is forgotten once its last client closed it. */
		if (c->gone && c->clients == 0 && !c->urbs)
			conn_free(c);
	}
	g_free(cl);
	usb_tick(u);
}

static void io_accept(struct emu_usb *u, struct conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct client *cl;
	int fd;

	while ((fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
		cl = g_new0(struct client, 1);
		cl->fd = fd;
		cl->id = ++u->next_client_id;
		cl->conn_id = c->id;
		ev.data.u64 = EV_KEY(EV_CLIENT, cl->id);
		if (epoll_ctl(u->epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			g_free(cl);
			continue;
		}
		cl->next = u->clients;
		u->clients = cl;
		c->clients++;
	}
}

/* Serves one request of a client whose socket is readable. */
static void io_client(struct emu_usb *u, struct client *cl)
{
	unsigned long req[3];
	struct conn *c;
	long r;

	if (recv_all(cl, req, sizeof(req)) < 0) {
		client_close(u, cl);
		return;
	}
	c = conn_by_id(u, cl->conn_id);
	if (req[0] != IO_REQ_IOCTL)
		r = -EINVAL;		/* read() and write() on a usbfs node: not used */
	else if (!c)
		r = -ENODEV;
	else
		r = io_ioctl(c, cl, req[1], req[2]);
	if (r == -EIO && cl->dead) {
		client_close(u, cl);
		return;
	}
	out_header(u, IO_DONE, r < 0 ? (unsigned long)-1 : (unsigned long)r,
		   r < 0 ? (unsigned long)-r : 0);
	if (out_flush(u, cl) < 0) {
		client_close(u, cl);
		return;
	}
	usb_tick(u);
}

static struct client *client_by_id(struct emu_usb *u, unsigned id)
{
	for (struct client *cl = u->clients; cl; cl = cl->next)
		if (cl->id == id)
			return cl;
	return NULL;
}

static gpointer io_thread_main(gpointer user_data)
{
	struct emu_usb *u = user_data;
	struct epoll_event ev[32];
	bool stop = false;

	while (!stop) {
		int n = epoll_wait(u->epoll, ev, G_N_ELEMENTS(ev), -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		g_rec_mutex_lock(&u->mu);
		for (int i = 0; i < n && !stop; i++) {
			unsigned kind = (unsigned)(ev[i].data.u64 >> 32);
			unsigned id = (unsigned)ev[i].data.u64;

			if (kind == EV_WAKE) {
				uint64_t x;

				(void)!read(u->wake, &x, sizeof(x));
				stop = u->io_stop;
			} else if (kind == EV_TIMER) {
				on_timer(u);
			} else if (kind == EV_LISTEN) {
				struct conn *c = conn_by_id(u, id);

				if (c && c->listen_fd >= 0)
					io_accept(u, c);
			} else if (kind == EV_CLIENT) {
				struct client *cl = client_by_id(u, id);

				if (cl)
					io_client(u, cl);
			}
		}
		g_rec_mutex_unlock(&u->mu);
	}
	return NULL;
}

/* --- Devices --- */

static void conn_free(struct conn *c)
{
	struct emu_usb *u = c->dev->u;

	for (struct conn **p = &u->conns; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	while (c->urbs) {
		struct urb *r = c->urbs;

		c->urbs = r->next;
		urb_free(r);
	}
	if (c->listen_fd >= 0) {
		epoll_ctl(u->epoll, EPOLL_CTL_DEL, c->listen_fd, NULL);
		close(c->listen_fd);
		(void)unlink(c->sock);
	}
	if (c->fifo >= 0)
		close(c->fifo);
	u->devnum_used[c->devnum] = 0;
	g_free(c);
}

static unsigned devnum_alloc(struct emu_usb *u)
{
	for (unsigned tries = 0; tries < 125; tries++) {
		unsigned n = u->next_devnum;

		u->next_devnum = n >= 127 ? 3 : n + 1;
		if (u->devnum_used[n]) {
			/* A gone device whose clients still hold it keeps its number. */
			continue;
		}
		u->devnum_used[n] = 1;
		return n;
	}
	return 0;
}

static int write_descriptors(struct emu_usb *u, const char *syspath, const uint8_t *d, size_t n)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	int fd;

	snprintf(dir, sizeof(dir), "%s%s", u->root, syspath);
	if (g_mkdir_with_parents(dir, 0755) < 0)
		return -errno;
	snprintf(path, sizeof(path), "%s/descriptors", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, d, n) != (ssize_t)n) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

/* Adds a usb_device to sysfs; the descriptors file is written before the add uevent. */
static char *add_usb_device(struct emu_usb *u, const char *name, const uint8_t *desc,
			    size_t desc_len, unsigned devnum, const char *speed,
			    const char *manufacturer, const char *product, const char *serial)
{
	char sys[PATH_MAX], busnum[8], devnumstr[8], vid[8], pid[8], bcd[8], cls[4], devname[48];
	char *syspath;

	snprintf(sys, sizeof(sys), "/sys/devices/%s", name);
	if (write_descriptors(u, sys, desc, desc_len) < 0)
		return NULL;
	char speed_nl[8], man_nl[64], prod_nl[64], serial_nl[40], busprop[8], devprop[8];

	/* sysfs attributes end with a newline, as the kernel's do (lsusb strips one). */
	snprintf(busnum, sizeof(busnum), "%u\n", USB_BUS);
	snprintf(devnumstr, sizeof(devnumstr), "%u\n", devnum);
	snprintf(busprop, sizeof(busprop), "%03u", USB_BUS);
	snprintf(devprop, sizeof(devprop), "%03u", devnum);
	snprintf(vid, sizeof(vid), "%04x\n", desc[8] | desc[9] << 8);
	snprintf(pid, sizeof(pid), "%04x\n", desc[10] | desc[11] << 8);
	snprintf(bcd, sizeof(bcd), "%04x\n", desc[12] | desc[13] << 8);
	snprintf(cls, sizeof(cls), "%02x\n", desc[4]);
	snprintf(speed_nl, sizeof(speed_nl), "%s\n", speed);
	snprintf(man_nl, sizeof(man_nl), "%s\n", manufacturer);
	snprintf(prod_nl, sizeof(prod_nl), "%s\n", product);
	snprintf(serial_nl, sizeof(serial_nl), "%s\n", serial ? serial : "");
	snprintf(devname, sizeof(devname), "bus/usb/%03u/%03u", USB_BUS, devnum);
	{
		char *attrs[] = { "idVendor", vid, "idProduct", pid, "bcdDevice", bcd,
				  "busnum", busnum, "devnum", devnumstr, "speed", speed_nl,
				  "bConfigurationValue", "1\n", "bNumConfigurations", "1\n",
				  "bDeviceClass", cls, "bMaxPacketSize0", "64\n",
				  "manufacturer", man_nl, "product", prod_nl,
				  serial ? "serial" : NULL, serial_nl, NULL };
		char *props[] = { "DEVTYPE", "usb_device", "DRIVER", "usb", "DEVNAME", devname,
				  "BUSNUM", busprop, "DEVNUM", devprop, "PRODUCT", NULL, NULL };
		char product_prop[32];

		snprintf(product_prop, sizeof(product_prop), "%x/%x/%x", desc[8] | desc[9] << 8,
			 desc[10] | desc[11] << 8, desc[12] | desc[13] << 8);
		props[11] = product_prop;
		listeners_expose(u, true);
		syspath = umockdev_testbed_add_devicev(u->testbed, "usb", name, NULL, attrs, props);
		listeners_expose(u, false);
	}
	return syspath;
}

/* The socket where libumockdev-preload connects the node's clients (bound before the node
 * is announced). */
static int conn_listen(struct conn *c)
{
	struct emu_usb *u = c->dev->u;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = EV_KEY(EV_LISTEN, c->id) };
	char *dir;
	int fd;

	if ((size_t)snprintf(c->sock, sizeof(c->sock), "%s/ioctl%s", u->root, c->node) >=
	    sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	dir = g_path_get_dirname(c->sock);
	g_mkdir_with_parents(dir, 0755);
	g_free(dir);
	(void)unlink(c->sock);
	strcpy(sa.sun_path, c->sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0 ||
	    epoll_ctl(u->epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;

		close(fd);
		(void)unlink(c->sock);
		errno = e;
		return -1;
	}
	c->listen_fd = fd;
	return 0;
}

/* Enumerates the slot's chip as a new device (new device number and node). */
static void dev_plug_now(struct usb_dev *dev)
{
	struct emu_usb *u = dev->u;
	struct emu_chip *chip;
	struct conn *c;
	uint8_t desc[256];
	size_t n;
	char serial[32], path[PATH_MAX], *syspath;

	if (dev->cur)
		dev_unplug_now(dev, true);
	if (!dev->cable)
		return;
	u->ops.lock(u->ops.user_data);
	chip = u->ops.chip(u->ops.user_data, dev->index);
	dev->chip = chip;
	if (chip) {
		emu_dfu_set_chip(dev->dfu, chip);
		dev->alt = 0;
		n = emu_dfu_descriptors(dev->dfu, desc, sizeof(desc));
		emu_dfu_serial(dev->dfu, serial, sizeof(serial));
	}
	u->ops.unlock(u->ops.user_data);
	if (!chip)
		return;

	c = g_new0(struct conn, 1);
	c->dev = dev;
	c->fifo = -1;
	c->listen_fd = -1;
	c->devnum = devnum_alloc(u);
	if (!c->devnum) {
		g_free(c);
		return;
	}
	snprintf(c->node, sizeof(c->node), "/dev/bus/usb/%03u/%03u", USB_BUS, c->devnum);
	snprintf(path, sizeof(path), "%s%s", u->root, c->node);
	{
		char dir[PATH_MAX];

		snprintf(dir, sizeof(dir), "%s/dev/bus/usb/%03u", u->root, USB_BUS);
		g_mkdir_with_parents(dir, 0755);
	}
	(void)unlink(path);
	if (mkfifo(path, 0666) < 0) {
		usb_log(u, "mkfifo %s: %s", path, strerror(errno));
		u->devnum_used[c->devnum] = 0;
		g_free(c);
		return;
	}
	c->fifo = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (c->fifo < 0) {
		(void)unlink(path);
		u->devnum_used[c->devnum] = 0;
		g_free(c);
		return;
	}
	fifo_fill(c);
	c->id = ++u->next_conn_id;
	c->next = u->conns;
	u->conns = c;
	if (conn_listen(c) < 0) {
		usb_log(u, "ioctl socket %s: %s", c->sock, strerror(errno));
		(void)unlink(path);
		conn_free(c);
		return;
	}

	syspath = add_usb_device(u, dev->syspath + strlen("/sys/devices/"), desc, n, c->devnum,
				 "12", "STMicroelectronics", "DFU in FS Mode", serial);
	if (!syspath) {
		(void)unlink(path);
		conn_free(c);
		return;
	}
	g_free(syspath);
	dev->cur = c;
	usb_log(u, "%s: enumerated as device %u (%s)", dev->sysname, c->devnum, c->node);
}

/* Takes the device off the bus: remove uevent, sysfs entry and node gone; its conn stays
 * (gone) until its clients close it. `reset`: the chip reset itself. */
static void dev_unplug_now(struct usb_dev *dev, bool reset)
{
	struct emu_usb *u = dev->u;
	struct conn *c = dev->cur;
	char path[PATH_MAX];

	(void)reset;
	if (!c)
		return;
	dev->cur = NULL;
	usb_uevent(u, dev->syspath, "remove");
	umockdev_testbed_remove_device(u->testbed, dev->syspath);
	snprintf(path, sizeof(path), "%s%s", u->root, c->node);
	(void)unlink(path);
	c->gone = true;
	for (struct urb *r = c->urbs; r; r = r->next) {
		if (r->due > now_ns()) {
			r->due = 0;
			r->status = -ESHUTDOWN;
			r->actual = 0;
		}
	}
	usb_log(u, "%s: device %u gone", dev->sysname, c->devnum);
	if (c->clients == 0 && !c->urbs)
		conn_free(c);
	usb_tick(u);
}

/* --- Calls from the loop's thread --- */

struct usb_call {
	int (*fn)(struct usb_dev *dev);
	struct usb_dev *dev;
	int result;
	bool done;
	GMutex mutex;
	GCond cond;
};

static gboolean usb_call_dispatch(gpointer user_data)
{
	struct usb_call *c = user_data;
	struct emu_usb *u = c->dev->u;
	int r;

	g_rec_mutex_lock(&u->mu);
	r = c->fn(c->dev);
	g_rec_mutex_unlock(&u->mu);
	g_mutex_lock(&c->mutex);
	c->result = r;
	c->done = true;
	g_cond_signal(&c->cond);
	g_mutex_unlock(&c->mutex);
	return G_SOURCE_REMOVE;
}

static int usb_call(struct emu_usb *u, unsigned index, int (*fn)(struct usb_dev *))
{
	struct usb_call c = { .fn = fn, .dev = &u->devs[index] };

	g_mutex_init(&c.mutex);
	g_cond_init(&c.cond);
	g_main_context_invoke(u->context, usb_call_dispatch, &c);
	g_mutex_lock(&c.mutex);
	while (!c.done)
		g_cond_wait(&c.cond, &c.mutex);
	g_mutex_unlock(&c.mutex);
	g_mutex_clear(&c.mutex);
	g_cond_clear(&c.cond);
	return c.result;
}

static int call_unplug(struct usb_dev *dev)
{
	if (!dev->cable)
		return -EALREADY;
	dev->cable = false;
	dev->replug_at = dev->leave_at = 0;
	dev_unplug_now(dev, false);
	return 0;
}

static int call_plug(struct usb_dev *dev)
{
	if (dev->cable)
		return -EALREADY;
	dev->cable = true;
	dev_plug_now(dev);
	usb_tick(dev->u);
	return 0;
}

static int call_changed(struct usb_dev *dev)
{
	dev->replug_at = dev->leave_at = 0;
	dev_plug_now(dev);
	usb_tick(dev->u);
	return 0;
}

static int call_stop(struct usb_dev *dev)
{
	struct emu_usb *u = dev->u;

	for (unsigned i = 0; i < u->count; i++) {
		u->devs[i].cable = false;
		u->devs[i].replug_at = u->devs[i].leave_at = 0;
		dev_unplug_now(&u->devs[i], false);
	}
	while (u->conns)
		conn_free(u->conns);
	return 0;
}

int emu_usb_unplug(struct emu_usb *u, unsigned index)
{
	if (!u || index >= u->count)
		return -EINVAL;
	return usb_call(u, index, call_unplug);
}

int emu_usb_plug(struct emu_usb *u, unsigned index)
{
	if (!u || index >= u->count)
		return -EINVAL;
	return usb_call(u, index, call_plug);
}

int emu_usb_chip_changed(struct emu_usb *u, unsigned index)
{
	if (!u || index >= u->count)
		return -EINVAL;
	return usb_call(u, index, call_changed);
}

static int get_devnum(struct usb_dev *dev)
{
	return dev->cur ? (int)dev->cur->devnum : 0;
}

static int get_cable(struct usb_dev *dev)
{
	return dev->cable;
}

bool emu_usb_cable(struct emu_usb *u, unsigned index)
{
	if (!u || index >= u->count)
		return false;
	return usb_call(u, index, get_cable) != 0;
}

unsigned emu_usb_devnum(struct emu_usb *u, unsigned index)
{
	if (!u || index >= u->count)
		return 0;
	return (unsigned)usb_call(u, index, get_devnum);
}

const char *emu_usb_port_path(struct emu_usb *u, unsigned index)
{
	if (!u || index >= u->count)
		return NULL;
	return u->devs[index].sysname;
}

/* --- Start and stop --- */

static gpointer usb_thread_main(gpointer user_data)
{
	struct emu_usb *u = user_data;

	g_main_context_push_thread_default(u->context);
	g_main_loop_run(u->loop);
	g_main_context_pop_thread_default(u->context);
	return NULL;
}

static int call_setup(struct usb_dev *first)
{
	struct emu_usb *u = first->u;
	char *p;

	p = add_usb_device(u, SYSFS_ROOT, root_hub_desc, sizeof(root_hub_desc), 1, "480",
			   "Linux Foundation", "EHCI Host Controller", "0000:00:14.0");
	if (!p)
		return -EIO;
	g_free(p);
	p = add_usb_device(u, SYSFS_ROOT "/2-1", hub_desc, sizeof(hub_desc), 2, "480",
			   "Terminus Technology", "USB 2.0 Hub [MTT]", NULL);
	if (!p)
		return -EIO;
	g_free(p);
	u->devnum_used[1] = u->devnum_used[2] = 1;
	for (unsigned i = 0; i < u->count; i++) {
		u->devs[i].cable = true;
		dev_plug_now(&u->devs[i]);
	}
	usb_tick(u);
	return 0;
}

int emu_usb_start(const struct emu_usb_config *cfg, const struct emu_usb_ops *ops,
		  void *testbed, struct emu_usb **ret)
{
	struct emu_usb *u;
	int r;

	if (!cfg || !ops || !ret || cfg->count == 0 || cfg->count > 120 || !cfg->profile)
		return -EINVAL;
	u = g_malloc0(sizeof(*u) + cfg->count * sizeof(u->devs[0]));
	u->cfg = *cfg;
	u->ops = *ops;
	u->count = cfg->count;
	u->next_devnum = 3;
	g_rec_mutex_init(&u->mu);
	u->timer = -1;
	u->armed = UINT64_MAX;
	u->inotify = -1;
	u->epoll = -1;
	u->wake = -1;
	if (testbed) {
		u->testbed = g_object_ref(testbed);
	} else {
		u->testbed = umockdev_testbed_new();
		u->own_testbed = true;
	}
	u->root = umockdev_testbed_get_root_dir(u->testbed);
	for (unsigned i = 0; i < cfg->count; i++) {
		struct usb_dev *dev = &u->devs[i];

		dev->u = u;
		dev->index = i;
		/* Ports of the hub: 1..N (USB allows up to 255 per hub). */
		snprintf(dev->sysname, sizeof(dev->sysname), "%u-1.%u", USB_BUS, i + 1);
		snprintf(dev->syspath, sizeof(dev->syspath), "/sys/devices/%s/2-1/%u-1.%u", SYSFS_ROOT,
			 USB_BUS, i + 1);
		r = emu_dfu_new(&cfg->dfu, cfg->profile, &dev->dfu);
		if (r < 0) {
			emu_usb_stop(u);
			return r;
		}
	}
	u->timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (u->timer < 0) {
		r = -errno;
		emu_usb_stop(u);
		return r;
	}
	u->context = g_main_context_new();
	u->loop = g_main_loop_new(u->context, FALSE);
	snprintf(u->listeners, sizeof(u->listeners), "%s/.h5emu-listeners", u->root);
	if (mkdir(u->listeners, 0700) < 0 && errno != EEXIST)
		u->listeners[0] = '\0';
	u->inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (u->inotify >= 0 && u->listeners[0] &&
	    inotify_add_watch(u->inotify, u->root, IN_CREATE | IN_MOVED_TO) >= 0) {
		u->inotify_source = g_unix_fd_source_new(u->inotify, G_IO_IN);
		g_source_set_callback(u->inotify_source, (GSourceFunc)(void (*)(void))on_inotify, u,
				      NULL);
		g_source_attach(u->inotify_source, u->context);
	}
	u->epoll = epoll_create1(EPOLL_CLOEXEC);
	u->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (u->epoll < 0 || u->wake < 0) {
		r = -errno;
		emu_usb_stop(u);
		return r;
	}
	{
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = EV_KEY(EV_WAKE, 0) };
		struct epoll_event tev = { .events = EPOLLIN, .data.u64 = EV_KEY(EV_TIMER, 0) };

		if (epoll_ctl(u->epoll, EPOLL_CTL_ADD, u->wake, &ev) < 0 ||
		    epoll_ctl(u->epoll, EPOLL_CTL_ADD, u->timer, &tev) < 0) {
			r = -errno;
			emu_usb_stop(u);
			return r;
		}
	}
	u->io_thread = g_thread_new("emu-usb-io", io_thread_main, u);
	u->thread = g_thread_new("emu-usb", usb_thread_main, u);
	r = usb_call(u, 0, call_setup);
	if (r < 0) {
		emu_usb_stop(u);
		return r;
	}
	*ret = u;
	return 0;
}

int emu_usb_write_env(struct emu_usb *u, const char *path)
{
	char tmp[PATH_MAX];
	FILE *f;
	int fd;

	if (!u || !path || strpbrk(u->root, " \t\n"))
		return -EINVAL;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		unlink(tmp);
		return -EIO;
	}
	fprintf(f, "UMOCKDEV_DIR=%s\nLD_PRELOAD=%s\n", u->root, PRELOAD_NAME);
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		unlink(tmp);
		return -EIO;
	}
	return 0;
}

void emu_usb_stop(struct emu_usb *u)
{
	if (!u)
		return;
	if (u->thread) {
		usb_call(u, 0, call_stop);
		g_main_loop_quit(u->loop);
		g_thread_join(u->thread);
	}
	if (u->io_thread) {
		uint64_t one = 1;

		g_rec_mutex_lock(&u->mu);
		u->io_stop = true;
		g_rec_mutex_unlock(&u->mu);
		(void)!write(u->wake, &one, sizeof(one));
		g_thread_join(u->io_thread);
	}
	while (u->clients) {
		struct client *cl = u->clients;

		u->clients = cl->next;
		close(cl->fd);
		g_free(cl);
	}
	g_free(u->out);
	if (u->epoll >= 0)
		close(u->epoll);
	if (u->wake >= 0)
		close(u->wake);
	if (u->timer >= 0)
		close(u->timer);
	if (u->inotify_source) {
		g_source_destroy(u->inotify_source);
		g_source_unref(u->inotify_source);
	}
	if (u->inotify >= 0)
		close(u->inotify);
	for (unsigned i = 0; i < u->count; i++)
		emu_dfu_free(u->devs[i].dfu);
	g_clear_pointer(&u->loop, g_main_loop_unref);
	g_clear_pointer(&u->context, g_main_context_unref);
	g_clear_object(&u->testbed);
	g_free(u->root);
	g_rec_mutex_clear(&u->mu);
	g_free(u);
}

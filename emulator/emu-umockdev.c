/* The umockdev harness: each emulated chip appears to host code as an FTDI USB-serial adapter
 * (sysfs tree, /dev/ttyUSB<n> node, serial ioctls), so unmodified libserialport code runs
 * against h5emu. Contract: emu-port.h.
 *
 * How it fits together
 * - A umockdev testbed (UMOCKDEV_DIR, set in this process's environment) holds, per adapter,
 *   the real kernel layout of a usb-serial device under
 *   /sys/devices/pci0000:00/0000:00:14.0/usb1/:
 *     1-<n+1>                     usb_device (0403:6001, FTDI, USB-Serial, serial, busnum 1,
 *                                 devnum n+2): the physical port directory
 *     1-<n+1>/1-<n+1>:1.0         usb_interface, driver ftdi_sio
 *     1-<n+1>:1.0/ttyUSB<n>       usb-serial port, driver ftdi_sio
 *     ttyUSB<n>/tty/ttyUSB<n>     tty class device (188:<n>), device -> the port above
 *   so /sys/class/tty/ttyUSB<n>/device resolves to .../1-<n+1>:1.0/ttyUSB<n>, whose
 *   grandparent is the port directory, as libserialport and sysfs walkers expect.
 *   With K ports per adapter (emu_umockdev_start_multi) adapter n is interface n % K
 *   (1-<g+1>:1.<n % K>, bInterfaceNumber n % K) of USB device g = n / K, which carries
 *   the serial number <prefix><g> and an FT2232H/FT4232H id; the USB device appears with
 *   its first plugged interface and goes with its last.
 * - The node /dev/ttyUSB<n> is our own PTY: the testbed's dev/ttyUSB<n> is a symlink to the
 *   slave (umockdev's preload turns that into a char device 188:<n>); the master is what
 *   the chip side reads and writes. The harness owns the master fd.
 * - An ioctl handler (UMockdevIoctlBase) per node answers the serial ioctls that client
 *   processes forward through libumockdev-preload. Its GMainContext runs in a thread of its
 *   own, so the emulator's single-threaded poll loop is untouched; every testbed change
 *   (plug, unplug) is also made in that thread.
 *
 * Ioctls answered by the handler (the kernel termios is kept as the host set it):
 *   TCGETS, TCGETS2            the stored termios (PARENB, CSIZE and speeds as set)
 *   TCSETS, TCSETSW, TCSETSF,
 *   TCSETS2, TCSETSW2, TCSETSF2  stored and reported, then declined so that the PTY applies
 *                              them too (raw mode, VMIN/VTIME, flushing really happen)
 *   TIOCMGET                   DTR/RTS as set (no CTS/DSR/DCD/RI wired)
 *   TIOCMSET, TIOCMBIS, TIOCMBIC  DTR/RTS stored and reported
 *   TIOCSBRK, TIOCCBRK         accepted (a PTY has no break)
 *   anything, after unplug     fails with EIO
 * Everything else (FIONREAD, TIOCOUTQ, TCFLSH, TCXONC, TIOCEXCL, TIOCNXCL, TIOCGSERIAL...) is
 * declined: the handler completes it with umockdev's "unhandled" code and the client's preload
 * runs it on the real PTY. Declining by returning FALSE is not an option: umockdev would then
 * answer from an empty ioctl tree (ENOTTY).
 * On open (client connects) DTR and RTS are asserted, as the kernel does for a real port; on
 * the last close with HUPCL they drop.
 *
 * Pitfalls
 * - glibc's tcgetattr()/tcsetattr() make the system call directly, so the preload never sees
 *   them, and a PTY clears PARENB/CSIZE on every set. Clients therefore also preload
 *   libemu-termios-shim.so (emu-termios-shim.c), which re-issues them through ioctl().
 * - libumockdev-preload forwards every read() and write() on the node to the handler first
 *   (two socket round trips, then a usleep(0)); the handler declines them, so the data itself
 *   goes through the PTY, never through the handler. The shim's read() and write() skip that
 *   no-op forward, and its usleep(0) yields instead of sleeping out the timer slack.
 * - The handler runs in the context that was thread-default when the node was attached, so
 *   attaching happens inside the harness thread.
 * - umockdev's add_device refuses a parent path outside a preloaded process; devices are
 *   added with their full sysfs path instead. For the same reason (libudev reads the real
 *   /sys here) umockdev_testbed_uevent() cannot describe our devices, so no uevents are sent:
 *   clients see plug/unplug through the node and sysfs entries appearing and vanishing.
 * - A hung-up tty reads as end of file (0 bytes, poll says readable), as on real hardware;
 *   the clear errors are EIO from write() and from every ioctl (sp_get_signals fails).
 * - Sanitized clients: ASAN_OPTIONS=verify_asan_link_order=0 lets the preloads come first.
 *
 * Starting a client: emu_umockdev_write_env(u, FILE) writes UMOCKDEV_DIR and LD_PRELOAD
 * lines; run `env $(cat FILE) prog ...`. The shim is found at EMU_TERMIOS_SHIM_PATH (compile
 * time), else $EMU_TERMIOS_SHIM, else libemu-termios-shim.so next to this executable, else
 * (an installed h5emu) at EMU_TERMIOS_SHIM_INSTALLED. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <glib.h>
#include <umockdev.h>

#include "emu-port.h"

/* The kernel's struct termios2 (asm-generic/termbits.h); its first part is struct termios,
 * the layout of TCGETS/TCSETS*. Declared here because <asm/termbits.h> clashes with glibc. */
#define EMU_KERNEL_NCCS 19
struct emu_termios2 {
	uint32_t c_iflag;
	uint32_t c_oflag;
	uint32_t c_cflag;
	uint32_t c_lflag;
	uint8_t c_line;
	uint8_t c_cc[EMU_KERNEL_NCCS];
	uint32_t c_ispeed;
	uint32_t c_ospeed;
};
#define EMU_TERMIOS_SIZE offsetof(struct emu_termios2, c_ispeed)

#define EMU_TCGETS2 _IOR('T', 0x2A, struct emu_termios2)
#define EMU_TCSETS2 _IOW('T', 0x2B, struct emu_termios2)
#define EMU_TCSETSW2 _IOW('T', 0x2C, struct emu_termios2)
#define EMU_TCSETSF2 _IOW('T', 0x2D, struct emu_termios2)
#define EMU_BOTHER 0010000

/* libumockdev-preload's marker for "run the original call on the real fd". */
#define EMU_UMOCKDEV_UNHANDLED (-100)

#define EMU_SYSFS_HUB "pci0000:00/0000:00:14.0/usb1"
#define EMU_TTY_MAJOR 188
#define EMU_SHIM_NAME "libemu-termios-shim.so"
#define EMU_PRELOAD_NAME "libumockdev-preload.so.0"

struct emu_umockdev;

struct emu_adapter {
	struct emu_umockdev *u;
	unsigned index;
	char node[32];			/* "/dev/ttyUSB3" */
	char usb_name[160];		/* sysfs name below /sys/devices/ */
	unsigned device;		/* USB device number g (index / ports per adapter) */
	unsigned interface;		/* USB interface on that device */
	bool on_device;			/* holds a reference to its USB device */
	/* On a device's first adapter: the USB device as returned by the testbed, and how
	 * many of its interfaces are plugged. */
	char *usb_syspath;
	unsigned device_users;
	char *iface_syspath;
	char *port_syspath;
	char *tty_syspath;
	UMockdevIoctlBase *handler;
	int master_fd;			/* -1 while unplugged */
	int slave_fd;			/* kept open so a lone client close is no hang-up */
	unsigned generation;		/* bumped by each plug; clients carry theirs */
	unsigned open_clients;
	/* Guarded by emu_umockdev.lock: touched by the harness thread and the API. */
	struct emu_termios2 tio;
	int lines;			/* TIOCM_DTR | TIOCM_RTS */
	struct emu_port_settings reported;
	bool reported_valid;
};

struct emu_umockdev {
	UMockdevTestbed *testbed;
	char *root;
	struct emu_port_ops ops;
	char serial_prefix[64];
	unsigned ports_per_adapter;
	GMainContext *context;
	GMainLoop *loop;
	GThread *thread;
	GMutex lock;
	unsigned count;
	struct emu_adapter adapters[];
};

static const struct {
	uint32_t code;
	uint32_t baud;
} emu_baud_table[] = {
	{ B0, 0 }, { B50, 50 }, { B75, 75 }, { B110, 110 }, { B134, 134 }, { B150, 150 },
	{ B200, 200 }, { B300, 300 }, { B600, 600 }, { B1200, 1200 }, { B1800, 1800 },
	{ B2400, 2400 }, { B4800, 4800 }, { B9600, 9600 }, { B19200, 19200 },
	{ B38400, 38400 }, { B57600, 57600 }, { B115200, 115200 }, { B230400, 230400 },
	{ B460800, 460800 }, { B500000, 500000 }, { B576000, 576000 }, { B921600, 921600 },
	{ B1000000, 1000000 }, { B1152000, 1152000 }, { B1500000, 1500000 },
	{ B2000000, 2000000 }, { B2500000, 2500000 }, { B3000000, 3000000 },
	{ B3500000, 3500000 }, { B4000000, 4000000 },
};

static uint32_t emu_baud_from_code(uint32_t code)
{
	for (size_t i = 0; i < G_N_ELEMENTS(emu_baud_table); i++)
		if (emu_baud_table[i].code == code)
			return emu_baud_table[i].baud;
	return 0;
}

/* Output speed as the kernel would use it: BOTHER means "look at c_ospeed". */
static uint32_t emu_termios_baud(const struct emu_termios2 *t)
{
	uint32_t code = t->c_cflag & (CBAUD | CBAUDEX);

	if (code == EMU_BOTHER)
		return t->c_ospeed;
	return emu_baud_from_code(code);
}

static void emu_settings_from_state(const struct emu_adapter *a, struct emu_port_settings *s)
{
	const struct emu_termios2 *t = &a->tio;

	*s = (struct emu_port_settings) {
		.baud = emu_termios_baud(t),
		.stop_bits = (t->c_cflag & CSTOPB) ? 2 : 1,
		.dtr = a->lines & TIOCM_DTR,
		.rts = a->lines & TIOCM_RTS,
	};
	switch (t->c_cflag & CSIZE) {
	case CS5:
		s->data_bits = 5;
		break;
	case CS6:
		s->data_bits = 6;
		break;
	case CS7:
		s->data_bits = 7;
		break;
	default:
		s->data_bits = 8;
		break;
	}
	if (!(t->c_cflag & PARENB))
		s->parity = 'N';
	else
		s->parity = (t->c_cflag & PARODD) ? 'O' : 'E';
}

/* Tells the owner about the adapter's current settings if they differ from the last report.
 * Called without the lock held, in the harness thread. */
static void emu_adapter_notify(struct emu_adapter *a)
{
	struct emu_umockdev *u = a->u;
	struct emu_port_settings s;
	bool changed;

	g_mutex_lock(&u->lock);
	emu_settings_from_state(a, &s);
	changed = !a->reported_valid || memcmp(&s, &a->reported, sizeof(s)) != 0;
	a->reported = s;
	a->reported_valid = true;
	g_mutex_unlock(&u->lock);

	if (changed && u->ops.settings_changed)
		u->ops.settings_changed(u->ops.user_data, a->index, &s);
}

/* Copies `len` bytes from the client's ioctl argument. Returns 0 or -EFAULT. */
static int emu_client_load(UMockdevIoctlClient *client, void *buf, size_t len)
{
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
	UMockdevIoctlData *d;
	GError *error = NULL;

	d = umockdev_ioctl_data_resolve(arg, 0, len, &error);
	if (!d) {
		g_clear_error(&error);
		return -EFAULT;
	}
	if ((size_t) d->data_len < len) {
		g_object_unref(d);
		return -EFAULT;
	}
	memcpy(buf, d->data, len);
	g_object_unref(d);
	return 0;
}

/* Writes `len` bytes into the client's ioctl argument (sent back on completion). */
static int emu_client_store(UMockdevIoctlClient *client, const void *buf, size_t len)
{
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
	UMockdevIoctlData *d;
	GError *error = NULL;

	d = umockdev_ioctl_data_resolve(arg, 0, len, &error);
	if (!d) {
		g_clear_error(&error);
		return -EFAULT;
	}
	umockdev_ioctl_data_update(d, 0, (guint8 *) buf, (gint) len);
	g_object_unref(d);
	return 0;
}

static void emu_client_fail(UMockdevIoctlClient *client, int r)
{
	umockdev_ioctl_client_complete(client, -1, -r);
}

/* Stores a termios set by the host. `len` is the size of the struct the request carries. */
static int emu_adapter_set_termios(struct emu_adapter *a, UMockdevIoctlClient *client, size_t len)
{
	struct emu_termios2 t;
	uint32_t code;
	int r;

	r = emu_client_load(client, &t, len);
	if (r < 0)
		return r;

	g_mutex_lock(&a->u->lock);
	if (len < sizeof(t)) {
		/* Plain termios: speeds come from the CBAUD code (BOTHER keeps the old value). */
		t.c_ispeed = a->tio.c_ispeed;
		t.c_ospeed = a->tio.c_ospeed;
		code = t.c_cflag & (CBAUD | CBAUDEX);
		if (code != EMU_BOTHER)
			t.c_ispeed = t.c_ospeed = emu_baud_from_code(code);
	}
	a->tio = t;
	if (!(t.c_cflag & (CBAUD | CBAUDEX)))
		a->lines &= ~(TIOCM_DTR | TIOCM_RTS);	/* B0 hangs up, as on a real port */
	g_mutex_unlock(&a->u->lock);
	return 0;
}

static int emu_adapter_get_termios(struct emu_adapter *a, UMockdevIoctlClient *client, size_t len)
{
	struct emu_termios2 t;

	g_mutex_lock(&a->u->lock);
	t = a->tio;
	g_mutex_unlock(&a->u->lock);
	return emu_client_store(client, &t, len);
}

static int emu_adapter_modem(struct emu_adapter *a, UMockdevIoctlClient *client, gulong request)
{
	int bits, r;

	r = emu_client_load(client, &bits, sizeof(bits));
	if (r < 0)
		return r;
	bits &= TIOCM_DTR | TIOCM_RTS;

	g_mutex_lock(&a->u->lock);
	if (request == TIOCMSET)
		a->lines = bits;
	else if (request == TIOCMBIS)
		a->lines |= bits;
	else
		a->lines &= ~bits;
	g_mutex_unlock(&a->u->lock);
	return 0;
}

static gboolean emu_handle_ioctl(UMockdevIoctlBase *handler, UMockdevIoctlClient *client,
				 gpointer user_data)
{
	struct emu_adapter *a = user_data;
	gulong request = umockdev_ioctl_client_get_request(client);
	unsigned generation;
	int lines, r = 0;

	generation = GPOINTER_TO_UINT(g_object_get_data(G_OBJECT(client), "emu-generation"));
	if (a->master_fd < 0 || generation != a->generation) {
		emu_client_fail(client, -EIO);
		return TRUE;
	}

	switch (request) {
	case TCGETS:
		r = emu_adapter_get_termios(a, client, EMU_TERMIOS_SIZE);
		break;
	case EMU_TCGETS2:
		r = emu_adapter_get_termios(a, client, sizeof(struct emu_termios2));
		break;
	case TCSETS:
	case TCSETSW:
	case TCSETSF:
	case EMU_TCSETS2:
	case EMU_TCSETSW2:
	case EMU_TCSETSF2:
		r = emu_adapter_set_termios(a, client, (request == TCSETS || request == TCSETSW ||
							request == TCSETSF) ?
					EMU_TERMIOS_SIZE : sizeof(struct emu_termios2));
		if (r < 0)
			break;
		emu_adapter_notify(a);
		/* The PTY applies it too; only PARENB/CSIZE are lost there, and we keep them. */
		umockdev_ioctl_client_complete(client, EMU_UMOCKDEV_UNHANDLED, 0);
		return TRUE;
	case TIOCMGET:
		g_mutex_lock(&a->u->lock);
		lines = a->lines;
		g_mutex_unlock(&a->u->lock);
		r = emu_client_store(client, &lines, sizeof(lines));
		break;
	case TIOCMSET:
	case TIOCMBIS:
	case TIOCMBIC:
		r = emu_adapter_modem(a, client, request);
		if (r >= 0)
			emu_adapter_notify(a);
		break;
	case TIOCSBRK:
	case TIOCCBRK:
		break;
	default:
		umockdev_ioctl_client_complete(client, EMU_UMOCKDEV_UNHANDLED, 0);
		return TRUE;
	}

	if (r < 0)
		emu_client_fail(client, r);
	else
		umockdev_ioctl_client_complete(client, 0, 0);
	return TRUE;
}

static void emu_client_closed(GObject *object, GParamSpec *pspec, gpointer user_data)
{
	struct emu_adapter *a = user_data;
	UMockdevIoctlClient *client = UMOCKDEV_IOCTL_CLIENT(object);
	unsigned generation;

	if (umockdev_ioctl_client_get_connected(client))
		return;
	/* notify::connected may fire more than once; count each client once. */
	if (g_object_get_data(object, "emu-closed"))
		return;
	g_object_set_data(object, "emu-closed", GUINT_TO_POINTER(1));

	generation = GPOINTER_TO_UINT(g_object_get_data(object, "emu-generation"));
	if (generation != a->generation || a->open_clients == 0)
		return;
	if (--a->open_clients > 0)
		return;

	g_mutex_lock(&a->u->lock);
	if (a->tio.c_cflag & HUPCL)
		a->lines &= ~(TIOCM_DTR | TIOCM_RTS);
	g_mutex_unlock(&a->u->lock);
	emu_adapter_notify(a);
}

static void emu_client_connected(UMockdevIoctlBase *handler, UMockdevIoctlClient *client,
				 gpointer user_data)
{
	struct emu_adapter *a = user_data;

	g_object_set_data(G_OBJECT(client), "emu-generation", GUINT_TO_POINTER(a->generation));
	if (a->master_fd < 0)
		return;
	g_signal_connect(client, "notify::connected", G_CALLBACK(emu_client_closed), a);

	/* Opening a real port raises DTR and RTS unless the speed is B0. */
	if (a->open_clients++ == 0) {
		g_mutex_lock(&a->u->lock);
		if (a->tio.c_cflag & (CBAUD | CBAUDEX))
			a->lines |= TIOCM_DTR | TIOCM_RTS;
		g_mutex_unlock(&a->u->lock);
		emu_adapter_notify(a);
	}
}

/* Runs a function in the harness thread and waits for its result. */
struct emu_call {
	int (*fn)(struct emu_adapter *a, void *data);
	struct emu_adapter *a;
	void *data;
	int result;
	bool done;
	GMutex mutex;
	GCond cond;
};

static gboolean emu_call_dispatch(gpointer user_data)
{
	struct emu_call *c = user_data;
	int r = c->fn(c->a, c->data);

	g_mutex_lock(&c->mutex);
	c->result = r;
	c->done = true;
	g_cond_signal(&c->cond);
	g_mutex_unlock(&c->mutex);
	return G_SOURCE_REMOVE;
}

static int emu_call_in_thread(struct emu_adapter *a, int (*fn)(struct emu_adapter *, void *),
			      void *data)
{
	struct emu_call c = { .fn = fn, .a = a, .data = data };

	g_mutex_init(&c.mutex);
	g_cond_init(&c.cond);
	g_main_context_invoke(a->u->context, emu_call_dispatch, &c);
	g_mutex_lock(&c.mutex);
	while (!c.done)
		g_cond_wait(&c.cond, &c.mutex);
	g_mutex_unlock(&c.mutex);
	g_mutex_clear(&c.mutex);
	g_cond_clear(&c.cond);
	return c.result;
}

/* Opens a PTY pair in raw mode at 9600 8N1, the state of a freshly plugged FTDI adapter. */
static int emu_pty_open(int *ret_master, int *ret_slave, char *ret_name, size_t name_size)
{
	struct termios t;
	int master, slave;

	master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		return -errno;
	if (grantpt(master) < 0 || unlockpt(master) < 0 ||
	    ptsname_r(master, ret_name, name_size) != 0)
		goto fail;
	slave = open(ret_name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		goto fail;
	/* On a PTY master, termios requests act on the slave. */
	if (tcgetattr(master, &t) < 0) {
		close(slave);
		goto fail;
	}
	cfmakeraw(&t);
	t.c_cflag |= CREAD | CLOCAL | HUPCL;
	cfsetspeed(&t, B9600);
	if (tcsetattr(master, TCSANOW, &t) < 0) {
		close(slave);
		goto fail;
	}
	*ret_master = master;
	*ret_slave = slave;
	return 0;
fail:
	{
		int r = -errno;

		close(master);
		return r < 0 ? r : -EIO;
	}
}

static char *emu_add_device(struct emu_umockdev *u, const char *subsystem, const char *name,
			    char **attributes, char **properties)
{
	return umockdev_testbed_add_devicev(u->testbed, subsystem, name, NULL, attributes,
					    properties);
}

/* The first adapter of a's USB device, which owns the device's sysfs entry. */
static struct emu_adapter *emu_adapter_device(struct emu_adapter *a)
{
	return &a->u->adapters[a->device * a->u->ports_per_adapter];
}

/* Adds a's USB device unless another of its interfaces is plugged already. */
static int emu_device_get(struct emu_adapter *a)
{
	struct emu_umockdev *u = a->u;
	struct emu_adapter *d = emu_adapter_device(a);
	char serial[96], busnum[8] = "1", devnum[16];
	const char *pid = "6001", *product = "USB-Serial";

	if (d->device_users > 0) {
		d->device_users++;
		a->on_device = true;
		return 0;
	}
	snprintf(serial, sizeof(serial), "%s%04u", u->serial_prefix, a->device);
	snprintf(devnum, sizeof(devnum), "%u", a->device + 2);
	if (u->ports_per_adapter == 2) {
		pid = "6010";
		product = "Dual RS232-HS";
	} else if (u->ports_per_adapter > 2) {
		pid = "6011";
		product = "Quad RS232-HS";
	}
	{
		char *attrs[] = { "idVendor", "0403", "idProduct", (char *) pid,
				  "manufacturer", "FTDI", "product", (char *) product,
				  "serial", serial, "busnum", busnum, "devnum", devnum,
				  "bDeviceClass", "00", "speed", "12", NULL };
		char *props[] = { "DEVTYPE", "usb_device", "DRIVER", "usb", "BUSNUM", "001",
				  "ID_VENDOR_ID", "0403", "ID_MODEL_ID", (char *) pid,
				  "ID_SERIAL_SHORT", serial, NULL };

		d->usb_syspath = emu_add_device(u, "usb", a->usb_name, attrs, props);
	}
	if (!d->usb_syspath)
		return -EIO;
	d->device_users = 1;
	a->on_device = true;
	return 0;
}

/* Drops a's hold on its USB device; the last interface removes it. */
static void emu_device_put(struct emu_adapter *a)
{
	struct emu_adapter *d = emu_adapter_device(a);

	if (!a->on_device)
		return;
	a->on_device = false;
	if (--d->device_users > 0)
		return;
	umockdev_testbed_remove_device(a->u->testbed, d->usb_syspath);
	g_clear_pointer(&d->usb_syspath, g_free);
}

static int emu_adapter_plug_in_thread(struct emu_adapter *a, void *data)
{
	struct emu_umockdev *u = a->u;
	char name[256], minor[16], dev[32], iface[8];
	char ttyname[32], ptyname[64], nodepath[PATH_MAX];
	int master = -1, slave = -1, r;
	GError *error = NULL;

	snprintf(ttyname, sizeof(ttyname), "ttyUSB%u", a->index);
	snprintf(minor, sizeof(minor), "%u", a->index);
	snprintf(dev, sizeof(dev), "%u:%u", EMU_TTY_MAJOR, a->index);
	snprintf(iface, sizeof(iface), "%02x", a->interface);

	r = emu_pty_open(&master, &slave, ptyname, sizeof(ptyname));
	if (r < 0)
		return r;

	r = emu_device_get(a);
	if (r < 0)
		goto fail;
	snprintf(name, sizeof(name), "%s/%s:1.%u", a->usb_name,
		 a->usb_name + strlen(EMU_SYSFS_HUB "/"), a->interface);
	{
		char *attrs[] = { "bInterfaceNumber", iface, "bInterfaceClass", "ff", NULL };
		char *props[] = { "DEVTYPE", "usb_interface", "DRIVER", "ftdi_sio", NULL };

		a->iface_syspath = emu_add_device(u, "usb", name, attrs, props);
	}
	g_strlcat(name, "/", sizeof(name));
	g_strlcat(name, ttyname, sizeof(name));
	{
		char *attrs[] = { "port_number", "0", NULL };
		/* ftdi_sio numbers each interface's single port 0. */
		char *props[] = { "DRIVER", "ftdi_sio", NULL };

		a->port_syspath = emu_add_device(u, "usb-serial", name, attrs, props);
	}
	g_strlcat(name, "/tty/", sizeof(name));
	g_strlcat(name, ttyname, sizeof(name));
	{
		char devname[48];
		char *attrs[] = { "dev", dev, NULL };
		char *props[] = { "DEVNAME", devname, "MAJOR", "188", "MINOR", minor, NULL };

		snprintf(devname, sizeof(devname), "/dev/%s", ttyname);
		a->tty_syspath = emu_add_device(u, "tty", name, attrs, props);
	}
	if (!a->iface_syspath || !a->port_syspath || !a->tty_syspath) {
		r = -EIO;
		goto fail;
	}
	snprintf(name, sizeof(name), "../../../%s", ttyname);
	umockdev_testbed_set_attribute_link(u->testbed, a->tty_syspath, "device", name);
	umockdev_testbed_set_attribute_link(u->testbed, a->iface_syspath, "driver",
					    "../../../../../../bus/usb/drivers/ftdi_sio");
	umockdev_testbed_set_attribute_link(u->testbed, a->port_syspath, "driver",
					    "../../../../../../../bus/usb-serial/drivers/ftdi_sio");

	/* The node: a symlink to the PTY slave, which the preload presents as 188:<n>. */
	snprintf(nodepath, sizeof(nodepath), "%s%s", u->root, a->node);
	(void) unlink(nodepath);
	if (symlink(ptyname, nodepath) < 0) {
		r = -errno;
		goto fail;
	}

	a->master_fd = master;
	a->slave_fd = slave;
	a->generation++;
	a->open_clients = 0;
	g_mutex_lock(&u->lock);
	{
		struct termios t;

		/* Start from the kernel's view of the fresh slave. */
		memset(&a->tio, 0, sizeof(a->tio));
		if (tcgetattr(master, &t) == 0) {
			a->tio.c_iflag = t.c_iflag;
			a->tio.c_oflag = t.c_oflag;
			a->tio.c_cflag = t.c_cflag;
			a->tio.c_lflag = t.c_lflag;
			a->tio.c_line = t.c_line;
			memcpy(a->tio.c_cc, t.c_cc, EMU_KERNEL_NCCS);
		}
		a->tio.c_ispeed = a->tio.c_ospeed = emu_termios_baud(&a->tio);
		a->lines = 0;
	}
	g_mutex_unlock(&u->lock);

	if (!umockdev_testbed_attach_ioctl(u->testbed, a->node, a->handler, &error)) {
		g_clear_error(&error);
		a->master_fd = -1;
		a->slave_fd = -1;
		(void) unlink(nodepath);
		r = -EIO;
		goto fail;
	}

	emu_adapter_notify(a);
	return 0;

fail:
	if (a->tty_syspath)
		umockdev_testbed_remove_device(u->testbed, a->tty_syspath);
	if (a->port_syspath)
		umockdev_testbed_remove_device(u->testbed, a->port_syspath);
	if (a->iface_syspath)
		umockdev_testbed_remove_device(u->testbed, a->iface_syspath);
	emu_device_put(a);
	g_clear_pointer(&a->iface_syspath, g_free);
	g_clear_pointer(&a->port_syspath, g_free);
	g_clear_pointer(&a->tty_syspath, g_free);
	close(master);
	close(slave);
	return r;
}

static int emu_adapter_unplug_in_thread(struct emu_adapter *a, void *data)
{
	struct emu_umockdev *u = a->u;
	char path[PATH_MAX];
	GError *error = NULL;

	if (a->master_fd < 0)
		return -ENODEV;

	/* Hang up first, so that a client which sees the node vanish already gets errors.
	 * Closing the master hangs up the slave: open clients get EIO and POLLHUP, and the
	 * handler (this thread) answers their ioctls with EIO from now on. */
	close(a->slave_fd);
	close(a->master_fd);
	a->slave_fd = -1;
	a->master_fd = -1;
	a->open_clients = 0;

	if (!umockdev_testbed_detach_ioctl(u->testbed, a->node, &error))
		g_clear_error(&error);
	/* The listening socket file outlives the detach; a later attach must bind it again. */
	snprintf(path, sizeof(path), "%s/ioctl%s", u->root, a->node);
	(void) unlink(path);

	/* Children first, one by one: remove_device drops the class and bus links and the node
	 * only of the device it is given, and a later plug must recreate them all. */
	umockdev_testbed_remove_device(u->testbed, a->tty_syspath);
	umockdev_testbed_remove_device(u->testbed, a->port_syspath);
	umockdev_testbed_remove_device(u->testbed, a->iface_syspath);
	emu_device_put(a);
	snprintf(path, sizeof(path), "%s%s", u->root, a->node);
	(void) unlink(path);
	g_clear_pointer(&a->iface_syspath, g_free);
	g_clear_pointer(&a->port_syspath, g_free);
	g_clear_pointer(&a->tty_syspath, g_free);

	g_mutex_lock(&u->lock);
	a->lines = 0;
	g_mutex_unlock(&u->lock);
	emu_adapter_notify(a);
	return 0;
}

static gpointer emu_thread_main(gpointer user_data)
{
	struct emu_umockdev *u = user_data;

	g_main_context_push_thread_default(u->context);
	g_main_loop_run(u->loop);
	g_main_context_pop_thread_default(u->context);
	return NULL;
}

int emu_umockdev_start(unsigned count, const char *serial_prefix, const struct emu_port_ops *ops,
		       int *ret_master_fds, struct emu_umockdev **ret)
{
	return emu_umockdev_start_multi(count, 1, serial_prefix, ops, ret_master_fds, ret);
}

int emu_umockdev_start_multi(unsigned count, unsigned ports_per_adapter,
			     const char *serial_prefix, const struct emu_port_ops *ops,
			     int *ret_master_fds, struct emu_umockdev **ret)
{
	struct emu_umockdev *u;
	unsigned i;
	int r;

	if (count == 0 || count > 64 || ports_per_adapter == 0 || ports_per_adapter > 8 ||
	    !serial_prefix || !ops || !ret_master_fds || !ret)
		return -EINVAL;
	if (strlen(serial_prefix) >= sizeof(u->serial_prefix))
		return -EINVAL;

	u = g_malloc0(sizeof(*u) + count * sizeof(u->adapters[0]));
	u->count = count;
	u->ports_per_adapter = ports_per_adapter;
	u->ops = *ops;
	g_strlcpy(u->serial_prefix, serial_prefix, sizeof(u->serial_prefix));
	g_mutex_init(&u->lock);

	/* Sets UMOCKDEV_DIR; done before any thread of ours exists. */
	u->testbed = umockdev_testbed_new();
	u->root = umockdev_testbed_get_root_dir(u->testbed);

	for (i = 0; i < count; i++) {
		struct emu_adapter *a = &u->adapters[i];

		a->u = u;
		a->index = i;
		a->device = i / ports_per_adapter;
		a->interface = i % ports_per_adapter;
		a->master_fd = -1;
		a->slave_fd = -1;
		snprintf(a->node, sizeof(a->node), "/dev/ttyUSB%u", i);
		snprintf(a->usb_name, sizeof(a->usb_name), EMU_SYSFS_HUB "/1-%u", a->device + 1);
		a->handler = umockdev_ioctl_base_new();
		g_signal_connect(a->handler, "handle-ioctl", G_CALLBACK(emu_handle_ioctl), a);
		g_signal_connect(a->handler, "client-connected", G_CALLBACK(emu_client_connected),
				 a);
	}
	{
		char devdir[PATH_MAX];

		snprintf(devdir, sizeof(devdir), "%s/dev", u->root);
		if (g_mkdir_with_parents(devdir, 0755) < 0) {
			r = -errno;
			emu_umockdev_stop(u);
			return r;
		}
	}

	u->context = g_main_context_new();
	u->loop = g_main_loop_new(u->context, FALSE);
	u->thread = g_thread_new("emu-umockdev", emu_thread_main, u);

	for (i = 0; i < count; i++) {
		r = emu_call_in_thread(&u->adapters[i], emu_adapter_plug_in_thread, NULL);
		if (r < 0) {
			emu_umockdev_stop(u);
			return r;
		}
	}
	for (i = 0; i < count; i++)
		ret_master_fds[i] = u->adapters[i].master_fd;
	*ret = u;
	return 0;
}

/* Path of the termios shim for client processes. */
static int emu_shim_path(char *buf, size_t size)
{
	const char *env = getenv("EMU_TERMIOS_SHIM");
	char exe[PATH_MAX];
	ssize_t n;
	char *slash;

#ifdef EMU_TERMIOS_SHIM_PATH
	if (!env)
		env = EMU_TERMIOS_SHIM_PATH;
#endif
	if (env && *env) {
		if (strlen(env) >= size)
			return -ENAMETOOLONG;
		g_strlcpy(buf, env, size);
	} else {
		n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (n < 0)
			return -errno;
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (!slash)
			return -ENOENT;
		*slash = '\0';
		if ((size_t) snprintf(buf, size, "%s/%s", exe, EMU_SHIM_NAME) >= size)
			return -ENAMETOOLONG;
#ifdef EMU_TERMIOS_SHIM_INSTALLED
		/* An installed h5emu (meson -Demulator=true) finds it in the library folder. */
		if (access(buf, R_OK) < 0) {
			if (strlen(EMU_TERMIOS_SHIM_INSTALLED) >= size)
				return -ENAMETOOLONG;
			g_strlcpy(buf, EMU_TERMIOS_SHIM_INSTALLED, size);
		}
#endif
	}
	if (access(buf, R_OK) < 0)
		return -errno;
	return 0;
}

int emu_umockdev_write_env(struct emu_umockdev *u, const char *path)
{
	char shim[PATH_MAX], tmp[PATH_MAX];
	FILE *f;
	int r, fd;

	if (!u || !path)
		return -EINVAL;
	r = emu_shim_path(shim, sizeof(shim));
	if (r < 0)
		return r;
	/* The file is word-split by `env $(cat FILE)`: no blanks allowed in the values. */
	if (strpbrk(shim, " \t\n") || strpbrk(u->root, " \t\n"))
		return -EINVAL;

	if ((size_t) snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		r = -errno;
		close(fd);
		unlink(tmp);
		return r;
	}
	fprintf(f, "UMOCKDEV_DIR=%s\nLD_PRELOAD=%s:%s\n", u->root, shim, EMU_PRELOAD_NAME);
	if (fflush(f) != 0 || ferror(f)) {
		r = -EIO;
		fclose(f);
		unlink(tmp);
		return r;
	}
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		return r;
	}
	return 0;
}

int emu_umockdev_unplug(struct emu_umockdev *u, unsigned index)
{
	if (!u || index >= u->count)
		return -EINVAL;
	return emu_call_in_thread(&u->adapters[index], emu_adapter_unplug_in_thread, NULL);
}

int emu_umockdev_plug(struct emu_umockdev *u, unsigned index, int *ret_master_fd)
{
	int r;

	if (!u || index >= u->count || !ret_master_fd)
		return -EINVAL;
	if (u->adapters[index].master_fd >= 0)
		return -EBUSY;
	r = emu_call_in_thread(&u->adapters[index], emu_adapter_plug_in_thread, NULL);
	if (r < 0)
		return r;
	*ret_master_fd = u->adapters[index].master_fd;
	return 0;
}

const char *emu_umockdev_node(struct emu_umockdev *u, unsigned index)
{
	if (!u || index >= u->count)
		return NULL;
	return u->adapters[index].node;
}

void *emu_umockdev_testbed(struct emu_umockdev *u)
{
	return u ? u->testbed : NULL;
}

void emu_umockdev_stop(struct emu_umockdev *u)
{
	unsigned i;

	if (!u)
		return;
	if (u->thread) {
		for (i = 0; i < u->count; i++)
			if (u->adapters[i].master_fd >= 0)
				(void) emu_call_in_thread(&u->adapters[i],
							  emu_adapter_unplug_in_thread, NULL);
		g_main_loop_quit(u->loop);
		g_thread_join(u->thread);
	}
	for (i = 0; i < u->count; i++)
		g_clear_object(&u->adapters[i].handler);
	g_clear_pointer(&u->loop, g_main_loop_unref);
	g_clear_pointer(&u->context, g_main_context_unref);
	/* Dropping the testbed removes its directory. */
	g_clear_object(&u->testbed);
	g_free(u->root);
	g_mutex_clear(&u->lock);
	g_free(u);
}

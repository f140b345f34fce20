/* h5emu: emulates N STM32H5 chips in their system bootloader, each behind a terminal (a
 * plain PTY, or an emulated USB-serial adapter under umockdev). One single-threaded epoll
 * loop; with --baud every byte gets its own arrival time on the wire, and a timerfd per slot
 * wakes the loop when an answer byte is due or a byte that can get an answer arrives (the
 * middle of a frame is fed in one batch). See docs/emulator.md. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "an3155-wire.h"
#include "emu-internal.h"
#include "emu-port.h"
#ifdef HAVE_EMU_USB
#include "emu-usb.h"
#endif

#define RXQ_CAP 65536u
#define MAX_SLOTS 256u
#define MAX_CLIENTS 8
#define CTL_LINE_MAX 512
#define NS_PER_MS 1000000ull
#define HUP_RETRY_NS (20 * NS_PER_MS)

enum ev_type {
	EV_SIGNAL,
	EV_SETTINGS,
	EV_CONTROL,
	EV_CLIENT,
	EV_MASTER,
	EV_TIMER,
	EV_USB,
};

struct ev {
	enum ev_type type;
	unsigned idx;
};

struct rx_item {
	uint64_t t;
	uint8_t b;
};

struct tx_item {
	struct emu_tx tx;
	uint64_t t;	/* when the chip produced it */
};

struct slot {
	unsigned idx;
	struct ev ev_master, ev_timer;
	int master, slave_hold, timer;
	bool registered;
	uint32_t registered_events;
	bool hup;
	uint64_t hup_retry_at;
	char link[PATH_MAX];

	struct emu_chip *chip;
	unsigned next_in_queue;	/* chips of this slot already inserted */

	struct rx_item *rx;
	size_t rx_head, rx_len;
	uint64_t rx_last;	/* arrival time of the last byte received */
	uint64_t last_host_activity;
	/* The host talked to the chip since its product state left Open (it came back after
	 * FINALIZE's reset to check the result): only then does --auto-swap count from the
	 * last activity; before, it waits AUTO_SWAP_UNSEEN_MS, so a host slowed down between
	 * FINALIZE and its check still meets the chip it installed. */
	bool host_after_close;
	/* UART: a host byte came after the close; it counts (host_after_close) once the chip
	 * answers, since a byte sent while the chip still resets is lost and the host will
	 * offer another after its timeout. */
	bool host_asked_after_close;

	struct tx_item *tx;
	size_t tx_head, tx_len, tx_cap;
	uint64_t tx_busy;	/* when the last byte sent has left the wire */
	uint8_t out[4096];
	size_t out_len;

	struct emu_port_settings settings;
	bool settings_seen;
	bool in_reset;		/* DTR asserted (--require-entry) */

	bool usb_poke;		/* DFU: the host sent requests; guarded by chip_lock */
};

struct client {
	struct ev ev;
	int fd;
	char buf[CTL_LINE_MAX];
	size_t len;
};

static struct {
	unsigned count, per_slot;
	const char *dir;
	const struct emu_profile *prof;
	uint32_t baud;
	uint64_t byte_ns;	/* 11 bit times, 0 without --baud */
	char *state_dir;
	bool temp_state;
	bool umockdev;
	unsigned ports_per_adapter;	/* --umockdev: slots per emulated USB adapter */
	bool require_entry;
	uint32_t ram_buffer;
	const char *ca_key, *global_key;
	bool verbose;
	uint64_t auto_swap_ms;
	bool early_swap;	/* --early-swap: the swap does not wait for the host's check */
	uint64_t seed;
	struct emu_faults faults;
	struct emu_special_ops special;
	bool have_special;

	int epfd, sigfd, setfd, ctlfd;
	struct ev ev_sig, ev_set, ev_ctl;
	struct slot *slots;
	struct client clients[MAX_CLIENTS];
	char ctl_path[PATH_MAX];

	pthread_mutex_t set_lock;
	struct emu_port_settings *pending;
	bool *pending_dirty;
	bool any_pending;

	struct emu_umockdev *um;
	bool quit;

	/* Transports: the UART (terminals) and USB DFU (emu-usb.c). */
	bool uart, dfu;
	uint16_t dfu_transfer;
	uint32_t reenumerate_ms;
	bool flash_timing_set;
	uint64_t prog_unit_ns, erase_sector_ns, erase_bank_ns;
	struct emu_usb *usb;
	struct emu_usb_fault *usb_faults;
	size_t n_usb_faults;
	/* The chip model is shared with the USB harness thread: held by the loop except while
	 * it waits for events or for the harness. */
	pthread_mutex_t chip_lock;
	int usbfd;
	struct ev ev_usb;
} E = {
	.uart = true,
	.dfu_transfer = 2048,
	.reenumerate_ms = 20,
	.chip_lock = PTHREAD_MUTEX_INITIALIZER,
	.usbfd = -1,
	.per_slot = 1,
	.ports_per_adapter = 1,
	.ram_buffer = 64 * 1024,
	.epfd = -1,
	.sigfd = -1,
	.setfd = -1,
	.ctlfd = -1,
	.set_lock = PTHREAD_MUTEX_INITIALIZER,
};

#ifdef HAVE_EMU_UMOCKDEV
#define UMOCKDEV_AVAILABLE true
#else
#define UMOCKDEV_AVAILABLE false
#endif
#ifdef HAVE_EMU_USB
#define USB_AVAILABLE true
#else
#define USB_AVAILABLE false
#endif

static void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_msg(const char *fmt, ...)
{
	va_list ap;

	fputs("h5emu: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

#define log_debug(...)                        \
	do {                                  \
		if (E.verbose)                \
			log_msg(__VA_ARGS__); \
	} while (0)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *mode_name(enum emu_mode m)
{
	switch (m) {
	case EMU_MODE_BOOTLOADER:
		return "bootloader";
	case EMU_MODE_APP:
		return "application";
	case EMU_MODE_RESET:
		return "reset";
	}
	return "?";
}

/* --- USB DFU --- */

#ifdef HAVE_EMU_USB
/* Runs a harness call from the loop: the harness thread may need the chip lock meanwhile. */
static int usb_sync(int (*fn)(struct emu_usb *, unsigned), unsigned idx)
{
	int r;

	if (!E.usb)
		return 0;
	pthread_mutex_unlock(&E.chip_lock);
	r = fn(E.usb, idx);
	pthread_mutex_lock(&E.chip_lock);
	return r;
}

static void usb_lock(void *user_data)
{
	(void)user_data;
	pthread_mutex_lock(&E.chip_lock);
}

static void usb_unlock(void *user_data)
{
	(void)user_data;
	pthread_mutex_unlock(&E.chip_lock);
}
#endif

/* --- epoll plumbing --- */

static int ep_add(int fd, uint32_t events, struct ev *ev)
{
	struct epoll_event e = { .events = events, .data.ptr = ev };

	return epoll_ctl(E.epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

static void slot_update_events(struct slot *s)
{
	uint32_t want = 0;
	struct epoll_event e;

	if (s->master >= 0 && !s->hup) {
		if (s->rx_len < RXQ_CAP)
			want |= EPOLLIN;
		if (s->out_len > 0)
			want |= EPOLLOUT;
	}
	if (s->registered && (want == 0 || s->master < 0)) {
		if (s->master >= 0)
			epoll_ctl(E.epfd, EPOLL_CTL_DEL, s->master, NULL);
		s->registered = false;
	}
	if (want == 0 || s->master < 0)
		return;
	e = (struct epoll_event){ .events = want, .data.ptr = &s->ev_master };
	if (!s->registered) {
		if (epoll_ctl(E.epfd, EPOLL_CTL_ADD, s->master, &e) == 0) {
			s->registered = true;
			s->registered_events = want;
		}
	} else if (s->registered_events != want) {
		if (epoll_ctl(E.epfd, EPOLL_CTL_MOD, s->master, &e) == 0)
			s->registered_events = want;
	}
}

/* --- Chips in slots --- */

static int state_chip_dir(unsigned global, char *buf, size_t len)
{
	if (snprintf(buf, len, "%s/chip%u", E.state_dir, global) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

static enum emu_mode slot_boot_mode(const struct slot *s)
{
	if (!E.require_entry)
		return EMU_MODE_BOOTLOADER;
	if (s->in_reset)
		return EMU_MODE_RESET;
	return s->settings.rts ? EMU_MODE_BOOTLOADER : EMU_MODE_APP;
}

static void slot_remove_chip(struct slot *s)
{
	int r;

	if (!s->chip)
		return;
#ifdef HAVE_EMU_OSFI
	/* Power off first: a session in progress fails and its areas are erased, then the
	 * memory is saved as the chip will find it at the next power-up. */
	if (E.have_special)
		emu_osfi_detach(s->chip);
#endif
	r = emu_chip_persist(s->chip);
	if (r < 0)
		log_msg("slot %u: cannot save chip %u state in %s: %s", s->idx,
			emu_chip_index(s->chip), emu_chip_state_dir(s->chip), strerror(-r));
	log_debug("slot %u: chip %u removed", s->idx, emu_chip_index(s->chip));
	s->chip = emu_chip_free(s->chip);
	/* Whatever the removed chip still had to say is lost with it. */
	s->tx_head = s->tx_len = 0;
}

static int slot_insert_chip(struct slot *s)
{
	struct emu_chip_params p = {
		.profile = E.prof,
		.seed = E.seed,
		.faults = &E.faults,
		.special = E.have_special ? &E.special : NULL,
	};
	char dir[PATH_MAX];
	int r;

	if (s->chip)
		return -EBUSY;
	if (s->next_in_queue >= E.per_slot)
		return -ENOENT;
	p.index = s->idx * E.per_slot + s->next_in_queue;
	r = state_chip_dir(p.index, dir, sizeof(dir));
	if (r < 0)
		return r;
	p.state_dir = dir;
	r = emu_chip_new(&p, &s->chip);
	if (r < 0) {
		log_msg("slot %u: cannot create chip %u from %s: %s", s->idx, p.index, dir,
			strerror(-r));
		return r;
	}
#ifdef HAVE_EMU_OSFI
	if (E.have_special) {
		struct emu_osfi_config cfg = {
			.ca_key_path = E.ca_key,
			.global_key_path = E.global_key,
			.ram_buffer = E.ram_buffer,
		};

		r = emu_osfi_attach(s->chip, &cfg);
		if (r < 0) {
			log_msg("slot %u: chip %u: OSFI identity in %s failed: %s", s->idx, p.index,
				dir, strerror(-r));
			s->chip = emu_chip_free(s->chip);
			return r;
		}
	}
#endif
	s->next_in_queue++;
	emu_chip_set_reset_mode(s->chip, slot_boot_mode(s) == EMU_MODE_APP ? EMU_MODE_APP
									     : EMU_MODE_BOOTLOADER);
	emu_chip_reset(s->chip, slot_boot_mode(s));
	s->last_host_activity = now_ns();
	s->host_after_close = false;
	s->host_asked_after_close = false;
	log_debug("slot %u: chip %u inserted (%s)", s->idx, p.index,
		  mode_name(emu_chip_mode(s->chip)));
	return 0;
}

static void slot_host_activity(struct slot *s, uint64_t now, bool answered);

#ifdef HAVE_EMU_USB
/* Harness callbacks, called with chip_lock held. */
static struct emu_chip *usb_chip(void *user_data, unsigned index)
{
	(void)user_data;
	return index < E.count ? E.slots[index].chip : NULL;
}

static void usb_chip_reset(void *user_data, unsigned index)
{
	struct slot *s = &E.slots[index];

	(void)user_data;
	if (index >= E.count || !s->chip)
		return;
	log_debug("slot %u: chip %u resets (USB)", s->idx, emu_chip_index(s->chip));
	emu_chip_reset(s->chip, slot_boot_mode(s));
	/* The host's status polls of FINALIZE came before this reset: only a request to the
	 * device that enumerates next is the host coming back (for --auto-swap). */
	s->last_host_activity = now_ns();
	s->host_after_close = false;
	s->host_asked_after_close = false;
}

static void usb_activity(void *user_data, unsigned index)
{
	uint64_t one = 1;

	(void)user_data;
	if (index >= E.count)
		return;
	slot_host_activity(&E.slots[index], now_ns(), true);
	/* The loop only needs to hear of it for --auto-swap (the swap deadline follows the
	 * host's activity); waking it for every request costs CPU for nothing otherwise. */
	if (!E.auto_swap_ms)
		return;
	if (!E.slots[index].usb_poke) {
		E.slots[index].usb_poke = true;
		(void)!write(E.usbfd, &one, sizeof(one));
	}
}
#endif

/* --- Terminals --- */

static int update_link(struct slot *s, const char *target)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", s->link) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	if (symlink(target, tmp) < 0)
		return -errno;
	if (rename(tmp, s->link) < 0) {
		int r = -errno;

		unlink(tmp);
		return r;
	}
	return 0;
}

static int pty_open(int *ret_master, int *ret_slave, char *name, size_t name_len)
{
	struct termios t;
	int m, sl;

	m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (m < 0)
		return -errno;
	if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, name_len) != 0)
		goto fail;
	/* Holding the slave open keeps the master readable when no host has it open. */
	sl = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (sl < 0)
		goto fail;
	if (tcgetattr(sl, &t) == 0) {
		cfmakeraw(&t);
		cfsetspeed(&t, B115200);
		tcsetattr(sl, TCSANOW, &t);
	}
	*ret_master = m;
	*ret_slave = sl;
	return 0;
fail:
	{
		int r = -errno;

		close(m);
		return r ? r : -EIO;
	}
}

static int slot_plug(struct slot *s)
{
	char name[128];
	int r;

	if (s->master >= 0)
		return -EALREADY;
	if (E.umockdev) {
#ifdef HAVE_EMU_UMOCKDEV
		r = emu_umockdev_plug(E.um, s->idx, &s->master);
		if (r < 0)
			return r;
		r = update_link(s, emu_umockdev_node(E.um, s->idx));
#else
		return -ENOTSUP;
#endif
	} else {
		r = pty_open(&s->master, &s->slave_hold, name, sizeof(name));
		if (r < 0)
			return r;
		r = update_link(s, name);
	}
	if (r < 0)
		return r;
	s->hup = false;
	s->rx_head = s->rx_len = 0;
	s->out_len = 0;
	s->tx_head = s->tx_len = 0;
	/* The fixture powers the chip from the adapter: it boots afresh. */
	if (s->chip)
		emu_chip_reset(s->chip, slot_boot_mode(s));
	slot_update_events(s);
	log_debug("slot %u: plugged", s->idx);
	return 0;
}

static void slot_unplug(struct slot *s)
{
	if (s->master < 0)
		return;
	if (s->registered)
		epoll_ctl(E.epfd, EPOLL_CTL_DEL, s->master, NULL);
	s->registered = false;
	if (E.umockdev) {
#ifdef HAVE_EMU_UMOCKDEV
		/* The harness owns the master: unplugging closes it. */
		int r = emu_umockdev_unplug(E.um, s->idx);

		if (r < 0)
			log_msg("slot %u: umockdev unplug failed: %s", s->idx, strerror(-r));
#endif
	} else {
		close(s->master);
	}
	s->master = -1;
	if (s->slave_hold >= 0)
		close(s->slave_hold);
	s->slave_hold = -1;
	unlink(s->link);
	s->rx_head = s->rx_len = 0;
	s->tx_head = s->tx_len = 0;
	s->out_len = 0;
	if (s->chip)
		emu_chip_reset(s->chip, EMU_MODE_RESET);
	log_debug("slot %u: unplugged", s->idx);
}

/* --- Data path --- */

static int tx_push(struct slot *s, struct emu_tx t, uint64_t when)
{
	if (s->tx_head > 0 && s->tx_head == s->tx_len)
		s->tx_head = s->tx_len = 0;
	if (s->tx_len == s->tx_cap) {
		size_t cap = s->tx_cap ? s->tx_cap * 2 : 1024;
		struct tx_item *n;

		if (s->tx_head > 0) {
			memmove(s->tx, s->tx + s->tx_head, (s->tx_len - s->tx_head) * sizeof(*s->tx));
			s->tx_len -= s->tx_head;
			s->tx_head = 0;
			if (s->tx_len < s->tx_cap)
				goto store;
		}
		n = realloc(s->tx, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->tx = n;
		s->tx_cap = cap;
	}
store:
	s->tx[s->tx_len++] = (struct tx_item){ .tx = t, .t = when };
	return 0;
}

/* Whether the host's line settings let the chip's UART make sense of the bytes. */
static bool slot_line_ok(const struct slot *s)
{
	const struct emu_port_settings *st = &s->settings;
	double dev;

	if (!E.umockdev)
		return true;
	if (!s->settings_seen || st->baud == 0 || st->parity != 'E' || st->data_bits != 8 ||
	    st->stop_bits != 1)
		return false;
	if (E.baud == 0)
		return true;
	dev = ((double)st->baud - (double)E.baud) / (double)E.baud;
	return dev < 0.025 && dev > -0.025;
}

static void slot_feed(struct slot *s, uint8_t b, uint64_t t)
{
	struct emu_txq *q;
	struct emu_tx tx;

	if (!s->chip)
		return;
	if (!slot_line_ok(s)) {
		/* Wrong baud or framing: every byte is a framing/parity error, dropped. */
		return;
	}
	emu_chip_input(s->chip, b);
	q = emu_chip_txq(s->chip);
	while (emu_txq_pop(q, &tx))
		if (tx_push(s, tx, t) < 0)
			break;
}

static void slot_flush_out(struct slot *s)
{
	while (s->out_len > 0 && s->master >= 0) {
		ssize_t n = write(s->master, s->out, s->out_len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				s->out_len = 0;	/* nobody to hear it */
			break;
		}
		memmove(s->out, s->out + n, s->out_len - (size_t)n);
		s->out_len -= (size_t)n;
	}
}

static void slot_hexdump(const struct slot *s, const char *dir, const uint8_t *p, size_t n)
{
	char line[3 * 32 + 1];
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		snprintf(line + 3 * k, sizeof(line) - 3 * k, " %02x", p[i]);
		if (++k == 32 || i + 1 == n) {
			log_msg("slot %u %s%s", s->idx, dir, line);
			k = 0;
		}
	}
}

#define AUTO_SWAP_UNSEEN_MS 8000

static uint64_t slot_swap_deadline(const struct slot *s)
{
	uint64_t ms = E.auto_swap_ms;

	if (!E.auto_swap_ms || !s->chip || !E.prof->product_state ||
	    emu_chip_product_state(s->chip) == STM32H5_PS_OPEN ||
	    s->next_in_queue >= E.per_slot)
		return 0;
	if (!s->host_after_close && !E.early_swap && ms < AUTO_SWAP_UNSEEN_MS)
		ms = AUTO_SWAP_UNSEEN_MS;
	return s->last_host_activity + ms * NS_PER_MS;
}

/* Host activity on the slot at time now: a USB request (answered: the device is there
 * to take it) or UART bytes (answered only if the chip is out of its reset). */
static void slot_host_activity(struct slot *s, uint64_t now, bool answered)
{
	s->last_host_activity = now;
	if (s->chip && E.prof->product_state &&
	    emu_chip_product_state(s->chip) != STM32H5_PS_OPEN) {
		if (answered)
			s->host_after_close = true;
		else
			s->host_asked_after_close = true;
	}
}

/* The next chip goes in once a finalized chip has idled for --auto-swap ms. */
static void slot_swap_if_due(struct slot *s, uint64_t now)
{
	uint64_t due = slot_swap_deadline(s);

	if (!due || due > now)
		return;
	log_msg("slot %u: chip %u finalized and idle for %llu ms (host %s), swapping in the "
		"next one", s->idx, emu_chip_index(s->chip), (unsigned long long)((now - s->last_host_activity) / NS_PER_MS),
		s->host_after_close ? "came back" : "never came back");
	slot_remove_chip(s);
	(void)slot_insert_chip(s);
#ifdef HAVE_EMU_USB
	if (E.dfu)
		usb_sync(emu_usb_chip_changed, s->idx);
#endif
}

/* How many queued host bytes can wait for a later one: the chip only buffers them, so
 * feeding them together with the next byte that can get a reaction changes nothing the
 * host sees (answers are stamped with their byte's arrival time, not the feeding time). */
static size_t slot_rx_quiet(const struct slot *s)
{
	if (!s->chip || !slot_line_ok(s))
		return SIZE_MAX;	/* dropped when fed */
	return emu_chip_quiet_bytes(s->chip);
}

static void slot_arm_timer(struct slot *s, uint64_t now)
{
	uint64_t next = UINT64_MAX, sw;
	struct itimerspec its = { 0 };

	if (s->rx_len > s->rx_head) {
		/* Wake when the first byte that can get a reaction arrives, or the last one
		 * queued (which keeps the queue draining); not once per byte. */
		size_t pending = s->rx_len - s->rx_head, k = slot_rx_quiet(s);

		if (k > pending - 1)
			k = pending - 1;
		next = s->rx[(s->rx_head + k) % RXQ_CAP].t;
	}
	if (s->tx_len > s->tx_head) {
		const struct tx_item *it = &s->tx[s->tx_head];
		uint64_t base = it->t > s->tx_busy ? it->t : s->tx_busy;
		uint64_t due = it->tx.kind == EMU_TX_BYTE ? base + E.byte_ns : base;

		if (due < next)
			next = due;
	}
	sw = slot_swap_deadline(s);
	if (sw && sw < next)
		next = sw;
	if (s->hup && s->hup_retry_at < next)
		next = s->hup_retry_at;
	if (next != UINT64_MAX) {
		if (next <= now)
			next = now + 1;
		its.it_value.tv_sec = (time_t)(next / 1000000000ull);
		its.it_value.tv_nsec = (long)(next % 1000000000ull);
	}
	timerfd_settime(s->timer, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Bytes from the host that have arrived by `now` (stop bit received), in order, each
 * stamped with its own arrival time. Called before anything that changes the chip or the
 * line from outside, so that those bytes meet the chip as it was when they arrived. */
static void slot_rx_catch_up(struct slot *s, uint64_t now)
{
	while (s->rx_len > s->rx_head && s->rx[s->rx_head % RXQ_CAP].t <= now) {
		struct rx_item it = s->rx[s->rx_head % RXQ_CAP];

		s->rx_head++;
		slot_feed(s, it.b, it.t);
	}
	if (s->rx_head == s->rx_len)
		s->rx_head = s->rx_len = 0;
}

static void slot_run(struct slot *s, uint64_t now)
{
	size_t out_before = s->out_len;

	slot_rx_catch_up(s, now);

	/* Answers, each leaving the wire one byte time after the previous one. */
	while (s->tx_len > s->tx_head) {
		struct tx_item *it = &s->tx[s->tx_head];
		uint64_t base = it->t > s->tx_busy ? it->t : s->tx_busy;

		if (it->tx.kind == EMU_TX_DELAY) {
			s->tx_busy = base + it->tx.ms * NS_PER_MS;
			s->tx_head++;
			continue;
		}
		if (it->tx.kind == EMU_TX_VANISH) {
			if (base > now)
				break;
			log_msg("slot %u: fault: adapter vanishes", s->idx);
			slot_flush_out(s);
			slot_unplug(s);
			break;
		}
		if (base + E.byte_ns > now)
			break;
		if (s->out_len == sizeof(s->out)) {
			slot_flush_out(s);
			if (s->out_len == sizeof(s->out))
				break;
		}
		s->out[s->out_len++] = it->tx.byte;
		s->tx_busy = base + E.byte_ns;
		s->tx_head++;
		/* The chip's answers count as activity: a finalized chip is idle from its last
		 * byte (FINALIZE's answer may come long after the request). */
		if (s->tx_busy > s->last_host_activity)
			s->last_host_activity = s->tx_busy;
		if (s->host_asked_after_close)
			s->host_after_close = true;
	}
	if (E.verbose && s->out_len > out_before)
		slot_hexdump(s, "<-", s->out + out_before, s->out_len - out_before);
	slot_flush_out(s);

	slot_swap_if_due(s, now);
	if (s->hup && s->hup_retry_at <= now)
		s->hup = false;
	slot_update_events(s);
	slot_arm_timer(s, now);
}

static void apply_pending_settings(void);

static void slot_on_readable(struct slot *s)
{
	uint8_t buf[4096];
	uint64_t now;
	size_t space = RXQ_CAP - (s->rx_len - s->rx_head);
	ssize_t n;

	if (space == 0)
		return;
	/* Line settings the host made before writing these bytes come first: its ioctl was
	 * answered (and the change queued) before its write() could start, as on a real
	 * adapter, but the eventfd may sit behind the data in this epoll batch. */
	apply_pending_settings();
	if (s->master < 0)
		return;
	now = now_ns();
	n = read(s->master, buf, space < sizeof(buf) ? space : sizeof(buf));
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		/* No host on the other end (umockdev node closed): look again shortly. */
		s->hup = true;
		s->hup_retry_at = now + HUP_RETRY_NS;
		slot_run(s, now);
		return;
	}
	if (n == 0)
		return;
	if (E.verbose)
		slot_hexdump(s, "->", buf, (size_t)n);
	/* Bytes that arrive after the swap fell due meet the next chip, even when the timer
	 * that should have swapped it ran late on a busy machine. */
	if (s->rx_len == s->rx_head)
		slot_swap_if_due(s, now);
	slot_host_activity(s, now, false);
	for (ssize_t i = 0; i < n; i++) {
		uint64_t start = s->rx_last > now ? s->rx_last : now;
		uint64_t t = E.byte_ns ? start + E.byte_ns : now;

		s->rx[s->rx_len % RXQ_CAP] = (struct rx_item){ .t = t, .b = buf[i] };
		s->rx_len++;
		s->rx_last = t;
	}
	slot_run(s, now);
}

/* --- Line settings from the umockdev harness thread --- */

static void on_settings_changed(void *user_data, unsigned index, const struct emu_port_settings *st)
{
	uint64_t one = 1;

	if (index >= E.count)
		return;
	pthread_mutex_lock(&E.set_lock);
	E.pending[index] = *st;
	E.pending_dirty[index] = true;
	E.any_pending = true;
	pthread_mutex_unlock(&E.set_lock);
	(void)!write(E.setfd, &one, sizeof(one));
}

static void slot_apply_lines(struct slot *s, const struct emu_port_settings *st)
{
	bool was_reset = s->in_reset;

	s->settings = *st;
	s->settings_seen = true;
	if (!E.require_entry || !s->chip)
		return;
	s->in_reset = st->dtr;
	emu_chip_set_reset_mode(s->chip, st->rts ? EMU_MODE_BOOTLOADER : EMU_MODE_APP);
	if (st->dtr && !was_reset) {
		emu_chip_reset(s->chip, EMU_MODE_RESET);
		log_debug("slot %u: NRST low", s->idx);
	} else if (!st->dtr && was_reset) {
		emu_chip_reset(s->chip, st->rts ? EMU_MODE_BOOTLOADER : EMU_MODE_APP);
		log_debug("slot %u: NRST released, BOOT0 %s: %s", s->idx, st->rts ? "high" : "low",
			  mode_name(emu_chip_mode(s->chip)));
	}
}

static void apply_pending_settings(void)
{
	bool any;

	pthread_mutex_lock(&E.set_lock);
	any = E.any_pending;
	E.any_pending = false;
	pthread_mutex_unlock(&E.set_lock);
	if (!any)
		return;
	for (unsigned i = 0; i < E.count; i++) {
		struct emu_port_settings st;
		bool dirty;

		pthread_mutex_lock(&E.set_lock);
		dirty = E.pending_dirty[i];
		st = E.pending[i];
		E.pending_dirty[i] = false;
		pthread_mutex_unlock(&E.set_lock);
		if (!dirty)
			continue;
		log_debug("slot %u: host set %" PRIu32 " %u%c%u dtr=%d rts=%d", i, st.baud,
			  st.data_bits, st.parity, st.stop_bits, st.dtr, st.rts);
		slot_rx_catch_up(&E.slots[i], now_ns());
		slot_apply_lines(&E.slots[i], &st);
		slot_run(&E.slots[i], now_ns());
	}
}

static void on_settings_event(void)
{
	uint64_t v;

	(void)!read(E.setfd, &v, sizeof(v));
	apply_pending_settings();
}

/* --- Control socket --- */

static void client_send(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void client_send(struct client *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!send(c->fd, line, (size_t)n, MSG_NOSIGNAL);
}

static int parse_slot(const char *arg, struct slot **ret)
{
	char *end;
	unsigned long v;

	if (!arg || !*arg)
		return -EINVAL;
	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || *end || v >= E.count)
		return -EINVAL;
	*ret = &E.slots[v];
	return 0;
}

static void control_status(struct client *c)
{
	for (unsigned i = 0; i < E.count; i++) {
		struct slot *s = &E.slots[i];
		char uid[25] = "";

		bool plugged = s->master >= 0;
		char usb[64] = "";

#ifdef HAVE_EMU_USB
		if (E.dfu) {
			unsigned devnum;

			pthread_mutex_unlock(&E.chip_lock);
			devnum = emu_usb_devnum(E.usb, i);
			if (!E.uart)
				plugged = emu_usb_cable(E.usb, i);
			pthread_mutex_lock(&E.chip_lock);
			snprintf(usb, sizeof(usb), " usb %s device %u", emu_usb_port_path(E.usb, i),
				 devnum);
		}
#endif
		if (!s->chip) {
			client_send(c, "slot %u: empty queue %u/%u %s%s", i, s->next_in_queue,
				    E.per_slot, plugged ? "plugged" : "unplugged", usb);
			continue;
		}
		for (int k = 0; k < 12; k++)
			snprintf(uid + 2 * k, 3, "%02x", emu_chip_uid(s->chip)[k]);
		client_send(c, "slot %u: chip %u uid %s state 0x%02x mode %s queue %u/%u %s%s", i,
			    emu_chip_index(s->chip), uid, emu_chip_product_state(s->chip),
			    mode_name(emu_chip_mode(s->chip)), s->next_in_queue, E.per_slot,
			    plugged ? "plugged" : "unplugged", usb);
	}
}

static void control_line(struct client *c, char *line)
{
	char *save = NULL, *cmd = strtok_r(line, " \t\r", &save);
	char *a1 = strtok_r(NULL, " \t\r", &save), *a2 = strtok_r(NULL, " \t\r", &save);
	char *a3 = strtok_r(NULL, " \t\r", &save);
	struct slot *s = NULL;
	int r;

	if (!cmd)
		return;
	if (strcmp(cmd, "status") == 0) {
		control_status(c);
		client_send(c, "ok");
		return;
	}
	if (parse_slot(a1, &s) < 0) {
		client_send(c, "error: '%s' needs a slot number 0..%u", cmd, E.count - 1);
		return;
	}
	slot_rx_catch_up(s, now_ns());
	if (strcmp(cmd, "remove") == 0) {
		if (!s->chip) {
			client_send(c, "error: slot %u is already empty", s->idx);
			return;
		}
		slot_remove_chip(s);
#ifdef HAVE_EMU_USB
		if (E.dfu)
			usb_sync(emu_usb_chip_changed, s->idx);
#endif
	} else if (strcmp(cmd, "insert") == 0) {
		r = slot_insert_chip(s);
		if (r == -EBUSY) {
			client_send(c, "error: slot %u holds a chip; remove it first", s->idx);
			return;
		} else if (r == -ENOENT) {
			client_send(c, "error: the queue of slot %u is empty", s->idx);
			return;
		} else if (r < 0) {
			client_send(c, "error: cannot insert a chip in slot %u: %s", s->idx,
				    strerror(-r));
			return;
		}
#ifdef HAVE_EMU_USB
		if (E.dfu)
			usb_sync(emu_usb_chip_changed, s->idx);
#endif
	} else if (strcmp(cmd, "unplug") == 0) {
		if (E.uart && s->master < 0) {
			client_send(c, "error: slot %u is already unplugged", s->idx);
			return;
		}
		if (E.uart)
			slot_unplug(s);
#ifdef HAVE_EMU_USB
		if (E.dfu) {
			r = usb_sync(emu_usb_unplug, s->idx);
			if (r < 0 && !E.uart) {
				client_send(c, "error: slot %u is already unplugged", s->idx);
				return;
			}
			if (!E.uart && s->chip)
				emu_chip_reset(s->chip, EMU_MODE_RESET);
		}
#endif
	} else if (strcmp(cmd, "plug") == 0) {
		if (E.uart) {
			r = slot_plug(s);
			if (r < 0) {
				client_send(c, "error: cannot plug slot %u: %s", s->idx, strerror(-r));
				return;
			}
		}
#ifdef HAVE_EMU_USB
		if (E.dfu) {
			if (!E.uart && s->chip)
				emu_chip_reset(s->chip, slot_boot_mode(s));
			r = usb_sync(emu_usb_plug, s->idx);
			if (r < 0 && !E.uart) {
				client_send(c, "error: cannot plug slot %u: %s", s->idx, strerror(-r));
				return;
			}
		}
#endif
	} else if (strcmp(cmd, "lines") == 0) {
		struct emu_port_settings st = s->settings;

		if (!a2 || !a3 || (strcmp(a2, "0") && strcmp(a2, "1")) ||
		    (strcmp(a3, "0") && strcmp(a3, "1"))) {
			client_send(c, "error: usage: lines SLOT DTR(0|1) RTS(0|1)");
			return;
		}
		st.dtr = a2[0] == '1';
		st.rts = a3[0] == '1';
		slot_apply_lines(s, &st);
	} else {
		client_send(c, "error: unknown command '%s' (status, remove, insert, unplug, plug, "
			       "lines)", cmd);
		return;
	}
	slot_run(s, now_ns());
	client_send(c, "ok");
}

static void client_close(struct client *c)
{
	epoll_ctl(E.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->len = 0;
}

static void on_client(struct client *c)
{
	ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
	char *nl;

	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		client_close(c);
		return;
	}
	c->len += (size_t)n;
	while ((nl = memchr(c->buf, '\n', c->len))) {
		size_t l = (size_t)(nl - c->buf);

		*nl = '\0';
		control_line(c, c->buf);
		memmove(c->buf, nl + 1, c->len - l - 1);
		c->len -= l + 1;
	}
	if (c->len == sizeof(c->buf)) {
		client_send(c, "error: line longer than %d bytes", CTL_LINE_MAX);
		client_close(c);
	}
}

static void on_control_accept(void)
{
	int fd = accept4(E.ctlfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &E.clients[i];

		if (c->fd >= 0)
			continue;
		c->fd = fd;
		c->len = 0;
		c->ev = (struct ev){ .type = EV_CLIENT, .idx = (unsigned)i };
		if (ep_add(fd, EPOLLIN, &c->ev) < 0) {
			close(fd);
			c->fd = -1;
		}
		return;
	}
	(void)!send(fd, "error: too many control clients\n", 32, MSG_NOSIGNAL);
	close(fd);
}

static int control_open(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t old;
	int r;

	if (snprintf(E.ctl_path, sizeof(E.ctl_path), "%s/control", E.dir) >= (int)sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, E.ctl_path);
	unlink(E.ctl_path);
	E.ctlfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (E.ctlfd < 0)
		return -errno;
	old = umask(0077);
	r = bind(E.ctlfd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(E.ctlfd, 8) < 0)
		return -errno;
	E.ev_ctl.type = EV_CONTROL;
	return ep_add(E.ctlfd, EPOLLIN, &E.ev_ctl);
}

/* --- State directory --- */

static int load_seed(void)
{
	char path[PATH_MAX], buf[32];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/seed", E.state_dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = '\0';
			E.seed = strtoull(buf, NULL, 16);
			return 0;
		}
	}
	if (getrandom(&E.seed, sizeof(E.seed), 0) != sizeof(E.seed))
		return -EIO;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%016" PRIx64 "\n", E.seed);
	if (write(fd, buf, (size_t)n) != n) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

/* --- Command line --- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: h5emu --count N --dir DIR [options]\n"
		"Emulates N STM32 chips in their system bootloader (AN3155), one per terminal\n"
		"DIR/chipK. Prints one ready line on stdout, runs until SIGTERM/SIGINT.\n\n"
		"  --count N             number of slots (terminals), 1..%u\n"
		"  --dir DIR             where the chipK links and the control socket go\n"
		"  --profile P           h563 (default) or g474\n"
		"  --baud B              pace the wire at B baud, 11 bits per byte\n"
		"  --state-dir DIR       keep chip state across runs (default: a temp dir)\n"
		"  --fault SPEC          inject a fault (repeatable), see docs/emulator.md\n"
		"  --umockdev            emulated USB-serial adapters instead of plain PTYs\n"
		"  --transport T         uart (default), dfu (USB DfuSe devices under umockdev)\n"
		"                        or both (the same chips on both)\n"
		"  --dfu-transfer-size N wTransferSize of the DFU devices, 64..4096 (2048)\n"
		"  --reenumerate-ms MS   time a resetting DFU device stays off the bus (20)\n"
		"  --flash-timing P,S,B  DFU flash times: P us per 16-byte write unit, S ms per\n"
		"                        sector erase, B ms per bank (mass) erase\n"
		"  --ports-per-adapter K with --umockdev: K slots per adapter, one USB interface\n"
		"                        each (a multi-port adapter such as an FT4232H), 1..8\n"
		"  --require-entry       chips boot the application; DTR/RTS select the bootloader\n"
		"  --chips-per-slot K    K chips with distinct UIDs queued per slot\n"
		"  --auto-swap MS        swap in the next chip MS ms after a finalized chip idles\n"
		"                        once the host came back to check it\n"
		"  --early-swap          with --auto-swap: do not wait for the host's check (the\n"
		"                        next chip may answer the host's verification)\n"
		"  --ram-buffer BYTES    OSFI RAM buffer size reported by the chips\n"
		"  --ca-key PEM          chip CA private key (OSFI certificates)\n"
		"  --global-key FILE     32-byte global license key (OSFI)\n"
		"  -v, --verbose         log events and every byte to stderr\n",
		MAX_SLOTS);
}

static int parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (!*s || *s == '-')
		goto bad;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < min || v > max)
		goto bad;
	*ret = v;
	return 0;
bad:
	fprintf(stderr, "h5emu: %s: '%s' is not a number in %" PRIu64 "..%" PRIu64 ".\n", opt, s,
		min, max);
	return -EINVAL;
}

static int parse_args(int argc, char **argv)
{
	enum { O_COUNT = 256, O_DIR, O_PROFILE, O_BAUD, O_STATE, O_FAULT, O_UMOCKDEV, O_ENTRY,
	       O_PER_SLOT, O_RAMBUF, O_CAKEY, O_GLOBALKEY, O_SWAP, O_PORTS, O_TRANSPORT, O_XFER,
	       O_REENUM, O_FLASHT, O_EARLY, O_HELP };
	static const struct option opts[] = {
		{ "count", required_argument, NULL, O_COUNT },
		{ "dir", required_argument, NULL, O_DIR },
		{ "profile", required_argument, NULL, O_PROFILE },
		{ "baud", required_argument, NULL, O_BAUD },
		{ "state-dir", required_argument, NULL, O_STATE },
		{ "fault", required_argument, NULL, O_FAULT },
		{ "umockdev", no_argument, NULL, O_UMOCKDEV },
		{ "ports-per-adapter", required_argument, NULL, O_PORTS },
		{ "require-entry", no_argument, NULL, O_ENTRY },
		{ "chips-per-slot", required_argument, NULL, O_PER_SLOT },
		{ "ram-buffer", required_argument, NULL, O_RAMBUF },
		{ "ca-key", required_argument, NULL, O_CAKEY },
		{ "global-key", required_argument, NULL, O_GLOBALKEY },
		{ "auto-swap", required_argument, NULL, O_SWAP },
		{ "transport", required_argument, NULL, O_TRANSPORT },
		{ "dfu-transfer-size", required_argument, NULL, O_XFER },
		{ "reenumerate-ms", required_argument, NULL, O_REENUM },
		{ "flash-timing", required_argument, NULL, O_FLASHT },
		{ "early-swap", no_argument, NULL, O_EARLY },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, O_HELP },
		{ 0 },
	};
	uint64_t v;
	int c;

	E.prof = emu_profile_find("h563");
	while ((c = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
		switch (c) {
		case O_COUNT:
			if (parse_u64("--count", optarg, 1, MAX_SLOTS, &v) < 0)
				return -EINVAL;
			E.count = (unsigned)v;
			break;
		case O_DIR:
			E.dir = optarg;
			break;
		case O_PROFILE:
			E.prof = emu_profile_find(optarg);
			if (!E.prof) {
				fprintf(stderr, "h5emu: --profile: unknown profile '%s' (h563, g474).\n",
					optarg);
				return -EINVAL;
			}
			break;
		case O_BAUD:
			if (parse_u64("--baud", optarg, 300, 12000000, &v) < 0)
				return -EINVAL;
			E.baud = (uint32_t)v;
			break;
		case O_STATE:
			free(E.state_dir);
			E.state_dir = strdup(optarg);
			if (!E.state_dir)
				return -ENOMEM;
			break;
		case O_FAULT: {
			char err[200];
			struct emu_fault *n;
#ifdef HAVE_EMU_USB
			struct emu_usb_fault *uf = realloc(E.usb_faults,
							   (E.n_usb_faults + 1) * sizeof(*uf));
			int ur;

			if (!uf)
				return -ENOMEM;
			E.usb_faults = uf;
			ur = emu_usb_fault_parse(optarg, &uf[E.n_usb_faults], err, sizeof(err));
			if (ur < 0) {
				fprintf(stderr, "h5emu: --fault '%s': %s.\n", optarg, err);
				return -EINVAL;
			}
			if (ur == 0) {
				E.n_usb_faults++;
				break;
			}
#endif
			n = realloc(E.faults.v, (E.faults.n + 1) * sizeof(*n));

			if (!n)
				return -ENOMEM;
			E.faults.v = n;
			if (emu_fault_parse(optarg, &n[E.faults.n], err, sizeof(err)) < 0) {
				fprintf(stderr, "h5emu: --fault '%s': %s.\n", optarg, err);
				return -EINVAL;
			}
			E.faults.n++;
			break;
		}
		case O_UMOCKDEV:
			E.umockdev = true;
			break;
		case O_PORTS:
			if (parse_u64("--ports-per-adapter", optarg, 1, 8, &v) < 0)
				return -EINVAL;
			E.ports_per_adapter = (unsigned)v;
			break;
		case O_ENTRY:
			E.require_entry = true;
			break;
		case O_PER_SLOT:
			if (parse_u64("--chips-per-slot", optarg, 1, 100000, &v) < 0)
				return -EINVAL;
			E.per_slot = (unsigned)v;
			break;
		case O_RAMBUF:
			if (parse_u64("--ram-buffer", optarg, 1024, 512 * 1024, &v) < 0)
				return -EINVAL;
			E.ram_buffer = (uint32_t)v;
			break;
		case O_CAKEY:
			E.ca_key = optarg;
			break;
		case O_GLOBALKEY:
			E.global_key = optarg;
			break;
		case O_SWAP:
			if (parse_u64("--auto-swap", optarg, 1, 3600000, &v) < 0)
				return -EINVAL;
			E.auto_swap_ms = v;
			break;
		case O_EARLY:
			E.early_swap = true;
			break;
		case O_TRANSPORT:
			if (strcmp(optarg, "uart") == 0) {
				E.uart = true;
				E.dfu = false;
			} else if (strcmp(optarg, "dfu") == 0) {
				E.uart = false;
				E.dfu = true;
			} else if (strcmp(optarg, "both") == 0) {
				E.uart = E.dfu = true;
			} else {
				fprintf(stderr, "h5emu: --transport: '%s' is not uart, dfu or both.\n",
					optarg);
				return -EINVAL;
			}
			break;
		case O_XFER:
			if (parse_u64("--dfu-transfer-size", optarg, 64, 4096, &v) < 0)
				return -EINVAL;
			if (v % 64) {
				fprintf(stderr, "h5emu: --dfu-transfer-size: %" PRIu64
						" is not a multiple of 64.\n", v);
				return -EINVAL;
			}
			E.dfu_transfer = (uint16_t)v;
			break;
		case O_FLASHT: {
			double p, sec, bank;
			int used = 0;

			if (sscanf(optarg, "%lf,%lf,%lf%n", &p, &sec, &bank, &used) != 3 ||
			    optarg[used] || p < 0 || p > 10000 || sec < 0 || sec > 10000 ||
			    bank < 0 || bank > 100000) {
				fprintf(stderr, "h5emu: --flash-timing: '%s' is not P_US,SECTOR_MS,BANK_MS.\n",
					optarg);
				return -EINVAL;
			}
			E.flash_timing_set = true;
			E.prog_unit_ns = (uint64_t)(p * 1000.0 + 0.5);
			E.erase_sector_ns = (uint64_t)(sec * 1e6 + 0.5);
			E.erase_bank_ns = (uint64_t)(bank * 1e6 + 0.5);
			break;
		}
		case O_REENUM:
			if (parse_u64("--reenumerate-ms", optarg, 1, 15000, &v) < 0)
				return -EINVAL;
			E.reenumerate_ms = (uint32_t)v;
			break;
		case 'v':
			E.verbose = true;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "h5emu: unexpected argument '%s'.\n", argv[optind]);
		return -EINVAL;
	}
	if (!E.count || !E.dir) {
		fprintf(stderr, "h5emu: --count and --dir are required (see --help).\n");
		return -EINVAL;
	}
	if (E.umockdev && E.count > 64) {
		fprintf(stderr, "h5emu: --umockdev supports at most 64 adapters.\n");
		return -EINVAL;
	}
	if (E.ports_per_adapter > 1 && !E.umockdev) {
		fprintf(stderr, "h5emu: --ports-per-adapter needs --umockdev.\n");
		return -EINVAL;
	}
	if (E.dfu && !USB_AVAILABLE) {
		fprintf(stderr, "h5emu: --transport %s: this h5emu was built without USB DFU "
				"support; install libumockdev-dev and glib, then rebuild.\n",
			E.uart ? "both" : "dfu");
		return -ENOTSUP;
	}
	if (E.dfu && E.count > 120) {
		fprintf(stderr, "h5emu: --transport dfu supports at most 120 devices.\n");
		return -EINVAL;
	}
	if (E.umockdev && !E.uart) {
		fprintf(stderr, "h5emu: --umockdev emulates serial adapters: it needs --transport "
				"uart or both.\n");
		return -EINVAL;
	}
	if (E.umockdev && !UMOCKDEV_AVAILABLE) {
		fprintf(stderr, "h5emu: --umockdev: this h5emu was built without umockdev support; "
				"install libumockdev-dev and glib, then rebuild.\n");
		return -ENOTSUP;
	}
	if (E.baud)
		E.byte_ns = (11ull * 1000000000ull + E.baud / 2) / E.baud;
	return 0;
}

/* --- Main --- */

static int setup_slots(void)
{
	int masters[MAX_SLOTS];
	int r;

	E.slots = calloc(E.count, sizeof(*E.slots));
	E.pending = calloc(E.count, sizeof(*E.pending));
	E.pending_dirty = calloc(E.count, sizeof(*E.pending_dirty));
	if (!E.slots || !E.pending || !E.pending_dirty)
		return -ENOMEM;
	for (unsigned i = 0; i < E.count; i++) {
		struct slot *s = &E.slots[i];

		s->idx = i;
		s->master = s->slave_hold = -1;
		s->ev_master = (struct ev){ .type = EV_MASTER, .idx = i };
		s->ev_timer = (struct ev){ .type = EV_TIMER, .idx = i };
		s->rx = calloc(RXQ_CAP, sizeof(*s->rx));
		if (!s->rx)
			return -ENOMEM;
		s->timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (s->timer < 0)
			return -errno;
		r = ep_add(s->timer, EPOLLIN, &s->ev_timer);
		if (r < 0)
			return r;
		if (snprintf(s->link, sizeof(s->link), "%s/chip%u", E.dir, i) >= (int)sizeof(s->link))
			return -ENAMETOOLONG;
	}

	if (E.umockdev) {
#ifdef HAVE_EMU_UMOCKDEV
		struct emu_port_ops ops = { .settings_changed = on_settings_changed };
		char env[PATH_MAX];

		r = emu_umockdev_start_multi(E.count, E.ports_per_adapter, "H5EMU", &ops, masters,
					     &E.um);
		if (r < 0) {
			log_msg("cannot start the umockdev testbed: %s", strerror(-r));
			return r;
		}
		snprintf(env, sizeof(env), "%s/umockdev.env", E.dir);
		r = emu_umockdev_write_env(E.um, env);
		if (r < 0) {
			log_msg("cannot write %s: %s", env, strerror(-r));
			return r;
		}
		for (unsigned i = 0; i < E.count; i++) {
			E.slots[i].master = masters[i];
			fcntl(masters[i], F_SETFL, fcntl(masters[i], F_GETFL) | O_NONBLOCK);
			r = update_link(&E.slots[i], emu_umockdev_node(E.um, i));
			if (r < 0)
				return r;
		}
#else
		(void)masters;
		(void)on_settings_changed;
		return -ENOTSUP;
#endif
	} else if (E.uart) {
		(void)masters;
		(void)on_settings_changed;
		for (unsigned i = 0; i < E.count; i++) {
			r = slot_plug(&E.slots[i]);
			if (r < 0) {
				log_msg("slot %u: cannot create a pseudo-terminal: %s", i, strerror(-r));
				return r;
			}
		}
	}
	for (unsigned i = 0; i < E.count; i++) {
		r = slot_insert_chip(&E.slots[i]);
		if (r < 0)
			return r;
		slot_run(&E.slots[i], now_ns());
	}
#ifdef HAVE_EMU_USB
	if (E.dfu) {
		struct emu_usb_config cfg = {
			.count = E.count,
			.profile = E.prof,
			.dfu = {
				.transfer_size = E.dfu_transfer,
				.osfi = E.have_special,
				.timing = emu_dfu_timing_datasheet(E.prof),
			},
			.faults = E.usb_faults,
			.n_faults = E.n_usb_faults,
			.reenumerate_ms = E.reenumerate_ms,
			.verbose = E.verbose,
		};
		struct emu_usb_ops ops = {
			.lock = usb_lock,
			.unlock = usb_unlock,
			.chip = usb_chip,
			.chip_reset = usb_chip_reset,
			.activity = usb_activity,
		};
		void *testbed = NULL;
		char env[PATH_MAX];

		if (E.flash_timing_set) {
			cfg.dfu.timing.prog_unit_ns = E.prog_unit_ns;
			cfg.dfu.timing.erase_sector_ns = E.erase_sector_ns;
			cfg.dfu.timing.erase_bank_ns = E.erase_bank_ns;
		}

#ifdef HAVE_EMU_UMOCKDEV
		if (E.um)
			testbed = emu_umockdev_testbed(E.um);
#endif
		E.usbfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		E.ev_usb.type = EV_USB;
		if (E.usbfd < 0 || ep_add(E.usbfd, EPOLLIN, &E.ev_usb) < 0)
			return -errno;
		pthread_mutex_unlock(&E.chip_lock);
		r = emu_usb_start(&cfg, &ops, testbed, &E.usb);
		pthread_mutex_lock(&E.chip_lock);
		if (r < 0) {
			log_msg("cannot start the USB DFU devices: %s", strerror(-r));
			return r;
		}
		if (!E.um) {
			snprintf(env, sizeof(env), "%s/umockdev.env", E.dir);
			r = emu_usb_write_env(E.usb, env);
			if (r < 0) {
				log_msg("cannot write %s: %s", env, strerror(-r));
				return r;
			}
		}
	}
#endif
	return 0;
}

static void shutdown_all(void)
{
#ifdef HAVE_EMU_USB
	if (E.usb) {
		char env[PATH_MAX];

		/* The harness first: it reaches the chips under the lock. */
		pthread_mutex_unlock(&E.chip_lock);
		emu_usb_stop(E.usb);
		pthread_mutex_lock(&E.chip_lock);
		E.usb = NULL;
		if (!E.um && snprintf(env, sizeof(env), "%s/umockdev.env", E.dir) < (int)sizeof(env))
			unlink(env);
	}
	free(E.usb_faults);
	if (E.usbfd >= 0)
		close(E.usbfd);
#endif
	if (E.slots) {
		for (unsigned i = 0; i < E.count; i++) {
			struct slot *s = &E.slots[i];

			slot_remove_chip(s);
			if (s->master >= 0 && !E.umockdev)
				close(s->master);
			if (s->slave_hold >= 0)
				close(s->slave_hold);
			if (s->timer > 0)
				close(s->timer);
			if (s->link[0])
				unlink(s->link);
			free(s->rx);
			free(s->tx);
		}
	}
#ifdef HAVE_EMU_UMOCKDEV
	if (E.um) {
		char env[PATH_MAX];

		emu_umockdev_stop(E.um);
		if (snprintf(env, sizeof(env), "%s/umockdev.env", E.dir) < (int)sizeof(env))
			unlink(env);
	}
#endif
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (E.clients[i].fd >= 0)
			close(E.clients[i].fd);
	if (E.ctlfd >= 0) {
		close(E.ctlfd);
		unlink(E.ctl_path);
	}
	if (E.temp_state && E.state_dir)
		nftw(E.state_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(E.slots);
	free(E.pending);
	free(E.pending_dirty);
	free(E.faults.v);
	free(E.state_dir);
	if (E.sigfd >= 0)
		close(E.sigfd);
	if (E.setfd >= 0)
		close(E.setfd);
	if (E.epfd >= 0)
		close(E.epfd);
}

static void loop(void)
{
	struct epoll_event evs[64];

	while (!E.quit) {
		int n;

		pthread_mutex_unlock(&E.chip_lock);
		n = epoll_wait(E.epfd, evs, 64, -1);
		pthread_mutex_lock(&E.chip_lock);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_msg("epoll_wait failed: %s", strerror(errno));
			return;
		}
		for (int i = 0; i < n; i++) {
			struct ev *ev = evs[i].data.ptr;
			struct slot *s;
			uint64_t exp;

			switch (ev->type) {
			case EV_SIGNAL: {
				struct signalfd_siginfo si;

				(void)!read(E.sigfd, &si, sizeof(si));
				log_debug("signal %u, saving state and exiting", si.ssi_signo);
				E.quit = true;
				break;
			}
			case EV_SETTINGS:
				on_settings_event();
				break;
			case EV_CONTROL:
				on_control_accept();
				break;
			case EV_CLIENT:
				if (E.clients[ev->idx].fd >= 0)
					on_client(&E.clients[ev->idx]);
				break;
			case EV_MASTER:
				s = &E.slots[ev->idx];
				if (s->master < 0)
					break;
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					slot_on_readable(s);
				if (s->master >= 0 && (evs[i].events & EPOLLOUT)) {
					slot_flush_out(s);
					slot_run(s, now_ns());
				}
				break;
			case EV_TIMER:
				s = &E.slots[ev->idx];
				(void)!read(s->timer, &exp, sizeof(exp));
				slot_run(s, now_ns());
				break;
			case EV_USB:
				(void)!read(E.usbfd, &exp, sizeof(exp));
				for (unsigned k = 0; k < E.count; k++) {
					if (!E.slots[k].usb_poke)
						continue;
					E.slots[k].usb_poke = false;
					slot_run(&E.slots[k], now_ns());
				}
				break;
			}
		}
	}
}

int main(int argc, char **argv)
{
	sigset_t mask;
	int r;

	for (int i = 0; i < MAX_CLIENTS; i++)
		E.clients[i].fd = -1;
	/* Block before any thread starts, so that only the signalfd sees them. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* Paced bytes are due every ~95 us at 115200 baud: the default 50 us of timer slack
	 * would add up to a few percent of error per round trip. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

	pthread_mutex_lock(&E.chip_lock);
	r = parse_args(argc, argv);
	if (r < 0) {
		shutdown_all();
		return 2;
	}
#ifdef HAVE_EMU_USB
	/* USB plug and unplug reach running libusb clients as uevents, which umockdev sends only
	 * from a process that sees the testbed's sysfs: run under its preload. */
	if (E.dfu && !emu_usb_preloaded()) {
		const char *old = getenv("LD_PRELOAD"), *asan = getenv("ASAN_OPTIONS");
		char *pre = NULL, *as = NULL;

		if (asprintf(&pre, "libumockdev-preload.so.0%s%s", old && *old ? ":" : "",
			     old ? old : "") < 0 ||
		    asprintf(&as, "%s%sverify_asan_link_order=0", asan ? asan : "",
			     asan && *asan ? ":" : "") < 0) {
			shutdown_all();
			return 1;
		}
		setenv("LD_PRELOAD", pre, 1);
		setenv("ASAN_OPTIONS", as, 1);
		execv("/proc/self/exe", argv);
		log_msg("cannot run again under libumockdev-preload: %s", strerror(errno));
		shutdown_all();
		return 1;
	}
#endif
	if (mkdir(E.dir, 0755) < 0 && errno != EEXIST) {
		log_msg("cannot create %s: %s", E.dir, strerror(errno));
		shutdown_all();
		return 1;
	}
	if (!E.state_dir) {
		char tmpl[] = "/tmp/h5emu-state-XXXXXX";

		if (!mkdtemp(tmpl)) {
			log_msg("cannot create a temporary state directory: %s", strerror(errno));
			shutdown_all();
			return 1;
		}
		E.state_dir = strdup(tmpl);
		E.temp_state = true;
	} else if (mkdir(E.state_dir, 0700) < 0 && errno != EEXIST) {
		log_msg("cannot create state directory %s: %s", E.state_dir, strerror(errno));
		shutdown_all();
		return 1;
	}
	if (!E.state_dir || load_seed() < 0) {
		log_msg("cannot read or create the seed in %s", E.state_dir ? E.state_dir : "?");
		shutdown_all();
		return 1;
	}

#ifdef HAVE_EMU_OSFI
	if (E.prof->product_state) {
		E.special = (struct emu_special_ops){
			.special = emu_osfi_special,
			.subop_known = emu_osfi_subop_known,
			.reset = emu_osfi_reset,
		};
		E.have_special = true;
	}
#endif

	E.epfd = epoll_create1(EPOLL_CLOEXEC);
	E.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	E.setfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (E.epfd < 0 || E.sigfd < 0 || E.setfd < 0) {
		log_msg("cannot create the event loop: %s", strerror(errno));
		shutdown_all();
		return 1;
	}
	E.ev_sig.type = EV_SIGNAL;
	E.ev_set.type = EV_SETTINGS;
	if (ep_add(E.sigfd, EPOLLIN, &E.ev_sig) < 0 || ep_add(E.setfd, EPOLLIN, &E.ev_set) < 0) {
		shutdown_all();
		return 1;
	}
	r = control_open();
	if (r < 0) {
		log_msg("cannot open the control socket in %s: %s", E.dir, strerror(-r));
		shutdown_all();
		return 1;
	}
	r = setup_slots();
	if (r < 0) {
		log_msg("setup failed: %s", strerror(-r));
		shutdown_all();
		return 1;
	}

	printf("h5emu: ready, %u chips\n", E.count);
	fflush(stdout);
	loop();
	shutdown_all();
	return 0;
}

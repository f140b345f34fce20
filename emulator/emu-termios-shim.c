/* libemu-termios-shim.so: preloaded into client processes of the umockdev harness, in front
 * of libumockdev-preload.so.0 (emu_umockdev_write_env writes that LD_PRELOAD line).
 *
 * Why it exists: glibc's tcgetattr()/tcsetattr() issue the TCGETS/TCSETS* system calls
 * directly, not through the ioctl() symbol, so umockdev's preload never sees them and the
 * harness could not learn the termios the host sets. Worse, a Linux PTY slave clears PARENB
 * and forces CS8 on every set, so parity (8E1 for AN3155) would be lost and read back as 8N1.
 * These two functions re-issue the same requests through ioctl(), which umockdev forwards to
 * the harness; the harness keeps the termios as set (PARENB included), answers TCGETS from
 * it, and lets the real PTY apply the request too. For any other fd, umockdev passes the
 * ioctl straight to the kernel, so behaviour is that of glibc.
 *
 * It also keeps two costs of libumockdev-preload off the client's data path that no real
 * adapter has (see read() and usleep() below); neither changes what the client sees.
 *
 * Built without sanitizers: it is loaded before a sanitized client's runtime. */
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

/* The kernel's struct termios (asm-generic/termbits.h): 19 control characters, no speeds.
 * Declared here because <asm/termbits.h> clashes with glibc's <termios.h>. */
#define EMU_KERNEL_NCCS 19
struct emu_kernel_termios {
	tcflag_t c_iflag;
	tcflag_t c_oflag;
	tcflag_t c_cflag;
	tcflag_t c_lflag;
	cc_t c_line;
	cc_t c_cc[EMU_KERNEL_NCCS];
};

int tcgetattr(int fd, struct termios *t);
int tcsetattr(int fd, int action, const struct termios *t);

/* Same contract as glibc's tcgetattr(); the speed fields follow glibc's own convention
 * (the CBAUD code of c_cflag), so cfgetospeed() and friends keep working. */
int tcgetattr(int fd, struct termios *t)
{
	struct emu_kernel_termios k;

	if (!t) {
		errno = EINVAL;
		return -1;
	}
	if (ioctl(fd, TCGETS, &k) < 0)
		return -1;

	memset(t, 0, sizeof(*t));
	t->c_iflag = k.c_iflag;
	t->c_oflag = k.c_oflag;
	t->c_cflag = k.c_cflag;
	t->c_lflag = k.c_lflag;
	t->c_line = k.c_line;
	memcpy(t->c_cc, k.c_cc, EMU_KERNEL_NCCS < NCCS ? EMU_KERNEL_NCCS : NCCS);
#ifdef _HAVE_STRUCT_TERMIOS_C_ISPEED
	t->c_ispeed = k.c_cflag & (CBAUD | CBAUDEX);
#endif
#ifdef _HAVE_STRUCT_TERMIOS_C_OSPEED
	t->c_ospeed = k.c_cflag & (CBAUD | CBAUDEX);
#endif
	return 0;
}

/* Same contract as glibc's tcsetattr(). */
int tcsetattr(int fd, int action, const struct termios *t)
{
	struct emu_kernel_termios k;
	unsigned long request;

	if (!t) {
		errno = EINVAL;
		return -1;
	}
	switch (action) {
	case TCSANOW:
		request = TCSETS;
		break;
	case TCSADRAIN:
		request = TCSETSW;
		break;
	case TCSAFLUSH:
		request = TCSETSF;
		break;
	default:
		errno = EINVAL;
		return -1;
	}

	memset(&k, 0, sizeof(k));
	k.c_iflag = t->c_iflag;
	k.c_oflag = t->c_oflag;
	k.c_cflag = t->c_cflag;
	k.c_lflag = t->c_lflag;
	k.c_line = t->c_line;
	memcpy(k.c_cc, t->c_cc, EMU_KERNEL_NCCS < NCCS ? EMU_KERNEL_NCCS : NCCS);
	return ioctl(fd, request, &k);
}


/* libumockdev-preload forwards every read() and write() on an emulated node to the harness
 * and then calls usleep(0) "to force a context switch". glibc turns that into a zero-length
 * clock_nanosleep(), which does not return before the caller's timer slack (50 us by
 * default) has passed: up to 50 us added to every read() and write() of the host, two per
 * request/answer turnaround, that no real serial adapter costs. A zero-length sleep is a
 * yield, so give it as one; any other length is glibc's. */
int usleep(useconds_t usec)
{
	static int (*next_usleep)(useconds_t);
	int (*fn)(useconds_t) = __atomic_load_n(&next_usleep, __ATOMIC_RELAXED);

	if (usec == 0) {
		sched_yield();
		return 0;
	}
	if (!fn) {
		fn = (int (*)(useconds_t))dlsym(RTLD_NEXT, "usleep");
		if (!fn) {
			errno = ENOSYS;
			return -1;
		}
		__atomic_store_n(&next_usleep, fn, __ATOMIC_RELAXED);
	}
	return fn(usec);
}

/* glibc's own read()/write(), looked up once; NULL when not found (then the system call). */
static void *libc_symbol(void **cache, const char *name)
{
	void *fn = __atomic_load_n(cache, __ATOMIC_ACQUIRE);

	if (!fn) {
		void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);

		if (libc) {
			fn = dlsym(libc, name);
			dlclose(libc);
		}
		if (fn)
			__atomic_store_n(cache, fn, __ATOMIC_RELEASE);
	}
	return fn;
}

/* libumockdev-preload hands every read() and write() on an emulated node to the node's ioctl
 * handler first: two socket round trips to the testbed's worker thread (which serves every
 * adapter of the harness), then the usleep(0) above, then the real call. h5emu's handler
 * answers ioctls only and declines every read and write, so the round trips are a no-op that
 * only costs time, twice per request/answer turnaround. These wrappers sit in front of the
 * preload's and make the real call at once, on any descriptor: the result is what the
 * preload would have produced after the declined round trip. */
ssize_t read(int fd, void *buf, size_t count)
{
	static void *next_read;
	ssize_t (*fn)(int, void *, size_t) =
		(ssize_t (*)(int, void *, size_t))libc_symbol(&next_read, "read");

	if (!fn)
		return syscall(SYS_read, fd, buf, count);
	return fn(fd, buf, count);
}

ssize_t write(int fd, const void *buf, size_t count)
{
	static void *next_write;
	ssize_t (*fn)(int, const void *, size_t) =
		(ssize_t (*)(int, const void *, size_t))libc_symbol(&next_write, "write");

	if (!fn)
		return syscall(SYS_write, fd, buf, count);
	return fn(fd, buf, count);
}

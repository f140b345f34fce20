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
 * Built without sanitizers: it is loaded before a sanitized client's runtime. */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>

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

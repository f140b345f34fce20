/* Client side of the umockdev harness test: plain libserialport host code, run with the env
 * that emu_umockdev_write_env() produced. Exits 0 when every check passed; prints one line
 * per failure on stderr.
 *
 *   umockdev-client main INDEX ECHO_BYTES SERIAL_PREFIX
 *     lists ports (all adapters, serials, bus/address), checks the sysfs binding, opens
 *     /dev/ttyUSB<INDEX> at 115200 8E1, reads the config back, toggles DTR/RTS, writes
 *     ECHO_BYTES bytes and expects them echoed, then writes 'U' and expects the adapter to
 *     vanish: reads fail, the node is gone, the port is no longer listed.
 *   umockdev-client replug INDEX
 *     opens /dev/ttyUSB<INDEX> (after a plug) and writes 'R'. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libserialport.h>

static int failures;

#define CHECK(cond, ...)                                                    \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "client: check failed: %s: ", #cond); \
			fprintf(stderr, __VA_ARGS__);                       \
			fputc('\n', stderr);                                \
			failures++;                                         \
		}                                                           \
	} while (0)

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Finds the listed port whose USB serial is `serial`; checks its USB identity. */
static void check_listed(struct sp_port **list, const char *serial, unsigned index)
{
	char node[32];
	int found = 0;

	snprintf(node, sizeof(node), "/dev/ttyUSB%u", index);
	for (struct sp_port **p = list; *p; p++) {
		const char *s = sp_get_port_usb_serial(*p);
		int bus = -1, addr = -1, vid = -1, pid = -1;

		if (!s || strcmp(s, serial) != 0)
			continue;
		found++;
		CHECK(strcmp(sp_get_port_name(*p), node) == 0, "%s is %s", serial,
		      sp_get_port_name(*p));
		CHECK(sp_get_port_transport(*p) == SP_TRANSPORT_USB, "%s transport", serial);
		CHECK(sp_get_port_usb_bus_address(*p, &bus, &addr) == SP_OK && bus == 1 &&
		      addr == (int) index + 2, "%s bus %d address %d", serial, bus, addr);
		CHECK(sp_get_port_usb_vid_pid(*p, &vid, &pid) == SP_OK && vid == 0x0403 &&
		      pid == 0x6001, "%s vid %04x pid %04x", serial, vid, pid);
		CHECK(sp_get_port_usb_manufacturer(*p) &&
		      strcmp(sp_get_port_usb_manufacturer(*p), "FTDI") == 0, "%s manufacturer",
		      serial);
		CHECK(sp_get_port_usb_product(*p) &&
		      strcmp(sp_get_port_usb_product(*p), "USB-Serial") == 0, "%s product", serial);
	}
	CHECK(found == 1, "serial %s listed %d times", serial, found);
}

static int count_listed(const char *serial)
{
	struct sp_port **list = NULL;
	int n = 0;

	if (sp_list_ports(&list) != SP_OK)
		return -1;
	for (struct sp_port **p = list; *p; p++) {
		const char *s = sp_get_port_usb_serial(*p);

		if (s && strcmp(s, serial) == 0)
			n++;
	}
	sp_free_port_list(list);
	return n;
}

static int run_main(unsigned index, size_t echo_bytes, const char *prefix)
{
	struct sp_port **list = NULL, *port = NULL;
	struct sp_port_config *cfg = NULL;
	char node[32], serial[64], link[PATH_MAX], expect[64];
	unsigned char *out, *in;
	enum sp_parity parity = SP_PARITY_INVALID;
	int baud = 0, bits = 0, stop = 0;
	int r, n;
	double t0, t1;

	snprintf(node, sizeof(node), "/dev/ttyUSB%u", index);
	snprintf(serial, sizeof(serial), "%s%04u", prefix, index);

	/* Enumeration: every adapter of the testbed, with its USB identity. */
	CHECK(sp_list_ports(&list) == SP_OK, "sp_list_ports: %s", sp_last_error_message());
	if (list) {
		for (unsigned i = 0; i < 2; i++) {
			char s[64];

			snprintf(s, sizeof(s), "%s%04u", prefix, i);
			check_listed(list, s, i);
		}
		sp_free_port_list(list);
	}

	/* Physical-port binding: the tty's device is the usb-serial port of interface :1.0
	 * of USB port 1-<index+1>. */
	snprintf(expect, sizeof(expect), "/1-%u/1-%u:1.0/ttyUSB%u", index + 1, index + 1, index);
	{
		char *real;

		snprintf(link, sizeof(link), "/sys/class/tty/ttyUSB%u/device", index);
		real = realpath(link, NULL);
		CHECK(real && strlen(real) > strlen(expect) &&
		      strcmp(real + strlen(real) - strlen(expect), expect) == 0,
		      "%s resolves to %s", link, real ? real : strerror(errno));
		free(real);
	}

	r = sp_get_port_by_name(node, &port);
	CHECK(r == SP_OK, "sp_get_port_by_name(%s): %s", node, sp_last_error_message());
	if (r != SP_OK)
		return 1;
	CHECK(sp_get_port_usb_serial(port) && strcmp(sp_get_port_usb_serial(port), serial) == 0,
	      "serial of %s", node);

	r = sp_open(port, SP_MODE_READ_WRITE);
	CHECK(r == SP_OK, "sp_open(%s): %s", node, sp_last_error_message());
	if (r != SP_OK)
		return 1;
	CHECK(sp_set_baudrate(port, 115200) == SP_OK, "baud");
	CHECK(sp_set_bits(port, 8) == SP_OK, "bits");
	CHECK(sp_set_parity(port, SP_PARITY_EVEN) == SP_OK, "parity");
	CHECK(sp_set_stopbits(port, 1) == SP_OK, "stopbits");
	CHECK(sp_set_flowcontrol(port, SP_FLOWCONTROL_NONE) == SP_OK, "flow control");

	/* Read back: parity survives only if the harness kept the termios the host set. */
	CHECK(sp_new_config(&cfg) == SP_OK, "new config");
	CHECK(sp_get_config(port, cfg) == SP_OK, "get config: %s", sp_last_error_message());
	sp_get_config_baudrate(cfg, &baud);
	sp_get_config_bits(cfg, &bits);
	sp_get_config_parity(cfg, &parity);
	sp_get_config_stopbits(cfg, &stop);
	CHECK(baud == 115200 && bits == 8 && parity == SP_PARITY_EVEN && stop == 1,
	      "config read back %d %d %d %d", baud, bits, (int) parity, stop);
	sp_free_config(cfg);

	/* The AN3155 reset dance: lines low, then high. */
	CHECK(sp_set_dtr(port, SP_DTR_OFF) == SP_OK, "dtr off");
	CHECK(sp_set_rts(port, SP_RTS_OFF) == SP_OK, "rts off");
	{
		enum sp_signal sig = 0;

		CHECK(sp_get_signals(port, &sig) == SP_OK, "signals: %s", sp_last_error_message());
	}
	CHECK(sp_set_dtr(port, SP_DTR_ON) == SP_OK, "dtr on");
	CHECK(sp_set_rts(port, SP_RTS_ON) == SP_OK, "rts on");

	/* Data: every byte value, echoed by the chip side. */
	out = malloc(echo_bytes);
	in = malloc(echo_bytes);
	if (!out || !in)
		return 1;
	for (size_t i = 0; i < echo_bytes; i++)
		out[i] = (unsigned char) (i * 7 + 3);
	t0 = now_ms();
	n = sp_blocking_write(port, out, echo_bytes, 5000);
	CHECK(n == (int) echo_bytes, "write returned %d", n);
	n = sp_blocking_read(port, in, echo_bytes, 5000);
	t1 = now_ms();
	CHECK(n == (int) echo_bytes && memcmp(in, out, echo_bytes) == 0, "echo: read %d of %zu",
	      n, echo_bytes);
	printf("client %u: echo of %zu bytes in %.1f ms\n", index, echo_bytes, t1 - t0);
	free(out);
	free(in);

	/* Unplug on request. A hung-up tty reads as end of file, as on real hardware; writes
	 * and line requests fail with an error at once. */
	CHECK(sp_blocking_write(port, "U", 1, 1000) == 1, "write U");
	t0 = now_ms();
	/* Like a real unplug, the node and the sysfs entries go one after the other. Wait for
	 * the class entry to be gone before enumerating: libserialport 0.1.1's sp_list_ports()
	 * dereferences NULL when a listed port vanishes during the scan. */
	snprintf(link, sizeof(link), "/sys/class/tty/ttyUSB%u", index);
	while ((access(node, F_OK) == 0 || access(link, F_OK) == 0) && now_ms() - t0 < 5000)
		usleep(5000);
	{
		enum sp_signal sig;
		unsigned char b;

		n = sp_blocking_write(port, "x", 1, 1000);
		CHECK(n < 0, "write after unplug returned %d", n);
		if (n < 0)
			printf("client %u: write after unplug: %s\n", index, sp_last_error_message());
		CHECK(sp_get_signals(port, &sig) != SP_OK, "line status after unplug succeeded");
		n = sp_nonblocking_read(port, &b, 1);
		CHECK(n <= 0, "read after unplug returned %d", n);
	}
	CHECK(access(node, F_OK) < 0, "%s still exists after unplug", node);
	CHECK(count_listed(serial) == 0, "%s still listed after unplug", serial);
	sp_close(port);
	sp_free_port(port);
	{
		struct sp_port *gone = NULL;

		CHECK(sp_get_port_by_name(node, &gone) != SP_OK, "%s found after unplug", node);
		sp_free_port(gone);
	}
	return failures ? 1 : 0;
}

static int run_replug(unsigned index)
{
	struct sp_port *port = NULL;
	char node[32];

	snprintf(node, sizeof(node), "/dev/ttyUSB%u", index);
	CHECK(sp_get_port_by_name(node, &port) == SP_OK, "replugged %s not found", node);
	if (!port)
		return 1;
	CHECK(sp_open(port, SP_MODE_READ_WRITE) == SP_OK, "open replugged: %s",
	      sp_last_error_message());
	CHECK(sp_set_baudrate(port, 57600) == SP_OK, "baud");
	CHECK(sp_blocking_write(port, "R", 1, 1000) == 1, "write R");
	CHECK(sp_drain(port) == SP_OK, "drain");
	sp_close(port);
	sp_free_port(port);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "main") == 0)
		return run_main((unsigned) atoi(argv[2]), (size_t) atol(argv[3]), argv[4]);
	if (argc == 3 && strcmp(argv[1], "replug") == 0)
		return run_replug((unsigned) atoi(argv[2]));
	fprintf(stderr, "usage: %s main INDEX ECHO_BYTES PREFIX | replug INDEX\n", argv[0]);
	return 2;
}

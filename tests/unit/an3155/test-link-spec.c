/* Port specifications: parsing, formatting, and resolution against a list of ports. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "link.h"

static void expect_spec(const char *text, enum link_spec_kind kind, const char *key, int iface)
{
	struct link_spec s;
	char err[160] = "", back[200];

	assert_int_equal(link_spec_parse(text, &s, err, sizeof(err)), 0);
	assert_int_equal(s.kind, kind);
	assert_string_equal(s.key, key);
	assert_int_equal(s.interface, iface);
	assert_int_equal(link_spec_format(&s, back, sizeof(back)), 0);
	assert_string_equal(back, text);
}

static void expect_bad(const char *text, const char *word)
{
	struct link_spec s = { .kind = LINK_SPEC_TTY, .interface = 42 };
	char err[160] = "";

	assert_int_equal(link_spec_parse(text, &s, err, sizeof(err)), -EINVAL);
	if (!strstr(err, word))
		fail_msg("'%s': error '%s' lacks '%s'", text, err, word);
	/* Nothing written on failure. */
	assert_int_equal(s.kind, LINK_SPEC_TTY);
	assert_int_equal(s.interface, 42);
}

static void test_spec_valid(void **state)
{
	expect_spec("/dev/ttyUSB0", LINK_SPEC_PATH, "/dev/ttyUSB0", -1);
	/* A path keeps its '#': only serial: and usb: name interfaces. */
	expect_spec("/dev/odd#1", LINK_SPEC_PATH, "/dev/odd#1", -1);
	expect_spec("tty:/dev/pts/4", LINK_SPEC_TTY, "/dev/pts/4", -1);
	expect_spec("serial:SFIA0003", LINK_SPEC_SERIAL, "SFIA0003", -1);
	expect_spec("serial:FT4ABCD#0", LINK_SPEC_SERIAL, "FT4ABCD", 0);
	expect_spec("serial:FT4ABCD#3", LINK_SPEC_SERIAL, "FT4ABCD", 3);
	expect_spec("serial:A#B#255", LINK_SPEC_SERIAL, "A#B", 255);
	expect_spec("usb:1-3", LINK_SPEC_USB, "1-3", -1);
	expect_spec("usb:1-3#2", LINK_SPEC_USB, "1-3", 2);
	expect_spec("usb:2-1.4.2#1", LINK_SPEC_USB, "2-1.4.2", 1);
}

static void test_spec_invalid(void **state)
{
	char long_serial[300];

	expect_bad("serial:", "names no serial number");
	expect_bad("serial:#1", "names no serial number");
	expect_bad("usb:", "names no USB port");
	expect_bad("usb:#2", "names no USB port");
	expect_bad("tty:", "names no device");
	expect_bad("", "names no device");
	expect_bad("serial:ABC#", "not an interface number");
	expect_bad("serial:ABC#x", "not an interface number");
	expect_bad("serial:ABC#-1", "not an interface number");
	expect_bad("serial:ABC#256", "not an interface number");
	expect_bad("serial:ABC#1000", "not an interface number");
	expect_bad("usb:1-3#1a", "not an interface number");
	expect_bad("usb:1", "not a USB port path");
	expect_bad("usb:1-", "not a USB port path");
	expect_bad("usb:1-3.", "not a USB port path");
	expect_bad("usb:1-3..2", "not a USB port path");
	expect_bad("usb:a-3", "not a USB port path");
	expect_bad("usb:/dev/ttyUSB0", "not a USB port path");
	memset(long_serial, 'S', sizeof(long_serial));
	memcpy(long_serial, "serial:", 7);
	long_serial[sizeof(long_serial) - 1] = '\0';
	expect_bad(long_serial, "too long");
}

/* Two single adapters with unique serials, a 4-port adapter (one serial, one USB port), and
 * two adapters sharing a serial number (cheap clones). */
static struct link_port_info ports[] = {
	{ .path = "/dev/ttyUSB0", .serial = "A1", .usb_path = "1-1", .interface = 0 },
	{ .path = "/dev/ttyUSB1", .serial = "A2", .usb_path = "1-2", .interface = 0 },
	{ .path = "/dev/ttyUSB2", .serial = "Q", .usb_path = "1-3", .interface = 0 },
	{ .path = "/dev/ttyUSB3", .serial = "Q", .usb_path = "1-3", .interface = 1 },
	{ .path = "/dev/ttyUSB4", .serial = "Q", .usb_path = "1-3", .interface = 2 },
	{ .path = "/dev/ttyUSB5", .serial = "Q", .usb_path = "1-3", .interface = 3 },
	{ .path = "/dev/ttyUSB6", .serial = "0001", .usb_path = "1-4.1", .interface = 0 },
	{ .path = "/dev/ttyUSB7", .serial = "0001", .usb_path = "1-4.2", .interface = 0 },
	{ .path = "/dev/ttyACM0", .serial = NULL, .usb_path = "1-5", .interface = 2 },
};
#define N_PORTS (sizeof(ports) / sizeof(ports[0]))

static int resolve(const char *text, size_t *ret, char *err, size_t err_size)
{
	struct link_spec s;

	assert_int_equal(link_spec_parse(text, &s, NULL, 0), 0);
	return link_ports_resolve(ports, N_PORTS, &s, ret, err, err_size);
}

static void expect_port(const char *text, const char *path)
{
	char err[512] = "";
	size_t i = 99;

	if (resolve(text, &i, err, sizeof(err)) != 0)
		fail_msg("'%s' not resolved: %s", text, err);
	assert_string_equal(ports[i].path, path);
}

static void expect_refused(const char *text, int code, const char *const *words)
{
	char err[512] = "";
	size_t i = 99;

	assert_int_equal(resolve(text, &i, err, sizeof(err)), code);
	assert_int_equal(i, 99);
	for (; *words; words++)
		if (!strstr(err, *words))
			fail_msg("'%s': error '%s' lacks '%s'", text, err, *words);
}

static void test_resolve(void **state)
{
	expect_port("serial:A1", "/dev/ttyUSB0");
	expect_port("usb:1-2", "/dev/ttyUSB1");
	expect_port("serial:A1#0", "/dev/ttyUSB0");
	expect_port("serial:Q#0", "/dev/ttyUSB2");
	expect_port("serial:Q#3", "/dev/ttyUSB5");
	expect_port("usb:1-3#2", "/dev/ttyUSB4");
	expect_port("usb:1-4.2", "/dev/ttyUSB7");
	expect_port("usb:1-5", "/dev/ttyACM0");
	expect_port("usb:1-5#2", "/dev/ttyACM0");
}

static void test_resolve_refused(void **state)
{
	static const char *const multi[] = { "multi-port adapter with 4 ports",
		"serial:Q#0 (/dev/ttyUSB2)", "serial:Q#1 (/dev/ttyUSB3)",
		"serial:Q#2 (/dev/ttyUSB4)", "serial:Q#3 (/dev/ttyUSB5)", NULL };
	static const char *const multi_usb[] = { "usb:1-3#0", "usb:1-3#3", NULL };
	static const char *const no_iface[] = { "no interface 4", "#0 (/dev/ttyUSB2)",
		"#3 (/dev/ttyUSB5)", NULL };
	static const char *const twins[] = { "2 ports match 'serial:0001'", "1-4.1", "1-4.2",
		"by USB port", NULL };
	static const char *const twins0[] = { "2 ports match 'serial:0001#0'", NULL };
	static const char *const absent[] = { "no USB-serial adapter with serial number NOPE", NULL };
	static const char *const absent_usb[] = { "no USB-serial adapter on USB port 9-9", NULL };

	expect_refused("serial:Q", -ENOTUNIQ, multi);
	expect_refused("usb:1-3", -ENOTUNIQ, multi_usb);
	expect_refused("serial:Q#4", -ENODEV, no_iface);
	expect_refused("serial:0001", -ENOTUNIQ, twins);
	expect_refused("serial:0001#0", -ENOTUNIQ, twins0);
	expect_refused("serial:NOPE", -ENODEV, absent);
	expect_refused("usb:9-9", -ENODEV, absent_usb);
	expect_refused("usb:9-9#1", -ENODEV, absent_usb);
}

static void test_port_spec(void **state)
{
	static const char *const want[N_PORTS] = {
		"serial:A1", "serial:A2", "serial:Q#0", "serial:Q#1", "serial:Q#2", "serial:Q#3",
		"usb:1-4.1", "usb:1-4.2", "usb:1-5",
	};
	char buf[200];

	for (size_t i = 0; i < N_PORTS; i++) {
		size_t back = 99;

		assert_int_equal(link_port_spec(ports, N_PORTS, i, buf, sizeof(buf)), 0);
		assert_string_equal(buf, want[i]);
		/* The suggested spec resolves to the port it was made for. */
		assert_int_equal(resolve(buf, &back, NULL, 0), 0);
		assert_int_equal(back, i);
	}
	assert_int_equal(link_port_spec(ports, N_PORTS, N_PORTS, buf, sizeof(buf)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_valid),
		cmocka_unit_test(test_spec_invalid),
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_resolve_refused),
		cmocka_unit_test(test_port_spec),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

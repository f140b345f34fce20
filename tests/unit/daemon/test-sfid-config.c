/* sfid configuration: a good file, and errors that name file, line and key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sfid-config.h"

#define BASE "[hsm]\nmodule = /m.so\ntoken = t\npin_file = /p\n[database]\npath = /d.db\n" \
	     "[control]\noperator_group = root\nsupervisor_group = root\n"

static void expect_error(const char *text, const char *fragment)
{
	struct config *c = NULL;
	char err[512] = "";

	assert_true(config_parse_string("test.conf", text, &c, err, sizeof(err)) < 0);
	assert_null(c);
	if (!strstr(err, fragment))
		fail_msg("error '%s' lacks '%s'", err, fragment);
}

static void test_good(void **state)
{
	struct config *c = NULL;
	char err[512] = "";

	assert_int_equal(config_parse_string("test.conf",
		"[station]\nname = L1\n" BASE
		"[slot A]\nport = serial:SFIA0000\nbaud = 57600\nentry = rts=1,dtr=1,wait=10,dtr=0\n"
		"[slot B]\nport = usb:1-3\npoll_ms = 100\n[limits]\nshutdown_timeout_ms = 5000\n",
		&c, err, sizeof(err)), 0);
	assert_string_equal(c->station, "L1");
	assert_int_equal(c->n_slots, 2);
	assert_string_equal(c->slots[0].name, "A");
	assert_int_equal(c->slots[0].baud, 57600);
	assert_string_equal(c->slots[0].entry, "rts=1,dtr=1,wait=10,dtr=0");
	assert_int_equal(c->slots[1].baud, 115200);
	assert_int_equal(c->slots[1].poll_ms, 100);
	assert_int_equal(c->shutdown_timeout_ms, 5000);
	assert_int_equal(c->operator_gid, 0);
	assert_int_equal(config_slot_find(c, "B"), 1);
	assert_true(config_slot_find(c, "C") < 0);
	config_free(c);
}

static void test_errors(void **state)
{
	/* line 11 is "baud = fast" */
	expect_error(BASE "[slot A]\nbaud = fast\nport = /dev/x\n",
		     "test.conf:11: key 'baud' in [slot A]: 'fast' is not a whole number");
	expect_error(BASE "[slot A]\nport = /dev/x\ncolour = blue\n",
		     "test.conf:12: unknown key 'colour' in [slot A]");
	expect_error(BASE "[slot A]\nport = /dev/x\n[slot A]\nport = /dev/y\n",
		     "test.conf:12: section [slot A]: slot 'A' is already defined at line 10");
	expect_error(BASE "[slot A]\nbaud = 9600\n", "test.conf:10: key 'port' missing in [slot A]");
	expect_error(BASE "[slot A]\nport = /dev/x\nentry = dtr=2\n", "test.conf:12: key 'entry'");
	expect_error(BASE "[slot A]\nport = /dev/x\n[slot B]\nport = /dev/x\n",
		     "test.conf:12: key 'port' in [slot B]: port '/dev/x' is already used by slot A");
	expect_error(BASE "[slot A]\nport = /dev/x\n[wheels]\ncount = 4\n",
		     "test.conf:13: unknown section [wheels]");
	expect_error(BASE "[slot A]\nport = /dev/x\nthis is not ini\n", "test.conf:12: syntax error");
	expect_error("[hsm]\nmodule = /m.so\ntoken = t\n[database]\npath = /d\n[slot A]\nport = /x\n",
		     "exactly one of 'pin_file' or 'pin_credential'");
	expect_error("[hsm]\nmodule = /m.so\ntoken = t\npin_file = /p\n[database]\npath = /d\n"
		     "[control]\noperator_group = no-such-group-here\n[slot A]\nport = /x\n",
		     "group 'no-such-group-here' does not exist");
	expect_error(BASE, "no [slot NAME] section");
	expect_error(BASE "[control]\nmax_message = 10\n[slot A]\nport = /x\n",
		     "test.conf:11: key 'max_message' in [control]");
	expect_error(BASE "[slot bad name!]\nport = /x\n", "test.conf:10: section [slot bad name!]");
}

/* [central]: defaults, and a password is never taken from the conninfo. */
static void test_central(void **state)
{
	struct config *c = NULL;
	char err[512] = "";

	assert_int_equal(config_parse_string("test.conf", BASE "[slot A]\nport = /x\n",
					     &c, err, sizeof(err)), 0);
	assert_null(c->central.conninfo);
	c = config_free(c);
	assert_int_equal(config_parse_string("test.conf", BASE "[slot A]\nport = /x\n[central]\n"
					     "conninfo = host=h dbname=d sslmode=verify-full\n"
					     "password_file = /etc/sfid/central.pw\nbatch_records = 50\n",
					     &c, err, sizeof(err)), 0);
	assert_string_equal(c->central.conninfo, "host=h dbname=d sslmode=verify-full");
	assert_string_equal(c->central.password_file, "/etc/sfid/central.pw");
	assert_int_equal(c->central.batch_records, 50);
	assert_int_equal(c->central.batch_kb, 1024);
	assert_int_equal(c->central.interval_ms, 1000);
	assert_int_equal(c->central.retry_max_ms, 30000);
	config_free(c);

	expect_error(BASE "[slot A]\nport = /x\n[central]\nconninfo = host=h password=secret\n",
		     "holds a password");
	expect_error(BASE "[slot A]\nport = /x\n[central]\nconninfo = host=h\n"
		     "password_file = /a\npassword_credential = b\n", "not both");
	expect_error(BASE "[slot A]\nport = /x\n[central]\npassword_file = rel.pw\n",
		     "test.conf:13: key 'password_file' in [central]: 'rel.pw' is not an absolute path");
	expect_error(BASE "[slot A]\nport = /x\n[central]\nconninfo = h\nbatch_records = 0\n",
		     "test.conf:14: key 'batch_records' in [central]: '0' is not a whole number from 1");
	expect_error(BASE "[slot A]\nport = /x\n[central]\npassword_credential = c\n",
		     "[central] has a password but no 'conninfo'");
	expect_error(BASE "[slot A]\nport = /x\n[central]\nconninfo = h\nspeed = 9\n",
		     "test.conf:14: unknown key 'speed' in [central]");
}

/* A long line is refused, not split by inih's line limit into a line of its own: here the
 * tail of a comment would set the token. Its length is reported with the line. */
static void test_long_lines(void **state)
{
	char text[1024], comment[400];
	struct config *c = NULL;
	char err[512] = "", path[] = "/tmp/sfid-config-test.XXXXXX";
	FILE *f;
	int fd;

	memset(comment, '#', sizeof(comment));
	/* 198 characters fit (with the newline, inih's buffer of 200); 199 do not. */
	snprintf(text, sizeof(text), BASE "[slot A]\nport = /x\n%.198s\n", comment);
	assert_int_equal(config_parse_string("test.conf", text, &c, err, sizeof(err)), 0);
	c = config_free(c);
	snprintf(text, sizeof(text), BASE "[slot A]\nport = /x\n%.199s\n", comment);
	expect_error(text, "test.conf:12: line is longer than 198 characters");
	snprintf(text, sizeof(text), BASE "[slot A]\nport = /x\n[hsm]\n; %.*s token = other\n", 190,
		 comment);
	expect_error(text, "test.conf:13: line is longer than 198 characters");
	/* The same through a file. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_true(config_load(path, &c, err, sizeof(err)) < 0);
	unlink(path);
	if (!strstr(err, ":13: line is longer than 198 characters"))
		fail_msg("error '%s'", err);
}

/* A key set twice is refused with both lines, in one section and across a section
 * opened again. */
static void test_duplicate_keys(void **state)
{
	expect_error(BASE "[slot A]\nport = /x\nbaud = 9600\nbaud = 57600\n",
		     "test.conf:13: key 'baud' in [slot A] is already set at line 12");
	expect_error(BASE "[slot A]\nport = /x\n[hsm]\ntoken = other\n",
		     "test.conf:13: key 'token' in [hsm] is already set at line 3");
	expect_error(BASE "[slot A]\nport = /x\n[control]\noperator_group = root\n",
		     "key 'operator_group' in [control] is already set at line 8");
}

/* [hsm] pool: token names separated by commas or blanks, each once, not the line token. */
static void test_pool(void **state)
{
	struct config *c = NULL;
	char err[512] = "";

	assert_int_equal(config_parse_string("test.conf", BASE "[slot A]\nport = /x\n[hsm]\n"
					     "pool = b, serial:0042\tc\n", &c, err, sizeof(err)), 0);
	assert_int_equal(c->n_hsm_pool, 3);
	assert_string_equal(c->hsm_pool[0], "b");
	assert_string_equal(c->hsm_pool[1], "serial:0042");
	assert_string_equal(c->hsm_pool[2], "c");
	config_free(c);
	expect_error(BASE "[slot A]\nport = /x\n[hsm]\npool = b, t\n",
		     "test.conf:13: key 'pool' in [hsm]: 't' is the line token itself");
	expect_error(BASE "[slot A]\nport = /x\n[hsm]\npool = b c b\n",
		     "test.conf:13: key 'pool' in [hsm]: token 'b' is named twice");
	expect_error(BASE "[slot A]\nport = /x\n[hsm]\npool = 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
		     "key 'pool' in [hsm]: more than 15 tokens");
}

static void test_missing_file(void **state)
{
	struct config *c = NULL;
	char err[512];

	assert_true(config_load("/nonexistent/sfid.conf", &c, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent/sfid.conf: cannot open"));
}

/* [vendor] and a slot's backend: the tool and the RSSe file are needed once a slot uses it. */
static void test_vendor(void **state)
{
	struct config *c = NULL;
	char err[512] = "";

	assert_int_equal(config_parse_string("test.conf", BASE "[slot A]\nport = /x\n"
		"backend = cubeprogrammer\n[slot B]\nport = /y\nbackend = osfi\n[vendor]\n"
		"tool = /bin/sh\nrsse = /etc/passwd\nreader = 2\n"
		"install_timeout_ms = 90000\n", &c, err, sizeof(err)), 0);
	assert_true(c->slots[0].vendor);
	assert_false(c->slots[1].vendor);
	assert_string_equal(c->vendor.tool, "/bin/sh");
	assert_int_equal(c->vendor.reader, 2);
	assert_int_equal(c->vendor.install_timeout_ms, 90000);
	assert_int_equal(c->vendor.cert_timeout_ms, 60000);
	assert_null(c->vendor.modules);
	config_free(c);
	expect_error(BASE "[slot A]\nport = /x\nbackend = stlink\n",
		     "key 'backend' in [slot A]: 'stlink' is neither 'osfi' nor 'cubeprogrammer'");
	expect_error(BASE "[slot A]\nport = /x\nbackend = cubeprogrammer\n[vendor]\nrsse = /r\n",
		     "key 'tool' missing in [vendor]");
	expect_error(BASE "[slot A]\nport = /x\n[vendor]\ntool = bin/cli\n",
		     "key 'tool' in [vendor]: 'bin/cli' is not an absolute path");
	expect_error(BASE "[slot A]\nport = dfu:usb:1-3\nbackend = cubeprogrammer\n[vendor]\n"
		     "tool = /bin/sh\nrsse = /etc/passwd\n", "backend = cubeprogrammer needs a UART port");
	expect_error(BASE "[slot A]\nport = /x\nbackend = cubeprogrammer\n[vendor]\n"
		     "tool = /nonexistent/STM32_Programmer_CLI\nrsse = /etc/passwd\n",
		     "key 'tool' in [vendor]: /nonexistent/STM32_Programmer_CLI is not an executable");
	expect_error(BASE "[slot A]\nport = /x\nbackend = cubeprogrammer\n[vendor]\n"
		     "tool = /bin/sh\nrsse = /nonexistent/RSSe.bin\n",
		     "key 'rsse' in [vendor]: /nonexistent/RSSe.bin cannot be read");
	expect_error(BASE "[slot A]\nport = /x\n[vendor]\ncolour = blue\n",
		     "unknown key 'colour' in [vendor]");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_central),
		cmocka_unit_test(test_vendor),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_pool),
		cmocka_unit_test(test_missing_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* sfi-boot: talk to an STM32 in its AN3155 UART bootloader through one serial port.
 *
 * Exit codes: 0 ok, 1 usage, 2 link or port error (missing, gone, no answer, garbled),
 * 3 the chip refused a request (NACK), 4 verify mismatch, 5 file error. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "osfi.h"
#include "sfi-boot.h"

/* Commands, in the order --help lists them. New commands add a line here and a file. */
static const struct sfi_boot_command *const commands[] = {
	&sfi_boot_cmd_info,
	&sfi_boot_cmd_read,
	&sfi_boot_cmd_write,
	&sfi_boot_cmd_erase,
	&sfi_boot_cmd_go,
	&sfi_boot_cmd_cert,
	&sfi_boot_cmd_install,
	&sfi_boot_cmd_program,
	&sfi_boot_cmd_list,
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

void sfi_boot_error(const char *fmt, ...)
{
	va_list ap;

	fputs("sfi-boot: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int sfi_boot_fail(struct sfi_boot *b, int r, const char *what)
{
	char text[300] = "";
	const char *why = b->link ? link_last_error(b->link) : "";

	if (b->tp && b->tp_failed) {
		/* The link's sentence names the request and step; the port is added here, as
		 * the AN3155 commands' errors name it. */
		transport_describe(b->tp, text, sizeof(text));
		if (r != -TRANSPORT_E_GONE && !strstr(text, transport_port_name(b->tp)))
			snprintf(text + strlen(text), sizeof(text) - strlen(text), " on %s",
				 transport_port_name(b->tp));
		why = text;
	}

	sfi_boot_progress_end(b);
	if (!why || !*why)
		why = an3155_strerror(r);
	sfi_boot_error("%s: %s", what, why);
	if (r == -AN3155_E_NACK || r == -DFUSE_E_STALL || r == -DFUSE_E_STATUS)
		return SFI_BOOT_EXIT_REFUSED;
	return SFI_BOOT_EXIT_LINK;
}

static bool progress_shown;

void sfi_boot_progress(void *user_data, size_t done, size_t total)
{
	const char *label = user_data;

	fprintf(stderr, "\r%s: %zu/%zu bytes (%zu%%)", label, done, total,
		total ? done * 100 / total : 100);
	progress_shown = true;
}

void sfi_boot_progress_end(struct sfi_boot *b)
{
	if (progress_shown)
		fputc('\n', stderr);
	progress_shown = false;
}

static void debug_line(void *user_data, const char *line)
{
	fprintf(stderr, "sfi-boot: debug: %s\n", line);
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: sfi-boot --port SPEC [OPTIONS] COMMAND [ARGS]\n"
		"       sfi-boot list [--json]\n"
		"Talks to an STM32 in its system bootloader over UART (AN3155, 8E1) or USB DFU\n"
		"(AN3156, DfuSe).\n\n"
		"Options:\n"
		"  -p, --port SPEC       /dev/ttyUSB0, serial:ADAPTER_SERIAL, usb:USB_PORT (e.g. usb:1-3),\n"
		"                        or tty:PATH (any terminal, set up without libserialport);\n"
		"                        #N after serial: or usb: picks interface N of a multi-port\n"
		"                        adapter (serial:FT4ABC#2); 'sfi-boot list' shows them;\n"
		"                        USB DFU: dfu:usb:PATH (physical port, e.g. dfu:usb:1-3.2),\n"
		"                        dfu:serial:USB_SERIAL, or dfu: (the only DFU device)\n"
		"  -b, --baud N          line rate (default 115200)\n"
		"  -e, --entry SEQ       bootloader entry, e.g. rts=1,dtr=1,wait=20,dtr=0,wait=50\n"
		"                        (dtr=1 holds the chip in reset, rts=1 drives BOOT0 high)\n"
		"  -t, --timeout-ms N    per-step timeout (default 1000; erase keeps its own)\n"
		"  -r, --retries N       retries after a timeout or garbled answer (default 2)\n"
		"      --no-verify       write: do not read back\n"
		"      --erase           write: erase the flash sectors it covers first\n"
		"  -v, --verbose         show every frame on stderr\n"
		"  -h, --help            this text\n"
		"  -V, --version         print the version\n\n"
		"Commands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++) {
		char head[256];

		snprintf(head, sizeof(head), "%s %s", commands[i]->name, commands[i]->args);
		/* A long synopsis gets a line of its own, whole. */
		if (strlen(head) > 31)
			fprintf(f, "  %s\n  %-31s %s\n", head, "", commands[i]->summary);
		else
			fprintf(f, "  %-31s %s\n", head, commands[i]->summary);
	}
	fprintf(f,
		"\nNumbers may be decimal or 0x hexadecimal.\n"
		"Exit status: 0 ok, 1 usage, 2 link or port error, 3 chip refused (NACK),\n"
		"4 verify mismatch, 5 file error.\n");
}

static int parse_unsigned(const char *opt, const char *s, unsigned min, unsigned max,
			  unsigned *ret)
{
	uint32_t v;

	if (sfi_parse_u32(s, &v) < 0 || v < min || v > max) {
		sfi_boot_error("%s wants a number from %u to %u, not '%s'", opt, min, max, s);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

/* Opens the port, runs the entry sequence and synchronises. */
static int sfi_boot_connect(struct sfi_boot *b)
{
	char err[256] = "";
	int r;

	struct transport_options o;

	/* One link: the transport's UART backend, which the OSFI commands drive as sfid does;
	 * the other commands use its AN3155 link directly. */
	transport_options_default(&o);
	o.baud = b->opt.baud;
	o.step_ms = b->opt.timeouts.ack_ms;
	o.block_ms = b->opt.timeouts.block_ms;
	o.answer_ms = b->opt.timeouts.special_ms;
	o.retries = b->opt.retries;
	o.debug = b->opt.debug;
	o.user_data = b->opt.user_data;
	r = transport_open(b->port_spec, &o, &b->tp, err, sizeof(err));
	if (r < 0) {
		sfi_boot_error("%s", *err ? err : an3155_strerror(r));
		return SFI_BOOT_EXIT_LINK;
	}
	if (sfi_boot_is_dfu_spec(b->port_spec)) {
		enum transport_presence p;

		/* USB DFU: the device on the bound port, its DFU state machine idle. */
		r = transport_probe_sync(b->tp, 0, &p);
		if (r < 0)
			return sfi_boot_dfu_fail(b, r, "DFU device");
		return SFI_BOOT_EXIT_OK;
	}
	b->link = transport_uart_link(b->tp);
	if (b->entry) {
		r = link_enter_bootloader(b->link, b->entry);
		if (r == -EINVAL) {
			sfi_boot_error("--entry: %s", link_last_error(b->link));
			return SFI_BOOT_EXIT_USAGE;
		}
		if (r < 0)
			return sfi_boot_fail(b, r, "bootloader entry");
	}
	r = link_sync(b->link);
	if (r < 0)
		return sfi_boot_fail(b, r, "sync");
	return SFI_BOOT_EXIT_OK;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "baud", required_argument, NULL, 'b' },
		{ "entry", required_argument, NULL, 'e' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "retries", required_argument, NULL, 'r' },
		{ "no-verify", no_argument, NULL, 'N' },
		{ "erase", no_argument, NULL, 'E' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{},
	};
	struct sfi_boot b = {};
	const struct sfi_boot_command *cmd = NULL;
	unsigned v;
	int c, nargs, r;

	link_options_default(&b.opt);
	/* '+': options end at the command name, so command arguments may start with '-'. */
	while ((c = getopt_long(argc, argv, "+p:b:e:t:r:vhV", options, NULL)) != -1) {
		switch (c) {
		case 'p':
			b.port_spec = optarg;
			break;
		case 'b':
			if (parse_unsigned("--baud", optarg, 1200, 4000000, &b.opt.baud) < 0)
				return SFI_BOOT_EXIT_USAGE;
			break;
		case 'e':
			b.entry = optarg;
			break;
		case 't':
			if (parse_unsigned("--timeout-ms", optarg, 10, 600000, &v) < 0)
				return SFI_BOOT_EXIT_USAGE;
			b.opt.timeouts.ack_ms = v;
			b.opt.timeouts.block_ms = v;
			break;
		case 'r':
			if (parse_unsigned("--retries", optarg, 0, 20, &b.opt.retries) < 0)
				return SFI_BOOT_EXIT_USAGE;
			break;
		case 'N':
			b.no_verify = true;
			break;
		case 'E':
			b.erase_first = true;
			break;
		case 'v':
			b.verbose++;
			break;
		case 'h':
			usage(stdout);
			return SFI_BOOT_EXIT_OK;
		case 'V':
			printf("sfi-boot %s\n", SFID_VERSION);
			return SFI_BOOT_EXIT_OK;
		default:
			fprintf(stderr, "Try 'sfi-boot --help'.\n");
			return SFI_BOOT_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		sfi_boot_error("no command given; try 'sfi-boot --help'");
		return SFI_BOOT_EXIT_USAGE;
	}
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(argv[optind], commands[i]->name) == 0)
			cmd = commands[i];
	if (!cmd) {
		sfi_boot_error("unknown command '%s'; try 'sfi-boot --help'", argv[optind]);
		return SFI_BOOT_EXIT_USAGE;
	}
	nargs = argc - optind - 1;
	if (nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args)) {
		sfi_boot_error("usage: sfi-boot %s%s %s", cmd->no_port ? "" : "--port SPEC ",
			       cmd->name, cmd->args);
		return SFI_BOOT_EXIT_USAGE;
	}
	if (cmd->no_port) {
		r = cmd->check ? cmd->check(nargs, argv + optind + 1) : SFI_BOOT_EXIT_OK;
		if (r == SFI_BOOT_EXIT_OK)
			r = cmd->run(&b, nargs, argv + optind + 1);
		return r;
	}
	if (!b.port_spec) {
		sfi_boot_error("--port is required (e.g. --port serial:SFIA0003)");
		return SFI_BOOT_EXIT_USAGE;
	}
	if (sfi_boot_is_dfu_spec(b.port_spec) && b.entry) {
		sfi_boot_error("--entry drives a serial adapter's modem lines: not with a DFU port");
		return SFI_BOOT_EXIT_USAGE;
	}
	if (!sfi_boot_is_dfu_spec(b.port_spec)) {
		struct link_spec spec;
		char err[256];

		if (link_spec_parse(b.port_spec, &spec, err, sizeof(err)) < 0) {
			sfi_boot_error("--port: %s", err);
			return SFI_BOOT_EXIT_USAGE;
		}
	}
	if (b.verbose) {
		b.opt.debug = debug_line;
		b.opt.user_data = &b;
	}
	b.progress = isatty(STDERR_FILENO) && !b.verbose;
	if (b.entry) {
		struct link_entry_step steps[LINK_ENTRY_MAX_STEPS];
		char err[128];
		size_t n;

		if (link_entry_parse(b.entry, steps, LINK_ENTRY_MAX_STEPS, &n, err,
				     sizeof(err)) < 0) {
			sfi_boot_error("--entry: %s", err);
			return SFI_BOOT_EXIT_USAGE;
		}
	}
	if (cmd->check) {
		r = cmd->check(nargs, argv + optind + 1);
		if (r != SFI_BOOT_EXIT_OK)
			return r;
	}

	r = sfi_boot_connect(&b);
	if (r == SFI_BOOT_EXIT_OK)
		r = cmd->run(&b, nargs, argv + optind + 1);
	sfi_boot_progress_end(&b);
	b.link = NULL;
	b.tp = transport_close(b.tp);
	return r;
}

/* sfi-boot list: the serial ports of the connected USB adapters, with the specification that
 * names each one (serial number or USB port, and the interface of a multi-port adapter).
 * Opens no port and needs no --port. */
#include <string.h>

#include "sfi-boot.h"

static int list_check(int argc, char **argv)
{
	if (argc == 1 && strcmp(argv[0], "--json") != 0) {
		sfi_boot_error("list takes only --json, not '%s'", argv[0]);
		return SFI_BOOT_EXIT_USAGE;
	}
	return SFI_BOOT_EXIT_OK;
}

static int list_run(struct sfi_boot *b, int argc, char **argv)
{
	struct link_port_info *ports = NULL;
	char err[256] = "";
	size_t n = 0;
	int r;

	r = link_ports_list(&ports, &n, err, sizeof(err));
	if (r < 0) {
		sfi_boot_error("%s", err);
		return SFI_BOOT_EXIT_LINK;
	}
	link_ports_print(stdout, ports, n, argc == 1);
	link_ports_free(ports, n);
	if (fflush(stdout) != 0) {
		sfi_boot_error("cannot write the list: %m");
		return SFI_BOOT_EXIT_FILE;
	}
	return SFI_BOOT_EXIT_OK;
}

const struct sfi_boot_command sfi_boot_cmd_list = {
	.name = "list",
	.args = "[--json]",
	.summary = "list USB-serial adapters: port, spec, serial, USB port, interface (no --port)",
	.min_args = 0,
	.max_args = 1,
	.no_port = true,
	.check = list_check,
	.run = list_run,
};

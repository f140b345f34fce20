/* sfi-boot: technician tool for chips in their AN3155 UART bootloader. Each command lives in
 * its own file and is listed in the table of sfi-boot.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "link.h"
#include "sfi-file.h"
#include "sfi-parse.h"
#include "transport.h"

/* Exit codes (also in --help). */
enum sfi_boot_exit {
	SFI_BOOT_EXIT_OK = 0,
	SFI_BOOT_EXIT_USAGE = 1,	/* bad command line */
	SFI_BOOT_EXIT_LINK = 2,		/* port missing or gone, no answer, garbled link */
	SFI_BOOT_EXIT_REFUSED = 3,	/* the chip refused a request (NACK) */
	SFI_BOOT_EXIT_VERIFY = 4,	/* read-back differs from what was written */
	SFI_BOOT_EXIT_FILE = 5,		/* a local file cannot be read or written */
};

struct sfi_boot {
	const char *port_spec;
	const char *entry;		/* NULL: leave the modem lines alone */
	struct link_options opt;
	int verbose;
	bool no_verify;
	bool erase_first;		/* write: erase the flash sectors it covers first */
	bool progress;			/* stderr is a terminal */
	struct transport *tp;		/* set by sfi_boot_connect() */
	struct link *link;		/* its AN3155 link, for the commands beyond OSFI */
	bool tp_failed;			/* the last failure was the transport's (OSFI) */
};

struct sfi_boot_command {
	const char *name;
	const char *args;		/* "ADDR LEN FILE" */
	const char *summary;
	int min_args, max_args;		/* after the command name; max -1 = unlimited */
	bool no_port;			/* runs without --port and without a chip */
	/* Checks the arguments before any I/O (NULL: nothing to check); returns an enum
	 * sfi_boot_exit value, having printed the reason. */
	int (*check)(int argc, char **argv);
	/* Runs with the chip connected and synced (with no_port: with b->link NULL); returns an
	 * enum sfi_boot_exit value. */
	int (*run)(struct sfi_boot *b, int argc, char **argv);
};

extern const struct sfi_boot_command sfi_boot_cmd_info;
extern const struct sfi_boot_command sfi_boot_cmd_read;
extern const struct sfi_boot_command sfi_boot_cmd_write;
extern const struct sfi_boot_command sfi_boot_cmd_erase;
extern const struct sfi_boot_command sfi_boot_cmd_go;
extern const struct sfi_boot_command sfi_boot_cmd_cert;
extern const struct sfi_boot_command sfi_boot_cmd_install;
extern const struct sfi_boot_command sfi_boot_cmd_program;
extern const struct sfi_boot_command sfi_boot_cmd_list;

/* USB DFU (cmd-dfu.c): with --port dfu:... b->link is NULL and these run on the DfuSe
 * backend; the memory helpers pick the link's way. */
bool sfi_boot_is_dfu_spec(const char *spec);
int sfi_boot_mem_read(struct sfi_boot *b, uint32_t addr, uint8_t *buf, size_t len);
int sfi_boot_mem_write(struct sfi_boot *b, uint32_t addr, const uint8_t *data, size_t len);
int sfi_boot_dfu_erase(struct sfi_boot *b, enum link_erase_kind kind, const uint16_t *pages,
		       size_t n);
/* Erases the flash sectors [addr, addr + len) touches, in one operation. */
int sfi_boot_dfu_erase_range(struct sfi_boot *b, uint32_t addr, size_t len);
int sfi_boot_dfu_go(struct sfi_boot *b, uint32_t addr);
/* Prints the USB and DFU descriptors; returns an enum sfi_boot_exit value. */
int sfi_boot_dfu_describe(struct sfi_boot *b, bool *ret_osfi);
/* sfi_boot_fail() with the transport's reason. */
int sfi_boot_dfu_fail(struct sfi_boot *b, int r, const char *what);

/* Prints "sfi-boot: <what>: <link's reason>" once and returns the exit code for error r. */
int sfi_boot_fail(struct sfi_boot *b, int r, const char *what);
/* Prints "sfi-boot: <message>" on stderr. */
__attribute__((format(printf, 1, 2))) void sfi_boot_error(const char *fmt, ...);
/* Progress callback for link_set_progress(); user_data is a const char * label. */
void sfi_boot_progress(void *user_data, size_t done, size_t total);
/* Ends a progress line. */
void sfi_boot_progress_end(struct sfi_boot *b);

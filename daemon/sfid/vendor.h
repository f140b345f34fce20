/* The vendor backend: for slots with `backend = cubeprogrammer`, the certificate, license and
 * install steps run STM32CubeProgrammer's command-line tool (STM32_Programmer_CLI) instead of
 * OSFI (docs/operations.md, "The vendor backend").
 *
 * One instance per sfid (struct vendor: the [vendor] configuration, the reader's queue, the
 * tool's processes); one struct vendor_chip per slot for the chip in it. Every process runs
 * from the event loop (a pipe for its output, SIGCHLD, a timeout, its process group killed on
 * cancel); the ledger's and the runs' rows are written on the ledger connection through
 * licensing_exclusive(), one task at a time, in the order they were asked for. The license
 * calls of one reader never overlap: a chip's counter, license and counter calls run while
 * it is at the head of the reader's queue. Everything here runs on the loop thread except
 * the ledger tasks. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "osfi.h"

struct event_base;
struct licensing;
struct vendor_config;
struct vendor;
struct vendor_chip;

struct vendor_params {
	struct event_base *base;
	const struct vendor_config *cfg;
	struct licensing *licensing;	/* its ledger connection */
	const char *work_dir;		/* certificates and licenses, a folder per slot */
	/* Where sfid keeps its copy of a job's file ("sfi", "lic"). */
	void (*job_file)(void *user, int64_t job_id, const char *what, char *out, size_t size);
	/* The line must halt (the reader's HSM is empty or does not answer): one sentence. */
	void (*halt)(void *user, const char *why);
	void *user;
};

int vendor_new(const struct vendor_params *p, struct vendor **ret);
/* Kills what still runs. Accepts NULL; returns NULL. */
struct vendor *vendor_free(struct vendor *v);

/* A step's end: r 0, or negative with one sentence in cause; halted when the failure
 * halted the line (the cause says why). */
typedef void (*vendor_done_fn)(void *user, int r, const char *cause);

/* A slot's handle (name: for the work files and messages). */
int vendor_chip_new(struct vendor *v, const char *slot_name, struct vendor_chip **ret);
struct vendor_chip *vendor_chip_free(struct vendor_chip *c);
/* Stops what runs for the chip (its process group is killed) and forgets its callback. A
 * license step that reserved a count still settles the ledger by itself afterwards. */
void vendor_chip_cancel(struct vendor_chip *c);
/* True while a step runs. */
bool vendor_chip_busy(const struct vendor_chip *c);

/* -c port=PORT br=BAUD P=EVEN -gc CERT. uid_hex: the chip's UID as the slot read it through
 * the bootloader (24 hex digits), its key in the ledger; a certificate in OSFI's layout (what
 * the stand-in gives) must name the same UID. attempt_id: the chip's attempt, on disk. */
int vendor_certificate(struct vendor_chip *c, const char *port, unsigned baud,
		       const char *uid_hex, int64_t attempt_id, vendor_done_fn done, void *user);

/* The chip's license for the job's image: a license the ledger holds for it is reused,
 * otherwise the reader's counter is read, the intent recorded, -hsmglfcb run, the counter
 * read again and the license recorded (or the reservation settled). set gets the ledger row
 * (n = 1). */
int vendor_license(struct vendor_chip *c, const struct job *job, struct license_set *set,
		   vendor_done_fn done, void *user);

/* -c ... -sfi IMAGE hsm=0 LICENSE -rsse RSSE [-mcsv MODULES]; global: the job's global
 * license file instead of the chip's. */
int vendor_install(struct vendor_chip *c, const char *port, unsigned baud,
		   const struct job *job, bool global, vendor_done_fn done, void *user);

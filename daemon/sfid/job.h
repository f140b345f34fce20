/* Jobs: an image, the licenses every chip needs for it, a target count. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "an3155-wire.h"
#include "osfi.h"
#include "serial.h"

struct json_object;

/* A plain job's firmware files at most. */
#define JOB_FIRMWARE_MAX 16
/* sfid's copy of a plain job's firmware at most: the STM32H5's 2 MiB and the pieces' heads. */
#define JOB_PLAIN_COPY_MAX (4u << 20)

/* One piece of a plain job's firmware: bytes at an address of the STM32H5's flash. */
struct job_segment {
	uint32_t address;
	uint8_t *data;
	size_t size;
};

/* The image's license and one per module. */
#define JOB_LICENSES_MAX 17

/* One license every chip of a job receives: the image's (target 0) first, then one per
 * module in the order of the module license information file. */
struct job_license {
	uint32_t target;	/* OSFI_TARGET_IMAGE or a module id */
	bool global;		/* uncounted: the same record for every chip */
	uint8_t record[OSFI_LICENSE_LEN];
	uint8_t firmware_id[OSFI_ID_LEN];
	char firmware_id_hex[2 * OSFI_ID_LEN + 1];
	int token;		/* counted: index in sfid.tokens, -1 while not found */
	unsigned line;		/* of the module file, for messages (0: the image) */
};

/* The loaded job: an image and what is needed to license it. */
struct job {
	int64_t id;
	char *image_path;
	uint8_t *image;
	size_t image_len;
	uint8_t image_id[OSFI_ID_LEN];
	char image_id_hex[2 * OSFI_ID_LEN + 1];
	char digest_hex[2 * OSFI_ID_LEN + 1];
	uint16_t device_id;
	uint8_t final_state;	/* product state the image sets, 0 if it sets none */
	bool has_final_state;
	char *module_file;
	/* A global (uncounted) license for the image instead of HSM chip licenses. */
	bool global;
	char *global_file;
	struct job_license lic[JOB_LICENSES_MAX];
	size_t n_lic;
	uint32_t target;	/* chips to install; 0: no limit */
	uint32_t installed;
	uint32_t failed;	/* chips that failed once licensed or written (the yield's) */
	uint32_t refused;	/* chips refused untouched, once per chip */
	uint32_t halted;	/* chips stopped by a line halt before anything was written */
	/* Chips in progress that may still be installed: with installed, never over target. */
	uint32_t reserved;
	bool complete_told;	/* "job complete" was logged and sent to watchers */
	int64_t started_ms;	/* wall clock when its first chip began; 0: none yet */
	char (*refused_uids)[2 * OSFI_UID_LEN + 1];	/* the chips counted in refused */
	size_t n_refused_uids, cap_refused_uids;
	char *loaded_by;
	int64_t loaded_ms;

	/* A plain job: firmware written with the bootloader's memory commands (no OSFI, no
	 * license, nothing protected). image_path lists its files, digest_hex and image_id_hex
	 * are the SHA-256 of the firmware's bytes in address order, n_lic is 0. */
	bool plain;
	char *firmware;			/* its files as given, one per line */
	struct job_segment *seg;	/* in address order, none overlapping, all in flash */
	size_t n_seg;
	uint64_t fw_bytes;		/* bytes of all segments */
	uint16_t *sectors;		/* the flash sectors they touch, ascending */
	size_t n_sectors;
	bool go;			/* start each chip at go_address once verified */
	uint32_t go_address;
	struct job_serial serial;	/* a per-chip value written after the firmware */

	/* A vendor job: an image for ST's own SFI, installed by STM32CubeProgrammer on vendor
	 * slots only. sfid does not read it: image holds its bytes, digest_hex and image_id_hex
	 * are their SHA-256; module_file (if any) is the tool's -mcsv file, kept in modules;
	 * global_file (if global) the tool's license file, kept in global_bytes. */
	bool vendor;
	uint8_t *modules;
	size_t modules_len;
	uint8_t *global_bytes;
	size_t global_len;
};

/* The licenses issued or reused for one chip, in job order. */
struct license_set {
	size_t n;
	int64_t id[JOB_LICENSES_MAX];	/* ledger row; 0 for a global license */
	bool reused[JOB_LICENSES_MAX];
	uint8_t record[JOB_LICENSES_MAX][OSFI_LICENSE_LEN];
	bool counted[JOB_LICENSES_MAX];		/* a count was taken now: counter_after holds */
	uint32_t counter_after[JOB_LICENSES_MAX];
};


/* Descriptors of the job's files, opened by the supervisor's sfictl and passed over the
 * control socket: sfid reads what the supervisor may read. -1: read the path. */
struct job_fds {
	int image, modules, global;
	size_t n_lic;			/* module licenses, named as in the module file */
	const char *lic_name[JOB_LICENSES_MAX];
	int lic_fd[JOB_LICENSES_MAX];
};

/* The line's token, whose firmware a job's image must be unless a global license comes
 * with it. */
struct job_line_token {
	uint8_t firmware_id[OSFI_ID_LEN];
	const char *label;
};

/* Loads and checks a job: the image must parse, be for the STM32H5 and be the firmware tok
 * licenses (or come with a global license for it; tok NULL: no token to match); a module
 * license information file must name every module of the image with its address, and each
 * module license must be a global license for it or name a token by the module's firmware
 * id. Module tokens are not looked up here (see tokens.h). Returns 0, or with one sentence
 * in reason: -ENOENT a file cannot be read, -EINVAL the files do not make a job for this line,
 * -ENOMEM. */
int job_load(const struct job_line_token *tok, const char *image, const char *modules,
	     const char *global, const struct job_fds *fds, uint32_t target, const char *user,
	     struct job **ret, char *reason, size_t reason_size);
/* Loads a plain job: files[i] is FILE (ELF or Intel HEX) or FILE@ADDR (raw binary), read
 * from fds[i] when fds is given and fds[i] >= 0 (files[i] then only names it). Every byte
 * must lie in the STM32H5's flash, segments must not overlap, each must start on a flash
 * word; go with go_addr_set false starts at the lowest address. Returns 0, or -EINVAL /
 * -ENOENT / -ENOMEM with one sentence in reason. */
int job_load_plain(const char *const *files, const int *fds, size_t n, bool go,
		   bool go_addr_set, uint32_t go_addr, uint32_t target, const char *user,
		   struct job **ret, char *reason, size_t reason_size);
/* A plain job's loaded firmware as one buffer (malloc'd), for sfid's copy: 0 or -ENOMEM. */
int job_plain_copy(const struct job *j, uint8_t **ret, size_t *ret_len);
/* The plain job again from that copy after a restart: firmware names its files as loaded
 * (one per line), go and go_addr as recorded. Checked as job_load_plain() checks; the
 * caller compares the digest with the one recorded. Returns 0, or -EINVAL / -ENOMEM with
 * one sentence in reason. */
int job_restore_plain(const uint8_t *copy, size_t len, const char *firmware, bool go,
		      uint32_t go_addr, uint32_t target, const char *user, struct job **ret,
		      char *reason, size_t reason_size);
/* Loads a vendor job: image is opaque (any non-empty file up to 64 MiB), recorded by its
 * SHA-256 and size; modules an optional -mcsv file, global an optional license file for
 * every chip (else each chip's license comes from the reader's STM32HSM). Files are read from
 * fds when given. Returns 0, or -EINVAL / -ENOENT / -ENOMEM with one sentence in reason. */
int job_load_vendor(const char *image, const char *modules, const char *global,
		    const struct job_fds *fds, uint32_t target, const char *user,
		    struct job **ret, char *reason, size_t reason_size);
/* An OSFI job's serial number is written after the install, over the bootloader's memory
 * commands, so only on a chip its image leaves Open or Provisioning (later states refuse
 * them). final_state holds the state the supervisor declared at load (sfid cannot read the
 * image's encrypted configuration); the install checks it after FINALIZE. */
static inline bool job_serial_state_takes_writes(uint8_t product_state)
{
	return product_state == STM32H5_PS_OPEN || product_state == STM32H5_PS_PROVISIONING;
}
/* The addresses an OSFI job's image writes (its F, K and M areas; malloc'd), for the serial
 * number's overlap check: 0, -EINVAL, -ENOMEM. */
int job_image_ranges(const struct job *j, struct job_serial_range **ret, size_t *ret_n);
/* An OSFI job's serial number and declared product state as sfid keeps them next to its
 * database (job-ID.serial): malloc'd text, NULL without a serial number (or out of memory).
 * Back onto the job loaded again after a restart: 0, or -EINVAL (not such a text). */
char *job_osfi_serial_keep(const struct job *j);
int job_osfi_serial_restore(struct job *j, const char *text, size_t len);

/* "osfi", "plain" or "vendor". */
static inline const char *job_kind(const struct job *j)
{
	return j->plain ? "plain" : j->vendor ? "vendor" : "osfi";
}
struct job *job_free(struct job *j);
/* The job as shown by `job show`, `status` and the job event. */
struct json_object *job_json(const struct job *j);

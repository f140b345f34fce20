/* Internal interfaces of h5emu: chip profiles, chip life cycle, the AN3155 device-side
 * state machine and fault injection. Everything here is free of I/O except the chip's
 * persistence, so that the fuzz target can drive one chip in memory. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emu-chip.h"
#include "osfi-wire.h"

/* Option register ids: the OSFI 'C' area numbering (osfi-wire.h); index 0 is unused. */
enum emu_opt {
	EMU_OPT_OPTSR = OSFI_OPT_OPTSR,
	EMU_OPT_WRP1R = OSFI_OPT_WRP1R,
	EMU_OPT_WRP2R = OSFI_OPT_WRP2R,
	_EMU_OPT_MAX = OSFI_OPT_MAX + 1,
};

struct emu_profile {
	const char *name;
	uint16_t device_id;
	uint8_t bl_version;
	const uint8_t *cmds;	/* answered by Get, in order */
	size_t n_cmds;
	uint32_t flash_base, flash_size, page_size, bank_size;
	uint32_t write_unit;	/* flash/OTP programming granularity */
	uint32_t sram_base, sram_size;
	uint32_t otp_base, otp_size;
	uint32_t uid_addr, flashsize_addr;
	uint32_t obk_base, obk_size;	/* 0 when the part has none */
	bool product_state;	/* H5 life cycle; otherwise RDP commands */
};

/* Returns the profile called `name` ("h563", "g474"), or NULL. */
const struct emu_profile *emu_profile_find(const char *name);

/* What the bootloader emits: answer bytes and fault markers, consumed by the port. */
enum emu_tx_kind {
	EMU_TX_BYTE,
	EMU_TX_DELAY,	/* hold the following bytes for `ms` */
	EMU_TX_VANISH,	/* the adapter hangs up here */
};

struct emu_tx {
	uint8_t kind;
	uint8_t byte;
	uint32_t ms;
};

struct emu_txq {
	struct emu_tx *items;
	size_t len, cap, head;
};

/* Appends an item; returns 0 or -ENOMEM. */
int emu_txq_push(struct emu_txq *q, struct emu_tx t);
/* Number of items not yet taken. */
size_t emu_txq_pending(const struct emu_txq *q);
/* Takes the oldest item; returns false when empty. */
bool emu_txq_pop(struct emu_txq *q, struct emu_tx *ret);
/* Forgets every pending item. */
void emu_txq_clear(struct emu_txq *q);
/* Releases the queue's memory; the queue is empty and reusable afterwards. */
void emu_txq_free(struct emu_txq *q);

/* --- Fault injection (emu-fault.c) --- */

enum emu_fault_action {
	EMU_FAULT_NACK,
	EMU_FAULT_DROP,
	EMU_FAULT_CORRUPT,
	EMU_FAULT_DELAY,
	EMU_FAULT_VANISH,
	EMU_FAULT_GARBAGE,
};

struct emu_fault {
	int chip;		/* -1: any */
	int cmd;		/* -1: any opcode */
	int subop;		/* -1: any (only 0x50/0x51 match when set) */
	unsigned nth;		/* fires from the nth matching occurrence (1-based) */
	unsigned byte;		/* index of the answer byte the action applies to */
	bool repeat;		/* every occurrence from nth on, else once */
	enum emu_fault_action action;
	uint32_t ms;		/* for delay */
	unsigned seen;		/* occurrences so far */
	bool spent;
};

/* Parses one --fault SPEC. Returns 0, or -EINVAL with a message in err. */
int emu_fault_parse(const char *spec, struct emu_fault *ret, char *err, size_t err_len);

struct emu_faults {
	struct emu_fault *v;
	size_t n;
};

/* --- Chip life cycle (emu-chip.c) --- */

/* Hooks into the OSFI side; NULL members mean "no OSFI": sub-commands are NACKed. */
struct emu_special_ops {
	int (*special)(struct emu_chip *c, bool extended, uint16_t subop, const uint8_t *p1,
		       size_t n1, const uint8_t *p2, size_t n2, uint8_t *out, size_t out_max,
		       size_t *out_len, uint16_t *status);
	bool (*subop_known)(uint16_t subop);
	void (*reset)(struct emu_chip *c);
};

enum emu_mode {
	EMU_MODE_BOOTLOADER,
	EMU_MODE_APP,		/* runs the application: ignores the host */
	EMU_MODE_RESET,		/* held in reset (NRST low) */
};

struct emu_chip_params {
	const struct emu_profile *profile;
	unsigned index;		/* global chip number, names STATE/chipN */
	const char *state_dir;	/* per-chip directory (created if missing), or NULL */
	uint64_t seed;		/* per-state-dir seed for the UID */
	struct emu_faults *faults;	/* shared, may be NULL */
	const struct emu_special_ops *special;	/* may be NULL */
};

/* Creates a chip, loading its persisted state when present. Returns 0 or -errno. */
int emu_chip_new(const struct emu_chip_params *p, struct emu_chip **ret);
/* Frees a chip (NULL accepted); does not persist. */
struct emu_chip *emu_chip_free(struct emu_chip *c);
/* The profile the chip was created with. */
const struct emu_profile *emu_chip_profile(const struct emu_chip *c);

/* Power-on / reset: the bootloader forgets the sync, SRAM keeps its content. */
void emu_chip_reset(struct emu_chip *c, enum emu_mode mode);
/* What the chip is running now. */
enum emu_mode emu_chip_mode(const struct emu_chip *c);
/* Where a reset requested by the chip itself (Unprotect, OSFI FINALIZE) leads. */
void emu_chip_set_reset_mode(struct emu_chip *c, enum emu_mode mode);
/* True while product state or readout protection blocks memory commands. */
bool emu_chip_protected(const struct emu_chip *c);

/* Feeds one received byte into the bootloader; answers go to emu_chip_txq(). */
void emu_chip_input(struct emu_chip *c, uint8_t byte);
/* How many of the next received bytes the chip will take without any effect but buffering
 * them (no answer, no state change seen from outside): the middle of a frame. A port may
 * hand such bytes over late, in one batch with the byte after them, without changing what
 * the host sees. SIZE_MAX while the bootloader does not listen; 0 when unsure. */
size_t emu_chip_quiet_bytes(const struct emu_chip *c);
/* The chip's answer queue, drained by the port (or the fuzz target). */
struct emu_txq *emu_chip_txq(struct emu_chip *c);

/* Reads chip memory as the bootloader would (protection aside): 0 or -EINVAL. */
int emu_chip_read(const struct emu_chip *c, uint32_t addr, uint8_t *buf, size_t len);

/* The seam inside h5emu between the chip model (memory, option bytes, identity: emu-chip.c)
 * and the OSFI chip side (emu-osfi.c). The emulator is an independent implementation of
 * the chip: it never links protocol/, hsm/ or db/; it may include the *-wire.h headers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct emu_chip;
struct emu_osfi;

/* Identity. */
const uint8_t *emu_chip_uid(const struct emu_chip *c);	/* 12 bytes */
uint16_t emu_chip_device_id(const struct emu_chip *c);
unsigned emu_chip_index(const struct emu_chip *c);
/* Per-chip directory for persistent state (keys, certificate, flash image). */
const char *emu_chip_state_dir(const struct emu_chip *c);

/* Option bytes. Register ids are the OSFI 'C' area ids (osfi-wire.h). */
uint8_t emu_chip_product_state(const struct emu_chip *c);
/* Returns 0, or -EINVAL for an unknown register or a product state value that is not a
 * valid state or not reachable from the current one. */
int emu_chip_set_option(struct emu_chip *c, uint16_t reg, uint32_t value);
uint32_t emu_chip_get_option(const struct emu_chip *c, uint16_t reg);
/* Anti-rollback counter kept by the chip for OSFI images. */
uint32_t emu_chip_image_version(const struct emu_chip *c);
void emu_chip_set_image_version(struct emu_chip *c, uint32_t v);

/* Memory, as the flash controller sees it.
 * range_kind: returns 'F' flash, 'O' OTP, 'B' OBK area, 0 outside any programmable area. */
char emu_chip_range_kind(const struct emu_chip *c, uint32_t addr, size_t len);
bool emu_chip_range_erased(const struct emu_chip *c, uint32_t addr, size_t len);
/* Programs erased memory; 16-byte aligned address and length. Returns 0, -EINVAL for a
 * bad range/alignment, -EIO when the target is not erased, -EACCES for a write-protected
 * flash sector (WRP option bytes). */
int emu_chip_program(struct emu_chip *c, uint32_t addr, const uint8_t *data, size_t len);
/* Erases exactly [addr, addr+len), write-unit aligned (flash and OBK; OTP cannot be erased):
 * the rest of each sector touched keeps its content, as the ROM saves and re-programs it. */
int emu_chip_erase_range(struct emu_chip *c, uint32_t addr, size_t len);
/* Writes the chip's state to its state dir (called after an install step completes). */
int emu_chip_persist(struct emu_chip *c);

/* The chip resets after the current answer has been sent (e.g. after OSFI FINALIZE): the
 * bootloader forgets the sync and waits for 0x7F again. */
void emu_chip_request_reset(struct emu_chip *c);

/* Slot for the OSFI side's per-chip context. */
struct emu_osfi *emu_chip_osfi(const struct emu_chip *c);
void emu_chip_set_osfi(struct emu_chip *c, struct emu_osfi *o);

/* --- Implemented by emu-osfi.c --- */

struct emu_osfi_config {
	const char *ca_key_path;     /* PEM P-256 private key of the chip CA, or NULL */
	const char *global_key_path; /* 32-byte raw AES-256 global license key, or NULL */
	uint32_t ram_buffer;	     /* bytes the chip can buffer for one area */
};

/* Called once per chip at start: loads or creates the chip's identity (P-256 key,
 * certificate signed by the CA) in its state dir. Returns 0 or a negative errno. */
int emu_osfi_attach(struct emu_chip *c, const struct emu_osfi_config *cfg);
void emu_osfi_detach(struct emu_chip *c);
/* The chip reset: an unfinished session is aborted (its flash erased again). */
void emu_osfi_reset(struct emu_chip *c);

/* True when `subop` is an OSFI sub-opcode: the bootloader NACKs any other at the
 * sub-opcode stage, before its data. */
bool emu_osfi_subop_known(uint16_t subop);

/* Runs one OSFI sub-command. extended: 0x51 (p2 valid) or 0x50 (p2 NULL).
 * Returns 0 and fills *out and *out_len (answer data) and *status, or -ENOENT for an unknown
 * sub-opcode (the bootloader NACKs it). */
int emu_osfi_special(struct emu_chip *c, bool extended, uint16_t subop, const uint8_t *p1,
		     size_t n1, const uint8_t *p2, size_t n2, uint8_t *out, size_t out_max,
		     size_t *out_len, uint16_t *status);

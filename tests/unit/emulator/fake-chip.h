/* A small in-memory chip model implementing the chip side of emulator/emu-chip.h, so
 * that the OSFI chip side can be tested and fuzzed without h5emu's bootloader. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../emulator/emu-chip.h"

/* Creates an erased, Open chip. state_dir may be NULL (nothing persisted). */
struct emu_chip *fake_chip_new(const char *state_dir, uint16_t device_id, const uint8_t uid[12]);
/* Frees the chip (NULL accepted); the OSFI side must be detached first. */
void fake_chip_free(struct emu_chip *c);
/* Back to factory state: all memories erased, product state Open, image version 0. */
void fake_chip_wipe(struct emu_chip *c);
/* Pointer to len bytes of flash, OTP or OBK at addr, or NULL outside them. */
const uint8_t *fake_chip_mem(const struct emu_chip *c, uint32_t addr, size_t len);
/* Number of 16-byte units programmed in all memories. */
size_t fake_chip_programmed_units(const struct emu_chip *c);
/* Makes every later emu_chip_program fail with -EIO (a flash fault). */
void fake_chip_fail_program(struct emu_chip *c, bool fail);
/* True (once) when the chip asked for a reset. */
bool fake_chip_take_reset(struct emu_chip *c);
unsigned fake_chip_persist_count(const struct emu_chip *c);

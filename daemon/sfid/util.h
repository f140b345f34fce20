/* The daemon's names for the clocks and hex of common/ (sfi-time.h, sfi-hex.h). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "sfi-hex.h"
#include "sfi-time.h"

/* Milliseconds since the epoch (wall clock) and a monotonic clock. */
static inline int64_t sfid_now_ms(void)
{
	return sfi_realtime_ms();
}

static inline int64_t sfid_mono_ms(void)
{
	return sfi_monotonic_ms();
}

/* Writes 2n lowercase hex digits and a NUL. */
static inline void sfid_hex(const uint8_t *p, size_t n, char *out)
{
	sfi_hex_encode(p, n, out);
}

/* Small helpers every daemon module uses: clocks and hex. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the epoch (wall clock) and a monotonic clock. */
int64_t sfid_now_ms(void);
int64_t sfid_mono_ms(void);
/* Writes 2n lowercase hex digits and a NUL. */
void sfid_hex(const uint8_t *p, size_t n, char *out);

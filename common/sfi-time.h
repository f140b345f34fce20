/* Clocks, in milliseconds. Wall-clock time for what is recorded or shown (audit records,
 * history); the monotonic clock for every deadline, timeout and duration. */
#pragma once

#include <stdint.h>

/* CLOCK_REALTIME: milliseconds since the Unix epoch. */
int64_t sfi_realtime_ms(void);
/* CLOCK_MONOTONIC: milliseconds since an arbitrary start; never jumps. */
int64_t sfi_monotonic_ms(void);
/* The same clock in microseconds (sfi_monotonic_ms() is this divided by 1000). */
int64_t sfi_monotonic_us(void);

/* Clocks (sfi-time.h). */
#include <time.h>

#include "sfi-time.h"

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sfi_realtime_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

int64_t sfi_monotonic_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

int64_t sfi_monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Numbers as operators write them on command lines and in CSV files. */
#pragma once

#include <stdint.h>

/* A 32-bit unsigned number, decimal ("4096") or hexadecimal with 0x ("0x08000000"). Only
 * digits of the base: no sign, no spaces, no leading zero in decimal (octal to C, ten to a
 * reader: neither is assumed), nothing after. 0 or -EINVAL (also beyond UINT32_MAX). */
int sfi_parse_u32(const char *s, uint32_t *ret);

/* A decimal number from min to max, as configuration files write them: digits only (no
 * sign, no spaces, no base prefix), nothing after. 0, -EINVAL (not a number) or -ERANGE. */
int sfi_parse_decimal(const char *s, unsigned long long min, unsigned long long max,
		      unsigned long long *ret);

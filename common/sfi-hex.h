/* Hexadecimal text of binary values (UIDs, ids, digests, keys). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Lower-case hex of p[0..n) into out (2n characters and a NUL: 2n + 1 bytes). */
void sfi_hex_encode(const uint8_t *p, size_t n, char *out);
/* Exactly 2n hex digits (either case), nothing else, into out[0..n). 0 or -EINVAL (out
 * may then be partly written). */
int sfi_hex_decode(const char *s, uint8_t *out, size_t n);
/* Whether s is exactly len lower-case hex digits (the canonical form records carry). */
bool sfi_hex_is_lower(const char *s, size_t len);

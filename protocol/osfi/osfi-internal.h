/* Helpers shared by the protocol/osfi files; not part of the public API. */
#pragma once

#include <openssl/evp.h>

#include "osfi.h"

/* Imports an uncompressed P-256 point and checks that it lies on the curve.
 * Returns 0, -EINVAL, -ENOMEM. */
int osfi_p256_pkey_from_point(const uint8_t pub[OSFI_PUBKEY_LEN], EVP_PKEY **ret_pkey);

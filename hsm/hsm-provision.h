/* Provisioning a token for OSFI, for sfi-hsm only: the OSFI objects created (keys generated
 * inside the token, K and G imported) or wiped, licenses added, the audit key rotated. A
 * library of its own, hsm_provision_dep; sfid never links it (tests/integration/hsm checks
 * the sfid executable with nm). Errors as in hsm.h. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "hsm.h"

struct hsm_provision {
	uint8_t image_key[OSFI_KEY_LEN];   /* OEM image key K (or module key Km) */
	uint8_t firmware_id[OSFI_ID_LEN];  /* image id, or module firmware id */
	uint32_t max_count;		   /* licenses this token may issue */
	uint8_t ca_pub[OSFI_PUBKEY_LEN];   /* chip CA, uncompressed point */
	bool has_global_key;
	uint8_t global_key[32];		   /* optional global key G */
};

/* True if any OSFI object (label osfi-*) is on the token. */
int hsm_is_provisioned(struct hsm *h, bool *ret_provisioned);
/* Deletes every OSFI object from the token. */
int hsm_wipe(struct hsm *h);
/* Creates the OSFI objects (keys generated inside the token; K, G imported). Refuses a
 * token that already holds OSFI objects. The caller wipes p afterwards. */
int hsm_provision_token(struct hsm *h, const struct hsm_provision *p);

/* Adds licenses without new keys (sfi-hsm refill): the granted total and the counter both
 * go up by add (the granted total first). Creates the granted total on an older token,
 * counting from the counter. Returns the counter before and after and the new total. */
int hsm_refill(struct hsm *h, uint32_t add, uint32_t *ret_before, uint32_t *ret_after,
	       uint32_t *ret_granted);
/* Generates the next audit key generation inside the token and deletes the generations
 * older than the one it replaces (sfi-hsm rotate-audit-key). Returns the new generation. */
int hsm_audit_rotate(struct hsm *h, unsigned *ret_gen);

/* The slot unit test links the vendor backend (slot.c calls it for slots configured with it)
 * but no licensing: its slots are OSFI slots, so the ledger is never asked for. */
#include <errno.h>

#include "licensing.h"

int licensing_exclusive(struct licensing *l, void (*work)(struct db *ledger, void *arg),
			void (*done)(void *arg), void *arg)
{
	return -ESHUTDOWN;
}

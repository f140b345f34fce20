/* Slot state table: see slot-state.h. */
#include "slot-state.h"

static const char *const names[_SLOT_STATE_MAX] = {
	[SLOT_STATE_IDLE] = "idle",
	[SLOT_STATE_NO_PORT] = "no-port",
	[SLOT_STATE_WAIT_CHIP] = "waiting-for-chip",
	[SLOT_STATE_IDENTIFYING] = "identifying",
	[SLOT_STATE_CERTIFICATE] = "certificate",
	[SLOT_STATE_LICENSE] = "license",
	[SLOT_STATE_INSTALLING] = "installing",
	[SLOT_STATE_FINALIZING] = "finalizing",
	[SLOT_STATE_VERIFYING] = "verifying",
	[SLOT_STATE_DONE] = "done",
	[SLOT_STATE_FAILED] = "failed",
	[SLOT_STATE_WAIT_REMOVAL] = "waiting-for-removal",
	[SLOT_STATE_PAUSED] = "paused",
};

const char *slot_state_to_string(enum slot_state s)
{
	if ((unsigned)s >= _SLOT_STATE_MAX)
		return "invalid";
	return names[s];
}

bool slot_state_busy(enum slot_state s)
{
	switch (s) {
	case SLOT_STATE_IDENTIFYING:
	case SLOT_STATE_CERTIFICATE:
	case SLOT_STATE_LICENSE:
	case SLOT_STATE_INSTALLING:
	case SLOT_STATE_FINALIZING:
	case SLOT_STATE_VERIFYING:
		return true;
	case SLOT_STATE_IDLE:
	case SLOT_STATE_NO_PORT:
	case SLOT_STATE_WAIT_CHIP:
	case SLOT_STATE_DONE:
	case SLOT_STATE_FAILED:
	case SLOT_STATE_WAIT_REMOVAL:
	case SLOT_STATE_PAUSED:
	case _SLOT_STATE_MAX:
		break;
	}
	return false;
}

#define B(s) (1u << (s))

/* Successors of each state. Every state may go to IDLE (stop) and NO_PORT (adapter
 * unplugged); a busy state may also fail. */
static const unsigned successors[_SLOT_STATE_MAX] = {
	[SLOT_STATE_IDLE] = B(SLOT_STATE_WAIT_CHIP) | B(SLOT_STATE_PAUSED),
	[SLOT_STATE_NO_PORT] = B(SLOT_STATE_WAIT_CHIP) | B(SLOT_STATE_PAUSED),
	[SLOT_STATE_WAIT_CHIP] = B(SLOT_STATE_IDENTIFYING) | B(SLOT_STATE_PAUSED),
	/* A plain job's chip is written without certificate or license. */
	[SLOT_STATE_IDENTIFYING] = B(SLOT_STATE_CERTIFICATE) | B(SLOT_STATE_INSTALLING),
	/* A chip that shows it holds the job's image is verified without a license step. */
	[SLOT_STATE_CERTIFICATE] = B(SLOT_STATE_LICENSE) | B(SLOT_STATE_VERIFYING),
	[SLOT_STATE_LICENSE] = B(SLOT_STATE_INSTALLING),
	[SLOT_STATE_INSTALLING] = B(SLOT_STATE_FINALIZING) | B(SLOT_STATE_VERIFYING),
	[SLOT_STATE_FINALIZING] = B(SLOT_STATE_VERIFYING),
	[SLOT_STATE_VERIFYING] = B(SLOT_STATE_DONE),
	[SLOT_STATE_DONE] = B(SLOT_STATE_WAIT_REMOVAL),
	[SLOT_STATE_FAILED] = B(SLOT_STATE_WAIT_REMOVAL),
	[SLOT_STATE_WAIT_REMOVAL] = B(SLOT_STATE_WAIT_CHIP) | B(SLOT_STATE_PAUSED),
	[SLOT_STATE_PAUSED] = B(SLOT_STATE_WAIT_CHIP),
};

bool slot_state_transition_allowed(enum slot_state from, enum slot_state to)
{
	if ((unsigned)from >= _SLOT_STATE_MAX || (unsigned)to >= _SLOT_STATE_MAX)
		return false;
	if (to == SLOT_STATE_IDLE || to == SLOT_STATE_NO_PORT)
		return from != to;
	if (to == SLOT_STATE_FAILED)
		return slot_state_busy(from);
	return (successors[from] & B(to)) != 0;
}

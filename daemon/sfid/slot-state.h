/* Slot states and the transitions the state machine allows. Pure code, shared by the slot
 * driver and its unit test. */
#pragma once

#include <stdbool.h>

enum slot_state {
	SLOT_STATE_IDLE,	  /* not started (or stopped) */
	SLOT_STATE_NO_PORT,	  /* port absent: reopening periodically */
	SLOT_STATE_WAIT_CHIP,	  /* polling with 0x7F for a chip */
	SLOT_STATE_IDENTIFYING,	  /* Get, Get ID, GET_INFO */
	SLOT_STATE_CERTIFICATE,	  /* GET_CERT and its verification */
	SLOT_STATE_LICENSE,	  /* stored license, or ledger intent + HSM */
	SLOT_STATE_INSTALLING,	  /* license, header, image stream */
	SLOT_STATE_FINALIZING,	  /* FINALIZE */
	SLOT_STATE_VERIFYING,	  /* reconnect, GET_INFO */
	SLOT_STATE_DONE,	  /* installed and recorded */
	SLOT_STATE_FAILED,	  /* failed or refused, recorded */
	SLOT_STATE_WAIT_REMOVAL,  /* result shown until the chip stops answering */
	SLOT_STATE_PAUSED,	  /* holding before the next chip */
	_SLOT_STATE_MAX,
};

/* Returns the state's name ("waiting-for-chip"); "invalid" outside the enum. */
const char *slot_state_to_string(enum slot_state s);
/* True when the state machine may go from one state to the other. */
bool slot_state_transition_allowed(enum slot_state from, enum slot_state to);
/* True for the states in which a chip is being worked on (an attempt is open). */
bool slot_state_busy(enum slot_state s);

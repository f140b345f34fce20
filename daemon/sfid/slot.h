/* One fixture: a serial port, the chip in it and the state machine that installs it. All
 * its I/O runs non-blocking on the daemon's event loop. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "slot-state.h"

struct event_base;
struct config_slot;
struct json_object;
struct slot;
struct job;
struct license_set;
struct recorder;
struct transport_ops;
struct vendor;

/* What the line answers when a slot found a chip and wants one of the job's chips. */
enum slot_reserve {
	SLOT_RESERVE_GRANTED,	/* one of the job's remaining chips is the slot's */
	SLOT_RESERVE_WAIT,	/* chips in progress elsewhere take the rest of the target */
	SLOT_RESERVE_COMPLETE,	/* the job reached its target */
	SLOT_RESERVE_NO_JOB,	/* no job is loaded */
};

/* How a slot talks to what runs the line: every call upward goes through these, registered
 * at creation. All run on the loop thread; user is slot_params.user. */
struct slot_callbacks {
	/* The job chips are installed for; NULL while none is loaded. */
	const struct job *(*job)(void *user);
	enum slot_reserve (*reserve)(void *user);
	/* Gives back a reservation (the chip failed or was refused, or the slot let go). */
	void (*release)(void *user);
	/* The slot began work on a chip of the job (identification). */
	void (*chip_begun)(void *user);
	/* A chip's attempt ended: installed (kind < 0) or failed with an enum
	 * db_failure_kind; uid_hex is "" when the chip never said who it is. */
	void (*chip_ended)(void *user, int kind, const char *uid_hex);
	/* Why the line is halted (one sentence), or NULL while it runs. */
	const char *(*halted)(void *user);
	/* Halts the line with one sentence (what every next chip would fail on). */
	void (*halt)(void *user, const char *why);
	/* True when no new chip is to be taken (halted, shutting down, job complete). */
	bool (*holding)(void *user);
	/* Failed attempts of a chip recorded over every job. */
	unsigned (*chip_failures)(void *user, const char *uid_hex);
	/* True when the chip is recorded installed by the loaded job. */
	bool (*chip_installed)(void *user, const char *uid_hex);
	/* A chip that reports the job's image installed: fills set with the licenses the
	 * ledger still holds open for it, and says whether it stands as installed. */
	bool (*adopt_licenses)(void *user, const char *uid_hex, struct license_set *set);
	/* Queues the slot for its chip's licenses (slot_licenses_ready or
	 * slot_license_failed answers), or takes it out of the queue. */
	void (*license_request)(void *user, struct slot *s);
	void (*license_cancel)(void *user, struct slot *s);
	/* A job's serial number: takes the chip's value through the ledger (its intent
	 * committed first), answered by slot_serial_taken() with ticket; records the outcome
	 * of the write (failed: answered by nothing; written: slot_serial_recorded()). */
	void (*serial_take)(void *user, struct slot *s, unsigned ticket);
	void (*serial_result)(void *user, struct slot *s, int64_t idx, bool written,
			      const char *reason);
	/* An event for watchers (data's reference is taken): "state", "progress", "result". */
	void (*event)(void *user, const char *name, struct json_object *data);
	/* The slot has nothing left in progress. */
	void (*settled)(void *user);
};

struct slot_params {
	struct event_base *base;
	const struct config_slot *cfg;
	unsigned index;
	unsigned retry_limit;		/* failed attempts after which a chip is set aside */
	const uint8_t *ca_pub;		/* the chip CA's key, OSFI_PUBKEY_LEN bytes */
	struct recorder *recorder;	/* attempts and outcomes */
	const struct slot_callbacks *cb;
	void *user;
	/* The link backend; NULL: the one the port specification names (transport.h). */
	const struct transport_ops *link_ops;
	/* The vendor backend, for a slot configured with it (vendor.h); NULL: none. */
	struct vendor *vendor;
};

/* Creates a slot (idle, port closed); p's pointers outlive it. Returns 0 or -ENOMEM. */
int slot_new(const struct slot_params *p, struct slot **ret);
/* Frees a slot (closing its port); accepts NULL; returns NULL. */
struct slot *slot_free(struct slot *s);

const char *slot_name(const struct slot *s);
enum slot_state slot_state(const struct slot *s);

/* Starts taking chips (opens the port). Returns 0, or -EALREADY when running. */
int slot_start(struct slot *s);
/* Stops now: a chip in progress is aborted safely and recorded. */
void slot_stop(struct slot *s, const char *reason);
/* Pauses before the next chip: a chip in progress finishes first. */
void slot_pause(struct slot *s);
/* True while a chip is being worked on or a license is being issued for it. */
bool slot_busy(const struct slot *s);

/* A status object for `status`. */
struct json_object *slot_status_json(const struct slot *s);
/* A port object for `ports`. */
struct json_object *slot_port_json(const struct slot *s);

/* The license queue's side (licenses are issued one chip at a time). */
/* The slot's certificate and UID for the HSM request; false if the slot no longer wants a
 * license (its chip went away). */
bool slot_license_wanted(const struct slot *s);
const uint8_t *slot_license_cert(const struct slot *s);
const char *slot_chip_hex(const struct slot *s);
int64_t slot_attempt_id(const struct slot *s);
/* The chip's licenses were issued (or reused) and recorded: install. */
void slot_licenses_ready(struct slot *s, const struct license_set *set);
/* The ledger's answers for the serial number (see serial_take); a stale ticket is ignored
 * (slot_serial_taken returns false: the slot stopped waiting, an intent the answer opened
 * is the caller's to close). r -ENOSPC: none left (the line is halted by then). */
bool slot_serial_taken(struct slot *s, unsigned ticket, int r, int64_t idx, const char *hex,
		       bool again, const char *why);
void slot_serial_recorded(struct slot *s, unsigned ticket, int r, const char *why);
unsigned slot_serial_ticket(const struct slot *s);
/* The license queue let go of the slot. */
void slot_license_dequeued(struct slot *s);
/* No license could be issued: fail the chip with this cause. */
void slot_license_failed(struct slot *s, const char *cause);

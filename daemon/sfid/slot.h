/* One fixture: a serial port, the chip in it and the state machine that installs it. All
 * its I/O runs non-blocking on the daemon's event loop. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "slot-state.h"

struct sfid;
struct config_slot;
struct json_object;
struct slot;
struct license_set;

/* Creates slot index i of the daemon (idle, port closed). Returns 0 or -ENOMEM. */
int slot_new(struct sfid *d, const struct config_slot *cfg, unsigned index, struct slot **ret);
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

/* License queue callbacks (sfid.c issues licenses one at a time). */
/* The slot's certificate and UID for the HSM request; false if the slot no longer wants a
 * license (its chip went away). */
bool slot_license_wanted(const struct slot *s);
const uint8_t *slot_license_cert(const struct slot *s);
const char *slot_chip_hex(const struct slot *s);
int64_t slot_attempt_id(const struct slot *s);
/* The chip's licenses were issued (or reused) and recorded: install. */
void slot_licenses_ready(struct slot *s, const struct license_set *set);
/* The license queue let go of the slot. */
void slot_license_dequeued(struct slot *s);
/* No license could be issued: fail the chip with this cause. */
void slot_license_failed(struct slot *s, const char *cause);

/* The daemon's shared context: configuration, event loop, HSM, database, job, slots. One
 * instance, owned by main(); everything here runs on the event loop thread except what is
 * handed to workers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sfid-config.h"
#include "osfi.h"

struct event_base;
struct json_object;
struct server;
struct workers;
struct hsm;
struct db;
struct slot;

/* The loaded job: an image and what is needed to license it. */
struct job {
	int64_t id;
	char *image_path;
	uint8_t *image;
	size_t image_len;
	uint8_t image_id[OSFI_ID_LEN];
	char image_id_hex[2 * OSFI_ID_LEN + 1];
	char digest_hex[2 * OSFI_ID_LEN + 1];
	uint16_t device_id;
	uint8_t final_state;	/* product state the image sets, 0 if it sets none */
	bool has_final_state;
	char *module_file;
	/* A global (uncounted) license for every chip instead of HSM chip licenses. */
	bool global;
	char *global_file;
	uint8_t global_license[OSFI_LICENSE_LEN];
	uint32_t target;	/* chips to install; 0: no limit */
	uint32_t installed;
	uint32_t failed;
	char *loaded_by;
	int64_t loaded_ms;
};

/* One finished attempt, kept for `history` and `stats`. */
struct history_entry {
	int64_t attempt_id;
	int64_t time_ms;
	char slot[CONFIG_NAME_MAX + 1];
	char chip[2 * OSFI_UID_LEN + 1];
	bool ok;
	char step[24];
	char cause[200];
	uint64_t bytes;
	unsigned duration_ms;
	bool license_reused;
};

struct sfid {
	struct event_base *base;
	struct config *cfg;
	struct server *server;
	struct workers *workers;
	struct hsm *hsm;
	struct db *db;
	char token_serial[64];
	char token_label[64];
	uint8_t ca_pub[OSFI_PUBKEY_LEN];
	uint8_t firmware_id[OSFI_ID_LEN];

	struct slot **slots;
	size_t n_slots;
	struct job *job;

	/* Licenses are issued one at a time per token (the ledger allows one open
	 * reservation per token): slots wait in this queue. */
	struct slot *license_queue[CONFIG_SLOTS_MAX];
	size_t n_license_queue;
	bool license_busy;
	/* Set when programming must stop for every slot (database full, token gone, counter
	 * exhausted); the sentence is shown to operators. */
	char halt_reason[256];

	struct history_entry *history;
	size_t history_len, history_next;

	bool stopping;
	int64_t started_ms;
};

/* Milliseconds since the epoch (wall clock) and a monotonic clock. */
int64_t sfid_now_ms(void);
int64_t sfid_mono_ms(void);
/* Stops every slot from taking new chips and tells operators why (one sentence). */
void sfid_halt(struct sfid *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Failed attempts of a chip (UID in hex) among the attempts kept for history. */
unsigned sfid_chip_failures(const struct sfid *d, const char *uid_hex);
/* Records a finished attempt for history/stats. */
void sfid_history_add(struct sfid *d, const struct history_entry *e);
/* Sends an event to watchers; data's reference is taken. */
void sfid_broadcast(struct sfid *d, const char *event, struct json_object *data);
/* Asks for the next license in the queue to be issued (if none is in progress). */
void sfid_license_kick(struct sfid *d);
/* Called when a slot has nothing left in progress (shutdown bookkeeping). */
void sfid_slot_settled(struct sfid *d);
/* Writes 2n lowercase hex digits and a NUL. */
void sfid_hex(const uint8_t *p, size_t n, char *out);

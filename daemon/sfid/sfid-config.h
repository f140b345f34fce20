/* sfid configuration: one INI file (inih). Every error names the file, the line and the key;
 * a file with any error is refused whole, so the daemon never starts half-configured. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <sys/types.h>

#include "central-config.h"
#include "vendor-config.h"

#define CONFIG_SLOTS_MAX 64
#define CONFIG_NAME_MAX 32
/* Tokens of the line token's pool besides the line token itself (tokens.h: TOKENS_MAX). */
#define CONFIG_POOL_MAX 15

struct config_slot {
	char name[CONFIG_NAME_MAX + 1];
	char *port;		/* /dev/..., serial:XXXX or usb:1-3 */
	unsigned baud;
	char *entry;		/* entry sequence, or NULL */
	unsigned ack_ms;	/* AN3155 ACK wait */
	unsigned block_ms;	/* write/read block wait */
	unsigned special_ms;	/* OSFI sub-command answer wait (the chip works) */
	unsigned poll_ms;	/* presence polling while waiting for a chip or its removal */
	unsigned reopen_ms;	/* retry opening a missing port */
	unsigned retries;	/* extra attempts of one command after a timeout */
	bool vendor;		/* backend = cubeprogrammer: [vendor]'s tool runs the SFI steps */
	unsigned line;		/* of the [slot NAME] header, for messages */
};

struct config {
	char *path;
	char *station;

	struct config_slot slots[CONFIG_SLOTS_MAX];
	size_t n_slots;

	char *hsm_module;
	char *hsm_token;	/* label, or "serial:XXXX" */
	char *hsm_pool_text;	/* [hsm] pool as written */
	char *hsm_pool[CONFIG_POOL_MAX];	/* more tokens licensing the same firmware */
	size_t n_hsm_pool;
	char *hsm_pin_file;
	char *hsm_pin_credential;

	char *db_path;

	char *socket_path;
	char *operator_group;
	char *supervisor_group;
	gid_t operator_gid;	/* (gid_t)-1 when the group does not exist */
	gid_t supervisor_gid;
	unsigned max_clients;
	size_t max_message;
	unsigned idle_timeout_ms;	/* a client with nothing to wait for sends within this */
	unsigned line_timeout_ms;	/* a line once started is finished within this */
	unsigned close_timeout_ms;	/* a closing client reads its last replies within this */

	unsigned shutdown_timeout_ms; /* SIGTERM: time to finish chips in progress */
	unsigned hsm_workers;	      /* threads for PKCS#11 calls */
	unsigned history_max;	      /* accepted for older files; not used */
	unsigned retry_limit;	      /* attempts per chip before it is refused */
	unsigned long long db_max_bytes; /* database size limit, 0 none */
	char *result_hook;		/* [hooks] result: run with one JSON line per result */
	unsigned result_hook_timeout_ms;
	struct central_config central; /* [central]: conninfo NULL when nothing is shipped */
	struct vendor_config vendor;	/* [vendor]: for slots with backend = cubeprogrammer */
};

/* Reads and checks path. Returns 0 and a new config in *ret, or a negative errno with one
 * sentence "FILE:LINE: ..." in reason. */
int config_load(const char *path, struct config **ret, char *reason, size_t reason_size);
/* Parses config text (tests; path only names it in messages). */
int config_parse_string(const char *path, const char *text, struct config **ret, char *reason,
			size_t reason_size);
/* Frees a config; accepts NULL; returns NULL. */
struct config *config_free(struct config *c);
/* For sfid --check: writes one warning line per slot whose port cannot be opened now
 * ("FILE:LINE: warning: [slot NAME] port 'SPEC' cannot be opened now: reason"), checked
 * without opening the ports (link_probe). Returns the number of warnings. */
unsigned config_warn_ports(const struct config *c, FILE *f);
/* Looks a slot up by name. Returns its index or -ENOENT. */
int config_slot_find(const struct config *c, const char *name);

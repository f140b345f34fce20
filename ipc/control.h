/* The sfid control protocol: JSON Lines over a Unix stream socket, shared by
 * sfid and sfictl. Every message is one JSON object on one line carrying "v" (protocol
 * version) and "id". Requests name a command from the table below; replies echo the id with
 * "ok" (an object) or "error" ({code, message}); a watch stream's events carry the id of the
 * watch request and "event". Pure code: no I/O, no logging. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct json_object;

#define CONTROL_VERSION 1
#define CONTROL_MESSAGE_MAX_DEFAULT 65536 /* bytes per line, newline excluded */
#define CONTROL_MESSAGE_MIN 256		  /* smallest configurable limit */
#define CONTROL_MESSAGE_MAX 16777216	  /* largest configurable limit */

/* Who may run a command. Ordered: a higher role may do everything a lower one may. */
enum control_role {
	CONTROL_ROLE_NONE,
	CONTROL_ROLE_OPERATOR,
	CONTROL_ROLE_SUPERVISOR,
	_CONTROL_ROLE_MAX,
};

/* Returns "none", "operator" or "supervisor". */
const char *control_role_to_string(enum control_role r);

enum control_cmd {
	CONTROL_CMD_HELLO,
	CONTROL_CMD_STATUS,
	CONTROL_CMD_WATCH,
	CONTROL_CMD_START,
	CONTROL_CMD_STOP,
	CONTROL_CMD_PAUSE,
	CONTROL_CMD_HISTORY,
	CONTROL_CMD_STATS,
	CONTROL_CMD_PORTS,
	CONTROL_CMD_JOB_LOAD,
	CONTROL_CMD_JOB_SHOW,
	CONTROL_CMD_EXPORT,
	CONTROL_CMD_HSM,
	CONTROL_CMD_CONFIG,
	_CONTROL_CMD_MAX,
};

/* Types of request arguments. */
enum control_arg_type {
	CONTROL_ARG_STRING,	/* a non-empty string without NUL */
	CONTROL_ARG_INT,	/* an integer from min to max */
	CONTROL_ARG_BOOL,
	CONTROL_ARG_STRINGS,	/* a list of up to max non-empty strings without NUL */
};

/* One argument a command accepts. */
struct control_arg {
	const char *name;
	enum control_arg_type type;
	int64_t min, max;	/* CONTROL_ARG_INT: range; CONTROL_ARG_STRINGS: max items */
	const char *what;	/* for messages: "a list of slot names" */
};

/* One row of the command table. */
struct control_command {
	enum control_cmd cmd;
	const char *name;	   /* wire name, e.g. "job-load" */
	enum control_role role;	   /* least role allowed */
	bool read_only;		   /* changes nothing (sfictl offers --json) */
	const char *summary;	   /* one line for help texts */
	const struct control_arg *args; /* accepted arguments, ended by a NULL name */
};

/* Returns the table row of cmd (never NULL for a valid enum value). */
const struct control_command *control_command_get(enum control_cmd cmd);
/* Looks a wire name up. Returns the row or NULL. */
const struct control_command *control_command_find(const char *name);

/* Error codes of replies. */
enum control_error {
	CONTROL_E_MALFORMED,	/* not a JSON object, or a field of the wrong type */
	CONTROL_E_TOO_LARGE,	/* line longer than the limit */
	CONTROL_E_VERSION,	/* "v" missing or not ours */
	CONTROL_E_ORDER,	/* id missing, not positive, or not above the previous one */
	CONTROL_E_UNKNOWN,	/* no such command */
	CONTROL_E_DENIED,	/* the caller's role may not run this command */
	CONTROL_E_ARGUMENT,	/* a bad or missing argument */
	CONTROL_E_STATE,	/* not possible now (no job loaded, slot busy, ...) */
	CONTROL_E_NOT_FOUND,	/* no such slot, job or file */
	CONTROL_E_FAILED,	/* the daemon tried and failed (HSM, database, I/O) */
	CONTROL_E_BUSY,		/* too many clients or a request already running */
	_CONTROL_E_MAX,
};

/* Returns the wire name of an error code ("permission-denied"). */
const char *control_error_to_string(enum control_error e);
/* Parses a wire name. Returns the code or -EINVAL. */
int control_error_from_string(const char *s);

/* A decoded request. args is a borrowed reference into the parsed object (may be NULL). */
struct control_request {
	uint64_t id;
	const struct control_command *command;
	struct json_object *args;
};

/* Parses one line (without its newline) as a request. prev_id is the id of the previous
 * request on this connection (0 for none); ids must grow. On success returns 0, sets *ret_req
 * and *ret_root (a new reference the caller puts; ret_req->args points into it). On failure
 * returns a negative errno, sets *ret_error to the reply code and *ret_id to the request's id
 * when one could be read (else 0), and writes one sentence into reason. */
int control_request_parse(const char *line, size_t len, size_t max, uint64_t prev_id,
			  struct control_request *ret_req, struct json_object **ret_root,
			  enum control_error *ret_error, uint64_t *ret_id, char *reason, size_t reason_size);

/* Checks every argument of a parsed request against its command's table: an unknown
 * argument, or one of the wrong type or out of range, is refused, so that handlers may read
 * arguments by type. Returns 0, or -EINVAL with one sentence in reason (the reply code is
 * CONTROL_E_ARGUMENT). */
int control_request_check_args(const struct control_request *req, char *reason, size_t reason_size);

/* Builds a request line (with its newline) in a new string. args may be NULL; its reference
 * is taken. Returns 0 or -ENOMEM. */
int control_request_format(uint64_t id, const char *cmd, struct json_object *args,
			   char **ret_line);

/* Builds a success reply line; result may be NULL (an empty object); its reference is taken. */
int control_reply_ok(uint64_t id, struct json_object *result, char **ret_line);
/* Builds an error reply line. */
int control_reply_error(uint64_t id, enum control_error code, const char *message,
			char **ret_line);
/* Builds an event line for a watch stream; data's reference is taken. */
int control_event_format(uint64_t watch_id, const char *event, struct json_object *data,
			 char **ret_line);

/* A decoded reply or event, as sfictl sees it. */
struct control_reply {
	uint64_t id;
	bool is_event;
	const char *event;		/* event name when is_event */
	struct json_object *result;	/* "ok" object, or the event's "data" */
	bool failed;
	int error;			/* enum control_error, or -1 for a code we do not know */
	const char *error_name;
	const char *message;
};

/* Parses a reply or event line. Strings and objects borrow from *ret_root (caller puts it).
 * Returns 0, -EBADMSG (not a reply of our protocol), -EPROTO (other version), -EMSGSIZE. */
int control_reply_parse(const char *line, size_t len, size_t max, struct control_reply *ret,
			struct json_object **ret_root);

/* Decides the role of a peer: root is supervisor; otherwise the highest role whose group
 * (supervisor_gid, operator_gid; (gid_t)-1 = no such group) is among the peer's groups.
 * Returns the role. */
enum control_role control_role_decide(uid_t uid, const gid_t *groups, size_t n_groups,
				      gid_t operator_gid, gid_t supervisor_gid);

/* True when role may run command. */
bool control_authorized(enum control_role role, const struct control_command *command);

/* A reassembly buffer that splits a byte stream into lines and enforces a size limit. */
struct control_linebuf {
	char *buf;
	size_t len, size, max;
	size_t pending;		/* bytes of the line handed out last */
	bool overflow;		/* discarding the rest of an oversized line */
};

/* Initialises with a line limit (bytes, newline excluded). */
void control_linebuf_init(struct control_linebuf *lb, size_t max);
/* Frees the buffer. Accepts a zeroed struct. */
void control_linebuf_done(struct control_linebuf *lb);
/* Appends received bytes. Returns 0 or -ENOMEM. */
int control_linebuf_append(struct control_linebuf *lb, const void *data, size_t n);
/* Takes the next complete line: returns 1 and sets *ret_line and *ret_len (valid until the next
 * call, NUL-terminated), 0 when none is complete, or -EMSGSIZE once per oversized line (its
 * bytes up to the next newline are dropped). */
int control_linebuf_next(struct control_linebuf *lb, const char **ret_line, size_t *ret_len);

/* Control protocol codec: see control.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "control.h"

static const char *const role_names[_CONTROL_ROLE_MAX] = {
	[CONTROL_ROLE_NONE] = "none",
	[CONTROL_ROLE_OPERATOR] = "operator",
	[CONTROL_ROLE_SUPERVISOR] = "supervisor",
};

const char *control_role_to_string(enum control_role r)
{
	if ((unsigned)r >= _CONTROL_ROLE_MAX)
		return "unknown";
	return role_names[r];
}

static const struct control_arg no_args[] = { { 0 } };
static const struct control_arg slots_args[] = {
	{ "slots", CONTROL_ARG_STRINGS, 0, 1024, "a list of slot names" },
	{ 0 }
};
static const struct control_arg history_args[] = {
	{ "limit", CONTROL_ARG_INT, 1, INT32_MAX, "a whole number of attempts, 1 or more" },
	{ "job", CONTROL_ARG_INT, 0, INT64_MAX, "a job id (0: every job)" },
	{ "slot", CONTROL_ARG_STRING, 0, 0, "a slot name" },
	{ "chip", CONTROL_ARG_STRING, 0, 0, "a chip UID in hex" },
	{ "failed", CONTROL_ARG_BOOL, 0, 0, "true or false" },
	{ 0 }
};
static const struct control_arg stats_args[] = {
	{ "job", CONTROL_ARG_INT, 0, INT64_MAX, "a job id (0: every job)" },
	{ "since_ms", CONTROL_ARG_INT, 0, INT64_MAX, "a time in ms since the epoch" },
	{ "until_ms", CONTROL_ARG_INT, 0, INT64_MAX, "a time in ms since the epoch" },
	{ 0 }
};
static const struct control_arg job_load_args[] = {
	{ "image", CONTROL_ARG_STRING, 0, 0, "the path of an image" },
	{ "modules", CONTROL_ARG_STRING, 0, 0, "the path of a module license file" },
	{ "global_license", CONTROL_ARG_STRING, 0, 0, "the path of a global license" },
	{ "count", CONTROL_ARG_INT, 0, UINT32_MAX, "a whole number of chips (0: no target)" },
	/* Files sfictl opened and passed (SCM_RIGHTS): indexes among the descriptors sent
	 * with the request; the paths above are then only names. */
	{ "image_fd", CONTROL_ARG_INT, 0, 63, "the index of the image's descriptor" },
	{ "modules_fd", CONTROL_ARG_INT, 0, 63, "the index of the module file's descriptor" },
	{ "global_license_fd", CONTROL_ARG_INT, 0, 63, "the index of the global license's descriptor" },
	{ "module_licenses", CONTROL_ARG_STRINGS, 0, 64, "module license names as in the module file" },
	{ "module_licenses_fd", CONTROL_ARG_INT, 0, 63, "the index of the first module license's descriptor" },
	/* A plain job instead of an image: firmware files (FILE or FILE@ADDR), whether chips
	 * are started when written, and where. */
	{ "firmware", CONTROL_ARG_STRINGS, 0, 16, "firmware files (FILE.elf, FILE.hex, FILE.bin@ADDR)" },
	{ "firmware_fd", CONTROL_ARG_INT, 0, 63, "the index of the first firmware file's descriptor" },
	{ "go", CONTROL_ARG_BOOL, 0, 0, "true: start each chip once written and verified" },
	{ "go_address", CONTROL_ARG_INT, 0, UINT32_MAX, "the address to start at" },
	/* A job's per-chip serial number (docs/operations.md): a counter, written at an
	 * address in a width and a format; sfid checks the values. An OSFI job's is written
	 * after the install, in the product state declared for its image. */
	{ "image_state", CONTROL_ARG_STRING, 0, 0, "the product state the image sets (Open or Provisioning)" },
	{ "serial_counter", CONTROL_ARG_STRING, 0, 0, "START or START:STEP" },
	{ "serial_at", CONTROL_ARG_INT, 0, UINT32_MAX, "the address the value is written at" },
	{ "serial_width", CONTROL_ARG_INT, 0, UINT32_MAX, "the value's bytes (1 to 64)" },
	{ "serial_format", CONTROL_ARG_STRING, 0, 0, "le, be, bcd, ascii or ascii:FMT; a list: hex or ascii" },
	{ "serial_list", CONTROL_ARG_STRING, 0, 0, "a list file of values, one a line (its path)" },
	{ "serial_list_fd", CONTROL_ARG_INT, 0, 63, "the index of the list file's descriptor" },
	/* A vendor job: image is ST's .sfi, installed by STM32CubeProgrammer on vendor slots. */
	{ "vendor", CONTROL_ARG_BOOL, 0, 0, "true: image is for ST's SFI (vendor slots only)" },
	{ 0 }
};
static const struct control_arg export_args[] = {
	{ "format", CONTROL_ARG_STRING, 0, 0, "\"csv\" or \"jsonl\"" },
	{ "job", CONTROL_ARG_INT, 0, INT64_MAX, "a job id (0: every job)" },
	{ "since_ms", CONTROL_ARG_INT, 0, INT64_MAX, "a time in ms since the epoch" },
	{ 0 }
};

static const struct control_command commands[_CONTROL_CMD_MAX] = {
	[CONTROL_CMD_HELLO] = { CONTROL_CMD_HELLO, "hello", CONTROL_ROLE_OPERATOR, true,
				"protocol version and the caller's role",
		no_args },
	[CONTROL_CMD_STATUS] = { CONTROL_CMD_STATUS, "status", CONTROL_ROLE_OPERATOR, true,
				 "station, job and every slot's state",
		no_args },
	[CONTROL_CMD_WATCH] = { CONTROL_CMD_WATCH, "watch", CONTROL_ROLE_OPERATOR, true,
				"subscribe to slot state, progress and result events",
		no_args },
	[CONTROL_CMD_START] = { CONTROL_CMD_START, "start", CONTROL_ROLE_OPERATOR, false,
				"start slots (all when none named)",
		slots_args },
	[CONTROL_CMD_STOP] = { CONTROL_CMD_STOP, "stop", CONTROL_ROLE_OPERATOR, false,
			       "stop slots after their current chip",
		slots_args },
	[CONTROL_CMD_PAUSE] = { CONTROL_CMD_PAUSE, "pause", CONTROL_ROLE_OPERATOR, false,
				"pause slots before their next chip",
		slots_args },
	[CONTROL_CMD_HISTORY] = { CONTROL_CMD_HISTORY, "history", CONTROL_ROLE_OPERATOR, true,
				  "recent attempts",
		history_args },
	[CONTROL_CMD_STATS] = { CONTROL_CMD_STATS, "stats", CONTROL_ROLE_OPERATOR, true,
				"yield per slot and per failure cause",
		stats_args },
	[CONTROL_CMD_PORTS] = { CONTROL_CMD_PORTS, "ports", CONTROL_ROLE_OPERATOR, true,
				"serial ports and their slots",
		no_args },
	[CONTROL_CMD_JOB_LOAD] = { CONTROL_CMD_JOB_LOAD, "job-load", CONTROL_ROLE_SUPERVISOR,
				   false, "load an image as the current job",
		job_load_args },
	[CONTROL_CMD_JOB_SHOW] = { CONTROL_CMD_JOB_SHOW, "job-show", CONTROL_ROLE_SUPERVISOR,
				   true, "the current job",
		no_args },
	[CONTROL_CMD_EXPORT] = { CONTROL_CMD_EXPORT, "export", CONTROL_ROLE_SUPERVISOR, false,
				 "write the audit trail to a file",
		export_args },
	[CONTROL_CMD_HSM] = { CONTROL_CMD_HSM, "hsm", CONTROL_ROLE_SUPERVISOR, true,
			      "HSM token and license counters",
		no_args },
	[CONTROL_CMD_CONFIG] = { CONTROL_CMD_CONFIG, "config", CONTROL_ROLE_SUPERVISOR, true,
				 "the configuration in force",
		no_args },
};

const struct control_command *control_command_get(enum control_cmd cmd)
{
	if ((unsigned)cmd >= _CONTROL_CMD_MAX)
		return NULL;
	return &commands[cmd];
}

const struct control_command *control_command_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < _CONTROL_CMD_MAX; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static const char *const error_names[_CONTROL_E_MAX] = {
	[CONTROL_E_MALFORMED] = "malformed",
	[CONTROL_E_TOO_LARGE] = "too-large",
	[CONTROL_E_VERSION] = "version",
	[CONTROL_E_ORDER] = "out-of-order",
	[CONTROL_E_UNKNOWN] = "unknown-command",
	[CONTROL_E_DENIED] = "permission-denied",
	[CONTROL_E_ARGUMENT] = "bad-argument",
	[CONTROL_E_STATE] = "bad-state",
	[CONTROL_E_NOT_FOUND] = "not-found",
	[CONTROL_E_FAILED] = "failed",
	[CONTROL_E_BUSY] = "busy",
};

const char *control_error_to_string(enum control_error e)
{
	if ((unsigned)e >= _CONTROL_E_MAX)
		return "unknown";
	return error_names[e];
}

int control_error_from_string(const char *s)
{
	if (!s)
		return -EINVAL;
	for (int i = 0; i < _CONTROL_E_MAX; i++)
		if (strcmp(error_names[i], s) == 0)
			return i;
	return -EINVAL;
}

/* Parses text that must be exactly one JSON object. Returns NULL otherwise. */
static struct json_object *parse_object(const char *line, size_t len)
{
	struct json_tokener *tok;
	struct json_object *o;

	if (len > INT32_MAX)
		return NULL;
	tok = json_tokener_new_ex(16);
	if (!tok)
		return NULL;
	o = json_tokener_parse_ex(tok, line, (int)len);
	if (o && (json_tokener_get_error(tok) != json_tokener_success ||
		  json_tokener_get_parse_end(tok) != len ||
		  !json_object_is_type(o, json_type_object))) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

/* Reads a positive integer field. Returns 0, -ENOENT (absent) or -EINVAL (wrong type). */
static int get_u64(struct json_object *root, const char *key, uint64_t *ret)
{
	struct json_object *v;
	int64_t x;

	if (!json_object_object_get_ex(root, key, &v))
		return -ENOENT;
	if (!json_object_is_type(v, json_type_int))
		return -EINVAL;
	errno = 0;
	x = json_object_get_int64(v);
	if (x <= 0 || errno != 0)
		return -EINVAL;
	*ret = (uint64_t)x;
	return 0;
}

#define WHY(...) snprintf(reason, reason_size, __VA_ARGS__)

int control_request_parse(const char *line, size_t len, size_t max, uint64_t prev_id,
			  struct control_request *ret_req, struct json_object **ret_root,
			  enum control_error *ret_error, uint64_t *ret_id, char *reason, size_t reason_size)
{
	struct json_object *root, *v, *args = NULL;
	const struct control_command *c;
	uint64_t id = 0, version;
	int r;

	*ret_id = 0;
	if (len > max) {
		*ret_error = CONTROL_E_TOO_LARGE;
		WHY("message of %zu bytes is over the limit of %zu bytes", len, max);
		return -EMSGSIZE;
	}
	if (memchr(line, '\0', len)) {
		*ret_error = CONTROL_E_MALFORMED;
		WHY("message contains a NUL byte");
		return -EBADMSG;
	}
	root = parse_object(line, len);
	if (!root) {
		*ret_error = CONTROL_E_MALFORMED;
		WHY("message is not one JSON object");
		return -EBADMSG;
	}

	r = get_u64(root, "id", &id);
	if (r < 0) {
		*ret_error = CONTROL_E_ORDER;
		WHY("message has no positive integer \"id\"");
		goto fail;
	}
	*ret_id = id;

	r = get_u64(root, "v", &version);
	if (r < 0 || version != CONTROL_VERSION) {
		*ret_error = CONTROL_E_VERSION;
		WHY("protocol version must be %d", CONTROL_VERSION);
		r = -EPROTO;
		goto fail;
	}

	if (id <= prev_id) {
		*ret_error = CONTROL_E_ORDER;
		WHY("id %" PRIu64 " is not above the previous id %" PRIu64, id, prev_id);
		r = -EINVAL;
		goto fail;
	}

	if (!json_object_object_get_ex(root, "cmd", &v) || !json_object_is_type(v, json_type_string)) {
		*ret_error = CONTROL_E_MALFORMED;
		WHY("message has no string \"cmd\"");
		r = -EBADMSG;
		goto fail;
	}
	c = control_command_find(json_object_get_string(v));
	if (!c) {
		*ret_error = CONTROL_E_UNKNOWN;
		WHY("unknown command");
		r = -ENOENT;
		goto fail;
	}

	if (json_object_object_get_ex(root, "args", &args) &&
	    !json_object_is_type(args, json_type_object) && !json_object_is_type(args, json_type_null)) {
		*ret_error = CONTROL_E_MALFORMED;
		WHY("\"args\" must be an object");
		r = -EBADMSG;
		goto fail;
	}
	if (args && !json_object_is_type(args, json_type_object))
		args = NULL;

	*ret_req = (struct control_request){ .id = id, .command = c, .args = args };
	*ret_root = root;
	return 0;
fail:
	json_object_put(root);
	return r;
}

/* A string argument: non-empty, and no NUL inside (C code would see a shorter string). */
static bool arg_string_ok(struct json_object *v)
{
	const char *s;
	int n;

	if (!json_object_is_type(v, json_type_string))
		return false;
	s = json_object_get_string(v);
	n = json_object_get_string_len(v);
	return n > 0 && strlen(s) == (size_t)n;
}

static bool arg_ok(const struct control_arg *a, struct json_object *v)
{
	size_t n;

	switch (a->type) {
	case CONTROL_ARG_STRING:
		return arg_string_ok(v);
	case CONTROL_ARG_INT:
		if (!json_object_is_type(v, json_type_int))
			return false;
		return json_object_get_int64(v) >= a->min && json_object_get_int64(v) <= a->max;
	case CONTROL_ARG_BOOL:
		return json_object_is_type(v, json_type_boolean);
	case CONTROL_ARG_STRINGS:
		if (!json_object_is_type(v, json_type_array))
			return false;
		n = json_object_array_length(v);
		if (n > (size_t)a->max)
			return false;
		for (size_t i = 0; i < n; i++)
			if (!arg_string_ok(json_object_array_get_idx(v, i)))
				return false;
		return true;
	}
	return false;
}

int control_request_check_args(const struct control_request *req, char *reason, size_t reason_size)
{
	const struct control_arg *args;

	if (!req->command)
		return -EINVAL;
	if (!req->args)
		return 0;
	args = req->command->args;
	json_object_object_foreach(req->args, key, v) {
		const struct control_arg *a = NULL;

		for (size_t i = 0; args && args[i].name; i++)
			if (strcmp(args[i].name, key) == 0) {
				a = &args[i];
				break;
			}
		if (!a) {
			WHY("'%s' takes no argument \"%.40s\"", req->command->name, key);
			return -EINVAL;
		}
		if (!arg_ok(a, v)) {
			if (a->type == CONTROL_ARG_INT)
				WHY("\"%s\" must be %s, from %" PRId64 " to %" PRId64, a->name, a->what,
				    a->min, a->max);
			else if (a->type == CONTROL_ARG_STRINGS)
				WHY("\"%s\" must be %s (up to %" PRId64 ")", a->name, a->what, a->max);
			else
				WHY("\"%s\" must be %s", a->name, a->what);
			return -EINVAL;
		}
	}
	return 0;
}

/* Serialises o plus a newline into a new string and drops o. */
static int finish_line(struct json_object *o, char **ret_line)
{
	const char *s;
	size_t n;
	char *line;

	if (!o)
		return -ENOMEM;
	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	if (!s) {
		json_object_put(o);
		return -ENOMEM;
	}
	line = malloc(n + 2);
	if (!line) {
		json_object_put(o);
		return -ENOMEM;
	}
	memcpy(line, s, n);
	line[n] = '\n';
	line[n + 1] = '\0';
	json_object_put(o);
	*ret_line = line;
	return 0;
}

static struct json_object *new_envelope(uint64_t id)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	json_object_object_add(o, "v", json_object_new_int(CONTROL_VERSION));
	json_object_object_add(o, "id", json_object_new_int64((int64_t)id));
	return o;
}

int control_request_format(uint64_t id, const char *cmd, struct json_object *args,
			   char **ret_line)
{
	struct json_object *o = new_envelope(id);

	if (!o) {
		json_object_put(args);
		return -ENOMEM;
	}
	json_object_object_add(o, "cmd", json_object_new_string(cmd));
	json_object_object_add(o, "args", args ? args : json_object_new_object());
	return finish_line(o, ret_line);
}

int control_reply_ok(uint64_t id, struct json_object *result, char **ret_line)
{
	struct json_object *o = new_envelope(id);

	if (!o) {
		json_object_put(result);
		return -ENOMEM;
	}
	json_object_object_add(o, "ok", result ? result : json_object_new_object());
	return finish_line(o, ret_line);
}

int control_reply_error(uint64_t id, enum control_error code, const char *message,
			char **ret_line)
{
	struct json_object *o = new_envelope(id), *e;

	if (!o)
		return -ENOMEM;
	e = json_object_new_object();
	json_object_object_add(e, "code", json_object_new_string(control_error_to_string(code)));
	json_object_object_add(e, "message", json_object_new_string(message ? message : ""));
	json_object_object_add(o, "error", e);
	return finish_line(o, ret_line);
}

int control_event_format(uint64_t watch_id, const char *event, struct json_object *data,
			 char **ret_line)
{
	struct json_object *o = new_envelope(watch_id);

	if (!o) {
		json_object_put(data);
		return -ENOMEM;
	}
	json_object_object_add(o, "event", json_object_new_string(event));
	json_object_object_add(o, "data", data ? data : json_object_new_object());
	return finish_line(o, ret_line);
}

int control_reply_parse(const char *line, size_t len, size_t max, struct control_reply *ret,
			struct json_object **ret_root)
{
	struct control_reply rep = { 0 };
	struct json_object *root, *v, *e;
	uint64_t version;

	if (len > max)
		return -EMSGSIZE;
	if (memchr(line, '\0', len))
		return -EBADMSG;
	root = parse_object(line, len);
	if (!root)
		return -EBADMSG;
	if (get_u64(root, "v", &version) < 0) {
		json_object_put(root);
		return -EBADMSG;
	}
	if (version != CONTROL_VERSION) {
		json_object_put(root);
		return -EPROTO;
	}
	/* Id 0 answers a message whose id could not be read (an oversized line). */
	if (!json_object_object_get_ex(root, "id", &v) || !json_object_is_type(v, json_type_int) ||
	    json_object_get_int64(v) < 0)
		goto bad;
	rep.id = (uint64_t)json_object_get_int64(v);

	if (json_object_object_get_ex(root, "event", &v)) {
		if (!json_object_is_type(v, json_type_string))
			goto bad;
		rep.is_event = true;
		rep.event = json_object_get_string(v);
		if (!json_object_object_get_ex(root, "data", &rep.result) ||
		    !json_object_is_type(rep.result, json_type_object))
			goto bad;
	} else if (json_object_object_get_ex(root, "ok", &rep.result)) {
		if (!json_object_is_type(rep.result, json_type_object))
			goto bad;
	} else if (json_object_object_get_ex(root, "error", &e)) {
		if (!json_object_is_type(e, json_type_object))
			goto bad;
		rep.failed = true;
		if (!json_object_object_get_ex(e, "code", &v) || !json_object_is_type(v, json_type_string))
			goto bad;
		rep.error_name = json_object_get_string(v);
		rep.error = control_error_from_string(rep.error_name);
		if (rep.error < 0)
			rep.error = -1;
		if (!json_object_object_get_ex(e, "message", &v) ||
		    !json_object_is_type(v, json_type_string))
			goto bad;
		rep.message = json_object_get_string(v);
	} else {
		goto bad;
	}
	*ret = rep;
	*ret_root = root;
	return 0;
bad:
	json_object_put(root);
	return -EBADMSG;
}

enum control_role control_role_decide(uid_t uid, const gid_t *groups, size_t n_groups,
				      gid_t operator_gid, gid_t supervisor_gid)
{
	enum control_role role = CONTROL_ROLE_NONE;

	if (uid == 0)
		return CONTROL_ROLE_SUPERVISOR;
	for (size_t i = 0; i < n_groups; i++) {
		if (supervisor_gid != (gid_t)-1 && groups[i] == supervisor_gid)
			return CONTROL_ROLE_SUPERVISOR;
		if (operator_gid != (gid_t)-1 && groups[i] == operator_gid)
			role = CONTROL_ROLE_OPERATOR;
	}
	return role;
}

bool control_authorized(enum control_role role, const struct control_command *command)
{
	if (!command || role == CONTROL_ROLE_NONE || (unsigned)role >= _CONTROL_ROLE_MAX)
		return false;
	return role >= command->role;
}

void control_linebuf_init(struct control_linebuf *lb, size_t max)
{
	*lb = (struct control_linebuf){ .max = max };
}

void control_linebuf_done(struct control_linebuf *lb)
{
	if (!lb)
		return;
	free(lb->buf);
	*lb = (struct control_linebuf){ .max = lb->max };
}

int control_linebuf_append(struct control_linebuf *lb, const void *data, size_t n)
{
	size_t need;

	/* Room for the longest line, its newline and a terminator; beyond that we only keep
	 * what is needed to find the next newline. */
	need = lb->len + n + 1;
	if (need > lb->size) {
		size_t size = lb->size ? lb->size : 1024;
		char *b;

		while (size < need)
			size *= 2;
		b = realloc(lb->buf, size);
		if (!b)
			return -ENOMEM;
		lb->buf = b;
		lb->size = size;
	}
	memcpy(lb->buf + lb->len, data, n);
	lb->len += n;
	return 0;
}

/* Removes the first n bytes. */
static void linebuf_consume(struct control_linebuf *lb, size_t n)
{
	memmove(lb->buf, lb->buf + n, lb->len - n);
	lb->len -= n;
}

int control_linebuf_next(struct control_linebuf *lb, const char **ret_line, size_t *ret_len)
{
	char *nl;
	size_t n;

	/* The line handed out by the previous call stays valid until now. */
	if (lb->pending) {
		linebuf_consume(lb, lb->pending);
		lb->pending = 0;
	}
	for (;;) {
		if (lb->len == 0)
			return 0;
		nl = memchr(lb->buf, '\n', lb->len);
		if (lb->overflow) {
			if (!nl) {
				lb->len = 0;
				return 0;
			}
			linebuf_consume(lb, (size_t)(nl - lb->buf) + 1);
			lb->overflow = false;
			continue;
		}
		if (!nl) {
			if (lb->len > lb->max) {
				/* Drop what we have and the rest of the line as it comes. */
				lb->overflow = true;
				lb->len = 0;
				return -EMSGSIZE;
			}
			return 0;
		}
		n = (size_t)(nl - lb->buf);
		if (n > lb->max) {
			linebuf_consume(lb, n + 1);
			return -EMSGSIZE;
		}
		lb->buf[n] = '\0';
		lb->pending = n + 1;
		*ret_line = lb->buf;
		*ret_len = n;
		return 1;
	}
}

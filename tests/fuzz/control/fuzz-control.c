/* Fuzzes the control server's message handling without sockets: the input is a byte stream
 * as a client would send it, split into reads, reassembled into lines under a small limit,
 * parsed as requests with the ordering rule, authorized, their arguments checked against
 * the command table, answered; every answer the codec builds must parse back as a reply.
 * The same lines are also parsed as replies (sfictl's side). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "control.h"

#define LIMIT 512

static void check_reply(const char *line)
{
	struct control_reply rep;
	struct json_object *root;
	size_t len = strlen(line);

	if (len == 0 || line[len - 1] != '\n')
		abort();
	if (control_reply_parse(line, len - 1, LIMIT * 4, &rep, &root) != 0)
		abort();
	json_object_put(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_linebuf lb;
	enum control_role role;
	uint64_t prev = 0;
	size_t off = 1, chunk;

	if (size < 1)
		return 0;
	role = (enum control_role)(data[0] % _CONTROL_ROLE_MAX);
	chunk = 1 + (data[0] >> 2);
	control_linebuf_init(&lb, LIMIT);
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk;
		const char *line;
		size_t len;
		int r;

		if (control_linebuf_append(&lb, data + off, n) < 0)
			break;
		off += n;
		while ((r = control_linebuf_next(&lb, &line, &len)) != 0) {
			struct control_request req;
			struct json_object *root = NULL, *rroot = NULL;
			struct control_reply rep;
			enum control_error code;
			uint64_t id;
			char why[200], *out = NULL;

			if (r < 0) {
				if (control_reply_error(0, CONTROL_E_TOO_LARGE, "too large", &out) == 0)
					check_reply(out);
				free(out);
				continue;
			}
			if (line[len] != '\0')
				abort();
			if (control_reply_parse(line, len, LIMIT, &rep, &rroot) == 0)
				json_object_put(rroot);
			r = control_request_parse(line, len, LIMIT, prev, &req, &root, &code, &id, why,
						  sizeof(why));
			if (r < 0) {
				if ((unsigned)code >= _CONTROL_E_MAX)
					abort();
				if (control_reply_error(id, code, why, &out) == 0)
					check_reply(out);
				free(out);
				continue;
			}
			if (req.id <= prev || !req.command)
				abort();
			prev = req.id;
			why[0] = '\0';
			if (!control_authorized(role, req.command)) {
				r = control_reply_error(req.id, CONTROL_E_DENIED, "denied", &out);
			} else if (control_request_check_args(&req, why, sizeof(why)) < 0) {
				if (!why[0])
					abort();
				r = control_reply_error(req.id, CONTROL_E_ARGUMENT, why, &out);
			} else {
				struct json_object *res = json_object_new_object();

				json_object_object_add(res, "echo", req.args ? json_object_get(req.args)
									     : NULL);
				r = control_reply_ok(req.id, res, &out);
			}
			if (r == 0)
				check_reply(out);
			free(out);
			json_object_put(root);
		}
	}
	control_linebuf_done(&lb);
	return 0;
}

/* Control protocol codec: request parsing, limits, ordering, replies, the line buffer and
 * the authorization decision. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "control.h"

static int parse(const char *line, uint64_t prev, enum control_error *err, uint64_t *id,
		 struct control_request *req, struct json_object **root)
{
	char why[200];

	return control_request_parse(line, strlen(line), 1024, prev, req, root, err, id, why,
				     sizeof(why));
}

static void test_request_ok(void **state)
{
	struct control_request req;
	struct json_object *root = NULL;
	enum control_error err;
	uint64_t id;

	assert_int_equal(parse("{\"v\":1,\"id\":7,\"cmd\":\"start\",\"args\":{\"slots\":[\"a\"]}}",
			       0, &err, &id, &req, &root), 0);
	assert_int_equal(req.id, 7);
	assert_int_equal(req.command->cmd, CONTROL_CMD_START);
	assert_non_null(req.args);
	json_object_put(root);
}

static void test_request_errors(void **state)
{
	struct control_request req;
	struct json_object *root = NULL;
	enum control_error err;
	uint64_t id;
	char big[2048];

	assert_true(parse("not json", 0, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_MALFORMED);
	assert_true(parse("[1,2]", 0, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_MALFORMED);
	assert_true(parse("{\"v\":1,\"id\":1,\"cmd\":\"status\"} {}", 0, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_MALFORMED);
	assert_true(parse("{\"v\":2,\"id\":1,\"cmd\":\"status\"}", 0, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_VERSION);
	assert_int_equal(id, 1);
	assert_true(parse("{\"v\":1,\"cmd\":\"status\"}", 0, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_ORDER);
	assert_true(parse("{\"v\":1,\"id\":-3,\"cmd\":\"status\"}", 0, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_ORDER);
	/* Ids must grow on a connection. */
	assert_true(parse("{\"v\":1,\"id\":5,\"cmd\":\"status\"}", 5, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_ORDER);
	assert_int_equal(id, 5);
	assert_true(parse("{\"v\":1,\"id\":6,\"cmd\":\"reboot\"}", 5, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_UNKNOWN);
	assert_true(parse("{\"v\":1,\"id\":6,\"cmd\":7}", 5, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_MALFORMED);
	assert_true(parse("{\"v\":1,\"id\":6,\"cmd\":\"status\",\"args\":3}", 5, &err, &id, &req,
			  &root) < 0);
	assert_int_equal(err, CONTROL_E_MALFORMED);
	memset(big, ' ', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_true(parse(big, 0, &err, &id, &req, &root) < 0);
	assert_int_equal(err, CONTROL_E_TOO_LARGE);
}

/* Parses a request and checks its arguments: 0, or -EINVAL when they are refused. */
static int check_args(const char *line)
{
	struct control_request req;
	struct json_object *root = NULL;
	enum control_error err;
	uint64_t id;
	char why[200];
	int r;

	assert_int_equal(parse(line, 0, &err, &id, &req, &root), 0);
	r = control_request_check_args(&req, why, sizeof(why));
	if (r < 0)
		assert_true(strlen(why) > 0);
	json_object_put(root);
	return r;
}

#define REQ(cmd, args) "{\"v\":1,\"id\":1,\"cmd\":\"" cmd "\",\"args\":" args "}"

static void test_request_args(void **state)
{
	static const char *const good[] = {
		REQ("start", "{}"), REQ("start", "{\"slots\":[]}"), REQ("stop", "{\"slots\":[\"a\",\"b\"]}"),
		REQ("status", "null"), REQ("history", "{\"limit\":5,\"job\":0,\"slot\":\"a\","
		"\"chip\":\"00\",\"failed\":true}"), REQ("stats", "{\"job\":3}"),
		REQ("job-load", "{\"image\":\"/a.sfi\",\"count\":4294967295,\"modules\":\"m\","
		"\"global_license\":\"g\"}"),
		REQ("export", "{\"format\":\"csv\",\"job\":1,\"since_ms\":0}"),
	};
	/* Each of these aborted sfid or reached a handler with a value of the wrong type. */
	static const char *const bad[] = {
		REQ("start", "{\"slots\":\"a\"}"), REQ("stop", "{\"slots\":null}"),
		REQ("pause", "{\"slots\":3}"), REQ("start", "{\"slots\":{\"a\":1}}"),
		REQ("start", "{\"slots\":[1]}"), REQ("start", "{\"slots\":[\"\"]}"),
		REQ("start", "{\"slots\":[\"a\\u0000b\"]}"), REQ("start", "{\"slot\":[\"a\"]}"),
		REQ("status", "{\"x\":1}"), REQ("history", "{\"limit\":0}"),
		REQ("history", "{\"limit\":\"5\"}"), REQ("history", "{\"failed\":1}"),
		REQ("history", "{\"chip\":7}"), REQ("stats", "{\"job\":-1}"),
		REQ("stats", "{\"job\":1.5}"), REQ("job-load", "{\"image\":5}"),
		REQ("job-load", "{\"image\":\"/a\\u0000/b\"}"),
		REQ("job-load", "{\"image\":\"/a\",\"count\":4294967296}"),
		REQ("job-load", "{\"image\":\"/a\",\"count\":-1}"),
		REQ("export", "{\"format\":[\"csv\"]}"), REQ("export", "{\"since_ms\":null}"),
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (check_args(good[i]) != 0)
			fail_msg("refused: %s", good[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (check_args(bad[i]) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
	}
}

static void test_reply_roundtrip(void **state)
{
	struct control_reply rep;
	struct json_object *root, *o = json_object_new_object();
	char *line;

	json_object_object_add(o, "x", json_object_new_int(3));
	assert_int_equal(control_reply_ok(9, o, &line), 0);
	assert_non_null(strchr(line, '\n'));
	assert_int_equal(control_reply_parse(line, strlen(line) - 1, 4096, &rep, &root), 0);
	assert_int_equal(rep.id, 9);
	assert_false(rep.failed);
	assert_int_equal(json_object_get_int(json_object_object_get(rep.result, "x")), 3);
	json_object_put(root);
	free(line);

	assert_int_equal(control_reply_error(4, CONTROL_E_DENIED, "no", &line), 0);
	assert_int_equal(control_reply_parse(line, strlen(line) - 1, 4096, &rep, &root), 0);
	assert_true(rep.failed);
	assert_int_equal(rep.error, CONTROL_E_DENIED);
	assert_string_equal(rep.message, "no");
	json_object_put(root);
	free(line);

	assert_int_equal(control_event_format(2, "state", NULL, &line), 0);
	assert_int_equal(control_reply_parse(line, strlen(line) - 1, 4096, &rep, &root), 0);
	assert_true(rep.is_event);
	assert_string_equal(rep.event, "state");
	assert_int_equal(rep.id, 2);
	json_object_put(root);
	free(line);

	assert_int_equal(control_request_format(3, "status", NULL, &line), 0);
	{
		struct control_request req;
		enum control_error err;
		uint64_t id;

		/* Trailing white space (the newline, a CR) is tolerated. */
		assert_int_equal(parse(line, 2, &err, &id, &req, &root), 0);
		json_object_put(root);
		line[strlen(line) - 1] = '\0';
		assert_int_equal(parse(line, 2, &err, &id, &req, &root), 0);
		json_object_put(root);
	}
	free(line);
}

static void test_linebuf(void **state)
{
	struct control_linebuf lb;
	const char *line;
	size_t len;

	control_linebuf_init(&lb, 8);
	assert_int_equal(control_linebuf_append(&lb, "abc\nde", 6), 0);
	assert_int_equal(control_linebuf_next(&lb, &line, &len), 1);
	assert_int_equal(len, 3);
	assert_string_equal(line, "abc");
	assert_int_equal(control_linebuf_next(&lb, &line, &len), 0);
	assert_int_equal(control_linebuf_append(&lb, "f\n", 2), 0);
	assert_int_equal(control_linebuf_next(&lb, &line, &len), 1);
	assert_string_equal(line, "def");
	/* An oversized line is reported once and skipped up to its newline. */
	assert_int_equal(control_linebuf_append(&lb, "0123456789", 10), 0);
	assert_int_equal(control_linebuf_next(&lb, &line, &len), -EMSGSIZE);
	assert_int_equal(control_linebuf_append(&lb, "xyz\nok\n", 7), 0);
	assert_int_equal(control_linebuf_next(&lb, &line, &len), 1);
	assert_string_equal(line, "ok");
	assert_int_equal(control_linebuf_append(&lb, "0123456789\nhi\n", 14), 0);
	assert_int_equal(control_linebuf_next(&lb, &line, &len), -EMSGSIZE);
	assert_int_equal(control_linebuf_next(&lb, &line, &len), 1);
	assert_string_equal(line, "hi");
	control_linebuf_done(&lb);
}

static void test_authorization(void **state)
{
	const gid_t op = 100, sup = 200;
	gid_t g_op[] = { 5, op }, g_sup[] = { sup }, g_none[] = { 5, 6 }, g_both[] = { op, sup };

	assert_int_equal(control_role_decide(0, NULL, 0, op, sup), CONTROL_ROLE_SUPERVISOR);
	assert_int_equal(control_role_decide(1000, g_op, 2, op, sup), CONTROL_ROLE_OPERATOR);
	assert_int_equal(control_role_decide(1000, g_sup, 1, op, sup), CONTROL_ROLE_SUPERVISOR);
	assert_int_equal(control_role_decide(1000, g_both, 2, op, sup), CONTROL_ROLE_SUPERVISOR);
	assert_int_equal(control_role_decide(1000, g_none, 2, op, sup), CONTROL_ROLE_NONE);
	/* A missing group grants nothing, even to a process whose gid is -1. */
	assert_int_equal(control_role_decide(1000, g_op, 2, (gid_t)-1, (gid_t)-1), CONTROL_ROLE_NONE);

	for (int c = 0; c < _CONTROL_CMD_MAX; c++) {
		const struct control_command *cmd = control_command_get(c);

		assert_non_null(cmd);
		assert_ptr_equal(control_command_find(cmd->name), cmd);
		assert_false(control_authorized(CONTROL_ROLE_NONE, cmd));
		assert_true(control_authorized(CONTROL_ROLE_SUPERVISOR, cmd));
	}
	assert_true(control_authorized(CONTROL_ROLE_OPERATOR, control_command_get(CONTROL_CMD_STATUS)));
	assert_true(control_authorized(CONTROL_ROLE_OPERATOR, control_command_get(CONTROL_CMD_WATCH)));
	assert_true(control_authorized(CONTROL_ROLE_OPERATOR, control_command_get(CONTROL_CMD_START)));
	assert_true(control_authorized(CONTROL_ROLE_OPERATOR, control_command_get(CONTROL_CMD_STATS)));
	assert_false(control_authorized(CONTROL_ROLE_OPERATOR,
					control_command_get(CONTROL_CMD_JOB_LOAD)));
	assert_false(control_authorized(CONTROL_ROLE_OPERATOR, control_command_get(CONTROL_CMD_EXPORT)));
	assert_false(control_authorized(CONTROL_ROLE_OPERATOR, control_command_get(CONTROL_CMD_HSM)));
	assert_false(control_authorized(CONTROL_ROLE_OPERATOR, control_command_get(CONTROL_CMD_CONFIG)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_ok),
		cmocka_unit_test(test_request_errors),
		cmocka_unit_test(test_request_args),
		cmocka_unit_test(test_reply_roundtrip),
		cmocka_unit_test(test_linebuf),
		cmocka_unit_test(test_authorization),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

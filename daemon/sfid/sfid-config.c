/* Configuration file: see config.h. */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "sfid-config.h"
#include "sfi-parse.h"
#include "control.h"
#include "link.h"
#include "transport-dfu.h"

struct parse_state {
	struct config *c;
	const char *path;
	unsigned line;		/* line the reader returned last */
	unsigned section_line;	/* line of the last [section] header */
	unsigned entered_line;	/* section_line when the handler last changed section */
	char section[64];	/* section the handler saw last */
	int slot;		/* index of the current [slot] section, -1 otherwise */
	unsigned pool_line;	/* of [hsm] pool */
	bool failed;
	char *err;
	size_t err_size;

	/* Reader over a string or a FILE. */
	const char *text;
	FILE *f;

	/* Keys set so far ("section\nkey"), to refuse a second value for one. */
	struct seen_key {
		char *key;
		unsigned line;
	} *seen;
	size_t n_seen;
};

static void fail(struct parse_state *st, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail(struct parse_state *st, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (st->failed)
		return; /* the first error is the one the operator needs */
	st->failed = true;
	n = snprintf(st->err, st->err_size, "%s:%u: ", st->path, line);
	if (n < 0 || (size_t)n >= st->err_size)
		return;
	va_start(ap, fmt);
	vsnprintf(st->err + n, st->err_size - (size_t)n, fmt, ap);
	va_end(ap);
}

/* Reader that counts lines and notes where each section header is. inih hands it a buffer
 * of its compiled line limit and would take the rest of a longer line as a line of its own
 * (the tail of a long comment read as a key): such a line is refused here. */
static char *reader(char *str, int num, void *stream)
{
	struct parse_state *st = stream;
	bool too_long = false;
	char *p;

	if (st->failed)
		return NULL;
	if (st->f) {
		size_t len;
		int ch;

		if (!fgets(str, num, st->f))
			return NULL;
		len = strlen(str);
		if (len == (size_t)num - 1 && str[len - 1] != '\n') {
			ch = fgetc(st->f);
			too_long = ch != EOF;
		}
	} else {
		const char *nl;
		size_t n;

		if (!st->text || !*st->text)
			return NULL;
		nl = strchr(st->text, '\n');
		n = nl ? (size_t)(nl - st->text) + 1 : strlen(st->text);
		if (n > (size_t)num - 1) {
			n = (size_t)num - 1;
			too_long = true;
		}
		memcpy(str, st->text, n);
		str[n] = '\0';
		st->text += n;
	}
	st->line++;
	if (too_long) {
		fail(st, st->line, "line is longer than %d characters", num - 2);
		return NULL;
	}
	for (p = str; *p == ' ' || *p == '\t'; p++)
		;
	if (*p == '[')
		st->section_line = st->line;
	return str;
}

static bool set_uint(struct parse_state *st, const char *section, const char *name,
		     const char *value, unsigned long long min, unsigned long long max,
		     unsigned long long *ret)
{
	if (sfi_parse_decimal(value, min, max, ret) < 0) {
		fail(st, st->line, "key '%s' in [%s]: '%s' is not a whole number from %llu to %llu",
		     name, section, value, min, max);
		return false;
	}
	return true;
}

static bool set_string(struct parse_state *st, const char *section, const char *name,
		       const char *value, char **field)
{
	char *s;

	if (!*value) {
		fail(st, st->line, "key '%s' in [%s] is empty", name, section);
		return false;
	}
	s = strdup(value);
	if (!s) {
		fail(st, st->line, "out of memory");
		return false;
	}
	free(*field);
	*field = s;
	return true;
}

static bool slot_name_ok(const char *n)
{
	size_t len = strlen(n);

	if (len == 0 || len > CONFIG_NAME_MAX)
		return false;
	for (const char *p = n; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
			return false;
	return true;
}

static void slot_defaults(struct config_slot *s)
{
	s->baud = 115200;
	s->ack_ms = 1000;
	s->block_ms = 1000;
	s->special_ms = 15000;
	s->poll_ms = 250;
	s->reopen_ms = 1000;
	s->retries = 2;
}

/* Enters [slot NAME]: a new slot, unless the section merely continues. */
static bool enter_slot(struct parse_state *st, const char *section)
{
	struct config *c = st->c;
	const char *name = section + 5;
	struct config_slot *s;

	while (*name == ' ' || *name == '\t')
		name++;
	if (!slot_name_ok(name)) {
		fail(st, st->section_line, "section [%s]: slot name must be 1 to %d letters, digits, "
		     "'-', '_' or '.'", section, CONFIG_NAME_MAX);
		return false;
	}
	for (size_t i = 0; i < c->n_slots; i++)
		if (strcmp(c->slots[i].name, name) == 0) {
			fail(st, st->section_line, "section [%s]: slot '%s' is already defined at line %u",
			     section, name, c->slots[i].line);
			return false;
		}
	if (c->n_slots >= CONFIG_SLOTS_MAX) {
		fail(st, st->section_line, "section [%s]: more than %d slots", section,
		     CONFIG_SLOTS_MAX);
		return false;
	}
	s = &c->slots[c->n_slots];
	*s = (struct config_slot){ 0 };
	slot_defaults(s);
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->line = st->section_line;
	st->slot = (int)c->n_slots++;
	return true;
}

static bool handle_slot(struct parse_state *st, const char *section, const char *name,
			const char *value)
{
	struct config_slot *s = &st->c->slots[st->slot];
	unsigned long long x;

	if (strcmp(name, "port") == 0)
		return set_string(st, section, name, value, &s->port);
	if (strcmp(name, "entry") == 0) {
		struct link_entry_step steps[LINK_ENTRY_MAX_STEPS];
		char why[160];
		size_t n;

		if (link_entry_parse(value, steps, LINK_ENTRY_MAX_STEPS, &n, why, sizeof(why)) < 0) {
			fail(st, st->line, "key 'entry' in [%s]: %s", section, why);
			return false;
		}
		return set_string(st, section, name, value, &s->entry);
	}
	if (strcmp(name, "backend") == 0) {
		if (strcmp(value, "osfi") != 0 && strcmp(value, "cubeprogrammer") != 0) {
			fail(st, st->line, "key 'backend' in [%s]: '%s' is neither 'osfi' nor "
			     "'cubeprogrammer'", section, value);
			return false;
		}
		s->vendor = strcmp(value, "cubeprogrammer") == 0;
		return true;
	}
	if (strcmp(name, "baud") == 0) {
		if (!set_uint(st, section, name, value, 1200, 4000000, &x))
			return false;
		s->baud = (unsigned)x;
		return true;
	}
	struct {
		const char *key;
		unsigned *field;
		unsigned long long min, max;
	} ms[] = {
		{ "ack_timeout_ms", &s->ack_ms, 10, 60000 },
		{ "block_timeout_ms", &s->block_ms, 10, 60000 },
		{ "special_timeout_ms", &s->special_ms, 100, 600000 },
		{ "poll_ms", &s->poll_ms, 10, 60000 },
		{ "reopen_ms", &s->reopen_ms, 50, 600000 },
		{ "retries", &s->retries, 0, 10 },
	};
	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		if (strcmp(name, ms[i].key) == 0) {
			if (!set_uint(st, section, name, value, ms[i].min, ms[i].max, &x))
				return false;
			*ms[i].field = (unsigned)x;
			return true;
		}
	fail(st, st->line, "unknown key '%s' in [%s]", name, section);
	return false;
}

/* Notes that section.name is set on this line; false (after failing) when it was already. */
static bool key_first(struct parse_state *st, const char *section, const char *name)
{
	struct seen_key *n;
	char *key;

	if (asprintf(&key, "%s\n%s", section, name) < 0) {
		fail(st, st->line, "out of memory");
		return false;
	}
	for (size_t i = 0; i < st->n_seen; i++)
		if (strcmp(st->seen[i].key, key) == 0) {
			fail(st, st->line, "key '%s' in [%s] is already set at line %u", name, section,
			     st->seen[i].line);
			free(key);
			return false;
		}
	n = realloc(st->seen, (st->n_seen + 1) * sizeof(*st->seen));
	if (!n) {
		free(key);
		fail(st, st->line, "out of memory");
		return false;
	}
	st->seen = n;
	st->seen[st->n_seen++] = (struct seen_key){ .key = key, .line = st->line };
	return true;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *st = user;
	struct config *c = st->c;
	unsigned long long x;

	if (st->failed)
		return 1;
	if (strcmp(section, st->section) != 0 || st->section_line != st->entered_line) {
		size_t n = strnlen(section, sizeof(st->section) - 1);

		memcpy(st->section, section, n);
		st->section[n] = '\0';
		st->entered_line = st->section_line;
		st->slot = -1;
		if (strncmp(section, "slot", 4) == 0 && (section[4] == ' ' || section[4] == '\t')) {
			if (!enter_slot(st, section))
				return 1;
		}
	}
	if (!name)
		return 1;
	if (!key_first(st, section, name))
		return 1;

	if (st->slot >= 0)
		return handle_slot(st, section, name, value), 1;

	if (strcmp(section, "station") == 0) {
		if (strcmp(name, "name") == 0)
			return set_string(st, section, name, value, &c->station), 1;
	} else if (strcmp(section, "hsm") == 0) {
		if (strcmp(name, "module") == 0)
			return set_string(st, section, name, value, &c->hsm_module), 1;
		if (strcmp(name, "token") == 0)
			return set_string(st, section, name, value, &c->hsm_token), 1;
		if (strcmp(name, "pool") == 0) {
			st->pool_line = st->line;
			return set_string(st, section, name, value, &c->hsm_pool_text), 1;
		}
		if (strcmp(name, "pin_file") == 0)
			return set_string(st, section, name, value, &c->hsm_pin_file), 1;
		if (strcmp(name, "pin_credential") == 0)
			return set_string(st, section, name, value, &c->hsm_pin_credential), 1;
		if (strcmp(name, "workers") == 0) {
			if (set_uint(st, section, name, value, 1, 16, &x))
				c->hsm_workers = (unsigned)x;
			return 1;
		}
	} else if (strcmp(section, "database") == 0) {
		if (strcmp(name, "path") == 0)
			return set_string(st, section, name, value, &c->db_path), 1;
		if (strcmp(name, "max_size_mb") == 0) {
			if (set_uint(st, section, name, value, 0, 1ull << 30, &x))
				c->db_max_bytes = x << 20;
			return 1;
		}
		if (strcmp(name, "max_size_kb") == 0) {
			if (set_uint(st, section, name, value, 0, 1ull << 40, &x))
				c->db_max_bytes = x << 10;
			return 1;
		}
	} else if (strcmp(section, "control") == 0) {
		if (strcmp(name, "socket") == 0)
			return set_string(st, section, name, value, &c->socket_path), 1;
		if (strcmp(name, "operator_group") == 0)
			return set_string(st, section, name, value, &c->operator_group), 1;
		if (strcmp(name, "supervisor_group") == 0)
			return set_string(st, section, name, value, &c->supervisor_group), 1;
		if (strcmp(name, "max_clients") == 0) {
			if (set_uint(st, section, name, value, 1, 1024, &x))
				c->max_clients = (unsigned)x;
			return 1;
		}
		if (strcmp(name, "idle_timeout_ms") == 0) {
			if (set_uint(st, section, name, value, 100, 86400000, &x))
				c->idle_timeout_ms = (unsigned)x;
			return 1;
		}
		if (strcmp(name, "line_timeout_ms") == 0) {
			if (set_uint(st, section, name, value, 100, 600000, &x))
				c->line_timeout_ms = (unsigned)x;
			return 1;
		}
		if (strcmp(name, "close_timeout_ms") == 0) {
			if (set_uint(st, section, name, value, 100, 600000, &x))
				c->close_timeout_ms = (unsigned)x;
			return 1;
		}
		if (strcmp(name, "max_message") == 0) {
			if (set_uint(st, section, name, value, CONTROL_MESSAGE_MIN, CONTROL_MESSAGE_MAX, &x))
				c->max_message = (size_t)x;
			return 1;
		}
	} else if (strcmp(section, "hooks") == 0) {
		if (strcmp(name, "result") == 0) {
			if (value[0] != '/')
				fail(st, st->line, "key 'result' in [hooks]: '%s' is not an absolute "
				     "path", value);
			else if (access(value, X_OK) != 0)
				fail(st, st->line, "key 'result' in [hooks]: %s is not an executable "
				     "file sfid may run", value);
			else
				set_string(st, section, name, value, &c->result_hook);
			return 1;
		}
		if (strcmp(name, "result_timeout_ms") == 0) {
			if (set_uint(st, section, name, value, 100, 600000, &x))
				c->result_hook_timeout_ms = (unsigned)x;
			return 1;
		}
	} else if (strcmp(section, "central") == 0) {
		char why[512];
		int r = central_config_set(&c->central, name, value, why, sizeof(why));

		if (r < 0)
			fail(st, st->line, "%s", why);
		if (r != 0)
			return 1;
	} else if (strcmp(section, "vendor") == 0) {
		char why[512];
		int r = vendor_config_set(&c->vendor, name, value, why, sizeof(why));

		if (r < 0)
			fail(st, st->line, "%s", why);
		if (r != 0)
			return 1;
	} else if (strcmp(section, "limits") == 0) {
		if (strcmp(name, "shutdown_timeout_ms") == 0) {
			if (set_uint(st, section, name, value, 0, 600000, &x))
				c->shutdown_timeout_ms = (unsigned)x;
			return 1;
		}
		if (strcmp(name, "history") == 0) {
			if (set_uint(st, section, name, value, 1, 100000, &x))
				c->history_max = (unsigned)x;
			return 1;
		}
		if (strcmp(name, "retries_per_chip") == 0) {
			if (set_uint(st, section, name, value, 1, 100, &x))
				c->retry_limit = (unsigned)x;
			return 1;
		}
	} else {
		fail(st, st->line, "unknown section [%s] (key '%s')", section, name);
		return 1;
	}
	fail(st, st->line, "unknown key '%s' in [%s]", name, section);
	return 1;
}

static bool resolve_group(struct parse_state *st, const char *key, const char *name, gid_t *ret)
{
	struct group grp, *res = NULL;
	char buf[4096];
	int r;

	r = getgrnam_r(name, &grp, buf, sizeof(buf), &res);
	if (r != 0 || !res) {
		fail(st, st->line, "key '%s' in [control]: group '%s' does not exist; create it "
		     "(systemd-sysusers) or name another", key, name);
		return false;
	}
	*ret = res->gr_gid;
	return true;
}

/* [hsm] pool: token names (labels or serial:S) separated by commas or blanks, each once,
 * none the line token. */
static bool split_pool(struct parse_state *st)
{
	struct config *c = st->c;
	const char *p = c->hsm_pool_text;

	while (*p) {
		size_t n = strcspn(p, ", \t");
		char *name;

		if (n == 0) {
			p++;
			continue;
		}
		if (c->n_hsm_pool >= CONFIG_POOL_MAX) {
			fail(st, st->pool_line, "key 'pool' in [hsm]: more than %d tokens",
			     CONFIG_POOL_MAX);
			return false;
		}
		name = strndup(p, n);
		if (!name) {
			fail(st, st->line, "out of memory");
			return false;
		}
		c->hsm_pool[c->n_hsm_pool++] = name;
		p += n;
		if (strcmp(name, c->hsm_token) == 0) {
			fail(st, st->pool_line, "key 'pool' in [hsm]: '%s' is the line token itself "
			     "('token')", name);
			return false;
		}
		for (size_t k = 0; k + 1 < c->n_hsm_pool; k++)
			if (strcmp(c->hsm_pool[k], name) == 0) {
				fail(st, st->pool_line, "key 'pool' in [hsm]: token '%s' is named "
				     "twice", name);
				return false;
			}
	}
	return true;
}

/* Checks what only the whole file can tell: required keys and cross references. */
static void config_check(struct parse_state *st)
{
	struct config *c = st->c;

	if (st->failed)
		return;
	if (c->n_slots == 0) {
		fail(st, st->line, "no [slot NAME] section: the station has nothing to program");
		return;
	}
	for (size_t i = 0; i < c->n_slots; i++) {
		if (!c->slots[i].port) {
			fail(st, c->slots[i].line, "key 'port' missing in [slot %s]", c->slots[i].name);
			return;
		}
		{
			struct link_spec spec;
			char why[256];

			if (strncmp(c->slots[i].port, "dfu:", 4) == 0 ?
				    transport_dfu_spec_check(c->slots[i].port, why, sizeof(why)) < 0 :
				    link_spec_parse(c->slots[i].port, &spec, why, sizeof(why)) < 0) {
				fail(st, c->slots[i].line, "key 'port' in [slot %s]: %s",
				     c->slots[i].name, why);
				return;
			}
		}
		if (c->slots[i].vendor && strncmp(c->slots[i].port, "dfu:", 4) == 0) {
			fail(st, c->slots[i].line, "[slot %s]: backend = cubeprogrammer needs a UART "
			     "port, not '%s'", c->slots[i].name, c->slots[i].port);
			return;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->slots[i].port, c->slots[j].port) == 0) {
				fail(st, c->slots[i].line, "key 'port' in [slot %s]: port '%s' is "
				     "already used by slot %s", c->slots[i].name, c->slots[i].port,
				     c->slots[j].name);
				return;
			}
	}
	if (!c->hsm_module || !c->hsm_token) {
		fail(st, st->line, "key '%s' missing in [hsm]", c->hsm_module ? "token" : "module");
		return;
	}
	if (c->hsm_pool_text && !split_pool(st))
		return;
	if (!c->hsm_pin_file == !c->hsm_pin_credential) {
		fail(st, st->line, "[hsm] needs exactly one of 'pin_file' or 'pin_credential'");
		return;
	}
	if (!c->db_path) {
		fail(st, st->line, "key 'path' missing in [database]");
		return;
	}
	{
		char why[512];

		bool vendor = false;

		if (central_config_check(&c->central, why, sizeof(why)) < 0) {
			fail(st, st->line, "%s", why);
			return;
		}
		for (size_t i = 0; i < c->n_slots; i++)
			vendor |= c->slots[i].vendor;
		if (vendor_config_check(&c->vendor, vendor, why, sizeof(why)) < 0) {
			fail(st, st->line, "%s", why);
			return;
		}
	}
	if (!c->station && !(c->station = strdup("line"))) {
		fail(st, st->line, "out of memory");
		return;
	}
	if (!c->socket_path && !(c->socket_path = strdup("/run/sfid/sfid.sock"))) {
		fail(st, st->line, "out of memory");
		return;
	}
	if (!c->operator_group && !(c->operator_group = strdup("sfid-operators"))) {
		fail(st, st->line, "out of memory");
		return;
	}
	if (!c->supervisor_group && !(c->supervisor_group = strdup("sfid-supervisors"))) {
		fail(st, st->line, "out of memory");
		return;
	}
	if (!resolve_group(st, "operator_group", c->operator_group, &c->operator_gid))
		return;
	if (!resolve_group(st, "supervisor_group", c->supervisor_group, &c->supervisor_gid))
		return;
}

static int config_parse(struct parse_state *st, struct config **ret)
{
	struct config *c;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->path = strdup(st->path);
	c->max_clients = 16;
	c->max_message = CONTROL_MESSAGE_MAX_DEFAULT;
	c->idle_timeout_ms = 60000;
	c->line_timeout_ms = 10000;
	c->close_timeout_ms = 10000;
	c->shutdown_timeout_ms = 30000;
	c->hsm_workers = 2;
	c->history_max = 1000;
	c->retry_limit = 3;
	c->result_hook_timeout_ms = 10000;
	c->operator_gid = c->supervisor_gid = (gid_t)-1;
	st->c = c;
	st->slot = -1;

	r = ini_parse_stream(reader, st, handler, st);
	for (size_t i = 0; i < st->n_seen; i++)
		free(st->seen[i].key);
	free(st->seen);
	st->seen = NULL;
	if (r > 0 && !st->failed)
		fail(st, (unsigned)r, "syntax error (expected [section] or key = value)");
	else if (r < 0 && !st->failed)
		fail(st, 0, "cannot read the file");
	config_check(st);
	if (st->failed || !c->path) {
		if (!c->path)
			fail(st, 0, "out of memory");
		config_free(c);
		return -EINVAL;
	}
	*ret = c;
	return 0;
}

int config_parse_string(const char *path, const char *text, struct config **ret, char *reason,
			size_t reason_size)
{
	struct parse_state st = { .path = path, .text = text, .err = reason, .err_size = reason_size };

	return config_parse(&st, ret);
}

int config_load(const char *path, struct config **ret, char *reason, size_t reason_size)
{
	struct parse_state st = { .path = path, .err = reason, .err_size = reason_size };
	int r;

	st.f = fopen(path, "re");
	if (!st.f) {
		r = -errno;
		sfi_reason(reason, reason_size, "%s: cannot open the configuration file: %s", path,
			 strerror(-r));
		return r;
	}
	r = config_parse(&st, ret);
	fclose(st.f);
	return r;
}

struct config *config_free(struct config *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n_slots; i++) {
		free(c->slots[i].port);
		free(c->slots[i].entry);
	}
	central_config_clear(&c->central);
	vendor_config_clear(&c->vendor);
	free(c->path);
	free(c->station);
	free(c->hsm_module);
	free(c->hsm_token);
	free(c->hsm_pool_text);
	for (size_t i = 0; i < c->n_hsm_pool; i++)
		free(c->hsm_pool[i]);
	free(c->hsm_pin_file);
	free(c->hsm_pin_credential);
	free(c->db_path);
	free(c->socket_path);
	free(c->result_hook);
	free(c->operator_group);
	free(c->supervisor_group);
	free(c);
	return NULL;
}

int config_slot_find(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->n_slots; i++)
		if (strcmp(c->slots[i].name, name) == 0)
			return (int)i;
	return -ENOENT;
}

unsigned config_warn_ports(const struct config *c, FILE *f)
{
	unsigned n = 0;

	for (size_t i = 0; i < c->n_slots; i++) {
		char why[512] = "";

		if (link_probe(c->slots[i].port, NULL, 0, why, sizeof(why)) == 0)
			continue;
		fprintf(f, "%s:%u: warning: [slot %s] port '%s' cannot be opened now: %s\n",
			c->path ? c->path : "", c->slots[i].line, c->slots[i].name, c->slots[i].port,
			why);
		n++;
	}
	return n;
}

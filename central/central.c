/* libpq side of the central audit store: connection, migrations, push, head, reading. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "central.h"
#include "sfi-error.h"
#include "sfi-file.h"

#define PASSWORD_MAX 1024

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

/* libpq's messages end with a newline; the sentence does not. */
static void trim(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
}

static int errno_from_state(const char *state)
{
	if (!state)
		return -EIO;
	if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
	    strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0)
		return -ECONNRESET;
	if (strcmp(state, "57014") == 0)
		return -ETIMEDOUT;
	if (strcmp(state, "42501") == 0 || strncmp(state, "28", 2) == 0)
		return -EACCES;
	if (strcmp(state, "42P01") == 0 || strcmp(state, "3F000") == 0 ||
	    strcmp(state, "42883") == 0)
		return -EPROTO;
	if (strcmp(state, "53100") == 0)
		return -ENOSPC;
	if (strncmp(state, "53", 2) == 0)
		return -EAGAIN;
	if (strcmp(state, "25006") == 0)
		return -EROFS;
	return -EIO;
}

int central_fail(PGconn *c, const PGresult *res, const char *what, char *err, size_t errlen)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : NULL;
	char text[768];
	int r;

	if (!msg || !*msg)
		msg = c ? PQerrorMessage(c) : "no connection";
	snprintf(text, sizeof(text), "%s", msg);
	trim(text);
	if (c && PQstatus(c) == CONNECTION_BAD)
		r = -ECONNRESET;
	else
		r = errno_from_state(state);
	switch (r) {
	case -EPROTO:
		return fail(err, errlen, r, "%s failed: the central schema is missing or older "
			    "than this build (%s); run sfi-central migrate on the server", what,
			    text);
	case -ENOSPC:
		return fail(err, errlen, r, "%s failed: the central server is out of disk space "
			    "(%s)", what, text);
	case -ECONNRESET:
		return fail(err, errlen, r, "%s failed: the connection to the central server "
			    "broke (%s)", what, text);
	default:
		return fail(err, errlen, r, "%s failed: %s", what, text);
	}
}

/* The first line of a secret file: a regular file others may neither read nor write. */
static int read_secret(const char *path, char *out, size_t size, char *err, size_t errlen)
{
	size_t n;
	int r = sfi_secret_read_line(path, out, size, &n);

	if (r == -EPERM)
		return fail(err, errlen, r, "the central password file %s is not a regular "
			    "file, or others may read or write it (chmod 600)", path);
	if (r == -EINVAL)
		return fail(err, errlen, r, "the central password file %s is empty", path);
	if (r < 0)
		return fail(err, errlen, r, "cannot read the central password file %s: %s", path,
			    sfi_strerror(r));
	return 0;
}

int central_connect(const struct central_conn_options *o, PGconn **ret_conn, char *err,
		    size_t errlen)
{
	const char *keys[16], *values[16];
	char password[PASSWORD_MAX] = "", timeout[16], *perr = NULL, *path = NULL;
	PQconninfoOption *opts;
	PGconn *c;
	size_t k = 0;
	int r = 0;

	if (!o || !o->conninfo)
		return fail(err, errlen, -EINVAL, "no central conninfo is configured");
	opts = PQconninfoParse(o->conninfo, &perr);
	if (!opts) {
		r = fail(err, errlen, -EINVAL, "the central conninfo is not valid: %s",
			 perr ? perr : "out of memory");
		PQfreemem(perr);
		return r;
	}
	for (PQconninfoOption *p = opts; p->keyword; p++)
		if (strcmp(p->keyword, "password") == 0 && p->val && *p->val)
			r = fail(err, errlen, -EINVAL, "the central conninfo holds a password; "
				 "give it in a password file or a credential instead");
	PQconninfoFree(opts);
	if (r < 0)
		return r;

	if (o->password_credential) {
		const char *dir = getenv("CREDENTIALS_DIRECTORY");

		if (!dir || !*dir || strchr(o->password_credential, '/'))
			return fail(err, errlen, -ENOENT, "the central password credential %s is "
				    "not available (no $CREDENTIALS_DIRECTORY: LoadCredential= in "
				    "the unit?)", o->password_credential);
		if (asprintf(&path, "%s/%s", dir, o->password_credential) < 0)
			return fail(err, errlen, -ENOMEM, "out of memory");
	}
	if (path || o->password_file) {
		r = read_secret(path ? path : o->password_file, password, sizeof(password), err,
				errlen);
		free(path);
		if (r < 0)
			return r;
	}

	/* Ours first: what conninfo says overrides them; the password last. */
	snprintf(timeout, sizeof(timeout), "%u", o->connect_timeout_s ? o->connect_timeout_s : 10);
	keys[k] = "connect_timeout", values[k++] = timeout;
	/* A connection cut without a reset (a cable, a firewall) is noticed within about a
	 * minute, not the kernel's two hours. TCP only; conninfo may say otherwise. */
	keys[k] = "keepalives_idle", values[k++] = "20";
	keys[k] = "keepalives_interval", values[k++] = "10";
	keys[k] = "keepalives_count", values[k++] = "3";
	keys[k] = "tcp_user_timeout", values[k++] = "60000";
	keys[k] = "fallback_application_name";
	values[k++] = o->application_name ? o->application_name : "sfid";
	keys[k] = "dbname", values[k++] = o->conninfo;
	if (password[0])
		keys[k] = "password", values[k++] = password;
	keys[k] = NULL, values[k] = NULL;
	c = PQconnectdbParams(keys, values, 1);
	explicit_bzero(password, sizeof(password));
	if (!c)
		return fail(err, errlen, -ENOMEM, "out of memory connecting to the central server");
	if (PQstatus(c) != CONNECTION_OK) {
		char text[512];

		snprintf(text, sizeof(text), "%s", PQerrorMessage(c));
		trim(text);
		r = strstr(text, "authentication") || strstr(text, "password") ?
			    -EACCES : -ECONNREFUSED;
		PQfinish(c);
		return fail(err, errlen, r, "cannot connect to the central server: %s", text);
	}
	PQsetErrorVerbosity(c, PQERRORS_DEFAULT);
	*ret_conn = c;
	return 0;
}

/* Runs a command that returns no rows; returns 0 or the failure. */
static int exec_cmd(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
	PGresult *res = PQexec(c, sql);
	int r = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		r = central_fail(c, res, what, err, errlen);
	PQclear(res);
	return r;
}

static int query_int(PGconn *c, const char *sql, const char *what, int *ret, char *err,
		     size_t errlen)
{
	PGresult *res = PQexec(c, sql);
	int r = 0;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		r = central_fail(c, res, what, err, errlen);
	else
		*ret = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return r;
}

int central_schema_version(PGconn *c, int *ret_version, char *err, size_t errlen)
{
	return query_int(c, "SELECT CASE WHEN to_regclass('sfid_central.migrations') IS NULL "
			    "THEN 0 ELSE (SELECT coalesce(max(version), 0) FROM "
			    "sfid_central.migrations) END", "reading the central schema version",
			 ret_version, err, errlen);
}

int central_migrate(PGconn *c, int *ret_from, int *ret_to, char *err, size_t errlen)
{
	char what[64], sql[128];
	int v = 0, r;

	r = exec_cmd(c, "SET client_min_messages = warning; BEGIN;"
			"SELECT pg_advisory_xact_lock(hashtext('sfid_central.migrate'));"
			"CREATE SCHEMA IF NOT EXISTS sfid_central;"
			"CREATE TABLE IF NOT EXISTS sfid_central.migrations ("
			"  version integer PRIMARY KEY,"
			"  applied_at timestamptz NOT NULL DEFAULT now())",
		     "preparing the central schema", err, errlen);
	if (r == 0)
		r = query_int(c, "SELECT coalesce(max(version), 0) FROM sfid_central.migrations",
			      "reading the central schema version", &v, err, errlen);
	if (r == 0 && (v < 0 || (size_t)v > central_n_migrations))
		r = fail(err, errlen, -EPROTONOSUPPORT, "the central schema has version %d but "
			 "this build knows versions up to %zu; use a newer sfi-central", v,
			 central_n_migrations);
	if (ret_from)
		*ret_from = v;
	for (size_t i = (size_t)v; r == 0 && i < central_n_migrations; i++) {
		snprintf(what, sizeof(what), "central migration %zu", i + 1);
		r = exec_cmd(c, central_migrations[i], what, err, errlen);
		snprintf(sql, sizeof(sql), "INSERT INTO sfid_central.migrations (version) "
			 "VALUES (%zu)", i + 1);
		if (r == 0)
			r = exec_cmd(c, sql, what, err, errlen);
	}
	if (r == 0)
		r = exec_cmd(c, "COMMIT", "committing the central schema", err, errlen);
	else
		PQclear(PQexec(c, "ROLLBACK"));
	if (r == 0 && ret_to)
		*ret_to = (int)central_n_migrations;
	return r;
}

int central_head(PGconn *c, const char *station, uint64_t *ret_seq,
		 uint8_t ret_hash[CENTRAL_HASH_SIZE], char *err, size_t errlen)
{
	const char *params[1] = { station };
	PGresult *res;
	int r = 0;

	res = PQexecParams(c, "SELECT seq, hash FROM sfid_central.head($1)", 1, NULL, params,
			   NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		r = central_fail(c, res, "reading the station's head at the centre", err, errlen);
	} else {
		const char *hex = PQgetvalue(res, 0, 1);

		*ret_seq = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
		for (size_t i = 0; i < CENTRAL_HASH_SIZE; i++) {
			unsigned x = 0;

			if (strlen(hex) != 2 * CENTRAL_HASH_SIZE ||
			    sscanf(hex + 2 * i, "%2x", &x) != 1) {
				r = fail(err, errlen, -EBADMSG, "the centre sent a malformed head");
				break;
			}
			ret_hash[i] = (uint8_t)x;
		}
	}
	PQclear(res);
	return r;
}

int central_push(PGconn *c, const char *station, const char *const *lines, size_t n,
		 struct central_push_result *out, char *err, size_t errlen)
{
	const char **params;
	char *sql, *p;
	PGresult *res;
	int r = 0;

	memset(out, 0, sizeof(*out));
	if (n > 60000)
		return fail(err, errlen, -E2BIG, "a batch holds at most 60000 records");
	params = calloc(n + 1, sizeof(*params));
	/* "SELECT ... push($1, ARRAY[$2::text,$3,...])": at most 8 bytes per parameter. */
	sql = malloc(160 + 8 * n);
	if (!params || !sql) {
		free(params);
		free(sql);
		return fail(err, errlen, -ENOMEM, "out of memory pushing records");
	}
	params[0] = station;
	p = sql + sprintf(sql, "SELECT head, inserted, duplicates, refused FROM "
			       "sfid_central.push($1, %s", n ? "ARRAY[" : "'{}'::text[]");
	for (size_t i = 0; i < n; i++) {
		params[i + 1] = lines[i];
		p += sprintf(p, i ? ",$%zu" : "$%zu::text", i + 2);
	}
	strcpy(p, n ? "])" : ")");
	res = PQexecParams(c, sql, (int)n + 1, NULL, params, NULL, NULL, 0);
	free(sql);
	free(params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		r = central_fail(c, res, "pushing audit records to the centre", err, errlen);
	} else {
		out->head = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
		out->inserted = (unsigned)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
		out->duplicates = (unsigned)strtoul(PQgetvalue(res, 0, 2), NULL, 10);
		out->refused = !PQgetisnull(res, 0, 3);
		if (out->refused)
			snprintf(out->reason, sizeof(out->reason), "%s", PQgetvalue(res, 0, 3));
	}
	PQclear(res);
	return r;
}

int central_read_trail(PGconn *c, const char *station, central_line_fn fn, void *userdata,
		       char *err, size_t errlen)
{
	const char *params[1] = { station };
	PGresult *res;
	int r = 0, cb = 0;

	if (!PQsendQueryParams(c, "SELECT seq, line FROM sfid_central.records WHERE station = $1 "
			       "ORDER BY seq", 1, NULL, params, NULL, NULL, 0) ||
	    !PQsetSingleRowMode(c))
		return central_fail(c, NULL, "reading the station's trail at the centre", err,
				    errlen);
	while ((res = PQgetResult(c))) {
		ExecStatusType s = PQresultStatus(res);

		if (s == PGRES_SINGLE_TUPLE && r == 0 && cb == 0)
			cb = fn(userdata, strtoull(PQgetvalue(res, 0, 0), NULL, 10),
				PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
		else if (s != PGRES_SINGLE_TUPLE && s != PGRES_TUPLES_OK && r == 0)
			r = central_fail(c, res, "reading the station's trail at the centre", err,
					 errlen);
		PQclear(res);
	}
	return r < 0 ? r : cb;
}

/* sfi-audit verify --pg and report --pg: see audit-central.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "audit-central.h"
#include "audit-format.h"
#include "central.h"

static int connect_pg(const char *conninfo, const char *password_file, PGconn **ret, char *err,
		      size_t errlen)
{
	struct central_conn_options o = {
		.conninfo = conninfo,
		.password_file = password_file,
		.application_name = "sfi-audit",
	};

	return central_connect(&o, ret, err, errlen);
}

struct copy {
	FILE *f;
	uint64_t n;
};

static int copy_line(void *userdata, uint64_t seq, const char *line, size_t len)
{
	struct copy *c = userdata;

	c->n++;
	if (fwrite(line, 1, len, c->f) != len || fputc('\n', c->f) == EOF)
		return -EIO;
	return 0;
}

/* The metadata line an export of the whole trail would start with (format 2, no tokens:
 * the centre does not read them). */
static int write_meta(FILE *f, const char *station, uint64_t first, uint64_t last)
{
	struct json_object *o = json_object_new_object(), *r = json_object_new_object();
	char zero[2 * AUDIT_HASH_SIZE + 1], *text = NULL;
	size_t len = 0;
	int ret;

	if (!o || !r) {
		json_object_put(o);
		json_object_put(r);
		return -ENOMEM;
	}
	memset(zero, '0', 2 * AUDIT_HASH_SIZE);
	zero[2 * AUDIT_HASH_SIZE] = '\0';
	json_object_object_add(o, "anchor", json_object_new_string(zero));
	json_object_object_add(o, "created", json_object_new_int64((int64_t)time(NULL) * 1000));
	json_object_object_add(o, "export", json_object_new_string("sfid-audit"));
	json_object_object_add(o, "first_seq", json_object_new_int64((int64_t)first));
	json_object_object_add(o, "format", json_object_new_int(AUDIT_EXPORT_FORMAT));
	json_object_object_add(o, "last_seq", json_object_new_int64((int64_t)last));
	json_object_object_add(r, "from", json_object_new_int64(0));
	json_object_object_add(r, "job", json_object_new_int64(0));
	json_object_object_add(r, "to", json_object_new_int64(0));
	json_object_object_add(o, "range", r);
	json_object_object_add(o, "schema", json_object_new_int64(0));
	json_object_object_add(o, "station", json_object_new_string(station));
	json_object_object_add(o, "tokens", json_object_new_array());
	json_object_object_add(o, "version", json_object_new_string(""));
	ret = audit_canon_encode(o, &text, &len);
	json_object_put(o);
	if (ret < 0)
		return ret;
	if (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF)
		ret = -EIO;
	free(text);
	return ret;
}

int central_verify(const char *conninfo, const char *password_file, const char *station,
		   const struct verify_options *opts, struct verify_result *res, char *err,
		   size_t errlen)
{
	struct verify_options o = *opts;
	struct copy c = { 0 };
	const char *params[1] = { station };
	uint64_t first = 0, last = 0;
	PGconn *pg = NULL;
	PGresult *q;
	FILE *trail = NULL;
	int r;

	r = connect_pg(conninfo, password_file, &pg, err, errlen);
	if (r < 0)
		return r;
	/* One snapshot for the bounds and the records. */
	PQclear(PQexec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
	q = PQexecParams(pg, "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0), "
			 "EXISTS (SELECT 1 FROM sfid_central.stations WHERE name = $1) "
			 "FROM sfid_central.records WHERE station = $1", 1, NULL, params, NULL,
			 NULL, 0);
	if (PQresultStatus(q) != PGRES_TUPLES_OK || PQntuples(q) != 1) {
		r = central_fail(pg, q, "reading the station's trail at the centre", err, errlen);
	} else if (strcmp(PQgetvalue(q, 0, 2), "t") != 0) {
		snprintf(err, errlen, "the centre knows no station \"%s\"", station);
		r = -ENOENT;
	} else {
		first = strtoull(PQgetvalue(q, 0, 0), NULL, 10);
		last = strtoull(PQgetvalue(q, 0, 1), NULL, 10);
	}
	PQclear(q);
	/* The copy goes through a temporary file: memory stays bounded however long. */
	if (r == 0 && !(trail = tmpfile())) {
		snprintf(err, errlen, "cannot create a temporary file: %s", strerror(errno));
		r = -errno;
	}
	if (r == 0)
		r = write_meta(trail, station, first ? first : 0, last);
	if (r == 0) {
		c.f = trail;
		r = central_read_trail(pg, station, copy_line, &c, err, errlen);
		if (r > 0 || r == -EIO)
			snprintf(err, errlen, "cannot write the temporary copy of the trail");
		if (r > 0)
			r = -EIO;
	}
	PQclear(PQexec(pg, "COMMIT"));
	PQfinish(pg);
	if (r == 0 && (fflush(trail) != 0 || fseek(trail, 0, SEEK_SET) != 0)) {
		snprintf(err, errlen, "cannot read back the temporary copy of the trail");
		r = -EIO;
	}
	if (r == 0) {
		o.store_copy = true;
		r = audit_verify_streams(&trail, 1, &o, res);
		if (r < 0)
			snprintf(err, errlen, "cannot verify the trail: %s", strerror(-r));
	}
	if (trail)
		fclose(trail);
	return r;
}

/* Runs a query and returns its result, or NULL with err set. */
static PGresult *query(PGconn *pg, const char *sql, char *err, size_t errlen)
{
	PGresult *q = PQexec(pg, sql);

	if (PQresultStatus(q) != PGRES_TUPLES_OK) {
		central_fail(pg, q, "reading the central views", err, errlen);
		PQclear(q);
		return NULL;
	}
	return q;
}

int central_report(const char *conninfo, const char *password_file, FILE *out, bool json,
		   unsigned *ret_flagged, char *err, size_t errlen)
{
	static const char *const sql[] = {
		/* 0: stations */
		"SELECT h.station, h.head, coalesce(h.last_checkpoint, 0), "
		"  coalesce(to_char(h.last_received_at AT TIME ZONE 'UTC', "
		"    'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
		"  coalesce(y.ok, 0), coalesce(y.failed, 0), "
		"  (SELECT count(*) FROM sfid_central.chips c WHERE c.station = h.station) "
		"FROM sfid_central.station_heads h "
		"LEFT JOIN sfid_central.yield y ON y.station = h.station ORDER BY 1",
		/* 1: chips per station and day */
		"SELECT station, to_char(day, 'YYYY-MM-DD'), chips FROM sfid_central.chips_per_day "
		"ORDER BY 1, 2",
		/* 2: token counters */
		"SELECT station, token, counter FROM sfid_central.token_counters ORDER BY 1, 2",
		/* 3: UIDs at several stations */
		"SELECT chip_uid, array_to_string(stations, ', '), installs "
		"FROM sfid_central.chips_at_several_stations ORDER BY 1",
	};
	PGresult *q[4] = { 0 };
	struct json_object *root = NULL;
	PGconn *pg = NULL;
	int r;

	r = connect_pg(conninfo, password_file, &pg, err, errlen);
	if (r < 0)
		return r;
	PQclear(PQexec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
	for (size_t i = 0; i < 4; i++)
		if (!(q[i] = query(pg, sql[i], err, errlen))) {
			r = -EIO;
			goto out;
		}
	*ret_flagged = (unsigned)PQntuples(q[3]);

	if (json) {
		struct json_object *st = json_object_new_array(), *multi = json_object_new_array();

		root = json_object_new_object();
		for (int i = 0; i < PQntuples(q[0]); i++) {
			struct json_object *o = json_object_new_object();
			struct json_object *days = json_object_new_array();
			struct json_object *tokens = json_object_new_array();
			const char *name = PQgetvalue(q[0], i, 0);

			json_object_object_add(o, "station", json_object_new_string(name));
			json_object_object_add(o, "records", json_object_new_int64(
				strtoll(PQgetvalue(q[0], i, 1), NULL, 10)));
			json_object_object_add(o, "last_checkpoint", json_object_new_int64(
				strtoll(PQgetvalue(q[0], i, 2), NULL, 10)));
			json_object_object_add(o, "ok", json_object_new_int64(
				strtoll(PQgetvalue(q[0], i, 4), NULL, 10)));
			json_object_object_add(o, "failed", json_object_new_int64(
				strtoll(PQgetvalue(q[0], i, 5), NULL, 10)));
			json_object_object_add(o, "chips", json_object_new_int64(
				strtoll(PQgetvalue(q[0], i, 6), NULL, 10)));
			for (int k = 0; k < PQntuples(q[1]); k++) {
				struct json_object *d;

				if (strcmp(PQgetvalue(q[1], k, 0), name) != 0)
					continue;
				d = json_object_new_object();
				json_object_object_add(d, "day",
						       json_object_new_string(PQgetvalue(q[1], k, 1)));
				json_object_object_add(d, "chips", json_object_new_int64(
					strtoll(PQgetvalue(q[1], k, 2), NULL, 10)));
				json_object_array_add(days, d);
			}
			for (int k = 0; k < PQntuples(q[2]); k++) {
				struct json_object *t;

				if (strcmp(PQgetvalue(q[2], k, 0), name) != 0)
					continue;
				t = json_object_new_object();
				json_object_object_add(t, "serial",
						       json_object_new_string(PQgetvalue(q[2], k, 1)));
				json_object_object_add(t, "counter", json_object_new_int64(
					strtoll(PQgetvalue(q[2], k, 2), NULL, 10)));
				json_object_array_add(tokens, t);
			}
			json_object_object_add(o, "chips_per_day", days);
			json_object_object_add(o, "tokens", tokens);
			json_object_array_add(st, o);
		}
		for (int k = 0; k < PQntuples(q[3]); k++) {
			struct json_object *m = json_object_new_object();

			json_object_object_add(m, "chip_uid",
					       json_object_new_string(PQgetvalue(q[3], k, 0)));
			json_object_object_add(m, "stations",
					       json_object_new_string(PQgetvalue(q[3], k, 1)));
			json_object_object_add(m, "installs", json_object_new_int64(
				strtoll(PQgetvalue(q[3], k, 2), NULL, 10)));
			json_object_array_add(multi, m);
		}
		json_object_object_add(root, "stations", st);
		json_object_object_add(root, "chips_at_several_stations", multi);
		fprintf(out, "%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
								    JSON_C_TO_STRING_NOSLASHESCAPE));
		goto out;
	}

	for (int i = 0; i < PQntuples(q[0]); i++) {
		const char *name = PQgetvalue(q[0], i, 0);
		long long ok = strtoll(PQgetvalue(q[0], i, 4), NULL, 10);
		long long failed = strtoll(PQgetvalue(q[0], i, 5), NULL, 10);

		fprintf(out, "station %s: %s chips installed", name, PQgetvalue(q[0], i, 6));
		if (ok + failed > 0)
			fprintf(out, ", yield %.1f %% (%lld ok, %lld failed)",
				100.0 * (double)ok / (double)(ok + failed), ok, failed);
		fprintf(out, "; records 1..%s, last checkpoint %s%s%s\n", PQgetvalue(q[0], i, 1),
			PQgetvalue(q[0], i, 2), *PQgetvalue(q[0], i, 3) ? ", last received " : "",
			PQgetvalue(q[0], i, 3));
		for (int k = 0; k < PQntuples(q[1]); k++)
			if (strcmp(PQgetvalue(q[1], k, 0), name) == 0)
				fprintf(out, "  %s: %s chips\n", PQgetvalue(q[1], k, 1),
					PQgetvalue(q[1], k, 2));
		for (int k = 0; k < PQntuples(q[2]); k++)
			if (strcmp(PQgetvalue(q[2], k, 0), name) == 0)
				fprintf(out, "  token %s: counter %s\n", PQgetvalue(q[2], k, 1),
					PQgetvalue(q[2], k, 2));
	}
	if (PQntuples(q[3]) == 0) {
		fprintf(out, "no chip UID was installed at more than one station\n");
	} else {
		fprintf(out, "FLAGGED: %d chip UID(s) installed at more than one station\n",
			PQntuples(q[3]));
		for (int k = 0; k < PQntuples(q[3]); k++)
			fprintf(out, "  %s at %s (%s installs)\n", PQgetvalue(q[3], k, 0),
				PQgetvalue(q[3], k, 1), PQgetvalue(q[3], k, 2));
	}
out:
	json_object_put(root);
	for (size_t i = 0; i < 4; i++)
		PQclear(q[i]);
	PQclear(PQexec(pg, "COMMIT"));
	PQfinish(pg);
	return r;
}

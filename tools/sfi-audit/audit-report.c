/* Summary of an export: chips programmed, failures by cause, licenses spent and installed,
 * per slot and per job. Counts only; `verify` is what checks the trail. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "audit-verify.h"
#include "export-reader.h"

struct report {
	struct json_object *root, *attempts, *licenses, *chips_ok, *chips_seen;
	struct json_object *causes, *slots, *jobs, *lic_totals, *att_totals;
};

static struct json_object *child(struct json_object *parent, const char *key)
{
	struct json_object *o;

	if (json_object_object_get_ex(parent, key, &o))
		return o;
	o = json_object_new_object();
	json_object_object_add(parent, key, o);
	return o;
}

static void bump(struct json_object *o, const char *key, int64_t by)
{
	struct json_object *x;

	if (!o)
		return;
	if (json_object_object_get_ex(o, key, &x))
		json_object_set_int64(x, json_object_get_int64(x) + by);
	else
		json_object_object_add(o, key, json_object_new_int64(by));
}

static const char *str(struct json_object *o, const char *key)
{
	struct json_object *x;

	if (!json_object_object_get_ex(o, key, &x) || !json_object_is_type(x, json_type_string))
		return NULL;
	return json_object_get_string(x);
}

static int64_t num(struct json_object *o, const char *key)
{
	struct json_object *x;

	if (!json_object_object_get_ex(o, key, &x) || !json_object_is_type(x, json_type_int))
		return 0;
	return json_object_get_int64(x);
}

static void key_of(char *buf, size_t len, int64_t id)
{
	snprintf(buf, len, "%" PRId64, id);
}

static struct json_object *job_of(struct report *rp, int64_t job)
{
	char k[32];

	key_of(k, sizeof(k), job);
	return child(rp->jobs, k);
}

static void add_record(struct report *rp, const char *type, struct json_object *d)
{
	struct json_object *a, *l, *slot;
	char k[32];
	const char *s;

	if (strcmp(type, "job.create") == 0) {
		struct json_object *j = job_of(rp, num(d, "job"));

		s = str(d, "image_id");
		json_object_object_add(j, "image_id", json_object_new_string(s ? s : ""));
		json_object_object_add(j, "target_count",
				       json_object_new_int64(num(d, "target_count")));
	} else if (strcmp(type, "attempt.begin") == 0) {
		key_of(k, sizeof(k), num(d, "attempt"));
		a = child(rp->attempts, k);
		s = str(d, "slot");
		json_object_object_add(a, "slot", json_object_new_string(s ? s : "?"));
		json_object_object_add(a, "job", json_object_new_int64(num(d, "job")));
		bump(rp->att_totals, "total", 1);
		bump(child(rp->slots, s ? s : "?"), "attempts", 1);
		bump(job_of(rp, num(d, "job")), "attempts", 1);
	} else if (strcmp(type, "attempt.step") == 0 && (s = str(d, "chip_uid"))) {
		key_of(k, sizeof(k), num(d, "attempt"));
		json_object_object_add(child(rp->attempts, k), "chip", json_object_new_string(s));
		json_object_object_add(rp->chips_seen, s, NULL);
	} else if (strcmp(type, "attempt.end") == 0) {
		bool ok = (s = str(d, "result")) && strcmp(s, "ok") == 0;
		const char *what = ok ? "ok" : "failed";

		key_of(k, sizeof(k), num(d, "attempt"));
		a = child(rp->attempts, k);
		bump(rp->att_totals, what, 1);
		bump(child(rp->slots, str(a, "slot") ? str(a, "slot") : "?"), what, 1);
		bump(job_of(rp, num(a, "job")), what, 1);
		if (ok && str(a, "chip"))
			json_object_object_add(rp->chips_ok, str(a, "chip"), NULL);
		if (!ok) {
			char cause[320];

			snprintf(cause, sizeof(cause), "%" PRId64 ": %s", num(d, "error_code"),
				 str(d, "error_text") ? str(d, "error_text") : "(no text)");
			bump(rp->causes, cause, 1);
		}
	} else if (strcmp(type, "license.reserve") == 0) {
		key_of(k, sizeof(k), num(d, "license"));
		l = child(rp->licenses, k);
		json_object_object_add(l, "job", json_object_new_int64(num(d, "job")));
		key_of(k, sizeof(k), num(d, "attempt"));
		if (json_object_object_get_ex(rp->attempts, k, &a) && str(a, "slot"))
			json_object_object_add(l, "slot", json_object_new_string(str(a, "slot")));
	} else if (strncmp(type, "license.", 8) == 0) {
		const char *what = type + 8;

		key_of(k, sizeof(k), num(d, "license"));
		l = child(rp->licenses, k);
		if (strcmp(what, "issue") == 0 || strcmp(what, "unconfirmed") == 0)
			what = "spent";
		bump(rp->lic_totals, what, 1);
		if (strcmp(type, "license.unconfirmed") == 0)
			bump(rp->lic_totals, "unconfirmed", 1);
		if (strcmp(what, "spent") == 0 || strcmp(what, "installed") == 0) {
			char field[32];

			snprintf(field, sizeof(field), "licenses_%s", what);
			slot = str(l, "slot") ? child(rp->slots, str(l, "slot")) : NULL;
			bump(slot, field, 1);
			if (json_object_object_get_ex(l, "job", NULL))
				bump(job_of(rp, num(l, "job")), field, 1);
		}
	}
}

static void print_counts(FILE *out, const char *title, struct json_object *o)
{
	fprintf(out, "%s\n", title);
	if (json_object_object_length(o) == 0)
		fprintf(out, "  (none)\n");
	json_object_object_foreach(o, key, val) {
		fprintf(out, "  %-24s", key);
		if (json_object_is_type(val, json_type_object)) {
			json_object_object_foreach(val, k2, v2)
				fprintf(out, " %s=%s", k2, json_object_get_string(v2));
		} else {
			fprintf(out, " %s", json_object_get_string(val));
		}
		fputc('\n', out);
	}
}

int audit_report_stream(FILE *in, FILE *out, bool json, char *errbuf, size_t errlen)
{
	struct export_reader rd = { .in = in };
	struct report rp = { 0 };
	uint64_t records = 0;
	bool meta = false;
	int r;

	rp.root = json_object_new_object();
	if (!rp.root)
		return -ENOMEM;
	rp.attempts = json_object_new_object();
	rp.licenses = json_object_new_object();
	rp.chips_ok = json_object_new_object();
	rp.chips_seen = json_object_new_object();
	rp.att_totals = child(rp.root, "attempts");
	rp.lic_totals = child(rp.root, "licenses");
	rp.causes = child(rp.root, "failures_by_cause");
	rp.slots = child(rp.root, "per_slot");
	rp.jobs = child(rp.root, "per_job");
	bump(rp.att_totals, "total", 0);
	bump(rp.att_totals, "ok", 0);
	bump(rp.att_totals, "failed", 0);
	bump(rp.lic_totals, "spent", 0);
	bump(rp.lic_totals, "installed", 0);
	bump(rp.lic_totals, "not_installed", 0);

	for (;;) {
		struct audit_line l = { 0 };

		r = export_reader_next(&rd, &l, errbuf, errlen);
		if (r <= 0)
			break;
		if (l.kind == AUDIT_LINE_META) {
			meta = true;
		} else if (meta && l.kind == AUDIT_LINE_RECORD) {
			struct json_object *d = NULL;

			json_object_object_get_ex(l.content, "data", &d);
			add_record(&rp, l.type, d);
			records++;
		}
		audit_line_clear(&l);
	}
	if (r == -EINVAL) {
		char tmp[256];

		snprintf(tmp, sizeof(tmp), "line %zu: %s", rd.line_no, errbuf);
		snprintf(errbuf, errlen, "%s", tmp);
	} else if (r == 0 && !meta) {
		snprintf(errbuf, errlen, "not an sfid audit export (no metadata line)");
		r = -EINVAL;
	}
	if (r == 0) {
		json_object_object_add(rp.root, "records", json_object_new_int64((int64_t)records));
		json_object_object_add(rp.root, "chips_seen",
				       json_object_new_int(json_object_object_length(rp.chips_seen)));
		json_object_object_add(rp.root, "chips_programmed",
				       json_object_new_int(json_object_object_length(rp.chips_ok)));
		if (json) {
			fprintf(out, "%s\n", json_object_to_json_string_ext(rp.root,
				JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
		} else {
			fprintf(out, "records            %" PRIu64 "\n", records);
			fprintf(out, "chips seen         %d\n", json_object_object_length(rp.chips_seen));
			fprintf(out, "chips programmed   %d\n", json_object_object_length(rp.chips_ok));
			print_counts(out, "attempts", rp.att_totals);
			print_counts(out, "licenses", rp.lic_totals);
			print_counts(out, "failures by cause", rp.causes);
			print_counts(out, "per slot", rp.slots);
			print_counts(out, "per job", rp.jobs);
		}
		if (fflush(out) != 0)
			r = -errno;
	}
	export_reader_free(&rd);
	json_object_put(rp.root);
	json_object_put(rp.attempts);
	json_object_put(rp.licenses);
	json_object_put(rp.chips_ok);
	json_object_put(rp.chips_seen);
	return r;
}

/* Summary of an export: chips programmed, failures by cause, licenses spent and installed,
 * per slot and per job. Counts only; `verify` is what checks the trail. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "audit-verify.h"
#include "export-reader.h"

struct bucket {
	int64_t start_ms; /* attempt ends in [start_ms, start_ms + width) */
	uint64_t ok, failed;
};

struct report {
	struct json_object *root, *attempts, *licenses, *chips_ok, *chips_seen;
	struct json_object *causes, *slots, *jobs, *lic_totals, *att_totals;
	/* attempt ends: (time, ok) in record order, for the chips-per-hour chart */
	struct { int64_t ms; bool ok; } *ends;
	size_t n_ends, ends_cap;
	struct audit_line meta; /* the export's metadata line */
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

static void add_end(struct report *rp, int64_t ms, bool ok)
{
	if (rp->n_ends == rp->ends_cap) {
		size_t cap = rp->ends_cap ? rp->ends_cap * 2 : 256;
		void *p = realloc(rp->ends, cap * sizeof(*rp->ends));

		if (!p)
			return;
		rp->ends = p;
		rp->ends_cap = cap;
	}
	rp->ends[rp->n_ends].ms = ms;
	rp->ends[rp->n_ends].ok = ok;
	rp->n_ends++;
}

static void add_record(struct report *rp, const char *type, int64_t time_ms,
		       struct json_object *d)
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
		/* A plain job wrote firmware with the bootloader's commands: nothing protected. */
		s = str(d, "kind");
		json_object_object_add(j, "kind", json_object_new_string(
					       s && strcmp(s, "plain") == 0 ? "plain-not-secure" :
					       s && strcmp(s, "vendor") == 0 ? "vendor-st-sfi" :
					       "osfi"));
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
		add_end(rp, time_ms, ok);
		bump(rp->att_totals, what, 1);
		bump(child(rp->slots, str(a, "slot") ? str(a, "slot") : "?"), what, 1);
		bump(job_of(rp, num(a, "job")), what, 1);
		if ((s = str(d, "kind")) && strcmp(s, "plain") == 0)
			bump(rp->att_totals, ok ? "plain_ok" : "plain_failed", 1);
		else if (s && strcmp(s, "vendor") == 0)
			bump(rp->att_totals, ok ? "vendor_ok" : "vendor_failed", 1);
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

/* ---- HTML ---- */

static void html_text(FILE *out, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '<':
			fputs("&lt;", out);
			break;
		case '>':
			fputs("&gt;", out);
			break;
		case '&':
			fputs("&amp;", out);
			break;
		case '"':
			fputs("&quot;", out);
			break;
		case '\'':
			fputs("&#39;", out);
			break;
		default:
			fputc(*s, out);
		}
	}
}

enum time_style {
	TIME_HM,   /* 14:05 */
	TIME_DAY,  /* 2026-12-06 */
	TIME_FULL, /* 2026-12-06 14:05:09 UTC */
};

static void html_time(FILE *out, int64_t ms, enum time_style style)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm))
		return;
	switch (style) {
	case TIME_HM:
		fprintf(out, "%02d:%02d", tm.tm_hour, tm.tm_min);
		break;
	case TIME_DAY:
		fprintf(out, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
		break;
	case TIME_FULL:
		fprintf(out, "%04d-%02d-%02d %02d:%02d:%02d UTC", tm.tm_year + 1900, tm.tm_mon + 1,
			tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
		break;
	}
}

static const char *const verdict_class[_VERIFY_STATUS_MAX] = {
	[VERIFY_OK] = "ok",
	[VERIFY_BAD] = "bad",
	[VERIFY_MISMATCH] = "bad",
	[VERIFY_INCOMPLETE] = "warn",
	[VERIFY_UNVERIFIABLE] = "unknown",
};

static const char *const verdict_word[_VERIFY_STATUS_MAX] = {
	[VERIFY_OK] = "VERIFIED",
	[VERIFY_BAD] = "TAMPERED",
	[VERIFY_MISMATCH] = "COUNTER MISMATCH",
	[VERIFY_INCOMPLETE] = "VERIFIED, INCOMPLETE",
	[VERIFY_UNVERIFIABLE] = "NOT VERIFIABLE",
};

static void html_verdict(FILE *out, const struct verify_result *v)
{
	const char *cls = v && v->status < _VERIFY_STATUS_MAX ? verdict_class[v->status] :
								 "unknown";

	fprintf(out, "<section id=\"verdict\" class=\"verdict %s\">\n<h2>Verification</h2>\n"
		     "<p class=\"word\" id=\"verdict-text\">", cls);
	if (!v) {
		fputs("NOT VERIFIED</p>\n<p>No audit public key was given: run "
		      "<code>sfi-audit report --html --pubkey AUDIT.pem</code>.</p>\n</section>\n",
		      out);
		return;
	}
	fputs(v->status < _VERIFY_STATUS_MAX ? verdict_word[v->status] : "?", out);
	fputs("</p>\n<p id=\"verdict-detail\">", out);
	switch (v->status) {
	case VERIFY_OK:
		fprintf(out, "Records %" PRIu64 "&ndash;%" PRIu64 " (%" PRIu64 " records, %" PRIu64
			     " signed checkpoints, %zu signed end) link, hash and sign correctly; "
			     "every counter agrees.", v->first_seq, v->last_seq, v->records,
			v->checkpoints, v->signed_ends);
		break;
	case VERIFY_BAD:
	case VERIFY_MISMATCH:
		html_text(out, v->where);
		fputs(": ", out);
		html_text(out, v->message);
		break;
	case VERIFY_INCOMPLETE:
		for (size_t i = 0; i < v->n_warnings; i++) {
			html_text(out, v->warnings[i]);
			fputs(i + 1 < v->n_warnings ? "<br>" : "", out);
		}
		break;
	case VERIFY_UNVERIFIABLE:
		html_text(out, v->unverifiable);
		break;
	case _VERIFY_STATUS_MAX:
		break;
	}
	fputs("</p>\n</section>\n", out);
}

/* Chips per hour over the job: attempt ends counted in buckets (the width adapts to the
 * span, from one minute to one hour) and drawn as a rate, ok stacked on failed. */
static void html_rate_chart(FILE *out, const struct report *rp)
{
	static const int64_t widths[] = { 60000, 300000, 900000, 3600000 };
	const int W = 720, H = 220, L = 48, B = 36, T = 12;
	struct bucket *b = NULL;
	int64_t first, last, width = widths[3];
	size_t n = 0;
	double max = 0, scale;

	fputs("<section><h2>Chips per hour</h2>\n", out);
	if (rp->n_ends == 0) {
		fputs("<p>No attempt ended in this export.</p></section>\n", out);
		return;
	}
	first = last = rp->ends[0].ms;
	for (size_t i = 0; i < rp->n_ends; i++) {
		first = rp->ends[i].ms < first ? rp->ends[i].ms : first;
		last = rp->ends[i].ms > last ? rp->ends[i].ms : last;
	}
	for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++)
		if ((last - first) / widths[i] < 48) {
			width = widths[i];
			break;
		}
	first -= first % width;
	n = (size_t)((last - first) / width) + 1;
	if (n > 2000)
		n = 2000;
	b = calloc(n, sizeof(*b));
	if (!b) {
		fputs("</section>\n", out);
		return;
	}
	for (size_t i = 0; i < n; i++)
		b[i].start_ms = first + (int64_t)i * width;
	for (size_t i = 0; i < rp->n_ends; i++) {
		size_t k = (size_t)((rp->ends[i].ms - first) / width);

		if (k >= n)
			continue;
		if (rp->ends[i].ok)
			b[k].ok++;
		else
			b[k].failed++;
	}
	scale = 3600000.0 / (double)width;
	for (size_t i = 0; i < n; i++)
		if ((double)(b[i].ok + b[i].failed) * scale > max)
			max = (double)(b[i].ok + b[i].failed) * scale;
	if (max < 1)
		max = 1;
	fprintf(out, "<svg id=\"chart-rate\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
		     "role=\"img\" aria-label=\"chips per hour\">\n", W, H, W, H);
	fprintf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>\n", L,
		H - B, W - 8, H - B);
	fprintf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>\n", L, T,
		L, H - B);
	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"lbl\" text-anchor=\"end\">%.0f</text>\n",
		L - 4, T + 10, max);
	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"lbl\" text-anchor=\"end\">0</text>\n",
		L - 4, H - B);
	for (size_t i = 0; i < n; i++) {
		double bw = (double)(W - L - 16) / (double)n > 48 ? 48 : (double)(W - L - 16) / (double)n;
		double x = L + 4 + (double)i * bw, hh = (double)(H - B - T);
		double hok = (double)b[i].ok * scale / max * hh;
		double hf = (double)b[i].failed * scale / max * hh;

		fprintf(out, "<g><title>%" PRIu64 " ok, %" PRIu64 " failed</title>"
			     "<rect class=\"ok\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
			     "height=\"%.1f\"/><rect class=\"failed\" x=\"%.1f\" y=\"%.1f\" "
			     "width=\"%.1f\" height=\"%.1f\"/></g>\n",
			b[i].ok, b[i].failed, x, H - B - hok, bw * 0.8, hok, x, H - B - hok - hf,
			bw * 0.8, hf);
		if (i == 0 || i + 1 == n || (n > 6 && i % (n / 6) == 0)) {
			fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"lbl\"%s>",
				i + 1 == n && n > 1 ? x + bw * 0.8 : x, H - B + 16,
				i + 1 == n && n > 1 ? " text-anchor=\"end\"" : "");
			html_time(out, b[i].start_ms, TIME_HM);
			fputs("</text>\n", out);
		}
	}
	fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"lbl\">UTC, ", L, H - 4);
	html_time(out, first, TIME_DAY);
	fprintf(out, "; one bar per %" PRId64 " min, as chips per hour; green ok, red failed"
		     "</text>\n</svg>\n</section>\n", width / 60000);
	free(b);
}

/* Horizontal bars: one row per key of o with value(o[key]) out of total(o[key]). */
static void html_bars(FILE *out, const char *id, const char *title, struct json_object *o,
		      bool yield)
{
	const int W = 720, row = 26, L = 260;
	int n = json_object_object_length(o), i = 0;
	int64_t max = 1;

	fprintf(out, "<section><h2>%s</h2>\n", title);
	if (n == 0) {
		fputs("<p>None.</p></section>\n", out);
		return;
	}
	json_object_object_foreach(o, k0, v0) {
		int64_t x = yield ? num(v0, "ok") + num(v0, "failed") : json_object_get_int64(v0);

		(void)k0;
		max = x > max ? x : max;
	}
	fprintf(out, "<svg id=\"%s\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
		     "role=\"img\" aria-label=\"%s\">\n", id, W, n * row + 8, W, n * row + 8, title);
	json_object_object_foreach(o, key, val) {
		int y = 4 + i * row;

		fprintf(out, "<text x=\"%d\" y=\"%d\" class=\"lbl\" text-anchor=\"end\">", L - 8,
			y + 16);
		html_text(out, key);
		fputs("</text>\n", out);
		if (yield) {
			int64_t ok = num(val, "ok"), failed = num(val, "failed"), all = ok + failed;
			double w = (double)(W - L - 120);

			fprintf(out, "<rect class=\"track\" x=\"%d\" y=\"%d\" width=\"%.1f\" "
				     "height=\"18\"/>", L, y + 2, w);
			if (all)
				fprintf(out, "<rect class=\"ok\" x=\"%d\" y=\"%d\" width=\"%.1f\" "
					     "height=\"18\"/>", L, y + 2, w * (double)ok / (double)all);
			fprintf(out, "<text x=\"%.1f\" y=\"%d\" class=\"lbl\" data-slot=\"", L + w + 8,
				y + 16);
			html_text(out, key);
			fprintf(out, "\">%.1f%% (%" PRId64 "/%" PRId64 ")</text>\n",
				all ? 100.0 * (double)ok / (double)all : 0.0, ok, all);
		} else {
			int64_t c = json_object_get_int64(val);
			double w = (double)(W - L - 60) * (double)c / (double)max;

			fprintf(out, "<rect class=\"failed\" x=\"%d\" y=\"%d\" width=\"%.1f\" "
				     "height=\"18\"/><text x=\"%.1f\" y=\"%d\" class=\"lbl\">%"
				     PRId64 "</text>\n", L, y + 2, w, L + w + 6, y + 16, c);
		}
		i++;
	}
	fputs("</svg>\n</section>\n", out);
}

static void html_counters(FILE *out, const struct verify_result *v)
{
	fputs("<section><h2>Counter arithmetic</h2>\n", out);
	if (!v || v->n_tokens == 0) {
		fputs("<p>No token counter in the trail.</p></section>\n", out);
		return;
	}
	fputs("<table id=\"counters\"><tr><th>token</th><th>at the start</th><th>spends proved"
	      "</th><th>spent outside sfid</th><th>added</th><th>at the end</th>"
	      "<th>token read at export</th></tr>\n", out);
	for (size_t i = 0; i < v->n_tokens; i++) {
		const struct verify_token *t = &v->tokens[i];
		bool agrees = t->export_counter < 0 || (t->known &&
							(uint64_t)t->export_counter == t->counter);

		fputs("<tr><td>", out);
		html_text(out, t->serial);
		if (!t->known) {
			fputs("</td><td colspan=\"6\">no counter in the trail</td></tr>\n", out);
			continue;
		}
		fprintf(out, "</td><td>%" PRIu64 "</td><td>&minus; %" PRIu64 "</td><td>&minus; %" PRIu64
			     "</td><td>+ %" PRIu64 "</td><td class=\"end\">= %" PRIu64 "</td>",
			t->has_start ? t->start : t->counter, t->spends, t->unaccounted, t->added,
			t->counter);
		if (t->export_counter >= 0)
			fprintf(out, "<td class=\"%s\">%" PRId64 "</td></tr>\n", agrees ? "ok" : "bad",
				t->export_counter);
		else
			fputs("<td>unknown</td></tr>\n", out);
	}
	fputs("</table>\n", out);
	if (v->n_notes) {
		fputs("<h3>Counter changes sfid did not make</h3>\n<ul id=\"changes\">\n", out);
		for (size_t i = 0; i < v->n_notes; i++) {
			fputs("<li>", out);
			html_text(out, v->notes[i]);
			fputs("</li>\n", out);
		}
		fputs("</ul>\n", out);
	}
	if (v->n_key_changes) {
		fputs("<h3>Audit key changes</h3>\n<ul id=\"key-changes\">\n", out);
		for (size_t i = 0; i < v->n_key_changes; i++) {
			fputs("<li>", out);
			html_text(out, v->key_changes[i]);
			fputs("</li>\n", out);
		}
		fputs("</ul>\n", out);
	}
	fputs("</section>\n", out);
}

static void html_total(FILE *out, const char *id, const char *label, int64_t value)
{
	fprintf(out, "<div class=\"total\"><span class=\"n\" id=\"%s\">%" PRId64 "</span>"
		     "<span class=\"t\">%s</span></div>\n", id, value, label);
}

static void html_report(FILE *out, const struct report *rp, const struct verify_result *v,
			uint64_t records)
{
	const struct audit_line *m = &rp->meta;

	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	      "<title>sfid audit report</title>\n<style>\n"
	      "body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:780px}\n"
	      "h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 8px}\n"
	      ".meta{color:#555}.verdict{border-radius:6px;padding:8px 16px;color:#fff}\n"
	      ".verdict h2{margin:4px 0}.verdict .word{font-size:26px;font-weight:bold;margin:4px 0}\n"
	      ".verdict.ok{background:#1b7f3b}.verdict.warn{background:#b26b00}\n"
	      ".verdict.bad{background:#b3261e}.verdict.unknown{background:#555}\n"
	      ".totals{display:flex;flex-wrap:wrap;gap:8px;margin-top:12px}\n"
	      ".total{border:1px solid #ccc;border-radius:6px;padding:6px 12px;min-width:110px}\n"
	      ".total .n{display:block;font-size:22px;font-weight:bold}.total .t{color:#555}\n"
	      "svg .ok{fill:#2e9d55}svg .failed{fill:#d0473e}svg .track{fill:#eee}\n"
	      "svg .axis{stroke:#888}svg .lbl{font:12px sans-serif;fill:#333}\n"
	      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
	      "text-align:right}td:first-child{text-align:left;font-family:monospace}\n"
	      "td.ok{color:#1b7f3b;font-weight:bold}td.bad{color:#b3261e;font-weight:bold}"
	      "td.end{font-weight:bold}\n</style></head><body>\n", out);
	fputs("<h1>Audit report: station <span id=\"station\">", out);
	html_text(out, m->station && m->station[0] ? m->station : "(unnamed)");
	fputs("</span></h1>\n<p class=\"meta\">", out);
	if (m->version && m->version[0]) {
		fputs("sfid ", out);
		html_text(out, m->version);
		fputs(" &middot; ", out);
	}
	fprintf(out, "export format %d &middot; records %" PRIu64 "&ndash;%" PRIu64 " (%" PRIu64
		     ") &middot; written ", m->format, m->first_seq, m->last_seq, records);
	html_time(out, m->created_ms, TIME_FULL);
	if (m->range_job)
		fprintf(out, " &middot; job %" PRId64, m->range_job);
	fputs("</p>\n", out);
	html_verdict(out, v);
	fputs("<div class=\"totals\">\n", out);
	html_total(out, "total-programmed", "chips programmed",
		   json_object_object_length(rp->chips_ok));
	html_total(out, "total-attempts", "attempts", num(rp->att_totals, "total"));
	html_total(out, "total-ok", "attempts ok", num(rp->att_totals, "ok"));
	html_total(out, "total-failed", "attempts failed", num(rp->att_totals, "failed"));
	html_total(out, "total-spent", "licenses spent", num(rp->lic_totals, "spent"));
	html_total(out, "total-installed", "licenses installed", num(rp->lic_totals, "installed"));
	html_total(out, "total-not-installed", "licenses not installed",
		   num(rp->lic_totals, "not_installed"));
	fputs("</div>\n", out);
	html_rate_chart(out, rp);
	html_bars(out, "chart-yield", "Yield per slot", rp->slots, true);
	html_bars(out, "chart-causes", "Failures by cause", rp->causes, false);
	html_counters(out, v);
	fputs("<p class=\"meta\">Written by sfi-audit from the export alone; the verdict is "
	      "that of <code>sfi-audit verify</code> with the same keys.</p>\n</body></html>\n",
	      out);
}

int audit_report_stream(FILE *in, FILE *out, enum report_format format,
			const struct verify_result *verdict, char *reason, size_t reason_size)
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

		r = export_reader_next(&rd, &l, reason, reason_size);
		if (r <= 0)
			break;
		if (l.kind == AUDIT_LINE_META && !meta) {
			meta = true;
			rp.meta = l;
			continue;
		} else if (meta && l.kind == AUDIT_LINE_RECORD) {
			struct json_object *d = NULL;

			json_object_object_get_ex(l.content, "data", &d);
			add_record(&rp, l.type, l.time_ms, d);
			records++;
		}
		audit_line_clear(&l);
	}
	if (r == -EINVAL) {
		char tmp[256];

		snprintf(tmp, sizeof(tmp), "line %zu: %s", rd.line_no, reason);
		snprintf(reason, reason_size, "%s", tmp);
	} else if (r == 0 && !meta) {
		snprintf(reason, reason_size, "not an sfid audit export (no metadata line)");
		r = -EINVAL;
	}
	if (r == 0) {
		json_object_object_add(rp.root, "records", json_object_new_int64((int64_t)records));
		json_object_object_add(rp.root, "chips_seen",
				       json_object_new_int(json_object_object_length(rp.chips_seen)));
		json_object_object_add(rp.root, "chips_programmed",
				       json_object_new_int(json_object_object_length(rp.chips_ok)));
		if (format == REPORT_HTML) {
			html_report(out, &rp, verdict, records);
		} else if (format == REPORT_JSON) {
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
	audit_line_clear(&rp.meta);
	free(rp.ends);
	json_object_put(rp.root);
	json_object_put(rp.attempts);
	json_object_put(rp.licenses);
	json_object_put(rp.chips_ok);
	json_object_put(rp.chips_seen);
	return r;
}

/* The tamper suite: a real audit database (SQLite file, checkpoints signed with a P-256
 * key), its format 2 export, and every way a dishonest line could change that export. Each
 * case runs the real sfi-audit binary and checks its documented exit code and that it names
 * the first bad record (or line).
 *
 *   audit-tamper SFI-AUDIT DIR
 *
 * Exit codes of sfi-audit verify: 0 verified, 1 tampered or counter mismatch, 3 verified
 * but incomplete (reason named), 4 not verifiable. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "audit-format.h"
#include "db.h"
#include "test-signer.h"

#define TOKEN "TAMPERTOKEN01"
#define IMAGE_ID "abababababababababababababababababababababababababababababababab"
#define DIGEST "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"

static const char *audit_exe, *dir;
static char pub[4096], other_pub[4096];
static unsigned cases, failures;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "audit-tamper: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define CHECK(x) do { if (!(x)) die("%s:%d: %s", __FILE__, __LINE__, #x); } while (0)

/* ---- an export as lines ---- */

struct lines {
	char **v;
	size_t n;
};

static void lines_split(const char *text, struct lines *ls)
{
	const char *p = text;

	ls->v = NULL;
	ls->n = 0;
	while (*p) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		ls->v = realloc(ls->v, (ls->n + 1) * sizeof(char *));
		CHECK(ls->v);
		ls->v[ls->n++] = strndup(p, len);
		p += len + (e ? 1 : 0);
	}
}

static void lines_free(struct lines *ls)
{
	for (size_t i = 0; i < ls->n; i++)
		free(ls->v[i]);
	free(ls->v);
}

static void lines_delete(struct lines *ls, size_t i)
{
	free(ls->v[i]);
	memmove(&ls->v[i], &ls->v[i + 1], (ls->n - i - 1) * sizeof(char *));
	ls->n--;
}

static void lines_insert(struct lines *ls, size_t at, const char *line)
{
	ls->v = realloc(ls->v, (ls->n + 1) * sizeof(char *));
	CHECK(ls->v);
	memmove(&ls->v[at + 1], &ls->v[at], (ls->n - at) * sizeof(char *));
	ls->v[at] = strdup(line);
	ls->n++;
}

static char *lines_join(const struct lines *ls)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	for (size_t i = 0; i < ls->n; i++)
		fprintf(m, "%s\n", ls->v[i]);
	fclose(m);
	return buf;
}

static struct json_object *parse(const char *line)
{
	struct json_object *o = json_tokener_parse(line);

	CHECK(o);
	return o;
}

/* Sets the line to the canonical encoding of o (consumed). */
static void set_line(char **line, struct json_object *o)
{
	char *text;
	size_t len;

	CHECK(audit_canon_encode(o, &text, &len) == 0);
	json_object_put(o);
	free(*line);
	*line = text;
}

static bool is_record(const char *line)
{
	return strncmp(line, "{\"content\":", 11) == 0;
}

static bool is_end(const char *line)
{
	return strncmp(line, "{\"end\":", 7) == 0;
}

static int64_t get_int(struct json_object *o, const char *key)
{
	struct json_object *v;

	CHECK(json_object_object_get_ex(o, key, &v));
	return json_object_get_int64(v);
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	CHECK(json_object_object_get_ex(o, key, &v));
	return json_object_get_string(v);
}

static uint64_t seq_of(const char *line)
{
	struct json_object *o = parse(line);
	uint64_t seq = (uint64_t)get_int(o, "seq");

	json_object_put(o);
	return seq;
}

static const char *type_is(const char *line, const char *type)
{
	char key[80];

	snprintf(key, sizeof(key), "\"type\":\"%s\"}", type);
	return is_record(line) ? strstr(line, key) : NULL;
}

/* Index of the line of record seq. */
static size_t line_of(const struct lines *ls, uint64_t seq)
{
	for (size_t i = 1; i < ls->n; i++)
		if (is_record(ls->v[i]) && seq_of(ls->v[i]) == seq)
			return i;
	die("no record %" PRIu64, seq);
}

/* The first record of type after seq `after`, or of type with text in it. */
static uint64_t find(const struct lines *ls, const char *type, uint64_t after, const char *text)
{
	for (size_t i = 1; i < ls->n; i++)
		if (type_is(ls->v[i], type) && seq_of(ls->v[i]) > after &&
		    (!text || strstr(ls->v[i], text)))
			return seq_of(ls->v[i]);
	die("no %s record after %" PRIu64, type, after);
}

static uint64_t last_of(const struct lines *ls, const char *type)
{
	uint64_t seq = 0;

	for (size_t i = 1; i < ls->n; i++)
		if (type_is(ls->v[i], type))
			seq = seq_of(ls->v[i]);
	CHECK(seq);
	return seq;
}

static void replace_in(char **line, const char *from, const char *to)
{
	char *p = strstr(*line, from), *n;

	if (!p)
		die("'%s' not in line %s", from, *line);
	CHECK(asprintf(&n, "%.*s%s%s", (int)(p - *line), *line, to, p + strlen(from)) > 0);
	free(*line);
	*line = n;
}

static void sign_digest(struct test_signer *s, const char *canon, size_t len, char hex[129])
{
	uint8_t digest[32], sig[64];

	CHECK(audit_sha256(canon, len, digest) == 0);
	CHECK(s->signer.sign(s, digest, sig) == 0);
	audit_hex_encode(sig, 64, hex);
}

/* Rewrites the records from line `from` on as an attacker who knows the format would:
 * seqs renumbered without gaps, hashes recomputed, checkpoints re-pointed and signed with
 * cp_signer (NULL: they keep their old, now wrong, signature; key_as: the key id they name,
 * NULL: unchanged). */
static void rechain(struct lines *ls, size_t from, struct test_signer *cp_signer,
		    const uint8_t *key_as)
{
	uint8_t prev[32];
	uint64_t seq;
	struct json_object *o, *content, *data;

	/* The records go on from the one before the first rewritten line. */
	if (from > 1 && is_record(ls->v[from - 1])) {
		o = parse(ls->v[from - 1]);
		CHECK(audit_hex_decode(get_str(o, "hash"), prev, 32) == 0);
		seq = (uint64_t)get_int(o, "seq") + 1;
	} else {
		o = parse(ls->v[from]);
		CHECK(audit_hex_decode(get_str(o, "prev_hash"), prev, 32) == 0);
		seq = (uint64_t)get_int(o, "seq");
	}
	json_object_put(o);
	for (size_t i = from; i < ls->n && is_record(ls->v[i]); i++, seq++) {
		char ph[65], hh[65], sh[129], *canon;
		uint8_t hash[32];
		size_t cl;
		bool cp;

		o = parse(ls->v[i]);
		json_object_object_get_ex(o, "content", &content);
		json_object_object_get_ex(content, "data", &data);
		cp = strcmp(get_str(o, "type"), "checkpoint") == 0;
		audit_hex_encode(prev, 32, ph);
		json_object_object_add(content, "seq", json_object_new_int64((int64_t)seq));
		json_object_object_add(o, "seq", json_object_new_int64((int64_t)seq));
		if (cp) {
			json_object_object_add(data, "covers_hash", json_object_new_string(ph));
			json_object_object_add(data, "covers_seq", json_object_new_int64((int64_t)seq - 1));
			if (key_as) {
				char kh[65];

				audit_hex_encode(key_as, 32, kh);
				json_object_object_add(data, "key_id", json_object_new_string(kh));
			}
		}
		CHECK(audit_canon_encode(content, &canon, &cl) == 0);
		CHECK(audit_hash_record(prev, canon, cl, hash) == 0);
		audit_hex_encode(hash, 32, hh);
		json_object_object_add(o, "hash", json_object_new_string(hh));
		json_object_object_add(o, "prev_hash", json_object_new_string(ph));
		if (cp && cp_signer) {
			sign_digest(cp_signer, canon, cl, sh);
			json_object_object_add(o, "signature", json_object_new_string(sh));
		}
		free(canon);
		set_line(&ls->v[i], o);
		memcpy(prev, hash, 32);
	}
}

/* Rewrites the metadata's range and the end line to match the records now in the export:
 * unsigned (signer NULL), or signed with signer naming key id key_as. */
static void reseal(struct lines *ls, struct test_signer *signer, const uint8_t *key_as)
{
	uint64_t first = 0, last = 0, records = 0;
	struct json_object *meta, *line, *end;
	char hex[129], *before, *canon;
	uint8_t digest[32], last_hash[32];
	struct lines head = { 0 };
	size_t cl;

	meta = parse(ls->v[0]);
	CHECK(audit_hex_decode(get_str(meta, "anchor"), last_hash, 32) == 0);
	for (size_t i = 1; i < ls->n; i++) {
		struct json_object *o;

		if (!is_record(ls->v[i]))
			continue;
		o = parse(ls->v[i]);
		if (!first)
			first = (uint64_t)get_int(o, "seq");
		last = (uint64_t)get_int(o, "seq");
		CHECK(audit_hex_decode(get_str(o, "hash"), last_hash, 32) == 0);
		records++;
		json_object_put(o);
	}
	json_object_object_add(meta, "first_seq", json_object_new_int64((int64_t)first));
	json_object_object_add(meta, "last_seq", json_object_new_int64((int64_t)last));
	set_line(&ls->v[0], meta);
	if (is_end(ls->v[ls->n - 1]))
		lines_delete(ls, ls->n - 1);
	head = *ls;
	before = lines_join(&head);
	CHECK(audit_sha256(before, strlen(before), digest) == 0);
	free(before);

	line = json_object_new_object();
	end = json_object_new_object();
	audit_hex_encode(digest, 32, hex);
	json_object_object_add(end, "digest", json_object_new_string(hex));
	json_object_object_add(end, "first_seq", json_object_new_int64((int64_t)first));
	audit_hex_encode(last_hash, 32, hex);
	json_object_object_add(end, "last_hash", json_object_new_string(hex));
	json_object_object_add(end, "last_seq", json_object_new_int64((int64_t)last));
	json_object_object_add(end, "records", json_object_new_int64((int64_t)records));
	if (signer) {
		audit_hex_encode(key_as, 32, hex);
		json_object_object_add(end, "key_id", json_object_new_string(hex));
		CHECK(audit_canon_encode(end, &canon, &cl) == 0);
		sign_digest(signer, canon, cl, hex);
		free(canon);
		json_object_object_add(line, "signature", json_object_new_string(hex));
	}
	json_object_object_add(line, "end", end);
	ls->v = realloc(ls->v, (ls->n + 1) * sizeof(char *));
	CHECK(ls->v);
	ls->v[ls->n] = NULL;
	set_line(&ls->v[ls->n], line);
	ls->n++;
}

/* ---- running sfi-audit ---- */

static int run_audit(const char *const *args, char *out, size_t out_len)
{
	const char *argv[32] = { audit_exe, "verify" };
	size_t n = 2, got = 0;
	int fds[2], status;
	pid_t pid;

	for (size_t i = 0; args[i]; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	CHECK(pipe2(fds, O_CLOEXEC) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		execv(audit_exe, (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		ssize_t k = read(fds[0], out + got, out_len - 1 - got);

		if (k <= 0)
			break;
		got += (size_t)k;
		if (got == out_len - 1)
			break;
	}
	out[got] = '\0';
	close(fds[0]);
	CHECK(waitpid(pid, &status, 0) == pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	CHECK(f);
	CHECK(fputs(text, f) >= 0);
	CHECK(fclose(f) == 0);
}

/* One case: the export text, extra arguments, the exit code and a text the output must
 * hold (the bad record or line it names). */
static void expect_text(const char *name, const char *text, const char *extra1,
			const char *extra2, int code, const char *needle)
{
	char path[4096], out[16384];
	const char *args[8];
	size_t n = 0;
	int got;

	snprintf(path, sizeof(path), "%s/case-%02u.jsonl", dir, ++cases);
	write_file(path, text);
	args[n++] = path;
	args[n++] = "--pubkey";
	args[n++] = pub;
	if (extra1)
		args[n++] = extra1;
	if (extra2)
		args[n++] = extra2;
	args[n] = NULL;
	got = run_audit(args, out, sizeof(out));
	if (got != code || (needle && !strstr(out, needle))) {
		failures++;
		printf("FAIL case %u (%s): exit %d (expected %d), looked for \"%s\" in:\n%s", cases,
		       name, got, code, needle ? needle : "", out);
	} else {
		const char *last = out, *p;

		for (p = out; *p; p++)
			if (*p == '\n' && p[1])
				last = p + 1;
		printf("ok   case %2u exit %d %-52s %s", cases, got, name, last);
	}
}

static void expect(const char *name, const struct lines *ls, int code, const char *needle)
{
	char *text = lines_join(ls);

	expect_text(name, text, NULL, NULL, code, needle);
	free(text);
}

/* ---- the trail ---- */

static void uid_for(unsigned n, char out[DB_CHIP_UID_HEX + 1])
{
	snprintf(out, DB_CHIP_UID_HEX + 1, "%024x", n);
}

static void ok(int r, struct db *db, const char *what)
{
	if (r < 0)
		die("%s: %s", what, db_last_error(db));
}

static void chip(struct db *db, int64_t job, unsigned n, uint64_t *counter, bool good,
		 bool outcome)
{
	char uid[DB_CHIP_UID_HEX + 1];
	uint8_t record[100];
	int64_t attempt, lic;
	struct db_reservation res;

	static unsigned serial;

	uid_for(++serial, uid);
	memset(record, (int)n, sizeof(record));
	ok(db_attempt_begin(db, job, n % 2 ? "slot-1" : "slot-2", &attempt), db, "begin");
	ok(db_attempt_step(db, attempt, "identify", uid, 0), db, "step");
	res = (struct db_reservation){ job, attempt, uid, TOKEN, IMAGE_ID, 0, *counter };
	ok(db_ledger_reserve(db, &res, &lic), db, "reserve");
	ok(db_ledger_issue(db, lic, *counter - 1, record, sizeof(record)), db, "issue");
	(*counter)--;
	if (!outcome)
		return;
	if (good) {
		ok(db_ledger_installed(db, lic), db, "installed");
		ok(db_chip_update(db, uid, "programmed", "closed"), db, "chip");
		ok(db_attempt_end(db, attempt, DB_RESULT_OK, 0, NULL, 4096), db, "end");
	} else {
		ok(db_ledger_not_installed(db, lic, "flash error at 0x08004000"), db, "not inst");
		ok(db_chip_update(db, uid, "failed", "open"), db, "chip");
		ok(db_attempt_end(db, attempt, DB_RESULT_FAILED, -5, "installing: flash error at "
				  "0x08004000", 4096), db, "end");
	}
}

/* A station's database: reconcile at start, a job of `chips` chips (every fourth fails),
 * its end; exported with the token's counter. Returns the export text. */
static char *station(const char *name, struct test_signer *ts, unsigned chips, bool open_end,
		     uint64_t *counter, int64_t export_counter)
{
	struct db_job j = { "/srv/images/demo.sfi", IMAGE_ID, DIGEST, NULL, chips, 1000,
			    "operator", NULL };
	struct db_options o = { .signer = ts ? &ts->signer : NULL, .checkpoint_records = 16 };
	struct db_export_token tok = { TOKEN, 0 };
	struct db_export_info info = { name, "tamper-test", &tok, 1 };
	char path[4096], err[512], *buf = NULL;
	struct db_diff *diffs = NULL;
	size_t len = 0, nd = 0;
	struct db *db;
	int64_t job;
	FILE *m;

	snprintf(path, sizeof(path), "%s/%s.db", dir, name);
	if (db_open(path, &o, &db, err, sizeof(err)) < 0)
		die("open: %s", err);
	ok(db_reconcile(db, TOKEN, *counter, &diffs, &nd), db, "reconcile");
	free(diffs);
	ok(db_job_create(db, &j, &job), db, "job");
	for (unsigned i = 1; i <= chips; i++)
		chip(db, job, i, counter, i % 4 != 0, !(open_end && i == chips));
	if (!open_end)
		ok(db_job_end(db, job), db, "job end");
	tok.counter = export_counter >= 0 ? export_counter : (int64_t)*counter;
	m = open_memstream(&buf, &len);
	ok(db_export_jsonl_info(db, NULL, &info, m), db, "export");
	fclose(m);
	db_close(db);
	return buf;
}

/* A trail whose audit key changes in the middle of a job: records signed by a, the change
 * signed into the trail by a, the rest and the end signed by b. */
static char *station_rotated(struct test_signer *a, struct test_signer *b, uint64_t *counter)
{
	struct db_job j = { "/srv/images/demo.sfi", IMAGE_ID, DIGEST, NULL, 8, 1000, "operator",
			    NULL };
	struct db_options oa = { .signer = &a->signer, .checkpoint_records = 16 };
	struct db_options ob = { .signer = &b->signer, .checkpoint_records = 16 };
	struct db_export_token tok = { TOKEN, 0 };
	struct db_export_info info = { "line-r", "tamper-test", &tok, 1 };
	char path[4096], err[512], *buf = NULL;
	struct db_diff *diffs = NULL;
	size_t len = 0, nd = 0;
	struct db *db;
	int64_t job;
	FILE *m;

	snprintf(path, sizeof(path), "%s/line-r.db", dir);
	if (db_open(path, &oa, &db, err, sizeof(err)) < 0)
		die("open: %s", err);
	ok(db_reconcile(db, TOKEN, *counter, &diffs, &nd), db, "reconcile");
	free(diffs);
	ok(db_job_create(db, &j, &job), db, "job");
	for (unsigned i = 1; i <= 4; i++)
		chip(db, job, i, counter, true, true);
	db_close(db);
	if (db_open(path, &ob, &db, err, sizeof(err)) < 0)
		die("open: %s", err);
	ok(db_audit_key_change(db, &a->signer), db, "key change");
	for (unsigned i = 5; i <= 8; i++)
		chip(db, job, i, counter, true, true);
	ok(db_job_end(db, job), db, "job end");
	tok.counter = (int64_t)*counter;
	m = open_memstream(&buf, &len);
	ok(db_export_jsonl_info(db, NULL, &info, m), db, "export");
	fclose(m);
	db_close(db);
	return buf;
}

int main(int argc, char **argv)
{
	struct test_signer ts, attacker;
	uint8_t real_id[32], attacker_id[32];
	char key_path[4096], other_key[4096], *text, *other, *open_text, *unsigned_text;
	char arg[128];
	uint64_t counter = 1000, other_counter = 500, seq, cp;
	struct lines ls;

	if (argc != 3) {
		fprintf(stderr, "usage: audit-tamper SFI-AUDIT DIR\n");
		return 2;
	}
	audit_exe = argv[1];
	dir = argv[2];
	snprintf(key_path, sizeof(key_path), "%s/audit-key.pem", dir);
	snprintf(pub, sizeof(pub), "%s/audit-pub.pem", dir);
	snprintf(other_key, sizeof(other_key), "%s/other-key.pem", dir);
	snprintf(other_pub, sizeof(other_pub), "%s/other-pub.pem", dir);
	CHECK(test_signer_init(&ts, NULL) == 0 && test_signer_save(&ts, key_path, pub) == 0);
	CHECK(test_signer_init(&attacker, NULL) == 0 &&
	      test_signer_save(&attacker, other_key, other_pub) == 0);
	memcpy(real_id, ts.signer.key_id, 32);
	memcpy(attacker_id, attacker.signer.key_id, 32);

	text = station("line-a", &ts, 40, false, &counter, -1);
	other = station("line-b", &ts, 12, false, &other_counter, -1);
	{
		uint64_t c = 300;

		open_text = station("line-c", &ts, 5, true, &c, -1);
		c = 300;
		unsigned_text = station("line-d", NULL, 5, false, &c, -1);
	}

	/* 1 */
	expect_text("the export as written", text, NULL, NULL, 0, "VERIFIED");
	snprintf(arg, sizeof(arg), "--expect-counter=" TOKEN "=%" PRIu64, counter);
	expect_text("--expect-counter with the token's counter", text, arg, NULL, 0, "VERIFIED");
	snprintf(arg, sizeof(arg), "--expect-counter=" TOKEN "=%" PRIu64, counter - 3);
	expect_text("--expect-counter with another value", text, arg, NULL, 1,
		    "COUNTER MISMATCH, token " TOKEN ": the trail leaves the counter at");
	snprintf(arg, sizeof(arg), "--expect-counter=" TOKEN "=%" PRIu64, counter + 2);
	expect_text("--expect-counter higher than the trail", text, arg, NULL, 1,
		    "2 count(s) added outside the trail");
	expect_text("a license without outcome (benign, named)", open_text, NULL, NULL, 3,
		    "VERIFIED, INCOMPLETE: open license");
	expect_text("a station without audit key", unsigned_text, NULL, NULL, 4,
		    "NOT VERIFIABLE: the end of export 1 is not signed");

	/* An edited field, chain left as it was. */
	lines_split(text, &ls);
	seq = find(&ls, "attempt.end", 0, "\"failed\"");
	replace_in(&ls.v[line_of(&ls, seq)], "flash error at", "flash fine at");
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": content does not match", seq);
	expect("edited field", &ls, 1, arg);
	lines_free(&ls);

	/* An edited field, chain recomputed: the next checkpoint's signature fails. */
	lines_split(text, &ls);
	seq = find(&ls, "attempt.end", 0, "\"failed\"");
	replace_in(&ls.v[line_of(&ls, seq)], "\"result\":\"failed\"", "\"result\":\"ok\"");
	rechain(&ls, line_of(&ls, seq), NULL, NULL);
	cp = find(&ls, "checkpoint", seq, NULL);
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": checkpoint signature", cp);
	expect("edited field, chain recomputed", &ls, 1, arg);
	lines_free(&ls);

	/* The same with the end recomputed too (unsigned): still the checkpoint. */
	lines_split(text, &ls);
	seq = find(&ls, "attempt.end", 0, "\"failed\"");
	replace_in(&ls.v[line_of(&ls, seq)], "\"result\":\"failed\"", "\"result\":\"ok\"");
	rechain(&ls, line_of(&ls, seq), NULL, NULL);
	reseal(&ls, NULL, NULL);
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": checkpoint signature", cp);
	expect("edited field, chain and end recomputed", &ls, 1, arg);
	lines_free(&ls);

	/* A record after the last checkpoint edited and the end recomputed: the end's
	 * signature names the change. */
	lines_split(text, &ls);
	seq = last_of(&ls, "job.end");
	replace_in(&ls.v[line_of(&ls, seq)], "{\"job\":1}", "{\"job\":2}");
	rechain(&ls, line_of(&ls, seq), NULL, NULL);
	reseal(&ls, &ts, real_id);
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": checkpoint signature", seq + 1);
	expect("last record edited, end re-signed", &ls, 1, arg);
	lines_free(&ls);

	/* A deleted record. */
	lines_split(text, &ls);
	seq = find(&ls, "license.issue", 20, NULL);
	lines_delete(&ls, line_of(&ls, seq));
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": record %" PRIu64 " is missing", seq,
		 seq);
	expect("deleted line", &ls, 1, arg);
	lines_free(&ls);

	/* A deleted record, the chain and end recomputed. */
	lines_split(text, &ls);
	seq = find(&ls, "license.issue", 20, NULL);
	{
		size_t i = line_of(&ls, seq);

		lines_delete(&ls, i);
		rechain(&ls, i, NULL, NULL);
	}
	reseal(&ls, NULL, NULL);
	/* The license whose issue went is installed without being issued. */
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": license", seq);
	expect("deleted line, chain recomputed", &ls, 1, arg);
	lines_free(&ls);

	/* A duplicated record. */
	lines_split(text, &ls);
	seq = find(&ls, "license.installed", 10, NULL);
	lines_insert(&ls, line_of(&ls, seq), ls.v[line_of(&ls, seq)]);
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": record %" PRIu64 " expected, found %"
		 PRIu64, seq + 1, seq + 1, seq);
	expect("duplicated line", &ls, 1, arg);
	lines_free(&ls);

	/* Two records swapped. */
	lines_split(text, &ls);
	seq = find(&ls, "attempt.end", 30, NULL);
	{
		size_t a = line_of(&ls, seq), b = line_of(&ls, seq + 1);
		char *tmp = ls.v[a];

		ls.v[a] = ls.v[b];
		ls.v[b] = tmp;
	}
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ":", seq);
	expect("reordered lines", &ls, 1, arg);
	lines_free(&ls);

	/* Cut in the middle of a line. */
	lines_split(text, &ls);
	seq = find(&ls, "license.reserve", 60, NULL);
	{
		size_t i = line_of(&ls, seq);

		ls.v[i][strlen(ls.v[i]) / 2] = '\0';
		while (ls.n > i + 1)
			lines_delete(&ls, ls.n - 1);
	}
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": line %zu: not valid JSON", seq,
		 line_of(&ls, seq - 1) + 2);
	expect("cut mid-line", &ls, 1, arg);
	lines_free(&ls);

	/* Cut at a line: everything after a record dropped. */
	lines_split(text, &ls);
	seq = find(&ls, "license.issue", 50, NULL);
	while (ls.n > line_of(&ls, seq) + 1)
		lines_delete(&ls, ls.n - 1);
	snprintf(arg, sizeof(arg), "BAD export 1, end line (first bad record %" PRIu64 "): the "
		 "export was cut", seq + 1);
	expect("cut at a line", &ls, 1, arg);
	lines_free(&ls);

	/* Cut right after a checkpoint, metadata edited to end there. */
	lines_split(text, &ls);
	cp = find(&ls, "checkpoint", 30, NULL);
	while (ls.n > line_of(&ls, cp) + 1)
		lines_delete(&ls, ls.n - 1);
	{
		struct json_object *meta = parse(ls.v[0]);

		json_object_object_add(meta, "last_seq", json_object_new_int64((int64_t)cp));
		set_line(&ls.v[0], meta);
	}
	snprintf(arg, sizeof(arg), "BAD export 1, end line (first bad record %" PRIu64 "): the "
		 "export was cut", cp + 1);
	expect("cut after a checkpoint, metadata edited", &ls, 1, arg);
	/* ... and an end line forged for the cut, unsigned. */
	reseal(&ls, NULL, NULL);
	snprintf(arg, sizeof(arg), "BAD export 1, end line (first bad record %" PRIu64 "): the "
		 "end is not signed", cp + 1);
	expect("cut after a checkpoint, unsigned end forged", &ls, 1, arg);
	/* ... or signed with another key. */
	reseal(&ls, &attacker, attacker_id);
	expect("cut after a checkpoint, end signed by another key", &ls, 1,
	       "BAD export 1, end line: the end is signed with audit key");
	lines_free(&ls);

	/* The final checkpoint dropped. */
	lines_split(text, &ls);
	cp = last_of(&ls, "checkpoint");
	lines_delete(&ls, line_of(&ls, cp));
	snprintf(arg, sizeof(arg), "(first bad record %" PRIu64 "): the export ends at record %"
		 PRIu64, cp, cp - 1);
	expect("final checkpoint dropped", &ls, 1, arg);
	lines_free(&ls);

	/* Every checkpoint removed, the chain and the end recomputed without any signature. */
	lines_split(text, &ls);
	seq = seq_of(ls.v[1]);
	for (size_t i = ls.n - 1; i >= 1; i--)
		if (type_is(ls.v[i], "checkpoint"))
			lines_delete(&ls, i);
	rechain(&ls, 1, NULL, NULL);
	reseal(&ls, NULL, NULL);
	expect("all checkpoints removed, chain recomputed, unsigned", &ls, 4,
	       "NOT VERIFIABLE: the end of export 1 is not signed");
	/* ... and signed with a key of the attacker's. */
	reseal(&ls, &attacker, attacker_id);
	expect("all checkpoints removed, signed by another key", &ls, 4,
	       "which is not in the key ring");
	/* ... claiming the real key. */
	reseal(&ls, &attacker, real_id);
	expect("all checkpoints removed, another key claiming the real one", &ls, 1,
	       "BAD export 1, end line: the end signature does not verify");
	lines_free(&ls);

	/* Signatures flipped. */
	lines_split(text, &ls);
	{
		char *p = strstr(ls.v[ls.n - 1], "\"signature\":\"") + 13;

		*p = *p == '0' ? '1' : '0';
	}
	expect("end signature flipped", &ls, 1,
	       "BAD export 1, end line: the end signature does not verify");
	lines_free(&ls);
	lines_split(text, &ls);
	cp = find(&ls, "checkpoint", 0, NULL);
	{
		char *p = strstr(ls.v[line_of(&ls, cp)], "\"signature\":\"") + 20;

		*p = *p == '0' ? '1' : '0';
	}
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": checkpoint signature", cp);
	expect("checkpoint signature flipped", &ls, 1, arg);
	lines_free(&ls);

	/* Key swapped: everything re-signed by another key, which names itself. */
	lines_split(text, &ls);
	seq = find(&ls, "attempt.end", 0, "\"failed\"");
	replace_in(&ls.v[line_of(&ls, seq)], "\"result\":\"failed\"", "\"result\":\"ok\"");
	rechain(&ls, 1, &attacker, attacker_id);
	reseal(&ls, &attacker, attacker_id);
	expect("key swapped (everything re-signed)", &ls, 4, "which is not in the key ring");
	{
		char *t = lines_join(&ls);

		expect_text("key swapped, verified with that key", t, "--pubkey", other_pub, 0,
			    "VERIFIED");
		free(t);
	}
	lines_free(&ls);

	/* Duplicate keys: in a record line, in the content, in the metadata. */
	lines_split(text, &ls);
	seq = find(&ls, "attempt.end", 0, "\"failed\"");
	replace_in(&ls.v[line_of(&ls, seq)], "{\"content\":", "{\"content\":{\"data\":{},"
		   "\"seq\":1,\"time\":1,\"type\":\"attempt.end\"},\"content\":");
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": line %zu: not canonical JSON (a "
		 "duplicate key", seq, line_of(&ls, seq) + 1);
	expect("duplicate key in a record line", &ls, 1, arg);
	lines_free(&ls);
	lines_split(text, &ls);
	seq = find(&ls, "attempt.end", 0, "\"failed\"");
	replace_in(&ls.v[line_of(&ls, seq)], "\"result\":\"failed\"",
		   "\"result\":\"ok\",\"result\":\"failed\"");
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": line", seq);
	expect("duplicate key in record data", &ls, 1, arg);
	lines_free(&ls);
	lines_split(text, &ls);
	replace_in(&ls.v[0], "\"station\":", "\"station\":\"line-z\",\"station\":");
	expect("duplicate key in the metadata", &ls, 1,
	       "BAD export 1, line 1 (metadata): not canonical JSON (a duplicate key");
	lines_free(&ls);

	/* Unknown fields: on a record line, in a record's data (chain and end recomputed and
	 * signed with the real key, as a faulty station would), in the metadata, in the end. */
	lines_split(text, &ls);
	seq = find(&ls, "attempt.begin", 5, NULL);
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": line %zu: record line: unknown field "
		 "\"comment\"", seq, line_of(&ls, seq) + 1);
	replace_in(&ls.v[line_of(&ls, seq)], "{\"content\":", "{\"comment\":\"x\",\"content\":");
	expect("unknown field in a record line", &ls, 1, arg);
	lines_free(&ls);
	lines_split(text, &ls);
	seq = find(&ls, "attempt.begin", 5, NULL);
	replace_in(&ls.v[line_of(&ls, seq)], "{\"attempt\":", "{\"approved_by\":\"x\",\"attempt\":");
	rechain(&ls, line_of(&ls, seq), &ts, NULL);
	reseal(&ls, &ts, real_id);
	snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": attempt.begin record has an unknown "
		 "field \"approved_by\"", seq);
	expect("unknown field in record data, re-signed", &ls, 1, arg);
	lines_free(&ls);
	lines_split(text, &ls);
	replace_in(&ls.v[0], "\"schema\":", "\"reviewed\":true,\"schema\":");
	expect("unknown field in the metadata", &ls, 1,
	       "BAD export 1, line 1 (metadata): metadata: unknown field \"reviewed\"");
	lines_free(&ls);
	lines_split(text, &ls);
	replace_in(&ls.v[ls.n - 1], "\"records\":", "\"partial\":false,\"records\":");
	expect("unknown field in the end line", &ls, 1, "end line: unknown field \"partial\"");
	lines_free(&ls);

	/* The metadata edited (station, token counter) without a cut. */
	lines_split(text, &ls);
	replace_in(&ls.v[0], "\"station\":\"line-a\"", "\"station\":\"line-q\"");
	expect("station renamed in the metadata", &ls, 1,
	       "BAD export 1, end line: the lines before the end are not the ones");
	lines_free(&ls);
	lines_split(text, &ls);
	{
		char from[64], to[64];

		snprintf(from, sizeof(from), "\"counter\":%" PRIu64, counter);
		snprintf(to, sizeof(to), "\"counter\":%" PRIu64, counter + 5);
		replace_in(&ls.v[0], from, to);
	}
	expect("token counter edited in the metadata", &ls, 1,
	       "BAD export 1, end line: the lines before the end are not the ones");
	lines_free(&ls);

	/* A forged tail: records appended after the last one, the end re-made. */
	lines_split(text, &ls);
	{
		size_t at = ls.n - 1;

		seq = find(&ls, "attempt.begin", 0, NULL);
		lines_insert(&ls, at, ls.v[line_of(&ls, seq)]);
		lines_insert(&ls, at + 1, ls.v[line_of(&ls, seq + 1)]);
		rechain(&ls, at, NULL, NULL);
		seq = seq_of(ls.v[at]);
		reseal(&ls, NULL, NULL);
	}
	snprintf(arg, sizeof(arg), "BAD export 1, end line (first bad record %" PRIu64 "): the "
		 "end is not signed", seq + 2);
	expect("forged tail, unsigned end", &ls, 1, arg);
	reseal(&ls, &ts, real_id);
	{
		/* The end's signature taken from the export as it was. */
		const char *orig = strstr(strrchr(text, '{') - 7, "\"signature\":\"");
		char *p = strstr(ls.v[ls.n - 1], "\"signature\":\"");

		CHECK(orig && p);
		memcpy(p, orig, 13 + 128);
	}
	expect("forged tail, end with a stolen signature", &ls, 1, "BAD export 1, end line:");
	lines_free(&ls);

	/* Another station's records spliced in. */
	lines_split(text, &ls);
	{
		struct lines ob;
		uint64_t at = find(&ls, "attempt.begin", 40, NULL);

		lines_split(other, &ob);
		for (size_t i = 0; i < 6; i++)
			lines_insert(&ls, line_of(&ls, at) + i, ob.v[line_of(&ob, at + i)]);
		for (size_t i = 0; i < 6; i++)
			lines_delete(&ls, line_of(&ls, at) + 6);
		snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": prev_hash does not name", at);
		lines_free(&ob);
	}
	expect("another station's records spliced in", &ls, 1, arg);
	lines_free(&ls);
	{
		char p1[4096], p2[4096], out[16384];
		const char *args[] = { p1, p2, "--pubkey", pub, NULL };
		int code;

		snprintf(p1, sizeof(p1), "%s/trail-a.jsonl", dir);
		snprintf(p2, sizeof(p2), "%s/trail-b.jsonl", dir);
		write_file(p1, text);
		write_file(p2, other);
		code = run_audit(args, out, sizeof(out));
		cases++;
		if (code != 1 || !strstr(out, "BAD export 2, metadata")) {
			failures++;
			printf("FAIL case %u (another station's export as the next one): exit %d:\n%s",
			       cases, code, out);
		} else {
			printf("ok   case %2u exit 1 %-52s %s", cases,
			       "another station's export as the next one", strstr(out, "BAD"));
		}
	}

	/* Lines after the end, and an empty line inserted. */
	lines_split(text, &ls);
	lines_insert(&ls, ls.n, ls.v[1]);
	expect("a line after the end", &ls, 1, "BAD export 1, after the end line: line");
	lines_free(&ls);
	lines_split(text, &ls);
	lines_insert(&ls, 5, "");
	expect("an empty line inserted", &ls, 1, "BAD export 1, end line: the lines before");
	lines_free(&ls);

	/* Consecutive exports of one station as one trail: the second repeats the first's
	 * records (the same ones) and goes on; between the two runs a technician spent two
	 * counts off the record, which the second run's reconciliation states. */
	{
		uint64_t c = 800;
		char *e1 = station("line-e", &ts, 6, false, &c, -1), *e2, *e3;
		char p1[4096], p2[4096], p3[4096], out[16384];
		const char *args[] = { p1, p2, "--pubkey", pub, NULL };
		const char *args3[] = { p1, p3, "--pubkey", pub, NULL };
		int code;

		c -= 2;
		e2 = station("line-e", &ts, 4, false, &c, -1);
		e3 = station("line-e", &ts, 1, false, &c, (int64_t)c - 2); /* one chip, one more */
		snprintf(p1, sizeof(p1), "%s/e1.jsonl", dir);
		snprintf(p2, sizeof(p2), "%s/e2.jsonl", dir);
		snprintf(p3, sizeof(p3), "%s/e3.jsonl", dir);
		write_file(p1, e1);
		write_file(p2, e2);
		write_file(p3, e3);
		code = run_audit(args, out, sizeof(out));
		cases++;
		snprintf(arg, sizeof(arg), "token " TOKEN ": counter %" PRIu64 " at the end of the "
			 "trail (800 at its start): 10 spend(s) proved, 2 spent outside sfid", c + 1);
		if (code != 3 || !strstr(out, "trail: 2 export(s), station \"line-e\"") ||
		    !strstr(out, arg) || !strstr(out, "counter change not made by sfid: record") ||
		    !strstr(out, "VERIFIED, INCOMPLETE: record")) {
			failures++;
			printf("FAIL case %u (two exports, an off-line spend between): exit %d:\n%s",
			       cases, code, out);
		} else {
			printf("ok   case %2u exit 3 %-52s %s", cases,
			       "two exports as one trail, an off-line spend", strstr(out, "VERIFIED"));
		}
		/* A spend off the record while sfid ran: the token read at export is lower. */
		code = run_audit(args3, out, sizeof(out));
		cases++;
		if (code != 1 || !strstr(out, "COUNTER MISMATCH, token " TOKEN ": the trail leaves "
					      "the counter at") ||
		    !strstr(out, "when export 2 was written: 1 count(s) spent outside the trail")) {
			failures++;
			printf("FAIL case %u (token lower at export than the trail): exit %d:\n%s",
			       cases, code, out);
		} else {
			printf("ok   case %2u exit 1 %-52s %s", cases,
			       "token lower at export than the trail", strstr(out, "COUNTER"));
		}
		free(e1);
		free(e2);
		free(e3);
	}

	/* An audit key rotation in the middle of a job: verified with both keys of the ring;
	 * the change taken out, or pointed at another key, is tampering. */
	{
		uint64_t c = 600;
		char *rt = station_rotated(&ts, &attacker, &c);

		expect_text("key rotation, ring with both keys", rt, "--pubkey", other_pub, 0,
			    "VERIFIED");
		expect_text("key rotation, the new key missing from the ring", rt, NULL, NULL, 4,
			    "which is not in the key ring");
		lines_split(rt, &ls);
		seq = find(&ls, "audit.key", 0, NULL);
		{
			size_t i = line_of(&ls, seq);

			lines_delete(&ls, i);
			rechain(&ls, i, NULL, NULL);
			reseal(&ls, &attacker, attacker_id);
		}
		{
			char *t = lines_join(&ls);

			snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": checkpoint signature", seq);
			expect_text("key change removed, chain recomputed", t, "--pubkey", other_pub, 1,
				    arg);
			free(t);
		}
		lines_free(&ls);
		lines_split(rt, &ls);
		seq = find(&ls, "audit.key", 0, NULL);
		{
			char hex[65], from[80], to[80];

			audit_hex_encode(attacker_id, 32, hex);
			snprintf(from, sizeof(from), "\"new_key_id\":\"%s\"", hex);
			memset(hex, 'a', 64);
			snprintf(to, sizeof(to), "\"new_key_id\":\"%s\"", hex);
			replace_in(&ls.v[line_of(&ls, seq)], from, to);
			rechain(&ls, line_of(&ls, seq), NULL, NULL);
		}
		{
			char *t = lines_join(&ls);

			snprintf(arg, sizeof(arg), "BAD record %" PRIu64 ": checkpoint signature",
				 seq + 1);
			expect_text("key change pointed at another key", t, "--pubkey", other_pub, 1,
				    arg);
			free(t);
		}
		lines_free(&ls);
		free(rt);
	}

	printf("%u cases, %u failed\n", cases, failures);
	test_signer_done(&ts);
	test_signer_done(&attacker);
	free(text);
	free(other);
	free(open_text);
	free(unsigned_text);
	return failures ? 1 : 0;
}

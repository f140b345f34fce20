/* sfi-audit: verifies and summarizes exported sfid audit trails, offline.
 *
 * Exit codes: 0 verified; 1 tampered (the first bad record is named) or a counter
 * mismatch; 2 usage or input error; 3 verified but incomplete for a named benign reason
 * (an open license, spends outside sfid recorded in the trail); 4 not verifiable (parts not
 * signed, or signed by a key not in the key ring). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/pem.h>

#include "audit-central.h"
#include "audit-verify.h"
#include "config.h"

enum {
	EXIT_VERIFIED = 0,
	EXIT_BAD_RECORD = 1,
	EXIT_USAGE = 2,
	EXIT_INCOMPLETE = 3,
	EXIT_UNVERIFIABLE = 4,
};

#define KEYS_MAX 16
#define EXPORTS_MAX 256
#define EXPECT_MAX 32

static void usage(FILE *f)
{
	fprintf(f, "Usage: sfi-audit verify EXPORT.jsonl... --pubkey AUDIT.pem [--pubkey OLD.pem]...\n"
		   "                        [--expect-counter SERIAL=N]... [--expect-json INFO.json]\n"
		   "                        [--quiet]\n"
		   "       sfi-audit verify --pg CONNINFO --station NAME --pubkey AUDIT.pem...\n"
		   "                        [--password-file FILE] [--expect-counter SERIAL=N]...\n"
		   "       sfi-audit report EXPORT.jsonl [--json]\n"
		   "       sfi-audit report --pg CONNINFO [--password-file FILE] [--json]\n"
		   "       sfi-audit report EXPORT.jsonl --html [--pubkey AUDIT.pem]...\n"
		   "                        [--expect-counter SERIAL=N]... [--expect-json INFO.json]\n"
		   "       sfi-audit --version\n"
		   "Exit codes: 0 verified, 1 tampered or counter mismatch, 2 usage/input error,\n"
		   "3 verified but incomplete (reason named), 4 not verifiable (unsigned parts or a\n"
		   "key not in the key ring).\n");
}

static FILE *open_input(const char *path)
{
	FILE *f;

	if (strcmp(path, "-") == 0)
		return stdin;
	f = fopen(path, "re");
	if (!f)
		fprintf(stderr, "sfi-audit: cannot open %s: %s\n", path, strerror(errno));
	return f;
}

static int add_key(struct verify_key *keys, size_t *n, const char *path)
{
	int r;

	if (*n == KEYS_MAX) {
		fprintf(stderr, "sfi-audit: at most %d --pubkey\n", KEYS_MAX);
		return -E2BIG;
	}
	r = verify_key_load(path, &keys[*n]);
	if (r == -EINVAL)
		fprintf(stderr, "sfi-audit: %s is not a PEM EC public key (a token's audit key, as "
				"exported by sfi-hsm audit-pubkey)\n", path);
	else if (r < 0)
		fprintf(stderr, "sfi-audit: cannot open the audit public key %s: %s\n", path,
			strerror(-r));
	else
		(*n)++;
	return r;
}

static int add_expect(struct verify_expect *e, size_t *n, const char *serial, uint64_t counter)
{
	if (*n == EXPECT_MAX || !serial[0] || strlen(serial) >= sizeof(e->serial)) {
		fprintf(stderr, "sfi-audit: too many expected counters, or a bad serial\n");
		return -EINVAL;
	}
	for (size_t i = 0; i < *n; i++)
		if (strcmp(e[i].serial, serial) == 0) {
			fprintf(stderr, "sfi-audit: token %s is expected twice\n", serial);
			return -EINVAL;
		}
	snprintf(e[*n].serial, sizeof(e[*n].serial), "%s", serial);
	e[*n].counter = counter;
	(*n)++;
	return 0;
}

static int parse_expect(struct verify_expect *e, size_t *n, const char *arg)
{
	const char *eq = strrchr(arg, '=');
	char serial[72], *end;
	unsigned long long c;

	if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof(serial) || !eq[1] || eq[1] == '-')
		goto bad;
	errno = 0;
	c = strtoull(eq + 1, &end, 10);
	if (errno || *end)
		goto bad;
	snprintf(serial, sizeof(serial), "%.*s", (int)(eq - arg), arg);
	return add_expect(e, n, serial, c);
bad:
	fprintf(stderr, "sfi-audit: --expect-counter takes SERIAL=N (the token's serial and its "
			"counter as sfi-hsm info shows it), not '%s'\n", arg);
	return -EINVAL;
}

/* The JSON sfi-hsm info --json prints (one object, or a list of them). */
static int parse_expect_json(struct verify_expect *e, size_t *n, const char *path)
{
	struct json_object *root = json_object_from_file(path), *list;
	int r = 0;

	if (!root) {
		fprintf(stderr, "sfi-audit: %s is not JSON (expected the output of sfi-hsm info "
				"--json)\n", path);
		return -EINVAL;
	}
	if (json_object_is_type(root, json_type_array)) {
		list = root;
	} else {
		list = json_object_new_array();
		json_object_array_add(list, json_object_get(root));
	}
	for (size_t i = 0; r == 0 && i < json_object_array_length(list); i++) {
		struct json_object *o = json_object_array_get_idx(list, i), *s, *c;

		if (!json_object_object_get_ex(o, "serial", &s) ||
		    !json_object_is_type(s, json_type_string) ||
		    !json_object_object_get_ex(o, "licenses_left", &c) ||
		    !json_object_is_type(c, json_type_int) || json_object_get_int64(c) < 0) {
			fprintf(stderr, "sfi-audit: %s: a token without serial and licenses_left\n",
				path);
			r = -EINVAL;
		} else {
			r = add_expect(e, n, json_object_get_string(s),
				       (uint64_t)json_object_get_int64(c));
		}
	}
	if (list != root)
		json_object_put(list);
	json_object_put(root);
	return r;
}

static void print_result(const struct verify_result *res, bool quiet)
{
	if (!quiet && res->status != VERIFY_BAD) {
		printf("trail: %zu export(s)%s%s%s%s%s, records %" PRIu64 "..%" PRIu64 " (%" PRIu64
		       " records, %" PRIu64 " signed checkpoints, %zu signed end(s)) link and hash "
		       "correctly\n",
		       res->exports, res->station[0] ? ", station \"" : "", res->station,
		       res->station[0] ? "\"" : "", res->version[0] ? ", sfid " : "", res->version,
		       res->first_seq, res->last_seq, res->records, res->checkpoints,
		       res->signed_ends);
		printf("licenses: %" PRIu64 " spent, %" PRIu64 " installed, %" PRIu64
		       " not installed, %" PRIu64 " unconfirmed; counters contiguous\n",
		       res->spends, res->installed, res->not_installed, res->unconfirmed);
		for (size_t i = 0; i < res->n_tokens; i++) {
			const struct verify_token *t = &res->tokens[i];

			if (!t->known) {
				printf("token %s: no counter in the trail\n", t->serial);
				continue;
			}
			printf("token %s: counter %" PRIu64 " at the end of the trail", t->serial,
			       t->counter);
			if (t->has_start)
				printf(" (%" PRIu64 " at its start)", t->start);
			printf(": %" PRIu64 " spend(s) proved, %" PRIu64 " spent outside sfid, %" PRIu64
			       " added", t->spends, t->unaccounted, t->added);
			if (t->export_counter >= 0)
				printf("; the token read %" PRId64 " at export", t->export_counter);
			putchar('\n');
		}
		if (res->uncovered_from)
			printf("not yet covered by a signed checkpoint: records %" PRIu64 "..%" PRIu64
			       " (they link and hash correctly; the station signs the next "
			       "checkpoint soon)\n", res->uncovered_from, res->last_seq);
		for (size_t i = 0; i < res->n_notes; i++)
			printf("counter change not made by sfid: %s\n", res->notes[i]);
		for (size_t i = 0; i < res->n_key_changes; i++)
			printf("audit key change: %s\n", res->key_changes[i]);
	}
	switch (res->status) {
	case VERIFY_BAD:
		if (res->bad_seq && strncmp(res->where, "record ", 7) == 0)
			printf("BAD record %" PRIu64 ": %s\n", res->bad_seq, res->message);
		else if (res->bad_seq)
			printf("BAD %s (first bad record %" PRIu64 "): %s\n", res->where,
			       res->bad_seq, res->message);
		else
			printf("BAD %s: %s\n", res->where, res->message);
		break;
	case VERIFY_MISMATCH:
		printf("COUNTER MISMATCH, %s: %s\n", res->where, res->message);
		break;
	case VERIFY_OK:
		printf("VERIFIED\n");
		break;
	case VERIFY_INCOMPLETE:
		for (size_t i = 0; i < res->n_warnings; i++)
			printf("incomplete: %s\n", res->warnings[i]);
		if (res->warnings_dropped)
			printf("incomplete: %zu more reasons not shown\n", res->warnings_dropped);
		printf("VERIFIED, INCOMPLETE: %s\n", res->warnings[0]);
		break;
	case VERIFY_UNVERIFIABLE:
		for (size_t i = 0; i < res->n_warnings; i++)
			printf("incomplete: %s\n", res->warnings[i]);
		printf("NOT VERIFIABLE: %s\n", res->unverifiable);
		break;
	case _VERIFY_STATUS_MAX:
		break;
	}
}

static int exit_code(enum verify_status s)
{
	switch (s) {
	case VERIFY_OK:
		return EXIT_VERIFIED;
	case VERIFY_BAD:
	case VERIFY_MISMATCH:
		return EXIT_BAD_RECORD;
	case VERIFY_INCOMPLETE:
		return EXIT_INCOMPLETE;
	case VERIFY_UNVERIFIABLE:
		return EXIT_UNVERIFIABLE;
	case _VERIFY_STATUS_MAX:
		break;
	}
	return EXIT_USAGE;
}

/* The options verify and report --html share: --pubkey, --expect-counter, --expect-json
 * (into vo's key and expectation arrays). */
static int verify_option(int c, const char *arg, struct verify_key *keys,
			 struct verify_expect *expect, struct verify_options *vo)
{
	switch (c) {
	case 'k':
		return add_key(keys, &vo->n_keys, arg);
	case 'e':
		return parse_expect(expect, &vo->n_expect, arg);
	default:
		return parse_expect_json(expect, &vo->n_expect, arg);
	}
}

static int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pubkey", required_argument, NULL, 'k' },
		{ "expect-counter", required_argument, NULL, 'e' },
		{ "expect-json", required_argument, NULL, 'J' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "pg", required_argument, NULL, 'P' },
		{ "station", required_argument, NULL, 'S' },
		{ "password-file", required_argument, NULL, 'W' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *pg = NULL, *station = NULL, *password_file = NULL;
	char err[1024] = "";
	struct verify_key keys[KEYS_MAX];
	struct verify_expect expect[EXPECT_MAX];
	struct verify_options vo = { .keys = keys, .expect = expect };
	FILE *ins[EXPORTS_MAX];
	struct verify_result *res = NULL;
	size_t n_in = 0;
	bool quiet = false;
	int c, r, code = EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "k:e:J:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
		case 'e':
		case 'J':
			if (verify_option(c, optarg, keys, expect, &vo) < 0)
				goto out;
			break;
		case 'q':
			quiet = true;
			break;
		case 'P':
			pg = optarg;
			break;
		case 'S':
			station = optarg;
			break;
		case 'W':
			password_file = optarg;
			break;
		case 'h':
			usage(stdout);
			code = EXIT_VERIFIED;
			goto out;
		default:
			usage(stderr);
			goto out;
		}
	}
	if (pg) {
		if (optind != argc || !station || vo.n_keys == 0) {
			fprintf(stderr, "sfi-audit: verify --pg takes --station NAME and --pubkey, and "
					"no export file\n");
			usage(stderr);
			goto out;
		}
		res = calloc(1, sizeof(*res));
		if (!res)
			goto out;
		r = central_verify(pg, password_file, station, &vo, res, err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "sfi-audit: %s\n", err);
			goto out;
		}
		print_result(res, quiet);
		code = exit_code(res->status);
		goto out;
	}
	if (station || password_file) {
		fprintf(stderr, "sfi-audit: --station and --password-file go with --pg\n");
		goto out;
	}
	if (optind >= argc || vo.n_keys == 0 || argc - optind > EXPORTS_MAX) {
		usage(stderr);
		goto out;
	}
	for (int i = optind; i < argc; i++) {
		ins[n_in] = open_input(argv[i]);
		if (!ins[n_in])
			goto out;
		n_in++;
	}
	res = calloc(1, sizeof(*res));
	if (!res)
		goto out;
	r = audit_verify_streams(ins, n_in, &vo, res);
	if (r < 0) {
		fprintf(stderr, "sfi-audit: cannot read the export: %s\n", strerror(-r));
		goto out;
	}
	print_result(res, quiet);
	code = exit_code(res->status);
out:
	for (size_t i = 0; i < n_in; i++)
		if (ins[i] != stdin)
			fclose(ins[i]);
	for (size_t i = 0; i < vo.n_keys; i++)
		EVP_PKEY_free(keys[i].key);
	free(res);
	return code;
}

/* Reads all of f into memory (the report reads the export twice: verify, then summarize). */
static char *slurp(FILE *f, size_t *ret_len)
{
	char *buf = NULL, chunk[65536];
	size_t len = 0, n;

	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		char *p = realloc(buf, len + n + 1);

		if (!p) {
			free(buf);
			return NULL;
		}
		buf = p;
		memcpy(buf + len, chunk, n);
		len += n;
	}
	if (ferror(f)) {
		free(buf);
		return NULL;
	}
	if (!buf)
		buf = calloc(1, 1);
	*ret_len = len;
	return buf;
}

static int cmd_report(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "html", no_argument, NULL, 'H' },
		{ "pubkey", required_argument, NULL, 'k' },
		{ "expect-counter", required_argument, NULL, 'e' },
		{ "expect-json", required_argument, NULL, 'J' },
		{ "pg", required_argument, NULL, 'P' },
		{ "password-file", required_argument, NULL, 'W' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *pg = NULL, *password_file = NULL;
	enum report_format format = REPORT_TEXT;
	struct verify_key keys[KEYS_MAX];
	struct verify_expect expect[EXPECT_MAX];
	struct verify_options vo = { .keys = keys, .expect = expect };
	struct verify_result *res = NULL;
	char err[512] = "", *buf = NULL;
	size_t len = 0;
	FILE *in = NULL, *m;
	int c, r, code = EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "jHk:e:J:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			format = REPORT_JSON;
			break;
		case 'H':
			format = REPORT_HTML;
			break;
		case 'P':
			pg = optarg;
			break;
		case 'W':
			password_file = optarg;
			break;
		case 'k':
		case 'e':
		case 'J':
			if (verify_option(c, optarg, keys, expect, &vo) < 0)
				goto out;
			break;
		case 'h':
			usage(stdout);
			code = EXIT_VERIFIED;
			goto out;
		default:
			usage(stderr);
			goto out;
		}
	}
	if (pg) {
		unsigned flagged = 0;

		if (optind != argc || format == REPORT_HTML || vo.n_keys || vo.n_expect) {
			fprintf(stderr, "sfi-audit: report --pg takes no export file, and --json at "
					"most (verify each station with verify --pg)\n");
			goto out;
		}
		r = central_report(pg, password_file, stdout, format == REPORT_JSON, &flagged, err,
				   sizeof(err));
		if (r < 0) {
			fprintf(stderr, "sfi-audit: %s\n", err);
			goto out;
		}
		code = EXIT_VERIFIED;
		goto out;
	}
	if (password_file) {
		fprintf(stderr, "sfi-audit: --password-file goes with --pg\n");
		goto out;
	}
	if (optind + 1 != argc || (format != REPORT_HTML && (vo.n_keys || vo.n_expect))) {
		if (format != REPORT_HTML && (vo.n_keys || vo.n_expect))
			fprintf(stderr, "sfi-audit: --pubkey and --expect-* go with --html (the text "
					"and JSON reports do not verify; run verify)\n");
		usage(stderr);
		goto out;
	}
	in = open_input(argv[optind]);
	if (!in)
		goto out;
	buf = slurp(in, &len);
	if (!buf) {
		fprintf(stderr, "sfi-audit: cannot read %s\n", argv[optind]);
		goto out;
	}
	if (format == REPORT_HTML && vo.n_keys) {
		res = calloc(1, sizeof(*res));
		m = len ? fmemopen(buf, len, "r") : NULL;
		if (!res || !m || audit_verify_streams(&m, 1, &vo, res) < 0) {
			fprintf(stderr, "sfi-audit: cannot verify %s\n", argv[optind]);
			if (m)
				fclose(m);
			goto out;
		}
		fclose(m);
	}
	m = len ? fmemopen(buf, len, "r") : NULL;
	if (!m) {
		fprintf(stderr, "sfi-audit: cannot summarize %s: empty\n", argv[optind]);
		goto out;
	}
	r = audit_report_stream(m, stdout, format, res, err, sizeof(err));
	fclose(m);
	if (r < 0) {
		fprintf(stderr, "sfi-audit: cannot summarize %s: %s\n", argv[optind],
			r == -EINVAL ? err : strerror(-r));
		goto out;
	}
	/* The HTML report's exit code is the verdict's, so a script sees it too. */
	code = res ? exit_code(res->status) : EXIT_VERIFIED;
out:
	if (in && in != stdin)
		fclose(in);
	for (size_t i = 0; i < vo.n_keys; i++)
		EVP_PKEY_free(keys[i].key);
	free(res);
	free(buf);
	return code;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("sfi-audit %s\n", SFID_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "verify") == 0)
		return cmd_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "report") == 0)
		return cmd_report(argc - 1, argv + 1);
	fprintf(stderr, "sfi-audit: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}

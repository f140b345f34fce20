/* sfi-audit: verifies and summarizes exported sfid audit trails, offline.
 *
 * Exit codes: 0 verified; 1 a record is bad (the first one is named); 2 usage or input
 * error; 3 nothing is wrong but the trail is incomplete (records not covered by a
 * signature, licenses without outcome, reconciliation findings). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "audit-verify.h"
#include "config.h"

enum {
	EXIT_VERIFIED = 0,
	EXIT_BAD_RECORD = 1,
	EXIT_USAGE = 2,
	EXIT_INCOMPLETE = 3,
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: sfi-audit verify EXPORT.jsonl --pubkey AUDIT.pem [--quiet]\n"
		   "       sfi-audit report EXPORT.jsonl [--json]\n"
		   "       sfi-audit --version\n"
		   "Exit codes: 0 verified, 1 bad record, 2 usage/input error, 3 incomplete.\n");
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

static int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pubkey", required_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *pubkey = NULL;
	struct verify_result *res;
	EVP_PKEY *key;
	bool quiet = false;
	FILE *f, *in;
	int c, r, code;

	while ((c = getopt_long(argc, argv, "k:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			pubkey = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc || !pubkey) {
		usage(stderr);
		return EXIT_USAGE;
	}
	f = fopen(pubkey, "re");
	if (!f) {
		fprintf(stderr, "sfi-audit: cannot open the audit public key %s: %s\n", pubkey,
			strerror(errno));
		return EXIT_USAGE;
	}
	key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) {
		fprintf(stderr, "sfi-audit: %s is not a PEM EC public key (the token's audit key, "
				"as exported by sfi-hsm)\n", pubkey);
		EVP_PKEY_free(key);
		return EXIT_USAGE;
	}
	in = open_input(argv[optind]);
	res = calloc(1, sizeof(*res));
	if (!in || !res) {
		EVP_PKEY_free(key);
		free(res);
		return EXIT_USAGE;
	}
	r = audit_verify_stream(in, key, res);
	if (in != stdin)
		fclose(in);
	EVP_PKEY_free(key);
	if (r < 0) {
		fprintf(stderr, "sfi-audit: cannot read %s: %s\n", argv[optind], strerror(-r));
		free(res);
		return EXIT_USAGE;
	}

	switch (res->status) {
	case VERIFY_BAD:
		if (res->bad_seq)
			printf("BAD record %" PRIu64 ": %s\n", res->bad_seq, res->message);
		else
			printf("BAD export: %s\n", res->message);
		code = EXIT_BAD_RECORD;
		break;
	case VERIFY_OK:
	case VERIFY_INCOMPLETE:
		if (!quiet)
			printf("chain: records %" PRIu64 "..%" PRIu64 " (%" PRIu64 " records, %" PRIu64
			       " signed checkpoints) link and hash correctly\n"
			       "licenses: %" PRIu64 " spent, %" PRIu64 " installed, %" PRIu64
			       " not installed, %" PRIu64 " unconfirmed; counters contiguous\n",
			       res->first_seq, res->last_seq, res->records, res->checkpoints,
			       res->spends, res->installed, res->not_installed, res->unconfirmed);
		for (size_t i = 0; i < res->n_warnings; i++)
			printf("warning: %s\n", res->warnings[i]);
		if (res->warnings_dropped)
			printf("warning: %zu more warnings not shown\n", res->warnings_dropped);
		printf("%s\n", res->status == VERIFY_OK ? "VERIFIED" :
			       "VERIFIED WITH WARNINGS (incomplete)");
		code = res->status == VERIFY_OK ? EXIT_VERIFIED : EXIT_INCOMPLETE;
		break;
	case _VERIFY_STATUS_MAX:
	default:
		code = EXIT_USAGE;
		break;
	}
	free(res);
	return code;
}

static int cmd_report(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	char err[512] = "";
	bool json = false;
	FILE *in;
	int c, r;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	in = open_input(argv[optind]);
	if (!in)
		return EXIT_USAGE;
	r = audit_report_stream(in, stdout, json, err, sizeof(err));
	if (in != stdin)
		fclose(in);
	if (r < 0) {
		fprintf(stderr, "sfi-audit: cannot summarize %s: %s\n", argv[optind],
			r == -EINVAL ? err : strerror(-r));
		return EXIT_USAGE;
	}
	return 0;
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

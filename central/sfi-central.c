/* sfi-central: sets up the central audit store (docs/central.md).
 *
 *   sfi-central migrate --pg CONNINFO [--password-file FILE]
 *   sfi-central version --pg CONNINFO [--password-file FILE]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "central.h"
#include "config.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: sfi-central migrate|version --pg CONNINFO [--password-file FILE]\n"
		   "  migrate   create or bring the central schema up to version %zu\n"
		   "  version   print the schema version of the server\n",
		central_n_migrations);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "pg", required_argument, NULL, 'p' },
		{ "password-file", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct central_conn_options o = { .application_name = "sfi-central" };
	const char *cmd;
	char err[1024];
	PGconn *c = NULL;
	int opt, r, from = 0, to = 0;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			o.conninfo = optarg;
			break;
		case 'w':
			o.password_file = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("sfi-central %s\n", SFID_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind + 1 != argc || !o.conninfo) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	if (strcmp(cmd, "migrate") != 0 && strcmp(cmd, "version") != 0) {
		usage(stderr);
		return 2;
	}
	r = central_connect(&o, &c, err, sizeof(err));
	if (r == 0 && strcmp(cmd, "migrate") == 0) {
		r = central_migrate(c, &from, &to, err, sizeof(err));
		if (r == 0 && from == to)
			printf("the central schema is at version %d already\n", to);
		else if (r == 0)
			printf("the central schema went from version %d to %d\n", from, to);
	} else if (r == 0) {
		r = central_schema_version(c, &to, err, sizeof(err));
		if (r == 0)
			printf("%d\n", to);
	}
	PQfinish(c);
	if (r < 0) {
		fprintf(stderr, "sfi-central: %s\n", err);
		return 1;
	}
	return 0;
}

/* The central audit store: a PostgreSQL database holding every station's audit trail as its
 * exports carry it (see docs/central.md). This is the libpq side shared by sfid's shipper,
 * sfi-central (migrations) and sfi-audit (verify and report at the centre).
 *
 * Every function that talks to the server returns 0 or a negative errno and writes one
 * sentence to err: -ECONNREFUSED / -ECONNRESET / -ETIMEDOUT when the server cannot be
 * reached or the connection broke (try again later), -EACCES when the role may not do it,
 * -EPROTO when the schema is missing or newer than this build, -ENOSPC when the server is
 * out of disk, -EIO otherwise. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#define CENTRAL_HASH_SIZE 32
#define CENTRAL_REFUSAL_MAX 1024

extern const char *const central_migrations[];
extern const size_t central_n_migrations;

/* How to reach the server. The password is never in conninfo (refused there): it comes
 * from password_file, or from the systemd credential password_credential (read from
 * $CREDENTIALS_DIRECTORY), or from libpq's own ~/.pgpass / passfile=; a file others may
 * read is refused. TLS and other libpq options pass through conninfo unchanged. */
struct central_conn_options {
	const char *conninfo;
	const char *password_file;       /* NULL: none */
	const char *password_credential; /* NULL: none */
	const char *application_name;    /* NULL: "sfid" */
	unsigned connect_timeout_s;      /* 0: 10, unless conninfo sets connect_timeout */
};

/* Connects. Returns 0 and sets *ret_conn (PQfinish() it). */
int central_connect(const struct central_conn_options *o, PGconn **ret_conn, char *err,
		    size_t errlen);

/* Brings the schema up to this build's version in one transaction (under an advisory
 * lock). Needs a role that may create the schema and roles. *ret_from / *ret_to: the
 * versions before and after (may be NULL). */
int central_migrate(PGconn *c, int *ret_from, int *ret_to, char *err, size_t errlen);

/* The schema version of the server (0: no schema). */
int central_schema_version(PGconn *c, int *ret_version, char *err, size_t errlen);

/* What the centre holds of a station: its last record's seq and hash (0 and zeros when
 * none). Only the station's own role may ask. */
int central_head(PGconn *c, const char *station, uint64_t *ret_seq,
		 uint8_t ret_hash[CENTRAL_HASH_SIZE], char *err, size_t errlen);

struct central_push_result {
	uint64_t head;       /* the station's last record held after the push */
	unsigned inserted;   /* lines stored */
	unsigned duplicates; /* lines already held with the same hash (a repeated delivery) */
	bool refused;        /* a line was refused (fork, gap, bad hash): see reason */
	char reason[CENTRAL_REFUSAL_MAX];
};

/* Appends n export lines (consecutive records, in order) to the station's chain in one
 * transaction. A refusal is not an error: it returns 0 with res->refused set and the
 * centre's sentence in res->reason (the lines before the refused one are stored). */
int central_push(PGconn *c, const char *station, const char *const *lines, size_t n,
		 struct central_push_result *res, char *err, size_t errlen);

/* Calls fn for every record of the station held at the centre, in seq order, with its
 * export line (one row at a time: memory stays bounded). fn returning non-zero stops the
 * walk and is returned. */
typedef int (*central_line_fn)(void *userdata, uint64_t seq, const char *line, size_t len);
int central_read_trail(PGconn *c, const char *station, central_line_fn fn, void *userdata,
		       char *err, size_t errlen);

/* Maps a failed result or connection to -errno and writes the sentence; what names the
 * operation ("pushing records"). */
int central_fail(PGconn *c, const PGresult *res, const char *what, char *err, size_t errlen);

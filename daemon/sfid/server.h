/* The control server: a Unix stream socket speaking the control protocol (control.h), with
 * SO_PEERCRED authorization, limits on clients and message size, and watch streams. Runs on
 * the daemon's event_base; the daemon supplies one dispatch callback. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "control.h"

struct event_base;
struct json_object;
struct server;
struct client;

struct server_options {
	const char *path;	/* socket path; ignored when listen_fd >= 0 */
	int listen_fd;		/* an inherited listening socket (socket activation), or -1 */
	gid_t socket_gid;	/* group of the socket file, (gid_t)-1 to keep */
	gid_t operator_gid, supervisor_gid;
	const char *operator_group, *supervisor_group; /* names, for refusal messages */
	unsigned max_clients;	/* operators; supervisors have SERVER_SUPERVISOR_ROOM more */
	size_t max_message;
	/* Deadlines in ms (0: none): a client that is neither watching nor waiting for an
	 * answer sends its next line within idle_ms; a line once started is finished within
	 * line_ms; a closing client reads what was queued for it within close_ms. Past a
	 * deadline the client is closed. */
	unsigned idle_ms, line_ms, close_ms;
};

/* Connections only supervisors (and root) may open beyond max_clients. */
#define SERVER_SUPERVISOR_ROOM 4

/* Descriptors a client may pass with one request (SCM_RIGHTS). */
#define SERVER_FDS_MAX 20

/* Handles an authorized request. Reply now (server_reply_*) or later by client serial. */
typedef void (*server_dispatch_fn)(void *user_data, struct client *c,
				   const struct control_request *req);

/* Creates the socket (mode 0666: roles come from SO_PEERCRED) and starts accepting. Returns 0 or
 * a negative errno with a sentence in reason. */
int server_new(struct event_base *base, const struct server_options *o, server_dispatch_fn fn,
	       void *user_data, struct server **ret, char *reason, size_t reason_size);
/* Closes every client and the socket (removing the file it created). Accepts NULL. */
struct server *server_free(struct server *s);

/* A client's serial number: stable for its lifetime, never reused. */
uint64_t server_client_serial(const struct client *c);
/* Finds a client by serial; NULL when it has gone. */
struct client *server_client_find(struct server *s, uint64_t serial);
enum control_role server_client_role(const struct client *c);
uid_t server_client_uid(const struct client *c);
/* The caller's user name (or uid as text). */
const char *server_client_user(const struct client *c);

/* The index-th descriptor passed with the request being handled, now the caller's to
 * close; -1 if there is none (or it was taken). Those not taken are closed after the
 * request is dispatched. */
int server_client_take_fd(struct client *c, size_t index);

/* Sends a reply; result's reference is taken. */
void server_reply_ok(struct client *c, uint64_t id, struct json_object *result);
void server_reply_error(struct client *c, uint64_t id, enum control_error code,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Makes c a watcher: events go to it tagged with the watch request id. */
void server_watch(struct client *c, uint64_t id);
/* Sends an event to every watcher; data's reference is taken. */
void server_broadcast(struct server *s, const char *event, struct json_object *data);
/* Number of connected clients and watchers. */
unsigned server_n_clients(const struct server *s);
unsigned server_n_watchers(const struct server *s);

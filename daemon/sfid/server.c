/* Control server: see server.h. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <json-c/json.h>

#include "log.h"
#include "sfi-error.h"
#include "server.h"

/* A watcher that does not read its events is dropped beyond this much queued output. */
#define CLIENT_OUTPUT_MAX (4u * 1024 * 1024)
#define CLIENT_GROUPS_MAX 256

struct client {
	struct server *server;
	struct client *next;
	struct bufferevent *bev;
	uint64_t serial;
	uid_t uid;
	pid_t pid;
	char user[64];
	enum control_role role;
	struct control_linebuf lb;
	uint64_t last_id;
	bool watching;
	uint64_t watch_id;
	bool closing;		/* flush, then close */
	/* Deadlines (server_options): one timer, armed for what the client owes next. */
	struct event *ev_deadline;
	enum { DEADLINE_NONE, DEADLINE_IDLE, DEADLINE_LINE, DEADLINE_CLOSE } deadline;
	unsigned awaiting;	/* requests not answered yet (a worker or the recorder has them) */
	/* Read with recvmsg() so that descriptors passed with a request (SCM_RIGHTS) arrive;
	 * they belong to the next request line and are closed after it unless taken. */
	struct event *ev_read;
	int fds[SERVER_FDS_MAX];
	size_t n_fds;
};

struct server {
	struct event_base *base;
	struct evconnlistener *listener;
	char *path;		/* file we created, removed at exit */
	struct server_options o;
	char *operator_group, *supervisor_group;
	server_dispatch_fn fn;
	void *user_data;
	struct client *clients;
	unsigned n_clients;
	uint64_t next_serial;
};

static void client_fds_close(struct client *c)
{
	for (size_t i = 0; i < c->n_fds; i++)
		if (c->fds[i] >= 0)
			close(c->fds[i]);
	c->n_fds = 0;
}

int server_client_take_fd(struct client *c, size_t index)
{
	int fd;

	if (index >= c->n_fds || c->fds[index] < 0)
		return -1;
	fd = c->fds[index];
	c->fds[index] = -1;
	return fd;
}

static void client_free(struct client *c)
{
	struct server *s = c->server;

	for (struct client **p = &s->clients; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	s->n_clients--;
	log_debug("control: client %llu (%s) disconnected", (unsigned long long)c->serial, c->user);
	if (c->ev_deadline)
		event_free(c->ev_deadline);
	if (c->ev_read)
		event_free(c->ev_read);
	client_fds_close(c);
	bufferevent_free(c->bev);
	control_linebuf_done(&c->lb);
	free(c);
}

static void client_deadline_update(struct client *c);

/* Starts closing c: what is queued is flushed, then c is freed; a client that does not read
 * it is freed when the close deadline passes. */
static void client_close(struct client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->watching = false;
	client_deadline_update(c);
}

static void client_send(struct client *c, char *line)
{
	struct evbuffer *out;

	if (!line)
		return;
	out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) > CLIENT_OUTPUT_MAX) {
		/* A reader this far behind would make the daemon grow without bound. */
		if (!c->closing)
			log_warning("control: client %s does not read its replies; disconnecting",
				    c->user);
		client_close(c);
		free(line);
		return;
	}
	evbuffer_add(out, line, strlen(line));
	free(line);
}

void server_reply_ok(struct client *c, uint64_t id, struct json_object *result)
{
	char *line = NULL;

	if (c->awaiting)
		c->awaiting--;
	if (control_reply_ok(id, result, &line) < 0)
		return;
	client_send(c, line);
	client_deadline_update(c);
}

void server_reply_error(struct client *c, uint64_t id, enum control_error code,
			const char *fmt, ...)
{
	char msg[512], *line = NULL;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->awaiting)
		c->awaiting--;
	if (control_reply_error(id, code, msg, &line) < 0)
		return;
	client_send(c, line);
	client_deadline_update(c);
}

static void client_handle_line(struct client *c, const char *line, size_t len)
{
	struct server *s = c->server;
	struct control_request req;
	struct json_object *root = NULL;
	enum control_error code;
	uint64_t id;
	char why[200];
	int r;

	r = control_request_parse(line, len, s->o.max_message, c->last_id, &req, &root, &code, &id,
				  why, sizeof(why));
	if (r < 0) {
		log_debug("control: client %s: refused message: %s", c->user, why);
		server_reply_error(c, id, code, "%s", why);
		return;
	}
	c->last_id = req.id;
	if (!control_authorized(c->role, req.command)) {
		if (c->role == CONTROL_ROLE_NONE)
			server_reply_error(c, req.id, CONTROL_E_DENIED,
					   "user %s is in neither group %s nor %s; ask the line "
					   "supervisor for access", c->user, s->operator_group,
					   s->supervisor_group);
		else
			server_reply_error(c, req.id, CONTROL_E_DENIED,
					   "'%s' needs the %s role (group %s); user %s is an %s",
					   req.command->name, control_role_to_string(req.command->role),
					   s->supervisor_group, c->user, control_role_to_string(c->role));
		json_object_put(root);
		return;
	}
	if (control_request_check_args(&req, why, sizeof(why)) < 0) {
		log_debug("control: client %s: refused %s: %s", c->user, req.command->name, why);
		server_reply_error(c, req.id, CONTROL_E_ARGUMENT, "%s", why);
		json_object_put(root);
		return;
	}
	s->fn(s->user_data, c, &req);
	json_object_put(root);
}

/* Arms the client's one timer for what it owes next: nothing while it watches or waits for
 * an answer; its next line within idle_ms; the rest of a line it started within line_ms
 * (however slowly the bytes trickle in); reading what is queued within close_ms once it is
 * closing. */
static void client_deadline_update(struct client *c)
{
	const struct server_options *o = &c->server->o;
	bool partial = c->lb.len > 0 || c->lb.overflow;
	unsigned ms = 0;
	int next;

	if (c->closing)
		next = DEADLINE_CLOSE;
	else if (partial)
		next = DEADLINE_LINE;
	else if (c->watching || c->awaiting)
		next = DEADLINE_NONE;
	else
		next = DEADLINE_IDLE;
	/* A close or line deadline runs from when it started; an idle one from the last
	 * exchange. */
	if (next == (int)c->deadline && next != DEADLINE_IDLE)
		return;
	c->deadline = next;
	switch (c->deadline) {
	case DEADLINE_NONE:
		break;
	case DEADLINE_IDLE:
		ms = o->idle_ms;
		break;
	case DEADLINE_LINE:
		ms = o->line_ms;
		break;
	case DEADLINE_CLOSE:
		ms = o->close_ms;
		break;
	}
	if (!c->ev_deadline)
		return;
	if (ms == 0) {
		event_del(c->ev_deadline);
		return;
	}
	event_add(c->ev_deadline, &(struct timeval){ .tv_sec = ms / 1000,
						     .tv_usec = (ms % 1000) * 1000 });
}

static void client_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	const struct server_options *o = &c->server->o;

	switch (c->deadline) {
	case DEADLINE_NONE:
		break;
	case DEADLINE_IDLE:
		log_debug("control: client %s idle for %u ms; closing", c->user, o->idle_ms);
		server_reply_error(c, 0, CONTROL_E_BUSY, "no request for %u ms; closing", o->idle_ms);
		client_close(c);
		break;
	case DEADLINE_LINE:
		log_warning("control: client %s left a line unfinished for %u ms; closing", c->user,
			    o->line_ms);
		server_reply_error(c, 0, CONTROL_E_MALFORMED, "line not finished within %u ms; "
				   "closing", o->line_ms);
		client_close(c);
		break;
	case DEADLINE_CLOSE:
		log_warning("control: client %s did not read what was sent to it within %u ms; "
			    "dropped", c->user, o->close_ms);
		client_free(c);
		return;
	}
	if (c->closing && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		client_free(c);
}

/* Handles n bytes the client sent; false when c was freed. */
static bool client_feed(struct client *c, const char *chunk, size_t n)
{
	const char *line;
	size_t len;
	int r;

	if (!c->closing && control_linebuf_append(&c->lb, chunk, n) < 0)
		client_close(c);
	while (!c->closing && (r = control_linebuf_next(&c->lb, &line, &len)) != 0) {
		c->awaiting++;
		if (r == -EMSGSIZE) {
			server_reply_error(c, 0, CONTROL_E_TOO_LARGE,
					   "message over the limit of %zu bytes",
					   c->server->o.max_message);
			continue;
		}
		client_handle_line(c, line, len);
		client_fds_close(c);
	}
	if (c->closing && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		client_free(c);
		return false;
	}
	client_deadline_update(c);
	return true;
}

/* Reads what the client sent, with the descriptors passed along, into the bufferevent's
 * input, then handles it as client_read_cb does. */
static void client_recv_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(SERVER_FDS_MAX * sizeof(int))];
	} ctl;
	char chunk[4096];
	struct iovec iov = { .iov_base = chunk, .iov_len = sizeof(chunk) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	ssize_t n;

	n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	for (struct cmsghdr *h = n >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; h; h = CMSG_NXTHDR(&msg, h)) {
		const unsigned char *data = CMSG_DATA(h);
		size_t k;

		if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
			continue;
		k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int rfd;

			memcpy(&rfd, data + i * sizeof(int), sizeof(int));
			if (c->n_fds < SERVER_FDS_MAX && !c->closing)
				c->fds[c->n_fds++] = rfd;
			else
				close(rfd);
		}
	}
	if (n <= 0) {
		client_free(c);
		return;
	}
	if (msg.msg_flags & MSG_CTRUNC)
		log_warning("control: client %s passed more than %d descriptors; the rest are "
			    "dropped", c->user, SERVER_FDS_MAX);
	client_feed(c, chunk, (size_t)n);
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	if (c->closing)
		client_free(c);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		client_free(c);
}

/* Fills the peer's identity and role from SO_PEERCRED and SO_PEERGROUPS. */
static void client_identify(struct server *s, struct client *c, int fd)
{
	gid_t groups[CLIENT_GROUPS_MAX];
	struct passwd pw, *pwr = NULL;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	size_t n = 0;
	char buf[4096];

	c->role = CONTROL_ROLE_NONE;
	c->uid = (uid_t)-1;
	snprintf(c->user, sizeof(c->user), "unknown");
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return;
	c->uid = cred.uid;
	c->pid = cred.pid;
	if (getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &pwr) == 0 && pwr)
		snprintf(c->user, sizeof(c->user), "%s", pwr->pw_name);
	else
		snprintf(c->user, sizeof(c->user), "uid %u", (unsigned)cred.uid);

	groups[n++] = cred.gid;
#ifdef SO_PEERGROUPS
	len = (socklen_t)((CLIENT_GROUPS_MAX - 1) * sizeof(gid_t));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups + 1, &len) == 0)
		n += len / sizeof(gid_t);
#endif
	c->role = control_role_decide(cred.uid, groups, n, s->o.operator_gid, s->o.supervisor_gid);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
		      int socklen, void *arg)
{
	struct server *s = arg;
	struct client *c;
	unsigned limit;

	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->server = s;
	c->serial = ++s->next_serial;
	control_linebuf_init(&c->lb, s->o.max_message);
	client_identify(s, c, fd);
	c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		close(fd);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, NULL, client_write_cb, client_event_cb, c);
	c->ev_deadline = evtimer_new(s->base, client_deadline_cb, c);
	c->next = s->clients;
	s->clients = c;
	s->n_clients++;

	/* Supervisors (root among them) have room of their own beyond max_clients, so that
	 * operators' connections can never lock them out. */
	limit = s->o.max_clients + (c->role == CONTROL_ROLE_SUPERVISOR ? SERVER_SUPERVISOR_ROOM : 0);
	if (!c->ev_deadline || s->n_clients > limit) {
		log_warning("control: refusing %s: already %u clients (max_clients %u%s)", c->user,
			    s->n_clients - 1, s->o.max_clients,
			    c->role == CONTROL_ROLE_SUPERVISOR ? ", and the supervisors' room" : "");
		server_reply_error(c, 0, CONTROL_E_BUSY,
				   "sfid already serves %u clients; close one and retry",
				   s->n_clients - 1);
		client_close(c);
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	log_debug("control: client %llu: %s (pid %d), role %s", (unsigned long long)c->serial,
		  c->user, (int)c->pid, control_role_to_string(c->role));
	c->ev_read = event_new(s->base, fd, EV_READ | EV_PERSIST, client_recv_cb, c);
	if (!c->ev_read || event_add(c->ev_read, NULL) < 0) {
		client_free(c);
		return;
	}
	bufferevent_enable(c->bev, EV_WRITE);
	client_deadline_update(c);
}

static int server_bind(struct server *s, const struct server_options *o, char *reason,
		       size_t reason_size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t old;
	int fd, r;

	if (strlen(o->path) >= sizeof(sa.sun_path)) {
		sfi_reason(reason, reason_size, "control socket path %s is too long", o->path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, o->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A stale socket file from a killed daemon would make bind fail; a live daemon
	 * answers connect, and then we must not steal its socket. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(fd);
		sfi_reason(reason, reason_size, "another sfid already listens on %s; stop it first", o->path);
		return -EADDRINUSE;
	}
	close(fd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(o->path);
	/* Every local user may connect: sfid decides each caller's role from SO_PEERCRED and
	 * refuses the others with a sentence, so both groups reach it through one socket. */
	old = umask(0111);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(fd, 16) < 0) {
		r = -errno;
		sfi_reason(reason, reason_size, "cannot listen on %s: %s", o->path, strerror(-r));
		close(fd);
		return r;
	}
	if (o->socket_gid != (gid_t)-1 && chown(o->path, (uid_t)-1, o->socket_gid) < 0)
		log_warning("control: cannot give %s to group %u: %m", o->path, (unsigned)o->socket_gid);
	chmod(o->path, 0666);
	s->path = strdup(o->path);
	return fd;
}

int server_new(struct event_base *base, const struct server_options *o, server_dispatch_fn fn,
	       void *user_data, struct server **ret, char *reason, size_t reason_size)
{
	struct server *s;
	int fd;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = base;
	s->o = *o;
	s->o.path = NULL;
	s->operator_group = strdup(o->operator_group ? o->operator_group : "-");
	s->supervisor_group = strdup(o->supervisor_group ? o->supervisor_group : "-");
	s->fn = fn;
	s->user_data = user_data;
	if (o->listen_fd >= 0) {
		fd = o->listen_fd;
		evutil_make_socket_nonblocking(fd);
	} else {
		fd = server_bind(s, o, reason, reason_size);
		if (fd < 0) {
			server_free(s);
			return fd;
		}
	}
	s->listener = evconnlistener_new(base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE |
					 LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!s->listener) {
		close(fd);
		sfi_reason(reason, reason_size, "cannot watch the control socket");
		server_free(s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

struct server *server_free(struct server *s)
{
	if (!s)
		return NULL;
	while (s->clients)
		client_free(s->clients);
	if (s->listener)
		evconnlistener_free(s->listener);
	if (s->path) {
		unlink(s->path);
		free(s->path);
	}
	free(s->operator_group);
	free(s->supervisor_group);
	free(s);
	return NULL;
}

uint64_t server_client_serial(const struct client *c)
{
	return c->serial;
}

struct client *server_client_find(struct server *s, uint64_t serial)
{
	for (struct client *c = s->clients; c; c = c->next)
		if (c->serial == serial && !c->closing)
			return c;
	return NULL;
}

enum control_role server_client_role(const struct client *c)
{
	return c->role;
}

uid_t server_client_uid(const struct client *c)
{
	return c->uid;
}

const char *server_client_user(const struct client *c)
{
	return c->user;
}

void server_watch(struct client *c, uint64_t id)
{
	c->watching = true;
	c->watch_id = id;
	client_deadline_update(c);
}

void server_broadcast(struct server *s, const char *event, struct json_object *data)
{
	for (struct client *c = s->clients; c; c = c->next) {
		char *line = NULL;

		if (!c->watching || c->closing)
			continue;
		if (control_event_format(c->watch_id, event, json_object_get(data), &line) < 0)
			continue;
		client_send(c, line);
	}
	json_object_put(data);
}

unsigned server_n_clients(const struct server *s)
{
	return s->n_clients;
}

unsigned server_n_watchers(const struct server *s)
{
	unsigned n = 0;

	for (const struct client *c = s->clients; c; c = c->next)
		n += c->watching;
	return n;
}

/* The vendor backend: STM32_Programmer_CLI for the certificate, license and install steps.
 * See vendor.h and docs/operations.md. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "db.h"
#include "licensing.h"
#include "log.h"
#include "util.h"
#include "vendor-config.h"
#include "vendor.h"

extern char **environ;

#define VENDOR_ARGS_MAX 20
#define LEDGER_RETRY_MS 50
#define CERT_MAX 4096

/* ---- what the tool's output means ----
 *
 * The lines ST documents for these commands (the user manual UM2237 and AN5054, and logs
 * posted on ST's forum), as far as they decide an outcome; the stand-in prints the same.
 * The first that matches a failed run gives its sentence; a successful run must print its
 * step's success line. Anything else stays in the run's log verbatim. */
struct known_line {
	const char *text;	/* a substring of one output line */
	const char *step;	/* the step it belongs to, NULL: any */
	bool ok;		/* the step's success line */
	bool halt;		/* the line cannot go on: halt it */
	const char *sentence;
};

static const struct known_line known_lines[] = {
	{ "Reading chip Certificate finished", "certificate", true, false, NULL },
	{ "Succeed to generate license", "license", true, false, NULL },
	{ "SFI File Install Operation Success", "install", true, false, NULL },
	{ "HSM counter value", "counter", true, false, NULL },
	{ "Failed to read chip certificate", NULL, false, false,
	  "the chip gave no certificate" },
	{ "counter reached zero", NULL, false, true,
	  "the STM32HSM has no license left (its counter is zero)" },
	{ "Failed to open session with reader slot", NULL, false, true,
	  "no STM32HSM answers in the configured reader slot" },
	{ "Failed to get the HSM counter", NULL, false, true,
	  "the STM32HSM's counter could not be read" },
	{ "Failed to generate license", NULL, false, false,
	  "the STM32HSM gave no license for this chip's certificate" },
	{ "RSS internal system error or License is invalid", NULL, false, false,
	  "the chip refused the license (RSS internal error or invalid license)" },
	{ "Invalid state after SFI install", NULL, false, false,
	  "the chip refused the install (invalid state after SFI install)" },
	{ "Cannot launch RSSe", NULL, false, true,
	  "the RSSe could not be started (check [vendor] rsse)" },
	{ "Failed to get RSSe Status", NULL, false, true,
	  "the RSSe could not be started (check [vendor] rsse)" },
	{ "No STM32 target found", NULL, false, false, "the tool found no chip on the port" },
	{ "No connection", NULL, false, false, "the tool could not connect to the chip" },
	{ "Cannot connect", NULL, false, false, "the tool could not connect to the chip" },
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- processes ---- */

struct vproc;
typedef void (*vproc_done_fn)(struct vproc *p, void *arg);

struct vproc {
	struct vendor *v;
	struct vproc *next;		/* in v->procs */
	pid_t pid;
	int fd;
	struct event *ev_out, *ev_timer, *ev_spawn_failed;
	char *log;
	size_t log_len, log_cap;
	bool out_eof, exited, timed_out, killed;
	int status;			/* exit status; -1 when it did not exit by itself */
	int spawn_errno;
	char step[16];
	char command[2048];
	int64_t started_ms, ended_ms;
	int64_t attempt_id;
	vproc_done_fn done;
	void *arg;
};

/* A ledger task: work on the ledger connection, then done on the loop. */
struct vtask {
	struct vtask *next;
	void (*work)(struct db *ledger, struct vtask *t);
	void (*done)(struct vtask *t, int r);	/* r: -ESHUTDOWN when it never ran */
	void *arg;
	int r;
	struct db_tool_run run;		/* a tool run's record */
	char *run_step, *run_command, *run_outcome, *run_log;
};

struct vendor {
	struct event_base *base;
	const struct vendor_config *cfg;
	struct licensing *licensing;
	void (*job_file)(void *user, int64_t job_id, const char *what, char *out, size_t size);
	void (*halt)(void *user, const char *why);
	void *user;
	char token[DB_TOKEN_SERIAL_MAX + 1];	/* the ledger's name for the reader's HSM */
	char work_dir[1024];
	struct event *ev_chld, *ev_retry;
	struct vproc *procs;
	struct vtask *tasks, **tasks_tail;
	struct vtask *task_running;
	/* The reader's queue: the chip at its head runs its license calls. */
	struct vendor_chip *queue, **queue_tail;
	struct vendor_chip *chips;	/* every chip handle, for vendor_free */
};

enum lic_step {
	LIC_NONE,
	LIC_QUEUED,
	LIC_COUNTER_BEFORE,
	LIC_BEGIN,		/* ledger: settle, reuse or reserve */
	LIC_LICENSE,
	LIC_COUNTER_AFTER,
	LIC_END,		/* ledger: issue, cancel or settle */
};

struct vendor_chip {
	struct vendor *v;
	struct vendor_chip *qnext, *next;
	char name[64];
	char cert_path[1200], lic_path[1200];
	struct vproc *proc;
	vendor_done_fn done;
	void *user;
	bool orphan;		/* its slot let go: freed when its license step ends */
	int64_t attempt_id;
	char uid_hex[2 * OSFI_UID_LEN + 1];
	char port[256];
	unsigned baud;

	/* The license step. */
	enum lic_step lic;
	bool detached;		/* cancelled: settle the ledger, answer nobody */
	struct license_set *set;
	int64_t job_id;
	char image_id_hex[2 * OSFI_ID_LEN + 1];
	int64_t before, after;	/* the reader's counter; -1 unknown */
	int64_t license_id;
	bool reused, issued;
	bool recorded;		/* the license is in the ledger: the chip may install */
	char cause[300];
};

static void vproc_free(struct vproc *p)
{
	struct vproc **pp;

	for (pp = &p->v->procs; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	if (p->ev_out)
		event_free(p->ev_out);
	if (p->ev_timer)
		event_free(p->ev_timer);
	if (p->ev_spawn_failed)
		event_free(p->ev_spawn_failed);
	if (p->fd >= 0)
		close(p->fd);
	free(p->log);
	free(p);
}

static void vproc_read(struct vproc *p)
{
	char buf[4096];

	for (;;) {
		ssize_t n = read(p->fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			p->out_eof = true;
			return;
		}
		if (n < 0)
			return;
		if (p->log_len + (size_t)n > DB_TOOL_LOG_MAX)
			n = (ssize_t)(DB_TOOL_LOG_MAX - p->log_len);
		if (n > 0 && p->log_len + (size_t)n > p->log_cap) {
			size_t cap = p->log_cap ? p->log_cap * 2 : 8192;
			char *l;

			while (cap < p->log_len + (size_t)n)
				cap *= 2;
			l = realloc(p->log, cap);
			if (!l)
				return;
			p->log = l;
			p->log_cap = cap;
		}
		if (n > 0) {
			memcpy(p->log + p->log_len, buf, (size_t)n);
			p->log_len += (size_t)n;
		}
	}
}

/* The run is over when the process was reaped; what it (or a child of it) still writes
 * after that is read once more, then the pipe closes. */
static void vproc_finish(struct vproc *p)
{
	vproc_done_fn done = p->done;

	if (p->fd >= 0)
		vproc_read(p);
	if (p->ev_out)
		event_del(p->ev_out);
	if (p->ev_timer)
		evtimer_del(p->ev_timer);
	p->ended_ms = wall_ms();
	p->done = NULL;
	if (done)
		done(p, p->arg);
	else
		vproc_free(p);
}

static void vproc_out_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vproc *p = arg;

	vproc_read(p);
	if (p->out_eof)
		event_del(p->ev_out);
}

static void vproc_kill(struct vproc *p)
{
	if (p->pid > 0 && !p->exited) {
		kill(-p->pid, SIGKILL);
		kill(p->pid, SIGKILL);
		p->killed = true;
	}
}

static void vproc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vproc *p = arg;

	p->timed_out = true;
	vproc_kill(p);
}

static void vproc_spawn_failed_cb(evutil_socket_t fd, short what, void *arg)
{
	vproc_finish(arg);
}

static void vendor_chld_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vendor *v = arg;
	struct vproc *p, *next;

	for (p = v->procs; p; p = next) {
		int st;

		next = p->next;
		if (p->pid <= 0 || p->exited || waitpid(p->pid, &st, WNOHANG) != p->pid)
			continue;
		p->exited = true;
		p->status = WIFEXITED(st) && !p->killed ? WEXITSTATUS(st) : -1;
		/* Whatever the tool left behind in its process group goes with it. */
		kill(-p->pid, SIGKILL);
		vproc_finish(p);
	}
}

static void command_line(char *out, size_t size, char *const argv[])
{
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; argv[i] && n < size; i++)
		n += (size_t)snprintf(out + n, size - n, "%s%s", i ? " " : "", argv[i]);
}

/* sfid's environment without what systemd gave sfid alone (its credentials folder, where
 * the PIN may be; its notification socket, watchdog and passed sockets): the tool gets no
 * way to a secret from sfid. A static array of pointers into environ, rebuilt per run. */
static char **tool_environment(void)
{
	static const char *const dropped[] = {
		"CREDENTIALS_DIRECTORY=", "NOTIFY_SOCKET=", "WATCHDOG_PID=", "WATCHDOG_USEC=",
		"LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=",
	};
	static char *env[512];
	size_t n = 0;

	for (char **e = environ; *e && n < sizeof(env) / sizeof(env[0]) - 1; e++) {
		bool keep = true;

		for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
			keep &= strncmp(*e, dropped[i], strlen(dropped[i])) != 0;
		if (keep)
			env[n++] = *e;
	}
	env[n] = NULL;
	return env;
}

/* Starts argv[0]; done runs on the loop when it ended (also when it could not start). */
static struct vproc *vproc_run(struct vendor *v, const char *step, char *const argv[],
			       unsigned timeout_ms, vproc_done_fn done, void *arg)
{
	struct vproc *p = calloc(1, sizeof(*p));
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dflt;
	int pipefd[2];
	int r;

	if (!p)
		return NULL;
	p->v = v;
	p->fd = -1;
	p->status = -1;
	p->done = done;
	p->arg = arg;
	p->started_ms = wall_ms();
	snprintf(p->step, sizeof(p->step), "%s", step);
	command_line(p->command, sizeof(p->command), argv);
	p->next = v->procs;
	v->procs = p;
	p->ev_timer = evtimer_new(v->base, vproc_timer_cb, p);
	if (!p->ev_timer || pipe2(pipefd, O_CLOEXEC) < 0) {
		vproc_free(p);
		return NULL;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
	/* Nothing else of sfid's goes to the tool: not the other slots' ports (a serial port
	 * may be open without close-on-exec), not the database or the control socket. */
	posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	sigemptyset(&dflt);
	sigaddset(&dflt, SIGCHLD);
	sigaddset(&dflt, SIGPIPE);
	sigaddset(&dflt, SIGTERM);
	sigaddset(&dflt, SIGINT);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dflt);
	/* Its own process group: a timeout or a stop kills the tool and what it started. */
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
				 POSIX_SPAWN_SETPGROUP);
	r = posix_spawn(&p->pid, argv[0], &fa, &attr, argv, tool_environment());
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(pipefd[1]);
	p->fd = pipefd[0];
	if (r != 0) {
		p->pid = 0;
		p->spawn_errno = r;
		p->exited = true;
		p->ev_spawn_failed = evtimer_new(v->base, vproc_spawn_failed_cb, p);
		if (!p->ev_spawn_failed) {
			vproc_free(p);
			return NULL;
		}
		struct timeval now = { 0 };

		evtimer_add(p->ev_spawn_failed, &now);
		return p;
	}
	fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) | O_NONBLOCK);
	p->ev_out = event_new(v->base, p->fd, EV_READ | EV_PERSIST, vproc_out_cb, p);
	if (p->ev_out)
		event_add(p->ev_out, NULL);
	{
		struct timeval tv = { .tv_sec = timeout_ms / 1000,
				      .tv_usec = (timeout_ms % 1000) * 1000 };

		evtimer_add(p->ev_timer, &tv);
	}
	return p;
}

/* ---- the ledger tasks ---- */

static void vendor_pump(struct vendor *v);

static void vtask_free(struct vtask *t)
{
	free(t->run_step);
	free(t->run_command);
	free(t->run_outcome);
	free(t->run_log);
	free(t);
}

struct vtask_box {
	struct vendor *v;
	struct vtask *t;
};

static void box_work(struct db *ledger, void *arg)
{
	struct vtask_box *b = arg;

	b->t->work(ledger, b->t);
}

static void box_done(void *arg)
{
	struct vtask_box *b = arg;
	struct vendor *v = b->v;
	struct vtask *t = b->t;

	free(b);
	v->task_running = NULL;
	t->done(t, t->r);
	vtask_free(t);
	vendor_pump(v);
}

static void vendor_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	vendor_pump(arg);
}

static void vendor_pump(struct vendor *v)
{
	while (v->tasks && !v->task_running) {
		struct vtask *t = v->tasks;
		struct vtask_box *b = malloc(sizeof(*b));
		int r;

		if (!b) {
			r = -ENOMEM;
		} else {
			*b = (struct vtask_box){ .v = v, .t = t };
			r = licensing_exclusive(v->licensing, box_work, box_done, b);
		}
		if (r == -EBUSY) {
			struct timeval tv = { .tv_usec = LEDGER_RETRY_MS * 1000 };

			free(b);
			evtimer_add(v->ev_retry, &tv);
			return;
		}
		v->tasks = t->next;
		if (!v->tasks)
			v->tasks_tail = &v->tasks;
		t->next = NULL;
		if (r < 0) {
			free(b);
			t->done(t, r);
			vtask_free(t);
			continue;
		}
		v->task_running = t;
	}
}

static void vendor_queue_task(struct vendor *v, struct vtask *t)
{
	*v->tasks_tail = t;
	v->tasks_tail = &t->next;
	vendor_pump(v);
}

static void run_work(struct db *ledger, struct vtask *t)
{
	t->r = db_tool_run(ledger, &t->run, NULL);
	if (t->r < 0)
		log_warning("the run of %s for attempt %" PRId64 " could not be recorded: %s",
			    t->run.step, t->run.attempt_id, db_last_error(ledger));
}

static void run_done(struct vtask *t, int r)
{
}

/* Keeps a finished run in the database (the process handle stays the caller's). */
static void vendor_record_run(struct vendor *v, const struct vproc *p, int64_t attempt_id,
			      const char *outcome)
{
	struct vtask *t = calloc(1, sizeof(*t));

	if (!t)
		return;
	t->work = run_work;
	t->done = run_done;
	t->run_step = strdup(p->step);
	t->run_command = strdup(p->command);
	t->run_outcome = strdup(outcome);
	t->run_log = malloc(p->log_len + 1);
	if (!t->run_step || !t->run_command || !t->run_outcome || !t->run_log) {
		vtask_free(t);
		return;
	}
	memcpy(t->run_log, p->log ? p->log : "", p->log_len);
	t->run_log[p->log_len] = '\0';
	t->run = (struct db_tool_run){
		.attempt_id = attempt_id, .step = t->run_step, .command = t->run_command,
		.exit_status = p->status, .outcome = t->run_outcome, .log = t->run_log,
		.log_len = p->log_len, .started_ms = p->started_ms, .ended_ms = p->ended_ms,
	};
	vendor_queue_task(v, t);
}

/* ---- reading a run ---- */

/* Does the run's log hold a line with text? */
static bool log_has(const struct vproc *p, const char *text)
{
	size_t n = strlen(text);

	if (!p->log || p->log_len < n)
		return false;
	return memmem(p->log, p->log_len, text, n) != NULL;
}

/* The last line of the log that starts with "Error" (or the last non-empty one), for a
 * failure no known line explains: quoted verbatim, cut to fit. */
static void log_last_error(const struct vproc *p, char *out, size_t size)
{
	const char *best = NULL, *last = NULL;
	size_t best_len = 0, last_len = 0, i = 0;

	out[0] = '\0';
	while (p->log && i < p->log_len) {
		const char *line = p->log + i;
		const char *nl = memchr(line, '\n', p->log_len - i);
		size_t len = nl ? (size_t)(nl - line) : p->log_len - i;

		i += len + 1;
		while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
			len--;
		if (!len)
			continue;
		last = line;
		last_len = len;
		if (strncasecmp(line, "error", 5) == 0) {
			best = line;
			best_len = len;
		}
	}
	if (!best) {
		best = last;
		best_len = last_len;
	}
	if (best) {
		size_t n = best_len < size - 1 ? best_len : size - 1;

		for (size_t k = 0; k < n; k++)
			out[k] = (best[k] >= 0x20 && best[k] < 0x7f) ? best[k] : '?';
		out[n] = '\0';
	}
}

/* One sentence for a run that failed; *halt set when the line must stop. Returns 0 when
 * the run succeeded (exit status 0 and its step's success line). */
static int run_outcome(const struct vendor *v, const struct vproc *p, char *out, size_t size,
		       bool *halt)
{
	const char *tool = v->cfg->tool;
	char last[200];

	*halt = false;
	if (p->spawn_errno) {
		snprintf(out, size, "the tool %s cannot be run: %s", tool, strerror(p->spawn_errno));
		*halt = true;
		return -p->spawn_errno;
	}
	if (p->timed_out) {
		snprintf(out, size, "STM32_Programmer_CLI %s did not finish within its timeout; "
			 "it was stopped", p->step);
		return -ETIMEDOUT;
	}
	if (p->killed) {
		snprintf(out, size, "STM32_Programmer_CLI %s was stopped", p->step);
		return -ECANCELED;
	}
	if (p->status == 0) {
		for (size_t i = 0; i < sizeof(known_lines) / sizeof(known_lines[0]); i++)
			if (known_lines[i].ok && strcmp(known_lines[i].step, p->step) == 0) {
				if (log_has(p, known_lines[i].text))
					return 0;
				snprintf(out, size, "STM32_Programmer_CLI %s exited 0 without saying "
					 "\"%s\"", p->step, known_lines[i].text);
				return -EPROTO;
			}
		return 0;
	}
	for (size_t i = 0; i < sizeof(known_lines) / sizeof(known_lines[0]); i++)
		if (!known_lines[i].ok && log_has(p, known_lines[i].text)) {
			snprintf(out, size, "%s (STM32_Programmer_CLI %s, exit status %d)",
				 known_lines[i].sentence, p->step, p->status);
			*halt = known_lines[i].halt;
			return -EIO;
		}
	log_last_error(p, last, sizeof(last));
	snprintf(out, size, "STM32_Programmer_CLI %s failed with exit status %d%s%s%s", p->step,
		 p->status, last[0] ? ": \"" : "", last, last[0] ? "\"" : "");
	return -EIO;
}

/* The counter a -hsmgetcounter run printed ("... counter value : N"), or -1. */
static int64_t run_counter(const struct vproc *p)
{
	size_t i = 0;

	while (p->log && i < p->log_len) {
		const char *line = p->log + i;
		const char *nl = memchr(line, '\n', p->log_len - i);
		size_t len = nl ? (size_t)(nl - line) : p->log_len - i;
		char buf[256];
		char *colon, *end;

		i += len + 1;
		if (len >= sizeof(buf))
			continue;
		memcpy(buf, line, len);
		buf[len] = '\0';
		if (!strcasestr(buf, "counter value") || !(colon = strrchr(buf, ':')))
			continue;
		colon++;
		while (*colon == ' ')
			colon++;
		if (*colon < '0' || *colon > '9')
			continue;
		errno = 0;
		unsigned long long x = strtoull(colon, &end, 10);

		while (*end == ' ' || *end == '\r')
			end++;
		if (errno == 0 && *end == '\0' && x <= UINT32_MAX)
			return (int64_t)x;
	}
	return -1;
}

/* ---- chips ---- */

int vendor_chip_new(struct vendor *v, const char *slot_name, struct vendor_chip **ret)
{
	struct vendor_chip *c = calloc(1, sizeof(*c));
	char dir[1100];

	if (!c)
		return -ENOMEM;
	c->v = v;
	snprintf(c->name, sizeof(c->name), "%s", slot_name);
	snprintf(dir, sizeof(dir), "%s/%s", v->work_dir, slot_name);
	if (mkdir(v->work_dir, 0700) < 0 && errno != EEXIST) {
		int r = -errno;

		log_error("[vendor] work_dir %s cannot be made: %s", v->work_dir, strerror(-r));
		free(c);
		return r;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int r = -errno;

		log_error("%s cannot be made: %s", dir, strerror(-r));
		free(c);
		return r;
	}
	snprintf(c->cert_path, sizeof(c->cert_path), "%s/certificate.bin", dir);
	snprintf(c->lic_path, sizeof(c->lic_path), "%s/license.bin", dir);
	c->next = v->chips;
	v->chips = c;
	*ret = c;
	return 0;
}

static void chip_unlink(struct vendor_chip *c)
{
	struct vendor_chip **pp;

	for (pp = &c->v->chips; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	for (pp = &c->v->queue; *pp; pp = &(*pp)->qnext)
		if (*pp == c) {
			*pp = c->qnext;
			break;
		}
	c->v->queue_tail = &c->v->queue;
	while (*c->v->queue_tail)
		c->v->queue_tail = &(*c->v->queue_tail)->qnext;
}

struct vendor_chip *vendor_chip_free(struct vendor_chip *c)
{
	if (!c)
		return NULL;
	vendor_chip_cancel(c);
	if (c->lic != LIC_NONE && c->lic != LIC_QUEUED) {
		/* Its license step still settles the ledger; it frees the handle then. */
		c->orphan = true;
		return NULL;
	}
	chip_unlink(c);
	free(c);
	return NULL;
}

bool vendor_chip_busy(const struct vendor_chip *c)
{
	return c->proc || (c->lic != LIC_NONE && !c->detached);
}

static void chip_answer(struct vendor_chip *c, int r, const char *cause)
{
	vendor_done_fn done = c->done;

	c->done = NULL;
	if (done && !c->detached)
		done(c->user, r, cause);
}

static void lic_next(struct vendor *v);
static void vendor_record_run(struct vendor *v, const struct vproc *p, int64_t attempt_id,
			      const char *outcome);

static void detached_ended(struct vproc *p, void *arg)
{
	char cause[300];
	bool halt;

	run_outcome(p->v, p, cause, sizeof(cause), &halt);
	vendor_record_run(p->v, p, p->attempt_id, cause);
	vproc_free(p);
}

void vendor_chip_cancel(struct vendor_chip *c)
{
	c->done = NULL;
	if (c->lic == LIC_QUEUED) {
		/* Not started: out of the queue. */
		struct vendor_chip **pp;

		for (pp = &c->v->queue; *pp; pp = &(*pp)->qnext)
			if (*pp == c) {
				*pp = c->qnext;
				break;
			}
		c->v->queue_tail = &c->v->queue;
		while (*c->v->queue_tail)
			c->v->queue_tail = &(*c->v->queue_tail)->qnext;
		c->qnext = NULL;
		c->lic = LIC_NONE;
	} else if (c->lic != LIC_NONE) {
		c->detached = true;
		c->set = NULL;
	}
	if (c->proc) {
		vproc_kill(c->proc);
		if (c->lic == LIC_NONE) {
			/* A certificate or install run: recorded when it ends, without the chip. */
			c->proc->done = detached_ended;
			c->proc->arg = c->v;
			c->proc = NULL;
		}
	}
}

/* ---- the certificate ---- */

static void cert_ended(struct vproc *p, void *arg)
{
	struct vendor_chip *c = arg;
	char cause[300];
	uint8_t buf[CERT_MAX];
	bool halt;
	ssize_t n = -1;
	int fd, r;

	c->proc = NULL;
	r = run_outcome(c->v, p, cause, sizeof(cause), &halt);
	if (r == 0) {
		fd = open(c->cert_path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			n = read(fd, buf, sizeof(buf));
			close(fd);
		}
		if (n <= 0) {
			snprintf(cause, sizeof(cause), "STM32_Programmer_CLI certificate said it read "
				 "the certificate but wrote none to %.150s", c->cert_path);
			r = -ENODATA;
		}
	}
	if (r == 0) {
		struct osfi_cert cert;
		char uid[2 * OSFI_UID_LEN + 1];

		/* A certificate in OSFI's layout names its chip: it must be the one in the slot. */
		if (osfi_cert_decode(buf, (size_t)n, &cert) == 0) {
			sfid_hex(cert.uid, OSFI_UID_LEN, uid);
			if (strcmp(uid, c->uid_hex) != 0) {
				snprintf(cause, sizeof(cause), "the certificate names chip %s, the "
					 "bootloader read UID %s: another chip answered the tool",
					 uid, c->uid_hex);
				r = -EPROTO;
			}
		}
	}
	vendor_record_run(c->v, p, c->attempt_id, r == 0 ? "certificate read" : cause);
	vproc_free(p);
	if (r < 0) {
		if (halt)
			c->v->halt(c->v->user, cause);
		chip_answer(c, r, cause);
		return;
	}
	chip_answer(c, 0, NULL);
}

static void connect_args(struct vendor_chip *c, char *const argv[], size_t *n, char *port_arg,
			 size_t port_size, char *baud_arg, size_t baud_size)
{
	char **a = (char **)argv;

	snprintf(port_arg, port_size, "port=%s", c->port);
	snprintf(baud_arg, baud_size, "br=%u", c->baud);
	a[(*n)++] = (char *)c->v->cfg->tool;
	a[(*n)++] = "-c";
	a[(*n)++] = port_arg;
	a[(*n)++] = baud_arg;
	a[(*n)++] = "P=EVEN";
}

int vendor_certificate(struct vendor_chip *c, const char *port, unsigned baud,
		       const char *uid_hex, int64_t attempt_id, vendor_done_fn done, void *user)
{
	char port_arg[300], baud_arg[32];
	char *argv[VENDOR_ARGS_MAX];
	size_t n = 0;

	if (c->proc || c->lic != LIC_NONE)
		return -EBUSY;
	snprintf(c->port, sizeof(c->port), "%s", port);
	c->baud = baud;
	c->attempt_id = attempt_id;
	if (!uid_hex || strlen(uid_hex) != 2 * OSFI_UID_LEN)
		return -EINVAL;
	snprintf(c->uid_hex, sizeof(c->uid_hex), "%s", uid_hex);
	c->done = done;
	c->user = user;
	unlink(c->cert_path);
	unlink(c->lic_path);
	connect_args(c, argv, &n, port_arg, sizeof(port_arg), baud_arg, sizeof(baud_arg));
	argv[n++] = "-gc";
	argv[n++] = c->cert_path;
	argv[n] = NULL;
	c->proc = vproc_run(c->v, "certificate", argv, c->v->cfg->cert_timeout_ms, cert_ended, c);
	if (c->proc)
		c->proc->attempt_id = c->attempt_id;
	if (!c->proc) {
		c->done = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* ---- the license ---- */

static void lic_run_counter(struct vendor_chip *c);

/* The step ended for the chip: answer it, free an orphan, let the next chip in. */
static void lic_finish(struct vendor_chip *c, int r, const char *cause)
{
	struct vendor *v = c->v;

	if (v->queue == c) {
		v->queue = c->qnext;
		if (!v->queue)
			v->queue_tail = &v->queue;
	}
	c->qnext = NULL;
	c->lic = LIC_NONE;
	if (c->set && r == 0) {
		*c->set = (struct license_set){ .n = 1 };
		c->set->id[0] = c->license_id;
		c->set->reused[0] = c->reused;
		c->set->counted[0] = !c->reused;
		c->set->counter_after[0] = c->after >= 0 ? (uint32_t)c->after : 0;
	}
	c->set = NULL;
	if (c->orphan) {
		chip_unlink(c);
		free(c);
	} else {
		c->detached = false;
		chip_answer(c, r, cause);
	}
	lic_next(v);
}

static void lic_fail(struct vendor_chip *c, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void lic_fail(struct vendor_chip *c, int r, const char *fmt, ...)
{
	char cause[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cause, sizeof(cause), fmt, ap);
	va_end(ap);
	lic_finish(c, r, cause);
}

static void lic_end_work(struct db *ledger, struct vtask *t)
{
	struct vendor_chip *c = t->arg;
	uint8_t record[65536];
	ssize_t n = -1;
	int fd;

	t->r = 0;
	if (c->issued) {
		fd = open(c->lic_path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			n = read(fd, record, sizeof(record));
			close(fd);
		}
		if (n > 0 && c->after >= 0 && c->after + 1 == c->before) {
			t->r = db_ledger_issue(ledger, c->license_id, (uint64_t)c->after, record,
					       (size_t)n);
			c->recorded = t->r == 0;
			if (t->r < 0)
				snprintf(c->cause, sizeof(c->cause), "the license could not be "
					 "recorded: %s", db_last_error(ledger));
			explicit_bzero(record, sizeof(record));
			return;
		}
	}
	if (c->after >= 0 && c->after == c->before && !c->issued) {
		t->r = db_ledger_cancel(ledger, c->license_id, c->cause[0] ? c->cause :
					"the tool gave no license and the counter did not move");
		return;
	}
	/* The counter moved without a license on file, moved by more than one, or cannot be
	 * read: the reconciliation settles the reservation (unconfirmed or void) from the
	 * counter, or leaves it for the next license step when the counter is unknown. */
	if (c->after >= 0) {
		struct db_diff *diffs = NULL;
		size_t nd = 0;

		t->r = db_reconcile(ledger, c->v->token, (uint64_t)c->after, &diffs, &nd);
		free(diffs);
	}
	if (t->r == 0)
		t->r = -EPROTO;
	if (!c->cause[0])
		snprintf(c->cause, sizeof(c->cause), "the reader's counter went from %" PRId64
			 " to %" PRId64 " for one license request; recorded for the audit",
			 c->before, c->after);
}

static void lic_end_done(struct vtask *t, int r)
{
	struct vendor_chip *c = t->arg;

	if (r == 0 && c->recorded) {
		log_fields(LOG_PRIO_INFO, c->name, c->uid_hex, "slot %s chip %s: license %" PRId64
			   " issued by the STM32HSM (reader %u, counter %" PRId64 " -> %" PRId64 ")",
			   c->name, c->uid_hex, c->license_id, c->v->cfg->reader, c->before,
			   c->after);
		lic_finish(c, 0, NULL);
		return;
	}
	if (r == -ESHUTDOWN)
		lic_fail(c, r, "sfid stopped before the license was recorded");
	else
		lic_fail(c, r < 0 ? r : -EIO, "%s", c->cause);
}

static void lic_counter_after_ended(struct vproc *p, void *arg)
{
	struct vendor_chip *c = arg;
	struct vtask *t;
	char cause[300];
	bool halt;

	c->proc = NULL;
	c->after = run_outcome(c->v, p, cause, sizeof(cause), &halt) == 0 ? run_counter(p) : -1;
	vendor_record_run(c->v, p, c->attempt_id, c->after >= 0 ? "counter read" : cause);
	vproc_free(p);
	c->lic = LIC_END;
	t = calloc(1, sizeof(*t));
	if (!t) {
		lic_fail(c, -ENOMEM, "out of memory");
		return;
	}
	t->work = lic_end_work;
	t->done = lic_end_done;
	t->arg = c;
	vendor_queue_task(c->v, t);
}

static void lic_license_ended(struct vproc *p, void *arg)
{
	struct vendor_chip *c = arg;
	bool halt;
	int r;

	c->proc = NULL;
	r = run_outcome(c->v, p, c->cause, sizeof(c->cause), &halt);
	c->issued = r == 0;
	if (r == 0)
		c->cause[0] = '\0';
	vendor_record_run(c->v, p, c->attempt_id, r == 0 ? "license generated" : c->cause);
	vproc_free(p);
	if (halt)
		c->v->halt(c->v->user, c->cause);
	/* Whatever happened, the counter is read again and the reservation settled. */
	c->lic = LIC_COUNTER_AFTER;
	lic_run_counter(c);
}

static void lic_run_license(struct vendor_chip *c)
{
	char slot_arg[32];
	char *argv[VENDOR_ARGS_MAX];
	size_t n = 0;

	snprintf(slot_arg, sizeof(slot_arg), "slot=%u", c->v->cfg->reader);
	argv[n++] = (char *)c->v->cfg->tool;
	argv[n++] = "-hsmglfcb";
	argv[n++] = c->cert_path;
	argv[n++] = c->lic_path;
	argv[n++] = slot_arg;
	argv[n] = NULL;
	unlink(c->lic_path);
	c->lic = LIC_LICENSE;
	c->proc = vproc_run(c->v, "license", argv, c->v->cfg->license_timeout_ms,
			    lic_license_ended, c);
	if (c->proc)
		c->proc->attempt_id = c->attempt_id;
	if (!c->proc) {
		c->cause[0] = '\0';
		c->lic = LIC_COUNTER_AFTER;
		lic_run_counter(c);
	}
}

static void lic_begin_work(struct db *ledger, struct vtask *t)
{
	struct vendor_chip *c = t->arg;
	struct db_license *l = NULL;
	struct db_diff *diffs = NULL;
	size_t nd = 0;
	int r;

	/* A reservation left open (sfid stopped inside a license call) is settled against the
	 * counter now, before anything else is spent. */
	r = db_reconcile(ledger, c->v->token, (uint64_t)c->before, &diffs, &nd);
	free(diffs);
	if (r < 0) {
		snprintf(c->cause, sizeof(c->cause), "the ledger could not be reconciled with the "
			 "reader's counter: %s", db_last_error(ledger));
		t->r = r;
		return;
	}
	r = db_ledger_find_reusable(ledger, c->uid_hex, c->image_id_hex, 0, &l);
	if (r == 0 && strcmp(l->token_serial, c->v->token) != 0) {
		/* Issued by a line token for OSFI: a record the tool cannot install, and the
		 * ledger allows one license per chip and image. */
		snprintf(c->cause, sizeof(c->cause), "the ledger holds a license for this chip "
			 "from token %s (an OSFI slot's), which the vendor tool cannot install; "
			 "install the chip on an OSFI slot", l->token_serial);
		db_license_free(l);
		t->r = -EEXIST;
		return;
	}
	if (r == 0) {
		int fd;

		r = db_ledger_reuse(ledger, l->id, c->attempt_id);
		if (r == 0) {
			fd = open(c->lic_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (fd < 0 || write(fd, l->record, l->record_len) != (ssize_t)l->record_len)
				r = -EIO;
			if (fd >= 0)
				close(fd);
			if (r < 0)
				snprintf(c->cause, sizeof(c->cause), "the license the ledger holds for "
					 "the chip could not be written to %.150s", c->lic_path);
		} else {
			snprintf(c->cause, sizeof(c->cause), "the license the ledger holds for the "
				 "chip could not be reused: %s", db_last_error(ledger));
		}
		c->license_id = l->id;
		c->reused = true;
		db_license_free(l);
		t->r = r;
		return;
	}
	if (r != -ENOENT) {
		snprintf(c->cause, sizeof(c->cause), "the ledger could not be searched: %s",
			 db_last_error(ledger));
		t->r = r;
		return;
	}
	if (c->before == 0) {
		snprintf(c->cause, sizeof(c->cause), "the STM32HSM in reader slot %u has no license "
			 "left (its counter is zero); no license was spent", c->v->cfg->reader);
		t->r = -ENOSPC;
		return;
	}
	{
		struct db_reservation res = {
			.job_id = c->job_id, .attempt_id = c->attempt_id, .chip_uid = c->uid_hex,
			.token_serial = c->v->token, .firmware_id = c->image_id_hex, .target = 0,
			.counter_before = (uint64_t)c->before,
		};

		r = db_ledger_reserve(ledger, &res, &c->license_id);
		if (r < 0)
			snprintf(c->cause, sizeof(c->cause), "the intent to spend a license could not "
				 "be recorded, so none was spent: %s", db_last_error(ledger));
	}
	t->r = r;
}

static void lic_begin_done(struct vtask *t, int r)
{
	struct vendor_chip *c = t->arg;

	if (r == -ESHUTDOWN) {
		lic_fail(c, r, "sfid stopped before the license step; no license was spent");
		return;
	}
	if (r < 0) {
		if (r == -ENOSPC)
			c->v->halt(c->v->user, c->cause);
		lic_fail(c, r, "%s", c->cause);
		return;
	}
	if (c->reused) {
		c->after = c->before;
		log_fields(LOG_PRIO_INFO, c->name, c->uid_hex, "slot %s chip %s: the license issued "
			   "to it earlier (ledger row %" PRId64 ") is sent again", c->name,
			   c->uid_hex, c->license_id);
		lic_finish(c, 0, NULL);
		return;
	}
	if (c->detached) {
		/* Stopped after the intent: nothing was asked of the HSM; the reservation is
		 * void. */
		c->after = c->before;
		c->issued = false;
		snprintf(c->cause, sizeof(c->cause), "stopped before the license call");
		c->lic = LIC_COUNTER_AFTER;
		lic_run_counter(c);
		return;
	}
	lic_run_license(c);
}

static void lic_counter_before_ended(struct vproc *p, void *arg)
{
	struct vendor_chip *c = arg;
	char cause[300];
	struct vtask *t;
	bool halt;
	int r;

	c->proc = NULL;
	r = run_outcome(c->v, p, cause, sizeof(cause), &halt);
	c->before = r == 0 ? run_counter(p) : -1;
	if (r == 0 && c->before < 0) {
		snprintf(cause, sizeof(cause), "STM32_Programmer_CLI counter printed no counter "
			 "value");
		r = -EPROTO;
	}
	vendor_record_run(c->v, p, c->attempt_id, r == 0 ? "counter read" : cause);
	vproc_free(p);
	if (r < 0) {
		if (halt)
			c->v->halt(c->v->user, cause);
		lic_fail(c, r, "%s; no license was spent", cause);
		return;
	}
	if (c->detached) {
		lic_fail(c, -ECANCELED, "stopped");
		return;
	}
	c->lic = LIC_BEGIN;
	t = calloc(1, sizeof(*t));
	if (!t) {
		lic_fail(c, -ENOMEM, "out of memory");
		return;
	}
	t->work = lic_begin_work;
	t->done = lic_begin_done;
	t->arg = c;
	vendor_queue_task(c->v, t);
}

static void lic_run_counter(struct vendor_chip *c)
{
	char slot_arg[32];
	char *argv[VENDOR_ARGS_MAX];
	size_t n = 0;
	vproc_done_fn done = c->lic == LIC_COUNTER_AFTER ? lic_counter_after_ended
							 : lic_counter_before_ended;

	snprintf(slot_arg, sizeof(slot_arg), "slot=%u", c->v->cfg->reader);
	argv[n++] = (char *)c->v->cfg->tool;
	argv[n++] = "-hsmgetcounter";
	argv[n++] = slot_arg;
	argv[n] = NULL;
	c->proc = vproc_run(c->v, "counter", argv, c->v->cfg->license_timeout_ms, done, c);
	if (c->proc)
		c->proc->attempt_id = c->attempt_id;
	if (!c->proc)
		lic_fail(c, -ENOMEM, "out of memory");
}

/* Starts the chip at the head of the reader's queue. */
static void lic_next(struct vendor *v)
{
	struct vendor_chip *c = v->queue;

	if (!c || c->lic != LIC_QUEUED)
		return;
	c->lic = LIC_COUNTER_BEFORE;
	c->before = c->after = -1;
	c->license_id = 0;
	c->reused = c->issued = c->recorded = false;
	c->cause[0] = '\0';
	lic_run_counter(c);
}

int vendor_license(struct vendor_chip *c, const struct job *job, struct license_set *set,
		   vendor_done_fn done, void *user)
{
	struct vendor *v = c->v;

	if (c->proc || c->lic != LIC_NONE || !c->uid_hex[0])
		return -EBUSY;
	c->done = done;
	c->user = user;
	c->set = set;
	c->detached = false;
	c->job_id = job->id;
	snprintf(c->image_id_hex, sizeof(c->image_id_hex), "%s", job->image_id_hex);
	c->lic = LIC_QUEUED;
	c->qnext = NULL;
	*v->queue_tail = c;
	v->queue_tail = &c->qnext;
	lic_next(v);
	return 0;
}

/* ---- the install ---- */

static void install_ended(struct vproc *p, void *arg)
{
	struct vendor_chip *c = arg;
	char cause[300];
	bool halt;
	int r;

	c->proc = NULL;
	r = run_outcome(c->v, p, cause, sizeof(cause), &halt);
	vendor_record_run(c->v, p, c->attempt_id, r == 0 ? "installed" : cause);
	vproc_free(p);
	if (r < 0 && halt)
		c->v->halt(c->v->user, cause);
	chip_answer(c, r, r < 0 ? cause : NULL);
}

int vendor_install(struct vendor_chip *c, const char *port, unsigned baud,
		   const struct job *job, bool global, vendor_done_fn done, void *user)
{
	char port_arg[300], baud_arg[32], image[PATH_MAX], lic[PATH_MAX], mcsv[PATH_MAX];
	char *argv[VENDOR_ARGS_MAX];
	size_t n = 0;

	if (c->proc || c->lic != LIC_NONE)
		return -EBUSY;
	snprintf(c->port, sizeof(c->port), "%s", port);
	c->baud = baud;
	c->done = done;
	c->user = user;
	c->v->job_file(c->v->user, job->id, "sfi", image, sizeof(image));
	if (global)
		c->v->job_file(c->v->user, job->id, "lic", lic, sizeof(lic));
	else
		snprintf(lic, sizeof(lic), "%s", c->lic_path);
	connect_args(c, argv, &n, port_arg, sizeof(port_arg), baud_arg, sizeof(baud_arg));
	argv[n++] = "-sfi";
	argv[n++] = image;
	argv[n++] = "hsm=0";
	argv[n++] = lic;
	argv[n++] = "-rsse";
	argv[n++] = (char *)c->v->cfg->rsse;
	if (job->vendor && job->module_file) {
		/* The job's own module file, as sfid keeps it. */
		c->v->job_file(c->v->user, job->id, "mcsv", mcsv, sizeof(mcsv));
		argv[n++] = "-mcsv";
		argv[n++] = mcsv;
	} else if (c->v->cfg->modules) {
		argv[n++] = "-mcsv";
		argv[n++] = (char *)c->v->cfg->modules;
	}
	argv[n] = NULL;
	c->proc = vproc_run(c->v, "install", argv, c->v->cfg->install_timeout_ms, install_ended, c);
	if (c->proc)
		c->proc->attempt_id = c->attempt_id;
	if (!c->proc) {
		c->done = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* ---- the module ---- */

int vendor_new(const struct vendor_params *p, struct vendor **ret)
{
	struct vendor *v = calloc(1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	v->base = p->base;
	v->cfg = p->cfg;
	v->licensing = p->licensing;
	v->job_file = p->job_file;
	v->halt = p->halt;
	v->user = p->user;
	snprintf(v->work_dir, sizeof(v->work_dir), "%s", p->work_dir);
	v->tasks_tail = &v->tasks;
	v->queue_tail = &v->queue;
	/* The ledger names the reader's HSM by its reader slot: the tool tells no serial. */
	snprintf(v->token, sizeof(v->token), "stm32hsm:reader-%u", p->cfg->reader);
	v->ev_chld = evsignal_new(v->base, SIGCHLD, vendor_chld_cb, v);
	v->ev_retry = evtimer_new(v->base, vendor_retry_cb, v);
	if (!v->ev_chld || !v->ev_retry || evsignal_add(v->ev_chld, NULL) < 0) {
		vendor_free(v);
		return -ENOMEM;
	}
	*ret = v;
	return 0;
}

struct vendor *vendor_free(struct vendor *v)
{
	if (!v)
		return NULL;
	while (v->procs) {
		struct vproc *p = v->procs;

		vproc_kill(p);
		if (p->pid > 0 && !p->exited)
			waitpid(p->pid, NULL, 0);
		p->exited = true;
		p->done = NULL;
		vproc_free(p);
	}
	while (v->tasks) {
		struct vtask *t = v->tasks;

		v->tasks = t->next;
		vtask_free(t);
	}
	while (v->chips) {
		struct vendor_chip *c = v->chips;

		v->chips = c->next;
		free(c);
	}
	if (v->ev_chld)
		event_free(v->ev_chld);
	if (v->ev_retry)
		event_free(v->ev_retry);
	free(v);
	return NULL;
}

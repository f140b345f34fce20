/* Result hook: see hook.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "hook.h"
#include "log.h"

extern char **environ;

struct hook_run {
	struct hooks *h;
	pid_t pid;
	struct event *timer;
};

struct hooks {
	struct event_base *base;
	char *exe;
	unsigned timeout_ms;
	struct event *ev_chld;
	struct hook_run runs[HOOKS_RUNNING_MAX];
	char *queue[HOOKS_QUEUE_MAX];
	size_t head, n_queued;
	unsigned dropped;
};

static void run_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hook_run *run = arg;

	if (run->pid <= 0)
		return;
	log_warning("result hook %s (pid %d) still runs after %u ms: killed", run->h->exe,
		    (int)run->pid, run->h->timeout_ms);
	kill(run->pid, SIGKILL);
}

static int spawn(struct hooks *h, struct hook_run *run, const char *line)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dflt;
	char *argv[] = { h->exe, NULL };
	int p[2], r;
	size_t len = strlen(line);

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], STDIN_FILENO);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	sigemptyset(&dflt);
	sigaddset(&dflt, SIGPIPE);
	sigaddset(&dflt, SIGCHLD);
	sigaddset(&dflt, SIGTERM);
	sigaddset(&dflt, SIGINT);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dflt);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	r = posix_spawn(&run->pid, h->exe, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(p[0]);
	if (r != 0) {
		close(p[1]);
		run->pid = 0;
		return -r;
	}
	/* One line of a few hundred bytes fits the pipe: this never waits. */
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	if (write(p[1], line, len) != (ssize_t)len || write(p[1], "\n", 1) != 1)
		log_warning("result hook %s (pid %d): cannot write its input: %m", h->exe,
			    (int)run->pid);
	close(p[1]);
	run->h = h;
	run->timer = evtimer_new(h->base, run_timeout_cb, run);
	if (run->timer) {
		struct timeval tv = { .tv_sec = h->timeout_ms / 1000,
				      .tv_usec = (h->timeout_ms % 1000) * 1000 };

		evtimer_add(run->timer, &tv);
	}
	return 0;
}

static void start_queued(struct hooks *h)
{
	for (size_t i = 0; i < HOOKS_RUNNING_MAX && h->n_queued > 0; i++) {
		char *line;
		int r;

		if (h->runs[i].pid > 0)
			continue;
		line = h->queue[h->head];
		h->queue[h->head] = NULL;
		h->head = (h->head + 1) % HOOKS_QUEUE_MAX;
		h->n_queued--;
		r = spawn(h, &h->runs[i], line);
		if (r < 0)
			log_warning("cannot run result hook %s: %s", h->exe, strerror(-r));
		free(line);
	}
}

static void reap(struct hooks *h, bool wait_all)
{
	for (size_t i = 0; i < HOOKS_RUNNING_MAX; i++) {
		struct hook_run *run = &h->runs[i];
		int st;
		pid_t r;

		if (run->pid <= 0)
			continue;
		r = waitpid(run->pid, &st, wait_all ? 0 : WNOHANG);
		if (r != run->pid)
			continue;
		if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
			log_warning("result hook %s exited with status %d", h->exe, WEXITSTATUS(st));
		else if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
			log_warning("result hook %s ended by signal %d", h->exe, WTERMSIG(st));
		run->pid = 0;
		if (run->timer)
			event_free(run->timer);
		run->timer = NULL;
	}
}

static void chld_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hooks *h = arg;

	reap(h, false);
	start_queued(h);
}

struct hooks *hooks_new(struct event_base *base, const char *exe, unsigned timeout_ms)
{
	struct hooks *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->base = base;
	h->timeout_ms = timeout_ms;
	h->exe = strdup(exe);
	h->ev_chld = evsignal_new(base, SIGCHLD, chld_cb, h);
	if (!h->exe || !h->ev_chld || evsignal_add(h->ev_chld, NULL) < 0)
		return hooks_free(h);
	return h;
}

struct hooks *hooks_free(struct hooks *h)
{
	if (!h)
		return NULL;
	for (size_t i = 0; i < HOOKS_RUNNING_MAX; i++)
		if (h->runs[i].pid > 0)
			kill(h->runs[i].pid, SIGKILL);
	reap(h, true);
	while (h->n_queued > 0) {
		free(h->queue[h->head]);
		h->head = (h->head + 1) % HOOKS_QUEUE_MAX;
		h->n_queued--;
	}
	if (h->ev_chld)
		event_free(h->ev_chld);
	free(h->exe);
	free(h);
	return NULL;
}

void hooks_result(struct hooks *h, const char *line)
{
	char *copy;

	if (!h)
		return;
	if (h->n_queued == HOOKS_QUEUE_MAX) {
		/* The hook cannot keep up: the oldest line goes (the database has them all). */
		free(h->queue[h->head]);
		h->queue[h->head] = NULL;
		h->head = (h->head + 1) % HOOKS_QUEUE_MAX;
		h->n_queued--;
		if (h->dropped++ % 100 == 0)
			log_warning("result hook %s does not keep up: results dropped (%u so far)",
				    h->exe, h->dropped);
	}
	copy = strdup(line);
	if (!copy)
		return;
	h->queue[(h->head + h->n_queued) % HOOKS_QUEUE_MAX] = copy;
	h->n_queued++;
	start_queued(h);
}

/* The umockdev harness end to end: two emulated FTDI adapters served in this process, real
 * libserialport clients in child processes (one of them built with ASan/UBSan when the build
 * itself is not), the chip side echoing on the PTY masters.
 *
 * Proves: enumeration with USB serials and bus/address; sysfs physical-port binding; 115200
 * 8E1 set by libserialport reaches settings_changed() and reads back as set; DTR/RTS changes
 * are reported; data goes both ways unchanged; unplug makes an open client fail at once and
 * the port disappear; plug brings a working port back.
 *
 * Usage: test-umockdev CLIENT [SANITIZED_CLIENT]. Exit 77 when umockdev's preload library
 * cannot be loaded at all. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "emu-port.h"

#define ECHO_BYTES 4096
#define MAX_EVENTS 512

struct event {
	unsigned index;
	struct emu_port_settings s;
};

static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static struct event events[MAX_EVENTS];
static unsigned n_events;
static unsigned n_dropped;
static int failures;
static volatile pid_t current_child = -1;
static char envfile[256];

#define CHECK(cond, ...)                                                    \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "check failed: %s: ", #cond);       \
			fprintf(stderr, __VA_ARGS__);                       \
			fputc('\n', stderr);                                \
			failures++;                                         \
		}                                                           \
	} while (0)

static void on_settings(void *user_data, unsigned index, const struct emu_port_settings *s)
{
	pthread_mutex_lock(&events_lock);
	if (n_events < MAX_EVENTS)
		events[n_events++] = (struct event) { .index = index, .s = *s };
	else
		n_dropped++;
	pthread_mutex_unlock(&events_lock);
}

static void on_alarm(int sig)
{
	static const char msg[] = "test-umockdev: timed out\n";

	if (current_child > 0)
		kill(current_child, SIGKILL);
	(void) !write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(1);
}

/* Whether umockdev's preload library can be loaded; tried in a child so that its
 * constructors never run in this process. */
static bool preload_available(void)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return false;
	if (pid == 0)
		_exit(dlopen("libumockdev-preload.so.0", RTLD_NOW | RTLD_LOCAL) ? 0 : 1);
	if (waitpid(pid, &status, 0) < 0)
		return false;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Starts `argv` with the KEY=VALUE lines of the env file added to its environment. */
static pid_t spawn_client(char *const argv[])
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;

	FILE *f = fopen(envfile, "re");
	char line[4096];

	if (!f)
		_exit(126);
	while (fgets(line, sizeof(line), f)) {
		char *eq = strchr(line, '=');

		line[strcspn(line, "\n")] = '\0';
		if (!eq)
			continue;
		*eq = '\0';
		setenv(line, eq + 1, 1);
	}
	fclose(f);
	/* A sanitized client wants its runtime first; the preloads come first here. */
	if (!getenv("ASAN_OPTIONS"))
		setenv("ASAN_OPTIONS", "verify_asan_link_order=0", 1);
	execv(argv[0], argv);
	_exit(127);
}

/* Waits up to `ms` for `pid`; returns its exit code, or -1 after killing it. */
static int wait_client(pid_t pid, int ms)
{
	int status;

	for (int waited = 0; waited < ms; waited += 10) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			current_child = -1;
			if (WIFEXITED(status))
				return WEXITSTATUS(status);
			fprintf(stderr, "client killed by signal %d\n", WTERMSIG(status));
			return -1;
		}
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	current_child = -1;
	return -1;
}

/* The chip side: echoes ECHO_BYTES bytes, then unplugs the adapter on 'U'. */
static void serve_echo(struct emu_umockdev *u, unsigned index, int master, pid_t pid)
{
	unsigned char buf[512];
	size_t echoed = 0;
	bool unplugged = false;
	int status;

	while (!unplugged) {
		struct pollfd p = { .fd = master, .events = POLLIN };
		int r = poll(&p, 1, 100);
		ssize_t n;

		if (r < 0 && errno != EINTR)
			break;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			fprintf(stderr, "client %u exited early (status %d)\n", index, status);
			current_child = -1;
			failures++;
			return;
		}
		if (r <= 0 || !(p.revents & POLLIN))
			continue;
		n = read(master, buf, sizeof(buf));
		if (n <= 0)
			continue;
		for (ssize_t i = 0; i < n; i++) {
			if (echoed < ECHO_BYTES) {
				CHECK(write(master, &buf[i], 1) == 1, "echo write: %m");
				echoed++;
			} else {
				CHECK(buf[i] == 'U', "unexpected byte 0x%02x after echo", buf[i]);
				CHECK(emu_umockdev_unplug(u, index) == 0, "unplug %u", index);
				unplugged = true;
				break;
			}
		}
	}
	CHECK(wait_client(pid, 20000) == 0, "client %u failed", index);
}

/* Checks that adapter `index` was reported at 115200 8E1 and then saw DTR and RTS go low
 * and high again, in that order. */
static void check_events(unsigned index)
{
	int configured = -1, dtr_low = -1, rts_low = -1, dtr_high = -1, rts_high = -1;

	pthread_mutex_lock(&events_lock);
	for (unsigned i = 0; i < n_events; i++) {
		const struct emu_port_settings *s = &events[i].s;

		if (events[i].index != index)
			continue;
		if (configured < 0) {
			if (s->baud == 115200 && s->parity == 'E' && s->data_bits == 8 &&
			    s->stop_bits == 1)
				configured = (int) i;
			continue;
		}
		CHECK(s->baud == 115200 && s->parity == 'E' && s->data_bits == 8,
		      "adapter %u: config changed to %u %u%c%u", index, s->baud, s->data_bits,
		      s->parity, s->stop_bits);
		if (!s->dtr && dtr_low < 0)
			dtr_low = (int) i;
		if (!s->rts && rts_low < 0)
			rts_low = (int) i;
		if (s->dtr && dtr_low >= 0 && dtr_high < 0)
			dtr_high = (int) i;
		if (s->rts && rts_low >= 0 && rts_high < 0)
			rts_high = (int) i;
	}
	pthread_mutex_unlock(&events_lock);
	CHECK(configured >= 0, "adapter %u: 115200 8E1 never reported", index);
	CHECK(dtr_low >= 0 && dtr_high > dtr_low, "adapter %u: DTR low/high not reported", index);
	CHECK(rts_low >= 0 && rts_high > rts_low, "adapter %u: RTS low/high not reported", index);
}

static void run_main_client(struct emu_umockdev *u, const char *client, unsigned index,
			    int master)
{
	char idx[16], bytes[16];
	char *argv[] = { (char *) client, "main", idx, bytes, "SFIA", NULL };
	pid_t pid;

	snprintf(idx, sizeof(idx), "%u", index);
	snprintf(bytes, sizeof(bytes), "%d", ECHO_BYTES);
	pid = spawn_client(argv);
	CHECK(pid > 0, "fork: %m");
	if (pid <= 0)
		return;
	current_child = pid;
	serve_echo(u, index, master, pid);
	check_events(index);
}

static void run_replug_client(struct emu_umockdev *u, const char *client, unsigned index)
{
	char idx[16];
	char *argv[] = { (char *) client, "replug", idx, NULL };
	unsigned char b = 0;
	int master = -1;
	pid_t pid;

	CHECK(emu_umockdev_plug(u, index, &master) == 0 && master >= 0, "plug %u", index);
	if (master < 0)
		return;
	snprintf(idx, sizeof(idx), "%u", index);
	pid = spawn_client(argv);
	if (pid <= 0)
		return;
	current_child = pid;
	{
		struct pollfd p = { .fd = master, .events = POLLIN };

		CHECK(poll(&p, 1, 10000) == 1 && read(master, &b, 1) == 1 && b == 'R',
		      "no 'R' from the replugged port (0x%02x)", b);
	}
	CHECK(wait_client(pid, 10000) == 0, "replug client failed");
	pthread_mutex_lock(&events_lock);
	{
		bool seen = false;

		for (unsigned i = 0; i < n_events; i++)
			if (events[i].index == index && events[i].s.baud == 57600)
				seen = true;
		CHECK(seen, "57600 on the replugged port not reported");
	}
	pthread_mutex_unlock(&events_lock);
}

int main(int argc, char **argv)
{
	struct emu_port_ops ops = { .settings_changed = on_settings };
	struct emu_umockdev *u = NULL;
	char dir[] = "/tmp/test-umockdev-XXXXXX";
	int masters[2] = { -1, -1 };
	int r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		fprintf(stderr, "usage: %s CLIENT [SANITIZED_CLIENT]\n", argv[0]);
		return 2;
	}
	if (!preload_available()) {
		printf("SKIP: libumockdev-preload.so.0 cannot be loaded\n");
		return 77;
	}
	signal(SIGALRM, on_alarm);
	alarm(55);

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(envfile, sizeof(envfile), "%s/env", dir);

	r = emu_umockdev_start(2, "SFIA", &ops, masters, &u);
	if (r < 0) {
		fprintf(stderr, "emu_umockdev_start: %s\n", strerror(-r));
		rmdir(dir);
		return 1;
	}
	CHECK(strcmp(emu_umockdev_node(u, 1), "/dev/ttyUSB1") == 0, "node name");
	r = emu_umockdev_write_env(u, envfile);
	CHECK(r == 0, "write_env: %s", strerror(-r));

	if (r == 0) {
		run_main_client(u, argv[1], 0, masters[0]);
		run_replug_client(u, argv[1], 0);
		if (argc > 2 && argv[2][0]) {
			printf("sanitized client on adapter 1\n");
			run_main_client(u, argv[2], 1, masters[1]);
		} else {
			run_main_client(u, argv[1], 1, masters[1]);
		}
	}

	emu_umockdev_stop(u);
	unlink(envfile);
	rmdir(dir);
	CHECK(n_dropped == 0, "%u settings events dropped", n_dropped);
	printf("%u settings events\n", n_events);
	if (failures) {
		fprintf(stderr, "%d checks failed\n", failures);
		return 1;
	}
	printf("umockdev harness: all checks passed\n");
	return 0;
}

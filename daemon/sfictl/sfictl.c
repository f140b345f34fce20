/* sfictl: the operator's client for sfid's control socket (ipc/control.h).
 *
 * Exit codes: 0 success; 1 sfid refused or failed the command; 2 usage error; 3 cannot reach
 * sfid; 4 permission denied; 5 protocol error (unexpected answer); 6 local I/O error
 * (writing the export file); 7 watch ended by --timeout before its --count results. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "config.h"
#include "control.h"
#include "link.h"
#include "osfi.h"
#include "sfi-parse.h"
#include "sfi-time.h"

enum {
	EXIT_OK = 0,
	EXIT_REFUSED = 1,
	EXIT_USAGE = 2,
	EXIT_CONNECT = 3,
	EXIT_DENIED = 4,
	EXIT_PROTOCOL = 5,
	EXIT_IO = 6,
	EXIT_TIMEOUT = 7,
};

#define REPLY_MAX (256u * 1024 * 1024) /* exports come back in one reply */
#define SLOTS_SHOWN 64

static const char *socket_path = "/run/sfid/sfid.sock";
static bool json_out;
static int fd = -1;
static uint64_t next_id = 1;
static struct control_linebuf lb;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: sfictl [--socket PATH] [--json] COMMAND [ARGS]\n"
		"Commands:\n"
		"  status                       station, job and slots\n"
		"  watch [--count N] [--timeout S]  live progress; stop after N results or S seconds\n"
		"  start|stop|pause [SLOT...]   all slots when none is named\n"
		"  history [--limit N] [--job N] [--slot NAME] [--chip UID] [--failed]\n"
		"                               recent attempts, newest first (from the database)\n"
		"  stats [--job N] [--since T] [--until T]  yield, refusals, chips per hour (default: the\n"
		"                               loaded job; --job 0: every job)\n"
		"  ports                        serial ports of the slots\n"
		"  ports --scan                 USB-serial adapters connected to this machine, with\n"
		"                               the port spec naming each (a local scan; no sfid)\n"
		"  job load IMAGE [--modules CSV] [--count N] [--global-license LIC]  (supervisor)\n"
		"      [--image-state Open|Provisioning SERIAL...]  a serial number after the\n"
		"      install (SERIAL: the --serial-... options below; the state the image sets)\n"
		"  job load --plain [--go[=ADDR]] [--count N] FIRMWARE...  plain programming, no\n"
		"      license, not secure: FILE.elf, FILE.hex, FILE.bin@ADDR  (supervisor)\n"
		"      [--serial-counter START[:STEP] --serial-at ADDR --serial-width N\n"
		"       [--serial-format le|be|bcd|ascii|ascii:FMT]]  a per-chip serial number\n"
		"      [--serial-list FILE --serial-at ADDR [--serial-width N]\n"
		"       [--serial-format hex|ascii]]  the next line of FILE for each chip\n"
		"  job load --vendor IMAGE.sfi [--modules MCSV] [--count N] [--global-license LIC]\n"
		"      ST's own SFI through STM32CubeProgrammer, on vendor slots  (supervisor)\n"
		"  job show                     the loaded job (supervisor)\n"
		"  hsm                          token and license counter (supervisor)\n"
		"  config                       configuration in force (supervisor)\n"
		"  export --format csv|jsonl [--job N] [--since T] --out FILE   (supervisor)\n"
		"         T: milliseconds since the epoch, or YYYY-MM-DD[THH:MM:SS] (UTC)\n"
		"Options: --socket PATH (default /run/sfid/sfid.sock), --json (machine-readable\n"
		"output of read commands), --help, --version.\n"
		"Exit codes: 0 ok, 1 refused or failed by sfid, 2 usage, 3 sfid unreachable,\n"
		"4 permission denied, 5 protocol error, 6 local I/O error, 7 watch ended by\n"
		"--timeout before its --count results.\n");
}

/* A whole decimal number in [min, max] for option opt; prints the complaint. */
static int parse_number(const char *opt, const char *s, int64_t min, int64_t max, int64_t *ret)
{
	char *e;
	long long v;

	errno = 0;
	v = strtoll(s, &e, 10);
	if (errno != 0 || e == s || *e != '\0' || v < min || v > max) {
		fprintf(stderr, "sfictl: %s %s: expected a number from %" PRId64 " to %" PRId64 "\n",
			opt, s, min, max);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

static int connect_to(bool quiet)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(socket_path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "sfictl: socket path %s is too long\n", socket_path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		if (fd >= 0)
			close(fd);
		fd = -1;
		if (quiet)
			return r;
		if (r == -EACCES || r == -EPERM)
			/* sfid runs, but this user may not open its socket or the folder. */
			fprintf(stderr, "sfictl: no permission to open sfid's socket %s: %s; ask the "
				"administrator to add you to the operator or supervisor group (see "
				"sfid.conf(5), [control])\n", socket_path, strerror(-r));
		else
			fprintf(stderr, "sfictl: cannot reach sfid at %s: %s (is sfid running? is "
				"this the right --socket?)\n", socket_path, strerror(-r));
		return r;
	}
	control_linebuf_init(&lb, REPLY_MAX);
	return 0;
}

static int connect_daemon(void)
{
	return connect_to(false);
}

/* For watch's reconnection: no message while sfid is away. */
static int quiet_connect(void)
{
	return connect_to(true);
}

/* Descriptors passed with the next request (SCM_RIGHTS), in the order its arguments name. */
#define PASS_FDS_MAX 20
static int pass_fds[PASS_FDS_MAX];
static size_t n_pass_fds;

/* Writes the start of a request with the descriptors to pass attached. */
static ssize_t send_with_fds(const char *buf, size_t len)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(PASS_FDS_MAX * sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			      .msg_controllen = CMSG_SPACE(n_pass_fds * sizeof(int)) };
	struct cmsghdr *h;

	memset(&ctl, 0, sizeof(ctl));
	h = CMSG_FIRSTHDR(&msg);
	if (!h)
		return -1;
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(n_pass_fds * sizeof(int));
	memcpy(CMSG_DATA(h), pass_fds, n_pass_fds * sizeof(int));
	return sendmsg(fd, &msg, MSG_NOSIGNAL);
}

static int send_request(const char *cmd, struct json_object *args, uint64_t *ret_id)
{
	char *line = NULL;
	size_t len, off = 0;
	uint64_t id = next_id++;

	if (control_request_format(id, cmd, args, &line) < 0)
		return -ENOMEM;
	len = strlen(line);
	while (off < len) {
		ssize_t n = n_pass_fds ? send_with_fds(line + off, len - off)
				       : write(fd, line + off, len - off);

		if (n > 0 && n_pass_fds) {
			/* Sent: sfid holds its own copies now. */
			for (size_t i = 0; i < n_pass_fds; i++)
				close(pass_fds[i]);
			n_pass_fds = 0;
		}

		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(line);
			return -errno;
		}
		off += (size_t)n;
	}
	free(line);
	*ret_id = id;
	return 0;
}

/* Reads the next message. timeout_ms < 0 waits forever. Returns 1 with a message, 0 on
 * timeout, or a negative errno (-ECONNRESET when sfid closed the connection). */
static int read_message(int timeout_ms, struct control_reply *ret, struct json_object **ret_root)
{
	const char *line;
	size_t len;
	char buf[65536];
	int r;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		r = control_linebuf_next(&lb, &line, &len);
		if (r == 1) {
			r = control_reply_parse(line, len, REPLY_MAX, ret, ret_root);
			if (r < 0) {
				fprintf(stderr, "sfictl: sfid sent a message sfictl does not understand "
					"(%s)\n", r == -EPROTO ? "other protocol version" : "malformed");
				return -EPROTO;
			}
			return 1;
		}
		if (r < 0)
			return r;
		r = poll(&p, 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : 0;
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -ECONNRESET;
		if (control_linebuf_append(&lb, buf, (size_t)n) < 0)
			return -ENOMEM;
	}
}

static int exit_for_error(const struct control_reply *rep)
{
	fprintf(stderr, "sfictl: %s\n", rep->message);
	if (rep->error == CONTROL_E_DENIED)
		return EXIT_DENIED;
	if (rep->error == CONTROL_E_VERSION || rep->error == CONTROL_E_MALFORMED ||
	    rep->error == CONTROL_E_ORDER)
		return EXIT_PROTOCOL;
	return EXIT_REFUSED;
}

/* Sends one request and waits for its reply (events in between are ignored). */
static int call(const char *cmd, struct json_object *args, struct json_object **ret_result,
		struct json_object **ret_root)
{
	struct control_reply rep;
	struct json_object *root;
	uint64_t id = 0;
	int r;

	r = send_request(cmd, args, &id);
	if (r < 0) {
		fprintf(stderr, "sfictl: cannot send to sfid: %s\n", strerror(-r));
		return EXIT_CONNECT;
	}
	for (;;) {
		r = read_message(-1, &rep, &root);
		if (r <= 0) {
			if (r != -EPROTO)
				fprintf(stderr, "sfictl: sfid closed the connection without answering\n");
			return r == -EPROTO ? EXIT_PROTOCOL : EXIT_CONNECT;
		}
		if (!rep.is_event && (rep.id == id || rep.id == 0))
			break;
		json_object_put(root);
	}
	if (rep.failed) {
		r = exit_for_error(&rep);
		json_object_put(root);
		return r;
	}
	*ret_result = rep.result;
	*ret_root = root;
	return EXIT_OK;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return "";
	return json_object_get_string(v);
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return 0;
	return json_object_get_int64(v);
}

/* --json output: sfid's reply with the version of its schema (docs/control.md), which
 * changes only when a field changes meaning or goes away. */
#define JSON_SCHEMA_VERSION 1

static void print_json(struct json_object *o)
{
	if (json_object_is_type(o, json_type_object))
		json_object_object_add(o, "schema", json_object_new_int(JSON_SCHEMA_VERSION));
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
						       JSON_C_TO_STRING_NOSLASHESCAPE));
}

static void human_bytes(uint64_t n, char *out, size_t size)
{
	if (n >= 10u * 1024 * 1024)
		snprintf(out, size, "%.1f MiB", (double)n / (1024.0 * 1024.0));
	else if (n >= 10u * 1024)
		snprintf(out, size, "%.1f KiB", (double)n / 1024.0);
	else
		snprintf(out, size, "%" PRIu64 " B", n);
}

/* Counter changes sfid did not make (spends outside sfid, refills), as status and hsm
 * list them. */
static void print_counter_changes(struct json_object *o)
{
	struct json_object *a;

	if (!json_object_object_get_ex(o, "counter_changes", &a) ||
	    !json_object_is_type(a, json_type_array) || json_object_array_length(a) == 0)
		return;
	printf("counter changes sfid did not make:\n");
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *c = json_object_array_get_idx(a, i);
		const char *kind = jstr(c, "kind");

		printf("  token %s: %s of %" PRId64 " (counter %" PRId64 ", the ledger expected %"
		       PRId64 "; audit record %" PRId64 ")\n", jstr(c, "token"),
		       strcmp(kind, "unaccounted-spend") == 0 ? "UNACCOUNTED SPEND" :
		       strcmp(kind, "refill") == 0 ? "refill" : "counter raised",
		       jint(c, "count"), jint(c, "actual"), jint(c, "expected"), jint(c, "record"));
	}
}

static void print_status(struct json_object *o)
{
	struct json_object *job, *slots, *v, *e;

	printf("station %s, sfid %s\n", jstr(o, "station"), jstr(o, "version"));
	if (json_object_object_get_ex(o, "halted", &v) && v)
		printf("HALTED: %s\n", json_object_get_string(v));
	if (json_object_object_get_ex(o, "job", &job) && job) {
		printf("job %" PRId64 ": %s, %" PRId64 " installed, %" PRId64 " failed, %" PRId64
		       " refused untouched, %" PRId64 " halted, target %" PRId64 "\n", jint(job, "id"),
		       jstr(job, "image"), jint(job, "installed"), jint(job, "failed"),
		       jint(job, "refused"), jint(job, "halted"), jint(job, "target"));
		if (json_object_get_boolean(json_object_object_get(job, "complete")))
			printf("JOB COMPLETE: %" PRId64 " of %" PRId64 " installed; a supervisor loads "
			       "the next job\n", jint(job, "installed"), jint(job, "target"));
	} else
		printf("no job loaded\n");
	if (json_object_object_get_ex(o, "central", &v) && v) {
		printf("central store: %s, %" PRId64 " record(s) to ship (acknowledged %" PRId64
		       " of %" PRId64 ")", jstr(v, "state"), jint(v, "backlog"),
		       jint(v, "acknowledged_seq"), jint(v, "local_seq"));
		if (json_object_object_get_ex(v, "error", &e) && e)
			printf(": %s", json_object_get_string(e));
		putchar('\n');
	}
	print_counter_changes(o);
	if (!json_object_object_get_ex(o, "slots", &slots))
		return;
	printf("%-10s %-20s %-24s %8s %8s  %s\n", "SLOT", "STATE", "CHIP", "OK", "FAILED", "LAST");
	for (size_t i = 0; i < json_object_array_length(slots); i++) {
		struct json_object *s = json_object_array_get_idx(slots, i);

		printf("%-10s %-20s %-24s %8" PRId64 " %8" PRId64 "  %s\n", jstr(s, "slot"),
		       jstr(s, "state"), jstr(s, "chip"), jint(s, "installed"), jint(s, "failed"),
		       jstr(s, "port_error")[0] ? jstr(s, "port_error") : jstr(s, "last_result"));
	}
}

/* ---- watch ---- */

/* A slot as watch shows it; the last chip's UID and result stay until the next chip. */
struct watch_slot {
	char name[40];
	char state[32];
	char chip[32];
	uint64_t done, total, rate;
	int64_t last_event_ms;		/* monotonic: when sfid last said something of it */
	char last_chip[32];
	char last[200];
	int last_kind;			/* 0 none, 1 ok, 2 failed or refused */
};

static struct watch_slot wslots[SLOTS_SHOWN];
static size_t n_wslots;
static unsigned results_ok, results_failed;
static char w_station[64], w_halt[256], w_message[512];
static bool w_have_job, w_complete, w_color, w_down, w_plain, w_vendor;
static int64_t w_job, w_target, w_installed, w_failed, w_refused, w_halted, w_left = -1,
	w_started_ms, w_job_ms, w_job_ms_at;
static volatile sig_atomic_t w_resized = 1;

static void on_winch(int sig)
{
	(void)sig;
	w_resized = 1;
}

static struct watch_slot *wslot(const char *name)
{
	for (size_t i = 0; i < n_wslots; i++)
		if (strcmp(wslots[i].name, name) == 0)
			return &wslots[i];
	if (n_wslots >= SLOTS_SHOWN || !name[0])
		return NULL;
	memset(&wslots[n_wslots], 0, sizeof(wslots[0]));
	snprintf(wslots[n_wslots].name, sizeof(wslots[0].name), "%s", name);
	wslots[n_wslots].last_event_ms = sfi_monotonic_ms();
	return &wslots[n_wslots++];
}

/* The job totals from a status reply (sfid's counts, not only what this watch saw). */
static void watch_apply_totals(struct json_object *o)
{
	struct json_object *job, *v;

	snprintf(w_station, sizeof(w_station), "%s", jstr(o, "station"));
	w_halt[0] = '\0';
	if (json_object_object_get_ex(o, "halted", &v) && v)
		snprintf(w_halt, sizeof(w_halt), "%s", json_object_get_string(v));
	w_left = json_object_object_get_ex(o, "licenses_left", &v) && v ?
		 json_object_get_int64(v) : -1;
	w_have_job = json_object_object_get_ex(o, "job", &job) && job;
	if (!w_have_job)
		return;
	w_job = jint(job, "id");
	w_plain = strcmp(jstr(job, "kind"), "plain") == 0;
	w_vendor = strcmp(jstr(job, "kind"), "vendor") == 0;
	w_target = jint(job, "target");
	w_installed = jint(job, "installed");
	w_failed = jint(job, "failed");
	w_refused = jint(job, "refused");
	w_halted = jint(job, "halted");
	w_started_ms = jint(job, "started_ms");
	w_complete = json_object_get_boolean(json_object_object_get(job, "complete"));
	/* sfid's clock, and when it was read on ours, for elapsed time and rates. */
	w_job_ms = jint(o, "time_ms");
	w_job_ms_at = sfi_monotonic_ms();
}

static void watch_apply_status(struct json_object *o)
{
	struct json_object *slots;

	watch_apply_totals(o);
	if (!json_object_object_get_ex(o, "slots", &slots))
		return;
	for (size_t i = 0; i < json_object_array_length(slots); i++) {
		struct json_object *s = json_object_array_get_idx(slots, i);
		struct watch_slot *w = wslot(jstr(s, "slot"));

		if (!w)
			continue;
		snprintf(w->state, sizeof(w->state), "%s", jstr(s, "state"));
		snprintf(w->chip, sizeof(w->chip), "%s", jstr(s, "chip"));
		w->done = (uint64_t)jint(s, "done");
		w->total = (uint64_t)jint(s, "total");
		w->last_event_ms = sfi_monotonic_ms();
		/* The last chip's result, from before this watch opened. */
		if (!w->last_kind && jstr(s, "last_result")[0]) {
			snprintf(w->last, sizeof(w->last), "%s", jstr(s, "last_result"));
			snprintf(w->last_chip, sizeof(w->last_chip), "-");
			w->last_kind = strncmp(w->last, "installed", 9) == 0 ? 1 : 2;
		}
	}
}

/* Appends at most the columns left of a line of width cols (no wrap ever). */
struct wline {
	char buf[1024];
	size_t len, cols, width;
};

static void wl_add(struct wline *l, const char *color, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void wl_add(struct wline *l, const char *color, const char *fmt, ...)
{
	char text[512];
	size_t n;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* Printable ASCII only: a multi-byte or control character would break the count. */
	for (char *p = text; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	n = strlen(text);
	if (l->cols + n > l->width)
		n = l->width > l->cols ? l->width - l->cols : 0;
	if (n == 0)
		return;
	if (color && w_color)
		l->len += (size_t)snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "%s", color);
	if (l->len + n < sizeof(l->buf)) {
		memcpy(l->buf + l->len, text, n);
		l->len += n;
		l->buf[l->len] = '\0';
	}
	l->cols += n;
	if (color && w_color)
		l->len += (size_t)snprintf(l->buf + l->len, sizeof(l->buf) - l->len, "\033[0m");
}

static void wl_pad(struct wline *l, size_t to)
{
	while (l->cols < to && l->cols < l->width && l->len + 1 < sizeof(l->buf)) {
		l->buf[l->len++] = ' ';
		l->buf[l->len] = '\0';
		l->cols++;
	}
}

#define C_RED "\033[1;31m"
#define C_GREEN "\033[32m"
#define C_YELLOW "\033[33m"
#define C_BOLD "\033[1m"

static void hms(int64_t ms, char *out, size_t size)
{
	unsigned s = ms > 0 ? (unsigned)(ms / 1000 % 3600000) : 0;

	snprintf(out, size, "%u:%02u:%02u", s / 3600 % 1000, s / 60 % 60, s % 60);
}

/* A busy slot sfid has said nothing of for this long is shown as not answering. */
#define STALL_MS 3000

static bool state_busy(const char *st)
{
	return strcmp(st, "identifying") == 0 || strcmp(st, "certificate") == 0 ||
	       strcmp(st, "license") == 0 || strcmp(st, "installing") == 0 ||
	       strcmp(st, "finalizing") == 0 || strcmp(st, "verifying") == 0;
}

/* One slot in a cell of the given width. */
static void watch_cell(struct wline *l, const struct watch_slot *w, size_t width, int64_t now)
{
	size_t start = l->cols, end = start + width - 1;
	struct wline c = { .width = width - 1 };
	int64_t quiet = now - w->last_event_ms;

	wl_add(&c, C_BOLD, "%-4s", w->name);
	if (strcmp(w->state, "installing") == 0 && quiet < STALL_MS) {
		char bar[11], rate[24];
		unsigned pct = w->total ? (unsigned)(w->done * 100 / w->total) : 0;

		for (unsigned k = 0; k < 10; k++)
			bar[k] = k < pct / 10 ? '#' : '.';
		bar[10] = '\0';
		human_bytes(w->rate, rate, sizeof(rate));
		wl_add(&c, NULL, " %s %3u%% %s/s", bar, pct, rate);
	} else if (state_busy(w->state) && quiet >= STALL_MS) {
		wl_add(&c, C_YELLOW, " %s: no answer for %" PRId64 " s", w->state, quiet / 1000);
	} else if (state_busy(w->state)) {
		wl_add(&c, NULL, " %s %.8s", w->state, w->chip);
	} else {
		const char *st = strcmp(w->state, "waiting-for-chip") == 0 ? "wait" :
				 strcmp(w->state, "waiting-for-removal") == 0 ? "remove" :
				 strcmp(w->state, "no-port") == 0 ? "NO PORT" : w->state;

		wl_add(&c, strcmp(st, "NO PORT") == 0 ? C_RED : NULL, " %-6s", st);
		if (w->last_kind)
			wl_add(&c, w->last_kind == 1 ? C_GREEN : C_RED, " %.8s %s", w->last_chip,
			       w->last);
	}
	/* The cell is built apart so that its colour codes do not count as columns. */
	if (l->len + c.len < sizeof(l->buf)) {
		memcpy(l->buf + l->len, c.buf, c.len + 1);
		l->len += c.len;
		l->cols += c.cols;
	}
	wl_pad(l, end + 1);
}

static void watch_redraw(void)
{
	struct winsize ws = { 0 };
	size_t width = 80, height = 24, cols, rows, cell;
	int64_t now = sfi_monotonic_ms(), elapsed = 0, sfid_now;
	char el[24], eta[24], when[40];
	double per_hour = 0;
	struct wline l;
	time_t t;
	struct tm tm;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
		width = ws.ws_col;
		height = ws.ws_row;
	}
	w_resized = 0;
	/* Columns of slots so that the header (3 lines), the slots and the message line fit. */
	cols = 1;
	while (cols < 8 && n_wslots > 0 && (n_wslots + cols - 1) / cols + 4 > height &&
	       width / (cols + 1) >= 24)
		cols++;
	rows = (n_wslots + cols - 1) / cols;
	cell = width / cols;

	printf("\033[H");
	/* Header: station, the job's totals from sfid, rates, the time with its zone. */
	l = (struct wline){ .width = width };
	t = time(NULL);
	localtime_r(&t, &tm);
	strftime(when, sizeof(when), "%H:%M:%S %Z", &tm);
	if (w_have_job) {
		wl_add(&l, C_BOLD, "%s job %" PRId64 "%s:", w_station, w_job,
		       w_plain ? " (PLAIN, not secure)" : w_vendor ? " (vendor: ST SFI)" : "");
		if (w_target)
			wl_add(&l, C_GREEN, " %" PRId64 "/%" PRId64 " %s", w_installed, w_target,
			       w_plain ? "written" : "installed");
		else
			wl_add(&l, C_GREEN, " %" PRId64 " %s", w_installed,
			       w_plain ? "written" : "installed");
		wl_add(&l, w_failed ? C_RED : NULL, ", %" PRId64 " failed", w_failed);
		wl_add(&l, NULL, ", %" PRId64 " refused untouched", w_refused);
		if (w_halted)
			wl_add(&l, NULL, ", %" PRId64 " halted", w_halted);
	} else {
		wl_add(&l, C_BOLD, "%s: no job loaded", w_station);
	}
	printf("%s\033[K\n", l.buf);

	l = (struct wline){ .width = width };
	sfid_now = w_job_ms + (now - w_job_ms_at);
	if (w_have_job && w_started_ms > 0 && sfid_now > w_started_ms) {
		elapsed = sfid_now - w_started_ms;
		per_hour = (double)w_installed * 3600000.0 / (double)elapsed;
	}
	hms(elapsed, el, sizeof(el));
	if (w_complete)
		snprintf(eta, sizeof(eta), "done");
	else if (w_target && per_hour > 0)
		hms((int64_t)((double)(w_target - w_installed) / per_hour * 3600000.0), eta,
		    sizeof(eta));
	else
		snprintf(eta, sizeof(eta), "-");
	if (w_left >= 0)
		wl_add(&l, NULL, "licenses left %" PRId64 ", ", w_left);
	wl_add(&l, NULL, "%.1f chips/h, elapsed %s, ETA %s, %s", per_hour, el, eta, when);
	printf("%s\033[K\n", l.buf);

	l = (struct wline){ .width = width };
	if (w_down)
		wl_add(&l, C_RED, "sfid does not answer: reconnecting...");
	else if (w_halt[0])
		wl_add(&l, C_RED, "HALTED: %s", w_halt);
	else if (w_complete)
		wl_add(&l, C_GREEN, "JOB COMPLETE: %" PRId64 " of %" PRId64 " installed", w_installed,
		       w_target);
	printf("%s\033[K\n", l.buf);

	for (size_t r = 0; r < rows && r + 4 < height + 1; r++) {
		l = (struct wline){ .width = width };
		for (size_t k = 0; k < cols; k++) {
			size_t i = k * rows + r;

			if (i < n_wslots)
				watch_cell(&l, &wslots[i], cell, now);
		}
		printf("%s\033[K\n", l.buf);
	}
	l = (struct wline){ .width = width };
	wl_add(&l, NULL, "%s", w_message);
	/* No newline after the last line: the screen never scrolls. */
	printf("%s\033[K\033[J", l.buf);
	fflush(stdout);
}

/* One event of the watch stream: slot tables, totals and (off a terminal) one line. */
static void watch_event(const struct control_reply *rep, bool tty, bool *want_status)
{
	struct json_object *o = rep->result;
	struct watch_slot *w = wslot(jstr(o, "slot"));
	bool is_result = strcmp(rep->event, "result") == 0;

	if (w)
		w->last_event_ms = sfi_monotonic_ms();
	if (is_result) {
		if (strcmp(jstr(o, "result"), "ok") == 0)
			results_ok++;
		else
			results_failed++;
		*want_status = true;
	}
	if (w && strcmp(rep->event, "state") == 0) {
		snprintf(w->state, sizeof(w->state), "%s", jstr(o, "state"));
		snprintf(w->chip, sizeof(w->chip), "%s", jstr(o, "chip"));
		if (strcmp(w->state, "installing") == 0)
			w->done = w->rate = 0;
		if (!tty && !json_out)
			printf("slot %s chip %s: %s%s%s\n", w->name, w->chip[0] ? w->chip : "-",
			       w->state, jstr(o, "error")[0] ? ": " : "", jstr(o, "error"));
	} else if (w && strcmp(rep->event, "progress") == 0) {
		w->done = (uint64_t)jint(o, "done");
		w->total = (uint64_t)jint(o, "total");
		w->rate = (uint64_t)jint(o, "rate");
	} else if (w && is_result) {
		char b[24];
		bool ok = strcmp(jstr(o, "result"), "ok") == 0;

		human_bytes((uint64_t)jint(o, "bytes"), b, sizeof(b));
		snprintf(w->last_chip, sizeof(w->last_chip), "%s", jstr(o, "chip")[0] ?
			 jstr(o, "chip") : "-");
		w->last_kind = ok ? 1 : 2;
		if (ok)
			snprintf(w->last, sizeof(w->last), "ok %.1f s%s%s",
				 (double)jint(o, "duration_ms") / 1000.0,
				 json_object_get_boolean(json_object_object_get(o, "license_reused")) ?
				 " reused" : "",
				 strcmp(jstr(o, "kind"), "plain") == 0 ? " plain" :
				 strcmp(jstr(o, "kind"), "vendor") == 0 ? " vendor" : "");
		else
			snprintf(w->last, sizeof(w->last), "%s at %s: %s", jstr(o, "result"),
				 jstr(o, "step"), jstr(o, "error"));
		snprintf(w_message, sizeof(w_message), "%s %s: %s", w->name, w->last_chip, w->last);
		if (!tty && !json_out)
			printf("slot %s chip %s: %s\n", w->name, w->last_chip, w->last);
	} else if (strcmp(rep->event, "halt") == 0) {
		snprintf(w_halt, sizeof(w_halt), "%s", jstr(o, "reason"));
		if (!tty && !json_out)
			printf("LINE HALTED: %s\n", jstr(o, "reason"));
	} else if (strcmp(rep->event, "resume") == 0) {
		w_halt[0] = '\0';
		snprintf(w_message, sizeof(w_message), "line resumed (the halt was: %s)",
			 jstr(o, "cleared"));
		if (!tty && !json_out)
			printf("LINE RESUMED: the halt is cleared (it was: %s)\n", jstr(o, "cleared"));
	} else if (strcmp(rep->event, "job-complete") == 0) {
		w_complete = true;
		*want_status = true;
		if (!tty && !json_out)
			printf("JOB COMPLETE: job %" PRId64 ", %" PRId64 " of %" PRId64 " installed\n",
			       jint(o, "job"), jint(o, "installed"), jint(o, "target"));
	} else if (strcmp(rep->event, "job") == 0) {
		*want_status = true;
	}
	if (!tty && !json_out)
		fflush(stdout);
}

static int watch_subscribe(uint64_t *ret_id)
{
	struct json_object *root, *result;
	int r;

	r = call("watch", NULL, &result, &root);
	if (r != EXIT_OK)
		return r;
	if (json_out) {
		json_object_object_add(result, "schema", json_object_new_int(JSON_SCHEMA_VERSION));
		printf("%s\n", json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN));
	}
	watch_apply_status(result);
	json_object_put(root);
	*ret_id = next_id - 1;
	return EXIT_OK;
}

/* After sfid went away: connects again every second until it answers (or the deadline). */
static int watch_reconnect(bool tty, int64_t deadline)
{
	uint64_t id;

	close(fd);
	fd = -1;
	control_linebuf_done(&lb);
	w_down = true;
	if (!tty)
		fprintf(stderr, "sfictl: sfid closed the connection; reconnecting\n");
	for (;;) {
		if (tty)
			watch_redraw();
		if (deadline && sfi_monotonic_ms() >= deadline)
			return -ETIMEDOUT;
		sleep(1);
		if (quiet_connect() == 0 && watch_subscribe(&id) == EXIT_OK) {
			w_down = false;
			return 0;
		}
		if (fd >= 0) {
			close(fd);
			fd = -1;
			control_linebuf_done(&lb);
		}
	}
}

static int cmd_watch(int count, int timeout_s)
{
	struct json_object *root;
	struct control_reply rep;
	bool tty = isatty(STDOUT_FILENO) && !json_out;
	int64_t deadline = 0, last_status = 0;
	uint64_t status_id = 0, id;
	bool want_status = false;
	int r;

	r = watch_subscribe(&id);
	if (r != EXIT_OK)
		return r;
	if (tty) {
		const char *nc = getenv("NO_COLOR");

		w_color = !nc || !nc[0];
		signal(SIGWINCH, on_winch);
		/* The alternate screen: the shell's lines come back when watch ends. */
		printf("\033[?1049h\033[?25l\033[2J");
		watch_redraw();
	} else if (!json_out && w_halt[0]) {
		printf("LINE HALTED: %s\n", w_halt);
	}
	if (timeout_s > 0)
		deadline = sfi_monotonic_ms() + (int64_t)timeout_s * 1000;
	for (;;) {
		int64_t now = sfi_monotonic_ms();
		int wait = tty ? 500 : -1;

		if (count > 0 && (int)(results_ok + results_failed) >= count)
			break;
		if (deadline && now >= deadline)
			break;
		if (deadline && (wait < 0 || deadline - now < wait))
			wait = (int)(deadline - now);
		/* Totals come from sfid (at most once a second): they count what happened
		 * before this watch and in other watches. */
		if (want_status && !status_id && now - last_status >= 1000) {
			if (send_request("status", NULL, &status_id) < 0)
				status_id = 0;
			last_status = now;
			want_status = false;
		}
		r = read_message(wait, &rep, &root);
		if (r == 0) {
			if (tty)
				watch_redraw();
			continue;
		}
		if (r < 0) {
			if (r == -EPROTO)
				return EXIT_PROTOCOL;
			status_id = 0;
			if (watch_reconnect(tty, deadline) < 0)
				break;
			if (tty)
				watch_redraw();
			continue;
		}
		if (!rep.is_event) {
			if (rep.id == status_id && !rep.failed)
				watch_apply_totals(rep.result);
			if (rep.id == status_id)
				status_id = 0;
			json_object_put(root);
			if (tty)
				watch_redraw();
			continue;
		}
		if (json_out) {
			printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
			fflush(stdout);
		}
		watch_event(&rep, tty, &want_status);
		json_object_put(root);
		if (tty && (w_resized || strcmp(rep.event, "progress") != 0 ||
			    sfi_monotonic_ms() - last_status >= 0))
			watch_redraw();
	}
	if (tty)
		printf("\033[?25h\033[?1049l");
	/* --count results or --timeout seconds: both are the end asked for. */
	if (count > 0 && (int)(results_ok + results_failed) < count)
		fprintf(stderr, "sfictl: watch ended after %d s with %u of %d results\n", timeout_s,
			results_ok + results_failed, count);
	fflush(stdout);
	return count > 0 && (int)(results_ok + results_failed) < count ? EXIT_TIMEOUT : EXIT_OK;
}

static int parse_since(const char *s, int64_t *ret)
{
	struct tm tm = { 0 };
	const char *end;
	char *e;
	long long v;

	errno = 0;
	v = strtoll(s, &e, 10);
	if (errno == 0 && *e == '\0' && v >= 0) {
		*ret = v;
		return 0;
	}
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end || *end) {
		memset(&tm, 0, sizeof(tm));
		end = strptime(s, "%Y-%m-%d", &tm);
	}
	if (!end || *end)
		return -EINVAL;
	*ret = (int64_t)timegm(&tm) * 1000;
	return 0;
}

/* Opens an export file for writing, private (0600) whatever the umask: the audit trail
 * names chips, users and licenses. A device (-o /dev/null) is left as it is. */
static FILE *open_private(const char *path)
{
	struct stat st;
	FILE *f;
	int k;

	k = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
	if (k < 0)
		return NULL;
	if (fstat(k, &st) < 0 || (S_ISREG(st.st_mode) && fchmod(k, 0600) < 0) ||
	    !(f = fdopen(k, "w"))) {
		int e = errno;

		close(k);
		errno = e;
		return NULL;
	}
	return f;
}

static int cmd_export(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "job", required_argument, NULL, 'j' },
		{ "since", required_argument, NULL, 's' },
		{ "out", required_argument, NULL, 'o' },
		{ 0 }
	};
	const char *format = NULL, *out = NULL;
	struct json_object *args = json_object_new_object(), *result, *root, *data;
	int64_t since;
	FILE *f;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "f:j:s:o:", opts, NULL)) >= 0) {
		switch (c) {
		case 'f':
			format = optarg;
			break;
		case 'j':
			json_object_object_add(args, "job", json_object_new_int64(atoll(optarg)));
			break;
		case 's':
			if (parse_since(optarg, &since) < 0) {
				fprintf(stderr, "sfictl: --since %s: use milliseconds since the epoch or "
					"YYYY-MM-DD[THH:MM:SS]\n", optarg);
				json_object_put(args);
				return EXIT_USAGE;
			}
			json_object_object_add(args, "since_ms", json_object_new_int64(since));
			break;
		case 'o':
			out = optarg;
			break;
		default:
			json_object_put(args);
			return EXIT_USAGE;
		}
	}
	if (!format || !out || (strcmp(format, "csv") != 0 && strcmp(format, "jsonl") != 0)) {
		fprintf(stderr, "sfictl: export needs --format csv|jsonl and --out FILE\n");
		json_object_put(args);
		return EXIT_USAGE;
	}
	json_object_object_add(args, "format", json_object_new_string(format));
	r = call("export", args, &result, &root);
	if (r != EXIT_OK)
		return r;
	if (!json_object_object_get_ex(result, "data", &data)) {
		json_object_put(root);
		return EXIT_PROTOCOL;
	}
	f = strcmp(out, "-") == 0 ? stdout : open_private(out);
	if (!f || fwrite(json_object_get_string(data), 1, (size_t)json_object_get_string_len(data),
			 f) != (size_t)json_object_get_string_len(data) ||
	    (f != stdout && fclose(f) != 0)) {
		fprintf(stderr, "sfictl: cannot write %s: %s\n", out, strerror(errno));
		json_object_put(root);
		return EXIT_IO;
	}
	if (f != stdout)
		fprintf(stderr, "sfictl: wrote %d bytes of %s to %s\n",
			json_object_get_string_len(data), format, out);
	json_object_put(root);
	return EXIT_OK;
}

static int simple(const char *cmd, struct json_object *args, void (*print)(struct json_object *))
{
	struct json_object *result, *root;
	int r;

	r = call(cmd, args, &result, &root);
	if (r != EXIT_OK)
		return r;
	if (json_out || !print)
		print_json(result);
	else
		print(result);
	json_object_put(root);
	return EXIT_OK;
}

static void print_history(struct json_object *o)
{
	struct json_object *a;

	if (!json_object_object_get_ex(o, "attempts", &a))
		return;
	if (json_object_array_length(a) == 0) {
		printf("no attempts recorded\n");
		return;
	}
	printf("%-23s %5s %-8s %-24s %-8s %-12s %10s %9s  %s\n", "TIME", "JOB", "SLOT", "CHIP",
	       "RESULT", "STEP", "BYTES", "SECONDS", "CAUSE");
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *h = json_object_array_get_idx(a, i);
		time_t t = (time_t)(jint(h, "time_ms") / 1000);
		char when[32] = "-";
		struct tm tm;
		bool reused = json_object_get_boolean(json_object_object_get(h, "license_reused"));

		/* On screen: local time with its zone (the data keep UTC). */
		if (t > 0 && localtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", &tm);
		printf("%-23s %5" PRId64 " %-8s %-24s %-8s %-12s %10" PRId64 " %9.2f", when,
		       jint(h, "job"), jstr(h, "slot"), jstr(h, "chip")[0] ? jstr(h, "chip") : "-",
		       jstr(h, "result"), jstr(h, "step"), jint(h, "bytes"),
		       (double)jint(h, "duration_ms") / 1000.0);
		if (jstr(h, "error")[0])
			printf("  %s", jstr(h, "error"));
		printf("%s\n", reused ? "  (license reused)" : "");
	}
}

static double jdouble(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return 0.0;
	return json_object_get_double(v);
}

static void print_stats(struct json_object *o)
{
	struct json_object *slots, *steps, *causes, *job;

	if (json_object_object_get_ex(o, "job", &job) && job)
		printf("job %" PRId64 ": ", json_object_get_int64(job));
	else
		printf("every job: ");
	printf("installed %" PRId64 ", failed %" PRId64 ", yield %.1f %%\n", jint(o, "ok"),
	       jint(o, "failed"), jdouble(o, "yield") * 100);
	printf("refused untouched %" PRId64 " chips, halted %" PRId64 ", already installed %"
	       PRId64 " (not in the yield)\n", jint(o, "refused"), jint(o, "halted"),
	       jint(o, "already_installed"));
	if (jint(o, "ok") > 0)
		printf("%.1f chips per hour, mean cycle %.1f s (chip answering to installed)\n",
		       jdouble(o, "chips_per_hour"), (double)jint(o, "mean_cycle_ms") / 1000.0);
	if (json_object_object_get_ex(o, "slots", &slots)) {
		printf("%-10s %8s %8s %8s %12s\n", "SLOT", "OK", "FAILED", "YIELD", "BYTES");
		json_object_object_foreach(slots, name, sl) {
			char b[24];

			human_bytes((uint64_t)jint(sl, "bytes"), b, sizeof(b));
			printf("%-10s %8" PRId64 " %8" PRId64 " %6.1f %% %12s\n", name, jint(sl, "ok"),
			       jint(sl, "failed"), jdouble(sl, "yield") * 100, b);
		}
	}
	if (json_object_object_get_ex(o, "failures_by_step", &steps) &&
	    json_object_object_length(steps) > 0) {
		const char *sep = "";

		printf("failures by step: ");
		json_object_object_foreach(steps, step, n) {
			printf("%s%s %" PRId64, sep, step, json_object_get_int64(n));
			sep = ", ";
		}
		printf("\n");
	}
	if (json_object_object_get_ex(o, "failures", &causes) &&
	    json_object_array_length(causes) > 0) {
		printf("%-12s %6s  %s\n", "STEP", "COUNT", "CAUSE");
		for (size_t i = 0; i < json_object_array_length(causes); i++) {
			struct json_object *c = json_object_array_get_idx(causes, i);

			printf("%-12s %6" PRId64 "  %s\n", jstr(c, "step"), jint(c, "count"),
			       jstr(c, "cause")[0] ? jstr(c, "cause") : "-");
		}
	}
}

static void print_ports(struct json_object *o)
{
	struct json_object *a;

	if (!json_object_object_get_ex(o, "ports", &a))
		return;
	printf("%-10s %-22s %-16s %-6s %s\n", "SLOT", "SPEC", "DEVICE", "BAUD", "STATE");
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *p = json_object_array_get_idx(a, i);

		printf("%-10s %-22s %-16s %-6" PRId64 " %s\n", jstr(p, "slot"), jstr(p, "spec"),
		       jstr(p, "device"), jint(p, "baud"),
		       json_object_get_boolean(json_object_object_get(p, "open")) ? "open"
		       : jstr(p, "error")[0] ? jstr(p, "error") : "closed");
	}
}

/* ports --scan: lists the adapters connected to this machine, without sfid (operators may
 * see adapters that sfid cannot open, or sfid may not run yet). */
static int cmd_ports_scan(void)
{
	struct link_port_info *ports = NULL;
	char err[256] = "";
	size_t n = 0;
	int r;

	r = link_ports_list(&ports, &n, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "sfictl: %s\n", err);
		return EXIT_IO;
	}
	link_ports_print(stdout, ports, n, json_out);
	link_ports_free(ports, n);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_IO;
}

static void print_job(struct json_object *j)
{
	struct json_object *lics, *fw;

	if (strcmp(jstr(j, "kind"), "plain") == 0) {
		/* Firmware written with the bootloader's commands: nothing is protected. */
		printf("job %" PRId64 "\n  kind      plain (not secure: no OSFI, no license)\n",
		       jint(j, "id"));
		if (json_object_object_get_ex(j, "firmware", &fw))
			for (size_t i = 0; i < json_object_array_length(fw); i++)
				printf("  %-9s %s\n", i == 0 ? "firmware" : "",
				       json_object_get_string(json_object_array_get_idx(fw, i)));
		printf("  digest    %s\n  bytes     %" PRId64 " in %" PRId64 " segment%s\n",
		       jstr(j, "digest"), jint(j, "bytes"), jint(j, "segments"),
		       jint(j, "segments") == 1 ? "" : "s");
		if (json_object_object_get(j, "serial"))
			printf("  serial    %s\n", jstr(j, "serial"));
		if (json_object_object_get(j, "serial_list"))
			printf("  list      %s (%" PRId64 " value%s)\n", jstr(j, "serial_list"),
			       jint(j, "serial_list_values"), jint(j, "serial_list_values") == 1 ? "" :
			       "s");
		if (json_object_object_get(j, "go"))
			printf("  then      go 0x%08" PRIx64 "\n", (uint64_t)jint(j, "go"));
		else
			printf("  then      stay in the bootloader\n");
		printf("  licenses  none\n  target    %" PRId64 "\n  written   %" PRId64
		       "\n  failed    %" PRId64 "\n  loaded by %s\n", jint(j, "target"),
		       jint(j, "installed"), jint(j, "failed"), jstr(j, "loaded_by"));
		return;
	}
	if (strcmp(jstr(j, "kind"), "vendor") == 0) {
		/* ST's own SFI image: sfid knows it by digest, STM32CubeProgrammer installs it. */
		printf("job %" PRId64 "\n  kind      vendor (ST SFI through STM32CubeProgrammer)\n"
		       "  image     %s\n  digest    %s\n  bytes     %" PRId64 "\n  modules   %s\n"
		       "  licenses  %s\n  target    %" PRId64 "\n  installed %" PRId64 "\n"
		       "  failed    %" PRId64 "\n  loaded by %s\n", jint(j, "id"), jstr(j, "image"),
		       jstr(j, "digest"), jint(j, "bytes"),
		       jstr(j, "modules")[0] ? jstr(j, "modules") : "-",
		       strcmp(jstr(j, "license"), "global") == 0 ? "global (uncounted)" :
		       "the reader's STM32HSM (counted)", jint(j, "target"), jint(j, "installed"),
		       jint(j, "failed"), jstr(j, "loaded_by"));
		return;
	}
	printf("job %" PRId64 "\n  kind      osfi\n  image     %s\n  image id  %s\n  digest    %s\n  bytes     %"
	       PRId64 "\n  modules   %s\n", jint(j, "id"), jstr(j, "image"), jstr(j, "image_id"),
	       jstr(j, "digest"), jint(j, "bytes"), jstr(j, "modules")[0] ? jstr(j, "modules") : "-");
	if (json_object_object_get_ex(j, "licenses", &lics) &&
	    json_object_array_length(lics) > 0) {
		/* One line per license every chip receives, in the order they are sent. */
		for (size_t i = 0; i < json_object_array_length(lics); i++) {
			struct json_object *l = json_object_array_get_idx(lics, i);
			int64_t target = jint(l, "target");
			char what[32];

			if (target == 0)
				snprintf(what, sizeof(what), "image");
			else
				snprintf(what, sizeof(what), "module %" PRId64, target);
			printf("  %-9s %-10s %s, firmware id %.16s...\n", i == 0 ? "licenses" : "", what,
			       strcmp(jstr(l, "license"), "global") == 0 ? "global (uncounted)"
									 : "HSM (counted)",
			       jstr(l, "firmware_id"));
		}
	} else {
		printf("  licenses  %s\n", strcmp(jstr(j, "license"), "global") == 0 ?
		       "global (uncounted)" : "HSM (counted)");
	}
	if (json_object_object_get(j, "serial")) {
		/* Written after the install, in the product state declared for the image. */
		printf("  leaves    %s (declared at load)\n  serial    %s\n", jstr(j, "image_state"),
		       jstr(j, "serial"));
		if (json_object_object_get(j, "serial_list"))
			printf("  list      %s (%" PRId64 " value%s)\n", jstr(j, "serial_list"),
			       jint(j, "serial_list_values"), jint(j, "serial_list_values") == 1 ? "" :
			       "s");
	}
	printf("  target    %" PRId64 "\n  installed %" PRId64 "\n  failed    %" PRId64
	       "\n  loaded by %s\n", jint(j, "target"), jint(j, "installed"), jint(j, "failed"),
	       jstr(j, "loaded_by"));
}

static void print_hsm(struct json_object *o)
{
	struct json_object *a, *v;
	size_t n = 0;

	printf("token %s (serial %s, %s %s)\n  licenses left %" PRId64 "\n  firmware id   %s\n",
	       jstr(o, "label"), jstr(o, "serial"), jstr(o, "manufacturer"), jstr(o, "model"),
	       jint(o, "licenses_left"), jstr(o, "firmware_id"));
	if (json_object_object_get_ex(o, "tokens", &a) && json_object_is_type(a, json_type_array))
		n = json_object_array_length(a);
	/* A pool: the figure above is the sum; each token's own counter below. */
	if (n > 1) {
		printf("  pool of %zu tokens:\n", n);
		for (size_t i = 0; i < n; i++) {
			struct json_object *t = json_object_array_get_idx(a, i);

			if (json_object_object_get_ex(t, "licenses_left", &v) && v)
				printf("    %-32s serial %-16s %" PRId64 " left\n", jstr(t, "label"),
				       jstr(t, "serial"), json_object_get_int64(v));
			else
				printf("    %-32s serial %-16s unreadable: %s\n", jstr(t, "label"),
				       jstr(t, "serial"), jstr(t, "error"));
		}
	}
	print_counter_changes(o);
}

static void print_slots(struct json_object *o)
{
	struct json_object *a;

	if (!json_object_object_get_ex(o, "slots", &a))
		return;
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *s = json_object_array_get_idx(a, i);

		printf("slot %s: %s\n", jstr(s, "slot"), jstr(s, "state"));
	}
}

/* Opens a job file for sfid to read through the descriptor; its index among those passed,
 * or -1 after printing why. */
static int pass_file(const char *path)
{
	int f;

	if (n_pass_fds >= PASS_FDS_MAX) {
		fprintf(stderr, "sfictl: more than %d job files\n", PASS_FDS_MAX);
		return -1;
	}
	f = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (f < 0) {
		fprintf(stderr, "sfictl: cannot open %s: %s\n", path, strerror(errno));
		return -1;
	}
	pass_fds[n_pass_fds] = f;
	return (int)n_pass_fds++;
}

/* The global module licenses a module file names, passed after it (their names as written,
 * relative to the file's folder). */
static int pass_module_licenses(const char *modules, int mfd, struct json_object *args)
{
	struct osfi_module_entry *ents = NULL;
	struct json_object *names = json_object_new_array();
	char dir[4096], lic[8192], why[256], *text = NULL;
	size_t n = 0, len = 0;
	int first = -1, r = 0, k;
	struct stat st;
	ssize_t got;

	/* Anything but a regular file is sfid's to refuse; it is not read here (a pipe would
	 * block). */
	if (fstat(mfd, &st) < 0 || !S_ISREG(st.st_mode)) {
		json_object_put(names);
		return 0;
	}
	text = malloc(1024 * 1024 + 1);
	while (text && len < 1024 * 1024 &&
	       (got = pread(mfd, text + len, 1024 * 1024 - len, (off_t)len)) > 0)
		len += (size_t)got;
	if (!text) {
		fprintf(stderr, "sfictl: cannot read %s: %s\n", modules, strerror(errno));
		json_object_put(names);
		return -1;
	}
	/* A file sfid will refuse is left for it to explain: nothing more is passed. */
	if (osfi_modules_parse(text, len, &ents, &n, why, sizeof(why)) < 0)
		n = 0;
	snprintf(dir, sizeof(dir), "%s", modules);
	if (strrchr(dir, '/'))
		*strrchr(dir, '/') = '\0';
	for (size_t i = 0; i < n && r == 0; i++) {
		if (ents[i].hsm)
			continue;
		if (ents[i].license[0] == '/')
			snprintf(lic, sizeof(lic), "%s", ents[i].license);
		else
			snprintf(lic, sizeof(lic), "%s/%s", dir, ents[i].license);
		k = pass_file(lic);
		if (k < 0) {
			r = -1;
			break;
		}
		if (first < 0)
			first = k;
		json_object_array_add(names, json_object_new_string(ents[i].license));
	}
	free(ents);
	free(text);
	if (r == 0 && first >= 0) {
		json_object_object_add(args, "module_licenses", names);
		json_object_object_add(args, "module_licenses_fd", json_object_new_int(first));
	} else {
		json_object_put(names);
	}
	return r;
}

/* job load --plain [--go[=ADDR]] FIRMWARE...: the firmware files passed as descriptors, named
 * by their absolute paths (with @ADDR kept). */
static int job_load_plain(int argc, char **argv, struct json_object *args, bool go,
			  const char *go_addr)
{
	struct json_object *names = json_object_new_array();
	char path[4096], spec[4200];
	int first = -1, k, r;

	if (argc < 1 || argc > 16) {
		fprintf(stderr, "sfictl: job load --plain needs 1 to 16 firmware files (FILE.elf, "
			"FILE.hex or FILE.bin@ADDR)\n");
		json_object_put(names);
		json_object_put(args);
		return EXIT_USAGE;
	}
	for (int i = 0; i < argc; i++) {
		const char *at = strrchr(argv[i], '@');
		size_t n = at && at[1] ? (size_t)(at - argv[i]) : strlen(argv[i]);
		char file[4096];

		if (at && !at[1] && access(argv[i], F_OK) != 0) {
			fprintf(stderr, "sfictl: %s: no address after '@' (FILE.bin@0x08000000)\n",
				argv[i]);
			json_object_put(names);
			json_object_put(args);
			return EXIT_USAGE;
		}

		snprintf(file, sizeof(file), "%.*s", (int)n, argv[i]);
		if (!realpath(file, path)) {
			fprintf(stderr, "sfictl: %s: %s\n", file, strerror(errno));
			json_object_put(names);
			json_object_put(args);
			return EXIT_IO;
		}
		k = pass_file(path);
		if (k < 0) {
			json_object_put(names);
			json_object_put(args);
			return EXIT_IO;
		}
		if (first < 0)
			first = k;
		snprintf(spec, sizeof(spec), "%s%s", path, at && at[1] ? at : "");
		json_object_array_add(names, json_object_new_string(spec));
	}
	json_object_object_add(args, "firmware", names);
	json_object_object_add(args, "firmware_fd", json_object_new_int(first));
	json_object_object_add(args, "go", json_object_new_boolean(go));
	if (go_addr) {
		int64_t a;

		if (parse_number("--go", go_addr, 0, UINT32_MAX, &a) < 0) {
			json_object_put(args);
			return EXIT_USAGE;
		}
		json_object_object_add(args, "go_address", json_object_new_int64(a));
	}
	r = simple("job-load", args, print_job);
	for (size_t i = 0; i < n_pass_fds; i++)
		close(pass_fds[i]);
	n_pass_fds = 0;
	return r;
}

static int cmd_job_load(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "modules", required_argument, NULL, 'm' },
		{ "count", required_argument, NULL, 'n' },
		{ "global-license", required_argument, NULL, 'g' },
		{ "plain", no_argument, NULL, 'p' },
		{ "go", optional_argument, NULL, 'G' },
		{ "vendor", no_argument, NULL, 'V' },
		{ "serial-counter", required_argument, NULL, 'S' },
		{ "serial-at", required_argument, NULL, 'A' },
		{ "serial-width", required_argument, NULL, 'W' },
		{ "serial-format", required_argument, NULL, 'F' },
		{ "serial-list", required_argument, NULL, 'L' },
		{ "image-state", required_argument, NULL, 'I' },
		{ 0 }
	};
	struct json_object *args = json_object_new_object();
	const char *modules = NULL, *global = NULL, *go_addr = NULL;
	bool plain = false, go = false, vendor = false, serial = false;
	char path[4096];
	int64_t count;
	int c, k, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "m:n:g:", opts, NULL)) >= 0) {
		switch (c) {
		case 'p':
			plain = true;
			break;
		case 'V':
			vendor = true;
			break;
		case 'I':
			json_object_object_add(args, "image_state", json_object_new_string(optarg));
			break;
		case 'S':
			json_object_object_add(args, "serial_counter", json_object_new_string(optarg));
			serial = true;
			break;
		case 'F':
			json_object_object_add(args, "serial_format", json_object_new_string(optarg));
			serial = true;
			break;
		case 'L':
			/* Passed open, like the firmware: sfid reads it through the descriptor. */
			if (!realpath(optarg, path)) {
				fprintf(stderr, "sfictl: %s: %s\n", optarg, strerror(errno));
				json_object_put(args);
				return EXIT_IO;
			}
			k = pass_file(path);
			if (k < 0) {
				json_object_put(args);
				return EXIT_IO;
			}
			json_object_object_add(args, "serial_list", json_object_new_string(path));
			json_object_object_add(args, "serial_list_fd", json_object_new_int(k));
			serial = true;
			break;
		case 'A': {
			uint32_t a;

			if (sfi_parse_u32(optarg, &a) < 0) {
				fprintf(stderr, "sfictl: --serial-at %s: expected an address (0x08100000 "
					"or decimal)\n", optarg);
				json_object_put(args);
				return EXIT_USAGE;
			}
			json_object_object_add(args, "serial_at", json_object_new_int64(a));
			serial = true;
			break;
		}
		case 'W':
			if (parse_number("--serial-width", optarg, 0, UINT32_MAX, &count) < 0) {
				json_object_put(args);
				return EXIT_USAGE;
			}
			json_object_object_add(args, "serial_width", json_object_new_int64(count));
			serial = true;
			break;
		case 'G':
			go = true;
			go_addr = optarg;
			break;
		case 'm':
			modules = optarg;
			break;
		case 'g':
			global = optarg;
			break;
		case 'n':
			if (parse_number("--count", optarg, 0, UINT32_MAX, &count) < 0) {
				json_object_put(args);
				return EXIT_USAGE;
			}
			json_object_object_add(args, "count", json_object_new_int64(count));
			break;
		default:
			json_object_put(args);
			return EXIT_USAGE;
		}
	}
	if (plain && (modules || global)) {
		fprintf(stderr, "sfictl: a plain job has no module file and no license\n");
		json_object_put(args);
		return EXIT_USAGE;
	}
	if (plain && vendor) {
		fprintf(stderr, "sfictl: a job is plain (--plain) or vendor (--vendor), not both\n");
		json_object_put(args);
		return EXIT_USAGE;
	}
	if (vendor)
		json_object_object_add(args, "vendor", json_object_new_boolean(true));
	/* Serial options go to sfid, which checks them against the job (an OSFI job needs
	 * --image-state; a vendor job takes none) and says why it refuses them. */
	(void)serial;
	if (!plain && go) {
		fprintf(stderr, "sfictl: --go is for plain jobs (--plain)\n");
		json_object_put(args);
		return EXIT_USAGE;
	}
	if (plain)
		return job_load_plain(argc - optind, argv + optind, args, go, go_addr);
	if (optind + 1 != argc) {
		fprintf(stderr, "sfictl: job load needs exactly one IMAGE\n");
		json_object_put(args);
		return EXIT_USAGE;
	}
	/* sfictl opens the files and passes their descriptors: sfid reads what the supervisor
	 * may read, wherever it is (sfid's own view of /tmp and /home is private). The
	 * absolute paths name them in messages and in the audit trail. */
	{
		const char *files[3] = { argv[optind], modules, global };
		const char *keys[3] = { "image", "modules", "global_license" };
		const char *fd_keys[3] = { "image_fd", "modules_fd", "global_license_fd" };

		for (int i = 0; i < 3; i++) {
			if (!files[i])
				continue;
			if (!realpath(files[i], path)) {
				fprintf(stderr, "sfictl: %s: %s\n", files[i], strerror(errno));
				json_object_put(args);
				return EXIT_IO;
			}
			k = pass_file(path);
			if (k < 0) {
				json_object_put(args);
				return EXIT_IO;
			}
			json_object_object_add(args, keys[i], json_object_new_string(path));
			json_object_object_add(args, fd_keys[i], json_object_new_int(k));
			/* A vendor job's module file is the tool's (-mcsv): sfid passes it on. */
			if (i == 1 && !vendor && pass_module_licenses(path, pass_fds[k], args) < 0) {
				json_object_put(args);
				return EXIT_IO;
			}
		}
	}
	r = simple("job-load", args, print_job);
	for (size_t i = 0; i < n_pass_fds; i++)
		close(pass_fds[i]);
	n_pass_fds = 0;
	return r;
}

/* The arguments of `history` or `stats`, checked before sfid is reached. */
static int query_args(const char *cmd, int argc, char **argv, struct json_object **ret)
{
	static const struct option hopts[] = {
		{ "limit", required_argument, NULL, 'n' },
		{ "job", required_argument, NULL, 'j' },
		{ "slot", required_argument, NULL, 's' },
		{ "chip", required_argument, NULL, 'c' },
		{ "failed", no_argument, NULL, 'f' },
		{ 0 }
	};
	static const struct option sopts[] = {
		{ "job", required_argument, NULL, 'j' },
		{ "since", required_argument, NULL, 'S' },
		{ "until", required_argument, NULL, 'U' },
		{ 0 }
	};
	bool history = strcmp(cmd, "history") == 0;
	struct json_object *args = json_object_new_object();
	char uid[32];
	int64_t v;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, history ? "n:j:s:c:f" : "j:S:U:",
				history ? hopts : sopts, NULL)) >= 0) {
		switch (c) {
		case 'S':
		case 'U':
			if (parse_since(optarg, &v) < 0) {
				fprintf(stderr, "sfictl: --%s %s: use milliseconds since the epoch or "
					"YYYY-MM-DD[THH:MM:SS] (UTC)\n", c == 'S' ? "since" : "until",
					optarg);
				goto usage;
			}
			json_object_object_add(args, c == 'S' ? "since_ms" : "until_ms",
					       json_object_new_int64(v));
			break;
		case 'n':
			if (parse_number("--limit", optarg, 1, 10000, &v) < 0)
				goto usage;
			json_object_object_add(args, "limit", json_object_new_int64(v));
			break;
		case 'j':
			if (parse_number("--job", optarg, 0, INT64_MAX, &v) < 0)
				goto usage;
			json_object_object_add(args, "job", json_object_new_int64(v));
			break;
		case 's':
			json_object_object_add(args, "slot", json_object_new_string(optarg));
			break;
		case 'c': {
			/* The database keeps UIDs as 24 lowercase hex digits, as status shows them. */
			size_t n = strlen(optarg);

			if (n != 24 || strspn(optarg, "0123456789abcdefABCDEF") != n) {
				fprintf(stderr, "sfictl: --chip %s: a chip UID is 24 hex digits, as "
					"'sfictl status' shows it\n", optarg);
				goto usage;
			}
			for (size_t i = 0; i <= n; i++)
				uid[i] = (char)(optarg[i] >= 'A' && optarg[i] <= 'F' ? optarg[i] + 32
										       : optarg[i]);
			json_object_object_add(args, "chip", json_object_new_string(uid));
			break;
		}
		case 'f':
			json_object_object_add(args, "failed", json_object_new_boolean(1));
			break;
		default:
			goto usage;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "sfictl: %s takes no argument '%s'\n", cmd, argv[optind]);
		goto usage;
	}
	*ret = args;
	return EXIT_OK;
usage:
	fprintf(stderr, history ? "sfictl: usage: history [--limit N] [--job N] [--slot NAME] "
			"[--chip UID] [--failed]\n" : "sfictl: usage: stats [--job N] [--since T] "
			"[--until T]\n");
	json_object_put(args);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 }
	};
	struct json_object *query = NULL;
	const char *cmd;
	int c, r;

	while ((c = getopt_long(argc, argv, "+S:jhV", opts, NULL)) >= 0) {
		switch (c) {
		case 'S':
			socket_path = optarg;
			break;
		case 'j':
			json_out = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("sfictl %s\n", SFID_VERSION);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	if ((!control_command_find(cmd) || strchr(cmd, '-')) && strcmp(cmd, "job") != 0) {
		fprintf(stderr, "sfictl: unknown command '%s'\n", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(cmd, "job") == 0 && (argc < 2 || (strcmp(argv[1], "load") != 0 &&
						      strcmp(argv[1], "show") != 0))) {
		fprintf(stderr, "sfictl: use 'job load IMAGE' or 'job show'\n");
		return EXIT_USAGE;
	}
	if (strcmp(cmd, "ports") == 0 && argc > 1) {
		/* ports --scan [--json]: the --json of the command line may follow too. */
		bool scan = false;

		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--scan") == 0) {
				scan = true;
			} else if (strcmp(argv[i], "--json") == 0) {
				json_out = true;
			} else {
				fprintf(stderr, "sfictl: ports takes only --scan and --json, not '%s'\n",
					argv[i]);
				return EXIT_USAGE;
			}
		}
		if (scan)
			return cmd_ports_scan();
	}
	if (strcmp(cmd, "history") == 0 || strcmp(cmd, "stats") == 0) {
		r = query_args(cmd, argc, argv, &query);
		if (r != EXIT_OK)
			return r;
	}
	r = connect_daemon();
	if (r < 0) {
		json_object_put(query);
		return r == -EACCES || r == -EPERM ? EXIT_DENIED : EXIT_CONNECT;
	}

	if (strcmp(cmd, "status") == 0) {
		r = simple("status", NULL, print_status);
	} else if (strcmp(cmd, "watch") == 0) {
		static const struct option wopts[] = {
			{ "count", required_argument, NULL, 'n' },
			{ "timeout", required_argument, NULL, 't' },
			{ 0 }
		};
		int count = 0, timeout_s = 0;

		optind = 0;
		while ((c = getopt_long(argc, argv, "n:t:", wopts, NULL)) >= 0) {
			if (c == 'n')
				count = atoi(optarg);
			else if (c == 't')
				timeout_s = atoi(optarg);
			else
				return EXIT_USAGE;
		}
		r = cmd_watch(count, timeout_s);
	} else if (strcmp(cmd, "start") == 0 || strcmp(cmd, "stop") == 0 ||
		   strcmp(cmd, "pause") == 0) {
		struct json_object *args = json_object_new_object(), *a = json_object_new_array();

		for (int i = 1; i < argc; i++)
			json_object_array_add(a, json_object_new_string(argv[i]));
		json_object_object_add(args, "slots", a);
		r = simple(cmd, args, print_slots);
	} else if (strcmp(cmd, "history") == 0) {
		r = simple("history", query, print_history);
	} else if (strcmp(cmd, "stats") == 0) {
		r = simple("stats", query, print_stats);
	} else if (strcmp(cmd, "ports") == 0) {
		r = simple("ports", NULL, print_ports);
	} else if (strcmp(cmd, "hsm") == 0) {
		r = simple("hsm", NULL, print_hsm);
	} else if (strcmp(cmd, "config") == 0) {
		r = simple("config", NULL, NULL);
	} else if (strcmp(cmd, "hello") == 0) {
		r = simple("hello", NULL, NULL);
	} else if (strcmp(cmd, "export") == 0) {
		r = cmd_export(argc, argv);
	} else if (strcmp(argv[1], "load") == 0) {
		r = cmd_job_load(argc - 1, argv + 1);
	} else {
		r = simple("job-show", NULL, print_job);
	}
	control_linebuf_done(&lb);
	close(fd);
	return r;
}

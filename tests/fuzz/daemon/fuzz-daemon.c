/* Fuzzes sfid's command handling end to end. The input (after its first byte) is a byte
 * stream sent, as a client would send it, to sfid's control server on a real Unix socket:
 * the server splits it into lines, parses, authorizes and checks each request, and sfid's
 * own handlers (commands.c and sfid.c are compiled into this target) answer it, with a real
 * database, its recorder thread, a worker thread and two slots whose ports do not exist.
 * Every line sfid sends back must parse as a reply or an event. The first byte picks the
 * caller's role and whether a job is loaded (then `start` really starts the slots). */
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/sockios.h>
#include <poll.h>

/* sfid.c's main() is not ours to run: it is renamed, its handlers are reached through the
 * control server. */
#define main sfid_main
int sfid_main(int argc, char **argv);
#include "sfid.c"
#undef main

#define FUZZ_ROLES 3
#define REPLY_MAX (8u * 1024 * 1024)

static struct {
	bool ready;
	char dir[64];
	char sock[FUZZ_ROLES][96];
	struct server *servers[FUZZ_ROLES];
	struct sfid d;
	struct job *job;
} fz;

static void fz_done(void)
{
	struct sfid *d = &fz.d;
	char path[128];

	d->job = fz.job;
	d->workers = workers_free(d->workers);
	for (size_t i = 0; i < d->n_slots; i++)
		slot_stop(d->slots[i], "fuzzing ends");
	d->recorder = recorder_free(d->recorder);
	for (int i = 0; i < FUZZ_ROLES; i++)
		fz.servers[i] = server_free(fz.servers[i]);
	d->server = NULL;
	for (size_t i = 0; i < d->n_slots; i++)
		slot_free(d->slots[i]);
	free(d->slots);
	job_free(d->job);
	d->licensing = licensing_free(d->licensing);
	d->db = db_close(d->db);
	event_base_free(d->base);
	config_free(d->cfg);
	for (const char *const *f = (const char *const[]){ "sfid.db", "sfid.db-wal", "sfid.db-shm",
							    NULL }; *f; f++) {
		snprintf(path, sizeof(path), "%s/%s", fz.dir, *f);
		unlink(path);
	}
	rmdir(fz.dir);
}

static void fz_init(void)
{
	struct sfid *d = &fz.d;
	struct db_options o = { 0 };
	struct group *g = getgrgid(getgid());
	char text[1024], err[512];

	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
	log_set_max(LOG_PRIO_ERR);
	signal(SIGPIPE, SIG_IGN);
	snprintf(fz.dir, sizeof(fz.dir), "%s/sfid-fuzz-daemon.XXXXXX",
		 "/tmp");
	if (!g || !mkdtemp(fz.dir))
		abort();
	snprintf(text, sizeof(text),
		 "[station]\nname = fuzz\n"
		 "[hsm]\nmodule = /nonexistent/pkcs11.so\ntoken = fuzz\npin_file = %s/pin\n"
		 "[database]\npath = %s/sfid.db\n"
		 "[control]\noperator_group = %s\nsupervisor_group = %s\n"
		 "[slot A]\nport = %s/ttyA\nreopen_ms = 50\n"
		 "[slot B]\nport = serial:SFIDFUZZNONE\nreopen_ms = 50\n",
		 fz.dir, fz.dir, g->gr_name, g->gr_name, fz.dir);
	if (config_parse_string("fuzz.conf", text, &d->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz-daemon: %s\n", err);
		abort();
	}
	d->started_ms = sfid_mono_ms();
	d->base = event_base_new();
	if (!d->base || db_open(d->cfg->db_path, &o, &d->db, err, sizeof(err)) < 0 ||
	    line_recorder_new(d, &o, err, sizeof(err)) < 0 ||
	    workers_new(d->base, 1, &d->workers) < 0 || line_licensing_new(d, NULL) < 0) {
		fprintf(stderr, "fuzz-daemon: cannot set up: %s\n", err);
		abort();
	}
	if (line_slots_new(d) < 0)
		abort();
	/* The roles: nobody's groups match, the caller is an operator, a supervisor (root is a
	 * supervisor whatever the groups). */
	for (int i = 0; i < FUZZ_ROLES; i++) {
		struct server_options so = {
			.path = fz.sock[i],
			.listen_fd = -1,
			.socket_gid = (gid_t)-1,
			.operator_gid = i == 1 ? getgid() : (gid_t)-1,
			.supervisor_gid = i == 2 ? getgid() : (gid_t)-1,
			.operator_group = "operators",
			.supervisor_group = "supervisors",
			.max_clients = 4,
			.max_message = 4096,
			.idle_ms = 60000,
			.line_ms = 10000,
			.close_ms = 10000,
		};

		snprintf(fz.sock[i], sizeof(fz.sock[i]), "%s/sock%d", fz.dir, i);
		if (server_new(d->base, &so, commands_dispatch, d, &fz.servers[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "fuzz-daemon: %s\n", err);
			abort();
		}
	}
	/* A job as restore_job() would leave it; no chip ever answers, so its image is never
	 * sent. */
	fz.job = calloc(1, sizeof(*fz.job));
	if (!fz.job)
		abort();
	fz.job->id = 1;
	fz.job->image_path = strdup("/fuzz/image.sfi");
	fz.job->loaded_by = strdup("fuzz");
	if (!fz.job->image_path || !fz.job->loaded_by)
		abort();
	fz.ready = true;
	atexit(fz_done);
}

static void sync_done(void *arg, int r)
{
	*(bool *)arg = true;
}

/* Takes every complete line sfid sent; each must be a reply or an event. */
static void take_replies(struct control_linebuf *lb, const char *buf, size_t n)
{
	const char *line;
	size_t len;
	int r;

	if (control_linebuf_append(lb, buf, n) < 0)
		abort();
	while ((r = control_linebuf_next(lb, &line, &len)) != 0) {
		struct control_reply rep;
		struct json_object *root;

		if (r < 0 || control_reply_parse(line, len, REPLY_MAX, &rep, &root) != 0) {
			fprintf(stderr, "fuzz-daemon: sfid sent a line that is not a reply\n");
			abort();
		}
		if (getenv("FUZZ_DAEMON_SHOW"))
			fprintf(stderr, "%.*s\n", (int)len, line);
		json_object_put(root);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct sfid *d = &fz.d;
	struct control_linebuf lb;
	bool synced = false, sync_asked = false, shut = false;
	size_t off = 1;
	char buf[65536];
	int role, fd;

	if (size < 1)
		return 0;
	if (!fz.ready)
		fz_init();
	role = data[0] % FUZZ_ROLES;
	d->server = fz.servers[role];
	d->job = data[0] & 0x80 ? fz.job : NULL;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fz.sock[role]);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		abort();
	control_linebuf_init(&lb, REPLY_MAX);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int outq = 0;
		ssize_t n;

		if (off < size) {
			n = write(fd, data + off, size - off);
			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				abort();
		}
		event_base_loop(d->base, EVLOOP_NONBLOCK);
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			take_replies(&lb, buf, (size_t)n);
		if (n == 0)
			break;
		/* Once sfid has read everything and finished what it started (worker and
		 * recorder tasks), the connection is closed; sfid then closes its side. */
		if (off == size && !shut && ioctl(fd, SIOCOUTQ, &outq) == 0 && outq == 0 &&
		    !d->job_loading && !licensing_busy(d->licensing) && workers_busy(d->workers) == 0) {
			if (!sync_asked) {
				sync_asked = true;
				if (recorder_sync(d->recorder, sync_done, &synced) < 0)
					abort();
			} else if (synced) {
				shutdown(fd, SHUT_WR);
				shut = true;
			}
		}
		poll(&p, 1, 1);
	}
	close(fd);
	control_linebuf_done(&lb);
	/* A job load that succeeded replaced the job. */
	if (d->job && d->job != fz.job) {
		job_free(fz.job);
		fz.job = d->job;
	}
	d->job = NULL;
	return 0;
}

/* One chip's whole install over the link vtable, as the line does it (probe, identify, the
 * certificate session, the install session with its reconnect after FINALIZE), then a
 * check of what the chip holds; driven either the way sfi-boot drives the link (blocking,
 * poll) or the way sfid's slots do (libevent, every chip at once on one loop). Both run the
 * same procedure code below; only the loop differs.
 *
 *   link-faults blocking|loop IMAGE LICENSE STEP_MS PORT...
 *
 * prints one line per port, in argument order:
 *   <index>|<result>|installed=<0|1>
 * where result is "ok" or "fail:<phase>:<one sentence>". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "osfi.h"
#include "transport.h"

#define CHECK_MS 5000		/* the check after an outcome: chip back within this */

struct chip;
typedef void (*step_fn)(struct chip *c, int r);

struct chip {
	unsigned index;
	const char *port;
	struct transport *tp;
	struct osfi_session *sess;
	const uint8_t *image;
	size_t image_len;
	const uint8_t *license;
	size_t license_len;
	uint8_t image_id[OSFI_ID_LEN];
	enum transport_presence presence;
	struct transport_identity ident;
	struct transport_answer ans;
	uint8_t answer[AN3155_SPECIAL_MAX_ANSWER];
	uint16_t last_subop;
	unsigned id_reads;
	step_fn next;
	void (*session_done)(struct chip *c, int r);
	char result[400];
	bool installed, finished;
	/* loop mode */
	struct event_base *base;
	struct event *ev_io, *ev_timer;
	int io_fd;
	short io_events;
};

static bool blocking;

static void arm(struct chip *c)
{
	struct transport_watch w;
	short events;

	if (blocking || !c->tp)
		return;
	transport_watch(c->tp, &w);
	events = (short)(((w.events & TRANSPORT_IN) ? EV_READ : 0) |
			 ((w.events & TRANSPORT_OUT) ? EV_WRITE : 0));
	if (w.fd != c->io_fd || events != c->io_events) {
		event_del(c->ev_io);
		c->io_fd = w.fd;
		c->io_events = events;
		if (w.fd >= 0 && events) {
			event_assign(c->ev_io, c->base, w.fd, events | EV_PERSIST,
				     event_get_callback(c->ev_io), c);
			event_add(c->ev_io, NULL);
		}
	}
	if (w.deadline_ms >= 0) {
		int64_t left = w.deadline_ms - transport_now_ms(c->tp);
		struct timeval tv = { 0 };

		if (left > 0) {
			tv.tv_sec = left / 1000;
			tv.tv_usec = (left % 1000) * 1000;
		}
		evtimer_add(c->ev_timer, &tv);
	} else {
		evtimer_del(c->ev_timer);
	}
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct chip *c = arg;

	transport_io_ready(c->tp, ((what & EV_READ) ? TRANSPORT_IN : 0) |
				  ((what & EV_WRITE) ? TRANSPORT_OUT : 0));
	arm(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct chip *c = arg;

	transport_io_ready(c->tp, 0);
	arm(c);
}

static void op_cb(struct transport *t, int r, void *user_data)
{
	struct chip *c = user_data;
	step_fn fn = c->next;

	c->next = NULL;
	fn(c, r);
}

/* Starts an operation's step: the loop or transport_wait() runs it to its callback. */
static void started(struct chip *c, step_fn fn, int r)
{
	if (r < 0) {
		c->next = NULL;
		fn(c, r);
		return;
	}
	arm(c);
}

static void probe(struct chip *c, step_fn fn)
{
	c->next = fn;
	started(c, fn, transport_probe(c->tp, 0, &c->presence, op_cb, c));
}

static void identify(struct chip *c, step_fn fn)
{
	c->next = fn;
	started(c, fn, transport_identify(c->tp, &c->ident, op_cb, c));
}

static void reconnect(struct chip *c, unsigned ms, step_fn fn)
{
	c->next = fn;
	started(c, fn, transport_reconnect(c->tp, ms, op_cb, c));
}

static void request(struct chip *c, const struct osfi_request *req, step_fn fn)
{
	c->next = fn;
	c->last_subop = req->subop;
	started(c, fn, transport_osfi(c->tp, req, c->answer,
				      req->answer_max < sizeof(c->answer) ? req->answer_max
									  : sizeof(c->answer),
				      &c->ans, op_cb, c));
}

/* ---- the procedure ---- */

static void finish(struct chip *c)
{
	c->finished = true;
	c->sess = osfi_session_free(c->sess);
	if (!blocking) {
		event_del(c->ev_io);
		evtimer_del(c->ev_timer);
	}
	c->tp = transport_close(c->tp);
}

static void check_info(struct chip *c, int r)
{
	struct osfi_info info;

	if (r == 0 && c->ans.status == OSFI_ST_OK &&
	    osfi_info_decode(c->answer, c->ans.len, &info) == 0)
		c->installed = osfi_info_installed_is(&info, c->image_id);
	finish(c);
}

static void check_synced(struct chip *c, int r)
{
	static const struct osfi_request get_info = {
		.subop = OSFI_OP_GET_INFO,
		.answer_max = OSFI_INFO_LEN,
	};

	if (r < 0) {
		finish(c);
		return;
	}
	request(c, &get_info, check_info);
}

/* The outcome is set: ask the chip what it holds, as the line does after a failure. */
static void outcome(struct chip *c, int r, const char *phase, const char *text)
{
	if (r == 0)
		snprintf(c->result, sizeof(c->result), "ok");
	else
		snprintf(c->result, sizeof(c->result), "fail:%s:%s", phase, text);
	if (r == -TRANSPORT_E_GONE) {
		finish(c);
		return;
	}
	reconnect(c, CHECK_MS, check_synced);
}

static void link_outcome(struct chip *c, int r, const char *phase)
{
	char text[200];

	transport_describe(c->tp, text, sizeof(text));
	outcome(c, r, phase, text[0] ? text : an3155_strerror(r));
}

static void session_pump(struct chip *c);

static void session_answered(struct chip *c, int r)
{
	if (r < 0)
		osfi_session_link_error(c->sess, r);
	else
		osfi_session_answer(c->sess, c->ans.status, c->answer, c->ans.len);
	session_pump(c);
}

static void session_reconnected(struct chip *c, int r)
{
	if (r < 0)
		osfi_session_link_error(c->sess, r);
	else
		osfi_session_reconnected(c->sess);
	session_pump(c);
}

static void session_pump(struct chip *c)
{
	struct osfi_request req;
	int r;

	switch (osfi_session_next(c->sess, &req)) {
	case OSFI_NEXT_REQUEST:
		request(c, &req, session_answered);
		return;
	case OSFI_NEXT_RECONNECT:
		reconnect(c, 15000, session_reconnected);
		return;
	case OSFI_NEXT_DONE:
		c->session_done(c, 0);
		return;
	case OSFI_NEXT_FAILED:
		r = osfi_session_result(c->sess);
		c->session_done(c, r < 0 ? r : -EIO);
		return;
	}
}

static void session_outcome(struct chip *c, int r, const char *phase)
{
	char text[300], link[200];

	if (osfi_session_result(c->sess) == -OSFI_E_LINK) {
		transport_describe(c->tp, link, sizeof(link));
		snprintf(text, sizeof(text), "%s: %s", osfi_subop_name(c->last_subop), link);
		r = osfi_session_link_errno(c->sess);
	} else {
		osfi_session_describe(c->sess, text, sizeof(text));
	}
	outcome(c, r, phase, text);
}

static void install_done(struct chip *c, int r)
{
	if (r < 0) {
		session_outcome(c, r, "install");
		return;
	}
	outcome(c, 0, "", "");
}

static void cert_done(struct chip *c, int r)
{
	char why[200];

	if (r < 0) {
		session_outcome(c, r, "certificate");
		return;
	}
	c->sess = osfi_session_free(c->sess);
	r = osfi_session_new_install(c->image, c->image_len, &c->sess, why, sizeof(why));
	if (r == 0)
		r = osfi_session_add_license(c->sess, c->license, c->license_len);
	if (r < 0) {
		outcome(c, r, "install", "cannot start the install session");
		return;
	}
	c->session_done = install_done;
	session_pump(c);
}

static void identified(struct chip *c, int r)
{
	if (r < 0) {
		link_outcome(c, r, "identify");
		return;
	}
	if (c->ident.osfi && c->ident.pid != 0x484 && c->id_reads++ == 0) {
		/* The Get ID answer carries no checksum: ask once more, as the line does. */
		identify(c, identified);
		return;
	}
	if (!c->ident.osfi || c->ident.pid != 0x484) {
		outcome(c, -EPROTO, "identify", "not an OSFI STM32H5 bootloader");
		return;
	}
	if (osfi_session_new_cert(&c->sess) < 0) {
		outcome(c, -ENOMEM, "certificate", "out of memory");
		return;
	}
	c->session_done = cert_done;
	session_pump(c);
}

static void probed(struct chip *c, int r)
{
	if (r < 0) {
		link_outcome(c, r, "probe");
		return;
	}
	identify(c, identified);
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || read(fd, buf, (size_t)st.st_size) != st.st_size) {
		free(buf);
		close(fd);
		return -EIO;
	}
	close(fd);
	*ret = buf;
	*ret_len = (size_t)st.st_size;
	return 0;
}

int main(int argc, char **argv)
{
	struct transport_options o;
	struct event_base *base = NULL;
	struct chip *chips;
	uint8_t *image, *license;
	size_t image_len, license_len;
	unsigned n;
	int ret = 0;

	if (argc < 6 || (strcmp(argv[1], "blocking") != 0 && strcmp(argv[1], "loop") != 0)) {
		fprintf(stderr, "usage: link-faults blocking|loop IMAGE LICENSE STEP_MS PORT...\n");
		return 2;
	}
	blocking = strcmp(argv[1], "blocking") == 0;
	if (read_file(argv[2], &image, &image_len) < 0 ||
	    read_file(argv[3], &license, &license_len) < 0 || image_len < OSFI_HEADER_LEN) {
		fprintf(stderr, "link-faults: cannot read the image or the license\n");
		return 2;
	}
	transport_options_default(&o);
	o.step_ms = o.block_ms = (unsigned)atoi(argv[4]);
	n = (unsigned)(argc - 5);
	chips = calloc(n, sizeof(*chips));
	if (!blocking)
		base = event_base_new();
	if (!chips || (!blocking && !base))
		return 2;
	for (unsigned i = 0; i < n; i++) {
		struct chip *c = &chips[i];
		char err[256] = "";
		int r;

		c->index = i;
		c->port = argv[5 + i];
		c->image = image;
		c->image_len = image_len;
		c->license = license;
		c->license_len = license_len;
		c->io_fd = -1;
		osfi_image_id(image, c->image_id);
		r = transport_open(c->port, &o, &c->tp, err, sizeof(err));
		if (r < 0) {
			snprintf(c->result, sizeof(c->result), "fail:open:%s", err);
			c->finished = true;
			continue;
		}
		if (!blocking) {
			c->base = base;
			c->ev_io = event_new(base, -1, 0, io_cb, c);
			c->ev_timer = evtimer_new(base, timer_cb, c);
		}
		probe(c, probed);
		/* sfi-boot's way: one chip at a time, poll() until its procedure ends. */
		if (blocking && c->tp)
			transport_wait(c->tp);
	}
	if (!blocking)
		event_base_dispatch(base);
	for (unsigned i = 0; i < n; i++) {
		struct chip *c = &chips[i];

		if (!c->finished) {
			snprintf(c->result, sizeof(c->result), "fail:hang:the procedure did not end");
			ret = 1;
		}
		printf("%u|%s|installed=%d\n", i, c->result, c->installed);
		if (c->ev_io)
			event_free(c->ev_io);
		if (c->ev_timer)
			event_free(c->ev_timer);
	}
	free(chips);
	free(image);
	free(license);
	if (base)
		event_base_free(base);
	return ret;
}

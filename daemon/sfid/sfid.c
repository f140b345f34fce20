/* sfid: the line daemon. main() loads the configuration, opens the HSM token and the
 * database, reconciles the license ledger, wires the modules to the line (line.h) and the
 * command handlers to the control socket, then runs one event loop for the control socket,
 * every slot's port, timers and signals until SIGTERM/SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <systemd/sd-daemon.h>

#include "config.h" /* SFID_VERSION */
#include "sfid-config.h"
#include "control.h"
#include "db.h"
#include "hsm.h"
#include "hook.h"
#include "job.h"
#include "licensing.h"
#include "recorder.h"
#include "sfi-file.h"
#include "shipper.h"
#include "an3155-wire.h"
#include "log.h"
#include "server.h"
#include "commands.h"
#include "line.h"
#include "slot.h"
#include "vendor.h"
#include "tokens.h"
#include "worker.h"

/* Exit status when the HSM PIN is wrong, locked, at risk or missing: sfid.service names it
 * in RestartPreventExitStatus=, so a wrong PIN is never tried again and again. */
#define SFID_EXIT_PIN 78


/* ---- start-up ---- */

static int audit_sign(void *userdata, const uint8_t digest[DB_HASH_SIZE],
		      uint8_t ret_sig[DB_SIG_SIZE])
{
	struct sfid *d = userdata;
	int r = hsm_audit_sign(tokens_line(d->tokens), digest, ret_sig);

	return r < 0 ? -EIO : 0;
}

/* The audit key generation that signed the trail before a key change. */
static unsigned audit_old_gen;

static int audit_sign_old(void *userdata, const uint8_t digest[DB_HASH_SIZE],
			  uint8_t ret_sig[DB_SIG_SIZE])
{
	struct sfid *d = userdata;
	int r = hsm_audit_sign_gen(tokens_line(d->tokens), (int)audit_old_gen, digest, ret_sig);

	return r < 0 ? -EIO : 0;
}

static int audit_key_id_of_pem(char *pem, uint8_t ret_id[DB_HASH_SIZE]);

/* SHA-256 of the DER SubjectPublicKeyInfo of audit key generation gen. */
static int audit_key_id_gen(struct sfid *d, unsigned gen, uint8_t ret_id[DB_HASH_SIZE])
{
	char *pem = NULL;

	if (hsm_audit_pubkey_pem_gen(tokens_line(d->tokens), gen, &pem) < 0)
		return -ENOKEY;
	return audit_key_id_of_pem(pem, ret_id);
}

/* SHA-256 of the audit key's DER SubjectPublicKeyInfo. */
static int audit_key_id(struct sfid *d, uint8_t ret_id[DB_HASH_SIZE])
{
	char *pem = NULL;

	if (hsm_audit_pubkey_pem(tokens_line(d->tokens), &pem) < 0)
		return -ENOKEY;
	return audit_key_id_of_pem(pem, ret_id);
}

/* Takes pem. */
static int audit_key_id_of_pem(char *pem, uint8_t ret_id[DB_HASH_SIZE])
{
	unsigned char *der = NULL;
	EVP_PKEY *pk = NULL;
	BIO *bio;
	int n, r = -EINVAL;

	bio = BIO_new_mem_buf(pem, -1);
	if (bio)
		pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (pk && (n = i2d_PUBKEY(pk, &der)) > 0) {
		SHA256(der, (size_t)n, ret_id);
		r = 0;
	}
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	BIO_free(bio);
	free(pem);
	return r;
}

/* A PIN problem: restarting would only try the same PIN again (systemd must not). */
static bool pin_error(int r)
{
	return r == -HSM_ERR_PIN_INCORRECT || r == -HSM_ERR_PIN_LOCKED || r == -HSM_ERR_PIN_SOURCE;
}

static int open_hsm(struct sfid *d)
{
	const struct config *cfg = d->cfg;
	struct tokens_params p = {
		.module = cfg->hsm_module,
		.pin_file = cfg->hsm_pin_file,
		.pin_credential = cfg->hsm_pin_credential,
	};
	int r = tokens_new(&p, &d->tokens);

	if (r < 0) {
		log_error("out of memory");
		return r;
	}
	r = tokens_open_line(d->tokens, cfg->hsm_token);
	if (r == 0)
		r = tokens_open_pool(d->tokens, (const char *const *)cfg->hsm_pool,
				     cfg->n_hsm_pool);
	return r;
}

/* A new audit key generation on the token (sfi-hsm rotate-audit-key): the key that signed
 * the trail so far signs the change into it, so the OEM's verifier walks across with both
 * keys in its ring. */
static void audit_key_link(struct sfid *d, struct db *ldb, const struct db_signer *signer)
{
	struct db_signer old = { .sign = audit_sign_old, .userdata = d };
	uint8_t last[DB_HASH_SIZE], id[DB_HASH_SIZE];
	unsigned gen;

	if (db_audit_last_key(ldb, last) < 0 || memcmp(last, signer->key_id, DB_HASH_SIZE) == 0)
		return;
	if (hsm_audit_generation(tokens_line(d->tokens), &gen) < 0)
		return;
	for (unsigned g = gen; g-- > 0;) {
		if (audit_key_id_gen(d, g, id) < 0 || memcmp(id, last, DB_HASH_SIZE) != 0)
			continue;
		audit_old_gen = g;
		memcpy(old.key_id, last, DB_HASH_SIZE);
		if (db_audit_key_change(ldb, &old) < 0)
			log_error("cannot record the audit key change: %s", db_last_error(ldb));
		else
			log_notice("audit key changed (generation %u -> %u): the change is signed "
				   "into the trail with the previous key", g, gen);
		return;
	}
	log_warning("the audit trail's last checkpoint names an audit key this token no longer "
		    "holds: the change to the token's key cannot be signed into the trail, and "
		    "a verifier reports it");
}

/* Three connections to one file: the loop reads, the license chain writes the ledger, the
 * recorder writes everything else; SQLite serializes the writers. */
static int open_db(struct sfid *d, struct db_signer *signer)
{
	struct db_options o = { .signer = NULL, .max_size_bytes = d->cfg->db_max_bytes };
	struct db *ldb = NULL;
	char err[512] = "";
	int r;

	signer->sign = audit_sign;
	signer->userdata = d;
	if (audit_key_id(d, signer->key_id) == 0)
		o.signer = signer;
	else
		log_warning("the HSM token has no usable audit key: checkpoints will not be signed");
	r = db_open_role(d->cfg->db_path, DB_ROLE_LEDGER, &o, &ldb, err, sizeof(err));
	if (r == 0)
		r = db_open_role(d->cfg->db_path, DB_ROLE_READER, &o, &d->db, err, sizeof(err));
	if (r < 0) {
		log_error("cannot open database %s: %s", d->cfg->db_path, err);
		db_close(ldb);
		return r;
	}
	if (o.signer)
		audit_key_link(d, ldb, signer);
	r = line_recorder_new(d, &o, err, sizeof(err));
	if (r < 0) {
		log_error("cannot open database %s: %s", d->cfg->db_path, err);
		db_close(ldb);
		return r;
	}
	/* From here on licensing owns the ledger's connection. */
	r = line_licensing_new(d, ldb);
	if (r < 0) {
		log_error("out of memory");
		return r;
	}
	ldb = licensing_ledger(d->licensing);
	/* A crash may have left a reservation open: each token's counter settles its own. */
	r = licensing_reconcile_tokens(d->licensing);
	if (r < 0)
		return r;
	{
		unsigned n_att = 0, n_lic = 0;

		/* Attempts a killed sfid left running are closed now, never left open; their
		 * licenses stay the chips' (installed when a chip shows it holds the image). */
		r = db_attempts_interrupted(ldb, "interrupted: sfid stopped during this attempt "
					    "and closed it when it started again", &n_att, &n_lic);
		if (r < 0) {
			log_error("cannot close the attempts left open: %s", db_last_error(ldb));
			return r;
		}
		if (n_att)
			log_warning("%u attempt%s left running by a stopped sfid closed as "
				    "interrupted; %u license%s issued to them kept for their chips",
				    n_att, n_att == 1 ? "" : "s", n_lic, n_lic == 1 ? "" : "s");
	}
	/* Serial numbers whose write's outcome a killed sfid did not record: unconfirmed,
	 * still their chips' (a chip that comes back gets its own value again). */
	r = db_serial_resolve(ldb);
	if (r < 0) {
		log_error("cannot close the serial numbers left open: %s", db_last_error(ldb));
		return r;
	}
	if (r > 0)
		log_warning("%d serial number%s left without an outcome by a stopped sfid recorded "
			    "unconfirmed; each stays its chip's", r, r == 1 ? "" : "s");
	return 0;
}

/* An OSFI job's serial number, from sfid's copy (none: the job has none, unless the ledger
 * says it gave values). */
static int restore_serial(struct sfid *d, int64_t job_id, struct job *j, char *msg,
			  size_t msg_size)
{
	char path[PATH_MAX];
	uint8_t *text = NULL;
	size_t len = 0;
	int r;

	line_job_copy_path(d, job_id, "serial", path, sizeof(path));
	r = sfi_file_read(path, JOB_SERIAL_LIST_BYTES_MAX * 3, &text, &len);
	if (r == -ENOENT && db_serial_job_has(d->db, job_id) == 0)
		return 0;
	if (r == -ENOENT) {
		/* The job gave serial numbers: without its settings it must not go on. */
		snprintf(msg, msg_size, "sfid's copy of the job's serial number (%.300s) is gone, "
			 "and the job gave serial numbers; load the job again", path);
		return -ENOENT;
	}
	if (r == 0 && job_osfi_serial_restore(j, (const char *)text, len) < 0)
		r = -EINVAL;
	free(text);
	if (r < 0)
		snprintf(msg, msg_size, "sfid's copy of the job's serial number (%.300s): %s", path,
			 r == -EINVAL ? "damaged" : sfi_file_strerror(r));
	return r;
}

/* The job that was loaded when sfid last stopped is loaded again, if its files are still
 * the same; otherwise it is ended and a supervisor loads a job. Runs before the loop. */
static void restore_job(struct sfid *d)
{
	struct job_line_token tok;
	struct db_job_row row;
	struct job *j = NULL;
	char msg[512];
	int r;

	r = db_job_active(d->db, &row);
	if (r == -ENOENT)
		return;
	if (r < 0) {
		log_warning("cannot read the loaded job from the database: %s", db_last_error(d->db));
		return;
	}
	if (row.plain) {
		/* A plain job from sfid's copy of its firmware as loaded. */
		char path[PATH_MAX];
		uint8_t *copy = NULL;
		size_t len = 0;

		line_job_copy_path(d, row.id, "plain", path, sizeof(path));
		r = sfi_file_read(path, JOB_PLAIN_COPY_MAX, &copy, &len);
		if (r < 0)
			snprintf(msg, sizeof(msg), "sfid's copy of its firmware (%.300s): %s", path,
				 sfi_file_strerror(r));
		else
			r = job_restore_plain(copy, len, row.firmware, row.go, row.go_address,
					      row.target_count, row.loaded_user, &j, msg,
					      sizeof(msg));
		free(copy);
	} else {
		/* sfid's copies stand for files it may not be able to read where they are. */
		struct job_fds fds = { .image = -1, .modules = -1, .global = -1 };
		char path[PATH_MAX];

		line_job_copy_path(d, row.id, "sfi", path, sizeof(path));
		fds.image = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (row.global_license_file[0]) {
			line_job_copy_path(d, row.id, "lic", path, sizeof(path));
			fds.global = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		}
		if (row.vendor && row.module_file[0]) {
			line_job_copy_path(d, row.id, "mcsv", path, sizeof(path));
			fds.modules = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		}
		if (row.vendor)
			r = job_load_vendor(row.image_path, row.module_file[0] ? row.module_file : NULL,
					    row.global_license_file[0] ? row.global_license_file : NULL,
					    &fds, row.target_count, row.loaded_user, &j, msg, sizeof(msg));
		else
			r = job_load(line_token(d, &tok), row.image_path,
				     row.module_file[0] ? row.module_file : NULL,
				     row.global_license_file[0] ? row.global_license_file : NULL, &fds,
				     row.target_count, row.loaded_user, &j, msg, sizeof(msg));
		if (fds.modules >= 0)
			close(fds.modules);
		if (fds.image >= 0)
			close(fds.image);
		if (fds.global >= 0)
			close(fds.global);
		if (r == 0 && !row.vendor)
			r = restore_serial(d, row.id, j, msg, sizeof(msg));
	}
	if (r == 0 && strcmp(j->digest_hex, row.image_digest) != 0) {
		snprintf(msg, sizeof(msg), "image %.400s changed since the job was loaded",
			 row.image_path);
		r = -EINVAL;
	}
	if (r == 0 && !j->vendor && !j->plain && !tokens_resolve_job(d->tokens, j)) {
		struct token_scan *sc = calloc(1, sizeof(*sc));

		if (sc) {
			token_scan_prepare(d->tokens, j, sc);
			token_scan_run(d->tokens, licensing_ledger(d->licensing), sc);
			if (!token_scan_adopt(d->tokens, sc, j, msg, sizeof(msg)))
				r = -ENOENT;
			free(sc);
		} else {
			snprintf(msg, sizeof(msg), "out of memory");
			r = -ENOMEM;
		}
	}
	if (r != 0) {
		log_warning("job %" PRId64 " was loaded when sfid stopped but cannot be loaded again: "
			    "%s; it is ended, a supervisor loads a job", row.id, msg);
		job_free(j);
		if (db_job_end(licensing_ledger(d->licensing), row.id) < 0 &&
		    db_last_error(licensing_ledger(d->licensing))[0])
			log_debug("job end: %s", db_last_error(licensing_ledger(d->licensing)));
		return;
	}
	j->id = row.id;
	j->installed = row.installed;
	j->failed = row.failed;
	j->refused = row.refused;
	j->halted = row.halted;
	{
		struct db_stats *st = NULL;

		if (db_stats(d->db, row.id, &st) == 0)
			j->started_ms = st->first_ms;
		db_stats_free(st);
	}
	j->complete_told = j->target && j->installed >= j->target;
	j->loaded_ms = row.created_ms;
	d->job = j;
	log_notice("job %" PRId64 " restored: %s, %" PRIu32 " installed, %" PRIu32 " failed, target "
		   "%" PRIu32 "; start the slots to go on", j->id, j->image_path, j->installed,
		   j->failed, j->target);
}

/* ---- signals and shutdown ---- */

static void shutdown_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sfid *d = arg;

	log_warning("shutdown: chips still in progress after %u ms; aborting them safely",
		    d->cfg->shutdown_timeout_ms);
	for (size_t i = 0; i < d->n_slots; i++)
		slot_stop(d->slots[i], "sfid shut down during the install");
	event_base_loopexit(d->base, NULL);
}

static struct event *ev_shutdown_timer;

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct sfid *d = arg;
	struct timeval tv = { .tv_sec = d->cfg->shutdown_timeout_ms / 1000,
			      .tv_usec = (d->cfg->shutdown_timeout_ms % 1000) * 1000 };

	if (d->stopping) {
		log_notice("second signal: stopping now");
		shutdown_timeout_cb(-1, 0, d);
		return;
	}
	log_notice("signal %d: finishing chips in progress (up to %u ms), then exiting", (int)sig,
		   d->cfg->shutdown_timeout_ms);
	sd_notify(0, "STOPPING=1");
	d->stopping = true;
	for (size_t i = 0; i < d->n_slots; i++)
		slot_pause(d->slots[i]);
	ev_shutdown_timer = evtimer_new(d->base, shutdown_timeout_cb, d);
	if (ev_shutdown_timer)
		evtimer_add(ev_shutdown_timer, &tv);
	sfid_slot_settled(d);
}


static void lag_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sfid *d = arg;
	int64_t now = sfid_mono_ms(), late = now - d->lag_expected_ms;

	if (d->lag_expected_ms && late > 0) {
		if (late > d->lag_max_ms)
			d->lag_max_ms = late;
		if (late > 20)
			d->lag_over_20ms++;
	}
	d->lag_probes++;
	d->lag_expected_ms = now + LAG_PROBE_MS;
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	sd_notify(0, "WATCHDOG=1");
}

/* Tells the service manager what the line is doing (systemctl status shows it); sent only
 * when the text changes. */
static void status_cb(evutil_socket_t fd, short what, void *arg)
{
	static char last[256];
	struct sfid *d = arg;
	char text[256];

	if (d->job)
		snprintf(text, sizeof(text), "STATUS=station %s, job %" PRId64 ": %" PRIu32
			 " installed, %" PRIu32 " failed%s, %zu slots",
			 d->cfg->station, d->job->id, d->job->installed, d->job->failed,
			 d->job->target ? "" : " (no target)", d->n_slots);
	else
		snprintf(text, sizeof(text), "STATUS=station %s, no job loaded, %zu slots",
			 d->cfg->station, d->n_slots);
	if (strcmp(text, last) == 0)
		return;
	snprintf(last, sizeof(last), "%s", text);
	sd_notify(0, text);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: sfid --config FILE [--check] [--debug]\n"
		   "  -c, --config FILE   configuration file (INI)\n"
		   "      --check         check the configuration and exit\n"
		   "  -d, --debug         log raw frames and every state change\n"
		   "  -h, --help          this help\n"
		   "  -V, --version       print the version\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'C' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 }
	};
	struct server_options so;
	struct db_signer signer = { 0 };
	struct event *ev_term = NULL, *ev_int = NULL, *ev_wd = NULL, *ev_status = NULL;
	struct event *ev_lag = NULL;
	struct sfid d = { 0 };
	const char *config_path = NULL;
	bool check = false;
	char err[1024];
	uint64_t wd_usec = 0;
	int c, r, ret = 1;

	while ((c = getopt_long(argc, argv, "c:dhV", opts, NULL)) >= 0) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'C':
			check = true;
			break;
		case 'd':
			log_set_max(LOG_PRIO_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("sfid %s\n", SFID_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!config_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	r = config_load(config_path, &d.cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check) {
		unsigned warnings = config_warn_ports(d.cfg, stderr);

		printf("%s: configuration is valid (%zu slots", config_path, d.cfg->n_slots);
		if (warnings)
			printf("; %u cannot open their port now", warnings);
		printf(")\n");
		config_free(d.cfg);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	/* OpenSSL's global state, its configuration file included, is set up here, on the main
	 * thread, before the worker and recorder threads use it: set up from one of them it
	 * would be tied to that thread (and its error state leaked when the thread ends). */
	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
	d.started_ms = sfid_mono_ms();
	d.base = event_base_new();
	if (!d.base) {
		log_error("out of memory");
		goto out;
	}
	r = workers_new(d.base, d.cfg->hsm_workers, &d.workers);
	if (r < 0) {
		log_error("cannot start worker threads: %s", strerror(-r));
		goto out;
	}
	r = open_hsm(&d);
	if (r < 0) {
		if (pin_error(r))
			ret = SFID_EXIT_PIN;
		goto out;
	}
	if (open_db(&d, &signer) < 0)
		goto out;
	restore_job(&d);
	if (line_slots_new(&d) < 0)
		goto out;
	so = (struct server_options){
		.path = d.cfg->socket_path,
		.listen_fd = sd_listen_fds(1) == 1 ? SD_LISTEN_FDS_START : -1,
		.socket_gid = d.cfg->operator_gid,
		.operator_gid = d.cfg->operator_gid,
		.supervisor_gid = d.cfg->supervisor_gid,
		.operator_group = d.cfg->operator_group,
		.supervisor_group = d.cfg->supervisor_group,
		.max_clients = d.cfg->max_clients,
		.max_message = d.cfg->max_message,
		.idle_ms = d.cfg->idle_timeout_ms,
		.line_ms = d.cfg->line_timeout_ms,
		.close_ms = d.cfg->close_timeout_ms,
	};
	r = server_new(d.base, &so, commands_dispatch, &d, &d.server, err, sizeof(err));
	if (r < 0) {
		log_error("control socket: %s", err);
		goto out;
	}
	if (d.cfg->result_hook) {
		d.hooks = hooks_new(d.base, d.cfg->result_hook, d.cfg->result_hook_timeout_ms);
		if (!d.hooks) {
			log_error("cannot set up the result hook %s", d.cfg->result_hook);
			goto out;
		}
	}
	ev_term = evsignal_new(d.base, SIGTERM, signal_cb, &d);
	ev_int = evsignal_new(d.base, SIGINT, signal_cb, &d);
	if (!ev_term || !ev_int || evsignal_add(ev_term, NULL) < 0 || evsignal_add(ev_int, NULL) < 0)
		goto out;
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
		struct timeval tv = { .tv_sec = (time_t)(wd_usec / 2000000),
				      .tv_usec = (suseconds_t)((wd_usec / 2) % 1000000) };

		ev_wd = event_new(d.base, -1, EV_PERSIST, watchdog_cb, NULL);
		if (ev_wd)
			evtimer_add(ev_wd, &tv);
	}
	if (d.cfg->central.conninfo &&
	    shipper_new(&d.cfg->central, d.cfg->db_path, d.cfg->station, &d.shipper, err,
			sizeof(err)) < 0)
		log_error("central: the trail is not shipped: %s", err);
	log_info("sfid %s: station %s, %zu slots, control socket %s", SFID_VERSION, d.cfg->station,
		 d.n_slots, d.cfg->socket_path);
	sd_notify(0, "READY=1");
	ev_status = event_new(d.base, -1, EV_PERSIST, status_cb, &d);
	if (ev_status) {
		struct timeval one_s = { .tv_sec = 1 };

		status_cb(-1, 0, &d);
		evtimer_add(ev_status, &one_s);
	}

	ev_lag = event_new(d.base, -1, EV_PERSIST, lag_cb, &d);
	if (ev_lag) {
		struct timeval probe = { .tv_usec = LAG_PROBE_MS * 1000 };

		lag_cb(-1, 0, &d);
		evtimer_add(ev_lag, &probe);
	}
	event_base_dispatch(d.base);
	log_info("shutting down");
	ret = 0;
out:
	/* Licenses being issued finish and are recorded before anything closes; then every
	 * record queued is written. */
	d.workers = workers_free(d.workers);
	licensing_stop(d.licensing);
	for (size_t i = 0; i < d.n_slots; i++)
		slot_stop(d.slots[i], "sfid shut down during the install");
	d.recorder = recorder_free(d.recorder);
	d.shipper = shipper_free(d.shipper);
	d.hooks = hooks_free(d.hooks);
	d.server = server_free(d.server);
	for (size_t i = 0; i < d.n_slots; i++)
		slot_free(d.slots[i]);
	free(d.slots);
	d.vendor = vendor_free(d.vendor);
	if (ev_term)
		event_free(ev_term);
	if (ev_int)
		event_free(ev_int);
	if (ev_wd)
		event_free(ev_wd);
	if (ev_status)
		event_free(ev_status);
	if (ev_lag)
		event_free(ev_lag);
	if (ev_shutdown_timer)
		event_free(ev_shutdown_timer);
	job_free(d.job);
	d.db = db_close(d.db);
	d.licensing = licensing_free(d.licensing);
	d.tokens = tokens_free(d.tokens);
	if (d.base)
		event_base_free(d.base);
	config_free(d.cfg);
	return ret;
}

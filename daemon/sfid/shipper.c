/* The shipper thread: local trail -> central store. See shipper.h and docs/central.md. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "audit-cursor.h"
#include "central.h"
#include "db.h"
#include "log.h"
#include "sfi-time.h"
#include "shipper.h"

#define TARGET "central"
#define RETRY_MIN_MS 500
/* The acknowledged position is written at most this often while records flow: a crash
 * pushes at most this much again, and the centre skips what it holds. */
#define ACK_WRITE_MS 1000
/* After a refusal (a fork) the operator has to act; look again this rarely. */
#define REFUSED_RETRY_MS 60000

enum ship_state {
	SHIP_CONNECTING,
	SHIP_SHIPPING,
	SHIP_IDLE,
	SHIP_UNREACHABLE,
	SHIP_REFUSED,
	_SHIP_STATE_MAX,
};

static const char *const state_names[_SHIP_STATE_MAX] = {
	[SHIP_CONNECTING] = "connecting",
	[SHIP_SHIPPING] = "shipping",
	[SHIP_IDLE] = "idle",
	[SHIP_UNREACHABLE] = "unreachable",
	[SHIP_REFUSED] = "refused",
};

struct shipper {
	const struct central_config *cfg;
	char *db_path;
	char *station;
	pthread_t thread;
	bool started;

	/* Guarded by lock: the status, the stop flag and the cancel handle. */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;
	PGcancel *cancel;
	enum ship_state state;
	uint64_t acked;        /* the centre holds the trail up to here */
	uint64_t head;         /* the local trail's last record, as last seen */
	uint64_t pushed;       /* records the centre stored from this process */
	uint64_t duplicates;   /* records it already held (repeated delivery) */
	uint64_t batches;
	unsigned failures;     /* consecutive failed attempts */
	int64_t last_ack_ms;   /* wall clock of the last acknowledgement, 0 none */
	char error[CENTRAL_REFUSAL_MAX + 64]; /* the last failure or refusal, "" none */

	/* The thread's own. */
	struct db *db;
	PGconn *pg;
	struct db_audit_cursor cursor;
	uint8_t acked_hash[DB_HASH_SIZE];
	uint64_t durable;      /* the acknowledged seq written to the database */
	int64_t durable_ms;    /* when, monotonic */
};

static void set_state(struct shipper *s, enum ship_state st, const char *error)
{
	pthread_mutex_lock(&s->lock);
	s->state = st;
	if (error)
		snprintf(s->error, sizeof(s->error), "%s", error);
	pthread_mutex_unlock(&s->lock);
}

/* Waits ms, or until stopped. Returns true when stopping. */
static bool pause_ms(struct shipper *s, int64_t ms)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&s->lock);
	while (!s->stop && pthread_cond_timedwait(&s->wake, &s->lock, &ts) == 0)
		;
	stop = s->stop;
	pthread_mutex_unlock(&s->lock);
	return stop;
}

static bool stopping(struct shipper *s)
{
	bool stop;

	pthread_mutex_lock(&s->lock);
	stop = s->stop;
	pthread_mutex_unlock(&s->lock);
	return stop;
}

static void disconnect(struct shipper *s)
{
	pthread_mutex_lock(&s->lock);
	if (s->cancel)
		PQfreeCancel(s->cancel);
	s->cancel = NULL;
	pthread_mutex_unlock(&s->lock);
	if (s->pg)
		PQfinish(s->pg);
	s->pg = NULL;
}

/* Writes the acknowledged position when it moved and the last write is old enough (or
 * force). A busy database is no failure: the next round writes it. */
static void write_ack(struct shipper *s, bool force)
{
	uint64_t acked;

	pthread_mutex_lock(&s->lock);
	acked = s->acked;
	pthread_mutex_unlock(&s->lock);
	if (acked == s->durable || (!force && sfi_monotonic_ms() - s->durable_ms < ACK_WRITE_MS))
		return;
	if (db_shipped_set(s->db, TARGET, acked, s->acked_hash) == 0) {
		s->durable = acked;
		s->durable_ms = sfi_monotonic_ms();
	} else {
		log_debug("central: the acknowledged position waits: %s", db_last_error(s->db));
	}
}

/* A test hook: with SFID_TEST_SHIPPER_HOLD naming a file, the shipper stops after a push
 * the centre committed and before it records the acknowledgement, for as long as that file
 * exists, and says so in the file's sibling "<file>.held" (so a test can kill sfid in that
 * window). */
static void test_hold(struct shipper *s, uint64_t seq)
{
	const char *path = getenv("SFID_TEST_SHIPPER_HOLD");
	char held[4096];
	FILE *f;

	if (!path || !*path || access(path, F_OK) != 0)
		return;
	snprintf(held, sizeof(held), "%s.held", path);
	f = fopen(held, "we");
	if (f) {
		fprintf(f, "%" PRIu64 "\n", seq);
		fclose(f);
	}
	while (access(path, F_OK) == 0 && !pause_ms(s, 50))
		;
}

/* Connects and lines the position up with what the centre holds: when the centre holds
 * more than the last acknowledgement (a push whose acknowledgement a crash lost), and the
 * local trail agrees with it, the position moves there. */
static int connect_central(struct shipper *s)
{
	struct central_conn_options o = {
		.conninfo = s->cfg->conninfo,
		.password_file = s->cfg->password_file,
		.password_credential = s->cfg->password_credential,
		.connect_timeout_s = s->cfg->connect_timeout_s,
		.application_name = "sfid",
	};
	uint8_t head_hash[CENTRAL_HASH_SIZE];
	uint64_t head = 0;
	char err[768];
	int r;

	set_state(s, SHIP_CONNECTING, NULL);
	r = central_connect(&o, &s->pg, err, sizeof(err));
	if (r == 0)
		r = central_head(s->pg, s->station, &head, head_hash, err, sizeof(err));
	if (r < 0) {
		disconnect(s);
		set_state(s, SHIP_UNREACHABLE, err);
		return r;
	}
	pthread_mutex_lock(&s->lock);
	s->cancel = PQgetCancel(s->pg);
	pthread_mutex_unlock(&s->lock);

	if (head > s->cursor.seq) {
		struct db_audit_cursor probe;
		struct db_audit_batch b = { 0 };

		/* Does the local trail hold record head with that hash? */
		db_audit_cursor_init(&probe, s->db, head, head_hash);
		r = db_audit_cursor_next(&probe, 1, 1, &b);
		db_audit_batch_clear(&b);
		if (r == 0) {
			log_info("central: the centre holds the trail up to record %" PRIu64
				 " already; shipping resumes after it", head);
			db_audit_cursor_init(&s->cursor, s->db, head, head_hash);
			memcpy(s->acked_hash, head_hash, DB_HASH_SIZE);
			pthread_mutex_lock(&s->lock);
			s->acked = head;
			pthread_mutex_unlock(&s->lock);
			write_ack(s, true);
		}
		/* Otherwise the push says what is wrong. */
	} else if (head < s->cursor.seq) {
		/* The centre lost records it acknowledged (restored from a backup): they go
		 * again from its head. */
		log_warning("central: the centre holds the trail of %s only up to record %" PRIu64
			    " although it acknowledged %" PRIu64 "; shipping again from there",
			    s->station, head, s->cursor.seq);
		db_audit_cursor_init(&s->cursor, s->db, head, head ? head_hash : NULL);
	}
	return 0;
}

/* One round: a batch read and pushed. Returns 1 when records were shipped, 0 when there
 * were none, -errno on a failure (state and error set). */
static int ship_batch(struct shipper *s)
{
	struct db_audit_batch b = { 0 };
	struct db_audit_cursor before = s->cursor;
	struct central_push_result res;
	const char **lines = NULL;
	char err[768];
	int r;

	r = db_audit_cursor_next(&s->cursor, s->cfg->batch_records,
				 (size_t)s->cfg->batch_kb * 1024, &b);
	if (r < 0) {
		snprintf(err, sizeof(err), "reading the local trail: %s", db_last_error(s->db));
		set_state(s, r == -ESTALE ? SHIP_REFUSED : SHIP_UNREACHABLE, err);
		return r;
	}
	if (b.n == 0)
		return 0;
	set_state(s, SHIP_SHIPPING, NULL);
	lines = calloc(b.n, sizeof(*lines));
	if (!lines) {
		db_audit_batch_clear(&b);
		s->cursor = before;
		set_state(s, SHIP_UNREACHABLE, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < b.n; i++)
		lines[i] = b.records[i].line;
	r = central_push(s->pg, s->station, lines, b.n, &res, err, sizeof(err));
	free(lines);
	if (r == 0 && res.refused) {
		/* Nothing past the refused record is acknowledged; what went before is. */
		uint64_t held = res.head;

		log_error("central: %s", res.reason);
		set_state(s, SHIP_REFUSED, res.reason);
		s->cursor = before;
		for (size_t i = 0; i < b.n; i++)
			if (b.records[i].seq == held && held > before.seq) {
				db_audit_cursor_init(&s->cursor, s->db, held, b.records[i].hash);
				memcpy(s->acked_hash, b.records[i].hash, DB_HASH_SIZE);
				pthread_mutex_lock(&s->lock);
				s->acked = held;
				pthread_mutex_unlock(&s->lock);
			}
		db_audit_batch_clear(&b);
		write_ack(s, true);
		return -EPERM;
	}
	if (r < 0) {
		s->cursor = before;
		db_audit_batch_clear(&b);
		set_state(s, SHIP_UNREACHABLE, err);
		return r;
	}
	test_hold(s, b.records[b.n - 1].seq);
	memcpy(s->acked_hash, b.records[b.n - 1].hash, DB_HASH_SIZE);
	pthread_mutex_lock(&s->lock);
	s->acked = b.records[b.n - 1].seq;
	s->pushed += res.inserted;
	s->duplicates += res.duplicates;
	s->batches++;
	s->failures = 0;
	s->last_ack_ms = sfi_realtime_ms();
	s->error[0] = '\0';
	pthread_mutex_unlock(&s->lock);
	db_audit_batch_clear(&b);
	write_ack(s, false);
	return 1;
}

/* The local head, for the backlog `sfictl status` shows, connected or not. */
static void refresh_head(struct shipper *s)
{
	uint8_t hash[DB_HASH_SIZE];
	uint64_t head;

	if (db_audit_head(s->db, &head, hash) == 0) {
		pthread_mutex_lock(&s->lock);
		s->head = head;
		pthread_mutex_unlock(&s->lock);
	}
}

static void *shipper_main(void *arg)
{
	struct shipper *s = arg;
	int64_t backoff = RETRY_MIN_MS;
	int r;

	while (!stopping(s)) {
		refresh_head(s);
		if (!s->pg && connect_central(s) < 0) {
			pthread_mutex_lock(&s->lock);
			if (s->failures++ == 0)
				log_warning("central: %s; the line runs on, shipping resumes when the "
					    "server answers", s->error);
			pthread_mutex_unlock(&s->lock);
			if (pause_ms(s, backoff))
				break;
			backoff = backoff * 2 > s->cfg->retry_max_ms ? s->cfg->retry_max_ms :
								       backoff * 2;
			continue;
		}
		r = ship_batch(s);
		if (r > 0) {
			backoff = RETRY_MIN_MS;
			continue;
		}
		if (r == 0) {
			write_ack(s, true);
			set_state(s, SHIP_IDLE, NULL);
			pause_ms(s, s->cfg->interval_ms);
			continue;
		}
		if (r == -EPERM || r == -ESTALE) {
			pause_ms(s, REFUSED_RETRY_MS);
			continue;
		}
		/* The connection or the server failed: reconnect later. */
		pthread_mutex_lock(&s->lock);
		if (s->failures++ == 0)
			log_warning("central: %s; the line runs on, shipping resumes when the "
				    "server answers", s->error);
		pthread_mutex_unlock(&s->lock);
		disconnect(s);
		if (pause_ms(s, backoff))
			break;
		backoff = backoff * 2 > s->cfg->retry_max_ms ? s->cfg->retry_max_ms : backoff * 2;
	}
	write_ack(s, true);
	disconnect(s);
	return NULL;
}

int shipper_new(const struct central_config *cfg, const char *db_path, const char *station,
		struct shipper **ret, char *err, size_t errlen)
{
	pthread_condattr_t ca;
	struct shipper *s;
	uint64_t seq;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s || !(s->db_path = strdup(db_path)) || !(s->station = strdup(station))) {
		if (s)
			free(s->db_path);
		free(s);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->cfg = cfg;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &ca);
	pthread_condattr_destroy(&ca);

	r = db_open_role(db_path, DB_ROLE_FOLLOWER, NULL, &s->db, err, errlen);
	if (r == 0) {
		r = db_shipped_get(s->db, TARGET, &seq, s->acked_hash);
		if (r < 0)
			snprintf(err, errlen, "%s", db_last_error(s->db));
	}
	if (r < 0) {
		shipper_free(s);
		return r;
	}
	s->acked = s->durable = seq;
	s->durable_ms = sfi_monotonic_ms();
	db_audit_cursor_init(&s->cursor, s->db, seq, seq ? s->acked_hash : NULL);
	s->state = SHIP_CONNECTING;
	r = -pthread_create(&s->thread, NULL, shipper_main, s);
	if (r < 0) {
		snprintf(err, errlen, "cannot start the shipper thread: %s", strerror(-r));
		shipper_free(s);
		return r;
	}
	s->started = true;
	*ret = s;
	return 0;
}

struct json_object *shipper_status_json(struct shipper *s)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	pthread_mutex_lock(&s->lock);
	json_object_object_add(o, "state", json_object_new_string(state_names[s->state]));
	json_object_object_add(o, "acknowledged_seq", json_object_new_int64((int64_t)s->acked));
	json_object_object_add(o, "local_seq", json_object_new_int64((int64_t)s->head));
	json_object_object_add(o, "backlog", json_object_new_int64(
		s->head > s->acked ? (int64_t)(s->head - s->acked) : 0));
	json_object_object_add(o, "shipped", json_object_new_int64((int64_t)s->pushed));
	json_object_object_add(o, "duplicates", json_object_new_int64((int64_t)s->duplicates));
	json_object_object_add(o, "batches", json_object_new_int64((int64_t)s->batches));
	json_object_object_add(o, "failures", json_object_new_int64(s->failures));
	json_object_object_add(o, "last_ack_ms", s->last_ack_ms ?
			       json_object_new_int64(s->last_ack_ms) : NULL);
	json_object_object_add(o, "error", s->error[0] ? json_object_new_string(s->error) : NULL);
	pthread_mutex_unlock(&s->lock);
	return o;
}

struct shipper *shipper_free(struct shipper *s)
{
	if (!s)
		return NULL;
	if (s->started) {
		char buf[256];

		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_broadcast(&s->wake);
		/* A push or connect in flight returns at once. */
		if (s->cancel)
			PQcancel(s->cancel, buf, sizeof(buf));
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thread, NULL);
	}
	db_close(s->db);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->lock);
	free(s->db_path);
	free(s->station);
	free(s);
	return NULL;
}

/* sfid's licensing without the event loop: the chain that licenses one chip, run as a worker
 * runs it, against a real SoftHSM2 token made in a temp dir (opened and logged in by the
 * tokens module, as sfid opens its line token) and a real SQLite ledger. Checks a first
 * license (the chip unwraps the image key from it), its reuse (no count spent), a spend
 * made outside sfid (reconciled into the trail before the next spend), an exhausted
 * counter (the line halts, nothing is recorded for the chip), a global license (no ledger,
 * no count), a chip that reports the image installed (its open license is adopted), a pool
 * of two tokens whose chains run on two threads at once over one ledger connection (each
 * token's counter falls by what the ledger records as issued by it; a token of another
 * firmware is refused from the pool), and a token that goes away (the line halts, the
 * reservation is settled).
 * Usage: test-licensing SOFTHSM_MODULE */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "chipside.h"
#include "db.h"
#include "hsm.h"
#include "hsm-provision.h"
#include "licensing.h"
#include "log.h"
#include "tokens.h"
#include "util.h"

#define DEVICE 0x484
#define GRANTED 3

static char tmpdir[512];
static int failures;

#define CHECK(cond)                                                                       \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
			failures++;                                                       \
		}                                                                         \
	} while (0)
#define REQUIRE(cond)                                                                     \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "FATAL %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
			cleanup();                                                        \
			exit(1);                                                          \
		}                                                                         \
	} while (0)

static void cleanup(void)
{
	char cmd[600];

	if (!tmpdir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	(void)!system(cmd);
}

static int run(char *const argv[])
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

		dup2(fd, 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_file(const char *name, const char *content)
{
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs(content, f);
	fclose(f);
	chmod(path, 0600);
}

struct chip {
	EVP_PKEY *key;
	uint8_t uid[OSFI_UID_LEN];
	char uid_hex[2 * OSFI_UID_LEN + 1];
	uint8_t cert[OSFI_CERT_LEN];
};

static void chip_new(struct chip *c, EVP_PKEY *ca, uint8_t tag)
{
	c->key = chip_keygen();
	REQUIRE(c->key);
	REQUIRE(RAND_bytes(c->uid, sizeof(c->uid)) == 1);
	c->uid[0] = tag;
	sfid_hex(c->uid, sizeof(c->uid), c->uid_hex);
	REQUIRE(chip_cert_make(ca, c->key, DEVICE, c->uid, c->cert) == 0);
}

/* The line: a token, a ledger, a job with one counted license for the image. */
static struct {
	struct tokens *tokens;
	struct db *ledger;
	int64_t job_id;
	uint8_t image_id[OSFI_ID_LEN];
	uint8_t key[OSFI_KEY_LEN];
	uint8_t hsm_pub[OSFI_PUBKEY_LEN];
} line;

/* A chain for chip c as licensing's queue fills it in. */
static void chain_for(struct license_chain *ch, const struct chip *c, bool global,
		      const uint8_t *global_record)
{
	const struct token *t = tokens_at(line.tokens, 0);
	struct job_license *l = &ch->need[0];
	int64_t attempt;

	REQUIRE(db_attempt_begin(line.ledger, line.job_id, "A", &attempt) == 0);
	memset(ch, 0, sizeof(*ch));
	ch->ledger = line.ledger;
	snprintf(ch->uid_hex, sizeof(ch->uid_hex), "%s", c->uid_hex);
	memcpy(ch->cert, c->cert, OSFI_CERT_LEN);
	ch->job_id = line.job_id;
	ch->attempt_id = attempt;
	ch->device_id = DEVICE;
	memcpy(ch->image_id, line.image_id, OSFI_ID_LEN);
	ch->n = 1;
	l->target = OSFI_TARGET_IMAGE;
	memcpy(l->firmware_id, line.image_id, OSFI_ID_LEN);
	sfid_hex(line.image_id, OSFI_ID_LEN, l->firmware_id_hex);
	if (global) {
		l->global = true;
		l->token = -1;
		memcpy(l->record, global_record, OSFI_LICENSE_LEN);
		return;
	}
	l->token = 0;
	ch->hsm[0] = t->h;
	snprintf(ch->serial[0], sizeof(ch->serial[0]), "%s", t->serial);
}

static uint32_t counter(void)
{
	uint32_t n = 0xffffffff;

	CHECK(hsm_counter_read(tokens_line(line.tokens), &n) == 0);
	return n;
}

/* The chip's side: the license carries the image key for this chip only. */
static bool chip_opens(const struct chip *c, const uint8_t record[OSFI_LICENSE_LEN])
{
	struct osfi_license l;
	uint8_t z[32], k[OSFI_KEY_LEN];

	if (osfi_license_decode(record, OSFI_LICENSE_LEN, &l) < 0 ||
	    memcmp(l.uid, c->uid, OSFI_UID_LEN) != 0 || chip_ecdh_x(c->key, line.hsm_pub, z) < 0 ||
	    chip_unwrap(&l, z, k) < 0)
		return false;
	return memcmp(k, line.key, sizeof(k)) == 0;
}

static enum db_license_state ledger_state(const struct chip *c, int64_t *ret_id)
{
	char fw[2 * OSFI_ID_LEN + 1];
	struct db_license *l = NULL;
	enum db_license_state s;

	sfid_hex(line.image_id, OSFI_ID_LEN, fw);
	if (db_ledger_find_reusable(line.ledger, c->uid_hex, fw, OSFI_TARGET_IMAGE, &l) < 0)
		return _DB_LICENSE_STATE_MAX;
	s = l->state;
	if (ret_id)
		*ret_id = l->id;
	db_license_free(l);
	return s;
}

/* A new token in the store (before the module is loaded: SoftHSM2 lists the tokens it
 * finds at C_Initialize). */
static void token_init(const char *label)
{
	char *init[] = { "softhsm2-util", "--init-token", "--free", "--label", (char *)label,
			 "--so-pin", "5678", "--pin", "1234", NULL };

	REQUIRE(run(init) == 0);
}

/* Provisions token label for firmware id fw with count licenses. */
static void provision(const char *module, EVP_PKEY *ca, const char *label,
		      const uint8_t fw[OSFI_ID_LEN], uint32_t count)
{
	struct hsm_provision p = { .max_count = count };
	char pin[600];
	struct hsm *h = NULL;

	snprintf(pin, sizeof(pin), "%s/pin", tmpdir);
	memcpy(p.image_key, line.key, sizeof(line.key));
	memcpy(p.firmware_id, fw, OSFI_ID_LEN);
	REQUIRE(chip_point(ca, p.ca_pub) == 0);
	REQUIRE(hsm_open(module, label, NULL, &h) == 0);
	REQUIRE(hsm_login_pin_file(h, pin) == 0);
	REQUIRE(hsm_provision_token(h, &p) == 0);
	hsm_close(h);
}

/* ---- a pool: chains on two tokens at once ---- */

#define POOL_GRANTED 10
#define POOL_CHIPS 8	/* per token */

struct pool_thread {
	struct tokens *tokens;
	size_t token;
	pthread_mutex_t *lock;
	EVP_PKEY *ca;
	int64_t attempts[POOL_CHIPS];
	int issued;
	uint32_t last_after;
};

static void *pool_thread_main(void *arg)
{
	struct pool_thread *pt = arg;
	const struct token *t = tokens_at(pt->tokens, pt->token);
	struct license_chain *ch = calloc(1, sizeof(*ch));

	if (!ch)
		return NULL;
	for (int k = 0; k < POOL_CHIPS; k++) {
		struct chip c;

		chip_new(&c, pt->ca, (uint8_t)(0x80 + 16 * pt->token + (size_t)k));
		memset(ch, 0, sizeof(*ch));
		ch->ledger = line.ledger;
		ch->lock = pt->lock;
		snprintf(ch->uid_hex, sizeof(ch->uid_hex), "%s", c.uid_hex);
		memcpy(ch->cert, c.cert, OSFI_CERT_LEN);
		ch->job_id = line.job_id;
		ch->attempt_id = pt->attempts[k];
		ch->device_id = DEVICE;
		memcpy(ch->image_id, line.image_id, OSFI_ID_LEN);
		ch->n = 1;
		ch->need[0].target = OSFI_TARGET_IMAGE;
		memcpy(ch->need[0].firmware_id, line.image_id, OSFI_ID_LEN);
		sfid_hex(line.image_id, OSFI_ID_LEN, ch->need[0].firmware_id_hex);
		ch->need[0].token = (int)pt->token;
		ch->hsm[0] = t->h;
		snprintf(ch->serial[0], sizeof(ch->serial[0]), "%s", t->serial);
		license_chain_run(ch);
		if (!ch->failed && ch->set.counted[0]) {
			pt->issued++;
			pt->last_after = ch->set.counter_after[0];
		}
		EVP_PKEY_free(c.key);
	}
	explicit_bzero(ch, sizeof(*ch));
	free(ch);
	return NULL;
}

static void pool_check(const char *module, EVP_PKEY *ca)
{
	static const char *const pool[] = { "pool-b" }, *const other[] = { "pool-x" };
	struct tokens_params tp = { .module = module };
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct pool_thread pt[2];
	pthread_t th[2];
	uint8_t fw_other[OSFI_ID_LEN];
	struct tokens *tk = NULL;
	char pin[600];

	snprintf(pin, sizeof(pin), "%s/pin", tmpdir);
	provision(module, ca, "pool-a", line.image_id, POOL_GRANTED);
	provision(module, ca, "pool-b", line.image_id, POOL_GRANTED);
	REQUIRE(RAND_bytes(fw_other, sizeof(fw_other)) == 1);
	provision(module, ca, "pool-x", fw_other, POOL_GRANTED);
	tp.pin_file = pin;
	REQUIRE(tokens_new(&tp, &tk) == 0);
	REQUIRE(tokens_open_line(tk, "pool-a") == 0);
	CHECK(tokens_open_pool(tk, other, 1) == -HSM_ERR_WRONG_FIRMWARE_ID);
	CHECK(tokens_count(tk) == 1);
	REQUIRE(tokens_open_pool(tk, pool, 1) == 0);
	REQUIRE(tokens_count(tk) == 2);
	CHECK(tokens_pool_size(tk, 0) == 2 && tokens_pool_size(tk, 1) == 2);
	CHECK(strcmp(tokens_at(tk, 0)->serial, tokens_at(tk, 1)->serial) != 0);
	for (size_t i = 0; i < 2; i++) {
		struct db_diff *diffs = NULL;
		size_t n = 0;

		REQUIRE(db_reconcile_granted(line.ledger, tokens_at(tk, i)->serial, POOL_GRANTED,
					     POOL_GRANTED, &diffs, &n) == 0);
		free(diffs);
		pt[i] = (struct pool_thread){ .tokens = tk, .token = i, .lock = &lock, .ca = ca };
		for (int k = 0; k < POOL_CHIPS; k++)
			REQUIRE(db_attempt_begin(line.ledger, line.job_id, "P", &pt[i].attempts[k]) ==
				0);
	}
	for (size_t i = 0; i < 2; i++)
		REQUIRE(pthread_create(&th[i], NULL, pool_thread_main, &pt[i]) == 0);
	for (size_t i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	for (size_t i = 0; i < 2; i++) {
		uint32_t left = 0;
		uint64_t known = 0;

		CHECK(pt[i].issued == POOL_CHIPS);
		CHECK(pt[i].last_after == POOL_GRANTED - POOL_CHIPS);
		CHECK(hsm_counter_read(tokens_at(tk, i)->h, &left) == 0 &&
		      left == POOL_GRANTED - POOL_CHIPS);
		CHECK(db_token_counter(line.ledger, tokens_at(tk, i)->serial, &known) == 0 &&
		      known == POOL_GRANTED - POOL_CHIPS);
	}
	pthread_mutex_destroy(&lock);
	tokens_free(tk);
}

static void setup(const char *module, EVP_PKEY *ca)
{
	struct tokens_params tp = { .module = module };
	struct hsm_provision p = { .max_count = GRANTED };
	struct db_job dj = { .image_path = "/line/image.sfi", .loaded_user = "test",
			     .target_count = 0 };
	char conf[1200], pin[600], dbpath[600], id_hex[2 * OSFI_ID_LEN + 1], err[256];
	char *init[] = { "softhsm2-util", "--init-token", "--free", "--label", "line",
			 "--so-pin", "5678", "--pin", "1234", NULL };
	struct hsm *h = NULL;
	uint8_t ca_pub[OSFI_PUBKEY_LEN];

	snprintf(conf, sizeof(conf), "directories.tokendir = %s\nobjectstore.backend = file\n"
		 "log.level = ERROR\n", tmpdir);
	write_file("softhsm2.conf", conf);
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", tmpdir);
	setenv("SOFTHSM2_CONF", conf, 1);
	write_file("pin", "1234\n");
	snprintf(pin, sizeof(pin), "%s/pin", tmpdir);
	REQUIRE(run(init) == 0);
	token_init("pool-a");
	token_init("pool-b");
	token_init("pool-x");

	/* Provisioned as sfi-hsm does for the OEM. */
	REQUIRE(RAND_bytes(line.key, sizeof(line.key)) == 1);
	REQUIRE(RAND_bytes(line.image_id, sizeof(line.image_id)) == 1);
	memcpy(p.image_key, line.key, sizeof(line.key));
	memcpy(p.firmware_id, line.image_id, OSFI_ID_LEN);
	REQUIRE(chip_point(ca, p.ca_pub) == 0);
	REQUIRE(hsm_open(module, "line", NULL, &h) == 0);
	REQUIRE(hsm_login_pin_file(h, pin) == 0);
	REQUIRE(hsm_provision_token(h, &p) == 0);
	hsm_close(h);

	/* Opened as sfid opens its line token. */
	tp.pin_file = pin;
	REQUIRE(tokens_new(&tp, &line.tokens) == 0);
	REQUIRE(tokens_open_line(line.tokens, "line") == 0);
	CHECK(tokens_count(line.tokens) == 1);
	CHECK(strcmp(tokens_at(line.tokens, 0)->label, "line") == 0);
	CHECK(memcmp(tokens_at(line.tokens, 0)->firmware_id, line.image_id, OSFI_ID_LEN) == 0);
	REQUIRE(tokens_ca_pub(line.tokens));
	REQUIRE(chip_point(ca, ca_pub) == 0);
	CHECK(memcmp(tokens_ca_pub(line.tokens), ca_pub, OSFI_PUBKEY_LEN) == 0);
	CHECK(token_granted(tokens_line(line.tokens)) == GRANTED);
	REQUIRE(hsm_license_pubkey(tokens_line(line.tokens), line.hsm_pub) == 0);

	snprintf(dbpath, sizeof(dbpath), "%s/sfid.db", tmpdir);
	REQUIRE(db_open(dbpath, &(struct db_options){ 0 }, &line.ledger, err, sizeof(err)) == 0);
	sfid_hex(line.image_id, OSFI_ID_LEN, id_hex);
	dj.image_id = id_hex;
	dj.image_digest = id_hex;
	REQUIRE(db_job_create(line.ledger, &dj, &line.job_id) == 0);
	/* sfid reconciles its line token at startup: the ledger then knows the counter. */
	{
		struct db_diff *diffs = NULL;
		size_t n = 0;

		REQUIRE(db_reconcile_granted(line.ledger, tokens_at(line.tokens, 0)->serial, GRANTED,
					     GRANTED, &diffs, &n) == 0);
		free(diffs);
	}
}

int main(int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR");
	struct license_chain *ch = calloc(1, sizeof(*ch));
	struct chip c1, c2, c3, c4, c5;
	uint8_t first[OSFI_LICENSE_LEN], global[OSFI_LICENSE_LEN];
	struct license_set set;
	int64_t id1 = 0, id = 0;
	EVP_PKEY *ca;

	if (argc != 2) {
		fprintf(stderr, "usage: test-licensing SOFTHSM_MODULE\n");
		return 2;
	}
	if (access(argv[1], R_OK) != 0) {
		printf("SKIP: no SoftHSM2 module at %s\n", argv[1]);
		return 77;
	}
	REQUIRE(ch);
	log_set_max(LOG_PRIO_ERR);
	snprintf(tmpdir, sizeof(tmpdir), "%s/sfid-licensing-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	REQUIRE(mkdtemp(tmpdir));
	ca = chip_keygen();
	REQUIRE(ca);
	setup(argv[1], ca);
	chip_new(&c1, ca, 1);
	chip_new(&c2, ca, 2);
	chip_new(&c3, ca, 3);
	chip_new(&c4, ca, 4);
	chip_new(&c5, ca, 5);

	/* A first chip: intent, HSM, record; the chip opens the license. */
	chain_for(ch, &c1, false, NULL);
	license_chain_run(ch);
	CHECK(!ch->failed);
	CHECK(ch->set.n == 1 && ch->set.id[0] > 0 && !ch->set.reused[0]);
	CHECK(ch->set.counted[0] && ch->set.counter_after[0] == GRANTED - 1);
	CHECK(counter() == GRANTED - 1);
	CHECK(chip_opens(&c1, ch->set.record[0]));
	CHECK(!chip_opens(&c2, ch->set.record[0]));
	CHECK(ledger_state(&c1, &id1) == DB_LICENSE_ISSUED && id1 == ch->set.id[0]);
	memcpy(first, ch->set.record[0], OSFI_LICENSE_LEN);

	/* The chip reports the image installed though its outcome was not recorded: its
	 * issued license is the one it installed. */
	CHECK(license_adopt(line.ledger, &(struct job){ .id = line.job_id, .n_lic = 1,
				.lic = { ch->need[0] } }, c1.uid_hex, &set));
	CHECK(set.n == 1 && set.id[0] == id1 && set.reused[0]);
	CHECK(!license_adopt(line.ledger, &(struct job){ .id = line.job_id, .n_lic = 1,
				 .lic = { ch->need[0] } }, c2.uid_hex, &set));
	CHECK(set.n == 0);

	/* Its install failed: the same chip gets the same license again, no count spent. */
	CHECK(db_ledger_not_installed(line.ledger, id1, "test: install failed") == 0);
	chain_for(ch, &c1, false, NULL);
	license_chain_run(ch);
	CHECK(!ch->failed);
	CHECK(ch->set.id[0] == id1 && ch->set.reused[0] && !ch->set.counted[0]);
	CHECK(memcmp(ch->set.record[0], first, OSFI_LICENSE_LEN) == 0);
	CHECK(counter() == GRANTED - 1);

	/* A spend outside sfid (sfi-hsm license): the next spend states it in the trail
	 * first, then goes on from the token's counter. */
	{
		struct hsm_license_request req = { .cert = c2.cert, .cert_len = OSFI_CERT_LEN,
						   .device_id = DEVICE };
		struct hsm_license_result res;
		struct db_counter_change *chg = NULL;
		size_t n = 0;

		memcpy(req.image_id, line.image_id, OSFI_ID_LEN);
		CHECK(hsm_license_issue(tokens_line(line.tokens), &req, GRANTED - 1, &res) == 0);
		CHECK(counter() == GRANTED - 2);
		chain_for(ch, &c3, false, NULL);
		license_chain_run(ch);
		CHECK(!ch->failed);
		CHECK(ch->set.counted[0] && ch->set.counter_after[0] == GRANTED - 3);
		CHECK(chip_opens(&c3, ch->set.record[0]));
		CHECK(db_counter_changes(line.ledger, tokens_at(line.tokens, 0)->serial, 10, &chg,
					 &n) == 0);
		CHECK(n == 1 && chg && chg[0].kind == DB_DIFF_UNRECORDED_SPENDS &&
		      chg[0].expected == GRANTED - 1 && chg[0].actual == GRANTED - 2);
		free(chg);
	}

	/* Exhausted: the line halts, nothing is issued or recorded for the chip. */
	CHECK(counter() == 0);
	chain_for(ch, &c4, false, NULL);
	license_chain_run(ch);
	CHECK(ch->failed && ch->halt[0] && strstr(ch->cause, "exhausted"));
	CHECK(strcmp(ch->halt, ch->cause) == 0);
	CHECK(ch->empty == 0);	/* its token ran dry: a pool would pass it over */
	CHECK(ch->set.id[0] == 0 && !ch->set.counted[0]);
	CHECK(ledger_state(&c4, NULL) == _DB_LICENSE_STATE_MAX);

	/* A global license: the same record for every chip, no ledger, no count, even at 0. */
	REQUIRE(RAND_bytes(global, sizeof(global)) == 1);
	chain_for(ch, &c4, true, global);
	license_chain_run(ch);
	CHECK(!ch->failed);
	CHECK(ch->set.n == 1 && ch->set.id[0] == 0 && !ch->set.counted[0]);
	CHECK(memcmp(ch->set.record[0], global, OSFI_LICENSE_LEN) == 0);
	CHECK(ledger_state(&c4, NULL) == _DB_LICENSE_STATE_MAX);

	/* A pool of two tokens: two chains at once, one per token, one ledger connection. */
	pool_check(argv[1], ca);

	/* The token goes away (its files deleted under the open session): the line halts
	 * and no reservation is left open for the chip. */
	{
		char cmd[700];

		snprintf(cmd, sizeof(cmd), "find '%s' -mindepth 1 -type d -exec rm -rf {} +",
			 tmpdir);
		CHECK(system(cmd) == 0);
		chain_for(ch, &c5, false, NULL);
		license_chain_run(ch);
		CHECK(ch->failed && ch->halt[0]);
		CHECK(ch->set.id[0] == 0);
		CHECK(ledger_state(&c5, &id) == _DB_LICENSE_STATE_MAX);
	}

	explicit_bzero(ch, sizeof(*ch));
	free(ch);
	line.ledger = db_close(line.ledger);
	line.tokens = tokens_free(line.tokens);
	EVP_PKEY_free(c1.key);
	EVP_PKEY_free(c2.key);
	EVP_PKEY_free(c3.key);
	EVP_PKEY_free(c4.key);
	EVP_PKEY_free(c5.key);
	EVP_PKEY_free(ca);
	cleanup();
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("licensing: first license, reuse, outside spend, exhausted, global, adopted, "
	       "pool of two on two threads, token gone: ok\n");
	return 0;
}

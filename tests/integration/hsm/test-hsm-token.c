/* hsm/ against real SoftHSM2 tokens in a temp dir: provisioning, counted licenses under
 * four threads, refusals that spend nothing, login errors, audit signatures, global
 * licenses, and a token deleted while in use.
 * Usage: test-hsm-token SOFTHSM_MODULE */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/rand.h>

#include "chipside.h"
#include "hsm.h"
#include "hsm-provision.h"

#define TOTAL 1000
#define THREADS 4

static const char *module;
static char tmpdir[] = "/tmp/sfid-hsm-XXXXXX";
static int failures;

#define CHECK(cond)                                                                       \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
			failures++;                                                       \
		}                                                                         \
	} while (0)
#define CHECK_R(expr, want)                                                               \
	do {                                                                              \
		int r_ = (expr);                                                          \
		if (r_ != (want)) {                                                       \
			fprintf(stderr, "FAIL %s:%d: %s = %d (%s), want %d (%s)\n", __FILE__, \
				__LINE__, #expr, r_, hsm_error_to_string(r_), (want),     \
				hsm_error_to_string(want));                               \
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
	char cmd[128];

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

static void init_token(const char *label)
{
	char *argv[] = { "softhsm2-util", "--init-token", "--free", "--label", (char *)label,
			 "--so-pin", "5678", "--pin", "1234", NULL };

	REQUIRE(run(argv) == 0);
}

static void write_file(const char *name, const char *content, mode_t mode)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs(content, f);
	fclose(f);
	chmod(path, mode);
}

static struct hsm *open_login(const char *label)
{
	struct hsm *h = NULL;
	char pin[256];

	CHECK_R(hsm_open(module, label, NULL, &h), 0);
	REQUIRE(h);
	snprintf(pin, sizeof(pin), "%s/pin", tmpdir);
	CHECK_R(hsm_login_pin_file(h, pin), 0);
	return h;
}

struct chip {
	EVP_PKEY *key;
	uint8_t uid[OSFI_UID_LEN];
	uint8_t cert[OSFI_CERT_LEN];
	uint8_t z[32];
};

static void chip_new(struct chip *c, EVP_PKEY *ca, uint16_t device, uint8_t tag)
{
	c->key = chip_keygen();
	REQUIRE(c->key);
	RAND_bytes(c->uid, sizeof(c->uid));
	c->uid[0] = tag;
	REQUIRE(chip_cert_make(ca, c->key, device, c->uid, c->cert) == 0);
}

/* --- four threads, one counter ----------------------------------------------------------- */

struct worker {
	pthread_t thread;
	struct hsm *h;
	struct chip *chip;
	const uint8_t *image_id;
	uint8_t (*lics)[OSFI_LICENSE_LEN];
	unsigned n, mismatches, errors;
	int last;
};

/* The daemon's call order: read the counter (and record the intent), then issue with the
 * recorded value; a concurrent spender makes that a mismatch, which spends nothing. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (;;) {
		struct hsm_license_request req = { .cert = w->chip->cert,
						   .cert_len = OSFI_CERT_LEN,
						   .device_id = 0x484 };
		struct hsm_license_result res;
		uint32_t n;
		int r;

		memcpy(req.image_id, w->image_id, OSFI_ID_LEN);
		r = hsm_counter_read(w->h, &n);
		if (r == 0)
			r = hsm_license_issue(w->h, &req, n, &res);
		if (r == -HSM_ERR_COUNTER_MISMATCH) {
			w->mismatches++;
			continue;
		}
		if (r < 0) {
			w->last = r;
			break;
		}
		if (res.count_before != n || res.count_after != n - 1)
			w->errors++;
		memcpy(w->lics[w->n++], res.license, OSFI_LICENSE_LEN);
	}
	return NULL;
}

static int cmp_nonce(const void *a, const void *b)
{
	return memcmp((const uint8_t *)a + OSFI_LIC_OFF_NONCE, (const uint8_t *)b + OSFI_LIC_OFF_NONCE,
		      OSFI_LICENSE_NONCE_LEN);
}

static void test_threads(EVP_PKEY *ca, const uint8_t key[16], const uint8_t image_id[32])
{
	static uint8_t lics[THREADS][TOTAL][OSFI_LICENSE_LEN];
	static uint8_t all[TOTAL][OSFI_LICENSE_LEN];
	struct hsm_provision p = { .max_count = TOTAL };
	struct worker w[THREADS] = { 0 };
	struct chip chips[THREADS];
	uint8_t hsm_pub[OSFI_PUBKEY_LEN];
	bool seen[TOTAL] = { 0 };
	unsigned total = 0, mism = 0;
	struct hsm *h;
	uint32_t left;

	h = open_login("threads");
	memcpy(p.image_key, key, 16);
	memcpy(p.firmware_id, image_id, 32);
	REQUIRE(chip_point(ca, p.ca_pub) == 0);
	CHECK_R(hsm_provision_token(h, &p), 0);
	CHECK_R(hsm_provision_token(h, &p), -HSM_ERR_ALREADY_PROVISIONED);
	CHECK_R(hsm_license_pubkey(h, hsm_pub), 0);

	for (int i = 0; i < THREADS; i++) {
		chip_new(&chips[i], ca, 0x484, (uint8_t)i);
		REQUIRE(chip_ecdh_x(chips[i].key, hsm_pub, chips[i].z) == 0);
		w[i] = (struct worker){ .h = h, .chip = &chips[i], .image_id = image_id,
					.lics = lics[i] };
	}
	for (int i = 0; i < THREADS; i++)
		REQUIRE(pthread_create(&w[i].thread, NULL, worker_main, &w[i]) == 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(w[i].thread, NULL);

	for (int i = 0; i < THREADS; i++) {
		CHECK_R(w[i].last, -HSM_ERR_COUNTER_EXHAUSTED);
		CHECK(w[i].errors == 0);
		mism += w[i].mismatches;
		for (unsigned k = 0; k < w[i].n; k++) {
			struct osfi_license l;
			uint8_t a[16], b[16];

			CHECK(osfi_license_decode(lics[i][k], OSFI_LICENSE_LEN, &l) == 0);
			CHECK(memcmp(l.uid, chips[i].uid, OSFI_UID_LEN) == 0);
			CHECK(l.counter < TOTAL && !seen[l.counter]);
			if (l.counter < TOTAL)
				seen[l.counter] = true;
			CHECK(chip_unwrap(&l, chips[i].z, a) == 0 && memcmp(a, key, 16) == 0);
			CHECK(osfi_license_unwrap(&l, chips[i].z, b) == 0 && memcmp(b, key, 16) == 0);
			/* Another chip's key never opens it. */
			CHECK(chip_unwrap(&l, chips[(i + 1) % THREADS].z, a) < 0);
			if (total < TOTAL)
				memcpy(all[total], lics[i][k], OSFI_LICENSE_LEN);
			total++;
		}
	}
	CHECK(total == TOTAL);
	qsort(all, TOTAL, OSFI_LICENSE_LEN, cmp_nonce);
	for (unsigned k = 1; k < TOTAL; k++)
		CHECK(cmp_nonce(all[k - 1], all[k]) != 0);
	CHECK_R(hsm_counter_read(h, &left), 0);
	CHECK(left == 0);
	printf("threads: %u licenses from %d threads, %u counter mismatches retried\n", total,
	       THREADS, mism);

	/* At zero: refused, and no license comes back. */
	{
		struct hsm_license_request req = { .cert = chips[0].cert,
						   .cert_len = OSFI_CERT_LEN,
						   .device_id = 0x484 };
		struct hsm_license_result res;

		memcpy(req.image_id, image_id, 32);
		memset(&res, 0xa5, sizeof(res));
		CHECK_R(hsm_license_issue(h, &req, HSM_COUNTER_ANY, &res), -HSM_ERR_COUNTER_EXHAUSTED);
		CHECK(res.license[0] == 0xa5 && res.count_after == 0xa5a5a5a5);
		CHECK(strcmp(hsm_error_to_string(-HSM_ERR_COUNTER_EXHAUSTED),
			     "license counter exhausted; the OEM must provision more licenses") == 0);
	}
	for (int i = 0; i < THREADS; i++)
		EVP_PKEY_free(chips[i].key);
	hsm_close(h);
}

/* --- refusals, logins, audit, global licenses, removal ----------------------------------- */

static int issue(struct hsm *h, const uint8_t *cert, size_t len, uint16_t device, uint32_t target,
		 const uint8_t image_id[32], uint32_t expected, struct hsm_license_result *res)
{
	struct hsm_license_request req = { .cert = cert, .cert_len = len, .device_id = device,
					   .target = target };

	memcpy(req.image_id, image_id, 32);
	return hsm_license_issue(h, &req, expected, res);
}

static void expect_count(struct hsm *h, uint32_t want)
{
	uint32_t n = 0;

	CHECK_R(hsm_counter_read(h, &n), 0);
	if (n != want)
		fprintf(stderr, "counter %u, want %u\n", n, want);
	CHECK(n == want);
}

static void test_refusals(EVP_PKEY *ca, const uint8_t key[16], const uint8_t image_id[32])
{
	struct hsm_provision p = { .max_count = 10, .has_global_key = true };
	struct hsm_license_result res;
	EVP_PKEY *other_ca = chip_keygen();
	struct chip good, foreign, wrongdev;
	uint8_t other_id[32], sig[64], digest[32], lic[OSFI_LICENSE_LEN], k2[16], cert_bad[OSFI_CERT_LEN];
	struct hsm *h, *h2 = NULL, *bad = NULL;
	struct osfi_license l;
	char path[256], *pem = NULL;
	struct hsm_token_info ti;
	bool has;

	h = open_login("errors");
	memcpy(p.image_key, key, 16);
	memcpy(p.firmware_id, image_id, 32);
	RAND_bytes(p.global_key, sizeof(p.global_key));
	REQUIRE(chip_point(ca, p.ca_pub) == 0);
	CHECK_R(hsm_provision_token(h, &p), 0);

	chip_new(&good, ca, 0x484, 0x10);
	chip_new(&foreign, other_ca, 0x484, 0x11);
	chip_new(&wrongdev, ca, 0x474, 0x12);
	memcpy(other_id, image_id, 32);
	other_id[0] ^= 1;

	CHECK_R(issue(h, foreign.cert, OSFI_CERT_LEN, 0x484, 0, image_id, HSM_COUNTER_ANY, &res),
		-HSM_ERR_BAD_CERT);
	memcpy(cert_bad, good.cert, sizeof(cert_bad));
	cert_bad[OSFI_CERT_OFF_UID] ^= 1; /* signature no longer covers it */
	CHECK_R(issue(h, cert_bad, OSFI_CERT_LEN, 0x484, 0, image_id, HSM_COUNTER_ANY, &res),
		-HSM_ERR_BAD_CERT);
	CHECK_R(issue(h, good.cert, OSFI_CERT_LEN - 1, 0x484, 0, image_id, HSM_COUNTER_ANY, &res),
		-HSM_ERR_BAD_CERT);
	CHECK_R(issue(h, wrongdev.cert, OSFI_CERT_LEN, 0x484, 0, image_id, HSM_COUNTER_ANY, &res),
		-HSM_ERR_WRONG_DEVICE);
	CHECK_R(issue(h, good.cert, OSFI_CERT_LEN, 0x474, 0, image_id, HSM_COUNTER_ANY, &res),
		-HSM_ERR_WRONG_DEVICE);
	CHECK_R(issue(h, good.cert, OSFI_CERT_LEN, 0x484, 0, other_id, HSM_COUNTER_ANY, &res),
		-HSM_ERR_WRONG_FIRMWARE_ID);
	CHECK_R(issue(h, good.cert, OSFI_CERT_LEN, 0x484, 7, image_id, HSM_COUNTER_ANY, &res),
		-HSM_ERR_WRONG_FIRMWARE_ID);
	CHECK_R(issue(h, good.cert, OSFI_CERT_LEN, 0x484, 0, image_id, 9, &res),
		-HSM_ERR_COUNTER_MISMATCH);
	expect_count(h, 10);

	/* The one that passes costs exactly one. */
	CHECK_R(issue(h, good.cert, OSFI_CERT_LEN, 0x484, 0, image_id, 10, &res), 0);
	CHECK(res.count_before == 10 && res.count_after == 9);
	expect_count(h, 9);

	/* A second handle on the same token shares session and lock. */
	CHECK_R(hsm_open(module, NULL, NULL, &h2), -HSM_ERR_INVALID);
	CHECK_R(hsm_token_info(h, &ti), 0);
	CHECK(strcmp(ti.label, "errors") == 0 && strcmp(ti.model, "SoftHSM v2") == 0);
	CHECK_R(hsm_open(module, NULL, ti.serial, &h2), 0);
	CHECK(h2 == h);
	expect_count(h2, 9);
	hsm_close(h2);

	/* Global license: uncounted, unwraps with G. */
	CHECK_R(hsm_has_global_key(h, &has), 0);
	CHECK(has);
	CHECK_R(hsm_license_issue_global(h, 0x484, 0, image_id, lic), 0);
	CHECK(osfi_license_decode(lic, sizeof(lic), &l) == 0);
	CHECK(l.kind == OSFI_LICENSE_KIND_GLOBAL && l.counter == 0);
	CHECK(chip_unwrap(&l, p.global_key, k2) == 0 && memcmp(k2, key, 16) == 0);
	CHECK_R(hsm_license_issue_global(h, 0x484, 0, other_id, lic), -HSM_ERR_WRONG_FIRMWARE_ID);
	expect_count(h, 9);

	/* Audit signature verifies with the exported PEM key. */
	RAND_bytes(digest, sizeof(digest));
	CHECK_R(hsm_audit_sign(h, digest, sig), 0);
	CHECK_R(hsm_audit_pubkey_pem(h, &pem), 0);
	if (pem) {
		BIO *bio = BIO_new_mem_buf(pem, -1);
		EVP_PKEY *pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);

		CHECK(pub && chip_verify_digest(pub, digest, sig));
		digest[0] ^= 1;
		CHECK(pub && !chip_verify_digest(pub, digest, sig));
		EVP_PKEY_free(pub);
		BIO_free(bio);
		free(pem);
	}

	/* Not provisioned: clear error, for counter and issue alike. */
	bad = open_login("empty");
	CHECK_R(hsm_counter_read(bad, &(uint32_t){ 0 }), -HSM_ERR_OBJECT_MISSING);
	CHECK_R(issue(bad, good.cert, OSFI_CERT_LEN, 0x484, 0, image_id, HSM_COUNTER_ANY, &res),
		-HSM_ERR_OBJECT_MISSING);
	CHECK_R(hsm_has_global_key(bad, &has), 0);
	CHECK(!has);
	hsm_close(bad);

	/* Module and token lookup. */
	CHECK_R(hsm_open("/nonexistent/libpkcs11.so", "errors", NULL, &bad), -HSM_ERR_MODULE);
	CHECK_R(hsm_open("/etc/hostname", "errors", NULL, &bad), -HSM_ERR_MODULE);
	CHECK_R(hsm_open(module, "no-such-token", NULL, &bad), -HSM_ERR_NO_TOKEN);

	/* Logins: wrong PIN, unsafe PIN file, credential directory. */
	CHECK_R(hsm_open(module, "login", NULL, &bad), 0);
	write_file("wrong-pin", "9999\n", 0600);
	write_file("open-pin", "1234\n", 0644);
	snprintf(path, sizeof(path), "%s/wrong-pin", tmpdir);
	CHECK_R(hsm_login_pin_file(bad, path), -HSM_ERR_PIN_INCORRECT);
	snprintf(path, sizeof(path), "%s/open-pin", tmpdir);
	CHECK_R(hsm_login_pin_file(bad, path), -HSM_ERR_PIN_SOURCE);
	snprintf(path, sizeof(path), "%s/missing-pin", tmpdir);
	CHECK_R(hsm_login_pin_file(bad, path), -HSM_ERR_PIN_SOURCE);
	unsetenv("CREDENTIALS_DIRECTORY");
	CHECK_R(hsm_login_credential(bad, "pin"), -HSM_ERR_PIN_SOURCE);
	CHECK_R(hsm_counter_read(bad, &(uint32_t){ 0 }), -HSM_ERR_NOT_LOGGED_IN);
	setenv("CREDENTIALS_DIRECTORY", tmpdir, 1);
	CHECK_R(hsm_login_credential(bad, "../pin"), -HSM_ERR_INVALID);
	CHECK_R(hsm_login_credential(bad, "pin"), 0);
	unsetenv("CREDENTIALS_DIRECTORY");
	hsm_close(bad);

	/* The token's files vanish while the session is open: a clear error, no license. */
	expect_count(h, 9);
	{
		char cmd[512];

		snprintf(cmd, sizeof(cmd),
			 "for d in '%s'/tokens/*; do grep -qs errors \"$d\"/token.object && rm -rf \"$d\"; done; true",
			 tmpdir);
		CHECK(system(cmd) == 0);
		memset(&res, 0xa5, sizeof(res));
		int r = issue(h, good.cert, OSFI_CERT_LEN, 0x484, 0, image_id, HSM_COUNTER_ANY, &res);
		printf("removed token: %d (%s), CK_RV 0x%lx from %s\n", r, hsm_error_to_string(r),
		       hsm_last_rv(h), hsm_last_call(h));
		CHECK(r == -HSM_ERR_TOKEN_REMOVED);
		CHECK(res.license[0] == 0xa5);
		CHECK_R(hsm_counter_read(h, &(uint32_t){ 0 }), -HSM_ERR_TOKEN_REMOVED);
	}

	hsm_close(h);
	EVP_PKEY_free(other_ca);
	EVP_PKEY_free(good.key);
	EVP_PKEY_free(foreign.key);
	EVP_PKEY_free(wrongdev.key);
	OPENSSL_cleanse(&p, sizeof(p));
}

int main(int argc, char **argv)
{
	uint8_t key[16], image_id[32];
	EVP_PKEY *ca;
	char conf[512];

	if (argc != 2) {
		fprintf(stderr, "usage: test-hsm-token SOFTHSM_MODULE\n");
		return 2;
	}
	module = argv[1];
	if (access(module, R_OK) != 0) {
		fprintf(stderr, "SoftHSM2 module %s missing: skipped\n", module);
		return 77;
	}
	REQUIRE(mkdtemp(tmpdir));
	snprintf(conf, sizeof(conf),
		 "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
		 tmpdir);
	write_file("softhsm2.conf", conf, 0600);
	snprintf(conf, sizeof(conf), "%s/tokens", tmpdir);
	REQUIRE(mkdir(conf, 0700) == 0);
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", tmpdir);
	setenv("SOFTHSM2_CONF", conf, 1);
	write_file("pin", "1234\n", 0600);

	/* SoftHSM2 reads the token directory when it is initialized: make every token now. */
	init_token("errors");
	init_token("empty");
	init_token("login");
	init_token("threads");

	RAND_bytes(key, sizeof(key));
	RAND_bytes(image_id, sizeof(image_id));
	ca = chip_keygen();
	REQUIRE(ca);

	test_threads(ca, key, image_id);
	test_refusals(ca, key, image_id);

	EVP_PKEY_free(ca);
	OPENSSL_cleanse(key, sizeof(key));
	cleanup();
	if (failures)
		fprintf(stderr, "%d check(s) failed\n", failures);
	return failures ? 1 : 0;
}

/* HSM license rate on a SoftHSM2 token, for docs/performance.md ("## HSM licenses").
 * Usage: bench-hsm MODULE DIR LICENSES RUNS [THREADS]
 * Makes a token in DIR, provisions it, then per run issues LICENSES chip licenses in the
 * daemon's order (hsm_counter_read, then hsm_license_issue with that value; a mismatch caused
 * by another thread is retried) from THREADS threads (default 1) sharing one handle, and
 * prints the rate; last line: the median. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "chipside.h"
#include "hsm.h"
#include "hsm-provision.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

struct job {
	struct hsm *h;
	const struct hsm_license_request *req;
	int n, r;
	unsigned mismatches;
};

static void *worker(void *arg)
{
	struct job *j = arg;

	for (int i = 0; i < j->n; i++) {
		struct hsm_license_result res;
		uint32_t c;

		j->r = hsm_counter_read(j->h, &c);
		if (j->r == 0)
			j->r = hsm_license_issue(j->h, j->req, c, &res);
		if (j->r == -HSM_ERR_COUNTER_MISMATCH) {
			j->mismatches++;
			i--;
			continue;
		}
		if (j->r < 0)
			break;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct hsm_provision p = { 0 };
	struct hsm_license_request req = { .cert_len = OSFI_CERT_LEN, .device_id = 0x484 };
	uint8_t cert[OSFI_CERT_LEN], uid[OSFI_UID_LEN] = { 1 };
	char path[512];
	double rates[64];
	struct hsm *h;
	EVP_PKEY *ca, *chip;
	FILE *f;
	int n, runs, threads = 1, r;

	if ((argc != 5 && argc != 6) || (n = atoi(argv[3])) <= 0 || (runs = atoi(argv[4])) <= 0 ||
	    runs > 64 || (argc == 6 && ((threads = atoi(argv[5])) < 1 || threads > 16))) {
		fprintf(stderr, "usage: bench-hsm MODULE DIR LICENSES RUNS [THREADS]\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/softhsm2.conf", argv[2]);
	f = fopen(path, "w");
	if (!f)
		return 2;
	fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
		argv[2]);
	fclose(f);
	setenv("SOFTHSM2_CONF", path, 1);
	snprintf(path, sizeof(path), "%s/tokens", argv[2]);
	mkdir(path, 0700);
	if (system("softhsm2-util --init-token --free --label bench --so-pin 5678 --pin 1234 "
		   ">/dev/null") != 0)
		return 2;
	snprintf(path, sizeof(path), "%s/pin", argv[2]);
	f = fopen(path, "w");
	fputs("1234\n", f);
	fclose(f);
	chmod(path, 0600);

	ca = chip_keygen();
	chip = chip_keygen();
	RAND_bytes(p.image_key, sizeof(p.image_key));
	RAND_bytes(p.firmware_id, sizeof(p.firmware_id));
	p.max_count = (uint32_t)(n * runs);
	if (!ca || !chip || chip_point(ca, p.ca_pub) < 0 ||
	    chip_cert_make(ca, chip, 0x484, uid, cert) < 0)
		return 2;
	req.cert = cert;
	memcpy(req.image_id, p.firmware_id, sizeof(req.image_id));

	if ((r = hsm_open(argv[1], "bench", NULL, &h)) < 0 || (r = hsm_login_pin_file(h, path)) < 0 ||
	    (r = hsm_provision_token(h, &p)) < 0) {
		fprintf(stderr, "bench-hsm: %s\n", hsm_error_to_string(r));
		return 1;
	}
	for (int k = 0; k < runs; k++) {
		struct job jobs[16];
		pthread_t tids[16];
		unsigned mismatches = 0;
		double t0 = now();

		for (int t = 0; t < threads; t++) {
			jobs[t] = (struct job){ .h = h, .req = &req,
						.n = n / threads + (t < n % threads) };
			pthread_create(&tids[t], NULL, worker, &jobs[t]);
		}
		for (int t = 0; t < threads; t++) {
			pthread_join(tids[t], NULL);
			mismatches += jobs[t].mismatches;
			if (jobs[t].r < 0) {
				fprintf(stderr, "bench-hsm: %s\n", hsm_error_to_string(jobs[t].r));
				return 1;
			}
		}
		rates[k] = n / (now() - t0);
		printf("run %d: %d licenses, %d thread(s), %.1f licenses/s (%.2f ms each), "
		       "%u mismatches retried\n",
		       k + 1, n, threads, rates[k], 1000.0 / rates[k], mismatches);
	}
	qsort(rates, (size_t)runs, sizeof(rates[0]), cmp_double);
	printf("median: %.1f licenses/s\n", rates[runs / 2]);
	hsm_close(h);
	EVP_PKEY_free(ca);
	EVP_PKEY_free(chip);
	return 0;
}

/* Job loading and checking (daemon/sfid/job.c) on real files in a temp dir: a good image by
 * path and by descriptor, the line token's firmware id, and each refusal with its -errno and
 * its sentence (a missing file, a named pipe that must not block, not an image, a foreign
 * device, another firmware, modules without their file, a global license for another
 * image), and plain jobs (firmware files: order, sectors, digest, Go, each refusal at load).
 * The reason buffer is written only on failure. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <openssl/sha.h>

#include "job.h"
#include "osfi.h"
#include "sfi-error.h"

#define DEVICE 0x484

static char dir[512];
static uint8_t key[16] = { 7 }, mkey[16] = { 8 }, fw[3000];

static void path_of(const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s", dir, name);
}

static void write_bytes(const char *name, const void *p, size_t n)
{
	char path[600];
	FILE *f;

	path_of(name, path, sizeof(path));
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	fclose(f);
}

/* An image for device, with module 5 when with_module. */
static void make_image(const char *name, uint16_t device, bool with_module, uint8_t id[OSFI_ID_LEN])
{
	static const uint8_t opts[8] = { 1, 0, 0, 0, 0, 0x72, 0, 0 };
	struct osfi_area_spec a[] = {
		{ .type = 'F', .address = 0x08000000, .data = fw, .size = sizeof(fw) },
		{ .type = 'M', .address = 0x08100000, .module_id = 5, .data = fw, .size = 32,
		  .key = mkey },
		{ .type = 'C', .data = opts, .size = 8 },
	};
	struct osfi_area_spec b[] = { a[0], a[2] };
	struct osfi_image_spec spec = { .device_id = device, .key = key, .max_area = 2048,
					.areas = with_module ? a : b, .n_areas = with_module ? 3 : 2 };
	uint8_t *img = NULL;
	size_t len = 0;

	assert_int_equal(osfi_image_build(&spec, &img, &len), 0);
	if (id)
		osfi_image_id(img, id);
	write_bytes(name, img, len);
	free(img);
}

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/sfid-job-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	for (size_t i = 0; i < sizeof(fw); i++)
		fw[i] = (uint8_t)(i * 7);
	return 0;
}

static int teardown(void **state)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* Loads expecting a failure r, with a sentence containing want. */
static void refused(const struct job_line_token *tok, const char *image, const char *modules,
		    const char *global, int r, const char *want)
{
	char reason[SFI_REASON_MAX] = "";
	struct job *j = NULL;

	assert_int_equal(job_load(tok, image, modules, global, NULL, 0, "op", &j, reason,
				  sizeof(reason)), r);
	assert_null(j);
	if (!strstr(reason, want))
		fail_msg("reason \"%s\" does not say \"%s\"", reason, want);
}

static void test_good(void **state)
{
	char path[600], reason[SFI_REASON_MAX];
	struct job_line_token tok = { .label = "line" };
	struct json_object *o;
	uint8_t id[OSFI_ID_LEN];
	struct job *j = NULL;
	char hex[2 * OSFI_ID_LEN + 1];

	make_image("good.sfi", DEVICE, false, id);
	path_of("good.sfi", path, sizeof(path));
	memcpy(tok.firmware_id, id, OSFI_ID_LEN);
	memset(reason, 'X', sizeof(reason));
	assert_int_equal(job_load(&tok, path, NULL, NULL, NULL, 5, "op", &j, reason,
				  sizeof(reason)), 0);
	assert_non_null(j);
	assert_int_equal(reason[0], 'X'); /* untouched on success */
	assert_int_equal(j->device_id, DEVICE);
	assert_memory_equal(j->image_id, id, OSFI_ID_LEN);
	for (size_t i = 0; i < OSFI_ID_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", id[i]);
	assert_string_equal(j->image_id_hex, hex);
	assert_int_equal(j->n_lic, 1);
	assert_false(j->lic[0].global);
	assert_int_equal(j->lic[0].token, 0);
	assert_int_equal(j->target, 5);
	assert_string_equal(j->loaded_by, "op");
	assert_int_equal(strlen(j->digest_hex), 64);
	o = job_json(j);
	assert_non_null(o);
	json_object_put(o);
	j = job_free(j);
	assert_null(j);

	/* No line token to match (sfid without one): the same image loads. */
	assert_int_equal(job_load(NULL, path, NULL, NULL, NULL, 0, "op", &j, reason,
				  sizeof(reason)), 0);
	job_free(j);
}

/* An OSFI job's serial number: the image's areas for the overlap check (F and M, not C),
 * sfid's copy of the settings and the declared state back onto the job after a restart, and
 * copies it must refuse (damaged, a state beyond Provisioning). */
static void test_osfi_serial(void **state)
{
	static const struct job_serial_range none[1];
	char path[600], reason[SFI_REASON_MAX];
	struct job_serial_range *r = NULL;
	struct job *j = NULL, *k = NULL;
	size_t n = 0;
	char *text, *bad;

	make_image("serial.sfi", DEVICE, true, NULL);
	path_of("serial.sfi", path, sizeof(path));
	assert_int_equal(job_load(NULL, path, NULL, NULL, NULL, 0, "op", &j, reason,
				  sizeof(reason)), -EINVAL); /* modules without their file */
	make_image("serial.sfi", DEVICE, false, NULL);
	assert_int_equal(job_load(NULL, path, NULL, NULL, NULL, 0, "op", &j, reason,
				  sizeof(reason)), 0);
	assert_null(job_osfi_serial_keep(j)); /* no serial number yet */
	assert_int_equal(job_image_ranges(j, &r, &n), 0);
	/* The firmware in two areas (2048-byte RAM buffer), one after the other. */
	assert_int_equal(n, 2);
	assert_int_equal(r[0].address, 0x08000000);
	assert_int_equal(r[1].address, 0x08000000 + r[0].size);
	assert_true(r[0].size + r[1].size >= sizeof(fw) && r[0].size + r[1].size < sizeof(fw) + 32);
	/* Over the firmware area: refused; past it: taken. */
	assert_int_equal(job_serial_set(&j->serial, "7:3", 0x08000b00, 4, "be", r, n, reason,
					sizeof(reason)), -EINVAL);
	assert_int_equal(job_serial_set(&j->serial, "7:3", 0x08100000, 4, "be", none, 0, reason,
					sizeof(reason)), 0);
	free(r);
	j->final_state = STM32H5_PS_PROVISIONING;
	j->has_final_state = true;
	text = job_osfi_serial_keep(j);
	assert_non_null(text);

	assert_int_equal(job_load(NULL, path, NULL, NULL, NULL, 0, "op", &k, reason,
				  sizeof(reason)), 0);
	assert_false(k->serial.on);
	assert_int_equal(job_osfi_serial_restore(k, text, strlen(text)), 0);
	assert_true(k->serial.on && k->has_final_state);
	assert_int_equal(k->final_state, STM32H5_PS_PROVISIONING);
	assert_string_equal(k->serial.series, j->serial.series);
	assert_int_equal(k->serial.start, 7);
	assert_int_equal(k->serial.step, 3);
	assert_int_equal(k->serial.address, 0x08100000);
	/* Damaged, cut, or naming a state that refuses writes: refused, the job unchanged. */
	assert_int_equal(job_osfi_serial_restore(k, text, strlen(text) / 2), -EINVAL);
	bad = strdup(text);
	assert_non_null(bad);
	memcpy(strstr(bad, "\"image_state\":") + 14, "114", 3); /* 0x72 Closed */
	assert_int_equal(job_osfi_serial_restore(k, bad, strlen(bad)), -EINVAL);
	assert_int_equal(k->final_state, STM32H5_PS_PROVISIONING);
	free(bad);
	free(text);
	job_free(k);
	job_free(j);
}

static void test_by_descriptor(void **state)
{
	char path[600], reason[SFI_REASON_MAX] = "";
	struct job_fds fds = { .image = -1, .modules = -1, .global = -1 };
	struct job *j = NULL;

	make_image("fd.sfi", DEVICE, false, NULL);
	path_of("fd.sfi", path, sizeof(path));
	fds.image = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fds.image >= 0);
	/* Read from its start whatever its offset, and left open for the caller. */
	assert_int_equal(lseek(fds.image, 100, SEEK_SET), 100);
	assert_int_equal(job_load(NULL, "/not/read/by/path.sfi", NULL, NULL, &fds, 0, "op", &j,
				  reason, sizeof(reason)), 0);
	assert_string_equal(j->image_path, "/not/read/by/path.sfi");
	assert_true(fcntl(fds.image, F_GETFD) >= 0);
	close(fds.image);
	job_free(j);
}

/* A vendor job: any file, known by its SHA-256 and size, its module and license files kept
 * as they came. */
static void test_vendor(void **state)
{
	static const uint8_t opaque[] = "not an OSFI image: ST's SFI layout is not read by sfid";
	char path[600], mcsv[600], lic[600], reason[SFI_REASON_MAX] = "";
	struct job_fds fds = { .image = -1, .modules = -1, .global = -1 };
	uint8_t md[32];
	char hex[65];
	struct json_object *o;
	struct job *j = NULL;

	write_bytes("st.sfi", opaque, sizeof(opaque));
	write_bytes("st.mcsv", (const uint8_t *)"1,m.lic\n", 8);
	write_bytes("st.lic", (const uint8_t *)"LIC", 3);
	path_of("st.sfi", path, sizeof(path));
	path_of("st.mcsv", mcsv, sizeof(mcsv));
	path_of("st.lic", lic, sizeof(lic));
	/* Not an OSFI image. */
	refused(NULL, path, NULL, NULL, -EINVAL, "is not a valid OSFI image");
	assert_int_equal(job_load_vendor(path, mcsv, NULL, NULL, 4, "op", &j, reason,
					 sizeof(reason)), 0);
	SHA256(opaque, sizeof(opaque), md);
	for (size_t i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	assert_true(j->vendor);
	assert_false(j->plain);
	assert_string_equal(j->digest_hex, hex);
	assert_string_equal(j->image_id_hex, hex);
	assert_int_equal(j->image_len, sizeof(opaque));
	assert_int_equal(j->modules_len, 8);
	assert_int_equal(j->n_lic, 1);
	assert_false(j->global);
	assert_string_equal(job_kind(j), "vendor");
	o = job_json(j);
	assert_string_equal(json_object_get_string(json_object_object_get(o, "kind")), "vendor");
	json_object_put(o);
	j = job_free(j);
	/* With a global license file, by descriptor. */
	fds.global = open(lic, O_RDONLY | O_CLOEXEC);
	assert_true(fds.global >= 0);
	assert_int_equal(job_load_vendor(path, NULL, "/named/only.lic", &fds, 0, "op", &j, reason,
					 sizeof(reason)), 0);
	assert_true(j->global && j->lic[0].global);
	assert_int_equal(j->global_len, 3);
	assert_string_equal(j->global_file, "/named/only.lic");
	close(fds.global);
	j = job_free(j);
	/* An empty image and a missing one. */
	write_bytes("empty.sfi", opaque, 0);
	path_of("empty.sfi", path, sizeof(path));
	assert_int_equal(job_load_vendor(path, NULL, NULL, NULL, 0, "op", &j, reason,
					 sizeof(reason)), -EINVAL);
	assert_non_null(strstr(reason, "is empty"));
	path_of("none.sfi", path, sizeof(path));
	assert_int_equal(job_load_vendor(path, NULL, NULL, NULL, 0, "op", &j, reason,
					 sizeof(reason)), -ENOENT);
	assert_null(j);
}

static void test_refusals(void **state)
{
	struct job_line_token other = { .label = "other-token" };
	char path[600], fifo[600], mod[600], glob[600];
	uint8_t junk[64] = { 1, 2, 3 };

	path_of("missing.sfi", path, sizeof(path));
	refused(NULL, path, NULL, NULL, -ENOENT, "cannot read image");

	/* A named pipe is refused at once instead of blocking the loop. */
	path_of("fifo.sfi", fifo, sizeof(fifo));
	assert_int_equal(mkfifo(fifo, 0600), 0);
	refused(NULL, fifo, NULL, NULL, -ENOENT, "not a regular file");

	write_bytes("junk.sfi", junk, sizeof(junk));
	path_of("junk.sfi", path, sizeof(path));
	refused(NULL, path, NULL, NULL, -EINVAL, "is not a valid OSFI image");

	make_image("h7.sfi", 0x450, false, NULL);
	path_of("h7.sfi", path, sizeof(path));
	refused(NULL, path, NULL, NULL, -EINVAL, "device id 0x450");

	make_image("good.sfi", DEVICE, false, NULL);
	path_of("good.sfi", path, sizeof(path));
	memset(other.firmware_id, 0x55, OSFI_ID_LEN);
	refused(&other, path, NULL, NULL, -EINVAL, "is not the firmware the HSM token other-token");

	make_image("mod.sfi", DEVICE, true, NULL);
	path_of("mod.sfi", path, sizeof(path));
	refused(NULL, path, NULL, NULL, -EINVAL, "carries modules");
	path_of("missing.txt", mod, sizeof(mod));
	refused(NULL, path, mod, NULL, -ENOENT, "cannot read module license file");

	/* A global license of the right size made for another image. */
	{
		struct osfi_license l = { .kind = OSFI_LICENSE_KIND_GLOBAL, .device_id = DEVICE };
		uint8_t g[32] = { 3 }, rec[OSFI_LICENSE_LEN];

		memset(l.id, 0x66, OSFI_ID_LEN);
		assert_int_equal(osfi_license_seal_global(&l, g, key), 0);
		osfi_license_encode(&l, rec);
		write_bytes("other.lic", rec, sizeof(rec));
		path_of("good.sfi", path, sizeof(path));
		path_of("other.lic", glob, sizeof(glob));
		refused(NULL, path, NULL, glob, -EINVAL, "was made for another image");
	}
}

/* A plain job refused, with a sentence containing want. */
static void plain_refused(const char *const *files, size_t n, bool go, bool go_set,
			  uint32_t go_addr, const char *want)
{
	char reason[SFI_REASON_MAX] = "";
	struct job *j = NULL;

	assert_int_equal(job_load_plain(files, NULL, n, go, go_set, go_addr, 0, "op", &j, reason,
					sizeof(reason)), -EINVAL);
	assert_null(j);
	if (!strstr(reason, want))
		fail_msg("reason \"%s\" does not say \"%s\"", reason, want);
}

/* Plain jobs: raw binaries and Intel HEX by path and by descriptor, sectors, digest, Go, and
 * every refusal at load. */
static void test_plain(void **state)
{
	char a[700], b[700], h[700], bad[700], reason[SFI_REASON_MAX] = "";
	struct job *j = NULL;
	int fds[2];

	(void)state;
	write_bytes("a.bin", fw, sizeof(fw));		/* 3000 bytes */
	write_bytes("b.bin", fw, 100);
	/* Intel HEX: 16 bytes at 0x0800C000 (extended linear address 0x0800). */
	{
		static const char hex[] = ":020000040800F2\n"
			":10C00000000102030405060708090A0B0C0D0E0FB8\n:00000001FF\n";
		write_bytes("c.hex", hex, sizeof(hex) - 1);
	}
	path_of("a.bin@0x08000000", a, sizeof(a));
	path_of("b.bin@0x08004000", b, sizeof(b));
	path_of("c.hex", h, sizeof(h));
	{
		const char *files[] = { h, b, a };

		assert_int_equal(job_load_plain(files, NULL, 3, true, false, 0, 9, "op", &j, reason,
						sizeof(reason)), 0);
	}
	assert_true(j->plain);
	assert_int_equal(j->n_seg, 3);
	assert_int_equal(j->seg[0].address, 0x08000000);	/* in address order */
	assert_int_equal(j->seg[2].address, 0x0800c000);
	assert_int_equal(j->fw_bytes, 3000 + 100 + 16);
	assert_int_equal(j->n_sectors, 3);			/* 8 KiB sectors 0, 2, 6 */
	assert_int_equal(j->sectors[0], 0);
	assert_int_equal(j->sectors[1], 2);
	assert_int_equal(j->sectors[2], 6);
	assert_true(j->go);
	assert_int_equal(j->go_address, 0x08000000);		/* the lowest address */
	assert_int_equal(j->target, 9);
	assert_int_equal(j->n_lic, 0);
	assert_string_equal(j->digest_hex, j->image_id_hex);
	{
		struct json_object *o = job_json(j);

		assert_string_equal(json_object_get_string(json_object_object_get(o, "kind")),
				    "plain");
		assert_string_equal(json_object_get_string(json_object_object_get(o, "license")),
				    "none");
		json_object_put(o);
	}
	job_free(j);
	j = NULL;

	/* By descriptor: the names stay the caller's, in messages too. */
	path_of("a.bin", bad, sizeof(bad));
	fds[0] = open(bad, O_RDONLY | O_CLOEXEC);
	fds[1] = open(bad, O_RDONLY | O_CLOEXEC);
	assert_true(fds[0] >= 0 && fds[1] >= 0);
	{
		const char *files[] = { "/elsewhere/x.bin@0x08000000", "/elsewhere/y.bin@0x08000800" };

		assert_int_equal(job_load_plain(files, fds, 2, false, false, 0, 0, "op", &j, reason,
						sizeof(reason)), -EINVAL);
		assert_non_null(strstr(reason, "/elsewhere/y.bin"));
		assert_non_null(strstr(reason, "overlaps /elsewhere/x.bin"));
		assert_null(strstr(reason, "/proc/self/fd"));
	}
	close(fds[0]);
	close(fds[1]);

	{
		const char *outside[] = { "x" };
		char p[700];

		path_of("a.bin@0x08200000", p, sizeof(p));
		outside[0] = p;
		plain_refused(outside, 1, false, false, 0, "outside the STM32H5's flash");
		path_of("a.bin@0x081fff00", p, sizeof(p));
		plain_refused(outside, 1, false, false, 0, "outside the STM32H5's flash");
		path_of("a.bin@0x20000000", p, sizeof(p));
		plain_refused(outside, 1, false, false, 0, "outside the STM32H5's flash");
		path_of("a.bin@0x08000008", p, sizeof(p));
		plain_refused(outside, 1, false, false, 0, "not on a 16-byte flash word");
		path_of("a.bin", p, sizeof(p));
		plain_refused(outside, 1, false, false, 0, "needs its address");
		path_of("a.bin@0x0800zz", p, sizeof(p));
		plain_refused(outside, 1, false, false, 0, "is not an address");
		path_of("none.bin@0x08000000", p, sizeof(p));
		plain_refused(outside, 1, false, false, 0, "none.bin");
		path_of("a.bin@0x08000000", p, sizeof(p));
		plain_refused(outside, 1, true, true, 0x20000000, "Go address 0x20000000");
		plain_refused(outside, 0, false, false, 0, "1 to 16 firmware files");
	}
	{
		char p1[700], p2[700];
		const char *two[] = { p1, p2 };

		path_of("a.bin@0x08000000", p1, sizeof(p1));
		path_of("b.bin@0x08000b00", p2, sizeof(p2));
		plain_refused(two, 2, false, false, 0, "overlaps");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_osfi_serial),
		cmocka_unit_test(test_vendor),
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_by_descriptor),
		cmocka_unit_test(test_refusals),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}

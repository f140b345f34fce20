/* Unit tests of common/: the error space's blocks and sentences, reason buffers, file
 * reads, numbers, hex, clocks, serial strings. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sfi-error.h"
#include "sfi-file.h"
#include "sfi-hex.h"
#include "sfi-parse.h"
#include "sfi-serial.h"
#include "sfi-time.h"

/* Every assigned code of a block has its own sentence, none says "unknown". */
static void check_block(int first, int end, const char *unknown)
{
	for (int e = first; e < end; e++) {
		const char *s = sfi_strerror(-e);

		assert_non_null(s);
		assert_true(strlen(s) > 5);
		assert_null(strstr(s, "unknown"));
		assert_string_equal(s, sfi_strerror(e));
	}
	assert_string_equal(sfi_strerror(-end), unknown);
	assert_string_equal(sfi_strerror(-(first + SFI_E_RANGE_SIZE - 1)), unknown);
}

static void test_blocks(void **state)
{
	check_block(SFI_E_AN3155_FIRST, _AN3155_E_MAX, "unknown AN3155 error");
	check_block(SFI_E_OSFI_FIRST, _OSFI_E_MAX, "unknown OSFI error");
	check_block(SFI_E_HSM_FIRST, _HSM_ERR_MAX, "unknown HSM error");
	check_block(SFI_E_DFUSE_FIRST, _DFUSE_E_MAX, "unknown DfuSe error");
	/* The blocks follow each other and errno stays below the first. */
	assert_int_equal(SFI_E_OSFI_FIRST, SFI_E_AN3155_FIRST + SFI_E_RANGE_SIZE);
	assert_int_equal(SFI_E_HSM_FIRST, SFI_E_OSFI_FIRST + SFI_E_RANGE_SIZE);
	assert_int_equal(SFI_E_DFUSE_FIRST, SFI_E_HSM_FIRST + SFI_E_RANGE_SIZE);
	assert_true(EHWPOISON < SFI_E_AN3155_FIRST);
	/* The collision this space removes: an HSM code is no errno. */
	assert_int_not_equal(-HSM_ERR_NOMEM, -ENOENT);
	assert_int_not_equal(-HSM_ERR_INVALID, -EPERM);
}

static void test_sentences(void **state)
{
	assert_string_equal(sfi_strerror(0), "success");
	assert_string_equal(sfi_strerror(-ENOENT), strerror(ENOENT));
	assert_string_equal(sfi_strerror(-ENOMEM), strerror(ENOMEM));
	assert_string_equal(sfi_strerror(-AN3155_E_TIMEOUT), "no answer from the chip in time");
	assert_string_equal(sfi_strerror(-OSFI_E_NOT_OPEN), "the chip is not in product state Open");
	assert_string_equal(sfi_strerror(-HSM_ERR_COUNTER_EXHAUSTED),
			    "license counter exhausted; the OEM must provision more licenses");
	assert_string_equal(sfi_strerror(INT_MIN), "unknown error");
	assert_non_null(sfi_strerror(-4000));
	assert_non_null(sfi_strerror(INT_MAX));
}

static void test_reason(void **state)
{
	char reason[SFI_REASON_MAX] = "untouched", small[8];

	sfi_reason(NULL, 0, "%s", "ignored");
	sfi_reason(reason, 0, "%s", "ignored");
	assert_string_equal(reason, "untouched");
	sfi_reason(reason, sizeof(reason), "open %s: %s", "x.img", sfi_strerror(-ENOENT));
	assert_string_equal(reason, "open x.img: No such file or directory");
	sfi_reason(small, sizeof(small), "%s", "longer than eight");
	assert_string_equal(small, "longer ");
}

/* A scratch directory under TMPDIR, as every test's. */
static void scratch(char *dir, size_t size)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, size, "%s/sfi-common-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
}

static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_file_read(void **state)
{
	char dir[256], path[300], fifo[300];
	uint8_t *buf = NULL;
	size_t len = 99;
	int fd;

	scratch(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);

	write_file(path, "hello", 5);
	assert_int_equal(sfi_file_read(path, 5, &buf, &len), 0);
	assert_int_equal(len, 5);
	assert_string_equal((char *)buf, "hello"); /* NUL after the data */
	free(buf);
	assert_int_equal(sfi_file_read(path, 4, &buf, &len), -EFBIG);
	assert_string_equal(sfi_file_strerror(-EFBIG), "file too large");

	write_file(path, "", 0);
	assert_int_equal(sfi_file_read(path, 0, &buf, &len), 0);
	assert_int_equal(len, 0);
	free(buf);

	/* Refused at once, without blocking on a writer that never comes. */
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(sfi_file_read(fifo, 100, &buf, &len), -EINVAL);
	assert_string_equal(sfi_file_strerror(-EINVAL), "not a regular file");
	assert_int_equal(sfi_file_read(dir, 100, &buf, &len), -EINVAL);
	assert_int_equal(sfi_file_read("/nonexistent/x", 100, &buf, &len), -ENOENT);

	/* From the descriptor's offset; the descriptor stays open. */
	write_file(path, "abcdef", 6);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(lseek(fd, 2, SEEK_SET), 2);
	assert_int_equal(sfi_fd_read(fd, 4, &buf, &len), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "cdef", 4);
	free(buf);
	assert_int_equal(fcntl(fd, F_GETFD), 0);
	close(fd);

	unlink(fifo);
	unlink(path);
	rmdir(dir);
}

static void test_secret_read_line(void **state)
{
	char dir[256], path[300], fifo[300], out[16];
	size_t len = 99;

	scratch(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/pin", dir);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);

	write_file(path, "1234\r\nsecond line", strlen("1234\r\nsecond line"));
	assert_int_equal(chmod(path, 0600), 0);
	memset(out, 'x', sizeof(out));
	assert_int_equal(sfi_secret_read_line(path, out, sizeof(out), &len), 0);
	assert_int_equal(len, 4);
	assert_string_equal(out, "1234");
	for (size_t i = len; i < sizeof(out); i++)
		assert_int_equal(out[i], 0); /* what followed the line is wiped */

	/* Readable or writable by others: refused, and nothing of it kept. */
	assert_int_equal(chmod(path, 0604), 0);
	assert_int_equal(sfi_secret_read_line(path, out, sizeof(out), &len), -EPERM);
	assert_int_equal(out[0], 0);
	assert_int_equal(chmod(path, 0602), 0);
	assert_int_equal(sfi_secret_read_line(path, out, sizeof(out), &len), -EPERM);

	write_file(path, "\nafter an empty line", strlen("\nafter an empty line"));
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(sfi_secret_read_line(path, out, sizeof(out), &len), -EINVAL);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(sfi_secret_read_line(fifo, out, sizeof(out), &len), -EPERM);
	assert_int_equal(sfi_secret_read_line("/nonexistent/pin", out, sizeof(out), &len),
			 -ENOENT);
	assert_int_equal(sfi_secret_read_line(path, out, 0, &len), -EINVAL);

	unlink(fifo);
	unlink(path);
	rmdir(dir);
}

static void test_parse_u32(void **state)
{
	uint32_t v = 7;

	assert_int_equal(sfi_parse_u32("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(sfi_parse_u32("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(sfi_parse_u32("0x08000000", &v), 0);
	assert_int_equal(v, 0x08000000);
	assert_int_equal(sfi_parse_u32("0XfF", &v), 0);
	assert_int_equal(v, 255);
	assert_int_equal(sfi_parse_u32("4294967295", &v), 0);
	assert_int_equal(v, UINT32_MAX);
	v = 7;
	assert_int_equal(sfi_parse_u32("4294967296", &v), -EINVAL);
	assert_int_equal(sfi_parse_u32("010", &v), -EINVAL);
	assert_int_equal(sfi_parse_u32("0x", &v), -EINVAL);
	assert_int_equal(sfi_parse_u32("0x0x7", &v), -EINVAL);
	assert_int_equal(sfi_parse_u32(" 1", &v), -EINVAL);
	assert_int_equal(sfi_parse_u32("-1", &v), -EINVAL);
	assert_int_equal(sfi_parse_u32("1k", &v), -EINVAL);
	assert_int_equal(sfi_parse_u32("", &v), -EINVAL);
	assert_int_equal(sfi_parse_u32(NULL, &v), -EINVAL);
	assert_int_equal(v, 7);
}

static void test_hex(void **state)
{
	const uint8_t bin[] = { 0x00, 0x9f, 0xa0, 0xff };
	uint8_t back[4];
	char text[9];

	sfi_hex_encode(bin, sizeof(bin), text);
	assert_string_equal(text, "009fa0ff");
	assert_int_equal(sfi_hex_decode("009FA0ff", back, 4), 0);
	assert_memory_equal(back, bin, 4);
	assert_int_equal(sfi_hex_decode("009fa0f", back, 4), -EINVAL);
	assert_int_equal(sfi_hex_decode("009fa0fff", back, 4), -EINVAL);
	assert_int_equal(sfi_hex_decode("009fa0fg", back, 4), -EINVAL);
	assert_int_equal(sfi_hex_decode(NULL, back, 4), -EINVAL);
	assert_true(sfi_hex_is_lower("009fa0ff", 8));
	assert_false(sfi_hex_is_lower("009FA0ff", 8));
	assert_false(sfi_hex_is_lower("009fa0f", 8));
	assert_false(sfi_hex_is_lower(NULL, 0));
	sfi_hex_encode(bin, 0, text);
	assert_string_equal(text, "");
}

static void test_clocks(void **state)
{
	struct timespec ts;
	int64_t a, b;

	clock_gettime(CLOCK_REALTIME, &ts);
	a = sfi_realtime_ms();
	assert_true(a >= (int64_t)ts.tv_sec * 1000 && a < ((int64_t)ts.tv_sec + 60) * 1000);
	a = sfi_monotonic_ms();
	b = sfi_monotonic_ms();
	assert_true(b >= a);
}

static void test_serial(void **state)
{
	sfi_serial s;
	char long_one[SFI_SERIAL_MAX + 1];

	assert_int_equal(sizeof(s), SFI_SERIAL_MAX);
	assert_int_equal(sfi_serial_set(s, "a1b2c3d4e5f60718"), 0);
	assert_string_equal(s, "a1b2c3d4e5f60718");
	memset(long_one, 'x', SFI_SERIAL_MAX - 1);
	long_one[SFI_SERIAL_MAX - 1] = '\0';
	assert_int_equal(sfi_serial_set(s, long_one), 0);
	assert_int_equal(strlen(s), SFI_SERIAL_MAX - 1);
	memset(long_one, 'x', SFI_SERIAL_MAX);
	long_one[SFI_SERIAL_MAX] = '\0';
	assert_int_equal(sfi_serial_set(s, long_one), -ENAMETOOLONG);
	assert_string_equal(s, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_blocks),
		cmocka_unit_test(test_sentences),
		cmocka_unit_test(test_reason),
		cmocka_unit_test(test_file_read),
		cmocka_unit_test(test_secret_read_line),
		cmocka_unit_test(test_parse_u32),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_clocks),
		cmocka_unit_test(test_serial),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

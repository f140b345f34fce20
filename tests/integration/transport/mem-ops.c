/* The link vtable's memory operations, one command line at a time:
 *
 *   mem-ops PORT OP...
 *
 * with OP one of
 *   probe                    enter the bootloader (UART entry sequence: none) and probe
 *   identify
 *   erase S[,S...]           erase flash sectors S (8 KiB each from 0x08000000)
 *   erase mass
 *   write ADDR FILE          write FILE's bytes at ADDR
 *   read ADDR LEN FILE       read LEN bytes at ADDR into FILE
 *   go ADDR
 * Prints one line per operation: "<op>: ok" or "<op>: fail <error>: <sentence>", and stops
 * at the first failure with exit status 1 (2: bad arguments). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sfi-error.h"
#include "sfi-file.h"
#include "transport.h"

static int fail_op(struct transport *t, const char *op, int r)
{
	char why[400];

	transport_describe(t, why, sizeof(why));
	printf("%s: fail %s: %s\n", op, sfi_strerror(r), why);
	return 1;
}

static int parse_u32(const char *s, uint32_t *ret)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || end == s || *end || v > UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	struct transport *t = NULL;
	char err[256];
	int r, i = 2, rc = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: mem-ops PORT OP...\n");
		return 2;
	}
	r = transport_open(argv[1], NULL, &t, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "mem-ops: %s\n", err);
		return 1;
	}
	while (i < argc && rc == 0) {
		const char *op = argv[i++];

		if (strcmp(op, "probe") == 0) {
			enum transport_presence p;

			r = transport_probe_sync(t, TRANSPORT_PROBE_ENTER, &p);
			if (r < 0)
				rc = fail_op(t, op, r);
			else
				printf("probe: ok %s\n", p == TRANSPORT_FRESH ? "fresh" : "present");
		} else if (strcmp(op, "identify") == 0) {
			struct transport_identity id;

			r = transport_identify_sync(t, &id);
			if (r < 0)
				rc = fail_op(t, op, r);
			else
				printf("identify: ok pid 0x%03x\n", id.pid);
		} else if (strcmp(op, "erase") == 0 && i < argc) {
			uint16_t sectors[256];
			size_t n = 0;
			char *list = argv[i++], *save = NULL;

			if (strcmp(list, "mass") != 0) {
				for (char *s = strtok_r(list, ",", &save); s;
				     s = strtok_r(NULL, ",", &save)) {
					uint32_t v;

					if (n == 256 || parse_u32(s, &v) < 0 || v > 0xffff)
						goto usage;
					sectors[n++] = (uint16_t)v;
				}
			}
			r = transport_erase_sync(t, sectors, n);
			if (r < 0)
				rc = fail_op(t, op, r);
			else
				printf("erase: ok\n");
		} else if (strcmp(op, "write") == 0 && i + 1 < argc) {
			uint32_t addr;
			uint8_t *data = NULL;
			size_t len = 0;

			if (parse_u32(argv[i], &addr) < 0)
				goto usage;
			r = sfi_file_read(argv[i + 1], 4u << 20, &data, &len);
			i += 2;
			if (r < 0) {
				fprintf(stderr, "mem-ops: cannot read %s\n", argv[i - 1]);
				goto usage;
			}
			r = transport_write_sync(t, addr, data, len);
			free(data);
			if (r < 0)
				rc = fail_op(t, op, r);
			else
				printf("write: ok %zu bytes\n", len);
		} else if (strcmp(op, "read") == 0 && i + 2 < argc) {
			uint32_t addr, len;
			uint8_t *buf;
			FILE *f;

			if (parse_u32(argv[i], &addr) < 0 || parse_u32(argv[i + 1], &len) < 0 ||
			    len > (4u << 20))
				goto usage;
			buf = malloc(len ? len : 1);
			if (!buf)
				return 1;
			r = transport_read_sync(t, addr, buf, len);
			if (r < 0) {
				rc = fail_op(t, op, r);
				free(buf);
				break;
			}
			f = fopen(argv[i + 2], "wb");
			if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
				fprintf(stderr, "mem-ops: cannot write %s\n", argv[i + 2]);
				free(buf);
				return 1;
			}
			free(buf);
			i += 3;
			printf("read: ok %u bytes\n", len);
		} else if (strcmp(op, "go") == 0 && i < argc) {
			uint32_t addr;

			if (parse_u32(argv[i++], &addr) < 0)
				goto usage;
			r = transport_go_sync(t, addr);
			if (r < 0)
				rc = fail_op(t, op, r);
			else
				printf("go: ok\n");
		} else {
			goto usage;
		}
		fflush(stdout);
	}
	transport_close(t);
	return rc;
usage:
	fprintf(stderr, "mem-ops: bad operation near argument %d\n", i);
	transport_close(t);
	return 2;
}

/* sfi-boot cert and install: the OSFI commands (docs/protocol.md §5), driving the host
 * session engine of protocol/osfi over the link vtable (transport.h), run blocking. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "osfi.h"
#include "sfi-boot.h"
#include "sfi-file.h"

#define INSTALL_MAX_MODULES 32
#define IMAGE_MAX_BYTES (64u << 20)

/* Runs a session to its end over the link. Returns an enum sfi_boot_exit value. */

/* Bound of docs/protocol.md §10.5: the chip answers 0x7F again within 15 s of FINALIZE. */
#define OSFI_RESET_MS 15000

static int osfi_drive(struct sfi_boot *b, struct osfi_session *s, const char *label)
{
	struct osfi_request req;
	enum osfi_next n;
	char what[512];
	uint64_t last_pct = 101;

	while ((n = osfi_session_next(s, &req)) == OSFI_NEXT_REQUEST || n == OSFI_NEXT_RECONNECT) {
		uint8_t ans[AN3155_SPECIAL_MAX_ANSWER];
		struct transport_answer a = { 0 };
		uint16_t status = 0;
		size_t alen = 0;
		int r;

		if (n == OSFI_NEXT_RECONNECT) {
			/* The chip resets after FINALIZE: synchronise with its bootloader again,
			 * for as long as a chip may take to come back (docs/protocol.md §10.5). */
			r = transport_reconnect_sync(b->tp, OSFI_RESET_MS);
			if (r < 0) {
				b->tp_failed = true;
				sfi_boot_progress_end(b);
				return sfi_boot_fail(b, r, "sync after FINALIZE");
			}
			osfi_session_reconnected(s);
			continue;
		}
		r = transport_osfi_sync(b->tp, &req, ans,
					req.answer_max < sizeof(ans) ? req.answer_max : sizeof(ans), &a);
		status = a.status;
		alen = a.len;
		if (r < 0) {
			b->tp_failed = true;
			osfi_session_link_error(s, r);
			snprintf(what, sizeof(what), "%s: %s", label, osfi_subop_name(req.subop));
			return sfi_boot_fail(b, r, what);
		}
		if (b->verbose && status != OSFI_ST_OK)
			fprintf(stderr, "sfi-boot: %s: status %s\n", osfi_subop_name(req.subop),
				osfi_status_name(status));
		osfi_session_answer(s, status, ans, alen);
		if (b->progress && req.subop == OSFI_OP_PUT_DATA) {
			uint64_t done, total, pct;

			osfi_session_progress(s, &done, &total);
			pct = total ? done * 100 / total : 100;
			if (pct != last_pct || done == total) {
				fprintf(stderr, "\r%s: %llu/%llu bytes (%llu%%)", label,
					(unsigned long long)done, (unsigned long long)total,
					(unsigned long long)pct);
				last_pct = pct;
			}
		}
	}
	if (b->progress && last_pct != 101)
		fputc('\n', stderr);
	if (n == OSFI_NEXT_FAILED) {
		int r = osfi_session_result(s);

		osfi_session_describe(s, what, sizeof(what));
		sfi_boot_error("%s: %s", label, what);
		if (r == -OSFI_E_STATUS || r == -OSFI_E_NOT_OPEN || r == -OSFI_E_BUSY ||
		    r == -OSFI_E_RAM_BUFFER)
			return SFI_BOOT_EXIT_REFUSED;
		if (r == -OSFI_E_FINAL_STATE || r == -OSFI_E_NOT_FINALIZED)
			return SFI_BOOT_EXIT_VERIFY;
		return SFI_BOOT_EXIT_LINK;
	}
	return SFI_BOOT_EXIT_OK;
}

static void print_uid(FILE *f, const uint8_t uid[OSFI_UID_LEN])
{
	for (size_t i = 0; i < OSFI_UID_LEN; i++)
		fprintf(f, "%02x", uid[i]);
}

static int cert_check(int argc, char **argv)
{
	if (strcmp(argv[0], "--out") != 0) {
		sfi_boot_error("cert: usage: cert --out FILE");
		return SFI_BOOT_EXIT_USAGE;
	}
	return SFI_BOOT_EXIT_OK;
}

static int cert_run(struct sfi_boot *b, int argc, char **argv)
{
	struct osfi_session *s = NULL;
	const struct osfi_cert *c;
	uint8_t buf[OSFI_CERT_LEN];
	int r, fd, ret;

	if (osfi_session_new_cert(&s) < 0) {
		sfi_boot_error("cert: out of memory");
		return SFI_BOOT_EXIT_FILE;
	}
	ret = osfi_drive(b, s, "cert");
	if (ret != SFI_BOOT_EXIT_OK)
		goto out;
	c = osfi_session_cert(s);
	osfi_cert_encode(c, buf);
	fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	r = fd < 0 ? -errno : 0;
	if (r == 0 && write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		r = -EIO;
	if (fd >= 0 && close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0) {
		sfi_boot_error("cert: cannot write %s: %s", argv[1], strerror(-r));
		ret = SFI_BOOT_EXIT_FILE;
		goto out;
	}
	printf("certificate of chip ");
	print_uid(stdout, c->uid);
	printf(" (device 0x%03x) written to %s\n", c->device_id, argv[1]);
out:
	osfi_session_free(s);
	return ret;
}

const struct sfi_boot_command sfi_boot_cmd_cert = {
	.name = "cert",
	.args = "--out FILE",
	.summary = "read the chip's OSFI certificate into FILE",
	.min_args = 2,
	.max_args = 2,
	.check = cert_check,
	.run = cert_run,
};

struct install_args {
	const char *license;
	const char *image;
	const char *expect;
	const char *modules[INSTALL_MAX_MODULES];
	size_t n_modules;
};

static int install_parse(int argc, char **argv, struct install_args *a)
{
	memset(a, 0, sizeof(*a));
	for (int i = 0; i < argc; i++) {
		bool more = i + 1 < argc;

		if (strcmp(argv[i], "--license") == 0 && more) {
			a->license = argv[++i];
		} else if (strcmp(argv[i], "--module-license") == 0 && more) {
			if (a->n_modules == INSTALL_MAX_MODULES || !strchr(argv[i + 1], '=')) {
				sfi_boot_error("install: --module-license wants ID=FILE (at most %d)",
					       INSTALL_MAX_MODULES);
				return SFI_BOOT_EXIT_USAGE;
			}
			a->modules[a->n_modules++] = argv[++i];
		} else if (strcmp(argv[i], "--expect-state") == 0 && more) {
			uint8_t ps;

			a->expect = argv[++i];
			if (osfi_product_state_parse(a->expect, &ps) < 0) {
				sfi_boot_error("install: unknown product state '%s'", a->expect);
				return SFI_BOOT_EXIT_USAGE;
			}
		} else if (argv[i][0] != '-' && !a->image) {
			a->image = argv[i];
		} else {
			sfi_boot_error("install: unexpected argument '%s'", argv[i]);
			return SFI_BOOT_EXIT_USAGE;
		}
	}
	if (!a->license || !a->image) {
		sfi_boot_error("install: usage: install --license FILE [--module-license ID=FILE]... "
			       "[--expect-state STATE] IMAGE");
		return SFI_BOOT_EXIT_USAGE;
	}
	return SFI_BOOT_EXIT_OK;
}

static int install_check(int argc, char **argv)
{
	struct install_args a;

	return install_parse(argc, argv, &a);
}

static int add_license_file(struct osfi_session *s, const char *path, uint32_t want_target)
{
	uint8_t *buf;
	size_t len;
	struct osfi_license l;
	int r;

	r = sfi_file_read(path, 4096, &buf, &len);
	if (r < 0) {
		sfi_boot_error("install: cannot read license %s: %s", path, strerror(-r));
		return SFI_BOOT_EXIT_FILE;
	}
	r = osfi_license_decode(buf, len, &l);
	if (r < 0) {
		sfi_boot_error("install: %s is not an OSFI license record", path);
		r = SFI_BOOT_EXIT_FILE;
	} else if (l.target != want_target) {
		sfi_boot_error("install: %s is a license for %s %u, not for %s %u", path,
			       l.target ? "module" : "the image", l.target,
			       want_target ? "module" : "the image", want_target);
		r = SFI_BOOT_EXIT_USAGE;
	} else if (osfi_session_add_license(s, buf, len) < 0) {
		sfi_boot_error("install: %s: a license for this target was already given", path);
		r = SFI_BOOT_EXIT_USAGE;
	} else {
		r = SFI_BOOT_EXIT_OK;
	}
	OPENSSL_cleanse(buf, len);
	OPENSSL_cleanse(&l, sizeof(l));
	free(buf);
	return r;
}

static int install_run(struct sfi_boot *b, int argc, char **argv)
{
	struct install_args a;
	struct osfi_session *s = NULL;
	const struct osfi_info *info;
	const char *ps_name;
	uint8_t *image = NULL;
	size_t len;
	char why[256];
	int r, ret;

	ret = install_parse(argc, argv, &a);
	if (ret != SFI_BOOT_EXIT_OK)
		return ret;
	r = sfi_file_read(a.image, IMAGE_MAX_BYTES, &image, &len);
	if (r < 0) {
		sfi_boot_error("install: cannot read image %s: %s", a.image, strerror(-r));
		return SFI_BOOT_EXIT_FILE;
	}
	r = osfi_session_new_install(image, len, &s, why, sizeof(why));
	if (r < 0) {
		sfi_boot_error("install: %s: %s", a.image, r == -ENOMEM ? "out of memory" : why);
		ret = SFI_BOOT_EXIT_FILE;
		goto out;
	}
	ret = add_license_file(s, a.license, OSFI_TARGET_IMAGE);
	for (size_t i = 0; ret == SFI_BOOT_EXIT_OK && i < a.n_modules; i++) {
		char *eq = strchr(a.modules[i], '=');
		char idtext[32];
		uint32_t id;

		snprintf(idtext, sizeof(idtext), "%.*s", (int)(eq - a.modules[i]), a.modules[i]);
		if (sfi_parse_u32(idtext, &id) < 0 || id == 0 ||
		    !osfi_image_has_module(osfi_session_image(s), id)) {
			sfi_boot_error("install: --module-license %s: the image carries no module "
				       "'%s'", a.modules[i], idtext);
			ret = SFI_BOOT_EXIT_USAGE;
			break;
		}
		ret = add_license_file(s, eq + 1, id);
	}
	if (ret != SFI_BOOT_EXIT_OK)
		goto out;
	if (a.expect) {
		uint8_t ps;

		osfi_product_state_parse(a.expect, &ps);
		osfi_session_expect_state(s, ps);
	}

	/* OSFI needs Special and Extended Special on UART, the OSFI alternate on DFU: say so
	 * plainly when the bootloader lacks them. */
	{
		struct transport_identity id;

		r = transport_identify_sync(b->tp, &id);
		if (r < 0) {
			b->tp_failed = true;
			ret = sfi_boot_fail(b, r, "install: identify");
			goto out;
		}
		if (!id.osfi) {
			sfi_boot_error("install: the bootloader does not offer Special (0x50) and "
				       "Extended Special (0x51); it cannot run OSFI");
			ret = SFI_BOOT_EXIT_REFUSED;
			goto out;
		}
	}
	ret = osfi_drive(b, s, "install");
	info = osfi_session_info(s);
	if (ret == SFI_BOOT_EXIT_OK && info) {
		ps_name = osfi_product_state_name(info->product_state);
		printf("installed %s on chip ", a.image);
		print_uid(stdout, info->uid);
		printf(": session %s, product state %s (0x%02x)\n",
		       osfi_session_state_name(info->session_state), ps_name ? ps_name : "unknown",
		       info->product_state);
		fprintf(stderr, "sfi-boot: note: this chip and the license count it used are in no "
				"line's audit trail; a count spent for it with sfi-hsm license shows "
				"in sfid as an unaccounted spend\n");
	}
out:
	osfi_session_free(s);
	free(image);
	return ret;
}

const struct sfi_boot_command sfi_boot_cmd_install = {
	.name = "install",
	.args = "--license FILE [--module-license ID=FILE]... [--expect-state STATE] IMAGE",
	.summary = "install an OSFI image with its license(s); the chip resets at the end",
	.min_args = 3,
	.max_args = -1,
	.check = install_check,
	.run = install_run,
};

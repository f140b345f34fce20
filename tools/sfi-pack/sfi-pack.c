/* sfi-pack: the OEM's OSFI image tool (docs/protocol.md): builds encrypted images, lists
 * them, authenticates them with the key, and makes global licenses. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "config.h"
#include "fw-load.h"
#include "osfi.h"
#include "sfi-error.h"
#include "sfi-file.h"
#include "sfi-hex.h"
#include "sfi-parse.h"

/* Exit codes (documented in --help). */
enum {
	EXIT_OK = 0,
	EXIT_USAGE = 1,	  /* bad command line */
	EXIT_INPUT = 2,	  /* an input file is missing, malformed or violates a rule */
	EXIT_AUTH = 3,	  /* check: an area or the header does not authenticate */
	EXIT_OUTPUT = 4,  /* an output file could not be written, or an internal failure */
};

#define MAX_INPUTS 64

static void help(void)
{
	printf("Usage: sfi-pack COMMAND [OPTIONS]\n"
	       "Builds and inspects OSFI v1 images (docs/protocol.md).\n\n"
	       "  create --out IMAGE --firmware FILE[@ADDR]... --options OB.csv\n"
	       "         (--key KEYFILE | --generate-key KEYFILE) [--device 0x484]\n"
	       "         [--secret FILE@ADDR]... [--module FILE@ADDR:ID:KEYFILE]...\n"
	       "         [--nonce FILE] [--version N] [--ram-buffer BYTES]\n"
	       "      Firmware: .hex (Intel HEX), ELF (PT_LOAD at p_paddr) or raw binary with\n"
	       "      @ADDR. Option CSV (docs/protocol.md 4.5): `NAME, VALUE` lines, NAME one of\n"
	       "      OPTSR_PRG ... HDP2R_PRG (VALUE the whole register, decimal or 0x hex) or\n"
	       "      PRODUCT_STATE (required; VALUE Open, Provisioning, iROT-Provisioned,\n"
	       "      TZ-Closed, Closed or Locked, written exactly so).\n"
	       "      Areas are split to fit --ram-buffer (default 65536).\n"
	       "  info IMAGE [--json]           lists header, image id and areas (no key)\n"
	       "  check --key KEYFILE [--module-key ID:KEYFILE]... IMAGE\n"
	       "                                authenticates the header and every area\n"
	       "  license --global --global-key G.bin --key K.bin --image IMAGE --out LIC\n"
	       "          [--module ID]         makes a global (uncounted) license\n\n"
	       "Keys are raw files (16 bytes; global key 32 bytes), never arguments.\n"
	       "Exit codes: 0 success, 1 usage error, 2 bad or missing input (file, format,\n"
	       "address, overlap), 3 authentication failure (check), 4 output or internal error.\n");
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("sfi-pack: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* Reads a raw key file of exactly n bytes into key. A key file other users may read or
 * write is refused, as sfid refuses such a PIN file: the key would be as good as published,
 * or could be replaced. */
static int read_key(const char *path, uint8_t *key, size_t n)
{
	struct stat st;
	uint8_t *buf;
	size_t len;
	int r;

	if (stat(path, &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH)))
		return fail(EXIT_INPUT, "key file %s: other users may read or write it (mode %04o); "
			    "make it private (chmod o-rwx) and keep the key secret", path,
			    (unsigned)(st.st_mode & 07777));
	r = sfi_file_read(path, 4096, &buf, &len);
	if (r < 0)
		return fail(EXIT_INPUT, "cannot read key file %s: %s", path, strerror(-r));
	if (len != n) {
		OPENSSL_cleanse(buf, len);
		free(buf);
		return fail(EXIT_INPUT, "key file %s has %zu bytes, expected %zu raw bytes", path,
			    len, n);
	}
	memcpy(key, buf, n);
	OPENSSL_cleanse(buf, len);
	free(buf);
	return 0;
}

static int write_file(const char *path, const uint8_t *buf, size_t len, mode_t mode)
{
	char tmp[4096];
	size_t done = 0;
	int fd;

	if (snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode) < 0)
		goto fail;
	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		done += (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	if (rename(tmp, path) < 0) {
		fd = -1;
		goto fail;
	}
	return 0;
fail: {
	int e = errno;

	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return -e;
}
}

/* Splits "FILE@ADDR" (ADDR optional when !need). */
static int split_at(char *arg, uint32_t *ret_addr, bool *ret_has)
{
	char *at = strrchr(arg, '@');

	*ret_has = false;
	if (!at)
		return 0;
	*at = '\0';
	if (sfi_parse_u32(at + 1, ret_addr) < 0)
		return -EINVAL;
	*ret_has = true;
	return 0;
}

struct named_area {
	struct osfi_area_spec spec;
	char source[300];
};

static int cmp_area(const void *a, const void *b)
{
	const struct named_area *x = a, *y = b;

	return x->spec.address < y->spec.address ? -1 : x->spec.address > y->spec.address;
}

static const char *range_error(int r)
{
	return r == -ERANGE ? "is outside what this area type may write (flash "
			      "0x08000000-0x081FFFFF; secrets also OTP 0x08FFF000-0x08FFF7FF and "
			      "OBK 0x0FFD0000-0x0FFD1FFF; the UID/option area is reserved)" :
			      "is not 16-byte aligned";
}

static int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "device", required_argument, NULL, 'd' },
		{ "firmware", required_argument, NULL, 'f' },
		{ "options", required_argument, NULL, 'O' },
		{ "secret", required_argument, NULL, 's' },
		{ "module", required_argument, NULL, 'm' },
		{ "key", required_argument, NULL, 'k' },
		{ "generate-key", required_argument, NULL, 'g' },
		{ "nonce", required_argument, NULL, 'n' },
		{ "version", required_argument, NULL, 'v' },
		{ "ram-buffer", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *out = NULL, *options = NULL, *keyfile = NULL, *genkey = NULL, *noncefile = NULL;
	char *firmware[MAX_INPUTS], *secrets[MAX_INPUTS], *modules[MAX_INPUTS];
	size_t n_fw = 0, n_sec = 0, n_mod = 0, n_areas = 0;
	uint32_t device = 0x484, version = 0, ram = 65536;
	struct named_area *areas = NULL;
	struct osfi_area_spec *specs = NULL;
	struct fw_image fw = { 0 };
	uint8_t key[OSFI_KEY_LEN], (*mkeys)[OSFI_KEY_LEN] = NULL, nonce[OSFI_NONCE_LEN];
	uint8_t *secret_bufs[MAX_INPUTS] = { 0 }, *module_bufs[MAX_INPUTS] = { 0 };
	uint8_t cfg[OSFI_OPT_MAX * OSFI_OPT_RECORD_LEN];
	struct osfi_option ob[OSFI_OPT_MAX];
	uint8_t *img = NULL;
	size_t img_len, n_ob;
	char reason[SFI_REASON_MAX];
	int c, ret = EXIT_INPUT, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'O': options = optarg; break;
		case 'k': keyfile = optarg; break;
		case 'g': genkey = optarg; break;
		case 'n': noncefile = optarg; break;
		case 'f':
		case 's':
		case 'm': {
			char **list = c == 'f' ? firmware : c == 's' ? secrets : modules;
			size_t *n = c == 'f' ? &n_fw : c == 's' ? &n_sec : &n_mod;

			if (*n == MAX_INPUTS)
				return fail(EXIT_USAGE, "too many --%s options", c == 'f' ? "firmware" : c == 's' ? "secret" : "module");
			list[(*n)++] = optarg;
			break;
		}
		case 'd':
			if (sfi_parse_u32(optarg, &device) < 0 || device > 0xffff)
				return fail(EXIT_USAGE, "--device needs a device id such as 0x484");
			break;
		case 'v':
			if (sfi_parse_u32(optarg, &version) < 0)
				return fail(EXIT_USAGE, "--version needs a 32-bit number");
			break;
		case 'r':
			if (sfi_parse_u32(optarg, &ram) < 0 || ram < 64)
				return fail(EXIT_USAGE, "--ram-buffer needs a size of at least 64 bytes");
			break;
		case 'h':
			help();
			return EXIT_OK;
		default:
			return fail(EXIT_USAGE, "see sfi-pack --help");
		}
	}
	if (optind != argc)
		return fail(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
	if (!out || !options || n_fw == 0 || !!keyfile == !!genkey)
		return fail(EXIT_USAGE, "create needs --out, --options, at least one --firmware and "
					"exactly one of --key or --generate-key");

	/* Option bytes. */
	{
		uint8_t *text;
		size_t len;

		r = sfi_file_read(options, 1 << 20, &text, &len);
		if (r < 0)
			return fail(EXIT_INPUT, "cannot read option file %s: %s", options, strerror(-r));
		r = osfi_options_parse_csv((const char *)text, len, ob, OSFI_OPT_MAX, &n_ob, reason,
					   sizeof(reason));
		free(text);
		if (r < 0)
			return fail(EXIT_INPUT, "%s: %s", options, reason);
		r = osfi_options_encode(ob, n_ob, cfg, sizeof(cfg));
		if (r < 0)
			return fail(EXIT_INPUT, "%s: cannot encode option bytes", options);
	}

	/* Firmware. */
	for (size_t i = 0; i < n_fw; i++) {
		uint32_t addr = 0;
		bool has;

		if (split_at(firmware[i], &addr, &has) < 0) {
			ret = fail(EXIT_USAGE, "--firmware %s: bad address after @", firmware[i]);
			goto out;
		}
		if (fw_load(&fw, firmware[i], has, addr, reason, sizeof(reason)) < 0) {
			ret = fail(EXIT_INPUT, "%s", reason);
			goto out;
		}
	}

	areas = calloc(fw.n + n_sec + n_mod + 1, sizeof(*areas));
	mkeys = calloc(n_mod ? n_mod : 1, OSFI_KEY_LEN);
	if (!areas || !mkeys) {
		ret = fail(EXIT_OUTPUT, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < fw.n; i++) {
		struct named_area *a = &areas[n_areas++];
		uint32_t pad = fw.seg[i].address % 16;

		/* Align the start down to 16 bytes; the builder pads the end with 0xFF. */
		if (pad) {
			uint8_t *d = malloc(fw.seg[i].size + pad);

			if (!d) {
				ret = fail(EXIT_OUTPUT, "out of memory");
				goto out;
			}
			memset(d, 0xff, pad);
			memcpy(d + pad, fw.seg[i].data, fw.seg[i].size);
			free(fw.seg[i].data);
			fw.seg[i].data = d;
			fw.seg[i].size += pad;
			fw.seg[i].address -= pad;
		}
		a->spec = (struct osfi_area_spec){ .type = OSFI_AREA_FIRMWARE,
						   .address = fw.seg[i].address,
						   .data = fw.seg[i].data, .size = fw.seg[i].size };
		snprintf(a->source, sizeof(a->source), "firmware %s", fw.seg[i].source);
	}
	for (size_t i = 0; i < n_sec; i++) {
		struct named_area *a = &areas[n_areas++];
		uint32_t addr;
		bool has;
		size_t len;

		if (split_at(secrets[i], &addr, &has) < 0 || !has) {
			ret = fail(EXIT_USAGE, "--secret %s: needs FILE@ADDR", secrets[i]);
			goto out;
		}
		r = sfi_file_read(secrets[i], 1 << 20, &secret_bufs[i], &len);
		if (r < 0 || len == 0) {
			ret = fail(EXIT_INPUT, "secret %s: %s", secrets[i], r < 0 ? strerror(-r) : "empty file");
			goto out;
		}
		if (addr % 16) {
			ret = fail(EXIT_INPUT, "secret %s: address 0x%08x is not 16-byte aligned",
				   secrets[i], addr);
			goto out;
		}
		a->spec = (struct osfi_area_spec){ .type = OSFI_AREA_SECRETS, .address = addr,
						   .data = secret_bufs[i], .size = len };
		snprintf(a->source, sizeof(a->source), "secret %s", secrets[i]);
	}
	for (size_t i = 0; i < n_mod; i++) {
		struct named_area *a = &areas[n_areas++];
		char *colon1, *colon2;
		uint32_t addr, id;
		bool has;
		size_t len;

		colon1 = strchr(modules[i], ':');
		colon2 = colon1 ? strchr(colon1 + 1, ':') : NULL;
		if (!colon2) {
			ret = fail(EXIT_USAGE, "--module %s: needs FILE@ADDR:ID:KEYFILE", modules[i]);
			goto out;
		}
		*colon1 = *colon2 = '\0';
		if (split_at(modules[i], &addr, &has) < 0 || !has || sfi_parse_u32(colon1 + 1, &id) < 0 ||
		    id == 0) {
			ret = fail(EXIT_USAGE, "--module %s: needs FILE@ADDR:ID:KEYFILE with a non-zero id",
				   modules[i]);
			goto out;
		}
		for (size_t k = 0; k < i; k++)
			if (areas[fw.n + n_sec + k].spec.module_id == id) {
				ret = fail(EXIT_INPUT, "module id %u given twice", id);
				goto out;
			}
		r = read_key(colon2 + 1, mkeys[i], OSFI_KEY_LEN);
		if (r)
			goto out;
		r = sfi_file_read(modules[i], 16u << 20, &module_bufs[i], &len);
		if (r < 0 || len == 0) {
			ret = fail(EXIT_INPUT, "module %s: %s", modules[i], r < 0 ? strerror(-r) : "empty file");
			goto out;
		}
		if (addr % 16) {
			ret = fail(EXIT_INPUT, "module %s: address 0x%08x is not 16-byte aligned",
				   modules[i], addr);
			goto out;
		}
		a->spec = (struct osfi_area_spec){ .type = OSFI_AREA_MODULE, .address = addr,
						   .module_id = id, .data = module_bufs[i],
						   .size = len, .key = mkeys[i] };
		snprintf(a->source, sizeof(a->source), "module %s", modules[i]);
	}

	/* Ranges and overlaps, with names. */
	for (size_t i = 0; i < n_areas; i++) {
		struct osfi_area_spec *s = &areas[i].spec;
		size_t padded = (s->size + 15) & ~(size_t)15;

		r = padded > UINT32_MAX ? -ERANGE : osfi_area_check_range(s->type, s->address, (uint32_t)padded);
		if (r < 0) {
			ret = fail(EXIT_INPUT, "%s: %zu bytes at 0x%08x %s", areas[i].source, s->size,
				   s->address, range_error(r));
			goto out;
		}
	}
	qsort(areas, n_areas, sizeof(*areas), cmp_area);
	for (size_t i = 1; i < n_areas; i++) {
		struct osfi_area_spec *p = &areas[i - 1].spec;
		uint64_t pend = (uint64_t)p->address + ((p->size + 15) & ~(size_t)15);

		if (areas[i].spec.address < pend) {
			ret = fail(EXIT_INPUT, "%s overlaps %s at 0x%08x", areas[i].source,
				   areas[i - 1].source, areas[i].spec.address);
			goto out;
		}
	}
	areas[n_areas++].spec = (struct osfi_area_spec){ .type = OSFI_AREA_CONFIG, .data = cfg,
							  .size = n_ob * OSFI_OPT_RECORD_LEN };

	/* Keys and nonce. */
	if (keyfile) {
		r = read_key(keyfile, key, sizeof(key));
		if (r)
			goto out;
	} else {
		if (RAND_priv_bytes(key, sizeof(key)) != 1) {
			ret = fail(EXIT_OUTPUT, "no randomness for a new key");
			goto out;
		}
		r = write_file(genkey, key, sizeof(key), 0600);
		if (r < 0) {
			ret = fail(EXIT_OUTPUT, "cannot write key file %s: %s", genkey, strerror(-r));
			goto out;
		}
	}
	if (noncefile) {
		uint8_t *nb;
		size_t len;

		r = sfi_file_read(noncefile, 64, &nb, &len);
		if (r < 0 || len != OSFI_NONCE_LEN) {
			if (r == 0)
				free(nb);
			ret = fail(EXIT_INPUT, "nonce file %s must hold exactly 12 raw bytes", noncefile);
			goto out;
		}
		memcpy(nonce, nb, OSFI_NONCE_LEN);
		free(nb);
	} else if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
		ret = fail(EXIT_OUTPUT, "no randomness for the nonce");
		goto out;
	}

	specs = calloc(n_areas, sizeof(*specs));
	if (!specs) {
		ret = fail(EXIT_OUTPUT, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_areas; i++)
		specs[i] = areas[i].spec;
	{
		struct osfi_image_spec spec = { .device_id = (uint16_t)device, .image_version = version,
						.key = key, .max_area = ram, .areas = specs,
						.n_areas = n_areas };

		memcpy(spec.nonce, nonce, sizeof(nonce));
		r = osfi_image_build(&spec, &img, &img_len);
	}
	if (r < 0) {
		ret = fail(r == -E2BIG ? EXIT_INPUT : EXIT_OUTPUT, "cannot build the image: %s",
			   r == -E2BIG ? "too many areas (more than 4096) or too large; raise --ram-buffer" :
					 strerror(-r));
		goto out;
	}
	r = write_file(out, img, img_len, 0644);
	if (r < 0) {
		ret = fail(EXIT_OUTPUT, "cannot write %s: %s", out, strerror(-r));
		goto out;
	}
	ret = EXIT_OK;
out:
	OPENSSL_cleanse(key, sizeof(key));
	if (mkeys)
		OPENSSL_cleanse(mkeys, (n_mod ? n_mod : 1) * OSFI_KEY_LEN);
	free(mkeys);
	for (size_t i = 0; i < MAX_INPUTS; i++) {
		free(secret_bufs[i]);
		free(module_bufs[i]);
	}
	free(specs);
	free(areas);
	free(img);
	fw_image_clear(&fw);
	return ret;
}

static int load_image(const char *path, uint8_t **ret_buf, size_t *ret_len,
		      struct osfi_image **ret_img)
{
	char reason[SFI_REASON_MAX];
	int r;

	r = sfi_file_read(path, (size_t)UINT32_MAX, ret_buf, ret_len);
	if (r < 0)
		return fail(EXIT_INPUT, "cannot read image %s: %s", path, strerror(-r));
	r = osfi_image_parse(*ret_buf, *ret_len, ret_img, reason, sizeof(reason));
	if (r < 0) {
		/* The caller frees what it is given: nothing, here. */
		free(*ret_buf);
		*ret_buf = NULL;
		return fail(EXIT_INPUT, "%s: %s", path, r == -ENOMEM ? "out of memory" : reason);
	}
	return 0;
}

static int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, {} };
	struct osfi_image *img;
	uint8_t *buf;
	size_t len;
	bool json = false;
	char id[65], nonce[25];
	int c, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 'j')
			return fail(EXIT_USAGE, "see sfi-pack --help");
		json = true;
	}
	if (optind != argc - 1)
		return fail(EXIT_USAGE, "info needs one IMAGE");
	r = load_image(argv[optind], &buf, &len, &img);
	if (r)
		return r;
	sfi_hex_encode(img->id, 32, id);
	sfi_hex_encode(img->hdr.nonce, 12, nonce);
	if (json) {
		printf("{\"format\":%u,\"device\":%u,\"image_version\":%" PRIu32 ",\"total_length\":%" PRIu32
		       ",\"image_id\":\"%s\",\"nonce\":\"%s\",\"largest_area\":%" PRIu32 ",\"areas\":[",
		       img->hdr.format, img->hdr.device_id, img->hdr.image_version, img->hdr.total_len,
		       id, nonce, img->max_area);
		for (size_t i = 0; i < img->n_areas; i++) {
			const struct osfi_desc *d = &img->areas[i].desc;

			printf("%s{\"index\":%u,\"type\":\"%c\",\"version\":%u,\"size\":%" PRIu32
			       ",\"address\":%" PRIu32 ",\"module\":%" PRIu32 "}",
			       i ? "," : "", d->index, d->type, d->version, d->size, d->address,
			       d->module_id);
		}
		printf("]}\n");
	} else {
		printf("format:         %u\ndevice:         0x%03x\nimage version:  %" PRIu32
		       "\ntotal length:   %" PRIu32 "\nimage id:       %s\nnonce:          %s\n"
		       "areas:          %u (largest %" PRIu32 " bytes)\n",
		       img->hdr.format, img->hdr.device_id, img->hdr.image_version,
		       img->hdr.total_len, id, nonce, img->hdr.area_count, img->max_area);
		for (size_t i = 0; i < img->n_areas; i++) {
			const struct osfi_desc *d = &img->areas[i].desc;

			printf("  %4u  %c  %8" PRIu32 " bytes", d->index, d->type, d->size);
			if (d->type != OSFI_AREA_CONFIG)
				printf("  at 0x%08" PRIx32, d->address);
			if (d->module_id)
				printf("  module %" PRIu32, d->module_id);
			printf("\n");
		}
	}
	osfi_image_free(img);
	free(buf);
	return EXIT_OK;
}

static int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = { { "key", required_argument, NULL, 'k' },
					      { "module-key", required_argument, NULL, 'm' },
					      {} };
	struct osfi_module_key mk[MAX_INPUTS];
	const char *keyfile = NULL;
	struct osfi_image *img = NULL;
	uint8_t key[OSFI_KEY_LEN], *buf = NULL;
	size_t n_mk = 0, len;
	unsigned bad = 0;
	int c, r, ret = EXIT_INPUT;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'k') {
			keyfile = optarg;
		} else if (c == 'm') {
			char *colon = strchr(optarg, ':');

			if (!colon || n_mk == MAX_INPUTS) {
				ret = fail(EXIT_USAGE, "--module-key needs ID:KEYFILE");
				goto out;
			}
			*colon = '\0';
			if (sfi_parse_u32(optarg, &mk[n_mk].module_id) < 0) {
				ret = fail(EXIT_USAGE, "--module-key: bad module id '%s'", optarg);
				goto out;
			}
			r = read_key(colon + 1, mk[n_mk].key, OSFI_KEY_LEN);
			if (r) {
				ret = r;
				goto out;
			}
			n_mk++;
		} else {
			ret = fail(EXIT_USAGE, "see sfi-pack --help");
			goto out;
		}
	}
	if (!keyfile || optind != argc - 1) {
		ret = fail(EXIT_USAGE, "check needs --key KEYFILE and one IMAGE");
		goto out;
	}
	r = read_key(keyfile, key, sizeof(key));
	if (r) {
		ret = r;
		goto out;
	}
	r = load_image(argv[optind], &buf, &len, &img);
	if (r) {
		ret = r;
		goto out;
	}
	r = osfi_image_authenticate(img, key, mk, n_mk, &bad);
	if (r == -EBADMSG && bad == 0)
		ret = fail(EXIT_AUTH, "%s: the header does not authenticate with this key",
			   argv[optind]);
	else if (r == -EBADMSG)
		ret = fail(EXIT_AUTH, "%s: area %u ('%c' at 0x%08x) does not authenticate",
			   argv[optind], bad, img->areas[bad - 1].desc.type,
			   img->areas[bad - 1].desc.address);
	else if (r == -ENOKEY)
		ret = fail(EXIT_USAGE, "%s: area %u belongs to module %u: give --module-key %u:KEYFILE",
			   argv[optind], bad, img->areas[bad - 1].desc.module_id,
			   img->areas[bad - 1].desc.module_id);
	else if (r < 0)
		ret = fail(EXIT_OUTPUT, "%s: %s", argv[optind], strerror(-r));
	else {
		printf("%s: header and %zu areas authenticate\n", argv[optind], img->n_areas);
		ret = EXIT_OK;
	}
out:
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(mk, sizeof(mk));
	osfi_image_free(img);
	free(buf);
	return ret;
}

static int cmd_license(int argc, char **argv)
{
	static const struct option opts[] = { { "global", no_argument, NULL, 'G' },
					      { "global-key", required_argument, NULL, 'g' },
					      { "key", required_argument, NULL, 'k' },
					      { "image", required_argument, NULL, 'i' },
					      { "out", required_argument, NULL, 'o' },
					      { "module", required_argument, NULL, 'm' },
					      {} };
	const char *gfile = NULL, *kfile = NULL, *image = NULL, *out = NULL;
	uint8_t g[32], key[OSFI_KEY_LEN], rec[OSFI_LICENSE_LEN], *buf = NULL;
	struct osfi_image *img = NULL;
	struct osfi_license lic;
	uint32_t module = 0;
	bool global = false;
	size_t len;
	int c, r, ret = EXIT_INPUT;

	memset(&lic, 0, sizeof(lic));
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'G': global = true; break;
		case 'g': gfile = optarg; break;
		case 'k': kfile = optarg; break;
		case 'i': image = optarg; break;
		case 'o': out = optarg; break;
		case 'm':
			if (sfi_parse_u32(optarg, &module) < 0 || module == 0)
				return fail(EXIT_USAGE, "--module needs a non-zero module id");
			break;
		default:
			return fail(EXIT_USAGE, "see sfi-pack --help");
		}
	}
	if (!global)
		return fail(EXIT_USAGE, "sfi-pack makes only global licenses (--global); chip "
					"licenses come from the HSM");
	if (!gfile || !kfile || !image || !out || optind != argc)
		return fail(EXIT_USAGE, "license needs --global-key, --key, --image and --out");

	r = load_image(image, &buf, &len, &img);
	if (r)
		return r;
	if (module && !osfi_image_has_module(img, module)) {
		ret = fail(EXIT_INPUT, "%s carries no module %u", image, module);
		goto out;
	}
	r = read_key(gfile, g, sizeof(g));
	if (r == 0)
		r = read_key(kfile, key, sizeof(key));
	if (r) {
		ret = r;
		goto out;
	}
	/* The image key must be the one the image was made with: a license for a key that
	 * does not open the image is a trap for the line. */
	if (!module && osfi_header_authenticate(buf, key) < 0) {
		ret = fail(EXIT_AUTH, "%s: the key in %s does not authenticate this image", image,
			   kfile);
		goto out;
	}
	lic.kind = OSFI_LICENSE_KIND_GLOBAL;
	lic.device_id = img->hdr.device_id;
	lic.target = module;
	if (module)
		osfi_module_firmware_id(module, lic.id);
	else
		memcpy(lic.id, img->id, OSFI_ID_LEN);
	if (RAND_bytes(lic.nonce, sizeof(lic.nonce)) != 1) {
		ret = fail(EXIT_OUTPUT, "no randomness for the license nonce");
		goto out;
	}
	r = osfi_license_seal_global(&lic, g, key);
	if (r < 0) {
		ret = fail(EXIT_OUTPUT, "cannot seal the license: %s", strerror(-r));
		goto out;
	}
	osfi_license_encode(&lic, rec);
	r = write_file(out, rec, sizeof(rec), 0600);
	if (r < 0) {
		ret = fail(EXIT_OUTPUT, "cannot write %s: %s", out, strerror(-r));
		goto out;
	}
	ret = EXIT_OK;
out:
	OPENSSL_cleanse(g, sizeof(g));
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(&lic, sizeof(lic));
	osfi_image_free(img);
	free(buf);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		help();
		return argc < 2 ? EXIT_USAGE : EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("sfi-pack %s\n", SFID_VERSION);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "create") == 0)
		return cmd_create(argc - 1, argv + 1);
	if (strcmp(argv[1], "info") == 0)
		return cmd_info(argc - 1, argv + 1);
	if (strcmp(argv[1], "check") == 0)
		return cmd_check(argc - 1, argv + 1);
	if (strcmp(argv[1], "license") == 0)
		return cmd_license(argc - 1, argv + 1);
	return fail(EXIT_USAGE, "unknown command '%s'; see sfi-pack --help", argv[1]);
}

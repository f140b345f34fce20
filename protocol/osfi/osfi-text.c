/* Option-byte records and the two small text formats of OSFI: the option CSV given to
 * sfi-pack and the module license information file (docs/protocol.md §4.4, §7). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osfi.h"
#include "osfi-util.h"
#include "an3155-wire.h"
#include "sfi-hex.h"
#include "sfi-parse.h"

static const char *const osfi_option_names[OSFI_OPT_MAX + 1] = {
	[OSFI_OPT_OPTSR] = "OPTSR_PRG",	      [OSFI_OPT_OPTSR2] = "OPTSR2_PRG",
	[OSFI_OPT_NSBOOTR] = "NSBOOTR_PRG",   [OSFI_OPT_SECBOOTR] = "SECBOOTR_PRG",
	[OSFI_OPT_SECWM1R] = "SECWM1R_PRG",   [OSFI_OPT_SECWM2R] = "SECWM2R_PRG",
	[OSFI_OPT_WRP1R] = "WRP1R_PRG",	      [OSFI_OPT_WRP2R] = "WRP2R_PRG",
	[OSFI_OPT_EDATA1R] = "EDATA1R_PRG",   [OSFI_OPT_EDATA2R] = "EDATA2R_PRG",
	[OSFI_OPT_HDP1R] = "HDP1R_PRG",	      [OSFI_OPT_HDP2R] = "HDP2R_PRG",
};

static const struct {
	uint8_t value;
	const char *name;
} osfi_product_states[] = {
	{ STM32H5_PS_OPEN, "Open" },
	{ STM32H5_PS_PROVISIONING, "Provisioning" },
	{ STM32H5_PS_IROT_PROVISIONED, "iROT-Provisioned" },
	{ STM32H5_PS_TZ_CLOSED, "TZ-Closed" },
	{ STM32H5_PS_CLOSED, "Closed" },
	{ STM32H5_PS_LOCKED, "Locked" },
};

const char *osfi_option_name(uint16_t reg)
{
	return reg <= OSFI_OPT_MAX ? osfi_option_names[reg] : NULL;
}

int osfi_option_from_name(const char *name, uint16_t *ret_reg)
{
	for (uint16_t r = 1; r <= OSFI_OPT_MAX; r++)
		if (strcasecmp(name, osfi_option_names[r]) == 0) {
			*ret_reg = r;
			return 0;
		}
	return -ENOENT;
}

const char *osfi_product_state_name(uint8_t ps)
{
	for (size_t i = 0; i < sizeof(osfi_product_states) / sizeof(osfi_product_states[0]); i++)
		if (osfi_product_states[i].value == ps)
			return osfi_product_states[i].name;
	return NULL;
}

int osfi_number_parse(const char *s, uint32_t *ret)
{
	return sfi_parse_u32(s, ret);
}

int osfi_product_state_parse(const char *s, uint8_t *ret_ps)
{
	uint32_t v;

	for (size_t i = 0; i < sizeof(osfi_product_states) / sizeof(osfi_product_states[0]); i++)
		if (strcasecmp(s, osfi_product_states[i].name) == 0) {
			*ret_ps = osfi_product_states[i].value;
			return 0;
		}
	if (osfi_number_parse(s, &v) == 0 && v <= 0xff && osfi_product_state_name((uint8_t)v)) {
		*ret_ps = (uint8_t)v;
		return 0;
	}
	return -ENOENT;
}

int osfi_options_encode(const struct osfi_option *opts, size_t n, uint8_t *out, size_t outmax)
{
	if ((n && !opts) || !out)
		return -EINVAL;
	if (n > OSFI_OPT_MAX || outmax < n * OSFI_OPT_RECORD_LEN)
		return -ENOBUFS;
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = out + i * OSFI_OPT_RECORD_LEN;

		if (!osfi_option_name(opts[i].reg))
			return -EINVAL;
		osfi_put_le16(p, opts[i].reg);
		osfi_put_le16(p + 2, 0);
		osfi_put_le32(p + 4, opts[i].value);
	}
	return (int)(n * OSFI_OPT_RECORD_LEN);
}

int osfi_options_decode(const uint8_t *buf, size_t len, struct osfi_option *ret_opts, size_t max,
			size_t *ret_n)
{
	bool seen[OSFI_OPT_MAX + 1] = { false };
	size_t n = len / OSFI_OPT_RECORD_LEN;

	if (!buf || !ret_n || (max && !ret_opts))
		return -EINVAL;
	if (len == 0 || len % OSFI_OPT_RECORD_LEN)
		return -EBADMSG;
	if (n > max)
		return -ENOBUFS;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p = buf + i * OSFI_OPT_RECORD_LEN;
		uint16_t reg = osfi_get_le16(p);
		uint32_t value = osfi_get_le32(p + 4);

		if (!osfi_option_name(reg) || seen[reg] || osfi_get_le16(p + 2) != 0)
			return -EBADMSG;
		seen[reg] = true;
		if (reg == OSFI_OPT_OPTSR && !osfi_product_state_name((uint8_t)(value >> 8)))
			return -EBADMSG;
	}
	if (!seen[OSFI_OPT_OPTSR])
		return -EBADMSG;
	for (size_t i = 0; i < n; i++) {
		ret_opts[i].reg = osfi_get_le16(buf + i * OSFI_OPT_RECORD_LEN);
		ret_opts[i].value = osfi_get_le32(buf + i * OSFI_OPT_RECORD_LEN + 4);
	}
	*ret_n = n;
	return 0;
}

static int osfi_text_why(char *reason, size_t reason_size, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int osfi_text_why(char *reason, size_t reason_size, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (reason && reason_size) {
		if (line)
			n = snprintf(reason, reason_size, "line %u: ", line);
		if (n >= 0 && (size_t)n < reason_size) {
			va_start(ap, fmt);
			vsnprintf(reason + n, reason_size - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

#define OSFI_TEXT_LINE_MAX 8192
#define OSFI_TEXT_FIELDS 4

/* Splits one line (comment removed, trimmed) into comma-separated trimmed fields, in place.
 * Returns the number of fields (0 for a blank line), or -E2BIG. */
static int osfi_text_fields(char *line, char *fields[OSFI_TEXT_FIELDS])
{
	char *hash = strchr(line, '#'), *p = line;
	int n = 0;

	if (hash)
		*hash = '\0';
	for (;;) {
		char *comma = strchr(p, ','), *end;

		if (comma)
			*comma = '\0';
		while (isspace((unsigned char)*p))
			p++;
		end = p + strlen(p);
		while (end > p && isspace((unsigned char)end[-1]))
			*--end = '\0';
		if (n == OSFI_TEXT_FIELDS)
			return -E2BIG;
		fields[n++] = p;
		if (!comma)
			break;
		p = comma + 1;
	}
	if (n == 1 && fields[0][0] == '\0')
		return 0;
	return n;
}

/* Iterates over the lines of text: copies line number *lineno into buf (NUL-terminated).
 * Returns 1 with a line, 0 at the end, -E2BIG for a line too long, -EBADMSG for a NUL. */
static int osfi_text_next_line(const char *text, size_t len, size_t *pos, char *buf,
			       size_t bufsize)
{
	size_t start = *pos, end;

	if (start >= len)
		return 0;
	end = start;
	while (end < len && text[end] != '\n')
		end++;
	*pos = end < len ? end + 1 : end;
	if (end > start && text[end - 1] == '\r')
		end--;
	if (end - start >= bufsize)
		return -E2BIG;
	if (memchr(text + start, '\0', end - start))
		return -EBADMSG;
	memcpy(buf, text + start, end - start);
	buf[end - start] = '\0';
	return 1;
}

/* The option CSV names product states exactly as docs/protocol.md §4.5 writes them. */
static int csv_product_state(const char *s, uint8_t *ret_ps)
{
	for (size_t i = 0; i < sizeof(osfi_product_states) / sizeof(osfi_product_states[0]); i++)
		if (strcmp(s, osfi_product_states[i].name) == 0) {
			*ret_ps = osfi_product_states[i].value;
			return 0;
		}
	return -ENOENT;
}

static const char *csv_product_state_hint(const char *s)
{
	uint32_t v;

	for (size_t i = 0; i < sizeof(osfi_product_states) / sizeof(osfi_product_states[0]); i++)
		if (strcasecmp(s, osfi_product_states[i].name) == 0)
			return osfi_product_states[i].name;
	if (osfi_number_parse(s, &v) == 0 && v <= 0xff)
		return osfi_product_state_name((uint8_t)v);
	return NULL;
}

int osfi_options_parse_csv(const char *text, size_t len, struct osfi_option *ret_opts,
			   size_t max, size_t *ret_n, char *reason, size_t reason_size)
{
	uint32_t values[OSFI_OPT_MAX + 1] = { 0 };
	unsigned set_line[OSFI_OPT_MAX + 1] = { 0 };
	unsigned ps_line = 0, lineno = 0;
	uint8_t ps = 0;
	size_t pos = 0, n = 0;
	char *line;
	int r;

	if (!text || !ret_n)
		return -EINVAL;
	line = malloc(OSFI_TEXT_LINE_MAX);
	if (!line)
		return -ENOMEM;

	while ((r = osfi_text_next_line(text, len, &pos, line, OSFI_TEXT_LINE_MAX)) != 0) {
		char *f[OSFI_TEXT_FIELDS];
		uint16_t reg;
		int nf;

		lineno++;
		if (r < 0) {
			r = osfi_text_why(reason, reason_size, lineno, "%s",
					  r == -E2BIG ? "line too long" : "NUL byte in text");
			goto out;
		}
		nf = osfi_text_fields(line, f);
		if (nf == 0)
			continue;
		if (nf != 2 || !f[0][0] || !f[1][0]) {
			r = osfi_text_why(reason, reason_size, lineno, "expected `REGISTER, VALUE`");
			goto out;
		}
		if (strcmp(f[0], "PRODUCT_STATE") == 0) {
			const char *hint;

			if (ps_line) {
				r = osfi_text_why(reason, reason_size, lineno,
						  "PRODUCT_STATE already set on line %u", ps_line);
				goto out;
			}
			if (csv_product_state(f[1], &ps) < 0) {
				hint = csv_product_state_hint(f[1]);
				if (hint)
					r = osfi_text_why(reason, reason_size, lineno,
							  "product state '%.64s': write it `%s` "
							  "(states are named exactly: Open, "
							  "Provisioning, iROT-Provisioned, TZ-Closed, "
							  "Closed, Locked)",
							  f[1], hint);
				else
					r = osfi_text_why(reason, reason_size, lineno,
							  "unknown product state '%.64s' (Open, "
							  "Provisioning, iROT-Provisioned, TZ-Closed, "
							  "Closed, Locked)",
							  f[1]);
				goto out;
			}
			ps_line = lineno;
			continue;
		}
		if (osfi_option_from_name(f[0], &reg) < 0 || strcmp(f[0], osfi_option_name(reg)) != 0) {
			r = osfi_text_why(reason, reason_size, lineno,
					  "unknown register '%.64s' (OPTSR_PRG ... HDP2R_PRG or "
					  "PRODUCT_STATE)",
					  f[0]);
			goto out;
		}
		if (set_line[reg]) {
			r = osfi_text_why(reason, reason_size, lineno, "%s already set on line %u",
					  osfi_option_name(reg), set_line[reg]);
			goto out;
		}
		if (osfi_number_parse(f[1], &values[reg]) < 0) {
			r = osfi_text_why(reason, reason_size, lineno,
					  "value '%.64s' is not a 32-bit number", f[1]);
			goto out;
		}
		set_line[reg] = lineno;
	}

	if (!ps_line) {
		r = osfi_text_why(reason, reason_size, 0,
				  "no final product state: add a PRODUCT_STATE line (e.g. "
				  "`PRODUCT_STATE, Closed`)");
		goto out;
	}
	/* OPTSR_PRG's bits 15..8 are the product state: left 0 or equal, never another one. */
	if (set_line[OSFI_OPT_OPTSR] && (values[OSFI_OPT_OPTSR] & 0xff00u) != 0 &&
	    ((values[OSFI_OPT_OPTSR] >> 8) & 0xff) != ps) {
		r = osfi_text_why(reason, reason_size, set_line[OSFI_OPT_OPTSR],
				  "OPTSR_PRG bits 15..8 (0x%02x) disagree with PRODUCT_STATE on "
				  "line %u (0x%02x): leave them 0",
				  (values[OSFI_OPT_OPTSR] >> 8) & 0xff, ps_line, ps);
		goto out;
	}
	values[OSFI_OPT_OPTSR] = (values[OSFI_OPT_OPTSR] & ~0xff00u) | (uint32_t)ps << 8;
	if (!set_line[OSFI_OPT_OPTSR])
		set_line[OSFI_OPT_OPTSR] = ps_line;

	for (uint16_t reg = 1; reg <= OSFI_OPT_MAX; reg++) {
		if (!set_line[reg])
			continue;
		if (n == max) {
			r = -ENOBUFS;
			goto out;
		}
		ret_opts[n].reg = reg;
		ret_opts[n].value = values[reg];
		n++;
	}
	*ret_n = n;
	r = 0;
out:
	free(line);
	return r;
}

#define OSFI_MODULES_MAX 256

int osfi_modules_parse(const char *text, size_t len, struct osfi_module_entry **ret_entries,
		       size_t *ret_n, char *reason, size_t reason_size)
{
	struct osfi_module_entry *v = NULL;
	unsigned lineno = 0;
	size_t pos = 0, n = 0;
	char *line;
	int r;

	if (!text || !ret_entries || !ret_n)
		return -EINVAL;
	line = malloc(OSFI_TEXT_LINE_MAX);
	if (!line)
		return -ENOMEM;

	while ((r = osfi_text_next_line(text, len, &pos, line, OSFI_TEXT_LINE_MAX)) != 0) {
		struct osfi_module_entry e;
		char *f[OSFI_TEXT_FIELDS];
		int nf;

		lineno++;
		if (r < 0) {
			r = osfi_text_why(reason, reason_size, lineno, "%s",
					  r == -E2BIG ? "line too long" : "NUL byte in text");
			goto fail;
		}
		nf = osfi_text_fields(line, f);
		if (nf == 0)
			continue;
		if (nf != 3 || !f[0][0] || !f[1][0] || !f[2][0]) {
			r = osfi_text_why(reason, reason_size, lineno,
					  "expected `module id, license, destination address`");
			goto fail;
		}
		memset(&e, 0, sizeof(e));
		e.line = lineno;
		if (osfi_number_parse(f[0], &e.module_id) < 0 || e.module_id == 0) {
			r = osfi_text_why(reason, reason_size, lineno,
					  "module id '%.64s' is not a non-zero number", f[0]);
			goto fail;
		}
		for (size_t k = 0; k < n; k++)
			if (v[k].module_id == e.module_id) {
				r = osfi_text_why(reason, reason_size, lineno,
						  "module %u already listed on line %u", e.module_id,
						  v[k].line);
				goto fail;
			}
		if (strncmp(f[1], "hsm:", 4) == 0) {
			uint8_t expect[OSFI_ID_LEN];

			e.hsm = true;
			if (sfi_hex_decode(f[1] + 4, e.firmware_id, OSFI_ID_LEN) < 0) {
				r = osfi_text_why(reason, reason_size, lineno,
						  "`hsm:` must be followed by 64 hex digits");
				goto fail;
			}
			osfi_module_firmware_id(e.module_id, expect);
			if (memcmp(expect, e.firmware_id, OSFI_ID_LEN) != 0) {
				r = osfi_text_why(reason, reason_size, lineno,
						  "firmware id is not the one of module %u",
						  e.module_id);
				goto fail;
			}
		} else {
			if (strlen(f[1]) >= sizeof(e.license)) {
				r = osfi_text_why(reason, reason_size, lineno, "license path too long");
				goto fail;
			}
			strcpy(e.license, f[1]);
		}
		if (osfi_number_parse(f[2], &e.address) < 0) {
			r = osfi_text_why(reason, reason_size, lineno,
					  "destination address '%.64s' is not a 32-bit number",
					  f[2]);
			goto fail;
		}
		if (osfi_area_check_range(OSFI_AREA_MODULE, e.address, 16) < 0) {
			r = osfi_text_why(reason, reason_size, lineno,
					  "destination 0x%08x is not a 16-byte aligned flash address",
					  e.address);
			goto fail;
		}
		if (n == OSFI_MODULES_MAX) {
			r = osfi_text_why(reason, reason_size, lineno, "more than %d modules",
					  OSFI_MODULES_MAX);
			goto fail;
		}
		if (n % 8 == 0) {
			struct osfi_module_entry *nv = realloc(v, (n + 8) * sizeof(*v));

			if (!nv) {
				r = -ENOMEM;
				goto fail;
			}
			v = nv;
		}
		v[n++] = e;
	}
	free(line);
	*ret_entries = v;
	*ret_n = n;
	return 0;
fail:
	free(line);
	free(v);
	return r;
}

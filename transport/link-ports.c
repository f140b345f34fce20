/* Port specifications and the list of connected USB-serial adapters (libserialport and
 * sysfs). No port is opened here. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <unistd.h>

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <libserialport.h>

#include "link.h"
#include "link-internal.h"

/* ---- Specifications ---- */

static const char *const spec_prefix[_LINK_SPEC_MAX] = {
	[LINK_SPEC_PATH] = "",
	[LINK_SPEC_SERIAL] = "serial:",
	[LINK_SPEC_USB] = "usb:",
	[LINK_SPEC_TTY] = "tty:",
};

/* Splits "KEY#N" into key and interface N (0..255). */
static int spec_split_interface(const char *spec, const char *key, struct link_spec *s,
				char *err, size_t err_size)
{
	const char *hash = strrchr(key, '#');
	size_t len = hash ? (size_t)(hash - key) : strlen(key);

	s->interface = -1;
	if (hash) {
		const char *d = hash + 1;
		unsigned v = 0;

		if (*d == '\0' || strlen(d) > 3 || strspn(d, "0123456789") != strlen(d) ||
		    (v = (unsigned)atoi(d)) > 255) {
			link_err_printf(err, err_size, "port '%s': '#%s' is not an interface number "
				"(0 to 255)", spec, d);
			return -EINVAL;
		}
		s->interface = (int)v;
	}
	if (len == 0) {
		link_err_printf(err, err_size, "port '%s' names no %s", spec,
			s->kind == LINK_SPEC_SERIAL ? "serial number" : "USB port");
		return -EINVAL;
	}
	if (len >= sizeof(s->key)) {
		link_err_printf(err, err_size, "port '%.32s...' is too long", spec);
		return -EINVAL;
	}
	memcpy(s->key, key, len);
	s->key[len] = '\0';
	return 0;
}

/* A USB port path as the kernel names it: bus "-" port ("." port)*, e.g. 1-3 or 2-1.4.2. */
static bool usb_path_valid(const char *p)
{
	size_t n = strspn(p, "0123456789");

	if (n == 0 || p[n] != '-')
		return false;
	p += n + 1;
	for (;;) {
		n = strspn(p, "0123456789");
		if (n == 0)
			return false;
		p += n;
		if (*p == '\0')
			return true;
		if (*p != '.')
			return false;
		p++;
	}
}

int link_spec_parse(const char *spec, struct link_spec *ret, char *err, size_t err_size)
{
	struct link_spec s = { .kind = LINK_SPEC_PATH, .interface = -1 };
	const char *key;
	int r;

	if (!spec || !ret)
		return -EINVAL;
	for (int k = LINK_SPEC_SERIAL; k < _LINK_SPEC_MAX; k++)
		if (strncmp(spec, spec_prefix[k], strlen(spec_prefix[k])) == 0)
			s.kind = (enum link_spec_kind)k;
	key = spec + strlen(spec_prefix[s.kind]);

	switch (s.kind) {
	case LINK_SPEC_PATH:
	case LINK_SPEC_TTY:
		if (*key == '\0') {
			link_err_printf(err, err_size, "port '%s' names no device", spec);
			return -EINVAL;
		}
		if (strlen(key) >= sizeof(s.key)) {
			link_err_printf(err, err_size, "port '%.32s...' is too long", spec);
			return -EINVAL;
		}
		strcpy(s.key, key);
		break;
	case LINK_SPEC_SERIAL:
		r = spec_split_interface(spec, key, &s, err, err_size);
		if (r < 0)
			return r;
		break;
	case LINK_SPEC_USB:
		r = spec_split_interface(spec, key, &s, err, err_size);
		if (r < 0)
			return r;
		if (!usb_path_valid(s.key)) {
			link_err_printf(err, err_size, "port '%s': '%s' is not a USB port path "
				"(bus-port[.port...], e.g. 1-3 or 1-4.2)", spec, s.key);
			return -EINVAL;
		}
		break;
	case _LINK_SPEC_MAX:
		return -EINVAL;
	}
	*ret = s;
	return 0;
}

int link_spec_format(const struct link_spec *s, char *buf, size_t size)
{
	int n;

	if (s->interface >= 0)
		n = snprintf(buf, size, "%s%s#%d", spec_prefix[s->kind], s->key, s->interface);
	else
		n = snprintf(buf, size, "%s%s", spec_prefix[s->kind], s->key);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* ---- Listing ---- */

/* Finds the USB interface directory ("1-3:1.2", "2-1.4:1.0") among the components of a
 * sysfs path and takes the port path and interface number from its name. */
static bool usb_location_from_path(const char *path, char *ret_usb, size_t usb_size,
				   int *ret_interface)
{
	bool found = false;
	char *copy = strdup(path), *save = NULL;

	if (!copy)
		return false;
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		char *colon = strchr(c, ':'), *dot;
		size_t n;

		if (!colon)
			continue;
		*colon = '\0';
		dot = strchr(colon + 1, '.');
		if (!usb_path_valid(c) || !dot || dot == colon + 1 ||
		    strspn(colon + 1, "0123456789") != (size_t)(dot - colon - 1)) {
			*colon = ':';
			continue;
		}
		n = strspn(dot + 1, "0123456789");
		if (n == 0 || n > 3 || dot[1 + n] != '\0' || strlen(c) >= usb_size) {
			*colon = ':';
			continue;
		}
		/* The last match wins: a tty below a hub's interface is not a case, but the
		 * innermost interface is the one the tty belongs to. */
		strcpy(ret_usb, c);
		*ret_interface = atoi(dot + 1);
		found = true;
	}
	free(copy);
	return found;
}

/* The USB port path and interface of tty `name` ("/dev/ttyUSB0") from sysfs: the tty's
 * device directory is the interface itself (cdc_acm) or a child of it (usb-serial). */
static void usb_location(const char *name, char *ret_usb, size_t usb_size, int *ret_interface)
{
	const char *base = strrchr(name, '/');
	char path[PATH_MAX], resolved[PATH_MAX];
	ssize_t n;

	base = base ? base + 1 : name;
	*ret_usb = '\0';
	*ret_interface = -1;
	snprintf(path, sizeof(path), "/sys/class/tty/%s/device", base);
	if (realpath(path, resolved) &&
	    usb_location_from_path(resolved, ret_usb, usb_size, ret_interface))
		return;
	/* The class entry is itself a link into the device tree. */
	snprintf(path, sizeof(path), "/sys/class/tty/%s", base);
	n = readlink(path, resolved, sizeof(resolved) - 1);
	if (n > 0) {
		resolved[n] = '\0';
		(void)usb_location_from_path(resolved, ret_usb, usb_size, ret_interface);
	}
}

static char *dup_or_null(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

void link_ports_free(struct link_port_info *p, size_t n)
{
	if (!p)
		return;
	for (size_t i = 0; i < n; i++) {
		free(p[i].path);
		free(p[i].serial);
		free(p[i].manufacturer);
		free(p[i].product);
		free(p[i].description);
	}
	free(p);
}

static int port_cmp(const void *a, const void *b)
{
	const struct link_port_info *x = a, *y = b;
	int c = strcmp(x->usb_path, y->usb_path);

	if (c != 0)
		return c;
	if (x->interface != y->interface)
		return x->interface < y->interface ? -1 : 1;
	return strcmp(x->path, y->path);
}

int link_ports_list(struct link_port_info **ret, size_t *ret_n, char *err, size_t err_size)
{
	struct sp_port **list = NULL;
	struct link_port_info *p = NULL;
	size_t n = 0, cap = 0;

	if (!ret || !ret_n)
		return -EINVAL;
	if (sp_list_ports(&list) != SP_OK) {
		link_err_printf(err, err_size, "cannot list serial ports: %s", strerror(errno));
		return -EIO;
	}
	for (size_t i = 0; list[i]; i++) {
		const char *name = sp_get_port_name(list[i]);
		struct link_port_info *e;
		int vid = -1, pid = -1;

		if (!name || sp_get_port_transport(list[i]) != SP_TRANSPORT_USB)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct link_port_info *np = realloc(p, ncap * sizeof(*p));

			if (!np)
				goto oom;
			p = np;
			cap = ncap;
		}
		e = &p[n];
		*e = (struct link_port_info){ .interface = -1, .vid = -1, .pid = -1 };
		n++;
		e->path = strdup(name);
		if (!e->path)
			goto oom;
		e->serial = dup_or_null(sp_get_port_usb_serial(list[i]));
		e->manufacturer = dup_or_null(sp_get_port_usb_manufacturer(list[i]));
		e->product = dup_or_null(sp_get_port_usb_product(list[i]));
		e->description = dup_or_null(sp_get_port_description(list[i]));
		if (sp_get_port_usb_vid_pid(list[i], &vid, &pid) == SP_OK) {
			e->vid = vid;
			e->pid = pid;
		}
		usb_location(name, e->usb_path, sizeof(e->usb_path), &e->interface);
	}
	sp_free_port_list(list);
	if (n > 1)
		qsort(p, n, sizeof(*p), port_cmp);
	*ret = p;
	*ret_n = n;
	return 0;

oom:
	sp_free_port_list(list);
	link_ports_free(p, n);
	link_err_printf(err, err_size, "out of memory");
	return -ENOMEM;
}

/* Number of listed ports on the same USB device as ports[i]. */
static size_t ports_on_device(const struct link_port_info *ports, size_t n, size_t i)
{
	size_t k = 0;

	if (!ports[i].usb_path[0])
		return 1;
	for (size_t j = 0; j < n; j++)
		if (strcmp(ports[j].usb_path, ports[i].usb_path) == 0)
			k++;
	return k;
}

/* Whether the serial number of ports[i] names one USB device only. */
static bool serial_unique(const struct link_port_info *ports, size_t n, size_t i)
{
	if (!ports[i].serial)
		return false;
	for (size_t j = 0; j < n; j++)
		if (ports[j].serial && strcmp(ports[j].serial, ports[i].serial) == 0 &&
		    strcmp(ports[j].usb_path, ports[i].usb_path) != 0)
			return false;
	return true;
}

int link_port_spec(const struct link_port_info *ports, size_t n, size_t i, char *buf,
		   size_t size)
{
	struct link_spec s = { .interface = -1 };

	if (i >= n)
		return -EINVAL;
	if (ports[i].usb_path[0] && ports[i].interface >= 0 && ports_on_device(ports, n, i) > 1)
		s.interface = ports[i].interface;
	if (serial_unique(ports, n, i) && strlen(ports[i].serial) < sizeof(s.key) &&
	    !strchr(ports[i].serial, '#')) {
		s.kind = LINK_SPEC_SERIAL;
		strcpy(s.key, ports[i].serial);
	} else if (ports[i].usb_path[0]) {
		s.kind = LINK_SPEC_USB;
		strcpy(s.key, ports[i].usb_path);
	} else {
		s.kind = LINK_SPEC_PATH;
		s.interface = -1;
		if (strlen(ports[i].path) >= sizeof(s.key))
			return -ENAMETOOLONG;
		strcpy(s.key, ports[i].path);
	}
	return link_spec_format(&s, buf, size);
}

/* ---- Resolution ---- */

static bool port_matches(const struct link_port_info *p, const struct link_spec *s,
			 bool with_interface)
{
	bool key;

	if (s->kind == LINK_SPEC_SERIAL)
		key = p->serial && strcmp(p->serial, s->key) == 0;
	else
		key = strcmp(p->usb_path, s->key) == 0;
	if (!key)
		return false;
	return !with_interface || s->interface < 0 || p->interface == s->interface;
}

/* Appends ", <text>" (or "<text>" first) to buf, keeping it terminated. */
__attribute__((format(printf, 3, 4)))
static void append(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	if (len + 3 >= size)
		return;
	if (len > 0) {
		strcpy(buf + len, ", ");
		len += 2;
	}
	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

int link_ports_resolve(const struct link_port_info *ports, size_t n, const struct link_spec *s,
		       size_t *ret_index, char *err, size_t err_size)
{
	char spec[160], list[384] = "";
	size_t matches = 0, found = 0, by_key = 0;
	bool one_device = true;
	const char *device = NULL;

	if (s->kind != LINK_SPEC_SERIAL && s->kind != LINK_SPEC_USB)
		return -EINVAL;
	if (link_spec_format(s, spec, sizeof(spec)) < 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!port_matches(&ports[i], s, false))
			continue;
		by_key++;
		if (!port_matches(&ports[i], s, true))
			continue;
		if (matches++ == 0)
			found = i;
		if (!device)
			device = ports[i].usb_path;
		else if (strcmp(device, ports[i].usb_path) != 0)
			one_device = false;
	}

	if (matches == 1) {
		*ret_index = found;
		return 0;
	}
	if (matches == 0 && by_key > 0) {
		/* The adapter is there, without that interface. */
		for (size_t i = 0; i < n; i++)
			if (port_matches(&ports[i], s, false))
				append(list, sizeof(list), "#%d (%s)", ports[i].interface,
				       ports[i].path);
		link_err_printf(err, err_size, "the adapter of port '%s' has no interface %d; it has %s",
			spec, s->interface, list);
		return -ENODEV;
	}
	if (matches == 0) {
		link_err_printf(err, err_size, "no USB-serial adapter %s %s is connected; check the cable",
			s->kind == LINK_SPEC_SERIAL ? "with serial number" : "on USB port", s->key);
		return -ENODEV;
	}
	if (one_device && s->interface < 0) {
		/* A multi-port adapter (FT2232H, FT4232H, CP2108...): one interface must be
		 * named. */
		for (size_t i = 0; i < n; i++)
			if (port_matches(&ports[i], s, true))
				append(list, sizeof(list), "%s#%d (%s)", spec, ports[i].interface,
				       ports[i].path);
		link_err_printf(err, err_size, "port '%s' is a multi-port adapter with %zu ports; name one "
			"of them: %s", spec, matches, list);
		return -ENOTUNIQ;
	}
	for (size_t i = 0; i < n; i++)
		if (port_matches(&ports[i], s, true))
			append(list, sizeof(list), "%s on USB port %s", ports[i].path,
			       ports[i].usb_path[0] ? ports[i].usb_path : "?");
	link_err_printf(err, err_size, "%zu ports match '%s' (%s); name the port by USB port instead "
		"(usb:BUS-PORT)", matches, spec, list);
	return -ENOTUNIQ;
}

/* ---- Output ---- */

static void json_string(FILE *f, const char *s)
{
	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\')
			fprintf(f, "\\%c", *c);
		else if (*c < 0x20 || *c == 0x7f)
			fprintf(f, "\\u%04x", *c);
		else
			fputc(*c, f);
	}
	fputc('"', f);
}

static void json_hex16(FILE *f, int v)
{
	if (v < 0)
		fputs("null", f);
	else
		fprintf(f, "\"%04x\"", (unsigned)v);
}

void link_ports_print(FILE *f, const struct link_port_info *ports, size_t n, bool json)
{
	char spec[160];

	if (json) {
		fputs("{\"ports\":[", f);
		for (size_t i = 0; i < n; i++) {
			const struct link_port_info *p = &ports[i];

			if (link_port_spec(ports, n, i, spec, sizeof(spec)) < 0)
				spec[0] = '\0';
			fputs(i ? ",{" : "{", f);
			fputs("\"path\":", f);
			json_string(f, p->path);
			fputs(",\"spec\":", f);
			json_string(f, spec[0] ? spec : NULL);
			fputs(",\"serial\":", f);
			json_string(f, p->serial);
			fputs(",\"usb_path\":", f);
			json_string(f, p->usb_path[0] ? p->usb_path : NULL);
			if (p->interface >= 0)
				fprintf(f, ",\"interface\":%d", p->interface);
			else
				fputs(",\"interface\":null", f);
			fprintf(f, ",\"ports_on_adapter\":%zu", ports_on_device(ports, n, i));
			fputs(",\"vid\":", f);
			json_hex16(f, p->vid);
			fputs(",\"pid\":", f);
			json_hex16(f, p->pid);
			fputs(",\"manufacturer\":", f);
			json_string(f, p->manufacturer);
			fputs(",\"product\":", f);
			json_string(f, p->product);
			fputs(",\"description\":", f);
			json_string(f, p->description);
			fputc('}', f);
		}
		fputs("]}\n", f);
		return;
	}
	if (n == 0) {
		fputs("no USB-serial adapter is connected\n", f);
		return;
	}
	fprintf(f, "%-14s %-22s %-16s %-9s %-3s %-9s %s\n", "PORT", "SPEC", "SERIAL", "USB",
		"IF", "VID:PID", "DESCRIPTION");
	for (size_t i = 0; i < n; i++) {
		const struct link_port_info *p = &ports[i];
		char iface[16] = "-", ids[24] = "-";

		if (link_port_spec(ports, n, i, spec, sizeof(spec)) < 0)
			snprintf(spec, sizeof(spec), "-");
		if (p->interface >= 0)
			snprintf(iface, sizeof(iface), "%d", p->interface);
		if (p->vid >= 0 && p->pid >= 0)
			snprintf(ids, sizeof(ids), "%04x:%04x", (unsigned)p->vid, (unsigned)p->pid);
		fprintf(f, "%-14s %-22s %-16s %-9s %-3s %-9s %s\n", p->path, spec,
			p->serial ? p->serial : "-", p->usb_path[0] ? p->usb_path : "-", iface, ids,
			p->description ? p->description : p->product ? p->product : "-");
	}
}

/* ---- Probing ---- */

/* UNIX 98 pseudo-terminal slaves have majors 136 to 143. */
static bool is_pty(const struct stat *st)
{
	return major(st->st_rdev) >= 136 && major(st->st_rdev) <= 143;
}

int link_probe(const char *spec, char *ret_path, size_t path_size, char *err, size_t err_size)
{
	struct link_spec s;
	struct stat st;
	char path[PATH_MAX];
	int r;

	r = link_spec_parse(spec, &s, err, err_size);
	if (r < 0)
		return r;
	if (s.kind == LINK_SPEC_SERIAL || s.kind == LINK_SPEC_USB) {
		struct link_port_info *ports = NULL;
		size_t n = 0, i;

		r = link_ports_list(&ports, &n, err, err_size);
		if (r < 0)
			return r;
		r = link_ports_resolve(ports, n, &s, &i, err, err_size);
		if (r == 0)
			snprintf(path, sizeof(path), "%s", ports[i].path);
		link_ports_free(ports, n);
		if (r < 0)
			return r;
	} else {
		snprintf(path, sizeof(path), "%s", s.key);
	}

	if (stat(path, &st) < 0) {
		r = -errno;
		link_err_printf(err, err_size, "%s: %s", path, errno == ENOENT ?
			"no such device (adapter unplugged?)" : strerror(errno));
		return r == -ENOENT ? -ENODEV : r;
	}
	if (!S_ISCHR(st.st_mode)) {
		link_err_printf(err, err_size, "%s is not a terminal device", path);
		return -ENOTTY;
	}
	if (s.kind == LINK_SPEC_PATH) {
		struct sp_port *port = NULL;

		if (is_pty(&st)) {
			link_err_printf(err, err_size, "%s is a pseudo-terminal, which libserialport does not "
				"open; write port = tty:%s", path, s.key);
			return -ENOTTY;
		}
		if (sp_get_port_by_name(path, &port) != SP_OK) {
			link_err_printf(err, err_size, "%s is not a serial port libserialport knows; for "
				"another kind of terminal write port = tty:%s", path, s.key);
			return -ENODEV;
		}
		sp_free_port(port);
	}
	if (access(path, R_OK | W_OK) < 0) {
		r = -errno;
		if (errno == EACCES || errno == EPERM) {
			struct group *g = getgrgid(st.st_gid);

			if (g)
				link_err_printf(err, err_size, "this user may not open %s (group %s may: "
					"sfid's user must be in it)", path, g->gr_name);
			else
				link_err_printf(err, err_size, "this user may not open %s", path);
		} else {
			link_err_printf(err, err_size, "%s: %s", path, strerror(errno));
		}
		return r;
	}
	if (ret_path && path_size > 0)
		snprintf(ret_path, path_size, "%s", path);
	return 0;
}

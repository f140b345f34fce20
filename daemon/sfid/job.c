/* Jobs: see job.h. */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "an3155-wire.h"
#include "fw-load.h"
#include "job.h"
#include "sfi-error.h"
#include "sfi-file.h"
#include "sfi-parse.h"
#include "util.h"

#define IMAGE_MAX (64u * 1024 * 1024)
#define MODULES_FILE_MAX (1024u * 1024)
#define LICENSE_FILE_MAX 4096u

struct job *job_free(struct job *j)
{
	if (!j)
		return NULL;
	free(j->image_path);
	free(j->image);
	free(j->module_file);
	free(j->global_file);
	explicit_bzero(j->lic, sizeof(j->lic));
	free(j->loaded_by);
	free(j->refused_uids);
	for (size_t i = 0; i < j->n_seg; i++)
		free(j->seg[i].data);
	free(j->seg);
	free(j->sectors);
	free(j->firmware);
	free(j->modules);
	if (j->global_bytes)
		explicit_bzero(j->global_bytes, j->global_len);
	free(j->global_bytes);
	job_serial_list_unref(j->serial.list);
	free(j);
	return NULL;
}

/* A file named by path, or by a descriptor the caller passed (given >= 0: read from its
 * start, left open). This runs on the loop: common/'s reader opens a path without waiting
 * (a named pipe or a device would block the open or the reads) and refuses anything but a
 * regular file (-EINVAL) before a byte is read. */
static int read_file_or_fd(const char *path, int given, size_t max, uint8_t **ret,
			   size_t *ret_len)
{
	if (given < 0)
		return sfi_file_read(path, max, ret, ret_len);
	if (lseek(given, 0, SEEK_SET) < 0 && errno != ESPIPE)
		return -errno;
	return sfi_fd_read(given, max, ret, ret_len);
}

static int load_global(const struct job *j, const char *path, int fd, uint32_t target,
		       struct job_license *l, char *reason, size_t reason_size)
{
	struct osfi_license lic;
	uint8_t want[OSFI_ID_LEN];
	uint8_t *buf = NULL;
	size_t len = 0;
	int r, ret = 0;

	if (target == OSFI_TARGET_IMAGE)
		memcpy(want, j->image_id, OSFI_ID_LEN);
	else
		osfi_module_firmware_id(target, want);
	r = read_file_or_fd(path, fd, LICENSE_FILE_MAX, &buf, &len);
	if (r < 0) {
		sfi_reason(reason, reason_size, "cannot read global license %s: %s", path, sfi_file_strerror(r));
		return -ENOENT;
	}
	r = osfi_license_decode(buf, len, &lic);
	if (r < 0 || lic.kind != OSFI_LICENSE_KIND_GLOBAL || lic.target != target) {
		if (target == OSFI_TARGET_IMAGE)
			sfi_reason(reason, reason_size, "%s is not a global license for an image", path);
		else
			sfi_reason(reason, reason_size, "%s is not a global license for module %" PRIu32, path,
				 target);
		ret = -EINVAL;
	} else if (memcmp(lic.id, want, OSFI_ID_LEN) != 0 || lic.device_id != j->device_id) {
		sfi_reason(reason, reason_size, "global license %s was made for another %s", path,
			 target == OSFI_TARGET_IMAGE ? "image" : "module or device");
		ret = -EINVAL;
	} else {
		l->target = target;
		l->global = true;
		l->token = -1;
		memcpy(l->record, buf, OSFI_LICENSE_LEN);
		memcpy(l->firmware_id, want, OSFI_ID_LEN);
		sfid_hex(want, OSFI_ID_LEN, l->firmware_id_hex);
	}
	explicit_bzero(&lic, sizeof(lic));
	explicit_bzero(buf, len);
	free(buf);
	return ret;
}

/* Lowest address of module_id's M areas (an area may be split in several descriptors). */
static bool module_address(const struct osfi_image *img, uint32_t module_id, uint32_t *ret)
{
	bool found = false;

	for (size_t i = 0; i < img->n_areas; i++) {
		const struct osfi_desc *a = &img->areas[i].desc;

		if (a->type != OSFI_AREA_MODULE || a->module_id != module_id)
			continue;
		if (!found || a->address < *ret)
			*ret = a->address;
		found = true;
	}
	return found;
}

/* A license path in the module file is relative to the file's folder. */
static void module_license_path(const char *modules, const char *lic, char *out, size_t size)
{
	char dir[PATH_MAX];

	if (lic[0] == '/') {
		snprintf(out, size, "%s", lic);
		return;
	}
	snprintf(dir, sizeof(dir), "%s", modules);
	snprintf(out, size, "%s/%s", dirname(dir), lic);
}

/* The descriptor passed for a module license, as named in the module file; -1 if none. */
static int module_license_fd(const struct job_fds *fds, const char *name)
{
	for (size_t i = 0; fds && i < fds->n_lic; i++)
		if (fds->lic_name[i] && strcmp(fds->lic_name[i], name) == 0)
			return fds->lic_fd[i];
	return -1;
}

static int load_modules(struct job *j, const struct osfi_image *img, const struct job_fds *fds,
			const char *modules,
			char *reason, size_t reason_size)
{
	struct osfi_module_entry *ents = NULL;
	uint8_t *text = NULL;
	size_t len = 0, n = 0;
	char why[256];
	int r;

	r = read_file_or_fd(modules, fds ? fds->modules : -1, MODULES_FILE_MAX, &text, &len);
	if (r < 0) {
		sfi_reason(reason, reason_size, "cannot read module license file %s: %s", modules,
			 sfi_file_strerror(r));
		return -ENOENT;
	}
	r = osfi_modules_parse((const char *)text, len, &ents, &n, why, sizeof(why));
	free(text);
	if (r < 0) {
		sfi_reason(reason, reason_size, "%s: %s", modules, why);
		return -EINVAL;
	}
	r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		const struct osfi_module_entry *e = &ents[i];
		struct job_license *l;
		uint8_t fwid[OSFI_ID_LEN];
		uint32_t addr = 0;

		if (!module_address(img, e->module_id, &addr)) {
			sfi_reason(reason, reason_size, "%s line %u: module %" PRIu32 " is not in image %s",
				 modules, e->line, e->module_id, j->image_path);
			r = -EINVAL;
			break;
		}
		if (addr != e->address) {
			sfi_reason(reason, reason_size, "%s line %u: module %" PRIu32 " is at 0x%08" PRIx32
				 " in the image, not at 0x%08" PRIx32, modules, e->line, e->module_id,
				 addr, e->address);
			r = -EINVAL;
			break;
		}
		for (size_t k = 1; k < j->n_lic; k++)
			if (j->lic[k].target == e->module_id) {
				sfi_reason(reason, reason_size, "%s line %u: module %" PRIu32 " is listed twice",
					 modules, e->line, e->module_id);
				r = -EINVAL;
			}
		if (r != 0)
			break;
		if (j->n_lic >= JOB_LICENSES_MAX) {
			sfi_reason(reason, reason_size, "%s: more than %d modules", modules,
				 JOB_LICENSES_MAX - 1);
			r = -EINVAL;
			break;
		}
		l = &j->lic[j->n_lic];
		osfi_module_firmware_id(e->module_id, fwid);
		if (e->hsm) {
			/* osfi_modules_parse() refused a firmware id that is not this module's. */
			l->target = e->module_id;
			l->token = -1;
			memcpy(l->firmware_id, fwid, OSFI_ID_LEN);
			sfid_hex(fwid, OSFI_ID_LEN, l->firmware_id_hex);
		} else {
			char path[PATH_MAX + 8];

			module_license_path(modules, e->license, path, sizeof(path));
			r = load_global(j, path, module_license_fd(fds, e->license), e->module_id, l,
					reason, reason_size);
			if (r != 0)
				break;
		}
		l->line = e->line;
		j->n_lic++;
	}
	/* Every module of the image needs its license, or the chip refuses the install. */
	for (size_t i = 0; i < img->n_areas && r == 0; i++) {
		const struct osfi_desc *a = &img->areas[i].desc;
		bool listed = false;

		if (a->type != OSFI_AREA_MODULE)
			continue;
		for (size_t k = 1; k < j->n_lic; k++)
			listed |= j->lic[k].target == a->module_id;
		if (!listed) {
			sfi_reason(reason, reason_size, "image %s carries module %" PRIu32 ", which %s does not "
				 "list", j->image_path, a->module_id, modules);
			r = -EINVAL;
		}
	}
	free(ents);
	return r;
}

int job_load(const struct job_line_token *tok, const char *path, const char *modules, const char *global,
	     const struct job_fds *fds, uint32_t target, const char *user, struct job **ret, char *reason, size_t reason_size)
{
	struct osfi_image *img = NULL;
	struct job *j;
	char why[256];
	uint8_t digest[SHA256_DIGEST_LENGTH];
	bool has_modules = false;
	int r;

	j = calloc(1, sizeof(*j));
	if (!j) {
		sfi_reason(reason, reason_size, "out of memory");
		return -ENOMEM;
	}
	j->image_path = strdup(path);
	j->target = target;
	j->loaded_by = strdup(user);
	j->loaded_ms = sfid_now_ms();
	if (!j->image_path || !j->loaded_by) {
		sfi_reason(reason, reason_size, "out of memory");
		job_free(j);
		return -ENOMEM;
	}
	r = read_file_or_fd(path, fds ? fds->image : -1, IMAGE_MAX, &j->image, &j->image_len);
	if (r < 0) {
		sfi_reason(reason, reason_size, "cannot read image %s: %s", path, sfi_file_strerror(r));
		job_free(j);
		return -ENOENT;
	}
	r = osfi_image_parse(j->image, j->image_len, &img, why, sizeof(why));
	if (r < 0) {
		sfi_reason(reason, reason_size, "%s is not a valid OSFI image: %s", path, why);
		job_free(j);
		return -EINVAL;
	}
	r = -EINVAL;
	j->device_id = img->hdr.device_id;
	memcpy(j->image_id, img->id, OSFI_ID_LEN);
	sfid_hex(j->image_id, OSFI_ID_LEN, j->image_id_hex);
	SHA256(j->image, j->image_len, digest);
	sfid_hex(digest, sizeof(digest), j->digest_hex);
	for (size_t i = 0; i < img->n_areas; i++)
		has_modules |= img->areas[i].desc.type == OSFI_AREA_MODULE;
	if (j->device_id != STM32_PID_H56X_H57X) {
		sfi_reason(reason, reason_size, "image %s is for device id 0x%03x; this line installs "
			 "STM32H56x/H57x (0x%03x)", path, j->device_id, STM32_PID_H56X_H57X);
		goto bad;
	}
	if (global) {
		r = load_global(j, global, fds ? fds->global : -1, OSFI_TARGET_IMAGE, &j->lic[0],
				reason, reason_size);
		if (r != 0)
			goto bad;
		j->global = true;
		j->global_file = strdup(global);
		if (!j->global_file) {
			sfi_reason(reason, reason_size, "out of memory");
			r = -ENOMEM;
			goto bad;
		}
	} else {
		if (tok && memcmp(j->image_id, tok->firmware_id, OSFI_ID_LEN) != 0) {
			char fw[2 * OSFI_ID_LEN + 1];

			sfid_hex(tok->firmware_id, OSFI_ID_LEN, fw);
			sfi_reason(reason, reason_size, "image %s (id %.16s...) is not the firmware the HSM "
				 "token %s licenses (id %.16s...); load the matching image or token",
				 path, j->image_id_hex, tok->label, fw);
			goto bad;
		}
		j->lic[0].target = OSFI_TARGET_IMAGE;
		j->lic[0].token = 0;
		memcpy(j->lic[0].firmware_id, j->image_id, OSFI_ID_LEN);
		sfid_hex(j->image_id, OSFI_ID_LEN, j->lic[0].firmware_id_hex);
	}
	j->n_lic = 1;
	if (modules) {
		r = load_modules(j, img, fds, modules, reason, reason_size);
		if (r != 0)
			goto bad;
		j->module_file = strdup(modules);
		if (!j->module_file) {
			sfi_reason(reason, reason_size, "out of memory");
			r = -ENOMEM;
			goto bad;
		}
	} else if (has_modules) {
		sfi_reason(reason, reason_size, "image %s carries modules: load it with their module license "
			 "information file", path);
		r = -EINVAL;
		goto bad;
	}
	osfi_image_free(img);
	*ret = j;
	return 0;
bad:
	osfi_image_free(img);
	job_free(j);
	return r;
}

/* ---- plain jobs ---- */

static int cmp_segment(const void *x, const void *y)
{
	const struct fw_segment *a = x, *b = y;

	return a->address < b->address ? -1 : a->address > b->address;
}

static int plain_build(struct fw_image *fw, const char *const *files, size_t n, bool go,
		       bool go_addr_set, uint32_t go_addr, uint32_t target, const char *user,
		       struct job **ret, char *reason, size_t reason_size);

int job_load_plain(const char *const *files, const int *fds, size_t n, bool go,
		   bool go_addr_set, uint32_t go_addr, uint32_t target, const char *user,
		   struct job **ret, char *reason, size_t reason_size)
{
	struct fw_image fw = { 0 };
	int r = -EINVAL;

	if (n == 0 || n > JOB_FIRMWARE_MAX) {
		sfi_reason(reason, reason_size, "a plain job needs 1 to %d firmware files "
			   "(FILE.elf, FILE.hex or FILE.bin@ADDR)", JOB_FIRMWARE_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX], fdpath[32] = "", why[1024];
		const char *at = strrchr(files[i], '@');
		bool has_addr = false;
		uint32_t addr = 0;
		size_t len;

		/* FILE@ADDR: a raw binary at ADDR (the last '@', so a path may hold one). */
		if (at && at[1]) {
			if (sfi_parse_u32(at + 1, &addr) < 0) {
				sfi_reason(reason, reason_size, "%s: '%s' is not an address", files[i],
					   at + 1);
				goto out;
			}
			has_addr = true;
		}
		len = has_addr ? (size_t)(at - files[i]) : strlen(files[i]);
		if (len == 0 || len >= sizeof(path)) {
			sfi_reason(reason, reason_size, "'%s' names no firmware file", files[i]);
			goto out;
		}
		memcpy(path, files[i], len);
		path[len] = '\0';
		if (fds && fds[i] >= 0) {
			/* The supervisor's descriptor: read from its start under its name. */
			snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fds[i]);
			if (lseek(fds[i], 0, SEEK_SET) < 0 && errno != ESPIPE) {
				sfi_reason(reason, reason_size, "cannot read %s: %s", path, strerror(errno));
				r = -ENOENT;
				goto out;
			}
		}
		if (fw_load_named(&fw, fdpath[0] ? fdpath : path, path, has_addr, addr, why,
				  sizeof(why)) < 0) {
			sfi_reason(reason, reason_size, "%s", why);
			goto out;
		}
	}
	r = plain_build(&fw, files, n, go, go_addr_set, go_addr, target, user, ret, reason,
			reason_size);
out:
	fw_image_clear(&fw);
	return r;
}

/* The job made of the loaded firmware fw (files name it): checked against the STM32H5's
 * flash, its digest and the sectors it touches. fw's segments move into the job. */
static int plain_build(struct fw_image *fw_in, const char *const *files, size_t n, bool go,
		       bool go_addr_set, uint32_t go_addr, uint32_t target, const char *user,
		       struct job **ret, char *reason, size_t reason_size)
{
	static const uint32_t n_sectors = STM32H5_FLASH_SIZE / STM32H5_FLASH_SECTOR;
	struct fw_image fw = *fw_in;
	struct job *j = NULL;
	uint8_t md[SHA256_DIGEST_LENGTH];
	bool *touched = NULL;
	size_t list_len = 0, names_len = 0;
	EVP_MD_CTX *sha = NULL;
	int r = -EINVAL;

	*fw_in = (struct fw_image){ 0 };
	for (size_t i = 0; i < n; i++) {
		list_len += strlen(files[i]) + 1;
		names_len += strlen(files[i]) + 2;
	}
	if (fw.n == 0) {
		sfi_reason(reason, reason_size, "the firmware holds no data");
		goto out;
	}
	qsort(fw.seg, fw.n, sizeof(fw.seg[0]), cmp_segment);
	touched = calloc(n_sectors, sizeof(*touched));
	j = calloc(1, sizeof(*j));
	if (!touched || !j) {
		r = -ENOMEM;
		sfi_reason(reason, reason_size, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < fw.n; i++) {
		const struct fw_segment *g = &fw.seg[i];
		uint64_t end = (uint64_t)g->address + g->size;

		if (i > 0 && (uint64_t)fw.seg[i - 1].address + fw.seg[i - 1].size > g->address) {
			sfi_reason(reason, reason_size, "%s overlaps %s at 0x%08" PRIx32, g->source,
				   fw.seg[i - 1].source, g->address);
			goto out;
		}
		if (g->address < STM32H5_FLASH_BASE ||
		    end > (uint64_t)STM32H5_FLASH_BASE + STM32H5_FLASH_SIZE) {
			sfi_reason(reason, reason_size, "%s (0x%08" PRIx32 "..0x%08" PRIx64 ", %zu "
				   "bytes) is outside the STM32H5's flash (0x%08x..0x%08x)", g->source,
				   g->address, end - 1, g->size, STM32H5_FLASH_BASE,
				   STM32H5_FLASH_BASE + STM32H5_FLASH_SIZE - 1);
			goto out;
		}
		if (g->address % STM32H5_FLASH_WRITE_UNIT != 0) {
			sfi_reason(reason, reason_size, "%s starts at 0x%08" PRIx32 ", not on a %u-byte "
				   "flash word", g->source, g->address, STM32H5_FLASH_WRITE_UNIT);
			goto out;
		}
		for (uint32_t p = (g->address - STM32H5_FLASH_BASE) / STM32H5_FLASH_SECTOR;
		     p <= (uint32_t)((end - 1 - STM32H5_FLASH_BASE) / STM32H5_FLASH_SECTOR); p++)
			touched[p] = true;
		j->fw_bytes += g->size;
	}
	if (go && go_addr_set && (go_addr < STM32H5_FLASH_BASE ||
				  go_addr - STM32H5_FLASH_BASE >= STM32H5_FLASH_SIZE)) {
		sfi_reason(reason, reason_size, "the Go address 0x%08" PRIx32 " is outside the "
			   "STM32H5's flash", go_addr);
		goto out;
	}
	r = -ENOMEM;
	j->seg = calloc(fw.n, sizeof(*j->seg));
	j->sectors = calloc(n_sectors, sizeof(*j->sectors));
	j->firmware = calloc(1, list_len + 1);
	j->image_path = calloc(1, names_len + 1);
	j->loaded_by = strdup(user ? user : "");
	if (!j->seg || !j->sectors || !j->firmware || !j->image_path || !j->loaded_by) {
		sfi_reason(reason, reason_size, "out of memory");
		goto out;
	}
	sha = EVP_MD_CTX_new();
	if (!sha || !EVP_DigestInit_ex(sha, EVP_sha256(), NULL)) {
		sfi_reason(reason, reason_size, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < fw.n; i++) {
		/* The segments move over: the loader's copies are not freed twice. */
		j->seg[i] = (struct job_segment){ .address = fw.seg[i].address,
						  .data = fw.seg[i].data, .size = fw.seg[i].size };
		fw.seg[i].data = NULL;
		j->n_seg++;
		EVP_DigestUpdate(sha, j->seg[i].data, j->seg[i].size);
	}
	if (!EVP_DigestFinal_ex(sha, md, NULL)) {
		sfi_reason(reason, reason_size, "cannot compute the firmware's digest");
		r = -EIO;
		goto out;
	}
	sfid_hex(md, sizeof(md), j->digest_hex);
	memcpy(j->image_id, md, sizeof(j->image_id));
	sfid_hex(md, sizeof(md), j->image_id_hex);
	for (uint32_t p = 0; p < n_sectors; p++)
		if (touched[p])
			j->sectors[j->n_sectors++] = (uint16_t)p;
	for (size_t i = 0; i < n; i++) {
		strcat(j->firmware, files[i]);
		strcat(j->firmware, i + 1 < n ? "\n" : "");
		strcat(j->image_path, files[i]);
		strcat(j->image_path, i + 1 < n ? ", " : "");
	}
	j->plain = true;
	j->go = go;
	j->go_address = go_addr_set ? go_addr : j->seg[0].address;
	j->device_id = 0;	/* any device a slot knows for plain jobs */
	j->image_len = (size_t)j->fw_bytes;
	j->target = target;
	j->loaded_ms = sfid_now_ms();
	*ret = j;
	j = NULL;
	r = 0;
out:
	EVP_MD_CTX_free(sha);
	free(touched);
	fw_image_clear(&fw);
	job_free(j);
	return r;
}

/* sfid's copy of a plain job: "SFIDPLN1", the length (u32, little endian) of its serial
 * number's settings (serial_keep(), 0: none) and them, then per segment its address and size
 * (u32, little endian) and its bytes, in address order. */
static const char plain_magic[8] = "SFIDPLN1";

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A plain job's serial number as sfid keeps it: what makes its values and names its series
 * in the ledger, so that a restored job goes on with the same series. NULL: none. */
static struct json_object *serial_keep_json(const struct job_serial *sn)
{
	struct json_object *o;
	char num[32];

	if (!sn->on)
		return NULL;
	o = json_object_new_object();
	snprintf(num, sizeof(num), "%" PRIu64, sn->start);
	json_object_object_add(o, "start", json_object_new_string(num));
	snprintf(num, sizeof(num), "%" PRIu64, sn->step);
	json_object_object_add(o, "step", json_object_new_string(num));
	json_object_object_add(o, "address", json_object_new_int64(sn->address));
	json_object_object_add(o, "width", json_object_new_int64(sn->width));
	json_object_object_add(o, "format", json_object_new_int64(sn->format));
	json_object_object_add(o, "text", json_object_new_string(sn->text));
	json_object_object_add(o, "series", json_object_new_string(sn->series));
	if (sn->list) {
		/* A list's values go with it: the file may be gone or changed by then. */
		size_t n = sn->list->n * sn->list->width;
		char *hex = malloc(2 * n + 1);

		if (!hex) {
			json_object_put(o);
			return NULL;
		}
		sfid_hex(sn->list->bytes, n, hex);
		json_object_object_add(o, "list", json_object_new_string(hex));
		json_object_object_add(o, "list_path", json_object_new_string(sn->list_path));
		free(hex);
	}
	return o;
}

static char *serial_keep(const struct job_serial *sn)
{
	struct json_object *o = serial_keep_json(sn);
	char *text;

	if (!o)
		return NULL;
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

static const char *kept_string(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64_t kept_int(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return -1;
	return json_object_get_int64(v);
}

/* The serial number back from serial_keep()'s text; false if it is not one. */
static bool serial_restore(struct job_serial *sn, const char *text, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = tok ? json_tokener_parse_ex(tok, text, (int)len) : NULL;
	const char *start, *step, *t, *series;
	int64_t address, width, format;
	struct job_serial n = { .on = true };
	char *end;
	bool ok = false;

	json_tokener_free(tok);
	if (!o || !json_object_is_type(o, json_type_object))
		goto out;
	start = kept_string(o, "start");
	step = kept_string(o, "step");
	t = kept_string(o, "text");
	series = kept_string(o, "series");
	address = kept_int(o, "address");
	width = kept_int(o, "width");
	format = kept_int(o, "format");
	if (!start || !step || !t || !series || address < 0 || address > UINT32_MAX || width < 1 ||
	    width > JOB_SERIAL_WIDTH_MAX || format < JOB_SERIAL_LE || format > JOB_SERIAL_ASCII ||
	    strlen(t) >= sizeof(n.text) || !*series || strlen(series) >= sizeof(n.series))
		goto out;
	errno = 0;
	n.start = strtoull(start, &end, 10);
	if (errno || *end || !*start)
		goto out;
	n.step = strtoull(step, &end, 10);
	if (errno || *end || !*step || (n.step == 0 && !kept_string(o, "list")))
		goto out;
	if (kept_string(o, "list")) {
		const char *hex = kept_string(o, "list"), *path = kept_string(o, "list_path");
		size_t hn = strlen(hex);

		if (!path || hn == 0 || hn % (2 * (size_t)width) != 0)
			goto out;
		n.list = calloc(1, sizeof(*n.list));
		if (n.list)
			n.list->bytes = malloc(hn / 2);
		if (!n.list || !n.list->bytes)
			goto list_bad;
		n.list->refs = 1;
		n.list->width = (unsigned)width;
		n.list->n = hn / 2 / (size_t)width;
		for (size_t i = 0; i < hn / 2; i++) {
			unsigned b;

			if (sscanf(hex + 2 * i, "%2x", &b) != 1)
				goto list_bad;
			n.list->bytes[i] = (uint8_t)b;
		}
		snprintf(n.list_path, sizeof(n.list_path), "%s", path);
	}
	n.address = (uint32_t)address;
	n.width = (unsigned)width;
	n.format = (enum job_serial_format)format;
	snprintf(n.text, sizeof(n.text), "%s", t);
	snprintf(n.series, sizeof(n.series), "%s", series);
	*sn = n;
	ok = true;
	goto out;
list_bad:
	job_serial_list_unref(n.list);
out:
	json_object_put(o);
	return ok;
}

char *job_osfi_serial_keep(const struct job *j)
{
	struct json_object *o = serial_keep_json(&j->serial);
	char *text;

	if (!o)
		return NULL;
	json_object_object_add(o, "image_state", json_object_new_int64(j->final_state));
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

int job_osfi_serial_restore(struct job *j, const char *text, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = tok ? json_tokener_parse_ex(tok, text, (int)len) : NULL;
	int64_t state = o && json_object_is_type(o, json_type_object) ?
			kept_int(o, "image_state") : -1;
	struct job_serial sn = { 0 };

	json_tokener_free(tok);
	json_object_put(o);
	if (state < 0 || state > 0xff || !job_serial_state_takes_writes((uint8_t)state) ||
	    !serial_restore(&sn, text, len))
		return -EINVAL;
	job_serial_list_unref(j->serial.list);
	j->serial = sn;
	j->final_state = (uint8_t)state;
	j->has_final_state = true;
	return 0;
}

int job_image_ranges(const struct job *j, struct job_serial_range **ret, size_t *ret_n)
{
	struct osfi_image *img = NULL;
	struct job_serial_range *r;
	size_t n = 0;

	*ret = NULL;
	*ret_n = 0;
	if (osfi_image_parse(j->image, j->image_len, &img, NULL, 0) < 0)
		return -EINVAL;
	r = calloc(img->n_areas ? img->n_areas : 1, sizeof(*r));
	if (!r) {
		osfi_image_free(img);
		return -ENOMEM;
	}
	for (size_t i = 0; i < img->n_areas; i++)
		if (img->areas[i].desc.type == OSFI_AREA_FIRMWARE ||
		    img->areas[i].desc.type == OSFI_AREA_SECRETS ||
		    img->areas[i].desc.type == OSFI_AREA_MODULE)
			r[n++] = (struct job_serial_range){ img->areas[i].desc.address,
							    img->areas[i].desc.size };
	osfi_image_free(img);
	*ret = r;
	*ret_n = n;
	return 0;
}

int job_plain_copy(const struct job *j, uint8_t **ret, size_t *ret_len)
{
	char *sn = serial_keep(&j->serial);
	size_t sn_len = sn ? strlen(sn) : 0, len = sizeof(plain_magic) + 4 + sn_len, o;
	uint8_t *buf;

	if (j->serial.on && !sn)
		return -ENOMEM;
	for (size_t i = 0; i < j->n_seg; i++)
		len += 8 + j->seg[i].size;
	buf = malloc(len);
	if (!buf) {
		free(sn);
		return -ENOMEM;
	}
	memcpy(buf, plain_magic, sizeof(plain_magic));
	o = sizeof(plain_magic);
	put_le32(buf + o, (uint32_t)sn_len);
	if (sn_len)
		memcpy(buf + o + 4, sn, sn_len);
	o += 4 + sn_len;
	free(sn);
	for (size_t i = 0; i < j->n_seg; i++) {
		put_le32(buf + o, j->seg[i].address);
		put_le32(buf + o + 4, (uint32_t)j->seg[i].size);
		memcpy(buf + o + 8, j->seg[i].data, j->seg[i].size);
		o += 8 + j->seg[i].size;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

int job_restore_plain(const uint8_t *copy, size_t len, const char *firmware, bool go,
		      uint32_t go_addr, uint32_t target, const char *user, struct job **ret,
		      char *reason, size_t reason_size)
{
	const char *files[JOB_FIRMWARE_MAX];
	char *list = strdup(firmware ? firmware : ""), *save = NULL;
	struct fw_image fw = { 0 };
	struct job_serial sn = { 0 };
	size_t n = 0, o = sizeof(plain_magic), sn_len;
	int r = -EINVAL;

	if (!list) {
		sfi_reason(reason, reason_size, "out of memory");
		return -ENOMEM;
	}
	for (char *t = strtok_r(list, "\n", &save); t && n < JOB_FIRMWARE_MAX;
	     t = strtok_r(NULL, "\n", &save))
		files[n++] = t;
	if (n == 0 || len < o + 4 || memcmp(copy, plain_magic, sizeof(plain_magic)) != 0 ||
	    get_le32(copy + o) > len - o - 4) {
		sfi_reason(reason, reason_size, "sfid's copy of the firmware is not one it wrote");
		goto out;
	}
	sn_len = get_le32(copy + o);
	if (sn_len > 0 && !serial_restore(&sn, (const char *)copy + o + 4, sn_len)) {
		sfi_reason(reason, reason_size, "sfid's copy of the job's serial number is damaged");
		goto out;
	}
	o += 4 + sn_len;
	while (o < len) {
		struct fw_segment *g;
		uint32_t size;

		if (len - o < 8 || (size = get_le32(copy + o + 4)) == 0 || len - o - 8 < size) {
			sfi_reason(reason, reason_size, "sfid's copy of the firmware is cut short");
			goto out;
		}
		g = realloc(fw.seg, (fw.n + 1) * sizeof(*g));
		if (!g) {
			r = -ENOMEM;
			sfi_reason(reason, reason_size, "out of memory");
			goto out;
		}
		fw.seg = g;
		g = &fw.seg[fw.n];
		*g = (struct fw_segment){ .address = get_le32(copy + o), .size = size };
		snprintf(g->source, sizeof(g->source), "sfid's copy, piece %zu", fw.n + 1);
		g->data = malloc(size);
		if (!g->data) {
			r = -ENOMEM;
			sfi_reason(reason, reason_size, "out of memory");
			goto out;
		}
		memcpy(g->data, copy + o + 8, size);
		fw.n++;
		o += 8 + size;
	}
	r = plain_build(&fw, files, n, go, true, go_addr, target, user, ret, reason, reason_size);
	if (r == 0)
		(*ret)->serial = sn;
out:
	fw_image_clear(&fw);
	free(list);
	return r;
}

/* ---- vendor jobs ---- */

int job_load_vendor(const char *image, const char *modules, const char *global,
		    const struct job_fds *fds, uint32_t target, const char *user,
		    struct job **ret, char *reason, size_t reason_size)
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	struct job *j;
	int r;

	j = calloc(1, sizeof(*j));
	if (!j) {
		sfi_reason(reason, reason_size, "out of memory");
		return -ENOMEM;
	}
	j->vendor = true;
	j->image_path = strdup(image);
	j->loaded_by = strdup(user ? user : "");
	if (!j->image_path || !j->loaded_by || (modules && !(j->module_file = strdup(modules))) ||
	    (global && !(j->global_file = strdup(global)))) {
		sfi_reason(reason, reason_size, "out of memory");
		job_free(j);
		return -ENOMEM;
	}
	r = read_file_or_fd(image, fds ? fds->image : -1, IMAGE_MAX, &j->image, &j->image_len);
	if (r < 0) {
		sfi_reason(reason, reason_size, "cannot read image %s: %s", image, sfi_file_strerror(r));
		job_free(j);
		return -ENOENT;
	}
	if (j->image_len == 0) {
		sfi_reason(reason, reason_size, "image %s is empty", image);
		job_free(j);
		return -EINVAL;
	}
	if (modules) {
		r = read_file_or_fd(modules, fds ? fds->modules : -1, MODULES_FILE_MAX, &j->modules,
				    &j->modules_len);
		if (r < 0) {
			sfi_reason(reason, reason_size, "cannot read module file %s: %s", modules,
				   sfi_file_strerror(r));
			job_free(j);
			return -ENOENT;
		}
	}
	if (global) {
		r = read_file_or_fd(global, fds ? fds->global : -1, LICENSE_FILE_MAX, &j->global_bytes,
				    &j->global_len);
		if (r < 0 || j->global_len == 0) {
			sfi_reason(reason, reason_size, "cannot read global license %s: %s", global,
				   r < 0 ? sfi_file_strerror(r) : "it is empty");
			job_free(j);
			return -ENOENT;
		}
	}
	SHA256(j->image, j->image_len, md);
	sfid_hex(md, sizeof(md), j->digest_hex);
	memcpy(j->image_id, md, sizeof(j->image_id));
	sfid_hex(md, sizeof(md), j->image_id_hex);
	/* The vendor backend reads the STM32H5's UID before running the tool. */
	j->device_id = STM32_PID_H56X_H57X;
	/* One license per chip for the image: the reader's (counted) or the global file. */
	j->lic[0].target = OSFI_TARGET_IMAGE;
	j->lic[0].global = global != NULL;
	j->lic[0].token = -1;
	memcpy(j->lic[0].firmware_id, j->image_id, OSFI_ID_LEN);
	sfid_hex(j->image_id, OSFI_ID_LEN, j->lic[0].firmware_id_hex);
	j->n_lic = 1;
	j->global = global != NULL;
	j->target = target;
	j->loaded_ms = sfid_now_ms();
	*ret = j;
	return 0;
}

struct json_object *job_json(const struct job *j)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_array();

	json_object_object_add(o, "id", json_object_new_int64(j->id));
	/* "plain": written with the bootloader's commands, nothing protected (no OSFI). */
	/* "vendor": an image for ST's own SFI, installed by STM32CubeProgrammer; sfid does
	 * not read it. */
	json_object_object_add(o, "kind", json_object_new_string(job_kind(j)));
	if (j->plain) {
		struct json_object *f = json_object_new_array();
		const char *p = j->firmware;

		while (*p) {
			size_t k = strcspn(p, "\n");

			json_object_array_add(f, json_object_new_string_len(p, (int)k));
			p += k + (p[k] == '\n');
		}
		json_object_object_add(o, "firmware", f);
		json_object_object_add(o, "segments", json_object_new_int64((int64_t)j->n_seg));
		json_object_object_add(o, "sectors", json_object_new_int64((int64_t)j->n_sectors));
		json_object_object_add(o, "go", j->go ? json_object_new_int64(j->go_address) : NULL);
	}
	if (j->serial.on) {
		json_object_object_add(o, "serial", json_object_new_string(j->serial.series));
		if (j->serial.list) {
			json_object_object_add(o, "serial_list",
					       json_object_new_string(j->serial.list_path));
			json_object_object_add(o, "serial_list_values",
					       json_object_new_int64((int64_t)j->serial.list->n));
		}
	}
	if (!j->plain && j->has_final_state) {
		const char *ps = osfi_product_state_name(j->final_state);

		json_object_object_add(o, "image_state", json_object_new_string(ps ? ps : "?"));
	}
	json_object_object_add(o, "image", json_object_new_string(j->image_path));
	json_object_object_add(o, "image_id", json_object_new_string(j->image_id_hex));
	json_object_object_add(o, "digest", json_object_new_string(j->digest_hex));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)j->image_len));
	json_object_object_add(o, "device_id", json_object_new_int(j->device_id));
	json_object_object_add(o, "modules", j->module_file ? json_object_new_string(j->module_file)
							    : NULL);
	json_object_object_add(o, "license", json_object_new_string(j->plain ? "none" :
								   j->global ? "global" : "hsm"));
	json_object_object_add(o, "global_license", j->global_file ?
			       json_object_new_string(j->global_file) : NULL);
	for (size_t i = 0; i < j->n_lic; i++) {
		struct json_object *l = json_object_new_object();

		json_object_object_add(l, "target", json_object_new_int64(j->lic[i].target));
		json_object_object_add(l, "license", json_object_new_string(j->lic[i].global ?
									  "global" : "hsm"));
		json_object_object_add(l, "firmware_id",
				       json_object_new_string(j->lic[i].firmware_id_hex));
		json_object_array_add(a, l);
	}
	json_object_object_add(o, "licenses", a);
	json_object_object_add(o, "target", json_object_new_int64(j->target));
	json_object_object_add(o, "installed", json_object_new_int64(j->installed));
	json_object_object_add(o, "failed", json_object_new_int64(j->failed));
	json_object_object_add(o, "refused", json_object_new_int64(j->refused));
	json_object_object_add(o, "halted", json_object_new_int64(j->halted));
	json_object_object_add(o, "in_progress", json_object_new_int64(j->reserved));
	json_object_object_add(o, "started_ms", j->started_ms ? json_object_new_int64(j->started_ms)
							      : NULL);
	json_object_object_add(o, "complete", json_object_new_boolean(j->target &&
								     j->installed >= j->target));
	json_object_object_add(o, "loaded_by", json_object_new_string(j->loaded_by));
	json_object_object_add(o, "loaded_ms", json_object_new_int64(j->loaded_ms));
	return o;
}

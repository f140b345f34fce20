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
#include <openssl/sha.h>

#include "an3155-wire.h"
#include "job.h"
#include "sfi-error.h"
#include "sfi-file.h"
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

struct json_object *job_json(const struct job *j)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_array();

	json_object_object_add(o, "id", json_object_new_int64(j->id));
	json_object_object_add(o, "image", json_object_new_string(j->image_path));
	json_object_object_add(o, "image_id", json_object_new_string(j->image_id_hex));
	json_object_object_add(o, "digest", json_object_new_string(j->digest_hex));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)j->image_len));
	json_object_object_add(o, "device_id", json_object_new_int(j->device_id));
	json_object_object_add(o, "modules", j->module_file ? json_object_new_string(j->module_file)
							    : NULL);
	json_object_object_add(o, "license", json_object_new_string(j->global ? "global" : "hsm"));
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

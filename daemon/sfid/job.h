/* Jobs: an image, the licenses every chip needs for it, a target count. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "sfid.h"

/* Loads and checks a job: the image must parse, be for the STM32H5 and be the firmware the
 * token licenses (or come with a global license for it); a module license information file
 * must name every module of the image with its address, and each module license must be a
 * global license for it or name a token by the module's firmware id. Module tokens are not
 * looked up here (see license.h). Returns 0, or a control error code with one sentence in
 * msg. */
/* Descriptors of the job's files, opened by the supervisor's sfictl and passed over the
 * control socket: sfid reads what the supervisor may read. -1: read the path. */
struct job_fds {
	int image, modules, global;
	size_t n_lic;			/* module licenses, named as in the module file */
	const char *lic_name[JOB_LICENSES_MAX];
	int lic_fd[JOB_LICENSES_MAX];
};

int job_load(const struct sfid *d, const char *image, const char *modules, const char *global,
	     const struct job_fds *fds, uint32_t target, const char *user, struct job **ret, char *msg, size_t msg_size);
struct job *job_free(struct job *j);
/* The job as shown by `job show`, `status` and the job event. */
struct json_object *job_json(const struct job *j);

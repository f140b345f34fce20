/* Host side of an OSFI session, without I/O (docs/protocol.md §5.1). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "osfi.h"
#include "osfi-util.h"
#include "an3155-wire.h"

#define OSFI_SESSION_LICENSES_MAX 64

struct osfi_session {
	bool cert_only;
	enum osfi_step step;
	int result;			/* 1 running, 0 done, < 0 failed */
	uint16_t status;		/* chip status that failed the session */
	int link_err;
	uint16_t failed_subop;

	struct osfi_image *img;
	uint8_t (*licenses)[OSFI_LICENSE_LEN];
	uint32_t *targets;
	size_t n_licenses;
	size_t next_license;
	bool expect_state_set;
	uint8_t expect_state;

	uint64_t stream_off;		/* next stream byte to send, from the file start */
	size_t chunk;			/* bytes of the PUT_DATA in flight */
	uint8_t p1[4];

	bool have_info;
	struct osfi_info info;
	bool have_cert;
	struct osfi_cert cert;
	uint16_t cur_subop;
};

static int osfi_session_alloc(struct osfi_session **ret_s)
{
	struct osfi_session *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->step = OSFI_STEP_GET_INFO;
	s->result = 1;
	*ret_s = s;
	return 0;
}

int osfi_session_new_install(const uint8_t *image, size_t len, struct osfi_session **ret_s,
			     char *reason, size_t reason_size)
{
	struct osfi_session *s;
	int r;

	if (!image || !ret_s)
		return -EINVAL;
	r = osfi_session_alloc(&s);
	if (r < 0)
		return r;
	s->licenses = calloc(OSFI_SESSION_LICENSES_MAX, OSFI_LICENSE_LEN);
	s->targets = calloc(OSFI_SESSION_LICENSES_MAX, sizeof(*s->targets));
	if (!s->licenses || !s->targets) {
		osfi_session_free(s);
		return -ENOMEM;
	}
	r = osfi_image_parse(image, len, &s->img, reason, reason_size);
	if (r < 0) {
		osfi_session_free(s);
		return r;
	}
	s->stream_off = OSFI_HEADER_LEN;
	*ret_s = s;
	return 0;
}

int osfi_session_new_cert(struct osfi_session **ret_s)
{
	struct osfi_session *s;
	int r;

	if (!ret_s)
		return -EINVAL;
	r = osfi_session_alloc(&s);
	if (r < 0)
		return r;
	s->cert_only = true;
	*ret_s = s;
	return 0;
}

struct osfi_session *osfi_session_free(struct osfi_session *s)
{
	if (!s)
		return NULL;
	if (s->licenses) {
		OPENSSL_cleanse(s->licenses, (size_t)OSFI_SESSION_LICENSES_MAX * OSFI_LICENSE_LEN);
		free(s->licenses);
	}
	free(s->targets);
	osfi_image_free(s->img);
	free(s);
	return NULL;
}

int osfi_session_add_license(struct osfi_session *s, const uint8_t *lic, size_t len)
{
	struct osfi_license l;
	size_t at;
	int r;

	if (!s || !lic || s->cert_only || s->step != OSFI_STEP_GET_INFO)
		return -EINVAL;
	r = osfi_license_decode(lic, len, &l);
	if (r < 0)
		return r == -EMSGSIZE ? -EBADMSG : r;
	for (size_t i = 0; i < s->n_licenses; i++)
		if (s->targets[i] == l.target)
			return -EEXIST;
	if (s->n_licenses == OSFI_SESSION_LICENSES_MAX)
		return -E2BIG;

	/* The image license goes first: it opens the chip's session. */
	at = s->n_licenses;
	if (l.target == OSFI_TARGET_IMAGE) {
		memmove(s->licenses + 1, s->licenses, s->n_licenses * OSFI_LICENSE_LEN);
		memmove(s->targets + 1, s->targets, s->n_licenses * sizeof(*s->targets));
		at = 0;
	}
	memcpy(s->licenses[at], lic, OSFI_LICENSE_LEN);
	s->targets[at] = l.target;
	s->n_licenses++;
	OPENSSL_cleanse(&l, sizeof(l));
	return 0;
}

void osfi_session_expect_state(struct osfi_session *s, uint8_t product_state)
{
	s->expect_state_set = true;
	s->expect_state = product_state;
}

static void osfi_session_fail(struct osfi_session *s, int err)
{
	s->failed_subop = s->cur_subop;
	s->result = err;
	s->step = OSFI_STEP_FAILED;
}

static void osfi_special(struct osfi_request *req, uint16_t subop, const uint8_t *data, size_t n,
			 size_t answer_max)
{
	memset(req, 0, sizeof(*req));
	req->subop = subop;
	req->p1 = data;
	req->n1 = n;
	req->answer_max = answer_max;
}

static void osfi_xspecial(struct osfi_request *req, uint16_t subop, const uint8_t *p1, size_t n1,
			  const uint8_t *p2, size_t n2)
{
	memset(req, 0, sizeof(*req));
	req->subop = subop;
	req->p1 = p1;
	req->n1 = n1;
	req->p2 = p2;
	req->n2 = n2;
}

enum osfi_next osfi_session_next(struct osfi_session *s, struct osfi_request *ret_req)
{
	struct osfi_request req = { 0 };

	switch (s->step) {
	case OSFI_STEP_GET_INFO:
	case OSFI_STEP_GET_INFO_AGAIN:
	case OSFI_STEP_VERIFY:
		osfi_special(&req, OSFI_OP_GET_INFO, NULL, 0, OSFI_INFO_LEN);
		break;
	case OSFI_STEP_ABORT:
		osfi_special(&req, OSFI_OP_ABORT, NULL, 0, 0);
		break;
	case OSFI_STEP_GET_CERT:
		osfi_special(&req, OSFI_OP_GET_CERT, NULL, 0, OSFI_CERT_LEN);
		break;
	case OSFI_STEP_PUT_LICENSE:
		osfi_p1_encode(s->targets[s->next_license], s->p1);
		osfi_xspecial(&req, OSFI_OP_PUT_LICENSE, s->p1, 4, s->licenses[s->next_license],
			      OSFI_LICENSE_LEN);
		break;
	case OSFI_STEP_PUT_HEADER:
		osfi_special(&req, OSFI_OP_PUT_HEADER, s->img->buf, OSFI_HEADER_LEN, 0);
		break;
	case OSFI_STEP_PUT_DATA:
		s->chunk = s->img->len - s->stream_off;
		if (s->chunk > OSFI_DATA_CHUNK)
			s->chunk = OSFI_DATA_CHUNK;
		osfi_p1_encode((uint32_t)s->stream_off, s->p1);
		osfi_xspecial(&req, OSFI_OP_PUT_DATA, s->p1, 4, s->img->buf + s->stream_off,
			      s->chunk);
		break;
	case OSFI_STEP_FINALIZE:
		osfi_special(&req, OSFI_OP_FINALIZE, NULL, 0, 0);
		break;
	case OSFI_STEP_RECONNECT:
		return OSFI_NEXT_RECONNECT;
	case OSFI_STEP_DONE:
		return OSFI_NEXT_DONE;
	case OSFI_STEP_FAILED:
		return OSFI_NEXT_FAILED;
	case _OSFI_STEP_MAX:
		return OSFI_NEXT_FAILED;
	}
	s->cur_subop = req.subop;
	if (ret_req)
		*ret_req = req;
	return OSFI_NEXT_REQUEST;
}

/* After licenses: header, or data if the header was sent. */
static void osfi_session_after_licenses(struct osfi_session *s)
{
	s->step = OSFI_STEP_PUT_HEADER;
}

static int osfi_session_on_info(struct osfi_session *s, const uint8_t *data, size_t len)
{
	struct osfi_info info;

	if (osfi_info_decode(data, len, &info) < 0)
		return -OSFI_E_ANSWER;
	s->info = info;
	s->have_info = true;

	if (s->step == OSFI_STEP_VERIFY) {
		/* Finalized with OK, and (from a chip that reports it) with this image's id:
		 * docs/protocol.md §5.3. */
		if (info.session_state != OSFI_SESSION_FINALIZED ||
		    info.last_status != OSFI_ST_OK ||
		    (s->img && osfi_info_has_installed(&info) &&
		     memcmp(info.installed_id, s->img->id, OSFI_ID_LEN) != 0))
			return -OSFI_E_NOT_FINALIZED;
		if (s->expect_state_set && info.product_state != s->expect_state)
			return -OSFI_E_FINAL_STATE;
		s->step = OSFI_STEP_DONE;
		return 0;
	}

	if (s->cert_only) {
		s->step = OSFI_STEP_GET_CERT;
		return 0;
	}
	if (info.product_state != STM32H5_PS_OPEN)
		return -OSFI_E_NOT_OPEN;
	switch (info.session_state) {
	case OSFI_SESSION_IDLE:
	case OSFI_SESSION_FAILED:
		break;
	case OSFI_SESSION_LICENSED:
	case OSFI_SESSION_STREAMING:
	case OSFI_SESSION_COMPLETE:
	case OSFI_SESSION_FINALIZED:
	default:
		/* Left over from an interrupted host: abort it once, then look again. */
		if (s->step == OSFI_STEP_GET_INFO) {
			s->step = OSFI_STEP_ABORT;
			return 0;
		}
		return -OSFI_E_BUSY;
	}
	if (s->img->max_area > info.ram_buffer)
		return -OSFI_E_RAM_BUFFER;
	if (s->n_licenses == 0 || s->targets[0] != OSFI_TARGET_IMAGE)
		return -ENOKEY;
	s->next_license = 0;
	s->step = OSFI_STEP_PUT_LICENSE;
	return 0;
}

int osfi_session_answer(struct osfi_session *s, uint16_t status, const uint8_t *data, size_t len)
{
	int r = 0;

	if (!s)
		return -EINVAL;
	if (s->result <= 0)
		return s->result;
	if (len && !data) {
		osfi_session_fail(s, -EINVAL);
		return s->result;
	}
	if (status != OSFI_ST_OK) {
		s->status = status;
		osfi_session_fail(s, -OSFI_E_STATUS);
		return s->result;
	}

	switch (s->step) {
	case OSFI_STEP_GET_INFO:
	case OSFI_STEP_GET_INFO_AGAIN:
	case OSFI_STEP_VERIFY:
		r = osfi_session_on_info(s, data, len);
		break;
	case OSFI_STEP_ABORT:
		s->step = OSFI_STEP_GET_INFO_AGAIN;
		break;
	case OSFI_STEP_GET_CERT: {
		struct osfi_cert cert;

		if (osfi_cert_decode(data, len, &cert) < 0) {
			r = -OSFI_E_ANSWER;
			break;
		}
		if (memcmp(cert.uid, s->info.uid, OSFI_UID_LEN) != 0) {
			r = -OSFI_E_CERT_UID;
			break;
		}
		s->cert = cert;
		s->have_cert = true;
		s->step = OSFI_STEP_DONE;
		break;
	}
	case OSFI_STEP_PUT_LICENSE:
		if (++s->next_license == s->n_licenses)
			osfi_session_after_licenses(s);
		break;
	case OSFI_STEP_PUT_HEADER:
		s->step = OSFI_STEP_PUT_DATA;
		break;
	case OSFI_STEP_PUT_DATA:
		s->stream_off += s->chunk;
		if (s->stream_off == s->img->len)
			s->step = OSFI_STEP_FINALIZE;
		break;
	case OSFI_STEP_FINALIZE:
		s->step = OSFI_STEP_RECONNECT;
		break;
	case OSFI_STEP_RECONNECT:
	case OSFI_STEP_DONE:
	case OSFI_STEP_FAILED:
	case _OSFI_STEP_MAX:
		r = -EINVAL;
		break;
	}
	if (r < 0) {
		osfi_session_fail(s, r);
		return r;
	}
	if (s->step == OSFI_STEP_DONE)
		s->result = 0;
	return 0;
}

void osfi_session_link_error(struct osfi_session *s, int err)
{
	if (!s || s->result <= 0)
		return;
	s->link_err = err;
	osfi_session_fail(s, -OSFI_E_LINK);
}

void osfi_session_reconnected(struct osfi_session *s)
{
	if (s && s->step == OSFI_STEP_RECONNECT)
		s->step = OSFI_STEP_VERIFY;
}

enum osfi_step osfi_session_step(const struct osfi_session *s)
{
	return s->step;
}

int osfi_session_result(const struct osfi_session *s)
{
	return s->result;
}

uint16_t osfi_session_status(const struct osfi_session *s)
{
	return s->status;
}

int osfi_session_link_errno(const struct osfi_session *s)
{
	return s->link_err;
}

void osfi_session_progress(const struct osfi_session *s, uint64_t *ret_done, uint64_t *ret_total)
{
	uint64_t total = s->img ? s->img->len - OSFI_HEADER_LEN : 0;
	uint64_t done = s->img ? s->stream_off - OSFI_HEADER_LEN : 0;

	if (ret_done)
		*ret_done = done;
	if (ret_total)
		*ret_total = total;
}

const struct osfi_info *osfi_session_info(const struct osfi_session *s)
{
	return s->have_info ? &s->info : NULL;
}

const struct osfi_cert *osfi_session_cert(const struct osfi_session *s)
{
	return s->have_cert ? &s->cert : NULL;
}

const struct osfi_image *osfi_session_image(const struct osfi_session *s)
{
	return s->img;
}

void osfi_session_describe(const struct osfi_session *s, char *buf, size_t size)
{
	const char *op = osfi_subop_name(s->failed_subop);

	if (!buf || !size)
		return;
	if (s->result >= 0) {
		snprintf(buf, size, "%s", s->result == 0 ? "done" : osfi_step_to_string(s->step));
		return;
	}
	switch (-s->result) {
	case OSFI_E_STATUS:
		snprintf(buf, size, "%s: chip status %s (0x%04x): %s", op,
			 osfi_status_name(s->status), s->status, osfi_status_message(s->status));
		break;
	case OSFI_E_LINK:
		snprintf(buf, size, "%s: the link to the chip failed (error %d)", op, s->link_err);
		break;
	case OSFI_E_NOT_OPEN: {
		const char *ps = osfi_product_state_name(s->info.product_state);

		snprintf(buf, size, "the chip is in product state %s (0x%02x), not Open: it "
				    "cannot be installed",
			 ps ? ps : "unknown", s->info.product_state);
		break;
	}
	case OSFI_E_RAM_BUFFER:
		snprintf(buf, size, "the image has an area of %u bytes but the chip buffers only "
				    "%u; repack it with --ram-buffer %u",
			 s->img ? s->img->max_area : 0, s->info.ram_buffer, s->info.ram_buffer);
		break;
	case OSFI_E_FINAL_STATE: {
		const char *got = osfi_product_state_name(s->info.product_state);
		const char *want = osfi_product_state_name(s->expect_state);

		snprintf(buf, size, "after FINALIZE the chip is in product state %s, expected %s",
			 got ? got : "unknown", want ? want : "unknown");
		break;
	}
	case ENOKEY:
		snprintf(buf, size, "no license for the image was given");
		break;
	default:
		snprintf(buf, size, "%s: %s", op, osfi_strerror(s->result));
		break;
	}
}

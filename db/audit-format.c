/* Canonical JSON encoding of audit records, and the parser for export lines. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "audit-format.h"
#include "sfi-hex.h"

#define CANON_DEPTH_MAX 16

struct buf {
	char *data;
	size_t len;
	size_t cap;
};

static int buf_reserve(struct buf *b, size_t more)
{
	size_t need, cap;
	char *p;

	if (more > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	need = b->len + more + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

static int buf_put(struct buf *b, const char *s, size_t n)
{
	int r = buf_reserve(b, n);

	if (r < 0)
		return r;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not valid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and values past U+10FFFF have more than one spelling or
	 * none, so they would break byte-exact hashing. */
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static int canon_string(struct buf *b, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	int r;

	r = buf_put(b, "\"", 1);
	for (size_t i = 0; r == 0 && i < n;) {
		char esc[8];
		size_t k;

		if (u[i] == '"' || u[i] == '\\') {
			esc[0] = '\\';
			esc[1] = (char)u[i];
			r = buf_put(b, esc, 2);
			i++;
		} else if (u[i] < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", u[i]);
			r = buf_put(b, esc, 6);
			i++;
		} else {
			k = utf8_seq_len(u + i, n - i);
			if (k == 0)
				return -EINVAL;
			r = buf_put(b, s + i, k);
			i += k;
		}
	}
	if (r == 0)
		r = buf_put(b, "\"", 1);
	return r;
}

struct member {
	const char *key;
	size_t key_len;
	struct json_object *value;
};

static int member_compare(const void *a, const void *b)
{
	const struct member *x = a, *y = b;
	size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
	int c = memcmp(x->key, y->key, n);

	if (c != 0)
		return c;
	return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static int canon_value(struct buf *b, struct json_object *v, unsigned depth)
{
	char num[32];
	int r = 0;

	if (depth > CANON_DEPTH_MAX)
		return -EINVAL;

	switch (json_object_get_type(v)) {
	case json_type_null:
		return buf_put(b, "null", 4);
	case json_type_boolean:
		return json_object_get_boolean(v) ? buf_put(b, "true", 4) : buf_put(b, "false", 5);
	case json_type_int:
		snprintf(num, sizeof(num), "%" PRId64, json_object_get_int64(v));
		return buf_put(b, num, strlen(num));
	case json_type_double:
		return -EINVAL;
	case json_type_string:
		return canon_string(b, json_object_get_string(v),
				    (size_t)json_object_get_string_len(v));
	case json_type_array: {
		size_t n = json_object_array_length(v);

		r = buf_put(b, "[", 1);
		for (size_t i = 0; r == 0 && i < n; i++) {
			if (i > 0)
				r = buf_put(b, ",", 1);
			if (r == 0)
				r = canon_value(b, json_object_array_get_idx(v, i), depth + 1);
		}
		return r < 0 ? r : buf_put(b, "]", 1);
	}
	case json_type_object: {
		size_t n = (size_t)json_object_object_length(v), i = 0;
		struct member *m;

		m = calloc(n ? n : 1, sizeof(*m));
		if (!m)
			return -ENOMEM;
		json_object_object_foreach(v, key, val) {
			if (i < n) {
				m[i].key = key;
				m[i].key_len = strlen(key);
				m[i].value = val;
				i++;
			}
		}
		n = i;
		qsort(m, n, sizeof(*m), member_compare);
		r = buf_put(b, "{", 1);
		for (i = 0; r == 0 && i < n; i++) {
			if (i > 0)
				r = buf_put(b, ",", 1);
			if (r == 0)
				r = canon_string(b, m[i].key, m[i].key_len);
			if (r == 0)
				r = buf_put(b, ":", 1);
			if (r == 0)
				r = canon_value(b, m[i].value, depth + 1);
		}
		free(m);
		return r < 0 ? r : buf_put(b, "}", 1);
	}
	}
	return -EINVAL;
}

int audit_canon_encode(struct json_object *value, char **ret_text, size_t *ret_len)
{
	struct buf b = { 0 };
	int r;

	r = canon_value(&b, value, 0);
	if (r < 0) {
		free(b.data);
		return r;
	}
	*ret_text = b.data;
	*ret_len = b.len;
	return 0;
}

int audit_hash_record(const uint8_t prev[AUDIT_HASH_SIZE], const char *canon, size_t canon_len,
		      uint8_t ret_hash[AUDIT_HASH_SIZE])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = 0;
	int ok;

	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(ctx, prev, AUDIT_HASH_SIZE) &&
	     EVP_DigestUpdate(ctx, canon, canon_len) && EVP_DigestFinal_ex(ctx, ret_hash, &n);
	EVP_MD_CTX_free(ctx);
	return ok && n == AUDIT_HASH_SIZE ? 0 : -EIO;
}

void audit_hex_encode(const uint8_t *data, size_t len, char *out)
{
	sfi_hex_encode(data, len, out);
}

bool audit_is_hex(const char *s, size_t len)
{
	return sfi_hex_is_lower(s, len);
}

int audit_hex_decode(const char *hex, uint8_t *out, size_t len)
{
	if (!sfi_hex_is_lower(hex, 2 * len))
		return -EINVAL;
	return sfi_hex_decode(hex, out, len);
}

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errbuf && errlen) {
		va_start(ap, fmt);
		vsnprintf(errbuf, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Reads a non-negative integer member; JSON numbers only. */
static bool get_uint(struct json_object *o, const char *key, uint64_t *ret)
{
	struct json_object *v;
	int64_t x;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return false;
	x = json_object_get_int64(v);
	if (x < 0 || x == INT64_MAX)
		return false;
	*ret = (uint64_t)x;
	return true;
}

static bool get_hex(struct json_object *o, const char *key, uint8_t *out, size_t len)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return false;
	return audit_hex_decode(json_object_get_string(v), out, len) == 0;
}

/* True when every member of o is one of the NULL-terminated names. */
static bool only_members(struct json_object *o, const char *const *names, const char **ret_bad)
{
	json_object_object_foreach(o, key, val) {
		const char *const *n;

		(void)val;
		for (n = names; *n && strcmp(*n, key) != 0; n++)
			;
		if (!*n) {
			*ret_bad = key;
			return false;
		}
	}
	return true;
}

static char *dup_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return strdup(json_object_get_string(v));
}

static int parse_tokens(struct json_object *list, struct audit_line *l, char *errbuf,
			size_t errlen)
{
	static const char *const token_members[] = { "counter", "serial", NULL };
	const char *badkey;

	if (!json_object_is_type(list, json_type_array) ||
	    json_object_array_length(list) > AUDIT_TOKENS_MAX)
		return fail(errbuf, errlen, "metadata: tokens is not a list of at most %d tokens",
			    AUDIT_TOKENS_MAX);
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		struct json_object *t = json_object_array_get_idx(list, i), *v;
		struct audit_meta_token *mt = &l->tokens[l->n_tokens];
		const char *serial;

		if (!json_object_is_type(t, json_type_object))
			return fail(errbuf, errlen, "metadata: a token is not an object");
		if (!only_members(t, token_members, &badkey))
			return fail(errbuf, errlen, "metadata: unknown token field \"%s\"", badkey);
		if (!json_object_object_get_ex(t, "serial", &v) ||
		    !json_object_is_type(v, json_type_string) ||
		    (serial = json_object_get_string(v))[0] == '\0' ||
		    strlen(serial) >= sizeof(mt->serial))
			return fail(errbuf, errlen, "metadata: a token lacks its serial");
		if (!json_object_object_get_ex(t, "counter", &v) ||
		    !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < -1 ||
		    json_object_get_int64(v) == INT64_MAX)
			return fail(errbuf, errlen, "metadata: token %s lacks its counter", serial);
		for (size_t k = 0; k < l->n_tokens; k++)
			if (strcmp(l->tokens[k].serial, serial) == 0)
				return fail(errbuf, errlen, "metadata: token %s is named twice", serial);
		snprintf(mt->serial, sizeof(mt->serial), "%s", serial);
		mt->counter = json_object_get_int64(v);
		l->n_tokens++;
	}
	return 0;
}

static int parse_meta(struct json_object *o, struct audit_line *l, char *errbuf, size_t errlen)
{
	static const char *const v1[] = { "anchor", "created", "export", "first_seq", "format",
					  "last_seq", "range", "schema", NULL };
	static const char *const v2[] = { "anchor", "created", "export", "first_seq", "format",
					  "last_seq", "range", "schema", "station", "tokens",
					  "version", NULL };
	static const char *const range_members[] = { "from", "job", "to", NULL };
	struct json_object *v, *range;
	uint64_t format, created, schema;
	const char *badkey;

	if (!json_object_object_get_ex(o, "export", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), "sfid-audit") != 0)
		return fail(errbuf, errlen, "metadata: not an sfid audit export");
	if (!get_uint(o, "format", &format) || (format != 1 && format != 2))
		return fail(errbuf, errlen, "unsupported export format (this sfi-audit reads "
					    "formats 1 and 2)");
	l->format = (int)format;
	if (!only_members(o, format == 1 ? v1 : v2, &badkey))
		return fail(errbuf, errlen, "metadata: unknown field \"%s\"", badkey);
	if (!get_uint(o, "first_seq", &l->first_seq) || !get_uint(o, "last_seq", &l->last_seq))
		return fail(errbuf, errlen, "metadata line lacks first_seq/last_seq");
	if (!get_hex(o, "anchor", l->anchor, AUDIT_HASH_SIZE))
		return fail(errbuf, errlen, "metadata line lacks a 64-digit anchor hash");
	if (l->first_seq > l->last_seq || (l->first_seq == 0) != (l->last_seq == 0))
		return fail(errbuf, errlen, "metadata line has an impossible seq range");
	if (!get_uint(o, "created", &created) || !get_uint(o, "schema", &schema))
		return fail(errbuf, errlen, "metadata line lacks created/schema");
	l->created_ms = (int64_t)created;
	if (!json_object_object_get_ex(o, "range", &range) ||
	    !json_object_is_type(range, json_type_object) ||
	    !only_members(range, range_members, &badkey) ||
	    json_object_object_length(range) != 3)
		return fail(errbuf, errlen, "metadata: range must hold exactly from, job and to");
	json_object_object_foreach(range, rk, rv) {
		if (!json_object_is_type(rv, json_type_int))
			return fail(errbuf, errlen, "metadata: range %s is not a number", rk);
		if (strcmp(rk, "from") == 0)
			l->range_from = json_object_get_int64(rv);
		else if (strcmp(rk, "job") == 0)
			l->range_job = json_object_get_int64(rv);
		else
			l->range_to = json_object_get_int64(rv);
	}
	if (format == 2) {
		l->station = dup_str(o, "station");
		l->version = dup_str(o, "version");
		if (!l->station || !l->version)
			return fail(errbuf, errlen, "metadata lacks the station or the sfid version");
		if (!json_object_object_get_ex(o, "tokens", &v))
			return fail(errbuf, errlen, "metadata lacks its tokens");
		if (parse_tokens(v, l, errbuf, errlen) < 0)
			return -EINVAL;
	}
	l->kind = AUDIT_LINE_META;
	return 0;
}

static int parse_end(struct json_object *o, struct audit_line *l, char *errbuf, size_t errlen)
{
	static const char *const line_members[] = { "end", "signature", NULL };
	static const char *const end_members[] = { "digest", "first_seq", "key_id", "last_hash",
						   "last_seq", "records", NULL };
	struct json_object *end, *v;
	const char *badkey;
	int r;

	if (!only_members(o, line_members, &badkey))
		return fail(errbuf, errlen, "end line: unknown field \"%s\"", badkey);
	if (!json_object_object_get_ex(o, "end", &end) ||
	    !json_object_is_type(end, json_type_object))
		return fail(errbuf, errlen, "end line: \"end\" is not an object");
	if (!only_members(end, end_members, &badkey))
		return fail(errbuf, errlen, "end line: unknown field \"%s\"", badkey);
	if (!get_uint(end, "first_seq", &l->first_seq) || !get_uint(end, "last_seq", &l->last_seq) ||
	    !get_uint(end, "records", &l->records) ||
	    !get_hex(end, "digest", l->digest, AUDIT_HASH_SIZE) ||
	    !get_hex(end, "last_hash", l->last_hash, AUDIT_HASH_SIZE))
		return fail(errbuf, errlen, "end line lacks first_seq, last_seq, records, digest or "
					    "last_hash");
	if (json_object_object_get_ex(end, "key_id", &v)) {
		if (!get_hex(end, "key_id", l->key_id, AUDIT_HASH_SIZE))
			return fail(errbuf, errlen, "end line has a malformed key_id");
		l->has_key_id = true;
	}
	if (json_object_object_get_ex(o, "signature", &v)) {
		if (!get_hex(o, "signature", l->signature, AUDIT_SIG_SIZE))
			return fail(errbuf, errlen, "end line has a malformed signature");
		l->has_signature = true;
	}
	if (l->has_signature != l->has_key_id)
		return fail(errbuf, errlen, "end line: a signature needs its key_id and a key_id "
					    "its signature");
	r = audit_canon_encode(end, &l->canon, &l->canon_len);
	if (r < 0)
		return r == -ENOMEM ? r : fail(errbuf, errlen, "end line cannot be encoded");
	l->kind = AUDIT_LINE_END;
	return 0;
}

static int parse_record(struct json_object *o, struct audit_line *l, char *errbuf,
			size_t errlen)
{
	static const char *const record_members[] = { "content", "hash", "prev_hash", "seq",
						      "signature", "time", "type", NULL };
	struct json_object *content, *v, *data;
	uint64_t cseq, ctime, time_ms;
	const char *type, *badkey;
	int r;

	if (!only_members(o, record_members, &badkey))
		return fail(errbuf, errlen, "record line: unknown field \"%s\"", badkey);
	if (!get_uint(o, "seq", &l->seq) || l->seq == 0)
		return fail(errbuf, errlen, "record lacks a positive seq");
	if (!get_uint(o, "time", &time_ms))
		return fail(errbuf, errlen, "record %" PRIu64 " lacks a time", l->seq);
	l->time_ms = (int64_t)time_ms;
	if (!json_object_object_get_ex(o, "type", &v) || !json_object_is_type(v, json_type_string))
		return fail(errbuf, errlen, "record %" PRIu64 " lacks a type", l->seq);
	type = json_object_get_string(v);
	if (!get_hex(o, "prev_hash", l->prev_hash, AUDIT_HASH_SIZE) ||
	    !get_hex(o, "hash", l->hash, AUDIT_HASH_SIZE))
		return fail(errbuf, errlen, "record %" PRIu64 " lacks prev_hash/hash", l->seq);
	if (json_object_object_get_ex(o, "signature", &v)) {
		if (!get_hex(o, "signature", l->signature, AUDIT_SIG_SIZE))
			return fail(errbuf, errlen, "record %" PRIu64 " has a malformed signature",
				    l->seq);
		l->has_signature = true;
	}
	if (!json_object_object_get_ex(o, "content", &content) ||
	    !json_object_is_type(content, json_type_object))
		return fail(errbuf, errlen, "record %" PRIu64 " lacks its content", l->seq);
	if (!get_uint(content, "seq", &cseq) || cseq != l->seq ||
	    !get_uint(content, "time", &ctime) || ctime != time_ms ||
	    !json_object_object_get_ex(content, "type", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), type) != 0 ||
	    !json_object_object_get_ex(content, "data", &data) ||
	    !json_object_is_type(data, json_type_object) || json_object_object_length(content) != 4)
		return fail(errbuf, errlen,
			    "record %" PRIu64 ": content does not match its seq/time/type", l->seq);

	l->type = strdup(type);
	if (!l->type)
		return -ENOMEM;
	r = audit_canon_encode(content, &l->canon, &l->canon_len);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return fail(errbuf, errlen, "record %" PRIu64 ": content cannot be encoded canonically",
			    l->seq);
	l->content = json_object_get(content);
	l->kind = AUDIT_LINE_RECORD;
	return 0;
}

int audit_line_parse(const char *text, size_t len, struct audit_line *ret_line, char *errbuf,
		     size_t errlen)
{
	struct audit_line l = { .kind = _AUDIT_LINE_KIND_MAX };
	struct json_tokener *tok;
	struct json_object *o, *v;
	size_t end, canon_len = 0;
	char *canon = NULL;
	bool same;
	int r;

	if (len > AUDIT_LINE_MAX)
		return fail(errbuf, errlen, "line longer than %d bytes", AUDIT_LINE_MAX);
	if (memchr(text, '\0', len))
		return fail(errbuf, errlen, "line contains a NUL byte");
	tok = json_tokener_new_ex(CANON_DEPTH_MAX + 4);
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, text, (int)len);
	if (!o && json_tokener_get_error(tok) == json_tokener_continue)
		/* A value cut off at the end of the line. */
		o = json_tokener_parse_ex(tok, "", 1);
	end = json_tokener_get_parse_end(tok);
	if (!o || json_tokener_get_error(tok) != json_tokener_success) {
		r = fail(errbuf, errlen, "not valid JSON: %s",
			 json_tokener_error_desc(json_tokener_get_error(tok)));
		json_tokener_free(tok);
		json_object_put(o);
		return r;
	}
	json_tokener_free(tok);
	if (end < len) {
		json_object_put(o);
		return fail(errbuf, errlen, "trailing bytes after the JSON value");
	}
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return fail(errbuf, errlen, "line is not a JSON object");
	}
	/* One spelling only: what json-c kept must encode back to the very same bytes. A
	 * duplicate key (json-c keeps one of them), another key order, spaces or escapes all
	 * fail here. */
	r = audit_canon_encode(o, &canon, &canon_len);
	if (r == -ENOMEM) {
		json_object_put(o);
		return r;
	}
	same = r == 0 && canon_len == len && memcmp(canon, text, len) == 0;
	free(canon);
	if (!same) {
		json_object_put(o);
		return fail(errbuf, errlen, r < 0 || canon_len >= len ?
				    "not canonical JSON (key order, spacing, escapes or numbers "
				    "differ from the one encoding)" :
				    "not canonical JSON (a duplicate key, or spacing)");
	}

	if (json_object_object_get_ex(o, "export", &v))
		r = parse_meta(o, &l, errbuf, errlen);
	else if (json_object_object_get_ex(o, "end", &v))
		r = parse_end(o, &l, errbuf, errlen);
	else
		r = parse_record(o, &l, errbuf, errlen);
	json_object_put(o);
	if (r < 0) {
		audit_line_clear(&l);
		return r;
	}
	*ret_line = l;
	return 0;
}

void audit_line_clear(struct audit_line *line)
{
	if (!line)
		return;
	free(line->type);
	free(line->canon);
	free(line->station);
	free(line->version);
	line->station = NULL;
	line->version = NULL;
	json_object_put(line->content);
	line->type = NULL;
	line->canon = NULL;
	line->content = NULL;
}

int audit_sha256(const void *data, size_t len, uint8_t ret[AUDIT_HASH_SIZE])
{
	unsigned int n = 0;

	return EVP_Digest(data, len, ret, &n, EVP_sha256(), NULL) && n == AUDIT_HASH_SIZE ? 0 :
													    -EIO;
}

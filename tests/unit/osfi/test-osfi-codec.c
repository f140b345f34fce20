/* Certificate, license, header, descriptor and GET_INFO codecs; certificate verification;
 * license sealing and unwrapping. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "osfi.h"

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

/* A P-256 key pair as (private scalar, uncompressed point). */
static EVP_PKEY *gen_p256(uint8_t pub[OSFI_PUBKEY_LEN])
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	size_t n = 0;

	assert_non_null(k);
	assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub,
							 OSFI_PUBKEY_LEN, &n), 1);
	assert_int_equal(n, OSFI_PUBKEY_LEN);
	return k;
}

static void sign_raw(EVP_PKEY *k, const uint8_t *msg, size_t n, uint8_t sig[64])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[80];
	const uint8_t *p = der;
	size_t dlen = sizeof(der);
	ECDSA_SIG *s;

	assert_int_equal(EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, k, NULL), 1);
	assert_int_equal(EVP_DigestSign(md, der, &dlen, msg, n), 1);
	s = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
	assert_non_null(s);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(s), sig, 32), 32);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(s), sig + 32, 32), 32);
	ECDSA_SIG_free(s);
	EVP_MD_CTX_free(md);
}

static void test_cert(void **state)
{
	uint8_t ca_pub[OSFI_PUBKEY_LEN], buf[OSFI_CERT_LEN], again[OSFI_CERT_LEN];
	EVP_PKEY *ca = gen_p256(ca_pub), *chip, *other;
	struct osfi_cert c = { .version = 1, .device_id = 0x484 }, d;
	uint8_t other_pub[OSFI_PUBKEY_LEN];

	chip = gen_p256(c.pubkey);
	other = gen_p256(other_pub);
	fill(c.uid, sizeof(c.uid), 3);
	osfi_cert_encode(&c, buf);
	sign_raw(ca, buf, OSFI_CERT_SIGNED_LEN, c.sig);
	osfi_cert_encode(&c, buf);

	assert_int_equal(osfi_cert_decode(buf, sizeof(buf), &d), 0);
	assert_int_equal(d.device_id, 0x484);
	assert_memory_equal(d.uid, c.uid, OSFI_UID_LEN);
	osfi_cert_encode(&d, again);
	assert_memory_equal(buf, again, OSFI_CERT_LEN);
	assert_memory_equal(buf, "OSC1\x01\x00\x84\x04", 8);
	assert_int_equal(osfi_cert_verify(&d, ca_pub), 0);
	/* Wrong CA, changed UID, changed signature. */
	assert_int_equal(osfi_cert_verify(&d, other_pub), -EKEYREJECTED);
	d.uid[0] ^= 1;
	assert_int_equal(osfi_cert_verify(&d, ca_pub), -EKEYREJECTED);
	d.uid[0] ^= 1;
	d.sig[63] ^= 1;
	assert_int_equal(osfi_cert_verify(&d, ca_pub), -EKEYREJECTED);
	d.sig[63] ^= 1;
	/* A chip key off the curve. */
	d.pubkey[64] ^= 1;
	assert_int_equal(osfi_cert_verify(&d, ca_pub), -EINVAL);
	d.pubkey[64] ^= 1;
	/* A CA key that is no point. */
	ca_pub[0] = 0x02;
	assert_int_equal(osfi_cert_verify(&d, ca_pub), -EINVAL);

	/* Rejections of the decoder. */
	assert_int_equal(osfi_cert_decode(buf, sizeof(buf) - 1, &d), -EMSGSIZE);
	assert_int_equal(osfi_cert_decode(buf, sizeof(buf) + 0, NULL), -EINVAL);
	for (size_t off = 0; off < 6; off++) {
		buf[off] ^= 0x40;
		assert_int_equal(osfi_cert_decode(buf, sizeof(buf), &d), -EBADMSG);
		buf[off] ^= 0x40;
	}
	buf[OSFI_CERT_OFF_PUBKEY] = 0x03;
	assert_int_equal(osfi_cert_decode(buf, sizeof(buf), &d), -EBADMSG);

	EVP_PKEY_free(ca);
	EVP_PKEY_free(chip);
	EVP_PKEY_free(other);
}

static void make_license(struct osfi_license *l, uint8_t kind)
{
	memset(l, 0, sizeof(*l));
	l->kind = kind;
	l->device_id = 0x484;
	l->target = 0;
	fill(l->id, sizeof(l->id), 0x11);
	fill(l->nonce, sizeof(l->nonce), 0x22);
	if (kind == OSFI_LICENSE_KIND_CHIP) {
		fill(l->uid, sizeof(l->uid), 0x33);
		l->hsm_pub[0] = 4;
		fill(l->hsm_pub + 1, 64, 0x44);
		l->counter = 99;
	}
	fill(l->wrapped, sizeof(l->wrapped), 0x55);
}

static void test_license_codec(void **state)
{
	struct osfi_license l, d;
	uint8_t buf[OSFI_LICENSE_LEN], again[OSFI_LICENSE_LEN];

	for (uint8_t kind = 1; kind <= 2; kind++) {
		make_license(&l, kind);
		osfi_license_encode(&l, buf);
		assert_int_equal(osfi_license_decode(buf, sizeof(buf), &d), 0);
		assert_memory_equal(&l, &d, sizeof(l));
		osfi_license_encode(&d, again);
		assert_memory_equal(buf, again, sizeof(buf));
	}
	assert_int_equal(osfi_license_decode(buf, sizeof(buf) + 1, &d), -EMSGSIZE);
	assert_int_equal(osfi_license_decode(buf, 0, &d), -EMSGSIZE);
	/* Magic, version, kind, reserved tail. */
	{
		const size_t offs[] = { 0, 3, 4, 5, 165, 171 };

		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			buf[offs[i]] ^= 0x08;
			assert_int_equal(osfi_license_decode(buf, sizeof(buf), &d), -EBADMSG);
			buf[offs[i]] ^= 0x08;
		}
	}
	/* A global license must name no chip, no HSM and no count. */
	buf[OSFI_LIC_OFF_UID] = 1;
	assert_int_equal(osfi_license_decode(buf, sizeof(buf), &d), -EBADMSG);
	buf[OSFI_LIC_OFF_UID] = 0;
	buf[OSFI_LIC_OFF_HSMPUB + 5] = 1;
	assert_int_equal(osfi_license_decode(buf, sizeof(buf), &d), -EBADMSG);
	buf[OSFI_LIC_OFF_HSMPUB + 5] = 0;
	buf[OSFI_LIC_OFF_COUNTER] = 1;
	assert_int_equal(osfi_license_decode(buf, sizeof(buf), &d), -EBADMSG);
	buf[OSFI_LIC_OFF_COUNTER] = 0;
	assert_int_equal(osfi_license_decode(buf, sizeof(buf), &d), 0);
	/* A chip license must carry the HSM point. */
	make_license(&l, OSFI_LICENSE_KIND_CHIP);
	l.hsm_pub[0] = 0;
	osfi_license_encode(&l, buf);
	assert_int_equal(osfi_license_decode(buf, sizeof(buf), &d), -EBADMSG);
}

static void test_license_crypto(void **state)
{
	uint8_t g[32], key[16], out[16], z[32], z2[32], h1[32], h2[32];
	uint8_t priv_a[32], priv_b[32], pub_a[65], pub_b[65];
	struct osfi_license l, m;
	EVP_PKEY *a, *b;
	BIGNUM *bn = NULL;

	fill(g, sizeof(g), 1);
	fill(key, sizeof(key), 2);
	make_license(&l, OSFI_LICENSE_KIND_GLOBAL);
	assert_int_equal(osfi_license_seal_global(&l, g, key), 0);
	assert_int_equal(osfi_license_unwrap(&l, g, out), 0);
	assert_memory_equal(out, key, 16);

	/* Every KEK input field is bound by the unwrap check. */
	osfi_license_kek_input(&l, h1);
	m = l;
	m.nonce[0] ^= 1;
	osfi_license_kek_input(&m, h2);
	assert_memory_not_equal(h1, h2, 32);
	assert_int_equal(osfi_license_unwrap(&m, g, out), -EKEYREJECTED);
	m = l;
	m.id[31] ^= 1;
	assert_int_equal(osfi_license_unwrap(&m, g, out), -EKEYREJECTED);
	m = l;
	m.target = 7;
	assert_int_equal(osfi_license_unwrap(&m, g, out), -EKEYREJECTED);
	m = l;
	m.device_id = 0x474;
	assert_int_equal(osfi_license_unwrap(&m, g, out), -EKEYREJECTED);
	m = l;
	m.kind = OSFI_LICENSE_KIND_CHIP;
	assert_int_equal(osfi_license_unwrap(&m, g, out), -EKEYREJECTED);
	m = l;
	m.wrapped[3] ^= 1;
	assert_int_equal(osfi_license_unwrap(&m, g, out), -EKEYREJECTED);
	g[0] ^= 1;
	assert_int_equal(osfi_license_unwrap(&l, g, out), -EKEYREJECTED);

	/* Chip licence: ECDH from both sides gives the same Z. */
	a = gen_p256(pub_a);
	b = gen_p256(pub_b);
	assert_int_equal(EVP_PKEY_get_bn_param(a, OSSL_PKEY_PARAM_PRIV_KEY, &bn), 1);
	BN_bn2binpad(bn, priv_a, 32);
	BN_free(bn);
	bn = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(b, OSSL_PKEY_PARAM_PRIV_KEY, &bn), 1);
	BN_bn2binpad(bn, priv_b, 32);
	BN_free(bn);
	assert_int_equal(osfi_ecdh_z(priv_a, pub_b, z), 0);
	assert_int_equal(osfi_ecdh_z(priv_b, pub_a, z2), 0);
	assert_memory_equal(z, z2, 32);
	pub_b[64] ^= 1;
	assert_int_equal(osfi_ecdh_z(priv_a, pub_b, z2), -EINVAL);

	make_license(&l, OSFI_LICENSE_KIND_CHIP);
	assert_int_equal(osfi_license_seal(&l, z, key), 0);
	assert_int_equal(osfi_license_unwrap(&l, z2, out), 0);
	assert_memory_equal(out, key, 16);
	m = l;
	m.uid[0] ^= 1;
	assert_int_equal(osfi_license_unwrap(&m, z, out), -EKEYREJECTED);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
}

static void test_ids(void **state)
{
	/* SHA-256("OSFI-MOD-1" || 07 00 00 00), computed independently. */
	static const uint8_t mod7[32] = {
#include "vector-module7.inc"
	};
	uint8_t id[32], id2[32];

	osfi_module_firmware_id(7, id);
	assert_memory_equal(id, mod7, 32);
	osfi_module_firmware_id(8, id2);
	assert_memory_not_equal(id, id2, 32);
}

static void make_header(struct osfi_header *h)
{
	memset(h, 0, sizeof(*h));
	h->format = 1;
	h->header_len = 64;
	h->device_id = 0x484;
	h->area_count = 2;
	h->total_len = 64 + 2 * 48 + 32;
	h->image_version = 5;
	fill(h->nonce, sizeof(h->nonce), 9);
	fill(h->tag, sizeof(h->tag), 10);
}

static void test_header(void **state)
{
	struct osfi_header h, d;
	uint8_t buf[64], again[64];

	make_header(&h);
	osfi_header_encode(&h, buf);
	assert_int_equal(osfi_header_decode(buf, 64, &d), 0);
	assert_memory_equal(&h, &d, sizeof(h));
	osfi_header_encode(&d, again);
	assert_memory_equal(buf, again, 64);
	assert_memory_equal(buf, "OSFI\x01\x00\x40\x00\x84\x04\x02\x00", 12);

	assert_int_equal(osfi_header_decode(buf, 63, &d), -EMSGSIZE);
	{
		/* magic, format, header length, flags, reserved */
		const size_t offs[] = { 0, 4, 5, 6, 20, 23, 36, 47 };

		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			buf[offs[i]] ^= 0x10;
			assert_int_equal(osfi_header_decode(buf, 64, &d), -EBADMSG);
			buf[offs[i]] ^= 0x10;
		}
	}
	h.area_count = 0;
	osfi_header_encode(&h, buf);
	assert_int_equal(osfi_header_decode(buf, 64, &d), -EBADMSG);
	h.area_count = 4097;
	h.total_len = 0xffffffff;
	osfi_header_encode(&h, buf);
	assert_int_equal(osfi_header_decode(buf, 64, &d), -EBADMSG);
	h.area_count = 3;
	h.total_len = 64 + 3 * 48 - 1; /* too short for its descriptors */
	osfi_header_encode(&h, buf);
	assert_int_equal(osfi_header_decode(buf, 64, &d), -EBADMSG);
}

static void test_desc(void **state)
{
	struct osfi_desc x = { .type = 'F', .version = 2, .index = 1, .total = 3, .size = 1024,
			       .address = 0x08000000 }, d;
	uint8_t buf[48], again[48];

	fill(x.tag, 16, 4);
	osfi_desc_encode(&x, buf);
	assert_int_equal(osfi_desc_decode(buf, 48, &d), 0);
	assert_int_equal(d.type, 'F');
	assert_int_equal(d.version, 2);
	assert_int_equal(d.index, 1);
	assert_int_equal(d.total, 3);
	assert_int_equal(d.size, 1024);
	assert_int_equal(d.address, 0x08000000);
	assert_memory_equal(d.tag, x.tag, 16);
	osfi_desc_encode(&d, again);
	assert_memory_equal(buf, again, 48);
	assert_int_equal(osfi_desc_decode(buf, 47, &d), -EMSGSIZE);
	{
		const size_t offs[] = { 1, 20, 31 };

		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			buf[offs[i]] ^= 1;
			assert_int_equal(osfi_desc_decode(buf, 48, &d), -EBADMSG);
			buf[offs[i]] ^= 1;
		}
	}
	{
		struct osfi_desc bad[] = {
			{ .type = 'X', .index = 1, .total = 1 },
			{ .type = 'F', .index = 0, .total = 1 },
			{ .type = 'F', .index = 2, .total = 1 },
			{ .type = 'F', .index = 1, .total = 0 },
			{ .type = 'F', .index = 1, .total = 1, .module_id = 3 },
			{ .type = 'M', .index = 1, .total = 1, .module_id = 0 },
			{ .type = 'C', .index = 1, .total = 1, .address = 0x08000000 },
			{ .type = 'P', .index = 1, .total = 1, .address = 16 },
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			osfi_desc_encode(&bad[i], buf);
			assert_int_equal(osfi_desc_decode(buf, 48, &d), -EBADMSG);
		}
	}
	x.type = 'M';
	x.module_id = 7;
	osfi_desc_encode(&x, buf);
	assert_int_equal(osfi_desc_decode(buf, 48, &d), 0);
	assert_int_equal(d.module_id, 7);
}

static void test_info(void **state)
{
	struct osfi_info i = { .product_state = 0xed, .osfi_version = 1, .session_state = 2,
			       .ram_buffer = 65536, .last_status = 0x11, .areas_done = 3,
			       .stream_bytes = 4096, .device_id = 0x484 }, d;
	uint8_t buf[OSFI_INFO_LEN], id[OSFI_ID_LEN];
	uint32_t v;

	fill(i.uid, 12, 5);
	osfi_info_encode(&i, buf);
	assert_int_equal(buf[4], 0x00);
	assert_int_equal(buf[6], 0x01);
	assert_int_equal(osfi_info_decode(buf, 64, &d), 0);
	/* No session finalized yet: bytes 32..63 are zero. */
	assert_false(osfi_info_has_installed(&d));
	memset(id, 0, sizeof(id));
	assert_false(osfi_info_installed_is(&d, id));
	assert_int_equal(d.product_state, 0xed);
	assert_int_equal(d.session_state, 2);
	assert_int_equal(d.ram_buffer, 65536);
	assert_int_equal(d.last_status, 0x11);
	assert_int_equal(d.areas_done, 3);
	assert_int_equal(d.stream_bytes, 4096);
	assert_int_equal(d.device_id, 0x484);
	assert_memory_equal(d.uid, i.uid, 12);
	assert_int_equal(osfi_info_decode(buf, 31, &d), -EMSGSIZE);
	assert_int_equal(osfi_info_decode(buf, 33, &d), -EMSGSIZE);
	assert_int_equal(osfi_info_decode(buf, 63, &d), -EMSGSIZE);

	/* The installed image id: bytes 32..63, as they are. */
	fill(id, sizeof(id), 9);
	memcpy(i.installed_id, id, sizeof(id));
	i.session_state = OSFI_SESSION_FINALIZED;
	i.last_status = OSFI_ST_OK;
	osfi_info_encode(&i, buf);
	assert_memory_equal(buf + 32, id, 32);
	assert_int_equal(osfi_info_decode(buf, 64, &d), 0);
	assert_memory_equal(d.installed_id, id, 32);
	assert_true(osfi_info_has_installed(&d));
	assert_true(osfi_info_installed_is(&d, id));
	/* Another image, or a record that is no longer that finalized session: not installed. */
	id[31] ^= 1;
	assert_false(osfi_info_installed_is(&d, id));
	id[31] ^= 1;
	d.session_state = OSFI_SESSION_FAILED;
	assert_false(osfi_info_installed_is(&d, id));
	d.session_state = OSFI_SESSION_FINALIZED;
	d.last_status = OSFI_ST_BAD_STATE;
	assert_false(osfi_info_installed_is(&d, id));
	assert_false(osfi_info_installed_is(NULL, id));
	assert_false(osfi_info_installed_is(&d, NULL));

	/* The short answer of chips without the field: accepted, nothing installed known. */
	assert_int_equal(osfi_info_decode(buf, 32, &d), 0);
	assert_int_equal(d.session_state, OSFI_SESSION_FINALIZED);
	assert_memory_equal(d.uid, i.uid, 12);
	assert_false(osfi_info_has_installed(&d));
	assert_false(osfi_info_installed_is(&d, id));

	buf[3] = 1;
	assert_int_equal(osfi_info_decode(buf, 64, &d), -EBADMSG);
	assert_int_equal(osfi_info_decode(buf, 32, &d), -EBADMSG);
	buf[3] = 0;
	buf[19] = 1;
	assert_int_equal(osfi_info_decode(buf, 32, &d), -EBADMSG);

	osfi_p1_encode(0x01020304, buf);
	assert_memory_equal(buf, "\x04\x03\x02\x01", 4);
	assert_int_equal(osfi_p1_decode(buf, 4, &v), 0);
	assert_int_equal(v, 0x01020304);
	assert_int_equal(osfi_p1_decode(buf, 5, &v), -EMSGSIZE);
}

/* The operator message of every status is the one of docs/protocol.md §6, word for word:
 * whatever a chip answers, the operator reads the failure table's sentence. */
static void test_status_table_is_the_doc(void **state)
{
	const char *root = getenv("SFID_SOURCE_ROOT");
	char path[4096], line[512];
	bool seen[_OSFI_ST_MAX] = { false }, in_table = false;
	FILE *f;

	assert_non_null(root);
	snprintf(path, sizeof(path), "%s/docs/protocol.md", root);
	f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned code;
		char name[64], *msg, *end;
		int n = 0;

		if (strncmp(line, "## ", 3) == 0)
			in_table = strncmp(line, "## 6. Status codes", 18) == 0;
		if (!in_table)
			continue;
		if (sscanf(line, "| 0x%4x | %63[A-Z_] | %n", &code, name, &n) != 2 || n == 0)
			continue;
		msg = line + n;
		end = strstr(msg, " |\n");
		assert_non_null(end);
		*end = '\0';
		assert_true(code < _OSFI_ST_MAX);
		assert_string_equal(osfi_status_name((uint16_t)code), name);
		if (code != OSFI_ST_OK)
			assert_string_equal(osfi_status_message((uint16_t)code), msg);
		seen[code] = true;
	}
	fclose(f);
	for (unsigned code = 0; code < _OSFI_ST_MAX; code++)
		if (!seen[code])
			fail_msg("status 0x%04x is missing from docs/protocol.md §6", code);
}

static void test_status_table(void **state)
{
	for (uint16_t st = 0; st < _OSFI_ST_MAX; st++) {
		assert_non_null(osfi_status_name(st));
		assert_string_not_equal(osfi_status_name(st), "unknown status");
		assert_true(strlen(osfi_status_message(st)) > 5);
	}
	assert_string_equal(osfi_status_name(OSFI_ST_AREA_AUTH), "AREA_AUTH");
	assert_string_equal(osfi_status_name(0x99), "unknown status");
	assert_string_equal(osfi_subop_name(OSFI_OP_PUT_DATA), "PUT_DATA");
	assert_string_equal(osfi_session_state_name(OSFI_SESSION_FINALIZED), "finalized");
	assert_string_equal(osfi_session_state_name(9), "unknown");
	for (int e = OSFI_E_STATUS; e < _OSFI_E_MAX; e++)
		assert_non_null(osfi_strerror(-e));
	for (int s = 0; s < _OSFI_STEP_MAX; s++)
		assert_string_not_equal(osfi_step_to_string((enum osfi_step)s), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cert),	      cmocka_unit_test(test_license_codec),
		cmocka_unit_test(test_license_crypto), cmocka_unit_test(test_ids),
		cmocka_unit_test(test_header),	      cmocka_unit_test(test_desc),
		cmocka_unit_test(test_info),	      cmocka_unit_test(test_status_table),
		cmocka_unit_test(test_status_table_is_the_doc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

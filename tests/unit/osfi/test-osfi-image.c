/* Image building, parsing and authentication; the test vectors of docs/protocol.md §9. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "osfi.h"
#include "osfi-util.h"
#include "vectors.h"

static const uint8_t vec_options[8] = { 1, 0, 0, 0, 0x00, 0x72, 0, 0 };

static void build_vector(uint8_t **ret, size_t *ret_len)
{
	struct osfi_area_spec areas[] = {
		{ .type = 'F', .address = 0x08000000, .data = vec_firmware,
		  .size = sizeof(vec_firmware) },
		{ .type = 'C', .data = vec_options, .size = sizeof(vec_options) },
	};
	struct osfi_image_spec spec = { .device_id = 0x484, .image_version = 1, .key = vec_key,
					.max_area = 64, .areas = areas, .n_areas = 2 };

	memcpy(spec.nonce, vec_nonce, sizeof(spec.nonce));
	assert_int_equal(osfi_image_build(&spec, ret, ret_len), 0);
}

static void test_vector_image(void **state)
{
	struct osfi_image *img;
	uint8_t *buf, digest[32], plain[64];
	size_t len;
	unsigned bad = 99;

	build_vector(&buf, &len);
	assert_int_equal(len, sizeof(vec_image));
	assert_memory_equal(buf, vec_image, len);
	SHA256(buf, len, digest);
	assert_memory_equal(digest, vec_image_sha256, 32);

	assert_int_equal(osfi_image_parse(buf, len, &img, NULL, 0), 0);
	assert_memory_equal(img->id, vec_image_id, 32);
	assert_int_equal(img->n_areas, 3);
	assert_int_equal(img->max_area, 64);
	assert_int_equal(img->areas[1].desc.address, 0x08000040);
	assert_int_equal(img->areas[1].desc.size, 48);
	assert_int_equal(img->areas[2].desc.type, 'C');
	assert_int_equal(osfi_image_authenticate(img, vec_key, NULL, 0, &bad), 0);
	assert_int_equal(osfi_area_decrypt(buf, buf + img->areas[0].desc_off, vec_key,
					   buf + img->areas[0].data_off, 64, plain), 0);
	assert_memory_equal(plain, vec_firmware, 64);

	/* Any flipped byte is caught: header -> 0, else the area that holds it. */
	for (size_t off = 0; off < len; off++) {
		struct osfi_image *t;
		unsigned expect = 0;

		buf[off] ^= 0x01;
		if (osfi_image_parse(buf, len, &t, NULL, 0) == 0) {
			for (size_t i = 0; i < t->n_areas; i++)
				if (off >= t->areas[i].desc_off)
					expect = t->areas[i].desc.index;
			if (off < OSFI_HEADER_LEN)
				expect = 0;
			bad = 99;
			assert_int_equal(osfi_image_authenticate(t, vec_key, NULL, 0, &bad),
					 -EBADMSG);
			assert_int_equal(bad, expect);
			osfi_image_free(t);
		}
		buf[off] ^= 0x01;
	}
	{
		uint8_t wrong[16];

		memcpy(wrong, vec_key, 16);
		wrong[0] ^= 1;
		assert_int_equal(osfi_image_authenticate(img, wrong, NULL, 0, &bad), -EBADMSG);
		assert_int_equal(bad, 0);
	}
	osfi_image_free(img);
	free(buf);
}

static void test_vector_licenses(void **state)
{
	struct osfi_license l;
	uint8_t out[OSFI_LICENSE_LEN], key[16], z[32];

	memset(&l, 0, sizeof(l));
	l.kind = OSFI_LICENSE_KIND_GLOBAL;
	l.device_id = 0x484;
	memcpy(l.id, vec_image_id, 32);
	memcpy(l.nonce, vec_license_nonce, 16);
	assert_int_equal(osfi_license_seal_global(&l, vec_global_key, vec_key), 0);
	osfi_license_encode(&l, out);
	assert_memory_equal(out, vec_global_license, sizeof(out));
	assert_int_equal(osfi_license_unwrap(&l, vec_global_key, key), 0);
	assert_memory_equal(key, vec_key, 16);

	/* Chip side: Z from the chip's private key and the HSM point; HSM side the reverse. */
	assert_int_equal(osfi_ecdh_z(vec_chip_priv, vec_hsm_pub, z), 0);
	assert_memory_equal(z, vec_z, 32);
	assert_int_equal(osfi_ecdh_z(vec_hsm_priv, vec_chip_pub, z), 0);
	assert_memory_equal(z, vec_z, 32);
	memset(&l, 0, sizeof(l));
	l.kind = OSFI_LICENSE_KIND_CHIP;
	l.device_id = 0x484;
	memcpy(l.uid, vec_uid, 12);
	memcpy(l.id, vec_image_id, 32);
	memcpy(l.nonce, vec_license_nonce, 16);
	memcpy(l.hsm_pub, vec_hsm_pub, 65);
	l.counter = VEC_COUNTER;
	assert_int_equal(osfi_license_seal(&l, z, vec_key), 0);
	osfi_license_encode(&l, out);
	assert_memory_equal(out, vec_chip_license, sizeof(out));
	assert_int_equal(osfi_license_decode(vec_chip_license, sizeof(vec_chip_license), &l), 0);
	assert_int_equal(osfi_license_unwrap(&l, vec_z, key), 0);
	assert_memory_equal(key, vec_key, 16);
}

static void test_iv(void **state)
{
	uint8_t n[12], iv[12];

	memset(n, 0xaa, 8);
	osfi_put_le32(n + 8, 0xfffffffe);
	osfi_area_iv(n, 3, iv);
	assert_memory_equal(iv, n, 8);
	assert_int_equal(osfi_get_le32(iv + 8), 1); /* wraps mod 2^32 */
}

static void test_build_rules(void **state)
{
	uint8_t key[16] = { 1 }, data[64] = { 0 }, *buf;
	size_t len;
	struct osfi_area_spec a[3];
	struct osfi_image_spec spec = { .device_id = 0x484, .key = key, .areas = a };

	memset(a, 0, sizeof(a));
	a[0] = (struct osfi_area_spec){ .type = 'F', .address = 0x08000000, .data = data,
					.size = 64 };
	a[1] = (struct osfi_area_spec){ .type = 'C', .data = vec_options, .size = 8 };
	a[2] = a[0];
	a[2].address = 0x08001000;
	/* C not last. */
	spec.n_areas = 3;
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -EINVAL);
	/* Outside flash; unaligned; module without id; id on firmware; OTP for F. */
	spec.n_areas = 1;
	a[0].address = 0x08200000;
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -ERANGE);
	a[0].address = 0x08000008;
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -EINVAL);
	a[0].address = 0x08fff000;
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -ERANGE);
	a[0].type = 'K';
	assert_int_equal(osfi_image_build(&spec, &buf, &len), 0);
	free(buf);
	a[0].address = 0x08fff800; /* UID, not OTP */
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -ERANGE);
	a[0].address = 0x0ffd0000;
	assert_int_equal(osfi_image_build(&spec, &buf, &len), 0);
	free(buf);
	a[0].type = 'M';
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -EINVAL);
	a[0].type = 'P';
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -EINVAL);
	/* Too many areas after splitting. */
	a[0] = (struct osfi_area_spec){ .type = 'F', .address = 0x08000000, .data = data,
					.size = 64 };
	spec.max_area = 8;
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -EINVAL);
	spec.max_area = 0;
	spec.n_areas = 0;
	assert_int_equal(osfi_image_build(&spec, &buf, &len), -EINVAL);
}

static void test_module_and_split(void **state)
{
	uint8_t key[16] = { 1 }, mkey[16] = { 2 }, *fw, *buf;
	size_t len, fwlen = 100000;
	struct osfi_image *img;
	struct osfi_module_key mk = { .module_id = 7 };
	unsigned bad = 0;

	fw = malloc(fwlen);
	for (size_t i = 0; i < fwlen; i++)
		fw[i] = (uint8_t)(i * 13);
	memcpy(mk.key, mkey, 16);
	struct osfi_area_spec a[] = {
		{ .type = 'F', .address = 0x08000000, .data = fw, .size = fwlen },
		{ .type = 'M', .address = 0x08100000, .module_id = 7, .data = fw, .size = 5000,
		  .key = mkey },
		{ .type = 'C', .data = vec_options, .size = 8 },
	};
	struct osfi_image_spec spec = { .device_id = 0x484, .key = key, .max_area = 16384,
					.areas = a, .n_areas = 3 };

	assert_int_equal(osfi_image_build(&spec, &buf, &len), 0);
	assert_int_equal(osfi_image_parse(buf, len, &img, NULL, 0), 0);
	assert_int_equal(img->n_areas, 7 + 1 + 1);
	assert_int_equal(img->max_area, 16384);
	assert_int_equal(img->areas[6].desc.size, 100000 - 6 * 16384);
	assert_true(osfi_image_has_module(img, 7));
	assert_false(osfi_image_has_module(img, 8));
	assert_int_equal(osfi_image_authenticate(img, key, NULL, 0, &bad), -ENOKEY);
	assert_int_equal(bad, 8);
	assert_int_equal(osfi_image_authenticate(img, key, &mk, 1, &bad), 0);
	mk.key[0] ^= 1;
	assert_int_equal(osfi_image_authenticate(img, key, &mk, 1, &bad), -EBADMSG);
	assert_int_equal(bad, 8);
	osfi_image_free(img);
	free(buf);
	free(fw);
}

/* Rebuilds descriptors by hand to reach every parser rejection. */
static void test_parse_rejections(void **state)
{
	uint8_t *buf, *copy;
	size_t len;
	struct osfi_image *img;
	char why[160];

	build_vector(&buf, &len);
	copy = malloc(len + 16);

	/* Truncated, extended, total mismatch. */
	assert_int_equal(osfi_image_parse(buf, 10, &img, why, sizeof(why)), -EBADMSG);
	assert_int_equal(osfi_image_parse(buf, len - 1, &img, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "announces"));
	memcpy(copy, buf, len);
	memset(copy + len, 0, 16);
	osfi_put_le32(copy + OSFI_HDR_OFF_TOTAL, (uint32_t)len + 16);
	assert_int_equal(osfi_image_parse(copy, len + 16, &img, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "follow"));

	/* Index out of order. */
	memcpy(copy, buf, len);
	osfi_put_le16(copy + 64 + OSFI_DESC_OFF_INDEX, 2);
	assert_int_equal(osfi_image_parse(copy, len, &img, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "area 1"));
	/* Size past the end. */
	memcpy(copy, buf, len);
	osfi_put_le32(copy + 64 + OSFI_DESC_OFF_SIZE, 0x10000);
	assert_int_equal(osfi_image_parse(copy, len, &img, why, sizeof(why)), -EBADMSG);
	/* Second area overlapping the first. */
	memcpy(copy, buf, len);
	osfi_put_le32(copy + 64 + 48 + 64 + OSFI_DESC_OFF_ADDR, 0x08000030);
	assert_int_equal(osfi_image_parse(copy, len, &img, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "overlaps"));
	/* Outside flash. */
	osfi_put_le32(copy + 64 + 48 + 64 + OSFI_DESC_OFF_ADDR, 0x20000000);
	assert_int_equal(osfi_image_parse(copy, len, &img, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "destination"));
	/* C not last: swap the type letters of areas 2 and 3 (sizes differ: C of 48 bytes is
	 * a valid length, F of 8 bytes is not aligned... make area 2 a C). */
	memcpy(copy, buf, len);
	copy[64 + 48 + 64] = 'C';
	osfi_put_le32(copy + 64 + 48 + 64 + OSFI_DESC_OFF_ADDR, 0);
	assert_int_equal(osfi_image_parse(copy, len, &img, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "not the last"));
	/* Bad header. */
	memcpy(copy, buf, len);
	copy[0] = 'X';
	assert_int_equal(osfi_image_parse(copy, len, &img, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "header"));
	/* Malformed descriptor. */
	memcpy(copy, buf, len);
	copy[64 + 1] = 1;
	assert_int_equal(osfi_image_parse(copy, len, &img, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "malformed"));
	/* Total areas differs from the header. */
	memcpy(copy, buf, len);
	osfi_put_le16(copy + 64 + OSFI_DESC_OFF_TOTAL, 4);
	assert_int_equal(osfi_image_parse(copy, len, &img, why, sizeof(why)), -EBADMSG);

	free(copy);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vector_image),	 cmocka_unit_test(test_vector_licenses),
		cmocka_unit_test(test_iv),		 cmocka_unit_test(test_build_rules),
		cmocka_unit_test(test_module_and_split), cmocka_unit_test(test_parse_rejections),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Fuzzes the fixed-record decoders: certificate (and its verification), license, header,
 * descriptor, GET_INFO answer and option records; each accepted record must re-encode to the
 * same bytes. The first byte selects the decoder. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "osfi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[OSFI_LICENSE_LEN];
	const uint8_t *p = data + 1;
	size_t n = size - 1;

	if (size < 1)
		return 0;
	switch (data[0] % 6) {
	case 0: {
		struct osfi_cert c;

		if (osfi_cert_decode(p, n, &c) == 0) {
			osfi_cert_encode(&c, out);
			if (memcmp(out, p, OSFI_CERT_LEN) != 0)
				abort();
			/* The certificate's own key doubles as a (wrong) CA key. */
			(void)osfi_cert_verify(&c, c.pubkey);
		}
		break;
	}
	case 1: {
		struct osfi_license l;
		uint8_t z[32] = { 0 }, key[OSFI_KEY_LEN];

		if (osfi_license_decode(p, n, &l) == 0) {
			osfi_license_encode(&l, out);
			if (memcmp(out, p, OSFI_LICENSE_LEN) != 0)
				abort();
			(void)osfi_license_unwrap(&l, z, key);
		}
		break;
	}
	case 2: {
		struct osfi_header h;

		if (osfi_header_decode(p, n, &h) == 0) {
			osfi_header_encode(&h, out);
			if (memcmp(out, p, OSFI_HEADER_LEN) != 0)
				abort();
		}
		break;
	}
	case 3: {
		struct osfi_desc d;

		if (osfi_desc_decode(p, n, &d) == 0) {
			osfi_desc_encode(&d, out);
			if (memcmp(out, p, OSFI_DESC_LEN) != 0)
				abort();
		}
		break;
	}
	case 4: {
		struct osfi_info i;

		if (osfi_info_decode(p, n, &i) == 0) {
			osfi_info_encode(&i, out);
			if (memcmp(out, p, n) != 0)
				abort();
		}
		break;
	}
	case 5: {
		struct osfi_option o[OSFI_OPT_MAX];
		size_t k;

		if (osfi_options_decode(p, n, o, OSFI_OPT_MAX, &k) == 0) {
			if (osfi_options_encode(o, k, out, sizeof(out)) != (int)n ||
			    memcmp(out, p, n) != 0)
				abort();
		}
		break;
	}
	}
	return 0;
}

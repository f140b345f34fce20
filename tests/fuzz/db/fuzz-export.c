/* Fuzzes what sfi-audit reads: the export line parser, the canonical re-encoding and the
 * whole verifier (one export, and the input cut in two at its first form feed as two
 * consecutive exports) and report over an arbitrary export. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit-format.h"
#include "audit-verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct verify_result *res;
	struct audit_line l = { 0 };
	char err[256];
	FILE *in, *out;

	if (size > 1 << 20)
		return 0;
	if (audit_line_parse((const char *)data, size, &l, err, sizeof(err)) == 0)
		audit_line_clear(&l);

	res = calloc(1, sizeof(*res));
	in = fmemopen((void *)data, size, "r");
	if (res && in)
		audit_verify_stream(in, NULL, res);
	if (in)
		fclose(in);
	free(res);

	{
		const uint8_t *ff = memchr(data, '\f', size);
		size_t a = ff ? (size_t)(ff - data) : size / 2;
		FILE *ins[2];

		res = calloc(1, sizeof(*res));
		static char empty[1];

		ins[0] = a ? fmemopen((void *)data, a, "r") : fmemopen(empty, 1, "r");
		ins[1] = size - a ? fmemopen((void *)(data + a), size - a, "r") :
				    fmemopen(empty, 1, "r");
		if (res && ins[0] && ins[1])
			audit_verify_streams(ins, 2, NULL, res);
		for (int i = 0; i < 2; i++)
			if (ins[i])
				fclose(ins[i]);
		free(res);
	}

	in = fmemopen((void *)data, size, "r");
	out = fopen("/dev/null", "we");
	if (in && out)
		audit_report_stream(in, out, (enum report_format)(size % _REPORT_FORMAT_MAX), NULL,
				    err, sizeof(err));
	if (in)
		fclose(in);
	if (out)
		fclose(out);
	return 0;
}

/* Fuzzes what sfi-audit reads: the export line parser, the canonical re-encoding and the
 * whole verifier and report over an arbitrary export. */
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

	in = fmemopen((void *)data, size, "r");
	out = fopen("/dev/null", "we");
	if (in && out)
		audit_report_stream(in, out, size & 1, err, sizeof(err));
	if (in)
		fclose(in);
	if (out)
		fclose(out);
	return 0;
}

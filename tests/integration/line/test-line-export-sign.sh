#!/usr/bin/env bash
# The token fails the signature of an export's end (C_SignInit, injected by the PKCS#11 fault
# library): sfictl export fails with the reason and writes no file, since an end the station
# did not sign cannot be told from a cut export. With the token answering again the export
# is written and verifies.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-export-sign.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM
FAULT=$BUILD/tests/faults/libsfid-pkcs11-fault.so
[ -f "$FAULT" ] || line_fail "the PKCS#11 fault library $FAULT is not built"

line_setup_pki 5 16
line_start_emu 1 1
line_write_config 1
sed -i "s|^module = .*|module = $FAULT|" "$tmp/sfid.conf"
printf 'module = %s\nfunction = C_SignInit\nrv = 0x30\nrepeat = yes\narm_file = %s\n' \
	"$SOFTHSM_MODULE" "$tmp/arm" >"$tmp/fault.conf"
export SFID_FAULT_PKCS11=$tmp/fault.conf
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count 1 >/dev/null
ctl start >/dev/null
wait_for 120 "the chip's result" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 1

printf 'nth = 1\n' >"$tmp/arm"
set +e
ctl export --format jsonl --out "$tmp/cut.jsonl" >/dev/null 2>"$tmp/err"
rc=$?
set -e
[ "$rc" -ne 0 ] || line_fail "the export succeeded although its end could not be signed"
grep -q "did not sign the end of the export" "$tmp/err" ||
	line_fail "no reason given: $(cat "$tmp/err")"
[ ! -e "$tmp/cut.jsonl" ] || line_fail "a file was left: $(wc -c <"$tmp/cut.jsonl") bytes"

rm -f "$tmp/arm"
ctl export --format jsonl --out "$tmp/audit.jsonl" >/dev/null || line_fail "the export after the fault"
"$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$tmp/pki/pin" --out "$tmp/audit.pem" >/dev/null
"$SFIAUDIT" verify "$tmp/audit.jsonl" --pubkey "$tmp/audit.pem" >"$tmp/verify.out" ||
	line_fail "the export does not verify: $(cat "$tmp/verify.out")"
echo "an export whose end the token did not sign was refused, with the reason; the next one verifies"

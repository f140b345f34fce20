#!/usr/bin/env bash
# OpenSC's module (production default) loads; with no reader or no pcscd it reports
# "no token present" as one clear line and exit code 3, within the time bound.
set -euo pipefail
: "${SFI_HSM:?}" "${OPENSC_MODULE:?}"
[ -r "$OPENSC_MODULE" ] || { echo "OpenSC module missing: skipped"; exit 77; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sfid-opensc-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
printf '1234\n' >"$WORK/pin"
chmod 600 "$WORK/pin"
rc=0
timeout 60 "$SFI_HSM" info --module "$OPENSC_MODULE" --token "SFI-TEST-NO-SUCH-CARD" \
	--pin-file "$WORK/pin" 2>"$WORK/err" || rc=$?
cat "$WORK/err"
[ "$rc" = 3 ] || { echo "FAIL: exit $rc, want 3"; exit 1; }
grep -q "no token present" "$WORK/err" || { echo "FAIL: message"; exit 1; }
[ "$(wc -l <"$WORK/err")" = 1 ] || { echo "FAIL: not one line"; exit 1; }

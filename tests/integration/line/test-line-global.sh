#!/usr/bin/env bash
# A job with a global (uncounted) license: every chip is installed with the same license,
# the token's counter does not move and the ledger holds no license; a global license made
# for another image is refused at job load.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-global.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 10 16
"$SFIPACK" license --global --global-key "$tmp/pki/global.key" --key "$tmp/pki/image.key" \
	--image "$tmp/pki/demo.sfi" --out "$tmp/pki/global.lic" >/dev/null
# Another image (same key, other nonce) and its global license.
"$SFIPACK" create --out "$tmp/pki/other.sfi" --firmware "$tmp/pki/firmware.bin@0x08000000" \
	--options "$tmp/pki/options.csv" --key "$tmp/pki/image.key" >/dev/null
"$SFIPACK" license --global --global-key "$tmp/pki/global.key" --key "$tmp/pki/image.key" \
	--image "$tmp/pki/other.sfi" --out "$tmp/pki/other.lic" >/dev/null
before=$(line_counter)
line_start_emu 2 2 --auto-swap 200
line_write_config 2
line_start_sfid

set +e
ctl job load "$tmp/pki/demo.sfi" --global-license "$tmp/pki/other.lic" >/dev/null 2>"$tmp/err"
rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "made for another image" "$tmp/err" ||
	line_fail "a global license for another image: exit $rc, $(cat "$tmp/err")"

ctl job load "$tmp/pki/demo.sfi" --global-license "$tmp/pki/global.lic" --count 4 |
	grep -q "global (uncounted)" || line_fail "job show does not say global"
ctl start >/dev/null
# The database, not watch: watch counts the results after it connects, and on a slow
# (sanitized) build the first chips can finish before it does.
wait_for 120 "4 results" sql_is "SELECT count(*) FROM attempts WHERE result <> 'running'" 4
line_skip_without_xspecial
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")" -eq 4 ] ||
	line_fail "$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'") of 4 installed"
[ "$(sql "SELECT count(*) FROM licenses")" -eq 0 ] || line_fail "global installs entered the ledger"
[ "$(line_counter)" -eq "$before" ] || line_fail "the counter moved: $before -> $(line_counter)"
echo "4 chips installed with one global license, counter unchanged at $before"

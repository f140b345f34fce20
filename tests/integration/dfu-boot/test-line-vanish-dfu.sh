#!/usr/bin/env bash
# A DFU chip unplugged in the middle of its install (h5emu fault: the device goes away while
# a PUT_DATA DNLOAD is in flight, back 500 ms later at a new device number): the attempt is
# recorded failed with its license issued-not-installed; when the chip is back on the same
# port path the slot finds it, reuses that license and installs it, one count in all.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-vanish-dfu.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 10 64
before=$(line_counter)
# alt 3 is the OSFI alternate; its 15th DNLOAD is a PUT_DATA (after GET_INFO twice,
# GET_CERT, PUT_LICENSE and PUT_HEADER).
line_start_emu 1 1 --transport both --fault dfu=dnload,chip=0,alt=3,nth=15,once,action=unplug:500
{
	printf '[station]\nname = test-vanish-dfu\n'
	printf '[hsm]\nmodule = %s\ntoken = %s\npin_file = %s\n' "$SOFTHSM_MODULE" \
		"$TOKEN_LABEL" "$tmp/pki/pin"
	printf '[database]\npath = %s\n' "$tmp/sfid.db"
	printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
		"$tmp/sfid.sock"
	printf '[limits]\nshutdown_timeout_ms = 5000\n'
	printf '[slot D0]\nport = dfu:usb:2-1.1\npoll_ms = 100\nreopen_ms = 200\nack_timeout_ms = 3000\n'
} >"$tmp/sfid.conf"
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count 1 >/dev/null
ctl start >/dev/null
wait_for 120 "the chip installed" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 1

row=$(sql "SELECT step || '|' || result FROM attempts WHERE result <> 'ok'")
[ "$row" = "installing|failed" ] ||
	line_fail "the unplugged attempt is recorded as '$row', expected installing|failed"
grep -q 'slot D0 .*\(gone\|disappeared\)' "$tmp/sfid.log" ||
	line_fail "sfid did not log the device going away: $(tail -n 20 "$tmp/sfid.log")"
[ "$(sql "SELECT count(DISTINCT chip_uid) FROM attempts")" -eq 1 ] ||
	line_fail "the attempts name more than one chip"
[ "$(sql "SELECT count(*) FROM licenses")" -eq 1 ] ||
	line_fail "$(sql "SELECT count(*) FROM licenses") licenses issued for one chip"
[ "$(sql "SELECT state FROM licenses")" = installed ] ||
	line_fail "the license is not recorded installed"
[ "$(sql "SELECT count(*) FROM license_uses WHERE reused = 1")" -eq 1 ] ||
	line_fail "the second attempt did not record a license reuse"
after=$(line_counter)
[ $((before - after)) -eq 1 ] || line_fail "counter went $before -> $after for one chip"
echo "DFU chip unplugged mid-install came back, reused its license, counter $before -> $after"

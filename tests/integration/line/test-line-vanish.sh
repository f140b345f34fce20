#!/usr/bin/env bash
# A chip's adapter vanishes mid-install (h5emu control `unplug`): the attempt is recorded as
# failed at the installing step with its license issued-not-installed, the other slot carries
# on; plugged back, the same chip reuses its license and succeeds without a second count.
# The chips need the bootloader entry sequence (DTR/RTS) to answer at all.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-vanish.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 10 64
before=$(line_counter)
# The chips boot their application unless the fixture's DTR/RTS select the bootloader:
# sfid runs the slot's entry sequence before each presence poll.
line_start_emu 2 1 --baud 115200 --require-entry
line_write_config 2 'entry = rts=1,dtr=1,wait=20,dtr=0,wait=50\n'
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 30 "slot S0 installing" slot_in S0 installing
line_skip_without_xspecial
sleep 1
emu_ctl unplug 0 >/dev/null
wait_for 15 "slot S0 to lose its port" slot_in S0 no-port
[ "$(slot_state S1)" = installing ] || [ "$(slot_state S1)" = finalizing ] ||
	[ "$(slot_state S1)" = verifying ] || [ "$(slot_state S1)" = waiting-for-removal ] ||
	line_fail "slot S1 was disturbed: $(slot_state S1)"

row=$(sql "SELECT a.step || '|' || a.result || '|' || l.state FROM attempts a
	   JOIN licenses l ON l.attempt_id = a.id WHERE a.slot = 'S0'")
[ "$row" = "installing|failed|issued_not_installed" ] ||
	line_fail "vanished chip recorded as '$row', expected installing|failed|issued_not_installed"
uid=$(sql "SELECT chip_uid FROM attempts WHERE slot = 'S0'")

emu_ctl plug 0 >/dev/null
wait_for 60 "both chips installed" \
	sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 2
[ "$(sql "SELECT count(*) FROM licenses")" -eq 2 ] ||
	line_fail "$(sql "SELECT count(*) FROM licenses") licenses issued for 2 chips"
[ "$(sql "SELECT state FROM licenses WHERE chip_uid = '$uid'")" = installed ] ||
	line_fail "the reused license is not recorded installed"
[ "$(sql "SELECT count(*) FROM license_uses WHERE reused = 1")" -eq 1 ] ||
	line_fail "the second attempt did not record a license reuse"
after=$(line_counter)
[ $((before - after)) -eq 2 ] || line_fail "counter went $before -> $after for 2 chips"
ctl history | grep "license reused" >/dev/null || line_fail "history does not show the reuse"
echo "vanished chip failed at installing, reused its license, counter $before -> $after"

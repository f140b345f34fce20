#!/usr/bin/env bash
# 8 slots x 3 chips on umockdev adapters bound by adapter serial number: all 24 chips end
# Closed with the firmware in flash, the database holds 24 successes and 24 installed
# licenses, the token counter is exactly 24 lower, and the exported trail verifies offline.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-line24.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 100 64
before=$(line_counter)
line_start_emu 8 3 --auto-swap 200
line_write_config 8
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count 24 >/dev/null
ctl start >/dev/null
# The database, not watch: watch counts the results after it connects, and on a slow
# (sanitized) build the first chips can finish before it does.
wait_for 240 "24 results" sql_is "SELECT count(*) FROM attempts WHERE result <> 'running'" 24
line_skip_without_xspecial

ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
failed=$(sql "SELECT count(*) FROM attempts WHERE result = 'failed'")
chips=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
installed=$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")
others=$(sql "SELECT count(*) FROM licenses WHERE state <> 'installed'")
[ "$ok" -eq 24 ] || line_fail "$ok successful attempts in the database, expected 24 ($failed failed)"
[ "$chips" -eq 24 ] || line_fail "$chips distinct chips succeeded, expected 24"
[ "$installed" -eq 24 ] && [ "$others" -eq 0 ] ||
	line_fail "licenses: $installed installed, $others in other states; expected 24 and 0"
after=$(line_counter)
[ $((before - after)) -eq 24 ] || line_fail "counter went $before -> $after, expected 24 fewer"
for s in $(seq 0 7); do
	n=$(sql "SELECT count(*) FROM attempts WHERE slot = 'S$s' AND result = 'ok'")
	[ "$n" -eq 3 ] || line_fail "slot S$s installed $n chips, expected 3"
done

line_export_verify
grep -q "24 spent, 24 installed" "$tmp/verify.out" ||
	line_fail "the export does not account 24 installed licenses: $(cat "$tmp/verify.out")"

# The emulator writes chip state at exit: flash content and product state of every chip.
line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
n=$(check_chips_programmed "$tmp/emu-state")
[ "$n" -eq 24 ] || line_fail "$n chips hold the firmware and are Closed, expected 24"
echo "24 chips installed on 8 slots, counter $before -> $after, export verified"

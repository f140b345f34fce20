#!/usr/bin/env bash
# sfid is SIGKILLed while 8 slots install: after a restart the ledger reconciles with the
# token (no license lost, none spent twice), the interrupted chips finish reusing their
# licenses, and a SIGTERM in the middle of installs ends bounded with nothing left reserved.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-kill.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

installing() {
	[ "$(ctl --json status | grep -o '"state": *"installing"' | wc -l)" -ge "$1" ]
}

line_setup_pki 100 32
before=$(line_counter)
line_start_emu 8 2 --baud 115200 --auto-swap 200
line_write_config 8
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 60 "8 slots installing" installing 8
line_skip_without_xspecial
line_kill_sfid
issued_at_kill=$(sql "SELECT count(*) FROM licenses WHERE state IN ('issued', 'reserved')")
[ "$issued_at_kill" -ge 1 ] || line_fail "no license was in flight when sfid was killed"

line_start_sfid
line_no_unrecorded
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'reserved'")" -eq 0 ] ||
	line_fail "a reservation is still open after the restart"
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 120 "16 chips installed" \
	sql_is "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'" 16

twice=$(sql "SELECT count(*) FROM (SELECT chip_uid FROM licenses WHERE state <> 'void'
	     GROUP BY chip_uid HAVING count(*) > 1)")
[ "$twice" -eq 0 ] || line_fail "$twice chips hold two counted licenses"
counted=$(sql "SELECT count(*) FROM licenses WHERE state <> 'void'")
after=$(line_counter)
[ $((before - after)) -eq "$counted" ] ||
	line_fail "token spent $((before - after)), the ledger records $counted"
[ "$counted" -eq 16 ] || line_fail "$counted licenses for 16 chips"
reused=$(sql "SELECT count(*) FROM license_uses WHERE reused = 1")
[ "$reused" -ge 1 ] || line_fail "no interrupted chip reused its license"

# The same (now Closed) chips put back: recognised at identification as holding the job's
# image (not failures), nothing spent.
line_stop_pid "$emu_pid"
emu_pid=
line_start_emu 8 1
line_stop_pid "$sfid_pid"
sfid_pid=
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
refused="SELECT count(*) FROM attempts WHERE result = 'failed' AND step = 'identifying'
	 AND error_code = 3 AND error_text LIKE '%already holds the job''s image%'"
wait_for 30 "8 programmed chips recognised" sql_is "$refused" 8
[ "$(line_counter)" -eq "$after" ] || line_fail "recognising programmed chips spent licenses"
ctl stop >/dev/null

# SIGTERM during installs: bounded exit, every license settled.
line_stop_pid "$emu_pid"
emu_pid=
EMU_STATE=$tmp/emu-state-2 line_start_emu 8 1 --baud 115200
line_stop_pid "$sfid_pid"
sfid_pid=
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 60 "slots installing again" installing 4
start=$(date +%s)
line_stop_pid "$sfid_pid"
sfid_pid=
[ $(($(date +%s) - start)) -le 12 ] || line_fail "SIGTERM took more than 12 s"
open=$(sql "SELECT count(*) FROM licenses WHERE state IN ('reserved', 'issued')")
[ "$open" -eq 0 ] || line_fail "$open licenses left reserved or issued after SIGTERM"
grep -q "finishing chips in progress" "$tmp/sfid.log" || line_fail "no shutdown message"
echo "kill/restart: $counted licenses for 16 chips, $reused reused; SIGTERM settled everything"

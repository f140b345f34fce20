#!/usr/bin/env bash
# A finished chip is recorded installed whatever happens to FINALIZE's answer or to sfid:
# - FINALIZE's answer dropped, garbled or corrupted (h5emu faults) on four chips: sfid
#   resyncs, asks the chip (GET_INFO), finds it finalized with the job's image, and records
#   the attempt ok and the license installed; a chip whose FINALIZE was refused (not run)
#   fails at finalizing, its license issued-not-installed;
# - sfid killed (SIGKILL) while FINALIZE's answer is on its way: at the next start the
#   running attempt is closed as interrupted, its license kept for the chip; started again,
#   the chip still in its slot shows the image installed and is recorded installed.
# - the same with a job whose license is global (no ledger row): the attempt that reached
#   FINALIZE ties the chip to the job, so it is on disk before FINALIZE is sent (the
#   database held by another writer while the chip installs).
# After each: chips the emulator holds finalized with the job's image = attempts ok =
# licenses installed, and every spent license is installed or not installed; the exported
# trail verifies.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-finalize.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

# invariant: the emulator's finalized chips, the ok attempts and the installed licenses
# agree; no license is left issued, reserved or unconfirmed.
invariant() {
	local image finalized=0 ok installed open f
	image=$(sql "SELECT image_id FROM jobs ORDER BY id DESC LIMIT 1")
	for f in "$tmp"/emu-state*/chip*/osfi.session; do
		[ -f "$f" ] || continue
		grep -qx "state=4" "$f" && grep -qx "installed=$image" "$f" && finalized=$((finalized + 1))
	done
	ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
	installed=$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")
	open=$(sql "SELECT count(*) FROM licenses WHERE state NOT IN ('installed', 'issued_not_installed')")
	[ "$finalized" -eq "$ok" ] && [ "$ok" -eq "$installed" ] && [ "$open" -eq 0 ] ||
		line_fail "$1: $finalized chips finalized with the image, $ok attempts ok, $installed" \
			"licenses installed, $open licenses neither installed nor not-installed"
	echo "$1: $finalized finalized = $ok ok = $installed installed"
}

line_setup_pki 20 16
line_start_emu 5 1 \
	--fault chip=0,cmd=0x50,subop=0x5305,byte=1,action=drop \
	--fault chip=1,cmd=0x50,subop=0x5305,byte=2,action=drop \
	--fault chip=2,cmd=0x50,subop=0x5305,byte=3,action=garbage \
	--fault chip=3,cmd=0x50,subop=0x5305,byte=4,action=corrupt \
	--fault chip=4,cmd=0x50,subop=0x5305,byte=0,action=nack
line_write_config 5
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count 5 >/dev/null
ctl start >/dev/null
wait_for 60 "five results" sql_is "SELECT count(*) FROM attempts WHERE result <> 'running'" 5
line_skip_without_xspecial
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'ok' AND slot <> 'S4'")" -eq 4 ] ||
	line_fail "chips whose FINALIZE answer was lost: $(sql "SELECT slot, result, error_text FROM attempts")"
[ "$(sql "SELECT step || '|' || result FROM attempts WHERE slot = 'S4'")" = "finalizing|failed" ] ||
	line_fail "the chip whose FINALIZE was refused: $(sql "SELECT step, result, error_text FROM attempts WHERE slot = 'S4'")"
[ "$(grep -c "recorded installed" "$tmp/sfid.log")" -eq 4 ] || line_fail "no log line for the recovered chips"
invariant "FINALIZE answers lost"

# --- SIGKILL between FINALIZE and the record
line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
EMU_STATE=$tmp/emu-state-kill line_start_emu 1 1 \
	--fault chip=0,cmd=0x50,subop=0x5305,byte=2,action=delay:15000
line_start_sfid
finalizing() { [ "$(grep -c "slot S0 .*installing -> finalizing" "$tmp/sfid.log")" -gt "$1" ]; }
seen=$(grep -c "slot S0 .*installing -> finalizing" "$tmp/sfid.log" || true)
ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
ctl start S0 >/dev/null
wait_for 60 "the chip at FINALIZE" finalizing "$seen"
wait_for 10 "the chip to finalize" grep -qx "state=4" "$tmp/emu-state-kill/chip0/osfi.session"
line_kill_sfid
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'running'")" -eq 1 ] ||
	line_fail "no running attempt after SIGKILL: $(sql "SELECT id, result, step FROM attempts")"
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'issued'")" -eq 1 ] ||
	line_fail "no issued license after SIGKILL"
line_start_sfid
grep -q "1 attempt left running by a stopped sfid closed as interrupted" "$tmp/sfid.log" ||
	line_fail "the running attempt was not closed at start-up"
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'running'")" -eq 0 ] ||
	line_fail "an attempt is still running after the restart"
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'issued'")" -eq 0 ] ||
	line_fail "a license is still issued after the restart"
ctl start S0 >/dev/null
wait_for 60 "the finalized chip recorded installed" \
	sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" $((ok + 1))
invariant "SIGKILL after FINALIZE"
# --- the same with a global (uncounted) license: no ledger row ties the chip to the job,
# its attempt that reached FINALIZE does
"$SFIPACK" license --global --global-key "$tmp/pki/global.key" --key "$tmp/pki/image.key" \
	--image "$tmp/pki/demo.sfi" --out "$tmp/pki/global.lic" >/dev/null
line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
EMU_STATE=$tmp/emu-state-global line_start_emu 1 1 \
	--fault chip=0,cmd=0x51,subop=0x5304,byte=1,action=delay:1500 \
	--fault chip=0,cmd=0x50,subop=0x5305,byte=2,action=delay:15000
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --global-license "$tmp/pki/global.lic" >/dev/null ||
	line_fail "global job load"
ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
licenses=$(sql "SELECT count(*) FROM licenses")
installing() { [ "$(grep -c "slot S0 .*-> installing" "$tmp/sfid.log")" -gt "$1" ]; }
seen_inst=$(grep -c "slot S0 .*-> installing" "$tmp/sfid.log" || true)
ctl start S0 >/dev/null
wait_for 60 "the chip installing" installing "$seen_inst"
# The database is held by another writer (4 s, within sfid's 5 s busy wait) while the chip
# installs (its first PUT_DATA answered 1.5 s late, so the hold starts in time): the
# finalizing step reaches the disk late, and FINALIZE waits for it. sfid is killed as
# soon as the chip is finalized; the attempt's row must already say it reached FINALIZE.
rm -f "$tmp/db-held"
printf '.timeout 5000\nBEGIN IMMEDIATE;\n.shell touch %s\n.shell sleep 4\nCOMMIT;\n' \
	"$tmp/db-held" | sqlite3 -bail "$tmp/sfid.db" 2>"$tmp/db-held.err" &
holder=$!
wait_for 10 "the database held" test -e "$tmp/db-held"
wait_for 60 "the chip to finalize" grep -qx "state=4" "$tmp/emu-state-global/chip0/osfi.session"
line_kill_sfid
wait "$holder" || line_fail "the database holder failed: $(cat "$tmp/db-held.err")"
[ "$(sql "SELECT step FROM attempts WHERE result = 'running'")" = finalizing ] ||
	line_fail "a chip was finalized before its attempt recorded FINALIZE:" \
		"$(sql "SELECT id, step, result FROM attempts ORDER BY id DESC LIMIT 1")"
line_start_sfid
ctl start S0 >/dev/null
wait_for 60 "the finalized chip of the global job recorded installed" \
	sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" $((ok + 1))
[ "$(sql "SELECT count(*) FROM licenses")" -eq "$licenses" ] || line_fail "a global job spent a license"
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'running'")" -eq 0 ] ||
	line_fail "an attempt is still running"
echo "SIGKILL after FINALIZE, global license: the chip recorded installed"

line_export_verify
echo "FINALIZE's answer lost on 4 chips and sfid killed after FINALIZE: every finished chip recorded installed"

#!/usr/bin/env bash
# The database refuses writes (full, injected by the SQLite fault library) while a chip is
# at FINALIZE: the chip finishes, its outcome (license installed, attempt ok, chip) is kept
# in memory, the line halts; once the database takes writes again the kept outcome is
# written, nothing lost: chips finalized = attempts ok = licenses installed.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-dbfull.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM
SHIM=$BUILD/tests/faults/libsfid-sqlite-fault.so
[ -f "$SHIM" ] || line_fail "the SQLite fault library $SHIM is not built"

line_setup_pki 5 16
line_start_emu 1 1 --fault chip=0,cmd=0x50,subop=0x5305,byte=2,action=delay:3000
line_write_config 1
printf 'op = write\nfile = sfid.db\nerror = full\narm_file = %s\n' "$tmp/full" >"$tmp/fault.conf"
# sfid with the fault library after umockdev's preload library.
line_env
preload=
for i in "${!envs[@]}"; do
	case "${envs[$i]}" in
	LD_PRELOAD=*) preload=${envs[$i]#LD_PRELOAD=}; unset 'envs[i]' ;;
	esac
done
env "${envs[@]}" LD_PRELOAD="${preload:+$preload:}$SHIM" SFID_FAULT_SQLITE="$tmp/fault.conf" \
	"$SFID" --config "$tmp/sfid.conf" >>"$tmp/sfid.log" 2>&1 &
sfid_pid=$!
wait_for 10 "sfid's control socket" ctl status
ctl job load "$tmp/pki/demo.sfi" --count 1 >/dev/null
ctl start >/dev/null
wait_for 60 "the chip at FINALIZE" grep -q "installing -> finalizing" "$tmp/sfid.log"
touch "$tmp/full"
wait_for 30 "the outcome kept in memory" grep -q "it is kept in memory" "$tmp/sfid.log"
line_skip_without_xspecial
wait_for 10 "the line halted" halted "database is full"
[ "$(sql "SELECT state FROM licenses")" = issued ] ||
	line_fail "the license is $(sql "SELECT state FROM licenses") while the database is full"
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'failed'")" -eq 0 ] ||
	line_fail "the chip was recorded failed"
rm -f "$tmp/full"
wait_for 30 "the kept outcome written" sql_is "SELECT state FROM licenses" installed
wait_for 10 "the attempt ok" sql_is "SELECT result FROM attempts" ok
[ "$(sql "SELECT final_state FROM chips")" = programmed ] || line_fail "the chip row: $(sql "SELECT * FROM chips")"
image=$(sql "SELECT image_id FROM jobs")
grep -qx "state=4" "$tmp/emu-state/chip0/osfi.session" &&
	grep -qx "installed=$image" "$tmp/emu-state/chip0/osfi.session" ||
	line_fail "the chip is not finalized with the job's image"
grep -q "outcomes\? kept in memory written" "$tmp/sfid.log" || line_fail "no log line for the written outcome"
echo "database full at FINALIZE: outcome kept in memory, written once the database took it"

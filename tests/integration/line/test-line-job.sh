#!/usr/bin/env bash
# Job counts that hold. (1) 3 slots x 1 chip, no target, the third chip refusing its
# certificate: two chips installed and left in their fixtures; started again (and after a
# restart of sfid) they are recognised as holding the job's image: no failure, yield
# 100 %, and the third chip counts once as refused untouched. A new job loads while the
# slots only wait for removal, with the same outcome. (2) target 6
# on 4 slots x 3 chips: exactly 6 installed, "job complete" shown, `start` refused with a
# sentence; stats give chips per hour and accept --since/--until.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-job.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

stat_json() { # stat_json KEY [stats args]: one value of `sfictl --json stats`
	local key=$1
	shift
	ctl --json stats "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$key"
}
job_json() { # job_json KEY: one value of the loaded job
	ctl --json job show | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
no_chip_in_progress() {
	ctl --json status | python3 -c 'import json,sys
busy = {"identifying", "certificate", "license", "installing", "finalizing", "verifying"}
sys.exit(any(s["state"] in busy for s in json.load(sys.stdin)["slots"]))'
}

line_setup_pki 40 16

# --- (1) chips left in their fixtures
EMU_STATE=$tmp/emu-state-1 line_start_emu 3 1 --fault chip=2,cmd=0x50,subop=0x5301,action=nack,repeat
line_write_config 3
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 120 "2 chips installed" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 2
line_skip_without_xspecial
wait_for 30 "S0 waiting for removal" slot_in S0 waiting-for-removal
wait_for 30 "S1 waiting for removal" slot_in S1 waiting-for-removal
wait_for 30 "S2 waiting for removal" slot_in S2 waiting-for-removal
for round in 1 2; do
	ctl stop >/dev/null
	ctl start >/dev/null
	wait_for 60 "the chips seen again (round $round)" sql_is \
		"SELECT count(*) FROM attempts WHERE result = 'failed' AND error_code = 3" $((2 * round))
	wait_for 30 "S0 waiting for removal" slot_in S0 waiting-for-removal
done
# And after a restart of sfid, with the job restored.
line_stop_pid "$sfid_pid"
line_start_sfid
ctl start >/dev/null
wait_for 60 "the chips seen after a restart" sql_is \
	"SELECT count(*) FROM attempts WHERE result = 'failed' AND error_code = 3" 6
wait_for 30 "S1 waiting for removal" slot_in S1 waiting-for-removal
ctl stats >"$tmp/stats1.out"
[ "$(stat_json failed)" = 0 ] && [ "$(stat_json ok)" = 2 ] && [ "$(stat_json yield)" = 1.0 ] &&
	[ "$(stat_json already_installed)" = 2 ] && [ "$(stat_json refused)" = 1 ] ||
	line_fail "chips left in the fixtures counted as failures: $(ctl --json stats)"
grep -q "yield 100.0 %" "$tmp/stats1.out" || line_fail "stats: $(cat "$tmp/stats1.out")"
[ "$(job_json failed)" = 0 ] && [ "$(job_json refused)" = 1 ] ||
	line_fail "the job counts $(job_json failed) failures, $(job_json refused) refusals"

# A job loads while the slots only wait for the removal of their chips.
ctl job load "$tmp/pki/demo.sfi" >"$tmp/load2.out" 2>&1 ||
	line_fail "job load refused while slots wait for removal: $(cat "$tmp/load2.out")"
for round in 1 2; do
	ctl stop >/dev/null
	ctl start >/dev/null
	wait_for 60 "the chips seen by job 2 (round $round)" sql_is \
		"SELECT count(*) FROM attempts WHERE job_id = 2 AND result = 'failed'" $((3 * round))
	wait_for 30 "S0 waiting for removal" slot_in S0 waiting-for-removal
done
[ "$(sql "SELECT count(*) FROM attempts WHERE job_id = 2 AND error_code = 3")" = 4 ] ||
	line_fail "job 2 did not recognise its image on the chips left in the fixtures"
[ "$(job_json refused)" = 1 ] && [ "$(job_json failed)" = 0 ] ||
	line_fail "refusals: $(ctl --json job show)"
[ "$(stat_json refused)" = 1 ] && [ "$(stat_json failed)" = 0 ] && [ "$(stat_json ok)" = 0 ] ||
	line_fail "stats of job 2: $(ctl --json stats)"
line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
rm -f "$tmp/sfid.db" "$tmp/sfid.db-wal" "$tmp/sfid.db-shm"

# --- (2) a target of 6 on 4 slots x 3 chips
EMU_STATE=$tmp/emu-state-2 line_start_emu 4 3 --auto-swap 200
line_write_config 4
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count 6 >/dev/null
t0=$(date -u +%Y-%m-%dT%H:%M:%S)
ctl start >/dev/null
wait_for 180 "job complete" sh -c "'$SFICTL' --socket '$tmp/sfid.sock' status | grep 'JOB COMPLETE: 6 of 6' >/dev/null"
wait_for 60 "no chip in progress" no_chip_in_progress
sleep 1 # let an install that should not have started show itself
no_chip_in_progress || line_fail "a chip is in progress after the job completed"
ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
[ "$ok" -eq 6 ] || line_fail "$ok chips installed for a target of 6"
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")" -eq 6 ] ||
	line_fail "installed licenses: $(sql "SELECT state, count(*) FROM licenses GROUP BY 1")"
grep -q "job 1 complete: 6 of 6 installed" "$tmp/sfid.log" || line_fail "no 'job complete' in the log"
set +e
ctl start >"$tmp/start.out" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "job 1 is complete (6 of 6 installed)" "$tmp/start.out" ||
	line_fail "start on a complete job: exit $rc, $(cat "$tmp/start.out")"
sleep 1
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")" -eq 6 ] || line_fail "more than 6 after start"

# stats: chips per hour, mean cycle, and a time window
ctl stats >"$tmp/stats2.out"
grep -q "chips per hour, mean cycle" "$tmp/stats2.out" || line_fail "stats: $(cat "$tmp/stats2.out")"
python3 -c 'import sys; sys.exit(not float(sys.argv[1]) > 0)' "$(stat_json chips_per_hour)" ||
	line_fail "chips per hour: $(stat_json chips_per_hour)"
[ "$(stat_json ok --since "$t0")" = 6 ] || line_fail "stats --since $t0"
[ "$(stat_json ok --until "$t0")" = 0 ] || line_fail "stats --until $t0"
[ "$(stat_json ok --since 2000-01-01 --until 2000-01-02)" = 0 ] || line_fail "stats in 2000"
echo "target 6 on 4x3 chips: exactly 6; chips left in fixtures: yield 100 %"

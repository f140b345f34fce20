#!/usr/bin/env bash
# sfid is SIGKILLed 10 times while slots write serial numbers (each time as soon as the
# ledger holds an intent without an outcome, after a random extra delay of 0 to 50 ms; h5emu
# holds each Write Memory answer 400 ms so that the write lasts), and
# started again; the same plain job (same counter) is loaded again in odd rounds and restored
# by sfid with its serial number in even ones, and chips are swapped
# between rounds. Afterwards: every intent a kill left open was recorded unconfirmed at the
# next start, none is left open; the indexes given out are 0..n-1 with no gap, each value on
# one chip and each chip with one value; every chip whose value is recorded written holds it
# in its flash (the emulator's state); and the export verifies with sfi-audit.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-line-serial-kill.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
. "$(dirname "$0")/serial.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 100 64
head -c 1024 /dev/urandom >"$tmp/fw.bin"
# Every Write Memory answer is held 400 ms: the serial step lasts long enough to be hit.
line_start_emu 8 3 --baud 115200 --fault cmd=0x31,repeat,action=delay:400
line_write_config 8
# A killed attempt counts as a failure of its chip: the same chips come back every round.
sed -i 's/^shutdown_timeout_ms = 5000$/&\nretries_per_chip = 100/' "$tmp/sfid.conf"
grep -q '^retries_per_chip = 100$' "$tmp/sfid.conf" || line_fail "cannot raise retries_per_chip"
line_start_sfid

load_and_start() {
	ctl job load --plain "$tmp/fw.bin@0x08000000" --serial-counter 5000:7 \
		--serial-at 0x08100000 --serial-width 8 --serial-format be >/dev/null ||
		line_fail "job load"
	ctl start >/dev/null
}
open_intent() {
	[ "$(sql "SELECT count(*) FROM serials WHERE state = 'intent'")" -ge 1 ]
}

declare -A swapped
kills=0
for round in $(seq 1 10); do
	# Chips move on in some rounds: new chips take new values, old ones come back later.
	if [ $((round % 3)) -eq 0 ]; then
		for s in $(seq 0 7); do
			[ "${swapped[$s]:-0}" -lt 2 ] || continue
			emu_ctl remove "$s" | grep -q '^ok' || line_fail "h5emu: remove $s refused"
			emu_ctl insert "$s" | grep -q '^ok' || line_fail "h5emu: insert $s refused"
			swapped[$s]=$((${swapped[$s]:-0} + 1))
		done
	fi
	if [ "$round" -gt 1 ] && [ $((round % 2)) -eq 0 ]; then
		# The job sfid restored from its own copy: the same series, no reload.
		ctl --json job show | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["kind"] == "plain" and j["serial"].startswith("counter 5000:7 "), j' ||
			line_fail "round $round: the restored job lost its serial number"
		ctl start >/dev/null
	else
		load_and_start
	fi
	# Polled without a pause: the window is a write's 400 ms on each slot.
	deadline=$((SECONDS + 60))
	until open_intent; do
		[ "$SECONDS" -lt "$deadline" ] || line_fail "no open serial intent in 60 s (round $round)"
	done
	sleep "0.0$((RANDOM % 5))$((RANDOM % 10))"
	kill -KILL "$sfid_pid"
	wait "$sfid_pid" 2>/dev/null || true
	sfid_pid=
	kills=$((kills + 1))
	line_start_sfid
	[ "$(sql "SELECT count(*) FROM serials WHERE state = 'intent'")" -eq 0 ] ||
		line_fail "round $round: an intent is still open after the restart"
done

# A last run: the chips in the slots finish, then a clean stop.
t_last=$SECONDS
load_and_start
job=$(sql "SELECT max(id) FROM jobs")
deadline=$((SECONDS + 90))
until sql_is "SELECT count(*) FROM serials WHERE job_id = $job AND state = 'written'" 8; do
	if [ "$SECONDS" -ge "$deadline" ]; then
		# What each slot and the ledger say, and where sfid's threads wait.
		ctl --json status >&2 || true
		sql "SELECT idx, chip_uid, job_id, state, reason FROM serials ORDER BY idx" >&2 || true
		if command -v gdb >/dev/null; then
			timeout 60 gdb -p "$sfid_pid" -batch -ex "thread apply all bt" >&2 2>&1 || true
		fi
		line_fail "timed out after 90 s waiting for 8 chips written by the last job"
	fi
	sleep 0.2
done
t_last=$((SECONDS - t_last))
ctl stop >/dev/null
line_stop_pid "$sfid_pid"
sfid_pid=

rows=$(sql "SELECT count(*) FROM serials")
[ "$(sql "SELECT max(idx) + 1 FROM serials")" -eq "$rows" ] ||
	line_fail "indexes have a gap: $(sql "SELECT group_concat(idx) FROM serials")"
[ "$(sql "SELECT count(DISTINCT value) || ' ' || count(DISTINCT chip_uid) FROM serials")" = "$rows $rows" ] ||
	line_fail "a value or a chip appears twice in the serials"
[ "$(sql "SELECT count(*) FROM serials WHERE value <> printf('%016x', 5000 + 7 * idx)")" -eq 0 ] ||
	line_fail "a value is not 5000 + 7 * index (8 bytes, big endian)"
[ "$(sql "SELECT count(*) FROM serials WHERE state = 'intent'")" -eq 0 ] || line_fail "an intent is open"
unconfirmed=$(sql "SELECT count(*) FROM audit WHERE type = 'serial.result' AND content LIKE '%\"state\":\"unconfirmed\"%'")
[ "$unconfirmed" -ge "$kills" ] ||
	line_fail "$unconfirmed intents recorded unconfirmed for $kills kills during the serial step"
# Each value given once: every serial.intent for a new index names a new chip.
[ "$(sql "SELECT count(*) FROM audit WHERE type = 'serial.intent' AND content LIKE '%\"again\":false%'")" -eq "$rows" ] ||
	line_fail "serial.intent records for new values do not match the $rows rows"
[ "$rows" -ge 16 ] || line_fail "only $rows values given out on 24 chips"

line_stop_pid "$emu_pid"
emu_pid=
n=$(serial_flash_check 8 "state = 'written'")
[ "$n" -ge 8 ] || line_fail "only $n chips hold a value recorded written"

line_start_emu 8 1
line_start_sfid
line_export_verify
echo "serial kills: $kills SIGKILLs in the serial step, $rows values on $rows chips, no gap, $unconfirmed left unconfirmed and resolved, $n chips' flash checked; the last run's 8 chips written in ${t_last} s"

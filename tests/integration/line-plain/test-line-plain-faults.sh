#!/usr/bin/env bash
# A plain job's failures on one slot (h5emu's g474 profile, 3 chips): firmware that fits the
# STM32H5 but not the chip's 512 KiB is refused untouched, with the UID recorded; a Write
# Memory whose ACK after the data is lost fails the chip (never sent again: the chip took the
# block) with a sentence naming the command, step and address, counted as a failure; the next
# chip is written. No license row, the token's counter unchanged, the export verifies.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-line-plain-faults.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 10 16
before=$(line_counter)
fw=$tmp/pki/firmware.bin
line_start_emu 1 4 --profile g474 --fault chip=1,cmd=0x31,nth=5,byte=2,action=drop
line_write_config 1
line_start_sfid

# next_chip: the fixture swaps in the next chip.
next_chip() {
	emu_ctl remove 0 | grep -q '^ok' || line_fail "h5emu: remove refused"
	emu_ctl insert 0 | grep -q '^ok' || line_fail "h5emu: insert refused"
}

ctl job load --plain --count 1 "$fw@0x08100000" >/dev/null || line_fail "job A not loaded"
ctl start >/dev/null
wait_for 60 "chip 0 refused" sql_is "SELECT count(*) FROM attempts WHERE result = 'failed'" 1
text=$(sql "SELECT error_text FROM attempts WHERE id = 1")
case $text in
*"does not fit the STM32G47x/G48x's 512 KiB"*"not touched"*) ;;
*) line_fail "chip 0: $text" ;;
esac
[ "$(sql "SELECT error_code FROM attempts WHERE id = 1")" = 1 ] || line_fail "chip 0 not refused untouched"
[ -n "$(sql "SELECT chip_uid FROM attempts WHERE id = 1")" ] || line_fail "chip 0's UID not recorded"

wait_for 30 "the slot waiting for removal" slot_in S0 waiting-for-removal
cp "$fw" "$tmp/job-b.bin"
ctl job load --plain --count 2 "$tmp/job-b.bin@0x08000000" >/dev/null || line_fail "job B not loaded"
ctl start >/dev/null 2>&1 || true
next_chip
wait_for 60 "chip 1 failed" sql_is "SELECT count(*) FROM attempts WHERE job_id = 2 AND result = 'failed'" 1
text=$(sql "SELECT error_text FROM attempts WHERE job_id = 2")
case $text in
*"write failed: Write Memory:"*"at the data step at 0x08000400"*) ;;
*) line_fail "chip 1: $text" ;;
esac
[ "$(sql "SELECT error_code FROM attempts WHERE job_id = 2")" = 0 ] || line_fail "chip 1 not counted failed (touched)"
wait_for 30 "the slot waiting for removal" slot_in S0 waiting-for-removal
next_chip
wait_for 60 "chip 2 written" sql_is "SELECT count(*) FROM attempts WHERE job_id = 2 AND result = 'ok'" 1

# sfid crashes: the plain job comes back from sfid's own copy of its firmware (the file it
# was loaded from is gone) with its counts, and writes the next chip.
wait_for 30 "the slot waiting for removal" slot_in S0 waiting-for-removal
line_kill_sfid
rm "$tmp/job-b.bin"
line_start_sfid
grep -q "job 2 restored: $tmp/job-b.bin@0x08000000, 1 installed, 1 failed, target 2" "$tmp/sfid.log" ||
	line_fail "the plain job was not restored: $(grep 'job 2' "$tmp/sfid.log")"
ctl --json job show >"$tmp/show.json"
python3 - "$tmp/show.json" "$(sql "SELECT image_digest FROM jobs WHERE id = 2")" <<'PY' ||
import json, sys
j = json.load(open(sys.argv[1]))
assert j["kind"] == "plain" and j["digest"] == sys.argv[2], j
PY
	line_fail "job show after the restart: $(cat "$tmp/show.json")"
ctl start >/dev/null
next_chip
wait_for 60 "chip 3 written by the restored job" \
	sql_is "SELECT count(*) FROM attempts WHERE job_id = 2 AND result = 'ok'" 2
# A copy that does not hold what was loaded ends the job with a sentence, never writes chips.
line_stop_pid "$sfid_pid"
sfid_pid=
printf 'X' | dd of="$tmp/job-2.plain" bs=1 seek=100 conv=notrunc 2>/dev/null
line_start_sfid
grep -q "job 2 was loaded when sfid stopped but cannot be loaded again: .*changed" "$tmp/sfid.log" ||
	line_fail "a damaged copy was not refused: $(grep 'job 2' "$tmp/sfid.log")"
[ "$(sql "SELECT state FROM jobs WHERE id = 2")" = ended ] || line_fail "job 2 was not ended"

[ "$(sql "SELECT count(*) FROM licenses")" -eq 0 ] || line_fail "a plain job has license rows"
after=$(line_counter)
[ "$after" -eq "$before" ] || line_fail "the token's counter went $before -> $after"
line_export_verify
echo "plain job failures: refused untouched (does not fit), a lost Write Memory ACK failed once, the next chip written"

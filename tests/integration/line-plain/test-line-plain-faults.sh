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
line_start_emu 1 3 --profile g474 --fault chip=1,cmd=0x31,nth=5,byte=2,action=drop
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
ctl job load --plain --count 2 "$fw@0x08000000" >/dev/null || line_fail "job B not loaded"
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

[ "$(sql "SELECT count(*) FROM licenses")" -eq 0 ] || line_fail "a plain job has license rows"
after=$(line_counter)
[ "$after" -eq "$before" ] || line_fail "the token's counter went $before -> $after"
ctl export --format jsonl --out "$tmp/audit.jsonl" 2>/dev/null
"$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$tmp/pki/pin" --out "$tmp/audit.pem" >/dev/null
"$SFIAUDIT" verify "$tmp/audit.jsonl" --pubkey "$tmp/audit.pem" >"$tmp/verify.out" ||
	line_fail "sfi-audit verify: $(cat "$tmp/verify.out")"
echo "plain job failures: refused untouched (does not fit), a lost Write Memory ACK failed once, the next chip written"

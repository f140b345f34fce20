#!/usr/bin/env bash
# Serial numbers on an OSFI job, written after the install over the bootloader's memory
# commands, in the product state the supervisor declares for the image (--image-state):
# - refused at load with their reason: no --image-state, a state beyond Provisioning, an
#   unknown state, --image-state without a serial number, a value over the image's area,
#   serial options on a vendor job, --image-state on a plain job;
# - 4 slots x 3 chips of an image that leaves the chip Provisioning, counter 500 (4 bytes
#   little endian at 0x08100000); sfid SIGKILLed once between a value's write and its
#   record (h5emu holds each Write Memory's last ACK 800 ms), started again at once (the
#   held ACKs meet its sync and Get: the line out of step is resynchronised, no chip is
#   refused; the job is restored from its copy with its serial number); a chip found holding
#   its value is recorded without a second write: 12 chips installed, 12 licenses installed
#   (none left open), 12 consecutive values written, one per chip, each in its chip's flash;
#   the export verifies;
# - its copy of the serial settings deleted: the job is not restored at the next start;
# - an image that leaves the chip Closed, declared Provisioning: the chip is installed (its
#   license stays installed), takes no value, and the line halts with the sentence.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-line-serial-osfi.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
. "$(dirname "$0")/serial.sh"
trap line_cleanup EXIT INT TERM

LINE_IMAGE_STATE=Provisioning line_setup_pki 40 16
# Each Write Memory's last ACK (after the bytes are programmed) is held 800 ms.
line_start_emu 4 3 --fault cmd=0x31,byte=2,repeat,action=delay:800
line_write_config 4 'block_timeout_ms = 5000\n'	# the held ACK is no timeout
# The killed attempts count as failures of their chips: they come back.
sed -i 's/^shutdown_timeout_ms = 5000$/&\nretries_per_chip = 100/' "$tmp/sfid.conf"
grep -q '^retries_per_chip = 100$' "$tmp/sfid.conf" || line_fail "cannot raise retries_per_chip"
line_start_sfid

img=$tmp/pki/demo.sfi
ser=(--serial-counter 500 --serial-at 0x08100000 --serial-width 4)
refuse() {
	local why=$1 out
	shift
	if out=$(ctl job load "$@" 2>&1); then
		line_fail "job load accepted $*"
	fi
	grep -q "$why" <<<"$out" || line_fail "job load $*: expected '$why', got: $out"
}
refuse "declare it with --image-state" "$img" "${ser[@]}"
refuse "leaves the chip Closed takes no serial number" "$img" --image-state Closed "${ser[@]}"
refuse "is not a product state" "$img" --image-state Sealed "${ser[@]}"
refuse "goes with a serial number" "$img" --image-state Provisioning
refuse "overlap" "$img" --image-state Provisioning --serial-counter 1 --serial-at 0x08000100 \
	--serial-width 4
refuse "not written on vendor jobs" --vendor "$img" "${ser[@]}"
refuse "is for OSFI jobs" --plain "$tmp/pki/firmware.bin@0x08000000" --image-state Open \
	"${ser[@]}"
[ "$(sql "SELECT count(*) FROM jobs")" -eq 0 ] || line_fail "a refused job was recorded"

ctl job load "$img" --count 12 --image-state Provisioning "${ser[@]}" >"$tmp/load.out" ||
	line_fail "job load: $(cat "$tmp/load.out")"
ctl job show >"$tmp/show.out"
grep -q "leaves *Provisioning" "$tmp/show.out" && grep -q "serial *counter 500:1 le width 4" \
	"$tmp/show.out" || line_fail "job show: $(cat "$tmp/show.out")"
ctl start >/dev/null

# SIGKILL while a value's intent is open (its write under way), then the restored job.
wait_for 60 "a serial number's write under way" \
	sql_is "SELECT count(*) > 0 FROM serials WHERE state = 'intent'" 1
sleep 0.3	# the value is in the chip, its ACK not yet
line_kill_sfid
# sfid is back before the chips' held ACKs come out (as after a stop during a long erase):
# they meet its sync and its Get, which reads a stale NACK; Get is never refused, so sfid
# takes the line for out of step, resynchronises and asks again.
line_start_sfid
ctl --json job show | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["kind"] == "osfi" and j["serial"].startswith("counter 500:1 ") and j["image_state"] == "Provisioning", j' ||
	line_fail "the restored job lost its serial number: $(ctl job show)"
[ "$(sql "SELECT count(*) FROM serials WHERE state = 'intent'")" -eq 0 ] ||
	line_fail "an intent the kill left open is still open"
ctl start >/dev/null

# The fixture: once a slot's chip is done the next one goes in; the third stays.
line_swap_until "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'" 12 \
	"SELECT slot, count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok' GROUP BY slot" 3 180
ok=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
[ "$ok" -eq 12 ] || line_fail "$ok chips ok, expected 12: $(sql "SELECT slot, step, error_text FROM attempts WHERE result <> 'ok'")"
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")" -eq 12 ] ||
	line_fail "licenses: $(sql "SELECT state, count(*) FROM licenses GROUP BY state")"
# Other rows: a license step the kill cut (reserved, unconfirmed), never one left open.
[ "$(sql "SELECT count(*) FROM licenses WHERE state IN ('reserved', 'issued')")" -eq 0 ] ||
	line_fail "a license is left open: $(sql "SELECT id, state FROM licenses WHERE state <> 'installed'")"
line_no_unrecorded
[ "$(sql "SELECT count(*) FROM serials WHERE state = 'written'")" -eq 12 ] ||
	line_fail "serials: $(sql "SELECT idx, state, reason FROM serials")"
[ "$(sql "SELECT min(idx) || ' ' || max(idx) || ' ' || count(*) || ' ' || count(DISTINCT chip_uid) FROM serials")" = "0 11 12 12" ] ||
	line_fail "serials are not 12 consecutive values on 12 chips: $(sql "SELECT idx, chip_uid, state FROM serials")"
[ "$(sql "SELECT count(*) FROM serials WHERE chip_uid NOT IN (SELECT chip_uid FROM attempts WHERE result = 'ok')")" -eq 0 ] ||
	line_fail "a serial names a chip without an attempt ok"
# The chip killed between its value's write and the record: found holding it, recorded.
grep -q "the chip already holds its serial number" "$tmp/sfid.log" ||
	line_fail "no chip was found holding its value after the kill"
bad=$(sql "SELECT count(*) FROM serials WHERE value <> printf('%02x%02x0000', (500 + idx) % 256, (500 + idx) / 256)")
[ "$bad" -eq 0 ] || line_fail "$bad values are not 500 + index, little endian"

line_export_verify
ctl stop >/dev/null
line_stop_pid "$emu_pid"
emu_pid=
n=$(serial_flash_check 4 "state = 'written'")
[ "$n" -eq 12 ] || line_fail "$n of the 12 chips hold the value the ledger gave them"

# An image that leaves the chip Closed, declared Provisioning: installed, no value, halt.
printf 'PRODUCT_STATE, Closed\n' >"$tmp/pki/closed.csv"
"$SFIPACK" create --out "$tmp/pki/closed.sfi" --firmware "$tmp/pki/firmware.bin@0x08000000" \
	--options "$tmp/pki/closed.csv" --key "$tmp/pki/image.key" >/dev/null
"$SFIPACK" license --global --global-key "$tmp/pki/global.key" --key "$tmp/pki/image.key" \
	--image "$tmp/pki/closed.sfi" --out "$tmp/pki/closed.lic" >/dev/null
line_stop_pid "$sfid_pid"
sfid_pid=
EMU_STATE=$tmp/emu-state-closed line_start_emu 1 1
# sfid's copy of the serial settings gone: a job that gave values is not restored without.
rm "$tmp/job-1.serial"
line_start_sfid
grep -q "job 1 was loaded when sfid stopped but cannot be loaded again: sfid's copy of the job's serial number .* is gone, and the job gave serial numbers" "$tmp/sfid.log" ||
	line_fail "the job was restored without its serial settings: $(ctl job show 2>&1)"
ctl job load "$tmp/pki/closed.sfi" --global-license "$tmp/pki/closed.lic" \
	--image-state Provisioning --serial-counter 900 --serial-at 0x08100000 --serial-width 4 \
	>/dev/null || line_fail "job load (closed image)"
ctl start S0 >/dev/null
wait_for 60 "the line halted on the product state" halted "the chip is Closed, not Provisioning"
wait_for 10 "the chip's result" sql_is "SELECT count(*) FROM attempts WHERE result = 'failed' AND error_text LIKE '%the chip is Closed, not Provisioning%'" 1
grep -qx "state=4" "$tmp/emu-state-closed/chip0/osfi.session" || line_fail "the chip was not installed"
[ "$(sql "SELECT count(*) FROM serials WHERE series LIKE 'counter 900:%'")" -eq 0 ] ||
	line_fail "a value was taken for a chip that cannot hold it"
echo "OSFI job with serial numbers: 12 chips, 12 licenses installed, values 500..511 written and in flash, one SIGKILL; a misdeclared state halts the line"

#!/usr/bin/env bash
# A plain job with a serial counter on 8 slots x 3 chips (h5emu, umockdev adapters): serial
# options refused at job load with their reason (address outside flash and OTP, overlapping
# the firmware, width 0 and 65, an unknown format, a step of 0); then 24 chips each get one
# of 24 consecutive values (1000, 1001, ... as 4 bytes little endian at 0x08100000), written
# after the firmware and read back: the serials table holds 24 rows written, one per chip
# UID of the 24 attempts ok; every chip's flash (the emulator's state) holds its row's value;
# each value has a serial.intent and a serial.result record naming the chip, and the export
# verifies with sfi-audit. Then a counter that runs out of its width (1 byte from 254) halts
# the line with its sentence after two chips.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-line-serial.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
. "$(dirname "$0")/serial.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 100 64
fw=$tmp/pki/firmware.bin			# 64 KiB at 0x08000000
line_start_emu 8 3
line_write_config 8
line_start_sfid

# Serial options a job must refuse at load, with the reason.
refuse() {
	local why=$1 out
	shift
	if out=$(ctl job load --plain "$fw@0x08000000" "$@" 2>&1); then
		line_fail "job load accepted $*"
	fi
	grep -q "$why" <<<"$out" || line_fail "job load $*: expected '$why', got: $out"
}
refuse "outside the STM32H5's flash" --serial-counter 1 --serial-at 0x20000000 --serial-width 4
refuse "overlap the firmware" --serial-counter 1 --serial-at 0x08000100 --serial-width 4
refuse "width 0 is not 1 to 64" --serial-counter 1 --serial-at 0x08100000 --serial-width 0
refuse "width 65 is not 1 to 64" --serial-counter 1 --serial-at 0x08100000 --serial-width 65
refuse "is not le, be, bcd, ascii" --serial-counter 1 --serial-at 0x08100000 --serial-width 4 \
	--serial-format octal
refuse "step is 0" --serial-counter 1:0 --serial-at 0x08100000 --serial-width 4
refuse "not on a 16-byte flash word" --serial-counter 1 --serial-at 0x08100004 --serial-width 4
refuse "does not fit" --serial-counter 300 --serial-at 0x08100000 --serial-width 1
refuse "needs a counter" --serial-at 0x08100000 --serial-width 4
[ "$(sql "SELECT count(*) FROM jobs")" -eq 0 ] || line_fail "a refused job was recorded"

ctl job load --plain --count 24 "$fw@0x08000000" --serial-counter 1000 \
	--serial-at 0x08100000 --serial-width 4 --serial-format le >"$tmp/load.out" ||
	line_fail "job load: $(cat "$tmp/load.out")"
ctl job show | grep -q "serial *counter 1000:1 le width 4 at 0x08100000" ||
	line_fail "job show: $(ctl job show)"
ctl start >/dev/null

# The fixture: once a slot's chip is done the next chip goes in; the third stays.
line_swap_until "SELECT count(*) FROM attempts WHERE result <> 'running'" 24 \
	"SELECT slot, count(*) FROM attempts WHERE result <> 'running' GROUP BY slot" 3 180
ok=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
[ "$ok" -eq 24 ] || line_fail "$ok chips ok, expected 24: $(sql "SELECT slot, error_text FROM attempts WHERE result = 'failed'")"

# 24 consecutive values, one per chip, each the UID of an attempt ok.
[ "$(sql "SELECT count(*) FROM serials WHERE state = 'written'")" -eq 24 ] ||
	line_fail "serials: $(sql "SELECT idx, state, reason FROM serials")"
[ "$(sql "SELECT count(*) FROM serials")" -eq 24 ] || line_fail "more than 24 serial rows"
[ "$(sql "SELECT min(idx) || ' ' || max(idx) || ' ' || count(DISTINCT value) || ' ' || count(DISTINCT chip_uid) FROM serials")" = "0 23 24 24" ] ||
	line_fail "serials are not 24 consecutive values on 24 chips"
[ "$(sql "SELECT count(*) FROM serials WHERE chip_uid NOT IN (SELECT chip_uid FROM attempts WHERE result = 'ok')")" -eq 0 ] ||
	line_fail "a serial names a chip without an attempt ok"
bad=$(sql "SELECT count(*) FROM serials WHERE value <> printf('%02x%02x0000', (1000 + idx) % 256, (1000 + idx) / 256)")
[ "$bad" -eq 0 ] || line_fail "$bad values are not 1000 + index, little endian"
for t in serial.intent serial.result; do
	n=$(sql "SELECT count(*) FROM audit a JOIN serials s ON a.content LIKE '%\"chip_uid\":\"' || s.chip_uid || '\"%' AND a.content LIKE '%\"value\":\"' || s.value || '\"%' WHERE a.type = '$t'")
	[ "$n" -eq 24 ] || line_fail "$n $t records name a chip and its value, expected 24"
done

line_export_verify

# Every chip's flash, as the emulator keeps it: the firmware, and at 0x08100000 the value
# the ledger gave its UID.
ctl stop >/dev/null
line_stop_pid "$emu_pid"
emu_pid=
for c in "$tmp/emu-state"/chip*; do
	[ -f "$c/memory.bin" ] || continue
	cmp -s -n 65536 "$fw" "$c/memory.bin" || line_fail "$c: flash does not hold the firmware"
done
n=$(serial_flash_check 4 1)
[ "$n" -eq 24 ] || line_fail "$n of the 24 chips hold the value the ledger gave them"

# A counter that runs out of its width halts the line with its sentence (new chips).
line_stop_pid "$sfid_pid"
sfid_pid=
EMU_STATE=$tmp/emu-state-2 line_start_emu 8 3
line_start_sfid
ctl job load --plain "$fw@0x08000000" --serial-counter 254 --serial-at 0x08100000 \
	--serial-width 1 >/dev/null || line_fail "job load (1-byte counter)"
ctl start >/dev/null
wait_for 60 "the line halted on the exhausted counter" halted "serial numbers ran out"
[ "$(sql "SELECT count(*) FROM serials WHERE series LIKE 'counter 254:1 %'")" -eq 2 ] ||
	line_fail "the 1-byte counter gave $(sql "SELECT count(*) FROM serials WHERE series LIKE 'counter 254:1 %'") values, expected 2"
ctl stop >/dev/null
echo "serial numbers: 24 values on 24 chips (8 slots, $swaps swaps), recorded, verified; the exhausted counter halted the line"

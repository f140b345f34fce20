#!/usr/bin/env bash
# A plain programming job on 8 slots x 3 chips (h5emu's g474 profile, umockdev adapters),
# each chip started (Go) once verified:
# firmware files refused at job load when a byte lies outside flash or two overlap; then
# two files (a BIN at the start of flash and a BIN whose length is not a multiple of the
# flash word) on 24 chips, the chips swapped by h5emu's control socket as each one is
# written. Every chip's flash equals the firmware (the emulator's state after the run, and
# the real stm32flash reading one slot's chip back), 24 attempts ended ok on 24 chips, each
# attempt.end record marked plain with the firmware's digest, no license row and the token's
# counter unchanged, `job show`, `watch`, the CSV export and `sfi-audit report` say plain,
# and the JSON Lines export verifies with sfi-audit.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-line-plain.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
trap line_cleanup EXIT INT TERM
command -v stm32flash >/dev/null || { echo "stm32flash is not installed (scripts/deps)"; exit 77; }

line_setup_pki 100 64
before=$(line_counter)
fw=$tmp/pki/firmware.bin			# 64 KiB at 0x08000000
{ printf '\000'; head -c 999 /dev/urandom; } >"$tmp/tail.bin"	# 1000 bytes at 0x08010000
line_start_emu 8 3 --profile g474
line_write_config 8
line_start_sfid

# Firmware a job must refuse at load, with the reason.
set +e
ctl job load --plain "$fw@0x08200000" >"$tmp/bad1.out" 2>&1
rc1=$?
ctl job load --plain "$fw@0x08000000" "$tmp/tail.bin@0x0800fff0" >"$tmp/bad2.out" 2>&1
rc2=$?
ctl job load --plain "$fw" >"$tmp/bad3.out" 2>&1
rc3=$?
# A damaged Intel HEX is read as HEX by its name (sfid reads it through a passed descriptor),
# and a device or FIFO is no firmware file.
printf '\357\273\277:020000040800F2\n:00000001FF\n' >"$tmp/damaged.hex"
ctl job load --plain "$tmp/damaged.hex" >"$tmp/bad4.out" 2>&1
rc4=$?
ctl job load --plain /dev/zero@0x08000000 >"$tmp/bad5.out" 2>&1
rc5=$?
ctl job load --plain "$fw@" >"$tmp/bad6.out" 2>&1
rc6=$?
set -e
[ "$rc4" -ne 0 ] && grep -q "damaged.hex line 1: not an Intel HEX record" "$tmp/bad4.out" ||
	line_fail "a damaged HEX file: rc $rc4, $(cat "$tmp/bad4.out")"
[ "$rc5" -ne 0 ] && grep -q "/dev/zero: not a regular file" "$tmp/bad5.out" ||
	line_fail "a device as firmware: rc $rc5, $(cat "$tmp/bad5.out")"
[ "$rc6" -ne 0 ] && grep -q "no address after '@'" "$tmp/bad6.out" ||
	line_fail "FILE@ without address: rc $rc6, $(cat "$tmp/bad6.out")"
[ "$rc1" -ne 0 ] && grep -q "outside the STM32H5's flash" "$tmp/bad1.out" ||
	line_fail "firmware outside flash: rc $rc1, $(cat "$tmp/bad1.out")"
[ "$rc2" -ne 0 ] && grep -q "overlaps" "$tmp/bad2.out" ||
	line_fail "overlapping firmware: rc $rc2, $(cat "$tmp/bad2.out")"
[ "$rc3" -ne 0 ] && grep -q "needs its address" "$tmp/bad3.out" ||
	line_fail "a BIN without address: rc $rc3, $(cat "$tmp/bad3.out")"
[ "$(sql "SELECT count(*) FROM jobs")" -eq 0 ] || line_fail "a refused job was recorded"

ctl job load --plain --go --count 24 "$fw@0x08000000" "$tmp/tail.bin@0x08010000" >"$tmp/load.out" ||
	line_fail "job load --plain: $(cat "$tmp/load.out")"
ctl job show >"$tmp/show.out"
grep -q "kind *plain (not secure" "$tmp/show.out" || line_fail "job show: $(cat "$tmp/show.out")"
grep -q "licenses *none" "$tmp/show.out" || line_fail "job show names licenses"
grep -q "then *go 0x08000000" "$tmp/show.out" || line_fail "job show: no Go at the firmware's start"
timeout 200 "$SFICTL" --socket "$tmp/sfid.sock" watch --count 24 --timeout 180 \
	>"$tmp/watch.out" 2>&1 &
watch_pid=$!
ctl start >/dev/null

# The fixture: once a slot's chip is written (and started: it no longer answers) the next
# chip goes in; the third stays in its slot.
line_swap_until "SELECT count(*) FROM attempts WHERE result <> 'running'" 24 \
	"SELECT slot, count(*) FROM attempts WHERE result <> 'running' GROUP BY slot" 3 180
[ "$swaps" -eq 16 ] || line_fail "$swaps chips swapped in, expected 16"
wait "$watch_pid" || line_fail "watch: $(tail -n 5 "$tmp/watch.out")"

ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
chips=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
[ "$ok" -eq 24 ] && [ "$chips" -eq 24 ] ||
	line_fail "$ok attempts ok on $chips chips, expected 24 on 24: $(sql "SELECT slot, error_text FROM attempts WHERE result = 'failed'")"
for s in $(seq 0 7); do
	n=$(sql "SELECT count(*) FROM attempts WHERE slot = 'S$s' AND result = 'ok'")
	[ "$n" -eq 3 ] || line_fail "slot S$s wrote $n chips, expected 3"
done
[ "$(sql "SELECT kind FROM jobs")" = plain ] || line_fail "the job is not recorded plain"
[ "$(sql "SELECT count(*) FROM licenses")" -eq 0 ] || line_fail "a plain job has license rows"
bytes=$((65536 + 1000))
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'ok' AND bytes_sent = $bytes")" -eq 24 ] ||
	line_fail "attempts do not record $bytes bytes: $(sql "SELECT DISTINCT bytes_sent FROM attempts")"
digest=$(cat "$fw" "$tmp/tail.bin" | sha256sum | cut -c1-64)
[ "$(sql "SELECT image_digest FROM jobs")" = "$digest" ] || line_fail "the job's digest is not the firmware's"
# The UID comes with the attempt's steps; the end record names it only for refusals.
n=$(sql "SELECT count(*) FROM audit WHERE type = 'attempt.end' AND content LIKE '%\"kind\":\"plain\"%' AND content LIKE '%\"image_digest\":\"$digest\"%' AND content LIKE '%\"result\":\"ok\"%'")
[ "$n" -eq 24 ] || line_fail "$n attempt.end records marked plain with the digest, expected 24"
after=$(line_counter)
[ "$after" -eq "$before" ] || line_fail "the token's counter went $before -> $after: a license was spent"
[ "$(grep -c ': ok .* plain$' "$tmp/watch.out")" -eq 24 ] ||
	line_fail "watch did not show 24 plain results: $(tail -n 5 "$tmp/watch.out")"

ctl export --format csv --out "$tmp/audit.csv" 2>/dev/null
[ "$(grep -c ',plain'$'\r''$' "$tmp/audit.csv")" -eq 24 ] ||
	line_fail "the CSV export does not mark 24 rows plain: $(head -n 3 "$tmp/audit.csv")"
line_export_verify
"$SFIAUDIT" report "$tmp/audit.jsonl" >"$tmp/report.out" ||
	line_fail "sfi-audit report: $(cat "$tmp/report.out")"
grep -q "plain-not-secure" "$tmp/report.out" && grep -Eq "plain_ok +24" "$tmp/report.out" ||
	line_fail "the report does not mark the job plain: $(cat "$tmp/report.out")"

# Go started every chip: the eight in the slots run their application.
[ "$(emu_ctl status | grep -c 'mode application')" -eq 8 ] ||
	line_fail "chips not started by Go: $(emu_ctl status)"
[ "$(sql "SELECT go_address FROM jobs")" = 134217728 ] || line_fail "the job's Go address is not recorded"

# The real stm32flash reads slot S0's chip back: sfid lets go of the port, the fixture is
# powered again (h5emu restarted on the same chips: they come up in their bootloader).
line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
line_start_emu 8 3 --profile g474
line_env
port=$(readlink "$tmp/emu/chip0")
env "${envs[@]}" timeout 60 stm32flash -b 115200 -r "$tmp/back.bin" -S 0x08000000:$((65536 + 1008)) \
	"$port" >"$tmp/sf.log" 2>&1 || line_fail "stm32flash read: $(tr '\r' '\n' <"$tmp/sf.log" | tail -n 5)"
grep -q 'Device ID    : 0x0469' "$tmp/sf.log" || line_fail "stm32flash did not identify the g474"
cmp -n 65536 "$fw" "$tmp/back.bin" || line_fail "stm32flash: the chip's flash differs from the firmware"
cmp -n 1000 -i 0:65536 "$tmp/tail.bin" "$tmp/back.bin" || line_fail "stm32flash: the tail differs"
[ "$(tail -c 8 "$tmp/back.bin" | od -An -tx1 | tr -d ' \n')" = ffffffffffffffff ] ||
	line_fail "stm32flash: the flash word after the tail is not padded with 0xFF"

# Every chip's flash, as the emulator keeps it at exit.
line_stop_pid "$emu_pid"
emu_pid=
n=0
for c in "$tmp/emu-state"/chip*; do
	[ -f "$c/memory.bin" ] || continue
	cmp -s -n 65536 "$fw" "$c/memory.bin" && cmp -s -n 1000 -i 0:65536 "$tmp/tail.bin" "$c/memory.bin" ||
		line_fail "$c: flash does not hold the firmware"
	n=$((n + 1))
done
[ "$n" -eq 24 ] || line_fail "$n chips hold the firmware, expected 24"
echo "plain job: 24 chips on 8 slots written and verified ($swaps swaps), counter $before -> $after, export verified"

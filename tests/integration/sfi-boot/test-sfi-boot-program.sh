#!/usr/bin/env bash
# sfi-boot program against h5emu: ELF, Intel HEX and BIN@ADDR firmware; exactly the sectors
# the firmware touches are erased (a sector beside them keeps its data, stale data in a
# touched sector is gone); the firmware reads back identical; OTP written without an erase;
# --go starts it; the same over USB DFU; a firmware outside the chip's memory, overlapping segments, an unaligned
# start, a missing file each end with one clear line and exit 5 before the chip is touched.
set -euo pipefail
. "$(dirname "$0")/common.sh"
MKFW=${SFID_SOURCE_ROOT:?}/tests/integration/osfi/mkfw.py
P=(--port usb:1-1 --timeout-ms 1000)

start_emu --umockdev
head -c 20001 /dev/urandom >"$tmp/fw.bin"	# sectors 0-2 (8 KiB each)
python3 "$MKFW" elf "$tmp/fw.bin" "$tmp/fw.elf" 0x08000000
python3 "$MKFW" hex "$tmp/fw.bin" "$tmp/fw.hex" 0x08000000
head -c 5000 /dev/urandom >"$tmp/bank2.bin"
head -c 64 /dev/urandom >"$tmp/marker"

# A marker in sector 3 (not touched) and one in sector 2 after the firmware's end (touched).
expect 0 "${P[@]}" erase 2 3
expect 0 "${P[@]}" write 0x08006000 "$tmp/marker"
expect 0 "${P[@]}" write 0x08005000 "$tmp/marker"

expect 0 "${P[@]}" program "$tmp/fw.elf" "$tmp/bank2.bin@0x08100000"
grep -q '^erased: *4 sectors of 8 KiB (0-2,128)$' "$tmp/out" || fail "program ELF: $(cat "$tmp/out")"
grep -q "^sha256: *$(sha256sum "$tmp/fw.elf" | cut -c1-64)  $tmp/fw.elf\$" "$tmp/out" ||
	fail "program does not show the firmware's SHA-256: $(cat "$tmp/out")"
grep -q '^written: *25001 bytes, read back identical$' "$tmp/out" || fail "program: $(cat "$tmp/out")"
expect 0 "${P[@]}" read 0x08000000 20001 "$tmp/back.bin"
cmp -s "$tmp/fw.bin" "$tmp/back.bin" || fail "flash differs from the ELF's data"
expect 0 "${P[@]}" read 0x08100000 5000 "$tmp/back2.bin"
cmp -s "$tmp/bank2.bin" "$tmp/back2.bin" || fail "bank 2 differs from the BIN's data"
expect 0 "${P[@]}" read 0x08006000 64 "$tmp/m3"
cmp -s "$tmp/marker" "$tmp/m3" || fail "sector 3 (not touched by the firmware) was erased"
expect 0 "${P[@]}" read 0x08005000 64 "$tmp/m2"
[ "$(od -An -tx1 -v "$tmp/m2" | tr -d ' \n' | tr -d f)" = "" ] ||
	fail "stale data in sector 2 (touched by the firmware) survived: not erased"

# Intel HEX on the other chip, then started.
expect 0 --port usb:1-2 --timeout-ms 1000 program --go "$tmp/fw.hex"
grep -q '^erased: *3 sectors of 8 KiB (0-2)$' "$tmp/out" || fail "program HEX: $(cat "$tmp/out")"
grep -q '^started: *0x08000000$' "$tmp/out" || fail "program --go: $(cat "$tmp/out")"

# OTP: written, nothing erased.
head -c 32 /dev/urandom >"$tmp/otp.bin"
expect 0 "${P[@]}" program "$tmp/otp.bin@0x08fff000"
grep -q '^erased: *0 sectors of 8 KiB$' "$tmp/out" || fail "program OTP: $(cat "$tmp/out")"
expect 0 "${P[@]}" read 0x08fff000 32 "$tmp/otp.back"
cmp -s "$tmp/otp.bin" "$tmp/otp.back" || fail "OTP differs"

# Refusals before any I/O.
expect 5 "${P[@]}" program "$tmp/fw.bin@0x30000000"
err_has "is outside the STM32H5's flash, OTP and SRAM"
expect 5 "${P[@]}" program "$tmp/fw.elf" "$tmp/marker@0x08000100"
err_has "overlaps"
expect 5 "${P[@]}" program "$tmp/marker@0x08000008"
err_has "not on a 16-byte flash word"
expect 5 "${P[@]}" program "$tmp/missing.hex"
err_has "missing.hex"
expect 1 "${P[@]}" program --go
err_has "no firmware file"
expect 1 "${P[@]}" program --fast "$tmp/fw.elf"
err_has "unknown option --fast"

# The same over USB DFU (DfuSe page erase, download, upload).
start_emu --count 1 --transport dfu
D=(--port dfu:usb:2-1.1 --timeout-ms 3000)
expect 0 "${D[@]}" program "$tmp/fw.hex" "$tmp/bank2.bin@0x08100000"
grep -q '^erased: *4 sectors of 8 KiB (0-2,128)$' "$tmp/out" || fail "program over DFU: $(cat "$tmp/out")"
grep -q '^written: *25001 bytes, read back identical$' "$tmp/out" || fail "DFU: $(cat "$tmp/out")"
expect 0 "${D[@]}" read 0x08000000 20001 "$tmp/back.bin"
cmp -s "$tmp/fw.bin" "$tmp/back.bin" || fail "DFU: flash differs from the HEX's data"
echo "program: ELF, HEX, BIN@ADDR, OTP, --go, UART and DFU; exactly the touched sectors erased; 6 refusals"

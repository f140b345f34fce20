#!/usr/bin/env bash
# sfi-boot end to end through libserialport on umockdev USB-serial adapters against h5emu:
# port naming (path, adapter serial, USB port), info, erase/write/read/verify, the entry
# sequence with --require-entry, and injected faults: each ends in a clear one-line error
# with the documented exit code or in a successful bounded retry; nothing hangs; a vanished
# adapter is reported as such.
set -euo pipefail
. "$(dirname "$0")/common.sh"

T=(--timeout-ms 400)
FLASH=0x08000000

head -c 20001 /dev/urandom >"$tmp/img"	# the last block (33 bytes) needs padding
head -c 4096 /dev/urandom >"$tmp/img2"

echo "# info through the three port forms"
start_emu --umockdev
expect 0 --port serial:H5EMU0000 "${T[@]}" info
grep -q '^device id: *0x484 (STM32H562/H563/H573)' "$tmp/out" || fail "info: $(cat "$tmp/out")"
grep -Eq '^commands: * 00 01 02 11 21 31 44 50( 51)? 63 73$' "$tmp/out" || fail "info: $(cat "$tmp/out")"
grep -q '^flash size: *2048 KiB' "$tmp/out" || fail "info: $(cat "$tmp/out")"
uid0=$(sed -n 's/^uid: *\([0-9a-f]\{24\}\)$/\1/p' "$tmp/out")
[ -n "$uid0" ] || fail "info shows no 96-bit UID: $(cat "$tmp/out")"
expect 0 --port usb:1-1 "${T[@]}" info
grep -q "^uid: *$uid0\$" "$tmp/out" || fail "usb:1-1 is not chip 0"
expect 0 --port /dev/ttyUSB1 "${T[@]}" info
uid1=$(sed -n 's/^uid: *\([0-9a-f]\{24\}\)$/\1/p' "$tmp/out")
[ -n "$uid1" ] && [ "$uid1" != "$uid0" ] || fail "chip 1 has no distinct UID"
expect 0 --port usb:1-2 "${T[@]}" info
grep -q "^uid: *$uid1\$" "$tmp/out" || fail "usb:1-2 is not chip 1"
expect 2 --port serial:NOSUCH0 info
err_has "no USB-serial adapter with serial number NOSUCH0"
expect 2 --port usb:9-9 info
err_has "no USB-serial adapter on USB port 9-9"
expect 1 --port usb:1-1 write 0x08000002 "$tmp/img"
expect 1 --port usb:1-1 write 0x08000008 "$tmp/img"
err_has "not a multiple of 16"
expect 1 --port usb:1-1 --entry dtr=3 info
err_has "0 or 1"

echo "# erase, write with verify, read back"
expect 0 --port usb:1-1 "${T[@]}" erase mass
expect 0 --port usb:1-1 "${T[@]}" write $FLASH "$tmp/img"
expect 0 --port usb:1-1 "${T[@]}" read $FLASH 20001 "$tmp/back"
cmp -s "$tmp/img" "$tmp/back" || fail "read-back differs from the image"
# The last block went out padded to 16 bytes with 0xFF.
expect 0 --port usb:1-1 "${T[@]}" read 0x08004e21 15 "$tmp/pad"
[ "$(od -An -tx1 "$tmp/pad" | tr -d ' \n')" = "ffffffffffffffffffffffffffffff" ] ||
	fail "bytes after the image are not erased"
# Programmed flash cannot be written again: the chip refuses.
expect 3 --port usb:1-1 "${T[@]}" write $FLASH "$tmp/img2"
err_has "NACK"
expect 0 --port usb:1-1 "${T[@]}" erase 0 1
expect 0 --port usb:1-1 "${T[@]}" read $FLASH 16384 "$tmp/erased"
[ "$(od -An -tx1 -v "$tmp/erased" | tr -d ' \n' | tr -d f | wc -c)" -eq 0 ] ||
	fail "pages 0 and 1 are not erased"
expect 0 --port usb:1-1 "${T[@]}" read 0x08004000 3617 "$tmp/kept"
cmp -s "$tmp/kept" <(tail -c +16385 "$tmp/img") || fail "page 2 was touched by erase 0 1"
expect 0 --port usb:1-1 "${T[@]}" write $FLASH "$tmp/img2"
expect 0 --port usb:1-1 "${T[@]}" erase bank1
expect 1 --port usb:1-1 erase mass 3
# Chip 1 is untouched by all of this.
expect 0 --port usb:1-2 "${T[@]}" read $FLASH 256 "$tmp/c1"
[ "$(od -An -tx1 -v "$tmp/c1" | tr -d ' \nf' | wc -c)" -eq 0 ] || fail "chip 1 was written"

echo "# entry sequence"
start_emu --umockdev --require-entry
start=$(date +%s)
expect 2 --port usb:1-1 "${T[@]}" --retries 1 info
err_has "no bootloader answers on /dev/ttyUSB0"
[ $(($(date +%s) - start)) -le 5 ] || fail "a silent chip took more than 5 s to report"
expect 0 --port usb:1-1 "${T[@]}" --entry rts=1,dtr=1,wait=10,dtr=0,wait=50 info
grep -q "^uid: *$uid0\$" "$tmp/out" || fail "entry: wrong chip or no UID"
# The bootloader stays entered until the next reset.
expect 0 --port usb:1-1 "${T[@]}" info
# Reset with BOOT0 low boots the application: silent again.
expect 2 --port usb:1-1 "${T[@]}" --retries 1 --entry rts=0,dtr=1,wait=10,dtr=0,wait=20 info
err_has "no bootloader answers"

echo "# faults"
# A lost ACK of the command byte: resynchronised and retried, the write completes.
start_emu --umockdev --fault chip=0,cmd=0x31,nth=3,byte=0,action=drop
expect 0 --port usb:1-1 "${T[@]}" erase mass
expect 0 --port usb:1-1 "${T[@]}" write $FLASH "$tmp/img"
expect 0 --port usb:1-1 "${T[@]}" read $FLASH 20001 "$tmp/back"
cmp -s "$tmp/img" "$tmp/back" || fail "retried write left wrong data"

# A lost ACK after the data block: a retry could program twice, so it is an error.
start_emu --umockdev --fault chip=0,cmd=0x31,nth=2,byte=2,action=drop
expect 0 --port usb:1-1 "${T[@]}" erase mass
expect 2 --port usb:1-1 "${T[@]}" write $FLASH "$tmp/img"
err_has "no answer from the chip in time at the data step at 0x08000100"

# Garbage instead of an ACK, then a corrupted ACK, then an ACK late beyond the timeout:
# reads are idempotent and retried.
start_emu --umockdev --fault chip=0,cmd=0x11,nth=2,action=garbage \
	--fault chip=0,cmd=0x11,nth=5,byte=1,action=corrupt \
	--fault chip=0,cmd=0x11,nth=8,action=delay:1200
expect 0 --port usb:1-1 "${T[@]}" erase mass
expect 0 --port usb:1-1 "${T[@]}" --no-verify write $FLASH "$tmp/img"
expect 0 --port usb:1-1 "${T[@]}" read $FLASH 20001 "$tmp/back"
cmp -s "$tmp/img" "$tmp/back" || fail "retried reads returned wrong data"

# A refusal is not retried and says so.
start_emu --umockdev --fault chip=0,cmd=0x11,nth=2,byte=1,action=nack
expect 3 --port usb:1-1 "${T[@]}" read $FLASH 1024 "$tmp/back"
err_has "Read Memory: the chip refused the request (NACK) at the address step at 0x08000100"

# Persistent silence after the command: bounded retries, then a timeout error.
start_emu --umockdev --fault chip=0,cmd=0x11,nth=1,action=drop,repeat
start=$(date +%s)
expect 2 --port usb:1-1 "${T[@]}" read $FLASH 256 "$tmp/back"
err_has "no answer from the chip in time at the command step"
[ $(($(date +%s) - start)) -le 15 ] || fail "bounded retries took more than 15 s"

# The adapter vanishes in the middle of a write.
start_emu --umockdev --fault chip=0,cmd=0x31,nth=4,action=vanish
expect 0 --port usb:1-1 "${T[@]}" erase mass
expect 2 --port usb:1-1 "${T[@]}" write $FLASH "$tmp/img"
err_has "serial port /dev/ttyUSB0 is gone"
# Chip 1 keeps working.
expect 0 --port usb:1-2 "${T[@]}" info

echo "1 passed, 0 failed"

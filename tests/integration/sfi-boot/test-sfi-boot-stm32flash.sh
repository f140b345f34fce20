#!/usr/bin/env bash
# sfi-boot and stm32flash agree about the chip's memory: stm32flash writes on the emulator's
# plain PTY (8N1), sfi-boot reads the same chip state through a umockdev adapter (8E1) and
# through the plain PTY itself (tty:), and the other way round. The g474 profile is used because Debian's stm32flash predates
# the STM32H5; both tools run the same AN3155 commands.
set -euo pipefail
. "$(dirname "$0")/common.sh"

STM32FLASH=$(command -v stm32flash) || { echo "stm32flash missing: skipped"; exit 77; }
FLASH=0x08000000
head -c 12000 /dev/urandom >"$tmp/a.bin"
head -c 9000 /dev/urandom >"$tmp/b.bin"

flash() {
	set +e
	timeout 60 "$STM32FLASH" -m 8n1 -b 115200 "$@" "$tmp/emu/chip0" >"$tmp/sf.log" 2>&1
	local r=$?
	set -e
	[ "$r" -eq 0 ] || fail "stm32flash $* exited $r: $(tail -n 5 "$tmp/sf.log")"
}

echo "# stm32flash writes, sfi-boot reads"
start_emu --profile g474
flash -w "$tmp/a.bin" -v -S $FLASH
# sfi-boot on the same plain PTY, without libserialport (tty:).
expect 0 --port "tty:$tmp/emu/chip0" --timeout-ms 400 read $FLASH 12000 "$tmp/a.tty"
cmp -s "$tmp/a.bin" "$tmp/a.tty" || fail "sfi-boot on tty: reads something else than stm32flash wrote"
expect 2 --port "tty:$tmp/emu/chip0" --entry dtr=1 info
err_has "cannot set the modem lines"
start_emu --profile g474 --umockdev
expect 0 --port usb:1-1 --timeout-ms 400 read $FLASH 12000 "$tmp/a.back"
cmp -s "$tmp/a.bin" "$tmp/a.back" || fail "sfi-boot reads something else than stm32flash wrote"

echo "# sfi-boot writes, stm32flash reads"
expect 0 --port usb:1-1 --timeout-ms 400 erase mass
expect 0 --port usb:1-1 --timeout-ms 400 write $FLASH "$tmp/b.bin"
start_emu --profile g474
flash -r "$tmp/b.back" -S $FLASH:9000
cmp -s "$tmp/b.bin" "$tmp/b.back" || fail "stm32flash reads something else than sfi-boot wrote"

echo "1 passed, 0 failed"

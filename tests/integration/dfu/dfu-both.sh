#!/bin/bash
# --transport both: the same chip model behind its terminal and its USB DFU device. dfu-util
# writes over USB and stm32flash (g474 profile, which Debian's stm32flash knows; plain PTY,
# 8N1) reads it back over the UART, then the other way round.
set -euo pipefail

H5EMU=${1:?usage: dfu-both.sh PATH-TO-H5EMU}
for p in dfu-util stm32flash; do
	command -v "$p" >/dev/null || { echo "$p is not installed (scripts/deps); skipping"; exit 77; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dfu-both.XXXXXX")
. "$(dirname "$0")/../emu-common.sh"

start_emu --count 1 --transport both --profile g474
[ -L "$tmp/emu/chip0" ] || fail "no terminal link with --transport both"
sf() { timeout 60 stm32flash -m 8n1 -b 115200 "$@" "$tmp/emu/chip0" >"$tmp/sf.log" 2>&1; }

head -c 8192 /dev/urandom >"$tmp/a.bin"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000 -D "$tmp/a.bin"
[ "$rc" -eq 0 ] || fail "dfu-util -D failed: $(tail -n 3 "$tmp/err")"
sf -r "$tmp/a-uart.bin" -S 0x08000000:8192 || fail "stm32flash read failed: $(tail -c 300 "$tmp/sf.log")"
cmp "$tmp/a.bin" "$tmp/a-uart.bin" || fail "written over USB, read over UART: differs"

head -c 4096 /dev/urandom >"$tmp/b.bin"
sf -w "$tmp/b.bin" -S 0x08010000 || fail "stm32flash write failed: $(tail -c 300 "$tmp/sf.log")"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08010000:4096 -U "$tmp/b-usb.bin"
[ "$rc" -eq 0 ] || fail "dfu-util -U failed: $(tail -n 3 "$tmp/err")"
cmp "$tmp/b.bin" "$tmp/b-usb.bin" || fail "written over UART, read over USB: differs"

kill -TERM "$emu_pid"
rc=0
wait "$emu_pid" || rc=$?
emu_pid=
[ "$rc" -eq 0 ] || fail "h5emu exited with $rc on SIGTERM"
echo "both transports on one chip: USB write/UART read, UART write/USB read: ok"

#!/bin/bash
# Plug, unplug and resets reach a running libusb context as hotplug events: dfu-watch (a
# libusb client with a hotplug callback, running the whole time) sees both chips at their
# port paths, sees slot 0 leave and come back at a new device number when its cable is pulled
# and put back, and again when dfu-util makes it leave DFU; while it holds the device open its
# event loop stays idle (the node is no always-writable file).
set -euo pipefail

H5EMU=${1:?usage: dfu-hotplug.sh PATH-TO-H5EMU PATH-TO-DFU-WATCH}
WATCH=${2:?usage: dfu-hotplug.sh PATH-TO-H5EMU PATH-TO-DFU-WATCH}
command -v dfu-util >/dev/null || { echo "dfu-util is not installed (scripts/deps); skipping"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dfu-hotplug.XXXXXX")
watch_pid=
. "$(dirname "$0")/../emu-common.sh"
trap 'if [ -n "$watch_pid" ]; then kill "$watch_pid" 2>/dev/null || true; fi; cleanup' EXIT

start_emu --count 2 --transport dfu --reenumerate-ms 30
envs=()
while IFS= read -r line; do [ -n "$line" ] && envs+=("$line"); done <"$tmp/emu/umockdev.env"
env "${envs[@]}" "$WATCH" >"$tmp/watch" 2>"$tmp/watch.err" &
watch_pid=$!

# wait_line REGEX: until dfu-watch printed a matching line (10 s).
wait_line() {
	for _ in $(seq 200); do
		grep -Eq "$1" "$tmp/watch" && return 0
		kill -0 "$watch_pid" 2>/dev/null || fail "dfu-watch exited: $(cat "$tmp/watch.err")"
		sleep 0.05
	done
	fail "dfu-watch did not print /$1/ in 10 s: $(cat "$tmp/watch")"
}
devnum() {
	emu_ctl status | sed -n "s/^slot $1: .* usb 2-1\.$(($1 + 1)) device \([0-9]*\)$/\1/p"
}

d0=$(devnum 0)
d1=$(devnum 1)
wait_line "^arrived 2-1\.1 $d0\$"
wait_line "^arrived 2-1\.2 $d1\$"
wait_line '^idle-wakeups [0-9]+$'
w=$(sed -n 's/^idle-wakeups //p' "$tmp/watch")
# 200 ms timeouts: about 5 in a second; a spinning loop makes thousands.
[ "$w" -le 20 ] || fail "libusb's event loop woke $w times in 1 s with the device open"

emu_ctl unplug 0 >/dev/null
wait_line "^left 2-1\.1 $d0\$"
[ "$(devnum 0)" = 0 ] || fail "slot 0 still enumerated after unplug"
emu_ctl plug 0 >/dev/null
d0b=$(devnum 0)
[ "$d0b" -gt 0 ] && [ "$d0b" != "$d0" ] || fail "slot 0 plugged back as device '$d0b' (was $d0)"
wait_line "^arrived 2-1\.1 $d0b\$"

head -c 4096 /dev/urandom >"$tmp/image.bin"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000:leave -D "$tmp/image.bin"
[ "$rc" -eq 0 ] || fail "dfu-util :leave failed: $(tail -n 5 "$tmp/err" "$tmp/out")"
wait_line "^left 2-1\.1 $d0b\$"
for _ in $(seq 200); do
	[ "$(grep -c '^arrived 2-1\.1 ' "$tmp/watch")" -ge 3 ] && break
	sleep 0.05
done
d0c=$(sed -n 's/^arrived 2-1\.1 //p' "$tmp/watch" | tail -n 1)
[ -n "$d0c" ] && [ "$d0c" != "$d0b" ] || fail "after :leave slot 0 came back as '$d0c' (was $d0b)"
grep -q "^left 2-1\.2" "$tmp/watch" && fail "slot 1 left the bus"

kill -TERM "$watch_pid"
wait "$watch_pid" || fail "dfu-watch exited with an error"
watch_pid=
echo "hotplug: arrivals at start, unplug/plug and :leave seen by a running context, idle loop: ok"

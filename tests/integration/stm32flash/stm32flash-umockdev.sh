#!/bin/bash
# The real stm32flash in its default 8E1 mode against h5emu's emulated USB-serial adapters
# (umockdev), paced at 115200 baud: the chip ignores a host that sets 8N1, answers one that
# sets 8E1 at the agreed rate, and a 4 KiB image goes in and comes back identical.
set -euo pipefail

h5emu=${1:?usage: stm32flash-umockdev.sh PATH-TO-H5EMU}
if ! command -v stm32flash >/dev/null; then
	echo "stm32flash is not installed; skipping"
	exit 77
fi

tmp=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	[ -f "$tmp/log" ] && tr '\r' '\n' <"$tmp/log" | tail -n 20 >&2
	[ -f "$tmp/err" ] && tail -n 20 "$tmp/err" >&2
	exit 1
}

"$h5emu" --count 1 --dir "$tmp/d" --profile g474 --umockdev --baud 115200 \
	>"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 200); do
	grep -q '^h5emu: ready, 1 chips$' "$tmp/out" && break
	if ! kill -0 "$pid" 2>/dev/null; then
		if grep -q 'built without umockdev support' "$tmp/err"; then
			echo "h5emu built without umockdev; skipping"
			exit 77
		fi
		fail "h5emu exited before it was ready"
	fi
	sleep 0.05
done
grep -q '^h5emu: ready, 1 chips$' "$tmp/out" || fail "h5emu did not print its ready line in 10 s"
[ "$(readlink "$tmp/d/chip0")" = /dev/ttyUSB0 ] || fail "DIR/chip0 does not point at /dev/ttyUSB0"
[ -s "$tmp/d/umockdev.env" ] || fail "no umockdev.env"
mapfile -t envv <"$tmp/d/umockdev.env"

sf() {
	env "${envv[@]}" timeout 30 stm32flash -b 115200 "$@" /dev/ttyUSB0 >"$tmp/log" 2>&1
}

if sf -m 8n1; then
	fail "the chip answered a host that set 8N1"
fi
grep -q 'Device ID' "$tmp/log" && fail "device identified over 8N1"

sf || fail "stm32flash 8E1 failed"
grep -q 'Device ID    : 0x0469' "$tmp/log" || fail "device not identified over 8E1"

head -c 4096 /dev/urandom >"$tmp/image.bin"
sf -w "$tmp/image.bin" -v || fail "write failed"
sf -r "$tmp/back.bin" -S 0x08000000:4096 || fail "read failed"
cmp "$tmp/image.bin" "$tmp/back.bin" || fail "read-back differs"

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" -eq 0 ] || fail "h5emu exited with $rc on SIGTERM"
echo "stm32flash over umockdev: 8N1 refused, 8E1 identify, 4 KiB write+verify+read: ok"

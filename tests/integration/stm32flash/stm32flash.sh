#!/bin/bash
# The real stm32flash (Debian 0.7) against h5emu's g474 profile on a plain PTY: it must
# identify the part, write a 256 KiB random image with verify, read it back identical and
# mass-erase the flash (read back as all 0xFF). Proves the emulator's AN3155 transport.
set -euo pipefail

h5emu=${1:?usage: stm32flash.sh PATH-TO-H5EMU}
if ! command -v stm32flash >/dev/null; then
	echo "stm32flash is not installed (apt-get install stm32flash); skipping"
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

"$h5emu" --count 1 --dir "$tmp/d" --profile g474 --state-dir "$tmp/state" \
	>"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 200); do
	grep -q '^h5emu: ready, 1 chips$' "$tmp/out" && break
	kill -0 "$pid" 2>/dev/null || fail "h5emu exited before it was ready"
	sleep 0.05
done
grep -q '^h5emu: ready, 1 chips$' "$tmp/out" || fail "h5emu did not print its ready line in 10 s"

sf() {
	timeout 60 stm32flash -m 8n1 "$@" "$tmp/d/chip0" >"$tmp/log" 2>&1 ||
		fail "stm32flash $* failed"
}

sf
grep -q 'Device ID    : 0x0469' "$tmp/log" || fail "device not identified as 0x469"
grep -q 'Version      : 0x31' "$tmp/log" || fail "bootloader version not 0x31"

head -c 262144 /dev/urandom >"$tmp/image.bin"
sf -w "$tmp/image.bin" -v
tr '\r' '\n' <"$tmp/log" | grep 'Wrote and verified address 0x08040000 (100.00%)' >/dev/null ||
	fail "write with verify did not reach 100 %"

sf -r "$tmp/back.bin" -S 0x08000000:262144
cmp "$tmp/image.bin" "$tmp/back.bin" || fail "read-back differs from the image"

sf -o
head -c 524288 /dev/zero | tr '\0' '\377' >"$tmp/erased.bin"
sf -r "$tmp/after.bin" -S 0x08000000:524288
cmp "$tmp/erased.bin" "$tmp/after.bin" || fail "flash not all 0xFF after mass erase"

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" -eq 0 ] || fail "h5emu exited with $rc on SIGTERM"
[ -s "$tmp/state/chip0/memory.bin" ] || fail "no persisted chip state after SIGTERM"
[ ! -e "$tmp/d/chip0" ] || fail "terminal link left behind"
echo "stm32flash: identify, 256 KiB write+verify, read-back, mass erase: ok"

#!/bin/bash
# A DfuSe device that leaves the bus just before its alternate setting is selected: libusb
# 1.0.25 and 1.0.26 unlock the handle's mutex without having locked it there, and the close
# that follows aborts on libusb's own assertion. The DfuSe backend's alternate selection
# survives it (the device's alternate answers "no device", the handle closes); the same
# sequence with libusb's call alone shows the test meets the bug on those versions.
set -euo pipefail

H5EMU=${1:?usage: dfu-alt-gone.sh PATH-TO-H5EMU PATH-TO-DFU-ALT-GONE}
PROG=${2:?usage: dfu-alt-gone.sh PATH-TO-H5EMU PATH-TO-DFU-ALT-GONE}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dfu-alt-gone.XXXXXX")
prog_pid=
. "$(dirname "$0")/../emu-common.sh"
trap 'if [ -n "$prog_pid" ]; then kill "$prog_pid" 2>/dev/null || true; fi; cleanup' EXIT

start_emu --count 1 --transport dfu --reenumerate-ms 30
envs=()
while IFS= read -r line; do [ -n "$line" ] && envs+=("$line"); done <"$tmp/emu/umockdev.env"

# run_once [--raw]: the program opens the device, slot 0 is unplugged and plugged back;
# its exit status in $status, its output in $tmp/out.
run_once() {
	: >"$tmp/out"
	env "${envs[@]}" "$PROG" "$@" >"$tmp/out" 2>"$tmp/err" &
	prog_pid=$!
	for _ in $(seq 400); do
		grep -q '^open$' "$tmp/out" && break
		kill -0 "$prog_pid" 2>/dev/null || break
		sleep 0.05
	done
	grep -q '^open$' "$tmp/out" || fail "dfu-alt-gone did not open the device: $(cat "$tmp/err")"
	emu_ctl unplug 0 >/dev/null
	set +e
	wait "$prog_pid"
	status=$?
	set -e
	prog_pid=
	emu_ctl plug 0 >/dev/null
}

run_once
[ "$status" -eq 0 ] || fail "closing a handle after selecting an alternate of a departed device: exit $status: $(cat "$tmp/out" "$tmp/err")"
grep -q '^alt: LIBUSB_ERROR_NO_DEVICE$' "$tmp/out" || fail "alternate of a departed device: $(cat "$tmp/out")"
grep -q '^closed$' "$tmp/out" || fail "not closed: $(cat "$tmp/out")"

version=$(pkg-config --modversion libusb-1.0 2>/dev/null || true)
case "$version" in
1.0.25 | 1.0.26)
	run_once --raw
	[ "$status" -ne 0 ] && grep -q '^alt: LIBUSB_ERROR_NO_DEVICE$' "$tmp/out" ||
		fail "libusb $version's own call did not abort after closing: exit $status: $(cat "$tmp/out")"
	grep -q 'pthread_mutex_destroy' "$tmp/err" ||
		fail "libusb $version aborted otherwise than on its mutex: $(cat "$tmp/err")"
	echo "libusb $version: its own call aborts at close (exit $status); the backend's closes cleanly"
	;;
*)
	echo "libusb $version: the backend's alternate selection of a departed device closes cleanly"
	;;
esac

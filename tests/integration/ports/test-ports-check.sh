#!/usr/bin/env bash
# sfid --check and the ports of the slots: a port spec that cannot be parsed is an error of
# the file; a port that cannot be opened now (no such adapter, a multi-port adapter named
# without its interface, a pseudo-terminal named without tty:, not a terminal) is a warning
# with the reason, and the file stays valid.
set -euo pipefail
. "$(dirname "$0")/common.sh"

# conf FILE SLOT_PORT...: a complete configuration with one slot per port.
conf() {
	local file=$1 i=0
	shift
	{
		printf '[hsm]\nmodule = /usr/lib/softhsm/libsofthsm2.so\ntoken = line\n'
		printf 'pin_file = %s\n' "$tmp/pin"
		printf '[database]\npath = %s\n' "$tmp/sfid.db"
		printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
			"$tmp/sfid.sock"
		for p in "$@"; do
			printf '[slot S%d]\nport = %s\n' "$i" "$p"
			i=$((i + 1))
		done
	} >"$file"
}

# One plain PTY (a second emulator without umockdev) and two-port umockdev adapters.
"$H5EMU" --count 1 --dir "$tmp/plain" >"$tmp/plain.ready" 2>"$tmp/plain.log" &
plain_pid=$!
trap 'kill -TERM $plain_pid 2>/dev/null; wait $plain_pid 2>/dev/null; cleanup' EXIT INT TERM
for _ in $(seq 150); do
	[ -s "$tmp/plain.ready" ] && break
	kill -0 "$plain_pid" 2>/dev/null || fail "plain h5emu exited: $(cat "$tmp/plain.log")"
	sleep 0.1
done
[ -s "$tmp/plain.ready" ] || fail "plain h5emu printed no ready line in 15 s"
pty=$(readlink "$tmp/plain/chip0")
case "$pty" in /dev/pts/*) ;; *) fail "chip0 of the plain emulator is not a PTY: $pty" ;; esac
start_emu --umockdev --count 3 --ports-per-adapter 2
: >"$tmp/notatty"

echo "# well-formed specs: warnings for the ports that cannot open, valid file"
conf "$tmp/ports.conf" serial:H5EMU0000#1 serial:H5EMU0000 serial:NOSUCH usb:1-2 \
	"$pty" "tty:$pty" /dev/ttyUSB2 "$tmp/notatty" "tty:$tmp/gone" usb:1-1#5
expect 0 "$SFID" --config "$tmp/ports.conf" --check
grep -qF "configuration is valid (10 slots; 6 cannot open their port now)" "$tmp/out" ||
	fail "--check summary: $(cat "$tmp/out")"
[ "$(wc -l <"$tmp/err")" -eq 6 ] || fail "--check: not 6 warnings: $(cat "$tmp/err")"
# warn SLOT TEXT: the warning of slot SLOT carries TEXT.
warn() {
	grep -F "warning: [slot $1] port " "$tmp/err" | grep -F -- "$2" >/dev/null ||
		fail "--check: no warning for slot $1 with '$2': $(cat "$tmp/err")"
}
warn S1 "port 'serial:H5EMU0000' cannot be opened now: port 'serial:H5EMU0000' is a multi-port adapter with 2 ports; name one of them: serial:H5EMU0000#0 (/dev/ttyUSB0), serial:H5EMU0000#1 (/dev/ttyUSB1)"
warn S2 "no USB-serial adapter with serial number NOSUCH is connected"
warn S4 "$pty is a pseudo-terminal, which libserialport does not open; write port = tty:$pty"
warn S7 "$tmp/notatty is not a terminal device"
warn S8 "$tmp/gone: no such device"
warn S9 "has no interface 5; it has #0 (/dev/ttyUSB0), #1 (/dev/ttyUSB1)"
# Each warning names the file and the line of its slot.
line=$(grep -n '^\[slot S4\]' "$tmp/ports.conf" | cut -d: -f1)
grep -qF "$tmp/ports.conf:$line: warning: [slot S4]" "$tmp/err" || fail "S4's line: $(cat "$tmp/err")"
for s in S0 S3 S5 S6; do
	! grep -qF "[slot $s]" "$tmp/err" || fail "--check warns about slot $s: $(cat "$tmp/err")"
done

echo "# every port can open: no warning"
conf "$tmp/good.conf" serial:H5EMU0000#0 usb:1-1#1 "tty:$pty"
expect 0 "$SFID" --config "$tmp/good.conf" --check
grep -qF "configuration is valid (3 slots)" "$tmp/out" || fail "good --check: $(cat "$tmp/out")"
[ ! -s "$tmp/err" ] || fail "good --check warned: $(cat "$tmp/err")"

echo "# a malformed spec is an error of the file"
conf "$tmp/bad.conf" serial:H5EMU0000#1 "usb:1-1#x"
expect 1 "$SFID" --config "$tmp/bad.conf" --check
err_has "key 'port' in [slot S1]: port 'usb:1-1#x': '#x' is not an interface number (0 to 255)"
conf "$tmp/bad2.conf" usb:1-x
expect 1 "$SFID" --config "$tmp/bad2.conf" --check
err_has "'1-x' is not a USB port path"

stop_emu
echo "PASS"

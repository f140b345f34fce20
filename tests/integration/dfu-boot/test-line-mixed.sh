#!/usr/bin/env bash
# One sfid line mixing UART and USB DFU slots: h5emu's chips on both transports (the same
# chip model behind each slot's adapter and its DfuSe device), the first UART slots bound by
# adapter serial, the next DFU slots by physical USB port (dfu:usb:2-1.N); CHIPS chips per
# slot with counted licenses, all in parallel: every chip ends Closed with the firmware, one
# success and one installed license each, the token exactly that much lower, each slot
# CHIPS chips, the export verifies. Default 8 UART + 8 DFU slots, 3 chips each (48 chips);
# test-line-mixed.sh UART DFU CHIPS for another shape.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-mixed.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
trap line_cleanup EXIT INT TERM

U=${1:-8} D=${2:-8} C=${3:-3}
S=$((U + D)) N=$(((U + D) * C))
line_setup_pki $((N + 10)) 64
before=$(line_counter)
# The next chip goes in 1 s after sfid's last word to a finished one: sixteen slots and two
# transports on a loaded machine leave gaps of a few hundred ms inside a verification.
line_start_emu "$S" "$C" --auto-swap 1000 --transport both
{
	printf '[station]\nname = test-mixed\n'
	printf '[hsm]\nmodule = %s\ntoken = %s\npin_file = %s\n' "$SOFTHSM_MODULE" \
		"$TOKEN_LABEL" "$tmp/pki/pin"
	printf '[database]\npath = %s\n' "$tmp/sfid.db"
	printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
		"$tmp/sfid.sock"
	printf '[limits]\nshutdown_timeout_ms = 5000\n'
	for ((i = 0; i < U; i++)); do
		printf '[slot S%d]\nport = serial:%s%04d\npoll_ms = 100\nreopen_ms = 200\n' \
			"$i" "$EMU_SERIAL_PREFIX" "$i"
	done
	for ((i = U; i < S; i++)); do
		printf '[slot S%d]\nport = dfu:usb:2-1.%d\npoll_ms = 100\nreopen_ms = 200\nack_timeout_ms = 3000\n' \
			"$i" $((i + 1))
	done
} >"$tmp/sfid.conf"
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count "$N" >/dev/null
ctl start >/dev/null
wait_for 400 "$N results" sql_is "SELECT count(*) FROM attempts WHERE result <> 'running'" "$N"

ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
chips=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
installed=$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")
[ "$ok" -eq "$N" ] || line_fail "$ok successful attempts, expected $N: $(tail -n 20 "$tmp/sfid.log")"
[ "$chips" -eq "$N" ] || line_fail "$chips distinct chips succeeded, expected $N"
[ "$installed" -eq "$N" ] || line_fail "$installed installed licenses, expected $N"
after=$(line_counter)
[ $((before - after)) -eq "$N" ] || line_fail "counter went $before -> $after, expected $N fewer"
for ((i = 0; i < S; i++)); do
	n=$(sql "SELECT count(*) FROM attempts WHERE slot = 'S$i' AND result = 'ok'")
	[ "$n" -eq "$C" ] || line_fail "slot S$i installed $n chips, expected $C"
done
grep -q "slot S$U .*open (dfu:usb:2-1.$((U + 1))" "$tmp/sfid.log" ||
	line_fail "slot S$U did not open its DFU port: $(grep "S$U" "$tmp/sfid.log" | head -n 5)"

line_export_verify
grep -q "$N spent, $N installed" "$tmp/verify.out" ||
	line_fail "the export does not account $N installed licenses: $(cat "$tmp/verify.out")"

line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
n=$(check_chips_programmed "$tmp/emu-state")
[ "$n" -eq "$N" ] || line_fail "$n chips hold the firmware and are Closed, expected $N"
echo "$N chips installed on $U UART and $D DFU slots, counter $before -> $after, export verified"

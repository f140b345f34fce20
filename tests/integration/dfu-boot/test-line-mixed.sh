#!/usr/bin/env bash
# One sfid line mixing UART and USB DFU slots: h5emu's chips on both transports (the same
# chip model behind each slot's adapter and its DfuSe device), slots S0, S1 bound by
# adapter serial, S2, S3 by physical USB port (dfu:usb:2-1.3, 2-1.4); 2 chips per slot with
# counted licenses: all 8 end Closed with the firmware, 8 successes and 8 installed
# licenses, the token exactly 8 lower, each slot 2 chips, the export verifies.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-mixed.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 20 64
before=$(line_counter)
line_start_emu 4 2 --auto-swap 200 --transport both
{
	printf '[station]\nname = test-mixed\n'
	printf '[hsm]\nmodule = %s\ntoken = %s\npin_file = %s\n' "$SOFTHSM_MODULE" \
		"$TOKEN_LABEL" "$tmp/pki/pin"
	printf '[database]\npath = %s\n' "$tmp/sfid.db"
	printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
		"$tmp/sfid.sock"
	printf '[limits]\nshutdown_timeout_ms = 5000\n'
	for i in 0 1; do
		printf '[slot S%d]\nport = serial:%s%04d\npoll_ms = 100\nreopen_ms = 200\n' \
			"$i" "$EMU_SERIAL_PREFIX" "$i"
	done
	for i in 2 3; do
		printf '[slot S%d]\nport = dfu:usb:2-1.%d\npoll_ms = 100\nreopen_ms = 200\nack_timeout_ms = 3000\n' \
			"$i" $((i + 1))
	done
} >"$tmp/sfid.conf"
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count 8 >/dev/null
ctl start >/dev/null
wait_for 240 "8 results" sql_is "SELECT count(*) FROM attempts WHERE result <> 'running'" 8

ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
chips=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
installed=$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")
[ "$ok" -eq 8 ] || line_fail "$ok successful attempts, expected 8: $(tail -n 20 "$tmp/sfid.log")"
[ "$chips" -eq 8 ] || line_fail "$chips distinct chips succeeded, expected 8"
[ "$installed" -eq 8 ] || line_fail "$installed installed licenses, expected 8"
after=$(line_counter)
[ $((before - after)) -eq 8 ] || line_fail "counter went $before -> $after, expected 8 fewer"
for s in 0 1 2 3; do
	n=$(sql "SELECT count(*) FROM attempts WHERE slot = 'S$s' AND result = 'ok'")
	[ "$n" -eq 2 ] || line_fail "slot S$s installed $n chips, expected 2"
done
grep -q 'slot S2 .*open (dfu:usb:2-1.3' "$tmp/sfid.log" ||
	line_fail "slot S2 did not open its DFU port: $(grep S2 "$tmp/sfid.log" | head -n 5)"

ctl export --format jsonl --out "$tmp/audit.jsonl" 2>/dev/null
"$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$tmp/pki/pin" --out "$tmp/audit.pem" >/dev/null
"$SFIAUDIT" verify "$tmp/audit.jsonl" --pubkey "$tmp/audit.pem" >"$tmp/verify.out" ||
	line_fail "sfi-audit verify: $(cat "$tmp/verify.out")"
grep -q "8 spent, 8 installed" "$tmp/verify.out" ||
	line_fail "the export does not account 8 installed licenses: $(cat "$tmp/verify.out")"

line_stop_pid "$sfid_pid"
sfid_pid=
line_stop_pid "$emu_pid"
emu_pid=
n=$(check_chips_programmed "$tmp/emu-state")
[ "$n" -eq 8 ] || line_fail "$n chips hold the firmware and are Closed, expected 8"
echo "8 chips installed on 2 UART and 2 DFU slots, counter $before -> $after, export verified"

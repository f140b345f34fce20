#!/usr/bin/env bash
# A line on a four-port adapter (FT4232H-like: one serial number, one USB port, interfaces
# 0-3): four slots bound by interface (serial:SN#N) each program the chip on their own
# interface; a fifth slot naming the adapter without an interface never opens a port, and
# sfictl ports shows why with the candidates.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-ports-line.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 10 16
before=$(line_counter)
# Slots 0-3 of the emulator are interfaces 0-3 of adapter H5EMU0000 (USB port 1-1).
line_start_emu 4 1 --ports-per-adapter 4
line_write_config 5
sed -i -E 's/^port = serial:H5EMU000([0-3])$/port = serial:H5EMU0000#\1/;
	   s/^port = serial:H5EMU0004$/port = serial:H5EMU0000/' "$tmp/sfid.conf"
grep -c '^port = serial:H5EMU0000#[0-3]$' "$tmp/sfid.conf" | grep -qx 4 ||
	line_fail "configuration: $(grep '^port' "$tmp/sfid.conf")"
line_start_sfid

ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 120 "four installed chips" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 4
line_skip_without_xspecial

# The four slots hold the ports of their interfaces; S4 has none, and says why.
ctl --json ports >"$tmp/ports.json"
python3 - "$tmp/ports.json" <<'PY' || line_fail "sfictl ports: $(cat "$tmp/ports.json")"
import json, sys
p = {x["slot"]: x for x in json.load(open(sys.argv[1]))["ports"]}
for i in range(4):
    s = p["S%d" % i]
    assert s["open"] and s["device"] == "/dev/ttyUSB%d" % i, s
s4 = p["S4"]
assert not s4["open"], s4
for want in ("multi-port adapter with 4 ports; name one of them",
             "serial:H5EMU0000#0 (/dev/ttyUSB0)", "serial:H5EMU0000#3 (/dev/ttyUSB3)"):
    assert want in s4.get("error", ""), s4
PY
grep -q "slot S4 .*cannot open port serial:H5EMU0000: port 'serial:H5EMU0000' is a multi-port adapter with 4 ports" \
	"$tmp/sfid.log" || line_fail "sfid's log does not say why S4 has no port"
# Each slot programmed the chip behind its own interface.
emu_ctl status >"$tmp/emu.status"
for i in 0 1 2 3; do
	uid=$(sed -n "s/^slot $i: chip [0-9]* uid \([0-9a-f]\{24\}\) .*/\1/p" "$tmp/emu.status")
	[ -n "$uid" ] || line_fail "no UID for emulator slot $i: $(cat "$tmp/emu.status")"
	got=$(sql "SELECT chip_uid FROM attempts WHERE slot = 'S$i' AND result = 'ok'")
	[ "$got" = "$uid" ] || line_fail "slot S$i installed $got, its interface holds $uid"
done
[ "$(sql "SELECT count(*) FROM attempts WHERE slot = 'S4'")" -eq 0 ] ||
	line_fail "slot S4 ran attempts without a port"
[ "$(check_chips_programmed "$tmp/emu-state")" -eq 4 ] || line_fail "not four chips programmed"
[ $((before - $(line_counter))) -eq 4 ] || line_fail "the counter did not move by 4"
echo "four slots on one four-port adapter installed their own chips; the bare serial was refused"

#!/usr/bin/env bash
# Adapters as the technician and the operator meet them: `sfi-boot list` and
# `sfictl ports --scan` list the emulated USB-serial adapters (port, serial number, USB
# port, interface, VID:PID, the spec naming each); a multi-port adapter (FT4232H: one
# serial number, one USB port, four interfaces) is bound one interface at a time with
# serial:SN#N or usb:PATH#N, the bare serial number is refused with the candidates, and
# the list follows interfaces and adapters being unplugged.
set -euo pipefail
. "$(dirname "$0")/common.sh"

T=(--timeout-ms 400)

# Two FT4232H-like adapters: H5EMU0000 on USB port 1-1 with slots 0-3, H5EMU0001 on 1-2
# with slots 4-5 (interfaces 0 and 1).
start_emu --umockdev --count 6 --ports-per-adapter 4

echo "# sfi-boot list --json"
expect 0 "$SFIBOOT" list --json
cp "$tmp/out" "$tmp/list.json"
python3 - "$tmp/list.json" <<'PY' || fail "sfi-boot list --json: $(cat "$tmp/list.json")"
import json, sys
doc = json.load(open(sys.argv[1]))
ports = doc["ports"]
assert len(ports) == 6, ports
for i, p in enumerate(ports):
    dev, iface = divmod(i, 4)
    sn = "H5EMU%04d" % dev
    want = {
        "path": "/dev/ttyUSB%d" % i, "serial": sn, "usb_path": "1-%d" % (dev + 1),
        "interface": iface, "vid": "0403", "pid": "6011",
        "spec": "serial:%s#%d" % (sn, iface),
        "ports_on_adapter": 4 if dev == 0 else 2,
        "manufacturer": "FTDI", "product": "Quad RS232-HS",
    }
    for k, v in want.items():
        assert p[k] == v, (i, k, p[k], v)
    assert sn in p["description"], p
PY

echo "# sfictl ports --scan: the same list without sfid"
expect 0 "$SFICTL" --json --socket "$tmp/none.sock" ports --scan
cmp -s "$tmp/out" "$tmp/list.json" || fail "sfictl ports --scan differs: $(cat "$tmp/out")"
expect 0 "$SFICTL" --socket "$tmp/none.sock" ports --scan --json
cmp -s "$tmp/out" "$tmp/list.json" || fail "sfictl ports --scan --json differs: $(cat "$tmp/out")"
expect 2 "$SFICTL" --socket "$tmp/none.sock" ports --scan --yaml
err_has "ports takes only --scan and --json, not '--yaml'"
expect 0 "$SFICTL" --socket "$tmp/none.sock" ports --scan
[ "$(wc -l <"$tmp/out")" -eq 7 ] || fail "ports --scan: not a header and 6 lines: $(cat "$tmp/out")"
grep -Eq '^/dev/ttyUSB5 +serial:H5EMU0001#1 +H5EMU0001 +1-2 +1 +0403:6011 ' "$tmp/out" ||
	fail "ports --scan table: $(cat "$tmp/out")"
expect 0 "$SFIBOOT" list
grep -Eq '^/dev/ttyUSB2 +serial:H5EMU0000#2 +H5EMU0000 +1-1 +2 +0403:6011 ' "$tmp/out" ||
	fail "sfi-boot list table: $(cat "$tmp/out")"
expect 1 "$SFIBOOT" list --yaml
err_has "list takes only --json"

echo "# each interface is its own chip"
declare -a uid
for i in 0 1 2 3 4 5; do
	expect 0 "$SFIBOOT" --port "/dev/ttyUSB$i" "${T[@]}" info
	uid[i]=$(sed -n 's/^uid: *\([0-9a-f]\{24\}\)$/\1/p' "$tmp/out")
	[ -n "${uid[i]}" ] || fail "info on ttyUSB$i shows no UID: $(cat "$tmp/out")"
done
[ "$(printf '%s\n' "${uid[@]}" | sort -u | wc -l)" -eq 6 ] || fail "UIDs not distinct: ${uid[*]}"
# by_spec SPEC SLOT: SPEC reaches the chip of SLOT.
by_spec() {
	expect 0 "$SFIBOOT" --port "$1" "${T[@]}" info
	grep -q "^port: *$(printf '/dev/ttyUSB%d' "$2")\$" "$tmp/out" || fail "$1 opened: $(cat "$tmp/out")"
	grep -q "^uid: *${uid[$2]}\$" "$tmp/out" || fail "$1 is not the chip of slot $2: $(cat "$tmp/out")"
}
by_spec serial:H5EMU0000#0 0
by_spec serial:H5EMU0000#2 2
by_spec serial:H5EMU0000#3 3
by_spec serial:H5EMU0001#1 5
by_spec usb:1-1#1 1
by_spec usb:1-2#0 4

echo "# ambiguous and wrong specs"
expect 2 "$SFIBOOT" --port serial:H5EMU0000 "${T[@]}" info
err_has "port 'serial:H5EMU0000' is a multi-port adapter with 4 ports; name one of them"
for i in 0 1 2 3; do
	err_has "serial:H5EMU0000#$i (/dev/ttyUSB$i)"
done
expect 2 "$SFIBOOT" --port usb:1-2 "${T[@]}" info
err_has "usb:1-2#0 (/dev/ttyUSB4), usb:1-2#1 (/dev/ttyUSB5)"
expect 2 "$SFIBOOT" --port usb:1-2#3 "${T[@]}" info
err_has "the adapter of port 'usb:1-2#3' has no interface 3; it has #0 (/dev/ttyUSB4), #1 (/dev/ttyUSB5)"
expect 2 "$SFIBOOT" --port serial:NOSUCH#1 "${T[@]}" info
err_has "no USB-serial adapter with serial number NOSUCH"
expect 1 "$SFIBOOT" --port serial:H5EMU0000#x info
err_has "'#x' is not an interface number"
expect 1 "$SFIBOOT" --port usb:1-x info
err_has "is not a USB port path"

echo "# unplugged interfaces and adapters leave the list"
emu_ctl unplug 1 | grep '^ok' >/dev/null || fail "unplug 1 refused"
expect 0 "$SFIBOOT" list --json
python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))["ports"]
assert [x["path"] for x in p] == ["/dev/ttyUSB%d" % i for i in (0, 2, 3, 4, 5)], p
assert [x["interface"] for x in p[:3]] == [0, 2, 3], p
' "$tmp/out" || fail "list after unplug 1: $(cat "$tmp/out")"
expect 2 "$SFIBOOT" --port serial:H5EMU0000#1 "${T[@]}" info
err_has "has no interface 1; it has #0 (/dev/ttyUSB0), #2 (/dev/ttyUSB2), #3 (/dev/ttyUSB3)"
by_spec serial:H5EMU0000#3 3
for s in 0 2 3; do
	emu_ctl unplug $s | grep '^ok' >/dev/null || fail "unplug $s refused"
done
expect 0 "$SFIBOOT" list --json
python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))["ports"]
assert [x["path"] for x in p] == ["/dev/ttyUSB4", "/dev/ttyUSB5"], p
' "$tmp/out" || fail "list after unplugging adapter 0: $(cat "$tmp/out")"
expect 2 "$SFIBOOT" --port serial:H5EMU0000#0 "${T[@]}" info
err_has "no USB-serial adapter with serial number H5EMU0000"
for s in 2 0; do
	emu_ctl plug $s | grep '^ok' >/dev/null || fail "plug $s refused"
done
by_spec serial:H5EMU0000#2 2
by_spec usb:1-1#0 0
expect 0 "$SFIBOOT" list --json
python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))["ports"]
assert [x["spec"] for x in p] == ["serial:H5EMU0000#0", "serial:H5EMU0000#2",
    "serial:H5EMU0001#0", "serial:H5EMU0001#1"], p
assert p[0]["ports_on_adapter"] == 2, p
' "$tmp/out" || fail "list after plugging back: $(cat "$tmp/out")"

stop_emu
echo "PASS"

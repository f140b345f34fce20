#!/bin/bash
# sfi-boot over USB DFU (--port dfu:...) against h5emu's chips presented as DfuSe devices:
# info (descriptors, alternates, UID and product state from OSFI GET_INFO), read, write,
# page and mass erase, a write on programmed flash refused with the DFU status's sentence
# and accepted with --erase;
# sfi-boot and the real dfu-util agree on the same chip (written by one, read by the other);
# cert, and install with a global license through FINALIZE, after which the chip comes back
# at the same port path with a new device number; a port bound by USB serial; wrong ports
# named plainly; a PUT_DATA
# whose transfer is lost is sent again; a dfuERROR block and a stall refused with a sentence,
# a slow GETSTATUS waited for.
set -euo pipefail

H5EMU=$(realpath "${1:?usage: test-sfi-boot-dfu.sh H5EMU SFI-BOOT SFI-PACK}")
BOOT=$(realpath "${2:?}")
PACK=$(realpath "${3:?}")
if ! "$H5EMU" --help 2>&1 | grep -q -- '--transport'; then
	echo "FAIL: h5emu has no --transport option (USB DFU emulation)" >&2
	exit 1
fi
if ! command -v dfu-util >/dev/null; then
	echo "dfu-util is not installed (scripts/deps); skipping"
	exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfi-boot-dfu.XXXXXX")
. "$(dirname "$0")/../emu-common.sh"
cd "$tmp"

openssl ecparam -name prime256v1 -genkey -noout -out ca.pem 2>/dev/null
head -c 32 /dev/urandom >global.bin
chmod 600 global.bin
start_emu --count 2 --transport dfu --ca-key ca.pem --global-key global.bin --ram-buffer 65536
grep -q '^h5emu: ready, 2 chips$' "$tmp/ready" || fail "no ready line: $(cat "$tmp/ready")"

# sb SLOT ARGS...: sfi-boot on chip SLOT's port; output in $tmp/out, $tmp/err, code in $rc.
# Control transfers may take 3 s (not 1): a loaded or sanitized machine delays h5emu's USB
# harness, and the faults below are explicit.
# Per transfer: 3 s; 8 s in a sanitizer build, where h5emu, the umockdev harness and
# sfi-boot all run several times slower.
STEP_MS=3000
[ -z "${SFID_SANITIZED:-}" ] || STEP_MS=8000
sb() {
	local slot=$1
	shift
	in_testbed "$BOOT" --port "dfu:usb:2-1.$((slot + 1))" --timeout-ms "$STEP_MS" "$@"
}
devnum() { sed -n 's/^port: .*(device \([0-9]*\))$/\1/p' "$tmp/out"; }

# info: the USB side, then the chip's own identity.
sb 0 info
[ "$rc" -eq 0 ] || fail "info: exit $rc: $(cat "$tmp/err")"
for want in '^port: *dfu:usb:2-1\.1 (device [0-9]*)$' \
	'^usb device: *0483:df11, bootloader version 0x03' \
	'^dfu: *version 0x011a (DfuSe), wTransferSize [0-9]*' \
	'^alt 0: *@Internal Flash   /0x08000000/256\*08Kg$' \
	'^alt [0-9]*: *@OSFI v1 ' \
	'^device id: *0x484 ' \
	'^uid: *[0-9a-f]\{24\}$' \
	'^product state: *Open (0xed)$'; do
	grep -q "$want" "$tmp/out" || fail "info: no line '$want': $(cat "$tmp/out")"
done
uid0=$(sed -n 's/^uid: *//p' "$tmp/out")
serial0=$(sed -n 's/^usb serial: *\([^ ]*\) .*/\1/p' "$tmp/out")
[ "$uid0" != "$serial0" ] || fail "info printed the USB serial as the UID"
cp "$tmp/out" info0.txt
# Bound by the USB serial string instead of the port: the same chip (its UID says so).
in_testbed "$BOOT" --port "dfu:serial:$serial0" info
[ "$rc" -eq 0 ] || fail "info by serial: exit $rc: $(cat "$tmp/err")"
grep -q "^uid: *$uid0$" "$tmp/out" || fail "info by serial: another chip: $(cat "$tmp/out")"
in_testbed "$BOOT" --port dfu:serial:NOSUCHSERIAL info
[ "$rc" -eq 2 ] && grep -q 'no DFU device (0483:df11) at serial NOSUCHSERIAL' "$tmp/err" ||
	fail "unknown serial: exit $rc: $(cat "$tmp/err")"
sb 1 info
uid1=$(sed -n 's/^uid: *//p' "$tmp/out")
[ -n "$uid1" ] && [ "$uid1" != "$uid0" ] || fail "chips 0 and 1 report UIDs '$uid0' '$uid1'"

# sfi-boot writes, dfu-util reads; dfu-util writes, sfi-boot reads.
head -c 262144 /dev/urandom >a.bin
sb 0 write 0x08000000 a.bin
[ "$rc" -eq 0 ] || fail "write: exit $rc: $(cat "$tmp/err")"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000:262144 -U a-du.bin
[ "$rc" -eq 0 ] || fail "dfu-util -U: $(tail -n 3 "$tmp/err")"
cmp a.bin a-du.bin || fail "dfu-util reads other bytes than sfi-boot wrote"
head -c 100003 /dev/urandom >b.bin
in_testbed dfu-util -p 2-1.2 -a 0 -s 0x08000000 -D b.bin
[ "$rc" -eq 0 ] || fail "dfu-util -D: $(tail -n 3 "$tmp/err")"
sb 1 read 0x08000000 100003 b-sb.bin
[ "$rc" -eq 0 ] || fail "read: exit $rc: $(cat "$tmp/err")"
cmp b.bin b-sb.bin || fail "sfi-boot reads other bytes than dfu-util wrote"

# A write on programmed flash: refused (exit 3) with the device's status in a sentence.
sb 0 write 0x08000000 a.bin
[ "$rc" -eq 3 ] || fail "write over programmed flash: exit $rc, expected 3: $(cat "$tmp/err")"
grep -q 'not erased' "$tmp/err" || fail "write over programmed flash: $(cat "$tmp/err")"
# With --erase the sectors it covers are erased first (and the write verified).
head -c 20000 /dev/urandom >c.bin
sb 1 --erase write 0x08000000 c.bin
[ "$rc" -eq 0 ] || fail "write --erase: exit $rc: $(cat "$tmp/err")"
sb 1 read 0x08000000 24576 c-back.bin
cmp -n 20000 c.bin c-back.bin || fail "write --erase: other bytes read back"
[ "$(head -c 24576 c-back.bin | tail -c 4576 | tr -d '\377' | wc -c)" -eq 0 ] ||
	fail "write --erase: the rest of the third sector is not erased"

# Page erase: sector 1 only; then mass erase.
sb 0 erase 1
[ "$rc" -eq 0 ] || fail "erase 1: exit $rc: $(cat "$tmp/err")"
sb 0 read 0x08000000 24576 e.bin
[ "$rc" -eq 0 ] || fail "read after erase: $(cat "$tmp/err")"
cmp -n 8192 a.bin e.bin || fail "page erase touched sector 0"
[ "$(head -c 16384 e.bin | tail -c 8192 | tr -d '\377' | wc -c)" -eq 0 ] || fail "sector 1 not erased"
cmp -i 16384 -n 8192 a.bin e.bin || fail "page erase touched sector 2"
sb 0 erase mass
[ "$rc" -eq 0 ] || fail "erase mass: exit $rc: $(cat "$tmp/err")"
sb 0 read 0x08000000 262144 m.bin
[ "$(tr -d '\377' <m.bin | wc -c)" -eq 0 ] || fail "flash not erased after mass erase"

# cert, then install with a global license; the chip re-enumerates after FINALIZE.
sb 1 cert --out chip1.cert
[ "$rc" -eq 0 ] || fail "cert: exit $rc: $(cat "$tmp/err")"
[ "$(stat -c %s chip1.cert)" -eq 149 ] || fail "certificate is not 149 bytes"
grep -q "$uid1" "$tmp/out" || fail "cert names another chip: $(cat "$tmp/out")"
# A leading zero byte: random data must not look like Intel HEX (':') or ELF to sfi-pack.
{ printf '\000'; head -c 199999 /dev/urandom; } >fw.bin
printf 'PRODUCT_STATE, Closed\n' >ob.csv
"$PACK" create --out fw.sfi --firmware fw.bin@0x08000000 --options ob.csv --generate-key k.bin \
	--version 1 --ram-buffer 65536 >/dev/null
"$PACK" license --global --global-key global.bin --key k.bin --image fw.sfi --out fw.lic >/dev/null
before=$(sed -n 's/^port: .*(device \([0-9]*\))$/\1/p' info0.txt)
sb 0 install --license fw.lic --expect-state Closed fw.sfi
[ "$rc" -eq 0 ] || fail "install: exit $rc: $(cat "$tmp/err")"
grep -q "^installed fw.sfi on chip $uid0: session finalized, product state Closed" "$tmp/out" ||
	fail "install: $(cat "$tmp/out")"
cmp -n 200000 fw.bin "$tmp/state/chip0/memory.bin" || fail "chip 0's flash is not the firmware"
sb 0 info
[ "$rc" -eq 0 ] || fail "info after install: $(cat "$tmp/err")"
grep -q '^product state: *Closed (0x72)$' "$tmp/out" || fail "info after install: $(cat "$tmp/out")"
after=$(devnum)
[ -n "$after" ] && [ "$after" != "$before" ] ||
	fail "the chip did not come back at a new device number ($before, then '$after')"
grep -q "^uid: *$uid0$" "$tmp/out" || fail "another chip came back at 2-1.1: $(cat "$tmp/out")"

# Ports named plainly.
in_testbed "$BOOT" --port dfu:usb:2-9 info
[ "$rc" -eq 2 ] || fail "absent port: exit $rc, expected 2"
grep -q 'no DFU device (0483:df11) at port 2-9' "$tmp/err" || fail "absent port: $(cat "$tmp/err")"
in_testbed "$BOOT" --port dfu: info
[ "$rc" -eq 2 ] || fail "dfu: with two devices: exit $rc, expected 2"
grep -q 'several DFU devices' "$tmp/err" || fail "dfu: with two devices: $(cat "$tmp/err")"
in_testbed "$BOOT" --port dfu:usb:x info
[ "$rc" -eq 2 ] || fail "malformed port: exit $rc"
grep -q 'not a DFU port' "$tmp/err" || fail "malformed port: $(cat "$tmp/err")"
# A PUT_DATA DNLOAD that is never answered (h5emu fault): the transfer times out and the
# chunk is sent again (harmless by OSFI's rule for a re-sent chunk); the install goes on.
start_emu --count 2 --transport dfu --ca-key ca.pem --global-key global.bin --ram-buffer 65536 \
	--fault dfu=dnload,chip=1,alt=3,nth=10,once,action=silent
sb 1 erase mass
[ "$rc" -eq 0 ] || fail "erase mass on chip 1: $(cat "$tmp/err")"
sb 1 -v install --license fw.lic fw.sfi
[ "$rc" -eq 0 ] || fail "install with a lost PUT_DATA: exit $rc: $(grep -v 'debug: dfu: [0-9]' "$tmp/err")"
grep -q 'PUT_DATA timed out, sending it again' "$tmp/err" ||
	fail "the lost PUT_DATA was not sent again: $(grep -v 'debug: dfu: [0-9]' "$tmp/err")"
cmp -n 200000 fw.bin "$tmp/state/chip1/memory.bin" || fail "chip 1's flash is not the firmware"

# Device faults on new chips (chip 0 and 1 are Closed now): a data block ending in dfuERROR
# errPROG, then a stalled DNLOAD, each refused (exit 3) with a sentence and the device left
# usable; a GETSTATUS answered 400 ms late on chip 1 only slows its write down.
stop_emu
rm -rf "$tmp/state"
start_emu --count 2 --transport dfu \
	--fault dfu=dnload,chip=0,alt=0,block=3,once,action=dfu-error:6 \
	--fault dfu=dnload,chip=0,alt=0,block=5,once,action=stall \
	--fault dfu=getstatus,chip=1,nth=12,once,action=delay:400
sb 0 erase mass
[ "$rc" -eq 0 ] || fail "erase mass on chip 0: $(cat "$tmp/err")"
sb 0 write 0x08000000 a.bin
[ "$rc" -eq 3 ] || fail "write into a dfuERROR block: exit $rc, expected 3: $(cat "$tmp/err")"
grep -q 'errPROG' "$tmp/err" && grep -q '0x08000800' "$tmp/err" ||
	fail "write into a dfuERROR block: $(cat "$tmp/err")"
sb 0 --erase write 0x08000000 a.bin
[ "$rc" -eq 3 ] || fail "write into a stall: exit $rc, expected 3: $(cat "$tmp/err")"
grep -q 'stall' "$tmp/err" || fail "write into a stall: $(cat "$tmp/err")"
sb 0 --erase write 0x08000000 a.bin
[ "$rc" -eq 0 ] || fail "write after the faults: exit $rc: $(cat "$tmp/err")"
sb 1 --erase write 0x08000000 a.bin
[ "$rc" -eq 0 ] || fail "write with a slow GETSTATUS: exit $rc: $(cat "$tmp/err")"
# sfi-boot never asked again before the bwPollTimeout it was given had passed.
! grep -q "before the bwPollTimeout" "$tmp/emu.log" ||
	fail "sfi-boot did not wait bwPollTimeout: $(grep -m 5 "before the bwPollTimeout" "$tmp/emu.log")"
echo "ok"

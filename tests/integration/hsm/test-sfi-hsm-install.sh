#!/usr/bin/env bash
# End to end with the emulator: a license from sfi-hsm for an emulated chip's certificate
# (read by sfi-boot cert) installs on that chip through sfi-boot install and is refused by
# another chip; that chip's own license then installs. Two licenses, two counts.
set -euo pipefail
. "$(dirname "$0")/hsm-lib.sh"
: "${H5EMU:?}" "${SFI_BOOT:?}" "${SFI_PACK:?}"
emu_pid=
cleanup() {
	if [ -n "$emu_pid" ]; then
		kill "$emu_pid" 2>/dev/null || true
		wait "$emu_pid" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

openssl ecparam -name prime256v1 -genkey -noout -out emu-ca.pem 2>/dev/null
openssl ec -in emu-ca.pem -pubout -out emu-ca.pub 2>/dev/null
timeout 200 "$H5EMU" --count 2 --dir "$WORK/emu" --umockdev --state-dir "$WORK/state" \
	--ca-key emu-ca.pem --ram-buffer 65536 >ready.txt 2>emu.log &
emu_pid=$!
for _ in $(seq 100); do
	grep -q ready ready.txt 2>/dev/null && break
	sleep 0.1
done
grep -q ready ready.txt || fail "h5emu did not start: $(cat emu.log)"
mapfile -t uenv <emu/umockdev.env
sb() { local k=$1; shift; timeout 120 env "${uenv[@]}" "$SFI_BOOT" --port "/dev/ttyUSB$k" "$@"; }

sb 0 info >info.txt || fail "sfi-boot info on chip 0 failed"
if ! grep -q '^commands:.* 51' info.txt; then
	echo "SKIP: the emulated bootloader does not list Extended Special (0x51), which OSFI needs"
	exit 77
fi

head -c 16384 /dev/urandom >fw.bin
printf "PRODUCT_STATE, Closed\n" >ob.csv
"$SFI_PACK" create --out fw.sfi --firmware fw.bin@0x08000000 --options ob.csv --generate-key emu-k.bin \
	--version 1 >/dev/null

make_token line
hsm provision line --image-key emu-k.bin --image fw.sfi --max-count 2 --ca-pub emu-ca.pub >/dev/null
sb 0 cert --out chip0.cert >/dev/null
sb 1 cert --out chip1.cert >/dev/null
hsm license line --cert chip0.cert --image fw.sfi --out chip0.lic >/dev/null

if sb 1 install --license chip0.lic fw.sfi >/dev/null 2>refusal.err; then
	fail "chip 1 accepted chip 0's license"
fi
grep -q "LICENSE_WRONG_CHIP" refusal.err || fail "chip 1 refusal: $(cat refusal.err)"
sb 0 install --license chip0.lic fw.sfi >/dev/null || fail "chip 0 refused its own license"
cmp -n 16384 fw.bin state/chip0/memory.bin || fail "chip 0 flash differs from the firmware"

hsm license line --cert chip1.cert --image fw.sfi --out chip1.lic >/dev/null
sb 1 install --license chip1.lic fw.sfi >/dev/null || fail "chip 1 refused its own license"
cmp -n 16384 fw.bin state/chip1/memory.bin || fail "chip 1 flash differs from the firmware"
[ "$(left line)" = 0 ] || fail "two licenses did not cost two counts"
echo "sfi-hsm licenses install on their emulated chips only"

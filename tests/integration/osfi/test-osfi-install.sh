#!/usr/bin/env bash
# OSFI end to end: sfi-pack images (BIN, HEX, ELF; 1 MiB, split to the RAM buffer; option
# bytes ending in Closed) installed by sfi-boot into h5emu chips with global licenses and
# with chip licenses made here by an independent libcrypto helper; tampered images and
# licenses refused with their own status, the chip still installable; a module area needs
# its module's license.
set -euo pipefail

build=${SFID_BUILD_ROOT:?}
src=${SFID_SOURCE_ROOT:?}
here=$src/tests/integration/osfi
h5emu=${H5EMU:-$build/emulator/h5emu}
pack=$build/tools/sfi-pack/sfi-pack
boot=$build/tools/sfi-boot/sfi-boot
mklicense=$build/tests/integration/osfi/osfi-mklicense

tmp=$(mktemp -d)
emu_pid=
cleanup() {
	if [ -n "$emu_pid" ]; then
		kill "$emu_pid" 2>/dev/null || true
		wait "$emu_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"

fail() { echo "FAIL: $*" >&2; exit 1; }

openssl ecparam -name prime256v1 -genkey -noout -out ca.pem 2>/dev/null
head -c 32 /dev/urandom > global.bin
chmod 600 global.bin
timeout 300 "$h5emu" --count 6 --dir "$tmp/emu" --umockdev --state-dir "$tmp/state" \
	--ca-key ca.pem --global-key global.bin --ram-buffer 65536 > ready.txt 2> emu.log &
emu_pid=$!
for _ in $(seq 100); do
	grep -q ready ready.txt 2>/dev/null && break
	sleep 0.1
done
grep -q ready ready.txt || fail "h5emu did not start: $(cat emu.log)"
mapfile -t uenv < emu/umockdev.env

# chip K is /dev/ttyUSBK behind the harness.
sb() { local k=$1; shift; timeout 120 env "${uenv[@]}" "$boot" --port "/dev/ttyUSB$k" "$@"; }

sb 0 info > info.txt || fail "sfi-boot info on chip 0 failed"
if ! grep -q '^commands:.* 51' info.txt; then
	echo "SKIP: the emulated bootloader does not list Extended Special (0x51), which OSFI needs" >&2
	exit 77
fi
# --help gives the install synopsis whole.
"$boot" --help | grep -F -- '--module-license ID=FILE]... [--expect-state STATE] IMAGE' >/dev/null ||
	fail "sfi-boot --help cuts the install synopsis: $("$boot" --help | grep install)"
# The product state comes from OSFI GET_INFO on a chip that speaks it.
grep -q '^product state: Open (0xed)$' info.txt || fail "info on a new chip: $(cat info.txt)"
grep -q '^installed: *no OSFI session finalized$' info.txt || fail "info: $(cat info.txt)"

# Firmware and option bytes.
head -c 1048576 /dev/urandom > fw.bin
python3 "$here/mkfw.py" hex fw.bin fw.hex 0x08000000
python3 "$here/mkfw.py" elf fw.bin fw.elf 0x08000000
printf '# final state\nWRP1R_PRG, 0xffffff00\nPRODUCT_STATE, Closed\n' > ob.csv
"$pack" create --out bin.sfi --firmware fw.bin@0x08000000 --options ob.csv --generate-key k.bin \
	--version 1 --ram-buffer 65536
# The option CSV is strict (docs/protocol.md §4.5): each refused with exit 2, naming the
# line and the spelling to use; no image is written.
while IFS='|' read -r bad want; do
	printf "$bad\n" > bad.csv
	set +e
	"$pack" create --out bad.sfi --firmware fw.bin@0x08000000 --options bad.csv --key k.bin \
		2> bad.err
	rc=$?
	set -e
	[ "$rc" -eq 2 ] || fail "option CSV '$bad': exit $rc, expected 2: $(cat bad.err)"
	grep -qF "$want" bad.err || fail "option CSV '$bad': $(cat bad.err)"
	[ ! -e bad.sfi ] || fail "option CSV '$bad': an image was written"
done <<'CSV'
WRP1R_PRG, 0xffffff00|no final product state
PRODUCT_STATE, 0x72|line 1: product state '0x72': write it `Closed`
PRODUCT_STATE, OPEN|line 1: product state 'OPEN': write it `Open`
OPTSR_PRG, 0x1700\nPRODUCT_STATE, Closed|line 1: OPTSR_PRG bits 15..8 (0x17) disagree
CSV
"$pack" create --out hex.sfi --firmware fw.hex --options ob.csv --key k.bin --version 1
"$pack" create --out elf.sfi --firmware fw.elf --options ob.csv --key k.bin --version 1
for i in bin hex elf; do
	"$pack" check --key k.bin $i.sfi > /dev/null || fail "$i.sfi does not authenticate"
	areas=$("$pack" info --json $i.sfi | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["areas"]))')
	[ "$areas" -ge 17 ] || fail "$i.sfi has $areas areas, expected the firmware split in 64 KiB areas"
done
"$pack" license --global --global-key global.bin --key k.bin --image bin.sfi --out bin.lic
"$pack" license --global --global-key global.bin --key k.bin --image elf.sfi --out elf.lic

check_installed() { # chip
	local k=$1
	cmp -n 1048576 fw.bin "state/chip$k/memory.bin" || fail "chip $k: flash differs from the firmware"
	grep -q '^opt1=0x00007200$' "state/chip$k/chip.conf" || fail "chip $k: OPTSR_PRG not applied"
	grep -q '^opt7=0xffffff00$' "state/chip$k/chip.conf" || fail "chip $k: WRP1R_PRG not applied"
	if sb "$k" read 0x08000000 16 r.bin 2> read.err; then
		fail "chip $k: memory read after Closed was not refused"
	fi
}

# (1) BIN with a global license, ELF with a global license, HEX with a chip license.
sb 0 install --license bin.lic --expect-state Closed bin.sfi > out0.txt
grep -q 'product state Closed' out0.txt || fail "chip 0: $(cat out0.txt)"
check_installed 0
sb 1 install --license elf.lic --expect-state Closed elf.sfi > /dev/null
check_installed 1
sb 2 cert --out chip2.cert > /dev/null
"$mklicense" chip2.cert hex.sfi k.bin hex-chip2.lic
sb 2 install --license hex-chip2.lic --expect-state Closed hex.sfi > /dev/null
check_installed 2
sb 0 cert --out chip0.cert > /dev/null
# A Closed chip still tells its product state and the image its last session installed.
sb 0 info > info.txt || fail "sfi-boot info on the Closed chip 0 failed"
bin_id=$("$pack" info --json bin.sfi | python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])')
grep -q '^product state: Closed (0x72)$' info.txt || fail "info after install: $(cat info.txt)"
grep -q '^osfi session: *finalized, last status OK$' info.txt || fail "info: $(cat info.txt)"
grep -q "^installed: *$bin_id " info.txt || fail "info does not name image $bin_id: $(cat info.txt)"

# A Closed chip refuses a second install before anything is sent.
if sb 0 install --license bin.lic bin.sfi 2> again.err; then fail "chip 0 installed twice"; fi
grep -q 'not Open' again.err || fail "second install: $(cat again.err)"

# (2) Tampering on chip 3: each refused with its own status, the chip stays installable.
sb 3 cert --out chip3.cert > /dev/null
"$mklicense" chip3.cert bin.sfi k.bin good3.lic
flip() { # in out offset
	cp "$1" "$2"
	local b
	b=$(od -An -tu1 -j "$3" -N1 "$2" | tr -d ' ')
	printf "$(printf '\\%03o' $((b ^ 0x5a)))" | dd of="$2" bs=1 seek="$3" conv=notrunc 2>/dev/null
}
expect_refusal() { # status license image
	local st=$1 lic=$2 img=$3
	if sb 3 install --license "$lic" "$img" > /dev/null 2> refusal.err; then
		fail "chip 3 accepted what should give $st"
	fi
	grep -q "$st" refusal.err || fail "expected $st, got: $(cat refusal.err)"
}
flip bin.sfi t-header.sfi 20        # flags: the chip's header check
flip bin.sfi t-desc.sfi $((64 + 2)) # area version: authenticated descriptor bytes
flip bin.sfi t-data.sfi $((64 + 48 + 70000 % 65536))
flip bin.sfi t-tag.sfi $((64 + 40))
flip bin.sfi t-tag-header.sfi 50
# The host parser rejects a malformed header itself; flip a byte it does not interpret.
flip bin.sfi t-nonce.sfi 30
# A changed header changes the image id: the license no longer matches it...
expect_refusal IMAGE_MISMATCH good3.lic t-nonce.sfi
# ...and a license made for the changed header meets the header tag check.
"$mklicense" chip3.cert t-tag-header.sfi k.bin tampered-header.lic
expect_refusal HEADER_AUTH tampered-header.lic t-tag-header.sfi
expect_refusal AREA_AUTH good3.lic t-desc.sfi
expect_refusal AREA_AUTH good3.lic t-data.sfi
expect_refusal AREA_AUTH good3.lic t-tag.sfi
"$mklicense" chip3.cert bin.sfi k.bin other-chip.lic --uid-from chip0.cert
expect_refusal LICENSE_WRONG_CHIP other-chip.lic bin.sfi
"$mklicense" chip3.cert bin.sfi k.bin other-image.lic --image-id-from hex.sfi
expect_refusal IMAGE_MISMATCH other-image.lic bin.sfi
"$mklicense" chip3.cert bin.sfi k.bin other-device.lic --device 0x474
expect_refusal LICENSE_WRONG_DEVICE other-device.lic bin.sfi
if sb 3 install --license bin.lic t-header.sfi 2> parse.err; then fail "malformed header accepted"; fi
grep -q 'header is malformed' parse.err || fail "host parser: $(cat parse.err)"
sb 3 install --license good3.lic --expect-state Closed bin.sfi > /dev/null
check_installed 3

# (3) A module with its own key: refused without its license, installed with it.
head -c 20000 /dev/urandom > mod.bin
head -c 16 /dev/urandom > mk.bin
chmod 600 mk.bin
"$pack" create --out mod.sfi --firmware fw.bin@0x08000000 --module mod.bin@0x08100000:7:mk.bin \
	--options ob.csv --key k.bin --version 1 --ram-buffer 16384
"$pack" check --key k.bin --module-key 7:mk.bin mod.sfi > /dev/null
if "$pack" check --key k.bin mod.sfi 2> /dev/null; then fail "check passed without the module key"; fi
"$pack" license --global --global-key global.bin --key k.bin --image mod.sfi --out mod.lic
"$pack" license --global --global-key global.bin --key mk.bin --image mod.sfi --module 7 --out mod7.lic
if sb 4 install --license mod.lic mod.sfi 2> mod.err; then fail "module installed without its license"; fi
grep -q MODULE_LICENSE_MISSING mod.err || fail "module without license: $(cat mod.err)"
sb 4 install --license mod.lic --module-license 7=mod7.lic --expect-state Closed mod.sfi > /dev/null
cmp -n 20000 mod.bin <(tail -c +$((0x100000 + 1)) state/chip4/memory.bin) || fail "module not in flash"

# An image whose areas exceed the chip's RAM buffer is refused by the host with a clear hint.
"$pack" create --out big.sfi --firmware fw.bin@0x08000000 --options ob.csv --key k.bin \
	--ram-buffer 131072
"$pack" license --global --global-key global.bin --key k.bin --image big.sfi --out big.lic
if sb 5 install --license big.lic big.sfi 2> big.err; then fail "oversized areas accepted"; fi
grep -q -- '--ram-buffer 65536' big.err || fail "RAM buffer: $(cat big.err)"
echo "osfi install: all scenarios passed"

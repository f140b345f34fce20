#!/bin/bash
# The real dfu-util against h5emu's chips presented as USB DfuSe devices (--transport dfu,
# umockdev's usbdevfs emulation): -l lists both chips with their alternate settings at stable
# port paths; a 256 KiB random image goes in (-D) and comes back identical (-U) while the
# other chip stays erased; a mass erase leaves only what is written after it; :leave resets the
# chip, which comes back at the same port path with a new device number; lsusb decodes the
# DFU functional descriptor.
set -euo pipefail

H5EMU=${1:?usage: dfu-util.sh PATH-TO-H5EMU}
for p in dfu-util lsusb; do
	if ! command -v "$p" >/dev/null; then
		echo "$p is not installed (scripts/deps); skipping"
		exit 77
	fi
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dfu-util.XXXXXX")
. "$(dirname "$0")/../emu-common.sh"

start_emu --count 2 --transport dfu
grep -q '^h5emu: ready, 2 chips$' "$tmp/ready" || fail "no ready line: $(cat "$tmp/ready")"
[ -s "$tmp/emu/umockdev.env" ] || fail "no umockdev.env"

# devnum SLOT: the slot's current USB device number from h5emu's status.
devnum() {
	emu_ctl status | sed -n "s/^slot $1: .* usb 2-1\.$(($1 + 1)) device \([0-9]*\)$/\1/p"
}

in_testbed dfu-util -l
[ "$rc" -eq 0 ] || fail "dfu-util -l failed: $(cat "$tmp/err")"
for slot in 0 1; do
	path="2-1.$((slot + 1))"
	for alt in '0, name="@Internal Flash   /0x08000000/256\*08Kg"' \
		'1, name="@Option Bytes   /0x40022000/01\*048 e"' \
		'2, name="@OTP Memory   /0x08FFF000/01\*2Ke"' \
		'3, name="@OSFI v1 /0x00000000/01\*1Ke"'; do
		grep -q "^Found DFU: \[0483:df11\] ver=0300, devnum=[0-9]*, cfg=1, intf=0, path=\"$path\", alt=$alt" \
			"$tmp/out" || fail "dfu-util -l: no alt $alt at $path: $(cat "$tmp/out")"
	done
done
[ "$(grep -c '^Found DFU' "$tmp/out")" -eq 8 ] || fail "dfu-util -l: not 8 alternate settings"

head -c 262144 /dev/urandom >"$tmp/image.bin"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000 -D "$tmp/image.bin"
[ "$rc" -eq 0 ] || fail "dfu-util -D failed: $(tail -n 5 "$tmp/err" "$tmp/out")"
grep -q 'File downloaded successfully' "$tmp/out" || fail "dfu-util -D: no success line"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000:262144 -U "$tmp/back.bin"
[ "$rc" -eq 0 ] || fail "dfu-util -U failed: $(tail -n 5 "$tmp/err" "$tmp/out")"
cmp "$tmp/image.bin" "$tmp/back.bin" || fail "read-back differs from the image"

# The other chip was not touched.
in_testbed dfu-util -p 2-1.2 -a 0 -s 0x08000000:4096 -U "$tmp/other.bin"
[ "$rc" -eq 0 ] || fail "dfu-util -U of slot 1 failed"
[ "$(tr -d '\377' <"$tmp/other.bin" | wc -c)" -eq 0 ] || fail "slot 1 is not erased"

# Mass erase, then 100 bytes: the rest of the 256 KiB reads erased.
head -c 100 /dev/urandom >"$tmp/small.bin"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000:mass-erase:force -D "$tmp/small.bin"
[ "$rc" -eq 0 ] || fail "mass erase failed: $(tail -n 5 "$tmp/err" "$tmp/out")"
grep -q 'Performing mass erase' "$tmp/out" || fail "dfu-util did not mass-erase"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000:262144 -U "$tmp/erased.bin"
[ "$rc" -eq 0 ] || fail "read after mass erase failed: $(tail -n 5 "$tmp/err" "$tmp/out")"
cmp -n 100 "$tmp/small.bin" "$tmp/erased.bin" || fail "the 100 bytes after mass erase differ"
[ "$(tail -c +101 "$tmp/erased.bin" | tr -d '\377' | wc -c)" -eq 0 ] ||
	fail "flash not erased beyond the 100 bytes after mass erase"

# :leave: the chip resets, goes away and comes back at the same path, new device number.
before=$(devnum 0)
[ -n "$before" ] && [ "$before" -gt 0 ] || fail "no device number for slot 0: $(emu_ctl status)"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000:leave -D "$tmp/small.bin"
[ "$rc" -eq 0 ] || fail "dfu-util :leave failed: $(tail -n 5 "$tmp/err" "$tmp/out")"
grep -q 'Submitting leave request' "$tmp/out" || fail "dfu-util sent no leave request"
after=
for _ in $(seq 100); do
	after=$(devnum 0)
	[ -n "$after" ] && [ "$after" -gt 0 ] && [ "$after" -ne "$before" ] && break
	sleep 0.05
done
[ -n "$after" ] && [ "$after" -ne "$before" ] && [ "$after" -gt 0 ] ||
	fail "slot 0 did not re-enumerate after :leave (device $before, now '$after')"
in_testbed dfu-util -l
grep -q "devnum=$after, cfg=1, intf=0, path=\"2-1.1\", alt=0" "$tmp/out" ||
	fail "dfu-util -l does not see slot 0 as device $after: $(cat "$tmp/out")"
in_testbed dfu-util -p 2-1.1 -a 0 -s 0x08000000:100 -U "$tmp/after-reset.bin"
[ "$rc" -eq 0 ] || fail "read after the reset failed: $(tail -n 5 "$tmp/err" "$tmp/out")"
cmp "$tmp/small.bin" "$tmp/after-reset.bin" || fail "flash lost across the reset"

# lsusb decodes the descriptors, the DFU functional descriptor included.
in_testbed lsusb -v -d 0483:df11
for re in 'idVendor +0x0483 STMicroelectronics' 'idProduct +0xdf11' 'bcdDevice +3\.00' \
	'iProduct +2 DFU in FS Mode' 'bcdDFUVersion +1\.1a' 'wTransferSize +2048 bytes' \
	'iInterface +7 @OSFI v1 /0x00000000/01\*1Ke' 'bInterfaceClass +254 Application Specific'; do
	grep -Eq "$re" "$tmp/out" || fail "lsusb -v: no '$re': $(head -n 80 "$tmp/out")"
done

kill -TERM "$emu_pid"
rc=0
wait "$emu_pid" || rc=$?
emu_pid=
[ "$rc" -eq 0 ] || fail "h5emu exited with $rc on SIGTERM"
echo "dfu-util: -l, 256 KiB -D/-U, mass erase, :leave re-enumeration, lsusb: ok"

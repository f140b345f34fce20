#!/usr/bin/env bash
# The link vtable's memory operations (read, write, erase, go) against h5emu: over UART
# (AN3155) and over USB DfuSe on the same chips (--transport both), each checked through
# the other wire; and the one retry policy: a lost answer to Read Memory, to an Extended
# Erase whose page list reached the chip, or to a Write Memory whose data had not, is retried
# and the operation succeeds; a lost ACK after a Write Memory's data or a Go's address is
# never retried and the operation fails with a sentence naming the command, step and address.
set -euo pipefail
: "${MEM_OPS:?run through meson test}"
H5EMU=${1:?usage: test-mem-ops.sh PATH-TO-H5EMU}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mem-ops.XXXXXX")
. "$(dirname "$0")/../emu-common.sh"

dfu=1
if ! "$H5EMU" --help 2>&1 | grep -q -- '--transport'; then
	dfu=0
fi
transport=(--transport uart)
[ "$dfu" = 1 ] && transport=(--transport both)
# chip 1: the faults, once each, in command order.
start_emu --count 2 "${transport[@]}" \
	--fault chip=1,cmd=0x11,nth=2,byte=5,action=drop \
	--fault chip=1,cmd=0x44,nth=1,byte=1,action=drop \
	--fault chip=1,cmd=0x31,nth=1,byte=0,action=drop \
	--fault chip=1,cmd=0x31,nth=4,byte=2,action=drop \
	--fault chip=1,cmd=0x21,nth=1,byte=1,action=drop
c0=tty:$tmp/emu/chip0
c1=tty:$tmp/emu/chip1

# mem PORT OP...: runs mem-ops (in the testbed for a DFU port); sets $rc, output in
# $tmp/out.
mem() {
	case $1 in
	dfu:*) in_testbed "$MEM_OPS" "$@" ;;
	*)
		set +e
		timeout 60 "$MEM_OPS" "$@" >"$tmp/out" 2>"$tmp/err"
		rc=$?
		set -e
		[ "$rc" -ne 124 ] || fail "mem-ops $* hung (killed after 60 s)"
		;;
	esac
}
expect_ok() {
	[ "$rc" -eq 0 ] || fail "mem-ops $1 failed ($rc): $(cat "$tmp/out" "$tmp/err")"
}

head -c 8292 /dev/urandom >"$tmp/a.bin"	# two sectors' worth, tail not a multiple of 16
head -c 300 /dev/urandom >"$tmp/b.bin"
mem "$c0" probe identify erase 0,1,5 write 0x08000000 "$tmp/a.bin" \
	write 0x0800a000 "$tmp/b.bin" read 0x08000000 8292 "$tmp/a.back" \
	read 0x0800a000 300 "$tmp/b.back" read 0x08002064 28 "$tmp/pad.back" \
	read 0x08fff800 12 "$tmp/uid.back"
expect_ok "uart chip 0"
cmp "$tmp/a.bin" "$tmp/a.back" || fail "UART: sectors 0-1 read back differ"
cmp "$tmp/b.bin" "$tmp/b.back" || fail "UART: sector 5 read back differs"
[ "$(od -An -tx1 "$tmp/pad.back" | tr -d ' \n')" = "$(printf "ff%.0s" $(seq 28))" ] ||
	fail "UART: the write unit's padding is not 0xFF: $(od -An -tx1 "$tmp/pad.back")"
[ "$(od -An -tx1 "$tmp/uid.back" | tr -d ' \n')" != "000000000000000000000000" ] ||
	fail "UART: the UID read as zeros"

# Arguments the vtable refuses before anything is sent.
mem "$c0" write 0x08000004 "$tmp/b.bin"
[ "$rc" -eq 1 ] && grep -q "write: fail" "$tmp/out" || fail "an unaligned flash write was accepted"
mem "$c0" erase 256
[ "$rc" -eq 1 ] && grep -q "erase: fail" "$tmp/out" || fail "sector 256 was accepted"

# Sector 5 again: erased means 0xFF.
mem "$c0" erase 5 read 0x0800a000 300 "$tmp/b.erased"
expect_ok "uart erase"
[ "$(od -An -tx1 -v "$tmp/b.erased" | tr -d ' \n' | tr -d f)" = "" ] || fail "sector 5 not erased"

# The retry policy on chip 1: Read Memory's 2nd block loses a data byte (retried), Extended
# Erase loses the ACK after its list (retried), Write Memory 1 loses its command ACK
# (nothing reached the chip: retried, the retry is the 2nd), Write Memory 4 (the block at
# 0x200) loses the ACK after its data (committed: never sent again).
head -c 2048 /dev/urandom >"$tmp/c.bin"
mem "$c1" probe read 0x08fff800 12 "$tmp/u1" read 0x08000000 512 "$tmp/r1" erase 0 \
	write 0x08000000 "$tmp/c.bin"
[ "$rc" -eq 1 ] || fail "a Write Memory whose data ACK was lost did not fail: $(cat "$tmp/out")"
grep -q "^read: ok 512" "$tmp/out" || fail "Read Memory was not retried: $(cat "$tmp/out")"
grep -q "^erase: ok" "$tmp/out" || fail "Extended Erase was not retried: $(cat "$tmp/out")"
grep -q "^write: fail .*Write Memory.* at 0x08000200" "$tmp/out" ||
	fail "the committed Write Memory failure does not name the command and block: $(cat "$tmp/out")"
# The blocks up to it were written once (the chip took the last one; only its ACK was lost).
mem "$c1" read 0x08000000 768 "$tmp/c.back"
expect_ok "uart chip 1 read"
cmp "$tmp/c.back" <(head -c 768 "$tmp/c.bin") || fail "chip 1: blocks 1-3 differ"
# Go whose address ACK is lost: never sent again.
mem "$c1" go 0x08000000
[ "$rc" -eq 1 ] && grep -q "^go: fail .*Go" "$tmp/out" || fail "a Go with a lost ACK: $(cat "$tmp/out")"

if [ "$dfu" = 1 ]; then
	# USB DfuSe on chip 0 (port 2-1.1): sectors 6-7 and 9 erased, written, read back;
	# then read over the UART.
	head -c 10000 /dev/urandom >"$tmp/d.bin"
	head -c 100 /dev/urandom >"$tmp/e.bin"
	mem dfu:usb:2-1.1 erase 6,7,9 write 0x0800c000 "$tmp/d.bin" write 0x08012000 "$tmp/e.bin" \
		read 0x0800c000 10000 "$tmp/d.back" read 0x08012000 112 "$tmp/e.back"
	expect_ok "dfu chip 0"
	cmp "$tmp/d.bin" "$tmp/d.back" || fail "DFU: read back differs"
	cmp <(cat "$tmp/e.bin"; head -c 12 /dev/zero | tr '\0' '\377') "$tmp/e.back" ||
		fail "DFU: the 100-byte write was not padded with 0xFF to 112"
	mem "$c0" read 0x0800c000 10000 "$tmp/d.uart"
	expect_ok "uart read of the DFU write"
	cmp "$tmp/d.bin" "$tmp/d.uart" || fail "written over USB, read over UART: differs"
	mem dfu:usb:2-1.1 erase 7 read 0x0800e000 256 "$tmp/f.back"
	expect_ok "dfu erase 7"
	[ "$(od -An -tx1 -v "$tmp/f.back" | tr -d ' \nf')" = "" ] || fail "DFU: sector 7 not erased"
	mem dfu:usb:2-1.1 read 0x20100000 16 "$tmp/none"
	[ "$rc" -eq 1 ] && grep -q "no alternate setting" "$tmp/out" ||
		fail "DFU: a read outside every layout: $(cat "$tmp/out")"
	mem dfu:usb:2-1.1 go 0x08000000
	expect_ok "dfu go"
	echo "memory operations over UART and DFU, retry policy: ok"
else
	echo "memory operations over UART, retry policy: ok (h5emu without USB: DFU not run)"
fi

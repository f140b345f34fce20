# Shared parts of the serial number scenarios (sourced after ../line/common.sh).

# serial_flash_check BYTES WHERE: every emulated chip that has a row in the serials table
# (chip_uid = its UID AND WHERE) holds that row's value in its flash at 0x08100000 (BYTES
# bytes, as h5emu keeps its state; h5emu stopped first); chips without such a row are
# passed over. Prints how many chips were checked.
serial_flash_check() {
	local bytes=$1 where=$2 c uid want got n=0
	for c in "$tmp/emu-state"/chip*; do
		[ -f "$c/memory.bin" ] || continue
		uid=$(sed -n 's/^uid=//p' "$c/chip.conf")
		want=$(sql "SELECT value FROM serials WHERE chip_uid = '$uid' AND $where")
		[ -n "$want" ] || continue
		got=$(od -An -tx1 -j $((0x100000)) -N "$bytes" "$c/memory.bin" | tr -d ' \n')
		[ "$got" = "$want" ] ||
			line_fail "$c ($uid): flash holds $got at 0x08100000, the ledger $want"
		n=$((n + 1))
	done
	echo "$n"
}

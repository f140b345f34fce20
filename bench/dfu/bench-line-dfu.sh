#!/usr/bin/env bash
# sfid on DFU slots (not a test): one chip per slot installed over USB DFU (OSFI on the
# DfuSe alternate, h5emu's USB timing model), first with 1 slot, then with SLOTS slots in
# parallel, runs alternating; prints the medians of the wall time from `sfictl start` to
# the last chip recorded installed, each chip's image rate (image bytes / that time), and
# how the SLOTS-slot time compares with one slot's.
#
# Usage: bench/dfu/bench-line-dfu.sh [--runs N] BUILDDIR [SLOTS] [IMAGE_KB]
set -euo pipefail
RUNS=3
if [ "${1:-}" = --runs ]; then
	RUNS=${2:?--runs needs a number}
	shift 2
fi
BUILD=$(realpath "${1:?usage: bench-line-dfu.sh [--runs N] BUILDDIR [SLOTS] [IMAGE_KB]}")
SLOTS=${2:-16}
KB=${3:-256}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-line-dfu.XXXXXX")
. "$(dirname "$0")/../../tests/integration/line/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki $((RUNS * (SLOTS + 1) + 10)) "$KB"
size=$(stat -c %s "$tmp/pki/demo.sfi")

# run SLOTS: prints the seconds from start to the last chip installed.
run() {
	local slots=$1 t0 t1
	rm -f "$tmp/sfid.db" "$tmp/sfid.db-wal" "$tmp/sfid.db-shm" "$tmp/sfid.sock"
	rm -rf "$tmp/emu-state"
	line_start_emu "$slots" 1 --transport both
	{
		printf '[station]\nname = bench-dfu\n'
		printf '[hsm]\nmodule = %s\ntoken = %s\npin_file = %s\n' "$SOFTHSM_MODULE" \
			"$TOKEN_LABEL" "$tmp/pki/pin"
		printf '[database]\npath = %s\n' "$tmp/sfid.db"
		printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
			"$tmp/sfid.sock"
		for i in $(seq 0 $((slots - 1))); do
			printf '[slot D%d]\nport = dfu:usb:2-1.%d\npoll_ms = 50\n' "$i" $((i + 1))
		done
	} >"$tmp/sfid.conf"
	line_start_sfid
	ctl job load "$tmp/pki/demo.sfi" --count "$slots" >/dev/null
	t0=$(date +%s.%N)
	ctl start >/dev/null
	wait_for 600 "$slots chips" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" "$slots"
	t1=$(date +%s.%N)
	line_stop_pid "$sfid_pid"
	sfid_pid=
	line_stop_pid "$emu_pid"
	emu_pid=
	echo "$t1 - $t0" | bc
}

one=()
many=()
for r in $(seq "$RUNS"); do
	one+=("$(run 1)")
	many+=("$(run "$SLOTS")")
	printf 'run %d: 1 slot %.2f s, %d slots %.2f s\n' "$r" "${one[-1]}" "$SLOTS" "${many[-1]}"
done
python3 - "$size" "$SLOTS" "${one[*]}" "${many[*]}" <<'PY'
import statistics, sys
size, slots = int(sys.argv[1]), int(sys.argv[2])
one = statistics.median(float(x) for x in sys.argv[3].split())
many = statistics.median(float(x) for x in sys.argv[4].split())
print(f"image {size} bytes, one chip per slot, medians:")
print(f"  1 slot:   {one:6.2f} s  {size / 1024 / one:6.1f} KiB/s per chip")
print(f"  {slots} slots: {many:6.2f} s  {size / 1024 / many:6.1f} KiB/s per chip, "
      f"{slots * size / 1024 / many:7.1f} KiB/s for the line")
print(f"  {slots} slots took {many / one:.2f}x the time of one")
PY

#!/usr/bin/env bash
# Side-by-side USB DFU write throughput against one h5emu chip presented as a DfuSe device
# (its timing model: full-speed control transfers in 1 ms frames with 64-byte packets, and
# the STM32H5 flash's 16-byte programming and 8 KiB sector erase times, docs/emulator.md).
# The same random image is written by the real dfu-util (-D, which erases the sectors it
# covers as it goes) and by sfi-boot (--erase --no-verify write), runs alternating between
# the two, each as a whole process; medians are printed as KiB/s and as a fraction of:
#   limit   the bus time of the data stages plus the flash time (erase and programming):
#           what the image costs if the bus and the flash were never idle
#   floor   the same operations as DfuSe sequences them, honouring bwPollTimeout: per block
#           DNLOAD, GETSTATUS (dfuDNBUSY), the announced wait (whole ms), GETSTATUS, each
#           transfer from the microframe (125 us) where the previous one was reported
#           complete; per sector the erase command likewise
# The last run's images are read back by the other tool (sfi-boot reads what dfu-util
# wrote and the other way round) and compared with the image.
#
# Usage: bench/dfu/bench-dfu.sh [--build DIR] [--size BYTES] [--runs N]
set -euo pipefail

build=${SFID_BUILD_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)/build}
size=$((256 * 1024))
runs=5
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	*) echo "usage: $0 [--build DIR] [--size BYTES] [--runs N]" >&2; exit 1 ;;
	esac
done
h5emu=$build/emulator/h5emu
sfiboot=$build/tools/sfi-boot/sfi-boot
[ -x "$h5emu" ] && [ -x "$sfiboot" ] || { echo "build $build first (h5emu, sfi-boot)" >&2; exit 1; }
command -v dfu-util >/dev/null || { echo "dfu-util is not installed (scripts/deps)" >&2; exit 1; }
[ "$size" -ge 1 ] && [ "$size" -le $((2 * 1024 * 1024)) ] || { echo "--size: 1..2 MiB" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-dfu.XXXXXX")
emu_pid=
stop_emu() {
	if [ -n "$emu_pid" ]; then
		kill -TERM "$emu_pid" 2>/dev/null || true
		wait "$emu_pid" 2>/dev/null || true
		emu_pid=
	fi
}
trap 'stop_emu; rm -rf "$tmp"' EXIT INT TERM

"$h5emu" --count 1 --transport dfu --dir "$tmp/emu" --state-dir "$tmp/state" \
	>"$tmp/ready" 2>"$tmp/emu.log" &
emu_pid=$!
for _ in $(seq 150); do
	[ -s "$tmp/ready" ] && break
	sleep 0.1
done
[ -s "$tmp/ready" ] || { echo "h5emu did not start: $(cat "$tmp/emu.log")" >&2; exit 1; }
mapfile -t uenv <"$tmp/emu/umockdev.env"
in_bed() { env "${uenv[@]}" timeout 120 "$@"; }
port=2-1.1

head -c "$size" /dev/urandom >"$tmp/image.bin"
ts=$(in_bed "$sfiboot" --port "dfu:usb:$port" info | sed -n 's/.*wTransferSize \([0-9]*\).*/\1/p')
[ -n "$ts" ] || { echo "sfi-boot info gave no wTransferSize" >&2; exit 1; }

now() { date +%s.%N; }
run_dfu_util() {
	in_bed dfu-util -p "$port" -a 0 -s 0x08000000 -D "$tmp/image.bin" >"$tmp/du.out" 2>&1 ||
		{ echo "dfu-util failed: $(tail -n 3 "$tmp/du.out")" >&2; exit 1; }
}
run_sfi_boot() {
	in_bed "$sfiboot" --port "dfu:usb:$port" --erase --no-verify write 0x08000000 \
		"$tmp/image.bin" 2>"$tmp/sb.err" ||
		{ echo "sfi-boot failed: $(cat "$tmp/sb.err")" >&2; exit 1; }
}
du_times=()
sb_times=()
for i in $(seq "$runs"); do
	for tool in $( [ $((i % 2)) -eq 1 ] && echo "du sb" || echo "sb du"); do
		t0=$(now)
		if [ "$tool" = du ]; then run_dfu_util; else run_sfi_boot; fi
		t1=$(now)
		if [ "$tool" = du ]; then du_times+=("$(echo "$t1 - $t0" | bc)"); else sb_times+=("$(echo "$t1 - $t0" | bc)"); fi
		if [ "$i" -eq "$runs" ]; then
			# What one tool wrote, the other reads back.
			if [ "$tool" = du ]; then
				in_bed "$sfiboot" --port "dfu:usb:$port" read 0x08000000 "$size" "$tmp/back.bin"
			else
				rm -f "$tmp/back.bin"	# dfu-util will not overwrite a file
				in_bed dfu-util -p "$port" -a 0 -s "0x08000000:$size" -U "$tmp/back.bin" >/dev/null 2>&1
			fi
			cmp -s "$tmp/image.bin" "$tmp/back.bin" ||
				{ echo "the image read back after $tool's write differs" >&2; exit 1; }
		fi
	done
done

python3 - "$size" "$ts" "${du_times[*]}" "${sb_times[*]}" <<'PY'
import math, statistics, sys
size, ts = int(sys.argv[1]), int(sys.argv[2])
du = [float(x) for x in sys.argv[3].split()]
sb = [float(x) for x in sys.argv[4].split()]
# h5emu's model (docs/emulator.md): 12 Mbit/s, 64-byte packets, 13 bytes of overhead per
# transaction; a control transfer = setup + data packets + status, started at a microframe
# (125 us) boundary and reported at the end of the microframe where it ends; bwPollTimeout
# in whole ms. Flash: 50 us per 16-byte unit, 2 ms per 8 KiB sector erase, 20 us per command.
BYTE_S = 2.0 / 3.0 * 1e-6
def bus(n):
    return (8 + 13 + 13 + n + math.ceil(n / 64) * 13) * BYTE_S
PROG, ERASE, CMD, SECTOR = 50e-6, 2e-3, 20e-6, 8192
blocks = [min(ts, size - o) for o in range(0, size, ts)]
sectors = math.ceil(size / SECTOR)
limit = sum(bus(n) + math.ceil(n / 16) * PROG for n in blocks) + sectors * (bus(5) + ERASE)
ms = lambda t: math.ceil(round(t / 1e-3, 9)) * 1e-3
uf = lambda t: math.ceil(round(t / 125e-6, 9)) * 125e-6
status = uf(bus(6))
floor = sum(uf(bus(n)) + status + ms(math.ceil(n / 16) * PROG) + status for n in blocks) \
    + sectors * (uf(bus(5)) + status + ms(ERASE) + status)
kib = size / 1024
print(f"DfuSe write of {size} bytes with the sectors it covers erased first "
      f"(wTransferSize {ts}), {len(du)} runs each, medians:")
print(f"  limit (bus + flash):      {limit:6.3f} s  {kib / limit:7.1f} KiB/s")
print(f"  floor (DfuSe sequence):   {floor:6.3f} s  {kib / floor:7.1f} KiB/s  "
      f"({limit / floor * 100:.0f} % of the limit)")
for name, t in (("dfu-util -D", du), ("sfi-boot --erase write", sb)):
    m = statistics.median(t)
    print(f"  {name:24s}{m:6.3f} s  {kib / m:7.1f} KiB/s  {limit / m * 100:3.0f} % of the limit, "
          f"{floor / m * 100:3.0f} % of the floor  (min {min(t):.3f}, max {max(t):.3f})")
print(f"  sfi-boot is {statistics.median(du) / statistics.median(sb):.2f}x dfu-util's rate")
PY

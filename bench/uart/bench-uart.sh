#!/usr/bin/env bash
# Side-by-side UART write throughput: sfi-boot (libserialport, 8E1, umockdev adapter) and
# stm32flash (8N1, the emulator's plain PTY), both against h5emu paced at the line rate,
# both writing erased flash without verify. Runs alternate between the tools; medians are
# printed with their fraction of the wire limit (baud / 11 bytes per second).
#
# Usage: bench/uart/bench-uart.sh [--build DIR] [--size BYTES] [--runs N] [--baud B]
# stm32flash (Debian 0.7) does not know the STM32H5, so it runs against the g474 profile,
# whose 512 KiB flash caps its image; the rate is what is compared.
set -euo pipefail

build=${SFID_BUILD_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)/build}
size=$((1024 * 1024))
runs=3
baud=115200
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--baud) baud=$2; shift 2 ;;
	*) echo "usage: $0 [--build DIR] [--size BYTES] [--runs N] [--baud B]" >&2; exit 1 ;;
	esac
done
h5emu=$build/tests/emulator/h5emu
sfiboot=$build/tools/sfi-boot/sfi-boot
stm32flash=$(command -v stm32flash || true)
[ -x "$h5emu" ] && [ -x "$sfiboot" ] || { echo "build $build first (h5emu, sfi-boot)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-uart.XXXXXX")
emu_pid=
stop_emu() {
	if [ -n "$emu_pid" ]; then
		kill -TERM "$emu_pid" 2>/dev/null || true
		wait "$emu_pid" 2>/dev/null || true
		emu_pid=
	fi
}
trap 'stop_emu; rm -rf "$tmp"' EXIT INT TERM

start_emu() {
	stop_emu
	rm -rf "$tmp/emu" "$tmp/state" "$tmp/ready"
	"$h5emu" --count 1 --dir "$tmp/emu" --state-dir "$tmp/state" --baud "$baud" "$@" \
		>"$tmp/ready" 2>"$tmp/emu.log" &
	emu_pid=$!
	for _ in $(seq 100); do
		[ -s "$tmp/ready" ] && return 0
		sleep 0.1
	done
	echo "h5emu did not start: $(cat "$tmp/emu.log")" >&2
	exit 1
}

now() { date +%s.%N; }

g4_size=$((size < 512 * 1024 ? size : 512 * 1024))
head -c "$size" /dev/urandom >"$tmp/image"
head -c "$g4_size" "$tmp/image" >"$tmp/image-g4"

run_sfiboot() {
	start_emu --umockdev
	local envs=()
	while IFS= read -r line; do envs+=("$line"); done <"$tmp/emu/umockdev.env"
	local t0 t1
	t0=$(now)
	env "${envs[@]}" "$sfiboot" --port serial:H5EMU0000 --no-verify write 0x08000000 \
		"$tmp/image" >/dev/null
	t1=$(now)
	echo "$t1 - $t0" | bc -l
}

run_stm32flash() {
	start_emu --profile g474
	local t0 t1
	t0=$(now)
	# -e 0: the fresh chip is erased, so neither tool erases inside the timed write.
	"$stm32flash" -m 8n1 -b "$baud" -e 0 -w "$tmp/image-g4" -S 0x08000000 \
		"$tmp/emu/chip0" >/dev/null
	t1=$(now)
	echo "$t1 - $t0" | bc -l
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

wire=$(echo "$baud / 11" | bc -l)
: >"$tmp/sfiboot.t"
: >"$tmp/stm32flash.t"
for i in $(seq "$runs"); do
	t=$(run_sfiboot)
	echo "$t" >>"$tmp/sfiboot.t"
	printf 'run %d: sfi-boot   %7d bytes in %6.2f s\n' "$i" "$size" "$t"
	if [ -n "$stm32flash" ]; then
		t=$(run_stm32flash)
		echo "$t" >>"$tmp/stm32flash.t"
		printf 'run %d: stm32flash %7d bytes in %6.2f s\n' "$i" "$g4_size" "$t"
	fi
done
stop_emu

report() {
	local name=$1 bytes=$2 file=$3 t rate
	t=$(median <"$file")
	rate=$(echo "$bytes / $t" | bc -l)
	printf '%-10s median %6.2f s  %7.0f B/s  %6.2f KiB/s  %5.1f %% of the wire limit (%d B/s)\n' \
		"$name" "$t" "$rate" "$(echo "$rate / 1024" | bc -l)" "$(echo "100 * $rate / $wire" | bc -l)" \
		"$(printf '%.0f' "$wire")"
}
echo "baud $baud, $runs runs, write without verify, medians:"
report sfi-boot "$size" "$tmp/sfiboot.t"
[ -n "$stm32flash" ] && report stm32flash "$g4_size" "$tmp/stm32flash.t"
exit 0

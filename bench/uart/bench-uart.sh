#!/usr/bin/env bash
# Side-by-side UART write throughput against h5emu paced at the line rate, all writing
# erased flash without verify, runs alternating between the tools; medians are printed with
# their fraction of the wire limit (baud / 11 bytes per second):
#   sfi-boot             libserialport, 8E1, umockdev USB-serial adapter (h563 profile)
#   stm32flash-umockdev  stm32flash 8E1 on the same kind of umockdev adapter (g474 profile):
#                        like for like, both pay the testbed's cost per read()/write()
#   sfi-boot-pty         sfi-boot --port tty:PTY on the emulator's plain PTY (g474 profile)
#   stm32flash-pty       stm32flash -m 8n1 on the same kind of plain PTY: like for like
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
h5emu=$build/emulator/h5emu
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
# The run_* functions run in this shell (not in $(...)), so that start_emu/stop_emu track
# the emulator's pid; each leaves its wall time in $last.
last=

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
	last=$(echo "$t1 - $t0" | bc -l)
}

run_stm32flash_pty() {
	start_emu --profile g474
	local t0 t1
	t0=$(now)
	# -e 0: the fresh chip is erased, so neither tool erases inside the timed write.
	"$stm32flash" -m 8n1 -b "$baud" -e 0 -w "$tmp/image-g4" -S 0x08000000 \
		"$tmp/emu/chip0" >/dev/null
	t1=$(now)
	last=$(echo "$t1 - $t0" | bc -l)
}

run_sfiboot_pty() {
	start_emu --profile g474
	local t0 t1
	t0=$(now)
	"$sfiboot" --port "tty:$tmp/emu/chip0" --no-verify write 0x08000000 "$tmp/image-g4" \
		>/dev/null
	t1=$(now)
	last=$(echo "$t1 - $t0" | bc -l)
}

run_stm32flash_umockdev() {
	start_emu --profile g474 --umockdev
	local envs=()
	while IFS= read -r line; do envs+=("$line"); done <"$tmp/emu/umockdev.env"
	local t0 t1
	t0=$(now)
	env "${envs[@]}" "$stm32flash" -m 8e1 -b "$baud" -e 0 -w "$tmp/image-g4" -S 0x08000000 \
		/dev/ttyUSB0 >/dev/null
	t1=$(now)
	last=$(echo "$t1 - $t0" | bc -l)
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

wire=$(echo "$baud / 11" | bc -l)
: >"$tmp/sfiboot.t"
: >"$tmp/sfiboot-pty.t"
: >"$tmp/sf-umockdev.t"
: >"$tmp/sf-pty.t"
for i in $(seq "$runs"); do
	run_sfiboot
	t=$last
	echo "$t" >>"$tmp/sfiboot.t"
	printf 'run %d: sfi-boot            %7d bytes in %6.2f s\n' "$i" "$size" "$t"
	run_sfiboot_pty
	t=$last
	echo "$t" >>"$tmp/sfiboot-pty.t"
	printf 'run %d: sfi-boot-pty        %7d bytes in %6.2f s\n' "$i" "$g4_size" "$t"
	if [ -n "$stm32flash" ]; then
		run_stm32flash_umockdev
	t=$last
		echo "$t" >>"$tmp/sf-umockdev.t"
		printf 'run %d: stm32flash-umockdev %7d bytes in %6.2f s\n' "$i" "$g4_size" "$t"
		run_stm32flash_pty
	t=$last
		echo "$t" >>"$tmp/sf-pty.t"
		printf 'run %d: stm32flash-pty      %7d bytes in %6.2f s\n' "$i" "$g4_size" "$t"
	fi
done
stop_emu

report() {
	local name=$1 bytes=$2 file=$3 t rate
	t=$(median <"$file")
	rate=$(echo "$bytes / $t" | bc -l)
	printf '%-19s median %6.2f s  %7.0f B/s  %6.2f KiB/s  %5.1f %% of the wire limit (%d B/s)\n' \
		"$name" "$t" "$rate" "$(echo "$rate / 1024" | bc -l)" "$(echo "100 * $rate / $wire" | bc -l)" \
		"$(printf '%.0f' "$wire")"
}
echo "baud $baud, $runs runs, write without verify, medians:"
report sfi-boot "$size" "$tmp/sfiboot.t"
report sfi-boot-pty "$g4_size" "$tmp/sfiboot-pty.t"
if [ -n "$stm32flash" ]; then
	report stm32flash-umockdev "$g4_size" "$tmp/sf-umockdev.t"
	report stm32flash-pty "$g4_size" "$tmp/sf-pty.t"
fi
exit 0

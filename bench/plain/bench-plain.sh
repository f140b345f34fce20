#!/usr/bin/env bash
# sfid's plain write path against stm32flash on the same emulated chip: h5emu's g474 profile
# (stm32flash 0.7 does not know the STM32H5) on a plain PTY paced at the line rate, one slot,
# runs alternating between the tools, a fresh chip each run. Medians are printed with their
# fraction of the wire limit (baud / 11 bytes per second):
#   sfid        a plain job of SIZE random bytes at 0x08000000 on one slot (tty:PTY), chip left
#               in its bootloader; the write path as the slot times it: its last progress
#               event's rate (bytes written over the time since the slot entered `installing`:
#               the Extended Erase of the touched pages, then the writes; not the read-back)
#   stm32flash  stm32flash -m 8n1 -e 0 -w (the fresh chip is erased; no verify), wall time
#
# Usage: bench/plain/bench-plain.sh [--build DIR] [--size BYTES] [--runs N] [--baud B]
set -euo pipefail

BUILD=${SFID_BUILD_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)/build}
size=$((256 * 1024))
runs=3
baud=115200
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--baud) baud=$2; shift 2 ;;
	*) echo "usage: $0 [--build DIR] [--size BYTES] [--runs N] [--baud B]" >&2; exit 1 ;;
	esac
done
stm32flash=$(command -v stm32flash || true)
[ -n "$stm32flash" ] || { echo "stm32flash is not installed (scripts/deps)" >&2; exit 1; }
[ "$size" -le $((512 * 1024)) ] || { echo "--size: the g474 profile has 512 KiB of flash" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-plain.XXXXXX")
. "$(dirname "$0")/../../tests/integration/line/common.sh"
[ -x "$SFID" ] && [ -x "$H5EMU" ] || { echo "build $BUILD first (sfid, h5emu)" >&2; exit 1; }
trap line_cleanup EXIT INT TERM

line_setup_pki 10 4
{ printf '\000'; head -c $((size - 1)) /dev/urandom; } >"$tmp/image.bin"

# A fresh g474 chip on a plain PTY paced at $baud.
start_emu() {
	line_stop_pid "$emu_pid"
	rm -rf "$tmp/emu" "$tmp/emu-state" "$tmp/emu.ready"
	"$H5EMU" --count 1 --dir "$tmp/emu" --state-dir "$tmp/emu-state" --profile g474 \
		--baud "$baud" >"$tmp/emu.ready" 2>"$tmp/emu.log" &
	emu_pid=$!
	for _ in $(seq 100); do
		[ -s "$tmp/emu.ready" ] && return 0
		sleep 0.1
	done
	echo "h5emu did not start: $(cat "$tmp/emu.log")" >&2
	exit 1
}

now() { date +%s.%N; }
last=

run_sfid() {
	start_emu
	rm -f "$tmp/sfid.db" "$tmp/sfid.db-wal" "$tmp/sfid.db-shm"
	{
		printf '[station]\nname = bench-plain\n'
		printf '[hsm]\nmodule = %s\ntoken = %s\npin_file = %s\n' "$SOFTHSM_MODULE" \
			"$TOKEN_LABEL" "$tmp/pki/pin"
		printf '[database]\npath = %s\n' "$tmp/sfid.db"
		printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
			"$tmp/sfid.sock"
		printf '[slot S0]\nport = tty:%s\nbaud = %d\npoll_ms = 100\n' "$tmp/emu/chip0" "$baud"
	} >"$tmp/sfid.conf"
	line_start_sfid
	ctl job load --plain --count 1 "$tmp/image.bin@0x08000000" >/dev/null
	timeout 300 "$SFICTL" --socket "$tmp/sfid.sock" --json watch --count 1 >"$tmp/watch.json" &
	local watch_pid=$!
	ctl start >/dev/null
	wait "$watch_pid" || { echo "watch failed: $(tail -n 3 "$tmp/watch.json")" >&2; exit 1; }
	wait_for 30 "the chip's record" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 1
	last=$(python3 -c 'import json,sys
rate = None
for line in open(sys.argv[1]):
    o = json.loads(line)
    d = o.get("data") or {}
    if o.get("event") == "progress" and d.get("total") and d.get("done") == d.get("total"):
        rate = d["rate"]
print(int(sys.argv[2]) / rate)' "$tmp/watch.json" "$size")
	line_stop_pid "$sfid_pid"
	sfid_pid=
}

run_stm32flash() {
	start_emu
	local t0 t1
	t0=$(now)
	"$stm32flash" -m 8n1 -b "$baud" -e 0 -w "$tmp/image.bin" -S 0x08000000 "$tmp/emu/chip0" \
		>/dev/null
	t1=$(now)
	last=$(echo "$t1 - $t0" | bc -l)
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

wire=$(echo "$baud / 11" | bc -l)
: >"$tmp/sfid.t"
: >"$tmp/sf.t"
for i in $(seq "$runs"); do
	run_sfid
	echo "$last" >>"$tmp/sfid.t"
	printf 'run %d: sfid plain   %7d bytes in %6.2f s\n' "$i" "$size" "$last"
	run_stm32flash
	echo "$last" >>"$tmp/sf.t"
	printf 'run %d: stm32flash   %7d bytes in %6.2f s\n' "$i" "$size" "$last"
done
line_stop_pid "$emu_pid"
emu_pid=

report() {
	local name=$1 file=$2 t rate
	t=$(median <"$file")
	rate=$(echo "$size / $t" | bc -l)
	printf '%-12s median %6.2f s  %7.0f B/s  %5.1f %% of the wire limit (%d B/s)\n' \
		"$name" "$t" "$rate" "$(echo "100 * $rate / $wire" | bc -l)" "$(printf '%.0f' "$wire")"
}
echo "baud $baud, $size bytes, $runs runs, g474 profile on a plain PTY, medians:"
report "sfid plain" "$tmp/sfid.t"
report stm32flash "$tmp/sf.t"

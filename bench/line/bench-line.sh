#!/usr/bin/env bash
# Line benchmarks (not tests): sfid driving h5emu's umockdev adapters.
#  1. full speed: SLOTS slots x CHIPS chips, unpaced: aggregate image throughput, sfid CPU
#     seconds per chip and sfid peak RSS;
#  2. paced at 115200 baud: the image stream rate of each chip against the wire limit
#     (115200 / 11 bytes/s), for 1 slot and for SLOTS slots (scaling).
# Usage: bench/line/bench-line.sh BUILDDIR [SLOTS] [CHIPS] [IMAGE_KB]
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
SLOTS=${2:-16}
CHIPS=${3:-4}
KB=${4:-256}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-bench.XXXXXX")
. "$(dirname "$0")/../../tests/integration/line/common.sh"
trap line_cleanup EXIT INT TERM

calc() { awk "BEGIN { print $* }"; }

cpu_s() { # utime+stime of a pid in seconds
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
rss_kb() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }

# run SLOTS CHIPS [h5emu options]: one job to the end; sets elapsed, cpu, rss, rates.
run() {
	local slots=$1 chips=$2 total=$(($1 * $2)) t0 t1
	shift 2
	line_stop_pid "$sfid_pid"
	sfid_pid=
	line_stop_pid "$emu_pid"
	emu_pid=
	rm -rf "$tmp/emu-state" "$tmp/sfid.db"*
	line_start_emu "$slots" "$chips" --auto-swap 50 "$@"
	line_write_config "$slots"
	line_start_sfid
	ctl job load "$tmp/pki/demo.sfi" --count "$total" >/dev/null
	t0=$(date +%s.%N)
	ctl start >/dev/null
	ctl --json watch --count "$total" --timeout 1800 >"$tmp/watch.jsonl" ||
		line_fail "the run did not finish"
	t1=$(date +%s.%N)
	elapsed=$(calc "$t1 - $t0")
	cpu=$(cpu_s "$sfid_pid")
	emu_cpu=$(cpu_s "$emu_pid")
	rss=$(rss_kb "$sfid_pid")
	ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
	[ "$ok" -eq "$total" ] || line_fail "$ok of $total chips installed"
	# Stream rate of each chip: its last progress event (done = total).
	rates=$(python3 -c '
import json, sys
last = {}
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("event") == "progress" and m["data"]["done"] == m["data"]["total"]:
        last[m["data"]["chip"]] = m["data"]["rate"]
r = sorted(last.values())
print(min(r), sum(r) / len(r), max(r))' "$tmp/watch.jsonl")
}

line_setup_pki 100000 "$KB"
image=$(stat -c %s "$tmp/pki/demo.sfi")
echo "image: $image bytes ($KB KiB firmware); machine: $(nproc) cores"

run "$SLOTS" "$CHIPS"
total=$((SLOTS * CHIPS))
printf 'full speed, %d slots x %d chips: %.1f s, %.2f MB/s aggregate, sfid CPU %.3f s/chip (h5emu %.3f s/chip), sfid peak RSS %d KiB\n' \
	"$SLOTS" "$CHIPS" "$elapsed" "$(calc "$total * $image / $elapsed / 1000000")" \
	"$(calc "$cpu / $total")" "$(calc "$emu_cpu / $total")" "$rss"

wire=$(calc "115200 / 11")
for n in 1 "$SLOTS"; do
	run "$n" 1 --baud 115200
	read -r rmin ravg rmax <<<"$rates"
	printf 'paced 115200, %2d slots: %.1f s; stream rate min %.0f avg %.0f max %.0f B/s = %.1f %% of the wire limit (%.0f B/s) on average\n' \
		"$n" "$elapsed" "$rmin" "$ravg" "$rmax" "$(calc "100 * $ravg / $wire")" "$wire"
	[ "$n" -eq 1 ] && one=$elapsed
done
printf 'scaling: %d slots took %.2fx the time of one slot\n' "$SLOTS" "$(calc "$elapsed / $one")"

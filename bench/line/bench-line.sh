#!/usr/bin/env bash
# Line benchmarks (not tests): sfid driving h5emu's emulated chips.
#  1. full speed: SLOTS slots x CHIPS chips, unpaced, on umockdev USB-serial adapters:
#     aggregate image throughput, sfid CPU seconds per chip (h5emu's too) and sfid peak RSS;
#  2. paced at 115200 baud (8E1: 11 bits a byte, wire limit 115200 / 11 = 10 473 B/s): the
#     image stream rate of each chip against the wire limit, for 1 slot and for SLOTS slots
#     in parallel (one chip per slot), and the scaling of the wall time from 1 to SLOTS.
# The stream rate of a chip is sfid's own figure: image bytes acknowledged by the chip divided
# by the time since its install state began (PUT_LICENSE, PUT_HEADER, every PUT_DATA); the
# bench takes each chip's last progress event. Every measurement runs RUNS times (the 1-slot
# and SLOTS-slot paced runs alternate) and the medians are printed.
#
# Usage: bench/line/bench-line.sh [--runs N] [--pty] BUILDDIR [SLOTS] [CHIPS] [IMAGE_KB]
#   --runs N  repetitions (default 3)
#   --pty     paced runs on the emulator's plain PTYs (tty: ports) instead of the umockdev
#             adapters: shows what the umockdev harness itself costs per turnaround
# H5EMU=PATH runs another emulator build (default BUILDDIR/emulator/h5emu).
set -euo pipefail
RUNS=3
PTY=
args=("$@")
while [ $# -gt 0 ]; do
	case $1 in
	--runs)
		RUNS=${2:?--runs needs a number}
		shift 2
		;;
	--pty)
		PTY=1
		shift
		;;
	-h | --help)
		sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		break
		;;
	esac
done
[ "$RUNS" -ge 1 ] 2>/dev/null || { echo "bench-line: --runs needs a positive number" >&2; exit 2; }
# shellcheck disable=SC2034 # BUILD is read by common.sh
BUILD=$(cd "${1:-build}" && pwd)
SLOTS=${2:-16}
CHIPS=${3:-4}
KB=${4:-256}
H5EMU_GIVEN=${H5EMU:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-bench.XXXXXX")
. "$(dirname "$0")/../../tests/integration/line/common.sh"
trap line_cleanup EXIT INT TERM

calc() { awk "BEGIN { print $* }"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cpu_s() { # utime+stime of a pid in seconds
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
rss_kb() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }

# h5emu on plain PTYs (no umockdev): one per slot, linked as $tmp/emu/chipN.
start_emu_pty() {
	local slots=$1
	shift
	rm -rf "$tmp/emu"
	mkdir -p "$tmp/emu"
	"$H5EMU" --count "$slots" --dir "$tmp/emu" --state-dir "$tmp/emu-state" \
		--chips-per-slot 1 --ca-key "$tmp/pki/ca.pem" --global-key "$tmp/pki/global.key" \
		"$@" >"$tmp/emu.ready" 2>"$tmp/emu.log" &
	emu_pid=$!
	for _ in $(seq 100); do
		[ -s "$tmp/emu.ready" ] && return 0
		kill -0 "$emu_pid" 2>/dev/null || line_fail "h5emu exited: $(cat "$tmp/emu.log")"
		sleep 0.1
	done
	line_fail "h5emu printed no ready line in 10 s"
}

# run SLOTS CHIPS pty|umockdev [h5emu options]: one job to the end; sets elapsed, cpu,
# emu_cpu, rss, rates (min avg max B/s over the chips).
run() {
	local slots=$1 chips=$2 transport=$3 total=$(($1 * $2)) t0 t1
	shift 3
	line_stop_pid "$sfid_pid"
	sfid_pid=
	line_stop_pid "$emu_pid"
	emu_pid=
	rm -rf "$tmp/emu-state" "$tmp/sfid.db"*
	if [ "$transport" = pty ]; then
		start_emu_pty "$slots" --auto-swap 50 "$@"
		line_write_config "$slots"
		sed -i "s|^port = serial:${EMU_SERIAL_PREFIX}0*\([0-9][0-9]*\)$|port = tty:$tmp/emu/chip\1|" \
			"$tmp/sfid.conf"
	else
		line_start_emu "$slots" "$chips" --auto-swap 50 "$@"
		line_write_config "$slots"
	fi
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
	# How late sfid's loop ran its 50 ms probe at worst (0 when the build has no probe).
	lag=$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin).get("loop", {}).get("max_late_ms", 0))')
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
wire=$(calc "115200 / 11")
paced_transport=umockdev
[ -n "$PTY" ] && paced_transport=pty
echo "reproduce: ${H5EMU_GIVEN:+H5EMU=$H5EMU_GIVEN }$0 ${args[*]}"
echo "image: $image bytes ($KB KiB firmware); $RUNS runs; machine: $(nproc) cores," \
	"load average $(cut -d' ' -f1-3 /proc/loadavg) at start"

full_t=() full_mbs=() full_cpu=() full_emu=() full_rss=() full_lag=()
total=$((SLOTS * CHIPS))
for rep in $(seq "$RUNS"); do
	run "$SLOTS" "$CHIPS" umockdev
	full_t+=("$elapsed")
	full_mbs+=("$(calc "$total * $image / $elapsed / 1000000")")
	full_cpu+=("$(calc "$cpu / $total")")
	full_emu+=("$(calc "$emu_cpu / $total")")
	full_rss+=("$rss")
	full_lag+=("$lag")
	printf 'run %d: full speed, %d slots x %d chips (umockdev): %.1f s, %.2f MB/s, sfid CPU %.3f s/chip, h5emu %.3f s/chip, sfid peak RSS %d KiB, loop late at most %d ms\n' \
		"$rep" "$SLOTS" "$CHIPS" "$elapsed" "${full_mbs[-1]}" "${full_cpu[-1]}" "${full_emu[-1]}" "$rss" "$lag"
done

declare -A p_t p_pct p_min p_max p_cpu p_emu
for n in 1 "$SLOTS"; do p_t[$n]='' p_pct[$n]='' p_min[$n]='' p_max[$n]='' p_cpu[$n]='' p_emu[$n]=''; done
ratios=()
for rep in $(seq "$RUNS"); do
	for n in 1 "$SLOTS"; do
		run "$n" 1 "$paced_transport" --baud 115200
		read -r rmin ravg rmax <<<"$rates"
		pct=$(calc "100 * $ravg / $wire")
		p_t[$n]+=" $elapsed" p_pct[$n]+=" $pct"
		p_min[$n]+=" $(calc "100 * $rmin / $wire")" p_max[$n]+=" $(calc "100 * $rmax / $wire")"
		p_cpu[$n]+=" $cpu" p_emu[$n]+=" $emu_cpu"
		printf 'run %d: paced 115200 (%s), %2d slots: %.1f s; stream rate min %.0f avg %.0f max %.0f B/s = %.1f %% of the wire limit on average; CPU sfid %.2f s, h5emu %.2f s\n' \
			"$rep" "$paced_transport" "$n" "$elapsed" "$rmin" "$ravg" "$rmax" "$pct" "$cpu" "$emu_cpu"
		[ "$n" -eq 1 ] && one=$elapsed
	done
	ratios+=("$(calc "$elapsed / $one")")
done

# shellcheck disable=SC2086 # the lists are meant to split
{
	echo "--- medians of $RUNS runs"
	printf 'full speed, %d slots x %d chips (umockdev): %.1f s for %d chips, %.2f MB/s aggregate; sfid CPU %.3f s/chip (h5emu %.3f s/chip); sfid peak RSS %.0f KiB; loop late at most %.0f ms\n' \
		"$SLOTS" "$CHIPS" "$(median "${full_t[@]}")" "$total" "$(median "${full_mbs[@]}")" \
		"$(median "${full_cpu[@]}")" "$(median "${full_emu[@]}")" "$(median "${full_rss[@]}")" \
		"$(median "${full_lag[@]}")"
	for n in 1 "$SLOTS"; do
		printf 'paced 115200 (%s), %2d slots: %.1f s; per-slot stream rate %.1f %% of the wire limit (%.0f B/s; slowest slot %.1f %%, fastest %.1f %%); CPU sfid %.2f s, h5emu %.2f s\n' \
			"$paced_transport" "$n" "$(median ${p_t[$n]})" "$(median ${p_pct[$n]})" \
			"$(calc "$(median ${p_pct[$n]}) * $wire / 100")" "$(median ${p_min[$n]})" \
			"$(median ${p_max[$n]})" "$(median ${p_cpu[$n]})" "$(median ${p_emu[$n]})"
	done
	printf 'scaling: %d slots took %.2fx the time of one slot (runs: %s)\n' "$SLOTS" \
		"$(median "${ratios[@]}")" "$(printf '%.2f ' "${ratios[@]}" | sed 's/ $//')"
	echo "wire limit $wire B/s (115200 baud, 11 bits a byte); 1 KiB PUT_DATA framing caps the stream at 97.7 %"
}

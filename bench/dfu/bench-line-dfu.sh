#!/usr/bin/env bash
# sfid on DFU slots (not a test): one chip per slot installed over USB DFU (OSFI on the
# DfuSe alternate, h5emu's USB timing model), first with 1 slot, then with SLOTS slots in
# parallel, runs alternating; prints the medians of the wall time from `sfictl start` to
# the last chip recorded installed, each chip's image rate (image bytes / that time), and
# how the SLOTS-slot time compares with one slot's.
# Also the CPU time (user + system) h5emu and sfid used in each run, and the load average.
# --tokens N: the licenses come from a pool of N line tokens ([hsm] pool, each provisioned
# for the same image with its own counter) instead of the line token alone.
#
# Usage: bench/dfu/bench-line-dfu.sh [--runs N] [--tokens N] BUILDDIR [SLOTS] [IMAGE_KB]
set -euo pipefail
RUNS=3
TOKENS=1
while [ $# -gt 0 ]; do
	case $1 in
	--runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
	--tokens) TOKENS=${2:?--tokens needs a number}; shift 2 ;;
	*) break ;;
	esac
done
BUILD=$(realpath "${1:?usage: bench-line-dfu.sh [--runs N] [--tokens N] BUILDDIR [SLOTS] [IMAGE_KB]}")
SLOTS=${2:-16}
KB=${3:-256}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-line-dfu.XXXXXX")
. "$(dirname "$0")/../../tests/integration/line/common.sh"
. "$(dirname "$0")/../../tests/integration/line-pool/pool.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki $((RUNS * (SLOTS + 1) + 10)) "$KB"
pool=
for t in $(seq 2 "$TOKENS"); do
	pool_add_token "pool-$t" $((RUNS * (SLOTS + 1) + 10))
	pool="${pool:+$pool, }pool-$t"
done
size=$(stat -c %s "$tmp/pki/demo.sfi")

# cpu_s PID: user + system CPU seconds of a running process (its threads included).
cpu_s() {
	awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' \
		"/proc/$1/stat"
}

# threads_cpu PID: "TID NAME TICKS" for each thread of a running process.
threads_cpu() {
	local t
	for t in /proc/"$1"/task/*; do
		awk -v tid="${t##*/}" '{ n = $0; sub(/^[^(]*\(/, "", n); sub(/\) .*/, "", n)
			sub(/.*\) /, ""); print tid, n, $12 + $13 }' "$t/stat" 2>/dev/null || true
	done
}

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
		[ -z "$pool" ] || printf 'pool = %s\n' "$pool"
		printf '[database]\npath = %s\n' "$tmp/sfid.db"
		printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
			"$tmp/sfid.sock"
		for i in $(seq 0 $((slots - 1))); do
			printf '[slot D%d]\nport = dfu:usb:2-1.%d\npoll_ms = 50\n' "$i" $((i + 1))
		done
	} >"$tmp/sfid.conf"
	line_start_sfid
	ctl job load "$tmp/pki/demo.sfi" --count "$slots" >/dev/null
	c0=$(cpu_s "$emu_pid")
	threads_cpu "$emu_pid" >"$tmp/threads0"
	s0=$(cpu_s "$sfid_pid")
	t0=$(date +%s.%N)
	ctl start >/dev/null
	wait_for 600 "$slots chips" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" "$slots"
	t1=$(date +%s.%N)
	# CPU seconds (user + system) each process used from `sfictl start` to here.
	echo "$(cpu_s "$emu_pid") - $c0" | bc >"$tmp/cpu.emu"
	# h5emu's CPU by thread name (threads of one name summed), seconds.
	threads_cpu "$emu_pid" | awk -v hz="$(getconf CLK_TCK)" '
		NR == FNR { t0[$1] = $3; next }
		{ s[$2] += $3 - t0[$1] }
		END { for (n in s) { printf "%s%s %.2f", sep, n, s[n] / hz; sep = ", " }; print "" }' \
		"$tmp/threads0" - >"$tmp/threads"
	echo "$(cpu_s "$sfid_pid") - $s0" | bc >"$tmp/cpu.sfid"
	sql "SELECT count(DISTINCT token_serial) FROM licenses" >"$tmp/cpu.tokens"
	paste -d' ' "$tmp/cpu.emu" "$tmp/cpu.sfid" "$tmp/cpu.tokens" >"$tmp/cpu"
	line_stop_pid "$sfid_pid"
	sfid_pid=
	line_stop_pid "$emu_pid"
	emu_pid=
	echo "$t1 - $t0" | bc
}

one=()
many=()
one_cpu=()
many_cpu=()
for r in $(seq "$RUNS"); do
	one+=("$(run 1)")
	read -r e1 s1 _ <"$tmp/cpu"
	many+=("$(run "$SLOTS")")
	read -r en sn tn <"$tmp/cpu"
	threads=$(cat "$tmp/threads")
	one_cpu+=("$e1:$s1")
	many_cpu+=("$en:$sn")
	printf 'run %d: 1 slot %.2f s (CPU h5emu %s s, sfid %s s), %d slots %.2f s (CPU h5emu %s s: %s; sfid %s s; licenses from %s tokens), load %s\n' \
		"$r" "${one[-1]}" "$e1" "$s1" "$SLOTS" "${many[-1]}" "$en" "$threads" "$sn" "$tn" \
		"$(cut -d' ' -f1-3 /proc/loadavg)"
done
python3 - "$size" "$SLOTS" "${one[*]}" "${many[*]}" "${one_cpu[*]}" "${many_cpu[*]}" "$TOKENS" <<'PY'
import statistics, sys
size, slots, tokens = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[7])
one = statistics.median(float(x) for x in sys.argv[3].split())
many = statistics.median(float(x) for x in sys.argv[4].split())
def cpu(arg, i):
    return statistics.median(float(x.split(":")[i]) for x in arg.split())
print(f"image {size} bytes, one chip per slot, {tokens} line token(s), medians:")
print(f"  1 slot:   {one:6.2f} s  {size / 1024 / one:6.1f} KiB/s per chip")
print(f"  {slots} slots: {many:6.2f} s  {size / 1024 / many:6.1f} KiB/s per chip, "
      f"{slots * size / 1024 / many:7.1f} KiB/s for the line")
print(f"  {slots} slots took {many / one:.2f}x the time of one")
print(f"  CPU, 1 slot:   h5emu {cpu(sys.argv[5], 0):.2f} s, sfid {cpu(sys.argv[5], 1):.2f} s")
print(f"  CPU, {slots} slots: h5emu {cpu(sys.argv[6], 0):.2f} s, sfid {cpu(sys.argv[6], 1):.2f} s")
PY

#!/usr/bin/env bash
# sfid on 16 DFU slots when the HSM is the bottleneck (not a test): every license is slowed
# to DELAY_MS (default 1500 ms, a smartcard's pace) by the fault-injecting PKCS#11 module
# (C_WrapKey, one per license), and the line token is alone or in a pool of 2, 4, ... tokens
# ([hsm] pool). CHIPS chips per slot (default 2) are installed per run; a run with no delay
# (one token) shows what the slots alone allow. Runs alternate between the shapes; prints
# the medians of the wall time from `sfictl start` to the last chip recorded installed, and
# chips per hour.
#
# Usage: bench/pool/bench-pool.sh [--runs N] BUILDDIR [SLOTS] [CHIPS] [TOKENS...]
#        (defaults: 3 runs, 16 slots, 2 chips per slot, pools of 1 2 4)
set -euo pipefail
RUNS=3
if [ "${1:-}" = --runs ]; then
	RUNS=${2:?--runs needs a number}
	shift 2
fi
BUILD=$(realpath "${1:?usage: bench-pool.sh [--runs N] BUILDDIR [SLOTS] [CHIPS] [TOKENS...]}")
SLOTS=${2:-16}
CHIPS=${3:-2}
shift $(($# < 3 ? $# : 3))
POOLS=("${@:-}")
[ -n "${POOLS[0]}" ] || POOLS=(1 2 4)
DELAY_MS=${DELAY_MS:-1500}
KB=${KB:-32}
# The next chip comes SWAP_MS after a finalized one was checked: over DFU the check has
# pauses between its steps, and a shorter idle swaps the chip before it ends.
SWAP_MS=${SWAP_MS:-1000}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-pool.XXXXXX")
. "$(dirname "$0")/../../tests/integration/line/common.sh"
. "$(dirname "$0")/../../tests/integration/line-pool/pool.sh"
trap line_cleanup EXIT INT TERM

N=$((SLOTS * CHIPS))
max=1
for p in "${POOLS[@]}"; do
	[ "$p" -gt "$max" ] && max=$p
done
per_token=$((RUNS * (${#POOLS[@]} + 1) * N + 10))
line_setup_pki "$per_token" "$KB"
for t in $(seq 2 "$max"); do
	pool_add_token "pool-$t" "$per_token"
done

# job_installed N: the job counts N chips installed.
job_installed() {
	[ "$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["installed"])')" -eq "$1" ]
}

# run TOKENS DELAY_MS: prints the seconds from start to the last of N chips installed.
run() {
	local tokens=$1 delay=$2 t0 t1 names=
	rm -f "$tmp/sfid.db" "$tmp/sfid.db-wal" "$tmp/sfid.db-shm" "$tmp/sfid.sock"
	rm -rf "$tmp/emu-state"
	for t in $(seq 2 "$tokens"); do
		names="$names pool-$t"
	done
	pool_slow "$delay"
	line_start_emu "$SLOTS" "$CHIPS" --auto-swap "$SWAP_MS" --transport both
	{
		printf '[station]\nname = bench-pool\n'
		printf '[hsm]\nmodule = %s\ntoken = %s\npin_file = %s\n' "$FAULT_MODULE" \
			"$TOKEN_LABEL" "$tmp/pki/pin"
		[ -z "$names" ] || printf 'pool = %s\n' "$names"
		printf '[database]\npath = %s\n' "$tmp/sfid.db"
		printf '[control]\nsocket = %s\noperator_group = users\nsupervisor_group = root\n' \
			"$tmp/sfid.sock"
		for i in $(seq 0 $((SLOTS - 1))); do
			printf '[slot D%d]\nport = dfu:usb:2-1.%d\npoll_ms = 50\nreopen_ms = 200\n' \
				"$i" $((i + 1))
		done
	} >"$tmp/sfid.conf"
	line_start_sfid
	ctl job load "$tmp/pki/demo.sfi" --count "$N" >/dev/null
	t0=$(date +%s.%N)
	ctl start >/dev/null
	wait_for 900 "$N chips installed" job_installed "$N"
	t1=$(date +%s.%N)
	[ "$(sql "SELECT count(DISTINCT token_serial) FROM licenses WHERE state = 'installed'")" -eq "$tokens" ] ||
		line_fail "a pool of $tokens issued from $(sql "SELECT count(DISTINCT token_serial) FROM licenses")"
	line_stop_pid "$sfid_pid"
	sfid_pid=
	line_stop_pid "$emu_pid"
	emu_pid=
	echo "$t1 - $t0" | bc
}

declare -A times
for r in $(seq "$RUNS"); do
	line="run $r:"
	for p in "${POOLS[@]}"; do
		s=$(run "$p" "$DELAY_MS")
		times[$p]="${times[$p]:-} $s"
		line="$line $p token(s) $(printf '%.1f' "$s") s,"
	done
	s=$(run 1 0)
	times[free]="${times[free]:-} $s"
	echo "$line no delay $(printf '%.1f' "$s") s"
done
args=()
for p in "${POOLS[@]}"; do
	args+=("$p:${times[$p]}")
done
args+=("free:${times[free]}")
python3 - "$SLOTS" "$CHIPS" "$DELAY_MS" "${args[@]}" <<'PY'
import statistics, sys
slots, chips, delay = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
n = slots * chips
print(f"{slots} DFU slots x {chips} chips = {n} chips, {delay} ms per license; medians:")
for a in sys.argv[4:]:
    key, vals = a.split(":")
    v = [float(x) for x in vals.split()]
    m = statistics.median(v)
    what = "no delay (slots only)" if key == "free" else f"{key} token(s)"
    bound = "" if key == "free" else f"  (HSM floor {n * delay / 1000 / int(key):.1f} s)"
    print(f"  {what:22s} {m:7.2f} s  {n * 3600 / m:8.0f} chips/h  [{min(v):.2f}-{max(v):.2f}]{bound}")
PY

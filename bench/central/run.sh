#!/usr/bin/env bash
# Central shipping figures for docs/performance.md ("## Central shipping"), on a PostgreSQL 15
# cluster of its own (temp dir, Unix socket, fsync on):
#  1. push throughput: the cursor and central_push() alone, batches of 100, 500 and 2000
#     records, into the server (records per second, each checked and chained there);
#  2. backlog drain: an hour-long outage simulated by filling the local trail directly with
#     RECORDS records (default 32000: 16 slots, a chip every 25 s per slot, 14 records a
#     chip), then sfid's shipper thread with its default settings until the backlog is 0;
#  3. the line's per-slot stream rate, paced at 115200 baud, SLOTS slots x 1 chip, with the
#     shipper on and off, RUNS times each (alternating), medians.
# Usage: bench/central/run.sh [--runs N] [BUILD_DIR] [RECORDS] [SLOTS] [IMAGE_KB]
set -euo pipefail
RUNS=3
if [ "${1:-}" = --runs ]; then RUNS=$2; shift 2; fi
src=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$src/build}" && pwd)
RECORDS=${2:-32000}
SLOTS=${3:-8}
KB=${4:-64}
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/sfid-bench-central.XXXXXX")
dir=$tmp
. "$src/tests/integration/line/common.sh"
. "$src/tests/integration/central/pg-common.sh"
bench_cleanup() { pg_stop; line_cleanup; }
trap bench_cleanup EXIT INT TERM
calc() { awk "BEGIN { print $* }"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

meson compile -C "$BUILD" db/sfid-db db/sfid-db-format central/sfid-central \
	daemon/sfid/sfidcore common/sficommon >/dev/null
cc -O2 -std=gnu11 -D_GNU_SOURCE -o "$tmp/bench-central" "$src/bench/central/bench-central.c" \
	"$src/daemon/sfid/shipper.c" "$src/tests/unit/db/test-signer.c" \
	-I"$src/db" -I"$src/central" -I"$src/daemon/sfid" -I"$src/tests/unit/db" -I"$src/common" \
	-I"$BUILD" \
	"$BUILD/daemon/sfid/libsfidcore.a" "$BUILD/central/libsfid-central.a" \
	"$BUILD/db/libsfid-db.a" "$BUILD/db/libsfid-db-format.a" "$BUILD/common/libsficommon.a" \
	$(pkg-config --cflags --libs sqlite3 json-c libcrypto libpq libsystemd) -pthread

echo "reproduce: $0 --runs $RUNS $BUILD $RECORDS $SLOTS $KB"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start;" \
	"files on $(df -T "$tmp" | awk 'NR==2 {print $2}')"
pg_init
pg_start
"$BUILD/central/sfi-central" migrate --pg "$(pg_conninfo admin)" --password-file "$PG_ADMIN_PW" >/dev/null
( umask 077; echo "pw-bench-$RANDOM$RANDOM" > "$tmp/station.pw" )
# One login role per station (the same password here).
for s in push-100 push-500 push-2000 drain line; do
	r=bench_${s//-/_}
	pg_psql -c "CREATE ROLE $r LOGIN IN ROLE sfid_station PASSWORD '$(cat "$tmp/station.pw")'" \
		-c "SELECT sfid_central.add_station('$s', '$r')" >/dev/null
done
conn_of() { pg_conninfo "bench_${1//-/_}"; }

"$tmp/bench-central" fill "$tmp/outage.db" "$RECORDS"
for b in 100 500 2000; do
	"$tmp/bench-central" push "$tmp/outage.db" "$(conn_of "push-$b")" "$tmp/station.pw" "push-$b" "$b"
done
"$tmp/bench-central" drain "$tmp/outage.db" "$(conn_of drain)" "$tmp/station.pw" drain

# --- the line with the shipper on and off -------------------------------------------------
line_setup_pki 100000 "$KB"
wire=$(calc "115200 / 11")
run_line() { # on|off: sets pct (average per-slot stream rate, % of the wire limit)
	line_stop_pid "$sfid_pid"
	sfid_pid=
	line_stop_pid "$emu_pid"
	emu_pid=
	rm -rf "$tmp/emu-state"
	line_start_emu "$SLOTS" 1 --auto-swap 50 --baud 115200
	line_write_config "$SLOTS"
	sed -i 's/^name = test-line$/name = line/' "$tmp/sfid.conf"
	if [ "$1" = on ]; then
		printf '[central]\nconninfo = %s\npassword_file = %s\n' "$(conn_of line)" "$tmp/station.pw" >>"$tmp/sfid.conf"
	fi
	line_start_sfid
	ctl job load "$tmp/pki/demo.sfi" --count "$SLOTS" >/dev/null
	ctl start >/dev/null
	ctl --json watch --count "$SLOTS" --timeout 1800 >"$tmp/watch.jsonl" || line_fail "the run did not finish"
	pct=$(python3 -c '
import json, sys
last = {}
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("event") == "progress" and m["data"]["done"] == m["data"]["total"]:
        last[m["data"]["chip"]] = m["data"]["rate"]
r = list(last.values())
print(100 * sum(r) / len(r) / float(sys.argv[2]))' "$tmp/watch.jsonl" "$wire")
	if [ "$1" = on ]; then
		state=$(ctl --json status | python3 -c 'import json,sys; c=json.load(sys.stdin)["central"]; print(c["state"], c["shipped"])')
		echo "  shipper: $state"
	fi
}
on=() off=()
for rep in $(seq "$RUNS"); do
	for mode in off on; do
		run_line "$mode"
		printf 'run %d: %d slots paced 115200, shipping %s: per-slot stream rate %.1f %% of the wire limit\n' \
			"$rep" "$SLOTS" "$mode" "$pct"
		if [ "$mode" = on ]; then on+=("$pct"); else off+=("$pct"); fi
	done
done
printf -- '--- medians of %d runs: shipping off %.1f %%, on %.1f %% of the wire limit per slot\n' \
	"$RUNS" "$(median "${off[@]}")" "$(median "${on[@]}")"

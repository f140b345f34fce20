#!/bin/bash
# Audit database figures for docs/performance.md ("## Audit database").
# Usage: bench/db/run.sh [BUILD_DIR] [DATA_DIR]
#   BUILD_DIR: a configured meson build (default: build); DATA_DIR: where the database
#   files go (default: a temp dir under /var/tmp, i.e. a real disk, not tmpfs).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
data=$(mktemp -d "${2:-/var/tmp}/sfid-bench-db-XXXXXX")
trap 'rm -rf "$data"' EXIT

meson compile -C "$build" db/sfid-db db/sfid-db-format >/dev/null
cc -O2 -std=gnu11 -o "$data/bench-db" "$src/bench/db/bench-db.c" \
	"$src/tests/unit/db/test-signer.c" -I"$src/db" -I"$src/tests/unit/db" \
	"$build/db/libsfid-db.a" "$build/db/libsfid-db-format.a" \
	$(pkg-config --cflags --libs sqlite3 json-c libcrypto)

echo "== file system: $(df -T "$data" | awk 'NR==2 {print $2 " on " $1}')"
echo "== audit records per second (5 runs of 500)"
"$data/bench-db" records "$data" 500 5

chips=50
echo "== fsyncs per programmed chip ($chips chips, strace)"
strace -f -c -e trace=fsync,fdatasync -o "$data/strace.txt" "$data/bench-db" chips "$data" $chips
cat "$data/strace.txt"
total=$(awk '$NF == "fsync" || $NF == "fdatasync" {n += $4} END {print n + 0}' "$data/strace.txt")
echo "fsync+fdatasync calls: $total for $chips chips (includes opening the database)"
awk -v t="$total" -v c="$chips" 'BEGIN {printf "per chip: %.1f\n", t / c}'

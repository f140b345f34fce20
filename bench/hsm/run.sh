#!/bin/bash
# HSM license figures for docs/performance.md ("## HSM licenses").
# Usage: bench/hsm/run.sh [BUILD_DIR] [DATA_DIR]
#   BUILD_DIR: a configured meson build (default: build); DATA_DIR: where the SoftHSM2 token
#   files go (default: a temp dir under /var/tmp, a real disk, not tmpfs).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
data=$(mktemp -d "${2:-/var/tmp}/sfid-bench-hsm-XXXXXX")
trap 'rm -rf "$data"' EXIT
module=/usr/lib/softhsm/libsofthsm2.so

meson compile -C "$build" common/sficommon hsm/sfihsm hsm/sfihsm-provision tools/sfi-hsm/sfi-hsm \
	tests/integration/hsm/hsm-chipside tests/integration/hsm/hsm-testkit >/dev/null
cc -O2 -std=gnu11 -o "$data/bench-hsm" "$src/bench/hsm/bench-hsm.c" \
	-I"$src/hsm" -I"$src/protocol" -I"$src/common" -I"$src/tests/integration/hsm" \
	"$build/tests/integration/hsm/libhsm-chipside.a" "$build/hsm/libsfihsm-provision.a" "$build/hsm/libsfihsm.a" \
	"$build/protocol/libsfiprotocol.a" "$build/common/libsficommon.a" \
	$(pkg-config --cflags --libs libcrypto p11-kit-1) -ldl -lpthread

echo "== file system: $(df -T "$data" | awk 'NR==2 {print $2 " on " $1}')"
echo "== SoftHSM2 $(softhsm2-util --version), library: 5 runs of 200 licenses, one thread"
mkdir "$data/lib"
"$data/bench-hsm" "$module" "$data/lib" 200 5

echo "== syscalls per license (strace, 50 licenses)"
mkdir "$data/strace"
strace -f -c -e trace=fsync,fdatasync,openat,rename,unlink,flock,fcntl \
	-o "$data/strace.txt" "$data/bench-hsm" "$module" "$data/strace" 50 1 >/dev/null
cat "$data/strace.txt"

echo "== sfi-hsm license, whole process (module load, login, license, fsync): 20 runs"
export SOFTHSM2_CONF=$data/cli/softhsm2.conf
mkdir -p "$data/cli/tokens"
printf 'directories.tokendir = %s/cli/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$data" >"$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label cli --so-pin 5678 --pin 1234 >/dev/null
cd "$data/cli"
printf '1234\n' >pin
chmod 600 pin
kit=$build/tests/integration/hsm/hsm-testkit
sfi=$build/tools/sfi-hsm/sfi-hsm
"$kit" mkca ca.key ca.pub
head -c 16 /dev/urandom >k.bin
chmod 600 k.bin
"$kit" mkimage k.bin 0x484 image.sfi
"$kit" mkchip ca.key 0x484 0102030405060708090a0b0c chip.cert chip.key
"$sfi" provision --module "$module" --token cli --pin-file pin --image-key k.bin \
	--image image.sfi --max-count 100 --ca-pub ca.pub >/dev/null
for i in $(seq 20); do
	s=$(date +%s.%N)
	"$sfi" license --module "$module" --token cli --pin-file pin --cert chip.cert \
		--image image.sfi --out "l$i.lic" >/dev/null
	e=$(date +%s.%N)
	echo "$s $e"
done | awk '{ printf "%.1f\n", ($2 - $1) * 1000 }' | sort -n >"$data/cli.txt"
awk '{ t[NR] = $1 } END { printf "median %.1f ms per sfi-hsm license (min %.1f, max %.1f)\n", t[int((NR + 1) / 2)], t[1], t[NR] }' "$data/cli.txt"

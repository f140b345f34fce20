#!/usr/bin/env bash
# Install time of a 1 MiB OSFI image through sfi-boot into h5emu paced at a real baud rate,
# against the wire limit (baud / 11 bytes per second for 8E1). Not a test: prints figures.
# Usage: bench/osfi/bench-install.sh [BUILDDIR] [BAUD] [KIB]
set -euo pipefail

build=$(realpath "${1:-build}")
baud=${2:-115200}
kib=${3:-1024}
h5emu=${H5EMU:-$build/emulator/h5emu}
pack=$build/tools/sfi-pack/sfi-pack
boot=$build/tools/sfi-boot/sfi-boot

tmp=$(mktemp -d)
emu_pid=
cleanup() {
	[ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"

openssl ecparam -name prime256v1 -genkey -noout -out ca.pem 2>/dev/null
head -c 32 /dev/urandom > g.bin
chmod 600 g.bin
head -c $((kib * 1024)) /dev/urandom > fw.bin
printf 'PRODUCT_STATE, Closed\n' > ob.csv
"$pack" create --out img.sfi --firmware fw.bin@0x08000000 --options ob.csv --generate-key k.bin
"$pack" license --global --global-key g.bin --key k.bin --image img.sfi --out img.lic

"$h5emu" --count 1 --dir "$tmp/emu" --umockdev --baud "$baud" --ca-key ca.pem \
	--global-key g.bin > ready.txt 2> emu.log &
emu_pid=$!
for _ in $(seq 100); do grep -q ready ready.txt 2>/dev/null && break; sleep 0.1; done
mapfile -t uenv < emu/umockdev.env

start=$(date +%s.%N)
env "${uenv[@]}" "$boot" --port /dev/ttyUSB0 --baud "$baud" install --license img.lic img.sfi \
	> /dev/null
end=$(date +%s.%N)

image=$(stat -c %s img.sfi)
python3 - "$start" "$end" "$baud" "$image" <<'PY'
import sys
start, end, baud, image = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t = end - start
limit = baud / 11.0
stream = image - 64
print(f"image {image} bytes, stream {stream} bytes, install {t:.2f} s at {baud} baud")
print(f"wire limit {limit:.0f} B/s -> {stream / limit:.2f} s for the stream alone")
print(f"achieved {stream / t:.0f} B/s = {100 * stream / t / limit:.1f} % of the wire limit "
      f"(whole install, GET_INFO to the final GET_INFO)")
PY

#!/usr/bin/env bash
# sfi-pack check and info on structurally invalid images (truncated, bad magic, a header
# that lies about its areas, trailing bytes, empty): each is refused with exit 2 (bad input) and one
# sentence, never a crash; a good image authenticates (0), with another key it does not (3).
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
PACK=$BUILD/tools/sfi-pack/sfi-pack
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfi-pack-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cd "$tmp"
umask 077
head -c 16 /dev/urandom >image.key
head -c 16 /dev/urandom >other.key
{ printf '\000'; head -c 4095 /dev/urandom; } >fw.bin
printf 'PRODUCT_STATE, Closed\n' >options.csv
"$PACK" create --out good.sfi --firmware fw.bin@0x08000000 --options options.csv \
	--key image.key >/dev/null ||
	fail "sfi-pack create"

# run WANT ARGS...: sfi-pack exits WANT; its stderr is in err.
run() {
	local want=$1 rc
	shift
	set +e
	"$PACK" "$@" >out 2>err
	rc=$?
	set -e
	[ "$rc" -eq "$want" ] || fail "sfi-pack $*: exit $rc, expected $want: $(cat err)"
}

run 0 check --key image.key good.sfi
# A raw binary at an address is raw whatever its first byte (':' starts Intel HEX text); a
# .hex file given an address is refused with a sentence.
{ printf ':'; head -c 4095 /dev/urandom; } >colon.bin
run 0 create --out colon.sfi --firmware colon.bin@0x08000000 --options options.csv --key image.key
printf ':00000001FF\n' >end.hex
run 2 create --out x.sfi --firmware end.hex@0x08000000 --options options.csv --key image.key
grep -q "an Intel HEX file carries its addresses" err || fail "a .hex with @ADDR: $(cat err)"
run 3 check --key other.key good.sfi
size=$(stat -c %s good.sfi)
python3 - good.sfi <<'PY'
import struct, sys
good = open(sys.argv[1], "rb").read()
def put(name, data):
    open(name, "wb").write(data)
put("empty.sfi", b"")
put("short.sfi", good[:10])
put("header-only.sfi", good[:64])
put("half.sfi", good[:len(good) // 2])
put("magic.sfi", b"XXXX" + good[4:])
put("trailing.sfi", good + b"\0" * 64)
areas = bytearray(good); struct.pack_into("<H", areas, 10, 0xffff); put("areas.sfi", bytes(areas))
total = bytearray(good); struct.pack_into("<I", total, 12, 0xffffffff); put("total.sfi", bytes(total))
hdrlen = bytearray(good); struct.pack_into("<H", hdrlen, 6, 1); put("hdrlen.sfi", bytes(hdrlen))
PY
n=0
for f in empty short header-only half magic trailing areas total hdrlen; do
	cmp -s "$f.sfi" good.sfi && fail "$f.sfi is the good image"
	for cmd in check info; do
		if [ "$cmd" = check ]; then
			run 2 check --key image.key "$f.sfi"
		else
			run 2 info "$f.sfi"
		fi
		grep -q "$f.sfi" err || fail "sfi-pack $cmd $f.sfi: the message does not name the file: $(cat err)"
		n=$((n + 1))
	done
done
echo "$n invalid images refused with exit 2 ($size-byte good image authenticates)"

#!/usr/bin/env bash
# Key files and numbers on the OEM tools' command lines: an image key or global key that
# other users may read or write is refused by sfi-pack and sfi-hsm (as sfid refuses such a
# PIN file), one only its group may read is taken; numbers are decimal or 0x hexadecimal
# and nothing else ("0x0x7", " 7", "+7", "010", "7k" are refused).
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
PACK=$BUILD/tools/sfi-pack/sfi-pack
HSM=$BUILD/tools/sfi-hsm/sfi-hsm

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-key-files.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

# run WANT ARGS...: the command exits WANT; its stderr is in err.
run() {
	local want=$1 rc
	shift
	set +e
	"$@" >out 2>err
	rc=$?
	set -e
	[ "$rc" -eq "$want" ] || fail "$*: exit $rc, expected $want: $(cat err)"
}

head -c 16 /dev/urandom >image.key
head -c 32 /dev/urandom >global.key
chmod 600 image.key global.key
{ printf '\000'; head -c 4095 /dev/urandom; } >fw.bin
printf 'PRODUCT_STATE, Closed\n' >options.csv
openssl ecparam -name prime256v1 -genkey -noout -out ca.pem 2>/dev/null
openssl ec -in ca.pem -pubout -out ca-pub.pem 2>/dev/null
printf '0000\n' >pin
chmod 600 pin
run 0 "$PACK" create --out good.sfi --firmware fw.bin@0x08000000 --options options.csv \
	--key image.key --version 7

n=0
for mode in 644 604 602 606 666; do
	chmod "$mode" image.key
	run 2 "$PACK" check --key image.key good.sfi
	grep -q "other users may read or write" err || fail "sfi-pack check, key mode $mode: $(cat err)"
	run 2 "$PACK" create --out x.sfi --firmware fw.bin@0x08000000 --options options.csv \
		--key image.key
	[ ! -e x.sfi ] || fail "sfi-pack create wrote an image with a key of mode $mode"
	run 2 "$PACK" license --global --global-key global.key --key image.key --image good.sfi \
		--out x.lic
	run 2 "$HSM" provision --module /nonexistent/pkcs11.so --token t --pin-file pin \
		--image-key image.key --image good.sfi --max-count 1 --ca-pub ca-pub.pem
	grep -q "other users may read or write" err || fail "sfi-hsm provision, key mode $mode: $(cat err)"
	n=$((n + 4))
done
chmod 600 image.key
chmod 644 global.key
run 2 "$PACK" license --global --global-key global.key --key image.key --image good.sfi --out x.lic
grep -q "other users may read or write" err || fail "sfi-pack license, global key 644: $(cat err)"
run 2 "$HSM" provision --module /nonexistent/pkcs11.so --token t --pin-file pin \
	--image-key image.key --image good.sfi --max-count 1 --ca-pub ca-pub.pem --global-key global.key
grep -q "other users may read or write" err || fail "sfi-hsm provision, global key 644: $(cat err)"
# A key only its group may read is private enough.
chmod 640 image.key global.key
run 0 "$PACK" check --key image.key good.sfi
run 0 "$PACK" license --global --global-key global.key --key image.key --image good.sfi --out g.lic

# Numbers: strict decimal or 0x hexadecimal.
for bad in 0x0x7 " 7" "+7" "-1" 010 7k 0x "" 0x100000000 4294967296; do
	run 1 "$PACK" create --out x.sfi --firmware fw.bin@0x08000000 --options options.csv \
		--key image.key --version "$bad"
	run 1 "$HSM" provision --module /nonexistent/pkcs11.so --token t --pin-file pin \
		--image-key image.key --image good.sfi --max-count "$bad" --ca-pub ca-pub.pem
	n=$((n + 2))
done
run 1 "$PACK" create --out x.sfi --firmware fw.bin@0x0x08000000 --options options.csv --key image.key
printf 'PRODUCT_STATE, 0x0x72\n' >bad-options.csv
run 2 "$PACK" create --out x.sfi --firmware fw.bin@0x08000000 --options bad-options.csv \
	--key image.key
for good in 0 7 0x7 0X1f 4294967295 0xffffffff; do
	run 0 "$PACK" create --out x.sfi --firmware fw.bin@0x08000000 --options options.csv \
		--key image.key --version "$good"
done
echo "$n refusals of shared keys and loose numbers; private and group-only keys taken"

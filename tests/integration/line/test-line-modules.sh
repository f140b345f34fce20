#!/usr/bin/env bash
# An image with two modules: module 7 licensed by a global license file, module 9 by its own
# token (found by its firmware id, its own counter). Every chip gets the image license and the
# module 9 license counted on their tokens and recorded in the ledger; the flash holds both
# modules. A module file that does not match the image is refused at job load. When the
# module token runs out, the line halts and the image license already issued for that chip
# stays recorded and reusable.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-modules.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

module_counter() {
	"$SFIHSM" info --json --module "$SOFTHSM_MODULE" --token module9 \
		--pin-file "$tmp/pki/pin" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("counter", d.get("licenses_left")))'
}

load_refused() { # load_refused EXPECTED_TEXT CSV
	set +e
	ctl job load "$tmp/pki/mod.sfi" --modules "$2" >/dev/null 2>"$tmp/err"
	local rc=$?
	set -e
	[ "$rc" -ne 0 ] && grep -q "$1" "$tmp/err" ||
		line_fail "module file $2: exit $rc, $(cat "$tmp/err") (expected '$1')"
}

line_setup_pki 10 16
p=$tmp/pki
head -c 16 /dev/urandom >"$p/mk7.key"
head -c 16 /dev/urandom >"$p/mk9.key"
chmod 600 "$p/mk7.key" "$p/mk9.key"
{ printf '\001'; head -c 8191 /dev/urandom; } >"$p/mod7.bin"
{ printf '\002'; head -c 12287 /dev/urandom; } >"$p/mod9.bin"
"$SFIPACK" create --out "$p/mod.sfi" --firmware "$p/firmware.bin@0x08000000" \
	--module "$p/mod7.bin@0x08100000:7:$p/mk7.key" --module "$p/mod9.bin@0x08140000:9:$p/mk9.key" \
	--options "$p/options.csv" --key "$p/image.key" >/dev/null || line_fail "sfi-pack create"
# The line's token licenses this image; module 9 has a token of its own with 5 licenses.
"$SFIHSM" provision --wipe --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$p/pin" --image-key "$p/image.key" --image "$p/mod.sfi" --max-count 10 \
	--ca-pub "$p/ca-pub.pem" >/dev/null || line_fail "provision the line token"
softhsm2-util --init-token --free --label module9 --so-pin 12345678 --pin 87654321 >/dev/null
"$SFIHSM" provision --module "$SOFTHSM_MODULE" --token module9 --pin-file "$p/pin" \
	--image-key "$p/mk9.key" --module-id 9 --max-count 5 --ca-pub "$p/ca-pub.pem" >/dev/null ||
	line_fail "provision the module token"
"$SFIPACK" license --global --global-key "$p/global.key" --key "$p/mk7.key" --image "$p/mod.sfi" \
	--module 7 --out "$p/mod7.lic" >/dev/null || line_fail "module 7 global license"
fw9=$(printf 'OSFI-MOD-1\011\000\000\000' | sha256sum | cut -c1-64)
fw8=$(printf 'OSFI-MOD-1\010\000\000\000' | sha256sum | cut -c1-64)
printf '# module id, license, address\n7, mod7.lic, 0x08100000\n9, hsm:%s, 0x08140000\n' "$fw9" \
	>"$p/modules.csv"
printf '7, mod7.lic, 0x08100000\n' >"$p/missing.csv"
printf '7, mod7.lic, 0x08100000\n9, hsm:%s, 0x08150000\n' "$fw9" >"$p/address.csv"
printf '7, mod7.lic, 0x08100000\n9, hsm:%s, 0x08140000\n' "$fw8" >"$p/fwid.csv"
head -c 172 /dev/urandom >"$p/bad.lic"
printf '7, bad.lic, 0x08100000\n9, hsm:%s, 0x08140000\n' "$fw9" >"$p/badlic.csv"

before=$(line_counter)
line_start_emu 3 2 --auto-swap 200
line_write_config 3
line_start_sfid

load_refused "carries module 9" "$p/missing.csv"
load_refused "not at 0x08150000" "$p/address.csv"
load_refused "firmware id is not the one of module 9" "$p/fwid.csv"
load_refused "not a global license for module 7" "$p/badlic.csv"
set +e
ctl job load "$p/mod.sfi" >/dev/null 2>"$tmp/err"
rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "module license information file" "$tmp/err" ||
	line_fail "an image with modules loaded without its module file: $(cat "$tmp/err")"

ctl --json job load "$p/mod.sfi" --modules "$p/modules.csv" >"$tmp/job.json" ||
	line_fail "job load with modules"
grep -q '"target": *9' "$tmp/job.json" || line_fail "the job does not list module 9"
ctl start >/dev/null
# 6 chips, 5 module licenses: the sixth chip halts the line on the module token.
wait_for 120 "the line to halt on the module token" halted "token [^ ]+ \\(module 9\\) is exhausted"
line_skip_without_xspecial
wait_for 30 "slots to settle" sql_is "SELECT count(*) FROM attempts WHERE result = 'running'" 0
ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")
[ "$ok" -eq 5 ] || line_fail "$ok chips installed, expected 5"
[ "$(module_counter)" -eq 0 ] || line_fail "module counter $(module_counter), expected 0"
[ "$(sql "SELECT count(*) FROM licenses WHERE target = 9 AND state = 'installed'")" -eq 5 ] ||
	line_fail "module licenses in the ledger: $(sql "SELECT target, state FROM licenses")"
[ "$(sql "SELECT count(*) FROM licenses WHERE target = 0 AND state = 'installed'")" -eq 5 ] ||
	line_fail "image licenses installed: $(sql "SELECT target, state FROM licenses")"
# The sixth chip's image license was spent before the module token ran out: it is recorded,
# not installed, and reusable by that chip.
[ "$(sql "SELECT count(*) FROM licenses WHERE target = 0 AND state = 'issued_not_installed'")" -eq 1 ] ||
	line_fail "the sixth chip's image license: $(sql "SELECT target, state FROM licenses")"
[ "$(sql "SELECT count(*) FROM licenses WHERE state IN ('reserved', 'issued')")" -eq 0 ] ||
	line_fail "licenses left in flight"
after=$(line_counter)
[ $((before - after)) -eq "$(sql "SELECT count(*) FROM licenses WHERE target = 0 AND state <> 'void'")" ] ||
	line_fail "line token spent $((before - after)), the ledger records otherwise"
[ "$(sql "SELECT count(DISTINCT token_serial) FROM licenses")" -eq 2 ] ||
	line_fail "licenses do not name two tokens"

# Flash: firmware, module 7 and module 9 at their addresses on every installed chip.
n=0
for c in "$tmp/emu-state"/chip*; do
	grep -q '^opt1=0x[0-9a-f]\{4\}72' "$c/chip.conf" 2>/dev/null || continue
	cmp -s -n 8192 "$p/mod7.bin" <(tail -c +$((0x100000 + 1)) "$c/memory.bin") ||
		line_fail "$c: module 7 not in flash"
	cmp -s -n 12288 "$p/mod9.bin" <(tail -c +$((0x140000 + 1)) "$c/memory.bin") ||
		line_fail "$c: module 9 not in flash"
	n=$((n + 1))
done
[ "$n" -eq 5 ] || line_fail "$n chips Closed with both modules, expected 5"

# history and stats come from the database and survive a restart, as does the job.
line_stop_pid "$sfid_pid"
sfid_pid=
line_start_sfid
ctl --json job show | grep '"modules"' >/dev/null || line_fail "the job was not restored"
[ "$(ctl --json history | grep -o '"result": *"ok"' | wc -l)" -eq 5 ] ||
	line_fail "history after restart: $(ctl --json history)"
ctl --json stats | grep '"ok": *5' >/dev/null || line_fail "stats after restart: $(ctl --json stats)"
echo "5 chips with a global module license and a counted module token; the sixth halted" \
	"the line with its image license recorded; job, history and stats survive a restart"

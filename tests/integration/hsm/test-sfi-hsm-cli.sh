#!/usr/bin/env bash
# sfi-hsm end to end on SoftHSM2: provision, info, counted licenses that unwrap only on their
# chip, refusals that spend nothing (exit codes and one-line errors), module tokens, global
# licenses, exhaustion, audit key export.
set -euo pipefail
. "$(dirname "$0")/hsm-lib.sh"
K=$HSM_TESTKIT

make_token oem
make_token mod7
make_token blank

"$SFI_HSM" --help | grep "Exit codes" >/dev/null || fail "--help lacks exit codes"
expect_fail 1 "unknown command" "$SFI_HSM" frobnicate

hsm provision oem --image-key k.bin --image image.sfi --max-count 3 --ca-pub ca.pub \
	--global-key g.bin >/dev/null
expect_fail 5 "already provisioned" hsm provision oem --image-key k.bin --image image.sfi \
	--max-count 9 --ca-pub ca.pub
hsm provision oem --image-key k.bin --image image.sfi --max-count 3 --ca-pub ca.pub \
	--global-key g.bin --wipe >/dev/null
[ "$(left oem)" = 3 ] || fail "counter after provisioning is $(left oem)"
want_id=$(head -c 64 image.sfi | sha256sum | cut -d' ' -f1)
hsm info oem --json | grep "\"firmware_id\":\"$want_id\"" >/dev/null || fail "firmware id is not the image id"
hsm info oem | grep "^licenses left:  3$" >/dev/null || fail "info text"

# One license: counted once, unwraps on its chip only.
hsm license oem --cert chip1.cert --image image.sfi --out chip1.lic | grep "licenses left: 2" >/dev/null
[ "$(left oem)" = 2 ] || fail "counter did not drop by one"
[ "$(stat -c %s chip1.lic)" = 172 ] || fail "license size"
[ "$("$K" field chip1.lic counter)" = 2 ] || fail "counter field"
[ "$("$K" field chip1.lic uid)" = 0102030405060708090a0b0c ] || fail "uid field"
"$K" check chip1.lic chip1.key k.bin image.sfi || fail "license does not unwrap on its chip"
rc=0; "$K" check chip1.lic chip2.key k.bin image.sfi 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "license unwrapped on another chip (rc $rc)"

# Refusals: nothing spent, no file left behind.
expect_fail 2 "refusing to overwrite" hsm license oem --cert chip2.cert --image image.sfi --out chip1.lic
expect_fail 6 "bad chip certificate" hsm license oem --cert foreign.cert --image image.sfi --out x.lic
expect_fail 6 "wrong device id" hsm license oem --cert wrongdev.cert --image image.sfi --out x.lic
expect_fail 6 "wrong firmware id" hsm license oem --cert chip2.cert --image other-image.sfi --out x.lic
expect_fail 6 "wrong firmware id" hsm license oem --cert chip2.cert --image image.sfi --module-id 7 --out x.lic
expect_fail 2 "not an OSFI image" hsm license oem --cert chip2.cert --image chip1.cert --out x.lic
[ ! -e x.lic ] || fail "a refused license left a file"
printf '9999\n' >bad-pin; chmod 600 bad-pin
expect_fail 4 "PIN incorrect" "$SFI_HSM" info --module "$SOFTHSM_MODULE" --token oem --pin-file bad-pin
chmod 644 bad-pin
expect_fail 4 "readable or writable by others" "$SFI_HSM" info --module "$SOFTHSM_MODULE" --token oem --pin-file bad-pin
chmod 602 bad-pin
expect_fail 4 "readable or writable by others" "$SFI_HSM" info --module "$SOFTHSM_MODULE" --token oem --pin-file bad-pin
mkfifo pin-fifo
expect_fail 4 "not a regular file" timeout 10 "$SFI_HSM" info --module "$SOFTHSM_MODULE" --token oem --pin-file pin-fifo
expect_fail 4 "no PIN" setsid -w "$SFI_HSM" info --module "$SOFTHSM_MODULE" --token oem </dev/null
expect_fail 3 "module missing" "$SFI_HSM" info --module "$WORK/nope.so" --token oem --pin-file pin
expect_fail 3 "no token present" "$SFI_HSM" info --module "$SOFTHSM_MODULE" --token nope --pin-file pin
expect_fail 5 "not provisioned" hsm info blank
expect_fail 5 "not provisioned" hsm license blank --cert chip2.cert --image image.sfi --out x.lic
[ "$(left oem)" = 2 ] || fail "a refusal changed the counter"

# Global license: uncounted, opens with G.
hsm global-license oem --image image.sfi --out global.lic >/dev/null
"$K" check-global global.lic g.bin k.bin image.sfi || fail "global license does not unwrap"
[ "$(left oem)" = 2 ] || fail "global license was counted"

# Module token: firmware id = module firmware id; licenses name the module.
hsm provision mod7 --image-key k.bin --module-id 7 --max-count 1 --ca-pub ca.pub >/dev/null
hsm license mod7 --cert chip2.cert --image image.sfi --module-id 7 --out mod.lic >/dev/null
"$K" check mod.lic chip2.key k.bin image.sfi 7 || fail "module license does not unwrap"
expect_fail 6 "wrong firmware id" hsm license mod7 --cert chip2.cert --image image.sfi --out x.lic
expect_fail 5 "no global key" hsm global-license mod7 --image image.sfi --module-id 7 --out x.lic
expect_fail 7 "license counter exhausted" hsm license mod7 --cert chip1.cert --image image.sfi \
	--module-id 7 --out x.lic

# Exhaustion on the image token.
hsm license oem --cert chip2.cert --image image.sfi --out a.lic >/dev/null
hsm license oem --cert chip1.cert --image image.sfi --out b.lic >/dev/null
[ "$(left oem)" = 0 ] || fail "counter not at zero"
expect_fail 7 "license counter exhausted" hsm license oem --cert chip2.cert --image image.sfi --out x.lic
[ ! -e x.lic ] || fail "exhausted counter left a license file"
[ "$(left oem)" = 0 ] || fail "counter moved below zero"
[ "$("$K" field a.lic nonce)" != "$("$K" field b.lic nonce)" ] || fail "nonces repeat"

# Refill: the same keys, the counter and the granted total up; the license spent before
# stays spent (granted - left).
hsm audit-pubkey oem --out audit-before.pem
hsm info oem --json | grep '"licenses_granted":3' >/dev/null || fail "granted total after provisioning"
hsm info oem | grep "^granted:        3 (spent: 3)$" >/dev/null || fail "info text: granted"
expect_fail 1 "needs --add" hsm refill oem
expect_fail 1 "--add must be" hsm refill oem --add 0
hsm refill oem --add 4 | grep "licenses left: 0 -> 4 (granted in all: 7)" >/dev/null || fail "refill output"
[ "$(left oem)" = 4 ] || fail "counter after refill is $(left oem)"
hsm info oem --json | grep '"licenses_granted":7' >/dev/null || fail "granted total after refill"
hsm audit-pubkey oem --out audit-after.pem
cmp -s audit-before.pem audit-after.pem || fail "a refill changed the audit key"
hsm license oem --cert chip1.cert --image image.sfi --out c.lic >/dev/null 2>license.err
grep -q "in no line's audit trail" license.err || fail "sfi-hsm license does not say its spend is off the trail"
[ "$(left oem)" = 3 ] || fail "counter after a license following a refill"
expect_fail 2 "" hsm refill oem --add 4294967295

# Audit public key: a P-256 PEM key equal to the token's.
hsm audit-pubkey oem --out audit.pem
openssl pkey -pubin -in audit.pem -noout -text | grep "prime256v1" >/dev/null || fail "audit key PEM"
echo "sfi-hsm CLI: all checks passed"

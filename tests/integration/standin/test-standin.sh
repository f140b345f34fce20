#!/usr/bin/env bash
# The STM32_Programmer_CLI stand-in (tests/standin) against h5emu chips and a SoftHSM2 token:
# the command lines the vendor backend runs (certificate, counter, license, install) work
# and print ST's documented log lines; each configured fault and each refusal (unknown
# reader slot, no license left, a license for another chip, no RSSe file) ends with an
# "Error:" line and exit status 1.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?}
SRC=${SFID_SOURCE_ROOT:?}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/standin.XXXXXX")
. "$SRC/tests/integration/line/common.sh"
trap line_cleanup EXIT
CLI=$SRC/tests/standin/STM32_Programmer_CLI

line_setup_pki 2
line_start_emu 3 1
mapfile -t uenv <"$tmp/emu/umockdev.env"
head -c 64 /dev/urandom >"$tmp/rsse.bin"
write_conf() {
	cat >"$tmp/standin.conf" <<CONF
[tools]
sfi-boot = $BUILD/tools/sfi-boot/sfi-boot
sfi-hsm = $SFIHSM
[hsm]
module = $SOFTHSM_MODULE
pin-file = $tmp/pki/pin
image = $tmp/pki/demo.sfi
slot.1 = $TOKEN_LABEL
[faults]
fail = ${1:-}
CONF
}
write_conf
export SFID_STANDIN_CONF=$tmp/standin.conf
cli() {
	set +e
	env "${uenv[@]}" timeout 120 "$CLI" "$@" >"$tmp/out" 2>&1
	rc=$?
	set -e
}
conn() { echo -c port=/dev/ttyUSB$1 br=115200 P=EVEN; }
expect_ok() { [ "$rc" -eq 0 ] || line_fail "$1: exit $rc: $(cat "$tmp/out")"; }
expect_err() {
	[ "$rc" -eq 1 ] || line_fail "$1: exit $rc, expected 1: $(cat "$tmp/out")"
	grep -F "Error: $2" "$tmp/out" >/dev/null || line_fail "$1: no 'Error: $2': $(cat "$tmp/out")"
}

cli -hsmgetcounter slot=1
expect_ok counter
grep -Fx "HSM counter value : 2" "$tmp/out" >/dev/null || line_fail "counter: $(cat "$tmp/out")"
grep -F "stand-in" "$tmp/out" >/dev/null || line_fail "the banner does not say it is a stand-in"

# Chip 0: certificate, license, install.
cli $(conn 0) -gc "$tmp/cert0.bin"
expect_ok "-gc"
grep -Fx "Reading chip Certificate finished" "$tmp/out" >/dev/null || line_fail "-gc: $(cat "$tmp/out")"
[ "$(stat -c %s "$tmp/cert0.bin")" -eq 149 ] || line_fail "-gc wrote $(stat -c %s "$tmp/cert0.bin") bytes"
cli -hsmglfcb "$tmp/cert0.bin" "$tmp/lic0.bin" slot=1
expect_ok "-hsmglfcb"
grep -Fx "Succeed to generate license for the current STM32 device" "$tmp/out" >/dev/null ||
	line_fail "-hsmglfcb: $(cat "$tmp/out")"
[ "$(line_counter)" -eq 1 ] || line_fail "counter after one license: $(line_counter)"

# A license for chip 0 refused by chip 1; no RSSe file; then chip 0 installs.
cli $(conn 1) -sfi "$tmp/pki/demo.sfi" hsm=0 "$tmp/lic0.bin" -rsse "$tmp/rsse.bin"
expect_err "license of another chip" "RSS internal system error or License is invalid !"
cli $(conn 0) -sfi "$tmp/pki/demo.sfi" hsm=0 "$tmp/lic0.bin" -rsse "$tmp/missing.bin"
expect_err "no RSSe" "Cannot launch RSSe..."
cli $(conn 0) -sfi "$tmp/pki/demo.sfi" hsm=0 "$tmp/lic0.bin" -rsse "$tmp/rsse.bin"
expect_ok "-sfi"
grep -Fx "Starting Firmware Install operation..." "$tmp/out" >/dev/null || line_fail "-sfi: $(cat "$tmp/out")"
env "${uenv[@]}" timeout 60 "$BUILD/tools/sfi-boot/sfi-boot" --port /dev/ttyUSB0 info >"$tmp/info" ||
	line_fail "sfi-boot info after install: $(cat "$tmp/info")"
grep -q '^product state: Closed' "$tmp/info" || line_fail "chip 0 after install: $(cat "$tmp/info")"

# The last license, then the counter is zero.
cli $(conn 1) -gc "$tmp/cert1.bin"
expect_ok "-gc chip 1"
cli -hsmglfcb "$tmp/cert1.bin" "$tmp/lic1.bin" slot=1
expect_ok "-hsmglfcb chip 1"
cli $(conn 2) -gc "$tmp/cert2.bin"
expect_ok "-gc chip 2"
cli -hsmglfcb "$tmp/cert2.bin" "$tmp/lic2.bin" slot=1
expect_err "counter zero" "HSM counter reached zero"
cli -hsmglfcb "$tmp/cert2.bin" "$tmp/lic2.bin" slot=7
expect_err "unknown reader slot" "Failed to open session with reader slot ID 7"

# Every configured fault.
for f in gc counter license install; do
	write_conf "$f"
	case $f in
	gc) cli $(conn 1) -gc "$tmp/x.bin"; expect_err "fault $f" "Failed to read chip certificate" ;;
	counter) cli -hsmgetcounter slot=1; expect_err "fault $f" "Failed to get the HSM counter" ;;
	license) cli -hsmglfcb "$tmp/cert1.bin" "$tmp/x.bin" slot=1
		expect_err "fault $f" "Failed to generate license" ;;
	install) cli $(conn 1) -sfi "$tmp/pki/demo.sfi" hsm=0 "$tmp/lic1.bin" -rsse "$tmp/rsse.bin"
		expect_err "fault $f" "Invalid state after SFI install !" ;;
	esac
done
write_conf
cli $(conn 1) -sfi "$tmp/pki/demo.sfi" hsm=0 "$tmp/lic1.bin" -rsse "$tmp/rsse.bin"
expect_ok "-sfi chip 1 after the faults"
echo "stand-in: certificate, counter, license, install and 8 refusals as documented"

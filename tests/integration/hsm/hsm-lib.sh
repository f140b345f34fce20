# Shared set-up for the HSM shell tests: a temp dir holding a SoftHSM2 configuration and
# token directory, removed on exit. Sourced, not run.
: "${SFI_HSM:?}" "${HSM_TESTKIT:?}" "${SOFTHSM_MODULE:?}"

if [ ! -r "$SOFTHSM_MODULE" ] || ! command -v softhsm2-util >/dev/null; then
	echo "SoftHSM2 missing: skipped"
	exit 77
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sfid-hsm-sh-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export SOFTHSM2_CONF=$WORK/softhsm2.conf
mkdir "$WORK/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$WORK" >"$SOFTHSM2_CONF"
printf '1234\n' >"$WORK/pin"
chmod 600 "$WORK/pin"
cd "$WORK"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# make_token LABEL: an initialized, empty token (user PIN 1234).
make_token() {
	softhsm2-util --init-token --free --label "$1" --so-pin 5678 --pin 1234 >/dev/null
}

# hsm TOKEN ARGS...: sfi-hsm on SoftHSM2 with the test PIN file, bounded in time.
hsm() {
	local cmd=$1 token=$2
	shift 2
	timeout 60 "$SFI_HSM" "$cmd" --module "$SOFTHSM_MODULE" --token "$token" \
		--pin-file "$WORK/pin" "$@"
}

# expect_fail CODE PATTERN CMD...: CMD exits with CODE and says PATTERN on stderr.
expect_fail() {
	local code=$1 pattern=$2 rc=0
	shift 2
	"$@" 2>"$WORK/stderr" >/dev/null || rc=$?
	[ "$rc" -eq "$code" ] || fail "$* exited $rc, want $code: $(cat "$WORK/stderr")"
	grep -q -- "$pattern" "$WORK/stderr" || fail "$*: no '$pattern' in: $(cat "$WORK/stderr")"
	[ "$(wc -l <"$WORK/stderr")" -eq 1 ] || fail "$*: error is not one line: $(cat "$WORK/stderr")"
}

# left TOKEN: licenses left, from info --json.
left() {
	hsm info "$1" --json | sed -n 's/.*"licenses_left":\([0-9]*\).*/\1/p'
}

# Common inputs: a chip CA, an image key, a global key, an image, chips.
"$HSM_TESTKIT" mkca ca.key ca.pub
"$HSM_TESTKIT" mkca other-ca.key other-ca.pub
head -c 16 /dev/urandom >k.bin
head -c 32 /dev/urandom >g.bin
chmod 600 k.bin g.bin
"$HSM_TESTKIT" mkimage k.bin 0x484 image.sfi
"$HSM_TESTKIT" mkimage k.bin 0x484 other-image.sfi
"$HSM_TESTKIT" mkchip ca.key 0x484 0102030405060708090a0b0c chip1.cert chip1.key
"$HSM_TESTKIT" mkchip ca.key 0x484 1112131415161718191a1b1c chip2.cert chip2.key
"$HSM_TESTKIT" mkchip other-ca.key 0x484 2122232425262728292a2b2c foreign.cert foreign.key
"$HSM_TESTKIT" mkchip ca.key 0x474 3132333435363738393a3b3c wrongdev.cert wrongdev.key

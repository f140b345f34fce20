# Shared helpers of the sfi-boot integration tests (sourced). h5emu runs in $tmp/emu with
# its chip state in $tmp/state; sfi-boot runs with the testbed's environment.
: "${SFID_BUILD_ROOT:?run through meson test}"
H5EMU=$SFID_BUILD_ROOT/emulator/h5emu
SFIBOOT=$SFID_BUILD_ROOT/tools/sfi-boot/sfi-boot
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfi-boot-test.XXXXXX")
. "$(dirname "${BASH_SOURCE[0]}")/../emu-common.sh"

# start_emu [h5emu options...]: 2 chips, state kept in $tmp/state.
start_emu() {
	emu_start_common --count 2 "$@"
}

# sb ARGS...: runs sfi-boot (bounded) in the umockdev environment; sets $rc, output in
# $tmp/out and $tmp/err.
sb() {
	in_testbed "$SFIBOOT" "$@"
}

# expect RC ARGS...: runs sfi-boot and checks its exit status.
expect() {
	local want=$1
	shift
	sb "$@"
	[ "$rc" -eq "$want" ] || fail "sfi-boot $* exited $rc, expected $want; stderr: $(cat "$tmp/err")"
}

# err_has TEXT: the last sfi-boot's stderr contains TEXT, and is one line.
err_has() {
	grep -q -- "$1" "$tmp/err" || fail "stderr lacks '$1': $(cat "$tmp/err")"
	[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "stderr is not one line: $(cat "$tmp/err")"
}

# Shared helpers of the adapter tests (sourced): h5emu with umockdev adapters in $tmp/emu,
# clients run in the testbed's environment.
: "${SFID_BUILD_ROOT:?run through meson test}"
H5EMU=$SFID_BUILD_ROOT/emulator/h5emu
SFIBOOT=$SFID_BUILD_ROOT/tools/sfi-boot/sfi-boot
SFICTL=$SFID_BUILD_ROOT/daemon/sfictl/sfictl
SFID=$SFID_BUILD_ROOT/daemon/sfid/sfid
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-ports-test.XXXXXX")
. "$(dirname "${BASH_SOURCE[0]}")/../emu-common.sh"

# expect RC PROGRAM ARGS...: runs PROGRAM in the testbed and checks its exit status.
expect() {
	local want=$1
	shift
	in_testbed "$@"
	[ "$rc" -eq "$want" ] || fail "$* exited $rc, expected $want; stderr: $(cat "$tmp/err")"
}

# err_has TEXT: the last program's stderr contains TEXT, and is one line.
err_has() {
	grep -qF -- "$1" "$tmp/err" || fail "stderr lacks '$1': $(cat "$tmp/err")"
	[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "stderr is not one line: $(cat "$tmp/err")"
}

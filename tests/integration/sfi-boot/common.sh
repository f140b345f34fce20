# Shared helpers of the sfi-boot integration tests (sourced). h5emu runs in $tmp/emu with
# its chip state in $tmp/state; sfi-boot runs with the testbed's environment.
: "${SFID_BUILD_ROOT:?run through meson test}"
H5EMU=$SFID_BUILD_ROOT/tests/emulator/h5emu
SFIBOOT=$SFID_BUILD_ROOT/tools/sfi-boot/sfi-boot
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfi-boot-test.XXXXXX")
emu_pid=

stop_emu() {
	if [ -n "$emu_pid" ]; then
		kill -TERM "$emu_pid" 2>/dev/null || true
		# Bounded: a stuck emulator is killed after 5 s.
		for _ in $(seq 50); do
			kill -0 "$emu_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$emu_pid" 2>/dev/null || true
		wait "$emu_pid" 2>/dev/null || true
		emu_pid=
	fi
}

cleanup() {
	stop_emu
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

fail() {
	echo "FAIL: $*" >&2
	if [ -f "$tmp/emu/umockdev.env" ]; then
		echo "--- testbed" >&2
		cat "$tmp/emu/umockdev.env" >&2
		ls -l "$(sed -n 's/^UMOCKDEV_DIR=//p' "$tmp/emu/umockdev.env")/sys/class/tty" >&2 || true
	fi
	if [ -f "$tmp/emu.log" ]; then
		echo "--- h5emu log (tail)" >&2
		tail -n 20 "$tmp/emu.log" >&2
	fi
	exit 1
}

# start_emu [h5emu options...]: 2 chips, state kept in $tmp/state.
start_emu() {
	stop_emu
	rm -rf "$tmp/emu" "$tmp/ready"
	"$H5EMU" --count 2 --dir "$tmp/emu" --state-dir "$tmp/state" "$@" \
		>"$tmp/ready" 2>"$tmp/emu.log" &
	emu_pid=$!
	for _ in $(seq 100); do
		if [ -s "$tmp/ready" ]; then
			return 0
		fi
		kill -0 "$emu_pid" 2>/dev/null || fail "h5emu $* exited: $(cat "$tmp/emu.log")"
		sleep 0.1
	done
	fail "h5emu $* printed no ready line in 10 s"
}

# sb ARGS...: runs sfi-boot (bounded) in the umockdev environment; sets $rc, output in
# $tmp/out and $tmp/err.
sb() {
	local envs=()
	if [ -f "$tmp/emu/umockdev.env" ]; then
		while IFS= read -r line; do
			[ -n "$line" ] && envs+=("$line")
		done <"$tmp/emu/umockdev.env"
	fi
	set +e
	env "${envs[@]}" timeout 60 "$SFIBOOT" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	set -e
	[ "$rc" -ne 124 ] || fail "sfi-boot $* hung (killed after 60 s)"
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

# Shared helpers of the tests that run h5emu with umockdev adapters (sourced after $tmp and
# $H5EMU are set): h5emu in $tmp/emu with its chip state in $tmp/state, programs run in the
# testbed's environment, h5emu's control socket.
emu_pid=
. "$(dirname "${BASH_SOURCE[0]}")/emu-ctl.sh"

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

# start_emu [h5emu options...]: waits (bounded) for h5emu's ready line.
start_emu() {
	emu_start_common "$@"
}

emu_start_common() {
	stop_emu
	rm -rf "$tmp/emu" "$tmp/ready"
	"$H5EMU" --dir "$tmp/emu" --state-dir "$tmp/state" "$@" >"$tmp/ready" 2>"$tmp/emu.log" &
	emu_pid=$!
	for _ in $(seq 150); do
		[ -s "$tmp/ready" ] && return 0
		kill -0 "$emu_pid" 2>/dev/null || fail "h5emu $* exited: $(cat "$tmp/emu.log")"
		sleep 0.1
	done
	fail "h5emu $* printed no ready line in 15 s"
}

# in_testbed PROGRAM ARGS...: runs PROGRAM (bounded) in the umockdev environment when there
# is one; sets $rc, output in $tmp/out and $tmp/err.
in_testbed() {
	local envs=()
	if [ -f "$tmp/emu/umockdev.env" ]; then
		while IFS= read -r line; do
			[ -n "$line" ] && envs+=("$line")
		done <"$tmp/emu/umockdev.env"
	fi
	set +e
	env "${envs[@]}" timeout 60 "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	set -e
	[ "$rc" -ne 124 ] || fail "$* hung (killed after 60 s)"
}

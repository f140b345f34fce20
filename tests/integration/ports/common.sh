# Shared helpers of the adapter tests (sourced): h5emu with umockdev adapters in $tmp/emu,
# clients run in the testbed's environment.
: "${SFID_BUILD_ROOT:?run through meson test}"
H5EMU=$SFID_BUILD_ROOT/tests/emulator/h5emu
SFIBOOT=$SFID_BUILD_ROOT/tools/sfi-boot/sfi-boot
SFICTL=$SFID_BUILD_ROOT/daemon/sfictl/sfictl
SFID=$SFID_BUILD_ROOT/daemon/sfid/sfid
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-ports-test.XXXXXX")
emu_pid=

stop_emu() {
	if [ -n "$emu_pid" ]; then
		kill -TERM "$emu_pid" 2>/dev/null || true
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
	if [ -f "$tmp/emu.log" ]; then
		echo "--- h5emu log (tail)" >&2
		tail -n 20 "$tmp/emu.log" >&2
	fi
	exit 1
}

# start_emu [h5emu options...]: waits for the ready line (bounded).
start_emu() {
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

# in_testbed PROGRAM ARGS...: runs PROGRAM (bounded) in the umockdev environment; sets $rc,
# output in $tmp/out and $tmp/err.
in_testbed() {
	local envs=()
	while IFS= read -r line; do
		[ -n "$line" ] && envs+=("$line")
	done <"$tmp/emu/umockdev.env"
	set +e
	env "${envs[@]}" timeout 60 "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	set -e
	[ "$rc" -ne 124 ] || fail "$* hung (killed after 60 s)"
}

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

# emu_ctl COMMAND...: one line to h5emu's control socket; prints its answer.
emu_ctl() {
	python3 - "$tmp/emu/control" "$*" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
out = b""
while not out.endswith(b"ok\n") and b"error" not in out:
    chunk = s.recv(4096)
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode())
PY
}

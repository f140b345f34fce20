#!/usr/bin/env bash
# Job files passed as descriptors: sfid runs where the supervisor's folder is hidden (a
# private tmpfs over it, as PrivateTmp= and ProtectHome= hide /tmp and /home); a job path
# alone is refused there, `sfictl job load` (which opens the files and passes them with
# SCM_RIGHTS) loads the image and the line installs it; after a restart sfid restores the
# job from its own copy.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-fds.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

if ! unshare -m --propagation private true 2>/dev/null; then
	echo "SKIP: cannot make a private mount namespace here (unshare -m), which this test" \
		"needs to hide a folder from sfid" >&2
	exit 77
fi

line_setup_pki 5 16
mkdir -p "$tmp/private"
mv "$tmp/pki/demo.sfi" "$tmp/private/demo.sfi"
line_start_emu 1 1
line_write_config 1

# sfid in its own mount namespace, where $tmp/private is an empty tmpfs.
start_hidden_sfid() {
	line_env
	env "${envs[@]}" unshare -m --propagation private sh -c \
		'mount -t tmpfs tmpfs "$1" && shift && exec "$@"' sh "$tmp/private" \
		"$SFID" --config "$tmp/sfid.conf" >>"$tmp/sfid.log" 2>&1 &
	sfid_pid=$!
	for _ in $(seq 100); do
		if [ -S "$tmp/sfid.sock" ] && "$SFICTL" --socket "$tmp/sfid.sock" status >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$sfid_pid" 2>/dev/null || line_fail "sfid exited at start-up"
		sleep 0.1
	done
	line_fail "sfid did not answer on its socket in 10 s"
}
start_hidden_sfid

# The path alone: sfid cannot see the file.
python3 - "$tmp/sfid.sock" "$tmp/private/demo.sfi" <<'PY' || line_fail "a path sfid cannot read was not refused"
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
f = s.makefile("rb")
s.sendall(json.dumps({"v": 1, "id": 1, "cmd": "job-load", "args": {"image": sys.argv[2]}}).encode() + b"\n")
rep = json.loads(f.readline())
assert rep.get("error", {}).get("code") == "not-found", rep
# A descriptor index with no descriptor passed.
s.sendall(json.dumps({"v": 1, "id": 2, "cmd": "job-load", "args": {"image": sys.argv[2], "image_fd": 0}}).encode() + b"\n")
rep = json.loads(f.readline())
assert rep.get("error", {}).get("code") == "bad-argument" and "SCM_RIGHTS" in rep["error"]["message"], rep
PY

# sfictl passes the descriptor: loaded, and installed.
ctl job load "$tmp/private/demo.sfi" --count 1 >"$tmp/load.out" 2>&1 ||
	line_fail "job load of an image sfid cannot see: $(cat "$tmp/load.out")"
grep -q "image     $tmp/private/demo.sfi" "$tmp/load.out" || line_fail "job show: $(cat "$tmp/load.out")"
ctl start >/dev/null
wait_for 120 "the chip installed" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 1
line_skip_without_xspecial
[ "$(sql "SELECT image_path FROM jobs")" = "$tmp/private/demo.sfi" ] || line_fail "job path not recorded"

# Restarted, sfid restores the job from its copy (it still cannot see the file).
line_stop_pid "$sfid_pid"
sfid_pid=
start_hidden_sfid
grep -q "job 1 restored" "$tmp/sfid.log" || line_fail "the job was not restored after a restart"
[ "$(ctl --json job show | python3 -c 'import json,sys; print(json.load(sys.stdin)["installed"])')" = 1 ] ||
	line_fail "restored job: $(ctl --json job show)"
echo "image under a folder sfid cannot read: loaded through its descriptor, installed, restored"

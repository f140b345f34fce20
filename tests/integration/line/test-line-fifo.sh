#!/usr/bin/env bash
# `job load` of a named pipe (as the image, the module file or the global license) and of a
# device is refused at once as "not a regular file": the loop never waits on such a file,
# so status answers and SIGTERM stops sfid at once afterwards.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-fifo.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 5 16
line_write_config 1
line_start_sfid
mkfifo "$tmp/pipe"

# refused ARGS...: sfictl job load ARGS fails within 10 s saying "not a regular file".
refused() {
	local rc
	set +e
	timeout 10 "$SFICTL" --socket "$tmp/sfid.sock" job load "$@" >/dev/null 2>"$tmp/err"
	rc=$?
	set -e
	[ "$rc" -ne 124 ] || line_fail "job load $*: no answer in 10 s (sfid's loop is blocked)"
	[ "$rc" -ne 0 ] && grep -q "not a regular file" "$tmp/err" ||
		line_fail "job load $*: exit $rc, $(cat "$tmp/err")"
	timeout 10 "$SFICTL" --socket "$tmp/sfid.sock" status >/dev/null ||
		line_fail "status after job load $*"
}
refused "$tmp/pipe"
refused /dev/zero
refused "$tmp/pki/demo.sfi" --modules "$tmp/pipe"
refused "$tmp/pki/demo.sfi" --global-license "$tmp/pipe"

kill -TERM "$sfid_pid"
for _ in $(seq 50); do
	kill -0 "$sfid_pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$sfid_pid" 2>/dev/null && line_fail "sfid ignores SIGTERM 5 s after the job loads"
wait "$sfid_pid" || line_fail "sfid exited $? on SIGTERM"
sfid_pid=
echo "named pipes and devices refused as job files; sfid answered and stopped on SIGTERM"

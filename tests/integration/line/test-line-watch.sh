#!/usr/bin/env bash
# sfictl watch in a real terminal (tmux, 80x24) on a 24-slot line: a token with 3 licenses
# halts the line, and the chips that wanted a fourth fail with a long sentence. The watch,
# opened after that, fits the screen without a wrapped line, shows the job's totals from
# sfid (3 of 10 installed, licenses left) and the halt; resized to 60 columns it still does
# not wrap; when sfid restarts it reconnects; --timeout ends it with status 0.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-watch.XXXXXX")
. "$(dirname "$0")/common.sh"
tmux_sock=$tmp/tmux.sock
# The test's status goes through to line_cleanup, which reads it from $?.
trap 'rc=$?; set +e; tmux -S "$tmux_sock" kill-server 2>/dev/null; (exit $rc); line_cleanup' EXIT INT TERM
command -v tmux >/dev/null || line_fail "tmux is missing (scripts/deps installs it)"

line_setup_pki 3 16
line_start_emu 24 1
line_write_config 24
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count 10 >/dev/null
ctl start >/dev/null
wait_for 120 "the line halted on the exhausted counter" halted "exhausted"
line_skip_without_xspecial
wait_for 60 "3 chips installed" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 3

# capture: the screen as text; wrapped lines joined (-J), so a wrap shows as a long line.
capture() {
	tmux -S "$tmux_sock" capture-pane -p -J -t w >"$tmp/screen.txt"
}
screen_has() {
	capture
	grep -q -- "$1" "$tmp/screen.txt"
}
no_wider_than() {
	capture
	awk -v w="$1" 'length($0) > w { print "line " NR " has " length($0) " columns: " $0; bad = 1 } END { exit bad }' \
		"$tmp/screen.txt" || line_fail "watch wrapped at $1 columns: $(cat "$tmp/screen.txt")"
}

tmux -S "$tmux_sock" -f /dev/null new-session -d -s w -x 80 -y 24 \
	"env TERM=xterm-256color '$SFICTL' --socket '$tmp/sfid.sock' watch; sleep 600"
wait_for 30 "the watch screen" screen_has "HALTED"
wait_for 10 "all 24 slots" screen_has "S23 "
no_wider_than 80
[ "$(wc -l <"$tmp/screen.txt")" -le 24 ] || line_fail "more than 24 lines: $(cat "$tmp/screen.txt")"
grep -q "3/10 installed" "$tmp/screen.txt" || line_fail "no job totals: $(cat "$tmp/screen.txt")"
grep -q "licenses left 0" "$tmp/screen.txt" || line_fail "no licenses left: $(cat "$tmp/screen.txt")"
grep -q "HALTED: the license counter of HSM token" "$tmp/screen.txt" || line_fail "the halt from before watch opened is not shown"
grep -q "chips/h, elapsed .*, ETA" "$tmp/screen.txt" || line_fail "no rate or ETA: $(cat "$tmp/screen.txt")"
grep -Eq "(failed at license|not started, line halted)" "$tmp/screen.txt" ||
	line_fail "the slots' last results are not kept: $(cat "$tmp/screen.txt")"
cp "$tmp/screen.txt" "$tmp/screen-80.txt"
# Colour on a terminal (and none with NO_COLOR, below).
tmux -S "$tmux_sock" capture-pane -p -e -t w | grep $'\033\\[31mHALTED' >/dev/null || line_fail "no colour on a terminal"

# Resized: the layout follows, still without a wrapped line.
tmux -S "$tmux_sock" resize-window -t w -x 60 -y 30
wait_for 10 "a redraw at 60 columns" screen_has "HALTED"
sleep 1
no_wider_than 60

# sfid restarts: watch says so and comes back by itself.
line_stop_pid "$sfid_pid"
sfid_pid=
wait_for 20 "watch telling sfid is away" screen_has "reconnecting"
line_start_sfid
back() {
	capture
	! grep -q reconnecting "$tmp/screen.txt" && grep -q "3/10 installed" "$tmp/screen.txt"
}
wait_for 30 "watch back after the restart" back

tmux -S "$tmux_sock" new-window -t w -n plain \
	"env NO_COLOR=1 TERM=xterm-256color '$SFICTL' --socket '$tmp/sfid.sock' watch; sleep 600"
plain_ready() { tmux -S "$tmux_sock" capture-pane -p -t w:plain | grep "3/10 installed" >/dev/null; }
wait_for 20 "a watch with NO_COLOR" plain_ready
! tmux -S "$tmux_sock" capture-pane -p -e -t w:plain | grep -E $'\033\\[3[12]m' >/dev/null ||
	line_fail "colour despite NO_COLOR"

# --timeout ends a watch with status 0.
set +e
ctl watch --timeout 1 >/dev/null 2>&1
rc=$?
set -e
[ "$rc" -eq 0 ] || line_fail "watch --timeout exited $rc"
echo "watch at 80x24 with 24 slots: no wrap, totals and halt shown; 60 columns; reconnects"
cat "$tmp/screen-80.txt"

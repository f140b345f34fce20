#!/usr/bin/env bash
# Chips swapped too early: h5emu puts the next chip in 1 ms after a chip finalizes, so the
# chip that answers sfid's verification is another one. sfid records the first chip as failed
# at verifying (its license issued, not installed, reusable), takes the new chip next instead
# of waiting for a removal that already happened, and the line does not stall.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-swap.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 10 16
before=$(line_counter)
line_start_emu 1 3 --auto-swap 1 --early-swap
line_write_config 1
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 60 "three results" sql_is "SELECT count(*) FROM attempts WHERE result <> 'running'" 3
line_skip_without_xspecial
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'failed' AND step = 'verifying'
	  AND error_text LIKE '%another chip answered after FINALIZE%'")" -eq 2 ] ||
	line_fail "attempts: $(sql "SELECT result, step, error_text FROM attempts")"
[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'")" -eq 1 ] ||
	line_fail "the last chip was not installed"
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'issued_not_installed'")" -eq 2 ] &&
	[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")" -eq 1 ] ||
	line_fail "licenses: $(sql "SELECT state FROM licenses")"
[ "$(sql "SELECT count(DISTINCT chip_uid) FROM attempts")" -eq 3 ] ||
	line_fail "three different chips expected"
[ $((before - $(line_counter))) -eq 3 ] || line_fail "the counter did not move by 3"
echo "early swaps: 2 chips failed at verifying with reusable licenses, the line went on"

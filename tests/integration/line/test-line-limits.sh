#!/usr/bin/env bash
# Limits: the token's counter runs out mid-job, the database reaches its size limit, and
# the HSM token is removed mid-job. Each time the line halts with one clear message, slots
# stop taking chips, and
# every count the token spent is in the ledger (after a restart's reconciliation).
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-limits.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

# start_stays_halted EXPECTED WHAT: `start` is refused (exit 1) with EXPECTED in its message.
start_stays_halted() {
	local rc=0
	ctl start >/dev/null 2>"$tmp/start.err" || rc=$?
	[ "$rc" -eq 1 ] && grep -q "$1" "$tmp/start.err" ||
		line_fail "$2: exit $rc, $(cat "$tmp/start.err")"
}

# --- counter exhausted: 3 licenses for 6 chips
line_setup_pki 3 16
line_start_emu 2 3 --auto-swap 200
line_write_config 2
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 60 "the line to halt on the counter" halted "license counter of HSM token [^ ]+ \\(the image\\) is exhausted"
line_skip_without_xspecial
wait_for 30 "slots to settle" sql_is "SELECT count(*) FROM attempts WHERE result = 'running'" 0
[ "$(line_counter)" -eq 0 ] || line_fail "counter is $(line_counter), expected 0"
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")" -eq 3 ] ||
	line_fail "expected 3 installed licenses"
[ "$(sql "SELECT count(*) FROM licenses WHERE state NOT IN ('installed', 'void')")" -eq 0 ] ||
	line_fail "licenses left in flight: $(sql "SELECT state FROM licenses")"
sql "SELECT error_text FROM attempts WHERE result = 'failed'" | grep "exhausted" >/dev/null ||
	line_fail "no attempt names the exhausted counter"
start_stays_halted "stays halted.*still exhausted" "start on a line halted on its counter"
# The token is refilled while sfid runs: start checks it again, clears the halt, goes on.
"$SFIHSM" provision --wipe --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$tmp/pki/pin" --image-key "$tmp/pki/image.key" --image "$tmp/pki/demo.sfi" \
	--max-count 2 --ca-pub "$tmp/pki/ca-pub.pem" >/dev/null
ctl start >/dev/null 2>"$tmp/start.err" || line_fail "start after a refill: $(cat "$tmp/start.err")"
ctl --json status | grep '"halted": *null' >/dev/null || line_fail "the halt was not cleared"
wait_for 60 "two more chips" sql_is "SELECT count(*) FROM licenses WHERE state = 'installed'" 5
wait_for 60 "the line to halt on the refilled counter" halted "is exhausted"
line_stop_pid "$sfid_pid"
sfid_pid=

# --- database full: a fresh database limited to a few pages above its initial size
"$SFIHSM" provision --wipe --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$tmp/pki/pin" --image-key "$tmp/pki/image.key" --image "$tmp/pki/demo.sfi" \
	--max-count 50 --ca-pub "$tmp/pki/ca-pub.pem" >/dev/null
before=$(line_counter)
line_stop_pid "$emu_pid"
emu_pid=
EMU_STATE=$tmp/emu-state-2 line_start_emu 2 8 --auto-swap 200
sed -i "s|^path = .*sfid.db$|path = $tmp/full.db|" "$tmp/sfid.conf"
line_start_sfid
line_stop_pid "$sfid_pid"
sfid_pid=
pages=$(sqlite3 "$tmp/full.db" "PRAGMA page_count")
sed -i "s|^path = $tmp/full.db$|path = $tmp/full.db\nmax_size_kb = $(((pages + 8) * 4))|" \
	"$tmp/sfid.conf"
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 90 "the line to halt on the database" halted "the database"
sleep 1
ctl --json status | grep '"state": *"installing"' >/dev/null && line_fail "slots still install"
grep -q "database or disk is full\|full" "$tmp/sfid.log" || line_fail "no 'full' in the log"
line_stop_pid "$sfid_pid"
sfid_pid=

# A restart with room reconciles: every spent count is in the ledger.
sed -i "/^max_size_kb = /d" "$tmp/sfid.conf"
line_start_sfid
after=$(line_counter)
recorded=$(sqlite3 -readonly "$tmp/full.db" "SELECT count(*) FROM licenses WHERE state <> 'void'")
[ $((before - after)) -eq "$recorded" ] ||
	line_fail "token spent $((before - after)) licenses, the ledger records $recorded"
line_no_unrecorded

# --- token removed while the line runs: halt, nothing spent unrecorded
ok="SELECT count(*) FROM attempts WHERE result = 'ok'"
n=$(sqlite3 -readonly "$tmp/full.db" "$ok")
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 60 "one more chip" sql_at_least_db "$tmp/full.db" "$ok" $((n + 1))
mv "$tmp/tokens" "$tmp/tokens.removed"
wait_for 60 "the line to halt on the token" halted "token removed|failed while issuing"
start_stays_halted "stays halted" "start while the token is out"
# SoftHSM2 finds a token put back only when the module starts again: restart sfid.
mv "$tmp/tokens.removed" "$tmp/tokens"
line_stop_pid "$sfid_pid"
sfid_pid=
line_start_sfid
line_no_unrecorded
after=$(line_counter)
recorded=$(sqlite3 -readonly "$tmp/full.db" "SELECT count(*) FROM licenses WHERE state <> 'void'")
[ $((before - after)) -eq "$recorded" ] ||
	line_fail "token spent $((before - after)) licenses, the ledger records $recorded"
echo "counter exhausted: 3 installed, halted; database full and token removed: halted," \
	"$recorded spent = recorded"

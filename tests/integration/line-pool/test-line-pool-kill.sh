#!/usr/bin/env bash
# sfid is SIGKILLed while chains run on two tokens of a pool of three at once: after a
# restart the ledger is reconciled with every token of the pool (nothing left reserved, no
# unrecorded spend), the interrupted chips finish reusing their licenses, and for each token
# the count it spent is exactly what the ledger records as issued by it: no license lost,
# none issued twice.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-pool-kill.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
. "$(dirname "$0")/pool.sh"
trap line_cleanup EXIT INT TERM

installing() {
	[ "$(ctl --json status | grep -o '"state": *"installing"' | wc -l)" -ge "$1" ]
}

line_setup_pki 30 32
pool_add_token pool-b 30
pool_add_token pool-c 30
pool_slow 600
line_start_emu 8 2 --baud 115200 --auto-swap 200
pool_write_config 8 "pool-b pool-c"
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 90 "2 slots installing" installing 2
wait_for 60 "two reservations open at once" \
	sql_at_least_db "$tmp/sfid.db" "SELECT count(*) FROM licenses WHERE state = 'reserved'" 2
line_skip_without_xspecial
line_kill_sfid
open_at_kill=$(sql "SELECT count(DISTINCT token_serial) FROM licenses WHERE state = 'reserved'")
[ "$open_at_kill" -ge 1 ] || line_fail "no reservation was open when sfid was killed"

line_start_sfid
line_no_unrecorded
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'reserved'")" -eq 0 ] ||
	line_fail "a reservation is still open after the restart"
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 150 "16 chips installed" \
	sql_is "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'" 16
wait_for 30 "licensing settled" \
	sql_is "SELECT count(*) FROM licenses WHERE state IN ('reserved', 'issued')" 0

per_token=$(pool_ledger_agrees "$TOKEN_LABEL" pool-b pool-c)
twice=$(sql "SELECT count(*) FROM (SELECT chip_uid FROM licenses
	     WHERE state IN ('issued', 'installed', 'issued_not_installed')
	     GROUP BY chip_uid HAVING count(*) > 1)")
[ "$twice" -eq 0 ] || line_fail "$twice chips hold two licenses"
installed=$(sql "SELECT count(DISTINCT chip_uid) FROM licenses WHERE state = 'installed'")
[ "$installed" -eq 16 ] || line_fail "$installed chips hold an installed license, expected 16"
tokens_used=$(sql "SELECT count(DISTINCT token_serial) FROM licenses WHERE state = 'installed'")
[ "$tokens_used" -eq 3 ] || line_fail "licenses came from $tokens_used tokens, expected 3"
reused=$(sql "SELECT count(*) FROM license_uses WHERE reused = 1")
[ "$reused" -ge 1 ] || line_fail "no interrupted chip reused its license"
unconfirmed=$(sql "SELECT count(*) FROM licenses WHERE state = 'reserved_unconfirmed'")
echo "pool kill/restart: 16 chips,$per_token; $reused reused, $unconfirmed spent in the HSM when killed (recorded)"

#!/usr/bin/env bash
# A pool of three line tokens (3, 4 and 5 licenses) serves 4 slots x 4 chips with every
# license slowed to 0.4 s: licenses come from all three, issued side by side; the smallest
# token runs dry mid-job and the others go on; when all are dry the line halts with a
# sentence. Each token's counter fell by exactly what the ledger records as issued by it,
# the sum is the chips installed, no chip holds two licenses, the export verifies.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-pool.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
. "$(dirname "$0")/pool.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 3 32
pool_add_token pool-b 4
pool_add_token pool-c 5
pool_slow 400
line_start_emu 4 4 --auto-swap 200
pool_write_config 4 "pool-b, pool-c"
line_start_sfid
grep -q "of the line token's pool: 4 licenses left" "$tmp/sfid.log" ||
	line_fail "sfid did not open pool-b as a token of the pool"
[ "$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["licenses_left"])')" -eq 12 ] ||
	line_fail "status does not count the pool's 12 licenses"
# sfictl hsm reads every token of the pool: the sum and each token's own counter.
ctl --json hsm >"$tmp/hsm.json"
python3 - "$tmp/hsm.json" "$TOKEN_LABEL" <<'PY' || line_fail "sfictl hsm: $(cat "$tmp/hsm.json")"
import json, sys
o = json.load(open(sys.argv[1]))
got = {t["label"]: t["licenses_left"] for t in o["tokens"]}
assert got == {sys.argv[2]: 3, "pool-b": 4, "pool-c": 5}, got
assert o["licenses_left"] == 12, o["licenses_left"]
PY
ctl hsm >"$tmp/hsm.out"
grep -q "pool of 3 tokens" "$tmp/hsm.out" && grep -Eq "pool-c +serial [^ ]+ +5 left" "$tmp/hsm.out" ||
	line_fail "sfictl hsm does not list the pool: $(cat "$tmp/hsm.out")"
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 180 "the halt once every token is dry" halted "every HSM token of the pool .* exhausted"
wait_for 60 "slots settled" sql_is "SELECT count(*) FROM attempts WHERE result = 'running'" 0
line_skip_without_xspecial

ok=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
[ "$ok" -eq 12 ] || line_fail "$ok chips installed, expected 12 (the pool's licenses)"
for t in "$TOKEN_LABEL" pool-b pool-c; do
	[ "$(pool_left "$t")" -eq 0 ] || line_fail "token $t still has $(pool_left "$t") licenses"
done
[ "$(ctl --json hsm | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["licenses_left"], *sorted(t["licenses_left"] for t in o["tokens"]))')" = "0 0 0 0" ] ||
	line_fail "sfictl hsm does not read every token of the pool dry"
per_token=$(pool_ledger_agrees "$TOKEN_LABEL" pool-b pool-c)
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")" -eq 12 ] ||
	line_fail "the ledger does not hold 12 installed licenses: $(sql "SELECT state, count(*) FROM licenses GROUP BY state")"
twice=$(sql "SELECT count(*) FROM (SELECT chip_uid FROM licenses WHERE state <> 'void'
	     GROUP BY chip_uid HAVING count(*) > 1)")
[ "$twice" -eq 0 ] || line_fail "$twice chips hold two counted licenses"
pool_overlap || line_fail "no two licenses from different tokens were issued at the same time"
# The first token to run dry did not stop the line: licenses were issued after its last.
line_serial=$(pool_info "$TOKEN_LABEL" | cut -d' ' -f1)
after_dry=$(sql "SELECT count(*) FROM licenses WHERE state <> 'void' AND id >
		 (SELECT max(id) FROM licenses WHERE token_serial = '$line_serial')")
[ "$after_dry" -ge 1 ] || line_fail "no license was issued after the line token ran dry"
grep -q "HSM token $line_serial has no licenses left; the other tokens of its pool go on" \
	"$tmp/sfid.log" || line_fail "the journal does not say the line token ran dry"
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'reserved'")" -eq 0 ] ||
	line_fail "a reservation is left open"
status=$(ctl status)
echo "$status" | grep -q "exhausted" || line_fail "status does not tell the halt: $status"

line_export_verify
grep -q "12 spent, 12 installed" "$tmp/verify.out" ||
	line_fail "the export does not account 12 installed licenses: $(cat "$tmp/verify.out")"
echo "pool of 3 tokens: 12 chips,$per_token; $after_dry issued after the line token ran dry"

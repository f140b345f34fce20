#!/usr/bin/env bash
# What sfid did not do is in its trail: a refill in the middle of a job, and a technician's
# spend with sfi-hsm license between two runs of sfid, appear in sfictl status and hsm, in
# the export, in sfi-audit verify (with the token's real counter, and a wrong one) and in
# the HTML report; an audit key rotation between the two runs of the same job is signed
# into the trail, which verifies across it with both keys; every job records its station,
# sfid version and who started it.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-audit-line.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
trap line_cleanup EXIT INT TERM
TESTKIT=$BUILD/tests/integration/hsm/hsm-testkit

hsm() {
	local cmd=$1
	shift
	"$SFIHSM" "$cmd" --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
		--pin-file "$tmp/pki/pin" "$@"
}
ok_chips="SELECT count(*) FROM attempts WHERE result = 'ok'"
# Waits for n chips installed; a start clears a halt a refill may cause (the counter
# changed under a license being issued: nothing is spent then).
wait_installed() {
	local n=$1
	for _ in $(seq 600); do
		[ "$(sql "$ok_chips")" -ge "$n" ] && return 0
		if halted "changed outside sfid"; then
			ctl start >/dev/null
		fi
		sleep 0.2
	done
	line_fail "timed out waiting for $n chips installed"
}
verify() {
	set +e
	"$SFIAUDIT" verify "$@" >"$tmp/verify.out" 2>&1
	code=$?
	set -e
}

line_setup_pki 30 16
serial=$(hsm info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serial"])')
hsm audit-pubkey --out "$tmp/audit.pem" >/dev/null
line_start_emu 2 6 --baud 115200 --auto-swap 200
line_write_config 2
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 60 "2 chips installed" sql_at_least_db "$tmp/sfid.db" "$ok_chips" 2
line_skip_without_xspecial

# The OEM tops the token up by 5 while the line runs: no new keys, the same audit key.
hsm refill --add 5 >"$tmp/refill.out" || line_fail "sfi-hsm refill: $(cat "$tmp/refill.out")"
grep -q "granted in all: 35" "$tmp/refill.out" || line_fail "refill: $(cat "$tmp/refill.out")"
wait_installed 6
ctl stop >/dev/null
spent() { sql "SELECT count(*) FROM licenses WHERE state <> 'void'"; }
wait_for 30 "the slots to settle" sql_is "SELECT count(*) FROM licenses WHERE state IN
	('reserved', 'issued')" 0
left=$(line_counter)
[ "$left" -eq $((30 + 5 - $(spent))) ] ||
	line_fail "token counter $left after $(spent) spends and a refill of 5"
ctl status >"$tmp/status.out"
grep -q "token $serial: refill of 5 (counter" "$tmp/status.out" ||
	line_fail "sfictl status does not show the refill: $(cat "$tmp/status.out")"
ctl hsm >"$tmp/hsm.out"
grep -q "refill of 5" "$tmp/hsm.out" || line_fail "sfictl hsm: $(cat "$tmp/hsm.out")"
[ "$(sql "SELECT count(*) FROM counter_changes WHERE kind = 'refill'")" = 1 ] ||
	line_fail "the refill is not recorded once"

ctl export --format jsonl --out "$tmp/run1.jsonl" 2>/dev/null
grep -q '"type":"job.start"' "$tmp/run1.jsonl" || line_fail "no job.start record"
grep -q '"station":"test-line","target_count"' "$tmp/run1.jsonl" ||
	line_fail "job.create lacks the station"
grep -q '"kind":"refill"' "$tmp/run1.jsonl" || line_fail "the refill is not in the trail"
verify "$tmp/run1.jsonl" --pubkey "$tmp/audit.pem" --expect-counter "$serial=$left"
[ "$code" = 0 ] || line_fail "verify with the token's counter: exit $code: $(cat "$tmp/verify.out")"
grep -q "token $serial: counter $left at the end of the trail (30 at its start): $(spent) spend(s) proved, 0 spent outside sfid, 5 added" \
	"$tmp/verify.out" || line_fail "verify's counters: $(cat "$tmp/verify.out")"
grep -q "refill of 5 count(s)" "$tmp/verify.out" || line_fail "verify does not list the refill"
hsm info --json >"$tmp/info.json"
verify "$tmp/run1.jsonl" --pubkey "$tmp/audit.pem" --expect-json "$tmp/info.json"
[ "$code" = 0 ] || line_fail "verify --expect-json: exit $code: $(cat "$tmp/verify.out")"
verify "$tmp/run1.jsonl" --pubkey "$tmp/audit.pem" --expect-counter "$serial=$((left - 1))"
[ "$code" = 1 ] && grep -q "^COUNTER MISMATCH, token $serial: the trail leaves the counter at $left, the token reads $((left - 1))" \
	"$tmp/verify.out" || line_fail "a wrong counter: exit $code: $(cat "$tmp/verify.out")"

# Between two runs of sfid a technician spends one count with sfi-hsm license, and the
# OEM has the audit key rotated.
line_stop_pid "$sfid_pid"
sfid_pid=
hsm rotate-audit-key --out "$tmp/audit-new.pem" >"$tmp/rotate.out" ||
	line_fail "rotate-audit-key: $(cat "$tmp/rotate.out")"
cmp -s "$tmp/audit.pem" "$tmp/audit-new.pem" && line_fail "the rotated audit key is the old one"
hsm audit-pubkey --out "$tmp/audit-now.pem" >/dev/null
cmp -s "$tmp/audit-new.pem" "$tmp/audit-now.pem" || line_fail "audit-pubkey is not the new key"
"$TESTKIT" mkchip "$tmp/pki/ca.pem" 0x484 00112233445566778899aabb "$tmp/bench.cert" \
	"$tmp/bench.key"
hsm license --cert "$tmp/bench.cert" --image "$tmp/pki/demo.sfi" --out "$tmp/bench.lic" \
	>/dev/null 2>"$tmp/license.err"
grep -q "spent outside sfid: it is in no line's audit trail" "$tmp/license.err" ||
	line_fail "sfi-hsm license does not say its spend is off the trail: $(cat "$tmp/license.err")"
line_start_sfid
ctl status >"$tmp/status.out"
grep -q "token $serial: UNACCOUNTED SPEND of 1 (counter $((left - 1)), the ledger expected $left" \
	"$tmp/status.out" || line_fail "sfictl status: $(cat "$tmp/status.out")"
ctl hsm >"$tmp/hsm.out"
grep -q "UNACCOUNTED SPEND of 1" "$tmp/hsm.out" || line_fail "sfictl hsm: $(cat "$tmp/hsm.out")"
ctl --json hsm | grep '"kind": *"unaccounted-spend"' >/dev/null || line_fail "sfictl --json hsm"

grep -q "audit key changed (generation 0 -> 1)" "$tmp/sfid.log" ||
	line_fail "sfid did not sign the key change into the trail"
# The same job goes on, signed with the new key.
ctl start >/dev/null
wait_installed 10
ctl stop >/dev/null
wait_for 30 "the slots to settle" sql_is "SELECT count(*) FROM licenses WHERE state IN
	('reserved', 'issued')" 0
[ "$(sql "SELECT count(*) FROM jobs")" = 1 ] || line_fail "the job was not the same job"
left=$(line_counter)
[ "$left" -eq $((30 + 5 - $(spent) - 1)) ] || line_fail "token counter $left at the end"
ctl export --format jsonl --out "$tmp/run2.jsonl" 2>/dev/null
grep -q '"type":"audit.key"' "$tmp/run2.jsonl" || line_fail "no key change in the trail"
verify "$tmp/run1.jsonl" "$tmp/run2.jsonl" --pubkey "$tmp/audit.pem" \
	--pubkey "$tmp/audit-new.pem" --expect-counter "$serial=$left"
[ "$code" = 3 ] || line_fail "two runs as one trail: exit $code: $(cat "$tmp/verify.out")"
grep -q "^audit key change: record [0-9]*: [0-9a-f]* -> [0-9a-f]*, signed by the old key" \
	"$tmp/verify.out" || line_fail "verify does not list the key change: $(cat "$tmp/verify.out")"
verify "$tmp/run1.jsonl" "$tmp/run2.jsonl" --pubkey "$tmp/audit.pem"
[ "$code" = 4 ] && grep -q "which is not in the key ring" "$tmp/verify.out" ||
	line_fail "verify with the old key alone: exit $code: $(cat "$tmp/verify.out")"
verify "$tmp/run2.jsonl" --pubkey "$tmp/audit-new.pem"
[ "$code" = 4 ] || line_fail "verify with the new key alone: exit $code: $(cat "$tmp/verify.out")"
verify "$tmp/run1.jsonl" "$tmp/run2.jsonl" --pubkey "$tmp/audit.pem" \
	--pubkey "$tmp/audit-new.pem" --expect-counter "$serial=$left"
grep -q "^trail: 2 export(s), station \"test-line\"" "$tmp/verify.out" &&
	grep -q "counter change not made by sfid: record [0-9]*: token $serial: 1 count(s) spent outside sfid" \
		"$tmp/verify.out" &&
	grep -q "^VERIFIED, INCOMPLETE: record [0-9]*: token $serial: 1 unaccounted spend(s)" \
		"$tmp/verify.out" || line_fail "verify of both runs: $(cat "$tmp/verify.out")"
set +e
"$SFIAUDIT" report "$tmp/run2.jsonl" --html --pubkey "$tmp/audit.pem" \
	--pubkey "$tmp/audit-new.pem" >"$tmp/report.html"
code=$?
set -e
[ "$code" = 3 ] || line_fail "report --html exit $code"
grep -q "refill of 5 count(s)" "$tmp/report.html" && grep -q "1 count(s) spent outside sfid" \
	"$tmp/report.html" && grep -q '<ul id="key-changes">' "$tmp/report.html" ||
	line_fail "the HTML report does not list the counter and key changes"
echo "refill and key rotation mid-job, an off-line spend: in status, hsm, the trail, verify and the report"

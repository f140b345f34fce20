#!/bin/bash
# The sqlite3 shell reads the schema and the trail; sfi-audit verifies a real export, names
# the record an edit breaks, and summarizes it.
set -euo pipefail
crash=$1
audit=$2
dir=$(mktemp -d "${TMPDIR:-/tmp}/sfid-db-shell-XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

openssl ecparam -name prime256v1 -genkey -noout -out "$dir/key.pem" 2>/dev/null
openssl pkey -in "$dir/key.pem" -pubout -out "$dir/pub.pem"
echo 5000 > "$dir/token"
timeout 60 "$crash" writer "$dir/audit.db" "$dir/key.pem" "$dir/token" 20

db="$dir/audit.db"
[ "$(sqlite3 "$db" 'PRAGMA user_version')" = 9 ] || fail "schema version"
[ "$(sqlite3 "$db" 'PRAGMA journal_mode')" = wal ] || fail "journal mode"
tables=$(sqlite3 "$db" "SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name)")
[ "$tables" = "attempts audit chips counter_changes jobs license_uses licenses serials shipped tokens tool_runs" ] || fail "tables: $tables"
[ "$(sqlite3 "$db" "SELECT count(*) FROM licenses WHERE state = 'installed'")" = 17 ] || fail "installed count"
[ "$(sqlite3 "$db" "SELECT count(*) FROM chips WHERE final_state = 'failed'")" = 3 ] || fail "failed chips"
[ "$(sqlite3 "$db" "SELECT min(counter_after) FROM licenses")" = "$(cat "$dir/token")" ] || fail "counter"
head=$(sqlite3 "$db" "SELECT seq, type, hex(hash) FROM audit ORDER BY seq DESC LIMIT 1")
[[ $head == *"|checkpoint|"* ]] || fail "the job end is not followed by a checkpoint: $head"
if sqlite3 "$db" "DELETE FROM audit WHERE seq = 5" 2>"$dir/err"; then fail "audit delete allowed"; fi
grep -q "append-only" "$dir/err" || fail "trigger message"

"$crash" export "$db" "$dir/export.jsonl" "$dir/key.pem" "$dir/token"
"$audit" verify "$dir/export.jsonl" --pubkey "$dir/pub.pem" >"$dir/out" || fail "verify: $(cat "$dir/out")"
grep -q '^VERIFIED$' "$dir/out" || fail "verify output"
# Change the error text of the first failure: verify names exactly that record.
seq=$(sed -n '/"type":"attempt.end"}/{/"result":"failed"/{s/.*","seq":\([0-9]*\),.*/\1/p;q}}' \
	"$dir/export.jsonl")
[ -n "$seq" ] || fail "no failed attempt in the export"
sed "/\",\"seq\":$seq,/s/flash error at/flash fine at/" "$dir/export.jsonl" > "$dir/bad.jsonl"
set +e
"$audit" verify "$dir/bad.jsonl" --pubkey "$dir/pub.pem" >"$dir/out"
code=$?
set -e
[ $code = 1 ] || fail "tampered export: exit $code"
grep -q "^BAD record $seq:" "$dir/out" || fail "tampered export: $(cat "$dir/out")"

"$audit" report "$dir/export.jsonl" --json > "$dir/report.json"
[ "$(jq '.chips_programmed' "$dir/report.json")" = 17 ] || fail "report chips"
[ "$(jq '.licenses.spent' "$dir/report.json")" = 20 ] || fail "report spent"
[ "$(jq '.failures_by_cause | to_entries[0].value' "$dir/report.json")" = 3 ] || fail "report causes"
[ "$(jq '.per_slot["slot-1"].attempts' "$dir/report.json")" = 10 ] || fail "report slots"
"$audit" report "$dir/export.jsonl" > "$dir/report.txt"
grep -q "chips programmed   17" "$dir/report.txt" || fail "text report"
echo "sqlite3 shell, sfi-audit verify/report: ok"

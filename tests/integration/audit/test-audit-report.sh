#!/bin/bash
# sfi-audit report --html: one self-contained page, rendered by headless Chromium. Its DOM
# must show the verdict and the same totals as the JSON report, for a verified export and
# for a tampered one; the screenshot must be a real image.
#   test-audit-report.sh DB-CRASH SFI-AUDIT
set -euo pipefail
crash=$1
audit=$2
chromium=$(command -v chromium || true)
if [ -z "$chromium" ]; then
	echo "SKIP: chromium is not installed (scripts/deps installs it)"
	exit 77
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/sfid-audit-report-XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

openssl ecparam -name prime256v1 -genkey -noout -out "$dir/key.pem" 2>/dev/null
openssl pkey -in "$dir/key.pem" -pubout -out "$dir/pub.pem"
echo 5000 > "$dir/token"
timeout 60 "$crash" writer "$dir/audit.db" "$dir/key.pem" "$dir/token" 20
"$crash" export "$dir/audit.db" "$dir/export.jsonl" "$dir/key.pem" "$dir/token"

"$audit" report "$dir/export.jsonl" --json > "$dir/report.json"
"$audit" report "$dir/export.jsonl" --html --pubkey "$dir/pub.pem" \
	--expect-counter "CRASHTOKEN01=$(cat "$dir/token")" > "$dir/report.html" ||
	fail "report --html of a good export exits $?"
# Self-contained: no script, no link to anything outside the file.
if grep -Eqi '<script|<link|src=|href=|url\(' "$dir/report.html"; then
	fail "the page loads something: $(grep -Eoi '<script|<link|src=[^ ]*|href=[^ ]*|url\([^)]*' "$dir/report.html" | head -3)"
fi

render() { # FILE.html -> FILE.dom, FILE.png
	local html=$1
	timeout 90 "$chromium" --headless --no-sandbox --disable-gpu --no-first-run \
		--user-data-dir="$dir/chrome" --dump-dom "file://$html" > "${html%.html}.dom" 2>/dev/null ||
		fail "chromium --dump-dom failed on $html"
	timeout 90 "$chromium" --headless --no-sandbox --disable-gpu --no-first-run \
		--user-data-dir="$dir/chrome" --window-size=820,1400 \
		--screenshot="${html%.html}.png" "file://$html" >/dev/null 2>&1 ||
		fail "chromium --screenshot failed on $html"
}
# The text of the element with this id in a DOM dump.
by_id() {
	sed -n "s/.*id=\"$1\"[^>]*>\([^<]*\)<.*/\1/p" "$2" | head -n 1
}

render "$dir/report.html"
dom=$dir/report.dom
[ "$(by_id verdict-text "$dom")" = VERIFIED ] || fail "verdict: '$(by_id verdict-text "$dom")'"
[ "$(by_id station "$dom")" = crash-station ] || fail "station: '$(by_id station "$dom")'"
[ "$(by_id total-programmed "$dom")" = "$(jq .chips_programmed "$dir/report.json")" ] ||
	fail "chips programmed: $(by_id total-programmed "$dom")"
[ "$(by_id total-programmed "$dom")" = 17 ] || fail "17 chips programmed expected"
[ "$(by_id total-attempts "$dom")" = "$(jq .attempts.total "$dir/report.json")" ] ||
	fail "attempts: $(by_id total-attempts "$dom")"
[ "$(by_id total-failed "$dom")" = 3 ] || fail "failed: $(by_id total-failed "$dom")"
[ "$(by_id total-spent "$dom")" = "$(jq .licenses.spent "$dir/report.json")" ] ||
	fail "licenses spent: $(by_id total-spent "$dom")"
grep -q '<svg id="chart-rate"' "$dom" || fail "no chips-per-hour chart"
grep -q '<svg id="chart-yield"' "$dom" || fail "no yield chart"
for slot in slot-1 slot-2; do
	ok=$(jq ".per_slot[\"$slot\"].ok // 0" "$dir/report.json")
	all=$(jq ".per_slot[\"$slot\"].attempts" "$dir/report.json")
	want=$(awk -v o="$ok" -v a="$all" 'BEGIN { printf "%.1f%% (%d/%d)", 100 * o / a, o, a }')
	grep -q "data-slot=\"$slot\">$want" "$dom" ||
		fail "$slot yield: $(grep -o "data-slot=\"$slot\">[^<]*" "$dom"), expected $want"
done
grep -q '<svg id="chart-causes"' "$dom" || fail "no failures chart"
grep -q "<td class=\"end\">= $(cat "$dir/token")</td><td class=\"ok\">$(cat "$dir/token")</td>" "$dom" ||
	fail "counter arithmetic row: $(grep -o '<table id="counters".*</table>' "$dom")"
[ "$(head -c 8 "$dir/report.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
	fail "the screenshot is not a PNG"
[ "$(stat -c %s "$dir/report.png")" -gt 20000 ] || fail "the screenshot is nearly empty"

# A tampered export: the page says so, names the record, and the exit code is verify's.
seq=$(sed -n '/"type":"attempt.end"}/{/"result":"failed"/{s/.*","seq":\([0-9]*\),.*/\1/p;q}}' \
	"$dir/export.jsonl")
sed "/\",\"seq\":$seq,/s/flash error at/flash fine at/" "$dir/export.jsonl" > "$dir/bad.jsonl"
set +e
"$audit" report "$dir/bad.jsonl" --html --pubkey "$dir/pub.pem" > "$dir/bad.html"
code=$?
set -e
[ $code = 1 ] || fail "report --html of a tampered export exits $code"
render "$dir/bad.html"
[ "$(by_id verdict-text "$dir/bad.dom")" = TAMPERED ] ||
	fail "tampered verdict: '$(by_id verdict-text "$dir/bad.dom")'"
grep -q "id=\"verdict-detail\">record $seq: content does not match" "$dir/bad.dom" ||
	fail "the tampered record is not named: $(grep -o 'id="verdict-detail">[^<]*' "$dir/bad.dom")"
echo "report --html: verdict, totals, charts and counters in Chromium's DOM; tampered page names record $seq"

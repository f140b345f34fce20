#!/usr/bin/env bash
# The result hook: an executable given one JSON line per finished chip. 2 slots x 2 chips
# with a hook that records its input and then hangs: every result reaches it (schema,
# station, job, chip, result), the hung hooks are killed at their timeout with a warning,
# and the line does not wait for them. A hook that is not executable is a configuration
# error.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-hook.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 10 16
line_start_emu 2 2 --auto-swap 200
line_write_config 2
printf '#!/bin/sh\ncat >>"%s/hook.out"\nexec sleep 60\n' "$tmp" >"$tmp/hook.sh"
chmod 755 "$tmp/hook.sh"
cp "$tmp/sfid.conf" "$tmp/bad.conf"
printf '[hooks]\nresult = %s/nope.sh\n' "$tmp" >>"$tmp/bad.conf"
if "$SFID" --check --config "$tmp/bad.conf" 2>"$tmp/check.err"; then
	line_fail "a missing hook passed --check"
fi
grep -q "key 'result' in \[hooks\]" "$tmp/check.err" || line_fail "check: $(cat "$tmp/check.err")"
printf '[hooks]\nresult = %s\nresult_timeout_ms = 1000\n' "$tmp/hook.sh" >>"$tmp/sfid.conf"

line_start_sfid
ctl job load "$tmp/pki/demo.sfi" --count 4 >/dev/null
start=$(date +%s)
ctl start >/dev/null
wait_for 120 "4 chips installed" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 4
line_skip_without_xspecial
took=$(($(date +%s) - start))
hook_lines() { [ -f "$tmp/hook.out" ] && [ "$(wc -l <"$tmp/hook.out")" -ge 4 ]; }
wait_for 30 "4 lines given to the hook" hook_lines
python3 - "$tmp/hook.out" <<'PY' || line_fail "hook input: $(cat "$tmp/hook.out")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 4, lines
for d in lines:
    assert d["schema"] == 1 and d["station"] == "test-line" and d["job"] == 1, d
    assert d["result"] == "ok" and len(d["chip"]) == 24 and d["slot"] in ("S0", "S1"), d
    assert d["time_ms"] > 0 and d["bytes"] > 0, d
assert len({d["chip"] for d in lines}) == 4
PY
killed() { [ "$(grep -c 'result hook .* still runs after 1000 ms: killed' "$tmp/sfid.log")" -ge 4 ]; }
wait_for 30 "the hung hooks killed" killed
# Four chips whose hooks each hang 60 s were installed without waiting for them.
[ "$took" -lt 60 ] || line_fail "the line waited for its hooks ($took s)"
echo "result hook: 4 lines, hung hooks killed at 1 s, line not held ($took s)"

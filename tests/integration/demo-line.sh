#!/usr/bin/env bash
# Runs a whole demo line: a SoftHSM2 token and a chip CA made in a temp dir, a demo firmware
# packed with sfi-pack, the token provisioned with sfi-hsm, h5emu presenting 4 emulated
# STM32H5 slots as USB-serial adapters (2 chips queued per slot, swapped automatically),
# sfid driving them, and sfictl loading the job, starting it and watching it. Then history,
# stats, an audit export and its offline verification. Everything is removed at the end.
#
# Usage: tests/integration/demo-line.sh BUILDDIR   (scripts/demo builds first)
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
SLOTS=${DEMO_SLOTS:-4}
CHIPS=${DEMO_CHIPS_PER_SLOT:-2}
# The emulated wire runs at a real UART rate so that progress can be watched; 0: unpaced.
BAUD=${DEMO_BAUD:-115200}
TOTAL=$((SLOTS * CHIPS))
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-demo.XXXXXX")
# shellcheck source=line/common.sh
. "$(dirname "$0")/line/common.sh"
trap line_cleanup EXIT INT TERM

for tool in "$SFID" "$SFICTL" "$SFIPACK" "$SFIHSM" "$SFIAUDIT" "$H5EMU"; do
	[ -x "$tool" ] || line_fail "$tool is not built; run scripts/build first"
done

step() { printf '\n== %s\n' "$*"; }

step "HSM token, chip CA and demo image"
line_setup_pki 100 64
echo "token '$TOKEN_LABEL' provisioned with 100 licenses for $("$SFIPACK" info "$tmp/pki/demo.sfi" | head -n 3 | tr '\n' ' ')"
before=$(line_counter)

step "h5emu: $SLOTS slots x $CHIPS chips on emulated USB-serial adapters"
pace=()
[ "$BAUD" -gt 0 ] && pace=(--baud "$BAUD")
line_start_emu "$SLOTS" "$CHIPS" --auto-swap 300 "${pace[@]}"
line_write_config "$SLOTS"
sed -n '/^\[slot S0\]/,/^\[slot S1\]/p' "$tmp/sfid.conf" | head -n 4

step "sfid"
line_start_sfid
ctl ports

step "sfictl job load (supervisor)"
ctl job load "$tmp/pki/demo.sfi" --count "$TOTAL"

step "sfictl start; sfictl watch until $TOTAL chips are done"
ctl start >/dev/null
set +e
ctl watch --count "$TOTAL" --timeout 180
watch_rc=$?
set -e

step "sfictl history"
ctl history --limit "$TOTAL"
step "sfictl stats"
ctl stats
step "sfictl hsm"
ctl hsm

step "audit export and offline verification"
ctl export --format jsonl --out "$tmp/audit.jsonl"
ctl export --format csv --out "$tmp/audit.csv"
"$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$tmp/pki/pin" --out "$tmp/audit.pem" >/dev/null
set +e
"$SFIAUDIT" verify "$tmp/audit.jsonl" --pubkey "$tmp/audit.pem"
verify_rc=$?
set -e

after=$(line_counter)
ok=$(sql "SELECT count(*) FROM attempts WHERE result = 'ok'" 2>/dev/null || echo "?")
step "summary"
echo "chips installed (database): $ok of $TOTAL; licenses spent: $((before - after)) (counter $before -> $after)"
echo "sfictl watch exit code $watch_rc; sfi-audit verify exit code $verify_rc"
if [ "$watch_rc" -ne 0 ] || [ "$verify_rc" -ne 0 ]; then
	echo "the demo line did not complete; sfid log (tail):"
	tail -n 20 "$tmp/sfid.log"
	exit 1
fi
echo "demo line complete"

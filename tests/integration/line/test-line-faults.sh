#!/usr/bin/env bash
# Link faults injected by h5emu: a dropped answer and a garbled answer during the image
# stream are retried after a resync and the chips succeed; a chip that NACKs PUT_HEADER
# every time fails at installing with a clear message, its license issued-not-installed,
# while the other slots carry on; after retries_per_chip failures it is refused without
# touching the HSM. A product id garbled in the Get ID answer (which has no checksum) is
# read again and the chip succeeds.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-faults.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 10 16
before=$(line_counter)
line_start_emu 4 1 \
	--fault chip=0,cmd=0x51,subop=0x5304,nth=5,action=drop \
	--fault chip=1,cmd=0x51,subop=0x5304,nth=3,action=garbage \
	--fault chip=2,cmd=0x50,subop=0x5303,action=nack,repeat \
	--fault chip=3,cmd=0x02,byte=3,action=corrupt
line_write_config 4
printf '[limits]\nretries_per_chip = 2\n' >>"$tmp/sfid.conf"
line_start_sfid --debug
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
wait_for 60 "four results" sql_is "SELECT count(*) FROM attempts WHERE result <> 'running'" 4
line_skip_without_xspecial

[ "$(sql "SELECT count(*) FROM attempts WHERE result = 'ok' AND slot IN ('S0', 'S1', 'S3')")" -eq 3 ] ||
	line_fail "the chips with a dropped, garbled or corrupted answer did not succeed"
grep -q "slot S3 .*asking again" "$tmp/sfid.log" || line_fail "the garbled product id was not read again"
[ "$(grep -c "resync and retry 1 of" "$tmp/sfid.log")" -ge 2 ] || line_fail "no retries logged"
err=$(sql "SELECT step || ': ' || error_text FROM attempts WHERE slot = 'S2'")
case "$err" in
installing:*PUT_HEADER*NACK*) ;;
*) line_fail "slot S2 recorded '$err'" ;;
esac
[ "$(sql "SELECT state FROM licenses WHERE chip_uid =
	 (SELECT chip_uid FROM attempts WHERE slot = 'S2')")" = issued_not_installed ] ||
	line_fail "the failed chip's license is not issued-not-installed"

# The same chip again (adapter replugged): it reuses its license and fails again; the
# third time it is refused before the HSM.
for round in 2 3; do
	emu_ctl unplug 2 >/dev/null
	wait_for 10 "slot S2 to lose its port" slot_in S2 no-port
	emu_ctl plug 2 >/dev/null
	wait_for 30 "attempt $round on slot S2" \
		sql_is "SELECT count(*) FROM attempts WHERE slot = 'S2' AND result = 'failed'" "$round"
done
sql "SELECT error_text FROM attempts WHERE slot = 'S2' ORDER BY id DESC LIMIT 1" |
	grep -q "already failed 2 times" || line_fail "the third attempt was not refused"
after=$(line_counter)
[ $((before - after)) -eq 4 ] || line_fail "counter went $before -> $after, expected 4 spent"
echo "faults: 3 chips recovered by retries or a second Get ID, 1 failed at PUT_HEADER then" \
	"refused; 4 licenses"

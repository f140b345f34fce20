#!/usr/bin/env bash
# The vendor backend (backend = cubeprogrammer) against the STM32_Programmer_CLI stand-in
# (tests/standin: NOT ST's tool) on h5emu chips, with the reader's HSM a SoftHSM2 token of
# its own (sfid's line token is not touched).
#
# 1. 4 slots in parallel: 4 chips installed; the stand-in's call log shows that no two HSM
#    calls on the reader overlapped; the ledger holds 4 installed licenses with counters that
#    follow each other, and its last counter is the reader token's.
# 2. Then on one slot, each step's failure, the same chip coming back after each (its
#    adapter unplugged and plugged again): no certificate (nothing spent), a license call
#    that hangs (its reservation void), an install error (the license spent, then reused),
#    an install that hangs (its timeout; reused again), an install failing with output no
#    documented line matches (quoted, kept verbatim), the tool missing (a halt), then the
#    chip installed with its license reused; the next chip finds the reader's counter at
#    zero (nothing reserved, the line halted); a stop kills a run at once; a job with a
#    global license installs that chip without any HSM call or ledger row. Every failure is one clear sentence and each
#    run of the tool is kept with its attempt, log included. Every job here is a vendor job
#    (sfictl job load --vendor: the image passed to the tool unread, known by its digest);
#    each chip is known by the UID sfid reads through the bootloader (the emulator's), and
#    the trail and sfi-audit report mark the jobs and chips vendor.
# 3. A certificate naming another chip than the UID read, a chip whose UID cannot be read
#    (refused, the tool not run, no UID made up); a vendor job's module file passed to the
#    tool as sfid's copy (-mcsv) with its global license; a job no slot of the line can run
#    refused at load; on a line of both kinds, an OSFI or plain job on a vendor slot and a
#    vendor job on an OSFI slot refused with a sentence, the chip untouched and the tool not
#    run; an opaque file loads as a vendor job (digest and size), not as an OSFI job, and a
#    vendor job is restored after a restart.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
SRC=${SFID_SOURCE_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-vendor.XXXXXX")
. "$SRC/tests/integration/line/common.sh"
trap line_cleanup EXIT INT TERM

READER_LABEL=stm32hsm-reader
line_setup_pki 10 8
softhsm2-util --init-token --free --label "$READER_LABEL" --so-pin 12345678 --pin 87654321 \
	>/dev/null || line_fail "cannot create the reader's SoftHSM2 token"
"$SFIHSM" provision --module "$SOFTHSM_MODULE" --token "$READER_LABEL" \
	--pin-file "$tmp/pki/pin" --image-key "$tmp/pki/image.key" --image "$tmp/pki/demo.sfi" \
	--max-count 5 --ca-pub "$tmp/pki/ca-pub.pem" --global-key "$tmp/pki/global.key" \
	>/dev/null || line_fail "sfi-hsm provision of the reader token failed"
reader_counter() {
	"$SFIHSM" info --json --module "$SOFTHSM_MODULE" --token "$READER_LABEL" \
		--pin-file "$tmp/pki/pin" | python3 -c 'import json,sys; print(json.load(sys.stdin)["licenses_left"])'
}
line_before=$(line_counter)

mkdir -p "$tmp/bin"
ln -s "$SRC/tests/standin/STM32_Programmer_CLI" "$tmp/bin/STM32_Programmer_CLI"
head -c 64 /dev/urandom >"$tmp/rsse.bin"
standin_conf() {
	cat >"$tmp/standin.conf.new" <<CONF
[tools]
sfi-boot = $BUILD/tools/sfi-boot/sfi-boot
sfi-hsm = $SFIHSM
[hsm]
module = $SOFTHSM_MODULE
pin-file = $tmp/pki/pin
image = $tmp/pki/demo.sfi
slot.1 = $READER_LABEL
[faults]
fail = ${1:-}
delay-ms = ${2:-0}
[log]
calls = $tmp/calls.log
process = $tmp/process.log
CONF
	mv "$tmp/standin.conf.new" "$tmp/standin.conf"
}
export SFID_STANDIN_CONF=$tmp/standin.conf

vendor_config() {
	local slots=$1
	line_write_config "$slots" 'backend = cubeprogrammer\n'
	cat >>"$tmp/sfid.conf" <<CONF
[vendor]
tool = $tmp/bin/STM32_Programmer_CLI
rsse = $tmp/rsse.bin
reader = 1
install_timeout_ms = 60000
license_timeout_ms = ${2:-60000}
CONF
	printf '[limits]\nretries_per_chip = 20\n' >>"$tmp/sfid.conf"
}

# ---- 1. four slots in parallel ----
standin_conf "" 200
# Slot 3's second chip (chip 10) refuses Read Memory: its UID cannot be read (section 3).
line_start_emu 4 3 --auto-swap 300 --fault chip=10,cmd=0x11,action=nack,repeat
vendor_config 4
# As under systemd with LoadCredential=: the tool must not learn where sfid's credentials are.
mkdir -m 700 "$tmp/credentials"
CREDENTIALS_DIRECTORY=$tmp/credentials line_start_sfid
[ "$(ctl --json status | jq -r '[.slots[].backend] | join(",")')" = "cubeprogrammer,cubeprogrammer,cubeprogrammer,cubeprogrammer" ] ||
	line_fail "status does not name the slots' backend: $(ctl --json status)"
ctl job load --vendor "$tmp/pki/demo.sfi" --count 4 >/dev/null
ctl job show >"$tmp/show.out"
grep -q "kind *vendor (ST SFI through STM32CubeProgrammer)" "$tmp/show.out" &&
	grep -q "digest *$(sha256sum "$tmp/pki/demo.sfi" | cut -c1-64)" "$tmp/show.out" ||
	line_fail "job show: $(cat "$tmp/show.out")"
timeout 200 "$SFICTL" --socket "$tmp/sfid.sock" watch --count 4 --timeout 180 >"$tmp/watch.out" 2>&1 &
watch_pid=$!
ctl start >/dev/null
wait_for 150 "4 chips installed" sql_is "SELECT count(*) FROM attempts WHERE result = 'ok'" 4
wait "$watch_pid" || line_fail "watch: $(tail -n 5 "$tmp/watch.out")"
[ "$(grep -c ': ok .* vendor$' "$tmp/watch.out")" -eq 4 ] ||
	line_fail "watch did not show 4 vendor results: $(tail -n 5 "$tmp/watch.out")"
n=$(sql "SELECT count(*) FROM attempts WHERE result = 'failed'")
[ "$n" -eq 0 ] || line_fail "$n failed attempts in the parallel run: $(sql "SELECT error_text FROM attempts WHERE result = 'failed'")"

# No two calls on reader slot 1 overlap: ordered by time, each start is followed by its own
# end.
python3 - "$tmp/calls.log" <<'PY' || line_fail "HSM calls overlapped on the reader: $(cat "$tmp/calls.log")"
import sys
ev = []
for line in open(sys.argv[1]):
    what, action, slot, pid, t = line.split()
    ev.append((float(t), what, action, slot, pid))
ev.sort(key=lambda e: (e[0], e[1] == "start"))
open_call = None
n = 0
for t, what, action, slot, pid in ev:
    if what == "start":
        if open_call is not None:
            print("%s %s started while %s was running" % (action, pid, open_call), file=sys.stderr)
            sys.exit(1)
        open_call = pid
        n += 1
    else:
        if open_call != pid:
            print("end of %s while %s was running" % (pid, open_call), file=sys.stderr)
            sys.exit(1)
        open_call = None
if n < 12:
    print("only %d calls logged, expected 12 (3 per chip)" % n, file=sys.stderr)
    sys.exit(1)
PY
calls=$(grep -c '^start' "$tmp/calls.log")
# Every run got none of sfid's descriptors (the other slots' ports, the database, the control
# socket) and no credentials folder.
[ "$(wc -l <"$tmp/process.log")" -ge 20 ] || line_fail "the stand-in logged $(wc -l <"$tmp/process.log") runs"
if grep -vx "fds=- credentials=no" "$tmp/process.log" >&2; then
	line_fail "the tool inherited a descriptor or the credentials folder of sfid"
fi

TOKEN=stm32hsm:reader-1
[ "$(reader_counter)" -eq 1 ] || line_fail "reader counter $(reader_counter) after 4 licenses, expected 1"
[ "$(line_counter)" -eq "$line_before" ] || line_fail "sfid's line token was spent: $line_before -> $(line_counter)"
[ "$(sql "SELECT count(*) FROM licenses WHERE token_serial = '$TOKEN' AND state = 'installed'")" -eq 4 ] ||
	line_fail "ledger: $(sql "SELECT id, chip_uid, state FROM licenses")"
# The counters follow each other: 5 -> 4 -> 3 -> 2 -> 1, one license per count.
[ "$(sql "SELECT group_concat(counter_before || '>' || counter_after, ' ') FROM (SELECT * FROM licenses ORDER BY id)")" = "5>4 4>3 3>2 2>1" ] ||
	line_fail "ledger counters: $(sql "SELECT group_concat(counter_before || '>' || counter_after, ' ') FROM licenses")"
[ "$(sql "SELECT count(DISTINCT chip_uid) FROM licenses")" -eq 4 ] || line_fail "licenses not one per chip"
# Every attempt keeps its runs: certificate, counter, license, counter, install.
for a in $(sql "SELECT id FROM attempts WHERE result = 'ok'"); do
	steps=$(sql "SELECT group_concat(step, ',') FROM (SELECT step FROM tool_runs WHERE attempt_id = $a ORDER BY id)")
	[ "$steps" = "certificate,counter,license,counter,install" ] || line_fail "attempt $a runs: $steps"
	sql "SELECT log FROM tool_runs WHERE attempt_id = $a AND step = 'install'" |
		grep -qx "SFI File Install Operation Success" || line_fail "attempt $a: install log not kept"
done
[ "$(sql "SELECT count(*) FROM tool_runs WHERE exit_status <> 0")" -eq 0 ] || line_fail "a run failed"
echo "parallel: 4 chips on 4 slots, $calls HSM calls without overlap, reader counter 5 -> 1"

# ---- 2. each step's failure, on one slot ----
line_stop_pid "$sfid_pid"
sfid_pid=
# Short timeouts for the runs that hang; a sanitized build runs everything slower.
slow=1
[ -n "${SFID_SANITIZED:-}" ] && slow=3
vendor_config 1 $((5000 * slow))
sed -i "s/^install_timeout_ms = 60000/install_timeout_ms = $((10000 * slow))/" "$tmp/sfid.conf"
line_start_sfid

# last_attempt_is N: N attempts ended.
ended() { sql_is "SELECT count(*) FROM attempts WHERE result <> 'running'" "$1"; }
last_error() { sql "SELECT error_text FROM attempts WHERE result = 'failed' ORDER BY id DESC LIMIT 1"; }
last_id() { sql "SELECT max(id) FROM attempts WHERE result <> 'running'"; }
n_ended=$(sql "SELECT count(*) FROM attempts WHERE result <> 'running'")
# replug: the same chip comes back as a new attempt.
replug() {
	emu_ctl unplug 0 >/dev/null
	wait_for 30 "slot S0 without its port" slot_in S0 no-port
	emu_ctl plug 0 >/dev/null
}
expect_failure() {
	local what=$1 pattern=$2
	n_ended=$((n_ended + 1))
	wait_for 90 "$what" ended "$n_ended"
	last_error | grep -qE "$pattern" || line_fail "$what: the attempt says: $(last_error)"
	echo "$what: $(last_error)"
}

licenses_before=$(sql "SELECT count(*) FROM licenses")
standin_conf gc
ctl job load --vendor "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
expect_failure "no certificate" "^certificate: the chip gave no certificate \(STM32_Programmer_CLI certificate, exit status 1\)$"
chip=$(sql "SELECT chip_uid FROM attempts WHERE id = $(last_id)")
# The chip is known by the UID sfid read through the bootloader before the tool ran: the
# emulator's own UID for the chip, even though the tool gave no certificate.
emu_uid=$(emu_ctl status | sed -n 's/^slot 0: .* uid \([0-9a-fA-F]*\) .*/\1/p' | tr 'A-F' 'a-f')
[ -n "$chip" ] && [ "$chip" = "$emu_uid" ] || line_fail "the attempt names chip '$chip', the emulator's chip in slot 0 is '$emu_uid'"
[ "$(sql "SELECT count(*) FROM licenses")" -eq "$licenses_before" ] || line_fail "a license row for a chip without certificate"
sql "SELECT log FROM tool_runs WHERE attempt_id = $(last_id)" | grep -q "Failed to read chip certificate" ||
	line_fail "the certificate run's log is not kept"

standin_conf hang-license
replug
expect_failure "license timeout" "^license: STM32_Programmer_CLI license did not finish within its timeout; it was stopped$"
chip=$(sql "SELECT chip_uid FROM attempts WHERE id = $(last_id)")
[ "$(sql "SELECT state FROM licenses WHERE chip_uid = '$chip'")" = "void" ] ||
	line_fail "after a license call that hung: $(sql "SELECT id, state, counter_before FROM licenses WHERE chip_uid = '$chip'")"
[ "$(sql "SELECT exit_status FROM tool_runs WHERE attempt_id = $(last_id) AND step = 'license'")" = "-1" ] ||
	line_fail "the hung license run is not kept with exit status -1"
[ "$(reader_counter)" -eq 1 ] || line_fail "a hung license call spent a count"

standin_conf install
replug
expect_failure "install error" "^installing: the chip refused the install \(invalid state after SFI install\)"
[ "$(sql "SELECT state FROM licenses WHERE chip_uid = '$chip' AND state <> 'void'")" = "issued_not_installed" ] ||
	line_fail "after an install error: $(sql "SELECT id, state FROM licenses WHERE chip_uid = '$chip'")"
[ "$(reader_counter)" -eq 0 ] || line_fail "reader counter $(reader_counter), expected 0 after the 5th license"

standin_conf hang-install
replug
expect_failure "install timeout" "^installing: STM32_Programmer_CLI install did not finish within its timeout; it was stopped$"
[ "$(sql "SELECT count(*) FROM license_uses u JOIN licenses l ON l.id = u.license_id WHERE l.chip_uid = '$chip' AND u.reused = 1")" -eq 1 ] ||
	line_fail "the license spent before the install error was not reused"

standin_conf unknown-install
replug
expect_failure "unknown output" '^installing: STM32_Programmer_CLI install failed with exit status 3: "Error: stand-in: an answer nobody documented \(0x5A\)"$'
sql "SELECT log FROM tool_runs WHERE attempt_id = $(last_id) AND step = 'install'" |
	grep -qx "(stand-in: an unknown failure in install as configured)" || line_fail "the unknown output is not kept verbatim"

standin_conf
rm "$tmp/bin/STM32_Programmer_CLI"
replug
expect_failure "tool missing" "^certificate: the tool $tmp/bin/STM32_Programmer_CLI cannot be run: No such file or directory$"
wait_for 10 "the line halted for the missing tool" halted "cannot be run"
ln -s "$SRC/tests/standin/STM32_Programmer_CLI" "$tmp/bin/STM32_Programmer_CLI"
ctl start >/dev/null
replug
n_ended=$((n_ended + 1))
wait_for 90 "the chip installed at last" ended "$n_ended"
[ "$(sql "SELECT result FROM attempts WHERE id = $(last_id)")" = "ok" ] ||
	line_fail "the chip's last attempt: $(last_error)"
[ "$(sql "SELECT state FROM licenses WHERE chip_uid = '$chip' AND state <> 'void'")" = "installed" ] ||
	line_fail "the reused license is not installed: $(sql "SELECT id, state FROM licenses WHERE chip_uid = '$chip'")"
[ "$(sql "SELECT count(*) FROM license_uses u JOIN licenses l ON l.id = u.license_id WHERE l.chip_uid = '$chip' AND u.reused = 1")" -eq 3 ] ||
	line_fail "the license was not reused three times"
echo "the chip came back and installed with the license spent before its install error"

# The next chip (auto-swapped in): the reader's counter is zero.
expect_failure "counter zero" "^license: the STM32HSM in reader slot 1 has no license left \(its counter is zero\); no license was spent$"
wait_for 10 "the line halted for the empty reader" halted "no license left"
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'reserved'")" -eq 0 ] || line_fail "a reservation stayed open"
[ "$(sql "SELECT count(*) FROM licenses WHERE state NOT IN ('installed', 'void')")" -eq 0 ] ||
	line_fail "ledger: $(sql "SELECT id, chip_uid, state FROM licenses")"

# A stop while the tool runs kills it (and what it started) at once.
standin_conf hang-gc
ctl start >/dev/null
replug
# standin_running: a stand-in started by sfid for a chip is running (from /proc).
standin_running() {
	local f
	for f in /proc/[0-9]*/cmdline; do
		tr '\0' ' ' <"$f" 2>/dev/null | grep -qF "$tmp/bin/STM32_Programmer_CLI -c" && return 0
	done
	return 1
}
standin_gone() { ! standin_running; }
wait_for 60 "the stand-in running" standin_running
ctl stop >/dev/null
expect_failure "stopped" "^certificate: stopped by the operator$"
wait_for 10 "the stand-in killed" standin_gone
wait_for 10 "the killed run recorded" sql_is "SELECT exit_status FROM tool_runs WHERE attempt_id = $(last_id)" -1

# A job with a global license: the stopped chip installs with the job's license file, no HSM
# call and no ledger row.
"$SFIPACK" license --global --global-key "$tmp/pki/global.key" --key "$tmp/pki/image.key" \
	--image "$tmp/pki/demo.sfi" --out "$tmp/pki/global.lic" >/dev/null
calls_before=$(wc -l <"$tmp/calls.log")
licenses_before=$(sql "SELECT count(*) FROM licenses")
standin_conf
ctl job load --vendor "$tmp/pki/demo.sfi" --global-license "$tmp/pki/global.lic" >/dev/null
ctl start >/dev/null
replug
n_ended=$((n_ended + 1))
wait_for 90 "the chip installed with the global license" ended "$n_ended"
[ "$(sql "SELECT result FROM attempts WHERE id = $(last_id)")" = "ok" ] ||
	line_fail "the global job's chip: $(last_error)"
[ "$(wc -l <"$tmp/calls.log")" -eq "$calls_before" ] || line_fail "a global job called the HSM"
[ "$(sql "SELECT count(*) FROM licenses")" -eq "$licenses_before" ] || line_fail "a global install entered the ledger"
sql "SELECT command FROM tool_runs WHERE attempt_id = $(last_id) AND step = 'install'" |
	grep -q -- "hsm=0 .*/job-[0-9]*\.lic -rsse" || line_fail "the install did not name the job's global license"
echo "global license: installed without an HSM call or a ledger row"

# The ledger and the reader agree: 5 counts spent, 5 licenses installed, its last counter 0.
[ "$(sql "SELECT count(*) FROM licenses WHERE state = 'installed'")" -eq 5 ] || line_fail "ledger: $(sql "SELECT id, state FROM licenses")"
[ "$(sql "SELECT min(counter_after) FROM licenses WHERE state = 'installed'")" -eq "$(reader_counter)" ] ||
	line_fail "the ledger's last counter is not the reader's $(reader_counter)"
[ "$(line_counter)" -eq "$line_before" ] || line_fail "sfid's line token was spent"
runs=$(sql "SELECT count(*) FROM tool_runs")

# The trail, tool runs and the reader's licenses included, verifies offline.
ctl export --format jsonl --out "$tmp/audit.jsonl" 2>/dev/null
"$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
	--pin-file "$tmp/pki/pin" --out "$tmp/audit.pem" >/dev/null
"$SFIAUDIT" verify "$tmp/audit.jsonl" --pubkey "$tmp/audit.pem" >"$tmp/verify.out" 2>&1 ||
	line_fail "sfi-audit verify: $(grep -q "token stm32hsm:reader-1: counter 0 at the end of the trail (5 at its start): 5 spend(s) proved, 0 spent outside sfid" "$tmp/verify.out" ||
	line_fail "sfi-audit does not account the reader's 5 spends: $(cat "$tmp/verify.out")"
cat "$tmp/verify.out")"
[ "$(grep -c '"type":"tool.run"' "$tmp/audit.jsonl")" -eq "$runs" ] ||
	line_fail "the export holds $(grep -c '"type":"tool.run"' "$tmp/audit.jsonl") tool.run records, $runs runs kept"
grep -q "token stm32hsm:reader-1: counter 0 at the end of the trail (5 at its start): 5 spend(s) proved, 0 spent outside sfid" "$tmp/verify.out" ||
	line_fail "sfi-audit does not account the reader's 5 spends: $(cat "$tmp/verify.out")"
cat "$tmp/verify.out"
# The trail marks the jobs and the attempts as vendor jobs; the report says so.
grep '"type":"job.create"' "$tmp/audit.jsonl" | grep -q '"kind":"vendor"' || line_fail "job.create does not mark the vendor job"
grep '"type":"attempt.end"' "$tmp/audit.jsonl" | grep '"result":"ok"' | grep -q '"kind":"vendor"' ||
	line_fail "attempt.end does not mark the vendor job's chips"
"$SFIAUDIT" report "$tmp/audit.jsonl" >"$tmp/report.out" || line_fail "sfi-audit report: $(cat "$tmp/report.out")"
grep -q "vendor-st-sfi" "$tmp/report.out" && grep -Eq "vendor_ok +6" "$tmp/report.out" ||
	line_fail "the report does not count the vendor jobs' chips: $(cat "$tmp/report.out")"
echo "vendor backend: 6 chips installed, 8 failures named, ledger and reader at 0, $runs tool runs kept"

# ---- 3. identities, and jobs and slots that do not fit ----
# The four slots with the chips left in them.
line_stop_pid "$sfid_pid"
sfid_pid=
vendor_config 4
line_start_sfid
# refused_since MARK SLOT PATTERN: an attempt after MARK on SLOT failed with PATTERN.
refused_since() {
	sql "SELECT error_text FROM attempts WHERE id > $1 AND slot = '$2' AND result = 'failed'" | grep -qE "$3"
}
mark() { sql "SELECT coalesce(max(id), 0) FROM attempts"; }
expect_refusal() {
	local what=$1 pattern=$2 m=$3
	wait_for 90 "$what" refused_since "$m" S1 "$pattern"
	echo "$what: $(sql "SELECT error_text FROM attempts WHERE id > $m AND slot = 'S1' ORDER BY id DESC LIMIT 1")"
}
refused_on() { # SLOT PATTERN MARK
	wait_for 90 "$1: $2" refused_since "$3" "$1" "$2"
}
# A certificate naming another chip than the UID read through the bootloader (S1), and a chip
# whose UID cannot be read (S3, its Read Memory refused): each fails with a sentence; the
# second never reaches the tool and is recorded without a UID.
m=$(mark)
standin_conf gc-other
ctl job load --vendor "$tmp/pki/demo.sfi" >/dev/null
ctl start >/dev/null
s1_uid=$(emu_ctl status | sed -n 's/^slot 1: .* uid \([0-9a-fA-F]*\) .*/\1/p' | tr 'A-F' 'a-f')
expect_refusal "certificate of another chip" "^certificate: the certificate names chip [0-9a-f]{24}, the bootloader read UID $s1_uid: another chip answered the tool$" "$m"
refused_on S3 "^identifying: reading the chip's UID failed: Read Memory: .+; the tool was not run$" "$m"
echo "no UID: $(sql "SELECT error_text FROM attempts WHERE id > $m AND slot = 'S3' ORDER BY id DESC LIMIT 1")"
a=$(sql "SELECT max(id) FROM attempts WHERE slot = 'S3'")
[ "$(sql "SELECT count(*) FROM tool_runs WHERE attempt_id = $a")" -eq 0 ] || line_fail "the tool ran for a chip without UID"
[ -z "$(sql "SELECT coalesce(chip_uid, '') FROM attempts WHERE id = $a")" ] || line_fail "a chip without UID was recorded with one: $(sql "SELECT chip_uid FROM attempts WHERE id = $a")"
ctl stop >/dev/null
# A vendor job's module file goes to the tool as the job's copy (-mcsv), with its global
# license; the stand-in then fails the install, before the chip is written.
printf '# module id, license\n1, module-1.lic\n' >"$tmp/st.mcsv"
standin_conf install
m=$(mark)
ctl --json job load --vendor "$tmp/pki/demo.sfi" --modules "$tmp/st.mcsv" \
	--global-license "$tmp/pki/global.lic" >"$tmp/job.json"
[ "$(jq -r '.modules' "$tmp/job.json")" = "$tmp/st.mcsv" ] || line_fail "job load --vendor --modules: $(cat "$tmp/job.json")"
ctl start >/dev/null
refused_on S1 "^installing: the chip refused the install \(invalid state after SFI install\)" "$m"
a=$(sql "SELECT max(id) FROM attempts WHERE slot = 'S1'")
job=$(jq -r .id "$tmp/job.json")
sql "SELECT command FROM tool_runs WHERE attempt_id = $a AND step = 'install'" |
	grep -q -- "-sfi $tmp/job-$job\.sfi hsm=0 $tmp/job-$job\.lic -rsse $tmp/rsse.bin -mcsv $tmp/job-$job\.mcsv$" ||
	line_fail "the install's command line: $(sql "SELECT command FROM tool_runs WHERE attempt_id = $a AND step = 'install'")"
cmp -s "$tmp/st.mcsv" "$tmp/job-$job.mcsv" || line_fail "sfid's copy of the module file differs"
echo "module file: passed to the tool as $tmp/job-$job.mcsv"
ctl stop >/dev/null
standin_conf
# A line of vendor slots only refuses an OSFI or a plain job at load.
head -c 4096 /dev/urandom >"$tmp/fw.bin"
load_refused() { # PATTERN ARGS...: job load refused with PATTERN
	local pattern=$1
	shift
	if ctl job load "$@" >"$tmp/load.out" 2>&1; then line_fail "job load $* was accepted"; fi
	grep -qE "$pattern" "$tmp/load.out" || line_fail "job load $*: $(cat "$tmp/load.out")"
}
load_refused "every slot of this line runs the vendor backend \(STM32CubeProgrammer\), which installs only vendor jobs \(sfictl job load --vendor IMAGE.sfi\); the job was not loaded" "$tmp/pki/demo.sfi"
load_refused "every slot of this line runs the vendor backend" --plain "$tmp/fw.bin@0x08000000"
echo "load refused: $(cat "$tmp/load.out")"
# An opaque image loads as a vendor job (known by its digest and size) and only as one.
head -c 5000 /dev/urandom >"$tmp/opaque.sfi"
ctl --json job load --vendor "$tmp/opaque.sfi" >"$tmp/job.json"
[ "$(jq -r '.kind + " " + .digest + " " + (.bytes|tostring)' "$tmp/job.json")" = "vendor $(sha256sum "$tmp/opaque.sfi" | cut -c1-64) 5000" ] ||
	line_fail "the opaque vendor job: $(cat "$tmp/job.json")"
load_refused "is not a valid OSFI image" "$tmp/opaque.sfi"
[ "$(sql "SELECT kind FROM jobs ORDER BY id DESC LIMIT 1")" = vendor ] || line_fail "the jobs table: $(sql "SELECT id, kind FROM jobs")"

# A line of both kinds: S1 ($1) and the other slots the other kind; only S1 is started.
s1_backend() {
	vendor_config 4
	python3 - "$tmp/sfid.conf" "$1" <<'PY'
import re, sys
path, want = sys.argv[1], sys.argv[2]
out, slot = [], None
for line in open(path):
    m = re.match(r"\[slot (\S+)\]", line)
    slot = m.group(1) if m else (None if line.startswith("[") else slot)
    if slot and line.strip() == "backend = cubeprogrammer" and (slot == "S1") != (want == "vendor"):
        continue
    out.append(line)
open(path, "w").write("".join(out))
PY
	line_stop_pid "$sfid_pid"
	sfid_pid=
	line_start_sfid
}
# S1 a vendor slot: an OSFI job and a plain job are refused on it, the tool not run (the
# vendor job is restored after the restart).
s1_backend vendor
[ "$(ctl --json job show | jq -r '.kind + " " + .digest')" = "vendor $(sha256sum "$tmp/opaque.sfi" | cut -c1-64)" ] ||
	line_fail "the vendor job was not restored: $(ctl --json job show)"
m=$(mark)
m_osfi=$m
ctl job load "$tmp/pki/demo.sfi" >/dev/null
ctl start S1 >/dev/null
expect_refusal "OSFI job on a vendor slot" "^identifying: this slot runs the vendor backend \(STM32CubeProgrammer\), which installs only vendor jobs \(sfictl job load --vendor IMAGE.sfi\), not OSFI images; the chip was not touched$" "$m"
ctl stop >/dev/null
m=$(mark)
ctl job load --plain "$tmp/fw.bin@0x08000000" >/dev/null
ctl start S1 >/dev/null
expect_refusal "plain job on a vendor slot" "^identifying: this slot runs the vendor backend \(STM32CubeProgrammer\), which does not run plain jobs; the chip was not touched$" "$m"
[ "$(sql "SELECT count(*) FROM tool_runs WHERE attempt_id > $m_osfi")" -eq 0 ] || line_fail "the tool ran for an OSFI or plain job"
[ "$(sql "SELECT count(*) FROM attempts WHERE id > $m_osfi AND slot <> 'S1'")" -eq 0 ] || line_fail "a slot not started took a chip"
# S1 an OSFI slot: a vendor job is refused on it.
s1_backend osfi
m=$(mark)
ctl job load --vendor "$tmp/pki/demo.sfi" >/dev/null
ctl start S1 >/dev/null
expect_refusal "vendor job on an OSFI slot" "^identifying: the job is a vendor job \(an image for ST's SFI, installed by STM32CubeProgrammer\) and this slot runs OSFI; only a slot with backend = cubeprogrammer runs it; the chip was not touched$" "$m"
# A line of OSFI slots only refuses a vendor job at load.
line_stop_pid "$sfid_pid"
sfid_pid=
line_write_config 2
line_start_sfid
load_refused "no slot of this line runs the vendor backend \(backend = cubeprogrammer\), which alone installs a vendor job; the job was not loaded" --vendor "$tmp/pki/demo.sfi"
echo "load refused: $(cat "$tmp/load.out")"
echo "mismatches: refused at load when no slot fits, per chip on a line of both kinds, the chip untouched"

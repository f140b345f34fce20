#!/usr/bin/env bash
# Serial numbers from a list file (MAC addresses, one a line) on 8 slots x 2 chips (h5emu,
# umockdev adapters). Malformed lists are refused at job load with the line's number (a
# blank line, bad hex, a value of another byte count, the same value twice, an over-long
# ascii value, a character outside printable ASCII, an empty file). Then a list of 10 lines
# meets 16 chips: 10 chips are stamped with the 10 values in the list's order (index i is
# line i + 1), each recorded written with its UID, no value twice, each chip's flash holding
# its value; the 11th chip finds the list used up and the line halts with its sentence
# (sfictl status). The same file changed (one line added) is refused at load: its values
# were given out in the first list's series. An OSFI job with a serial number and no declared
# image state, or a list on an image declared Closed, is refused at load with its sentence. After a restart the job comes back with its list. sfid SIGKILLed 4
# times in a list's serial step gives no value twice and skips none.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-line-serial-list.XXXXXX")
. "$(dirname "$0")/../line/common.sh"
. "$(dirname "$0")/serial.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 100 64
fw=$tmp/pki/firmware.bin			# 64 KiB at 0x08000000
line_start_emu 8 2
line_write_config 8
line_start_sfid

# Lists a job must refuse at load, with the reason naming the line.
refuse() {
	local why=$1 list=$2 out
	shift 2
	if out=$(ctl job load --plain "$fw@0x08000000" --serial-list "$list" \
		--serial-at 0x08100000 "$@" 2>&1); then
		line_fail "job load accepted $(basename "$list")"
	fi
	grep -q "$why" <<<"$out" || line_fail "$(basename "$list"): expected '$why', got: $out"
}
printf '02:80:e1:00:00:01\n\n02:80:e1:00:00:03\n' >"$tmp/blank.txt"
refuse "line 2 of the serial list .* is blank" "$tmp/blank.txt"
printf '02:80:e1:00:00:01\n02:80:e1:00:0g:02\n' >"$tmp/badhex.txt"
refuse "line 2 of the serial list .* is not hex bytes: '02:80:e1:00:0g:02' ('g' at column 14" "$tmp/badhex.txt"
printf '02:80:e1:00:00:01\n02:80:e1:00:00:2\n' >"$tmp/odd.txt"
refuse "line 2 of the serial list .* is not hex bytes: .* (an odd number of digits)" "$tmp/odd.txt"
printf '02:80:e1:00:00:01\n02:80:e1:00:00:02\n02:80:e1:00:00:03:04\n' >"$tmp/long.txt"
refuse "line 3 of the serial list .* holds 7 bytes, the list's values are 6" "$tmp/long.txt"
refuse "line 1 of the serial list .* holds 6 bytes, the list's values are 4" "$tmp/blank.txt" \
	--serial-width 4
printf '02:80:e1:00:00:01\n02:80:e1:00:00:02\n02-80-E1-00-00-01\n' >"$tmp/dup.txt"
refuse "lines 1 and 3 of the serial list .* hold the same value" "$tmp/dup.txt"
printf 'KEY-0001\nKEY-00002\n' >"$tmp/ascii.txt"
refuse "line 2 of the serial list .* is 9 characters, over the width of 8" "$tmp/ascii.txt" \
	--serial-format ascii --serial-width 8
printf 'KEY-0001\nKEY-\303\2470002\n' >"$tmp/utf8.txt"
refuse "line 2 of the serial list .* not printable ASCII" "$tmp/utf8.txt" --serial-format ascii
printf 'KEY-0001 \n' >"$tmp/space.txt"
refuse "line 1 of the serial list .* ends with a space" "$tmp/space.txt" --serial-format ascii
: >"$tmp/empty.txt"
refuse "holds no value" "$tmp/empty.txt"
refuse "not hex or ascii" "$tmp/dup.txt" --serial-format le
# On an OSFI job the state the image leaves must be declared, and take writes.
out=$(ctl job load "$tmp/pki/demo.sfi" --serial-counter 1 --serial-at 0x08100000 \
	--serial-width 4 2>&1) && line_fail "an OSFI job with a serial number was accepted"
grep -q "a serial number on an OSFI job is written after the install.*declare it with --image-state" <<<"$out" ||
	line_fail "OSFI job with a serial number: $out"
out=$(ctl job load "$tmp/pki/demo.sfi" --image-state Closed --serial-list "$tmp/dup.txt" \
	--serial-at 0x08100000 2>&1) && line_fail "an OSFI job declared Closed with a serial list was accepted"
grep -q "an image that leaves the chip Closed takes no serial number" <<<"$out" ||
	line_fail "OSFI job with a list: $out"
[ "$(sql "SELECT count(*) FROM jobs")" -eq 0 ] || line_fail "a refused job was recorded"

# An ascii list is taken: each value padded with 0x00 to the width.
ctl job load --plain "$fw@0x08000000" --serial-list "$tmp/ascii.txt" --serial-at 0x08100000 \
	--serial-format ascii >/dev/null || line_fail "job load (ascii list)"
ctl job show | grep -q "list .*ascii.txt (2 values)" || line_fail "job show: $(ctl job show)"

# Ten MAC addresses (CR LF line ends, the last line without one) for 16 chips.
list=$tmp/macs.txt
for i in $(seq 0 9); do
	printf '02:80:E1:4A:%02X:%02X' $((i * 7)) $((255 - i))
	[ "$i" -eq 9 ] || printf '\r\n'
done >"$list"
ctl job load --plain "$fw@0x08000000" --serial-list "$list" --serial-at 0x08100000 \
	>"$tmp/load.out" || line_fail "job load: $(cat "$tmp/load.out")"
ctl job show | grep -q "serial *list sha256:$(sha256sum "$list" | cut -c1-64) hex width 6 at 0x08100000" ||
	line_fail "job show: $(ctl job show)"
ctl start >/dev/null

# The fixture: once a slot's chip has ended the next chip goes in (one swap a slot). Once
# the line halts, slots take no new chip: between 11 and 16 chips end.
declare -A swapped
deadline=$((SECONDS + 180))
while [ "$SECONDS" -lt "$deadline" ]; do
	ended=$(sql "SELECT count(*) FROM attempts WHERE result <> 'running'")
	running=$(sql "SELECT count(*) FROM attempts WHERE result = 'running'")
	if [ "$ended" -ge 11 ] && [ "$running" -eq 0 ] && halted "serial numbers ran out"; then
		break
	fi
	while IFS='|' read -r s n; do
		s=${s#S}
		[ "${swapped[$s]:-0}" -lt 1 ] && [ "$n" -ge 1 ] || continue
		emu_ctl remove "$s" | grep -q '^ok' || line_fail "h5emu: remove $s refused"
		emu_ctl insert "$s" | grep -q '^ok' || line_fail "h5emu: insert $s refused"
		swapped[$s]=1
	done < <(sql "SELECT slot, count(*) FROM attempts WHERE result <> 'running' GROUP BY slot")
	sleep 0.2
done
halted "serial numbers ran out: all 10 values of the list" ||
	line_fail "the line is not halted on the used-up list: $(ctl --json status)"
[ "$running" -eq 0 ] && [ "$ended" -ge 11 ] ||
	line_fail "$ended chips ended, $running running after 180 s"
ctl status | grep -q "serial numbers ran out" || line_fail "sfictl status does not say why"

series="list sha256:$(sha256sum "$list" | cut -c1-64) hex width 6 at 0x08100000"
[ "$(sql "SELECT count(*) FROM serials WHERE series = '$series' AND state = 'written'")" -eq 10 ] ||
	line_fail "serials: $(sql "SELECT idx, state, reason FROM serials")"
[ "$(sql "SELECT count(*) FROM serials WHERE series = '$series'")" -eq 10 ] ||
	line_fail "more than 10 rows in the list's series"
[ "$(sql "SELECT min(idx) || ' ' || max(idx) || ' ' || count(DISTINCT value) || ' ' || count(DISTINCT chip_uid) FROM serials WHERE series = '$series'")" = "0 9 10 10" ] ||
	line_fail "the list's values are not 10 values on 10 chips"
# Index i is line i + 1, as bytes.
i=0
while IFS= read -r line || [ -n "$line" ]; do
	want=$(tr -d ':\r' <<<"$line" | tr 'A-F' 'a-f')
	got=$(sql "SELECT value FROM serials WHERE series = '$series' AND idx = $i")
	[ "$got" = "$want" ] || line_fail "index $i holds $got, line $((i + 1)) is $want"
	i=$((i + 1))
done <"$list"
[ "$i" -eq 10 ] || line_fail "read $i lines of the list"
ok=$(sql "SELECT count(DISTINCT chip_uid) FROM attempts WHERE result = 'ok'")
[ "$ok" -eq 10 ] || line_fail "$ok chips ok, expected 10"
[ "$(sql "SELECT count(*) FROM serials WHERE chip_uid NOT IN (SELECT chip_uid FROM attempts WHERE result = 'ok')")" -eq 0 ] ||
	line_fail "a value names a chip without an attempt ok"
failed=$(sql "SELECT count(*) FROM attempts WHERE result = 'failed' AND (error_text LIKE '%has no value left%' OR error_text LIKE '%serial numbers ran out%')")
[ "$failed" -ge 1 ] && [ "$failed" -eq $((ended - 10)) ] ||
	line_fail "$failed chips failed on the used-up list, expected $((ended - 10)): $(sql "SELECT slot, error_text FROM attempts WHERE result <> 'ok'")"

# The same file with a line added is a new list: its first line was given out already.
cp "$list" "$tmp/macs2.txt"
printf '\r\n02:80:E1:4A:FF:00\r\n' >>"$tmp/macs2.txt"
refuse "line 1 of the serial list .*macs2.txt (0280e14a00ff) was given to chip [0-9a-f]\{24\} in another series (list sha256:$(sha256sum "$list" | cut -c1-64)" "$tmp/macs2.txt"
ctl stop >/dev/null

# Each stamped chip's flash holds its value after the firmware.
line_stop_pid "$emu_pid"
emu_pid=
n=$(serial_flash_check 6 "series = '$series'")
[ "$n" -eq 10 ] || line_fail "$n stamped chips checked, expected 10"

# After a restart the job comes back with its list (kept by sfid, the file gone): the same
# series, the same 10 values.
rm -f "$list"
line_stop_pid "$sfid_pid"
sfid_pid=
line_start_sfid
ctl job show >"$tmp/show.out" 2>&1 || line_fail "job show after the restart: $(cat "$tmp/show.out")"
grep -q "serial *$series" "$tmp/show.out" && grep -q "list .*macs.txt (10 values)" "$tmp/show.out" ||
	line_fail "the restored job's serial list: $(cat "$tmp/show.out")"

# sfid SIGKILLed 4 times while slots take list values (h5emu holds each Write Memory answer
# 400 ms), the job restored each time: no value twice, none skipped without a row, each
# index the list's line.
line_stop_pid "$sfid_pid"
sfid_pid=
EMU_STATE=$tmp/emu-state-3 line_start_emu 8 1 --baud 115200 --fault cmd=0x31,repeat,action=delay:400
sed -i 's/^shutdown_timeout_ms = 5000$/&\nretries_per_chip = 100/' "$tmp/sfid.conf"
line_start_sfid
head -c 1024 /dev/urandom >"$tmp/small.bin"
for i in $(seq 0 39); do printf 'A5A5%04X\n' $((i * 3 + 1)); done >"$tmp/keys.txt"
keys="list sha256:$(sha256sum "$tmp/keys.txt" | cut -c1-64) hex width 4 at 0x08100000"
ctl job load --plain "$tmp/small.bin@0x08000000" --serial-list "$tmp/keys.txt" \
	--serial-at 0x08100000 >/dev/null || line_fail "job load (keys)"
for round in 1 2 3 4; do
	ctl start >/dev/null
	deadline=$((SECONDS + 60))
	until [ "$(sql "SELECT count(*) FROM serials WHERE series = '$keys' AND state = 'intent'")" -ge 1 ]; do
		[ "$SECONDS" -lt "$deadline" ] || line_fail "no open list intent in 60 s (round $round)"
	done
	sleep "0.0$((RANDOM % 5))$((RANDOM % 10))"
	line_kill_sfid
	line_start_sfid
	[ "$(sql "SELECT count(*) FROM serials WHERE state = 'intent'")" -eq 0 ] ||
		line_fail "round $round: an intent is still open after the restart"
done
ctl start >/dev/null
wait_for 90 "8 chips written from the keys" \
	sql_is "SELECT count(*) FROM serials WHERE series = '$keys' AND state = 'written'" 8
ctl stop >/dev/null
rows=$(sql "SELECT count(*) FROM serials WHERE series = '$keys'")
[ "$rows" -eq 8 ] || line_fail "$rows rows in the keys' series for 8 chips"
[ "$(sql "SELECT (max(idx) + 1) || ' ' || count(DISTINCT value) || ' ' || count(DISTINCT chip_uid) FROM serials WHERE series = '$keys'")" = "$rows $rows $rows" ] ||
	line_fail "the keys' series has a gap or a value twice: $(sql "SELECT idx, value, chip_uid, state FROM serials WHERE series = '$keys'")"
[ "$(sql "SELECT count(*) FROM serials WHERE series = '$keys' AND value <> printf('a5a5%04x', idx * 3 + 1)")" -eq 0 ] ||
	line_fail "a key is not its line"
unconfirmed=$(sql "SELECT count(*) FROM audit WHERE type = 'serial.result' AND content LIKE '%\"state\":\"unconfirmed\"%' AND content LIKE '%$(sha256sum "$tmp/keys.txt" | cut -c1-64)%'")
[ "$unconfirmed" -ge 4 ] || line_fail "$unconfirmed intents recorded unconfirmed for 4 kills"
echo "serial list: 4 SIGKILLs in the list's serial step, $rows keys on $rows chips, no gap, $unconfirmed left unconfirmed and resolved; 10 lines for 16 chips: 10 stamped in the list's order, no value twice, $failed failed on the used-up list and the line halted with its sentence; 11 malformed lists refused with the line; the changed file refused"

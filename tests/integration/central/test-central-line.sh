#!/usr/bin/env bash
# Three stations, one central audit store (PostgreSQL 15 started here, Unix socket only; it is
# down when the stations start, and they start all the same):
#  1. three sfid stations (own token, h5emu and database each) run jobs at once and ship;
#     each station's trail at the centre equals its local export record for record and
#     verifies there with sfi-audit verify --pg;
#  2. the server is killed while they run and started again after a pause: no line stops,
#     the backlog drains, nothing is lost or duplicated; the stations' connections are reset
#     (terminated at the server) and they reconnect; sfid is SIGKILLed after a push and
#     before its acknowledgement: after the restart nothing is duplicated either;
#  3. a station whose database was replaced (a fork) is refused at the centre with a
#     sentence, its central trail unchanged; a chip UID installed at two stations is flagged
#     by sfi-audit report --pg.
# CENTRAL_OUTAGE_S sets the server's pause (default 20 s; the issue's figure is 60).
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
here=$(cd "$(dirname "$0")" && pwd)
root=$(mktemp -d "${TMPDIR:-/tmp}/sfid-central-line.XXXXXX")
tmp=$root/a
dir=$root
. "$here/../line/common.sh"
. "$here/pg-common.sh"
SFICENTRAL=$BUILD/central/sfi-central
outage=${CENTRAL_OUTAGE_S:-20}
stations=(a b c)
declare -A SFID_PID EMU_PID
pg_skip_if_missing

cleanup() {
	local rc=$?
	for s in "${stations[@]}"; do
		line_stop_pid "${SFID_PID[$s]:-}"
		line_stop_pid "${EMU_PID[$s]:-}"
		if [ -f "$root/$s/sfid.log" ] && grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$root/$s/sfid.log"; then
			echo "FAIL: sanitizer report in station $s's log:" >&2
			grep -A 30 "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$root/$s/sfid.log" | head -n 60 >&2
			rc=1
		fi
	done
	pg_stop
	if [ -n "${SFID_KEEP_TMP:-}" ]; then echo "kept $root" >&2; else rm -rf "$root"; fi
	exit "$rc"
}
trap cleanup EXIT INT TERM
fail() {
	echo "FAIL: $*" >&2
	for s in "${stations[@]}"; do
		[ -f "$root/$s/sfid.log" ] && { echo "--- station $s sfid.log (tail)" >&2; tail -n 15 "$root/$s/sfid.log" >&2; }
	done
	[ -f "$root/pg/server.log" ] && { echo "--- server.log (tail)" >&2; tail -n 10 "$root/pg/server.log" >&2; }
	exit 1
}
line_fail() { fail "$@"; }

# at STATION: makes the line helpers (ctl, sql, ...) talk to that station.
at() { tmp=$root/$1; }
st_ctl() { timeout 60 "$SFICTL" --socket "$root/$1/sfid.sock" "${@:2}"; }
central_json() { st_ctl "$1" --json status | jq -c '.central'; }
central_field() { st_ctl "$1" --json status | jq -r ".central.$2"; }
shipped_all() {
	local j
	j=$(st_ctl "$1" --json status | jq -r '.central | "\(.state) \(.backlog) \(.acknowledged_seq)"')
	local head
	head=$(sqlite3 -readonly "$root/$1/sfid.db" "SELECT max(seq) FROM audit")
	[ "$j" = "idle 0 $head" ]
}
ended() { [ "$(sqlite3 -readonly "$root/$1/sfid.db" "SELECT count(*) FROM attempts WHERE result <> 'running'")" -ge "$2" ]; }
aud() { PGPASSFILE=$root/pgpass psql -X -q -At -v ON_ERROR_STOP=1 -h "$PG_SOCK" -U auditor -d postgres "$@"; }

# --- the server: schema, one role per station, an auditor --------------------------------
pg_init
pg_start
"$SFICENTRAL" migrate --pg "$(pg_conninfo admin)" --password-file "$PG_ADMIN_PW" >/dev/null
: >"$root/pgpass"
chmod 600 "$root/pgpass"
for s in "${stations[@]}" auditor; do
	pw="pw-$s-$RANDOM$RANDOM"
	if [ "$s" = auditor ]; then
		pg_psql -c "CREATE ROLE auditor LOGIN IN ROLE sfid_auditor PASSWORD '$pw'"
	else
		pg_psql -c "CREATE ROLE station_$s LOGIN IN ROLE sfid_station PASSWORD '$pw'" \
			-c "SELECT sfid_central.add_station('line-$s', 'station_$s')" >/dev/null
		mkdir -p "$root/$s"
		( umask 077; echo "$pw" > "$root/$s/central.pw" )
	fi
	printf '*:*:*:%s:%s\n' "$([ "$s" = auditor ] && echo auditor || echo "station_$s")" "$pw" >>"$root/pgpass"
done

# The server is down when the stations start: they start all the same.
pg_stop

# --- three stations; c's emulator has a's seed, so its chips have a's UIDs -----------------
chips=4
for s in "${stations[@]}"; do
	at "$s"
	line_setup_pki 50 16
	if [ "$s" = c ]; then
		mkdir -p "$tmp/emu-state"
		cp "$root/a/emu-state/seed" "$tmp/emu-state/seed"
	fi
	line_start_emu 2 "$chips" --auto-swap 200
	EMU_PID[$s]=$emu_pid
	line_write_config 2
	sed -i "s/^name = test-line$/name = line-$s/" "$tmp/sfid.conf"
	printf '[central]\nconninfo = %s\npassword_file = %s\ninterval_ms = 200\nretry_max_ms = 1000\nconnect_timeout_s = 5\nbatch_records = 40\n' \
		"$(pg_conninfo "station_$s")" "$tmp/central.pw" >>"$tmp/sfid.conf"
	if [ "$s" = a ]; then
		SFID_TEST_SHIPPER_HOLD=$root/hold line_start_sfid
	else
		line_start_sfid
	fi
	SFID_PID[$s]=$sfid_pid
	sfid_pid= emu_pid=
	[ -f "$tmp/emu-state/seed" ] || fail "h5emu wrote no seed for station $s"
done
cmp -s "$root/a/emu-state/seed" "$root/c/emu-state/seed" || fail "station c's emulator has another seed"
for s in "${stations[@]}"; do
	wait_for 30 "station $s to find the server down" bash -c "[ \"\$($SFICTL --socket $root/$s/sfid.sock --json status | jq -r .central.state)\" = unreachable ]"
done
pg_start

total=$((2 * chips))
for s in "${stations[@]}"; do
	st_ctl "$s" job load "$root/$s/pki/demo.sfi" --count "$total" >/dev/null
done
for s in "${stations[@]}"; do
	st_ctl "$s" start >/dev/null
done

# --- the server dies while the lines run, and comes back after a pause -----------------------
wait_for 60 "station a to ship" bash -c "[ \"\$($SFICTL --socket $root/a/sfid.sock --json status | jq -r .central.acknowledged_seq)\" -gt 0 ]"
pg_kill
t0=$(date +%s)
before=$(sqlite3 -readonly "$root/a/sfid.db" "SELECT count(*) FROM attempts WHERE result <> 'running'")
for s in "${stations[@]}"; do
	wait_for 30 "station $s to see the server gone" bash -c "[ \"\$($SFICTL --socket $root/$s/sfid.sock --json status | jq -r .central.state)\" = unreachable ]"
done
# The lines run on: every chip is installed while the server is away.
for s in "${stations[@]}"; do
	wait_for 120 "station $s to finish its $total chips with the server down" ended "$s" "$total"
done
for s in "${stations[@]}"; do
	j=$(central_json "$s")
	[ "$(jq -r .state <<<"$j")" = unreachable ] || fail "station $s: the shipper is not unreachable: $j"
	[ "$(jq -r .backlog <<<"$j")" -gt 0 ] || fail "station $s: no backlog with the server down: $j"
	jq -e '.error | test("central server")' <<<"$j" >/dev/null || fail "station $s: no reason: $j"
	st_ctl "$s" status | grep -q "^central store: unreachable, [1-9][0-9]* record(s) to ship" ||
		fail "station $s: sfictl status does not show the shipper: $(st_ctl "$s" status)"
	ok=$(sqlite3 -readonly "$root/$s/sfid.db" "SELECT count(*) FROM attempts WHERE result = 'ok'")
	[ "$ok" -eq "$total" ] || fail "station $s installed $ok chips with the server down, expected $total"
done
while [ $(($(date +%s) - t0)) -lt "$outage" ]; do sleep 1; done
pg_start
for s in "${stations[@]}"; do
	wait_for 60 "station $s's backlog to drain" shipped_all "$s"
done
echo "server down $(($(date +%s) - t0)) s; all backlogs drained"

# --- each central trail equals the local export and verifies at the centre -----------------
check_station() {
	local s=$1
	st_ctl "$s" export --format jsonl --out "$root/$s/export.jsonl" >/dev/null 2>&1 ||
		fail "export of station $s"
	grep '^{"content"' "$root/$s/export.jsonl" >"$root/$s/export.lines"
	# Records written since the last look (the export's own) reach the centre too.
	wait_for 60 "station $s's backlog to drain after the export" shipped_all "$s"
	aud -c "SELECT line FROM sfid_central.records WHERE station = 'line-$s' ORDER BY seq" >"$root/$s/central.lines"
	# The export reaches the last checkpoint, the centre holds everything committed: the
	# export is a prefix of the central trail, which holds each seq once.
	local n
	n=$(wc -l <"$root/$s/export.lines")
	[ "$n" -gt 20 ] || fail "station $s exported $n records"
	head -n "$n" "$root/$s/central.lines" | cmp -s - "$root/$s/export.lines" ||
		fail "station $s: the central trail differs from the export"
	[ "$(aud -c "SELECT count(*) = count(DISTINCT seq) AND count(*) = max(seq) FROM sfid_central.records WHERE station = 'line-$s'")" = t ] ||
		fail "station $s: the central trail has gaps or duplicates"
	[ "$(aud -c "SELECT count(*) FROM sfid_central.records WHERE station = 'line-$s'")" = \
	  "$(sqlite3 -readonly "$root/$s/sfid.db" "SELECT count(*) FROM audit")" ] ||
		fail "station $s: the centre and the station hold different numbers of records"
	[ "$(aud -c "SELECT string_agg(encode(hash, 'hex'), '' ORDER BY seq) FROM sfid_central.records WHERE station = 'line-$s'" | sha256sum)" = \
	  "$(sqlite3 -readonly "$root/$s/sfid.db" "SELECT group_concat(lower(hex(hash)), '') FROM (SELECT hash FROM audit ORDER BY seq)" | sha256sum)" ] ||
		fail "station $s: the hashes at the centre differ"
	"$SFIHSM" audit-pubkey --module "$SOFTHSM_MODULE" --token "$TOKEN_LABEL" \
		--pin-file "$root/$s/pki/pin" --out "$root/$s/audit.pem" >/dev/null
	if [ -n "${VERIFY_PG:-1}" ] && "$SFIAUDIT" verify --help 2>&1 | grep -q -- --pg; then
		PGPASSFILE=$root/pgpass "$SFIAUDIT" verify --pg "$(pg_conninfo auditor)" --station "line-$s" \
			--pubkey "$root/$s/audit.pem" >"$root/$s/verify.out" 2>&1 ||
			fail "sfi-audit verify --pg line-$s: $(cat "$root/$s/verify.out")"
	fi
}
for s in "${stations[@]}"; do
	export SOFTHSM2_CONF=$root/$s/softhsm2.conf
	check_station "$s"
done
[ "$(aud -c "SELECT count(*) FROM sfid_central.refusals")" = 0 ] || fail "refusals: $(aud -c "SELECT reason FROM sfid_central.refusals")"

# --- connections reset under the shippers: they reconnect, nothing doubles --------------------
pg_psql -At -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename LIKE 'station\_%'" >"$root/terminated"
[ "$(cat "$root/terminated")" -ge 1 ] || fail "no station connection to reset"
export SOFTHSM2_CONF=$root/c/softhsm2.conf
st_ctl c job load "$root/c/pki/demo.sfi" --count 1 >/dev/null
wait_for 60 "station c to ship again after the reset" shipped_all c
check_station c

# --- sfid killed after a push, before its acknowledgement ------------------------------------
at a
export SOFTHSM2_CONF=$root/a/softhsm2.conf
acked=$(central_field a acknowledged_seq)
touch "$root/hold"
st_ctl a job load "$root/a/pki/demo.sfi" --count 1 >/dev/null
wait_for 30 "the shipper to hold after a push" test -s "$root/hold.held"
pushed=$(cat "$root/hold.held")
[ "$pushed" -gt "$acked" ] || fail "held at $pushed, acknowledged $acked"
[ "$(aud -c "SELECT max(seq) FROM sfid_central.records WHERE station = 'line-a'")" = "$pushed" ] ||
	fail "the centre does not hold the push the shipper holds after"
[ "$(sqlite3 -readonly "$root/a/sfid.db" "SELECT coalesce(max(seq), 0) FROM shipped")" -lt "$pushed" ] ||
	fail "the acknowledgement was written before the hold"
kill -KILL "${SFID_PID[a]}"
wait "${SFID_PID[a]}" 2>/dev/null || true
rm -f "$root/hold" "$root/hold.held"
line_start_sfid
SFID_PID[a]=$sfid_pid
sfid_pid=
wait_for 60 "station a's backlog to drain after the kill" shipped_all a
grep -q "holds the trail up to record $pushed already" "$root/a/sfid.log" ||
	fail "the restarted shipper did not resume after the pushed records"
check_station a
[ "$(aud -c "SELECT count(*) FROM sfid_central.refusals")" = 0 ] || fail "refusals after the kill"

# --- a station whose database was replaced: refused, never merged ---------------------------
at b
export SOFTHSM2_CONF=$root/b/softhsm2.conf
held_b=$(aud -c "SELECT max(seq) FROM sfid_central.records WHERE station = 'line-b'")
line_stop_pid "${SFID_PID[b]}"
mv "$root/b/sfid.db" "$root/b/sfid.db.old"
rm -f "$root/b/sfid.db-wal" "$root/b/sfid.db-shm"
line_start_sfid
SFID_PID[b]=$sfid_pid
sfid_pid=
wait_for 60 "station b's fork to be refused" bash -c "[ \"\$($SFICTL --socket $root/b/sfid.sock --json status | jq -r .central.state)\" = refused ]"
reason=$(central_field b error)
case $reason in
*"its trail forked"*"nothing was merged"*) ;;
*) fail "the fork's sentence: $reason" ;;
esac
aud -c "SELECT reason FROM sfid_central.refusals WHERE station = 'line-b'" | grep -q "forked" ||
	fail "the refusal is not kept at the centre"
[ "$(aud -c "SELECT max(seq) FROM sfid_central.records WHERE station = 'line-b'")" = "$held_b" ] ||
	fail "the fork changed station b's central trail"
# The line itself runs on.
st_ctl b status >/dev/null || fail "station b does not answer"

# --- a chip UID at two stations ---------------------------------------------------------------
dup=$(aud -c "SELECT count(*) FROM sfid_central.chips_at_several_stations")
[ "$dup" -eq "$total" ] || fail "$dup chips seen at several stations, expected $total (a's and c's)"
if "$SFIAUDIT" report --help 2>&1 | grep -q -- --pg; then
	PGPASSFILE=$root/pgpass "$SFIAUDIT" report --pg "$(pg_conninfo auditor)" >"$root/report.out" ||
		fail "sfi-audit report --pg: $(cat "$root/report.out")"
	grep -q "line-a" "$root/report.out" && grep -q "line-c" "$root/report.out" ||
		fail "the report does not name the stations: $(cat "$root/report.out")"
	uid=$(sqlite3 -readonly "$root/c/sfid.db" "SELECT chip_uid FROM attempts WHERE result = 'ok' LIMIT 1")
	grep "$uid" "$root/report.out" | grep -q "line-a.*line-c" ||
		fail "chip $uid (installed at a and c) is not flagged: $(cat "$root/report.out")"
fi
echo "3 stations x $total chips shipped; outage of $outage s drained; kill after push: no duplicate; fork refused; $dup UIDs flagged"

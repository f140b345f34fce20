#!/bin/bash
# The central schema on a PostgreSQL 15 cluster of the test's own: migrations (twice: the
# second is a no-op), the sample roles, a station pushing its export lines (a repeat is
# skipped, not duplicated), a station refused for another station's trail and for reading
# the records, a tampered line and a forked trail refused with a sentence (kept in
# refusals, nothing merged), an auditor reading the views and unable to write.
set -euo pipefail
crash=$1
central=$2
audit=$3
here=$(cd "$(dirname "$0")" && pwd)
roles_sql=$here/../../../central/roles.sql
dir=$(mktemp -d "${TMPDIR:-/tmp}/sfid-central-schema-XXXXXX")
. "$here/pg-common.sh"
trap 'pg_stop; rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pg_skip_if_missing

pg_init
pg_start
"$central" migrate --pg "$(pg_conninfo admin)" --password-file "$PG_ADMIN_PW" >"$dir/out"
grep -q "from version 0 to" "$dir/out" || fail "migrate: $(cat "$dir/out")"
"$central" migrate --pg "$(pg_conninfo admin)" --password-file "$PG_ADMIN_PW" >"$dir/out"
grep -q "at version .* already" "$dir/out" || fail "second migrate: $(cat "$dir/out")"
if "$central" migrate --pg "$(pg_conninfo admin) password=x" 2>"$dir/err"; then
	fail "a password in the conninfo was accepted"
fi
grep -q "password file or a credential" "$dir/err" || fail "conninfo password: $(cat "$dir/err")"

pg_psql -v station=line-1 -v station_role=st1 -v auditor_role=aud -f "$roles_sql" >/dev/null
pg_psql -c "CREATE ROLE st2 LOGIN IN ROLE sfid_station" \
	-c "SELECT sfid_central.add_station('line-2', 'st2')" >/dev/null
pg_psql -c "ALTER ROLE st1 PASSWORD 'pw-st1'" -c "ALTER ROLE st2 PASSWORD 'pw-st2'" \
	-c "ALTER ROLE aud PASSWORD 'pw-aud'"
( umask 077; printf '*:*:*:st1:pw-st1\n*:*:*:st2:pw-st2\n*:*:*:aud:pw-aud\n' > "$dir/pgpass" )
as() { local role=$1; shift; PGPASSFILE=$dir/pgpass psql -X -q -At -v ON_ERROR_STOP=1 -h "$PG_SOCK" -U "$role" -d postgres "$@"; }

# Two trails: a station's, and another database that took its place (a fork).
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/key.pem" 2>/dev/null
for t in a:6 b:9; do
	n=${t#*:} t=${t%:*}
	echo 5000 > "$dir/token-$t"
	timeout 60 "$crash" writer "$dir/$t.db" "$dir/key.pem" "$dir/token-$t" "$n"
	"$crash" export "$dir/$t.db" "$dir/$t.jsonl" "$dir/key.pem" "$dir/token-$t"
	# COPY's text format: a backslash is written twice.
	grep '^{"content"' "$dir/$t.jsonl" | sed 's/\\/\\\\/g' > "$dir/$t.lines"
done
n=$(wc -l < "$dir/a.lines")
[ "$n" -gt 20 ] || fail "too few records: $n"

# push ROLE STATION FILE [FIRST [LAST]]: head|inserted|duplicates|refused
push() {
	as "$1" <<-SQL
	CREATE TEMP TABLE l (n serial, t text);
	\copy l (t) from '$3'
	SELECT * FROM sfid_central.push('$2', (SELECT array_agg(t ORDER BY n) FROM l
	  WHERE n BETWEEN ${4:-1} AND ${5:-1000000}));
	SQL
}
out=$(push st1 line-1 "$dir/a.lines" 1 10)
[ "$out" = "10|10|0|" ] || fail "first push: $out"
out=$(push st1 line-1 "$dir/a.lines")
[ "$out" = "$n|$((n - 10))|10|" ] || fail "repeated push: $out"
out=$(push st1 line-1 "$dir/a.lines")
[ "$out" = "$n|0|$n|" ] || fail "whole repeat: $out"
[ "$(as aud -c "SELECT count(*) FROM sfid_central.records WHERE station = 'line-1'")" = "$n" ] ||
	fail "records stored"
# Stored byte for byte as exported.
as aud -c "SELECT line FROM sfid_central.records WHERE station = 'line-1' ORDER BY seq" > "$dir/central.lines"
grep '^{"content"' "$dir/a.jsonl" | cmp - "$dir/central.lines" || fail "central copy differs from the export"

# Another station's trail, or the records themselves: refused.
if push st1 line-2 "$dir/b.lines" 2>"$dir/err"; then fail "st1 wrote line-2"; fi
grep -q "may not ship the trail of station line-2" "$dir/err" || fail "wrong station: $(cat "$dir/err")"
if as st1 -c "SELECT count(*) FROM sfid_central.records" 2>"$dir/err"; then fail "station read records"; fi
grep -q "permission denied" "$dir/err" || fail "station select: $(cat "$dir/err")"
if as st1 -c "INSERT INTO sfid_central.records (station, seq, time_ms, type, prev_hash, hash, line, content) SELECT station, seq + 1000, time_ms, type, prev_hash, hash, line, content FROM sfid_central.records" 2>/dev/null; then
	fail "station inserted directly"
fi

# The other database under line-1's name: a fork, refused with a sentence, nothing merged.
out=$(push st1 line-1 "$dir/b.lines")
case $out in
"$n|0|0|station line-1 sent record 1 with hash "*"its trail forked"*"nothing was merged") ;;
*) fail "fork not refused: $out" ;;
esac
# The same after the held head: a record that does not continue it.
sed -n "$((n + 1)),\$p" "$dir/b.lines" > "$dir/b.tail"
[ -s "$dir/b.tail" ] || fail "the second trail is not longer"
out=$(push st1 line-1 "$dir/b.tail")
case $out in
"$n|0|0|record $((n + 1)) of station line-1 does not continue the record $n"*"forked"*) ;;
*) fail "continuation fork not refused: $out" ;;
esac
# A tampered line: its content no longer hashes to its hash.
sed -n '3p' "$dir/b.lines" | sed 's/"slot":"slot-/"slot":"slat-/' > "$dir/bad.line"
out=$(push st2 line-2 "$dir/b.lines" 1 2)
[ "$out" = "2|2|0|" ] || fail "line-2 push: $out"
out=$(push st2 line-2 "$dir/bad.line")
case $out in
"2|0|0|record 3 of station line-2 does not hash to the hash it states"*) ;;
*) fail "tampered line not refused: $out" ;;
esac
# Lines that are no export record: junk, a member added, another spelling.
for junk in 'not json' \
	"$(sed -n '3p' "$dir/b.lines" | sed 's/\(.*\),"type":/\1,"extra":1,"type":/')" \
	"$(sed -n '3p' "$dir/b.lines" | sed 's/\(.*\),"seq":\([0-9]*\),/\1,"seq":\2 ,/')"; do
	printf '%s\n' "$junk" > "$dir/junk.line"
	out=$(push st2 line-2 "$dir/junk.line")
	case $out in
	"2|0|0|station line-2 sent a line that is not an audit record as an export carries it; refused") ;;
	*) fail "junk line not refused: $out ($junk)" ;;
	esac
done
[ "$(as aud -c "SELECT count(*) FROM sfid_central.refusals")" -ge 6 ] || fail "refusals not kept"
[ "$(as aud -c "SELECT count(*) FROM sfid_central.records WHERE station = 'line-1'")" = "$n" ] ||
	fail "the fork changed line-1's trail"

# The auditor reads the views and writes nothing; records are append-only even for the owner.
as aud -c "SELECT ok FROM sfid_central.yield WHERE station = 'line-1'" > "$dir/ok"
[ "$(cat "$dir/ok")" -ge 1 ] || fail "yield view"
as aud -c "SELECT count(*) FROM sfid_central.chips_per_day" >/dev/null
as aud -c "SELECT count(*) FROM sfid_central.token_counters" >/dev/null
if as aud -c "DELETE FROM sfid_central.refusals" 2>/dev/null; then fail "auditor deleted"; fi
if pg_psql -c "DELETE FROM sfid_central.records WHERE seq = 1" 2>"$dir/err"; then fail "delete allowed"; fi
grep -q "append-only" "$dir/err" || fail "append-only: $(cat "$dir/err")"
# sfi-audit verifies the centre's copy with the checks it makes on an export, and names a
# record changed there (by someone who may switch the append-only trigger off).
openssl pkey -in "$dir/key.pem" -pubout -out "$dir/pub.pem" 2>/dev/null
PGPASSFILE=$dir/pgpass "$audit" verify --pg "$(pg_conninfo aud)" --station line-1 \
	--pubkey "$dir/pub.pem" >"$dir/verify.out" || fail "verify --pg: $(cat "$dir/verify.out")"
grep -q "^VERIFIED$" "$dir/verify.out" || fail "verify --pg: $(cat "$dir/verify.out")"
grep -q "records 1..$n ($n records" "$dir/verify.out" || fail "verify --pg range: $(cat "$dir/verify.out")"
if PGPASSFILE=$dir/pgpass "$audit" verify --pg "$(pg_conninfo aud)" --station nowhere \
	--pubkey "$dir/pub.pem" >/dev/null 2>"$dir/err"; then fail "an unknown station verified"; fi
grep -q 'knows no station "nowhere"' "$dir/err" || fail "unknown station: $(cat "$dir/err")"
pg_psql -c "ALTER TABLE sfid_central.records DISABLE TRIGGER records_no_update" \
	-c "UPDATE sfid_central.records SET line = replace(line, '\"bytes\":2048', '\"bytes\":2049') WHERE station = 'line-1' AND seq = (SELECT min(seq) FROM sfid_central.records WHERE station = 'line-1' AND line LIKE '%\"bytes\":2048%')"
bad=$(pg_psql -At -c "SELECT min(seq) FROM sfid_central.records WHERE station = 'line-1' AND line LIKE '%\"bytes\":2049%'")
[ -n "$bad" ] || fail "the test could not change a record"
if PGPASSFILE=$dir/pgpass "$audit" verify --pg "$(pg_conninfo aud)" --station line-1 \
	--pubkey "$dir/pub.pem" >"$dir/verify.out"; then fail "a changed central record verified"; fi
grep -q "^BAD record $bad:" "$dir/verify.out" || fail "the changed record is not named: $(cat "$dir/verify.out")"
PGPASSFILE=$dir/pgpass "$audit" report --pg "$(pg_conninfo aud)" >"$dir/report.out" ||
	fail "report --pg: $(cat "$dir/report.out")"
grep -q "^station line-1: " "$dir/report.out" && grep -q "^no chip UID was installed at more than one station" "$dir/report.out" ||
	fail "report --pg: $(cat "$dir/report.out")"
echo "central schema: migrations, roles, idempotent push, fork and tamper refused"

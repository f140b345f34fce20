#!/usr/bin/env bash
# sfid's database at the line: another application's SQLite file at the configured path
# stops sfid at start-up, named, and is left byte for byte as it was; a new database, its
# WAL and shared-memory files and an export written by sfictl are private (0600) even
# under umask 0.
set -euo pipefail
BUILD=${SFID_BUILD_ROOT:?run through meson test}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sfid-database.XXXXXX")
. "$(dirname "$0")/common.sh"
trap line_cleanup EXIT INT TERM

line_setup_pki 5 16
line_write_config 1
sqlite3 "$tmp/sfid.db" "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);
	INSERT INTO invoices (total) VALUES (12.5);"
before=$(sha256sum <"$tmp/sfid.db")
set +e
line_env
timeout 60 env "${envs[@]}" "$SFID" --config "$tmp/sfid.conf" >"$tmp/foreign.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || line_fail "sfid on a foreign database: exit $rc"
grep -q "is not an sfid audit database" "$tmp/foreign.log" ||
	line_fail "sfid on a foreign database: $(cat "$tmp/foreign.log")"
[ "$(sha256sum <"$tmp/sfid.db")" = "$before" ] || line_fail "the foreign database was changed"
[ ! -e "$tmp/sfid.db-wal" ] || line_fail "sfid left a WAL beside the foreign database"
rm -f "$tmp/sfid.db"*

umask 0
line_start_sfid
ctl job load "$tmp/pki/demo.sfi" >/dev/null || line_fail "job load"
ctl export --format jsonl --out "$tmp/audit.jsonl" 2>/dev/null || line_fail "export"
for f in sfid.db sfid.db-wal sfid.db-shm audit.jsonl; do
	[ "$(stat -c %a "$tmp/$f")" = 600 ] || line_fail "$f has mode $(stat -c %a "$tmp/$f") under umask 0"
done
echo "foreign database refused unchanged; database, WAL, shm and export private under umask 0"
